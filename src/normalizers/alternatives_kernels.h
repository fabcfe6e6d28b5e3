/*
 * alternatives_kernels.h - the elementwise kernels of the softmax
 * alternatives (softpick, stablemax, sigmoid, normalized sigmoid): their
 * signatures, contracts and this family's own small dispatch table.
 * Internal. The ops (softpick.c, stablemax.c, sigmoid.c) check arguments
 * and handle masks and special values; kernels see whole unmasked rows.
 *
 * In every kernel z_i = x_i * c (c = 1/T, one float product, as the
 * softmax core scales), sums are returned in double (float lanes over
 * blocks of at most SG_SUM_BLOCK elements, then double). Kernels allocate
 * nothing and trust their arguments; outputs may equal inputs.
 */
#ifndef SG_ALTERNATIVES_KERNELS_H
#define SG_ALTERNATIVES_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "softgate.h"

/* y_i = sigma(z_i); returns sum_i y_i. */
typedef double sg_sigmoid_store_fn(size_t n, const float *x, float *y, float c);
/* y_i = s(z_i) (stablemax's s); returns sum_i y_i (NaN/inf pass through). */
typedef double sg_stablemax_store_fn(size_t n, const float *x, float *y, float c);
/*
 * Softpick numerators with the row's m = max(max z, 0) >= 0 given and
 * em = e^-m: e_i = e^-m expm1(z_i) when m <= SG_SOFTPICK_EXPM1_MAX, else
 * e^(z_i - m) - em; y_i = max(e_i, 0); returns sum_i |e_i|.
 */
#define SG_SOFTPICK_EXPM1_MAX 64.0f
typedef double sg_softpick_store_fn(size_t n, const float *x, float *y, float c, float m,
                                    float em);
/* The backward's sums without storing: returns sum_i |e_i| and sets
 * *dot = sum_{i: e_i > 0} dy_i e_i. */
typedef double sg_softpick_sums_fn(size_t n, const float *x, const float *dy, float c, float m,
                                   float em, double *dot);
/* dx_j = q_j * ([z_j > 0] dy_j - sign(z_j) dot) * c with q_j = (e_j + em)
 * * inv_d (= e^(z_j - m) / D). dx may equal x or dy. */
typedef void sg_softpick_bwd_fn(size_t n, const float *x, const float *dy, float *dx, float c,
                                float m, float em, float inv_d, float dot);
/* dx_i = dy_i y_i (1 - y_i) c. */
typedef void sg_sigmoid_bwd_fn(size_t n, const float *y, const float *dy, float *dx, float c);
/* dx_i = y_i sigma(-z_i) (dy_i - dot) c. */
typedef void sg_nsigmoid_bwd_fn(size_t n, const float *x, const float *y, const float *dy,
                                float *dx, float c, float dot);
/* y_i = log(x_i) - off for x_i >= 0 (log 0 = -inf, log inf = inf, NaN
 * and x < 0 give NaN); relative error of log <= 3 ulp (vector kernels).
 * y may equal x. */
typedef void sg_log_shift_store_fn(size_t n, const float *x, float *y, float off);
/* t_i = x_i - log(-log(u_i)) for u_i in (0, 1): Gumbel noise added to x.
 * t may equal x. */
typedef void sg_gumbel_store_fn(size_t n, const float *x, const float *u, float *t);
/* t_i = x_i - log(-log(u_i)) for the n columns col0 .. col0 + n - 1 of
 * one row (col0 a multiple of 4), u exactly sg_random_uniform_f32's
 * numbers: Philox4x32-10 with key (key[0], key[1]) and counter
 * (column / 4, row, offset low, offset high), 23 bits plus one half times
 * 2^-23. t may equal x. */
typedef void sg_gumbel_noise_fn(size_t n, const float *x, float *t, const uint32_t key[2],
                                uint32_t row, uint64_t offset, size_t col0);
/* dx_i = y_i / (1 + |z_i|) (dy_i - dot) c. */
typedef void sg_stablemax_bwd_fn(size_t n, const float *x, const float *y, const float *dy,
                                 float *dx, float c, float dot);

enum sg_alt_slot_id {
#define SG_ALT_SLOT(slot) SG_ALT_SLOT_##slot,
#include "normalizers/alternatives_slots.inc"
#undef SG_ALT_SLOT
    SG_ALT_SLOT_COUNT
};

typedef struct sg_alt_kernels {
#define SG_ALT_SLOT(slot) sg_##slot##_fn *slot;
#include "normalizers/alternatives_slots.inc"
#undef SG_ALT_SLOT
    const char *impl_name[SG_ALT_SLOT_COUNT];
} sg_alt_kernels;

/* The table, filled on first use from alternatives_manifest.inc at the
 * level sg_active_isa() reports (so SOFTGATE_ISA applies). Never NULL. */
const sg_alt_kernels *sg_alt_kernels_get(void);

/* Every kernel compiled in (for tests that check each against ref). */
typedef struct sg_alt_kernel_entry {
    enum sg_alt_slot_id slot;
    sg_isa isa;
    const char *name;
    void (*fn)(void);
} sg_alt_kernel_entry;
const sg_alt_kernel_entry *sg_alt_kernel_entries(size_t *count);
const char *sg_alt_slot_name(enum sg_alt_slot_id slot);

#endif

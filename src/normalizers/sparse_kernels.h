/*
 * sparse_kernels.h - the kernels of the sparse normalizers (sparsemax,
 * entmax, sparse-softmax): signatures, contracts and their own small
 * dispatch table, filled from sparse_manifest.inc with the reference
 * kernels first and overridden up to sg_active_isa() (so SOFTGATE_ISA
 * applies). Internal. The softmax core's table does not belong here.
 *
 * Kernels are single-threaded, allocate nothing and trust their arguments.
 */
#ifndef SG_SPARSE_KERNELS_H
#define SG_SPARSE_KERNELS_H

#include <float.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "softgate.h"

/* max_i x_i (-inf for n == 0; NaN entries ignored); sets *bad = 1 when a
 * NaN or +inf is present (leaves it alone otherwise). */
typedef float sg_sparse_max_fn(size_t n, const float *x, int *bad);

/*
 * The indices i with x_i > thr, increasing, written to idx, and their
 * values x_i to val. Returns their count when it is <= cap; otherwise
 * stops once more than cap are found and returns cap + 1. idx and val
 * must have room for cap + 16 entries (vector stores may write up to 16
 * entries past the count, never past cap + 16). NaN never passes.
 */
typedef size_t sg_sparse_select_fn(size_t n, const float *x, float thr, uint32_t *idx, float *val,
                                   size_t cap);

/* Sums over u_i = scale * d_i (in double) with u_i > t: count, sum,
 * sum of squares and min; and the max of the other u_i (-inf if none).
 * -inf entries are never above t. Sums in an order of the kernel's own
 * (lanes), so ISA levels may differ in the last bits. */
typedef struct sg_sparse_sums {
    size_t k;
    double s1, s2, min_in, max_out;
} sg_sparse_sums;

/*
 * One step of exact 1.5-entmax's threshold solve from the sums `a` at t
 * (scale 1/2, S = {u > t}): the closed form on S, tau = mean_S -
 * sqrt((1 - sum_S (u - mean_S)^2) / |S|), returned in *tau with 1 when
 * it passes the exact check (min_S u > tau >= max of the rest); else 0 and
 * Newton's next t on g(t) = sum_S (u - t)^2 - 1 in *next (the caller stops
 * when it does not increase: rounding). Shared so that every kernel gets
 * the same bits.
 */
static inline int sg_entmax15_step(const sg_sparse_sums *a, double t, double *tau, double *next) {
    const double k = (double)a->k, inv_k = 1.0 / k, mean = a->s1 * inv_k, ss = a->s2 - a->s1 * mean;
    const double delta = (1.0 - (ss > 0.0 ? ss : 0.0)) * inv_k;
    const double ts = mean - sqrt(delta > 0.0 ? delta : 0.0);
    if (delta >= 0.0 && a->min_in > ts && a->max_out <= ts) {
        *tau = ts;
        return 1;
    }
    const double w1 = a->s1 - k * t, g = a->s2 - 2.0 * t * a->s1 + k * t * t - 1.0;
    *next = t + g / (2.0 * w1);
    return 0;
}
typedef void sg_sparse_sums_fn(size_t n, const float *d, double scale, double t, sg_sparse_sums *out);

/* Up to this many entries the sums pass is done inline (scalar): the
 * kernel's call and four horizontal reductions cost more than the loop;
 * beyond, the scalar loop's data-dependent branches (about half the
 * candidates are in the support) cost more than the branch-free kernel. */
#define SG_SPARSE_SUMS_INLINE 4

/*
 * The exact 1.5-entmax threshold of u = d / 2 over m candidates d (max
 * exactly 0; -inf allowed; no NaN): Newton's method on
 * g(t) = sum (u - t)_+^2 - 1 in double, from a start of the kernel's own
 * choosing, until the closed form t_S on S = {u > t} passes the exact check
 * min_S u > t_S >= max of the rest (then t_S is tau, whatever the start).
 * Returns t_S, or 0.0 (tau < 0 always) when it gave up (40 passes, or a
 * stall by rounding); the caller then takes another solver. The sums are
 * in the order of the same ISA level's sums kernel, so the result has the
 * bits of Newton from -1 with that kernel (the reference: that loop with
 * the reference sums), except with entries exactly at tau: then two
 * supports can pass the check (S and S plus the ties, whose t_S rounds
 * just below tau), another start may settle on the other one, and the
 * tie entries' outputs come out as 0 or as tau's rounding error squared
 * (below 2^-90 in the tests), which may differ between kernels and ISA
 * levels; the support elsewhere is the same. SIMD kernels propose the start on a float grid up
 * to m = SG_SPARSE_TAU15_MAX (above, they start from -1); the op takes
 * this slot only from a SIMD kernel, for 4 < m <= SG_SPARSE_TAU15_MAX.
 */
#define SG_SPARSE_TAU15_MAX 256
typedef double sg_sparse_tau15_fn(size_t m, const float *d);

/* v_j = (float)((double)v_j - xb) for j < m: the candidates' d from their
 * x (T = 1, no add mask), rounded once; the same bits at every level. */
typedef void sg_sparse_shift_fn(size_t m, float *v, double xb);

/* The 1.5-entmax output of a candidate row: y[0..n) = 0, then
 * y[idx_q] = (float)(max(d_q / 2 - tau, 0)^2) in double for q < m (idx
 * increasing, < n); the same bits at every level. */
typedef void sg_sparse_out15_fn(size_t n, float *y, size_t m, const float *d, const uint32_t *idx,
                                double tau);

/*
 * Whole unmasked 1.5-entmax rows (T = 1) of n <= SG_SPARSE_ROW15_MAX
 * floats, x + r ldx into y + r ldy (y == x with ldy == ldx allowed: a
 * row's x is read before its y is written), fused: the max, the
 * candidates x > sg_sparse_filter_threshold(max, 2, 1) and their d (as
 * select and shift), tau (as the op's candidate path: the inline scalar
 * Newton for m <= SG_SPARSE_SUMS_INLINE, else tau15) and y (as out15), so
 * the same bits as the general path at the same ISA level for the rows it
 * takes, whatever their position (entries exactly at tau: 0 or a tiny
 * value that may differ, as tau15 says). taken[r] = 1 with y written; 0 with the
 * row's y untouched when n is too large, the row has a NaN or +inf or
 * nothing above -inf, or the solver gave up (the caller then takes the
 * general path). The op takes this slot only from a SIMD kernel, for rows
 * longer than the short-row kernels'.
 */
#define SG_SPARSE_ROW15_MAX 512
typedef void sg_sparse_row15_fn(size_t rows, size_t n, const float *x, size_t ldx, float *y,
                                size_t ldy, uint8_t *taken);

/*
 * Whole unmasked sparsemax rows (T = 1) of n <= SG_SPARSE_ROW15_MAX, the
 * same arguments as row15, fused: the max (NaN / +inf flagged), the
 * candidates x > sg_sparse_filter_threshold(max, 1, 1) and their d, tau
 * by Michelot's iteration from -1 with the sums of sg_sparse_sums_run at
 * the kernel's level (the op's solve_tau_array, same stop), and
 * y = max(d - tau, 0) in double rounded once: the bits of the op's
 * candidate path at the same ISA level for every row it takes, whatever
 * the row's position (ties at tau included: the same sets). taken[r] = 0
 * with y untouched for a NaN / +inf / all -inf row or when Michelot did
 * not settle in 32 passes (the op then bisects). The op takes this slot
 * only from a SIMD kernel, for SG_SPARSE_MID_OPS < n <= SG_SPARSE_ROWSM_OPS.
 */
#define SG_SPARSE_ROWSM_OPS 256
typedef sg_sparse_row15_fn sg_sparse_rowsm_fn;

/*
 * The short-row path (n <= SG_SPARSE_SHORT_MAX, no mask, T = 1): the whole
 * forward op of one row x of n floats into y (may be x itself; every x is
 * read first). entmax 0: sparsemax; 1: 1.5-entmax. Sort-free: with
 * u = d (sparsemax) or d / 2 (1.5-entmax), d_i = x_i - max x rounded to
 * float, entry j is in the support iff f_j = sum_i (u_i - u_j)_+^q < 1
 * (q = 1, 2; ties add 0, so equal entries enter together). The support
 * may be decided in float; tau is then computed in double from its sums
 * and the support is verified exactly (min inside > tau >= max outside).
 * Returns 1 with y written; 0 with y untouched when the row has a NaN or
 * an infinity, or the verification failed (the caller takes the general
 * path).
 */
#define SG_SPARSE_SHORT_MAX 32
typedef int sg_sparse_short_row_fn(size_t n, const float *x, int entmax, float *y);

/* short_row over `rows` rows (x + r ldx into y + r ldy; y == x with
 * ldy == ldx allowed): taken[r] = 1 when the row was written. A row's bits
 * do not depend on its position or on `rows` (kernels may take rows across
 * lanes, with masks for a partial block). A taken row has the reference's
 * bits; a SIMD kernel may decline a row the reference takes (entries
 * exactly at tau off a dyadic grid, where the float proposal lands on the
 * wrong side: about 1 in 10^4 such rows), never the reverse, and a declined
 * row takes the general path, so the ops' bits do not change. */
typedef void sg_sparse_short_rows_fn(size_t rows, size_t n, const float *x, size_t ldx, float *y,
                                     size_t ldy, int entmax, uint8_t *taken);

/*
 * mid_rows: the same contract for SG_SPARSE_SHORT_MAX < n <=
 * SG_SPARSE_MID_MAX (its reference is short_row's, O(n^2) in double per
 * row). The ops take this path only when a SIMD kernel is installed
 * (sg_sparse_rows_kernel below): the reference is slower than the
 * candidate path there. Every row of n <= SG_SPARSE_MID_OPS takes it;
 * above, only 1.5-entmax chunks of flat rows of n <= 68 do (entmax.c,
 * entmax15_rows_mix: its passes do not shrink with the candidate count,
 * the fused row15 kernel's do).
 */
#define SG_SPARSE_MID_MAX 96
#define SG_SPARSE_MID_OPS 64
typedef sg_sparse_short_rows_fn sg_sparse_mid_rows_fn;

/*
 * The float threshold of the unmasked filter: the largest float at or
 * below xb - R T exactly (with a relative margin of 1e-6 on R T), so that
 * every x_i > xb - R T (every entry with d > -R once d is rounded: the
 * margin covers the double error of sg_z_diff) passes x_i > thr, and the
 * max itself always does.
 */
/* The next double / float toward -inf of a finite value, without a libm
 * call (this runs once per row). */
static inline double sg_sparse_down_d(double a) {
    uint64_t b;
    memcpy(&b, &a, sizeof b);
    if (a == 0.0) return -DBL_MIN * DBL_EPSILON; /* -denorm_min */
    b = a > 0.0 ? b - 1 : b + 1;
    memcpy(&a, &b, sizeof b);
    return a;
}

static inline float sg_sparse_down_f(float a) {
    uint32_t b;
    memcpy(&b, &a, sizeof b);
    if (a == 0.0f) return -FLT_MIN * FLT_EPSILON;
    b = a > 0.0f ? b - 1 : b + 1;
    memcpy(&a, &b, sizeof b);
    return a;
}

static inline float sg_sparse_filter_threshold(float xb, double radius, double t) {
    double r = radius * t * (1.0 + 2e-6);
    double thr = (double)xb - r;
    if (!(thr > -(double)FLT_MAX)) return -INFINITY;
    thr = sg_sparse_down_d(thr); /* below the rounding of xb - r */
    float f = (float)thr;
    if ((double)f > thr) f = f == -FLT_MAX ? -INFINITY : sg_sparse_down_f(f);
    return f;
}

#if defined(__x86_64__) || defined(_M_X64)
/* sg_sparse_filter_threshold(xb, 2.0, 1.0) without branches (AVX-512F;
 * the same floats for every xb; row15's filter). */
float sg_sparse_filter2_f32__avx512(float xb);
#endif

enum sg_sparse_slot {
#define SG_SPARSE_SLOT(slot) SG_SPARSE_SLOT_##slot,
#include "normalizers/sparse_slots.inc"
#undef SG_SPARSE_SLOT
    SG_SPARSE_SLOT_COUNT
};

typedef struct sg_sparse_kernels {
#define SG_SPARSE_SLOT(slot) sg_sparse_##slot##_fn *slot;
#include "normalizers/sparse_slots.inc"
#undef SG_SPARSE_SLOT
    const char *impl_name[SG_SPARSE_SLOT_COUNT];
    sg_isa isa[SG_SPARSE_SLOT_COUNT]; /* the level of each installed kernel */
} sg_sparse_kernels;

/* The table (thread-safe, filled on first use); never NULL, no NULL slot. */
const sg_sparse_kernels *sg_sparse_kernels_get(void);

/* The kernel that takes whole unmasked rows of n (T = 1) for sparsemax
 * and 1.5-entmax: short_rows for n <= SG_SPARSE_SHORT_MAX, mid_rows up to
 * SG_SPARSE_MID_OPS when it is a SIMD kernel; NULL otherwise (the
 * candidate path). */
static inline sg_sparse_short_rows_fn *sg_sparse_rows_kernel(size_t n) {
    const sg_sparse_kernels *k = sg_sparse_kernels_get();
    if (n <= SG_SPARSE_SHORT_MAX) return k->short_rows;
    if (n <= SG_SPARSE_MID_OPS && k->isa[SG_SPARSE_SLOT_mid_rows] > SG_ISA_REF) return k->mid_rows;
    return NULL;
}

/* Every kernel compiled in, for the tests (cast fn to the slot's type). */
typedef struct sg_sparse_kernel_entry {
    enum sg_sparse_slot slot;
    sg_isa isa;
    const char *name;
    void (*fn)(void);
} sg_sparse_kernel_entry;
const sg_sparse_kernel_entry *sg_sparse_kernel_entries(size_t *count);

#endif

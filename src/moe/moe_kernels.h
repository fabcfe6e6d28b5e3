/*
 * moe_kernels.h - the MoE family's kernels: the few-rows product that
 * streams a weight matrix once for all rows (decode steps), and the FFN
 * activations. Reference in moe_ref.c, AVX2 and AVX-512 versions in
 * moe_avx2.c / moe_avx512.c; sg_moe_kernels() picks one per process from
 * sg_active_isa() (SOFTGATE_ISA). Internal: kernels trust their arguments.
 */
#ifndef SG_MOE_KERNELS_H
#define SG_MOE_KERNELS_H

#include <stddef.h>

#include "softgate.h"

/*
 * out[r * ldo + j] = sum_{i < len} x[r * ldx + i] * w[j * ldw + i]
 * for r < n (1 <= n <= SG_MOE_SMALL_ROWS), j < m: X W^T for a few rows of
 * X, W read once (a block of W rows stays in L1 while every row of X uses
 * it). The summation order is fixed by the kernel (not by threads).
 * next, next_m: the next_m rows of W (same len and ldw) the caller reads
 * right after this call, or NULL, 0: the SIMD kernels prefetch the first of
 * them during their last rows (a hint: never read, results unchanged).
 */
typedef void sg_moe_rowdot_fn(size_t n, size_t m, size_t len, const float *x, size_t ldx,
                              const float *w, size_t ldw, float *out, size_t ldo,
                              const float *next, size_t next_m);

/*
 * Activation over cnt values in place on a: SwiGLU a = silu(a) * b,
 * GELU (tanh or erf) a = gelu(a) (b unused). Relative error a few float
 * ulp (the reference evaluates in double).
 */
typedef void sg_moe_act_fn(sg_moe_activation act, size_t cnt, float *a, const float *b);

typedef struct sg_moe_kernels {
    sg_moe_rowdot_fn *rowdot;
    sg_moe_act_fn *act;
    const char *name; /* e.g. "avx512" */
} sg_moe_kernels;

const sg_moe_kernels *sg_moe_kernels_get(void);

void sg_moe_rowdot_f32__ref(size_t n, size_t m, size_t len, const float *x, size_t ldx,
                            const float *w, size_t ldw, float *out, size_t ldo, const float *next,
                            size_t next_m);
void sg_moe_act_f32__ref(sg_moe_activation act, size_t cnt, float *a, const float *b);
#if defined(__x86_64__)
void sg_moe_rowdot_f32__avx2(size_t n, size_t m, size_t len, const float *x, size_t ldx,
                             const float *w, size_t ldw, float *out, size_t ldo, const float *next,
                             size_t next_m);
void sg_moe_act_f32__avx2(sg_moe_activation act, size_t cnt, float *a, const float *b);
void sg_moe_rowdot_f32__avx512(size_t n, size_t m, size_t len, const float *x, size_t ldx,
                               const float *w, size_t ldw, float *out, size_t ldo, const float *next,
                               size_t next_m);
void sg_moe_act_f32__avx512(sg_moe_activation act, size_t cnt, float *a, const float *b);
#endif

#endif

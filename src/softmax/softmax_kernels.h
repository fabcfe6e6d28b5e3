/*
 * softmax_kernels.h - the primitive kernels of the softmax family: their
 * signatures (one typedef per slot of the dispatch table) and contracts.
 *
 * Kernels are single-threaded, allocate nothing and trust their arguments
 * (the ops in softmax_ops.c check them). In every formula c = 1/T and
 * "exp" is the kernel's float exponential: relative error <= 2 ulp for
 * arguments >= -87.33; below that the result is denormal or 0 (outputs under
 * 2^-126 carry no accuracy guarantee), exp(-inf) is exactly 0, and NaN in
 * gives NaN out. Sums are accumulated in float lanes over
 * blocks of at most 1024 elements, then in double, so their error does not
 * grow with n.
 */
#ifndef SG_SOFTMAX_KERNELS_H
#define SG_SOFTMAX_KERNELS_H

#include <stddef.h>

/* Elements per block of float accumulation before folding into double. */
#define SG_SUM_BLOCK 1024

/* An extended-exponent sum m * 2^e, plus the max and min of x seen. */
typedef struct sg_extsum {
    double m, e;
    float max, min;
} sg_extsum;

/* max_i x_i; -inf for n == 0. NaN entries may or may not be ignored. */
typedef float sg_rmax_fn(size_t n, const float *x);
/* sum_i exp((x_i - max) * c). */
typedef double sg_expsum_fn(size_t n, const float *x, float max, float c);
/* y_i = exp((x_i - max) * c); returns sum_i y_i. y may equal x. */
typedef double sg_expsum_store_fn(size_t n, const float *x, float *y,
                                  float max, float c);
/* y_i = (x_i - max) * c (as shift_store with off = 0); returns
 * sum_i exp(y_i). The log-softmax pass that writes while it computes. */
typedef double sg_shiftexpsum_store_fn(size_t n, const float *x, float *y,
                                       float max, float c);
/* y_i = x_i * s. y may equal x. */
typedef void sg_scale_fn(size_t n, const float *x, float *y, float s);
/* y_i = exp((x_i - max) * c) * s. y may equal x. */
typedef void sg_expscale_store_fn(size_t n, const float *x, float *y,
                                  float max, float c, float s);
/*
 * Two-pass, pass 1: sum_i exp(x_i * c) as an extended-exponent pair, with
 * the range reduction of Dukhan & Ablavatski (valid while |x_i * c| <= 1e7;
 * the caller checks max/min). Also returns max and min of x.
 */
typedef void sg_extexp_sum_fn(size_t n, const float *x, float c,
                              sg_extsum *out);
/* Two-pass, pass 2: y_i = exp(x_i * c) / (m * 2^e), given inv_m = 1/m. */
typedef void sg_extexp_store_fn(size_t n, const float *x, float *y, float c,
                                float inv_m, float e);
/* y_i = (x_i - max) * c - off  (log-softmax output). y may equal x. */
typedef void sg_shift_store_fn(size_t n, const float *x, float *y, float max,
                               float c, float off);
/* sum_i a_i * b_i, and sum_i a_i. */
typedef double sg_dot_fn(size_t n, const float *a, const float *b);
typedef double sg_sum_fn(size_t n, const float *a);
/* dx_i = y_i * (dy_i - dot) * c. dx may equal dy. */
typedef void sg_softmax_bwd_fn(size_t n, const float *y, const float *dy,
                               float *dx, float dot, float c);
/* dx_i = (dy_i - exp(y_i) * sum) * c. dx may equal dy. */
typedef void sg_logsoftmax_bwd_fn(size_t n, const float *y, const float *dy,
                                  float *dx, float sum, float c);
/*
 * Whole short rows (n <= the table's short_max_n) held in registers, one
 * read per row: mode SG_SHORT_SOFTMAX or SG_SHORT_LOG_SOFTMAX write the row
 * of y (y may equal x, ldy == ldx); SG_SHORT_LOGSUMEXP writes one value,
 * y[r * ldy] = max / t + log(sum) (t = T, so that the max term is not
 * rounded through c = 1/T). Stops before the first row whose max is +-inf (or NaN-only)
 * and returns how many rows it completed; a row with a NaN and a finite max
 * is completed as NaN.
 */
enum { SG_SHORT_SOFTMAX = 0, SG_SHORT_LOG_SOFTMAX = 1, SG_SHORT_LOGSUMEXP = 2 };
typedef size_t sg_softmax_short_fn(size_t rows, size_t n, const float *x,
                                   size_t ldx, float *y, size_t ldy, float c,
                                   float t, int mode);

/*
 * Backward of whole short rows (n <= the table's short_max_n) in registers:
 * softmax (log_mode == 0): dx = y * (dy - sum_j y_j dy_j) * c;
 * log-softmax (log_mode == 1): dx = (dy - exp(y) * sum_j dy_j) * c.
 * dx may equal dy (lddx == lddy).
 */
typedef void sg_softmax_bwd_short_fn(size_t rows, size_t n, const float *y, size_t ldy,
                                     const float *dy, size_t lddy, float *dx, size_t lddx,
                                     float c, int log_mode);

#endif

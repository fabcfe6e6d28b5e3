/*
 * softmax_internal.h - what the softmax ops share between their files:
 * the description of one forward call, argument checks, the exact
 * masked/special-value row path. Internal.
 */
#ifndef SG_SOFTMAX_INTERNAL_H
#define SG_SOFTMAX_INTERNAL_H

#include <math.h>
#include <stdint.h>

#include "core/context.h"
#include "core/dispatch.h"

typedef enum sg_fwd_op { SG_OP_SOFTMAX, SG_OP_LOG_SOFTMAX, SG_OP_LOGSUMEXP } sg_fwd_op;

/* Rows at least this long are split into fixed chunks (and across
 * threads); the chunking depends on n alone, so results do not depend on
 * the thread count. */
#define SG_SPLIT_N ((size_t)1 << 20)
#define SG_CHUNK_MIN ((size_t)1 << 16)
#define SG_MAX_CHUNKS 1024
/* Elements of work per thread task when rows are split across threads. */
#define SG_TASK_ELEMS ((size_t)16384)
/* Below this much work a call stays on the caller's thread: waking the
 * pool costs more than it saves. */
#define SG_PARALLEL_MIN_ELEMS ((size_t)16384)

/* Chunk length for a row of n (a multiple of 64); returns the count. */
static inline size_t sg_chunking(size_t n, size_t *chunk) {
    size_t per = (n + SG_MAX_CHUNKS - 1) / SG_MAX_CHUNKS;
    per = (per + 63) / 64 * 64;
    *chunk = per > SG_CHUNK_MIN ? per : SG_CHUNK_MIN;
    return (n + *chunk - 1) / *chunk;
}

static inline size_t sg_rows_per_task(size_t n) {
    return SG_TASK_ELEMS / n > 0 ? SG_TASK_ELEMS / n : 1;
}

/* One forward call, resolved: what every row function needs. */
typedef struct sg_fwd_job {
    const sg_kernels *k;
    sg_fwd_op op;
    sg_softmax_algorithm algorithm; /* never AUTO here */
    size_t rows, n;
    const float *x;
    size_t ldx;
    float *y; /* [rows x n], or [rows] for logsumexp */
    size_t ldy;
    float c;           /* 1 / T */
    float temperature; /* T, for the max / T term of logsumexp */
    const uint8_t *keep;
    size_t keep_ld;
    const float *add;
    size_t add_ld;
} sg_fwd_job;

/*
 * Rows that take the exact path whatever the algorithm: masked rows, and
 * every row when T > 1e36, where x - max can overflow float while
 * (x - max) / T still matters (the exact path works in double).
 */
#define SG_EXACT_BELOW_C 1e-36f
static inline int sg_job_exact(const sg_fwd_job *j) {
    return j->keep || j->add || j->c < SG_EXACT_BELOW_C;
}

/* The output of row r of a forward job (for logsumexp, one float). */
static inline float *sg_job_out(const sg_fwd_job *j, size_t r) {
    return j->op == SG_OP_LOGSUMEXP ? j->y + r : j->y + r * j->ldy;
}

/*
 * z_i - z_b for z = x/T + a, in double, without the cancellation of the
 * plain expression: the x difference is taken before dividing by T (so a
 * huge x/T neither overflows nor absorbs a small a), and both differences
 * are error-free sums whose error terms are added back.
 */
static inline double sg_two_sum(double a, double b, double *err) {
    double s = a + b, bb = s - a;
    *err = (a - (s - bb)) + (b - bb);
    return s;
}

/* a - b exactly as hi + lo; where a - b overflows (doubles near DBL_MAX),
 * both halved (exact) and the result doubled back, possibly to +-inf. */
static inline double sg_exact_diff(double a, double b, double *lo) {
    double hi = sg_two_sum(a, -b, lo);
    if (hi - hi != 0.0) {
        hi = 2.0 * sg_two_sum(0.5 * a, -0.5 * b, lo);
        *lo *= 2.0;
    }
    return hi;
}

static inline double sg_z_diff(double x_i, double a_i, double x_b, double a_b, double t) {
    double xlo, alo;
    double xhi = sg_exact_diff(x_i, x_b, &xlo), ahi = sg_exact_diff(a_i, a_b, &alo);
    double p = xhi / t, plo = xlo / t;
    if (p - p != 0.0) /* the scaled x difference is beyond double: it decides */
        return p;
    return (p + ahi) + (plo + alo);
}

/*
 * A row seen through its masks: the rules every normalizer shares (what is
 * removed, how z = x/T + a is classified, the largest kept z).
 */
typedef struct sg_row_view {
    const float *x;
    const uint8_t *keep; /* NULL: keep all */
    const float *add;    /* NULL: no additive mask */
    double t;            /* temperature */
} sg_row_view;

/* What one row holds: counts of kept NaN, +inf and finite z, and (x, a) of
 * the entry b with the largest finite kept z. */
typedef struct sg_row_scan {
    size_t nan, posinf, finite;
    double xb, ab;
} sg_row_scan;

static inline int sg_row_removed(const sg_row_view *v, size_t i) {
    return (v->keep && !v->keep[i]) || (v->add && v->add[i] == -INFINITY);
}

/* z_i in the extended reals: +1 for +inf, -1 for -inf, 2 for NaN (x = -inf
 * with a = +inf included), 0 for finite. */
static inline int sg_row_z_class(const sg_row_view *v, size_t i) {
    float x = v->x[i], a = v->add ? v->add[i] : 0.0f;
    if (isnan(x) || isnan(a) || (x == -INFINITY && a == INFINITY)) return 2;
    if (x == INFINITY || a == INFINITY) return 1;
    if (x == -INFINITY) return -1;
    return 0;
}

/* z_i - z_b in double (sg_z_diff). */
static inline double sg_row_z_minus(const sg_row_view *v, size_t i, double xb, double ab) {
    return sg_z_diff(v->x[i], v->add ? (double)v->add[i] : 0.0, xb, ab, v->t);
}

/* The scan of a row of n (softmax_masked.c). */
sg_row_scan sg_row_scan_f32(const sg_row_view *v, size_t n);

/*
 * The exact row path: masks, temperature and every special value of the
 * table in softmax.h, for any row (softmax_masked.c). Vectorized through
 * the kernel table on blocks of z computed on the stack.
 */
void sg_masked_row(const sg_fwd_job *j, size_t r);

/* Checks options for rows x n (masks included) and returns the
 * temperature's reciprocal in *c. The algorithm field is checked only when
 * the op uses it. */
sg_status sg_check_options(sg_context *ctx, const char *op, size_t rows, size_t n,
                           const sg_softmax_options *o, int uses_algorithm, float *c);
/* The argument checks shared by the forward ops (f32 and f64): options,
 * x, the output (y, or lse for logsumexp), in-place strides. */
sg_status sg_check_forward(sg_context *ctx, const char *name, sg_fwd_op op, size_t rows, size_t n,
                           const void *x, size_t ldx, const void *y, size_t ldy,
                           const sg_softmax_options *o, int uses_algorithm, float *c);
/* The argument checks shared by the backward ops: options, y, dy, dx, and
 * in place (dx == dy or dx == y) only with the same row stride. */
sg_status sg_check_backward(sg_context *ctx, const char *name, size_t rows, size_t n,
                            const float *y, size_t ldy, const float *dy, size_t lddy,
                            const float *dx, size_t lddx, const sg_softmax_options *o, float *c);
/* The argument checks shared by the per-row classification losses with
 * integer targets (sparsemax loss, stablemax cross-entropy): options, x,
 * target and loss [rows], dx (may be NULL; in place only with the same
 * stride), and every target inside [0, n) and kept by the masks. */
sg_status sg_check_class_loss(sg_context *ctx, const char *name, size_t rows, size_t n,
                              const float *x, size_t ldx, const int32_t *target,
                              const float *loss, const float *dx, size_t lddx,
                              const sg_softmax_options *o, float *c);
/* Checks one matrix argument: non-NULL (when rows * n > 0), ld >= n. */
sg_status sg_check_matrix(sg_context *ctx, const char *op, const char *name,
                          const void *p, size_t rows, size_t n, size_t ld);

#endif

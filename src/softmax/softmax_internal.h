/*
 * softmax_internal.h - what the softmax ops share between their files:
 * the description of one forward call, argument checks, the exact
 * masked/special-value row path. Internal.
 */
#ifndef SG_SOFTMAX_INTERNAL_H
#define SG_SOFTMAX_INTERNAL_H

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

static inline int sg_job_masked(const sg_fwd_job *j) { return j->keep || j->add; }

/* The output of row r of a forward job (for logsumexp, one float). */
static inline float *sg_job_out(const sg_fwd_job *j, size_t r) {
    return j->op == SG_OP_LOGSUMEXP ? j->y + r : j->y + r * j->ldy;
}

/*
 * (p_i + q_i) - (p_b + q_b) for doubles, without the cancellation of the
 * plain sum: z = x/T + a is kept as the pair (x/T, a), so that a huge x
 * does not absorb a small a, nor does x - max_x lose x before a is added.
 * TwoSum on each difference, then the errors are added back.
 */
static inline double sg_two_sum(double a, double b, double *err) {
    double s = a + b, bb = s - a;
    *err = (a - (s - bb)) + (b - bb);
    return s;
}

static inline double sg_pair_diff(double p_i, double q_i, double p_b, double q_b) {
    double e1, e2;
    double s1 = sg_two_sum(p_i, -p_b, &e1), s2 = sg_two_sum(q_i, -q_b, &e2);
    if (s1 - s1 != 0.0 || s2 - s2 != 0.0) {
        /* A difference overflowed (doubles near DBL_MAX): halve everything,
         * which is exact, and scale back (the result may be -inf). */
        s1 = sg_two_sum(0.5 * p_i, -0.5 * p_b, &e1);
        s2 = sg_two_sum(0.5 * q_i, -0.5 * q_b, &e2);
        return 2.0 * ((s1 + s2) + (e1 + e2));
    }
    return (s1 + s2) + (e1 + e2);
}

/*
 * The exact row path: masks, temperature and every special value of the
 * table in softmax.h, for any row (softmax_masked.c). Vectorized through
 * the kernel table on blocks of z computed on the stack.
 */
void sg_masked_row(const sg_fwd_job *j, size_t r);

/* Checks options and returns the temperature's reciprocal in *c. */
sg_status sg_check_options(sg_context *ctx, const char *op, size_t n,
                           const sg_softmax_options *o, float *c);
/* Checks one matrix argument: non-NULL (when rows * n > 0), ld >= n. */
sg_status sg_check_matrix(sg_context *ctx, const char *op, const char *name,
                          const void *p, size_t rows, size_t n, size_t ld);

#endif

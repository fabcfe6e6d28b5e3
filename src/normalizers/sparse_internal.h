/*
 * sparse_internal.h - what the sparse normalizers (sparsemax.c, entmax.c,
 * sparse_softmax.c) share: the candidate gathering that makes them fast,
 * the special-value outputs, and one job/row/thread driver. Internal; the
 * kernels are in sparse_kernels.h.
 */
#ifndef SG_SPARSE_INTERNAL_H
#define SG_SPARSE_INTERNAL_H

#include <float.h>
#include <math.h>
#include <stdint.h>

#include "normalizers/sparse_kernels.h"
#include "softmax/softmax_internal.h"

/* Candidates a row may hold on the stack (16 KiB + 16 KiB); a row with
 * more takes the full-row path, which uses the output row as scratch. */
#define SG_SPARSE_CAND_MAX 4096

static inline int sg_sparse_special(const sg_row_scan *s) {
    return s->nan || s->posinf || !s->finite;
}

/* d_i = z_i - z_b rounded once to float; -inf for removed entries, for
 * x = -inf, and below -FLT_MAX (never in a support: supports lie within
 * a bounded distance of the max). */
static inline float sg_sparse_d(const sg_row_view *v, const sg_row_scan *s, size_t i) {
    if (sg_row_removed(v, i) || v->x[i] == -INFINITY) return -INFINITY;
    double d = sg_row_z_minus(v, i, s->xb, s->ab);
    return d < -FLT_MAX ? -INFINITY : (float)d;
}

/* The output of a special row (NaN, +inf or nothing finite), shared by
 * sparsemax, entmax and sparse-softmax (the table in sparse.h). */
static inline float sg_sparse_special_p(const sg_row_view *v, const sg_row_scan *s, size_t i) {
    if (sg_row_removed(v, i)) return 0.0f;
    if (s->nan) return NAN;
    if (s->posinf) return sg_row_z_class(v, i) == 1 ? 1.0f / (float)s->posinf : 0.0f;
    return 0.0f;
}

/* The entries of a row that can be in a support: d and index, in index
 * order. */
typedef struct sg_sparse_cands {
    size_t m;
    float d[SG_SPARSE_CAND_MAX + 16]; /* + 16: the select kernel's slack */
    uint32_t idx[SG_SPARSE_CAND_MAX + 16];
} sg_sparse_cands;

typedef enum {
    SG_SPARSE_SPECIAL, /* NaN, +inf or nothing finite: use sg_sparse_special_p */
    SG_SPARSE_CANDS,   /* c holds every entry with d > -radius (maybe a few more) */
    SG_SPARSE_FULL     /* out[i] = sg_sparse_d(i) for every i (too many candidates) */
} sg_sparse_kind;

/*
 * Classifies a row of n and gathers what its threshold needs. radius R:
 * no entry with d <= -R can be in the support (sparsemax 1, 1.5-entmax 2,
 * alpha-entmax 1/(alpha-1)). Candidates may include entries with
 * d <= -R (the vectorized filter works on x with a threshold rounded
 * down), never miss one with d > -R. Unmasked rows: the max and the
 * filter are the dispatched kernels (two reads of x), d is computed only
 * for the candidates. *s is filled in every case (xb, ab: the max entry).
 * out is written only for SG_SPARSE_FULL (it may be x itself).
 */
sg_sparse_kind sg_sparse_gather(const sg_row_view *v, size_t n, double radius, size_t cap,
                                sg_row_scan *s, sg_sparse_cands *c, float *out);

/* max(w, 0) without a branch (compilers keep the branch of w > 0 ? w : 0,
 * which mispredicts on candidates): w + |w| is +0 or 2w exactly. */
static inline double sg_relu(double w) { return 0.5 * (w + fabs(w)); }

/* SG_SPARSE_SUMS_INLINE (sparse_kernels.h): up to this many entries the
 * sums pass below is done inline. */

/* The sums kernel's pass (sparse_kernels.h), inline for short arrays. */
static inline void sg_sparse_sums_run(const sg_sparse_kernels *k, size_t n, const float *d,
                                      double scale, double t, sg_sparse_sums *out) {
    if (n > SG_SPARSE_SUMS_INLINE) {
        k->sums(n, d, scale, t, out);
        return;
    }
    sg_sparse_sums a = {0, 0.0, 0.0, INFINITY, -INFINITY};
    for (size_t i = 0; i < n; i++) {
        const double u = scale * (double)d[i];
        if (u > t) {
            a.k++, a.s1 += u, a.s2 += u * u;
            if (u < a.min_in) a.min_in = u;
        } else if (u > a.max_out) {
            a.max_out = u;
        }
    }
    *out = a;
}

/* One call of a sparse op, resolved; row() computes row r. */
typedef struct sg_sparse_job sg_sparse_job;
struct sg_sparse_job {
    void (*row)(const sg_sparse_job *j, size_t r);
    size_t rows, n, rows_per_task;
    const float *x; /* forward: x; backward: y */
    size_t ldx;
    const float *dy; /* backward */
    size_t lddy;
    float *out; /* forward: y; backward: dx */
    size_t ldo;
    double t;     /* temperature */
    double alpha; /* entmax */
    size_t k;     /* sparse-softmax */
    const uint8_t *keep;
    size_t keep_ld;
    const float *add;
    size_t add_ld;
    /* optional: computes rows [r0, r1) (else row() is called per row) */
    void (*rows_fn)(const sg_sparse_job *j, size_t r0, size_t r1);
    sg_sparse_short_rows_fn *short_rows; /* sg_sparse_rows_kernel(n) (maybe NULL), once per call */
    /* optional: every task starts at a multiple of this many rows (0: any),
     * for rows_fn that decide per aligned chunk of rows */
    size_t task_align;
};

static inline sg_row_view sg_sparse_view(const sg_sparse_job *j, size_t r) {
    sg_row_view v = {j->x + r * j->ldx, j->keep ? j->keep + r * j->keep_ld : NULL,
                     j->add ? j->add + r * j->add_ld : NULL, j->t};
    return v;
}

/* Runs j->row over every row, in fixed tasks across the context's threads
 * (a row's bits never depend on the thread that computes it). */
void sg_sparse_run(sg_context *ctx, sg_sparse_job *j, size_t rows, size_t n,
                   const sg_softmax_options *o);

#endif

/*
 * confidence.c - confidence scores of softmax(x / T) per row: maximum
 * probability, margin between the two largest, entropy, and the energy
 * score -T logsumexp(x / T) (Liu et al., 2020). Forward only. The two
 * largest come from the family's top-k scan (k = 2); the rest from
 * d = z - max z <= 0 in blocks on the stack through the softmax core's
 * kernels (shift_store, expsum_store, dot), so every term is bounded and
 * extreme logits cannot overflow. Masked and special rows build d in
 * double (softmax_internal.h).
 */
#include <float.h>
#include <math.h>

#include "losses/losses_internal.h"

#define DBLOCK 1024

typedef struct conf_job {
    const sg_kernels *k;
    sg_topk_scan_fn *scan;
    size_t rows, n;
    const float *x;
    size_t ldx;
    float *max_prob, *margin, *entropy, *energy;
    double t;
    float c;
    const uint8_t *keep;
    size_t keep_ld;
    const float *add;
    size_t add_ld;
    size_t rows_per_task;
} conf_job;

static void put(const conf_job *j, size_t r, double mp, double mg, double h, double e) {
    if (j->max_prob) j->max_prob[r] = (float)mp;
    if (j->margin) j->margin[r] = (float)mg;
    if (j->entropy) j->entropy[r] = (float)h;
    if (j->energy) j->energy[r] = (float)e;
}

/* From S = sum e^d, D = sum e^d d (d <= 0), the second largest d2, and
 * the offset off = max z (z = off + d). */
static void finish(const conf_job *j, size_t r, double S, double D, double d2, double off) {
    double h = log(S) - D / S;
    put(j, r, 1.0 / S, -expm1(d2) / S, h > 0.0 ? h : 0.0, -j->t * (off + log(S)));
}

/* Accumulates S and D over a block of d (overwritten by e^d in e). */
static void block_sums(const sg_kernels *k, size_t len, const float *d, float *e, double *S,
                       double *D) {
    *S += k->expsum_store(len, d, e, 0.0f, 1.0f);
    *D += k->dot(len, e, d);
}

static void exact_row(const conf_job *j, size_t r) {
    const sg_row_view v = {j->x + r * j->ldx, j->keep ? j->keep + r * j->keep_ld : NULL,
                           j->add ? j->add + r * j->add_ld : NULL, j->t};
    const size_t n = j->n;
    const sg_row_scan s = sg_row_scan_f32(&v, n);
    if (s.nan) {
        put(j, r, NAN, NAN, NAN, NAN);
        return;
    }
    if (s.posinf) {
        double c = (double)s.posinf;
        put(j, r, 1.0 / c, s.posinf == 1 ? 1.0 : 0.0, log(c), -INFINITY);
        return;
    }
    if (!s.finite) {
        put(j, r, 0.0, 0.0, 0.0, INFINITY);
        return;
    }
    float d[DBLOCK], e[DBLOCK];
    double S = 0.0, D = 0.0, d2 = -INFINITY;
    int seen_max = 0;
    for (size_t i = 0; i < n; i += DBLOCK) {
        size_t len = n - i < DBLOCK ? n - i : DBLOCK;
        for (size_t q = 0; q < len; q++) {
            size_t a = i + q;
            if (sg_row_removed(&v, a) || v.x[a] == -INFINITY) {
                d[q] = -INFINITY;
                continue;
            }
            double dd = sg_row_z_minus(&v, a, s.xb, s.ab);
            /* the second largest: every entry but one occurrence of the max */
            if (dd == 0.0 && !seen_max) seen_max = 1;
            else if (dd > d2) d2 = dd;
            d[q] = (float)dd;
        }
        /* -inf * 0 would be NaN in the dot: those entries are set to a
         * finite stand-in whose e^d is exactly 0 */
        for (size_t q = 0; q < len; q++)
            if (d[q] < -1e30f) d[q] = -1e30f;
        block_sums(j->k, len, d, e, &S, &D);
    }
    finish(j, r, S, D, d2, s.xb / v.t + s.ab);
}

static void fast_row(const conf_job *j, size_t r) {
    const float *x = j->x + r * j->ldx;
    const size_t n = j->n;
    double val[2];
    int32_t idx[2];
    sg_topk_buf b;
    sg_topk_reset(&b, n >= 2 ? 2 : 1, val, idx);
    const float mx = j->scan(n, x, 0, &b);
    if (!(mx - mx == 0.0f) || b.count < b.k) { /* +-inf or NaN max: the exact path */
        exact_row(j, r);
        return;
    }
    float d[DBLOCK], e[DBLOCK];
    double S = 0.0, D = 0.0;
    for (size_t i = 0; i < n; i += DBLOCK) {
        size_t len = n - i < DBLOCK ? n - i : DBLOCK;
        j->k->shift_store(len, x + i, d, mx, j->c, 0.0f);
        for (size_t q = 0; q < len; q++)
            if (d[q] < -1e30f) d[q] = -1e30f; /* x = -inf: e^d = 0, no -inf * 0 */
        block_sums(j->k, len, d, e, &S, &D);
    }
    if (!(S < INFINITY && D - D == 0.0)) { /* a NaN the scan skipped */
        exact_row(j, r);
        return;
    }
    const double d2 = n >= 2 ? ((double)val[1] - mx) / j->t : -INFINITY;
    finish(j, r, S, D, d2, (double)mx / j->t);
}

static void rows_task(void *arg, size_t t) {
    const conf_job *j = arg;
    size_t r0 = t * j->rows_per_task, r1 = r0 + j->rows_per_task;
    for (size_t r = r0; r < r1 && r < j->rows; r++) {
        if (j->n == 0) put(j, r, 0.0, 0.0, 0.0, INFINITY);
        else if (j->keep || j->add || j->c < SG_EXACT_BELOW_C) exact_row(j, r);
        else fast_row(j, r);
    }
}

sg_status sg_confidence_f32(sg_context *ctx, size_t rows, size_t n, const float *x, size_t ldx,
                            float *max_prob, float *margin, float *entropy, float *energy,
                            const sg_softmax_options *options) {
    static const char name[] = "sg_confidence_f32";
    if (!ctx) return SG_ERR_ARGUMENT;
    sg_ok(ctx);
    sg_softmax_options o = options ? *options : sg_softmax_options_default();
    conf_job j = {0};
    sg_status st = sg_check_options(ctx, name, rows, n, &o, 0, &j.c);
    if (st == SG_OK && !max_prob && !margin && !entropy && !energy)
        st = sg_fail(ctx, SG_ERR_ARGUMENT,
                     "%s: max_prob, margin, entropy and energy are all NULL (nothing to compute)", name);
    if (st == SG_OK) st = sg_check_matrix(ctx, name, "x", x, rows, n, ldx);
    if (st != SG_OK || rows == 0) return st;
    j.k = sg_kernels_get();
    j.scan = sg_topk_scan_get();
    j.rows = rows, j.n = n;
    j.x = x, j.ldx = ldx;
    j.max_prob = max_prob, j.margin = margin, j.entropy = entropy, j.energy = energy;
    j.t = o.temperature;
    j.keep = o.keep_mask, j.keep_ld = o.keep_mask_ld;
    j.add = o.add_mask, j.add_ld = o.add_mask_ld;
    j.rows_per_task = sg_rows_per_task(n ? n : 1);
    size_t tasks = (rows + j.rows_per_task - 1) / j.rows_per_task;
    if (ctx->threads == 1 || rows * n < SG_PARALLEL_MIN_ELEMS)
        for (size_t t = 0; t < tasks; t++) rows_task(&j, t);
    else sg_parallel_for(ctx, tasks, rows_task, &j);
    return SG_OK;
}

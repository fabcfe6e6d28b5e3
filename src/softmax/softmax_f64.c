/*
 * softmax_f64.c - double-precision softmax, log-softmax and logsumexp for
 * the statistical models (EM responsibilities, likelihoods). Plain scalar
 * C with libm, the same masks and special values as the float32 ops; rows
 * are split across the context's threads.
 */
#include <math.h>

#include "softmax/softmax_internal.h"

typedef struct f64_job {
    sg_fwd_op op;
    size_t rows, n;
    const double *x;
    size_t ldx;
    double *y;
    size_t ldy;
    double t; /* temperature */
    const uint8_t *keep;
    size_t keep_ld;
    const double *add;
    size_t add_ld;
} f64_job;

/* Class of z = x/T + a: 0 finite, 1 +inf, -1 -inf, 2 NaN, 3 removed. */
static int classify(const f64_job *j, size_t r, size_t i) {
    if (j->keep && !j->keep[r * j->keep_ld + i]) return 3;
    double x = j->x[r * j->ldx + i], a = j->add ? j->add[r * j->add_ld + i] : 0.0;
    if (a == -INFINITY) return 3;
    if (isnan(x) || isnan(a) || (x == -INFINITY && a == INFINITY)) return 2;
    if (x == INFINITY || a == INFINITY) return 1;
    return x == -INFINITY ? -1 : 0;
}

static void f64_row(const f64_job *j, size_t r) {
    const double *x = j->x + r * j->ldx;
    const double *a = j->add ? j->add + r * j->add_ld : NULL;
    double *out = j->op == SG_OP_LOGSUMEXP ? j->y + r : j->y + r * j->ldy;
    size_t nan = 0, posinf = 0, finite = 0;
    /* The largest kept z = x/T + a, compared through sg_z_diff so that a
     * huge x neither absorbs a small a nor overflows when divided by T. */
    double xb = 0.0, ab = 0.0; /* (x, a) of the largest kept z */
    for (size_t i = 0; i < j->n; i++) {
        int cl = classify(j, r, i);
        nan += cl == 2;
        posinf += cl == 1;
        if (cl == 0 && (finite++ == 0 || sg_z_diff(x[i], a ? a[i] : 0.0, xb, ab, j->t) > 0.0)) {
            xb = x[i];
            ab = a ? a[i] : 0.0;
        }
    }
    double sum = 0.0;
    if (!nan && !posinf && finite)
        for (size_t i = 0; i < j->n; i++)
            if (classify(j, r, i) == 0) sum += exp(sg_z_diff(x[i], a ? a[i] : 0.0, xb, ab, j->t));
    double lse = nan ? NAN : posinf ? INFINITY : !finite ? -INFINITY : xb / j->t + ab + log(sum);
    if (j->op == SG_OP_LOGSUMEXP) {
        *out = lse;
        return;
    }
    const int log_out = j->op == SG_OP_LOG_SOFTMAX;
    for (size_t i = 0; i < j->n; i++) {
        int cl = classify(j, r, i);
        double v;
        if (cl == 3) v = log_out ? -INFINITY : 0.0;
        else if (nan) v = NAN;
        else if (posinf) v = cl == 1 ? (log_out ? -log((double)posinf) : 1.0 / (double)posinf)
                                     : (log_out ? -INFINITY : 0.0);
        else if (cl != 0) v = log_out ? -INFINITY : 0.0;
        else {
            double d = sg_z_diff(x[i], a ? a[i] : 0.0, xb, ab, j->t);
            v = log_out ? d - log(sum) : exp(d) / sum;
        }
        out[i] = v;
    }
}

static void f64_task(void *arg, size_t t) {
    const f64_job *j = arg;
    size_t per = sg_rows_per_task(j->n), r0 = t * per;
    size_t r1 = r0 + per < j->rows ? r0 + per : j->rows;
    for (size_t r = r0; r < r1; r++) f64_row(j, r);
}

static sg_status forward_f64(sg_context *ctx, const char *name, sg_fwd_op op, size_t rows,
                             size_t n, const double *x, size_t ldx, double *y, size_t ldy,
                             const sg_softmax_options *options) {
    if (!ctx) return SG_ERR_ARGUMENT;
    sg_ok(ctx);
    sg_softmax_options o = options ? *options : sg_softmax_options_default();
    float c;
    sg_status st = sg_check_forward(ctx, name, op, rows, n, x, ldx, y, ldy, &o, 0, &c);
    if (st != SG_OK) return st;
    if (rows == 0) return SG_OK;
    if (n == 0) {
        if (op == SG_OP_LOGSUMEXP)
            for (size_t r = 0; r < rows; r++) y[r] = -INFINITY;
        return SG_OK;
    }
    f64_job j = {op, rows, n, x, ldx, y, ldy, o.temperature, o.keep_mask, o.keep_mask_ld,
                 o.add_mask, o.add_mask_ld};
    size_t per = sg_rows_per_task(n);
    if (ctx->threads == 1 || rows * n < SG_PARALLEL_MIN_ELEMS / 4) {
        for (size_t r = 0; r < rows; r++) f64_row(&j, r);
        return SG_OK;
    }
    sg_parallel_for(ctx, (rows + per - 1) / per, f64_task, &j);
    return SG_OK;
}

sg_status sg_softmax_f64(sg_context *ctx, size_t rows, size_t n, const double *x, size_t ldx,
                         double *y, size_t ldy, const sg_softmax_options *options) {
    return forward_f64(ctx, "sg_softmax_f64", SG_OP_SOFTMAX, rows, n, x, ldx, y, ldy, options);
}

sg_status sg_log_softmax_f64(sg_context *ctx, size_t rows, size_t n, const double *x, size_t ldx,
                             double *y, size_t ldy, const sg_softmax_options *options) {
    return forward_f64(ctx, "sg_log_softmax_f64", SG_OP_LOG_SOFTMAX, rows, n, x, ldx, y, ldy,
                       options);
}

sg_status sg_logsumexp_f64(sg_context *ctx, size_t rows, size_t n, const double *x, size_t ldx,
                           double *lse, const sg_softmax_options *options) {
    return forward_f64(ctx, "sg_logsumexp_f64", SG_OP_LOGSUMEXP, rows, n, x, ldx, lse, 1,
                       options);
}

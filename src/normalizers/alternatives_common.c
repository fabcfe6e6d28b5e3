/*
 * alternatives_common.c - the shared parts of the softmax alternatives'
 * ops: argument checks (built on the softmax core's sg_check_options and
 * sg_check_matrix) and running rows across threads.
 */
#include "normalizers/alternatives_internal.h"

static void rows_task(void *arg, size_t t) {
    const alt_job *j = arg;
    size_t r0 = t * j->rows_per_task, r1 = r0 + j->rows_per_task;
    if (r1 > j->rows) r1 = j->rows;
    for (size_t r = r0; r < r1; r++) j->row(j, r);
}

/* Rows go to tasks of a size fixed by n; a row's bits never depend on the
 * thread that computes it, so every thread count gives the same result. */
void sg_alt_run(sg_context *ctx, alt_job *j, size_t rows, size_t n, const sg_softmax_options *o,
                float c) {
    j->k = sg_alt_kernels_get();
    j->ck = sg_kernels_get();
    j->rows = rows;
    j->n = n;
    j->c = c;
    j->t = o->temperature;
    j->keep = o->keep_mask;
    j->keep_ld = o->keep_mask_ld;
    j->add = o->add_mask;
    j->add_ld = o->add_mask_ld;
    j->rows_per_task = sg_rows_per_task(n);
    if (ctx->threads == 1 || rows * n < SG_PARALLEL_MIN_ELEMS) {
        for (size_t r = 0; r < rows; r++) j->row(j, r);
        return;
    }
    sg_parallel_for(ctx, (rows + j->rows_per_task - 1) / j->rows_per_task, rows_task, j);
}

sg_status sg_alt_check_forward(sg_context *ctx, const char *name, size_t rows, size_t n,
                               const float *x, size_t ldx, const float *y, size_t ldy,
                               sg_softmax_options *o, const sg_softmax_options *options, float *c) {
    *o = options ? *options : sg_softmax_options_default();
    return sg_check_forward(ctx, name, SG_OP_SOFTMAX, rows, n, x, ldx, y, ldy, o, 0, c);
}

sg_status sg_alt_check_backward(sg_context *ctx, const char *name, size_t rows, size_t n,
                                const float *x, size_t ldx, const float *y, size_t ldy,
                                const float *dy, size_t lddy, const float *dx, size_t lddx,
                                sg_softmax_options *o, const sg_softmax_options *options,
                                float *c) {
    *o = options ? *options : sg_softmax_options_default();
    sg_status st = sg_check_options(ctx, name, rows, n, o, 0, c);
    if (st == SG_OK && x) st = sg_check_matrix(ctx, name, "x", x, rows, n, ldx);
    if (st == SG_OK && y) st = sg_check_matrix(ctx, name, "y", y, rows, n, ldy);
    if (st == SG_OK) st = sg_check_matrix(ctx, name, "dy", dy, rows, n, lddy);
    if (st == SG_OK) st = sg_check_matrix(ctx, name, "dx", dx, rows, n, lddx);
    if (st == SG_OK && rows > 1 &&
        ((dx == dy && lddx != lddy) || (y && dx == y && lddx != ldy) || (x && dx == x && lddx != ldx)))
        st = sg_fail(ctx, SG_ERR_SHAPE, "%s: in place (dx == an input) needs the same row stride",
                     name);
    return st;
}

sg_status sg_alt_forward_x(sg_context *ctx, const char *name, alt_row_fn *row, alt_runner *run,
                           size_t rows, size_t n, const float *x, size_t ldx, float *y, size_t ldy,
                           const sg_softmax_options *options) {
    if (!ctx) return SG_ERR_ARGUMENT;
    sg_ok(ctx);
    sg_softmax_options o;
    float c;
    sg_status st = sg_alt_check_forward(ctx, name, rows, n, x, ldx, y, ldy, &o, options, &c);
    if (st != SG_OK || rows == 0 || n == 0) return st;
    alt_job j = {0};
    j.row = row;
    j.x = x;
    j.ldx = ldx;
    j.out = y;
    j.ldo = ldy;
    (run ? run : sg_alt_run)(ctx, &j, rows, n, &o, c);
    return SG_OK;
}

sg_status sg_alt_backward_xy(sg_context *ctx, const char *name, alt_row_fn *row, size_t rows,
                             size_t n, const float *x, size_t ldx, const float *y, size_t ldy,
                             const float *dy, size_t lddy, float *dx, size_t lddx,
                             const sg_softmax_options *options) {
    if (!ctx) return SG_ERR_ARGUMENT;
    sg_ok(ctx);
    sg_softmax_options o;
    float c;
    if (rows && n && (!x || !y))
        return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: %s is NULL", name, x ? "y" : "x");
    sg_status st = sg_alt_check_backward(ctx, name, rows, n, x, ldx, y, ldy, dy, lddy, dx, lddx, &o,
                                         options, &c);
    if (st != SG_OK || rows == 0 || n == 0) return st;
    alt_job j = {0};
    j.row = row;
    j.x = x;
    j.ldx = ldx;
    j.y = y;
    j.ldy = ldy;
    j.dy = dy;
    j.lddy = lddy;
    j.out = dx;
    j.ldo = lddx;
    sg_alt_run(ctx, &j, rows, n, &o, c);
    return SG_OK;
}

void sg_alt_nan_row(const alt_job *j, size_t r) {
    const sg_row_view v = alt_view(j, r);
    float *y = j->out + r * j->ldo;
    for (size_t i = 0; i < j->n; i++) y[i] = sg_row_removed(&v, i) ? 0.0f : NAN;
}

void sg_alt_masked_bwd_row(const alt_job *j, size_t r, double (*g)(double z)) {
    const float *y = j->y + r * j->ldy, *dy = j->dy + r * j->lddy;
    float *dx = j->out + r * j->ldo;
    const sg_row_view v = alt_view(j, r);
    double dot = 0.0;
    for (size_t i = 0; i < j->n; i++)
        if (!sg_row_removed(&v, i)) dot += (double)y[i] * dy[i];
    for (size_t i = 0; i < j->n; i++) {
        if (sg_row_removed(&v, i)) dx[i] = 0.0f;
        else dx[i] = (float)((double)y[i] * g(alt_z(&v, i)) * (dy[i] - dot) / j->t);
    }
}

float sg_alt_zblock(const alt_job *j, const sg_row_view *v, size_t i0, size_t len, float gone,
                    float *z, int *special) {
    float mx = -INFINITY;
    for (size_t k = 0; k < len; k++) {
        const size_t i = i0 + k;
        if (sg_row_removed(v, i)) {
            z[k] = gone;
            continue;
        }
        const float x = v->x[i], a = v->add ? v->add[i] : 0.0f, zz = x * j->c + a;
        if (zz == INFINITY || (zz == -INFINITY && x - x == 0.0f && a - a == 0.0f)) *special = 1;
        z[k] = zz;
        mx = zz > mx ? zz : mx;
    }
    return mx;
}

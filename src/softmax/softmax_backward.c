/*
 * softmax_backward.c - vector-Jacobian products of softmax, log-softmax and
 * logsumexp (float32). Each row needs one reduction (a dot product or a
 * sum) and one write pass; long rows are cut into the same fixed chunks as
 * the forward ops, with partial reductions combined in chunk order.
 */
#include <math.h>

#include "softmax/softmax_internal.h"

typedef enum { BWD_SOFTMAX, BWD_LOG_SOFTMAX } bwd_kind;

typedef struct bwd_job {
    const sg_kernels *k;
    bwd_kind kind;
    size_t rows, n;
    const float *y, *dy;
    float *dx;
    size_t ldy, lddy, lddx;
    float c;
    const uint8_t *keep;
    size_t keep_ld;
    const float *add;
    size_t add_ld;
    /* Long-row state (one row at a time). */
    size_t row, chunk, chunks, groups;
    double *partial;
    float reduced;
    int phase;
} bwd_job;

static int is_removed(const bwd_job *j, size_t r, size_t i) {
    return (j->keep && !j->keep[r * j->keep_ld + i]) ||
           (j->add && j->add[r * j->add_ld + i] == -INFINITY);
}

/* The row's reduction over [i0, i0+len): softmax sum y*dy, log-softmax
 * sum dy; kept entries only. */
static double reduce(const bwd_job *j, size_t r, size_t i0, size_t len) {
    const float *y = j->y + r * j->ldy + i0, *dy = j->dy + r * j->lddy + i0;
    if (!j->keep && !j->add)
        return j->kind == BWD_SOFTMAX ? j->k->dot(len, y, dy) : j->k->sum(len, dy);
    double s = 0.0;
    for (size_t i = 0; i < len; i++)
        if (!is_removed(j, r, i0 + i)) s += j->kind == BWD_SOFTMAX ? (double)y[i] * dy[i] : dy[i];
    return s;
}

static void write(const bwd_job *j, size_t r, size_t i0, size_t len, float reduced) {
    const float *y = j->y + r * j->ldy + i0, *dy = j->dy + r * j->lddy + i0;
    float *dx = j->dx + r * j->lddx + i0;
    if (j->kind == BWD_SOFTMAX) j->k->softmax_bwd(len, y, dy, dx, reduced, j->c);
    else j->k->logsoftmax_bwd(len, y, dy, dx, reduced, j->c);
    if (j->keep || j->add)
        for (size_t i = 0; i < len; i++)
            if (is_removed(j, r, i0 + i)) dx[i] = 0.0f;
}

static void bwd_rows(const bwd_job *j, size_t r0, size_t r1) {
    if (!j->keep && !j->add && j->n <= j->k->softmax_short_max_n) {
        /* Short rows: one kernel call for the whole range, rows in registers. */
        j->k->softmax_bwd_short(r1 - r0, j->n, j->y + r0 * j->ldy, j->ldy, j->dy + r0 * j->lddy,
                                j->lddy, j->dx + r0 * j->lddx, j->lddx, j->c,
                                j->kind == BWD_LOG_SOFTMAX);
        return;
    }
    for (size_t r = r0; r < r1; r++) write(j, r, 0, j->n, (float)reduce(j, r, 0, j->n));
}

static void bwd_rows_task(void *arg, size_t t) {
    const bwd_job *j = arg;
    size_t per = sg_rows_per_task(j->n), r0 = t * per;
    bwd_rows(j, r0, r0 + per < j->rows ? r0 + per : j->rows);
}

static void bwd_chunk_task(void *arg, size_t t) {
    bwd_job *j = arg;
    size_t i0 = t * j->chunk, len = j->n - i0 < j->chunk ? j->n - i0 : j->chunk;
    if (j->phase == 0) j->partial[t] = reduce(j, j->row, i0, len);
    else write(j, j->row, i0, len, j->reduced);
}

/* Contiguous ranges of chunks, one per thread (see split_group_fn in
 * softmax_ops.c): chunks keep their core between the two phases. */
static void bwd_group_task(void *arg, size_t g) {
    bwd_job *j = arg;
    size_t c0 = g * j->chunks / j->groups, c1 = (g + 1) * j->chunks / j->groups;
    for (size_t t = c0; t < c1; t++) bwd_chunk_task(j, t);
}

sg_status sg_check_backward(sg_context *ctx, const char *name, size_t rows, size_t n,
                            const float *y, size_t ldy, const float *dy, size_t lddy,
                            const float *dx, size_t lddx, const sg_softmax_options *o, float *c) {
    sg_status st = sg_check_options(ctx, name, rows, n, o, 0, c);
    if (st == SG_OK) st = sg_check_matrix(ctx, name, "y", y, rows, n, ldy);
    if (st == SG_OK) st = sg_check_matrix(ctx, name, "dy", dy, rows, n, lddy);
    if (st == SG_OK) st = sg_check_matrix(ctx, name, "dx", dx, rows, n, lddx);
    if (st == SG_OK && rows > 1 && ((dx == dy && lddx != lddy) || (dx == y && lddx != ldy)))
        st = sg_fail(ctx, SG_ERR_SHAPE, "%s: in place (dx == dy or dx == y) needs the same row stride",
                     name);
    return st;
}

static sg_status backward(sg_context *ctx, const char *name, bwd_kind kind, size_t rows, size_t n,
                          const float *y, size_t ldy, const float *dy, size_t lddy, float *dx,
                          size_t lddx, const sg_softmax_options *options) {
    if (!ctx) return SG_ERR_ARGUMENT;
    sg_ok(ctx);
    sg_softmax_options o = options ? *options : sg_softmax_options_default();
    bwd_job j = {0};
    sg_status st = sg_check_backward(ctx, name, rows, n, y, ldy, dy, lddy, dx, lddx, &o, &j.c);
    if (st != SG_OK || rows == 0 || n == 0) return st;
    j.k = sg_kernels_get();
    j.kind = kind;
    j.rows = rows;
    j.n = n;
    j.y = y;
    j.dy = dy;
    j.dx = dx;
    j.ldy = ldy;
    j.lddy = lddy;
    j.lddx = lddx;
    j.keep = o.keep_mask;
    j.keep_ld = o.keep_mask_ld;
    j.add = o.add_mask;
    j.add_ld = o.add_mask_ld;
    if (n >= SG_SPLIT_N) {
        size_t chunks = sg_chunking(n, &j.chunk);
        j.chunks = chunks;
        j.groups = (size_t)ctx->threads < chunks ? (size_t)ctx->threads : chunks;
        j.partial = ctx->scratch;
        for (size_t r = 0; r < rows; r++) {
            j.row = r;
            j.phase = 0;
            sg_parallel_for(ctx, j.groups, bwd_group_task, &j);
            double s = 0.0;
            for (size_t t = 0; t < chunks; t++) s += j.partial[t];
            j.reduced = (float)s;
            j.phase = 1;
            sg_parallel_for(ctx, j.groups, bwd_group_task, &j);
        }
        return SG_OK;
    }
    if (ctx->threads == 1 || rows * n < SG_PARALLEL_MIN_ELEMS) {
        bwd_rows(&j, 0, rows);
        return SG_OK;
    }
    size_t per = sg_rows_per_task(n);
    sg_parallel_for(ctx, (rows + per - 1) / per, bwd_rows_task, &j);
    return SG_OK;
}

_Static_assert(SG_MAX_CHUNKS * sizeof(double) <= SG_SCRATCH_BYTES,
               "chunk partials must fit the context's scratch");

sg_status sg_softmax_backward_f32(sg_context *ctx, size_t rows, size_t n, const float *y,
                                  size_t ldy, const float *dy, size_t lddy, float *dx,
                                  size_t lddx, const sg_softmax_options *options) {
    return backward(ctx, "sg_softmax_backward_f32", BWD_SOFTMAX, rows, n, y, ldy, dy, lddy, dx,
                    lddx, options);
}

sg_status sg_log_softmax_backward_f32(sg_context *ctx, size_t rows, size_t n, const float *y,
                                      size_t ldy, const float *dy, size_t lddy, float *dx,
                                      size_t lddx, const sg_softmax_options *options) {
    return backward(ctx, "sg_log_softmax_backward_f32", BWD_LOG_SOFTMAX, rows, n, y, ldy, dy,
                    lddy, dx, lddx, options);
}

/*
 * logsumexp: dx = dlse * softmax(z) / T. With a saved finite lse and no
 * mask, one pass: exp((x - lse T) / T) * dlse / T (its error grows with
 * |lse|, which was rounded to float). Otherwise softmax is recomputed into
 * dx and scaled.
 */
sg_status sg_logsumexp_backward_f32(sg_context *ctx, size_t rows, size_t n, const float *x,
                                    size_t ldx, const float *lse, const float *dlse, float *dx,
                                    size_t lddx, const sg_softmax_options *options) {
    static const char name[] = "sg_logsumexp_backward_f32";
    if (!ctx) return SG_ERR_ARGUMENT;
    sg_ok(ctx);
    sg_softmax_options o = options ? *options : sg_softmax_options_default();
    float c;
    sg_status st = sg_check_options(ctx, name, rows, n, &o, 0, &c);
    if (st == SG_OK) st = sg_check_matrix(ctx, name, "x", x, rows, n, ldx);
    if (st == SG_OK) st = sg_check_matrix(ctx, name, "dlse", dlse, rows, 1, 1);
    if (st == SG_OK) st = sg_check_matrix(ctx, name, "dx", dx, rows, n, lddx);
    if (st == SG_OK && dx == x && lddx != ldx && rows > 1)
        st = sg_fail(ctx, SG_ERR_SHAPE, "%s: in place (dx == x) needs lddx == ldx", name);
    if (st != SG_OK || rows == 0 || n == 0) return st;
    const sg_kernels *k = sg_kernels_get();
    const int masked = o.keep_mask || o.add_mask;
    if (!lse || masked) {
        st = sg_softmax_f32(ctx, rows, n, x, ldx, dx, lddx, &o);
        if (st != SG_OK) return st;
        const float *add = o.add_mask;
        for (size_t r = 0; r < rows; r++) {
            float *d = dx + r * lddx;
            k->scale(n, d, d, dlse[r] * c);
            /* 0 * inf or 0 * NaN must not reach a removed entry. */
            for (size_t i = 0; masked && i < n; i++)
                if ((o.keep_mask && !o.keep_mask[r * o.keep_mask_ld + i]) ||
                    (add && add[r * o.add_mask_ld + i] == -INFINITY))
                    d[i] = 0.0f;
        }
        return SG_OK;
    }
    /* Saved lse: one pass per row; a row whose saved value is not finite
     * recomputes its own softmax (the decision is per row). */
    for (size_t r = 0; r < rows; r++) {
        float *d = dx + r * lddx;
        if (isfinite(lse[r])) {
            k->expscale_store(n, x + r * ldx, d, lse[r] * o.temperature, c, dlse[r] * c);
        } else {
            st = sg_softmax_f32(ctx, 1, n, x + r * ldx, ldx, d, lddx, &o);
            if (st != SG_OK) return st;
            k->scale(n, d, d, dlse[r] * c);
        }
    }
    return SG_OK;
}

/*
 * moe_dispatch.c - the dispatch plan (stable counting sort of the (token,
 * slot) pairs into expert-contiguous order), gather, combine and their
 * backward passes. Contracts in include/softgate/moe.h. The FFN layer is in
 * moe_layer.c.
 *
 * Every loop that sums is written per output row with a fixed order (a
 * token adds its slots in increasing k), and rows are split across threads
 * in fixed chunks: the results do not depend on the thread count.
 */
#include <string.h>

#include "moe/moe_internal.h"

sg_status sg_moe_check_route(sg_context *ctx, const char *op, size_t t, size_t e, size_t k,
                             const int32_t *ids, size_t ldid) {
    if (t == 0 || k == 0) return SG_OK;
    if (t > (size_t)INT32_MAX / k)
        return sg_fail(ctx, SG_ERR_SHAPE, "%s: T * K = %zu * %zu exceeds INT32_MAX", op, t, k);
    if (e == 0) return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: E (experts) is 0", op);
    if (e >= (size_t)INT32_MAX) return sg_fail(ctx, SG_ERR_SHAPE, "%s: E = %zu is too large", op, e);
    sg_status st = sg_check_matrix(ctx, op, "ids", ids, t, k, ldid);
    if (st != SG_OK) return st;
    for (size_t i = 0; i < t; i++)
        for (size_t j = 0; j < k; j++) {
            int32_t v = ids[i * ldid + j];
            if (v < -1 || v >= (int64_t)e)
                return sg_fail(ctx, SG_ERR_ARGUMENT,
                               "%s: ids[%zu][%zu] = %d is outside [0, E = %zu) and not -1 (dropped)",
                               op, i, j, (int)v, e);
        }
    return SG_OK;
}

/* Counting sort; the caller checked the route. offsets [E + 1]. */
void sg_moe_plan_unchecked(size_t t, size_t e, size_t k, const int32_t *ids, size_t ldid,
                           int32_t *offsets, int32_t *order, int32_t *slot_pos) {
    memset(offsets, 0, (e + 1) * sizeof *offsets);
    for (size_t i = 0; i < t; i++)
        for (size_t j = 0; j < k; j++) {
            int32_t v = ids[i * ldid + j];
            if (v >= 0) offsets[v + 1]++;
        }
    for (size_t x = 0; x < e; x++) offsets[x + 1] += offsets[x];
    /* Second pass in token-major order: the sort is stable. offsets[x] is
     * used as expert x's cursor and restored afterwards. */
    for (size_t i = 0; i < t; i++)
        for (size_t j = 0; j < k; j++) {
            int32_t v = ids[i * ldid + j], pair = (int32_t)(i * k + j);
            int32_t p = v >= 0 ? offsets[v]++ : -1;
            if (p >= 0) order[p] = pair;
            if (slot_pos) slot_pos[pair] = p;
        }
    for (size_t x = e; x > 0; x--) offsets[x] = offsets[x - 1];
    offsets[0] = 0;
    for (size_t p = (size_t)offsets[e]; p < t * k; p++) order[p] = -1;
}

sg_status sg_moe_dispatch_plan(sg_context *ctx, size_t t, size_t e, size_t k, const int32_t *ids,
                               size_t ldid, int32_t *offsets, int32_t *order, int32_t *slot_pos) {
    static const char op[] = "sg_moe_dispatch_plan";
    if (!ctx) return SG_ERR_ARGUMENT;
    sg_ok(ctx);
    if (e >= (size_t)INT32_MAX) return sg_fail(ctx, SG_ERR_SHAPE, "%s: E = %zu is too large", op, e);
    if (!offsets) return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: offsets is NULL", op);
    if (t * k > 0 && !order) return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: order is NULL", op);
    sg_status st = sg_moe_check_route(ctx, op, t, e, k, ids, ldid);
    if (st != SG_OK) return st;
    if (t == 0 || k == 0) {
        memset(offsets, 0, (e + 1) * sizeof *offsets);
        return SG_OK;
    }
    sg_moe_plan_unchecked(t, e, k, ids, ldid, offsets, order, slot_pos);
    return SG_OK;
}

/* ---- row tasks ------------------------------------------------------- */

/* Rows per task: about SG_MOE_TASK_FLOATS floats of output each, fixed by
 * the shape (never by the thread count). */
size_t sg_moe_rows_per_task(size_t d) {
    size_t r = SG_MOE_TASK_FLOATS / (d ? d : 1);
    return r ? r : 1;
}

typedef struct rows_job {
    size_t t, k, d, rows, per;
    const int32_t *index; /* order (gather) or slot_pos (the others) */
    const float *w;
    size_t ldw;
    const float *a; /* x (gather), ye (combine), dxe (gather backward) */
    size_t lda;
    const float *dy;
    size_t lddy;
    float *out; /* xe, y, dx */
    size_t ldo;
    float *dw;
    size_t lddw;
    float *dye;
    size_t lddye;
    int accumulate;
} rows_job;

static void gather_task(void *arg, size_t task) {
    const rows_job *j = arg;
    size_t p0 = task * j->per, p1 = p0 + j->per < j->rows ? p0 + j->per : j->rows;
    for (size_t p = p0; p < p1; p++)
        memcpy(j->out + p * j->ldo, j->a + (size_t)j->index[p] / j->k * j->lda, j->d * sizeof(float));
}

/* The fixed-order weighted sum of one token (combine), or plain sum
 * (gather backward, w NULL). */
static void token_sum(const rows_job *j, size_t i) {
    float *y = j->out + i * j->ldo;
    if (!j->accumulate) memset(y, 0, j->d * sizeof(float));
    for (size_t s = 0; s < j->k; s++) {
        int32_t p = j->index[i * j->k + s];
        if (p < 0) continue;
        const float *src = j->a + (size_t)p * j->lda;
        if (j->w) {
            float c = j->w[i * j->ldw + s];
            for (size_t x = 0; x < j->d; x++) {
                float prod = c * src[x]; /* rounded before the add: no FMA */
                y[x] += prod;
            }
        } else {
            for (size_t x = 0; x < j->d; x++) y[x] += src[x];
        }
    }
}

static void token_task(void *arg, size_t task) {
    const rows_job *j = arg;
    size_t i0 = task * j->per, i1 = i0 + j->per < j->t ? i0 + j->per : j->t;
    for (size_t i = i0; i < i1; i++) token_sum(j, i);
}

static void combine_backward_task(void *arg, size_t task) {
    const rows_job *j = arg;
    size_t i0 = task * j->per, i1 = i0 + j->per < j->t ? i0 + j->per : j->t;
    for (size_t i = i0; i < i1; i++) {
        const float *dy = j->dy + i * j->lddy;
        for (size_t s = 0; s < j->k; s++) {
            int32_t p = j->index[i * j->k + s];
            if (p < 0) {
                if (j->dw) j->dw[i * j->lddw + s] = 0.0f;
                continue;
            }
            if (j->dw) {
                const float *ye = j->a + (size_t)p * j->lda;
                double acc = 0.0;
                for (size_t x = 0; x < j->d; x++) acc += (double)dy[x] * ye[x];
                j->dw[i * j->lddw + s] = (float)acc;
            }
            if (j->dye) {
                float c = j->w[i * j->ldw + s];
                float *g = j->dye + (size_t)p * j->lddye;
                for (size_t x = 0; x < j->d; x++) g[x] = c * dy[x];
            }
        }
    }
}

static void run_rows(sg_context *ctx, size_t n, rows_job *j, sg_task_fn *fn) {
    j->per = sg_moe_rows_per_task(j->d);
    size_t tasks = (n + j->per - 1) / j->per;
    sg_parallel_for(ctx, tasks, fn, j);
}

/* ---- argument checks -------------------------------------------------- */

static sg_status check_positions(sg_context *ctx, const char *op, const char *name,
                                 const int32_t *v, size_t count, int64_t lo, size_t hi) {
    if (count && !v) return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: %s is NULL", op, name);
    for (size_t i = 0; i < count; i++)
        if (v[i] < lo || v[i] >= (int64_t)hi)
            return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: %s[%zu] = %d is outside [%lld, %zu)", op,
                           name, i, (int)v[i], (long long)lo, hi);
    return SG_OK;
}

/* The checks shared by combine and the two backward passes. */
static sg_status check_slots(sg_context *ctx, const char *op, size_t t, size_t k, size_t rows,
                             const int32_t *slot_pos) {
    if (t && k && t > (size_t)INT32_MAX / k)
        return sg_fail(ctx, SG_ERR_SHAPE, "%s: T * K = %zu * %zu exceeds INT32_MAX", op, t, k);
    if (rows > t * k)
        return sg_fail(ctx, SG_ERR_SHAPE, "%s: rows (%zu) exceeds T * K (%zu)", op, rows, t * k);
    return check_positions(ctx, op, "slot_pos", slot_pos, t * k, -1, rows);
}

sg_status sg_moe_gather_f32(sg_context *ctx, size_t t, size_t k, size_t d, size_t rows,
                            const int32_t *order, const float *x, size_t ldx, float *xe,
                            size_t ldxe) {
    static const char op[] = "sg_moe_gather_f32";
    if (!ctx) return SG_ERR_ARGUMENT;
    sg_ok(ctx);
    if (t && k && t > (size_t)INT32_MAX / k)
        return sg_fail(ctx, SG_ERR_SHAPE, "%s: T * K = %zu * %zu exceeds INT32_MAX", op, t, k);
    if (rows > t * k)
        return sg_fail(ctx, SG_ERR_SHAPE, "%s: rows (%zu) exceeds T * K (%zu)", op, rows, t * k);
    sg_status st = check_positions(ctx, op, "order", order, rows, 0, t * k);
    if (st == SG_OK) st = sg_check_matrix(ctx, op, "x", x, t, d, ldx);
    if (st == SG_OK) st = sg_check_matrix(ctx, op, "xe", xe, rows, d, ldxe);
    if (st != SG_OK || rows == 0 || d == 0) return st;
    rows_job j = {.t = t, .k = k, .d = d, .rows = rows, .index = order, .a = x, .lda = ldx,
                  .out = xe, .ldo = ldxe};
    run_rows(ctx, rows, &j, gather_task);
    return SG_OK;
}

sg_status sg_moe_combine_f32(sg_context *ctx, size_t t, size_t k, size_t d, size_t rows,
                             const int32_t *slot_pos, const float *weights, size_t ldw,
                             const float *ye, size_t ldye, float *y, size_t ldy, int accumulate) {
    static const char op[] = "sg_moe_combine_f32";
    if (!ctx) return SG_ERR_ARGUMENT;
    sg_ok(ctx);
    sg_status st = check_slots(ctx, op, t, k, rows, slot_pos);
    if (st == SG_OK) st = sg_check_matrix(ctx, op, "weights", weights, t, k, ldw);
    if (st == SG_OK) st = sg_check_matrix(ctx, op, "ye", ye, rows, d, ldye);
    if (st == SG_OK) st = sg_check_matrix(ctx, op, "y", y, t, d, ldy);
    if (st != SG_OK || t == 0 || d == 0) return st;
    if (k == 0 && accumulate) return SG_OK;
    rows_job j = {.t = t, .k = k, .d = d, .rows = rows, .index = slot_pos, .w = weights,
                  .ldw = ldw, .a = ye, .lda = ldye, .out = y, .ldo = ldy, .accumulate = accumulate};
    run_rows(ctx, t, &j, token_task);
    return SG_OK;
}

sg_status sg_moe_combine_backward_f32(sg_context *ctx, size_t t, size_t k, size_t d, size_t rows,
                                      const int32_t *slot_pos, const float *weights, size_t ldw,
                                      const float *ye, size_t ldye, const float *dy, size_t lddy,
                                      float *dweights, size_t lddw, float *dye, size_t lddye) {
    static const char op[] = "sg_moe_combine_backward_f32";
    if (!ctx) return SG_ERR_ARGUMENT;
    sg_ok(ctx);
    if (!dweights && !dye)
        return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: dweights and dye are both NULL", op);
    sg_status st = check_slots(ctx, op, t, k, rows, slot_pos);
    if (st == SG_OK) st = sg_check_matrix(ctx, op, "dy", dy, t, d, lddy);
    if (st == SG_OK && dweights) {
        st = sg_check_matrix(ctx, op, "ye", ye, rows, d, ldye);
        if (st == SG_OK) st = sg_check_matrix(ctx, op, "dweights", dweights, t, k, lddw);
    }
    if (st == SG_OK && dye) {
        st = sg_check_matrix(ctx, op, "weights", weights, t, k, ldw);
        if (st == SG_OK) st = sg_check_matrix(ctx, op, "dye", dye, rows, d, lddye);
    }
    if (st != SG_OK || t == 0 || k == 0) return st;
    rows_job j = {.t = t, .k = k, .d = d, .rows = rows, .index = slot_pos, .w = weights,
                  .ldw = ldw, .a = ye, .lda = ldye, .dy = dy, .lddy = lddy, .dw = dweights,
                  .lddw = lddw, .dye = dye, .lddye = lddye};
    run_rows(ctx, t, &j, combine_backward_task);
    return SG_OK;
}

sg_status sg_moe_gather_backward_f32(sg_context *ctx, size_t t, size_t k, size_t d, size_t rows,
                                     const int32_t *slot_pos, const float *dxe, size_t lddxe,
                                     float *dx, size_t lddx, int accumulate) {
    static const char op[] = "sg_moe_gather_backward_f32";
    if (!ctx) return SG_ERR_ARGUMENT;
    sg_ok(ctx);
    sg_status st = check_slots(ctx, op, t, k, rows, slot_pos);
    if (st == SG_OK) st = sg_check_matrix(ctx, op, "dxe", dxe, rows, d, lddxe);
    if (st == SG_OK) st = sg_check_matrix(ctx, op, "dx", dx, t, d, lddx);
    if (st != SG_OK || t == 0 || d == 0) return st;
    if (k == 0 && accumulate) return SG_OK;
    rows_job j = {.t = t, .k = k, .d = d, .rows = rows, .index = slot_pos, .a = dxe, .lda = lddxe,
                  .out = dx, .ldo = lddx, .accumulate = accumulate};
    run_rows(ctx, t, &j, token_task);
    return SG_OK;
}

/*
 * moe_layer.c - the MoE layer forward: dispatch, expert FFNs on
 * expert-contiguous rows through CBLAS (OpenBLAS) or the few-rows kernel,
 * combine, shared experts. Contracts in include/softgate/moe.h; dispatch and
 * combine themselves are in moe_dispatch.c.
 *
 * Work split: every FFN (routed expert with rows, or shared expert) is a
 * "unit"; the up projection + activation runs as tasks (unit, block of F
 * columns) and the down projection as tasks (unit, block of D columns).
 * Block widths depend on the unit's row count and widths only, so every
 * thread count issues the same BLAS and kernel calls with the same
 * arguments: results are bit-identical whatever the threads.
 */
#include <cblas.h>
#include <stdlib.h>
#include <string.h>

#include "moe/moe_internal.h"
#include "moe/moe_kernels.h"

/* ---- workspace -------------------------------------------------------- */

#define ALIGN 64
static size_t align_up(size_t b) { return (b + ALIGN - 1) / ALIGN * ALIGN; }

/* a * b * c * size, or SIZE_MAX on overflow. */
static size_t bytes3(size_t a, size_t b, size_t c, size_t size) {
    size_t r = size;
    size_t f[3] = {a, b, c};
    for (int i = 0; i < 3; i++) {
        if (f[i] && r > SIZE_MAX / 4 / f[i]) return SIZE_MAX;
        r *= f[i];
    }
    return align_up(r);
}

typedef struct unit {
    const sg_moe_ffn *w;
    size_t f, n;          /* hidden width, rows */
    const float *x;       /* input rows [n x D] */
    size_t ldx;
    float *h1, *h3;       /* [n x f], row stride f */
    float *out;           /* [n x D], row stride D */
    size_t fb, db;        /* column block widths (up, down) */
} unit;

/* The parts of the workspace, in order; lengths from the layer and T. */
typedef struct ws_layout {
    size_t offsets, order, slot_pos, units, starts, xe, h1, h3, ye, hs1, hs3, ys, total;
} ws_layout;

static size_t n_shared(const sg_moe_layer *l) { return l->shared_experts; }
static size_t f_shared(const sg_moe_layer *l) { return l->f_shared ? l->f_shared : l->f; }

static void layout(const sg_moe_layer *l, size_t t, ws_layout *w) {
    size_t e = l->experts, k = l->k, d = l->d, s = n_shared(l), fs = f_shared(l);
    int glu = l->activation == SG_MOE_SWIGLU;
    size_t part[12] = {
        bytes3(e + 1, 1, 1, sizeof(int32_t)),
        bytes3(t, k, 1, sizeof(int32_t)),
        bytes3(t, k, 1, sizeof(int32_t)),
        bytes3(e + s, 1, 1, sizeof(unit)),
        bytes3(e + s + 1, 2, 1, sizeof(size_t)),
        bytes3(t, k, d, sizeof(float)),
        bytes3(t, k, l->f, sizeof(float)),
        glu ? bytes3(t, k, l->f, sizeof(float)) : 0,
        bytes3(t, k, d, sizeof(float)),
        bytes3(s, t, fs, sizeof(float)),
        glu ? bytes3(s, t, fs, sizeof(float)) : 0,
        bytes3(s, t, d, sizeof(float)),
    };
    size_t *dst[12] = {&w->offsets, &w->order, &w->slot_pos, &w->units, &w->starts, &w->xe,
                       &w->h1, &w->h3, &w->ye, &w->hs1, &w->hs3, &w->ys};
    size_t at = 0;
    for (int i = 0; i < 12; i++) {
        *dst[i] = at;
        if (part[i] == SIZE_MAX || at > SIZE_MAX / 2 - part[i]) {
            w->total = SIZE_MAX;
            return;
        }
        at += part[i];
    }
    w->total = at;
}

/* The context's workspace, at least `bytes` long (64-byte aligned). */
static sg_status get_workspace(sg_context *ctx, const char *op, size_t bytes, char **out) {
    if (ctx->workspace_is_callers) {
        if (ctx->workspace_bytes < bytes + ALIGN)
            return sg_fail(ctx, SG_ERR_WORKSPACE,
                           "%s: the workspace has %zu bytes, this call needs %zu "
                           "(sg_moe_workspace_bytes)", op, ctx->workspace_bytes, bytes + ALIGN);
    } else if (ctx->workspace_bytes < bytes + ALIGN) {
        void *p = malloc(bytes + ALIGN);
        if (!p) return sg_fail(ctx, SG_ERR_NO_MEMORY, "%s: cannot allocate %zu bytes", op, bytes);
        free(ctx->workspace);
        ctx->workspace = p;
        ctx->workspace_bytes = bytes + ALIGN;
    }
    uintptr_t a = (uintptr_t)ctx->workspace;
    *out = (char *)((a + ALIGN - 1) / ALIGN * ALIGN);
    return SG_OK;
}

static int shapes_ok(const sg_moe_layer *l) {
    return l && l->d && l->f && l->experts && l->k && l->k <= l->experts &&
           (unsigned)l->activation <= (unsigned)SG_MOE_GELU_ERF;
}

size_t sg_moe_workspace_bytes(const sg_moe_layer *layer, size_t t) {
    if (!shapes_ok(layer)) return 0;
    ws_layout w;
    layout(layer, t, &w);
    return w.total == SIZE_MAX ? 0 : w.total + ALIGN;
}

/* ---- checks ----------------------------------------------------------- */

static sg_status check_ffn(sg_context *ctx, const char *op, const char *kind, size_t i,
                           const sg_moe_ffn *w, int glu) {
    const char *bad = !w->w1 ? "w1" : !w->w2 ? "w2" : glu && !w->w3 ? "w3" : NULL;
    if (bad) return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: %s[%zu].%s is NULL", op, kind, i, bad);
    return SG_OK;
}

static sg_status check_layer(sg_context *ctx, const char *op, const sg_moe_layer *l) {
    if (!l) return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: layer is NULL", op);
    if (!l->d || !l->f || !l->experts)
        return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: layer d, f and experts must be > 0 (got %zu, %zu, %zu)",
                       op, l->d, l->f, l->experts);
    if (!l->k || l->k > l->experts)
        return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: layer k = %zu must be in [1, experts = %zu]", op,
                       l->k, l->experts);
    if ((unsigned)l->activation > (unsigned)SG_MOE_GELU_ERF)
        return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: unknown activation %d", op, (int)l->activation);
    if (l->d > (size_t)INT32_MAX || f_shared(l) > (size_t)INT32_MAX || l->f > (size_t)INT32_MAX)
        return sg_fail(ctx, SG_ERR_SHAPE, "%s: d and f must fit BLAS's int", op);
    if (!l->expert) return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: layer expert (array) is NULL", op);
    if (l->shared_experts && !l->shared)
        return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: layer shared is NULL with shared_experts = %zu",
                       op, l->shared_experts);
    int glu = l->activation == SG_MOE_SWIGLU;
    sg_status st = SG_OK;
    for (size_t i = 0; st == SG_OK && i < l->experts; i++)
        st = check_ffn(ctx, op, "expert", i, &l->expert[i], glu);
    for (size_t i = 0; st == SG_OK && i < l->shared_experts; i++)
        st = check_ffn(ctx, op, "shared", i, &l->shared[i], glu);
    return st;
}

/* ---- the FFN tasks ---------------------------------------------------- */

typedef struct ffn_job {
    const sg_moe_kernels *kern;
    sg_moe_activation act;
    size_t d, units;
    unit *u;
    const size_t *start; /* [units + 1]: first task of each unit */
} ffn_job;

/* Column block widths. Few rows (the kernel): 64 columns, 256 KiB of W at
 * D = 1024, enough tasks for the threads even at T = 1. More rows (sgemm):
 * 1024 columns, so that sgemm packs the rows of X once per 1024 columns of
 * W (narrower blocks measurably lose to one sgemm over the whole width),
 * while F = 2816 still gives 3 tasks per expert for the threads to share. */
static size_t block_width(size_t n) { return n <= SG_MOE_SMALL_ROWS ? 64 : 1024; }

static size_t unit_of(const ffn_job *j, size_t task) {
    size_t lo = 0, hi = j->units; /* start[lo] <= task < start[hi] */
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (j->start[mid] <= task) lo = mid;
        else hi = mid;
    }
    return lo;
}

/* X [n x len] times W[c0 .. c0 + m)^T (rows of W, stride len) into out;
 * next: the m rows this thread reads next (a prefetch hint) or NULL. */
static void product(const sg_moe_kernels *kern, size_t n, size_t m, size_t len, const float *x,
                    size_t ldx, const float *w, float *out, size_t ldo, const float *next) {
    if (n <= SG_MOE_SMALL_ROWS)
        kern->rowdot(n, m, len, x, ldx, w, len, out, ldo, next, next ? m : 0);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)m, (int)len, 1.0f, x,
                    (int)ldx, w, (int)len, 0.0f, out, (int)ldo);
}

static void up_task(void *arg, size_t task) {
    const ffn_job *j = arg;
    size_t ui = unit_of(j, task);
    const unit *u = &j->u[ui];
    size_t c0 = (task - j->start[ui]) * u->fb, m = u->f - c0 < u->fb ? u->f - c0 : u->fb;
    int glu = j->act == SG_MOE_SWIGLU;
    product(j->kern, u->n, m, j->d, u->x, u->ldx, u->w->w1 + c0 * j->d, u->h1 + c0, u->f,
            glu ? u->w->w3 + c0 * j->d : NULL);
    if (glu)
        product(j->kern, u->n, m, j->d, u->x, u->ldx, u->w->w3 + c0 * j->d, u->h3 + c0, u->f, NULL);
    for (size_t r = 0; r < u->n; r++)
        j->kern->act(j->act, m, u->h1 + r * u->f + c0, u->h3 ? u->h3 + r * u->f + c0 : NULL);
}

static void down_task(void *arg, size_t task) {
    const ffn_job *j = arg;
    size_t ui = unit_of(j, task);
    const unit *u = &j->u[ui];
    size_t c0 = (task - j->start[ui]) * u->db, m = j->d - c0 < u->db ? j->d - c0 : u->db;
    product(j->kern, u->n, m, u->f, u->h1, u->f, u->w->w2 + c0 * u->f, u->out + c0, j->d, NULL);
}

/* Task starts of each unit for blocks of width fb (up) or db (down). */
static void task_starts(ffn_job *j, size_t *start, int down) {
    start[0] = 0;
    for (size_t i = 0; i < j->units; i++) {
        size_t width = down ? j->d : j->u[i].f, b = down ? j->u[i].db : j->u[i].fb;
        start[i + 1] = start[i] + (width + b - 1) / b;
    }
    j->start = start;
}

/* ---- final sum -------------------------------------------------------- */

typedef struct sum_job {
    size_t t, k, d, shared, per;
    const float *ys; /* [shared x T x D] */
    const int32_t *slot_pos;
    const float *w;
    size_t ldw;
    const float *ye;
    float *y;
    size_t ldy;
} sum_job;

/* y[t] = ys[0][t] + ... + ys[S-1][t], then + w[t,k] ye[pos] slot by slot:
 * the order of the contract. */
static void sum_task(void *arg, size_t task) {
    const sum_job *j = arg;
    size_t i0 = task * j->per, i1 = i0 + j->per < j->t ? i0 + j->per : j->t;
    for (size_t i = i0; i < i1; i++) {
        float *y = j->y + i * j->ldy;
        if (j->shared) memcpy(y, j->ys + i * j->d, j->d * sizeof(float));
        else memset(y, 0, j->d * sizeof(float));
        for (size_t s = 1; s < j->shared; s++) {
            const float *src = j->ys + (s * j->t + i) * j->d;
            for (size_t x = 0; x < j->d; x++) y[x] += src[x];
        }
        for (size_t s = 0; s < j->k; s++) {
            int32_t p = j->slot_pos[i * j->k + s];
            if (p < 0) continue;
            const float *src = j->ye + (size_t)p * j->d;
            float c = j->w[i * j->ldw + s];
            for (size_t x = 0; x < j->d; x++) {
                float prod = c * src[x]; /* rounded before the add: no FMA */
                y[x] += prod;
            }
        }
    }
}

/* ---- the layer -------------------------------------------------------- */

typedef struct gather_job {
    size_t k, d, per, rows;
    const int32_t *order;
    const float *x;
    size_t ldx;
    float *xe;
} gather_job;

static void gather_task(void *arg, size_t task) {
    const gather_job *j = arg;
    size_t p0 = task * j->per, p1 = p0 + j->per < j->rows ? p0 + j->per : j->rows;
    for (size_t p = p0; p < p1; p++)
        memcpy(j->xe + p * j->d, j->x + (size_t)j->order[p] / j->k * j->ldx, j->d * sizeof(float));
}

/* Sets up the units: routed experts with rows, then the shared experts. */
static size_t make_units(const sg_moe_layer *l, size_t t, char *ws, const ws_layout *w,
                         const float *x, size_t ldx) {
    const int32_t *off = (const int32_t *)(ws + w->offsets);
    unit *u = (unit *)(ws + w->units);
    float *xe = (float *)(ws + w->xe), *ye = (float *)(ws + w->ye);
    float *h1 = (float *)(ws + w->h1), *h3 = (float *)(ws + w->h3);
    int glu = l->activation == SG_MOE_SWIGLU;
    size_t count = 0, d = l->d, fs = f_shared(l);
    for (size_t e = 0; e < l->experts; e++) {
        size_t p0 = (size_t)off[e], n = (size_t)off[e + 1] - p0;
        if (!n) continue;
        u[count++] = (unit){&l->expert[e], l->f, n, xe + p0 * d, d, h1 + p0 * l->f,
                            glu ? h3 + p0 * l->f : NULL, ye + p0 * d, block_width(n), 0};
    }
    for (size_t s = 0; s < n_shared(l); s++) {
        float *hs1 = (float *)(ws + w->hs1) + s * t * fs, *hs3 = (float *)(ws + w->hs3) + s * t * fs;
        u[count++] = (unit){&l->shared[s], fs, t, x, ldx, hs1, glu ? hs3 : NULL,
                            (float *)(ws + w->ys) + s * t * d, block_width(t), 0};
    }
    /* Down blocks: the same widths, except that the kernel's blocks of W2
     * rows (f floats each) are widened to hold as many bytes as an up block
     * when f < d (fewer, longer streams: each call's first rows go without
     * the kernel's software prefetch). */
    for (size_t i = 0; i < count; i++) {
        size_t wide = u[i].n <= SG_MOE_SMALL_ROWS && u[i].f < d ? d / u[i].f : 1;
        u[i].db = u[i].fb * (wide < 4 ? wide : 4);
    }
    return count;
}

/* Runs the FFNs of the plan in ws and the final sum into y. */
static void run_layer(sg_context *ctx, const sg_moe_layer *l, size_t t, const float *x,
                      size_t ldx, const float *weights, size_t ldw, float *y, size_t ldy,
                      char *ws, const ws_layout *w) {
    const int32_t *off = (const int32_t *)(ws + w->offsets);
    size_t rows = (size_t)off[l->experts];
    gather_job g = {l->k, l->d, sg_moe_rows_per_task(l->d), rows,
                    (const int32_t *)(ws + w->order), x, ldx, (float *)(ws + w->xe)};
    sg_parallel_for(ctx, (rows + g.per - 1) / g.per, gather_task, &g);

    ffn_job j = {sg_moe_kernels_get(), l->activation, l->d, 0, (unit *)(ws + w->units), NULL};
    j.units = make_units(l, t, ws, w, x, ldx);
    size_t *starts = (size_t *)(ws + w->starts);
    int uses_blas = 0;
    for (size_t i = 0; i < j.units; i++) uses_blas |= j.u[i].n > SG_MOE_SMALL_ROWS;
    /* OpenBLAS runs single-threaded inside the tasks (the contract in
     * moe.h): its own threads would oversubscribe the cores and, called
     * from two threads at once, serialize on its server lock. */
    int blas_threads = uses_blas ? openblas_get_num_threads() : 1;
    if (blas_threads != 1) openblas_set_num_threads(1);
    task_starts(&j, starts, 0);
    sg_parallel_for(ctx, starts[j.units], up_task, &j);
    task_starts(&j, starts + j.units + 1, 1);
    sg_parallel_for(ctx, j.start[j.units], down_task, &j);
    if (blas_threads != 1) openblas_set_num_threads(blas_threads);

    sum_job s = {t, l->k, l->d, n_shared(l), sg_moe_rows_per_task(l->d),
                 (const float *)(ws + w->ys), (const int32_t *)(ws + w->slot_pos), weights, ldw,
                 (const float *)(ws + w->ye), y, ldy};
    sg_parallel_for(ctx, (t + s.per - 1) / s.per, sum_task, &s);
}

/* The checks both forward calls share (the route's ids are checked by the
 * routed call, the gate's by the gate). */
static sg_status check_forward(sg_context *ctx, const char *op, const sg_moe_layer *l, size_t t,
                               const float *x, size_t ldx, float *y, size_t ldy) {
    sg_status st = check_layer(ctx, op, l);
    if (st != SG_OK) return st;
    st = sg_check_matrix(ctx, op, "x", x, t, l->d, ldx);
    if (st == SG_OK) st = sg_check_matrix(ctx, op, "y", y, t, l->d, ldy);
    if (st == SG_OK && t > (size_t)INT32_MAX)
        return sg_fail(ctx, SG_ERR_SHAPE, "%s: T = %zu does not fit BLAS's int", op, t);
    return st;
}

/* Plan, FFNs and sum on a checked route. */
static sg_status forward_routed(sg_context *ctx, const char *op, const sg_moe_layer *l, size_t t,
                                const float *x, size_t ldx, const int32_t *ids, size_t ldid,
                                const float *weights, size_t ldw, float *y, size_t ldy) {
    sg_status st;
    ws_layout w;
    layout(l, t, &w);
    if (w.total == SIZE_MAX)
        return sg_fail(ctx, SG_ERR_SHAPE, "%s: the workspace size overflows for T = %zu", op, t);
    char *ws = NULL;
    st = get_workspace(ctx, op, w.total, &ws);
    if (st != SG_OK) return st;
    sg_moe_plan_unchecked(t, l->experts, l->k, ids, ldid, (int32_t *)(ws + w.offsets),
                          (int32_t *)(ws + w.order), (int32_t *)(ws + w.slot_pos));
    run_layer(ctx, l, t, x, ldx, weights, ldw, y, ldy, ws, &w);
    return SG_OK;
}

sg_status sg_moe_forward_routed_f32(sg_context *ctx, const sg_moe_layer *layer, size_t t,
                                    const float *x, size_t ldx, const int32_t *ids, size_t ldid,
                                    const float *weights, size_t ldw, float *y, size_t ldy) {
    static const char op[] = "sg_moe_forward_routed_f32";
    if (!ctx) return SG_ERR_ARGUMENT;
    sg_ok(ctx);
    sg_status st = check_forward(ctx, op, layer, t, x, ldx, y, ldy);
    if (st == SG_OK) st = sg_check_matrix(ctx, op, "weights", weights, t, layer->k, ldw);
    if (st == SG_OK) st = sg_moe_check_route(ctx, op, t, layer->experts, layer->k, ids, ldid);
    if (st != SG_OK || t == 0) return st;
    return forward_routed(ctx, op, layer, t, x, ldx, ids, ldid, weights, ldw, y, ldy);
}

/* ---- the router ------------------------------------------------------- */

typedef struct router_job {
    const sg_moe_kernels *kern;
    size_t t, e, d, per;
    const float *x, *wr;
    size_t ldx;
    float *logits;
    size_t ldl;
} router_job;

/* Tokens per router task: the blocks depend on T alone. */
#define ROUTER_ROWS 64

/* Rows [i0, i0 + n) of logits = x W_r^T. */
static void router_task(void *arg, size_t task) {
    const router_job *j = arg;
    size_t i0 = task * j->per, n = j->t - i0 < j->per ? j->t - i0 : j->per;
    product(j->kern, n, j->e, j->d, j->x + i0 * j->ldx, j->ldx, j->wr, j->logits + i0 * j->ldl,
            j->ldl, NULL);
}

sg_status sg_moe_forward_f32(sg_context *ctx, const sg_moe_layer *layer, const sg_gate_config *gate,
                             size_t t, const float *x, size_t ldx, float *y, size_t ldy,
                             float *logits, size_t ldl, int32_t *ids, size_t ldid, float *weights,
                             size_t ldw) {
    static const char op[] = "sg_moe_forward_f32";
    if (!ctx) return SG_ERR_ARGUMENT;
    sg_ok(ctx);
    sg_status st = check_forward(ctx, op, layer, t, x, ldx, y, ldy);
    if (st != SG_OK) return st;
    if (!gate) return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: gate is NULL", op);
    if (gate->k != layer->k)
        return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: gate->k = %zu differs from layer->k = %zu", op,
                       gate->k, layer->k);
    if (!layer->router) return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: layer router is NULL", op);
    st = sg_check_matrix(ctx, op, "logits", logits, t, layer->experts, ldl);
    if (st == SG_OK) st = sg_check_matrix(ctx, op, "ids", ids, t, layer->k, ldid);
    if (st == SG_OK) st = sg_check_matrix(ctx, op, "weights", weights, t, layer->k, ldw);
    if (st != SG_OK || t == 0) return st;
    if (layer->experts > (size_t)INT32_MAX - 1)
        return sg_fail(ctx, SG_ERR_SHAPE, "%s: experts = %zu is too large", op, layer->experts);
    router_job r = {sg_moe_kernels_get(), t, layer->experts, layer->d, ROUTER_ROWS, x,
                    layer->router, ldx, logits, ldl};
    int blas_threads = t > SG_MOE_SMALL_ROWS ? openblas_get_num_threads() : 1;
    if (blas_threads != 1) openblas_set_num_threads(1);
    sg_parallel_for(ctx, (t + r.per - 1) / r.per, router_task, &r);
    if (blas_threads != 1) openblas_set_num_threads(blas_threads);
    /* The gate may use the context's workspace: nothing of the layer lives
     * there yet. */
    st = sg_gate_f32(ctx, gate, t, layer->experts, logits, ldl, ids, ldid, weights, ldw, NULL, 0);
    if (st != SG_OK) return st;
    return forward_routed(ctx, op, layer, t, x, ldx, ids, ldid, weights, ldw, y, ldy);
}

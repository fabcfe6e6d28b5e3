/*
 * losses_common.c - what the losses family shares: the reference top-k
 * threshold scan and the choice of its kernel, ordering a heap buffer, and
 * the row driver of the loss ops (argument checks, ignored rows,
 * reductions summed in a fixed order, threads). The ops themselves live in
 * their own files.
 */
#include "losses/losses_internal.h"

/* ---- the top-k scan: reference and dispatch ----------------------------- */

float sg_topk_scan_f32__ref(size_t n, const float *x, int32_t base, sg_topk_buf *b) {
    float m = -INFINITY;
    for (size_t i = 0; i < n; i++) {
        if (x[i] > m) m = x[i];
        if (b->count < b->k ? !isnan(x[i]) : x[i] > b->thr) sg_topk_insert(b, x[i], base + (int32_t)i);
    }
    return m;
}

static const sg_loss_kernel_entry entries[] = {
    {SG_ISA_REF, "sg_topk_scan_f32__ref", sg_topk_scan_f32__ref},
#if SG_ARCH_X86_64
    {SG_ISA_AVX2, "sg_topk_scan_f32__avx2", sg_topk_scan_f32__avx2},
    {SG_ISA_AVX512, "sg_topk_scan_f32__avx512", sg_topk_scan_f32__avx512},
#endif
};

const sg_loss_kernel_entry *sg_loss_kernel_entries(size_t *count) {
    *count = sizeof entries / sizeof entries[0];
    return entries;
}

/* The strongest entry the active level allows (the list is weakest first). */
sg_topk_scan_fn *sg_topk_scan_get(void) {
    const sg_isa isa = sg_active_isa();
    sg_topk_scan_fn *fn = sg_topk_scan_f32__ref;
    for (size_t i = 0; i < sizeof entries / sizeof entries[0]; i++)
        if (entries[i].isa <= isa) fn = entries[i].fn;
    return fn;
}

/* For `softgate info`: this family's one slot and the kernel chosen for it. */
size_t sg_loss_kernel_list(size_t i, const char **slot, const char **impl) {
    if (i == 0) {
        sg_topk_scan_fn *fn = sg_topk_scan_get();
        *slot = "losses.topk_scan";
        *impl = "?";
        for (size_t e = 0; e < sizeof entries / sizeof entries[0]; e++)
            if (entries[e].fn == fn) *impl = entries[e].name;
    }
    return 1;
}

/* ---- ordering a heap buffer ------------------------------------------------ */

/* Best first, by insertion (k <= 256 entries, sorted once per row: cheaper
 * than qsort's indirect compares at these sizes). Indices are unique, so
 * the order is total. */
void sg_topk_sort(sg_topk_buf *b) {
    for (size_t q = 1; q < b->count; q++) {
        double v = b->val[q];
        int32_t i = b->idx[q];
        size_t p = q;
        while (p > 0 && sg_topk_worse(b->val[p - 1], b->idx[p - 1], v, i)) {
            b->val[p] = b->val[p - 1], b->idx[p] = b->idx[p - 1];
            p--;
        }
        b->val[p] = v, b->idx[p] = i;
    }
}

/* Heap sort in place: repeatedly move the worst (root) to the end. */
void sg_topk_finish(sg_topk_buf *b) {
    if (b->k <= SG_TOPK_SORTED_MAX) {
        if (b->count < b->k) sg_topk_sort(b); /* never filled: still unsorted */
        return;
    }
    size_t n = b->count;
    while (b->count > 1) {
        size_t last = b->count - 1;
        double tv = b->val[0];
        int32_t ti = b->idx[0];
        b->val[0] = b->val[last], b->idx[0] = b->idx[last];
        b->val[last] = tv, b->idx[last] = ti;
        b->count--;
        sg_topk_heap_down(b, 0);
    }
    b->count = n;
}

/* ---- the loss ops' driver ------------------------------------------------- */

/* Row blocks: at most this many partial sums (the context's scratch). */
#define MAX_TASKS (SG_SCRATCH_BYTES / sizeof(double))

sg_status sg_loss_prepare(sg_context *ctx, const char *name, sg_loss_rows *j, size_t rows,
                          size_t n, const float *x, size_t ldx, const int32_t *target,
                          float *loss, float *dx, size_t lddx, sg_loss_reduction reduction,
                          int32_t ignore_index, const sg_softmax_options *o) {
    float c = 1.0f;
    sg_status st = sg_check_options(ctx, name, rows, n, o, 0, &c);
    if (st == SG_OK && (unsigned)reduction > (unsigned)SG_REDUCTION_MEAN)
        st = sg_fail(ctx, SG_ERR_ARGUMENT, "%s: unknown reduction %d", name, (int)reduction);
    if (st == SG_OK) st = sg_check_matrix(ctx, name, "x", x, rows, n, ldx);
    if (st == SG_OK) st = sg_check_matrix(ctx, name, "target", target, rows, 1, 1);
    if (st == SG_OK) st = sg_check_matrix(ctx, name, "loss", loss, rows, 1, 1);
    if (st == SG_OK && dx) st = sg_check_matrix(ctx, name, "dx", dx, rows, n, lddx);
    if (st == SG_OK && dx && (const float *)dx == x && lddx != ldx && rows > 1)
        st = sg_fail(ctx, SG_ERR_SHAPE, "%s: in place (dx == x) needs lddx == ldx (%zu != %zu)",
                     name, lddx, ldx);
    for (size_t r = 0; st == SG_OK && r < rows; r++) {
        int32_t t = target[r];
        if (t == ignore_index) continue;
        if (t < 0 || (size_t)t >= n)
            st = sg_fail(ctx, SG_ERR_ARGUMENT,
                         "%s: target[%zu] = %ld is outside [0, %zu) and is not ignore_index (%ld)",
                         name, r, (long)t, n, (long)ignore_index);
        else if ((o->keep_mask && !o->keep_mask[r * o->keep_mask_ld + (size_t)t]) ||
                 (o->add_mask &&
                  ((const float *)o->add_mask)[r * o->add_mask_ld + (size_t)t] == -INFINITY))
            st = sg_fail(ctx, SG_ERR_ARGUMENT, "%s: target[%zu] = %ld is removed by the mask", name,
                         r, (long)t);
    }
    if (st != SG_OK) return st;
    j->k = sg_kernels_get();
    j->rows = rows, j->n = n;
    j->x = x, j->ldx = ldx;
    j->target = target, j->ignore_index = ignore_index;
    j->reduction = reduction;
    j->loss = loss, j->dx = dx, j->lddx = lddx;
    j->t = o->temperature, j->c = c;
    j->keep = o->keep_mask, j->keep_ld = o->keep_mask_ld;
    j->add = o->add_mask, j->add_ld = o->add_mask_ld;
    return SG_OK;
}

static void run_block(const sg_loss_rows *j, size_t task) {
    size_t r0 = task * j->rows_per_task, r1 = r0 + j->rows_per_task;
    if (r1 > j->rows) r1 = j->rows;
    double s = 0.0;
    for (size_t r = r0; r < r1; r++) {
        float *dx = j->dx ? j->dx + r * j->lddx : NULL;
        double l = 0.0;
        if (j->target[r] == j->ignore_index) {
            for (size_t i = 0; dx && i < j->n; i++) dx[i] = 0.0f;
        } else {
            l = j->fn(j, r, dx, j->g);
        }
        if (j->reduction == SG_REDUCTION_NONE) j->loss[r] = (float)l;
        else s += l;
    }
    if (j->reduction != SG_REDUCTION_NONE) j->partial[task] = s;
}

static void block_task(void *arg, size_t task) { run_block(arg, task); }

/*
 * Rows go in fixed blocks (the size depends on rows and n only) whose
 * partial sums land in their own slots and are added in block order, so
 * the reduced loss has the same bits for every thread count.
 */
void sg_loss_run(sg_context *ctx, sg_loss_rows *j) {
    size_t count = 0;
    for (size_t r = 0; r < j->rows; r++) count += j->target[r] != j->ignore_index;
    j->g = j->reduction == SG_REDUCTION_MEAN && count ? 1.0 / (double)count : 1.0;
    size_t per = sg_rows_per_task(j->n ? j->n : 1);
    if ((j->rows + per - 1) / per > MAX_TASKS) per = (j->rows + MAX_TASKS - 1) / MAX_TASKS;
    j->rows_per_task = per;
    j->partial = ctx->scratch;
    size_t tasks = (j->rows + per - 1) / per;
    if (ctx->threads == 1 || j->rows * j->n < SG_PARALLEL_MIN_ELEMS)
        for (size_t t = 0; t < tasks; t++) run_block(j, t);
    else sg_parallel_for(ctx, tasks, block_task, j);
    if (j->reduction == SG_REDUCTION_NONE) return;
    double s = 0.0;
    for (size_t t = 0; t < tasks; t++) s += j->partial[t];
    if (j->reduction == SG_REDUCTION_MEAN) s = count ? s / (double)count : NAN;
    j->loss[0] = (float)s;
}

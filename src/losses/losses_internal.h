/*
 * losses_internal.h - what the losses family (cross-entropy, spherical
 * Z-loss, confidence scores, fused softmax + top-k) shares between its
 * files: the running top-k buffer, the family's own kernel slot (the
 * threshold scan of top-k; everything else reuses the softmax core's
 * kernel table), and the row driver with reductions. Internal.
 */
#ifndef SG_LOSSES_INTERNAL_H
#define SG_LOSSES_INTERNAL_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/context.h"
#include "softmax/softmax_internal.h"

/* ---- the running top-k buffer ------------------------------------------ */

/*
 * The k best (value, index) pairs seen so far, best first: larger value
 * first, equal values lower index first. Entries arrive in increasing index
 * order, so an entry equal to the current k-th value never enters (it would
 * rank after it): once full, only values strictly above thr are inserted.
 * Up to SG_TOPK_SORTED_MAX the buffer fills unsorted, is sorted once full,
 * and then stays a sorted array (up to k = 16 entries shifted from the
 * end; above, binary search and a memmove, with few unpredictable branches,
 * which is what costs here); above SG_TOPK_SORTED_MAX,
 * a min-heap on (value, -index) sorted at the end.
 * Values are doubles so that the exact path's keys (z - max z in double)
 * use the same buffer; the fast path stores floats, exactly.
 */
#define SG_TOPK_SORTED_MAX 256

typedef struct sg_topk_buf {
    size_t k, count;
    double thr;  /* the k-th value once count == k; -inf before */
    double vmax; /* the largest value inserted (the running max) */
    double *val;
    int32_t *idx;
} sg_topk_buf;

/* "a ranks below b": smaller value, or equal value and larger index. */
static inline int sg_topk_worse(double va, int32_t ia, double vb, int32_t ib) {
    return va < vb || (va == vb && ia > ib);
}

static inline void sg_topk_heap_down(sg_topk_buf *b, size_t i) {
    const size_t n = b->count;
    for (;;) {
        size_t l = 2 * i + 1, w = i;
        if (l < n && sg_topk_worse(b->val[l], b->idx[l], b->val[w], b->idx[w])) w = l;
        if (l + 1 < n && sg_topk_worse(b->val[l + 1], b->idx[l + 1], b->val[w], b->idx[w])) w = l + 1;
        if (w == i) return;
        double tv = b->val[i];
        int32_t ti = b->idx[i];
        b->val[i] = b->val[w], b->idx[i] = b->idx[w];
        b->val[w] = tv, b->idx[w] = ti;
        i = w;
    }
}

/* Orders buf[0..count) best first (losses_common.c). */
void sg_topk_sort(sg_topk_buf *b);

/* Inserts (v, i); the caller ensures count < k or v > thr (i is larger
 * than every index already inside). */
static inline void sg_topk_insert(sg_topk_buf *b, double v, int32_t i) {
    if (!(v <= b->vmax)) b->vmax = v; /* NaN too: the row is redone */
    if (b->k <= SG_TOPK_SORTED_MAX && b->count < b->k) {
        /* filling: append; sorted once, when it becomes full */
        b->val[b->count] = v, b->idx[b->count] = i;
        if (++b->count == b->k) {
            sg_topk_sort(b);
            b->thr = b->val[b->k - 1];
        }
        return;
    }
    if (b->k <= 16) { /* short: shift from the end */
        size_t p = b->k - 1;
        while (p > 0 && b->val[p - 1] < v) {
            b->val[p] = b->val[p - 1], b->idx[p] = b->idx[p - 1];
            p--;
        }
        b->val[p] = v, b->idx[p] = i;
        b->thr = b->val[b->k - 1];
        return;
    }
    if (b->k <= SG_TOPK_SORTED_MAX) {
        /* the first slot holding a smaller value: equal values stay ahead
         * (their indices are lower); v > thr puts it before slot k - 1 */
        size_t lo = 0, hi = b->k - 1;
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            if (b->val[mid] < v) hi = mid;
            else lo = mid + 1;
        }
        memmove(b->val + lo + 1, b->val + lo, (b->k - 1 - lo) * sizeof *b->val);
        memmove(b->idx + lo + 1, b->idx + lo, (b->k - 1 - lo) * sizeof *b->idx);
        b->val[lo] = v, b->idx[lo] = i;
        b->thr = b->val[b->k - 1];
        return;
    }
    if (b->count < b->k) { /* heap push */
        size_t c = b->count++;
        while (c > 0) {
            size_t par = (c - 1) / 2;
            if (!sg_topk_worse(v, i, b->val[par], b->idx[par])) break;
            b->val[c] = b->val[par], b->idx[c] = b->idx[par];
            c = par;
        }
        b->val[c] = v, b->idx[c] = i;
    } else { /* replace the worst (the root) */
        b->val[0] = v, b->idx[0] = i;
        sg_topk_heap_down(b, 0);
    }
    if (b->count == b->k) b->thr = b->val[0];
}

static inline void sg_topk_reset(sg_topk_buf *b, size_t k, double *val, int32_t *idx) {
    b->k = k, b->count = 0, b->thr = -INFINITY, b->vmax = -INFINITY;
    b->val = val, b->idx = idx;
}

/* Orders the buffer best first (sorted array: sorts a buffer that never
 * filled; heap: heap sort). */
void sg_topk_finish(sg_topk_buf *b);

/* ---- the family's kernel slot -------------------------------------------- */

/*
 * topk_scan: adds the block x[0..n) (indices base + i) to the buffer b,
 * which may be partly filled, so that b then holds the top k of its old
 * contents and the block (same ties rule); returns the block's max (-inf
 * for n == 0 or an all -inf block; NaN entries are never inserted and may
 * be ignored by the max: the ops detect NaN from the sum and redo the row
 * exactly). Every kernel leaves the same set in b (the order of a heap
 * buffer may differ until sg_topk_finish).
 *
 * The SIMD kernels first take the maxima of 64 disjoint subsets of the
 * block (lane-wise maxima of four vector accumulators); the k-th largest
 * of them, L, is a lower bound of the block's k-th largest (k subsets each
 * hold an element >= L), so only elements >= max(L, the buffer's k-th
 * value) are candidates: one vector compare per element, and about k + a
 * few insertions per block instead of k log(n / k) for a plain running
 * threshold.
 */
typedef float sg_topk_scan_fn(size_t n, const float *x, int32_t base, sg_topk_buf *b);

sg_topk_scan_fn sg_topk_scan_f32__ref;
#if SG_ARCH_X86_64
sg_topk_scan_fn sg_topk_scan_f32__avx2;
sg_topk_scan_fn sg_topk_scan_f32__avx512;
#endif

/* The scan chosen for the active ISA level (sg_active_isa, so SOFTGATE_ISA
 * applies). */
sg_topk_scan_fn *sg_topk_scan_get(void);

/* Every topk_scan kernel in this build, for the tests. */
typedef struct sg_loss_kernel_entry {
    sg_isa isa;
    const char *name;
    sg_topk_scan_fn *fn;
} sg_loss_kernel_entry;
const sg_loss_kernel_entry *sg_loss_kernel_entries(size_t *count);

/* ---- rows with a reduction ------------------------------------------------ */

/*
 * A loss op's row function: returns l_r (double) and, when dx is non-NULL,
 * writes g * dl_r/dx to the row dx. Called only for non-ignored rows.
 */
typedef struct sg_loss_rows sg_loss_rows;
typedef double sg_loss_row_fn(const sg_loss_rows *j, size_t r, float *dx, double g);

struct sg_loss_rows {
    sg_loss_row_fn *fn;
    const sg_kernels *k;
    size_t rows, n;
    const float *x;
    size_t ldx;
    const int32_t *target;
    int32_t ignore_index;
    sg_loss_reduction reduction;
    float *loss;
    float *dx;
    size_t lddx;
    double t; /* temperature */
    float c;  /* 1 / T */
    const uint8_t *keep;
    size_t keep_ld;
    const float *add;
    size_t add_ld;
    const void *params; /* the op's own options */
    /* filled by sg_loss_run */
    double g;
    size_t rows_per_task;
    double *partial;
};

/* The view of row r through the masks. */
static inline sg_row_view sg_loss_view(const sg_loss_rows *j, size_t r) {
    sg_row_view v = {j->x + r * j->ldx, j->keep ? j->keep + r * j->keep_ld : NULL,
                     j->add ? j->add + r * j->add_ld : NULL, j->t};
    return v;
}

/*
 * Checks the arguments shared by the loss ops (x, target, loss, dx,
 * in place, reduction, targets in range and kept) and fills j from them;
 * SG_OK with *nothing = 1 when there is nothing to compute.
 */
sg_status sg_loss_prepare(sg_context *ctx, const char *name, sg_loss_rows *j, size_t rows,
                          size_t n, const float *x, size_t ldx, const int32_t *target,
                          float *loss, float *dx, size_t lddx, sg_loss_reduction reduction,
                          int32_t ignore_index, const sg_softmax_options *o);

/* Runs j over its rows (threads, fixed row blocks) and writes the loss. */
void sg_loss_run(sg_context *ctx, sg_loss_rows *j);

#endif

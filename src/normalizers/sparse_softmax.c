/*
 * sparse_softmax.c - sparse-softmax, the top-k softmax ("Sparse-softmax: A
 * Simpler and Faster Alternative Softmax Transformation", Sun et al. 2021),
 * float32: softmax over the k largest entries of a row, 0 elsewhere; its
 * backward. Rows across threads; masks and temperature as the softmax core.
 *
 * Per row: d_i = z_i - max z is rounded once to float into the output row
 * (the scratch; -inf for removed entries), the k-th largest d is found by a
 * radix select on the ordered bits of d (4 passes of 8 bits, 256 counters,
 * no allocation, O(N)), the selection is every d above it plus the first
 * of those equal to it in index order (ties: lower index wins), and
 * y = exp(d) / sum over the selection (double exp and sum).
 */
#include <string.h>

#include "normalizers/sparse_internal.h"
#include "normalizers/sparse_kernels.h"

/* Floats to unsigned keys in the same order (-0 taken as +0). */
static inline uint32_t key_of(float f) {
    uint32_t b;
    if (f == 0.0f) f = 0.0f;
    memcpy(&b, &f, sizeof b);
    return b & 0x80000000u ? ~b : b | 0x80000000u;
}

/*
 * The k-th largest key K of d[0..n) (1 <= k <= n), and in *take the number
 * of entries equal to K that belong to the k largest (the rest of them are
 * greater than K). MSB-first radix select, one byte per pass.
 */
static uint32_t kth_key(const float *d, size_t n, size_t k, size_t *take) {
    uint32_t prefix = 0;
    size_t need = k;
    for (int shift = 24; shift >= 0; shift -= 8) {
        size_t hist[256] = {0};
        const uint32_t hi_mask = shift == 24 ? 0 : ~0u << (shift + 8);
        for (size_t i = 0; i < n; i++) {
            const uint32_t key = key_of(d[i]);
            if ((key & hi_mask) == (prefix & hi_mask)) hist[(key >> shift) & 255u]++;
        }
        int b = 255;
        while (hist[b] < need) need -= hist[b--];
        prefix |= (uint32_t)b << shift;
    }
    *take = need;
    return prefix;
}

/* Special rows: NaN on kept entries if any kept z is NaN; else with c
 * entries z = +inf, the first min(c, k) of them (by index) share the mass;
 * else (nothing finite) all 0. Removed entries 0. */
static void special_row(const sg_sparse_job *j, const sg_row_view *v, const sg_row_scan *s,
                        float *y) {
    const size_t top = s->posinf < j->k ? s->posinf : j->k;
    size_t seen = 0;
    for (size_t i = 0; i < j->n; i++) {
        if (sg_row_removed(v, i)) y[i] = 0.0f;
        else if (s->nan) y[i] = NAN;
        else if (s->posinf && sg_row_z_class(v, i) == 1 && seen++ < top) y[i] = 1.0f / (float)top;
        else y[i] = 0.0f;
    }
}

/* ---- k <= 4096: a heap of the k best, fed by the filter ---------------- */

/* The k of the heap path at most (64 KiB of stack), and the filter's block. */
#define TOPK_HEAP 4096
#define TOPK_BLOCK 32

/* A min-heap of the k best (value, index) seen so far, its root the worst:
 * the smallest value, and of equal values the largest index. */
typedef struct topk_heap {
    float *v;
    uint32_t *i;
    size_t m, k;
} topk_heap;

static inline int worse(const topk_heap *h, size_t a, size_t b) {
    return h->v[a] < h->v[b] || (h->v[a] == h->v[b] && h->i[a] > h->i[b]);
}

static inline void swap_at(topk_heap *h, size_t a, size_t b) {
    float tv = h->v[a];
    uint32_t ti = h->i[a];
    h->v[a] = h->v[b], h->i[a] = h->i[b];
    h->v[b] = tv, h->i[b] = ti;
}

static void sift_down(topk_heap *h, size_t p) {
    for (;;) {
        size_t w = p, l = 2 * p + 1, r = l + 1;
        if (l < h->m && worse(h, l, w)) w = l;
        if (r < h->m && worse(h, r, w)) w = r;
        if (w == p) return;
        swap_at(h, p, w);
        p = w;
    }
}

/* Offers (v, i), i larger than every index held: a value equal to the
 * root's is then worse (ties keep the lower index). */
static inline void heap_offer(topk_heap *h, float v, uint32_t i) {
    if (h->m < h->k) {
        size_t p = h->m++;
        h->v[p] = v, h->i[p] = i;
        while (p > 0 && worse(h, p, (p - 1) / 2)) swap_at(h, p, (p - 1) / 2), p = (p - 1) / 2;
        return;
    }
    if (!(v > h->v[0])) return;
    h->v[0] = v, h->i[0] = i;
    sift_down(h, 0);
}

/*
 * k <= 4096 (and k < N). Unmasked rows, whose order of x is the order of
 * z: the first k entries seed the heap, then the select kernel passes over
 * the rest in blocks, keeping only x > the current k-th value (rare after
 * a few blocks); outputs from d = z - max z in double (sg_z_diff) from the
 * kept x. Masked rows: every entry is offered with d rounded once to float
 * (-inf for removed entries, which then get 0 if they are ever selected).
 * Nothing is written before the end, so in place works.
 */
static void forward_heap(const sg_sparse_job *j, const sg_row_view *v, const sg_row_scan *s,
                         float *y) {
    const size_t n = j->n;
    const int masked = v->keep || v->add;
    float hv[TOPK_HEAP], cval[TOPK_BLOCK + 16];
    uint32_t hi[TOPK_HEAP], cand[TOPK_BLOCK + 16];
    topk_heap h = {hv, hi, 0, j->k};
    if (!masked) {
        const sg_sparse_kernels *kr = sg_sparse_kernels_get();
        size_t i = 0;
        for (; i < n && h.m < h.k; i++) heap_offer(&h, v->x[i], (uint32_t)i);
        for (; i < n; i += TOPK_BLOCK) {
            const size_t len = n - i < TOPK_BLOCK ? n - i : TOPK_BLOCK;
            const size_t c = kr->select(len, v->x + i, hv[0], cand, cval, TOPK_BLOCK);
            for (size_t q = 0; q < c; q++) heap_offer(&h, cval[q], (uint32_t)(i + cand[q]));
        }
    } else {
        for (size_t i = 0; i < n; i++) heap_offer(&h, sg_sparse_d(v, s, i), (uint32_t)i);
    }
    /* one exp per selected entry (the call dominates for short rows) */
    double e[TOPK_HEAP], sum = 0.0;
    for (size_t q = 0; q < h.m; q++) {
        /* sg_z_diff with T = 1 and no add mask is the double difference */
        const double d = masked ? (double)hv[q]
                         : v->t == 1.0 ? (double)hv[q] - s->xb
                                       : sg_z_diff(hv[q], 0.0, s->xb, 0.0, v->t);
        e[q] = hv[q] == -INFINITY ? 0.0 : exp(d);
        sum += e[q];
    }
    const double inv = 1.0 / sum; /* sum >= 1: the max is selected */
    memset(y, 0, n * sizeof *y);
    for (size_t q = 0; q < h.m; q++) y[hi[q]] = (float)(e[q] * inv);
}

static void forward_row(const sg_sparse_job *j, size_t r) {
    const sg_row_view v = sg_sparse_view(j, r);
    float *y = j->out + r * j->ldo;
    sg_row_scan s;
    if (!v.keep && !v.add) {
        int bad = 0;
        const float m = sg_sparse_kernels_get()->max(j->n, v.x, &bad);
        if (bad || m == -INFINITY) s = sg_row_scan_f32(&v, j->n);
        else s.nan = s.posinf = 0, s.finite = 1, s.xb = m, s.ab = 0.0;
    } else {
        s = sg_row_scan_f32(&v, j->n);
    }
    if (sg_sparse_special(&s)) {
        special_row(j, &v, &s, y);
        return;
    }
    if (j->k <= TOPK_HEAP && j->n <= UINT32_MAX) {
        forward_heap(j, &v, &s, y);
        return;
    }
    if (!v.keep && !v.add && v.t == 1.0) { /* as sg_sparse_d, without the error-free sums */
        for (size_t i = 0; i < j->n; i++)
            y[i] = v.x[i] == -INFINITY ? -INFINITY : (float)((double)v.x[i] - s.xb);
    } else {
        for (size_t i = 0; i < j->n; i++) y[i] = sg_sparse_d(&v, &s, i);
    }
    size_t take;
    const uint32_t kk = kth_key(y, j->n, j->k, &take);
    double sum = 0.0;
    size_t eq = 0;
    for (size_t i = 0; i < j->n; i++) {
        const uint32_t key = key_of(y[i]);
        if (key > kk || (key == kk && eq++ < take)) sum += exp((double)y[i]);
    }
    const double inv = 1.0 / sum; /* sum >= 1: the max (d = 0) is selected */
    eq = 0;
    for (size_t i = 0; i < j->n; i++) {
        const uint32_t key = key_of(y[i]);
        y[i] = key > kk || (key == kk && eq++ < take) ? (float)(exp((double)y[i]) * inv) : 0.0f;
    }
}

/* dx = y (dy - sum_S y dy) / T on S = {kept i: y_i > 0}, 0 elsewhere
 * whatever dy holds there; a NaN in a kept y makes the kept entries NaN. */
static void backward_row(const sg_sparse_job *j, size_t r) {
    const sg_row_view v = sg_sparse_view(j, r); /* v.x is y */
    const float *y = v.x, *dy = j->dy + r * j->lddy;
    float *dx = j->out + r * j->ldo;
    double dot = 0.0;
    size_t nan = 0;
    for (size_t i = 0; i < j->n; i++) {
        if (sg_row_removed(&v, i)) continue;
        if (isnan(y[i])) nan++;
        else if (y[i] > 0.0f) dot += (double)y[i] * dy[i];
    }
    for (size_t i = 0; i < j->n; i++) {
        if (sg_row_removed(&v, i)) dx[i] = 0.0f;
        else if (nan) dx[i] = NAN;
        else dx[i] = y[i] > 0.0f ? (float)((double)y[i] * ((double)dy[i] - dot) / j->t) : 0.0f;
    }
}

sg_status sg_sparse_softmax_f32(sg_context *ctx, size_t k, size_t rows, size_t n, const float *x,
                                size_t ldx, float *y, size_t ldy, const sg_softmax_options *options) {
    static const char name[] = "sg_sparse_softmax_f32";
    if (!ctx) return SG_ERR_ARGUMENT;
    sg_ok(ctx);
    if (k == 0) return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: k = 0 (k must be >= 1)", name);
    sg_softmax_options o = options ? *options : sg_softmax_options_default();
    float c;
    sg_status st = sg_check_forward(ctx, name, SG_OP_SOFTMAX, rows, n, x, ldx, y, ldy, &o, 0, &c);
    if (st != SG_OK || rows == 0 || n == 0) return st;
    if (k >= n) { /* every entry selected: plain softmax */
        st = sg_softmax_f32(ctx, rows, n, x, ldx, y, ldy, options);
        if (st != SG_OK) return st;
        return sg_ok(ctx);
    }
    sg_sparse_job j = {0};
    j.row = forward_row;
    j.x = x, j.ldx = ldx, j.out = y, j.ldo = ldy, j.k = k;
    sg_sparse_run(ctx, &j, rows, n, &o);
    return SG_OK;
}

sg_status sg_sparse_softmax_backward_f32(sg_context *ctx, size_t rows, size_t n, const float *y,
                                         size_t ldy, const float *dy, size_t lddy, float *dx,
                                         size_t lddx, const sg_softmax_options *options) {
    static const char name[] = "sg_sparse_softmax_backward_f32";
    if (!ctx) return SG_ERR_ARGUMENT;
    sg_ok(ctx);
    sg_softmax_options o = options ? *options : sg_softmax_options_default();
    float c;
    sg_status st = sg_check_backward(ctx, name, rows, n, y, ldy, dy, lddy, dx, lddx, &o, &c);
    if (st != SG_OK || rows == 0 || n == 0) return st;
    sg_sparse_job j = {0};
    j.row = backward_row;
    j.x = y, j.ldx = ldy, j.dy = dy, j.lddy = lddy, j.out = dx, j.ldo = lddx;
    sg_sparse_run(ctx, &j, rows, n, &o);
    return SG_OK;
}

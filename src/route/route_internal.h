/*
 * route_internal.h - what the gate and balance files of src/route share:
 * top-k selection with the lower-index tie rule, NaN scans, the Philox
 * draws keyed like sg_random_uniform_f32, the workspace, and rows across
 * threads with the first failing row reported. Internal.
 */
#ifndef SG_ROUTE_INTERNAL_H
#define SG_ROUTE_INTERNAL_H

#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "core/context.h"
#include "core/dispatch.h"

/* Rows of at most this many experts keep their scratch on the stack. */
#define SG_ROUTE_STACK_E 1024
/* Below this much work (T * E) a call stays on the caller's thread. */
#define SG_ROUTE_PARALLEL_MIN ((size_t)16384)

/*
 * The k largest key[i] over i in [0, n) into ids[0..k) (k <= n), in
 * descending order of key, ties to the lower index: i is scanned upward
 * and an entry moves ahead only of strictly smaller keys. top[0..k) keeps
 * the selected keys next to their ids, so an insertion shifts values in
 * L1 without reloading key[ids[...]]; it costs O(k) only when a key beats
 * the current k-th, so random rows cost about n compares plus
 * k ln(n / k) insertions. *filled entries are already selected (group
 * limiting continues across groups); `base` is added to the ids written.
 * Returns nonzero when a key is NaN.
 */
static inline int sg_route_insert(float v, size_t i, size_t k, int32_t *ids, float *top,
                                  size_t *f, int32_t base) {
    if (v != v) return 1;
    size_t pos;
    if (*f == k) {
        if (!(v > top[k - 1])) return 0;
        pos = k - 1;
    } else {
        pos = (*f)++;
    }
    while (pos > 0 && v > top[pos - 1]) {
        top[pos] = top[pos - 1];
        ids[pos] = ids[pos - 1];
        pos--;
    }
    top[pos] = v;
    ids[pos] = (int32_t)i + base;
    return 0;
}

static inline int sg_route_select(const float *key, size_t n, size_t k, int32_t *ids, float *top,
                                  size_t *filled, int32_t base) {
    int nan = 0;
    size_t f = *filled, i = 0;
    if (k == 0) return 0;
    for (; i < n && f < k; i++) nan |= sg_route_insert(key[i], i, k, ids, top, &f, base);
    /* Blocks of 16 with a branch-free test (vectorized by the compiler):
     * !(v <= thr) holds for a candidate and for NaN, which the element
     * path then reports; most blocks of a random row have neither. */
    for (; i + 16 <= n; i += 16) {
        const float thr = top[k - 1];
        int hit = 0;
        for (size_t q = 0; q < 16; q++) hit |= !(key[i + q] <= thr);
        if (!hit) continue;
        for (size_t q = 0; q < 16; q++) nan |= sg_route_insert(key[i + q], i + q, k, ids, top, &f, base);
    }
    for (; i < n; i++) nan |= sg_route_insert(key[i], i, k, ids, top, &f, base);
    *filled = f;
    return nan;
}

/*
 * The same selection (same ids, same order) for a fresh row, cheaper when
 * n is large against k: the maxima of blocks of B = 16 (or 8) keys give
 * thr = the k-th largest block maximum, a lower bound of the k-th largest
 * key (k distinct keys, one per block, are >= thr). So every selected key
 * and every key tied with the k-th is >= thr: the candidates {i : key_i >=
 * thr}, gathered in index order without branches, are a superset of the
 * answer, and the exact insertion over them (index order kept) gives the
 * same ids and tie order as the full scan. Random rows leave about k + k/2
 * candidates, so the unpredictable insertions drop from k ln(n/k) + k to
 * about k + k/2. Falls back to the scan when n < 8k or n > SG_ROUTE_STACK_E.
 * The caller checks NaN (sg_route_has_nan) first: block maxima ignore it.
 */
/*
 * k = 1 or 2 on short rows without a branch per key: max/min and
 * conditional moves (b2 = max(b2, min(b1, v)), b1 = max(b1, v), strict
 * compares, so ties keep index order). Returns 0 when fewer than k keys
 * are above -inf (the caller then scans).
 */
static inline int sg_route_select_top2(const float *key, size_t n, size_t k, int32_t *ids,
                                       float *top) {
    float b1 = -INFINITY, b2 = -INFINITY;
    int32_t i1 = -1, i2 = -1;
    for (size_t i = 0; i < n; i++) {
        const float v = key[i];
        /* masks, so that the compiler cannot turn the id updates into
         * branches */
        const int32_t m1 = -(int32_t)(v > b1), m2 = -(int32_t)(v > b2), ii = (int32_t)i;
        const int32_t c2 = (ii & m2) | (i2 & ~m2);
        i2 = (i1 & m1) | (c2 & ~m1);
        i1 = (ii & m1) | (i1 & ~m1);
        const float lo = v < b1 ? v : b1;
        b2 = lo > b2 ? lo : b2;
        b1 = v > b1 ? v : b1;
    }
    if (i1 < 0 || (k == 2 && i2 < 0)) return 0;
    ids[0] = i1, top[0] = b1;
    if (k == 2) ids[1] = i2, top[1] = b2;
    return 1;
}

static inline void sg_route_select_fresh(const float *key, size_t n, size_t k, int32_t *ids,
                                         float *top) {
    size_t f = 0;
    const size_t b = n >= 16 * k ? 16 : 8;
    if (k <= 2 && n <= 16 && sg_route_select_top2(key, n, k, ids, top)) return;
    if (n < 8 * k || n > SG_ROUTE_STACK_E) {
        sg_route_select(key, n, k, ids, top, &f, 0);
        return;
    }
    const size_t nb = n / b;
    if (nb < k || nb == 0) { /* never (n >= 8k): for the compiler's sake */
        sg_route_select(key, n, k, ids, top, &f, 0);
        return;
    }
    float bmax[SG_ROUTE_STACK_E / 8];
    for (size_t q = 0; q < nb; q++) {
        const float *kb = key + q * b;
        float m0 = kb[0], m1 = kb[1], m2 = kb[2], m3 = kb[3];
        for (size_t i = 4; i < b; i += 4) {
            m0 = kb[i] > m0 ? kb[i] : m0, m1 = kb[i + 1] > m1 ? kb[i + 1] : m1;
            m2 = kb[i + 2] > m2 ? kb[i + 2] : m2, m3 = kb[i + 3] > m3 ? kb[i + 3] : m3;
        }
        m0 = m1 > m0 ? m1 : m0, m2 = m3 > m2 ? m3 : m2;
        bmax[q] = m2 > m0 ? m2 : m0;
    }
    int32_t bid[SG_ROUTE_STACK_E / 8];
    float btop[SG_ROUTE_STACK_E / 8];
    sg_route_select(bmax, nb, k, bid, btop, &f, 0);
    const float thr = btop[k - 1];
    /* candidates in index order, gathered without branches */
    int32_t cand[SG_ROUTE_STACK_E];
    size_t nc = 0;
    for (size_t i = 0; i < n; i++) {
        cand[nc] = (int32_t)i;
        nc += key[i] >= thr;
    }
    f = 0;
    for (size_t c = 0; c < nc; c++) sg_route_insert(key[cand[c]], (size_t)cand[c], k, ids, top, &f, 0);
}

/* Nonzero when x[0..n) holds a NaN: the magnitude bits above those of
 * +inf, OR-ed over fixed blocks of 16 (vectorized by the compiler; the
 * running maximum this replaced was one dependent chain of four
 * instructions per four keys). */
static inline int sg_route_has_nan(const float *x, size_t n) {
    uint32_t acc = 0;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        uint32_t blk = 0;
        for (size_t q = 0; q < 16; q++) {
            uint32_t u;
            memcpy(&u, x + i + q, sizeof u);
            blk |= (uint32_t)((u & 0x7FFFFFFFu) > 0x7F800000u);
        }
        acc |= blk;
    }
    if (i + 8 <= n) {
        uint32_t blk = 0;
        for (size_t q = 0; q < 8; q++) {
            uint32_t u;
            memcpy(&u, x + i + q, sizeof u);
            blk |= (uint32_t)((u & 0x7FFFFFFFu) > 0x7F800000u);
        }
        acc |= blk;
        i += 8;
    }
    for (; i < n; i++) {
        uint32_t u;
        memcpy(&u, x + i, sizeof u);
        acc |= (uint32_t)((u & 0x7FFFFFFFu) > 0x7F800000u);
    }
    return acc != 0;
}

/* u(row, col) of sg_random_uniform_f32(seed, offset): Philox4x32-10 with
 * key = seed and counter (col / 4, row, offset); the same mapping of 32
 * bits to (0, 1) (tests check the two agree bit for bit). Writes u for
 * columns [0, n) of the row. */
static inline float sg_route_open_unit(uint32_t bits) {
    return ((float)(bits >> 9) + 0.5f) * 0x1p-23f;
}

static inline void sg_route_uniform_row(uint64_t seed, uint64_t offset, size_t row, size_t n,
                                        float *u) {
    const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    for (size_t i = 0; i < n; i += 4) {
        const uint32_t ctr[4] = {(uint32_t)(i / 4), (uint32_t)row, (uint32_t)offset,
                                 (uint32_t)(offset >> 32)};
        uint32_t out[4];
        sg_philox4x32_10(ctr, key, out);
        for (size_t k = 0; k < 4 && i + k < n; k++) u[i + k] = sg_route_open_unit(out[k]);
    }
}

/* A buffer of `bytes` from the context's workspace (grown when the
 * context owns it; SG_ERR_WORKSPACE naming the need when the caller's
 * buffer is too small). */
sg_status sg_route_workspace(sg_context *ctx, const char *name, size_t bytes, void **out);

/* Rows [0, rows) in `tasks` contiguous ranges on the context's threads:
 * fn(arg, r0, r1) returns the first failing row in its range or SIZE_MAX;
 * the result is the lowest failing row overall (SIZE_MAX if none), the
 * same for every thread count. task_id lets fn pick a per-task buffer. */
typedef size_t sg_route_rows_fn(void *arg, size_t r0, size_t r1, size_t task_id);
size_t sg_route_run_rows(sg_context *ctx, size_t rows, size_t tasks, sg_route_rows_fn *fn,
                         void *arg);

/* How many tasks a row job of rows x n uses: 1 below the parallel size,
 * else the thread count (rows are independent, so the split never changes
 * a result). */
static inline size_t sg_route_tasks(const sg_context *ctx, size_t rows, size_t n) {
    if (ctx->threads == 1 || rows < 2 || rows * n < SG_ROUTE_PARALLEL_MIN) return 1;
    return (size_t)ctx->threads < rows ? (size_t)ctx->threads : rows;
}

#endif

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

#include "core/context.h"
#include "core/dispatch.h"

/* Rows of at most this many experts keep their scratch on the stack. */
#define SG_ROUTE_STACK_E 1024
/* Below this much work (T * E) a call stays on the caller's thread. */
#define SG_ROUTE_PARALLEL_MIN ((size_t)16384)

/*
 * The k largest key[i] over i in [0, n) into ids[0..k) (k <= n), in
 * descending order of key, ties to the lower index: i is scanned upward
 * and an entry moves ahead only of strictly smaller keys. Insertion into
 * the sorted prefix costs O(k) only when a key beats the current k-th, so
 * random rows cost about n compares. Returns nonzero when a key is NaN.
 * `base` is added to the ids written (a group's first expert).
 */
static inline int sg_route_select(const float *key, size_t n, size_t k, int32_t *ids,
                                  size_t *filled, int32_t base) {
    int nan = 0;
    size_t f = *filled;
    if (k == 0) return 0;
    float thr = f == k ? key[ids[k - 1] - base] : -INFINITY;
    for (size_t i = 0; i < n; i++) {
        const float v = key[i];
        nan |= v != v;
        size_t pos;
        if (f == k) {
            if (!(v > thr)) continue;
            pos = k - 1;
        } else {
            pos = f++;
        }
        while (pos > 0 && v > key[ids[pos - 1] - base]) {
            ids[pos] = ids[pos - 1];
            pos--;
        }
        ids[pos] = (int32_t)i + base;
        if (f == k) thr = key[ids[k - 1] - base];
    }
    *filled = f;
    return nan;
}

/* Nonzero when x[0..n) holds a NaN (integer compare of the magnitude bits,
 * four independent lanes). */
static inline int sg_route_has_nan(const float *x, size_t n) {
    uint32_t m0 = 0, m1 = 0, m2 = 0, m3 = 0;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        union { float f; uint32_t u; } a = {x[i]}, b = {x[i + 1]}, c = {x[i + 2]}, d = {x[i + 3]};
        uint32_t ua = a.u & 0x7FFFFFFFu, ub = b.u & 0x7FFFFFFFu, uc = c.u & 0x7FFFFFFFu,
                 ud = d.u & 0x7FFFFFFFu;
        m0 = ua > m0 ? ua : m0, m1 = ub > m1 ? ub : m1;
        m2 = uc > m2 ? uc : m2, m3 = ud > m3 ? ud : m3;
    }
    for (; i < n; i++) {
        union { float f; uint32_t u; } a = {x[i]};
        uint32_t ua = a.u & 0x7FFFFFFFu;
        m0 = ua > m0 ? ua : m0;
    }
    m0 = m0 > m1 ? m0 : m1, m2 = m2 > m3 ? m2 : m3;
    return (m0 > m2 ? m0 : m2) > 0x7F800000u;
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

/*
 * route_common.c - the pieces every router file uses: the workspace and
 * rows across threads with the lowest failing row reported. Gates and the
 * balance machinery live in their own files.
 */
#include <stdlib.h>

#include "route/route_internal.h"

sg_status sg_route_workspace(sg_context *ctx, const char *name, size_t bytes, void **out) {
    *out = NULL;
    if (bytes == 0) return SG_OK;
    if (ctx->workspace_bytes >= bytes) {
        *out = ctx->workspace;
        return SG_OK;
    }
    if (ctx->workspace_is_callers)
        return sg_fail(ctx, SG_ERR_WORKSPACE, "%s: needs %zu bytes of workspace, the context's holds %zu",
                       name, bytes, ctx->workspace_bytes);
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes) != 0)
        return sg_fail(ctx, SG_ERR_NO_MEMORY, "%s: cannot allocate %zu bytes of workspace", name, bytes);
    free(ctx->workspace);
    ctx->workspace = p;
    ctx->workspace_bytes = bytes;
    *out = p;
    return SG_OK;
}

typedef struct rows_job {
    sg_route_rows_fn *fn;
    void *arg;
    size_t rows, tasks;
    atomic_size_t bad;
} rows_job;

static void rows_task(void *arg, size_t t) {
    rows_job *j = arg;
    size_t r0 = j->rows * t / j->tasks, r1 = j->rows * (t + 1) / j->tasks;
    size_t b = j->fn(j->arg, r0, r1, t);
    size_t cur = atomic_load(&j->bad);
    while (b < cur && !atomic_compare_exchange_weak(&j->bad, &cur, b)) {
    }
}

size_t sg_route_run_rows(sg_context *ctx, size_t rows, size_t tasks, sg_route_rows_fn *fn,
                         void *arg) {
    if (rows == 0) return SIZE_MAX;
    if (tasks <= 1) return fn(arg, 0, rows, 0);
    rows_job j = {fn, arg, rows, tasks, SIZE_MAX};
    sg_parallel_for(ctx, tasks, rows_task, &j);
    return atomic_load(&j.bad);
}

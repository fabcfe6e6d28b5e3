/*
 * context.c - sg_context: creation, error messages, workspace, and
 * sg_parallel_for on top of the pool in threadpool.c.
 */
#include "core/context.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

const char *sg_status_string(sg_status status) {
    switch (status) {
    case SG_OK: return "ok";
    case SG_ERR_ARGUMENT: return "invalid argument";
    case SG_ERR_SHAPE: return "shape mismatch";
    case SG_ERR_NO_MEMORY: return "out of memory";
    case SG_ERR_WORKSPACE: return "workspace too small";
    case SG_ERR_UNSUPPORTED: return "unsupported";
    }
    return "unknown status";
}

sg_status sg_fail(sg_context *ctx, sg_status status, const char *fmt, ...) {
    if (ctx) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(ctx->error, sizeof ctx->error, fmt, ap);
        va_end(ap);
    }
    return status;
}

sg_status sg_ok(sg_context *ctx) {
    ctx->error[0] = '\0';
    return SG_OK;
}

sg_status sg_context_create(sg_context **out, int threads) {
    if (!out) return SG_ERR_ARGUMENT;
    *out = NULL;
    if (threads < 0 || threads > SG_MAX_THREADS) return SG_ERR_ARGUMENT;
    if (threads == 0) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        threads = cores > 0 ? (int)(cores < SG_MAX_THREADS ? cores : SG_MAX_THREADS) : 1;
    }
    sg_context *ctx = calloc(1, sizeof *ctx);
    if (!ctx) return SG_ERR_NO_MEMORY;
    ctx->threads = threads;
    ctx->scratch = malloc(SG_SCRATCH_BYTES);
    if (!ctx->scratch) {
        free(ctx);
        return SG_ERR_NO_MEMORY;
    }
    if (threads > 1) {
        ctx->pool = sg_pool_create(threads);
        if (!ctx->pool) {
            free(ctx->scratch);
            free(ctx);
            return SG_ERR_NO_MEMORY;
        }
    }
    *out = ctx;
    return SG_OK;
}

void sg_context_destroy(sg_context *ctx) {
    if (!ctx) return;
    sg_pool_destroy(ctx->pool);
    if (!ctx->workspace_is_callers) free(ctx->workspace);
    free(ctx->scratch);
    free(ctx);
}

int sg_context_threads(const sg_context *ctx) { return ctx ? ctx->threads : 0; }

const char *sg_context_error(const sg_context *ctx) {
    return ctx ? ctx->error : "no context (NULL)";
}

sg_status sg_context_set_workspace(sg_context *ctx, void *buf, size_t bytes) {
    if (!ctx) return SG_ERR_ARGUMENT;
    if (buf && bytes == 0)
        return sg_fail(ctx, SG_ERR_ARGUMENT, "workspace: bytes is 0 for a non-NULL buffer");
    if (!ctx->workspace_is_callers) free(ctx->workspace);
    ctx->workspace = buf;
    ctx->workspace_bytes = buf ? bytes : 0;
    ctx->workspace_is_callers = buf != NULL;
    return sg_ok(ctx);
}

void sg_parallel_for(sg_context *ctx, size_t tasks, sg_task_fn *fn, void *arg) {
    if (tasks == 0) return;
    /* The pool's ticket holds a 32-bit task index. */
    if (!ctx->pool || tasks == 1 || tasks >= 0xFFFFFFFFu || atomic_exchange(&ctx->busy, 1)) {
        for (size_t i = 0; i < tasks; i++) fn(arg, i);
        return;
    }
    sg_pool_run(ctx->pool, tasks, fn, arg);
    atomic_store(&ctx->busy, 0);
}

void sg_context_run(sg_context *ctx, size_t tasks, void (*fn)(void *arg, size_t task), void *arg) {
    if (ctx && fn) sg_parallel_for(ctx, tasks, fn, arg);
}

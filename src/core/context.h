/*
 * context.h - the inside of sg_context: thread pool, error message,
 * workspace; and the helpers ops use to report errors and run in parallel.
 * Internal.
 */
#ifndef SG_CORE_CONTEXT_H
#define SG_CORE_CONTEXT_H

#include <stdatomic.h>

#include "softgate.h"

typedef struct sg_pool sg_pool;

struct sg_context {
    int threads;
    sg_pool *pool; /* NULL when threads == 1 */
    char error[256];
    void *workspace;
    size_t workspace_bytes;
    int workspace_is_callers;
    /* Fixed scratch for the bounded temporaries of ops (per-chunk partial
     * results), allocated once at creation so ops never allocate. */
    void *scratch;
    /* Set while the pool runs a job: a nested sg_parallel_for (a task that
     * calls sg_context_run on its own context) then runs inline. */
    atomic_int busy;
};

#define SG_SCRATCH_BYTES (64u * 1024u)

/* Records a formatted message on ctx and returns status. */
sg_status sg_fail(sg_context *ctx, sg_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Clears the message; returns SG_OK. Ops call it on entry. */
sg_status sg_ok(sg_context *ctx);

/*
 * Runs fn(arg, i) for every i in [0, tasks) on the context's threads (the
 * caller's thread included) and returns when all are done. Tasks are taken
 * dynamically, so a task's result must not depend on which thread runs it;
 * that is what keeps results identical for every thread count.
 */
typedef void sg_task_fn(void *arg, size_t task);
void sg_parallel_for(sg_context *ctx, size_t tasks, sg_task_fn *fn, void *arg);

/* Thread pool (threadpool.c). threads counts the caller's thread. */
sg_pool *sg_pool_create(int threads);
void sg_pool_destroy(sg_pool *pool);
void sg_pool_run(sg_pool *pool, size_t tasks, sg_task_fn *fn, void *arg);

#endif

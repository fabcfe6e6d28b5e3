/*
 * threadpool.c - a small persistent pool for sg_parallel_for.
 *
 * Workers wait for a new "generation" of work. After a job they spin
 * briefly (a few tens of microseconds) so that back-to-back calls do not pay
 * a futex wake-up each, then sleep on a condition variable: a pool that
 * spins for milliseconds would steal a core from whatever the caller does
 * next, which on a 2-core machine halves its speed.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include "core/context.h"

#define SPIN_NS 30000 /* how long an idle worker spins before sleeping */

struct sg_pool {
    int workers; /* threads besides the caller's */
    pthread_t *tids;
    pthread_mutex_t mutex;
    pthread_cond_t wake;
    atomic_uint generation;
    atomic_size_t next_task;
    atomic_int busy_workers;
    int stop;
    /* The current job, written before generation is bumped. */
    size_t tasks;
    sg_task_fn *fn;
    void *arg;
};

static void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield");
#endif
}

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void run_tasks(sg_pool *p) {
    size_t i;
    while ((i = atomic_fetch_add(&p->next_task, 1)) < p->tasks) p->fn(p->arg, i);
}

/* Waits until the generation differs from seen; returns 0 when stopping. */
static int wait_for_work(sg_pool *p, unsigned seen) {
    long long start = now_ns();
    for (unsigned spins = 0;; spins++) {
        if (atomic_load_explicit(&p->generation, memory_order_acquire) != seen)
            return 1;
        if ((spins & 63) == 63 && now_ns() - start > SPIN_NS) break;
        cpu_relax();
    }
    pthread_mutex_lock(&p->mutex);
    while (!p->stop && atomic_load(&p->generation) == seen)
        pthread_cond_wait(&p->wake, &p->mutex);
    int stop = p->stop;
    pthread_mutex_unlock(&p->mutex);
    return !stop;
}

static void *worker_main(void *arg) {
    sg_pool *p = arg;
    /* Generation 0 is the pool's state at creation, before any job: a
     * worker that starts late must still see the first job as new. */
    unsigned seen = 0;
    while (wait_for_work(p, seen)) {
        seen = atomic_load_explicit(&p->generation, memory_order_acquire);
        run_tasks(p);
        atomic_fetch_sub_explicit(&p->busy_workers, 1, memory_order_release);
    }
    return NULL;
}

sg_pool *sg_pool_create(int threads) {
    sg_pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->workers = threads - 1;
    p->tids = calloc((size_t)p->workers, sizeof *p->tids);
    if (!p->tids || pthread_mutex_init(&p->mutex, NULL) != 0) {
        free(p->tids);
        free(p);
        return NULL;
    }
    pthread_cond_init(&p->wake, NULL);
    atomic_init(&p->generation, 0);
    atomic_init(&p->next_task, 0);
    atomic_init(&p->busy_workers, 0);
    for (int i = 0; i < p->workers; i++) {
        if (pthread_create(&p->tids[i], NULL, worker_main, p) != 0) {
            p->workers = i; /* stop the ones already started */
            sg_pool_destroy(p);
            return NULL;
        }
    }
    return p;
}

void sg_pool_destroy(sg_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mutex);
    p->stop = 1;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mutex);
    for (int i = 0; i < p->workers; i++) pthread_join(p->tids[i], NULL);
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->mutex);
    free(p->tids);
    free(p);
}

void sg_pool_run(sg_pool *p, size_t tasks, sg_task_fn *fn, void *arg) {
    p->tasks = tasks;
    p->fn = fn;
    p->arg = arg;
    atomic_store(&p->next_task, 0);
    atomic_store(&p->busy_workers, p->workers);
    pthread_mutex_lock(&p->mutex);
    atomic_fetch_add_explicit(&p->generation, 1, memory_order_release);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mutex);
    run_tasks(p);
    /* Workers that found no task left still pass through; wait for all so
     * the job fields can be reused by the next call. */
    while (atomic_load_explicit(&p->busy_workers, memory_order_acquire) > 0)
        cpu_relax();
}

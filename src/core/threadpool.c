/*
 * threadpool.c - a small persistent pool for sg_parallel_for.
 *
 * Tasks are claimed from one atomic ticket holding (job generation, next
 * task index); the caller's thread claims too and then waits only for tasks
 * that were actually claimed. A worker that wakes late simply finds no task
 * left, so on a loaded machine (a worker not scheduled, or sharing the
 * caller's core) a job never waits for a thread that has not started; the
 * caller does the work itself.
 *
 * Idle workers spin briefly (a few tens of microseconds) so back-to-back
 * calls do not pay a futex wake-up each, then sleep on a condition
 * variable: a pool that spins for milliseconds would steal a core from
 * whatever the caller does next, which on a 2-core machine halves its speed.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#include "core/context.h"

#define SPIN_NS 30000 /* how long an idle worker spins before sleeping */
#define NO_TASK 0xFFFFFFFFu /* ticket index meaning "job over" */

struct sg_pool {
    int workers; /* threads besides the caller's */
    pthread_t *tids;
    pthread_mutex_t mutex;
    pthread_cond_t wake;
    atomic_int sleepers;
    int stop;
    uint32_t generation; /* caller-side job counter */
    /* (generation << 32) | next task index: claiming a task is one CAS
     * that also proves the job is still the one the worker read. */
    _Atomic uint64_t ticket;
    /* The current job, stored (release) before the ticket publishes it. */
    _Atomic(sg_task_fn *) fn;
    _Atomic(void *) arg;
    _Atomic uint64_t tasks;
    atomic_size_t done;
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

static inline uint32_t gen_of(uint64_t t) { return (uint32_t)(t >> 32); }

/* Claims and runs tasks of job `gen` until none is left. */
static void run_tasks(sg_pool *p, uint32_t gen) {
    sg_task_fn *fn = atomic_load_explicit(&p->fn, memory_order_acquire);
    void *arg = atomic_load_explicit(&p->arg, memory_order_acquire);
    uint64_t tasks = atomic_load_explicit(&p->tasks, memory_order_acquire);
    uint64_t t = atomic_load_explicit(&p->ticket, memory_order_acquire);
    while (gen_of(t) == gen && (t & NO_TASK) < tasks) {
        if (atomic_compare_exchange_weak_explicit(&p->ticket, &t, t + 1, memory_order_acq_rel,
                                                  memory_order_acquire)) {
            fn(arg, (size_t)(t & NO_TASK));
            atomic_fetch_add_explicit(&p->done, 1, memory_order_release);
            t = atomic_load_explicit(&p->ticket, memory_order_acquire);
        }
    }
}

/* Waits until a job newer than `seen` is published; returns its
 * generation, or 0 when the pool stops. */
static uint32_t wait_for_work(sg_pool *p, uint32_t seen) {
    long long start = now_ns();
    for (unsigned spins = 0;; spins++) {
        uint32_t g = gen_of(atomic_load_explicit(&p->ticket, memory_order_acquire));
        if (g != seen) return g;
        if ((spins & 63) == 63 && now_ns() - start > SPIN_NS) break;
        cpu_relax();
    }
    pthread_mutex_lock(&p->mutex);
    atomic_fetch_add(&p->sleepers, 1);
    uint32_t g;
    while (!p->stop && (g = gen_of(atomic_load(&p->ticket))) == seen)
        pthread_cond_wait(&p->wake, &p->mutex);
    atomic_fetch_sub(&p->sleepers, 1);
    int stop = p->stop;
    pthread_mutex_unlock(&p->mutex);
    return stop ? 0 : gen_of(atomic_load(&p->ticket));
}

static void *worker_main(void *arg) {
    sg_pool *p = arg;
    uint32_t seen = 0; /* generation 0: the pool before any job */
    for (;;) {
        uint32_t g = wait_for_work(p, seen);
        if (g == 0) return NULL;
        run_tasks(p, g);
        seen = g;
    }
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
    if (pthread_cond_init(&p->wake, NULL) != 0) {
        pthread_mutex_destroy(&p->mutex);
        free(p->tids);
        free(p);
        return NULL;
    }
    atomic_init(&p->sleepers, 0);
    atomic_init(&p->ticket, 0);
    atomic_init(&p->fn, NULL);
    atomic_init(&p->arg, NULL);
    atomic_init(&p->tasks, 0);
    atomic_init(&p->done, 0);
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
    if (++p->generation == 0) p->generation = 1; /* 0 means "no job yet" */
    const uint32_t gen = p->generation;
    atomic_store_explicit(&p->done, 0, memory_order_relaxed);
    atomic_store_explicit(&p->fn, fn, memory_order_release);
    atomic_store_explicit(&p->arg, arg, memory_order_release);
    atomic_store_explicit(&p->tasks, (uint64_t)tasks, memory_order_release);
    atomic_store_explicit(&p->ticket, (uint64_t)gen << 32, memory_order_release);
    /* Store-load ordering against a worker that registers as a sleeper and
     * then re-reads the ticket: one of the two must see the other. */
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load(&p->sleepers) > 0) {
        pthread_mutex_lock(&p->mutex);
        pthread_cond_broadcast(&p->wake);
        pthread_mutex_unlock(&p->mutex);
    }
    run_tasks(p, gen);
    /* Wait for tasks that workers claimed; yield now and then in case a
     * worker shares this core. */
    for (unsigned spins = 0; atomic_load_explicit(&p->done, memory_order_acquire) < tasks; spins++) {
        if ((spins & 255) == 255) sched_yield();
        else cpu_relax();
    }
    /* Close the job: no claim of this generation can succeed any more. */
    atomic_store_explicit(&p->ticket, ((uint64_t)gen << 32) | NO_TASK, memory_order_release);
}

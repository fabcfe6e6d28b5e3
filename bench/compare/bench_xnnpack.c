/*
 * bench_xnnpack.c - XNNPACK (Debian git20220216) softmax_nc_f32 operator on
 * a row-major [rows x n] f32 tensor. XNNPACK has no log-softmax operator, so
 * only --op softmax is accepted. Prints one JSON line per shape (common.h).
 *
 * Threads: a pthreadpool of T threads; for T == 1 we pass a NULL pool, which
 * makes XNNPACK run on the calling thread. XNNPACK splits the work by rows
 * only, so a single long row (rows == 1) always runs on one thread.
 *
 * usage: bench_xnnpack --threads T --op softmax [--quick]
 */
#include "common.h"

#include <pthreadpool.h>
#include <xnnpack.h>

typedef struct run_ctx {
    xnn_operator_t op;
    pthreadpool_t pool;
} run_ctx;

static int run_once(void *p)
{
    run_ctx *c = p;
    return xnn_run_operator(c->op, c->pool) == xnn_status_success ? 0 : -1;
}

int main(int argc, char **argv)
{
    bench_args a;
    if (bench_parse_args(argc, argv, &a) != 0)
        return 2;
    if (a.log) {
        fprintf(stderr, "xnnpack: XNNPACK has no log_softmax operator\n");
        return 2;
    }

    enum xnn_status st = xnn_initialize(NULL);
    if (st != xnn_status_success) {
        fprintf(stderr, "xnnpack: xnn_initialize failed: status %d%s\n",
                (int)st, st == xnn_status_unsupported_hardware
                             ? " (unsupported hardware)" : "");
        return 1;
    }
    pthreadpool_t pool = NULL;
    if (a.threads > 1) {
        pool = pthreadpool_create((size_t)a.threads);
        if (pool == NULL) {
            fprintf(stderr, "xnnpack: pthreadpool_create(%d) failed\n",
                    a.threads);
            return 1;
        }
    }
    if (a.verbose)
        fprintf(stderr, "xnnpack: %zu pool threads\n",
                pool ? pthreadpool_get_threads_count(pool) : (size_t)1);

    /* XNNPACK kernels may read up to XNN_EXTRA_BYTES past the input. */
    float *x = bench_alloc(BENCH_MAX_ELEMS, XNN_EXTRA_BYTES);
    float *y = bench_alloc(BENCH_MAX_ELEMS, XNN_EXTRA_BYTES);
    if (x == NULL || y == NULL) {
        fprintf(stderr, "xnnpack: out of memory for the 2 x 64 MiB buffers\n");
        return 1;
    }
    bench_fill_normal(x, BENCH_MAX_ELEMS, 42);

    bench_shape shapes[32];
    size_t count = bench_shapes(a.quick, shapes);
    for (size_t i = 0; i < count; i++) {
        const bench_shape *s = &shapes[i];
        run_ctx c = {NULL, pool};
        st = xnn_create_softmax_nc_f32(s->n, s->n, s->n, 0, &c.op);
        if (st != xnn_status_success) {
            fprintf(stderr, "xnnpack: xnn_create_softmax_nc_f32(n=%zu) "
                    "failed: status %d\n", s->n, (int)st);
            return 1;
        }
        /* Setup only binds shapes and pointers; it stays outside the timed
           loop like oneDNN's primitive creation. */
        st = xnn_setup_softmax_nc_f32(c.op, s->rows, x, y, pool);
        if (st != xnn_status_success) {
            fprintf(stderr, "xnnpack: xnn_setup_softmax_nc_f32(rows=%zu) "
                    "failed: status %d\n", s->rows, (int)st);
            return 1;
        }
        if (run_once(&c) != 0) {
            fprintf(stderr, "xnnpack: xnn_run_operator failed for n=%zu "
                    "rows=%zu\n", s->n, s->rows);
            return 1;
        }
        if (bench_check("xnnpack", 0, y, s->rows, s->n) != 0)
            return 1;
        double sec = bench_time(run_once, &c, strcmp(s->cache, "out") == 0);
        if (sec <= 0.0) {
            fprintf(stderr, "xnnpack: xnn_run_operator failed while timing "
                    "n=%zu rows=%zu\n", s->n, s->rows);
            return 1;
        }
        bench_print("xnnpack", &a, s, sec);
        xnn_delete_operator(c.op);
    }

    if (pool != NULL)
        pthreadpool_destroy(pool);
    xnn_deinitialize();
    free(x);
    free(y);
    return 0;
}

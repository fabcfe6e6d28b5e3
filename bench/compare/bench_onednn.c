/*
 * bench_onednn.c - oneDNN 2.6 (C API) softmax / logsoftmax forward on a
 * plain row-major [rows x n] f32 tensor, softmax along n. Prints one JSON
 * line per shape (see common.h).
 *
 * Threads: Debian's libdnnl is built with the OpenMP runtime (libgomp,
 * DNNL_CPU_RUNTIME == DNNL_RUNTIME_OMP). A primitive takes its thread count
 * from omp_get_max_threads() when it is created, so the launcher sets
 * OMP_NUM_THREADS=T before starting us, and we also call
 * omp_set_num_threads(T) before creating any primitive in case it did not.
 *
 * usage: bench_onednn --threads T --op softmax|log_softmax [--quick]
 */
#include "common.h"

#include <omp.h>
#include <oneapi/dnnl/dnnl.h>

#define DNNL_TRY(call)                                                       \
    do {                                                                     \
        dnnl_status_t st_ = (call);                                          \
        if (st_ != dnnl_success) {                                           \
            fprintf(stderr, "onednn: %s failed: status %d at %s:%d\n",       \
                    #call, (int)st_, __FILE__, __LINE__);                    \
            exit(1);                                                         \
        }                                                                    \
    } while (0)

typedef struct run_ctx {
    dnnl_primitive_t prim;
    dnnl_stream_t stream;
    dnnl_exec_arg_t args[2];
} run_ctx;

static int run_once(void *p)
{
    run_ctx *c = p;
    if (dnnl_primitive_execute(c->prim, c->stream, 2, c->args) != dnnl_success)
        return -1;
    /* CPU streams are synchronous in practice; wait anyway so that the
       timing covers the whole call under any runtime. */
    return dnnl_stream_wait(c->stream) == dnnl_success ? 0 : -1;
}

int main(int argc, char **argv)
{
    bench_args a;
    if (bench_parse_args(argc, argv, &a) != 0)
        return 2;

    const char *env = getenv("OMP_NUM_THREADS");
    if (env == NULL || atoi(env) != a.threads)
        fprintf(stderr, "onednn: note: OMP_NUM_THREADS is %s, not %d; "
                "using omp_set_num_threads(%d)\n", env ? env : "unset",
                a.threads, a.threads);
    omp_set_num_threads(a.threads);
    if (omp_get_max_threads() != a.threads) {
        fprintf(stderr, "onednn: asked for %d OpenMP threads, got %d\n",
                a.threads, omp_get_max_threads());
        return 1;
    }

    float *x = bench_alloc(BENCH_MAX_ELEMS, 0);
    float *y = bench_alloc(BENCH_MAX_ELEMS, 0);
    if (x == NULL || y == NULL) {
        fprintf(stderr, "onednn: out of memory for the 2 x 64 MiB buffers\n");
        return 1;
    }
    bench_fill_normal(x, BENCH_MAX_ELEMS, 42);

    dnnl_engine_t engine;
    dnnl_stream_t stream;
    DNNL_TRY(dnnl_engine_create(&engine, dnnl_cpu, 0));
    DNNL_TRY(dnnl_stream_create(&stream, engine, dnnl_stream_default_flags));

    bench_shape shapes[32];
    size_t count = bench_shapes(a.quick, shapes);
    for (size_t i = 0; i < count; i++) {
        const bench_shape *s = &shapes[i];
        dnnl_dims_t dims = {(dnnl_dim_t)s->rows, (dnnl_dim_t)s->n};
        dnnl_memory_desc_t md;
        DNNL_TRY(dnnl_memory_desc_init_by_tag(&md, 2, dims, dnnl_f32,
                                              dnnl_ab));

        /* softmax_v2 is the 2.6 interface for both ops (v1 softmax and
           logsoftmax descriptors dispatch to the same kernels). */
        dnnl_softmax_v2_desc_t desc;
        DNNL_TRY(dnnl_softmax_v2_forward_desc_init(
            &desc, dnnl_forward_inference,
            a.log ? dnnl_softmax_log : dnnl_softmax_accurate, &md, &md, 1));
        dnnl_primitive_desc_t pd;
        DNNL_TRY(dnnl_primitive_desc_create(&pd, &desc, NULL, engine, NULL));
        if (a.verbose) {
            const char *impl = NULL;
            dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl);
            fprintf(stderr, "onednn: n=%zu rows=%zu: %s, %d threads\n",
                    s->n, s->rows, impl ? impl : "?", omp_get_max_threads());
        }

        run_ctx c;
        c.stream = stream;
        DNNL_TRY(dnnl_primitive_create(&c.prim, pd));
        dnnl_memory_t src, dst;
        DNNL_TRY(dnnl_memory_create(&src, &md, engine, x));
        DNNL_TRY(dnnl_memory_create(&dst, &md, engine, y));
        c.args[0] = (dnnl_exec_arg_t){DNNL_ARG_SRC, src};
        c.args[1] = (dnnl_exec_arg_t){DNNL_ARG_DST, dst};

        if (run_once(&c) != 0) {
            fprintf(stderr, "onednn: execute failed for n=%zu rows=%zu\n",
                    s->n, s->rows);
            return 1;
        }
        if (bench_check("onednn", a.log, y, s->rows, s->n) != 0)
            return 1;
        double sec = bench_time(run_once, &c, strcmp(s->cache, "out") == 0);
        if (sec <= 0.0) {
            fprintf(stderr, "onednn: execute failed while timing n=%zu "
                    "rows=%zu\n", s->n, s->rows);
            return 1;
        }
        bench_print("onednn", &a, s, sec);

        dnnl_memory_destroy(src);
        dnnl_memory_destroy(dst);
        dnnl_primitive_destroy(c.prim);
        dnnl_primitive_desc_destroy(pd);
    }

    dnnl_stream_destroy(stream);
    dnnl_engine_destroy(engine);
    free(x);
    free(y);
    return 0;
}

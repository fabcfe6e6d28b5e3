/*
 * bench_softmax.c - `softgate bench softmax`: the softmax core's speed as a
 * ratio to a streaming probe measured in the same run over the same
 * buffers (bench_util.c), for every algorithm, row length, cache regime
 * and thread count. Repetitions of probe and ops are interleaved and the
 * medians reported, since this machine's other core is often busy.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

#define MAX_LIST 32

typedef enum {
    OP_SOFTMAX,
    OP_LOG_SOFTMAX,
    OP_LOGSUMEXP,
    OP_SOFTMAX_BWD,
    OP_LOG_SOFTMAX_BWD,
    OP_SPARSEMAX,
    N_OPS
} op_id;
static const char *const op_names[] = {"softmax",          "log_softmax",          "logsumexp",
                                       "softmax_backward", "log_softmax_backward", "sparsemax"};

typedef struct bench_cfg {
    int json, reps;
    long threads[MAX_LIST], ns[MAX_LIST];
    size_t n_threads, n_ns;
    int cache_in, cache_out;
    op_id op;
    int algos[4];
    size_t n_algos;
} bench_cfg;

static const long default_ns[] = {8, 32, 128, 1000, 4096, 32000, 128000, 1048576, 16777216};
static const long quick_ns[] = {32, 1000, 32000, 1048576};

#define IN_CACHE_ELEMS ((size_t)65536)     /* 256 KiB of input */
#define OUT_CACHE_ELEMS ((size_t)16777216) /* 64 MiB of input */

static void quick(void *arg) {
    bench_cfg *c = arg;
    memcpy(c->ns, quick_ns, sizeof quick_ns);
    c->n_ns = sizeof quick_ns / sizeof quick_ns[0];
    c->reps = 3;
}

/* Returns SG_BENCH_RUN, or the exit status after --help or bad usage. */
static int parse_args(int argc, char **argv, bench_cfg *c) {
    static const char *const caches[] = {"in", "out", "both"};
    const char *algo_names[SG_SOFTMAX_ONLINE + 1];
    for (int a = 0; a <= SG_SOFTMAX_ONLINE; a++) algo_names[a] = sg_softmax_algorithm_name((sg_softmax_algorithm)a);
    int cache = 2, op = OP_SOFTMAX;
    memset(c, 0, sizeof *c);
    c->reps = 7;
    c->threads[0] = 1, c->threads[1] = 2, c->n_threads = 2;
    memcpy(c->ns, default_ns, sizeof default_ns);
    c->n_ns = sizeof default_ns / sizeof default_ns[0];
    for (int a = 0; a <= SG_SOFTMAX_ONLINE; a++) c->algos[c->n_algos++] = a;
    const sg_bench_opt opts[] = {
        SG_BENCH_OPT("--json", SG_OPT_FLAG, &c->json, "JSON lines instead of the table"),
        SG_BENCH_OPT("--quick", SG_OPT_ACTION, c, "row lengths 32,1000,32000,1048576 and 3 repetitions",
                     .action = quick),
        SG_BENCH_OPT("--threads", SG_OPT_LIST, c->threads, "thread counts", .count = &c->n_threads,
                     .max = MAX_LIST, .lo = 1, .hi = SG_BENCH_MAX_THREADS),
        SG_BENCH_OPT("--n", SG_OPT_LIST, c->ns, "row lengths", .count = &c->n_ns, .max = MAX_LIST, .lo = 1,
                     .hi = (double)OUT_CACHE_ELEMS),
        SG_BENCH_OPT("--cache", SG_OPT_CHOICE, &cache, "rows in cache (about 256 KiB of input), out of it "
                     "(64 MiB), or both", .names = caches, .n_names = 3),
        SG_BENCH_OPT("--op", SG_OPT_CHOICE, &op, "the op to time", .names = op_names, .n_names = N_OPS),
        SG_BENCH_OPT("--algo", SG_OPT_PICK, c->algos, "softmax-core algorithms, in order (they apply to "
                     "the softmax-core ops)", .count = &c->n_algos, .max = 4, .names = algo_names,
                     .n_names = SG_SOFTMAX_ONLINE + 1),
        SG_BENCH_OPT("--reps", SG_OPT_INT, &c->reps, "repetitions, interleaved (medians over at most 64)",
                     .arg = "R", .lo = 1, .hi = SG_BENCH_MAX_COUNT),
    };
    int rc = sg_bench_options("softmax", opts, sizeof opts / sizeof opts[0], argc, argv);
    c->cache_in = cache != 1, c->cache_out = cache != 0;
    c->op = (op_id)op;
    return rc;
}

typedef struct shape {
    size_t n, rows;
    const float *x;
    float *y, *dy, *lse;
} shape;

static sg_status run_op(sg_context *ctx, op_id op, const shape *s, sg_softmax_algorithm algo) {
    sg_softmax_options o = sg_softmax_options_default();
    o.algorithm = algo;
    switch (op) {
    case OP_SOFTMAX: return sg_softmax_f32(ctx, s->rows, s->n, s->x, s->n, s->y, s->n, &o);
    case OP_LOG_SOFTMAX: return sg_log_softmax_f32(ctx, s->rows, s->n, s->x, s->n, s->y, s->n, &o);
    case OP_LOGSUMEXP: return sg_logsumexp_f32(ctx, s->rows, s->n, s->x, s->n, s->lse, &o);
    case OP_SOFTMAX_BWD:
        return sg_softmax_backward_f32(ctx, s->rows, s->n, s->x, s->n, s->dy, s->n, s->y, s->n, &o);
    case OP_LOG_SOFTMAX_BWD:
        return sg_log_softmax_backward_f32(ctx, s->rows, s->n, s->x, s->n, s->dy, s->n, s->y, s->n, &o);
    case OP_SPARSEMAX: return sg_sparsemax_f32(ctx, s->rows, s->n, s->x, s->n, s->y, s->n, &o);
    case N_OPS: break;
    }
    return SG_ERR_ARGUMENT;
}

/* Seconds per call, repeating the call until about 2 ms have passed so the
 * clock's resolution does not matter for small in-cache shapes. */
static double time_op(sg_context *ctx, op_id op, const shape *s, sg_softmax_algorithm algo) {
    int iters = 0;
    double t0 = sg_bench_now(), t;
    do {
        if (run_op(ctx, op, s, algo) != SG_OK) {
            fprintf(stderr, "softgate bench: %s\n", sg_context_error(ctx));
            exit(1);
        }
        iters++;
        t = sg_bench_now() - t0;
    } while (t < 2e-3);
    return t / iters;
}

static double time_probe(sg_context *ctx, const shape *s) {
    int iters = 0;
    double t = 0.0;
    do {
        t += sg_bench_probe(ctx, s->x, s->y, s->rows * s->n);
        iters++;
    } while (t < 2e-3);
    return t / iters;
}

/* Checks one row of the forward ops' output against a double-precision
 * softmax before timing: a fast wrong kernel must not produce a number.
 * (The backward kernels are checked by the test suite only.) */
static void check_once(sg_context *ctx, op_id op, const shape *s, sg_softmax_algorithm algo) {
    if (op == OP_LOGSUMEXP) {
        run_op(ctx, op, s, algo);
        size_t r = s->rows - 1, n = s->n;
        double mx = -INFINITY, sum = 0.0;
        for (size_t i = 0; i < n; i++) mx = s->x[r * n + i] > mx ? s->x[r * n + i] : mx;
        for (size_t i = 0; i < n; i++) sum += exp((double)s->x[r * n + i] - mx);
        if (!(fabs(s->lse[r] - (mx + log(sum))) <= 1e-5 * fmax(1.0, fabs(mx)))) {
            fprintf(stderr, "softgate bench: logsumexp n=%zu is wrong; refusing to time it\n", n);
            exit(1);
        }
        return;
    }
    if (op != OP_SOFTMAX && op != OP_LOG_SOFTMAX) return;
    run_op(ctx, op, s, algo);
    size_t r = s->rows - 1, n = s->n;
    const float *x = s->x + r * n;
    double mx = -INFINITY, sum = 0.0, err = 0.0;
    for (size_t i = 0; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    for (size_t i = 0; i < n; i++) sum += exp((double)x[i] - mx);
    for (size_t i = 0; i < n; i++) {
        double ref = op == OP_SOFTMAX ? exp((double)x[i] - mx) / sum : (double)x[i] - mx - log(sum);
        double e = fabs(s->y[r * n + i] - ref) / (op == OP_SOFTMAX ? ref + 1e-30 : fmax(1.0, fabs(ref)));
        if (ref > 1e-30 || op == OP_LOG_SOFTMAX) err = e > err ? e : err;
    }
    if (!(err < 1e-4)) {
        fprintf(stderr, "softgate bench: %s/%s n=%zu gives error %g; refusing to time it\n",
                op_names[op], sg_softmax_algorithm_name(algo), n, err);
        exit(1);
    }
}

static void bench_shape(sg_context *ctx, const bench_cfg *c, const shape *s, const char *cache,
                        int threads) {
    double probe[64], op_t[4][64];
    size_t reps = c->reps > 64 ? 64 : (size_t)c->reps;
    for (size_t a = 0; a < c->n_algos; a++) check_once(ctx, c->op, s, (sg_softmax_algorithm)c->algos[a]);
    for (size_t rep = 0; rep < reps; rep++) {
        probe[rep] = time_probe(ctx, s);
        for (size_t a = 0; a < c->n_algos; a++)
            op_t[a][rep] = time_op(ctx, c->op, s, (sg_softmax_algorithm)c->algos[a]);
    }
    double bytes = 8.0 * (double)(s->rows * s->n);
    double tp = sg_bench_median(probe, reps);
    for (size_t a = 0; a < c->n_algos; a++) {
        double t = sg_bench_median(op_t[a], reps);
        const char *an = sg_softmax_algorithm_name((sg_softmax_algorithm)c->algos[a]);
        if (c->json)
            printf("{\"op\":\"%s\",\"algorithm\":\"%s\",\"n\":%zu,\"rows\":%zu,\"threads\":%d,"
                   "\"cache\":\"%s\",\"isa\":\"%s\",\"gbps\":%.3f,\"probe_gbps\":%.3f,\"ratio\":%.3f}\n",
                   op_names[c->op], an, s->n, s->rows, threads, cache, sg_isa_name(sg_active_isa()),
                   bytes / t * 1e-9, bytes / tp * 1e-9, tp / t);
        else
            printf("%-12s %-10s %9zu %8zu %-4s %3d %9.2f %9.2f %7.3f\n", op_names[c->op], an, s->n,
                   s->rows, cache, threads, bytes / t * 1e-9, bytes / tp * 1e-9, tp / t);
        fflush(stdout);
    }
}

SG_BENCH(softmax, "the softmax core (softmax, log-softmax, logsumexp, backward) and sparsemax against a memory probe") {
    bench_cfg c;
    int rc = parse_args(argc, argv, &c);
    if (rc != SG_BENCH_RUN) return rc;
    float *x = sg_bench_alloc(OUT_CACHE_ELEMS * sizeof(float));
    float *y = sg_bench_alloc(OUT_CACHE_ELEMS * sizeof(float));
    float *dy = sg_bench_alloc(OUT_CACHE_ELEMS * sizeof(float));
    float *lse = sg_bench_alloc(OUT_CACHE_ELEMS * sizeof(float));
    sg_bench_fill_normal(x, OUT_CACHE_ELEMS, 10.0f, 1);
    sg_bench_fill_normal(dy, OUT_CACHE_ELEMS, 1.0f, 2);
    if (c.op == OP_SOFTMAX_BWD || c.op == OP_LOG_SOFTMAX_BWD) {
        /* Backward inputs must be forward outputs (probabilities or
         * log-probabilities) for the timing to be representative. */
        sg_context *tmp;
        if (sg_context_create(&tmp, 0) != SG_OK) {
            fprintf(stderr, "softgate bench: cannot create a context\n");
            return 1;
        }
        if (c.op == OP_SOFTMAX_BWD) sg_softmax_f32(tmp, OUT_CACHE_ELEMS / 1000, 1000, x, 1000, x, 1000, NULL);
        else sg_log_softmax_f32(tmp, OUT_CACHE_ELEMS / 1000, 1000, x, 1000, x, 1000, NULL);
        sg_context_destroy(tmp);
    }
    if (!c.json) {
        printf("# softgate %s, isa %s, cpu: %s\n", SG_VERSION_STRING, sg_isa_name(sg_active_isa()),
               sg_cpu_features());
        printf("# gbps = 8 bytes per element / median time; ratio = probe time / op time "
               "(probe: 2 reads + 1 write)\n");
        printf("%-12s %-10s %9s %8s %-4s %3s %9s %9s %7s\n", "op", "algorithm", "n", "rows", "cache",
               "thr", "GB/s", "probe", "ratio");
    }
    for (size_t ti = 0; ti < c.n_threads; ti++) {
        sg_context *ctx;
        if (sg_context_create(&ctx, (int)c.threads[ti]) != SG_OK) {
            fprintf(stderr, "softgate bench: cannot create a context of %ld threads\n", c.threads[ti]);
            return 1;
        }
        for (size_t ni = 0; ni < c.n_ns; ni++) {
            size_t n = (size_t)c.ns[ni];
            for (int pass = 0; pass < 2; pass++) {
                int in = pass == 0;
                if ((in && (!c.cache_in || n > IN_CACHE_ELEMS)) || (!in && !c.cache_out)) continue;
                size_t elems = in ? IN_CACHE_ELEMS : OUT_CACHE_ELEMS;
                shape s = {n, elems / n > 0 ? elems / n : 1, x, y, dy, lse};
                bench_shape(ctx, &c, &s, in ? "in" : "out", (int)c.threads[ti]);
            }
        }
        sg_context_destroy(ctx);
    }
    free(x), free(y), free(dy), free(lse);
    return 0;
}

/*
 * bench_sparse.c - `softgate bench sparse`: the sparse normalizers
 * (sparsemax, 1.5-entmax, alpha-entmax, sparse-softmax) as a ratio to the
 * softmax core (sg_softmax_f32) on the same rows, timed in the same run:
 * repetitions of softmax and the op are interleaved and the medians
 * compared, since this machine's other core is often busy. Rows of n
 * floats, about 4M floats in all (16 MiB in, 16 MiB out), N(0, 1) * scale.
 * Before timing, one row of each op is checked against its optimality
 * conditions (a fast wrong kernel must not produce a number).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench.h"

#define MAX_LIST 32
#define TOTAL_ELEMS ((size_t)1 << 22)

typedef enum { OP_SPARSEMAX, OP_ENTMAX15, OP_ENTMAX, OP_SPARSE_SOFTMAX, N_OPS } op_id;
static const char *const op_names[] = {"sparsemax", "entmax15", "entmax", "sparse_softmax"};

typedef struct bench_cfg {
    int json, reps;
    long threads[MAX_LIST], ns[MAX_LIST];
    size_t n_threads, n_ns;
    int ops[N_OPS];
    size_t n_ops;
    double alpha, scale;
    long k;
} bench_cfg;

static const long default_ns[] = {8, 32, 128, 512, 1024, 4096, 32768};
static const long quick_ns[] = {32, 1024, 32768};

static void quick(void *arg) {
    bench_cfg *c = arg;
    memcpy(c->ns, quick_ns, sizeof quick_ns);
    c->n_ns = sizeof quick_ns / sizeof quick_ns[0];
    c->reps = 3;
}

/* Returns SG_BENCH_RUN, or the exit status after --help or bad usage. */
static int parse_args(int argc, char **argv, bench_cfg *c) {
    memset(c, 0, sizeof *c);
    c->reps = 7;
    c->threads[0] = 1, c->n_threads = 1;
    memcpy(c->ns, default_ns, sizeof default_ns);
    c->n_ns = sizeof default_ns / sizeof default_ns[0];
    c->alpha = 1.5, c->k = 8, c->scale = 10.0;
    for (int k = 0; k < N_OPS; k++) c->ops[c->n_ops++] = k;
    const sg_bench_opt opts[] = {
        SG_BENCH_OPT("--json", SG_OPT_FLAG, &c->json, "JSON lines instead of the table"),
        SG_BENCH_OPT("--quick", SG_OPT_ACTION, c, "row lengths 32,1024,32768 and 3 repetitions", .action = quick),
        SG_BENCH_OPT("--threads", SG_OPT_LIST, c->threads, "thread counts", .count = &c->n_threads,
                     .max = MAX_LIST, .lo = 1, .hi = SG_BENCH_MAX_THREADS),
        SG_BENCH_OPT("--n", SG_OPT_LIST, c->ns, "row lengths", .count = &c->n_ns, .max = MAX_LIST, .lo = 1,
                     .hi = (double)TOTAL_ELEMS),
        SG_BENCH_OPT("--op", SG_OPT_PICK, c->ops, "ops to time, in order", .count = &c->n_ops, .max = N_OPS,
                     .names = op_names, .n_names = N_OPS),
        SG_BENCH_OPT("--alpha", SG_OPT_DOUBLE, &c->alpha, "alpha of entmax, > 1", .arg = "A"),
        SG_BENCH_OPT("--k", SG_OPT_LONG, &c->k, "k of sparse_softmax", .arg = "K", .lo = 1, .hi = SG_BENCH_MAX_COUNT),
        SG_BENCH_OPT("--scale", SG_OPT_DOUBLE, &c->scale, "logits are N(0,1) * S, S > 0", .arg = "S"),
        SG_BENCH_OPT("--reps", SG_OPT_INT, &c->reps, "repetitions, interleaved", .arg = "R", .lo = 1, .hi = 64),
    };
    int rc = sg_bench_options("sparse", opts, sizeof opts / sizeof opts[0], argc, argv);
    if (rc == SG_BENCH_RUN && !(c->alpha > 1.0)) return sg_bench_bad_usage("sparse", "--alpha must be > 1");
    if (rc == SG_BENCH_RUN && !(c->scale > 0.0)) return sg_bench_bad_usage("sparse", "--scale must be > 0");
    return rc;
}

typedef struct shape {
    size_t n, rows;
    const float *x;
    float *y;
} shape;

static sg_status run_op(sg_context *ctx, const bench_cfg *c, int op, const shape *s) {
    switch (op) {
    case OP_SPARSEMAX: return sg_sparsemax_f32(ctx, s->rows, s->n, s->x, s->n, s->y, s->n, NULL);
    case OP_ENTMAX15: return sg_entmax15_f32(ctx, s->rows, s->n, s->x, s->n, s->y, s->n, NULL);
    case OP_ENTMAX:
        return sg_entmax_f32(ctx, c->alpha, s->rows, s->n, s->x, s->n, s->y, s->n, NULL);
    case OP_SPARSE_SOFTMAX:
        return sg_sparse_softmax_f32(ctx, (size_t)c->k, s->rows, s->n, s->x, s->n, s->y, s->n, NULL);
    case N_OPS: return sg_softmax_f32(ctx, s->rows, s->n, s->x, s->n, s->y, s->n, NULL);
    }
    return SG_ERR_ARGUMENT;
}

/* The clock: with one thread, the thread's CPU time (time the scheduler
 * gives to the other helpers' jobs on this 2-core machine is not counted:
 * wall time inflates long calls, which are preempted more, and so biases
 * ratios between ops of different speed); with more threads, wall time. */
static double clock_now(int cpu) {
    if (!cpu) return sg_bench_now();
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Seconds per call, repeating until about 2 ms have passed. */
static double time_op(sg_context *ctx, const bench_cfg *c, int op, const shape *s, int cpu) {
    int iters = 0;
    double t0 = clock_now(cpu), t;
    do {
        if (run_op(ctx, c, op, s) != SG_OK) {
            fprintf(stderr, "softgate bench: %s\n", sg_context_error(ctx));
            exit(1);
        }
        iters++;
        t = clock_now(cpu) - t0;
    } while (t < 2e-3);
    return t / iters;
}

/*
 * One row's optimality conditions, in double: y on the simplex, and
 *   sparsemax   z_i - y_i = tau on the support, z_i <= tau elsewhere;
 *   entmax      (a-1) z_i - y_i^(a-1) = tau on the support, (a-1) z_i <= tau
 *               elsewhere (a = 1.5 for entmax15);
 *   top-k       min(k, n) nonzeros, none below an unselected z, and
 *               y_i / y_j = exp(z_i - z_j) among them.
 */
static int row_ok(const bench_cfg *c, int op, size_t n, const float *x, const float *y) {
    double sum = 0.0, tau = NAN, lo_sel = INFINITY, hi_off = -INFINITY, tol = 2e-5;
    const double a = op == OP_SPARSEMAX ? 2.0 : op == OP_ENTMAX15 ? 1.5 : c->alpha;
    size_t nz = 0, ib = 0;
    for (size_t i = 0; i < n; i++) {
        if (!(y[i] >= 0.0f)) return 0;
        sum += y[i];
        if (y[i] > 0.0f) {
            nz++, lo_sel = fmin(lo_sel, x[i]);
            if (y[i] > y[ib] || nz == 1) ib = i;
        } else {
            hi_off = fmax(hi_off, x[i]);
        }
    }
    if (!(fabs(sum - 1.0) < 1e-5)) return 0;
    if (op == OP_SPARSE_SOFTMAX) {
        if (nz != ((size_t)c->k < n ? (size_t)c->k : n) || lo_sel < hi_off) return 0;
        for (size_t i = 0; i < n; i++)
            if (y[i] > 1e-30f && fabs(log((double)y[i] / y[ib]) - ((double)x[i] - x[ib])) > 1e-4) return 0;
        return 1;
    }
    for (size_t i = 0; i < n; i++) {
        double t = (a - 1.0) * x[i] - pow((double)y[i], a - 1.0);
        if (y[i] > 1e-6f) {
            if (isnan(tau)) tau = t;
            if (fabs(t - tau) > tol * fmax(1.0, fabs(tau))) return 0;
        }
    }
    for (size_t i = 0; i < n; i++)
        if (y[i] == 0.0f && (a - 1.0) * x[i] > tau + tol * fmax(1.0, fabs(tau))) return 0;
    return 1;
}

static void check_once(sg_context *ctx, const bench_cfg *c, int op, const shape *s) {
    run_op(ctx, c, op, s);
    for (size_t r = 0; r < s->rows; r += s->rows / 3 + 1)
        if (!row_ok(c, op, s->n, s->x + r * s->n, s->y + r * s->n)) {
            fprintf(stderr, "softgate bench: %s n=%zu row %zu is wrong; refusing to time it\n",
                    op_names[op], s->n, r);
            exit(1);
        }
}

static void bench_shape(sg_context *ctx, const bench_cfg *c, const shape *s, int threads) {
    double ts[64], to[N_OPS][64];
    size_t reps = (size_t)c->reps;
    for (size_t q = 0; q < c->n_ops; q++) check_once(ctx, c, c->ops[q], s);
    for (size_t rep = 0; rep < reps; rep++) {
        ts[rep] = time_op(ctx, c, N_OPS, s, threads == 1); /* softmax */
        for (size_t q = 0; q < c->n_ops; q++) to[q][rep] = time_op(ctx, c, c->ops[q], s, threads == 1);
    }
    const double elems = (double)(s->rows * s->n), tsm = sg_bench_median(ts, reps);
    for (size_t q = 0; q < c->n_ops; q++) {
        const int op = c->ops[q];
        const double t = sg_bench_median(to[q], reps);
        char param[32] = "";
        if (op == OP_ENTMAX) snprintf(param, sizeof param, "alpha=%g", c->alpha);
        if (op == OP_SPARSE_SOFTMAX) snprintf(param, sizeof param, "k=%ld", c->k);
        if (c->json)
            printf("{\"op\":\"%s\",\"param\":\"%s\",\"n\":%zu,\"rows\":%zu,\"threads\":%d,\"isa\":\"%s\","
                   "\"gelem_s\":%.4f,\"softmax_gelem_s\":%.4f,\"ratio\":%.3f}\n",
                   op_names[op], param, s->n, s->rows, threads, sg_isa_name(sg_active_isa()),
                   elems / t * 1e-9, elems / tsm * 1e-9, tsm / t);
        else
            printf("%-15s %-9s %7zu %8zu %3d %10.3f %10.3f %7.3f\n", op_names[op], param, s->n, s->rows,
                   threads, elems / t * 1e-9, elems / tsm * 1e-9, tsm / t);
        fflush(stdout);
    }
}

SG_BENCH(sparse, "sparse normalizers (sparsemax, entmax, sparse-softmax) as a ratio to softmax") {
    bench_cfg c;
    int rc = parse_args(argc, argv, &c);
    if (rc != SG_BENCH_RUN) return rc;
    float *x = sg_bench_alloc(TOTAL_ELEMS * sizeof(float));
    float *y = sg_bench_alloc(TOTAL_ELEMS * sizeof(float));
    sg_bench_fill_normal(x, TOTAL_ELEMS, (float)c.scale, 1);
    if (!c.json) {
        printf("# softgate %s, isa %s, cpu: %s\n", SG_VERSION_STRING, sg_isa_name(sg_active_isa()),
               sg_cpu_features());
        printf("# logits N(0,1) * %g; Gelem/s = elements / median time (1 thread: thread CPU time); "
               "ratio = softmax time / op time (sg_softmax_f32, same rows, interleaved)\n", c.scale);
        printf("%-15s %-9s %7s %8s %3s %10s %10s %7s\n", "op", "param", "n", "rows", "thr", "Gelem/s",
               "softmax", "ratio");
    }
    for (size_t ti = 0; ti < c.n_threads; ti++) {
        sg_context *ctx;
        if (sg_context_create(&ctx, (int)c.threads[ti]) != SG_OK) {
            fprintf(stderr, "softgate bench: cannot create a context of %ld threads\n", c.threads[ti]);
            return 1;
        }
        for (size_t ni = 0; ni < c.n_ns; ni++) {
            const size_t n = (size_t)c.ns[ni];
            shape s = {n, TOTAL_ELEMS / n, x, y};
            bench_shape(ctx, &c, &s, (int)c.threads[ti]);
        }
        sg_context_destroy(ctx);
    }
    free(x), free(y);
    return 0;
}

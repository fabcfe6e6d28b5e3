/*
 * bench_alternatives.c - `softgate bench alternatives`: the softmax
 * alternatives (softpick, stablemax, sigmoid, normalized sigmoid,
 * Gumbel-softmax, adaptive temperature, and their backward passes) as
 * ratios to the softmax core's sg_softmax_f32 on the same shapes, measured
 * in the same run (backward ops also against sg_softmax_backward_f32).
 * Repetitions of the baseline and the op are interleaved and the medians
 * reported, since the machine's other core is often busy.
 * ratio = softmax time / op time: above 1 the op is faster than softmax.
 */
#include <math.h>
#include <stdio.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

#define MAX_LIST 32
#define ELEMS ((size_t)1 << 18) /* 1 MiB of input per call: in L2/L3 */

typedef enum {
    OP_SOFTPICK,
    OP_SOFTPICK_BWD,
    OP_STABLEMAX,
    OP_STABLEMAX_BWD,
    OP_LOG_STABLEMAX,
    OP_STABLEMAX_CE,
    OP_SIGMOID,
    OP_SIGMOID_BWD,
    OP_NSIGMOID,
    OP_NSIGMOID_BWD,
    OP_GUMBEL,
    OP_GUMBEL_HARD,
    OP_GUMBEL_BWD,
    OP_ADAPTIVE,
    N_OPS
} op_id;
static const char *const op_names[] = {
    "softpick",      "softpick_backward", "stablemax", "stablemax_backward", "log_stablemax",
    "stablemax_ce",  "sigmoid",           "sigmoid_backward", "nsigmoid", "nsigmoid_backward",
    "gumbel",        "gumbel_hard",       "gumbel_backward",  "adaptive"};

static int is_backward(op_id op) {
    return op == OP_SOFTPICK_BWD || op == OP_STABLEMAX_BWD || op == OP_SIGMOID_BWD ||
           op == OP_NSIGMOID_BWD || op == OP_GUMBEL_BWD;
}

typedef struct cfg {
    int json, reps, ops[N_OPS], cpu_clock, masked;
    long threads[MAX_LIST], ns[MAX_LIST];
    size_t n_threads, n_ns;
} cfg;

static const long default_ns[] = {8, 64, 256, 1000, 4096, 32768};
static const long quick_ns[] = {64, 1000, 32768};

static void quick(void *arg) {
    cfg *c = arg;
    memcpy(c->ns, quick_ns, sizeof quick_ns);
    c->n_ns = sizeof quick_ns / sizeof quick_ns[0];
    c->reps = 3;
}

/* Returns SG_BENCH_RUN, or the exit status after --help or bad usage. */
static int parse_args(int argc, char **argv, cfg *c) {
    static const char *const clocks[] = {"wall", "cpu"}, *const masks[] = {"none", "causal"};
    memset(c, 0, sizeof *c);
    c->reps = 7;
    c->threads[0] = 1, c->n_threads = 1;
    memcpy(c->ns, default_ns, sizeof default_ns);
    c->n_ns = sizeof default_ns / sizeof default_ns[0];
    for (int k = 0; k < N_OPS; k++) c->ops[k] = 1;
    const sg_bench_opt opts[] = {
        SG_BENCH_OPT("--json", SG_OPT_FLAG, &c->json, "JSON lines instead of the table"),
        SG_BENCH_OPT("--quick", SG_OPT_ACTION, c, "row lengths 64,1000,32768 and 3 repetitions", .action = quick),
        SG_BENCH_OPT("--threads", SG_OPT_LIST, c->threads, "thread counts", .count = &c->n_threads,
                     .max = MAX_LIST, .lo = 1, .hi = SG_BENCH_MAX_THREADS),
        SG_BENCH_OPT("--n", SG_OPT_LIST, c->ns, "row lengths", .count = &c->n_ns, .max = MAX_LIST, .lo = 1,
                     .hi = (double)ELEMS),
        SG_BENCH_OPT("--op", SG_OPT_SET, c->ops, "ops to time", .names = op_names, .n_names = N_OPS),
        SG_BENCH_OPT("--reps", SG_OPT_INT, &c->reps, "repetitions, interleaved", .arg = "R", .lo = 1, .hi = 64),
        SG_BENCH_OPT("--clock", SG_OPT_CHOICE, &c->cpu_clock, "cpu: thread CPU time (one thread only), for "
                     "a shared machine", .names = clocks, .n_names = 2),
        SG_BENCH_OPT("--mask", SG_OPT_CHOICE, &c->masked, "causal: a keep mask keeping a growing prefix of "
                     "each row (row r of R keeps columns <= r n / R), passed to softmax and the op alike",
                     .names = masks, .n_names = 2),
    };
    int rc = sg_bench_options("alternatives", opts, sizeof opts / sizeof opts[0], argc, argv);
    for (size_t i = 0; rc == SG_BENCH_RUN && c->cpu_clock && i < c->n_threads; i++)
        if (c->threads[i] != 1) /* the thread CPU clock sees one thread */
            return sg_bench_bad_usage("alternatives", "--clock cpu needs --threads 1");
    return rc;
}

typedef struct shape {
    size_t n, rows;
    const float *x, *y0, *dy; /* y0: a forward output for the backward ops */
    float *y, *ys;
    int32_t *target;
    float *loss;
    const sg_softmax_options *o; /* NULL, or a causal keep mask */
} shape;

static uint64_t call_count; /* Gumbel's stream offset: a new one per call */

/* Wall clock, or (--clock cpu, one thread only) the calling thread's CPU
 * time: on a machine shared with other jobs it leaves out the time the
 * thread was descheduled, which otherwise swamps the ratios. */
static int use_cpu_clock;
static double now(void) {
    if (!use_cpu_clock) return sg_bench_now();
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static sg_status run_op(sg_context *ctx, int op, const shape *s) {
    const size_t n = s->n, r = s->rows;
    switch (op) {
    case -2: return sg_softmax_backward_f32(ctx, r, n, s->y0, n, s->dy, n, s->y, n, s->o);
    case -1: return sg_softmax_f32(ctx, r, n, s->x, n, s->y, n, s->o);
    case OP_SOFTPICK: return sg_softpick_f32(ctx, r, n, s->x, n, s->y, n, SG_SOFTPICK_DEFAULT_EPS, s->o);
    case OP_SOFTPICK_BWD:
        return sg_softpick_backward_f32(ctx, r, n, s->x, n, s->dy, n, s->y, n, SG_SOFTPICK_DEFAULT_EPS, s->o);
    case OP_STABLEMAX: return sg_stablemax_f32(ctx, r, n, s->x, n, s->y, n, s->o);
    case OP_STABLEMAX_BWD:
        return sg_stablemax_backward_f32(ctx, r, n, s->x, n, s->y0, n, s->dy, n, s->y, n, s->o);
    case OP_LOG_STABLEMAX: return sg_log_stablemax_f32(ctx, r, n, s->x, n, s->y, n, s->o);
    case OP_STABLEMAX_CE:
        return sg_stablemax_cross_entropy_f32(ctx, r, n, s->x, n, s->target, s->loss, s->y, n, s->o);
    case OP_SIGMOID: return sg_sigmoid_f32(ctx, r, n, s->x, n, s->y, n, s->o);
    case OP_SIGMOID_BWD: return sg_sigmoid_backward_f32(ctx, r, n, s->y0, n, s->dy, n, s->y, n, s->o);
    case OP_NSIGMOID: return sg_normalized_sigmoid_f32(ctx, r, n, s->x, n, s->y, n, s->o);
    case OP_NSIGMOID_BWD:
        return sg_normalized_sigmoid_backward_f32(ctx, r, n, s->x, n, s->y0, n, s->dy, n, s->y, n, s->o);
    case OP_GUMBEL:
        return sg_gumbel_softmax_f32(ctx, r, n, s->x, n, 42, call_count++, 0, s->y, n, NULL, 0, s->o);
    case OP_GUMBEL_HARD:
        return sg_gumbel_softmax_f32(ctx, r, n, s->x, n, 42, call_count++, 1, s->y, n, s->ys, n, s->o);
    case OP_GUMBEL_BWD: return sg_gumbel_softmax_backward_f32(ctx, r, n, s->y0, n, s->dy, n, s->y, n, s->o);
    case OP_ADAPTIVE: return sg_adaptive_temperature_softmax_f32(ctx, r, n, s->x, n, s->y, n, NULL, s->o);
    }
    return SG_ERR_ARGUMENT;
}

/* Seconds per call, repeating until about 2 ms have passed. */
static double time_op(sg_context *ctx, int op, const shape *s) {
    int iters = 0;
    double t0 = now(), t;
    do {
        if (run_op(ctx, op, s) != SG_OK) {
            fprintf(stderr, "softgate bench: %s\n", sg_context_error(ctx));
            exit(1);
        }
        iters++;
        t = now() - t0;
    } while (t < 1e-3);
    return t / iters;
}

/* A fast wrong op must not produce a number: the last row of a forward
 * op's output is checked once against its defining property in double. */
static void check_once(sg_context *ctx, op_id op, const shape *s) {
    if (is_backward(op) || op == OP_STABLEMAX_CE) return;
    run_op(ctx, op, s);
    const size_t r = s->rows - 1, n = s->n;
    if (s->o) { /* masked: the properties that survive masks */
        const float *ym = s->y + r * n;
        double sum = 0.0, esum = 0.0;
        int ok = 1;
        for (size_t i = 0; i < n; i++) {
            sum += ym[i], esum += exp((double)ym[i]);
            if (op != OP_LOG_STABLEMAX && !(ym[i] >= 0.0f && ym[i] <= 1.0f)) ok = 0;
        }
        if (op == OP_STABLEMAX || op == OP_NSIGMOID || op == OP_GUMBEL || op == OP_ADAPTIVE ||
            op == OP_GUMBEL_HARD)
            ok = ok && fabs(sum - 1.0) < 1e-4;
        if (op == OP_LOG_STABLEMAX) ok = fabs(esum - 1.0) < 1e-4;
        if (op == OP_SOFTPICK) ok = ok && sum <= 1.0 + 1e-5;
        if (!ok) {
            fprintf(stderr, "softgate bench: %s n=%zu (masked) fails its check; refusing to time it\n",
                    op_names[op], n);
            exit(1);
        }
        return;
    }
    const float *x = s->x + r * n, *y = s->y + r * n;
    double sum = 0.0, err = 0.0, ssum = 0.0;
    for (size_t i = 0; i < n; i++) {
        double v = y[i], z = x[i], ref = NAN;
        sum += v;
        if (op == OP_SIGMOID) ref = 1.0 / (1.0 + exp(-z));
        if (op == OP_STABLEMAX || op == OP_LOG_STABLEMAX) ref = z >= 0 ? z + 1 : 1 / (1 - z), ssum += ref;
        if (op == OP_SOFTPICK) ssum += fabs(expm1(z));
        if (!isnan(ref)) err = fmax(err, fabs(v - ref) / ref);
        if (!(v == v)) err = INFINITY;
    }
    int ok = err < 1e-5;
    if (op == OP_STABLEMAX || op == OP_NSIGMOID || op == OP_GUMBEL || op == OP_ADAPTIVE)
        ok = fabs(sum - 1.0) < 1e-4;
    if (op == OP_SOFTPICK) {
        double ref0 = x[0] > 0 ? expm1((double)x[0]) / (ssum + 1e-8) : 0.0;
        ok = sum <= 1.0 + 1e-5 && fabs(y[0] - ref0) <= 1e-5 * ref0 + 1e-12;
    }
    if (op == OP_LOG_STABLEMAX)
        ok = fabs(y[0] - (log(x[0] >= 0 ? x[0] + 1.0 : 1.0 / (1.0 - x[0])) - log(ssum))) < 1e-5;
    if (op == OP_GUMBEL_HARD) ok = sum == 1.0;
    if (!ok) {
        fprintf(stderr, "softgate bench: %s n=%zu fails its check; refusing to time it\n",
                op_names[op], n);
        exit(1);
    }
}

static void bench_shape(sg_context *ctx, const cfg *c, const shape *s, op_id op, int threads) {
    double base[64], bbase[64], t_op[64];
    size_t reps = (size_t)c->reps;
    check_once(ctx, op, s);
    for (size_t rep = 0; rep < reps; rep++) {
        base[rep] = time_op(ctx, -1, s);
        t_op[rep] = time_op(ctx, op, s);
        bbase[rep] = is_backward(op) ? time_op(ctx, -2, s) : 0.0;
    }
    double tb = sg_bench_median(base, reps), to = sg_bench_median(t_op, reps);
    double tbb = is_backward(op) ? sg_bench_median(bbase, reps) : 0.0;
    double ns_per = to / (double)(s->rows * s->n) * 1e9;
    if (c->json) {
        printf("{\"op\":\"%s\",\"n\":%zu,\"rows\":%zu,\"threads\":%d,\"isa\":\"%s\",\"clock\":\"%s\",\"mask\":%d,"
               "\"ns_per_elem\":%.4f,\"softmax_ns_per_elem\":%.4f,\"ratio_to_softmax\":%.3f",
               op_names[op], s->n, s->rows, threads, sg_isa_name(sg_active_isa()),
               c->cpu_clock ? "cpu" : "wall", c->masked, ns_per,
               tb / (double)(s->rows * s->n) * 1e9, tb / to);
        if (is_backward(op)) printf(",\"ratio_to_softmax_backward\":%.3f", tbb / to);
        printf("}\n");
    } else {
        printf("%-19s %7zu %7zu %3d %9.3f %9.3f %8.3f", op_names[op], s->n, s->rows, threads, ns_per,
               tb / (double)(s->rows * s->n) * 1e9, tb / to);
        if (is_backward(op)) printf(" %8.3f", tbb / to);
        printf("\n");
    }
    fflush(stdout);
}

SG_BENCH(alternatives, "softpick, stablemax, sigmoid, normalized sigmoid, Gumbel-softmax, adaptive temperature, as ratios to sg_softmax_f32") {
    cfg c;
    int rc = parse_args(argc, argv, &c);
    if (rc != SG_BENCH_RUN) return rc;
    use_cpu_clock = c.cpu_clock;
    float *x = sg_bench_alloc(ELEMS * sizeof(float)), *y = sg_bench_alloc(ELEMS * sizeof(float));
    float *ys = sg_bench_alloc(ELEMS * sizeof(float)), *dy = sg_bench_alloc(ELEMS * sizeof(float));
    float *y0 = sg_bench_alloc(ELEMS * sizeof(float)), *loss = sg_bench_alloc(ELEMS * sizeof(float));
    int32_t *target = sg_bench_alloc(ELEMS * sizeof(int32_t));
    uint8_t *keep = sg_bench_alloc(ELEMS);
    sg_bench_fill_normal(x, ELEMS, 3.0f, 1);
    sg_bench_fill_normal(dy, ELEMS, 1.0f, 2);
    if (!c.json) {
        printf("# softgate %s, isa %s, cpu: %s\n", SG_VERSION_STRING, sg_isa_name(sg_active_isa()),
               sg_cpu_features());
        printf("# x ~ N(0, 9), %zu elements per call; ns/elem = median op time per element;\n"
               "# ratio = sg_softmax_f32 time / op time on the same shape (> 1: faster than softmax);\n"
               "# bwd ratio = sg_softmax_backward_f32 time / op time; clock: %s; mask: %s\n", ELEMS,
               c.cpu_clock ? "thread CPU time" : "wall", c.masked ? "causal keep mask" : "none");
        printf("%-19s %7s %7s %3s %9s %9s %8s %8s\n", "op", "n", "rows", "thr", "ns/elem", "softmax",
               "ratio", "bwd");
    }
    for (size_t ti = 0; ti < c.n_threads; ti++) {
        sg_context *ctx;
        if (sg_context_create(&ctx, (int)c.threads[ti]) != SG_OK) {
            fprintf(stderr, "softgate bench: cannot create a context of %ld threads\n", c.threads[ti]);
            return 1;
        }
        for (size_t ni = 0; ni < c.n_ns; ni++) {
            size_t n = (size_t)c.ns[ni], rows = ELEMS / n;
            for (size_t r = 0; r < rows; r++) target[r] = (int32_t)((r * 7) % n);
            sg_softmax_options mo = sg_softmax_options_default();
            if (c.masked) {
                for (size_t r = 0; r < rows; r++)
                    for (size_t i = 0; i < n; i++) keep[r * n + i] = i <= r * n / rows;
                mo.keep_mask = keep;
                mo.keep_mask_ld = n;
                for (size_t r = 0; r < rows; r++) target[r] = 0; /* always kept */
            }
            shape s = {n, rows, x, y0, dy, y, ys, target, loss, c.masked ? &mo : NULL};
            for (int op = 0; op < N_OPS; op++) {
                if (!c.ops[op]) continue;
                /* backward inputs: the matching forward output */
                if (op == OP_SOFTPICK_BWD || op == OP_GUMBEL_BWD) sg_softmax_f32(ctx, rows, n, x, n, y0, n, s.o);
                if (op == OP_STABLEMAX_BWD) sg_stablemax_f32(ctx, rows, n, x, n, y0, n, s.o);
                if (op == OP_SIGMOID_BWD) sg_sigmoid_f32(ctx, rows, n, x, n, y0, n, s.o);
                if (op == OP_NSIGMOID_BWD) sg_normalized_sigmoid_f32(ctx, rows, n, x, n, y0, n, s.o);
                bench_shape(ctx, &c, &s, (op_id)op, (int)c.threads[ti]);
            }
        }
        sg_context_destroy(ctx);
    }
    free(x), free(y), free(ys), free(dy), free(y0), free(loss), free(target), free(keep);
    return 0;
}

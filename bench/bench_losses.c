/*
 * bench_losses.c - `softgate bench losses`: the losses family's ops as a
 * ratio to the softmax core (sg_softmax_f32, AUTO) on the same logits in
 * the same run: fused cross-entropy (loss + dlogits, with the logit
 * z-loss), the spherical Z-loss, confidence scores, and fused softmax +
 * top-k, the latter also against softgate's softmax followed by a separate
 * top-k pass over the probabilities. Repetitions of every variant are
 * interleaved and medians reported (this machine's other core is often
 * busy). The PyTorch side of the top-k comparison is
 * bench/compare/bench_topk_torch.py (same shapes, same process).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

#define MAX_LIST 16
#define MAX_REPS 64

typedef enum { OP_CE, OP_ZLOSS, OP_CONFIDENCE, OP_TOPK, N_OPS } op_id;
static const char *const op_names[] = {"cross_entropy", "spherical_zloss", "confidence", "topk"};

typedef struct cfg {
    int json, reps, ops[N_OPS];
    long threads[MAX_LIST], ns[MAX_LIST], rows[MAX_LIST], ks[MAX_LIST];
    size_t n_threads, n_ns, n_ks;
    double eps, lambda;
} cfg;

/* The issue's shapes: rows x N = 4096 x 1024, 512 x 32000, 64 x 128k. */
static const long default_ns[] = {1024, 32000, 131072};
static const long default_rows[] = {4096, 512, 64};
#define OTHER_ELEMS 4194304L /* rows for other N: 16 MiB of logits */

static void quick(void *arg) {
    cfg *c = arg;
    c->reps = 3, c->n_ks = 2, c->ks[1] = 8;
}

/* Returns SG_BENCH_RUN, or the exit status after --help or bad usage. */
static int parse(int argc, char **argv, cfg *c) {
    memset(c, 0, sizeof *c);
    c->reps = 7;
    c->threads[0] = 1, c->n_threads = 1;
    memcpy(c->ns, default_ns, sizeof default_ns);
    c->n_ns = 3;
    c->ks[0] = 1, c->ks[1] = 2, c->ks[2] = 8, c->n_ks = 3;
    c->lambda = 1e-4;
    for (int k = 0; k < N_OPS; k++) c->ops[k] = 1;
    size_t n_rows = 0;
    const sg_bench_opt opts[] = {
        SG_BENCH_OPT("--op", SG_OPT_SET, c->ops, "ops to time", .names = op_names, .n_names = N_OPS),
        SG_BENCH_OPT("--n", SG_OPT_LIST, c->ns, "row lengths", .count = &c->n_ns, .max = MAX_LIST, .lo = 1,
                     .hi = SG_BENCH_MAX_COUNT),
        SG_BENCH_OPT("--rows", SG_OPT_LIST, c->rows, "rows per row length (the last repeats; default: the "
                     "issue's shapes 4096x1024, 512x32000, 64x131072, other N get 4M/N rows)",
                     .count = &n_rows, .max = MAX_LIST, .lo = 1, .hi = SG_BENCH_MAX_COUNT),
        SG_BENCH_OPT("--k", SG_OPT_LIST, c->ks, "k of topk", .count = &c->n_ks, .max = MAX_LIST, .lo = 1,
                     .hi = SG_BENCH_MAX_COUNT),
        SG_BENCH_OPT("--threads", SG_OPT_LIST, c->threads, "thread counts", .count = &c->n_threads,
                     .max = MAX_LIST, .lo = 1, .hi = SG_BENCH_MAX_THREADS),
        SG_BENCH_OPT("--eps", SG_OPT_DOUBLE, &c->eps, "label smoothing of cross_entropy", .arg = "E"),
        SG_BENCH_OPT("--lambda", SG_OPT_DOUBLE, &c->lambda, "z-loss weight of cross_entropy", .arg = "L"),
        SG_BENCH_OPT("--reps", SG_OPT_INT, &c->reps, "repetitions, interleaved", .arg = "R", .lo = 1,
                     .hi = MAX_REPS),
        SG_BENCH_OPT("--json", SG_OPT_FLAG, &c->json, "JSON lines instead of the table"),
        SG_BENCH_OPT("--quick", SG_OPT_ACTION, c, "k 1,8 and 3 repetitions", .action = quick),
    };
    int rc = sg_bench_options("losses", opts, sizeof opts / sizeof opts[0], argc, argv);
    for (size_t q = 0; rc == SG_BENCH_RUN && q < c->n_ns; q++) {
        if (n_rows) { /* --rows: the last value repeats */
            c->rows[q] = c->rows[q < n_rows ? q : n_rows - 1];
            continue;
        }
        c->rows[q] = OTHER_ELEMS / c->ns[q] > 0 ? OTHER_ELEMS / c->ns[q] : 1;
        for (size_t d = 0; d < 3; d++)
            if (c->ns[q] == default_ns[d]) c->rows[q] = default_rows[d];
    }
    return rc;
}

/* ---- the separate top-k pass (the baseline after sg_softmax_f32) ----------- */

typedef struct sep_topk {
    size_t rows, n, k;
    const float *y;
    int32_t *ix;
    float *pv;
} sep_topk;

/* A plain scalar top-k of one row of probabilities: sorted insertion
 * behind a threshold test, ties to the lower index. */
static void topk_row(size_t n, size_t k, const float *y, int32_t *ix, float *pv) {
    size_t cnt = 0;
    for (size_t i = 0; i < n; i++) {
        if (cnt == k && !(y[i] > pv[k - 1])) continue;
        size_t p = cnt < k ? cnt++ : k - 1;
        while (p > 0 && pv[p - 1] < y[i]) pv[p] = pv[p - 1], ix[p] = ix[p - 1], p--;
        pv[p] = y[i], ix[p] = (int32_t)i;
    }
}

static void sep_task(void *arg, size_t t) {
    const sep_topk *s = arg;
    const size_t per = 64;
    for (size_t r = t * per; r < (t + 1) * per && r < s->rows; r++)
        topk_row(s->n, s->k, s->y + r * s->n, s->ix + r * s->k, s->pv + r * s->k);
}

/* ---- timing ------------------------------------------------------------------ */

typedef struct shape {
    size_t rows, n, k;
    const float *x;
    float *y, *dx, *loss, *conf;
    int32_t *target, *ix;
    float *pv;
} shape;

enum { V_SOFTMAX, V_OP, V_SEPARATE, N_VARIANTS };

static void fail(sg_context *ctx) {
    fprintf(stderr, "softgate bench losses: %s\n", sg_context_error(ctx));
    exit(1);
}

static void run_variant(sg_context *ctx, const cfg *c, op_id op, int variant, shape *s) {
    sg_status st = SG_OK;
    if (variant == V_SOFTMAX || variant == V_SEPARATE) {
        st = sg_softmax_f32(ctx, s->rows, s->n, s->x, s->n, s->y, s->n, NULL);
        if (st == SG_OK && variant == V_SEPARATE) {
            sep_topk t = {s->rows, s->n, s->k, s->y, s->ix, s->pv};
            sg_context_run(ctx, (s->rows + 63) / 64, sep_task, &t);
        }
    } else if (op == OP_CE) {
        sg_cross_entropy_options co = {SG_REDUCTION_MEAN, -100, (float)c->eps, (float)c->lambda};
        st = sg_cross_entropy_f32(ctx, s->rows, s->n, s->x, s->n, s->target, s->loss, s->dx, s->n,
                                  &co, NULL);
    } else if (op == OP_ZLOSS) {
        sg_spherical_zloss_options zo = {SG_REDUCTION_MEAN, -100, 1.0f, 1.0f};
        st = sg_spherical_zloss_f32(ctx, s->rows, s->n, s->x, s->n, s->target, s->loss, s->dx, s->n,
                                    &zo, NULL);
    } else if (op == OP_CONFIDENCE) {
        st = sg_confidence_f32(ctx, s->rows, s->n, s->x, s->n, s->conf, s->conf + s->rows,
                               s->conf + 2 * s->rows, s->conf + 3 * s->rows, NULL);
    } else {
        st = sg_softmax_topk_f32(ctx, s->rows, s->n, s->x, s->n, s->k, s->ix, s->k, s->pv, s->k, NULL);
    }
    if (st != SG_OK) fail(ctx);
}

static double time_variant(sg_context *ctx, const cfg *c, op_id op, int variant, shape *s) {
    int iters = 0;
    double t0 = sg_bench_now(), t;
    do {
        run_variant(ctx, c, op, variant, s);
        iters++;
        t = sg_bench_now() - t0;
    } while (t < 5e-3);
    return t / iters;
}

/* The fused top-k must agree with softmax + separate top-k (probabilities
 * slot by slot within 1e-6 relative) before it is timed. */
static void check_topk(sg_context *ctx, const cfg *c, shape *s) {
    size_t cnt = s->rows * s->k;
    int32_t *ix = malloc(cnt * sizeof *ix);
    float *pv = malloc(cnt * sizeof *pv);
    if (!ix || !pv) exit(1);
    run_variant(ctx, c, OP_TOPK, V_SEPARATE, s);
    memcpy(ix, s->ix, cnt * sizeof *ix);
    memcpy(pv, s->pv, cnt * sizeof *pv);
    run_variant(ctx, c, OP_TOPK, V_OP, s);
    /* slot by slot the probabilities agree; indices may differ only where
     * two probabilities agree within rounding (the separate pass orders
     * rounded probabilities, the fused op orders x exactly) */
    for (size_t i = 0; i < cnt; i++)
        if (!(fabs(pv[i] - s->pv[i]) <= 1e-6 * pv[i] + 1e-30)) {
            fprintf(stderr, "softgate bench losses: top-k differs from softmax + top-k at %zu "
                    "(%d %g vs %d %g); refusing to time it\n", i, s->ix[i], s->pv[i], ix[i], pv[i]);
            exit(1);
        }
    free(ix), free(pv);
}

static void bench_one(sg_context *ctx, const cfg *c, op_id op, shape *s, int threads) {
    const int nv = op == OP_TOPK ? 3 : 2;
    double t[N_VARIANTS][MAX_REPS];
    if (op == OP_TOPK) check_topk(ctx, c, s);
    for (int rep = 0; rep < c->reps; rep++)
        for (int v = 0; v < nv; v++) t[v][rep] = time_variant(ctx, c, op, v, s);
    double tm[N_VARIANTS];
    for (int v = 0; v < nv; v++) tm[v] = sg_bench_median(t[v], (size_t)c->reps);
    const double ratio = tm[V_SOFTMAX] / tm[V_OP];
    const double sep = op == OP_TOPK ? tm[V_SEPARATE] / tm[V_OP] : 0.0;
    const double gbps = 4.0 * (double)(s->rows * s->n) / tm[V_OP] * 1e-9;
    char what[48] = "";
    if (op == OP_CE) snprintf(what, sizeof what, "eps=%g,lambda=%g", c->eps, c->lambda);
    if (op == OP_TOPK) snprintf(what, sizeof what, "k=%zu", s->k);
    if (c->json) {
        printf("{\"op\":\"%s\",\"params\":\"%s\",\"rows\":%zu,\"n\":%zu,\"threads\":%d,\"isa\":\"%s\","
               "\"ms\":%.4f,\"softmax_ms\":%.4f,\"ratio_softmax\":%.3f",
               op_names[op], what, s->rows, s->n, threads, sg_isa_name(sg_active_isa()),
               tm[V_OP] * 1e3, tm[V_SOFTMAX] * 1e3, ratio);
        if (op == OP_TOPK) printf(",\"separate_ms\":%.4f,\"ratio_separate\":%.3f", tm[V_SEPARATE] * 1e3, sep);
        printf("}\n");
    } else {
        printf("%-16s %-20s %6zu %7zu %3d %9.3f %9.3f %8.2f %8.3f", op_names[op], what, s->rows, s->n,
               threads, tm[V_OP] * 1e3, tm[V_SOFTMAX] * 1e3, gbps, ratio);
        if (op == OP_TOPK) printf(" %9.3f %8.2f", tm[V_SEPARATE] * 1e3, sep);
        printf("\n");
    }
    fflush(stdout);
}

SG_BENCH(losses, "cross-entropy (+ z-loss), spherical Z-loss, confidence, fused softmax + top-k vs the softmax core") {
    cfg c;
    int rc = parse(argc, argv, &c);
    if (rc != SG_BENCH_RUN) return rc;
    size_t max_elems = 0, max_rows = 0, max_k = 0;
    for (size_t q = 0; q < c.n_ns; q++) {
        size_t e = (size_t)c.ns[q] * (size_t)c.rows[q];
        max_elems = e > max_elems ? e : max_elems;
        max_rows = (size_t)c.rows[q] > max_rows ? (size_t)c.rows[q] : max_rows;
    }
    for (size_t q = 0; q < c.n_ks; q++) max_k = (size_t)c.ks[q] > max_k ? (size_t)c.ks[q] : max_k;
    float *x = sg_bench_alloc(max_elems * sizeof *x), *y = sg_bench_alloc(max_elems * sizeof *y);
    float *dx = sg_bench_alloc(max_elems * sizeof *dx), *loss = sg_bench_alloc(max_rows * sizeof *loss);
    float *conf = sg_bench_alloc(4 * max_rows * sizeof *conf);
    int32_t *target = sg_bench_alloc(max_rows * sizeof *target);
    int32_t *ix = sg_bench_alloc(max_rows * max_k * sizeof *ix);
    float *pv = sg_bench_alloc(max_rows * max_k * sizeof *pv);
    sg_bench_fill_normal(x, max_elems, 3.0f, 1);
    if (!c.json) {
        printf("# softgate %s, isa %s, cpu: %s\n", SG_VERSION_STRING, sg_isa_name(sg_active_isa()),
               sg_cpu_features());
        printf("# ms = median per call; GB/s = 4 bytes of logits per element / op time;\n"
               "# x softmax = sg_softmax_f32 time / op time (same logits, same run);\n"
               "# x sep = (sg_softmax_f32 + separate top-k pass) time / fused top-k time\n");
        printf("%-16s %-20s %6s %7s %3s %9s %9s %8s %8s %9s %8s\n", "op", "params", "rows", "n", "thr",
               "ms", "softmax", "GB/s", "x softmax", "sep ms", "x sep");
    }
    for (size_t ti = 0; ti < c.n_threads; ti++) {
        sg_context *ctx;
        if (sg_context_create(&ctx, (int)c.threads[ti]) != SG_OK) return 1;
        for (size_t q = 0; q < c.n_ns; q++) {
            shape s = {(size_t)c.rows[q], (size_t)c.ns[q], 1, x, y, dx, loss, conf, target, ix, pv};
            for (size_t r = 0; r < s.rows; r++) target[r] = (int32_t)((r * 2654435761u) % s.n);
            for (int op = 0; op < N_OPS; op++) {
                if (!c.ops[op]) continue;
                if (op != OP_TOPK) {
                    bench_one(ctx, &c, (op_id)op, &s, (int)c.threads[ti]);
                    continue;
                }
                for (size_t kq = 0; kq < c.n_ks; kq++) {
                    s.k = (size_t)c.ks[kq];
                    if (s.k <= s.n) bench_one(ctx, &c, OP_TOPK, &s, (int)c.threads[ti]);
                }
            }
        }
        sg_context_destroy(ctx);
    }
    free(x), free(y), free(dx), free(loss), free(conf), free(target), free(ix), free(pv);
    return 0;
}

/*
 * bench_moe.c - `softgate bench moe`: the whole MoE layer (router, softmax
 * top-k gate, dispatch, expert FFNs, combine) against two bounds measured in
 * the same run, repetitions interleaved, medians reported:
 *   floor  a read-only pass over exactly the weights the call must read
 *          (router + activated experts + shared experts), the same buffers,
 *          split over the same threads: the weight-streaming floor;
 *   gemm   OpenBLAS sgemm alone for exactly the activated experts'
 *          multiplications (X W1^T, X W3^T, H W2^T per expert on its rows,
 *          and per shared expert on all T rows), OpenBLAS at the context's
 *          thread count.
 * ratio = bound time / layer time (1.0 = at the bound). Target (issue 4):
 * floor ratio >= 0.7 at T <= 16, gemm ratio >= 0.9 at T >= 256.
 */
#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

#define MAX_LIST 16

typedef struct moe_config {
    const char *name;
    size_t d, f, e, k, shared;
} moe_config;

static const moe_config configs[] = {
    {"mixtral", 1024, 2816, 8, 2, 0},   /* 8 experts, F = 2816, K = 2 */
    {"deepseek", 1024, 512, 64, 6, 2},  /* 64 experts, F = 512, K = 6, 2 shared */
};

typedef struct bench_cfg {
    int json, reps;
    long threads[MAX_LIST], ts[MAX_LIST];
    size_t n_threads, n_ts;
    int config_mask;
} bench_cfg;

static void quick(void *arg) {
    bench_cfg *c = arg;
    c->ts[0] = 1, c->ts[1] = 16, c->ts[2] = 256, c->n_ts = 3;
    c->reps = 3;
}

/* Returns SG_BENCH_RUN, or the exit status after --help or bad usage. */
static int parse_args(int argc, char **argv, bench_cfg *c) {
    static const long default_ts[] = {1, 4, 16, 256, 1024};
    static const char *const config_names[] = {"mixtral", "deepseek", "both"};
    memset(c, 0, sizeof *c);
    c->reps = 5;
    c->threads[0] = 1, c->threads[1] = 2, c->n_threads = 2;
    memcpy(c->ts, default_ts, sizeof default_ts);
    c->n_ts = 5;
    int config = 2;
    const sg_bench_opt opts[] = {
        SG_BENCH_OPT("--json", SG_OPT_FLAG, &c->json, "JSON lines instead of the table"),
        SG_BENCH_OPT("--quick", SG_OPT_ACTION, c, "T = 1,16,256 and 3 repetitions", .action = quick),
        SG_BENCH_OPT("--threads", SG_OPT_LIST, c->threads, "thread counts", .count = &c->n_threads,
                     .max = MAX_LIST, .lo = 1, .hi = SG_BENCH_MAX_THREADS),
        SG_BENCH_OPT("--t", SG_OPT_LIST, c->ts, "tokens per call", .count = &c->n_ts, .max = MAX_LIST, .lo = 1,
                     .hi = 65536),
        SG_BENCH_OPT("--config", SG_OPT_CHOICE, &config, "the layer: Mixtral-like (8 experts, F = 2816, K = 2), "
                     "DeepSeek-like (64 experts, F = 512, K = 6, 2 shared) or both", .names = config_names,
                     .n_names = 3),
        SG_BENCH_OPT("--reps", SG_OPT_INT, &c->reps, "repetitions, interleaved", .arg = "R", .lo = 1, .hi = 64),
    };
    int rc = sg_bench_options("moe", opts, sizeof opts / sizeof opts[0], argc, argv);
    c->config_mask = config + 1; /* mixtral 1, deepseek 2, both 3 */
    return rc;
}

/* ---- the read-only probe ---------------------------------------------- */

/* The matrices a call reads, cut into chunks of PROBE_CHUNK floats. */
#define PROBE_CHUNK ((size_t)65536)
#define MAX_MATS 256
typedef struct probe_set {
    const float *p[MAX_MATS];
    size_t n[MAX_MATS], first[MAX_MATS + 1], count;
    float sink[64];
} probe_set;

static void probe_add(probe_set *s, const float *p, size_t n) {
    s->p[s->count] = p, s->n[s->count] = n;
    s->first[s->count + 1] = s->first[s->count] + (n + PROBE_CHUNK - 1) / PROBE_CHUNK;
    s->count++;
}

static void probe_task(void *arg, size_t task) {
    probe_set *s = arg;
    size_t m = 0;
    while (s->first[m + 1] <= task) m++;
    size_t c0 = (task - s->first[m]) * PROBE_CHUNK;
    size_t len = s->n[m] - c0 < PROBE_CHUNK ? s->n[m] - c0 : PROBE_CHUNK;
    s->sink[task % 64] += sg_bench_read_sum(s->p[m] + c0, len);
}

/* ---- the problem ------------------------------------------------------ */

typedef struct problem {
    const moe_config *cfg;
    sg_moe_layer layer;
    sg_moe_ffn ffn[80];
    float *weights, *router; /* all expert weights in one block */
    size_t t;
    float *x, *y, *logits, *w;
    int32_t *ids;
    /* sgemm bound buffers */
    float *bx, *bh, *by;
    size_t rows[80]; /* rows per unit (experts then shared) for the bound */
    int active;
    double weight_bytes;
    probe_set probe;
} problem;

/* Uniform in [-a, a] with a = sqrt(3) scale (variance scale^2): Box-Muller
 * over the 700 MB of both configurations' weights takes seconds; the
 * distribution does not change the speed. */
static void fill_uniform(float *x, size_t n, float scale, uint64_t seed) {
    uint64_t st = 0x9E3779B97F4A7C15ull ^ seed;
    float a = 1.7320508f * scale * 0x1p-23f;
    for (size_t i = 0; i < n; i++) {
        st ^= st >> 12, st ^= st << 25, st ^= st >> 27;
        x[i] = (float)((int32_t)((st * 0x2545F4914F6CDD1Dull) >> 40) - (1 << 23)) * a;
    }
}

static void make_weights(problem *pb, const moe_config *cfg) {
    size_t units = cfg->e + cfg->shared, per = 3 * cfg->f * cfg->d;
    pb->cfg = cfg;
    pb->weights = sg_bench_alloc(units * per * sizeof(float));
    fill_uniform(pb->weights, units * per, (float)(1.0 / sqrt((double)cfg->d)), 3);
    pb->router = sg_bench_alloc(cfg->e * cfg->d * sizeof(float));
    sg_bench_fill_normal(pb->router, cfg->e * cfg->d, (float)(1.0 / sqrt((double)cfg->d)), 4);
    for (size_t u = 0; u < units; u++) {
        float *b = pb->weights + u * per;
        pb->ffn[u] = (sg_moe_ffn){b, b + cfg->f * cfg->d, b + 2 * cfg->f * cfg->d};
    }
    pb->layer = (sg_moe_layer){.d = cfg->d, .f = cfg->f, .experts = cfg->e, .k = cfg->k,
                               .activation = SG_MOE_SWIGLU, .router = pb->router, .expert = pb->ffn,
                               .shared_experts = cfg->shared, .f_shared = cfg->f,
                               .shared = cfg->shared ? pb->ffn + cfg->e : NULL};
}

static sg_gate_config gate_of(const moe_config *cfg) {
    sg_gate_config g = sg_gate_config_default(SG_GATE_SOFTMAX_TOPK);
    g.k = cfg->k;
    g.renormalize = 1; /* Mixtral */
    return g;
}

static int run_layer(sg_context *ctx, problem *pb) {
    sg_gate_config g = gate_of(pb->cfg);
    const moe_config *c = pb->cfg;
    sg_status st = sg_moe_forward_f32(ctx, &pb->layer, &g, pb->t, pb->x, c->d, pb->y, c->d, pb->logits,
                                      c->e, pb->ids, c->k, pb->w, c->k);
    if (st != SG_OK) {
        fprintf(stderr, "softgate bench moe: %s\n", sg_context_error(ctx));
        exit(1);
    }
    return 0;
}

/* Sets T, the inputs, the routes (from one layer call) and the bounds'
 * lists. */
static void setup_t(sg_context *ctx, problem *pb, size_t t) {
    const moe_config *c = pb->cfg;
    pb->t = t;
    pb->x = sg_bench_alloc(t * c->d * sizeof(float));
    sg_bench_fill_normal(pb->x, t * c->d, 1.0f, 5 + (unsigned)t);
    pb->y = sg_bench_alloc(t * c->d * sizeof(float));
    pb->logits = sg_bench_alloc(t * c->e * sizeof(float));
    pb->w = sg_bench_alloc(t * c->k * sizeof(float));
    pb->ids = sg_bench_alloc(t * c->k * sizeof(int32_t));
    run_layer(ctx, pb);
    memset(pb->rows, 0, sizeof pb->rows);
    for (size_t i = 0; i < t * c->k; i++) pb->rows[pb->ids[i]]++;
    for (size_t s = 0; s < c->shared; s++) pb->rows[c->e + s] = t;
    size_t maxrows = t * c->k > t ? t * c->k : t;
    pb->bx = sg_bench_alloc(maxrows * c->d * sizeof(float));
    pb->bh = sg_bench_alloc(2 * maxrows * c->f * sizeof(float));
    pb->by = sg_bench_alloc(maxrows * c->d * sizeof(float));
    sg_bench_fill_normal(pb->bx, maxrows * c->d, 1.0f, 6);
    sg_bench_fill_normal(pb->bh, 2 * maxrows * c->f, 1.0f, 7);
    memset(&pb->probe, 0, sizeof pb->probe);
    probe_add(&pb->probe, pb->router, c->e * c->d);
    pb->active = 0;
    pb->weight_bytes = 4.0 * (double)(c->e * c->d);
    for (size_t u = 0; u < c->e + c->shared; u++) {
        if (!pb->rows[u]) continue;
        if (u < c->e) pb->active++;
        const sg_moe_ffn *w = &pb->ffn[u];
        probe_add(&pb->probe, w->w1, c->f * c->d);
        probe_add(&pb->probe, w->w3, c->f * c->d);
        probe_add(&pb->probe, w->w2, c->f * c->d);
        pb->weight_bytes += 12.0 * (double)(c->f * c->d);
    }
}

static void free_t(problem *pb) {
    free(pb->x), free(pb->y), free(pb->logits), free(pb->w), free(pb->ids);
    free(pb->bx), free(pb->bh), free(pb->by);
}

/* OpenBLAS alone: the activated experts' multiplications, rows as routed. */
static void gemm_bound(problem *pb) {
    const moe_config *c = pb->cfg;
    int d = (int)c->d, f = (int)c->f;
    for (size_t u = 0; u < c->e + c->shared; u++) {
        int n = (int)pb->rows[u];
        if (!n) continue;
        const sg_moe_ffn *w = &pb->ffn[u];
        float *h1 = pb->bh, *h3 = pb->bh + (size_t)n * c->f;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, f, d, 1.0f, pb->bx, d, w->w1, d, 0.0f, h1, f);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, f, d, 1.0f, pb->bx, d, w->w3, d, 0.0f, h3, f);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, d, f, 1.0f, h1, f, w->w2, f, 0.0f, pb->by, d);
    }
}

#define MIN_TIME 0.05

static double time_layer(sg_context *ctx, problem *pb) {
    int it = 0;
    double t0 = sg_bench_now(), t;
    do {
        run_layer(ctx, pb);
        it++;
        t = sg_bench_now() - t0;
    } while (t < MIN_TIME);
    return t / it;
}

static double time_gemm(problem *pb, int threads) {
    openblas_set_num_threads(threads);
    int it = 0;
    double t0 = sg_bench_now(), t;
    do {
        gemm_bound(pb);
        it++;
        t = sg_bench_now() - t0;
    } while (t < MIN_TIME);
    return t / it;
}

static double time_probe(sg_context *ctx, problem *pb) {
    int it = 0;
    double t0 = sg_bench_now(), t;
    do {
        sg_context_run(ctx, pb->probe.first[pb->probe.count], probe_task, &pb->probe);
        it++;
        t = sg_bench_now() - t0;
    } while (t < MIN_TIME);
    return t / it;
}

/* Token 0 against the dense formula in double; a fast wrong layer must not
 * produce a number. */
static void check_once(problem *pb) {
    const moe_config *c = pb->cfg;
    double *acc = calloc(c->d, sizeof *acc), *h = calloc(c->f, sizeof *h);
    double worst = 0.0, norm = 0.0;
    for (size_t s = 0; s < c->k + c->shared; s++) {
        const sg_moe_ffn *w = s < c->k ? &pb->ffn[pb->ids[s]] : &pb->ffn[c->e + s - c->k];
        double scale = s < c->k ? pb->w[s] : 1.0;
        for (size_t j = 0; j < c->f; j++) {
            double a = 0.0, b = 0.0;
            for (size_t i = 0; i < c->d; i++) {
                a += (double)w->w1[j * c->d + i] * pb->x[i];
                b += (double)w->w3[j * c->d + i] * pb->x[i];
            }
            h[j] = a / (1.0 + exp(-a)) * b;
        }
        for (size_t i = 0; i < c->d; i++) {
            double v = 0.0;
            for (size_t j = 0; j < c->f; j++) v += (double)w->w2[i * c->f + j] * h[j];
            acc[i] += scale * v;
        }
    }
    for (size_t i = 0; i < c->d; i++) {
        worst = fmax(worst, fabs(pb->y[i] - acc[i]));
        norm = fmax(norm, fabs(acc[i]));
    }
    free(acc), free(h);
    if (!(worst <= 1e-4 * (1.0 + norm))) {
        fprintf(stderr, "softgate bench moe: %s T=%zu is wrong (error %g); refusing to time it\n",
                c->name, pb->t, worst);
        exit(1);
    }
}

static void bench_case(sg_context *ctx, const bench_cfg *bc, problem *pb, int threads) {
    double tl[64], tg[64], tp[64];
    check_once(pb);
    for (int r = 0; r < bc->reps; r++) {
        tp[r] = time_probe(ctx, pb);
        tg[r] = time_gemm(pb, threads);
        openblas_set_num_threads(1);
        tl[r] = time_layer(ctx, pb);
    }
    double l = sg_bench_median(tl, (size_t)bc->reps), g = sg_bench_median(tg, (size_t)bc->reps),
           p = sg_bench_median(tp, (size_t)bc->reps);
    const moe_config *c = pb->cfg;
    if (bc->json)
        printf("{\"bench\":\"moe\",\"config\":\"%s\",\"t\":%zu,\"threads\":%d,\"isa\":\"%s\","
               "\"active\":%d,\"weight_mb\":%.1f,\"layer_us\":%.1f,\"floor_us\":%.1f,\"gemm_us\":%.1f,"
               "\"floor_ratio\":%.3f,\"gemm_ratio\":%.3f,\"read_gbps\":%.2f}\n",
               c->name, pb->t, threads, sg_isa_name(sg_active_isa()), pb->active,
               pb->weight_bytes * 1e-6, l * 1e6, p * 1e6, g * 1e6, p / l, g / l,
               pb->weight_bytes / p * 1e-9);
    else
        printf("%-9s %5zu %3d %6d %9.1f %10.1f %10.1f %10.1f %7.3f %7.3f %8.2f\n", c->name, pb->t,
               threads, pb->active, pb->weight_bytes * 1e-6, l * 1e6, p * 1e6, g * 1e6, p / l, g / l,
               pb->weight_bytes / p * 1e-9);
    fflush(stdout);
}

SG_BENCH(moe, "the MoE layer (router, gate, dispatch, SwiGLU experts, combine) against the weight-streaming floor and OpenBLAS sgemm") {
    bench_cfg bc;
    int rc = parse_args(argc, argv, &bc);
    if (rc != SG_BENCH_RUN) return rc;
    if (!bc.json) {
        printf("# softgate %s, isa %s, cpu: %s\n", SG_VERSION_STRING, sg_isa_name(sg_active_isa()),
               sg_cpu_features());
        printf("# D = 1024, SwiGLU, softmax-top-k gate (renormalized); times in us (medians of %d);\n"
               "# floor = read-only pass over the router and activated experts' weights (MB);\n"
               "# gemm = OpenBLAS sgemm alone on the activated experts' rows (OpenBLAS at thr threads);\n"
               "# ratio = bound / layer\n", bc.reps);
        printf("%-9s %5s %3s %6s %9s %10s %10s %10s %7s %7s %8s\n", "config", "T", "thr", "active",
               "weightMB", "layer", "floor", "gemm", "floor_r", "gemm_r", "readGB/s");
    }
    for (int ci = 0; ci < 2; ci++) {
        if (!(bc.config_mask & (1 << ci))) continue;
        problem *pb = calloc(1, sizeof *pb);
        make_weights(pb, &configs[ci]);
        for (size_t ti = 0; ti < bc.n_ts; ti++) {
            for (size_t hi = 0; hi < bc.n_threads; hi++) {
                sg_context *ctx;
                if (sg_context_create(&ctx, (int)bc.threads[hi]) != SG_OK) {
                    fprintf(stderr, "softgate bench moe: cannot create a context\n");
                    return 1;
                }
                setup_t(ctx, pb, (size_t)bc.ts[ti]);
                bench_case(ctx, &bc, pb, (int)bc.threads[hi]);
                free_t(pb);
                sg_context_destroy(ctx);
            }
        }
        free(pb->weights), free(pb->router);
        free(pb);
    }
    return 0;
}

/*
 * bench_route.c - `softgate bench route`: the routers' time per call at
 * decode and prefill sizes, for the configurations the issue names:
 *   mixtral    softmax then top-k, renormalized (SG_GATE_SOFTMAX_TOPK)
 *   deepseek   DeepSeek-V3: sigmoid, selection bias, group-limited
 *              (n_group 8 or 4, topk_group 4 or 2), routed scale 2.5
 *   expert     expert choice, capacity factor 1 (C = ceil(T / E))
 *   switch     Switch top-1 with capacity (factor 1.25, drop by token)
 *   zloss      the router z-loss (no gradient)
 * at (E, K) in {(8, 2), (64, 6), (256, 8)} (switch: K = 1) and T in
 * {1, 4, 16, 512, 4096}, every call on fresh rows from a 16 MiB pool of
 * N(0, 1) logits. Each figure is a median over interleaved repetitions; the ratios to PyTorch come from bench/compare/
 * bench_route_torch.py, which runs this benchmark and torch side by side.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

#define MAX_LIST 16
#define POOL_ELEMS ((size_t)4 << 20) /* 16 MiB of logits */

enum { R_MIXTRAL, R_DEEPSEEK, R_EXPERT, R_SWITCH, R_ZLOSS, N_ROUTERS };
static const char *const router_names[] = {"mixtral", "deepseek", "expert", "switch", "zloss"};

typedef struct route_cfg {
    int json, reps, threads, best;
    long ts[MAX_LIST], es[MAX_LIST], ks[MAX_LIST];
    size_t n_ts, n_ek;
    int routers[N_ROUTERS];
} route_cfg;

static void quick(void *reps) { *(int *)reps = 3; }

/* Returns SG_BENCH_RUN, or the exit status after --help or bad usage. */
static int parse_args(int argc, char **argv, route_cfg *c) {
    static const long ts[] = {1, 4, 16, 512, 4096}, es[] = {8, 64, 256}, ks[] = {2, 6, 8};
    memset(c, 0, sizeof *c);
    c->reps = 7, c->threads = 1;
    memcpy(c->ts, ts, sizeof ts), c->n_ts = 5;
    memcpy(c->es, es, sizeof es), memcpy(c->ks, ks, sizeof ks), c->n_ek = 3;
    for (int r = 0; r < N_ROUTERS; r++) c->routers[r] = 1;
    size_t ne = 3, nk = 3;
    const sg_bench_opt opts[] = {
        SG_BENCH_OPT("--json", SG_OPT_FLAG, &c->json, "JSON lines instead of the table"),
        SG_BENCH_OPT("--quick", SG_OPT_ACTION, &c->reps, "3 repetitions", .action = quick),
        SG_BENCH_OPT("--t", SG_OPT_LIST, c->ts, "tokens per call", .count = &c->n_ts, .max = MAX_LIST, .lo = 1,
                     .hi = SG_BENCH_MAX_COUNT),
        SG_BENCH_OPT("--e", SG_OPT_LIST, c->es, "experts, paired with --k", .count = &ne, .max = MAX_LIST,
                     .lo = 1, .hi = SG_BENCH_MAX_COUNT),
        SG_BENCH_OPT("--k", SG_OPT_LIST, c->ks, "experts per token, one per --e value", .count = &nk,
                     .max = MAX_LIST, .lo = 1, .hi = SG_BENCH_MAX_COUNT),
        SG_BENCH_OPT("--router", SG_OPT_SET, c->routers, "routers to time", .names = router_names,
                     .n_names = N_ROUTERS),
        SG_BENCH_OPT("--threads", SG_OPT_INT, &c->threads, "threads", .lo = 1, .hi = SG_BENCH_MAX_THREADS),
        SG_BENCH_OPT("--reps", SG_OPT_INT, &c->reps, "repetitions, interleaved", .arg = "R", .lo = 1, .hi = 64),
        SG_BENCH_OPT("--best", SG_OPT_FLAG, &c->best, "report the fastest repetition instead of the median "
                     "(on a machine shared with other jobs, where medians measure the preemptions)"),
    };
    int rc = sg_bench_options("route", opts, sizeof opts / sizeof opts[0], argc, argv);
    if (rc == SG_BENCH_RUN && ne != nk)
        return sg_bench_bad_usage("route", "--e and --k need as many values (%zu and %zu)", ne, nk);
    c->n_ek = ne;
    for (size_t i = 0; rc == SG_BENCH_RUN && i < ne; i++)
        if (c->ks[i] > c->es[i]) return sg_bench_bad_usage("route", "k = %ld > e = %ld", c->ks[i], c->es[i]);
    return rc;
}

typedef struct problem {
    size_t t, e, k;
    const float *x;    /* the current window of t rows */
    const float *pool; /* windows of t rows, used in turn */
    size_t windows, next;
    float *bias, *w, *p;
    int32_t *ids, *pos;
    sg_gate_config mixtral, deepseek, sw;
    size_t ec_c, sw_cap;
} problem;

static void setup(sg_context *ctx, problem *pb) {
    pb->mixtral = sg_gate_config_default(SG_GATE_SOFTMAX_TOPK);
    pb->mixtral.k = pb->k, pb->mixtral.renormalize = 1;
    pb->deepseek = sg_gate_config_default(SG_GATE_SIGMOID_TOPK);
    pb->deepseek.k = pb->k, pb->deepseek.bias = pb->bias, pb->deepseek.routed_scale = 2.5f;
    pb->deepseek.n_group = pb->e >= 64 ? 8 : 4;
    pb->deepseek.topk_group = pb->e >= 64 ? 4 : 2;
    pb->sw = sg_gate_config_default(SG_GATE_SOFTMAX_TOPK);
    pb->sw.k = 1;
    if (sg_expert_choice_capacity(ctx, 1.0f, pb->t, pb->e, &pb->ec_c) != SG_OK ||
        sg_route_capacity(ctx, 1.25f, pb->t, 1, pb->e, &pb->sw_cap) != SG_OK) {
        fprintf(stderr, "softgate bench: %s\n", sg_context_error(ctx));
        exit(1);
    }
}

static sg_status run(sg_context *ctx, int router, problem *pb) {
    const size_t t = pb->t, e = pb->e, k = pb->k;
    float loss;
    sg_status st;
    switch (router) {
    case R_MIXTRAL: return sg_gate_f32(ctx, &pb->mixtral, t, e, pb->x, e, pb->ids, k, pb->w, k, NULL, 0);
    case R_DEEPSEEK: return sg_gate_f32(ctx, &pb->deepseek, t, e, pb->x, e, pb->ids, k, pb->w, k, NULL, 0);
    case R_EXPERT:
        return sg_gate_expert_choice_f32(ctx, t, e, pb->x, e, 1.0f, pb->ec_c, pb->ids, pb->ec_c, pb->w,
                                         pb->ec_c, NULL, 0);
    case R_SWITCH:
        st = sg_gate_f32(ctx, &pb->sw, t, e, pb->x, e, pb->ids, 1, pb->w, 1, NULL, 0);
        if (st != SG_OK) return st;
        return sg_route_apply_capacity_f32(ctx, t, 1, e, pb->ids, 1, pb->w, 1, pb->sw_cap, SG_DROP_BY_TOKEN, 0,
                                           pb->pos, 1, NULL);
    case R_ZLOSS: return sg_route_z_loss_f32(ctx, t, e, pb->x, e, &loss, NULL, 0);
    }
    return SG_ERR_ARGUMENT;
}

/* Seconds per call: repeated until about 1 ms has passed. Each call
 * takes the next window of t fresh rows from the pool (as decode steps see
 * new tokens): repeating one small input would let the branch predictor
 * learn its routes and flatter every router. */
static double time_router(sg_context *ctx, int router, problem *pb) {
    int iters = 0;
    double t0 = sg_bench_now(), el;
    do {
        pb->x = pb->pool + pb->next * pb->t * pb->e;
        pb->next = pb->next + 1 < pb->windows ? pb->next + 1 : 0;
        if (run(ctx, router, pb) != SG_OK) {
            fprintf(stderr, "softgate bench: %s\n", sg_context_error(ctx));
            exit(1);
        }
        iters++;
        el = sg_bench_now() - t0;
    } while (el < 1e-3);
    return el / iters;
}

/* Before timing: the Mixtral gate's first row against a double softmax
 * top-k, so a wrong router never produces a number. */
static void check_once(sg_context *ctx, problem *pb) {
    run(ctx, R_MIXTRAL, pb);
    const float *x = pb->x;
    double mx = -INFINITY, sel = 0.0;
    for (size_t i = 0; i < pb->e; i++) mx = fmax(mx, x[i]);
    for (size_t l = 0; l < pb->k; l++) sel += exp(x[pb->ids[l]] - mx);
    for (size_t l = 0; l < pb->k; l++) {
        int32_t id = pb->ids[l];
        size_t above = 0;
        for (size_t i = 0; i < pb->e; i++) above += x[i] > x[id];
        double want = exp(x[id] - mx) / sel;
        if (above != l || fabs(pb->w[l] - want) > 1e-5 * want) {
            fprintf(stderr, "softgate bench: the mixtral gate is wrong at e=%zu; refusing to time it\n", pb->e);
            exit(1);
        }
    }
}

SG_BENCH(route, "MoE routers (softmax-top-k, DeepSeek-V3, expert choice, Switch capacity, z-loss), time per call") {
    route_cfg c;
    int rc = parse_args(argc, argv, &c);
    if (rc != SG_BENCH_RUN) return rc;
    sg_context *ctx;
    if (sg_context_create(&ctx, c.threads) != SG_OK) {
        fprintf(stderr, "softgate bench: cannot create a context\n");
        return 1;
    }
    size_t tmax = 0, emax = 0;
    for (size_t i = 0; i < c.n_ts; i++) tmax = (size_t)c.ts[i] > tmax ? (size_t)c.ts[i] : tmax;
    for (size_t i = 0; i < c.n_ek; i++) emax = (size_t)c.es[i] > emax ? (size_t)c.es[i] : emax;
    /* a pool of logits of at least 16 MiB (and at least one window) */
    const size_t pool_elems = tmax * emax > POOL_ELEMS ? tmax * emax : POOL_ELEMS;
    float *x = sg_bench_alloc(pool_elems * sizeof(float));
    float *bias = sg_bench_alloc(emax * sizeof(float));
    float *w = sg_bench_alloc(tmax * emax * sizeof(float));
    int32_t *ids = sg_bench_alloc(tmax * emax * sizeof(int32_t));
    int32_t *pos = sg_bench_alloc(tmax * sizeof(int32_t));
    sg_bench_fill_normal(x, pool_elems, 1.0f, 7);
    sg_bench_fill_normal(bias, emax, 0.05f, 8);
    if (!c.json) {
        printf("# softgate %s, isa %s, %d thread(s); microseconds per call (%s of %d)\n",
               SG_VERSION_STRING, sg_isa_name(sg_active_isa()), c.threads, c.best ? "best" : "median",
               c.reps);
        printf("%-9s %5s %3s %6s %11s %9s\n", "router", "E", "K", "T", "us/call", "ns/token");
    }
    for (size_t ek = 0; ek < c.n_ek; ek++)
        for (size_t ti = 0; ti < c.n_ts; ti++) {
            problem pb;
            memset(&pb, 0, sizeof pb);
            pb.t = (size_t)c.ts[ti], pb.e = (size_t)c.es[ek], pb.k = (size_t)c.ks[ek];
            pb.x = pb.pool = x, pb.bias = bias, pb.w = w, pb.ids = ids, pb.pos = pos;
            pb.windows = pool_elems / (pb.t * pb.e);
            pb.windows = pb.windows > 4096 ? 4096 : pb.windows;
            setup(ctx, &pb);
            check_once(ctx, &pb);
            double tm[N_ROUTERS][64];
            for (int rep = 0; rep < c.reps; rep++)
                for (int r = 0; r < N_ROUTERS; r++)
                    if (c.routers[r]) tm[r][rep] = time_router(ctx, r, &pb);
            for (int r = 0; r < N_ROUTERS; r++) {
                if (!c.routers[r]) continue;
                double us = sg_bench_median(tm[r], (size_t)c.reps) * 1e6; /* sorts tm[r] */
                if (c.best) us = tm[r][0] * 1e6;
                size_t kk = r == R_SWITCH ? 1 : r == R_ZLOSS || r == R_EXPERT ? 0 : pb.k;
                if (c.json)
                    printf("{\"bench\":\"route\",\"router\":\"%s\",\"e\":%zu,\"k\":%zu,\"t\":%zu,\"threads\":%d,"
                           "\"isa\":\"%s\",\"us\":%.4f}\n",
                           router_names[r], pb.e, kk, pb.t, c.threads, sg_isa_name(sg_active_isa()), us);
                else
                    printf("%-9s %5zu %3zu %6zu %11.3f %9.1f\n", router_names[r], pb.e, kk, pb.t, us,
                           us * 1e3 / (double)pb.t);
                fflush(stdout);
            }
        }
    free(x), free(bias), free(w), free(ids), free(pos);
    sg_context_destroy(ctx);
    return 0;
}

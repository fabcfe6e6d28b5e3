/*
 * bench_mixture.c - `softgate bench mixture`: time of an EM fit of a
 * softmax-gated Gaussian mixture of experts (include/softgate/mixture.h)
 * on data simulated from known parameters, default n = 100,000, p = 10,
 * E = 4. Reported: the fit's wall time, iterations, time per iteration and,
 * as a ratio measured in the same run, time per iteration over the time of
 * one OpenBLAS dgemm forming the design's Gram matrix Z'Z (q x n x q, the
 * inner products that one weighted least-squares expert update needs).
 * Fits and dgemm runs are interleaved; medians over --reps repetitions.
 */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

static unsigned long long bench_state;
static double bench_u(void) {
    bench_state = bench_state * 6364136223846793005ull + 1442695040888963407ull;
    return ((double)(bench_state >> 11) + 0.5) * 0x1.0p-53;
}
static double bench_n01(void) {
    return sqrt(-2 * log(bench_u())) * cos(6.283185307179586 * bench_u());
}

/* y from E Gaussian experts with slopes on every feature, gate on x0, x1. */
static void simulate(size_t n, size_t p, int E, double *x, double *y) {
    bench_state = 12345;
    for (size_t i = 0; i < n; i++) {
        double *xi = x + i * p, l[64], mx = -INFINITY, s = 0;
        for (size_t j = 0; j < p; j++) xi[j] = bench_n01();
        for (int k = 0; k < E; k++) {
            double ang = 6.283185307179586 * k / E;
            l[k] = 3.0 * (cos(ang) * xi[0] + sin(ang) * (p > 1 ? xi[1] : 0));
            mx = fmax(mx, l[k]);
        }
        for (int k = 0; k < E; k++) s += exp(l[k] - mx);
        double u = bench_u() * s, c = 0;
        int kk = E - 1;
        for (int k = 0; k < E; k++)
            if (u < (c += exp(l[k] - mx))) {
                kk = k;
                break;
            }
        double mu = 2.0 * kk;
        for (size_t j = 0; j < p; j++) mu += ((kk + (int)j) % 3 - 1) * 0.8 * xi[j];
        y[i] = mu + 0.5 * bench_n01();
    }
}

struct mix_quick {
    size_t *n;
    int *reps;
};
static void quick(void *arg) {
    struct mix_quick *q = arg;
    *q->n = 20000, *q->reps = 1;
}

SG_BENCH(mixture, "EM fit of a softmax-gated Gaussian mixture of experts (n=1e5, p=10, E=4)") {
    size_t n = 100000, p = 10;
    int E = 4, reps = 3, json = 0, restarts = 1, escape = 1, accel = 1;
    struct mix_quick quick_to = {&n, &reps};
    const sg_bench_opt opts[] = {
        SG_BENCH_OPT("--json", SG_OPT_FLAG, &json, "one JSON line instead of the table"),
        SG_BENCH_OPT("--quick", SG_OPT_ACTION, &quick_to, "n = 20000 and 1 repetition", .action = quick),
        SG_BENCH_OPT("--n", SG_OPT_SIZE, &n, "observations", .lo = 100, .hi = SG_BENCH_MAX_COUNT),
        SG_BENCH_OPT("--p", SG_OPT_SIZE, &p, "features", .arg = "P", .lo = 1, .hi = 200),
        SG_BENCH_OPT("--experts", SG_OPT_INT, &E, "experts", .arg = "E", .lo = 1, .hi = 64),
        SG_BENCH_OPT("--restarts", SG_OPT_INT, &restarts, "EM starts per fit", .arg = "R", .lo = 1, .hi = SG_BENCH_MAX_COUNT),
        SG_BENCH_OPT("--reps", SG_OPT_INT, &reps, "repetitions (fits and dgemm runs interleaved)", .arg = "R",
                     .lo = 1, .hi = SG_BENCH_MAX_COUNT),
        SG_BENCH_OPT("--no-escape", SG_OPT_CLEAR, &escape, "no split-and-merge escape step"),
        SG_BENCH_OPT("--no-accel", SG_OPT_CLEAR, &accel, "no SQUAREM acceleration of EM"),
    };
    int rc = sg_bench_options("mixture", opts, sizeof opts / sizeof opts[0], argc, argv);
    if (rc != SG_BENCH_RUN) return rc;
    size_t q = p + 1;
    double *x = sg_bench_alloc(n * p * sizeof *x), *y = sg_bench_alloc(n * sizeof *y);
    double *z = sg_bench_alloc(n * q * sizeof *z), *gram = sg_bench_alloc(q * q * sizeof *gram);
    simulate(n, p, E, x, y);
    for (size_t i = 0; i < n; i++) {
        z[i * q] = 1;
        memcpy(z + i * q + 1, x + i * p, p * sizeof *x);
    }
    sg_context *ctx = NULL;
    if (sg_context_create(&ctx, 1) != SG_OK) return 1;
    double *tf = calloc((size_t)reps, sizeof *tf), *ti = calloc((size_t)reps, sizeof *ti);
    double *tg = calloc((size_t)reps, sizeof *tg);
    sg_mix_info info;
    memset(&info, 0, sizeof info);
    for (int r = 0; r < reps; r++) {
        double t0 = sg_bench_now();
        for (int k = 0; k < 20; k++)
            cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)q, (int)q, (int)n, 1.0, z,
                        (int)q, z, (int)q, 0.0, gram, (int)q);
        tg[r] = (sg_bench_now() - t0) / 20;
        sg_mix_spec sp = sg_mix_spec_default();
        sp.experts = E, sp.restarts = restarts, sp.init = SG_MIX_INIT_KMEANS;
        sp.escape = escape, sp.accelerate = accel;
        sg_mix_model *m = NULL;
        t0 = sg_bench_now();
        sg_status st = sg_mix_fit(ctx, &sp, n, p, x, p, y, NULL, &m);
        tf[r] = sg_bench_now() - t0;
        if (st != SG_OK) {
            fprintf(stderr, "bench mixture: %s\n", sg_context_error(ctx));
            return 1;
        }
        sg_mix_model_info(m, &info);
        ti[r] = tf[r] / (info.iterations > 0 ? info.iterations : 1);
        sg_mix_model_free(m);
    }
    double fit = sg_bench_median(tf, (size_t)reps), iter = sg_bench_median(ti, (size_t)reps);
    double gemm = sg_bench_median(tg, (size_t)reps);
    if (json)
        printf("{\"bench\": \"mixture\", \"n\": %zu, \"p\": %zu, \"experts\": %d, \"restarts\": %d, "
               "\"fit_s\": %.4f, \"iterations\": %d, \"iter_s\": %.6f, \"gram_dgemm_s\": %.6f, "
               "\"iter_over_gram\": %.2f, \"loglik\": %.6f, \"converged\": %d, \"grad_norm\": %.3g}\n",
               n, p, E, restarts, fit, info.iterations, iter, gemm, iter / gemm, info.loglik,
               info.converged, info.grad_norm);
    else {
        printf("mixture of experts EM fit: Gaussian experts, softmax gate, k-means start\n");
        printf("%8s %4s %3s %8s %6s %10s %12s %10s %10s %5s %9s\n", "n", "p", "E", "fit s", "iters",
               "s/iter", "Z'Z dgemm s", "iter/gram", "loglik", "conv", "grad");
        printf("%8zu %4zu %3d %8.3f %6d %10.5f %12.6f %10.1f %10.1f %5d %9.2e\n", n, p, E, fit,
               info.iterations, iter, gemm, iter / gemm, info.loglik, info.converged, info.grad_norm);
    }
    free(tf), free(ti), free(tg), free(x), free(y), free(z), free(gram);
    sg_context_destroy(ctx);
    return 0;
}

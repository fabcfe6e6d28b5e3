/*
 * test_softmax_ops.c - the public softmax-core ops under the ISA chosen by
 * SOFTGATE_ISA: accuracy against a double-precision reference within the
 * documented bound, backward passes against central finite differences,
 * identical bits for every thread count, the context's thread runner.
 */
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"

#define U 0x1p-24 /* float unit roundoff */

static const sg_softmax_algorithm algos[] = {SG_SOFTMAX_AUTO, SG_SOFTMAX_THREE_PASS,
                                             SG_SOFTMAX_TWO_PASS, SG_SOFTMAX_ONLINE};
#define N_ALGOS 4

static sg_softmax_options opts(sg_softmax_algorithm a, float t) {
    sg_softmax_options o = sg_softmax_options_default();
    o.algorithm = a;
    o.temperature = t;
    return o;
}

/* Double-precision reference of row x/T: max, sum of exp((x - max)/T). */
static void ref_stats(const float *x, size_t n, double t, double *mx, double *sum) {
    *mx = -INFINITY;
    for (size_t i = 0; i < n; i++) *mx = x[i] > *mx ? x[i] : *mx;
    *sum = 0.0;
    for (size_t i = 0; i < n; i++) *sum += exp(((double)x[i] - *mx) / t);
}

/*
 * The documented error bound (docs/KERNELS.md): the relative error of
 * softmax output i is at most (2 D_i + 16) u, D_i = |x_i - max| / T (the
 * rounding of the difference), plus |x_i| / T for the two-pass algorithm
 * when T != 1 (1/T is rounded). Log-softmax: absolute error at most
 * (2 D_i + |y_i| + 16) u. Logsumexp: (|lse| + 2 X + 16) u, X = max |x_i| / T
 * for the two-pass algorithm when T != 1, else 0.
 */
static double bound_d(sg_softmax_algorithm a, float x, double mx, float t) {
    double d = fabs((double)x - mx) / t;
    if (a == SG_SOFTMAX_TWO_PASS && t != 1.0f) d += fabs((double)x) / t;
    return d;
}

typedef struct acc_stats {
    double worst_rel, worst_sum_dev, worst_log_rel;
} acc_stats;

/* Runs the three ops on rows x [rows x n] and checks them; returns the
 * worst observed errors for the summary checks. */
static void check_rows(sg_context *ctx, const float *x, size_t rows, size_t n, sg_softmax_algorithm a,
                       float t, const char *what, acc_stats *st) {
    float *y = malloc(rows * n * sizeof *y), *ly = malloc(rows * n * sizeof *ly);
    float *lse = malloc(rows * sizeof *lse);
    sg_softmax_options o = opts(a, t);
    CHECK(sg_softmax_f32(ctx, rows, n, x, n, y, n, &o) == SG_OK, "softmax %s", what);
    CHECK(sg_log_softmax_f32(ctx, rows, n, x, n, ly, n, &o) == SG_OK, "log_softmax %s", what);
    CHECK(sg_logsumexp_f32(ctx, rows, n, x, n, lse, &o) == SG_OK, "logsumexp %s", what);
    const char *an = sg_softmax_algorithm_name(a);
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * n;
        double mx, sum, total = 0.0;
        ref_stats(xr, n, t, &mx, &sum);
        int reported = 0;
        for (size_t i = 0; i < n; i++) {
            double d = ((double)xr[i] - mx) / t, ref = exp(d) / sum, lref = d - log(sum);
            double yi = y[r * n + i], bd = bound_d(a, xr[i], mx, t);
            total += yi;
            if (ref > 1e-30) {
                double e = test_rel(yi, ref);
                st->worst_rel = e > st->worst_rel ? e : st->worst_rel;
                if (!(e <= (2 * bd + 16) * U) && reported++ < 3)
                    CHECK(0, "softmax %s %s n=%zu row %zu i=%zu: rel err %.3g > bound %.3g (y %g ref %g)",
                          an, what, n, r, i, e, (2 * bd + 16) * U, yi, ref);
            } else {
                CHECK(fabs(yi) <= 1e-30, "softmax %s %s n=%zu i=%zu: tiny ref %g got %g", an, what, n, i,
                      ref, yi);
            }
            double le = fabs(ly[r * n + i] - lref);
            double lrel = le / fmax(1.0, fabs(lref));
            st->worst_log_rel = lrel > st->worst_log_rel ? lrel : st->worst_log_rel;
            if (!(le <= (2 * bd + fabs(lref) + 16) * U) && reported++ < 3)
                CHECK(0, "log_softmax %s %s n=%zu i=%zu: abs err %.3g (y %g ref %g)", an, what, n, i, le,
                      ly[r * n + i], lref);
        }
        double dev = fabs(total - 1.0);
        st->worst_sum_dev = dev > st->worst_sum_dev ? dev : st->worst_sum_dev;
        double lse_ref = mx / t + log(sum), xmax = 0.0;
        if (a == SG_SOFTMAX_TWO_PASS && t != 1.0f)
            for (size_t i = 0; i < n; i++) xmax = fmax(xmax, fabs((double)xr[i]) / t);
        CHECK(fabs(lse[r] - lse_ref) <= (fabs(lse_ref) + 2 * xmax + 16) * U, "logsumexp %s %s n=%zu row %zu: %.9g vs %.9g",
              an, what, n, r, lse[r], lse_ref);
    }
    free(y), free(ly), free(lse);
}

static float *random_rows(size_t rows, size_t n, double scale, double offset, uint64_t seed) {
    float *x = malloc(rows * n * sizeof *x);
    test_rng rng = test_rng_seed(seed);
    for (size_t i = 0; i < rows * n; i++) x[i] = (float)(offset + scale * test_normal(&rng));
    return x;
}

TEST(ops_accuracy_within_documented_bound) {
    sg_context *ctx = test_context(2);
    static const size_t ns[] = {1, 2, 5, 8, 15, 16, 17, 31, 32, 33, 64, 65, 100, 127, 128, 129,
                                1000, 1024, 4097, 70000};
    static const double scales[] = {1.0, 10.0, 100.0, 1e4};
    static const float temps[] = {1.0f, 0.5f, 3.0f};
    acc_stats st = {0, 0, 0};
    for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++) {
        size_t n = ns[ni];
        if (test_quick && n > 5000) continue;
        size_t rows = n > 5000 ? 2 : 6;
        for (size_t si = 0; si < 4; si++)
            for (size_t ti = 0; ti < 3; ti++) {
                float *x = random_rows(rows, n, scales[si], 0.0, n * 31 + si * 7 + ti);
                char what[64];
                snprintf(what, sizeof what, "scale=%g T=%g", scales[si], (double)temps[ti]);
                for (int a = 0; a < N_ALGOS; a++) check_rows(ctx, x, rows, n, algos[a], temps[ti], what, &st);
                free(x);
            }
    }
    CHECK(st.worst_sum_dev <= 1e-6, "a row sums to 1 +- %.3g", st.worst_sum_dev);
    sg_context_destroy(ctx);
}

/*
 * The plain target of the foundation issue: rows of N(0,1) * 10 up to
 * n = 1e5: worst relative error of outputs above 1e-30 no worse than
 * PyTorch's, rows summing to 1 within 1e-6, log-softmax absolute error
 * within 2e-6 * max(1, |y|). Both libraries round d = x - max to float, so
 * the worst case approaches half an ulp of d at |d| just below 2^7, i.e.
 * 2^-18 = 3.81e-6, plus the exponential's own error. PyTorch 1.13
 * (torch.softmax, 1 thread) shows 4.0e-6 (n = 1e3), 4.2e-6 (1e4) and
 * 4.7e-6 (1e5) on such rows here (bench/compare/accuracy_torch.py); ours
 * adds at most 0.3e-6 to the 3.81e-6, so we require 4.1e-6 at every n.
 */
#define PYTORCH_WORST_REL 4.1e-6
TEST(ops_accuracy_matches_pytorch_target) {
    sg_context *ctx = test_context(2);
    size_t nmax = test_quick ? 10000 : 100000;
    for (int a = 0; a < N_ALGOS; a++)
        for (size_t n = 10; n <= nmax; n *= 10) {
            acc_stats st = {0, 0, 0};
            size_t rows = n >= 100000 ? 2 : 20;
            float *x = random_rows(rows, n, 10.0, 0.0, n + (size_t)a);
            check_rows(ctx, x, rows, n, algos[a], 1.0f, "N(0,100)", &st);
            const char *an = sg_softmax_algorithm_name(algos[a]);
            CHECK(st.worst_rel <= PYTORCH_WORST_REL, "%s n=%zu: worst rel err %.3g > %.3g", an, n,
                  st.worst_rel, PYTORCH_WORST_REL);
            CHECK(st.worst_sum_dev <= 1e-6, "%s n=%zu: row sum off by %.3g", an, n, st.worst_sum_dev);
            CHECK(st.worst_log_rel <= 2e-6, "%s n=%zu: log-softmax err %.3g", an, n, st.worst_log_rel);
            free(x);
        }
    sg_context_destroy(ctx);
}

TEST(ops_accuracy_large_offsets_and_two_pass_domain) {
    sg_context *ctx = test_context(1);
    acc_stats st = {0, 0, 0};
    /* Offsets large enough that exp(x) overflows without care; entries
     * spaced so that they stay distinct in float32. */
    static const double offsets[] = {1e3, -1e5, 3e6, 3e7, -2e8, 3e38};
    for (size_t oi = 0; oi < sizeof offsets / sizeof offsets[0]; oi++) {
        size_t n = 300;
        float *x = malloc(n * sizeof *x);
        double spacing = fmax(1.0, fabs(offsets[oi]) * 4 * U);
        test_rng rng = test_rng_seed(oi);
        for (size_t i = 0; i < n; i++)
            x[i] = (float)(offsets[oi] - spacing * (double)(int)(test_uniform(&rng) * 40));
        char what[64];
        snprintf(what, sizeof what, "offset=%g", offsets[oi]);
        for (int a = 0; a < N_ALGOS; a++) check_rows(ctx, x, 1, n, algos[a], 1.0f, what, &st);
        free(x);
    }
    sg_context_destroy(ctx);
}

TEST(ops_long_rows_split_in_chunks) {
    if (test_quick) return;
    sg_context *ctx = test_context(2);
    acc_stats st = {0, 0, 0};
    size_t n = ((size_t)1 << 21) + 77; /* split into chunks, with a tail */
    float *x = random_rows(1, n, 10.0, 0.0, 42);
    for (int a = 0; a < N_ALGOS; a++) check_rows(ctx, x, 1, n, algos[a], 1.0f, "long", &st);
    check_rows(ctx, x, 1, n, SG_SOFTMAX_TWO_PASS, 0.75f, "long T", &st);
    CHECK(st.worst_sum_dev <= 1e-6, "long row sums to 1 +- %.3g", st.worst_sum_dev);
    free(x);
    sg_context_destroy(ctx);
}

/* ---- identical bits for every thread count ----------------------------- */

static void run_all(sg_context *ctx, const float *x, size_t rows, size_t n, sg_softmax_algorithm a,
                    float *out) {
    sg_softmax_options o = opts(a, 0.9f);
    sg_softmax_f32(ctx, rows, n, x, n, out, n, &o);
    sg_log_softmax_f32(ctx, rows, n, x, n, out + rows * n, n, &o);
    sg_logsumexp_f32(ctx, rows, n, x, n, out + 2 * rows * n, &o);
    sg_softmax_backward_f32(ctx, rows, n, out, n, x, n, out + 2 * rows * n + rows, n, &o);
}

TEST(ops_bit_identical_for_every_thread_count) {
    static const size_t shapes[][2] = {{3000, 8}, {300, 1000}, {7, 40000}, {2, ((size_t)1 << 20) + 5}};
    for (size_t si = 0; si < 4; si++) {
        size_t rows = shapes[si][0], n = shapes[si][1];
        if (test_quick && rows * n > 400000) continue;
        float *x = random_rows(rows, n, 5.0, 0.0, si);
        size_t total = 3 * rows * n + rows;
        float *base = malloc(total * sizeof *base), *other = malloc(total * sizeof *other);
        for (int a = 0; a < N_ALGOS; a++) {
            sg_context *one = test_context(1);
            run_all(one, x, rows, n, algos[a], base);
            sg_context_destroy(one);
            static const int threads[] = {2, 3, 5};
            for (int ti = 0; ti < 3; ti++) {
                sg_context *ctx = test_context(threads[ti]);
                memset(other, 0, total * sizeof *other);
                run_all(ctx, x, rows, n, algos[a], other);
                CHECK(memcmp(base, other, total * sizeof *base) == 0, "%s rows=%zu n=%zu threads=%d differ",
                      sg_softmax_algorithm_name(algos[a]), rows, n, threads[ti]);
                sg_context_destroy(ctx);
            }
        }
        free(x), free(base), free(other);
    }
}

/*
 * Short rows pack two per vector on AVX-512: a row's bits must not depend
 * on its partner, on a special row next to it, or on where the rows are cut
 * into tasks (5461 rows per task for n = 3: odd).
 */
TEST(ops_bit_identical_short_rows_with_specials) {
    static const size_t shapes[][2] = {{6000, 3}, {4096, 8}, {3001, 5}, {2000, 16}};
    for (size_t si = 0; si < 4; si++) {
        size_t rows = shapes[si][0], n = shapes[si][1];
        float *x = random_rows(rows, n, 4.0, 0.0, 77 + si);
        x[0] = INFINITY;               /* row 0 special */
        x[5 * n + 1] = NAN;            /* row 5 */
        x[(rows / 2) * n] = INFINITY;  /* a row in the middle */
        x[(rows - 1) * n] = -INFINITY; /* the last row: just a -inf entry */
        size_t total = 3 * rows * n + rows;
        float *base = malloc(total * sizeof *base), *other = malloc(total * sizeof *other);
        sg_context *one = test_context(1), *two = test_context(2), *three = test_context(3);
        run_all(one, x, rows, n, SG_SOFTMAX_AUTO, base);
        run_all(two, x, rows, n, SG_SOFTMAX_AUTO, other);
        CHECK(memcmp(base, other, total * sizeof *base) == 0, "rows=%zu n=%zu: 1 vs 2 threads differ", rows, n);
        run_all(three, x, rows, n, SG_SOFTMAX_AUTO, other);
        CHECK(memcmp(base, other, total * sizeof *base) == 0, "rows=%zu n=%zu: 1 vs 3 threads differ", rows, n);
        /* A row computed alone gives the same bits as inside the batch. */
        float alone[16];
        sg_softmax_options o = opts(SG_SOFTMAX_AUTO, 0.9f);
        sg_softmax_f32(one, 1, n, x + 7 * n, n, alone, n, &o);
        CHECK(memcmp(alone, base + 7 * n, n * sizeof *alone) == 0, "rows=%zu n=%zu: row 7 alone differs", rows, n);
        sg_context_destroy(one), sg_context_destroy(two), sg_context_destroy(three);
        free(x), free(base), free(other);
    }
}

/* ---- backward against central finite differences ---------------------- */

typedef enum { F_SOFTMAX, F_LOG_SOFTMAX, F_LSE } fd_fn;

/* L(x) = sum_i w_i f(x)_i in double, with keep mask and temperature. */
static double loss(fd_fn f, const double *x, const double *w, const uint8_t *keep, size_t n, double t) {
    double mx = -INFINITY, s = 0.0, l = 0.0;
    for (size_t i = 0; i < n; i++)
        if (keep[i]) mx = x[i] / t > mx ? x[i] / t : mx;
    for (size_t i = 0; i < n; i++)
        if (keep[i]) s += exp(x[i] / t - mx);
    if (f == F_LSE) return w[0] * (mx + log(s));
    for (size_t i = 0; i < n; i++)
        if (keep[i]) l += w[i] * (f == F_SOFTMAX ? exp(x[i] / t - mx) / s : x[i] / t - mx - log(s));
    return l;
}

static void check_backward(fd_fn f, size_t n, float t, int masked, uint64_t seed) {
    sg_context *ctx = test_context(1);
    test_rng rng = test_rng_seed(seed);
    float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y), *dy = malloc(n * sizeof *dy);
    float *dx = malloc(n * sizeof *dx);
    double *xd = malloc(n * sizeof *xd), *w = malloc(n * sizeof *w);
    uint8_t *keep = malloc(n);
    for (size_t i = 0; i < n; i++) {
        x[i] = (float)(2.0 * test_normal(&rng));
        dy[i] = (float)test_normal(&rng);
        keep[i] = masked ? test_uniform(&rng) < 0.7 : 1;
        xd[i] = x[i];
        w[i] = dy[i];
    }
    keep[0] = 1;
    sg_softmax_options o = sg_softmax_options_default();
    o.temperature = t;
    if (masked) o.keep_mask = keep;
    float lse, dlse = dy[0];
    sg_status st;
    if (f == F_SOFTMAX) {
        sg_softmax_f32(ctx, 1, n, x, n, y, n, &o);
        st = sg_softmax_backward_f32(ctx, 1, n, y, n, dy, n, dx, n, &o);
    } else if (f == F_LOG_SOFTMAX) {
        sg_log_softmax_f32(ctx, 1, n, x, n, y, n, &o);
        st = sg_log_softmax_backward_f32(ctx, 1, n, y, n, dy, n, dx, n, &o);
    } else {
        sg_logsumexp_f32(ctx, 1, n, x, n, &lse, &o);
        st = sg_logsumexp_backward_f32(ctx, 1, n, x, n, masked ? NULL : &lse, &dlse, dx, n, &o);
    }
    CHECK(st == SG_OK, "backward status %d: %s", (int)st, sg_context_error(ctx));
    static const char *const names[] = {"softmax", "log_softmax", "logsumexp"};
    for (size_t i = 0; i < n; i++) {
        double h = 1e-5, keep_x = xd[i];
        xd[i] = keep_x + h;
        double lp = loss(f, xd, w, keep, n, t);
        xd[i] = keep_x - h;
        double lm = loss(f, xd, w, keep, n, t);
        xd[i] = keep_x;
        double g = keep[i] ? (lp - lm) / (2 * h) : 0.0;
        CHECK(fabs(dx[i] - g) <= 2e-5 * (1.0 + fabs(g)), "%s backward n=%zu T=%g masked=%d i=%zu: %.8g vs fd %.8g",
              names[f], n, (double)t, masked, i, dx[i], g);
        if (!keep[i]) CHECK(dx[i] == 0.0f, "%s backward: removed entry %zu has dx %g", names[f], i, dx[i]);
    }
    free(x), free(y), free(dy), free(dx), free(xd), free(w), free(keep);
    sg_context_destroy(ctx);
}

TEST(ops_backward_matches_finite_differences) {
    static const size_t ns[] = {1, 5, 17, 64, 100, 333};
    static const float temps[] = {1.0f, 0.7f, 2.5f};
    for (int f = F_SOFTMAX; f <= F_LSE; f++)
        for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++)
            for (size_t ti = 0; ti < 3; ti++)
                for (int masked = 0; masked < 2; masked++)
                    check_backward((fd_fn)f, ns[ni], temps[ti], masked, ni * 10 + ti + (uint64_t)f * 100);
}

TEST(ops_logsumexp_backward_saved_equals_recomputed) {
    sg_context *ctx = test_context(2);
    size_t rows = 40, n = 3000;
    float *x = random_rows(rows, n, 3.0, 0.0, 7), *lse = malloc(rows * sizeof *lse);
    float *dlse = malloc(rows * sizeof *dlse), *a = malloc(rows * n * sizeof *a), *b = malloc(rows * n * sizeof *b);
    for (size_t r = 0; r < rows; r++) dlse[r] = 0.5f + (float)r;
    sg_softmax_options o = opts(SG_SOFTMAX_AUTO, 1.0f);
    sg_logsumexp_f32(ctx, rows, n, x, n, lse, &o);
    CHECK(sg_logsumexp_backward_f32(ctx, rows, n, x, n, lse, dlse, a, n, &o) == SG_OK, "saved");
    CHECK(sg_logsumexp_backward_f32(ctx, rows, n, x, n, NULL, dlse, b, n, &o) == SG_OK, "recomputed");
    for (size_t i = 0; i < rows * n; i++)
        CHECK(test_rel(a[i], b[i]) < 1e-5 || fabsf(a[i] - b[i]) < 1e-30f, "i=%zu %g vs %g", i, a[i], b[i]);
    free(x), free(lse), free(dlse), free(a), free(b);
    sg_context_destroy(ctx);
}

/* ---- the context ---------------------------------------------------------- */

typedef struct count_job {
    atomic_int hits[1000];
} count_job;

static void count_task(void *arg, size_t t) {
    count_job *j = arg;
    atomic_fetch_add(&j->hits[t], 1);
}

TEST(context_runs_every_task_once) {
    for (int threads = 1; threads <= 4; threads++) {
        sg_context *ctx = test_context(threads);
        CHECK(sg_context_threads(ctx) == threads, "threads %d", threads);
        count_job *j = calloc(1, sizeof *j);
        for (int round = 0; round < 50; round++) sg_context_run(ctx, 1000, count_task, j);
        for (int t = 0; t < 1000; t++)
            CHECK(atomic_load(&j->hits[t]) == 50, "threads=%d task %d ran %d times", threads, t,
                  atomic_load(&j->hits[t]));
        free(j);
        sg_context_destroy(ctx);
    }
    sg_context *ctx = test_context(0);
    CHECK(sg_context_threads(ctx) >= 1, "default thread count");
    char buf[64];
    CHECK(sg_context_set_workspace(ctx, buf, sizeof buf) == SG_OK, "set workspace");
    CHECK(sg_context_set_workspace(ctx, buf, 0) == SG_ERR_ARGUMENT, "zero-byte workspace rejected");
    CHECK(sg_context_set_workspace(ctx, NULL, 0) == SG_OK, "back to managed workspace");
    sg_context_destroy(ctx);
    CHECK(sg_context_create(NULL, 1) == SG_ERR_ARGUMENT, "NULL out pointer");
    sg_context *bad = (sg_context *)&buf;
    CHECK(sg_context_create(&bad, -1) == SG_ERR_ARGUMENT && bad == NULL, "negative threads");
}

/* ---- regressions from review ------------------------------------------ */

TEST(ops_huge_values_with_extreme_temperatures) {
    sg_context *ctx = test_context(1);
    /* f64: x/T overflows double for T < 1, x differences do not. */
    double xd[3] = {1e308, 1e308, 0.0}, yd[3], lse;
    sg_softmax_options o = opts(SG_SOFTMAX_AUTO, 0.5f);
    CHECK(sg_softmax_f64(ctx, 1, 3, xd, 3, yd, 3, &o) == SG_OK, "f64 status");
    CHECK(yd[0] == 0.5 && yd[1] == 0.5 && yd[2] == 0.0, "f64 T=0.5 huge: %g %g %g", yd[0], yd[1], yd[2]);
    CHECK(sg_logsumexp_f64(ctx, 1, 3, xd, 3, &lse, &o) == SG_OK && lse == INFINITY,
          "f64 lse beyond double is +inf, got %g", lse);
    /* f32: T = 1e38, x - max overflows float but (x - max) / T is -6. */
    float x[2] = {3e38f, -3e38f}, y[2];
    double want1 = 1.0 / (1.0 + exp(6.0));
    for (int a = 0; a < N_ALGOS; a++) {
        o = opts(algos[a], 1e38f);
        CHECK(sg_softmax_f32(ctx, 1, 2, x, 2, y, 2, &o) == SG_OK, "f32 status");
        CHECK(test_rel(y[1], want1) < 1e-5 && test_rel(y[0], 1.0 - want1) < 1e-6,
              "%s T=1e38: %g %g, want %g", sg_softmax_algorithm_name(algos[a]), y[0], y[1], want1);
    }
    sg_context_destroy(ctx);
}

TEST(ops_logsumexp_backward_per_row_and_masked_zeros) {
    sg_context *ctx = test_context(1);
    float x[8] = {1, 2, 3, 4, 0.5f, 0.25f, INFINITY, 1}, lse[2], dlse[2] = {1.0f, 2.0f}, dx[8], ref[8];
    sg_softmax_options o = opts(SG_SOFTMAX_AUTO, 1.0f);
    sg_logsumexp_f32(ctx, 2, 4, x, 4, lse, &o);
    CHECK(isfinite(lse[0]) && lse[1] == INFINITY, "lse %g %g", lse[0], lse[1]);
    CHECK(sg_logsumexp_backward_f32(ctx, 2, 4, x, 4, lse, dlse, dx, 4, &o) == SG_OK, "status");
    /* Row 0 from its saved value, row 1 recomputed: each as if alone. */
    sg_logsumexp_backward_f32(ctx, 1, 4, x, 4, NULL, dlse, ref, 4, &o);
    for (int i = 0; i < 4; i++) CHECK(test_rel(dx[i], ref[i]) < 1e-5, "row 0 i=%d %g vs %g", i, dx[i], ref[i]);
    CHECK(dx[6] == 2.0f && dx[4] == 0.0f, "row 1 (+inf): %g %g", dx[4], dx[6]);
    /* A removed entry gets exactly 0 even when dlse is inf. */
    uint8_t keep[4] = {1, 0, 1, 1};
    float inf_dlse = INFINITY;
    o.keep_mask = keep;
    CHECK(sg_logsumexp_backward_f32(ctx, 1, 4, x, 4, NULL, &inf_dlse, dx, 4, &o) == SG_OK, "masked");
    CHECK(dx[1] == 0.0f, "removed entry with dlse = inf: %g", dx[1]);
    /* NULL dlse is an argument error. */
    CHECK(sg_logsumexp_backward_f32(ctx, 1, 4, x, 4, NULL, NULL, dx, 4, &o) == SG_ERR_ARGUMENT,
          "NULL dlse");
    sg_context_destroy(ctx);
}

typedef struct nest_job {
    sg_context *ctx;
    atomic_int inner;
} nest_job;

static void inner_task(void *arg, size_t t) {
    (void)t;
    atomic_fetch_add(&((nest_job *)arg)->inner, 1);
}

static void outer_task(void *arg, size_t t) {
    nest_job *j = arg;
    if (t % 16 == 0) sg_context_run(j->ctx, 8, inner_task, j);
}

TEST(context_nested_run_and_limits) {
    nest_job j;
    j.ctx = test_context(2);
    atomic_init(&j.inner, 0);
    sg_context_run(j.ctx, 64, outer_task, &j); /* must not deadlock */
    CHECK(atomic_load(&j.inner) == 4 * 8, "nested tasks ran %d times", atomic_load(&j.inner));
    /* Ops that ignore the algorithm accept any value in it. */
    float y[4] = {0.1f, 0.2f, 0.3f, 0.4f}, dy[4] = {1, 2, 3, 4}, dx[4];
    sg_softmax_options o = sg_softmax_options_default();
    o.algorithm = (sg_softmax_algorithm)99;
    CHECK(sg_softmax_backward_f32(j.ctx, 1, 4, y, 4, dy, 4, dx, 4, &o) == SG_OK, "backward ignores algorithm");
    CHECK(sg_softmax_f32(j.ctx, 1, 4, y, 4, dx, 4, &o) == SG_ERR_ARGUMENT, "forward checks algorithm");
    /* In place over y is allowed with y's stride, refused with another. */
    float yy[8] = {0.1f, 0.2f, 0.3f, 0.4f, 0.25f, 0.25f, 0.25f, 0.25f}, dd[8] = {1, 2, 3, 4, 1, 2, 3, 4};
    o = sg_softmax_options_default();
    CHECK(sg_softmax_backward_f32(j.ctx, 2, 4, yy, 4, dd, 4, yy, 4, &o) == SG_OK, "dx == y");
    CHECK(fabsf(yy[0] - 0.1f * (1.0f - 3.0f)) < 1e-6f, "dx == y value %g", (double)yy[0]);
    CHECK(sg_softmax_backward_f32(j.ctx, 2, 4, yy, 4, dd, 4, yy, 5, &o) == SG_ERR_SHAPE,
          "dx == y with another stride");
    /* A mask whose rows run past the address space. */
    o = sg_softmax_options_default();
    uint8_t keep[4] = {1, 1, 1, 1};
    o.keep_mask = keep;
    o.keep_mask_ld = SIZE_MAX / 2;
    CHECK(sg_softmax_f32(j.ctx, 4, 1, y, 1, dx, 1, &o) == SG_ERR_SHAPE, "mask stride overflow: %s",
          sg_context_error(j.ctx));
    sg_context_destroy(j.ctx);
    sg_context *c = (sg_context *)&j;
    CHECK(sg_context_create(&c, SG_MAX_THREADS + 1) == SG_ERR_ARGUMENT && c == NULL, "thread cap");
}

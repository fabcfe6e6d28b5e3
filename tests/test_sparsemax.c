/*
 * test_sparsemax.c - sparsemax, its backward pass and the sparsemax loss
 * (include/softgate.h, section 4), through the public API (and the
 * internal threshold solver, to force its bisection fallback). The
 * reference is the paper's sort-based formula in double, written here:
 * sort z descending, k = max{j : 1 + j z_(j) > sum_{i<=j} z_(i)},
 * tau = (sum_{i<=k} z_(i) - 1) / k.
 *
 * Tests (all named sparsemax_*, so --filter sparsemax runs this file):
 *   sparsemax_forward_reference    random rows N = 1..1000 (and 1e5), scales
 *                                  0.01..100, T in {0.5, 1, 3}: values,
 *                                  simplex, exact zeros
 *   sparsemax_properties           shift invariance, T -> 0 and T -> inf
 *   sparsemax_threshold_paths      the threshold solver with Michelot's cap
 *                                  forced to 0, 1, 2 (bisection) and 32
 *   sparsemax_ties                 ties, entries exactly at tau
 *   sparsemax_backward_fd          backward against central differences
 *   sparsemax_loss_reference_fd    loss and gradient: reference and
 *                                  central differences; dx == NULL
 *   sparsemax_masks                keep and add masks, per row and broadcast
 *   sparsemax_special_values       the header's table, row by row
 *   sparsemax_special_loss_and_huge  loss special values; |x| near FLT_MAX
 *   sparsemax_args_errors          statuses, messages, untouched outputs
 *   sparsemax_args_errors_loss     the same for the loss; bad targets
 *   sparsemax_strides_in_place     ld > n with sentinel gaps; in place
 *   sparsemax_threads_identical    1, 2 and 3 threads give the same bits
 */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "normalizers/normalizers_internal.h"
#include "test.h"

/* Documented forward accuracy (absolute, per output). */
#define TOL_P 1e-7
#define SENTINEL (-12345.5f)

/* ---- helpers and the double-precision reference ------------------------ */

/* z of one row in double, -inf where removed (keep 0 or add -inf). */
static void z_row(size_t n, const float *x, const uint8_t *keep, const float *add, double t,
                  double *z) {
    for (size_t i = 0; i < n; i++) {
        int gone = (keep && !keep[i]) || (add && add[i] == -INFINITY);
        z[i] = gone ? -INFINITY : (double)x[i] / t + (add ? (double)add[i] : 0.0);
    }
}

static int cmp_desc(const void *a, const void *b) {
    double u = *(const double *)a, v = *(const double *)b;
    return (u < v) - (u > v);
}

/*
 * Sparsemax of z[n] (finite or -inf, at least one finite) by sorting.
 * Writes p[n]; returns tau relative to the max, *zmax the max. u: scratch
 * of n doubles.
 */
static double ref_sparsemax(size_t n, const double *z, double *p, double *u, double *zmax) {
    double m = -INFINITY;
    for (size_t i = 0; i < n; i++) m = z[i] > m ? z[i] : m;
    size_t f = 0;
    for (size_t i = 0; i < n; i++)
        if (z[i] > -INFINITY) u[f++] = z[i] - m;
    qsort(u, f, sizeof *u, cmp_desc);
    double cum = 0.0, cum_k = 0.0;
    size_t k = 1;
    for (size_t j = 1; j <= f; j++) {
        cum += u[j - 1];
        if (1.0 + (double)j * u[j - 1] > cum) k = j, cum_k = cum;
    }
    double tau = (cum_k - 1.0) / (double)k;
    for (size_t i = 0; i < n; i++) p[i] = z[i] - m > tau ? z[i] - m - tau : 0.0;
    *zmax = m;
    return tau;
}

/* The paper's loss for target k, shift-free: -d_k + 1/2 sum_S (d^2 - tau^2) + 1/2. */
static double ref_loss(size_t n, const double *z, size_t k, double *p, double *u) {
    double m, tau = ref_sparsemax(n, z, p, u, &m), q = 0.0;
    for (size_t i = 0; i < n; i++)
        if (p[i] > 0.0) q += (z[i] - m) * (z[i] - m) - tau * tau;
    return -(z[k] - m) + 0.5 * q + 0.5;
}

/* Smallest |z_i - max - tau| over finite z: how far the row is from a
 * change of support. */
static double support_gap(size_t n, const double *z, double m, double tau) {
    double g = INFINITY;
    for (size_t i = 0; i < n; i++)
        if (z[i] > -INFINITY) g = fmin(g, fabs(z[i] - m - tau));
    return g;
}

typedef struct row_err {
    double worst, worst_sum;
    int reported;
} row_err;

/* Checks one output row y against the reference of z: values within
 * TOL_P, on the simplex, exact zeros below tau and positives above it. */
static void check_row(size_t n, const double *z, const float *y, const char *what, row_err *e) {
    double *p = test_alloc(n * sizeof *p), *u = test_alloc(n * sizeof *u), m, sum = 0.0;
    const double tau = ref_sparsemax(n, z, p, u, &m);
    for (size_t i = 0; i < n; i++) {
        double err = fabs(y[i] - p[i]), d = z[i] - m;
        e->worst = fmax(e->worst, err);
        sum += y[i];
        int bad = !(err <= TOL_P) || !(y[i] >= 0.0f) || (d <= tau - 1e-6 && y[i] != 0.0f) ||
                  (d > tau + 1e-6 && !(y[i] > 0.0f));
        if (bad && e->reported++ < 5)
            CHECK(0, "%s n=%zu i=%zu: y %.9g ref %.9g (d %.9g tau %.9g)", what, n, i, y[i], p[i], d,
                  tau);
    }
    e->worst_sum = fmax(e->worst_sum, fabs(sum - 1.0));
    if (!(fabs(sum - 1.0) <= 1e-6) && e->reported++ < 5)
        CHECK(0, "%s n=%zu: sum %.9g", what, n, sum);
    free(p), free(u);
}

/* Runs the forward op on rows of x [rows x n] and checks every row. */
static void check_forward(sg_context *ctx, size_t rows, size_t n, const float *x, float t,
                          const char *what, row_err *e) {
    float *y = test_alloc(rows * n * sizeof *y);
    double *z = test_alloc(n * sizeof *z);
    sg_softmax_options o = test_temperature(t);
    sg_status st = sg_sparsemax_f32(ctx, rows, n, x, n, y, n, &o);
    CHECK(st == SG_OK, "%s: status %d (%s)", what, (int)st, sg_context_error(ctx));
    for (size_t r = 0; st == SG_OK && r < rows; r++) {
        z_row(n, x + r * n, NULL, NULL, t, z);
        check_row(n, z, y + r * n, what, e);
    }
    free(y), free(z);
}

/* ---- forward against the reference --------------------------------------- */

TEST(sparsemax_forward_reference) {
    sg_context *ctx = test_context(2);
    static const size_t ns[] = {1, 2, 3, 4, 5, 7, 8, 15, 16, 17, 31, 33, 64, 100, 127, 257, 500, 999, 1000};
    static const double scales[] = {0.01, 0.1, 1.0, 10.0, 100.0};
    static const float temps[] = {0.5f, 1.0f, 3.0f};
    row_err e = {0, 0, 0};
    for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++)
        for (size_t si = 0; si < 5; si++)
            for (size_t ti = 0; ti < 3; ti++) {
                size_t n = ns[ni], rows = 4;
                float *x = test_random_f32(rows * n, scales[si], n * 131 + si * 7 + ti);
                char what[80];
                snprintf(what, sizeof what, "scale=%g T=%g", scales[si], (double)temps[ti]);
                check_forward(ctx, rows, n, x, temps[ti], what, &e);
                free(x);
            }
    if (!test_quick) /* one long row: a large support at small scales */
        for (size_t si = 0; si < 5; si++) {
            size_t n = 100000;
            float *x = test_random_f32(n, scales[si], 977 + si);
            check_forward(ctx, 1, n, x, si % 2 ? 1.0f : 3.0f, "long row", &e);
            free(x);
        }
    CHECK(e.worst <= TOL_P, "worst abs error %.3g", e.worst);
    CHECK(e.worst_sum <= 1e-6, "worst row sum deviation %.3g", e.worst_sum);
    sg_context_destroy(ctx);
}

/* ---- properties ---------------------------------------------------------- */

TEST(sparsemax_properties) {
    sg_context *ctx = test_context(1);
    const size_t n = 50;
    float x[50], xs[50], y[50], ys[50];
    test_rng rng = test_rng_seed(5);
    for (int trial = 0; trial < 40; trial++) {
        /* Shift invariance: x on a grid of 1/64, shifted by integers, so
         * the shifted x are exact and only the op's arithmetic differs. */
        const double shift = trial % 2 ? 1000.0 : -131072.0; /* |x + shift| < 2^18 */
        const float t = trial % 3 ? 1.0f : 0.5f;
        for (size_t i = 0; i < n; i++) {
            x[i] = (float)(floor(test_normal(&rng) * 64.0) / 64.0);
            xs[i] = (float)(x[i] + shift);
        }
        sg_softmax_options o = test_temperature(t);
        CHECK(sg_sparsemax_f32(ctx, 1, n, x, n, y, n, &o) == SG_OK, "shift: forward");
        CHECK(sg_sparsemax_f32(ctx, 1, n, xs, n, ys, n, &o) == SG_OK, "shift: forward shifted");
        for (size_t i = 0; i < n; i++)
            CHECK(fabsf(y[i] - ys[i]) <= 1e-7f, "shift %g trial %d i=%zu: %.9g vs %.9g", shift, trial, i,
                  y[i], ys[i]);
        /* T -> 0: one-hot of the max (the max made unique and 1e-3 ahead). */
        size_t b = (size_t)(test_uniform(&rng) * n);
        float top = -INFINITY;
        for (size_t i = 0; i < n; i++) top = i != b && x[i] > top ? x[i] : top;
        x[b] = top + 1e-3f;
        static const float tiny[] = {1e-4f, 1e-12f, 1e-30f};
        o = test_temperature(tiny[trial % 3]);
        CHECK(sg_sparsemax_f32(ctx, 1, n, x, n, y, n, &o) == SG_OK, "T -> 0: forward");
        for (size_t i = 0; i < n; i++)
            CHECK(y[i] == (i == b ? 1.0f : 0.0f), "T=%g i=%zu (max at %zu): %.9g", (double)o.temperature,
                  i, b, y[i]);
        /* T -> inf: z differences vanish, the uniform distribution. */
        o = test_temperature(trial % 2 ? 1e8f : 1e36f);
        CHECK(sg_sparsemax_f32(ctx, 1, n, x, n, y, n, &o) == SG_OK, "T -> inf: forward");
        for (size_t i = 0; i < n; i++)
            CHECK(fabs(y[i] - 1.0 / n) <= 1e-6, "T=%g i=%zu: %.9g", (double)o.temperature, i, y[i]);
    }
    sg_context_destroy(ctx);
}

/* ---- the threshold search: every path, ties ---------------------------- */

/* The op's threshold solver (internal, src/normalizers/sparsemax.c) with
 * Michelot's cap given: float rows never need the op's cap of 32 (about
 * log2 N passes), so the bisection fallback is forced here with caps 0, 1
 * and 2 (bisection from a cold or partly converged start). The solver is
 * declared in normalizers/normalizers_internal.h. */

/* Row family f of length n, relative to its max (exactly 0). */
static void family_row(int f, size_t n, test_rng *rng, float *d) {
    for (size_t i = 0; i < n; i++) {
        const double q = (double)i / (double)n;
        switch (f) {
        case 0: d[i] = (float)(0.01 * test_normal(rng)); break;
        case 1: d[i] = (float)(0.3 * test_normal(rng)); break;
        case 2: d[i] = (float)(3.0 * test_normal(rng)); break;
        case 3: d[i] = (float)-test_uniform(rng); break;
        case 4: d[i] = (float)-pow(q, 0.05 + 10 * (double)(n % 7) / 7); break;
        case 5: d[i] = (float)(-0.25 * (double)(int)(test_uniform(rng) * 4)); break; /* ties */
        default: d[i] = test_uniform(rng) < 0.3 ? -INFINITY : (float)test_normal(rng); break;
        }
    }
    d[(size_t)(test_uniform(rng) * (double)n)] = 1e30f; /* a sure max */
    float m = -INFINITY;
    for (size_t i = 0; i < n; i++) m = d[i] < 1e30f && d[i] > m ? d[i] : m;
    for (size_t i = 0; i < n; i++)
        d[i] = d[i] == 1e30f ? 0.0f : d[i] == -INFINITY ? -INFINITY : (float)((double)d[i] - m - 0.01);
}

TEST(sparsemax_threshold_paths) {
    static const size_t ns[] = {1, 2, 5, 64, 1000, 20000};
    static const int caps[] = {0, 1, 2, 32};
    test_rng rng = test_rng_seed(3);
    const size_t nmax = 20000;
    float *d = test_alloc(nmax * sizeof *d);
    double *z = test_alloc(nmax * sizeof *z), *p = test_alloc(nmax * sizeof *p), *u = test_alloc(nmax * sizeof *u);
    for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++)
        for (int f = 0; f < 7; f++)
            for (int rep = 0; rep < 3; rep++) {
                const size_t n = ns[ni];
                family_row(f, n, &rng, d);
                double m;
                for (size_t i = 0; i < n; i++) z[i] = d[i];
                const double ref = ref_sparsemax(n, z, p, u, &m);
                for (int c = 0; c < 4; c++) {
                    double tau = sg_sparsemax_tau_f32(d, n, caps[c]);
                    CHECK(fabs(tau - ref) <= 1e-12, "family %d n=%zu cap %d: tau %.17g ref %.17g", f, n,
                          caps[c], tau, ref);
                }
            }
    /* Entries exactly at tau, and ties at the max, through every path. */
    static const float rows[][4] = {
        {0, -0.5f, -0.75f, -3}, /* tau = -0.75: the third entry sits on it */
        {0, -1, -1, -1},        /* tau = -1 */
        {0, 0, 0, 0},           /* tau = -1/4 */
        {0, 0, -0.5f, -INFINITY},
    };
    static const double taus[] = {-0.75, -1.0, -0.25, -0.5};
    for (size_t r = 0; r < 4; r++)
        for (int c = 0; c < 4; c++) {
            double tau = sg_sparsemax_tau_f32(rows[r], 4, caps[c]);
            CHECK(tau == taus[r], "row %zu cap %d: tau %.17g, want %g", r, caps[c], tau, taus[r]);
        }
    free(d), free(z), free(p), free(u);
}

TEST(sparsemax_ties) {
    sg_context *ctx = test_context(1);
    row_err e = {0, 0, 0};
    static const float rows[][6] = {
        {1, 1, 1, 1, 1, 1},        /* all equal: 1/6 each */
        {2, 2, 0, 0, 0, 0},        /* two maxes: 1/2 each */
        {1, 0, 0, 0, 0, 0},        /* z = 0 exactly at tau = 0: exact zeros */
        {0.5f, 0, -1, -2, -3, -4}, /* 0.75, 0.25 */
        {3, 2.5f, 2.25f, 1, 0, 0}, /* z = 2.25 exactly at tau = 2.25 */
        {-1e-30f, 1e-30f, 0, 0, 0, 0},
    };
    for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++)
        check_forward(ctx, 1, 6, rows[r], 1.0f, "ties", &e);
    float out[6];
    CHECK(sg_sparsemax_f32(ctx, 1, 6, rows[2], 6, out, 6, NULL) == SG_OK, "at tau");
    for (size_t i = 0; i < 6; i++) CHECK(out[i] == (i == 0), "at tau: y[%zu] = %.9g", i, out[i]);
    CHECK(sg_sparsemax_f32(ctx, 1, 6, rows[3], 6, out, 6, NULL) == SG_OK, "0.75/0.25");
    CHECK(out[0] == 0.75f && out[1] == 0.25f && out[2] == 0.0f, "0.75/0.25: %.9g %.9g %.9g", out[0],
          out[1], out[2]);
    sg_context_destroy(ctx);
}

/* ---- backward ------------------------------------------------------------ */

/*
 * Column j of the Jacobian dp/dx by central differences of the double
 * reference, dotted with dy: the VJP's entry j. Returns 0 (and skips) if
 * the perturbation changes the support.
 */
static int fd_vjp(size_t n, const float *x, const uint8_t *keep, double t, const float *dy, size_t j,
                  double h, double *out, double *scratch) {
    double *z = scratch, *p = z + n, *q = p + n, *u = q + n, *ref = u + n, m;
    z_row(n, x, keep, NULL, t, z);
    ref_sparsemax(n, z, ref, u, &m);
    z[j] += h / t;
    ref_sparsemax(n, z, p, u, &m);
    z[j] -= 2 * h / t;
    ref_sparsemax(n, z, q, u, &m);
    double s = 0.0;
    for (size_t i = 0; i < n; i++) {
        if ((p[i] > 0) != (ref[i] > 0) || (q[i] > 0) != (ref[i] > 0)) return 0;
        if (p[i] != q[i]) s += (double)dy[i] * (p[i] - q[i]) / (2 * h);
    }
    *out = s;
    return 1;
}

TEST(sparsemax_backward_fd) {
    sg_context *ctx = test_context(1);
    test_rng rng = test_rng_seed(11);
    static const float temps[] = {0.5f, 1.0f, 3.0f};
    int checked = 0;
    for (int trial = 0; trial < 90; trial++) {
        const size_t n = 2 + (size_t)(test_uniform(&rng) * 40);
        const float t = temps[trial % 3];
        float x[48], y[48], dy[48], dx[48];
        uint8_t keep[48];
        double z[48], p[48], u[48], m, scratch[5 * 48], ref;
        for (size_t i = 0; i < n; i++) {
            x[i] = (float)((0.3 + trial % 4) * test_normal(&rng));
            dy[i] = (float)test_normal(&rng);
            keep[i] = trial % 2 == 0 || test_uniform(&rng) < 0.8;
        }
        keep[0] = 1;
        const uint8_t *kp = trial % 2 ? keep : NULL;
        z_row(n, x, kp, NULL, t, z);
        double tau = ref_sparsemax(n, z, p, u, &m);
        if (support_gap(n, z, m, tau) < 1e-3) continue; /* too close to a kink */
        for (size_t i = 0; i < n; i++)
            if (kp && !kp[i]) dy[i] = NAN; /* removed: dx must be 0 whatever dy holds */
        sg_softmax_options o = test_temperature(t);
        o.keep_mask = kp;
        CHECK(sg_sparsemax_f32(ctx, 1, n, x, n, y, n, &o) == SG_OK, "forward");
        CHECK(sg_sparsemax_backward_f32(ctx, 1, n, y, n, dy, n, dx, n, &o) == SG_OK, "backward: %s",
              sg_context_error(ctx));
        for (size_t j = 0; j < n; j++) {
            if (kp && !kp[j]) {
                CHECK(dx[j] == 0.0f, "trial %d: removed dx[%zu] = %g", trial, j, dx[j]);
                continue;
            }
            if (p[j] == 0.0) CHECK(dx[j] == 0.0f, "trial %d: off-support dx[%zu] = %g", trial, j, dx[j]);
            if (!fd_vjp(n, x, kp, t, dy, j, 1e-4 * t, &ref, scratch)) continue;
            checked++;
            CHECK(fabs(dx[j] - ref) <= 2e-5 * (1.0 + fabs(ref)), "trial %d n=%zu T=%g: dx[%zu] = %.9g, fd %.9g",
                  trial, n, (double)t, j, dx[j], ref);
        }
    }
    CHECK(checked > 1000, "only %d finite-difference checks ran", checked);
    sg_context_destroy(ctx);
}

/* ---- loss ---------------------------------------------------------------- */

TEST(sparsemax_loss_reference_fd) {
    sg_context *ctx = test_context(1);
    test_rng rng = test_rng_seed(23);
    static const float temps[] = {0.5f, 1.0f, 3.0f};
    for (int trial = 0; trial < 120; trial++) {
        const size_t n = 1 + (size_t)(test_uniform(&rng) * 60);
        const float t = temps[trial % 3];
        const double scale = trial % 5 == 4 ? 30.0 : 0.2 + trial % 4;
        float x[64], dx[64], loss, loss2;
        double z[64], p[64], u[64];
        for (size_t i = 0; i < n; i++) x[i] = (float)(scale * test_normal(&rng));
        int32_t k = (int32_t)(test_uniform(&rng) * (double)n);
        sg_softmax_options o = test_temperature(t);
        CHECK(sg_sparsemax_loss_f32(ctx, 1, n, x, n, &k, &loss, dx, n, &o) == SG_OK, "loss: %s",
              sg_context_error(ctx));
        CHECK(sg_sparsemax_loss_f32(ctx, 1, n, x, n, &k, &loss2, NULL, 0, &o) == SG_OK, "loss, dx NULL");
        CHECK(memcmp(&loss, &loss2, sizeof loss) == 0, "trial %d: loss %.9g with dx, %.9g without",
              trial, loss, loss2);
        z_row(n, x, NULL, NULL, t, z);
        const double lref = ref_loss(n, z, (size_t)k, p, u);
        CHECK(fabs(loss - lref) <= 1e-6 * fmax(1.0, fabs(lref)), "trial %d n=%zu: loss %.9g ref %.9g",
              trial, n, loss, lref);
        CHECK(loss >= -1e-6f, "trial %d: negative loss %.9g", trial, loss);
        for (size_t j = 0; j < n; j++) {
            /* The gradient formula, and central differences (the loss is C^1). */
            const double g = (p[j] - (j == (size_t)k)) / t, h = 1e-4 * t, zj = z[j];
            CHECK(fabs(dx[j] - g) <= 2 * TOL_P / t, "trial %d: dx[%zu] %.9g vs (p - onehot)/T %.9g",
                  trial, j, dx[j], g);
            double q[64];
            z[j] = zj + h / t;
            double lp = ref_loss(n, z, (size_t)k, q, u);
            z[j] = zj - h / t;
            double lm = ref_loss(n, z, (size_t)k, q, u), fd = (lp - lm) / (2 * h);
            z[j] = zj;
            CHECK(fabs(dx[j] - fd) <= 1e-4 * (1.0 + fabs(fd)), "trial %d n=%zu: dx[%zu] %.9g fd %.9g",
                  trial, n, j, dx[j], fd);
        }
    }
    /* A target that wins by far: p = onehot(k), loss 0 and gradient 0. */
    float x[4] = {0, 10, 1, 2}, dx[4], loss;
    int32_t k = 1;
    CHECK(sg_sparsemax_loss_f32(ctx, 1, 4, x, 4, &k, &loss, dx, 4, NULL) == SG_OK, "one-hot loss");
    CHECK(loss == 0.0f, "one-hot target: loss %.9g", loss);
    for (int i = 0; i < 4; i++) CHECK(dx[i] == 0.0f, "one-hot target: dx[%d] = %g", i, dx[i]);
    sg_context_destroy(ctx);
}

/* ---- masks ---------------------------------------------------------------- */

/* One mask configuration: forward, backward and loss against the reference. */
static void check_masked(sg_context *ctx, size_t rows, size_t n, const float *x, const uint8_t *keep,
                         size_t keep_ld, const float *add, size_t add_ld, float t, const char *what) {
    float *y = test_alloc(rows * n * sizeof *y), *dy = test_alloc(rows * n * sizeof *dy);
    float *dx = test_alloc(rows * n * sizeof *dx), *loss = test_alloc(rows * sizeof *loss);
    double *z = test_alloc(n * sizeof *z), *p = test_alloc(n * sizeof *p), *u = test_alloc(n * sizeof *u);
    int32_t *target = test_alloc(rows * sizeof *target);
    sg_softmax_options o = test_temperature(t);
    o.keep_mask = keep, o.keep_mask_ld = keep_ld, o.add_mask = add, o.add_mask_ld = add_ld;
    row_err e = {0, 0, 0};
    CHECK(sg_sparsemax_f32(ctx, rows, n, x, n, y, n, &o) == SG_OK, "%s: forward", what);
    for (size_t i = 0; i < rows * n; i++) dy[i] = (float)(0.1 * (double)(i % 7) - 0.3);
    CHECK(sg_sparsemax_backward_f32(ctx, rows, n, y, n, dy, n, dx, n, &o) == SG_OK, "%s: backward", what);
    size_t with_target = 0;
    for (size_t r = 0; r < rows; r++) {
        const uint8_t *kr = keep ? keep + r * keep_ld : NULL;
        const float *ar = add ? add + r * add_ld : NULL;
        z_row(n, x + r * n, kr, ar, t, z);
        double s = 0.0, m = -INFINITY;
        size_t k = 0;
        for (size_t i = 0; i < n; i++) m = fmax(m, z[i]);
        target[r] = -1;
        if (m == -INFINITY) { /* every entry removed: all 0, backward all 0 */
            for (size_t i = 0; i < n; i++)
                CHECK(y[r * n + i] == 0.0f && dx[r * n + i] == 0.0f, "%s row %zu: removed row %g %g", what,
                      r, y[r * n + i], dx[r * n + i]);
            continue;
        }
        check_row(n, z, y + r * n, what, &e);
        for (size_t i = 0; i < n; i++) {
            if (z[i] == -INFINITY) CHECK(y[r * n + i] == 0.0f, "%s: removed y %g", what, y[r * n + i]);
            if (y[r * n + i] > 0.0f) s += dy[r * n + i], k++;
            if (target[r] < 0 && z[i] > -INFINITY) target[r] = (int32_t)i;
        }
        for (size_t i = 0; i < n; i++) {
            double g = y[r * n + i] > 0.0f ? (dy[r * n + i] - s / (double)k) / t : 0.0;
            CHECK(fabs(dx[r * n + i] - g) <= 1e-6, "%s row %zu: dx[%zu] %.9g vs %.9g", what, r, i,
                  dx[r * n + i], g);
        }
        with_target++;
    }
    /* The loss on the rows that have a kept entry (the first kept one as target). */
    for (size_t r = 0; r < rows; r++) {
        if (target[r] < 0) continue;
        sg_softmax_options ro = o;
        ro.keep_mask = keep ? keep + r * keep_ld : NULL;
        ro.add_mask = add ? add + r * add_ld : NULL;
        CHECK(sg_sparsemax_loss_f32(ctx, 1, n, x + r * n, n, &target[r], &loss[r], dx, n, &ro) == SG_OK,
              "%s: loss row %zu: %s", what, r, sg_context_error(ctx));
        z_row(n, x + r * n, ro.keep_mask, ro.add_mask, t, z);
        double lref = ref_loss(n, z, (size_t)target[r], p, u);
        CHECK(fabs(loss[r] - lref) <= 1e-6 * fmax(1.0, fabs(lref)), "%s row %zu: loss %.9g ref %.9g", what,
              r, loss[r], lref);
        for (size_t i = 0; i < n; i++)
            if (z[i] == -INFINITY && i != (size_t)target[r])
                CHECK(dx[i] == 0.0f, "%s row %zu: loss dx at removed %zu = %g", what, r, i, dx[i]);
    }
    (void)with_target;
    free(y), free(dy), free(dx), free(loss), free(z), free(p), free(u), free(target);
}

TEST(sparsemax_masks) {
    sg_context *ctx = test_context(2);
    static const size_t ns[] = {1, 7, 33, 200};
    const size_t rows = 6;
    for (size_t ni = 0; ni < 4; ni++) {
        const size_t n = ns[ni];
        test_rng rng = test_rng_seed(100 + ni);
        float *x = test_random_f32(rows * n, 2.0, 200 + ni), *add = test_alloc(rows * n * sizeof *add);
        float *xf = test_random_f32(rows * n, 2.0, 300 + ni);
        uint8_t *keep = test_alloc(rows * n);
        for (size_t i = 0; i < rows * n; i++) {
            keep[i] = test_uniform(&rng) < 0.7;
            add[i] = test_uniform(&rng) < 0.15 ? -INFINITY : (float)test_normal(&rng);
            if (!keep[i] && i % 3 == 0) x[i] = i % 2 ? NAN : INFINITY; /* removed: ignored */
        }
        for (size_t i = 0; i < n; i++) keep[i] = 0; /* row 0: all removed (per-row mask) */
        for (int bc = 0; bc < 2; bc++) {
            /* Per row: x holds NaN/inf where keep removes it. Broadcast:
             * keep's row 1 for every row, over finite x. */
            const size_t ld = bc ? 0 : n;
            const uint8_t *kb = bc ? keep + n : keep;
            const float *xb = bc ? xf : x;
            char what[64];
            snprintf(what, sizeof what, "n=%zu keep ld=%zu", n, ld);
            check_masked(ctx, rows, n, xb, kb, ld, NULL, 0, 1.0f, what);
            snprintf(what, sizeof what, "n=%zu keep+add ld=%zu", n, ld);
            check_masked(ctx, rows, n, xb, kb, ld, bc ? add + n : add, ld, 0.5f, what);
        }
        check_masked(ctx, rows, n, xf, NULL, 0, add, n, 3.0f, "add per row");
        check_masked(ctx, rows, n, xf, NULL, 0, add + n, 0, 1.0f, "add broadcast");
        free(x), free(xf), free(add), free(keep);
    }
    sg_context_destroy(ctx);
}

/* ---- special values ------------------------------------------------------- */

typedef struct special_case {
    const char *what;
    float x[5];
    int masked; /* whether keep applies */
    uint8_t keep[5];
    float want[5];
} special_case;

#define I INFINITY
static const special_case SPECIAL[] = {
    {"-inf entries", {1, -I, 2, -I, 1.5f}, 0, {0}, {0, 0, 0.75f, 0, 0.25f}},
    {"all -inf", {-I, -I, -I, -I, -I}, 0, {0}, {0, 0, 0, 0, 0}},
    {"all removed", {1, 2, 3, 4, 5}, 1, {0, 0, 0, 0, 0}, {0, 0, 0, 0, 0}},
    {"removed or -inf", {1, -I, 3, -I, 5}, 1, {0, 1, 0, 1, 0}, {0, 0, 0, 0, 0}},
    {"kept NaN", {1, NAN, 2, 0, 0}, 0, {0}, {NAN, NAN, NAN, NAN, NAN}},
    {"kept NaN, removed 0", {1, NAN, 2, 0, 0}, 1, {0, 1, 1, 1, 0}, {0, NAN, NAN, NAN, 0}},
    {"removed NaN and inf", {NAN, 1, I, 1.5f, -I}, 1, {0, 1, 0, 1, 1}, {0, 0.25f, 0, 0.75f, 0}},
    {"two +inf", {1, I, 2, I, -I}, 0, {0}, {0, 0.5f, 0, 0.5f, 0}},
    {"three +inf", {I, I, I, 0, 0}, 0, {0}, {1.0f / 3, 1.0f / 3, 1.0f / 3, 0, 0}},
    {"+inf and NaN", {I, NAN, 0, 0, 0}, 0, {0}, {NAN, NAN, NAN, NAN, NAN}},
    {"huge ties", {FLT_MAX, -FLT_MAX, FLT_MAX, 0, -FLT_MAX}, 0, {0}, {0.5f, 0, 0.5f, 0, 0}},
    {"huge", {-FLT_MAX, FLT_MAX, 3e38f, 1e38f, 0}, 0, {0}, {0, 1, 0, 0, 0}},
};
#undef I

static int same_value(float a, float b) { return (isnan(a) && isnan(b)) || a == b; }

TEST(sparsemax_special_values) {
    sg_context *ctx = test_context(1);
    for (size_t c = 0; c < sizeof SPECIAL / sizeof SPECIAL[0]; c++) {
        const special_case *sc = &SPECIAL[c];
        sg_softmax_options o = test_temperature(1.0f);
        o.keep_mask = sc->masked ? sc->keep : NULL;
        float y[5], dy[5] = {1, -2, 3, NAN, 5}, dx[5];
        CHECK(sg_sparsemax_f32(ctx, 1, 5, sc->x, 5, y, 5, &o) == SG_OK, "%s: forward", sc->what);
        for (int i = 0; i < 5; i++)
            CHECK(same_value(y[i], sc->want[i]), "%s: y[%d] = %.9g, want %.9g", sc->what, i, y[i],
                  sc->want[i]);
        CHECK(sg_sparsemax_backward_f32(ctx, 1, 5, y, 5, dy, 5, dx, 5, &o) == SG_OK, "%s: backward",
              sc->what);
        /* A NaN row stays NaN on kept entries; otherwise off-support is 0. */
        for (int i = 0; i < 5; i++) {
            if (isnan(sc->want[i])) CHECK(isnan(dx[i]), "%s: dx[%d] = %g, want NaN", sc->what, i, dx[i]);
            else if (sc->want[i] == 0.0f)
                CHECK(dx[i] == 0.0f, "%s: dx[%d] = %g off the support", sc->what, i, dx[i]);
        }
    }
    /* Backward: NaN in dy on the support propagates there only. */
    float y[4] = {0.5f, 0, 0.5f, 0}, dy[4] = {NAN, 1, 2, 3}, dx[4];
    CHECK(sg_sparsemax_backward_f32(ctx, 1, 4, y, 4, dy, 4, dx, 4, NULL) == SG_OK, "NaN dy");
    CHECK(isnan(dx[0]) && isnan(dx[2]) && dx[1] == 0.0f && dx[3] == 0.0f, "NaN dy: %g %g %g %g", dx[0],
          dx[1], dx[2], dx[3]);
    /* x = -inf with add = +inf is NaN; add = +inf alone is +inf. */
    const float xa[4] = {-INFINITY, 0, 1, 2}, aa[4] = {INFINITY, 0, 0, 0}, ab[4] = {0, INFINITY, 0, 0};
    sg_softmax_options o = test_temperature(1.0f);
    o.add_mask = aa;
    float out[4];
    CHECK(sg_sparsemax_f32(ctx, 1, 4, xa, 4, out, 4, &o) == SG_OK, "-inf + inf");
    for (int i = 0; i < 4; i++) CHECK(isnan(out[i]), "-inf + inf: y[%d] = %g", i, out[i]);
    o.add_mask = ab;
    CHECK(sg_sparsemax_f32(ctx, 1, 4, xa, 4, out, 4, &o) == SG_OK, "add +inf");
    for (int i = 0; i < 4; i++) CHECK(out[i] == (i == 1), "add +inf: y[%d] = %g", i, out[i]);
    sg_context_destroy(ctx);
}

/* Loss special values; and huge finite inputs with T that keeps them apart. */
TEST(sparsemax_special_loss_and_huge) {
    sg_context *ctx = test_context(1);
    static const struct {
        const char *what;
        float x[4];
        int32_t k;
        float loss, dx[4]; /* at T = 2 */
    } cases[] = {
        {"NaN", {1, NAN, 0, 0}, 0, NAN, {NAN, NAN, NAN, NAN}},
        {"+inf target", {INFINITY, 1, INFINITY, 0}, 0, 0.25f, {-0.25f, 0, 0.25f, 0}},
        {"+inf only target", {INFINITY, 1, 0, 0}, 0, 0.0f, {0, 0, 0, 0}},
        {"+inf elsewhere", {INFINITY, 1, 0, 0}, 1, INFINITY, {0.5f, -0.5f, 0, 0}},
        {"-inf target", {-INFINITY, 10, 0, 0}, 0, INFINITY, {-0.5f, 0.5f, 0, 0}},
        {"all -inf", {-INFINITY, -INFINITY, -INFINITY, -INFINITY}, 2, INFINITY, {0, 0, -0.5f, 0}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        float loss, dx[4];
        sg_softmax_options o = test_temperature(2.0f);
        CHECK(sg_sparsemax_loss_f32(ctx, 1, 4, cases[c].x, 4, &cases[c].k, &loss, dx, 4, &o) == SG_OK,
              "%s: loss", cases[c].what);
        CHECK(same_value(loss, cases[c].loss), "%s: loss %.9g, want %.9g", cases[c].what, loss,
              cases[c].loss);
        for (int i = 0; i < 4; i++)
            CHECK(same_value(dx[i], cases[c].dx[i]), "%s: dx[%d] = %.9g, want %.9g", cases[c].what, i,
                  dx[i], cases[c].dx[i]);
    }
    /* Near FLT_MAX with T = 1e32: differences of a few float ulps (2^104)
     * become z differences of order 1; the reference works in double. */
    row_err e = {0, 0, 0};
    for (int s = -1; s <= 1; s += 2) {
        float x[64];
        test_rng rng = test_rng_seed(7);
        for (int i = 0; i < 64; i++)
            x[i] = (float)(s * (3.0e38 - ldexp(floor(test_uniform(&rng) * 8), 104)));
        check_forward(ctx, 1, 64, x, 1e32f, "near FLT_MAX, T=1e32", &e);
        check_forward(ctx, 1, 64, x, 1.0f, "near FLT_MAX, T=1", &e);
        int32_t k = 5;
        float loss;
        sg_softmax_options o = test_temperature(1e32f);
        CHECK(sg_sparsemax_loss_f32(ctx, 1, 64, x, 64, &k, &loss, NULL, 0, &o) == SG_OK, "huge loss");
        double z[64], p[64], u[64];
        z_row(64, x, NULL, NULL, 1e32, z);
        double lref = ref_loss(64, z, 5, p, u);
        CHECK(fabs(loss - lref) <= 1e-6 * fmax(1.0, fabs(lref)), "huge loss %.9g ref %.9g", loss, lref);
    }
    sg_context_destroy(ctx);
}

/* ---- argument errors ---------------------------------------------------- */

/* A failed call: the status, a message naming the problem, untouched output. */
static void expect_error(sg_context *ctx, sg_status st, sg_status want, const char *word,
                         const void *out, const void *before, size_t bytes, const char *what) {
    const char *msg = sg_context_error(ctx);
    CHECK(st == want, "%s: status %d, want %d", what, (int)st, (int)want);
    CHECK(msg[0] != '\0', "%s: empty message", what);
    CHECK(!word || strstr(msg, word), "%s: message \"%s\" does not mention %s", what, msg, word);
    CHECK(memcmp(out, before, bytes) == 0, "%s: output written on error", what);
}

static const float BAD_T[] = {0.0f, -1.0f, NAN, INFINITY, -INFINITY, 1e-39f /* 1/T overflows */};
#define N_BAD_T (sizeof BAD_T / sizeof BAD_T[0])

TEST(sparsemax_args_errors) {
    sg_context *ctx = test_context(1);
    float x[8] = {1, 2, 3, 4, 5, 6, 7, 8}, out[8], before[8];
    for (int i = 0; i < 8; i++) before[i] = out[i] = SENTINEL;
    CHECK(sg_sparsemax_f32(NULL, 2, 4, x, 4, out, 4, NULL) == SG_ERR_ARGUMENT, "NULL ctx forward");
    CHECK(sg_sparsemax_backward_f32(NULL, 2, 4, x, 4, x, 4, out, 4, NULL) == SG_ERR_ARGUMENT,
          "NULL ctx backward");
    for (size_t b = 0; b < N_BAD_T; b++) {
        sg_softmax_options o = test_temperature(BAD_T[b]);
        expect_error(ctx, sg_sparsemax_f32(ctx, 2, 4, x, 4, out, 4, &o), SG_ERR_ARGUMENT, "temperature",
                     out, before, sizeof out, "forward bad T");
        expect_error(ctx, sg_sparsemax_backward_f32(ctx, 2, 4, x, 4, x, 4, out, 4, &o), SG_ERR_ARGUMENT,
                     "temperature", out, before, sizeof out, "backward bad T");
    }
    expect_error(ctx, sg_sparsemax_f32(ctx, 2, 4, x, 3, out, 4, NULL), SG_ERR_SHAPE, "x", out, before,
                 sizeof out, "ldx < n");
    expect_error(ctx, sg_sparsemax_f32(ctx, 2, 4, x, 4, out, 3, NULL), SG_ERR_SHAPE, "y", out, before,
                 sizeof out, "ldy < n");
    expect_error(ctx, sg_sparsemax_f32(ctx, 2, 4, NULL, 4, out, 4, NULL), SG_ERR_ARGUMENT, "x", out,
                 before, sizeof out, "NULL x");
    expect_error(ctx, sg_sparsemax_f32(ctx, 2, 4, x, 4, NULL, 4, NULL), SG_ERR_ARGUMENT, "y", out,
                 before, sizeof out, "NULL y");
    expect_error(ctx, sg_sparsemax_backward_f32(ctx, 2, 4, x, 4, NULL, 4, out, 4, NULL), SG_ERR_ARGUMENT,
                 "dy", out, before, sizeof out, "NULL dy");
    expect_error(ctx, sg_sparsemax_backward_f32(ctx, 2, 4, NULL, 4, x, 4, out, 4, NULL), SG_ERR_ARGUMENT,
                 "y", out, before, sizeof out, "NULL y (backward)");
    expect_error(ctx, sg_sparsemax_backward_f32(ctx, 2, 4, x, 4, x, 4, NULL, 4, NULL), SG_ERR_ARGUMENT,
                 "dx", out, before, sizeof out, "NULL dx");
    expect_error(ctx, sg_sparsemax_backward_f32(ctx, 2, 4, x, 4, x, 4, out, 2, NULL), SG_ERR_SHAPE, "dx",
                 out, before, sizeof out, "lddx < n");
    /* In place needs equal strides. */
    float io[16], io0[16];
    for (int i = 0; i < 16; i++) io[i] = io0[i] = (float)i;
    expect_error(ctx, sg_sparsemax_f32(ctx, 2, 4, io, 5, io, 6, NULL), SG_ERR_SHAPE, NULL, io, io0,
                 sizeof io, "in place with ldy != ldx");
    expect_error(ctx, sg_sparsemax_backward_f32(ctx, 2, 4, x, 4, io, 5, io, 6, NULL), SG_ERR_SHAPE, NULL,
                 io, io0, sizeof io, "in place with lddx != lddy");
    /* A good call clears the message; empty problems succeed with NULL. */
    CHECK(sg_sparsemax_f32(ctx, 2, 4, x, 4, out, 4, NULL) == SG_OK && !sg_context_error(ctx)[0],
          "good call after errors: \"%s\"", sg_context_error(ctx));
    CHECK(sg_sparsemax_f32(ctx, 0, 4, NULL, 4, NULL, 4, NULL) == SG_OK, "rows == 0");
    CHECK(sg_sparsemax_f32(ctx, 3, 0, NULL, 0, NULL, 0, NULL) == SG_OK, "n == 0");
    CHECK(sg_sparsemax_backward_f32(ctx, 0, 4, NULL, 4, NULL, 4, NULL, 4, NULL) == SG_OK, "bwd rows == 0");
    CHECK(sg_sparsemax_backward_f32(ctx, 3, 0, NULL, 0, NULL, 0, NULL, 0, NULL) == SG_OK, "bwd n == 0");
    sg_context_destroy(ctx);
}

TEST(sparsemax_args_errors_loss) {
    sg_context *ctx = test_context(1);
    float x[8] = {1, 2, 3, 4, 5, 6, 7, 8}, out[8], before[8], loss[2] = {SENTINEL, SENTINEL};
    int32_t target[2] = {1, 2};
    for (int i = 0; i < 8; i++) before[i] = out[i] = SENTINEL;
    CHECK(sg_sparsemax_loss_f32(NULL, 2, 4, x, 4, target, loss, out, 4, NULL) == SG_ERR_ARGUMENT,
          "NULL ctx loss");
    for (size_t b = 0; b < N_BAD_T; b++) {
        sg_softmax_options o = test_temperature(BAD_T[b]);
        expect_error(ctx, sg_sparsemax_loss_f32(ctx, 2, 4, x, 4, target, loss, out, 4, &o),
                     SG_ERR_ARGUMENT, "temperature", out, before, sizeof out, "loss bad T");
    }
    /* Targets out of range or removed: the message names the row; neither
     * loss nor dx is written, not even for the good row 0. */
    static const int32_t bad_targets[][2] = {{1, -1}, {1, 4}, {1, 2000000000}};
    for (size_t b = 0; b < 3; b++)
        expect_error(ctx, sg_sparsemax_loss_f32(ctx, 2, 4, x, 4, bad_targets[b], loss, out, 4, NULL),
                     SG_ERR_ARGUMENT, "target[1]", out, before, sizeof out, "target out of range");
    const uint8_t keep[4] = {1, 1, 0, 1};
    sg_softmax_options o = test_temperature(1.0f);
    o.keep_mask = keep; /* broadcast: removes entry 2, target[1] */
    expect_error(ctx, sg_sparsemax_loss_f32(ctx, 2, 4, x, 4, target, loss, out, 4, &o), SG_ERR_ARGUMENT,
                 "target[1]", out, before, sizeof out, "target removed by keep_mask");
    const float add[4] = {0, 0, -INFINITY, 0};
    o = test_temperature(1.0f);
    o.add_mask = add;
    expect_error(ctx, sg_sparsemax_loss_f32(ctx, 2, 4, x, 4, target, loss, out, 4, &o), SG_ERR_ARGUMENT,
                 "removed", out, before, sizeof out, "target removed by add_mask");
    CHECK(loss[0] == SENTINEL && loss[1] == SENTINEL, "loss written on error: %g %g", loss[0], loss[1]);
    expect_error(ctx, sg_sparsemax_loss_f32(ctx, 2, 4, x, 4, NULL, loss, out, 4, NULL), SG_ERR_ARGUMENT,
                 "target", out, before, sizeof out, "NULL target");
    expect_error(ctx, sg_sparsemax_loss_f32(ctx, 2, 4, x, 4, target, NULL, out, 4, NULL), SG_ERR_ARGUMENT,
                 "loss", out, before, sizeof out, "NULL loss");
    expect_error(ctx, sg_sparsemax_loss_f32(ctx, 2, 4, NULL, 4, target, loss, out, 4, NULL),
                 SG_ERR_ARGUMENT, "x", out, before, sizeof out, "NULL x (loss)");
    expect_error(ctx, sg_sparsemax_loss_f32(ctx, 2, 4, x, 3, target, loss, out, 4, NULL), SG_ERR_SHAPE,
                 "x", out, before, sizeof out, "ldx < n (loss)");
    expect_error(ctx, sg_sparsemax_loss_f32(ctx, 2, 4, x, 4, target, loss, out, 3, NULL), SG_ERR_SHAPE,
                 "dx", out, before, sizeof out, "lddx < n (loss)");
    float io[16], io0[16];
    for (int i = 0; i < 16; i++) io[i] = io0[i] = (float)i;
    expect_error(ctx, sg_sparsemax_loss_f32(ctx, 2, 4, io, 5, target, loss, io, 6, NULL), SG_ERR_SHAPE,
                 NULL, io, io0, sizeof io, "in place with lddx != ldx");
    /* dx may be NULL; rows == 0 needs nothing; n == 0 leaves no class to target. */
    CHECK(sg_sparsemax_loss_f32(ctx, 2, 4, x, 4, target, loss, NULL, 0, NULL) == SG_OK, "dx NULL: %s",
          sg_context_error(ctx));
    CHECK(sg_sparsemax_loss_f32(ctx, 0, 4, NULL, 4, NULL, NULL, NULL, 4, NULL) == SG_OK, "loss rows == 0");
    CHECK(sg_sparsemax_loss_f32(ctx, 1, 0, NULL, 0, target, loss, NULL, 0, NULL) == SG_ERR_ARGUMENT,
          "loss n == 0: no class to target");
    sg_context_destroy(ctx);
}

/* ---- strides and in place -------------------------------------------------- */

TEST(sparsemax_strides_in_place) {
    sg_context *ctx = test_context(2);
    const size_t rows = 5, n = 37, ld = 41;
    float *x = test_random_f32(rows * ld, 3.0, 77), *xc = test_alloc(rows * n * sizeof *xc);
    float *y = test_alloc(rows * ld * sizeof *y), *yc = test_alloc(rows * n * sizeof *yc);
    float *dx = test_alloc(rows * ld * sizeof *dx), *dxc = test_alloc(rows * n * sizeof *dxc);
    float loss[5], lossc[5];
    int32_t target[5] = {0, 3, 36, 10, 20};
    for (size_t r = 0; r < rows; r++) {
        memcpy(xc + r * n, x + r * ld, n * sizeof *xc);
        for (size_t i = n; i < ld; i++) x[r * ld + i] = NAN; /* gaps are never read */
    }
    for (size_t i = 0; i < rows * ld; i++) y[i] = dx[i] = SENTINEL;
    sg_softmax_options o = test_temperature(0.5f);
    CHECK(sg_sparsemax_f32(ctx, rows, n, x, ld, y, ld, &o) == SG_OK, "strided forward");
    CHECK(sg_sparsemax_f32(ctx, rows, n, xc, n, yc, n, &o) == SG_OK, "contiguous forward");
    CHECK(sg_sparsemax_backward_f32(ctx, rows, n, y, ld, x, ld, dx, ld, &o) == SG_OK, "strided backward");
    CHECK(sg_sparsemax_backward_f32(ctx, rows, n, yc, n, xc, n, dxc, n, &o) == SG_OK, "contiguous bwd");
    for (size_t r = 0; r < rows; r++) {
        CHECK(memcmp(y + r * ld, yc + r * n, n * sizeof *y) == 0, "row %zu: strided forward differs", r);
        CHECK(memcmp(dx + r * ld, dxc + r * n, n * sizeof *dx) == 0, "row %zu: strided backward differs", r);
        for (size_t i = n; i < ld; i++)
            CHECK(y[r * ld + i] == SENTINEL && dx[r * ld + i] == SENTINEL, "row %zu: gap %zu written", r, i);
    }
    for (size_t i = 0; i < rows * ld; i++) dx[i] = SENTINEL;
    CHECK(sg_sparsemax_loss_f32(ctx, rows, n, x, ld, target, loss, dx, ld, &o) == SG_OK, "strided loss");
    CHECK(sg_sparsemax_loss_f32(ctx, rows, n, xc, n, target, lossc, dxc, n, &o) == SG_OK, "loss");
    CHECK(memcmp(loss, lossc, sizeof loss) == 0, "strided loss differs");
    for (size_t r = 0; r < rows; r++) {
        CHECK(memcmp(dx + r * ld, dxc + r * n, n * sizeof *dx) == 0, "row %zu: strided loss dx differs", r);
        for (size_t i = n; i < ld; i++)
            CHECK(dx[r * ld + i] == SENTINEL, "loss row %zu: gap %zu written", r, i);
    }
    /* In place: y == x (forward), dx == dy (backward), dx == x (loss). */
    CHECK(sg_sparsemax_f32(ctx, rows, n, xc, n, yc, n, &o) == SG_OK, "forward");
    float *io = test_alloc(rows * ld * sizeof *io);
    memcpy(io, x, rows * ld * sizeof *io);
    CHECK(sg_sparsemax_f32(ctx, rows, n, io, ld, io, ld, &o) == SG_OK, "in place forward");
    for (size_t r = 0; r < rows; r++)
        CHECK(memcmp(io + r * ld, yc + r * n, n * sizeof *io) == 0, "row %zu: in-place forward differs", r);
    memcpy(io, x, rows * ld * sizeof *io);
    CHECK(sg_sparsemax_backward_f32(ctx, rows, n, y, ld, io, ld, io, ld, &o) == SG_OK, "in place bwd");
    CHECK(sg_sparsemax_backward_f32(ctx, rows, n, yc, n, xc, n, dxc, n, &o) == SG_OK, "bwd");
    for (size_t r = 0; r < rows; r++)
        CHECK(memcmp(io + r * ld, dxc + r * n, n * sizeof *io) == 0, "row %zu: in-place backward differs", r);
    CHECK(sg_sparsemax_loss_f32(ctx, rows, n, xc, n, target, lossc, dxc, n, &o) == SG_OK, "loss");
    memcpy(io, x, rows * ld * sizeof *io);
    CHECK(sg_sparsemax_loss_f32(ctx, rows, n, io, ld, target, loss, io, ld, &o) == SG_OK, "in place loss");
    CHECK(memcmp(loss, lossc, sizeof loss) == 0, "in-place loss differs");
    for (size_t r = 0; r < rows; r++)
        CHECK(memcmp(io + r * ld, dxc + r * n, n * sizeof *io) == 0, "row %zu: in-place loss dx differs", r);
    free(x), free(xc), free(y), free(yc), free(dx), free(dxc), free(io);
    sg_context_destroy(ctx);
}

/* ---- threads --------------------------------------------------------------- */

TEST(sparsemax_threads_identical) {
    static const size_t shapes[][2] = {{64, 1000}, {300, 57}, {7, 5000}};
    sg_context *ctxs[3] = {test_context(1), test_context(2), test_context(3)};
    for (size_t s = 0; s < 3; s++) {
        const size_t rows = shapes[s][0], n = shapes[s][1];
        float *x = test_random_f32(rows * n, 2.0, 500 + s), *dy = test_random_f32(rows * n, 1.0, 600 + s);
        float *out[3][3], *loss[3];
        int32_t *target = test_alloc(rows * sizeof *target);
        uint8_t *keep = test_alloc(n);
        for (size_t i = 0; i < n; i++) keep[i] = i % 5 != 3;
        for (size_t r = 0; r < rows; r++) target[r] = (int32_t)((r * 7) % n / 5 * 5);
        sg_softmax_options o = test_temperature(0.7f);
        o.keep_mask = s == 1 ? keep : NULL; /* broadcast mask on one shape */
        for (int c = 0; c < 3; c++) {
            for (int k = 0; k < 3; k++) out[c][k] = test_alloc(rows * n * sizeof(float));
            loss[c] = test_alloc(rows * sizeof(float));
            CHECK(sg_sparsemax_f32(ctxs[c], rows, n, x, n, out[c][0], n, &o) == SG_OK, "forward");
            CHECK(sg_sparsemax_backward_f32(ctxs[c], rows, n, out[c][0], n, dy, n, out[c][1], n, &o) == SG_OK,
                  "backward");
            CHECK(sg_sparsemax_loss_f32(ctxs[c], rows, n, x, n, target, loss[c], out[c][2], n, &o) == SG_OK,
                  "loss: %s", sg_context_error(ctxs[c]));
        }
        for (int c = 1; c < 3; c++) {
            for (int k = 0; k < 3; k++)
                CHECK(memcmp(out[0][k], out[c][k], rows * n * sizeof(float)) == 0,
                      "shape %zu: output %d differs between 1 and %d threads", s, k, c + 1);
            CHECK(memcmp(loss[0], loss[c], rows * sizeof(float)) == 0,
                  "shape %zu: loss differs between 1 and %d threads", s, c + 1);
        }
        for (int c = 0; c < 3; c++) {
            for (int k = 0; k < 3; k++) free(out[c][k]);
            free(loss[c]);
        }
        free(x), free(dy), free(target), free(keep);
    }
    for (int c = 0; c < 3; c++) sg_context_destroy(ctxs[c]);
}

/* The loss is >= 0 even where its terms cancel: the target at the max and
 * the rest just above max - 1 (rounding once gave -1.75e-10). */
TEST(sparsemax_loss_never_negative) {
    sg_context *ctx = test_context(1);
    size_t n = 100000;
    float *x = malloc(n * sizeof *x), loss = -1.0f;
    for (size_t i = 0; i < n; i++) x[i] = nextafterf(-1.0f, 0.0f);
    x[0] = 0.0f;
    int32_t target = 0;
    CHECK(sg_sparsemax_loss_f32(ctx, 1, n, x, n, &target, &loss, NULL, 0, NULL) == SG_OK, "status: %s",
          sg_context_error(ctx));
    CHECK(loss >= 0.0f && loss < 1e-6f, "loss %g", (double)loss);
    free(x);
    sg_context_destroy(ctx);
}

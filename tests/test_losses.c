/*
 * test_losses.c - the losses family (include/softgate/losses.h): fused
 * softmax cross-entropy, the spherical Z-loss, confidence scores and fused
 * softmax + top-k, through the public API (and the internal top-k scan
 * kernels, each against the reference). References are written here in
 * double: cross-entropy by PyTorch's formula (loss = (1 - eps)(-log p_t) +
 * eps mean_j(-log p_j) + lambda lse^2; mean over non-ignored rows), top-k
 * by a stable sort (ties to the lower index).
 *
 * Tests (all named losses_*, so --filter losses runs this file):
 *   losses_ce_reference        loss and dx vs the reference: N around SIMD
 *                              tiles, T, eps, lambda, the 3 reductions,
 *                              ignored rows
 *   losses_ce_fd               dx vs central differences of the reference
 *   losses_ce_ignore_all       MEAN over no rows is NaN with dx 0; SUM 0
 *   losses_ce_masks            keep/add masks (per row and broadcast)
 *   losses_ce_special          the header's special-value table; huge x
 *   losses_ce_in_place         dx == x, strides with sentinels, dx NULL
 *   losses_zloss_reference_fd  spherical Z-loss: reference, finite
 *                              differences, shift/scale invariance, masks
 *   losses_zloss_special       sigma = 0, NaN, inf
 *   losses_confidence          reference, subsets, masks, T, extremes
 *   losses_confidence_special  the header's table
 *   losses_topk_reference      sorted reference: k = 1, 2, 8, 64, N; tails
 *   losses_topk_ties_masks     ties to the lower index; masks; index -1
 *   losses_topk_special        NaN, +inf, -inf rows
 *   losses_topk_scan_kernels   every compiled scan kernel vs the reference
 *   losses_threads_identical   1, 2, 3 threads: the same bits, every op
 *   losses_args_errors         statuses and messages; outputs untouched
 */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "losses/losses_internal.h"
#include "test.h"

#define SENTINEL (-12345.5f)

/* z of one row in double; -inf where removed; *kept counts the kept. */
static void z_row(size_t n, const float *x, const uint8_t *keep, const float *add, double t,
                  double *z, int *removed) {
    for (size_t i = 0; i < n; i++) {
        removed[i] = (keep && !keep[i]) || (add && add[i] == -INFINITY);
        z[i] = removed[i] ? -INFINITY : (double)x[i] / t + (add ? (double)add[i] : 0.0);
    }
}

/* ---- the cross-entropy reference ----------------------------------------- */

typedef struct ce_case {
    double eps, lambda;
    double t;
} ce_case;

/* Per-row loss by PyTorch's formula over kept entries, and its gradient
 * d l / d x (1/T included) in grad (may be NULL). */
static double ref_ce_row(size_t n, const double *z, const int *removed, size_t tg, ce_case c,
                         double *grad) {
    double m = -INFINITY, s = 0.0, zsum = 0.0;
    size_t kept = 0;
    for (size_t i = 0; i < n; i++)
        if (!removed[i]) m = fmax(m, z[i]);
    for (size_t i = 0; i < n; i++)
        if (!removed[i]) s += exp(z[i] - m), zsum += z[i], kept++;
    double lse = m + log(s);
    double l = (1 - c.eps) * (lse - z[tg]) + c.eps * (lse - zsum / (double)kept) +
               c.lambda * lse * lse;
    for (size_t i = 0; grad && i < n; i++) {
        if (removed[i]) {
            grad[i] = 0.0;
            continue;
        }
        double p = exp(z[i] - m) / s;
        grad[i] = ((1 + 2 * c.lambda * lse) * p - (1 - c.eps) * (i == tg) - c.eps / (double)kept) / c.t;
    }
    return l;
}

static const char *red_name(sg_loss_reduction r) {
    return r == SG_REDUCTION_NONE ? "none" : r == SG_REDUCTION_SUM ? "sum" : "mean";
}

/* Runs the op and compares loss and dx with the reference; rows whose
 * index is a multiple of 5 are ignored (target -100). */
static void check_ce(sg_context *ctx, size_t rows, size_t n, const float *x, ce_case c,
                     sg_loss_reduction red, const sg_softmax_options *o, const char *what,
                     double *worst_dx) {
    int32_t *tg = test_alloc(rows * sizeof *tg);
    test_rng rng = test_rng_seed(n * 7 + rows);
    size_t count = 0;
    for (size_t r = 0; r < rows; r++) {
        tg[r] = r % 5 == 4 ? -100 : (int32_t)(test_uniform(&rng) * (double)n);
        count += tg[r] != -100;
    }
    if (o && o->keep_mask) /* targets must be kept */
        for (size_t r = 0; r < rows; r++)
            while (tg[r] != -100 && !o->keep_mask[r * o->keep_mask_ld + (size_t)tg[r]])
                tg[r] = (tg[r] + 1) % (int32_t)n;
    float *loss = test_alloc(rows * sizeof *loss), *dx = test_alloc(rows * n * sizeof *dx);
    sg_cross_entropy_options co = sg_cross_entropy_options_default();
    co.reduction = red;
    co.label_smoothing = (float)c.eps;
    co.z_loss = (float)c.lambda;
    sg_status st = sg_cross_entropy_f32(ctx, rows, n, x, n, tg, loss, dx, n, &co, o);
    CHECK(st == SG_OK, "%s: status %d (%s)", what, (int)st, sg_context_error(ctx));
    double *z = test_alloc(n * sizeof *z), *gr = test_alloc(n * sizeof *gr), total = 0.0;
    int *rm = test_alloc(n * sizeof *rm);
    const double g = red == SG_REDUCTION_MEAN ? 1.0 / (double)count : 1.0;
    int reported = 0;
    for (size_t r = 0; st == SG_OK && r < rows; r++) {
        const uint8_t *keep = o && o->keep_mask ? o->keep_mask + r * o->keep_mask_ld : NULL;
        const float *add = o && o->add_mask ? (const float *)o->add_mask + r * o->add_mask_ld : NULL;
        z_row(n, x + r * n, keep, add, c.t, z, rm);
        double l = 0.0;
        if (tg[r] == -100) memset(gr, 0, n * sizeof *gr);
        else l = ref_ce_row(n, z, rm, (size_t)tg[r], c, gr);
        total += l;
        if (red == SG_REDUCTION_NONE && !(fabs(loss[r] - l) <= 2e-6 * fmax(1.0, fabs(l))) &&
            reported++ < 3)
            CHECK(0, "%s n=%zu row %zu: loss %.9g ref %.9g", what, n, r, loss[r], l);
        for (size_t i = 0; i < n; i++) {
            double e = fabs(dx[r * n + i] - g * gr[i]), tol = 4e-7 * g / c.t + 2e-6 * fabs(g * gr[i]);
            *worst_dx = fmax(*worst_dx, e / (g / c.t));
            if (!(e <= tol) && reported++ < 3)
                CHECK(0, "%s n=%zu row %zu i %zu: dx %.9g ref %.9g", what, n, r, i, dx[r * n + i],
                      g * gr[i]);
        }
    }
    if (st == SG_OK && red != SG_REDUCTION_NONE) {
        double want = red == SG_REDUCTION_MEAN ? total / (double)count : total;
        CHECK(fabs(loss[0] - want) <= 2e-6 * fmax(1.0, fabs(want)), "%s n=%zu %s: loss %.9g ref %.9g",
              what, n, red_name(red), loss[0], want);
    }
    free(tg), free(loss), free(dx), free(z), free(gr), free(rm);
}

TEST(losses_ce_reference) {
    sg_context *ctx = test_context(2);
    static const size_t ns[] = {1, 2, 7, 15, 16, 17, 31, 63, 64, 65, 127, 128, 129, 1000, 4097};
    static const ce_case cases[] = {{0, 0, 1}, {0.1, 0, 1}, {0, 1e-3, 1}, {0.2, 1e-2, 0.7},
                                    {0, 0, 3}, {1.0, 0, 1}};
    double worst = 0.0;
    for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++)
        for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++)
            for (int red = 0; red < 3; red++) {
                size_t n = ns[ni], rows = 6;
                float *x = test_random_f32(rows * n, ni % 2 ? 3.0 : 10.0, n * 13 + ci);
                sg_softmax_options o = test_temperature((float)cases[ci].t);
                char what[96];
                snprintf(what, sizeof what, "eps=%g lambda=%g T=%g %s", cases[ci].eps,
                         cases[ci].lambda, cases[ci].t, red_name((sg_loss_reduction)red));
                check_ce(ctx, rows, n, x, cases[ci], (sg_loss_reduction)red, &o, what, &worst);
                free(x);
            }
    CHECK(worst <= 4e-7, "worst |dx - ref| / (g/T) = %.3g", worst);
    sg_context_destroy(ctx);
}

/* dx against central differences of the reduced reference loss in double. */
TEST(losses_ce_fd) {
    sg_context *ctx = test_context(1);
    const size_t rows = 3, n = 9;
    float *x = test_random_f32(rows * n, 2.0, 77);
    int32_t tg[3] = {4, -100, 0};
    ce_case cs[] = {{0, 0, 1}, {0.15, 0.01, 0.8}};
    for (size_t ci = 0; ci < 2; ci++)
        for (int red = 0; red < 3; red++) {
            ce_case c = cs[ci];
            sg_cross_entropy_options co = {(sg_loss_reduction)red, -100, (float)c.eps, (float)c.lambda};
            sg_softmax_options o = test_temperature((float)c.t);
            float loss[3], dx[27];
            CHECK(sg_cross_entropy_f32(ctx, rows, n, x, n, tg, loss, dx, n, &co, &o) == SG_OK, "status");
            for (size_t r = 0; r < rows; r++)
                for (size_t i = 0; i < n; i++) {
                    double z[9], zp[9];
                    int rm[9];
                    z_row(n, x + r * n, NULL, NULL, c.t, z, rm);
                    double h = 1e-4, fd = 0.0;
                    if (tg[r] != -100) {
                        memcpy(zp, z, sizeof z);
                        zp[i] = z[i] + h / c.t;
                        double lp = ref_ce_row(n, zp, rm, (size_t)tg[r], c, NULL);
                        zp[i] = z[i] - h / c.t;
                        double lm = ref_ce_row(n, zp, rm, (size_t)tg[r], c, NULL);
                        fd = (lp - lm) / (2 * h) / (red == SG_REDUCTION_MEAN ? 2.0 : 1.0);
                    }
                    CHECK(fabs(dx[r * n + i] - fd) <= 1e-5, "case %zu %s row %zu i %zu: dx %.8g fd %.8g",
                          ci, red_name((sg_loss_reduction)red), r, i, dx[r * n + i], fd);
                }
        }
    free(x);
    sg_context_destroy(ctx);
}

TEST(losses_ce_ignore_all) {
    sg_context *ctx = test_context(1);
    float x[8] = {1, 2, 3, 4, 5, 6, 7, 8}, loss[2], dx[8];
    int32_t tg[2] = {7, 7};
    sg_cross_entropy_options co = sg_cross_entropy_options_default();
    co.ignore_index = 7; /* a valid class used as ignore_index: ignored */
    memset(dx, 0x7f, sizeof dx);
    CHECK(sg_cross_entropy_f32(ctx, 2, 4, x, 4, tg, loss, dx, 4, &co, NULL) == SG_OK, "status");
    tg[0] = tg[1] = 3;
    co.ignore_index = 3;
    CHECK(sg_cross_entropy_f32(ctx, 2, 4, x, 4, tg, loss, dx, 4, &co, NULL) == SG_OK, "status");
    CHECK(isnan(loss[0]), "mean over no rows: %g, want NaN (PyTorch 1.13)", loss[0]);
    for (int i = 0; i < 8; i++) CHECK(dx[i] == 0.0f, "dx[%d] = %g, want 0", i, dx[i]);
    co.reduction = SG_REDUCTION_SUM;
    CHECK(sg_cross_entropy_f32(ctx, 2, 4, x, 4, tg, loss, dx, 4, &co, NULL) == SG_OK, "status");
    CHECK(loss[0] == 0.0f, "sum over no rows: %g", loss[0]);
    co.reduction = SG_REDUCTION_NONE;
    CHECK(sg_cross_entropy_f32(ctx, 2, 0, NULL, 0, tg, loss, NULL, 0, &co, NULL) == SG_OK,
          "n = 0 with every row ignored: %s", sg_context_error(ctx));
    CHECK(loss[0] == 0.0f && loss[1] == 0.0f, "ignored rows give 0");
    sg_context_destroy(ctx);
}

TEST(losses_ce_masks) {
    sg_context *ctx = test_context(2);
    const size_t rows = 5;
    static const size_t ns[] = {3, 17, 70, 1500};
    double worst = 0.0;
    for (size_t ni = 0; ni < 4; ni++) {
        size_t n = ns[ni];
        float *x = test_random_f32(rows * n, 4.0, 300 + n), *add = test_random_f32(rows * n, 1.0, 400 + n);
        uint8_t *keep = test_alloc(rows * n);
        test_rng rng = test_rng_seed(n);
        for (size_t i = 0; i < rows * n; i++) {
            keep[i] = test_uniform(&rng) < 0.7 || i % n == 0;
            if (test_uniform(&rng) < 0.1 && i % n) add[i] = -INFINITY;
        }
        for (int bc = 0; bc < 2; bc++) {
            sg_softmax_options o = test_temperature(1.3f);
            o.keep_mask = keep;
            o.keep_mask_ld = bc ? 0 : n;
            ce_case c = {0.1, 1e-3, 1.3};
            check_ce(ctx, rows, n, x, c, SG_REDUCTION_MEAN, &o, "keep", &worst);
            o.keep_mask = NULL;
            o.add_mask = add;
            o.add_mask_ld = bc ? 0 : n;
            /* targets on add = -inf are removed: move them in the check's rows */
            int32_t tg[5];
            float loss[5];
            for (size_t r = 0; r < rows; r++) {
                tg[r] = (int32_t)(r % n);
                while (add[(bc ? 0 : r) * n + (size_t)tg[r]] == -INFINITY) tg[r] = (tg[r] + 1) % (int32_t)n;
            }
            float *dx = test_alloc(rows * n * sizeof *dx);
            sg_cross_entropy_options co = {SG_REDUCTION_NONE, -100, 0.1f, 1e-3f};
            CHECK(sg_cross_entropy_f32(ctx, rows, n, x, n, tg, loss, dx, n, &co, &o) == SG_OK, "add");
            for (size_t r = 0; r < rows; r++) {
                double z[1500], gr[1500];
                int rm[1500];
                z_row(n, x + r * n, NULL, add + (bc ? 0 : r) * n, 1.3, z, rm);
                double l = ref_ce_row(n, z, rm, (size_t)tg[r], c, gr);
                CHECK(fabs(loss[r] - l) <= 2e-6 * fmax(1, fabs(l)), "add n=%zu r=%zu: %.9g vs %.9g", n,
                      r, loss[r], l);
                for (size_t i = 0; i < n; i++)
                    CHECK(fabs(dx[r * n + i] - gr[i]) <= 4e-7 / 1.3 + 2e-6 * fabs(gr[i]),
                          "add n=%zu r=%zu i=%zu: %.9g vs %.9g", n, r, i, dx[r * n + i], gr[i]);
            }
            free(dx);
        }
        free(x), free(add), free(keep);
    }
    CHECK(worst <= 4e-7, "worst masked dx error %.3g", worst);
    sg_context_destroy(ctx);
}

TEST(losses_ce_special) {
    sg_context *ctx = test_context(1);
    const float I = INFINITY;
    /* rows of 4: NaN; all -inf; target -inf; +inf (target on it); +inf
     * (target off it); two +inf with target on one; huge finite */
    float x[7][4] = {{1, NAN, 2, 3}, {-I, -I, -I, -I}, {1, 2, -I, 3}, {1, I, 2, 3},
                     {1, I, 2, 3}, {I, 0, I, 1}, {3e38f, -3e38f, 1e38f, 0}};
    int32_t tg[7] = {0, 1, 2, 1, 0, 2, 0};
    float loss[7], dx[7][4];
    sg_cross_entropy_options co = {SG_REDUCTION_NONE, -100, 0.0f, 0.0f};
    CHECK(sg_cross_entropy_f32(ctx, 7, 4, &x[0][0], 4, tg, loss, &dx[0][0], 4, &co, NULL) == SG_OK,
          "status");
    CHECK(isnan(loss[0]) && isnan(dx[0][0]) && isnan(dx[0][3]), "NaN row: %g %g", loss[0], dx[0][0]);
    CHECK(isnan(loss[1]) && isnan(dx[1][2]), "all -inf: %g (PyTorch: NaN)", loss[1]);
    CHECK(loss[2] == I && dx[2][2] == -1.0f && dx[2][3] > 0.0f, "target -inf: %g dx %g", loss[2], dx[2][2]);
    CHECK(loss[3] == 0.0f && dx[3][1] == 0.0f && dx[3][0] == 0.0f, "+inf target: %g %g", loss[3], dx[3][1]);
    CHECK(loss[4] == I && dx[4][1] == 1.0f && dx[4][0] == -1.0f, "+inf off target: %g", loss[4]);
    CHECK(fabs(loss[5] - log(2.0)) < 1e-7 && dx[5][2] == -0.5f && dx[5][0] == 0.5f, "two +inf: %g",
          loss[5]);
    CHECK(loss[6] == 0.0f && dx[6][0] == 0.0f && dx[6][2] == 0.0f, "huge: %g %g", loss[6], dx[6][0]);
    /* with z-loss on a +inf row: loss +inf, dx NaN; with eps: smoothing inf */
    co.z_loss = 0.5f;
    CHECK(sg_cross_entropy_f32(ctx, 1, 4, x[3], 4, &tg[3], loss, dx[3], 4, &co, NULL) == SG_OK, "s");
    CHECK(loss[0] == I && isnan(dx[3][0]), "+inf with z-loss: %g %g", loss[0], dx[3][0]);
    co.z_loss = 0.0f;
    co.label_smoothing = 0.1f;
    float y[4] = {1, 2, -I, 3};
    int32_t t0 = 0;
    CHECK(sg_cross_entropy_f32(ctx, 1, 4, y, 4, &t0, loss, NULL, 0, &co, NULL) == SG_OK, "s");
    CHECK(loss[0] == I, "eps > 0 with a -inf entry: %g", loss[0]);
    /* huge values with z-loss: lse^2 overflows to +inf, never NaN */
    co.label_smoothing = 0.0f;
    co.z_loss = 1.0f;
    CHECK(sg_cross_entropy_f32(ctx, 1, 4, x[6], 4, &t0, loss, NULL, 0, &co, NULL) == SG_OK, "s");
    CHECK(loss[0] == I, "huge with z-loss: %g", loss[0]);
    sg_context_destroy(ctx);
}

TEST(losses_ce_in_place) {
    sg_context *ctx = test_context(1);
    const size_t rows = 4, n = 37, ld = 41;
    float *x = test_random_f32(rows * ld, 3.0, 9), *x2 = test_alloc(rows * ld * sizeof *x2);
    float *dx = test_alloc(rows * ld * sizeof *dx), loss[4], loss2[4], loss3[4];
    for (size_t r = 0; r < rows; r++)
        for (size_t i = n; i < ld; i++) x[r * ld + i] = SENTINEL;
    memcpy(x2, x, rows * ld * sizeof *x);
    for (size_t i = 0; i < rows * ld; i++) dx[i] = SENTINEL;
    int32_t tg[4] = {0, 36, 5, -100};
    sg_cross_entropy_options co = {SG_REDUCTION_NONE, -100, 0.05f, 1e-4f};
    CHECK(sg_cross_entropy_f32(ctx, rows, n, x, ld, tg, loss, dx, ld, &co, NULL) == SG_OK, "s");
    CHECK(sg_cross_entropy_f32(ctx, rows, n, x2, ld, tg, loss2, x2, ld, &co, NULL) == SG_OK, "s");
    CHECK(sg_cross_entropy_f32(ctx, rows, n, x, ld, tg, loss3, NULL, 0, &co, NULL) == SG_OK, "s");
    for (size_t r = 0; r < rows; r++) {
        CHECK(loss[r] == loss2[r] && loss[r] == loss3[r], "row %zu: %g %g %g", r, loss[r], loss2[r], loss3[r]);
        for (size_t i = 0; i < ld; i++) {
            if (i >= n) {
                CHECK(dx[r * ld + i] == SENTINEL && x2[r * ld + i] == SENTINEL, "gap written r %zu i %zu", r, i);
                continue;
            }
            CHECK(dx[r * ld + i] == x2[r * ld + i], "in place differs r %zu i %zu", r, i);
        }
    }
    /* in place with a NaN the max pass may skip: the row is NaN, loss NaN */
    x2[ld + 3] = NAN;
    CHECK(sg_cross_entropy_f32(ctx, 2, n, x2, ld, tg, loss2, x2, ld, &co, NULL) == SG_OK, "s");
    CHECK(isnan(loss2[1]) && !isnan(loss2[0]), "NaN row in place: %g %g", loss2[0], loss2[1]);
    for (size_t i = 0; i < n; i++) CHECK(isnan(x2[ld + i]), "NaN row in place: dx[%zu] = %g", i, x2[ld + i]);
    free(x), free(x2), free(dx);
    sg_context_destroy(ctx);
}

/* ---- spherical Z-loss ------------------------------------------------------ */

static double ref_zloss(size_t n, const double *z, const int *rm, size_t tg, double a, double b,
                        double *grad, double t) {
    double mu = 0.0, ss = 0.0;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (!rm[i]) mu += z[i], k++;
    mu /= (double)k;
    for (size_t i = 0; i < n; i++)
        if (!rm[i]) ss += (z[i] - mu) * (z[i] - mu);
    double sigma = sqrt(ss / (double)k), zt = sigma > 0 ? (z[tg] - mu) / sigma : 0.0;
    double u = a * (b - zt), l = log1p(exp(u)) / a, sg = 1.0 / (1.0 + exp(-u));
    for (size_t i = 0; grad && i < n; i++)
        grad[i] = rm[i] || sigma == 0 ? 0.0
                                      : -sg / (sigma * t) * ((i == tg) - 1.0 / (double)k -
                                                              zt * (z[i] - mu) / sigma / (double)k);
    return l;
}

TEST(losses_zloss_reference_fd) {
    sg_context *ctx = test_context(2);
    static const size_t ns[] = {2, 3, 16, 17, 100, 1000};
    for (size_t ni = 0; ni < 6; ni++) {
        size_t n = ns[ni], rows = 4;
        float *x = test_random_f32(rows * n, 5.0, 500 + n);
        uint8_t *keep = test_alloc(rows * n);
        for (size_t i = 0; i < rows * n; i++) keep[i] = (i * 7) % 5 != 0 || i % n < 2;
        int32_t tg[4] = {0, (int32_t)(n - 1), 1, -100};
        for (int masked = 0; masked < 2; masked++) {
            sg_softmax_options o = test_temperature(0.9f);
            if (masked) o.keep_mask = keep, o.keep_mask_ld = n;
            for (size_t r = 0; masked && r < 3; r++)
                while (!keep[r * n + (size_t)tg[r]]) tg[r] = (tg[r] + 1) % (int32_t)n;
            sg_spherical_zloss_options zo = {SG_REDUCTION_NONE, -100, 2.0f, 1.5f};
            float loss[4], *dx = test_alloc(rows * n * sizeof *dx);
            CHECK(sg_spherical_zloss_f32(ctx, rows, n, x, n, tg, loss, dx, n, &zo, &o) == SG_OK, "%s",
                  sg_context_error(ctx));
            for (size_t r = 0; r < 3; r++) {
                double *z = test_alloc(n * sizeof *z), *gr = test_alloc(n * sizeof *gr);
                int *rm = test_alloc(n * sizeof *rm);
                z_row(n, x + r * n, masked ? keep + r * n : NULL, NULL, 0.9, z, rm);
                double l = ref_zloss(n, z, rm, (size_t)tg[r], 2.0, 1.5, gr, 0.9);
                CHECK(fabs(loss[r] - l) <= 1e-6 * fmax(1, l), "n=%zu r=%zu: %.9g vs %.9g", n, r, loss[r], l);
                for (size_t i = 0; i < n; i++) {
                    CHECK(fabs(dx[r * n + i] - gr[i]) <= 1e-6 * fabs(gr[i]) + 1e-9, "n=%zu r=%zu i=%zu: %.9g vs %.9g",
                          n, r, i, dx[r * n + i], gr[i]);
                    if (rm[i] || i > 20) continue; /* central differences on a few entries */
                    double h = 1e-5, zi = z[i];
                    z[i] = zi + h / 0.9;
                    double lp = ref_zloss(n, z, rm, (size_t)tg[r], 2.0, 1.5, NULL, 0.9);
                    z[i] = zi - h / 0.9;
                    double lm = ref_zloss(n, z, rm, (size_t)tg[r], 2.0, 1.5, NULL, 0.9);
                    z[i] = zi;
                    double fd = (lp - lm) / (2 * h);
                    CHECK(fabs(dx[r * n + i] - fd) <= 1e-6 + 1e-4 * fabs(fd), "fd n=%zu r=%zu i=%zu: %.9g vs %.9g",
                          n, r, i, dx[r * n + i], fd);
                }
                free(z), free(gr), free(rm);
            }
            CHECK(loss[3] == 0.0f && dx[3 * n] == 0.0f, "ignored row");
            /* shift and scale invariance (no add mask): same loss for 3x + 7 */
            float *y = test_alloc(rows * n * sizeof *y), ly[4];
            for (size_t i = 0; i < rows * n; i++) y[i] = 3.0f * x[i] + 7.0f;
            CHECK(sg_spherical_zloss_f32(ctx, rows, n, y, n, tg, ly, NULL, 0, &zo, &o) == SG_OK, "s");
            for (size_t r = 0; r < 3; r++)
                CHECK(fabs(ly[r] - loss[r]) <= 1e-5 * fmax(1, loss[r]), "invariance r=%zu: %g vs %g", r, ly[r], loss[r]);
            free(y), free(dx);
        }
        free(x), free(keep);
    }
    sg_context_destroy(ctx);
}

TEST(losses_zloss_special) {
    sg_context *ctx = test_context(1);
    float x[4][3] = {{2, 2, 2}, {1, NAN, 0}, {1, INFINITY, 0}, {5, -INFINITY, 0}}, loss[4], dx[4][3];
    int32_t tg[4] = {1, 0, 0, 0};
    sg_spherical_zloss_options zo = {SG_REDUCTION_NONE, -100, 0.5f, 2.0f};
    CHECK(sg_spherical_zloss_f32(ctx, 4, 3, &x[0][0], 3, tg, loss, &dx[0][0], 3, &zo, NULL) == SG_OK, "s");
    double want = log1p(exp(0.5 * 2.0)) / 0.5;
    CHECK(fabs(loss[0] - want) < 1e-6 && dx[0][0] == 0.0f && dx[0][1] == 0.0f, "sigma 0: %g vs %g", loss[0], want);
    for (int r = 1; r < 4; r++) CHECK(isnan(loss[r]) && isnan(dx[r][2]), "row %d: %g", r, loss[r]);
    /* one kept entry: sigma 0 */
    uint8_t keep[3] = {0, 1, 0};
    sg_softmax_options o = sg_softmax_options_default();
    o.keep_mask = keep;
    float y[3] = {1, 2, 3};
    CHECK(sg_spherical_zloss_f32(ctx, 1, 3, y, 3, &tg[0], loss, dx[0], 3, &zo, &o) == SG_OK, "s");
    CHECK(fabs(loss[0] - want) < 1e-6 && dx[0][1] == 0.0f, "one kept: %g", loss[0]);
    sg_context_destroy(ctx);
}

/* ---- confidence ------------------------------------------------------------ */

/* max_prob, margin, entropy, energy of z (double; removed as -inf). */
static void ref_conf(size_t n, const double *z, double t, double out[4]) {
    double m = -INFINITY, m2 = -INFINITY, s = 0.0, h = 0.0;
    size_t at = 0;
    for (size_t i = 0; i < n; i++)
        if (z[i] > m) m = z[i], at = i;
    for (size_t i = 0; i < n; i++)
        if (i != at && z[i] > m2) m2 = z[i];
    for (size_t i = 0; i < n; i++) s += exp(z[i] - m);
    for (size_t i = 0; i < n; i++) {
        double p = exp(z[i] - m) / s;
        if (p > 0) h -= p * log(p);
    }
    out[0] = 1.0 / s;
    out[1] = (1.0 - exp(m2 - m)) / s;
    out[2] = h;
    out[3] = -t * (m + log(s));
}

static void check_conf_rows(sg_context *ctx, size_t rows, size_t n, const float *x,
                            const sg_softmax_options *o, const char *what) {
    float *out[4];
    for (int q = 0; q < 4; q++) out[q] = test_alloc(rows * sizeof(float));
    CHECK(sg_confidence_f32(ctx, rows, n, x, n, out[0], out[1], out[2], out[3], o) == SG_OK, "%s: %s",
          what, sg_context_error(ctx));
    double *z = test_alloc(n * sizeof *z);
    int *rm = test_alloc(n * sizeof *rm);
    for (size_t r = 0; r < rows; r++) {
        const uint8_t *keep = o->keep_mask ? o->keep_mask + r * o->keep_mask_ld : NULL;
        const float *add = o->add_mask ? (const float *)o->add_mask + r * o->add_mask_ld : NULL;
        z_row(n, x + r * n, keep, add, o->temperature, z, rm);
        double ref[4];
        ref_conf(n, z, o->temperature, ref);
        static const char *names[] = {"max_prob", "margin", "entropy", "energy"};
        static const double rel[] = {1e-6, 1e-6, 2e-6, 1e-6}, ab[] = {0, 1e-7, 1e-6, 1e-6};
        for (int q = 0; q < 4; q++)
            CHECK(fabs(out[q][r] - ref[q]) <= ab[q] + rel[q] * fabs(ref[q]), "%s n=%zu r=%zu %s: %.9g vs %.9g",
                  what, n, r, names[q], out[q][r], ref[q]);
    }
    for (int q = 0; q < 4; q++) free(out[q]);
    free(z), free(rm);
}

TEST(losses_confidence) {
    sg_context *ctx = test_context(2);
    static const size_t ns[] = {1, 2, 3, 15, 16, 17, 64, 65, 1000, 1025, 5000};
    static const double scales[] = {0.01, 1.0, 30.0};
    for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++)
        for (int si = 0; si < 3; si++) {
            size_t n = ns[ni], rows = 5;
            float *x = test_random_f32(rows * n, scales[si], 900 + n * 3 + (size_t)si);
            if (n > 3) x[2 * n + 1] = x[2 * n + 2] = 50.0f; /* a tied maximum: margin 0 */
            sg_softmax_options o = test_temperature(si == 2 ? 2.5f : 1.0f);
            check_conf_rows(ctx, rows, n, x, &o, "plain");
            uint8_t *keep = test_alloc(rows * n);
            for (size_t i = 0; i < rows * n; i++) keep[i] = i % 3 != 1 || i % n == 0;
            o.keep_mask = keep;
            o.keep_mask_ld = n;
            check_conf_rows(ctx, rows, n, x, &o, "keep");
            free(x), free(keep);
        }
    /* extremes: huge logits, tiny T; the subset outputs alone */
    float x[6] = {3e38f, -3e38f, 2.9e38f, 1e-30f, 0.0f, -1e-30f};
    sg_softmax_options o = test_temperature(1e-30f);
    check_conf_rows(ctx, 2, 3, x, &o, "extreme");
    float e[2];
    CHECK(sg_confidence_f32(ctx, 2, 3, x, 3, NULL, NULL, e, NULL, &o) == SG_OK, "subset");
    CHECK(e[0] == 0.0f && e[1] >= 0.0f, "entropy of a sharp row: %g", e[0]);
    sg_context_destroy(ctx);
}

TEST(losses_confidence_special) {
    sg_context *ctx = test_context(1);
    const float I = INFINITY;
    float x[5][3] = {{1, NAN, 0}, {I, 0, 1}, {I, I, 0}, {-I, -I, -I}, {1, -I, 0}}, o[4][5];
    CHECK(sg_confidence_f32(ctx, 5, 3, &x[0][0], 3, o[0], o[1], o[2], o[3], NULL) == SG_OK, "s");
    CHECK(isnan(o[0][0]) && isnan(o[1][0]) && isnan(o[2][0]) && isnan(o[3][0]), "NaN row");
    CHECK(o[0][1] == 1 && o[1][1] == 1 && o[2][1] == 0 && o[3][1] == -I, "one +inf: %g %g %g %g", o[0][1],
          o[1][1], o[2][1], o[3][1]);
    CHECK(o[0][2] == 0.5f && o[1][2] == 0 && fabs(o[2][2] - log(2.0)) < 1e-7 && o[3][2] == -I, "two +inf");
    CHECK(o[0][3] == 0 && o[1][3] == 0 && o[2][3] == 0 && o[3][3] == I, "all -inf");
    double p = 1.0 / (1.0 + exp(-1.0));
    CHECK(fabs(o[0][4] - p) < 1e-7 && fabs(o[1][4] - (2 * p - 1)) < 1e-7, "-inf entry: %g", o[0][4]);
    uint8_t keep[3] = {0, 0, 0};
    sg_softmax_options op = sg_softmax_options_default();
    op.keep_mask = keep;
    CHECK(sg_confidence_f32(ctx, 1, 3, x[4], 3, o[0], o[1], o[2], o[3], &op) == SG_OK, "s");
    CHECK(o[0][0] == 0 && o[3][0] == I, "all removed");
    CHECK(sg_confidence_f32(ctx, 1, 0, NULL, 0, o[0], o[1], o[2], o[3], NULL) == SG_OK, "n = 0");
    CHECK(o[0][0] == 0 && o[1][0] == 0 && o[2][0] == 0 && o[3][0] == I, "n = 0 row");
    sg_context_destroy(ctx);
}

/* ---- fused softmax + top-k ------------------------------------------------- */

typedef struct ranked {
    double key;
    int cls; /* 3 NaN, 2 +inf, 1 finite, 0 -inf */
    int32_t i;
} ranked;

static int cmp_rank(const void *a, const void *b) {
    const ranked *p = a, *q = b;
    if (p->cls != q->cls) return q->cls - p->cls;
    if (p->cls == 1 && p->key != q->key) return p->key < q->key ? 1 : -1;
    return (p->i > q->i) - (p->i < q->i);
}

/* Checks one row's top-k against a stable sort of z (double). */
static void check_topk_row(size_t n, size_t k, const double *z, const int *rm, double t,
                           const int32_t *ix, const float *pr, const char *what, int *reported) {
    ranked *a = test_alloc(n * sizeof *a);
    size_t f = 0, nan = 0, inf = 0;
    double m = -INFINITY, s = 0.0;
    for (size_t i = 0; i < n; i++) {
        if (rm[i]) continue;
        int cls = isnan(z[i]) ? 3 : z[i] == INFINITY ? 2 : z[i] == -INFINITY ? 0 : 1;
        nan += cls == 3, inf += cls == 2;
        a[f++] = (ranked){z[i], cls, (int32_t)i};
        if (cls == 1) m = fmax(m, z[i]);
    }
    for (size_t i = 0; i < f; i++)
        if (a[i].cls == 1) s += exp(a[i].key - m);
    qsort(a, f, sizeof *a, cmp_rank);
    for (size_t q = 0; q < k; q++) {
        int32_t want = q < f ? a[q].i : -1;
        double p = q >= f ? 0.0 : nan ? NAN : inf ? (a[q].cls == 2 ? 1.0 / (double)inf : 0.0)
                                    : a[q].cls == 1 ? exp(a[q].key - m) / s : 0.0;
        int ok = ix[q] == want && (isnan(p) ? isnan(pr[q]) : fabs(pr[q] - p) <= 3e-7 * p + 1e-38);
        if (!ok && (*reported)++ < 5)
            CHECK(0, "%s n=%zu k=%zu slot %zu: index %d prob %.9g, want %d %.9g", what, n, k, q, ix[q],
                  pr[q], want, p);
    }
    (void)t;
    free(a);
}

static void check_topk(sg_context *ctx, size_t rows, size_t n, size_t k, const float *x,
                       const sg_softmax_options *o, const char *what) {
    int32_t *ix = test_alloc(rows * k * sizeof *ix);
    float *pr = test_alloc(rows * k * sizeof *pr);
    sg_status st = sg_softmax_topk_f32(ctx, rows, n, x, n, k, ix, k, pr, k, o);
    CHECK(st == SG_OK, "%s: %s", what, sg_context_error(ctx));
    double *z = test_alloc(n * sizeof *z);
    int *rm = test_alloc(n * sizeof *rm), reported = 0;
    for (size_t r = 0; st == SG_OK && r < rows; r++) {
        const uint8_t *keep = o && o->keep_mask ? o->keep_mask + r * o->keep_mask_ld : NULL;
        const float *add = o && o->add_mask ? (const float *)o->add_mask + r * o->add_mask_ld : NULL;
        z_row(n, x + r * n, keep, add, o ? o->temperature : 1.0, z, rm);
        check_topk_row(n, k, z, rm, 1.0, ix + r * k, pr + r * k, what, &reported);
    }
    free(ix), free(pr), free(z), free(rm);
}

TEST(losses_topk_reference) {
    sg_context *ctx = test_context(2);
    static const size_t ns[] = {1, 2, 7, 15, 16, 17, 63, 64, 65, 100, 1000, 4095, 4096, 4097, 9000};
    static const size_t ks[] = {1, 2, 3, 8, 16, 17, 64, 300};
    for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++)
        for (size_t ki = 0; ki <= sizeof ks / sizeof ks[0]; ki++) {
            size_t n = ns[ni], k = ki < sizeof ks / sizeof ks[0] ? ks[ki] : n, rows = 3;
            if (k > n || (test_quick && n > 4097 && k > 64)) continue;
            float *x = test_random_f32(rows * n, 4.0, n * 31 + k);
            /* an ascending row: every element is inserted */
            for (size_t i = 0; i < n; i++) x[n + i] = (float)i * 0.01f - 3.0f;
            sg_softmax_options o = test_temperature(ki % 2 ? 0.6f : 1.0f);
            char what[64];
            snprintf(what, sizeof what, "T=%g", (double)o.temperature);
            check_topk(ctx, rows, n, k, x, &o, what);
            free(x);
        }
    sg_context_destroy(ctx);
}

TEST(losses_topk_ties_masks) {
    sg_context *ctx = test_context(1);
    const size_t rows = 4, n = 200;
    float *x = test_alloc(rows * n * sizeof *x);
    test_rng rng = test_rng_seed(42);
    for (size_t i = 0; i < rows * n; i++) x[i] = (float)(int)(test_uniform(&rng) * 5.0); /* many ties */
    static const size_t ks[] = {1, 2, 8, 64, 200};
    for (size_t ki = 0; ki < 5; ki++) check_topk(ctx, rows, n, ks[ki], x, NULL, "ties");
    /* all equal: the k lowest indices, probability 1/n */
    for (size_t i = 0; i < n; i++) x[i] = 1.5f;
    int32_t ix[8];
    float pr[8];
    CHECK(sg_softmax_topk_f32(ctx, 1, n, x, n, 8, ix, 8, pr, 8, NULL) == SG_OK, "s");
    for (int q = 0; q < 8; q++) CHECK(ix[q] == q && fabs(pr[q] - 1.0 / n) < 1e-9, "equal row slot %d: %d", q, ix[q]);
    /* masks: keep (some rows keep fewer than k: index -1), add */
    uint8_t *keep = test_alloc(rows * n);
    float *add = test_random_f32(rows * n, 2.0, 8);
    for (size_t i = 0; i < rows * n; i++) {
        keep[i] = (i / n == 2) ? i % n < 5 : (i % 4 != 0);
        if (i % 7 == 3) add[i] = -INFINITY;
    }
    float *y = test_random_f32(rows * n, 3.0, 11);
    for (size_t ki = 0; ki < 5; ki++) {
        sg_softmax_options o = test_temperature(0.8f);
        o.keep_mask = keep, o.keep_mask_ld = n;
        check_topk(ctx, rows, n, ks[ki], y, &o, "keep");
        o.keep_mask = NULL;
        o.add_mask = add, o.add_mask_ld = ki % 2 ? 0 : n;
        check_topk(ctx, rows, n, ks[ki], y, &o, "add");
    }
    /* indices only */
    CHECK(sg_softmax_topk_f32(ctx, 1, n, y, n, 8, ix, 8, NULL, 0, NULL) == SG_OK, "prob NULL");
    free(x), free(keep), free(add), free(y);
    sg_context_destroy(ctx);
}

TEST(losses_topk_special) {
    sg_context *ctx = test_context(1);
    const float I = INFINITY;
    float x[5][6] = {{1, NAN, 2, I, 3, NAN}, {1, I, 2, I, 3, 0}, {-I, -I, -I, -I, -I, -I},
                     {1, -I, 2, -I, 0, 5}, {3e38f, -3e38f, 3e38f, 1, 2, 3}};
    for (size_t k = 1; k <= 6; k++) {
        check_topk(ctx, 5, 6, k, &x[0][0], NULL, "special");
        sg_softmax_options o = test_temperature(1e-38f); /* T tiny: the exact path for every row */
        check_topk(ctx, 5, 6, k, &x[0][0], &o, "tiny T");
    }
    sg_context_destroy(ctx);
}

TEST(losses_topk_scan_kernels) {
    size_t count;
    const sg_loss_kernel_entry *e = sg_loss_kernel_entries(&count);
    static const size_t ks[] = {1, 2, 3, 8, 16, 17, 31, 32, 33, 64, 65, 100};
    for (size_t ki = 0; ki < count; ki++) {
        if (!sg_cpu_supports(e[ki].isa)) continue;
        for (size_t n = 0; n <= 300; n += n < 140 ? 1 : 17)
            for (size_t kq = 0; kq < sizeof ks / sizeof ks[0]; kq++)
                for (int pre = 0; pre < 3; pre++) {
                    size_t k = ks[kq];
                    float *x = test_random_f32(n + 1, 1.0, n * 3 + k);
                    for (size_t i = 0; i < n; i += 5) x[i + 1] = x[i / 2 + 1]; /* ties */
                    if (n > 9) x[n / 2] = -INFINITY, x[n / 3] = 2.5f, x[n - 1] = 2.5f;
                    double v0[128], v1[128];
                    int32_t i0[128], i1[128];
                    sg_topk_buf a, b;
                    sg_topk_reset(&a, k, v0, i0);
                    sg_topk_reset(&b, k, v1, i1);
                    /* start empty, half full or full (values around the data's) */
                    size_t fill = pre == 0 ? 0 : pre == 1 ? k / 2 : k;
                    for (size_t i = 0; i < fill; i++) {
                        float s = 1.5f - 0.25f * (float)i;
                        sg_topk_insert(&a, s, (int32_t)i);
                        sg_topk_insert(&b, s, (int32_t)i);
                    }
                    float m0 = sg_topk_scan_f32__ref(n, x + 1, 1000, &a); /* unaligned */
                    float m1 = e[ki].fn(n, x + 1, 1000, &b);
                    sg_topk_finish(&a);
                    sg_topk_finish(&b);
                    int same = a.count == b.count && m0 == m1;
                    for (size_t q = 0; same && q < a.count; q++) same = v0[q] == v1[q] && i0[q] == i1[q];
                    CHECK(same, "%s n=%zu k=%zu prefill %zu differs from the reference (max %g vs %g)",
                          e[ki].name, n, k, fill, m1, m0);
                    free(x);
                }
    }
}

/* ---- threads ---------------------------------------------------------------- */

TEST(losses_threads_identical) {
    const size_t rows = 301, n = 333, k = 5;
    float *x = test_random_f32(rows * n, 5.0, 1234);
    int32_t *tg = test_alloc(rows * sizeof *tg);
    for (size_t r = 0; r < rows; r++) tg[r] = r % 9 == 0 ? -100 : (int32_t)((r * 37) % n);
    float *res[3][8];
    for (int tc = 0; tc < 3; tc++) {
        sg_context *ctx = test_context(tc + 1);
        for (int q = 0; q < 8; q++) res[tc][q] = test_alloc(rows * n * sizeof(float));
        sg_cross_entropy_options co = {SG_REDUCTION_MEAN, -100, 0.1f, 1e-4f};
        CHECK(sg_cross_entropy_f32(ctx, rows, n, x, n, tg, res[tc][0], res[tc][1], n, &co, NULL) == SG_OK, "ce");
        co.reduction = SG_REDUCTION_SUM;
        CHECK(sg_cross_entropy_f32(ctx, rows, n, x, n, tg, res[tc][0] + 1, NULL, 0, &co, NULL) == SG_OK, "ce");
        sg_spherical_zloss_options zo = {SG_REDUCTION_SUM, -100, 1.0f, 0.5f};
        CHECK(sg_spherical_zloss_f32(ctx, rows, n, x, n, tg, res[tc][2], res[tc][3], n, &zo, NULL) == SG_OK, "zl");
        CHECK(sg_confidence_f32(ctx, rows, n, x, n, res[tc][4], res[tc][4] + rows, res[tc][4] + 2 * rows,
                                res[tc][4] + 3 * rows, NULL) == SG_OK, "conf");
        CHECK(sg_softmax_topk_f32(ctx, rows, n, x, n, k, (int32_t *)res[tc][5], k, res[tc][6], k, NULL) == SG_OK, "topk");
        CHECK(sg_softmax_topk_f32(ctx, rows, n, x, n, 300, (int32_t *)res[tc][7], 300, NULL, 0, NULL) == SG_OK, "topk 300");
        sg_context_destroy(ctx);
    }
    const size_t sizes[8] = {2, rows * n, 1, rows * n, 4 * rows, rows * k, rows * k, rows * 300};
    for (int tc = 1; tc < 3; tc++)
        for (int q = 0; q < 8; q++)
            CHECK(memcmp(res[0][q], res[tc][q], sizes[q] * sizeof(float)) == 0, "output %d differs at %d threads",
                  q, tc + 1);
    for (int tc = 0; tc < 3; tc++)
        for (int q = 0; q < 8; q++) free(res[tc][q]);
    free(x), free(tg);
}

/* ---- argument errors -------------------------------------------------------- */

TEST(losses_args_errors) {
    sg_context *ctx = test_context(1);
    float x[8] = {1, 2, 3, 4, 5, 6, 7, 8}, loss[2] = {SENTINEL, SENTINEL}, dx[8];
    int32_t tg[2] = {0, 3}, ix[4];
    for (int i = 0; i < 8; i++) dx[i] = SENTINEL;
    sg_cross_entropy_options co = sg_cross_entropy_options_default();
#define EXPECT(call, status, word)                                                             \
    do {                                                                                       \
        sg_status s_ = (call);                                                                 \
        CHECK(s_ == (status), "%s: status %d", #call, (int)s_);                                \
        CHECK(strstr(sg_context_error(ctx), word) != NULL, "%s: message '%s' lacks '%s'", #call, \
              sg_context_error(ctx), word);                                                    \
    } while (0)
    EXPECT(sg_cross_entropy_f32(ctx, 2, 4, NULL, 4, tg, loss, dx, 4, &co, NULL), SG_ERR_ARGUMENT, "x");
    EXPECT(sg_cross_entropy_f32(ctx, 2, 4, x, 4, NULL, loss, dx, 4, &co, NULL), SG_ERR_ARGUMENT, "target");
    EXPECT(sg_cross_entropy_f32(ctx, 2, 4, x, 4, tg, NULL, dx, 4, &co, NULL), SG_ERR_ARGUMENT, "loss");
    EXPECT(sg_cross_entropy_f32(ctx, 2, 4, x, 3, tg, loss, dx, 4, &co, NULL), SG_ERR_SHAPE, "x");
    EXPECT(sg_cross_entropy_f32(ctx, 2, 4, x, 4, tg, loss, dx, 3, &co, NULL), SG_ERR_SHAPE, "dx");
    EXPECT(sg_cross_entropy_f32(ctx, 2, 3, x, 4, tg, loss, x, 3, &co, NULL), SG_ERR_SHAPE, "in place");
    tg[1] = 4;
    EXPECT(sg_cross_entropy_f32(ctx, 2, 4, x, 4, tg, loss, dx, 4, &co, NULL), SG_ERR_ARGUMENT, "target[1]");
    tg[1] = -1;
    EXPECT(sg_cross_entropy_f32(ctx, 2, 4, x, 4, tg, loss, dx, 4, &co, NULL), SG_ERR_ARGUMENT, "target[1]");
    tg[1] = 3;
    uint8_t keep[4] = {1, 1, 1, 0};
    sg_softmax_options o = sg_softmax_options_default();
    o.keep_mask = keep;
    EXPECT(sg_cross_entropy_f32(ctx, 2, 4, x, 4, tg, loss, dx, 4, &co, &o), SG_ERR_ARGUMENT, "removed");
    co.label_smoothing = 1.5f;
    EXPECT(sg_cross_entropy_f32(ctx, 2, 4, x, 4, tg, loss, dx, 4, &co, NULL), SG_ERR_ARGUMENT, "label_smoothing");
    co.label_smoothing = NAN;
    EXPECT(sg_cross_entropy_f32(ctx, 2, 4, x, 4, tg, loss, dx, 4, &co, NULL), SG_ERR_ARGUMENT, "label_smoothing");
    co.label_smoothing = 0.0f;
    co.z_loss = -1.0f;
    EXPECT(sg_cross_entropy_f32(ctx, 2, 4, x, 4, tg, loss, dx, 4, &co, NULL), SG_ERR_ARGUMENT, "z_loss");
    co.z_loss = INFINITY;
    EXPECT(sg_cross_entropy_f32(ctx, 2, 4, x, 4, tg, loss, dx, 4, &co, NULL), SG_ERR_ARGUMENT, "z_loss");
    co.z_loss = 0.0f;
    co.reduction = (sg_loss_reduction)7;
    EXPECT(sg_cross_entropy_f32(ctx, 2, 4, x, 4, tg, loss, dx, 4, &co, NULL), SG_ERR_ARGUMENT, "reduction");
    co.reduction = SG_REDUCTION_MEAN;
    o = test_temperature(0.0f);
    EXPECT(sg_cross_entropy_f32(ctx, 2, 4, x, 4, tg, loss, dx, 4, &co, &o), SG_ERR_ARGUMENT, "temperature");
    EXPECT(sg_cross_entropy_f32(ctx, 2, 0, x, 4, tg, loss, dx, 4, &co, NULL), SG_ERR_ARGUMENT, "target[0]");
    CHECK(loss[0] == SENTINEL && loss[1] == SENTINEL && dx[0] == SENTINEL, "written on error");
    sg_spherical_zloss_options zo = sg_spherical_zloss_options_default();
    zo.a = 0.0f;
    EXPECT(sg_spherical_zloss_f32(ctx, 2, 4, x, 4, tg, loss, dx, 4, &zo, NULL), SG_ERR_ARGUMENT, "a must");
    zo.a = 1.0f;
    zo.b = NAN;
    EXPECT(sg_spherical_zloss_f32(ctx, 2, 4, x, 4, tg, loss, dx, 4, &zo, NULL), SG_ERR_ARGUMENT, "b must");
    zo.b = 0.0f;
    tg[0] = 9;
    EXPECT(sg_spherical_zloss_f32(ctx, 2, 4, x, 4, tg, loss, dx, 4, &zo, NULL), SG_ERR_ARGUMENT, "target[0]");
    tg[0] = 0;
    EXPECT(sg_confidence_f32(ctx, 2, 4, x, 4, NULL, NULL, NULL, NULL, NULL), SG_ERR_ARGUMENT, "all NULL");
    EXPECT(sg_confidence_f32(ctx, 2, 4, NULL, 4, loss, NULL, NULL, NULL, NULL), SG_ERR_ARGUMENT, "x");
    EXPECT(sg_softmax_topk_f32(ctx, 2, 4, x, 4, 5, ix, 5, NULL, 0, NULL), SG_ERR_ARGUMENT, "k (5)");
    EXPECT(sg_softmax_topk_f32(ctx, 2, 4, x, 4, 0, ix, 1, NULL, 0, NULL), SG_ERR_ARGUMENT, "k (0)");
    EXPECT(sg_softmax_topk_f32(ctx, 2, 4, x, 4, 2, NULL, 2, NULL, 0, NULL), SG_ERR_ARGUMENT, "index");
    EXPECT(sg_softmax_topk_f32(ctx, 2, 4, x, 4, 2, ix, 1, NULL, 0, NULL), SG_ERR_SHAPE, "index");
    EXPECT(sg_softmax_topk_f32(ctx, 2, 4, x, 4, 2, ix, 2, loss, 1, NULL), SG_ERR_SHAPE, "prob");
    CHECK(loss[0] == SENTINEL && dx[0] == SENTINEL, "written on error");
    CHECK(sg_cross_entropy_f32(NULL, 2, 4, x, 4, tg, loss, dx, 4, &co, NULL) == SG_ERR_ARGUMENT, "NULL ctx");
#undef EXPECT
    sg_context_destroy(ctx);
}

/*
 * adaptive_temperature.c - adaptive-temperature softmax (Velickovic,
 * Perivolaropoulos, Barbero and Pascanu, "softmax is not enough (for sharp
 * out-of-distribution)", 2024), float32, inference only (no backward).
 *
 * Per row: H = entropy of softmax(z), beta = max(P(H), 1) when H > 0.5
 * else 1, y = softmax(beta z). Unmasked rows use the softmax core's
 * kernels: rmax, then blocks of e = exp((x - max) c) and d = (x - max) c
 * on the stack for S = sum e and E = sum e d (the core's dot), so
 * H = log S - E / S without a logarithm per entry; then expsum_store and
 * scale with c beta. The
 * first pass writes nothing, so y == x works. Masked and special rows are
 * computed in double here.
 */
#include "normalizers/alternatives_internal.h"

#define BLOCK 1024

/* The paper's fit of the optimal inverse temperature against entropy
 * (its Figure 5; coefficients from the authors' code, highest power
 * first), and the rule around it. */
static double beta_of(double h) {
    static const double poly[5] = {-0.037, 0.481, -2.3, 4.917, -1.791};
    if (!(h > 0.5)) return 1.0;
    double p = 0.0;
    for (int i = 0; i < 5; i++) p = p * h + poly[i];
    return p > 1.0 ? p : 1.0;
}

static void set_beta(const alt_job *j, size_t r, double beta) {
    if (j->beta) j->beta[r] = (float)beta;
}

/* Masks and special values, in double: the softmax table for NaN / +inf /
 * nothing kept (beta 1), else the rule on z - zmax. */
static void exact_row(const alt_job *j, size_t r) {
    const sg_row_view v = alt_view(j, r);
    const sg_row_scan s = sg_row_scan_f32(&v, j->n);
    float *y = j->out + r * j->ldo;
    if (s.nan || s.posinf || !s.finite) {
        for (size_t i = 0; i < j->n; i++) {
            if (sg_row_removed(&v, i)) y[i] = 0.0f;
            else if (s.nan) y[i] = NAN;
            else y[i] = s.posinf && sg_row_z_class(&v, i) == 1 ? 1.0f / (float)s.posinf : 0.0f;
        }
        set_beta(j, r, 1.0);
        return;
    }
    /* d_i = z_i - z_max by the core's exact difference (no overflow). */
    double sum = 0.0, ed = 0.0;
    for (size_t i = 0; i < j->n; i++) {
        if (sg_row_removed(&v, i) || v.x[i] == -INFINITY) continue;
        double d = sg_row_z_minus(&v, i, s.xb, s.ab), e = exp(d);
        sum += e;
        if (e > 0.0) ed += e * d;
    }
    const double h = log(sum) - ed / sum, beta = beta_of(h);
    double sum2 = 0.0;
    for (size_t i = 0; i < j->n; i++)
        if (!sg_row_removed(&v, i) && v.x[i] != -INFINITY)
            sum2 += exp(beta * sg_row_z_minus(&v, i, s.xb, s.ab));
    for (size_t i = 0; i < j->n; i++) {
        int gone = sg_row_removed(&v, i) || v.x[i] == -INFINITY;
        y[i] = gone ? 0.0f : (float)(exp(beta * sg_row_z_minus(&v, i, s.xb, s.ab)) / sum2);
    }
    set_beta(j, r, beta);
}

static void row(const alt_job *j, size_t r) {
    const float *x = j->x + r * j->ldx;
    float *y = j->out + r * j->ldo;
    const size_t n = j->n;
    const float xm = alt_masked(j) ? 0.0f : j->ck->rmax(n, x);
    /* masks, inf, NaN skipped by rmax, and the core's own exact-path
     * temperatures (T > 1e36) go to double */
    if (alt_masked(j) || !(xm - xm == 0.0f) || j->c < SG_EXACT_BELOW_C) {
        exact_row(j, r);
        return;
    }
    /* per block: e = exp(d) and d = (x - max) c on the stack, sum e d by
     * the core's dot kernel (a -inf entry gives 0 * inf = NaN there: such
     * rows, rare, are redone by the exact path) */
    float e[BLOCK], d[BLOCK];
    double sum = 0.0, ed = 0.0;
    for (size_t i = 0; i < n; i += BLOCK) {
        size_t len = n - i < BLOCK ? n - i : BLOCK;
        sum += j->ck->expsum_store(len, x + i, e, xm, j->c);
        j->ck->shift_store(len, x + i, d, xm, j->c, 0.0f);
        ed += j->ck->dot(len, e, d);
    }
    if (isnan(sum) || isnan(ed)) { /* a NaN rmax skipped, or a -inf entry */
        exact_row(j, r);
        return;
    }
    const double h = log(sum) - ed / sum, beta = beta_of(h);
    const double s2 = beta == 1.0 ? sum : j->ck->expsum_store(n, x, y, xm, (float)(j->c * beta));
    if (beta == 1.0) j->ck->expsum_store(n, x, y, xm, j->c);
    j->ck->scale(n, y, y, (float)(1.0 / s2));
    set_beta(j, r, beta);
}

sg_status sg_adaptive_temperature_softmax_f32(sg_context *ctx, size_t rows, size_t n,
                                              const float *x, size_t ldx, float *y, size_t ldy,
                                              float *beta_out, const sg_softmax_options *options) {
    static const char name[] = "sg_adaptive_temperature_softmax_f32";
    if (!ctx) return SG_ERR_ARGUMENT;
    sg_ok(ctx);
    sg_softmax_options o;
    float c;
    sg_status st = sg_alt_check_forward(ctx, name, rows, n, x, ldx, y, ldy, &o, options, &c);
    if (st != SG_OK || rows == 0) return st;
    if (n == 0) {
        for (size_t r = 0; beta_out && r < rows; r++) beta_out[r] = 1.0f;
        return SG_OK;
    }
    alt_job j = {0};
    j.row = row;
    j.x = x;
    j.ldx = ldx;
    j.out = y;
    j.ldo = ldy;
    j.beta = beta_out;
    sg_alt_run(ctx, &j, rows, n, &o, c);
    return SG_OK;
}

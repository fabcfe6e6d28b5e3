/*
 * spherical_zloss.c - the Z-loss of de Brebisson and Vincent (2016), a
 * shift- and scale-invariant classification loss of the spherical family:
 * z-normalize the row, then a softplus of the target's normalized score.
 * Not the logit z-loss (that term is in cross_entropy.c). Statistics are
 * formed in double, in two passes (mean, then centred squares), so the
 * normalization does not cancel; reductions and threads: losses_common.c.
 */
#include <float.h>
#include <math.h>

#include "losses/losses_internal.h"

typedef struct zl_params {
    double a, b;
} zl_params;

sg_spherical_zloss_options sg_spherical_zloss_options_default(void) {
    sg_spherical_zloss_options o = {SG_REDUCTION_MEAN, -100, 1.0f, 0.0f};
    return o;
}

/*
 * The values normalized: v_i = x_i / T + a_i with an additive mask; plain
 * x_i without one, since zhat = (v - mean v) / std v is then the same for
 * x and x / T (so T has no effect, exactly) and the gradient's 1/T cancels
 * against sigma's factor T.
 */
static inline double v_of(const sg_row_view *v, size_t i) {
    return v->add ? (double)v->x[i] / v->t + (double)v->add[i] : (double)v->x[i];
}

/* log(1 + e^u) without overflow or cancellation. */
static inline double softplus(double u) { return (u > 0.0 ? u : 0.0) + log1p(exp(-fabs(u))); }

/* sum of v - mu (square: of (v - mu)^2) over kept entries, and their
 * count; four accumulators when nothing is masked, for speed (the order is
 * fixed: the same bits always). Without masks mu is 0 for the plain sum. */
static double sum_v(const sg_row_view *v, size_t n, double mu, int square, size_t *kept) {
    if (!v->keep && !v->add) {
        const float *x = v->x;
        double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
        size_t i = 0;
        if (square) {
            for (; i + 4 <= n; i += 4) {
                double e0 = x[i] - mu, e1 = x[i + 1] - mu, e2 = x[i + 2] - mu, e3 = x[i + 3] - mu;
                s0 += e0 * e0, s1 += e1 * e1, s2 += e2 * e2, s3 += e3 * e3;
            }
            for (; i < n; i++) s0 += (x[i] - mu) * (x[i] - mu);
        } else {
            for (; i + 4 <= n; i += 4) s0 += x[i], s1 += x[i + 1], s2 += x[i + 2], s3 += x[i + 3];
            for (; i < n; i++) s0 += x[i];
        }
        *kept = n;
        return (s0 + s1) + (s2 + s3);
    }
    double s = 0.0;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (sg_row_removed(v, i)) continue;
        double e = v_of(v, i) - mu;
        s += square ? e * e : e, k++;
    }
    *kept = k;
    return s;
}

static double zl_row(const sg_loss_rows *j, size_t r, float *dx, double g) {
    const zl_params *p = j->params;
    const sg_row_view v = sg_loss_view(j, r);
    const size_t n = j->n, t = (size_t)j->target[r];
    size_t kept;
    const double sum = sum_v(&v, n, 0.0, 0, &kept);
    if (!(sum - sum == 0.0)) { /* a kept NaN or inf (finite values cannot overflow a double sum) */
        for (size_t i = 0; dx && i < n; i++) dx[i] = sg_row_removed(&v, i) ? 0.0f : NAN;
        return NAN;
    }
    const double mu = sum / (double)kept;
    const double sigma = sqrt(sum_v(&v, n, mu, 1, &kept) / (double)kept);
    const double zt = sigma > 0.0 ? (v_of(&v, t) - mu) / sigma : 0.0;
    const double u = p->a * (p->b - zt);
    const double l = softplus(u) / p->a;
    if (!dx) return l;
    if (!(sigma > 0.0) || !(sigma < INFINITY)) {
        for (size_t i = 0; i < n; i++) dx[i] = 0.0f;
        return l;
    }
    /* dl/dv_t = -sigmoid(u); dzhat_t/dv_i = ([i == t] - 1/K - zhat_t zhat_i / K) / sigma;
     * dv_i/dx_i = 1/T with an additive mask, else (x itself) 1 */
    const double sig = u >= 0.0 ? 1.0 / (1.0 + exp(-u)) : exp(u) / (1.0 + exp(u));
    const double s = -g * sig / (sigma * (v.add ? v.t : 1.0)), inv_k = 1.0 / (double)kept;
    const double c1 = -s * zt * inv_k / sigma; /* dx_i = s [i == t] - s / K + c1 (v_i - mu) */
    const double vt = v_of(&v, t);
    if (!v.keep && !v.add) {
        for (size_t i = 0; i < n; i++) dx[i] = (float)(-s * inv_k + c1 * ((double)v.x[i] - mu));
    } else {
        for (size_t i = 0; i < n; i++) /* entry i is read before it is written */
            dx[i] = sg_row_removed(&v, i) ? 0.0f : (float)(-s * inv_k + c1 * (v_of(&v, i) - mu));
    }
    dx[t] = (float)(s - s * inv_k + c1 * (vt - mu)); /* vt read before the row was written */
    return l;
}

sg_status sg_spherical_zloss_f32(sg_context *ctx, size_t rows, size_t n, const float *x,
                                 size_t ldx, const int32_t *target, float *loss, float *dx,
                                 size_t lddx, const sg_spherical_zloss_options *zo,
                                 const sg_softmax_options *options) {
    static const char name[] = "sg_spherical_zloss_f32";
    if (!ctx) return SG_ERR_ARGUMENT;
    sg_ok(ctx);
    sg_softmax_options o = options ? *options : sg_softmax_options_default();
    sg_spherical_zloss_options zl = zo ? *zo : sg_spherical_zloss_options_default();
    if (!(zl.a > 0.0f && zl.a <= FLT_MAX))
        return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: a must be finite and > 0 (got %g)", name,
                       (double)zl.a);
    if (!(zl.b - zl.b == 0.0f))
        return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: b must be finite (got %g)", name, (double)zl.b);
    sg_loss_rows j = {0};
    sg_status st = sg_loss_prepare(ctx, name, &j, rows, n, x, ldx, target, loss, dx, lddx,
                                   zl.reduction, zl.ignore_index, &o);
    if (st != SG_OK || rows == 0) return st;
    zl_params p = {zl.a, zl.b};
    j.fn = zl_row;
    j.params = &p;
    sg_loss_run(ctx, &j);
    return SG_OK;
}

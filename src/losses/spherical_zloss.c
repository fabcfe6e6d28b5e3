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

/* z_i = x_i / T + a_i in double (finite for finite inputs). */
static inline double z_of(const sg_row_view *v, size_t i) {
    return (double)v->x[i] / v->t + (v->add ? (double)v->add[i] : 0.0);
}

/* log(1 + e^u) without overflow or cancellation. */
static inline double softplus(double u) { return (u > 0.0 ? u : 0.0) + log1p(exp(-fabs(u))); }

static double zl_row(const sg_loss_rows *j, size_t r, float *dx, double g) {
    const zl_params *p = j->params;
    const sg_row_view v = sg_loss_view(j, r);
    const size_t n = j->n, t = (size_t)j->target[r];
    double sum = 0.0;
    size_t kept = 0;
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        if (sg_row_removed(&v, i)) continue;
        double z = z_of(&v, i);
        if (!(z - z == 0.0)) bad = 1;
        sum += z, kept++;
    }
    if (bad) {
        for (size_t i = 0; dx && i < n; i++) dx[i] = sg_row_removed(&v, i) ? 0.0f : NAN;
        return NAN;
    }
    const double mu = sum / (double)kept;
    double ss = 0.0;
    for (size_t i = 0; i < n; i++) {
        if (sg_row_removed(&v, i)) continue;
        double e = z_of(&v, i) - mu;
        ss += e * e;
    }
    const double sigma = sqrt(ss / (double)kept);
    const double zt = sigma > 0.0 ? (z_of(&v, t) - mu) / sigma : 0.0;
    const double u = p->a * (p->b - zt);
    const double l = softplus(u) / p->a;
    if (!dx) return l;
    if (!(sigma > 0.0) || !(sigma < INFINITY)) {
        for (size_t i = 0; i < n; i++) dx[i] = 0.0f;
        return l;
    }
    /* dl/dz_t = -sigmoid(u); dzhat_t/dz_i = ([i == t] - 1/K - zhat_t zhat_i / K) / sigma */
    const double sig = u >= 0.0 ? 1.0 / (1.0 + exp(-u)) : exp(u) / (1.0 + exp(u));
    const double s = -g * sig / (sigma * v.t), inv_k = 1.0 / (double)kept;
    for (size_t i = 0; i < n; i++) { /* entry i is read before it is written */
        if (sg_row_removed(&v, i)) {
            dx[i] = 0.0f;
            continue;
        }
        double zi = (z_of(&v, i) - mu) / sigma;
        dx[i] = (float)(s * ((i == t) - inv_k - zt * zi * inv_k));
    }
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

/*
 * cross_entropy.c - softmax cross-entropy with integer targets, label
 * smoothing, ignore_index, reductions and the logit z-loss, fused with its
 * gradient (PyTorch's torch.nn.functional.cross_entropy semantics). The
 * passes are the softmax core's kernels (rmax, expsum_store or expsum, sum,
 * scale, shift_store); masked and special rows use the exact z differences of
 * softmax_internal.h. Reductions and threads: losses_common.c.
 */
#include <float.h>
#include <math.h>

#include "losses/losses_internal.h"

#define ZBLOCK 1024

typedef struct ce_params {
    double eps, lambda;
} ce_params;

sg_cross_entropy_options sg_cross_entropy_options_default(void) {
    sg_cross_entropy_options o = {SG_REDUCTION_MEAN, -100, 0.0f, 0.0f};
    return o;
}

/* The row's terms from lse = off + log S (off = max z), the target's
 * shifted value dt = z_t - off and the mean of the kept shifted values
 * (dmean, used only with eps > 0). */
static double ce_loss(const ce_params *p, double off, double log_s, double dt, double dmean) {
    double lse = off + log_s;
    double l = (1.0 - p->eps) * (log_s - dt);
    if (p->eps > 0.0) l += p->eps * (log_s - dmean);
    if (p->lambda > 0.0) l += p->lambda * lse * lse;
    return l;
}

/* ---- special rows: NaN, +inf, nothing finite ------------------------------ */

static double special_row(const sg_loss_rows *j, const sg_row_view *v, const sg_row_scan *s,
                          size_t t, float *dx, double g) {
    const ce_params *p = j->params;
    size_t kept = 0;
    for (size_t i = 0; i < j->n; i++) kept += !sg_row_removed(v, i);
    double l = NAN;
    int nan_dx = 1;
    if (!s->nan && s->posinf && p->lambda == 0.0) {
        double lc = log((double)s->posinf);
        double nll = sg_row_z_class(v, t) == 1 ? lc : INFINITY;
        double smooth = s->posinf == kept ? lc : INFINITY;
        l = (1.0 - p->eps) * nll + (p->eps > 0.0 ? p->eps * smooth : 0.0);
        nan_dx = 0;
    } else if (!s->nan && s->posinf) {
        l = INFINITY;
    }
    /* l is known before dx (possibly x) is written */
    for (size_t i = 0; dx && i < j->n; i++) {
        if (sg_row_removed(v, i)) dx[i] = 0.0f;
        else if (nan_dx) dx[i] = NAN;
        else {
            double pi = sg_row_z_class(v, i) == 1 ? 1.0 / (double)s->posinf : 0.0;
            double q = (1.0 - p->eps) * (i == t) + p->eps / (double)kept;
            dx[i] = (float)(g / j->t * (pi - q));
        }
    }
    return l;
}

/* ---- the exact path: masks, inf, NaN --------------------------------------- */

/* z - z_b of entries [i0, i0 + len), -inf where removed or x = -inf. */
static void make_d(const sg_row_view *v, const sg_row_scan *s, size_t i0, size_t len, float *d) {
    for (size_t q = 0; q < len; q++) {
        size_t i = i0 + q;
        d[q] = sg_row_removed(v, i) || v->x[i] == -INFINITY
                   ? -INFINITY
                   : (float)sg_row_z_minus(v, i, s->xb, s->ab);
    }
}

static double exact_row(const sg_loss_rows *j, size_t r, float *dx, double g) {
    const ce_params *p = j->params;
    const sg_row_view v = sg_loss_view(j, r);
    const sg_row_scan s = sg_row_scan_f32(&v, j->n);
    const size_t t = (size_t)j->target[r], n = j->n;
    if (s.nan || s.posinf || !s.finite) return special_row(j, &v, &s, t, dx, g);
    float d[ZBLOCK];
    double sum = 0.0, dsum = 0.0;
    size_t kept = 0;
    for (size_t i = 0; i < n; i += ZBLOCK) {
        size_t len = n - i < ZBLOCK ? n - i : ZBLOCK;
        make_d(&v, &s, i, len, d);
        sum += j->k->expsum(len, d, 0.0f, 1.0f);
        for (size_t q = 0; q < len; q++)
            if (!sg_row_removed(&v, i + q)) kept++, dsum += d[q];
    }
    const double off = s.xb / v.t + s.ab, log_s = log(sum);
    const double dt = v.x[t] == -INFINITY ? -INFINITY : sg_row_z_minus(&v, t, s.xb, s.ab);
    const double l = ce_loss(p, off, log_s, dt, dsum / (double)kept);
    if (!dx) return l;
    const double lse = off + log_s;
    const float coef = (float)(g / v.t * (1.0 + 2.0 * p->lambda * lse) / sum);
    const float smooth = (float)(g / v.t * p->eps / (double)kept);
    for (size_t i = 0; i < n; i += ZBLOCK) {
        size_t len = n - i < ZBLOCK ? n - i : ZBLOCK;
        make_d(&v, &s, i, len, d); /* reads x[i, i + len) before dx overwrites it */
        j->k->expscale_store(len, d, dx + i, 0.0f, 1.0f, coef);
        for (size_t q = 0; p->eps > 0.0 && q < len; q++)
            if (!sg_row_removed(&v, i + q)) dx[i + q] -= smooth;
    }
    dx[t] -= (float)(g / v.t * (1.0 - p->eps));
    return l;
}

/* ---- the fast path: no masks, finite max ----------------------------------- */

static double ce_row(const sg_loss_rows *j, size_t r, float *dx, double g) {
    if (j->keep || j->add || j->c < SG_EXACT_BELOW_C) return exact_row(j, r, dx, g);
    const ce_params *p = j->params;
    const sg_kernels *k = j->k;
    const size_t n = j->n, t = (size_t)j->target[r];
    const float *x = j->x + r * j->ldx;
    const float mx = k->rmax(n, x);
    if (!(mx - mx == 0.0f)) return exact_row(j, r, dx, g);
    /* everything read from x is read before dx (possibly x) is written */
    const double dt = ((double)x[t] - mx) / j->t;
    double dmean = 0.0;
    if (p->eps > 0.0) {
        const double sx = k->sum(n, x); /* float lanes: may overflow near FLT_MAX */
        if (!(sx - sx == 0.0)) return exact_row(j, r, dx, g);
        dmean = (sx / (double)n - mx) / j->t;
    }
    /* with dx: e = exp((x - max) c) stored into dx while summing, as the
     * softmax core's three-pass algorithm does, then scaled in place */
    const double sum = dx ? k->expsum_store(n, x, dx, mx, j->c) : k->expsum(n, x, mx, j->c);
    if (!(sum < INFINITY)) { /* a NaN (rmax may skip it): no masks here, so all NaN */
        for (size_t i = 0; dx && i < n; i++) dx[i] = NAN;
        return NAN;
    }
    const double log_s = log(sum), off = (double)mx / j->t;
    const double l = ce_loss(p, off, log_s, dt, dmean);
    if (!dx) return l;
    const double lse = off + log_s, gc = g / j->t;
    /* dx = gc ((1 + 2 lambda lse) p - q) */
    const float coef = (float)(gc * (1.0 + 2.0 * p->lambda * lse) / sum);
    if (p->eps > 0.0) /* (e - 0) coef - gc eps / N in the same pass */
        k->shift_store(n, dx, dx, 0.0f, coef, (float)(gc * p->eps / (double)n));
    else k->scale(n, dx, dx, coef);
    dx[t] -= (float)(gc * (1.0 - p->eps));
    return l;
}

sg_status sg_cross_entropy_f32(sg_context *ctx, size_t rows, size_t n, const float *x, size_t ldx,
                               const int32_t *target, float *loss, float *dx, size_t lddx,
                               const sg_cross_entropy_options *ce,
                               const sg_softmax_options *options) {
    static const char name[] = "sg_cross_entropy_f32";
    if (!ctx) return SG_ERR_ARGUMENT;
    sg_ok(ctx);
    sg_softmax_options o = options ? *options : sg_softmax_options_default();
    sg_cross_entropy_options co = ce ? *ce : sg_cross_entropy_options_default();
    if (!(co.label_smoothing >= 0.0f && co.label_smoothing <= 1.0f))
        return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: label_smoothing must be in [0, 1] (got %g)", name,
                       (double)co.label_smoothing);
    if (!(co.z_loss >= 0.0f && co.z_loss <= FLT_MAX))
        return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: z_loss must be finite and >= 0 (got %g)", name,
                       (double)co.z_loss);
    sg_loss_rows j = {0};
    sg_status st = sg_loss_prepare(ctx, name, &j, rows, n, x, ldx, target, loss, dx, lddx,
                                   co.reduction, co.ignore_index, &o);
    if (st != SG_OK || rows == 0) return st;
    ce_params p = {co.label_smoothing, co.z_loss};
    j.fn = ce_row;
    j.params = &p;
    sg_loss_run(ctx, &j);
    return SG_OK;
}

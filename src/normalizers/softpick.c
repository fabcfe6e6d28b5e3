/*
 * softpick.c - softpick (Zuhri et al., "Softpick: No Attention Sink, No
 * Massive Activations with Rectified Softmax"), float32, forward and
 * backward. Unmasked rows run the dispatched kernels (softpick_store,
 * softpick_sums, softpick_bwd) and the core's rmax and scale; masked and
 * special rows are computed in double here.
 *
 * With m = max(max z, 0) and e_i = e^(z_i - m) - e^-m (= e^-m (e^z_i - 1)):
 *   y_i = max(e_i, 0) / D,  D = sum_j |e_j| + eps e^-m,
 * and, with q_j = (e_j + e^-m) / D = e^(z_j - m) / D and g = sum_i dy_i y_i
 * (over z_i > 0), the VJP
 *   dx_j = q_j ([z_j > 0] dy_j - sign(z_j) g) / T.
 */
#include "normalizers/alternatives_internal.h"

/* e_i in double; the expm1 form while e^z cannot overflow. */
static inline double scaled_e(double z, double m, double em) {
    return m <= SG_SOFTPICK_EXPM1_MAX ? em * expm1(z) : exp(z - m) - em;
}

typedef struct sp_scan {
    size_t nan, posinf;
    double m; /* max(largest finite kept z, 0) */
} sp_scan;

static sp_scan scan(const sg_row_view *v, size_t n) {
    sp_scan s = {0, 0, 0.0};
    for (size_t i = 0; i < n; i++) {
        if (sg_row_removed(v, i)) continue;
        double z = alt_z(v, i);
        if (isnan(z)) s.nan++;
        else if (z == INFINITY) s.posinf++;
        else if (z > s.m) s.m = z;
    }
    return s;
}

/* D of a finite row (no NaN, no +inf) and, if dy is given, g * D. */
static double denominator(const alt_job *j, const sg_row_view *v, double m, double em,
                          const float *dy, double *gd) {
    double d = 0.0, g = 0.0;
    for (size_t i = 0; i < j->n; i++) {
        if (sg_row_removed(v, i)) continue;
        double e = scaled_e(alt_z(v, i), m, em);
        d += fabs(e);
        if (dy && e > 0.0) g += (double)dy[i] * e;
    }
    if (gd) *gd = g;
    return d + (double)j->eps * em;
}

static void exact_row(const alt_job *j, size_t r) {
    const sg_row_view v = alt_view(j, r);
    const sp_scan s = scan(&v, j->n);
    float *y = j->out + r * j->ldo;
    if (s.nan) {
        sg_alt_nan_row(j, r);
        return;
    }
    if (s.posinf) {
        for (size_t i = 0; i < j->n; i++)
            y[i] = !sg_row_removed(&v, i) && alt_z(&v, i) == INFINITY ? 1.0f / (float)s.posinf : 0.0f;
        return;
    }
    const double em = exp(-s.m), d = denominator(j, &v, s.m, em, NULL, NULL);
    for (size_t i = 0; i < j->n; i++) {
        double e = sg_row_removed(&v, i) ? 0.0 : scaled_e(alt_z(&v, i), s.m, em);
        y[i] = e > 0.0 ? (float)(e / d) : 0.0f; /* e > 0 implies d > 0 */
    }
}

/* m and e^-m of an unmasked row from its max; 0 if the row must take the
 * exact path (+inf, or x / T overflowing float). */
static int fast_m(const alt_job *j, const float *x, float *m, float *em) {
    const float xm = j->ck->rmax(j->n, x), zm = xm * j->c;
    if (zm == INFINITY) return 0; /* NaN and -inf go on: the kernels handle them */
    *m = zm > 0.0f ? zm : 0.0f;
    *em = (float)exp(-(double)*m);
    return 1;
}

/*
 * Masked rows through the kernel: a pass over z blocks for m (and +inf or
 * overflow: exact path), then the numerators by blocks into y with
 * removed entries at z = 0 (|e^0 - 1| = 0: nothing added to D in the
 * expm1 form; in the other form at most e^-m u, then) and set to 0
 * afterwards, then the scale.
 */
static void masked_row(const alt_job *j, size_t r) {
    const sg_row_view v = alt_view(j, r);
    float *y = j->out + r * j->ldo, z[SG_ALT_ZBLOCK];
    const size_t n = j->n;
    int special = 0;
    float zm = -INFINITY;
    for (size_t i = 0; i < n && !special; i += SG_ALT_ZBLOCK) {
        float b = sg_alt_zblock(j, &v, i, n - i < SG_ALT_ZBLOCK ? n - i : SG_ALT_ZBLOCK, 0.0f, z,
                                &special);
        zm = b > zm ? b : zm;
    }
    if (special) {
        exact_row(j, r);
        return;
    }
    const float m = zm > 0.0f ? zm : 0.0f, em = (float)exp(-(double)m);
    double s = 0.0;
    for (size_t i = 0; i < n; i += SG_ALT_ZBLOCK) {
        size_t len = n - i < SG_ALT_ZBLOCK ? n - i : SG_ALT_ZBLOCK;
        sg_alt_zblock(j, &v, i, len, 0.0f, z, &special);
        s += j->k->softpick_store(len, z, y + i, 1.0f, m, em);
    }
    if (isnan(s)) {
        sg_alt_nan_row(j, r);
        return;
    }
    for (size_t i = 0; i < n; i++)
        if (sg_row_removed(&v, i)) y[i] = 0.0f;
    const double d = s + (double)j->eps * em;
    if (d > 0.0) j->ck->scale(n, y, y, (float)(1.0 / d));
}

static void forward_row(const alt_job *j, size_t r) {
    const float *x = j->x + r * j->ldx;
    float *y = j->out + r * j->ldo;
    float m, em;
    if (alt_masked(j)) {
        masked_row(j, r);
        return;
    }
    if (!fast_m(j, x, &m, &em)) {
        exact_row(j, r);
        return;
    }
    const double s = j->k->softpick_store(j->n, x, y, j->c, m, em);
    if (isnan(s)) { /* a NaN that rmax skipped (y may be x: from y alone) */
        sg_alt_nan_row(j, r);
        return;
    }
    const double d = s + (double)j->eps * em;
    if (d > 0.0) j->ck->scale(j->n, y, y, (float)(1.0 / d)); /* else y is all 0 */
}

static void exact_bwd_row(const alt_job *j, size_t r) {
    const sg_row_view v = alt_view(j, r);
    const sp_scan s = scan(&v, j->n);
    const float *dy = j->dy + r * j->lddy;
    float *dx = j->out + r * j->ldo;
    if (s.nan || s.posinf) { /* NaN row; or a locally constant output */
        for (size_t i = 0; i < j->n; i++) dx[i] = sg_row_removed(&v, i) ? 0.0f : s.nan ? NAN : 0.0f;
        return;
    }
    double gd;
    const double em = exp(-s.m), d = denominator(j, &v, s.m, em, dy, &gd);
    const double g = d > 0.0 ? gd / d : 0.0;
    for (size_t i = 0; i < j->n; i++) {
        if (sg_row_removed(&v, i)) {
            dx[i] = 0.0f;
            continue;
        }
        double z = alt_z(&v, i);
        double q = d > 0.0 ? (scaled_e(z, s.m, em) + em) / d : 0.0;
        double w = z > 0.0 ? dy[i] - g : z < 0.0 ? g : 0.0;
        dx[i] = q == 0.0 ? 0.0f : (float)(q * w / j->t);
    }
}

/* Masked rows through the kernels, as the masked forward: removed
 * entries at z = 0 add nothing to D or g and get w = 0, so dx = 0 there;
 * the kernels run with c = 1 on z (which holds 1/T already) and the
 * chain rule's 1/T is applied by the scale at the end. Returns 0 (nothing
 * written) if the row needs the exact path. */
static int masked_bwd_row(const alt_job *j, size_t r) {
    const sg_row_view v = alt_view(j, r);
    const float *dy = j->dy + r * j->lddy;
    float *dx = j->out + r * j->ldo, z[SG_ALT_ZBLOCK];
    const size_t n = j->n;
    int special = 0;
    float zm = -INFINITY;
    for (size_t i = 0; i < n && !special; i += SG_ALT_ZBLOCK) {
        float b = sg_alt_zblock(j, &v, i, n - i < SG_ALT_ZBLOCK ? n - i : SG_ALT_ZBLOCK, 0.0f, z,
                                &special);
        zm = b > zm ? b : zm;
    }
    if (special) return 0;
    const float m = zm > 0.0f ? zm : 0.0f, em = (float)exp(-(double)m);
    double d = 0.0, gd = 0.0;
    for (size_t i = 0; i < n; i += SG_ALT_ZBLOCK) {
        size_t len = n - i < SG_ALT_ZBLOCK ? n - i : SG_ALT_ZBLOCK;
        double g;
        sg_alt_zblock(j, &v, i, len, 0.0f, z, &special);
        d += j->k->softpick_sums(len, z, dy + i, 1.0f, m, em, &g);
        gd += g;
    }
    d += (double)j->eps * em;
    if (isnan(d) || !(d > 0.0)) return 0;
    for (size_t i = 0; i < n; i += SG_ALT_ZBLOCK) {
        size_t len = n - i < SG_ALT_ZBLOCK ? n - i : SG_ALT_ZBLOCK;
        sg_alt_zblock(j, &v, i, len, 0.0f, z, &special);
        j->k->softpick_bwd(len, z, dy + i, dx + i, 1.0f, m, em, (float)(1.0 / d), (float)(gd / d));
    }
    j->ck->scale(n, dx, dx, j->c);
    return 1;
}

static void backward_row(const alt_job *j, size_t r) {
    const float *x = j->x + r * j->ldx, *dy = j->dy + r * j->lddy;
    float m, em;
    if (alt_masked(j)) {
        if (!masked_bwd_row(j, r)) exact_bwd_row(j, r);
        return;
    }
    if (!fast_m(j, x, &m, &em)) {
        exact_bwd_row(j, r);
        return;
    }
    double gd;
    const double d = j->k->softpick_sums(j->n, x, dy, j->c, m, em, &gd) + (double)j->eps * em;
    if (isnan(d) || !(d > 0.0)) { /* NaN in x, or an all-zero row with eps = 0 */
        exact_bwd_row(j, r);
        return;
    }
    j->k->softpick_bwd(j->n, x, dy, j->out + r * j->ldo, j->c, m, em, (float)(1.0 / d),
                       (float)(gd / d));
}

/* ---- public ops --------------------------------------------------------- */

static sg_status check_eps(sg_context *ctx, const char *name, float eps) {
    if (!(eps >= 0.0f) || eps == INFINITY)
        return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: eps must be finite and >= 0 (got %g)", name,
                       (double)eps);
    return SG_OK;
}

sg_status sg_softpick_f32(sg_context *ctx, size_t rows, size_t n, const float *x, size_t ldx,
                          float *y, size_t ldy, float eps, const sg_softmax_options *options) {
    static const char name[] = "sg_softpick_f32";
    if (!ctx) return SG_ERR_ARGUMENT;
    sg_ok(ctx);
    sg_softmax_options o;
    float c;
    sg_status st = sg_alt_check_forward(ctx, name, rows, n, x, ldx, y, ldy, &o, options, &c);
    if (st == SG_OK) st = check_eps(ctx, name, eps);
    if (st != SG_OK || rows == 0 || n == 0) return st;
    alt_job j = {0};
    j.row = forward_row;
    j.x = x;
    j.ldx = ldx;
    j.out = y;
    j.ldo = ldy;
    j.eps = eps;
    sg_alt_run(ctx, &j, rows, n, &o, c);
    return SG_OK;
}

sg_status sg_softpick_backward_f32(sg_context *ctx, size_t rows, size_t n, const float *x,
                                   size_t ldx, const float *dy, size_t lddy, float *dx, size_t lddx,
                                   float eps, const sg_softmax_options *options) {
    static const char name[] = "sg_softpick_backward_f32";
    if (!ctx) return SG_ERR_ARGUMENT;
    sg_ok(ctx);
    sg_softmax_options o;
    float c;
    if (!x && rows && n) return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: x is NULL", name);
    sg_status st = sg_alt_check_backward(ctx, name, rows, n, x, ldx, NULL, 0, dy, lddy, dx, lddx, &o,
                                         options, &c);
    if (st == SG_OK) st = check_eps(ctx, name, eps);
    if (st != SG_OK || rows == 0 || n == 0) return st;
    alt_job j = {0};
    j.row = backward_row;
    j.x = x;
    j.ldx = ldx;
    j.dy = dy;
    j.lddy = lddy;
    j.out = dx;
    j.ldo = lddx;
    j.eps = eps;
    sg_alt_run(ctx, &j, rows, n, &o, c);
    return SG_OK;
}

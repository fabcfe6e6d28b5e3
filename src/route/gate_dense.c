/*
 * gate_dense.c - the gates whose output is a dense [T x E] weight matrix
 * or whose logits come from the token vectors (route.h, "Dense gates"):
 * temperature dense-to-sparse gating and its activation variant, Laplace
 * gating logits, the two-level hierarchical gate and DSelect-k; forward
 * and backward. Top-k gates are in gate_topk.c.
 *
 * These are training-time gates with reference-speed code: sums and
 * exponentials in double, row by row on the caller's thread, results
 * independent of the thread count by construction.
 */
#include <math.h>
#include <string.h>

#include "route/route_internal.h"
#include "softmax/softmax_internal.h"

/* ---- shared checks --------------------------------------------------------- */

static sg_status check_nan_rows(sg_context *ctx, const char *name, const char *what, size_t t, size_t n,
                                const float *x, size_t ld) {
    for (size_t r = 0; r < t; r++)
        if (sg_route_has_nan(x + r * ld, n))
            return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: token %zu has a NaN in %s", name, r, what);
    return SG_OK;
}

/* softmax in double of z[0..n) (finite or -inf; +inf entries share the
 * mass) into p; returns the normalizer relative to the max. */
static void softmax_d(const double *z, size_t n, double *p) {
    double mx = -INFINITY, s = 0.0;
    size_t inf = 0;
    for (size_t i = 0; i < n; i++) mx = z[i] > mx ? z[i] : mx, inf += z[i] == INFINITY;
    if (mx == -INFINITY || inf) {
        for (size_t i = 0; i < n; i++) p[i] = inf && z[i] == INFINITY ? 1.0 / (double)inf : 0.0;
        return;
    }
    for (size_t i = 0; i < n; i++) s += p[i] = exp(z[i] - mx);
    for (size_t i = 0; i < n; i++) p[i] /= s;
}

/* ---- temperature gate ----------------------------------------------------- */

static const char *const act_names[] = {"identity", "tanh", "sigmoid", "gelu"};

const char *sg_gate_activation_name(sg_gate_activation act) {
    return (unsigned)act <= SG_GATE_ACT_GELU ? act_names[act] : "unknown";
}

/* act(v) and act'(v) in double. GELU is the exact x Phi(x). */
static double act_f(sg_gate_activation a, double v, double *d) {
    switch (a) {
    case SG_GATE_ACT_TANH: {
        double y = tanh(v);
        *d = 1.0 - y * y;
        return y;
    }
    case SG_GATE_ACT_SIGMOID: {
        double y = v >= 0 ? 1.0 / (1.0 + exp(-v)) : exp(v) / (1.0 + exp(v));
        *d = y * (1.0 - y);
        return y;
    }
    case SG_GATE_ACT_GELU: {
        double cdf = 0.5 * erfc(-v / sqrt(2.0)), pdf = exp(-0.5 * v * v) / sqrt(2.0 * 3.141592653589793);
        *d = cdf + v * pdf;
        return v * cdf;
    }
    default:
        *d = 1.0;
        return v;
    }
}

static sg_status check_temperature(sg_context *ctx, const char *name, size_t t, size_t e, const float *x,
                                   size_t ldx, float tau, sg_gate_activation act, float threshold) {
    if (e == 0) return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: e is 0", name);
    if (e > SG_ROUTE_STACK_E)
        return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: e (%zu) above %d is not supported", name, e, SG_ROUTE_STACK_E);
    if (!(tau > 0.0f) || !isfinite(tau))
        return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: tau must be finite and > 0 (got %g)", name, (double)tau);
    if ((unsigned)act > SG_GATE_ACT_GELU)
        return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: unknown activation %d", name, (int)act);
    if (!(threshold >= 0.0f) || !(threshold <= 1.0f))
        return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: threshold must be in [0, 1] (got %g)", name, (double)threshold);
    sg_status st = sg_check_matrix(ctx, name, "x", x, t, e, ldx);
    return st == SG_OK ? check_nan_rows(ctx, name, "x", t, e, x, ldx) : st;
}

/* Row: a = act(x), z = a / tau, p = softmax(z) (all double). */
static void temperature_row(const float *x, size_t e, double tau, sg_gate_activation act, double *a,
                            double *da, double *p) {
    double z[SG_ROUTE_STACK_E];
    for (size_t i = 0; i < e; i++) {
        a[i] = act_f(act, x[i], &da[i]);
        z[i] = a[i] / tau;
    }
    softmax_d(z, e, p);
}

sg_status sg_gate_temperature_f32(sg_context *ctx, size_t t, size_t e, const float *x, size_t ldx,
                                  float tau, sg_gate_activation act, float threshold, float *p,
                                  size_t ldp) {
    static const char name[] = "sg_gate_temperature_f32";
    if (!ctx) return SG_ERR_ARGUMENT;
    sg_ok(ctx);
    sg_status st = check_temperature(ctx, name, t, e, x, ldx, tau, act, threshold);
    if (st == SG_OK) st = sg_check_matrix(ctx, name, "p", p, t, e, ldp);
    if (st != SG_OK) return st;
    double a[SG_ROUTE_STACK_E], da[SG_ROUTE_STACK_E], pd[SG_ROUTE_STACK_E];
    for (size_t r = 0; r < t; r++) {
        temperature_row(x + r * ldx, e, tau, act, a, da, pd);
        for (size_t i = 0; i < e; i++) p[r * ldp + i] = pd[i] < (double)threshold ? 0.0f : (float)pd[i];
    }
    return SG_OK;
}

sg_status sg_gate_temperature_backward_f32(sg_context *ctx, size_t t, size_t e, const float *x,
                                           size_t ldx, float tau, sg_gate_activation act,
                                           float threshold, const float *dp, size_t lddp, float *dx,
                                           size_t lddx, float *dtau) {
    static const char name[] = "sg_gate_temperature_backward_f32";
    if (!ctx) return SG_ERR_ARGUMENT;
    sg_ok(ctx);
    sg_status st = check_temperature(ctx, name, t, e, x, ldx, tau, act, threshold);
    if (st == SG_OK) st = sg_check_matrix(ctx, name, "dp", dp, t, e, lddp);
    if (st == SG_OK) st = sg_check_matrix(ctx, name, "dx", dx, t, e, lddx);
    if (st == SG_OK && dx == x && t) st = sg_fail(ctx, SG_ERR_ARGUMENT, "%s: dx may not alias x", name);
    if (st != SG_OK) return st;
    double a[SG_ROUTE_STACK_E], da[SG_ROUTE_STACK_E], pd[SG_ROUTE_STACK_E], acc_tau = 0.0;
    for (size_t r = 0; r < t; r++) {
        temperature_row(x + r * ldx, e, tau, act, a, da, pd);
        const float *g = dp + r * lddp;
        double dot = 0.0;
        for (size_t i = 0; i < e; i++)
            if (pd[i] >= (double)threshold) dot += pd[i] * (double)g[i];
        for (size_t i = 0; i < e; i++) {
            double gi = pd[i] >= (double)threshold ? (double)g[i] : 0.0;
            double dz = pd[i] * (gi - dot);
            dx[r * lddx + i] = (float)(dz * da[i] / (double)tau);
            acc_tau -= dz * a[i] / ((double)tau * (double)tau);
        }
    }
    if (dtau) *dtau = (float)acc_tau;
    return SG_OK;
}

/* ---- Laplace gating logits ------------------------------------------------ */

static sg_status check_laplace(sg_context *ctx, const char *name, size_t t, size_t e, size_t d,
                               const float *x, size_t ldx, const float *w, size_t ldw) {
    if (e == 0 || d == 0) return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: e and d must be >= 1", name);
    sg_status st = sg_check_matrix(ctx, name, "x", x, t, d, ldx);
    if (st == SG_OK) st = sg_check_matrix(ctx, name, "w", w, e, d, ldw);
    if (st == SG_OK) st = check_nan_rows(ctx, name, "x", t, d, x, ldx);
    if (st == SG_OK)
        for (size_t i = 0; i < e; i++)
            if (sg_route_has_nan(w + i * ldw, d))
                return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: center %zu of w has a NaN", name, i);
    return st;
}

static double dist(const float *x, const float *w, size_t d) {
    double s = 0.0;
    for (size_t q = 0; q < d; q++) {
        double v = (double)x[q] - (double)w[q];
        s += v * v;
    }
    return sqrt(s);
}

sg_status sg_gate_laplace_logits_f32(sg_context *ctx, size_t t, size_t e, size_t d, const float *x,
                                     size_t ldx, const float *w, size_t ldw, float *logits, size_t ldl) {
    static const char name[] = "sg_gate_laplace_logits_f32";
    if (!ctx) return SG_ERR_ARGUMENT;
    sg_ok(ctx);
    sg_status st = check_laplace(ctx, name, t, e, d, x, ldx, w, ldw);
    if (st == SG_OK) st = sg_check_matrix(ctx, name, "logits", logits, t, e, ldl);
    if (st != SG_OK) return st;
    for (size_t r = 0; r < t; r++)
        for (size_t i = 0; i < e; i++) logits[r * ldl + i] = (float)-dist(x + r * ldx, w + i * ldw, d);
    return SG_OK;
}

sg_status sg_gate_laplace_logits_backward_f32(sg_context *ctx, size_t t, size_t e, size_t d,
                                              const float *x, size_t ldx, const float *w, size_t ldw,
                                              const float *dlogits, size_t lddl, float *dx, size_t lddx,
                                              float *dw, size_t lddw) {
    static const char name[] = "sg_gate_laplace_logits_backward_f32";
    if (!ctx) return SG_ERR_ARGUMENT;
    sg_ok(ctx);
    sg_status st = check_laplace(ctx, name, t, e, d, x, ldx, w, ldw);
    if (st == SG_OK) st = sg_check_matrix(ctx, name, "dlogits", dlogits, t, e, lddl);
    if (st == SG_OK && dx) st = sg_check_matrix(ctx, name, "dx", dx, t, d, lddx);
    if (st == SG_OK && dw) st = sg_check_matrix(ctx, name, "dw", dw, e, d, lddw);
    if (st != SG_OK) return st;
    for (size_t r = 0; dx && r < t; r++) memset(dx + r * lddx, 0, d * sizeof *dx);
    for (size_t i = 0; dw && i < e; i++) memset(dw + i * lddw, 0, d * sizeof *dw);
    /* d(-||x - w||)/dx = -(x - w) / ||x - w||, +(x - w) / ||x - w|| for w;
     * the subgradient 0 where x == w. Token order, then expert order. */
    for (size_t r = 0; r < t; r++)
        for (size_t i = 0; i < e; i++) {
            const float *xr = x + r * ldx, *wi = w + i * ldw;
            double dd = dist(xr, wi, d), g = (double)dlogits[r * lddl + i];
            if (dd == 0.0 || g == 0.0) continue;
            double s = g / dd;
            for (size_t q = 0; q < d; q++) {
                double v = ((double)xr[q] - (double)wi[q]) * s;
                if (dx) dx[r * lddx + q] = (float)((double)dx[r * lddx + q] - v);
                if (dw) dw[i * lddw + q] = (float)((double)dw[i * lddw + q] + v);
            }
        }
    return SG_OK;
}

/* ---- hierarchical gate ----------------------------------------------------- */

/* top-k then softmax of z[0..n) (ties: lower index), dense into p. */
static void topk_softmax_d(const float *z, size_t n, size_t k, double *p) {
    int32_t ids[SG_ROUTE_STACK_E];
    float top[SG_ROUTE_STACK_E];
    size_t f = 0;
    sg_route_select(z, n, k, ids, top, &f, 0);
    for (size_t i = 0; i < n; i++) p[i] = 0.0;
    /* top[] is sorted: top[0] is the max; +inf entries share the mass, a
     * selection of -inf gets 0 */
    double s = 0.0, mx = top[0];
    size_t inf = 0;
    for (size_t l = 0; l < f; l++) inf += top[l] == INFINITY;
    for (size_t l = 0; l < f; l++) {
        double v = inf ? (top[l] == INFINITY) : mx == -INFINITY ? 0.0 : exp((double)top[l] - mx);
        p[ids[l]] = v;
        s += v;
    }
    for (size_t l = 0; l < f; l++) p[ids[l]] = s > 0.0 ? p[ids[l]] / s : 0.0;
}

static sg_status check_hier(sg_context *ctx, const char *name, size_t t, size_t e1, size_t e2,
                            const float *l1, size_t ldl1, const float *l2, size_t ldl2, size_t k1, size_t k2) {
    if (e1 == 0 || e2 == 0 || e1 > SG_ROUTE_STACK_E || e2 > SG_ROUTE_STACK_E)
        return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: e1 and e2 must be in [1, %d] (got %zu, %zu)", name,
                       SG_ROUTE_STACK_E, e1, e2);
    if (k1 < 1 || k1 > e1 || k2 < 1 || k2 > e2)
        return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: need 1 <= k1 <= e1 and 1 <= k2 <= e2 (got k1 %zu, k2 %zu)", name,
                       k1, k2);
    sg_status st = sg_check_matrix(ctx, name, "l1", l1, t, e1, ldl1);
    if (st == SG_OK) st = sg_check_matrix(ctx, name, "l2", l2, t, e1 * e2, ldl2);
    if (st == SG_OK) st = check_nan_rows(ctx, name, "l1", t, e1, l1, ldl1);
    if (st == SG_OK) st = check_nan_rows(ctx, name, "l2", t, e1 * e2, l2, ldl2);
    return st;
}

sg_status sg_gate_hierarchical_f32(sg_context *ctx, size_t t, size_t e1, size_t e2, const float *l1,
                                   size_t ldl1, const float *l2, size_t ldl2, size_t k1, size_t k2,
                                   float *w, size_t ldw) {
    static const char name[] = "sg_gate_hierarchical_f32";
    if (!ctx) return SG_ERR_ARGUMENT;
    sg_ok(ctx);
    sg_status st = check_hier(ctx, name, t, e1, e2, l1, ldl1, l2, ldl2, k1, k2);
    if (st == SG_OK) st = sg_check_matrix(ctx, name, "w", w, t, e1 * e2, ldw);
    if (st != SG_OK) return st;
    double p1[SG_ROUTE_STACK_E], p2[SG_ROUTE_STACK_E];
    for (size_t r = 0; r < t; r++) {
        topk_softmax_d(l1 + r * ldl1, e1, k1, p1);
        for (size_t g = 0; g < e1; g++) {
            float *wr = w + r * ldw + g * e2;
            if (p1[g] == 0.0) {
                memset(wr, 0, e2 * sizeof *wr);
                continue;
            }
            topk_softmax_d(l2 + r * ldl2 + g * e2, e2, k2, p2);
            for (size_t j = 0; j < e2; j++) wr[j] = (float)(p1[g] * p2[j]);
        }
    }
    return SG_OK;
}

/* dz of a top-k softmax p (dense, zeros off the selection) given dp. */
static void topk_softmax_backward_d(const double *p, const double *dp, size_t n, double *dz) {
    double dot = 0.0;
    for (size_t i = 0; i < n; i++) dot += p[i] * dp[i];
    for (size_t i = 0; i < n; i++) dz[i] = p[i] * (dp[i] - dot);
}

sg_status sg_gate_hierarchical_backward_f32(sg_context *ctx, size_t t, size_t e1, size_t e2,
                                            const float *l1, size_t ldl1, const float *l2, size_t ldl2,
                                            size_t k1, size_t k2, const float *dw, size_t lddw,
                                            float *dl1, size_t lddl1, float *dl2, size_t lddl2) {
    static const char name[] = "sg_gate_hierarchical_backward_f32";
    if (!ctx) return SG_ERR_ARGUMENT;
    sg_ok(ctx);
    sg_status st = check_hier(ctx, name, t, e1, e2, l1, ldl1, l2, ldl2, k1, k2);
    if (st == SG_OK) st = sg_check_matrix(ctx, name, "dw", dw, t, e1 * e2, lddw);
    if (st == SG_OK) st = sg_check_matrix(ctx, name, "dl1", dl1, t, e1, lddl1);
    if (st == SG_OK) st = sg_check_matrix(ctx, name, "dl2", dl2, t, e1 * e2, lddl2);
    if (st != SG_OK) return st;
    double p1[SG_ROUTE_STACK_E], p2[SG_ROUTE_STACK_E], g1[SG_ROUTE_STACK_E], g2[SG_ROUTE_STACK_E],
        dz[SG_ROUTE_STACK_E];
    for (size_t r = 0; r < t; r++) {
        topk_softmax_d(l1 + r * ldl1, e1, k1, p1);
        for (size_t g = 0; g < e1; g++) {
            const float *dwr = dw + r * lddw + g * e2;
            float *d2 = dl2 + r * lddl2 + g * e2;
            topk_softmax_d(l2 + r * ldl2 + g * e2, e2, k2, p2);
            g1[g] = 0.0;
            for (size_t j = 0; j < e2; j++) g1[g] += (double)dwr[j] * p2[j], g2[j] = (double)dwr[j] * p1[g];
            topk_softmax_backward_d(p2, g2, e2, dz);
            for (size_t j = 0; j < e2; j++) d2[j] = (float)dz[j];
        }
        topk_softmax_backward_d(p1, g1, e1, dz);
        for (size_t g = 0; g < e1; g++) dl1[r * lddl1 + g] = (float)dz[g];
    }
    return SG_OK;
}

/* ---- DSelect-k ------------------------------------------------------------- */

#define DSELECT_EPS 1e-6

size_t sg_dselect_bits(size_t e) {
    size_t m = 0;
    while (m < 63 && ((size_t)1 << m) < e) m++;
    return m;
}

/* The smooth step of the paper and its derivative. */
static double smooth_step(double v, double gamma, double *d) {
    if (v <= -gamma / 2) return *d = 0.0, 0.0;
    if (v >= gamma / 2) return *d = 0.0, 1.0;
    *d = -6.0 / (gamma * gamma * gamma) * v * v + 3.0 / (2.0 * gamma);
    return -2.0 / (gamma * gamma * gamma) * v * v * v + 3.0 / (2.0 * gamma) * v + 0.5;
}

/* Bit b (0 = most significant of m) of expert e: np.binary_repr order. */
static inline int code_bit(size_t e, size_t b, size_t m) { return (int)((e >> (m - 1 - b)) & 1u); }

static sg_status check_dselect(sg_context *ctx, const char *name, size_t t, size_t e, size_t k, float gamma,
                               float entropy_weight, const float *z, size_t ldz, const float *alpha,
                               size_t lda) {
    if (e < 2 || e > SG_ROUTE_STACK_E)
        return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: e must be in [2, %d] (got %zu)", name, SG_ROUTE_STACK_E, e);
    if (k < 1 || k > 64) return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: k must be in [1, 64] (got %zu)", name, k);
    if (!(gamma > 0.0f) || !isfinite(gamma))
        return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: gamma must be finite and > 0 (got %g)", name, (double)gamma);
    if (!(entropy_weight >= 0.0f) || !isfinite(entropy_weight))
        return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: entropy_weight must be finite and >= 0", name);
    const size_t m = sg_dselect_bits(e);
    sg_status st = sg_check_matrix(ctx, name, "z", z, t, k * m, ldz);
    if (st == SG_OK) st = sg_check_matrix(ctx, name, "alpha", alpha, t, k, lda);
    if (st == SG_OK) st = check_nan_rows(ctx, name, "z", t, k * m, z, ldz);
    if (st == SG_OK) st = check_nan_rows(ctx, name, "alpha", t, k, alpha, lda);
    return st;
}

/* r_i(e) for selector i of a row (zr: its m logits) into r[0..e). */
static void selector_row(const float *zr, size_t m, size_t e, double gamma, double *r) {
    double s[64], ds;
    for (size_t b = 0; b < m; b++) s[b] = smooth_step(zr[b], gamma, &ds);
    for (size_t x = 0; x < e; x++) {
        double v = 1.0;
        for (size_t b = 0; b < m; b++) v *= code_bit(x, b, m) ? s[b] : 1.0 - s[b];
        r[x] = v;
    }
}

sg_status sg_gate_dselect_f32(sg_context *ctx, size_t t, size_t e, size_t k, float gamma,
                              float entropy_weight, const float *z, size_t ldz, const float *alpha,
                              size_t lda, float *w, size_t ldw, float *reg) {
    static const char name[] = "sg_gate_dselect_f32";
    if (!ctx) return SG_ERR_ARGUMENT;
    sg_ok(ctx);
    sg_status st = check_dselect(ctx, name, t, e, k, gamma, entropy_weight, z, ldz, alpha, lda);
    if (st == SG_OK) st = sg_check_matrix(ctx, name, "w", w, t, e, ldw);
    if (st != SG_OK) return st;
    const size_t m = sg_dselect_bits(e);
    const int pow2 = ((size_t)1 << m) == e;
    double a[64], al[64], r[SG_ROUTE_STACK_E], acc[SG_ROUTE_STACK_E], R = 0.0;
    for (size_t row = 0; row < t; row++) {
        for (size_t i = 0; i < k; i++) al[i] = alpha[row * lda + i];
        softmax_d(al, k, a);
        for (size_t x = 0; x < e; x++) acc[x] = 0.0;
        for (size_t i = 0; i < k; i++) {
            selector_row(z + row * ldz + i * m, m, e, gamma, r);
            double h = 0.0, sum = 0.0;
            for (size_t x = 0; x < e; x++) {
                acc[x] += a[i] * r[x];
                h -= r[x] * log(r[x] + DSELECT_EPS);
                sum += r[x];
            }
            R += (double)entropy_weight * h + (pow2 ? 0.0 : 1.0 / fmax(sum, DSELECT_EPS));
        }
        for (size_t x = 0; x < e; x++) w[row * ldw + x] = (float)acc[x];
    }
    if (reg) *reg = (float)R;
    return SG_OK;
}

sg_status sg_gate_dselect_backward_f32(sg_context *ctx, size_t t, size_t e, size_t k, float gamma,
                                       float entropy_weight, const float *z, size_t ldz,
                                       const float *alpha, size_t lda, const float *dw, size_t lddw,
                                       float dreg, float *dz, size_t lddz, float *dalpha, size_t ldda) {
    static const char name[] = "sg_gate_dselect_backward_f32";
    if (!ctx) return SG_ERR_ARGUMENT;
    sg_ok(ctx);
    sg_status st = check_dselect(ctx, name, t, e, k, gamma, entropy_weight, z, ldz, alpha, lda);
    const size_t m = sg_dselect_bits(e);
    if (st == SG_OK) st = sg_check_matrix(ctx, name, "dw", dw, t, e, lddw);
    if (st == SG_OK) st = sg_check_matrix(ctx, name, "dz", dz, t, k * m, lddz);
    if (st == SG_OK) st = sg_check_matrix(ctx, name, "dalpha", dalpha, t, k, ldda);
    if (st == SG_OK && !isfinite(dreg)) st = sg_fail(ctx, SG_ERR_ARGUMENT, "%s: dreg must be finite", name);
    if (st != SG_OK) return st;
    const int pow2 = ((size_t)1 << m) == e;
    const double gm = gamma;
    double a[64], al[64], da[64], r[SG_ROUTE_STACK_E], dr[SG_ROUTE_STACK_E];
    for (size_t row = 0; row < t; row++) {
        const float *g = dw + row * lddw;
        for (size_t i = 0; i < k; i++) al[i] = alpha[row * lda + i];
        softmax_d(al, k, a);
        for (size_t i = 0; i < k; i++) {
            const float *zr = z + row * ldz + i * m;
            selector_row(zr, m, e, gm, r);
            double sum = 0.0;
            da[i] = 0.0;
            for (size_t x = 0; x < e; x++) sum += r[x], da[i] += (double)g[x] * r[x];
            /* dL/dr_x: the weights, the entropy, the reachability term */
            for (size_t x = 0; x < e; x++) {
                double dh = -(log(r[x] + DSELECT_EPS) + r[x] / (r[x] + DSELECT_EPS));
                dr[x] = a[i] * (double)g[x] + (double)dreg * ((double)entropy_weight * dh -
                                                              (pow2 || sum < DSELECT_EPS ? 0.0 : 1.0 / (sum * sum)));
            }
            /* r_x = prod_b f_b(x): d r_x / d s_b = +-prod_{b' != b} f_b'(x),
             * by prefix and suffix products (no division by a zero f) */
            double s[64], ds[64];
            for (size_t b = 0; b < m; b++) s[b] = smooth_step(zr[b], gm, &ds[b]);
            double acc[64] = {0};
            for (size_t x = 0; x < e; x++) {
                double pre[65], suf[65];
                pre[0] = 1.0, suf[m] = 1.0;
                for (size_t b = 0; b < m; b++) pre[b + 1] = pre[b] * (code_bit(x, b, m) ? s[b] : 1.0 - s[b]);
                for (size_t b = m; b-- > 0;) suf[b] = suf[b + 1] * (code_bit(x, b, m) ? s[b] : 1.0 - s[b]);
                for (size_t b = 0; b < m; b++)
                    acc[b] += dr[x] * pre[b] * suf[b + 1] * (code_bit(x, b, m) ? 1.0 : -1.0);
            }
            for (size_t b = 0; b < m; b++) dz[row * lddz + i * m + b] = (float)(acc[b] * ds[b]);
        }
        double dot = 0.0;
        for (size_t i = 0; i < k; i++) dot += a[i] * da[i];
        for (size_t i = 0; i < k; i++) dalpha[row * ldda + i] = (float)(a[i] * (da[i] - dot));
    }
    return SG_OK;
}

/*
 * balance.c - load and balance (route.h, "Load and balance"): per-expert
 * counts, capacity and GShard's slot-major dropping, the Switch balance
 * loss and the router z-loss with their gradients, the auxiliary-loss-free
 * bias update. The gates themselves live in gate_*.c.
 */
#include <math.h>
#include <string.h>

#include "route/route_internal.h"
#include "softmax/softmax_internal.h"

static sg_status check_ids(sg_context *ctx, const char *name, size_t t, size_t k, const int32_t *ids,
                           size_t ldi, size_t e) {
    if (k == 1 && ldi == 1) { /* one branch-free pass (vectorized); the message by the loop below */
        uint32_t out = 0;
        for (size_t r = 0; r < t; r++) out |= (uint64_t)(int64_t)ids[r] >= (uint64_t)e; /* negative: huge */
        if (!out) return SG_OK;
    }
    for (size_t r = 0; r < t; r++)
        for (size_t j = 0; j < k; j++) {
            int32_t v = ids[r * ldi + j];
            if (v < 0 || (size_t)v >= e)
                return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: ids[%zu][%zu] = %ld is outside [0, e = %zu)",
                               name, r, j, (long)v, e);
        }
    return SG_OK;
}

sg_status sg_route_counts(sg_context *ctx, size_t t, size_t k, const int32_t *ids, size_t ldi,
                          size_t e, int64_t *counts) {
    static const char name[] = "sg_route_counts";
    if (!ctx) return SG_ERR_ARGUMENT;
    sg_ok(ctx);
    sg_status st = sg_check_matrix(ctx, name, "ids", ids, t, k, ldi);
    if (st == SG_OK) st = sg_check_matrix(ctx, name, "counts", counts, 1, e, e);
    if (st == SG_OK) st = check_ids(ctx, name, t, k, ids, ldi, e);
    if (st != SG_OK) return st;
    for (size_t i = 0; i < e; i++) counts[i] = 0;
    for (size_t r = 0; r < t; r++)
        for (size_t j = 0; j < k; j++) counts[ids[r * ldi + j]]++;
    return SG_OK;
}

sg_status sg_route_capacity(sg_context *ctx, float capacity_factor, size_t t, size_t k, size_t e,
                            size_t *capacity) {
    static const char name[] = "sg_route_capacity";
    if (!ctx) return SG_ERR_ARGUMENT;
    sg_ok(ctx);
    if (!capacity) return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: capacity is NULL", name);
    if (!(capacity_factor > 0.0f) || !isfinite(capacity_factor))
        return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: capacity_factor must be finite and > 0 (got %g)", name,
                       (double)capacity_factor);
    if (e == 0) return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: e is 0", name);
    double c = ceil((double)capacity_factor * (double)t * (double)k / (double)e);
    if (c < 1.0)
        return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: capacity %g is below one token (t = %zu, k = %zu)", name,
                       c, t, k);
    *capacity = c >= (double)SIZE_MAX ? SIZE_MAX : (size_t)c;
    return SG_OK;
}

/* ---- dropping ------------------------------------------------------------ */

/* Stable merge sort of token indices by decreasing w[tok * ldw] (ties keep
 * the lower token first): bottom-up, a and b of n entries. Returns the
 * sorted array (a or b). */
static int32_t *sort_by_weight(int32_t *a, int32_t *b, size_t n, const float *w, size_t ldw) {
    for (size_t width = 1; width < n; width *= 2) {
        for (size_t lo = 0; lo < n; lo += 2 * width) {
            size_t mid = lo + width < n ? lo + width : n, hi = lo + 2 * width < n ? lo + 2 * width : n;
            size_t i = lo, j = mid, o = lo;
            while (i < mid && j < hi) b[o++] = w[(size_t)a[j] * ldw] > w[(size_t)a[i] * ldw] ? a[j++] : a[i++];
            while (i < mid) b[o++] = a[i++];
            while (j < hi) b[o++] = a[j++];
        }
        int32_t *tmp = a;
        a = b, b = tmp;
    }
    return a;
}

sg_status sg_route_apply_capacity_f32(sg_context *ctx, size_t t, size_t k, size_t e,
                                      const int32_t *ids, size_t ldi, float *weights, size_t ldw,
                                      size_t capacity, sg_drop_policy policy, int renormalize,
                                      int32_t *pos, size_t ldpos, int64_t *kept) {
    static const char name[] = "sg_route_apply_capacity_f32";
    if (!ctx) return SG_ERR_ARGUMENT;
    sg_ok(ctx);
    sg_status st = SG_OK;
    if ((unsigned)policy > SG_DROPLESS)
        st = sg_fail(ctx, SG_ERR_ARGUMENT, "%s: unknown policy %d", name, (int)policy);
    else if (capacity == 0 && policy != SG_DROPLESS)
        st = sg_fail(ctx, SG_ERR_ARGUMENT, "%s: capacity is below one token", name);
    else if (k == 0 || e == 0)
        st = sg_fail(ctx, SG_ERR_ARGUMENT, "%s: k and e must be >= 1 (got %zu, %zu)", name, k, e);
    if (st == SG_OK) st = sg_check_matrix(ctx, name, "ids", ids, t, k, ldi);
    if (st == SG_OK) st = sg_check_matrix(ctx, name, "weights", weights, t, k, ldw);
    if (st == SG_OK && pos) st = sg_check_matrix(ctx, name, "pos", pos, t, k, ldpos);
    if (st == SG_OK && t > INT32_MAX)
        st = sg_fail(ctx, SG_ERR_SHAPE, "%s: t (%zu) does not fit int32 positions", name, t);
    if (st == SG_OK) st = check_ids(ctx, name, t, k, ids, ldi, e);
    if (st == SG_OK && policy == SG_DROP_BY_WEIGHT)
        for (size_t r = 0; r < t && st == SG_OK; r++)
            for (size_t j = 0; j < k; j++)
                if (isnan(weights[r * ldw + j])) {
                    st = sg_fail(ctx, SG_ERR_ARGUMENT, "%s: weights[%zu][%zu] is NaN", name, r, j);
                    break;
                }
    if (st != SG_OK) return st;
    if (kept) memset(kept, 0, e * sizeof *kept);
    if (t == 0) return SG_OK;
    if (t > SIZE_MAX / 8 / (k + 2)) return sg_fail(ctx, SG_ERR_SHAPE, "%s: t * k is too large", name);
    /* workspace: per-expert counts (when kept is NULL), positions (when
     * pos is NULL), two token orders (by weight) */
    const size_t cnt_bytes = kept ? 0 : e * sizeof(int64_t);
    const size_t pos_elems = pos ? 0 : t * k, ord_elems = policy == SG_DROP_BY_WEIGHT ? 2 * t : 0;
    void *wsp = NULL;
    st = sg_route_workspace(ctx, name, cnt_bytes + (pos_elems + ord_elems) * sizeof(int32_t), &wsp);
    if (st != SG_OK) return st;
    int64_t *cnt = kept ? kept : wsp;
    int32_t *ws32 = (int32_t *)(void *)((char *)wsp + cnt_bytes);
    int32_t *P = pos ? pos : ws32;
    const size_t ldP = pos ? ldpos : k;
    int32_t *ord_a = ws32 + pos_elems, *ord_b = ord_a + t;
    memset(cnt, 0, e * sizeof *cnt);
    const int64_t cap = policy == SG_DROPLESS ? INT64_MAX : (int64_t)(capacity > INT64_MAX ? INT64_MAX : capacity);
    for (size_t j = 0; j < k; j++) {
        const int32_t *order = NULL;
        if (policy == SG_DROP_BY_WEIGHT) {
            for (size_t r = 0; r < t; r++) ord_a[r] = (int32_t)r;
            order = sort_by_weight(ord_a, ord_b, t, weights + j, ldw);
        }
        for (size_t q = 0; q < t; q++) {
            size_t r = order ? (size_t)order[q] : q;
            int32_t ex = ids[r * ldi + j];
            const int kept_here = cnt[ex] < cap;
            P[r * ldP + j] = kept_here ? (int32_t)cnt[ex]++ : -1;
            /* without renormalizing, a dropped weight is just 0 (slot j's
             * order, by weight, is already formed) */
            if (!renormalize && !kept_here) weights[r * ldw + j] = 0.0f;
        }
    }
    for (size_t r = 0; renormalize && r < t; r++) {
        float *w = weights + r * ldw;
        double all = 0.0, keep = 0.0;
        for (size_t j = 0; j < k; j++) {
            all += w[j];
            if (P[r * ldP + j] < 0) w[j] = 0.0f;
            else keep += w[j];
        }
        if (renormalize && keep != 0.0 && keep != all)
            for (size_t j = 0; j < k; j++) w[j] = (float)((double)w[j] * (all / keep));
    }
    return SG_OK;
}

/* ---- losses -------------------------------------------------------------- */

/* p = softmax(x) of a row into p (kernels; +inf entries share the mass, a
 * -inf row gives 0); returns lse = log sum exp x (+inf, -inf for those). */
static double row_softmax(const sg_kernels *kern, size_t e, const float *x, float *p) {
    float mx = kern->rmax(e, x);
    if (mx == INFINITY || mx == -INFINITY) {
        size_t cnt = 0;
        for (size_t i = 0; i < e; i++) cnt += x[i] == INFINITY;
        for (size_t i = 0; p && i < e; i++) p[i] = x[i] == INFINITY ? 1.0f / (float)cnt : 0.0f;
        return mx;
    }
    double s;
    if (p) {
        s = kern->expsum_store(e, x, p, mx, 1.0f);
        kern->scale(e, p, p, (float)(1.0 / s));
    } else {
        s = kern->expsum(e, x, mx, 1.0f);
    }
    return (double)mx + log(s);
}

static sg_status first_nan_row(sg_context *ctx, const char *name, size_t t, size_t e, const float *x,
                               size_t ldx) {
    for (size_t r = 0; r < t; r++)
        if (sg_route_has_nan(x + r * ldx, e))
            return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: token %zu has a NaN logit", name, r);
    return SG_OK;
}

sg_status sg_route_balance_loss_f32(sg_context *ctx, size_t t, size_t e, const float *x, size_t ldx,
                                    size_t k, const int32_t *ids, size_t ldi, float alpha,
                                    float *loss, float *dx, size_t lddx) {
    static const char name[] = "sg_route_balance_loss_f32";
    if (!ctx) return SG_ERR_ARGUMENT;
    sg_ok(ctx);
    sg_status st = SG_OK;
    if (t == 0 || e == 0 || k == 0)
        st = sg_fail(ctx, SG_ERR_ARGUMENT, "%s: t, e and k must be >= 1 (got %zu, %zu, %zu)", name, t, e, k);
    else if (!isfinite(alpha))
        st = sg_fail(ctx, SG_ERR_ARGUMENT, "%s: alpha must be finite", name);
    else if (!loss)
        st = sg_fail(ctx, SG_ERR_ARGUMENT, "%s: loss is NULL", name);
    if (st == SG_OK) st = sg_check_matrix(ctx, name, "x", x, t, e, ldx);
    if (st == SG_OK) st = sg_check_matrix(ctx, name, "ids", ids, t, k, ldi);
    if (st == SG_OK && dx) st = sg_check_matrix(ctx, name, "dx", dx, t, e, lddx);
    if (st == SG_OK) st = check_ids(ctx, name, t, k, ids, ldi, e);
    if (st == SG_OK) st = first_nan_row(ctx, name, t, e, x, ldx);
    if (st != SG_OK) return st;
    /* workspace: f and P in double [2 E], a probability row if dx is NULL */
    void *wsp;
    if ((st = sg_route_workspace(ctx, name, 2 * e * sizeof(double) + (dx ? 0 : e * sizeof(float)), &wsp)) !=
        SG_OK)
        return st;
    double *f = wsp, *P = f + e;
    float *prow = dx ? NULL : (float *)(void *)(P + e);
    for (size_t i = 0; i < e; i++) f[i] = 0.0, P[i] = 0.0;
    for (size_t r = 0; r < t; r++)
        for (size_t j = 0; j < k; j++) f[ids[r * ldi + j]] += 1.0;
    const double tk = (double)t * (double)k;
    for (size_t i = 0; i < e; i++) f[i] /= tk;
    const sg_kernels *kern = sg_kernels_get();
    const double g = (double)alpha * (double)e / (double)t;
    for (size_t r = 0; r < t; r++) {
        float *p = dx ? dx + r * lddx : prow;
        row_softmax(kern, e, x + r * ldx, p);
        double dot = 0.0;
        for (size_t i = 0; i < e; i++) P[i] += p[i], dot += (double)p[i] * f[i];
        if (dx)
            for (size_t i = 0; i < e; i++) p[i] = (float)(g * (double)p[i] * (f[i] - dot));
    }
    double L = 0.0;
    for (size_t i = 0; i < e; i++) L += f[i] * (P[i] / (double)t);
    *loss = (float)((double)alpha * (double)e * L);
    return SG_OK;
}

/* sum_t lse_t^2 of the z-loss (no gradient): rows of up to the short-row
 * size 16 at a time through the short-row logsumexp (rows in registers),
 * longer rows through max and sum of exponentials. */
static sg_status z_loss_sum(const sg_kernels *kern, size_t t, size_t e, const float *x, size_t ldx,
                            double *out) {
    double sum = 0.0;
    if (e <= kern->softmax_short_max_n) {
        float lse[16];
        for (size_t r = 0; r < t;) {
            size_t n = t - r < 16 ? t - r : 16;
            size_t done = kern->softmax_short(n, e, x + r * ldx, ldx, lse, 1, 1.0f, 1.0f, SG_SHORT_LOGSUMEXP);
            for (size_t q = 0; q < done; q++) sum += (double)lse[q] * (double)lse[q];
            r += done;
            if (done < n) { /* a row whose max is +-inf */
                double l = row_softmax(kern, e, x + r * ldx, NULL);
                sum += l * l;
                r++;
            }
        }
    } else {
        for (size_t r = 0; r < t; r++) {
            double l = row_softmax(kern, e, x + r * ldx, NULL);
            sum += l * l;
        }
    }
    *out = sum;
    return SG_OK;
}

sg_status sg_route_z_loss_f32(sg_context *ctx, size_t t, size_t e, const float *x, size_t ldx,
                              float *loss, float *dx, size_t lddx) {
    static const char name[] = "sg_route_z_loss_f32";
    if (!ctx) return SG_ERR_ARGUMENT;
    sg_ok(ctx);
    sg_status st = SG_OK;
    if (t == 0 || e == 0)
        st = sg_fail(ctx, SG_ERR_ARGUMENT, "%s: t and e must be >= 1 (got %zu, %zu)", name, t, e);
    else if (!loss)
        st = sg_fail(ctx, SG_ERR_ARGUMENT, "%s: loss is NULL", name);
    if (st == SG_OK) st = sg_check_matrix(ctx, name, "x", x, t, e, ldx);
    if (st == SG_OK && dx) st = sg_check_matrix(ctx, name, "dx", dx, t, e, lddx);
    /* NaN: scanned first when dx is written; for the loss alone, a NaN
     * makes its row's lse NaN (finite max) or its max infinite, so a
     * finite sum has none, and the scan runs only when the sum is not */
    if (st == SG_OK && dx) st = first_nan_row(ctx, name, t, e, x, ldx);
    if (st != SG_OK) return st;
    const sg_kernels *kern = sg_kernels_get();
    double sum = 0.0;
    const double inv_t = 1.0 / (double)t;
    if (!dx) {
        st = z_loss_sum(kern, t, e, x, ldx, &sum);
        if (!isfinite(sum) && (st = first_nan_row(ctx, name, t, e, x, ldx)) != SG_OK) return st;
        *loss = (float)(sum * inv_t);
        return SG_OK;
    }
    for (size_t r = 0; r < t; r++) {
        const float *xr = x + r * ldx;
        float *d = dx + r * lddx;
        float mx = kern->rmax(e, xr);
        if (mx == INFINITY || mx == -INFINITY) {
            sum += INFINITY;
            memset(d, 0, e * sizeof *d);
            continue;
        }
        double s = kern->expsum(e, xr, mx, 1.0f), l = (double)mx + log(s);
        sum += l * l;
        /* dx = (2/T) lse exp(x - max) / s */
        kern->expscale_store(e, xr, d, mx, 1.0f, (float)(2.0 * inv_t * l / s));
    }
    *loss = (float)(sum * inv_t);
    return SG_OK;
}

sg_status sg_route_bias_update_f32(sg_context *ctx, size_t e, const int64_t *counts, float rate,
                                   float *bias) {
    static const char name[] = "sg_route_bias_update_f32";
    if (!ctx) return SG_ERR_ARGUMENT;
    sg_ok(ctx);
    if (!(rate >= 0.0f) || !isfinite(rate))
        return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: rate must be finite and >= 0 (got %g)", name, (double)rate);
    sg_status st = sg_check_matrix(ctx, name, "counts", counts, 1, e, e);
    if (st == SG_OK) st = sg_check_matrix(ctx, name, "bias", bias, 1, e, e);
    if (st != SG_OK) return st;
    /* sign(sum / E - c_e) = sign(sum - E c_e): exact in 128-bit integers */
    __int128 total = 0;
    for (size_t i = 0; i < e; i++) {
        if (counts[i] < 0)
            return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: counts[%zu] = %lld is negative", name, i,
                           (long long)counts[i]);
        total += counts[i];
    }
    for (size_t i = 0; i < e; i++) {
        __int128 d = total - (__int128)e * counts[i];
        bias[i] += d > 0 ? rate : d < 0 ? -rate : 0.0f;
    }
    return SG_OK;
}

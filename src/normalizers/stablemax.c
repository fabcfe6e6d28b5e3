/*
 * stablemax.c - stablemax (Prieto et al., "Grokking at the Edge of
 * Numerical Stability"), float32: forward, log-stablemax, backward and the
 * log-stablemax cross-entropy. Unmasked rows run the dispatched kernels
 * (stablemax_store, stablemax_bwd); masked and special rows, log-stablemax
 * and the loss are computed in double here.
 *
 * s(z) = z + 1 (z >= 0), 1 / (1 - z) (z < 0); s' = s / (1 + |z|), so the
 * backward needs only y and |z|: d y_i / d z_j = y_i (delta_ij - y_j) /
 * (1 + |z_j|).
 */
#include <float.h>

#include "normalizers/alternatives_internal.h"

/* The fast path scales by a float 1/S: S must keep it normal. */
#define FAST_SUM_MIN 1e-37
#define FAST_SUM_MAX 1e37

/* x * c overflows float for a finite x only when c > 1 (T < 1): only then
 * is the row's max needed (short rows save a pass). */
static inline int z_may_overflow(const alt_job *j) { return j->c > 1.0f; }

static inline double stable_s(double z) { return z >= 0.0 ? z + 1.0 : 1.0 / (1.0 - z); }
/* log s(z) = sign(z) log1p(|z|). */
static inline double log_stable_s(double z) { return z >= 0.0 ? log1p(z) : -log1p(-z); }

/* What a row holds, in double: counts of kept NaN and +inf, the sum of s
 * over the rest. */
typedef struct sm_scan {
    size_t nan, posinf;
    double sum;
} sm_scan;

static sm_scan scan(const sg_row_view *v, size_t n) {
    sm_scan s = {0, 0, 0.0};
    for (size_t i = 0; i < n; i++) {
        if (sg_row_removed(v, i)) continue;
        double z = alt_z(v, i);
        if (isnan(z)) s.nan++;
        else if (z == INFINITY) s.posinf++;
        else s.sum += stable_s(z);
    }
    return s;
}

/* The forward table, in double: y (log_mode 0) or log y (log_mode 1). */
static void exact_row(const alt_job *j, size_t r, int log_mode) {
    const sg_row_view v = alt_view(j, r);
    const sm_scan s = scan(&v, j->n);
    float *y = j->out + r * j->ldo;
    const float zero = log_mode ? -INFINITY : 0.0f;
    const double log_sum = log(s.sum);
    for (size_t i = 0; i < j->n; i++) {
        if (sg_row_removed(&v, i)) {
            y[i] = zero;
            continue;
        }
        double z = alt_z(&v, i);
        if (s.nan) y[i] = NAN;
        else if (s.posinf)
            y[i] = z == INFINITY ? (log_mode ? (float)-log((double)s.posinf) : 1.0f / (float)s.posinf)
                                 : zero;
        else if (s.sum == 0.0) y[i] = zero; /* every kept z = -inf */
        else y[i] = log_mode ? (float)(log_stable_s(z) - log_sum) : (float)(stable_s(z) / s.sum);
    }
}

/* Masked rows through the kernel: a pass over z blocks for +inf and
 * overflow (exact path), then s by blocks into y (removed: z = -inf, s = 0),
 * then the scale. Returns 0 if the row must take the exact path. */
static int masked_row(const alt_job *j, size_t r, double *sum) {
    const sg_row_view v = alt_view(j, r);
    float *y = j->out + r * j->ldo, z[SG_ALT_ZBLOCK];
    int special = 0;
    for (size_t i = 0; i < j->n && !special; i += SG_ALT_ZBLOCK)
        sg_alt_zblock(j, &v, i, j->n - i < SG_ALT_ZBLOCK ? j->n - i : SG_ALT_ZBLOCK, -INFINITY, z,
                      &special);
    if (special) return 0;
    double s = 0.0;
    for (size_t i = 0; i < j->n; i += SG_ALT_ZBLOCK) {
        size_t len = j->n - i < SG_ALT_ZBLOCK ? j->n - i : SG_ALT_ZBLOCK;
        sg_alt_zblock(j, &v, i, len, -INFINITY, z, &special);
        s += j->k->stablemax_store(len, z, y + i, 1.0f);
    }
    *sum = s;
    return 1;
}

static void forward_row(const alt_job *j, size_t r) {
    const float *x = j->x + r * j->ldx;
    float *y = j->out + r * j->ldo;
    const size_t n = j->n;
    if (alt_masked(j)) {
        double s;
        if (!masked_row(j, r, &s)) exact_row(j, r, 0);
        else if (isnan(s)) sg_alt_nan_row(j, r);
        else if (s >= FAST_SUM_MIN && s <= FAST_SUM_MAX) j->ck->scale(n, y, y, (float)(1.0 / s));
        else { /* all 0, or a sum out of the fast range: from the stored s (y may be x) */
            double s2 = 0.0;
            for (size_t i = 0; i < n; i++) s2 += y[i];
            for (size_t i = 0; i < n; i++) y[i] = s2 > 0.0 ? (float)(y[i] / s2) : 0.0f;
        }
        return;
    }
    /* A finite x whose x / T overflows float: double (x still intact). */
    const float xm = z_may_overflow(j) ? j->ck->rmax(n, x) : 0.0f;
    if (xm - xm == 0.0f && xm * j->c == INFINITY) {
        exact_row(j, r, 0);
        return;
    }
    const double s = j->k->stablemax_store(n, x, y, j->c);
    if (s >= FAST_SUM_MIN && s <= FAST_SUM_MAX) {
        j->ck->scale(n, y, y, (float)(1.0 / s));
        return;
    }
    /* From the stored s alone (x may be y): NaN, +inf entries, all zero,
     * or a sum beyond float's reciprocal range. */
    if (isnan(s)) {
        sg_alt_nan_row(j, r);
        return;
    }
    size_t c = 0;
    for (size_t i = 0; i < n; i++) c += y[i] == INFINITY;
    if (c) {
        for (size_t i = 0; i < n; i++) y[i] = y[i] == INFINITY ? 1.0f / (float)c : 0.0f;
        return;
    }
    /* No +inf entry: a sum out of the fast range (the float lanes of a
     * vector kernel may even overflow); sum again in double. */
    double s2 = 0.0;
    for (size_t i = 0; i < n; i++) s2 += y[i];
    for (size_t i = 0; i < n; i++) y[i] = s2 > 0.0 ? (float)(y[i] / s2) : 0.0f;
}

/* Fast path: s into y by the kernel, then y = log s - log S in place. */
static void log_forward_row(const alt_job *j, size_t r) {
    const float *x = j->x + r * j->ldx;
    float *y = j->out + r * j->ldo;
    const size_t n = j->n;
    const float xm = alt_masked(j) || !z_may_overflow(j) ? 0.0f : j->ck->rmax(n, x);
    if (alt_masked(j) || (xm - xm == 0.0f && xm * j->c == INFINITY)) {
        exact_row(j, r, 1);
        return;
    }
    double s = j->k->stablemax_store(n, x, y, j->c);
    if (isnan(s)) {
        sg_alt_nan_row(j, r);
        return;
    }
    if (!(s > 0.0 && s < INFINITY)) { /* +inf entries, lanes overflowed, or all -inf */
        size_t c = 0;
        for (size_t i = 0; i < n; i++) c += y[i] == INFINITY;
        if (c) {
            const float hit = (float)-log((double)c);
            for (size_t i = 0; i < n; i++) y[i] = y[i] == INFINITY ? hit : -INFINITY;
            return;
        }
        s = 0.0;
        for (size_t i = 0; i < n; i++) s += y[i];
        if (s == 0.0) {
            for (size_t i = 0; i < n; i++) y[i] = -INFINITY;
            return;
        }
    }
    j->k->log_shift_store(n, y, y, (float)log(s));
}

/* s'(z) / s(z) = 1 / (1 + |z|) on both branches. */
static double stablemax_dlog(double z) { return 1.0 / (1.0 + fabs(z)); }

/* dx_j = y_j / (1 + |z_j|) (dy_j - sum_kept dy y) / T. */
static void backward_row(const alt_job *j, size_t r) {
    if (alt_masked(j)) {
        sg_alt_masked_bwd_row(j, r, stablemax_dlog);
        return;
    }
    const float *y = j->y + r * j->ldy, *dy = j->dy + r * j->lddy;
    const float dot = (float)j->ck->dot(j->n, y, dy);
    j->k->stablemax_bwd(j->n, j->x + r * j->ldx, y, dy, j->out + r * j->ldo, j->c, dot);
}

/*
 * loss = log S - log s(z_k); dx_j = (y_j - [j == k]) / (1 + |z_j|) / T.
 * Everything is read (the scan, z_k) before dx, which may be x, is
 * written; each dx_j needs only x_j.
 */
static void loss_exact_row(const alt_job *j, size_t r) {
    const sg_row_view v = alt_view(j, r);
    const sm_scan s = scan(&v, j->n);
    const size_t k = (size_t)j->target[r];
    const double zk = alt_z(&v, k);
    double loss;
    if (s.nan) loss = NAN;
    else if (s.posinf) loss = zk == INFINITY ? log((double)s.posinf) : INFINITY;
    else if (zk == -INFINITY) loss = INFINITY;
    else loss = log(s.sum) - log_stable_s(zk);
    j->loss[r] = (float)loss;
    if (!j->out) return;
    float *dx = j->out + r * j->ldo;
    for (size_t i = 0; i < j->n; i++) {
        if (sg_row_removed(&v, i)) {
            dx[i] = 0.0f;
            continue;
        }
        double z = alt_z(&v, i), p;
        if (s.nan) p = NAN;
        else if (s.posinf) p = z == INFINITY ? 1.0 / (double)s.posinf : 0.0;
        else p = stable_s(z) / s.sum;
        double g = (p - (double)(i == k)) / (1.0 + fabs(z)) / j->t;
        dx[i] = (float)(isinf(z) && !s.nan ? 0.0 : g);
    }
}

/*
 * Unmasked rows: S from the kernel on blocks of the stack (x stays
 * intact, so dx may be x), then dx elementwise from x. Rows whose S is
 * not a positive finite number (NaN, +inf, all -inf, float lanes
 * overflowed) and z = x / T overflowing float take the exact path.
 */
#define LOSS_BLOCK 1024
static const float zero[LOSS_BLOCK]; /* dy = 0 for the backward kernel */
static void loss_row(const alt_job *j, size_t r) {
    const float *x = j->x + r * j->ldx;
    const size_t n = j->n, k = (size_t)j->target[r];
    const float xm = alt_masked(j) || !z_may_overflow(j) ? 0.0f : j->ck->rmax(n, x);
    if (alt_masked(j) || (xm - xm == 0.0f && xm * j->c == INFINITY)) {
        loss_exact_row(j, r);
        return;
    }
    float buf[LOSS_BLOCK];
    double s = 0.0;
    for (size_t i = 0; i < n; i += LOSS_BLOCK)
        s += j->k->stablemax_store(n - i < LOSS_BLOCK ? n - i : LOSS_BLOCK, x + i, buf, j->c);
    const float zk = x[k] * j->c;
    if (!(s > 0.0 && s < INFINITY) || zk == -INFINITY) {
        loss_exact_row(j, r);
        return;
    }
    j->loss[r] = (float)(log(s) - log_stable_s(zk));
    if (!j->out) return;
    /* dx = y / (1 + |z|) c by blocks: y = s / S on the stack, then the
     * backward kernel with dy = 0 and dot = -1 (x is read before dx, which
     * may be x, is written); then the target's -1 / (1 + |z_k|) c. */
    float *dx = j->out + r * j->ldo;
    const float c = j->c;
    for (size_t i = 0; i < n; i += LOSS_BLOCK) {
        size_t len = n - i < LOSS_BLOCK ? n - i : LOSS_BLOCK;
        j->k->stablemax_store(len, x + i, buf, c);
        j->ck->scale(len, buf, buf, (float)(1.0 / s));
        j->k->stablemax_bwd(len, x + i, buf, zero, dx + i, c, -1.0f);
    }
    dx[k] = (float)(((double)dx[k] / c - 1.0 / (1.0 + fabs((double)zk))) * c);
}

/* ---- public ops --------------------------------------------------------- */


sg_status sg_stablemax_f32(sg_context *ctx, size_t rows, size_t n, const float *x, size_t ldx,
                           float *y, size_t ldy, const sg_softmax_options *options) {
    return sg_alt_forward_x(ctx, "sg_stablemax_f32", forward_row, NULL,
                            rows, n, x, ldx, y, ldy, options);
}

sg_status sg_log_stablemax_f32(sg_context *ctx, size_t rows, size_t n, const float *x, size_t ldx,
                               float *y, size_t ldy, const sg_softmax_options *options) {
    return sg_alt_forward_x(ctx, "sg_log_stablemax_f32", log_forward_row, NULL,
                            rows, n, x, ldx, y, ldy, options);
}

sg_status sg_stablemax_backward_f32(sg_context *ctx, size_t rows, size_t n, const float *x,
                                    size_t ldx, const float *y, size_t ldy, const float *dy,
                                    size_t lddy, float *dx, size_t lddx,
                                    const sg_softmax_options *options) {
    return sg_alt_backward_xy(ctx, "sg_stablemax_backward_f32", backward_row, rows, n, x, ldx, y, ldy, dy, lddy, dx, lddx,
                              options);
}

sg_status sg_stablemax_cross_entropy_f32(sg_context *ctx, size_t rows, size_t n, const float *x,
                                         size_t ldx, const int32_t *target, float *loss, float *dx,
                                         size_t lddx, const sg_softmax_options *options) {
    static const char name[] = "sg_stablemax_cross_entropy_f32";
    if (!ctx) return SG_ERR_ARGUMENT;
    sg_ok(ctx);
    sg_softmax_options o = options ? *options : sg_softmax_options_default();
    float c;
    sg_status st = sg_check_class_loss(ctx, name, rows, n, x, ldx, target, loss, dx, lddx, &o, &c);
    if (st != SG_OK || rows == 0) return st;
    alt_job j = {0};
    j.row = loss_row;
    j.x = x;
    j.ldx = ldx;
    j.out = dx;
    j.ldo = lddx;
    j.target = target;
    j.loss = loss;
    sg_alt_run(ctx, &j, rows, n, &o, c);
    return SG_OK;
}

/*
 * sigmoid.c - sigmoid and normalized sigmoid (the DeepSeekMoE gate) as
 * row operators, float32, forward and backward. Unmasked rows run the
 * dispatched kernels (sigmoid_store, sigmoid_bwd, nsigmoid_bwd) and, for
 * normalized rows far in the negative tail, the softmax core's kernels;
 * masked rows are computed in double here.
 */
#include "normalizers/alternatives_internal.h"

/* Below this max z, sigma(z) = e^z (1 - e^z + ...) and the normalized
 * sigmoid equals softmax(z) within e^-20 = 2e-9 relative. */
#define SOFTMAX_REGIME_Z (-20.0f)

/* ---- sigmoid ------------------------------------------------------------ */

static void sigmoid_row(const alt_job *j, size_t r) {
    float *y = j->out + r * j->ldo;
    if (!alt_masked(j)) {
        j->k->sigmoid_store(j->n, j->x + r * j->ldx, y, j->c);
        return;
    }
    /* masked: z by blocks (removed: -inf, sigma = 0), then the kernel;
     * z = -inf from an overflow is sigmoid's own limit, so no fallback */
    const sg_row_view v = alt_view(j, r);
    float z[SG_ALT_ZBLOCK];
    int special = 0;
    for (size_t i = 0; i < j->n; i += SG_ALT_ZBLOCK) {
        size_t len = j->n - i < SG_ALT_ZBLOCK ? j->n - i : SG_ALT_ZBLOCK;
        sg_alt_zblock(j, &v, i, len, -INFINITY, z, &special);
        j->k->sigmoid_store(len, z, y + i, 1.0f);
    }
}

static void sigmoid_bwd_row(const alt_job *j, size_t r) {
    float *dx = j->out + r * j->ldo;
    j->k->sigmoid_bwd(j->n, j->y + r * j->ldy, j->dy + r * j->lddy, dx, j->c);
    if (!alt_masked(j)) return;
    const sg_row_view v = alt_view(j, r); /* masks only */
    for (size_t i = 0; i < j->n; i++)
        if (sg_row_removed(&v, i)) dx[i] = 0.0f;
}

/* ---- normalized sigmoid ------------------------------------------------- */

/*
 * The exact path in double (masks, and rows the fast path cannot take):
 * w_i = sigma(z_i) when the largest kept z is >= 0, else e^(z_i - zmax)
 * sigma(-z_i) = sigma(z_i) e^-zmax (the same ratios, with the largest
 * weight >= 1/2, so nothing underflows that matters).
 */
static void nsigmoid_exact_row(const alt_job *j, size_t r) {
    const sg_row_view v = alt_view(j, r);
    float *y = j->out + r * j->ldo;
    const size_t n = j->n;
    double zm = -INFINITY;
    for (size_t i = 0; i < n; i++) {
        if (sg_row_removed(&v, i)) continue;
        double z = alt_z(&v, i);
        if (isnan(z)) {
            sg_alt_nan_row(j, r);
            return;
        }
        if (z > zm) zm = z;
    }
    if (zm == -INFINITY) { /* nothing kept, or every kept z = -inf */
        for (size_t i = 0; i < n; i++) y[i] = 0.0f;
        return;
    }
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        if (!sg_row_removed(&v, i)) {
            double z = alt_z(&v, i);
            s += zm >= 0.0 ? sg_alt_sigmoid(z) : exp(z - zm) * sg_alt_sigmoid(-z);
        }
    for (size_t i = 0; i < n; i++) {
        if (sg_row_removed(&v, i)) {
            y[i] = 0.0f;
            continue;
        }
        double z = alt_z(&v, i);
        double w = zm >= 0.0 ? sg_alt_sigmoid(z) : exp(z - zm) * sg_alt_sigmoid(-z);
        y[i] = (float)(w / s);
    }
}

/* Masked rows through the kernels: z blocks twice (max, then values). */
static void nsigmoid_masked_row(const alt_job *j, size_t r) {
    const sg_row_view v = alt_view(j, r);
    float *y = j->out + r * j->ldo, z[SG_ALT_ZBLOCK];
    const size_t n = j->n;
    int special = 0;
    float zm = -INFINITY;
    for (size_t i = 0; i < n; i += SG_ALT_ZBLOCK) {
        size_t len = n - i < SG_ALT_ZBLOCK ? n - i : SG_ALT_ZBLOCK;
        float m = sg_alt_zblock(j, &v, i, len, -INFINITY, z, &special);
        zm = m > zm ? m : zm;
    }
    if (special || zm == -INFINITY) { /* overflow, or nothing finite kept (NaN?) */
        nsigmoid_exact_row(j, r);
        return;
    }
    double s = 0.0;
    for (size_t i = 0; i < n; i += SG_ALT_ZBLOCK) {
        size_t len = n - i < SG_ALT_ZBLOCK ? n - i : SG_ALT_ZBLOCK;
        sg_alt_zblock(j, &v, i, len, -INFINITY, z, &special);
        s += zm < SOFTMAX_REGIME_Z ? j->ck->expsum_store(len, z, y + i, zm, 1.0f)
                                   : j->k->sigmoid_store(len, z, y + i, 1.0f);
    }
    if (isnan(s)) {
        sg_alt_nan_row(j, r);
        return;
    }
    j->ck->scale(n, y, y, (float)(1.0 / s));
}

static void nsigmoid_row(const alt_job *j, size_t r) {
    if (alt_masked(j)) {
        nsigmoid_masked_row(j, r);
        return;
    }
    const float *x = j->x + r * j->ldx;
    float *y = j->out + r * j->ldo;
    const size_t n = j->n;
    const float xm = j->ck->rmax(n, x);
    if (xm == -INFINITY) { /* every entry -inf, or NaN ignored by rmax */
        nsigmoid_exact_row(j, r);
        return;
    }
    double s;
    if (xm * j->c < SOFTMAX_REGIME_Z) s = j->ck->expsum_store(n, x, y, xm, j->c);
    else s = j->k->sigmoid_store(n, x, y, j->c);
    if (isnan(s)) {
        sg_alt_nan_row(j, r);
        return;
    }
    j->ck->scale(n, y, y, (float)(1.0 / s)); /* s in [e^-0 .. n] or [sigma(-20), n] */
}

/* sigma'(z) / sigma(z) = sigma(-z). */
static double nsigmoid_dlog(double z) { return sg_alt_sigmoid(-z); }

/* dx_j = y_j sigma(-z_j) (dy_j - sum_kept dy y) / T. */
static void nsigmoid_bwd_row(const alt_job *j, size_t r) {
    if (alt_masked(j)) {
        sg_alt_masked_bwd_row(j, r, nsigmoid_dlog);
        return;
    }
    const float *y = j->y + r * j->ldy, *dy = j->dy + r * j->lddy;
    const float dot = (float)j->ck->dot(j->n, y, dy);
    j->k->nsigmoid_bwd(j->n, j->x + r * j->ldx, y, dy, j->out + r * j->ldo, j->c, dot);
}

/* ---- public ops --------------------------------------------------------- */

/*
 * Sigmoid and its backward are elementwise: unmasked contiguous rows
 * (every stride == n) run as one sequence of rows * n entries, cut into
 * rows of FLAT_N and a last partial row, so short rows cost a kernel call
 * per FLAT_N entries rather than per row. Elementwise results do not depend
 * on the cut (nor, so, on the thread count).
 */
#define FLAT_N ((size_t)4096)
static void run_elementwise(sg_context *ctx, alt_job *j, size_t rows, size_t n,
                            const sg_softmax_options *o, float c, int contiguous) {
    if (!contiguous || o->keep_mask || o->add_mask || rows * n < 2 * n + FLAT_N) {
        sg_alt_run(ctx, j, rows, n, o, c);
        return;
    }
    const size_t total = rows * n, full = total / FLAT_N, rem = total % FLAT_N;
    alt_job a = *j, b = *j;
    a.ldx = a.ldy = a.lddy = a.ldo = FLAT_N;
    if (full) sg_alt_run(ctx, &a, full, FLAT_N, o, c);
    if (!rem) return;
    const size_t off = full * FLAT_N;
    if (b.x) b.x += off;
    if (b.y) b.y += off;
    if (b.dy) b.dy += off;
    b.out += off;
    sg_alt_run(ctx, &b, 1, rem, o, c);
}


/* run_elementwise for a forward job (x into out). */
static void run_forward_flat(sg_context *ctx, alt_job *j, size_t rows, size_t n,
                             const sg_softmax_options *o, float c) {
    run_elementwise(ctx, j, rows, n, o, c, j->ldx == n && j->ldo == n);
}

sg_status sg_sigmoid_f32(sg_context *ctx, size_t rows, size_t n, const float *x, size_t ldx,
                         float *y, size_t ldy, const sg_softmax_options *options) {
    return sg_alt_forward_x(ctx, "sg_sigmoid_f32", sigmoid_row, run_forward_flat,
                            rows, n, x, ldx, y, ldy, options);
}

sg_status sg_normalized_sigmoid_f32(sg_context *ctx, size_t rows, size_t n, const float *x,
                                    size_t ldx, float *y, size_t ldy,
                                    const sg_softmax_options *options) {
    return sg_alt_forward_x(ctx, "sg_normalized_sigmoid_f32", nsigmoid_row, NULL,
                            rows, n, x, ldx, y, ldy, options);
}

sg_status sg_sigmoid_backward_f32(sg_context *ctx, size_t rows, size_t n, const float *y,
                                  size_t ldy, const float *dy, size_t lddy, float *dx, size_t lddx,
                                  const sg_softmax_options *options) {
    static const char name[] = "sg_sigmoid_backward_f32";
    if (!ctx) return SG_ERR_ARGUMENT;
    sg_ok(ctx);
    sg_softmax_options o;
    float c;
    if (!y && rows && n) return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: y is NULL", name);
    sg_status st = sg_alt_check_backward(ctx, name, rows, n, NULL, 0, y, ldy, dy, lddy, dx, lddx,
                                         &o, options, &c);
    if (st != SG_OK || rows == 0 || n == 0) return st;
    alt_job j = {0};
    j.row = sigmoid_bwd_row;
    j.y = y;
    j.ldy = ldy;
    j.dy = dy;
    j.lddy = lddy;
    j.out = dx;
    j.ldo = lddx;
    run_elementwise(ctx, &j, rows, n, &o, c, ldy == n && lddy == n && lddx == n);
    return SG_OK;
}

sg_status sg_normalized_sigmoid_backward_f32(sg_context *ctx, size_t rows, size_t n,
                                             const float *x, size_t ldx, const float *y,
                                             size_t ldy, const float *dy, size_t lddy, float *dx,
                                             size_t lddx, const sg_softmax_options *options) {
    return sg_alt_backward_xy(ctx, "sg_normalized_sigmoid_backward_f32", nsigmoid_bwd_row, rows, n, x, ldx, y, ldy, dy, lddy, dx, lddx,
                              options);
}

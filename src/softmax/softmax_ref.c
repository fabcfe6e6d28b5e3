/*
 * softmax_ref.c - reference kernels of the softmax family: portable scalar
 * C, double accumulation, libm exponentials. They are the specification
 * that the SIMD kernels are tested against, and the path that always works.
 * Contracts are in softmax_kernels.h.
 */
#include <math.h>

#include "softmax/softmax_kernels.h"

/* exp with the kernels' flush rule: results below 2^-126 become 0. */
#define SG_EXP_FLUSH_BELOW (-87.33654475f) /* ln(2^-126) */

static float exp_flushed(float d) {
    return d < SG_EXP_FLUSH_BELOW ? 0.0f : expf(d);
}

float sg_rmax_f32__ref(size_t n, const float *x) {
    float m = -INFINITY;
    for (size_t i = 0; i < n; i++)
        if (x[i] > m) m = x[i];
    return m;
}

double sg_expsum_f32__ref(size_t n, const float *x, float max, float c) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += exp_flushed((x[i] - max) * c);
    return s;
}

double sg_expsum_store_f32__ref(size_t n, const float *x, float *y, float max,
                                float c) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) {
        y[i] = exp_flushed((x[i] - max) * c);
        s += y[i];
    }
    return s;
}

double sg_shiftexpsum_store_f32__ref(size_t n, const float *x, float *y, float max, float c) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) {
        float d = x[i] - max; /* see shift_store for the overflow case */
        y[i] = d == -INFINITY ? x[i] * c - max * c : d * c;
        s += exp_flushed(y[i]);
    }
    return s;
}

void sg_scale_f32__ref(size_t n, const float *x, float *y, float s) {
    for (size_t i = 0; i < n; i++) y[i] = x[i] * s;
}

void sg_expscale_store_f32__ref(size_t n, const float *x, float *y, float max,
                                float c, float s) {
    for (size_t i = 0; i < n; i++) y[i] = exp_flushed((x[i] - max) * c) * s;
}

/*
 * Two-pass reference: each term exp(t), t = x * c, is split as
 * 2^k * exp(t - k ln 2) with k = round(t * log2 e); the sum is kept as
 * m * 2^e with e the largest k seen, so nothing overflows.
 */
void sg_extexp_sum_f32__ref(size_t n, const float *x, float c, sg_extsum *out) {
    double m = 0.0, e = -INFINITY;
    float mx = -INFINITY, mn = INFINITY;
    int non_finite = 0;
    for (size_t i = 0; i < n; i++) {
        if (x[i] > mx) mx = x[i];
        if (x[i] < mn) mn = x[i];
        double t = (double)(x[i] * c);
        if (!isfinite(t)) { /* outside the domain: reported through m */
            non_finite = 1;
            continue;
        }
        double k = nearbyint(t * 1.4426950408889634);
        double p = exp(t - k * 0.6931471805599453);
        if (k > e) {
            m = (e == -INFINITY ? 0.0 : ldexp(m, (int)(e - k))) + p;
            e = k;
        } else {
            m += ldexp(p, (int)(k - e));
        }
    }
    out->m = non_finite ? NAN : m;
    out->e = n && !non_finite ? e : 0.0;
    out->max = mx;
    out->min = mn;
}

void sg_extexp_store_f32__ref(size_t n, const float *x, float *y, float c,
                              float inv_m, float e) {
    for (size_t i = 0; i < n; i++) {
        double t = (double)(x[i] * c);
        double k = nearbyint(t * 1.4426950408889634);
        double p = exp(t - k * 0.6931471805599453) * inv_m;
        double v = ldexp(p, (int)(k - e));
        y[i] = v < 0x1p-126 ? 0.0f : (float)v;
    }
}

void sg_shift_store_f32__ref(size_t n, const float *x, float *y, float max,
                             float c, float off) {
    for (size_t i = 0; i < n; i++) {
        /* x - max can overflow to -inf where (x - max) / T does not. */
        float d = x[i] - max;
        y[i] = (d == -INFINITY ? x[i] * c - max * c : d * c) - off;
    }
}

double sg_dot_f32__ref(size_t n, const float *a, const float *b) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

double sg_sum_f32__ref(size_t n, const float *a) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += a[i];
    return s;
}

void sg_softmax_bwd_f32__ref(size_t n, const float *y, const float *dy,
                             float *dx, float dot, float c) {
    for (size_t i = 0; i < n; i++) dx[i] = y[i] * (dy[i] - dot) * c;
}

void sg_logsoftmax_bwd_f32__ref(size_t n, const float *y, const float *dy,
                                float *dx, float sum, float c) {
    for (size_t i = 0; i < n; i++) dx[i] = (dy[i] - expf(y[i]) * sum) * c;
}

size_t sg_softmax_short_f32__ref(size_t rows, size_t n, const float *x,
                                 size_t ldx, float *y, size_t ldy, float c, float t, int mode) {
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * ldx;
        float *yr = y + r * ldy;
        float mx = sg_rmax_f32__ref(n, xr);
        if (!isfinite(mx)) return r;
        if (mode == SG_SHORT_LOGSUMEXP) {
            *yr = (float)((double)mx / t + log(sg_expsum_f32__ref(n, xr, mx, c)));
        } else if (mode == SG_SHORT_LOG_SOFTMAX) {
            double s = sg_expsum_f32__ref(n, xr, mx, c);
            sg_shift_store_f32__ref(n, xr, yr, mx, c, (float)log(s));
        } else {
            double s = sg_expsum_store_f32__ref(n, xr, yr, mx, c);
            sg_scale_f32__ref(n, yr, yr, (float)(1.0 / s));
        }
    }
    return rows;
}

void sg_softmax_bwd_short_f32__ref(size_t rows, size_t n, const float *y, size_t ldy,
                                   const float *dy, size_t lddy, float *dx, size_t lddx, float c,
                                   int log_mode) {
    for (size_t r = 0; r < rows; r++) {
        const float *yr = y + r * ldy, *dyr = dy + r * lddy;
        float *dxr = dx + r * lddx;
        if (log_mode)
            sg_logsoftmax_bwd_f32__ref(n, yr, dyr, dxr, (float)sg_sum_f32__ref(n, dyr), c);
        else
            sg_softmax_bwd_f32__ref(n, yr, dyr, dxr, (float)sg_dot_f32__ref(n, yr, dyr), c);
    }
}

/*
 * alternatives_ref.c - reference kernels of the softmax alternatives: the
 * spec that the AVX2 and AVX-512 kernels are tested against. Scalar C,
 * each value computed in double with libm and rounded once to float; z is
 * x * c rounded to float first, exactly as the vector kernels form it.
 * Contracts: alternatives_kernels.h.
 */
#include <math.h>
#include <stdint.h>

#include "normalizers/alternatives_kernels.h"

/* sigma(z) from e^-|z|: never overflows, exact limits at +-inf. */
static inline double sigmoid_d(double z) {
    double e = exp(-fabs(z));
    return z >= 0.0 ? 1.0 / (1.0 + e) : e / (1.0 + e);
}

/* Stablemax's s: z + 1 on z >= 0, 1 / (1 - z) below. */
static inline double stable_s(double z) { return z >= 0.0 ? z + 1.0 : 1.0 / (1.0 - z); }

/* Softpick's scaled e^z - 1 (see sg_softpick_store_fn). */
static inline double softpick_e(double z, double m, double em) {
    return m <= SG_SOFTPICK_EXPM1_MAX ? em * expm1(z) : exp(z - m) - em;
}

double sg_sigmoid_store_f32__ref(size_t n, const float *x, float *y, float c) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) {
        float v = (float)sigmoid_d(x[i] * c);
        y[i] = v;
        s += v;
    }
    return s;
}

double sg_stablemax_store_f32__ref(size_t n, const float *x, float *y, float c) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) {
        float v = (float)stable_s(x[i] * c);
        y[i] = v;
        s += v;
    }
    return s;
}

double sg_softpick_store_f32__ref(size_t n, const float *x, float *y, float c, float m, float em) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) {
        double e = softpick_e(x[i] * c, m, em);
        y[i] = e > 0.0 ? (float)e : 0.0f;
        s += fabs(e);
    }
    return s;
}

double sg_softpick_sums_f32__ref(size_t n, const float *x, const float *dy, float c, float m,
                                 float em, double *dot) {
    double s = 0.0, d = 0.0;
    for (size_t i = 0; i < n; i++) {
        double e = softpick_e(x[i] * c, m, em);
        s += fabs(e);
        if (e > 0.0) d += (double)dy[i] * e;
    }
    *dot = d;
    return s;
}

void sg_softpick_bwd_f32__ref(size_t n, const float *x, const float *dy, float *dx, float c,
                              float m, float em, float inv_d, float dot) {
    for (size_t i = 0; i < n; i++) {
        float z = x[i] * c;
        double q = (softpick_e(z, m, em) + em) * inv_d;
        double g = z > 0.0f ? dy[i] - (double)dot : z < 0.0f ? (double)dot : 0.0;
        dx[i] = (float)(q * g * c);
    }
}

void sg_sigmoid_bwd_f32__ref(size_t n, const float *y, const float *dy, float *dx, float c) {
    for (size_t i = 0; i < n; i++) dx[i] = (float)((double)dy[i] * y[i] * (1.0 - y[i]) * c);
}

void sg_nsigmoid_bwd_f32__ref(size_t n, const float *x, const float *y, const float *dy, float *dx,
                              float c, float dot) {
    for (size_t i = 0; i < n; i++)
        dx[i] = (float)((double)y[i] * sigmoid_d(-(double)(x[i] * c)) * ((double)dy[i] - dot) * c);
}

void sg_stablemax_bwd_f32__ref(size_t n, const float *x, const float *y, const float *dy, float *dx,
                               float c, float dot) {
    for (size_t i = 0; i < n; i++)
        dx[i] = (float)((double)y[i] / (1.0 + fabs((double)(x[i] * c))) * ((double)dy[i] - dot) * c);
}

void sg_log_shift_store_f32__ref(size_t n, const float *x, float *y, float off) {
    for (size_t i = 0; i < n; i++) y[i] = (float)(log((double)x[i]) - off);
}

void sg_gumbel_store_f32__ref(size_t n, const float *x, const float *u, float *t) {
    for (size_t i = 0; i < n; i++) t[i] = (float)((double)x[i] - log(-log((double)u[i])));
}

/* sg_random_uniform_f32's mapping (philox.c): 23 bits plus one half. */
static inline float open_unit(uint32_t bits) { return ((float)(bits >> 9) + 0.5f) * 0x1p-23f; }

void sg_gumbel_noise_f32__ref(size_t n, const float *x, float *t, const uint32_t key[2], uint32_t row,
                              uint64_t offset, size_t col0) {
    for (size_t i = 0; i < n; i += 4) {
        const uint32_t ctr[4] = {(uint32_t)((col0 + i) / 4), row, (uint32_t)offset,
                                 (uint32_t)(offset >> 32)};
        uint32_t out[4];
        sg_philox4x32_10(ctr, key, out);
        for (size_t k = 0; k < 4 && i + k < n; k++) {
            double u = open_unit(out[k]);
            t[i + k] = (float)((double)x[i + k] - log(-log(u))); /* x read before t written */
        }
    }
}

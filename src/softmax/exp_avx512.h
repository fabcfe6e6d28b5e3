/*
 * exp_avx512.h - the softmax core's AVX-512 exponential, in one place.
 * Include only from files compiled with AVX-512 flags (*_avx512.c).
 *
 * Every kernel that promises the core's bits (the route gates' weights
 * equal the softmax kernels' exp, the MoE activations) takes it from here,
 * so the copies cannot drift apart: Cody-Waite reduction with FMA
 * (k = round(t log2 e), r = t - k ln2 in two parts), exp(r) by a degree-5
 * polynomial on |r| <= ln2/2 (relative error 9.2e-8 before rounding),
 * 2^k by scalef.
 */
#ifndef SOFTGATE_EXP_AVX512_H
#define SOFTGATE_EXP_AVX512_H

#include <immintrin.h>

/* exp(r) ~ 1 + r*(c1 + r*(c2 + r*(c3 + r*(c4 + r*c5)))) on |r| <= ln2/2. */
static inline __m512 sg_exp_poly_avx512(__m512 r) {
    __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(0x1.0F9F9Cp-7f), r, _mm512_set1_ps(0x1.573A1Ap-5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0x1.555A80p-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0x1.FFFDC6p-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0x1.FFFFF6p-1f));
    return _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
}

/* exp(t) for t the caller keeps in range (one reduction step: exact for
 * |t| <= 2^17; 2^k saturates or underflows by scalef beyond float range). */
static inline __m512 sg_exp_clamped_avx512(__m512 t) {
    const __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(t, _mm512_set1_ps(0x1.715476p+0f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fmadd_ps(k, _mm512_set1_ps(-0x1.62E430p-1f), t);
    r = _mm512_fmadd_ps(k, _mm512_set1_ps(0x1.05C610p-29f), r);
    return _mm512_scalef_ps(sg_exp_poly_avx512(r), k);
}

/* exp(d) for the shifted arguments of softmax (d <= 0): arguments below
 * -150 are clamped there, where 2^k underflows to exactly 0, so -inf gives
 * 0, and NaN stays NaN (vmaxps returns its second operand when one is NaN).
 * Outputs below 2^-126 come out denormal or 0. */
static inline __m512 sg_exp_nonpos_avx512(__m512 d) {
    return sg_exp_clamped_avx512(_mm512_max_ps(_mm512_set1_ps(-150.0f), d));
}

#endif

/*
 * sparse_avx512.c - AVX-512 kernels of the sparse normalizers (contracts in
 * sparse_kernels.h; reference in sparse_ref.c). 64 floats per step in four
 * accumulators/masks; the tail uses masked loads.
 */
#include <immintrin.h>
#include <math.h>

#include "normalizers/sparse_kernels.h"

/* max(x, acc) returns acc when x is NaN (the second operand wins on
 * NaN), so NaN never enters the max; NaN and +inf are flagged by one
 * unordered not-less-than compare against +inf. */
float sg_sparse_max_f32__avx512_u64(size_t n, const float *x, int *bad) {
    const __m512 inf = _mm512_set1_ps(INFINITY);
    __m512 m0 = _mm512_set1_ps(-INFINITY), m1 = m0, m2 = m0, m3 = m0;
    __mmask16 b = 0;
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        __m512 a = _mm512_loadu_ps(x + i), c = _mm512_loadu_ps(x + i + 16);
        __m512 d = _mm512_loadu_ps(x + i + 32), e = _mm512_loadu_ps(x + i + 48);
        b |= _mm512_cmp_ps_mask(a, inf, _CMP_NLT_UQ) | _mm512_cmp_ps_mask(c, inf, _CMP_NLT_UQ) |
             _mm512_cmp_ps_mask(d, inf, _CMP_NLT_UQ) | _mm512_cmp_ps_mask(e, inf, _CMP_NLT_UQ);
        m0 = _mm512_max_ps(a, m0), m1 = _mm512_max_ps(c, m1);
        m2 = _mm512_max_ps(d, m2), m3 = _mm512_max_ps(e, m3);
    }
    for (; i < n; i += 16) {
        __mmask16 k = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        __m512 a = _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), k, x + i);
        b |= _mm512_cmp_ps_mask(a, inf, _CMP_NLT_UQ);
        m0 = _mm512_max_ps(a, m0);
    }
    if (b) *bad = 1;
    m0 = _mm512_max_ps(_mm512_max_ps(m0, m1), _mm512_max_ps(m2, m3));
    return _mm512_reduce_max_ps(m0);
}

/* Candidates are rare (those near the max), so the loop is a compare and
 * a mask test per 64 floats; a block with candidates compresses their
 * indices and values into registers and stores all 16 lanes (compress
 * straight to memory is slow on some cores), advancing by the count. */
static inline size_t take(__mmask16 m, __m512 v, size_t base, uint32_t *idx, float *val, size_t c,
                          size_t cap) {
    if (!m) return c;
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512i ids = _mm512_add_epi32(lane, _mm512_set1_epi32((int)(uint32_t)base));
    _mm512_storeu_si512((void *)(idx + c), _mm512_maskz_compress_epi32(m, ids));
    _mm512_storeu_ps(val + c, _mm512_maskz_compress_ps(m, v));
    c += (size_t)__builtin_popcount(m);
    return c > cap ? cap + 1 : c;
}

size_t sg_sparse_select_f32__avx512_u64(size_t n, const float *x, float thr, uint32_t *idx,
                                        float *val, size_t cap) {
    const __m512 t = _mm512_set1_ps(thr);
    size_t c = 0, i = 0;
    for (; i + 64 <= n; i += 64) {
        const __m512 v0 = _mm512_loadu_ps(x + i), v1 = _mm512_loadu_ps(x + i + 16);
        const __m512 v2 = _mm512_loadu_ps(x + i + 32), v3 = _mm512_loadu_ps(x + i + 48);
        __mmask16 k0 = _mm512_cmp_ps_mask(v0, t, _CMP_GT_OQ), k1 = _mm512_cmp_ps_mask(v1, t, _CMP_GT_OQ);
        __mmask16 k2 = _mm512_cmp_ps_mask(v2, t, _CMP_GT_OQ), k3 = _mm512_cmp_ps_mask(v3, t, _CMP_GT_OQ);
        if (!(k0 | k1 | k2 | k3)) continue;
        if ((c = take(k0, v0, i, idx, val, c, cap)) > cap) return c;
        if ((c = take(k1, v1, i + 16, idx, val, c, cap)) > cap) return c;
        if ((c = take(k2, v2, i + 32, idx, val, c, cap)) > cap) return c;
        if ((c = take(k3, v3, i + 48, idx, val, c, cap)) > cap) return c;
    }
    for (; i < n; i += 16) {
        __mmask16 k = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        const __m512 v = _mm512_maskz_loadu_ps(k, x + i);
        __mmask16 m = _mm512_mask_cmp_ps_mask(k, v, t, _CMP_GT_OQ);
        if ((c = take(m, v, i, idx, val, c, cap)) > cap) return c;
    }
    return c;
}

/* Two vectors of 8 doubles per step (16 floats converted), masked adds,
 * min and max: no branches on the data (the scalar loop mispredicts). */
void sg_sparse_sums_f32__avx512_u16(size_t n, const float *d, double scale, double t,
                                    sg_sparse_sums *out) {
    const __m512d vs = _mm512_set1_pd(scale), vt = _mm512_set1_pd(t);
    const __m512d pinf = _mm512_set1_pd(INFINITY), ninf = _mm512_set1_pd(-INFINITY);
    __m512d s1a = _mm512_setzero_pd(), s1b = s1a, s2a = s1a, s2b = s1a;
    __m512d mna = pinf, mnb = pinf, mxa = ninf, mxb = ninf;
    size_t k = 0, i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512d u = _mm512_mul_pd(_mm512_cvtps_pd(_mm256_loadu_ps(d + i)), vs);
        __m512d v = _mm512_mul_pd(_mm512_cvtps_pd(_mm256_loadu_ps(d + i + 8)), vs);
        __mmask8 mu = _mm512_cmp_pd_mask(u, vt, _CMP_GT_OQ), mv = _mm512_cmp_pd_mask(v, vt, _CMP_GT_OQ);
        k += (size_t)__builtin_popcount(mu) + (size_t)__builtin_popcount(mv);
        s1a = _mm512_mask_add_pd(s1a, mu, s1a, u), s1b = _mm512_mask_add_pd(s1b, mv, s1b, v);
        s2a = _mm512_mask3_fmadd_pd(u, u, s2a, mu), s2b = _mm512_mask3_fmadd_pd(v, v, s2b, mv);
        mna = _mm512_mask_min_pd(mna, mu, mna, u), mnb = _mm512_mask_min_pd(mnb, mv, mnb, v);
        mxa = _mm512_mask_max_pd(mxa, (__mmask8)~mu, mxa, u), mxb = _mm512_mask_max_pd(mxb, (__mmask8)~mv, mxb, v);
    }
    for (; i < n; i += 8) {
        const __mmask8 live = n - i >= 8 ? (__mmask8)0xff : (__mmask8)((1u << (n - i)) - 1);
        __m512d u = _mm512_mul_pd(_mm512_cvtps_pd(_mm256_maskz_loadu_ps(live, d + i)), vs);
        __mmask8 mu = _mm512_mask_cmp_pd_mask(live, u, vt, _CMP_GT_OQ), mo = live & (__mmask8)~mu;
        k += (size_t)__builtin_popcount(mu);
        s1a = _mm512_mask_add_pd(s1a, mu, s1a, u);
        s2a = _mm512_mask3_fmadd_pd(u, u, s2a, mu);
        mna = _mm512_mask_min_pd(mna, mu, mna, u);
        mxa = _mm512_mask_max_pd(mxa, mo, mxa, u);
    }
    out->k = k;
    out->s1 = _mm512_reduce_add_pd(_mm512_add_pd(s1a, s1b));
    out->s2 = _mm512_reduce_add_pd(_mm512_add_pd(s2a, s2b));
    out->min_in = _mm512_reduce_min_pd(_mm512_min_pd(mna, mnb));
    out->max_out = _mm512_reduce_max_pd(_mm512_max_pd(mxa, mxb));
}

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
 * a mask test per 64 floats; set bits are then walked in index order. */
static inline size_t take(__mmask16 m, size_t base, uint32_t *idx, size_t c, size_t cap) {
    while (m) {
        if (c == cap) return cap + 1;
        idx[c++] = (uint32_t)(base + (size_t)__builtin_ctz(m));
        m &= (__mmask16)(m - 1);
    }
    return c;
}

size_t sg_sparse_select_f32__avx512_u64(size_t n, const float *x, float thr, uint32_t *idx,
                                        size_t cap) {
    const __m512 t = _mm512_set1_ps(thr);
    size_t c = 0, i = 0;
    for (; i + 64 <= n; i += 64) {
        __mmask16 k0 = _mm512_cmp_ps_mask(_mm512_loadu_ps(x + i), t, _CMP_GT_OQ);
        __mmask16 k1 = _mm512_cmp_ps_mask(_mm512_loadu_ps(x + i + 16), t, _CMP_GT_OQ);
        __mmask16 k2 = _mm512_cmp_ps_mask(_mm512_loadu_ps(x + i + 32), t, _CMP_GT_OQ);
        __mmask16 k3 = _mm512_cmp_ps_mask(_mm512_loadu_ps(x + i + 48), t, _CMP_GT_OQ);
        if (!(k0 | k1 | k2 | k3)) continue;
        if ((c = take(k0, i, idx, c, cap)) > cap) return c;
        if ((c = take(k1, i + 16, idx, c, cap)) > cap) return c;
        if ((c = take(k2, i + 32, idx, c, cap)) > cap) return c;
        if ((c = take(k3, i + 48, idx, c, cap)) > cap) return c;
    }
    for (; i < n; i += 16) {
        __mmask16 k = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        __mmask16 m = _mm512_mask_cmp_ps_mask(k, _mm512_maskz_loadu_ps(k, x + i), t, _CMP_GT_OQ);
        if ((c = take(m, i, idx, c, cap)) > cap) return c;
    }
    return c;
}

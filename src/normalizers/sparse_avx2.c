/*
 * sparse_avx2.c - AVX2 kernels of the sparse normalizers (contracts in
 * sparse_kernels.h; reference in sparse_ref.c). 32 floats per step in four
 * accumulators; a scalar tail.
 */
#include <immintrin.h>
#include <math.h>

#include "normalizers/sparse_kernels.h"

/* As the AVX-512 kernel: max(x, acc) keeps acc when x is NaN; NaN and
 * +inf flagged by an unordered not-less-than compare against +inf. */
float sg_sparse_max_f32__avx2_u32(size_t n, const float *x, int *bad) {
    const __m256 inf = _mm256_set1_ps(INFINITY);
    __m256 m0 = _mm256_set1_ps(-INFINITY), m1 = m0, m2 = m0, m3 = m0, b = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256 a = _mm256_loadu_ps(x + i), c = _mm256_loadu_ps(x + i + 8);
        __m256 d = _mm256_loadu_ps(x + i + 16), e = _mm256_loadu_ps(x + i + 24);
        b = _mm256_or_ps(b, _mm256_or_ps(_mm256_cmp_ps(a, inf, _CMP_NLT_UQ),
                                         _mm256_cmp_ps(c, inf, _CMP_NLT_UQ)));
        b = _mm256_or_ps(b, _mm256_or_ps(_mm256_cmp_ps(d, inf, _CMP_NLT_UQ),
                                         _mm256_cmp_ps(e, inf, _CMP_NLT_UQ)));
        m0 = _mm256_max_ps(a, m0), m1 = _mm256_max_ps(c, m1);
        m2 = _mm256_max_ps(d, m2), m3 = _mm256_max_ps(e, m3);
    }
    for (; i + 8 <= n; i += 8) {
        __m256 a = _mm256_loadu_ps(x + i);
        b = _mm256_or_ps(b, _mm256_cmp_ps(a, inf, _CMP_NLT_UQ));
        m0 = _mm256_max_ps(a, m0);
    }
    if (_mm256_movemask_ps(b)) *bad = 1;
    m0 = _mm256_max_ps(_mm256_max_ps(m0, m1), _mm256_max_ps(m2, m3));
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m0), _mm256_extractf128_ps(m0, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_movehdup_ps(h));
    float m = _mm_cvtss_f32(h);
    for (; i < n; i++) {
        if (isnan(x[i]) || x[i] == INFINITY) *bad = 1;
        else if (x[i] > m) m = x[i];
    }
    return m;
}

static inline size_t take(unsigned m, size_t base, uint32_t *idx, size_t c, size_t cap) {
    while (m) {
        if (c == cap) return cap + 1;
        idx[c++] = (uint32_t)(base + (size_t)__builtin_ctz(m));
        m &= m - 1;
    }
    return c;
}

size_t sg_sparse_select_f32__avx2_u32(size_t n, const float *x, float thr, uint32_t *idx,
                                      size_t cap) {
    const __m256 t = _mm256_set1_ps(thr);
    size_t c = 0, i = 0;
    for (; i + 32 <= n; i += 32) {
        unsigned k0 = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + i), t, _CMP_GT_OQ));
        unsigned k1 = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + i + 8), t, _CMP_GT_OQ));
        unsigned k2 = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + i + 16), t, _CMP_GT_OQ));
        unsigned k3 = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + i + 24), t, _CMP_GT_OQ));
        unsigned all = k0 | k1 << 8 | k2 << 16 | k3 << 24;
        if (all && (c = take(all, i, idx, c, cap)) > cap) return c;
    }
    for (; i + 8 <= n; i += 8) {
        unsigned k = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + i), t, _CMP_GT_OQ));
        if (k && (c = take(k, i, idx, c, cap)) > cap) return c;
    }
    for (; i < n; i++) {
        if (!(x[i] > thr)) continue;
        if (c == cap) return cap + 1;
        idx[c++] = (uint32_t)i;
    }
    return c;
}

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

static inline size_t take(unsigned m, const float *x, size_t base, uint32_t *idx, float *val,
                          size_t c, size_t cap) {
    while (m) {
        if (c == cap) return cap + 1;
        const size_t i = base + (size_t)__builtin_ctz(m);
        val[c] = x[i];
        idx[c++] = (uint32_t)i;
        m &= m - 1;
    }
    return c;
}

size_t sg_sparse_select_f32__avx2_u32(size_t n, const float *x, float thr, uint32_t *idx,
                                      float *val, size_t cap) {
    const __m256 t = _mm256_set1_ps(thr);
    size_t c = 0, i = 0;
    for (; i + 32 <= n; i += 32) {
        unsigned k0 = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + i), t, _CMP_GT_OQ));
        unsigned k1 = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + i + 8), t, _CMP_GT_OQ));
        unsigned k2 = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + i + 16), t, _CMP_GT_OQ));
        unsigned k3 = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + i + 24), t, _CMP_GT_OQ));
        unsigned all = k0 | k1 << 8 | k2 << 16 | k3 << 24;
        if (all && (c = take(all, x, i, idx, val, c, cap)) > cap) return c;
    }
    for (; i + 8 <= n; i += 8) {
        unsigned k = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + i), t, _CMP_GT_OQ));
        if (k && (c = take(k, x, i, idx, val, c, cap)) > cap) return c;
    }
    for (; i < n; i++) {
        if (!(x[i] > thr)) continue;
        if (c == cap) return cap + 1;
        val[c] = x[i];
        idx[c++] = (uint32_t)i;
    }
    return c;
}

/* 4 doubles per vector, two vectors per step; compares give lane masks
 * that select what is added (and-ed) and blended into min and max. */
static inline double hsum4(__m256d v) {
    __m128d h = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_add_sd(h, _mm_unpackhi_pd(h, h)));
}
static inline double hmin4(__m256d v) {
    __m128d h = _mm_min_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_min_sd(h, _mm_unpackhi_pd(h, h)));
}
static inline double hmax4(__m256d v) {
    __m128d h = _mm_max_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_max_sd(h, _mm_unpackhi_pd(h, h)));
}

void sg_sparse_sums_f32__avx2_u8(size_t n, const float *d, double scale, double t,
                                 sg_sparse_sums *out) {
    const __m256d vs = _mm256_set1_pd(scale), vt = _mm256_set1_pd(t);
    const __m256d pinf = _mm256_set1_pd(INFINITY), ninf = _mm256_set1_pd(-INFINITY);
    __m256d s1a = _mm256_setzero_pd(), s1b = s1a, s2a = s1a, s2b = s1a;
    __m256d mna = pinf, mnb = pinf, mxa = ninf, mxb = ninf;
    size_t k = 0, i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256d u = _mm256_mul_pd(_mm256_cvtps_pd(_mm_loadu_ps(d + i)), vs);
        __m256d v = _mm256_mul_pd(_mm256_cvtps_pd(_mm_loadu_ps(d + i + 4)), vs);
        __m256d mu = _mm256_cmp_pd(u, vt, _CMP_GT_OQ), mv = _mm256_cmp_pd(v, vt, _CMP_GT_OQ);
        k += (size_t)__builtin_popcount((unsigned)_mm256_movemask_pd(mu)) +
             (size_t)__builtin_popcount((unsigned)_mm256_movemask_pd(mv));
        __m256d ui = _mm256_and_pd(u, mu), vi = _mm256_and_pd(v, mv);
        s1a = _mm256_add_pd(s1a, ui), s1b = _mm256_add_pd(s1b, vi);
        s2a = _mm256_fmadd_pd(ui, ui, s2a), s2b = _mm256_fmadd_pd(vi, vi, s2b);
        mna = _mm256_min_pd(mna, _mm256_blendv_pd(pinf, u, mu));
        mnb = _mm256_min_pd(mnb, _mm256_blendv_pd(pinf, v, mv));
        mxa = _mm256_max_pd(mxa, _mm256_blendv_pd(u, ninf, mu));
        mxb = _mm256_max_pd(mxb, _mm256_blendv_pd(v, ninf, mv));
    }
    double s1 = hsum4(_mm256_add_pd(s1a, s1b)), s2 = hsum4(_mm256_add_pd(s2a, s2b));
    double mn = hmin4(_mm256_min_pd(mna, mnb)), mx = hmax4(_mm256_max_pd(mxa, mxb));
    for (; i < n; i++) {
        const double u = scale * (double)d[i];
        if (u > t) {
            k++, s1 += u, s2 += u * u;
            if (u < mn) mn = u;
        } else if (u > mx) {
            mx = u;
        }
    }
    out->k = k, out->s1 = s1, out->s2 = s2, out->min_in = mn, out->max_out = mx;
}

/*
 * route_avx2.c - AVX2 top-k selection (contract in route_kernels.h,
 * reference sg_route_topk__ref); the method of route_avx512.c on 8 lanes:
 * two accumulators give the maxima of 16 disjoint columns, thr = their
 * k-th largest bounds the k-th largest key from below, the keys >= thr are
 * gathered in index order (movemask bits), and at most 32 candidates are
 * ranked without branches (rank_i = #{j : c_j > c_i} + #{j < i : c_j ==
 * c_i}). Rows with k > 16, n > SG_ROUTE_STACK_E or more than 32
 * candidates use the reference or its exact insertion.
 */
#include <immintrin.h>
#include <math.h>

#include "route/route_internal.h"
#include "route/route_kernels.h"

static void place32(const float *c, const int32_t *d, size_t nc, size_t k, int32_t *ids,
                    float *top) {
    float cv[32];
    const size_t nv = (nc + 7) / 8;
    for (size_t q = 0; q < nc; q++) cv[q] = c[q];
    for (size_t q = nc; q < nv * 8; q++) cv[q] = -INFINITY;
    __m256 v[4];
    __m256i r[4], pos[4];
    for (size_t t = 0; t < nv; t++) {
        v[t] = _mm256_loadu_ps(cv + 8 * t);
        r[t] = _mm256_setzero_si256();
        pos[t] = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        pos[t] = _mm256_add_epi32(pos[t], _mm256_set1_epi32((int32_t)(8 * t)));
    }
    for (size_t j = 0; j < nc; j++) {
        const __m256 b = _mm256_set1_ps(cv[j]);
        const __m256i jj = _mm256_set1_epi32((int32_t)j);
        for (size_t t = 0; t < nv; t++) {
            const __m256 after = _mm256_castsi256_ps(_mm256_cmpgt_epi32(pos[t], jj));
            const __m256 g = _mm256_or_ps(_mm256_cmp_ps(b, v[t], _CMP_GT_OQ),
                                          _mm256_and_ps(_mm256_cmp_ps(b, v[t], _CMP_EQ_OQ), after));
            r[t] = _mm256_sub_epi32(r[t], _mm256_castps_si256(g)); /* g lanes are -1 */
        }
    }
    int32_t rank[32];
    for (size_t t = 0; t < nv; t++) _mm256_storeu_si256((__m256i *)(rank + 8 * t), r[t]);
    for (size_t q = 0; q < nc; q++) {
        const int32_t rq = rank[q];
        if ((size_t)rq < k) ids[rq] = d[q], top[rq] = c[q];
    }
}

/* The k-th largest (1 <= k <= 16) of 16 values. */
static float kth16(const float *m, size_t k) {
    const __m256 a = _mm256_loadu_ps(m), b = _mm256_loadu_ps(m + 8);
    __m256i ga = _mm256_setzero_si256(), gb = ga;
    for (size_t j = 0; j < 16; j++) {
        const __m256 x = _mm256_set1_ps(m[j]);
        ga = _mm256_sub_epi32(ga, _mm256_castps_si256(_mm256_cmp_ps(x, a, _CMP_GT_OQ)));
        gb = _mm256_sub_epi32(gb, _mm256_castps_si256(_mm256_cmp_ps(x, b, _CMP_GT_OQ)));
    }
    int32_t g[16];
    _mm256_storeu_si256((__m256i *)g, ga);
    _mm256_storeu_si256((__m256i *)(g + 8), gb);
    float t = INFINITY;
    for (size_t q = 0; q < 16; q++) /* fewer than k strictly larger: >= the k-th */
        if ((size_t)g[q] < k && m[q] < t) t = m[q];
    return t;
}

void sg_route_topk__avx2(const float *key, size_t n, size_t k, int32_t *ids, float *top) {
    static const int32_t iota32[32] = {0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10,
                                       11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21,
                                       22, 23, 24, 25, 26, 27, 28, 29, 30, 31};
    if (k == 0) return;
    if (n <= 16 && k <= 2 && sg_route_select_top2(key, n, k, ids, top)) return;
    if (n <= 16 || (n <= 32 && k > 16)) {
        place32(key, iota32, n, k, ids, top);
        return;
    }
    if (k > 16 || n > SG_ROUTE_STACK_E) {
        sg_route_topk__ref(key, n, k, ids, top);
        return;
    }
    float m[16];
    size_t i = 16;
    for (size_t q = 0; q < 16; q++) m[q] = key[q];
    if (n >= 32) {
        __m256 m0 = _mm256_loadu_ps(key), m1 = _mm256_loadu_ps(key + 8);
        __m256 m2 = _mm256_loadu_ps(key + 16), m3 = _mm256_loadu_ps(key + 24);
        for (i = 32; i + 32 <= n; i += 32) {
            m0 = _mm256_max_ps(m0, _mm256_loadu_ps(key + i));
            m1 = _mm256_max_ps(m1, _mm256_loadu_ps(key + i + 8));
            m2 = _mm256_max_ps(m2, _mm256_loadu_ps(key + i + 16));
            m3 = _mm256_max_ps(m3, _mm256_loadu_ps(key + i + 24));
        }
        _mm256_storeu_ps(m, _mm256_max_ps(m0, m2));
        _mm256_storeu_ps(m + 8, _mm256_max_ps(m1, m3));
    }
    for (size_t q = 0; i < n; i++, q = (q + 1) & 15) m[q] = key[i] > m[q] ? key[i] : m[q];
    const float t = kth16(m, k);
    const __m256 thr = _mm256_set1_ps(t);
    float c[SG_ROUTE_STACK_E];
    int32_t d[SG_ROUTE_STACK_E];
    size_t nc = 0;
    for (i = 0; i + 8 <= n; i += 8) {
        unsigned q = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(key + i), thr, _CMP_GE_OQ));
        while (q) {
            const unsigned b = (unsigned)__builtin_ctz(q);
            c[nc] = key[i + b], d[nc] = (int32_t)(i + b), nc++;
            q &= q - 1;
        }
    }
    for (; i < n; i++)
        if (key[i] >= t) c[nc] = key[i], d[nc] = (int32_t)i, nc++;
    if (nc <= 32) {
        place32(c, d, nc, k, ids, top);
        return;
    }
    size_t f = 0;
    for (size_t q = 0; q < nc; q++) sg_route_insert(c[q], (size_t)d[q], k, ids, top, &f, 0);
}

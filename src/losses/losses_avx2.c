/*
 * losses_avx2.c - the losses family's AVX2 kernel: the top-k block scan
 * (contract and method in losses_internal.h; here 32 subsets, four
 * accumulators of 8 lanes). Compiled with the AVX2 flags, x86-64 only.
 */
#include <immintrin.h>

#include "losses/losses_internal.h"

static inline void hits(unsigned m, const float *x, int32_t base, sg_topk_buf *b, float *lo) {
    while (m) {
        unsigned i = (unsigned)__builtin_ctz(m);
        m &= m - 1;
        const float v = x[i];
        if (v >= *lo && (b->count < b->k || v > b->thr)) {
            sg_topk_insert(b, v, base + (int32_t)i);
            if (b->count == b->k && b->thr > *lo) *lo = (float)b->thr;
        }
    }
}

static inline unsigned ge(const float *x, __m256 t) {
    return (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x), t, _CMP_GE_OQ));
}

/* The k-th largest (with multiplicity) of 32 subset maxima, or -inf. */
static float kth_of_32(const float *m, size_t k) {
    float top[32];
    size_t cnt = 0;
    for (size_t s = 0; s < 32; s++) { /* sorted insertion, descending */
        if (!(m[s] > -INFINITY)) continue;
        size_t p = cnt++;
        while (p > 0 && top[p - 1] < m[s]) top[p] = top[p - 1], p--;
        top[p] = m[s];
    }
    return cnt >= k ? top[k - 1] : -INFINITY;
}

float sg_topk_scan_f32__avx2(size_t n, const float *x, int32_t base, sg_topk_buf *b) {
    const __m256 ninf = _mm256_set1_ps(-INFINITY);
    __m256 a0 = ninf, a1 = ninf, a2 = ninf, a3 = ninf;
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        a0 = _mm256_max_ps(_mm256_loadu_ps(x + i), a0);
        a1 = _mm256_max_ps(_mm256_loadu_ps(x + i + 8), a1);
        a2 = _mm256_max_ps(_mm256_loadu_ps(x + i + 16), a2);
        a3 = _mm256_max_ps(_mm256_loadu_ps(x + i + 24), a3);
    }
    float m[32];
    _mm256_storeu_ps(m, a0), _mm256_storeu_ps(m + 8, a1);
    _mm256_storeu_ps(m + 16, a2), _mm256_storeu_ps(m + 24, a3);
    for (size_t q = 0; i + q < n; q++) /* the tail: subset q */
        if (x[i + q] > m[q]) m[q] = x[i + q];
    float bmax = -INFINITY;
    for (size_t s = 0; s < 32; s++) bmax = m[s] > bmax ? m[s] : bmax;
    float lo = b->k <= 32 ? kth_of_32(m, b->k) : -INFINITY;
    if (b->count == b->k && b->thr > lo) lo = (float)b->thr;
    __m256 t = _mm256_set1_ps(lo);
    for (i = 0; i + 32 <= n; i += 32) {
        unsigned m0 = ge(x + i, t), m1 = ge(x + i + 8, t), m2 = ge(x + i + 16, t), m3 = ge(x + i + 24, t);
        if (!(m0 | m1 | m2 | m3)) continue;
        hits(m0, x + i, base + (int32_t)i, b, &lo);
        hits(m1, x + i + 8, base + (int32_t)i + 8, b, &lo);
        hits(m2, x + i + 16, base + (int32_t)i + 16, b, &lo);
        hits(m3, x + i + 24, base + (int32_t)i + 24, b, &lo);
        t = _mm256_set1_ps(lo);
    }
    for (; i < n; i++) {
        const float v = x[i];
        if (v >= lo && (b->count < b->k || v > b->thr)) {
            sg_topk_insert(b, v, base + (int32_t)i);
            if (b->count == b->k && b->thr > lo) lo = (float)b->thr;
        }
    }
    return bmax;
}

/*
 * losses_avx2.c - the losses family's AVX2 kernel: the top-k threshold
 * scan (losses_internal.h; the AVX-512 file explains the blocking).
 * Compiled with the AVX2 flags, for x86-64 only.
 */
#include <immintrin.h>

#include "losses/losses_internal.h"

static inline void hits(unsigned m, const float *x, int32_t base, sg_topk_buf *b) {
    while (m) {
        unsigned i = (unsigned)__builtin_ctz(m);
        m &= m - 1;
        if (x[i] > b->thr) sg_topk_insert(b, x[i], base + (int32_t)i);
    }
}

static inline unsigned gt(const float *x, __m256 t) {
    return (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x), t, _CMP_GT_OQ));
}

void sg_topk_scan_f32__avx2(size_t n, const float *x, int32_t base, sg_topk_buf *b) {
    size_t i = 0;
    __m256 t = _mm256_set1_ps((float)b->thr);
    for (; i + 32 <= n; i += 32) {
        unsigned m0 = gt(x + i, t), m1 = gt(x + i + 8, t), m2 = gt(x + i + 16, t),
                 m3 = gt(x + i + 24, t);
        if (!(m0 | m1 | m2 | m3)) continue;
        hits(m0, x + i, base + (int32_t)i, b);
        hits(m1, x + i + 8, base + (int32_t)i + 8, b);
        hits(m2, x + i + 16, base + (int32_t)i + 16, b);
        hits(m3, x + i + 24, base + (int32_t)i + 24, b);
        t = _mm256_set1_ps((float)b->thr);
    }
    for (; i < n; i++)
        if (x[i] > b->thr) sg_topk_insert(b, x[i], base + (int32_t)i);
}

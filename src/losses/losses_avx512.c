/*
 * losses_avx512.c - the losses family's AVX-512 kernel: the top-k
 * threshold scan (losses_internal.h). Compiled with the AVX-512 flags, for
 * x86-64 only. The other passes of the family are the softmax core's
 * kernels.
 */
#include <immintrin.h>

#include "losses/losses_internal.h"

/*
 * 64 elements per step: four compares against the k-th value OR-ed into
 * one mask test, so a step whose elements all fall below it (the common
 * case once the buffer holds large values: about k log(n/k) insertions in
 * a random row) costs four loads and four compares. A hit is inserted in
 * index order and the rest of its vector re-tested against the new k-th
 * value.
 */
static inline void hits(__mmask16 m, const float *x, int32_t base, sg_topk_buf *b) {
    while (m) {
        unsigned i = (unsigned)__builtin_ctz(m);
        m &= (__mmask16)(m - 1);
        if (x[i] > b->thr) sg_topk_insert(b, x[i], base + (int32_t)i);
    }
}

void sg_topk_scan_f32__avx512(size_t n, const float *x, int32_t base, sg_topk_buf *b) {
    size_t i = 0;
    __m512 t = _mm512_set1_ps((float)b->thr);
    for (; i + 64 <= n; i += 64) {
        __mmask16 m0 = _mm512_cmp_ps_mask(_mm512_loadu_ps(x + i), t, _CMP_GT_OQ);
        __mmask16 m1 = _mm512_cmp_ps_mask(_mm512_loadu_ps(x + i + 16), t, _CMP_GT_OQ);
        __mmask16 m2 = _mm512_cmp_ps_mask(_mm512_loadu_ps(x + i + 32), t, _CMP_GT_OQ);
        __mmask16 m3 = _mm512_cmp_ps_mask(_mm512_loadu_ps(x + i + 48), t, _CMP_GT_OQ);
        if (!(m0 | m1 | m2 | m3)) continue;
        hits(m0, x + i, base + (int32_t)i, b);
        hits(m1, x + i + 16, base + (int32_t)i + 16, b);
        hits(m2, x + i + 32, base + (int32_t)i + 32, b);
        hits(m3, x + i + 48, base + (int32_t)i + 48, b);
        t = _mm512_set1_ps((float)b->thr);
    }
    for (; i + 16 <= n; i += 16) {
        hits(_mm512_cmp_ps_mask(_mm512_loadu_ps(x + i), t, _CMP_GT_OQ), x + i, base + (int32_t)i, b);
        t = _mm512_set1_ps((float)b->thr);
    }
    if (i < n) {
        __mmask16 tail = (__mmask16)((1u << (n - i)) - 1);
        __m512 v = _mm512_maskz_loadu_ps(tail, x + i);
        hits(_mm512_mask_cmp_ps_mask(tail, v, t, _CMP_GT_OQ), x + i, base + (int32_t)i, b);
    }
}

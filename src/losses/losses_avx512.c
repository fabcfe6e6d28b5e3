/*
 * losses_avx512.c - the losses family's AVX-512 kernel: the top-k block
 * scan (contract and method in losses_internal.h). Compiled with the
 * AVX-512 flags, for x86-64 only. The other passes of the family are the
 * softmax core's kernels.
 */
#include <immintrin.h>

#include "losses/losses_internal.h"

/* Inserts the candidates of one vector (mask m) in index order; each is
 * re-tested against the current bound, which rises as the buffer fills. */
static inline void hits(__mmask16 m, const float *x, int32_t base, sg_topk_buf *b, float *lo) {
    while (m) {
        unsigned i = (unsigned)__builtin_ctz(m);
        m &= (__mmask16)(m - 1);
        const float v = x[i];
        if (v >= *lo && (b->count < b->k || v > b->thr)) {
            sg_topk_insert(b, v, base + (int32_t)i);
            if (b->count == b->k && b->thr > *lo) *lo = (float)b->thr;
        }
    }
}

/* The k-th largest (with multiplicity) of the 64 lanes of a0..a3, or -inf
 * if they hold fewer than k values above -inf: at most k rounds of
 * max-reduce and remove-equal. */
static float kth_of_64(__m512 a0, __m512 a1, __m512 a2, __m512 a3, size_t k) {
    const __m512 ninf = _mm512_set1_ps(-INFINITY);
    size_t cnt = 0;
    for (;;) {
        float mv = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_max_ps(a0, a1), _mm512_max_ps(a2, a3)));
        if (!(mv > -INFINITY)) return -INFINITY;
        __m512 v = _mm512_set1_ps(mv);
        __mmask16 e0 = _mm512_cmp_ps_mask(a0, v, _CMP_EQ_OQ), e1 = _mm512_cmp_ps_mask(a1, v, _CMP_EQ_OQ);
        __mmask16 e2 = _mm512_cmp_ps_mask(a2, v, _CMP_EQ_OQ), e3 = _mm512_cmp_ps_mask(a3, v, _CMP_EQ_OQ);
        cnt += (size_t)__builtin_popcount((unsigned)e0 | ((unsigned)e1 << 16)) +
               (size_t)__builtin_popcount((unsigned)e2 | ((unsigned)e3 << 16));
        if (cnt >= k) return mv;
        a0 = _mm512_mask_mov_ps(a0, e0, ninf), a1 = _mm512_mask_mov_ps(a1, e1, ninf);
        a2 = _mm512_mask_mov_ps(a2, e2, ninf), a3 = _mm512_mask_mov_ps(a3, e3, ninf);
    }
}

static inline __mmask16 tail_mask(size_t left) {
    return left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
}

float sg_topk_scan_f32__avx512(size_t n, const float *x, int32_t base, sg_topk_buf *b) {
    const __m512 ninf = _mm512_set1_ps(-INFINITY);
    /* 1. maxima of the 64 subsets {i : i mod 64 = s} */
    __m512 a0 = ninf, a1 = ninf, a2 = ninf, a3 = ninf;
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        a0 = _mm512_max_ps(_mm512_loadu_ps(x + i), a0);
        a1 = _mm512_max_ps(_mm512_loadu_ps(x + i + 16), a1);
        a2 = _mm512_max_ps(_mm512_loadu_ps(x + i + 32), a2);
        a3 = _mm512_max_ps(_mm512_loadu_ps(x + i + 48), a3);
    }
    if (i < n) {
        size_t left = n - i;
        a0 = _mm512_max_ps(_mm512_mask_loadu_ps(ninf, tail_mask(left), x + i), a0);
        if (left > 16) a1 = _mm512_max_ps(_mm512_mask_loadu_ps(ninf, tail_mask(left - 16), x + i + 16), a1);
        if (left > 32) a2 = _mm512_max_ps(_mm512_mask_loadu_ps(ninf, tail_mask(left - 32), x + i + 32), a2);
        if (left > 48) a3 = _mm512_max_ps(_mm512_mask_loadu_ps(ninf, tail_mask(left - 48), x + i + 48), a3);
    }
    const float bmax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_max_ps(a0, a1), _mm512_max_ps(a2, a3)));
    /* 2. the candidates' bound */
    float lo = b->k <= 64 ? kth_of_64(a0, a1, a2, a3, b->k) : -INFINITY;
    if (b->count == b->k && b->thr > lo) lo = (float)b->thr;
    /* 3. candidates >= lo, in index order */
    __m512 t = _mm512_set1_ps(lo);
    for (i = 0; i + 64 <= n; i += 64) {
        __mmask16 m0 = _mm512_cmp_ps_mask(_mm512_loadu_ps(x + i), t, _CMP_GE_OQ);
        __mmask16 m1 = _mm512_cmp_ps_mask(_mm512_loadu_ps(x + i + 16), t, _CMP_GE_OQ);
        __mmask16 m2 = _mm512_cmp_ps_mask(_mm512_loadu_ps(x + i + 32), t, _CMP_GE_OQ);
        __mmask16 m3 = _mm512_cmp_ps_mask(_mm512_loadu_ps(x + i + 48), t, _CMP_GE_OQ);
        if (!(m0 | m1 | m2 | m3)) continue;
        hits(m0, x + i, base + (int32_t)i, b, &lo);
        hits(m1, x + i + 16, base + (int32_t)i + 16, b, &lo);
        hits(m2, x + i + 32, base + (int32_t)i + 32, b, &lo);
        hits(m3, x + i + 48, base + (int32_t)i + 48, b, &lo);
        t = _mm512_set1_ps(lo);
    }
    for (; i < n; i += 16) {
        __mmask16 tm = tail_mask(n - i);
        __m512 v = _mm512_maskz_loadu_ps(tm, x + i);
        hits(_mm512_mask_cmp_ps_mask(tm, v, t, _CMP_GE_OQ), x + i, base + (int32_t)i, b, &lo);
        t = _mm512_set1_ps(lo);
    }
    return bmax;
}

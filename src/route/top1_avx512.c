/*
 * top1_avx512.c - route.top1 in AVX-512 (contract in route_kernels.h,
 * reference sg_route_top1__ref): Switch's gate, the softmax-top-1 without
 * renormalizing, row by row in one function: a maximum pass with the NaN
 * test (an unordered compare per vector), the exponential sum exactly as
 * the softmax core's AVX-512 expsum forms it (same exponential, the same
 * four accumulators per 64 floats, blocks of SG_SUM_BLOCK folded into
 * double in the same order), and the first lane equal to the maximum. So
 * ids and weights are the reference's bit for bit when the core's expsum
 * is sg_expsum_f32__avx512_u64; under any other expsum the reference
 * runs. Rows with a NaN or a +-inf maximum are left to the caller.
 */
#include <immintrin.h>
#include <math.h>

#include "core/dispatch.h"
#include "route/route_kernels.h"
#include "softmax/softmax_kernels.h"
#include "softmax/exp_avx512.h"

double sg_expsum_f32__avx512_u64(size_t n, const float *x, float max, float c);

/* The softmax core's exp for d <= 0 (exp_avx512.h). */
static inline __m512 exp_ps(__m512 d) { return sg_exp_nonpos_avx512(d); }

static inline __mmask16 lanes(size_t m) { return m >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << m) - 1u); }

/* (x - max) c, the product skipped when c == 1 as the core does (`unit`
 * a constant after inlining). */
#define STEP(v, acc, wmask)                                                                              \
    do {                                                                                                 \
        const __m512 d_ = unit ? _mm512_sub_ps((v), vmax) : _mm512_mul_ps(_mm512_sub_ps((v), vmax), vc); \
        (acc) = _mm512_add_ps((acc), _mm512_maskz_mov_ps((wmask), exp_ps(d_)));                          \
    } while (0)

static inline __attribute__((always_inline)) double expsum(size_t n, const float *x, __m512 vmax, __m512 vc,
                                                           int unit) {
    __m512d dlo = _mm512_setzero_pd(), dhi = _mm512_setzero_pd();
    size_t i = 0;
    while (i < n) {
        const size_t end = n - i > SG_SUM_BLOCK ? i + SG_SUM_BLOCK : n;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (; i + 64 <= end; i += 64) {
            STEP(_mm512_loadu_ps(x + i), a0, 0xFFFF);
            STEP(_mm512_loadu_ps(x + i + 16), a1, 0xFFFF);
            STEP(_mm512_loadu_ps(x + i + 32), a2, 0xFFFF);
            STEP(_mm512_loadu_ps(x + i + 48), a3, 0xFFFF);
        }
        for (; i < end; i += 16) {
            const __mmask16 m = lanes(end - i);
            STEP(_mm512_maskz_loadu_ps(m, x + i), a0, m);
        }
        const __m512 acc = _mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3));
        dlo = _mm512_add_pd(dlo, _mm512_cvtps_pd(_mm512_castps512_ps256(acc)));
        dhi = _mm512_add_pd(dhi, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc), 1))));
    }
    return _mm512_reduce_add_pd(_mm512_add_pd(dlo, dhi));
}

size_t sg_route_top1__avx512(size_t n, size_t e, const float *x, size_t ldx, float c, float a, int32_t *ids,
                             size_t ldi, float *w, size_t ldw) {
    if (sg_kernels_get()->expsum != sg_expsum_f32__avx512_u64)
        return sg_route_top1__ref(n, e, x, ldx, c, a, ids, ldi, w, ldw);
    const __m512 ninf = _mm512_set1_ps(-INFINITY), vc = _mm512_set1_ps(c);
    const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    for (size_t r = 0; r < n; r++) {
        const float *z = x + r * ldx;
        /* per lane the maximum and the first index reaching it (a strict
         * compare keeps the earlier index; -0 == +0) */
        __m512 m0 = ninf, m1 = ninf;
        __m512i i0 = _mm512_setzero_si512(), i1 = i0;
        __mmask16 bad = 0;
        size_t i = 0;
        for (; i + 32 <= e; i += 32) {
            const __m512 v0 = _mm512_loadu_ps(z + i), v1 = _mm512_loadu_ps(z + i + 16);
            bad |= _mm512_cmp_ps_mask(v0, v1, _CMP_UNORD_Q);
            i0 = _mm512_mask_add_epi32(i0, _mm512_cmp_ps_mask(v0, m0, _CMP_GT_OQ), iota, _mm512_set1_epi32((int)i));
            i1 = _mm512_mask_add_epi32(i1, _mm512_cmp_ps_mask(v1, m1, _CMP_GT_OQ), iota,
                                       _mm512_set1_epi32((int)i + 16));
            m0 = _mm512_max_ps(m0, v0), m1 = _mm512_max_ps(m1, v1);
        }
        for (; i < e; i += 16) {
            const __mmask16 l = lanes(e - i);
            const __m512 v = _mm512_mask_loadu_ps(ninf, l, z + i);
            bad |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
            i0 = _mm512_mask_add_epi32(i0, _mm512_cmp_ps_mask(v, m0, _CMP_GT_OQ), iota, _mm512_set1_epi32((int)i));
            m0 = _mm512_max_ps(m0, v);
        }
        /* merge the two halves: m1's lane wins only where strictly larger,
         * or equal with a lower index */
        const __mmask16 take1 = _mm512_cmp_ps_mask(m1, m0, _CMP_GT_OQ) |
                                (_mm512_cmp_ps_mask(m1, m0, _CMP_EQ_OQ) & _mm512_cmplt_epi32_mask(i1, i0));
        m0 = _mm512_mask_mov_ps(m0, take1, m1), i0 = _mm512_mask_mov_epi32(i0, take1, i1);
        const float mx = _mm512_reduce_max_ps(m0);
        if (bad || !(fabsf(mx) < INFINITY)) return r;
        const __m512 vmax = _mm512_set1_ps(mx);
        const double sum = c == 1.0f ? expsum(e, z, vmax, vc, 1) : expsum(e, z, vmax, vc, 0);
        ids[r * ldi] = _mm512_mask_reduce_min_epi32(_mm512_cmp_ps_mask(m0, vmax, _CMP_EQ_OQ), i0);
        w[r * ldw] = (float)((double)a * (1.0 / sum));
    }
    return n;
}

/*
 * alternatives_avx512.c - AVX-512 (F, BW, DQ, VL) kernels of the softmax
 * alternatives: the vector layer for alternatives_simd.h, which holds the
 * kernel bodies. Compiled with AVX-512 flags for this file only; called
 * only after dispatch saw the features.
 */
#include <immintrin.h>
#include <stdint.h>

typedef __m512 VF;
typedef __mmask16 VM;
#define VW 16
#define KNAME(name) name##__avx512

static inline VF vset1(float a) { return _mm512_set1_ps(a); }
static inline VF vload(const float *p) { return _mm512_loadu_ps(p); }
static inline void vstore(float *p, VF v) { _mm512_storeu_ps(p, v); }
static inline VF vadd(VF a, VF b) { return _mm512_add_ps(a, b); }
static inline VF vsub(VF a, VF b) { return _mm512_sub_ps(a, b); }
static inline VF vmul(VF a, VF b) { return _mm512_mul_ps(a, b); }
static inline VF vdiv(VF a, VF b) { return _mm512_div_ps(a, b); }
static inline VF vfma(VF a, VF b, VF c) { return _mm512_fmadd_ps(a, b, c); }
static inline VF vmax(VF a, VF b) { return _mm512_max_ps(a, b); }
static inline VF vmin(VF a, VF b) { return _mm512_min_ps(a, b); }
static inline VF vabs(VF a) { return _mm512_abs_ps(a); }
static inline VF vround(VF a) {
    return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
/* scalef rounds once, so results in the denormal range are right. */
static inline VF vldexp(VF p, VF k) { return _mm512_scalef_ps(p, k); }
static inline VM vgt(VF a, VF b) { return _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ); }
static inline VM vge(VF a, VF b) { return _mm512_cmp_ps_mask(a, b, _CMP_GE_OQ); }
static inline VM vlt(VF a, VF b) { return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ); }
static inline VF vsel(VM m, VF a, VF b) { return _mm512_mask_blend_ps(m, b, a); }
/* m in [1, 2) and e with x = m 2^e (getexp/getmant handle denormals),
 * then m folded into [sqrt(1/2), sqrt(2)). */
static inline VF vlog_parts(VF x, VF *e) {
    VF m = _mm512_getmant_ps(x, _MM_MANT_NORM_1_2, _MM_MANT_SIGN_zero);
    VF k = _mm512_getexp_ps(x);
    __mmask16 big = _mm512_cmp_ps_mask(m, _mm512_set1_ps(0x1.6A09E6p+0f), _CMP_GT_OQ);
    *e = _mm512_mask_add_ps(k, big, k, _mm512_set1_ps(1.0f));
    return _mm512_mask_mul_ps(m, big, m, _mm512_set1_ps(0.5f));
}
static inline VM vfirst(size_t rem) { return (VM)((1u << rem) - 1u); }
static inline VF vload_n(const float *p, size_t rem) { return _mm512_maskz_loadu_ps(vfirst(rem), p); }
static inline void vstore_n(float *p, VF v, size_t rem) { _mm512_mask_storeu_ps(p, vfirst(rem), v); }
static inline double vhsum_d(VF v) {
    __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
    __m512d hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    return _mm512_reduce_add_pd(_mm512_add_pd(lo, hi));
}

/*
 * Philox4x32-10 on 16 counters at once (blocks b0 .. b0 + 15 of a row),
 * bit-identical to sg_philox4x32_10: the 32 x 32 -> 64-bit products of a
 * round come from vpmuludq on the even and the odd lanes; then the four
 * output words of the 16 blocks are transposed so that u holds the 64
 * uniforms in column order.
 */
static inline void mul_hilo(__m512i a, __m512i m, __m512i *hi, __m512i *lo) {
    __m512i pe = _mm512_mul_epu32(a, m), po = _mm512_mul_epu32(_mm512_srli_epi64(a, 32), m);
    *hi = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(pe, 32), po);
    *lo = _mm512_mask_blend_epi32(0xAAAA, pe, _mm512_slli_epi64(po, 32)); /* not vpmulld: slow */
}

static void philox_uniforms(uint32_t b0, uint32_t row, uint64_t offset, const uint32_t key[2],
                            float *u) {
    __m512i c0 = _mm512_add_epi32(_mm512_set1_epi32((int)b0),
                                  _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
    __m512i c1 = _mm512_set1_epi32((int)row), c2 = _mm512_set1_epi32((int)(uint32_t)offset);
    __m512i c3 = _mm512_set1_epi32((int)(uint32_t)(offset >> 32));
    const __m512i m0 = _mm512_set1_epi32((int)0xD2511F53u), m1 = _mm512_set1_epi32((int)0xCD9E8D57u);
    uint32_t k0 = key[0], k1 = key[1];
    for (int round = 0; round < 10; round++) {
        if (round) k0 += 0x9E3779B9u, k1 += 0xBB67AE85u;
        __m512i hi0, lo0, hi1, lo1;
        mul_hilo(c0, m0, &hi0, &lo0);
        mul_hilo(c2, m1, &hi1, &lo1);
        c0 = _mm512_xor_si512(_mm512_xor_si512(hi1, c1), _mm512_set1_epi32((int)k0));
        c2 = _mm512_xor_si512(_mm512_xor_si512(hi0, c3), _mm512_set1_epi32((int)k1));
        c1 = lo1;
        c3 = lo0;
    }
    /* 4 x 16 transpose: e_k's 128-bit segment s holds block 4s + k */
    __m512i a = _mm512_unpacklo_epi32(c0, c1), b = _mm512_unpackhi_epi32(c0, c1);
    __m512i c = _mm512_unpacklo_epi32(c2, c3), d = _mm512_unpackhi_epi32(c2, c3);
    __m512i e0 = _mm512_unpacklo_epi64(a, c), e1 = _mm512_unpackhi_epi64(a, c);
    __m512i e2 = _mm512_unpacklo_epi64(b, d), e3 = _mm512_unpackhi_epi64(b, d);
    __m512i f0 = _mm512_shuffle_i32x4(e0, e1, 0x44), f1 = _mm512_shuffle_i32x4(e2, e3, 0x44);
    __m512i f2 = _mm512_shuffle_i32x4(e0, e1, 0xEE), f3 = _mm512_shuffle_i32x4(e2, e3, 0xEE);
    __m512i v[4] = {_mm512_shuffle_i32x4(f0, f1, 0x88), _mm512_shuffle_i32x4(f0, f1, 0xDD),
                    _mm512_shuffle_i32x4(f2, f3, 0x88), _mm512_shuffle_i32x4(f2, f3, 0xDD)};
    for (int q = 0; q < 4; q++) {
        __m512 f = _mm512_cvtepi32_ps(_mm512_srli_epi32(v[q], 9)); /* exact: < 2^23 */
        _mm512_storeu_ps(u + 16 * q,
                         _mm512_mul_ps(_mm512_add_ps(f, _mm512_set1_ps(0.5f)), _mm512_set1_ps(0x1p-23f)));
    }
}

#include "normalizers/alternatives_simd.h"

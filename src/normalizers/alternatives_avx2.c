/*
 * alternatives_avx2.c - AVX2 + FMA kernels of the softmax alternatives:
 * the vector layer for alternatives_simd.h, which holds the kernel bodies.
 * Compiled with -mavx2 -mfma for this file only; called only after
 * dispatch saw the features.
 */
#include <immintrin.h>
#include <stdint.h>

typedef __m256 VF;
typedef __m256 VM; /* all-ones / all-zeros lanes */
#define VW 8
#define KNAME(name) name##__avx2

static inline VF vset1(float a) { return _mm256_set1_ps(a); }
static inline VF vload(const float *p) { return _mm256_loadu_ps(p); }
static inline void vstore(float *p, VF v) { _mm256_storeu_ps(p, v); }
static inline VF vadd(VF a, VF b) { return _mm256_add_ps(a, b); }
static inline VF vsub(VF a, VF b) { return _mm256_sub_ps(a, b); }
static inline VF vmul(VF a, VF b) { return _mm256_mul_ps(a, b); }
static inline VF vdiv(VF a, VF b) { return _mm256_div_ps(a, b); }
static inline VF vfma(VF a, VF b, VF c) { return _mm256_fmadd_ps(a, b, c); }
static inline VF vmax(VF a, VF b) { return _mm256_max_ps(a, b); }
static inline VF vmin(VF a, VF b) { return _mm256_min_ps(a, b); }
static inline VF vabs(VF a) {
    return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a);
}
static inline VF vround(VF a) {
    return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
/* 2^k for integral k in [-300, 300] as two normal powers of two, each
 * exponent within [-150, 150] / 2: the first product stays normal, the
 * second rounds once (denormal results right, overflow to +inf). */
static inline VF pow2i(VF k) {
    __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127));
    return _mm256_castsi256_ps(_mm256_slli_epi32(e, 23));
}
static inline VF vldexp(VF p, VF k) {
    VF k1 = _mm256_floor_ps(_mm256_mul_ps(k, _mm256_set1_ps(0.5f)));
    return _mm256_mul_ps(_mm256_mul_ps(p, pow2i(k1)), pow2i(_mm256_sub_ps(k, k1)));
}
static inline VM vgt(VF a, VF b) { return _mm256_cmp_ps(a, b, _CMP_GT_OQ); }
static inline VM vge(VF a, VF b) { return _mm256_cmp_ps(a, b, _CMP_GE_OQ); }
static inline VM vlt(VF a, VF b) { return _mm256_cmp_ps(a, b, _CMP_LT_OQ); }
static inline VF vsel(VM m, VF a, VF b) { return _mm256_blendv_ps(b, a, m); }
/* m in [sqrt(1/2), sqrt(2)) and e with x = m 2^e for finite x > 0;
 * denormals are scaled by 2^23 first. Other x give garbage that v_log
 * replaces. */
static inline VF vlog_parts(VF x, VF *e) {
    VF den = _mm256_cmp_ps(x, _mm256_set1_ps(0x1p-126f), _CMP_LT_OQ);
    VF xs = _mm256_blendv_ps(x, _mm256_mul_ps(x, _mm256_set1_ps(0x1p23f)), den);
    __m256i bits = _mm256_castps_si256(xs);
    __m256i ex = _mm256_sub_epi32(_mm256_srli_epi32(bits, 23), _mm256_set1_epi32(127));
    VF m = _mm256_castsi256_ps(_mm256_or_si256(_mm256_and_si256(bits, _mm256_set1_epi32(0x007FFFFF)),
                                               _mm256_set1_epi32(0x3F800000)));
    VF k = _mm256_sub_ps(_mm256_cvtepi32_ps(ex), _mm256_and_ps(den, _mm256_set1_ps(23.0f)));
    VF big = _mm256_cmp_ps(m, _mm256_set1_ps(0x1.6A09E6p+0f), _CMP_GT_OQ);
    *e = _mm256_add_ps(k, _mm256_and_ps(big, _mm256_set1_ps(1.0f)));
    return _mm256_blendv_ps(m, _mm256_mul_ps(m, _mm256_set1_ps(0.5f)), big);
}
static inline VM vfirst(size_t rem) {
    const VF lane = _mm256_setr_ps(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmp_ps(lane, _mm256_set1_ps((float)rem), _CMP_LT_OQ);
}
static inline VF vload_n(const float *p, size_t rem) {
    return _mm256_maskload_ps(p, _mm256_castps_si256(vfirst(rem)));
}
static inline void vstore_n(float *p, VF v, size_t rem) {
    _mm256_maskstore_ps(p, _mm256_castps_si256(vfirst(rem)), v);
}
static inline double vhsum_d(VF v) {
    __m256d a = _mm256_add_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(v)),
                              _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
    __m128d b = _mm_add_pd(_mm256_castpd256_pd128(a), _mm256_extractf128_pd(a, 1));
    return _mm_cvtsd_f64(_mm_add_sd(b, _mm_unpackhi_pd(b, b)));
}

/*
 * Philox4x32-10 on 8 counters at once (blocks b0 .. b0 + 7 of a row),
 * bit-identical to sg_philox4x32_10 (vpmuludq on the even and the odd
 * lanes for the 64-bit products); the outputs are written to u in column
 * order through a small scalar interleave.
 */
static inline void mul_hilo(__m256i a, __m256i m, __m256i *hi, __m256i *lo) {
    __m256i pe = _mm256_mul_epu32(a, m), po = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);
    *hi = _mm256_blend_epi32(_mm256_srli_epi64(pe, 32), po, 0xAA);
    *lo = _mm256_blend_epi32(pe, _mm256_slli_epi64(po, 32), 0xAA); /* not vpmulld: slow */
}

static void philox_uniforms(uint32_t b0, uint32_t row, uint64_t offset, const uint32_t key[2],
                            float *u) {
    __m256i c0 = _mm256_add_epi32(_mm256_set1_epi32((int)b0), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    __m256i c1 = _mm256_set1_epi32((int)row), c2 = _mm256_set1_epi32((int)(uint32_t)offset);
    __m256i c3 = _mm256_set1_epi32((int)(uint32_t)(offset >> 32));
    const __m256i m0 = _mm256_set1_epi32((int)0xD2511F53u), m1 = _mm256_set1_epi32((int)0xCD9E8D57u);
    uint32_t k0 = key[0], k1 = key[1];
    for (int round = 0; round < 10; round++) {
        if (round) k0 += 0x9E3779B9u, k1 += 0xBB67AE85u;
        __m256i hi0, lo0, hi1, lo1;
        mul_hilo(c0, m0, &hi0, &lo0);
        mul_hilo(c2, m1, &hi1, &lo1);
        c0 = _mm256_xor_si256(_mm256_xor_si256(hi1, c1), _mm256_set1_epi32((int)k0));
        c2 = _mm256_xor_si256(_mm256_xor_si256(hi0, c3), _mm256_set1_epi32((int)k1));
        c1 = lo1;
        c3 = lo0;
    }
    uint32_t w[4][8];
    _mm256_storeu_si256((__m256i *)w[0], c0);
    _mm256_storeu_si256((__m256i *)w[1], c1);
    _mm256_storeu_si256((__m256i *)w[2], c2);
    _mm256_storeu_si256((__m256i *)w[3], c3);
    for (int b = 0; b < 8; b++)
        for (int q = 0; q < 4; q++) u[4 * b + q] = ((float)(w[q][b] >> 9) + 0.5f) * 0x1p-23f;
}

#include "normalizers/alternatives_simd.h"

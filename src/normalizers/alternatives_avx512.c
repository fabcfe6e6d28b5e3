/*
 * alternatives_avx512.c - AVX-512 (F, BW, DQ, VL) kernels of the softmax
 * alternatives: the vector layer for alternatives_simd.h, which holds the
 * kernel bodies. Compiled with AVX-512 flags for this file only; called
 * only after dispatch saw the features.
 */
#include <immintrin.h>

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

#include "normalizers/alternatives_simd.h"

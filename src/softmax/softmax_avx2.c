/*
 * softmax_avx2.c - AVX2 + FMA kernels of the softmax family. Compiled with
 * -mavx2 -mfma for this file only; called only after dispatch saw the
 * features. Contracts are in softmax_kernels.h.
 *
 * Unrolled by 4 vectors (32 floats). AVX2 has no vscalefps, so 2^k is built
 * in the exponent bits: k + 127 shifted left by 23 (the "magic bias" trick
 * gives k and its bits from one FMA).
 */
#include <immintrin.h>
#include <math.h>

#include "softmax/softmax_kernels.h"

#define U 32 /* floats per unrolled iteration */

#define C5 0x1.0F9F9Cp-7f
#define C4 0x1.573A1Ap-5f
#define C3 0x1.555A80p-3f
#define C2 0x1.FFFDC6p-2f
#define C1 0x1.FFFFF6p-1f
#define LOG2E 0x1.715476p+0f
#define MINUS_LN2_HI -0x1.62E430p-1f
#define PLUS_LN2_LO 0x1.05C610p-29f
#define FLUSH_BELOW -87.33654475f
/* 1.5 * 2^23 + 127: adding it rounds to an integer k and leaves k + 127 in
 * the low mantissa bits. */
#define MAGIC_BIAS 0x1.8000FEp23f

static const int mask_table[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

/* Lanes [0, rem) set, rem in [0, 8]. */
static inline __m256i tail_mask(size_t rem) {
    return _mm256_loadu_si256((const __m256i *)(mask_table + 8 - rem));
}

static inline __m256 poly_exp_reduced(__m256 r) {
    __m256 p = _mm256_fmadd_ps(_mm256_set1_ps(C5), r, _mm256_set1_ps(C4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(C3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(C2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(C1));
    return _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
}

/* exp(d) for d <= ~0 with the flush rule; NaN propagates. */
static inline __m256 exp_ps(__m256 d) {
    __m256 kb = _mm256_fmadd_ps(d, _mm256_set1_ps(LOG2E), _mm256_set1_ps(MAGIC_BIAS));
    __m256 s = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_castps_si256(kb), 23));
    __m256 k = _mm256_sub_ps(kb, _mm256_set1_ps(MAGIC_BIAS));
    __m256 r = _mm256_fmadd_ps(k, _mm256_set1_ps(MINUS_LN2_HI), d);
    r = _mm256_fmadd_ps(k, _mm256_set1_ps(PLUS_LN2_LO), r);
    __m256 e = _mm256_mul_ps(poly_exp_reduced(r), s);
    __m256 tiny = _mm256_cmp_ps(d, _mm256_set1_ps(FLUSH_BELOW), _CMP_LT_OQ);
    return _mm256_andnot_ps(tiny, e);
}

/* exp(t) = p * 2^k with k = round(t log2 e), for |t| <= 1e7: a second
 * exact reduction step fixes a k that the float product t * log2e rounded
 * one off (see the AVX-512 file). */
static inline __m256 exp_split(__m256 t, __m256 *k) {
    const int round = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    __m256 k0 = _mm256_round_ps(_mm256_mul_ps(t, _mm256_set1_ps(LOG2E)), round);
    __m256 r = _mm256_fmadd_ps(k0, _mm256_set1_ps(MINUS_LN2_HI), t);
    r = _mm256_fmadd_ps(k0, _mm256_set1_ps(PLUS_LN2_LO), r);
    __m256 k1 = _mm256_round_ps(_mm256_mul_ps(r, _mm256_set1_ps(LOG2E)), round);
    r = _mm256_fmadd_ps(k1, _mm256_set1_ps(MINUS_LN2_HI), r);
    r = _mm256_fmadd_ps(k1, _mm256_set1_ps(PLUS_LN2_LO), r);
    *k = _mm256_add_ps(k0, k1);
    return poly_exp_reduced(r);
}

/* 2^d for integer-valued d <= 0; 0 below 2^-126 (no vscalefps on AVX2). */
static inline __m256 pow2_nonpos(__m256 d) {
    __m256 c = _mm256_max_ps(d, _mm256_set1_ps(-127.0f));
    __m256i b = _mm256_add_epi32(_mm256_cvtps_epi32(c), _mm256_set1_epi32(127));
    return _mm256_castsi256_ps(_mm256_slli_epi32(b, 23));
}

static inline __m256d pow2_nonpos_pd(__m256d d) {
    __m256d c = _mm256_max_pd(d, _mm256_set1_pd(-1023.0));
    __m128i k = _mm256_cvtpd_epi32(c);
    __m256i b = _mm256_add_epi64(_mm256_cvtepi32_epi64(k), _mm256_set1_epi64x(1023));
    return _mm256_castsi256_pd(_mm256_slli_epi64(b, 52));
}

static inline void fold(__m256d *lo, __m256d *hi, __m256 acc) {
    *lo = _mm256_add_pd(*lo, _mm256_cvtps_pd(_mm256_castps256_ps128(acc)));
    *hi = _mm256_add_pd(*hi, _mm256_cvtps_pd(_mm256_extractf128_ps(acc, 1)));
}

static inline double hsum_pd(__m256d lo, __m256d hi) {
    __m256d s = _mm256_add_pd(lo, hi);
    __m128d t = _mm_add_pd(_mm256_castpd256_pd128(s), _mm256_extractf128_pd(s, 1));
    return _mm_cvtsd_f64(_mm_add_sd(t, _mm_unpackhi_pd(t, t)));
}

static inline float hmax_ps(__m256 v) {
    __m128 t = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    t = _mm_max_ps(t, _mm_movehl_ps(t, t));
    t = _mm_max_ss(t, _mm_movehdup_ps(t));
    return _mm_cvtss_f32(t);
}

static inline float hmin_ps(__m256 v) {
    __m128 t = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    t = _mm_min_ps(t, _mm_movehl_ps(t, t));
    t = _mm_min_ss(t, _mm_movehdup_ps(t));
    return _mm_cvtss_f32(t);
}

static inline float hsum_ps(__m256 v) {
    __m128 t = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    t = _mm_add_ps(t, _mm_movehl_ps(t, t));
    t = _mm_add_ss(t, _mm_movehdup_ps(t));
    return _mm_cvtss_f32(t);
}

float sg_rmax_f32__avx2_u32(size_t n, const float *x) {
    const __m256 ninf = _mm256_set1_ps(-INFINITY);
    __m256 m0 = ninf, m1 = ninf, m2 = ninf, m3 = ninf;
    size_t i = 0;
    for (; i + U <= n; i += U) {
        m0 = _mm256_max_ps(m0, _mm256_loadu_ps(x + i));
        m1 = _mm256_max_ps(m1, _mm256_loadu_ps(x + i + 8));
        m2 = _mm256_max_ps(m2, _mm256_loadu_ps(x + i + 16));
        m3 = _mm256_max_ps(m3, _mm256_loadu_ps(x + i + 24));
    }
    for (; i + 8 <= n; i += 8) m0 = _mm256_max_ps(m0, _mm256_loadu_ps(x + i));
    if (i < n) {
        __m256i m = tail_mask(n - i);
        __m256 v = _mm256_blendv_ps(ninf, _mm256_maskload_ps(x + i, m), _mm256_castsi256_ps(m));
        m1 = _mm256_max_ps(m1, v);
    }
    return hmax_ps(_mm256_max_ps(_mm256_max_ps(m0, m1), _mm256_max_ps(m2, m3)));
}

/* (x - max) * c; where x - max overflows to -inf (|x|, |max| near FLT_MAX)
 * but the scaled difference does not, x*c - max*c instead. */
static inline __m256 scaled_diff(__m256 x, __m256 vmax, __m256 vc) {
    __m256 d = _mm256_sub_ps(x, vmax);
    __m256 ovf = _mm256_cmp_ps(d, _mm256_set1_ps(-INFINITY), _CMP_EQ_OQ);
    return _mm256_blendv_ps(_mm256_mul_ps(d, vc), _mm256_fmsub_ps(x, vc, _mm256_mul_ps(vmax, vc)), ovf);
}

/* store: 0 nothing, 1 the terms exp(d), 2 the shifted values d with the
 * overflow-safe difference (needed only when c < 1), 3 without. */
static inline __attribute__((always_inline)) double
expsum_body(size_t n, const float *x, float *y, float max, float c, int store) {
    const __m256 vmax = _mm256_set1_ps(max), vc = _mm256_set1_ps(c);
    __m256d dlo = _mm256_setzero_pd(), dhi = _mm256_setzero_pd();
    size_t i = 0;
    while (i < n) {
        size_t end = n - i > SG_SUM_BLOCK ? i + SG_SUM_BLOCK : n;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
#define EXPSUM_STEP(v, ptr, acc, m)                                                     \
    do {                                                                                \
        __m256 d_ = store == 2 ? scaled_diff((v), vmax, vc)                             \
                               : _mm256_mul_ps(_mm256_sub_ps((v), vmax), vc);           \
        __m256 e_ = _mm256_and_ps(exp_ps(d_), _mm256_castsi256_ps(m));                  \
        if (store == 1) _mm256_maskstore_ps((ptr), (m), e_);                            \
        if (store >= 2) _mm256_maskstore_ps((ptr), (m), d_);                            \
        (acc) = _mm256_add_ps((acc), e_);                                               \
    } while (0)
        const __m256i all = tail_mask(8);
        for (; i + U <= end; i += U) {
            EXPSUM_STEP(_mm256_loadu_ps(x + i), y + i, a0, all);
            EXPSUM_STEP(_mm256_loadu_ps(x + i + 8), y + i + 8, a1, all);
            EXPSUM_STEP(_mm256_loadu_ps(x + i + 16), y + i + 16, a2, all);
            EXPSUM_STEP(_mm256_loadu_ps(x + i + 24), y + i + 24, a3, all);
        }
        for (; i < end; i += 8) {
            __m256i m = tail_mask(end - i >= 8 ? 8 : end - i);
            EXPSUM_STEP(_mm256_maskload_ps(x + i, m), y + i, a0, m);
        }
#undef EXPSUM_STEP
        fold(&dlo, &dhi, _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    }
    return hsum_pd(dlo, dhi);
}

double sg_expsum_f32__avx2_u32(size_t n, const float *x, float max, float c) {
    return expsum_body(n, x, NULL, max, c, 0);
}

double sg_expsum_store_f32__avx2_u32(size_t n, const float *x, float *y,
                                     float max, float c) {
    return expsum_body(n, x, y, max, c, 1);
}

double sg_shiftexpsum_store_f32__avx2_u32(size_t n, const float *x, float *y,
                                          float max, float c) {
    return c < 1.0f ? expsum_body(n, x, y, max, c, 2) : expsum_body(n, x, y, max, c, 3);
}

/* Elementwise loop skeleton: OP maps one loaded vector to one result. */
#define ELEMENTWISE(OP)                                                       \
    size_t i = 0;                                                             \
    for (; i + U <= n; i += U) {                                              \
        __m256 r0 = OP(_mm256_loadu_ps(x + i));                               \
        __m256 r1 = OP(_mm256_loadu_ps(x + i + 8));                           \
        __m256 r2 = OP(_mm256_loadu_ps(x + i + 16));                          \
        __m256 r3 = OP(_mm256_loadu_ps(x + i + 24));                          \
        _mm256_storeu_ps(y + i, r0);                                          \
        _mm256_storeu_ps(y + i + 8, r1);                                      \
        _mm256_storeu_ps(y + i + 16, r2);                                     \
        _mm256_storeu_ps(y + i + 24, r3);                                     \
    }                                                                         \
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, OP(_mm256_loadu_ps(x + i))); \
    if (i < n) {                                                              \
        __m256i m = tail_mask(n - i);                                         \
        _mm256_maskstore_ps(y + i, m, OP(_mm256_maskload_ps(x + i, m)));      \
    }

void sg_scale_f32__avx2_u32(size_t n, const float *x, float *y, float s) {
    const __m256 vs = _mm256_set1_ps(s);
#define SCALE(v) _mm256_mul_ps((v), vs)
    ELEMENTWISE(SCALE)
#undef SCALE
}

void sg_expscale_store_f32__avx2_u32(size_t n, const float *x, float *y,
                                     float max, float c, float s) {
    const __m256 vmax = _mm256_set1_ps(max), vc = _mm256_set1_ps(c), vs = _mm256_set1_ps(s);
#define EXPSCALE(v) _mm256_mul_ps(exp_ps(_mm256_mul_ps(_mm256_sub_ps((v), vmax), vc)), vs)
    ELEMENTWISE(EXPSCALE)
#undef EXPSCALE
}

static inline __m256 shift_one(__m256 x, __m256 vmax, __m256 vc, __m256 voff) {
    return _mm256_sub_ps(scaled_diff(x, vmax, vc), voff);
}

static inline __attribute__((always_inline)) void
shift_store_body(size_t n, const float *x, float *y, float max, float c, float off, int safe) {
    const __m256 vmax = _mm256_set1_ps(max), vc = _mm256_set1_ps(c), voff = _mm256_set1_ps(off);
#define SHIFT(v) (safe ? shift_one((v), vmax, vc, voff) : _mm256_fmsub_ps(_mm256_sub_ps((v), vmax), vc, voff))
    ELEMENTWISE(SHIFT)
#undef SHIFT
}

void sg_shift_store_f32__avx2_u32(size_t n, const float *x, float *y, float max,
                                  float c, float off) {
    if (c < 1.0f) shift_store_body(n, x, y, max, c, off, 1);
    else shift_store_body(n, x, y, max, c, off, 0);
}

/* Two-pass, pass 1: per-lane sums acc_m * 2^acc_e (see the AVX-512 file). */
#define EXT_EMPTY -1.0e30f

static inline void ext_add(__m256 *am, __m256 *ae, __m256 p, __m256 k) {
    __m256 e = _mm256_max_ps(*ae, k);
    *am = _mm256_fmadd_ps(*am, pow2_nonpos(_mm256_sub_ps(*ae, e)),
                          _mm256_mul_ps(p, pow2_nonpos(_mm256_sub_ps(k, e))));
    *ae = e;
}

static inline void ext_add_pd(__m256d *dm, __m256d *de, __m256d m, __m256d e) {
    __m256d ne = _mm256_max_pd(*de, e);
    *dm = _mm256_fmadd_pd(*dm, pow2_nonpos_pd(_mm256_sub_pd(*de, ne)),
                          _mm256_mul_pd(m, pow2_nonpos_pd(_mm256_sub_pd(e, ne))));
    *de = ne;
}

void sg_extexp_sum_f32__avx2_u32(size_t n, const float *x, float c, sg_extsum *out) {
    const __m256 vc = _mm256_set1_ps(c), empty = _mm256_set1_ps(EXT_EMPTY);
    __m256 vmax = _mm256_set1_ps(-INFINITY), vmin = _mm256_set1_ps(INFINITY);
    __m256d dm[2] = {_mm256_setzero_pd(), _mm256_setzero_pd()};
    __m256d de[2] = {_mm256_set1_pd(EXT_EMPTY), _mm256_set1_pd(EXT_EMPTY)};
    size_t i = 0;
    while (i < n) {
        size_t end = n - i > SG_SUM_BLOCK ? i + SG_SUM_BLOCK : n;
        __m256 m0 = _mm256_setzero_ps(), m1 = m0;
        __m256 e0 = empty, e1 = empty;
        for (; i + 16 <= end; i += 16) {
            __m256 x0 = _mm256_loadu_ps(x + i), x1 = _mm256_loadu_ps(x + i + 8);
            vmax = _mm256_max_ps(vmax, _mm256_max_ps(x0, x1));
            vmin = _mm256_min_ps(vmin, _mm256_min_ps(x0, x1));
            __m256 k0, k1;
            __m256 p0 = exp_split(_mm256_mul_ps(x0, vc), &k0);
            __m256 p1 = exp_split(_mm256_mul_ps(x1, vc), &k1);
            ext_add(&m0, &e0, p0, k0);
            ext_add(&m1, &e1, p1, k1);
        }
        for (; i < end; i += 8) {
            size_t rem = end - i >= 8 ? 8 : end - i;
            __m256 keep = _mm256_castsi256_ps(tail_mask(rem));
            __m256 v = _mm256_maskload_ps(x + i, tail_mask(rem));
            vmax = _mm256_max_ps(vmax, _mm256_blendv_ps(vmax, v, keep));
            vmin = _mm256_min_ps(vmin, _mm256_blendv_ps(vmin, v, keep));
            __m256 k;
            __m256 p = _mm256_and_ps(exp_split(_mm256_mul_ps(v, vc), &k), keep);
            ext_add(&m0, &e0, p, _mm256_blendv_ps(empty, k, keep));
        }
        ext_add(&m0, &e0, m1, e1);
        ext_add_pd(&dm[0], &de[0], _mm256_cvtps_pd(_mm256_castps256_ps128(m0)),
                   _mm256_cvtps_pd(_mm256_castps256_ps128(e0)));
        ext_add_pd(&dm[1], &de[1], _mm256_cvtps_pd(_mm256_extractf128_ps(m0, 1)),
                   _mm256_cvtps_pd(_mm256_extractf128_ps(e0, 1)));
    }
    ext_add_pd(&dm[0], &de[0], dm[1], de[1]);
    double lane_m[4], lane_e[4], e = EXT_EMPTY, m = 0.0;
    _mm256_storeu_pd(lane_m, dm[0]);
    _mm256_storeu_pd(lane_e, de[0]);
    for (int j = 0; j < 4; j++) e = lane_e[j] > e ? lane_e[j] : e;
    for (int j = 0; j < 4; j++) m += ldexp(lane_m[j], (int)(lane_e[j] - e > -2000 ? lane_e[j] - e : -2000));
    out->m = m;
    out->e = n ? e : 0.0;
    out->max = hmax_ps(vmax);
    out->min = hmin_ps(vmin);
}

static inline __m256 ext_store_one(__m256 v, __m256 vc, __m256 vinv, __m256 ve) {
    __m256 k;
    __m256 p = exp_split(_mm256_mul_ps(v, vc), &k);
    return _mm256_mul_ps(_mm256_mul_ps(p, vinv), pow2_nonpos(_mm256_sub_ps(k, ve)));
}

void sg_extexp_store_f32__avx2_u32(size_t n, const float *x, float *y, float c,
                                   float inv_m, float e) {
    const __m256 vc = _mm256_set1_ps(c), vinv = _mm256_set1_ps(inv_m), ve = _mm256_set1_ps(e);
#define EXTSTORE(v) ext_store_one((v), vc, vinv, ve)
    ELEMENTWISE(EXTSTORE)
#undef EXTSTORE
}

/* sum a_i * b_i (b == NULL: sum a_i), blocked float lanes then double. */
static inline __attribute__((always_inline)) double
dot_body(size_t n, const float *a, const float *b) {
    __m256d dlo = _mm256_setzero_pd(), dhi = _mm256_setzero_pd();
    const __m256 one = _mm256_set1_ps(1.0f);
    size_t i = 0;
    while (i < n) {
        size_t end = n - i > SG_SUM_BLOCK ? i + SG_SUM_BLOCK : n;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (; i + U <= end; i += U) {
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), b ? _mm256_loadu_ps(b + i) : one, a0);
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), b ? _mm256_loadu_ps(b + i + 8) : one, a1);
            a2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), b ? _mm256_loadu_ps(b + i + 16) : one, a2);
            a3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), b ? _mm256_loadu_ps(b + i + 24) : one, a3);
        }
        for (; i < end; i += 8) {
            __m256i m = tail_mask(end - i >= 8 ? 8 : end - i);
            a0 = _mm256_fmadd_ps(_mm256_maskload_ps(a + i, m),
                                 b ? _mm256_maskload_ps(b + i, m) : one, a0);
        }
        fold(&dlo, &dhi, _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    }
    return hsum_pd(dlo, dhi);
}

double sg_dot_f32__avx2_u32(size_t n, const float *a, const float *b) {
    return dot_body(n, a, b);
}

double sg_sum_f32__avx2_u32(size_t n, const float *a) { return dot_body(n, a, NULL); }

void sg_softmax_bwd_f32__avx2_u32(size_t n, const float *y, const float *dy,
                                  float *dx, float dot, float c) {
    const __m256 vdot = _mm256_set1_ps(dot), vc = _mm256_set1_ps(c);
    for (size_t i = 0; i < n; i += 8) {
        __m256i m = tail_mask(n - i >= 8 ? 8 : n - i);
        __m256 g = _mm256_sub_ps(_mm256_maskload_ps(dy + i, m), vdot);
        __m256 v = _mm256_mul_ps(_mm256_mul_ps(_mm256_maskload_ps(y + i, m), g), vc);
        _mm256_maskstore_ps(dx + i, m, v);
    }
}

void sg_logsoftmax_bwd_f32__avx2_u32(size_t n, const float *y, const float *dy,
                                     float *dx, float sum, float c) {
    const __m256 vsum = _mm256_set1_ps(sum), vc = _mm256_set1_ps(c);
    for (size_t i = 0; i < n; i += 8) {
        __m256i m = tail_mask(n - i >= 8 ? 8 : n - i);
        __m256 p = exp_ps(_mm256_maskload_ps(y + i, m));
        __m256 v = _mm256_fnmadd_ps(p, vsum, _mm256_maskload_ps(dy + i, m));
        _mm256_maskstore_ps(dx + i, m, _mm256_mul_ps(v, vc));
    }
}

/* Short rows in registers: up to 8 ymm (64 floats); NV constant per case. */
static inline __attribute__((always_inline)) int
short_row(const float *x, float *y, size_t n, int nv, __m256 vc, float t, int mode) {
    const int log_out = mode == SG_SHORT_LOG_SOFTMAX;
    const __m256 ninf = _mm256_set1_ps(-INFINITY);
    __m256i last = tail_mask(n - 8 * (size_t)(nv - 1));
    __m256 v[8];
    for (int k = 0; k < nv - 1; k++) v[k] = _mm256_loadu_ps(x + 8 * k);
    v[nv - 1] = _mm256_blendv_ps(ninf, _mm256_maskload_ps(x + 8 * (nv - 1), last),
                                 _mm256_castsi256_ps(last));
    __m256 mx = v[0];
    for (int k = 1; k < nv; k++) mx = _mm256_max_ps(mx, v[k]);
    float m = hmax_ps(mx);
    if (!(m - m == 0.0f)) return 0; /* +-inf or NaN max: special path */
    const __m256 vmax = _mm256_set1_ps(m);
    __m256 s = _mm256_setzero_ps();
    for (int k = 0; k < nv; k++) {
        v[k] = log_out && t > 1.0f ? scaled_diff(v[k], vmax, vc) /* d = (x - max) c, safe if c < 1 */
                       : _mm256_mul_ps(_mm256_sub_ps(v[k], vmax), vc);
        __m256 e = exp_ps(v[k]);
        s = _mm256_add_ps(s, e);
        if (!log_out) v[k] = e;
    }
    if (mode == SG_SHORT_LOGSUMEXP) {
        *y = (float)((double)m / t + log(hsum_ps(s)));
        return 1;
    }
    /* softmax: e * (1/s); log-softmax: d - log s. */
    const __m256 f = _mm256_set1_ps(log_out ? logf(hsum_ps(s)) : 1.0f / hsum_ps(s));
    for (int k = 0; k < nv; k++) v[k] = log_out ? _mm256_sub_ps(v[k], f) : _mm256_mul_ps(v[k], f);
    for (int k = 0; k < nv - 1; k++) _mm256_storeu_ps(y + 8 * k, v[k]);
    _mm256_maskstore_ps(y + 8 * (nv - 1), last, v[nv - 1]);
    return 1;
}

#define SHORT_CASE(NV)                                                        \
    case NV:                                                                  \
        for (; r < rows; r++)                                                 \
            if (!short_row(x + r * ldx, y + r * ldy, n, NV, vc, t, mode)) return r; \
        return rows;

size_t sg_softmax_short_f32__avx2(size_t rows, size_t n, const float *x,
                                  size_t ldx, float *y, size_t ldy, float c, float t, int mode) {
    const __m256 vc = _mm256_set1_ps(c);
    size_t r = 0;
    switch ((n + 7) / 8) {
        SHORT_CASE(1)
        SHORT_CASE(2)
        SHORT_CASE(3)
        SHORT_CASE(4)
        SHORT_CASE(5)
        SHORT_CASE(6)
        SHORT_CASE(7)
        SHORT_CASE(8)
    }
    return 0; /* n == 0 or n > 64: not for this kernel */
}

/* Backward of short rows in registers (up to 8 ymm of y and of dy). */
static inline __attribute__((always_inline)) void
bwd_short_row(const float *y, const float *dy, float *dx, size_t n, int nv, __m256 vc, int log_mode) {
    __m256i last = tail_mask(n - 8 * (size_t)(nv - 1)), full = tail_mask(8);
    __m256 vy[8], vd[8];
    __m256 acc = _mm256_setzero_ps();
    for (int k = 0; k < nv; k++) {
        __m256i m = k == nv - 1 ? last : full;
        vy[k] = _mm256_maskload_ps(y + 8 * k, m);
        vd[k] = _mm256_maskload_ps(dy + 8 * k, m);
        acc = log_mode ? _mm256_add_ps(acc, vd[k]) : _mm256_fmadd_ps(vy[k], vd[k], acc);
    }
    const __m256 red = _mm256_set1_ps(hsum_ps(acc));
    for (int k = 0; k < nv; k++) {
        __m256 out = log_mode ? _mm256_mul_ps(_mm256_fnmadd_ps(exp_ps(vy[k]), red, vd[k]), vc)
                              : _mm256_mul_ps(_mm256_mul_ps(vy[k], _mm256_sub_ps(vd[k], red)), vc);
        _mm256_maskstore_ps(dx + 8 * k, k == nv - 1 ? last : full, out);
    }
}

#define BWD_CASE(NV)                                                                   \
    case NV:                                                                           \
        for (size_t r = 0; r < rows; r++)                                              \
            bwd_short_row(y + r * ldy, dy + r * lddy, dx + r * lddx, n, NV, vc, log_mode); \
        return;

void sg_softmax_bwd_short_f32__avx2(size_t rows, size_t n, const float *y, size_t ldy,
                                    const float *dy, size_t lddy, float *dx, size_t lddx, float c,
                                    int log_mode) {
    const __m256 vc = _mm256_set1_ps(c);
    switch ((n + 7) / 8) {
        BWD_CASE(1)
        BWD_CASE(2)
        BWD_CASE(3)
        BWD_CASE(4)
        BWD_CASE(5)
        BWD_CASE(6)
        BWD_CASE(7)
        BWD_CASE(8)
    }
}

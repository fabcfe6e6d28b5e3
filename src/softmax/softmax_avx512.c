/*
 * softmax_avx512.c - AVX-512 (F, BW, DQ, VL) kernels of the softmax family.
 * Compiled with AVX-512 flags for this file only; called only after
 * dispatch saw the features. Contracts are in softmax_kernels.h.
 *
 * Unrolled by 4 vectors (64 floats): four independent accumulators hide the
 * FMA latency. Tails use masked loads and stores, so no scalar loop.
 */
#include <immintrin.h>
#include <math.h>

#include "softmax/softmax_kernels.h"
#include "softmax/exp_avx512.h"

#define U 64 /* floats per unrolled iteration */

/* exp(r) ~ 1 + r*(c1 + r*(c2 + r*(c3 + r*(c4 + r*c5)))) on |r| <= ln2/2,
 * relative error 9.2e-8 before rounding. */
#define C5 0x1.0F9F9Cp-7f
#define C4 0x1.573A1Ap-5f
#define C3 0x1.555A80p-3f
#define C2 0x1.FFFDC6p-2f
#define C1 0x1.FFFFF6p-1f
#define LOG2E 0x1.715476p+0f
#define MINUS_LN2_HI -0x1.62E430p-1f /* ln2 = LN2_HI + LN2_LO exactly enough */
#define PLUS_LN2_LO 0x1.05C610p-29f  /* -(ln2 - LN2_HI) */
#define FLUSH_BELOW -87.33654475f    /* ln(2^-126) */

static inline __m512 poly_exp_reduced(__m512 r) { return sg_exp_poly_avx512(r); }

/* Splits exp(t) = p * 2^k, k = round(t * log2 e), by Cody-Waite reduction
 * with FMA: k*ln2 is subtracted in two parts so r stays exact for |k| up to
 * 2^24. For |t| above ~2^18, t * log2e rounded to float can pick a k one off
 * the nearest, leaving |r| past the polynomial's range; a second, exact
 * reduction step (k1 in {-1, 0, 1}) brings r back. This is what bounds the
 * two-pass domain (|t| <= 1e7), not the polynomial. */
static inline __m512 exp_split(__m512 t, __m512 *k) {
    const int round = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    __m512 k0 = _mm512_roundscale_ps(_mm512_mul_ps(t, _mm512_set1_ps(LOG2E)), round);
    __m512 r = _mm512_fmadd_ps(k0, _mm512_set1_ps(MINUS_LN2_HI), t);
    r = _mm512_fmadd_ps(k0, _mm512_set1_ps(PLUS_LN2_LO), r);
    __m512 k1 = _mm512_roundscale_ps(_mm512_mul_ps(r, _mm512_set1_ps(LOG2E)), round);
    r = _mm512_fmadd_ps(k1, _mm512_set1_ps(MINUS_LN2_HI), r);
    r = _mm512_fmadd_ps(k1, _mm512_set1_ps(PLUS_LN2_LO), r);
    *k = _mm512_add_ps(k0, k1);
    return poly_exp_reduced(r);
}

/*
 * exp(d) for the shifted arguments of softmax (d <= 0). Arguments below
 * -150 are clamped there, where 2^k underflows to exactly 0: -inf gives 0,
 * and NaN stays NaN (vmaxps returns its second operand when one is NaN).
 * Outputs below 2^-126 come out denormal or 0.
 */
static inline __m512 exp_ps(__m512 d) { return sg_exp_nonpos_avx512(d); }

/* exp(t) = p * 2^k with one reduction step: exact for |t| <= 2^17, where
 * t log2 e rounds to within 2^-7 of itself, so |r| <= 0.352. */
static inline __m512 exp_split_narrow(__m512 t, __m512 *k) {
    *k = _mm512_roundscale_ps(_mm512_mul_ps(t, _mm512_set1_ps(LOG2E)),
                              _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fmadd_ps(*k, _mm512_set1_ps(MINUS_LN2_HI), t);
    r = _mm512_fmadd_ps(*k, _mm512_set1_ps(PLUS_LN2_LO), r);
    return poly_exp_reduced(r);
}

#define NARROW_LIMIT 131072.0f /* 2^17 */

static inline __mmask16 tail_mask(size_t rem) {
    return (__mmask16)((1u << rem) - 1u);
}

/* Adds 16 float lanes into two double accumulators (blocked summation). */
static inline void fold(__m512d *lo, __m512d *hi, __m512 acc) {
    *lo = _mm512_add_pd(*lo, _mm512_cvtps_pd(_mm512_castps512_ps256(acc)));
    *hi = _mm512_add_pd(*hi, _mm512_cvtps_pd(_mm256_castpd_ps(
                                 _mm512_extractf64x4_pd(_mm512_castps_pd(acc), 1))));
}

static inline double hsum_pd(__m512d lo, __m512d hi) {
    return _mm512_reduce_add_pd(_mm512_add_pd(lo, hi));
}

float sg_rmax_f32__avx512_u64(size_t n, const float *x) {
    const __m512 ninf = _mm512_set1_ps(-INFINITY);
    __m512 m0 = ninf, m1 = ninf, m2 = ninf, m3 = ninf;
    size_t i = 0;
    for (; i + U <= n; i += U) {
        m0 = _mm512_max_ps(m0, _mm512_loadu_ps(x + i));
        m1 = _mm512_max_ps(m1, _mm512_loadu_ps(x + i + 16));
        m2 = _mm512_max_ps(m2, _mm512_loadu_ps(x + i + 32));
        m3 = _mm512_max_ps(m3, _mm512_loadu_ps(x + i + 48));
    }
    for (; i + 16 <= n; i += 16) m0 = _mm512_max_ps(m0, _mm512_loadu_ps(x + i));
    if (i < n) m1 = _mm512_max_ps(m1, _mm512_mask_loadu_ps(ninf, tail_mask(n - i), x + i));
    return _mm512_reduce_max_ps(_mm512_max_ps(_mm512_max_ps(m0, m1), _mm512_max_ps(m2, m3)));
}

/* (x - max) * c on the lanes in `valid`. Where x - max overflows to -inf
 * (|x|, |max| near FLT_MAX) but the scaled difference does not, x*c - max*c
 * instead; that branch is almost never taken (it is also taken, harmlessly,
 * for x = -inf). */
static inline __m512 scaled_diff(__m512 x, __m512 vmax, __m512 vc, __mmask16 valid) {
    __m512 d = _mm512_sub_ps(x, vmax);
    __mmask16 ovf = _mm512_mask_cmp_ps_mask(valid, d, _mm512_set1_ps(-INFINITY), _CMP_EQ_OQ);
    if (__builtin_expect(ovf != 0, 0))
        return _mm512_mask_mov_ps(_mm512_mul_ps(d, vc), ovf,
                                  _mm512_fmsub_ps(x, vc, _mm512_mul_ps(vmax, vc)));
    return _mm512_mul_ps(d, vc);
}

/* (x - max) * c, skipping the product when c == 1 (the common T = 1;
 * `unit` is a constant after inlining). */
#define SHIFTED(v) (unit ? _mm512_sub_ps((v), vmax) : _mm512_mul_ps(_mm512_sub_ps((v), vmax), vc))

/*
 * Shared body of expsum, expsum_store and shiftexpsum_store. `store` (a
 * constant after inlining) says what is written: 0 nothing, 1 the terms
 * exp(d), 2 or 3 the shifted values d themselves (log-softmax, so that its
 * memory writes overlap the exponentials as softmax's do): 2 with the
 * overflow-safe difference, needed only when c < 1 (for c >= 1 an
 * overflowed x - max is -inf after scaling anyway), 3 without.
 */
#define EXPSUM_STEP(v, ptr, acc, wmask)                                            \
    do {                                                                           \
        __m512 d_ = store == 2 ? scaled_diff((v), vmax, vc, (wmask)) : SHIFTED(v); \
        __m512 e_ = _mm512_maskz_mov_ps((wmask), exp_ps(d_));                     \
        if (store == 1) _mm512_mask_storeu_ps((ptr), (wmask), e_);                 \
        if (store >= 2) _mm512_mask_storeu_ps((ptr), (wmask), d_);                 \
        (acc) = _mm512_add_ps((acc), e_);                                          \
    } while (0)

static inline __attribute__((always_inline)) double
expsum_body(size_t n, const float *x, float *y, float max, float c, int store, int unit) {
    const __m512 vmax = _mm512_set1_ps(max), vc = _mm512_set1_ps(c);
    const __mmask16 all = 0xFFFF;
    __m512d dlo = _mm512_setzero_pd(), dhi = _mm512_setzero_pd();
    size_t i = 0;
    while (i < n) {
        size_t end = n - i > SG_SUM_BLOCK ? i + SG_SUM_BLOCK : n;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (; i + U <= end; i += U) {
            EXPSUM_STEP(_mm512_loadu_ps(x + i), y + i, a0, all);
            EXPSUM_STEP(_mm512_loadu_ps(x + i + 16), y + i + 16, a1, all);
            EXPSUM_STEP(_mm512_loadu_ps(x + i + 32), y + i + 32, a2, all);
            EXPSUM_STEP(_mm512_loadu_ps(x + i + 48), y + i + 48, a3, all);
        }
        for (; i < end; i += 16) {
            __mmask16 m = end - i >= 16 ? all : tail_mask(end - i);
            EXPSUM_STEP(_mm512_maskz_loadu_ps(m, x + i), y + i, a0, m);
        }
        fold(&dlo, &dhi, _mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
    }
    return hsum_pd(dlo, dhi);
}

double sg_expsum_f32__avx512_u64(size_t n, const float *x, float max, float c) {
    return c == 1.0f ? expsum_body(n, x, NULL, max, c, 0, 1) : expsum_body(n, x, NULL, max, c, 0, 0);
}

double sg_expsum_store_f32__avx512_u64(size_t n, const float *x, float *y,
                                       float max, float c) {
    return c == 1.0f ? expsum_body(n, x, y, max, c, 1, 1) : expsum_body(n, x, y, max, c, 1, 0);
}

double sg_shiftexpsum_store_f32__avx512_u64(size_t n, const float *x, float *y,
                                            float max, float c) {
    if (c < 1.0f) return expsum_body(n, x, y, max, c, 2, 0);
    return c == 1.0f ? expsum_body(n, x, y, max, c, 3, 1) : expsum_body(n, x, y, max, c, 3, 0);
}

void sg_scale_f32__avx512_u64(size_t n, const float *x, float *y, float s) {
    const __m512 vs = _mm512_set1_ps(s);
    size_t i = 0;
    for (; i + U <= n; i += U) {
        _mm512_storeu_ps(y + i, _mm512_mul_ps(_mm512_loadu_ps(x + i), vs));
        _mm512_storeu_ps(y + i + 16, _mm512_mul_ps(_mm512_loadu_ps(x + i + 16), vs));
        _mm512_storeu_ps(y + i + 32, _mm512_mul_ps(_mm512_loadu_ps(x + i + 32), vs));
        _mm512_storeu_ps(y + i + 48, _mm512_mul_ps(_mm512_loadu_ps(x + i + 48), vs));
    }
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(y + i, _mm512_mul_ps(_mm512_loadu_ps(x + i), vs));
    if (i < n) {
        __mmask16 m = tail_mask(n - i);
        _mm512_mask_storeu_ps(y + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), vs));
    }
}

void sg_expscale_store_f32__avx512_u64(size_t n, const float *x, float *y,
                                       float max, float c, float s) {
    const __m512 vmax = _mm512_set1_ps(max), vc = _mm512_set1_ps(c), vs = _mm512_set1_ps(s);
    size_t i = 0;
#define EXPSCALE(v) _mm512_mul_ps(exp_ps(_mm512_mul_ps(_mm512_sub_ps((v), vmax), vc)), vs)
    for (; i + U <= n; i += U) {
        __m512 e0 = EXPSCALE(_mm512_loadu_ps(x + i));
        __m512 e1 = EXPSCALE(_mm512_loadu_ps(x + i + 16));
        __m512 e2 = EXPSCALE(_mm512_loadu_ps(x + i + 32));
        __m512 e3 = EXPSCALE(_mm512_loadu_ps(x + i + 48));
        _mm512_storeu_ps(y + i, e0);
        _mm512_storeu_ps(y + i + 16, e1);
        _mm512_storeu_ps(y + i + 32, e2);
        _mm512_storeu_ps(y + i + 48, e3);
    }
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, EXPSCALE(_mm512_loadu_ps(x + i)));
    if (i < n) {
        __mmask16 m = tail_mask(n - i);
        _mm512_mask_storeu_ps(y + i, m, EXPSCALE(_mm512_maskz_loadu_ps(m, x + i)));
    }
#undef EXPSCALE
}

/*
 * Two-pass, pass 1. Each lane keeps its sum as acc_m * 2^acc_e; a new term
 * p * 2^k joins by rescaling both to the larger exponent with vscalefps,
 * which cannot overflow. Every SG_SUM_BLOCK elements the float pairs are
 * folded into double pairs, so rounding does not grow with n.
 */
#define EXT_EMPTY -1.0e30f /* exponent of an empty accumulator */

static inline void ext_add(__m512 *am, __m512 *ae, __m512 p, __m512 k) {
    __m512 e = _mm512_max_ps(*ae, k);
    *am = _mm512_add_ps(_mm512_scalef_ps(*am, _mm512_sub_ps(*ae, e)),
                        _mm512_scalef_ps(p, _mm512_sub_ps(k, e)));
    *ae = e;
}

static inline void ext_add_pd(__m512d *dm, __m512d *de, __m512d m, __m512d e) {
    __m512d ne = _mm512_max_pd(*de, e);
    *dm = _mm512_add_pd(_mm512_scalef_pd(*dm, _mm512_sub_pd(*de, ne)),
                        _mm512_scalef_pd(m, _mm512_sub_pd(e, ne)));
    *de = ne;
}

static inline void ext_fold(__m512d dm[2], __m512d de[2], __m512 m, __m512 e) {
    __m512d mlo = _mm512_cvtps_pd(_mm512_castps512_ps256(m));
    __m512d elo = _mm512_cvtps_pd(_mm512_castps512_ps256(e));
    __m512d mhi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(m), 1)));
    __m512d ehi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(e), 1)));
    ext_add_pd(&dm[0], &de[0], mlo, elo);
    ext_add_pd(&dm[1], &de[1], mhi, ehi);
}

/* One unrolled step of pass 1; `wide` and `unit` are constants after
 * inlining. */
static inline __attribute__((always_inline)) void
ext_step(__m512 x0, __m512 x1, __m512 x2, __m512 x3, __m512 vc, int unit, int wide, __m512 *m0,
         __m512 *e0, __m512 *m1, __m512 *e1, __m512 *m2, __m512 *e2, __m512 *m3, __m512 *e3) {
    __m512 k0, k1, k2, k3, p0, p1, p2, p3;
#define T(v) (unit ? (v) : _mm512_mul_ps((v), vc))
    if (wide) {
        p0 = exp_split(T(x0), &k0);
        p1 = exp_split(T(x1), &k1);
        p2 = exp_split(T(x2), &k2);
        p3 = exp_split(T(x3), &k3);
    } else {
        p0 = exp_split_narrow(T(x0), &k0);
        p1 = exp_split_narrow(T(x1), &k1);
        p2 = exp_split_narrow(T(x2), &k2);
        p3 = exp_split_narrow(T(x3), &k3);
    }
#undef T
    ext_add(m0, e0, p0, k0);
    ext_add(m1, e1, p1, k1);
    ext_add(m2, e2, p2, k2);
    ext_add(m3, e3, p3, k3);
}

static inline __attribute__((always_inline)) void
extexp_sum_body(size_t n, const float *x, float c, sg_extsum *out, int unit) {
    const __m512 vc = _mm512_set1_ps(c), empty = _mm512_set1_ps(EXT_EMPTY);
    /* Blocks whose |x c| stay under 2^17 take the one-step reduction. */
    const __m512 hi = _mm512_set1_ps(NARROW_LIMIT / c), lo = _mm512_set1_ps(-NARROW_LIMIT / c);
    __m512 vmax = _mm512_set1_ps(-INFINITY), vmin = _mm512_set1_ps(INFINITY);
    __m512d dm[2] = {_mm512_setzero_pd(), _mm512_setzero_pd()};
    __m512d de[2] = {_mm512_set1_pd(EXT_EMPTY), _mm512_set1_pd(EXT_EMPTY)};
    size_t i = 0;
    while (i < n) {
        size_t end = n - i > SG_SUM_BLOCK ? i + SG_SUM_BLOCK : n;
        __m512 m0 = _mm512_setzero_ps(), m1 = m0, m2 = m0, m3 = m0;
        __m512 e0 = empty, e1 = empty, e2 = empty, e3 = empty;
        for (; i + U <= end; i += U) {
            __m512 x0 = _mm512_loadu_ps(x + i), x1 = _mm512_loadu_ps(x + i + 16);
            __m512 x2 = _mm512_loadu_ps(x + i + 32), x3 = _mm512_loadu_ps(x + i + 48);
            __m512 lmax = _mm512_max_ps(_mm512_max_ps(x0, x1), _mm512_max_ps(x2, x3));
            __m512 lmin = _mm512_min_ps(_mm512_min_ps(x0, x1), _mm512_min_ps(x2, x3));
            vmax = _mm512_max_ps(vmax, lmax);
            vmin = _mm512_min_ps(vmin, lmin);
            /* NaN lanes compare false and take the narrow path: the row is
             * recomputed by three-pass anyway. */
            if (_mm512_cmp_ps_mask(lmax, hi, _CMP_GT_OQ) | _mm512_cmp_ps_mask(lmin, lo, _CMP_LT_OQ))
                ext_step(x0, x1, x2, x3, vc, unit, 1, &m0, &e0, &m1, &e1, &m2, &e2, &m3, &e3);
            else
                ext_step(x0, x1, x2, x3, vc, unit, 0, &m0, &e0, &m1, &e1, &m2, &e2, &m3, &e3);
        }
        for (; i < end; i += 16) {
            __mmask16 m = end - i >= 16 ? (__mmask16)0xFFFF : tail_mask(end - i);
            __m512 v = _mm512_maskz_loadu_ps(m, x + i);
            vmax = _mm512_mask_max_ps(vmax, m, vmax, v);
            vmin = _mm512_mask_min_ps(vmin, m, vmin, v);
            __m512 k;
            __m512 p = _mm512_maskz_mov_ps(m, exp_split(_mm512_mul_ps(v, vc), &k));
            k = _mm512_mask_mov_ps(empty, m, k);
            ext_add(&m0, &e0, p, k);
        }
        ext_add(&m0, &e0, m1, e1);
        ext_add(&m2, &e2, m3, e3);
        ext_add(&m0, &e0, m2, e2);
        ext_fold(dm, de, m0, e0);
    }
    ext_add_pd(&dm[0], &de[0], dm[1], de[1]);
    double e = _mm512_reduce_max_pd(de[0]);
    double m = _mm512_reduce_add_pd(_mm512_scalef_pd(dm[0], _mm512_sub_pd(de[0], _mm512_set1_pd(e))));
    out->m = m;
    out->e = n ? e : 0.0;
    out->max = _mm512_reduce_max_ps(vmax);
    out->min = _mm512_reduce_min_ps(vmin);
}

void sg_extexp_sum_f32__avx512_u64(size_t n, const float *x, float c, sg_extsum *out) {
    if (c == 1.0f) extexp_sum_body(n, x, c, out, 1);
    else extexp_sum_body(n, x, c, out, 0);
}

void sg_extexp_store_f32__avx512_u64(size_t n, const float *x, float *y, float c,
                                     float inv_m, float e) {
    const __m512 vc = _mm512_set1_ps(c), vinv = _mm512_set1_ps(inv_m), ve = _mm512_set1_ps(e);
    const __m512 limit = _mm512_set1_ps(-126.0f), big = _mm512_set1_ps(NARROW_LIMIT);
    size_t i = 0;
    for (; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xFFFF : tail_mask(n - i);
        __m512 k, t = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), vc);
        __m512 p;
        if (_mm512_cmp_ps_mask(_mm512_abs_ps(t), big, _CMP_GT_OQ)) p = exp_split(t, &k);
        else p = exp_split_narrow(t, &k);
        __m512 d = _mm512_sub_ps(k, ve);
        __m512 v = _mm512_scalef_ps(_mm512_mul_ps(p, vinv), d);
        v = _mm512_mask_mov_ps(v, _mm512_cmp_ps_mask(d, limit, _CMP_LT_OQ), _mm512_setzero_ps());
        _mm512_mask_storeu_ps(y + i, m, v);
    }
}

static inline __m512 shift_one(__m512 x, __m512 vmax, __m512 vc, __m512 voff) {
    return _mm512_sub_ps(scaled_diff(x, vmax, vc, 0xFFFF), voff);
}

static inline __attribute__((always_inline)) void
shift_store_body(size_t n, const float *x, float *y, float max, float c, float off, int safe) {
    const __m512 vmax = _mm512_set1_ps(max), vc = _mm512_set1_ps(c), voff = _mm512_set1_ps(off);
    size_t i = 0;
    /* The overflow-safe difference matters only when c < 1 (see above). */
#define SHIFT(v) (safe ? shift_one((v), vmax, vc, voff) : _mm512_fmsub_ps(_mm512_sub_ps((v), vmax), vc, voff))
    for (; i + U <= n; i += U) {
        _mm512_storeu_ps(y + i, SHIFT(_mm512_loadu_ps(x + i)));
        _mm512_storeu_ps(y + i + 16, SHIFT(_mm512_loadu_ps(x + i + 16)));
        _mm512_storeu_ps(y + i + 32, SHIFT(_mm512_loadu_ps(x + i + 32)));
        _mm512_storeu_ps(y + i + 48, SHIFT(_mm512_loadu_ps(x + i + 48)));
    }
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, SHIFT(_mm512_loadu_ps(x + i)));
    if (i < n) {
        __mmask16 m = tail_mask(n - i);
        _mm512_mask_storeu_ps(y + i, m, SHIFT(_mm512_maskz_loadu_ps(m, x + i)));
    }
#undef SHIFT
}

void sg_shift_store_f32__avx512_u64(size_t n, const float *x, float *y, float max,
                                    float c, float off) {
    if (c < 1.0f) shift_store_body(n, x, y, max, c, off, 1);
    else shift_store_body(n, x, y, max, c, off, 0);
}

/* sum a_i * b_i (b == NULL: sum a_i), blocked float lanes then double. */
static inline __attribute__((always_inline)) double
dot_body(size_t n, const float *a, const float *b) {
    __m512d dlo = _mm512_setzero_pd(), dhi = _mm512_setzero_pd();
    const __m512 one = _mm512_set1_ps(1.0f);
    size_t i = 0;
    while (i < n) {
        size_t end = n - i > SG_SUM_BLOCK ? i + SG_SUM_BLOCK : n;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (; i + U <= end; i += U) {
            a0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), b ? _mm512_loadu_ps(b + i) : one, a0);
            a1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), b ? _mm512_loadu_ps(b + i + 16) : one, a1);
            a2 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 32), b ? _mm512_loadu_ps(b + i + 32) : one, a2);
            a3 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 48), b ? _mm512_loadu_ps(b + i + 48) : one, a3);
        }
        for (; i < end; i += 16) {
            __mmask16 m = end - i >= 16 ? (__mmask16)0xFFFF : tail_mask(end - i);
            a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i),
                                 b ? _mm512_maskz_loadu_ps(m, b + i) : one, a0);
        }
        fold(&dlo, &dhi, _mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
    }
    return hsum_pd(dlo, dhi);
}

double sg_dot_f32__avx512_u64(size_t n, const float *a, const float *b) {
    return dot_body(n, a, b);
}

double sg_sum_f32__avx512_u64(size_t n, const float *a) { return dot_body(n, a, NULL); }

void sg_softmax_bwd_f32__avx512_u64(size_t n, const float *y, const float *dy,
                                    float *dx, float dot, float c) {
    const __m512 vdot = _mm512_set1_ps(dot), vc = _mm512_set1_ps(c);
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xFFFF : tail_mask(n - i);
        __m512 g = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, dy + i), vdot);
        __m512 v = _mm512_mul_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, y + i), g), vc);
        _mm512_mask_storeu_ps(dx + i, m, v);
    }
}

void sg_logsoftmax_bwd_f32__avx512_u64(size_t n, const float *y, const float *dy,
                                       float *dx, float sum, float c) {
    const __m512 vsum = _mm512_set1_ps(sum), vc = _mm512_set1_ps(c);
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xFFFF : tail_mask(n - i);
        __m512 p = exp_ps(_mm512_maskz_loadu_ps(m, y + i));
        __m512 v = _mm512_fnmadd_ps(p, vsum, _mm512_maskz_loadu_ps(m, dy + i));
        _mm512_mask_storeu_ps(dx + i, m, _mm512_mul_ps(v, vc));
    }
}

/*
 * log(s) for the row sums of the short kernels (s >= 1, finite): s = m 2^e
 * with m in [0.75, 1.5), log m = 2 atanh(z), z = (m - 1) / (m + 1),
 * |z| <= 0.2, by its odd series to z^9 (error below 2e-8 absolute).
 */
static inline __m512 log_ps(__m512 s) {
    __m512 m = _mm512_getmant_ps(s, _MM_MANT_NORM_p75_1p5, _MM_MANT_SIGN_src);
    __m512 e = _mm512_getexp_ps(_mm512_mul_ps(s, _mm512_set1_ps(4.0f / 3.0f)));
    /* 1 / (m + 1) by rcp14 and one Newton step (relative error ~2^-28). */
    __m512 den = _mm512_add_ps(m, _mm512_set1_ps(1.0f)), inv = _mm512_rcp14_ps(den);
    inv = _mm512_mul_ps(inv, _mm512_fnmadd_ps(den, inv, _mm512_set1_ps(2.0f)));
    __m512 z = _mm512_mul_ps(_mm512_sub_ps(m, _mm512_set1_ps(1.0f)), inv);
    __m512 z2 = _mm512_mul_ps(z, z);
    __m512 p = _mm512_fmadd_ps(z2, _mm512_set1_ps(2.0f / 9.0f), _mm512_set1_ps(2.0f / 7.0f));
    p = _mm512_fmadd_ps(p, z2, _mm512_set1_ps(2.0f / 5.0f));
    p = _mm512_fmadd_ps(p, z2, _mm512_set1_ps(2.0f / 3.0f));
    p = _mm512_fmadd_ps(p, z2, _mm512_set1_ps(2.0f));
    return _mm512_fmadd_ps(e, _mm512_set1_ps(0x1.62E430p-1f), _mm512_fmadd_ps(p, z, _mm512_mul_ps(e, _mm512_set1_ps(-PLUS_LN2_LO))));
}

/* The output of a short row from d = (x - max) c, e = exp(d) and the row
 * sum s: softmax e / s, log-softmax d - log s. */
static inline __m512 short_out(__m512 d, __m512 e, __m512 s_or_log, int log_out) {
    return log_out ? _mm512_sub_ps(d, s_or_log) : _mm512_div_ps(e, s_or_log);
}

/*
 * Short rows in registers: up to 8 zmm (128 floats). NV is a constant in
 * each instantiation below, so v[] lives in registers and the row is read
 * once and written once.
 */
/* Loads a short row into v[0..nv) (-inf past n) and returns its max. */
static inline __attribute__((always_inline)) float
short_load_max(const float *x, size_t n, int nv, __m512 v[8]) {
    __mmask16 last = tail_mask(n - 16 * (size_t)(nv - 1));
    for (int k = 0; k < nv - 1; k++) v[k] = _mm512_loadu_ps(x + 16 * k);
    v[nv - 1] = _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), last, x + 16 * (nv - 1));
    __m512 mx = v[0];
    for (int k = 1; k < nv; k++) mx = _mm512_max_ps(mx, v[k]);
    return _mm512_reduce_max_ps(mx);
}

/* Softmax of one short row; 0 (nothing written) if its max is +-inf or
 * NaN, for the exact path. */
static inline __attribute__((always_inline)) int
short_row(const float *x, float *y, size_t n, int nv, __m512 vc) {
    __m512 v[8];
    const float m = short_load_max(x, n, nv, v);
    if (!(m - m == 0.0f)) return 0;
    const __m512 vmax = _mm512_set1_ps(m);
    __m512 s = _mm512_setzero_ps();
    for (int k = 0; k < nv; k++) {
        v[k] = exp_ps(_mm512_mul_ps(_mm512_sub_ps(v[k], vmax), vc));
        s = _mm512_add_ps(s, v[k]);
    }
    const __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(s));
    for (int k = 0; k < nv - 1; k++) _mm512_storeu_ps(y + 16 * k, _mm512_mul_ps(v[k], inv));
    _mm512_mask_storeu_ps(y + 16 * (nv - 1), tail_mask(n - 16 * (size_t)(nv - 1)),
                          _mm512_mul_ps(v[nv - 1], inv));
    return 1;
}

/*
 * Rows of n <= 8: two rows per zmm (lanes 0-7 and 8-15), so the
 * reductions and the exponential work on full vectors. Max and sum stay
 * within each 8-lane half: swap neighbours, then pairs, then 128-bit lanes.
 * Returns how many rows it completed (an even number), stopping before a
 * pair with a non-finite max.
 */
static inline __m512 half_reduce_max(__m512 v) {
    v = _mm512_max_ps(v, _mm512_permute_ps(v, 0xB1));
    v = _mm512_max_ps(v, _mm512_permute_ps(v, 0x4E));
    return _mm512_max_ps(v, _mm512_shuffle_f32x4(v, v, 0xB1));
}

static inline __m512 half_reduce_add(__m512 v) {
    v = _mm512_add_ps(v, _mm512_permute_ps(v, 0xB1));
    v = _mm512_add_ps(v, _mm512_permute_ps(v, 0x4E));
    return _mm512_add_ps(v, _mm512_shuffle_f32x4(v, v, 0xB1));
}

static inline __attribute__((always_inline)) size_t
softmax_pairs(size_t rows, size_t n, const float *x, size_t ldx, float *y, size_t ldy, __m512 vc,
              float t, int mode) {
    const int log_out = mode == SG_SHORT_LOG_SOFTMAX;
    const int safe = t > 1.0f; /* c < 1: the overflow-safe difference */
    const __mmask8 m8 = (__mmask8)((1u << n) - 1u);
    const __m256 ninf = _mm256_set1_ps(-INFINITY);
    size_t r = 0;
    while (r < rows) {
        /* A lone last row is paired with itself: every lane computes its
         * own row alone, so a row's bits never depend on its partner (nor,
         * through the partition of rows into tasks, on the thread count). */
        const size_t r2 = r + 1 < rows ? r + 1 : r;
        const float *x0 = x + r * ldx;
        const int dense = n == 8 && ldx == 8 && r2 == r + 1; /* two rows = one vector */
        __m512 v = dense ? _mm512_loadu_ps(x0)
                         : _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_mask_loadu_ps(ninf, m8, x0)),
                                              _mm256_mask_loadu_ps(ninf, m8, x + r2 * ldx), 1);
        __m512 mx = half_reduce_max(v);
        __mmask16 finite = _mm512_cmp_ps_mask(_mm512_sub_ps(mx, mx), _mm512_setzero_ps(), _CMP_EQ_OQ);
        if ((finite & 0xFF) != 0xFF) return r; /* +-inf or NaN max: row r takes the exact path */
        const int both = r2 != r && finite == 0xFFFF;
        __m512 d = log_out && safe ? scaled_diff(v, mx, vc, (__mmask16)(m8 | (m8 << 8)))
                           : _mm512_mul_ps(_mm512_sub_ps(v, mx), vc);
        __m512 e = exp_ps(d), s = half_reduce_add(e);
        float *y0 = y + r * ldy;
        if (mode == SG_SHORT_LOGSUMEXP) { /* lanes 0 and 8: the two rows */
            __m512 l = log_ps(s);
            y0[0] = (float)((double)_mm512_cvtss_f32(mx) / t + _mm512_cvtss_f32(l));
            if (both)
                y0[ldy] = (float)((double)_mm_cvtss_f32(_mm512_extractf32x4_ps(mx, 2)) / t +
                                  _mm_cvtss_f32(_mm512_extractf32x4_ps(l, 2)));
        } else {
            __m512 out = short_out(d, e, log_out ? log_ps(s) : s, log_out);
            if (both && n == 8 && ldy == 8) {
                _mm512_storeu_ps(y0, out);
            } else {
                _mm256_mask_storeu_ps(y0, m8, _mm512_castps512_ps256(out));
                if (both) _mm256_mask_storeu_ps(y0 + ldy, m8, _mm512_extractf32x8_ps(out, 1));
            }
        }
        /* If row r + 1 was special, the next pair starts at it and stops. */
        r += both ? 2 : 1;
    }
    return r;
}


/*
 * Log-softmax and logsumexp of short rows, 16 rows at a time: pass A finds
 * each row's max and sum, one vector logarithm serves the 16 sums, pass B
 * (rows still in L1) writes (x - max) c - log(sum). Stops before a row with
 * a non-finite max, like short_row.
 */
static inline __attribute__((always_inline)) int
short_stats(const float *x, size_t n, int nv, __m512 vc, float *max, float *sum) {
    __m512 v[8];
    const float m = short_load_max(x, n, nv, v);
    if (!(m - m == 0.0f)) return 0;
    const __m512 vmax = _mm512_set1_ps(m);
    __m512 s = _mm512_setzero_ps();
    for (int k = 0; k < nv; k++) s = _mm512_add_ps(s, exp_ps(_mm512_mul_ps(_mm512_sub_ps(v[k], vmax), vc)));
    *max = m;
    *sum = _mm512_reduce_add_ps(s);
    return 1;
}

static inline __attribute__((always_inline)) size_t
short_log_rows(size_t rows, size_t n, const float *x, size_t ldx, float *y, size_t ldy, int nv,
               __m512 vc, float t, int mode) {
    const int safe = t > 1.0f; /* c < 1: the overflow-safe difference */
    const __mmask16 last = tail_mask(n - 16 * (size_t)(nv - 1));
    size_t r = 0;
    while (r < rows) {
        size_t b = rows - r < 16 ? rows - r : 16, k = 0;
        float ms[16], ss[16], ls[16];
        for (int q = 0; q < 16; q++) ss[q] = 1.0f; /* unused lanes: log 1 = 0 */
        while (k < b && short_stats(x + (r + k) * ldx, n, nv, vc, &ms[k], &ss[k])) k++;
        _mm512_storeu_ps(ls, log_ps(_mm512_loadu_ps(ss)));
        for (size_t q = 0; q < k; q++) {
            if (mode == SG_SHORT_LOGSUMEXP) {
                y[(r + q) * ldy] = (float)((double)ms[q] / t + ls[q]);
                continue;
            }
            const float *xr = x + (r + q) * ldx;
            float *yr = y + (r + q) * ldy;
            const __m512 vmax = _mm512_set1_ps(ms[q]), vl = _mm512_set1_ps(ls[q]);
            for (int j = 0; j < nv; j++) {
                __mmask16 m = j == nv - 1 ? last : (__mmask16)0xFFFF;
                __m512 v = _mm512_maskz_loadu_ps(m, xr + 16 * j);
                __m512 d = safe ? scaled_diff(v, vmax, vc, m) : _mm512_mul_ps(_mm512_sub_ps(v, vmax), vc);
                _mm512_mask_storeu_ps(yr + 16 * j, m, _mm512_sub_ps(d, vl));
            }
        }
        r += k;
        if (k < b) return r; /* row r has a non-finite max */
    }
    return rows;
}

#define SHORT_CASE(NV)                                                        \
    case NV:                                                                  \
        if (mode != SG_SHORT_SOFTMAX)                                         \
            return short_log_rows(rows, n, x, ldx, y, ldy, NV, vc, t, mode);  \
        for (; r < rows; r++)                                                 \
            if (!short_row(x + r * ldx, y + r * ldy, n, NV, vc)) return r;         \
        return rows;

size_t sg_softmax_short_f32__avx512(size_t rows, size_t n, const float *x,
                                    size_t ldx, float *y, size_t ldy, float c, float t, int mode) {
    const __m512 vc = _mm512_set1_ps(c);
    size_t r = 0;
    if (n <= 8 && n > 0) /* one instantiation per mode: no mode tests in the loop */
        return mode == SG_SHORT_LOGSUMEXP     ? softmax_pairs(rows, n, x, ldx, y, ldy, vc, t, SG_SHORT_LOGSUMEXP)
               : mode == SG_SHORT_LOG_SOFTMAX ? softmax_pairs(rows, n, x, ldx, y, ldy, vc, t, SG_SHORT_LOG_SOFTMAX)
                                              : softmax_pairs(rows, n, x, ldx, y, ldy, vc, t, SG_SHORT_SOFTMAX);
    switch ((n + 15) / 16) {
        SHORT_CASE(1)
        SHORT_CASE(2)
        SHORT_CASE(3)
        SHORT_CASE(4)
        SHORT_CASE(5)
        SHORT_CASE(6)
        SHORT_CASE(7)
        SHORT_CASE(8)
    }
    return 0; /* n == 0 or n > 128: not for this kernel */
}

/*
 * Backward of short rows in registers (up to 8 zmm of y and of dy), and
 * two rows per zmm for n <= 8. Masked-off lanes load as 0 and add nothing
 * to the row's reduction.
 */
static inline __attribute__((always_inline)) __m512
bwd_out(__m512 y, __m512 dy, __m512 red, __m512 vc, int log_mode) {
    return log_mode ? _mm512_mul_ps(_mm512_fnmadd_ps(exp_ps(y), red, dy), vc)
                    : _mm512_mul_ps(_mm512_mul_ps(y, _mm512_sub_ps(dy, red)), vc);
}

static inline __attribute__((always_inline)) void
bwd_short_row(const float *y, const float *dy, float *dx, size_t n, int nv, __m512 vc, int log_mode) {
    __mmask16 last = tail_mask(n - 16 * (size_t)(nv - 1));
    __m512 vy[8], vd[8];
    __m512 acc = _mm512_setzero_ps();
    for (int k = 0; k < nv; k++) {
        __mmask16 m = k == nv - 1 ? last : (__mmask16)0xFFFF;
        vy[k] = _mm512_maskz_loadu_ps(m, y + 16 * k);
        vd[k] = _mm512_maskz_loadu_ps(m, dy + 16 * k);
        acc = log_mode ? _mm512_add_ps(acc, vd[k]) : _mm512_fmadd_ps(vy[k], vd[k], acc);
    }
    const __m512 red = _mm512_set1_ps(_mm512_reduce_add_ps(acc));
    for (int k = 0; k < nv; k++)
        _mm512_mask_storeu_ps(dx + 16 * k, k == nv - 1 ? last : (__mmask16)0xFFFF,
                              bwd_out(vy[k], vd[k], red, vc, log_mode));
}

static inline __attribute__((always_inline)) void
bwd_pairs(size_t rows, size_t n, const float *y, size_t ldy, const float *dy, size_t lddy, float *dx,
          size_t lddx, __m512 vc, int log_mode) {
    const __mmask8 m8 = (__mmask8)((1u << n) - 1u);
    for (size_t r = 0; r < rows; r += 2) {
        const size_t r2 = r + 1 < rows ? r + 1 : r; /* a lone row pairs with itself */
        const float *y0 = y + r * ldy, *d0 = dy + r * lddy;
        __m512 vy = _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_maskz_loadu_ps(m8, y0)),
                                       _mm256_maskz_loadu_ps(m8, y + r2 * ldy), 1);
        __m512 vd = _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_maskz_loadu_ps(m8, d0)),
                                       _mm256_maskz_loadu_ps(m8, dy + r2 * lddy), 1);
        __m512 red = half_reduce_add(log_mode ? vd : _mm512_mul_ps(vy, vd));
        __m512 out = bwd_out(vy, vd, red, vc, log_mode);
        float *x0 = dx + r * lddx;
        _mm256_mask_storeu_ps(x0, m8, _mm512_castps512_ps256(out));
        if (r2 != r) _mm256_mask_storeu_ps(x0 + lddx, m8, _mm512_extractf32x8_ps(out, 1));
    }
}

#define BWD_CASE(NV)                                                                   \
    case NV:                                                                           \
        for (; r < rows; r++)                                                          \
            bwd_short_row(y + r * ldy, dy + r * lddy, dx + r * lddx, n, NV, vc, log_mode); \
        return;

void sg_softmax_bwd_short_f32__avx512(size_t rows, size_t n, const float *y, size_t ldy,
                                      const float *dy, size_t lddy, float *dx, size_t lddx,
                                      float c, int log_mode) {
    const __m512 vc = _mm512_set1_ps(c);
    size_t r = 0;
    if (n <= 8 && n > 0) {
        if (log_mode) bwd_pairs(rows, n, y, ldy, dy, lddy, dx, lddx, vc, 1);
        else bwd_pairs(rows, n, y, ldy, dy, lddy, dx, lddx, vc, 0);
        return;
    }
    switch ((n + 15) / 16) {
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

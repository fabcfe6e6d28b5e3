/*
 * sparse_avx512.c - AVX-512 kernels of the sparse normalizers (contracts in
 * sparse_kernels.h; reference in sparse_ref.c). 64 floats per step in four
 * accumulators/masks; the tail uses masked loads.
 */
#include <immintrin.h>
#include <math.h>

#include "normalizers/sparse_kernels.h"

/* max(x, acc) returns acc when x is NaN (the second operand wins on
 * NaN), so NaN never enters the max; NaN and +inf are flagged by one
 * unordered not-less-than compare against +inf. */
float sg_sparse_max_f32__avx512_u64(size_t n, const float *x, int *bad) {
    const __m512 inf = _mm512_set1_ps(INFINITY);
    __m512 m0 = _mm512_set1_ps(-INFINITY), m1 = m0, m2 = m0, m3 = m0;
    __mmask16 b = 0;
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        __m512 a = _mm512_loadu_ps(x + i), c = _mm512_loadu_ps(x + i + 16);
        __m512 d = _mm512_loadu_ps(x + i + 32), e = _mm512_loadu_ps(x + i + 48);
        b |= _mm512_cmp_ps_mask(a, inf, _CMP_NLT_UQ) | _mm512_cmp_ps_mask(c, inf, _CMP_NLT_UQ) |
             _mm512_cmp_ps_mask(d, inf, _CMP_NLT_UQ) | _mm512_cmp_ps_mask(e, inf, _CMP_NLT_UQ);
        m0 = _mm512_max_ps(a, m0), m1 = _mm512_max_ps(c, m1);
        m2 = _mm512_max_ps(d, m2), m3 = _mm512_max_ps(e, m3);
    }
    for (; i < n; i += 16) {
        __mmask16 k = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        __m512 a = _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), k, x + i);
        b |= _mm512_cmp_ps_mask(a, inf, _CMP_NLT_UQ);
        m0 = _mm512_max_ps(a, m0);
    }
    if (b) *bad = 1;
    m0 = _mm512_max_ps(_mm512_max_ps(m0, m1), _mm512_max_ps(m2, m3));
    return _mm512_reduce_max_ps(m0);
}

/* Candidates are rare (those near the max), so the loop is a compare and
 * a mask test per 64 floats; a block with candidates compresses their
 * indices and values into registers and stores all 16 lanes (compress
 * straight to memory is slow on some cores), advancing by the count. */
static inline size_t take(__mmask16 m, __m512 v, size_t base, uint32_t *idx, float *val, size_t c,
                          size_t cap) {
    if (!m) return c;
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512i ids = _mm512_add_epi32(lane, _mm512_set1_epi32((int)(uint32_t)base));
    _mm512_storeu_si512((void *)(idx + c), _mm512_maskz_compress_epi32(m, ids));
    _mm512_storeu_ps(val + c, _mm512_maskz_compress_ps(m, v));
    c += (size_t)__builtin_popcount(m);
    return c > cap ? cap + 1 : c;
}

size_t sg_sparse_select_f32__avx512_u64(size_t n, const float *x, float thr, uint32_t *idx,
                                        float *val, size_t cap) {
    const __m512 t = _mm512_set1_ps(thr);
    size_t c = 0, i = 0;
    for (; i + 64 <= n; i += 64) {
        const __m512 v0 = _mm512_loadu_ps(x + i), v1 = _mm512_loadu_ps(x + i + 16);
        const __m512 v2 = _mm512_loadu_ps(x + i + 32), v3 = _mm512_loadu_ps(x + i + 48);
        __mmask16 k0 = _mm512_cmp_ps_mask(v0, t, _CMP_GT_OQ), k1 = _mm512_cmp_ps_mask(v1, t, _CMP_GT_OQ);
        __mmask16 k2 = _mm512_cmp_ps_mask(v2, t, _CMP_GT_OQ), k3 = _mm512_cmp_ps_mask(v3, t, _CMP_GT_OQ);
        if (!(k0 | k1 | k2 | k3)) continue;
        if ((c = take(k0, v0, i, idx, val, c, cap)) > cap) return c;
        if ((c = take(k1, v1, i + 16, idx, val, c, cap)) > cap) return c;
        if ((c = take(k2, v2, i + 32, idx, val, c, cap)) > cap) return c;
        if ((c = take(k3, v3, i + 48, idx, val, c, cap)) > cap) return c;
    }
    for (; i < n; i += 16) {
        __mmask16 k = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        const __m512 v = _mm512_maskz_loadu_ps(k, x + i);
        __mmask16 m = _mm512_mask_cmp_ps_mask(k, v, t, _CMP_GT_OQ);
        if ((c = take(m, v, i, idx, val, c, cap)) > cap) return c;
    }
    return c;
}

/* Two vectors of 8 doubles per step (16 floats converted), masked adds,
 * min and max: no branches on the data (the scalar loop mispredicts). */
static inline __attribute__((always_inline)) void sums16(size_t n, const float *d, double scale,
                                                          double t, sg_sparse_sums *out) {
    const __m512d vs = _mm512_set1_pd(scale), vt = _mm512_set1_pd(t);
    const __m512d pinf = _mm512_set1_pd(INFINITY), ninf = _mm512_set1_pd(-INFINITY);
    __m512d s1a = _mm512_setzero_pd(), s1b = s1a, s2a = s1a, s2b = s1a;
    __m512d mna = pinf, mnb = pinf, mxa = ninf, mxb = ninf;
    size_t k = 0, i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512d u = _mm512_mul_pd(_mm512_cvtps_pd(_mm256_loadu_ps(d + i)), vs);
        __m512d v = _mm512_mul_pd(_mm512_cvtps_pd(_mm256_loadu_ps(d + i + 8)), vs);
        __mmask8 mu = _mm512_cmp_pd_mask(u, vt, _CMP_GT_OQ), mv = _mm512_cmp_pd_mask(v, vt, _CMP_GT_OQ);
        k += (size_t)__builtin_popcount(mu) + (size_t)__builtin_popcount(mv);
        s1a = _mm512_mask_add_pd(s1a, mu, s1a, u), s1b = _mm512_mask_add_pd(s1b, mv, s1b, v);
        s2a = _mm512_mask3_fmadd_pd(u, u, s2a, mu), s2b = _mm512_mask3_fmadd_pd(v, v, s2b, mv);
        mna = _mm512_mask_min_pd(mna, mu, mna, u), mnb = _mm512_mask_min_pd(mnb, mv, mnb, v);
        mxa = _mm512_mask_max_pd(mxa, (__mmask8)~mu, mxa, u), mxb = _mm512_mask_max_pd(mxb, (__mmask8)~mv, mxb, v);
    }
    for (; i < n; i += 8) {
        const __mmask8 live = n - i >= 8 ? (__mmask8)0xff : (__mmask8)((1u << (n - i)) - 1);
        __m512d u = _mm512_mul_pd(_mm512_cvtps_pd(_mm256_maskz_loadu_ps(live, d + i)), vs);
        __mmask8 mu = _mm512_mask_cmp_pd_mask(live, u, vt, _CMP_GT_OQ), mo = live & (__mmask8)~mu;
        k += (size_t)__builtin_popcount(mu);
        s1a = _mm512_mask_add_pd(s1a, mu, s1a, u);
        s2a = _mm512_mask3_fmadd_pd(u, u, s2a, mu);
        mna = _mm512_mask_min_pd(mna, mu, mna, u);
        mxa = _mm512_mask_max_pd(mxa, mo, mxa, u);
    }
    out->k = k;
    out->s1 = _mm512_reduce_add_pd(_mm512_add_pd(s1a, s1b));
    out->s2 = _mm512_reduce_add_pd(_mm512_add_pd(s2a, s2b));
    out->min_in = _mm512_reduce_min_pd(_mm512_min_pd(mna, mnb));
    out->max_out = _mm512_reduce_max_pd(_mm512_max_pd(mxa, mxb));
}

void sg_sparse_sums_f32__avx512_u16(size_t n, const float *d, double scale, double t,
                                    sg_sparse_sums *out) {
    sums16(n, d, scale, t, out);
}

/* shift (sparse_kernels.h): 8 per step in double, as the scalar code. */
void sg_sparse_shift_f32__avx512_u16(size_t m, float *v, double xb) {
    const __m512d b = _mm512_set1_pd(xb);
    for (size_t j = 0; j < m; j += 8) {
        const __mmask8 live = m - j >= 8 ? (__mmask8)0xff : (__mmask8)((1u << (m - j)) - 1);
        const __m512d x = _mm512_cvtps_pd(_mm256_maskz_loadu_ps(live, v + j));
        _mm256_mask_storeu_ps(v + j, live, _mm512_cvtpd_ps(_mm512_sub_pd(x, b)));
    }
}

/* out15 (sparse_kernels.h): the zeros in 16-float stores, the outputs
 * 8 per step in double into a buffer (max(w, 0) is the scalar w + |w|
 * halved: +0 or w exactly), then stored one by one (scatter instructions
 * are slow here). */
void sg_sparse_out15_f32__avx512_u16(size_t n, float *y, size_t m, const float *d, const uint32_t *idx,
                                     double tau) {
    const __m512d t = _mm512_set1_pd(tau), h = _mm512_set1_pd(0.5), z = _mm512_setzero_pd();
    float o[64];
    size_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, _mm512_setzero_ps());
    if (i < n) _mm512_mask_storeu_ps(y + i, (__mmask16)((1u << (n - i)) - 1), _mm512_setzero_ps());
    for (size_t q0 = 0; q0 < m; q0 += 64) {
        const size_t mq = m - q0 < 64 ? m - q0 : 64;
        for (size_t j = 0; j < mq; j += 8) {
            const __mmask8 live = mq - j >= 8 ? (__mmask8)0xff : (__mmask8)((1u << (mq - j)) - 1);
            const __m512d dd = _mm512_cvtps_pd(_mm256_maskz_loadu_ps(live, d + q0 + j));
            const __m512d w = _mm512_max_pd(_mm512_sub_pd(_mm512_mul_pd(h, dd), t), z);
            _mm256_storeu_ps(o + j, _mm512_cvtpd_ps(_mm512_mul_pd(w, w)));
        }
        for (size_t j = 0; j < mq; j++) y[idx[q0 + j]] = o[j];
    }
}

/*
 * tau15 (contract in sparse_kernels.h). The start is proposed in float on
 * two grids of 16 thresholds held in the lanes, each candidate broadcast
 * against the grid (no horizontal sums, no dependency between candidates
 * beyond the accumulators): G_l = sum_i (d_i - T_l)_+^2 in d units
 * (T = 2 t, G = 4 g(t) + 4: exact scalings by powers of 2). G is
 * nonincreasing across the lanes (every operation rounds monotonically),
 * so the lanes with G >= 4 are a prefix; lane 0 always is one of them
 * (T = -2: the max alone gives 4). Grid 1: T = -2 + l/8; grid 2, over
 * the entries above the last such T1 only: T1 + l/128. The start t0 is
 * the last lane of grid 2 with G >= 4, halved: usually within 1/256 of
 * tau from below, so that the first exact pass often settles. The float
 * never decides the result: Newton in double from t0 with the closed-form
 * check (sums16, the order of the sums kernel, hence the bits of Newton
 * from -1 with it); a start above tau (rounding) shows as a Newton step
 * that does not increase, and the iteration restarts from -1.
 */
static inline __attribute__((always_inline)) __m512 grid_g(size_t m, const float *v, __m512 T) {
    const __m512 z = _mm512_setzero_ps();
    __m512 g0 = z, g1 = z, g2 = z, g3 = z;
    size_t i = 0;
    for (; i + 4 <= m; i += 4) {
        const __m512 w0 = _mm512_max_ps(_mm512_sub_ps(_mm512_set1_ps(v[i]), T), z);
        const __m512 w1 = _mm512_max_ps(_mm512_sub_ps(_mm512_set1_ps(v[i + 1]), T), z);
        const __m512 w2 = _mm512_max_ps(_mm512_sub_ps(_mm512_set1_ps(v[i + 2]), T), z);
        const __m512 w3 = _mm512_max_ps(_mm512_sub_ps(_mm512_set1_ps(v[i + 3]), T), z);
        g0 = _mm512_fmadd_ps(w0, w0, g0), g1 = _mm512_fmadd_ps(w1, w1, g1);
        g2 = _mm512_fmadd_ps(w2, w2, g2), g3 = _mm512_fmadd_ps(w3, w3, g3);
    }
    for (; i < m; i++) {
        const __m512 w = _mm512_max_ps(_mm512_sub_ps(_mm512_set1_ps(v[i]), T), z);
        g0 = _mm512_fmadd_ps(w, w, g0);
    }
    return _mm512_add_ps(_mm512_add_ps(g0, g1), _mm512_add_ps(g2, g3));
}

#define AI static inline __attribute__((always_inline))

AI __m256 grid_g8(size_t m, const float *v, __m256 T) {
    const __m256 z = _mm256_setzero_ps();
    __m256 g0 = z, g1 = z, g2 = z, g3 = z;
    size_t i = 0;
    for (; i + 4 <= m; i += 4) {
        const __m256 w0 = _mm256_max_ps(_mm256_sub_ps(_mm256_set1_ps(v[i]), T), z);
        const __m256 w1 = _mm256_max_ps(_mm256_sub_ps(_mm256_set1_ps(v[i + 1]), T), z);
        const __m256 w2 = _mm256_max_ps(_mm256_sub_ps(_mm256_set1_ps(v[i + 2]), T), z);
        const __m256 w3 = _mm256_max_ps(_mm256_sub_ps(_mm256_set1_ps(v[i + 3]), T), z);
        g0 = _mm256_fmadd_ps(w0, w0, g0), g1 = _mm256_fmadd_ps(w1, w1, g1);
        g2 = _mm256_fmadd_ps(w2, w2, g2), g3 = _mm256_fmadd_ps(w3, w3, g3);
    }
    for (; i < m; i++) {
        const __m256 w = _mm256_max_ps(_mm256_sub_ps(_mm256_set1_ps(v[i]), T), z);
        g0 = _mm256_fmadd_ps(w, w, g0);
    }
    return _mm256_add_ps(_mm256_add_ps(g0, g1), _mm256_add_ps(g2, g3));
}

/* Grid 1: the last T = -2 + l/4 (8 lanes: 256-bit operations cost half
 * of 512-bit ones here) with G >= 4 (lane 0 always qualifies). */
AI float grid1(size_t m, const float *d) {
    const __m256 lane = _mm256_setr_ps(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256 G = grid_g8(m, d, _mm256_fmadd_ps(lane, _mm256_set1_ps(0.25f), _mm256_set1_ps(-2.0f)));
    const unsigned c = (unsigned)__builtin_popcount(_mm256_cmp_ps_mask(G, _mm256_set1_ps(4.0f), _CMP_GE_OQ));
    return -2.0f + 0.25f * (float)(c ? c - 1 : 0);
}

/* The entries above t1 into v (the others add 0 to G from t1 on). */
AI size_t above(size_t m, const float *d, float t1, float *v) {
    const __m512 vt1 = _mm512_set1_ps(t1);
    size_t m2 = 0;
    for (size_t i = 0; i < m; i += 16) {
        const __mmask16 live = m - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (m - i)) - 1);
        const __m512 x = _mm512_maskz_loadu_ps(live, d + i);
        const __mmask16 k = _mm512_mask_cmp_ps_mask(live, x, vt1, _CMP_GT_OQ);
        /* compress in a register (the memory form is slow on Zen 4) */
        _mm512_storeu_ps(v + m2, _mm512_maskz_compress_ps(k, x));
        m2 += (size_t)__builtin_popcount(k);
    }
    return m2;
}

/* Grid 2 over v: the start t (u units) = the last T1 + l/128 with G >= 4, halved. */
AI double grid2(size_t m2, const float *v, float t1) {
    const __m512 lane = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512 G = grid_g(m2, v, _mm512_fmadd_ps(lane, _mm512_set1_ps(1.0f / 64.0f), _mm512_set1_ps(t1)));
    const unsigned c = (unsigned)__builtin_popcount(_mm512_cmp_ps_mask(G, _mm512_set1_ps(4.0f), _CMP_GE_OQ));
    return 0.5 * ((double)t1 + (double)(c ? c - 1 : 0) / 64.0);
}

/* Newton in double from t with the exact closed-form check; a start above
 * tau (a step that does not increase) restarts once from -1. One loop with
 * its pass count it0 and restarted flag as parameters, so a caller that did
 * the first pass itself continues the same loop: at most 40 passes (a
 * restart counts as one) and one restart in all. */
AI double newton15_loop(size_t m, const float *d, double t, int it0, int restarted) {
    for (int it = it0; it < 40; it++) {
        sg_sparse_sums a;
        sums16(m, d, 0.5, t, &a);
        double ts, next;
        if (sg_entmax15_step(&a, t, &ts, &next)) return ts;
        if (!(next > t)) {
            if (restarted) return 0.0;
            t = -1.0, restarted = 1; /* the start was above tau */
            continue;
        }
        t = next;
    }
    return 0.0;
}

AI double newton15_from(size_t m, const float *d, double t) { return newton15_loop(m, d, t, 0, t == -1.0); }

/* newton15_from(m, d, t) after its first pass, which did not settle and
 * proposed next: the rest of the same loop (so the same result, within
 * the same pass and restart budget). */
static double newton15_next(size_t m, const float *d, double t, double next) {
    const int restarted = t == -1.0;
    if (!(next > t)) return restarted ? 0.0 : newton15_loop(m, d, -1.0, 1, 1);
    return newton15_loop(m, d, next, 1, restarted);
}

AI double tau15_g16(size_t m, const float *d) {
    float v[SG_SPARSE_TAU15_MAX + 16];
    double t = -1.0;
    if (m <= SG_SPARSE_TAU15_MAX) {
        const float t1 = grid1(m, d);
        t = grid2(above(m, d, t1, v), v, t1);
    }
    return newton15_from(m, d, t);
}

double sg_sparse_tau15_f32__avx512_g16(size_t m, const float *d) { return tau15_g16(m, d); }

/* The op's Newton for m <= SG_SPARSE_SUMS_INLINE (tau15_newton in
 * entmax.c with sg_sparse_sums_run's scalar loop): the same code, so the
 * same bits. */
static double newton15_small(size_t m, const float *d) {
    double t = -1.0;
    for (int it = 0; it < 40; it++) {
        size_t kk = 0;
        double s1 = 0.0, s2 = 0.0, min_in = INFINITY, max_out = -INFINITY;
        for (size_t i = 0; i < m; i++) {
            const double u = 0.5 * (double)d[i];
            if (u > t) {
                kk++, s1 += u, s2 += u * u;
                if (u < min_in) min_in = u;
            } else if (u > max_out) {
                max_out = u;
            }
        }
        const double k = (double)kk, inv_k = 1.0 / k, mean = s1 * inv_k, ss = s2 - s1 * mean;
        const double delta = (1.0 - (ss > 0.0 ? ss : 0.0)) * inv_k;
        const double ts = mean - sqrt(delta > 0.0 ? delta : 0.0);
        if (delta >= 0.0 && min_in > ts && max_out <= ts) return ts;
        const double w1 = s1 - k * t, g = s2 - 2.0 * t * s1 + k * t * t - 1.0;
        const double next = t + g / (2.0 * w1);
        if (!(next > t)) break;
        t = next;
    }
    return 0.0;
}

/*
 * sg_sparse_filter_threshold(xb, 2, 1) (sparse_kernels.h) without
 * branches: its result is the largest float below a = RN(xb - r) in
 * double (r = 2 (1 + 2e-6)): the largest float at or below the double
 * just below a (no float lies between that double and a), which the
 * conversion rounding toward -inf gives; below -FLT_MAX, -inf (as the
 * conversion gives, and by a blend for a = -inf). a is never 0 (r is not
 * a float). The scalar version's last test (does the nearest float lie
 * above?) is a coin flip on real data: about 10 ns of mispredictions per
 * row in row15. Asserted equal to it on every 61st float bit pattern.
 */
float sg_sparse_filter2_f32__avx512(float xb) {
    const double r = 2.0 * 1.0 * (1.0 + 2e-6); /* as sg_sparse_filter_threshold's */
    const __m128d a = _mm_set_sd((double)xb - r);
    const __m128i pos = _mm_castpd_si128(_mm_cmpgt_sd(a, _mm_setzero_pd())); /* all ones: a > 0 */
    const __m128i step = _mm_or_si128(_mm_add_epi64(pos, pos), _mm_set1_epi64x(1)); /* -1 or +1 */
    const __m128d below = _mm_castsi128_pd(_mm_add_epi64(_mm_castpd_si128(a), step)); /* next double down */
    const __m128 f = _mm_cvt_roundsd_ss(_mm_setzero_ps(), below, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    const __mmask8 low = _mm_cmp_sd_mask(a, _mm_set_sd(-(double)FLT_MAX), _CMP_NGT_UQ);
    return _mm_cvtss_f32(_mm_mask_mov_ps(f, low, _mm_set_ss(-INFINITY)));
}

/* The candidates of one block of 16 (mask k): d = x - max, stored at
 * dv + m. One float subtraction: the double difference rounded once to
 * float (as shift) is the float difference itself, since double rounding
 * through a format of p' >= 2p + 2 bits is innocuous for a subtraction
 * (Figueroa 1995: 53 >= 2 * 24 + 2), and no candidate overflows. */
AI size_t take15(__mmask16 k, __m512 v, __m512 mx, float *dv, size_t m) {
    if (!k) return m;
    _mm512_storeu_ps(dv + m, _mm512_maskz_compress_ps(k, _mm512_sub_ps(v, mx)));
    return m + (size_t)__builtin_popcount(k);
}

/* row15 phase 1: the max, the candidates' d stored densely, and each
 * block's mask. 0: not taken. */
/* The filter threshold of row15 (radius 2) or of rowsm (r1: radius 1, as
 * the sparsemax op's sg_sparse_gather). */
AI float sel_thr(float mx, int r1) {
    return r1 ? sg_sparse_filter_threshold(mx, 1.0, 1.0) : sg_sparse_filter2_f32__avx512(mx);
}

AI int sel15(size_t n, const float *x, float *dv, __mmask16 *km, size_t *mo, int r1) {
    int bad = 0;
    const float mx = sg_sparse_max_f32__avx512_u64(n, x, &bad);
    if (bad || mx == -INFINITY) return 0;
    const __m512 thr = _mm512_set1_ps(sel_thr(mx, r1));
    const __m512 xb = _mm512_set1_ps(mx);
    size_t m = 0, i = 0;
    /* 64 floats per step: most blocks of rows with spread-out logits have
     * no candidate (one test for four compares) */
    for (; i + 64 <= n; i += 64) { /* (no arrays here: GCC keeps them in memory) */
        const __m512 v0 = _mm512_loadu_ps(x + i), v1 = _mm512_loadu_ps(x + i + 16);
        const __m512 v2 = _mm512_loadu_ps(x + i + 32), v3 = _mm512_loadu_ps(x + i + 48);
        const __mmask16 k0 = _mm512_cmp_ps_mask(v0, thr, _CMP_GT_OQ), k1 = _mm512_cmp_ps_mask(v1, thr, _CMP_GT_OQ);
        const __mmask16 k2 = _mm512_cmp_ps_mask(v2, thr, _CMP_GT_OQ), k3 = _mm512_cmp_ps_mask(v3, thr, _CMP_GT_OQ);
        km[i / 16] = k0, km[i / 16 + 1] = k1, km[i / 16 + 2] = k2, km[i / 16 + 3] = k3;
        if (!(k0 | k1 | k2 | k3)) continue;
        m = take15(k0, v0, xb, dv, m);
        m = take15(k1, v1, xb, dv, m);
        m = take15(k2, v2, xb, dv, m);
        m = take15(k3, v3, xb, dv, m);
    }
    for (; i < n; i += 16) {
        const __mmask16 live = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        const __m512 v = _mm512_maskz_loadu_ps(live, x + i);
        const __mmask16 k = _mm512_mask_cmp_ps_mask(live, v, thr, _CMP_GT_OQ);
        km[i / 16] = k;
        m = take15(k, v, xb, dv, m);
    }
    _mm512_storeu_ps(dv + m, _mm512_set1_ps(-INFINITY)); /* padding for the block loops */
    *mo = m;
    return 1;
}

/* sel15 for rows of n <= 128: the row is loaded once into eight
 * registers (blocks past n masked to -inf, their address kept inside the
 * row), the max, the NaN / +inf flag
 * and the candidates taken from them (the same values as sel15). */
#define SEL15_BLOCK(b) __m512 v##b = _mm512_mask_loadu_ps(ninf, live15(n, 16 * (b)), x + (16 * (b) < n ? 16 * (b) : 0))
AI __mmask16 live15(size_t n, size_t i) {
    return i >= n ? (__mmask16)0 : n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
}
AI int sel15r(size_t n, const float *x, float *dv, __mmask16 *km, size_t *mo, int r1) {
    const __m512 ninf = _mm512_set1_ps(-INFINITY), inf = _mm512_set1_ps(INFINITY);
    SEL15_BLOCK(0); SEL15_BLOCK(1); SEL15_BLOCK(2); SEL15_BLOCK(3);
    SEL15_BLOCK(4); SEL15_BLOCK(5); SEL15_BLOCK(6); SEL15_BLOCK(7);
    const __mmask16 bad = _mm512_cmp_ps_mask(v0, inf, _CMP_NLT_UQ) | _mm512_cmp_ps_mask(v1, inf, _CMP_NLT_UQ) |
                          _mm512_cmp_ps_mask(v2, inf, _CMP_NLT_UQ) | _mm512_cmp_ps_mask(v3, inf, _CMP_NLT_UQ) |
                          _mm512_cmp_ps_mask(v4, inf, _CMP_NLT_UQ) | _mm512_cmp_ps_mask(v5, inf, _CMP_NLT_UQ) |
                          _mm512_cmp_ps_mask(v6, inf, _CMP_NLT_UQ) | _mm512_cmp_ps_mask(v7, inf, _CMP_NLT_UQ);
    const __m512 ma = _mm512_max_ps(_mm512_max_ps(v0, v1), _mm512_max_ps(v2, v3));
    const __m512 mb = _mm512_max_ps(_mm512_max_ps(v4, v5), _mm512_max_ps(v6, v7));
    const float mx = _mm512_reduce_max_ps(_mm512_max_ps(ma, mb));
    if (bad || mx == -INFINITY) return 0;
    const __m512 thr = _mm512_set1_ps(sel_thr(mx, r1));
    const __m512 xb = _mm512_set1_ps(mx);
    size_t m = 0;
#define SEL15_TAKE(b)                                                          \
    do {                                                                       \
        const __mmask16 k = _mm512_cmp_ps_mask(v##b, thr, _CMP_GT_OQ);         \
        if (16 * (b) < n) km[b] = k;                                           \
        m = take15(k, v##b, xb, dv, m);                                        \
    } while (0)
    SEL15_TAKE(0); SEL15_TAKE(1); SEL15_TAKE(2); SEL15_TAKE(3);
    SEL15_TAKE(4); SEL15_TAKE(5); SEL15_TAKE(6); SEL15_TAKE(7);
#undef SEL15_TAKE
    _mm512_storeu_ps(dv + m, _mm512_set1_ps(-INFINITY)); /* padding for the block loops */
    *mo = m;
    return 1;
}
#undef SEL15_BLOCK

/* sel15r for two rows at once (both present, n <= 128): the same values,
 * each phase of both rows side by side (two independent chains: the max
 * reductions, the thresholds, the compress-and-store sequences). */
#define SEL2_BLOCK(p, xp, b) __m512 p##b = _mm512_mask_loadu_ps(ninf, live15(n, 16 * (b)), xp + (16 * (b) < n ? 16 * (b) : 0))
#define SEL2_BAD(p)                                                                                       \
    (_mm512_cmp_ps_mask(p##0, inf, _CMP_NLT_UQ) | _mm512_cmp_ps_mask(p##1, inf, _CMP_NLT_UQ) |           \
     _mm512_cmp_ps_mask(p##2, inf, _CMP_NLT_UQ) | _mm512_cmp_ps_mask(p##3, inf, _CMP_NLT_UQ) |           \
     _mm512_cmp_ps_mask(p##4, inf, _CMP_NLT_UQ) | _mm512_cmp_ps_mask(p##5, inf, _CMP_NLT_UQ) |           \
     _mm512_cmp_ps_mask(p##6, inf, _CMP_NLT_UQ) | _mm512_cmp_ps_mask(p##7, inf, _CMP_NLT_UQ))
#define SEL2_MAX(p)                                                                                       \
    _mm512_reduce_max_ps(_mm512_max_ps(_mm512_max_ps(_mm512_max_ps(p##0, p##1), _mm512_max_ps(p##2, p##3)), \
                                       _mm512_max_ps(_mm512_max_ps(p##4, p##5), _mm512_max_ps(p##6, p##7))))
#define SEL2_TAKE(l)                                                                   \
    do {                                                                               \
        const __mmask16 ka = _mm512_cmp_ps_mask(ra##l, ta, _CMP_GT_OQ);                 \
        const __mmask16 kb = _mm512_cmp_ps_mask(rb##l, tb, _CMP_GT_OQ);                 \
        if (16 * (l) < n) km0[l] = ka, km1[l] = kb;                                    \
        ma = take15(ka, ra##l, xa, dv0, ma);                                            \
        mb = take15(kb, rb##l, xb, dv1, mb);                                            \
    } while (0)
AI void sel15r2(size_t n, const float *x0, const float *x1, float *dv0, float *dv1, __mmask16 *km0,
                __mmask16 *km1, size_t *m0, size_t *m1, int *ok, int r1) {
    const __m512 ninf = _mm512_set1_ps(-INFINITY), inf = _mm512_set1_ps(INFINITY);
    SEL2_BLOCK(ra, x0, 0); SEL2_BLOCK(ra, x0, 1); SEL2_BLOCK(ra, x0, 2); SEL2_BLOCK(ra, x0, 3);
    SEL2_BLOCK(ra, x0, 4); SEL2_BLOCK(ra, x0, 5); SEL2_BLOCK(ra, x0, 6); SEL2_BLOCK(ra, x0, 7);
    SEL2_BLOCK(rb, x1, 0); SEL2_BLOCK(rb, x1, 1); SEL2_BLOCK(rb, x1, 2); SEL2_BLOCK(rb, x1, 3);
    SEL2_BLOCK(rb, x1, 4); SEL2_BLOCK(rb, x1, 5); SEL2_BLOCK(rb, x1, 6); SEL2_BLOCK(rb, x1, 7);
    const __mmask16 bada = SEL2_BAD(ra), badb = SEL2_BAD(rb);
    const float mxa = SEL2_MAX(ra), mxb = SEL2_MAX(rb);
    ok[0] = !bada && mxa != -INFINITY, ok[1] = !badb && mxb != -INFINITY;
    /* a row not taken: its candidates are computed and ignored */
    const __m512 ta = _mm512_set1_ps(sel_thr(mxa, r1));
    const __m512 tb = _mm512_set1_ps(sel_thr(mxb, r1));
    const __m512 xa = _mm512_set1_ps(mxa), xb = _mm512_set1_ps(mxb);
    size_t ma = 0, mb = 0;
    SEL2_TAKE(0); SEL2_TAKE(1); SEL2_TAKE(2); SEL2_TAKE(3);
    SEL2_TAKE(4); SEL2_TAKE(5); SEL2_TAKE(6); SEL2_TAKE(7);
    _mm512_storeu_ps(dv0 + ma, ninf), _mm512_storeu_ps(dv1 + mb, ninf); /* padding for the block loops */
    *m0 = ma, *m1 = mb;
}
#undef SEL2_BLOCK
#undef SEL2_BAD
#undef SEL2_MAX
#undef SEL2_TAKE

/* row15 last phase: the candidates' outputs densely in double (as out15),
 * then y block by block, expanded under the kept masks. */
AI void out15r(size_t n, float *y, size_t m, const float *dv, const __mmask16 *km, float *o, double tau) {
    const __m512d vt = _mm512_set1_pd(tau), h = _mm512_set1_pd(0.5), z = _mm512_setzero_pd();
    for (size_t j = 0; j < m; j += 8) {
        const __mmask8 live = m - j >= 8 ? (__mmask8)0xff : (__mmask8)((1u << (m - j)) - 1);
        const __m512d dd = _mm512_cvtps_pd(_mm256_maskz_loadu_ps(live, dv + j));
        const __m512d w = _mm512_max_pd(_mm512_sub_pd(_mm512_mul_pd(h, dd), vt), z);
        _mm256_storeu_ps(o + j, _mm512_cvtpd_ps(_mm512_mul_pd(w, w)));
    }
    size_t pos = 0;
    for (size_t b = 0, i = 0; i < n; b++, i += 16) {
        /* blocks without candidates (most, when the logits are spread) do
         * not wait on the loads of o */
        __m512 e = _mm512_setzero_ps();
        if (km[b]) {
            __m512 ob = _mm512_loadu_ps(o + pos);
            __asm__("" : "+v"(ob)); /* keep the load apart: GCC folds it into
                                      * the expand's memory form, slow on Zen 4 */
            e = _mm512_maskz_expand_ps(km[b], ob);
        }
        if (n - i >= 16) _mm512_storeu_ps(y + i, e);
        else _mm512_mask_storeu_ps(y + i, (__mmask16)((1u << (n - i)) - 1), e);
        pos += (size_t)__builtin_popcount(km[b]);
    }
}

/*
 * row15's phases with loops of ceil(m / 16) steps and no remainder loops:
 * the trip counts of the grid1 / grid2 / sums / output loops vary from row
 * to row, and their exits were mispredicted about eight times per row
 * (n = 96 N(0,1): about 80 of 320 TSC ticks per row went there, measured
 * against rows repeated so that the predictor learns them). Now every
 * loop runs over blocks of 16, so the exits of one row's loops agree
 * (a global-history predictor follows the first), and the lists are
 * padded with -inf (adds 0 to every G, never above a threshold).
 */
AI __m256 grid_b8(size_t m, const float *v, __m256 T) {
    const __m256 z = _mm256_setzero_ps();
    __m256 g0 = z, g1 = z, g2 = z, g3 = z;
    for (size_t i = 0; i < m; i += 16) {
        for (size_t j = 0; j < 16; j += 4) {
            const __m256 w0 = _mm256_max_ps(_mm256_sub_ps(_mm256_set1_ps(v[i + j]), T), z);
            const __m256 w1 = _mm256_max_ps(_mm256_sub_ps(_mm256_set1_ps(v[i + j + 1]), T), z);
            const __m256 w2 = _mm256_max_ps(_mm256_sub_ps(_mm256_set1_ps(v[i + j + 2]), T), z);
            const __m256 w3 = _mm256_max_ps(_mm256_sub_ps(_mm256_set1_ps(v[i + j + 3]), T), z);
            g0 = _mm256_fmadd_ps(w0, w0, g0), g1 = _mm256_fmadd_ps(w1, w1, g1);
            g2 = _mm256_fmadd_ps(w2, w2, g2), g3 = _mm256_fmadd_ps(w3, w3, g3);
        }
    }
    return _mm256_add_ps(_mm256_add_ps(g0, g1), _mm256_add_ps(g2, g3));
}

AI __m512 grid_b16(size_t m, const float *v, __m512 T) {
    const __m512 z = _mm512_setzero_ps();
    __m512 g0 = z, g1 = z, g2 = z, g3 = z;
    for (size_t i = 0; i < m; i += 16) {
        for (size_t j = 0; j < 16; j += 4) {
            const __m512 w0 = _mm512_max_ps(_mm512_sub_ps(_mm512_set1_ps(v[i + j]), T), z);
            const __m512 w1 = _mm512_max_ps(_mm512_sub_ps(_mm512_set1_ps(v[i + j + 1]), T), z);
            const __m512 w2 = _mm512_max_ps(_mm512_sub_ps(_mm512_set1_ps(v[i + j + 2]), T), z);
            const __m512 w3 = _mm512_max_ps(_mm512_sub_ps(_mm512_set1_ps(v[i + j + 3]), T), z);
            g0 = _mm512_fmadd_ps(w0, w0, g0), g1 = _mm512_fmadd_ps(w1, w1, g1);
            g2 = _mm512_fmadd_ps(w2, w2, g2), g3 = _mm512_fmadd_ps(w3, w3, g3);
        }
    }
    return _mm512_add_ps(_mm512_add_ps(g0, g1), _mm512_add_ps(g2, g3));
}

/* grid1 over d padded with -inf to a multiple of 16 (as grid1). */
AI float grid1b(size_t m, const float *d) {
    const __m256 lane = _mm256_setr_ps(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256 G = grid_b8(m, d, _mm256_fmadd_ps(lane, _mm256_set1_ps(0.25f), _mm256_set1_ps(-2.0f)));
    const unsigned c = (unsigned)__builtin_popcount(_mm256_cmp_ps_mask(G, _mm256_set1_ps(4.0f), _CMP_GE_OQ));
    return -2.0f + 0.25f * (float)(c ? c - 1 : 0);
}

/* above, with v padded with -inf after its m2 entries. */
AI size_t aboveb(size_t m, const float *d, float t1, float *v) {
    const size_t m2 = above(m, d, t1, v);
    _mm512_storeu_ps(v + m2, _mm512_set1_ps(-INFINITY));
    return m2;
}

/* grid2 over v padded with -inf (as grid2). */
AI double grid2b(size_t m2, const float *v, float t1) {
    const __m512 lane = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512 G = grid_b16(m2, v, _mm512_fmadd_ps(lane, _mm512_set1_ps(1.0f / 64.0f), _mm512_set1_ps(t1)));
    const unsigned c = (unsigned)__builtin_popcount(_mm512_cmp_ps_mask(G, _mm512_set1_ps(4.0f), _CMP_GE_OQ));
    return 0.5 * ((double)t1 + (double)(c ? c - 1 : 0) / 64.0);
}

/*
 * The start of the exact Newton for two rows of at most 64 candidates
 * each (any n; flat rows up to about 300), instead of the grids: a float
 * Newton from the left on G(T) = sum (d - T)_+^2 - 4 (d units, T = 2 t)
 * over the candidates held in registers (two or four blocks of 16, -inf
 * past m), both rows' chains side by side, two passes (a fixed number: no
 * data-dependent exits; the first exact pass then settles on about 94%
 * of flat rows of n = 80, 87% from the grids) from the lanes kernels'
 * count-based start. Newton from the left stays below tau (G convex and
 * decreasing); a start above it steps back below. As with the grids, the
 * float never decides the result: the exact Newton in double takes it
 * from there (a start above tau by rounding restarts from -1), so the
 * same bits.
 */
#define NEWTON15_PASSES 2
AI float start15_count(size_t m) {
    return m >= 24 ? -1.16f : m >= 16 ? -1.28f : m >= 8 ? -1.40f : m >= 4 ? -1.64f : -2.0f;
}
AI __mmask16 live_m(size_t m, size_t i) {
    return i >= m ? (__mmask16)0 : m - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (m - i)) - 1);
}
/* The four sums of a pass (sa, qa of row a; sb, qb of row b) reduced
 * together: quad 0 of the result holds sum(sa) in every lane, quad 1
 * sum(qa), quad 2 sum(sb), quad 3 sum(qb). */
AI __m512 reduce4(__m512 sa, __m512 qa, __m512 sb, __m512 qb) {
    const __m512 u = _mm512_add_ps(_mm512_shuffle_f32x4(sa, qa, 0x44), _mm512_shuffle_f32x4(sa, qa, 0xEE));
    const __m512 v = _mm512_add_ps(_mm512_shuffle_f32x4(sb, qb, 0x44), _mm512_shuffle_f32x4(sb, qb, 0xEE));
    __m512 w = _mm512_add_ps(_mm512_shuffle_f32x4(u, v, 0x88), _mm512_shuffle_f32x4(u, v, 0xDD));
    w = _mm512_add_ps(w, _mm512_permute_ps(w, 0x4E));
    return _mm512_add_ps(w, _mm512_permute_ps(w, 0xB1));
}

/* One float Newton pass of both rows over NB blocks; T holds row a's T in
 * quads 0 and 1, row b's in quads 2 and 3. */
#define START15_PASS(NB)                                                                          \
    do {                                                                                          \
        const __m512 va = _mm512_shuffle_f32x4(T, T, 0x00), vb = _mm512_shuffle_f32x4(T, T, 0xAA); \
        __m512 sa = z, qa = z, sb = z, qb = z;                                                    \
        for (int b = 0; b < (NB); b++) {                                                          \
            const __m512 wa = _mm512_max_ps(_mm512_sub_ps(A[b], va), z);                          \
            const __m512 wb = _mm512_max_ps(_mm512_sub_ps(B[b], vb), z);                          \
            sa = _mm512_add_ps(sa, wa), qa = _mm512_fmadd_ps(wa, wa, qa);                         \
            sb = _mm512_add_ps(sb, wb), qb = _mm512_fmadd_ps(wb, wb, qb);                         \
        }                                                                                         \
        const __m512 r = reduce4(sa, qa, sb, qb);                                                 \
        const __m512 s1 = _mm512_shuffle_f32x4(r, r, 0xA0), s2 = _mm512_shuffle_f32x4(r, r, 0xF5); \
        T = _mm512_add_ps(T, _mm512_div_ps(_mm512_sub_ps(s2, four), _mm512_add_ps(s1, s1)));     \
    } while (0)

AI void start15_newton2(size_t m0, const float *d0, size_t m1, const float *d1, double *t0, double *t1) {
    const __m512 ninf = _mm512_set1_ps(-INFINITY), z = _mm512_setzero_ps(), four = _mm512_set1_ps(4.0f);
    __m512 A[4], B[4];
    const float sa0 = start15_count(m0), sb0 = start15_count(m1);
    __m512 T = _mm512_mask_blend_ps((__mmask16)0xff00, _mm512_set1_ps(sa0), _mm512_set1_ps(sb0));
    if (m0 <= 32 && m1 <= 32) {
        for (int b = 0; b < 2; b++)
            A[b] = _mm512_mask_loadu_ps(ninf, live_m(m0, 16 * (size_t)b), d0 + 16 * b),
            B[b] = _mm512_mask_loadu_ps(ninf, live_m(m1, 16 * (size_t)b), d1 + 16 * b);
        for (int it = 0; it < NEWTON15_PASSES; it++) START15_PASS(2);
    } else {
        for (int b = 0; b < 4; b++)
            A[b] = _mm512_mask_loadu_ps(ninf, live_m(m0, 16 * (size_t)b), d0 + 16 * b),
            B[b] = _mm512_mask_loadu_ps(ninf, live_m(m1, 16 * (size_t)b), d1 + 16 * b);
        for (int it = 0; it < NEWTON15_PASSES; it++) START15_PASS(4);
    }
    *t0 = 0.5 * (double)_mm512_cvtss_f32(T);
    *t1 = 0.5 * (double)_mm512_cvtss_f32(_mm512_shuffle_f32x4(T, T, 0xAA));
}
#undef START15_PASS

/*
 * row15 (sparse_kernels.h), fused, two rows at a time: each phase (the max
 * and the candidates, grid 1, the entries above its threshold, grid 2,
 * the exact Newton, the outputs) runs for both rows back to back, so
 * that the dependency chains of one row (reductions, the division and
 * square root of each pass) overlap the other's work.
 */
void sg_sparse_row15_f32__avx512_u16(size_t rows, size_t n, const float *x, size_t ldx, float *y,
                                     size_t ldy, uint8_t *taken) {
    float dv[2][SG_SPARSE_ROW15_MAX + 16], v[2][SG_SPARSE_TAU15_MAX + 16], o[SG_SPARSE_ROW15_MAX + 16];
    __mmask16 km[2][SG_SPARSE_ROW15_MAX / 16];
    if (n == 0 || n > SG_SPARSE_ROW15_MAX) {
        for (size_t r = 0; r < rows; r++) taken[r] = 0;
        return;
    }
    for (size_t r = 0; r < rows; r += 2) {
        const size_t nr = rows - r >= 2 ? 2 : 1;
        size_t m[2] = {0, 0}, m2[2] = {0, 0};
        int ok[2] = {0, 0}, grid[2] = {0, 0};
        float t1[2] = {0.0f, 0.0f};
        double t[2] = {-1.0, -1.0}, tau[2] = {0.0, 0.0};
        if (nr == 2 && n <= 128) {
            sel15r2(n, x + r * ldx, x + (r + 1) * ldx, dv[0], dv[1], km[0], km[1], &m[0], &m[1], ok, 0);
        } else {
            for (size_t q = 0; q < nr; q++)
                ok[q] = n <= 128 ? sel15r(n, x + (r + q) * ldx, dv[q], km[q], &m[q], 0)
                               : sel15(n, x + (r + q) * ldx, dv[q], km[q], &m[q], 0);
        }
        for (size_t q = 0; q < nr; q++)
            grid[q] = ok[q] && m[q] > SG_SPARSE_SUMS_INLINE && m[q] <= SG_SPARSE_TAU15_MAX;
        /* the float start for every row of <= 64 candidates, whatever its
         * partner (a row alone goes with itself: each row's start comes
         * from its own sums only), so that a row's bits never depend on
         * its neighbour, ties at tau included */
        const int fs0 = grid[0] && m[0] <= 64, fs1 = nr == 2 && grid[1] && m[1] <= 64;
        if (fs0 && fs1) {
            start15_newton2(m[0], dv[0], m[1], dv[1], &t[0], &t[1]);
        } else if (fs0 || fs1) {
            const size_t q = fs0 ? 0 : 1;
            double t_twin;
            start15_newton2(m[q], dv[q], m[q], dv[q], &t[q], &t_twin);
        }
        if (fs0) grid[0] = 2; /* started: no grids */
        if (fs1) grid[1] = 2;
        for (size_t q = 0; q < nr; q++)
            if (grid[q] == 1) t1[q] = grid1b(m[q], dv[q]);
        for (size_t q = 0; q < nr; q++)
            if (grid[q] == 1) m2[q] = aboveb(m[q], dv[q], t1[q], v[q]);
        for (size_t q = 0; q < nr; q++)
            if (grid[q] == 1) t[q] = grid2b(m2[q], v[q], t1[q]);
        if (nr == 2 && grid[0] && grid[1]) {
            /* the first exact passes of both rows side by side (each a
             * chain of reductions, a division and a square root; most
             * rows settle there), then newton15_from's loop for a row
             * that did not */
            sg_sparse_sums a0, a1;
            double nx0 = 0.0, nx1 = 0.0;
            sums16(m[0], dv[0], 0.5, t[0], &a0);
            sums16(m[1], dv[1], 0.5, t[1], &a1);
            if (!sg_entmax15_step(&a0, t[0], &tau[0], &nx0)) tau[0] = newton15_next(m[0], dv[0], t[0], nx0);
            if (!sg_entmax15_step(&a1, t[1], &tau[1], &nx1)) tau[1] = newton15_next(m[1], dv[1], t[1], nx1);
        } else {
            for (size_t q = 0; q < nr; q++)
                if (ok[q])
                    tau[q] = m[q] <= SG_SPARSE_SUMS_INLINE ? newton15_small(m[q], dv[q])
                                                           : newton15_from(m[q], dv[q], t[q]);
        }
        for (size_t q = 0; q < nr; q++) {
            taken[r + q] = ok[q] && tau[q] != 0.0;
            if (taken[r + q]) out15r(n, y + (r + q) * ldy, m[q], dv[q], km[q], o, tau[q]);
        }
    }
}

/* rowsm: the sums of the sparsemax op's solver (sg_sparse_sums_run at
 * this level: the inline scalar loop up to SG_SPARSE_SUMS_INLINE, else the
 * sums kernel), so the same bits. */
AI void sums_sm(size_t m, const float *d, double t, sg_sparse_sums *out) {
    if (m > SG_SPARSE_SUMS_INLINE) {
        /* sums16's count and sum alone (Michelot needs no more): the same
         * accumulators, lanes and reduction, so the same bits of s1 */
        const __m512d vt = _mm512_set1_pd(t);
        __m512d s1a = _mm512_setzero_pd(), s1b = s1a;
        size_t k = 0, i = 0;
        for (; i + 16 <= m; i += 16) {
            __m512d u = _mm512_cvtps_pd(_mm256_loadu_ps(d + i));
            __m512d v = _mm512_cvtps_pd(_mm256_loadu_ps(d + i + 8));
            __mmask8 mu = _mm512_cmp_pd_mask(u, vt, _CMP_GT_OQ), mv = _mm512_cmp_pd_mask(v, vt, _CMP_GT_OQ);
            k += (size_t)__builtin_popcount(mu) + (size_t)__builtin_popcount(mv);
            s1a = _mm512_mask_add_pd(s1a, mu, s1a, u), s1b = _mm512_mask_add_pd(s1b, mv, s1b, v);
        }
        for (; i < m; i += 8) {
            const __mmask8 live = m - i >= 8 ? (__mmask8)0xff : (__mmask8)((1u << (m - i)) - 1);
            __m512d u = _mm512_cvtps_pd(_mm256_maskz_loadu_ps(live, d + i));
            __mmask8 mu = _mm512_mask_cmp_pd_mask(live, u, vt, _CMP_GT_OQ);
            k += (size_t)__builtin_popcount(mu);
            s1a = _mm512_mask_add_pd(s1a, mu, s1a, u);
        }
        out->k = k;
        out->s1 = _mm512_reduce_add_pd(_mm512_add_pd(s1a, s1b));
        return;
    }
    sg_sparse_sums a = {0, 0.0, 0.0, INFINITY, -INFINITY};
    for (size_t i = 0; i < m; i++) {
        const double u = (double)d[i];
        if (u > t) {
            a.k++, a.s1 += u, a.s2 += u * u;
            if (u < a.min_in) a.min_in = u;
        } else if (u > a.max_out) {
            a.max_out = u;
        }
    }
    *out = a;
}

/* rowsm last phase: y = max(d - tau, 0) in double for the candidates
 * (sg_relu's values), expanded under the kept masks (as out15r). */
AI void outsm(size_t n, float *y, size_t m, const float *dv, const __mmask16 *km, float *o, double tau) {
    const __m512d vt = _mm512_set1_pd(tau), z = _mm512_setzero_pd();
    for (size_t j = 0; j < m; j += 8) {
        const __mmask8 live = m - j >= 8 ? (__mmask8)0xff : (__mmask8)((1u << (m - j)) - 1);
        const __m512d dd = _mm512_cvtps_pd(_mm256_maskz_loadu_ps(live, dv + j));
        _mm256_storeu_ps(o + j, _mm512_cvtpd_ps(_mm512_max_pd(_mm512_sub_pd(dd, vt), z)));
    }
    size_t pos = 0;
    for (size_t b = 0, i = 0; i < n; b++, i += 16) {
        __m512 e = _mm512_setzero_ps();
        if (km[b]) {
            __m512 ob = _mm512_loadu_ps(o + pos);
            __asm__("" : "+v"(ob)); /* as out15r */
            e = _mm512_maskz_expand_ps(km[b], ob);
        }
        if (n - i >= 16) _mm512_storeu_ps(y + i, e);
        else _mm512_mask_storeu_ps(y + i, (__mmask16)((1u << (n - i)) - 1), e);
        pos += (size_t)__builtin_popcount(km[b]);
    }
}

/*
 * rowsm's shortcut for SG_SPARSE_SUMS_INLINE < m <= 16 candidates (dv
 * padded with -inf to 16): the support proposed in float by the short-row
 * test (j in S iff sum_i (d_i - d_j)_+ < 1; each candidate broadcast
 * against the register), then tau = (sum_S d - 1) / |S| with the sum in
 * the order of sums16 over such a list (lane l holds d_l + d_{8+l} under
 * the mask, then the same reduction): the bits Michelot's last pass gets
 * over the same set. Michelot from -1 stops at a set passing the exact
 * check (min_S d > tau >= max of the rest) and two sets can both pass only
 * with entries within rounding of tau; so the shortcut requires a margin
 * of 1e-12 (d in [-1, 0], m <= 16: tau's error is below 1e-14) on both
 * sides, and then its set is Michelot's, hence the same tau. 0: no
 * verdict (the caller runs Michelot).
 */
AI int rowsm_short(size_t m, const float *dv, double *tau) {
    const __m512 d = _mm512_loadu_ps(dv), z = _mm512_setzero_ps();
    __m512 f0 = z, f1 = z;
    size_t i = 0;
    for (; i + 2 <= m; i += 2) {
        const __m512 b0 = _mm512_permutexvar_ps(_mm512_set1_epi32((int)i), d);
        const __m512 b1 = _mm512_permutexvar_ps(_mm512_set1_epi32((int)i + 1), d);
        f0 = _mm512_add_ps(f0, _mm512_max_ps(_mm512_sub_ps(b0, d), z));
        f1 = _mm512_add_ps(f1, _mm512_max_ps(_mm512_sub_ps(b1, d), z));
    }
    if (i < m) f0 = _mm512_add_ps(f0, _mm512_max_ps(_mm512_sub_ps(_mm512_permutexvar_ps(_mm512_set1_epi32((int)i), d), d), z));
    const __mmask16 live = m >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << m) - 1);
    const __mmask16 sup = _mm512_mask_cmp_ps_mask(live, _mm512_add_ps(f0, f1), _mm512_set1_ps(1.0f), _CMP_LT_OQ);
    const __mmask8 sl = (__mmask8)sup, sh = (__mmask8)(sup >> 8);
    const __mmask8 ol = (__mmask8)(live & ~sup), oh = (__mmask8)((live & ~sup) >> 8);
    const __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(d));
    const __m512d hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(d), 1)));
    const __m512d acc = _mm512_add_pd(_mm512_maskz_mov_pd(sl, lo), _mm512_maskz_mov_pd(sh, hi));
    const double s1 = _mm512_reduce_add_pd(_mm512_add_pd(acc, _mm512_setzero_pd()));
    const double t = (s1 - 1.0) / (double)__builtin_popcount(sup);
    const __m512d up = _mm512_set1_pd(t + 1e-12), dn = _mm512_set1_pd(t - 1e-12);
    if (_mm512_mask_cmp_pd_mask(sl, lo, up, _CMP_GT_OQ) != sl || _mm512_mask_cmp_pd_mask(sh, hi, up, _CMP_GT_OQ) != sh ||
        _mm512_mask_cmp_pd_mask(ol, lo, dn, _CMP_LE_OQ) != ol || _mm512_mask_cmp_pd_mask(oh, hi, dn, _CMP_LE_OQ) != oh)
        return 0;
    *tau = t;
    return 1;
}

/*
 * rowsm (sparse_kernels.h), fused, two rows at a time: the max, flag and
 * candidates (radius 1) from registers for n <= 128 (sel15r2 / sel15r),
 * else sel15; then Michelot's iteration from -1 of both rows side by
 * side (each pass a chain of reductions and a division), exactly the op's
 * solve_tau_array (same sums, same stop), so the same tau; the outputs.
 */
#define ROWSM_MAX_ITER 32 /* sparsemax.c's MICHELOT_MAX_ITER */
void sg_sparse_rowsm_f32__avx512_u16(size_t rows, size_t n, const float *x, size_t ldx, float *y,
                                     size_t ldy, uint8_t *taken) {
    float dv[2][SG_SPARSE_ROW15_MAX + 16], o[SG_SPARSE_ROW15_MAX + 16];
    __mmask16 km[2][SG_SPARSE_ROW15_MAX / 16];
    if (n == 0 || n > SG_SPARSE_ROW15_MAX) {
        for (size_t r = 0; r < rows; r++) taken[r] = 0;
        return;
    }
    for (size_t r = 0; r < rows; r += 2) {
        const size_t nr = rows - r >= 2 ? 2 : 1;
        size_t m[2] = {0, 0}, k[2] = {0, 0};
        int ok[2] = {0, 0}, live[2] = {0, 0};
        double tau[2] = {0.0, 0.0};
        if (nr == 2 && n <= 128) {
            sel15r2(n, x + r * ldx, x + (r + 1) * ldx, dv[0], dv[1], km[0], km[1], &m[0], &m[1], ok, 1);
        } else {
            for (size_t q = 0; q < nr; q++)
                ok[q] = n <= 128 ? sel15r(n, x + (r + q) * ldx, dv[q], km[q], &m[q], 1)
                                 : sel15(n, x + (r + q) * ldx, dv[q], km[q], &m[q], 1);
        }
        for (size_t q = 0; q < nr; q++)
            if (ok[q] && m[q] > SG_SPARSE_SUMS_INLINE && m[q] <= 16 && rowsm_short(m[q], dv[q], &tau[q]))
                ok[q] = 2; /* settled */
        for (size_t q = 0; q < nr; q++) {
            if (ok[q] != 1) continue;
            sg_sparse_sums a;
            sums_sm(m[q], dv[q], -1.0, &a);
            k[q] = a.k, tau[q] = (a.s1 - 1.0) / (double)a.k, live[q] = 1;
        }
        for (int it = 0; it < ROWSM_MAX_ITER && (live[0] || live[1]); it++) {
            for (size_t q = 0; q < 2; q++) {
                if (!live[q]) continue;
                sg_sparse_sums a;
                sums_sm(m[q], dv[q], tau[q], &a);
                if (a.k == k[q]) {
                    live[q] = 0, ok[q] = 2; /* settled */
                    continue;
                }
                k[q] = a.k, tau[q] = (a.s1 - 1.0) / (double)a.k;
            }
        }
        for (size_t q = 0; q < nr; q++) {
            taken[r + q] = ok[q] == 2;
            if (taken[r + q]) outsm(n, y + (r + q) * ldy, m[q], dv[q], km[q], o, tau[q]);
        }
    }
}
#undef ROWSM_MAX_ITER

/* The short-row path (contract in sparse_kernels.h): a row of up to 32 in
 * two registers of floats; f_j for all j at once by broadcasting each u_i
 * against the row (u_j in the lanes: no horizontal sums), in float. Only
 * the candidates u_i > -1 are broadcast: any u_j <= -1 has f_j >= 1 from
 * the max alone (u = 0), and an entry u_i <= -1 adds to f_j only for
 * such j; they are compressed to the front of a buffer first, so a row
 * costs (candidates) x (1 or 2 registers) steps. The support {f_j < 1}
 * then goes to double lanes for tau and the exact check, and y is
 * computed in double as the general path does. */
static inline __m512 f_term(__m512 b, __m512 u, int entmax) {
    const __m512 w = _mm512_max_ps(_mm512_sub_ps(b, u), _mm512_setzero_ps());
    return entmax ? _mm512_mul_ps(w, w) : w;
}

/* The double part of the short-row path over nq registers of 8 (1, 2 or 4,
 * a constant after inlining): tau from the support's sums, the exact
 * check, y. d: the row's d in floats (two registers), sup/live: masks. */
static inline __attribute__((always_inline)) int short_tail(int nq, const __m512 d[2],
                                                              const __mmask16 sup[2],
                                                              const __mmask16 live[2], int entmax,
                                                              float *y) {
    const __m512d hd = _mm512_set1_pd(entmax ? 0.5 : 1.0);
    __m512d u[4];
    __mmask8 s[4], a[4];
    for (int q = 0; q < nq; q++) {
        const __m512 v = d[q / 2];
        const __m256 h = q % 2 ? _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))
                               : _mm512_castps512_ps256(v);
        u[q] = _mm512_mul_pd(_mm512_cvtps_pd(h), hd);
        s[q] = (__mmask8)(sup[q / 2] >> (8 * (q % 2)));
        a[q] = (__mmask8)(live[q / 2] >> (8 * (q % 2)));
    }
    __m512d sum = _mm512_maskz_mov_pd(s[0], u[0]), sq = _mm512_maskz_mul_pd(s[0], u[0], u[0]);
    int kk = __builtin_popcount(s[0]);
    for (int q = 1; q < nq; q++) {
        sum = _mm512_add_pd(sum, _mm512_maskz_mov_pd(s[q], u[q]));
        if (entmax) sq = _mm512_add_pd(sq, _mm512_maskz_mul_pd(s[q], u[q], u[q]));
        kk += __builtin_popcount(s[q]);
    }
    const double s1 = _mm512_reduce_add_pd(sum), k = (double)kk;
    double tau;
    if (entmax) {
        const double s2 = _mm512_reduce_add_pd(sq), mean = s1 / k, ss = s2 - s1 * mean;
        const double delta = (1.0 - (ss > 0.0 ? ss : 0.0)) / k;
        if (!(delta >= 0.0)) return 0;
        tau = mean - sqrt(delta);
    } else {
        tau = (s1 - 1.0) / k;
    }
    /* the exact check: inside > tau, outside (live lanes) <= tau */
    const __m512d vt = _mm512_set1_pd(tau), zd = _mm512_setzero_pd();
    int off = 0;
    for (int q = 0; q < nq; q++) off |= _mm512_mask_cmp_pd_mask(a[q], u[q], vt, _CMP_GT_OQ) != s[q];
    if (off) return 0;
    for (int q = 0; q < nq; q++) {
        __m512d w = _mm512_max_pd(_mm512_sub_pd(u[q], vt), zd);
        if (entmax) w = _mm512_mul_pd(w, w);
        if (q == 0 || a[q]) _mm256_mask_storeu_ps(y + 8 * q, a[q], _mm512_cvtpd_ps(w));
    }
    return 1;
}

int sg_sparse_short_row_f32__avx512_n32(size_t n, const float *x, int entmax, float *y) {
    const __mmask16 l0 = n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1);
    const __mmask16 l1 = n >= 32 ? (__mmask16)0xffff : n > 16 ? (__mmask16)((1u << (n - 16)) - 1) : 0;
    const __m512 inf = _mm512_set1_ps(INFINITY), ninf = _mm512_set1_ps(-INFINITY);
    const __m512 xa = _mm512_maskz_loadu_ps(l0, x), xb = _mm512_maskz_loadu_ps(l1, x + 16);
    /* |x| < inf fails for NaN and +-inf */
    if (_mm512_mask_cmp_ps_mask(l0, _mm512_abs_ps(xa), inf, _CMP_LT_OQ) != l0 ||
        _mm512_mask_cmp_ps_mask(l1, _mm512_abs_ps(xb), inf, _CMP_LT_OQ) != l1)
        return 0;
    const float m = _mm512_reduce_max_ps(
        _mm512_max_ps(_mm512_mask_mov_ps(ninf, l0, xa), _mm512_mask_mov_ps(ninf, l1, xb)));
    const __m512 vm = _mm512_set1_ps(m), lo = _mm512_set1_ps(-4.0f);
    const __m512 h = _mm512_set1_ps(entmax ? 0.5f : 1.0f);
    /* d = x - m correctly rounded, clamped at -4 (never in a support) */
    const __m512 da = _mm512_max_ps(_mm512_sub_ps(xa, vm), lo);
    const __m512 db = _mm512_max_ps(_mm512_sub_ps(xb, vm), lo);
    const __m512 ua = _mm512_mul_ps(da, h), ub = _mm512_mul_ps(db, h);
    /* the candidates u > -1, compressed to the front of buf */
    const __m512 m1 = _mm512_set1_ps(-1.0f);
    const __mmask16 ca = _mm512_mask_cmp_ps_mask(l0, ua, m1, _CMP_GT_OQ);
    const __mmask16 cb = _mm512_mask_cmp_ps_mask(l1, ub, m1, _CMP_GT_OQ);
    /* Broadcasts from registers (a vector store then scalar loads of it
     * would stall store forwarding): n itself up to 16 (two
     * accumulators); beyond, the candidates, compressed into two
     * registers and picked with a two-source permute. */
    const __m512 one = _mm512_set1_ps(1.0f);
    __m512 fa = _mm512_setzero_ps(), fb = fa;
    __mmask16 sa, sb = 0;
    if (!l1) {
        __m512 ga = fa;
        size_t i = 0;
        for (; i + 2 <= n; i += 2) {
            const __m512 b0 = _mm512_permutexvar_ps(_mm512_set1_epi32((int)i), ua);
            const __m512 b1 = _mm512_permutexvar_ps(_mm512_set1_epi32((int)i + 1), ua);
            fa = _mm512_add_ps(fa, f_term(b0, ua, entmax)), ga = _mm512_add_ps(ga, f_term(b1, ua, entmax));
        }
        if (i < n) fa = _mm512_add_ps(fa, f_term(_mm512_permutexvar_ps(_mm512_set1_epi32((int)i), ua), ua, entmax));
        fa = _mm512_add_ps(fa, ga);
    } else {
        const int c0 = __builtin_popcount(ca), c = c0 + __builtin_popcount(cb);
        const __m512 pa = _mm512_maskz_compress_ps(ca, ua), pb = _mm512_maskz_compress_ps(cb, ub);
        for (int i = 0; i < c; i++) {
            const __m512i id = _mm512_set1_epi32(i < c0 ? i : i - c0 + 16);
            const __m512 bi = _mm512_permutex2var_ps(pa, id, pb);
            fa = _mm512_add_ps(fa, f_term(bi, ua, entmax)), fb = _mm512_add_ps(fb, f_term(bi, ub, entmax));
        }
    }
    sa = _mm512_mask_cmp_ps_mask(ca, fa, one, _CMP_LT_OQ);
    if (l1) sb = _mm512_mask_cmp_ps_mask(cb, fb, one, _CMP_LT_OQ);
    const __m512 d2[2] = {da, db};
    const __mmask16 sup[2] = {sa, sb}, live[2] = {l0, l1};
    if (n <= 8) return short_tail(1, d2, sup, live, entmax, y);
    if (n <= 16) return short_tail(2, d2, sup, live, entmax, y);
    return short_tail(4, d2, sup, live, entmax, y);
}

#define SHORT_GRP_CAP SG_SPARSE_MID_OPS
#include "normalizers/sparse_avx512_short.inc"

/* Each (layout, proposal, op) its own function; the common width N
 * (8, 16, 32) with n a constant, so that the loops over entries unroll. */
#define SHORT_BLOCKS(name, W, iter, entmax, N)                                                   \
    static void name(size_t rows, size_t n, const float *x, size_t ldx, float *y, size_t ldy,  \
                     uint8_t *taken) {                                                          \
        if (N && n == N) short_blocks(W, iter, entmax, rows, N, x, ldx, y, ldy, taken);         \
        else short_blocks(W, iter, entmax, rows, n, x, ldx, y, ldy, taken);                     \
    }
SHORT_BLOCKS(blocks8_sm, 8, 0, 0, 8)
SHORT_BLOCKS(blocks8_em, 8, 0, 1, 8)
SHORT_BLOCKS(blocks16_sm, 16, 1, 0, 16)
SHORT_BLOCKS(blocks16_em, 16, 1, 1, 16)
SHORT_BLOCKS(blocks32_sm, 32, 1, 0, 32)
SHORT_BLOCKS(blocks32_em, 32, 1, 1, 32)
SHORT_BLOCKS(blocks_mid_sm, 0, 1, 0, 0)
SHORT_BLOCKS(blocks_mid_em, 0, 1, 1, 0)

void sg_sparse_short_rows_f32__avx512_r16(size_t rows, size_t n, const float *x, size_t ldx,
                                          float *y, size_t ldy, int entmax, uint8_t *taken) {
    if (n <= 8) (entmax ? blocks8_em : blocks8_sm)(rows, n, x, ldx, y, ldy, taken);
    else if (n <= 16) (entmax ? blocks16_em : blocks16_sm)(rows, n, x, ldx, y, ldy, taken);
    else (entmax ? blocks32_em : blocks32_sm)(rows, n, x, ldx, y, ldy, taken);
}

/* Rows of SG_SPARSE_SHORT_MAX < n <= SG_SPARSE_MID_MAX: the same across
 * lanes, 16 columns per transpose (sparse_kernels.h, mid_rows); rows of
 * more than SG_SPARSE_MID_OPS in sparse_wide_avx512.c (wider groups). */
void sg_sparse_wide_rows_f32__avx512(size_t rows, size_t n, const float *x, size_t ldx, float *y,
                                     size_t ldy, int entmax, uint8_t *taken);
void sg_sparse_mid_rows_f32__avx512_r16(size_t rows, size_t n, const float *x, size_t ldx,
                                        float *y, size_t ldy, int entmax, uint8_t *taken) {
    if (n > SG_SPARSE_MID_OPS) sg_sparse_wide_rows_f32__avx512(rows, n, x, ldx, y, ldy, entmax, taken);
    else (entmax ? blocks_mid_em : blocks_mid_sm)(rows, n, x, ldx, y, ldy, taken);
}

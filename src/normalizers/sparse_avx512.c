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
void sg_sparse_sums_f32__avx512_u16(size_t n, const float *d, double scale, double t,
                                    sg_sparse_sums *out) {
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

/* 16 x 16 transpose in registers (unpacks, then 128-bit lane shuffles). */
static inline void tr16(__m512 r[16]) {
    __m512 t[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) {
        r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[4 * i]), _mm512_castps_pd(t[4 * i + 2])));
        r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[4 * i]), _mm512_castps_pd(t[4 * i + 2])));
        r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[4 * i + 1]), _mm512_castps_pd(t[4 * i + 3])));
        r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[4 * i + 1]), _mm512_castps_pd(t[4 * i + 3])));
    }
    for (int i = 0; i < 4; i++) {
        t[i] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0x88);
        t[i + 4] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0xdd);
        t[i + 8] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0x88);
        t[i + 12] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0xdd);
    }
    for (int i = 0; i < 4; i++) {
        r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
        r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
        r[i + 4] = _mm512_shuffle_f32x4(t[i + 4], t[i + 12], 0x88);
        r[i + 12] = _mm512_shuffle_f32x4(t[i + 4], t[i + 12], 0xdd);
    }
}
/*
 * short_rows: rows of n <= 16 across lanes, 16 rows per block (a partial
 * block masked): 16 rows loaded and transposed in registers, entry i of
 * the 16 rows in one register (gathers and scatters are slow on some
 * cores: most of the time on Zen 4), so every
 * step is vertical and a block has no horizontal reduction and no
 * data-dependent branch. The arithmetic is the reference kernel's, lane
 * by lane (f_j in float only proposes the support; tau's sums in double in
 * the order j = 0..n-1, as the reference), so a row gets the reference's
 * bits whatever its position. Longer rows (or strides beyond int32
 * offsets) go row by row to the short_row kernel.
 */
static inline __attribute__((always_inline)) void short_rows16(size_t rows, size_t n,
                                                                const float *x, size_t ldx, float *y,
                                                                size_t ldy, const int entmax,
                                                                uint8_t *taken) {
    const __mmask16 nm = n == 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1);
    const __m512 inf = _mm512_set1_ps(INFINITY), lo = _mm512_set1_ps(-4.0f), zf = _mm512_setzero_ps();
    const __m512 hf = _mm512_set1_ps(entmax ? 0.5f : 1.0f), onef = _mm512_set1_ps(1.0f);
    const __m512d hd = _mm512_set1_pd(entmax ? 0.5 : 1.0), zd = _mm512_setzero_pd();
    const __m512d oned = _mm512_set1_pd(1.0);
    for (size_t r0 = 0; r0 < rows; r0 += 16) {
        const size_t nr = rows - r0 < 16 ? rows - r0 : 16;
        const __mmask16 lm = nr == 16 ? (__mmask16)0xffff : (__mmask16)((1u << nr) - 1);
        __m512 X[16], U[16];
        for (size_t l = 0; l < 16; l++)
            X[l] = l < nr ? _mm512_maskz_loadu_ps(nm, x + (r0 + l) * ldx) : zf;
        tr16(X);
        __m512 m = _mm512_set1_ps(-INFINITY);
        __mmask16 bad = 0;
        for (size_t i = 0; i < n; i++) {
            bad |= _mm512_cmp_ps_mask(_mm512_abs_ps(X[i]), inf, _CMP_NLT_UQ);
            m = _mm512_max_ps(m, X[i]);
        }
        __mmask16 live = lm & (__mmask16)~bad;
        for (size_t i = 0; i < n; i++) U[i] = _mm512_mul_ps(_mm512_max_ps(_mm512_sub_ps(X[i], m), lo), hf);
        /* support proposal, then tau in double (two halves of 8 rows) */
        __mmask16 S[16];
        __m512d s1l = zd, s1h = zd, s2l = zd, s2h = zd, kl = zd, kh = zd;
        for (size_t j = 0; j < n; j++) {
            __m512 f0 = zf, f1 = zf;
            size_t i = 0;
            for (; i + 2 <= n; i += 2) {
                const __m512 w0 = _mm512_max_ps(_mm512_sub_ps(U[i], U[j]), zf);
                const __m512 w1 = _mm512_max_ps(_mm512_sub_ps(U[i + 1], U[j]), zf);
                f0 = _mm512_add_ps(f0, entmax ? _mm512_mul_ps(w0, w0) : w0);
                f1 = _mm512_add_ps(f1, entmax ? _mm512_mul_ps(w1, w1) : w1);
            }
            if (i < n) {
                const __m512 w0 = _mm512_max_ps(_mm512_sub_ps(U[i], U[j]), zf);
                f0 = _mm512_add_ps(f0, entmax ? _mm512_mul_ps(w0, w0) : w0);
            }
            S[j] = _mm512_mask_cmp_ps_mask(live, _mm512_add_ps(f0, f1), onef, _CMP_LT_OQ);
            /* u_j in double: h * d_j (d_j = U_j / h exactly) */
            const __m512 d = _mm512_max_ps(_mm512_sub_ps(X[j], m), lo);
            const __m512d ul = _mm512_mul_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(d)), hd);
            const __m512d uh = _mm512_mul_pd(
                _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(d), 1))), hd);
            const __mmask8 ml = (__mmask8)S[j], mh = (__mmask8)(S[j] >> 8);
            s1l = _mm512_mask_add_pd(s1l, ml, s1l, ul), s1h = _mm512_mask_add_pd(s1h, mh, s1h, uh);
            s2l = _mm512_mask_add_pd(s2l, ml, s2l, _mm512_mul_pd(ul, ul));
            s2h = _mm512_mask_add_pd(s2h, mh, s2h, _mm512_mul_pd(uh, uh));
            kl = _mm512_mask_add_pd(kl, ml, kl, oned), kh = _mm512_mask_add_pd(kh, mh, kh, oned);
        }
        __m512d tl, th;
        __mmask16 ok = live;
        if (entmax) {
            const __m512d mnl = _mm512_div_pd(s1l, kl), mnh = _mm512_div_pd(s1h, kh);
            const __m512d ssl = _mm512_max_pd(_mm512_sub_pd(s2l, _mm512_mul_pd(s1l, mnl)), zd);
            const __m512d ssh = _mm512_max_pd(_mm512_sub_pd(s2h, _mm512_mul_pd(s1h, mnh)), zd);
            const __m512d dl = _mm512_div_pd(_mm512_sub_pd(oned, ssl), kl);
            const __m512d dh = _mm512_div_pd(_mm512_sub_pd(oned, ssh), kh);
            ok &= (__mmask16)(_mm512_cmp_pd_mask(dl, zd, _CMP_GE_OQ) |
                              ((unsigned)_mm512_cmp_pd_mask(dh, zd, _CMP_GE_OQ) << 8));
            tl = _mm512_sub_pd(mnl, _mm512_sqrt_pd(_mm512_max_pd(dl, zd)));
            th = _mm512_sub_pd(mnh, _mm512_sqrt_pd(_mm512_max_pd(dh, zd)));
        } else {
            tl = _mm512_div_pd(_mm512_sub_pd(s1l, oned), kl);
            th = _mm512_div_pd(_mm512_sub_pd(s1h, oned), kh);
        }
        /* the exact check, then y */
        __m512 Y[16];
        for (size_t j = 0; j < n; j++) {
            const __m512 d = _mm512_max_ps(_mm512_sub_ps(X[j], m), lo);
            const __m512d ul = _mm512_mul_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(d)), hd);
            const __m512d uh = _mm512_mul_pd(
                _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(d), 1))), hd);
            const __mmask16 g = (__mmask16)(_mm512_cmp_pd_mask(ul, tl, _CMP_GT_OQ) |
                                            ((unsigned)_mm512_cmp_pd_mask(uh, th, _CMP_GT_OQ) << 8));
            ok &= (__mmask16)~(g ^ S[j]);
            __m512d wl = _mm512_max_pd(_mm512_sub_pd(ul, tl), zd), wh = _mm512_max_pd(_mm512_sub_pd(uh, th), zd);
            if (entmax) wl = _mm512_mul_pd(wl, wl), wh = _mm512_mul_pd(wh, wh);
            Y[j] = _mm512_insertf32x8(_mm512_castps256_ps512(_mm512_cvtpd_ps(wl)), _mm512_cvtpd_ps(wh), 1);
        }
        for (size_t j = n; j < 16; j++) Y[j] = zf;
        tr16(Y);
        for (size_t q = 0; q < nr; q++) {
            taken[r0 + q] = (uint8_t)((ok >> q) & 1u);
            if ((ok >> q) & 1u) _mm512_mask_storeu_ps(y + (r0 + q) * ldy, nm, Y[q]);
        }
    }
}

void sg_sparse_short_rows_f32__avx512_r16(size_t rows, size_t n, const float *x, size_t ldx,
                                          float *y, size_t ldy, int entmax, uint8_t *taken) {
    if (n > 16) {
        for (size_t r = 0; r < rows; r++)
            taken[r] = (uint8_t)sg_sparse_short_row_f32__avx512_n32(n, x + r * ldx, entmax, y + r * ldy);
    } else if (entmax) {
        short_rows16(rows, n, x, ldx, y, ldy, 1, taken); /* constant: no branch inside */
    } else {
        short_rows16(rows, n, x, ldx, y, ldy, 0, taken);
    }
}

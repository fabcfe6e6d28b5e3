/*
 * topk_rows_avx512.c - route.topk_rows in AVX-512 (contract in
 * route_kernels.h, reference sg_route_topk_rows__ref): the top-k of 16
 * rows at once, one row per lane. Each block of 16 experts of the 16 rows
 * is transposed in registers (64 shuffles), so that a vector holds one
 * expert's logit for every row; the experts then pass, in index order,
 * through k sorted levels (value, id) per lane: a key moves into level j
 * where it beats level j strictly and not level j - 1, the levels below
 * shift down. Strict compares in index order keep ties in index order,
 * exactly the reference's rule; no branch depends on the data, no scalar
 * pass per row, no separate NaN scan (an unordered compare per vector
 * collects the NaN rows), and the exponent arguments of the renormalized
 * softmax are formed in the same registers. Rows whose k-th key is -inf
 * (the reference fills with -inf keys by index) or whose largest is
 * +-inf, and NaN rows, are left to the caller.
 */
#include <immintrin.h>
#include <math.h>

#include "route/route_internal.h"
#include "route/route_kernels.h"

/* 16 x 16 transpose in registers: r[i] lane q -> r[q] lane i. */
static inline __attribute__((always_inline)) void transpose16(__m512 *r) {
    __m512 t[16], u[16];
    #pragma GCC unroll 16
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    #pragma GCC unroll 16
    for (int i = 0; i < 4; i++) {
        const __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 1]);
        const __m512d c = _mm512_castps_pd(t[4 * i + 2]), d = _mm512_castps_pd(t[4 * i + 3]);
        u[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        u[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        u[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
        u[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
    /* u[4i + m], 128-bit lane L: rows 4i..4i+3 of column 4L + m */
    #pragma GCC unroll 16
    for (int m = 0; m < 4; m++) {
        const __m512 p0 = _mm512_shuffle_f32x4(u[m], u[4 + m], 0x88);
        const __m512 p1 = _mm512_shuffle_f32x4(u[m], u[4 + m], 0xDD);
        const __m512 q0 = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0x88);
        const __m512 q1 = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0xDD);
        r[m] = _mm512_shuffle_f32x4(p0, q0, 0x88);
        r[8 + m] = _mm512_shuffle_f32x4(p0, q0, 0xDD);
        r[4 + m] = _mm512_shuffle_f32x4(p1, q1, 0x88);
        r[12 + m] = _mm512_shuffle_f32x4(p1, q1, 0xDD);
    }
}

/* k (a constant after inlining) sorted levels per lane. s[j] = v > b[j]
 * is monotone in j (b[j - 1] >= b[j]), so level j takes b[j - 1] where
 * s[j - 1], else v where s[j], else keeps its pair. */
static inline __attribute__((always_inline)) void insert_levels(__m512 v, __m512i vi, __m512 *b, __m512i *id,
                                                                const size_t k) {
    __mmask16 s[16];
    #pragma GCC unroll 16
    for (size_t j = 0; j < k; j++) s[j] = _mm512_cmp_ps_mask(v, b[j], _CMP_GT_OQ);
    #pragma GCC unroll 16
    for (size_t j = k - 1; j > 0; j--) {
        b[j] = _mm512_max_ps(b[j], _mm512_min_ps(v, b[j - 1]));
        id[j] = _mm512_mask_mov_epi32(id[j], s[j], _mm512_mask_blend_epi32(s[j - 1], vi, id[j - 1]));
    }
    b[0] = _mm512_max_ps(b[0], v);
    id[0] = _mm512_mask_mov_epi32(id[0], s[0], vi);
}

/* exp(d) for d <= 0 (the softmax core's polynomial and reduction, as in
 * softmax_avx512.c): within 2 ulp; -inf gives 0. */
static inline __m512 exp_nonpos(__m512 d) {
    d = _mm512_max_ps(_mm512_set1_ps(-150.0f), d);
    const __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(d, _mm512_set1_ps(0x1.715476p+0f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fmadd_ps(k, _mm512_set1_ps(-0x1.62E430p-1f), d);
    r = _mm512_fmadd_ps(k, _mm512_set1_ps(0x1.05C610p-29f), r);
    __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(0x1.0F9F9Cp-7f), r, _mm512_set1_ps(0x1.573A1Ap-5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0x1.555A80p-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0x1.FFFDC6p-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0x1.FFFFF6p-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, k);
}

static inline __m512d lo_pd(__m512 v) { return _mm512_cvtps_pd(_mm512_castps512_ps256(v)); }
static inline __m512d hi_pd(__m512 v) {
    return _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
}
static inline __m512 join_ps(__m512d lo, __m512d hi) {
    return _mm512_insertf32x8(_mm512_castps256_ps512(_mm512_cvtpd_ps(lo)), _mm512_cvtpd_ps(hi), 1);
}

static inline __attribute__((always_inline)) uint32_t rows_k(size_t n, size_t e, const float *x, size_t ldx,
                                                             float c, float a, int32_t *ids, size_t ldi, float *w,
                                                             size_t ldw, const size_t k) {
    const __m512 ninf = _mm512_set1_ps(-INFINITY);
    __m512 b[8];
    __m512i id[8];
#pragma GCC unroll 16
    for (size_t j = 0; j < k; j++) b[j] = ninf, id[j] = _mm512_setzero_si512();
    __mmask16 nan = 0;
    /* the rows' lines requested at once, in address order (the blocks
     * below read them 16 rows apart, which the hardware prefetchers
     * follow poorly): two blocks ahead */
    for (size_t r = 0; r < n; r++)
        for (size_t i = 0; i < e && i < 32; i += 16) _mm_prefetch((const char *)(x + r * ldx + i), _MM_HINT_T0);
    for (size_t e0 = 0; e0 < e; e0 += 16) {
        if (e0 + 32 < e)
            for (size_t r = 0; r < n; r++) _mm_prefetch((const char *)(x + r * ldx + e0 + 32), _MM_HINT_T0);
        const size_t wd = e - e0 < 16 ? e - e0 : 16;
        const __mmask16 cm = (__mmask16)(wd == 16 ? 0xFFFFu : (1u << wd) - 1);
        __m512 col[16];
#pragma GCC unroll 16
        for (size_t r = 0; r < 16; r++)
            col[r] = r < n ? _mm512_mask_loadu_ps(ninf, cm, x + r * ldx + e0) : ninf;
        transpose16(col);
        for (size_t q = 0; q < wd; q++) {
            const __m512 v = col[q];
            nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
            insert_levels(v, _mm512_set1_epi32((int32_t)(e0 + q)), b, id, k);
        }
    }
    const __mmask16 rows = (__mmask16)(n >= 16 ? 0xFFFFu : (1u << n) - 1);
    const __mmask16 left =
        (__mmask16)((nan | _mm512_cmp_ps_mask(b[0], _mm512_set1_ps(INFINITY), _CMP_EQ_OQ) |
                     _mm512_cmp_ps_mask(b[k - 1], ninf, _CMP_EQ_OQ)) & rows);
    const __mmask16 ok = (__mmask16)(rows & ~left);
    /* args (double)b[l] - (double)b[0], times (double)c, rounded once to
     * float; their exponentials summed in double; w = a e_l / sum */
    const __m512d cd = _mm512_set1_pd((double)c);
    const __m512d m_lo = lo_pd(b[0]), m_hi = hi_pd(b[0]);
    __m512 out[16];
    __m512d s_lo = _mm512_setzero_pd(), s_hi = _mm512_setzero_pd();
#pragma GCC unroll 16
    for (size_t l = 0; l < k; l++) {
        const __m512 arg = join_ps(_mm512_mul_pd(_mm512_sub_pd(lo_pd(b[l]), m_lo), cd),
                                   _mm512_mul_pd(_mm512_sub_pd(hi_pd(b[l]), m_hi), cd));
        out[l] = exp_nonpos(_mm512_maskz_mov_ps(ok, arg));
        s_lo = _mm512_add_pd(s_lo, lo_pd(out[l]));
        s_hi = _mm512_add_pd(s_hi, hi_pd(out[l]));
        out[8 + l] = _mm512_castsi512_ps(id[l]);
    }
    const __m512d ad = _mm512_set1_pd((double)a);
    const __m512d sc_lo = _mm512_div_pd(ad, s_lo), sc_hi = _mm512_div_pd(ad, s_hi);
#pragma GCC unroll 16
    for (size_t l = 0; l < k; l++)
        out[l] = join_ps(_mm512_mul_pd(lo_pd(out[l]), sc_lo), _mm512_mul_pd(hi_pd(out[l]), sc_hi));
#pragma GCC unroll 16
    for (size_t l = k; l < 8; l++) out[l] = out[8 + l] = _mm512_setzero_ps();
    transpose16(out); /* out[r]: the weights of row r in lanes 0..k-1, its ids in 8..8+k-1 */
    const __mmask16 km = (__mmask16)((1u << k) - 1);
#pragma GCC unroll 16
    for (size_t r = 0; r < 16; r++) {
        const __mmask16 m = ok >> r & 1 ? km : 0;
        _mm512_mask_storeu_ps(w + r * ldw, m, out[r]);
        _mm256_mask_storeu_epi32(ids + r * ldi, (__mmask8)m,
                                 _mm256_castps_si256(_mm512_extractf32x8_ps(out[r], 1)));
    }
    return left;
}

uint32_t sg_route_topk_rows__avx512(size_t n, size_t e, size_t k, const float *x, size_t ldx, float c, float a,
                                    int32_t *ids, size_t ldi, float *w, size_t ldw) {
    switch (k) {
    case 1: return rows_k(n, e, x, ldx, c, a, ids, ldi, w, ldw, 1);
    case 2: return rows_k(n, e, x, ldx, c, a, ids, ldi, w, ldw, 2);
    case 3: return rows_k(n, e, x, ldx, c, a, ids, ldi, w, ldw, 3);
    case 4: return rows_k(n, e, x, ldx, c, a, ids, ldi, w, ldw, 4);
    case 5: return rows_k(n, e, x, ldx, c, a, ids, ldi, w, ldw, 5);
    case 6: return rows_k(n, e, x, ldx, c, a, ids, ldi, w, ldw, 6);
    case 7: return rows_k(n, e, x, ldx, c, a, ids, ldi, w, ldw, 7);
    case 8: return rows_k(n, e, x, ldx, c, a, ids, ldi, w, ldw, 8);
    default: return sg_route_topk_rows__ref(n, e, k, x, ldx, c, a, ids, ldi, w, ldw);
    }
}

/*
 * topk_rows_avx512.c - route.topk_rows in AVX-512 (contract in
 * route_kernels.h, reference sg_route_topk_rows__ref): the renormalized
 * softmax-top-k of up to 16 rows per call, ids and weights written
 * directly. Two ways, chosen by the block's size (lanes_worth):
 *
 * - levels, one row per lane (k <= 8, blocks of many rows): each block of
 *   16 experts of the 16 rows is transposed in registers (64 shuffles),
 *   so that a vector holds one expert's logit for every row; the experts
 *   then pass, in index order, through k sorted levels (value, id) per
 *   lane: a key moves into level j where it beats level j strictly and
 *   not level j - 1, the levels below shift down. Strict compares in
 *   index order keep ties in index order, exactly the reference's rule; no
 *   branch depends on the data, no separate NaN scan (an unordered
 *   compare per vector collects the NaN rows), and the weights are formed
 *   in the same registers, then transposed back;
 * - rows one by one (few rows, or k > 8): the way of route.topk
 *   (route_avx512.c) with the NaN test in its maximum pass and the
 *   weights in registers.
 *
 * Both form t = (float)((x_l - max) c), the softmax core's vector exp and
 * the sum in double in slot order, as the gate's row path does: the same
 * weights bit for bit whichever way a row goes. Rows whose k-th key is
 * -inf (the reference fills with -inf keys by index) or whose largest is
 * +-inf, and NaN rows, are left to the caller.
 */
#include <immintrin.h>
#include <math.h>

#include "route/route_internal.h"
#include "route/route_kernels.h"
#include "softmax/exp_avx512.h"

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

/* exp(d) for d <= 0, the softmax core's (exp_avx512.h): within 2 ulp;
 * -inf gives 0. */
static inline __m512 exp_nonpos(__m512 d) { return sg_exp_nonpos_avx512(d); }

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

static inline __mmask16 lanes16(size_t m) {
    return m >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << m) - 1);
}

/* The k-th largest (1 <= k <= 16) of the 16 lanes of m. */
static inline float kth_of16(__m512 m, size_t k) {
    /* lane j broadcast by a permute: a scalar load after the vector store
     * waits for the store to leave the buffer */
    const __m512i one = _mm512_set1_epi32(1);
    __m512i gt = _mm512_setzero_si512();
#pragma GCC unroll 16
    for (int j = 0; j < 16; j++)
        gt = _mm512_mask_add_epi32(
            gt, _mm512_cmp_ps_mask(_mm512_permutexvar_ps(_mm512_set1_epi32(j), m), m, _CMP_GT_OQ), gt, one);
    return _mm512_mask_reduce_min_ps(_mm512_cmplt_epi32_mask(gt, _mm512_set1_epi32((int32_t)k)), m);
}

/* Candidates kept per row (at most 32 are ranked; 16 spare slots for
 * the full-vector stores). */
#define CAND 48

/* ids and weights of a row from its k selected keys in order (top, tid
 * lanes < k) and its max: t = (double)top - (double)mx, times c, rounded
 * to float; exp in the vector exp; their sum in double in slot order (as
 * the levels and the gate's row path sum them: the same weights bit for
 * bit whichever path a row takes). */
static inline void row_weights(__m512 top, __m512i tid, float mx, size_t k, float c, float a, int32_t *ids,
                               float *w) {
    const __mmask16 kl = lanes16(k);
    const __m512d cd = _mm512_set1_pd((double)c), md = _mm512_set1_pd((double)mx);
    const __m512 t = join_ps(_mm512_mul_pd(_mm512_sub_pd(lo_pd(top), md), cd),
                             _mm512_mul_pd(_mm512_sub_pd(hi_pd(top), md), cd));
    const __m512 ex = exp_nonpos(_mm512_maskz_mov_ps(kl, t));
    const __m512d elo = lo_pd(ex), ehi = hi_pd(ex);
    double sum = 0.0;
    for (size_t l = 0; l < k; l++)
        sum += _mm512_cvtsd_f64(_mm512_permutexvar_pd(_mm512_set1_epi64((long long)(l & 7)), l < 8 ? elo : ehi));
    const __m512d sc = _mm512_set1_pd((double)a / sum);
    _mm512_mask_storeu_ps(w, kl, join_ps(_mm512_mul_pd(elo, sc), _mm512_mul_pd(ehi, sc)));
    _mm512_mask_storeu_epi32(ids, kl, tid);
}

/* Exact selection for a row of many ties at the threshold (more than 32
 * candidates). Returns 1 when the row is left (the k-th is -inf). */
static int row_exact(const float *xr, size_t e, size_t k, float mx, float c, float a, int32_t *ids, float *w) {
    int32_t sid[16] = {0};
    float top[16] = {0};
    sg_route_topk__ref(xr, e, k, sid, top);
    if (top[k - 1] == -INFINITY) return 1;
    row_weights(_mm512_loadu_ps(top), _mm512_loadu_si512(sid), mx, k, c, a, ids, w);
    return 0;
}

/* Ranks a row's nc <= 32 candidates (cv, dv), rank_i = #{j : c_j > c_i} +
 * #{j < i : c_j == c_i}, gathers the first k by one permute and writes
 * ids and weights. Returns 1 when the k-th is -inf (the row is left). */
static inline __attribute__((always_inline)) int row_rank(const float *cv, const int32_t *dv, size_t nc, size_t k,
                                                           __m512 *topo, __m512i *tido) {
    const __m512 ninf = _mm512_set1_ps(-INFINITY);
    const __mmask16 l0 = lanes16(nc), l1 = lanes16(nc > 16 ? nc - 16 : 0);
    const __m512 c0 = _mm512_maskz_loadu_ps(l0, cv), c1 = _mm512_maskz_loadu_ps(l1, cv + 16);
    const __m512i one = _mm512_set1_epi32(1);
    __m512i r0 = _mm512_setzero_si512(), r1 = r0;
    for (size_t j = 0; j < nc; j++) {
        const __m512 b = _mm512_set1_ps(cv[j]);
        /* lanes after j: ties there count j ahead of them */
        const __mmask16 a0 = (__mmask16)((0xFFFFu << (j < 15 ? j + 1 : 16)) & 0xFFFFu);
        const __mmask16 a1 = j < 16 ? (__mmask16)0xFFFF : (__mmask16)((0xFFFFu << (j - 15)) & 0xFFFFu);
        const __mmask16 g0 = _mm512_cmp_ps_mask(b, c0, _CMP_GT_OQ) | (_mm512_cmp_ps_mask(b, c0, _CMP_EQ_OQ) & a0);
        r0 = _mm512_mask_add_epi32(r0, g0, r0, one);
        if (nc > 16) {
            const __mmask16 g1 = _mm512_cmp_ps_mask(b, c1, _CMP_GT_OQ) | (_mm512_cmp_ps_mask(b, c1, _CMP_EQ_OQ) & a1);
            r1 = _mm512_mask_add_epi32(r1, g1, r1, one);
        }
    }
    /* the lane of rank s (ranks are distinct) into lane s of idx */
    __m512i idx = _mm512_setzero_si512();
    for (size_t s = 0; s < k; s++) {
        const __m512i rs = _mm512_set1_epi32((int32_t)s);
        const unsigned e0 = _mm512_cmpeq_epi32_mask(r0, rs) & l0;
        const unsigned e1 = (_mm512_cmpeq_epi32_mask(r1, rs) & l1) | 0x10000u; /* never 0 */
        const int lane = e0 ? __builtin_ctz(e0) : 16 + __builtin_ctz(e1);
        idx = _mm512_mask_mov_epi32(idx, (__mmask16)(1u << s), _mm512_set1_epi32(lane));
    }
    const __m512 top = _mm512_permutex2var_ps(c0, idx, c1);
    const __mmask16 kl = lanes16(k);
    if (_mm512_mask_cmp_ps_mask(kl, top, ninf, _CMP_EQ_OQ)) return 1;
    const __m512i tid = _mm512_permutex2var_epi32(_mm512_maskz_loadu_epi32(l0, dv), idx,
                                                  _mm512_maskz_loadu_epi32(l1, dv + 16));
    *topo = top, *tido = tid;
    return 0;
}

static int row_finish(const float *cv, const int32_t *dv, size_t nc, float mx, size_t k, float c, float a,
                      int32_t *ids, float *w) {
    __m512 top;
    __m512i tid;
    if (row_rank(cv, dv, nc, k, &top, &tid)) return 1;
    row_weights(top, tid, mx, k, c, a, ids, w);
    return 0;
}

/*
 * Rows one by one, the way of route.topk (route_avx512.c), with the NaN
 * test in its maximum pass and the weights in registers, in phases over
 * the block's rows (each row is a chain of dependent steps; a phase's
 * rows are independent, so they overlap): (1) the maxima of the 16 lane
 * columns and the NaN test; (2) thr = the k-th largest column maximum, a
 * lower bound of the k-th largest key; (3) the keys >= thr compressed in
 * index order; (4) ranked and weighted (row_finish). Rows of more than
 * 32 candidates (ties at thr) take the exact insertion.
 */
static uint32_t rows_each(size_t n, size_t e, size_t k, const float *x, size_t ldx, float c, float a, int32_t *ids,
                          size_t ldi, float *w, size_t ldw) {
    static const int32_t iota16[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    const __m512 ninf = _mm512_set1_ps(-INFINITY);
    __m512 mm[16];
    float mx[16], thr[16];
    float cv[16][CAND];
    int32_t dv[16][CAND];
    size_t nc[16];
    const __m512i sixteen = _mm512_set1_epi32(16);
    uint32_t left = 0;
    /* groups of about 256 keys: a group's rows overlap within each phase,
     * and stay in L1 from one phase to the next */
    const size_t g = 256 / e; /* e < 128 */
    for (size_t g0 = 0; g0 < n; g0 += g) {
    const size_t g1 = n - g0 < g ? n : g0 + g;
    for (size_t r = g0; r < g1; r++) {
        const float *xr = x + r * ldx;
        __m512 m0 = ninf, m1 = ninf;
        __mmask16 nan = 0;
        size_t i = 0;
        for (; i + 32 <= e; i += 32) {
            const __m512 v0 = _mm512_loadu_ps(xr + i), v1 = _mm512_loadu_ps(xr + i + 16);
            nan |= _mm512_cmp_ps_mask(v0, v0, _CMP_UNORD_Q) | _mm512_cmp_ps_mask(v1, v1, _CMP_UNORD_Q);
            m0 = _mm512_max_ps(m0, v0), m1 = _mm512_max_ps(m1, v1);
        }
        for (; i < e; i += 16) {
            const __m512 v = _mm512_mask_loadu_ps(ninf, lanes16(e - i), xr + i);
            nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
            m0 = _mm512_max_ps(m0, v);
        }
        mm[r] = _mm512_max_ps(m0, m1);
        mx[r] = _mm512_reduce_max_ps(mm[r]);
        left |= (uint32_t)(nan || mx[r] == INFINITY || mx[r] == -INFINITY) << r;
    }
    for (size_t r = g0; r < g1; r++) thr[r] = e <= 16 ? -INFINITY : kth_of16(mm[r], k);
    for (size_t r = g0; r < g1; r++) {
        const float *xr = x + r * ldx;
        const __m512 vt = _mm512_set1_ps(thr[r]);
        __m512i id = _mm512_loadu_si512(iota16);
        size_t q = 0;
        for (size_t i = 0; i < e; i += 16) {
            const __mmask16 l = lanes16(e - i);
            const __m512 v = _mm512_maskz_loadu_ps(l, xr + i);
            const __mmask16 m = _mm512_mask_cmp_ps_mask(l, v, vt, _CMP_GE_OQ);
            const size_t at = q < 32 ? q : 32; /* past 32: counted only */
            _mm512_storeu_ps(cv[r] + at, _mm512_maskz_compress_ps(m, v));
            _mm512_storeu_si512(dv[r] + at, _mm512_maskz_compress_epi32(m, id));
            q += (size_t)__builtin_popcount(m);
            id = _mm512_add_epi32(id, sixteen);
        }
        nc[r] = q;
    }
    __m512 top[16];
    __m512i tid[16];
    uint32_t done = 0; /* ranked here, weighted below */
    for (size_t r = g0; r < g1; r++) {
        if (left >> r & 1) continue;
        if (nc[r] > 32) {
            left |= (uint32_t)row_exact(x + r * ldx, e, k, mx[r], c, a, ids + r * ldi, w + r * ldw) << r;
            continue;
        }
        const int l = row_rank(cv[r], dv[r], nc[r], k, &top[r], &tid[r]);
        left |= (uint32_t)l << r;
        done |= (uint32_t)!l << r;
    }
    for (size_t r = g0; r < g1; r++)
        if (done >> r & 1) row_weights(top[r], tid[r], mx[r], k, c, a, ids + r * ldi, w + r * ldw);
    }
    return left;
}

/* The same one row at a time, all phases together (from 128 experts: a
 * row's candidates in L1 between its phases; measured faster there). */
static uint32_t rows_one(size_t n, size_t e, size_t k, const float *x, size_t ldx, float c, float a, int32_t *ids,
                         size_t ldi, float *w, size_t ldw) {
    static const int32_t iota16[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    const __m512 ninf = _mm512_set1_ps(-INFINITY);
    const __m512i sixteen = _mm512_set1_epi32(16);
    uint32_t left = 0;
    for (size_t r = 0; r < n; r++) {
        const float *xr = x + r * ldx;
        __m512 m0 = ninf, m1 = ninf;
        __mmask16 nan = 0;
        size_t i = 0;
        for (; i + 32 <= e; i += 32) {
            const __m512 v0 = _mm512_loadu_ps(xr + i), v1 = _mm512_loadu_ps(xr + i + 16);
            nan |= _mm512_cmp_ps_mask(v0, v0, _CMP_UNORD_Q) | _mm512_cmp_ps_mask(v1, v1, _CMP_UNORD_Q);
            m0 = _mm512_max_ps(m0, v0), m1 = _mm512_max_ps(m1, v1);
        }
        for (; i < e; i += 16) {
            const __m512 v = _mm512_mask_loadu_ps(ninf, lanes16(e - i), xr + i);
            nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
            m0 = _mm512_max_ps(m0, v);
        }
        const __m512 mm = _mm512_max_ps(m0, m1);
        const float mx = _mm512_reduce_max_ps(mm);
        if (nan || mx == INFINITY || mx == -INFINITY) {
            left |= 1u << r;
            continue;
        }
        const __m512 vt = _mm512_set1_ps(e <= 16 ? -INFINITY : kth_of16(mm, k));
        float cv[CAND];
        int32_t dv[CAND];
        __m512i id = _mm512_loadu_si512(iota16);
        size_t q = 0;
        for (i = 0; i < e; i += 16) {
            const __mmask16 l = lanes16(e - i);
            const __m512 v = _mm512_maskz_loadu_ps(l, xr + i);
            const __mmask16 m = _mm512_mask_cmp_ps_mask(l, v, vt, _CMP_GE_OQ);
            const size_t at = q < 32 ? q : 32; /* past 32: counted only */
            _mm512_storeu_ps(cv + at, _mm512_maskz_compress_ps(m, v));
            _mm512_storeu_si512(dv + at, _mm512_maskz_compress_epi32(m, id));
            q += (size_t)__builtin_popcount(m);
            id = _mm512_add_epi32(id, sixteen);
        }
        const int lr = q > 32 ? row_exact(xr, e, k, mx, c, a, ids + r * ldi, w + r * ldw)
                              : row_finish(cv, dv, q, mx, k, c, a, ids + r * ldi, w + r * ldw);
        left |= (uint32_t)lr << r;
    }
    return left;
}

/* Whether a block of n rows goes through the levels (rows in lanes: about
 * 20 + e (k + 1) ns a block whatever n) rather than row by row (about
 * 55 + e / 3 ns a row: the threshold leaves few candidates, but each row
 * is a chain of dependent steps); measured on Zen 4 at E = 8, 64, 256. */
static int lanes_worth(size_t n, size_t e, size_t k) {
    return n * (55 + e / 3) > 20 + e * (k + 1);
}

uint32_t sg_route_topk_rows__avx512(size_t n, size_t e, size_t k, const float *x, size_t ldx, float c, float a,
                                    int32_t *ids, size_t ldi, float *w, size_t ldw) {
    if (k > 16 || e > SG_ROUTE_STACK_E) return sg_route_topk_rows__ref(n, e, k, x, ldx, c, a, ids, ldi, w, ldw);
    if (k > 8 || !lanes_worth(n, e, k)) {
        return e < 128 ? rows_each(n, e, k, x, ldx, c, a, ids, ldi, w, ldw)
                       : rows_one(n, e, k, x, ldx, c, a, ids, ldi, w, ldw);
    }
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

/*
 * gate_sigmoid_avx512.c - AVX-512 kernel of the sigmoid gate with a key row
 * (route.sgate: the DeepSeek-V3 gate; contract in route_kernels.h,
 * reference sg_route_sgate__ref in gate_sigmoid.c).
 *
 * One pass per row with the row in registers (E = 256 is 16 vectors): the
 * sigmoid, the biased keys and the NaN test; the groups' top-two sums by a
 * reduction tree of (largest, second largest) pairs across vectors and
 * lanes (no scalar chain per group); the topk_group best groups by ranks
 * computed in one vector; the K best kept keys by the threshold method of
 * route.topk (the K-th largest of the 16 lane maxima bounds the K-th key
 * from below, the keys at or above it are ranked without branches); the
 * weights from the row's s. The per-row function-pointer calls and passes
 * of the generic path (sigmoid row, bias add, NaN scan, group scores, two
 * selections, weights) were 700 ns per token at E = 256.
 *
 * Rows the tree does not cover (groups of one beyond 16 experts, more than
 * 16 groups, group sizes neither a power of two below 16 nor a multiple of
 * 16, e > 1024, k > 16) go to the reference kernel, which gives the same
 * outputs.
 */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "route/route_internal.h"
#include "route/route_kernels.h"
#include "softmax/exp_avx512.h"

/* The softmax core's exponential (exp_avx512.h), so that s is bit for bit
 * what the reference kernel gets from the core's AVX-512 expsum_store. */
static inline __m512 exp_ps(__m512 d) { return sg_exp_nonpos_avx512(d); }

static inline __mmask16 lanes(size_t m) {
    return m >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << m) - 1);
}

#define MAXV 64 /* vectors of a row: e <= 1024 */

/* Per call: the shape and the index vectors of the reduction tree. */
typedef struct sgk {
    size_t e, nv, k, ng, gs, tg, m;
    int mode; /* 0 no groups, 1 gs % 16 == 0 (m vectors a group), 2 gs in {2, 4, 8}, 3 gs == 1 */
    __m512i ix[5], iy[5]; /* the tree's pairing at group width w = 2^i */
} sgk;

/* (largest, second largest) per lane, -inf when absent. */
typedef struct top2 {
    __m512 hi, lo;
} top2;

static inline top2 t2_merge(top2 a, top2 b) {
    top2 r;
    r.hi = _mm512_max_ps(a.hi, b.hi);
    r.lo = _mm512_max_ps(_mm512_min_ps(a.hi, b.hi), _mm512_max_ps(a.lo, b.lo));
    return r;
}

/* a and b each hold 16 / w groups of w consecutive lanes; the result holds
 * a's groups then b's, each of w / 2 lanes (lanes j and j + w / 2 of a
 * group merged), so the groups stay in order down the tree. */
static inline top2 t2_combine(top2 a, top2 b, __m512i ix, __m512i iy) {
    top2 x, y;
    x.hi = _mm512_permutex2var_ps(a.hi, ix, b.hi);
    x.lo = _mm512_permutex2var_ps(a.lo, ix, b.lo);
    y.hi = _mm512_permutex2var_ps(a.hi, iy, b.hi);
    y.lo = _mm512_permutex2var_ps(a.lo, iy, b.lo);
    return t2_merge(x, y);
}

static const int32_t iota32[32] = {0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15,
                                   16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31};

/* Pass 1: s (into srow, and p when given) and the keys (-inf past e) into
 * kv. Returns the lanes holding NaN. */
static inline __attribute__((always_inline)) __mmask16
row_keys(const sgk *K, const sg_route_sgate *g, const float *xr, float *p, __m512 *kv, float *srow,
         const size_t NV) {
    const size_t e = K->e;
    const __m512 ninf = _mm512_set1_ps(-INFINITY), one = _mm512_set1_ps(1.0f);
    const __m512 vc = _mm512_set1_ps(g->c);
    __mmask16 nan = 0;
    /* s = (x < 0 ? q : 1) / (1 + q), q = exp(-|x| c); key = s + b */
    _Pragma("GCC unroll 16") for (size_t v = 0; v < NV; v++) {
        const __mmask16 m = lanes(e - 16 * v);
        const __m512 x = _mm512_maskz_loadu_ps(m, xr + 16 * v);
        nan |= _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
        __m512 d = _mm512_or_ps(x, _mm512_set1_ps(-0.0f)); /* -|x| */
        if (g->c != 1.0f) d = _mm512_mul_ps(d, vc);
        const __m512 q = exp_ps(d);
        const __m512 num = _mm512_mask_mov_ps(one, _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ), q);
        const __m512 s = _mm512_div_ps(num, _mm512_add_ps(one, q));
        _mm512_storeu_ps(srow + 16 * v, s);
        if (p) _mm512_mask_storeu_ps(p + 16 * v, m, s);
        const __m512 key = g->bias ? _mm512_add_ps(s, _mm512_maskz_loadu_ps(m, g->bias + 16 * v)) : s;
        kv[v] = _mm512_mask_mov_ps(ninf, m, key);
    }
    return nan;
}

/* The group scores (lane q: group q; the sum of its two largest keys) by
 * the reduction tree; *glo gets each group's second largest. */
static inline __attribute__((always_inline)) __m512
group_scores(const sgk *K, const __m512 *kv, __m512 *glo, const size_t NV, const int MODE, const size_t NG,
             const size_t GS) {
    const __m512 ninf = _mm512_set1_ps(-INFINITY);
    const size_t ng = NG ? NG : K->ng, gs = GS ? GS : K->gs;
    if (MODE == 3) return kv[0]; /* groups of one: the key itself */
    top2 t[16];
    size_t cnt, wl; /* vectors in the tree; log2 of the group width */
    if (MODE == 1) {
        const size_t m = gs / 16;
        _Pragma("GCC unroll 16") for (size_t q = 0; q < ng; q++) {
            t[q].hi = kv[q * m], t[q].lo = ninf;
            for (size_t v = 1; v < m; v++) {
                const top2 b = {kv[q * m + v], ninf};
                t[q] = t2_merge(t[q], b);
            }
        }
        cnt = ng, wl = 4;
    } else {
        _Pragma("GCC unroll 16") for (size_t v = 0; v < NV; v++) t[v].hi = kv[v], t[v].lo = ninf;
        cnt = NV, wl = (size_t)__builtin_ctzl(gs);
    }
    while (cnt & (cnt - 1)) t[cnt].hi = ninf, t[cnt].lo = ninf, cnt++; /* to a power of two */
    _Pragma("GCC unroll 4") for (; wl > 0; wl--) {
        if (cnt > 1) {
            _Pragma("GCC unroll 8") for (size_t i = 0; i < cnt / 2; i++)
                t[i] = t2_combine(t[2 * i], t[2 * i + 1], K->ix[wl], K->iy[wl]);
            cnt /= 2;
        } else {
            t[0] = t2_combine(t[0], t[0], K->ix[wl], K->iy[wl]);
        }
    }
    *glo = t[0].lo;
    return _mm512_add_ps(t[0].hi, t[0].lo);
}

/* keep[v]: the lanes of vector v whose group is among the topk_group
 * best (all of the row's lanes without groups); returns the kept groups'
 * bits, and their second largest keys in *glo. */
static inline __attribute__((always_inline)) unsigned
kept_lanes(const sgk *K, const __m512 *kv, __mmask16 *keep, __m512 *glo, const size_t NV, const int MODE,
           const size_t NG, const size_t GS) {
    const size_t e = K->e;
    if (MODE == 0) {
        _Pragma("GCC unroll 16") for (size_t v = 0; v < NV; v++) keep[v] = lanes(e - 16 * v);
        return 0;
    }
    const size_t ng = NG ? NG : K->ng, gs = GS ? GS : K->gs;
    const __m512 gsc = group_scores(K, kv, glo, NV, MODE, NG, GS);
    /* rank_q = #{h : score_h > score_q} + #{h < q : score_h == score_q} */
    __m512i rank = _mm512_setzero_si512();
    const __m512i ione = _mm512_set1_epi32(1);
    _Pragma("GCC unroll 16") for (size_t h = 0; h < ng; h++) {
        const __m512 b = _mm512_permutexvar_ps(_mm512_set1_epi32((int)h), gsc);
        const __mmask16 after = (__mmask16)((0xFFFFu << (h + 1)) & 0xFFFFu);
        const __mmask16 beat = _mm512_cmp_ps_mask(b, gsc, _CMP_GT_OQ) |
                               (_mm512_cmp_ps_mask(b, gsc, _CMP_EQ_OQ) & after);
        rank = _mm512_mask_add_epi32(rank, beat, rank, ione);
    }
    const unsigned kept =
        _mm512_mask_cmplt_epi32_mask(lanes(ng), rank, _mm512_set1_epi32((int)K->tg));
    if (MODE == 1) {
        const size_t m = gs / 16;
        _Pragma("GCC unroll 16") for (size_t v = 0; v < NV; v++)
            keep[v] = (kept >> (v / m)) & 1 ? (__mmask16)0xFFFF : 0;
    } else {
        /* lane l of vector v is in group (16 v + l) / gs: the kept flags
         * spread by a permutation (a scalar loop over the groups
         * branched on the random kept bits) */
        const __m512i flag = _mm512_maskz_mov_epi32((__mmask16)kept, _mm512_set1_epi32(-1));
        const __m512i iota = _mm512_loadu_si512(iota32);
        const unsigned sh = (unsigned)__builtin_ctzl(gs);
        _Pragma("GCC unroll 16") for (size_t v = 0; v < NV; v++) {
            const __m512i grp = _mm512_srli_epi32(_mm512_add_epi32(iota, _mm512_set1_epi32((int)(16 * v))), sh);
            const __m512i f = _mm512_permutexvar_epi32(grp, flag);
            keep[v] = (__mmask16)(_mm512_test_epi32_mask(f, f) & lanes(e - 16 * v));
        }
    }
    return kept;
}

/* The k candidates' ranks (nc <= 32 keys c, ids d, in index order):
 * rank_i = #{j : c_j > c_i} + #{j < i : c_j == c_i}, the position in
 * descending order, ties in index order; more candidates (many ties at
 * the threshold) take the exact insertion. */
static inline void rank_candidates(const float *c, const int32_t *d, size_t nc, size_t k, int32_t *ids) {
    if (nc > 32) {
        float top[16];
        size_t f = 0;
        for (size_t q = 0; q < nc; q++) sg_route_insert(c[q], (size_t)d[q], k, ids, top, &f, 0);
        return;
    }
    const __m512i ione = _mm512_set1_epi32(1);
    const __mmask16 m0 = lanes(nc), m1 = lanes(nc > 16 ? nc - 16 : 0);
    const __m512 v0 = _mm512_maskz_loadu_ps(m0, c), v1 = _mm512_maskz_loadu_ps(m1, c + 16);
    __m512i r0 = _mm512_setzero_si512(), r1 = r0;
    for (size_t j = 0; j < nc; j++) {
        const __m512 b = _mm512_set1_ps(c[j]);
        const __mmask16 a0 = (__mmask16)((0xFFFFu << (j < 15 ? j + 1 : 16)) & 0xFFFFu);
        const __mmask16 a1 = j < 16 ? (__mmask16)0xFFFF : (__mmask16)((0xFFFFu << (j - 15)) & 0xFFFFu);
        r0 = _mm512_mask_add_epi32(
            r0, _mm512_cmp_ps_mask(b, v0, _CMP_GT_OQ) | (_mm512_cmp_ps_mask(b, v0, _CMP_EQ_OQ) & a0), r0, ione);
        if (nc > 16)
            r1 = _mm512_mask_add_epi32(
                r1, _mm512_cmp_ps_mask(b, v1, _CMP_GT_OQ) | (_mm512_cmp_ps_mask(b, v1, _CMP_EQ_OQ) & a1), r1, ione);
    }
    for (size_t s = 0; s < k; s++) {
        const __m512i rs = _mm512_set1_epi32((int32_t)s);
        const unsigned e0 = _mm512_cmpeq_epi32_mask(r0, rs) & m0;
        const unsigned e1 = (_mm512_cmpeq_epi32_mask(r1, rs) & m1) | 0x10000u;
        ids[s] = d[e0 ? (size_t)__builtin_ctz(e0) : 16 + (size_t)__builtin_ctz(e1)];
    }
}

/* The k best kept keys (finite) into ids. */
static inline __attribute__((always_inline)) void
select_kept(const sgk *K, const __m512 *kv, const __mmask16 *keep, __m512 glo, unsigned kept, int32_t *ids,
            const size_t NV, const int MODE) {
    const size_t k = K->k;
    const __m512 ninf = _mm512_set1_ps(-INFINITY);
    if (NV == 1 && k <= 2) {
        /* the first lane holding the maximum, then the first other lane
         * holding the maximum of the rest */
        const __m512 v = kv[0];
        const float b1 = _mm512_mask_reduce_max_ps(keep[0], v);
        const unsigned i1 = (unsigned)__builtin_ctz(
            (unsigned)_mm512_mask_cmp_ps_mask(keep[0], v, _mm512_set1_ps(b1), _CMP_EQ_OQ));
        ids[0] = (int32_t)i1;
        if (k == 2) {
            const __mmask16 rest = (__mmask16)(keep[0] & ~(1u << i1));
            const float b2 = _mm512_mask_reduce_max_ps(rest, v);
            ids[1] = (int32_t)__builtin_ctz(
                (unsigned)_mm512_mask_cmp_ps_mask(rest, v, _mm512_set1_ps(b2), _CMP_EQ_OQ));
        }
        return;
    }
    const __m512i ione = _mm512_set1_epi32(1);
    __m512 thr;
    if ((MODE == 1 || MODE == 2) && 2 * K->tg >= k) {
        /* every kept group holds two keys >= its second largest, so
         * 2 tg >= k kept keys are >= the least of those: a lower bound
         * of the k-th largest kept key, from the tree (the lane maxima
         * below cost a fifth of the row at E = 256) */
        thr = _mm512_set1_ps(_mm512_mask_reduce_min_ps((__mmask16)kept, glo));
    } else {
        /* the k-th largest lane maximum over the kept keys: k distinct
         * kept keys (one per lane) are >= it; -inf when fewer than k
         * lanes hold a kept key (then every kept key is a candidate) */
        __m512 mx = ninf;
        _Pragma("GCC unroll 16") for (size_t v = 0; v < NV; v++)
            mx = _mm512_max_ps(mx, _mm512_mask_mov_ps(ninf, keep[v], kv[v]));
        __m512i gt = _mm512_setzero_si512();
        for (int h = 0; h < 16; h++)
            gt = _mm512_mask_add_epi32(
                gt, _mm512_cmp_ps_mask(_mm512_permutexvar_ps(_mm512_set1_epi32(h), mx), mx, _CMP_GT_OQ), gt,
                ione);
        thr = _mm512_set1_ps(
            _mm512_mask_reduce_min_ps(_mm512_cmplt_epi32_mask(gt, _mm512_set1_epi32((int)k)), mx));
    }
    /* candidates in index order (16 spare slots for full stores) */
    float c[MAXV * 16 + 16];
    int32_t d[MAXV * 16 + 16];
    size_t nc = 0;
    const __m512i iota = _mm512_loadu_si512(iota32);
    for (size_t v = 0; v < NV; v++) {
        const __mmask16 q = _mm512_mask_cmp_ps_mask(keep[v], kv[v], thr, _CMP_GE_OQ);
        _mm512_storeu_ps(c + nc, _mm512_maskz_compress_ps(q, kv[v]));
        _mm512_storeu_si512(d + nc, _mm512_maskz_compress_epi32(
                                        q, _mm512_add_epi32(iota, _mm512_set1_epi32((int)(16 * v)))));
        nc += (size_t)__builtin_popcount(q);
    }
    rank_candidates(c, d, nc, k, ids);
}

/*
 * One row: s and keys, groups, the k ids, weights. NV, MODE (and for the
 * common shapes NG, GS) are constants after inlining, so the row stays in
 * registers. Returns nonzero on NaN.
 */
static inline __attribute__((always_inline)) int
sgate_row(const sgk *K, const sg_route_sgate *g, const float *xr, int32_t *ids, float *w, float *p,
          const size_t NV, const int MODE, const size_t NG, const size_t GS) {
    __m512 kv[MAXV];
    float srow[MAXV * 16];
    if (row_keys(K, g, xr, p, kv, srow, NV)) return 1;
    __mmask16 keep[MAXV];
    __m512 glo = _mm512_set1_ps(-INFINITY);
    const unsigned kept = kept_lanes(K, kv, keep, &glo, NV, MODE, NG, GS);
    select_kept(K, kv, keep, glo, kept, ids, NV, MODE);
    /* weights from the unbiased s, summed in slot order */
    const size_t k = K->k;
    double wd[16], sum = 0.0;
    for (size_t l = 0; l < k; l++) sum += wd[l] = (double)srow[ids[l]];
    const double inv = sum > 0 ? 1.0 / sum : 0.0;
    for (size_t l = 0; l < k; l++) w[l] = (float)(g->a * (g->renormalize ? wd[l] * inv : wd[l]));
    return 0;
}

/* The tree's pairing at group width w = 2^wl (row wl): lanes 0..7 from
 * a, 8..15 from b (index + 16); lane l of a group's half takes lane
 * l / (w/2) * w + l % (w/2) (ix) and that plus w / 2 (iy). */
static const int32_t tree_ix[5][16] = {
    {0},
    {0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30},
    {0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29},
    {0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27},
    {0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23},
};
static const int32_t tree_iy[5][16] = {
    {0},
    {1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31},
    {2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30, 31},
    {4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31},
    {8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31},
};

#define ROWS(NV, MODE, NG, GS)                                                                          \
    for (size_t r = 0; r < n; r++)                                                                       \
        if (sgate_row(&K, g, x + r * ldx, ids + r * ldi, w + r * ldw, p ? p + r * ldp : NULL, NV, MODE, \
                      NG, GS))                                                                           \
            return r;                                                                                    \
    return SIZE_MAX

size_t sg_route_sgate__avx512(const sg_route_sgate *g, size_t n, const float *x, size_t ldx, int32_t *ids,
                              size_t ldi, float *w, size_t ldw, float *p, size_t ldp, float *work) {
    sgk K;
    K.e = g->e, K.nv = (g->e + 15) / 16, K.k = g->k;
    K.ng = g->n_group > 1 ? g->n_group : 1, K.gs = g->e / K.ng, K.tg = g->topk_group;
    const size_t ng = K.ng, gs = K.gs;
    int ok = K.e <= 16 * MAXV && K.k <= 16;
    size_t ngp = 1; /* the groups, padded to a power of two */
    while (ngp < ng) ngp *= 2;
    if (ng == 1) K.mode = 0;
    else if (gs == 1) K.mode = 3, ok &= K.e <= 16;
    else if (gs % 16 == 0) K.mode = 1, ok &= ngp <= 16;
    else if ((gs & (gs - 1)) == 0) { /* 2, 4, 8: the vectors' tree must end in one vector */
        size_t nvp = 1;
        while (nvp < K.nv) nvp *= 2;
        K.mode = 2, ok &= ng <= 16 && nvp <= gs;
    } else ok = 0;
    if (!ok) return sg_route_sgate__ref(g, n, x, ldx, ids, ldi, w, ldw, p, ldp, work);
    K.m = gs / 16;
    for (size_t wl = 1; wl <= 4; wl++)
        K.ix[wl] = _mm512_loadu_si512(tree_ix[wl]), K.iy[wl] = _mm512_loadu_si512(tree_iy[wl]);
    /* the shapes of the benchmark's DeepSeek-V3 rows as constants */
    /* (the group size decides the tree: E = 16 in 4 groups is not E = 8's shape) */
    if (K.mode == 1 && K.nv == 16 && ng == 8 && gs == 32) { ROWS(16, 1, 8, 32); }
    if (K.mode == 2 && K.nv == 4 && ng == 8 && gs == 8) { ROWS(4, 2, 8, 8); }
    if (K.mode == 2 && K.nv == 1 && ng == 4 && gs == 2) { ROWS(1, 2, 4, 2); }
    switch (K.mode) {
    case 0: ROWS(K.nv, 0, 0, 0);
    case 1: ROWS(K.nv, 1, 0, 0);
    case 2: ROWS(K.nv, 2, 0, 0);
    default: ROWS(1, 3, 0, 0);
    }
}

/*
 * route_avx512.c - AVX-512 top-k selection (contract in route_kernels.h,
 * reference sg_route_topk__ref). Rows of n > 16 keys: the maxima of the
 * 16 lanes over the row (16 disjoint columns) give thr = their k-th
 * largest, a lower bound of the k-th largest key (k distinct keys, one per
 * column, are >= thr); the keys >= thr (every selected key and every key
 * tied with the k-th) are compressed with their ids in index order. The
 * candidates (or a whole row of n <= 16) are then ranked without branches:
 * rank_i = #{j : c_j > c_i} + #{j < i : c_j == c_i}, the position in the
 * reference's order (descending, ties to the lower index). Rows with
 * k > 16, n > SG_ROUTE_STACK_E, or more than 32 candidates (many ties) use
 * the reference or its exact insertion.
 */
#include <immintrin.h>
#include <math.h>

#include "route/route_internal.h"
#include "route/route_kernels.h"

static inline __mmask16 lanes(size_t m) {
    return m >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << m) - 1);
}

/* Ranks nc <= 32 candidates (keys c, ids d, in index order) and writes
 * those of rank < k to ids/top. */
static void place32(const float *c, const int32_t *d, size_t nc, size_t k, int32_t *ids,
                    float *top) {
    const __mmask16 m0 = lanes(nc), m1 = lanes(nc > 16 ? nc - 16 : 0);
    const __m512 v0 = _mm512_maskz_loadu_ps(m0, c), v1 = _mm512_maskz_loadu_ps(m1, c + 16);
    const __m512i one = _mm512_set1_epi32(1);
    __m512i r0 = _mm512_setzero_si512(), r1 = r0;
    for (size_t j = 0; j < nc; j++) {
        const __m512 b = _mm512_set1_ps(c[j]);
        /* lanes after j: ties there count j ahead of them */
        const __mmask16 a0 = (__mmask16)((0xFFFFu << (j < 15 ? j + 1 : 16)) & 0xFFFFu);
        const __mmask16 a1 = j < 16 ? (__mmask16)0xFFFF : (__mmask16)((0xFFFFu << (j - 15)) & 0xFFFFu);
        const __mmask16 g0 = _mm512_cmp_ps_mask(b, v0, _CMP_GT_OQ) |
                             (_mm512_cmp_ps_mask(b, v0, _CMP_EQ_OQ) & a0);
        r0 = _mm512_mask_add_epi32(r0, g0, r0, one);
        if (nc > 16) {
            const __mmask16 g1 = _mm512_cmp_ps_mask(b, v1, _CMP_GT_OQ) |
                                 (_mm512_cmp_ps_mask(b, v1, _CMP_EQ_OQ) & a1);
            r1 = _mm512_mask_add_epi32(r1, g1, r1, one);
        }
    }
    /* rank s's lane (ranks are distinct) found by a compare on the ranks
     * in registers: reading them back from memory stalled on the vector
     * store, and scatters are slow on some cores (microcoded on Zen 4) */
    for (size_t s = 0; s < k && s < nc; s++) {
        const __m512i rs = _mm512_set1_epi32((int32_t)s);
        const unsigned e0 = _mm512_cmpeq_epi32_mask(r0, rs) & m0;
        const unsigned e1 = (_mm512_cmpeq_epi32_mask(r1, rs) & m1) | 0x10000u; /* never 0 */
        const size_t lane = e0 ? (size_t)__builtin_ctz(e0) : 16 + (size_t)__builtin_ctz(e1);
        ids[s] = d[lane];
        top[s] = c[lane];
    }
}

/* The k-th largest (1 <= k <= 16) of the 16 lanes of m. */
static inline float kth16(__m512 m, size_t k) {
    float v[16];
    _mm512_storeu_ps(v, m);
    const __m512i one = _mm512_set1_epi32(1);
    __m512i gt = _mm512_setzero_si512();
    for (size_t j = 0; j < 16; j++)
        gt = _mm512_mask_add_epi32(gt, _mm512_cmp_ps_mask(_mm512_set1_ps(v[j]), m, _CMP_GT_OQ),
                                   gt, one);
    /* the lanes with fewer than k strictly larger: values >= the k-th */
    return _mm512_mask_reduce_min_ps(_mm512_cmplt_epi32_mask(gt, _mm512_set1_epi32((int32_t)k)),
                                     m);
}

void sg_route_topk__avx512(const float *key, size_t n, size_t k, int32_t *ids, float *top) {
    static const int32_t iota32[32] = {0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10,
                                       11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21,
                                       22, 23, 24, 25, 26, 27, 28, 29, 30, 31};
    if (k == 0) return;
    if (n <= 4 && k <= 2 && sg_route_select_top2(key, n, k, ids, top)) return;
    if (n <= 16 && k <= 2) {
        /* the first lane holding the maximum, then the first other lane
         * holding the maximum of the rest (a repeated maximum is taken
         * twice, the lower lane first) */
        const __mmask16 all = lanes(n);
        const __m512 ninf = _mm512_set1_ps(-INFINITY);
        const __m512 v = _mm512_mask_loadu_ps(ninf, all, key);
        const float b1 = _mm512_mask_reduce_max_ps(all, v);
        const unsigned i1 = (unsigned)__builtin_ctz(
            (unsigned)_mm512_mask_cmp_ps_mask(all, v, _mm512_set1_ps(b1), _CMP_EQ_OQ));
        if (k == 1 && b1 > -INFINITY) {
            ids[0] = (int32_t)i1, top[0] = key[i1];
            return;
        }
        const __mmask16 rest = (__mmask16)(all & ~(1u << i1));
        const float b2 = _mm512_mask_reduce_max_ps(rest, v);
        if (k == 2 && b2 > -INFINITY) {
            const unsigned i2 = (unsigned)__builtin_ctz(
                (unsigned)_mm512_mask_cmp_ps_mask(rest, v, _mm512_set1_ps(b2), _CMP_EQ_OQ));
            ids[0] = (int32_t)i1, top[0] = key[i1];
            ids[1] = (int32_t)i2, top[1] = key[i2];
            return;
        }
        /* fewer than k keys above -inf: the ranking below */
    }
    if (n <= 16 || (n <= 32 && k > 16)) {
        place32(key, iota32, n, k, ids, top);
        return;
    }
    if (k == 1) { /* the maximum, then the first lane equal to it (-0 == +0) */
        const __m512 ninf = _mm512_set1_ps(-INFINITY);
        __m512 m0 = ninf, m1 = ninf;
        size_t i = 0;
        for (; i + 32 <= n; i += 32)
            m0 = _mm512_max_ps(m0, _mm512_loadu_ps(key + i)), m1 = _mm512_max_ps(m1, _mm512_loadu_ps(key + i + 16));
        for (; i < n; i += 16) m0 = _mm512_max_ps(m0, _mm512_mask_loadu_ps(ninf, lanes(n - i), key + i));
        const float b = _mm512_reduce_max_ps(_mm512_max_ps(m0, m1));
        const __m512 vb = _mm512_set1_ps(b);
        for (i = 0; i < n; i += 16) {
            const __mmask16 l = lanes(n - i);
            const __mmask16 q = _mm512_mask_cmp_ps_mask(l, _mm512_maskz_loadu_ps(l, key + i), vb, _CMP_EQ_OQ);
            if (q) {
                ids[0] = (int32_t)(i + (size_t)__builtin_ctz(q));
                top[0] = key[ids[0]];
                return;
            }
        }
    }
    if (k > 16 || n > SG_ROUTE_STACK_E) {
        sg_route_topk__ref(key, n, k, ids, top);
        return;
    }
    const __m512 ninf = _mm512_set1_ps(-INFINITY);
    __m512 m = _mm512_loadu_ps(key), m1 = _mm512_mask_loadu_ps(ninf, lanes(n - 16), key + 16);
    size_t i = 32;
    for (; i + 32 <= n; i += 32)
        m = _mm512_max_ps(m, _mm512_loadu_ps(key + i)),
        m1 = _mm512_max_ps(m1, _mm512_loadu_ps(key + i + 16));
    for (; i < n; i += 16) m = _mm512_max_ps(m, _mm512_mask_loadu_ps(ninf, lanes(n - i), key + i));
    const __m512 thr = _mm512_set1_ps(kth16(_mm512_max_ps(m, m1), k));
    /* candidates in index order; 16 spare slots for the full-vector stores */
    float c[SG_ROUTE_STACK_E + 16];
    int32_t d[SG_ROUTE_STACK_E + 16];
    size_t nc = 0;
    __m512i id = _mm512_loadu_si512(iota32);
    const __m512i sixteen = _mm512_set1_epi32(16);
    for (i = 0; i < n; i += 16) {
        const __m512 v = _mm512_mask_loadu_ps(ninf, lanes(n - i), key + i);
        const __mmask16 q = _mm512_mask_cmp_ps_mask(lanes(n - i), v, thr, _CMP_GE_OQ);
        _mm512_storeu_ps(c + nc, _mm512_maskz_compress_ps(q, v));
        _mm512_storeu_si512(d + nc, _mm512_maskz_compress_epi32(q, id));
        nc += (size_t)__builtin_popcount(q);
        id = _mm512_add_epi32(id, sixteen);
    }
    if (nc <= 32) {
        place32(c, d, nc, k, ids, top);
        return;
    }
    size_t f = 0;
    for (size_t q = 0; q < nc; q++) sg_route_insert(c[q], (size_t)d[q], k, ids, top, &f, 0);
}

/* ---- expert choice: per-expert top-c lists (route_kernels.h) ----------- */

static inline __mmask8 lanes8(size_t m) {
    return m >= 8 ? (__mmask8)0xFF : (__mmask8)((1u << m) - 1);
}

/* The keys of 8 experts for one token: (double)x * inv - l; the product
 * is exact (24-bit times 24-bit significands), so a fused multiply-add
 * would round the same. */
static inline __m512d ec_key8(const float *x, __mmask8 m, __m512d vinv, double l) {
    const __m512d xd = _mm512_cvtps_pd(_mm256_maskz_loadu_ps(m, x));
    return _mm512_sub_pd(_mm512_mul_pd(xd, vinv), _mm512_set1_pd(l));
}

/* c (2..4, a constant after inlining) levels of 8 experts in registers;
 * every token runs them without a branch: from the first level its key
 * beats, the lane's pairs shift down. */
static inline __attribute__((always_inline)) void ec_small(size_t rt, size_t re, const float *x, size_t ldx,
                                                           const double *lse, __m512d vinv, __mmask8 m8,
                                                           double *bk, int32_t *bt, size_t ldb, const size_t c) {
    __m512d b[4];
    __m256i tk[4];
    for (size_t j = 0; j < c; j++) {
        b[j] = _mm512_loadu_pd(bk + j * ldb);
        tk[j] = _mm256_loadu_si256((const __m256i *)(const void *)(bt + j * ldb));
    }
    for (size_t r = rt; r < re; r++) {
        __m512d v = ec_key8(x + r * ldx, m8, vinv, lse[r]);
        __m256i tv = _mm256_set1_epi32((int)r);
        __mmask8 s = 0;
        for (size_t j = 0; j < c; j++) {
            s |= _mm512_mask_cmp_pd_mask(m8, v, b[j], _CMP_GT_OQ);
            const __m512d nb = _mm512_mask_mov_pd(b[j], s, v);
            const __m256i nt = _mm256_mask_mov_epi32(tk[j], s, tv);
            v = _mm512_mask_mov_pd(v, s, b[j]);
            tv = _mm256_mask_mov_epi32(tv, s, tk[j]);
            b[j] = nb, tk[j] = nt;
        }
    }
    for (size_t j = 0; j < c; j++) {
        _mm512_storeu_pd(bk + j * ldb, b[j]);
        _mm256_storeu_si256((__m256i *)(void *)(bt + j * ldb), tk[j]);
    }
}

/* Tiles of 32 tokens; in a tile, groups of 8 experts: c = 1 keeps the
 * group's best in registers without a branch; c > 1 compares each token
 * with the group's c-th keys and, when a lane beats it, runs the strict
 * insertion over the c levels in memory: from the first level it beats, a
 * lane's pairs shift down one slot (the other lanes cannot move: their key
 * is <= every kept key). */
void sg_route_ec_insert__avx512(size_t r0, size_t r1, size_t e, const float *x, size_t ldx,
                                const double *lse, double inv, size_t c, const double *thr, double *bk,
                                int32_t *bt, size_t ldb) {
    const __m512d vinv = _mm512_set1_pd(inv);
    /* ldb is a multiple of 8: whole-vector loads and stores of the lists
     * (a masked store does not forward to the caller's later loads) */
    const int fresh = r0 == 0;
    if (fresh) {
        const __m512d ninf = _mm512_set1_pd(-INFINITY);
        for (size_t q = 0; q < c * ldb; q += 8) {
            _mm512_storeu_pd(bk + q, ninf);
            _mm256_storeu_si256((__m256i *)(void *)(bt + q), _mm256_setzero_si256());
        }
    }
    for (size_t rt = r0; rt < r1; rt += 32) {
        const size_t re = r1 - rt < 32 ? r1 : rt + 32;
        size_t i = 0;
        if (c == 1) /* 32 experts at a time: four independent chains of the loop below */
            for (; i + 32 <= e; i += 32) {
                __m512d b0 = _mm512_loadu_pd(bk + i), b1 = _mm512_loadu_pd(bk + i + 8);
                __m512d b2 = _mm512_loadu_pd(bk + i + 16), b3 = _mm512_loadu_pd(bk + i + 24);
                __m256i t0 = _mm256_loadu_si256((const __m256i *)(const void *)(bt + i));
                __m256i t1 = _mm256_loadu_si256((const __m256i *)(const void *)(bt + i + 8));
                __m256i t2 = _mm256_loadu_si256((const __m256i *)(const void *)(bt + i + 16));
                __m256i t3 = _mm256_loadu_si256((const __m256i *)(const void *)(bt + i + 24));
                for (size_t r = rt; r < re; r++) {
                    const __m512d l = _mm512_set1_pd(lse[r]);
                    const __m256i tr = _mm256_set1_epi32((int)r);
                    const float *xr = x + r * ldx + i;
#define SG_EC_LANE(B, T, O)                                                                           \
    do {                                                                                              \
        const __m512d v = _mm512_sub_pd(_mm512_mul_pd(_mm512_cvtps_pd(_mm256_loadu_ps(xr + O)), vinv), l); \
        const __mmask8 gt = _mm512_cmp_pd_mask(v, B, _CMP_GT_OQ);                                    \
        B = _mm512_mask_mov_pd(B, gt, v);                                                             \
        T = _mm256_mask_mov_epi32(T, gt, tr);                                                         \
    } while (0)
                    SG_EC_LANE(b0, t0, 0);
                    SG_EC_LANE(b1, t1, 8);
                    SG_EC_LANE(b2, t2, 16);
                    SG_EC_LANE(b3, t3, 24);
#undef SG_EC_LANE
                }
                _mm512_storeu_pd(bk + i, b0), _mm512_storeu_pd(bk + i + 8, b1);
                _mm512_storeu_pd(bk + i + 16, b2), _mm512_storeu_pd(bk + i + 24, b3);
                _mm256_storeu_si256((__m256i *)(void *)(bt + i), t0);
                _mm256_storeu_si256((__m256i *)(void *)(bt + i + 8), t1);
                _mm256_storeu_si256((__m256i *)(void *)(bt + i + 16), t2);
                _mm256_storeu_si256((__m256i *)(void *)(bt + i + 24), t3);
            }
        for (; i < e; i += 8) {
            const __mmask8 m8 = lanes8(e - i);
            if (c == 1) {
                __m512d b = _mm512_loadu_pd(bk + i);
                __m256i t = _mm256_loadu_si256((const __m256i *)(const void *)(bt + i));
                for (size_t r = rt; r < re; r++) {
                    const __m512d v = ec_key8(x + r * ldx + i, m8, vinv, lse[r]);
                    const __mmask8 g = _mm512_mask_cmp_pd_mask(m8, v, b, _CMP_GT_OQ);
                    b = _mm512_mask_mov_pd(b, g, v);
                    t = _mm256_mask_set1_epi32(t, g, (int)r);
                }
                _mm512_storeu_pd(bk + i, b);
                _mm256_storeu_si256((__m256i *)(void *)(bt + i), t);
                continue;
            }
            if (c <= 4 && !thr) { /* the c levels in registers, without a branch */
                if (c == 2) ec_small(rt, re, x + i, ldx, lse, vinv, m8, bk + i, bt + i, ldb, 2);
                else if (c == 3) ec_small(rt, re, x + i, ldx, lse, vinv, m8, bk + i, bt + i, ldb, 3);
                else ec_small(rt, re, x + i, ldx, lse, vinv, m8, bk + i, bt + i, ldb, 4);
                continue;
            }
            double *wp = bk + (c - 1) * ldb + i;
            __m512d w = _mm512_loadu_pd(wp);
            /* thr: keys below it are not inserted (-inf: all are) */
            const __m512d th = thr ? _mm512_maskz_loadu_pd(m8, thr + i) : _mm512_set1_pd(-INFINITY);
            for (size_t r = rt; r < re; r++) {
                __m512d v = ec_key8(x + r * ldx + i, m8, vinv, lse[r]);
                if (!(_mm512_mask_cmp_pd_mask(m8, v, w, _CMP_GT_OQ) &
                      _mm512_cmp_pd_mask(v, th, _CMP_GE_OQ)))
                    continue;
                __m256i tv = _mm256_set1_epi32((int)r);
                __mmask8 s = 0; /* lanes that inserted: the rest of their list shifts down */
                for (size_t j = 0; j < c; j++) {
                    double *pb = bk + j * ldb + i;
                    int32_t *pt = bt + j * ldb + i;
                    const __m512d b = _mm512_loadu_pd(pb);
                    s |= _mm512_mask_cmp_pd_mask(m8, v, b, _CMP_GT_OQ) & _mm512_cmp_pd_mask(v, th, _CMP_GE_OQ);
                    if (!s) continue;
                    const __m256i tb = _mm256_loadu_si256((const __m256i *)(const void *)pt);
                    _mm512_storeu_pd(pb, _mm512_mask_mov_pd(b, s, v));
                    _mm256_storeu_si256((__m256i *)(void *)pt, _mm256_mask_mov_epi32(tb, s, tv));
                    v = _mm512_mask_mov_pd(v, s, b);
                    tv = _mm256_mask_mov_epi32(tv, s, tb);
                }
                w = _mm512_loadu_pd(wp);
            }
        }
    }
}

/* Whole-vector loads of the lists; tokens and keys out by 64-bit-index
 * scatters (any ldt), or plain stores when c == 1 and ldt == 1 (16 keys
 * per 512-bit store, the width the softmax core reads them at). */
int sg_route_ec_finish__avx512(size_t c, size_t n, size_t ldb, const double *bk, const int32_t *bt,
                               int32_t *tok, size_t ldt, float *kf) {
    const __m512d ninf = _mm512_set1_pd(-INFINITY);
    __mmask8 hole = 0;
    for (size_t i = 0; i < n; i += 8)
        hole |= _mm512_mask_cmp_pd_mask(lanes8(n - i), _mm512_loadu_pd(bk + (c - 1) * ldb + i), ninf,
                                        _CMP_EQ_OQ);
    if (c == 1 && ldt == 1) {
        size_t i = 0;
        for (; i + 16 <= n; i += 16) {
            const __m256 lo = _mm512_cvtpd_ps(_mm512_loadu_pd(bk + i));
            const __m256 hi = _mm512_cvtpd_ps(_mm512_loadu_pd(bk + i + 8));
            _mm512_storeu_ps(kf + i, _mm512_insertf32x8(_mm512_castps256_ps512(lo), hi, 1));
            _mm256_storeu_si256((__m256i *)(void *)(tok + i),
                                _mm256_loadu_si256((const __m256i *)(const void *)(bt + i)));
            _mm256_storeu_si256((__m256i *)(void *)(tok + i + 8),
                                _mm256_loadu_si256((const __m256i *)(const void *)(bt + i + 8)));
        }
        for (; i < n; i += 8) {
            const __mmask8 m = lanes8(n - i);
            _mm256_mask_storeu_ps(kf + i, m, _mm512_cvtpd_ps(_mm512_loadu_pd(bk + i)));
            _mm256_mask_storeu_epi32(tok + i, m, _mm256_loadu_si256((const __m256i *)(const void *)(bt + i)));
        }
        return hole != 0;
    }
    const __m512i lane = _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0);
    for (size_t i = 0; i < n; i += 8) {
        const __mmask8 m = lanes8(n - i);
        const __m512i row = _mm512_add_epi64(lane, _mm512_set1_epi64((long long)i));
        const __m512i ti = _mm512_mullo_epi64(row, _mm512_set1_epi64((long long)ldt));
        const __m512i ki = _mm512_mullo_epi64(row, _mm512_set1_epi64((long long)c));
        for (size_t s = 0; s < c; s++) {
            const __m512i so = _mm512_set1_epi64((long long)s);
            _mm512_mask_i64scatter_epi32(tok, m, _mm512_add_epi64(ti, so),
                                         _mm256_loadu_si256((const __m256i *)(const void *)(bt + s * ldb + i)), 4);
            _mm512_mask_i64scatter_ps(kf, m, _mm512_add_epi64(ki, so), _mm512_cvtpd_ps(_mm512_loadu_pd(bk + s * ldb + i)),
                                      4);
        }
    }
    return hole != 0;
}

/* Float keys x * inv - (float)lse, their maxima down the rows 64 experts
 * at a time in registers, less M = 2^-20 (|max| + max |lse| + 1): each
 * float key is within 2^-23 (|lse| + |key|) + 2^-149 of its double key, so
 * the block's best token has a double key >= the result. With inv <= 1 a
 * float key never overflows to +inf (|x * inv| <= FLT_MAX, and
 * (float)lse >= the row's largest x * inv, rounded); inv > 1 (temperature
 * below 1) takes the double keys. */
void sg_route_ec_blockmax__avx512(size_t r0, size_t r1, size_t e, const float *x, size_t ldx,
                                  const double *lse, double inv, double *out) {
    if (!(inv <= 1.0)) {
        sg_route_ec_blockmax__ref(r0, r1, e, x, ldx, lse, inv, out);
        return;
    }
    double lmx = 0.0;
    for (size_t r = r0; r < r1; r++) lmx = fabs(lse[r]) > lmx ? fabs(lse[r]) : lmx;
    const __m512 vinv = _mm512_set1_ps((float)inv), ninf = _mm512_set1_ps(-INFINITY);
    for (size_t i = 0; i < e; i += 64) {
        const __mmask16 m0 = lanes(e - i), m1 = lanes(e > i + 16 ? e - i - 16 : 0),
                        m2 = lanes(e > i + 32 ? e - i - 32 : 0), m3 = lanes(e > i + 48 ? e - i - 48 : 0);
        __m512 b0 = ninf, b1 = ninf, b2 = ninf, b3 = ninf;
        for (size_t r = r0; r < r1; r++) {
            const float *xr = x + r * ldx + i;
            const __m512 l = _mm512_set1_ps((float)lse[r]);
            b0 = _mm512_max_ps(b0, _mm512_sub_ps(_mm512_mul_ps(_mm512_mask_loadu_ps(ninf, m0, xr), vinv), l));
            if (m1) b1 = _mm512_max_ps(b1, _mm512_sub_ps(_mm512_mul_ps(_mm512_mask_loadu_ps(ninf, m1, xr + 16), vinv), l));
            if (m2) b2 = _mm512_max_ps(b2, _mm512_sub_ps(_mm512_mul_ps(_mm512_mask_loadu_ps(ninf, m2, xr + 32), vinv), l));
            if (m3) b3 = _mm512_max_ps(b3, _mm512_sub_ps(_mm512_mul_ps(_mm512_mask_loadu_ps(ninf, m3, xr + 48), vinv), l));
        }
        float bs[64];
        _mm512_storeu_ps(bs, b0), _mm512_storeu_ps(bs + 16, b1);
        _mm512_storeu_ps(bs + 32, b2), _mm512_storeu_ps(bs + 48, b3);
        for (size_t q = 0; q < 64 && i + q < e; q++) {
            const double b = (double)bs[q];
            out[i + q] = b - (fabs(b) + lmx + 1.0) * 0x1p-20; /* -inf stays -inf */
        }
    }
}

/* Rows outer, groups of 8 experts inner; a hit's key is recomputed in
 * scalar (the same value: the product is exact) rather than read back
 * from a vector store. */
void sg_route_ec_collect__avx512(size_t r0, size_t r1, size_t e, const float *x, size_t ldx,
                                 const double *lse, double inv, const double *thr, size_t cap,
                                 double *ck, int32_t *ct, uint32_t *cnt) {
    /* A float filter first: x * (float)inv >= (float)thr + (float)lse - M
     * holds for every key >= thr, M covering the float roundings (each
     * <= 2^-24 of |thr| + |lse| near the threshold, where |x * inv| <=
     * |thr| + |lse| + 1); the hits are then tested exactly in double. */
    double tmax = 0.0, lmx = 0.0;
    for (size_t i = 0; i < e; i++)
        if (thr[i] > -INFINITY) tmax = fabs(thr[i]) > tmax ? fabs(thr[i]) : tmax;
    for (size_t r = r0; r < r1; r++) lmx = fabs(lse[r]) > lmx ? fabs(lse[r]) : lmx;
    const float marg = (float)((tmax + lmx + 1.0) * 0x1p-19), finv = (float)inv;
    if (!(marg < 1e30f) || (double)finv != inv) { /* huge values: the double test alone */
        for (size_t r = r0; r < r1; r++)
            for (size_t i = 0; i < e; i++) {
                const double v = (double)x[r * ldx + i] * inv - lse[r];
                if (!(v >= thr[i])) continue;
                const size_t n = cnt[i]++;
                if (n < cap) ck[i * cap + n] = v, ct[i * cap + n] = (int32_t)r;
            }
        return;
    }
    float tf[SG_ROUTE_STACK_E + 16];
    const size_t ec = e < SG_ROUTE_STACK_E ? e : SG_ROUTE_STACK_E;
    for (size_t i = 0; i < ec; i++) tf[i] = (float)thr[i] - marg; /* -inf stays -inf */
    const __m512 vfinv = _mm512_set1_ps(finv);
    for (size_t r = r0; r < r1; r++) {
        const float *xr = x + r * ldx;
        const double l = lse[r];
        const __m512 vl = _mm512_set1_ps((float)l);
        for (size_t i = 0; i < e; i += 16) {
            unsigned h;
            if (i + 16 <= ec) {
                h = _mm512_cmp_ps_mask(_mm512_mul_ps(_mm512_loadu_ps(xr + i), vfinv),
                                       _mm512_add_ps(_mm512_loadu_ps(tf + i), vl), _CMP_GE_OQ);
            } else if (i < ec) {
                const __mmask16 m = lanes(ec - i);
                h = _mm512_mask_cmp_ps_mask(m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, xr + i), vfinv),
                                            _mm512_add_ps(_mm512_maskz_loadu_ps(m, tf + i), vl), _CMP_GE_OQ);
                h |= (unsigned)(lanes(e - i) & ~m); /* past the stack copy: test in double */
            } else {
                h = lanes(e - i);
            }
            while (h) {
                const size_t q = i + (size_t)__builtin_ctz(h);
                h &= h - 1;
                const double v = (double)xr[q] * inv - l;
                if (!(v >= thr[q])) continue;
                const size_t n = cnt[q]++;
                if (n < cap) ck[q * cap + n] = v, ct[q * cap + n] = (int32_t)r;
            }
        }
    }
}

/* Up to 256 candidates: rank_i = #{j : k_j > k_i} + #{j < i : k_j == k_i}
 * (the position in the stable descending order), eight i at a time
 * against every broadcast k_j; more: the reference's merge sort. */
void sg_route_ec_rank__avx512(size_t n, double *ck, int32_t *ct, size_t c, int32_t *tok, float *kf,
                              double *sk, int32_t *st) {
    if (n > 256) {
        sg_route_ec_rank__ref(n, ck, ct, c, tok, kf, sk, st);
        return;
    }
    const __m512i one = _mm512_set1_epi64(1);
    for (size_t i = 0; i < n; i += 8) {
        const __mmask8 m = lanes8(n - i);
        const __m512d ki = _mm512_maskz_loadu_pd(m, ck + i);
        const __m512i ii = _mm512_add_epi64(_mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0), _mm512_set1_epi64((long long)i));
        __m512i rk = _mm512_setzero_si512();
        for (size_t q = 0; q < n; q++) {
            const __m512d b = _mm512_set1_pd(ck[q]);
            const __mmask8 g = _mm512_cmp_pd_mask(b, ki, _CMP_GT_OQ) |
                               (_mm512_cmp_pd_mask(b, ki, _CMP_EQ_OQ) &
                                _mm512_cmpgt_epi64_mask(ii, _mm512_set1_epi64((long long)q)));
            rk = _mm512_mask_add_epi64(rk, g, rk, one);
        }
        long long r[8];
        _mm512_storeu_si512(r, rk);
        for (size_t l = 0; l < 8 && i + l < n; l++)
            if ((size_t)r[l] < c) tok[r[l]] = ct[i + l], kf[r[l]] = (float)ck[i + l];
    }
}

/* Eight experts at a time: the nb values go through c sorted levels
 * (branch-free: from the first level a value beats, the levels shift). */
void sg_route_ec_kth__avx512(size_t nb, size_t n, size_t ldb, const double *bm, size_t c, double *thr) {
    __m512d lv[32];
    for (size_t i = 0; i < n; i += 8) {
        const __mmask8 m8 = lanes8(n - i);
        for (size_t j = 0; j < c; j++) lv[j] = _mm512_set1_pd(-INFINITY);
        for (size_t b = 0; b < nb; b++) {
            __m512d v = _mm512_maskz_loadu_pd(m8, bm + b * ldb + i);
            __mmask8 s = 0;
            for (size_t j = 0; j < c; j++) {
                s |= _mm512_cmp_pd_mask(v, lv[j], _CMP_GT_OQ);
                const __m512d nl = _mm512_mask_mov_pd(lv[j], s, v);
                v = _mm512_mask_mov_pd(v, s, lv[j]);
                lv[j] = nl;
            }
        }
        _mm512_mask_storeu_pd(thr + i, m8, lv[c - 1]);
    }
}

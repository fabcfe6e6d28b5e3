/*
 * moe_avx2.c - AVX2 + FMA kernels of the MoE family (contracts in
 * moe_kernels.h). Compiled with AVX2 flags for this file only.
 *
 * rowdot: 2 rows of W times up to 4 rows of X per pass (8 accumulators:
 * AVX2 has 16 vector registers), the W rows staying in L1 while the next
 * rows of X use them.
 *
 * Software prefetch into L2 of the W rows about 32 KiB ahead, as in
 * moe_avx512.c (one line of a future row per 16 columns, the rows spread
 * over the row groups, never past the call's m rows).
 */
#include <immintrin.h>

#include "moe/moe_kernels.h"

#define VL 8

static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline __m256i tail_mask(size_t rem) {
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)rem), idx);
}

/* jw and nr are constants at every call: the pragmas unroll the loops so
 * the accumulators live in registers (-O2 would keep them on the stack). */
static inline __attribute__((always_inline)) void
block(int jw, int nr, size_t len, const float *x, size_t ldx, const float *w, size_t ldw,
      float *out, size_t ldo, const float *pf, unsigned pf_rows) {
    __m256 acc[2][4];
    #pragma GCC unroll 4
    for (int j = 0; j < jw; j++)
        #pragma GCC unroll 4
        for (int r = 0; r < nr; r++) acc[j][r] = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + VL <= len; i += VL) {
        if (pf_rows && !(i & 15)) {
            #pragma GCC unroll 2
            for (int q = 0; q < 2; q++)
                if (pf_rows & (1u << q)) _mm_prefetch((const char *)(pf + q * ldw + i), _MM_HINT_T1);
        }
        __m256 xv[4];
        #pragma GCC unroll 4
        for (int r = 0; r < nr; r++) xv[r] = _mm256_loadu_ps(x + r * ldx + i);
        #pragma GCC unroll 4
        for (int j = 0; j < jw; j++) {
            __m256 wv = _mm256_loadu_ps(w + j * ldw + i);
            #pragma GCC unroll 4
            for (int r = 0; r < nr; r++) acc[j][r] = _mm256_fmadd_ps(wv, xv[r], acc[j][r]);
        }
    }
    if (i < len) {
        __m256i m = tail_mask(len - i);
        __m256 xv[4];
        #pragma GCC unroll 4
        for (int r = 0; r < nr; r++) xv[r] = _mm256_maskload_ps(x + r * ldx + i, m);
        #pragma GCC unroll 4
        for (int j = 0; j < jw; j++) {
            __m256 wv = _mm256_maskload_ps(w + j * ldw + i, m);
            #pragma GCC unroll 4
            for (int r = 0; r < nr; r++) acc[j][r] = _mm256_fmadd_ps(wv, xv[r], acc[j][r]);
        }
    }
    #pragma GCC unroll 4
    for (int j = 0; j < jw; j++)
        #pragma GCC unroll 4
        for (int r = 0; r < nr; r++) out[r * ldo + j] = hsum(acc[j][r]);
}

#define BLOCK(jw, nr) block(jw, nr, len, xr, ldx, wj, ldw, out + r0 * ldo + j, ldo, pf, pf_rows)

/* Prefetch distance: about 32 KiB of W ahead, whole blocks of 2 rows. */
#define PF_BYTES ((size_t)32768)

void sg_moe_rowdot_f32__avx2(size_t n, size_t m, size_t len, const float *x, size_t ldx,
                             const float *w, size_t ldw, float *out, size_t ldo,
                             const float *next, size_t next_m) {
    size_t pf_ahead = (PF_BYTES / (ldw * sizeof(float) + 1) + 1) / 2 * 2;
    if (pf_ahead < 2) pf_ahead = 2;
    size_t groups = (n + 3) / 4;
    for (size_t j = 0; j < m;) {
        size_t jw = m - j >= 2 ? 2 : 1;
        const float *wj = w + j * ldw, *pf;
        /* the block pf_ahead rows ahead: its rows that exist in this call,
         * or else in next */
        size_t ahead = j + pf_ahead, pf_have;
        if (ahead < m) {
            pf = w + ahead * ldw;
            pf_have = m - ahead < 2 ? m - ahead : 2;
        } else {
            pf = next ? next + (ahead - m) * ldw : NULL;
            pf_have = !next || ahead - m >= next_m ? 0 : next_m - (ahead - m) < 2 ? next_m - (ahead - m) : 2;
        }
        for (size_t r0 = 0, g = 0; r0 < n; r0 += 4, g++) {
            const float *xr = x + r0 * ldx;
            size_t nr = n - r0 < 4 ? n - r0 : 4;
            /* row group g prefetches the future rows q with q % groups == g */
            unsigned pf_rows = 0;
            for (size_t q = g; q < pf_have; q += groups) pf_rows |= 1u << q;
            if (jw == 2) {
                switch (nr) {
                case 1: BLOCK(2, 1); break;
                case 2: BLOCK(2, 2); break;
                case 3: BLOCK(2, 3); break;
                default: BLOCK(2, 4); break;
                }
            } else {
                switch (nr) {
                case 1: BLOCK(1, 1); break;
                case 2: BLOCK(1, 2); break;
                case 3: BLOCK(1, 3); break;
                default: BLOCK(1, 4); break;
                }
            }
        }
        j += jw;
    }
}

/* exp(t) for t in [-87, 88] (clamped by the caller): the reduction and
 * polynomial of moe_avx512.c, 2^k built in the exponent field (k in
 * [-126, 127] on that range, so always a normal number). */
static inline __m256 exp_clamped(__m256 t) {
    __m256 k = _mm256_round_ps(_mm256_mul_ps(t, _mm256_set1_ps(0x1.715476p+0f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fmadd_ps(k, _mm256_set1_ps(-0x1.62E430p-1f), t);
    r = _mm256_fmadd_ps(k, _mm256_set1_ps(0x1.05C610p-29f), r);
    __m256 p = _mm256_fmadd_ps(_mm256_set1_ps(0x1.0F9F9Cp-7f), r, _mm256_set1_ps(0x1.573A1Ap-5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0x1.555A80p-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0x1.FFFDC6p-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0x1.FFFFF6p-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

/* a / (1 + exp(-s)); see moe_avx512.c. */
static inline __m256 sig_mul(__m256 a, __m256 s) {
    __m256 t = _mm256_sub_ps(_mm256_setzero_ps(), s);
    t = _mm256_min_ps(_mm256_max_ps(t, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
    return _mm256_div_ps(a, _mm256_add_ps(_mm256_set1_ps(1.0f), exp_clamped(t)));
}

void sg_moe_act_f32__avx2(sg_moe_activation act, size_t cnt, float *a, const float *b) {
    if (act == SG_MOE_GELU_ERF) {
        sg_moe_act_f32__ref(act, cnt, a, b);
        return;
    }
    size_t i = 0;
    for (; i + VL <= cnt; i += VL) {
        __m256 av = _mm256_loadu_ps(a + i), v;
        if (act == SG_MOE_SWIGLU) {
            v = _mm256_mul_ps(sig_mul(av, av), _mm256_loadu_ps(b + i));
        } else {
            __m256 a3 = _mm256_mul_ps(_mm256_mul_ps(av, av), av);
            __m256 u = _mm256_fmadd_ps(a3, _mm256_set1_ps(0.044715f), av);
            v = sig_mul(av, _mm256_mul_ps(u, _mm256_set1_ps(1.5957691216057308f)));
        }
        _mm256_storeu_ps(a + i, v);
    }
    if (i < cnt) sg_moe_act_f32__ref(act, cnt - i, a + i, b ? b + i : NULL);
}

/*
 * moe_avx512.c - AVX-512 kernels of the MoE family (contracts in
 * moe_kernels.h). Compiled with AVX-512 flags for this file only.
 *
 * rowdot: 4 rows of W times up to 4 rows of X per pass: 16 accumulators,
 * 4 W loads and 4 X loads per 16 columns. The 4 W rows (16 KiB at D = 1024)
 * stay in L1 while the next 4 rows of X use them, so W comes from memory
 * once: at decode sizes the kernel runs at the weight-streaming rate.
 *
 * Software prefetch into L2 of the W rows PF_BYTES ahead (prefetcht1, one
 * line of a future row per 16 columns, the block's rows spread over the
 * passes of its row groups). Each W row at D = 1024 is one 4 KiB page,
 * where the hardware prefetcher starts over, and without the prefetch the
 * time was the memory time plus the FMA time (no overlap): measured on 8
 * matrices of 2816 x 1024 against a read-only pass over them, the ratio
 * went from 0.55-0.65 to 0.76-0.82 at 4 rows, 0.49 to 0.62-0.68 at 8 rows,
 * 0.75-0.85 to 0.9-1.05 at 1-2 rows. Into L1 (prefetcht0), or a second
 * prefetch closer in, was slower; 8 rows ahead beat 16 and 32. Prefetches
 * stay inside the call's m rows: they never touch memory the call does
 * not read.
 */
#include <immintrin.h>

#include "moe/moe_kernels.h"

#define VL 16

/* The 16 horizontal sums of a full 4 x 4 block at once: a transposing
 * reduction tree (45 shuffles and adds instead of 16 separate reductions of
 * 8 each). Lane 4r + j of the result is sum(acc[j][r]), so 128-bit lane r
 * holds out[r][0..3], stored directly. */
static inline __m512 add_pairs_ps(__m512 a, __m512 b) {
    /* per 128-bit lane: [a0+a2, b0+b2, a1+a3, b1+b3] */
    return _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
}

static inline __m512 add_quads_ps(__m512 p, __m512 q) {
    /* per 128-bit lane: the lane's partial sums of the four vectors */
    __m512d pd = _mm512_castps_pd(p), qd = _mm512_castps_pd(q);
    return _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(pd, qd)),
                         _mm512_castpd_ps(_mm512_unpackhi_pd(pd, qd)));
}

static inline void store_4x4(__m512 acc[4][4], float *out, size_t ldo) {
    __m512 g[4];
    for (int r = 0; r < 4; r++)
        g[r] = add_quads_ps(add_pairs_ps(acc[0][r], acc[1][r]), add_pairs_ps(acc[2][r], acc[3][r]));
    __m512 u01 = _mm512_add_ps(_mm512_shuffle_f32x4(g[0], g[1], 0x44), _mm512_shuffle_f32x4(g[0], g[1], 0xEE));
    __m512 u23 = _mm512_add_ps(_mm512_shuffle_f32x4(g[2], g[3], 0x44), _mm512_shuffle_f32x4(g[2], g[3], 0xEE));
    __m512 res = _mm512_add_ps(_mm512_shuffle_f32x4(u01, u23, 0x88), _mm512_shuffle_f32x4(u01, u23, 0xDD));
    _mm_storeu_ps(out, _mm512_castps512_ps128(res));
    _mm_storeu_ps(out + ldo, _mm512_extractf32x4_ps(res, 1));
    _mm_storeu_ps(out + 2 * ldo, _mm512_extractf32x4_ps(res, 2));
    _mm_storeu_ps(out + 3 * ldo, _mm512_extractf32x4_ps(res, 3));
}

/* jw and nr are constants at every call: the pragmas unroll the loops so
 * the accumulators live in registers (-O2 would keep them on the stack). */
static inline __attribute__((always_inline)) void
block(int jw, int nr, size_t len, const float *x, size_t ldx, const float *w, size_t ldw,
      float *out, size_t ldo, const float *pf, unsigned pf_rows) {
    __m512 acc[4][4];
    #pragma GCC unroll 4
    for (int j = 0; j < jw; j++)
        #pragma GCC unroll 4
        for (int r = 0; r < nr; r++) acc[j][r] = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + VL <= len; i += VL) {
        if (pf_rows) {
            #pragma GCC unroll 4
            for (int q = 0; q < 4; q++)
                if (pf_rows & (1u << q)) _mm_prefetch((const char *)(pf + q * ldw + i), _MM_HINT_T1);
        }
        __m512 xv[4];
        #pragma GCC unroll 4
        for (int r = 0; r < nr; r++) xv[r] = _mm512_loadu_ps(x + r * ldx + i);
        #pragma GCC unroll 4
        for (int j = 0; j < jw; j++) {
            __m512 wv = _mm512_loadu_ps(w + j * ldw + i);
            #pragma GCC unroll 4
            for (int r = 0; r < nr; r++) acc[j][r] = _mm512_fmadd_ps(wv, xv[r], acc[j][r]);
        }
    }
    if (i < len) {
        __mmask16 m = (__mmask16)((1u << (len - i)) - 1u);
        __m512 xv[4];
        #pragma GCC unroll 4
        for (int r = 0; r < nr; r++) xv[r] = _mm512_maskz_loadu_ps(m, x + r * ldx + i);
        #pragma GCC unroll 4
        for (int j = 0; j < jw; j++) {
            __m512 wv = _mm512_maskz_loadu_ps(m, w + j * ldw + i);
            #pragma GCC unroll 4
            for (int r = 0; r < nr; r++) acc[j][r] = _mm512_fmadd_ps(wv, xv[r], acc[j][r]);
        }
    }
    if (jw == 4 && nr == 4) {
        store_4x4(acc, out, ldo);
        return;
    }
    #pragma GCC unroll 4
    for (int j = 0; j < jw; j++)
        #pragma GCC unroll 4
        for (int r = 0; r < nr; r++) out[r * ldo + j] = _mm512_reduce_add_ps(acc[j][r]);
}

#define BLOCK(jw, nr) block(jw, nr, len, xr, ldx, wj, ldw, out + r0 * ldo + j, ldo, pf, pf_rows)

/* Prefetch distance: about 32 KiB of W ahead, whole blocks of 4 rows. */
#define PF_BYTES ((size_t)32768)

void sg_moe_rowdot_f32__avx512(size_t n, size_t m, size_t len, const float *x, size_t ldx,
                               const float *w, size_t ldw, float *out, size_t ldo,
                               const float *next, size_t next_m) {
    size_t pf_ahead = (PF_BYTES / (ldw * sizeof(float) + 1) + 3) / 4 * 4;
    if (pf_ahead < 4) pf_ahead = 4;
    size_t groups = (n + 3) / 4;
    for (size_t j = 0; j < m;) {
        size_t jw = m - j >= 4 ? 4 : 1;
        const float *wj = w + j * ldw, *pf;
        /* the block pf_ahead rows ahead: its rows that exist in this call,
         * or else in next */
        size_t ahead = j + pf_ahead, pf_have;
        if (ahead < m) {
            pf = w + ahead * ldw;
            pf_have = m - ahead < 4 ? m - ahead : 4;
        } else {
            pf = next ? next + (ahead - m) * ldw : NULL;
            pf_have = !next || ahead - m >= next_m ? 0 : next_m - (ahead - m) < 4 ? next_m - (ahead - m) : 4;
        }
        for (size_t r0 = 0, g = 0; r0 < n; r0 += 4, g++) {
            const float *xr = x + r0 * ldx;
            size_t nr = n - r0 < 4 ? n - r0 : 4;
            /* row group g prefetches the future rows q with q % groups == g */
            unsigned pf_rows = 0;
            for (size_t q = g; q < pf_have; q += groups) pf_rows |= 1u << q;
            if (jw == 4) {
                switch (nr) {
                case 1: BLOCK(4, 1); break;
                case 2: BLOCK(4, 2); break;
                case 3: BLOCK(4, 3); break;
                default: BLOCK(4, 4); break;
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

/* exp(t) for t in [-87, 88.5] (clamped by the caller): t = k ln2 + r by
 * Cody-Waite, exp(r) by the degree-5 polynomial of the softmax kernels
 * (relative error 9.2e-8 on |r| <= ln2/2), 2^k through the exponent field. */
static inline __m512 exp_clamped(__m512 t) {
    __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(t, _mm512_set1_ps(0x1.715476p+0f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fmadd_ps(k, _mm512_set1_ps(-0x1.62E430p-1f), t);
    r = _mm512_fmadd_ps(k, _mm512_set1_ps(0x1.05C610p-29f), r);
    __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(0x1.0F9F9Cp-7f), r, _mm512_set1_ps(0x1.573A1Ap-5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0x1.555A80p-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0x1.FFFDC6p-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0x1.FFFFF6p-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, k);
}

/* a / (1 + exp(-s)): s = a for silu, s = 2 sqrt(2/pi) (a + 0.044715 a^3)
 * for gelu-tanh (a sigmoid(2u) = a/2 (1 + tanh u)). Below -87 exp(-s) is
 * past float range: the quotient is then below 1e-37 |a| and is written
 * as a / 1.6e38 (an absolute error under 1e-37 |a|). NaN a propagates
 * (max/min pass the constant, the multiply by a makes NaN). */
static inline __m512 sig_mul(__m512 a, __m512 s) {
    __m512 t = _mm512_sub_ps(_mm512_setzero_ps(), s);
    t = _mm512_min_ps(_mm512_max_ps(t, _mm512_set1_ps(-87.0f)), _mm512_set1_ps(88.0f));
    return _mm512_div_ps(a, _mm512_add_ps(_mm512_set1_ps(1.0f), exp_clamped(t)));
}

void sg_moe_act_f32__avx512(sg_moe_activation act, size_t cnt, float *a, const float *b) {
    if (act == SG_MOE_GELU_ERF) {
        sg_moe_act_f32__ref(act, cnt, a, b);
        return;
    }
    for (size_t i = 0; i < cnt; i += VL) {
        __mmask16 m = cnt - i >= VL ? (__mmask16)0xFFFF : (__mmask16)((1u << (cnt - i)) - 1u);
        __m512 av = _mm512_maskz_loadu_ps(m, a + i), v;
        if (act == SG_MOE_SWIGLU) {
            v = _mm512_mul_ps(sig_mul(av, av), _mm512_maskz_loadu_ps(m, b + i));
        } else {
            __m512 a3 = _mm512_mul_ps(_mm512_mul_ps(av, av), av);
            __m512 u = _mm512_fmadd_ps(a3, _mm512_set1_ps(0.044715f), av);
            v = sig_mul(av, _mm512_mul_ps(u, _mm512_set1_ps(1.5957691216057308f)));
        }
        _mm512_mask_storeu_ps(a + i, m, v);
    }
}

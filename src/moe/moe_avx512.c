/*
 * moe_avx512.c - AVX-512 kernels of the MoE family (contracts in
 * moe_kernels.h). Compiled with AVX-512 flags for this file only.
 *
 * rowdot: a block of jw rows of W times a group of nr rows of X per pass
 * over len, jw * nr accumulators (16 columns each); per 16 columns the jw
 * W vectors are loaded once, then each X row once for its jw FMAs. The W
 * rows of the block stay in L1 while the other row groups (if any) use
 * them, so W comes from memory once for all rows. Shapes by row count n:
 *   n = 4..8    one group, jw = 2 (up to 16 accumulators);
 *   otherwise   jw = 4, groups of at most 6 rows, balanced (n = 16: 6+5+5;
 *               up to 24 accumulators, 4 W and 1 X register).
 * Measured on 8 matrices of 2816 x 1024 streamed from memory (one thread),
 * against the earlier 4 x 4 blocks (groups of 4 rows, the second group of
 * n = 5..8 re-reading the W block at 4 + 1..4 rows): 1.14-1.37x faster at
 * n = 4..7, 1.08x at 8, 1.16x at 12 and 16, the same at 1-2.
 * The 16 sums of 2 x 8 and 4 x 4 blocks go through one transposing
 * reduction tree, other shapes reduce each sum on its own.
 *
 * Software prefetch into L2 of the W rows PF_BYTES ahead (prefetcht1, one
 * line of a future row per 16 columns, the block's rows spread over the
 * passes of its row groups). Each W row at D = 1024 is one 4 KiB page,
 * where the hardware prefetcher starts over, and without the prefetch the
 * time was the memory time plus the FMA time (no overlap): measured as
 * above against a read-only pass over the same memory, the ratio went from
 * 0.55-0.65 to 0.76-0.82 at 4 rows, 0.49 to 0.62-0.68 at 8 rows, 0.75-0.85
 * to 0.9-1.05 at 1-2 rows. Into L1 (prefetcht0), or a second prefetch
 * closer in, was slower; 8 rows ahead beat 16 and 32. Prefetches stay
 * inside the call's m rows and the caller's `next` rows.
 */
#include <immintrin.h>

#include "moe/moe_kernels.h"
#include "softmax/exp_avx512.h"

#define VL 16

/* A transposing reduction tree: lane k of sum16's result is the sum of the
 * lanes of v[k] (45 shuffles and adds for 16 sums, instead of 16 separate
 * reductions of 8 each). */
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

static inline __m512 sum16(const __m512 v[16]) {
    __m512 g[4];
    for (int r = 0; r < 4; r++)
        g[r] = add_quads_ps(add_pairs_ps(v[4 * r], v[4 * r + 1]), add_pairs_ps(v[4 * r + 2], v[4 * r + 3]));
    __m512 u01 = _mm512_add_ps(_mm512_shuffle_f32x4(g[0], g[1], 0x44), _mm512_shuffle_f32x4(g[0], g[1], 0xEE));
    __m512 u23 = _mm512_add_ps(_mm512_shuffle_f32x4(g[2], g[3], 0x44), _mm512_shuffle_f32x4(g[2], g[3], 0xEE));
    return _mm512_add_ps(_mm512_shuffle_f32x4(u01, u23, 0x88), _mm512_shuffle_f32x4(u01, u23, 0xDD));
}

/* jw and nr are constants at every call: the pragmas unroll the loops so
 * the accumulators live in registers (-O2 would keep them on the stack).
 * This pass prefetches pf_n rows pf, pf + pf_step, ... (pf_n <= jw). */
static inline __attribute__((always_inline)) void
block(int jw, int nr, size_t len, const float *x, size_t ldx, const float *w, size_t ldw,
      float *out, size_t ldo, const float *pf, size_t pf_step, unsigned pf_n) {
    __m512 acc[8][4]; /* acc[r][j]: at most 24 used */
    #pragma GCC unroll 8
    for (int r = 0; r < nr; r++)
        #pragma GCC unroll 4
        for (int j = 0; j < jw; j++) acc[r][j] = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + VL <= len; i += VL) {
        #pragma GCC unroll 4
        for (int q = 0; q < jw; q++)
            if ((unsigned)q < pf_n) _mm_prefetch((const char *)(pf + q * pf_step + i), _MM_HINT_T1);
        __m512 wv[4];
        #pragma GCC unroll 4
        for (int j = 0; j < jw; j++) wv[j] = _mm512_loadu_ps(w + j * ldw + i);
        #pragma GCC unroll 8
        for (int r = 0; r < nr; r++) {
            __m512 xv = _mm512_loadu_ps(x + r * ldx + i);
            #pragma GCC unroll 4
            for (int j = 0; j < jw; j++) acc[r][j] = _mm512_fmadd_ps(wv[j], xv, acc[r][j]);
        }
    }
    if (i < len) {
        __mmask16 m = (__mmask16)((1u << (len - i)) - 1u);
        __m512 wv[4];
        #pragma GCC unroll 4
        for (int j = 0; j < jw; j++) wv[j] = _mm512_maskz_loadu_ps(m, w + j * ldw + i);
        #pragma GCC unroll 8
        for (int r = 0; r < nr; r++) {
            __m512 xv = _mm512_maskz_loadu_ps(m, x + r * ldx + i);
            #pragma GCC unroll 4
            for (int j = 0; j < jw; j++) acc[r][j] = _mm512_fmadd_ps(wv[j], xv, acc[r][j]);
        }
    }
    if (nr * jw == 16) { /* 2 x 8 and 4 x 4: one reduction tree */
        __m512 v[16];
        float sums[16];
        #pragma GCC unroll 8
        for (int r = 0; r < nr; r++)
            #pragma GCC unroll 4
            for (int j = 0; j < jw; j++) v[r * jw + j] = acc[r][j];
        _mm512_storeu_ps(sums, sum16(v));
        #pragma GCC unroll 8
        for (int r = 0; r < nr; r++)
            #pragma GCC unroll 4
            for (int j = 0; j < jw; j++) out[r * ldo + j] = sums[r * jw + j];
        return;
    }
    #pragma GCC unroll 8
    for (int r = 0; r < nr; r++)
        #pragma GCC unroll 4
        for (int j = 0; j < jw; j++) out[r * ldo + j] = _mm512_reduce_add_ps(acc[r][j]);
}

/* One function per shape: each is small enough for the register allocator
 * to keep every accumulator and pointer in registers (inlined into one
 * driver, the 22 shapes spilled and ran 1.15-1.35x slower at 5-8 rows). */
typedef void block_fn(size_t len, const float *x, size_t ldx, const float *w, size_t ldw,
                      float *out, size_t ldo, const float *pf, size_t pf_step, unsigned pf_n);
#define DEF_BLOCK(jw, nr)                                                                      \
    static __attribute__((noinline)) void block_##jw##_##nr(                                 \
        size_t len, const float *x, size_t ldx, const float *w, size_t ldw, float *out,        \
        size_t ldo, const float *pf, size_t pf_step, unsigned pf_n) {                          \
        block(jw, nr, len, x, ldx, w, ldw, out, ldo, pf, pf_step, pf_n);                       \
    }
DEF_BLOCK(4, 1) DEF_BLOCK(4, 2) DEF_BLOCK(4, 3) DEF_BLOCK(4, 4) DEF_BLOCK(4, 5) DEF_BLOCK(4, 6)
DEF_BLOCK(2, 1) DEF_BLOCK(2, 2) DEF_BLOCK(2, 3) DEF_BLOCK(2, 4) DEF_BLOCK(2, 5) DEF_BLOCK(2, 6)
DEF_BLOCK(2, 7) DEF_BLOCK(2, 8)
DEF_BLOCK(1, 1) DEF_BLOCK(1, 2) DEF_BLOCK(1, 3) DEF_BLOCK(1, 4) DEF_BLOCK(1, 5) DEF_BLOCK(1, 6)
DEF_BLOCK(1, 7) DEF_BLOCK(1, 8)

/* [jw = 4, 2, 1][nr - 1] (nr <= 6 for jw = 4, <= 8 otherwise) */
static block_fn *const blocks[3][8] = {
    {block_4_1, block_4_2, block_4_3, block_4_4, block_4_5, block_4_6, NULL, NULL},
    {block_2_1, block_2_2, block_2_3, block_2_4, block_2_5, block_2_6, block_2_7, block_2_8},
    {block_1_1, block_1_2, block_1_3, block_1_4, block_1_5, block_1_6, block_1_7, block_1_8},
};

/* Prefetch distance: about 32 KiB of W ahead, whole blocks of 4 rows. */
#define PF_BYTES ((size_t)32768)

void sg_moe_rowdot_f32__avx512(size_t n, size_t m, size_t len, const float *x, size_t ldx,
                               const float *w, size_t ldw, float *out, size_t ldo,
                               const float *next, size_t next_m) {
    size_t pf_ahead = (PF_BYTES / (ldw * sizeof(float) + 1) + 3) / 4 * 4;
    if (pf_ahead < 4) pf_ahead = 4;
    /* block width and row groups (shapes in the header comment) */
    size_t bw = n >= 4 && n <= 8 ? 2 : 4, maxr = bw == 2 ? 8 : 6;
    size_t groups = (n + maxr - 1) / maxr, per = (n + groups - 1) / groups;
    for (size_t j = 0; j < m;) {
        size_t jw = m - j >= bw ? bw : 1;
        const float *wj = w + j * ldw, *pf;
        /* the block pf_ahead rows ahead: its rows that exist in this call,
         * or else in next */
        size_t ahead = j + pf_ahead, pf_have;
        if (ahead < m) {
            pf = w + ahead * ldw;
            pf_have = m - ahead < jw ? m - ahead : jw;
        } else {
            pf = next ? next + (ahead - m) * ldw : NULL;
            pf_have = !next || ahead - m >= next_m ? 0 : next_m - (ahead - m) < jw ? next_m - (ahead - m) : jw;
        }
        for (size_t r0 = 0, g = 0; r0 < n; r0 += per, g++) {
            /* row group g prefetches the future rows g, g + groups, ... */
            unsigned pf_n = g < pf_have ? (unsigned)((pf_have - g + groups - 1) / groups) : 0;
            size_t nr = n - r0 < per ? n - r0 : per;
            blocks[jw == 4 ? 0 : jw == 2 ? 1 : 2][nr - 1](len, x + r0 * ldx, ldx, wj, ldw,
                                                          out + r0 * ldo + j, ldo,
                                                          pf_n ? pf + g * ldw : NULL, groups * ldw, pf_n);
        }
        j += jw;
    }
}

/* exp(t) for t in [-87, 88.5] (clamped by the caller): the softmax
 * kernels' exponential (exp_avx512.h). */
static inline __m512 exp_clamped(__m512 t) { return sg_exp_clamped_avx512(t); }

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

/*
 * route_kernels.h - the routers' kernel table: the selection of the k
 * largest of n keys per token (the hot part of the top-k gates), one
 * reference kernel and AVX2 / AVX-512 ones chosen by sg_active_isa() (so
 * SOFTGATE_ISA applies). Internal.
 */
#ifndef SG_ROUTE_KERNELS_H
#define SG_ROUTE_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "core/dispatch.h"

/*
 * topk(key, n, k, ids, top): the k largest of key[0..n) (1 <= k <= n,
 * keys NaN-free: the caller checks) into ids[0..k) in descending order of
 * key, ties to the lower index (keys compared as floats: -0 == +0; -inf
 * and +inf allowed); top[l] = key[ids[l]]. Every kernel gives exactly the
 * reference's ids and order. No allocation; reads key only.
 */
typedef void sg_route_topk_fn(const float *key, size_t n, size_t k, int32_t *ids, float *top);

/*
 * topk_rows(n, e, k, x, ldx, c, a, ids, ldi, w, ldw): the renormalized
 * softmax-top-k gate on rows r < n of x (1 <= n <= 16 rows of e logits,
 * ldx >= e, 1 <= k <= min(e, 16); NaN allowed) in one call: ids[r * ldi
 * + l] as topk gives them (descending, ties to the lower index, the
 * logits themselves compared) and w[r * ldw + l] = a exp(t_l) / sum_m
 * exp(t_m), t_l = (float)(((double)x[r][id_l] - (double)x[r][id_0]) *
 * (double)c), the sum in double: within 1e-6 relative of the
 * reference's weights (which take expf). Returns the mask (bit r) of the
 * rows left to the caller, whose outputs are not written: a NaN logit, a
 * k-th largest of -inf, or a largest of +-inf. Every kernel gives exactly
 * the reference's ids and mask. No allocation.
 */
typedef uint32_t sg_route_topk_rows_fn(size_t n, size_t e, size_t k, const float *x, size_t ldx, float c,
                                       float a, int32_t *ids, size_t ldi, float *w, size_t ldw);

/*
 * ec_insert(r0, r1, e, x, ldx, lse, inv, c, bk, bt, ldb): expert choice's
 * per-expert top-c lists, updated with the tokens r0 <= r < r1 in order.
 * Expert i (i < e) keeps c (key, token) pairs in bk[j * ldb + i],
 * bt[j * ldb + i], j = 0..c-1, in descending order of key, earlier tokens
 * first among equal keys. Token r's key for expert i is
 *   kd = (double)x[r * ldx + i] * inv - lse[r]   (product exact, one rounding)
 * and it is inserted by strict compares (kd > bk[j]): a later token never
 * passes an equal key, and the last pair falls off. Every lse[r] in the
 * range is finite and x has no NaN (the caller checks). r0 == 0 starts
 * from empty lists (every key -inf, token 0) without reading bk, bt.
 * ldb is a multiple of 8 >= e; lanes [e, ldb) of the lists are scratch.
 * Every kernel gives exactly the reference's lists. No allocation.
 */
typedef void sg_route_ec_insert_fn(size_t r0, size_t r1, size_t e, const float *x, size_t ldx,
                                   const double *lse, double inv, size_t c, const double *thr,
                                   double *bk, int32_t *bt, size_t ldb);
/* With thr (NULL: none), a token whose key for expert i is below thr[i]
 * is not inserted; the caller makes thr[i] a lower bound of expert i's
 * c-th largest key (c distinct tokens have keys >= thr[i]), so the lists
 * come out the same and only the filter is cheaper.
 *
 * ec_blockmax(r0, r1, e, x, ldx, lse, inv, out): out[i] = a lower bound
 * of the largest key (kd as above) of expert i over the tokens
 * r0 <= r < r1 (r1 > r0, lse finite), i < e, within 2^-19 (|out[i]| +
 * max_r |lse[r]| + 1) of it: the reference gives the largest key itself;
 * kernels may take the largest float key less a bound of its rounding.
 */
/*
 * ec_rank(n, ck, ct, c, tok, kf, sk, st): n >= c candidates of one expert
 * (keys ck, tokens ct, in increasing token order) ranked by descending
 * key, equal keys in token order; the first c out: tok[s], kf[s] =
 * (float)key. ck, ct may be reordered; sk, st: scratch of n.
 */
typedef void sg_route_ec_rank_fn(size_t n, double *ck, int32_t *ct, size_t c, int32_t *tok,
                                 float *kf, double *sk, int32_t *st);
/*
 * ec_kth(nb, n, ldb, bm, c, thr): thr[i] = the c-th largest of
 * bm[b * ldb + i] over b < nb (1 <= c <= nb <= 32, no NaN), i < n; ldb a
 * multiple of 8 >= n.
 */
typedef void sg_route_ec_kth_fn(size_t nb, size_t n, size_t ldb, const double *bm, size_t c,
                                double *thr);
typedef void sg_route_ec_blockmax_fn(size_t r0, size_t r1, size_t e, const float *x, size_t ldx,
                                     const double *lse, double inv, double *out);

/*
 * ec_collect(r0, r1, e, x, ldx, lse, inv, thr, cap, ck, ct, cnt): for the
 * tokens r0 <= r < r1 in order (lse finite) and experts i < e, every key
 * kd >= thr[i] (kd as above) is appended to expert i's candidates:
 * n = cnt[i]++, and when n < cap, ck[i * cap + n] = kd, ct[i * cap + n] = r.
 * cnt[i] > cap after the call means expert i overflowed. Kernels may
 * test a float bound first, but append exactly the keys >= thr[i].
 */
typedef void sg_route_ec_collect_fn(size_t r0, size_t r1, size_t e, const float *x, size_t ldx,
                                    const double *lse, double inv, const double *thr, size_t cap,
                                    double *ck, int32_t *ct, uint32_t *cnt);

/*
 * ec_finish(c, n, ldb, bk, bt, tok, ldt, kf): the lists of ec_insert out:
 * tok[i * ldt + s] = bt[s * ldb + i] and kf[i * c + s] = (float)bk[s * ldb + i]
 * for i < n, s < c (kf expert-major, contiguous). Returns nonzero when a
 * list's last key is -inf (the caller fills those slots). Reads the lists
 * at the width ec_insert wrote them (a store that does not forward to a
 * narrower load stalls it).
 */
typedef int sg_route_ec_finish_fn(size_t c, size_t n, size_t ldb, const double *bk,
                                  const int32_t *bt, int32_t *tok, size_t ldt, float *kf);

/*
 * sgate(g, n, x, ldx, ids, ldi, w, ldw, p, ldp, work): the sigmoid gate
 * with a key row (SG_GATE_SIGMOID_TOPK with a bias or groups; route.h,
 * docs/ROUTING.md) on rows r < n of x (ldx). Per row:
 *   s_i   = sigmoid(c x_i): q = exp(-|x_i| c) by the softmax core's active
 *           expsum_store kernel (sg_route_sigmoid_row), then
 *           s_i = (x_i < 0 ? q : 1) / (1 + q) in float;
 *   key_i = s_i + b_i (float; s_i without a bias);
 *   groups (n_group > 1): score_g = the sum in float of the group's two
 *           largest keys (its one key for groups of one), the topk_group
 *           best groups kept (ties: lower group);
 *   ids   = the k largest keys among the kept experts, descending, ties
 *           to the lower expert (as the top-k kernels);
 *   w_l   = (float)(a * (s_l * inv)), s_l = (double)s_{ids[l]} and
 *           inv = 1 / sum_l s_l summed in slot order (0 when the sum is 0)
 *           with renormalize; else w_l = (float)(a * s_l);
 *   p row = s when p != NULL.
 * Returns the first row holding a NaN (its outputs unspecified, later rows
 * not processed), or SIZE_MAX. The arguments are checked by the caller
 * (k <= 16 not required; 1 <= topk_group <= n_group, e % n_group == 0,
 * k <= kept experts, bias finite). work: 4 e floats of scratch. Every
 * kernel gives exactly the reference's ids, weights and probs (they share
 * the exponential: kernels compute it with the softmax core's polynomial
 * where the reference gets it from the same table level).
 */
typedef struct sg_route_sgate {
    size_t e, k, n_group, topk_group; /* n_group <= 1: no groups */
    float c;                          /* 1 / temperature */
    const float *bias;                /* [e] or NULL */
    double a;                         /* routed scale */
    int renormalize;
} sg_route_sgate;
typedef size_t sg_route_sgate_fn(const sg_route_sgate *g, size_t n, const float *x, size_t ldx, int32_t *ids,
                                 size_t ldi, float *w, size_t ldw, float *p, size_t ldp, float *work);
/* s = sigmoid(c x) over a row of e as sgate defines it (the reference's and
 * the plain sigmoid gate's). s may not alias x. */
void sg_route_sigmoid_row(size_t e, const float *x, float c, float *s);

/*
 * top1(n, e, x, ldx, c, a, ids, ldi, w, ldw): Switch's gate, the
 * softmax-top-1 without renormalizing, on rows r < n of x (e logits each,
 * ldx >= e; NaN allowed): ids[r * ldi] = the first index of the row's
 * maximum (as topk with k = 1 picks it: -0 == +0) and w[r * ldw] =
 * (float)((double)a * (1.0 / sum)), sum = the softmax core's
 * expsum(e, row, rmax(row), c): the gate's row path bit for bit. Stops at
 * the first row with a NaN or a +-inf maximum and returns its index (the
 * caller takes that row the row-path way), n when every row is done.
 */
typedef size_t sg_route_top1_fn(size_t n, size_t e, const float *x, size_t ldx, float c, float a, int32_t *ids,
                                size_t ldi, float *w, size_t ldw);

enum sg_route_slot {
    SG_ROUTE_SLOT_topk,
    SG_ROUTE_SLOT_ec_insert,
    SG_ROUTE_SLOT_ec_finish,
    SG_ROUTE_SLOT_ec_blockmax,
    SG_ROUTE_SLOT_ec_collect,
    SG_ROUTE_SLOT_ec_rank,
    SG_ROUTE_SLOT_ec_kth,
    SG_ROUTE_SLOT_topk_rows,
    SG_ROUTE_SLOT_sgate,
    SG_ROUTE_SLOT_top1,
    SG_ROUTE_SLOT_COUNT
};

typedef struct sg_route_kernels {
    sg_route_topk_fn *topk;
    sg_route_ec_insert_fn *ec_insert;
    sg_route_ec_finish_fn *ec_finish;
    sg_route_ec_blockmax_fn *ec_blockmax;
    sg_route_ec_collect_fn *ec_collect;
    sg_route_ec_rank_fn *ec_rank;
    sg_route_ec_kth_fn *ec_kth;
    sg_route_topk_rows_fn *topk_rows;
    sg_route_sgate_fn *sgate;
    sg_route_top1_fn *top1;
    const char *impl_name[SG_ROUTE_SLOT_COUNT];
} sg_route_kernels;

typedef struct sg_route_kernel_entry {
    enum sg_route_slot slot;
    sg_isa isa;
    const char *name;
    void (*fn)(void);
} sg_route_kernel_entry;

/* The table for the active ISA level (filled once, thread-safe). */
const sg_route_kernels *sg_route_kernels_get(void);
/* Every kernel compiled in, whatever the level (tests compare each against
 * the reference when the CPU has its ISA). */
const sg_route_kernel_entry *sg_route_kernel_entries(size_t *count);

sg_route_topk_fn sg_route_topk__ref;
sg_route_ec_insert_fn sg_route_ec_insert__ref;
sg_route_ec_finish_fn sg_route_ec_finish__ref;
sg_route_ec_blockmax_fn sg_route_ec_blockmax__ref;
sg_route_ec_collect_fn sg_route_ec_collect__ref;
sg_route_ec_rank_fn sg_route_ec_rank__ref;
sg_route_ec_kth_fn sg_route_ec_kth__ref;
sg_route_topk_rows_fn sg_route_topk_rows__ref;
sg_route_sgate_fn sg_route_sgate__ref;
sg_route_top1_fn sg_route_top1__ref;
#if defined(__x86_64__) || defined(_M_X64)
sg_route_top1_fn sg_route_top1__avx512;
sg_route_topk_fn sg_route_topk__avx2, sg_route_topk__avx512;
sg_route_ec_insert_fn sg_route_ec_insert__avx512;
sg_route_ec_finish_fn sg_route_ec_finish__avx512;
sg_route_ec_blockmax_fn sg_route_ec_blockmax__avx512;
sg_route_ec_collect_fn sg_route_ec_collect__avx512;
sg_route_ec_rank_fn sg_route_ec_rank__avx512;
sg_route_ec_kth_fn sg_route_ec_kth__avx512;
sg_route_topk_rows_fn sg_route_topk_rows__avx512;
sg_route_sgate_fn sg_route_sgate__avx512;
#endif

#endif

/*
 * gate_expert_choice.c - expert-choice routing (Zhou et al., NeurIPS 2022):
 * every expert takes its C tokens of largest softmax probability, forward
 * and backward (route.h, "Expert choice"). Token-choice gates live in
 * gate_topk.c.
 *
 * Pass 1 (tokens): lse_t = log sum_e exp(x_te / T) in double from the
 * softmax kernels' sum, and the probs row if asked; a NaN shows in lse.
 * Pass 2 (experts, split across threads), on the keys x_te / T - lse_t in
 * double, ties to the lower token, best first: C > 16 and C > T / 16:
 * a sampled filter, buckets of the float keys, a counting sort and an
 * exact insertion sort (bucket_expert); C <= 16 per-expert lists
 * (route.ec_insert); C >= 2 and a small share of T: block bounds, a
 * threshold, the tokens above it collected and ranked (route.ec_blockmax,
 * ec_kth, ec_collect, ec_rank); otherwise a quickselect + stable radix
 * sort (C >= 64, C >= T / 16) or a min-heap of C pairs per expert, the
 * worst at the root (smallest key, then the larger token), so a later
 * token with an equal key never enters. One token (T = 1) is the softmax
 * row. docs/ROUTING.md describes each path.
 */
#include <math.h>
#include <string.h>

#include "route/route_internal.h"
#include "route/route_kernels.h"
#include "softmax/softmax_internal.h"

sg_status sg_expert_choice_capacity(sg_context *ctx, float capacity_factor, size_t t, size_t e,
                                    size_t *c) {
    static const char name[] = "sg_expert_choice_capacity";
    if (!ctx) return SG_ERR_ARGUMENT;
    sg_ok(ctx);
    if (!c) return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: c is NULL", name);
    if (!(capacity_factor > 0.0f) || !isfinite(capacity_factor))
        return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: capacity_factor must be finite and > 0 (got %g)", name,
                       (double)capacity_factor);
    if (e == 0) return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: e is 0", name);
    double v = ceil((double)capacity_factor * (double)t / (double)e);
    if (v > (double)t) v = (double)t;
    if (v < 1.0)
        return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: capacity %g is below one token (t = %zu)", name, v, t);
    *c = (size_t)v;
    return SG_OK;
}

typedef struct ec_job {
    const sg_kernels *kern;
    size_t t, e, c;
    const float *x;
    size_t ldx;
    double inv_temp;
    float cf;
    const double *lse;
    int32_t *tok;
    size_t ldt;
    float *w;
    size_t ldw;
    double *heap; /* per task: c keys */
    size_t tasks;
    int special; /* some token's lse is +-inf */
} ec_job;

/* a is worse than b: smaller key, or equal key and larger token */
static inline int worse(double ka, int32_t ta, double kb, int32_t tb) {
    return ka < kb || (ka == kb && ta > tb);
}

static void sift_down(double *key, int32_t *tok, size_t n, size_t i) {
    for (;;) {
        size_t l = 2 * i + 1, m = i;
        if (l < n && worse(key[l], tok[l], key[m], tok[m])) m = l;
        if (l + 1 < n && worse(key[l + 1], tok[l + 1], key[m], tok[m])) m = l + 1;
        if (m == i) return;
        double kt = key[i];
        int32_t tt = tok[i];
        key[i] = key[m], tok[i] = tok[m];
        key[m] = kt, tok[m] = tt;
        i = m;
    }
}

static inline double key_of(const ec_job *j, size_t r, size_t ex) {
    const double l = j->lse[r];
    const float v = j->x[r * j->ldx + ex];
    if (l == INFINITY) return v == INFINITY ? 0.0 : -INFINITY; /* +inf entries share the mass */
    if (l == -INFINITY) return -INFINITY;
    return (double)v * j->inv_temp - l;
}

/* The weights of an expert's C tokens (in output order) from their keys:
 * exp(key) through the same vector exponential as net_weights (every path
 * must give the same bits: which path an expert takes depends on its
 * neighbours in a task), key <= 0 rounded once to float: within 1e-6. */
static void write_weights(const ec_job *j, size_t ex, const double *key) {
    const int32_t *tok = j->tok + ex * j->ldt;
    const size_t c = j->c;
    float *w = j->w + ex * j->ldw;
    for (size_t r = 0; r < c; r++) w[r] = j->lse[tok[r]] == INFINITY ? 0.0f : (float)key[r];
    j->kern->expsum_store(c, w, w, 0.0f, 1.0f);
    for (size_t r = 0; r < c; r++) {
        /* +inf rows: 1/count at the +inf entries (count = exp(-lse') kept
         * as the key offset 0: recompute the share from the row) */
        if (j->lse[tok[r]] != INFINITY) continue;
        const float *xr = j->x + (size_t)tok[r] * j->ldx;
        size_t cnt = 0;
        for (size_t i = 0; i < j->e; i++) cnt += xr[i] == INFINITY;
        w[r] = xr[ex] == INFINITY ? 1.0f / (float)cnt : 0.0f;
    }
}

/* Heap sort of an expert's C pairs (best first), then the weights. */
static void finish_expert(const ec_job *j, size_t ex, double *key) {
    int32_t *tok = j->tok + ex * j->ldt;
    for (size_t n = j->c; n > 1; n--) { /* the worst to the end -> best first */
        double kt = key[0];
        int32_t tt = tok[0];
        key[0] = key[n - 1], tok[0] = tok[n - 1];
        key[n - 1] = kt, tok[n - 1] = tt;
        sift_down(key, tok, n - 1, 0);
    }
    write_weights(j, ex, key);
}



/* Experts [e0, e0 + nb) at once, nb <= EC_BLOCK (C > 16: smaller C takes
 * the lists of route.ec_insert): the tokens are scanned
 * row by row (each row's nb logits are adjacent in memory), each expert
 * keeping a min-heap of C (key, token) pairs in key[q * c ...] and its
 * output row. A column-by-column scan would touch a new cache line per
 * token and expert. */
#define EC_BLOCK 16

static void expert_block(const ec_job *j, size_t e0, size_t nb, double *key) {
    const size_t c = j->c;
    for (size_t q = 0; q < nb; q++) {
        double *kq = key + q * c;
        int32_t *tok = j->tok + (e0 + q) * j->ldt;
        for (size_t r = 0; r < c; r++) kq[r] = key_of(j, r, e0 + q), tok[r] = (int32_t)r;
        for (size_t i = c / 2; i-- > 0;) sift_down(kq, tok, c, i);
    }
    for (size_t r = c; r < j->t; r++) {
        /* the row's nb keys first, without a branch when lse is finite
         * (the usual row: the same value key_of gives), then the tests */
        double kr[EC_BLOCK];
        const double l = j->lse[r];
        if (l > -INFINITY && l < INFINITY) {
            const float *xr = j->x + r * j->ldx + e0;
            for (size_t q = 0; q < nb; q++) kr[q] = (double)xr[q] * j->inv_temp - l;
        } else {
            for (size_t q = 0; q < nb; q++) kr[q] = key_of(j, r, e0 + q);
        }
        for (size_t q = 0; q < nb; q++) {
            const double k = kr[q];
            double *kq = key + q * c;
            if (k > kq[0]) { /* strictly better than the worst kept */
                int32_t *tok = j->tok + (e0 + q) * j->ldt;
                kq[0] = k, tok[0] = (int32_t)r;
                sift_down(kq, tok, c, 0);
            }
        }
    }
    for (size_t q = 0; q < nb; q++) finish_expert(j, e0 + q, key + q * c);
}


/* ---- large C: select a threshold, gather, sort ------------------------ */

/* Experts with C >= 64 and C >= T/16: a heap would do about C ln(T/C)
 * insertions of log C steps each and a heap sort of C log C, all
 * unpredictable branches. Instead: the C-th largest key by quickselect,
 * the tokens above it (then those equal to it, in token order) gathered
 * without reordering, and a stable LSD radix sort of those C by key, so
 * equal keys keep token order: the same output as the heap. */
#define EC_SELECT_MIN_C 64

/* Larger key -> larger integer (no NaN here; -0 is made +0 first). */
static inline uint64_t order_bits(double k) {
    uint64_t u;
    memcpy(&u, &k, sizeof u);
    return (u >> 63) ? ~u : u | 0x8000000000000000ull;
}

/* The k-th largest (1 <= k <= n) of a[0..n) (order bits; a is scratch,
 * permuted). Quickselect whose partitions are branch-free (a conditional
 * swap per element): first the keys > p to the front, then, if the k-th
 * is not among them, the keys == p; a branching partition mispredicted
 * every other key on random data. */
static uint64_t kth_largest(uint64_t *a, size_t n, size_t k) {
    size_t lo = 0, hi = n;
    const size_t want = k - 1; /* index in descending order */
    while (hi - lo > 16) {
        uint64_t p0 = a[lo], p1 = a[lo + (hi - lo) / 2], p2 = a[hi - 1], p;
        if (p0 < p1) p = p1 < p2 ? p1 : (p0 < p2 ? p2 : p0);
        else p = p0 < p2 ? p0 : (p1 < p2 ? p2 : p1);
        size_t g = lo;
        for (size_t i = lo; i < hi; i++) {
            const uint64_t v = a[i], ag = a[g], m = (uint64_t)0 - (uint64_t)(v > p);
            a[i] = (ag & m) | (v & ~m);
            a[g] = (v & m) | (ag & ~m);
            g += v > p;
        }
        if (want < g) {
            hi = g;
            continue;
        }
        size_t q = g;
        for (size_t i = g; i < hi; i++) {
            const uint64_t v = a[i], aq = a[q], m = (uint64_t)0 - (uint64_t)(v == p);
            a[i] = (aq & m) | (v & ~m);
            a[q] = (v & m) | (aq & ~m);
            q += v == p;
        }
        if (want < q) return p; /* q > g: the pivot is in the range */
        lo = q;
    }
    for (size_t i = lo + 1; i < hi; i++) { /* insertion sort, descending */
        uint64_t v = a[i];
        size_t q = i;
        while (q > lo && a[q - 1] < v) a[q] = a[q - 1], q--;
        a[q] = v;
    }
    return a[want];
}

static void expert_select(const ec_job *j, size_t ex, double *work) {
    const size_t t = j->t, c = j->c;
    double *keys = work, *tmp = work + t;
    uint64_t *u = (uint64_t *)(void *)(tmp + t), *u2 = u + c;
    int32_t *t2 = (int32_t *)(void *)(u2 + c);
    int32_t *tok = j->tok + ex * j->ldt;
    uint64_t *ob = (uint64_t *)(void *)tmp; /* the keys' order bits */
    for (size_t r = 0; r < t; r++) keys[r] = key_of(j, r, ex) + 0.0; /* -0 -> +0 */
    for (size_t r = 0; r < t; r++) ob[r] = order_bits(keys[r]);
    const uint64_t thr = kth_largest(ob, t, c);
    size_t n = 0;
    for (size_t r = 0; r < t; r++) { /* fewer than c keys are above thr */
        tok[n] = (int32_t)r;
        n += order_bits(keys[r]) > thr;
    }
    for (size_t r = 0; n < c && r < t; r++)
        if (order_bits(keys[r]) == thr) tok[n++] = (int32_t)r;
    /* stable LSD radix sort on ~order_bits: ascending there = descending key */
    for (size_t i = 0; i < c; i++) u[i] = ~order_bits(keys[tok[i]]);
    for (int shift = 0; shift < 64; shift += 8) {
        size_t cnt[256] = {0};
        for (size_t i = 0; i < c; i++) cnt[(u[i] >> shift) & 255]++;
        if (cnt[(u[0] >> shift) & 255] == c) continue; /* one digit: nothing moves */
        size_t sum = 0;
        for (int d = 0; d < 256; d++) {
            size_t v = cnt[d];
            cnt[d] = sum, sum += v;
        }
        for (size_t i = 0; i < c; i++) {
            size_t d = (u[i] >> shift) & 255, o = cnt[d]++;
            u2[o] = u[i], t2[o] = tok[i];
        }
        memcpy(u, u2, c * sizeof *u);
        memcpy(tok, t2, c * sizeof *tok);
    }
    for (size_t i = 0; i < c; i++) tmp[i] = keys[tok[i]];
    write_weights(j, ex, tmp);
}

/* The select path when C is a large share of T (heap work grows as
 * C log C (1 + ln(T/C)), the select path's as about 2T + C). */
static inline int use_select(size_t t, size_t c) { return c >= EC_SELECT_MIN_C && 16 * c >= t; }

/* C up to this: the route.ec_insert kernel (lists of C per expert, SIMD
 * across experts, a token tested against each expert's C-th key). */
#define EC_NET_MAX 16
static inline int use_net(size_t c) { return c <= EC_NET_MAX; }
/* Sampled tokens of the bucket path's filter (route.ec_kth takes up to 32). */
#define EC_SAMPLE 32

/* Experts per task rounded up to 8 (the kernel's lists' stride). */
static size_t net_ldb(size_t e, size_t tasks) { return ((e + tasks - 1) / tasks + 7) & ~(size_t)7; }

/* Doubles of scratch per task. */
static size_t collect_doubles(size_t c, size_t e, size_t tasks);
static inline int collect_shape(size_t t, size_t c);
static inline int bucket_shape(size_t t, size_t c);
static size_t bucket_doubles(size_t t, size_t c);
static size_t task_doubles(size_t t, size_t c, size_t e, size_t tasks) {
    size_t d;
    /* keys; tokens, float keys (64-aligned) */
    if (use_net(c)) d = 2 * c * net_ldb(e, tasks) + 24;
    else d = use_select(t, c) ? 2 * t + 3 * c : EC_BLOCK * c;
    if (bucket_shape(t, c)) { /* the bucket path, with the select path */
        const size_t db = bucket_doubles(t, c), ds = 2 * t + 3 * c;
        return (EC_SAMPLE + 1) * net_ldb(e, tasks) + (db > ds ? db : ds);
    }
    if (collect_shape(t, c)) { /* the collect path, tried first */
        const size_t dc = collect_doubles(c, e, tasks);
        d = dc > d ? dc : d;
    }
    return d;
}

/* One token of a row with an infinite lse into the lists (the kernel's
 * strict insertion, keys from key_of). */
static void net_insert_row(const ec_job *j, size_t r, size_t e0, size_t n, double *bk, int32_t *bt,
                           size_t ldb) {
    for (size_t i = 0; i < n; i++) {
        double v = key_of(j, r, e0 + i);
        int32_t tv = (int32_t)r;
        int moving = 0; /* inserted: the pairs below shift down one slot */
        for (size_t q = 0; q < j->c; q++) {
            double *b = bk + q * ldb + i;
            int32_t *tb = bt + q * ldb + i;
            moving |= v > *b;
            if (moving) {
                const double kb = *b;
                const int32_t ob = *tb;
                *b = v, *tb = tv;
                v = kb, tv = ob;
            }
        }
    }
}

/* Weights of experts [e0, e0 + n) from their float keys kf[i * c + s]
 * (tokens already out): exp(key), one vector pass of the softmax core's
 * exponential (key <= 0 rounded to float once: within 1e-6); +inf rows
 * get 1/count at their +inf entries. */
static void net_weights(const ec_job *j, size_t e0, size_t n, float *kf) {
    const size_t c = j->c;
    if (j->ldw == c) {
        j->kern->expsum_store(n * c, kf, j->w + e0 * j->ldw, 0.0f, 1.0f);
    } else {
        j->kern->expsum_store(n * c, kf, kf, 0.0f, 1.0f);
        for (size_t i = 0; i < n; i++) memcpy(j->w + (e0 + i) * j->ldw, kf + i * c, c * sizeof *kf);
    }
    if (!j->special) return;
    for (size_t i = 0; i < n; i++) /* +inf rows: 1/count at their +inf entries */
        for (size_t s = 0; s < c; s++) {
            const int32_t r = j->tok[(e0 + i) * j->ldt + s];
            if (j->lse[r] != INFINITY) continue;
            const float *xr = j->x + (size_t)r * j->ldx;
            size_t cnt = 0;
            for (size_t q = 0; q < j->e; q++) cnt += xr[q] == INFINITY;
            j->w[(e0 + i) * j->ldw + s] = xr[e0 + i] == INFINITY ? 1.0f / (float)cnt : 0.0f;
        }
}


/* Experts [e0, e1) through route.ec_insert: the lists start at -inf, the
 * tokens go in in order (rows with an infinite lse one by one, scalar),
 * slots still at -inf take the -inf tokens in token order (every token
 * above -inf is then in the list), and the weights exp(key) are one
 * vector pass of the softmax core's exponential. */
static void net_task_range(const ec_job *j, size_t e0, size_t e1, double *work) {
    const size_t c = j->c, t = j->t, n = e1 - e0, ldb = net_ldb(j->e, j->tasks);
    double *bk = work;
    int32_t *bt = (int32_t *)(void *)(bk + c * ldb);
    float *kf = (float *)(void *)(bt + c * ldb);
    kf += (16 - ((uintptr_t)(void *)kf / sizeof *kf) % 16) % 16; /* 64-byte aligned, like w's loads */
    if (j->special)
        for (size_t q = 0; q < c * ldb; q++) bk[q] = -INFINITY, bt[q] = 0;
    const sg_route_kernels *rk = sg_route_kernels_get();
    const float *x = j->x + e0;
    if (!j->special) {
        rk->ec_insert(0, t, n, x, j->ldx, j->lse, j->inv_temp, c, NULL, bk, bt, ldb);
    } else {
        for (size_t r = 0; r < t;) {
            size_t r1 = r;
            while (r1 < t && j->lse[r1] > -INFINITY && j->lse[r1] < INFINITY) r1++;
            if (r1 > r) rk->ec_insert(r, r1, n, x, j->ldx, j->lse, j->inv_temp, c, NULL, bk, bt, ldb);
            if (r1 < t) net_insert_row(j, r1++, e0, n, bk, bt, ldb);
            r = r1;
        }
    }
    int32_t *tok0 = j->tok + e0 * j->ldt;
    if (rk->ec_finish(c, n, ldb, bk, bt, tok0, j->ldt, kf))
        for (size_t i = 0; i < n; i++) {
            size_t s = c;
            while (s > 0 && bk[(s - 1) * ldb + i] == -INFINITY) s--;
            for (size_t r = 0; s < c && r < t; r++) /* fewer than c keys above -inf */
                if (key_of(j, r, e0 + i) == -INFINITY) tok0[i * j->ldt + s++] = (int32_t)r;
        }
    net_weights(j, e0, n, kf);
}

/* ---- threshold and collect (no infinite lse, 2 <= C <= T / 16) --------- */

/* Tokens per expert past which the collect path gives up (ties). */
static size_t collect_cap(size_t c) { return 4 * c + 64; }
/* C >= 2 and a small share of T (up to 1/16), or past the insertion's
 * reach up to 128 (ranked by counts) and at most a quarter of T. */
static inline int collect_shape(size_t t, size_t c) {
    return c >= 2 && (t >= 16 * c || (c > EC_NET_MAX && c <= 128 && t >= 4 * c));
}
static inline int use_collect(const ec_job *j) { return !j->special && collect_shape(j->t, j->c); }

static size_t collect_doubles(size_t c, size_t e, size_t tasks) {
    const size_t ldb = net_ldb(e, tasks), cap = collect_cap(c), nb = 2 * c;
    /* bm, thr, ck, ct + cnt, kf, merge scratch (keys, tokens), order bits */
    return nb * ldb + ldb + cap * ldb + (cap * ldb + ldb) / 2 + 1 + c * ldb / 2 + 8 + cap + cap / 2 + 1 + nb + 8;
}

static inline double from_order_bits(uint64_t u) {
    u = (u >> 63) ? u & ~0x8000000000000000ull : ~u;
    double k;
    memcpy(&k, &u, sizeof k);
    return k;
}

/* Experts [e0, e1): thr_i = the C-th largest of the maxima of 2C blocks of
 * tokens (C distinct tokens have keys >= thr_i, so no token below it is
 * selected); the tokens >= thr_i collected in token order (route.ec_collect,
 * about 1.4 C of them on random logits); a stable merge sort of those by
 * descending key (ties keep token order) and its first C. Returns 0 when an
 * expert has more than collect_cap(C) candidates (ties): the caller then
 * takes another path. */
static int collect_range(const ec_job *j, size_t e0, size_t e1, double *work) {
    const size_t c = j->c, t = j->t, n = e1 - e0, ldb = net_ldb(j->e, j->tasks);
    const size_t cap = collect_cap(c), nb = 2 * c;
    double *bm = work, *thr = bm + nb * ldb, *ck = thr + ldb;
    int32_t *ct = (int32_t *)(void *)(ck + cap * ldb);
    uint32_t *cnt = (uint32_t *)(void *)(ct + cap * ldb);
    float *kf = (float *)(void *)(cnt + ldb + 2);
    kf += (16 - ((uintptr_t)(void *)kf / sizeof *kf) % 16) % 16;
    double *mk = (double *)(void *)(kf + c * ldb + 16);
    int32_t *mt = (int32_t *)(void *)(mk + cap);
    uint64_t *ob = (uint64_t *)(void *)(mt + cap + 2);
    const sg_route_kernels *rk = sg_route_kernels_get();
    const float *x = j->x + e0;
    for (size_t b = 0; b < nb; b++)
        rk->ec_blockmax(t * b / nb, t * (b + 1) / nb, n, x, j->ldx, j->lse, j->inv_temp, bm + b * ldb);
    if (nb <= 32) { /* C <= 16: sorted levels across experts */
        rk->ec_kth(nb, n, ldb, bm, c, thr);
    } else {
        for (size_t i = 0; i < n; i++) {
            for (size_t b = 0; b < nb; b++) ob[b] = order_bits(bm[b * ldb + i] + 0.0);
            thr[i] = from_order_bits(kth_largest(ob, nb, c));
        }
    }
    for (size_t i = 0; i < n; i++) cnt[i] = 0;
    rk->ec_collect(0, t, n, x, j->ldx, j->lse, j->inv_temp, thr, cap, ck, ct, cnt);
    for (size_t i = 0; i < n; i++)
        if (cnt[i] > cap || cnt[i] < c) return 0;
    for (size_t i = 0; i < n; i++) {
        int32_t *tok = j->tok + (e0 + i) * j->ldt;
        rk->ec_rank(cnt[i], ck + i * cap, ct + i * cap, c, tok, kf + i * c, mk, mt);
    }
    net_weights(j, e0, n, kf);
    return 1;
}

/* ---- buckets (no infinite lse, C > 16, C > T / 16) ---------------------- */

/* Largest tokens per bucket left to the insertion sort alone (more: the
 * merge sort first). */
#define EC_BUCKET_MAX 64

static inline int bucket_shape(size_t t, size_t c) { return c > EC_NET_MAX && 16 * c > t; }
static inline int use_bucket(const ec_job *j) { return !j->special && bucket_shape(j->t, j->c); }

/* Buckets: a power of two >= n, 64 to 65536 (uint16_t). */
static size_t bucket_count(size_t n) {
    size_t nb = 64;
    while (nb < n && nb < 65536) nb *= 2;
    return nb;
}

static size_t bucket_doubles(size_t t, size_t c) {
    const size_t nb = bucket_count(t), m = t + 1;
    /* keys, candidates (i32), their buckets (u16), counts (u32), the
     * sorted candidates' keys and tokens, kf */
    return t + t / 2 + 1 + t / 4 + 1 + nb / 2 + 1 + m + m / 2 + 1 + c / 2 + 1 + 16;
}

/* One expert: its keys kd_r in double; a filter lk, the key of rank
 * about 2C (+ 4) in a strided sample of 32 tokens (the caller's,
 * route.ec_kth), keeps the tokens with kd_r >= lk, in token order (about
 * 2C; when fewer than C, or lk = -inf, every token), so every token above
 * a kept one is kept; L = (float)lk (or the least float key when every
 * token is kept) is <= each kept key's float, (float) being
 * non-decreasing. Each kept token gets a bucket b_r = min(NB - 1, floor(((float)kd_r - L) * s)),
 * s = NB / (max - L), again non-decreasing in kd: a higher bucket holds
 * only larger keys. The counts from the top bucket down give the bucket B
 * of the C-th key; the tokens of buckets >= B go out by a stable counting
 * sort (token order within a bucket); buckets of more than EC_BUCKET_MAX
 * tokens (ties, a clustered or heavy-tailed column; equal floats share one
 * bucket) are sorted by the stable merge sort, then one stable insertion
 * sort by descending kd (equal keys keep token order) that moves keys only
 * within their bucket, and the first C are the expert's. Returns 0
 * (nothing written) when the kept keys include -inf (the caller takes the
 * select path). */
static int bucket_expert(const ec_job *j, size_t ex, double lk, double *work) {
    const size_t t = j->t, c = j->c, m = t; /* the dump slot */
    double *ck = work; /* the kept tokens' keys and tokens */
    int32_t *ci = (int32_t *)(void *)(ck + t);
    uint16_t *bk = (uint16_t *)(void *)(ck + t + t / 2 + 1);
    uint32_t *cnt = (uint32_t *)(void *)(ck + t + t / 2 + 1 + t / 4 + 1);
    double *ok = ck + t + t / 2 + 1 + t / 4 + 1 + bucket_count(t) / 2 + 1;
    int32_t *ot = (int32_t *)(void *)(ok + m + 1);
    float *kf = (float *)(void *)(ok + m + 1 + m / 2 + 1);
    kf += (16 - ((uintptr_t)(void *)kf / sizeof *kf) % 16) % 16;
    const float *x = j->x + ex;
    const double inv = j->inv_temp, *lse = j->lse;
    const size_t ldx = j->ldx;
    /* the keys >= lk kept in token order (branch-free), four chains of max */
    double h0 = -INFINITY, h1 = -INFINITY, h2 = -INFINITY, h3 = -INFINITY;
    size_t n = 0, r = 0;
    if (lk > -INFINITY) {
        for (; r + 4 <= t; r += 4) {
            const double v0 = (double)x[r * ldx] * inv - lse[r];
            const double v1 = (double)x[(r + 1) * ldx] * inv - lse[r + 1];
            const double v2 = (double)x[(r + 2) * ldx] * inv - lse[r + 2];
            const double v3 = (double)x[(r + 3) * ldx] * inv - lse[r + 3];
            ck[n] = v0, ci[n] = (int32_t)r, n += v0 >= lk;
            ck[n] = v1, ci[n] = (int32_t)r + 1, n += v1 >= lk;
            ck[n] = v2, ci[n] = (int32_t)r + 2, n += v2 >= lk;
            ck[n] = v3, ci[n] = (int32_t)r + 3, n += v3 >= lk;
            h0 = v0 > h0 ? v0 : h0, h1 = v1 > h1 ? v1 : h1;
            h2 = v2 > h2 ? v2 : h2, h3 = v3 > h3 ? v3 : h3;
        }
        for (; r < t; r++) {
            const double v = (double)x[r * ldx] * inv - lse[r];
            ck[n] = v, ci[n] = (int32_t)r, n += v >= lk;
            h0 = v > h0 ? v : h0;
        }
    }
    h0 = h1 > h0 ? h1 : h0, h2 = h3 > h2 ? h3 : h2;
    /* (float) is non-decreasing: every kept key's float is >= lf */
    float lf = (float)lk, hf = (float)(h2 > h0 ? h2 : h0);
    if (n < c) { /* every token; lf the least float key */
        lf = INFINITY, hf = -INFINITY;
        for (r = 0; r < t; r++) {
            const double v = (double)x[r * ldx] * inv - lse[r];
            const float f = (float)v;
            ck[r] = v, ci[r] = (int32_t)r;
            lf = f < lf ? f : lf;
            hf = f > hf ? f : hf;
        }
        n = t;
    }
    if (!(lf > -INFINITY) || !(hf < INFINITY)) return 0;
    const size_t nb = bucket_count(n);
    float s = hf > lf ? (float)nb / (hf - lf) : 0.0f; /* 0: one bucket */
    if (!(s < INFINITY)) s = 0.0f;
    const float top = (float)(nb - 1);
    for (size_t b = 0; b < nb; b++) cnt[b] = 0;
    for (size_t q = 0; q < n; q++) {
        float y = ((float)ck[q] - lf) * s; /* >= 0, finite */
        y = y < top ? y : top;
        bk[q] = (uint16_t)y;
    }
    for (size_t q = 0; q < n; q++) cnt[bk[q]]++;
    size_t bs = nb, acc = 0;
    int big = 0; /* a bucket of more than EC_BUCKET_MAX tokens */
    while (acc < c) {
        bs--;
        big |= cnt[bs] > EC_BUCKET_MAX;
        acc += cnt[bs];
    }
    /* starts, top bucket first; the buckets below B write to slot m, and
     * do not move on */
    size_t o = 0;
    for (size_t b = nb; b-- > bs;) {
        const size_t k = cnt[b];
        cnt[b] = (uint32_t)o, o += k;
    }
    for (size_t b = 0; b < bs; b++) cnt[b] = (uint32_t)m;
    for (size_t q = 0; q < n; q++) {
        const uint16_t b = bk[q];
        const uint32_t d = cnt[b];
        ok[d] = ck[q], ot[d] = ci[q];
        cnt[b] = d + (b >= bs);
    }
    if (big) /* those buckets first by the stable merge sort (ck, ci: scratch now) */
        for (size_t b = nb, s0 = 0; b-- > bs;) {
            const size_t e1 = cnt[b];
            if (e1 - s0 > EC_BUCKET_MAX) sg_route_ec_rank__ref(e1 - s0, ok + s0, ot + s0, 0, NULL, NULL, ck, ci);
            s0 = e1;
        }
    /* one stable insertion sort over the acc tokens out: a key never
     * passes one of a higher bucket (it is larger), so each bucket is
     * sorted in place */
    for (size_t q = 1; q < acc; q++) {
        const double v = ok[q];
        const int32_t tv = ot[q];
        size_t p = q;
        while (p > 0 && ok[p - 1] < v) ok[p] = ok[p - 1], ot[p] = ot[p - 1], p--;
        ok[p] = v, ot[p] = tv;
    }
    int32_t *tok = j->tok + ex * j->ldt;
    for (size_t q = 0; q < c; q++) tok[q] = ot[q], kf[q] = (float)ok[q];
    net_weights(j, ex, 1, kf);
    return 1;
}

static void expert_task(void *arg, size_t task) {
    const ec_job *j = arg;
    size_t e0 = j->e * task / j->tasks, e1 = j->e * (task + 1) / j->tasks;
    double *work = j->heap + task * task_doubles(j->t, j->c, j->e, j->tasks);
    if (use_bucket(j)) {
        /* the filters: the key of rank 2C ns / T + 4 among ns strided
         * tokens, for 8 experts at a time */
        const size_t t = j->t, n = e1 - e0, ldb = net_ldb(j->e, j->tasks);
        const size_t ns = t < EC_SAMPLE ? t : EC_SAMPLE, step = t / ns;
        size_t ks = 2 * j->c * ns / t + 4;
        ks = ks < ns ? ks : ns;
        double *bm = work, *lk = bm + EC_SAMPLE * ldb;
        for (size_t q = 0; q < ns; q++) {
            const float *xr = j->x + q * step * j->ldx + e0;
            const double l = j->lse[q * step];
            for (size_t i = 0; i < n; i++) bm[q * ldb + i] = (double)xr[i] * j->inv_temp - l;
        }
        sg_route_kernels_get()->ec_kth(ns, n, ldb, bm, ks, lk);
        for (size_t ex = e0; ex < e1; ex++)
            if (!bucket_expert(j, ex, lk[ex - e0], lk + ldb)) expert_select(j, ex, lk + ldb);
        return;
    }
    if (use_collect(j) && collect_range(j, e0, e1, work)) return;
    if (use_net(j->c)) {
        net_task_range(j, e0, e1, work);
        return;
    }
    if (use_select(j->t, j->c)) {
        for (size_t ex = e0; ex < e1; ex++) expert_select(j, ex, work);
        return;
    }
    for (size_t b = e0; b < e1; b += EC_BLOCK)
        expert_block(j, b, e1 - b < EC_BLOCK ? e1 - b : EC_BLOCK, work);
}

/* The arguments; NaN logits too when scan_nan (the forward finds them
 * from lse instead: a row with a NaN has a NaN lse or an infinite max). */
static sg_status check_common(sg_context *ctx, const char *name, size_t t, size_t e, const float *x,
                              size_t ldx, float temperature, size_t c, int scan_nan) {
    if (e == 0 || t == 0)
        return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: t and e must be >= 1 (got %zu, %zu)", name, t, e);
    if (c < 1 || c > t)
        return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: capacity c (%zu) must be in [1, t = %zu]", name, c, t);
    if (t > INT32_MAX) return sg_fail(ctx, SG_ERR_SHAPE, "%s: t (%zu) does not fit int32 tokens", name, t);
    if (!(temperature > 0.0f) || !isfinite(temperature) || !isfinite(1.0f / temperature))
        return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: temperature must be finite and > 0 (got %g)", name,
                       (double)temperature);
    sg_status st = sg_check_matrix(ctx, name, "x", x, t, e, ldx);
    for (size_t r = 0; scan_nan && st == SG_OK && r < t; r++)
        if (sg_route_has_nan(x + r * ldx, e))
            st = sg_fail(ctx, SG_ERR_ARGUMENT, "%s: token %zu has a NaN logit", name, r);
    return st;
}

/* lse_t in double (+-inf for the special rows); probs row when p. */
static double token_lse(const sg_kernels *kern, size_t e, const float *x, float c, float *p) {
    float mx = kern->rmax(e, x);
    if (mx == INFINITY || mx == -INFINITY) {
        size_t cnt = 0;
        for (size_t i = 0; i < e; i++) cnt += x[i] == INFINITY;
        for (size_t i = 0; p && i < e; i++) p[i] = x[i] == INFINITY ? 1.0f / (float)cnt : 0.0f;
        return mx;
    }
    double s;
    if (p) {
        s = kern->expsum_store(e, x, p, mx, c);
        kern->scale(e, p, p, (float)(1.0 / s));
    } else {
        s = kern->expsum(e, x, mx, c);
    }
    return (double)mx * (double)c + log(s);
}

sg_status sg_gate_expert_choice_f32(sg_context *ctx, size_t t, size_t e, const float *x, size_t ldx,
                                    float temperature, size_t c, int32_t *tokens, size_t ldt,
                                    float *weights, size_t ldw, float *probs, size_t ldp) {
    static const char name[] = "sg_gate_expert_choice_f32";
    if (!ctx) return SG_ERR_ARGUMENT;
    sg_ok(ctx);
    /* NaN: scanned first when probs are written, else found from lse */
    sg_status st = check_common(ctx, name, t, e, x, ldx, temperature, c, probs != NULL);
    if (st == SG_OK) st = sg_check_matrix(ctx, name, "tokens", tokens, e, c, ldt);
    if (st == SG_OK) st = sg_check_matrix(ctx, name, "weights", weights, e, c, ldw);
    if (st == SG_OK && probs) st = sg_check_matrix(ctx, name, "probs", probs, t, e, ldp);
    if (st != SG_OK) return st;
    ec_job j = {0};
    j.kern = sg_kernels_get();
    j.t = t, j.e = e, j.c = c, j.x = x, j.ldx = ldx;
    j.cf = 1.0f / temperature;
    j.inv_temp = (double)j.cf;
    j.tok = tokens, j.ldt = ldt, j.w = weights, j.ldw = ldw;
    if (t == 1 && !probs) {
        /* one token (C = 1): every expert takes it, with weight p_0e; the
         * softmax row straight into the weights (stride 1) or through the
         * workspace. A NaN makes the sum NaN; an infinite max goes below. */
        const float mx = j.kern->rmax(e, x);
        if (mx > -INFINITY && mx < INFINITY) {
            float *wr = weights;
            if (ldw != 1) {
                void *wsp;
                if ((st = sg_route_workspace(ctx, name, e * sizeof(float), &wsp)) != SG_OK) return st;
                wr = wsp;
            }
            const double s = j.kern->expsum_store(e, x, wr, mx, j.cf);
            if (s != s) return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: token 0 has a NaN logit", name);
            j.kern->scale(e, wr, wr, (float)(1.0 / s));
            for (size_t ex = 0; ex < e; ex++) tokens[ex * ldt] = 0;
            if (ldw != 1)
                for (size_t ex = 0; ex < e; ex++) weights[ex * ldw] = wr[ex];
            return SG_OK;
        }
    }
    j.tasks = sg_route_tasks(ctx, e, t);
    if (t > SIZE_MAX / 64 / (j.tasks + 1) || c > SIZE_MAX / 64 / EC_BLOCK / (j.tasks + 1))
        return sg_fail(ctx, SG_ERR_SHAPE, "%s: t or c is too large", name);
    void *wsp;
    if ((st = sg_route_workspace(ctx, name, (t + j.tasks * task_doubles(t, c, e, j.tasks)) * sizeof(double), &wsp)) !=
        SG_OK)
        return st;
    double *lse = wsp;
    j.lse = lse;
    j.heap = lse + t;
    if (!probs && e <= j.kern->softmax_short_max_n) {
        /* short rows: logsumexp of up to 16 rows per kernel call (rows in
         * registers); a row with an infinite max goes the long way */
        float l16[16];
        for (size_t r = 0; r < t;) {
            size_t n = t - r < 16 ? t - r : 16;
            size_t done = j.kern->softmax_short(n, e, x + r * ldx, ldx, l16, 1, j.cf, temperature,
                                                SG_SHORT_LOGSUMEXP);
            for (size_t q = 0; q < done; q++) lse[r + q] = l16[q];
            r += done;
            if (done < n) lse[r] = token_lse(j.kern, e, x + r * ldx, j.cf, NULL), r++;
        }
    } else {
        for (size_t r = 0; r < t; r++)
            lse[r] = token_lse(j.kern, e, x + r * ldx, j.cf, probs ? probs + r * ldp : NULL);
    }
    /* a row with a NaN has a NaN lse, or an infinite one (its max): the
     * first such row that holds a NaN is the error */
    for (size_t r = 0; r < t; r++) {
        if (lse[r] > -INFINITY && lse[r] < INFINITY) continue;
        if (sg_route_has_nan(x + r * ldx, e))
            return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: token %zu has a NaN logit", name, r);
        j.special = 1;
    }
    /* the expert-major key uses x / T exactly as lse does: inv_temp = c */
    if (j.tasks <= 1) expert_task(&j, 0);
    else sg_parallel_for(ctx, j.tasks, expert_task, &j);
    return SG_OK;
}

sg_status sg_gate_expert_choice_backward_f32(sg_context *ctx, size_t t, size_t e, const float *x,
                                             size_t ldx, float temperature, size_t c,
                                             const int32_t *tokens, size_t ldt, const float *dweights,
                                             size_t lddw, float *dx, size_t lddx) {
    static const char name[] = "sg_gate_expert_choice_backward_f32";
    if (!ctx) return SG_ERR_ARGUMENT;
    sg_ok(ctx);
    sg_status st = check_common(ctx, name, t, e, x, ldx, temperature, c, 1);
    if (st == SG_OK) st = sg_check_matrix(ctx, name, "tokens", tokens, e, c, ldt);
    if (st == SG_OK) st = sg_check_matrix(ctx, name, "dweights", dweights, e, c, lddw);
    if (st == SG_OK) st = sg_check_matrix(ctx, name, "dx", dx, t, e, lddx);
    if (st == SG_OK && dx == x) st = sg_fail(ctx, SG_ERR_ARGUMENT, "%s: dx may not alias x", name);
    for (size_t ex = 0; st == SG_OK && ex < e; ex++)
        for (size_t s = 0; s < c; s++) {
            int32_t v = tokens[ex * ldt + s];
            if (v < 0 || (size_t)v >= t) {
                st = sg_fail(ctx, SG_ERR_ARGUMENT, "%s: tokens[%zu][%zu] = %ld is outside [0, t = %zu)", name,
                             ex, s, (long)v, t);
                break;
            }
        }
    if (st != SG_OK) return st;
    /* G into dx, then per token dx = p (G - <p, G>) / T with p recomputed */
    for (size_t r = 0; r < t; r++) memset(dx + r * lddx, 0, e * sizeof *dx);
    for (size_t ex = 0; ex < e; ex++)
        for (size_t s = 0; s < c; s++) dx[(size_t)tokens[ex * ldt + s] * lddx + ex] += dweights[ex * lddw + s];
    const sg_kernels *kern = sg_kernels_get();
    const float cf = 1.0f / temperature;
    float prow[SG_ROUTE_STACK_E];
    float *p = prow;
    if (e > SG_ROUTE_STACK_E) {
        void *wsp;
        if ((st = sg_route_workspace(ctx, name, e * sizeof(float), &wsp)) != SG_OK) return st;
        p = wsp;
    }
    for (size_t r = 0; r < t; r++) {
        float *d = dx + r * lddx;
        token_lse(kern, e, x + r * ldx, cf, p);
        double dot = 0.0;
        for (size_t i = 0; i < e; i++) dot += (double)p[i] * (double)d[i];
        for (size_t i = 0; i < e; i++) d[i] = (float)((double)p[i] * ((double)d[i] - dot) * (double)cf);
    }
    return SG_OK;
}

/*
 * gate_topk.c - the gates that give each token K experts (route.h, "Top-k
 * gates"): softmax then top-k, top-k then softmax, the DeepSeek-V3 sigmoid
 * gate with selection bias and group limiting, noisy and Gumbel top-k,
 * random routing; forward and backward. Expert choice, dense gates and
 * the balance machinery live in their own files.
 *
 * Per row: the selection key (the logits themselves, or a row computed
 * into scratch: biased logits, perturbed logits, uniforms) goes through
 * the route.topk kernel after a NaN check; then the K weights are
 * evaluated in double from the float inputs, and the full row (probs, or
 * the normalizer of softmax-then-top-k) through the softmax core's
 * kernels. Two kinds of rows take one kernel call per block instead:
 * the renormalized softmax-top-k / top-k-softmax on the logits without
 * probs (route.topk_rows, where fused_worth says it pays) and the sigmoid
 * gate with a key row (route.sgate, gate_sigmoid.c); both give the row
 * path's bits. Scratch rows are on the stack up to SG_ROUTE_STACK_E
 * experts, in the context's workspace beyond.
 */
#include <float.h>
#include <math.h>
#include <string.h>

#include "route/route_internal.h"
#include "route/route_kernels.h"
#include "softmax/softmax_internal.h"

static const char *const kind_names[] = {"softmax_topk", "topk_softmax", "sigmoid_topk",
                                         "noisy_topk",   "gumbel_topk",  "random"};

const char *sg_gate_kind_name(sg_gate_kind kind) {
    return (unsigned)kind <= SG_GATE_RANDOM ? kind_names[kind] : "unknown";
}

sg_gate_config sg_gate_config_default(sg_gate_kind kind) {
    sg_gate_config c;
    memset(&c, 0, sizeof c);
    c.kind = kind;
    c.k = 2;
    c.renormalize = kind == SG_GATE_TOPK_SOFTMAX || kind == SG_GATE_NOISY_TOPK ||
                    kind == SG_GATE_SIGMOID_TOPK;
    c.temperature = 1.0f;
    c.routed_scale = 1.0f;
    return c;
}

/* ---- one call, resolved ------------------------------------------------- */

typedef struct gate_job {
    const sg_kernels *kern;
    sg_route_topk_fn *topk; /* the routers' table, looked up once per call */
    const sg_gate_config *cfg;
    size_t t, e, k;
    float c; /* 1 / temperature */
    double a;
    const float *x;
    size_t ldx;
    int32_t *ids; /* forward output */
    const int32_t *ids_in; /* backward input */
    size_t ldi;
    float *w;
    size_t ldw;
    float *p;
    size_t ldp;
    const float *dw;
    size_t lddw;
    float *dx, *dq;
    size_t lddx, lddq;
    float *work; /* per task: 4 * e floats when e > SG_ROUTE_STACK_E */
    sg_route_sgate_fn *sgate; /* the sigmoid gate with a key row, forward */
    sg_route_sgate sg;
} gate_job;

static inline int is_softmax_kind(sg_gate_kind k) { return k != SG_GATE_SIGMOID_TOPK && k != SG_GATE_RANDOM; }

/* Whether the row needs its key computed into scratch (else the key is x
 * or z' itself). */
static inline int needs_key_row(const gate_job *j) {
    return j->cfg->bias || j->cfg->kind == SG_GATE_RANDOM ||
           (j->cfg->kind == SG_GATE_SIGMOID_TOPK && j->cfg->n_group > 1);
}

/* softplus(q) = log(1 + e^q) without overflow; sigmoid(q) in double. */
static inline double softplus(double q) { return q > 0 ? q + log1p(exp(-q)) : log1p(exp(q)); }
/* The forward's sigmoid (float expf, within 2e-7 relative). */
static inline double sigmoid_f(double z) {
    const float a = (float)fabs(z), q = expf(-a);
    return z >= 0 ? 1.0 / (1.0 + (double)q) : (double)q / (1.0 + (double)q);
}
static inline double sigmoid_d(double z) {
    return z >= 0 ? 1.0 / (1.0 + exp(-z)) : exp(z) / (1.0 + exp(z));
}

/* The standard normal of NOISY_TOPK at (t, e) from u(t, 2e), u(t, 2e+1). */
static inline double box_muller(const float *u2, size_t e) {
    return sqrt(-2.0 * log((double)u2[2 * e])) * cos(6.283185307179586 * (double)u2[2 * e + 1]);
}

/*
 * The perturbed logits z' of NOISY and GUMBEL for row r into zp; u (2e
 * floats) keeps the row's uniforms, from which the backward recomputes n.
 */
static void perturbed_row(const gate_job *j, size_t r, const float *x, float *zp, float *u) {
    const sg_gate_config *cfg = j->cfg;
    if (cfg->kind == SG_GATE_NOISY_TOPK) {
        sg_route_uniform_row(cfg->seed, cfg->offset, r, 2 * j->e, u);
        const float *q = cfg->noise + r * cfg->ldnoise;
        for (size_t i = 0; i < j->e; i++)
            zp[i] = (float)((double)x[i] + box_muller(u, i) * softplus(q[i]));
    } else {
        sg_route_uniform_row(cfg->seed, cfg->offset, r, j->e, u);
        for (size_t i = 0; i < j->e; i++)
            zp[i] = (float)((double)x[i] - log(-log((double)u[i])));
    }
}

/*
 * p = softmax(c z) over the row through the kernels; +inf entries share
 * the mass, a row of -inf gives 0 (the softmax core's table). Returns the
 * max and writes the normalizer sum_i exp(c (z_i - max)) to *sum (0 for
 * the -inf row; the count of +inf entries when the max is +inf). p may be
 * NULL (only the statistics).
 */
static float softmax_stats(const gate_job *j, const float *z, float *p, double *sum) {
    const size_t e = j->e;
    float mx = j->kern->rmax(e, z);
    if (mx == INFINITY || mx == -INFINITY) {
        size_t cnt = 0;
        for (size_t i = 0; i < e; i++) cnt += z[i] == INFINITY;
        *sum = (double)cnt;
        for (size_t i = 0; p && i < e; i++) p[i] = cnt && z[i] == INFINITY ? 1.0f / (float)cnt : 0.0f;
        return mx;
    }
    if (p) {
        *sum = j->kern->expsum_store(e, z, p, mx, j->c);
        j->kern->scale(e, p, p, (float)(1.0 / *sum));
    } else {
        *sum = j->kern->expsum(e, z, mx, j->c);
    }
    return mx;
}

/* exp(c (z_i - max)) / sum, with the special rows' rules: the argument
 * (<= 0) is formed in double and rounded once to float for expf (libm,
 * < 1 ulp), the quotient in double: within 2e-6 relative while
 * |c (z_i - max)| < 64, i.e. for every weight above 1e-27. */
static inline double prob_of(float zi, float mx, double sum, float c) {
    if (mx == INFINITY) return sum > 0 && zi == INFINITY ? 1.0 / sum : 0.0;
    if (mx == -INFINITY) return 0.0;
    if (zi == mx) return 1.0 / sum; /* the top expert: exp(0), no call */
    return (double)expf((float)(((double)zi - (double)mx) * (double)c)) / sum;
}

/*
 * Weights over the selected z (softmax of the K selected, times a) into
 * wd[0..k): the renormalized softmax gates and TOPK_SOFTMAX.
 */
static void selected_softmax(const gate_job *j, const float *z, const int32_t *ids, double *wd) {
    float m = z[ids[0]]; /* the max of the selection when there is no bias */
    for (size_t l = 1; l < j->k; l++) m = z[ids[l]] > m ? z[ids[l]] : m;
    double s = 0.0;
    for (size_t l = 0; l < j->k; l++) {
        const float zi = z[ids[l]];
        if (m == INFINITY) wd[l] = zi == INFINITY ? 1.0 : 0.0;
        else if (m == -INFINITY) wd[l] = 0.0;
        else if (zi == m) wd[l] = 1.0; /* exp(0): no call */
        else wd[l] = (double)expf((float)(((double)zi - (double)m) * (double)j->c));
        s += wd[l];
    }
    const double inv = s > 0.0 ? 1.0 / s : 0.0;
    for (size_t l = 0; l < j->k; l++) wd[l] *= inv;
}

/* s = sigmoid(c x) for the whole row (route_kernels.h). */
static void sigmoid_row(const gate_job *j, const float *x, float *s) { sg_route_sigmoid_row(j->e, x, j->c, s); }

/* The scratch of a task: key (e floats), perturbed logits (e) and
 * uniforms (2 e, the noisy gate's pairs), from task_scratch. */
typedef struct scratch {
    float *key, *zp, *u;
} scratch;

/* ---- forward rows ------------------------------------------------------- */

/* The K ids of row r into ids; the source row z (x, or z') into *zsrc.
 * Returns nonzero on NaN. */
static int route_row(const gate_job *j, size_t r, const scratch *sc, int32_t *ids,
                     const float **zsrc) {
    const sg_gate_config *cfg = j->cfg;
    const float *x = j->x ? j->x + r * j->ldx : NULL, *z = x;
    size_t f = 0;
    float top[SG_ROUTE_STACK_E]; /* k <= SG_ROUTE_STACK_E (checked) */
    if (cfg->kind == SG_GATE_NOISY_TOPK || cfg->kind == SG_GATE_GUMBEL_TOPK) {
        if (sg_route_has_nan(x, j->e)) return 1;
        perturbed_row(j, r, x, sc->zp, sc->u);
        z = sc->zp;
    }
    *zsrc = z;
    if (cfg->kind == SG_GATE_RANDOM) {
        sg_route_uniform_row(cfg->seed, cfg->offset, r, j->e, sc->key);
        sg_route_select(sc->key, j->e, j->k, ids, top, &f, 0);
        return 0;
    }
    if (!needs_key_row(j)) {
        if (sg_route_has_nan(z, j->e)) return 1;
        j->topk(z, j->e, j->k, ids, top);
        return 0;
    }
    {
        for (size_t i = 0; i < j->e; i++) sc->key[i] = z[i] * j->c;
        if (cfg->bias)
            for (size_t i = 0; i < j->e; i++) sc->key[i] += cfg->bias[i];
    }
    /* a NaN in z reaches its key (sigmoid, product and sum keep NaN) */
    if (sg_route_has_nan(sc->key, j->e)) return 1;
    j->topk(sc->key, j->e, j->k, ids, top);
    return 0;
}

static void forward_weights(const gate_job *j, size_t r, const float *z, const int32_t *ids,
                            float *w, float *p) {
    const sg_gate_config *cfg = j->cfg;
    double wd[64], *wp = wd;
    double big[SG_ROUTE_STACK_E];
    if (j->k > 64) wp = big; /* k <= e; beyond the stack, k <= SG_ROUTE_STACK_E is checked */
    (void)r;
    switch (cfg->kind) {
    case SG_GATE_RANDOM:
        for (size_t l = 0; l < j->k; l++) wp[l] = 1.0 / (double)j->k;
        for (size_t i = 0; p && i < j->e; i++) p[i] = 1.0f / (float)j->e;
        break;
    case SG_GATE_SIGMOID_TOPK: {
        double s = 0.0;
        for (size_t l = 0; l < j->k; l++) s += wp[l] = sigmoid_f((double)z[ids[l]] * (double)j->c);
        if (cfg->renormalize) { /* one division (they were a chain of K) */
            const double inv = s > 0 ? 1.0 / s : 0.0;
            for (size_t l = 0; l < j->k; l++) wp[l] *= inv;
        }
        if (p) sigmoid_row(j, z, p);
        break;
    }
    default: {
        const int full = cfg->kind != SG_GATE_TOPK_SOFTMAX && !cfg->renormalize;
        if (full || p) {
            double sum;
            float mx = softmax_stats(j, z, p, &sum);
            if (full)
                for (size_t l = 0; l < j->k; l++) wp[l] = prob_of(z[ids[l]], mx, sum, j->c);
        }
        if (!full) selected_softmax(j, z, ids, wp);
        break;
    }
    }
    for (size_t l = 0; l < j->k; l++) w[l] = (float)(j->a * wp[l]);
}

static void task_scratch(const gate_job *j, size_t task, float *stack, scratch *sc) {
    float *base = j->e > SG_ROUTE_STACK_E ? j->work + task * 4 * j->e : stack;
    sc->key = base;
    sc->zp = base + j->e;
    sc->u = base + 2 * j->e; /* 2 e: the noisy gate's pairs */
}

/* Rows whose weights are a softmax over the K selected (renormalized
 * softmax gates, TOPK_SOFTMAX) with K <= BATCH_K go in chunks of
 * BATCH_ROWS: their exponent arguments are collected and exponentiated by
 * one call of the kernels' vector exp, instead of K scalar expf calls per
 * token (a third of a decode step's time at E = 8). */
#define BATCH_ROWS 64
#define BATCH_K 16

static int batched(const gate_job *j) {
    const sg_gate_kind k = j->cfg->kind;
    return j->k <= BATCH_K && k != SG_GATE_SIGMOID_TOPK && k != SG_GATE_RANDOM &&
           (k == SG_GATE_TOPK_SOFTMAX || j->cfg->renormalize);
}

/* Arguments c (z_i - m) <= 0 of a row's K selected into a; returns 0 when
 * the selection's max m is +-inf (the row is then done the scalar way). */
static int batch_args(const gate_job *j, const float *z, const int32_t *ids, float *a) {
    float m = z[ids[0]];
    for (size_t l = 1; l < j->k; l++) m = z[ids[l]] > m ? z[ids[l]] : m;
    if (m == INFINITY || m == -INFINITY) return 0;
    for (size_t l = 0; l < j->k; l++) a[l] = (float)(((double)z[ids[l]] - (double)m) * (double)j->c);
    return 1;
}

/* Softmax-top-k without renormalizing (Switch's top-1), no probs, short
 * rows: each chunk's lse_t = log sum_i exp(c x_ti) comes from the
 * short-row logsumexp (16 rows per call, rows in registers), and the
 * weights exp(c x - lse) go through the batched exponential, instead of
 * two kernel calls (max, sum) per token. */
#define LSE_BATCH_MAX 8.0f /* |lse| above it: the scalar way (error |lse| 2^-24 <= 5e-7) */
static int lse_batched(const gate_job *j) {
    return j->cfg->kind == SG_GATE_SOFTMAX_TOPK && !j->cfg->renormalize && !j->p && j->x &&
           j->k <= BATCH_K && j->e <= j->kern->softmax_short_max_n;
}

/* The renormalized softmax-top-k and top-k-then-softmax gates on the
 * logits themselves (no bias, no probs), K <= BATCH_K: route.topk_rows
 * writes the ids and weights of up to 16 rows per call; the rows the
 * kernel leaves (NaN, +-inf max, fewer than K keys above -inf) take the
 * row-by-row path. Same ids and weights as that path, bit for bit. */
static int fused_rows(const gate_job *j) {
    const sg_gate_kind k = j->cfg->kind;
    return (k == SG_GATE_TOPK_SOFTMAX || (k == SG_GATE_SOFTMAX_TOPK && j->cfg->renormalize)) && !j->cfg->bias &&
           !j->p && j->x && j->k <= BATCH_K;
}

/* Whether a SIMD topk_rows on blocks of n rows beats the row-by-row path
 * here. From 32 experts it does at every n (measured E = 32, 64, 256 at
 * T = 1..16: its rows keep the NaN test in the max pass and the weights
 * in registers, its blocks of many rows go through the levels); below,
 * only when its levels (rows in lanes, about 20 + e (k + 1) ns a block
 * whatever n) cost less than n rows of the row path (about 16 + e ns
 * each). Measured on AVX-512 (Zen 4). The reference kernel (SOFTGATE_ISA
 * below AVX-512) is never faster. */
static int fused_worth(sg_route_topk_rows_fn *rows, size_t n, size_t e, size_t k) {
    if (rows == sg_route_topk_rows__ref || e > SG_ROUTE_STACK_E) return 0; /* beyond: the reference */
    return e >= 32 || n * (16 + e) > 20 + e * (k + 1);
}

/* Switch's gate (softmax-top-k, K = 1, not renormalized) on the logits
 * themselves, no bias, no probs, more than TOP1_SHORT_MAX experts: the
 * row path's weight is a / sum with sum = expsum(z, rmax(z), c) (prob_of
 * at the top expert); route.top1 forms it in one call for many rows, with
 * the NaN test in its maximum pass and no separate top-k pass. Same id and
 * weight as the row path bit for bit. Up to TOP1_SHORT_MAX experts the
 * short-row lse way (lse_batched) stays faster (E = 8: 16 rows per
 * logsumexp call); from 17 to the short rows' 128, route.top1 is (E = 64,
 * T = 4096: about 240 -> 150 us). The choice depends on e only, so every
 * row of a call, whatever its block or thread, takes the same way. */
#define TOP1_SHORT_MAX 16
static int top1_rows(const gate_job *j) {
    return j->cfg->kind == SG_GATE_SOFTMAX_TOPK && !j->cfg->renormalize && j->k == 1 && !j->cfg->bias && !j->p &&
           j->x;
}

static size_t forward_fused(const gate_job *j, size_t r0, size_t r1, const scratch *sc) {
    sg_route_topk_rows_fn *rows = sg_route_kernels_get()->topk_rows;
    for (size_t b0 = r0; b0 < r1; b0 += 16) {
        const size_t n = r1 - b0 < 16 ? r1 - b0 : 16;
        uint32_t left = rows(n, j->e, j->k, j->x + b0 * j->ldx, j->ldx, j->c, (float)j->a, j->ids + b0 * j->ldi,
                             j->ldi, j->w + b0 * j->ldw, j->ldw);
        /* the rows left, in row order (the first NaN row is reported), as
         * the row path does them: the batched exponential unless the max
         * is +-inf (same weights bit for bit) */
        for (; left; left &= left - 1) {
            const size_t r = b0 + (size_t)__builtin_ctz(left);
            const float *z;
            int32_t *ids = j->ids + r * j->ldi;
            float *w = j->w + r * j->ldw, args[BATCH_K];
            if (route_row(j, r, sc, ids, &z)) return r;
            if (!batch_args(j, z, ids, args)) {
                forward_weights(j, r, z, ids, w, NULL);
                continue;
            }
            j->kern->expsum_store(j->k, args, args, 0.0f, 1.0f);
            double s = 0.0;
            for (size_t l = 0; l < j->k; l++) s += args[l];
            const double scale = j->a / s;
            for (size_t l = 0; l < j->k; l++) w[l] = (float)((double)args[l] * scale);
        }
    }
    return SIZE_MAX;
}

static size_t forward_rows(void *arg, size_t r0, size_t r1, size_t task) {
    const gate_job *j = arg;
    float stack[j->e > SG_ROUTE_STACK_E ? 1 : 4 * j->e];
    scratch sc;
    task_scratch(j, task, stack, &sc);
    if (j->sgate) { /* the sigmoid gate with a key row: one kernel call (route.sgate) */
        const size_t bad = j->sgate(&j->sg, r1 - r0, j->x + r0 * j->ldx, j->ldx, j->ids + r0 * j->ldi, j->ldi,
                                    j->w + r0 * j->ldw, j->ldw, j->p ? j->p + r0 * j->ldp : NULL, j->ldp, sc.key);
        return bad == SIZE_MAX ? bad : r0 + bad;
    }
    if (fused_rows(j) && fused_worth(sg_route_kernels_get()->topk_rows, r1 - r0 < 16 ? r1 - r0 : 16, j->e, j->k))
        return forward_fused(j, r0, r1, &sc);
    const int lseb = lse_batched(j), batch = batched(j) || lseb, top1 = top1_rows(j);
    if (top1 && (!lseb || j->e > TOP1_SHORT_MAX)) { /* route.top1, a row it leaves by the row path */
        sg_route_top1_fn *top1k = sg_route_kernels_get()->top1;
        for (size_t r = r0; r < r1; r++) {
            r += top1k(r1 - r, j->e, j->x + r * j->ldx, j->ldx, j->c, (float)j->a, j->ids + r * j->ldi, j->ldi,
                       j->w + r * j->ldw, j->ldw);
            if (r == r1) break;
            const float *z;
            if (route_row(j, r, &sc, j->ids + r * j->ldi, &z)) return r;
            forward_weights(j, r, z, j->ids + r * j->ldi, j->w + r * j->ldw, NULL);
        }
        return SIZE_MAX;
    }
    float args[BATCH_ROWS * BATCH_K], lse[BATCH_ROWS];
    unsigned char done[BATCH_ROWS];
    for (size_t c0 = r0; c0 < r1; c0 += BATCH_ROWS) {
        const size_t c1 = r1 - c0 < BATCH_ROWS ? r1 : c0 + BATCH_ROWS;
        if (lseb) /* NaN rows come out NaN (and are reported below); +-inf max rows: -inf here */
            for (size_t r = c0; r < c1;) {
                const size_t n = c1 - r < 16 ? c1 - r : 16;
                const size_t d = j->kern->softmax_short(n, j->e, j->x + r * j->ldx, j->ldx, lse + (r - c0), 1,
                                                        j->c, j->cfg->temperature, SG_SHORT_LOGSUMEXP);
                r += d;
                if (d < n) lse[r++ - c0] = -INFINITY; /* the scalar way */
            }
        for (size_t r = c0; r < c1; r++) {
            int32_t *ids = j->ids + r * j->ldi;
            const float *z;
            float *p = j->p ? j->p + r * j->ldp : NULL;
            if (top1 && fabsf(lse[r - c0]) <= LSE_BATCH_MAX) {
                /* a finite lse: no NaN in the row (a NaN row's lse is NaN),
                 * max finite; the first maximum as topk picks it */
                const float *x = j->x + r * j->ldx;
                float m = x[0];
                if (j->e <= 16) { /* a short chain of selects, no call */
                    size_t id = 0;
                    for (size_t i = 1; i < j->e; i++) {
                        const int gt = x[i] > m;
                        m = gt ? x[i] : m;
                        id = gt ? i : id;
                    }
                    ids[0] = (int32_t)id;
                } else { /* (m's address is not taken: the chain above stays in registers) */
                    float top;
                    j->topk(x, j->e, 1, ids, &top);
                    m = top;
                }
                const double a = (double)m * (double)j->c - (double)lse[r - c0];
                args[(r - c0) * j->k] = a < 0.0 ? (float)a : 0.0f;
                done[r - c0] = 0;
                continue;
            }
            if (route_row(j, r, &sc, ids, &z)) return r;
            if (lseb && fabsf(lse[r - c0]) <= LSE_BATCH_MAX) {
                /* a = c z - lse <= 0: lse is a float, its rounding (|lse| 2^-24)
                 * enters every argument, hence the bound on |lse|; clamped at 0
                 * so that rounding cannot make a weight exceed a */
                for (size_t l = 0; l < j->k; l++) {
                    const double a = (double)z[ids[l]] * (double)j->c - (double)lse[r - c0];
                    args[(r - c0) * j->k + l] = a < 0.0 ? (float)a : 0.0f;
                }
                done[r - c0] = 0;
                continue;
            }
            if (!lseb && batch && batch_args(j, z, ids, args + (r - c0) * j->k)) {
                done[r - c0] = 0;
                if (p) { /* the full row now: z may be scratch reused by the next row */
                    double sum;
                    softmax_stats(j, z, p, &sum);
                }
                continue;
            }
            done[r - c0] = 1;
            forward_weights(j, r, z, ids, j->w + r * j->ldw, p);
        }
        if (!batch) continue;
        j->kern->expsum_store((c1 - c0) * j->k, args, args, 0.0f, 1.0f);
        for (size_t r = c0; r < c1; r++) {
            if (done[r - c0]) continue;
            const float *a = args + (r - c0) * j->k;
            if (lseb) { /* the probabilities themselves */
                float *w = j->w + r * j->ldw;
                for (size_t l = 0; l < j->k; l++) w[l] = (float)(j->a * (double)a[l]);
                continue;
            }
            double s = 0.0;
            for (size_t l = 0; l < j->k; l++) s += a[l];
            const double scale = j->a / s; /* s >= 1: the max's term is exp(0) */
            float *w = j->w + r * j->ldw;
            for (size_t l = 0; l < j->k; l++) w[l] = (float)((double)a[l] * scale);
        }
    }
    return SIZE_MAX;
}

/* ---- backward rows ------------------------------------------------------ */

static int bad_ids(const gate_job *j, const int32_t *ids) {
    for (size_t l = 0; l < j->k; l++) {
        if (ids[l] < 0 || (size_t)ids[l] >= j->e) return 1;
        for (size_t m = 0; m < l; m++)
            if (ids[m] == ids[l]) return 1;
    }
    return 0;
}

/* dz of the softmax kinds on the source row z into dx. */
static void softmax_backward_row(const gate_job *j, const float *z, const int32_t *ids,
                                 const float *dw, float *dx) {
    const double ac = j->a * (double)j->c;
    if (j->cfg->kind != SG_GATE_TOPK_SOFTMAX && !j->cfg->renormalize) {
        double sum;
        float mx = softmax_stats(j, z, dx, &sum); /* p into dx */
        double dot = 0.0;
        for (size_t l = 0; l < j->k; l++) dot += (double)dw[l] * prob_of(z[ids[l]], mx, sum, j->c);
        /* dx_e = ac p_e (g_e - dot) */
        for (size_t i = 0; i < j->e; i++) dx[i] = (float)(-ac * (double)dx[i] * dot);
        for (size_t l = 0; l < j->k; l++)
            dx[ids[l]] = (float)(ac * prob_of(z[ids[l]], mx, sum, j->c) * ((double)dw[l] - dot));
        return;
    }
    double wd[SG_ROUTE_STACK_E], dot = 0.0;
    selected_softmax(j, z, ids, wd);
    for (size_t l = 0; l < j->k; l++) dot += wd[l] * (double)dw[l];
    memset(dx, 0, j->e * sizeof *dx);
    for (size_t l = 0; l < j->k; l++) dx[ids[l]] = (float)(ac * wd[l] * ((double)dw[l] - dot));
}

static void sigmoid_backward_row(const gate_job *j, const float *x, const int32_t *ids,
                                 const float *dw, float *dx) {
    double s[SG_ROUTE_STACK_E], sum = 0.0, dot = 0.0;
    for (size_t l = 0; l < j->k; l++) sum += s[l] = sigmoid_d((double)x[ids[l]] * (double)j->c);
    memset(dx, 0, j->e * sizeof *dx);
    if (j->cfg->renormalize) {
        for (size_t l = 0; l < j->k; l++) dot += (sum > 0 ? s[l] / sum : 0.0) * (double)dw[l];
        for (size_t l = 0; l < j->k; l++) {
            double ds = sum > 0 ? ((double)dw[l] - dot) / sum : 0.0;
            dx[ids[l]] = (float)(j->a * ds * (double)j->c * s[l] * (1.0 - s[l]));
        }
    } else {
        for (size_t l = 0; l < j->k; l++)
            dx[ids[l]] = (float)(j->a * (double)dw[l] * (double)j->c * s[l] * (1.0 - s[l]));
    }
}

static size_t backward_rows(void *arg, size_t r0, size_t r1, size_t task) {
    const gate_job *j = arg;
    float stack[j->e > SG_ROUTE_STACK_E ? 1 : 4 * j->e];
    scratch sc;
    task_scratch(j, task, stack, &sc);
    const sg_gate_config *cfg = j->cfg;
    for (size_t r = r0; r < r1; r++) {
        const int32_t *ids = j->ids_in + r * j->ldi;
        const float *x = j->x + r * j->ldx, *dw = j->dw + r * j->lddw;
        float *dx = j->dx + r * j->lddx;
        if (bad_ids(j, ids) || sg_route_has_nan(x, j->e)) return r;
        if (cfg->kind == SG_GATE_SIGMOID_TOPK) {
            sigmoid_backward_row(j, x, ids, dw, dx);
            continue;
        }
        const float *z = x;
        if (cfg->kind != SG_GATE_SOFTMAX_TOPK && cfg->kind != SG_GATE_TOPK_SOFTMAX) {
            perturbed_row(j, r, x, sc.zp, sc.u);
            z = sc.zp;
        }
        softmax_backward_row(j, z, ids, dw, dx);
        if (cfg->kind == SG_GATE_NOISY_TOPK && j->dq) {
            const float *q = cfg->noise + r * cfg->ldnoise;
            float *dq = j->dq + r * j->lddq; /* u still holds this row's pairs */
            for (size_t i = 0; i < j->e; i++)
                dq[i] = (float)((double)dx[i] * box_muller(sc.u, i) * sigmoid_d(q[i]));
        }
    }
    return SIZE_MAX;
}

/* ---- argument checks and the public calls ------------------------------- */

static sg_status check_config(sg_context *ctx, const char *name, const sg_gate_config *cfg,
                              size_t t, size_t e) {
    if (!cfg) return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: cfg is NULL", name);
    if ((unsigned)cfg->kind > SG_GATE_RANDOM)
        return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: unknown gate kind %d", name, (int)cfg->kind);
    if (cfg->k == 0) return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: k is 0", name);
    if (cfg->k > e)
        return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: k (%zu) is greater than the expert count e (%zu)",
                       name, cfg->k, e);
    if (cfg->k > SG_ROUTE_STACK_E)
        return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: k (%zu) above %d is not supported", name, cfg->k,
                       SG_ROUTE_STACK_E);
    if (e > INT32_MAX) return sg_fail(ctx, SG_ERR_SHAPE, "%s: e (%zu) does not fit int32 ids", name, e);
    if (!(cfg->temperature > 0.0f) || !isfinite(cfg->temperature) || !isfinite(1.0f / cfg->temperature))
        return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: temperature must be finite and > 0 with 1/T finite (got %g)",
                       name, (double)cfg->temperature);
    if (!isfinite(cfg->routed_scale))
        return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: routed_scale must be finite (got %g)", name,
                       (double)cfg->routed_scale);
    if (cfg->bias) {
        if (cfg->kind == SG_GATE_RANDOM)
            return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: the random gate takes no bias", name);
        for (size_t i = 0; i < e; i++)
            if (!isfinite(cfg->bias[i]))
                return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: bias[%zu] = %g is not finite", name, i,
                               (double)cfg->bias[i]);
    }
    if (cfg->n_group > 1) {
        if (cfg->kind != SG_GATE_SIGMOID_TOPK)
            return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: n_group > 1 needs the sigmoid_topk gate", name);
        if (e % cfg->n_group)
            return sg_fail(ctx, SG_ERR_SHAPE, "%s: e (%zu) is not a multiple of n_group (%zu)", name, e,
                           cfg->n_group);
        if (cfg->topk_group < 1 || cfg->topk_group > cfg->n_group)
            return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: topk_group (%zu) must be in [1, n_group = %zu]",
                           name, cfg->topk_group, cfg->n_group);
        if (cfg->topk_group > 256)
            return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: topk_group (%zu) above 256 is not supported", name,
                           cfg->topk_group);
        if (cfg->k > cfg->topk_group * (e / cfg->n_group))
            return sg_fail(ctx, SG_ERR_ARGUMENT,
                           "%s: k (%zu) exceeds the experts of topk_group groups (%zu)", name, cfg->k,
                           cfg->topk_group * (e / cfg->n_group));
    }
    if (cfg->kind == SG_GATE_NOISY_TOPK) {
        sg_status st = sg_check_matrix(ctx, name, "cfg->noise", cfg->noise, t, e, cfg->ldnoise);
        if (st != SG_OK) return st;
        if (t && !cfg->noise) return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: cfg->noise is NULL", name);
    }
    if (cfg->kind == SG_GATE_RANDOM || cfg->kind == SG_GATE_NOISY_TOPK ||
        cfg->kind == SG_GATE_GUMBEL_TOPK) {
        if (t > 0xFFFFFFFFu || e > 0x7FFFFFFFu)
            return sg_fail(ctx, SG_ERR_SHAPE, "%s: random gates need t < 2^32 and e < 2^31", name);
    }
    return SG_OK;
}

/* Workspace for the scratch rows when e is beyond the stack. */
static sg_status prepare(sg_context *ctx, const char *name, gate_job *j, size_t tasks) {
    j->kern = sg_kernels_get();
    j->topk = sg_route_kernels_get()->topk;
    j->c = 1.0f / j->cfg->temperature;
    j->a = j->cfg->routed_scale;
    j->k = j->cfg->k;
    if (j->e <= SG_ROUTE_STACK_E) return SG_OK;
    if (j->e > SIZE_MAX / sizeof(float) / 4 / tasks)
        return sg_fail(ctx, SG_ERR_SHAPE, "%s: e (%zu) is too large", name, j->e);
    void *w;
    sg_status st = sg_route_workspace(ctx, name, tasks * 4 * j->e * sizeof(float), &w);
    j->work = w;
    return st;
}

sg_status sg_gate_f32(sg_context *ctx, const sg_gate_config *cfg, size_t t, size_t e,
                      const float *x, size_t ldx, int32_t *ids, size_t ldi, float *weights,
                      size_t ldw, float *probs, size_t ldp) {
    static const char name[] = "sg_gate_f32";
    if (!ctx) return SG_ERR_ARGUMENT;
    sg_ok(ctx);
    sg_status st = check_config(ctx, name, cfg, t, e);
    if (st == SG_OK && cfg->kind != SG_GATE_RANDOM) st = sg_check_matrix(ctx, name, "x", x, t, e, ldx);
    if (st == SG_OK) st = sg_check_matrix(ctx, name, "ids", ids, t, cfg->k, ldi);
    if (st == SG_OK) st = sg_check_matrix(ctx, name, "weights", weights, t, cfg->k, ldw);
    if (st == SG_OK && probs) st = sg_check_matrix(ctx, name, "probs", probs, t, e, ldp);
    if (st != SG_OK || t == 0) return st;
    gate_job j = {0};
    j.cfg = cfg, j.t = t, j.e = e;
    j.x = cfg->kind == SG_GATE_RANDOM ? NULL : x, j.ldx = ldx;
    j.ids = ids, j.ldi = ldi, j.w = weights, j.ldw = ldw, j.p = probs, j.ldp = ldp;
    size_t tasks = sg_route_tasks(ctx, t, e);
    if ((st = prepare(ctx, name, &j, tasks)) != SG_OK) return st;
    if (cfg->kind == SG_GATE_SIGMOID_TOPK && needs_key_row(&j)) {
        j.sgate = sg_route_kernels_get()->sgate;
        j.sg = (sg_route_sgate){e, cfg->k, cfg->n_group, cfg->topk_group, j.c, cfg->bias, j.a, cfg->renormalize};
    }
    size_t bad = sg_route_run_rows(ctx, t, tasks, forward_rows, &j);
    if (bad != SIZE_MAX)
        return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: token %zu has a NaN logit%s", name, bad,
                       cfg->kind == SG_GATE_NOISY_TOPK ? " or noise logit" : "");
    return SG_OK;
}

sg_status sg_gate_backward_f32(sg_context *ctx, const sg_gate_config *cfg, size_t t, size_t e,
                               const float *x, size_t ldx, const int32_t *ids, size_t ldi,
                               const float *dweights, size_t lddw, float *dx, size_t lddx,
                               float *dnoise, size_t lddnoise) {
    static const char name[] = "sg_gate_backward_f32";
    if (!ctx) return SG_ERR_ARGUMENT;
    sg_ok(ctx);
    sg_status st = check_config(ctx, name, cfg, t, e);
    if (st == SG_OK && cfg->kind == SG_GATE_RANDOM)
        st = sg_fail(ctx, SG_ERR_ARGUMENT, "%s: the random gate is not differentiable", name);
    if (st == SG_OK) st = sg_check_matrix(ctx, name, "x", x, t, e, ldx);
    if (st == SG_OK) st = sg_check_matrix(ctx, name, "ids", ids, t, cfg->k, ldi);
    if (st == SG_OK) st = sg_check_matrix(ctx, name, "dweights", dweights, t, cfg->k, lddw);
    if (st == SG_OK) st = sg_check_matrix(ctx, name, "dx", dx, t, e, lddx);
    if (st == SG_OK && dnoise && cfg->kind == SG_GATE_NOISY_TOPK)
        st = sg_check_matrix(ctx, name, "dnoise", dnoise, t, e, lddnoise);
    if (st == SG_OK && dx == x && t)
        st = sg_fail(ctx, SG_ERR_ARGUMENT, "%s: dx may not alias x", name);
    if (st != SG_OK || t == 0) return st;
    gate_job j = {0};
    j.cfg = cfg, j.t = t, j.e = e, j.x = x, j.ldx = ldx, j.ids_in = ids, j.ldi = ldi;
    j.dw = dweights, j.lddw = lddw, j.dx = dx, j.lddx = lddx;
    j.dq = cfg->kind == SG_GATE_NOISY_TOPK ? dnoise : NULL, j.lddq = lddnoise;
    size_t tasks = sg_route_tasks(ctx, t, e);
    if ((st = prepare(ctx, name, &j, tasks)) != SG_OK) return st;
    size_t bad = sg_route_run_rows(ctx, t, tasks, backward_rows, &j);
    if (bad != SIZE_MAX)
        return sg_fail(ctx, SG_ERR_ARGUMENT,
                       "%s: token %zu has a NaN logit, or ids out of [0, e) or repeated", name, bad);
    return SG_OK;
}

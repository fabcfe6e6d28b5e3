/*
 * test_route.c - the gates and routers of include/softgate/route.h against
 * naive double-precision references written here: a full selection sort
 * with the lower-index tie rule, softmax / sigmoid / Box-Muller / Gumbel in
 * double from the same float inputs (and the same uniforms, drawn through
 * the public sg_random_uniform_f32), group limiting by brute force.
 * Properties (ids in range and distinct, weights summing as documented,
 * bias changes the choice only), ties, special values, argument errors,
 * thread-count independence and gradients against central differences.
 * Every test is named route_*, so --filter route runs this file.
 */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"

static float *rand_matrix(size_t rows, size_t n, double scale, uint64_t seed) {
    float *x = test_alloc(rows * n * sizeof *x);
    test_rng rng = test_rng_seed(seed);
    for (size_t i = 0; i < rows * n; i++) x[i] = (float)(scale * test_normal(&rng));
    return x;
}

/* ---- the reference ------------------------------------------------------ */

static double ref_sigmoid(double z) { return 1.0 / (1.0 + exp(-z)); }
static double ref_softplus(double q) { return log(1.0 + exp(q)); }

/* The k largest keys (restricted to allowed[] when given), strictly larger
 * first, ties to the lower index: plain selection sort. */
static void ref_select(const double *key, const int *allowed, size_t e, size_t k, int32_t *ids) {
    char *taken = calloc(e, 1);
    for (size_t l = 0; l < k; l++) {
        long best = -1;
        for (size_t i = 0; i < e; i++) {
            if (taken[i] || (allowed && !allowed[i])) continue;
            if (best < 0 || key[i] > key[best]) best = (long)i;
        }
        ids[l] = (int32_t)best;
        taken[best] = 1;
    }
    free(taken);
}

typedef struct ref_out {
    int32_t ids[1024];
    double w[1024];
    double key[4096];
    double p[4096];
    int margin_ok; /* the selection is decided by more than rounding */
} ref_out;

/* The source row z of the gate (x, or the perturbed logits from the public
 * uniforms) in float, as the op sees it. */
static void ref_source(const sg_gate_config *cfg, size_t t, size_t e, size_t r, const float *x,
                       float *z) {
    if (cfg->kind == SG_GATE_NOISY_TOPK || cfg->kind == SG_GATE_GUMBEL_TOPK) {
        size_t n = cfg->kind == SG_GATE_NOISY_TOPK ? 2 * e : e;
        float *u = test_alloc(t * n * sizeof *u);
        sg_context *ctx = test_context(1);
        sg_random_uniform_f32(ctx, cfg->seed, cfg->offset, t, n, u, n);
        sg_context_destroy(ctx);
        const float *ur = u + r * n;
        for (size_t i = 0; i < e; i++) {
            double g;
            if (cfg->kind == SG_GATE_NOISY_TOPK)
                g = sqrt(-2.0 * log((double)ur[2 * i])) * cos(6.283185307179586 * ur[2 * i + 1]) *
                    ref_softplus(cfg->noise[r * cfg->ldnoise + i]);
            else
                g = -log(-log((double)ur[i]));
            z[i] = (float)((double)x[i] + g);
        }
        free(u);
    } else {
        for (size_t i = 0; i < e; i++) z[i] = x ? x[i] : 0.0f;
    }
}

static void ref_gate(const sg_gate_config *cfg, size_t t, size_t e, size_t r, const float *xr,
                     ref_out *o) {
    const size_t k = cfg->k;
    const double c = 1.0 / (double)cfg->temperature;
    float z[4096];
    ref_source(cfg, t, e, r, xr, z);
    int sig = cfg->kind == SG_GATE_SIGMOID_TOPK;
    double mx = -INFINITY, sum = 0.0;
    for (size_t i = 0; i < e; i++) mx = z[i] > mx ? z[i] : mx;
    for (size_t i = 0; i < e; i++) {
        double s = sig ? ref_sigmoid(c * z[i]) : c * z[i];
        o->key[i] = s + (cfg->bias ? cfg->bias[i] : 0.0);
        o->p[i] = sig ? s : exp(c * ((double)z[i] - mx));
        sum += o->p[i];
    }
    if (!sig)
        for (size_t i = 0; i < e; i++) o->p[i] /= sum;
    if (cfg->kind == SG_GATE_RANDOM) {
        float *u = test_alloc(t * e * sizeof *u);
        sg_context *ctx = test_context(1);
        sg_random_uniform_f32(ctx, cfg->seed, cfg->offset, t, e, u, e);
        sg_context_destroy(ctx);
        for (size_t i = 0; i < e; i++) o->key[i] = u[r * e + i], o->p[i] = 1.0 / (double)e;
        free(u);
    }
    int allowed[4096];
    const int *al = NULL;
    if (cfg->n_group > 1) {
        size_t ng = cfg->n_group, gs = e / ng;
        double gsc[4096];
        for (size_t g = 0; g < ng; g++) {
            int32_t two[2];
            ref_select(o->key + g * gs, NULL, gs, gs >= 2 ? 2 : 1, two);
            gsc[g] = o->key[g * gs + two[0]] + (gs >= 2 ? o->key[g * gs + two[1]] : 0.0);
        }
        int32_t gsel[256];
        ref_select(gsc, NULL, ng, cfg->topk_group, gsel);
        for (size_t i = 0; i < e; i++) allowed[i] = 0;
        for (size_t a = 0; a < cfg->topk_group; a++)
            for (size_t i = 0; i < gs; i++) allowed[(size_t)gsel[a] * gs + i] = 1;
        al = allowed;
        /* margin between the last kept and the first dropped group */
        double last = gsc[gsel[cfg->topk_group - 1]], next = -INFINITY;
        for (size_t g = 0; g < ng; g++)
            if (!allowed[g * gs] && gsc[g] > next) next = gsc[g];
        o->margin_ok = last - next > 1e-4;
    } else {
        o->margin_ok = 1;
    }
    ref_select(o->key, al, e, k, o->ids);
    /* near-ties among the selected or at the boundary make ids rounding-dependent */
    for (size_t l = 1; l < k; l++)
        if (fabs(o->key[o->ids[l - 1]] - o->key[o->ids[l]]) < 1e-4) o->margin_ok = 0;
    for (size_t i = 0; i < e; i++) {
        int sel = 0;
        for (size_t l = 0; l < k; l++) sel |= o->ids[l] == (int32_t)i;
        if (!sel && (!al || al[i]) && o->key[o->ids[k - 1]] - o->key[i] < 1e-4) o->margin_ok = 0;
    }
    double ws = 0.0;
    for (size_t l = 0; l < k; l++) ws += o->w[l] = o->p[o->ids[l]];
    if (cfg->kind == SG_GATE_RANDOM)
        for (size_t l = 0; l < k; l++) o->w[l] = 1.0 / (double)k;
    else if (cfg->renormalize || cfg->kind == SG_GATE_TOPK_SOFTMAX)
        for (size_t l = 0; l < k; l++) o->w[l] /= ws;
    for (size_t l = 0; l < k; l++) o->w[l] *= cfg->routed_scale;
}

/* Runs the gate on t x e and compares every row with the reference;
 * returns the number of rows whose ids were compared. */
static size_t check_gate(sg_context *ctx, const sg_gate_config *cfg, size_t t, size_t e,
                         const float *x, const char *what) {
    const size_t k = cfg->k, ldx = e + 3, ldi = k + 1, ldp = e + 2;
    float *xs = x ? test_alloc(t * ldx * sizeof *xs) : NULL;
    for (size_t r = 0; x && r < t; r++) memcpy(xs + r * ldx, x + r * e, e * sizeof *x);
    int32_t *ids = test_alloc(t * ldi * sizeof *ids);
    float *w = test_alloc(t * ldi * sizeof *w), *p = test_alloc(t * ldp * sizeof *p);
    /* first without probs (the gates may batch their normalizers then),
     * then with: the same ids, weights within 2e-6 of the reference */
    int32_t *ids0 = test_alloc(t * ldi * sizeof *ids0);
    float *w0 = test_alloc(t * ldi * sizeof *w0);
    sg_status st = sg_gate_f32(ctx, cfg, t, e, xs, ldx, ids0, ldi, w0, ldi, NULL, 0);
    CHECK(st == SG_OK, "%s: status %d (%s)", what, (int)st, sg_context_error(ctx));
    st = sg_gate_f32(ctx, cfg, t, e, xs, ldx, ids, ldi, w, ldi, p, ldp);
    CHECK(st == SG_OK, "%s: status %d (%s)", what, (int)st, sg_context_error(ctx));
    for (size_t r = 0; st == SG_OK && r < t; r++)
        for (size_t l = 0; l < k; l++)
            CHECK(ids0[r * ldi + l] == ids[r * ldi + l], "%s row %zu slot %zu: id %d without probs, %d with", what,
                  r, l, ids0[r * ldi + l], ids[r * ldi + l]);
    size_t compared = 0;
    static ref_out o;
    for (size_t r = 0; st == SG_OK && r < t; r++) {
        ref_gate(cfg, t, e, r, x ? x + r * e : NULL, &o);
        const int32_t *ir = ids + r * ldi;
        double wsum = 0.0;
        for (size_t l = 0; l < k; l++) {
            CHECK(ir[l] >= 0 && (size_t)ir[l] < e, "%s row %zu: id %d out of range", what, r, ir[l]);
            for (size_t m = 0; m < l; m++)
                CHECK(ir[m] != ir[l], "%s row %zu: id %d repeated", what, r, ir[l]);
            wsum += w[r * ldi + l];
        }
        if (o.margin_ok) {
            compared++;
            for (size_t l = 0; l < k; l++) {
                CHECK(ir[l] == o.ids[l], "%s row %zu slot %zu: id %d, reference %d", what, r, l, ir[l],
                      o.ids[l]);
                double got = w[r * ldi + l], want = o.w[l];
                CHECK(fabs(got - want) <= 2e-6 * fabs(want) + 1e-30, "%s row %zu slot %zu: w %.9g, ref %.9g",
                      what, r, l, got, want);
                got = w0[r * ldi + l];
                CHECK(fabs(got - want) <= 2e-6 * fabs(want) + 1e-30,
                      "%s row %zu slot %zu: w %.9g without probs, ref %.9g", what, r, l, got, want);
            }
        }
        if (cfg->renormalize || cfg->kind == SG_GATE_TOPK_SOFTMAX || cfg->kind == SG_GATE_RANDOM)
            CHECK(fabs(wsum - cfg->routed_scale) <= 1e-6 * fabs(cfg->routed_scale), "%s row %zu: sum %g",
                  what, r, wsum);
        for (size_t i = 0; i < e; i++) {
            double got = p[r * ldp + i], want = o.p[i];
            CHECK(fabs(got - want) <= 2e-6 * want + 1e-12, "%s row %zu: p[%zu] %.9g, ref %.9g", what, r,
                  i, got, want);
        }
    }
    free(xs), free(ids), free(w), free(p), free(ids0), free(w0);
    return compared;
}

TEST(route_softmax_topk_reference) {
    sg_context *ctx = test_context(1);
    static const size_t es[] = {1, 3, 8, 17, 64, 256, 1500};
    static const size_t ks[] = {1, 2, 3, 6, 8};
    const size_t n_es = test_quick ? 5 : sizeof es / sizeof es[0]; /* --quick: E <= 64 */
    for (size_t ei = 0; ei < n_es; ei++) {
        size_t e = es[ei], t = e > 300 ? 7 : 23;
        for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++) {
            if (ks[ki] > e) continue;
            for (int kind = 0; kind < 2; kind++) {
                for (int variant = 0; variant < 4; variant++) {
                    sg_gate_config cfg = sg_gate_config_default((sg_gate_kind)kind);
                    cfg.k = ks[ki];
                    cfg.renormalize = variant & 1;
                    cfg.temperature = variant & 2 ? 0.7f : 1.0f;
                    cfg.routed_scale = variant == 3 ? 2.5f : 1.0f;
                    float *x = rand_matrix(t, e, 2.0, 100 + e * 10 + ks[ki]);
                    float *bias = variant == 2 ? rand_matrix(1, e, 0.5, 7) : NULL;
                    cfg.bias = bias;
                    char what[96];
                    snprintf(what, sizeof what, "%s e=%zu k=%zu v=%d", sg_gate_kind_name(cfg.kind), e,
                             ks[ki], variant);
                    size_t n = check_gate(ctx, &cfg, t, e, x, what);
                    CHECK(n * 10 >= t * 7, "%s: only %zu of %zu rows clear of ties", what, n, t);
                    free(x), free(bias);
                }
            }
        }
    }
    sg_context_destroy(ctx);
}

TEST(route_sigmoid_bias_groups_reference) {
    sg_context *ctx = test_context(1);
    static const size_t es[] = {8, 64, 256, 1504};
    for (size_t ei = 0; ei < (test_quick ? 2u : sizeof es / sizeof es[0]); ei++) {
        size_t e = es[ei], t = e > 300 ? 7 : 29;
        for (int variant = 0; variant < 6; variant++) {
            sg_gate_config cfg = sg_gate_config_default(SG_GATE_SIGMOID_TOPK);
            cfg.k = e >= 64 ? (variant & 1 ? 8 : 6) : 2;
            cfg.renormalize = variant != 1;
            cfg.routed_scale = variant >= 2 ? 2.5f : 1.0f;
            float *bias = variant >= 1 && variant != 3 ? rand_matrix(1, e, 0.1, 9 + variant) : NULL;
            cfg.bias = bias;
            if (variant >= 3 && e >= 8) cfg.n_group = e >= 64 ? 8 : 4, cfg.topk_group = e >= 64 ? 4 : 2;
            if (variant == 5 && e >= 64) cfg.n_group = e, cfg.topk_group = 8; /* groups of one */
            float *x = rand_matrix(t, e, 1.5, 300 + e + (size_t)variant);
            char what[96];
            snprintf(what, sizeof what, "sigmoid e=%zu k=%zu variant %d", e, cfg.k, variant);
            size_t n = check_gate(ctx, &cfg, t, e, x, what);
            CHECK(n * 10 >= t * 6, "%s: only %zu of %zu rows clear of ties", what, n, t);
            free(x), free(bias);
        }
    }
    sg_context_destroy(ctx);
}

TEST(route_bias_changes_choice_not_weight) {
    sg_context *ctx = test_context(1);
    const size_t e = 8, t = 1;
    const float x[8] = {3.0f, 2.0f, 1.0f, 0.5f, 0.0f, -1.0f, -2.0f, -3.0f};
    float bias[8] = {0};
    bias[6] = 10.0f; /* expert 6 must now be chosen first */
    for (int kind = 0; kind <= SG_GATE_SIGMOID_TOPK; kind++) {
        sg_gate_config cfg = sg_gate_config_default((sg_gate_kind)kind);
        cfg.renormalize = 0;
        int32_t ids0[2], ids1[2];
        float w0[2], w1[2];
        CHECK(sg_gate_f32(ctx, &cfg, t, e, x, e, ids0, 2, w0, 2, NULL, 0) == SG_OK, "status");
        cfg.bias = bias;
        CHECK(sg_gate_f32(ctx, &cfg, t, e, x, e, ids1, 2, w1, 2, NULL, 0) == SG_OK, "status");
        CHECK(ids0[0] == 0 && ids0[1] == 1, "%s: unbiased ids %d %d", sg_gate_kind_name(cfg.kind), ids0[0],
              ids0[1]);
        CHECK(ids1[0] == 6 && ids1[1] == 0, "%s: biased ids %d %d", sg_gate_kind_name(cfg.kind), ids1[0],
              ids1[1]);
        /* expert 0 keeps its weight (softmax_topk, sigmoid: weight = its own score) */
        if (kind != SG_GATE_TOPK_SOFTMAX)
            CHECK(w1[1] == w0[0], "%s: expert 0's weight moved %g -> %g", sg_gate_kind_name(cfg.kind),
                  (double)w0[0], (double)w1[1]);
        /* the weight of expert 6 is its unbiased score */
        double want = kind == SG_GATE_SIGMOID_TOPK ? 1.0 / (1.0 + exp(2.0)) : 0.0;
        if (kind == SG_GATE_SOFTMAX_TOPK) {
            double s = 0.0;
            for (size_t i = 0; i < e; i++) s += exp(x[i] - 3.0);
            want = exp(-5.0) / s;
        }
        if (kind != SG_GATE_TOPK_SOFTMAX)
            CHECK(fabs(w1[0] - want) < 1e-6 * want, "%s: biased expert's weight %g, want %g",
                  sg_gate_kind_name(cfg.kind), (double)w1[0], want);
    }
    sg_context_destroy(ctx);
}

TEST(route_ties_and_special_values) {
    sg_context *ctx = test_context(1);
    /* all equal: the lowest K indices, in index order, equal weights */
    float x[16];
    for (int i = 0; i < 16; i++) x[i] = 0.25f;
    x[9] = x[12] = 1.0f; /* a tie at the top: 9 before 12 */
    int32_t ids[4];
    float w[4], p[16];
    for (int kind = 0; kind <= SG_GATE_SIGMOID_TOPK; kind++) {
        sg_gate_config cfg = sg_gate_config_default((sg_gate_kind)kind);
        cfg.k = 4;
        CHECK(sg_gate_f32(ctx, &cfg, 1, 16, x, 16, ids, 4, w, 4, p, 16) == SG_OK, "status");
        CHECK(ids[0] == 9 && ids[1] == 12 && ids[2] == 0 && ids[3] == 1, "%s: ids %d %d %d %d",
              sg_gate_kind_name(cfg.kind), ids[0], ids[1], ids[2], ids[3]);
        CHECK(w[0] == w[1] && w[2] == w[3], "%s: tied weights differ", sg_gate_kind_name(cfg.kind));
    }
    /* +inf entries share the mass; -inf get 0 and are chosen last, by index */
    float y[6] = {-INFINITY, INFINITY, 0.0f, INFINITY, -INFINITY, -INFINITY};
    sg_gate_config cfg = sg_gate_config_default(SG_GATE_SOFTMAX_TOPK);
    cfg.k = 4;
    CHECK(sg_gate_f32(ctx, &cfg, 1, 6, y, 6, ids, 4, w, 4, p, 6) == SG_OK, "inf status %s",
          sg_context_error(ctx));
    CHECK(ids[0] == 1 && ids[1] == 3 && ids[2] == 2 && ids[3] == 0, "inf ids %d %d %d %d", ids[0], ids[1],
          ids[2], ids[3]);
    CHECK(w[0] == 0.5f && w[1] == 0.5f && w[2] == 0.0f && w[3] == 0.0f, "inf weights %g %g %g %g",
          (double)w[0], (double)w[1], (double)w[2], (double)w[3]);
    CHECK(p[1] == 0.5f && p[3] == 0.5f && p[0] == 0.0f && p[2] == 0.0f, "inf probs");
    /* every logit -inf: weights 0, ids by index */
    float m[3] = {-INFINITY, -INFINITY, -INFINITY};
    cfg.k = 2;
    cfg.renormalize = 1;
    CHECK(sg_gate_f32(ctx, &cfg, 1, 3, m, 3, ids, 2, w, 2, p, 3) == SG_OK, "-inf status");
    CHECK(ids[0] == 0 && ids[1] == 1 && w[0] == 0.0f && w[1] == 0.0f && p[2] == 0.0f, "-inf row");
    sg_context_destroy(ctx);
}

/* Switch's top-1 (softmax top-k, not renormalized, no probs) on short rows
 * takes a batched path: its weights must keep the documented accuracy on
 * large logits too, never exceed a, and not depend on asking for probs. */
TEST(route_switch_batched_accuracy) {
    sg_context *ctx = test_context(1);
    enum { T = 64, E = 8 };
    float x[T * E], w[T], wp[T], p[T * E];
    int32_t ids[T], idp[T];
    const float base[3] = {0.0f, 1000.0f, -3000.0f};
    const float temps[3] = {1.0f, 3.0f, 0.7f};
    test_rng rng = test_rng_seed(77);
    for (int b = 0; b < 3; b++)
        for (int q = 0; q < 3; q++) {
            for (int i = 0; i < T * E; i++) x[i] = base[b] + 4.0f * (float)test_uniform(&rng);
            for (int i = 0; i < E; i++) x[5 * E + i] = i ? -1e6f : base[b]; /* one dominant entry */
            sg_gate_config cfg = sg_gate_config_default(SG_GATE_SOFTMAX_TOPK);
            cfg.k = 1;
            cfg.renormalize = 0;
            cfg.temperature = temps[q];
            CHECK(sg_gate_f32(ctx, &cfg, T, E, x, E, ids, 1, w, 1, NULL, 0) == SG_OK, "status");
            CHECK(sg_gate_f32(ctx, &cfg, T, E, x, E, idp, 1, wp, 1, p, E) == SG_OK, "status (probs)");
            for (int t = 0; t < T; t++) {
                const float *r = x + t * E;
                double m = r[0], s = 0.0;
                for (int i = 1; i < E; i++) m = r[i] > m ? r[i] : m;
                for (int i = 0; i < E; i++) s += exp(((double)r[i] - m) / temps[q]);
                const double want = exp(((double)r[ids[t]] - m) / temps[q]) / s;
                CHECK(ids[t] == idp[t], "base %g T %g token %d: ids differ with probs", (double)base[b],
                      (double)temps[q], t);
                CHECK(fabs(w[t] - want) <= 2e-6 * want && w[t] <= 1.0f,
                      "base %g T %g token %d: weight %.9g, want %.9g", (double)base[b], (double)temps[q], t,
                      (double)w[t], want);
                CHECK(fabs(w[t] - wp[t]) <= 4e-6 * want, "base %g T %g token %d: weight %.9g, with probs %.9g",
                      (double)base[b], (double)temps[q], t, (double)w[t], (double)wp[t]);
            }
        }
    sg_context_destroy(ctx);
}

/* Expert choice with many tied tokens: an expert whose ties overflow the
 * collect path sends its task range to the other paths, which must give
 * the same bits (weights too) whatever experts share a task. */
TEST(route_expert_choice_ties_threads) {
    const size_t t = test_quick ? 1024 : 4096, e = 8, cs[2] = {32, 100};
    float *x = malloc(t * e * sizeof *x);
    int32_t *tok[3];
    float *w[3];
    test_rng rng = test_rng_seed(31);
    for (size_t r = 0; r < t; r++)
        for (size_t i = 0; i < e; i++)
            x[r * e + i] = r % 3 == 0 ? (i == 0 ? 10.0f : i >= 4 ? -10.0f : 0.5f) : (float)test_normal(&rng);
    for (int k = 0; k < 3; k++) {
        tok[k] = malloc(e * 100 * sizeof *tok[k]);
        w[k] = malloc(e * 100 * sizeof *w[k]);
    }
    for (int q = 0; q < 2; q++) {
        const size_t c = cs[q];
        for (int k = 0; k < 3; k++) {
            sg_context *ctx = test_context(k + 1);
            CHECK(sg_gate_expert_choice_f32(ctx, t, e, x, e, 1.0f, c, tok[k], c, w[k], c, NULL, 0) == SG_OK,
                  "status: %s", sg_context_error(ctx));
            sg_context_destroy(ctx);
        }
        for (int k = 1; k < 3; k++) {
            CHECK(memcmp(tok[0], tok[k], e * c * sizeof *tok[0]) == 0, "C %zu: tokens differ, %d threads", c,
                  k + 1);
            CHECK(memcmp(w[0], w[k], e * c * sizeof *w[0]) == 0, "C %zu: weights differ, %d threads", c, k + 1);
        }
        for (size_t s = 0; s < e * c; s++) { /* and each weight is p = exp(key) */
            const size_t ex = s / c;
            const float *xr = x + (size_t)tok[0][s] * e;
            double m = xr[0], sum = 0.0;
            for (size_t i = 1; i < e; i++) m = xr[i] > m ? xr[i] : m;
            for (size_t i = 0; i < e; i++) sum += exp((double)xr[i] - m);
            const double want = exp((double)xr[ex] - m) / sum;
            CHECK(fabs(w[0][s] - want) <= 2e-6 * want, "C %zu expert %zu slot %zu: weight %.9g, want %.9g", c,
                  ex, s % c, (double)w[0][s], want);
        }
    }
    for (int k = 0; k < 3; k++) free(tok[k]), free(w[k]);
    free(x);
}

TEST(route_gate_argument_errors) {
    sg_context *ctx = test_context(1);
    float x[2 * 8];
    for (int i = 0; i < 16; i++) x[i] = (float)i * 0.1f;
    int32_t ids[4];
    float w[4];
    sg_gate_config cfg = sg_gate_config_default(SG_GATE_SOFTMAX_TOPK);
    x[8 + 5] = NAN;
    for (int kind = 0; kind <= SG_GATE_GUMBEL_TOPK; kind++) {
        sg_gate_config c = sg_gate_config_default((sg_gate_kind)kind);
        float q[16] = {0};
        c.noise = q, c.ldnoise = 8;
        sg_status st = sg_gate_f32(ctx, &c, 2, 8, x, 8, ids, 2, w, 2, NULL, 0);
        CHECK(st == SG_ERR_ARGUMENT && strstr(sg_context_error(ctx), "token 1"),
              "%s NaN: status %d, message '%s'", sg_gate_kind_name(c.kind), (int)st, sg_context_error(ctx));
    }
    x[13] = 0.0f;
    cfg.k = 9;
    CHECK(sg_gate_f32(ctx, &cfg, 2, 8, x, 8, ids, 9, w, 9, NULL, 0) == SG_ERR_ARGUMENT &&
              strstr(sg_context_error(ctx), "greater than"), "k > e: '%s'", sg_context_error(ctx));
    cfg.k = 0;
    CHECK(sg_gate_f32(ctx, &cfg, 2, 8, x, 8, ids, 2, w, 2, NULL, 0) == SG_ERR_ARGUMENT, "k = 0");
    cfg.k = 2;
    CHECK(sg_gate_f32(ctx, &cfg, 2, 8, x, 7, ids, 2, w, 2, NULL, 0) == SG_ERR_SHAPE &&
              strstr(sg_context_error(ctx), "x"), "ldx < e: '%s'", sg_context_error(ctx));
    CHECK(sg_gate_f32(ctx, &cfg, 2, 8, x, 8, ids, 1, w, 2, NULL, 0) == SG_ERR_SHAPE &&
              strstr(sg_context_error(ctx), "ids"), "ldi < k: '%s'", sg_context_error(ctx));
    CHECK(sg_gate_f32(ctx, &cfg, 2, 8, x, 8, ids, 2, NULL, 2, NULL, 0) == SG_ERR_ARGUMENT &&
              strstr(sg_context_error(ctx), "weights"), "weights NULL");
    CHECK(sg_gate_f32(ctx, NULL, 2, 8, x, 8, ids, 2, w, 2, NULL, 0) == SG_ERR_ARGUMENT, "cfg NULL");
    cfg.temperature = 0.0f;
    CHECK(sg_gate_f32(ctx, &cfg, 2, 8, x, 8, ids, 2, w, 2, NULL, 0) == SG_ERR_ARGUMENT &&
              strstr(sg_context_error(ctx), "temperature"), "T = 0");
    cfg = sg_gate_config_default(SG_GATE_SIGMOID_TOPK);
    cfg.n_group = 3, cfg.topk_group = 1;
    CHECK(sg_gate_f32(ctx, &cfg, 2, 8, x, 8, ids, 2, w, 2, NULL, 0) == SG_ERR_SHAPE &&
              strstr(sg_context_error(ctx), "n_group"), "e %% n_group: '%s'", sg_context_error(ctx));
    cfg.n_group = 4, cfg.topk_group = 5;
    CHECK(sg_gate_f32(ctx, &cfg, 2, 8, x, 8, ids, 2, w, 2, NULL, 0) == SG_ERR_ARGUMENT &&
              strstr(sg_context_error(ctx), "topk_group"), "topk_group > n_group");
    cfg.topk_group = 1, cfg.k = 3;
    CHECK(sg_gate_f32(ctx, &cfg, 2, 8, x, 8, ids, 3, w, 3, NULL, 0) == SG_ERR_ARGUMENT,
          "k above the experts of the kept groups");
    float bias[8] = {0};
    bias[3] = INFINITY;
    cfg = sg_gate_config_default(SG_GATE_SIGMOID_TOPK);
    cfg.bias = bias;
    CHECK(sg_gate_f32(ctx, &cfg, 2, 8, x, 8, ids, 2, w, 2, NULL, 0) == SG_ERR_ARGUMENT &&
              strstr(sg_context_error(ctx), "bias[3]"), "inf bias: '%s'", sg_context_error(ctx));
    cfg = sg_gate_config_default(SG_GATE_NOISY_TOPK);
    CHECK(sg_gate_f32(ctx, &cfg, 2, 8, x, 8, ids, 2, w, 2, NULL, 0) == SG_ERR_ARGUMENT &&
              strstr(sg_context_error(ctx), "noise"), "noisy without noise: '%s'", sg_context_error(ctx));
    cfg = sg_gate_config_default(SG_GATE_RANDOM);
    float dx[16];
    CHECK(sg_gate_backward_f32(ctx, &cfg, 2, 8, x, 8, ids, 2, w, 2, dx, 8, NULL, 0) == SG_ERR_ARGUMENT,
          "random backward");
    /* T == 0 writes nothing and succeeds */
    cfg = sg_gate_config_default(SG_GATE_SOFTMAX_TOPK);
    CHECK(sg_gate_f32(ctx, &cfg, 0, 8, NULL, 8, NULL, 2, NULL, 2, NULL, 0) == SG_OK, "t = 0");
    sg_context_destroy(ctx);
}

TEST(route_random_gates_reference) {
    sg_context *ctx = test_context(1);
    static const size_t es[] = {4, 8, 64, 1100};
    for (size_t ei = 0; ei < (test_quick ? 3u : sizeof es / sizeof es[0]); ei++) {
        size_t e = es[ei], t = e > 300 ? 5 : 19;
        float *x = rand_matrix(t, e, 1.0, 500 + e);
        float *q = rand_matrix(t, e, 1.0, 600 + e);
        for (int kind = SG_GATE_NOISY_TOPK; kind <= SG_GATE_RANDOM; kind++) {
            for (int renorm = 0; renorm < 2; renorm++) {
                sg_gate_config cfg = sg_gate_config_default((sg_gate_kind)kind);
                cfg.k = e >= 8 ? 3 : 1;
                cfg.renormalize = renorm;
                cfg.seed = 0x1234567890ull + e, cfg.offset = 77;
                cfg.noise = q, cfg.ldnoise = e;
                char what[96];
                snprintf(what, sizeof what, "%s e=%zu renorm %d", sg_gate_kind_name(cfg.kind), e, renorm);
                size_t n = check_gate(ctx, &cfg, t, e, kind == SG_GATE_RANDOM ? NULL : x, what);
                CHECK(n * 10 >= t * 7, "%s: only %zu of %zu rows clear of ties", what, n, t);
            }
        }
        free(x), free(q);
    }
    /* random routing: every expert about equally often, and another offset
     * gives other routes */
    const size_t t = 8000, e = 8;
    int32_t *ids = test_alloc(t * sizeof *ids), *ids2 = test_alloc(t * sizeof *ids2);
    float *w = test_alloc(t * sizeof *w);
    sg_gate_config cfg = sg_gate_config_default(SG_GATE_RANDOM);
    cfg.k = 1;
    CHECK(sg_gate_f32(ctx, &cfg, t, e, NULL, e, ids, 1, w, 1, NULL, 0) == SG_OK, "random status");
    size_t cnt[8] = {0}, same = 0;
    for (size_t r = 0; r < t; r++) {
        cnt[ids[r]]++;
        CHECK(w[r] == 1.0f, "random weight %g", (double)w[r]);
    }
    for (size_t i = 0; i < e; i++)
        CHECK(fabs((double)cnt[i] - 1000.0) < 150.0, "expert %zu got %zu of 8000", i, cnt[i]);
    cfg.offset = 1;
    sg_gate_f32(ctx, &cfg, t, e, NULL, e, ids2, 1, w, 1, NULL, 0);
    for (size_t r = 0; r < t; r++) same += ids[r] == ids2[r];
    CHECK(same < 1300, "offset 1 repeats %zu of 8000 routes", same);
    free(ids), free(ids2), free(w);
    sg_context_destroy(ctx);
}

TEST(route_gate_threads_identical) {
    const size_t t = test_quick ? 300 : 2000, e = 64;
    float *x = rand_matrix(t, e, 1.0, 4242), *q = rand_matrix(t, e, 1.0, 4343);
    float *bias = rand_matrix(1, e, 0.1, 11);
    for (int kind = 0; kind <= SG_GATE_RANDOM; kind++) {
        sg_gate_config cfg = sg_gate_config_default((sg_gate_kind)kind);
        cfg.k = 6;
        cfg.noise = q, cfg.ldnoise = e, cfg.seed = 5;
        if (kind == SG_GATE_SIGMOID_TOPK) cfg.bias = bias, cfg.n_group = 8, cfg.topk_group = 3;
        int32_t *ids[3];
        float *w[3], *p[3], *dx[3];
        for (int th = 1; th <= 3; th++) {
            sg_context *ctx = test_context(th);
            ids[th - 1] = test_alloc(t * 6 * sizeof(int32_t));
            w[th - 1] = test_alloc(t * 6 * sizeof(float));
            p[th - 1] = test_alloc(t * e * sizeof(float));
            dx[th - 1] = test_alloc(t * e * sizeof(float));
            CHECK(sg_gate_f32(ctx, &cfg, t, e, x, e, ids[th - 1], 6, w[th - 1], 6, p[th - 1], e) == SG_OK,
                  "status");
            if (kind != SG_GATE_RANDOM)
                CHECK(sg_gate_backward_f32(ctx, &cfg, t, e, x, e, ids[th - 1], 6, w[th - 1], 6, dx[th - 1],
                                           e, NULL, 0) == SG_OK, "backward status %s", sg_context_error(ctx));
            else memset(dx[th - 1], 0, t * e * sizeof(float));
            sg_context_destroy(ctx);
        }
        for (int th = 1; th < 3; th++) {
            CHECK(memcmp(ids[0], ids[th], t * 6 * sizeof(int32_t)) == 0, "%s: ids differ at %d threads",
                  sg_gate_kind_name(cfg.kind), th + 1);
            CHECK(memcmp(w[0], w[th], t * 6 * sizeof(float)) == 0 && memcmp(p[0], p[th], t * e * 4) == 0 &&
                      memcmp(dx[0], dx[th], t * e * 4) == 0,
                  "%s: values differ at %d threads", sg_gate_kind_name(cfg.kind), th + 1);
        }
        for (int th = 0; th < 3; th++) free(ids[th]), free(w[th]), free(p[th]), free(dx[th]);
    }
    free(x), free(q), free(bias);
}

/* L = sum_l dw_l * w_l(x) for fixed random dw, with the selection of the
 * unperturbed x held fixed: central differences in double of the weights
 * recomputed by the reference. */
static double ref_loss(const sg_gate_config *cfg, size_t t, size_t e, size_t r, const float *xr,
                       const int32_t *ids, const double *dw) {
    const double c = 1.0 / (double)cfg->temperature;
    float z[4096];
    ref_source(cfg, t, e, r, xr, z);
    double mx = -INFINITY, sum = 0.0, sel = 0.0, wv[64];
    for (size_t i = 0; i < e; i++) mx = z[i] > mx ? z[i] : mx;
    for (size_t i = 0; i < e; i++) sum += exp(c * (z[i] - mx));
    for (size_t l = 0; l < cfg->k; l++) {
        double v = z[ids[l]];
        wv[l] = cfg->kind == SG_GATE_SIGMOID_TOPK ? ref_sigmoid(c * v) : exp(c * (v - mx)) / sum;
        sel += wv[l];
    }
    double L = 0.0;
    for (size_t l = 0; l < cfg->k; l++) {
        double wl = wv[l];
        if (cfg->renormalize || cfg->kind == SG_GATE_TOPK_SOFTMAX) wl /= sel;
        L += dw[l] * cfg->routed_scale * wl;
    }
    return L;
}

TEST(route_gate_backward_fd) {
    sg_context *ctx = test_context(1);
    const size_t t = 3, e = 9;
    float *x = rand_matrix(t, e, 1.0, 77), *q = rand_matrix(t, e, 0.5, 78);
    float *bias = rand_matrix(1, e, 0.3, 79);
    for (int kind = 0; kind <= SG_GATE_GUMBEL_TOPK; kind++) {
        for (int variant = 0; variant < 3; variant++) {
            sg_gate_config cfg = sg_gate_config_default((sg_gate_kind)kind);
            cfg.k = 3;
            cfg.renormalize = variant & 1;
            cfg.temperature = variant == 2 ? 0.6f : 1.0f;
            cfg.routed_scale = variant == 2 ? 1.7f : 1.0f;
            cfg.bias = variant == 2 && kind <= SG_GATE_SIGMOID_TOPK ? bias : NULL;
            cfg.noise = q, cfg.ldnoise = e, cfg.seed = 99;
            int32_t ids[3 * 3];
            float w[9], dwf[9], dx[3 * 9], dq[3 * 9];
            CHECK(sg_gate_f32(ctx, &cfg, t, e, x, e, ids, 3, w, 3, NULL, 0) == SG_OK, "status");
            test_rng rng = test_rng_seed(5 + (uint64_t)kind);
            for (int i = 0; i < 9; i++) dwf[i] = (float)test_normal(&rng);
            CHECK(sg_gate_backward_f32(ctx, &cfg, t, e, x, e, ids, 3, dwf, 3, dx, e, dq, e) == SG_OK,
                  "backward status %s", sg_context_error(ctx));
            for (size_t r = 0; r < t; r++) {
                double dw[3] = {dwf[r * 3], dwf[r * 3 + 1], dwf[r * 3 + 2]};
                float xr[9], qsave[9];
                memcpy(xr, x + r * e, sizeof xr);
                memcpy(qsave, q + r * e, sizeof qsave);
                for (size_t i = 0; i < e; i++) {
                    const float h = 1e-2f;
                    for (int which = 0; which < (kind == SG_GATE_NOISY_TOPK ? 2 : 1); which++) {
                        float *v = which ? q + r * e + i : xr + i, v0 = *v;
                        *v = v0 + h;
                        double lp = ref_loss(&cfg, t, e, r, xr, ids + r * 3, dw);
                        *v = v0 - h;
                        double lm = ref_loss(&cfg, t, e, r, xr, ids + r * 3, dw);
                        *v = v0;
                        double fd = (lp - lm) / (2.0 * (double)h), got = which ? dq[r * e + i] : dx[r * e + i];
                        CHECK(fabs(got - fd) <= 2e-3 * fmax(1.0, fabs(fd)), "%s v%d row %zu %s[%zu]: %.7g, fd %.7g",
                              sg_gate_kind_name(cfg.kind), variant, r, which ? "dq" : "dx", i, got, fd);
                    }
                }
            }
        }
    }
    free(x), free(q), free(bias);
    sg_context_destroy(ctx);
}

/* ---- expert choice -------------------------------------------------------- */

TEST(route_expert_choice_reference) {
    static const size_t es[] = {8, 64, 256};
    static const size_t ts[] = {1, 5, 16, 300};
    for (int th = 1; th <= 3; th += 2) {
        sg_context *ctx = test_context(th);
        for (size_t ei = 0; ei < (test_quick ? 2u : 3u); ei++)
            for (size_t ti = 0; ti < 4; ti++) {
                size_t e = es[ei], t = ts[ti], c;
                float cfac = ti == 3 ? 2.0f : 1.25f, temp = ti == 2 ? 0.8f : 1.0f;
                CHECK(sg_expert_choice_capacity(ctx, cfac, t, e, &c) == SG_OK, "capacity");
                size_t want_c = (size_t)ceil((double)cfac * (double)t / (double)e);
                want_c = want_c > t ? t : want_c;
                CHECK(c == want_c, "C = %zu, want %zu", c, want_c);
                float *x = rand_matrix(t, e, 1.0, 900 + t + e);
                if (t >= 5) memcpy(x + 3 * e, x + 1 * e, e * sizeof *x); /* tokens 1 and 3 tie */
                int32_t *tok = test_alloc(e * c * sizeof *tok);
                float *w = test_alloc(e * c * sizeof *w), *p = test_alloc(t * e * sizeof *p);
                CHECK(sg_gate_expert_choice_f32(ctx, t, e, x, e, temp, c, tok, c, w, c, p, e) == SG_OK,
                      "status %s", sg_context_error(ctx));
                /* reference: log-probabilities in double, selection sort per expert */
                double *lp = test_alloc(t * e * sizeof *lp), *col = test_alloc(t * sizeof *col);
                for (size_t r = 0; r < t; r++) {
                    double mx = -INFINITY, s = 0.0;
                    for (size_t i = 0; i < e; i++) mx = fmax(mx, x[r * e + i] / (double)temp);
                    for (size_t i = 0; i < e; i++) s += exp(x[r * e + i] / (double)temp - mx);
                    for (size_t i = 0; i < e; i++) {
                        lp[r * e + i] = x[r * e + i] / (double)temp - mx - log(s);
                        CHECK(fabs(p[r * e + i] - exp(lp[r * e + i])) < 2e-6 * exp(lp[r * e + i]) + 1e-12,
                              "probs");
                    }
                }
                size_t clear = 0;
                for (size_t ex = 0; ex < e; ex++) {
                    int32_t ref[512];
                    for (size_t r = 0; r < t; r++) col[r] = lp[r * e + ex];
                    ref_select(col, NULL, t, c, ref);
                    int ok = 1;
                    for (size_t s = 0; s + 1 < c; s++)
                        if (col[ref[s]] - col[ref[s + 1]] < 1e-6 && col[ref[s]] != col[ref[s + 1]]) ok = 0;
                    for (size_t r = 0; r < t; r++) {
                        int in = 0;
                        for (size_t s = 0; s < c; s++) in |= ref[s] == (int32_t)r;
                        if (!in && col[ref[c - 1]] - col[r] < 1e-6 && col[ref[c - 1]] != col[r]) ok = 0;
                    }
                    if (!ok) continue;
                    clear++;
                    for (size_t s = 0; s < c; s++) {
                        CHECK(tok[ex * c + s] == ref[s], "e=%zu t=%zu expert %zu slot %zu: token %d, ref %d", e,
                              t, ex, s, tok[ex * c + s], ref[s]);
                        double want = exp(col[ref[s]]);
                        CHECK(fabs(w[ex * c + s] - want) <= 2e-6 * want, "weight %g want %g",
                              (double)w[ex * c + s], want);
                    }
                }
                CHECK(clear * 10 >= e * 8, "only %zu of %zu experts clear of near-ties", clear, e);
                free(x), free(tok), free(w), free(p), free(lp), free(col);
            }
        sg_context_destroy(ctx);
    }
}

TEST(route_expert_choice_ties_errors_backward) {
    sg_context *ctx = test_context(1);
    /* identical tokens: the lower token index first */
    float x[4 * 2] = {1, 0, 1, 0, 1, 0, 1, 0};
    int32_t tok[2 * 2];
    float w[2 * 2];
    CHECK(sg_gate_expert_choice_f32(ctx, 4, 2, x, 2, 1.0f, 2, tok, 2, w, 2, NULL, 0) == SG_OK, "status");
    CHECK(tok[0] == 0 && tok[1] == 1 && tok[2] == 0 && tok[3] == 1, "ties: %d %d %d %d", tok[0], tok[1],
          tok[2], tok[3]);
    /* C = 1 (the argmax path) */
    CHECK(sg_gate_expert_choice_f32(ctx, 4, 2, x, 2, 1.0f, 1, tok, 1, w, 1, NULL, 0) == SG_OK, "status");
    CHECK(tok[0] == 0 && tok[1] == 0, "C = 1 ties: %d %d", tok[0], tok[1]);
    /* the same with C >= 64 (the select-and-sort path): 200 identical
     * tokens but for token 150, best for expert 1 */
    {
        float *xs = test_alloc(200 * 2 * sizeof *xs);
        int32_t *tk = test_alloc(2 * 100 * sizeof *tk);
        float *wk = test_alloc(2 * 100 * sizeof *wk);
        for (int r = 0; r < 200; r++) xs[2 * r] = 1.0f, xs[2 * r + 1] = 0.0f;
        xs[2 * 150 + 1] = 2.0f;
        CHECK(sg_gate_expert_choice_f32(ctx, 200, 2, xs, 2, 1.0f, 100, tk, 100, wk, 100, NULL, 0) == SG_OK,
              "status");
        int ok0 = 1, ok1 = tk[100] == 150;
        for (int q = 0; q < 100; q++) ok0 &= tk[q] == (q < 100 ? q + (q >= 150) : 0);
        for (int q = 1; q < 100; q++) ok1 &= tk[100 + q] == q - 1;
        CHECK(ok0 && ok1, "select path ties: expert 0 starts %d %d, expert 1 starts %d %d", tk[0], tk[1], tk[100],
              tk[101]);
        free(xs), free(tk), free(wk);
    }
    { /* one token, strided outputs: every expert takes token 0 with p */
        float x1[5] = {0.5f, -1.0f, 2.0f, 0.0f, 1.5f}, w1[5 * 3];
        int32_t t1[5 * 2];
        CHECK(sg_gate_expert_choice_f32(ctx, 1, 5, x1, 5, 0.8f, 1, t1, 2, w1, 3, NULL, 0) == SG_OK, "t = 1");
        double s1 = 0.0;
        for (int i = 0; i < 5; i++) s1 += exp(x1[i] / 0.8);
        for (int i = 0; i < 5; i++) {
            const double want = exp(x1[i] / 0.8) / s1;
            CHECK(t1[2 * i] == 0 && fabs(w1[3 * i] - want) <= 2e-6 * want, "t = 1 expert %d: token %d w %g want %g", i,
                  t1[2 * i], (double)w1[3 * i], want);
        }
        x1[3] = NAN;
        CHECK(sg_gate_expert_choice_f32(ctx, 1, 5, x1, 5, 1.0f, 1, t1, 2, w1, 3, NULL, 0) == SG_ERR_ARGUMENT &&
                  strstr(sg_context_error(ctx), "token 0"), "t = 1 NaN: '%s'", sg_context_error(ctx));
        x1[1] = INFINITY;
        CHECK(sg_gate_expert_choice_f32(ctx, 1, 5, x1, 5, 1.0f, 1, t1, 2, w1, 3, NULL, 0) == SG_ERR_ARGUMENT &&
                  strstr(sg_context_error(ctx), "token 0"), "t = 1 NaN beside +inf: '%s'", sg_context_error(ctx));
    }
    x[5] = NAN;
    CHECK(sg_gate_expert_choice_f32(ctx, 4, 2, x, 2, 1.0f, 2, tok, 2, w, 2, NULL, 0) == SG_ERR_ARGUMENT &&
              strstr(sg_context_error(ctx), "token 2"), "NaN: '%s'", sg_context_error(ctx));
    x[5] = 0.0f;
    CHECK(sg_gate_expert_choice_f32(ctx, 4, 2, x, 2, 1.0f, 5, tok, 5, w, 5, NULL, 0) == SG_ERR_ARGUMENT, "c > t");
    CHECK(sg_gate_expert_choice_f32(ctx, 4, 2, x, 2, 1.0f, 0, tok, 2, w, 2, NULL, 0) == SG_ERR_ARGUMENT, "c = 0");
    size_t c;
    CHECK(sg_expert_choice_capacity(ctx, 0.0f, 4, 2, &c) == SG_ERR_ARGUMENT, "factor 0");
    CHECK(sg_expert_choice_capacity(ctx, 1.0f, 0, 2, &c) == SG_ERR_ARGUMENT &&
              strstr(sg_context_error(ctx), "below one"), "capacity below one token");
    /* backward against central differences of L = sum dw * p[tok][e] */
    const size_t t = 6, e = 5, cc = 3;
    float *y = rand_matrix(t, e, 1.0, 31), dw[5 * 3], dx[6 * 5];
    int32_t tk[5 * 3];
    float wt[5 * 3];
    const float temp = 0.7f;
    CHECK(sg_gate_expert_choice_f32(ctx, t, e, y, e, temp, cc, tk, cc, wt, cc, NULL, 0) == SG_OK, "status");
    test_rng rng = test_rng_seed(3);
    for (int i = 0; i < 15; i++) dw[i] = (float)test_normal(&rng);
    CHECK(sg_gate_expert_choice_backward_f32(ctx, t, e, y, e, temp, cc, tk, cc, dw, cc, dx, e) == SG_OK,
          "backward status %s", sg_context_error(ctx));
    for (size_t r = 0; r < t; r++)
        for (size_t i = 0; i < e; i++) {
            double L[2];
            for (int sgn = 0; sgn < 2; sgn++) {
                float save = y[r * e + i];
                y[r * e + i] = save + (sgn ? -1e-2f : 1e-2f);
                L[sgn] = 0.0;
                for (size_t ex = 0; ex < e; ex++)
                    for (size_t s = 0; s < cc; s++) {
                        const float *xr = y + (size_t)tk[ex * cc + s] * e;
                        double mx = -INFINITY, sum = 0.0;
                        for (size_t q = 0; q < e; q++) mx = fmax(mx, xr[q] / (double)temp);
                        for (size_t q = 0; q < e; q++) sum += exp(xr[q] / (double)temp - mx);
                        L[sgn] += dw[ex * cc + s] * exp(xr[ex] / (double)temp - mx) / sum;
                    }
                y[r * e + i] = save;
            }
            double fd = (L[0] - L[1]) / 2e-2;
            CHECK(fabs(dx[r * e + i] - fd) < 2e-3 * fmax(1.0, fabs(fd)), "ec dx[%zu][%zu] %g fd %g", r, i,
                  (double)dx[r * e + i], fd);
        }
    free(y);
    sg_context_destroy(ctx);
}

/* Expert choice on every path (insertion lists C <= 16, threshold and
 * collect, heap, select) with +inf rows, rows of -inf, -inf entries and
 * all-equal rows, against the documented keys: x_te / T - lse_t for a
 * finite lse (from a double reference; near-ties skipped), 0 at the +inf
 * entries of a +inf row, -inf elsewhere in it and in a -inf row. Ties go
 * to the lower token; weights 1/count on +inf rows, 0 on -inf keys. */
TEST(route_expert_choice_special_rows_paths) {
    static const struct { size_t t, e, c; float temp; int kind; } cs[] = {
        {40, 8, 3, 1.0f, 0},    {40, 8, 3, 1.0f, 1},   {600, 64, 12, 0.5f, 0}, {600, 64, 12, 1.0f, 1},
        {700, 8, 80, 1.0f, 0},  {700, 8, 80, 1.0f, 1}, {300, 4, 40, 1.0f, 0},  {600, 64, 12, 1.0f, 2},
        {512, 8, 64, 1.0f, 2},  {2048, 8, 256, 1.0f, 0}, {96, 16, 1, 2.0f, 0}, {1024, 64, 16, 1.0f, 2},
        {1, 256, 1, 1.0f, 0},   {1, 8, 1, 0.7f, 3},    {1, 8, 1, 1.0f, 4},
        {60, 4, 20, 1.0f, 0},   {100, 4, 30, 1.0f, 1}, {100, 4, 30, 1.0f, 2},
        /* the bucket path (C > 16, C > T / 16): exact ties, a clustered
         * column, a sample that overshoots (every token kept), -inf keys,
         * heavy tails */
        {700, 8, 90, 1.0f, 5},  {640, 8, 80, 0.7f, 6}, {640, 8, 80, 1.0f, 7}, {700, 8, 90, 1.0f, 8},
        {4096, 8, 512, 1.0f, 0}, {4096, 8, 512, 1.0f, 5}, {900, 8, 120, 0.7f, 9}, {2000, 4, 500, 1.0f, 9},
        /* the heap: C > 128 past a sixteenth of T; identical rows overflow
         * the collect path */
        {2100, 4, 130, 1.0f, 0}, {1040, 4, 65, 1.0f, 2},
    };
    for (int th = 1; th <= 2; th++) {
        sg_context *ctx = test_context(th);
        for (size_t ci = 0; ci < sizeof cs / sizeof cs[0]; ci++) {
            const size_t t = cs[ci].t, e = cs[ci].e, c = cs[ci].c;
            const float temp = cs[ci].temp;
            const int kind = cs[ci].kind;
            if (test_quick && t > 1000) continue;
            float *x = rand_matrix(t, e, 1.0, 4000 + ci);
            if (kind == 1) /* special rows: +inf rows (one or two +inf), -inf rows, -inf entries */
                for (size_t r = 0; r < t; r++) {
                    if (r % 7 == 3) x[r * e + r % e] = INFINITY;
                    if (r % 14 == 3) x[r * e + (r + 1) % e] = INFINITY;
                    if (r % 11 == 5)
                        for (size_t i = 0; i < e; i++) x[r * e + i] = -INFINITY;
                    if (r % 5 == 1) x[r * e + (r * 3) % e] = -INFINITY;
                }
            if (kind == 3) x[2] = INFINITY, x[5] = INFINITY; /* one token with +inf (two experts share it) */
            if (kind == 4)
                for (size_t i = 0; i < e; i++) x[i] = -INFINITY;
            if (kind == 2) /* every token alike: tokens 0..C-1 in order */
                for (size_t r = 1; r < t; r++) memcpy(x + r * e, x, e * sizeof *x);
            if (kind == 5) /* exact ties: token r copies token r - 2 */
                for (size_t r = 4; r < t; r += 5) memcpy(x + r * e, x + (r - 2) * e, e * sizeof *x);
            if (kind == 6) /* a clustered column: half the tokens copy the best row of expert 0 */
                for (size_t r = 1; r < t; r += 2) {
                    memcpy(x + r * e, x, e * sizeof *x);
                    x[r * e] = 3.0f;
                }
            if (kind == 7) /* the sampled tokens (every T / 32-th) far ahead for expert 0 */
                for (size_t r = 0; r < t; r += t / 32) x[r * e] = 6.0f;
            if (kind == 9) /* heavy tails (signed squares): buckets past 64 tokens, merge-sorted */
                for (size_t i = 0; i < t * e; i++) x[i] = 1.5f * x[i] * fabsf(x[i]);
            if (kind == 8) /* expert 1: most keys -inf */
                for (size_t r = 0; r < t; r++)
                    if (r % 10 != 3) x[r * e + 1] = -INFINITY;
            int32_t *tok = test_alloc(e * c * sizeof *tok);
            float *w = test_alloc(e * c * sizeof *w);
            CHECK(sg_gate_expert_choice_f32(ctx, t, e, x, e, temp, c, tok, c, w, c, NULL, 0) == SG_OK, "status %s",
                  sg_context_error(ctx));
            double *key = test_alloc(t * e * sizeof *key), *col = test_alloc(t * sizeof *col);
            int *infrow = test_alloc(t * sizeof *infrow);
            for (size_t r = 0; r < t; r++) {
                const float *xr = x + r * e;
                size_t ninf = 0, nminf = 0;
                for (size_t i = 0; i < e; i++) ninf += xr[i] == INFINITY, nminf += xr[i] == -INFINITY;
                infrow[r] = (int)ninf;
                double mx = -INFINITY, sm = 0.0;
                for (size_t i = 0; i < e; i++) mx = fmax(mx, xr[i] / (double)temp);
                for (size_t i = 0; i < e; i++) sm += ninf || nminf == e ? 0.0 : exp(xr[i] / (double)temp - mx);
                for (size_t i = 0; i < e; i++)
                    key[r * e + i] = ninf ? (xr[i] == INFINITY ? 0.0 : -INFINITY)
                                   : nminf == e ? -INFINITY : xr[i] / (double)temp - mx - log(sm);
            }
            size_t clear = 0;
            for (size_t ex = 0; ex < e; ex++) {
                int32_t ref[512];
                for (size_t r = 0; r < t; r++) col[r] = key[r * e + ex];
                ref_select(col, NULL, t, c, ref);
                if (kind == 9) { /* dense near-ties: right up to 1e-6 of the key, in order */
                    const int32_t *tk = tok + ex * c;
                    unsigned char *in = test_alloc(t);
                    memset(in, 0, t);
                    double kmin = INFINITY;
                    for (size_t s = 0; s < c; s++) {
                        CHECK(tk[s] >= 0 && (size_t)tk[s] < t && !in[tk[s]], "case %zu: token %d repeated or out of range",
                              ci, tk[s]);
                        if (tk[s] < 0 || (size_t)tk[s] >= t) break;
                        in[tk[s]] = 1;
                        kmin = fmin(kmin, col[tk[s]]);
                        CHECK(s == 0 || w[ex * c + s] <= w[ex * c + s - 1], "case %zu: weights not descending", ci);
                        CHECK(s == 0 || col[tk[s]] <= col[tk[s - 1]] + 1e-6, "case %zu: slot %zu out of order", ci, s);
                        const double want = exp(col[tk[s]]);
                        CHECK(fabs(w[ex * c + s] - want) <= 2e-6 * want, "case %zu weight %g want %g", ci,
                              (double)w[ex * c + s], want);
                    }
                    for (size_t r = 0; r < t; r++)
                        CHECK(in[r] || col[r] <= kmin + 1e-6, "case %zu: token %zu (key %g) left out above %g", ci, r,
                              col[r], kmin);
                    free(in);
                    clear++;
                    continue;
                }
                int ok = 1; /* decided by more than rounding (equal keys are exact ties) */
                for (size_t s = 0; s < c; s++)
                    for (size_t r = 0; r < t; r++)
                        if (r != (size_t)ref[s] && col[r] != col[ref[s]] && fabs(col[r] - col[ref[s]]) < 1e-6) ok = 0;
                if (kind == 2) ok = 1; /* identical rows: exact ties */
                if (!ok) continue;
                clear++;
                for (size_t s = 0; s < c; s++) {
                    CHECK(tok[ex * c + s] == ref[s], "case %zu th %d expert %zu slot %zu: token %d, ref %d", ci, th,
                          ex, s, tok[ex * c + s], ref[s]);
                    const int32_t r = ref[s];
                    double want = infrow[r] ? (x[(size_t)r * e + ex] == INFINITY ? 1.0 / infrow[r] : 0.0)
                                            : exp(col[r]);
                    CHECK(fabs(w[ex * c + s] - want) <= 2e-6 * want, "case %zu weight %g want %g", ci,
                          (double)w[ex * c + s], want);
                }
            }
            CHECK(clear * 10 >= e * 7, "case %zu: only %zu of %zu experts clear of near-ties", ci, clear, e);
            free(x), free(tok), free(w), free(key), free(col), free(infrow);
        }
        sg_context_destroy(ctx);
    }
}

/* ---- load and balance ------------------------------------------------------ */

/* The reference of dropping: slot-major, order by token or by weight. */
static void ref_drop(size_t t, size_t k, size_t e, const int32_t *ids, const float *w, size_t cap,
                     int policy, int32_t *pos) {
    size_t *cnt = calloc(e, sizeof *cnt);
    char *done = calloc(t, 1);
    for (size_t j = 0; j < k; j++) {
        memset(done, 0, t);
        for (size_t q = 0; q < t; q++) {
            size_t r = q;
            if (policy == SG_DROP_BY_WEIGHT) { /* the best not yet placed, lower token on ties */
                long best = -1;
                for (size_t s = 0; s < t; s++)
                    if (!done[s] && (best < 0 || w[s * k + j] > w[(size_t)best * k + j])) best = (long)s;
                r = (size_t)best;
            }
            done[r] = 1;
            size_t ex = (size_t)ids[r * k + j];
            pos[r * k + j] = policy == SG_DROPLESS || cnt[ex] < cap ? (int32_t)cnt[ex]++ : -1;
        }
    }
    free(cnt), free(done);
}

TEST(route_capacity_and_dropping) {
    sg_context *ctx = test_context(1);
    size_t cap;
    CHECK(sg_route_capacity(ctx, 1.25f, 100, 2, 8, &cap) == SG_OK && cap == 32, "capacity %zu", cap);
    CHECK(sg_route_capacity(ctx, 1.0f, 3, 1, 8, &cap) == SG_OK && cap == 1, "capacity %zu", cap);
    CHECK(sg_route_capacity(ctx, 1.0f, 0, 2, 8, &cap) == SG_ERR_ARGUMENT &&
              strstr(sg_context_error(ctx), "below one"), "capacity 0: '%s'", sg_context_error(ctx));
    CHECK(sg_route_capacity(ctx, NAN, 3, 1, 8, &cap) == SG_ERR_ARGUMENT, "NaN factor");
    const size_t t = 57, e = 8, k = 3;
    float *x = rand_matrix(t, e, 1.0, 1234);
    int32_t ids[57 * 3], pos[57 * 3], ref[57 * 3];
    float w0[57 * 3], w[57 * 3];
    sg_gate_config cfg = sg_gate_config_default(SG_GATE_SOFTMAX_TOPK);
    cfg.k = k;
    CHECK(sg_gate_f32(ctx, &cfg, t, e, x, e, ids, k, w0, k, NULL, 0) == SG_OK, "gate");
    int64_t counts[8], kept[8];
    CHECK(sg_route_counts(ctx, t, k, ids, k, e, counts) == SG_OK, "counts");
    int64_t total = 0;
    for (size_t i = 0; i < e; i++) total += counts[i];
    CHECK(total == (int64_t)(t * k), "counts sum %lld", (long long)total);
    for (int policy = 0; policy <= SG_DROPLESS; policy++)
        for (int renorm = 0; renorm < 2; renorm++) {
            memcpy(w, w0, sizeof w);
            size_t capacity = 15;
            CHECK(sg_route_apply_capacity_f32(ctx, t, k, e, ids, k, w, k, capacity, (sg_drop_policy)policy,
                                              renorm, pos, k, kept) == SG_OK,
                  "apply status %s", sg_context_error(ctx));
            ref_drop(t, k, e, ids, w0, capacity, policy, ref);
            CHECK(memcmp(pos, ref, sizeof pos) == 0, "policy %d: positions differ from the reference", policy);
            int64_t kc[8] = {0};
            size_t dropped = 0;
            for (size_t r = 0; r < t; r++) {
                double all = 0.0, kw = 0.0, got = 0.0;
                for (size_t j = 0; j < k; j++) {
                    all += w0[r * k + j];
                    if (pos[r * k + j] >= 0) kc[ids[r * k + j]]++, kw += w0[r * k + j];
                    else {
                        dropped++;
                        CHECK(w[r * k + j] == 0.0f, "dropped weight not 0");
                    }
                    got += w[r * k + j];
                    if (!renorm && pos[r * k + j] >= 0) CHECK(w[r * k + j] == w0[r * k + j], "kept weight moved");
                }
                if (renorm && kw > 0) CHECK(fabs(got - all) < 1e-6, "renormalized sum %g, want %g", got, all);
            }
            for (size_t i = 0; i < e; i++) {
                CHECK(kc[i] == kept[i], "kept[%zu] %lld, counted %lld", i, (long long)kept[i], (long long)kc[i]);
                if (policy != SG_DROPLESS) CHECK(kept[i] <= (int64_t)capacity, "capacity exceeded");
            }
            CHECK(policy == SG_DROPLESS ? dropped == 0 : dropped > 0, "policy %d dropped %zu", policy, dropped);
        }
    /* slot-major: with capacity 1 and every token on expert 0 in both
     * slots, token 0's first choice is kept, nobody's second */
    int32_t same[4 * 2] = {0, 1, 0, 1, 0, 1, 0, 1};
    float ws[8] = {0.1f, 0.1f, 0.9f, 0.05f, 0.5f, 0.5f, 0.9f, 0.05f};
    CHECK(sg_route_apply_capacity_f32(ctx, 4, 2, 2, same, 2, ws, 2, 1, SG_DROP_BY_WEIGHT, 0, pos, 2, kept) ==
              SG_OK, "status");
    /* slot 0 by weight: tokens 1 (0.9) and 3 (0.9) tie -> token 1 kept */
    CHECK(pos[2] == 0 && pos[0] == -1 && pos[4] == -1 && pos[6] == -1, "slot 0 by weight: %d %d %d %d", pos[0],
          pos[2], pos[4], pos[6]);
    CHECK(pos[5] == 0 && pos[1] == -1, "slot 1 by weight: token 2 (0.5) first: %d %d", pos[5], pos[1]);
    int32_t bad[2] = {0, 9};
    CHECK(sg_route_apply_capacity_f32(ctx, 1, 2, 8, bad, 2, ws, 2, 1, SG_DROP_BY_TOKEN, 0, NULL, 0, NULL) ==
              SG_ERR_ARGUMENT && strstr(sg_context_error(ctx), "ids[0][1]"), "bad id: '%s'", sg_context_error(ctx));
    CHECK(sg_route_apply_capacity_f32(ctx, 1, 2, 8, same, 2, ws, 2, 0, SG_DROP_BY_TOKEN, 0, NULL, 0, NULL) ==
              SG_ERR_ARGUMENT, "capacity 0");
    free(x);
    sg_context_destroy(ctx);
}

TEST(route_balance_and_z_loss) {
    sg_context *ctx = test_context(1);
    static const size_t es[] = {8, 64, 200, 1100};
    for (size_t ei = 0; ei < 4; ei++) {
        const size_t e = es[ei], t = 13, k = e >= 64 ? 6 : 2;
        float *x = rand_matrix(t, e, 1.5, 70 + e);
        int32_t *ids = test_alloc(t * k * sizeof *ids);
        float *w = test_alloc(t * k * sizeof *w), *dx = test_alloc(t * e * sizeof *dx);
        sg_gate_config cfg = sg_gate_config_default(SG_GATE_SOFTMAX_TOPK);
        cfg.k = k;
        sg_gate_f32(ctx, &cfg, t, e, x, e, ids, k, w, k, NULL, 0);
        const float alpha = 0.01f;
        float L, L2;
        CHECK(sg_route_balance_loss_f32(ctx, t, e, x, e, k, ids, k, alpha, &L, dx, e) == SG_OK, "status %s",
              sg_context_error(ctx));
        CHECK(sg_route_balance_loss_f32(ctx, t, e, x, e, k, ids, k, alpha, &L2, NULL, 0) == SG_OK && L2 == L,
              "loss without dx differs");
        /* the formula in double */
        double *f = calloc(e, sizeof *f), *P = calloc(e, sizeof *P);
        for (size_t i = 0; i < t * k; i++) f[ids[i]] += 1.0 / (double)(t * k);
        for (size_t r = 0; r < t; r++) {
            double mx = -INFINITY, s = 0.0;
            for (size_t i = 0; i < e; i++) mx = fmax(mx, x[r * e + i]);
            for (size_t i = 0; i < e; i++) s += exp(x[r * e + i] - mx);
            for (size_t i = 0; i < e; i++) P[i] += exp(x[r * e + i] - mx) / s / (double)t;
        }
        double want = 0.0;
        for (size_t i = 0; i < e; i++) want += f[i] * P[i];
        want *= alpha * (double)e;
        CHECK(fabs(L - want) < 1e-6 * want, "balance loss %.9g, formula %.9g", (double)L, want);
        /* gradient (f fixed) by central differences, a few entries */
        for (size_t q = 0; q < 6; q++) {
            size_t r = (q * 5) % t, i = (q * 37) % e;
            double lp[2];
            for (int sgn = 0; sgn < 2; sgn++) {
                float save = x[r * e + i];
                x[r * e + i] = save + (sgn ? -1e-2f : 1e-2f);
                double Ps = 0.0;
                for (size_t ex = 0; ex < e; ex++) {
                    double PE = 0.0;
                    for (size_t rr = 0; rr < t; rr++) {
                        double mx = -INFINITY, s = 0.0;
                        for (size_t ii = 0; ii < e; ii++) mx = fmax(mx, x[rr * e + ii]);
                        for (size_t ii = 0; ii < e; ii++) s += exp(x[rr * e + ii] - mx);
                        PE += exp(x[rr * e + ex] - mx) / s / (double)t;
                    }
                    Ps += f[ex] * PE;
                }
                lp[sgn] = alpha * (double)e * Ps;
                x[r * e + i] = save;
            }
            double fd = (lp[0] - lp[1]) / 2e-2;
            CHECK(fabs(dx[r * e + i] - fd) < 1e-3 * fabs(fd) + 1e-9, "balance dx[%zu][%zu] %g fd %g", r, i,
                  (double)dx[r * e + i], fd);
        }
        /* z-loss and its gradient */
        CHECK(sg_route_z_loss_f32(ctx, t, e, x, e, &L, dx, e) == SG_OK, "z status");
        CHECK(sg_route_z_loss_f32(ctx, t, e, x, e, &L2, NULL, 0) == SG_OK, "z status");
        double zw = 0.0;
        for (size_t r = 0; r < t; r++) {
            double mx = -INFINITY, s = 0.0;
            for (size_t i = 0; i < e; i++) mx = fmax(mx, x[r * e + i]);
            for (size_t i = 0; i < e; i++) s += exp(x[r * e + i] - mx);
            double lse = mx + log(s);
            zw += lse * lse / (double)t;
            for (size_t i = 0; i < e; i++) {
                double g = 2.0 / (double)t * lse * exp(x[r * e + i] - lse);
                CHECK(fabs(dx[r * e + i] - g) < 2e-6 * fabs(g) + 1e-12, "z dx[%zu][%zu] %g want %g", r, i,
                      (double)dx[r * e + i], g);
            }
        }
        CHECK(fabs(L - zw) < 2e-6 * zw && fabs(L2 - zw) < 2e-6 * zw, "z-loss %.9g / %.9g, formula %.9g",
              (double)L, (double)L2, zw);
        free(x), free(ids), free(w), free(dx), free(f), free(P);
    }
    float y[4] = {0, 1, NAN, 2}, L;
    CHECK(sg_route_z_loss_f32(ctx, 2, 2, y, 2, &L, NULL, 0) == SG_ERR_ARGUMENT &&
              strstr(sg_context_error(ctx), "token 1"), "z NaN: '%s'", sg_context_error(ctx));
    float m[4] = {-INFINITY, -INFINITY, 0.0f, 1.0f};
    CHECK(sg_route_z_loss_f32(ctx, 2, 2, m, 2, &L, NULL, 0) == SG_OK && L == INFINITY, "z -inf row: %g",
          (double)L);
    /* the NaN found after the loss (no scan first): beside +inf, a row of
     * NaN, a NaN in long rows (the two-pass lse), the first such token named */
    {
        static const size_t ezs[] = {3, 200};
        for (int ei = 0; ei < 2; ei++)
            for (int kind = 0; kind < 3; kind++) {
                const size_t ez = ezs[ei], tz = 40;
                float *z = rand_matrix(tz, ez, 1.0, 77);
                if (kind == 0) z[7 * ez] = NAN, z[7 * ez + 1] = INFINITY;
                if (kind == 1)
                    for (size_t i = 0; i < ez; i++) z[7 * ez + i] = NAN;
                if (kind == 2) z[7 * ez + ez - 1] = NAN;
                z[30 * ez] = NAN;
                CHECK(sg_route_z_loss_f32(ctx, tz, ez, z, ez, &L, NULL, 0) == SG_ERR_ARGUMENT &&
                          strstr(sg_context_error(ctx), "token 7"), "z NaN e=%zu kind %d: '%s'", ez, kind,
                      sg_context_error(ctx));
                free(z);
            }
    }
    sg_context_destroy(ctx);
}

TEST(route_bias_update) {
    sg_context *ctx = test_context(1);
    int64_t counts[5] = {10, 2, 6, 6, 6}; /* mean 6 */
    float bias[5] = {0, 0, 0, 0.5f, 0};
    CHECK(sg_route_bias_update_f32(ctx, 5, counts, 0.001f, bias) == SG_OK, "status");
    CHECK(bias[0] == -0.001f && bias[1] == 0.001f && bias[2] == 0.0f && bias[3] == 0.5f, "bias %g %g %g %g",
          (double)bias[0], (double)bias[1], (double)bias[2], (double)bias[3]);
    CHECK(sg_route_bias_update_f32(ctx, 5, counts, -1.0f, bias) == SG_ERR_ARGUMENT, "negative rate");
    /* closing the loop: the bias update evens a skewed sigmoid router */
    const size_t t = 512, e = 16, k = 2;
    float *x = rand_matrix(t, e, 1.0, 55), b[16] = {0};
    for (size_t r = 0; r < t; r++) x[r * e + 3] += 2.0f; /* expert 3 is favoured */
    int32_t *ids = test_alloc(t * k * sizeof *ids);
    float *w = test_alloc(t * k * sizeof *w);
    sg_gate_config cfg = sg_gate_config_default(SG_GATE_SIGMOID_TOPK);
    cfg.bias = b;
    int64_t c0[16], c1[16];
    sg_gate_f32(ctx, &cfg, t, e, x, e, ids, k, w, k, NULL, 0);
    sg_route_counts(ctx, t, k, ids, k, e, c0);
    for (int step = 0; step < 300; step++) {
        sg_gate_f32(ctx, &cfg, t, e, x, e, ids, k, w, k, NULL, 0);
        sg_route_counts(ctx, t, k, ids, k, e, c1);
        sg_route_bias_update_f32(ctx, e, c1, 0.002f, b);
    }
    int64_t max0 = 0, max1 = 0;
    for (size_t i = 0; i < e; i++) max0 = c0[i] > max0 ? c0[i] : max0, max1 = c1[i] > max1 ? c1[i] : max1;
    CHECK(max0 > 300 && max1 < 100, "max load %lld before, %lld after (mean 64)", (long long)max0, (long long)max1);
    free(x), free(ids), free(w);
    sg_context_destroy(ctx);
}

/* ---- dense gates -------------------------------------------------------------- */

static double ref_act(int act, double v) {
    switch (act) {
    case SG_GATE_ACT_TANH: return tanh(v);
    case SG_GATE_ACT_SIGMOID: return 1.0 / (1.0 + exp(-v));
    case SG_GATE_ACT_GELU: return v * 0.5 * (1.0 + erf(v / sqrt(2.0)));
    default: return v;
    }
}

/* L = sum dp * thresholded softmax(act(x) / tau), the mask from xm */
static double ref_temp_loss(const float *x, const float *xm, size_t e, double tau, int act, double thr,
                            const float *dp) {
    double z[64], zm[64], mx = -INFINITY, mm = -INFINITY, s = 0.0, sm = 0.0, L = 0.0;
    for (size_t i = 0; i < e; i++) {
        z[i] = ref_act(act, x[i]) / tau, zm[i] = ref_act(act, xm[i]) / tau;
        mx = fmax(mx, z[i]), mm = fmax(mm, zm[i]);
    }
    for (size_t i = 0; i < e; i++) s += exp(z[i] - mx), sm += exp(zm[i] - mm);
    for (size_t i = 0; i < e; i++)
        if (exp(zm[i] - mm) / sm >= thr) L += dp[i] * exp(z[i] - mx) / s;
    return L;
}

TEST(route_temperature_gate) {
    sg_context *ctx = test_context(1);
    const size_t t = 4, e = 7;
    float *x = rand_matrix(t, e, 1.5, 41), *dp = rand_matrix(t, e, 1.0, 42);
    float p[4 * 7], dx[4 * 7];
    for (int act = 0; act <= SG_GATE_ACT_GELU; act++)
        for (int v = 0; v < 3; v++) {
            float tau = v == 0 ? 1.0f : v == 1 ? 0.3f : 2.5f, thr = v == 1 ? 0.05f : 0.0f;
            CHECK(sg_gate_temperature_f32(ctx, t, e, x, e, tau, (sg_gate_activation)act, thr, p, e) == SG_OK,
                  "status");
            float dtau;
            CHECK(sg_gate_temperature_backward_f32(ctx, t, e, x, e, tau, (sg_gate_activation)act, thr, dp, e, dx,
                                                   e, &dtau) == SG_OK, "backward status");
            double dtau_fd = 0.0;
            for (size_t r = 0; r < t; r++) {
                const float *xr = x + r * e;
                double z[7], mx = -INFINITY, s = 0.0, sum = 0.0;
                for (size_t i = 0; i < e; i++) z[i] = ref_act(act, xr[i]) / tau, mx = fmax(mx, z[i]);
                for (size_t i = 0; i < e; i++) s += exp(z[i] - mx);
                for (size_t i = 0; i < e; i++) {
                    double want = exp(z[i] - mx) / s;
                    if (want < thr) want = 0.0;
                    sum += p[r * e + i];
                    CHECK(fabs(p[r * e + i] - want) < 1e-6 * want + 1e-7, "%s tau %g: p %g want %g",
                          sg_gate_activation_name((sg_gate_activation)act), (double)tau, (double)p[r * e + i], want);
                }
                if (thr == 0.0f) CHECK(fabs(sum - 1.0) < 1e-6, "dense gate sums to %g", sum);
                float xp[7];
                for (size_t i = 0; i < e; i++) {
                    memcpy(xp, xr, sizeof xp);
                    xp[i] = xr[i] + 1e-2f;
                    double lp = ref_temp_loss(xp, xr, e, tau, act, thr, dp + r * e);
                    xp[i] = xr[i] - 1e-2f;
                    double lm = ref_temp_loss(xp, xr, e, tau, act, thr, dp + r * e), fd = (lp - lm) / 2e-2;
                    CHECK(fabs(dx[r * e + i] - fd) < 2e-3 * fmax(1.0, fabs(fd)), "%s: dx %g fd %g",
                          sg_gate_activation_name((sg_gate_activation)act), (double)dx[r * e + i], fd);
                }
                double hp = ref_temp_loss(xr, xr, e, tau * (1 + 1e-4), act, thr, dp + r * e);
                double hm = ref_temp_loss(xr, xr, e, tau * (1 - 1e-4), act, thr, dp + r * e);
                dtau_fd += (hp - hm) / (2e-4 * tau);
            }
            CHECK(fabs(dtau - dtau_fd) < 1e-3 * fmax(1.0, fabs(dtau_fd)), "%s tau %g: dtau %g fd %g",
                  sg_gate_activation_name((sg_gate_activation)act), (double)tau, (double)dtau, dtau_fd);
        }
    CHECK(sg_gate_temperature_f32(ctx, t, e, x, e, 0.0f, SG_GATE_ACT_TANH, 0.0f, p, e) == SG_ERR_ARGUMENT &&
              strstr(sg_context_error(ctx), "tau"), "tau 0");
    x[9] = NAN;
    CHECK(sg_gate_temperature_f32(ctx, t, e, x, e, 1.0f, SG_GATE_ACT_TANH, 0.0f, p, e) == SG_ERR_ARGUMENT &&
              strstr(sg_context_error(ctx), "token 1"), "NaN: '%s'", sg_context_error(ctx));
    free(x), free(dp);
    sg_context_destroy(ctx);
}

TEST(route_laplace_and_hierarchical) {
    sg_context *ctx = test_context(1);
    const size_t t = 3, e = 6, d = 5;
    float *x = rand_matrix(t, d, 1.0, 51), *w = rand_matrix(e, d, 1.0, 52), *g = rand_matrix(t, e, 1.0, 53);
    memcpy(w + 2 * d, x + 1 * d, d * sizeof *w); /* token 1 sits on center 2 */
    float l[3 * 6], dx[3 * 5], dw[6 * 5];
    CHECK(sg_gate_laplace_logits_f32(ctx, t, e, d, x, d, w, d, l, e) == SG_OK, "status");
    for (size_t r = 0; r < t; r++)
        for (size_t i = 0; i < e; i++) {
            double s = 0.0;
            for (size_t q = 0; q < d; q++) s += ((double)x[r * d + q] - w[i * d + q]) * ((double)x[r * d + q] - w[i * d + q]);
            CHECK(fabs(l[r * e + i] + sqrt(s)) < 1e-6 * sqrt(s) + 1e-30, "laplace logit %g want %g",
                  (double)l[r * e + i], -sqrt(s));
        }
    CHECK(l[1 * e + 2] == 0.0f, "distance to itself");
    CHECK(sg_gate_laplace_logits_backward_f32(ctx, t, e, d, x, d, w, d, g, e, dx, d, dw, d) == SG_OK, "bwd");
    /* L = sum g * logits: central differences on x and w (away from the kink) */
    for (int which = 0; which < 2; which++)
        for (size_t q = 0; q < (which ? e * d : t * d); q++) {
            float *v = which ? w + q : x + q, v0 = *v;
            if ((!which && q / d == 1) || (which && q / d == 2)) continue; /* the kink */
            double L[2];
            for (int sgn = 0; sgn < 2; sgn++) {
                *v = v0 + (sgn ? -1e-3f : 1e-3f);
                L[sgn] = 0.0;
                for (size_t r = 0; r < t; r++)
                    for (size_t i = 0; i < e; i++) {
                        double s = 0.0;
                        for (size_t c = 0; c < d; c++)
                            s += ((double)x[r * d + c] - w[i * d + c]) * ((double)x[r * d + c] - w[i * d + c]);
                        L[sgn] -= g[r * e + i] * sqrt(s);
                    }
            }
            *v = v0;
            double fd = (L[0] - L[1]) / 2e-3, got = which ? dw[q] : dx[q];
            CHECK(fabs(got - fd) < 2e-3 * fmax(1.0, fabs(fd)), "laplace d%s[%zu] %g fd %g", which ? "w" : "x", q,
                  got, fd);
        }
    /* hierarchical: 3 groups of 4, top-2 groups, top-3 within */
    const size_t e1 = 3, e2 = 4;
    float *l1 = rand_matrix(t, e1, 1.0, 61), *l2 = rand_matrix(t, e1 * e2, 1.0, 62);
    float *dwh = rand_matrix(t, e1 * e2, 1.0, 63), hw[3 * 12], dl1[3 * 3], dl2[3 * 12];
    for (size_t k1 = 1; k1 <= e1; k1++)
        for (size_t k2 = 1; k2 <= e2; k2 += 3) {
            CHECK(sg_gate_hierarchical_f32(ctx, t, e1, e2, l1, e1, l2, e1 * e2, k1, k2, hw, e1 * e2) == SG_OK,
                  "hier status %s", sg_context_error(ctx));
            CHECK(sg_gate_hierarchical_backward_f32(ctx, t, e1, e2, l1, e1, l2, e1 * e2, k1, k2, dwh, e1 * e2, dl1,
                                                    e1, dl2, e1 * e2) == SG_OK, "hier bwd");
            for (size_t r = 0; r < t; r++) {
                double s = 0.0;
                size_t nz = 0;
                for (size_t i = 0; i < e1 * e2; i++) s += hw[r * 12 + i], nz += hw[r * 12 + i] > 0;
                CHECK(fabs(s - 1.0) < 1e-6 && nz == k1 * k2, "hier k1 %zu k2 %zu: sum %g, %zu nonzero", k1, k2, s, nz);
                /* reference: level weights by selection sort */
                double w1[3] = {0}, sel = 0.0, lv[12];
                int32_t id1[3];
                for (size_t g1 = 0; g1 < e1; g1++) lv[g1] = l1[r * e1 + g1];
                ref_select(lv, NULL, e1, k1, id1);
                for (size_t a = 0; a < k1; a++) sel += exp(lv[id1[a]]);
                for (size_t a = 0; a < k1; a++) w1[id1[a]] = exp(lv[id1[a]]) / sel;
                for (size_t g1 = 0; g1 < e1; g1++) {
                    int32_t id2[4];
                    double s2 = 0.0;
                    for (size_t j = 0; j < e2; j++) lv[j] = l2[r * 12 + g1 * e2 + j];
                    ref_select(lv, NULL, e2, k2, id2);
                    for (size_t a = 0; a < k2; a++) s2 += exp(lv[id2[a]]);
                    for (size_t j = 0; j < e2; j++) {
                        double want = 0.0;
                        for (size_t a = 0; a < k2; a++)
                            if (id2[a] == (int32_t)j) want = w1[g1] * exp(lv[j]) / s2;
                        CHECK(fabs(hw[r * 12 + g1 * e2 + j] - want) < 1e-6 * want + 1e-7, "hier w %g want %g",
                              (double)hw[r * 12 + g1 * e2 + j], want);
                    }
                }
            }
            /* FD on a few logits of each level, selection fixed by small steps */
            for (int lev = 0; lev < 2; lev++)
                for (size_t q = 0; q < (lev ? t * 12 : t * 3); q += lev ? 5 : 2) {
                    float *v = lev ? l2 + q : l1 + q, v0 = *v;
                    double L[2];
                    for (int sgn = 0; sgn < 2; sgn++) {
                        *v = v0 + (sgn ? -1e-3f : 1e-3f);
                        float ww[36];
                        sg_gate_hierarchical_f32(ctx, t, e1, e2, l1, e1, l2, 12, k1, k2, ww, 12);
                        L[sgn] = 0.0;
                        for (size_t i = 0; i < 36; i++) L[sgn] += (double)dwh[i] * ww[i];
                    }
                    *v = v0;
                    double fd = (L[0] - L[1]) / 2e-3, got = lev ? dl2[q] : dl1[q];
                    CHECK(fabs(got - fd) < 5e-3 * fmax(1.0, fabs(fd)), "hier dl%d[%zu] %g fd %g (k1 %zu k2 %zu)",
                          lev + 1, q, got, fd, k1, k2);
                }
        }
    free(x), free(w), free(g), free(l1), free(l2), free(dwh);
    sg_context_destroy(ctx);
}

static double ref_sstep(double v, double gm) {
    if (v <= -gm / 2) return 0.0;
    if (v >= gm / 2) return 1.0;
    return -2.0 / (gm * gm * gm) * v * v * v + 3.0 / (2.0 * gm) * v + 0.5;
}

/* L = sum dw * w + dreg * reg for one row, in double */
static double ref_dselect(size_t e, size_t k, double gm, double lam, const float *z, const float *al,
                          const float *dw, double dreg, double *wout) {
    size_t m = 0;
    while (((size_t)1 << m) < e) m++;
    double a[8], mx = -INFINITY, s = 0.0, L = 0.0, reg = 0.0;
    for (size_t i = 0; i < k; i++) mx = fmax(mx, al[i]);
    for (size_t i = 0; i < k; i++) s += a[i] = exp(al[i] - mx);
    for (size_t x = 0; x < e; x++) wout[x] = 0.0;
    for (size_t i = 0; i < k; i++) {
        double rs = 0.0, h = 0.0;
        for (size_t x = 0; x < e; x++) {
            double r = 1.0;
            for (size_t b = 0; b < m; b++) {
                double sb = ref_sstep(z[i * m + b], gm);
                r *= ((x >> (m - 1 - b)) & 1) ? sb : 1.0 - sb;
            }
            wout[x] += a[i] / s * r;
            rs += r, h -= r * log(r + 1e-6);
        }
        reg += lam * h + (((size_t)1 << m) == e ? 0.0 : 1.0 / fmax(rs, 1e-6));
    }
    for (size_t x = 0; x < e; x++) L += dw[x] * wout[x];
    return L + dreg * reg;
}

TEST(route_dselect) {
    sg_context *ctx = test_context(1);
    static const size_t es[] = {2, 5, 8, 12};
    for (size_t ei = 0; ei < 4; ei++) {
        const size_t e = es[ei], k = ei + 1, t = 3, m = sg_dselect_bits(e);
        CHECK((1u << m) >= e && (m == 0 || (1u << (m - 1)) < e), "bits(%zu) = %zu", e, m);
        const float gm = 1.0f, lam = 0.1f;
        float *z = rand_matrix(t, k * m, 0.15, 70 + e), *al = rand_matrix(t, k, 1.0, 80 + e);
        float *dwv = rand_matrix(t, e, 1.0, 90 + e);
        float w[3 * 12], dz[3 * 16], dal[3 * 4], reg;
        z[0] = 2.0f; /* a saturated bit: S = 1, S' = 0 */
        CHECK(sg_gate_dselect_f32(ctx, t, e, k, gm, lam, z, k * m, al, k, w, e, &reg) == SG_OK, "status %s",
              sg_context_error(ctx));
        const float dreg = 0.7f;
        CHECK(sg_gate_dselect_backward_f32(ctx, t, e, k, gm, lam, z, k * m, al, k, dwv, e, dreg, dz, k * m, dal,
                                           k) == SG_OK, "bwd status %s", sg_context_error(ctx));
        double regsum = 0.0, wr[16];
        for (size_t r = 0; r < t; r++) {
            float zero[16] = {0};
            regsum += ref_dselect(e, k, gm, lam, z + r * k * m, al + r * k, zero, 1.0, wr);
            double tot = 0.0;
            for (size_t x = 0; x < e; x++) {
                CHECK(fabs(w[r * e + x] - wr[x]) < 1e-6 * wr[x] + 1e-7, "dselect e=%zu w %g want %g", e,
                      (double)w[r * e + x], wr[x]);
                tot += w[r * e + x];
            }
            if (((size_t)1 << m) == e) CHECK(fabs(tot - 1.0) < 1e-6, "power of two: weights sum %g", tot);
            else CHECK(tot <= 1.0 + 1e-6, "masked codes: weights sum %g", tot);
            for (int which = 0; which < 2; which++)
                for (size_t q = 0; q < (which ? k : k * m); q++) {
                    float *v = which ? al + r * k + q : z + r * k * m + q, v0 = *v;
                    double L[2];
                    for (int sgn = 0; sgn < 2; sgn++) {
                        *v = v0 + (sgn ? -1e-3f : 1e-3f);
                        L[sgn] = ref_dselect(e, k, gm, lam, z + r * k * m, al + r * k, dwv + r * e, dreg, wr);
                    }
                    *v = v0;
                    double fd = (L[0] - L[1]) / 2e-3, got = which ? dal[r * k + q] : dz[r * k * m + q];
                    CHECK(fabs(got - fd) < 2e-3 * fmax(1.0, fabs(fd)), "dselect e=%zu d%s[%zu][%zu] %g fd %g", e,
                          which ? "alpha" : "z", r, q, got, fd);
                }
        }
        CHECK(fabs(reg - regsum) < 1e-5 * fmax(1.0, regsum), "reg %g want %g", (double)reg, regsum);
        free(z), free(al), free(dwv);
    }
    float z1[2] = {0, 0}, a1[1] = {0}, w1[4];
    CHECK(sg_gate_dselect_f32(ctx, 1, 4, 1, 0.0f, 0.0f, z1, 2, a1, 1, w1, 4, NULL) == SG_ERR_ARGUMENT &&
              strstr(sg_context_error(ctx), "gamma"), "gamma 0");
    CHECK(sg_gate_dselect_f32(ctx, 1, 1, 1, 1.0f, 0.0f, z1, 2, a1, 1, w1, 4, NULL) == SG_ERR_ARGUMENT, "e = 1");
    sg_context_destroy(ctx);
}

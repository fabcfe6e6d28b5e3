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

static void *xalloc(size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "test_route: out of memory\n");
        exit(2);
    }
    return p;
}

static float *rand_matrix(size_t rows, size_t n, double scale, uint64_t seed) {
    float *x = xalloc(rows * n * sizeof *x);
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
        float *u = xalloc(t * n * sizeof *u);
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
        float *u = xalloc(t * e * sizeof *u);
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
    float *xs = x ? xalloc(t * ldx * sizeof *xs) : NULL;
    for (size_t r = 0; x && r < t; r++) memcpy(xs + r * ldx, x + r * e, e * sizeof *x);
    int32_t *ids = xalloc(t * ldi * sizeof *ids);
    float *w = xalloc(t * ldi * sizeof *w), *p = xalloc(t * ldp * sizeof *p);
    sg_status st = sg_gate_f32(ctx, cfg, t, e, xs, ldx, ids, ldi, w, ldi, p, ldp);
    CHECK(st == SG_OK, "%s: status %d (%s)", what, (int)st, sg_context_error(ctx));
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
    free(xs), free(ids), free(w), free(p);
    return compared;
}

TEST(route_softmax_topk_reference) {
    sg_context *ctx = test_context(1);
    static const size_t es[] = {1, 3, 8, 17, 64, 256, 1500};
    static const size_t ks[] = {1, 2, 3, 6, 8};
    for (size_t ei = 0; ei < sizeof es / sizeof es[0]; ei++) {
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
    for (size_t ei = 0; ei < sizeof es / sizeof es[0]; ei++) {
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
    for (size_t ei = 0; ei < sizeof es / sizeof es[0]; ei++) {
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
    int32_t *ids = xalloc(t * sizeof *ids), *ids2 = xalloc(t * sizeof *ids2);
    float *w = xalloc(t * sizeof *w);
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
            ids[th - 1] = xalloc(t * 6 * sizeof(int32_t));
            w[th - 1] = xalloc(t * 6 * sizeof(float));
            p[th - 1] = xalloc(t * e * sizeof(float));
            dx[th - 1] = xalloc(t * e * sizeof(float));
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

/*
 * test_moe.c - token dispatch, combine and their backward passes, and the
 * MoE layer forward (include/softgate/moe.h), through the public API (and
 * the internal kernels, each compiled one against a double reference).
 * References are written here in double: the dense layer is
 *   y[t] = sum_s FFN_s(x[t]) + sum_k w[t,k] FFN_{id[t,k]}(x[t])
 * computed token by token without any dispatch.
 *
 * Tests (all named moe_*, so --filter moe runs this file):
 *   moe_plan_stable               offsets, stability, expert-contiguity,
 *                                 dropped ids, the inverse slot_pos
 *   moe_gather_combine_naive      gather exact, combine (and accumulate),
 *                                 gather backward against naive double sums
 *   moe_combine_backward_fd       d weights and d ye against central
 *                                 differences of a scalar loss
 *   moe_kernels_reference         every compiled few-rows kernel and
 *                                 activation against double
 *   moe_layer_dense               SwiGLU / GELU tanh / GELU erf, with and
 *                                 without shared experts, T = 1, 3, 17, 64
 *                                 and 150 (experts past 32 rows: sgemm),
 *                                 dropped slots, strides > D
 *   moe_layer_all_dropped         every slot dropped: y = the shared experts'
 *                                 sum exactly, or 0 without shared experts
 *   moe_layer_gated               router logits against double, the gate's
 *                                 routes, y equal to the routed call's bits;
 *                                 softmax-top-k and DeepSeek sigmoid gates
 *   moe_layer_threads_identical   1, 2 and 3 threads: the same bits; the
 *                                 caller's workspace; NaN rows stay local
 *   moe_args_errors               statuses and messages naming the argument
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moe/moe_kernels.h"
#include "test.h"

/* max for the error loops; not fmax, whose vectorized reduction crashes
 * the arm64 cross compiler (GCC 12, vect_transform_reduction ICE). */
static double max_d(double a, double b) { return a > b ? a : b; }

static float *randn(size_t count, double scale, test_rng *r) {
    float *v = test_alloc(count * sizeof *v);
    for (size_t i = 0; i < count; i++) v[i] = (float)(test_normal(r) * scale);
    return v;
}

/* A route: per token K distinct experts (or, with probability `drop`, -1),
 * weights in (0, 1]. */
static void random_route(size_t t, size_t e, size_t k, double drop, test_rng *r, int32_t *ids,
                         float *w) {
    for (size_t i = 0; i < t; i++) {
        for (size_t j = 0; j < k; j++) {
            int32_t v;
            int dup;
            do {
                v = (int32_t)(test_uniform(r) * (double)e);
                dup = 0;
                for (size_t q = 0; q < j; q++) dup |= ids[i * k + q] == v;
            } while (dup);
            ids[i * k + j] = v;
            w[i * k + j] = (float)(0.05 + 0.95 * test_uniform(r));
        }
        for (size_t j = 0; j < k; j++)
            if (test_uniform(r) < drop) ids[i * k + j] = -1;
    }
}

/* ---- dispatch plan ---------------------------------------------------- */

TEST(moe_plan_stable) {
    test_rng r = test_rng_seed(11);
    sg_context *ctx = test_context(1);
    const size_t t = 37, e = 6, k = 3;
    int32_t ids[37 * 3], offsets[7], order[37 * 3], pos[37 * 3];
    /* Duplicates inside a token are allowed here: not distinct on purpose. */
    for (size_t i = 0; i < t * k; i++) {
        double u = test_uniform(&r);
        ids[i] = u < 0.15 ? -1 : (int32_t)(test_uniform(&r) * (double)e);
    }
    ids[0] = ids[1] = 2; /* one token twice on one expert */
    CHECK(sg_moe_dispatch_plan(ctx, t, e, k, ids, k, offsets, order, pos) == SG_OK, "%s",
          sg_context_error(ctx));
    size_t count[6] = {0}, kept = 0;
    for (size_t i = 0; i < t * k; i++)
        if (ids[i] >= 0) count[ids[i]]++, kept++;
    CHECK(offsets[0] == 0, "offsets[0] = %d", offsets[0]);
    for (size_t x = 0; x < e; x++)
        CHECK((size_t)(offsets[x + 1] - offsets[x]) == count[x], "expert %zu: %d rows, want %zu", x,
              offsets[x + 1] - offsets[x], count[x]);
    CHECK((size_t)offsets[e] == kept, "kept %d, want %zu", offsets[e], kept);
    for (size_t x = 0; x < e; x++)
        for (int32_t p = offsets[x]; p < offsets[x + 1]; p++) {
            CHECK(order[p] >= 0 && ids[order[p]] == (int32_t)x, "position %d is not expert %zu", p, x);
            if (p > offsets[x]) CHECK(order[p] > order[p - 1], "expert %zu not stable at %d", x, p);
            CHECK(pos[order[p]] == p, "slot_pos[%d] = %d, want %d", order[p], pos[order[p]], p);
        }
    for (size_t p = kept; p < t * k; p++) CHECK(order[p] == -1, "order[%zu] = %d past P", p, order[p]);
    for (size_t i = 0; i < t * k; i++)
        if (ids[i] < 0) CHECK(pos[i] == -1, "dropped slot %zu has position %d", i, pos[i]);
    /* slot_pos NULL is allowed; all dropped gives P = 0; T = 0. */
    for (size_t i = 0; i < t * k; i++) ids[i] = -1;
    CHECK(sg_moe_dispatch_plan(ctx, t, e, k, ids, k, offsets, order, NULL) == SG_OK, "all dropped");
    CHECK(offsets[e] == 0 && order[0] == -1, "all dropped: P = %d", offsets[e]);
    offsets[3] = 99;
    CHECK(sg_moe_dispatch_plan(ctx, 0, e, k, NULL, k, offsets, NULL, NULL) == SG_OK, "T = 0");
    CHECK(offsets[3] == 0, "T = 0 leaves offsets %d", offsets[3]);
    sg_context_destroy(ctx);
}

/* ---- gather / combine ------------------------------------------------- */

typedef struct route_fixture {
    size_t t, e, k, d, rows;
    int32_t *ids, *offsets, *order, *pos;
    float *w;
} route_fixture;

static route_fixture make_route(sg_context *ctx, size_t t, size_t e, size_t k, size_t d,
                                double drop, test_rng *r) {
    route_fixture f = {t, e, k, d, 0, test_alloc(t * k * 4), test_alloc((e + 1) * 4), test_alloc(t * k * 4),
                       test_alloc(t * k * 4), test_alloc(t * k * 4)};
    random_route(t, e, k, drop, r, f.ids, f.w);
    CHECK(sg_moe_dispatch_plan(ctx, t, e, k, f.ids, k, f.offsets, f.order, f.pos) == SG_OK, "%s",
          sg_context_error(ctx));
    f.rows = (size_t)f.offsets[e];
    return f;
}

static void free_route(route_fixture *f) {
    free(f->ids), free(f->offsets), free(f->order), free(f->pos), free(f->w);
}

TEST(moe_gather_combine_naive) {
    test_rng r = test_rng_seed(12);
    for (int threads = 1; threads <= 2; threads++) {
        sg_context *ctx = test_context(threads);
        const size_t t = 29, e = 7, k = 3, d = 37, ld = 41;
        route_fixture f = make_route(ctx, t, e, k, d, 0.2, &r);
        float *x = randn(t * ld, 1.0, &r), *xe = randn(t * k * ld, 1.0, &r);
        CHECK(sg_moe_gather_f32(ctx, t, k, d, f.rows, f.order, x, ld, xe, ld) == SG_OK, "%s",
              sg_context_error(ctx));
        for (size_t p = 0; p < f.rows; p++)
            CHECK(memcmp(xe + p * ld, x + (size_t)f.order[p] / k * ld, d * 4) == 0,
                  "gather row %zu", p);
        float *ye = randn(f.rows * ld + 1, 1.0, &r), *y = randn(t * ld, 1.0, &r);
        float *y0 = test_alloc(t * ld * 4);
        memcpy(y0, y, t * ld * 4);
        for (int acc = 0; acc <= 1; acc++) {
            memcpy(y, y0, t * ld * 4);
            CHECK(sg_moe_combine_f32(ctx, t, k, d, f.rows, f.pos, f.w, k, ye, ld, y, ld, acc) == SG_OK,
                  "%s", sg_context_error(ctx));
            double worst = 0.0;
            for (size_t i = 0; i < t; i++)
                for (size_t c = 0; c < d; c++) {
                    double s = acc ? y0[i * ld + c] : 0.0;
                    for (size_t j = 0; j < k; j++)
                        if (f.ids[i * k + j] >= 0)
                            s += (double)f.w[i * k + j] * ye[(size_t)f.pos[i * k + j] * ld + c];
                    double err = fabs(y[i * ld + c] - s);
                    worst = err > worst ? err : worst;
                }
            CHECK(worst < 1e-5, "combine (accumulate %d) error %g", acc, worst);
            CHECK(y[ld - 1] == y0[ld - 1], "combine wrote past D");
        }
        /* Gather backward: dx[t] = sum of its kept rows of dxe. */
        memcpy(y, y0, t * ld * 4);
        CHECK(sg_moe_gather_backward_f32(ctx, t, k, d, f.rows, f.pos, ye, ld, y, ld, 0) == SG_OK,
              "%s", sg_context_error(ctx));
        double worst = 0.0;
        for (size_t i = 0; i < t; i++)
            for (size_t c = 0; c < d; c++) {
                double s = 0.0;
                for (size_t j = 0; j < k; j++)
                    if (f.ids[i * k + j] >= 0) s += ye[(size_t)f.pos[i * k + j] * ld + c];
                worst = max_d(worst, fabs(y[i * ld + c] - s));
            }
        CHECK(worst < 1e-5, "gather backward error %g", worst);
        free(x), free(xe), free(ye), free(y), free(y0);
        free_route(&f);
        sg_context_destroy(ctx);
    }
}

/* L = sum_{t,d} g[t,d] y[t,d] with y = combine(w, ye). */
static double combine_loss(sg_context *ctx, const route_fixture *f, const float *w, const float *ye,
                           const float *g, float *y) {
    CHECK(sg_moe_combine_f32(ctx, f->t, f->k, f->d, f->rows, f->pos, w, f->k, ye, f->d, y, f->d, 0) ==
              SG_OK,
          "%s", sg_context_error(ctx));
    double s = 0.0;
    for (size_t i = 0; i < f->t * f->d; i++) s += (double)g[i] * y[i];
    return s;
}

TEST(moe_combine_backward_fd) {
    test_rng r = test_rng_seed(13);
    sg_context *ctx = test_context(2);
    const size_t t = 9, e = 5, k = 2, d = 6;
    route_fixture f = make_route(ctx, t, e, k, d, 0.2, &r);
    float *ye = randn(t * k * d, 1.0, &r), *g = randn(t * d, 1.0, &r), *y = test_alloc(t * d * 4);
    float *dw = test_alloc(t * k * 4), *dye = test_alloc(t * k * d * 4);
    for (size_t i = 0; i < t * k; i++) dw[i] = 777.0f;
    CHECK(sg_moe_combine_backward_f32(ctx, t, k, d, f.rows, f.pos, f.w, k, ye, d, g, d, dw, k, dye,
                                      d) == SG_OK,
          "%s", sg_context_error(ctx));
    const float h = 1e-2f;
    for (size_t i = 0; i < t * k; i++) {
        float keep = f.w[i];
        f.w[i] = keep + h;
        double lp = combine_loss(ctx, &f, f.w, ye, g, y);
        f.w[i] = keep - h;
        double lm = combine_loss(ctx, &f, f.w, ye, g, y);
        f.w[i] = keep;
        double fd = (lp - lm) / (2.0 * h);
        CHECK(fabs(dw[i] - fd) < 2e-3 * (1.0 + fabs(fd)), "dweights[%zu] = %g, fd %g", i, dw[i], fd);
        if (f.ids[i] < 0) CHECK(dw[i] == 0.0f, "dropped slot %zu has dweight %g", i, dw[i]);
    }
    for (size_t p = 0; p < f.rows * d; p++) {
        float keep = ye[p];
        ye[p] = keep + h;
        double lp = combine_loss(ctx, &f, f.w, ye, g, y);
        ye[p] = keep - h;
        double lm = combine_loss(ctx, &f, f.w, ye, g, y);
        ye[p] = keep;
        double fd = (lp - lm) / (2.0 * h);
        CHECK(fabs(dye[p] - fd) < 2e-3 * (1.0 + fabs(fd)), "dye[%zu] = %g, fd %g", p, dye[p], fd);
    }
    /* Only one output requested. */
    float *dw2 = test_alloc(t * k * 4);
    CHECK(sg_moe_combine_backward_f32(ctx, t, k, d, f.rows, f.pos, NULL, 0, ye, d, g, d, dw2, k, NULL,
                                      0) == SG_OK,
          "%s", sg_context_error(ctx));
    CHECK(memcmp(dw, dw2, t * k * 4) == 0, "dweights alone differ");
    free(ye), free(g), free(y), free(dw), free(dye), free(dw2);
    free_route(&f);
    sg_context_destroy(ctx);
}

/* ---- kernels ---------------------------------------------------------- */

static double act_ref(sg_moe_activation act, double a, double b) {
    switch (act) {
    case SG_MOE_SWIGLU: return a / (1.0 + exp(-a)) * b;
    case SG_MOE_GELU_TANH: /* a/2 (1 + tanh u) = a sigmoid(2u), without the cancellation */
        return a / (1.0 + exp(-2.0 * 0.7978845608028654 * (a + 0.044715 * a * a * a)));
    case SG_MOE_GELU_ERF: return 0.5 * a * (1.0 + erf(a / sqrt(2.0)));
    }
    return NAN;
}

/* rowdot's out[i][j] = x_i . w_j against the double sum, within 1e-6 of
 * the sum of |terms|. */
static void check_rowdot(const char *name, size_t n, size_t m, size_t len, const float *x, size_t ldx,
                         const float *w, size_t ldw, const float *out, size_t ldo) {
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < m; j++) {
            double s = 0.0, sa = 0.0;
            for (size_t c = 0; c < len; c++) {
                s += (double)x[i * ldx + c] * w[j * ldw + c];
                sa += fabs((double)x[i * ldx + c] * w[j * ldw + c]);
            }
            CHECK(fabs(out[i * ldo + j] - s) <= 1e-6 * sa + 1e-30,
                  "%s rowdot n=%zu m=%zu len=%zu (%zu,%zu): %g vs %g", name, n, m, len, i, j,
                  out[i * ldo + j], s);
        }
}

TEST(moe_kernels_reference) {
    struct {
        const char *name;
        sg_isa isa;
        sg_moe_rowdot_fn *rowdot;
        sg_moe_act_fn *act;
    } ks[] = {
        {"ref", SG_ISA_REF, sg_moe_rowdot_f32__ref, sg_moe_act_f32__ref},
#if defined(__x86_64__)
        {"avx2", SG_ISA_AVX2, sg_moe_rowdot_f32__avx2, sg_moe_act_f32__avx2},
        {"avx512", SG_ISA_AVX512, sg_moe_rowdot_f32__avx512, sg_moe_act_f32__avx512},
#endif
    };
    test_rng r = test_rng_seed(14);
    const size_t lens[] = {1, 7, 15, 16, 17, 40, 129};
    for (size_t q = 0; q < sizeof ks / sizeof ks[0]; q++) {
        if (!sg_cpu_supports(ks[q].isa)) continue;
        for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++)
            for (size_t n = 1; n <= SG_MOE_SMALL_ROWS; n++) {
                size_t len = lens[li], m = 1 + (n * 3 + li) % 11, ldx = len + 3, ldw = len + 1,
                       ldo = m + 2;
                float *x = randn(n * ldx, 1.0, &r), *w = randn(m * ldw, 1.0, &r);
                float *out = test_alloc(n * ldo * 4);
                ks[q].rowdot(n, m, len, x, ldx, w, ldw, out, ldo, NULL, 0);
                check_rowdot(ks[q].name, n, m, len, x, ldx, w, ldw, out, ldo);
                free(x), free(w), free(out);
            }
        /* Activations: ordinary values, the far tails, NaN. */
        const size_t cnt = 53;
        float a[53], b[53], a0[53];
        for (size_t i = 0; i < cnt; i++) {
            a0[i] = (float)(test_normal(&r) * 4.0);
            b[i] = (float)test_normal(&r);
        }
        a0[0] = 100.0f, a0[1] = -100.0f, a0[2] = 1000.0f, a0[3] = -1000.0f, a0[4] = 0.0f;
        a0[5] = NAN, a0[6] = 20.0f, a0[7] = -20.0f;
        for (int act = 0; act <= SG_MOE_GELU_ERF; act++) {
            memcpy(a, a0, sizeof a);
            ks[q].act((sg_moe_activation)act, cnt, a, b);
            for (size_t i = 0; i < cnt; i++) {
                double ref = act_ref((sg_moe_activation)act, a0[i], b[i]);
                if (isnan(ref)) {
                    CHECK(isnan(a[i]), "%s act %d of NaN gives %g", ks[q].name, act, a[i]);
                    continue;
                }
                /* relative 1e-6, plus what exp does to the float rounding
                 * of its argument s (relative 2^-24 |s|: gelu-tanh forms s
                 * in float), or absolute 1e-30 |a| in the far tail */
                double s = act == SG_MOE_GELU_TANH
                               ? 1.5957691216057308 * (a0[i] + 0.044715 * pow(a0[i], 3.0)) : 0.0;
                CHECK(fabs(a[i] - ref) <= (1e-6 + 2e-7 * fabs(s)) * fabs(ref) + 1e-30 * fabs(a0[i]) + 1e-37,
                      "%s act %d (%g, %g): %.9g vs %.9g", ks[q].name, act, a0[i], b[i], a[i], ref);
            }
        }
    }
}

/* Long rows and many W rows: the kernels' software prefetch runs (it starts
 * 8 to 28 W rows ahead, inside the call's m rows or the `next` rows), with tails of len
 * and of m that are not multiples of the vector width or of the W block,
 * and row counts 1 to 32 in partial row groups. Same bound as above. */
TEST(moe_kernels_long_rows) {
    struct {
        const char *name;
        sg_isa isa;
        sg_moe_rowdot_fn *rowdot;
    } ks[] = {
        {"ref", SG_ISA_REF, sg_moe_rowdot_f32__ref},
#if defined(__x86_64__)
        {"avx2", SG_ISA_AVX2, sg_moe_rowdot_f32__avx2},
        {"avx512", SG_ISA_AVX512, sg_moe_rowdot_f32__avx512},
#endif
    };
    test_rng r = test_rng_seed(15);
    const size_t lens[] = {300, 1029}, ms[] = {45, 37}, ns[] = {1, 3, 4, 5, 8, 13, 16, 17, 31, 32};
    for (size_t q = 0; q < sizeof ks / sizeof ks[0]; q++) {
        if (!sg_cpu_supports(ks[q].isa)) continue;
        for (size_t li = 0; li < 2; li++)
            for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++) {
                size_t n = ns[ni], len = lens[li], m = ms[li], ldx = len + 5, ldw = len,
                       ldo = m + 1;
                if (test_quick && ni % 3) continue;
                /* 9 more rows after W: the `next` rows to prefetch (every other case) */
                float *x = randn(n * ldx, 1.0, &r), *w = randn((m + 9) * ldw, 1.0, &r);
                float *out = test_alloc(n * ldo * 4);
                ks[q].rowdot(n, m, len, x, ldx, w, ldw, out, ldo, ni % 2 ? w + m * ldw : NULL,
                             ni % 2 ? 9 : 0);
                check_rowdot(ks[q].name, n, m, len, x, ldx, w, ldw, out, ldo);
                free(x), free(w), free(out);
            }
    }
}

/* ---- the layer -------------------------------------------------------- */

typedef struct layer_fixture {
    sg_moe_layer l;
    sg_moe_ffn ffn[16];
    float *mem[48];
    size_t nmem;
} layer_fixture;

static float *lf_randn(layer_fixture *f, size_t count, double scale, test_rng *r) {
    return f->mem[f->nmem++] = randn(count, scale, r);
}

static void make_layer(layer_fixture *f, size_t d, size_t ff, size_t e, size_t k, size_t shared,
                       size_t fs, sg_moe_activation act, test_rng *r) {
    memset(f, 0, sizeof *f);
    f->l = (sg_moe_layer){.d = d, .f = ff, .experts = e, .k = k, .activation = act,
                          .expert = f->ffn, .shared_experts = shared, .f_shared = fs,
                          .shared = shared ? f->ffn + e : NULL};
    for (size_t i = 0; i < e + shared; i++) {
        size_t h = i < e || !fs ? ff : fs;
        f->ffn[i].w1 = lf_randn(f, h * d, 1.0 / sqrt((double)d), r);
        f->ffn[i].w3 = act == SG_MOE_SWIGLU ? lf_randn(f, h * d, 1.0 / sqrt((double)d), r) : NULL;
        f->ffn[i].w2 = lf_randn(f, d * h, 1.0 / sqrt((double)h), r);
    }
    f->l.router = lf_randn(f, e * d, 1.0, r);
}

static void free_layer(layer_fixture *f) {
    for (size_t i = 0; i < f->nmem; i++) free(f->mem[i]);
}

/* out[D] += scale * FFN(x) in double. */
static void ffn_ref(const sg_moe_layer *l, const sg_moe_ffn *w, size_t h, const float *x, double scale,
                    double *out) {
    double *hid = test_alloc(h * sizeof *hid);
    for (size_t j = 0; j < h; j++) {
        double a = 0.0, b = 0.0;
        for (size_t c = 0; c < l->d; c++) {
            a += (double)w->w1[j * l->d + c] * x[c];
            if (w->w3) b += (double)w->w3[j * l->d + c] * x[c];
        }
        hid[j] = act_ref(l->activation, a, b);
    }
    for (size_t c = 0; c < l->d; c++) {
        double s = 0.0;
        for (size_t j = 0; j < h; j++) s += (double)w->w2[c * h + j] * hid[j];
        out[c] += scale * s;
    }
    free(hid);
}

static void dense_ref(const sg_moe_layer *l, size_t t, const float *x, size_t ldx, const int32_t *ids,
                      const float *w, double *y) {
    memset(y, 0, t * l->d * sizeof *y);
    size_t fs = l->f_shared ? l->f_shared : l->f;
    for (size_t i = 0; i < t; i++) {
        for (size_t s = 0; s < l->shared_experts; s++)
            ffn_ref(l, &l->shared[s], fs, x + i * ldx, 1.0, y + i * l->d);
        for (size_t j = 0; j < l->k; j++)
            if (ids[i * l->k + j] >= 0)
                ffn_ref(l, &l->expert[ids[i * l->k + j]], l->f, x + i * ldx, w[i * l->k + j],
                        y + i * l->d);
    }
}

TEST(moe_layer_dense) {
    test_rng r = test_rng_seed(15);
    sg_context *ctx = test_context(2);
    const size_t ts[] = {1, 3, 17, 64, 150};
    const size_t d = 24, ff = 20, e = 5, k = 2, ldx = 27, ldy = 26;
    for (int act = 0; act <= SG_MOE_GELU_ERF; act++)
        for (size_t shared = 0; shared <= 2; shared += 2) {
            layer_fixture lf;
            make_layer(&lf, d, ff, e, k, shared, shared ? 12 : 0, (sg_moe_activation)act, &r);
            for (size_t ti = 0; ti < sizeof ts / sizeof ts[0]; ti++) {
                size_t t = ts[ti];
                if (test_quick && t > 17) continue;
                float *x = randn(t * ldx, 1.0, &r), *w = test_alloc(t * k * 4), *y = test_alloc(t * ldy * 4);
                int32_t *ids = test_alloc(t * k * 4);
                random_route(t, e, k, 0.1, &r, ids, w);
                for (size_t i = 0; i < t * ldy; i++) y[i] = -7.0f;
                CHECK(sg_moe_forward_routed_f32(ctx, &lf.l, t, x, ldx, ids, k, w, k, y, ldy) == SG_OK,
                      "%s", sg_context_error(ctx));
                double *ref = test_alloc(t * d * sizeof *ref);
                dense_ref(&lf.l, t, x, ldx, ids, w, ref);
                double worst = 0.0, norm = 0.0;
                for (size_t i = 0; i < t; i++) {
                    for (size_t c = 0; c < d; c++) {
                        worst = max_d(worst, fabs(y[i * ldy + c] - ref[i * d + c]));
                        norm = max_d(norm, fabs(ref[i * d + c]));
                    }
                    CHECK(y[i * ldy + d] == -7.0f && y[i * ldy + d + 1] == -7.0f,
                          "row %zu: written past D", i);
                }
                CHECK(worst <= 1e-5 * (1.0 + norm), "act %d shared %zu T %zu: error %g (max |y| %g)",
                      act, shared, t, worst, norm);
                free(x), free(w), free(y), free(ids), free(ref);
            }
            free_layer(&lf);
        }
    sg_context_destroy(ctx);
}

TEST(moe_layer_threads_identical) {
    test_rng r = test_rng_seed(16);
    const size_t d = 40, ff = 36, e = 6, k = 2;
    layer_fixture lf;
    make_layer(&lf, d, ff, e, k, 1, 0, SG_MOE_SWIGLU, &r);
    const size_t ts[] = {2, test_quick ? 30 : 90};
    for (size_t ti = 0; ti < 2; ti++) {
        size_t t = ts[ti];
        float *x = randn(t * d, 1.0, &r), *w = test_alloc(t * k * 4);
        int32_t *ids = test_alloc(t * k * 4);
        random_route(t, e, k, 0.05, &r, ids, w);
        x[d + 3] = NAN; /* token 1: its row goes NaN, the others must not */
        float *y[4];
        for (int th = 1; th <= 3; th++) {
            sg_context *ctx = test_context(th);
            y[th] = test_alloc(t * d * 4);
            CHECK(sg_moe_forward_routed_f32(ctx, &lf.l, t, x, d, ids, k, w, k, y[th], d) == SG_OK, "%s",
                  sg_context_error(ctx));
            sg_context_destroy(ctx);
        }
        for (int th = 2; th <= 3; th++)
            CHECK(memcmp(y[1], y[th], t * d * 4) == 0, "T %zu: %d threads differ from 1", t, th);
        int nan_elsewhere = 0, nan_row1 = 0;
        for (size_t i = 0; i < t * d; i++) {
            if (i / d == 1) nan_row1 |= isnan(y[1][i]);
            else nan_elsewhere |= isnan(y[1][i]);
        }
        CHECK(nan_row1 && !nan_elsewhere, "T %zu: NaN in token 1 %s", t,
              nan_row1 ? "leaked to other tokens" : "vanished");
        /* The caller's workspace: exactly enough works, one byte less fails. */
        sg_context *ctx = test_context(2);
        size_t bytes = sg_moe_workspace_bytes(&lf.l, t);
        CHECK(bytes > 0, "workspace size 0");
        char *buf = test_alloc(bytes);
        sg_context_set_workspace(ctx, buf, bytes);
        float *y2 = test_alloc(t * d * 4);
        CHECK(sg_moe_forward_routed_f32(ctx, &lf.l, t, x, d, ids, k, w, k, y2, d) == SG_OK, "%s",
              sg_context_error(ctx));
        CHECK(memcmp(y[1], y2, t * d * 4) == 0, "T %zu: caller workspace changes the result", t);
        sg_context_set_workspace(ctx, buf, bytes - 1);
        CHECK(sg_moe_forward_routed_f32(ctx, &lf.l, t, x, d, ids, k, w, k, y2, d) == SG_ERR_WORKSPACE,
              "a workspace one byte short is accepted");
        CHECK(strstr(sg_context_error(ctx), "workspace") != NULL, "message: %s", sg_context_error(ctx));
        sg_context_destroy(ctx);
        free(buf), free(y2), free(x), free(w), free(ids);
        for (int th = 1; th <= 3; th++) free(y[th]);
    }
    free_layer(&lf);
}

/* Several column blocks per unit, with tails: D = 300 and F = 70 (routed;
 * up blocks 64 + 6, down blocks widened to 256 + 44 because F < D / 3) or
 * F = 150 (shared; down blocks 128 + 128 + 44), few rows (the kernel) and
 * more than SG_MOE_SMALL_ROWS rows (sgemm); against the dense reference,
 * and bit-identical on 1, 2 and 3 threads. */
TEST(moe_layer_blocks) {
    test_rng r = test_rng_seed(21);
    const size_t d = 300, ff = 70, fs = 150, e = 3, k = 2;
    layer_fixture lf;
    make_layer(&lf, d, ff, e, k, 1, fs, SG_MOE_SWIGLU, &r);
    const size_t ts[] = {1, 5, test_quick ? 20 : 60};
    for (size_t ti = 0; ti < sizeof ts / sizeof ts[0]; ti++) {
        size_t t = ts[ti];
        float *x = randn(t * d, 1.0, &r), *w = test_alloc(t * k * 4);
        int32_t *ids = test_alloc(t * k * 4);
        random_route(t, e, k, 0.0, &r, ids, w);
        float *y[4];
        for (int th = 1; th <= 3; th++) {
            sg_context *ctx = test_context(th);
            y[th] = test_alloc(t * d * 4);
            CHECK(sg_moe_forward_routed_f32(ctx, &lf.l, t, x, d, ids, k, w, k, y[th], d) == SG_OK, "%s",
                  sg_context_error(ctx));
            sg_context_destroy(ctx);
        }
        for (int th = 2; th <= 3; th++)
            CHECK(memcmp(y[1], y[th], t * d * 4) == 0, "T %zu: %d threads differ from 1", t, th);
        double *ref = test_alloc(t * d * sizeof *ref), worst = 0.0, norm = 0.0;
        dense_ref(&lf.l, t, x, d, ids, w, ref);
        for (size_t i = 0; i < t * d; i++) {
            worst = max_d(worst, fabs(y[1][i] - ref[i]));
            norm = max_d(norm, fabs(ref[i]));
        }
        CHECK(worst <= 1e-5 * (1.0 + norm), "T %zu: error %g (max |y| %g)", t, worst, norm);
        free(x), free(w), free(ids), free(ref);
        for (int th = 1; th <= 3; th++) free(y[th]);
    }
    free_layer(&lf);
}

TEST(moe_layer_all_dropped) {
    test_rng r = test_rng_seed(19);
    sg_context *ctx = test_context(2);
    const size_t d = 16, ff = 12, e = 4, k = 2, t = 5;
    for (size_t shared = 0; shared <= 1; shared++) {
        layer_fixture lf;
        make_layer(&lf, d, ff, e, k, shared, 0, SG_MOE_SWIGLU, &r);
        float *x = randn(t * d, 1.0, &r), *y = randn(t * d, 1.0, &r), w[10];
        int32_t ids[10];
        for (size_t i = 0; i < t * k; i++) ids[i] = -1, w[i] = NAN; /* never read */
        CHECK(sg_moe_forward_routed_f32(ctx, &lf.l, t, x, d, ids, k, w, k, y, d) == SG_OK, "%s",
              sg_context_error(ctx));
        double *ref = test_alloc(t * d * sizeof *ref), err = 0.0;
        dense_ref(&lf.l, t, x, d, ids, w, ref);
        for (size_t i = 0; i < t * d; i++) {
            if (!shared) CHECK(y[i] == 0.0f, "no shared expert, all dropped: y[%zu] = %g", i, y[i]);
            err = max_d(err, fabs(y[i] - ref[i]));
        }
        CHECK(err < 1e-5, "shared %zu, all dropped: error %g", shared, err);
        free(x), free(y), free(ref);
        free_layer(&lf);
    }
    sg_context_destroy(ctx);
}

TEST(moe_layer_gated) {
    test_rng r = test_rng_seed(18);
    const size_t d = 20, ff = 12, e = 8, k = 2;
    const size_t ts[] = {1, 5, 70};
    layer_fixture lf;
    make_layer(&lf, d, ff, e, k, 1, 8, SG_MOE_SWIGLU, &r);
    for (size_t gi = 0; gi < 2; gi++) {
        sg_gate_config g = sg_gate_config_default(gi ? SG_GATE_SIGMOID_TOPK : SG_GATE_SOFTMAX_TOPK);
        g.k = k;
        g.renormalize = 1;
        if (gi) g.n_group = 4, g.topk_group = 2;
        for (size_t ti = 0; ti < 3; ti++) {
            size_t t = ts[ti];
            float *x = randn(t * d, 1.0, &r), *logits = test_alloc(t * e * 4), *w = test_alloc(t * k * 4);
            float *y[4], *w2 = test_alloc(t * k * 4), *y2 = test_alloc(t * d * 4);
            int32_t *ids = test_alloc(t * k * 4), *ids2 = test_alloc(t * k * 4);
            for (int th = 1; th <= 3; th += 2) {
                sg_context *ctx = test_context(th);
                y[th] = test_alloc(t * d * 4);
                CHECK(sg_moe_forward_f32(ctx, &lf.l, &g, t, x, d, y[th], d, logits, e, ids, k, w, k) ==
                          SG_OK,
                      "%s", sg_context_error(ctx));
                sg_context_destroy(ctx);
            }
            CHECK(memcmp(y[1], y[3], t * d * 4) == 0, "gate %zu T %zu: 3 threads differ from 1", gi, t);
            double worst = 0.0;
            for (size_t i = 0; i < t; i++)
                for (size_t j = 0; j < e; j++) {
                    double s = 0.0, sa = 0.0;
                    for (size_t c = 0; c < d; c++) {
                        s += (double)x[i * d + c] * lf.l.router[j * d + c];
                        sa += fabs((double)x[i * d + c] * lf.l.router[j * d + c]);
                    }
                    worst = max_d(worst, fabs(logits[i * e + j] - s) / (sa + 1e-30));
                }
            CHECK(worst < 1e-6, "gate %zu T %zu: logits error %g", gi, t, worst);
            sg_context *ctx = test_context(1);
            CHECK(sg_gate_f32(ctx, &g, t, e, logits, e, ids2, k, w2, k, NULL, 0) == SG_OK, "%s",
                  sg_context_error(ctx));
            CHECK(memcmp(ids, ids2, t * k * 4) == 0 && memcmp(w, w2, t * k * 4) == 0,
                  "gate %zu T %zu: routes differ from sg_gate_f32's", gi, t);
            CHECK(sg_moe_forward_routed_f32(ctx, &lf.l, t, x, d, ids, k, w, k, y2, d) == SG_OK, "%s",
                  sg_context_error(ctx));
            CHECK(memcmp(y[1], y2, t * d * 4) == 0, "gate %zu T %zu: y differs from the routed call", gi,
                  t);
            double *ref = test_alloc(t * d * sizeof *ref), err = 0.0, norm = 0.0;
            dense_ref(&lf.l, t, x, d, ids, w, ref);
            for (size_t i = 0; i < t * d; i++) {
                err = max_d(err, fabs(y[1][i] - ref[i]));
                norm = max_d(norm, fabs(ref[i]));
            }
            CHECK(err <= 1e-5 * (1.0 + norm), "gate %zu T %zu: error %g", gi, t, err);
            /* A NaN in x makes a NaN logit: the gate's argument error. */
            x[0] = NAN;
            CHECK(sg_moe_forward_f32(ctx, &lf.l, &g, t, x, d, y2, d, logits, e, ids, k, w, k) ==
                      SG_ERR_ARGUMENT,
                  "NaN token accepted");
            sg_context_destroy(ctx);
            free(x), free(logits), free(w), free(w2), free(y2), free(ids), free(ids2), free(ref);
            free(y[1]), free(y[3]);
        }
    }
    free_layer(&lf);
}

/* ---- argument errors -------------------------------------------------- */

static void expect(sg_context *ctx, sg_status got, sg_status want, const char *needle, int line) {
    if (got != want || !strstr(sg_context_error(ctx), needle))
        test_fail(__FILE__, line, "status %d (want %d), message \"%s\" (want \"%s\")", (int)got,
                  (int)want, sg_context_error(ctx), needle);
}
#define EXPECT(call, want, needle) expect(ctx, (call), (want), (needle), __LINE__)

TEST(moe_args_errors) {
    test_rng r = test_rng_seed(17);
    sg_context *ctx = test_context(1);
    const size_t d = 8, ff = 8, e = 4, k = 2, t = 3;
    layer_fixture lf;
    make_layer(&lf, d, ff, e, k, 1, 0, SG_MOE_SWIGLU, &r);
    float x[3 * 8] = {0}, y[3 * 8], w[6] = {1, 1, 1, 1, 1, 1};
    int32_t ids[6] = {0, 1, 2, 3, -1, 0}, off[5], order[6], pos[6];
    EXPECT(sg_moe_dispatch_plan(ctx, t, e, k, ids, k, off, order, pos), SG_OK, "");
    int32_t bad[6] = {0, 1, 2, 4, -1, 0};
    EXPECT(sg_moe_dispatch_plan(ctx, t, e, k, bad, k, off, order, pos), SG_ERR_ARGUMENT, "ids[1][1] = 4");
    bad[3] = -2;
    EXPECT(sg_moe_dispatch_plan(ctx, t, e, k, bad, k, off, order, pos), SG_ERR_ARGUMENT, "ids[1][1] = -2");
    EXPECT(sg_moe_dispatch_plan(ctx, t, e, k, ids, 1, off, order, pos), SG_ERR_SHAPE, "ids");
    EXPECT(sg_moe_dispatch_plan(ctx, t, e, k, ids, k, NULL, order, pos), SG_ERR_ARGUMENT, "offsets");
    EXPECT(sg_moe_dispatch_plan(ctx, t, e, k, ids, k, off, NULL, pos), SG_ERR_ARGUMENT, "order");
    EXPECT(sg_moe_dispatch_plan(ctx, t, 0, k, ids, k, off, order, pos), SG_ERR_ARGUMENT, "E");
    EXPECT(sg_moe_dispatch_plan(ctx, (size_t)1 << 30, e, 4, ids, 4, off, order, pos), SG_ERR_SHAPE,
           "INT32_MAX");
    float xe[6 * 8], ye[6 * 8] = {0};
    int32_t badorder[6] = {0, 1, 2, 3, 4, 6};
    EXPECT(sg_moe_gather_f32(ctx, t, k, d, 6, badorder, x, d, xe, d), SG_ERR_ARGUMENT, "order[5] = 6");
    EXPECT(sg_moe_gather_f32(ctx, t, k, d, 7, order, x, d, xe, d), SG_ERR_SHAPE, "rows");
    EXPECT(sg_moe_gather_f32(ctx, t, k, d, 5, order, NULL, d, xe, d), SG_ERR_ARGUMENT, "x is NULL");
    int32_t badpos[6] = {0, 1, 2, 3, -1, 5};
    EXPECT(sg_moe_combine_f32(ctx, t, k, d, 5, badpos, w, k, ye, d, y, d, 0), SG_ERR_ARGUMENT,
           "slot_pos[5] = 5");
    EXPECT(sg_moe_combine_f32(ctx, t, k, d, 5, pos, w, k, ye, d - 1, y, d, 0), SG_ERR_SHAPE, "ye");
    EXPECT(sg_moe_combine_f32(ctx, t, k, d, 5, pos, NULL, k, ye, d, y, d, 0), SG_ERR_ARGUMENT,
           "weights");
    EXPECT(sg_moe_combine_backward_f32(ctx, t, k, d, 5, pos, w, k, ye, d, y, d, NULL, 0, NULL, 0),
           SG_ERR_ARGUMENT, "both NULL");
    EXPECT(sg_moe_gather_backward_f32(ctx, t, k, d, 5, pos, ye, d, NULL, d, 0), SG_ERR_ARGUMENT, "dx");

    /* The layer. */
    sg_moe_layer l = lf.l;
    EXPECT(sg_moe_forward_routed_f32(ctx, NULL, t, x, d, ids, k, w, k, y, d), SG_ERR_ARGUMENT, "layer");
    l.k = 5;
    EXPECT(sg_moe_forward_routed_f32(ctx, &l, t, x, d, ids, k, w, k, y, d), SG_ERR_ARGUMENT, "k = 5");
    l = lf.l, l.d = 0;
    EXPECT(sg_moe_forward_routed_f32(ctx, &l, t, x, d, ids, k, w, k, y, d), SG_ERR_ARGUMENT, "must be > 0");
    l = lf.l, l.activation = (sg_moe_activation)7;
    EXPECT(sg_moe_forward_routed_f32(ctx, &l, t, x, d, ids, k, w, k, y, d), SG_ERR_ARGUMENT, "activation");
    sg_moe_ffn ffn[5];
    memcpy(ffn, lf.ffn, sizeof ffn);
    l = lf.l, l.expert = ffn, l.shared = ffn + 4;
    ffn[2].w3 = NULL;
    EXPECT(sg_moe_forward_routed_f32(ctx, &l, t, x, d, ids, k, w, k, y, d), SG_ERR_ARGUMENT,
           "expert[2].w3 is NULL");
    l.activation = SG_MOE_GELU_TANH; /* w3 is unused by GELU */
    EXPECT(sg_moe_forward_routed_f32(ctx, &l, t, x, d, ids, k, w, k, y, d), SG_OK, "");
    ffn[4].w2 = NULL;
    EXPECT(sg_moe_forward_routed_f32(ctx, &l, t, x, d, ids, k, w, k, y, d), SG_ERR_ARGUMENT,
           "shared[0].w2 is NULL");
    l = lf.l, l.shared = NULL;
    EXPECT(sg_moe_forward_routed_f32(ctx, &l, t, x, d, ids, k, w, k, y, d), SG_ERR_ARGUMENT, "shared");
    l = lf.l, l.expert = NULL;
    EXPECT(sg_moe_forward_routed_f32(ctx, &l, t, x, d, ids, k, w, k, y, d), SG_ERR_ARGUMENT, "expert");
    EXPECT(sg_moe_forward_routed_f32(ctx, &lf.l, t, x, d, bad, k, w, k, y, d), SG_ERR_ARGUMENT, "ids[1][1]");
    EXPECT(sg_moe_forward_routed_f32(ctx, &lf.l, t, x, d - 1, ids, k, w, k, y, d), SG_ERR_SHAPE, "x");
    EXPECT(sg_moe_forward_routed_f32(ctx, &lf.l, t, x, d, ids, k, w, k, NULL, d), SG_ERR_ARGUMENT, "y");
    EXPECT(sg_moe_forward_routed_f32(ctx, &lf.l, t, x, d, ids, k, NULL, k, y, d), SG_ERR_ARGUMENT,
           "weights");
    EXPECT(sg_moe_forward_routed_f32(ctx, &lf.l, 0, NULL, d, NULL, k, NULL, k, NULL, d), SG_OK, "");
    sg_gate_config g = sg_gate_config_default(SG_GATE_SOFTMAX_TOPK);
    float logits[3 * 4];
    g.k = 3;
    EXPECT(sg_moe_forward_f32(ctx, &lf.l, &g, t, x, d, y, d, logits, e, ids, k, w, k), SG_ERR_ARGUMENT,
           "gate->k = 3");
    g.k = 2;
    EXPECT(sg_moe_forward_f32(ctx, &lf.l, NULL, t, x, d, y, d, logits, e, ids, k, w, k),
           SG_ERR_ARGUMENT, "gate is NULL");
    EXPECT(sg_moe_forward_f32(ctx, &lf.l, &g, t, x, d, y, d, logits, e - 1, ids, k, w, k), SG_ERR_SHAPE,
           "logits");
    l = lf.l, l.router = NULL;
    EXPECT(sg_moe_forward_f32(ctx, &l, &g, t, x, d, y, d, logits, e, ids, k, w, k), SG_ERR_ARGUMENT,
           "router");
    EXPECT(sg_moe_forward_f32(ctx, &lf.l, &g, t, x, d, y, d, logits, e, ids, k, w, k), SG_OK, "");
    CHECK(sg_moe_workspace_bytes(NULL, 4) == 0 && sg_moe_workspace_bytes(&l, 4) > 0, "workspace bytes");
    free_layer(&lf);
    sg_context_destroy(ctx);
}

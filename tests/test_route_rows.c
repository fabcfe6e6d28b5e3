/*
 * test_route_rows.c - route.topk_rows (the renormalized softmax-top-k on
 * blocks of up to 16 rows) against a straightforward selection and
 * double-precision weights written here, for every kernel compiled in
 * whose ISA the CPU has; and the gates that use it (softmax-top-k
 * renormalized, top-k-then-softmax) on many rows against the same gates
 * called one row at a time (the row-by-row path): tails of 1..16 rows,
 * E around the 16-expert blocks, ties, +-inf, -0/+0, rows of -inf, fewer
 * than K finite logits, NaN rows (the lowest named), strides, temperature
 * and routed scale.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "route/route_kernels.h"
#include "test.h"

/* Repeatedly the largest remaining key, the lowest index among equals
 * (compared in double: -0 == +0). */
static void naive_topk(const float *key, size_t n, size_t k, int32_t *ids) {
    unsigned char used[512] = {0};
    for (size_t l = 0; l < k; l++) {
        size_t best = n;
        for (size_t i = 0; i < n; i++) {
            if (used[i]) continue;
            if (best == n || (double)key[i] > (double)key[best]) best = i;
        }
        used[best] = 1;
        ids[l] = (int32_t)best;
    }
}

/* A row of one of 10 kinds; kind 6 has a NaN. */
static void fill_kind(test_rng *r, int kind, float *x, size_t e, size_t k) {
    const size_t at = (size_t)(test_uniform(r) * (double)e) % e;
    for (size_t i = 0; i < e; i++) {
        const double u = test_uniform(r);
        switch (kind) {
        case 0: x[i] = (float)(2.0 * test_normal(r)); break;
        case 1: x[i] = (float)(int)(u * 4.0); break; /* ties */
        case 2: x[i] = u < 0.1 ? INFINITY : u < 0.3 ? -INFINITY : u < 0.45 ? 0.0f : u < 0.6 ? -0.0f
                                                                               : (float)test_normal(r);
            break;
        case 3: x[i] = 0.5f; break; /* all tied */
        case 4: x[i] = -INFINITY; break;
        case 5: x[i] = (float)i * 1e-3f; break; /* ascending */
        case 6: x[i] = (float)test_normal(r); break;
        case 7: x[i] = (float)(100.0 * test_normal(r)); break; /* weights below FLT_MIN */
        case 8: x[i] = -INFINITY; break;
        default: x[i] = u < 0.5 ? -0.0f : 0.0f; break; /* signed zeros only */
        }
    }
    if (kind == 6) x[at] = NAN;
    if (kind == 8) /* k - 1 finite logits: the k-th largest is -inf */
        for (size_t i = 0; i + 1 < k; i++) x[(at + 3 * i) % e] = (float)test_normal(r);
    if (kind == 0 && test_uniform(r) < 0.3) x[at] = INFINITY; /* one +inf */
}

TEST(route_topk_rows_kernels_reference) {
    size_t count;
    const sg_route_kernel_entry *ents = sg_route_kernel_entries(&count);
    test_rng r = test_rng_seed(4242);
    static const size_t es[] = {1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 48, 64, 65, 100, 256};
    const size_t ldx_pad = 5, ldo = 19;
    float *x = malloc(16 * (256 + ldx_pad) * sizeof *x), *w = malloc(16 * ldo * sizeof *w);
    int32_t *ids = malloc(16 * ldo * sizeof *ids), want[16];
    int kinds[16];
    size_t tested = 0;
    const size_t step = test_quick ? 3 : 1;
    for (size_t en = 0; en < count; en++) {
        if (!sg_cpu_supports(ents[en].isa) || ents[en].slot != SG_ROUTE_SLOT_topk_rows) continue;
        sg_route_topk_rows_fn *fn = (sg_route_topk_rows_fn *)ents[en].fn;
        tested++;
        int bad = 0;
        for (size_t ei = 0; ei < sizeof es / sizeof es[0] && !bad; ei++) {
            const size_t e = es[ei], ldx = e + (ei & 1 ? ldx_pad : 0);
            for (size_t k = 1; k <= 16 && k <= e && !bad; k += (k < 9 ? 1 : 7)) {
                for (size_t n = 1; n <= 16 && !bad; n += step) {
                    const float c = n & 1 ? 1.0f : 0.7f, a = n & 2 ? 2.5f : 1.0f;
                    for (size_t q = 0; q < n; q++) {
                        /* mostly ordinary rows, every special kind often */
                        kinds[q] = test_uniform(&r) < 0.5 ? 0 : (int)(test_uniform(&r) * 10.0) % 10;
                        fill_kind(&r, kinds[q], x + q * ldx, e, k);
                    }
                    for (size_t q = 0; q < 16 * ldo; q++) ids[q] = -7, w[q] = -7.0f;
                    const uint32_t left = fn(n, e, k, x, ldx, c, a, ids, ldo, w, ldo);
                    CHECK(left >> n == 0, "%s: mask 0x%x beyond n = %zu", ents[en].name, left, n);
                    for (size_t q = 0; q < n && !bad; q++) {
                        const float *xr = x + q * ldx;
                        int nan = 0;
                        for (size_t i = 0; i < e; i++) nan |= xr[i] != xr[i];
                        int exp_left = nan;
                        if (!nan) {
                            naive_topk(xr, e, k, want);
                            exp_left = xr[want[0]] == INFINITY || xr[want[k - 1]] == -INFINITY;
                        }
                        const int got_left = (int)(left >> q & 1);
                        CHECK(got_left == exp_left, "%s e=%zu k=%zu n=%zu row %zu kind %d: left %d, want %d",
                              ents[en].name, e, k, n, q, kinds[q], got_left, exp_left);
                        if (got_left != exp_left) {
                            bad = 1;
                            break;
                        }
                        if (exp_left) {
                            for (size_t l = 0; l < k; l++)
                                CHECK(ids[q * ldo + l] == -7 && w[q * ldo + l] == -7.0f,
                                      "%s e=%zu k=%zu row %zu: a row left was written", ents[en].name, e, k, q);
                            continue;
                        }
                        double ex[16], s = 0.0;
                        for (size_t l = 0; l < k; l++) {
                            const float t = (float)(((double)xr[want[l]] - (double)xr[want[0]]) * (double)c);
                            s += ex[l] = exp((double)t);
                        }
                        for (size_t l = 0; l < k && !bad; l++) {
                            const double wt = (double)a * ex[l] / s, got = w[q * ldo + l];
                            if (ids[q * ldo + l] != want[l] || !(fabs(got - wt) <= 2e-6 * wt + 1e-37)) bad = 1;
                            CHECK(!bad, "%s e=%zu k=%zu n=%zu row %zu kind %d slot %zu: id %d w %.9g, want %d %.9g",
                                  ents[en].name, e, k, n, q, kinds[q], l, ids[q * ldo + l], got, want[l], wt);
                        }
                        CHECK(ids[q * ldo + k] == -7 && w[q * ldo + k] == -7.0f, "%s: wrote past k", ents[en].name);
                    }
                    for (size_t q = n; q < 16; q++)
                        CHECK(ids[q * ldo] == -7 && w[q * ldo] == -7.0f, "%s: wrote row %zu >= n = %zu",
                              ents[en].name, q, n);
                }
            }
        }
    }
    CHECK(tested >= 1, "no topk_rows kernel tested");
    CHECK(sg_route_kernels_get()->topk_rows != NULL, "no topk_rows kernel installed");
    free(x), free(w), free(ids);
}

/* The gates on T rows at once (the blocks of topk_rows, and the rows it
 * leaves) against the same gate one row at a time (always the row path). */
TEST(route_softmax_topk_rows_gate) {
    sg_context *ctx = test_context(1), *ctx3 = test_context(3);
    test_rng r = test_rng_seed(99);
    static const size_t es[] = {8, 16, 17, 64, 100, 256};
    static const size_t ks[] = {1, 2, 6, 8};
    static const size_t ts[] = {2, 5, 16, 23, 40, 150};
    const size_t tmax = 150, emax = 256, ldx = emax + 3, ldo = 11;
    float *x = malloc(tmax * ldx * sizeof *x), *w = malloc(tmax * ldo * sizeof *w), w1[16];
    float *w3 = malloc(tmax * ldo * sizeof *w3), *wp = malloc(tmax * ldo * sizeof *wp);
    float *probs = malloc(tmax * emax * sizeof *probs);
    int32_t *ids = malloc(tmax * ldo * sizeof *ids), id1[16];
    int32_t *ids3 = malloc(tmax * ldo * sizeof *ids3), *idsp = malloc(tmax * ldo * sizeof *idsp);
    for (size_t ei = 0; ei < sizeof es / sizeof es[0]; ei++)
        for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++)
            for (size_t ti = 0; ti < sizeof ts / sizeof ts[0]; ti++) {
                const size_t e = es[ei], k = ks[ki], t = ts[ti];
                if (k > e || (test_quick && ti % 2)) continue;
                sg_gate_config cfg = sg_gate_config_default(ti % 2 ? SG_GATE_TOPK_SOFTMAX : SG_GATE_SOFTMAX_TOPK);
                cfg.k = k, cfg.renormalize = 1;
                cfg.temperature = ki % 2 ? 0.7f : 1.0f;
                cfg.routed_scale = ei % 2 ? 2.5f : 1.0f;
                for (size_t q = 0; q < t; q++) {
                    int kind = test_uniform(&r) < 0.6 ? 0 : (int)(test_uniform(&r) * 10.0) % 10;
                    if (kind == 6) kind = 1; /* no NaN here */
                    fill_kind(&r, kind, x + q * ldx, e, k);
                }
                sg_status st = sg_gate_f32(ctx, &cfg, t, e, x, ldx, ids, ldo, w, ldo, NULL, 0);
                CHECK(st == SG_OK, "e=%zu k=%zu t=%zu: %s", e, k, t, sg_context_error(ctx));
                /* 3 threads (blocks split differently) and the same call with
                 * probs (the row path, never the fused one): the same bits */
                st = sg_gate_f32(ctx3, &cfg, t, e, x, ldx, ids3, ldo, w3, ldo, NULL, 0);
                CHECK(st == SG_OK, "e=%zu k=%zu t=%zu, 3 threads: %s", e, k, t, sg_context_error(ctx3));
                st = sg_gate_f32(ctx, &cfg, t, e, x, ldx, idsp, ldo, wp, ldo, probs, e);
                CHECK(st == SG_OK, "e=%zu k=%zu t=%zu, with probs: %s", e, k, t, sg_context_error(ctx));
                for (size_t q = 0; q < t; q++) {
                    const size_t o = q * ldo;
                    CHECK(!memcmp(ids + o, ids3 + o, k * sizeof *ids) && !memcmp(w + o, w3 + o, k * sizeof *w),
                          "e=%zu k=%zu t=%zu row %zu: 1 and 3 threads differ", e, k, t, q);
                    CHECK(!memcmp(ids + o, idsp + o, k * sizeof *ids) && !memcmp(w + o, wp + o, k * sizeof *w),
                          "e=%zu k=%zu t=%zu row %zu: with and without probs differ", e, k, t, q);
                }
                int bad = 0;
                for (size_t q = 0; q < t && !bad; q++) {
                    st = sg_gate_f32(ctx, &cfg, 1, e, x + q * ldx, ldx, id1, k, w1, k, NULL, 0);
                    for (size_t l = 0; l < k && !bad; l++) {
                        const double got = w[q * ldo + l], want = w1[l];
                        /* every path gives the same weights bit for bit (results
                         * may not depend on how rows fall into blocks) */
                        bad = ids[q * ldo + l] != id1[l] || memcmp(&w[q * ldo + l], &w1[l], sizeof(float)) != 0;
                        CHECK(!bad, "e=%zu k=%zu t=%zu row %zu slot %zu: id %d w %.9g, one row at a time %d %.9g",
                              e, k, t, q, l, ids[q * ldo + l], got, id1[l], want);
                    }
                }
            }
    /* NaN rows: the lowest one named, whichever block it falls in */
    static const size_t nan_rows[][2] = {{0, 3}, {5, 17}, {15, 16}, {16, 30}, {22, 39}, {39, 39}};
    for (size_t c = 0; c < sizeof nan_rows / sizeof nan_rows[0]; c++) {
        const size_t e = c % 2 ? 64 : 8;
        sg_gate_config cfg = sg_gate_config_default(SG_GATE_SOFTMAX_TOPK);
        cfg.k = e == 64 ? 6 : 2, cfg.renormalize = 1;
        for (size_t q = 0; q < tmax; q++) fill_kind(&r, 0, x + q * ldx, e, cfg.k);
        x[nan_rows[c][0] * ldx + c % e] = NAN;
        x[nan_rows[c][1] * ldx + (c + 3) % e] = NAN;
        sg_status st = sg_gate_f32(ctx, &cfg, tmax, e, x, ldx, ids, ldo, w, ldo, NULL, 0);
        char want[32];
        snprintf(want, sizeof want, "token %zu ", nan_rows[c][0]);
        CHECK(st == SG_ERR_ARGUMENT && strstr(sg_context_error(ctx), want), "NaN rows %zu, %zu (e=%zu): %d '%s'",
              nan_rows[c][0], nan_rows[c][1], e, (int)st, sg_context_error(ctx));
    }
    free(x), free(w), free(ids), free(w3), free(wp), free(probs), free(ids3), free(idsp);
    sg_context_destroy(ctx), sg_context_destroy(ctx3);
}

/* route.top1 (Switch's gate: softmax-top-1, not renormalized), every
 * kernel compiled in whose ISA the CPU has: the first maximum, weight
 * a / sum_i exp(c (x_i - max)) within 2e-6 relative of the double sum, the
 * rows with a NaN or a +-inf maximum left (the first one's index
 * returned, nothing written for it), and every kernel's bits equal to the
 * reference's (both use the softmax core's expsum of this ISA level). */
TEST(route_top1_kernels_reference) {
    size_t count;
    const sg_route_kernel_entry *ents = sg_route_kernel_entries(&count);
    test_rng r = test_rng_seed(777);
    static const size_t es[] = {1, 7, 16, 17, 31, 32, 33, 64, 65, 100, 129, 256, 300};
    const size_t ldx_pad = 3, ldo = 5, nmax = 24;
    float *x = malloc(nmax * (300 + ldx_pad) * sizeof *x), *w = malloc(nmax * ldo * sizeof *w);
    float *wr = malloc(nmax * ldo * sizeof *wr);
    int32_t *ids = malloc(nmax * ldo * sizeof *ids), *idr = malloc(nmax * ldo * sizeof *idr), want[1];
    size_t tested = 0;
    for (size_t en = 0; en < count; en++) {
        if (!sg_cpu_supports(ents[en].isa) || ents[en].slot != SG_ROUTE_SLOT_top1) continue;
        sg_route_top1_fn *fn = (sg_route_top1_fn *)ents[en].fn;
        tested++;
        int bad = 0;
        for (size_t ei = 0; ei < sizeof es / sizeof es[0] && !bad; ei++) {
            const size_t e = es[ei], ldx = e + (ei & 1 ? ldx_pad : 0);
            for (size_t n = 1; n <= nmax && !bad; n += test_quick ? 7 : 3) {
                const float c = n & 1 ? 1.0f : 0.7f, a = n & 2 ? 2.5f : 1.0f;
                for (size_t q = 0; q < n; q++) {
                    const int kind = test_uniform(&r) < 0.7 ? 0 : (int)(test_uniform(&r) * 10.0) % 10;
                    fill_kind(&r, kind, x + q * ldx, e, 1);
                }
                for (size_t q = 0; q < nmax * ldo; q++) ids[q] = idr[q] = -7, w[q] = wr[q] = -7.0f;
                const size_t done = fn(n, e, x, ldx, c, a, ids, ldo, w, ldo);
                const size_t done_ref = sg_route_top1__ref(n, e, x, ldx, c, a, idr, ldo, wr, ldo);
                CHECK(done == done_ref, "%s e=%zu n=%zu: %zu rows done, reference %zu", ents[en].name, e, n, done,
                      done_ref);
                CHECK(!memcmp(ids, idr, nmax * ldo * sizeof *ids) && !memcmp(w, wr, nmax * ldo * sizeof *w),
                      "%s e=%zu n=%zu: not the reference's bits", ents[en].name, e, n);
                for (size_t q = 0; q <= done && q < n && !bad; q++) {
                    const float *xr = x + q * ldx;
                    int nan = 0;
                    for (size_t i = 0; i < e; i++) nan |= xr[i] != xr[i];
                    if (!nan) naive_topk(xr, e, 1, want);
                    const int leave = nan || !(fabsf(xr[want[0]]) < INFINITY);
                    if (q == done) { /* the row it stopped at */
                        bad = !leave || ids[q * ldo] != -7 || w[q * ldo] != -7.0f;
                        CHECK(!bad, "%s e=%zu n=%zu: stopped at row %zu (leave %d) or wrote it", ents[en].name, e, n,
                              q, leave);
                        break;
                    }
                    double s = 0.0;
                    for (size_t i = 0; i < e; i++) s += exp(((double)xr[i] - (double)xr[want[0]]) * (double)c);
                    const double wt = (double)a / s, got = w[q * ldo];
                    bad = leave || ids[q * ldo] != want[0] || !(fabs(got - wt) <= 2e-6 * wt);
                    CHECK(!bad, "%s e=%zu n=%zu row %zu: id %d w %.9g, want %d %.9g (leave %d)", ents[en].name, e, n,
                          q, ids[q * ldo], got, want[0], wt, leave);
                }
                for (size_t q = done < n ? done + 1 : n; q < nmax; q++)
                    CHECK(ids[q * ldo] == -7 && w[q * ldo] == -7.0f, "%s: wrote row %zu past the stop",
                          ents[en].name, q);
            }
        }
    }
    CHECK(tested >= 1, "no top1 kernel tested");
    CHECK(sg_route_kernels_get()->top1 != NULL, "no top1 kernel installed");
    free(x), free(w), free(wr), free(ids), free(idr);
}

/* Switch's gate on T rows (route.top1 from 17 experts, the short rows'
 * lse way below) against the same gate one row at a time and on 3
 * threads, bit for bit; beyond the short rows also against the call with
 * probs (the row path); weights within 2e-6 of the double formula; the
 * lowest NaN row named. K = 2 without renormalizing rides along. */
TEST(route_switch_top1_gate) {
    sg_context *ctx = test_context(1), *ctx3 = test_context(3);
    test_rng r = test_rng_seed(31);
    static const size_t es[] = {8, 16, 17, 64, 100, 129, 256, 300};
    static const size_t ts[] = {1, 5, 16, 23, 70, 150};
    const size_t tmax = 150, emax = 300, ldx = emax + 3, ldo = 3;
    float *x = malloc(tmax * ldx * sizeof *x), *w = malloc(tmax * ldo * sizeof *w), w1[2];
    float *w3 = malloc(tmax * ldo * sizeof *w3), *wp = malloc(tmax * ldo * sizeof *wp);
    float *probs = malloc(tmax * emax * sizeof *probs);
    int32_t *ids = malloc(tmax * ldo * sizeof *ids), id1[2];
    int32_t *ids3 = malloc(tmax * ldo * sizeof *ids3), *idsp = malloc(tmax * ldo * sizeof *idsp);
    const size_t short_max = sg_kernels_get()->softmax_short_max_n;
    for (size_t ei = 0; ei < sizeof es / sizeof es[0]; ei++)
        for (size_t k = 1; k <= 2; k++)
            for (size_t ti = 0; ti < sizeof ts / sizeof ts[0]; ti++) {
                const size_t e = es[ei], t = ts[ti];
                if (test_quick && ti % 2) continue;
                sg_gate_config cfg = sg_gate_config_default(SG_GATE_SOFTMAX_TOPK);
                cfg.k = k, cfg.renormalize = 0;
                cfg.temperature = ti % 2 ? 0.7f : 1.0f;
                cfg.routed_scale = ei % 2 ? 2.5f : 1.0f;
                for (size_t q = 0; q < t; q++) {
                    int kind = test_uniform(&r) < 0.6 ? 0 : (int)(test_uniform(&r) * 10.0) % 10;
                    if (kind == 6) kind = 1; /* no NaN here */
                    fill_kind(&r, kind, x + q * ldx, e, k);
                }
                sg_status st = sg_gate_f32(ctx, &cfg, t, e, x, ldx, ids, ldo, w, ldo, NULL, 0);
                CHECK(st == SG_OK, "e=%zu k=%zu t=%zu: %s", e, k, t, sg_context_error(ctx));
                st = sg_gate_f32(ctx3, &cfg, t, e, x, ldx, ids3, ldo, w3, ldo, NULL, 0);
                CHECK(st == SG_OK, "e=%zu k=%zu t=%zu, 3 threads: %s", e, k, t, sg_context_error(ctx3));
                st = sg_gate_f32(ctx, &cfg, t, e, x, ldx, idsp, ldo, wp, ldo, probs, e);
                CHECK(st == SG_OK, "e=%zu k=%zu t=%zu, with probs: %s", e, k, t, sg_context_error(ctx));
                int bad = 0;
                for (size_t q = 0; q < t && !bad; q++) {
                    const size_t o = q * ldo;
                    const float *xr = x + q * ldx;
                    bad = memcmp(ids + o, ids3 + o, k * sizeof *ids) || memcmp(w + o, w3 + o, k * sizeof *w);
                    CHECK(!bad, "e=%zu k=%zu t=%zu row %zu: 1 and 3 threads differ", e, k, t, q);
                    bad = (k == 1 ? e > 16 : e > short_max) && /* route.top1 from 17 experts (gate_topk.c) */
                          (memcmp(ids + o, idsp + o, k * sizeof *ids) || memcmp(w + o, wp + o, k * sizeof *w));
                    CHECK(!bad, "e=%zu k=%zu t=%zu row %zu: with and without probs differ", e, k, t, q);
                    st = sg_gate_f32(ctx, &cfg, 1, e, xr, ldx, id1, k, w1, k, NULL, 0);
                    bad = st != SG_OK || memcmp(ids + o, id1, k * sizeof *ids) || memcmp(w + o, w1, k * sizeof *w);
                    CHECK(!bad, "e=%zu k=%zu t=%zu row %zu: one row at a time differs", e, k, t, q);
                    int32_t want[2];
                    naive_topk(xr, e, k, want);
                    const double mx = xr[want[0]];
                    if (!(fabs(mx) < INFINITY)) continue; /* the special rows: the row path's table */
                    double s = 0.0;
                    for (size_t i = 0; i < e; i++) s += exp(((double)xr[i] - mx) * (double)(1.0f / cfg.temperature));
                    for (size_t l = 0; l < k && !bad; l++) {
                        const double wt = (double)cfg.routed_scale *
                                          exp(((double)xr[want[l]] - mx) * (double)(1.0f / cfg.temperature)) / s;
                        bad = ids[o + l] != want[l] || !(fabs(w[o + l] - wt) <= 2e-6 * wt + 1e-37);
                        CHECK(!bad, "e=%zu k=%zu t=%zu row %zu slot %zu: id %d w %.9g, want %d %.9g", e, k, t, q, l,
                              ids[o + l], (double)w[o + l], want[l], wt);
                    }
                }
            }
    static const size_t nan_rows[][2] = {{0, 3}, {5, 17}, {15, 16}, {16, 30}, {22, 39}, {39, 39}};
    for (size_t c = 0; c < sizeof nan_rows / sizeof nan_rows[0]; c++) {
        const size_t e = es[c % (sizeof es / sizeof es[0])];
        sg_gate_config cfg = sg_gate_config_default(SG_GATE_SOFTMAX_TOPK);
        cfg.k = 1, cfg.renormalize = 0;
        for (size_t q = 0; q < tmax; q++) fill_kind(&r, 0, x + q * ldx, e, 1);
        x[nan_rows[c][0] * ldx + c % e] = NAN;
        x[nan_rows[c][1] * ldx + (c + 3) % e] = NAN;
        sg_status st = sg_gate_f32(ctx, &cfg, tmax, e, x, ldx, ids, ldo, w, ldo, NULL, 0);
        char want[32];
        snprintf(want, sizeof want, "token %zu ", nan_rows[c][0]);
        CHECK(st == SG_ERR_ARGUMENT && strstr(sg_context_error(ctx), want), "NaN rows %zu, %zu (e=%zu): %d '%s'",
              nan_rows[c][0], nan_rows[c][1], e, (int)st, sg_context_error(ctx));
    }
    free(x), free(w), free(ids), free(w3), free(wp), free(probs), free(ids3), free(idsp);
    sg_context_destroy(ctx), sg_context_destroy(ctx3);
}

/*
 * test_route_kernels.c - the routers' top-k selection kernels (every one
 * compiled in whose ISA the CPU has, whatever SOFTGATE_ISA says) against a
 * straightforward selection written here: repeatedly the largest
 * remaining key, the lowest index among equals. Rows of n = 1..300 (around
 * the 8/16/32-key tiles) and a few past the stack limit, k = 1..20, with
 * random keys, many ties (few distinct values), +-inf, -0/+0, and rows
 * built to defeat the candidate threshold.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "route/route_kernels.h"
#include "test.h"

static void reference_topk(const float *key, size_t n, size_t k, int32_t *ids) {
    unsigned char *used = calloc(n, 1);
    for (size_t l = 0; l < k; l++) {
        size_t best = n;
        for (size_t i = 0; i < n; i++) {
            if (used[i]) continue;
            if (best == n || (double)key[i] > (double)key[best]) best = i;
        }
        used[best] = 1;
        ids[l] = (int32_t)best;
    }
    free(used);
}

static void fill_row(test_rng *r, int kind, float *key, size_t n) {
    for (size_t i = 0; i < n; i++) {
        switch (kind) {
        case 0: key[i] = (float)test_normal(r); break;
        case 1: key[i] = (float)(int)(test_uniform(r) * 4.0); break; /* ties */
        case 2: { /* +-inf and signed zeros among normals */
            double u = test_uniform(r);
            key[i] = u < 0.1 ? INFINITY : u < 0.3 ? -INFINITY : u < 0.4 ? 0.0f : u < 0.5 ? -0.0f
                                                                              : (float)test_normal(r);
            break;
        }
        case 3: key[i] = 1.0f; break; /* all tied */
        case 4: key[i] = -INFINITY; break;
        default: key[i] = (float)i * 1e-3f; break; /* ascending: largest last */
        }
    }
}

TEST(route_topk_kernels_reference) {
    size_t count;
    const sg_route_kernel_entry *ents = sg_route_kernel_entries(&count);
    test_rng r = test_rng_seed(77);
    const size_t nmax = 1100;
    float *key = malloc(nmax * sizeof *key), top[32];
    int32_t ids[32], want[32];
    const size_t extra[] = {511, 512, 1023, 1024, 1025, 1100};
    const size_t step = test_quick ? 7 : 1;
    size_t tested = 0;
    for (size_t e = 0; e < count; e++) {
        if (!sg_cpu_supports(ents[e].isa) || ents[e].slot != SG_ROUTE_SLOT_topk) continue;
        sg_route_topk_fn *fn = (sg_route_topk_fn *)ents[e].fn;
        tested++;
        for (size_t t = 0; t < 300 / step + 6; t++) {
            const size_t n = t < 300 / step ? 1 + t * step : extra[t - 300 / step];
            for (int kind = 0; kind < 6; kind++) {
                for (size_t k = 1; k <= 20 && k <= n; k += (k < 10 ? 1 : 5)) {
                    fill_row(&r, kind, key, n);
                    reference_topk(key, n, k, want);
                    memset(ids, 0xff, sizeof ids);
                    fn(key, n, k, ids, top);
                    int same = 1;
                    for (size_t l = 0; l < k; l++)
                        same &= ids[l] == want[l] && ids[l] >= 0 &&
                                memcmp(&top[l], &key[want[l]], sizeof(float)) == 0;
                    CHECK(same, "%s n=%zu k=%zu kind=%d: id[0]=%d want %d, id[k-1]=%d want %d",
                          ents[e].name, n, k, kind, ids[0], want[0], ids[k - 1], want[k - 1]);
                    if (!same) goto done;
                }
            }
        }
    }
done:
    CHECK(tested >= 1, "no top-k kernel tested");
    CHECK(sg_route_kernels_get()->topk != NULL, "no top-k kernel installed");
    free(key);
}

/* ---- expert choice kernels ------------------------------------------------ */

/* Logits with ties (few distinct values), -inf entries, or normals. */
static void fill_logits(test_rng *r, int kind, float *x, size_t n) {
    for (size_t i = 0; i < n; i++) {
        const double u = test_uniform(r);
        if (kind == 1) x[i] = (float)(int)(u * 3.0);
        else if (kind == 2 && u < 0.2) x[i] = -INFINITY;
        else x[i] = (float)test_normal(r);
    }
}

static double ec_key(const float *x, size_t ldx, const double *lse, double inv, size_t r, size_t i) {
    return (double)x[r * ldx + i] * inv - lse[r];
}

/* The c best (key desc, lower token first) of expert i among tokens whose
 * key is > -inf and >= lo: ids[0..m), m returned. */
static size_t ref_ec_top(const float *x, size_t ldx, const double *lse, double inv, size_t t, size_t i,
                         size_t c, double lo, int32_t *ids) {
    unsigned char used[1024] = {0};
    size_t m = 0;
    for (; m < c; m++) {
        long best = -1;
        for (size_t r = 0; r < t; r++) {
            const double v = ec_key(x, ldx, lse, inv, r, i);
            if (used[r] || !(v > -INFINITY) || v < lo) continue;
            if (best < 0 || v > ec_key(x, ldx, lse, inv, (size_t)best, i)) best = (long)r;
        }
        if (best < 0) break;
        used[best] = 1;
        ids[m] = (int32_t)best;
    }
    return m;
}

TEST(route_ec_kernels_reference) {
    size_t count;
    const sg_route_kernel_entry *ents = sg_route_kernel_entries(&count);
    test_rng rng = test_rng_seed(91);
    const size_t tmax = 300, emax = 40, cmax = 20;
    float *x = malloc(tmax * (emax + 3) * sizeof *x), kf[64 * 20];
    double *lse = malloc(tmax * sizeof *lse), *bk = malloc(cmax * 48 * sizeof *bk);
    int32_t *bt = malloc(cmax * 48 * sizeof *bt), tok[64 * 20], want[32];
    double *ck = malloc(emax * 600 * sizeof *ck), sk[600], thr[48], out[48];
    int32_t *ct = malloc(emax * 600 * sizeof *ct), st[600];
    uint32_t cnt[48];
    size_t tested = 0;
    for (size_t en = 0; en < count; en++) {
        if (!sg_cpu_supports(ents[en].isa)) continue;
        tested++;
        const enum sg_route_slot slot = ents[en].slot;
        for (int trial = 0; trial < (test_quick ? 12 : 40); trial++) {
            const size_t t = 1 + (size_t)(test_uniform(&rng) * (trial < 20 ? 40 : (double)tmax));
            size_t e = 1 + (size_t)(test_uniform(&rng) * (double)emax);
            if (trial % 5 == 4) e = 32 + e % 9; /* c = 1 below: ec_insert's 32-expert blocks and a tail */
            const size_t ldx = e + 3, ldb = (e + 7) & ~(size_t)7;
            const int kind = trial % 3;
            const double inv = trial % 4 == 3 ? 2.0 : trial % 4 == 2 ? 0.625 : 1.0;
            fill_logits(&rng, kind, x, t * ldx);
            for (size_t r = 0; r < t; r++) lse[r] = 1.0 + 3.0 * test_uniform(&rng);
            if (kind == 1)
                for (size_t r = 0; r < t; r++) lse[r] = 2.5; /* equal keys across tokens */
            size_t c = 1 + (size_t)(test_uniform(&rng) * (double)(t < cmax ? t : cmax));
            if (trial % 5 == 4) c = 1;
            if (slot == SG_ROUTE_SLOT_ec_insert || slot == SG_ROUTE_SLOT_ec_finish) {
                /* the lists, in two calls (the second continues), against
                 * the c best keys; with or without the exact c-th key as thr */
                const int use_thr = trial % 2;
                for (size_t i = 0; i < e; i++) {
                    int32_t ids[32];
                    size_t m = ref_ec_top(x, ldx, lse, inv, t, i, c, -INFINITY, ids);
                    thr[i] = m == c ? ec_key(x, ldx, lse, inv, (size_t)ids[c - 1], i) : -INFINITY;
                }
                sg_route_ec_insert_fn *ins = slot == SG_ROUTE_SLOT_ec_insert ? (sg_route_ec_insert_fn *)ents[en].fn
                                                                             : sg_route_kernels_get()->ec_insert;
                const size_t t1 = t / 3;
                ins(0, t1, e, x, ldx, lse, inv, c, use_thr ? thr : NULL, bk, bt, ldb);
                if (t1 == 0) /* r0 = 0 starts the lists: an empty first call does not */
                    for (size_t q = 0; q < c * ldb; q++) bk[q] = -INFINITY, bt[q] = 0;
                ins(t1, t, e, x, ldx, lse, inv, c, use_thr ? thr : NULL, bk, bt, ldb);
                int ok = 1, hole = 0;
                for (size_t i = 0; i < e && ok; i++) {
                    const size_t m = ref_ec_top(x, ldx, lse, inv, t, i, c, -INFINITY, want);
                    hole |= m < c;
                    for (size_t s = 0; s < c; s++) {
                        const double kb = bk[s * ldb + i];
                        if (s < m) ok &= bt[s * ldb + i] == want[s] && kb == ec_key(x, ldx, lse, inv, (size_t)want[s], i);
                        else ok &= kb == -INFINITY;
                    }
                    CHECK(ok, "%s t=%zu e=%zu c=%zu kind=%d thr=%d: expert %zu", ents[en].name, t, e, c, kind,
                          use_thr, i);
                }
                if (!ok) goto done;
                if (slot == SG_ROUTE_SLOT_ec_finish) {
                    const size_t ldt = trial % 2 ? c : c + 2;
                    const int h = ((sg_route_ec_finish_fn *)ents[en].fn)(c, e, ldb, bk, bt, tok, ldt, kf);
                    for (size_t i = 0; i < e; i++)
                        for (size_t s = 0; s < c; s++)
                            ok &= tok[i * ldt + s] == bt[s * ldb + i] && kf[i * c + s] == (float)bk[s * ldb + i];
                    CHECK(ok && (h != 0) == hole, "%s t=%zu e=%zu c=%zu: out %d hole %d want %d", ents[en].name, t,
                          e, c, ok, h, hole);
                    if (!ok) goto done;
                }
            } else if (slot == SG_ROUTE_SLOT_ec_blockmax) {
                const size_t r0 = (size_t)(test_uniform(&rng) * (double)t);
                ((sg_route_ec_blockmax_fn *)ents[en].fn)(r0, t, e, x, ldx, lse, inv, out);
                double lmx = 0.0;
                for (size_t r = r0; r < t; r++) lmx = fmax(lmx, fabs(lse[r]));
                for (size_t i = 0; i < e; i++) {
                    double best = -INFINITY;
                    for (size_t r = r0; r < t; r++) best = fmax(best, ec_key(x, ldx, lse, inv, r, i));
                    const int ok = out[i] <= best && (best == -INFINITY ? out[i] == -INFINITY
                                                                      : out[i] >= best - (fabs(out[i]) + lmx + 1.0) * 0x1p-19);
                    CHECK(ok, "%s t=%zu e=%zu inv=%g expert %zu: %.17g, max %.17g", ents[en].name, t, e, inv, i,
                          out[i], best);
                    if (!ok) goto done;
                }
            } else if (slot == SG_ROUTE_SLOT_ec_collect) {
                /* thr: a key of the column (ties included), -inf, or above all */
                for (size_t i = 0; i < e; i++) {
                    const double u = test_uniform(&rng);
                    thr[i] = u < 0.15 ? -INFINITY : u < 0.2 ? 1.0
                                                  : ec_key(x, ldx, lse, inv, (size_t)(u * (double)t) % t, i);
                    cnt[i] = 0;
                }
                const size_t cap = trial % 3 == 0 ? 4 : 600;
                ((sg_route_ec_collect_fn *)ents[en].fn)(0, t, e, x, ldx, lse, inv, thr, cap, ck, ct, cnt);
                int ok = 1;
                for (size_t i = 0; i < e && ok; i++) {
                    size_t n = 0;
                    for (size_t r = 0; r < t; r++) {
                        const double v = ec_key(x, ldx, lse, inv, r, i);
                        if (!(v >= thr[i])) continue;
                        if (n < cap) ok &= ct[i * cap + n] == (int32_t)r && ck[i * cap + n] == v;
                        n++;
                    }
                    ok &= cnt[i] == n;
                    CHECK(ok, "%s t=%zu e=%zu cap=%zu expert %zu: %u candidates, want %zu", ents[en].name, t, e, cap,
                          i, cnt[i], n);
                }
                if (!ok) goto done;
            } else if (slot == SG_ROUTE_SLOT_ec_kth) {
                /* the c-th largest of nb <= 32 values per expert (ties, -inf) */
                const size_t nb = 1 + (size_t)(test_uniform(&rng) * 32.0) % 32;
                const size_t ck_c = 1 + (size_t)(test_uniform(&rng) * (double)nb) % nb;
                double *bmv = malloc(nb * ldb * sizeof *bmv);
                for (size_t b = 0; b < nb; b++)
                    for (size_t i = 0; i < ldb; i++)
                        bmv[b * ldb + i] = i < e ? (double)x[(b % t) * ldx + i] + 0.25 * (double)(b / t) : NAN;
                ((sg_route_ec_kth_fn *)ents[en].fn)(nb, e, ldb, bmv, ck_c, out);
                int ok = 1;
                for (size_t i = 0; i < e; i++) {
                    size_t above = 0, atleast = 0; /* out[i] is a value with < c above and >= c at least */
                    int found = 0;
                    for (size_t b = 0; b < nb; b++) {
                        above += bmv[b * ldb + i] > out[i];
                        atleast += bmv[b * ldb + i] >= out[i];
                        found |= bmv[b * ldb + i] == out[i] || (out[i] == -INFINITY && bmv[b * ldb + i] == -INFINITY);
                    }
                    ok &= found && above < ck_c && atleast >= ck_c;
                }
                CHECK(ok, "%s nb=%zu e=%zu c=%zu kind=%d", ents[en].name, nb, e, ck_c, kind);
                free(bmv);
                if (!ok) goto done;
            } else if (slot == SG_ROUTE_SLOT_ec_rank) {
                /* one expert's candidates: all tokens (n up to 300) */
                const size_t n = t, cc = 1 + (size_t)(test_uniform(&rng) * (double)(n < 20 ? n : 20));
                for (size_t r = 0; r < n; r++) ck[r] = ec_key(x, ldx, lse, inv, r, 0), ct[r] = (int32_t)(3 * r + 1);
                int32_t ids[32];
                const size_t m = ref_ec_top(x, ldx, lse, inv, t, 0, cc, -INFINITY, ids);
                ((sg_route_ec_rank_fn *)ents[en].fn)(n, ck, ct, cc, tok, kf, sk, st);
                int ok = 1;
                size_t s = 0;
                for (; s < m; s++)
                    ok &= tok[s] == 3 * ids[s] + 1 && kf[s] == (float)ec_key(x, ldx, lse, inv, (size_t)ids[s], 0);
                for (size_t r = 0; s < cc && r < n; r++) /* then the -inf keys in token order */
                    if (ec_key(x, ldx, lse, inv, r, 0) == -INFINITY) ok &= tok[s++] == (int32_t)(3 * r + 1);
                CHECK(ok, "%s n=%zu c=%zu kind=%d", ents[en].name, n, cc, kind);
                if (!ok) goto done;
            }
        }
    }
done:
    CHECK(tested >= 6, "only %zu route kernels tested", tested);
    free(x), free(lse), free(bk), free(bt), free(ck), free(ct);
}

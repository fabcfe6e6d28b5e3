/*
 * test_route_sgate.c - the sigmoid gate kernels (route.sgate: every one
 * compiled in whose ISA the CPU has, whatever SOFTGATE_ISA says) against a
 * selection written here from the kernel's own s (its probs output): keys
 * s + b in float, group scores as the float sum of the two largest keys,
 * groups and experts taken as repeatedly the largest remaining, the lowest
 * index among equals, weights in double in slot order. ids and weights
 * must match bit for bit, s must be within 1e-6 relative of the sigmoid in
 * double (plus the rounding of the argument c x). Shapes cover every path of the AVX-512 kernel (no groups, groups
 * of one, of 2..8 experts, of multiples of 16, more than 16 groups, group
 * sizes it leaves to the reference, e > 1024, k > 16) with tails, ties,
 * saturated and infinite logits, and NaN rows.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "route/route_kernels.h"
#include "test.h"

/* The index of the largest key[i] over allowed i not yet used, lowest
 * index among equals (float compares: -0 == +0). */
static size_t pick(const float *key, const unsigned char *allowed, unsigned char *used, size_t n) {
    size_t best = n;
    for (size_t i = 0; i < n; i++) {
        if (used[i] || (allowed && !allowed[i])) continue;
        if (best == n || key[i] > key[best]) best = i;
    }
    used[best] = 1;
    return best;
}

/* The gate's ids and weights from s (the kernel's probs row). */
static void expect_row(const sg_route_sgate *g, const float *s, int32_t *ids, float *w) {
    const size_t e = g->e, ng = g->n_group > 1 ? g->n_group : 1, gs = e / ng;
    float key[2048], gsc[2048];
    unsigned char allowed[2048], used[2048];
    for (size_t i = 0; i < e; i++) key[i] = g->bias ? s[i] + g->bias[i] : s[i];
    for (size_t i = 0; i < e; i++) allowed[i] = ng == 1;
    if (ng > 1) {
        for (size_t q = 0; q < ng; q++) {
            memset(used, 0, gs);
            const size_t a = pick(key + q * gs, NULL, used, gs);
            gsc[q] = gs == 1 ? key[q * gs + a] : key[q * gs + a] + key[q * gs + pick(key + q * gs, NULL, used, gs)];
        }
        memset(used, 0, ng);
        for (size_t t = 0; t < g->topk_group; t++) {
            const size_t q = pick(gsc, NULL, used, ng);
            for (size_t i = 0; i < gs; i++) allowed[q * gs + i] = 1;
        }
    }
    memset(used, 0, e);
    double sd[64], sum = 0.0;
    for (size_t l = 0; l < g->k; l++) {
        ids[l] = (int32_t)pick(key, allowed, used, e);
        sum += sd[l] = (double)s[ids[l]];
    }
    const double inv = sum > 0 ? 1.0 / sum : 0.0;
    for (size_t l = 0; l < g->k; l++) w[l] = (float)(g->a * (g->renormalize ? sd[l] * inv : sd[l]));
}

static void fill(test_rng *r, int kind, float *x, size_t n) {
    for (size_t i = 0; i < n; i++) {
        const double u = test_uniform(r);
        switch (kind) {
        case 0: x[i] = (float)(1.5 * test_normal(r)); break;
        case 1: x[i] = (float)(int)(u * 4.0) - 1.5f; break; /* few distinct values: ties */
        case 2: x[i] = u < 0.15 ? INFINITY : u < 0.3 ? -INFINITY : u < 0.4 ? 40.0f : (float)test_normal(r); break;
        default: x[i] = (float)(30.0 * test_normal(r)); break; /* saturated: s = 0 or 1, ties */
        }
    }
}

typedef struct shape {
    size_t e, k, ng, tg;
} shape;

TEST(route_sgate_kernels_reference) {
    static const shape shapes[] = {
        {8, 2, 4, 2},    {8, 1, 0, 0},    {8, 3, 0, 0},    {1, 1, 0, 0},     {5, 2, 5, 3},   {16, 3, 16, 4},
        {12, 4, 3, 2},   {24, 4, 3, 2},   {32, 3, 16, 5},  {64, 6, 8, 4},    {64, 6, 8, 1},  {48, 5, 3, 2},
        {128, 8, 8, 4},  {160, 8, 10, 3}, {256, 8, 8, 4},  {256, 16, 8, 4},  {256, 8, 16, 2}, {96, 6, 4, 2},
        {64, 6, 64, 8},  {64, 6, 32, 8},  {17, 5, 0, 0},   {300, 16, 0, 0},  {256, 17, 8, 4}, {1100, 4, 0, 0},
        {512, 8, 32, 4}, {1024, 8, 8, 4},
        /* group sizes other than the benchmark's at the same vector or group counts */
        {16, 3, 4, 2},   {16, 6, 4, 2},   {16, 4, 4, 1},   {32, 4, 8, 2},   {32, 6, 4, 3},  {128, 8, 8, 2},
        {256, 8, 16, 4}, {64, 6, 16, 4},
    };
    size_t count;
    const sg_route_kernel_entry *ents = sg_route_kernel_entries(&count);
    test_rng r = test_rng_seed(2024);
    const size_t t = test_quick ? 5 : 9, emax = 1100, kmax = 17;
    const size_t ldx = emax + 3, ldi = kmax + 2, ldp = emax + 1;
    float *x = malloc(t * ldx * sizeof *x), *bias = malloc(emax * sizeof *bias);
    float *p = malloc(t * ldp * sizeof *p), *w = malloc(t * ldi * sizeof *w), *w0 = malloc(t * ldi * sizeof *w0);
    float *work = malloc(4 * emax * sizeof *work);
    int32_t *ids = malloc(t * ldi * sizeof *ids), *ids0 = malloc(t * ldi * sizeof *ids0);
    size_t tested = 0;
    for (size_t en = 0; en < count; en++) {
        if (!sg_cpu_supports(ents[en].isa) || ents[en].slot != SG_ROUTE_SLOT_sgate) continue;
        sg_route_sgate_fn *fn = (sg_route_sgate_fn *)ents[en].fn;
        tested++;
        for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
            const shape sh = shapes[si];
            if (test_quick && sh.e > 300) continue;
            for (int variant = 0; variant < 8; variant++) {
                const int kind = variant % 4;
                for (size_t i = 0; i < sh.e; i++)
                    bias[i] = variant & 4 ? 0.0f : (float)(0.1 * test_normal(&r)); /* 0: more ties */
                sg_route_sgate g = {sh.e, sh.k, sh.ng, sh.tg, variant == 5 ? 1.0f / 0.7f : 1.0f,
                                    variant == 6 && sh.ng > 1 ? NULL : bias, variant & 1 ? 2.5 : 1.0, variant != 3};
                for (size_t q = 0; q < t; q++) fill(&r, kind, x + q * ldx, sh.e);
                size_t bad = fn(&g, t, x, ldx, ids, ldi, w, ldi, p, ldp, work);
                CHECK(bad == SIZE_MAX, "%s e=%zu v=%d: NaN reported at row %zu", ents[en].name, sh.e, variant, bad);
                bad = fn(&g, t, x, ldx, ids0, ldi, w0, ldi, NULL, 0, work);
                CHECK(bad == SIZE_MAX, "%s: NaN reported without probs", ents[en].name);
                int ok = 1;
                for (size_t q = 0; q < t && ok; q++) {
                    const float *sr = p + q * ldp;
                    for (size_t i = 0; i < sh.e && ok; i++) {
                        const double want = 1.0 / (1.0 + exp(-(double)g.c * (double)x[q * ldx + i]));
                        /* the exponential's 2 ulp, and the argument -|x| c rounded to float */
                        const double arg = fabs((double)g.c * (double)x[q * ldx + i]);
                        ok = (double)sr[i] == want || fabs((double)sr[i] - want) <= (1e-6 + arg * 0x1p-23) * want + 1e-37;
                        CHECK(ok, "%s e=%zu v=%d row %zu: s[%zu] = %.9g, sigmoid %.9g", ents[en].name, sh.e,
                              variant, q, i, (double)sr[i], want);
                    }
                    int32_t wid[32];
                    float ww[32];
                    expect_row(&g, sr, wid, ww);
                    for (size_t l = 0; l < sh.k && ok; l++) {
                        ok = ids[q * ldi + l] == wid[l] && memcmp(&w[q * ldi + l], &ww[l], sizeof(float)) == 0 &&
                             ids0[q * ldi + l] == wid[l] && memcmp(&w0[q * ldi + l], &ww[l], sizeof(float)) == 0;
                        CHECK(ok, "%s e=%zu k=%zu ng=%zu tg=%zu v=%d row %zu slot %zu: id %d (%d without probs) w %.9g, want %d %.9g",
                              ents[en].name, sh.e, sh.k, sh.ng, sh.tg, variant, q, l, ids[q * ldi + l],
                              ids0[q * ldi + l], (double)w[q * ldi + l], wid[l], (double)ww[l]);
                    }
                }
                if (!ok) goto done;
                /* a NaN in row 2 (of at least 3): reported there */
                x[2 * ldx + sh.e / 2] = NAN;
                bad = fn(&g, t, x, ldx, ids, ldi, w, ldi, p, ldp, work);
                CHECK(bad == 2, "%s e=%zu v=%d: NaN row reported as %zu", ents[en].name, sh.e, variant, bad);
            }
        }
    }
done:
    CHECK(tested >= 1, "no sgate kernel tested");
    CHECK(sg_route_kernels_get()->sgate != NULL, "no sgate kernel installed");
    free(x), free(bias), free(p), free(w), free(w0), free(work), free(ids), free(ids0);
}

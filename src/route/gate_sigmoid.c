/*
 * gate_sigmoid.c - the reference kernel of the sigmoid gate with a key row
 * (route.sgate, contract in route_kernels.h): the DeepSeek-V3 gate, with
 * its selection bias, group-limited selection and normalized weights, one
 * row at a time, and the sigmoid row it shares with the plain sigmoid
 * gate (gate_topk.c). The argument checks, threads and the backward live
 * in gate_topk.c; the AVX-512 kernel in gate_sigmoid_avx512.c.
 */
#include <math.h>
#include <string.h>

#include "route/route_internal.h"
#include "route/route_kernels.h"

void sg_route_sigmoid_row(size_t e, const float *x, float c, float *s) {
    size_t i = 0;
    for (; i + 16 <= e; i += 16) /* fixed-length blocks: vectorized */
        for (size_t q = 0; q < 16; q++) s[i + q] = -fabsf(x[i + q]);
    for (; i < e; i++) s[i] = -fabsf(x[i]);
    /* exp(-c |x|): an argument <= 0, the kernels' domain */
    sg_kernels_get()->expsum_store(e, s, s, 0.0f, c);
    /* s = (x >= 0 ? 1 : q) / (1 + q) without a branch (the sign decides
     * half the entries at random), 4 at a time in the compiler's portable
     * vectors (SSE2 / NEON at the baseline ISA; the scalar division with a
     * branch was half the DeepSeek-V3 gate's time) */
    typedef float v4f __attribute__((vector_size(16), aligned(4)));
    typedef int32_t v4i __attribute__((vector_size(16), aligned(4)));
    const v4f one = {1, 1, 1, 1}, zero = {0, 0, 0, 0};
    for (i = 0; i + 4 <= e; i += 4) {
        v4f v, xv;
        memcpy(&v, s + i, sizeof v);
        memcpy(&xv, x + i, sizeof xv);
        const v4i neg = xv < zero; /* all ones where x < 0 */
        const v4i num = ((v4i)v & neg) | ((v4i)one & ~neg);
        const v4f r = (v4f)num / (one + v);
        memcpy(s + i, &r, sizeof r);
    }
    for (; i < e; i++) s[i] = (x[i] < 0.0f ? s[i] : 1.0f) / (1.0f + s[i]);
}

/* The kept experts' keys, the others -inf, into masked (e floats): group
 * score = the sum of the group's two largest keys (branch-free: b2 =
 * max(b2, min(b1, v))), then the topk_group best groups. */
static void keep_groups(const sg_route_sgate *g, sg_route_topk_fn *topk, const float *key, float *gscore,
                        float *masked) {
    const size_t ng = g->n_group, gs = g->e / ng, tg = g->topk_group;
    for (size_t q = 0; q < ng; q++) {
        const float *kg = key + q * gs;
        float b1 = -INFINITY, b2 = -INFINITY;
        for (size_t i = 0; i < gs; i++) {
            const float v = kg[i], lo = v < b1 ? v : b1;
            b2 = lo > b2 ? lo : b2;
            b1 = v > b1 ? v : b1;
        }
        gscore[q] = gs == 1 ? b1 : b1 + b2;
    }
    int32_t gsel[256]; /* topk_group <= 256 (checked) */
    float gtop[256];
    topk(gscore, ng, tg, gsel, gtop);
    for (size_t i = 0; i < g->e; i++) masked[i] = -INFINITY;
    for (size_t a = 0; a < tg; a++)
        memcpy(masked + (size_t)gsel[a] * gs, key + (size_t)gsel[a] * gs, gs * sizeof *masked);
}

size_t sg_route_sgate__ref(const sg_route_sgate *g, size_t n, const float *x, size_t ldx, int32_t *ids,
                           size_t ldi, float *w, size_t ldw, float *p, size_t ldp, float *work) {
    const size_t e = g->e, k = g->k;
    sg_route_topk_fn *topk = sg_route_kernels_get()->topk; /* every top-k kernel gives the same ids */
    float *s = work, *key = work + e, *gscore = work + 2 * e, *masked = work + 3 * e;
    float top[SG_ROUTE_STACK_E]; /* k <= SG_ROUTE_STACK_E (checked) */
    for (size_t r = 0; r < n; r++) {
        const float *xr = x + r * ldx;
        int32_t *ir = ids + r * ldi;
        sg_route_sigmoid_row(e, xr, g->c, s);
        for (size_t i = 0; i < e; i++) key[i] = g->bias ? s[i] + g->bias[i] : s[i];
        if (sg_route_has_nan(key, e)) return r; /* NaN in x reaches its key */
        if (g->n_group > 1) {
            keep_groups(g, topk, key, gscore, masked);
            topk(masked, e, k, ir, top);
        } else {
            topk(key, e, k, ir, top);
        }
        double wd[SG_ROUTE_STACK_E], sum = 0.0;
        for (size_t l = 0; l < k; l++) sum += wd[l] = (double)s[ir[l]];
        const double inv = sum > 0 ? 1.0 / sum : 0.0;
        for (size_t l = 0; l < k; l++) w[r * ldw + l] = (float)(g->a * (g->renormalize ? wd[l] * inv : wd[l]));
        if (p) memcpy(p + r * ldp, s, e * sizeof *p);
    }
    return SIZE_MAX;
}

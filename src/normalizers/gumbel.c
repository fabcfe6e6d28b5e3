/*
 * gumbel.c - Gumbel-softmax (Jang, Gu and Poole, "Categorical
 * Reparameterization with Gumbel-Softmax"), soft and straight-through
 * (hard), float32. The noise comes from the library's Philox4x32-10 keyed
 * exactly as sg_random_uniform_f32 keys it; the softmax itself is the
 * softmax core's (sg_softmax_f32 in place, masks and temperature
 * included), and the backward is the core's softmax backward on y_soft.
 *
 * One call: (1) rows across threads: t_i = x_i + g_i with
 * g = -log(-log u) in double, written to y_soft (or y); (2) the core's
 * softmax of t / tau in place; (3) hard: one-hot of each row's argmax.
 */
#include <stdio.h>
#include <string.h>

#include "normalizers/alternatives_internal.h"

typedef struct gumbel_job {
    alt_job j; /* first: the row functions see an alt_job */
    uint32_t key[2];
    uint64_t offset;
    float *soft; /* where the soft sample goes */
    size_t ldsoft;
} gumbel_job;

/* t = x + g for one row by the gumbel_noise kernel (Philox and the
 * noise, vectorized; t may be x: each entry is read before it is
 * written). */
static void noise_row(const alt_job *aj, size_t r) {
    const gumbel_job *g = (const gumbel_job *)aj;
    aj->k->gumbel_noise(aj->n, aj->x + r * aj->ldx, g->soft + r * g->ldsoft, g->key, (uint32_t)r,
                        g->offset, 0);
}

/* The one-hot of the argmax of the soft row (kept entries; ties to the
 * lower index); all 0 if the soft row is (every entry removed or -inf);
 * NaN on kept entries if it holds a NaN. */
static void hard_row(const alt_job *aj, size_t r) {
    const gumbel_job *g = (const gumbel_job *)aj;
    const float *s = g->soft + r * g->ldsoft;
    float *y = aj->out + r * aj->ldo;
    const size_t n = aj->n;
    /* soft values lie in [0, 1]: their sum is NaN exactly when one is */
    if (isnan(aj->ck->sum(n, s))) {
        sg_alt_nan_row(aj, r);
        return;
    }
    const float mx = aj->ck->rmax(n, s);
    size_t best = 0;
    while (best < n && s[best] != mx) best++; /* the first maximum */
    for (size_t i = 0; i < n; i++) y[i] = 0.0f; /* after the search: y may be s */
    if (mx > 0.0f) y[best] = 1.0f;
}

sg_status sg_gumbel_softmax_f32(sg_context *ctx, size_t rows, size_t n, const float *x, size_t ldx,
                                uint64_t seed, uint64_t offset, int hard, float *y, size_t ldy,
                                float *y_soft, size_t ldys, const sg_softmax_options *options) {
    static const char name[] = "sg_gumbel_softmax_f32";
    if (!ctx) return SG_ERR_ARGUMENT;
    sg_ok(ctx);
    sg_softmax_options o;
    float c;
    sg_status st = sg_alt_check_forward(ctx, name, rows, n, x, ldx, y, ldy, &o, options, &c);
    if (st == SG_OK && y_soft) st = sg_check_matrix(ctx, name, "y_soft", y_soft, rows, n, ldys);
    if (st == SG_OK && y_soft && y_soft == y && rows && n)
        st = sg_fail(ctx, SG_ERR_ARGUMENT, "%s: y_soft must not be y", name);
    if (st == SG_OK && y_soft == x && x && ldys != ldx && rows > 1)
        st = sg_fail(ctx, SG_ERR_SHAPE, "%s: in place (y_soft == x) needs ldys == ldx", name);
    if (st == SG_OK && (rows > 0xFFFFFFFFu || n / 4 > 0xFFFFFFFFu))
        st = sg_fail(ctx, SG_ERR_SHAPE, "%s: rows must be < 2^32 and n < 2^34 (got %zu, %zu)", name,
                     rows, n);
    if (st != SG_OK || rows == 0 || n == 0) return st;
    gumbel_job g = {0};
    g.key[0] = (uint32_t)seed;
    g.key[1] = (uint32_t)(seed >> 32);
    g.offset = offset;
    g.soft = y_soft ? y_soft : y;
    g.ldsoft = y_soft ? ldys : ldy;
    g.j.row = noise_row;
    g.j.x = x;
    g.j.ldx = ldx;
    g.j.out = y;
    g.j.ldo = ldy;
    sg_alt_run(ctx, &g.j, rows, n, &o, c);
    sg_softmax_options so = o;
    so.algorithm = SG_SOFTMAX_AUTO;
    st = sg_softmax_f32(ctx, rows, n, g.soft, g.ldsoft, g.soft, g.ldsoft, &so);
    if (st != SG_OK) return st;
    if (hard) {
        g.j.row = hard_row;
        sg_alt_run(ctx, &g.j, rows, n, &o, c);
    } else if (y_soft) {
        for (size_t r = 0; r < rows; r++)
            for (size_t i = 0; i < n; i++) y[r * ldy + i] = y_soft[r * ldys + i];
    }
    return SG_OK;
}

sg_status sg_gumbel_softmax_backward_f32(sg_context *ctx, size_t rows, size_t n,
                                         const float *y_soft, size_t ldys, const float *dy,
                                         size_t lddy, float *dx, size_t lddx,
                                         const sg_softmax_options *options) {
    if (!ctx) return SG_ERR_ARGUMENT;
    sg_status st = sg_softmax_backward_f32(ctx, rows, n, y_soft, ldys, dy, lddy, dx, lddx, options);
    if (st != SG_OK) {
        /* The core named its own function: name ours, keep its reason. */
        char msg[256];
        snprintf(msg, sizeof msg, "%s", sg_context_error(ctx));
        const char *why = strchr(msg, ':');
        return sg_fail(ctx, st, "sg_gumbel_softmax_backward_f32%s", why ? why : ": invalid arguments");
    }
    return SG_OK;
}

/*
 * test_alternatives.c - the softmax alternatives (include/softgate/
 * alternatives.h): softpick, stablemax (log, backward, cross-entropy),
 * sigmoid and normalized sigmoid, Gumbel-softmax, adaptive temperature;
 * and their kernels (src/normalizers/alternatives_*). References are the
 * papers' formulas in double, written here, independently of the library
 * (softpick unscaled with expm1, normalized sigmoid through log-sigmoid).
 *
 * Tests (all named alt_*, so --filter alt_ runs this file):
 *   alt_kernels_tails          every compiled kernel against the ref
 *                              kernel and a double formula: lengths around
 *                              every tile (1..2*64+1, 1023..1025, 3000),
 *                              unaligned, in place, both softpick modes
 *   alt_kernels_log            the vector log over its domain
 *   alt_kernels_philox         the vector Philox noise kernels against
 *                              sg_random_uniform_f32
 *   alt_forward_reference      every forward op, strides, T, scales
 *   alt_masks                  keep and add masks, per row and broadcast,
 *                              rows over several z blocks, in place
 *   alt_properties             softpick sums <= 1 and zero rows; stablemax,
 *                              softpick, sigmoid not shift-invariant,
 *                              Gumbel and adaptive shift-invariant
 *   alt_sigmoid_flat           contiguous sigmoid rows (one flat run) give
 *                              the bits of the row-by-row path
 *   alt_backward_fd            every backward against central differences
 *                              of the double reference (masks included)
 *   alt_stablemax_loss         log-stablemax cross-entropy: loss, dx, FD
 *   alt_special_values         the header's tables, forward and backward
 *   alt_gumbel                 noise from sg_random_uniform_f32 exactly,
 *                              offsets and seeds, tau -> 0, hard, ties,
 *                              backward = softmax backward
 *   alt_adaptive               the paper's rule: beta, low/high entropy
 *   alt_threads_identical      1, 2, 3 threads give the same bits
 *   alt_args_errors            statuses, messages, untouched outputs
 */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "normalizers/alternatives_kernels.h"
#include "test.h"

#define SENTINEL (-12345.5f)

static void fill_normal(float *x, size_t count, double scale, uint64_t seed) {
    test_rng rng = test_rng_seed(seed);
    for (size_t i = 0; i < count; i++) x[i] = (float)(scale * test_normal(&rng));
}

/* ---- double references ---------------------------------------------------- */

typedef enum {
    OP_SOFTPICK,
    OP_STABLEMAX,
    OP_LOG_STABLEMAX,
    OP_SIGMOID,
    OP_NSIGMOID,
    OP_ADAPTIVE,
    N_FWD
} fwd_op;
static const char *const fwd_names[] = {"softpick", "stablemax", "log_stablemax",
                                        "sigmoid",  "nsigmoid",  "adaptive"};

#define EPS 1e-6f /* softpick's eps in these tests */

static double sigm(double z) { return z >= 0 ? 1.0 / (1.0 + exp(-z)) : exp(z) / (1.0 + exp(z)); }
static double logsig(double z) { return z >= 0 ? -log1p(exp(-z)) : z - log1p(exp(z)); }
static double stab(double z) { return z >= 0 ? z + 1.0 : 1.0 / (1.0 - z); }

static double poly_beta(double h) {
    if (!(h > 0.5)) return 1.0;
    double p = (((-0.037 * h + 0.481) * h - 2.3) * h + 4.917) * h - 1.791;
    return p > 1.0 ? p : 1.0;
}

/* softmax of b * z over kept finite entries; returns the entropy of the
 * b = 1 distribution if want_h. */
static void ref_softmax(size_t n, const double *z, const int *kept, double b, double *p) {
    double m = -INFINITY, s = 0.0;
    for (size_t i = 0; i < n; i++)
        if (kept[i] && z[i] > m) m = z[i];
    for (size_t i = 0; i < n; i++) s += kept[i] ? exp(b * (z[i] - m)) : 0.0;
    for (size_t i = 0; i < n; i++) p[i] = kept[i] ? exp(b * (z[i] - m)) / s : 0.0;
}

static double ref_beta(size_t n, const double *z, const int *kept) {
    double *p = test_alloc(n * sizeof *p), h = 0.0;
    ref_softmax(n, z, kept, 1.0, p);
    for (size_t i = 0; i < n; i++)
        if (p[i] > 0.0) h -= p[i] * log(p[i]);
    free(p);
    return poly_beta(h);
}

/* The reference of op on z (finite, moderate) over kept entries. */
static void ref_fwd(fwd_op op, size_t n, const double *z, const int *kept, double *y) {
    double s = 0.0, lm = -INFINITY;
    switch (op) {
    case OP_SOFTPICK:
        for (size_t i = 0; i < n; i++) s += kept[i] ? fabs(expm1(z[i])) : 0.0;
        for (size_t i = 0; i < n; i++) y[i] = kept[i] && z[i] > 0 ? expm1(z[i]) / (s + EPS) : 0.0;
        break;
    case OP_STABLEMAX:
    case OP_LOG_STABLEMAX:
        for (size_t i = 0; i < n; i++) s += kept[i] ? stab(z[i]) : 0.0;
        for (size_t i = 0; i < n; i++) {
            y[i] = kept[i] ? stab(z[i]) / s : 0.0;
            if (op == OP_LOG_STABLEMAX) y[i] = kept[i] ? log(stab(z[i])) - log(s) : -INFINITY;
        }
        break;
    case OP_SIGMOID:
        for (size_t i = 0; i < n; i++) y[i] = kept[i] ? sigm(z[i]) : 0.0;
        break;
    case OP_NSIGMOID:
        for (size_t i = 0; i < n; i++)
            if (kept[i] && logsig(z[i]) > lm) lm = logsig(z[i]);
        for (size_t i = 0; i < n; i++) s += kept[i] ? exp(logsig(z[i]) - lm) : 0.0;
        for (size_t i = 0; i < n; i++) y[i] = kept[i] ? exp(logsig(z[i]) - lm) / s : 0.0;
        break;
    case OP_ADAPTIVE: ref_softmax(n, z, kept, ref_beta(n, z, kept), y); break;
    case N_FWD: break;
    }
}

static sg_status run_fwd(sg_context *ctx, fwd_op op, size_t rows, size_t n, const float *x,
                         size_t ldx, float *y, size_t ldy, const sg_softmax_options *o) {
    switch (op) {
    case OP_SOFTPICK: return sg_softpick_f32(ctx, rows, n, x, ldx, y, ldy, EPS, o);
    case OP_STABLEMAX: return sg_stablemax_f32(ctx, rows, n, x, ldx, y, ldy, o);
    case OP_LOG_STABLEMAX: return sg_log_stablemax_f32(ctx, rows, n, x, ldx, y, ldy, o);
    case OP_SIGMOID: return sg_sigmoid_f32(ctx, rows, n, x, ldx, y, ldy, o);
    case OP_NSIGMOID: return sg_normalized_sigmoid_f32(ctx, rows, n, x, ldx, y, ldy, o);
    case OP_ADAPTIVE: return sg_adaptive_temperature_softmax_f32(ctx, rows, n, x, ldx, y, ldy, NULL, o);
    case N_FWD: break;
    }
    return SG_ERR_ARGUMENT;
}

/* z and kept of one row as the header defines them. */
static void z_row(size_t n, const float *x, const uint8_t *keep, const float *add, double t,
                  double *z, int *kept) {
    for (size_t i = 0; i < n; i++) {
        kept[i] = !((keep && !keep[i]) || (add && add[i] == -INFINITY));
        z[i] = kept[i] ? (double)x[i] / t + (add ? (double)add[i] : 0.0) : 0.0;
    }
}

/* Documented accuracy: relative 2e-6 plus a small absolute term. */
static int close_to(double got, double ref, fwd_op op) {
    if (op == OP_LOG_STABLEMAX) return fabs(got - ref) <= 2e-6 * fmax(1.0, fabs(ref));
    return fabs(got - ref) <= 2e-6 * fabs(ref) + 1e-9;
}

typedef struct err_acc {
    double worst;
    int reported;
} err_acc;

static void check_rows(fwd_op op, size_t rows, size_t n, const float *x, size_t ldx,
                       const float *y, size_t ldy, const uint8_t *keep, size_t keep_ld,
                       const float *add, size_t add_ld, double t, const char *what, err_acc *e) {
    double *z = test_alloc(n * sizeof *z), *ref = test_alloc(n * sizeof *ref);
    int *kept = test_alloc(n * sizeof *kept);
    for (size_t r = 0; r < rows; r++) {
        z_row(n, x + r * ldx, keep ? keep + r * keep_ld : NULL, add ? add + r * add_ld : NULL, t, z,
              kept);
        ref_fwd(op, n, z, kept, ref);
        for (size_t i = 0; i < n; i++) {
            double got = y[r * ldy + i];
            double err = op == OP_LOG_STABLEMAX ? fabs(got - ref[i]) / fmax(1.0, fabs(ref[i]))
                                                : fabs(got - ref[i]) / (fabs(ref[i]) + 1e-3);
            if (isfinite(err)) e->worst = fmax(e->worst, err);
            if (!close_to(got, ref[i], op) && !(isinf(ref[i]) && got == ref[i]) && e->reported++ < 5)
                CHECK(0, "%s %s n=%zu r=%zu i=%zu: got %.9g ref %.9g (z %.6g)", fwd_names[op], what,
                      n, r, i, got, ref[i], z[i]);
        }
    }
    free(z), free(ref), free(kept);
}

/* ---- kernels ------------------------------------------------------------- */

static const sg_alt_kernel_entry *find_ref(enum sg_alt_slot_id slot) {
    size_t count;
    const sg_alt_kernel_entry *e = sg_alt_kernel_entries(&count);
    for (size_t i = 0; i < count; i++)
        if (e[i].slot == slot && e[i].isa == SG_ISA_REF) return &e[i];
    return NULL;
}

/* Runs kernel k of any slot on n entries at x (dy, y as its inputs),
 * writing out; returns the kernel's sum (0 for elementwise ones). */
static double call_kernel(const sg_alt_kernel_entry *k, size_t n, const float *x, const float *y,
                          const float *dy, float *out, float c, float m, double *dot) {
    const float em = (float)exp(-(double)m);
    *dot = 0.0;
    switch (k->slot) {
    case SG_ALT_SLOT_sigmoid_store: return ((sg_sigmoid_store_fn *)k->fn)(n, x, out, c);
    case SG_ALT_SLOT_stablemax_store: return ((sg_stablemax_store_fn *)k->fn)(n, x, out, c);
    case SG_ALT_SLOT_softpick_store: return ((sg_softpick_store_fn *)k->fn)(n, x, out, c, m, em);
    case SG_ALT_SLOT_softpick_sums:
        return ((sg_softpick_sums_fn *)k->fn)(n, x, dy, c, m, em, dot);
    case SG_ALT_SLOT_softpick_bwd:
        ((sg_softpick_bwd_fn *)k->fn)(n, x, dy, out, c, m, em, 0.25f, 0.3f);
        return 0.0;
    case SG_ALT_SLOT_sigmoid_bwd: ((sg_sigmoid_bwd_fn *)k->fn)(n, y, dy, out, c); return 0.0;
    case SG_ALT_SLOT_nsigmoid_bwd: ((sg_nsigmoid_bwd_fn *)k->fn)(n, x, y, dy, out, c, 0.2f); return 0.0;
    case SG_ALT_SLOT_stablemax_bwd: ((sg_stablemax_bwd_fn *)k->fn)(n, x, y, dy, out, c, 0.2f); return 0.0;
    case SG_ALT_SLOT_log_shift_store: ((sg_log_shift_store_fn *)k->fn)(n, y, out, 0.7f); return 0.0;
    case SG_ALT_SLOT_gumbel_store: ((sg_gumbel_store_fn *)k->fn)(n, x, y, out); return 0.0;
    case SG_ALT_SLOT_gumbel_noise: return 0.0; /* alt_kernels_philox */
    case SG_ALT_SLOT_COUNT: break;
    }
    return 0.0;
}

/* One output of a kernel by its formula, in double (independent of
 * alternatives_ref.c), on the float z = x * c. */
static double kernel_formula(enum sg_alt_slot_id slot, float xv, float yv, float dyv, float c,
                             float m) {
    const double z = xv * c, em = (float)exp(-(double)m);
    const double e = em * expm1(z); /* = e^(z-m) - e^-m */
    switch (slot) {
    case SG_ALT_SLOT_sigmoid_store: return sigm(z);
    case SG_ALT_SLOT_stablemax_store: return stab(z);
    case SG_ALT_SLOT_softpick_store: return e > 0 ? e : 0.0;
    case SG_ALT_SLOT_softpick_bwd:
        return (e + em) * 0.25 * (z > 0 ? dyv - (double)0.3f : z < 0 ? (double)0.3f : 0.0) * c;
    case SG_ALT_SLOT_sigmoid_bwd: return (double)dyv * yv * (1.0 - yv) * c;
    case SG_ALT_SLOT_nsigmoid_bwd: return (double)yv * sigm(-z) * (dyv - (double)0.2f) * c;
    case SG_ALT_SLOT_stablemax_bwd: return (double)yv / (1.0 + fabs(z)) * (dyv - (double)0.2f) * c;
    case SG_ALT_SLOT_log_shift_store: return log((double)yv) - (double)0.7f;
    case SG_ALT_SLOT_gumbel_store: return (double)xv - log(-log((double)yv));
    default: return NAN;
    }
}

TEST(alt_kernels_tails) {
    static const size_t lens[] = {1,  2,  3,  7,  8,  9,  15, 16,  17,  31,   32,   33,   47, 48,
                                  63, 64, 65, 95, 96, 97, 127, 128, 129, 1023, 1024, 1025, 3000};
    size_t count;
    const sg_alt_kernel_entry *ents = sg_alt_kernel_entries(&count);
    const size_t maxn = 3000 + 8;
    float *x = test_alloc(maxn * sizeof *x), *y = test_alloc(maxn * sizeof *y), *dy = test_alloc(maxn * sizeof *dy);
    float *o1 = test_alloc(maxn * sizeof *o1), *o2 = test_alloc(maxn * sizeof *o2);
    int tested = 0;
    for (size_t ki = 0; ki < count; ki++) {
        const sg_alt_kernel_entry *k = &ents[ki], *ref = find_ref(k->slot);
        if (!sg_cpu_supports(k->isa) || k->slot == SG_ALT_SLOT_gumbel_noise) continue;
        CHECK(ref != NULL, "no reference kernel for slot %s", sg_alt_slot_name(k->slot));
        if (!ref) continue;
        for (size_t li = 0; li < sizeof lens / sizeof lens[0] - (test_quick ? 4 : 0); li++)
            for (int mode = 0; mode < 3; mode++) {
                /* mode 0: moderate x, m = 2.5 (expm1 form); 1: large x, m = 80
                 * (difference form), c = 0.5; 2: in place, unaligned */
                size_t n = lens[li], off = mode == 2 ? 1 : 0;
                float c = mode == 1 ? 0.5f : 1.0f, m = mode == 1 ? 80.0f : 2.5f;
                fill_normal(x + off, n, mode == 1 ? 60.0 : 2.0, 31 * n + (size_t)mode);
                for (size_t i = 0; i < n; i++) {
                    if (mode == 1 && x[off + i] * c > m) x[off + i] = m / c; /* z <= m */
                    if (mode != 1 && x[off + i] * c > m) x[off + i] = m;
                    y[off + i] = (float)(0.5 + 0.499 * sin(1.3 * (double)i)); /* in (0, 1) */
                    dy[off + i] = (float)sin(0.37 * (double)i);
                }
                if (n > 4) x[off + 3] = 0.0f; /* the kink */
                double d1, d2;
                double s1 = call_kernel(ref, n, x + off, y + off, dy + off, o1 + off, c, m, &d1);
                float *dst = mode == 2 ? o2 : o2 + off;
                const float *src = x + off;
                if (mode == 2 && (k->slot == SG_ALT_SLOT_sigmoid_store ||
                                  k->slot == SG_ALT_SLOT_stablemax_store ||
                                  k->slot == SG_ALT_SLOT_softpick_store)) {
                    memcpy(o2 + off, x + off, n * sizeof *x); /* in place: y == x */
                    dst = o2 + off;
                    src = o2 + off;
                } else if (mode == 2) {
                    dst = o2 + off;
                }
                double s2 = call_kernel(k, n, src, y + off, dy + off, dst, c, m, &d2);
                tested++;
                int bad = 0;
                if (!(fabs(s1 - s2) <= 2e-6 * fabs(s1) + 1e-30) || !(fabs(d1 - d2) <= 2e-6 * fabs(d1) + 1e-6))
                {
                    bad = 1;
                    CHECK(0, "%s n=%zu mode %d: sum %.9g vs ref %.9g, dot %.9g vs %.9g", k->name, n,
                          mode, s2, s1, d2, d1);
                }
                if (k->slot == SG_ALT_SLOT_softpick_sums) continue;
                for (size_t i = 0; i < n && !bad; i++) {
                    double f = kernel_formula(k->slot, x[off + i], y[off + i], dy[off + i], c, m);
                    double a = dst[i], r = o1[off + i];
                    double tol = 2e-6 * fabs(f) + 2e-6 * (k->slot == SG_ALT_SLOT_softpick_bwd ? 1.0 : 0.0) *
                                 (float)exp(-(double)m) + 1e-37;
                    if (k->slot == SG_ALT_SLOT_log_shift_store) tol = 4e-7 * fmax(1.0, fabs(f));
                    if (k->slot == SG_ALT_SLOT_gumbel_store) tol = 4e-7 * fmax(1.0, fabs(f));
                    if (!(fabs(a - f) <= tol) || !(fabs(r - f) <= tol))
                    {
                        bad = 1;
                        CHECK(0, "%s n=%zu mode %d i=%zu (x %.9g): got %.9g ref kernel %.9g formula %.9g",
                              k->name, n, mode, i, x[off + i], a, r, f);
                    }
                }
            }
    }
    CHECK(tested > 0, "no kernel tested");
    free(x), free(y), free(dy), free(o1), free(o2);
}

/* The vector log over its whole domain: denormals, near 1, huge, 0, inf,
 * negative, NaN; every kernel of the slot against libm in double. */
TEST(alt_kernels_log) {
    size_t count;
    const sg_alt_kernel_entry *ents = sg_alt_kernel_entries(&count);
    float v[40], out[40];
    const float special[] = {0x1p-149f, 1e-45f, 3e-39f, 1e-38f, 0x1p-126f, 1e-30f, 1e-7f, 0.5f,
                             0.70710677f, 0.7071068f, 1.0f - 0x1p-24f, 1.0f, 1.0f + 0x1p-23f, 1.4142135f,
                             1.4142137f, 2.0f, 3.14159f, 1e10f, 3e38f, FLT_MAX};
    const size_t ns = sizeof special / sizeof special[0];
    for (size_t i = 0; i < ns; i++) v[i] = special[i];
    v[ns] = 0.0f, v[ns + 1] = INFINITY, v[ns + 2] = -1.0f, v[ns + 3] = NAN, v[ns + 4] = -0.0f;
    const size_t n = ns + 5;
    for (size_t ki = 0; ki < count; ki++) {
        const sg_alt_kernel_entry *k = &ents[ki];
        if (k->slot != SG_ALT_SLOT_log_shift_store || !sg_cpu_supports(k->isa)) continue;
        ((sg_log_shift_store_fn *)k->fn)(n, v, out, 0.0f);
        for (size_t i = 0; i < ns; i++) {
            double ref = log((double)v[i]);
            CHECK(fabs(out[i] - ref) <= 3e-7 * fmax(fabs(ref), 0.5), "%s log(%.9g) = %.9g, libm %.9g",
                  k->name, v[i], out[i], ref);
        }
        CHECK(out[ns] == -INFINITY && out[ns + 1] == INFINITY && isnan(out[ns + 2]) && isnan(out[ns + 3]) &&
                  out[ns + 4] == -INFINITY,
              "%s log specials: %g %g %g %g %g", k->name, out[ns], out[ns + 1], out[ns + 2], out[ns + 3],
              out[ns + 4]);
    }
}

/* The Gumbel noise kernels (vector Philox) against sg_random_uniform_f32:
 * every length around the tiles (4 x 8 and 4 x 16 columns per step), a
 * column offset, a row and offset that use every counter word. */
TEST(alt_kernels_philox) {
    sg_context *ctx = test_context(1);
    size_t count;
    const sg_alt_kernel_entry *ents = sg_alt_kernel_entries(&count);
    const size_t maxn = 300, col0 = 68, row = 5;
    const uint64_t seed = 0xDEADBEEF12345ULL, offset = 0x1234567890ULL;
    const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    float *u = test_alloc((row + 1) * (col0 + maxn) * sizeof *u), *x = test_alloc(maxn * sizeof *x);
    float *t = test_alloc(maxn * sizeof *t);
    sg_random_uniform_f32(ctx, seed, offset, row + 1, col0 + maxn, u, col0 + maxn);
    const float *ur = u + row * (col0 + maxn) + col0;
    fill_normal(x, maxn, 2.0, 4);
    static const size_t lens[] = {1, 3, 4, 5, 31, 32, 33, 63, 64, 65, 129, 300};
    int tested = 0;
    for (size_t ki = 0; ki < count; ki++) {
        const sg_alt_kernel_entry *k = &ents[ki];
        if (k->slot != SG_ALT_SLOT_gumbel_noise || !sg_cpu_supports(k->isa)) continue;
        for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
            size_t n = lens[li];
            for (size_t i = 0; i < maxn; i++) t[i] = SENTINEL;
            ((sg_gumbel_noise_fn *)k->fn)(n, x, t, key, (uint32_t)row, offset, col0);
            tested++;
            for (size_t i = 0; i < n; i++) {
                double f = (double)x[i] - log(-log((double)ur[i]));
                if (!(fabs(t[i] - f) <= 4e-7 * fmax(1.0, fabs(f)))) {
                    CHECK(0, "%s n=%zu i=%zu: %.9g, from sg_random_uniform_f32 %.9g", k->name, n, i,
                          t[i], f);
                    break;
                }
            }
            for (size_t i = n; i < maxn; i++) CHECK(t[i] == SENTINEL, "%s wrote past n", k->name);
        }
    }
    CHECK(tested > 0, "no gumbel_noise kernel tested");
    free(u), free(x), free(t);
    sg_context_destroy(ctx);
}

/* ---- forward ------------------------------------------------------------- */

TEST(alt_forward_reference) {
    sg_context *ctx = test_context(2);
    static const size_t ns[] = {1, 2, 7, 8, 9, 15, 16, 17, 31, 33, 63, 64, 65, 129, 1000, 1025};
    static const double scales[] = {0.1, 1.0, 4.0, 30.0};
    static const float temps[] = {0.5f, 1.0f, 3.0f};
    for (int op = 0; op < N_FWD; op++) {
        err_acc e = {0, 0};
        for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++)
            for (size_t si = 0; si < 4; si++)
                for (size_t ti = 0; ti < 3; ti++) {
                    if (test_quick && (ni % 3 != 0 || si == 0 || ti == 1)) continue; /* emulators */
                    size_t n = ns[ni], rows = 3, ld = n + 3;
                    float *x = test_alloc(rows * ld * sizeof *x), *y = test_alloc(rows * ld * sizeof *y);
                    fill_normal(x, rows * ld, scales[si], n * 17 + si * 5 + ti + 100 * (size_t)op);
                    if (op == OP_NSIGMOID && si == 3) /* a row deep in the negative tail */
                        for (size_t i = 0; i < n; i++) x[i] = x[i] - 200.0f;
                    for (size_t i = 0; i < rows * ld; i++) y[i] = SENTINEL;
                    sg_softmax_options o = test_temperature(temps[ti]);
                    sg_status st = run_fwd(ctx, (fwd_op)op, rows, n, x, ld, y, ld, &o);
                    CHECK(st == SG_OK, "%s: status %d", fwd_names[op], (int)st);
                    char what[64];
                    snprintf(what, sizeof what, "scale=%g T=%g", scales[si], (double)temps[ti]);
                    check_rows((fwd_op)op, rows, n, x, ld, y, ld, NULL, 0, NULL, 0, temps[ti], what, &e);
                    for (size_t r = 0; r < rows; r++)
                        for (size_t i = n; i < ld; i++)
                            CHECK(y[r * ld + i] == SENTINEL, "%s wrote the stride gap", fwd_names[op]);
                    /* in place gives the same bits */
                    float *xi = test_alloc(rows * ld * sizeof *xi);
                    memcpy(xi, x, rows * ld * sizeof *x);
                    run_fwd(ctx, (fwd_op)op, rows, n, xi, ld, xi, ld, &o);
                    for (size_t r = 0; r < rows; r++)
                        CHECK(memcmp(xi + r * ld, y + r * ld, n * sizeof *y) == 0, "%s in place differs",
                              fwd_names[op]);
                    free(x), free(y), free(xi);
                }
        CHECK(e.worst < 2e-6, "%s: worst relative error %.3g", fwd_names[op], e.worst);
    }
    sg_context_destroy(ctx);
}

static void masks_case(sg_context *ctx, size_t rows, size_t n, size_t ld);

/* Masked rows run the kernels on blocks of z (1024): short rows and rows
 * over several blocks, in place too. */
TEST(alt_masks) {
    sg_context *ctx = test_context(2);
    masks_case(ctx, 5, 77, 80);
    masks_case(ctx, 2, 2500, 2503);
    sg_context_destroy(ctx);
}

static void masks_case(sg_context *ctx, size_t rows, size_t n, size_t ld) {
    float *x = test_alloc(rows * ld * sizeof *x), *y = test_alloc(rows * ld * sizeof *y);
    float *add = test_alloc(rows * ld * sizeof *add);
    uint8_t *keep = test_alloc(rows * ld);
    test_rng rng = test_rng_seed(9);
    fill_normal(x, rows * ld, 2.0, 3);
    for (size_t i = 0; i < rows * ld; i++) {
        keep[i] = test_uniform(&rng) < 0.7;
        double u = test_uniform(&rng);
        add[i] = u < 0.1 ? -INFINITY : (float)(u - 0.5);
    }
    for (int op = 0; op < N_FWD; op++)
        for (int variant = 0; variant < 4; variant++) {
            err_acc e = {0, 0};
            sg_softmax_options o = test_temperature(variant == 3 ? 2.0f : 1.0f);
            if (variant == 0 || variant == 2) o.keep_mask = keep, o.keep_mask_ld = variant == 2 ? 0 : ld;
            if (variant == 1 || variant == 3) o.add_mask = add, o.add_mask_ld = variant == 3 ? 0 : ld;
            for (size_t i = 0; i < rows * ld; i++) y[i] = SENTINEL;
            sg_status st = run_fwd(ctx, (fwd_op)op, rows, n, x, ld, y, ld, &o);
            CHECK(st == SG_OK, "%s masks: status %d", fwd_names[op], (int)st);
            check_rows((fwd_op)op, rows, n, x, ld, y, ld, o.keep_mask, o.keep_mask_ld, o.add_mask,
                       o.add_mask_ld, o.temperature, "masked", &e);
            float *xi = test_alloc(rows * ld * sizeof *xi);
            memcpy(xi, x, rows * ld * sizeof *x);
            run_fwd(ctx, (fwd_op)op, rows, n, xi, ld, xi, ld, &o);
            for (size_t r = 0; r < rows; r++)
                CHECK(memcmp(xi + r * ld, y + r * ld, n * sizeof *y) == 0, "%s masked in place differs",
                      fwd_names[op]);
            free(xi);
        }
    free(x), free(y), free(add), free(keep);
}

/* ---- properties ------------------------------------------------------------ */

static double max_diff(size_t n, const float *a, const float *b) {
    double d = 0.0;
    for (size_t i = 0; i < n; i++) {
        double v = fabs((double)a[i] - b[i]);
        if (v > d || v != v) d = v; /* (not fmax: GCC 12's aarch64 vectorizer crashes on it) */
    }
    return d;
}

TEST(alt_properties) {
    sg_context *ctx = test_context(1);
    const size_t n = 40;
    float x[40], xs[40], y[40], ys[40];
    /* x on a grid of 1/64, shifted by 1: exact in float */
    test_rng rng = test_rng_seed(21);
    for (size_t i = 0; i < n; i++) x[i] = (float)(floor(test_normal(&rng) * 128.0) / 64.0);
    for (size_t i = 0; i < n; i++) xs[i] = x[i] + 1.0f;
    for (int op = 0; op < N_FWD; op++) {
        run_fwd(ctx, (fwd_op)op, 1, n, x, n, y, n, NULL);
        run_fwd(ctx, (fwd_op)op, 1, n, xs, n, ys, n, NULL);
        double d = max_diff(n, y, ys);
        if (op == OP_ADAPTIVE) CHECK(d <= 1e-6, "adaptive should be shift-invariant (%.3g)", d);
        else CHECK(d > 1e-3, "%s should not be shift-invariant (max diff %.3g)", fwd_names[op], d);
    }
    /* Gumbel-softmax is softmax: shift-invariant with the same noise */
    sg_gumbel_softmax_f32(ctx, 1, n, x, n, 7, 0, 0, y, n, NULL, 0, NULL);
    sg_gumbel_softmax_f32(ctx, 1, n, xs, n, 7, 0, 0, ys, n, NULL, 0, NULL);
    CHECK(max_diff(n, y, ys) <= 1e-6, "gumbel should be shift-invariant (%.3g)", max_diff(n, y, ys));

    /* softpick: rows sum to <= 1, nonnegative, zero where x <= 0 */
    for (int trial = 0; trial < 50; trial++) {
        fill_normal(x, n, trial < 25 ? 0.5 : 5.0, 1000 + (uint64_t)trial);
        sg_softpick_f32(ctx, 1, n, x, n, y, n, EPS, NULL);
        double s = 0.0;
        for (size_t i = 0; i < n; i++) {
            s += y[i];
            CHECK(y[i] >= 0.0f && (x[i] > 0.0f || y[i] == 0.0f), "softpick y[%zu] = %g at x %g", i,
                  y[i], x[i]);
        }
        CHECK(s <= 1.0 + 1e-6, "softpick row sums to %.9g > 1", s);
    }
    memset(x, 0, sizeof x);
    sg_softpick_f32(ctx, 1, n, x, n, y, n, EPS, NULL);
    for (size_t i = 0; i < n; i++) CHECK(y[i] == 0.0f, "all-zero row: y[%zu] = %g", i, y[i]);
    sg_softpick_f32(ctx, 1, n, x, n, y, n, 0.0f, NULL);
    for (size_t i = 0; i < n; i++) CHECK(y[i] == 0.0f, "all-zero row, eps 0: y[%zu] = %g", i, y[i]);
    /* stablemax and normalized sigmoid on the simplex */
    fill_normal(x, n, 10.0, 77);
    for (int op = OP_STABLEMAX; op <= OP_NSIGMOID; op++) {
        if (op == OP_LOG_STABLEMAX || op == OP_SIGMOID) continue;
        run_fwd(ctx, (fwd_op)op, 1, n, x, n, y, n, NULL);
        double s = 0.0;
        for (size_t i = 0; i < n; i++) {
            s += y[i];
            CHECK(y[i] > 0.0f, "%s y <= 0", fwd_names[op]);
        }
        CHECK(fabs(s - 1.0) <= 2e-6, "%s sums to %.9g", fwd_names[op], s);
    }
    sg_context_destroy(ctx);
}

/* Sigmoid on contiguous rows runs as one flat sequence cut into 4096s:
 * the same bits as row by row (strided copy), forward and backward. */
TEST(alt_sigmoid_flat) {
    sg_context *ctx = test_context(2);
    const size_t rows = 100, n = 77, ld = 78, count = rows * n;
    float *x = test_alloc(count * sizeof *x), *xs = test_alloc(rows * ld * sizeof *xs);
    float *y = test_alloc(count * sizeof *y), *ys = test_alloc(rows * ld * sizeof *ys);
    float *dy = test_alloc(count * sizeof *dy), *dys = test_alloc(rows * ld * sizeof *dys);
    fill_normal(x, count, 4.0, 61);
    fill_normal(dy, count, 1.0, 62);
    for (size_t r = 0; r < rows; r++)
        for (size_t i = 0; i < n; i++) xs[r * ld + i] = x[r * n + i], dys[r * ld + i] = dy[r * n + i];
    sg_softmax_options o = test_temperature(0.5f);
    sg_sigmoid_f32(ctx, rows, n, x, n, y, n, &o);
    sg_sigmoid_f32(ctx, rows, n, xs, ld, ys, ld, &o);
    for (size_t r = 0; r < rows; r++)
        CHECK(memcmp(y + r * n, ys + r * ld, n * sizeof *y) == 0, "sigmoid flat row %zu differs", r);
    sg_sigmoid_backward_f32(ctx, rows, n, y, n, dy, n, x, n, &o); /* dx into x */
    sg_sigmoid_backward_f32(ctx, rows, n, ys, ld, dys, ld, xs, ld, &o);
    for (size_t r = 0; r < rows; r++)
        CHECK(memcmp(x + r * n, xs + r * ld, n * sizeof *x) == 0, "sigmoid backward flat row %zu differs", r);
    free(x), free(xs), free(y), free(ys), free(dy), free(dys);
    sg_context_destroy(ctx);
}

/* ---- backward ------------------------------------------------------------ */

typedef enum { B_SOFTPICK, B_STABLEMAX, B_SIGMOID, B_NSIGMOID, N_BWD } bwd_op;
static const fwd_op bwd_fwd[] = {OP_SOFTPICK, OP_STABLEMAX, OP_SIGMOID, OP_NSIGMOID};

static sg_status run_bwd(sg_context *ctx, bwd_op op, size_t rows, size_t n, const float *x,
                         const float *y, const float *dy, float *dx, size_t ld,
                         const sg_softmax_options *o) {
    switch (op) {
    case B_SOFTPICK: return sg_softpick_backward_f32(ctx, rows, n, x, ld, dy, ld, dx, ld, EPS, o);
    case B_STABLEMAX: return sg_stablemax_backward_f32(ctx, rows, n, x, ld, y, ld, dy, ld, dx, ld, o);
    case B_SIGMOID: return sg_sigmoid_backward_f32(ctx, rows, n, y, ld, dy, ld, dx, ld, o);
    case B_NSIGMOID:
        return sg_normalized_sigmoid_backward_f32(ctx, rows, n, x, ld, y, ld, dy, ld, dx, ld, o);
    case N_BWD: break;
    }
    return SG_ERR_ARGUMENT;
}

/* L(x) = sum dy_i f(x)_i in double, f the reference. */
static double ref_l(fwd_op op, size_t n, const double *xd, const uint8_t *keep, const float *add,
                    double t, const float *dy, double *z, int *kept, double *yy) {
    for (size_t i = 0; i < n; i++) {
        kept[i] = !((keep && !keep[i]) || (add && add[i] == -INFINITY));
        z[i] = kept[i] ? xd[i] / t + (add ? (double)add[i] : 0.0) : 0.0;
    }
    ref_fwd(op, n, z, kept, yy);
    double l = 0.0;
    for (size_t i = 0; i < n; i++) l += dy[i] * yy[i];
    return l;
}

TEST(alt_backward_fd) {
    sg_context *ctx = test_context(2);
    static const size_t ns[] = {1, 5, 16, 17, 40, 133};
    double *xd = test_alloc(200 * sizeof *xd), *z = test_alloc(200 * sizeof *z), *yy = test_alloc(200 * sizeof *yy);
    int *kept = test_alloc(200 * sizeof *kept);
    float *x = test_alloc(200 * sizeof *x), *y = test_alloc(200 * sizeof *y), *dy = test_alloc(200 * sizeof *dy);
    float *dx = test_alloc(200 * sizeof *dx), *add = test_alloc(200 * sizeof *add);
    uint8_t *keep = test_alloc(200);
    for (int op = 0; op < N_BWD; op++)
        for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++)
            for (int variant = 0; variant < 3; variant++) { /* plain, T = 2 + keep, T = 0.5 + add */
                size_t n = ns[ni];
                test_rng rng = test_rng_seed(n * 7 + (size_t)variant + 50 * (size_t)op);
                for (size_t i = 0; i < n; i++) {
                    double v = 1.5 * test_normal(&rng);
                    if (fabs(v) < 0.05) v = v < 0 ? -0.05 : 0.05; /* away from softpick's kink */
                    x[i] = (float)v;
                    xd[i] = x[i];
                    dy[i] = (float)test_normal(&rng);
                    keep[i] = i % 4 != 1;
                    add[i] = i % 5 == 2 ? -INFINITY : (float)(0.25 * test_normal(&rng));
                }
                sg_softmax_options o = test_temperature(variant == 1 ? 2.0f : variant == 2 ? 0.5f : 1.0f);
                if (variant == 1) o.keep_mask = keep;
                if (variant == 2) o.add_mask = add;
                CHECK(run_fwd(ctx, bwd_fwd[op], 1, n, x, n, y, n, &o) == SG_OK, "forward failed");
                CHECK(run_bwd(ctx, (bwd_op)op, 1, n, x, y, dy, dx, n, &o) == SG_OK, "%d: %s", op,
                      sg_context_error(ctx));
                double worst = 0.0, scale = 1e-12;
                double *fd = test_alloc(n * sizeof *fd);
                for (size_t i = 0; i < n; i++) {
                    double h = 1e-5 * fmax(1.0, fabs(xd[i])), keepv = xd[i];
                    xd[i] = keepv + h;
                    double lp = ref_l(bwd_fwd[op], n, xd, o.keep_mask, o.add_mask, o.temperature, dy, z, kept, yy);
                    xd[i] = keepv - h;
                    double lm = ref_l(bwd_fwd[op], n, xd, o.keep_mask, o.add_mask, o.temperature, dy, z, kept, yy);
                    xd[i] = keepv;
                    fd[i] = (lp - lm) / (2 * h);
                    scale = fmax(scale, fabs(fd[i]));
                }
                for (size_t i = 0; i < n; i++) worst = fmax(worst, fabs(dx[i] - fd[i]));
                CHECK(worst <= 1e-4 * scale + 1e-6, "%s backward n=%zu variant %d: |dx - fd| %.3g (scale %.3g)",
                      fwd_names[bwd_fwd[op]], n, variant, worst, scale);
                for (size_t i = 0; i < n; i++)
                    if ((variant == 1 && !keep[i]) || (variant == 2 && add[i] == -INFINITY))
                        CHECK(dx[i] == 0.0f, "removed entry %zu has dx %g", i, dx[i]);
                free(fd);
            }
    free(xd), free(z), free(yy), free(kept), free(x), free(y), free(dy), free(dx), free(add), free(keep);
    sg_context_destroy(ctx);
}

static double ref_ce(size_t n, const double *xd, double t, size_t k) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += stab(xd[i] / t);
    return log(s) - log(stab(xd[k] / t));
}

TEST(alt_stablemax_loss) {
    sg_context *ctx = test_context(2);
    const size_t rows = 6, n = 37;
    float *x = test_alloc(rows * n * sizeof *x), *dx = test_alloc(rows * n * sizeof *dx), loss[6], loss2[6];
    double xd[37];
    int32_t target[6];
    fill_normal(x, rows * n, 3.0, 5);
    for (size_t r = 0; r < rows; r++) target[r] = (int32_t)((r * 11) % n);
    for (int ti = 0; ti < 2; ti++) {
        sg_softmax_options o = test_temperature(ti ? 2.0f : 1.0f);
        CHECK(sg_stablemax_cross_entropy_f32(ctx, rows, n, x, n, target, loss, dx, n, &o) == SG_OK, "ce");
        CHECK(sg_stablemax_cross_entropy_f32(ctx, rows, n, x, n, target, loss2, NULL, 0, &o) == SG_OK,
              "ce without dx");
        for (size_t r = 0; r < rows; r++) {
            for (size_t i = 0; i < n; i++) xd[i] = x[r * n + i];
            double ref = ref_ce(n, xd, o.temperature, (size_t)target[r]);
            CHECK(fabs(loss[r] - ref) <= 1e-6 * fmax(1.0, fabs(ref)), "loss %.9g ref %.9g", loss[r], ref);
            CHECK(loss[r] == loss2[r], "loss with and without dx differ");
            for (size_t i = 0; i < n; i++) {
                double h = 1e-5 * fmax(1.0, fabs(xd[i])), v = xd[i];
                xd[i] = v + h;
                double lp = ref_ce(n, xd, o.temperature, (size_t)target[r]);
                xd[i] = v - h;
                double lm = ref_ce(n, xd, o.temperature, (size_t)target[r]);
                xd[i] = v;
                double fd = (lp - lm) / (2 * h);
                CHECK(fabs(dx[r * n + i] - fd) <= 1e-5, "ce dx[%zu][%zu] %.9g fd %.9g", r, i,
                      dx[r * n + i], fd);
            }
        }
    }
    /* log-stablemax agrees with -loss at the target */
    float *ly = test_alloc(rows * n * sizeof *ly);
    sg_log_stablemax_f32(ctx, rows, n, x, n, ly, n, NULL);
    sg_stablemax_cross_entropy_f32(ctx, rows, n, x, n, target, loss, NULL, 0, NULL);
    for (size_t r = 0; r < rows; r++)
        CHECK(fabs(-ly[r * n + (size_t)target[r]] - loss[r]) <= 1e-6 * fmax(1.0, loss[r]),
              "log-stablemax %.9g vs loss %.9g", ly[r * n + (size_t)target[r]], loss[r]);
    /* in place dx == x */
    float *xi = test_alloc(rows * n * sizeof *xi);
    memcpy(xi, x, rows * n * sizeof *x);
    sg_stablemax_cross_entropy_f32(ctx, rows, n, x, n, target, loss, dx, n, NULL);
    sg_stablemax_cross_entropy_f32(ctx, rows, n, xi, n, target, loss2, xi, n, NULL);
    CHECK(memcmp(xi, dx, rows * n * sizeof *dx) == 0, "ce in place differs");
    free(x), free(dx), free(ly), free(xi);
    sg_context_destroy(ctx);
}

/* ---- special values ------------------------------------------------------- */

static int near(float a, double b) { return fabs(a - b) <= 1e-6 * fabs(b) + 1e-30; }

TEST(alt_special_values) {
    sg_context *ctx = test_context(1);
    const float inf = INFINITY, nan = NAN;
    float y[8], dx[8];
    /* softpick: -inf adds 1 to the denominator, unmasked and masked paths */
    {
        float x[4] = {-inf, 1.0f, 2.0f, -3.0f};
        uint8_t keep[4] = {1, 1, 1, 1};
        double d = 1.0 + expm1(1.0) + expm1(2.0) + fabs(expm1(-3.0)) + EPS;
        for (int masked = 0; masked < 2; masked++) {
            sg_softmax_options o = test_temperature(1.0f);
            if (masked) o.keep_mask = keep;
            sg_softpick_f32(ctx, 1, 4, x, 4, y, 4, EPS, &o);
            CHECK(y[0] == 0.0f && near(y[1], expm1(1.0) / d) && near(y[2], expm1(2.0) / d) && y[3] == 0.0f,
                  "softpick -inf (masked %d): %g %g %g %g", masked, y[0], y[1], y[2], y[3]);
        }
        float xn[4] = {nan, 1.0f, 2.0f, 0.5f};
        keep[0] = 0;
        sg_softmax_options o = test_temperature(1.0f);
        o.keep_mask = keep;
        sg_softpick_f32(ctx, 1, 4, xn, 4, y, 4, EPS, &o); /* removed NaN: ignored */
        CHECK(y[0] == 0.0f && y[1] > 0.0f && !isnan(y[3]), "softpick removed NaN");
        sg_softpick_f32(ctx, 1, 4, xn, 4, y, 4, EPS, NULL);
        CHECK(isnan(y[0]) && isnan(y[1]) && isnan(y[3]), "softpick kept NaN");
        keep[0] = 0, keep[2] = 0;
        float xi[4] = {1.0f, inf, inf, inf};
        sg_softpick_f32(ctx, 1, 4, xi, 4, y, 4, EPS, NULL);
        CHECK(y[0] == 0.0f && y[1] == 1.0f / 3 && y[3] == 1.0f / 3, "softpick +inf");
        sg_softpick_f32(ctx, 1, 4, xi, 4, y, 4, EPS, &o);
        CHECK(y[0] == 0.0f && y[1] == 0.5f && y[2] == 0.0f && y[3] == 0.5f, "softpick +inf masked");
        float dyv[4] = {1, 2, 3, 4};
        sg_softpick_backward_f32(ctx, 1, 4, xi, 4, dyv, 4, dx, 4, EPS, NULL);
        CHECK(dx[0] == 0.0f && dx[1] == 0.0f && dx[3] == 0.0f, "softpick +inf backward");
        sg_softpick_backward_f32(ctx, 1, 4, xn, 4, dyv, 4, dx, 4, EPS, NULL);
        CHECK(isnan(dx[0]) && isnan(dx[2]), "softpick NaN backward");
        float xneg[4] = {-1.0f, -2.0f, 0.0f, -inf};
        sg_softpick_f32(ctx, 1, 4, xneg, 4, y, 4, EPS, NULL);
        CHECK(y[0] == 0.0f && y[1] == 0.0f && y[2] == 0.0f && y[3] == 0.0f, "softpick all <= 0");
        keep[0] = keep[1] = keep[2] = keep[3] = 0;
        sg_softpick_f32(ctx, 1, 4, xneg, 4, y, 4, EPS, &o);
        CHECK(y[0] == 0.0f && y[3] == 0.0f, "softpick all removed");
        float xh[3] = {3e38f, 3e38f, -3e38f};
        o = test_temperature(0.5f);
        sg_softpick_f32(ctx, 1, 3, xh, 3, y, 3, EPS, &o);
        CHECK(near(y[0], 0.5) && near(y[1], 0.5) && y[2] == 0.0f, "softpick huge: %g %g %g", y[0], y[1], y[2]);
    }
    /* stablemax and log-stablemax */
    {
        float xi[3] = {inf, 1.0f, inf}, xn[2] = {nan, 1.0f}, xm[2] = {-inf, -inf};
        sg_stablemax_f32(ctx, 1, 3, xi, 3, y, 3, NULL);
        CHECK(y[0] == 0.5f && y[1] == 0.0f && y[2] == 0.5f, "stablemax +inf");
        sg_log_stablemax_f32(ctx, 1, 3, xi, 3, y, 3, NULL);
        CHECK(near(y[0], -log(2.0)) && y[1] == -inf, "log-stablemax +inf");
        sg_stablemax_f32(ctx, 1, 2, xn, 2, y, 2, NULL);
        CHECK(isnan(y[0]) && isnan(y[1]), "stablemax NaN");
        sg_stablemax_f32(ctx, 1, 2, xm, 2, y, 2, NULL);
        CHECK(y[0] == 0.0f && y[1] == 0.0f, "stablemax all -inf");
        sg_log_stablemax_f32(ctx, 1, 2, xm, 2, y, 2, NULL);
        CHECK(y[0] == -inf && y[1] == -inf, "log-stablemax all -inf");
        float xh[2] = {3e38f, 3e38f}, xb[2] = {3e38f, 1.0f};
        sg_softmax_options o = test_temperature(0.5f);
        sg_stablemax_f32(ctx, 1, 2, xh, 2, y, 2, &o);
        CHECK(near(y[0], 0.5) && near(y[1], 0.5), "stablemax huge with T: %g %g", y[0], y[1]);
        sg_stablemax_f32(ctx, 1, 2, xb, 2, y, 2, NULL);
        CHECK(near(y[0], 1.0) && near(y[1], 2.0 / (3e38 + 2)), "stablemax huge sum: %g %g", y[0], y[1]);
        float yi[3] = {0.5f, 0.0f, 0.5f}, dyv[3] = {1, 2, 3};
        sg_stablemax_backward_f32(ctx, 1, 3, xi, 3, yi, 3, dyv, 3, dx, 3, NULL);
        CHECK(dx[0] == 0.0f && dx[2] == 0.0f, "stablemax backward at +inf");
        int32_t t = 0, t1 = 1;
        float loss;
        sg_stablemax_cross_entropy_f32(ctx, 1, 3, xi, 3, &t, &loss, dx, 3, NULL);
        CHECK(near(loss, log(2.0)) && dx[0] == 0.0f, "ce +inf target: %g", loss);
        sg_stablemax_cross_entropy_f32(ctx, 1, 3, xi, 3, &t1, &loss, NULL, 0, NULL);
        CHECK(loss == inf, "ce +inf elsewhere: %g", loss);
        sg_stablemax_cross_entropy_f32(ctx, 1, 2, xn, 2, &t1, &loss, dx, 2, NULL);
        CHECK(isnan(loss) && isnan(dx[1]), "ce NaN");
        sg_stablemax_cross_entropy_f32(ctx, 1, 2, xm, 2, &t, &loss, NULL, 0, NULL);
        CHECK(loss == inf, "ce -inf target");
    }
    /* sigmoid and normalized sigmoid */
    {
        float x[6] = {inf, -inf, nan, 0.0f, 100.0f, -100.0f};
        sg_sigmoid_f32(ctx, 1, 6, x, 6, y, 6, NULL);
        CHECK(y[0] == 1.0f && y[1] == 0.0f && isnan(y[2]) && y[3] == 0.5f && y[4] == 1.0f &&
                  y[5] >= 0.0f && y[5] < 1e-43f, "sigmoid specials: %g %g %g %g %g %g", y[0], y[1], y[2],
              y[3], y[4], y[5]);
        float ys[3] = {0.0f, 1.0f, 0.5f}, dyv[3] = {5, 5, 1};
        sg_sigmoid_backward_f32(ctx, 1, 3, ys, 3, dyv, 3, dx, 3, NULL);
        CHECK(dx[0] == 0.0f && dx[1] == 0.0f && dx[2] == 0.25f, "sigmoid backward saturated");
        float a[2] = {inf, 0.0f}, b[2] = {-inf, -inf}, c2[2] = {nan, 1.0f}, d[2] = {-inf, -1000.0f},
              e[2] = {-1000.0f, -1001.0f};
        sg_normalized_sigmoid_f32(ctx, 1, 2, a, 2, y, 2, NULL);
        CHECK(near(y[0], 2.0 / 3) && near(y[1], 1.0 / 3), "nsigmoid +inf: %g %g", y[0], y[1]);
        sg_normalized_sigmoid_f32(ctx, 1, 2, b, 2, y, 2, NULL);
        CHECK(y[0] == 0.0f && y[1] == 0.0f, "nsigmoid all -inf");
        sg_normalized_sigmoid_f32(ctx, 1, 2, c2, 2, y, 2, NULL);
        CHECK(isnan(y[0]) && isnan(y[1]), "nsigmoid NaN");
        sg_normalized_sigmoid_f32(ctx, 1, 2, d, 2, y, 2, NULL);
        CHECK(y[0] == 0.0f && y[1] == 1.0f, "nsigmoid -inf, -1000");
        sg_normalized_sigmoid_f32(ctx, 1, 2, e, 2, y, 2, NULL);
        CHECK(near(y[0], 1.0 / (1.0 + exp(-1.0))), "nsigmoid tail: %g", y[0]);
        float yv[2] = {2.0f / 3, 1.0f / 3}, dyy[2] = {1.0f, 0.0f};
        sg_normalized_sigmoid_backward_f32(ctx, 1, 2, a, 2, yv, 2, dyy, 2, dx, 2, NULL);
        CHECK(dx[0] == 0.0f && dx[1] != 0.0f, "nsigmoid backward at +inf: %g %g", dx[0], dx[1]);
    }
    /* adaptive temperature and Gumbel follow the softmax table */
    {
        float xi[3] = {inf, 1.0f, inf}, xn[3] = {nan, 1.0f, 2.0f}, beta[1];
        sg_adaptive_temperature_softmax_f32(ctx, 1, 3, xi, 3, y, 3, beta, NULL);
        CHECK(y[0] == 0.5f && y[1] == 0.0f && y[2] == 0.5f && beta[0] == 1.0f, "adaptive +inf");
        sg_adaptive_temperature_softmax_f32(ctx, 1, 3, xn, 3, y, 3, beta, NULL);
        CHECK(isnan(y[0]) && isnan(y[2]), "adaptive NaN");
        float ys[3];
        sg_gumbel_softmax_f32(ctx, 1, 3, xi, 3, 1, 2, 1, y, 3, ys, 3, NULL);
        CHECK(ys[0] == 0.5f && ys[2] == 0.5f && y[0] == 1.0f && y[1] == 0.0f && y[2] == 0.0f,
              "gumbel +inf ties to the lower index: %g %g %g", y[0], y[1], y[2]);
        sg_gumbel_softmax_f32(ctx, 1, 3, xn, 3, 1, 2, 1, y, 3, ys, 3, NULL);
        CHECK(isnan(y[0]) && isnan(ys[1]), "gumbel NaN");
        uint8_t none[3] = {0, 0, 0};
        sg_softmax_options o = test_temperature(1.0f);
        o.keep_mask = none;
        sg_gumbel_softmax_f32(ctx, 1, 3, xn, 3, 1, 2, 1, y, 3, ys, 3, &o);
        CHECK(y[0] == 0.0f && y[1] == 0.0f && y[2] == 0.0f && ys[1] == 0.0f, "gumbel all removed");
    }
    sg_context_destroy(ctx);
}

/* ---- Gumbel-softmax --------------------------------------------------------- */

TEST(alt_gumbel) {
    sg_context *ctx = test_context(2);
    const size_t rows = 9, n = 37, ld = 40;
    float *x = test_alloc(rows * ld * sizeof *x), *u = test_alloc(rows * n * sizeof *u);
    float *y = test_alloc(rows * ld * sizeof *y), *ys = test_alloc(rows * ld * sizeof *ys);
    float *y2 = test_alloc(rows * ld * sizeof *y2), *dy = test_alloc(rows * ld * sizeof *dy);
    float *dx = test_alloc(rows * ld * sizeof *dx), *dx2 = test_alloc(rows * ld * sizeof *dx2);
    double zz[37];
    fill_normal(x, rows * ld, 1.5, 11);
    fill_normal(dy, rows * ld, 1.0, 12);
    static const float taus[] = {0.3f, 1.0f, 4.0f};
    for (int ti = 0; ti < 3; ti++) {
        const uint64_t seed = 0x123456789ULL, off = 5 + (uint64_t)ti;
        sg_softmax_options o = test_temperature(taus[ti]);
        CHECK(sg_gumbel_softmax_f32(ctx, rows, n, x, ld, seed, off, 0, y, ld, NULL, 0, &o) == SG_OK,
              "gumbel: %s", sg_context_error(ctx));
        sg_random_uniform_f32(ctx, seed, off, rows, n, u, n);
        double worst = 0.0;
        for (size_t r = 0; r < rows; r++) {
            double m = -INFINITY, s = 0.0;
            for (size_t i = 0; i < n; i++) {
                double g = -log(-log((double)u[r * n + i]));
                CHECK(isfinite(g) && u[r * n + i] > 0.0f && u[r * n + i] < 1.0f, "noise not finite");
                zz[i] = (double)(float)((double)x[r * ld + i] + g) * (double)(1.0f / taus[ti]); /* the core's c = 1/T */
                m = fmax(m, zz[i]);
            }
            for (size_t i = 0; i < n; i++) s += exp(zz[i] - m);
            for (size_t i = 0; i < n; i++) {
                /* the core's bound: (x - max) and c = 1/T each rounded */
                double ref = exp(zz[i] - m) / s, rel = fabs(y[r * ld + i] - ref) / ref;
                worst = fmax(worst, rel / (1.0 + 0.25 * fabs(zz[i] - m) + 1.0 / taus[ti]));
            }
        }
        CHECK(worst <= 2e-6, "gumbel tau %g: worst scaled relative error %.3g", (double)taus[ti], worst);
        /* hard: one-hot at the soft argmax; soft output alongside */
        CHECK(sg_gumbel_softmax_f32(ctx, rows, n, x, ld, seed, off, 1, y2, ld, ys, ld, &o) == SG_OK, "hard");
        for (size_t r = 0; r < rows; r++) {
            size_t best = 0;
            for (size_t i = 0; i < n; i++) best = ys[r * ld + i] > ys[r * ld + best] ? i : best;
            CHECK(memcmp(ys + r * ld, y + r * ld, n * sizeof *y) == 0, "soft output differs with hard");
            for (size_t i = 0; i < n; i++)
                CHECK(y2[r * ld + i] == (i == best ? 1.0f : 0.0f), "hard row %zu not one-hot at %zu", r, best);
        }
        /* backward: the softmax backward on y_soft */
        CHECK(sg_gumbel_softmax_backward_f32(ctx, rows, n, ys, ld, dy, ld, dx, ld, &o) == SG_OK, "bwd");
        sg_softmax_backward_f32(ctx, rows, n, ys, ld, dy, ld, dx2, ld, &o);
        for (size_t r = 0; r < rows; r++)
            CHECK(memcmp(dx + r * ld, dx2 + r * ld, n * sizeof *dx) == 0, "gumbel backward differs");
    }
    /* other offsets and seeds give other noise */
    sg_gumbel_softmax_f32(ctx, rows, n, x, ld, 1, 0, 0, y, ld, NULL, 0, NULL);
    sg_gumbel_softmax_f32(ctx, rows, n, x, ld, 1, 1, 0, y2, ld, NULL, 0, NULL);
    CHECK(max_diff(n, y, y2) > 1e-3, "offsets 0 and 1 give the same noise");
    sg_gumbel_softmax_f32(ctx, rows, n, x, ld, 2, 0, 0, y2, ld, NULL, 0, NULL);
    CHECK(max_diff(n, y, y2) > 1e-3, "seeds 1 and 2 give the same noise");
    sg_gumbel_softmax_f32(ctx, rows, n, x, ld, 1, 0, 0, y2, ld, NULL, 0, NULL);
    CHECK(max_diff(n, y, y2) == 0.0, "the same key gives different noise");
    /* tau -> 0: samples approach one-hot (at the argmax of x + g) */
    const size_t many = test_quick ? 50 : 400;
    float *xb = test_alloc(many * 10 * sizeof *xb), *yb = test_alloc(many * 10 * sizeof *yb);
    fill_normal(xb, many * 10, 1.0, 13);
    sg_softmax_options cold = test_temperature(1e-3f);
    sg_gumbel_softmax_f32(ctx, many, 10, xb, 10, 9, 3, 0, yb, 10, NULL, 0, &cold);
    size_t sharp = 0;
    for (size_t r = 0; r < many; r++) {
        float mx = 0.0f;
        for (size_t i = 0; i < 10; i++) mx = fmaxf(mx, yb[r * 10 + i]);
        sharp += mx >= 0.99f;
    }
    CHECK(sharp >= many * 95 / 100, "tau 1e-3: only %zu of %zu rows near one-hot", sharp, many);
    sg_softmax_options warm = test_temperature(1e3f);
    sg_gumbel_softmax_f32(ctx, many, 10, xb, 10, 9, 3, 0, yb, 10, NULL, 0, &warm);
    for (size_t i = 0; i < many * 10; i++) CHECK(fabsf(yb[i] - 0.1f) < 0.01f, "tau 1e3 not near uniform");
    free(x), free(u), free(y), free(ys), free(y2), free(dy), free(dx), free(dx2), free(xb), free(yb);
    sg_context_destroy(ctx);
}

/* ---- adaptive temperature ---------------------------------------------- */

TEST(alt_adaptive) {
    sg_context *ctx = test_context(1);
    double z[64];
    int kept[64];
    float x[64], y[64], ys[64], beta;
    for (size_t i = 0; i < 64; i++) kept[i] = 1;
    /* low entropy: beta 1, the plain softmax */
    float lo[4] = {10.0f, 0.0f, 0.0f, 0.0f};
    sg_adaptive_temperature_softmax_f32(ctx, 1, 4, lo, 4, y, 4, &beta, NULL);
    sg_softmax_f32(ctx, 1, 4, lo, 4, ys, 4, NULL);
    CHECK(beta == 1.0f && max_diff(4, y, ys) <= 1e-7, "low entropy: beta %g", beta);
    /* H near log 8 = 2.08: P(H) about 2.1, so sharper than softmax */
    for (size_t trial = 0; trial < 20; trial++) {
        size_t n = 8 + trial;
        fill_normal(x, n, 0.3, 40 + trial);
        for (size_t i = 0; i < n; i++) z[i] = x[i];
        double rb = ref_beta(n, z, kept);
        sg_adaptive_temperature_softmax_f32(ctx, 1, n, x, n, y, n, &beta, NULL);
        CHECK(fabs(beta - rb) <= 1e-5 * rb, "beta %.9g ref %.9g", beta, rb);
        CHECK(rb > 1.5, "the test row should have beta > 1.5 (%g)", rb);
        sg_softmax_f32(ctx, 1, n, x, n, ys, n, NULL);
        float my = 0, ms = 0;
        for (size_t i = 0; i < n; i++) my = fmaxf(my, y[i]), ms = fmaxf(ms, ys[i]);
        CHECK(my > ms, "adaptive should sharpen: %g vs %g", my, ms);
    }
    /* a -inf entry (the fast path's fallback) acts as a removed one */
    float xi[9] = {-INFINITY, 0.1f, 0.3f, -0.2f, 0.05f, 0.0f, 0.2f, -0.1f, 0.15f}, yi[9], ym[9], b2;
    uint8_t keep[9] = {0, 1, 1, 1, 1, 1, 1, 1, 1};
    sg_softmax_options om = test_temperature(1.0f);
    om.keep_mask = keep;
    sg_adaptive_temperature_softmax_f32(ctx, 1, 9, xi, 9, yi, 9, &beta, NULL);
    sg_adaptive_temperature_softmax_f32(ctx, 1, 9, xi, 9, ym, 9, &b2, &om);
    CHECK(beta > 1.5f && fabsf(beta - b2) <= 1e-6f * b2 && yi[0] == 0.0f && max_diff(9, yi, ym) <= 1e-6,
          "adaptive with -inf: beta %g vs %g", beta, b2);
    /* the rule itself, at chosen entropies */
    CHECK(poly_beta(0.4) == 1.0 && poly_beta(0.6) == 1.0 && poly_beta(2.0) > 2.0, "poly rule");
    sg_context_destroy(ctx);
}

/* ---- threads ------------------------------------------------------------- */

TEST(alt_threads_identical) {
    const size_t rows = test_quick ? 24 : 64, n = 1000, count = rows * n;
    float *x = test_alloc(count * sizeof *x), *dy = test_alloc(count * sizeof *dy), *yf = test_alloc(count * sizeof *yf);
    float *out[3], *out2[3], loss[3][64];
    int32_t target[64];
    fill_normal(x, count, 3.0, 99);
    fill_normal(dy, count, 1.0, 98);
    for (size_t r = 0; r < rows; r++) target[r] = (int32_t)(r * 13 % n);
    for (int t = 0; t < 3; t++) out[t] = test_alloc(count * sizeof(float)), out2[t] = test_alloc(count * sizeof(float));
    sg_softmax_options o = test_temperature(0.7f);
    for (int kind = 0; kind < N_FWD + N_BWD + 3; kind++) {
        for (int t = 0; t < 3; t++) {
            sg_context *ctx = test_context(t + 1);
            if (kind < N_FWD) run_fwd(ctx, (fwd_op)kind, rows, n, x, n, out[t], n, &o);
            else if (kind < N_FWD + N_BWD) {
                bwd_op b = (bwd_op)(kind - N_FWD);
                run_fwd(ctx, bwd_fwd[b], rows, n, x, n, yf, n, &o);
                run_bwd(ctx, b, rows, n, x, yf, dy, out[t], n, &o);
            } else if (kind == N_FWD + N_BWD) {
                sg_gumbel_softmax_f32(ctx, rows, n, x, n, 77, 8, 0, out[t], n, NULL, 0, &o);
            } else if (kind == N_FWD + N_BWD + 1) {
                sg_gumbel_softmax_f32(ctx, rows, n, x, n, 77, 8, 1, out[t], n, out2[t], n, &o);
            } else {
                sg_stablemax_cross_entropy_f32(ctx, rows, n, x, n, target, loss[t], out[t], n, &o);
            }
            sg_context_destroy(ctx);
        }
        for (int t = 1; t < 3; t++) {
            CHECK(memcmp(out[0], out[t], count * sizeof(float)) == 0, "kind %d: %d threads differ", kind, t + 1);
            if (kind == N_FWD + N_BWD + 1)
                CHECK(memcmp(out2[0], out2[t], count * sizeof(float)) == 0, "gumbel soft: %d threads differ", t + 1);
            if (kind == N_FWD + N_BWD + 2)
                CHECK(memcmp(loss[0], loss[t], rows * sizeof(float)) == 0, "ce loss: %d threads differ", t + 1);
        }
    }
    for (int t = 0; t < 3; t++) free(out[t]), free(out2[t]);
    free(x), free(dy), free(yf);
}

/* ---- argument errors ---------------------------------------------------- */

static int mentions(sg_context *ctx, const char *word) { return strstr(sg_context_error(ctx), word) != NULL; }

TEST(alt_args_errors) {
    sg_context *ctx = test_context(1);
    float x[8] = {1, 2, 3, 4, 5, 6, 7, 8}, y[8], dy[8] = {1, 1, 1, 1, 1, 1, 1, 1}, loss[2];
    for (int i = 0; i < 8; i++) y[i] = SENTINEL;
    sg_softmax_options bad = test_temperature(0.0f), o = test_temperature(1.0f);
    for (int op = 0; op < N_FWD; op++) {
        CHECK(run_fwd(NULL, (fwd_op)op, 2, 4, x, 4, y, 4, NULL) == SG_ERR_ARGUMENT, "%s NULL ctx", fwd_names[op]);
        CHECK(run_fwd(ctx, (fwd_op)op, 2, 4, NULL, 4, y, 4, NULL) == SG_ERR_ARGUMENT && mentions(ctx, "x"),
              "%s NULL x: %s", fwd_names[op], sg_context_error(ctx));
        CHECK(run_fwd(ctx, (fwd_op)op, 2, 4, x, 4, NULL, 4, NULL) == SG_ERR_ARGUMENT, "%s NULL y", fwd_names[op]);
        CHECK(run_fwd(ctx, (fwd_op)op, 2, 4, x, 3, y, 4, NULL) == SG_ERR_SHAPE, "%s ldx < n", fwd_names[op]);
        CHECK(run_fwd(ctx, (fwd_op)op, 2, 4, x, 4, y, 4, &bad) == SG_ERR_ARGUMENT && mentions(ctx, "temperature"),
              "%s T = 0", fwd_names[op]);
        CHECK(run_fwd(ctx, (fwd_op)op, 2, 4, x, 4, x, 5, NULL) == SG_ERR_SHAPE, "%s in place strides", fwd_names[op]);
        CHECK(run_fwd(ctx, (fwd_op)op, 0, 4, NULL, 4, NULL, 4, NULL) == SG_OK, "%s rows 0", fwd_names[op]);
        CHECK(run_fwd(ctx, (fwd_op)op, 2, 0, x, 0, y, 0, NULL) == SG_OK, "%s n 0", fwd_names[op]);
    }
    for (int i = 0; i < 8; i++) CHECK(y[i] == SENTINEL, "an error wrote y[%d]", i);
    CHECK(sg_softpick_f32(ctx, 2, 4, x, 4, y, 4, -1.0f, NULL) == SG_ERR_ARGUMENT && mentions(ctx, "eps"), "eps < 0");
    CHECK(sg_softpick_f32(ctx, 2, 4, x, 4, y, 4, NAN, NULL) == SG_ERR_ARGUMENT, "eps NaN");
    CHECK(sg_softpick_backward_f32(ctx, 2, 4, x, 4, dy, 4, y, 4, INFINITY, NULL) == SG_ERR_ARGUMENT, "eps inf");
    CHECK(sg_softpick_backward_f32(ctx, 2, 4, NULL, 4, dy, 4, y, 4, EPS, NULL) == SG_ERR_ARGUMENT, "bwd NULL x");
    CHECK(sg_stablemax_backward_f32(ctx, 2, 4, x, 4, NULL, 4, dy, 4, y, 4, NULL) == SG_ERR_ARGUMENT &&
              mentions(ctx, "y"), "bwd NULL y");
    CHECK(sg_normalized_sigmoid_backward_f32(ctx, 2, 4, x, 4, x, 4, dy, 4, y, 3, NULL) == SG_ERR_SHAPE, "lddx < n");
    CHECK(sg_sigmoid_backward_f32(ctx, 2, 4, x, 4, dy, 4, dy, 5, NULL) == SG_ERR_SHAPE, "bwd in place strides");
    CHECK(sg_sigmoid_backward_f32(ctx, 2, 4, x, 4, dy, 4, y, 4, &bad) == SG_ERR_ARGUMENT, "bwd T = 0");
    for (int i = 0; i < 8; i++) CHECK(y[i] == SENTINEL, "an error wrote y[%d]", i);
    float ys[8];
    CHECK(sg_gumbel_softmax_f32(ctx, 2, 4, x, 4, 1, 0, 1, y, 4, y, 4, NULL) == SG_ERR_ARGUMENT &&
              mentions(ctx, "y_soft"), "gumbel y_soft == y");
    CHECK(sg_gumbel_softmax_f32(ctx, 2, 4, x, 4, 1, 0, 1, y, 4, ys, 3, NULL) == SG_ERR_SHAPE, "gumbel ldys");
    CHECK(sg_gumbel_softmax_backward_f32(ctx, 2, 4, NULL, 4, dy, 4, y, 4, NULL) == SG_ERR_ARGUMENT &&
              mentions(ctx, "sg_gumbel_softmax_backward_f32"), "gumbel bwd: %s", sg_context_error(ctx));
    int32_t tgt[2] = {0, 4}, tgt2[2] = {0, 1};
    CHECK(sg_stablemax_cross_entropy_f32(ctx, 2, 4, x, 4, tgt, loss, NULL, 0, NULL) == SG_ERR_ARGUMENT &&
              mentions(ctx, "target[1]"), "ce target out of range");
    uint8_t keep[4] = {1, 0, 1, 1};
    o.keep_mask = keep;
    CHECK(sg_stablemax_cross_entropy_f32(ctx, 2, 4, x, 4, tgt2, loss, NULL, 0, &o) == SG_ERR_ARGUMENT &&
              mentions(ctx, "removed"), "ce removed target");
    CHECK(sg_stablemax_cross_entropy_f32(ctx, 2, 4, x, 4, NULL, loss, NULL, 0, NULL) == SG_ERR_ARGUMENT,
          "ce NULL target");
    for (int i = 0; i < 8; i++) CHECK(y[i] == SENTINEL, "an error wrote y[%d]", i);
    sg_context_destroy(ctx);
}

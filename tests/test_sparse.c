/*
 * test_sparse.c - the sparse normalizers of include/softgate/sparse.h
 * (1.5-entmax, alpha-entmax, sparse-softmax) and the kernels behind them
 * and sparsemax (src/normalizers/sparse_kernels.h), through the public API
 * and the internal threshold solvers. References are written here in
 * double: 1.5-entmax by the paper's sort and cumulative sums, alpha-entmax
 * by 200 bisection steps, top-k softmax by sorting (value desc, index asc).
 *
 * Tests (all named sparse_*, so --filter sparse_ runs this file):
 *   sparse_kernels_tails        every compiled kernel (max, select) against
 *                               the reference kernel at lengths around each
 *                               tile, unaligned, NaN/+inf, select's cap
 *   sparse_entmax15_reference   values, simplex, exact zeros; N over the
 *                               tiles; scales, temperatures
 *   sparse_entmax15_paths       sort vs sort-free threshold; rows with more
 *                               than 4096 candidates (full-row path)
 *   sparse_entmax_alpha         alpha in [1.05, 10] vs reference; alpha = 2
 *                               vs sparsemax; 1.5 vs entmax15; alpha -> 1
 *                               vs softmax
 *   sparse_topk_reference       sparse-softmax vs reference, ties to the
 *                               lower index, k = 1, k >= N is softmax
 *   sparse_shift_invariance     all three (and sparsemax) under x + c
 *   sparse_backward_fd          backward vs central differences of the
 *                               double references
 *   sparse_masks                keep/add masks, broadcast, fewer than k kept
 *   sparse_special_values       the header's table, forward and backward
 *   sparse_strides_in_place     ld > N with sentinel gaps; y == x
 *   sparse_threads_identical    1, 2, 3 threads give the same bits
 *   sparse_args_errors          statuses, messages, untouched outputs
 */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "normalizers/sparse_internal_entmax.h"
#include "normalizers/sparse_kernels.h"
#include "test.h"

/* The reference kernels (the manifest's REF lines). */
sg_sparse_max_fn sg_sparse_max_f32__ref;
sg_sparse_select_fn sg_sparse_select_f32__ref;
sg_sparse_sums_fn sg_sparse_sums_f32__ref;

#define SENTINEL (-12345.5f)
#define TOL_E15 3e-7    /* documented 1.5-entmax accuracy (absolute) */
#define TOL_ALPHA 1e-6  /* documented alpha-entmax accuracy (absolute) */
#define TOL_TOPK 3e-7   /* relative, on selected entries, plus 2^-24 |d| */

/* ---- the ops under test, behind one switch ------------------------------ */

typedef enum { E15, EALPHA, TOPK, N_KINDS } kind;
static const char *const kind_names[] = {"entmax15", "entmax", "sparse_softmax"};

typedef struct op {
    kind k;
    double alpha; /* EALPHA */
    size_t topk;  /* TOPK */
} op;

static sg_status fwd(sg_context *ctx, op p, size_t rows, size_t n, const float *x, size_t ldx,
                     float *y, size_t ldy, const sg_softmax_options *o) {
    switch (p.k) {
    case E15: return sg_entmax15_f32(ctx, rows, n, x, ldx, y, ldy, o);
    case EALPHA: return sg_entmax_f32(ctx, p.alpha, rows, n, x, ldx, y, ldy, o);
    case TOPK: return sg_sparse_softmax_f32(ctx, p.topk, rows, n, x, ldx, y, ldy, o);
    case N_KINDS: break;
    }
    return SG_ERR_ARGUMENT;
}

static sg_status bwd(sg_context *ctx, op p, size_t rows, size_t n, const float *y, size_t ldy,
                     const float *dy, size_t lddy, float *dx, size_t lddx,
                     const sg_softmax_options *o) {
    switch (p.k) {
    case E15: return sg_entmax15_backward_f32(ctx, rows, n, y, ldy, dy, lddy, dx, lddx, o);
    case EALPHA: return sg_entmax_backward_f32(ctx, p.alpha, rows, n, y, ldy, dy, lddy, dx, lddx, o);
    case TOPK: return sg_sparse_softmax_backward_f32(ctx, rows, n, y, ldy, dy, lddy, dx, lddx, o);
    case N_KINDS: break;
    }
    return SG_ERR_ARGUMENT;
}

/* ---- double references ---------------------------------------------------- */

static int cmp_desc(const void *a, const void *b) {
    double u = *(const double *)a, v = *(const double *)b;
    return (u < v) - (u > v);
}

static double zmax_of(size_t n, const double *z) {
    double m = -INFINITY;
    for (size_t i = 0; i < n; i++) m = z[i] > m ? z[i] : m;
    return m;
}

/* 1.5-entmax of z (finite or -inf, one finite at least) by the paper's
 * Algorithm: sort u = (z - max)/2 descending, tau_k from cumulative sums,
 * support = the largest k with tau_k <= u_(k). Returns tau. */
static double ref_entmax15(size_t n, const double *z, double *y) {
    double m = zmax_of(n, z), *u = test_alloc(n * sizeof *u), c1 = 0.0, c2 = 0.0, tau = -1.0;
    size_t f = 0;
    for (size_t i = 0; i < n; i++)
        if (z[i] > -INFINITY) u[f++] = 0.5 * (z[i] - m);
    qsort(u, f, sizeof *u, cmp_desc);
    for (size_t k = 1; k <= f; k++) {
        c1 += u[k - 1], c2 += u[k - 1] * u[k - 1];
        double mean = c1 / (double)k, ss = c2 - c1 * mean, delta = (1.0 - ss) / (double)k;
        double t = mean - sqrt(delta > 0.0 ? delta : 0.0);
        if (t <= u[k - 1]) tau = t;
    }
    for (size_t i = 0; i < n; i++) {
        double w = 0.5 * (z[i] - m) - tau;
        y[i] = w > 0.0 ? w * w : 0.0;
    }
    free(u);
    return tau;
}

/* alpha-entmax by bisection on tau in [-1, 0] (200 steps: to the last bit). */
static void ref_entmax_alpha(size_t n, const double *z, double alpha, double *y) {
    double m = zmax_of(n, z), am1 = alpha - 1.0, p = 1.0 / am1, lo = -1.0, hi = 0.0;
    for (int it = 0; it < 200; it++) {
        double mid = 0.5 * (lo + hi), f = -1.0;
        for (size_t i = 0; i < n; i++) {
            double w = am1 * (z[i] - m) - mid;
            if (w > 0.0) f += pow(w, p);
        }
        if (f >= 0.0) lo = mid;
        else hi = mid;
    }
    double sum = 0.0;
    for (size_t i = 0; i < n; i++) {
        double w = am1 * (z[i] - m) - lo;
        y[i] = w > 0.0 ? pow(w, p) : 0.0;
        sum += y[i];
    }
    for (size_t i = 0; i < n; i++) y[i] /= sum;
}

static void ref_softmax(size_t n, const double *z, double *y) {
    double m = zmax_of(n, z), sum = 0.0;
    for (size_t i = 0; i < n; i++) sum += (y[i] = exp(z[i] - m));
    for (size_t i = 0; i < n; i++) y[i] /= sum;
}

/* Top-k softmax: order by z desc, index asc; removed (-inf) entries can
 * only be picked when nothing finite is left (they get 0 anyway). */
static const double *g_z;
static int cmp_rank(const void *a, const void *b) {
    size_t i = *(const size_t *)a, j = *(const size_t *)b;
    if (g_z[i] != g_z[j]) return g_z[i] > g_z[j] ? -1 : 1;
    return (i > j) - (i < j);
}

static void ref_topk(size_t n, const double *z, size_t k, double *y) {
    size_t *ord = test_alloc(n * sizeof *ord);
    for (size_t i = 0; i < n; i++) ord[i] = i;
    g_z = z;
    qsort(ord, n, sizeof *ord, cmp_rank);
    double m = z[ord[0]], sum = 0.0;
    for (size_t i = 0; i < n; i++) y[i] = 0.0;
    for (size_t q = 0; q < k && q < n; q++) sum += (y[ord[q]] = exp(z[ord[q]] - m));
    for (size_t i = 0; i < n; i++) y[i] /= sum;
    free(ord);
}

static void ref_row(op p, size_t n, const double *z, double *y) {
    switch (p.k) {
    case E15: ref_entmax15(n, z, y); return;
    case EALPHA: ref_entmax_alpha(n, z, p.alpha, y); return;
    case TOPK: ref_topk(n, z, p.topk, y); return;
    case N_KINDS: return;
    }
}

/* z of one row in double, -inf where removed. */
static void z_row(size_t n, const float *x, const uint8_t *keep, const float *add, double t,
                  double *z) {
    for (size_t i = 0; i < n; i++) {
        int gone = (keep && !keep[i]) || (add && add[i] == -INFINITY);
        z[i] = gone ? -INFINITY : (double)x[i] / t + (add ? (double)add[i] : 0.0);
    }
}

/* Absolute tolerance of entmax outputs. For alpha > 2, y = w^(1/(alpha-1))
 * has an unbounded slope at the threshold: an error e in d moves y by up
 * to e^(1/(alpha-1)) there (docs/SPARSE.md). */
static double tol_of(op p) {
    if (p.k == E15) return TOL_E15;
    if (p.alpha <= 2.0) return TOL_ALPHA;
    return fmax(TOL_ALPHA, pow(1e-6, 1.0 / (p.alpha - 1.0)));
}

/* The reference threshold in u units (u = (alpha - 1)(z - max)). */
static double ref_tau(op p, size_t n, const double *z) {
    double *y = test_alloc(n * sizeof *y), m = zmax_of(n, z), am1 = p.k == E15 ? 0.5 : p.alpha - 1.0;
    double lo = -1.0, hi = 0.0;
    for (int it = 0; it < 200; it++) {
        double mid = 0.5 * (lo + hi), f = -1.0;
        for (size_t i = 0; i < n; i++) {
            double w = am1 * (z[i] - m) - mid;
            if (w > 0.0) f += pow(w, 1.0 / am1);
        }
        if (f >= 0.0) lo = mid;
        else hi = mid;
    }
    free(y);
    return lo;
}

/* Checks a row y against the reference of z: values (absolute for
 * entmax, relative for top-k), y >= 0, the simplex, and the sparsity
 * pattern: entmax entries 1e-5 below the threshold exactly 0 and 1e-5
 * above it positive; top-k zeros exactly where the reference has them.
 * Returns the number of problems reported. */
static int check_row(op p, size_t n, const double *z, const float *y, const char *what) {
    double *r = test_alloc(n * sizeof *r), m = zmax_of(n, z);
    ref_row(p, n, z, r);
    const double am1 = p.k == E15 ? 0.5 : p.alpha - 1.0;
    const double tau = p.k == TOPK ? 0.0 : ref_tau(p, n, z);
    int bad = 0;
    double s = 0.0;
    for (size_t i = 0; i < n; i++) {
        s += y[i];
        double err = fabs(y[i] - r[i]);
        /* k >= N is the softmax core, with its own bound (docs/KERNELS.md) */
        const double rel = p.topk >= n ? 4e-6 : TOL_TOPK + 0x1p-24 * 1.01 * fabs(z[i] - m);
        int ok = p.k == TOPK ? (err == 0.0 || err <= rel * r[i]) && (r[i] == 0.0) == (y[i] == 0.0f)
                             : err <= tol_of(p);
        if (p.k != TOPK && z[i] > -INFINITY) {
            double u = am1 * (z[i] - m);
            if (u < tau - 1e-5) ok = ok && y[i] == 0.0f;
            if (u > tau + 1e-5) ok = ok && y[i] > 0.0f;
        }
        if (p.k != TOPK && z[i] == -INFINITY) ok = ok && y[i] == 0.0f;
        ok = ok && y[i] >= 0.0f;
        if (!ok && bad++ < 3)
            CHECK(0, "%s %s(%g,%zu) n=%zu i=%zu: y %.9g ref %.9g", what, kind_names[p.k], p.alpha,
                  p.topk, n, i, y[i], r[i]);
    }
    if (!(fabs(s - 1.0) <= 2e-6)) {
        CHECK(0, "%s %s n=%zu: sum %.9g", what, kind_names[p.k], n, s);
        bad++;
    }
    free(r);
    return bad;
}

static int check_forward(sg_context *ctx, op p, size_t rows, size_t n, const float *x, float t,
                         const char *what) {
    float *y = test_alloc(rows * n * sizeof *y);
    double *z = test_alloc(n * sizeof *z);
    sg_softmax_options o = test_temperature(t);
    sg_status st = fwd(ctx, p, rows, n, x, n, y, n, &o);
    int bad = st != SG_OK;
    CHECK(st == SG_OK, "%s %s: status %d (%s)", what, kind_names[p.k], (int)st, sg_context_error(ctx));
    for (size_t r = 0; !bad && r < rows; r++) {
        z_row(n, x + r * n, NULL, NULL, t, z);
        bad += check_row(p, n, z, y + r * n, what);
    }
    free(y), free(z);
    return bad;
}

/* max |a_i - b_i| (NaN counts as infinite). Written with a branch: the
 * fmax reduction in a loop crashed aarch64-linux-gnu-gcc 12's vectorizer. */
static double max_abs_diff(const float *a, const float *b, size_t n) {
    double w = 0.0;
    for (size_t i = 0; i < n; i++) {
        const double e = fabs((double)a[i] - (double)b[i]);
        if (!(e <= w)) w = isnan(e) ? INFINITY : e;
    }
    return w;
}

/* Lengths around the kernel tiles (16-lane AVX-512 vectors in 64-float
 * steps, 8-lane AVX2 in 32-float steps). */
static const size_t TAILS[] = {1, 2, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 128, 193, 1000, 4099};
#define N_TAILS (sizeof TAILS / sizeof TAILS[0])

/* ---- kernels ---------------------------------------------------------------- */

TEST(sparse_kernels_tails) {
    size_t count;
    const sg_sparse_kernel_entry *e = sg_sparse_kernel_entries(&count);
    const size_t big = 4099 + 3;
    float *buf = test_random_f32(big, 3.0, 11);
    uint32_t *ia = test_alloc((big + 16) * sizeof *ia), *ib = test_alloc((big + 16) * sizeof *ib);
    float *va = test_alloc((big + 16) * sizeof *va), *vb = test_alloc((big + 16) * sizeof *vb);
    for (size_t q = 0; q < count; q++) {
        if (!sg_cpu_supports(e[q].isa)) continue;
        for (size_t t = 0; t < N_TAILS; t++) {
            for (size_t off = 0; off < 3; off++) {
                const size_t n = TAILS[t];
                float *x = buf + off; /* unaligned */
                if (e[q].slot == SG_SPARSE_SLOT_max) {
                    sg_sparse_max_fn *f = (sg_sparse_max_fn *)e[q].fn;
                    for (int poison = 0; poison < 3; poison++) {
                        const size_t ia0 = n / 2, ib0 = n - 1 - n / 3;
                        const float ka = x[ia0], kb = x[ib0];
                        if (poison == 1) x[ia0] = NAN;
                        if (poison == 2) x[ib0] = INFINITY;
                        int b1 = 0, b2 = 0;
                        float m1 = f(n, x, &b1), m2 = sg_sparse_max_f32__ref(n, x, &b2);
                        /* the flag must agree; the max when nothing is flagged */
                        CHECK(b1 == b2, "%s n=%zu poison %d: flag %d ref %d", e[q].name, n, poison, b1, b2);
                        CHECK(b1 || m1 == m2, "%s n=%zu: max %g ref %g", e[q].name, n, m1, m2);
                        x[ib0] = kb, x[ia0] = ka;
                    }
                } else if (e[q].slot == SG_SPARSE_SLOT_sums) {
                    sg_sparse_sums_fn *f = (sg_sparse_sums_fn *)e[q].fn;
                    const double ts[] = {-1.0, 0.5, 3.0, -INFINITY, INFINITY};
                    const float keep = x[n - 1];
                    for (int ninf = 0; ninf < 2; ninf++) {
                        if (ninf) x[n - 1] = -INFINITY; /* removed entries are -inf in d */
                        for (size_t h = 0; h < 5; h++) {
                            sg_sparse_sums a, b;
                            f(n, x, 0.5, ts[h], &a);
                            sg_sparse_sums_f32__ref(n, x, 0.5, ts[h], &b);
                            /* sums in the kernel's lane order: 1e-13 relative to sum |u| */
                            double tol = 1e-13 * (fabs(b.s2) + 3.0 * n);
                            CHECK(a.k == b.k && fabs(a.s1 - b.s1) <= tol && fabs(a.s2 - b.s2) <= tol &&
                                      a.min_in == b.min_in && a.max_out == b.max_out,
                                  "%s n=%zu t=%g: k %zu/%zu s1 %.17g/%.17g s2 %.17g/%.17g min %g/%g "
                                  "max %g/%g", e[q].name, n, ts[h], a.k, b.k, a.s1, b.s1, a.s2, b.s2,
                                  a.min_in, b.min_in, a.max_out, b.max_out);
                        }
                    }
                    x[n - 1] = keep;
                } else if (e[q].slot == SG_SPARSE_SLOT_select) {
                    sg_sparse_select_fn *f = (sg_sparse_select_fn *)e[q].fn;
                    const float thrs[] = {2.0f, 4.0f, -INFINITY, 0.0f};
                    for (size_t h = 0; h < 4; h++) {
                        const size_t caps[] = {0, 1, 5, n};
                        for (size_t cc = 0; cc < 4; cc++) {
                            size_t c1 = f(n, x, thrs[h], ia, va, caps[cc]);
                            size_t c2 = sg_sparse_select_f32__ref(n, x, thrs[h], ib, vb, caps[cc]);
                            size_t w = c1 < caps[cc] ? c1 : caps[cc];
                            CHECK(c1 == c2 && memcmp(ia, ib, w * sizeof *ia) == 0 &&
                                      memcmp(va, vb, w * sizeof *va) == 0,
                                  "%s n=%zu thr %g cap %zu: count %zu ref %zu", e[q].name, n,
                                  thrs[h], caps[cc], c1, c2);
                        }
                    }
                    float keep = x[0];
                    x[0] = NAN; /* NaN never passes */
                    size_t c1 = f(n, x, -INFINITY, ia, va, n);
                    CHECK(c1 == n - 1 && (n == 1 || ia[0] == 1), "%s n=%zu: NaN selected", e[q].name, n);
                    x[0] = keep;
                }
            }
        }
    }
    free(buf), free(ia), free(ib), free(va), free(vb);
}

/* ---- forward against the references ---------------------------------------- */

TEST(sparse_entmax15_reference) {
    sg_context *ctx = test_context(1);
    const double scales[] = {0.01, 0.5, 2.0, 30.0};
    const float temps[] = {0.5f, 1.0f, 3.0f};
    int bad = 0;
    for (size_t t = 0; t < N_TAILS && !bad; t++)
        for (size_t s = 0; s < 4 && !bad; s++)
            for (size_t q = 0; q < 3 && !bad; q++) {
                const size_t n = TAILS[t], rows = n > 1000 ? 2 : 5;
                float *x = test_random_f32(rows * n, scales[s], 100 + t * 7 + s);
                op p = {E15, 1.5, 0};
                bad += check_forward(ctx, p, rows, n, x, temps[q], "e15");
                free(x);
            }
    sg_context_destroy(ctx);
}

TEST(sparse_entmax15_paths) {
    /* The two threshold solvers on the same rows agree with the reference
     * threshold; then rows with > 4096 candidates through the API. */
    const size_t ns[] = {1, 2, 5, 100, 3000};
    for (size_t a = 0; a < 5; a++) {
        const size_t n = ns[a];
        for (int sc = 0; sc < 3; sc++) {
            float *x = test_random_f32(n, sc == 0 ? 0.05 : sc == 1 ? 0.7 : 5.0, 40 + a);
            float m = -INFINITY;
            for (size_t i = 0; i < n; i++) m = x[i] > m ? x[i] : m;
            double *z = test_alloc(n * sizeof *z), *y = test_alloc(n * sizeof *y), *scr = test_alloc(n * sizeof *scr);
            for (size_t i = 0; i < n; i++) x[i] -= m, z[i] = x[i]; /* max exactly 0 */
            if (n > 3) x[3] = -INFINITY, z[3] = -INFINITY;
            double tr = ref_entmax15(n, z, y);
            double t1 = sg_entmax15_tau_f32(x, n, scr, 0), t2 = sg_entmax15_tau_f32(x, n, NULL, 1);
            double t3 = sg_entmax15_tau_f32(x, n, NULL, 2);
            CHECK(fabs(t1 - tr) <= 1e-12 && fabs(t2 - tr) <= 1e-12 && fabs(t3 - tr) <= 1e-12,
                  "n=%zu scale %d: tau sort %.17g bisect %.17g newton %.17g ref %.17g", n, sc, t1, t2,
                  t3, tr);
            double ta = sg_entmax_tau_f32(x, n, 1.5);
            CHECK(fabs(ta - tr) <= 1e-12, "n=%zu: alpha solver tau %.17g ref %.17g", n, ta, tr);
            free(x), free(z), free(y), free(scr);
        }
    }
    /* Full-row path: 5000 entries within 2 of the max (all candidates). */
    sg_context *ctx = test_context(1);
    const size_t n = 5000, rows = 3;
    float *x = test_alloc(rows * n * sizeof *x);
    test_rng rng = test_rng_seed(9);
    for (size_t i = 0; i < rows * n; i++) x[i] = (float)(1.9 * test_uniform(&rng));
    op p = {E15, 1.5, 0};
    check_forward(ctx, p, rows, n, x, 1.0f, "e15 full-row");
    op pa = {EALPHA, 1.5, 0};
    check_forward(ctx, pa, rows, n, x, 1.0f, "alpha full-row");
    /* the same rows in place */
    float *y = test_alloc(rows * n * sizeof *y);
    CHECK(sg_entmax15_f32(ctx, rows, n, x, n, y, n, NULL) == SG_OK, "e15");
    CHECK(sg_entmax15_f32(ctx, rows, n, x, n, x, n, NULL) == SG_OK, "e15 in place");
    CHECK(memcmp(x, y, rows * n * sizeof *x) == 0, "full-row path: in place differs");
    free(x), free(y);
    sg_context_destroy(ctx);
}

TEST(sparse_entmax_alpha) {
    sg_context *ctx = test_context(1);
    const double alphas[] = {1.05, 1.25, 1.5, 2.0, 3.0, 10.0};
    const size_t ns[] = {1, 7, 33, 200, 1000};
    for (size_t a = 0; a < 6; a++)
        for (size_t q = 0; q < 5; q++) {
            const size_t n = test_quick && ns[q] > 200 ? 200 : ns[q];
            float *x = test_random_f32(3 * n, 1.5, 70 + q);
            op p = {EALPHA, alphas[a], 0};
            check_forward(ctx, p, 3, n, x, q == 2 ? 0.7f : 1.0f, "alpha");
            free(x);
        }
    /* alpha = 2 is sparsemax, alpha = 1.5 is entmax15 (both exact). */
    const size_t n = 500, rows = 8;
    float *x = test_random_f32(rows * n, 1.0, 5), *y1 = test_alloc(rows * n * 4), *y2 = test_alloc(rows * n * 4);
    double worst2 = 0.0, worst15 = 0.0;
    CHECK(sg_entmax_f32(ctx, 2.0, rows, n, x, n, y1, n, NULL) == SG_OK, "alpha 2");
    CHECK(sg_sparsemax_f32(ctx, rows, n, x, n, y2, n, NULL) == SG_OK, "sparsemax");
    worst2 = max_abs_diff(y1, y2, rows * n);
    CHECK(sg_entmax_f32(ctx, 1.5, rows, n, x, n, y1, n, NULL) == SG_OK, "alpha 1.5");
    CHECK(sg_entmax15_f32(ctx, rows, n, x, n, y2, n, NULL) == SG_OK, "entmax15");
    worst15 = max_abs_diff(y1, y2, rows * n);
    CHECK(worst2 <= 2e-7, "entmax alpha=2 vs sparsemax: %g", worst2);
    CHECK(worst15 <= 2e-7, "entmax alpha=1.5 vs entmax15: %g", worst15);
    /* alpha -> 1 tends to softmax: error shrinks with alpha - 1. */
    double prev = INFINITY;
    const double near1[] = {1.1, 1.01, 1.001};
    for (size_t a = 0; a < 3; a++) {
        double worst = 0.0, *z = test_alloc(n * sizeof *z), *r = test_alloc(n * sizeof *r);
        CHECK(sg_entmax_f32(ctx, near1[a], 2, n, x, n, y1, n, NULL) == SG_OK, "alpha near 1");
        for (size_t row = 0; row < 2; row++) {
            z_row(n, x + row * n, NULL, NULL, 1.0, z);
            ref_softmax(n, z, r);
            for (size_t i = 0; i < n; i++) { /* a branch, not fmax: see max_abs_diff */
                const double e = fabs(y1[row * n + i] - r[i]);
                if (!(e <= worst)) worst = isnan(e) ? INFINITY : e;
            }
        }
        CHECK(worst < prev && worst <= near1[a] - 1.0, "alpha %g: max |y - softmax| = %g",
              near1[a], worst);
        prev = worst;
        free(z), free(r);
    }
    free(x), free(y1), free(y2);
    sg_context_destroy(ctx);
}

TEST(sparse_topk_reference) {
    sg_context *ctx = test_context(1);
    const size_t ks[] = {1, 2, 5, 64};
    for (size_t t = 0; t < N_TAILS; t++)
        for (size_t q = 0; q < 4; q++) {
            const size_t n = TAILS[t];
            float *x = test_random_f32(3 * n, 3.0, 300 + t);
            op p = {TOPK, 0.0, ks[q]};
            check_forward(ctx, p, 3, n, x, q == 1 ? 2.0f : 1.0f, "topk");
            free(x);
        }
    /* k > 4096: the radix-select path (and its ties), unmasked and masked. */
    {
        const size_t n = 6000, ks2[] = {4500, 5999};
        float *x = test_random_f32(2 * n, 2.0, 77);
        for (size_t i = 0; i < 2 * n; i += 7) x[i] = 1.0f; /* many equal values */
        uint8_t *keep = test_alloc(n);
        for (size_t i = 0; i < n; i++) keep[i] = i % 3 != 0;
        float *y = test_alloc(2 * n * sizeof *y);
        double *z = test_alloc(n * sizeof *z);
        for (size_t q = 0; q < 2; q++)
            for (int mk = 0; mk < 2; mk++) {
                sg_softmax_options o = test_temperature(1.0f);
                if (mk) o.keep_mask = keep, o.keep_mask_ld = 0;
                op p = {TOPK, 0.0, ks2[q]};
                CHECK(fwd(ctx, p, 2, n, x, n, y, n, &o) == SG_OK, "radix path");
                for (size_t r = 0; r < 2; r++) {
                    z_row(n, x + r * n, mk ? keep : NULL, NULL, 1.0, z);
                    check_row(p, n, z, y + r * n, mk ? "topk radix masked" : "topk radix");
                }
            }
        free(x), free(keep), free(y), free(z);
    }
    /* Ties: values 0..4 repeated; k cuts inside a tie group. */
    float xt[12] = {1, 3, 2, 3, 0, 3, 1, 2, 3, 0, 1, 2}, y[12];
    CHECK(sg_sparse_softmax_f32(ctx, 3, 1, 12, xt, 12, y, 12, NULL) == SG_OK, "ties");
    CHECK(y[1] > 0 && y[3] > 0 && y[5] > 0 && y[8] == 0.0f, "ties: lower index wins (%g %g %g %g)",
          y[1], y[3], y[5], y[8]);
    CHECK(fabs(y[1] - 1.0 / 3.0) <= 1e-7, "ties: equal shares %g", y[1]);
    CHECK(sg_sparse_softmax_f32(ctx, 5, 1, 12, xt, 12, y, 12, NULL) == SG_OK, "ties 5");
    CHECK(y[8] > 0 && y[2] > 0 && y[7] == 0.0f && y[11] == 0.0f, "ties at the 5th: %g %g %g", y[2],
          y[7], y[11]);
    /* k = 1: one-hot at the first max. */
    CHECK(sg_sparse_softmax_f32(ctx, 1, 1, 12, xt, 12, y, 12, NULL) == SG_OK, "k=1");
    for (int i = 0; i < 12; i++) CHECK(y[i] == (i == 1 ? 1.0f : 0.0f), "k=1: y[%d] = %g", i, y[i]);
    /* k >= N is exactly the softmax core. */
    const size_t n = 77;
    float *x = test_random_f32(4 * n, 2.0, 8), *a = test_alloc(4 * n * 4), *b = test_alloc(4 * n * 4);
    sg_softmax_options o = test_temperature(1.3f);
    CHECK(sg_sparse_softmax_f32(ctx, n, 4, n, x, n, a, n, &o) == SG_OK, "k = n");
    CHECK(sg_softmax_f32(ctx, 4, n, x, n, b, n, &o) == SG_OK, "softmax");
    CHECK(memcmp(a, b, 4 * n * 4) == 0, "k = n differs from sg_softmax_f32");
    CHECK(sg_sparse_softmax_f32(ctx, 1000, 4, n, x, n, a, n, &o) == SG_OK, "k > n");
    CHECK(memcmp(a, b, 4 * n * 4) == 0, "k > n differs from sg_softmax_f32");
    free(x), free(a), free(b);
    sg_context_destroy(ctx);
}

/* ---- properties ---------------------------------------------------------------- */

/* x on a grid of 2^-10 with |x| < 16: x + c is exact for the shifts
 * used, so d = z - max is the same and the outputs must agree to the bit
 * (up to the solvers' own rounding, which sees the same d). */
TEST(sparse_shift_invariance) {
    sg_context *ctx = test_context(1);
    const size_t n = 300, rows = 4;
    float *x = test_random_f32(rows * n, 1.0, 21), *xs = test_alloc(rows * n * 4);
    float *y = test_alloc(rows * n * 4), *ys = test_alloc(rows * n * 4);
    for (size_t i = 0; i < rows * n; i++) x[i] = roundf(x[i] * 1024.0f) / 1024.0f;
    const float shifts[] = {7.0f, -100.0f, 1000.0f};
    const op ops[] = {{E15, 1.5, 0}, {EALPHA, 1.3, 0}, {EALPHA, 4.0, 0}, {TOPK, 0, 10}};
    for (size_t s = 0; s < 3; s++) {
        for (size_t i = 0; i < rows * n; i++) xs[i] = x[i] + shifts[s];
        for (size_t q = 0; q < 5; q++) {
            double worst = 0.0;
            if (q < 4) {
                CHECK(fwd(ctx, ops[q], rows, n, x, n, y, n, NULL) == SG_OK, "fwd");
                CHECK(fwd(ctx, ops[q], rows, n, xs, n, ys, n, NULL) == SG_OK, "fwd shifted");
            } else {
                CHECK(sg_sparsemax_f32(ctx, rows, n, x, n, y, n, NULL) == SG_OK, "sparsemax");
                CHECK(sg_sparsemax_f32(ctx, rows, n, xs, n, ys, n, NULL) == SG_OK, "sparsemax shifted");
            }
            worst = max_abs_diff(y, ys, rows * n);
            CHECK(worst <= 1e-7, "%s shift %g: max diff %g", q < 4 ? kind_names[ops[q].k] : "sparsemax",
                  shifts[s], worst);
        }
    }
    free(x), free(xs), free(y), free(ys);
    sg_context_destroy(ctx);
}

/* Backward against central differences of L(x) = sum_i dy_i ref(x)_i in
 * double (h = 1e-6), on rows whose support is far from a change. */
TEST(sparse_backward_fd) {
    sg_context *ctx = test_context(1);
    const op ops[] = {{E15, 1.5, 0}, {EALPHA, 1.3, 0}, {EALPHA, 2.0, 0}, {EALPHA, 3.0, 0}, {TOPK, 0, 4}};
    const size_t n = 24;
    const float temps[] = {1.0f, 0.6f};
    for (size_t q = 0; q < 5; q++)
        for (size_t tt = 0; tt < 2; tt++) {
            const double t = temps[tt];
            /* support of a few entries for every alpha (u = (alpha - 1) d) */
            float *x = test_random_f32(n, ops[q].k == EALPHA && ops[q].alpha >= 2.0 ? 0.4 : 1.2, 900 + q);
            float *dy = test_random_f32(n, 1.0, 950 + q);
            float y[24], dx[24];
            double z[24], zp[24], r[24], rp[24], rm[24];
            sg_softmax_options o = test_temperature(temps[tt]);
            CHECK(fwd(ctx, ops[q], 1, n, x, n, y, n, &o) == SG_OK, "fwd");
            CHECK(bwd(ctx, ops[q], 1, n, y, n, dy, n, dx, n, &o) == SG_OK, "bwd");
            z_row(n, x, NULL, NULL, t, z);
            ref_row(ops[q], n, z, r);
            size_t nz = 0;
            for (size_t i = 0; i < n; i++) nz += r[i] > 0.0;
            CHECK(nz >= 2, "%s: support of %zu is too small for the test", kind_names[ops[q].k], nz);
            double worst = 0.0;
            for (size_t i = 0; i < n; i++) {
                const double h = 1e-6;
                memcpy(zp, z, sizeof z);
                zp[i] = z[i] + h / t;
                ref_row(ops[q], n, zp, rp);
                zp[i] = z[i] - h / t;
                ref_row(ops[q], n, zp, rm);
                double g = 0.0;
                for (size_t k = 0; k < n; k++) g += dy[k] * (rp[k] - rm[k]) / (2 * h);
                worst = fmax(worst, fabs(dx[i] - g) / fmax(1.0, fabs(g)));
            }
            CHECK(worst <= 1e-4, "%s T=%g: backward vs central differences %g", kind_names[ops[q].k], t,
                  worst);
            free(x), free(dy);
        }
    /* dx is 0 off the support whatever dy holds there (NaN included). */
    float x[6] = {3, -4, 2.9f, -5, 2.5f, -4}, y[6], dy[6] = {1, 0.5f, 2, INFINITY, 3, NAN}, dx[6];
    for (size_t q = 0; q < 5; q++) {
        CHECK(fwd(ctx, ops[q], 1, 6, x, 6, y, 6, NULL) == SG_OK, "fwd");
        CHECK(bwd(ctx, ops[q], 1, 6, y, 6, dy, 6, dx, 6, NULL) == SG_OK, "bwd");
        for (int i = 0; i < 6; i++)
            CHECK(y[i] > 0.0f ? isfinite(dx[i]) : dx[i] == 0.0f, "%s: off-support i=%d y %g dx %g",
                  kind_names[ops[q].k], i, y[i], dx[i]);
    }
    sg_context_destroy(ctx);
}

TEST(sparse_masks) {
    sg_context *ctx = test_context(2);
    const size_t n = 150, rows = 6;
    float *x = test_random_f32(rows * n, 1.5, 31), *add = test_random_f32(rows * n, 0.5, 32);
    float *y = test_alloc(rows * n * 4);
    uint8_t *keep = test_alloc(rows * n);
    test_rng rng = test_rng_seed(33);
    for (size_t i = 0; i < rows * n; i++) {
        keep[i] = test_uniform(&rng) < 0.7;
        if (test_uniform(&rng) < 0.1) add[i] = -INFINITY;
    }
    keep[2 * n + 5] = 0, x[2 * n + 5] = 100.0f; /* a removed huge entry is never chosen */
    x[3 * n + 7] = NAN, keep[3 * n + 7] = keep[7] = 0; /* a removed NaN is ignored */
    for (size_t i = 0; i < n; i++) keep[5 * n + i] = i < 3; /* fewer than k kept */
    const op ops[] = {{E15, 1.5, 0}, {EALPHA, 1.7, 0}, {TOPK, 0, 8}};
    double *z = test_alloc(n * sizeof *z);
    for (int bc = 0; bc < 2; bc++)
        for (size_t q = 0; q < 3; q++) {
            sg_softmax_options o = test_temperature(0.8f);
            o.keep_mask = keep, o.keep_mask_ld = bc ? 0 : n;
            o.add_mask = add, o.add_mask_ld = bc ? 0 : n;
            CHECK(fwd(ctx, ops[q], rows, n, x, n, y, n, &o) == SG_OK, "masked fwd: %s", sg_context_error(ctx));
            for (size_t r = 0; r < rows; r++) {
                const size_t rm = bc ? 0 : r;
                z_row(n, x + r * n, keep + rm * n, add + rm * n, 0.8, z);
                check_row(ops[q], n, z, y + r * n, bc ? "masked broadcast" : "masked");
                for (size_t i = 0; i < n; i++)
                    if (!keep[rm * n + i] || add[rm * n + i] == -INFINITY)
                        CHECK(y[r * n + i] == 0.0f, "removed entry r=%zu i=%zu: %g", r, i, y[r * n + i]);
            }
        }
    free(x), free(add), free(y), free(keep), free(z);
    sg_context_destroy(ctx);
}

TEST(sparse_special_values) {
    sg_context *ctx = test_context(1);
    const op ops[] = {{E15, 1.5, 0}, {EALPHA, 1.2, 0}, {TOPK, 0, 2}, {TOPK, 0, 5}};
    const float inf = INFINITY;
    /* rows of 6: NaN; +inf x3; all -inf; -inf mixed; huge */
    float x[5][6] = {{1, NAN, 2, 3, 0, 1},
                     {inf, 1, inf, 2, inf, 0},
                     {-inf, -inf, -inf, -inf, -inf, -inf},
                     {-inf, 1, -inf, 1.5f, -inf, 0},
                     {FLT_MAX, -FLT_MAX, FLT_MAX, 0, -FLT_MAX, 3e38f}};
    uint8_t keep[6] = {1, 1, 1, 1, 1, 0};
    float y[6], dx[6], dy[6] = {1, 2, 3, 4, 5, 6};
    for (size_t q = 0; q < 4; q++) {
        const char *nm = kind_names[ops[q].k];
        for (int mk = 0; mk < 2; mk++) {
            sg_softmax_options o = sg_softmax_options_default();
            if (mk) o.keep_mask = keep; /* the last entry removed: the masked path */
            CHECK(fwd(ctx, ops[q], 1, 6, x[0], 6, y, 6, &o) == SG_OK, "nan row");
            for (int i = 0; i < 6; i++)
                CHECK(mk && i == 5 ? y[i] == 0.0f : isnan(y[i]), "%s mask %d NaN row i=%d: %g", nm, mk, i, y[i]);
            CHECK(fwd(ctx, ops[q], 1, 6, x[1], 6, y, 6, &o) == SG_OK, "inf row");
            size_t c = ops[q].k == TOPK && ops[q].topk < 3 ? ops[q].topk : 3;
            for (int i = 0; i < 6; i++) {
                size_t before = (size_t)(i > 0) + (i > 2); /* +inf entries before i: at 0, 2, 4 */
                float want = x[1][i] == inf && before < c ? 1.0f / (float)c : 0.0f;
                CHECK(y[i] == want, "%s mask %d +inf row i=%d: %g want %g", nm, mk, i, y[i], want);
            }
            CHECK(fwd(ctx, ops[q], 1, 6, x[2], 6, y, 6, &o) == SG_OK, "-inf row");
            for (int i = 0; i < 6; i++) CHECK(y[i] == 0.0f, "%s all -inf i=%d: %g", nm, i, y[i]);
            CHECK(bwd(ctx, ops[q], 1, 6, y, 6, dy, 6, dx, 6, &o) == SG_OK, "bwd zero row");
            for (int i = 0; i < 6; i++) CHECK(dx[i] == 0.0f, "%s all -inf bwd i=%d: %g", nm, i, dx[i]);
            CHECK(fwd(ctx, ops[q], 1, 6, x[3], 6, y, 6, &o) == SG_OK, "mixed row");
            double s = 0.0;
            for (int i = 0; i < 6; i++) s += y[i];
            CHECK(y[0] == 0.0f && y[2] == 0.0f && y[4] == 0.0f && fabs(s - 1.0) < 1e-6 && y[3] > y[1],
                  "%s mixed -inf row: %g %g %g %g", nm, y[0], y[1], y[3], s);
            CHECK(fwd(ctx, ops[q], 1, 6, x[4], 6, y, 6, &o) == SG_OK, "huge row");
            s = 0.0;
            for (int i = 0; i < 6; i++) {
                s += y[i];
                CHECK(isfinite(y[i]), "%s huge i=%d: %g", nm, i, y[i]);
            }
            CHECK(fabs(y[0] - 0.5) < 1e-6 && fabs(y[2] - 0.5) < 1e-6 && fabs(s - 1.0) < 1e-6,
                  "%s huge row: %g %g", nm, y[0], y[2]);
            /* backward: a NaN in kept y makes the kept row NaN */
            float yn[6] = {0.5f, NAN, 0.5f, 0, 0, 0};
            CHECK(bwd(ctx, ops[q], 1, 6, yn, 6, dy, 6, dx, 6, &o) == SG_OK, "bwd nan");
            for (int i = 0; i < 6; i++)
                CHECK(mk && i == 5 ? dx[i] == 0.0f : isnan(dx[i]), "%s bwd NaN y i=%d: %g", nm, i, dx[i]);
        }
    }
    sg_context_destroy(ctx);
}

TEST(sparse_strides_in_place) {
    sg_context *ctx = test_context(1);
    const size_t rows = 5, ld = 203;
    const op ops[] = {{E15, 1.5, 0}, {EALPHA, 2.5, 0}, {TOPK, 0, 7}};
    for (size_t t = 0; t < N_TAILS; t++) {
        const size_t n = TAILS[t] > 200 ? 200 : TAILS[t];
        float *x = test_random_f32(rows * ld, 2.0, 60 + t), *y = test_alloc(rows * ld * 4), *yc = test_alloc(rows * n * 4);
        float *io = test_alloc(rows * ld * 4), *dy = test_random_f32(rows * ld, 1.0, 61), *dx = test_alloc(rows * ld * 4);
        float *dxc = test_alloc(rows * n * 4), *xc = test_alloc(rows * n * 4), *dyc = test_alloc(rows * n * 4);
        for (size_t r = 0; r < rows; r++) {
            memcpy(xc + r * n, x + r * ld, n * 4);
            memcpy(dyc + r * n, dy + r * ld, n * 4);
        }
        for (size_t q = 0; q < 3; q++) {
            for (size_t i = 0; i < rows * ld; i++) y[i] = dx[i] = SENTINEL;
            CHECK(fwd(ctx, ops[q], rows, n, x, ld, y, ld, NULL) == SG_OK, "strided fwd");
            CHECK(fwd(ctx, ops[q], rows, n, xc, n, yc, n, NULL) == SG_OK, "dense fwd");
            CHECK(bwd(ctx, ops[q], rows, n, y, ld, dy, ld, dx, ld, NULL) == SG_OK, "strided bwd");
            CHECK(bwd(ctx, ops[q], rows, n, yc, n, dyc, n, dxc, n, NULL) == SG_OK, "dense bwd");
            int bad = 0;
            for (size_t r = 0; r < rows; r++) {
                bad |= memcmp(y + r * ld, yc + r * n, n * 4) != 0;
                bad |= memcmp(dx + r * ld, dxc + r * n, n * 4) != 0;
                for (size_t i = n; i < ld && r + 1 < rows; i++)
                    bad |= y[r * ld + i] != SENTINEL || dx[r * ld + i] != SENTINEL;
            }
            CHECK(!bad, "%s n=%zu: strided result differs or gap written", kind_names[ops[q].k], n);
            memcpy(io, x, rows * ld * 4);
            CHECK(fwd(ctx, ops[q], rows, n, io, ld, io, ld, NULL) == SG_OK, "in place fwd");
            for (size_t r = 0; r < rows; r++) bad |= memcmp(io + r * ld, yc + r * n, n * 4) != 0;
            memcpy(io, dy, rows * ld * 4);
            CHECK(bwd(ctx, ops[q], rows, n, y, ld, io, ld, io, ld, NULL) == SG_OK, "in place bwd");
            for (size_t r = 0; r < rows; r++) bad |= memcmp(io + r * ld, dxc + r * n, n * 4) != 0;
            CHECK(!bad, "%s n=%zu: in place differs", kind_names[ops[q].k], n);
        }
        free(x), free(y), free(yc), free(io), free(dy), free(dx), free(dxc), free(xc), free(dyc);
    }
    sg_context_destroy(ctx);
}

TEST(sparse_threads_identical) {
    static const size_t shapes[][2] = {{64, 1000}, {300, 57}, {7, 5000}, {2000, 8}};
    sg_context *ctxs[3] = {test_context(1), test_context(2), test_context(3)};
    const op ops[] = {{E15, 1.5, 0}, {EALPHA, 1.4, 0}, {TOPK, 0, 5}};
    for (size_t s = 0; s < 4; s++) {
        const size_t rows = shapes[s][0], n = shapes[s][1];
        float *x = test_random_f32(rows * n, 2.0, 500 + s), *dy = test_random_f32(rows * n, 1.0, 600 + s);
        uint8_t *keep = test_alloc(n);
        for (size_t i = 0; i < n; i++) keep[i] = i % 5 != 3;
        sg_softmax_options o = test_temperature(0.7f);
        o.keep_mask = s == 1 ? keep : NULL;
        for (size_t q = 0; q < 3; q++) {
            float *y[3], *dx[3];
            for (int c = 0; c < 3; c++) {
                y[c] = test_alloc(rows * n * 4), dx[c] = test_alloc(rows * n * 4);
                CHECK(fwd(ctxs[c], ops[q], rows, n, x, n, y[c], n, &o) == SG_OK, "fwd");
                CHECK(bwd(ctxs[c], ops[q], rows, n, y[c], n, dy, n, dx[c], n, &o) == SG_OK, "bwd");
            }
            for (int c = 1; c < 3; c++)
                CHECK(memcmp(y[0], y[c], rows * n * 4) == 0 && memcmp(dx[0], dx[c], rows * n * 4) == 0,
                      "%s shape %zu: 1 and %d threads differ", kind_names[ops[q].k], s, c + 1);
            for (int c = 0; c < 3; c++) free(y[c]), free(dx[c]);
        }
        free(x), free(dy), free(keep);
    }
    for (int c = 0; c < 3; c++) sg_context_destroy(ctxs[c]);
}

static void expect_error(sg_context *ctx, sg_status got, sg_status want, const char *needle,
                         const float *out, const float *before, size_t bytes, const char *what) {
    CHECK(got == want, "%s: status %d, want %d", what, (int)got, (int)want);
    CHECK(!needle || strstr(sg_context_error(ctx), needle), "%s: message \"%s\" lacks \"%s\"", what,
          sg_context_error(ctx), needle);
    CHECK(memcmp(out, before, bytes) == 0, "%s: output written on error", what);
}

TEST(sparse_args_errors) {
    sg_context *ctx = test_context(1);
    float x[8] = {1, 2, 3, 4, 5, 6, 7, 8}, out[8], before[8];
    for (int i = 0; i < 8; i++) before[i] = out[i] = SENTINEL;
    CHECK(sg_entmax15_f32(NULL, 2, 4, x, 4, out, 4, NULL) == SG_ERR_ARGUMENT, "NULL ctx");
    CHECK(sg_entmax_f32(NULL, 1.5, 2, 4, x, 4, out, 4, NULL) == SG_ERR_ARGUMENT, "NULL ctx");
    CHECK(sg_sparse_softmax_f32(NULL, 2, 2, 4, x, 4, out, 4, NULL) == SG_ERR_ARGUMENT, "NULL ctx");
    CHECK(sg_sparse_softmax_backward_f32(NULL, 2, 4, x, 4, x, 4, out, 4, NULL) == SG_ERR_ARGUMENT, "NULL ctx");
    expect_error(ctx, sg_entmax_f32(ctx, 1.0, 2, 4, x, 4, out, 4, NULL), SG_ERR_ARGUMENT, "softmax", out,
                 before, sizeof out, "alpha = 1");
    const double bad_alpha[] = {0.5, -2.0, NAN, INFINITY, 1.0 - 1e-12};
    for (int a = 0; a < 5; a++) {
        expect_error(ctx, sg_entmax_f32(ctx, bad_alpha[a], 2, 4, x, 4, out, 4, NULL), SG_ERR_ARGUMENT,
                     "alpha", out, before, sizeof out, "bad alpha");
        expect_error(ctx, sg_entmax_backward_f32(ctx, bad_alpha[a], 2, 4, x, 4, x, 4, out, 4, NULL),
                     SG_ERR_ARGUMENT, "alpha", out, before, sizeof out, "bad alpha backward");
    }
    expect_error(ctx, sg_sparse_softmax_f32(ctx, 0, 2, 4, x, 4, out, 4, NULL), SG_ERR_ARGUMENT, "k", out,
                 before, sizeof out, "k = 0");
    const float bad_t[] = {0.0f, -1.0f, NAN, INFINITY, 1e-39f};
    const op ops[] = {{E15, 1.5, 0}, {EALPHA, 1.5, 0}, {TOPK, 0, 2}};
    for (size_t q = 0; q < 3; q++) {
        for (int b = 0; b < 5; b++) {
            sg_softmax_options o = test_temperature(bad_t[b]);
            expect_error(ctx, fwd(ctx, ops[q], 2, 4, x, 4, out, 4, &o), SG_ERR_ARGUMENT, "temperature", out,
                         before, sizeof out, "bad T");
            expect_error(ctx, bwd(ctx, ops[q], 2, 4, x, 4, x, 4, out, 4, &o), SG_ERR_ARGUMENT, "temperature",
                         out, before, sizeof out, "bad T backward");
        }
        expect_error(ctx, fwd(ctx, ops[q], 2, 4, x, 3, out, 4, NULL), SG_ERR_SHAPE, "x", out, before,
                     sizeof out, "ldx < n");
        expect_error(ctx, fwd(ctx, ops[q], 2, 4, x, 4, out, 3, NULL), SG_ERR_SHAPE, "y", out, before,
                     sizeof out, "ldy < n");
        expect_error(ctx, fwd(ctx, ops[q], 2, 4, NULL, 4, out, 4, NULL), SG_ERR_ARGUMENT, "x", out, before,
                     sizeof out, "NULL x");
        expect_error(ctx, bwd(ctx, ops[q], 2, 4, x, 4, NULL, 4, out, 4, NULL), SG_ERR_ARGUMENT, "dy", out,
                     before, sizeof out, "NULL dy");
        expect_error(ctx, bwd(ctx, ops[q], 2, 4, x, 4, x, 4, out, 2, NULL), SG_ERR_SHAPE, "dx", out, before,
                     sizeof out, "lddx < n");
        float io[16], io0[16];
        for (int i = 0; i < 16; i++) io[i] = io0[i] = (float)i;
        expect_error(ctx, fwd(ctx, ops[q], 2, 4, io, 5, io, 6, NULL), SG_ERR_SHAPE, NULL, io, io0, sizeof io,
                     "in place with ldy != ldx");
        CHECK(fwd(ctx, ops[q], 2, 4, x, 4, out, 4, NULL) == SG_OK && !sg_context_error(ctx)[0],
              "good call after errors: \"%s\"", sg_context_error(ctx));
        CHECK(fwd(ctx, ops[q], 0, 4, NULL, 4, NULL, 4, NULL) == SG_OK, "rows == 0");
        CHECK(fwd(ctx, ops[q], 3, 0, NULL, 0, NULL, 0, NULL) == SG_OK, "n == 0");
        CHECK(bwd(ctx, ops[q], 0, 4, NULL, 4, NULL, 4, NULL, 4, NULL) == SG_OK, "bwd rows == 0");
        for (int i = 0; i < 8; i++) out[i] = SENTINEL;
    }
    sg_context_destroy(ctx);
}

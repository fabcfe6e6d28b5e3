/*
 * test_sparse_fused.c - the 1.5-entmax candidate kernels of the third
 * round (sparse_kernels.h): tau15 (a float grid start, then the exact
 * Newton), shift and out15 (vectorized d and outputs), and row15 (whole
 * unmasked rows of 65..512, fused, two rows per phase). Every compiled
 * kernel (that the CPU runs) against the reference kernels and against a
 * double reference by sorting; row15 against the candidate path composed
 * of the same ISA level's kernels, bit for bit (what the op relies on);
 * candidate counts around the grid and tile sizes, ties on a grid,
 * entries exactly at tau, -inf entries, special rows (not taken, y
 * untouched), n past the limit, in place, strides, and the op against its
 * general path (all-ones keep mask) and across thread counts.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "normalizers/sparse_internal_entmax.h"
#include "normalizers/sparse_kernels.h"
#include "test.h"

sg_sparse_max_fn sg_sparse_max_f32__ref; /* sparse_ref.c */
sg_sparse_tau15_fn sg_sparse_tau15_f32__ref;
sg_sparse_shift_fn sg_sparse_shift_f32__ref;
sg_sparse_out15_fn sg_sparse_out15_f32__ref;

#define NMAX 1100

static int cmp_desc(const void *a, const void *b) {
    double p = *(const double *)a, q = *(const double *)b;
    return (p < q) - (p > q);
}

/* The paper's threshold of u = d / 2 (d: max exactly 0), by sorting, in
 * double. */
static double ref_tau(size_t m, const float *d) {
    double *u = malloc((m + 1) * sizeof *u);
    for (size_t i = 0; i < m; i++) u[i] = 0.5 * (double)d[i];
    qsort(u, m, sizeof *u, cmp_desc);
    double mean = 0.0, ss = 0.0, tau = -1.0;
    for (size_t k = 1; k <= m; k++) {
        const double v = u[k - 1], dm = v - mean;
        if (v == -INFINITY) break;
        mean += dm / (double)k;
        ss += dm * (v - mean);
        const double t = mean - sqrt(fmax((1.0 - ss) / (double)k, 0.0));
        if (t <= v) tau = t;
    }
    free(u);
    return tau;
}

/* The kernel of a slot at a level, as the dispatch table would hold it
 * at that level (the best line at or below it). */
static void (*kernel_at(enum sg_sparse_slot slot, sg_isa isa))(void) {
    size_t count;
    const sg_sparse_kernel_entry *e = sg_sparse_kernel_entries(&count);
    void (*best)(void) = NULL;
    for (size_t q = 0; q < count; q++)
        if (e[q].slot == slot && e[q].isa <= isa) best = e[q].fn;
    return best;
}

/* Candidate kinds: N(0,1) x scale with max exactly 0 (d = x - max, the
 * entries the op keeps: d > -2, plus a few below and -inf), ties on a grid
 * of 1/4, four maxima and an entry exactly at tau. */
static size_t fill_cands(test_rng *g, size_t m, int kind, float *d) {
    float mx = -INFINITY;
    for (size_t i = 0; i < m; i++) {
        switch (kind) {
        case 0: d[i] = (float)test_normal(g); break;
        case 1: d[i] = (float)(0.3 * test_normal(g)); break;
        case 2: d[i] = (float)(3.0 * test_normal(g)); break;
        case 3: d[i] = (float)floor(8.0 * test_uniform(g)) * 0.25f; break;
        default: d[i] = -1.9f * (float)test_uniform(g); break;
        }
        if (kind == 0 && m > 8 && i == m / 4) d[i] = -INFINITY; /* removed entries are -inf */
        mx = d[i] > mx ? d[i] : mx;
    }
    for (size_t i = 0; i < m; i++) d[i] = (float)((double)d[i] - mx); /* max exactly 0 */
    if (kind == 0 && m > 8 && d[m / 5] != 0.0f) d[m / 5] = -2.5f; /* below the radius */
    if (kind == 4 && m >= 6) { /* u: four zeros, then -1/2 = tau exactly, the rest lower */
        for (size_t i = 0; i < m; i++) d[i] = -1.0f - 0.9f * (float)test_uniform(g) - 0.01f;
        d[0] = d[m / 3] = d[m / 2] = d[m - 1] = 0.0f;
        d[1] = -1.0f;
    }
    return m;
}

static const size_t MS[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65,
                            127, 128, 129, 200, 255, 256, 257, 400};
#define N_MS (sizeof MS / sizeof MS[0])

TEST(sparse_fused_tau15) {
    size_t count;
    const sg_sparse_kernel_entry *e = sg_sparse_kernel_entries(&count);
    const sg_sparse_kernels *kr = sg_sparse_kernels_get();
    test_rng g = test_rng_seed(311);
    float d[NMAX];
    int bad = 0;
    for (size_t q = 0; q < count && bad < 5; q++) {
        if (e[q].slot != SG_SPARSE_SLOT_tau15 || !sg_cpu_supports(e[q].isa)) continue;
        sg_sparse_tau15_fn *f = (sg_sparse_tau15_fn *)e[q].fn;
        for (size_t a = 0; a < N_MS && bad < 5; a++)
            for (int kind = 0; kind < 5; kind++)
                for (int rep = 0; rep < (test_quick ? 2 : 6); rep++) {
                    const size_t m = fill_cands(&g, MS[a], kind, d);
                    const double t = f(m, d), tr = ref_tau(m, d);
                    /* the reference's tau; giving up (0) only on rows with ties on a
                     * grid, where an entry can sit exactly at tau and Newton from
                     * below stalls on it (the op then sorts) */
                    int ok = fabs(t - tr) <= 1e-12 || (t == 0.0 && (kind == 3 || kind == 4));
                    /* the bits of Newton from -1 with the same level's sums */
                    if (ok && m > SG_SPARSE_SUMS_INLINE && e[q].isa == kr->isa[SG_SPARSE_SLOT_sums]) {
                        const double tn = sg_entmax15_tau_f32(d, m, NULL, 2);
                        ok = tn == 0.0 || memcmp(&tn, &t, sizeof t) == 0;
                    }
                    CHECK(ok, "%s m=%zu kind %d: tau %.17g ref %.17g", e[q].name, m, kind, t, tr);
                    bad += !ok;
                }
    }
}

TEST(sparse_fused_shift_out15) {
    size_t count;
    const sg_sparse_kernel_entry *e = sg_sparse_kernel_entries(&count);
    test_rng g = test_rng_seed(312);
    float a[NMAX + 16], b[NMAX + 16], d[NMAX + 16], y1[NMAX + 16], y2[NMAX + 16];
    uint32_t idx[NMAX];
    const size_t ns[] = {1, 7, 8, 9, 15, 16, 17, 31, 33, 64, 65, 100, 257, 1000};
    for (size_t q = 0; q < count; q++) {
        if (!sg_cpu_supports(e[q].isa)) continue;
        for (size_t t = 0; t < sizeof ns / sizeof ns[0]; t++) {
            const size_t n = ns[t];
            if (e[q].slot == SG_SPARSE_SLOT_shift) {
                sg_sparse_shift_fn *f = (sg_sparse_shift_fn *)e[q].fn;
                const double xb = 3.0 * test_normal(&g);
                for (size_t i = 0; i < n; i++) a[i] = b[i] = (float)(xb + 2.0 * test_normal(&g));
                a[n] = b[n] = 7.0f; /* past m: untouched by the reference */
                f(n, a, xb);
                sg_sparse_shift_f32__ref(n, b, xb);
                CHECK(memcmp(a, b, n * sizeof *a) == 0, "%s m=%zu: differs from the reference", e[q].name, n);
            } else if (e[q].slot == SG_SPARSE_SLOT_out15) {
                sg_sparse_out15_fn *f = (sg_sparse_out15_fn *)e[q].fn;
                size_t m = 0;
                for (size_t i = 0; i < n; i++)
                    if (test_uniform(&g) < 0.4 || i == n / 2) idx[m] = (uint32_t)i, d[m++] = (float)(-2.0 * test_uniform(&g));
                d[0] = 0.0f;
                const double tau = -0.5 - 0.3 * test_uniform(&g);
                for (size_t i = 0; i < n + 16; i++) y1[i] = y2[i] = NAN;
                f(n, y1, m, d, idx, tau);
                sg_sparse_out15_f32__ref(n, y2, m, d, idx, tau);
                CHECK(memcmp(y1, y2, (n + 16) * sizeof *y1) == 0, "%s n=%zu m=%zu: differs from the reference",
                      e[q].name, n, m);
            }
        }
    }
}

/* The candidate path of one row at a level, composed of that level's
 * kernels as the op runs it (sparse_rows.c, entmax.c). 0: not taken. */
static int composed(sg_isa isa, size_t n, const float *x, float *y) {
    sg_sparse_max_fn *fmax_ = (sg_sparse_max_fn *)kernel_at(SG_SPARSE_SLOT_max, isa);
    sg_sparse_select_fn *fsel = (sg_sparse_select_fn *)kernel_at(SG_SPARSE_SLOT_select, isa);
    sg_sparse_shift_fn *fsh = (sg_sparse_shift_fn *)kernel_at(SG_SPARSE_SLOT_shift, isa);
    sg_sparse_tau15_fn *ftau = (sg_sparse_tau15_fn *)kernel_at(SG_SPARSE_SLOT_tau15, isa);
    sg_sparse_out15_fn *fout = (sg_sparse_out15_fn *)kernel_at(SG_SPARSE_SLOT_out15, isa);
    float v[NMAX + 16];
    uint32_t idx[NMAX + 16];
    int bad = 0;
    const float mx = fmax_(n, x, &bad);
    if (bad || mx == -INFINITY) return 0;
    const size_t m = fsel(n, x, sg_sparse_filter_threshold(mx, 2.0, 1.0), idx, v, n);
    fsh(m, v, (double)mx);
    /* m <= SG_SPARSE_SUMS_INLINE: the op's inline Newton (no kernel) */
    const double tau = m <= SG_SPARSE_SUMS_INLINE ? sg_entmax15_tau_f32(v, m, NULL, 2) : ftau(m, v);
    if (tau == 0.0) return 0;
    fout(n, y, m, v, idx, tau);
    return 1;
}

/* Row kinds: N(0,1) x 1, x 10, x 0.1, x 3, ties on a grid of 1/4, four
 * maxima with an entry exactly at tau (d = -1), a constant row, -inf
 * entries, the special rows (NaN, +inf, all -inf), magnitudes far apart
 * (tiny and subnormal entries near a max of 1) and rows around -1e6. */
#define N_ROW_KINDS 13
static void fill_row(test_rng *g, size_t n, int kind, float *x) {
    static const double sc[] = {1.0, 10.0, 0.1, 3.0};
    for (size_t i = 0; i < n; i++) {
        if (kind < 4) x[i] = (float)(sc[kind] * test_normal(g));
        else if (kind == 4) x[i] = (float)floor(12.0 * test_uniform(g)) * 0.25f;
        else if (kind == 5) x[i] = (float)(-2.0 * test_uniform(g));
        else x[i] = kind == 6 ? 2.5f : (float)test_normal(g);
    }
    if (kind == 5 && n >= 8) { /* four maxima at 1 (tau = -1/2 in u), one entry at 0 (u = -1/2:
                                * exactly at tau, output 0), the rest below -1.05 */
        for (size_t i = 0; i < n; i++) x[i] = -1.05f - 2.0f * (float)test_uniform(g);
        x[n / 7] = x[n / 2] = x[n - 2] = x[0] = 1.0f;
        x[n / 3] = 0.0f;
    }
    if (kind == 7) x[n / 3] = x[n - 1] = -INFINITY;
    if (kind == 8) x[n / 2] = NAN;
    if (kind == 9) x[n - 1] = INFINITY;
    if (kind == 10)
        for (size_t i = 0; i < n; i++) x[i] = -INFINITY;
    if (kind == 11) /* magnitudes far apart near a max of 1: d = x - max rounds (row15 subtracts in
                     * float, the candidate path in double and rounds again: the same floats) */
        for (size_t i = 0; i < n; i++)
            x[i] = i % 4 == 0   ? 1e-30f * (float)test_normal(g)
                   : i % 4 == 1 ? 1e-40f * (float)test_normal(g) /* subnormal */
                   : i % 4 == 2 ? 1.0f - (float)ldexp(test_uniform(g), -(int)(i % 30))
                                : (float)(0.5 * test_normal(g));
    if (kind == 12) /* around -1e6 (float spacing 1/16): many ties, some at tau */
        for (size_t i = 0; i < n; i++) x[i] = -1e6f + (float)(1.5 * test_normal(g));
}

static const size_t NS[] = {1,   15,  16,  17,  63,  64,  65,  68,  72,  76,  79,  80,  84,  88,  96,
                            100, 112, 113, 127, 128, 129, 200, 255, 256, 257, 511, 512, 513};
#define N_NS (sizeof NS / sizeof NS[0])

TEST(sparse_fused_row15_kernels) {
    size_t count;
    const sg_sparse_kernel_entry *e = sg_sparse_kernel_entries(&count);
    test_rng g = test_rng_seed(313);
    const size_t maxrows = 5, ld = NMAX;
    float *x = malloc(maxrows * ld * sizeof *x), *y = malloc(maxrows * ld * sizeof *y);
    float *yc = malloc(ld * sizeof *yc), *xi = malloc(maxrows * ld * sizeof *xi);
    uint8_t taken[8], taken2[8];
    int bad = 0;
    for (size_t q = 0; q < count && bad < 5; q++) {
        if (e[q].slot != SG_SPARSE_SLOT_row15 || !sg_cpu_supports(e[q].isa)) continue;
        sg_sparse_row15_fn *f = (sg_sparse_row15_fn *)e[q].fn;
        for (size_t a = 0; a < N_NS && bad < 5; a++) {
            const size_t n = NS[a], ldx = n + (a % 3); /* strides n, n + 1, n + 2 */
            for (int rep = 0; rep < (test_quick ? 2 : 6) && bad < 5; rep++) {
                const size_t rows = 1 + (size_t)(rep + a) % maxrows; /* pairs and odd counts */
                for (size_t r = 0; r < rows; r++)
                    fill_row(&g, n, (int)((r + (size_t)rep * 3 + a) % N_ROW_KINDS), x + r * ldx);
                for (size_t i = 0; i < rows * ldx; i++) y[i] = -7.0f;
                memcpy(xi, x, rows * ldx * sizeof *x);
                f(rows, n, x, ldx, y, ldx, taken);
                f(rows, n, xi, ldx, xi, ldx, taken2); /* in place */
                for (size_t r = 0; r < rows; r++) {
                    const float *xr = x + r * ldx, *yr = y + r * ldx;
                    for (size_t i = 0; i < n; i++) yc[i] = -7.0f;
                    const int want = n <= SG_SPARSE_ROW15_MAX && composed(e[q].isa, n, xr, yc);
                    int ok = taken[r] == want && taken2[r] == taken[r];
                    /* taken: the candidate path's bits; not taken: y untouched */
                    ok = ok && memcmp(yr, want ? yc : (const float *)y + r * ldx, n * sizeof *yr) == 0;
                    if (!want)
                        for (size_t i = 0; i < n; i++) ok = ok && yr[i] == -7.0f;
                    ok = ok && memcmp(xi + r * ldx, want ? yr : xr, n * sizeof *yr) == 0;
                    if (ok && want) { /* against the sorted double reference, 3e-7 */
                        float mx = -INFINITY;
                        for (size_t i = 0; i < n; i++) mx = xr[i] > mx ? xr[i] : mx;
                        float *dd = malloc(n * sizeof *dd);
                        for (size_t i = 0; i < n; i++)
                            dd[i] = xr[i] == -INFINITY ? -INFINITY : (float)((double)xr[i] - mx);
                        const double tau = ref_tau(n, dd);
                        double sum = 0.0;
                        for (size_t i = 0; i < n; i++) {
                            const double w = fmax(0.5 * ((double)xr[i] - mx) - tau, 0.0);
                            ok = ok && fabs((double)yr[i] - w * w) <= 3e-7;
                            sum += yr[i];
                        }
                        ok = ok && fabs(sum - 1.0) <= 2e-6;
                        free(dd);
                    }
                    CHECK(ok, "%s n=%zu rows %zu row %zu: taken %d/%d want %d", e[q].name, n, rows, r,
                          taken[r], taken2[r], want);
                    bad += !ok;
                }
            }
        }
    }
    free(x), free(y), free(yc), free(xi);
}

/* row15's float Newton start (pairs of rows with at most 64 candidates
 * each: 2 or 4 blocks of 16): pairs of flat rows of several spreads (so
 * both counts up to 32, one or both 33..64, above 64), rows whose
 * count-based start lies above tau (one max, many entries just above the
 * filter: d around -1.9) and far below it, ties at tau (kind 5), odd row
 * counts; every row bit for bit against the composed candidate path
 * (taken or untouched as it says), in place too. */
TEST(sparse_fused_row15_start) {
    size_t count;
    const sg_sparse_kernel_entry *e = sg_sparse_kernel_entries(&count);
    test_rng g = test_rng_seed(317);
    static const size_t ns[] = {65, 69, 72, 76, 80, 84, 88, 96, 113, 128, 200, 300};
    static const double sc[] = {0.4, 0.7, 1.0, 1.5, 2.5};
    const size_t maxrows = 7, ld = 300;
    float *x = malloc(maxrows * ld * sizeof *x), *y = malloc(maxrows * ld * sizeof *y);
    float *xi = malloc(maxrows * ld * sizeof *xi), *yc = malloc(ld * sizeof *yc);
    uint8_t taken[8], taken2[8];
    int bad = 0;
    for (size_t q = 0; q < count && bad < 5; q++) {
        if (e[q].slot != SG_SPARSE_SLOT_row15 || !sg_cpu_supports(e[q].isa)) continue;
        sg_sparse_row15_fn *f = (sg_sparse_row15_fn *)e[q].fn;
        for (size_t a = 0; a < sizeof ns / sizeof ns[0] && bad < 5; a++) {
            const size_t n = ns[a];
            for (int rep = 0; rep < (test_quick ? 3 : 12) && bad < 5; rep++) {
                const size_t rows = rep % 3 == 2 ? maxrows : 6;
                for (size_t r = 0; r < rows; r++) {
                    float *xr = x + r * n;
                    const int kind = (rep + (int)r) % 7;
                    if (kind < 5) {
                        for (size_t i = 0; i < n; i++) xr[i] = (float)(sc[kind] * test_normal(&g));
                    } else if (kind == 5) { /* start above tau: one max, the rest near d = -1.9 */
                        for (size_t i = 0; i < n; i++) xr[i] = (float)(-1.9 + 0.08 * test_uniform(&g));
                        xr[(size_t)rep % n] = 0.0f;
                    } else { /* a few maxima, the rest spread (start far below tau) */
                        for (size_t i = 0; i < n; i++) xr[i] = (float)(-3.0 * test_uniform(&g));
                        xr[n / 3] = xr[n / 2] = 0.0f;
                    }
                }
                if (rep % 4 == 3) fill_row(&g, n, 5, x); /* an entry exactly at tau */
                for (size_t i = 0; i < rows * n; i++) y[i] = -7.0f;
                memcpy(xi, x, rows * n * sizeof *x);
                f(rows, n, x, n, y, n, taken);
                f(rows, n, xi, n, xi, n, taken2);
                for (size_t r = 0; r < rows; r++) {
                    const float *xr = x + r * n, *yr = y + r * n;
                    for (size_t i = 0; i < n; i++) yc[i] = -7.0f;
                    const int want = composed(e[q].isa, n, xr, yc);
                    int ok = taken[r] == want && taken2[r] == taken[r];
                    ok = ok && memcmp(yr, yc, n * sizeof *yr) == 0;
                    ok = ok && memcmp(xi + r * n, want ? yr : xr, n * sizeof *yr) == 0;
                    CHECK(ok, "%s n=%zu rep %d row %zu: taken %d/%d want %d", e[q].name, n, rep, r, taken[r],
                          taken2[r], want);
                    bad += !ok;
                }
            }
        }
    }
    free(x), free(y), free(xi), free(yc);
}

/* The op on rows the fused kernel takes (SIMD levels) against its general
 * path (all-ones keep mask: the scalar gather, the same threshold solver),
 * within the accuracy of the two (d rounded once in both; 6e-7), the
 * simplex, and the same bits for 1, 2 and 3 threads. */
TEST(sparse_fused_ops) {
    sg_context *c1 = test_context(1), *c2 = test_context(2), *c3 = test_context(3);
    test_rng g = test_rng_seed(314);
    const size_t ns[] = {65, 100, 128, 256, 300, 512, 513};
    for (size_t a = 0; a < sizeof ns / sizeof ns[0]; a++) {
        const size_t n = ns[a], rows = test_quick ? 9 : 33;
        float *x = malloc(rows * n * sizeof *x), *y1 = malloc(rows * n * sizeof *y1);
        float *y2 = malloc(rows * n * sizeof *y2), *y3 = malloc(rows * n * sizeof *y3);
        float *yg = malloc(rows * n * sizeof *yg);
        uint8_t *keep = malloc(n);
        memset(keep, 1, n);
        for (size_t r = 0; r < rows; r++) fill_row(&g, n, (int)(r % 8 == 7 ? 4 : r % 6), x + r * n);
        sg_softmax_options o = sg_softmax_options_default();
        o.keep_mask = keep, o.keep_mask_ld = 0;
        CHECK(sg_entmax15_f32(c1, rows, n, x, n, y1, n, NULL) == SG_OK, "n=%zu", n);
        CHECK(sg_entmax15_f32(c2, rows, n, x, n, y2, n, NULL) == SG_OK, "n=%zu", n);
        CHECK(sg_entmax15_f32(c3, rows, n, x, n, y3, n, NULL) == SG_OK, "n=%zu", n);
        CHECK(sg_entmax15_f32(c1, rows, n, x, n, yg, n, &o) == SG_OK, "n=%zu", n);
        CHECK(memcmp(y1, y2, rows * n * sizeof *y1) == 0 && memcmp(y1, y3, rows * n * sizeof *y1) == 0,
              "n=%zu: thread counts differ", n);
        for (size_t r = 0; r < rows; r++) {
            double worst = 0.0, sum = 0.0;
            for (size_t i = 0; i < n; i++) {
                worst = fmax(worst, fabs((double)y1[r * n + i] - yg[r * n + i]));
                sum += y1[r * n + i];
            }
            CHECK(worst <= 6e-7 && fabs(sum - 1.0) <= 2e-6, "n=%zu row %zu: general path %g, sum %.9f", n,
                  r, worst, sum);
        }
        free(x), free(y1), free(y2), free(y3), free(yg), free(keep);
    }
    sg_context_destroy(c1), sg_context_destroy(c2), sg_context_destroy(c3);
}

/* row15's branch-free filter threshold against sg_sparse_filter_threshold
 * (radius 2, T = 1): the same float on every 4099th float bit pattern
 * (every sign, exponent and a spread of mantissas), around 2 (where
 * xb - r crosses 0) and at the specials. */
TEST(sparse_fused_filter2) {
#if defined(__x86_64__) || defined(_M_X64)
    if (!sg_cpu_supports(SG_ISA_AVX512)) return;
    size_t bad = 0;
    for (uint64_t b = 0; b <= 0xffffffffull && bad < 5; b += test_quick ? 65537 : 4099) {
        const uint32_t u = (uint32_t)b;
        float x;
        memcpy(&x, &u, sizeof x);
        if (isnan(x)) continue;
        const float a = sg_sparse_filter_threshold(x, 2.0, 1.0), c = sg_sparse_filter2_f32__avx512(x);
        if (memcmp(&a, &c, sizeof a) != 0) {
            bad++;
            CHECK(0, "x=%a: %a, scalar %a", (double)x, (double)c, (double)a);
        }
    }
    const float sp[] = {INFINITY, -INFINITY, FLT_MAX, -FLT_MAX, 0.0f, -0.0f, 1e-45f, -1e-45f, -1e30f};
    for (size_t i = 0; i < sizeof sp / sizeof sp[0]; i++) {
        const float a = sg_sparse_filter_threshold(sp[i], 2.0, 1.0), c = sg_sparse_filter2_f32__avx512(sp[i]);
        CHECK(memcmp(&a, &c, sizeof a) == 0, "x=%a: %a, scalar %a", (double)sp[i], (double)c, (double)a);
    }
    float x = 2.0f; /* the floats around 2: xb - r changes sign between them */
    for (int i = 0; i < 40; i++) x = nextafterf(x, 0.0f);
    for (int i = 0; i < 80; i++, x = nextafterf(x, 4.0f)) {
        const float a = sg_sparse_filter_threshold(x, 2.0, 1.0), c = sg_sparse_filter2_f32__avx512(x);
        CHECK(memcmp(&a, &c, sizeof a) == 0, "x=%a: %a, scalar %a", (double)x, (double)c, (double)a);
    }
#endif
}

/* A row's bits never depend on the rows next to it, ties at tau included
 * (4 maxima and m entries at d = -1, exactly at tau for entmax15 with
 * suitable m): every row15 kernel on the tie row alone, then paired with
 * flat, spread and tie partners, before and after it. */
TEST(sparse_fused_row15_neighbours) {
    size_t count;
    const sg_sparse_kernel_entry *e = sg_sparse_kernel_entries(&count);
    test_rng g = test_rng_seed(4242);
    enum { LD = 130 };
    float x[3 * LD], y[3 * LD], alone[LD];
    uint8_t taken[3], taken1[1];
    int bad = 0;
    for (size_t q = 0; q < count && bad < 5; q++) {
        if (e[q].slot != SG_SPARSE_SLOT_row15 || !sg_cpu_supports(e[q].isa)) continue;
        sg_sparse_row15_fn *f = (sg_sparse_row15_fn *)e[q].fn;
        for (size_t n = 65; n <= 128 && bad < 5; n += test_quick ? 9 : 1)
            for (size_t m = 1; m + 4 < n && m <= 20 && bad < 5; m++) {
                float tie[LD];
                for (size_t i = 0; i < n; i++) tie[i] = i < 4 ? 0.0f : i < 4 + m ? -1.0f : (i % 2 ? -3.0f : -2.0f);
                f(1, n, tie, LD, alone, LD, taken1);
                for (int kind = 0; kind < 3 && bad < 5; kind++)
                    for (int pos = 0; pos < 2 && bad < 5; pos++) {
                        float *other = x + (size_t)(1 - pos) * LD;
                        memcpy(x + (size_t)pos * LD, tie, n * sizeof *tie);
                        for (size_t i = 0; i < n; i++)
                            other[i] = kind == 0   ? (float)test_normal(&g)
                                       : kind == 1 ? (float)(-0.05 * (double)i)
                                                   : (i == 0 ? 5.0f : 0.0f);
                        f(2, n, x, LD, y, LD, taken);
                        const float *got = y + (size_t)pos * LD;
                        const int same = taken[pos] == taken1[0] &&
                                         (!taken1[0] || memcmp(got, alone, n * sizeof *got) == 0);
                        if (!same) bad++;
                        CHECK(same, "%s n=%zu m=%zu partner %d at %d: taken %d (alone %d), bits differ from alone",
                              e[q].name, n, m, kind, 1 - pos, taken[pos], taken1[0]);
                    }
            }
    }
}

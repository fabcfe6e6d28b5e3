/*
 * test_sparse_rowsm.c - the fused sparsemax row kernel rowsm
 * (sparse_kernels.h; the op takes it for unmasked rows of 65..256, T = 1,
 * from a SIMD kernel). Every compiled rowsm kernel (that the CPU runs)
 * against the candidate path composed of the same ISA level's kernels,
 * bit for bit (what the op relies on), against a sorted double reference,
 * n around the 16-element tiles and the 128 register limit, 65..256 sampled,
 * ties and entries exactly at tau, -inf entries, special rows (not taken,
 * y untouched), in place, strides; the op against its general path
 * (all-ones keep mask) and across 1, 2 and 3 threads.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "normalizers/sparse_kernels.h"
#include "test.h"

#define RS_NMAX 600

static void (*rs_kernel_at(enum sg_sparse_slot slot, sg_isa isa))(void) {
    size_t count;
    const sg_sparse_kernel_entry *e = sg_sparse_kernel_entries(&count);
    void (*best)(void) = NULL;
    for (size_t q = 0; q < count; q++)
        if (e[q].slot == slot && e[q].isa <= isa) best = e[q].fn;
    return best;
}

/* The sparsemax op's candidate path of one row at a level (sparse_rows.c
 * gather with radius 1, sparsemax.c solve_tau_array, the outputs),
 * composed of that level's kernels. 0: the op would not finish it there. */
static int rs_composed(sg_isa isa, size_t n, const float *x, float *y) {
    sg_sparse_max_fn *fmax_ = (sg_sparse_max_fn *)rs_kernel_at(SG_SPARSE_SLOT_max, isa);
    sg_sparse_select_fn *fsel = (sg_sparse_select_fn *)rs_kernel_at(SG_SPARSE_SLOT_select, isa);
    sg_sparse_shift_fn *fsh = (sg_sparse_shift_fn *)rs_kernel_at(SG_SPARSE_SLOT_shift, isa);
    sg_sparse_sums_fn *fsums = (sg_sparse_sums_fn *)rs_kernel_at(SG_SPARSE_SLOT_sums, isa);
    sg_sparse_sums_fn *fref = (sg_sparse_sums_fn *)rs_kernel_at(SG_SPARSE_SLOT_sums, SG_ISA_REF);
    float v[RS_NMAX + 16];
    uint32_t idx[RS_NMAX + 16];
    int bad = 0;
    const float mx = fmax_(n, x, &bad);
    if (bad || mx == -INFINITY) return 0;
    const size_t m = fsel(n, x, sg_sparse_filter_threshold(mx, 1.0, 1.0), idx, v, n);
    fsh(m, v, (double)mx);
    /* m <= SG_SPARSE_SUMS_INLINE: the op's inline loop, the reference's */
    sg_sparse_sums_fn *fs = m <= SG_SPARSE_SUMS_INLINE ? fref : fsums;
    sg_sparse_sums a;
    fs(m, v, 1.0, -1.0, &a);
    size_t k = a.k;
    double tau = (a.s1 - 1.0) / (double)k;
    int it = 0;
    for (; it < 32; it++) {
        fs(m, v, 1.0, tau, &a);
        if (a.k == k) break;
        k = a.k, tau = (a.s1 - 1.0) / (double)k;
    }
    if (it == 32) return 0;
    for (size_t i = 0; i < n; i++) y[i] = 0.0f;
    for (size_t q = 0; q < m; q++) {
        const double w = (double)v[q] - tau;
        y[idx[q]] = (float)(w > 0.0 ? w : 0.0);
    }
    return 1;
}

static int rs_cmp_desc(const void *a, const void *b) {
    double p = *(const double *)a, q = *(const double *)b;
    return (p < q) - (p > q);
}

/* sparsemax's tau of d (finite max exactly 0; -inf allowed) by sorting,
 * in double: the largest k with 1 + k d_(k) > sum_{j <= k} d_(j). */
static double rs_ref_tau(size_t n, const float *d) {
    double *u = malloc(n * sizeof *u);
    for (size_t i = 0; i < n; i++) u[i] = d[i];
    qsort(u, n, sizeof *u, rs_cmp_desc);
    double s = 0.0, tau = 0.0;
    for (size_t k = 1; k <= n && u[k - 1] > -INFINITY; k++) {
        s += u[k - 1];
        if (1.0 + (double)k * u[k - 1] > s) tau = (s - 1.0) / (double)k;
    }
    free(u);
    return tau;
}

#define RS_KINDS 11
static void rs_fill(test_rng *g, size_t n, int kind, float *x) {
    static const double sc[] = {1.0, 10.0, 0.1, 3.0};
    for (size_t i = 0; i < n; i++) {
        if (kind < 4) x[i] = (float)(sc[kind] * test_normal(g));
        else if (kind == 4) x[i] = (float)floor(8.0 * test_uniform(g)) * 0.25f; /* ties on a grid */
        else x[i] = (float)test_normal(g);
    }
    if (kind == 5) { /* four maxima at 1 (tau = -1/4 in d), entries at 0.75 (d exactly at tau: 0) */
        for (size_t i = 0; i < n; i++) x[i] = -0.5f - (float)test_uniform(g);
        x[0] = x[n / 2] = x[n / 5] = x[n - 1] = 1.0f;
        x[n / 3] = x[n / 7 + 1] = 0.75f;
    }
    if (kind == 6) x[n / 3] = x[n - 1] = -INFINITY;
    if (kind == 7) x[n / 2] = NAN;
    if (kind == 8) x[n - 1] = INFINITY;
    if (kind == 9)
        for (size_t i = 0; i < n; i++) x[i] = -INFINITY;
    if (kind == 10) /* around -1e6 (float spacing 1/16): many ties */
        for (size_t i = 0; i < n; i++) x[i] = -1e6f + (float)(0.7 * test_normal(g));
}

static const size_t RS_NS[] = {1,   16,  63,  64,  65,  66,  68,  72,  79,  80,  81,  95,  96,  97,
                               100, 111, 112, 113, 127, 128, 129, 144, 160, 175, 176, 200, 240, 255,
                               256, 257, 300, 511, 512, 513};
#define RS_N_NS (sizeof RS_NS / sizeof RS_NS[0])

TEST(sparse_rowsm_kernels) {
    size_t count;
    const sg_sparse_kernel_entry *e = sg_sparse_kernel_entries(&count);
    test_rng g = test_rng_seed(515);
    const size_t maxrows = 5, ld = RS_NMAX;
    float *x = malloc(maxrows * ld * sizeof *x), *y = malloc(maxrows * ld * sizeof *y);
    float *yc = malloc(ld * sizeof *yc), *xi = malloc(maxrows * ld * sizeof *xi);
    float *dd = malloc(ld * sizeof *dd);
    uint8_t taken[8], taken2[8];
    int bad = 0, kernels = 0;
    for (size_t q = 0; q < count && bad < 5; q++) {
        if (e[q].slot != SG_SPARSE_SLOT_rowsm || !sg_cpu_supports(e[q].isa)) continue;
        kernels++;
        sg_sparse_rowsm_fn *f = (sg_sparse_rowsm_fn *)e[q].fn;
        for (size_t a = 0; a < RS_N_NS && bad < 5; a++) {
            const size_t n = RS_NS[a], ldx = n + (a % 3); /* strides n, n + 1, n + 2 */
            for (int rep = 0; rep < (test_quick ? 2 : 6) && bad < 5; rep++) {
                const size_t rows = 1 + (size_t)(rep + a) % maxrows; /* pairs and odd counts */
                for (size_t r = 0; r < rows; r++)
                    rs_fill(&g, n, (int)((r + (size_t)rep * 3 + a) % RS_KINDS), x + r * ldx);
                for (size_t i = 0; i < rows * ldx; i++) y[i] = -7.0f;
                memcpy(xi, x, rows * ldx * sizeof *x);
                f(rows, n, x, ldx, y, ldx, taken);
                f(rows, n, xi, ldx, xi, ldx, taken2); /* in place */
                for (size_t r = 0; r < rows; r++) {
                    const float *xr = x + r * ldx, *yr = y + r * ldx;
                    for (size_t i = 0; i < n; i++) yc[i] = -7.0f;
                    const int want = n <= SG_SPARSE_ROW15_MAX && rs_composed(e[q].isa, n, xr, yc);
                    int ok = taken[r] == want && taken2[r] == taken[r];
                    if (want) ok = ok && memcmp(yr, yc, n * sizeof *yr) == 0;
                    else
                        for (size_t i = 0; i < n; i++) ok = ok && yr[i] == -7.0f;
                    ok = ok && memcmp(xi + r * ldx, want ? yr : xr, n * sizeof *yr) == 0;
                    if (ok && want) { /* the sorted double reference: 2e-7, the exact support */
                        float mx = -INFINITY;
                        for (size_t i = 0; i < n; i++) mx = xr[i] > mx ? xr[i] : mx;
                        for (size_t i = 0; i < n; i++)
                            dd[i] = xr[i] == -INFINITY ? -INFINITY : (float)((double)xr[i] - mx);
                        const double tau = rs_ref_tau(n, dd);
                        double sum = 0.0;
                        for (size_t i = 0; i < n; i++) {
                            const double w = fmax((double)dd[i] - tau, 0.0);
                            ok = ok && fabs((double)yr[i] - w) <= 2e-7;
                            if (fabs((double)dd[i] - tau) > 1e-12) ok = ok && (yr[i] > 0.0f) == (w > 0.0);
                            sum += yr[i];
                        }
                        ok = ok && fabs(sum - 1.0) <= 2e-6;
                    }
                    CHECK(ok, "%s n=%zu rows %zu row %zu: taken %d/%d want %d", e[q].name, n, rows, r,
                          taken[r], taken2[r], want);
                    bad += !ok;
                }
            }
        }
    }
    CHECK(kernels >= 1, "no rowsm kernel");
    free(x), free(y), free(yc), free(xi), free(dd);
}

/* Entries exactly at tau: four maxima at 1 give tau = -1/4 in d, so an
 * entry at 0.75 (d = -1/4, a fixed point with or without it) is 0 and the
 * maxima are exactly 1/4, at every level and through the op. */
TEST(sparse_rowsm_ties) {
    size_t count;
    const sg_sparse_kernel_entry *e = sg_sparse_kernel_entries(&count);
    sg_context *c1 = test_context(1);
    test_rng g = test_rng_seed(516);
    float x[2 * 256], y[2 * 256];
    uint8_t taken[2];
    for (size_t n = 65; n <= 256; n += 13) {
        for (size_t r = 0; r < 2; r++) rs_fill(&g, n, 5, x + r * n);
        for (size_t q = 0; q <= count; q++) {
            if (q < count && (e[q].slot != SG_SPARSE_SLOT_rowsm || !sg_cpu_supports(e[q].isa))) continue;
            if (q < count) ((sg_sparse_rowsm_fn *)e[q].fn)(2, n, x, n, y, n, taken);
            else CHECK(sg_sparsemax_f32(c1, 2, n, x, n, y, n, NULL) == SG_OK, "op n=%zu", n);
            int ok = q == count || (taken[0] && taken[1]);
            for (size_t i = 0; i < 2 * n; i++) ok = ok && y[i] == (x[i] == 1.0f ? 0.25f : 0.0f);
            CHECK(ok, "%s n=%zu: ties at tau", q < count ? e[q].name : "op", n);
        }
    }
    sg_context_destroy(c1);
}

/* The op on rows of 65..256 (SIMD levels: rowsm) against the candidate
 * path composed at the active level (bit for bit, rows it finishes),
 * against its general path (all-ones keep mask: the scalar gather, the
 * same solver; 1e-7), special rows as the general path, and the same bits
 * for 1, 2 and 3 threads. */
TEST(sparse_rowsm_ops) {
    sg_context *c1 = test_context(1), *c2 = test_context(2), *c3 = test_context(3);
    test_rng g = test_rng_seed(517);
    const size_t ns[] = {65, 80, 96, 100, 128, 129, 200, 256};
    float yc[256];
    for (size_t a = 0; a < sizeof ns / sizeof ns[0]; a++) {
        const size_t n = ns[a], rows = test_quick ? 70 : 200; /* rows * n > the parallel minimum */
        float *x = malloc(rows * n * sizeof *x), *y1 = malloc(rows * n * sizeof *y1);
        float *y2 = malloc(rows * n * sizeof *y2), *y3 = malloc(rows * n * sizeof *y3);
        float *yg = malloc(rows * n * sizeof *yg);
        uint8_t *keep = malloc(n);
        memset(keep, 1, n);
        for (size_t r = 0; r < rows; r++) rs_fill(&g, n, (int)(r % RS_KINDS), x + r * n);
        sg_softmax_options o = sg_softmax_options_default();
        o.keep_mask = keep, o.keep_mask_ld = 0;
        CHECK(sg_sparsemax_f32(c1, rows, n, x, n, y1, n, NULL) == SG_OK, "n=%zu", n);
        CHECK(sg_sparsemax_f32(c2, rows, n, x, n, y2, n, NULL) == SG_OK, "n=%zu", n);
        CHECK(sg_sparsemax_f32(c3, rows, n, x, n, y3, n, NULL) == SG_OK, "n=%zu", n);
        CHECK(sg_sparsemax_f32(c1, rows, n, x, n, yg, n, &o) == SG_OK, "n=%zu", n);
        CHECK(memcmp(y1, y2, rows * n * sizeof *y1) == 0 && memcmp(y1, y3, rows * n * sizeof *y1) == 0,
              "n=%zu: thread counts differ", n);
        for (size_t r = 0; r < rows; r++) {
            const float *yr = y1 + r * n, *gr = yg + r * n;
            int ok = 1;
            if (rs_composed(sg_active_isa(), n, x + r * n, yc)) ok = memcmp(yr, yc, n * sizeof *yr) == 0;
            for (size_t i = 0; i < n; i++) {
                if (isnan(gr[i])) ok = ok && isnan(yr[i]);
                else ok = ok && fabs((double)yr[i] - gr[i]) <= 1e-7 && (yr[i] > 0.0f) == (gr[i] > 0.0f);
            }
            CHECK(ok, "n=%zu row %zu (kind %zu): differs from the candidate or general path", n, r,
                  r % RS_KINDS);
        }
        free(x), free(y1), free(y2), free(y3), free(yg), free(keep);
    }
    sg_context_destroy(c1), sg_context_destroy(c2), sg_context_destroy(c3);
}

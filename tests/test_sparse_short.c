/*
 * test_sparse_short.c - the short-row path of sparsemax and 1.5-entmax
 * (n <= 32, no mask, T = 1; sparse_kernels.h short_row): every compiled
 * kernel and the ops against the general path (the same rows with an
 * all-ones keep mask, which never takes the short path) and against
 * double references by sorting; ties, special values (routed to the
 * general path, y untouched), shift invariance, the simplex, in place and
 * thread-count independence. Runs under every SOFTGATE_ISA level.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "normalizers/sparse_kernels.h"
#include "test.h"

sg_sparse_short_rows_fn sg_sparse_short_rows_f32__ref; /* sparse_ref.c */
sg_sparse_mid_rows_fn sg_sparse_mid_rows_f32__ref;

static int cmp_desc(const void *a, const void *b) {
    double p = *(const double *)a, q = *(const double *)b;
    return (p < q) - (p > q);
}

/* Sorted references in double: sparsemax (Martins and Astudillo) and
 * 1.5-entmax (Peters et al.), u = d or d / 2 with d = z - max z. */
static void ref_short(int entmax, size_t n, const float *x, double *y) {
    double u[SG_SPARSE_MID_MAX], s[SG_SPARSE_MID_MAX], m = -INFINITY;
    for (size_t i = 0; i < n; i++) m = fmax(m, (double)x[i]);
    for (size_t i = 0; i < n; i++) s[i] = u[i] = (entmax ? 0.5 : 1.0) * ((double)x[i] - m);
    qsort(s, n, sizeof *s, cmp_desc);
    double tau = 0.0, sum = 0.0, mean = 0.0, ss = 0.0;
    for (size_t k = 1; k <= n; k++) {
        const double v = s[k - 1];
        if (entmax) {
            const double dm = v - mean;
            mean += dm / (double)k;
            ss += dm * (v - mean);
            const double t = mean - sqrt(fmax((1.0 - ss) / (double)k, 0.0));
            if (t <= v) tau = t;
        } else {
            sum += v;
            if (1.0 + (double)k * v > sum) tau = (sum - 1.0) / (double)k;
        }
    }
    for (size_t i = 0; i < n; i++) {
        const double w = fmax(u[i] - tau, 0.0);
        y[i] = entmax ? w * w : w;
    }
}

static sg_status op_run(sg_context *ctx, int entmax, size_t rows, size_t n, const float *x,
                        float *y, const sg_softmax_options *o) {
    return entmax ? sg_entmax15_f32(ctx, rows, n, x, n, y, n, o)
                  : sg_sparsemax_f32(ctx, rows, n, x, n, y, n, o);
}

/* Row r of kind c: normal (scale x1, x10, x0.1), ties (small integers /
 * 4: exact, shift-exact), a constant row. */
static void fill_row(test_rng *g, size_t n, int c, float *x) {
    for (size_t i = 0; i < n; i++) {
        switch (c) {
        case 0: x[i] = (float)test_normal(g); break;
        case 1: x[i] = (float)(10.0 * test_normal(g)); break;
        case 2: x[i] = (float)(0.1 * test_normal(g)); break;
        case 3: x[i] = (float)floor(8.0 * test_uniform(g)) * 0.25f; break;
        default: x[i] = 3.0f; break;
        }
    }
}

#define N_CLASSES 5

TEST(sparse_short_kernels) {
    size_t count;
    const sg_sparse_kernel_entry *e = sg_sparse_kernel_entries(&count);
    test_rng g = test_rng_seed(77);
    float x[SG_SPARSE_SHORT_MAX], y[SG_SPARSE_SHORT_MAX];
    double r[SG_SPARSE_SHORT_MAX];
    const int reps = test_quick ? 4 : 30;
    for (size_t q = 0; q < count; q++) {
        if (e[q].slot != SG_SPARSE_SLOT_short_row || !sg_cpu_supports(e[q].isa)) continue;
        sg_sparse_short_row_fn *f = (sg_sparse_short_row_fn *)e[q].fn;
        size_t taken = 0, tried = 0;
        for (int entmax = 0; entmax < 2; entmax++) {
            for (size_t n = 1; n <= SG_SPARSE_SHORT_MAX; n++) {
                for (int rep = 0; rep < reps; rep++) {
                    fill_row(&g, n, rep % N_CLASSES, x);
                    tried++;
                    if (!f(n, x, entmax, y)) continue;
                    taken++;
                    ref_short(entmax, n, x, r);
                    double s = 0.0;
                    int bad = 0;
                    for (size_t i = 0; i < n; i++) {
                        s += y[i];
                        /* the documented bounds: 1e-7 sparsemax, 3e-7 1.5-entmax */
                        if (!(fabs(y[i] - r[i]) <= (entmax ? 3e-7 : 1e-7)) || y[i] < 0.0f) bad++;
                        if (r[i] == 0.0 && y[i] != 0.0f) bad++; /* the support */
                    }
                    CHECK(!bad && fabs(s - 1.0) <= 2e-6, "%s %s n=%zu class %d: %d bad, sum %.9g",
                          e[q].name, entmax ? "entmax15" : "sparsemax", n, rep % N_CLASSES, bad, s);
                }
                /* NaN, +inf, -inf: 0 and y untouched */
                const float sp[3] = {NAN, INFINITY, -INFINITY};
                for (int h = 0; h < 3; h++) {
                    fill_row(&g, n, 0, x);
                    x[(size_t)h * 7 % n] = sp[h];
                    for (size_t i = 0; i < n; i++) y[i] = -5.0f;
                    int got = f(n, x, entmax, y);
                    int untouched = 1;
                    for (size_t i = 0; i < n; i++) untouched &= y[i] == -5.0f;
                    CHECK(!got && untouched, "%s n=%zu special %g: returned %d", e[q].name, n,
                          (double)sp[h], got);
                }
            }
        }
        /* the fast path must be the common one (the check rejects only
         * rows with an entry at tau within rounding) */
        CHECK(taken * 100 >= tried * 99, "%s: took %zu of %zu rows", e[q].name, taken, tried);
    }
}

TEST(sparse_short_ops) {
    const size_t cap = 20000; /* floats per buffer: rows * n below */
    sg_context *c1 = test_context(1), *c2 = test_context(2), *c3 = test_context(3);
    float *x = malloc(cap * sizeof *x), *xs = malloc(cap * sizeof *x);
    float *y1 = malloc(cap * sizeof *x), *y2 = malloc(cap * sizeof *x);
    float *yg = malloc(cap * sizeof *x), *yi = malloc(cap * sizeof *x);
    uint8_t *keep = malloc(SG_SPARSE_MID_MAX + 1);
    memset(keep, 1, SG_SPARSE_MID_MAX + 1);
    sg_softmax_options mo = sg_softmax_options_default();
    mo.keep_mask = keep, mo.keep_mask_ld = 0; /* all ones: the general path */
    test_rng g = test_rng_seed(5);
    /* up to SG_SPARSE_MID_MAX + 1: the mid_rows path and the first n past it */
    const size_t ns[] = {1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 47, 48, 63, 64, 65};
    for (int entmax = 0; entmax < 2; entmax++) {
        const char *nm = entmax ? "entmax15" : "sparsemax";
        for (size_t t = 0; t < sizeof ns / sizeof ns[0]; t++) {
            /* rows * n >= SG_PARALLEL_MIN_ELEMS from n = 8: threads really split */
            const size_t n = ns[t], rows = test_quick ? 64 : n >= 8 ? 16500 / n + 7 : 600, m = rows * n;
            for (size_t r = 0; r < rows; r++) fill_row(&g, n, (int)(r % N_CLASSES), x + r * n);
            x[3 * n] = NAN;                 /* row 3: NaN row */
            x[4 * n + n / 2] = INFINITY;    /* row 4: +inf */
            x[5 * n] = -INFINITY;           /* row 5: -inf entry */
            CHECK(op_run(c1, entmax, rows, n, x, y1, NULL) == SG_OK, "%s run", nm);
            CHECK(op_run(c1, entmax, rows, n, x, yg, &mo) == SG_OK, "%s masked run", nm);
            /* the general path's bounds against each other: 2e-7 / 6e-7 */
            const double tol = entmax ? 6e-7 : 2e-7; /* (an entry at tau may be 1e-32 in one) */
            size_t bad = 0;
            for (size_t i = 0; i < m; i++) {
                const int same = isnan(y1[i]) ? isnan(yg[i]) : fabsf(y1[i] - yg[i]) <= tol;
                if (!same && bad++ < 3)
                    CHECK(0, "%s n=%zu row %zu i=%zu: short %.9g general %.9g", nm, n, i / n, i % n,
                          y1[i], yg[i]);
            }
            /* the special-value table: NaN row all NaN, +inf entry gets 1 */
            CHECK(isnan(y1[3 * n]) && y1[4 * n + n / 2] == 1.0f && y1[5 * n] == 0.0f,
                  "%s n=%zu special rows", nm, n);
            /* simplex on every finite row */
            for (size_t r = 6; r < rows; r++) {
                double s = 0.0;
                for (size_t i = 0; i < n; i++) s += y1[r * n + i];
                if (!(fabs(s - 1.0) <= 2e-6)) {
                    CHECK(0, "%s n=%zu row %zu sum %.9g", nm, n, r, s);
                    break;
                }
            }
            /* thread counts: identical bits */
            CHECK(op_run(c2, entmax, rows, n, x, y2, NULL) == SG_OK, "%s 2 threads", nm);
            CHECK(memcmp(y1, y2, m * sizeof *y1) == 0, "%s n=%zu: 2 threads differ", nm, n);
            CHECK(op_run(c3, entmax, rows, n, x, y2, NULL) == SG_OK, "%s 3 threads", nm);
            CHECK(memcmp(y1, y2, m * sizeof *y1) == 0, "%s n=%zu: 3 threads differ", nm, n);
            /* in place */
            memcpy(yi, x, m * sizeof *x);
            CHECK(op_run(c1, entmax, rows, n, yi, yi, NULL) == SG_OK, "%s in place", nm);
            CHECK(memcmp(y1, yi, m * sizeof *y1) == 0, "%s n=%zu: in place differs", nm, n);
            /* shift invariance on the tie rows (x / 4 integers + 16: exact) */
            for (size_t i = 0; i < m; i++) xs[i] = x[i] + 16.0f;
            CHECK(op_run(c1, entmax, rows, n, xs, y2, NULL) == SG_OK, "%s shifted", nm);
            for (size_t r = 3 + N_CLASSES; r < rows; r += N_CLASSES) /* class 3 rows */
                CHECK(memcmp(y1 + r * n, y2 + r * n, n * sizeof *y1) == 0, "%s n=%zu row %zu: shift",
                      nm, n, r);
        }
    }
    free(x), free(xs), free(y1), free(y2), free(yg), free(yi), free(keep);
    sg_context_destroy(c1), sg_context_destroy(c2), sg_context_destroy(c3);
}

/* 1.5-entmax rows of 65..68 (AVX-512: mid_rows or row15 per chunk of 64
 * rows, chosen by the chunk's first row): chunks of flat rows (lanes) and
 * of spread rows (row15) alternate, the flat chunks mixed with every
 * class, NaN and inf; against the general path (6e-7), identical bits for
 * 1, 2 and 3 threads and in place, sums 1. Under every ISA level. */
TEST(sparse_entmax15_mixed_chunks) {
    const size_t ns[] = {65, 68, 69, 72, 73, 88, 89};
    const size_t rows = test_quick ? 2 * 64 + 5 : 6 * 64 + 13;
    const size_t cap = rows * 89;
    sg_context *c1 = test_context(1), *c2 = test_context(2), *c3 = test_context(3);
    float *x = malloc(cap * sizeof *x), *y1 = malloc(cap * sizeof *x), *y2 = malloc(cap * sizeof *x);
    float *yg = malloc(cap * sizeof *x);
    uint8_t keep[89];
    memset(keep, 1, sizeof keep);
    sg_softmax_options mo = sg_softmax_options_default();
    mo.keep_mask = keep, mo.keep_mask_ld = 0;
    test_rng g = test_rng_seed(17);
    for (size_t t = 0; t < sizeof ns / sizeof ns[0]; t++) {
        const size_t n = ns[t], m = rows * n;
        for (size_t r = 0; r < rows; r++)
            fill_row(&g, n, r % 64 == 0 || (r / 64) % 2 ? (int)((r / 64) % 2) : (int)(r % N_CLASSES),
                     x + r * n);
        x[3 * n + 1] = NAN, x[70 * n + 5] = INFINITY, x[9 * n] = -INFINITY;
        CHECK(sg_entmax15_f32(c1, rows, n, x, n, y1, n, NULL) == SG_OK, "n=%zu run", n);
        CHECK(sg_entmax15_f32(c1, rows, n, x, n, yg, n, &mo) == SG_OK, "n=%zu masked", n);
        size_t bad = 0;
        for (size_t i = 0; i < m; i++) {
            const int same = isnan(y1[i]) ? isnan(yg[i]) : fabsf(y1[i] - yg[i]) <= 6e-7f;
            if (!same && bad++ < 3)
                CHECK(0, "n=%zu row %zu i=%zu: %.9g general %.9g", n, i / n, i % n, y1[i], yg[i]);
        }
        CHECK(isnan(y1[3 * n]) && y1[70 * n + 5] == 1.0f && y1[9 * n] == 0.0f, "n=%zu special", n);
        for (size_t r = 0; r < rows; r++) {
            if (r == 3) continue;
            double s = 0.0;
            for (size_t i = 0; i < n; i++) s += y1[r * n + i];
            if (!(fabs(s - 1.0) <= 2e-6)) {
                CHECK(0, "n=%zu row %zu sum %.9g", n, r, s);
                break;
            }
        }
        CHECK(sg_entmax15_f32(c2, rows, n, x, n, y2, n, NULL) == SG_OK, "2 threads");
        CHECK(memcmp(y1, y2, m * sizeof *y1) == 0, "n=%zu: 2 threads differ", n);
        CHECK(sg_entmax15_f32(c3, rows, n, x, n, y2, n, NULL) == SG_OK, "3 threads");
        CHECK(memcmp(y1, y2, m * sizeof *y1) == 0, "n=%zu: 3 threads differ", n);
        memcpy(y2, x, m * sizeof *x);
        CHECK(sg_entmax15_f32(c2, rows, n, y2, n, y2, n, NULL) == SG_OK, "in place");
        CHECK(memcmp(y1, y2, m * sizeof *y1) == 0, "n=%zu: in place differs", n);
    }
    free(x), free(y1), free(y2), free(yg);
    sg_context_destroy(c1), sg_context_destroy(c2), sg_context_destroy(c3);
}

/* short_rows (n <= 32) and mid_rows (33..96): every compiled kernel
 * against the reference on blocks of 1 to 40 rows (partial blocks of
 * lanes, and 17 to 40: the AVX-512 kernels' two groups of 16), strides n
 * and n + 3, rows with NaN / inf (not taken, untouched): the same taken
 * flags and the same bits (the AVX-512 kernels compute the reference's
 * double arithmetic lane by lane on the same support). In place too. */
TEST(sparse_short_rows_kernels) {
    size_t count;
    const sg_sparse_kernel_entry *e = sg_sparse_kernel_entries(&count);
    test_rng g = test_rng_seed(99);
    const size_t maxr = 40, ld = SG_SPARSE_MID_MAX + 3;
    float *x = malloc(maxr * ld * sizeof *x), *ya = malloc(maxr * ld * sizeof *x);
    float *yb = malloc(maxr * ld * sizeof *x), *xi = malloc(maxr * ld * sizeof *x);
    uint8_t ta[40], tb[40];
    for (size_t q = 0; q < count; q++) {
        const int mid = e[q].slot == SG_SPARSE_SLOT_mid_rows;
        if ((e[q].slot != SG_SPARSE_SLOT_short_rows && !mid) || !sg_cpu_supports(e[q].isa)) continue;
        sg_sparse_short_rows_fn *f = (sg_sparse_short_rows_fn *)e[q].fn;
        sg_sparse_short_rows_fn *ref = mid ? sg_sparse_mid_rows_f32__ref : sg_sparse_short_rows_f32__ref;
        const size_t n0 = mid ? SG_SPARSE_SHORT_MAX + 1 : 1, n1 = mid ? SG_SPARSE_MID_MAX : SG_SPARSE_SHORT_MAX;
        for (int entmax = 0; entmax < 2; entmax++) {
            for (size_t n = n0; n <= n1; n += test_quick ? 5 : mid ? 3 : 1) {
                const size_t rs[] = {1, 7, 16, 17, 40};
                for (size_t ri = 0; ri < 5; ri++) {
                    const size_t rows = rs[ri], ldx = ri % 2 ? n + 3 : n;
                    for (size_t r = 0; r < rows; r++) fill_row(&g, n, (int)(r % N_CLASSES), x + r * ldx);
                    if (rows > 2) x[1 * ldx + n / 2] = NAN, x[2 * ldx] = -INFINITY;
                    for (size_t i = 0; i < rows * ldx; i++) ya[i] = yb[i] = -7.0f;
                    f(rows, n, x, ldx, ya, ldx, entmax, ta);
                    ref(rows, n, x, ldx, yb, ldx, entmax, tb);
                    int bad = 0;
                    for (size_t r = 0; r < rows; r++) {
                        bad += ta[r] != tb[r];
                        for (size_t i = 0; i < n; i++) {
                            const float a = ya[r * ldx + i], b = yb[r * ldx + i];
                            if (!ta[r]) bad += a != -7.0f; /* untouched */
                            else bad += memcmp(&a, &b, sizeof a) != 0;
                        }
                        for (size_t i = n; i < ldx; i++) bad += ya[r * ldx + i] != -7.0f; /* the gap */
                    }
                    CHECK(!bad && (rows <= 2 || (!ta[1] && !ta[2])), "%s %s n=%zu rows=%zu ldx=%zu: %d bad",
                          e[q].name, entmax ? "entmax15" : "sparsemax", n, rows, ldx, bad);
                    /* in place: the same as out of place */
                    memcpy(xi, x, rows * ldx * sizeof *x);
                    f(rows, n, xi, ldx, xi, ldx, entmax, tb);
                    bad = 0;
                    for (size_t r = 0; r < rows; r++)
                        if (ta[r]) bad += memcmp(xi + r * ldx, ya + r * ldx, n * sizeof *x) != 0;
                    CHECK(!bad, "%s n=%zu rows=%zu: in place differs", e[q].name, n, rows);
                }
            }
        }
    }
    free(x), free(ya), free(yb), free(xi);
}

/* Entries exactly at tau (the float proposal of the AVX-512 kernels may
 * settle on a neighbouring set there; the pairwise retry must take the
 * row, and the output is exact): sparsemax with two maxima 0 and an entry
 * at -1/2 = tau; 1.5-entmax with four maxima 0 and an entry at d = -1
 * (u = -1/2 = tau). The rest of the row far below, the max moved around,
 * offset c so that x = d + c is exact; blocks of 40 rows of such rows
 * mixed with normal ones, every n from 5 to SG_SPARSE_MID_MAX; the ops
 * too (whatever path they take). */
TEST(sparse_short_tau_ties) {
    size_t count;
    const sg_sparse_kernel_entry *e = sg_sparse_kernel_entries(&count);
    test_rng g = test_rng_seed(4242);
    const size_t rows = 40, ld = SG_SPARSE_MID_MAX;
    float *x = malloc(rows * ld * sizeof *x), *y = malloc(rows * ld * sizeof *x);
    uint8_t taken[40];
    sg_context *ctx = test_context(1);
    for (int entmax = 0; entmax < 2; entmax++) {
        const size_t top = entmax ? 4 : 2; /* entries at the max */
        const float at = entmax ? -1.0f : -0.5f, want = entmax ? 0.25f : 0.5f;
        for (size_t n = 5; n <= SG_SPARSE_MID_MAX; n += test_quick ? 7 : 1) {
            for (size_t r = 0; r < rows; r++) {
                float *xr = x + r * n;
                const float c = (float)(r % 7) - 3.0f;
                if (r % 3 == 1) { /* a normal row */
                    fill_row(&g, n, 0, xr);
                    continue;
                }
                for (size_t i = 0; i < n; i++) xr[i] = c - 5.0f - (float)(i % 3);
                for (size_t k = 0; k <= top; k++) xr[(r + k) % n] = k < top ? c : c + at;
            }
            for (size_t q = 0; q < count; q++) {
                const int mid = e[q].slot == SG_SPARSE_SLOT_mid_rows;
                if ((e[q].slot != SG_SPARSE_SLOT_short_rows && !mid) || !sg_cpu_supports(e[q].isa)) continue;
                if (mid ? n <= SG_SPARSE_SHORT_MAX : n > SG_SPARSE_SHORT_MAX) continue;
                ((sg_sparse_short_rows_fn *)e[q].fn)(rows, n, x, n, y, n, entmax, taken);
                int bad = 0;
                for (size_t r = 0; r < rows; r++) {
                    if (r % 3 == 1) continue;
                    bad += !taken[r];
                    for (size_t i = 0; taken[r] && i < n; i++) {
                        const float xi = x[r * n + i], mx = (float)(r % 7) - 3.0f;
                        bad += y[r * n + i] != (xi == mx ? want : 0.0f);
                    }
                }
                CHECK(!bad, "%s %s n=%zu: %d bad", e[q].name, entmax ? "entmax15" : "sparsemax", n, bad);
            }
            CHECK(op_run(ctx, entmax, rows, n, x, y, NULL) == SG_OK, "op run");
            int bad = 0;
            for (size_t r = 0; r < rows; r++) {
                if (r % 3 == 1) continue;
                for (size_t i = 0; i < n; i++)
                    bad += y[r * n + i] != (x[r * n + i] == (float)(r % 7) - 3.0f ? want : 0.0f);
            }
            CHECK(!bad, "op %s n=%zu: %d bad", entmax ? "entmax15" : "sparsemax", n, bad);
        }
    }
    free(x), free(y);
    sg_context_destroy(ctx);
}

/* 1.5-entmax rows with many entries exactly at tau: 4 maxima, m entries
 * at d = -1 (u = -1/2 = tau), the rest at d = -2, -3; m = 1..n-4. Two
 * supports pass the exact check (tau in double of the larger one rounds
 * just below -1/2), so an entry at tau comes out as 0 or as a tiny value
 * (tau's rounding error squared: 2^-106 for a few ties, 0x1.88p-99 for
 * 101; asserted below 2^-90), which may differ between kernels and ISA
 * levels (docs/SPARSE.md);
 * everything else is exact: the maxima 1/4, the rest 0, rows summing to 1
 * within 2e-6. Every short_rows / mid_rows / row15 kernel (the rows it
 * takes; it may decline) and the op. */
TEST(sparse_entmax15_many_ties) {
    size_t count;
    const sg_sparse_kernel_entry *e = sg_sparse_kernel_entries(&count);
    enum { ROWS = 6, NMAX = 128 };
    float *x = malloc(ROWS * NMAX * sizeof *x), *y = malloc(ROWS * NMAX * sizeof *x);
    uint8_t taken[ROWS];
    sg_context *ctx = test_context(1);
    const float tiny = 0x1p-90f; /* 101 ties: 0x1.88p-99 */
    const size_t step = test_quick ? 9 : 1;
    for (size_t n = 5; n <= NMAX; n += step) {
        size_t st = 3; /* a prime stride not dividing n: distinct positions */
        while (n % st == 0) st = st == 3 ? 5 : st == 5 ? 7 : 11;
        for (size_t mt = 1; mt + 4 <= n; mt += test_quick ? 5 : 1) {
            for (size_t r = 0; r < ROWS; r++) {
                float *xr = x + r * n;
                const float c = (float)r - 2.0f;
                for (size_t i = 0; i < n; i++) xr[i] = c - 2.0f - (float)(i % 2);
                for (size_t k = 0; k < 4 + mt; k++) xr[(r * 5 + k * st) % n] = k < 4 ? c : c - 1.0f;
            }
            /* each taken row of y against the exact output; returns the bad entries */
#define CHECK_TIES(name)                                                                       \
    do {                                                                                       \
        int bad_ = 0;                                                                          \
        for (size_t r = 0; r < ROWS; r++) {                                                    \
            if (!taken[r]) continue;                                                           \
            const float mx = (float)r - 2.0f;                                                  \
            double sum = 0.0;                                                                  \
            for (size_t i = 0; i < n; i++) {                                                   \
                const float xi = x[r * n + i], yi = y[r * n + i];                              \
                sum += yi;                                                                     \
                if (xi == mx) bad_ += yi != 0.25f;                                             \
                else if (xi == mx - 1.0f) bad_ += !(yi >= 0.0f && yi < tiny);                  \
                else bad_ += yi != 0.0f;                                                       \
            }                                                                                  \
            bad_ += !(fabs(sum - 1.0) <= 2e-6);                                                \
        }                                                                                      \
        CHECK(!bad_, "%s n=%zu ties=%zu: %d bad", name, n, mt, bad_);                          \
    } while (0)
            for (size_t q = 0; q < count; q++) {
                const int sl = (int)e[q].slot;
                if (!sg_cpu_supports(e[q].isa)) continue;
                memset(taken, 0, sizeof taken);
                if (sl == SG_SPARSE_SLOT_short_rows && n <= SG_SPARSE_SHORT_MAX)
                    ((sg_sparse_short_rows_fn *)e[q].fn)(ROWS, n, x, n, y, n, 1, taken);
                else if (sl == SG_SPARSE_SLOT_mid_rows && n > SG_SPARSE_SHORT_MAX && n <= SG_SPARSE_MID_MAX)
                    ((sg_sparse_mid_rows_fn *)e[q].fn)(ROWS, n, x, n, y, n, 1, taken);
                else if (sl == SG_SPARSE_SLOT_row15)
                    ((sg_sparse_row15_fn *)e[q].fn)(ROWS, n, x, n, y, n, taken);
                else
                    continue;
                CHECK_TIES(e[q].name);
            }
            CHECK(op_run(ctx, 1, ROWS, n, x, y, NULL) == SG_OK, "op run");
            memset(taken, 1, sizeof taken);
            CHECK_TIES("op");
#undef CHECK_TIES
        }
    }
    free(x), free(y);
    sg_context_destroy(ctx);
}

/* 1.5-entmax rows whose float Newton start (by the candidate count, in
 * the AVX-512 lanes kernels) lands above tau or far below it: 1 to 3
 * entries at the max and the rest spread over d in (-2, -a) for several
 * a (many candidates with a small tau), then the same with a few entries
 * between; every lanes kernel (and its reference) bit for bit against
 * the reference, rows taken alike, and the op against the sorted double
 * reference, for n across the tiles up to SG_SPARSE_MID_MAX. */
TEST(sparse_mid_rows_starts) {
    size_t count;
    const sg_sparse_kernel_entry *e = sg_sparse_kernel_entries(&count);
    test_rng g = test_rng_seed(777);
    const size_t rows = 40, ld = SG_SPARSE_MID_MAX;
    float *x = malloc(rows * ld * sizeof *x), *ya = malloc(rows * ld * sizeof *x);
    float *yb = malloc(rows * ld * sizeof *x);
    double yr[SG_SPARSE_MID_MAX];
    uint8_t ta[40], tb[40];
    sg_context *ctx = test_context(1);
    const size_t ns[] = {9, 16, 17, 31, 32, 33, 47, 48, 63, 64, 65, 79, 80, 81, 88, 95, 96};
    for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni += test_quick ? 3 : 1) {
        const size_t n = ns[ni];
        for (size_t r = 0; r < rows; r++) {
            float *xr = x + r * n;
            const float c = (float)(r % 5) - 2.0f, a = 0.2f * (float)(r % 9); /* d in (-2, -a) */
            const size_t top = 1 + r % 3;
            for (size_t i = 0; i < n; i++) { /* multiples of 2^-12: x = d + c exact */
                const float d = -a - (2.0f - a) * (float)floor(4096.0 * test_uniform(&g)) / 4096.0f;
                xr[i] = c + (d > -2.0f ? d : -1.999755859375f);
            }
            if (r % 4 == 3) /* a few entries between */
                for (size_t k = 0; k < 3; k++) xr[(7 * k + r) % n] = c - (float)floor(1024.0 * test_uniform(&g)) / 1024.0f;
            for (size_t k = 0; k < top; k++) xr[(r + 5 * k) % n] = c;
        }
        for (size_t q = 0; q < count; q++) {
            const int mid = e[q].slot == SG_SPARSE_SLOT_mid_rows;
            if ((e[q].slot != SG_SPARSE_SLOT_short_rows && !mid) || !sg_cpu_supports(e[q].isa)) continue;
            if (mid ? n <= SG_SPARSE_SHORT_MAX : n > SG_SPARSE_SHORT_MAX) continue;
            sg_sparse_short_rows_fn *ref = mid ? sg_sparse_mid_rows_f32__ref : sg_sparse_short_rows_f32__ref;
            for (size_t i = 0; i < rows * n; i++) ya[i] = yb[i] = -7.0f;
            ((sg_sparse_short_rows_fn *)e[q].fn)(rows, n, x, n, ya, n, 1, ta);
            ref(rows, n, x, n, yb, n, 1, tb);
            int bad = 0;
            for (size_t r = 0; r < rows; r++) {
                bad += ta[r] != tb[r] || !ta[r];
                if (ta[r]) bad += memcmp(ya + r * n, yb + r * n, n * sizeof *x) != 0;
            }
            CHECK(!bad, "%s n=%zu: %d bad rows", e[q].name, n, bad);
        }
        CHECK(op_run(ctx, 1, rows, n, x, ya, NULL) == SG_OK, "op run");
        double err = 0.0;
        for (size_t r = 0; r < rows; r++) {
            ref_short(1, n, x + r * n, yr);
            for (size_t i = 0; i < n; i++) err = fmax(err, fabs((double)ya[r * n + i] - yr[i]));
        }
        CHECK(err < 1e-6, "op n=%zu: max error %g", n, err);
    }
    free(x), free(ya), free(yb);
    sg_context_destroy(ctx);
}

/*
 * entmax.c - alpha-entmax (Peters, Niculae and Martins, "Sparse
 * Sequence-to-Sequence Models", ACL 2019), float32: exact 1.5-entmax (the
 * paper's sort-and-cumulative-sums threshold), alpha-entmax for any
 * alpha > 1 (bracketed Newton/bisection on the threshold), and the
 * backward pass shared by both. Rows across threads; masks, temperature
 * and special values as sparsemax (sparse_internal.h). Sparsemax itself
 * (alpha = 2, exact) is in sparsemax.c.
 *
 *   entmax_alpha(z)_i = [(alpha - 1) z_i - tau]_+^(1 / (alpha - 1)),
 *   tau the unique threshold with sum_i y_i = 1.
 *
 * Everything is computed from d = z - max z (shift invariance), as
 * u = (alpha - 1) d in [-inf, 0], so tau lies in [-1, 0): the max alone
 * gives (0 - tau)^p <= 1. Hence only entries with u > -1, i.e.
 * d > -1 / (alpha - 1) (d > -2 for 1.5-entmax), can be in the support:
 * sg_sparse_gather filters those candidates with the vectorized kernels,
 * and the threshold is solved on them alone. Short unmasked 1.5-entmax rows
 * (n <= 32, T = 1; n <= 64 with AVX-512) take the sort-free short_rows /
 * mid_rows kernels first (sparse_kernels.h, docs/SPARSE.md "Short rows"),
 * and with AVX-512 unmasked rows of 65..512 (T = 1) the fused row15
 * kernel (65..68: row15 or mid_rows per chunk of 64 rows, by the first
 * row's candidate count); candidate thresholds go to the tau15 kernel (docs/SPARSE.md
 * "1.5-entmax rows of 65 to 512").
 */
#include <stdlib.h>
#include <string.h>

#include "normalizers/sparse_internal.h"
#include "normalizers/sparse_internal_entmax.h"
#include "normalizers/sparse_kernels.h"

/* ---- 1.5-entmax: the exact threshold ---------------------------------- */

static void sort_desc(double *u, size_t m) {
    for (size_t i = 1; i < m; i++) { /* insertion sort: m is small */
        double v = u[i];
        size_t j = i;
        while (j > 0 && u[j - 1] < v) u[j] = u[j - 1], j--;
        u[j] = v;
    }
}

static int cmp_desc(const void *a, const void *b) {
    double p = *(const double *)a, q = *(const double *)b;
    return (p < q) - (p > q);
}

/*
 * The paper's algorithm on u = d / 2 sorted descending: for each prefix of
 * size k, mean and ss = sum (u - mean)^2 (Welford, in double), then
 * tau_k = mean - sqrt((1 - ss) / k), the smaller root of
 * sum_{j<=k} (u_j - tau)^2 = 1; the support is the largest k with
 * tau_k <= u_(k), and tau = tau_k there. scratch: m doubles.
 */
static double tau15_sort(const float *d, size_t m, double *u) {
    size_t f = 0;
    for (size_t i = 0; i < m; i++)
        if (d[i] > -2.0f) u[f++] = 0.5 * (double)d[i];
    if (f <= 64) sort_desc(u, f);
    else qsort(u, f, sizeof *u, cmp_desc);
    double mean = 0.0, ss = 0.0, tau = -1.0;
    for (size_t k = 1; k <= f; k++) {
        const double v = u[k - 1], dm = v - mean;
        mean += dm / (double)k;
        ss += dm * (v - mean);
        const double delta = (1.0 - ss) / (double)k;
        const double t = mean - sqrt(delta > 0.0 ? delta : 0.0);
        if (t <= v) tau = t; /* the last k that passes: the support size */
    }
    return tau;
}

/* Sums of u = d / 2 over {u > t}: count, sum, sum of squares, and
 * sum (u - t)^2. */
typedef struct sums15 {
    size_t k;
    double s, s2, f;
} sums15;

static sums15 above15(const float *d, size_t n, double t) {
    sums15 a = {0, 0.0, 0.0, 0.0};
    for (size_t i = 0; i < n; i++) {
        const double u = 0.5 * (double)d[i];
        if (u > t) a.k++, a.s += u, a.s2 += u * u, a.f += (u - t) * (u - t);
    }
    return a;
}

/*
 * Without a sort (rows with too many candidates: no buffer): bisection on
 * tau in [-1, 0] with f(t) = sum (u - t)_+^2 - 1 (decreasing) until no u
 * lies in (lo, hi], which makes {u > lo} the support exactly; then tau is
 * the closed form of the sort algorithm on that set. About 53 + log2(N)
 * passes at most, fewer when entries are apart.
 */
static double tau15_bisect(const float *d, size_t n) {
    double lo = -1.0, hi = 0.0;
    sums15 a = above15(d, n, lo);
    size_t khi = 0;
    while (a.k != khi) {
        const double mid = 0.5 * (lo + hi);
        if (mid <= lo || mid >= hi) break;
        sums15 m = above15(d, n, mid);
        if (m.f >= 1.0) lo = mid, a = m;
        else hi = mid, khi = m.k;
    }
    const double mean = a.s / (double)a.k, ss = a.s2 - a.s * mean;
    const double delta = (1.0 - (ss > 0.0 ? ss : 0.0)) / (double)a.k;
    return mean - sqrt(delta > 0.0 ? delta : 0.0);
}

/*
 * Without a sort, fast: Newton's method on the convex decreasing
 * g(t) = sum (u - t)_+^2 - 1 from t = -1 (g >= 0) stays below tau and
 * increases monotonically. At each iterate, S = {u > t} is a superset of
 * the support; the closed form on S, t_S = mean - sqrt((1 - ss) / |S|),
 * is tau exactly when {u > t_S} = S (then g(t_S) = 0), which the same
 * pass checks with min_S u and the max of the rest. Float rows need 2 to
 * 6 passes (the sums kernel, vectorized); after NEWTON15_MAX_ITER, or if
 * rounding stalls the iteration, 0 is returned as a failure flag (tau < 0
 * always) and the caller falls back to the sort or the bisection.
 */
#define NEWTON15_MAX_ITER 40
static double tau15_newton(const float *d, size_t n) {
    const sg_sparse_kernels *kr = sg_sparse_kernels_get();
    double t = -1.0;
    for (int it = 0; it < NEWTON15_MAX_ITER; it++) {
        sg_sparse_sums a;
        sg_sparse_sums_run(kr, n, d, 0.5, t, &a);
        double ts, next;
        if (sg_entmax15_step(&a, t, &ts, &next)) return ts;
        if (!(next > t)) break; /* no progress: rounding; fall back */
        t = next;
    }
    return 0.0;
}

/* The candidates' threshold: the tau15 kernel (a grid start, then the
 * same Newton) where a SIMD one is installed, else Newton from -1; 0.0
 * when either gave up. */
static double tau15_cands(const float *d, size_t m) {
    const sg_sparse_kernels *kr = sg_sparse_kernels_get();
    if (m > SG_SPARSE_SUMS_INLINE && m <= SG_SPARSE_TAU15_MAX &&
        kr->isa[SG_SPARSE_SLOT_tau15] > SG_ISA_REF)
        return kr->tau15(m, d);
    return tau15_newton(d, m);
}

double sg_entmax15_tau_f32(const float *d, size_t n, double *scratch, int method) {
    if (method == 3) return tau15_cands(d, n);

    if (method == 0) return tau15_sort(d, n, scratch);
    if (method == 1) return tau15_bisect(d, n);
    return tau15_newton(d, n);
}

/* Branch-free (about half the candidates are in the support, at random). */
static inline float y15(float d, double tau) {
    const double w = sg_relu(0.5 * (double)d - tau);
    return (float)(w * w);
}

/* ---- alpha-entmax: the threshold by bracketed Newton -------------------- */

static inline double powp(double w, double p) {
    return p == 1.0 ? w : p == 2.0 ? w * w : pow(w, p);
}

/* f(t) = sum (u - t)_+^p - 1 and its derivative, u = am1 * d. */
static double f_alpha(const float *d, size_t n, double am1, double p, double t, double *df) {
    double f = -1.0, g = 0.0;
    for (size_t i = 0; i < n; i++) {
        const double w = am1 * (double)d[i] - t;
        if (w > 0.0) {
            const double wp = powp(w, p);
            f += wp, g += wp / w;
        }
    }
    *df = -p * g;
    return f;
}

/*
 * f is decreasing with f(-1) >= 0 > f(0) = -1. Newton steps inside the
 * bracket [lo, hi] (from the left they stay left when f is convex, i.e.
 * alpha <= 2), a bisection step whenever a Newton step would leave the
 * bracket or shrink less than half the step before last (rtsafe, Numerical
 * Recipes 9.4); stops when a step is below 2^-52 (tau is in [-1, 0]), at
 * most ALPHA_MAX_ITER evaluations (bisection alone needs about 54).
 */
#define ALPHA_MAX_ITER 200
double sg_entmax_tau_f32(const float *d, size_t n, double alpha) {
    const double am1 = alpha - 1.0, p = 1.0 / am1, eps = 0x1p-52;
    double lo = -1.0, hi = 0.0, t = -1.0, df, f = f_alpha(d, n, am1, p, t, &df);
    double dx = hi - lo, dx_old = dx;
    for (int it = 0; it < ALPHA_MAX_ITER; it++) {
        if (f == 0.0) return t;
        if (((t - hi) * df - f) * ((t - lo) * df - f) > 0.0 || fabs(2.0 * f) > fabs(dx_old * df)) {
            dx_old = dx;
            dx = 0.5 * (hi - lo);
            t = lo + dx;
        } else {
            dx_old = dx;
            dx = f / df;
            t -= dx;
        }
        if (fabs(dx) < eps) return t;
        f = f_alpha(d, n, am1, p, t, &df);
        if (f < 0.0) hi = t;
        else lo = t;
    }
    return lo; /* f(lo) >= 0 */
}

/* ---- rows --------------------------------------------------------------- */

static void special_row(const sg_sparse_job *j, const sg_row_view *v, const sg_row_scan *s,
                        float *y) {
    for (size_t i = 0; i < j->n; i++) y[i] = sg_sparse_special_p(v, s, i);
}

static void entmax15_row(const sg_sparse_job *j, size_t r) {
    const sg_row_view v = sg_sparse_view(j, r);
    float *y = j->out + r * j->ldo;
    sg_row_scan s;
    sg_sparse_cands c;
    switch (sg_sparse_gather(&v, j->n, 2.0, SG_SPARSE_CAND_MAX, &s, &c, y)) {
    case SG_SPARSE_SPECIAL: special_row(j, &v, &s, y); return;
    case SG_SPARSE_FULL: {
        double tau = tau15_newton(y, j->n);
        if (tau == 0.0) tau = tau15_bisect(y, j->n);
        for (size_t i = 0; i < j->n; i++) y[i] = y15(y[i], tau);
        return;
    }
    case SG_SPARSE_CANDS: {
        double tau = tau15_cands(c.d, c.m);
        if (tau == 0.0) {
            double u[SG_SPARSE_CAND_MAX];
            tau = tau15_sort(c.d, c.m, u);
        }
        sg_sparse_kernels_get()->out15(j->n, y, c.m, c.d, c.idx, tau);
        return;
    }
    }
}

/* Short unmasked rows (sg_sparse_rows_kernel, T = 1): the sort-free kernel over blocks
 * of rows; the rows it does not take (NaN/inf, or the exact check
 * failed) go to entmax15_row. */
static void entmax15_rows(const sg_sparse_job *j, size_t r0, size_t r1) {
    uint8_t taken[64];
    for (size_t r = r0; r < r1; r += 64) {
        const size_t nb = r1 - r < 64 ? r1 - r : 64;
        j->short_rows(nb, j->n, j->x + r * j->ldx, j->ldx, j->out + r * j->ldo, j->ldo, 1, taken);
        for (size_t q = 0; q < nb; q++)
            if (!taken[q]) entmax15_row(j, r + q);
    }
}

/* Unmasked rows of SG_SPARSE_MID_OPS < n <= SG_SPARSE_ROW15_MAX (T = 1)
 * where a SIMD row15 kernel is installed: the fused row kernel, the
 * general path for the rows it does not take. */
static void entmax15_rows15(const sg_sparse_job *j, size_t r0, size_t r1) {
    sg_sparse_row15_fn *f = sg_sparse_kernels_get()->row15;
    uint8_t taken[64];
    for (size_t r = r0; r < r1; r += 64) {
        const size_t nb = r1 - r < 64 ? r1 - r : 64;
        f(nb, j->n, j->x + r * j->ldx, j->ldx, j->out + r * j->ldo, j->ldo, taken);
        for (size_t q = 0; q < nb; q++)
            if (!taken[q]) entmax15_row(j, r + q);
    }
}

/*
 * Unmasked rows of SG_SPARSE_MID_OPS < n <= SG_ENTMAX15_MIX_MAX (T = 1)
 * where SIMD mid_rows and row15 kernels are installed: per chunk of 64
 * rows (at multiples of 64: tasks start there, job.task_align), the
 * candidate count of the chunk's first row (x > the filter threshold of
 * radius 2, read before any y of the chunk is written) picks the kernel.
 * The lanes kernel's cost does not depend on the candidates (n vertical
 * steps per float Newton pass), row15's grows with them: flat rows (N(0,1):
 * about 0.3 n candidates) go to the lanes, spread ones (1 to 3) to row15.
 * Each row's path depends only on x, never on the thread count; both
 * kernels' rows are exact (the support checked in double), and agree
 * with the candidate path within its rounding (6e-7 in the tests). Above
 * 68 row15 is as fast on flat rows too (since its sixth round: about 5%
 * faster than the lanes at n = 76 and 80, 4% slower at 65; since the
 * seventh, two rows' candidate phases side by side: 2% faster at 72,
 * even at 68 and 70).
 */
#define SG_ENTMAX15_MIX_MAX 68
#define SG_ENTMAX15_MID_CANDS 16 /* mid_rows from this many candidates on */
static size_t probe_cands(size_t n, const float *x) {
    int bad = 0;
    const float m = sg_sparse_kernels_get()->max(n, x, &bad);
    if (bad || m == -INFINITY) return n;
    const float thr = sg_sparse_filter_threshold(m, 2.0, 1.0);
    size_t c = 0;
    for (size_t i = 0; i < n; i++) c += x[i] > thr;
    return c;
}

static void entmax15_rows_mix(const sg_sparse_job *j, size_t r0, size_t r1) {
    const sg_sparse_kernels *k = sg_sparse_kernels_get();
    uint8_t taken[64];
    for (size_t r = r0; r < r1; r += 64) {
        const size_t nb = r1 - r < 64 ? r1 - r : 64;
        const float *x = j->x + r * j->ldx;
        float *y = j->out + r * j->ldo;
        if (probe_cands(j->n, x) >= SG_ENTMAX15_MID_CANDS)
            k->mid_rows(nb, j->n, x, j->ldx, y, j->ldo, 1, taken);
        else
            k->row15(nb, j->n, x, j->ldx, y, j->ldo, taken);
        for (size_t q = 0; q < nb; q++)
            if (!taken[q]) entmax15_row(j, r + q);
    }
}

/* y = w^p / sum w^p with w = (u - tau)_+: tau is exact to 2^-52, and the
 * division makes the row sum to 1 within rounding. */
static double alpha_sum(const float *d, size_t n, double am1, double p, double tau) {
    double sum = 0.0;
    for (size_t i = 0; i < n; i++) {
        const double w = am1 * (double)d[i] - tau;
        if (w > 0.0) sum += powp(w, p);
    }
    return sum;
}

static inline float y_alpha(float d, double am1, double p, double tau, double inv) {
    const double w = am1 * (double)d - tau;
    return w > 0.0 ? (float)(powp(w, p) * inv) : 0.0f;
}

static void entmax_row(const sg_sparse_job *j, size_t r) {
    const sg_row_view v = sg_sparse_view(j, r);
    const double am1 = j->alpha - 1.0, p = 1.0 / am1;
    sg_row_scan s;
    sg_sparse_cands c;
    float *y = j->out + r * j->ldo;
    switch (sg_sparse_gather(&v, j->n, p, SG_SPARSE_CAND_MAX, &s, &c, y)) {
    case SG_SPARSE_SPECIAL: special_row(j, &v, &s, y); return;
    case SG_SPARSE_FULL: {
        const double tau = sg_entmax_tau_f32(y, j->n, j->alpha);
        const double inv = 1.0 / alpha_sum(y, j->n, am1, p, tau);
        for (size_t i = 0; i < j->n; i++) y[i] = y_alpha(y[i], am1, p, tau, inv);
        return;
    }
    case SG_SPARSE_CANDS: {
        const double tau = sg_entmax_tau_f32(c.d, c.m, j->alpha);
        const double inv = 1.0 / alpha_sum(c.d, c.m, am1, p, tau);
        memset(y, 0, j->n * sizeof *y);
        for (size_t q = 0; q < c.m; q++) y[c.idx[q]] = y_alpha(c.d[q], am1, p, tau, inv);
        return;
    }
    }
}

/*
 * dx = g (dy - sum(g dy) / sum(g)) / T with g_i = y_i^(2 - alpha) on the
 * support {kept i: y_i > 0} and 0 elsewhere (whatever dy holds there); a
 * NaN in a kept y makes the row's kept entries NaN.
 */
static inline double g_of(float y, double two_minus_alpha) {
    return two_minus_alpha == 0.5 ? sqrt((double)y) : pow((double)y, two_minus_alpha);
}

static void backward_row(const sg_sparse_job *j, size_t r) {
    const sg_row_view v = sg_sparse_view(j, r); /* v.x is y */
    const float *y = v.x, *dy = j->dy + r * j->lddy;
    float *dx = j->out + r * j->ldo;
    const double e = 2.0 - j->alpha;
    double sg = 0.0, sgd = 0.0;
    size_t nan = 0;
    for (size_t i = 0; i < j->n; i++) {
        if (sg_row_removed(&v, i)) continue;
        if (isnan(y[i])) nan++;
        else if (y[i] > 0.0f) {
            const double g = g_of(y[i], e);
            sg += g, sgd += g * dy[i];
        }
    }
    const double mean = sg > 0.0 ? sgd / sg : 0.0;
    for (size_t i = 0; i < j->n; i++) {
        if (sg_row_removed(&v, i)) dx[i] = 0.0f;
        else if (nan) dx[i] = NAN;
        else dx[i] = y[i] > 0.0f ? (float)(g_of(y[i], e) * ((double)dy[i] - mean) / j->t) : 0.0f;
    }
}

/* ---- public ops --------------------------------------------------------- */

static sg_status check_alpha(sg_context *ctx, const char *name, double alpha) {
    if (alpha == 1.0)
        return sg_fail(ctx, SG_ERR_ARGUMENT,
                       "%s: alpha = 1 is softmax, not entmax (use sg_softmax_f32); alpha must be > 1",
                       name);
    if (!(alpha > 1.0) || !isfinite(alpha))
        return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: alpha = %g must be finite and > 1", name, alpha);
    return SG_OK;
}

static sg_status forward(sg_context *ctx, const char *name, double alpha, size_t rows, size_t n,
                         const float *x, size_t ldx, float *y, size_t ldy,
                         const sg_softmax_options *options, void (*row)(const sg_sparse_job *, size_t)) {
    if (!ctx) return SG_ERR_ARGUMENT;
    sg_ok(ctx);
    sg_status st = check_alpha(ctx, name, alpha);
    if (st != SG_OK) return st;
    sg_softmax_options o = options ? *options : sg_softmax_options_default();
    float c;
    st = sg_check_forward(ctx, name, SG_OP_SOFTMAX, rows, n, x, ldx, y, ldy, &o, 0, &c);
    if (st != SG_OK || rows == 0 || n == 0) return st;
    sg_sparse_job j = {0};
    j.row = row;
    j.x = x, j.ldx = ldx, j.out = y, j.ldo = ldy, j.alpha = alpha;
    if (row == entmax15_row && sg_sparse_rows_kernel(n) && !o.keep_mask && !o.add_mask &&
        o.temperature == 1.0f)
        j.rows_fn = entmax15_rows;
    else if (row == entmax15_row && n > SG_SPARSE_MID_OPS && n <= SG_ENTMAX15_MIX_MAX &&
             sg_sparse_kernels_get()->isa[SG_SPARSE_SLOT_mid_rows] > SG_ISA_REF &&
             sg_sparse_kernels_get()->isa[SG_SPARSE_SLOT_row15] > SG_ISA_REF && !o.keep_mask &&
             !o.add_mask && o.temperature == 1.0f)
        j.rows_fn = entmax15_rows_mix, j.task_align = 64;
    else if (row == entmax15_row && n > SG_SPARSE_MID_OPS && n <= SG_SPARSE_ROW15_MAX &&
             sg_sparse_kernels_get()->isa[SG_SPARSE_SLOT_row15] > SG_ISA_REF && !o.keep_mask &&
             !o.add_mask && o.temperature == 1.0f)
        j.rows_fn = entmax15_rows15;
    sg_sparse_run(ctx, &j, rows, n, &o);
    return SG_OK;
}

static sg_status backward(sg_context *ctx, const char *name, double alpha, size_t rows, size_t n,
                          const float *y, size_t ldy, const float *dy, size_t lddy, float *dx,
                          size_t lddx, const sg_softmax_options *options) {
    if (!ctx) return SG_ERR_ARGUMENT;
    sg_ok(ctx);
    sg_status st = check_alpha(ctx, name, alpha);
    if (st != SG_OK) return st;
    sg_softmax_options o = options ? *options : sg_softmax_options_default();
    float c;
    st = sg_check_backward(ctx, name, rows, n, y, ldy, dy, lddy, dx, lddx, &o, &c);
    if (st != SG_OK || rows == 0 || n == 0) return st;
    sg_sparse_job j = {0};
    j.row = backward_row;
    j.x = y, j.ldx = ldy, j.dy = dy, j.lddy = lddy, j.out = dx, j.ldo = lddx, j.alpha = alpha;
    sg_sparse_run(ctx, &j, rows, n, &o);
    return SG_OK;
}

sg_status sg_entmax15_f32(sg_context *ctx, size_t rows, size_t n, const float *x, size_t ldx,
                          float *y, size_t ldy, const sg_softmax_options *options) {
    return forward(ctx, "sg_entmax15_f32", 1.5, rows, n, x, ldx, y, ldy, options, entmax15_row);
}

sg_status sg_entmax15_backward_f32(sg_context *ctx, size_t rows, size_t n, const float *y,
                                   size_t ldy, const float *dy, size_t lddy, float *dx,
                                   size_t lddx, const sg_softmax_options *options) {
    return backward(ctx, "sg_entmax15_backward_f32", 1.5, rows, n, y, ldy, dy, lddy, dx, lddx,
                    options);
}

sg_status sg_entmax_f32(sg_context *ctx, double alpha, size_t rows, size_t n, const float *x,
                        size_t ldx, float *y, size_t ldy, const sg_softmax_options *options) {
    return forward(ctx, "sg_entmax_f32", alpha, rows, n, x, ldx, y, ldy, options, entmax_row);
}

sg_status sg_entmax_backward_f32(sg_context *ctx, double alpha, size_t rows, size_t n,
                                 const float *y, size_t ldy, const float *dy, size_t lddy,
                                 float *dx, size_t lddx, const sg_softmax_options *options) {
    return backward(ctx, "sg_entmax_backward_f32", alpha, rows, n, y, ldy, dy, lddy, dx, lddx,
                    options);
}

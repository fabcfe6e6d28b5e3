/*
 * test_softmax_special.c - the special-value, mask, argument and stride
 * contract of the softmax core (include/softgate.h, section 2), tested
 * through the public API only. Every algorithm and op is compared with a
 * reference computed here in long double that follows the header's table.
 *
 * Tests (all named special_*, so --filter special runs this file):
 *   special_forward_f32       NaN, +-inf, huge, [90,100], denormal rows
 *   special_forward_f32_temperature  the same with T = 0.25 and 3
 *   special_forward_f32_long  the same on (1<<20)+3 rows (chunked path)
 *   special_mask_f32          keep_mask / add_mask, per row and broadcast
 *   special_mask_add_values   large and infinite add_mask values with T
 *   special_mask_backward     backward ops: removed entries get dx = 0
 *   special_args_errors       argument errors, messages, untouched outputs
 *   special_f64_accuracy      f64 ops vs long double, offsets up to 1e6
 *   special_f64_values_masks  f64 special values and masks
 *   special_strided_rows      ld > n with garbage in the gaps
 */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"

/* ---- Helpers: ops, reference, comparison -------------------------------- */

typedef enum { OP_SM, OP_LSM, OP_LSE } op_kind;
static const char *const OP_NAME[3] = {"softmax", "log_softmax", "logsumexp"};
#define N_ALGS 4
static const sg_softmax_algorithm ALGS[N_ALGS] = {SG_SOFTMAX_AUTO, SG_SOFTMAX_THREE_PASS,
                                                  SG_SOFTMAX_TWO_PASS, SG_SOFTMAX_ONLINE};
/* Written into outputs before a call: what must still be there after it. */
#define SENTINEL (-12345.5)
/* A row this long takes the chunked (split) path of every algorithm. */
#define LONG_N (((size_t)1 << 20) + 3)

static double ordinary(test_rng *r) { return 3.0 * test_normal(r); }

static void destroy2(sg_context *c1, sg_context *c2) {
    sg_context_destroy(c1);
    sg_context_destroy(c2);
}

static int is_removed(const uint8_t *keep, const double *add, size_t i) {
    return (keep && !keep[i]) || (add && add[i] == -INFINITY);
}

/* Class of z = x/T + a in the extended reals: 0 finite, 1 +inf, -1 -inf, 2 NaN. */
static int z_class(double x, double a) {
    if (isnan(x) || isnan(a) || (x == -INFINITY && a == INFINITY)) return 2;
    if (x == INFINITY || a == INFINITY) return 1;
    return x == -INFINITY ? -1 : 0;
}

/* z_i = x_i/T + a_i as an unevaluated sum hi + lo (long double TwoSum), so
 * that neither a huge x absorbs a small a nor a cancelling pair loses x. */
static void z_pair(double x, double a, double T, long double *hi, long double *lo) {
    const long double q = (long double)x / T, h = q + a, b = h - q;
    *hi = h;
    *lo = (q - (h - b)) + (a - b);
}

/*
 * One row by the header's table, in long double: the finite kept z are
 * taken relative to the largest, d_i = (hi_i - hi_m) + (lo_i - lo_m). Writes
 * softmax to sm[n] and log-softmax to lsm[n]; returns logsumexp.
 */
static double ref_row(size_t n, const double *x, const uint8_t *keep, const double *add,
                      double T, double *sm, double *lsm) {
    size_t nan = 0, pinf = 0, fin = 0;
    long double mhi = -INFINITY, mlo = 0.0L, hi, lo, sum = 0.0L;
    for (size_t i = 0; i < n; i++) {
        if (is_removed(keep, add, i)) continue;
        int c = z_class(x[i], add ? add[i] : 0.0);
        nan += c == 2;
        pinf += c == 1;
        if (c != 0) continue;
        fin++;
        z_pair(x[i], add ? add[i] : 0.0, T, &hi, &lo);
        if (hi > mhi || (hi == mhi && lo > mlo)) mhi = hi, mlo = lo;
    }
    const int exact = !nan && !pinf && fin;
    for (size_t i = 0; exact && i < n; i++) {
        if (is_removed(keep, add, i) || z_class(x[i], add ? add[i] : 0.0) != 0) continue;
        z_pair(x[i], add ? add[i] : 0.0, T, &hi, &lo);
        long double d = (hi - mhi) + (lo - mlo);
        sm[i] = exp((double)d);
        lsm[i] = (double)d;
        sum += sm[i];
    }
    const long double ls = exact ? logl(sum) : 0.0L;
    for (size_t i = 0; i < n; i++) {
        int c = z_class(x[i], add ? add[i] : 0.0);
        if (is_removed(keep, add, i)) sm[i] = 0.0, lsm[i] = -INFINITY;
        else if (nan) sm[i] = lsm[i] = NAN;
        else if (pinf && c == 1) sm[i] = 1.0 / (double)pinf, lsm[i] = -log((double)pinf);
        else if (pinf || c != 0) sm[i] = 0.0, lsm[i] = -INFINITY;
        else sm[i] = (double)(sm[i] / sum), lsm[i] = (double)(lsm[i] - ls);
    }
    return nan ? NAN : pinf ? INFINITY : !fin ? -INFINITY : (double)(mhi + (mlo + ls));
}

/*
 * Whether an output matches its reference: NaN for NaN, exact zeros and
 * infinities, relative error 1e-5 (f32) / 1e-13 (f64) for probabilities
 * above 1e-30, error scaled by max(1, |ref|) for logs. A reference beyond
 * the type's range expects the infinity. Probabilities also get 3 |ln p|
 * units of rounding: the exponent ln p itself is only known to a few ulp
 * (4e-6 relative at p = 1e-30 in float).
 */
static int ok_value(op_kind op, int f32, double got, double ref) {
    const double tol = f32 ? 1e-5 : 1e-13, ulp = f32 ? 0x1p-24 : 0x1p-53;
    if (isnan(ref)) return isnan(got);
    if (op == OP_SM) {
        if (ref == 0.0) return got == 0.0;
        if (ref > 1e-30) return fabs(got - ref) <= (tol + 3.0 * fabs(log(ref)) * ulp) * ref;
        return got >= 0.0 && got <= 1.01e-30;
    }
    const double e = f32 ? (double)(float)ref : ref;
    if (isinf(e)) return got == e;
    return isfinite(got) && fabs(got - ref) <= tol * fmax(1.0, fabs(ref));
}

/* ---- A forward problem: inputs, masks, references, output buffers ------- */

typedef struct prob {
    int f64;                  /* element type of x, y and add_mask */
    size_t rows, n, ldx, ldy; /* gaps of x (and of the masks) hold garbage */
    double *x;                /* rows x ldx; exactly float values when !f64 */
    uint8_t *keep;            /* NULL, or rows x keep_ld (one row when 0) */
    size_t keep_ld;
    double *add;
    size_t add_ld;
    float T;
    const char *const *row_names; /* optional, for messages */
    float *xf, *addf;       /* the f32 copies */
    double *sm, *lsm, *lse; /* reference: rows x n, rows x n, rows */
    void *y, *y2, *z;       /* outputs: rows x ldy + 1 (twice), rows x ldx */
} prob;

static size_t mask_len(size_t rows, size_t n, size_t ld) { return ld ? rows * ld : n; }

static prob prob_new(int f64, size_t rows, size_t n, size_t ldx, size_t ldy, int keep,
                     size_t keep_ld, int add, size_t add_ld) {
    prob p = {f64, rows, n, ldx, ldy, NULL, NULL, keep_ld, NULL, add_ld, 1.0f, NULL,
              NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL};
    const size_t esz = f64 ? sizeof(double) : sizeof(float), nx = rows * ldx;
    p.x = test_alloc(nx * sizeof(double));
    for (size_t k = 0; k < nx; k++) p.x[k] = k % 2 ? NAN : INFINITY; /* garbage */
    if (keep) {
        p.keep = test_alloc(mask_len(rows, n, keep_ld));
        memset(p.keep, 0, mask_len(rows, n, keep_ld)); /* gaps: "remove" */
    }
    if (add) {
        size_t na = mask_len(rows, n, add_ld);
        p.add = test_alloc(na * sizeof(double));
        for (size_t k = 0; k < na; k++) p.add[k] = NAN;
        if (!f64) p.addf = test_alloc(na * sizeof(float));
    }
    if (!f64) p.xf = test_alloc(nx * sizeof(float));
    p.sm = test_alloc(rows * n * sizeof(double));
    p.lsm = test_alloc(rows * n * sizeof(double));
    p.lse = test_alloc(rows * sizeof(double));
    p.y = test_alloc((rows * ldy + 1) * esz);
    p.y2 = test_alloc((rows * ldy + 1) * esz);
    p.z = test_alloc(nx * esz);
    return p;
}

static void prob_free(prob *p) {
    free(p->x), free(p->keep), free(p->add), free(p->xf), free(p->addf);
    free(p->sm), free(p->lsm), free(p->lse), free(p->y), free(p->y2), free(p->z);
}

/* Rounds inputs to the op's type, makes the f32 copies and the reference. */
static void prob_prepare(prob *p) {
    if (!p->f64) {
        for (size_t k = 0; k < p->rows * p->ldx; k++) p->x[k] = p->xf[k] = (float)p->x[k];
        for (size_t k = 0; p->add && k < mask_len(p->rows, p->n, p->add_ld); k++)
            p->add[k] = p->addf[k] = (float)p->add[k];
    }
    for (size_t r = 0; r < p->rows; r++)
        p->lse[r] = ref_row(p->n, p->x + r * p->ldx, p->keep ? p->keep + r * p->keep_ld : NULL,
                            p->add ? p->add + r * p->add_ld : NULL, p->T, p->sm + r * p->n,
                            p->lsm + r * p->n);
}

static sg_status prob_run(const prob *p, sg_context *ctx, sg_softmax_algorithm alg, op_kind op,
                          const void *x, size_t ldx, void *y, size_t ldy) {
    sg_softmax_options o = sg_softmax_options_default();
    o.algorithm = alg;
    o.temperature = p->T;
    o.keep_mask = p->keep;
    o.keep_mask_ld = p->keep_ld;
    o.add_mask = !p->add ? NULL : p->f64 ? (const void *)p->add : (const void *)p->addf;
    o.add_mask_ld = p->add_ld;
    const size_t r = p->rows, n = p->n;
    if (p->f64) {
        if (op == OP_SM) return sg_softmax_f64(ctx, r, n, x, ldx, y, ldy, &o);
        if (op == OP_LSM) return sg_log_softmax_f64(ctx, r, n, x, ldx, y, ldy, &o);
        return sg_logsumexp_f64(ctx, r, n, x, ldx, y, &o);
    }
    if (op == OP_SM) return sg_softmax_f32(ctx, r, n, x, ldx, y, ldy, &o);
    if (op == OP_LSM) return sg_log_softmax_f32(ctx, r, n, x, ldx, y, ldy, &o);
    return sg_logsumexp_f32(ctx, r, n, x, ldx, y, &o);
}

static double elem(const void *buf, int f64, size_t k) {
    return f64 ? ((const double *)buf)[k] : (double)((const float *)buf)[k];
}

static void fill_sentinel(void *buf, int f64, size_t count) {
    for (size_t k = 0; k < count; k++)
        if (f64) ((double *)buf)[k] = SENTINEL;
        else ((float *)buf)[k] = (float)SENTINEL;
}

/* Compares the rows of y (stride ld) with the reference; the first miss of each row. */
static void check_output(const prob *p, op_kind op, const void *y, size_t ld, const char *how) {
    for (size_t r = 0; r < p->rows; r++) {
        const char *rn = p->row_names ? p->row_names[r] : "";
        if (op == OP_LSE) {
            double got = elem(y, p->f64, r);
            CHECK(ok_value(op, !p->f64, got, p->lse[r]),
                  "%s: n %zu row %zu%s%s: logsumexp %.9g, expected %.9g", how, p->n, r,
                  *rn ? " " : "", rn, got, p->f64 ? p->lse[r] : (double)(float)p->lse[r]);
            continue;
        }
        const double *ref = (op == OP_SM ? p->sm : p->lsm) + r * p->n;
        for (size_t i = 0; i < p->n; i++) {
            double got = elem(y, p->f64, r * ld + i);
            if (ok_value(op, !p->f64, got, ref[i])) continue;
            CHECK(0, "%s: n %zu row %zu%s%s index %zu: got %.9g, expected %.9g", how, p->n, r,
                  *rn ? " " : "", rn, i, got, p->f64 ? ref[i] : (double)(float)ref[i]);
            break;
        }
    }
}

/* Outside the first `inner` entries of each row (stride ld), buf must still
 * hold ref's bits (ref NULL: the sentinel), up to count elements. */
static void check_untouched(const prob *p, const void *buf, const void *ref, size_t ld,
                            size_t inner, size_t count, const char *how) {
    const size_t esz = p->f64 ? sizeof(double) : sizeof(float);
    const double sd = SENTINEL;
    const float sf = (float)SENTINEL;
    const void *sentinel = p->f64 ? (const void *)&sd : (const void *)&sf;
    for (size_t k = 0; k < count; k++) {
        if (k < p->rows * ld && k % ld < inner) {
            k += inner - 1 - k % ld;
            continue;
        }
        const void *want = ref ? (const char *)ref + k * esz : sentinel;
        if (memcmp((const char *)buf + k * esz, want, esz) == 0) continue;
        CHECK(0, "%s: n %zu: element %zu (row %zu, column %zu) outside the rows was changed to %g",
              how, p->n, k, k / ld, k % ld, elem(buf, p->f64, k));
        return;
    }
}

static int rows_same(const prob *p, const void *a, size_t lda, const void *b, size_t ldb) {
    const size_t esz = p->f64 ? sizeof(double) : sizeof(float);
    for (size_t r = 0; r < p->rows; r++)
        if (memcmp((const char *)a + r * lda * esz, (const char *)b + r * ldb * esz, p->n * esz))
            return 0;
    return 1;
}

enum { RUN_T2 = 1, RUN_INPLACE1 = 2, RUN_INPLACE2 = 4, RUN_ALL = 7 };

/*
 * Runs one op and algorithm on the problem and checks it: 1 thread out of
 * place (always); 2 threads, bit-identical (RUN_T2); in place on 1 and 2
 * threads (RUN_INPLACE*). Gaps and the element past the output are checked.
 */
static void prob_check(const prob *p, sg_context *c1, sg_context *c2, sg_softmax_algorithm alg,
                       op_kind op, int runs, const char *what) {
    char how[400];
    const int f64 = p->f64;
    const size_t esz = f64 ? sizeof(double) : sizeof(float);
    const void *x = f64 ? (const void *)p->x : (const void *)p->xf;
    const size_t ldy = op == OP_LSE ? 1 : p->ldy, inner = op == OP_LSE ? 1 : p->n;
    const size_t ny = p->rows * ldy + 1;
#define HOW(place, t)                                                                          \
    snprintf(how, sizeof how, "%s; alg %s, %s_%s, %s, threads %d", what,                       \
             sg_softmax_algorithm_name(alg), OP_NAME[op], f64 ? "f64" : "f32", place, t)
    HOW("out of place", 1);
    fill_sentinel(p->y, f64, ny);
    sg_status st = prob_run(p, c1, alg, op, x, p->ldx, p->y, ldy);
    CHECK(st == SG_OK, "%s: status %d (%s)", how, (int)st, sg_context_error(c1));
    check_output(p, op, p->y, ldy, how);
    check_untouched(p, p->y, NULL, ldy, inner, ny, how);
    if (runs & RUN_T2) {
        HOW("out of place", 2);
        fill_sentinel(p->y2, f64, ny);
        st = prob_run(p, c2, alg, op, x, p->ldx, p->y2, ldy);
        CHECK(st == SG_OK && memcmp(p->y, p->y2, ny * esz) == 0,
              "%s: status %d, result not bit-identical to 1 thread", how, (int)st);
    }
    for (int t = 1; t <= 2 && op != OP_LSE; t++) {
        if (!(runs & (t == 1 ? RUN_INPLACE1 : RUN_INPLACE2))) continue;
        HOW("in place (y == x)", t);
        memcpy(p->z, x, p->rows * p->ldx * esz);
        st = prob_run(p, t == 1 ? c1 : c2, alg, op, p->z, p->ldx, p->z, p->ldx);
        CHECK(st == SG_OK, "%s: status %d (%s)", how, (int)st, sg_context_error(t == 1 ? c1 : c2));
        if (!rows_same(p, p->z, p->ldx, p->y, p->ldy)) check_output(p, op, p->z, p->ldx, how);
        check_untouched(p, p->z, x, p->ldx, p->n, p->rows * p->ldx, how);
    }
#undef HOW
}

/* ---- Special-value rows ------------------------------------------------- */

enum { C_ORD, C_NAN, C_POSINF, C_POSINF2, C_NEGINF, C_ALLNEGINF, C_NAN_POSINF, C_HUGE,
       C_HUGE_NEG, C_HIGH, C_DENORM, C_DENORM_MIX, N_CASES };
static const char *const CASE_NAME[N_CASES] = {
    "ordinary", "one NaN", "one +inf", "two +inf", "two -inf", "all -inf", "NaN and +inf",
    "huge +-big mixed", "huge negative", "all in [90,100]", "all denormal", "denormal mix"};

/* Magnitudes per type: big finite, the largest finite, subnormal bound, smallest. */
typedef struct scale { double big, top, sub, tiny; } scale;
static const scale F32_SCALE = {3.0e38, FLT_MAX, 1.0e-38, FLT_TRUE_MIN};
static const scale F64_SCALE = {1.0e300, DBL_MAX, 2.0e-308, DBL_TRUE_MIN};

/* Row x[0..n) of case c, its special entries at pos (and pos2, pos3). */
static void make_case(double *x, size_t n, int c, size_t pos, const scale *s, test_rng *r) {
    const size_t pos2 = (pos + n / 3 + 1) % n, pos3 = (pos2 + 1) % n;
    for (size_t i = 0; i < n; i++) x[i] = ordinary(r);
    switch (c) {
    case C_NAN: x[pos] = NAN; break;
    case C_POSINF: x[pos] = INFINITY; break;
    case C_POSINF2: x[pos] = x[pos2] = INFINITY; break;
    case C_NEGINF: x[pos] = x[pos2] = -INFINITY; break;
    case C_ALLNEGINF:
        for (size_t i = 0; i < n; i++) x[i] = -INFINITY;
        break;
    case C_NAN_POSINF: x[pos2] = INFINITY, x[pos] = NAN; break;
    case C_HUGE: x[pos3] = -s->top, x[pos2] = -s->big, x[pos] = s->big; break;
    case C_HUGE_NEG: x[pos2] = -s->top, x[pos] = -s->big; break;
    case C_HIGH:
        for (size_t i = 0; i < n; i++) x[i] = 90.0 + 10.0 * test_uniform(r);
        x[pos] = 100.0;
        break;
    case C_DENORM:
        for (size_t i = 0; i < n; i++) x[i] = (test_uniform(r) - 0.5) * 2.0 * s->sub;
        x[pos2] = -s->tiny, x[pos] = s->tiny;
        break;
    case C_DENORM_MIX:
        for (size_t i = 1; i < n; i += 2) x[i] = (test_uniform(r) - 0.5) * 2.0 * s->sub;
        x[pos] = s->tiny;
        break;
    default: break;
    }
}

/*
 * Every case on rows of n. Short/medium: rows 1, 2, 3 hold the case with
 * its entries at index 0, n/2, n-1 and the other rows (rows >= 5; enough of
 * them split the rows across threads) are ordinary. Long: one row per call,
 * the position rotating with the case, the ordinary-only cases skipped.
 */
static void forward_cases(int f64, sg_context *c1, sg_context *c2, size_t n, size_t rows,
                          int nalgs, float T, test_rng *rng) {
    const int long_row = n >= LONG_N;
    rows = long_row ? 1 : test_quick ? 5 : rows;
    const size_t pos[3] = {0, n / 2, n - 1};
    const scale *s = f64 ? &F64_SCALE : &F32_SCALE;
    prob p = prob_new(f64, rows, n, n, n, 0, 0, 0, 0);
    char what[160];
    p.T = T;
    for (int c = 0; c < N_CASES; c++) {
        if (long_row && (c == C_ORD || c == C_DENORM_MIX)) continue;
        for (size_t r = 0; r < rows; r++) {
            const size_t k = long_row ? (size_t)c % 3 : (r + 2) % 3; /* rows 1,2,3: 0, n/2, n-1 */
            make_case(p.x + r * n, n, long_row || (r >= 1 && r <= 3) ? c : C_ORD, pos[k], s, rng);
        }
        prob_prepare(&p);
        if (long_row)
            snprintf(what, sizeof what, "case '%s' at index %zu, T %g", CASE_NAME[c], pos[c % 3],
                     (double)T);
        else
            snprintf(what, sizeof what, "case '%s' (rows 1,2,3: at index 0, n/2, n-1), T %g",
                     CASE_NAME[c], (double)T);
        for (int a = 0; a < nalgs; a++)
            for (int op = 0; op < 3; op++)
                prob_check(&p, c1, c2, ALGS[a], (op_kind)op, long_row ? RUN_INPLACE2 : RUN_ALL,
                           what);
    }
    prob_free(&p);
}

TEST(special_forward_f32) {
    sg_context *c1 = test_context(1), *c2 = test_context(2);
    test_rng rng = test_rng_seed(101);
    /* rows * n >= 65536 (n 128, 1000, 5000) splits rows across the 2 threads */
    const size_t ns[8][2] = {{3, 5},   {16, 5},  {17, 5},   {100, 5},
                             {128, 514}, {129, 5}, {1000, 67}, {5000, 15}};
    for (size_t i = 0; i < 8; i++)
        forward_cases(0, c1, c2, ns[i][0], ns[i][1], N_ALGS, 1.0f, &rng);
    destroy2(c1, c2);
}

/* The same rows with T = 0.25 and 3: huge x must not overflow either way. */
TEST(special_forward_f32_temperature) {
    sg_context *c1 = test_context(1), *c2 = test_context(2);
    test_rng rng = test_rng_seed(103);
    const size_t ns[3][2] = {{17, 5}, {129, 5}, {1000, 67}};
    for (size_t i = 0; i < 3; i++) {
        forward_cases(0, c1, c2, ns[i][0], ns[i][1], N_ALGS, 0.25f, &rng);
        forward_cases(0, c1, c2, ns[i][0], ns[i][1], N_ALGS, 3.0f, &rng);
    }
    destroy2(c1, c2);
}

TEST(special_forward_f32_long) {
    if (test_quick) return;
    sg_context *c1 = test_context(1), *c2 = test_context(2);
    test_rng rng = test_rng_seed(102);
    forward_cases(0, c1, c2, LONG_N, 1, N_ALGS, 1.0f, &rng);
    destroy2(c1, c2);
}

/* ---- Masks -------------------------------------------------------------- */

enum { M_KEEP, M_KEEP_BCAST, M_ADD, M_ADD_BCAST, M_BOTH, N_MODES };
static const char *const MODE_NAME[N_MODES] = {
    "keep_mask per row", "keep_mask broadcast", "add_mask per row", "add_mask broadcast",
    "keep_mask + add_mask per row"};
enum { S_ORD, S_NAN, S_INF, S_HUGE, S_ALL, S_ONE, N_SCEN };

/*
 * Masks and rows for a mode. Per-row masks cycle through the scenarios
 * (ordinary, kept NaN, kept +inf (two with add_mask), huge values, all
 * removed, one kept); broadcast masks cycle the rows through the first four.
 * Removed entries hold garbage: NaN, +inf, -inf or huge x; under both masks,
 * keep-removed entries also hold NaN or +inf in add_mask.
 */
static void mask_problem(prob *p, int mode, const scale *s, test_rng *rng) {
    const int bcast = mode == M_KEEP_BCAST || mode == M_ADD_BCAST;
    const size_t n = p->n;
    for (size_t mr = 0; mr < (bcast ? 1 : p->rows); mr++) {
        uint8_t *k = p->keep ? p->keep + mr * p->keep_ld : NULL;
        double *a = p->add ? p->add + mr * p->add_ld : NULL;
        const int sc = bcast ? S_ORD : (int)(mr % N_SCEN);
        for (size_t i = 0; i < n; i++) {
            int rm = sc == S_ALL   ? 1
                     : sc == S_ONE ? i != mr % n
                                   : i != (mr * 7) % n && test_uniform(rng) < 1.0 / 3.0;
            int by_keep = mode == M_BOTH ? i % 2 == 0 : k != NULL;
            if (k) k[i] = rm && by_keep ? 0 : (uint8_t)(1 + 127 * (i % 3));
            if (a)
                a[i] = rm && !by_keep ? -INFINITY
                       : rm           ? (i % 4 == 0 ? NAN : INFINITY)
                                      : 0.2 - 0.3 * (double)(i % 5);
        }
    }
    const double garbage[4] = {NAN, INFINITY, -INFINITY, s->big};
    for (size_t r = 0; r < p->rows; r++) {
        const size_t mr = bcast ? 0 : r;
        const uint8_t *k = p->keep ? p->keep + mr * p->keep_ld : NULL;
        double *a = p->add ? p->add + mr * p->add_ld : NULL;
        const int sc = (int)(r % (bcast ? 4 : N_SCEN));
        double *x = p->x + r * p->ldx;
        size_t first = n, last = n;
        for (size_t i = 0; i < n; i++) {
            if (is_removed(k, a, i)) {
                x[i] = garbage[(i + r) % 4];
                continue;
            }
            x[i] = ordinary(rng);
            if (first == n) first = i;
            last = i;
        }
        if (first == n) continue;
        if (sc == S_NAN) x[first] = NAN;
        if (sc == S_INF) {
            x[first] = INFINITY;
            if (a && !bcast && last != first) a[last] = INFINITY;
        }
        for (size_t i = 0; sc == S_HUGE && i < n; i++)
            if (!is_removed(k, a, i) && i % 3 != 2) x[i] = i % 3 == 0 ? s->big : -s->big;
    }
}

static void mask_suite(int f64, sg_context *c1, sg_context *c2, int nalgs, test_rng *rng) {
    const size_t ns[] = {7, 64, 129, 1000};
    const float Ts[] = {0.25f, 1.0f, 3.0f};
    const scale *s = f64 ? &F64_SCALE : &F32_SCALE;
    char what[200];
    for (int mode = 0; mode < N_MODES; mode++) {
        const int bcast = mode == M_KEEP_BCAST || mode == M_ADD_BCAST;
        const int keep = mode == M_KEEP || mode == M_KEEP_BCAST || mode == M_BOTH;
        const int add = mode >= M_ADD;
        for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++) {
            const size_t n = ns[ni], rows = n >= 1000 && !test_quick ? 72 : bcast ? 4 : N_SCEN;
            prob p = prob_new(f64, rows, n, n, n, keep, bcast ? 0 : n, add, bcast ? 0 : n);
            mask_problem(&p, mode, s, rng);
            for (size_t t = 0; t < 3; t++) {
                p.T = Ts[t];
                prob_prepare(&p);
                snprintf(what, sizeof what, "%s, T %g (rows cycle: %s)", MODE_NAME[mode], Ts[t],
                         bcast ? "ordinary, kept NaN, kept +inf, huge"
                               : "ordinary, kept NaN, kept +inf, huge, all removed, one kept");
                for (int a = 0; a < nalgs; a++)
                    for (int op = 0; op < 3; op++)
                        prob_check(&p, c1, c2, ALGS[a], (op_kind)op, RUN_ALL, what);
            }
            prob_free(&p);
        }
    }
}

TEST(special_mask_f32) {
    sg_context *c1 = test_context(1), *c2 = test_context(2);
    test_rng rng = test_rng_seed(201);
    mask_suite(0, c1, c2, N_ALGS, &rng);
    destroy2(c1, c2);
}

/* Rows of explicit add_mask values (per-row mask), one behaviour each. */
#define N_ADDV 10
static const char *const ADDV_NAME[N_ADDV] = {
    "(tie at a = +1e30 on equal x, others a = -1e30 / -FLT_MAX / 0)",
    "(one survivor, others a = -3e38)",
    "(tie at a = FLT_MAX on equal x)",
    "(huge x +-3e38 with small a)",
    "(x[0] = 3e38, a[0] = -3e38, x[n-1] = -3e38, a[n-1] = 3e38, rest removed)",
    "(x[0] = 3e38 cancelled by a[0] = -3e38, rest ordinary)",
    "(a = +inf on one kept entry)",
    "(a = +inf on one entry, x = +inf on another)",
    "(x = -inf with a = +inf: z NaN)",
    "(x = +inf removed by a = -inf)"};

static void add_values_problem(prob *p, test_rng *rng) {
    const size_t n = p->n;
    for (size_t r = 0; r < N_ADDV; r++) {
        double *x = p->x + r * p->ldx, *a = p->add + r * p->add_ld;
        for (size_t i = 0; i < n; i++) x[i] = ordinary(rng), a[i] = 0.25 * (double)(i % 3) - 0.25;
        switch (r) {
        case 0:
            for (size_t i = 0; i < n; i++) a[i] = i % 3 == 0 ? -1e30 : i % 3 == 1 ? -FLT_MAX : 0.0;
            a[1] = a[n - 1] = 1e30, x[n - 1] = x[1];
            break;
        case 1:
            for (size_t i = 0; i < n; i++) a[i] = -3e38;
            a[n / 2] = 0.0;
            break;
        case 2: a[0] = a[n - 1] = FLT_MAX, x[n - 1] = x[0]; break;
        case 3:
            for (size_t i = 0; i < n; i++) x[i] = i % 3 == 0 ? 3e38 : i % 3 == 1 ? -3e38 : x[i];
            break;
        case 4:
            for (size_t i = 0; i < n; i++) a[i] = -INFINITY;
            x[0] = 3e38, a[0] = -3e38, x[n - 1] = -3e38, a[n - 1] = 3e38;
            break;
        case 5: x[0] = 3e38, a[0] = -3e38; break;
        case 6: a[0] = -INFINITY, a[n / 2] = INFINITY; break;
        case 7: a[0] = INFINITY, x[n - 1] = INFINITY; break;
        case 8: x[1] = -INFINITY, a[1] = INFINITY; break;
        default: x[2] = INFINITY, a[2] = -INFINITY; break;
        }
    }
}

static void add_values_suite(int f64, sg_context *c1, sg_context *c2, int nalgs, test_rng *rng) {
    const size_t ns[] = {5, 40, 300};
    const float Ts[] = {0.25f, 1.0f, 3.0f};
    char what[200];
    for (size_t ni = 0; ni < 3; ni++) {
        prob p = prob_new(f64, N_ADDV, ns[ni], ns[ni], ns[ni], 0, 0, 1, ns[ni]);
        add_values_problem(&p, rng);
        p.row_names = ADDV_NAME;
        for (size_t t = 0; t < 3; t++) {
            p.T = Ts[t];
            prob_prepare(&p);
            snprintf(what, sizeof what, "add_mask values per row, T %g", Ts[t]);
            for (int a = 0; a < nalgs; a++)
                for (int op = 0; op < 3; op++)
                    prob_check(&p, c1, c2, ALGS[a], (op_kind)op, RUN_T2 | RUN_INPLACE1, what);
        }
        prob_free(&p);
    }
}

TEST(special_mask_add_values) {
    sg_context *c1 = test_context(1), *c2 = test_context(2);
    test_rng rng = test_rng_seed(202);
    add_values_suite(0, c1, c2, N_ALGS, &rng);
    destroy2(c1, c2);
}

/* ---- Backward with masks ------------------------------------------------ */

/*
 * Checks dx (stride lddx) of the backward of kind (0 softmax, 1 log-softmax)
 * on [rows x n] under o's masks: removed entries exactly 0, kept ones the
 * header's formula in double from the saved y and dy (sums over kept only).
 */
static void check_backward(int kind, size_t rows, size_t n, const float *y, const float *dy,
                           const float *dx, size_t lddx, const sg_softmax_options *o,
                           const char *how) {
    const double T = o->temperature;
    for (size_t r = 0; r < rows; r++) {
        const uint8_t *k = o->keep_mask ? o->keep_mask + r * o->keep_mask_ld : NULL;
        const float *a = o->add_mask ? (const float *)o->add_mask + r * o->add_mask_ld : NULL;
        const float *yr = y + r * n, *gr = dy + r * n, *dr = dx + r * lddx;
        double s = 0.0, mag = 0.0;
        for (size_t i = 0; i < n; i++) {
            double t = kind == 0 ? (double)yr[i] * gr[i] : (double)gr[i];
            if (!((k && !k[i]) || (a && a[i] == -INFINITY))) s += t, mag += fabs(t);
        }
        for (size_t i = 0; i < n; i++) {
            const int rm = (k && !k[i]) || (a && a[i] == -INFINITY);
            const double p = kind == 0 ? yr[i] : exp((double)yr[i]), g = gr[i];
            const double ref = rm ? 0.0 : kind == 0 ? p * (g - s) / T : (g - p * s) / T;
            const double err = kind == 0 ? p * (fabs(g) + mag) : fabs(g) + p * mag;
            const double tol = rm ? 0.0 : 1e-5 * err / T + 1e-30;
            if (fabs(dr[i] - ref) <= tol) continue;
            CHECK(0, "%s: n %zu row %zu index %zu (%s, dy %g): dx %.9g, expected %.9g", how, n, r,
                  i, rm ? "removed" : "kept", g, (double)dr[i], ref);
            break;
        }
        for (size_t i = n; i < lddx; i++)
            CHECK(dr[i] == (float)SENTINEL, "%s: n %zu row %zu: gap column %zu overwritten (%g)",
                  how, n, r, i, (double)dr[i]);
    }
}

/* One backward check: masks of a mode (row 1 of a per-row mask removes
 * everything), forward y, dy with NaN / huge / inf on removed entries. */
static void backward_case(sg_context *c1, sg_context *c2, int kind, int mode, size_t n, float T,
                          test_rng *rng) {
    static const char *const modes[4] = {"keep_mask per row", "keep_mask broadcast",
                                         "add_mask per row", "add_mask broadcast"};
    const float garbage[4] = {NAN, 3e38f, -INFINITY, INFINITY};
    const int bcast = mode % 2;
    const size_t rows = n >= LONG_N ? 1 : n >= 1000 && !test_quick ? 70 : 5;
    const size_t lddx = n + 2, mrows = bcast ? 1 : rows, nx = rows * n, ndx = rows * lddx + 1;
    float *x = test_alloc(nx * sizeof(float)), *y = test_alloc(nx * sizeof(float));
    float *dy = test_alloc(nx * sizeof(float)), *dxi = test_alloc(nx * sizeof(float));
    float *dx = test_alloc(ndx * sizeof(float)), *dx2 = test_alloc(ndx * sizeof(float));
    uint8_t *keep = mode < 2 ? test_alloc(mrows * n) : NULL;
    float *add = mode >= 2 ? test_alloc(mrows * n * sizeof(float)) : NULL;
    for (size_t k = 0; k < mrows * n; k++) {
        int rm = k / n == 1 || (k % n != k / n % n && test_uniform(rng) < 1.0 / 3.0);
        if (keep) keep[k] = (uint8_t)!rm;
        if (add) add[k] = rm ? -INFINITY : 0.1f * (float)(k % 4);
    }
    for (size_t k = 0; k < nx; k++) x[k] = (float)ordinary(rng);
    sg_softmax_options o = sg_softmax_options_default();
    o.temperature = T;
    o.keep_mask = keep, o.keep_mask_ld = bcast ? 0 : n;
    o.add_mask = add, o.add_mask_ld = bcast ? 0 : n;
    char how[200];
    snprintf(how, sizeof how, "%s backward, %s, T %g", kind ? "log_softmax" : "softmax",
             modes[mode], (double)T);
    sg_status st = kind ? sg_log_softmax_f32(c1, rows, n, x, n, y, n, &o)
                        : sg_softmax_f32(c1, rows, n, x, n, y, n, &o);
    CHECK(st == SG_OK, "%s: forward status %d", how, (int)st);
    for (size_t k = 0; k < nx; k++) {
        size_t mi = bcast ? k % n : k;
        int rm = (keep && !keep[mi]) || (add && add[mi] == -INFINITY);
        dy[k] = rm ? garbage[(k + k / n) % 4] : (float)test_normal(rng);
    }
    fill_sentinel(dx, 0, ndx);
    fill_sentinel(dx2, 0, ndx);
    memcpy(dxi, dy, nx * sizeof(float));
    sg_status (*bwd)(sg_context *, size_t, size_t, const float *, size_t, const float *, size_t,
                     float *, size_t, const sg_softmax_options *) =
        kind ? sg_log_softmax_backward_f32 : sg_softmax_backward_f32;
    st = bwd(c1, rows, n, y, n, dy, n, dx, lddx, &o);
    CHECK(st == SG_OK, "%s: status %d (%s)", how, (int)st, sg_context_error(c1));
    check_backward(kind, rows, n, y, dy, dx, lddx, &o, how);
    CHECK(dx[rows * lddx] == (float)SENTINEL, "%s: n %zu: wrote past dx", how, n);
    st = bwd(c2, rows, n, y, n, dy, n, dx2, lddx, &o);
    CHECK(st == SG_OK && memcmp(dx, dx2, ndx * sizeof(float)) == 0,
          "%s: n %zu: 2 threads not bit-identical to 1 thread", how, n);
    st = bwd(c2, rows, n, y, n, dxi, n, dxi, n, &o);
    CHECK(st == SG_OK, "%s: in place status %d", how, (int)st);
    strncat(how, ", in place (dx == dy), threads 2", sizeof how - strlen(how) - 1);
    check_backward(kind, rows, n, y, dy, dxi, n, &o, how);
    free(x), free(y), free(dy), free(dxi), free(dx), free(dx2), free(keep), free(add);
}

TEST(special_mask_backward) {
    sg_context *c1 = test_context(1), *c2 = test_context(2);
    test_rng rng = test_rng_seed(301);
    /* LONG_N: the chunked backward (keep per row and add broadcast only) */
    const size_t ns[] = {7, 100, 1000, LONG_N};
    for (int kind = 0; kind < 2; kind++)
        for (int mode = 0; mode < 4; mode++)
            for (size_t ni = 0; ni < (test_quick ? 3 : 4); ni++)
                for (int t = 0; t < (ns[ni] < LONG_N ? 2 : mode % 3 == 0); t++)
                    backward_case(c1, c2, kind, mode, ns[ni], t ? 2.0f : 1.0f, &rng);
    destroy2(c1, c2);
}

/* ---- Argument errors ---------------------------------------------------- */

enum { E_SM, E_LSM, E_LSE, E_SM64, E_LSM64, E_LSE64, E_BWD, E_LBWD, E_LSEBWD, N_ENTRIES };
static const char *const ENTRY_NAME[N_ENTRIES] = {
    "sg_softmax_f32", "sg_log_softmax_f32", "sg_logsumexp_f32", "sg_softmax_f64",
    "sg_log_softmax_f64", "sg_logsumexp_f64", "sg_softmax_backward_f32",
    "sg_log_softmax_backward_f32", "sg_logsumexp_backward_f32"};

static int entry_f64(int e) { return e >= E_SM64 && e <= E_LSE64; }

/* Every entry point; x also serves as y and dy of the backward ops, out as their dx. */
static sg_status call_entry(sg_context *ctx, int e, size_t rows, size_t n, const void *x,
                            size_t ldx, void *out, size_t ldo, const sg_softmax_options *o) {
    static const float dlse[8] = {1, 1, 1, 1, 1, 1, 1, 1};
    switch (e) {
    case E_SM: return sg_softmax_f32(ctx, rows, n, x, ldx, out, ldo, o);
    case E_LSM: return sg_log_softmax_f32(ctx, rows, n, x, ldx, out, ldo, o);
    case E_LSE: return sg_logsumexp_f32(ctx, rows, n, x, ldx, out, o);
    case E_SM64: return sg_softmax_f64(ctx, rows, n, x, ldx, out, ldo, o);
    case E_LSM64: return sg_log_softmax_f64(ctx, rows, n, x, ldx, out, ldo, o);
    case E_LSE64: return sg_logsumexp_f64(ctx, rows, n, x, ldx, out, o);
    case E_BWD: return sg_softmax_backward_f32(ctx, rows, n, x, ldx, x, ldx, out, ldo, o);
    case E_LBWD: return sg_log_softmax_backward_f32(ctx, rows, n, x, ldx, x, ldx, out, ldo, o);
    default: return sg_logsumexp_backward_f32(ctx, rows, n, x, ldx, NULL, dlse, out, ldo, o);
    }
}

/* Expects status `want` with a non-empty message naming `word`, output untouched. */
static void expect_error(sg_context *ctx, sg_status got, sg_status want, const char *word,
                         const void *out, const void *before, size_t bytes, const char *what,
                         int e) {
    const char *m = sg_context_error(ctx);
    CHECK(got == want, "%s, %s: status %d (%s), expected %d", what, ENTRY_NAME[e], (int)got,
          sg_status_string(got), (int)want);
    CHECK(m && m[0], "%s, %s: empty error message", what, ENTRY_NAME[e]);
    if (word)
        CHECK(m && strstr(m, word), "%s, %s: message \"%s\" does not mention \"%s\"", what,
              ENTRY_NAME[e], m ? m : "(null)", word);
    CHECK(!out || memcmp(out, before, bytes) == 0, "%s, %s: output written by a failing call",
          what, ENTRY_NAME[e]);
}

/* Failing calls on [2 x 4]; keep_ld / add_ld 0: no such mask. */
typedef struct bad_call {
    const char *what;
    float T;
    size_t ldx, ldo, keep_ld, add_ld;
    int null_x, null_out;
    sg_status want;
    const char *word;
} bad_call;
static const bad_call BAD_CALLS[] = {
    {"temperature 0", 0.0f, 4, 4, 0, 0, 0, 0, SG_ERR_ARGUMENT, "temperature"},
    {"temperature -1", -1.0f, 4, 4, 0, 0, 0, 0, SG_ERR_ARGUMENT, "temperature"},
    {"temperature NaN", NAN, 4, 4, 0, 0, 0, 0, SG_ERR_ARGUMENT, "temperature"},
    {"temperature +inf", INFINITY, 4, 4, 0, 0, 0, 0, SG_ERR_ARGUMENT, "temperature"},
    {"temperature 1e-45 (1/T overflows)", 1e-45f, 4, 4, 0, 0, 0, 0, SG_ERR_ARGUMENT, "temperature"},
    {"ldx 3 < n 4", 1.0f, 3, 4, 0, 0, 0, 0, SG_ERR_SHAPE, "stride"},
    {"output stride 3 < n 4", 1.0f, 4, 3, 0, 0, 0, 0, SG_ERR_SHAPE, "stride"},
    {"NULL x", 1.0f, 4, 4, 0, 0, 1, 0, SG_ERR_ARGUMENT, NULL},
    {"NULL output", 1.0f, 4, 4, 0, 0, 0, 1, SG_ERR_ARGUMENT, NULL},
    {"keep_mask_ld 1 with n 4", 1.0f, 4, 4, 1, 0, 0, 0, SG_ERR_SHAPE, "keep_mask"},
    {"keep_mask_ld 3 with n 4", 1.0f, 4, 4, 3, 0, 0, 0, SG_ERR_SHAPE, "keep_mask"},
    {"add_mask_ld 1 with n 4", 1.0f, 4, 4, 0, 1, 0, 0, SG_ERR_SHAPE, "add_mask"},
    {"add_mask_ld 2 with n 4", 1.0f, 4, 4, 0, 2, 0, 0, SG_ERR_SHAPE, "add_mask"},
};

TEST(special_args_errors) {
    sg_context *ctx = test_context(1);
    static const uint8_t keep[8] = {1, 1, 1, 1, 1, 1, 1, 1};
    static const float addf[8];
    static const double addd[8];
    float xf[16];
    double xd[16];
    unsigned char out[256], before[256];
    for (int i = 0; i < 16; i++) xf[i] = (float)(xd[i] = 0.5 * i - 3.0);
    memset(before, 0xA5, sizeof before);
    const sg_softmax_options def = sg_softmax_options_default();
    for (int e = 0; e < N_ENTRIES; e++) {
        const int f64 = entry_f64(e), lse_out = e == E_LSE || e == E_LSE64;
        const void *x = f64 ? (const void *)xd : (const void *)xf;
        sg_status st = call_entry(NULL, e, 2, 4, x, 4, out, 4, &def);
        CHECK(st == SG_ERR_ARGUMENT, "%s: NULL context gave %d", ENTRY_NAME[e], (int)st);
        for (size_t b = 0; b < sizeof BAD_CALLS / sizeof BAD_CALLS[0]; b++) {
            const bad_call *bc = &BAD_CALLS[b];
            if (bc->ldo < 4 && lse_out) continue; /* logsumexp has no output stride */
            sg_softmax_options o = def;
            o.temperature = bc->T;
            if (bc->keep_ld) o.keep_mask = keep, o.keep_mask_ld = bc->keep_ld;
            if (bc->add_ld) o.add_mask = f64 ? (const void *)addd : (const void *)addf;
            o.add_mask_ld = bc->add_ld;
            memcpy(out, before, sizeof out);
            st = call_entry(ctx, e, 2, 4, bc->null_x ? NULL : x, bc->ldx, bc->null_out ? NULL : out,
                            bc->ldo, &o);
            expect_error(ctx, st, bc->want, bc->word, out, before, sizeof out, bc->what, e);
            st = call_entry(ctx, e, 2, 4, x, 4, out, 4, &def); /* clears the message */
            CHECK(st == SG_OK && sg_context_error(ctx)[0] == '\0',
                  "%s after '%s': a good call gave %d and message \"%s\"", ENTRY_NAME[e], bc->what,
                  (int)st, sg_context_error(ctx));
        }
        /* Empty problems succeed, NULL where nothing is read; n == 0 writes only lse = -inf. */
        st = call_entry(ctx, e, 0, 4, NULL, 4, NULL, 4, &def);
        CHECK(st == SG_OK, "%s: rows == 0 with NULL buffers gave %d (%s)", ENTRY_NAME[e], (int)st,
              sg_context_error(ctx));
        memcpy(out, before, sizeof out);
        st = call_entry(ctx, e, 3, 0, NULL, 0, out, 0, &def);
        CHECK(st == SG_OK, "%s: n == 0 gave %d (%s)", ENTRY_NAME[e], (int)st,
              sg_context_error(ctx));
        for (size_t r = 0; lse_out && r < 3; r++)
            CHECK(elem(out, f64, r) == -INFINITY, "%s: n == 0: lse[%zu] = %g, expected -inf",
                  ENTRY_NAME[e], r, elem(out, f64, r));
        const size_t skip = lse_out ? 3 * (f64 ? 8 : 4) : 0;
        CHECK(memcmp(out + skip, before + skip, sizeof out - skip) == 0,
              "%s: n == 0 wrote outside the (empty) output", ENTRY_NAME[e]);
        if (e <= E_LSE) { /* f32 forward: the algorithm is checked */
            sg_softmax_options o = def;
            o.algorithm = (sg_softmax_algorithm)99;
            memcpy(out, before, sizeof out);
            st = call_entry(ctx, e, 2, 4, x, 4, out, 4, &o);
            expect_error(ctx, st, SG_ERR_ARGUMENT, NULL, out, before, sizeof out, "algorithm 99",
                         e);
        }
        if (e > E_LSM64 || lse_out) continue;
        float f[16]; /* in place (y == x) needs ldy == ldx */
        double d[16];
        memcpy(f, xf, sizeof f), memcpy(d, xd, sizeof d);
        void *io = f64 ? (void *)d : (void *)f;
        st = call_entry(ctx, e, 2, 4, io, 5, io, 6, &def);
        expect_error(ctx, st, SG_ERR_SHAPE, NULL, io, x, f64 ? sizeof d : sizeof f,
                     "in place with ldy 6 != ldx 5", e);
    }
    float g[16];
    memcpy(g, xf, sizeof g);
    sg_status st = sg_softmax_backward_f32(ctx, 2, 4, xf, 4, g, 5, g, 6, NULL);
    expect_error(ctx, st, SG_ERR_SHAPE, NULL, g, xf, sizeof g, "in place dx == dy, lddx 6 != 5",
                 E_BWD);
    for (int k = SG_OK; k <= SG_ERR_UNSUPPORTED; k++) {
        const char *m = sg_status_string((sg_status)k);
        CHECK(m && m[0], "sg_status_string(%d) is empty", k);
    }
    sg_context_destroy(ctx);
}

/* ---- f64 ---------------------------------------------------------------- */

TEST(special_f64_accuracy) {
    sg_context *c1 = test_context(1), *c2 = test_context(2);
    test_rng rng = test_rng_seed(401);
    const size_t ns[] = {1, 5, 64, 1000};
    const double offsets[6] = {0.0, 1e6, -1e6, 1234.5, -31.25, 5e5};
    const double scales[6] = {1.0, 3.0, 10.0, 30.0, 0.01, 100.0};
    const float Ts[3] = {0.5f, 1.0f, 2.0f};
    char what[160];
    for (size_t ni = 0; ni < 4; ni++)
        for (int with_add = 0; with_add < 2; with_add++) {
            const size_t n = ns[ni], rows = n >= 1000 && !test_quick ? 20 : 6;
            prob p = prob_new(1, rows, n, n, n, 0, 0, with_add, n);
            for (size_t r = 0; r < rows; r++)
                for (size_t i = 0; i < n; i++) {
                    p.x[r * n + i] = offsets[r % 6] + scales[r % 6] * test_normal(&rng);
                    if (with_add) p.add[r * n + i] = -0.125 * (double)((i + r) % 9);
                }
            for (int t = 0; t < 3; t++) {
                p.T = Ts[t];
                prob_prepare(&p);
                snprintf(what, sizeof what, "random rows (offset of row r: {0,1e6,-1e6,1234.5,"
                         "-31.25,5e5}[r%%6]), T %g%s", (double)Ts[t], with_add ? ", add_mask" : "");
                for (int op = 0; op < 3; op++)
                    prob_check(&p, c1, c2, SG_SOFTMAX_AUTO, (op_kind)op, RUN_ALL, what);
            }
            prob_free(&p);
        }
    destroy2(c1, c2);
}

TEST(special_f64_values_masks) {
    sg_context *c1 = test_context(1), *c2 = test_context(2);
    test_rng rng = test_rng_seed(402);
    const size_t ns[4][2] = {{3, 5}, {17, 5}, {100, 5}, {1000, 20}};
    for (size_t i = 0; i < 4; i++) /* the algorithm is ignored: two are enough */
        forward_cases(1, c1, c2, ns[i][0], ns[i][1], 2, 1.0f, &rng);
    mask_suite(1, c1, c2, 1, &rng);
    add_values_suite(1, c1, c2, 1, &rng);
    destroy2(c1, c2);
}

/* ---- Strided rows ------------------------------------------------------- */

TEST(special_strided_rows) {
    sg_context *c1 = test_context(1), *c2 = test_context(2);
    test_rng rng = test_rng_seed(501);
    const size_t ns[] = {5, 33, 1000};
    const char *const masks[3] = {"no mask", "keep_mask ld n+2", "add_mask ld n+4"};
    char what[160];
    for (int f64 = 0; f64 < 2; f64++)
        for (size_t ni = 0; ni < 3; ni++)
            for (int m = 0; m < 3; m++) {
                const size_t n = ns[ni], rows = 4;
                prob p = prob_new(f64, rows, n, n + 5, n + 3, m == 1, n + 2, m == 2, n + 4);
                for (size_t r = 0; r < rows; r++)
                    for (size_t i = 0; i < n; i++) {
                        int rm = r % 2 == 0 && i != r % n && test_uniform(&rng) < 0.25;
                        p.x[r * p.ldx + i] = rm ? NAN : ordinary(&rng);
                        if (p.keep) p.keep[r * p.keep_ld + i] = (uint8_t)!rm;
                        if (p.add) p.add[r * p.add_ld + i] = rm ? -INFINITY : 0.5;
                        if (!p.keep && !p.add && rm) p.x[r * p.ldx + i] = -INFINITY;
                    }
                p.x[2 * p.ldx + n / 2] = INFINITY; /* row 2: +inf; rows 1, 3 plain */
                prob_prepare(&p);
                snprintf(what, sizeof what, "strided (ldx n+5, ldy n+3, gaps NaN/+inf), %s",
                         masks[m]);
                for (int a = 0; a < (f64 ? 1 : N_ALGS); a++)
                    for (int op = 0; op < 3; op++)
                        prob_check(&p, c1, c2, ALGS[a], (op_kind)op, RUN_ALL, what);
                prob_free(&p);
            }
    destroy2(c1, c2);
}

/*
 * sparsemax.c - sparsemax (Martins and Astudillo, "From Softmax to
 * Sparsemax", ICML 2016), float32: the forward op, its Jacobian-vector
 * product and the sparsemax loss with its gradient; rows across threads.
 * The softmax core's options, masks and argument checks are reused through
 * softmax_internal.h; softmax itself and its kernels do not belong here.
 *
 * Short unmasked rows (n <= 32, T = 1; n <= 64 with AVX-512) of the forward
 * op take the sort-free short_rows / mid_rows kernels instead
 * (sparse_kernels.h, docs/SPARSE.md "Short rows");
 * the rows it declines (NaN/inf, or its exact check failed) come here.
 * With AVX-512, unmasked rows of 65..256 (T = 1) take the fused rowsm
 * kernel (sparse_kernels.h, docs/SPARSE.md): the bits of forward_row's
 * candidate path; the rows it declines come here too.
 *
 * Per row of the forward op (the loss does the same with dx as its row):
 *  1. sg_sparse_gather (sparse_rows.c) classifies the row. Unmasked rows:
 *     a vectorized max (NaN and +inf flagged), then a vectorized filter
 *     keeps the few candidates x_i > x_max - T (rounded down), the only
 *     entries that can be in the support (tau >= max - 1); d_i = z_i - z_b
 *     is computed for them alone, in double (sg_z_diff, so finite x of any
 *     magnitude never overflows) and rounded once to float. Masked rows:
 *     the scalar scan of the softmax core (sg_row_scan_f32), then the same
 *     candidates by a scalar pass. Rows with more than SG_SPARSE_CAND_MAX
 *     candidates write d for every entry into the output row (the scratch;
 *     in place works because entry i is read before it is written).
 *  2. tau (relative to z_b) by Michelot's iteration from the superset
 *     {d > -1}, sums in double (the vectorized sums kernel), until the
 *     support stops changing; after MICHELOT_MAX_ITER iterations,
 *     bisection on tau (see solve_tau). Entries with d <= -1 never enter
 *     a sum, so both paths solve the same problem (to the last bits,
 *     which the order of summation may change).
 *  3. y_i = max(d_i - tau, 0): zeros, then the candidates above tau.
 */
#include <float.h>
#include <math.h>
#include <string.h>

#include "normalizers/normalizers_internal.h"
#include "normalizers/sparse_internal.h"
#include "normalizers/sparse_kernels.h"
#include "softmax/softmax_internal.h"

/* Michelot's iteration is Newton's method on a convex piecewise-linear
 * function: rows of floats need about log2(N) passes or fewer (at most 13
 * measured at N = 1e5). The cap only bounds the work if rounding ever
 * made it cycle; beyond it, bisection (tested by forcing a cap of 0). */
#define MICHELOT_MAX_ITER 32

/* The entries {d_i > t} of a row: count, sum of d and of d^2 (double). */
typedef struct set_sums {
    size_t k;
    double s, s2;
} set_sums;

/* The threshold relative to z_b and the support's sums. */
typedef struct tau_result {
    double tau;
    set_sums set;
} tau_result;

static inline int special(const sg_row_scan *s) { return sg_sparse_special(s); }

static inline float d_of(const sg_row_view *v, const sg_row_scan *s, size_t i) {
    return sg_sparse_d(v, s, i);
}

static inline float special_p(const sg_row_view *v, const sg_row_scan *s, size_t i) {
    return sg_sparse_special_p(v, s, i);
}

/* ---- the threshold ----------------------------------------------------- */

/* {d_i > t} over d stored as floats (the output row). */
typedef struct float_src {
    const float *d;
    size_t n;
} float_src;

/* {d_i > t} recomputed from x (the loss without dx: no row to store d);
 * d_of rounds as the stored path does, so both give the same bits. */
typedef struct view_src {
    const sg_row_view *v;
    const sg_row_scan *s;
    size_t n;
} view_src;

typedef set_sums above_fn(const void *src, double t);

static set_sums above_float(const void *src, double t) {
    const float_src *f = src;
    set_sums a = {0, 0.0, 0.0};
    for (size_t i = 0; i < f->n; i++) {
        double d = f->d[i];
        if (d > t) a.k++, a.s += d, a.s2 += d * d;
    }
    return a;
}

static set_sums above_view(const void *src, double t) {
    const view_src *w = src;
    set_sums a = {0, 0.0, 0.0};
    for (size_t i = 0; i < w->n; i++) {
        double d = d_of(w->v, w->s, i);
        if (d > t) a.k++, a.s += d, a.s2 += d * d;
    }
    return a;
}

/* tau(S) = (sum_S d - 1) / |S|: the threshold if S were the support. S
 * always holds the max (d = 0 > tau), so |S| >= 1. */
static inline double tau_of(set_sums a) { return (a.s - 1.0) / (double)a.k; }

/*
 * Bisection on tau with f(t) = sum_i max(d_i - t, 0) - 1, decreasing:
 * keeps f(lo) >= 0 > f(hi) and stops once no d_i lies in (lo, hi], where
 * {d > lo} is the support exactly; tau then comes from its formula. About
 * 53 + log2(N) passes at most (tau* <= -1/N), fewer when entries are apart.
 */
static tau_result bisect(above_fn *above, const void *src, double lo) {
    set_sums a = above(src, lo);
    if (a.s - (double)a.k * lo < 1.0) { /* rounding put lo past tau*: the sure bound */
        lo = -1.0;
        a = above(src, lo);
    }
    double hi = 0.0; /* f(0) = -1: every d <= 0 */
    size_t khi = 0;
    while (a.k != khi) {
        double mid = 0.5 * (lo + hi);
        if (mid <= lo || mid >= hi) break; /* adjacent doubles */
        set_sums m = above(src, mid);
        if (m.s - (double)m.k * mid >= 1.0) lo = mid, a = m;
        else hi = mid, khi = m.k;
    }
    tau_result r = {tau_of(a), a};
    return r;
}

/*
 * Michelot's iteration: S_0 = {d > -1} contains the support (the max alone
 * already gives tau >= -1), tau_t = tau(S_t), S_{t+1} = {d > tau_t}. Each
 * tau_t is a lower bound of tau* and they increase, so the sets shrink;
 * threshold sets are nested, so an unchanged count is an unchanged set,
 * and then tau_t is exact. After max_iter passes (reached only if
 * rounding ever made the iteration cycle), bisection finishes the job.
 */
static tau_result solve_tau(above_fn *above, const void *src, int max_iter) {
    set_sums cur = above(src, -1.0);
    double tau = tau_of(cur);
    for (int it = 0; it < max_iter; it++) {
        set_sums next = above(src, tau);
        if (next.k == cur.k) {
            tau_result r = {tau, next};
            return r;
        }
        cur = next;
        tau = tau_of(cur);
    }
    return bisect(above, src, tau);
}

/* solve_tau on a float array, each pass by the dispatched sums kernel
 * (branch-free, vectorized; its lane order of summation is its own, so
 * ISA levels may differ in the last bits of tau). */
static tau_result solve_tau_array(const float *d, size_t n) {
    const sg_sparse_kernels *kr = sg_sparse_kernels_get();
    sg_sparse_sums a;
    sg_sparse_sums_run(kr, n, d, 1.0, -1.0, &a);
    set_sums cur = {a.k, a.s1, a.s2};
    double tau = tau_of(cur);
    for (int it = 0; it < MICHELOT_MAX_ITER; it++) {
        sg_sparse_sums_run(kr, n, d, 1.0, tau, &a);
        set_sums next = {a.k, a.s1, a.s2};
        if (next.k == cur.k) {
            tau_result r = {tau, next};
            return r;
        }
        cur = next;
        tau = tau_of(cur);
    }
    float_src src = {d, n};
    return bisect(above_float, &src, tau);
}

/* Writes d of a finite row into out (the scratch) and solves for tau. */
static tau_result solve_in_row(const sg_row_view *v, const sg_row_scan *s, size_t n, float *out) {
    for (size_t i = 0; i < n; i++) out[i] = d_of(v, s, i);
    float_src src = {out, n};
    return solve_tau(above_float, &src, MICHELOT_MAX_ITER);
}

/*
 * Internal, for tests/test_sparsemax.c (declared there): tau of a row d
 * whose max is exactly 0 (d = z - max z, -inf for removed entries), with
 * Michelot's cap given; 0 forces the bisection path at once.
 */
double sg_sparsemax_tau_f32(const float *d, size_t n, int michelot_max_iter) {
    float_src src = {d, n};
    return solve_tau(above_float, &src, michelot_max_iter).tau;
}

/* ---- jobs and rows ------------------------------------------------------ */

typedef enum { OP_FORWARD, OP_BACKWARD, OP_LOSS } sm_op;

typedef struct sm_job {
    sm_op op;
    size_t rows, n, rows_per_task;
    const float *x; /* forward, loss: x; backward: y */
    size_t ldx;
    const float *dy; /* backward */
    size_t lddy;
    float *out; /* forward: y; backward, loss: dx (loss: may be NULL) */
    size_t ldo;
    const int32_t *target; /* loss */
    float *loss;
    double t;
    const uint8_t *keep;
    size_t keep_ld;
    const float *add;
    size_t add_ld;
    sg_sparse_short_rows_fn *short_rows; /* fetched once per call */
    sg_sparse_rowsm_fn *rowsm;           /* SIMD only, for n in (MID_OPS, ROWSM_OPS] */
} sm_job;

static sg_row_view view_of(const sm_job *j, size_t r) {
    sg_row_view v = {j->x + r * j->ldx, j->keep ? j->keep + r * j->keep_ld : NULL,
                  j->add ? j->add + r * j->add_ld : NULL, j->t};
    return v;
}

static void forward_row(const sm_job *j, size_t r) {
    const sg_row_view v = view_of(j, r);
    float *y = j->out + r * j->ldo;
    sg_row_scan s;
    sg_sparse_cands c;
    switch (sg_sparse_gather(&v, j->n, 1.0, SG_SPARSE_CAND_MAX, &s, &c, y)) {
    case SG_SPARSE_SPECIAL:
        for (size_t i = 0; i < j->n; i++) y[i] = special_p(&v, &s, i);
        return;
    case SG_SPARSE_FULL: {
        const double tau = solve_tau_array(y, j->n).tau;
        for (size_t i = 0; i < j->n; i++) y[i] = y[i] > tau ? (float)(y[i] - tau) : 0.0f;
        return;
    }
    case SG_SPARSE_CANDS: {
        const double tau = solve_tau_array(c.d, c.m).tau;
        memset(y, 0, j->n * sizeof *y);
        for (size_t q = 0; q < c.m; q++) /* branch-free: d > tau iff d - tau > 0 */
            y[c.idx[q]] = (float)sg_relu((double)c.d[q] - tau);
        return;
    }
    }
}

/* dx on the support S = {kept i: y_i > 0}: (dy_i - mean_S dy) / T; 0
 * elsewhere, whatever dy holds there. A kept NaN in y makes the row NaN. */
static void backward_row(const sm_job *j, size_t r) {
    const sg_row_view v = view_of(j, r); /* v.x is y here */
    const float *y = v.x, *dy = j->dy + r * j->lddy;
    float *dx = j->out + r * j->ldo;
    double s = 0.0;
    size_t k = 0, nan = 0;
    for (size_t i = 0; i < j->n; i++) {
        if (sg_row_removed(&v, i)) continue;
        if (isnan(y[i])) nan++;
        else if (y[i] > 0.0f) s += dy[i], k++;
    }
    const double mean = k ? s / (double)k : 0.0;
    for (size_t i = 0; i < j->n; i++) {
        if (sg_row_removed(&v, i)) dx[i] = 0.0f;
        else if (nan) dx[i] = NAN;
        else dx[i] = y[i] > 0.0f ? (float)((dy[i] - mean) / j->t) : 0.0f;
    }
}

/* Loss of a special row: NaN; +inf entries: 1/2 - 1/(2c) when the target
 * is one of them (the limit of the finite formula), else +inf. Then
 * dx = (p - onehot) / T from the forward table. */
static float special_loss_row(const sm_job *j, const sg_row_view *v, const sg_row_scan *s, size_t k,
                              float *dx) {
    float loss = INFINITY;
    if (s->nan) loss = NAN;
    else if (s->posinf && sg_row_z_class(v, k) == 1) loss = (float)(0.5 - 0.5 / (double)s->posinf);
    /* loss is known before dx is written: dx may be x itself */
    for (size_t i = 0; dx && i < j->n; i++)
        dx[i] = (float)(((double)special_p(v, s, i) - (i == k)) / j->t);
    return loss;
}

/* L = -d_k + 1/2 sum_S (d_j^2 - tau^2) + 1/2 with d = z - z_b: the
 * paper's loss, shift-invariant, so z_b never enters (no overflow). */
static float loss_row(const sm_job *j, size_t r) {
    const sg_row_view v = view_of(j, r);
    const sg_row_scan s = sg_row_scan_f32(&v, j->n);
    const size_t k = (size_t)j->target[r];
    float *dx = j->out ? j->out + r * j->ldo : NULL;
    if (special(&s)) return special_loss_row(j, &v, &s, k, dx);
    /* d_k in double, read before dx (possibly x itself) is overwritten */
    const double dk = v.x[k] == -INFINITY ? -INFINITY : sg_row_z_minus(&v, k, s.xb, s.ab);
    tau_result tr;
    if (dx) {
        tr = solve_in_row(&v, &s, j->n, dx);
        for (size_t i = 0; i < j->n; i++) {
            double p = dx[i] > tr.tau ? (double)(float)(dx[i] - tr.tau) : 0.0;
            dx[i] = (float)((p - (i == k)) / j->t);
        }
    } else {
        view_src src = {&v, &s, j->n};
        tr = solve_tau(above_view, &src, MICHELOT_MAX_ITER);
    }
    double q = 0.5 * (tr.set.s2 - (double)tr.set.k * tr.tau * tr.tau);
    double loss = q - dk + 0.5;
    /* The loss is >= 0; when the target is the max the terms cancel and
     * rounding can leave -1e-10. (A NaN compares false and stays NaN.) */
    if (loss < 0.0) loss = 0.0;
    return (float)loss;
}

/* Short unmasked rows (n <= 32, or n <= 64 with a SIMD mid_rows kernel;
 * T = 1): the sort-free kernel over blocks of rows; the rows it does not
 * take (NaN/inf, or the exact check failed) go to forward_row. */
static int short_ok(const sm_job *j) {
    return j->op == OP_FORWARD && j->short_rows && !j->keep && !j->add && j->t == 1.0;
}

static void forward_short(const sm_job *j, size_t r0, size_t r1) {
    uint8_t taken[64];
    for (size_t r = r0; r < r1; r += 64) {
        const size_t nb = r1 - r < 64 ? r1 - r : 64;
        j->short_rows(nb, j->n, j->x + r * j->ldx, j->ldx, j->out + r * j->ldo, j->ldo, 0, taken);
        for (size_t q = 0; q < nb; q++)
            if (!taken[q]) forward_row(j, r + q);
    }
}

/* Unmasked rows of SG_SPARSE_MID_OPS < n <= SG_SPARSE_ROWSM_OPS (T = 1)
 * where a SIMD rowsm kernel is installed: the fused row kernel, the bits
 * of forward_row (sparse_kernels.h); the rows it declines go there. */
static int rowsm_ok(const sm_job *j) {
    return j->op == OP_FORWARD && j->rowsm && !j->keep && !j->add && j->t == 1.0;
}

static void forward_rowsm(const sm_job *j, size_t r0, size_t r1) {
    uint8_t taken[64];
    for (size_t r = r0; r < r1; r += 64) {
        const size_t nb = r1 - r < 64 ? r1 - r : 64;
        j->rowsm(nb, j->n, j->x + r * j->ldx, j->ldx, j->out + r * j->ldo, j->ldo, taken);
        for (size_t q = 0; q < nb; q++)
            if (!taken[q]) forward_row(j, r + q);
    }
}

static void run_rows(const sm_job *j, size_t r0, size_t r1) {
    if (short_ok(j)) {
        forward_short(j, r0, r1);
        return;
    }
    if (rowsm_ok(j)) {
        forward_rowsm(j, r0, r1);
        return;
    }
    for (size_t r = r0; r < r1; r++) {
        switch (j->op) {
        case OP_FORWARD: forward_row(j, r); break;
        case OP_BACKWARD: backward_row(j, r); break;
        case OP_LOSS: j->loss[r] = loss_row(j, r); break;
        }
    }
}

static void rows_task(void *arg, size_t t) {
    const sm_job *j = arg;
    size_t r0 = t * j->rows_per_task, r1 = r0 + j->rows_per_task;
    run_rows(j, r0, r1 < j->rows ? r1 : j->rows);
}

/* Rows go to tasks of fixed size; a row's bits never depend on which
 * thread computes it, so every thread count gives the same result. */
static void run_job(sg_context *ctx, sm_job *j, size_t rows, size_t n,
                    const sg_softmax_options *o) {
    j->rows = rows;
    j->n = n;
    j->t = o->temperature;
    j->keep = o->keep_mask;
    j->keep_ld = o->keep_mask_ld;
    j->add = o->add_mask;
    j->add_ld = o->add_mask_ld;
    j->rows_per_task = sg_rows_per_task(n);
    j->short_rows = sg_sparse_rows_kernel(n);
    j->rowsm = NULL;
    if (!j->short_rows && n > SG_SPARSE_MID_OPS && n <= SG_SPARSE_ROWSM_OPS &&
        sg_sparse_kernels_get()->isa[SG_SPARSE_SLOT_rowsm] > SG_ISA_REF)
        j->rowsm = sg_sparse_kernels_get()->rowsm;
    if (ctx->threads == 1 || rows * n < SG_PARALLEL_MIN_ELEMS) run_rows(j, 0, rows);
    else sg_parallel_for(ctx, (rows + j->rows_per_task - 1) / j->rows_per_task, rows_task, j);
}

/* ---- public ops --------------------------------------------------------- */

sg_status sg_sparsemax_f32(sg_context *ctx, size_t rows, size_t n, const float *x, size_t ldx,
                           float *y, size_t ldy, const sg_softmax_options *options) {
    static const char name[] = "sg_sparsemax_f32";
    if (!ctx) return SG_ERR_ARGUMENT;
    sg_ok(ctx);
    sg_softmax_options o = options ? *options : sg_softmax_options_default();
    float c;
    sg_status st = sg_check_forward(ctx, name, SG_OP_SOFTMAX, rows, n, x, ldx, y, ldy, &o, 0, &c);
    if (st != SG_OK || rows == 0 || n == 0) return st;
    sm_job j = {0};
    j.op = OP_FORWARD;
    j.x = x;
    j.ldx = ldx;
    j.out = y;
    j.ldo = ldy;
    run_job(ctx, &j, rows, n, &o);
    return SG_OK;
}

sg_status sg_sparsemax_backward_f32(sg_context *ctx, size_t rows, size_t n, const float *y,
                                    size_t ldy, const float *dy, size_t lddy, float *dx,
                                    size_t lddx, const sg_softmax_options *options) {
    static const char name[] = "sg_sparsemax_backward_f32";
    if (!ctx) return SG_ERR_ARGUMENT;
    sg_ok(ctx);
    sg_softmax_options o = options ? *options : sg_softmax_options_default();
    float c;
    sg_status st = sg_check_backward(ctx, name, rows, n, y, ldy, dy, lddy, dx, lddx, &o, &c);
    if (st != SG_OK || rows == 0 || n == 0) return st;
    sm_job j = {0};
    j.op = OP_BACKWARD;
    j.x = y;
    j.ldx = ldy;
    j.dy = dy;
    j.lddy = lddy;
    j.out = dx;
    j.ldo = lddx;
    run_job(ctx, &j, rows, n, &o);
    return SG_OK;
}

sg_status sg_sparsemax_loss_f32(sg_context *ctx, size_t rows, size_t n, const float *x, size_t ldx,
                                const int32_t *target, float *loss, float *dx, size_t lddx,
                                const sg_softmax_options *options) {
    static const char name[] = "sg_sparsemax_loss_f32";
    if (!ctx) return SG_ERR_ARGUMENT;
    sg_ok(ctx);
    sg_softmax_options o = options ? *options : sg_softmax_options_default();
    float c;
    sg_status st = sg_check_class_loss(ctx, name, rows, n, x, ldx, target, loss, dx, lddx, &o, &c);
    if (st != SG_OK || rows == 0) return st;
    sm_job j = {0};
    j.op = OP_LOSS;
    j.x = x;
    j.ldx = ldx;
    j.out = dx;
    j.ldo = lddx;
    j.target = target;
    j.loss = loss;
    run_job(ctx, &j, rows, n, &o);
    return SG_OK;
}

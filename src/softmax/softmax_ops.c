/*
 * softmax_ops.c - the public forward ops of the softmax core (float32):
 * argument checks, the three algorithms over whole rows, rows split across
 * threads, and long rows split into fixed chunks within the row.
 *
 * Determinism: how a row is computed depends only on its length and the
 * options, never on the thread count. Rows of at least SPLIT_N elements are
 * always cut into the same chunks, whose partial results are combined in
 * chunk order, so 1 and 64 threads give the same bits.
 */
#include <math.h>
#include <stdint.h>

#include "softmax/softmax_internal.h"

/* Block of the online normalizer: read from memory once, twice from L1. */
#define ONLINE_BLOCK 4096
/* Two-pass domain: |x / T| <= this keeps k = round(x log2 e) exact. */
#define TWO_PASS_LIMIT 1.0e7
/*
 * AUTO: three-pass while the row fits in the last-level cache between its
 * passes (then memory sees one read and one write, and each exponential is
 * computed once), two-pass above (two reads and one write, no max pass).
 * Measured with `softgate bench softmax` on Zen 4 (BENCHMARKS.md): three-
 * pass is fastest up to n = 1M on 1 and 2 threads; at n = 16M two-pass is
 * 1.23x three-pass on 2 threads. The choice depends on n alone, never on the
 * thread count, so results stay identical for every thread count.
 */
#define AUTO_THREE_PASS_MAX_N ((size_t)1 << 22)
#define AUTO_LONG_ALGORITHM SG_SOFTMAX_TWO_PASS

const char *sg_softmax_algorithm_name(sg_softmax_algorithm a) {
    switch (a) {
    case SG_SOFTMAX_AUTO: return "auto";
    case SG_SOFTMAX_THREE_PASS: return "three_pass";
    case SG_SOFTMAX_TWO_PASS: return "two_pass";
    case SG_SOFTMAX_ONLINE: return "online";
    }
    return "unknown";
}

sg_softmax_options sg_softmax_options_default(void) {
    sg_softmax_options o = {1.0f, SG_SOFTMAX_AUTO, NULL, 0, NULL, 0};
    return o;
}

static inline int is_finite(float v) { return v - v == 0.0f; }

/* ---- argument checks (shared with backward and f64 ops) --------------- */

sg_status sg_check_matrix(sg_context *ctx, const char *op, const char *name,
                          const void *p, size_t rows, size_t n, size_t ld) {
    if (rows == 0 || n == 0) return SG_OK;
    if (!p) return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: %s is NULL", op, name);
    if (ld < n)
        return sg_fail(ctx, SG_ERR_SHAPE, "%s: row stride of %s (%zu) is less than n (%zu)",
                       op, name, ld, n);
    if ((rows - 1) > (SIZE_MAX / 8 - n) / ld)
        return sg_fail(ctx, SG_ERR_SHAPE, "%s: %s of %zu rows with stride %zu overflows the address space",
                       op, name, rows, ld);
    return SG_OK;
}

sg_status sg_check_class_loss(sg_context *ctx, const char *name, size_t rows, size_t n,
                              const float *x, size_t ldx, const int32_t *target,
                              const float *loss, const float *dx, size_t lddx,
                              const sg_softmax_options *o, float *c) {
    sg_status st = sg_check_options(ctx, name, rows, n, o, 0, c);
    if (st == SG_OK) st = sg_check_matrix(ctx, name, "x", x, rows, n, ldx);
    if (st == SG_OK) st = sg_check_matrix(ctx, name, "target", target, rows, 1, 1);
    if (st == SG_OK) st = sg_check_matrix(ctx, name, "loss", loss, rows, 1, 1);
    if (st == SG_OK && dx) st = sg_check_matrix(ctx, name, "dx", dx, rows, n, lddx);
    if (st == SG_OK && dx == x && lddx != ldx && rows > 1)
        st = sg_fail(ctx, SG_ERR_SHAPE, "%s: in place (dx == x) needs lddx == ldx (%zu != %zu)", name,
                     lddx, ldx);
    const float *add = o->add_mask;
    for (size_t r = 0; st == SG_OK && r < rows; r++) {
        int32_t k = target[r];
        if (k < 0 || (size_t)k >= n)
            return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: target[%zu] = %ld is outside [0, %zu)", name, r,
                           (long)k, n);
        if ((o->keep_mask && !o->keep_mask[r * o->keep_mask_ld + (size_t)k]) ||
            (add && add[r * o->add_mask_ld + (size_t)k] == -INFINITY))
            return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: target[%zu] = %ld is removed by the mask", name,
                           r, (long)k);
    }
    return st;
}

sg_status sg_check_options(sg_context *ctx, const char *op, size_t rows, size_t n,
                           const sg_softmax_options *o, int uses_algorithm, float *c) {
    if (!(o->temperature > 0.0f) || !is_finite(o->temperature))
        return sg_fail(ctx, SG_ERR_ARGUMENT,
                       "%s: temperature must be finite and > 0 (got %g)", op, (double)o->temperature);
    if (uses_algorithm && (unsigned)o->algorithm > (unsigned)SG_SOFTMAX_ONLINE)
        return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: unknown algorithm %d", op, (int)o->algorithm);
    if (o->keep_mask && o->keep_mask_ld != 0 && o->keep_mask_ld < n)
        return sg_fail(ctx, SG_ERR_SHAPE, "%s: keep_mask_ld (%zu) must be 0 (broadcast) or >= n (%zu)",
                       op, o->keep_mask_ld, n);
    if (o->add_mask && o->add_mask_ld != 0 && o->add_mask_ld < n)
        return sg_fail(ctx, SG_ERR_SHAPE, "%s: add_mask_ld (%zu) must be 0 (broadcast) or >= n (%zu)",
                       op, o->add_mask_ld, n);
    sg_status st = SG_OK;
    if (o->keep_mask && o->keep_mask_ld)
        st = sg_check_matrix(ctx, op, "keep_mask", o->keep_mask, rows, n, o->keep_mask_ld);
    if (st == SG_OK && o->add_mask && o->add_mask_ld)
        st = sg_check_matrix(ctx, op, "add_mask", o->add_mask, rows, n, o->add_mask_ld);
    if (st != SG_OK) return st;
    float inv = 1.0f / o->temperature;
    if (!is_finite(inv))
        return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: temperature %g is too small (1/T overflows)",
                       op, (double)o->temperature);
    *c = inv;
    return SG_OK;
}

/* ---- whole rows, one thread ------------------------------------------ */

/* Online statistics of x[0..n): 1 ok, 0 all -inf, -1 needs the exact path
 * (+inf or NaN max). *sum is relative to *max. */
static int online_stats(const sg_kernels *k, size_t n, const float *x, float c,
                        float *max, double *sum) {
    float m = -INFINITY;
    double s = 0.0;
    for (size_t i = 0; i < n; i += ONLINE_BLOCK) {
        size_t len = n - i < ONLINE_BLOCK ? n - i : ONLINE_BLOCK;
        float bm = k->rmax(len, x + i);
        if (bm == -INFINITY) continue;
        if (!is_finite(bm)) return -1;
        if (bm > m) {
            s *= exp(((double)m - bm) * c); /* rescale once per new max */
            m = bm;
        }
        s += k->expsum(len, x + i, m, c);
    }
    if (m == -INFINITY) return 0;
    *max = m;
    *sum = s;
    return 1;
}

/* Writes the output from (max, sum of exp((x - max) c)). */
static void finish_from_max_sum(const sg_fwd_job *j, size_t n, const float *x, float *out,
                                float max, double sum) {
    switch (j->op) {
    case SG_OP_SOFTMAX: j->k->expscale_store(n, x, out, max, j->c, (float)(1.0 / sum)); break;
    case SG_OP_LOG_SOFTMAX: j->k->shift_store(n, x, out, max, j->c, (float)log(sum)); break;
    case SG_OP_LOGSUMEXP: *out = (float)((double)max / j->temperature + log(sum)); break;
    }
}

static int row_three_pass(const sg_fwd_job *j, const float *x, float *out) {
    const sg_kernels *k = j->k;
    const size_t n = j->n;
    float mx = k->rmax(n, x);
    if (!is_finite(mx)) return 0;
    if (j->op == SG_OP_SOFTMAX) {
        double s = k->expsum_store(n, x, out, mx, j->c);
        k->scale(n, out, out, (float)(1.0 / s));
    } else if (j->op == SG_OP_LOG_SOFTMAX) {
        /* Write (x - max) c while summing, then subtract log(sum) in place:
         * the writes overlap the exponentials, as in softmax. */
        double s = k->shiftexpsum_store(n, x, out, mx, j->c);
        k->shift_store(n, out, out, 0.0f, 1.0f, (float)log(s));
    } else {
        finish_from_max_sum(j, n, x, out, mx, k->expsum(n, x, mx, j->c));
    }
    return 1;
}

static int ext_in_domain(const sg_extsum *e, float c) {
    return is_finite(e->max) && is_finite(e->min) && fabs((double)e->max * c) <= TWO_PASS_LIMIT &&
           fabs((double)e->min * c) <= TWO_PASS_LIMIT && isfinite(e->m) && e->m > 0.0;
}

/* Writes the output of a row (or chunk) from its extended-exponent sum. */
static void finish_from_ext(const sg_fwd_job *j, size_t n, const float *x, float *out,
                            const sg_extsum *e) {
    const double log_sum = log(e->m) + e->e * 0.69314718055994530942;
    switch (j->op) {
    case SG_OP_SOFTMAX: j->k->extexp_store(n, x, out, j->c, (float)(1.0 / e->m), (float)e->e); break;
    case SG_OP_LOG_SOFTMAX:
        /* Subtract max*c in double so large offsets do not cancel in float. */
        j->k->shift_store(n, x, out, e->max, j->c, (float)(log_sum - (double)e->max * j->c));
        break;
    case SG_OP_LOGSUMEXP: *out = (float)log_sum; break;
    }
}

static int row_two_pass(const sg_fwd_job *j, const float *x, float *out) {
    sg_extsum e;
    j->k->extexp_sum(j->n, x, j->c, &e);
    if (!ext_in_domain(&e, j->c)) return row_three_pass(j, x, out);
    finish_from_ext(j, j->n, x, out, &e);
    return 1;
}

static int row_online(const sg_fwd_job *j, const float *x, float *out) {
    float mx;
    double s;
    if (online_stats(j->k, j->n, x, j->c, &mx, &s) != 1) return 0;
    finish_from_max_sum(j, j->n, x, out, mx, s);
    return 1;
}

static void fwd_row(const sg_fwd_job *j, size_t r) {
    if (sg_job_exact(j)) {
        sg_masked_row(j, r);
        return;
    }
    const float *x = j->x + r * j->ldx;
    float *out = sg_job_out(j, r);
    int ok = 0;
    switch (j->algorithm) {
    case SG_SOFTMAX_TWO_PASS: ok = row_two_pass(j, x, out); break;
    case SG_SOFTMAX_ONLINE: ok = row_online(j, x, out); break;
    default: ok = row_three_pass(j, x, out); break;
    }
    if (!ok) sg_masked_row(j, r); /* inf or NaN: the exact path */
}

/* ---- rows across threads ---------------------------------------------- */

typedef struct rows_task {
    const sg_fwd_job *j;
    size_t rows_per_task;
} rows_task;

static int uses_short_kernel(const sg_fwd_job *j) {
    return !sg_job_exact(j) && j->algorithm == SG_SOFTMAX_THREE_PASS &&
           j->n > 0 && j->n <= j->k->softmax_short_max_n;
}

static void run_rows(const sg_fwd_job *j, size_t r0, size_t r1) {
    if (!uses_short_kernel(j)) {
        for (size_t r = r0; r < r1; r++) fwd_row(j, r);
        return;
    }
    for (size_t r = r0; r < r1;) {
        static const int modes[] = {[SG_OP_SOFTMAX] = SG_SHORT_SOFTMAX,
                                    [SG_OP_LOG_SOFTMAX] = SG_SHORT_LOG_SOFTMAX,
                                    [SG_OP_LOGSUMEXP] = SG_SHORT_LOGSUMEXP};
        r += j->k->softmax_short(r1 - r, j->n, j->x + r * j->ldx, j->ldx, sg_job_out(j, r),
                                 j->op == SG_OP_LOGSUMEXP ? 1 : j->ldy, j->c, j->temperature,
                                 modes[j->op]);
        if (r < r1) sg_masked_row(j, r++); /* the row the kernel stopped at */
    }
}

static void rows_task_fn(void *arg, size_t t) {
    const rows_task *rt = arg;
    size_t r0 = t * rt->rows_per_task;
    size_t r1 = r0 + rt->rows_per_task < rt->j->rows ? r0 + rt->rows_per_task : rt->j->rows;
    run_rows(rt->j, r0, r1);
}

/* ---- one long row in fixed chunks ------------------------------------- */

typedef struct chunk_part {
    sg_extsum ext;
    double sum;
    float max;
    int state; /* online: 1 ok, 0 all -inf, -1 exact path needed */
} chunk_part;

typedef enum { PHASE_MAX, PHASE_EXPSUM, PHASE_WRITE, PHASE_ONLINE, PHASE_EXT } chunk_phase;

typedef struct split_job {
    const sg_fwd_job *j;
    const float *x;
    float *out;
    size_t chunk, chunks, groups;
    chunk_phase phase;
    float max; /* combined statistics, for the write phase */
    double sum;
    sg_extsum ext;
    int use_ext;    /* write from ext (two-pass) */
    int stored_exp; /* out already holds exp((x - max) c): only scale it */
    chunk_part *parts;
} split_job;

static void split_task_fn(void *arg, size_t t) {
    split_job *s = arg;
    const sg_fwd_job *j = s->j;
    const sg_kernels *k = j->k;
    size_t i0 = t * s->chunk, len = j->n - i0 < s->chunk ? j->n - i0 : s->chunk;
    const float *x = s->x + i0;
    chunk_part *p = &s->parts[t];
    switch (s->phase) {
    case PHASE_MAX: p->max = k->rmax(len, x); break;
    case PHASE_EXPSUM:
        p->sum = j->op == SG_OP_SOFTMAX ? k->expsum_store(len, x, s->out + i0, s->max, j->c)
                                        : k->expsum(len, x, s->max, j->c);
        break;
    case PHASE_ONLINE: p->state = online_stats(k, len, x, j->c, &p->max, &p->sum); break;
    case PHASE_EXT: k->extexp_sum(len, x, j->c, &p->ext); break;
    case PHASE_WRITE:
        if (s->use_ext) finish_from_ext(j, len, x, s->out + i0, &s->ext);
        else if (s->stored_exp)
            k->scale(len, s->out + i0, s->out + i0, (float)(1.0 / s->sum));
        else finish_from_max_sum(j, len, x, s->out + i0, s->max, s->sum);
        break;
    }
}

/* One task per thread, each a contiguous range of chunks: the caller's
 * thread usually claims range 0 in every phase, so a chunk tends to stay in
 * the cache of the core that touched it in the previous phase (which the
 * three-pass algorithm relies on). Which thread runs a range never changes
 * the result: each chunk's partial is stored in its own slot. */
static void split_group_fn(void *arg, size_t g) {
    split_job *s = arg;
    size_t c0 = g * s->chunks / s->groups, c1 = (g + 1) * s->chunks / s->groups;
    for (size_t t = c0; t < c1; t++) split_task_fn(s, t);
}

static void run_phase(sg_context *ctx, split_job *s, chunk_phase phase) {
    s->phase = phase;
    sg_parallel_for(ctx, s->groups, split_group_fn, s);
}

/* Three-pass over chunks; returns 0 if the row needs the exact path. */
static int split_three_pass(sg_context *ctx, split_job *s) {
    run_phase(ctx, s, PHASE_MAX);
    float mx = -INFINITY;
    for (size_t t = 0; t < s->chunks; t++) mx = s->parts[t].max > mx ? s->parts[t].max : mx;
    if (!is_finite(mx)) return 0;
    s->max = mx;
    run_phase(ctx, s, PHASE_EXPSUM);
    double sum = 0.0;
    for (size_t t = 0; t < s->chunks; t++) sum += s->parts[t].sum;
    s->sum = sum;
    if (s->j->op == SG_OP_LOGSUMEXP) {
        finish_from_max_sum(s->j, 0, s->x, s->out, mx, sum);
        return 1;
    }
    s->stored_exp = s->j->op == SG_OP_SOFTMAX;
    run_phase(ctx, s, PHASE_WRITE);
    return 1;
}

static int split_online(sg_context *ctx, split_job *s) {
    run_phase(ctx, s, PHASE_ONLINE);
    float mx = -INFINITY;
    for (size_t t = 0; t < s->chunks; t++) {
        if (s->parts[t].state < 0) return 0;
        if (s->parts[t].state == 1 && s->parts[t].max > mx) mx = s->parts[t].max;
    }
    if (mx == -INFINITY) return 0;
    double sum = 0.0;
    for (size_t t = 0; t < s->chunks; t++)
        if (s->parts[t].state == 1)
            sum += s->parts[t].sum * exp(((double)s->parts[t].max - mx) * s->j->c);
    s->max = mx;
    s->sum = sum;
    if (s->j->op == SG_OP_LOGSUMEXP) {
        finish_from_max_sum(s->j, 0, s->x, s->out, mx, sum);
        return 1;
    }
    run_phase(ctx, s, PHASE_WRITE);
    return 1;
}

static int split_two_pass(sg_context *ctx, split_job *s) {
    run_phase(ctx, s, PHASE_EXT);
    sg_extsum all = {0.0, -INFINITY, -INFINITY, INFINITY};
    for (size_t t = 0; t < s->chunks; t++) {
        const sg_extsum *e = &s->parts[t].ext;
        if (!ext_in_domain(e, s->j->c)) return split_three_pass(ctx, s);
        all.e = e->e > all.e ? e->e : all.e;
        all.max = e->max > all.max ? e->max : all.max;
        all.min = e->min < all.min ? e->min : all.min;
    }
    for (size_t t = 0; t < s->chunks; t++)
        all.m += ldexp(s->parts[t].ext.m, (int)(s->parts[t].ext.e - all.e));
    s->ext = all;
    if (s->j->op == SG_OP_LOGSUMEXP) {
        finish_from_ext(s->j, 0, s->x, s->out, &all);
        return 1;
    }
    s->use_ext = 1;
    run_phase(ctx, s, PHASE_WRITE);
    return 1;
}

static void split_row(sg_context *ctx, const sg_fwd_job *j, size_t r) {
    split_job s = {0};
    s.j = j;
    s.x = j->x + r * j->ldx;
    s.out = sg_job_out(j, r);
    s.chunks = sg_chunking(j->n, &s.chunk);
    s.groups = (size_t)ctx->threads < s.chunks ? (size_t)ctx->threads : s.chunks;
    s.parts = ctx->scratch;
    int ok;
    switch (j->algorithm) {
    case SG_SOFTMAX_TWO_PASS: ok = split_two_pass(ctx, &s); break;
    case SG_SOFTMAX_ONLINE: ok = split_online(ctx, &s); break;
    default: ok = split_three_pass(ctx, &s); break;
    }
    if (!ok) sg_masked_row(j, r);
}

_Static_assert(SG_MAX_CHUNKS * sizeof(chunk_part) <= SG_SCRATCH_BYTES,
               "chunk partials must fit the context's scratch");

/* ---- the public forward ops ------------------------------------------- */

sg_status sg_check_forward(sg_context *ctx, const char *name, sg_fwd_op op, size_t rows, size_t n,
                           const void *x, size_t ldx, const void *y, size_t ldy,
                           const sg_softmax_options *o, int uses_algorithm, float *c) {
    sg_status st = sg_check_options(ctx, name, rows, n, o, uses_algorithm, c);
    if (st == SG_OK) st = sg_check_matrix(ctx, name, "x", x, rows, n, ldx);
    if (st == SG_OK && op == SG_OP_LOGSUMEXP) st = sg_check_matrix(ctx, name, "lse", y, rows, 1, 1);
    else if (st == SG_OK) st = sg_check_matrix(ctx, name, "y", y, rows, n, ldy);
    if (st == SG_OK && op != SG_OP_LOGSUMEXP && x == y && ldx != ldy && rows > 1)
        st = sg_fail(ctx, SG_ERR_SHAPE, "%s: in place (y == x) needs ldy == ldx (%zu != %zu)", name,
                     ldy, ldx);
    return st;
}

static sg_status forward(sg_context *ctx, const char *name, sg_fwd_op op, size_t rows, size_t n,
                         const float *x, size_t ldx, float *y, size_t ldy,
                         const sg_softmax_options *options) {
    if (!ctx) return SG_ERR_ARGUMENT;
    sg_ok(ctx);
    sg_softmax_options o = options ? *options : sg_softmax_options_default();
    sg_fwd_job j = {0};
    sg_status st = sg_check_forward(ctx, name, op, rows, n, x, ldx, y, ldy, &o, 1, &j.c);
    if (st != SG_OK) return st;
    if (rows == 0) return SG_OK;
    if (n == 0) { /* empty rows: nothing to write but logsumexp's -inf */
        if (op == SG_OP_LOGSUMEXP)
            for (size_t r = 0; r < rows; r++) y[r] = -INFINITY;
        return SG_OK;
    }
    j.k = sg_kernels_get();
    j.op = op;
    j.algorithm = o.algorithm != SG_SOFTMAX_AUTO ? o.algorithm
                  : n <= AUTO_THREE_PASS_MAX_N   ? SG_SOFTMAX_THREE_PASS
                                                 : AUTO_LONG_ALGORITHM;
    j.rows = rows;
    j.n = n;
    j.x = x;
    j.ldx = ldx;
    j.y = y;
    j.ldy = ldy;
    j.temperature = o.temperature;
    j.keep = o.keep_mask;
    j.keep_ld = o.keep_mask_ld;
    j.add = o.add_mask;
    j.add_ld = o.add_mask_ld;

    if (n >= SG_SPLIT_N && !sg_job_exact(&j)) {
        for (size_t r = 0; r < rows; r++) split_row(ctx, &j, r);
        return SG_OK;
    }
    rows_task rt = {&j, sg_rows_per_task(n)};
    if (ctx->threads == 1 || rows * n < SG_PARALLEL_MIN_ELEMS) run_rows(&j, 0, rows);
    else sg_parallel_for(ctx, (rows + rt.rows_per_task - 1) / rt.rows_per_task, rows_task_fn, &rt);
    return SG_OK;
}

sg_status sg_softmax_f32(sg_context *ctx, size_t rows, size_t n, const float *x, size_t ldx,
                         float *y, size_t ldy, const sg_softmax_options *options) {
    return forward(ctx, "sg_softmax_f32", SG_OP_SOFTMAX, rows, n, x, ldx, y, ldy, options);
}

sg_status sg_log_softmax_f32(sg_context *ctx, size_t rows, size_t n, const float *x, size_t ldx,
                             float *y, size_t ldy, const sg_softmax_options *options) {
    return forward(ctx, "sg_log_softmax_f32", SG_OP_LOG_SOFTMAX, rows, n, x, ldx, y, ldy, options);
}

sg_status sg_logsumexp_f32(sg_context *ctx, size_t rows, size_t n, const float *x, size_t ldx,
                           float *lse, const sg_softmax_options *options) {
    return forward(ctx, "sg_logsumexp_f32", SG_OP_LOGSUMEXP, rows, n, x, ldx, lse, 1, options);
}

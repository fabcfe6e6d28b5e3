/*
 * softmax_topk.c - fused softmax + top-k (Milakov and Gimelshein, "Online
 * normalizer calculation for softmax", 2018, section on the fused
 * softmax + top-k): per row, one pass over x in blocks of BLOCK elements;
 * each block is first merged into the running top-k buffer by the
 * family's topk_scan kernel (most elements cost a vector max and a vector
 * compare), which also returns the block's max, then summed by the softmax
 * core's expsum kernel while it is still in L1, the running sum rescaled
 * when the max grows. Only the k winners' probabilities are
 * formed. Masked rows and rows with inf or NaN take an exact path
 * (z - max z in double, as softmax_masked.c).
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>

#include "losses/losses_internal.h"

/* 16 KiB of floats: scanned, then summed, from L1. */
#define BLOCK 4096
/* Buffers up to this k live on the stack; larger k allocate per call. */
#define STACK_K 256
#define ZBLOCK 1024

typedef struct topk_job {
    const sg_kernels *k;
    sg_topk_scan_fn *scan;
    size_t rows, n, kk;
    const float *x;
    size_t ldx;
    int32_t *index;
    size_t ldi;
    float *prob;
    size_t ldp;
    double t;
    float c;
    const uint8_t *keep;
    size_t keep_ld;
    const float *add;
    size_t add_ld;
    size_t rows_per_task, groups;
    double *heap_val; /* k > STACK_K: groups * kk values, then indices */
    int32_t *heap_idx;
} topk_job;

static void write_row(const topk_job *j, size_t r, sg_topk_buf *b, double m, double s,
                      int special) {
    int32_t *ix = j->index + r * j->ldi;
    float *pr = j->prob ? j->prob + r * j->ldp : NULL;
    sg_topk_finish(b);
    for (size_t q = 0; q < j->kk; q++) {
        if (q >= b->count) {
            ix[q] = -1;
            if (pr) pr[q] = 0.0f;
            continue;
        }
        ix[q] = b->idx[q];
        if (!pr) continue;
        double v = b->val[q];
        switch (special) {
        case 1: pr[q] = NAN; break;                                   /* NaN row */
        case 2: pr[q] = v == DBL_MAX ? (float)(1.0 / s) : 0.0f; break; /* s = count of +inf */
        case 3: pr[q] = 0.0f; break;                                  /* nothing finite */
        default: pr[q] = (float)(exp((v - m) / j->t) / s); break;
        }
    }
}

/* The exact path: keys d = z - z_b in double over kept entries; NaN ranks
 * first (+inf key), then +inf (DBL_MAX), finite d <= 0, -inf. */
static void exact_row(const topk_job *j, size_t r, sg_topk_buf *b) {
    sg_row_view v = {j->x + r * j->ldx, j->keep ? j->keep + r * j->keep_ld : NULL,
                     j->add ? j->add + r * j->add_ld : NULL, j->t};
    const size_t n = j->n;
    const sg_row_scan s = sg_row_scan_f32(&v, n);
    sg_topk_reset(b, j->kk, b->val, b->idx);
    for (size_t i = 0; i < n; i++) {
        if (sg_row_removed(&v, i)) continue;
        double key;
        switch (sg_row_z_class(&v, i)) {
        case 2: key = INFINITY; break;
        case 1: key = DBL_MAX; break;
        case -1: key = -INFINITY; break;
        default: key = sg_row_z_minus(&v, i, s.xb, s.ab); break;
        }
        if (b->count < b->k || key > b->thr) sg_topk_insert(b, key, (int32_t)i);
    }
    if (s.nan || s.posinf || !s.finite) {
        write_row(j, r, b, 0.0, (double)s.posinf, s.nan ? 1 : s.posinf ? 2 : 3);
        return;
    }
    float d[ZBLOCK];
    double sum = 0.0;
    for (size_t i = 0; i < n; i += ZBLOCK) {
        size_t len = n - i < ZBLOCK ? n - i : ZBLOCK;
        for (size_t q = 0; q < len; q++)
            d[q] = sg_row_removed(&v, i + q) || v.x[i + q] == -INFINITY
                       ? -INFINITY
                       : (float)sg_row_z_minus(&v, i + q, s.xb, s.ab);
        sum += j->k->expsum(len, d, 0.0f, 1.0f);
    }
    /* keys are z - z_b already: m = 0, and T is applied: divide by 1 */
    topk_job unit = *j;
    unit.t = 1.0;
    write_row(&unit, r, b, 0.0, sum, 0);
}

/* The fused pass; returns 0 when the row needs the exact path (inf, NaN,
 * or every entry -inf). */
static int fast_row(const topk_job *j, size_t r, sg_topk_buf *b) {
    const float *x = j->x + r * j->ldx;
    const size_t n = j->n;
    sg_topk_reset(b, j->kk, b->val, b->idx);
    float m = -INFINITY;
    double s = 0.0;
    for (size_t i0 = 0; i0 < n; i0 += BLOCK) {
        const size_t len = n - i0 < BLOCK ? n - i0 : BLOCK;
        const float bm = j->scan(len, x + i0, (int32_t)i0, b);
        if (bm == -INFINITY) continue;
        if (!(bm - bm == 0.0f)) return 0; /* +inf (NaN shows in the sum) */
        if (bm > m) {
            s *= exp(((double)m - bm) * j->c); /* rescale once per new max */
            m = bm;
        }
        s += j->k->expsum(len, x + i0, m, j->c);
    }
    if (m == -INFINITY || !(s < INFINITY)) return 0;
    write_row(j, r, b, m, s, 0);
    return 1;
}

static void do_row(const topk_job *j, size_t r, sg_topk_buf *b) {
    if (j->keep || j->add || j->c < SG_EXACT_BELOW_C || !fast_row(j, r, b)) exact_row(j, r, b);
}

static void rows_task(void *arg, size_t t) {
    const topk_job *j = arg;
    double val[STACK_K];
    int32_t idx[STACK_K];
    sg_topk_buf b;
    sg_topk_reset(&b, j->kk, val, idx);
    size_t r0 = t * j->rows_per_task, r1 = r0 + j->rows_per_task;
    for (size_t r = r0; r < r1 && r < j->rows; r++) do_row(j, r, &b);
}

/* k > STACK_K: one task per buffer, each a contiguous range of rows. */
static void group_task(void *arg, size_t g) {
    const topk_job *j = arg;
    sg_topk_buf b;
    sg_topk_reset(&b, j->kk, j->heap_val + g * j->kk, j->heap_idx + g * j->kk);
    size_t r0 = g * j->rows / j->groups, r1 = (g + 1) * j->rows / j->groups;
    for (size_t r = r0; r < r1; r++) do_row(j, r, &b);
}

sg_status sg_softmax_topk_f32(sg_context *ctx, size_t rows, size_t n, const float *x, size_t ldx,
                              size_t k, int32_t *index, size_t ldi, float *prob, size_t ldp,
                              const sg_softmax_options *options) {
    static const char name[] = "sg_softmax_topk_f32";
    if (!ctx) return SG_ERR_ARGUMENT;
    sg_ok(ctx);
    sg_softmax_options o = options ? *options : sg_softmax_options_default();
    topk_job j = {0};
    sg_status st = sg_check_options(ctx, name, rows, n, &o, 0, &j.c);
    if (st != SG_OK) return st;
    if (k == 0 || k > n)
        return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: k (%zu) must be in [1, n] (n = %zu)", name, k, n);
    if (n > (size_t)INT32_MAX)
        return sg_fail(ctx, SG_ERR_SHAPE, "%s: n (%zu) exceeds INT32_MAX (int32 indices)", name, n);
    st = sg_check_matrix(ctx, name, "x", x, rows, n, ldx);
    if (st == SG_OK) st = sg_check_matrix(ctx, name, "index", index, rows, k, ldi);
    if (st == SG_OK && prob) st = sg_check_matrix(ctx, name, "prob", prob, rows, k, ldp);
    if (st != SG_OK || rows == 0) return st;
    j.k = sg_kernels_get();
    j.scan = sg_topk_scan_get();
    j.rows = rows, j.n = n, j.kk = k;
    j.x = x, j.ldx = ldx;
    j.index = index, j.ldi = ldi;
    j.prob = prob, j.ldp = ldp;
    j.t = o.temperature;
    j.keep = o.keep_mask, j.keep_ld = o.keep_mask_ld;
    j.add = o.add_mask, j.add_ld = o.add_mask_ld;
    const int serial = ctx->threads == 1 || rows * n < SG_PARALLEL_MIN_ELEMS;
    if (k > STACK_K) {
        j.groups = serial ? 1 : (size_t)ctx->threads < rows ? (size_t)ctx->threads : rows;
        void *mem = malloc(j.groups * k * (sizeof(double) + sizeof(int32_t)));
        if (!mem)
            return sg_fail(ctx, SG_ERR_NO_MEMORY, "%s: cannot allocate the top-k buffers (k = %zu)",
                           name, k);
        j.heap_val = mem;
        j.heap_idx = (int32_t *)(j.heap_val + j.groups * k);
        if (serial) group_task(&j, 0);
        else sg_parallel_for(ctx, j.groups, group_task, &j);
        free(mem);
        return SG_OK;
    }
    j.rows_per_task = sg_rows_per_task(n);
    size_t tasks = (rows + j.rows_per_task - 1) / j.rows_per_task;
    if (serial)
        for (size_t t = 0; t < tasks; t++) rows_task(&j, t);
    else sg_parallel_for(ctx, tasks, rows_task, &j);
    return SG_OK;
}

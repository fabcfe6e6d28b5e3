/*
 * sparse_rows.c - the candidate gathering and the row driver shared by the
 * sparse normalizers (sparse_internal.h). Each op's threshold and outputs
 * live in its own file.
 */
#include <string.h>

#include "normalizers/sparse_internal.h"
#include "normalizers/sparse_kernels.h"

static sg_sparse_kind full_row(const sg_row_view *v, size_t n, const sg_row_scan *s, float *out) {
    if (!v->keep && !v->add && v->t == 1.0) { /* as in the candidate loop below */
        for (size_t i = 0; i < n; i++) {
            const double d = (double)v->x[i] - s->xb;
            out[i] = d < -FLT_MAX ? -INFINITY : (float)d; /* x = -inf gives -inf */
        }
    } else {
        for (size_t i = 0; i < n; i++) out[i] = sg_sparse_d(v, s, i);
    }
    return SG_SPARSE_FULL;
}

sg_sparse_kind sg_sparse_gather(const sg_row_view *v, size_t n, double radius, size_t cap,
                                sg_row_scan *s, sg_sparse_cands *c, float *out) {
    if (cap > SG_SPARSE_CAND_MAX) cap = SG_SPARSE_CAND_MAX;
    if (!v->keep && !v->add && n <= UINT32_MAX) {
        const sg_sparse_kernels *k = sg_sparse_kernels_get();
        int bad = 0;
        const float m = k->max(n, v->x, &bad);
        if (bad || m == -INFINITY) {
            *s = sg_row_scan_f32(v, n);
            return SG_SPARSE_SPECIAL;
        }
        s->nan = s->posinf = 0;
        s->finite = 1; /* at least; the count is not used */
        s->xb = m, s->ab = 0.0;
        /* the kernel writes the candidates' x into c->d; d replaces it */
        c->m = k->select(n, v->x, sg_sparse_filter_threshold(m, radius, v->t), c->idx, c->d, cap);
        if (c->m > cap) return full_row(v, n, s, out);
        if (v->t == 1.0) {
            /* sg_z_diff with T = 1 and no add mask is the double
             * difference rounded once (hi + lo rounds back to hi): the same
             * bits without the error-free sums. */
            k->shift(c->m, c->d, s->xb);
        } else {
            for (size_t j = 0; j < c->m; j++) c->d[j] = sg_sparse_d(v, s, c->idx[j]);
        }
        return SG_SPARSE_CANDS;
    }
    *s = sg_row_scan_f32(v, n);
    if (sg_sparse_special(s)) return SG_SPARSE_SPECIAL;
    if (n > UINT32_MAX) return full_row(v, n, s, out);
    c->m = 0;
    for (size_t i = 0; i < n; i++) {
        float d = sg_sparse_d(v, s, i);
        if (!((double)d > -radius)) continue;
        if (c->m == cap) return full_row(v, n, s, out);
        c->d[c->m] = d, c->idx[c->m++] = (uint32_t)i;
    }
    return SG_SPARSE_CANDS;
}

static void rows_task(void *arg, size_t t) {
    const sg_sparse_job *j = arg;
    size_t r0 = t * j->rows_per_task, r1 = r0 + j->rows_per_task;
    if (r1 > j->rows) r1 = j->rows;
    if (j->rows_fn) j->rows_fn(j, r0, r1);
    else
        for (size_t r = r0; r < r1; r++) j->row(j, r);
}

void sg_sparse_run(sg_context *ctx, sg_sparse_job *j, size_t rows, size_t n,
                   const sg_softmax_options *o) {
    j->rows = rows;
    j->n = n;
    j->t = o->temperature;
    j->keep = o->keep_mask;
    j->keep_ld = o->keep_mask_ld;
    j->add = o->add_mask;
    j->add_ld = o->add_mask_ld;
    j->rows_per_task = sg_rows_per_task(n);
    if (j->task_align && j->rows_per_task % j->task_align)
        j->rows_per_task += j->task_align - j->rows_per_task % j->task_align;
    j->short_rows = sg_sparse_rows_kernel(n);
    if (ctx->threads == 1 || rows * n < SG_PARALLEL_MIN_ELEMS) {
        if (j->rows_fn) j->rows_fn(j, 0, rows);
        else
            for (size_t r = 0; r < rows; r++) j->row(j, r);
    } else {
        sg_parallel_for(ctx, (rows + j->rows_per_task - 1) / j->rows_per_task, rows_task, j);
    }
}

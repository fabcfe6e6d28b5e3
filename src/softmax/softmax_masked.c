/*
 * softmax_masked.c - the exact row path of the softmax core: boolean and
 * additive masks, and every special value (NaN, +-inf, fully removed rows).
 *
 * A scalar scan classifies the row first and finds the entry b with the
 * largest kept z = x/T + a, comparing z differences in double (see
 * sg_z_diff): the x difference is taken before dividing by T, so neither a
 * huge x absorbs a small a nor x/T overflows. The numeric part then
 * builds z - z_b (<= 0, rounded once to float) on the stack one block at a
 * time and runs the kernel table on it, so masked rows are still
 * vectorized.
 */
#include <math.h>

#include "softmax/softmax_internal.h"

#define ZBLOCK 1024

sg_row_scan sg_row_scan_f32(const sg_row_view *v, size_t n) {
    sg_row_scan s = {0, 0, 0, 0.0, 0.0};
    for (size_t i = 0; i < n; i++) {
        if (sg_row_removed(v, i)) continue;
        switch (sg_row_z_class(v, i)) {
        case 2: s.nan++; break;
        case 1: s.posinf++; break;
        case 0:
            if (s.finite++ == 0 || sg_row_z_minus(v, i, s.xb, s.ab) > 0.0) {
                s.xb = v->x[i];
                s.ab = v->add ? (double)v->add[i] : 0.0;
            }
            break;
        default: break;
        }
    }
    return s;
}

/* Fills z[0..len) with z - zmax for entries [i0, i0+len) of the row
 * (-inf for removed entries and kept x = -inf). */
static void make_z(const sg_row_view *v, size_t i0, size_t len, const sg_row_scan *s, float *z) {
    for (size_t k = 0; k < len; k++) {
        size_t i = i0 + k;
        z[k] = sg_row_removed(v, i) || v->x[i] == -INFINITY ? -INFINITY : (float)sg_row_z_minus(v, i, s->xb, s->ab);
    }
}

/* Rows with NaN, +inf or nothing finite: outputs follow from counts. */
static void special_row(const sg_fwd_job *j, const sg_row_view *v, const sg_row_scan *s, float *out) {
    float hit, miss_kept, lse;
    if (s->nan) {
        hit = miss_kept = NAN;
        lse = NAN;
    } else if (s->posinf) {
        hit = j->op == SG_OP_LOG_SOFTMAX ? -logf((float)s->posinf) : 1.0f / (float)s->posinf;
        miss_kept = j->op == SG_OP_LOG_SOFTMAX ? -INFINITY : 0.0f;
        lse = INFINITY;
    } else {
        hit = miss_kept = j->op == SG_OP_LOG_SOFTMAX ? -INFINITY : 0.0f;
        lse = -INFINITY;
    }
    if (j->op == SG_OP_LOGSUMEXP) {
        *out = lse;
        return;
    }
    const float gone = j->op == SG_OP_LOG_SOFTMAX ? -INFINITY : 0.0f;
    for (size_t i = 0; i < j->n; i++) {
        if (sg_row_removed(v, i)) out[i] = gone;
        else if (s->nan) out[i] = NAN;
        else out[i] = sg_row_z_class(v, i) == 1 ? hit : miss_kept;
    }
}

void sg_masked_row(const sg_fwd_job *j, size_t r) {
    const sg_kernels *k = j->k;
    sg_row_view v = {j->x + r * j->ldx, j->keep ? j->keep + r * j->keep_ld : NULL,
                  j->add ? j->add + r * j->add_ld : NULL, j->temperature};
    float *out = sg_job_out(j, r);
    const size_t n = j->n;
    sg_row_scan s = sg_row_scan_f32(&v, n);
    if (s.nan || s.posinf || !s.finite) {
        special_row(j, &v, &s, out);
        return;
    }
    float z[ZBLOCK];
    double sum = 0.0;
    for (size_t i = 0; i < n; i += ZBLOCK) {
        size_t len = n - i < ZBLOCK ? n - i : ZBLOCK;
        make_z(&v, i, len, &s, z);
        sum += k->expsum(len, z, 0.0f, 1.0f);
    }
    if (j->op == SG_OP_LOGSUMEXP) {
        *out = (float)(s.xb / v.t + s.ab + log(sum));
        return;
    }
    const float inv = (float)(1.0 / sum), logsum = (float)log(sum);
    for (size_t i = 0; i < n; i += ZBLOCK) {
        size_t len = n - i < ZBLOCK ? n - i : ZBLOCK;
        make_z(&v, i, len, &s, z);
        if (j->op == SG_OP_SOFTMAX) k->expscale_store(len, z, out + i, 0.0f, 1.0f, inv);
        else k->shift_store(len, z, out + i, 0.0f, 1.0f, logsum);
    }
}

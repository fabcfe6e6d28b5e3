/*
 * alternatives_internal.h - what the softmax alternatives' ops share: one
 * job description, rows across threads, the double-precision view of a
 * masked row, and argument checks. Internal. The kernels themselves are in
 * alternatives_kernels.h; the softmax core's helpers come from
 * softmax_internal.h and are reused, not copied.
 */
#ifndef SG_ALTERNATIVES_INTERNAL_H
#define SG_ALTERNATIVES_INTERNAL_H

#include <math.h>
#include <stdint.h>

#include "normalizers/alternatives_kernels.h"
#include "softmax/softmax_internal.h"

typedef struct alt_job alt_job;
typedef void alt_row_fn(const alt_job *j, size_t r);

/* One call, resolved: what every row function needs. */
struct alt_job {
    alt_row_fn *row;
    const sg_alt_kernels *k;
    const sg_kernels *ck; /* the softmax core's table (rmax, dot, scale, ...) */
    size_t rows, n, rows_per_task;
    const float *x;
    size_t ldx;
    const float *y; /* backward: the forward output */
    size_t ldy;
    const float *dy;
    size_t lddy;
    float *out; /* y, or dx */
    size_t ldo;
    const int32_t *target; /* losses */
    float *loss;
    float *beta; /* adaptive temperature (may be NULL) */
    float c;     /* 1 / T */
    double t;    /* T */
    float eps;   /* softpick */
    const uint8_t *keep;
    size_t keep_ld;
    const float *add;
    size_t add_ld;
};

static inline int alt_masked(const alt_job *j) { return j->keep || j->add; }

/* Row r of x through its masks (the softmax core's sg_row_view). */
static inline sg_row_view alt_view(const alt_job *j, size_t r) {
    sg_row_view v = {j->x ? j->x + r * j->ldx : NULL, j->keep ? j->keep + r * j->keep_ld : NULL,
                     j->add ? j->add + r * j->add_ld : NULL, j->t};
    return v;
}

/* z_i = x_i / T + a_i in double: exact enough for every float input (no
 * overflow: |x / T| <= 3.4e38 / 2.9e-39), with the extended-real rules
 * (-inf + inf = NaN). Callers test sg_row_removed first. */
static inline double alt_z(const sg_row_view *v, size_t i) {
    return (double)v->x[i] / v->t + (v->add ? (double)v->add[i] : 0.0);
}

/* Fills j from the options and runs j->row on every row, split across the
 * context's threads in fixed tasks (results independent of threads). */
void sg_alt_run(sg_context *ctx, alt_job *j, size_t rows, size_t n, const sg_softmax_options *o,
                float c);

/* Forward checks: options, x, y, in place. */
sg_status sg_alt_check_forward(sg_context *ctx, const char *name, size_t rows, size_t n,
                               const float *x, size_t ldx, const float *y, size_t ldy,
                               sg_softmax_options *o, const sg_softmax_options *options, float *c);
/* Backward checks: options, each non-NULL-named input (x, y may be NULL
 * when the op does not take them), dy, dx; dx aliasing an input needs the
 * same stride. */
sg_status sg_alt_check_backward(sg_context *ctx, const char *name, size_t rows, size_t n,
                                const float *x, size_t ldx, const float *y, size_t ldy,
                                const float *dy, size_t lddy, const float *dx, size_t lddx,
                                sg_softmax_options *o, const sg_softmax_options *options,
                                float *c);

/* How an op runs its job over the rows once checked (sg_alt_run, or a
 * flattening runner for elementwise ops). */
typedef void alt_runner(sg_context *ctx, alt_job *j, size_t rows, size_t n,
                        const sg_softmax_options *o, float c);

/* A whole forward op that reads x (sigmoid, normalized sigmoid, stablemax,
 * log-stablemax): the checks, then `row` over the rows through `run`
 * (NULL: sg_alt_run). */
sg_status sg_alt_forward_x(sg_context *ctx, const char *name, alt_row_fn *row, alt_runner *run,
                           size_t rows, size_t n, const float *x, size_t ldx, float *y, size_t ldy,
                           const sg_softmax_options *options);

/* A whole backward op that reads x, y and dy (normalized sigmoid,
 * stablemax): the NULL and shape checks, then `row` over the rows. */
sg_status sg_alt_backward_xy(sg_context *ctx, const char *name, alt_row_fn *row, size_t rows,
                             size_t n, const float *x, size_t ldx, const float *y, size_t ldy,
                             const float *dy, size_t lddy, float *dx, size_t lddx,
                             const sg_softmax_options *options);

/* sigma(z) from e^-|z| in double. */
static inline double sg_alt_sigmoid(double z) {
    double e = exp(-fabs(z));
    return z >= 0.0 ? 1.0 / (1.0 + e) : e / (1.0 + e);
}

/*
 * Masked rows through the kernels: z_k = fl(x_i c) + a_i (float, as the
 * unmasked path forms x_i c) for entries [i0, i0 + len) of a row, `gone`
 * on removed entries. Returns the largest kept z seen (NaN ignored) and
 * sets *special when a kept z is +inf or a finite x and a overflowed to
 * +-inf (the caller then takes the exact path). len <= SG_ALT_ZBLOCK.
 */
#define SG_ALT_ZBLOCK 1024
float sg_alt_zblock(const alt_job *j, const sg_row_view *v, size_t i0, size_t len, float gone,
                    float *z, int *special);

/* Writes NaN on the kept entries of row r's output, 0 on removed ones. */
void sg_alt_nan_row(const alt_job *j, size_t r);

/*
 * Backward of a masked row of a normalized elementwise map y = s(z) / S
 * (normalized sigmoid, stablemax): dx_i = y_i g(z_i) (dy_i - sum_kept dy y) / T
 * with g = s' / s, in double; 0 on removed entries.
 */
void sg_alt_masked_bwd_row(const alt_job *j, size_t r, double (*g)(double z));

#endif

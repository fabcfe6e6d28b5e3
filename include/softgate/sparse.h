/*
 * softgate/sparse.h - sparse normalizers: entmax (1.5 and alpha), sparse-softmax (top-k softmax).
 * Part of the public API: include <softgate.h>, which includes this file.
 *
 * Sparsemax (alpha = 2) is in softgate.h, section 4. Every op here takes the
 * softmax core's sg_softmax_options (section 2): z = x/T + add_mask over the
 * entries kept by keep_mask (add_mask -inf removes an entry too), the same
 * strides (ld >= N, ld 0 for broadcast masks), the same pointer rules, and
 * y == x (in place, same stride) allowed; options->algorithm is ignored.
 * Rows are split across the context's threads in fixed tasks, so results
 * are bit-identical for every thread count. No workspace, no allocation.
 * Formulas, papers and measured accuracy: docs/SPARSE.md.
 *
 * Special values (forward), for entmax, 1.5-entmax and sparsemax alike:
 *   removed entry (any x, NaN/inf too)    0
 *   z_i = -inf, not removed               0
 *   every entry removed or -inf           all 0
 *   any kept z_i NaN                      NaN on kept entries, removed 0
 *   c >= 1 kept entries z_i = +inf        1/c there, 0 elsewhere
 *   (no NaN)                              (sparse-softmax: 1/min(c, k) on the
 *                                         first min(c, k) of them, by index)
 *   finite x, |x| up to 3.4e38            never overflows (d = z - max z is
 *                                         formed in double)
 *   N == 0 or rows == 0                   nothing written
 *   T 0, < 0, NaN, inf, 1/T overflowing   SG_ERR_ARGUMENT
 * Backward: removed entries and entries with y_i = 0 get dx_i = 0 exactly,
 * whatever dy holds there; a NaN in a kept y makes the row's kept entries
 * NaN; a NaN in dy on the support propagates to the support. options must
 * carry the forward call's masks and temperature; dx may alias y or dy
 * (same row stride).
 */
#ifndef SOFTGATE_H
#error "include <softgate.h>, not <softgate/sparse.h>"
#endif

/* ---- entmax ------------------------------------------------------------- */

/*
 * alpha-entmax (Peters, Niculae and Martins, "Sparse Sequence-to-Sequence
 * Models", ACL 2019):
 *   entmax_alpha(z)_i = [(alpha - 1) z_i - tau]_+^(1 / (alpha - 1)),
 * tau the unique threshold with sum_i y_i = 1. alpha = 2 is sparsemax,
 * alpha -> 1 tends to softmax; entries below the threshold are exactly 0.
 * Shift invariant in z.
 *
 * 1.5-entmax (sg_entmax15_f32), exact: y_i = (z_i/2 - tau)_+^2. The paper
 * finds tau by sorting u = (z - max z)/2 and taking cumulative sums
 * (tau_k = mean_k - sqrt((1 - ss_k) / k), support = the largest k with
 * tau_k <= u_(k)). softgate solves the same problem on the candidates
 * z_i > max z - 2 only (tau >= max/2 - 1, so no other entry can be in the
 * support), found by a vectorized filter, and finds the support without a
 * sort: Newton steps on sum (u - t)_+^2 = 1 from below, each checking
 * whether the closed form on {u > t} is consistent, which makes it exact
 * (2 to 6 vectorized passes over the candidates); the paper's sort is the
 * fallback. Accuracy: each output within 3e-7 (absolute) of 1.5-entmax of
 * the exact z (d = z - max is rounded once to float; tau in double).
 *
 * x, y: [rows x N] with strides ldx, ldy >= N.
 */
SG_API sg_status sg_entmax15_f32(sg_context *ctx, size_t rows, size_t n,
                                 const float *x, size_t ldx, float *y, size_t ldy,
                                 const sg_softmax_options *options);

/*
 * alpha-entmax for any finite alpha > 1 (alpha = 1 is softmax: rejected with
 * SG_ERR_ARGUMENT pointing to sg_softmax_f32; alpha < 1, NaN or inf:
 * SG_ERR_ARGUMENT). tau is solved on the candidates z_i > max z -
 * 1/(alpha - 1) (all of the row if more than 4096) by Newton steps kept
 * inside a bisection bracket [-1, 0] of u = (alpha - 1)(z - max z), to
 * 2^-52 (at most 200 evaluations; bisection alone needs about 54); the
 * outputs are then divided by their sum, so rows sum to 1 within float
 * rounding. Accuracy: for 1 < alpha <= 2, each output within 1e-6
 * (absolute) of the exact map. For alpha > 2 the map y = w^(1/(alpha-1))
 * has an unbounded slope at the threshold: an entry just above it can move
 * by about e^(1/(alpha-1)) for an error e ~ 6e-8 |d| in d (1e-3 at
 * alpha = 3); entries away from the threshold keep 1e-6. Slower than the
 * exact ops (a pow per candidate per step): use sg_entmax15_f32 for
 * alpha = 1.5 and sg_sparsemax_f32 for alpha = 2.
 */
SG_API sg_status sg_entmax_f32(sg_context *ctx, double alpha, size_t rows, size_t n,
                               const float *x, size_t ldx, float *y, size_t ldy,
                               const sg_softmax_options *options);

/*
 * Backward (vector-Jacobian product; the Jacobian is symmetric): with
 * S = {kept i: y_i > 0} and g_i = y_i^(2 - alpha) on S (sqrt(y) for 1.5),
 *   dx_i = g_i (dy_i - sum_S g dy / sum_S g) / T   on S,   0 elsewhere.
 * y is the forward output. alpha as for the forward (alpha = 2 gives the
 * sparsemax backward).
 */
SG_API sg_status sg_entmax15_backward_f32(sg_context *ctx, size_t rows, size_t n,
                                          const float *y, size_t ldy,
                                          const float *dy, size_t lddy,
                                          float *dx, size_t lddx,
                                          const sg_softmax_options *options);
SG_API sg_status sg_entmax_backward_f32(sg_context *ctx, double alpha, size_t rows, size_t n,
                                        const float *y, size_t ldy,
                                        const float *dy, size_t lddy,
                                        float *dx, size_t lddx,
                                        const sg_softmax_options *options);

/* ---- sparse-softmax (top-k softmax) ---------------------------------------- */

/*
 * Sparse-softmax (Sun et al., "Sparse-softmax: A Simpler and Faster
 * Alternative Softmax Transformation", 2021): softmax over the k largest
 * z of each row, exactly 0 elsewhere,
 *   y_i = exp(z_i - max z) / sum_{j in top-k} exp(z_j - max z)  on top-k.
 * Ranking: unmasked rows by x (exactly the order of z); masked rows, and
 * every row when k > 4096, by d = z - max z rounded once to float (entries
 * whose d round to the same float tie). Ties at the k-th value go to the lower
 * index. Removed entries are never selected; a row with fewer than k kept
 * entries selects all its kept entries (kept z = -inf get 0). k >= N is
 * plain softmax: the call is sg_softmax_f32 with the same options (same
 * bits). k == 0 is SG_ERR_ARGUMENT. Shift invariant in z.
 * Accuracy: exp and the sum in double; the relative error of each selected
 * output is at most 3e-7 + 2^-24 |z_i - max z| (the second term only where
 * d is rounded to float: masked rows, k > 4096).
 * Cost: k <= 4096: a max pass and one pass feeding a heap of the k best
 * (unmasked rows: the vectorized select keeps only entries above the
 * current k-th value, so few reach the heap); k > 4096: a pass writing d,
 * a radix select on the bits of d (4 passes of 8 bits, no allocation), a
 * sum pass and an output pass.
 */
SG_API sg_status sg_sparse_softmax_f32(sg_context *ctx, size_t k, size_t rows, size_t n,
                                       const float *x, size_t ldx, float *y, size_t ldy,
                                       const sg_softmax_options *options);

/*
 * Backward: the softmax backward restricted to the selection,
 *   dx_i = y_i (dy_i - sum_{j: y_j > 0} y_j dy_j) / T  where y_i > 0,
 *   dx_i = 0 elsewhere (unselected, removed, or underflowed to 0).
 */
SG_API sg_status sg_sparse_softmax_backward_f32(sg_context *ctx, size_t rows, size_t n,
                                                const float *y, size_t ldy,
                                                const float *dy, size_t lddy,
                                                float *dx, size_t lddx,
                                                const sg_softmax_options *options);

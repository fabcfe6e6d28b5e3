/*
 * softgate/alternatives.h - softmax alternatives: softpick, stablemax, sigmoid and normalized sigmoid, Gumbel-softmax, adaptive temperature.
 * Part of the public API: include <softgate.h>, which includes this file.
 *
 * Common rules (they differ from the softmax core where noted):
 *  - Rows of float32 with row strides (>= N), options, masks and pointer
 *    rules of section 2: z_i = x_i / T + add_mask_i over the entries kept by
 *    the masks (T = options->temperature); "removed" means keep_mask 0 or
 *    add_mask -inf. options->algorithm is ignored. NULL options: T = 1, no
 *    masks.
 *  - None of these operators is shift-invariant except Gumbel-softmax and
 *    adaptive temperature (softmax-based): T and add_mask change results.
 *  - Outputs may alias their input exactly (y == x with ldy == ldx);
 *    backward outputs dx may alias any of their inputs with the same row
 *    stride (every backward here reads entry i before writing dx_i).
 *  - Threads: rows are split across the context's threads; results are
 *    bit-identical for every thread count. No workspace is needed.
 *  - SIMD: rows run the dispatched kernels (ref, AVX2, AVX-512, chosen
 *    like the softmax core's, SOFTGATE_ISA included); masked rows of the
 *    softpick (forward and backward), stablemax, sigmoid and normalized
 *    sigmoid forwards too, on blocks of z = fl(x * (1/T)) + a built on the
 *    stack. Masked rows of the other ops (log-stablemax, the loss, adaptive
 *    temperature, the stablemax and normalized sigmoid backward passes),
 *    and rows with +inf or overflowing z, take the exact scalar path in
 *    double.
 *  - Errors: ctx NULL -> SG_ERR_ARGUMENT; a NULL matrix (with rows * N >
 *    0) -> SG_ERR_ARGUMENT; a row stride < N, or in place with different
 *    strides -> SG_ERR_SHAPE; temperature 0, < 0, NaN, inf or with 1/T
 *    overflowing -> SG_ERR_ARGUMENT. Nothing is written on error.
 *  - rows == 0 or N == 0: nothing is written, SG_OK.
 *  - Accuracy (unmasked rows, every ISA): relative error of each output
 *    <= 1e-6 against the same formula in exact arithmetic on z = x * (1/T)
 *    (z rounded to float), except where stated per operator; sums are
 *    accumulated in double.
 * docs/ALTERNATIVES.md has the formulas, sources and derivations.
 */
#ifndef SOFTGATE_H
#error "include <softgate.h>, not <softgate/alternatives.h>"
#endif

/* ------------------------------------------------------------------------ */
/* Softpick                                                                  */
/* ------------------------------------------------------------------------ */

/*
 * Softpick (Zuhri et al., "Softpick: No Attention Sink, No Massive
 * Activations with Rectified Softmax"), per row over the kept entries:
 *   y_i = ReLU(e^z_i - 1) / (sum_j |e^z_j - 1| + eps),
 * computed scaled by e^-m, m = max(max_j z_j, 0), so nothing overflows:
 *   y_i = ReLU(e^(z_i-m) - e^-m) / (sum_j |e^(z_j-m) - e^-m| + eps e^-m),
 * with e^(z-m) - e^-m evaluated as e^-m expm1(z) while m <= 64 (no
 * cancellation for z near 0). Rows may sum to less than one; only entries
 * with z > 0 are nonzero.
 *
 * eps >= 0 and finite (else SG_ERR_ARGUMENT). The authors' reference code
 * uses 1e-8 (SG_SOFTPICK_DEFAULT_EPS) added to the already scaled
 * denominator; here eps belongs to the unscaled formula above (it matters
 * only when every |z| is tiny).
 *
 * -inf is NOT a mask: a kept z_i = -inf adds 1 (e^-m scaled) to the
 * denominator and gets 0. Removed entries are excluded from both sums.
 *
 * Special values (forward):
 *   removed entry (any x, NaN/inf too)     0
 *   kept z_i = -inf                        0 (denominator += 1)
 *   every kept z <= 0 (all-zero row too)   all 0
 *   every entry removed                    all 0
 *   any kept z_i NaN                       NaN on kept entries, removed 0
 *   c >= 1 kept z_i = +inf (no NaN)        1/c there, 0 elsewhere
 *   eps == 0 and every kept z == 0         all 0 (0/0 is defined as 0)
 * Backward (VJP, from x, recomputing the forward; D the scaled denominator
 * and q_j = e^(z_j - m) / D):
 *   dx_j = q_j ([z_j > 0] dy_j - sign(z_j) sum_i dy_i y_i) / T
 * The kink of |e^z - 1| and of the ReLU at z = 0 takes the subgradient 0
 * (sign(0) = 0, [0 > 0] = 0), as PyTorch's relu and abs do. Removed entries
 * and z_j = -inf get 0; a +inf-dominated row gets dx = 0 everywhere (the
 * output is locally constant); a kept NaN in x makes kept entries NaN; a NaN
 * in dy on an entry with z > 0 propagates to the row's kept entries.
 * Accuracy: outputs within 2e-6 relative + 1e-7 absolute of the exact value.
 */
#define SG_SOFTPICK_DEFAULT_EPS 1e-8f

SG_API sg_status sg_softpick_f32(sg_context *ctx, size_t rows, size_t n,
                                 const float *x, size_t ldx, float *y, size_t ldy,
                                 float eps, const sg_softmax_options *options);

/* dx from x and dy (y is recomputed; pass the forward's eps and options). */
SG_API sg_status sg_softpick_backward_f32(sg_context *ctx, size_t rows, size_t n,
                                          const float *x, size_t ldx,
                                          const float *dy, size_t lddy,
                                          float *dx, size_t lddx,
                                          float eps, const sg_softmax_options *options);

/* ------------------------------------------------------------------------ */
/* Stablemax                                                                 */
/* ------------------------------------------------------------------------ */

/*
 * Stablemax (Prieto, Barsbey, Mediano and Birdal, "Grokking at the Edge of
 * Numerical Stability"): s(z) = z + 1 for z >= 0, 1 / (1 - z) for z < 0,
 *   y_i = s(z_i) / sum_j s(z_j)   over the kept entries.
 * s is C1 with s'(z) = s(z) / (1 + |z|). The sum is accumulated in double
 * (each s <= FLT_MAX), so it cannot overflow for finite x; rows whose sum
 * leaves [1e-37, 1e37], or whose z = x/T overflows float, are computed in
 * double.
 *
 * Special values (forward; log-stablemax in brackets):
 *   removed entry (any x)                  0 [-inf]
 *   kept z_i = -inf                        0 [-inf]  (s(-inf) = 0)
 *   every entry removed or -inf            all 0 [all -inf]
 *   any kept z_i NaN                       NaN on kept entries
 *   c >= 1 kept z_i = +inf (no NaN)        1/c there, 0 elsewhere
 *                                          [-log c there, -inf elsewhere]
 *   finite x up to FLT_MAX, any T          never overflows
 * Backward (VJP), from x, y and dy:
 *   dx_j = y_j / (1 + |z_j|) * (dy_j - sum_i dy_i y_i) / T
 * removed entries get 0; z_j = +-inf gives 0 there (y/(1+inf)); a NaN in
 * x, y or dy (kept) propagates as the formula does (the sum to the row).
 */
SG_API sg_status sg_stablemax_f32(sg_context *ctx, size_t rows, size_t n,
                                  const float *x, size_t ldx, float *y, size_t ldy,
                                  const sg_softmax_options *options);

/* y_i = log(stablemax(z)_i) = sign(z_i) log1p(|z_i|) - log(sum_j s(z_j)),
 * unmasked rows as log(float s(z_i)) - log S by the vector kernels
 * (absolute error <= 1e-6 max(1, |y_i|)); same table (brackets above). */
SG_API sg_status sg_log_stablemax_f32(sg_context *ctx, size_t rows, size_t n,
                                      const float *x, size_t ldx, float *y, size_t ldy,
                                      const sg_softmax_options *options);

SG_API sg_status sg_stablemax_backward_f32(sg_context *ctx, size_t rows, size_t n,
                                           const float *x, size_t ldx,
                                           const float *y, size_t ldy,
                                           const float *dy, size_t lddy,
                                           float *dx, size_t lddx,
                                           const sg_softmax_options *options);

/*
 * The log-stablemax cross-entropy of the paper, per row with target class
 * k = target[r] (reduction none):
 *   loss[r] = -log stablemax(z)_k = log sum_j s(z_j) - log s(z_k),
 * and, unless dx is NULL, its gradient with respect to x:
 *   dx_j = (stablemax(z)_j - [j == k]) / (1 + |z_j|) / T.
 * loss, target: [rows]; dx: [rows x N] (lddx), may alias x (lddx == ldx).
 * A target outside [0, N) or removed by the masks is SG_ERR_ARGUMENT
 * naming the row, and nothing is written (N == 0 with rows > 0 is an
 * error). Unmasked rows use the vector kernels (loss and dx within 1e-6
 * relative, or 1e-6 absolute for |.| < 1). Special values: a kept NaN gives loss NaN (dx NaN on kept
 * entries); with c entries +inf, loss = log c if z_k = +inf, else +inf;
 * z_k = -inf gives +inf; dx follows the formula with y from the forward
 * table (0 at infinite z and on removed entries).
 */
SG_API sg_status sg_stablemax_cross_entropy_f32(sg_context *ctx, size_t rows, size_t n,
                                                const float *x, size_t ldx,
                                                const int32_t *target, float *loss,
                                                float *dx, size_t lddx,
                                                const sg_softmax_options *options);

/* ------------------------------------------------------------------------ */
/* Sigmoid and normalized sigmoid                                            */
/* ------------------------------------------------------------------------ */

/*
 * Elementwise sigmoid as a row operator: y_i = sigma(z_i) = 1 / (1 + e^-z_i)
 * on kept entries, 0 on removed ones; evaluated from e^-|z| (no overflow for
 * any z). Special values: z = +inf -> 1, z = -inf -> 0, NaN -> NaN (that
 * entry only), removed -> 0. Outputs below 2^-126 (z < -87.3) are denormal
 * or 0, with absolute error <= 2^-149.
 * Backward from y: dx_i = dy_i y_i (1 - y_i) / T; removed entries 0; a
 * saturated y (0 or 1) gives 0 for finite dy; NaN propagates per entry.
 */
SG_API sg_status sg_sigmoid_f32(sg_context *ctx, size_t rows, size_t n,
                                const float *x, size_t ldx, float *y, size_t ldy,
                                const sg_softmax_options *options);

SG_API sg_status sg_sigmoid_backward_f32(sg_context *ctx, size_t rows, size_t n,
                                         const float *y, size_t ldy,
                                         const float *dy, size_t lddy,
                                         float *dx, size_t lddx,
                                         const sg_softmax_options *options);

/*
 * Normalized sigmoid, the DeepSeekMoE gate ("On DeepSeekMoE: Statistical
 * Benefits of Shared Experts and Normalized Sigmoid Gating"):
 *   y_i = sigma(z_i) / sum_j sigma(z_j)   over the kept entries.
 * Sums lie in (0, N] for finite z, so nothing overflows. When every kept z
 * is below -20, sigma(z) = e^z (1 - e^z + ...) and the row equals
 * softmax(z) within 2e-9 relative; it is computed as softmax(z) there, so
 * rows far in the negative tail do not underflow. Otherwise outputs whose
 * sigma(z) underflows float (z < -87.3) have absolute error <= 4e-37.
 *
 * Special values (forward):
 *   removed entry (any x)                  0
 *   kept z_i = +inf                        sigma = 1 (not dominating: a
 *                                          finite, bounded weight)
 *   kept z_i = -inf                        0
 *   every entry removed or -inf            all 0
 *   any kept z_i NaN                       NaN on kept entries
 * Backward (VJP) from x, y and dy:
 *   dx_j = y_j (1 - sigma(z_j)) (dy_j - sum_i dy_i y_i) / T
 * removed entries 0; z_j = +-inf gives 0 there; NaN propagates as the
 * formula does.
 */
SG_API sg_status sg_normalized_sigmoid_f32(sg_context *ctx, size_t rows, size_t n,
                                           const float *x, size_t ldx, float *y, size_t ldy,
                                           const sg_softmax_options *options);

SG_API sg_status sg_normalized_sigmoid_backward_f32(sg_context *ctx, size_t rows, size_t n,
                                                    const float *x, size_t ldx,
                                                    const float *y, size_t ldy,
                                                    const float *dy, size_t lddy,
                                                    float *dx, size_t lddx,
                                                    const sg_softmax_options *options);

/* ------------------------------------------------------------------------ */
/* Gumbel-softmax                                                            */
/* ------------------------------------------------------------------------ */

/*
 * Gumbel-softmax (Jang, Gu and Poole, "Categorical Reparameterization with
 * Gumbel-Softmax"; Maddison et al.'s Concrete distribution):
 *   y_soft = softmax((x + g) / tau + add_mask),  tau = options->temperature,
 *   g[r][i] = -log(-log(u[r][i])),
 * u exactly the numbers of sg_random_uniform_f32(seed, offset, r, i), i.e.
 * Philox4x32-10 keyed by seed with counter (i / 4, r, offset): strictly
 * inside (0, 1), so g is finite (g in [-2.82, 16.64]). t = x + g is
 * formed by the dispatched gumbel_noise kernel (Philox vectorized across
 * counters, bit-identical to the scalar generator; the reference kernel
 * in double, the vector ones with a vector log: |t - (x + g)| <= 4e-7
 * max(1, |t|)), then the core's softmax of t / tau. The noise depends only on (seed,
 * offset, row, column): identical for every thread count, and for the
 * same row index whatever the strides.
 *
 * Stream use: one call uses exactly the counters of stream offset
 * `offset` (one Philox block per 4 columns of each row); advance offset by
 * 1 per call (e.g. the step number times the number of stochastic layers
 * plus the layer index) so calls and layers never share noise.
 *
 * hard == 0: y = y_soft. hard != 0 (straight-through): y is the one-hot of
 * the argmax of y_soft over kept entries (ties to the lower index; a row
 * whose soft output is all 0, i.e. every entry removed, stays all 0; a row
 * with a kept NaN is NaN on kept entries); the gradient flows through
 * y_soft: pass y_soft to the backward.
 * y_soft: [rows x N] (ldys) or NULL (then only y is written; with hard != 0
 * the soft values are lost). y_soft must not overlap y. y may equal x.
 * Special values: those of softmax (section 2) on z = (x + g)/tau + a:
 * x = +inf entries share the mass, NaN propagates to the row, removed and
 * -inf entries get 0, all removed gives all 0.
 */
SG_API sg_status sg_gumbel_softmax_f32(sg_context *ctx, size_t rows, size_t n,
                                       const float *x, size_t ldx,
                                       uint64_t seed, uint64_t offset, int hard,
                                       float *y, size_t ldy, float *y_soft, size_t ldys,
                                       const sg_softmax_options *options);

/*
 * Backward for both variants: dx = y_soft * (dy - sum_j y_soft_j dy_j) / tau
 * (the softmax backward of section 2 on y_soft, masks included; the noise
 * is a constant). For the straight-through variant dy is the gradient with
 * respect to the hard output. dx may alias y_soft or dy (same stride).
 */
SG_API sg_status sg_gumbel_softmax_backward_f32(sg_context *ctx, size_t rows, size_t n,
                                                const float *y_soft, size_t ldys,
                                                const float *dy, size_t lddy,
                                                float *dx, size_t lddx,
                                                const sg_softmax_options *options);

/* ------------------------------------------------------------------------ */
/* Adaptive temperature                                                      */
/* ------------------------------------------------------------------------ */

/*
 * Adaptive-temperature softmax (Velickovic, Perivolaropoulos, Barbero and
 * Pascanu, "softmax is not enough (for sharp out-of-distribution)", 2024),
 * per row, at inference:
 *   p = softmax(z),  H = -sum_i p_i log p_i  (nats; 0 log 0 = 0),
 *   beta = max(P(H), 1) if H > 0.5, else 1,
 *   P(H) = -0.037 H^4 + 0.481 H^3 - 2.3 H^2 + 4.917 H - 1.791
 *          (the paper's degree-4 fit of the optimal inverse temperature),
 *   y = softmax(beta * z).
 * beta >= 1 always: the rule only sharpens, never flattens. The authors'
 * code computes H with log(p + 1e-9); the exact entropy used here differs
 * from it by at most N * 1e-9.
 * Forward only (inference): beta is a piecewise function of the row and no
 * backward is provided. beta_out: [rows] or NULL; receives each row's beta
 * (1 for special rows). y == x (ldy == ldx) is allowed.
 * Special values: those of softmax (section 2) on z; rows with NaN, +inf
 * or nothing kept keep beta = 1.
 */
SG_API sg_status sg_adaptive_temperature_softmax_f32(sg_context *ctx, size_t rows, size_t n,
                                                     const float *x, size_t ldx,
                                                     float *y, size_t ldy, float *beta_out,
                                                     const sg_softmax_options *options);

/*
 * softgate/losses.h - losses (fused softmax cross-entropy with the logit
 * z-loss, the spherical Z-loss), confidence scores per row, and fused
 * softmax + top-k. Part of the public API: include <softgate.h>, which
 * includes this file. Details, formulas and sources: docs/LOSSES.md.
 *
 * Common to every op here: float32 rows [rows x N] with row stride ldx >= N
 * (and ld >= N for row outputs), the sg_softmax_options of section 2
 * (z = x/T + add_mask over the entries kept by keep_mask; NULL options = T 1,
 * no masks; options->algorithm is ignored), rows split across the
 * context's threads with bit-identical results for every thread count (sums
 * over rows are formed per fixed block of rows and combined in order), no
 * workspace (fused top-k with k > 256 excepted, see there). Errors name
 * the argument; on an error nothing is written.
 */
#ifndef SOFTGATE_H
#error "include <softgate.h>, not <softgate/losses.h>"
#endif

/* How a loss over rows is reduced (PyTorch's reduction argument). */
typedef enum sg_loss_reduction {
    SG_REDUCTION_NONE = 0, /* loss[r] per row                               */
    SG_REDUCTION_SUM = 1,  /* loss[0] = sum over rows (ignored rows add 0)    */
    SG_REDUCTION_MEAN = 2  /* loss[0] = sum / number of non-ignored rows      */
} sg_loss_reduction;

/* ------------------------------------------------------------------------ */
/* Softmax cross-entropy, fused with its gradient                            */
/* ------------------------------------------------------------------------ */

/*
 * Options of sg_cross_entropy_f32; sg_cross_entropy_options_default() gives
 * PyTorch's defaults: reduction MEAN, ignore_index -100, label_smoothing 0,
 * z_loss 0.
 *   label_smoothing  eps in [0, 1]: the target distribution is
 *                    (1 - eps) onehot(t) + eps / N_kept on every kept class
 *                    (N_kept = N without masks, as in PyTorch).
 *   z_loss           lambda >= 0, finite: adds lambda * lse^2 per row, lse
 *                    = logsumexp(z) (the logit z-loss of PaLM / ST-MoE).
 *   ignore_index     rows whose target equals it get loss 0 and dx 0 and
 *                    are not counted by MEAN.
 */
typedef struct sg_cross_entropy_options {
    sg_loss_reduction reduction;
    int32_t ignore_index;
    float label_smoothing;
    float z_loss;
} sg_cross_entropy_options;

SG_API sg_cross_entropy_options sg_cross_entropy_options_default(void);

/*
 * Softmax cross-entropy with integer targets, PyTorch semantics
 * (torch.nn.functional.cross_entropy(x / T, target, ignore_index,
 * reduction, label_smoothing)) plus the optional logit z-loss:
 *
 *   l_r = (1 - eps) (lse - z_t) + eps * mean_{j kept} (lse - z_j)
 *         + lambda * lse^2,               lse = logsumexp_{j kept} z_j,
 *
 * for each row r with t = target[r] != ignore_index; l_r = 0 for ignored
 * rows. ce == NULL means sg_cross_entropy_options_default().
 * loss: NONE -> loss[r] for every row ([rows]); SUM -> loss[0];
 * MEAN -> loss[0] = sum / count of non-ignored rows, NaN when every row is
 * ignored (PyTorch 1.13 gives NaN there too; dx is then all 0, as there).
 *
 * dx (row stride lddx), unless NULL: the gradient of the reduced loss with
 * respect to x (for NONE, of sum_r loss[r]):
 *   dx_i = g / T * ((1 + 2 lambda lse) p_i - (1 - eps) [i == t] - eps / N_kept)
 * on kept entries, p = softmax(z), g = 1 (NONE, SUM) or 1/count (MEAN);
 * dx = 0 on removed entries and on ignored rows. dx may alias x
 * (lddx == ldx): each row's loss is formed before its dx is written.
 *
 * Fused: per row, one pass for the max, one that stores exp((x - max)/T)
 * into dx while summing (each exponential computed once; without dx, a sum
 * only), one that scales dx in place (with eps > 0 it also subtracts the
 * smoothing term, and a sum pass over x comes first), then the target's
 * entry: the softmax core's three-pass structure and kernels.
 * Masked rows and rows with inf/NaN take the exact path (z differences in
 * double, as the softmax core's masked path).
 *
 * Errors (SG_ERR_ARGUMENT unless said): NULL ctx, x, target or loss (when
 * rows > 0); a target outside [0, N) that is not ignore_index, or removed
 * by the masks (the message names the row); label_smoothing outside [0, 1]
 * or NaN; z_loss < 0 or not finite; unknown reduction; lddx < N or
 * ldx < N (SG_ERR_SHAPE); dx == x with lddx != ldx (SG_ERR_SHAPE); the
 * options' checks of section 2. rows > 0 with N == 0 is an error unless
 * every row is ignored.
 *
 * Special values, per non-ignored row (the softmax table of section 2):
 *   any kept z NaN                 l_r NaN, dx NaN on kept entries
 *   every kept z = -inf            l_r NaN, dx NaN on kept entries (as PyTorch)
 *   z_t = -inf, some z finite      l_r +inf, dx finite (p_t = 0)
 *   eps > 0 and some kept z = -inf l_r +inf (the smoothing term)
 *   c >= 1 kept z = +inf (no NaN)  p = 1/c on them, lse = +inf; lambda = 0:
 *                                  l_r = (1-eps) nll + eps smooth with nll =
 *                                  log c if z_t = +inf else +inf, smooth =
 *                                  log c if every kept z is +inf else +inf;
 *                                  dx = g/T (p - q); lambda > 0: l_r = +inf,
 *                                  dx NaN on kept entries (PyTorch: NaN)
 *   finite x, |x| up to 3.4e38     never overflows (lse^2 may, to +inf)
 * Accuracy (tested against the double-precision formula): l_r within 2e-6
 * relative to max(1, |l_r|); each dx_i within 4e-7 g/T absolute plus 2e-6
 * relative (the rounding of p_t - 1 on the target entry dominates).
 */
SG_API sg_status sg_cross_entropy_f32(sg_context *ctx, size_t rows, size_t n,
                                      const float *x, size_t ldx, const int32_t *target,
                                      float *loss, float *dx, size_t lddx,
                                      const sg_cross_entropy_options *ce,
                                      const sg_softmax_options *options);

/* ------------------------------------------------------------------------ */
/* Spherical Z-loss (de Brebisson and Vincent)                               */
/* ------------------------------------------------------------------------ */

/*
 * Options of sg_spherical_zloss_f32. a > 0 (sharpness) and b (location)
 * are the paper's two hyperparameters, tuned per task in the paper (it has
 * no universal default); sg_spherical_zloss_options_default() gives
 * reduction MEAN, ignore_index -100, a = 1, b = 0 as neutral placeholders.
 */
typedef struct sg_spherical_zloss_options {
    sg_loss_reduction reduction;
    int32_t ignore_index;
    float a, b;
} sg_spherical_zloss_options;

SG_API sg_spherical_zloss_options sg_spherical_zloss_options_default(void);

/*
 * The Z-loss of de Brebisson and Vincent ("The Z-loss: a shift and scale
 * invariant classification loss belonging to the Spherical Family", 2016),
 * not to be confused with the logit z-loss of sg_cross_entropy_f32. Per
 * non-ignored row over the N_kept kept entries of z = x/T + add_mask:
 *   mu = mean z,  sigma = sqrt(mean (z - mu)^2)   (population std),
 *   zhat_t = (z_t - mu) / sigma,
 *   l_r = softplus(a (b - zhat_t)) / a = log(1 + exp(a (b - zhat_t))) / a,
 * and its gradient on kept entries
 *   dl_r/dx_i = -sigmoid(a (b - zhat_t)) / (T sigma)
 *               * ([i == t] - 1/N_kept - zhat_t zhat_i / N_kept),
 * 0 on removed entries. Shift- and scale-invariant in x without add_mask
 * (T then has no effect on l_r). zo == NULL means
 * sg_spherical_zloss_options_default(). Reduction, ignore_index, dx (gradient of
 * the reduced loss, NULL to skip, may alias x with lddx == ldx), targets
 * and errors as sg_cross_entropy_f32; a must be finite and > 0, b finite.
 * Statistics in double (two passes: mean, then centred squares); loss and
 * dx within 1e-6 relative of the double-precision formula (tested).
 *
 * Special values, per non-ignored row:
 *   sigma = 0 (N_kept == 1 or all kept z equal)   zhat_t = 0:
 *                         l_r = softplus(a b) / a, dx = 0 (the gradient
 *                         is undefined there; 0 is returned)
 *   any kept z NaN or +-inf           l_r NaN, dx NaN on kept entries
 */
SG_API sg_status sg_spherical_zloss_f32(sg_context *ctx, size_t rows, size_t n,
                                        const float *x, size_t ldx, const int32_t *target,
                                        float *loss, float *dx, size_t lddx,
                                        const sg_spherical_zloss_options *zo,
                                        const sg_softmax_options *options);

/* ------------------------------------------------------------------------ */
/* Confidence scores                                                         */
/* ------------------------------------------------------------------------ */

/*
 * Confidence scores of p = softmax(z) per row, z = x/T + add_mask over the
 * kept entries; each output is [rows] and may be NULL to skip it (at least
 * one must be non-NULL):
 *   max_prob[r]  max_i p_i
 *   margin[r]    p_(1) - p_(2), the two largest probabilities (p_(2) = 0
 *                when the row keeps one entry; 0 for a tied maximum)
 *   entropy[r]   -sum_i p_i log p_i (natural log; 0 log 0 = 0)
 *   energy[r]    -T log sum_i exp(z_i) = -T logsumexp(z)  (Liu et al.,
 *                "Energy-based Out-of-distribution Detection", 2020;
 *                lower energy = more in-distribution)
 * Forward only (scores, not trained through). Computed from d = z - max z
 * <= 0: max_prob = 1/S, margin = -expm1(d_(2)) / S, entropy = log S -
 * sum e^d d / S with S = sum e^d, energy = -(T max z + T log S) in double,
 * so extreme logits (|x| up to 3.4e38, any T) never overflow.
 * Accuracy (tested): max_prob, margin within 1e-6 relative (+ 1e-7
 * absolute for margin); entropy within 1e-6 absolute + 2e-6 relative;
 * energy within 1e-6 relative (+ 1e-6 absolute).
 *
 * Special values (the softmax table of section 2):
 *   any kept z NaN                      all four NaN
 *   c >= 1 kept z = +inf (no NaN)       max_prob 1/c, margin 1 (c = 1) or 0,
 *                                       entropy log c, energy -inf
 *   every entry removed or -inf, N = 0  max_prob 0, margin 0, entropy 0,
 *                                       energy +inf
 * Errors: NULL ctx or x (rows * N > 0), every output NULL, ldx < N, the
 * options' checks of section 2.
 */
SG_API sg_status sg_confidence_f32(sg_context *ctx, size_t rows, size_t n,
                                   const float *x, size_t ldx,
                                   float *max_prob, float *margin, float *entropy, float *energy,
                                   const sg_softmax_options *options);

/* ------------------------------------------------------------------------ */
/* Fused softmax + top-k                                                     */
/* ------------------------------------------------------------------------ */

/*
 * The k largest entries of p = softmax(z) per row, with their
 * probabilities, without writing the distribution (Milakov and
 * Gimelshein, "Online normalizer calculation for softmax", 2018, the fused
 * softmax + top-k): one pass over each row in blocks of 4096 keeps a
 * running top-k buffer (whose first entry is the running max) and the
 * rescaled running sum of exp; a vectorized test against the current k-th
 * value lets most elements skip the insertion.
 *
 * index: int32 [rows x k], row stride ldi >= k; slot j holds the entry of
 * rank j (descending probability; equal z: lower index first).
 * prob: float [rows x k], row stride ldp >= k, or NULL (indices only).
 * Ordering is by the exact z (for T > 0 without add_mask, the order of x),
 * masked rows by z - max z in double. 1 <= k <= N (k > N or k == 0 is
 * SG_ERR_ARGUMENT); N <= INT32_MAX (else SG_ERR_SHAPE). prob within 3e-7
 * relative of the double-precision softmax (tested). A row is processed
 * by one thread (rows are split across threads, not a row). Buffers for
 * k <= 256 live on the stack; larger k allocate threads * k * 12 bytes per
 * call (SG_ERR_NO_MEMORY if that fails).
 *
 * Special values:
 *   removed entries                      never chosen; when fewer than k
 *                                        entries are kept, the remaining
 *                                        slots get index -1, prob 0
 *   kept z = -inf                        prob 0, ranked last among kept
 *   any kept z NaN                       prob NaN in every filled slot;
 *                                        NaN entries rank first (as
 *                                        torch.topk), then +inf, finite, -inf
 *   c >= 1 kept z = +inf (no NaN)        prob 1/c on them, 0 elsewhere
 *   every kept z = -inf                  prob 0 (lower indices first)
 */
SG_API sg_status sg_softmax_topk_f32(sg_context *ctx, size_t rows, size_t n,
                                     const float *x, size_t ldx, size_t k,
                                     int32_t *index, size_t ldi, float *prob, size_t ldp,
                                     const sg_softmax_options *options);

/*
 * softgate/route.h - MoE gates and routers, load and balance.
 * Part of the public API: include <softgate.h>, which includes this file.
 *
 * Shapes (letters of softgate.h): T tokens, E experts, K experts per token,
 * D token width. Router logits x are [T x E] (row stride ldx >= E). A top-k
 * gate writes, per token t, K expert ids [T x K] int32 (row stride ldi >= K)
 * and K weights [T x K] float (ldw >= K), and on request the full score
 * row [T x E] (ldp >= E; NULL: not written).
 *
 * Contract shared by every gate and router of this file:
 *  - Selection compares the selection keys themselves (the logits, or the
 *    biased scores where a bias or groups enter), never rounded
 *    probabilities; ties go to the lower expert index (to the lower token
 *    index where experts choose tokens). A token's K ids are distinct and in
 *    descending order of key (ties: lower index first).
 *  - A NaN logit is SG_ERR_ARGUMENT naming the first such token; K == 0,
 *    K > E, a capacity below one token, and mismatched shapes or strides
 *    are SG_ERR_ARGUMENT / SG_ERR_SHAPE with a message naming the argument.
 *    When an error is found after the arguments were checked (a NaN logit),
 *    the outputs' contents are unspecified.
 *  - +inf logits: under softmax, the c >= 1 entries at +inf share the mass
 *    (1/c each, 0 elsewhere) as in the softmax core; -inf logits get 0 (and
 *    are selected only when fewer than K entries are finite, then by index).
 *  - The same inputs give the same routes and bits for every thread count;
 *    small problems (T * E < 16384) stay on the caller's thread; nothing is
 *    allocated per call unless stated (the bounded scratch is on the stack,
 *    or in the context's workspace, see sg_context_set_workspace).
 *  - Outputs must not overlap the inputs.
 *  - Random gates draw from Philox4x32-10 keyed exactly like
 *    sg_random_uniform_f32: u(t, i) is element (t, i) of
 *    sg_random_uniform_f32(seed, offset) over the token rows; the caller
 *    advances offset between steps and layers.
 */
#ifndef SOFTGATE_H
#error "include <softgate.h>, not <softgate/route.h>"
#endif

/* ------------------------------------------------------------------------ */
/* Top-k gates: one call for every gate that outputs K experts per token     */
/* ------------------------------------------------------------------------ */

/*
 * The gate families (c = 1/temperature, z = c x, b the optional per-expert
 * selection bias [E], a the routed scaling factor):
 *
 * SG_GATE_SOFTMAX_TOPK   p = softmax(z) over the E experts; the K experts
 *                        of largest key (key = x, or z + b with a bias);
 *                        w_j = a p_{i_j}, or with renormalize
 *                        w_j = a p_{i_j} / sum_{l<K} p_{i_l} (Switch, GShard,
 *                        Mixtral; Mixtral renormalizes). probs: p.
 * SG_GATE_TOPK_SOFTMAX   the same selection; w = a softmax over the K
 *                        selected z (mathematically equal to SOFTMAX_TOPK
 *                        with renormalize, computed without the full row
 *                        unless probs are asked). probs: p.
 * SG_GATE_SIGMOID_TOPK   s = sigmoid(z) (DeepSeek-V3; "On DeepSeekMoE:
 *                        Statistical Benefits of Shared Experts and
 *                        Normalized Sigmoid Gating"). key = s + b when a
 *                        bias or groups are given (float, as the model
 *                        does), else x itself (sigmoid is monotone). With
 *                        n_group > 1: E is split into n_group equal groups
 *                        of consecutive experts, a group's score is the sum
 *                        of its two largest keys (its one key if a group has
 *                        one expert), the topk_group groups of largest score
 *                        are kept (ties: lower group) and the K experts are
 *                        chosen among theirs. The bias changes the choice,
 *                        never the weight: w_j = a s_{i_j} / sum_l s_{i_l}
 *                        with renormalize (normalized sigmoid gating), else
 *                        w_j = a s_{i_j}. Shared experts, which every token
 *                        visits with weight 1, are outside the gate (the MoE
 *                        layer adds them). probs: s.
 * SG_GATE_NOISY_TOPK     Shazeer et al. 2017, "Outrageously Large Neural
 *                        Networks": z' = x + n * softplus(q) with q the
 *                        learned noise logits [T x E] (noise, ldnoise) and
 *                        n ~ N(0, 1) by Box-Muller from two uniforms,
 *                        n(t, e) = sqrt(-2 ln u(t, 2e)) cos(2 pi u(t, 2e+1))
 *                        (u over a [T x 2E] draw), then SOFTMAX_TOPK on z'
 *                        (renormalize on by default: the paper's softmax
 *                        over the kept top-k). probs: softmax(c z').
 * SG_GATE_GUMBEL_TOPK    z' = x + g, g(t, e) = -ln(-ln u(t, e)) Gumbel(0, 1)
 *                        ("(GG) MoE vs. MLP on Tabular Data"), then
 *                        SOFTMAX_TOPK on z' (a sample of K experts without
 *                        replacement from softmax(x)). probs: softmax(c z').
 * SG_GATE_RANDOM         THOR ("Taming Sparsely Activated Transformer with
 *                        Stochastic Experts"): each token gets K distinct
 *                        experts uniformly at random, the K largest of
 *                        u(t, 0..E-1) (K = 1: one uniform expert), weight
 *                        1/K each. x is not read (may be NULL); probs:
 *                        1/E. Not differentiable.
 *
 * Weights: renormalized gates' weights sum to a per token (within 1e-6
 * relative); others to a times the selected mass. Each weight is within
 * 2e-6 relative of the formula evaluated in double on the float inputs
 * (the noise itself computed in double); probs within the softmax core's
 * bound (or 2e-6 relative for sigmoid).
 */
typedef enum sg_gate_kind {
    SG_GATE_SOFTMAX_TOPK = 0,
    SG_GATE_TOPK_SOFTMAX = 1,
    SG_GATE_SIGMOID_TOPK = 2,
    SG_GATE_NOISY_TOPK = 3,
    SG_GATE_GUMBEL_TOPK = 4,
    SG_GATE_RANDOM = 5
} sg_gate_kind;

SG_API const char *sg_gate_kind_name(sg_gate_kind kind);

/*
 * Parameters of a top-k gate. Start from sg_gate_config_default(kind) and
 * change what differs:
 *   k             experts per token (K), 1 <= K <= E          default 2
 *   renormalize   see above                 default 1 for TOPK_SOFTMAX,
 *                 NOISY_TOPK and SIGMOID_TOPK, 0 for SOFTMAX_TOPK, GUMBEL
 *   temperature   T > 0, finite (z = x / T)                   default 1
 *   routed_scale  a, finite                                   default 1
 *   bias          [E] selection bias or NULL (every kind but RANDOM); must
 *                 be finite                                   default NULL
 *   n_group, topk_group   group-limited selection, SIGMOID_TOPK only:
 *                 n_group 0 or 1 means none; else E % n_group == 0,
 *                 1 <= topk_group <= n_group and K <= topk_group * E /
 *                 n_group                                     default 0, 0
 *   seed, offset  the Philox key and stream offset (NOISY, GUMBEL, RANDOM)
 *   noise, ldnoise  NOISY_TOPK: the noise logits q [T x E]   default NULL
 */
typedef struct sg_gate_config {
    sg_gate_kind kind;
    size_t k;
    int renormalize;
    float temperature;
    float routed_scale;
    const float *bias;
    size_t n_group, topk_group;
    uint64_t seed, offset;
    const float *noise;
    size_t ldnoise;
} sg_gate_config;

SG_API sg_gate_config sg_gate_config_default(sg_gate_kind kind);

/*
 * Forward: ids [T x K] (ldi), weights [T x K] (ldw), probs [T x E] (ldp)
 * or NULL. T == 0 writes nothing. See the family table for each output.
 */
SG_API sg_status sg_gate_f32(sg_context *ctx, const sg_gate_config *cfg, size_t t, size_t e,
                             const float *x, size_t ldx, int32_t *ids, size_t ldi,
                             float *weights, size_t ldw, float *probs, size_t ldp);

/*
 * Backward: given the forward's ids and the gradient dweights [T x K] of a
 * loss with respect to the weights, writes dx [T x E] (lddx) = dL/dx, the
 * selection held fixed (the routes are piecewise constant in x). With c =
 * 1/T, w the weights without the factor a (recomputed from x):
 *   SOFTMAX_TOPK, no renormalize:
 *       dx_e = a c p_e (g_e - sum_j dw_j p_{i_j}),  g_e = dw_j if e = i_j
 *   SOFTMAX_TOPK renormalized, TOPK_SOFTMAX:
 *       dx_e = a c w_e (dw_e - sum_j w_j dw_j) on the selected e, else 0
 *   SIGMOID_TOPK (s' = c s (1 - s)), on the selected e, else 0:
 *       renormalize: dx_e = a s'_e (dw_e - sum_j w_j dw_j) / sum_j s_{i_j}
 *       otherwise:   dx_e = a s'_e dw_e
 *   NOISY_TOPK, GUMBEL_TOPK: as SOFTMAX_TOPK on z' (dz' = dx); NOISY also
 *       writes dnoise [T x E] (ldnoise) = dx * n * sigmoid(q) when dnoise is
 *       not NULL (the same n as the forward: same seed and offset).
 *   RANDOM: SG_ERR_ARGUMENT (not differentiable).
 * The bias gets no gradient (it changes the choice only). ids out of range
 * or repeated in a row are SG_ERR_ARGUMENT. dx may not alias x.
 */
SG_API sg_status sg_gate_backward_f32(sg_context *ctx, const sg_gate_config *cfg, size_t t,
                                      size_t e, const float *x, size_t ldx, const int32_t *ids,
                                      size_t ldi, const float *dweights, size_t lddw, float *dx,
                                      size_t lddx, float *dnoise, size_t lddnoise);

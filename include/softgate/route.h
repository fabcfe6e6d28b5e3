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
 * (the noise itself computed in double) while |c (z_i - max)| < 64, i.e.
 * for every weight above 1e-27 (the exponent's argument is rounded once
 * to float); probs within the softmax core's bound (or 2e-6 relative for
 * sigmoid). See docs/ROUTING.md.
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

/* ------------------------------------------------------------------------ */
/* Expert choice                                                             */
/* ------------------------------------------------------------------------ */

/*
 * Expert-choice routing (Zhou et al., "Mixture-of-Experts with Expert
 * Choice Routing", NeurIPS 2022): p = softmax(x / T) over the experts of
 * each token; each expert e takes the C tokens of largest p_te. The
 * comparison uses the log-probability x_te / T - lse_t in double (lse_t
 * once per token from the softmax kernels, float-accurate; tokens with
 * equal rows get equal keys), never the rounded p; ties to the lower token
 * index. Output per expert:
 * tokens [E x C] (ldt >= C) in descending order of p (ties: lower token
 * first) and weights [E x C] (ldw >= C), weights = p_te; probs [T x E]
 * (ldp) on request. A token may get zero or several experts.
 *
 * sg_expert_choice_capacity: C = min(T, ceil(capacity_factor * T / E)),
 * computed in double; capacity_factor must be finite and > 0 and C >= 1
 * (else SG_ERR_ARGUMENT). sg_gate_expert_choice_f32 takes C (1 <= C <= T).
 * Rows with +inf logits follow the softmax core (the +inf entries share
 * the mass); a row of -inf logits has p = 0 and log-probability -inf. NaN:
 * SG_ERR_ARGUMENT naming the token (the first one). Workspace: 8 T bytes
 * plus, per task, the largest of: 16 C E' + 192 (C <= 16), about
 * 8 (8.5 C + 98) E' + 64 C + 1024 when C >= 2 and T >= 16 C or
 * 16 < C <= 128 and T >= 4 C, 8 (2 T + 3 C) when C >= 64 and 16 C >= T,
 * else 128 C; E' = ceil(E / tasks) rounded up to 8 (tasks = 1, or the
 * thread count when T * E >= 16384). Experts are split across threads; the
 * result never depends on the thread count.
 */
SG_API sg_status sg_expert_choice_capacity(sg_context *ctx, float capacity_factor, size_t t,
                                           size_t e, size_t *c);
SG_API sg_status sg_gate_expert_choice_f32(sg_context *ctx, size_t t, size_t e, const float *x,
                                           size_t ldx, float temperature, size_t c,
                                           int32_t *tokens, size_t ldt, float *weights, size_t ldw,
                                           float *probs, size_t ldp);

/*
 * Backward of expert choice with the choice held fixed: dweights [E x C]
 * is dL/dweights; with G_te = the sum of dweights over the slots where
 * expert e took token t (0 if none), dx_t = softmax backward of G_t:
 *   dx_te = p_te (G_te - sum_e' p_te' G_te') / T.
 * dx [T x E] (lddx) is written in full. tokens out of [0, T) is
 * SG_ERR_ARGUMENT. G is gathered in dx itself; workspace: 4 E bytes when
 * E > 1024.
 */
SG_API sg_status sg_gate_expert_choice_backward_f32(sg_context *ctx, size_t t, size_t e,
                                                    const float *x, size_t ldx, float temperature,
                                                    size_t c, const int32_t *tokens, size_t ldt,
                                                    const float *dweights, size_t lddw, float *dx,
                                                    size_t lddx);

/* ------------------------------------------------------------------------ */
/* Load and balance                                                          */
/* ------------------------------------------------------------------------ */

/*
 * counts[e] = #{(t, j) : ids[t][j] == e} over the T x K assignments.
 * An id outside [0, E) is SG_ERR_ARGUMENT naming the token and slot.
 */
SG_API sg_status sg_route_counts(sg_context *ctx, size_t t, size_t k, const int32_t *ids,
                                 size_t ldi, size_t e, int64_t *counts);

/*
 * Capacity per expert (GShard, Switch): ceil(capacity_factor * T * K / E)
 * in double. capacity_factor must be finite and > 0; a result below one
 * token (T == 0) is SG_ERR_ARGUMENT.
 */
SG_API sg_status sg_route_capacity(sg_context *ctx, float capacity_factor, size_t t, size_t k,
                                   size_t e, size_t *capacity);

/*
 * Which assignments an expert with a bounded buffer keeps. Slot-major, as
 * in GShard: every token's first choice (slot 0) is placed before any
 * token's second choice, and so on; within a slot, tokens in the order of
 *   SG_DROP_BY_TOKEN   increasing token index, or
 *   SG_DROP_BY_WEIGHT  decreasing weight of that slot (ties: lower token);
 *   SG_DROPLESS        nothing is dropped (capacity ignored, may be 0); the
 *                      positions follow the token order.
 * The assignment (t, j) takes position pos[t][j] = the number of earlier
 * placed assignments to expert ids[t][j], if that is below capacity, else
 * it is dropped: pos[t][j] = -1 and weights[t][j] = 0. The kept weights are
 * left as they are, unless renormalize, then each token's kept weights are
 * scaled by (sum of its weights) / (sum of its kept weights) so its total
 * is unchanged (a token with nothing kept keeps zeros).
 *
 * ids [T x K] (ldi), weights [T x K] (ldw, in place), pos [T x K] (ldpos,
 * or NULL), kept [E] (kept count per expert, or NULL). Errors: an id out
 * of [0, E) (naming token and slot); a NaN weight under SG_DROP_BY_WEIGHT;
 * capacity 0 unless dropless. Workspace: 4 T K bytes when pos is NULL plus
 * 8 T under SG_DROP_BY_WEIGHT. Single-threaded (a sequential scan).
 */
typedef enum sg_drop_policy {
    SG_DROP_BY_TOKEN = 0,
    SG_DROP_BY_WEIGHT = 1,
    SG_DROPLESS = 2
} sg_drop_policy;

SG_API sg_status sg_route_apply_capacity_f32(sg_context *ctx, size_t t, size_t k, size_t e,
                                             const int32_t *ids, size_t ldi, float *weights,
                                             size_t ldw, size_t capacity, sg_drop_policy policy,
                                             int renormalize, int32_t *pos, size_t ldpos,
                                             int64_t *kept);

/*
 * The Switch Transformer load-balancing loss (Fedus et al. 2021):
 *   L = alpha * E * sum_e f_e P_e,
 *   f_e = counts_e / (T K), the fraction of the T K assignments (ids,
 *         before any dropping) routed to e,
 *   P_e = (1/T) sum_t p_te, p_t = softmax(x_t) (temperature 1),
 * and its gradient with respect to the logits (f is piecewise constant):
 *   dx_te = (alpha E / T) p_te (f_e - sum_e' p_te' f_e'),
 * written to dx [T x E] (lddx) unless dx is NULL. L is 1 * alpha when
 * both are uniform. Sums in double, in token order (the same bits for every
 * thread count). Errors: NaN logits (naming the token), ids out of range,
 * alpha not finite, T == 0. Workspace: 8 E bytes (+ 4 E if dx is NULL
 * and E > 1024).
 */
SG_API sg_status sg_route_balance_loss_f32(sg_context *ctx, size_t t, size_t e, const float *x,
                                           size_t ldx, size_t k, const int32_t *ids, size_t ldi,
                                           float alpha, float *loss, float *dx, size_t lddx);

/*
 * The router z-loss (Zoph et al., ST-MoE, 2022):
 *   L = (1/T) sum_t lse_t^2,  lse_t = log sum_e exp(x_te),
 *   dx_te = (2 / T) lse_t softmax(x_t)_e,
 * dx [T x E] (lddx) written unless NULL. A row whose lse is not finite (a
 * +inf logit, or every logit -inf) makes L = +inf and gets dx = 0. NaN:
 * SG_ERR_ARGUMENT naming the token; T == 0 is an error. The mean is taken
 * in double in token order.
 */
SG_API sg_status sg_route_z_loss_f32(sg_context *ctx, size_t t, size_t e, const float *x,
                                     size_t ldx, float *loss, float *dx, size_t lddx);

/*
 * The auxiliary-loss-free balance update (Wang et al. 2024, DeepSeek-V3):
 * after a batch with per-expert loads counts[E],
 *   bias_e += rate * sign(mean_load - counts_e),  mean_load = sum_e counts_e / E,
 * sign(0) = 0 (the comparison is exact, in integers). The bias then goes to
 * the gate's cfg->bias (it changes the choice, never the weight). rate
 * must be finite and >= 0.
 */
SG_API sg_status sg_route_bias_update_f32(sg_context *ctx, size_t e, const int64_t *counts,
                                          float rate, float *bias);

/* ------------------------------------------------------------------------ */
/* Dense gates                                                               */
/* ------------------------------------------------------------------------ */

/*
 * These training-time gates run at reference speed: sums and exponentials
 * in double, row by row on the caller's thread (the same bits for every
 * thread count), E <= 1024 (experts per level for the hierarchical gate),
 * no workspace. NaN inputs are SG_ERR_ARGUMENT naming the token. Weights
 * are within 1e-6 relative (plus 1e-7 absolute after the float rounding
 * of the output) of the formula in exact arithmetic on the float inputs.
 */

/*
 * Temperature dense-to-sparse gating and its activation variant (Nguyen
 * et al., "Is Temperature Sample Efficient for Softmax Gaussian Mixture of
 * Experts?", ICML 2024; the dense-to-sparse gate of Nie et al. 2021):
 *   p_te = softmax_e(act(x_te) / tau), then p_te = 0 where p_te < threshold
 * (the kept entries are not renormalized; threshold 0 keeps the dense
 * gate). act: identity (the plain temperature gate), tanh, sigmoid, or GELU
 * x Phi(x) (the activation variant: the logits pass through the
 * activation before the softmax). tau finite and > 0, threshold in [0, 1].
 * x, p [T x E].
 * Backward, the threshold mask held fixed (g = dp on kept entries, 0 on
 * the zeroed ones, p the unthresholded softmax):
 *   dz = p (g - <p, g>),  dx_te = dz_te act'(x_te) / tau,
 *   dtau = -sum_{t,e} dz_te act(x_te) / tau^2  (written when dtau != NULL).
 */
typedef enum sg_gate_activation {
    SG_GATE_ACT_IDENTITY = 0,
    SG_GATE_ACT_TANH = 1,
    SG_GATE_ACT_SIGMOID = 2,
    SG_GATE_ACT_GELU = 3
} sg_gate_activation;

SG_API const char *sg_gate_activation_name(sg_gate_activation act);

SG_API sg_status sg_gate_temperature_f32(sg_context *ctx, size_t t, size_t e, const float *x,
                                         size_t ldx, float tau, sg_gate_activation act,
                                         float threshold, float *p, size_t ldp);
SG_API sg_status sg_gate_temperature_backward_f32(sg_context *ctx, size_t t, size_t e,
                                                  const float *x, size_t ldx, float tau,
                                                  sg_gate_activation act, float threshold,
                                                  const float *dp, size_t lddp, float *dx,
                                                  size_t lddx, float *dtau);

/*
 * Laplace gating logits (Nguyen et al., "On Expert Estimation in
 * Hierarchical Mixture of Experts: Beyond Softmax Gating Functions"):
 *   logits_te = -||x_t - w_e||_2,  x [T x D] tokens, w [E x D] centers,
 * the distance summed in double over the D coordinates. Feed the logits to
 * any gate (sg_gate_f32 with SOFTMAX_TOPK gives the Laplace top-k gate).
 * Backward (dlogits [T x E] given; dx [T x D] and dw [E x D] written in
 * full, either may be NULL):
 *   dx_t = -sum_e dlogits_te (x_t - w_e) / ||x_t - w_e||,
 *   dw_e = +sum_t dlogits_te (x_t - w_e) / ||x_t - w_e||,
 * with the subgradient 0 where x_t == w_e.
 */
SG_API sg_status sg_gate_laplace_logits_f32(sg_context *ctx, size_t t, size_t e, size_t d,
                                            const float *x, size_t ldx, const float *w, size_t ldw,
                                            float *logits, size_t ldl);
SG_API sg_status sg_gate_laplace_logits_backward_f32(sg_context *ctx, size_t t, size_t e, size_t d,
                                                     const float *x, size_t ldx, const float *w,
                                                     size_t ldw, const float *dlogits, size_t lddl,
                                                     float *dx, size_t lddx, float *dw, size_t lddw);

/*
 * Two-level hierarchical gate (Jordan and Jacobs 1994; softmax or Laplace
 * at each level as in Nguyen et al.): E1 groups of E2 experts, expert
 * (g, j) in column g E2 + j. Level-1 logits l1 [T x E1], level-2 logits l2
 * [T x E1 E2] (group g's in columns g E2 .. g E2 + E2 - 1); pass softmax
 * logits, or Laplace logits from sg_gate_laplace_logits_f32 for either
 * level. With top-k then softmax at each level (k1 of E1, k2 of E2; ties to
 * the lower index; k = E is the dense softmax):
 *   w_t,(g,j) = softmax_topk1(l1_t)_g * softmax_topk2(l2_t,g)_j,
 * dense [T x E1 E2], summing to 1 per token. Backward (selections fixed):
 *   dl2_t,g = softmax backward of (dw_t,(g,.) * w1_g) over group g,
 *   dl1_t   = softmax backward of (sum_j dw_t,(g,j) w2_gj) over the groups,
 * zero off the selections.
 */
SG_API sg_status sg_gate_hierarchical_f32(sg_context *ctx, size_t t, size_t e1, size_t e2,
                                          const float *l1, size_t ldl1, const float *l2,
                                          size_t ldl2, size_t k1, size_t k2, float *w, size_t ldw);
SG_API sg_status sg_gate_hierarchical_backward_f32(sg_context *ctx, size_t t, size_t e1, size_t e2,
                                                   const float *l1, size_t ldl1, const float *l2,
                                                   size_t ldl2, size_t k1, size_t k2,
                                                   const float *dw, size_t lddw, float *dl1,
                                                   size_t lddl1, float *dl2, size_t lddl2);

/*
 * DSelect-k (Hazimeh et al., NeurIPS 2021), the per-example gate: k
 * single-expert selectors, each a smooth-step binary encoding over
 * m = sg_dselect_bits(E) = ceil(log2 E) bits, combined by softmax weights:
 *   S(v) = 0 (v <= -gamma/2), 1 (v >= gamma/2),
 *          -2 v^3 / gamma^3 + 3 v / (2 gamma) + 1/2 otherwise;
 *   r_i(e) = prod_{b<m} (bit_b(e) ? S(z_ib) : 1 - S(z_ib)),  bit 0 the most
 *            significant (the reference code's np.binary_repr order);
 *   w_e = sum_i softmax(alpha)_i r_i(e),
 * z [T x k m] (selector i's logits in columns i m .. i m + m - 1), alpha
 * [T x k], w dense [T x E] (two selectors may pick the same expert). When
 * E is not a power of two, the codes e >= E are masked (dropped, as in the
 * reference code) and the regularizer gains the reference code's term
 * 1 / sum_e r_i(e), which keeps the reachable experts' mass from vanishing
 * (guarded: 1 / max(sum, 1e-6), gradient 0 below the guard, where the
 * reference code divides by 0).
 * reg (when not NULL) = sum_t sum_i [entropy_weight * H(r_ti)
 *   + (E != 2^m) / max(sum_e r_ti(e), 1e-6)],
 * H(r) = -sum_e r_e log(r_e + 1e-6).
 * Backward: given dw [T x E] and dreg (the loss's derivative with respect
 * to reg, usually 1 or 0), writes dz [T x k m] and dalpha [T x k].
 * gamma finite > 0; 2 <= E <= 1024; 1 <= k <= 64.
 */
SG_API size_t sg_dselect_bits(size_t e);
SG_API sg_status sg_gate_dselect_f32(sg_context *ctx, size_t t, size_t e, size_t k, float gamma,
                                     float entropy_weight, const float *z, size_t ldz,
                                     const float *alpha, size_t lda, float *w, size_t ldw,
                                     float *reg);
SG_API sg_status sg_gate_dselect_backward_f32(sg_context *ctx, size_t t, size_t e, size_t k,
                                              float gamma, float entropy_weight, const float *z,
                                              size_t ldz, const float *alpha, size_t lda,
                                              const float *dw, size_t lddw, float dreg, float *dz,
                                              size_t lddz, float *dalpha, size_t ldda);

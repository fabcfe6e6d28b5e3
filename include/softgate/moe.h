/*
 * softgate/moe.h - token dispatch and combine, the MoE layer forward.
 * Part of the public API: include <softgate.h>, which includes this file.
 *
 * Routes. A route of T tokens with K slots each is a pair of matrices
 *   ids      int32 [T x K], row stride ldid >= K: the expert of slot k of
 *            token t, in [0, E), or -1 for a dropped assignment (capacity);
 *   weights  float [T x K], row stride ldw >= K: its combine weight.
 * A token may name the same expert in two slots (it is then dispatched
 * twice). Any id outside [-1, E) is SG_ERR_ARGUMENT naming (t, k).
 * T * K must be <= INT32_MAX (positions are int32); otherwise SG_ERR_SHAPE.
 *
 * Expert-contiguous order. The dispatch plan lists the kept (token, slot)
 * pairs sorted by expert, and within one expert by (t, k) ascending (a
 * stable counting sort of the pairs in token-major order). Position p of
 * that order is row p of the expert buffers xe / ye [P x D], P = the number
 * of kept pairs; expert e owns rows [offsets[e], offsets[e + 1]).
 *
 * Determinism: every function below gives bit-identical results for every
 * thread count of the context (fixed summation orders, work split by shape
 * only). NaN and inf in the float inputs propagate through the arithmetic
 * (a NaN weight or activation makes the token's output NaN; nothing is
 * checked or masked). A weight of a dropped slot (id -1) is never read.
 */
#ifndef SOFTGATE_H
#error "include <softgate.h>, not <softgate/moe.h>"
#endif

/* ------------------------------------------------------------------------ */
/* Dispatch and combine                                                      */
/* ------------------------------------------------------------------------ */

/*
 * The dispatch plan of a route (counting sort, O(T K + E), one thread):
 *   offsets  int32 [E + 1]: offsets[0] = 0, offsets[e + 1] - offsets[e] =
 *            the number of pairs routed to e; offsets[E] = P (kept pairs).
 *   order    int32 [T * K]: order[p] = t * K + k of the pair at position
 *            p < P (expert-contiguous, (t, k) ascending inside an expert);
 *            order[p] = -1 for p >= P.
 *   slot_pos int32 [T * K] (may be NULL): the inverse, slot_pos[t * K + k] =
 *            p, or -1 for a dropped slot. combine and the backward passes
 *            take slot_pos.
 * Errors: ids NULL with T * K > 0, offsets or order NULL, ldid < K, an id
 * outside [-1, E), E == 0 with T * K > 0, E > INT32_MAX - 1, T * K > INT32_MAX.
 * T == 0 or K == 0 writes offsets all 0.
 */
SG_API sg_status sg_moe_dispatch_plan(sg_context *ctx, size_t t, size_t e, size_t k,
                                      const int32_t *ids, size_t ldid, int32_t *offsets,
                                      int32_t *order, int32_t *slot_pos);

/*
 * Gather: xe[p] = x[order[p] / K] for p < rows (rows = offsets[E] of the
 * plan), D floats each. x [T x D] (ldx >= D), xe [rows x D] (ldxe >= D);
 * xe must not overlap x. An order entry outside [0, T * K) is
 * SG_ERR_ARGUMENT naming p. Rows are split across threads.
 */
SG_API sg_status sg_moe_gather_f32(sg_context *ctx, size_t t, size_t k, size_t d, size_t rows,
                                   const int32_t *order, const float *x, size_t ldx,
                                   float *xe, size_t ldxe);

/*
 * Combine: a weighted scatter-add back to the tokens, written as a gather
 * so that each token's sum has a fixed order:
 *   y[t] = (accumulate ? y[t] : 0) + w[t,0] ye[pos(t,0)] + w[t,1] ye[pos(t,1)] + ...
 * in float, slot by slot in increasing k (a product, then an addition: no
 * fused multiply-add), skipping dropped slots (slot_pos -1; a token whose
 * slots are all dropped gets 0, or keeps y with accumulate). slot_pos is
 * the plan's [T * K]; ye [rows x D] (ldye >= D); y [T x D] (ldy >= D), not
 * overlapping ye. A slot_pos entry outside [-1, rows) is SG_ERR_ARGUMENT.
 */
SG_API sg_status sg_moe_combine_f32(sg_context *ctx, size_t t, size_t k, size_t d, size_t rows,
                                    const int32_t *slot_pos, const float *weights, size_t ldw,
                                    const float *ye, size_t ldye, float *y, size_t ldy,
                                    int accumulate);

/*
 * Backward of combine with respect to the weights and the expert outputs:
 *   dweights[t,k] = sum_d dy[t,d] ye[pos(t,k),d]   (summed in double, in
 *                   increasing d, rounded once; 0 for a dropped slot)
 *   dye[pos(t,k)] = w[t,k] dy[t]                   (rows of dye that no slot
 *                   names are left untouched)
 * (the gradient of the `accumulate` input y is dy itself). dweights
 * [T x K] (lddw >= K) or dye [rows x D] (lddye >= D) may be NULL to skip
 * it (not both). Shapes and errors as sg_moe_combine_f32.
 */
SG_API sg_status sg_moe_combine_backward_f32(sg_context *ctx, size_t t, size_t k, size_t d,
                                             size_t rows, const int32_t *slot_pos,
                                             const float *weights, size_t ldw,
                                             const float *ye, size_t ldye,
                                             const float *dy, size_t lddy,
                                             float *dweights, size_t lddw,
                                             float *dye, size_t lddye);

/*
 * Backward of gather: dx[t] = (accumulate ? dx[t] : 0) + sum over the kept
 * slots k of t, in increasing k, of dxe[pos(t,k)] (float additions in that
 * fixed order). dxe [rows x D], dx [T x D]; shapes and errors as
 * sg_moe_combine_f32.
 */
SG_API sg_status sg_moe_gather_backward_f32(sg_context *ctx, size_t t, size_t k, size_t d,
                                            size_t rows, const int32_t *slot_pos,
                                            const float *dxe, size_t lddxe,
                                            float *dx, size_t lddx, int accumulate);

/* ------------------------------------------------------------------------ */
/* The MoE layer forward                                                     */
/* ------------------------------------------------------------------------ */

/*
 * Expert FFN on rows X [n x D]:
 *   SG_MOE_SWIGLU     h = silu(X W1^T) * (X W3^T),  silu(a) = a / (1 + exp(-a))
 *   SG_MOE_GELU_TANH  h = gelu(X W1^T), gelu(a) = a/2 (1 + tanh(sqrt(2/pi)
 *                     (a + 0.044715 a^3)))  (GPT-2 / "gelu_new"); W3 unused
 *   SG_MOE_GELU_ERF   h = gelu(X W1^T), gelu(a) = a/2 (1 + erf(a / sqrt 2));
 *                     W3 unused
 *   out = h W2^T  [n x D]
 * The activation is evaluated in double and rounded to float.
 */
typedef enum sg_moe_activation {
    SG_MOE_SWIGLU = 0,
    SG_MOE_GELU_TANH = 1,
    SG_MOE_GELU_ERF = 2
} sg_moe_activation;

/* One expert's weights, row-major and contiguous (row strides D, D, F):
 * w1 [F x D], w3 [F x D] (SwiGLU only; ignored, may be NULL, for GELU),
 * w2 [D x F]. Owned by the caller; the layer only reads them. */
typedef struct sg_moe_ffn {
    const float *w1;
    const float *w3;
    const float *w2;
} sg_moe_ffn;

/*
 * A layer, described by the caller (softgate keeps no state between calls):
 *   d, f, experts, k     D, F, E and K (K <= E)
 *   activation           of every expert, shared ones included
 *   router               W_r [E x D] row-major (one row per expert, the
 *                        layout of torch.nn.Linear(D, E).weight):
 *                        logits[t][e] = sum_d x[t][d] W_r[e][d]; used by
 *                        sg_moe_forward_f32 only (may be NULL otherwise)
 *   expert               [E] routed experts (hidden width F)
 *   shared_experts       S >= 0 experts every token visits with weight 1
 *   f_shared             their hidden width (0 means F)
 *   shared               [S] their weights (NULL when S == 0)
 * Output: y[t] = sum_s FFN_s(x[t]) + sum_k w[t,k] FFN_{id[t,k]}(x[t]),
 * the shared sum first (s increasing), then the routed slots by combine.
 *
 * Threads and BLAS. Expert FFNs run as tasks on the context's threads:
 * (expert, block of F columns) for the up projection and activation, then
 * (expert, block of D columns) for the down projection; the blocks depend
 * on the shapes only, so every thread count makes the same BLAS calls with
 * the same arguments and results are bit-identical. Each task calls
 * OpenBLAS single-threaded: for the duration of the call the layer sets
 * openblas_set_num_threads(1) when OpenBLAS runs more threads, and restores
 * the previous count before returning (that setting is process-global: do
 * not call OpenBLAS from another thread while a layer runs, or pin OpenBLAS
 * to 1 thread yourself). Experts with more than SG_MOE_SMALL_ROWS rows use
 * cblas_sgemm; those with fewer (decode steps) use softgate's own
 * kernel, which streams each weight matrix once for all its rows (AVX-512,
 * AVX2 or portable C by SOFTGATE_ISA). Small results therefore depend on
 * the ISA level (not on threads), within float rounding.
 *
 * Workspace: sg_moe_workspace_bytes(layer, T) bytes, taken from the
 * context (the caller's buffer after sg_context_set_workspace, else memory
 * the context allocates once and keeps); nothing else is allocated.
 */
#define SG_MOE_SMALL_ROWS 32

typedef struct sg_moe_layer {
    size_t d, f, experts, k;
    sg_moe_activation activation;
    const float *router;
    const sg_moe_ffn *expert;
    size_t shared_experts;
    size_t f_shared;
    const sg_moe_ffn *shared;
} sg_moe_layer;

/*
 * Workspace bytes the forward calls need for T tokens (both calls need the
 * same); 0 if the layer's shapes are invalid or the size overflows. The
 * gate of sg_moe_forward_f32 may need its own (route.h: only beyond 1024
 * experts), which it takes from the same context before the layer does:
 * a caller's buffer must then hold the larger of the two.
 */
SG_API size_t sg_moe_workspace_bytes(const sg_moe_layer *layer, size_t t);

/*
 * The layer with routes given by the caller (any gate): x [T x D] (ldx >=
 * D), routes as at the top of this file (ids -1 are dropped slots), y
 * [T x D] (ldy >= D), y must not overlap x.
 * Errors (SG_ERR_ARGUMENT / SG_ERR_SHAPE, the message naming the field):
 * NULL layer, x, y, ids or weights (with T > 0); d, f or experts 0; k 0 or
 * k > experts; an unknown activation; a NULL expert array or a NULL w1, w2
 * (or w3 for SwiGLU) of any expert, routed or shared; shared_experts > 0
 * with shared NULL; an id outside [-1, E); strides below the widths;
 * a workspace too small (SG_ERR_WORKSPACE). T == 0 writes nothing.
 * NaN or inf in x or the weights propagate to the affected tokens' outputs.
 */
SG_API sg_status sg_moe_forward_routed_f32(sg_context *ctx, const sg_moe_layer *layer, size_t t,
                                           const float *x, size_t ldx,
                                           const int32_t *ids, size_t ldid,
                                           const float *weights, size_t ldw,
                                           float *y, size_t ldy);

/*
 * The whole layer: logits = x W_r^T (router [E x D]; few tokens through the
 * few-rows kernel, more through sgemm, in row blocks across threads), then
 * the gate of route.h (sg_gate_f32 with *gate: any top-k gate, e.g.
 * SG_GATE_SOFTMAX_TOPK with renormalize = 1 for Mixtral, SG_GATE_SIGMOID_TOPK
 * with bias and groups for DeepSeek-V3; gate->k must equal layer->k), then
 * sg_moe_forward_routed_f32. The router outputs are written for the caller
 * (the balance losses and the backward need them):
 *   logits  [T x E] (ldl >= E), ids [T x K] (ldid >= K), weights [T x K]
 *   (ldw >= K); none may overlap x or y.
 * Errors: those of sg_moe_forward_routed_f32 and of sg_gate_f32 (a NaN
 * logit, from NaN in x or W_r, is SG_ERR_ARGUMENT naming the token; y is
 * then not written), a NULL router, gate->k != layer->k.
 */
SG_API sg_status sg_moe_forward_f32(sg_context *ctx, const sg_moe_layer *layer,
                                    const sg_gate_config *gate, size_t t,
                                    const float *x, size_t ldx, float *y, size_t ldy,
                                    float *logits, size_t ldl, int32_t *ids, size_t ldid,
                                    float *weights, size_t ldw);

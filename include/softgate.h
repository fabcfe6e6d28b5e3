/*
 * softgate.h - the public API of softgate: the softmax family, gates and
 * mixtures of experts, in C11.
 *
 * Conventions used throughout (shape letters are defined once, here):
 *   N  row length            T  tokens       E  experts
 *   B  batch (rows)          K  experts per token
 *   D  model width           F  expert hidden width
 *
 * Matrices are row-major. A "row stride" (ld*) is the distance in elements
 * between the starts of consecutive rows; it must be >= N. Outputs may alias
 * their own input exactly (in place: y == x with ldy == ldx); any other
 * overlap is undefined.
 *
 * Errors: every function that can fail returns an sg_status. The library
 * never prints, aborts or exits; after a failure sg_context_error(ctx) gives a
 * message naming the argument that was wrong.
 *
 * Threads: an sg_context owns a thread pool. A context must not be used by
 * two caller threads at once; use one context per caller thread. Results are
 * bit-identical for every thread count.
 */
#ifndef SOFTGATE_H
#define SOFTGATE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Marks the public API; everything else is hidden in the shared library. */
#if defined(__GNUC__)
#define SG_API __attribute__((visibility("default")))
#else
#define SG_API
#endif

#define SG_VERSION_MAJOR 0
#define SG_VERSION_MINOR 1
#define SG_VERSION_PATCH 0
#define SG_VERSION_STRING "0.1.0"

/* ------------------------------------------------------------------------ */
/* Status, context, threads, workspace                                       */
/* ------------------------------------------------------------------------ */

typedef enum sg_status {
    SG_OK = 0,
    SG_ERR_ARGUMENT = 1,   /* an argument is invalid (message names it)     */
    SG_ERR_SHAPE = 2,      /* shapes or strides do not fit together          */
    SG_ERR_NO_MEMORY = 3,  /* an allocation failed                           */
    SG_ERR_WORKSPACE = 4,  /* the caller's workspace is too small            */
    SG_ERR_UNSUPPORTED = 5 /* not available on this CPU or in this build    */
} sg_status;

/* A short constant description of a status code ("invalid argument", ...). */
SG_API const char *sg_status_string(sg_status status);

typedef struct sg_context sg_context;

/*
 * Creates a context with `threads` worker threads in total (the calling
 * thread counts as one), 1 to SG_MAX_THREADS; threads == 0 means one per
 * online CPU core (at most SG_MAX_THREADS). On failure *ctx is set to NULL.
 */
#define SG_MAX_THREADS 1024
SG_API sg_status sg_context_create(sg_context **ctx, int threads);
SG_API void sg_context_destroy(sg_context *ctx);
SG_API int sg_context_threads(const sg_context *ctx);

/*
 * The message of the last failed call on this context ("" if none). Valid
 * until the next call on the context.
 */
SG_API const char *sg_context_error(const sg_context *ctx);

/*
 * Workspace. Ops that need scratch memory take it from the context. By
 * default the context allocates (and keeps) what an op needs; after
 * sg_context_set_workspace the context uses only the caller's buffer and an
 * op that needs more returns SG_ERR_WORKSPACE, saying how many bytes it
 * needs. Passing buf == NULL returns to context-managed memory. The softmax
 * family (this header's section 2) needs no workspace at all.
 */
SG_API sg_status sg_context_set_workspace(sg_context *ctx, void *buf, size_t bytes);

/*
 * Runs fn(arg, task) for every task in [0, tasks) on the context's threads
 * (the caller's included) and returns when all are done; the order in which
 * tasks run is unspecified. Lets an engine share softgate's threads instead
 * of oversubscribing the cores. A task may call sg_context_run on the same
 * context (the nested tasks then run inline, on the task's thread) but must
 * not call softgate ops with it: give such tasks a context of their own.
 * NULL ctx or fn: nothing runs.
 */
SG_API void sg_context_run(sg_context *ctx, size_t tasks, void (*fn)(void *arg, size_t task),
                           void *arg);

/* ------------------------------------------------------------------------ */
/* CPU features and kernel dispatch                                          */
/* ------------------------------------------------------------------------ */

/*
 * ISA levels. Kernels are chosen once, at the first call, from the CPU's
 * features, restricted by the environment variable SOFTGATE_ISA:
 *   ref     portable C only (always available)
 *   avx2    x86-64 AVX2 + FMA
 *   avx512  x86-64 AVX-512 F + BW + DQ + VL
 *   native  the best the CPU has (default)
 * A level above what the CPU supports falls back to the best it has; an
 * unrecognized value is treated as native (`softgate info` warns).
 */
typedef enum sg_isa {
    SG_ISA_REF = 0,
    SG_ISA_AVX2 = 1,
    SG_ISA_AVX512 = 2
} sg_isa;

SG_API const char *sg_isa_name(sg_isa isa);
/* The ISA level in use (after SOFTGATE_ISA). */
SG_API sg_isa sg_active_isa(void);
/* Whether the CPU (ignoring SOFTGATE_ISA) supports a level. */
SG_API int sg_cpu_supports(sg_isa isa);
/* The CPU's relevant features as a space-separated string. */
SG_API const char *sg_cpu_features(void);
/* The kernel tables (the core's, then each family's, named "family.slot"):
 * slot i's name and the function chosen for it. */
SG_API size_t sg_kernel_count(void);
SG_API const char *sg_kernel_slot_name(size_t i);
SG_API const char *sg_kernel_impl_name(size_t i);

/* ------------------------------------------------------------------------ */
/* 2. The softmax core                                                       */
/* ------------------------------------------------------------------------ */

/*
 * Algorithms for softmax, log-softmax and logsumexp over a row of N values.
 *
 * SG_SOFTMAX_THREE_PASS   max; exp + sum (+ store); scale. Exact for every
 *                         finite input. Reads the row three times (twice for
 *                         logsumexp), computes each exponential once.
 * SG_SOFTMAX_TWO_PASS     Dukhan & Ablavatski's two-pass algorithm: the sum
 *                         of exp(x) is accumulated as (mantissa, exponent)
 *                         pairs, so no max pass is needed; a second pass
 *                         writes the output. Domain: every |x_i| / T <= 1e7
 *                         (so that x * log2(e) rounds to an exact integer);
 *                         a row outside it (or containing inf or NaN) is
 *                         recomputed by the three-pass algorithm. For T != 1
 *                         its error grows with |x_i| / T, not |x_i - max| / T,
 *                         since 1/T is rounded (see docs/KERNELS.md).
 * SG_SOFTMAX_ONLINE       Milakov & Gimelshein's online normalizer: running
 *                         max and rescaled running sum in one pass (rescaled
 *                         once per block of 4096 elements, not per element),
 *                         then a second pass writes the output. Exact for
 *                         every finite input.
 * SG_SOFTMAX_AUTO         picks per row length from measured thresholds
 *                         (three-pass up to N = 2^22, where the row stays in
 *                         the last-level cache between passes; two-pass
 *                         above). Depends on N only, not on threads.
 *
 * Rows with a boolean or additive mask, rows holding inf or NaN, and every
 * row when T > 1e36 are computed by an exact path (in double where it
 * matters) whatever the algorithm.
 *
 * Pointers: x, y (and dy, dx) may be NULL only when rows * N == 0; lse and
 * dlse are required whenever rows > 0.
 */
typedef enum sg_softmax_algorithm {
    SG_SOFTMAX_AUTO = 0,
    SG_SOFTMAX_THREE_PASS = 1,
    SG_SOFTMAX_TWO_PASS = 2,
    SG_SOFTMAX_ONLINE = 3
} sg_softmax_algorithm;

SG_API const char *sg_softmax_algorithm_name(sg_softmax_algorithm algorithm);

/*
 * Options shared by the softmax-core ops. A NULL options pointer means the
 * defaults from sg_softmax_options_default(): T = 1, no masks, AUTO.
 *
 * The value normalized is  z_i = x_i / T + add_mask_i  over the entries kept
 * by keep_mask, computed as (x_i - max) / T + add_mask_i so that finite x of
 * any magnitude never overflows.
 *
 * keep_mask      uint8 [rows x N], 1 keeps an entry, 0 removes it (any
 *                nonzero value keeps). NULL: keep all.
 * keep_mask_ld   row stride of keep_mask; 0 broadcasts one row of N to all
 *                rows.
 * add_mask       additive mask [rows x N] of the op's element type (float for
 *                _f32 ops, double for _f64 ops). -inf removes an entry exactly
 *                like keep_mask == 0. NULL: none.
 * add_mask_ld    row stride of add_mask; 0 broadcasts one row to all rows.
 * temperature    T; must be finite and > 0 (otherwise SG_ERR_ARGUMENT).
 */
typedef struct sg_softmax_options {
    float temperature;
    sg_softmax_algorithm algorithm;
    const uint8_t *keep_mask;
    size_t keep_mask_ld;
    const void *add_mask;
    size_t add_mask_ld;
} sg_softmax_options;

SG_API sg_softmax_options sg_softmax_options_default(void);

/*
 * Special values (forward), for every algorithm; "removed" means keep_mask 0
 * or add_mask -inf; z is the unmasked value x/T + add_mask:
 *
 *   input                              softmax      log-softmax   logsumexp
 *   removed entry (any x, NaN/inf too)  0            -inf          ignored
 *   z_i = -inf, not removed             0            -inf          ignored
 *   every entry removed or -inf         all 0        all -inf      -inf
 *   any kept z_i NaN                    NaN on kept  NaN on kept   NaN
 *   (removed entries keep 0 / -inf)     entries      entries
 *   c >= 1 kept entries z_i = +inf      1/c there,   -log(c) there, +inf
 *   (no NaN)                            0 elsewhere  -inf elsewhere
 *   finite x, |x| up to 3.4e38          never overflows; exact up to the
 *                                       bound in docs/KERNELS.md
 *   N == 0 or rows == 0                 nothing written (logsumexp: -inf)
 *
 * Backward (vector-Jacobian products):
 *   removed entries get dx = 0 exactly, whatever dy holds;
 *   a NaN in y or dy (kept entries) propagates to the row;
 *   the backward of a row whose forward was +inf-dominated follows the same
 *   formulas with the saved outputs (no special case).
 */

/* y = softmax(z) row by row.  x: [rows x N] (ldx), y: [rows x N] (ldy). */
SG_API sg_status sg_softmax_f32(sg_context *ctx, size_t rows, size_t n,
                         const float *x, size_t ldx, float *y, size_t ldy,
                         const sg_softmax_options *options);

/* y = log_softmax(z) = z - logsumexp(z) row by row. */
SG_API sg_status sg_log_softmax_f32(sg_context *ctx, size_t rows, size_t n,
                             const float *x, size_t ldx, float *y, size_t ldy,
                             const sg_softmax_options *options);

/* lse[r] = logsumexp(z of row r) = log(sum_i exp(z_i)). lse: [rows]. */
SG_API sg_status sg_logsumexp_f32(sg_context *ctx, size_t rows, size_t n,
                           const float *x, size_t ldx, float *lse,
                           const sg_softmax_options *options);

/*
 * Backward passes: gradients with respect to x (the 1/T factor included).
 *   softmax:      dx = y * (dy - sum_j y_j dy_j) / T
 *   log-softmax:  dx = (dy - exp(y) * sum_j dy_j) / T   (sum over kept j)
 *   logsumexp:    dx_i = dlse * softmax(z)_i / T
 * y is the forward output; options must carry the same masks and
 * temperature as the forward call (the algorithm field is ignored).
 * dx may alias dy or y (in place, with the same row stride).
 */
SG_API sg_status sg_softmax_backward_f32(sg_context *ctx, size_t rows, size_t n,
                                  const float *y, size_t ldy,
                                  const float *dy, size_t lddy,
                                  float *dx, size_t lddx,
                                  const sg_softmax_options *options);

SG_API sg_status sg_log_softmax_backward_f32(sg_context *ctx, size_t rows, size_t n,
                                      const float *y, size_t ldy,
                                      const float *dy, size_t lddy,
                                      float *dx, size_t lddx,
                                      const sg_softmax_options *options);

/*
 * logsumexp backward from x. lse may be NULL (recomputed from x) or the
 * saved forward result, which saves the max and sum passes; a non-finite
 * saved value makes that row recompute, and masks always recompute. From a
 * saved lse the relative error of dx grows with |lse| u (the saved float is
 * rounded): pass NULL for the bound of the forward op. dlse: [rows].
 */
SG_API sg_status sg_logsumexp_backward_f32(sg_context *ctx, size_t rows, size_t n,
                                    const float *x, size_t ldx,
                                    const float *lse, const float *dlse,
                                    float *dx, size_t lddx,
                                    const sg_softmax_options *options);

/*
 * Double precision, for the statistical models: same semantics, masks and
 * special values; add_mask points to doubles. Reference speed (scalar code,
 * libm exp/log); single-threaded apart from splitting rows.
 * options->algorithm is ignored (always an exact three-pass).
 */
SG_API sg_status sg_softmax_f64(sg_context *ctx, size_t rows, size_t n,
                         const double *x, size_t ldx, double *y, size_t ldy,
                         const sg_softmax_options *options);
SG_API sg_status sg_log_softmax_f64(sg_context *ctx, size_t rows, size_t n,
                             const double *x, size_t ldx, double *y,
                             size_t ldy, const sg_softmax_options *options);
SG_API sg_status sg_logsumexp_f64(sg_context *ctx, size_t rows, size_t n,
                           const double *x, size_t ldx, double *lse,
                           const sg_softmax_options *options);

/* ------------------------------------------------------------------------ */
/* 3. Random numbers for the stochastic operators                            */
/* ------------------------------------------------------------------------ */

/*
 * Philox4x32-10 (Salmon, Moraes, Dror and Shaw, SC11): out = the 10-round
 * bijection of the 128-bit counter under the 64-bit key. The generator
 * behind every stochastic operator of softgate.
 */
SG_API void sg_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

/*
 * u[r][i] = uniform strictly inside (0, 1) (23 random bits plus one half,
 * times 2^-23: in [2^-24, 1 - 2^-24], never 0 or 1), a pure function of
 * (seed, offset, r, i):
 * key = seed, counter = (i / 4, r, offset). The same numbers for every
 * thread count; the caller advances `offset` between calls (e.g. by the
 * step number) so that calls and layers never repeat each other's draws.
 * rows < 2^32 and n < 2^34 (else SG_ERR_SHAPE). u: [rows x n] with row
 * stride ldu >= n.
 */
SG_API sg_status sg_random_uniform_f32(sg_context *ctx, uint64_t seed, uint64_t offset,
                                       size_t rows, size_t n, float *u, size_t ldu);

/* ------------------------------------------------------------------------ */
/* 4. Sparsemax                                                              */
/* ------------------------------------------------------------------------ */

/*
 * Sparsemax (Martins and Astudillo, "From Softmax to Sparsemax", ICML 2016):
 * the Euclidean projection of z onto the probability simplex,
 *   sparsemax(z) = argmin_{p >= 0, sum p = 1} ||p - z||^2,
 *   p_i = max(z_i - tau, 0), tau the unique threshold with sum_i p_i = 1,
 * so every entry with z_i <= tau is exactly 0. z = x/T + add_mask over the
 * kept entries, with the options, masks, strides and pointer rules of
 * section 2 (options->algorithm is ignored). y == x (ldy == ldx) is allowed.
 *
 * Method (exact, no sorting, no allocation): tau >= max z - 1 (the max
 * alone), so only entries with z_i > max z - 1 can be in the support.
 * Unmasked rows: a vectorized max pass (NaN and +inf flagged) and a
 * vectorized filter pass collect those candidates (threshold rounded down,
 * so none is missed); masked rows: the scalar scan and filter of the
 * masked softmax path. d = z - max z is formed in double for the
 * candidates (so finite x of any magnitude never overflows) and rounded
 * once to float. tau is found by Michelot's iteration on them: S_0 =
 * {d > -1}, tau_t = (sum_{S_t} d - 1) / |S_t| with sums in double, S_{t+1}
 * = {d > tau_t}, until the support stops changing; tau_t increases
 * monotonically (it is Newton's method on sum_i max(d_i - tau, 0) = 1) and
 * is exact when it stops. A cap of 32 iterations bounds the work; past it,
 * bisection on tau narrows [tau_t, max) until no entry lies inside, then
 * tau comes from the exact support formula. Rows with more than 4096
 * candidates use the output row as scratch for d. Cost per row: 2
 * vectorized passes over x, a few vectorized passes over the candidates,
 * one output pass. The kernels (docs/SPARSE.md) are chosen per
 * SOFTGATE_ISA; the order of the double sums may differ between ISA levels
 * in the last bits.
 *
 * Accuracy: each output is within 1e-7 (absolute) of sparsemax of the exact
 * z: d, tau and the output are each rounded by at most 2^-25 on the support,
 * where |d| <= 1 (4e-8 measured). Outputs are >= 0 and sum to 1 within 1e-6.
 *
 * Special values (forward); "removed" means keep_mask 0 or add_mask -inf:
 *   removed entry (any x, NaN/inf too)    0
 *   z_i = -inf, not removed               0
 *   every entry removed or -inf           all 0 (backward: all 0)
 *   any kept z_i NaN                      NaN on kept entries, removed 0
 *   c >= 1 kept entries z_i = +inf        1/c there, 0 elsewhere
 *   (no NaN)
 *   finite x, |x| up to 3.4e38            never overflows
 *   N == 0 or rows == 0                   nothing written
 *   temperature 0, < 0, NaN, inf, or      SG_ERR_ARGUMENT
 *   with 1/T overflowing
 * No workspace is needed; rows are split across the context's threads.
 */
SG_API sg_status sg_sparsemax_f32(sg_context *ctx, size_t rows, size_t n,
                                  const float *x, size_t ldx, float *y, size_t ldy,
                                  const sg_softmax_options *options);

/*
 * Backward (the Jacobian is symmetric, so this is both the JVP and the VJP):
 * with S = {i kept : y_i > 0} the support of the forward output y,
 *   dx_i = (dy_i - mean_{j in S} dy_j) / T  on S,    dx_i = 0 elsewhere,
 * exactly 0 off the support and on removed entries whatever dy holds there.
 * A NaN in a kept y makes the row's kept entries NaN; a NaN in dy on S
 * propagates to S. options must carry the forward's masks and temperature.
 * dx may alias dy or y (with the same row stride).
 */
SG_API sg_status sg_sparsemax_backward_f32(sg_context *ctx, size_t rows, size_t n,
                                           const float *y, size_t ldy,
                                           const float *dy, size_t lddy,
                                           float *dx, size_t lddx,
                                           const sg_softmax_options *options);

/*
 * The sparsemax loss of the paper, per row with target class k = target[r]:
 *   loss[r] = -z_k + 1/2 sum_{j in S} (z_j^2 - tau^2) + 1/2   (>= 0),
 * computed from d = z - max z (it is shift-invariant), and its gradient
 *   dx = (sparsemax(z) - onehot(k)) / T,
 * written to dx (row stride lddx) unless dx is NULL. loss and target:
 * [rows]. dx may alias x (lddx == ldx). A target outside [0, N) or removed
 * by the masks is SG_ERR_ARGUMENT naming the row, and nothing is written
 * (so N == 0 with rows > 0 is an error).
 * Special values: a kept NaN gives loss NaN (dx NaN on kept entries); with
 * c entries z = +inf, loss = 1/2 - 1/(2c) if z_k = +inf, else +inf;
 * z_k = -inf gives +inf; every kept entry -inf gives +inf. dx always
 * follows the formula with sparsemax(z) from the forward table (removed
 * entries 0).
 */
SG_API sg_status sg_sparsemax_loss_f32(sg_context *ctx, size_t rows, size_t n,
                                       const float *x, size_t ldx, const int32_t *target,
                                       float *loss, float *dx, size_t lddx,
                                       const sg_softmax_options *options);

/* The rest of the API, by part; each file is included only from here. */
#include "softgate/sparse.h"
#include "softgate/alternatives.h"
#include "softgate/losses.h"
#include "softgate/route.h"
#include "softgate/moe.h"
#include "softgate/mixture.h"
#include "softgate/io.h"

#ifdef __cplusplus
}
#endif

#endif /* SOFTGATE_H */

/*
 * mix_internal.h - the inside of sg_mix_model and the pieces the EM fit is
 * built from: dense linear algebra on OpenBLAS/LAPACK (mix_linalg.c), the
 * weighted multinomial-logistic and Laplace gate solvers (mix_gate.c), EM
 * (mix_em.c), the model's accessors and predictions (mix_model.c) and its
 * JSON file (mix_json.c). Internal.
 *
 * Internal parameterization: the expert and linear-gate coefficients act on
 * the design row z = [1, (x - center) / scale] (standardized features);
 * the tanh-softmax gate on [1, tanh((x - center) / scale)]; Laplace gates on
 * the centered raw features x - center. Raw-scale copies are made for
 * sg_mix_param.
 */
#ifndef SG_MODELS_MIX_INTERNAL_H
#define SG_MODELS_MIX_INTERNAL_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/context.h"
#include "softgate.h"

/* A level of the gate: `m` alternatives scored either linearly
 * (logit_k = w_k' d / T over design d, row m-1 zero) or by Laplace distance
 * (logit_k = -||xc - w_k||). Hierarchical inner levels have `blocks` gates
 * of m alternatives each, side by side (blocks * m rows of coefficients). */
typedef struct mix_level {
    int laplace;
    int m, blocks;
    double *w; /* [blocks*m x cols], cols = q (linear) or p (Laplace) */
} mix_level;

struct sg_mix_model {
    sg_mix_family family;
    sg_mix_gate gate;
    int E, C, G, K;
    double T;
    size_t p, q, n;
    int tanh_gate;     /* gate design is [1, tanh(z)] */
    int nlevels;       /* 1, or 2 for hierarchical */
    mix_level lev[2];
    double *center, *scale; /* [p] */
    double *beta;           /* Gaussian [E x q]; multinomial [E*C x q] */
    double *sigma2;         /* [E] (Gaussian) */
    /* fit summary */
    double loglik, objective, df, aic, bic, icl, grad_norm, max_decrease, lambda;
    int iterations, converged, best_restart;
    double *trace;
    size_t trace_len;
    double *path; /* [path_len x 4]: lambda, loglik, bic, nonzero */
    size_t path_len;
    /* raw-scale copies for sg_mix_param */
    double *raw_beta, *raw_sigma, *raw_g0, *raw_g1;
    /* names */
    char *response, *metadata;
    char **features, **classes;
};

/* ---- allocation and model lifecycle (mix_model.c) ---------------------- */
void *mix_calloc(size_t count, size_t size);
/* Allocates the parameter arrays for the shape fields already set in m. */
int mix_model_alloc(sg_mix_model *m);
/* Columns of level l's coefficient rows. */
size_t mix_level_cols(const sg_mix_model *m, int l);
/* Fills the raw-scale copies; 0 on allocation failure. */
int mix_model_finish(sg_mix_model *m);
/* Deep copy of the parameters (not the names, trace or path). */
sg_mix_model *mix_model_clone(const sg_mix_model *m);
void mix_params_copy(sg_mix_model *dst, const sg_mix_model *src);
/* Free parameter count of the model's structure (no Lasso). */
double mix_model_df(const sg_mix_model *m);

/* ---- designs and the E-step (mix_model.c) ------------------------------ */
typedef struct mix_design {
    size_t n;
    double *z;  /* [n x q] [1, standardized x] */
    double *u;  /* [n x q] [1, tanh(standardized x)] or NULL */
    double *xc; /* [n x p] centered x or NULL (Laplace levels only) */
} mix_design;
int mix_design_build(const sg_mix_model *m, size_t n, const double *x, size_t ldx,
                     mix_design *d);
void mix_design_free(mix_design *d);

/* log g [n x E] (gate log-probabilities; -inf off the top-K). Returns 0,
 * or -1 when out of memory. */
int mix_gate_logprob(sg_context *ctx, const sg_mix_model *m, const mix_design *d,
                     double *logg);
/* Dense single-level gates with finite logits (the usual softmax gate):
 * lsh [n x E] = each row's logits minus their maximum (log g plus the
 * row's log-sum, without the log), sums [n] = sum_k exp(lsh_k) (in
 * [1, E]), prob [n x E] = exp(lsh) / sums (mix_exp; the maximum's
 * exp(0) = 1 not computed). Returns 1; 0 for other gates or non-finite
 * logits (lsh then holds scratch; use mix_gate_logprob). */
int mix_gate_shifted(const sg_mix_model *m, const mix_design *d, double *lsh, double *prob,
                     double *sums);
/* Expert means: Gaussian mu [n x E]; multinomial log P [n x (E*C)]. */
int mix_expert_scores(sg_context *ctx, const sg_mix_model *m, const mix_design *d,
                      double *out);
/* log f_k(y_i | x_i) [n x E] from the scores above (overwritten). */
void mix_expert_logdens(const sg_mix_model *m, size_t n, const double *scores,
                        const double *y, const int32_t *labels, double *logf);

/* ---- linear algebra (mix_linalg.c) ------------------------------------- */
/* Solves A x = b for symmetric positive definite A [k x k] (overwritten by
 * its Cholesky factor); b overwritten by x. Returns 0 on success. */
int mix_spd_solve(int k, double *a, double *b);
/* Cholesky factor of A in place (0 on success), and a solve with it. */
int mix_spd_factor(int k, double *a);
int mix_spd_solve_factored(int k, const double *a, double *b);
/* Minimizes 1/2 (v - v0)' A (v - v0) - g' (v - v0) + pen * sum_{j in
 * penalized} |v_j| by cyclic coordinate descent to tolerance; v in/out
 * (starts from v0). penalized[j] != 0 marks penalized coordinates.
 * Returns 0, or -1 when out of memory. */
int mix_cd_l1(int k, const double *a, const double *g, const double *v0, double pen,
               const unsigned char *penalized, double *v);
/* c [n x m] (ldc) = alpha a b' for a [n x q] (lda), b [m x q] (ldb); and
 * c [m x q] = a' b for a [n x m] (lda), b [n x q] (ldb). Plain loops for
 * small m*q, OpenBLAS dgemm otherwise. */
void mix_gemm_nt(size_t n, int m, int q, double alpha, const double *a, size_t lda,
                 const double *b, size_t ldb, double *c, size_t ldc);
void mix_gemm_tn(size_t n, int m, int q, const double *a, size_t lda, const double *b,
                 size_t ldb, double *c);
/* c [k x k] = sum_i w_i a_i a_i' for rows a_i of a [n x k] (lda), w >= 0
 * or NULL (1); uses a scratch of n*k doubles. */
void mix_weighted_gram(size_t n, int k, const double *a, size_t lda, const double *w,
                       double *c, double *scratch);

/* ---- gate / multinomial solvers (mix_gate.c) --------------------------- */
/* A weighted multinomial-logistic problem: maximize
 *   F(W) = sum_i sum_k r_ik log P_ik - ridge n/2 ||W||^2 - lam n ||W[:,1:]||_1
 * with P_i = softmax over the top-K of (W d_i / T) (K = m: dense), row
 * m-1 of W fixed at 0. d [n x q] (ldd), r [n x m] (ldr). */
typedef struct mix_mlogit {
    size_t n;
    int q, m, k;
    double T, ridge, lam;
    const double *d;
    size_t ldd;
    const double *r;
    size_t ldr;
    /* optional (NULL: none): log P at the starting W, [n x m] (ld m), dense
     * gates (k == m) only; mix_mlogit_fit starts from it instead of
     * evaluating W */
    const double *lp0;
    /* Newton stops once the decrement g' A^-1 g (about twice the gain
     * left) is at most max(2e-13 max(1, |F|), dec_tol): 0 solves to
     * convergence; EM passes a fraction of its last gain (mix_em.c) */
    double dec_tol;
    /* optional with lp0 (NULL: P = exp(lp0)): P at the starting W [n x m];
     * lp0 then holds the max-shifted logits (mix_gate_shifted) and s0 [n]
     * the row sums of their exponentials, log P = lp0 - log s0 */
    const double *p0, *s0;
} mix_mlogit;
/* Newton (proximal Newton with lam > 0) with step halving, from W, to
 * convergence (at most max_newton steps). *f receives the final F.
 * Returns 0, or -1 when out of memory. */
int mix_mlogit_fit(const mix_mlogit *pb, double *w, int max_newton, double *f);
/* F at W and, if gnorm != NULL, the max-norm / n of its gradient over the
 * free coordinates (minimum-norm subgradient with lam > 0). */
int mix_mlogit_value(const mix_mlogit *pb, const double *w, double *f, double *gnorm);

/* The Laplace problem: P_i = softmax(-||xc_i - w_k||), w [m x p]; ridge on
 * w as above, no l1. Gradient ascent with Barzilai-Borwein steps and
 * backtracking (every accepted step increases F). */
typedef struct mix_laplace {
    size_t n;
    int p, m;
    double ridge;
    const double *xc;
    size_t ldx;
    const double *r;
    size_t ldr;
} mix_laplace;
int mix_laplace_fit(const mix_laplace *pb, double *w, int max_steps, double *f);
int mix_laplace_value(const mix_laplace *pb, const double *w, double *f, double *grad,
                      double *gnorm);

/* ---- EM (mix_em.c) ----------------------------------------------------- */
sg_status mix_fit(sg_context *ctx, const sg_mix_spec *spec, size_t n, size_t p,
                  const double *x, size_t ldx, const double *y, const int32_t *labels,
                  sg_mix_model **out);

/* Checks spec against n, p; fills the model's shape fields. */
sg_status mix_check_spec(sg_context *ctx, const sg_mix_spec *spec, size_t n, size_t p,
                         sg_mix_model *m);
/* Checks data; NULL x allowed for p == 0. */
sg_status mix_check_data(sg_context *ctx, const char *op, const sg_mix_model *m, size_t n,
                         const double *x, size_t ldx, const double *y,
                         const int32_t *labels);

/* Small deterministic generator for the initializations. */
typedef struct mix_rng {
    uint64_t s;
} mix_rng;
uint64_t mix_rng_next(mix_rng *r);
double mix_rng_uniform(mix_rng *r); /* [0, 1) */

/* sum_i log(v_i) for v_i in [1, 2^8] by one log per 32 terms: a running
 * product renormalized by frexp every 32 factors (no overflow below 2^256),
 * then log(product) + exponent ln 2. Rounding: about 32 ulp of the log per
 * 32 terms, the size of summing the logs. */
typedef struct mix_logsum {
    double p;
    int e, cnt;
} mix_logsum;
static inline void mix_logsum_add(mix_logsum *a, double v) {
    a->p *= v;
    if (++a->cnt == 32) {
        int e;
        a->p = frexp(a->p, &e);
        a->e += e, a->cnt = 0;
    }
}
static inline double mix_logsum_value(const mix_logsum *a) {
    return log(a->p) + (double)a->e * 0.69314718055994530942;
}

/* exp(x) for the EM fit's hot loops (E-step, gate objective and gate
 * log-softmax), inline: x = k ln2/128 + r, |r| <= ln2/256 (Cody-Waite: the
 * high part of ln2/128 has 29 significant bits, so k times it is exact for
 * |k| < 2^24), exp(r) - 1 by its Taylor polynomial of degree 5 (truncation
 * below 6e-19 relative), 2^(k/128) from mix_exp_tab (nearest double and
 * its relative rounding error, folded into the correction term), the
 * power of two added to the exponent bits. Within 1 ulp of exp (about
 * 0.51 ulp; test mixture_exp_ulp against long double); mix_exp(0) == 1
 * exactly. |x| > 700, infinities and NaN go to libm's exp (results there
 * are libm's). Plain C with no contraction (ISO C mode compiles with
 * -ffp-contract=off), the same value for the same input on every path and
 * thread count. */
#define MIX_EXP_N 128
extern const double mix_exp_tab[2 * MIX_EXP_N];
static inline double mix_exp(double x) {
    if (!(fabs(x) <= 700.0)) return exp(x);
    double kd = x * 0x1.71547652b82fep+7; /* x 128 / ln2 */
    kd = (kd + 0x1.8p52) - 0x1.8p52;      /* nearest integer */
    int64_t k = (int64_t)kd;
    double r = (x - kd * 0x1.62e42ff000000p-8) - kd * -0x1.718432a1b0e26p-42;
    double p = r + r * r * (0.5 + r * (1.0 / 6 + r * (1.0 / 24 + r * (1.0 / 120))));
    uint64_t j = (uint64_t)k & (MIX_EXP_N - 1), bits;
    double s = mix_exp_tab[2 * j];
    memcpy(&bits, &s, sizeof bits);
    bits += ((uint64_t)k - j) << 45; /* + (k - j) / 128 in the exponent */
    memcpy(&s, &bits, sizeof s);
    return s + s * (p + mix_exp_tab[2 * j + 1]);
}

#endif

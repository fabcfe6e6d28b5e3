/*
 * softgate/mixture.h - classical mixtures of experts fitted by EM.
 * Part of the public API: include <softgate.h>, which includes this file.
 *
 * The model (docs/MIXTURE.md has the likelihoods and every convention):
 *   p(y | x) = sum_k g_k(x) f_k(y | x),   k = 0 .. E-1,
 * with a gate g (softmax, tanh-softmax, Laplace, top-K, temperature or a
 * two-level hierarchy) and experts f_k that are Gaussian linear
 * regressions N(b_k' [1, x], s_k^2) or multinomial logistic regressions
 * over C classes. Parameters are estimated by maximum likelihood (or
 * Lasso-penalized maximum likelihood) with EM in double precision.
 *
 * Shapes: n observations, p covariates (features), E experts, C classes,
 * G groups (hierarchical gate). x is row-major [n x p] with row stride
 * ldx >= p (ldx is ignored when p == 0 and x may then be NULL).
 *
 * Parameter layout returned by sg_mix_param (raw feature scale unless
 * stated; every matrix row-major, "q" = p + 1 columns with the intercept
 * first):
 *   SG_MIX_PARAM_EXPERT_COEF  Gaussian: [E x q], row k = b_k.
 *                             Multinomial: [(E*C) x q], row k*C + c = the
 *                             logit coefficients of class c in expert k;
 *                             class C-1 is the reference (row all zero).
 *   SG_MIX_PARAM_SIGMA        Gaussian: [E x 1] standard deviations s_k.
 *                             Multinomial: not available (NULL).
 *   SG_MIX_PARAM_GATE_COEF    the (top-level) gate:
 *                             softmax, top-K, temperature: [E x q], logit
 *                             of expert k = w_k' [1, x] (divided by the
 *                             temperature for the temperature gate); row
 *                             E-1 is fixed at zero (identifiability).
 *                             tanh-softmax: [E x q] acting on [1, u] with
 *                             u_j = tanh((x_j - center_j) / scale_j)
 *                             (not on raw x), row E-1 zero.
 *                             Laplace: [E x p] centers w_k, logit of
 *                             expert k = -||x - w_k|| (Euclidean norm).
 *                             Hierarchical: [G x q] (softmax level, row
 *                             G-1 zero) or [G x p] (Laplace level) over
 *                             the G groups.
 *   SG_MIX_PARAM_GATE2_COEF   hierarchical only: the inner gates, [E x q]
 *                             (softmax: within each group of m = E/G
 *                             consecutive experts the group's last row is
 *                             zero) or [E x p] (Laplace). Expert k belongs
 *                             to group k / m.
 *   SG_MIX_PARAM_INPUT_CENTER [p x 1] the feature means used internally
 *                             (tanh-softmax: the transform's centers).
 *   SG_MIX_PARAM_INPUT_SCALE  [p x 1] the feature standard deviations
 *                             used internally (1 for a constant feature).
 *
 * Errors: every function returns an sg_status and, after a failure, a
 * message from sg_context_error(ctx) naming the argument or the field that
 * is wrong. Functions without a context (accessors) return NULL / NaN / 0
 * on bad arguments. The library never prints.
 *
 * Threads and determinism: a fit is a pure function of (spec, data): the
 * same bits for every thread count of the context.
 */
#ifndef SOFTGATE_H
#error "include <softgate.h>, not <softgate/mixture.h>"
#endif

/* Expert families. */
typedef enum sg_mix_family {
    SG_MIX_GAUSSIAN = 0,    /* y real: N(b_k' [1, x], s_k^2)                     */
    SG_MIX_MULTINOMIAL = 1  /* y a class 0..C-1: multinomial logistic experts  */
} sg_mix_family;

/* Gates. */
typedef enum sg_mix_gate {
    SG_MIX_GATE_SOFTMAX = 0,      /* softmax(W [1, x]), last row of W zero          */
    SG_MIX_GATE_LAPLACE = 1,      /* softmax(-||x - w_k||)                          */
    SG_MIX_GATE_TOPK = 2,         /* softmax over the top_k largest logits only    */
    SG_MIX_GATE_TEMPERATURE = 3,  /* softmax(W [1, x] / temperature), T fixed     */
    SG_MIX_GATE_HIERARCHICAL = 4, /* two levels: group gate x gate within group    */
    SG_MIX_GATE_TANH_SOFTMAX = 5  /* modified softmax: softmax(W [1, tanh(std x)]) */
} sg_mix_gate;

/* Initialization strategies (docs/MIXTURE.md, "Initialization"). */
typedef enum sg_mix_init {
    SG_MIX_INIT_AUTO = 0,      /* restart r uses strategy r mod 4 of the 4 below */
    SG_MIX_INIT_PARTITION = 1, /* a random partition of the observations        */
    SG_MIX_INIT_KMEANS = 2,    /* k-means (k-means++ seeding) on standardized (x, y) */
    SG_MIX_INIT_LINES = 3,     /* each expert fitted to a random subset of 2q points;
                                  gate uniform                                   */
    SG_MIX_INIT_MIXREG = 4,    /* a mixture of experts without covariates in the
                                  gate (constant proportions), fitted by EM from a
                                  random partition, then the full model           */
    SG_MIX_INIT_LABELS = 5     /* the caller's partition spec.init_labels (every
                                  restart starts from it; e.g. flexmix's cluster=) */
} sg_mix_init;

/*
 * Progress callback, called once per EM iteration of every restart (and
 * every penalty of a Lasso path, where `restart` counts path fits after
 * the restarts) with the penalized observed log-likelihood. Must not call
 * softgate functions on the fitting context.
 */
typedef void (*sg_mix_progress_fn)(void *user, int restart, int iteration, double loglik);

/*
 * What to fit. Start from sg_mix_spec_default() and change fields; a later
 * version may append fields (always with defaults set by that function).
 *
 * family, gate      as above (default GAUSSIAN, SOFTMAX).
 * experts           E >= 1 (default 2). E == 1 is a plain regression.
 * top_k             TOPK gate: 1 <= K <= E (default 2).
 * temperature       TEMPERATURE gate: T > 0, finite (default 1).
 * groups            HIERARCHICAL: G >= 1 groups with E % G == 0 (default 2).
 * level_gate[2]     HIERARCHICAL: the gate of the group level [0] and of the
 *                   within-group level [1]: SOFTMAX or LAPLACE each.
 * classes           MULTINOMIAL: C >= 2 (labels 0..C-1).
 * lasso             0: plain maximum likelihood. > 0: the l1 penalty
 *                   lambda * n * (sum |slope coefficients| of experts and
 *                   gate, on the standardized features); intercepts,
 *                   variances and Laplace centers are not penalized.
 *                   < 0: a path of path_length penalties from lambda_max
 *                   (the smallest that zeroes every penalized coefficient)
 *                   down to path_min_ratio * lambda_max (log-spaced, warm
 *                   starts), the model of smallest BIC returned (df = the
 *                   number of nonzero parameters).
 * path_length       default 20 (>= 2). path_min_ratio default 1e-3, in (0,1).
 * restarts          >= 1 (default 5): starts from different initializations
 *                   (seeded); the best penalized log-likelihood is kept.
 * seed              all randomness derives from it (default 1).
 * init              strategy (default AUTO). init_labels: [n] values in
 *                   [0, E), required for SG_MIX_INIT_LABELS, else ignored.
 * max_iter          EM iteration cap per restart (default 2000), the
 *                   escape step's candidate iterations included.
 * tol               relative change of the penalized log-likelihood between
 *                   iterations under which EM may stop (default 1e-10) ...
 * grad_tol          ... once the gradient norm (info.grad_norm) is also
 *                   below grad_tol (default 1e-6). Both must hold, except
 *                   for the top-K gate, whose likelihood has kinks where a
 *                   top-K set changes: there the relative change decides.
 * gate_ridge        ridge (gate_ridge * n / 2) ||W||^2 on the gate (and
 *                   multinomial expert) coefficients on the standardized
 *                   scale, intercepts included: keeps separable data from
 *                   sending coefficients to infinity (default 1e-8; >= 0).
 * var_floor         the variance floor, relative to the sample variance of
 *                   y: s_k^2 >= var_floor * var(y) (default 1e-6; > 0).
 * progress, progress_user  optional callback (NULL: none).
 * escape            nonzero (default 1): once a start's fit has converged
 *                   (not when max_iter stopped it),
 *                   try split-and-merge and move candidates, keep one if it
 *                   converges higher (docs/MIXTURE.md, "The escape step");
 *                   Gaussian experts, one dense linear gate level, no
 *                   Lasso; elsewhere ignored. 0: plain EM from each start.
 * accelerate        nonzero (default 1): SQUAREM extrapolation after every
 *                   two EM steps, kept only when the objective does not
 *                   decrease; convergence is tested after plain EM steps
 *                   (the same fixed points). Ignored with a Lasso penalty
 *                   or a top-K gate. 0: plain EM.
 */
typedef struct sg_mix_spec {
    sg_mix_family family;
    sg_mix_gate gate;
    int experts;
    int top_k;
    double temperature;
    int groups;
    sg_mix_gate level_gate[2];
    int classes;
    double lasso;
    int path_length;
    double path_min_ratio;
    int restarts;
    uint64_t seed;
    sg_mix_init init;
    const int32_t *init_labels;
    int max_iter;
    double tol;
    double grad_tol;
    double gate_ridge;
    double var_floor;
    sg_mix_progress_fn progress;
    void *progress_user;
    int escape;
    int accelerate;
} sg_mix_spec;

SG_API sg_mix_spec sg_mix_spec_default(void);

/* Short names: "gaussian"/"multinomial"; "softmax", "laplace", "topk",
 * "temperature", "hierarchical", "tanh_softmax"; "auto", "partition",
 * "kmeans", "lines", "mixreg", "labels". NULL for an unknown value. */
SG_API const char *sg_mix_family_name(sg_mix_family family);
SG_API const char *sg_mix_gate_name(sg_mix_gate gate);
SG_API const char *sg_mix_init_name(sg_mix_init init);

typedef struct sg_mix_model sg_mix_model;

/*
 * Fits a model. x: [n x p] (ldx >= p), finite. Gaussian: y [n] finite
 * (labels ignored, may be NULL). Multinomial: labels [n] in [0, C) (y
 * ignored, may be NULL). n must exceed the number of free parameters
 * (df) and be >= 2. Returns the best fit over the restarts in *out (NULL
 * on failure). Errors: SG_ERR_ARGUMENT (bad spec field, NULL data, a
 * non-finite value or a label out of range, naming the row and column),
 * SG_ERR_SHAPE (ldx < p, n too small), SG_ERR_NO_MEMORY; if every
 * restart degenerates (an expert's variance at the floor with no
 * observations left, or a non-finite likelihood), SG_ERR_ARGUMENT saying
 * so. A fit that reaches max_iter is still returned (info.converged = 0).
 */
SG_API sg_status sg_mix_fit(sg_context *ctx, const sg_mix_spec *spec, size_t n, size_t p,
                            const double *x, size_t ldx, const double *y,
                            const int32_t *labels, sg_mix_model **out);

SG_API void sg_mix_model_free(sg_mix_model *model);

/*
 * Summary of a model. loglik is the observed-data log-likelihood on the
 * training data (penalty excluded); objective the penalized value that EM
 * maximized (loglik - ridge - l1 terms). df: free parameters (Lasso: the
 * nonzero penalized coefficients plus the unpenalized ones); AIC =
 * -2 loglik + 2 df; BIC = -2 loglik + df log n; ICL = BIC + 2 EN with EN
 * = -sum_ik tau_ik log tau_ik the entropy of the posterior
 * responsibilities. grad_norm: the max-norm of the gradient of objective/n
 * with respect to the internal parameters (standardized-scale
 * coefficients, log s_k) (Lasso: of the minimum-norm subgradient, i.e. the
 * KKT violation). max_decrease: the largest decrease of the objective
 * between two EM iterations of the returned fit (0 when monotone).
 * Models loaded from JSON carry the values saved with them.
 */
typedef struct sg_mix_info {
    sg_mix_family family;
    sg_mix_gate gate;
    int experts, classes, groups, top_k;
    size_t p, n;
    double temperature;
    double loglik, objective, df, aic, bic, icl;
    int iterations, converged, best_restart;
    double grad_norm, max_decrease;
    double lambda; /* the penalty of this model (0: none) */
} sg_mix_info;

/* Fills *info; SG_ERR_ARGUMENT if model or info is NULL. */
SG_API sg_status sg_mix_model_info(const sg_mix_model *model, sg_mix_info *info);

typedef enum sg_mix_param_kind {
    SG_MIX_PARAM_EXPERT_COEF = 0,
    SG_MIX_PARAM_SIGMA = 1,
    SG_MIX_PARAM_GATE_COEF = 2,
    SG_MIX_PARAM_GATE2_COEF = 3,
    SG_MIX_PARAM_INPUT_CENTER = 4,
    SG_MIX_PARAM_INPUT_SCALE = 5
} sg_mix_param_kind;

/* A parameter block (layout in the comment at the top of this file):
 * a pointer owned by the model, valid until it is freed, and its shape in
 * *rows x *cols (row-major, contiguous). NULL (and 0 x 0) when the model
 * has no such block. */
SG_API const double *sg_mix_param(const sg_mix_model *model, sg_mix_param_kind which,
                                  size_t *rows, size_t *cols);

/*
 * The penalized log-likelihood along the returned fit, nondecreasing: the
 * start first, then each point EM kept (a plain EM iteration, or an
 * accepted SQUAREM extrapolation, so the count can exceed
 * info.iterations); when the escape step replaced the fit, the candidate's
 * values from its first one above the fit it replaced. *count receives
 * the length. Loaded models have no trace (NULL, 0).
 */
SG_API const double *sg_mix_trace(const sg_mix_model *model, size_t *count);

/*
 * Lasso path (lasso < 0): the number of penalties tried, and for entry i
 * its lambda, log-likelihood, BIC and number of nonzero penalized
 * coefficients (any pointer may be NULL). Returns SG_ERR_ARGUMENT for i
 * out of range or a model without a path (sg_mix_path_length == 0).
 */
SG_API size_t sg_mix_path_length(const sg_mix_model *model);
SG_API sg_status sg_mix_path_entry(const sg_mix_model *model, size_t i, double *lambda,
                                   double *loglik, double *bic, size_t *nonzero);

/*
 * Predictions for new x [n x p] (ldx >= p). out: Gaussian [n] the mean
 * sum_k g_k(x) b_k'[1, x] (ldo ignored); multinomial [n x C] with row
 * stride ldo >= C, the class probabilities sum_k g_k(x) P_k(c | x).
 * gate: [n x E] (ldg >= E) the gate probabilities, or NULL. out may be
 * NULL. Non-finite x gives NaN rows (no error). Errors: NULL model/x
 * with n > 0, strides too small.
 */
SG_API sg_status sg_mix_predict(sg_context *ctx, const sg_mix_model *model, size_t n,
                                const double *x, size_t ldx, double *out, size_t ldo,
                                double *gate, size_t ldg);

/*
 * Held-out evaluation: the observed log-likelihood of (x, y) or (x,
 * labels) under the model in *loglik, and optionally the posterior
 * responsibilities tau [n x E] (ldpost >= E; NULL: not written). Same
 * argument rules as sg_mix_fit (finite data, labels in range).
 */
SG_API sg_status sg_mix_evaluate(sg_context *ctx, const sg_mix_model *model, size_t n,
                                 const double *x, size_t ldx, const double *y,
                                 const int32_t *labels, double *loglik, double *post,
                                 size_t ldpost);

/*
 * Optional names carried by the model into its JSON file: the response,
 * the p features and the C class labels (any array may be NULL: keeps the
 * current names; each name <= 255 bytes, UTF-8, copied), and a free
 * metadata string of any length (e.g. the CLI's one-hot encoding; NULL:
 * keeps the current one).
 * sg_mix_name returns NULL when unset or out of range.
 */
typedef enum sg_mix_name_kind {
    SG_MIX_NAME_RESPONSE = 0, /* index ignored */
    SG_MIX_NAME_FEATURE = 1,
    SG_MIX_NAME_CLASS = 2,
    SG_MIX_NAME_METADATA = 3  /* index ignored */
} sg_mix_name_kind;

SG_API sg_status sg_mix_set_names(sg_context *ctx, sg_mix_model *model, const char *response,
                                  const char *const *features, const char *const *classes,
                                  const char *metadata);
SG_API const char *sg_mix_name(const sg_mix_model *model, sg_mix_name_kind which, size_t i);

/*
 * Model files: versioned JSON ("format": "softgate-mixture", "version": 1).
 * Saving writes every parameter with 17 significant digits, so a loaded
 * model predicts exactly the same bits. Loading checks every field (type,
 * size, range, finiteness, consistency with the others) and fails with
 * SG_ERR_ARGUMENT and a message naming the file and the field: not JSON
 * (with the byte offset), another format, an unsupported version, a
 * missing or extra-sized field, NaN/inf. *model is NULL on failure.
 * The _string variants work on a NUL-terminated buffer (save: *json is
 * malloc'ed, to be freed by the caller with free()).
 */
SG_API sg_status sg_mix_save_json(sg_context *ctx, const sg_mix_model *model, const char *path);
SG_API sg_status sg_mix_load_json(sg_context *ctx, const char *path, sg_mix_model **model);
SG_API sg_status sg_mix_save_json_string(sg_context *ctx, const sg_mix_model *model, char **json);
SG_API sg_status sg_mix_load_json_string(sg_context *ctx, const char *json, sg_mix_model **model);

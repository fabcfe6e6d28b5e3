/*
 * mix_model.c - sg_mix_model outside of fitting: the spec's defaults and
 * checks, the model's memory, the design matrices, the gate and expert
 * densities shared by EM and prediction, the public accessors, predict,
 * evaluate and names. EM is in mix_em.c, the JSON file in mix_json.c.
 */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "models/mix_internal.h"

#define LOG_2PI 1.8378770664093454836

sg_mix_spec sg_mix_spec_default(void) {
    sg_mix_spec s;
    memset(&s, 0, sizeof s);
    s.family = SG_MIX_GAUSSIAN;
    s.gate = SG_MIX_GATE_SOFTMAX;
    s.experts = 2;
    s.top_k = 2;
    s.temperature = 1.0;
    s.groups = 2;
    s.level_gate[0] = SG_MIX_GATE_SOFTMAX;
    s.level_gate[1] = SG_MIX_GATE_SOFTMAX;
    s.classes = 2;
    s.lasso = 0;
    s.path_length = 20;
    s.path_min_ratio = 1e-3;
    s.restarts = 5;
    s.seed = 1;
    s.init = SG_MIX_INIT_AUTO;
    s.init_labels = NULL;
    s.max_iter = 2000;
    s.tol = 1e-10;
    s.grad_tol = 1e-6;
    s.gate_ridge = 1e-8;
    s.var_floor = 1e-6;
    s.progress = NULL;
    s.progress_user = NULL;
    s.escape = 1;
    s.accelerate = 1;
    return s;
}

const char *sg_mix_family_name(sg_mix_family f) {
    switch (f) {
    case SG_MIX_GAUSSIAN: return "gaussian";
    case SG_MIX_MULTINOMIAL: return "multinomial";
    }
    return NULL;
}

const char *sg_mix_gate_name(sg_mix_gate g) {
    switch (g) {
    case SG_MIX_GATE_SOFTMAX: return "softmax";
    case SG_MIX_GATE_LAPLACE: return "laplace";
    case SG_MIX_GATE_TOPK: return "topk";
    case SG_MIX_GATE_TEMPERATURE: return "temperature";
    case SG_MIX_GATE_HIERARCHICAL: return "hierarchical";
    case SG_MIX_GATE_TANH_SOFTMAX: return "tanh_softmax";
    }
    return NULL;
}

const char *sg_mix_init_name(sg_mix_init i) {
    switch (i) {
    case SG_MIX_INIT_AUTO: return "auto";
    case SG_MIX_INIT_PARTITION: return "partition";
    case SG_MIX_INIT_KMEANS: return "kmeans";
    case SG_MIX_INIT_LINES: return "lines";
    case SG_MIX_INIT_MIXREG: return "mixreg";
    case SG_MIX_INIT_LABELS: return "labels";
    }
    return NULL;
}

/* ---- memory ------------------------------------------------------------ */

void *mix_calloc(size_t count, size_t size) {
    return calloc(count ? count : 1, size);
}

size_t mix_level_cols(const sg_mix_model *m, int l) {
    return m->lev[l].laplace ? m->p : m->q;
}

static size_t level_rows(const sg_mix_model *m, int l) {
    return (size_t)m->lev[l].m * (size_t)m->lev[l].blocks;
}

static size_t beta_rows(const sg_mix_model *m) {
    return m->family == SG_MIX_MULTINOMIAL ? (size_t)m->E * (size_t)m->C : (size_t)m->E;
}

int mix_model_alloc(sg_mix_model *m) {
    m->center = mix_calloc(m->p, sizeof(double));
    m->scale = mix_calloc(m->p, sizeof(double));
    m->beta = mix_calloc(beta_rows(m) * m->q, sizeof(double));
    m->sigma2 = mix_calloc((size_t)m->E, sizeof(double));
    int ok = m->center && m->scale && m->beta && m->sigma2;
    for (int l = 0; l < m->nlevels; l++) {
        m->lev[l].w = mix_calloc(level_rows(m, l) * mix_level_cols(m, l), sizeof(double));
        ok = ok && m->lev[l].w;
    }
    for (size_t j = 0; j < m->p; j++) m->scale[j] = 1.0;
    for (int k = 0; k < m->E; k++) m->sigma2[k] = 1.0;
    return ok;
}

static void free_names(sg_mix_model *m) {
    if (m->features)
        for (size_t j = 0; j < m->p; j++) free(m->features[j]);
    if (m->classes)
        for (int c = 0; c < m->C; c++) free(m->classes[c]);
    free(m->features), free(m->classes), free(m->response), free(m->metadata);
    m->features = m->classes = NULL;
    m->response = m->metadata = NULL;
}

void sg_mix_model_free(sg_mix_model *m) {
    if (!m) return;
    free(m->center), free(m->scale), free(m->beta), free(m->sigma2);
    for (int l = 0; l < 2; l++) free(m->lev[l].w);
    free(m->trace), free(m->path);
    free(m->raw_beta), free(m->raw_sigma), free(m->raw_g0), free(m->raw_g1);
    free_names(m);
    free(m);
}

void mix_params_copy(sg_mix_model *dst, const sg_mix_model *src) {
    memcpy(dst->center, src->center, src->p * sizeof(double));
    memcpy(dst->scale, src->scale, src->p * sizeof(double));
    memcpy(dst->beta, src->beta, beta_rows(src) * src->q * sizeof(double));
    memcpy(dst->sigma2, src->sigma2, (size_t)src->E * sizeof(double));
    for (int l = 0; l < src->nlevels; l++)
        memcpy(dst->lev[l].w, src->lev[l].w,
               level_rows(src, l) * mix_level_cols(src, l) * sizeof(double));
}

sg_mix_model *mix_model_clone(const sg_mix_model *src) {
    sg_mix_model *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    *m = *src;
    m->center = m->scale = m->beta = m->sigma2 = NULL;
    m->lev[0].w = m->lev[1].w = NULL;
    m->trace = m->path = NULL;
    m->trace_len = m->path_len = 0;
    m->raw_beta = m->raw_sigma = m->raw_g0 = m->raw_g1 = NULL;
    m->response = m->metadata = NULL;
    m->features = m->classes = NULL;
    if (!mix_model_alloc(m)) {
        sg_mix_model_free(m);
        return NULL;
    }
    mix_params_copy(m, src);
    return m;
}

double mix_model_df(const sg_mix_model *m) {
    double q = (double)m->q, p = (double)m->p, E = m->E;
    double df = m->family == SG_MIX_GAUSSIAN ? E * (p + 2) : E * (m->C - 1) * q;
    for (int l = 0; l < m->nlevels; l++) {
        const mix_level *lv = &m->lev[l];
        if (lv->m < 2) continue;
        df += lv->laplace ? (double)lv->blocks * lv->m * p : (double)lv->blocks * (lv->m - 1) * q;
    }
    return df;
}

/* raw-scale row: r' [1, x] == s' [1, (x - c) / scale] */
static void to_raw(const sg_mix_model *m, const double *s, double *r) {
    double b0 = s[0];
    for (size_t j = 0; j < m->p; j++) {
        r[j + 1] = s[j + 1] / m->scale[j];
        b0 -= r[j + 1] * m->center[j];
    }
    r[0] = b0;
}

static double *level_raw(const sg_mix_model *m, int l) {
    size_t rows = level_rows(m, l), cols = mix_level_cols(m, l);
    double *r = mix_calloc(rows * cols, sizeof(double));
    if (!r) return NULL;
    const double *w = m->lev[l].w;
    for (size_t i = 0; i < rows; i++) {
        if (m->lev[l].laplace)
            for (size_t j = 0; j < cols; j++) r[i * cols + j] = w[i * cols + j] + m->center[j];
        else if (m->tanh_gate)
            memcpy(r + i * cols, w + i * cols, cols * sizeof(double));
        else
            to_raw(m, w + i * cols, r + i * cols);
    }
    return r;
}

int mix_model_finish(sg_mix_model *m) {
    free(m->raw_beta), free(m->raw_sigma), free(m->raw_g0), free(m->raw_g1);
    m->raw_beta = m->raw_sigma = m->raw_g0 = m->raw_g1 = NULL;
    size_t br = beta_rows(m);
    m->raw_beta = mix_calloc(br * m->q, sizeof(double));
    m->raw_sigma = mix_calloc((size_t)m->E, sizeof(double));
    if (!m->raw_beta || !m->raw_sigma) return 0;
    for (size_t i = 0; i < br; i++) to_raw(m, m->beta + i * m->q, m->raw_beta + i * m->q);
    for (int k = 0; k < m->E; k++) m->raw_sigma[k] = sqrt(m->sigma2[k]);
    m->raw_g0 = level_raw(m, 0);
    if (!m->raw_g0) return 0;
    if (m->nlevels == 2) {
        m->raw_g1 = level_raw(m, 1);
        if (!m->raw_g1) return 0;
    }
    return 1;
}

/* ---- checks ------------------------------------------------------------ */

sg_status mix_check_spec(sg_context *ctx, const sg_mix_spec *s, size_t n, size_t p,
                         sg_mix_model *m) {
    const char *op = "sg_mix_fit";
    if (!s) return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: spec is NULL", op);
    if (!sg_mix_family_name(s->family))
        return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: spec.family %d is not a family", op, (int)s->family);
    if (!sg_mix_gate_name(s->gate))
        return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: spec.gate %d is not a gate", op, (int)s->gate);
    if (s->experts < 1 || s->experts > 256)
        return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: spec.experts = %d (must be 1..256)", op, s->experts);
    if (s->family == SG_MIX_MULTINOMIAL && (s->classes < 2 || s->classes > 256))
        return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: spec.classes = %d (must be 2..256)", op, s->classes);
    if (s->gate == SG_MIX_GATE_TOPK && (s->top_k < 1 || s->top_k > s->experts))
        return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: spec.top_k = %d (must be 1..experts = %d)", op,
                       s->top_k, s->experts);
    if (s->gate == SG_MIX_GATE_TEMPERATURE && !(isfinite(s->temperature) && s->temperature > 0))
        return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: spec.temperature = %g (must be finite and > 0)",
                       op, s->temperature);
    if (s->gate == SG_MIX_GATE_HIERARCHICAL) {
        if (s->groups < 1 || s->experts % s->groups != 0)
            return sg_fail(ctx, SG_ERR_ARGUMENT,
                           "%s: spec.groups = %d (must be >= 1 and divide experts = %d)", op,
                           s->groups, s->experts);
        for (int l = 0; l < 2; l++)
            if (s->level_gate[l] != SG_MIX_GATE_SOFTMAX && s->level_gate[l] != SG_MIX_GATE_LAPLACE)
                return sg_fail(ctx, SG_ERR_ARGUMENT,
                               "%s: spec.level_gate[%d] must be SOFTMAX or LAPLACE", op, l);
    }
    if (!isfinite(s->lasso))
        return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: spec.lasso is not finite", op);
    if (s->lasso < 0 && (s->path_length < 2 || s->path_length > 1000 ||
                         !(s->path_min_ratio > 0 && s->path_min_ratio < 1)))
        return sg_fail(ctx, SG_ERR_ARGUMENT,
                       "%s: spec.path_length must be 2..1000 and path_min_ratio in (0, 1)", op);
    if (s->restarts < 1 || s->restarts > 100000)
        return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: spec.restarts = %d (must be 1..100000)", op,
                       s->restarts);
    if (!sg_mix_init_name(s->init))
        return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: spec.init %d is not a strategy", op, (int)s->init);
    if (s->init == SG_MIX_INIT_LABELS) {
        if (!s->init_labels && n > 0)
            return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: spec.init_labels is NULL with init = labels", op);
        for (size_t i = 0; i < n; i++)
            if (s->init_labels[i] < 0 || s->init_labels[i] >= s->experts)
                return sg_fail(ctx, SG_ERR_ARGUMENT,
                               "%s: spec.init_labels[%zu] = %d is not in [0, %d)", op, i,
                               (int)s->init_labels[i], s->experts);
    }
    if (s->max_iter < 1) return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: spec.max_iter must be >= 1", op);
    if (!(s->tol >= 0 && isfinite(s->tol)) || !(s->grad_tol >= 0 && isfinite(s->grad_tol)))
        return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: spec.tol and spec.grad_tol must be finite, >= 0", op);
    if (!(s->gate_ridge >= 0 && isfinite(s->gate_ridge)))
        return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: spec.gate_ridge must be finite, >= 0", op);
    if (!(s->var_floor > 0 && isfinite(s->var_floor)))
        return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: spec.var_floor must be finite, > 0", op);

    memset(m, 0, sizeof *m);
    m->family = s->family;
    m->gate = s->gate;
    m->E = s->experts;
    m->C = s->family == SG_MIX_MULTINOMIAL ? s->classes : 1;
    m->p = p;
    m->q = p + 1;
    m->K = s->gate == SG_MIX_GATE_TOPK ? s->top_k : s->experts;
    m->T = s->gate == SG_MIX_GATE_TEMPERATURE ? s->temperature : 1.0;
    m->tanh_gate = s->gate == SG_MIX_GATE_TANH_SOFTMAX;
    if (s->gate == SG_MIX_GATE_HIERARCHICAL) {
        m->G = s->groups;
        m->nlevels = 2;
        m->lev[0].laplace = s->level_gate[0] == SG_MIX_GATE_LAPLACE;
        m->lev[0].m = m->G;
        m->lev[0].blocks = 1;
        m->lev[1].laplace = s->level_gate[1] == SG_MIX_GATE_LAPLACE;
        m->lev[1].m = m->E / m->G;
        m->lev[1].blocks = m->G;
    } else {
        m->G = 1;
        m->nlevels = 1;
        m->lev[0].laplace = s->gate == SG_MIX_GATE_LAPLACE;
        m->lev[0].m = m->E;
        m->lev[0].blocks = 1;
    }
    double df = mix_model_df(m);
    if (n < 2 || (double)n <= df)
        return sg_fail(ctx, SG_ERR_SHAPE,
                       "%s: n = %zu observations for %.0f free parameters (need n > df, n >= 2)",
                       op, n, df);
    return SG_OK;
}

sg_status mix_check_data(sg_context *ctx, const char *op, const sg_mix_model *m, size_t n,
                         const double *x, size_t ldx, const double *y, const int32_t *labels) {
    if (n == 0) return SG_OK;
    if (m->p > 0 && !x) return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: x is NULL", op);
    if (m->p > 0 && ldx < m->p)
        return sg_fail(ctx, SG_ERR_SHAPE, "%s: ldx = %zu < p = %zu", op, ldx, m->p);
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < m->p; j++)
            if (!isfinite(x[i * ldx + j]))
                return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: x[%zu][%zu] is not finite", op, i, j);
    if (m->family == SG_MIX_GAUSSIAN) {
        if (!y) return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: y is NULL (Gaussian experts)", op);
        for (size_t i = 0; i < n; i++)
            if (!isfinite(y[i]))
                return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: y[%zu] is not finite", op, i);
    } else {
        if (!labels)
            return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: labels is NULL (multinomial experts)", op);
        for (size_t i = 0; i < n; i++)
            if (labels[i] < 0 || labels[i] >= m->C)
                return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: labels[%zu] = %d is not in [0, %d)",
                               op, i, (int)labels[i], m->C);
    }
    return SG_OK;
}

/* ---- designs and densities --------------------------------------------- */

int mix_design_build(const sg_mix_model *m, size_t n, const double *x, size_t ldx,
                     mix_design *d) {
    size_t q = m->q, p = m->p;
    int lap = m->lev[0].laplace || (m->nlevels == 2 && m->lev[1].laplace);
    memset(d, 0, sizeof *d);
    d->n = n;
    d->z = mix_calloc(n * q, sizeof(double));
    if (m->tanh_gate) d->u = mix_calloc(n * q, sizeof(double));
    if (lap) d->xc = mix_calloc(n * (p ? p : 1), sizeof(double));
    if (!d->z || (m->tanh_gate && !d->u) || (lap && !d->xc)) {
        mix_design_free(d);
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        double *zi = d->z + i * q;
        zi[0] = 1.0;
        if (d->u) d->u[i * q] = 1.0;
        for (size_t j = 0; j < p; j++) {
            double c = x[i * ldx + j] - m->center[j];
            zi[j + 1] = c / m->scale[j];
            if (d->u) d->u[i * q + j + 1] = tanh(zi[j + 1]);
            if (d->xc) d->xc[i * p + j] = c;
        }
    }
    return 1;
}

void mix_design_free(mix_design *d) {
    free(d->z), free(d->u), free(d->xc);
    memset(d, 0, sizeof *d);
}

/* Scores of level l: [n x rows(l)]: linear w'd / T or -||xc - w||. */
static void level_scores(const sg_mix_model *m, int l, const mix_design *d, double *s) {
    const mix_level *lv = &m->lev[l];
    size_t n = d->n, rows = level_rows(m, l);
    if (!lv->laplace) {
        const double *des = m->tanh_gate ? d->u : d->z;
        mix_gemm_nt(n, (int)rows, (int)m->q, 1.0 / m->T, des, m->q, lv->w, m->q, s, rows);
        return;
    }
    size_t p = m->p;
    for (size_t i = 0; i < n; i++)
        for (size_t k = 0; k < rows; k++) {
            double acc = 0;
            for (size_t j = 0; j < p; j++) {
                double t = d->xc[i * p + j] - lv->w[k * p + j];
                acc += t * t;
            }
            s[i * rows + k] = -sqrt(acc);
        }
}

/* Row-wise log-softmax of finite logits in place: max-shifted, one log
 * per row (sg_log_softmax_f64's formula without its per-element special-
 * value classification). Returns 0, leaving the rows untouched, when a
 * logit is not finite: the caller then uses sg_log_softmax_f64. */
static int dense_log_softmax(size_t n, size_t E, double *l) {
    for (size_t i = 0; i < n * E; i++)
        if (!isfinite(l[i])) return 0;
    for (size_t i = 0; i < n; i++) {
        double *li = l + i * E, mx = li[0], s = 0;
        size_t am = 0;
        for (size_t k = 1; k < E; k++)
            if (li[k] > mx) mx = li[k], am = k;
        /* the maximum's exp(0) is exactly 1: not computed */
        for (size_t k = 0; k < E; k++) s += k == am ? 1.0 : mix_exp(li[k] - mx);
        double c = mx + log(s);
        for (size_t k = 0; k < E; k++) li[k] -= c;
    }
    return 1;
}

int mix_gate_shifted(const sg_mix_model *m, const mix_design *d, double *lsh, double *prob,
                     double *sums) {
    size_t n = d->n, E = (size_t)m->E;
    if (m->nlevels != 1 || m->K != m->E || E > 256) return 0;
    if (n == 0) return 1;
    level_scores(m, 0, d, lsh);
    for (size_t i = 0; i < n * E; i++)
        if (!isfinite(lsh[i])) return 0;
    for (size_t i = 0; i < n; i++) {
        double *li = lsh + i * E, *pi = prob + i * E, mx = li[0], s = 0;
        size_t am = 0;
        for (size_t k = 1; k < E; k++)
            if (li[k] > mx) mx = li[k], am = k;
        for (size_t k = 0; k < E; k++) {
            li[k] = k == am ? 0.0 : li[k] - mx;
            s += (pi[k] = k == am ? 1.0 : mix_exp(li[k]));
        }
        double inv = 1.0 / s;
        for (size_t k = 0; k < E; k++) pi[k] *= inv;
        sums[i] = s;
    }
    return 1;
}

int mix_gate_logprob(sg_context *ctx, const sg_mix_model *m, const mix_design *d, double *logg) {
    size_t n = d->n, E = (size_t)m->E;
    if (n == 0) return 0;
    if (m->nlevels == 1) {
        level_scores(m, 0, d, logg);
        if (m->K == m->E && dense_log_softmax(n, E, logg)) return 0;
        sg_softmax_options o = sg_softmax_options_default();
        uint8_t *keep = NULL;
        if (m->K < m->E) {
            keep = malloc(n * E);
            if (!keep) return -1;
            for (size_t i = 0; i < n; i++) {
                const double *l = logg + i * E;
                for (size_t j = 0; j < E; j++) {
                    int rank = 0;
                    for (size_t a = 0; a < E; a++)
                        if (l[a] > l[j] || (l[a] == l[j] && a < j)) rank++;
                    keep[i * E + j] = rank < m->K;
                }
            }
            o.keep_mask = keep;
            o.keep_mask_ld = E;
        }
        sg_log_softmax_f64(ctx, n, E, logg, E, logg, E, &o);
        free(keep);
        return 0;
    }
    size_t G = (size_t)m->G, mm = E / G;
    double *top = malloc(n * G * sizeof *top);
    if (!top) return -1;
    level_scores(m, 0, d, top);
    sg_log_softmax_f64(ctx, n, G, top, G, top, G, NULL);
    level_scores(m, 1, d, logg);
    sg_log_softmax_f64(ctx, n * G, mm, logg, mm, logg, mm, NULL);
    for (size_t i = 0; i < n; i++)
        for (size_t k = 0; k < E; k++) logg[i * E + k] += top[i * G + k / mm];
    free(top);
    return 0;
}

int mix_expert_scores(sg_context *ctx, const sg_mix_model *m, const mix_design *d, double *out) {
    size_t n = d->n, rows = beta_rows(m);
    if (n == 0) return 0;
    mix_gemm_nt(n, (int)rows, (int)m->q, 1.0, d->z, m->q, m->beta, m->q, out, rows);
    if (m->family == SG_MIX_MULTINOMIAL)
        sg_log_softmax_f64(ctx, n * (size_t)m->E, (size_t)m->C, out, (size_t)m->C, out,
                           (size_t)m->C, NULL);
    return 0;
}

void mix_expert_logdens(const sg_mix_model *m, size_t n, const double *scores, const double *y,
                        const int32_t *labels, double *logf) {
    size_t E = (size_t)m->E;
    if (m->family == SG_MIX_GAUSSIAN) {
        for (size_t k = 0; k < E; k++) {
            double s2 = m->sigma2[k], c = -0.5 * (LOG_2PI + log(s2));
            for (size_t i = 0; i < n; i++) {
                double r = y[i] - scores[i * E + k];
                logf[i * E + k] = c - 0.5 * r * r / s2;
            }
        }
    } else {
        size_t C = (size_t)m->C;
        for (size_t i = 0; i < n; i++)
            for (size_t k = 0; k < E; k++)
                logf[i * E + k] = scores[i * E * C + k * C + (size_t)labels[i]];
    }
}

/* ---- public accessors -------------------------------------------------- */

sg_status sg_mix_model_info(const sg_mix_model *m, sg_mix_info *info) {
    if (!m || !info) return SG_ERR_ARGUMENT;
    memset(info, 0, sizeof *info);
    info->family = m->family;
    info->gate = m->gate;
    info->experts = m->E;
    info->classes = m->family == SG_MIX_MULTINOMIAL ? m->C : 0;
    info->groups = m->G;
    info->top_k = m->K;
    info->p = m->p;
    info->n = m->n;
    info->temperature = m->T;
    info->loglik = m->loglik;
    info->objective = m->objective;
    info->df = m->df;
    info->aic = m->aic;
    info->bic = m->bic;
    info->icl = m->icl;
    info->iterations = m->iterations;
    info->converged = m->converged;
    info->best_restart = m->best_restart;
    info->grad_norm = m->grad_norm;
    info->max_decrease = m->max_decrease;
    info->lambda = m->lambda;
    return SG_OK;
}

const double *sg_mix_param(const sg_mix_model *m, sg_mix_param_kind which, size_t *rows,
                           size_t *cols) {
    size_t r = 0, c = 0;
    const double *v = NULL;
    if (m) switch (which) {
        case SG_MIX_PARAM_EXPERT_COEF: v = m->raw_beta, r = beta_rows(m), c = m->q; break;
        case SG_MIX_PARAM_SIGMA:
            if (m->family == SG_MIX_GAUSSIAN) v = m->raw_sigma, r = (size_t)m->E, c = 1;
            break;
        case SG_MIX_PARAM_GATE_COEF: v = m->raw_g0, r = level_rows(m, 0), c = mix_level_cols(m, 0); break;
        case SG_MIX_PARAM_GATE2_COEF:
            if (m->nlevels == 2) v = m->raw_g1, r = level_rows(m, 1), c = mix_level_cols(m, 1);
            break;
        case SG_MIX_PARAM_INPUT_CENTER: v = m->center, r = m->p, c = 1; break;
        case SG_MIX_PARAM_INPUT_SCALE: v = m->scale, r = m->p, c = 1; break;
        }
    if (!v || r * c == 0) v = NULL, r = c = 0;
    if (rows) *rows = r;
    if (cols) *cols = c;
    return v;
}

const double *sg_mix_trace(const sg_mix_model *m, size_t *count) {
    if (count) *count = m ? m->trace_len : 0;
    return m && m->trace_len ? m->trace : NULL;
}

size_t sg_mix_path_length(const sg_mix_model *m) { return m ? m->path_len : 0; }

sg_status sg_mix_path_entry(const sg_mix_model *m, size_t i, double *lambda, double *loglik,
                            double *bic, size_t *nonzero) {
    if (!m || i >= m->path_len) return SG_ERR_ARGUMENT;
    const double *e = m->path + 4 * i;
    if (lambda) *lambda = e[0];
    if (loglik) *loglik = e[1];
    if (bic) *bic = e[2];
    if (nonzero) *nonzero = (size_t)e[3];
    return SG_OK;
}

/* ---- predict and evaluate --------------------------------------------- */

static sg_status eval_common(sg_context *ctx, const char *op, const sg_mix_model *m, size_t n,
                             const double *x, size_t ldx, mix_design *d, double **logg) {
    sg_ok(ctx);
    if (!m) return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: model is NULL", op);
    if (n > 0 && m->p > 0 && !x) return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: x is NULL", op);
    if (n > 0 && m->p > 0 && ldx < m->p)
        return sg_fail(ctx, SG_ERR_SHAPE, "%s: ldx = %zu < p = %zu", op, ldx, m->p);
    if (!mix_design_build(m, n, x, ldx, d)) return sg_fail(ctx, SG_ERR_NO_MEMORY, "%s: out of memory", op);
    *logg = mix_calloc(n * (size_t)m->E, sizeof(double));
    if (!*logg || mix_gate_logprob(ctx, m, d, *logg) != 0) {
        free(*logg);
        mix_design_free(d);
        return sg_fail(ctx, SG_ERR_NO_MEMORY, "%s: out of memory", op);
    }
    return SG_OK;
}

sg_status sg_mix_predict(sg_context *ctx, const sg_mix_model *m, size_t n, const double *x,
                         size_t ldx, double *out, size_t ldo, double *gate, size_t ldg) {
    const char *op = "sg_mix_predict";
    if (m && out && m->family == SG_MIX_MULTINOMIAL && ldo < (size_t)m->C)
        return sg_fail(ctx, SG_ERR_SHAPE, "%s: ldo = %zu < classes = %d", op, ldo, m->C);
    if (m && gate && ldg < (size_t)m->E)
        return sg_fail(ctx, SG_ERR_SHAPE, "%s: ldg = %zu < experts = %d", op, ldg, m->E);
    mix_design d;
    double *logg;
    sg_status st = eval_common(ctx, op, m, n, x, ldx, &d, &logg);
    if (st != SG_OK) return st;
    size_t E = (size_t)m->E, C = (size_t)m->C, rows = beta_rows(m);
    double *sc = mix_calloc(n * rows, sizeof(double));
    if (!sc) {
        free(logg), mix_design_free(&d);
        return sg_fail(ctx, SG_ERR_NO_MEMORY, "%s: out of memory", op);
    }
    mix_expert_scores(ctx, m, &d, sc);
    for (size_t i = 0; i < n; i++) {
        int bad = 0;
        for (size_t j = 0; j < m->p; j++) bad |= !isfinite(x[i * ldx + j]);
        if (gate)
            for (size_t k = 0; k < E; k++) gate[i * ldg + k] = bad ? NAN : exp(logg[i * E + k]);
        if (!out) continue;
        if (m->family == SG_MIX_GAUSSIAN) {
            double s = 0;
            for (size_t k = 0; k < E; k++) s += exp(logg[i * E + k]) * sc[i * E + k];
            out[i] = bad ? NAN : s;
        } else {
            for (size_t c = 0; c < C; c++) {
                double s = 0;
                for (size_t k = 0; k < E; k++)
                    s += exp(logg[i * E + k] + sc[i * rows + k * C + c]);
                out[i * ldo + c] = bad ? NAN : s;
            }
        }
    }
    free(sc), free(logg), mix_design_free(&d);
    return SG_OK;
}

sg_status sg_mix_evaluate(sg_context *ctx, const sg_mix_model *m, size_t n, const double *x,
                          size_t ldx, const double *y, const int32_t *labels, double *loglik,
                          double *post, size_t ldpost) {
    const char *op = "sg_mix_evaluate";
    sg_ok(ctx);
    if (!m) return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: model is NULL", op);
    if (!loglik) return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: loglik is NULL", op);
    if (post && ldpost < (size_t)m->E)
        return sg_fail(ctx, SG_ERR_SHAPE, "%s: ldpost = %zu < experts = %d", op, ldpost, m->E);
    sg_status st = mix_check_data(ctx, op, m, n, x, ldx, y, labels);
    if (st != SG_OK) return st;
    mix_design d;
    double *logg;
    st = eval_common(ctx, op, m, n, x, ldx, &d, &logg);
    if (st != SG_OK) return st;
    size_t E = (size_t)m->E, rows = beta_rows(m);
    double *sc = mix_calloc(n * rows, sizeof(double));
    double *lse = mix_calloc(n, sizeof(double));
    if (!sc || !lse) {
        free(sc), free(lse), free(logg), mix_design_free(&d);
        return sg_fail(ctx, SG_ERR_NO_MEMORY, "%s: out of memory", op);
    }
    mix_expert_scores(ctx, m, &d, sc);
    mix_expert_logdens(m, n, sc, y, labels, sc);
    for (size_t i = 0; i < n * E; i++) logg[i] += sc[i];
    sg_logsumexp_f64(ctx, n, E, logg, E, lse, NULL);
    double ll = 0;
    for (size_t i = 0; i < n; i++) {
        ll += lse[i];
        if (post)
            for (size_t k = 0; k < E; k++) post[i * ldpost + k] = exp(logg[i * E + k] - lse[i]);
    }
    *loglik = ll;
    free(sc), free(lse), free(logg), mix_design_free(&d);
    return SG_OK;
}

/* ---- names ------------------------------------------------------------- */

static char *dup_name(const char *s) {
    size_t l = strlen(s);
    char *r = malloc(l + 1);
    if (r) memcpy(r, s, l + 1);
    return r;
}

sg_status sg_mix_set_names(sg_context *ctx, sg_mix_model *m, const char *response,
                           const char *const *features, const char *const *classes,
                           const char *metadata) {
    const char *op = "sg_mix_set_names";
    sg_ok(ctx);
    if (!m) return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: model is NULL", op);
    if (response && strlen(response) > 255)
        return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: response name longer than 255 bytes", op);
    if (features)
        for (size_t j = 0; j < m->p; j++)
            if (!features[j] || strlen(features[j]) > 255)
                return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: features[%zu] is NULL or longer than 255 bytes", op, j);
    if (classes && m->family == SG_MIX_MULTINOMIAL)
        for (int c = 0; c < m->C; c++)
            if (!classes[c] || strlen(classes[c]) > 255)
                return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: classes[%d] is NULL or longer than 255 bytes", op, c);
    if (response) {
        char *r = dup_name(response);
        if (!r) return sg_fail(ctx, SG_ERR_NO_MEMORY, "%s: out of memory", op);
        free(m->response);
        m->response = r;
    }
    if (features && m->p > 0) {
        char **f = calloc(m->p, sizeof *f);
        int ok = f != NULL;
        for (size_t j = 0; ok && j < m->p; j++) ok = (f[j] = dup_name(features[j])) != NULL;
        if (!ok) {
            if (f) for (size_t j = 0; j < m->p; j++) free(f[j]);
            free(f);
            return sg_fail(ctx, SG_ERR_NO_MEMORY, "%s: out of memory", op);
        }
        if (m->features) for (size_t j = 0; j < m->p; j++) free(m->features[j]);
        free(m->features);
        m->features = f;
    }
    if (classes && m->family == SG_MIX_MULTINOMIAL) {
        char **f = calloc((size_t)m->C, sizeof *f);
        int ok = f != NULL;
        for (int c = 0; ok && c < m->C; c++) ok = (f[c] = dup_name(classes[c])) != NULL;
        if (!ok) {
            if (f) for (int c = 0; c < m->C; c++) free(f[c]);
            free(f);
            return sg_fail(ctx, SG_ERR_NO_MEMORY, "%s: out of memory", op);
        }
        if (m->classes) for (int c = 0; c < m->C; c++) free(m->classes[c]);
        free(m->classes);
        m->classes = f;
    }
    if (metadata) {
        char *r = dup_name(metadata);
        if (!r) return sg_fail(ctx, SG_ERR_NO_MEMORY, "%s: out of memory", op);
        free(m->metadata);
        m->metadata = r;
    }
    return SG_OK;
}

const char *sg_mix_name(const sg_mix_model *m, sg_mix_name_kind which, size_t i) {
    if (!m) return NULL;
    switch (which) {
    case SG_MIX_NAME_RESPONSE: return m->response;
    case SG_MIX_NAME_FEATURE: return m->features && i < m->p ? m->features[i] : NULL;
    case SG_MIX_NAME_CLASS:
        return m->classes && m->family == SG_MIX_MULTINOMIAL && i < (size_t)m->C ? m->classes[i] : NULL;
    case SG_MIX_NAME_METADATA: return m->metadata;
    }
    return NULL;
}

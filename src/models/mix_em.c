/*
 * mix_em.c - maximum-likelihood (and Lasso-penalized) fitting of mixtures
 * of experts by EM: the E-step (responsibilities through softgate's
 * float64 log-softmax/logsumexp), the M-steps (weighted least squares with
 * LAPACK, the gate and multinomial solvers of mix_gate.c), the
 * initializations, restarts, the convergence tests and the Lasso path.
 * The conventions are those of include/softgate/mixture.h and
 * docs/MIXTURE.md.
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "models/mix_internal.h"

/* ---- random numbers (splitmix64) -------------------------------------- */

uint64_t mix_rng_next(mix_rng *r) {
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

double mix_rng_uniform(mix_rng *r) { return (double)(mix_rng_next(r) >> 11) * 0x1.0p-53; }

static size_t rng_index(mix_rng *r, size_t n) { return (size_t)(mix_rng_uniform(r) * (double)n); }

/* ---- the working state of one fit ------------------------------------- */

typedef struct em_state {
    sg_context *ctx;
    const sg_mix_spec *spec;
    size_t n;
    mix_design d;
    const double *y;
    const int32_t *labels;
    double vary;    /* sample variance of y (Gaussian) */
    double *logg;   /* [n x E] */
    double *gp;     /* [n x E] gate probabilities at logg's W, if gp_ok */
    double *gsum;   /* [n] if gp_ok: logg holds the max-shifted logits, log
                     * g = logg - log gsum (mix_gate_shifted) */
    int gp_ok;
    double *sc;     /* [n x E*C] expert scores */
    double *tau;    /* [n x E] responsibilities */
    double *lse;    /* [n] */
    double *r;      /* [n x max(C, G)] targets of one solver call */
    double *buf;    /* [n x q] scratch */
    double *trace;
    size_t trace_cap;
    int nomem;
    int newton_cap; /* Newton steps of a gate fit (0: 50) */
    double gate_dec_tol; /* the gate's Newton tolerance (mix_mlogit.dec_tol) */
} em_state;

/* The fitting result of one EM run. */
typedef struct em_result {
    double loglik, objective, grad_norm, max_decrease;
    int iterations, converged, ok, screened, escapes;
    size_t trace_len;
} em_result;

/* ---- E-step ------------------------------------------------------------ */

/* Observed log-likelihood at m; tau <- posterior responsibilities. */
static double estep(em_state *st, const sg_mix_model *m) {
    size_t n = st->n, E = (size_t)m->E;
    /* the usual dense gate: the max-shifted logits stand in for log g
     * (the same responsibilities; the row log-sums are subtracted from the
     * log-likelihood, one log per 32 rows by mix_logsum) */
    st->gp_ok = mix_gate_shifted(m, &st->d, st->logg, st->gp, st->gsum);
    if (!st->gp_ok && mix_gate_logprob(st->ctx, m, &st->d, st->logg) != 0) {
        st->nomem = 1;
        return NAN;
    }
    double gl = 0;
    if (st->gp_ok) {
        mix_logsum gs = {1.0, 0, 0};
        for (size_t i = 0; i < n; i++) mix_logsum_add(&gs, st->gsum[i]);
        gl = mix_logsum_value(&gs);
    }
    mix_expert_scores(st->ctx, m, &st->d, st->sc);
    mix_expert_logdens(m, n, st->sc, st->y, st->labels, st->tau);
    for (size_t i = 0; i < n * E; i++) st->tau[i] += st->logg[i];
    /* finite rows (every row of a Gaussian fit with the variance floor):
     * the same max-shifted logsumexp in one pass, its exponentials reused
     * for the responsibilities; otherwise sg_logsumexp_f64 (its special
     * values) */
    int finite = 1;
    for (size_t i = 0; i < n * E && finite; i++) finite = isfinite(st->tau[i]);
    if (finite && E <= 256) {
        /* sum_i (mx_i + log sum_i), sum_i in [1, E]: the logs by
         * mix_logsum (one per 32 rows) */
        double ll = 0;
        mix_logsum ls = {1.0, 0, 0};
        for (size_t i = 0; i < n; i++) {
            /* the maximum's exp(0) is exactly 1: not computed */
            double *t = st->tau + i * E, mx = t[0], sum = 0;
            size_t am = 0;
            for (size_t k = 1; k < E; k++)
                if (t[k] > mx) mx = t[k], am = k;
            for (size_t k = 0; k < E; k++) sum += (t[k] = k == am ? 1.0 : mix_exp(t[k] - mx));
            double inv = 1.0 / sum;
            for (size_t k = 0; k < E; k++) t[k] *= inv;
            ll += mx;
            mix_logsum_add(&ls, sum);
        }
        return ll + mix_logsum_value(&ls) - gl;
    }
    sg_logsumexp_f64(st->ctx, n, E, st->tau, E, st->lse, NULL);
    double ll = 0;
    for (size_t i = 0; i < n; i++) {
        ll += st->lse[i];
        for (size_t k = 0; k < E; k++) {
            double *t = st->tau + i * E + k;
            *t = exp(*t - st->lse[i]);
        }
    }
    return ll - gl;
}

/* ---- penalties --------------------------------------------------------- */

static int level_linear(const sg_mix_model *m, int l) { return !m->lev[l].laplace; }

/* ridge and l1 terms subtracted from the log-likelihood */
static double penalty(const em_state *st, const sg_mix_model *m, double lam) {
    double n = (double)st->n, ridge = st->spec->gate_ridge, r2 = 0, l1 = 0;
    size_t q = m->q;
    for (int l = 0; l < m->nlevels; l++) {
        size_t cnt = (size_t)m->lev[l].m * m->lev[l].blocks * mix_level_cols(m, l);
        const double *w = m->lev[l].w;
        for (size_t j = 0; j < cnt; j++) {
            r2 += w[j] * w[j];
            if (level_linear(m, l) && j % q != 0) l1 += fabs(w[j]);
        }
    }
    size_t br = m->family == SG_MIX_MULTINOMIAL ? (size_t)m->E * m->C : (size_t)m->E;
    for (size_t j = 0; j < br * q; j++) {
        if (m->family == SG_MIX_MULTINOMIAL) r2 += m->beta[j] * m->beta[j];
        if (j % q != 0) l1 += fabs(m->beta[j]);
    }
    double pen = 0.5 * ridge * n * r2;
    if (lam > 0 && l1 > 0) pen += lam * n * l1;
    return pen;
}

/* ---- M-step: experts --------------------------------------------------- */

/* Weighted least squares for expert k with weights t (Lasso: coordinate
 * descent on the same normal equations with the current variance). */
static void mstep_gauss(em_state *st, sg_mix_model *m, int k, const double *t, size_t ldt,
                        double lam) {
    size_t n = st->n, q = m->q;
    double *a = malloc(q * q * sizeof *a), *b = malloc(q * sizeof *b), *w = malloc(n * sizeof *w);
    double *v = malloc(q * sizeof *v);
    unsigned char *pen = malloc(q);
    if (!a || !b || !w || !v || !pen) {
        st->nomem = 1;
        goto done;
    }
    double sw = 0;
    for (size_t i = 0; i < n; i++) sw += (w[i] = t[i * ldt]);
    if (!(sw > 1e-300)) goto done; /* an empty expert keeps its parameters */
    mix_weighted_gram(n, (int)q, st->d.z, q, w, a, st->buf);
    for (size_t j = 0; j < q; j++) {
        double s = 0;
        for (size_t i = 0; i < n; i++) s += w[i] * st->y[i] * st->d.z[i * q + j];
        b[j] = s;
    }
    double *bk = m->beta + (size_t)k * q;
    if (lam > 0) {
        double s2 = m->sigma2[k];
        for (size_t j = 0; j < q * q; j++) a[j] /= s2;
        for (size_t j = 0; j < q; j++) b[j] /= s2, pen[j] = j != 0;
        /* v0 = 0, g = b: minimizes 1/2 v'Av - b'v + lam n |v|_1 */
        double *zero = w; /* reuse: q zeros */
        memset(zero, 0, q * sizeof *zero);
        memcpy(v, bk, q * sizeof *v);
        if (mix_cd_l1((int)q, a, b, zero, lam * (double)n, pen, v) != 0) {
            st->nomem = 1;
            goto done;
        }
        memcpy(bk, v, q * sizeof *v);
        for (size_t i = 0; i < n; i++) w[i] = t[i * ldt];
    } else {
        double *a2 = malloc(q * q * sizeof *a2);
        if (!a2) {
            st->nomem = 1;
            goto done;
        }
        memcpy(a2, a, q * q * sizeof *a);
        memcpy(v, b, q * sizeof *v);
        if (mix_spd_solve((int)q, a2, v) != 0) {
            /* nearly empty or collinear expert: a tiny ridge (1e-10 of the
             * mean diagonal) makes the system solvable */
            double tr = 0;
            for (size_t j = 0; j < q; j++) tr += a[j * q + j];
            memcpy(a2, a, q * q * sizeof *a);
            for (size_t j = 0; j < q; j++) a2[j * q + j] += 1e-10 * tr / (double)q + 1e-300;
            memcpy(v, b, q * sizeof *v);
            if (mix_spd_solve((int)q, a2, v) != 0) memcpy(v, bk, q * sizeof *v);
        }
        memcpy(bk, v, q * sizeof *v);
        free(a2);
    }
    double ss = 0;
    for (size_t i = 0; i < n; i++) {
        const double *zi = st->d.z + i * q;
        double mu = 0;
        for (size_t j = 0; j < q; j++) mu += zi[j] * bk[j];
        double r = st->y[i] - mu;
        ss += w[i] * r * r;
    }
    double s2 = ss / sw, fl = st->spec->var_floor * st->vary;
    m->sigma2[k] = s2 > fl ? s2 : fl;
done:
    free(a), free(b), free(w), free(v), free(pen);
}

static void mstep_multi(em_state *st, sg_mix_model *m, int k, const double *t, size_t ldt,
                        double lam) {
    size_t n = st->n, C = (size_t)m->C;
    for (size_t i = 0; i < n; i++) {
        double *ri = st->r + i * C;
        memset(ri, 0, C * sizeof *ri);
        ri[st->labels[i]] = t[i * ldt];
    }
    mix_mlogit pb = {n, (int)m->q, (int)C, (int)C, 1.0, st->spec->gate_ridge, lam,
                     st->d.z, m->q, st->r, C, NULL, 0, NULL, NULL};
    double f;
    if (mix_mlogit_fit(&pb, m->beta + (size_t)k * C * m->q, 50, &f) != 0) st->nomem = 1;
}

static void mstep_experts(em_state *st, sg_mix_model *m, const double *t, size_t ldt, double lam) {
    for (int k = 0; k < m->E; k++) {
        if (m->family == SG_MIX_GAUSSIAN) mstep_gauss(st, m, k, t + k, ldt, lam);
        else mstep_multi(st, m, k, t + k, ldt, lam);
    }
}

/* ---- M-step: gate ------------------------------------------------------ */

/* Ascent steps of the Laplace gate per M-step (a generalized EM step: Q
 * increases, the gate is not maximized exactly; EM's outer iterations
 * finish the job, checked by the gradient test). */
#define LAPLACE_STEPS 25

static const double *gate_design(const em_state *st, const sg_mix_model *m) {
    return m->tanh_gate ? st->d.u : st->d.z;
}

/* One gate problem: block `blk` of level l with targets r (ldr), from its
 * current coefficients. value_only: *gn gets the gradient norm instead. */
static void gate_solve(em_state *st, sg_mix_model *m, int l, int blk, const double *r,
                       size_t ldr, double lam, int kk, int value_only, const double *lp0,
                       const double *p0, double *gn) {
    const mix_level *lv = &m->lev[l];
    size_t cols = mix_level_cols(m, l);
    double *w = lv->w + (size_t)blk * lv->m * cols, f = 0, g = 0;
    int rc;
    if (lv->m < 2) {
        if (gn) *gn = 0;
        return;
    }
    if (lv->laplace) {
        mix_laplace pb = {st->n, (int)m->p, lv->m, st->spec->gate_ridge, st->d.xc, m->p, r, ldr};
        rc = value_only ? mix_laplace_value(&pb, w, &f, NULL, &g) : mix_laplace_fit(&pb, w, LAPLACE_STEPS, &f);
    } else {
        mix_mlogit pb = {st->n, (int)m->q, lv->m, kk, m->T, st->spec->gate_ridge, lam,
                         gate_design(st, m), m->q, r, ldr, lp0, st->gate_dec_tol, p0,
                         p0 ? st->gsum : NULL};
        rc = value_only ? mix_mlogit_value(&pb, w, &f, &g)
                        : mix_mlogit_fit(&pb, w, st->newton_cap ? st->newton_cap : 50, &f);
    }
    if (rc != 0) st->nomem = 1;
    if (gn) *gn = g;
}

/* Fits (or measures the gradient of) every gate block from targets t. */
/* at_logg: st->logg holds the gate's log-probabilities at its current
 * coefficients (the E-step just before; or its max-shifted logits, with
 * the probabilities and row sums, when st->gp_ok), which a dense
 * single-level solver then starts from instead of recomputing them. */
static double gate_all(em_state *st, sg_mix_model *m, const double *t, double lam, int dense,
                       int value_only, int at_logg) {
    size_t n = st->n, E = (size_t)m->E;
    double gmax = 0, g = 0;
    if (m->nlevels == 1) {
        int kk = dense ? m->E : m->K;
        const double *lp0 = at_logg && kk == m->E && !m->lev[0].laplace ? st->logg : NULL;
        gate_solve(st, m, 0, 0, t, E, lam, kk, value_only, lp0, lp0 && st->gp_ok ? st->gp : NULL,
                   &g);
        return g;
    }
    size_t G = (size_t)m->G, mm = E / G;
    for (size_t i = 0; i < n; i++)
        for (size_t gg = 0; gg < G; gg++) {
            double s = 0;
            for (size_t j = 0; j < mm; j++) s += t[i * E + gg * mm + j];
            st->r[i * G + gg] = s;
        }
    gate_solve(st, m, 0, 0, st->r, G, lam, (int)G, value_only, NULL, NULL, &g);
    gmax = g;
    for (size_t gg = 0; gg < G; gg++) {
        gate_solve(st, m, 1, (int)gg, t + gg * mm, E, lam, (int)mm, value_only, NULL, NULL, &g);
        if (g > gmax) gmax = g;
    }
    return gmax;
}

/* ---- gradient at the current parameters (Fisher's identity: the gradient
 * of the observed log-likelihood is that of Q at tau from the same point) */

static double gauss_gnorm(const em_state *st, const sg_mix_model *m, double lam) {
    size_t n = st->n, q = m->q, E = (size_t)m->E;
    double gmax = 0, ln = lam * (double)n;
    double *g = malloc((q + 1) * sizeof *g);
    if (!g) return INFINITY;
    for (size_t k = 0; k < E; k++) {
        double s2 = m->sigma2[k], s = sqrt(s2);
        memset(g, 0, (q + 1) * sizeof *g);
        for (size_t i = 0; i < n; i++) {
            double t = st->tau[i * E + k], r = st->y[i] - st->sc[i * E + k];
            const double *zi = st->d.z + i * q;
            for (size_t j = 0; j < q; j++) g[j] += t * r * zi[j];
            g[q] += t * (r * r / s2 - 1.0);
        }
        for (size_t j = 0; j < q; j++) {
            double v = g[j] / s2, b = m->beta[k * q + j];
            if (lam > 0 && j > 0) {
                if (b > 0) v -= ln;
                else if (b < 0) v += ln;
                else v = fabs(v) > ln ? fabs(v) - ln : 0;
            }
            v = fabs(v) * s / (double)n;
            if (v > gmax) gmax = v;
        }
        double gv = g[q] / (double)n;
        if (s2 <= st->spec->var_floor * st->vary && gv < 0) gv = 0; /* at the floor */
        if (fabs(gv) > gmax) gmax = fabs(gv);
    }
    free(g);
    return gmax;
}

static double grad_norm(em_state *st, sg_mix_model *m, double lam) {
    double gmax;
    if (m->family == SG_MIX_GAUSSIAN) {
        /* sc holds the expert means from the last E-step */
        gmax = gauss_gnorm(st, m, lam);
    } else {
        size_t n = st->n, C = (size_t)m->C, E = (size_t)m->E;
        gmax = 0;
        for (size_t k = 0; k < E; k++) {
            for (size_t i = 0; i < n; i++) {
                double *ri = st->r + i * C;
                memset(ri, 0, C * sizeof *ri);
                ri[st->labels[i]] = st->tau[i * E + k];
            }
            mix_mlogit pb = {n, (int)m->q, (int)C, (int)C, 1.0, st->spec->gate_ridge, lam,
                             st->d.z, m->q, st->r, C, NULL, 0, NULL, NULL};
            double f, g = 0;
            if (mix_mlogit_value(&pb, m->beta + k * C * m->q, &f, &g) != 0) st->nomem = 1;
            if (g > gmax) gmax = g;
        }
    }
    double gg = gate_all(st, m, st->tau, lam, 0, 1, 0);
    return gg > gmax ? gg : gmax;
}

/* ---- the EM loop ------------------------------------------------------- */

static int trace_push(em_state *st, size_t *len, double v) {
    if (*len == st->trace_cap) {
        size_t cap = st->trace_cap ? 2 * st->trace_cap : 256;
        double *t = realloc(st->trace, cap * sizeof *t);
        if (!t) return 0;
        st->trace = t, st->trace_cap = cap;
    }
    st->trace[(*len)++] = v;
    return 1;
}

/* ---- SQUAREM acceleration --------------------------------------------
 *
 * Plain EM crawls where the likelihood is flat (hundreds of iterations on
 * Old Faithful from a random partition). Every second EM step is followed
 * by a squared extrapolation (Varadhan and Roland, "Simple and globally
 * convergent methods for accelerating the convergence of any EM
 * algorithm", Scand. J. Statist. 35, 2008, scheme S3): from the parameters
 * th0 and the two EM steps th1 = F(th0), th2 = F(th1), with r = th1 - th0
 * and v = th2 - 2 th1 + th0, the point th0 - 2 a r + a^2 v with
 * a = -||r|| / ||v|| clamped to [-step_max, -1] (a = -1 gives th2 itself);
 * step_max starts at 1 and is multiplied by 4 (up to SQUAREM_MAX_STEP)
 * each time a step reaches it, as in the SQUAREM package, so that the
 * first extrapolations, where a start's basin is decided, stay short. It is kept only when its variances stay above the floor and its
 * objective is at least th2's; otherwise the fit goes on from th2. So the
 * objective never decreases, the next EM step starts from the kept point,
 * and convergence is tested after plain EM steps only, with the same tests:
 * the fixed points are EM's. The parameter vector is the internal one
 * (standardized expert coefficients, variances, gate coefficients). Not
 * used with a Lasso penalty (extrapolation would undo exact zeros) or a
 * top-K gate (kinks).
 */
#define SQUAREM_MAX_STEP 64.0
#define GATE_DEC_FRAC 1e-3

static size_t params_len(const sg_mix_model *m) {
    size_t br = m->family == SG_MIX_MULTINOMIAL ? (size_t)m->E * m->C : (size_t)m->E;
    size_t len = br * m->q + (m->family == SG_MIX_GAUSSIAN ? (size_t)m->E : 0);
    for (int l = 0; l < m->nlevels; l++)
        len += (size_t)m->lev[l].m * m->lev[l].blocks * mix_level_cols(m, l);
    return len;
}

/* dir 0: m -> v; dir 1: v -> m */
static void params_io(sg_mix_model *m, double *v, int dir) {
    size_t br = m->family == SG_MIX_MULTINOMIAL ? (size_t)m->E * m->C : (size_t)m->E, o = 0;
    double *parts[4] = {m->beta, m->family == SG_MIX_GAUSSIAN ? m->sigma2 : NULL, m->lev[0].w,
                        m->nlevels > 1 ? m->lev[1].w : NULL};
    size_t lens[4] = {br * m->q, m->family == SG_MIX_GAUSSIAN ? (size_t)m->E : 0,
                      (size_t)m->lev[0].m * m->lev[0].blocks * mix_level_cols(m, 0),
                      m->nlevels > 1
                          ? (size_t)m->lev[1].m * m->lev[1].blocks * mix_level_cols(m, 1)
                          : 0};
    for (int k = 0; k < 4; k++) {
        if (!parts[k] || !lens[k]) continue;
        if (dir) memcpy(parts[k], v + o, lens[k] * sizeof *v);
        else memcpy(v + o, parts[k], lens[k] * sizeof *v);
        o += lens[k];
    }
}

/* EM from m's parameters to convergence (or max_iter), its trace appended
 * to st->trace after `base` entries. A screened run (screen_iters > 0)
 * gives up, with res.screened = 1, when its objective is still <=
 * screen_obj after screen_iters iterations, unless its mean gain over the
 * last two iterations, kept up to iteration screen_cap, would take it above
 * screen_obj (it gives up after screen_cap iterations in any case). */
static em_result em_run_from(em_state *st, sg_mix_model *m, double lam, int run_id, int max_iter,
                             size_t base, int screen_iters, int screen_cap, double screen_obj) {
    em_result res;
    memset(&res, 0, sizeof res);
    res.trace_len = base;
    double ll = estep(st, m), obj = ll - penalty(st, m, lam);
    if (!isfinite(obj) || st->nomem) return res;
    trace_push(st, &res.trace_len, obj);
    size_t len = params_len(m);
    int accel = st->spec->accelerate && !(lam > 0) && m->K == m->E;
    double *th = accel ? malloc(4 * len * sizeof *th) : NULL;
    if (accel && !th) {
        st->nomem = 1;
        return res;
    }
    double *th0 = th, *th1 = th ? th + len : NULL, *th2 = th ? th + 2 * len : NULL;
    double *thx = th ? th + 3 * len : NULL;
    int phase = 0, it;
    double step_max = 1, obj_1 = obj, obj_2 = obj;
    for (it = 1; it <= max_iter; it++) {
        /* the screen: after screen_iters iterations a run still at or
         * below screen_obj goes on only while its gain per iteration over
         * the last two, kept up for the rest of the screen (screen_cap
         * iterations in all), would take it above screen_obj */
        if (screen_iters > 0 && it > screen_iters && obj <= screen_obj &&
            (it > screen_cap ||
             obj + 0.5 * (obj - obj_2) * (double)(screen_cap + 1 - it) <= screen_obj)) {
            res.screened = 1;
            it--;
            break;
        }
        obj_2 = obj_1, obj_1 = obj;
        if (accel && phase == 0) params_io(m, th0, 0);
        mstep_experts(st, m, st->tau, (size_t)m->E, lam);
        /* the gate's Newton solve stops once what it leaves is small next
         * to EM's last gain (none at the first iteration; at convergence
         * the gain, <= tol |obj|, makes it the full solve). Top-K gates
         * have no gradient test to catch a partial solve at the end, so
         * they always get the full one. */
        st->gate_dec_tol = m->K < m->E ? 0 : GATE_DEC_FRAC * (obj_1 - obj_2);
        gate_all(st, m, st->tau, lam, 0, 0, 1);
        st->gate_dec_tol = 0;
        double lln = estep(st, m), objn = lln - penalty(st, m, lam);
        if (!isfinite(objn) || st->nomem) goto out;
        if (obj - objn > res.max_decrease) res.max_decrease = obj - objn;
        double rel = fabs(objn - obj) / fmax(1.0, fabs(objn));
        ll = lln, obj = objn;
        if (!trace_push(st, &res.trace_len, obj)) st->nomem = 1;
        if (st->spec->progress) st->spec->progress(st->spec->progress_user, run_id, it, obj);
        if (rel <= st->spec->tol) {
            res.grad_norm = grad_norm(st, m, lam);
            /* top-K gates: the likelihood has kinks where a top-K set
             * changes, and its maximum may sit on one, where no gradient
             * vanishes: the relative-change test alone decides */
            if (res.grad_norm <= st->spec->grad_tol || m->K < m->E) {
                res.converged = 1;
                break;
            }
        }
        if (!accel) continue;
        if (phase == 0) {
            params_io(m, th1, 0);
            phase = 1;
            continue;
        }
        phase = 0;
        params_io(m, th2, 0);
        double r2 = 0, v2 = 0;
        for (size_t j = 0; j < len; j++) {
            double r = th1[j] - th0[j], v = th2[j] - 2 * th1[j] + th0[j];
            r2 += r * r, v2 += v * v;
        }
        if (!(v2 > 0) || !(r2 > 0)) continue;
        double a = -sqrt(r2 / v2);
        if (a <= -step_max) {
            /* the step bound grows as the steps reach it (SQUAREM's
             * step.max, x 4): early extrapolations stay short */
            a = -step_max;
            step_max = fmin(4 * step_max, SQUAREM_MAX_STEP);
        }
        if (!(a < -1)) continue; /* th2 itself */
        int valid = 1;
        for (size_t j = 0; j < len; j++) {
            double r = th1[j] - th0[j], v = th2[j] - 2 * th1[j] + th0[j];
            thx[j] = th0[j] - 2 * a * r + a * a * v;
            valid &= isfinite(thx[j]);
        }
        if (!valid) continue;
        params_io(m, thx, 1);
        if (m->family == SG_MIX_GAUSSIAN)
            for (int k = 0; k < m->E; k++) valid &= m->sigma2[k] >= st->spec->var_floor * st->vary;
        double llx = valid ? estep(st, m) : NAN, objx = valid ? llx - penalty(st, m, lam) : NAN;
        if (st->nomem) goto out;
        if (valid && isfinite(objx) && objx >= obj) {
            ll = llx, obj = objx;
            if (!trace_push(st, &res.trace_len, obj)) st->nomem = 1;
        } else {
            params_io(m, th2, 1);
            estep(st, m); /* tau, scores and log g back at th2 */
        }
    }
    if (it > max_iter) it = max_iter;
    res.iterations = it;
    if (res.screened) goto out;
    if (!res.converged) res.grad_norm = grad_norm(st, m, lam);
    res.loglik = ll, res.objective = obj, res.ok = !st->nomem;
out:
    if (!res.ok) res.iterations = it > max_iter ? max_iter : it;
    free(th);
    return res;
}

static em_result em_run(em_state *st, sg_mix_model *m, double lam, int run_id, int max_iter) {
    return em_run_from(st, m, lam, run_id, max_iter, 0, 0, 0, 0);
}

/* ---- initializations --------------------------------------------------- */

/* Parameters from a weight matrix t [n x E] (hard or soft): experts by
 * weighted M-steps; the gate fitted to t from zero when fit_gate, else
 * uniform (Laplace: centers at the weighted means of x). */
static void init_from_weights(em_state *st, sg_mix_model *m, const double *t, int fit_gate) {
    size_t n = st->n, E = (size_t)m->E, p = m->p;
    memset(m->beta, 0, (m->family == SG_MIX_MULTINOMIAL ? E * m->C : E) * m->q * sizeof(double));
    for (size_t k = 0; k < E; k++) m->sigma2[k] = st->vary > 0 ? st->vary : 1.0;
    mstep_experts(st, m, t, E, 0);
    for (int l = 0; l < m->nlevels; l++) {
        mix_level *lv = &m->lev[l];
        size_t rows = (size_t)lv->m * lv->blocks, cols = mix_level_cols(m, l);
        memset(lv->w, 0, rows * cols * sizeof(double));
        if (!lv->laplace) continue;
        /* Laplace centers: the t-weighted mean of x over the experts of each
         * alternative (a group at the top level of a hierarchy) */
        size_t per = E / rows;
        for (size_t a = 0; a < rows; a++) {
            double sw = 0;
            for (size_t i = 0; i < n; i++)
                for (size_t k = a * per; k < (a + 1) * per; k++) {
                    double wi = t[i * E + k];
                    sw += wi;
                    for (size_t j = 0; j < p; j++) lv->w[a * cols + j] += wi * st->d.xc[i * p + j];
                }
            for (size_t j = 0; j < p; j++) lv->w[a * cols + j] = sw > 0 ? lv->w[a * cols + j] / sw : 0;
        }
    }
    if (!fit_gate) return;
    /* normalized targets (rows of t may not sum to 1) */
    double *tn = malloc(n * E * sizeof *tn);
    if (!tn) {
        st->nomem = 1;
        return;
    }
    for (size_t i = 0; i < n; i++) {
        double s = 0;
        for (size_t k = 0; k < E; k++) s += t[i * E + k];
        for (size_t k = 0; k < E; k++) tn[i * E + k] = s > 0 ? t[i * E + k] / s : 1.0 / (double)E;
    }
    if (m->K < m->E) gate_all(st, m, tn, 0, 1, 0, 0); /* dense first: top-K from 0 ties */
    gate_all(st, m, tn, 0, 0, 0, 0);
    free(tn);
}

static void labels_to_weights(size_t n, size_t E, const int32_t *lab, double *t) {
    memset(t, 0, n * E * sizeof *t);
    for (size_t i = 0; i < n; i++) t[i * E + (size_t)lab[i]] = 1.0;
}

/* k-means on the standardized features and standardized y (or one-hot
 * labels), k-means++ seeding, 50 Lloyd iterations at most. */
static void kmeans_labels(em_state *st, const sg_mix_model *m, mix_rng *rng, int32_t *lab) {
    size_t n = st->n, p = m->p, E = (size_t)m->E;
    size_t dim = p + (m->family == SG_MIX_GAUSSIAN ? 1 : (size_t)m->C);
    double *pt = malloc(n * dim * sizeof *pt), *cen = malloc(E * dim * sizeof *cen);
    double *d2 = malloc(n * sizeof *d2), *cnt = malloc(E * sizeof *cnt);
    if (!pt || !cen || !d2 || !cnt) {
        for (size_t i = 0; i < n; i++) lab[i] = (int32_t)rng_index(rng, E);
        goto done;
    }
    double my = 0;
    if (m->family == SG_MIX_GAUSSIAN) {
        for (size_t i = 0; i < n; i++) my += st->y[i];
        my /= (double)n;
    }
    double sy = st->vary > 0 ? sqrt(st->vary) : 1.0;
    for (size_t i = 0; i < n; i++) {
        double *v = pt + i * dim;
        for (size_t j = 0; j < p; j++) v[j] = st->d.z[i * m->q + j + 1];
        if (m->family == SG_MIX_GAUSSIAN) v[p] = (st->y[i] - my) / sy;
        else
            for (int c = 0; c < m->C; c++) v[p + c] = st->labels[i] == c;
    }
    memcpy(cen, pt + rng_index(rng, n) * dim, dim * sizeof *cen);
    for (size_t k = 1; k <= E; k++) {
        double tot = 0;
        for (size_t i = 0; i < n; i++) {
            double best = INFINITY;
            for (size_t c = 0; c < k; c++) {
                double s = 0;
                for (size_t j = 0; j < dim; j++) {
                    double dd = pt[i * dim + j] - cen[c * dim + j];
                    s += dd * dd;
                }
                if (s < best) best = s, lab[i] = (int32_t)c;
            }
            d2[i] = best, tot += best;
        }
        if (k == E) break;
        double u = mix_rng_uniform(rng) * tot, acc = 0;
        size_t pick = rng_index(rng, n);
        if (tot > 0)
            for (size_t i = 0; i < n; i++)
                if ((acc += d2[i]) >= u) {
                    pick = i;
                    break;
                }
        memcpy(cen + k * dim, pt + pick * dim, dim * sizeof *cen);
    }
    for (int it = 0; it < 50; it++) {
        memset(cen, 0, E * dim * sizeof *cen);
        memset(cnt, 0, E * sizeof *cnt);
        for (size_t i = 0; i < n; i++) {
            cnt[lab[i]] += 1;
            for (size_t j = 0; j < dim; j++) cen[(size_t)lab[i] * dim + j] += pt[i * dim + j];
        }
        for (size_t k = 0; k < E; k++)
            for (size_t j = 0; j < dim; j++) cen[k * dim + j] = cnt[k] > 0 ? cen[k * dim + j] / cnt[k] : 1e300;
        int moved = 0;
        for (size_t i = 0; i < n; i++) {
            double best = INFINITY;
            int32_t bl = lab[i];
            for (size_t c = 0; c < E; c++) {
                double s = 0;
                for (size_t j = 0; j < dim; j++) {
                    double dd = pt[i * dim + j] - cen[c * dim + j];
                    s += dd * dd;
                }
                if (s < best) best = s, bl = (int32_t)c;
            }
            moved += bl != lab[i];
            lab[i] = bl;
        }
        if (!moved) break;
    }
done:
    free(pt), free(cen), free(d2), free(cnt);
}

/* Mixture of experts with constant gate proportions, from a random
 * partition: up to 200 EM iterations; leaves its responsibilities in t. */
static void mixreg_weights(em_state *st, sg_mix_model *m, mix_rng *rng, int32_t *lab, double *t) {
    size_t n = st->n, E = (size_t)m->E;
    for (size_t i = 0; i < n; i++) lab[i] = (int32_t)rng_index(rng, E);
    labels_to_weights(n, E, lab, t);
    double *pi = malloc(E * sizeof *pi);
    if (!pi) {
        st->nomem = 1;
        return;
    }
    double prev = -INFINITY;
    for (int it = 0; it < 200; it++) {
        for (size_t k = 0; k < E; k++) pi[k] = 0;
        for (size_t i = 0; i < n; i++)
            for (size_t k = 0; k < E; k++) pi[k] += t[i * E + k] / (double)n;
        mstep_experts(st, m, t, E, 0);
        mix_expert_scores(st->ctx, m, &st->d, st->sc);
        mix_expert_logdens(m, n, st->sc, st->y, st->labels, t);
        for (size_t i = 0; i < n; i++)
            for (size_t k = 0; k < E; k++) t[i * E + k] += log(pi[k]);
        sg_logsumexp_f64(st->ctx, n, E, t, E, st->lse, NULL);
        double ll = 0;
        for (size_t i = 0; i < n; i++) {
            ll += st->lse[i];
            for (size_t k = 0; k < E; k++) t[i * E + k] = exp(t[i * E + k] - st->lse[i]);
        }
        if (!isfinite(ll) || fabs(ll - prev) <= 1e-8 * fabs(ll)) break;
        prev = ll;
    }
    free(pi);
}

/* Fills m's parameters from strategy s. */
static void initialize(em_state *st, sg_mix_model *m, sg_mix_init s, mix_rng *rng) {
    size_t n = st->n, E = (size_t)m->E, q = m->q;
    int32_t *lab = malloc(n * sizeof *lab);
    double *t = malloc(n * E * sizeof *t);
    if (!lab || !t) {
        st->nomem = 1;
        free(lab), free(t);
        return;
    }
    switch (s) {
    case SG_MIX_INIT_LABELS:
        labels_to_weights(n, E, st->spec->init_labels, t);
        init_from_weights(st, m, t, 1);
        break;
    case SG_MIX_INIT_KMEANS:
        kmeans_labels(st, m, rng, lab);
        labels_to_weights(n, E, lab, t);
        init_from_weights(st, m, t, 1);
        break;
    case SG_MIX_INIT_LINES: {
        size_t sub = 2 * q < n ? 2 * q : n;
        memset(t, 0, n * E * sizeof *t);
        for (size_t k = 0; k < E; k++)
            for (size_t j = 0; j < sub; j++) t[rng_index(rng, n) * E + k] = 1.0;
        init_from_weights(st, m, t, 0);
        if (m->family == SG_MIX_GAUSSIAN) {
            /* one variance for all: the mean squared distance to the
             * nearest line (the subset fits themselves may be exact) */
            mix_expert_scores(st->ctx, m, &st->d, st->sc);
            double ss = 0;
            for (size_t i = 0; i < n; i++) {
                double best = INFINITY;
                for (size_t k = 0; k < E; k++) {
                    double r = st->y[i] - st->sc[i * E + k];
                    if (r * r < best) best = r * r;
                }
                ss += best;
            }
            double s2 = fmax(ss / (double)n, st->spec->var_floor * st->vary);
            for (size_t k = 0; k < E; k++) m->sigma2[k] = s2;
        }
        break;
    }
    case SG_MIX_INIT_MIXREG:
        mixreg_weights(st, m, rng, lab, t);
        init_from_weights(st, m, t, 1);
        break;
    case SG_MIX_INIT_PARTITION:
    case SG_MIX_INIT_AUTO:
    default:
        for (size_t i = 0; i < n; i++) lab[i] = (int32_t)rng_index(rng, E);
        labels_to_weights(n, E, lab, t);
        init_from_weights(st, m, t, 1);
        break;
    }
    free(lab), free(t);
}

/* ---- the escape step: split-and-merge candidates ----------------------
 *
 * EM from a start ends at a local maximum, and from an uninformative start
 * (a uniformly random partition sits next to the point where every expert
 * is the same regression) which maximum it reaches is decided by small
 * differences in its first steps. At convergence a fit therefore tries
 * split-and-merge candidates (after Ueda, Nakano, Ghahramani and Hinton,
 * "SMEM algorithm for mixture models", Neural Computation 12, 2000), in
 * groups:
 *   - merge-and-split, one group per pair (a, b) of experts, the pairs in
 *     decreasing order of the overlap of their responsibility columns
 *     (normalized inner product): a and b merged into a's slot, then one
 *     expert k (the merged one included) split in two into b's slot,
 *     softly, at the 1-D two-means cut of a score: the projection of its
 *     standardized covariates on their principal axis (a split that the
 *     gate can express), or its residual under its own weighted
 *     least-squares line. With two experts the merged expert is the whole
 *     data set, so these candidates do not depend on the fit;
 *   - moves: the high or the low residual side of expert k (the same soft
 *     split) moved to the expert j != k with the largest weighted log
 *     density over it. A fit that pairs one branch of a curve with a line
 *     pooling the rest (NPreg) gets out this way: the part of the pooled
 *     expert above its line joins the branch.
 * Order: the moves first for E = 2 (the only candidates that depend on the
 * fit), the pairs' groups first otherwise. A group's candidates get their
 * parameters from an M-step on their weights (the gate by a few Newton
 * steps), then EM runs from them in decreasing order of their starting
 * objective, each screened: after ESCAPE_SCREEN iterations one still not
 * above the fit goes on only while its last gains, kept up, would take it
 * above the fit within ESCAPE_SCREEN_CAP iterations. The first that gets
 * above runs to convergence and replaces the fit, and the step starts again
 * from the new fit (at most ESCAPE_ROUNDS rounds). The initializations (one
 * EM iteration each) and screens of a round are bounded by the fit's own
 * iteration count, and at least 4 (ESCAPE_SCREEN + 1). The objective
 * never decreases, and the result is an ordinary EM fixed point under the
 * same convergence tests. Applies to Gaussian experts with one dense linear
 * gate level and no Lasso penalty.
 */
#define ESCAPE_SCREEN 5
#define ESCAPE_SCREEN_CAP 10
#define ESCAPE_ROUNDS 3
#define ESCAPE_NEWTON 3
#define ESCAPE_GAIN 1e-8
#define ESCAPE_GAP 0.25

static int escape_applies(const em_state *st, const sg_mix_model *m, double lam) {
    return st->spec->escape && m->family == SG_MIX_GAUSSIAN && m->nlevels == 1 &&
           !m->lev[0].laplace && m->K == m->E && m->E >= 2 && !(lam > 0);
}

static int cmp_pair(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The split point of s under weights w >= 0 (1-D weighted two-means,
 * exact: every split of the sorted scores is tried, the one with the
 * smallest within-group weighted sum of squares wins, ties to the first;
 * returned as the midpoint between the two groups). sc: scratch of 2n. */
static double split_point(size_t n, const double *s, const double *w, double *sc) {
    double tw = 0, ts = 0;
    size_t cnt = 0;
    for (size_t i = 0; i < n; i++)
        if (w[i] > 0) sc[2 * cnt] = s[i], sc[2 * cnt + 1] = w[i], tw += w[i], ts += w[i] * s[i], cnt++;
    if (cnt < 2) return cnt ? sc[0] : 0;
    qsort(sc, cnt, 2 * sizeof *sc, cmp_pair);
    /* between-group sum of squares W1 W2 / W (m1 - m2)^2 is maximized */
    double w1 = 0, s1 = 0, best = -1, cut = sc[0];
    for (size_t i = 0; i + 1 < cnt; i++) {
        w1 += sc[2 * i + 1], s1 += sc[2 * i + 1] * sc[2 * i];
        if (sc[2 * i + 2] == sc[2 * i]) continue; /* no cut between equal scores */
        double w2 = tw - w1, m1 = s1 / w1, m2 = (ts - s1) / w2;
        double b = w1 * w2 * (m1 - m2) * (m1 - m2);
        if (b > best) best = b, cut = 0.5 * (sc[2 * i] + sc[2 * i + 2]);
    }
    return cut;
}

/* Split scores s [n] of the points weighted by w: kind 0 the projection of
 * the standardized covariates on the principal axis of their weighted
 * covariance (power iteration), kind 1 the residual of the weighted
 * least-squares line. Returns 0 when the kind does not apply. */
static int split_scores(em_state *st, const sg_mix_model *m, const double *w, int kind,
                        double *s) {
    size_t n = st->n, q = m->q, p = q - 1;
    const double *z = st->d.z;
    double sw = 0;
    for (size_t i = 0; i < n; i++) sw += w[i];
    if (!(sw > 0)) return 0;
    if (kind == 0) {
        if (p == 0) return 0;
        double *mu = calloc(p * (p + 2), sizeof *mu), *c = mu + p, *v = c + p * p;
        double *v2 = malloc(p * sizeof *v2);
        if (!mu || !v2) {
            free(mu), free(v2);
            st->nomem = 1;
            return 0;
        }
        for (size_t i = 0; i < n; i++)
            for (size_t j = 0; j < p; j++) mu[j] += w[i] * z[i * q + 1 + j] / sw;
        for (size_t i = 0; i < n; i++)
            for (size_t a = 0; a < p; a++)
                for (size_t b = 0; b < p; b++)
                    c[a * p + b] += w[i] * (z[i * q + 1 + a] - mu[a]) * (z[i * q + 1 + b] - mu[b]);
        for (size_t j = 0; j < p; j++) v[j] = 1.0 + (double)j / (double)p;
        for (int it = 0; it < 100; it++) {
            double nv = 0;
            for (size_t a = 0; a < p; a++) {
                double t = 0;
                for (size_t b = 0; b < p; b++) t += c[a * p + b] * v[b];
                v2[a] = t, nv += t * t;
            }
            nv = sqrt(nv);
            if (!(nv > 0)) break;
            for (size_t a = 0; a < p; a++) v[a] = v2[a] / nv;
        }
        for (size_t i = 0; i < n; i++) {
            double t = 0;
            for (size_t j = 0; j < p; j++) t += (z[i * q + 1 + j] - mu[j]) * v[j];
            s[i] = t;
        }
        free(mu), free(v2);
        return 1;
    }
    double *a = malloc((q * q + q) * sizeof *a), *b = a ? a + q * q : NULL;
    if (!a) {
        st->nomem = 1;
        return 0;
    }
    mix_weighted_gram(n, (int)q, z, q, w, a, st->buf);
    for (size_t j = 0; j < q; j++) {
        double t = 0;
        for (size_t i = 0; i < n; i++) t += w[i] * st->y[i] * z[i * q + j];
        b[j] = t;
    }
    double tr = 0;
    for (size_t j = 0; j < q; j++) tr += a[j * q + j];
    for (size_t j = 0; j < q; j++) a[j * q + j] += 1e-10 * tr / (double)q + 1e-300;
    int ok = mix_spd_solve((int)q, a, b) == 0;
    if (ok)
        for (size_t i = 0; i < n; i++) {
            double mu = 0;
            for (size_t j = 0; j < q; j++) mu += z[i * q + j] * b[j];
            s[i] = st->y[i] - mu;
        }
    free(a);
    return ok;
}

/* Soft split of the points weighted by w along score kind (split_scores):
 * u [n] <- the share of each point's weight that goes to the high side,
 * 1 / (1 + exp(-(s - cut) / sd)), cut the 1-D two-means split point, sd the
 * pooled within-group standard deviation of the score (a hard split along
 * the covariates is separable, and a gate fitted to it saturates where EM
 * cannot move it). Returns 0 when the kind does not apply or one side is
 * empty. srt: scratch of 2n. */
static int soft_split(em_state *st, const sg_mix_model *m, const double *w, int kind, double *u,
                      double *srt) {
    size_t n = st->n;
    if (!split_scores(st, m, w, kind, u)) return 0;
    double cut = split_point(n, u, w, srt), lo = 0, hi = 0, slo = 0, shi = 0;
    for (size_t i = 0; i < n; i++) {
        if (u[i] > cut) hi += w[i], shi += w[i] * u[i];
        else lo += w[i], slo += w[i] * u[i];
    }
    if (!(lo > 0 && hi > 0)) return 0;
    double mlo = slo / lo, mhi = shi / hi, ss = 0;
    for (size_t i = 0; i < n; i++) {
        double d = u[i] - (u[i] > cut ? mhi : mlo);
        ss += w[i] * d * d;
    }
    double sd = sqrt(ss / (lo + hi));
    if (!(sd > 0)) sd = 1e-3 * (fabs(mhi - mlo) + 1e-300);
    for (size_t i = 0; i < n; i++) u[i] = 1.0 / (1.0 + exp(-(u[i] - cut) / sd));
    return 1;
}

/* Tries the candidates from the fit m (result *res, its trace in
 * st->trace[0, res->trace_len)); replaces both when one is better. */
static void escape(em_state *st, sg_mix_model *m, double lam, int run_id, em_result *res) {
    size_t n = st->n, E = (size_t)m->E;
    /* at most 2 E candidates in a group: 2 (E - 1) merge-and-splits (E - 1
     * experts to split, two scores) or 2 E moves */
    int maxc = 2 * (int)E;
    size_t np = E * (E - 1) / 2;
    size_t *pi_ = malloc(2 * np * sizeof *pi_), *pj_ = pi_ ? pi_ + np : NULL;
    double *pov = malloc(np * sizeof *pov);
    sg_mix_model **cands = calloc((size_t)maxc, sizeof *cands);
    double *c0 = malloc((size_t)maxc * sizeof *c0);
    double *tau0 = malloc(n * E * sizeof *tau0), *t = malloc(n * E * sizeof *t);
    double *wk = malloc(n * sizeof *wk), *sc = malloc(n * sizeof *sc);
    double *srt = malloc(2 * n * sizeof *srt), *lf = malloc(n * E * sizeof *lf);
    int okc = cands != NULL;
    for (int c = 0; okc && c < maxc; c++) okc = (cands[c] = mix_model_clone(m)) != NULL;
    if (!okc || !c0 || !tau0 || !t || !wk || !sc || !srt || !lf || !pi_ || !pov) {
        st->nomem = 1;
        goto done;
    }
    /* the initializations (one EM iteration each) and screens of a round
     * spend at most as many EM iterations as the fit from the start took,
     * and at least enough for one screen of each of 4 candidates (a fit
     * that converged in a few accelerated iterations) */
    int budget = 4 * (ESCAPE_SCREEN + 1);
    if (res->iterations > budget) budget = res->iterations;
    for (int round = 0; round < ESCAPE_ROUNDS && res->ok; round++) {
        /* responsibilities at the current fit */
        estep(st, m);
        if (st->nomem) goto done;
        memcpy(tau0, st->tau, n * E * sizeof *tau0);
        /* the pairs in decreasing order of the overlap of their
         * responsibility columns, tau_a' tau_b / (||tau_a|| ||tau_b||) */
        size_t npair = 0;
        for (size_t a = 0; a < E; a++)
            for (size_t b2 = a + 1; b2 < E; b2++) {
                double ab = 0, aa = 0, bb = 0;
                for (size_t i = 0; i < n; i++) {
                    double ta = tau0[i * E + a], tv = tau0[i * E + b2];
                    ab += ta * tv, aa += ta * ta, bb += tv * tv;
                }
                double jm = ab / sqrt(fmax(aa * bb, 1e-300));
                size_t at = npair++;
                while (at > 0 && pov[at - 1] < jm) {
                    pi_[at] = pi_[at - 1], pj_[at] = pj_[at - 1], pov[at] = pov[at - 1];
                    at--;
                }
                pi_[at] = a, pj_[at] = b2, pov[at] = jm;
            }
        mix_expert_logdens(m, n, st->sc, st->y, st->labels, lf);
        /* groups of candidates: group g < npair merges pair g (the most
         * overlapping first) and splits one expert; group npair moves a
         * residual side of one expert to another. Order: the first pair,
         * the moves, the other pairs. Each initialization counts as one
         * EM iteration against the round's budget. */
        int won = -1, spent = 0;
        em_result r;
        memset(&r, 0, sizeof r);
        for (size_t gi = 0; gi <= npair && won < 0 && spent < budget; gi++) {
            size_t g = E == 2 ? (gi == 0 ? npair : 0) : gi;
            size_t mi = g < npair ? pi_[g] : 0, mj = g < npair ? pj_[g] : 0;
            int nc = 0;
            for (size_t k = 0; k < E; k++) {
                int kind = g < npair ? 0 : 2;
                for (; kind < (g < npair ? 2 : 3); kind++) {
                    if (kind < 2 && k == mj) continue;
                    memcpy(t, tau0, n * E * sizeof *t);
                    if (kind < 2)
                        for (size_t i = 0; i < n; i++) {
                            t[i * E + mi] += t[i * E + mj];
                            t[i * E + mj] = 0;
                        }
                    for (size_t i = 0; i < n; i++) wk[i] = t[i * E + k];
                    if (!soft_split(st, m, wk, kind < 2 ? kind : 1, sc, srt)) {
                        if (st->nomem) goto done;
                        continue;
                    }
                    for (int side = 0; side < (kind < 2 ? 1 : 2); side++) {
                        if (kind < 2) {
                            for (size_t i = 0; i < n; i++) {
                                t[i * E + k] = wk[i] * (1 - sc[i]);
                                t[i * E + mj] = wk[i] * sc[i];
                            }
                        } else {
                            /* the part: wk u (side 0) or wk (1 - u); its
                             * target j != k: the largest tau-weighted log
                             * density over it */
                            size_t bj = k;
                            double bl = -INFINITY, pw = 0;
                            for (size_t i = 0; i < n; i++) pw += wk[i] * (side ? 1 - sc[i] : sc[i]);
                            if (!(pw > 0)) continue;
                            for (size_t j = 0; j < E; j++) {
                                if (j == k) continue;
                                double l = 0;
                                for (size_t i = 0; i < n; i++)
                                    l += wk[i] * (side ? 1 - sc[i] : sc[i]) * lf[i * E + j];
                                if (l > bl) bl = l, bj = j;
                            }
                            if (bj == k) continue;
                            memcpy(t, tau0, n * E * sizeof *t);
                            for (size_t i = 0; i < n; i++) {
                                double part = wk[i] * (side ? 1 - sc[i] : sc[i]);
                                t[i * E + k] -= part;
                                t[i * E + bj] += part;
                            }
                        }
                        /* a starting point: the gate by at most
                         * ESCAPE_NEWTON Newton steps from zero (EM's first
                         * gate M-step finishes the fit) */
                        sg_mix_model *c = cands[nc];
                        st->newton_cap = ESCAPE_NEWTON;
                        init_from_weights(st, c, t, 1);
                        st->newton_cap = 0;
                        double o0 = estep(st, c) - penalty(st, c, lam);
                        if (st->nomem) goto done;
                        spent++;
                        if (isfinite(o0)) c0[nc++] = o0;
                    }
                }
            }
            /* screened EM from each, the highest starting objective
             * first, until one ends above the fit; none that starts more
             * than ESCAPE_GAP nats per observation below the fit, and a
             * group whose best candidate does ends the round */
            const double floor_obj = res->objective - ESCAPE_GAP * (double)n;
            int far = nc > 0;
            for (int c = 0; c < nc; c++) far &= !(c0[c] >= floor_obj);
            if (far) break;
            for (int tried = 0; tried < nc && won < 0 && spent < budget; tried++) {
                int bi = -1;
                for (int c = 0; c < nc; c++)
                    if (c0[c] > -INFINITY && (bi < 0 || c0[c] > c0[bi])) bi = c;
                if (bi < 0 || !(c0[bi] >= floor_obj)) break;
                c0[bi] = -INFINITY;
                int cap = budget - spent < ESCAPE_SCREEN_CAP ? budget - spent : ESCAPE_SCREEN_CAP;
                /* max_iter caps the restart's EM iterations, the fit's and
                 * its candidates' together */
                const int left = st->spec->max_iter - res->iterations;
                if (left < 1) break;
                r = em_run_from(st, cands[bi], lam, run_id, left, res->trace_len, ESCAPE_SCREEN,
                                cap < left ? cap : left, res->objective);
                res->iterations += r.iterations;
                spent += r.screened ? r.iterations : 0;
                if (st->nomem) goto done;
                /* a gain below ESCAPE_GAIN (relative) is the same maximum */
                if (!r.screened && r.ok &&
                    r.objective - res->objective > ESCAPE_GAIN * fmax(1.0, fabs(res->objective)))
                    won = bi;
            }
        }
        if (won < 0) break;
        sg_mix_model *cand = cands[won];
        /* keep the candidate's trace from its first value above the
         * fit's: the joined trace stays monotone */
        size_t f = res->trace_len;
        while (f < r.trace_len && !(st->trace[f] > res->objective)) f++;
        size_t keep = r.trace_len - f;
        memmove(st->trace + res->trace_len, st->trace + f, keep * sizeof *st->trace);
        res->trace_len += keep;
        mix_params_copy(m, cand);
        res->loglik = r.loglik, res->objective = r.objective;
        res->grad_norm = r.grad_norm, res->converged = r.converged;
        if (r.max_decrease > res->max_decrease) res->max_decrease = r.max_decrease;
        res->escapes++;
    }
done:
    for (int c = 0; cands && c < maxc; c++) sg_mix_model_free(cands[c]);
    free(cands), free(c0);
    free(tau0), free(t), free(wk), free(sc), free(srt), free(lf), free(pi_), free(pov);
}

static sg_mix_init strategy(const sg_mix_spec *s, int r) {
    static const sg_mix_init cycle[4] = {SG_MIX_INIT_PARTITION, SG_MIX_INIT_KMEANS,
                                         SG_MIX_INIT_LINES, SG_MIX_INIT_MIXREG};
    return s->init == SG_MIX_INIT_AUTO ? cycle[r % 4] : s->init;
}

/* ---- Lasso bookkeeping ------------------------------------------------- */

/* nonzero penalized coefficients, and the count of unpenalized ones */
static size_t nonzero_count(const sg_mix_model *m, double *unpen) {
    size_t q = m->q, nz = 0;
    double up = 0;
    size_t br = m->family == SG_MIX_MULTINOMIAL ? (size_t)m->E * m->C : (size_t)m->E;
    for (size_t r = 0; r < br; r++) {
        int ref = m->family == SG_MIX_MULTINOMIAL && (int)(r % (size_t)m->C) == m->C - 1;
        if (ref) continue;
        up += 1;
        for (size_t j = 1; j < q; j++) nz += m->beta[r * q + j] != 0;
    }
    if (m->family == SG_MIX_GAUSSIAN) up += m->E;
    for (int l = 0; l < m->nlevels; l++) {
        const mix_level *lv = &m->lev[l];
        if (lv->m < 2) continue;
        if (lv->laplace) {
            up += (double)lv->blocks * lv->m * m->p;
            continue;
        }
        for (int b = 0; b < lv->blocks; b++)
            for (int k = 0; k < lv->m - 1; k++) {
                up += 1;
                const double *w = lv->w + ((size_t)b * lv->m + k) * q;
                for (size_t j = 1; j < q; j++) nz += w[j] != 0;
            }
    }
    if (unpen) *unpen = up;
    return nz;
}

/* The smallest lambda zeroing every penalized coefficient, at a fit whose
 * penalized coefficients are all zero: max |d loglik / d theta_j| / n. */
static double lambda_max(em_state *st, sg_mix_model *m) {
    size_t n = st->n, q = m->q, E = (size_t)m->E;
    double mx = 0;
    estep(st, m);
    if (m->family == SG_MIX_GAUSSIAN) {
        for (size_t k = 0; k < E; k++)
            for (size_t j = 1; j < q; j++) {
                double g = 0;
                for (size_t i = 0; i < n; i++)
                    g += st->tau[i * E + k] * (st->y[i] - st->sc[i * E + k]) * st->d.z[i * q + j];
                g = fabs(g) / m->sigma2[k];
                if (g > mx) mx = g;
            }
    } else {
        size_t C = (size_t)m->C;
        for (size_t k = 0; k < E; k++)
            for (size_t c = 0; c + 1 < C; c++)
                for (size_t j = 1; j < q; j++) {
                    double g = 0;
                    for (size_t i = 0; i < n; i++) {
                        double pc = exp(st->sc[i * E * C + k * C + c]);
                        g += st->tau[i * E + k] * ((st->labels[i] == (int32_t)c) - pc) * st->d.z[i * q + j];
                    }
                    if (fabs(g) > mx) mx = fabs(g);
                }
    }
    /* linear gate levels: gradient sum_i (r_ik - s_i P_ik) d_ij / T */
    for (int l = 0; l < m->nlevels; l++) {
        const mix_level *lv = &m->lev[l];
        if (lv->laplace || lv->m < 2) continue;
        const double *des = gate_design(st, m);
        size_t mm = (size_t)lv->m, rows = mm * lv->blocks;
        double *pr = malloc(n * rows * sizeof *pr);
        if (!pr) {
            st->nomem = 1;
            return 0;
        }
        /* with every slope zero, P depends on the intercepts only */
        for (size_t i = 0; i < n; i++)
            for (size_t b = 0; b < (size_t)lv->blocks; b++) {
                double *pi = pr + i * rows + b * mm, mxl = -INFINITY, z = 0;
                for (size_t k = 0; k < mm; k++) {
                    pi[k] = lv->w[(b * mm + k) * q] / m->T;
                    if (pi[k] > mxl) mxl = pi[k];
                }
                for (size_t k = 0; k < mm; k++) z += (pi[k] = exp(pi[k] - mxl));
                for (size_t k = 0; k < mm; k++) pi[k] /= z;
            }
        for (size_t b = 0; b < (size_t)lv->blocks; b++)
            for (size_t k = 0; k + 1 < mm; k++)
                for (size_t j = 1; j < q; j++) {
                    double g = 0;
                    for (size_t i = 0; i < n; i++) {
                        double rk, si = 0;
                        if (m->nlevels == 1) rk = st->tau[i * E + k], si = 1;
                        else if (l == 0) {
                            size_t per = E / mm;
                            rk = 0;
                            for (size_t e = k * per; e < (k + 1) * per; e++) rk += st->tau[i * E + e];
                            si = 1;
                        } else {
                            rk = st->tau[i * E + b * mm + k];
                            for (size_t e = b * mm; e < (b + 1) * mm; e++) si += st->tau[i * E + e];
                        }
                        g += (rk - si * pr[i * rows + b * mm + k]) * des[i * q + j] / m->T;
                    }
                    if (fabs(g) > mx) mx = fabs(g);
                }
        free(pr);
    }
    return mx / (double)n;
}

/* ---- the fit ----------------------------------------------------------- */

static void state_free(em_state *st) {
    mix_design_free(&st->d);
    free(st->logg), free(st->gp), free(st->gsum), free(st->sc), free(st->tau), free(st->lse);
    free(st->r), free(st->buf);
    free(st->trace);
}

/* Records the summary of m from a run and the state's responsibilities. */
static int finish_model(em_state *st, sg_mix_model *m, const em_result *res, double lam,
                        const double *trace, size_t trace_len) {
    size_t n = st->n, E = (size_t)m->E;
    double ll = estep(st, m), en = 0;
    for (size_t i = 0; i < n * E; i++) {
        double t = st->tau[i];
        if (t > 0) en -= t * log(t);
    }
    m->n = n;
    m->loglik = ll;
    m->objective = ll - penalty(st, m, lam);
    m->lambda = lam;
    if (lam > 0) {
        double up;
        size_t nz = nonzero_count(m, &up);
        m->df = (double)nz + up;
    } else {
        m->df = mix_model_df(m);
    }
    m->aic = -2 * ll + 2 * m->df;
    m->bic = -2 * ll + m->df * log((double)n);
    m->icl = m->bic + 2 * en;
    m->iterations = res->iterations;
    m->converged = res->converged;
    m->grad_norm = res->grad_norm;
    m->max_decrease = res->max_decrease;
    free(m->trace);
    m->trace = malloc((trace_len ? trace_len : 1) * sizeof(double));
    if (!m->trace) return 0;
    memcpy(m->trace, trace, trace_len * sizeof(double));
    m->trace_len = trace_len;
    return mix_model_finish(m);
}

/* Restarts at penalty lam; the best run's parameters in best (and its
 * trace in *btrace). Returns 0 if no run succeeded. */
static int fit_restarts(em_state *st, sg_mix_model *work, sg_mix_model *best, double lam,
                        em_result *bres, double **btrace) {
    const sg_mix_spec *s = st->spec;
    int have = 0;
    for (int r = 0; r < s->restarts && !st->nomem; r++) {
        mix_rng rng = {s->seed * 0x2545F4914F6CDD1Dull + (uint64_t)r * 0x9E3779B97F4A7C15ull + 1};
        mix_rng_next(&rng);
        initialize(st, work, strategy(s, r), &rng);
        if (st->nomem) break;
        em_result res = em_run(st, work, lam, r, s->max_iter);
        /* the escape starts from a converged fit only: a fit stopped by
         * max_iter has no iterations left to spend */
        if (res.ok && res.converged && isfinite(res.objective) && escape_applies(st, work, lam))
            escape(st, work, lam, r, &res);
        if (!res.ok || !isfinite(res.objective)) continue;
        if (!have || res.objective > bres->objective) {
            have = 1;
            *bres = res;
            bres->iterations = res.iterations;
            best->best_restart = r;
            mix_params_copy(best, work);
            double *t = realloc(*btrace, (res.trace_len ? res.trace_len : 1) * sizeof *t);
            if (!t) {
                st->nomem = 1;
                break;
            }
            *btrace = t;
            memcpy(t, st->trace, res.trace_len * sizeof *t);
        }
    }
    return have;
}

static sg_status lasso_path(em_state *st, sg_mix_model *work, sg_mix_model *best,
                            em_result *bres, double **btrace, double *lam_out) {
    const sg_mix_spec *s = st->spec;
    int L = s->path_length;
    double big = 1e100 / (double)st->n;
    if (!fit_restarts(st, work, best, big, bres, btrace)) return SG_ERR_ARGUMENT;
    mix_params_copy(work, best);
    /* a hair above lambda_max, so that rounding in the coordinate descent
     * cannot leave the coefficient at the boundary nonzero */
    double lmax = lambda_max(st, work) * (1 + 1e-3);
    free(best->path);
    best->path = malloc((size_t)L * 4 * sizeof(double));
    sg_mix_model *sel = mix_model_clone(best);
    if (!best->path || !sel || st->nomem) {
        sg_mix_model_free(sel);
        return SG_ERR_NO_MEMORY;
    }
    double best_bic = INFINITY;
    size_t n = st->n;
    /* the fit with every penalized coefficient zero satisfies the KKT
     * conditions at lambda_max (its unpenalized parameters are at a
     * stationary point, and lambda_max is its largest penalized gradient):
     * it is the path's first entry as it is, exactly empty (EM run again
     * from it at lambda_max could move a few coefficients off zero: the
     * unpenalized parameters were converged to the tolerance only) */
    const em_result res0 = *bres;
    for (int l = 0; l < L; l++) {
        double lam = lmax * pow(s->path_min_ratio, (double)l / (double)(L - 1));
        if (!(lam > 0)) lam = DBL_MIN;
        em_result res = l == 0 ? res0 : em_run(st, work, lam, s->restarts + l, s->max_iter);
        if (!res.ok) {
            if (st->nomem) {
                sg_mix_model_free(sel);
                return SG_ERR_NO_MEMORY;
            }
            mix_params_copy(work, sel);
            continue;
        }
        double up;
        size_t nz = nonzero_count(work, &up);
        double bic = -2 * res.loglik + ((double)nz + up) * log((double)n);
        double *e = best->path + 4 * best->path_len++;
        e[0] = lam, e[1] = res.loglik, e[2] = bic, e[3] = (double)nz;
        if (bic < best_bic) {
            best_bic = bic;
            mix_params_copy(sel, work);
            *bres = res;
            *lam_out = lam;
            double *t = realloc(*btrace, (res.trace_len ? res.trace_len : 1) * sizeof *t);
            if (!t) {
                sg_mix_model_free(sel);
                return SG_ERR_NO_MEMORY;
            }
            *btrace = t;
            /* entry 0: *btrace already holds the zero fit's trace */
            if (l > 0) memcpy(t, st->trace, res.trace_len * sizeof *t);
        }
    }
    mix_params_copy(best, sel);
    sg_mix_model_free(sel);
    return best_bic < INFINITY ? SG_OK : SG_ERR_ARGUMENT;
}

sg_status mix_fit(sg_context *ctx, const sg_mix_spec *spec, size_t n, size_t p, const double *x,
                  size_t ldx, const double *y, const int32_t *labels, sg_mix_model **out) {
    const char *op = "sg_mix_fit";
    sg_mix_model shape;
    sg_status stt = mix_check_spec(ctx, spec, n, p, &shape);
    if (stt != SG_OK) return stt;
    stt = mix_check_data(ctx, op, &shape, n, x, ldx, y, labels);
    if (stt != SG_OK) return stt;

    sg_mix_model *best = calloc(1, sizeof *best), *work = calloc(1, sizeof *work);
    em_state st;
    memset(&st, 0, sizeof st);
    double *btrace = NULL;
    if (!best || !work) goto nomem;
    *best = shape, *work = shape;
    if (!mix_model_alloc(best) || !mix_model_alloc(work)) goto nomem;
    /* standardization: mean and population standard deviation */
    for (size_t j = 0; j < p; j++) {
        double mu = 0, v = 0;
        for (size_t i = 0; i < n; i++) mu += x[i * ldx + j];
        mu /= (double)n;
        for (size_t i = 0; i < n; i++) v += (x[i * ldx + j] - mu) * (x[i * ldx + j] - mu);
        v /= (double)n;
        if (!(v > 1e-24 * (mu * mu + 1e-300))) {
            sg_mix_model_free(best), sg_mix_model_free(work);
            return sg_fail(ctx, SG_ERR_ARGUMENT,
                           "%s: feature column %zu of x is constant: its coefficients are not "
                           "identifiable (the intercept is implicit)", op, j);
        }
        best->center[j] = work->center[j] = mu;
        best->scale[j] = work->scale[j] = sqrt(v);
    }
    st.ctx = ctx, st.spec = spec, st.n = n, st.y = y, st.labels = labels;
    if (spec->family == SG_MIX_GAUSSIAN) {
        double mu = 0, v = 0;
        for (size_t i = 0; i < n; i++) mu += y[i];
        mu /= (double)n;
        for (size_t i = 0; i < n; i++) v += (y[i] - mu) * (y[i] - mu);
        st.vary = v / (double)n;
        if (!(st.vary > 0)) {
            sg_mix_model_free(best), sg_mix_model_free(work);
            return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: y is constant (variance 0)", op);
        }
    }
    size_t E = (size_t)shape.E, C = (size_t)shape.C, G = (size_t)shape.G;
    size_t rcols = C > G ? C : G;
    if (!mix_design_build(work, n, x, ldx, &st.d)) goto nomem;
    st.logg = malloc(n * E * sizeof(double));
    st.gp = malloc(n * E * sizeof(double));
    st.gsum = malloc(n * sizeof(double));
    st.sc = malloc(n * E * C * sizeof(double));
    st.tau = malloc(n * E * sizeof(double));
    st.lse = malloc(n * sizeof(double));
    st.r = malloc(n * rcols * sizeof(double));
    st.buf = malloc(n * shape.q * sizeof(double));
    if (!st.logg || !st.gp || !st.gsum || !st.sc || !st.tau || !st.lse || !st.r || !st.buf) goto nomem;

    em_result bres;
    memset(&bres, 0, sizeof bres);
    double lam = spec->lasso > 0 ? spec->lasso : 0;
    if (spec->lasso < 0) {
        stt = lasso_path(&st, work, best, &bres, &btrace, &lam);
        if (stt == SG_ERR_NO_MEMORY || st.nomem) goto nomem;
        if (stt != SG_OK) goto degenerate;
    } else if (!fit_restarts(&st, work, best, lam, &bres, &btrace)) {
        if (st.nomem) goto nomem;
        goto degenerate;
    }
    if (!finish_model(&st, best, &bres, lam, btrace, bres.trace_len)) goto nomem;
    sg_mix_model_free(work);
    state_free(&st);
    free(btrace);
    *out = best;
    return SG_OK;
degenerate:
    sg_mix_model_free(best), sg_mix_model_free(work), state_free(&st), free(btrace);
    return sg_fail(ctx, SG_ERR_ARGUMENT,
                   "%s: every restart degenerated (non-finite likelihood); try other "
                   "initializations, fewer experts or a larger var_floor", op);
nomem:
    sg_mix_model_free(best), sg_mix_model_free(work), state_free(&st), free(btrace);
    return sg_fail(ctx, SG_ERR_NO_MEMORY, "%s: out of memory", op);
}

sg_status sg_mix_fit(sg_context *ctx, const sg_mix_spec *spec, size_t n, size_t p,
                     const double *x, size_t ldx, const double *y, const int32_t *labels,
                     sg_mix_model **out) {
    sg_ok(ctx);
    if (!out) return sg_fail(ctx, SG_ERR_ARGUMENT, "sg_mix_fit: out is NULL");
    *out = NULL;
    return mix_fit(ctx, spec, n, p, x, ldx, y, labels, out);
}

/*
 * mix_gate.c - the M-step solvers of the gates and of the multinomial
 * experts: weighted multinomial logistic regression (dense, top-K or with a
 * temperature; ridge and optional l1) by Newton's method with step halving,
 * proximal Newton when an l1 penalty is present; and the Laplace gate by
 * gradient ascent with Barzilai-Borwein steps and backtracking. Both accept
 * a step only when the objective does not decrease, which keeps EM
 * monotone. The EM loop itself lives in mix_em.c.
 */
#include <cblas.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "models/mix_internal.h"

/* ---- weighted multinomial logistic ------------------------------------ */

/* Scratch of one evaluation: log-probabilities, probabilities, row sums. */
typedef struct ml_work {
    double *lp;  /* [n x m] log P (-inf off the top-K) */
    double *pr;  /* [n x m] P */
    double *s;   /* [n] row sums of r */
} ml_work;

/* Row i's top-K set: entry j is kept when fewer than K entries beat it
 * (larger logit, or equal logit at a lower index: ties to the lower index).
 * l becomes log P, p becomes P. */
static void topk_logsoftmax(double *l, double *p, int m, int k) {
    double mx = -INFINITY;
    if (k < m) {
        unsigned char keep[256];
        for (int j = 0; j < m; j++) {
            int rank = 0;
            for (int a = 0; a < m; a++)
                if (l[a] > l[j] || (l[a] == l[j] && a < j)) rank++;
            keep[j] = rank < k;
        }
        for (int j = 0; j < m; j++)
            if (!keep[j]) l[j] = -INFINITY;
    }
    for (int j = 0; j < m; j++)
        if (l[j] > mx) mx = l[j];
    double s = 0;
    for (int j = 0; j < m; j++) s += (p[j] = exp(l[j] - mx));
    double ls = log(s), is = 1.0 / s;
    for (int j = 0; j < m; j++) {
        l[j] -= mx + ls;
        p[j] *= is;
    }
}

static double ml_penalty(const mix_mlogit *pb, const double *w) {
    double r2 = 0, l1 = 0;
    for (int j = 0; j < pb->m - 1; j++)
        for (int a = 0; a < pb->q; a++) {
            double v = w[(size_t)j * pb->q + a];
            r2 += v * v;
            if (a > 0) l1 += fabs(v);
        }
    double pen = 0.5 * pb->ridge * (double)pb->n * r2;
    if (pb->lam > 0 && l1 > 0) pen += pb->lam * (double)pb->n * l1;
    return pen;
}

/* F(W), leaving P in wk->pr (wk->lp holds the logits on the dense path,
 * log P on the general one: read neither after this call). */
static double ml_eval(const mix_mlogit *pb, const double *w, ml_work *wk) {
    size_t n = pb->n;
    int m = pb->m, q = pb->q;
    mix_gemm_nt(n, m, q, 1.0 / pb->T, pb->d, pb->ldd, w, (size_t)q, wk->lp, (size_t)m);
    double f = 0;
    if (pb->k == m && m <= 256) {
        /* dense: sum_j r_j log P_j = sum_j r_j (l_j - mx) - rs log S with
         * rs = sum_j r_j; rows with rs == 1 (the usual responsibilities)
         * take log S from mix_logsum (one log per 32 rows), finite rows
         * only (otherwise the general loop below) */
        mix_logsum ls = {1.0, 0, 0};
        size_t i;
        for (i = 0; i < n; i++) {
            double *l = wk->lp + i * (size_t)m, *p = wk->pr + i * (size_t)m, mx = l[0], sum = 0;
            const double *r = pb->r + i * pb->ldr;
            int am = 0;
            for (int j = 1; j < m; j++)
                if (l[j] > mx) mx = l[j], am = j;
            if (!isfinite(mx)) break;
            /* the maximum's exp(0) is exactly 1: not computed */
            for (int j = 0; j < m; j++) sum += (p[j] = j == am ? 1.0 : mix_exp(l[j] - mx));
            double inv = 1.0 / sum, rs = 0, fr = 0;
            for (int j = 0; j < m; j++) {
                p[j] *= inv;
                if (r[j] > 0) rs += r[j], fr += r[j] * (l[j] - mx);
            }
            f += fr;
            if (rs == 1.0) mix_logsum_add(&ls, sum);
            else f -= rs * log(sum);
        }
        if (i == n) return f - mix_logsum_value(&ls) - ml_penalty(pb, w);
        /* a non-finite row: the general loop below, from the logits
         * again (the rows done hold their probabilities now) */
        mix_gemm_nt(n, m, q, 1.0 / pb->T, pb->d, pb->ldd, w, (size_t)q, wk->lp, (size_t)m);
        f = 0;
    }
    for (size_t i = 0; i < n; i++) {
        double *l = wk->lp + i * (size_t)m;
        topk_logsoftmax(l, wk->pr + i * (size_t)m, m, pb->k);
        const double *r = pb->r + i * pb->ldr;
        for (int j = 0; j < m; j++)
            if (r[j] > 0) f += r[j] * l[j];
    }
    return f - ml_penalty(pb, w);
}

/* Gradient of the smooth part over the free rows: g [(m-1) x q]. */
static void ml_grad(const mix_mlogit *pb, const double *w, const ml_work *wk, double *dm,
                    double *g) {
    size_t n = pb->n;
    int m = pb->m, q = pb->q;
    for (size_t i = 0; i < n; i++) {
        const double *r = pb->r + i * pb->ldr;
        const double *p = wk->pr + i * (size_t)m;
        for (int j = 0; j < m - 1; j++)
            dm[i * (size_t)(m - 1) + j] = (r[j] - wk->s[i] * p[j]) / pb->T;
    }
    mix_gemm_tn(n, m - 1, q, dm, (size_t)(m - 1), pb->d, pb->ldd, g);
    double rn = pb->ridge * (double)n;
    for (int j = 0; j < (m - 1) * q; j++) g[j] -= rn * w[j];
}

/* The max-norm of the minimum-norm subgradient over the free coordinates. */
static double ml_gnorm(const mix_mlogit *pb, const double *w, const double *g) {
    double mx = 0, ln = pb->lam * (double)pb->n;
    for (int j = 0; j < (pb->m - 1) * pb->q; j++) {
        double v = g[j];
        if (pb->lam > 0 && j % pb->q != 0) {
            if (w[j] > 0) v -= ln;
            else if (w[j] < 0) v += ln;
            else v = fabs(v) > ln ? fabs(v) - ln : 0;
        }
        if (fabs(v) > mx) mx = fabs(v);
    }
    return mx / (double)(pb->n ? pb->n : 1);
}

/* A = -Hessian of the smooth part (positive definite with the ridge):
 * blockdiag_j(D' diag(s P_j) D) - B' B, over T^2, with B_i = sqrt(s_i)
 * (P_i1 d_i, ..., P_i,m-1 d_i); + ridge n I. One dsyrk and m-1 weighted
 * Gram matrices. */
static void ml_hess(const mix_mlogit *pb, const ml_work *wk, double *a, double *big,
                    double *wt) {
    size_t n = pb->n;
    int m = pb->m, q = pb->q, kk = (m - 1) * q;
    double it2 = 1.0 / (pb->T * pb->T);
    for (size_t i = 0; i < n; i++) {
        const double *p = wk->pr + i * (size_t)m;
        const double *di = pb->d + i * pb->ldd;
        double ss = sqrt(wk->s[i]);
        double *bi = big + i * (size_t)kk;
        for (int j = 0; j < m - 1; j++) {
            double pj = p[j] * ss;
            for (int a2 = 0; a2 < q; a2++) bi[j * q + a2] = pj * di[a2];
        }
    }
    cblas_dsyrk(CblasRowMajor, CblasLower, CblasTrans, kk, (int)n, -it2, big, kk, 0.0, a, kk);
    for (int j = 0; j < kk; j++)
        for (int l2 = j + 1; l2 < kk; l2++) a[(size_t)j * kk + l2] = a[(size_t)l2 * kk + j];
    double *blk = big; /* reuse as scratch [n x q] */
    double *c = wt + n;
    for (int j = 0; j < m - 1; j++) {
        for (size_t i = 0; i < n; i++) wt[i] = wk->s[i] * wk->pr[i * (size_t)m + j] * it2;
        mix_weighted_gram(n, q, pb->d, pb->ldd, wt, c, blk);
        for (int a1 = 0; a1 < q; a1++)
            for (int a2 = 0; a2 < q; a2++)
                a[(size_t)(j * q + a1) * kk + j * q + a2] += c[a1 * q + a2];
    }
    double rn = pb->ridge * (double)n;
    for (int j = 0; j < kk; j++) a[(size_t)j * kk + j] += rn;
}

static void row_sums(const mix_mlogit *pb, double *s) {
    for (size_t i = 0; i < pb->n; i++) {
        double v = 0;
        for (int j = 0; j < pb->m; j++) v += pb->r[i * pb->ldr + j];
        s[i] = v;
    }
}

int mix_mlogit_value(const mix_mlogit *pb, const double *w, double *f, double *gnorm) {
    size_t n = pb->n;
    int m = pb->m, q = pb->q;
    if (m < 2) {
        *f = 0;
        if (gnorm) *gnorm = 0;
        return 0;
    }
    ml_work wk;
    wk.lp = malloc(2 * n * (size_t)m * sizeof *wk.lp);
    wk.pr = wk.lp ? wk.lp + n * (size_t)m : NULL;
    wk.s = malloc(n * sizeof *wk.s);
    double *dm = malloc(n * (size_t)(m - 1) * sizeof *dm);
    double *g = malloc((size_t)(m - 1) * q * sizeof *g);
    int rc = -1;
    if (wk.lp && wk.s && dm && g) {
        row_sums(pb, wk.s);
        *f = ml_eval(pb, w, &wk);
        if (gnorm) {
            ml_grad(pb, w, &wk, dm, g);
            *gnorm = ml_gnorm(pb, w, g);
        }
        rc = 0;
    }
    free(wk.lp), free(wk.s), free(dm), free(g);
    return rc;
}

/*
 * Newton's method with a lazily refreshed Hessian: the Hessian is formed
 * (and factored) at the first step and again after any step that needed
 * halving or after 3 steps; in between, steps reuse the factor (a chord
 * method: cheap, and exact enough near the optimum, where EM spends its
 * time). Every accepted step satisfies F(new) >= F(old). Stops when the
 * Newton decrement g' A^-1 g (about twice the remaining gain) falls under
 * max(2e-13 |F|, pb->dec_tol) (EM passes a looser dec_tol between its
 * iterations), or when no halving helps. With lam > 0 the step comes from
 * coordinate descent on the l1-penalized quadratic model (proximal
 * Newton), stopping when the step or the gain vanishes.
 */
int mix_mlogit_fit(const mix_mlogit *pb, double *w, int max_newton, double *fout) {
    size_t n = pb->n;
    int m = pb->m, q = pb->q, kk = (m - 1) * q;
    if (m < 2) {
        *fout = 0;
        return 0;
    }
    ml_work wk, wk2;
    size_t bigc = (size_t)kk > (size_t)q ? (size_t)kk : (size_t)q;
    double *lpall = malloc(4 * n * (size_t)m * sizeof *lpall);
    wk.s = wk2.s = malloc(n * sizeof *wk.s);
    double *dm = malloc(n * (size_t)(m - 1) * sizeof *dm);
    double *big = malloc((n ? n : 1) * bigc * sizeof *big);
    double *wt = malloc((n + (size_t)q * q) * sizeof *wt);
    double *g = calloc((size_t)kk * 5 + (size_t)q, sizeof *g);
    double *a = malloc(2 * (size_t)kk * kk * sizeof *a);
    unsigned char *pen = malloc((size_t)kk);
    int rc = -1;
    if (!lpall || !wk.s || !dm || !big || !wt || !g || !a || !pen) goto done;
    wk.lp = lpall, wk.pr = lpall + n * (size_t)m;
    wk2.lp = lpall + 2 * n * (size_t)m, wk2.pr = lpall + 3 * n * (size_t)m;
    /* wnew holds all m rows (the reference row stays zero: the logits'
     * product reads it) */
    double *step = g + kk, *v = g + 2 * kk, *wnew = g + 3 * kk, *af = a + (size_t)kk * kk;
    row_sums(pb, wk.s);
    for (int j = 0; j < kk; j++) pen[j] = (j % q) != 0;
    double f;
    if (pb->lp0 && pb->p0 && pb->k == m) {
        /* the E-step's max-shifted logits, row sums and P at W (ml_eval's
         * sum over rows without its product and exponentials) */
        f = 0;
        mix_logsum ls = {1.0, 0, 0};
        memcpy(wk.pr, pb->p0, n * (size_t)m * sizeof *wk.pr);
        for (size_t i = 0; i < n; i++) {
            const double *l0 = pb->lp0 + i * (size_t)m, *r = pb->r + i * pb->ldr;
            double rs = 0, fr = 0;
            for (int j = 0; j < m; j++)
                if (r[j] > 0) rs += r[j], fr += r[j] * l0[j];
            f += fr;
            if (rs == 1.0) mix_logsum_add(&ls, pb->s0[i]);
            else f -= rs * log(pb->s0[i]);
        }
        f -= mix_logsum_value(&ls) + ml_penalty(pb, w);
    } else if (pb->lp0 && pb->k == m) {
        /* log P at W given (the E-step's gate): P = exp(log P) */
        f = 0;
        for (size_t i = 0; i < n; i++) {
            const double *l0 = pb->lp0 + i * (size_t)m, *r = pb->r + i * pb->ldr;
            double *l = wk.lp + i * (size_t)m, *p = wk.pr + i * (size_t)m;
            for (int j = 0; j < m; j++) {
                l[j] = l0[j], p[j] = mix_exp(l0[j]);
                if (r[j] > 0) f += r[j] * l[j];
            }
        }
        f -= ml_penalty(pb, w);
    } else {
        f = ml_eval(pb, w, &wk);
    }
    ml_grad(pb, w, &wk, dm, g);
    int stale = 1, age = 0;
    for (int it = 0; it < max_newton; it++) {
        if (stale) {
            ml_hess(pb, &wk, a, big, wt);
            memcpy(af, a, (size_t)kk * kk * sizeof *a);
            if (pb->lam <= 0 && mix_spd_factor(kk, af) != 0) break;
            stale = 0, age = 0;
        }
        double wmax = 0, smax = 0, dec = 0;
        for (int j = 0; j < kk; j++)
            if (fabs(w[j]) > wmax) wmax = fabs(w[j]);
        if (pb->lam > 0) {
            memcpy(v, w, (size_t)kk * sizeof *v);
            if (mix_cd_l1(kk, a, g, w, pb->lam * (double)n, pen, v) != 0) goto done;
            for (int j = 0; j < kk; j++) step[j] = v[j] - w[j];
        } else {
            memcpy(step, g, (size_t)kk * sizeof *step);
            if (mix_spd_solve_factored(kk, af, step) != 0) break;
            for (int j = 0; j < kk; j++) dec += g[j] * step[j];
            if (dec <= fmax(2e-13 * fmax(1.0, fabs(f)), pb->dec_tol)) break;
        }
        for (int j = 0; j < kk; j++)
            if (fabs(step[j]) > smax) smax = fabs(step[j]);
        if (smax <= 1e-12 * (1.0 + wmax)) break;
        double t = 1.0, fnew = -INFINITY;
        int accepted = 0;
        /* a Newton step that gains nothing even at t = 2^-12 is lost in
         * the rounding of F: the optimum is reached */
        for (int h = 0; h < 13; h++, t *= 0.5) {
            for (int j = 0; j < kk; j++) wnew[j] = w[j] + t * step[j];
            fnew = ml_eval(pb, wnew, &wk2);
            if (fnew >= f) {
                accepted = 1;
                break;
            }
        }
        if (!accepted) {
            if (age > 0) {
                stale = 1; /* retry with a fresh Hessian */
                continue;
            }
            break;
        }
        ml_work sw = wk;
        wk = wk2, wk2 = sw;
        memcpy(w, wnew, (size_t)kk * sizeof *w);
        double gain = fnew - f;
        f = fnew;
        ml_grad(pb, w, &wk, dm, g);
        if (t < 1 || ++age >= 3) stale = 1;
        if (pb->lam > 0 && (t * smax <= 1e-11 * (1.0 + wmax) || gain <= 1e-15 * fabs(f))) break;
    }
    *fout = f;
    rc = 0;
done:
    free(lpall), free(wk.s), free(dm), free(big), free(wt), free(g), free(a), free(pen);
    return rc;
}

/* ---- Laplace gate ----------------------------------------------------- */

/* buffers of one Laplace evaluation, each [n x m] */
typedef struct lap_work {
    double *lp, *pr, *dist;
} lap_work;

static double lap_eval(const mix_laplace *pb, const double *w, lap_work *wk) {
    size_t n = pb->n;
    int m = pb->m, p = pb->p;
    double f = 0, r2 = 0;
    for (size_t i = 0; i < n; i++) {
        const double *xi = pb->xc + i * pb->ldx;
        double *l = wk->lp + i * (size_t)m, *dist = wk->dist + i * (size_t)m;
        for (int k = 0; k < m; k++) {
            double s = 0;
            for (int j = 0; j < p; j++) {
                double dd = xi[j] - w[(size_t)k * p + j];
                s += dd * dd;
            }
            dist[k] = sqrt(s);
            l[k] = -dist[k];
        }
        topk_logsoftmax(l, wk->pr + i * (size_t)m, m, m);
        const double *r = pb->r + i * pb->ldr;
        for (int k = 0; k < m; k++)
            if (r[k] > 0) f += r[k] * l[k];
    }
    for (int j = 0; j < m * p; j++) r2 += w[j] * w[j];
    return f - 0.5 * pb->ridge * (double)n * r2;
}

/* dF/dw_k = sum_i (r_ik - s_i P_ik) (x_i - w_k) / ||x_i - w_k|| - ridge n w_k
 * (the subgradient 0 where x_i == w_k) */
static void lap_grad(const mix_laplace *pb, const double *w, const lap_work *wk, double *g) {
    size_t n = pb->n;
    int m = pb->m, p = pb->p;
    double rn = pb->ridge * (double)n;
    for (int j = 0; j < m * p; j++) g[j] = -rn * w[j];
    for (size_t i = 0; i < n; i++) {
        const double *xi = pb->xc + i * pb->ldx;
        const double *r = pb->r + i * pb->ldr;
        double s = 0;
        for (int k = 0; k < m; k++) s += r[k];
        for (int k = 0; k < m; k++) {
            double dik = wk->dist[i * (size_t)m + k];
            if (!(dik > 0)) continue;
            double c = (r[k] - s * wk->pr[i * (size_t)m + k]) / dik;
            for (int j = 0; j < p; j++) g[(size_t)k * p + j] += c * (xi[j] - w[(size_t)k * p + j]);
        }
    }
}

static int lap_alloc(lap_work *wk, size_t n, int m) {
    wk->lp = malloc(3 * (n ? n : 1) * (size_t)m * sizeof *wk->lp);
    if (!wk->lp) return 0;
    wk->pr = wk->lp + n * (size_t)m;
    wk->dist = wk->pr + n * (size_t)m;
    return 1;
}

int mix_laplace_value(const mix_laplace *pb, const double *w, double *f, double *grad,
                      double *gnorm) {
    size_t n = pb->n;
    int m = pb->m, p = pb->p;
    lap_work wk;
    double *g = grad ? grad : malloc((size_t)(m * p + 1) * sizeof *g);
    if (!lap_alloc(&wk, n, m) || !g) {
        free(wk.lp);
        if (!grad) free(g);
        return -1;
    }
    *f = lap_eval(pb, w, &wk);
    lap_grad(pb, w, &wk, g);
    if (gnorm) {
        double mx = 0;
        for (int j = 0; j < m * p; j++)
            if (fabs(g[j]) > mx) mx = fabs(g[j]);
        *gnorm = mx / (double)(n ? n : 1);
    }
    free(wk.lp);
    if (!grad) free(g);
    return 0;
}

/*
 * Gradient ascent with Barzilai-Borwein step lengths and an Armijo
 * backtracking test (F(w + a g) >= F(w) + 1e-4 a |g|^2, halving a up to 60
 * times): every accepted step increases F, so the generalized EM stays
 * monotone although F is not differentiable where a center meets a data
 * point. Stops after max_steps, when the gradient's max-norm falls below
 * 1e-10 n, or when a step gains less than 1e-15 |F|.
 */
int mix_laplace_fit(const mix_laplace *pb, double *w, int max_steps, double *fout) {
    size_t n = pb->n;
    int m = pb->m, p = pb->p, kk = m * p;
    if (kk == 0 || m < 2) {
        *fout = 0;
        return 0;
    }
    lap_work wk, wk2;
    double *g = malloc((size_t)kk * 3 * sizeof *g);
    int ok1 = lap_alloc(&wk, n, m), ok2 = lap_alloc(&wk2, n, m);
    if (!ok1 || !ok2 || !g) {
        if (ok1) free(wk.lp);
        if (ok2) free(wk2.lp);
        free(g);
        return -1;
    }
    double *gnew = g + kk, *wnew = g + 2 * kk;
    double f = lap_eval(pb, w, &wk);
    lap_grad(pb, w, &wk, g);
    double gmax = 0;
    for (int j = 0; j < kk; j++)
        if (fabs(g[j]) > gmax) gmax = fabs(g[j]);
    /* first step: a move of about 0.1 (in units of x) along the gradient */
    double alpha = gmax > 0 ? 0.1 / gmax : 0;
    for (int it = 0; it < max_steps && gmax > 1e-10 * (double)n; it++) {
        double g2 = 0;
        for (int j = 0; j < kk; j++) g2 += g[j] * g[j];
        double fnew = -INFINITY;
        int accepted = 0;
        for (int h = 0; h < 60; h++, alpha *= 0.5) {
            for (int j = 0; j < kk; j++) wnew[j] = w[j] + alpha * g[j];
            fnew = lap_eval(pb, wnew, &wk2);
            if (fnew >= f + 1e-4 * alpha * g2) {
                accepted = 1;
                break;
            }
        }
        if (!accepted) break;
        lap_grad(pb, wnew, &wk2, gnew);
        /* Barzilai-Borwein: alpha = s's / (-s'dg) for an ascent */
        double ss = 0, sy = 0;
        for (int j = 0; j < kk; j++) {
            double sj = wnew[j] - w[j];
            ss += sj * sj;
            sy -= sj * (gnew[j] - g[j]);
        }
        lap_work sw = wk;
        wk = wk2, wk2 = sw;
        memcpy(w, wnew, (size_t)kk * sizeof *w);
        memcpy(g, gnew, (size_t)kk * sizeof *g);
        double gain = fnew - f;
        f = fnew;
        alpha = sy > 0 ? ss / sy : alpha * 4;
        gmax = 0;
        for (int j = 0; j < kk; j++)
            if (fabs(g[j]) > gmax) gmax = fabs(g[j]);
        if (gain <= 1e-15 * fabs(f)) break;
    }
    *fout = f;
    free(wk.lp), free(wk2.lp), free(g);
    return 0;
}

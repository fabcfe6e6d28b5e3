/*
 * mix_linalg.c - the dense linear algebra of the EM fit: Cholesky solves
 * (LAPACK dposv from OpenBLAS, prototype declared here), weighted Gram
 * matrices (BLAS dgemm) and the coordinate-descent solver of l1-penalized
 * quadratics used by the Lasso M-steps. No statistics here.
 */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "models/mix_internal.h"

/* LAPACK's Fortran symbol (OpenBLAS exports it); column-major, but every
 * matrix solved here is symmetric, so row-major storage is the same. */
extern void dposv_(const char *uplo, const int *n, const int *nrhs, double *a,
                   const int *lda, double *b, const int *ldb, int *info);

extern void dpotrf_(const char *uplo, const int *n, double *a, const int *lda, int *info);
extern void dpotrs_(const char *uplo, const int *n, const int *nrhs, const double *a,
                    const int *lda, double *b, const int *ldb, int *info);

int mix_spd_factor(int k, double *a) {
    int info = 0;
    if (k <= 0) return 0;
    dpotrf_("L", &k, a, &k, &info);
    return info == 0 ? 0 : -1;
}

int mix_spd_solve_factored(int k, const double *a, double *b) {
    int nrhs = 1, info = 0;
    if (k <= 0) return 0;
    dpotrs_("L", &k, &nrhs, a, &k, b, &k, &info);
    if (info != 0) return -1;
    for (int i = 0; i < k; i++)
        if (!isfinite(b[i])) return -1;
    return 0;
}

int mix_spd_solve(int k, double *a, double *b) {
    if (k <= 0) return 0;
    int nrhs = 1, info = 0;
    dposv_("L", &k, &nrhs, a, &k, b, &k, &info);
    if (info != 0) return -1;
    for (int i = 0; i < k; i++)
        if (!isfinite(b[i])) return -1;
    return 0;
}

/* Products with a small inner shape: OpenBLAS's call and packing costs
 * more than the arithmetic when the output has a handful of columns (the
 * gates and experts of small problems), so those run as plain loops. */
#define MIX_SMALL_GEMM 32

/* The plain loops below, with the inner length Q a constant for the
 * common small cases, and for the products also the outer length M for
 * 2 and 3 outputs (gcc then unrolls those loops; the arithmetic and
 * its order are the same for every Q: results do not depend on the case
 * taken). b (and the small products' inputs) are read through local
 * restrict pointers: c is never an alias of a or b. */
#define GEMM_NT_LOOP(M, Q)                                                       \
    do {                                                                         \
        const double *restrict a_ = a, *restrict b_ = b;                         \
        double *restrict c_ = c;                                                 \
        for (size_t i = 0; i < n; i++) {                                         \
            const double *ai = a_ + i * lda;                                     \
            double *ci = c_ + i * ldc;                                           \
            for (int k = 0; k < (M); k++) {                                      \
                const double *bk = b_ + (size_t)k * ldb;                         \
                double s = 0;                                                    \
                for (int j = 0; j < (Q); j++) s += ai[j] * bk[j];                \
                ci[k] = alpha * s;                                               \
            }                                                                    \
        }                                                                        \
    } while (0)

#define GEMM_TN_LOOP(Q)                                                          \
    do {                                                                         \
        const double *restrict a_ = a, *restrict b_ = b;                         \
        double *restrict c_ = c;                                                 \
        for (size_t i = 0; i < n; i++) {                                         \
            const double *ai = a_ + i * lda, *bi = b_ + i * ldb;                 \
            for (int k = 0; k < m; k++) {                                        \
                double v = ai[k];                                                \
                double *ck = c_ + (size_t)k * (Q);                               \
                for (int j = 0; j < (Q); j++) ck[j] += v * bi[j];                \
            }                                                                    \
        }                                                                        \
    } while (0)

#define GRAM_LOOP(K)                                                             \
    do {                                                                         \
        const double *restrict a_ = a, *restrict w_ = w;                         \
        double *restrict c_ = c;                                                 \
        for (size_t i = 0; i < n; i++) {                                         \
            double wi = w_ ? w_[i] : 1.0;                                        \
            const double *ai = a_ + i * lda;                                     \
            for (int r = 0; r < (K); r++) {                                      \
                double v = wi * ai[r];                                           \
                for (int j = 0; j <= r; j++) c_[(size_t)r * (K) + j] += v * ai[j]; \
            }                                                                    \
        }                                                                        \
    } while (0)

void mix_gemm_nt(size_t n, int m, int q, double alpha, const double *a, size_t lda,
                 const double *b, size_t ldb, double *c, size_t ldc) {
    if (n == 0) return;
    if ((size_t)m * (size_t)q > MIX_SMALL_GEMM) {
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, m, q, alpha, a, (int)lda, b,
                    (int)ldb, 0.0, c, (int)ldc);
        return;
    }
#define GEMM_NT_CASES(M)                                                         \
    switch (q) {                                                                 \
    case 1: GEMM_NT_LOOP(M, 1); return;                                          \
    case 2: GEMM_NT_LOOP(M, 2); return;                                          \
    case 3: GEMM_NT_LOOP(M, 3); return;                                          \
    case 4: GEMM_NT_LOOP(M, 4); return;                                          \
    default: GEMM_NT_LOOP(M, q); return;                                         \
    }
    if (m == 2) GEMM_NT_CASES(2)
    if (m == 3) GEMM_NT_CASES(3)
    GEMM_NT_CASES(m)
#undef GEMM_NT_CASES
}

void mix_gemm_tn(size_t n, int m, int q, const double *a, size_t lda, const double *b,
                 size_t ldb, double *c) {
    if ((size_t)m * (size_t)q > MIX_SMALL_GEMM && n > 0) {
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, m, q, (int)n, 1.0, a, (int)lda, b,
                    (int)ldb, 0.0, c, q);
        return;
    }
    memset(c, 0, (size_t)m * (size_t)q * sizeof *c);
    switch (q) {
    case 1: GEMM_TN_LOOP(1); return;
    case 2: GEMM_TN_LOOP(2); return;
    case 3: GEMM_TN_LOOP(3); return;
    case 4: GEMM_TN_LOOP(4); return;
    default: GEMM_TN_LOOP(q); return;
    }
}

void mix_weighted_gram(size_t n, int k, const double *a, size_t lda, const double *w,
                       double *c, double *scratch) {
    if (n == 0) {
        memset(c, 0, (size_t)k * (size_t)k * sizeof *c);
        return;
    }
    if ((size_t)k * (size_t)k <= MIX_SMALL_GEMM) {
        memset(c, 0, (size_t)k * (size_t)k * sizeof *c);
        switch (k) {
        case 1: GRAM_LOOP(1); break;
        case 2: GRAM_LOOP(2); break;
        case 3: GRAM_LOOP(3); break;
        case 4: GRAM_LOOP(4); break;
        default: GRAM_LOOP(k); break;
        }
        for (int r = 0; r < k; r++)
            for (int j = 0; j < r; j++) c[(size_t)j * k + r] = c[(size_t)r * k + j];
        return;
    }
    for (size_t i = 0; i < n; i++) {
        double wi = w ? w[i] : 1.0;
        const double *ai = a + i * lda;
        double *si = scratch + i * (size_t)k;
        for (int j = 0; j < k; j++) si[j] = wi * ai[j];
    }
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, k, k, (int)n, 1.0, a, (int)lda,
                scratch, k, 0.0, c, k);
    /* exact symmetry (dgemm's two triangles may round differently) */
    for (int i = 0; i < k; i++)
        for (int j = 0; j < i; j++) c[(size_t)j * k + i] = c[(size_t)i * k + j];
}

static double soft(double v, double t) {
    return v > t ? v - t : (v < -t ? v + t : 0.0);
}

/* Cyclic coordinate descent on an l1-penalized strictly convex quadratic:
 * each step minimizes exactly along one coordinate, so the objective never
 * increases; it stops when a sweep moves no coordinate by more than
 * 1e-13 relative (or after 20000 sweeps). ad holds A (v - v0), kept up to
 * date in O(k) per coordinate move. */
int mix_cd_l1(int k, const double *a, const double *g, const double *v0, double pen,
              const unsigned char *penalized, double *v) {
    double *ad = malloc((size_t)(k > 0 ? k : 1) * sizeof *ad);
    if (!ad) return -1;
    for (int j = 0; j < k; j++) {
        double s = 0;
        for (int l = 0; l < k; l++) s += a[(size_t)j * k + l] * (v[l] - v0[l]);
        ad[j] = s;
    }
    for (int sweep = 0; sweep < 20000; sweep++) {
        double maxd = 0, maxv = 0;
        for (int j = 0; j < k; j++) {
            double ajj = a[(size_t)j * k + j];
            if (!(ajj > 0)) continue;
            double grad = ad[j] - g[j];
            double old = v[j], nv;
            if (penalized[j]) nv = soft(ajj * old - grad, pen) / ajj;
            else nv = old - grad / ajj;
            double dlt = nv - old;
            if (dlt != 0) {
                v[j] = nv;
                for (int l = 0; l < k; l++) ad[l] += a[(size_t)l * k + j] * dlt;
            }
            if (fabs(dlt) > maxd) maxd = fabs(dlt);
            if (fabs(nv) > maxv) maxv = fabs(nv);
        }
        if (maxd <= 1e-14 * (1.0 + maxv)) break;
    }
    free(ad);
    return 0;
}

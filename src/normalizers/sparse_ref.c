/*
 * sparse_ref.c - reference kernels of the sparse normalizers (the spec the
 * SIMD kernels in sparse_avx2.c / sparse_avx512.c are tested against).
 */
#include <math.h>
#include <stdint.h>

#include "normalizers/sparse_kernels.h"

/* The row max, and whether any entry is NaN or +inf (such rows take the
 * exact special-value path, so the max of the others is all that matters). */
float sg_sparse_max_f32__ref(size_t n, const float *x, int *bad) {
    float m = -INFINITY;
    for (size_t i = 0; i < n; i++) {
        if (isnan(x[i]) || x[i] == INFINITY) *bad = 1;
        else if (x[i] > m) m = x[i];
    }
    return m;
}

/* The candidates of a row: entries above a threshold below which nothing
 * can be in the support (the op derives thr from the max). */
size_t sg_sparse_select_f32__ref(size_t n, const float *x, float thr, uint32_t *idx, float *val,
                                 size_t cap) {
    size_t c = 0;
    for (size_t i = 0; i < n; i++) {
        if (!(x[i] > thr)) continue;
        if (c == cap) return cap + 1;
        val[c] = x[i];
        idx[c++] = (uint32_t)i;
    }
    return c;
}

/* The pass of the 1.5-entmax threshold (and of any threshold needing the
 * support's first two moments): u = scale * d in double. */
void sg_sparse_sums_f32__ref(size_t n, const float *d, double scale, double t, sg_sparse_sums *out) {
    sg_sparse_sums a = {0, 0.0, 0.0, INFINITY, -INFINITY};
    for (size_t i = 0; i < n; i++) {
        const double u = scale * (double)d[i];
        if (u > t) {
            a.k++, a.s1 += u, a.s2 += u * u;
            if (u < a.min_in) a.min_in = u;
        } else if (u > a.max_out) {
            a.max_out = u;
        }
    }
    *out = a;
}

/* tau15 (sparse_kernels.h): Newton from -1 with the reference sums. */
double sg_sparse_tau15_f32__ref(size_t m, const float *d) {
    double t = -1.0;
    for (int it = 0; it < 40; it++) {
        sg_sparse_sums a;
        sg_sparse_sums_f32__ref(m, d, 0.5, t, &a);
        double ts, next;
        if (sg_entmax15_step(&a, t, &ts, &next)) return ts;
        if (!(next > t)) return 0.0;
        t = next;
    }
    return 0.0;
}

/* shift (sparse_kernels.h). */
void sg_sparse_shift_f32__ref(size_t m, float *v, double xb) {
    for (size_t j = 0; j < m; j++) v[j] = (float)((double)v[j] - xb);
}

/* out15 (sparse_kernels.h); w + |w| is +0 or 2w exactly (no branch). */
void sg_sparse_out15_f32__ref(size_t n, float *y, size_t m, const float *d, const uint32_t *idx,
                              double tau) {
    for (size_t i = 0; i < n; i++) y[i] = 0.0f;
    for (size_t q = 0; q < m; q++) {
        const double w0 = 0.5 * (double)d[q] - tau, w = 0.5 * (w0 + fabs(w0));
        y[idx[q]] = (float)(w * w);
    }
}

/* row15 (sparse_kernels.h): the reference kernels in sequence (for
 * m <= SG_SPARSE_SUMS_INLINE the op's inline sums are the reference sums'
 * loop, so tau15's reference is the op's solver at every m). */
/* The candidates of a fused row kernel's row with the reference kernels:
 * x > the filter threshold of the radius, their d = x - max in v (idx
 * their positions); SIZE_MAX for a row the kernels decline (n out of
 * range, NaN or +inf, nothing above -inf). */
static size_t row_candidates(size_t n, const float *x, double radius, float *v, uint32_t *idx) {
    if (n == 0 || n > SG_SPARSE_ROW15_MAX) return SIZE_MAX;
    int bad = 0;
    const float mx = sg_sparse_max_f32__ref(n, x, &bad);
    if (bad || mx == -INFINITY) return SIZE_MAX;
    const size_t m = sg_sparse_select_f32__ref(n, x, sg_sparse_filter_threshold(mx, radius, 1.0), idx, v, n);
    sg_sparse_shift_f32__ref(m, v, (double)mx);
    return m;
}

static int row15(size_t n, const float *x, float *y) {
    float v[SG_SPARSE_ROW15_MAX + 16];
    uint32_t idx[SG_SPARSE_ROW15_MAX + 16];
    const size_t m = row_candidates(n, x, 2.0, v, idx);
    if (m == SIZE_MAX) return 0;
    const double tau = sg_sparse_tau15_f32__ref(m, v);
    if (tau == 0.0) return 0;
    sg_sparse_out15_f32__ref(n, y, m, v, idx, tau);
    return 1;
}

void sg_sparse_row15_f32__ref(size_t rows, size_t n, const float *x, size_t ldx, float *y, size_t ldy,
                              uint8_t *taken) {
    for (size_t r = 0; r < rows; r++) taken[r] = (uint8_t)row15(n, x + r * ldx, y + r * ldy);
}

/* The short-row path (sparse_kernels.h), in double: f_j for every j, the
 * support {f_j < 1}, tau from its sums, the exact check, then y. */
int sg_sparse_short_row_f32__ref(size_t n, const float *x, int entmax, float *y) {
    double u[SG_SPARSE_MID_MAX]; /* the reference serves mid_rows too */
    unsigned char in[SG_SPARSE_MID_MAX];
    float m = -INFINITY;
    for (size_t i = 0; i < n; i++) {
        if (!(fabsf(x[i]) < INFINITY)) return 0;
        if (x[i] > m) m = x[i];
    }
    const double h = entmax ? 0.5 : 1.0;
    for (size_t i = 0; i < n; i++) {
        float d = x[i] - m; /* correctly rounded: as the general path */
        if (!(d > -4.0f)) d = -4.0f; /* never in a support (d > -2 is needed) */
        u[i] = h * (double)d;
    }
    double s1 = 0.0, s2 = 0.0;
    size_t k = 0;
    for (size_t j = 0; j < n; j++) {
        double f = 0.0;
        for (size_t i = 0; i < n; i++) {
            const double w = u[i] > u[j] ? u[i] - u[j] : 0.0;
            f += entmax ? w * w : w;
        }
        in[j] = f < 1.0;
        if (in[j]) k++, s1 += u[j], s2 += u[j] * u[j];
    }
    double tau;
    if (entmax) {
        const double mean = s1 / (double)k, ss = s2 - s1 * mean;
        const double delta = (1.0 - (ss > 0.0 ? ss : 0.0)) / (double)k;
        if (!(delta >= 0.0)) return 0;
        tau = mean - sqrt(delta);
    } else {
        tau = (s1 - 1.0) / (double)k;
    }
    for (size_t j = 0; j < n; j++)
        if (in[j] ? !(u[j] > tau) : !(u[j] <= tau)) return 0;
    for (size_t j = 0; j < n; j++) {
        const double w = u[j] > tau ? u[j] - tau : 0.0;
        y[j] = (float)(entmax ? w * w : w);
    }
    return 1;
}

/* short_row over rows. */
void sg_sparse_short_rows_f32__ref(size_t rows, size_t n, const float *x, size_t ldx, float *y,
                                   size_t ldy, int entmax, uint8_t *taken) {
    for (size_t r = 0; r < rows; r++)
        taken[r] = (uint8_t)sg_sparse_short_row_f32__ref(n, x + r * ldx, entmax, y + r * ldy);
}

/* mid_rows (SG_SPARSE_SHORT_MAX < n <= SG_SPARSE_MID_MAX): the same. */
void sg_sparse_mid_rows_f32__ref(size_t rows, size_t n, const float *x, size_t ldx, float *y,
                                 size_t ldy, int entmax, uint8_t *taken) {
    sg_sparse_short_rows_f32__ref(rows, n, x, ldx, y, ldy, entmax, taken);
}

/* rowsm (sparse_kernels.h): the sparsemax op's candidate path with the
 * reference kernels (gather with radius 1, Michelot's iteration from -1
 * with sg_sparse_sums_run's sums, sg_relu's outputs). */
static int rowsm(size_t n, const float *x, float *y) {
    float v[SG_SPARSE_ROW15_MAX + 16];
    uint32_t idx[SG_SPARSE_ROW15_MAX + 16];
    const size_t m = row_candidates(n, x, 1.0, v, idx);
    if (m == SIZE_MAX) return 0;
    sg_sparse_sums a;
    sg_sparse_sums_f32__ref(m, v, 1.0, -1.0, &a); /* the inline loop of the op for m <= 4: the same */
    size_t k = a.k;
    double tau = (a.s1 - 1.0) / (double)k;
    int it = 0;
    for (; it < 32; it++) { /* sparsemax.c's MICHELOT_MAX_ITER */
        sg_sparse_sums_f32__ref(m, v, 1.0, tau, &a);
        if (a.k == k) break;
        k = a.k, tau = (a.s1 - 1.0) / (double)k;
    }
    if (it == 32) return 0;
    for (size_t i = 0; i < n; i++) y[i] = 0.0f;
    for (size_t q = 0; q < m; q++) {
        const double w = (double)v[q] - tau;
        y[idx[q]] = (float)(0.5 * (w + fabs(w)));
    }
    return 1;
}

void sg_sparse_rowsm_f32__ref(size_t rows, size_t n, const float *x, size_t ldx, float *y, size_t ldy,
                              uint8_t *taken) {
    for (size_t r = 0; r < rows; r++) taken[r] = (uint8_t)rowsm(n, x + r * ldx, y + r * ldy);
}

/*
 * sparse_ref.c - reference kernels of the sparse normalizers (the spec the
 * SIMD kernels in sparse_avx2.c / sparse_avx512.c are tested against).
 */
#include <math.h>

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

/*
 * sparse_internal_entmax.h - the entmax thresholds, exposed so that
 * tests/test_sparse.c can check each solver path directly. Internal.
 */
#ifndef SG_SPARSE_INTERNAL_ENTMAX_H
#define SG_SPARSE_INTERNAL_ENTMAX_H

#include <stddef.h>

/*
 * The 1.5-entmax threshold of u = d / 2 for a row d with max exactly 0
 * (-inf for removed entries) by one method: 0 the paper's sort (scratch:
 * n doubles), 1 the sort-free bisection, 2 Newton with the exact closed
 * form (returns 0.0 if it gave up; the ops then fall back to 0 or 1), 3
 * what the ops use on candidates (the tau15 kernel where a SIMD one is
 * installed and 4 < n <= SG_SPARSE_TAU15_MAX, else 2; 0.0 if it gave up).
 */
double sg_entmax15_tau_f32(const float *d, size_t n, double *scratch, int method);

/* The alpha-entmax threshold of u = (alpha - 1) d (bracketed Newton). */
double sg_entmax_tau_f32(const float *d, size_t n, double alpha);

#endif

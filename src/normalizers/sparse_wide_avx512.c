/*
 * sparse_wide_avx512.c - mid_rows for SG_SPARSE_MID_OPS < n <=
 * SG_SPARSE_MID_MAX (sparse_kernels.h): the lanes kernel of
 * sparse_avx512.c with groups of SG_SPARSE_MID_MAX entries (its own
 * translation unit so that the groups of n <= 64 keep their size).
 */
#include <immintrin.h>
#include <math.h>

#include "normalizers/sparse_kernels.h"

#define SHORT_GRP_CAP SG_SPARSE_MID_MAX
#include "normalizers/sparse_avx512_short.inc"

void sg_sparse_wide_rows_f32__avx512(size_t rows, size_t n, const float *x, size_t ldx, float *y,
                                     size_t ldy, int entmax, uint8_t *taken);

static void wide_sm(size_t rows, size_t n, const float *x, size_t ldx, float *y, size_t ldy,
                    uint8_t *taken) {
    short_blocks(0, 1, 0, rows, n, x, ldx, y, ldy, taken);
}

static void wide_em(size_t rows, size_t n, const float *x, size_t ldx, float *y, size_t ldy,
                    uint8_t *taken) {
    short_blocks(0, 1, 1, rows, n, x, ldx, y, ldy, taken);
}

void sg_sparse_wide_rows_f32__avx512(size_t rows, size_t n, const float *x, size_t ldx, float *y,
                                     size_t ldy, int entmax, uint8_t *taken) {
    (entmax ? wide_em : wide_sm)(rows, n, x, ldx, y, ldy, taken);
}

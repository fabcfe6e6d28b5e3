/*
 * test_random.c - the counter-based generator: Random123's published
 * known-answer vectors for Philox4x32-10, the open-interval uniforms, their
 * moments, and independence from the thread count and the call split.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"

TEST(random_philox_known_answers) {
    static const uint32_t kat[3][10] = {
        /* counter[4], key[2], expected[4] */
        {0, 0, 0, 0, 0, 0, 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8},
        {0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0x408f276d,
         0x41c83b0e, 0xa20bc7c6, 0x6d5451fd},
        {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0, 0xd16cfe09,
         0x94fdcceb, 0x5001e420, 0x24126ea1},
    };
    for (int t = 0; t < 3; t++) {
        uint32_t out[4];
        sg_philox4x32_10(kat[t], kat[t] + 4, out);
        for (int i = 0; i < 4; i++)
            CHECK(out[i] == kat[t][6 + i], "vector %d word %d: %08x, want %08x", t, i, out[i], kat[t][6 + i]);
    }
}

TEST(random_uniform_open_interval_and_moments) {
    sg_context *ctx = test_context(2);
    size_t rows = 1000, n = 1003; /* n not a multiple of 4: partial blocks */
    float *u = malloc(rows * n * sizeof *u);
    CHECK(sg_random_uniform_f32(ctx, 42, 7, rows, n, u, n) == SG_OK, "status");
    double sum = 0.0, sq = 0.0;
    float lo = 1.0f, hi = 0.0f;
    for (size_t i = 0; i < rows * n; i++) {
        sum += u[i], sq += (double)u[i] * u[i];
        lo = u[i] < lo ? u[i] : lo;
        hi = u[i] > hi ? u[i] : hi;
    }
    double mean = sum / (double)(rows * n), var = sq / (double)(rows * n) - mean * mean;
    CHECK(lo > 0.0f && hi < 1.0f, "range [%g, %g] must be inside (0, 1)", (double)lo, (double)hi);
    CHECK(fabs(mean - 0.5) < 2e-3 && fabs(var - 1.0 / 12.0) < 2e-3, "mean %g var %g", mean, var);
    /* Bit-identical for another thread count, and row by row. */
    sg_context *one = test_context(1);
    float *v = malloc(rows * n * sizeof *v);
    sg_random_uniform_f32(one, 42, 7, rows, n, v, n);
    CHECK(memcmp(u, v, rows * n * sizeof *u) == 0, "1 vs 2 threads differ");
    /* Row r alone: the same numbers need the same (seed, offset, row):
     * drawing rows 0..9 with a stride leaves the gaps untouched. */
    float w[10 * 1010];
    for (size_t i = 0; i < 10 * 1010; i++) w[i] = -1.0f;
    sg_random_uniform_f32(one, 42, 7, 10, n, w, 1010);
    for (size_t r = 0; r < 10; r++) {
        CHECK(memcmp(w + r * 1010, u + r * n, n * sizeof *w) == 0, "row %zu differs", r);
        CHECK(w[r * 1010 + n] == -1.0f, "gap after row %zu written", r);
    }
    /* The draw whose top 24 bits are all ones (seed 1, row 349317, column 3)
     * must still be below 1: an earlier 24-bit mapping rounded it to 1. */
    size_t big = 349318;
    float *b = malloc(big * 4 * sizeof *b);
    sg_random_uniform_f32(ctx, 1, 0, big, 4, b, 4);
    float bmax = 0.0f, bmin = 1.0f;
    for (size_t i = 0; i < big * 4; i++) {
        bmax = b[i] > bmax ? b[i] : bmax;
        bmin = b[i] < bmin ? b[i] : bmin;
    }
    CHECK(bmax < 1.0f && bmin > 0.0f && b[349317 * 4 + 3] < 1.0f, "extremes %.9g %.9g", (double)bmin,
          (double)bmax);
    free(b);
    /* Another offset (or seed) gives other numbers. */
    sg_random_uniform_f32(one, 42, 8, 1, n, v, n);
    size_t same = 0;
    for (size_t i = 0; i < n; i++) same += v[i] == u[i];
    CHECK(same < 5, "offset 8 repeats %zu values of offset 7", same);
    CHECK(sg_random_uniform_f32(one, 1, 0, 2, 4, v, 3) == SG_ERR_SHAPE, "ldu < n rejected");
    CHECK(sg_random_uniform_f32(one, 1, 0, 2, 4, NULL, 4) == SG_ERR_ARGUMENT, "NULL u rejected");
    free(u), free(v);
    sg_context_destroy(ctx), sg_context_destroy(one);
}

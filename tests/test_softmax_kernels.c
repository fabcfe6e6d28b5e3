/*
 * test_softmax_kernels.c - every softmax kernel compiled into this build
 * and runnable on this CPU, checked against the reference kernels (and a
 * double formula) at lengths around every tile: 1, tile-1, tile, tile+1,
 * 2*tile, 3*tile+1 and long; in place and at unaligned addresses. This runs
 * whatever SOFTGATE_ISA says, so each SIMD path is tested in every run.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/dispatch.h"
#include "test.h"

static const size_t lengths[] = {1,  2,  3,  7,  8,  9,  15,  16,  17,  31,  32,   33,   63,   64,
                                 65, 96, 127, 128, 129, 193, 255, 256, 257, 1023, 1024, 1025, 3001, 9000};
#define N_LENGTHS (sizeof lengths / sizeof lengths[0])
#define MAXLEN 9000

/* The kernel of a slot at a given ISA, or NULL if not in this build. */
static void (*find_kernel(enum sg_slot_id slot, sg_isa isa))(void) {
    size_t count;
    const sg_kernel_entry *e = sg_kernel_entries(&count);
    for (size_t i = 0; i < count; i++)
        if (e[i].slot == slot && e[i].isa == isa) return e[i].fn;
    return NULL;
}

/* Inputs for a kernel check: N(0,1) * 8 shifted so some exps underflow. */
static void fill(float *x, size_t n, uint64_t seed, float scale) {
    test_rng r = test_rng_seed(seed);
    for (size_t i = 0; i < n; i++) x[i] = (float)(test_normal(&r) * scale);
}

/* Buffers with one float of slack in front, for unaligned variants. */
typedef struct bufs {
    float x[MAXLEN + 1], y[MAXLEN + 1], z[MAXLEN + 1], w[MAXLEN + 1];
} bufs;

#define REL_EXP 4e-7 /* exp kernels: 2 ulp plus the product's rounding */

static void check_isa(sg_isa isa, bufs *b) {
    const char *in = sg_isa_name(isa);
#define K(slot) ((sg_##slot##_fn *)find_kernel(SG_SLOT_##slot, isa))
#define R(slot) ((sg_##slot##_fn *)find_kernel(SG_SLOT_##slot, SG_ISA_REF))
    for (size_t li = 0; li < N_LENGTHS; li++) {
        size_t n = lengths[li];
        for (int misalign = 0; misalign < 2; misalign++) {
            float *x = b->x + misalign, *y = b->y + misalign, *z = b->z + misalign, *w = b->w + misalign;
            fill(x, n, n * 7 + (size_t)misalign, 8.0f);
            float mx = R(rmax)(n, x);
            CHECK(K(rmax)(n, x) == mx, "%s rmax n=%zu", in, n);
            const float c = 0.7f;
            double s_ref = R(expsum)(n, x, mx, c);
            CHECK(test_rel(K(expsum)(n, x, mx, c), s_ref) < 1e-6, "%s expsum n=%zu", in, n);
            double s1 = K(expsum_store)(n, x, y, mx, c);
            R(expsum_store)(n, x, z, mx, c);
            CHECK(test_rel(s1, s_ref) < 1e-6, "%s expsum_store sum n=%zu", in, n);
            for (size_t i = 0; i < n; i++)
                CHECK(test_rel(y[i], z[i]) < REL_EXP || (z[i] == 0 && y[i] < 1.2e-38f),
                      "%s expsum_store n=%zu i=%zu: %g vs ref %g", in, n, i, y[i], z[i]);
            /* In place gives the same as out of place. */
            memcpy(w, x, n * sizeof *w);
            K(expsum_store)(n, w, w, mx, c);
            CHECK(memcmp(w, y, n * sizeof *w) == 0, "%s expsum_store in place n=%zu", in, n);

            /* shiftexpsum_store: the shifted values, and the sum of their exps. */
            double s_shift = K(shiftexpsum_store)(n, x, y, mx, c);
            CHECK(test_rel(s_shift, s_ref) < 1e-6, "%s shiftexpsum_store sum n=%zu", in, n);
            for (size_t i = 0; i < n; i++)
                CHECK(y[i] == (x[i] - mx) * c, "%s shiftexpsum_store n=%zu i=%zu: %g", in, n, i, y[i]);

            K(scale)(n, x, y, 0.37f);
            for (size_t i = 0; i < n; i++)
                CHECK(y[i] == x[i] * 0.37f, "%s scale n=%zu i=%zu", in, n, i);

            K(expscale_store)(n, x, y, mx, c, 0.25f);
            R(expscale_store)(n, x, z, mx, c, 0.25f);
            for (size_t i = 0; i < n; i++)
                CHECK(test_rel(y[i], z[i]) < REL_EXP || (z[i] == 0 && y[i] < 1.2e-38f),
                      "%s expscale_store n=%zu i=%zu", in, n, i);

            K(shift_store)(n, x, y, mx, c, 1.5f);
            for (size_t i = 0; i < n; i++)
                CHECK(fabsf(y[i] - ((x[i] - mx) * c - 1.5f)) <= 1e-6f * (1.0f + fabsf(y[i])),
                      "%s shift_store n=%zu i=%zu", in, n, i);

            sg_extsum e, er;
            K(extexp_sum)(n, x, c, &e);
            R(extexp_sum)(n, x, c, &er);
            double ratio = e.m / er.m * pow(2.0, e.e - er.e);
            CHECK(fabs(ratio - 1.0) < 1e-6 && e.max == er.max && e.min == er.min,
                  "%s extexp_sum n=%zu: ratio %.9g", in, n, ratio);
            K(extexp_store)(n, x, y, c, (float)(1.0 / e.m), (float)e.e);
            R(extexp_store)(n, x, z, c, (float)(1.0 / er.m), (float)er.e);
            for (size_t i = 0; i < n; i++)
                CHECK(test_rel(y[i], z[i]) < 1e-6 || (z[i] < 1.2e-38f && y[i] < 1.2e-38f),
                      "%s extexp_store n=%zu i=%zu: %g vs %g", in, n, i, y[i], z[i]);

            fill(w, n, n + 99, 1.0f);
            CHECK(test_rel(K(dot)(n, x, w), R(dot)(n, x, w)) < 1e-5 ||
                      fabs(K(dot)(n, x, w) - R(dot)(n, x, w)) < 1e-4,
                  "%s dot n=%zu", in, n);
            CHECK(fabs(K(sum)(n, x) - R(sum)(n, x)) < 1e-5 * (1 + fabs(R(sum)(n, x))) + 1e-4,
                  "%s sum n=%zu", in, n);

            /* Backward kernels on probability-like y. */
            R(expscale_store)(n, x, z, mx, c, (float)(1.0 / s_ref));
            K(softmax_bwd)(n, z, w, y, 0.3f, c);
            for (size_t i = 0; i < n; i++)
                CHECK(fabsf(y[i] - z[i] * (w[i] - 0.3f) * c) <= 1e-6f * fabsf(z[i] * (w[i] - 0.3f)) + 1e-30f,
                      "%s softmax_bwd n=%zu i=%zu", in, n, i);
            R(shift_store)(n, x, z, mx, c, (float)log(s_ref));
            K(logsoftmax_bwd)(n, z, w, y, 0.8f, c);
            for (size_t i = 0; i < n; i++) {
                double ref = (w[i] - exp((double)z[i]) * 0.8) * c;
                CHECK(fabs(y[i] - ref) <= 1e-6 * (1 + fabs(ref)), "%s logsoftmax_bwd n=%zu i=%zu", in, n, i);
            }
        }
    }
    /* Short-row kernel, softmax and log-softmax: several rows with a
     * stride, against the reference. */
    const size_t short_max = isa == SG_ISA_AVX512 ? 128 : 64;
    for (int log_out = 0; log_out < 3; log_out++) /* softmax, log-softmax, logsumexp */
        for (size_t n = 1; n <= short_max; n++) {
            size_t rows = 5, ld = n + 3;
            fill(b->x, rows * ld, n, 6.0f);
            size_t done = K(softmax_short)(rows, n, b->x, ld, b->y, ld, 1.3f, 1.0f / 1.3f, log_out);
            R(softmax_short)(rows, n, b->x, ld, b->z, ld, 1.3f, 1.0f / 1.3f, log_out);
            CHECK(done == rows, "%s softmax_short n=%zu completed %zu rows", in, n, done);
            for (size_t r = 0; r < rows; r++)
                for (size_t i = 0; i < n; i++) {
                    float got = b->y[r * ld + i], want = b->z[r * ld + i];
                    if (log_out == 2 && i > 0) break; /* logsumexp writes y[r * ld] only */
                    int ok = log_out ? fabsf(got - want) <= 1e-6f * (1.0f + fabsf(want))
                                     : test_rel(got, want) < 1e-6 || want < 1e-37f;
                    CHECK(ok, "%s softmax_short log=%d n=%zu r=%zu i=%zu: %g vs %g", in, log_out, n, r, i,
                          got, want);
                }
            /* A row with +inf stops the kernel before it writes that row. */
            b->x[2 * ld + n / 2] = INFINITY;
            b->y[2 * ld] = -7.0f;
            done = K(softmax_short)(rows, n, b->x, ld, b->y, ld, 1.0f, 1.0f, log_out);
            CHECK(done == 2 && b->y[2 * ld] == -7.0f, "%s softmax_short +inf n=%zu: done %zu", in, n, done);
        }
    /* Short-row backward, both modes, strided, then in place (dx == dy). */
    for (int log_mode = 0; log_mode < 2; log_mode++)
        for (size_t n = 1; n <= short_max; n++) {
            size_t rows = 5, ld = n + 2;
            fill(b->x, rows * ld, n + 5, 1.0f); /* y: treated as (log-)probabilities */
            fill(b->w, rows * ld, n + 6, 1.0f); /* dy */
            K(softmax_bwd_short)(rows, n, b->x, ld, b->w, ld, b->y, ld, 0.8f, log_mode);
            R(softmax_bwd_short)(rows, n, b->x, ld, b->w, ld, b->z, ld, 0.8f, log_mode);
            for (size_t r = 0; r < rows; r++) {
                /* The rounding scale: the row's reduction of magnitudes. */
                const float *yr = b->x + r * ld, *dr = b->w + r * ld;
                double mag = 0.0;
                for (size_t i = 0; i < n; i++) mag += log_mode ? fabs(dr[i]) : fabs(yr[i] * dr[i]);
                for (size_t i = 0; i < n; i++) {
                    float got = b->y[r * ld + i], want = b->z[r * ld + i];
                    double scale = log_mode ? fabs(dr[i]) + exp(yr[i]) * mag : fabs(yr[i]) * (fabs(dr[i]) + mag);
                    CHECK(fabs(got - want) <= 1e-6 * scale + 1e-30,
                          "%s softmax_bwd_short log=%d n=%zu r=%zu i=%zu: %g vs %g", in, log_mode, n, r,
                          i, got, want);
                }
            }
            K(softmax_bwd_short)(rows, n, b->x, ld, b->w, ld, b->w, ld, 0.8f, log_mode);
            for (size_t r = 0; r < rows; r++)
                CHECK(memcmp(b->w + r * ld, b->y + r * ld, n * sizeof(float)) == 0,
                      "%s softmax_bwd_short in place n=%zu row %zu", in, n, r);
        }
#undef K
#undef R
}

TEST(kernels_match_reference_on_every_isa) {
    bufs *b = calloc(1, sizeof *b);
    for (int isa = SG_ISA_AVX2; isa <= SG_ISA_AVX512; isa++)
        if (sg_cpu_supports((sg_isa)isa) && find_kernel(SG_SLOT_rmax, (sg_isa)isa))
            check_isa((sg_isa)isa, b);
    /* The reference itself against libm in double. */
    fill(b->x, 1000, 5, 10.0f);
    float mx = ((sg_rmax_fn *)find_kernel(SG_SLOT_rmax, SG_ISA_REF))(1000, b->x);
    double s = ((sg_expsum_store_fn *)find_kernel(SG_SLOT_expsum_store, SG_ISA_REF))(1000, b->x, b->y, mx, 1.0f);
    double s_d = 0.0;
    for (size_t i = 0; i < 1000; i++) s_d += exp((double)b->x[i] - mx);
    CHECK(test_rel(s, s_d) < 1e-6, "ref expsum %g vs %g", s, s_d);
    free(b);
}

TEST(kernels_exp_edge_inputs) {
    /* exp of very negative, -inf and NaN arguments through every ISA. */
    float x[64], y[64];
    for (int isa = SG_ISA_REF; isa <= SG_ISA_AVX512; isa++) {
        if (!sg_cpu_supports((sg_isa)isa) || !find_kernel(SG_SLOT_expscale_store, (sg_isa)isa)) continue;
        sg_expscale_store_fn *f = (sg_expscale_store_fn *)find_kernel(SG_SLOT_expscale_store, (sg_isa)isa);
        for (int i = 0; i < 64; i++) x[i] = -200.0f + 3.2f * (float)i;
        x[5] = -INFINITY;
        x[6] = NAN;
        x[7] = -87.0f;
        f(64, x, y, 0.0f, 1.0f, 1.0f);
        CHECK(y[5] == 0.0f, "%s exp(-inf) = %g", sg_isa_name((sg_isa)isa), y[5]);
        CHECK(isnan(y[6]), "%s exp(NaN) = %g", sg_isa_name((sg_isa)isa), y[6]);
        CHECK(test_rel(y[7], exp(-87.0)) < 4e-7, "%s exp(-87) = %g", sg_isa_name((sg_isa)isa), y[7]);
        for (int i = 0; i < 64; i++)
            if (i != 5 && i != 6) {
                double ref = exp((double)x[i]);
                CHECK(ref < 0x1p-126 ? y[i] < 0x1p-125f : test_rel(y[i], ref) < 4e-7,
                      "%s exp(%g) = %g, want %g", sg_isa_name((sg_isa)isa), x[i], y[i], ref);
            }
    }
}

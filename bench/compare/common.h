/*
 * common.h - shared pieces of the competitor softmax benchmarks
 * (bench_onednn.c, bench_xnnpack.c): the shape list, argument parsing,
 * input generation, the output sanity check, the timing loop and the JSON
 * line format. bench_torch.py mirrors the same shapes and timing policy.
 *
 * Header-only on purpose: each benchmark is a single translation unit and
 * these helpers are only ever used by the two programs.
 */
#ifndef SG_COMPARE_COMMON_H
#define SG_COMPARE_COMMON_H

#define _POSIX_C_SOURCE 200809L

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Largest row count * row length of any shape: 64 MiB of f32 input. */
#define BENCH_MAX_ELEMS ((size_t)16777216)
/* "in" cache mode: about 256 KiB of input (65536 floats). */
#define BENCH_IN_ELEMS ((size_t)65536)

typedef struct bench_shape {
    size_t n;          /* row length */
    size_t rows;       /* number of rows */
    const char *cache; /* "in" or "out" */
} bench_shape;

typedef struct bench_args {
    int threads;
    int log;     /* 0: softmax, 1: log_softmax */
    int quick;
    int verbose; /* print implementation details on stderr */
} bench_args;

/*
 * The shape list. Full: n in {8, ..., 16777216}; cache "in" only for
 * n <= 65536 (rows = 65536 / n), cache "out" for all (rows = 16M / n).
 * Quick: n in {32, 1000, 32000, 1048576}. Returns the number of shapes.
 */
static inline size_t bench_shapes(int quick, bench_shape out[32])
{
    static const size_t full_n[] = {8, 32, 128, 1000, 4096, 32000, 128000,
                                    1048576, 16777216};
    static const size_t quick_n[] = {32, 1000, 32000, 1048576};
    const size_t *ns = quick ? quick_n : full_n;
    size_t count = quick ? sizeof quick_n / sizeof quick_n[0]
                         : sizeof full_n / sizeof full_n[0];
    size_t k = 0;
    for (size_t i = 0; i < count; i++) {
        if (ns[i] <= BENCH_IN_ELEMS)
            out[k++] = (bench_shape){ns[i], BENCH_IN_ELEMS / ns[i], "in"};
    }
    for (size_t i = 0; i < count; i++) {
        size_t rows = BENCH_MAX_ELEMS / ns[i];
        out[k++] = (bench_shape){ns[i], rows ? rows : 1, "out"};
    }
    return k;
}

static inline void bench_usage(const char *prog)
{
    fprintf(stderr,
            "usage: %s --threads T --op softmax|log_softmax [--quick] "
            "[--verbose]\n",
            prog);
}

/* Returns 0 on success; on error prints a message and returns -1. */
static inline int bench_parse_args(int argc, char **argv, bench_args *a)
{
    a->threads = 0;
    a->log = -1;
    a->quick = 0;
    a->verbose = 0;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--threads") == 0 && i + 1 < argc) {
            char *end;
            long t = strtol(argv[++i], &end, 10);
            if (*end != '\0' || t < 1 || t > 1024) {
                fprintf(stderr, "%s: --threads wants an integer in 1..1024, "
                        "got '%s'\n", argv[0], argv[i]);
                return -1;
            }
            a->threads = (int)t;
        } else if (strcmp(arg, "--op") == 0 && i + 1 < argc) {
            const char *op = argv[++i];
            if (strcmp(op, "softmax") == 0) {
                a->log = 0;
            } else if (strcmp(op, "log_softmax") == 0) {
                a->log = 1;
            } else {
                fprintf(stderr, "%s: --op wants softmax or log_softmax, "
                        "got '%s'\n", argv[0], op);
                return -1;
            }
        } else if (strcmp(arg, "--quick") == 0) {
            a->quick = 1;
        } else if (strcmp(arg, "--verbose") == 0) {
            a->verbose = 1;
        } else if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            bench_usage(argv[0]);
            exit(0);
        } else {
            fprintf(stderr, "%s: unknown or incomplete argument '%s'\n",
                    argv[0], arg);
            bench_usage(argv[0]);
            return -1;
        }
    }
    if (a->threads == 0 || a->log < 0) {
        fprintf(stderr, "%s: --threads and --op are required\n", argv[0]);
        bench_usage(argv[0]);
        return -1;
    }
    return 0;
}

static inline const char *bench_op_name(const bench_args *a)
{
    return a->log ? "log_softmax" : "softmax";
}

/*
 * 64-byte aligned buffer of `count` floats plus `extra` bytes of slack
 * (XNNPACK may read up to XNN_EXTRA_BYTES past the end of its input).
 */
static inline float *bench_alloc(size_t count, size_t extra)
{
    size_t bytes = count * sizeof(float) + extra;
    bytes = (bytes + 63) / 64 * 64; /* aligned_alloc wants a multiple */
    float *p = aligned_alloc(64, bytes);
    if (p != NULL)
        memset(p, 0, bytes); /* touch every page before timing */
    return p;
}

/* splitmix64: small, seedable, good enough for benchmark inputs. */
static inline uint64_t bench_rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Uniform in (0, 1]: never 0, so log() below is finite. */
static inline double bench_rng_uniform(uint64_t *s)
{
    return ((double)(bench_rng_next(s) >> 11) + 1.0) * 0x1.0p-53;
}

/* x[i] = 10 * N(0,1), Box-Muller. */
static inline void bench_fill_normal(float *x, size_t count, uint64_t seed)
{
    const double two_pi = 6.283185307179586;
    uint64_t s = seed;
    for (size_t i = 0; i < count; i += 2) {
        double r = sqrt(-2.0 * log(bench_rng_uniform(&s)));
        double t = two_pi * bench_rng_uniform(&s);
        x[i] = (float)(10.0 * r * cos(t));
        if (i + 1 < count)
            x[i + 1] = (float)(10.0 * r * sin(t));
    }
}

/*
 * Sanity check of one output row: softmax values lie in [0, 1] and sum to 1;
 * log_softmax values are <= 0 and their exponentials sum to 1. Returns 0 if
 * the row is plausible, otherwise prints why and returns -1.
 */
static inline int bench_check_row(const char *impl, int log_op,
                                  const float *y, size_t n, size_t row)
{
    double sum = 0.0;
    for (size_t j = 0; j < n; j++) {
        double v = y[j];
        if (log_op) {
            if (!(v <= 1e-4)) {
                fprintf(stderr, "%s: log_softmax row %zu (n=%zu): y[%zu] = %g "
                        "is not <= 0\n", impl, row, n, j, v);
                return -1;
            }
            sum += exp(v);
        } else {
            if (!(v >= 0.0 && v <= 1.0 + 1e-6)) {
                fprintf(stderr, "%s: softmax row %zu (n=%zu): y[%zu] = %g is "
                        "not in [0, 1]\n", impl, row, n, j, v);
                return -1;
            }
            sum += v;
        }
    }
    if (!(fabs(sum - 1.0) <= 1e-3)) {
        fprintf(stderr, "%s: %s row %zu (n=%zu): %s sums to %.9g, not 1\n",
                impl, log_op ? "log_softmax" : "softmax", row, n,
                log_op ? "exp(row)" : "row", sum);
        return -1;
    }
    return 0;
}

/* Checks the first and the last row of a [rows x n] output. */
static inline int bench_check(const char *impl, int log_op, const float *y,
                              size_t rows, size_t n)
{
    if (bench_check_row(impl, log_op, y, n, 0) != 0)
        return -1;
    if (rows > 1 && bench_check_row(impl, log_op, y + (rows - 1) * n, n,
                                    rows - 1) != 0)
        return -1;
    return 0;
}

static inline double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/*
 * Timing policy shared by all competitors (bench_torch.py mirrors it):
 * the caller makes one call and checks its output (warm-up 1); here one
 * more warm-up call, then one timed call to estimate the cost, then enough
 * individually timed calls to fill ~0.25 s (at least 10 calls in cache,
 * at least 5 for the 64 MiB shapes, at most 20000); returns the median
 * seconds per call, or a negative value if a call failed.
 */
#define BENCH_TARGET_S 0.25
#define BENCH_MAX_ITERS 20000

typedef int (*bench_fn)(void *ctx); /* one call; returns 0 on success */

static inline double bench_time(bench_fn fn, void *ctx, int out_of_cache)
{
    static double samples[BENCH_MAX_ITERS];
    if (fn(ctx) != 0)
        return -1.0;
    double t0 = bench_now();
    if (fn(ctx) != 0)
        return -1.0;
    double est = bench_now() - t0;
    if (est <= 0.0)
        est = 1e-9;
    long iters = (long)(BENCH_TARGET_S / est);
    long min_iters = out_of_cache ? 5 : 10;
    if (iters < min_iters)
        iters = min_iters;
    if (iters > BENCH_MAX_ITERS)
        iters = BENCH_MAX_ITERS;
    for (long i = 0; i < iters; i++) {
        t0 = bench_now();
        if (fn(ctx) != 0)
            return -1.0;
        samples[i] = bench_now() - t0;
    }
    qsort(samples, (size_t)iters, sizeof samples[0], bench_cmp_double);
    return iters % 2 ? samples[iters / 2]
                     : 0.5 * (samples[iters / 2 - 1] + samples[iters / 2]);
}

static inline void bench_print(const char *impl, const bench_args *a,
                               const bench_shape *s, double seconds)
{
    double gbps = (double)s->rows * (double)s->n * 8.0 / seconds * 1e-9;
    printf("{\"impl\": \"%s\", \"op\": \"%s\", \"n\": %zu, \"rows\": %zu, "
           "\"threads\": %d, \"cache\": \"%s\", \"gbps\": %.4f}\n",
           impl, bench_op_name(a), s->n, s->rows, a->threads, s->cache, gbps);
    fflush(stdout); /* the driver reads lines as they come */
}

#endif /* SG_COMPARE_COMMON_H */

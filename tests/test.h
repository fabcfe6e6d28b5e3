/*
 * test.h - the test runner's interface: TEST(name) defines and registers a
 * test; CHECK(cond, fmt, ...) records a failure with a message and goes on.
 * The runner (test_main.c) supports --list, --filter SUBSTR and --quick, and
 * ends with the line "N passed, N failed".
 */
#ifndef SG_TEST_H
#define SG_TEST_H

#include <stddef.h>
#include <stdint.h>

#include "softgate.h"

typedef void (*test_fn)(void);
void test_register(const char *name, test_fn fn);
void test_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Nonzero under --quick (emulators, sanitizers): tests shrink their sizes. */
extern int test_quick;

#define TEST(name)                                                                   \
    static void name(void);                                                          \
    __attribute__((constructor)) static void register_##name(void) {                 \
        test_register(#name, name);                                                  \
    }                                                                                \
    static void name(void)

#define CHECK(cond, ...)                                                             \
    do {                                                                             \
        if (!(cond)) test_fail(__FILE__, __LINE__, __VA_ARGS__);                     \
    } while (0)

/* A context with the given thread count; aborts the test run on failure. */
sg_context *test_context(int threads);

/* Deterministic pseudo-random numbers for test inputs. */
typedef struct test_rng { uint64_t s; } test_rng;
test_rng test_rng_seed(uint64_t seed);
double test_uniform(test_rng *r);  /* [0, 1) */
double test_normal(test_rng *r);   /* N(0, 1) */

/* Relative difference |a - b| / |b| (0 when both are 0). */
double test_rel(double a, double b);

/* Zeroed memory (at least 1 byte); exits the test run when out of memory. */
void *test_alloc(size_t bytes);

/* count floats scale * N(0, 1) from test_rng_seed(seed), in test_alloc memory. */
float *test_random_f32(size_t count, double scale, uint64_t seed);

/* The default softmax options with temperature t. */
sg_softmax_options test_temperature(float t);

#endif

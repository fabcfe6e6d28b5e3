/*
 * test_main.c - the plain C test runner: registry, options, summary line.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"

#define MAX_TESTS 512

static struct { const char *name; test_fn fn; } registry[MAX_TESTS];
static int n_tests, current_failed;
int test_quick;

void test_register(const char *name, test_fn fn) {
    if (n_tests == MAX_TESTS) {
        fprintf(stderr, "too many tests (raise MAX_TESTS)\n");
        exit(2);
    }
    registry[n_tests].name = name;
    registry[n_tests++].fn = fn;
}

void test_fail(const char *file, int line, const char *fmt, ...) {
    /* Print the first few failures of a test in full, then only count. */
    if (current_failed++ < 10) {
        va_list ap;
        va_start(ap, fmt);
        fprintf(stderr, "  FAIL %s:%d: ", file, line);
        vfprintf(stderr, fmt, ap);
        fprintf(stderr, "\n");
        va_end(ap);
    }
}

sg_context *test_context(int threads) {
    sg_context *ctx = NULL;
    if (sg_context_create(&ctx, threads) != SG_OK) {
        fprintf(stderr, "cannot create a context of %d threads\n", threads);
        exit(2);
    }
    return ctx;
}

test_rng test_rng_seed(uint64_t seed) {
    test_rng r = {seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull};
    return r;
}

double test_uniform(test_rng *r) {
    r->s ^= r->s >> 12, r->s ^= r->s << 25, r->s ^= r->s >> 27;
    return (double)((r->s * 0x2545F4914F6CDD1Dull) >> 11) * 0x1.0p-53;
}

double test_normal(test_rng *r) {
    double u = test_uniform(r), v = test_uniform(r);
    return sqrt(-2.0 * log(u + 1e-300)) * cos(6.283185307179586 * v);
}

double test_rel(double a, double b) {
    if (a == b) return 0.0;
    return fabs(a - b) / fabs(b);
}

void *test_alloc(size_t bytes) {
    void *p = calloc(1, bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "softgate_tests: out of memory (%zu bytes)\n", bytes);
        exit(2);
    }
    return p;
}

float *test_random_f32(size_t count, double scale, uint64_t seed) {
    float *x = test_alloc(count * sizeof *x);
    test_rng rng = test_rng_seed(seed);
    for (size_t i = 0; i < count; i++) x[i] = (float)(scale * test_normal(&rng));
    return x;
}

sg_softmax_options test_temperature(float t) {
    sg_softmax_options o = sg_softmax_options_default();
    o.temperature = t;
    return o;
}

static int cmp_tests(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int main(int argc, char **argv) {
    const char *filter = NULL;
    int list = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--list") == 0) list = 1;
        else if (strcmp(argv[i], "--quick") == 0) test_quick = 1;
        else if (strcmp(argv[i], "--filter") == 0 && i + 1 < argc) filter = argv[++i];
        else {
            fprintf(stderr, "usage: softgate_tests [--list] [--quick] [--filter SUBSTR]\n");
            return 2;
        }
    }
    /* Registration order follows link order; sort for a stable listing. */
    qsort(registry, (size_t)n_tests, sizeof registry[0], cmp_tests);
    int passed = 0, failed = 0;
    for (int i = 0; i < n_tests; i++) {
        if (filter && !strstr(registry[i].name, filter)) continue;
        if (list) {
            printf("%s\n", registry[i].name);
            continue;
        }
        current_failed = 0;
        registry[i].fn();
        if (current_failed) {
            printf("FAIL %s (%d checks failed)\n", registry[i].name, current_failed);
            failed++;
        } else {
            printf("ok   %s\n", registry[i].name);
            passed++;
        }
        fflush(stdout);
    }
    if (!list) printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}

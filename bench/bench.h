/*
 * bench.h - the benchmark runner's shared pieces: clocks, medians, the
 * streaming memory probe, table/JSON output. Benchmarks use only the
 * public API (include/softgate.h).
 */
#ifndef SG_BENCH_H
#define SG_BENCH_H

#include <stddef.h>

#include "softgate.h"

double sg_bench_now(void); /* seconds, monotonic */
double sg_bench_median(double *v, size_t n); /* sorts v */

/*
 * The streaming probe over the same buffers as the op: one read pass over
 * x (a sum) and one pass reading x and writing y, the memory traffic of a
 * two-pass softmax, split over the context's threads like the op.
 * Returns the elapsed seconds.
 */
double sg_bench_probe(sg_context *ctx, const float *x, float *y, size_t count);

/* The probe's read pass alone: the sum of x[0..n) at streaming speed (for
 * read-only bounds such as the MoE layer's weight-streaming floor). */
float sg_bench_read_sum(const float *x, size_t n);

/* Parses "1,2,4" into out[] (at most max values); returns the count or 0. */
size_t sg_bench_parse_list(const char *s, long *out, size_t max);

/* Fills x with N(0,1) * scale from a fixed seed. */
void sg_bench_fill_normal(float *x, size_t count, float scale, unsigned seed);

void *sg_bench_alloc(size_t bytes); /* 64-byte aligned, touched; exits on failure */

/*
 * Benchmarks register themselves: SG_BENCH(softmax, "softmax-core ...")
 * defines `static int bench_softmax(int argc, char **argv)` and makes it
 * `softgate bench softmax`. argv[0] is the first option after the name;
 * the function returns the process exit status (0, or 2 for bad usage).
 */
typedef int (*sg_bench_fn)(int argc, char **argv);
void sg_bench_register(const char *name, const char *summary, sg_bench_fn fn);
size_t sg_bench_count(void);
const char *sg_bench_name(size_t i);
const char *sg_bench_summary(size_t i);
sg_bench_fn sg_bench_find(const char *name); /* NULL when unknown */

#define SG_BENCH(name, summary)                                                      \
    static int bench_##name(int argc, char **argv);                                  \
    __attribute__((constructor)) static void register_bench_##name(void) {           \
        sg_bench_register(#name, summary, bench_##name);                             \
    }                                                                                \
    static int bench_##name(int argc, char **argv)

#endif

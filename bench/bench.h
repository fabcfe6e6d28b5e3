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

/* Parses "1,2,4" into out[] (at most max values); returns the count or 0. */
size_t sg_bench_parse_list(const char *s, long *out, size_t max);

/* Fills x with N(0,1) * scale from a fixed seed. */
void sg_bench_fill_normal(float *x, size_t count, float scale, unsigned seed);

void *sg_bench_alloc(size_t bytes); /* 64-byte aligned, touched; exits on failure */

int sg_bench_softmax_main(int argc, char **argv);

#endif

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


/*
 * Command-line options, one table per benchmark. Each entry names an option,
 * its kind and where its value goes; the variables hold their defaults before
 * the call, which --help prints. Options are applied in command-line order
 * (so `--quick --reps 9` and `--reps 9 --quick` differ, as actions run when
 * seen). Bounds lo..hi (inclusive) apply to every number of INT, LONG, SIZE,
 * DOUBLE and LIST options unless both are 0.
 */
typedef enum sg_bench_opt_kind {
    SG_OPT_FLAG,   /* int: set to 1 (no value) */
    SG_OPT_CLEAR,  /* int: set to 0 (no value), for --no-... options */
    SG_OPT_ACTION, /* no value: action(ptr) runs, e.g. --quick's presets */
    SG_OPT_INT,    /* int */
    SG_OPT_LONG,   /* long */
    SG_OPT_SIZE,   /* size_t */
    SG_OPT_DOUBLE, /* double */
    SG_OPT_STRING, /* const char *: the argument itself */
    SG_OPT_LIST,   /* long[max] of comma-separated integers, count in *count */
    SG_OPT_CHOICE, /* int: the index of the value in names[] */
    SG_OPT_SET,    /* int[n_names]: comma-separated names, 1 for each named, 0 else */
    SG_OPT_PICK    /* int[max]: comma-separated names' indices in order, count in *count */
} sg_bench_opt_kind;

typedef struct sg_bench_opt {
    const char *name; /* "--reps" */
    sg_bench_opt_kind kind;
    void *ptr;
    const char *help; /* one line; --help appends the default */
    size_t *count, max;             /* LIST, PICK */
    const char *const *names;       /* CHOICE, SET, PICK */
    size_t n_names;
    double lo, hi;                  /* bounds of numbers, unchecked when both 0 */
    void (*action)(void *ptr);      /* ACTION */
    const char *arg;                /* the value's name in --help (default by kind) */
} sg_bench_opt;

/* An entry: SG_BENCH_OPT("--reps", SG_OPT_INT, &reps, "repetitions", .lo = 1, .hi = 64). */
#define SG_BENCH_OPT(name_, kind_, ptr_, help_, ...) \
    { .name = (name_), .kind = (kind_), .ptr = (ptr_), .help = (help_), __VA_ARGS__ }

/* What sg_bench_options returns when the benchmark should run; otherwise
 * it returns the exit status for the benchmark to return (0 after --help,
 * 2 after bad usage, with the reason on stderr). */
#define SG_BENCH_RUN (-1)

/* Upper bounds for sizes and counts, and for thread counts, in option
 * tables: finite, so that products of sizes cannot wrap size_t. */
#define SG_BENCH_MAX_COUNT 1073741824.0
#define SG_BENCH_MAX_THREADS 1024.0

/* Parses argv[0..argc) against opts[0..n_opts) for `softgate bench <bench>`.
 * --help (anywhere) prints the benchmark's summary and the options with their
 * defaults on stdout. Errors name the option and the bad value. Never exits. */
int sg_bench_options(const char *bench, const sg_bench_opt *opts, size_t n_opts, int argc, char **argv);

/* For checks after parsing (values that depend on each other): prints
 * "softgate bench <bench>: <message>" and a pointer to --help; returns 2. */
int sg_bench_bad_usage(const char *bench, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

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

/*
 * bench_util.c - clocks, medians, random inputs and the streaming probe
 * that every softmax figure is divided by.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench.h"

double sg_bench_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double sg_bench_median(double *v, size_t n) {
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

size_t sg_bench_parse_list(const char *s, long *out, size_t max) {
    size_t k = 0;
    while (*s && k < max) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s) return 0;
        out[k++] = v;
        if (*end == ',') end++;
        else if (*end) return 0;
        s = end;
    }
    return k;
}

void sg_bench_fill_normal(float *x, size_t count, float scale, unsigned seed) {
    uint64_t st = 0x9E3779B97F4A7C15ull ^ seed;
    for (size_t i = 0; i < count; i += 2) {
        /* xorshift64* then Box-Muller: cheap, reproducible, good enough. */
        double u[2];
        for (int k = 0; k < 2; k++) {
            st ^= st >> 12, st ^= st << 25, st ^= st >> 27;
            u[k] = ((st * 0x2545F4914F6CDD1Dull) >> 11) * 0x1.0p-53;
        }
        double r = sqrt(-2.0 * log(u[0] + 1e-300)), t = 6.283185307179586 * u[1];
        x[i] = (float)(r * cos(t)) * scale;
        if (i + 1 < count) x[i + 1] = (float)(r * sin(t)) * scale;
    }
}

void *sg_bench_alloc(size_t bytes) {
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes ? bytes : 64) != 0) {
        fprintf(stderr, "softgate bench: cannot allocate %zu bytes\n", bytes);
        exit(1);
    }
    memset(p, 0, bytes);
    return p;
}

/* The probe's kernels: wide vectors through GCC's vector extension, with a
 * clone per x86 ISA so it streams at the machine's speed, not SSE2's. */
typedef float v16f __attribute__((vector_size(64), aligned(4)));

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define PROBE_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define PROBE_CLONES
#endif

PROBE_CLONES static float probe_sum(const float *x, size_t n) {
    v16f a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        v16f b0, b1, b2, b3;
        memcpy(&b0, x + i, 64);
        memcpy(&b1, x + i + 16, 64);
        memcpy(&b2, x + i + 32, 64);
        memcpy(&b3, x + i + 48, 64);
        a0 += b0, a1 += b1, a2 += b2, a3 += b3;
    }
    float s = 0.0f;
    for (; i < n; i++) s += x[i];
    v16f t = a0 + a1 + a2 + a3;
    for (int k = 0; k < 16; k++) s += t[k];
    return s;
}

float sg_bench_read_sum(const float *x, size_t n) { return probe_sum(x, n); }

PROBE_CLONES static void probe_scale(const float *x, float *y, size_t n, float k) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        v16f b;
        memcpy(&b, x + i, 64);
        b *= k;
        memcpy(y + i, &b, 64);
    }
    for (; i < n; i++) y[i] = x[i] * k;
}

typedef struct probe_job {
    const float *x;
    float *y;
    size_t count, per;
    float part[64];
} probe_job;

static void probe_task(void *arg, size_t t) {
    probe_job *p = arg;
    size_t i0 = t * p->per, len = p->count - i0 < p->per ? p->count - i0 : p->per;
    /* The scale factor depends on the sum so neither pass is dead code. */
    float s = probe_sum(p->x + i0, len);
    probe_scale(p->x + i0, p->y + i0, len, 1.0f / (1.0f + fabsf(s) * 1e-30f));
    p->part[t] = s;
}

double sg_bench_probe(sg_context *ctx, const float *x, float *y, size_t count) {
    probe_job p = {x, y, count, 0, {0}};
    size_t tasks = (size_t)sg_context_threads(ctx);
    tasks = tasks > 64 ? 64 : tasks;
    p.per = (count + tasks - 1) / tasks;
    p.per = (p.per + 15) / 16 * 16;
    tasks = (count + p.per - 1) / p.per;
    double t0 = sg_bench_now();
    sg_context_run(ctx, tasks, probe_task, &p);
    return sg_bench_now() - t0;
}

/* The benchmark registry (SG_BENCH); filled by constructors before main. */
enum { MAX_BENCHES = 64 };
static struct {
    const char *name, *summary;
    sg_bench_fn fn;
} benches[MAX_BENCHES];
static size_t bench_total;

void sg_bench_register(const char *name, const char *summary, sg_bench_fn fn) {
    if (bench_total == MAX_BENCHES) {
        fprintf(stderr, "softgate: too many benchmarks (raise MAX_BENCHES)\n");
        abort();
    }
    benches[bench_total].name = name;
    benches[bench_total].summary = summary;
    benches[bench_total].fn = fn;
    bench_total++;
}

size_t sg_bench_count(void) { return bench_total; }
const char *sg_bench_name(size_t i) { return i < bench_total ? benches[i].name : NULL; }
const char *sg_bench_summary(size_t i) { return i < bench_total ? benches[i].summary : NULL; }

sg_bench_fn sg_bench_find(const char *name) {
    for (size_t i = 0; i < bench_total; i++)
        if (strcmp(benches[i].name, name) == 0) return benches[i].fn;
    return NULL;
}

/*
 * bench_util.c - clocks, medians, random inputs and the streaming probe
 * that every softmax figure is divided by.
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
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

/* ---- command-line options (sg_bench_options) ------------------------------ */

enum { HELP_INDENT = 26, HELP_WIDTH = 79 };

typedef struct help_out {
    int col, indent;
} help_out;

/* Prints the space-separated words of text, wrapping at HELP_WIDTH. */
static void help_words(help_out *h, const char *text) {
    while (*text) {
        size_t n = strcspn(text, " ");
        if (n && h->col > h->indent && h->col + 1 + (int)n > HELP_WIDTH) {
            printf("\n%*s", h->indent, "");
            h->col = h->indent;
        } else if (n && h->col > h->indent) {
            putchar(' ');
            h->col++;
        }
        h->col += printf("%.*s", (int)n, text);
        text += n;
        while (*text == ' ') text++;
    }
}

/* buf += the names of ptr's values (SET: those set; PICK: in order). */
static void opt_names_of(const sg_bench_opt *o, char *buf, size_t size) {
    const int *v = o->ptr;
    size_t n = o->kind == SG_OPT_SET ? o->n_names : *o->count, len = strlen(buf);
    int all = 1;
    for (size_t i = 0; i < n && len < size; i++) {
        if (o->kind == SG_OPT_SET && !v[i]) {
            all = 0;
            continue;
        }
        const char *name = o->kind == SG_OPT_SET ? o->names[i] : o->names[v[i]];
        len += (size_t)snprintf(buf + len, size - len, "%s%s", len ? "," : "", name);
    }
    if (o->kind == SG_OPT_SET && all) snprintf(buf, size, "all");
}

/* The current value (the default, before parsing) as text; "" for none. */
static void opt_default(const sg_bench_opt *o, char *buf, size_t size) {
    buf[0] = '\0';
    switch (o->kind) {
    case SG_OPT_INT: snprintf(buf, size, "%d", *(const int *)o->ptr); break;
    case SG_OPT_LONG: snprintf(buf, size, "%ld", *(const long *)o->ptr); break;
    case SG_OPT_SIZE: snprintf(buf, size, "%zu", *(const size_t *)o->ptr); break;
    case SG_OPT_DOUBLE: snprintf(buf, size, "%g", *(const double *)o->ptr); break;
    case SG_OPT_STRING:
        if (*(const char *const *)o->ptr) snprintf(buf, size, "%s", *(const char *const *)o->ptr);
        break;
    case SG_OPT_LIST:
        for (size_t i = 0, len = 0; i < *o->count && len < size; i++)
            len += (size_t)snprintf(buf + len, size - len, "%s%ld", i ? "," : "", ((const long *)o->ptr)[i]);
        break;
    case SG_OPT_CHOICE: snprintf(buf, size, "%s", o->names[*(const int *)o->ptr]); break;
    case SG_OPT_SET:
    case SG_OPT_PICK: opt_names_of(o, buf, size); break;
    case SG_OPT_FLAG:
    case SG_OPT_CLEAR:
    case SG_OPT_ACTION: break;
    }
}

/* The value's name: the entry's, "a|b|c" for a short CHOICE, else by kind. */
static const char *opt_arg_name(const sg_bench_opt *o, char *buf, size_t size) {
    static const char *const by_kind[] = {
        [SG_OPT_FLAG] = "",     [SG_OPT_CLEAR] = "",        [SG_OPT_ACTION] = "",      [SG_OPT_INT] = "N",
        [SG_OPT_LONG] = "N",    [SG_OPT_SIZE] = "N",        [SG_OPT_DOUBLE] = "X",     [SG_OPT_STRING] = "S",
        [SG_OPT_LIST] = "N,...", [SG_OPT_CHOICE] = "NAME",  [SG_OPT_SET] = "NAME,...", [SG_OPT_PICK] = "NAME,..."};
    if (o->arg) return o->arg;
    if (o->kind != SG_OPT_CHOICE) return by_kind[o->kind];
    buf[0] = '\0';
    for (size_t i = 0, len = 0; i < o->n_names && len < size; i++)
        len += (size_t)snprintf(buf + len, size - len, "%s%s", i ? "|" : "", o->names[i]);
    return strlen(buf) <= 24 ? buf : by_kind[o->kind];
}

static void print_help(const char *bench, const sg_bench_opt *opts, size_t n_opts) {
    help_out h = {2, 2};
    printf("usage: softgate bench %s [options]\n  ", bench);
    for (size_t i = 0; i < sg_bench_count(); i++)
        if (strcmp(sg_bench_name(i), bench) == 0) help_words(&h, sg_bench_summary(i));
    printf("\noptions:\n");
    h.indent = HELP_INDENT;
    for (size_t i = 0; i <= n_opts; i++) {
        static const sg_bench_opt help = {"--help", SG_OPT_FLAG, NULL, "this text", .arg = ""};
        const sg_bench_opt *o = i < n_opts ? &opts[i] : &help;
        char arg[128], def[512];
        const char *a = opt_arg_name(o, arg, sizeof arg);
        h.col = printf("  %s%s%s", o->name, *a ? " " : "", a);
        if (h.col < HELP_INDENT) h.col += printf("%*s", HELP_INDENT - h.col, "");
        else {
            printf("\n%*s", HELP_INDENT, "");
            h.col = HELP_INDENT;
        }
        help_words(&h, o->help);
        if (o->kind == SG_OPT_SET || o->kind == SG_OPT_PICK ||
            (o->kind == SG_OPT_CHOICE && a != arg)) {
            h.col += printf(";");
            help_words(&h, o->kind == SG_OPT_CHOICE ? "one of:" : "from:");
            for (size_t k = 0; k < o->n_names; k++) help_words(&h, o->names[k]);
        }
        if (o->ptr) opt_default(o, def, sizeof def);
        if (o->ptr && def[0]) {
            help_words(&h, "(default:");
            help_words(&h, def);
            h.col += printf(")");
        }
        printf("\n");
    }
}

int sg_bench_bad_usage(const char *bench, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "softgate bench %s: ", bench);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n  (softgate bench %s --help lists the options)\n", bench);
    va_end(ap);
    return 2;
}

/* Checks v against the entry's bounds; 0 (with a message) when outside. */
static int opt_in_bounds(const char *bench, const sg_bench_opt *o, double v) {
    if ((o->lo == 0 && o->hi == 0) || (v >= o->lo && v <= o->hi)) return 1;
    if (o->hi == HUGE_VAL) sg_bench_bad_usage(bench, "%s must be >= %.15g (got %.15g)", o->name, o->lo, v);
    else sg_bench_bad_usage(bench, "%s must be in %.15g..%.15g (got %.15g)", o->name, o->lo, o->hi, v);
    return 0;
}

/* The integer s[0..len) (part of the value v) into *out, within
 * [lo_type, hi_type] and the entry's bounds; 0 (with a message) when not. */
static int opt_integer(const char *bench, const sg_bench_opt *o, const char *v, const char *s, size_t len,
                       long long lo_type, long long hi_type, long long *out) {
    char tok[64], *end = tok;
    long long x = 0;
    if (len > 0 && len < sizeof tok) {
        memcpy(tok, s, len), tok[len] = '\0';
        errno = 0;
        x = strtoll(tok, &end, 10);
    }
    if (len == 0 || len >= sizeof tok || end == tok || *end || errno || x < lo_type || x > hi_type)
        return !sg_bench_bad_usage(bench, "bad value '%s' for %s: expects %s", v, o->name,
                                   o->kind == SG_OPT_LIST ? "integers separated by commas"
                                   : lo_type == 0         ? "an integer >= 0"
                                                          : "an integer");
    *out = x;
    return opt_in_bounds(bench, o, (double)x);
}

/* The index of the name s[0..len) in o->names; -1 (with a message naming
 * the choices) when it is none of them. v is the whole value. */
static int opt_name_index(const char *bench, const sg_bench_opt *o, const char *v, const char *s, size_t len) {
    char all[512];
    for (size_t k = 0, n = 0; k < o->n_names; k++) {
        if (strlen(o->names[k]) == len && strncmp(o->names[k], s, len) == 0) return (int)k;
        if (n < sizeof all) n += (size_t)snprintf(all + n, sizeof all - n, "%s%s", k ? ", " : "", o->names[k]);
    }
    if (o->kind == SG_OPT_CHOICE) sg_bench_bad_usage(bench, "bad value '%s' for %s: expects one of %s", v, o->name, all);
    else sg_bench_bad_usage(bench, "bad value '%s' for %s: '%.*s' is not one of %s", v, o->name, (int)len, s, all);
    return -1;
}

/* LIST, SET, PICK: the comma-separated items of v. 0 with a message when bad. */
static int opt_items(const char *bench, const sg_bench_opt *o, const char *v) {
    long *list = o->ptr;
    int *ints = o->ptr;
    size_t count = 0;
    if (o->kind == SG_OPT_SET) memset(ints, 0, o->n_names * sizeof *ints);
    for (const char *s = v;; s++) {
        size_t len = strcspn(s, ",");
        if (o->kind != SG_OPT_SET && count == o->max)
            return !sg_bench_bad_usage(bench, "%s takes at most %zu values (got '%s')", o->name, o->max, v);
        if (o->kind == SG_OPT_LIST) {
            long long x;
            if (!opt_integer(bench, o, v, s, len, LONG_MIN, LONG_MAX, &x)) return 0;
            list[count++] = (long)x;
        } else {
            int k = opt_name_index(bench, o, v, s, len);
            if (k < 0) return 0;
            if (o->kind == SG_OPT_SET) ints[k] = 1;
            else ints[count++] = k;
        }
        s += len;
        if (!*s) break;
    }
    if (o->count) *o->count = count;
    return 1;
}

/* Stores value v of option o; 0 (with a message) when v is bad. */
static int opt_store(const char *bench, const sg_bench_opt *o, const char *v) {
    long long x = 0;
    switch (o->kind) {
    case SG_OPT_INT:
        if (!opt_integer(bench, o, v, v, strlen(v), INT_MIN, INT_MAX, &x)) return 0;
        *(int *)o->ptr = (int)x;
        return 1;
    case SG_OPT_LONG:
        if (!opt_integer(bench, o, v, v, strlen(v), LONG_MIN, LONG_MAX, &x)) return 0;
        *(long *)o->ptr = (long)x;
        return 1;
    case SG_OPT_SIZE:
        if (!opt_integer(bench, o, v, v, strlen(v), 0, LLONG_MAX, &x)) return 0;
        *(size_t *)o->ptr = (size_t)x;
        return 1;
    case SG_OPT_DOUBLE: {
        char *end;
        double d = strtod(v, &end);
        if (end == v || *end || !isfinite(d))
            return !sg_bench_bad_usage(bench, "bad value '%s' for %s: expects a finite number", v, o->name);
        if (!opt_in_bounds(bench, o, d)) return 0;
        *(double *)o->ptr = d;
        return 1;
    }
    case SG_OPT_STRING: *(const char **)o->ptr = v; return 1;
    case SG_OPT_CHOICE: {
        int k = opt_name_index(bench, o, v, v, strlen(v));
        if (k < 0) return 0;
        *(int *)o->ptr = k;
        return 1;
    }
    case SG_OPT_LIST:
    case SG_OPT_SET:
    case SG_OPT_PICK: return opt_items(bench, o, v);
    case SG_OPT_FLAG:
    case SG_OPT_CLEAR:
    case SG_OPT_ACTION: break;
    }
    return 1;
}

int sg_bench_options(const char *bench, const sg_bench_opt *opts, size_t n_opts, int argc, char **argv) {
    for (int i = 0; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            print_help(bench, opts, n_opts);
            return 0;
        }
    for (int i = 0; i < argc; i++) {
        const sg_bench_opt *o = NULL;
        for (size_t k = 0; k < n_opts && !o; k++)
            if (strcmp(argv[i], opts[k].name) == 0) o = &opts[k];
        if (!o) return sg_bench_bad_usage(bench, "unknown option '%s'", argv[i]);
        if (o->kind == SG_OPT_FLAG || o->kind == SG_OPT_CLEAR) {
            *(int *)o->ptr = o->kind == SG_OPT_FLAG;
        } else if (o->kind == SG_OPT_ACTION) {
            o->action(o->ptr);
        } else if (i + 1 == argc) {
            char arg[128];
            return sg_bench_bad_usage(bench, "%s needs a value (%s)", o->name, opt_arg_name(o, arg, sizeof arg));
        } else if (!opt_store(bench, o, argv[++i])) {
            return 2;
        }
    }
    return SG_BENCH_RUN;
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

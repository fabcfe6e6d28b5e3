/*
 * mixture_cmd.c - `softgate fit`, `predict`, `eval` and `demo`: argument
 * parsing, reading CSV through the public reader (softgate/io.h), fitting
 * through the mixture API (softgate/mixture.h), and printing tables, JSON
 * and files. Estimation lives in the library (src/models/); the SVG plot in
 * svg_plot.c. Options and file formats: docs/CLI.md.
 *
 * Output files are never overwritten silently: an existing path is refused
 * unless --force (checked before fitting, and the file is then created
 * with O_EXCL). The one exception is the demo's plot, which replaces a
 * file only when that file is itself an earlier softgate plot.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "mixture_cmd.h"
#include "softgate.h"

#define ENCODING_TAG "softgate-cli-encoding 1"
#define PLOT_MARKER "<!-- softgate plot: mixture of experts -->"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int fail(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "softgate %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

/* ------------------------------------------------------------------ */
/* Small parsers                                                       */
/* ------------------------------------------------------------------ */

static int parse_int(const char *s, long lo, long hi, long *v) {
    char *e;
    errno = 0;
    long x = strtol(s, &e, 10);
    if (e == s || *e || errno || x < lo || x > hi) return 0;
    *v = x;
    return 1;
}

static int parse_real(const char *s, double *v) {
    char *e;
    double x = strtod(s, &e);
    if (e == s || *e || !isfinite(x)) return 0;
    *v = x;
    return 1;
}

/* Splits "a,b,c" into a NULL-terminated array (one allocation). Empty
 * names are an error (NULL). */
static char **split_list(const char *s, size_t *count) {
    size_t n = 1, len = strlen(s);
    for (const char *q = s; *q; q++) n += *q == ',';
    char **v = malloc((n + 1) * sizeof *v + len + 1);
    if (!v) return NULL;
    char *buf = (char *)(v + n + 1);
    memcpy(buf, s, len + 1);
    size_t k = 0;
    for (char *tok = buf;; k++) {
        char *comma = strchr(tok, ',');
        if (comma) *comma = '\0';
        if (!*tok) {
            free(v);
            return NULL;
        }
        v[k] = tok;
        if (!comma) break;
        tok = comma + 1;
    }
    v[n] = NULL;
    *count = n;
    return v;
}

/* ------------------------------------------------------------------ */
/* Output files                                                        */
/* ------------------------------------------------------------------ */

static int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

/* Opens path for writing: a new file, or (force) truncating an old one. */
static FILE *open_out(const char *cmd, const char *path, int force) {
    int fd = open(path, O_WRONLY | O_CREAT | (force ? O_TRUNC : O_EXCL), 0644);
    if (fd < 0) {
        if (errno == EEXIST)
            fail(cmd, "%s exists; not overwriting it (use --force to replace it)", path);
        else
            fail(cmd, "cannot create %s: %s", path, strerror(errno));
        return NULL;
    }
    FILE *f = fdopen(fd, "w");
    if (!f) {
        close(fd);
        fail(cmd, "cannot open %s: %s", path, strerror(errno));
    }
    return f;
}

/* Closes f; on a write error removes the partial file. 0 on success. */
static int close_out(const char *cmd, FILE *f, const char *path) {
    int bad = ferror(f);
    if (fclose(f) || bad) {
        fail(cmd, "error writing %s", path);
        remove(path);
        return 1;
    }
    return 0;
}

static int refuse_existing(const char *cmd, const char *path, int force) {
    if (path && !force && file_exists(path))
        return fail(cmd, "%s exists; not overwriting it (use --force to replace it)", path);
    return 0;
}

/* A CSV field, quoted when it needs to be (RFC 4180). */
static void csv_field(FILE *f, const char *s) {
    if (!strpbrk(s, ",\"\r\n") && s[0] != ' ' && (!*s || s[strlen(s) - 1] != ' ')) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"') fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

static void json_string(FILE *f, const char *s) {
    fputc('"', f);
    for (; s && *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c == '\n') fputs("\\n", f);
        else if (c == '\t') fputs("\\t", f);
        else if (c == '\r') fputs("\\r", f);
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else fputc(c, f);
    }
    fputc('"', f);
}

static void json_num(FILE *f, double v) {
    if (isfinite(v)) fprintf(f, "%.17g", v);
    else fputs("null", f);
}

/* ------------------------------------------------------------------ */
/* The encoding metadata kept in the model file                        */
/* ------------------------------------------------------------------ */
/*
 * Lines: the tag; "feature<TAB>name" for each raw feature column in order;
 * "categorical<TAB>name<TAB>level0<TAB>level1..." for each one-hot column.
 * Backslash, tab, CR and LF inside names are escaped as \\ \t \r \n.
 */

typedef struct strbuf {
    char *s;
    size_t n, cap;
    int oom;
} strbuf;

static void sb_putc(strbuf *b, char c) {
    if (b->oom) return;
    if (b->n + 2 > b->cap) {
        size_t cap = b->cap ? 2 * b->cap : 256;
        char *s = realloc(b->s, cap);
        if (!s) {
            b->oom = 1;
            return;
        }
        b->s = s;
        b->cap = cap;
    }
    b->s[b->n++] = c;
    b->s[b->n] = '\0';
}

static void sb_puts(strbuf *b, const char *s) {
    for (; *s; s++) sb_putc(b, *s);
}

static void sb_escaped(strbuf *b, const char *s) {
    for (; *s; s++) {
        switch (*s) {
        case '\\': sb_puts(b, "\\\\"); break;
        case '\t': sb_puts(b, "\\t"); break;
        case '\n': sb_puts(b, "\\n"); break;
        case '\r': sb_puts(b, "\\r"); break;
        default: sb_putc(b, *s);
        }
    }
}

/* The encoding of data set d (its feature columns but `skip`). */
static char *encoding_string(const sg_dataset *d, const char *skip) {
    strbuf b = {0};
    sb_puts(&b, ENCODING_TAG "\n");
    for (size_t i = 0; i < sg_dataset_feature_count(d); i++) {
        const char *name = sg_dataset_feature_name(d, i);
        if (skip && !strcmp(name, skip)) continue;
        sb_puts(&b, "feature\t");
        sb_escaped(&b, name);
        sb_putc(&b, '\n');
    }
    for (size_t k = 0; k < sg_dataset_categorical_count(d); k++) {
        sb_puts(&b, "categorical\t");
        sb_escaped(&b, sg_dataset_categorical_name(d, k));
        for (size_t l = 0; l < sg_dataset_level_count(d, k); l++) {
            sb_putc(&b, '\t');
            sb_escaped(&b, sg_dataset_level_name(d, k, l));
        }
        sb_putc(&b, '\n');
    }
    if (b.oom) {
        free(b.s);
        return NULL;
    }
    return b.s;
}

/* The parsed encoding: strings point into one buffer. */
typedef struct encoding {
    char *buf;
    char **features;
    size_t nfeat;
    char **cat_names;
    sg_csv_levels *levels;
    size_t ncat;
    const char **level_names; /* all levels, back to back */
} encoding;

static void encoding_free(encoding *e) {
    free(e->buf);
    free(e->features);
    free(e->cat_names);
    free(e->levels);
    free(e->level_names);
    memset(e, 0, sizeof *e);
}

/* Unescapes a field in place; returns 0 on a bad escape. */
static int unescape(char *s) {
    char *w = s;
    for (char *r = s; *r; r++) {
        if (*r != '\\') {
            *w++ = *r;
            continue;
        }
        r++;
        if (*r == '\\') *w++ = '\\';
        else if (*r == 't') *w++ = '\t';
        else if (*r == 'n') *w++ = '\n';
        else if (*r == 'r') *w++ = '\r';
        else return 0;
    }
    *w = '\0';
    return 1;
}

/* Parses the metadata string; 0 on success, else an error was printed. */
static int encoding_parse(const char *cmd, const char *path, const char *meta, encoding *e) {
    memset(e, 0, sizeof *e);
    size_t len = strlen(meta), lines = 0, tabs = 0;
    for (const char *q = meta; *q; q++) lines += *q == '\n', tabs += *q == '\t';
    e->buf = malloc(len + 1);
    e->features = calloc(lines + 1, sizeof *e->features);
    e->cat_names = calloc(lines + 1, sizeof *e->cat_names);
    e->levels = calloc(lines + 1, sizeof *e->levels);
    e->level_names = calloc(tabs + 1, sizeof *e->level_names);
    if (!e->buf || !e->features || !e->cat_names || !e->levels || !e->level_names) {
        encoding_free(e);
        return fail(cmd, "out of memory");
    }
    memcpy(e->buf, meta, len + 1);
    size_t nl = 0;
    char *line = e->buf, *next;
    int first = 1;
    for (; *line; line = next) {
        next = strchr(line, '\n');
        if (!next) goto bad;
        *next++ = '\0';
        if (first) {
            if (strcmp(line, ENCODING_TAG)) goto bad;
            first = 0;
            continue;
        }
        char *tab = strchr(line, '\t');
        if (!tab) goto bad;
        *tab = '\0';
        char *rest = tab + 1;
        if (!strcmp(line, "feature")) {
            if (strchr(rest, '\t') || !unescape(rest) || !*rest) goto bad;
            e->features[e->nfeat++] = rest;
        } else if (!strcmp(line, "categorical")) {
            sg_csv_levels *lv = &e->levels[e->ncat];
            char *f = rest, *t = strchr(f, '\t');
            if (!t) goto bad;
            *t = '\0';
            if (!unescape(f)) goto bad;
            lv->column = e->cat_names[e->ncat++] = f;
            lv->names = e->level_names + nl;
            for (f = t + 1;; f = t + 1) {
                t = strchr(f, '\t');
                if (t) *t = '\0';
                if (!unescape(f)) goto bad;
                e->level_names[nl++] = f;
                lv->count++;
                if (!t) break;
            }
            if (lv->count < 2) goto bad;
        } else {
            goto bad;
        }
    }
    if (first || !e->nfeat) goto bad;
    return 0;
bad:
    encoding_free(e);
    return fail(cmd, "%s: the feature encoding (metadata) is not softgate's: corrupt file?", path);
}

/* ------------------------------------------------------------------ */
/* Fitting                                                             */
/* ------------------------------------------------------------------ */

typedef struct fit_args {
    const char *data, *response, *out, *plot, *init_column;
    char **features, **categorical;
    size_t nfeat, ncat;
    long e_min, e_max;
    sg_mix_spec spec;
    int drop_missing, json, force, threads, quiet;
    const char *cmd;
} fit_args;

typedef struct progress {
    int tty;
    long experts;
    double last;
    int printed;
} progress;

static void on_progress(void *user, int restart, int iteration, double loglik) {
    progress *pr = user;
    double t = now_s();
    if (t - pr->last < 0.1) return;
    pr->last = t;
    pr->printed = 1;
    fprintf(stderr, "\r\033[Kfitting: E = %ld, restart %d, iteration %d, log-likelihood %.6f",
            pr->experts, restart + 1, iteration, loglik);
    fflush(stderr);
}

/* Parses --gate. */
static int parse_gate(const char *s, sg_mix_spec *spec) {
    long k;
    double t;
    if (!strcmp(s, "softmax")) spec->gate = SG_MIX_GATE_SOFTMAX;
    else if (!strcmp(s, "laplace")) spec->gate = SG_MIX_GATE_LAPLACE;
    else if (!strcmp(s, "tanh") || !strcmp(s, "tanh-softmax")) spec->gate = SG_MIX_GATE_TANH_SOFTMAX;
    else if (!strncmp(s, "topk:", 5) && parse_int(s + 5, 1, 1000000, &k)) {
        spec->gate = SG_MIX_GATE_TOPK;
        spec->top_k = (int)k;
    } else if (!strncmp(s, "temperature:", 12) && parse_real(s + 12, &t) && t > 0) {
        spec->gate = SG_MIX_GATE_TEMPERATURE;
        spec->temperature = t;
    } else if (!strncmp(s, "hier:", 5)) {
        char buf[64];
        snprintf(buf, sizeof buf, "%s", s + 5);
        char *levels = strchr(buf, ':');
        if (levels) *levels++ = '\0';
        if (!parse_int(buf, 1, 1000000, &k)) return 0;
        spec->gate = SG_MIX_GATE_HIERARCHICAL;
        spec->groups = (int)k;
        spec->level_gate[0] = spec->level_gate[1] = SG_MIX_GATE_SOFTMAX;
        if (levels) {
            char *slash = strchr(levels, '/');
            if (!slash) return 0;
            *slash = '\0';
            for (int i = 0; i < 2; i++) {
                const char *g = i ? slash + 1 : levels;
                if (!strcmp(g, "softmax")) spec->level_gate[i] = SG_MIX_GATE_SOFTMAX;
                else if (!strcmp(g, "laplace")) spec->level_gate[i] = SG_MIX_GATE_LAPLACE;
                else return 0;
            }
        }
    } else return 0;
    return 1;
}

static void fit_usage(FILE *f) {
    fprintf(f,
            "usage: softgate fit DATA.csv --response Y [options]\n"
            "  --features a,b,...        feature columns (default: all but the response)\n"
            "  --experts E | A..B        number of experts, or a range (best BIC kept; default 2)\n"
            "  --gate G                  softmax (default), laplace, tanh, topk:K, temperature:T,\n"
            "                            hier:G[:softmax|laplace/softmax|laplace]\n"
            "  --family F                gaussian (default) or multinomial (class labels)\n"
            "  --lasso L | path          l1 penalty L * n on slopes, or the BIC-selected path\n"
            "  --categorical a,b         one-hot encode these feature columns\n"
            "  --drop-missing            drop records with missing or malformed values\n"
            "  --restarts N --seed S     random starts (default 5) and seed (default 1)\n"
            "  --init I                  auto, partition, kmeans, lines, mixreg\n"
            "  --init-column C           start from the partition in column C (values 1..E)\n"
            "  --max-iter N --tol T      EM cap and relative tolerance\n"
            "  --no-escape               no split-and-merge escape step at convergence\n"
            "  --threads N               threads (default: one per core)\n"
            "  -o MODEL.json             write the model (refuses to overwrite without --force)\n"
            "  --plot FIT.svg            plot (one numeric feature, gaussian family)\n"
            "  --json                    print the summary as one JSON object\n"
            "  --force                   replace existing output files\n");
}

/* Parses fit's options (shared with demo for -o/--plot/--json/--force). */
static int parse_fit_args(int argc, char **argv, fit_args *a) {
    const char *cmd = a->cmd;
    for (int i = 0; i < argc; i++) {
        const char *o = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        long k;
        double t;
#define NEED_VALUE                                                                       \
    do {                                                                                 \
        if (!v) {                                                                        \
            fail(cmd, "option %s needs a value", o);                                     \
            return 2;                                                                    \
        }                                                                                \
        i++;                                                                             \
    } while (0)
        if (!strcmp(o, "--help") || !strcmp(o, "-h")) {
            fit_usage(stdout);
            return -1;
        } else if (!strcmp(o, "--response")) {
            NEED_VALUE;
            a->response = v;
        } else if (!strcmp(o, "--features") || !strcmp(o, "--categorical")) {
            NEED_VALUE;
            size_t n;
            char **list = split_list(v, &n);
            if (!list) return fail(cmd, "%s %s: empty column name", o, v), 2;
            if (o[2] == 'f') free(a->features), a->features = list, a->nfeat = n;
            else free(a->categorical), a->categorical = list, a->ncat = n;
        } else if (!strcmp(o, "--experts")) {
            NEED_VALUE;
            const char *dots = strstr(v, "..");
            char lo[32];
            if (dots && (size_t)(dots - v) < sizeof lo) {
                memcpy(lo, v, (size_t)(dots - v));
                lo[dots - v] = '\0';
                if (!parse_int(lo, 1, 1000, &a->e_min) || !parse_int(dots + 2, 1, 1000, &a->e_max) ||
                    a->e_max < a->e_min)
                    return fail(cmd, "--experts %s: expected E or A..B with 1 <= A <= B <= 1000", v), 2;
            } else if (parse_int(v, 1, 1000, &k)) {
                a->e_min = a->e_max = k;
            } else {
                return fail(cmd, "--experts %s: expected E or A..B with 1 <= A <= B <= 1000", v), 2;
            }
        } else if (!strcmp(o, "--gate")) {
            NEED_VALUE;
            if (!parse_gate(v, &a->spec))
                return fail(cmd, "--gate %s: expected softmax, laplace, tanh, topk:K, "
                                 "temperature:T (T > 0) or hier:G[:A/B]", v), 2;
        } else if (!strcmp(o, "--family")) {
            NEED_VALUE;
            if (!strcmp(v, "gaussian")) a->spec.family = SG_MIX_GAUSSIAN;
            else if (!strcmp(v, "multinomial")) a->spec.family = SG_MIX_MULTINOMIAL;
            else return fail(cmd, "--family %s: expected gaussian or multinomial", v), 2;
        } else if (!strcmp(o, "--lasso")) {
            NEED_VALUE;
            if (!strcmp(v, "path")) a->spec.lasso = -1;
            else if (parse_real(v, &t) && t >= 0) a->spec.lasso = t;
            else return fail(cmd, "--lasso %s: expected a penalty >= 0 or 'path'", v), 2;
        } else if (!strcmp(o, "--no-escape")) {
            a->spec.escape = 0;
        } else if (!strcmp(o, "--drop-missing")) {
            a->drop_missing = 1;
        } else if (!strcmp(o, "--restarts")) {
            NEED_VALUE;
            if (!parse_int(v, 1, 1000000, &k)) return fail(cmd, "--restarts %s: expected N >= 1", v), 2;
            a->spec.restarts = (int)k;
        } else if (!strcmp(o, "--seed")) {
            NEED_VALUE;
            char *e;
            errno = 0;
            unsigned long long s = strtoull(v, &e, 10);
            if (e == v || *e || errno || v[0] == '-')
                return fail(cmd, "--seed %s: expected a non-negative integer", v), 2;
            a->spec.seed = (uint64_t)s;
        } else if (!strcmp(o, "--init")) {
            NEED_VALUE;
            sg_mix_init in = SG_MIX_INIT_AUTO;
            for (; in <= SG_MIX_INIT_MIXREG; in++)
                if (!strcmp(v, sg_mix_init_name(in))) break;
            if (in > SG_MIX_INIT_MIXREG)
                return fail(cmd, "--init %s: expected auto, partition, kmeans, lines or mixreg "
                                 "(a given partition: --init-column)", v), 2;
            a->spec.init = in;
        } else if (!strcmp(o, "--init-column")) {
            NEED_VALUE;
            a->init_column = v;
        } else if (!strcmp(o, "--max-iter")) {
            NEED_VALUE;
            if (!parse_int(v, 1, 100000000, &k)) return fail(cmd, "--max-iter %s: expected N >= 1", v), 2;
            a->spec.max_iter = (int)k;
        } else if (!strcmp(o, "--tol")) {
            NEED_VALUE;
            if (!parse_real(v, &t) || t <= 0) return fail(cmd, "--tol %s: expected T > 0", v), 2;
            a->spec.tol = t;
        } else if (!strcmp(o, "--threads")) {
            NEED_VALUE;
            if (!parse_int(v, 0, SG_MAX_THREADS, &k))
                return fail(cmd, "--threads %s: expected 0..%d", v, SG_MAX_THREADS), 2;
            a->threads = (int)k;
        } else if (!strcmp(o, "-o") || !strcmp(o, "--output")) {
            NEED_VALUE;
            a->out = v;
        } else if (!strcmp(o, "--plot")) {
            NEED_VALUE;
            a->plot = v;
        } else if (!strcmp(o, "--json")) {
            a->json = 1;
        } else if (!strcmp(o, "--force")) {
            a->force = 1;
        } else if (o[0] == '-' && o[1]) {
            return fail(cmd, "unknown option '%s' (softgate %s --help)", o, cmd), 2;
        } else if (!a->data) {
            a->data = o;
        } else {
            return fail(cmd, "unexpected argument '%s' (one data file only)", o), 2;
        }
#undef NEED_VALUE
    }
    return 0;
}

/* One fitted candidate (a value of E). */
typedef struct candidate {
    long experts;
    sg_mix_model *model;
    sg_mix_info info;
    double seconds;
} candidate;

static const char *expert_label(char *buf, size_t size, int k) {
    snprintf(buf, size, "%d", k + 1);
    return buf;
}

/* Column label j of a block with `cols` columns over p features. */
static const char *param_col_name(const sg_mix_model *m, size_t p, size_t cols, size_t j) {
    if (cols == p + 1) {
        if (j == 0) return "(intercept)";
        j--;
    }
    const char *name = sg_mix_name(m, SG_MIX_NAME_FEATURE, j);
    return name ? name : "?";
}

static void print_block(const sg_mix_model *m, const sg_mix_info *info, sg_mix_param_kind kind,
                        const char *title, int per_class) {
    size_t rows, cols;
    const double *v = sg_mix_param(m, kind, &rows, &cols);
    if (!v) return;
    printf("\n%s\n  %-14s", title, per_class ? "expert/class" : "expert");
    for (size_t j = 0; j < cols; j++) printf(" %14.14s", param_col_name(m, info->p, cols, j));
    printf("\n");
    for (size_t r = 0; r < rows; r++) {
        char lab[64], eb[16];
        if (per_class) {
            const char *cn = sg_mix_name(m, SG_MIX_NAME_CLASS, r % (size_t)info->classes);
            char cb[24];
            if (!cn) snprintf(cb, sizeof cb, "%zu", r % (size_t)info->classes), cn = cb;
            snprintf(lab, sizeof lab, "%zu/%.40s", r / (size_t)info->classes + 1, cn);
        } else {
            snprintf(lab, sizeof lab, "%s", expert_label(eb, sizeof eb, (int)r));
        }
        printf("  %-14s", lab);
        for (size_t j = 0; j < cols; j++) printf(" %14.6g", v[r * cols + j]);
        printf("\n");
    }
}

static void print_params(const sg_mix_model *m, const sg_mix_info *info) {
    int multi = info->family == SG_MIX_MULTINOMIAL;
    print_block(m, info, SG_MIX_PARAM_EXPERT_COEF,
                multi ? "Experts: class logits (last class is the reference, all zero)"
                      : "Experts: mean = coefficients . [1, x]",
                multi);
    size_t rows, cols;
    const double *s = sg_mix_param(m, SG_MIX_PARAM_SIGMA, &rows, &cols);
    if (s) {
        printf("\n  %-14s %14s\n", "expert", "sigma");
        for (size_t r = 0; r < rows; r++) printf("  %-14zu %14.6g\n", r + 1, s[r]);
    }
    const char *gt = "Gate";
    switch (info->gate) {
    case SG_MIX_GATE_SOFTMAX: gt = "Gate (softmax): logits = w . [1, x]; last expert fixed at 0"; break;
    case SG_MIX_GATE_TOPK: gt = "Gate (top-K softmax): logits = w . [1, x]; last expert fixed at 0"; break;
    case SG_MIX_GATE_TEMPERATURE: gt = "Gate (temperature): logits = w . [1, x] / T; last expert 0"; break;
    case SG_MIX_GATE_TANH_SOFTMAX: gt = "Gate (tanh-softmax): logits = w . [1, tanh((x - c) / s)]"; break;
    case SG_MIX_GATE_LAPLACE: gt = "Gate (Laplace): logits = -||x - w||"; break;
    case SG_MIX_GATE_HIERARCHICAL: gt = "Gate, group level (rows = groups)"; break;
    }
    print_block(m, info, SG_MIX_PARAM_GATE_COEF, gt, 0);
    print_block(m, info, SG_MIX_PARAM_GATE2_COEF, "Gate, within groups (rows = experts)", 0);
}

static void print_candidates(const candidate *c, size_t nc, size_t best) {
    printf("\n  %4s %16s %8s %14s %14s %14s %6s %5s %9s\n", "E", "loglik", "df", "AIC", "BIC", "ICL",
           "iter", "conv", "time(s)");
    for (size_t i = 0; i < nc; i++) {
        const sg_mix_info *f = &c[i].info;
        if (!c[i].model) {
            printf("  %4ld   (failed; see the message above)\n", c[i].experts);
            continue;
        }
        printf("  %4ld %16.6f %8.0f %14.4f %14.4f %14.4f %6d %5s %9.3f%s\n", c[i].experts, f->loglik,
               f->df, f->aic, f->bic, f->icl, f->iterations, f->converged ? "yes" : "no",
               c[i].seconds, nc > 1 && i == best ? "  <- best BIC" : "");
    }
}

/* The Lasso path of a model fitted with --lasso path. */
static void print_path(const sg_mix_model *m) {
    size_t len = sg_mix_path_length(m);
    if (!len) return;
    printf("\nLasso path (penalty lambda * n on standardized slopes; smallest BIC kept)\n"
           "  %14s %16s %14s %8s\n", "lambda", "loglik", "BIC", "nonzero");
    for (size_t i = 0; i < len; i++) {
        double lambda, ll, bic;
        size_t nz;
        if (sg_mix_path_entry(m, i, &lambda, &ll, &bic, &nz) == SG_OK)
            printf("  %14.6g %16.6f %14.4f %8zu\n", lambda, ll, bic, nz);
    }
}

static void json_path(FILE *f, const sg_mix_model *m) {
    size_t len = sg_mix_path_length(m);
    fputs(",\"lasso_path\":[", f);
    for (size_t i = 0; i < len; i++) {
        double lambda = NAN, ll = NAN, bic = NAN;
        size_t nz = 0;
        sg_mix_path_entry(m, i, &lambda, &ll, &bic, &nz);
        fputs(i ? ",{\"lambda\":" : "{\"lambda\":", f);
        json_num(f, lambda);
        fputs(",\"loglik\":", f);
        json_num(f, ll);
        fputs(",\"bic\":", f);
        json_num(f, bic);
        fprintf(f, ",\"nonzero\":%zu}", nz);
    }
    fputc(']', f);
}

static void json_block(FILE *f, const sg_mix_model *m, sg_mix_param_kind kind, const char *name,
                       int *first) {
    size_t rows, cols;
    const double *v = sg_mix_param(m, kind, &rows, &cols);
    if (!v) return;
    fprintf(f, "%s\"%s\":{\"rows\":%zu,\"cols\":%zu,\"values\":[", *first ? "" : ",", name, rows, cols);
    for (size_t i = 0; i < rows * cols; i++) {
        if (i) fputc(',', f);
        json_num(f, v[i]);
    }
    fputs("]}", f);
    *first = 0;
}

static void json_info(FILE *f, const sg_mix_info *x, double seconds) {
    fprintf(f, "\"experts\":%d,\"loglik\":", x->experts);
    json_num(f, x->loglik);
    fputs(",\"objective\":", f);
    json_num(f, x->objective);
    fputs(",\"df\":", f);
    json_num(f, x->df);
    fputs(",\"aic\":", f);
    json_num(f, x->aic);
    fputs(",\"bic\":", f);
    json_num(f, x->bic);
    fputs(",\"icl\":", f);
    json_num(f, x->icl);
    fprintf(f, ",\"iterations\":%d,\"converged\":%s,\"grad_norm\":", x->iterations,
            x->converged ? "true" : "false");
    json_num(f, x->grad_norm);
    fputs(",\"lambda\":", f);
    json_num(f, x->lambda);
    fputs(",\"time_s\":", f);
    json_num(f, seconds);
}

static void print_json(const fit_args *a, const sg_dataset *d, const candidate *c, size_t nc,
                       size_t best, double total) {
    const sg_mix_model *m = c[best].model;
    const sg_mix_info *info = &c[best].info;
    FILE *f = stdout;
    fputs("{\"command\":", f);
    json_string(f, a->cmd);
    fputs(",\"data\":", f);
    json_string(f, a->data);
    fprintf(f, ",\"n\":%zu,\"dropped\":%zu,\"p\":%zu,\"response\":", sg_dataset_rows(d),
            sg_dataset_dropped(d), info->p);
    json_string(f, a->response);
    fputs(",\"features\":[", f);
    for (size_t j = 0; j < info->p; j++) {
        if (j) fputc(',', f);
        json_string(f, sg_mix_name(m, SG_MIX_NAME_FEATURE, j));
    }
    fputs("],\"family\":", f);
    json_string(f, sg_mix_family_name(info->family));
    fputs(",\"gate\":", f);
    json_string(f, sg_mix_gate_name(info->gate));
    fprintf(f, ",\"restarts\":%d,\"seed\":%llu,", a->spec.restarts, (unsigned long long)a->spec.seed);
    json_info(f, info, c[best].seconds);
    fputs(",\"parameters\":{", f);
    int first = 1;
    json_block(f, m, SG_MIX_PARAM_EXPERT_COEF, "expert_coef", &first);
    json_block(f, m, SG_MIX_PARAM_SIGMA, "sigma", &first);
    json_block(f, m, SG_MIX_PARAM_GATE_COEF, "gate_coef", &first);
    json_block(f, m, SG_MIX_PARAM_GATE2_COEF, "gate2_coef", &first);
    fputc('}', f);
    json_path(f, m);
    fputs(",\"candidates\":[", f);
    for (size_t i = 0, first_c = 1; i < nc; i++) {
        if (!c[i].model) continue;
        fputs(first_c ? "{" : ",{", f);
        json_info(f, &c[i].info, c[i].seconds);
        fputc('}', f);
        first_c = 0;
    }
    fputs("],\"model_file\":", f);
    if (a->out) json_string(f, a->out);
    else fputs("null", f);
    fputs(",\"plot_file\":", f);
    if (a->plot) json_string(f, a->plot);
    else fputs("null", f);
    fputs(",\"time_s\":", f);
    json_num(f, total);
    fputs("}\n", f);
}

/* Whether the plot is possible: one numeric feature, Gaussian experts. */
static int plot_check(const fit_args *a, size_t p_raw) {
    if (!a->plot) return 0;
    if (a->spec.family != SG_MIX_GAUSSIAN || p_raw != 1 || a->ncat)
        return fail(a->cmd, "--plot needs the gaussian family and exactly one numeric feature "
                            "(use --features to pick one)");
    return 0;
}

/* Most probable expert of each point, expert lines, gate on a grid. */
static int write_plot(const fit_args *a, const sg_dataset *d, const double *x, sg_context *ctx,
                      const sg_mix_model *m, const sg_mix_info *info, const char *title,
                      int replace_plot) {
    size_t n = sg_dataset_rows(d), E = (size_t)info->experts, grid = 200;
    const double *y = sg_dataset_y(d);
    double *post = malloc(n * E * sizeof *post), *gx = malloc(grid * sizeof *gx),
           *gate = malloc(grid * E * sizeof *gate), *b0 = malloc(E * sizeof *b0),
           *b1 = malloc(E * sizeof *b1);
    int *cls = malloc(n * sizeof *cls);
    int rc = 1;
    double ll;
    size_t rows, cols;
    const double *coef = sg_mix_param(m, SG_MIX_PARAM_EXPERT_COEF, &rows, &cols);
    if (!post || !gx || !gate || !b0 || !b1 || !cls || !coef || cols != 2 || rows != E) {
        fail(a->cmd, "cannot prepare the plot");
        goto done;
    }
    if (sg_mix_evaluate(ctx, m, n, x, 1, y, NULL, &ll, post, E) != SG_OK) {
        fail(a->cmd, "plot: %s", sg_context_error(ctx));
        goto done;
    }
    double lo = x[0], hi = x[0];
    for (size_t i = 0; i < n; i++) {
        size_t b = 0;
        for (size_t k = 1; k < E; k++)
            if (post[i * E + k] > post[i * E + b]) b = k;
        cls[i] = (int)b;
        lo = fmin(lo, x[i]), hi = fmax(hi, x[i]);
    }
    double padw = hi > lo ? 0.04 * (hi - lo) : 0.5;
    lo -= padw, hi += padw;
    for (size_t j = 0; j < grid; j++) gx[j] = lo + (hi - lo) * (double)j / (double)(grid - 1);
    if (sg_mix_predict(ctx, m, grid, gx, 1, NULL, 0, gate, E) != SG_OK) {
        fail(a->cmd, "plot: %s", sg_context_error(ctx));
        goto done;
    }
    for (size_t k = 0; k < E; k++) b0[k] = coef[2 * k], b1[k] = coef[2 * k + 1];
    sg_plot_data pd = {title, sg_mix_name(m, SG_MIX_NAME_FEATURE, 0), a->response, n, x, y, cls, (int)E, b0, b1,
                       grid, gx, gate};
    FILE *f = open_out(a->cmd, a->plot, a->force || replace_plot);
    if (!f) goto done;
    if (sg_plot_svg(f, &pd)) {
        fclose(f);
        remove(a->plot);
        fail(a->cmd, "error writing %s", a->plot);
        goto done;
    }
    rc = close_out(a->cmd, f, a->plot);
done:
    free(post), free(gx), free(gate), free(b0), free(b1), free(cls);
    return rc;
}

static int save_model(const fit_args *a, sg_context *ctx, const sg_mix_model *m) {
    char *json = NULL;
    if (sg_mix_save_json_string(ctx, m, &json) != SG_OK)
        return fail(a->cmd, "cannot save the model: %s", sg_context_error(ctx));
    FILE *f = open_out(a->cmd, a->out, a->force);
    if (!f) {
        free(json);
        return 1;
    }
    fputs(json, f);
    free(json);
    return close_out(a->cmd, f, a->out);
}

/*
 * Reads the data for fit/demo. With --init-column, that column is read as
 * one more (numeric) feature and split off by run_fit.
 */
static int read_fit_data(fit_args *a, sg_context *ctx, const char *buf, size_t size,
                         sg_dataset **out) {
    sg_csv_options o = sg_csv_options_default();
    o.response = a->response;
    o.response_kind = a->spec.family == SG_MIX_MULTINOMIAL ? SG_CSV_RESPONSE_LABELS
                                                           : SG_CSV_RESPONSE_NUMERIC;
    o.categorical = (const char *const *)a->categorical;
    o.n_categorical = a->ncat;
    o.drop_missing = a->drop_missing;
    const char **feat = NULL;
    if (a->features) {
        feat = malloc((a->nfeat + 1) * sizeof *feat);
        if (!feat) return fail(a->cmd, "out of memory");
        memcpy(feat, a->features, a->nfeat * sizeof *feat);
        o.features = feat;
        o.n_features = a->nfeat;
        if (a->init_column) feat[o.n_features++] = a->init_column;
    }
    sg_status st = sg_csv_read_buffer(ctx, buf, size, &o, out);
    free(feat);
    if (st != SG_OK) return fail(a->cmd, "%s: %s", a->data, sg_context_error(ctx));
    return 0;
}

static int read_file_all(const char *cmd, const char *path, char **buf, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return fail(cmd, "%s: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap);
    for (;;) {
        if (!b) {
            fclose(f);
            return fail(cmd, "%s: out of memory", path);
        }
        if (n == cap) {
            if (cap > SG_CSV_DEFAULT_MAX_BYTES) {
                free(b);
                fclose(f);
                return fail(cmd, "%s: larger than %zu bytes", path, SG_CSV_DEFAULT_MAX_BYTES);
            }
            char *nb = realloc(b, 2 * cap);
            if (!nb) free(b);
            b = nb, cap *= 2;
            continue;
        }
        size_t got = fread(b + n, 1, cap - n, f);
        n += got;
        if (!got) break;
    }
    int err = ferror(f);
    fclose(f);
    if (err) {
        free(b);
        return fail(cmd, "%s: read error", path);
    }
    *buf = b;
    *size = n;
    return 0;
}

/*
 * The fit shared by `fit` and `demo`: data in buf, options in a. For the
 * demo, replace_plot lets an earlier softgate plot be replaced.
 */
static int run_fit(fit_args *a, const char *buf, size_t size, const char *title, int replace_plot) {
    const char *cmd = a->cmd;
    if (!a->response) return fail(cmd, "--response is required (the column to predict)"), 2;
    if (a->init_column && a->e_min != a->e_max)
        return fail(cmd, "--init-column needs one number of experts, not a range"), 2;
    if (a->out && a->plot && !strcmp(a->out, a->plot))
        return fail(cmd, "-o and --plot name the same file %s", a->out), 2;
    if (refuse_existing(cmd, a->out, a->force) || (!replace_plot && refuse_existing(cmd, a->plot, a->force)))
        return 1;
    sg_context *ctx = NULL;
    if (sg_context_create(&ctx, a->threads) != SG_OK) return fail(cmd, "cannot create a context");
    sg_dataset *d = NULL;
    size_t nc = 0, best = 0;
    const char **names = NULL;
    int32_t *init = NULL;
    double *x = NULL;
    candidate *c = NULL;
    char *meta = NULL;
    int rc = 1;
    if ((rc = read_fit_data(a, ctx, buf, size, &d))) goto done;
    rc = 1;
    if (plot_check(a, sg_dataset_feature_count(d) - (a->init_column != NULL))) goto done;
    size_t n = sg_dataset_rows(d), pall = sg_dataset_cols(d), p = pall - (a->init_column != NULL);
    const double *xd = sg_dataset_x(d);
    size_t icol = pall; /* the init column's index among the encoded columns */
    for (size_t j = 0; a->init_column && j < pall; j++)
        if (!strcmp(sg_dataset_col_name(d, j), a->init_column)) icol = j;
    if (a->init_column && icol == pall) {
        fail(cmd, "--init-column %s: not a numeric column of %s (nor the response)", a->init_column,
             a->data);
        goto done;
    }
    names = malloc((p ? p : 1) * sizeof *names);
    if (!names) {
        fail(cmd, "out of memory");
        goto done;
    }
    for (size_t j = 0, t = 0; j < pall; j++)
        if (j != icol) names[t++] = sg_dataset_col_name(d, j);
    if (a->init_column) {
        /* The partition, 1..E, split off the features. */
        init = malloc(n * sizeof *init);
        x = malloc((n * p + 1) * sizeof *x);
        if (!init || !x) {
            fail(cmd, "out of memory");
            goto done;
        }
        for (size_t i = 0; i < n; i++) {
            double v = xd[i * pall + icol];
            if (v != floor(v) || v < 1 || v > (double)a->e_min) {
                fail(cmd, "%s: line %zu, column '%s': %g is not an expert number 1..%ld", a->data,
                     sg_dataset_line(d, i), a->init_column, v, a->e_min);
                goto done;
            }
            init[i] = (int32_t)v - 1;
            for (size_t j = 0, t = 0; j < pall; j++)
                if (j != icol) x[i * p + t++] = xd[i * pall + j];
        }
        a->spec.init = SG_MIX_INIT_LABELS;
        a->spec.init_labels = init;
    }
    const double *X = x ? x : xd; /* [n x p], row stride p */
    if (!a->json && !a->quiet) {
        printf("softgate %s: %s, n = %zu", cmd, a->data, n);
        if (sg_dataset_dropped(d))
            printf(" (%zu records dropped for missing or malformed values; first on line %zu)",
                   sg_dataset_dropped(d), sg_dataset_first_dropped_line(d));
        printf(", response %s, %zu feature column%s", a->response, p, p == 1 ? "" : "s");
        if (a->spec.family == SG_MIX_MULTINOMIAL) printf(", %zu classes", sg_dataset_classes(d));
        printf("\n");
    } else if (sg_dataset_dropped(d)) {
        fprintf(stderr, "softgate %s: %zu records dropped for missing or malformed values (first on line %zu)\n",
                cmd, sg_dataset_dropped(d), sg_dataset_first_dropped_line(d));
    }
    if (a->spec.family == SG_MIX_MULTINOMIAL) a->spec.classes = (int)sg_dataset_classes(d);
    progress pr = {isatty(2), 0, 0, 0};
    if (pr.tty) {
        a->spec.progress = on_progress;
        a->spec.progress_user = &pr;
    }
    nc = (size_t)(a->e_max - a->e_min + 1);
    c = calloc(nc, sizeof *c);
    if (!c) {
        fail(cmd, "out of memory");
        goto done;
    }
    double t_all = now_s();
    size_t ok = 0;
    for (size_t i = 0; i < nc; i++) {
        c[i].experts = a->e_min + (long)i;
        sg_mix_spec spec = a->spec;
        spec.experts = (int)c[i].experts;
        pr.experts = c[i].experts;
        double t0 = now_s();
        sg_status st = sg_mix_fit(ctx, &spec, n, p, X, p,
                                  sg_dataset_y(d), sg_dataset_labels(d), &c[i].model);
        c[i].seconds = now_s() - t0;
        if (pr.printed) fputs("\r\033[K", stderr), pr.printed = 0;
        if (st != SG_OK) {
            fail(cmd, "E = %ld: %s", c[i].experts, sg_context_error(ctx));
            continue;
        }
        sg_mix_model_info(c[i].model, &c[i].info);
        if (!ok++ || c[i].info.bic < c[best].info.bic) best = i;
    }
    double total = now_s() - t_all;
    if (!ok) goto done;
    sg_mix_model *m = c[best].model;
    const sg_mix_info *info = &c[best].info;
    /* Names and the encoding go into the model file. */
    const char **cls = NULL;
    size_t C = sg_dataset_classes(d);
    if (C && (cls = malloc(C * sizeof *cls)))
        for (size_t k = 0; k < C; k++) cls[k] = sg_dataset_class_name(d, k);
    meta = encoding_string(d, a->init_column);
    if ((C && !cls) || !meta) {
        free(cls);
        fail(cmd, "out of memory");
        goto done;
    }
    sg_status st = sg_mix_set_names(ctx, m, a->response, names, cls, meta);
    free(cls);
    if (st != SG_OK) {
        fail(cmd, "cannot name the model's columns: %s", sg_context_error(ctx));
        goto done;
    }
    if (!a->json) {
        printf("model: %s experts, %s gate", sg_mix_family_name(info->family),
               sg_mix_gate_name(info->gate));
        if (info->gate == SG_MIX_GATE_TOPK) printf(" (K = %d)", info->top_k);
        if (info->gate == SG_MIX_GATE_TEMPERATURE) printf(" (T = %g)", info->temperature);
        if (info->gate == SG_MIX_GATE_HIERARCHICAL) printf(" (%d groups)", info->groups);
        printf(", restarts %d, seed %llu%s\n", a->spec.restarts, (unsigned long long)a->spec.seed,
               a->init_column ? ", started from the given partition" : "");
        print_candidates(c, nc, best);
        if (nc > 1) printf("\nselected: E = %ld (smallest BIC)\n", c[best].experts);
        print_params(m, info);
        print_path(m);
        printf("\nlog-likelihood %.6f, df %.0f, AIC %.4f, BIC %.4f, ICL %.4f\n", info->loglik,
               info->df, info->aic, info->bic, info->icl);
        printf("%d iterations, %s, gradient norm %.3g, best restart %d, time %.3f s (all fits %.3f s)\n",
               info->iterations, info->converged ? "converged" : "NOT converged (iteration cap)",
               info->grad_norm, info->best_restart + 1, c[best].seconds, total);
    }
    if (a->out && (rc = save_model(a, ctx, m))) goto done;
    rc = 1;
    if (a->plot && write_plot(a, d, X, ctx, m, info, title, replace_plot)) goto done;
    if (a->json) print_json(a, d, c, nc, best, total);
    else {
        if (a->out) printf("model written to %s\n", a->out);
        if (a->plot) printf("plot written to %s\n", a->plot);
    }
    rc = 0;
done:
    for (size_t i = 0; c && i < nc; i++) sg_mix_model_free(c[i].model);
    free(c);
    free(meta);
    free(init);
    free(x);
    free(names);
    sg_dataset_destroy(d);
    sg_context_destroy(ctx);
    return rc;
}

static void fit_args_init(fit_args *a, const char *cmd) {
    memset(a, 0, sizeof *a);
    a->cmd = cmd;
    a->e_min = a->e_max = 2;
    a->spec = sg_mix_spec_default();
}

int sg_cli_fit(int argc, char **argv) {
    fit_args a;
    fit_args_init(&a, "fit");
    int rc = parse_fit_args(argc, argv, &a);
    if (!rc && !a.data) {
        fit_usage(stderr);
        rc = 2;
    }
    if (!rc) {
        char *buf = NULL;
        size_t size = 0;
        rc = read_file_all("fit", a.data, &buf, &size);
        if (!rc) rc = run_fit(&a, buf, size, a.data, 0);
        free(buf);
    }
    free(a.features);
    free(a.categorical);
    return rc < 0 ? 0 : rc;
}

/* ------------------------------------------------------------------ */
/* predict and eval                                                    */
/* ------------------------------------------------------------------ */

typedef struct use_args {
    const char *model, *data, *out;
    int drop_missing, json, force, threads;
} use_args;

static int parse_use_args(const char *cmd, int argc, char **argv, use_args *u) {
    memset(u, 0, sizeof *u);
    for (int i = 0; i < argc; i++) {
        const char *o = argv[i];
        if (!strcmp(o, "--help") || !strcmp(o, "-h")) {
            printf("usage: softgate %s MODEL.json DATA.csv%s [--drop-missing]%s [--threads N]\n", cmd,
                   strcmp(cmd, "predict") ? "" : " [-o OUT.csv] [--force]",
                   strcmp(cmd, "eval") ? "" : " [--json]");
            return -1;
        } else if (!strcmp(o, "--drop-missing")) u->drop_missing = 1;
        else if (!strcmp(o, "--force") && !strcmp(cmd, "predict")) u->force = 1;
        else if (!strcmp(o, "--json") && !strcmp(cmd, "eval")) u->json = 1;
        else if ((!strcmp(o, "-o") || !strcmp(o, "--output")) && !strcmp(cmd, "predict")) {
            if (i + 1 >= argc) return fail(cmd, "option %s needs a value", o), 2;
            u->out = argv[++i];
        } else if (!strcmp(o, "--threads")) {
            long k;
            if (i + 1 >= argc || !parse_int(argv[i + 1], 0, SG_MAX_THREADS, &k))
                return fail(cmd, "--threads needs a value 0..%d", SG_MAX_THREADS), 2;
            u->threads = (int)k;
            i++;
        } else if (o[0] == '-' && o[1]) return fail(cmd, "unknown option '%s' (softgate %s --help)", o, cmd), 2;
        else if (!u->model) u->model = o;
        else if (!u->data) u->data = o;
        else return fail(cmd, "unexpected argument '%s'", o), 2;
    }
    if (!u->data) return fail(cmd, "usage: softgate %s MODEL.json DATA.csv (softgate %s --help)", cmd, cmd), 2;
    return 0;
}

/* Loads the model and reads the data encoded as at fit time. */
static int load_for_use(const char *cmd, const use_args *u, int with_response, sg_context *ctx,
                        sg_mix_model **m, sg_mix_info *info, sg_dataset **d) {
    if (sg_mix_load_json(ctx, u->model, m) != SG_OK) return fail(cmd, "%s", sg_context_error(ctx));
    sg_mix_model_info(*m, info);
    encoding e;
    memset(&e, 0, sizeof e);
    const char *meta = sg_mix_name(*m, SG_MIX_NAME_METADATA, 0);
    const char **fallback = NULL;
    if (meta) {
        if (encoding_parse(cmd, u->model, meta, &e)) return 1;
    } else if (info->p) {
        /* A model fitted from C with feature names but no CLI encoding. */
        fallback = malloc(info->p * sizeof *fallback);
        if (!fallback) return fail(cmd, "out of memory");
        for (size_t j = 0; j < info->p; j++)
            if (!(fallback[j] = sg_mix_name(*m, SG_MIX_NAME_FEATURE, j))) {
                free(fallback);
                return fail(cmd, "%s: the model has no feature names; cannot match CSV columns", u->model);
            }
    }
    const char *response = sg_mix_name(*m, SG_MIX_NAME_RESPONSE, 0);
    const char **classes = NULL;
    int rc = 1;
    sg_csv_options o = sg_csv_options_default();
    if (with_response) {
        if (!response) {
            fail(cmd, "%s: the model does not name its response column", u->model);
            goto done;
        }
        o.response = response;
        if (info->family == SG_MIX_MULTINOMIAL) {
            o.response_kind = SG_CSV_RESPONSE_LABELS;
            classes = malloc((size_t)info->classes * sizeof *classes);
            if (!classes) goto done;
            for (int k = 0; k < info->classes; k++)
                if (!(classes[k] = sg_mix_name(*m, SG_MIX_NAME_CLASS, (size_t)k))) {
                    fail(cmd, "%s: the model does not name its classes", u->model);
                    goto done;
                }
            o.class_labels = classes;
            o.n_class_labels = (size_t)info->classes;
        }
    }
    o.features = meta ? (const char *const *)e.features : fallback;
    o.n_features = meta ? e.nfeat : info->p;
    o.categorical = (const char *const *)e.cat_names;
    o.n_categorical = e.ncat;
    o.levels = e.levels;
    o.n_levels = e.ncat;
    o.drop_missing = u->drop_missing;
    if (sg_csv_read_file(ctx, u->data, &o, d) != SG_OK) {
        fail(cmd, "%s", sg_context_error(ctx));
        goto done;
    }
    if (sg_dataset_cols(*d) != info->p) {
        fail(cmd, "%s encodes to %zu feature columns; the model has %zu", u->data,
             sg_dataset_cols(*d), info->p);
        goto done;
    }
    for (size_t j = 0; j < info->p; j++) {
        const char *want = sg_mix_name(*m, SG_MIX_NAME_FEATURE, j);
        if (want && strcmp(want, sg_dataset_col_name(*d, j))) {
            fail(cmd, "feature column %zu is '%s' in %s but '%s' in the model", j + 1,
                 sg_dataset_col_name(*d, j), u->data, want);
            goto done;
        }
    }
    if (sg_dataset_dropped(*d))
        fprintf(stderr, "softgate %s: %zu records dropped for missing or malformed values (first on line %zu)\n",
                cmd, sg_dataset_dropped(*d), sg_dataset_first_dropped_line(*d));
    rc = 0;
done:
    free(classes);
    free(fallback);
    encoding_free(&e);
    return rc;
}

/* Predictions for the data set: out [n x width], gate [n x E]. */
static int predict_all(const char *cmd, sg_context *ctx, const sg_mix_model *m, const sg_mix_info *info,
                       const sg_dataset *d, double **out, size_t *width, double **gate) {
    size_t n = sg_dataset_rows(d), E = (size_t)info->experts;
    *width = info->family == SG_MIX_MULTINOMIAL ? (size_t)info->classes : 1;
    *out = malloc(n * *width * sizeof **out);
    *gate = malloc(n * E * sizeof **gate);
    if (!*out || !*gate) return fail(cmd, "out of memory");
    if (sg_mix_predict(ctx, m, n, sg_dataset_x(d), info->p, *out, *width, *gate, E) != SG_OK)
        return fail(cmd, "%s", sg_context_error(ctx));
    return 0;
}

static size_t argmax(const double *v, size_t n) {
    size_t b = 0;
    for (size_t k = 1; k < n; k++)
        if (v[k] > v[b]) b = k;
    return b;
}

int sg_cli_predict(int argc, char **argv) {
    const char *cmd = "predict";
    use_args u;
    int rc = parse_use_args(cmd, argc, argv, &u);
    if (rc) return rc < 0 ? 0 : rc;
    if (u.out && (!strcmp(u.out, u.data) || !strcmp(u.out, u.model)))
        return fail(cmd, "-o %s would replace an input file", u.out), 2;
    if (refuse_existing(cmd, u.out, u.force)) return 1;
    sg_context *ctx = NULL;
    if (sg_context_create(&ctx, u.threads) != SG_OK) return fail(cmd, "cannot create a context");
    sg_mix_model *m = NULL;
    sg_mix_info info;
    sg_dataset *d = NULL;
    double *out = NULL, *gate = NULL;
    size_t width = 0;
    FILE *f = NULL;
    rc = 1;
    if (load_for_use(cmd, &u, 0, ctx, &m, &info, &d)) goto done;
    if (predict_all(cmd, ctx, m, &info, d, &out, &width, &gate)) goto done;
    f = u.out ? open_out(cmd, u.out, u.force) : stdout;
    if (!f) goto done;
    size_t n = sg_dataset_rows(d), E = (size_t)info.experts;
    fputs("line", f);
    if (info.family == SG_MIX_MULTINOMIAL) {
        fputs(",class", f);
        for (size_t c = 0; c < width; c++) {
            char name[300];
            snprintf(name, sizeof name, "prob_%s", sg_mix_name(m, SG_MIX_NAME_CLASS, c));
            fputc(',', f);
            csv_field(f, name);
        }
    } else {
        fputs(",mean", f);
    }
    for (size_t k = 0; k < E; k++) fprintf(f, ",gate_%zu", k + 1);
    fputs("\n", f);
    for (size_t i = 0; i < n; i++) {
        fprintf(f, "%zu", sg_dataset_line(d, i));
        if (info.family == SG_MIX_MULTINOMIAL) {
            fputc(',', f);
            csv_field(f, sg_mix_name(m, SG_MIX_NAME_CLASS, argmax(out + i * width, width)));
        }
        for (size_t c = 0; c < width; c++) fprintf(f, ",%.17g", out[i * width + c]);
        for (size_t k = 0; k < E; k++) fprintf(f, ",%.17g", gate[i * E + k]);
        fputc('\n', f);
    }
    rc = u.out ? close_out(cmd, f, u.out) : (fflush(stdout) || ferror(stdout));
    if (!rc && u.out) fprintf(stderr, "softgate predict: %zu predictions written to %s\n", n, u.out);
done:
    free(out);
    free(gate);
    sg_dataset_destroy(d);
    sg_mix_model_free(m);
    sg_context_destroy(ctx);
    return rc;
}

int sg_cli_eval(int argc, char **argv) {
    const char *cmd = "eval";
    use_args u;
    int rc = parse_use_args(cmd, argc, argv, &u);
    if (rc) return rc < 0 ? 0 : rc;
    sg_context *ctx = NULL;
    if (sg_context_create(&ctx, u.threads) != SG_OK) return fail(cmd, "cannot create a context");
    sg_mix_model *m = NULL;
    sg_mix_info info;
    sg_dataset *d = NULL;
    double *out = NULL, *gate = NULL, ll = 0;
    size_t width = 0;
    rc = 1;
    if (load_for_use(cmd, &u, 1, ctx, &m, &info, &d)) goto done;
    if (predict_all(cmd, ctx, m, &info, d, &out, &width, &gate)) goto done;
    size_t n = sg_dataset_rows(d);
    if (sg_mix_evaluate(ctx, m, n, sg_dataset_x(d), info.p, sg_dataset_y(d), sg_dataset_labels(d), &ll,
                        NULL, 0) != SG_OK) {
        fail(cmd, "%s", sg_context_error(ctx));
        goto done;
    }
    double score = 0;
    const char *what;
    if (info.family == SG_MIX_MULTINOMIAL) {
        what = "accuracy";
        const int32_t *l = sg_dataset_labels(d);
        for (size_t i = 0; i < n; i++) score += (int32_t)argmax(out + i * width, width) == l[i];
        score /= (double)n;
    } else {
        what = "rmse";
        const double *y = sg_dataset_y(d);
        for (size_t i = 0; i < n; i++) score += (y[i] - out[i]) * (y[i] - out[i]);
        score = sqrt(score / (double)n);
    }
    if (u.json) {
        printf("{\"command\":\"eval\",\"model\":");
        json_string(stdout, u.model);
        printf(",\"data\":");
        json_string(stdout, u.data);
        printf(",\"n\":%zu,\"dropped\":%zu,\"loglik\":", n, sg_dataset_dropped(d));
        json_num(stdout, ll);
        printf(",\"loglik_per_obs\":");
        json_num(stdout, ll / (double)n);
        printf(",\"%s\":", what);
        json_num(stdout, score);
        printf("}\n");
    } else {
        printf("softgate eval: %s on %s (n = %zu)\n", u.model, u.data, n);
        printf("log-likelihood %.6f (%.6f per observation)\n", ll, ll / (double)n);
        if (info.family == SG_MIX_MULTINOMIAL) printf("accuracy %.6f\n", score);
        else printf("RMSE %.6g (of the predicted mean)\n", score);
    }
    rc = 0;
done:
    free(out);
    free(gate);
    sg_dataset_destroy(d);
    sg_mix_model_free(m);
    sg_context_destroy(ctx);
    return rc;
}

/* ------------------------------------------------------------------ */
/* demo                                                                */
/* ------------------------------------------------------------------ */

/* Whether path is absent or an earlier softgate plot (safe to replace). */
static int is_replaceable_plot(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return errno == ENOENT;
    char head[160] = {0};
    size_t got = fread(head, 1, sizeof head - 1, f);
    fclose(f);
    head[got] = '\0';
    return strstr(head, PLOT_MARKER) != NULL;
}

int sg_cli_demo(int argc, char **argv) {
    fit_args a;
    fit_args_init(&a, "demo");
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--print-data")) {
            fwrite(sg_demo_csv, 1, sg_demo_csv_size, stdout);
            return 0;
        }
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: softgate demo [--plot PATH] [-o MODEL.json] [--force] [--json] "
                   "[--experts E|A..B] [--restarts N] [--seed S] [--print-data]\n"
                   "Fits a Gaussian mixture of experts with a softmax gate to the Old Faithful data\n"
                   "(eruption duration against waiting time; data/README.md) and plots it to\n"
                   "./softgate-demo.svg (replacing only an earlier softgate plot there).\n");
            return 0;
        }
    }
    a.spec.restarts = 10;
    int rc = parse_fit_args(argc, argv, &a);
    if (rc) return rc < 0 ? 0 : rc;
    if (a.data || a.response || a.features || a.categorical || a.init_column)
        return fail("demo", "the demo uses its built-in data; use softgate fit for your own"), 2;
    a.data = "built-in data/faithful.csv";
    a.response = "eruptions";
    static char waiting[] = "waiting";
    static char *feats[] = {waiting, NULL};
    a.features = feats;
    a.nfeat = 1;
    int replace = 0;
    if (!a.plot) {
        a.plot = "softgate-demo.svg";
        if (!a.force && !is_replaceable_plot(a.plot))
            return fail("demo", "./%s exists and is not a softgate plot; not overwriting it "
                                "(--plot PATH or --force)", a.plot);
        replace = 1;
    }
    rc = run_fit(&a, sg_demo_csv, sg_demo_csv_size,
                 "Old Faithful: eruption duration vs waiting time (softgate demo)", replace);
    a.features = NULL;
    return rc;
}

/*
 * csv.c - the CSV reader behind sg_csv_read_file / sg_csv_read_buffer:
 * an RFC 4180 tokenizer (quotes, doubled quotes, CRLF), the mapping of the
 * header to the columns used, numeric parsing, class labels and one-hot
 * encoding of categorical columns, into an sg_dataset. The rules are the
 * contract in include/softgate/io.h. Model files and plotting do not belong
 * here.
 *
 * One pass over the records stores the used values per column (doubles, or
 * codes into a string table per categorical column); levels are sorted and
 * the design matrix built once the kept records are known, so that a level
 * seen only in dropped records never becomes a column.
 */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/context.h"

/* ------------------------------------------------------------------ */
/* String table: unique strings with an index, hashed.                 */
/* ------------------------------------------------------------------ */

typedef struct strtab {
    char **s;
    size_t n, cap;
    uint32_t *slot; /* index + 1, 0 = empty; size nslot (power of two) */
    size_t nslot;
} strtab;

static uint64_t str_hash(const char *s) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static void strtab_free(strtab *t) {
    for (size_t i = 0; i < t->n; i++) free(t->s[i]);
    free(t->s);
    free(t->slot);
    memset(t, 0, sizeof *t);
}

/* Index of s, or -1. */
static long strtab_find(const strtab *t, const char *s) {
    if (!t->nslot) return -1;
    size_t m = t->nslot - 1;
    for (size_t i = (size_t)str_hash(s) & m;; i = (i + 1) & m) {
        if (!t->slot[i]) return -1;
        if (strcmp(t->s[t->slot[i] - 1], s) == 0) return (long)(t->slot[i] - 1);
    }
}

static int strtab_rehash(strtab *t, size_t nslot) {
    uint32_t *slot = calloc(nslot, sizeof *slot);
    if (!slot) return -1;
    for (size_t k = 0; k < t->n; k++) {
        size_t i = (size_t)str_hash(t->s[k]) & (nslot - 1);
        while (slot[i]) i = (i + 1) & (nslot - 1);
        slot[i] = (uint32_t)(k + 1);
    }
    free(t->slot);
    t->slot = slot;
    t->nslot = nslot;
    return 0;
}

/* Index of s, inserted if new; -1 when out of memory. */
static long strtab_add(strtab *t, const char *s) {
    long k = strtab_find(t, s);
    if (k >= 0) return k;
    if (2 * (t->n + 1) > t->nslot && strtab_rehash(t, t->nslot ? 2 * t->nslot : 16)) return -1;
    if (t->n == t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 8;
        char **ns = realloc(t->s, cap * sizeof *ns);
        if (!ns) return -1;
        t->s = ns;
        t->cap = cap;
    }
    size_t len = strlen(s);
    char *copy = malloc(len + 1);
    if (!copy) return -1;
    memcpy(copy, s, len + 1);
    t->s[t->n] = copy;
    size_t i = (size_t)str_hash(s) & (t->nslot - 1);
    while (t->slot[i]) i = (i + 1) & (t->nslot - 1);
    t->slot[i] = (uint32_t)(t->n + 1);
    return (long)t->n++;
}

/* ------------------------------------------------------------------ */
/* Tokenizer                                                           */
/* ------------------------------------------------------------------ */

typedef struct lexer {
    const char *p, *end;
    size_t line; /* physical line of p, 1-based */
    char delim;
    char *arena; /* the current record's fields, NUL-terminated */
    size_t arena_len, arena_cap;
    size_t *off;   /* field k starts at arena + off[k] */
    size_t *fline; /* line where field k starts */
    size_t nf, fcap;
} lexer;

static int arena_put(lexer *lx, char c) {
    if (lx->arena_len == lx->arena_cap) {
        size_t cap = lx->arena_cap ? 2 * lx->arena_cap : 256;
        char *a = realloc(lx->arena, cap);
        if (!a) return -1;
        lx->arena = a;
        lx->arena_cap = cap;
    }
    lx->arena[lx->arena_len++] = c;
    return 0;
}

static int field_begin(lexer *lx) {
    if (lx->nf == lx->fcap) {
        size_t cap = lx->fcap ? 2 * lx->fcap : 16;
        size_t *o = realloc(lx->off, cap * sizeof *o);
        if (!o) return -1;
        lx->off = o;
        size_t *l = realloc(lx->fline, cap * sizeof *l);
        if (!l) return -1;
        lx->fline = l;
        lx->fcap = cap;
    }
    lx->off[lx->nf] = lx->arena_len;
    lx->fline[lx->nf++] = lx->line;
    return 0;
}

static const char *lx_field(const lexer *lx, size_t k) { return lx->arena + lx->off[k]; }

static int is_blank(char c) { return c == ' ' || c == '\t'; }

/* Whether only blank lines remain. */
static int only_blank_left(const lexer *lx) {
    for (const char *q = lx->p; q < lx->end; q++)
        if (*q != '\r' && *q != '\n' && !is_blank(*q)) return 0;
    return 1;
}

/* Consumes one line break at p (CRLF, LF or CR). */
static void eat_eol(lexer *lx) {
    if (lx->p < lx->end && *lx->p == '\r') lx->p++;
    if (lx->p < lx->end && *lx->p == '\n') lx->p++;
    lx->line++;
}

#define OOM(ctx) sg_fail(ctx, SG_ERR_NO_MEMORY, "csv: out of memory")

/* A quoted field; p is just past the opening quote. */
static sg_status lex_quoted(sg_context *ctx, lexer *lx, size_t col, size_t start_line) {
    for (;;) {
        if (lx->p == lx->end)
            return sg_fail(ctx, SG_ERR_ARGUMENT,
                           "line %zu, column %zu: quoted field never closed", start_line, col);
        char c = *lx->p;
        if (c == '"') {
            if (lx->p + 1 < lx->end && lx->p[1] == '"') {
                if (arena_put(lx, '"')) return OOM(ctx);
                lx->p += 2;
                continue;
            }
            lx->p++;
            break;
        }
        if (c == '\n' || (c == '\r' && (lx->p + 1 == lx->end || lx->p[1] != '\n'))) lx->line++;
        if (arena_put(lx, c)) return OOM(ctx);
        lx->p++;
    }
    while (lx->p < lx->end && is_blank(*lx->p)) lx->p++;
    if (lx->p < lx->end && *lx->p != lx->delim && *lx->p != '\r' && *lx->p != '\n')
        return sg_fail(ctx, SG_ERR_ARGUMENT, "line %zu, column %zu: text after a closing quote",
                       lx->line, col);
    return SG_OK;
}

/*
 * Reads one record into lx's fields. *eof is set at the end of input
 * (or when only blank lines remain).
 */
static sg_status lex_record(sg_context *ctx, lexer *lx, int *eof) {
    lx->nf = 0;
    lx->arena_len = 0;
    *eof = 0;
    if (only_blank_left(lx)) {
        *eof = 1;
        return SG_OK;
    }
    for (;;) {
        size_t col = lx->nf + 1;
        if (col > SG_CSV_MAX_COLUMNS)
            return sg_fail(ctx, SG_ERR_ARGUMENT, "line %zu: more than %d fields", lx->line,
                           SG_CSV_MAX_COLUMNS);
        if (field_begin(lx)) return OOM(ctx);
        while (lx->p < lx->end && is_blank(*lx->p)) lx->p++;
        if (lx->p < lx->end && *lx->p == '"') {
            lx->p++;
            sg_status st = lex_quoted(ctx, lx, col, lx->line);
            if (st) return st;
        } else {
            const char *s = lx->p;
            while (lx->p < lx->end && *lx->p != lx->delim && *lx->p != '\r' && *lx->p != '\n') {
                if (*lx->p == '"')
                    return sg_fail(ctx, SG_ERR_ARGUMENT,
                                   "line %zu, column %zu: quote inside an unquoted field "
                                   "(quote the whole field and double the quote)",
                                   lx->line, col);
                lx->p++;
            }
            const char *e = lx->p;
            while (e > s && is_blank(e[-1])) e--;
            for (const char *q = s; q < e; q++)
                if (arena_put(lx, *q)) return OOM(ctx);
        }
        if (arena_put(lx, '\0')) return OOM(ctx);
        if (lx->p < lx->end && *lx->p == lx->delim) {
            lx->p++;
            continue;
        }
        eat_eol(lx);
        return SG_OK;
    }
}

static void lexer_free(lexer *lx) {
    free(lx->arena);
    free(lx->off);
    free(lx->fline);
}

/* ------------------------------------------------------------------ */
/* Values                                                              */
/* ------------------------------------------------------------------ */

static int ieq(const char *a, const char *b) {
    for (; *a && *b; a++, b++)
        if (tolower((unsigned char)*a) != tolower((unsigned char)*b)) return 0;
    return *a == *b;
}

static int is_missing(const char *s) { return !*s || ieq(s, "NA") || ieq(s, "NaN"); }

/* Plain decimals with at most 15 significant digits and a decimal
 * exponent within +-22 (what R's write.csv and most writers produce):
 * the digits are an exact double, and so is the power of ten, so one
 * multiplication or division is correctly rounded, the value strtod gives
 * (Clinger's fast path). Returns 0 for anything else (strtod decides). */
static int parse_decimal_fast(const char *s, double *v) {
    static const double p10[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                   1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                   1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
    int neg = 0, digits = 0, sig = 0, frac = 0, ex = 0;
    uint64_t mant = 0;
    if (*s == '-' || *s == '+') neg = *s++ == '-';
    for (; *s >= '0' && *s <= '9'; s++, digits++)
        if (mant || *s != '0') mant = mant * 10 + (uint64_t)(*s - '0'), sig++;
    if (*s == '.')
        for (s++; *s >= '0' && *s <= '9'; s++, digits++, frac++)
            if (mant || *s != '0') mant = mant * 10 + (uint64_t)(*s - '0'), sig++;
    if (!digits || sig > 15) return 0;
    if (*s == 'e' || *s == 'E') {
        int eneg = 0, ed = 0;
        s++;
        if (*s == '-' || *s == '+') eneg = *s++ == '-';
        for (; *s >= '0' && *s <= '9' && ed < 4; s++, ed++) ex = ex * 10 + (*s - '0');
        if (!ed) return 0;
        if (eneg) ex = -ex;
    }
    if (*s) return 0;
    ex -= frac;
    if (ex < -22 || ex > 22) return 0;
    double d = (double)mant;
    d = ex < 0 ? d / p10[-ex] : d * p10[ex];
    *v = neg ? -d : d;
    return 1;
}

/* Parses a whole field as a finite double. */
static int parse_number(const char *s, double *v) {
    if (parse_decimal_fast(s, v)) return 1;
    char *e;
    errno = 0;
    double d = strtod(s, &e);
    if (e == s || *e || !isfinite(d)) return 0;
    /* strtod's ERANGE on underflow gives a tiny or zero value: accept it. */
    *v = d;
    return 1;
}

/* A value for a message: quoted, cut at 32 bytes. */
static const char *show(const char *s, char buf[48]) {
    size_t n = strlen(s);
    if (n <= 32) snprintf(buf, 48, "'%s'", s);
    else snprintf(buf, 48, "'%.32s...'", s);
    return buf;
}

/* ------------------------------------------------------------------ */
/* The data set                                                        */
/* ------------------------------------------------------------------ */

typedef struct cat_col {
    char *name;
    char **levels; /* levels[0] is the reference */
    size_t nlevels;
} cat_col;

struct sg_dataset {
    size_t n, p;
    double *x;
    char **col_names;
    char **features; /* raw feature columns */
    size_t nfeatures;
    double *y;
    int32_t *labels;
    char **classes;
    size_t nclasses;
    size_t *lines;
    size_t dropped, first_dropped_line;
    cat_col *cats;
    size_t ncats;
};

static void free_strings(char **s, size_t n) {
    if (!s) return;
    for (size_t i = 0; i < n; i++) free(s[i]);
    free(s);
}

void sg_dataset_destroy(sg_dataset *d) {
    if (!d) return;
    free(d->x);
    free_strings(d->col_names, d->p);
    free_strings(d->features, d->nfeatures);
    free(d->y);
    free(d->labels);
    free_strings(d->classes, d->nclasses);
    free(d->lines);
    for (size_t k = 0; k < d->ncats; k++) {
        free(d->cats[k].name);
        free_strings(d->cats[k].levels, d->cats[k].nlevels);
    }
    free(d->cats);
    free(d);
}

size_t sg_dataset_rows(const sg_dataset *d) { return d ? d->n : 0; }
size_t sg_dataset_cols(const sg_dataset *d) { return d ? d->p : 0; }
const double *sg_dataset_x(const sg_dataset *d) { return d ? d->x : NULL; }
const char *sg_dataset_col_name(const sg_dataset *d, size_t j) {
    return d && j < d->p ? d->col_names[j] : NULL;
}
size_t sg_dataset_feature_count(const sg_dataset *d) { return d ? d->nfeatures : 0; }
const char *sg_dataset_feature_name(const sg_dataset *d, size_t i) {
    return d && i < d->nfeatures ? d->features[i] : NULL;
}
const double *sg_dataset_y(const sg_dataset *d) { return d ? d->y : NULL; }
const int32_t *sg_dataset_labels(const sg_dataset *d) { return d ? d->labels : NULL; }
size_t sg_dataset_classes(const sg_dataset *d) { return d ? d->nclasses : 0; }
const char *sg_dataset_class_name(const sg_dataset *d, size_t c) {
    return d && c < d->nclasses ? d->classes[c] : NULL;
}
size_t sg_dataset_line(const sg_dataset *d, size_t i) { return d && i < d->n ? d->lines[i] : 0; }
size_t sg_dataset_dropped(const sg_dataset *d) { return d ? d->dropped : 0; }
size_t sg_dataset_first_dropped_line(const sg_dataset *d) { return d ? d->first_dropped_line : 0; }
size_t sg_dataset_categorical_count(const sg_dataset *d) { return d ? d->ncats : 0; }
const char *sg_dataset_categorical_name(const sg_dataset *d, size_t k) {
    return d && k < d->ncats ? d->cats[k].name : NULL;
}
size_t sg_dataset_level_count(const sg_dataset *d, size_t k) {
    return d && k < d->ncats ? d->cats[k].nlevels : 0;
}
const char *sg_dataset_level_name(const sg_dataset *d, size_t k, size_t l) {
    return d && k < d->ncats && l < d->cats[k].nlevels ? d->cats[k].levels[l] : NULL;
}

sg_csv_options sg_csv_options_default(void) {
    sg_csv_options o;
    memset(&o, 0, sizeof o);
    return o;
}

/* ------------------------------------------------------------------ */
/* The reader                                                          */
/* ------------------------------------------------------------------ */

enum { USE_NUM, USE_CAT, USE_LABEL };

/* A used column: a feature or the response. */
typedef struct used_col {
    size_t col;   /* 0-based column in the file */
    int kind;     /* USE_NUM / USE_CAT / USE_LABEL */
    int fixed;    /* levels given by the caller: the table is closed */
    strtab tab;   /* levels (USE_CAT, USE_LABEL) */
    double *num;  /* per record (USE_NUM) */
    int32_t *code;
    size_t n_ok, n_bad;
    size_t bad_line; /* first malformed value (for the non-numeric message) */
    char bad_value[48];
    /* After the pass: level order. map[code] = new index or -1 (unused). */
    long *map;
    size_t nlev;
} used_col;

typedef struct reader {
    sg_context *ctx;
    const sg_csv_options *o;
    char **header;
    size_t ncol;
    strtab names;
    used_col *use; /* features first, then the response (if any) */
    size_t nuse, nfeat;
    size_t nrec, cap;
    size_t *lines;
    uint8_t *bad;
    /* The first bad value, reported when records are not dropped. */
    char err[256];
    size_t err_line;
} reader;

static void reader_free(reader *r) {
    free_strings(r->header, r->ncol);
    strtab_free(&r->names);
    for (size_t u = 0; u < r->nuse; u++) {
        strtab_free(&r->use[u].tab);
        free(r->use[u].num);
        free(r->use[u].code);
        free(r->use[u].map);
    }
    free(r->use);
    free(r->lines);
    free(r->bad);
}

static long header_col(reader *r, const char *name) { return strtab_find(&r->names, name); }

static int in_list(const char *const *list, size_t n, const char *s) {
    for (size_t i = 0; i < n; i++)
        if (list[i] && strcmp(list[i], s) == 0) return 1;
    return 0;
}

static sg_status check_options(sg_context *ctx, const sg_csv_options *o) {
    if (o->delimiter == '"' || o->delimiter == '\r' || o->delimiter == '\n')
        return sg_fail(ctx, SG_ERR_ARGUMENT, "csv: delimiter cannot be a quote or a line break");
    if ((o->n_features && !o->features) || (o->n_categorical && !o->categorical) ||
        (o->n_levels && !o->levels) || (o->n_class_labels && !o->class_labels))
        return sg_fail(ctx, SG_ERR_ARGUMENT, "csv: a list with a nonzero count is NULL");
    if (o->response_kind != SG_CSV_RESPONSE_NUMERIC && o->response_kind != SG_CSV_RESPONSE_LABELS)
        return sg_fail(ctx, SG_ERR_ARGUMENT, "csv: response_kind is %d, not numeric (0) or labels (1)",
                       (int)o->response_kind);
    if (o->n_class_labels > SG_CSV_MAX_LEVELS || o->n_features > SG_CSV_MAX_COLUMNS)
        return sg_fail(ctx, SG_ERR_ARGUMENT, "csv: too many class labels or features");
    for (size_t i = 0; i < o->n_features; i++)
        if (!o->features[i]) return sg_fail(ctx, SG_ERR_ARGUMENT, "csv: features[%zu] is NULL", i);
    for (size_t i = 0; i < o->n_categorical; i++)
        if (!o->categorical[i])
            return sg_fail(ctx, SG_ERR_ARGUMENT, "csv: categorical[%zu] is NULL", i);
    return SG_OK;
}

/* Fills a closed level table from a caller's list (duplicates are errors). */
static sg_status fixed_table(sg_context *ctx, strtab *t, const char *const *names, size_t n,
                             const char *what) {
    for (size_t i = 0; i < n; i++) {
        if (!names[i]) return sg_fail(ctx, SG_ERR_ARGUMENT, "csv: %s level %zu is NULL", what, i);
        if (strtab_find(t, names[i]) >= 0)
            return sg_fail(ctx, SG_ERR_ARGUMENT, "csv: %s level '%s' given twice", what, names[i]);
        if (strtab_add(t, names[i]) < 0) return OOM(ctx);
    }
    return SG_OK;
}

/* Header names, unique; the used columns from the options. */
static sg_status setup_columns(reader *r, lexer *lx) {
    sg_context *ctx = r->ctx;
    const sg_csv_options *o = r->o;
    r->ncol = lx->nf;
    r->header = calloc(r->ncol, sizeof *r->header);
    if (!r->header) return OOM(ctx);
    for (size_t k = 0; k < r->ncol; k++) {
        const char *name = lx_field(lx, k);
        if (strtab_find(&r->names, name) >= 0)
            return sg_fail(ctx, SG_ERR_ARGUMENT, "line 1: column name '%s' appears twice (columns %zu and %zu)",
                           name, (size_t)strtab_find(&r->names, name) + 1, k + 1);
        if (strtab_add(&r->names, name) < 0 || !(r->header[k] = strdup(name))) return OOM(ctx);
    }
    long resp = -1;
    if (o->response) {
        resp = header_col(r, o->response);
        if (resp < 0)
            return sg_fail(ctx, SG_ERR_ARGUMENT, "response column '%s' is not in the header",
                           o->response);
    }
    size_t nfeat = o->features ? o->n_features : r->ncol - (resp >= 0);
    r->use = calloc(nfeat + 1, sizeof *r->use);
    if (!r->use) return OOM(ctx);
    for (size_t i = 0, k = 0; i < nfeat; i++) {
        long c;
        if (o->features) {
            c = header_col(r, o->features[i]);
            if (c < 0)
                return sg_fail(ctx, SG_ERR_ARGUMENT, "feature column '%s' is not in the header",
                               o->features[i]);
            if (c == resp)
                return sg_fail(ctx, SG_ERR_ARGUMENT, "column '%s' is the response; it cannot be a feature",
                               o->features[i]);
            for (size_t j = 0; j < i; j++)
                if (r->use[j].col == (size_t)c)
                    return sg_fail(ctx, SG_ERR_ARGUMENT, "feature column '%s' is named twice",
                                   o->features[i]);
        } else {
            if ((long)k == resp) k++;
            c = (long)k++;
        }
        used_col *u = &r->use[r->nuse++];
        u->col = (size_t)c;
        u->kind = in_list(o->categorical, o->n_categorical, r->header[c]) ? USE_CAT : USE_NUM;
    }
    r->nfeat = r->nuse;
    for (size_t i = 0; i < o->n_categorical; i++) {
        long c = header_col(r, o->categorical[i]);
        if (c < 0)
            return sg_fail(ctx, SG_ERR_ARGUMENT, "categorical column '%s' is not in the header",
                           o->categorical[i]);
        size_t u = 0;
        while (u < r->nfeat && r->use[u].col != (size_t)c) u++;
        if (u == r->nfeat)
            return sg_fail(ctx, SG_ERR_ARGUMENT, "categorical column '%s' is not a feature",
                           o->categorical[i]);
    }
    for (size_t i = 0; i < o->n_levels; i++) {
        const sg_csv_levels *lv = &o->levels[i];
        long c = lv->column ? header_col(r, lv->column) : -1;
        size_t u = 0;
        while (c >= 0 && u < r->nfeat && r->use[u].col != (size_t)c) u++;
        if (c < 0 || u == r->nfeat || r->use[u].kind != USE_CAT)
            return sg_fail(ctx, SG_ERR_ARGUMENT, "levels given for '%s', which is not a categorical feature",
                           lv->column ? lv->column : "(NULL)");
        if (lv->count < 1 || lv->count > SG_CSV_MAX_LEVELS || !lv->names)
            return sg_fail(ctx, SG_ERR_ARGUMENT, "levels of '%s': count %zu (1 to %d names needed)",
                           lv->column, lv->count, SG_CSV_MAX_LEVELS);
        if (r->use[u].fixed)
            return sg_fail(ctx, SG_ERR_ARGUMENT, "levels of '%s' given twice", lv->column);
        sg_status st = fixed_table(ctx, &r->use[u].tab, lv->names, lv->count, lv->column);
        if (st) return st;
        r->use[u].fixed = 1;
    }
    if (resp >= 0) {
        used_col *u = &r->use[r->nuse++];
        u->col = (size_t)resp;
        u->kind = o->response_kind == SG_CSV_RESPONSE_LABELS ? USE_LABEL : USE_NUM;
        if (u->kind == USE_LABEL && o->n_class_labels) {
            sg_status st = fixed_table(ctx, &u->tab, o->class_labels, o->n_class_labels, "class");
            if (st) return st;
            u->fixed = 1;
        }
    }
    return SG_OK;
}

static sg_status grow_records(reader *r) {
    if (r->nrec < r->cap) return SG_OK;
    size_t cap = r->cap ? 2 * r->cap : 1024;
    size_t *l = realloc(r->lines, cap * sizeof *l);
    if (!l) return OOM(r->ctx);
    r->lines = l;
    uint8_t *b = realloc(r->bad, cap);
    if (!b) return OOM(r->ctx);
    r->bad = b;
    for (size_t u = 0; u < r->nuse; u++) {
        used_col *c = &r->use[u];
        if (c->kind == USE_NUM) {
            double *v = realloc(c->num, cap * sizeof *v);
            if (!v) return OOM(r->ctx);
            c->num = v;
        } else {
            int32_t *v = realloc(c->code, cap * sizeof *v);
            if (!v) return OOM(r->ctx);
            c->code = v;
        }
    }
    r->cap = cap;
    return SG_OK;
}

/* Marks record i bad; keeps the first message for the no-drop error. */
static void mark_bad(reader *r, size_t i, size_t line, const used_col *c, const char *fmt,
                     const char *value) {
    r->bad[i] = 1;
    if (r->err_line) return;
    char v[48], what[160];
    snprintf(what, sizeof what, fmt, show(value, v));
    snprintf(r->err, sizeof r->err, "line %zu, column %zu ('%s'): %s", line, c->col + 1,
             r->header[c->col], what);
    r->err_line = line;
}

static sg_status take_value(reader *r, lexer *lx, size_t i, used_col *c) {
    const char *s = lx_field(lx, c->col);
    size_t line = lx->fline[c->col];
    if (is_missing(s)) {
        mark_bad(r, i, line, c, "missing value %s (drop_missing / --drop-missing drops such records)", s);
        if (c->kind == USE_NUM) c->num[i] = 0;
        else c->code[i] = -1;
        return SG_OK;
    }
    if (c->kind == USE_NUM) {
        if (parse_number(s, &c->num[i])) {
            c->n_ok++;
            return SG_OK;
        }
        c->num[i] = 0;
        if (!c->n_bad++) {
            c->bad_line = line;
            show(s, c->bad_value);
        }
        mark_bad(r, i, line, c, "%s is not a finite number", s);
        return SG_OK;
    }
    long k = c->fixed ? strtab_find(&c->tab, s) : strtab_add(&c->tab, s);
    if (k < 0 && !c->fixed) return OOM(r->ctx);
    if (k < 0) {
        mark_bad(r, i, line, c, c->kind == USE_LABEL ? "class %s is not one of the model's classes"
                                                     : "level %s is not one of the model's levels", s);
    } else if (!c->fixed && c->tab.n > SG_CSV_MAX_LEVELS) {
        return sg_fail(r->ctx, SG_ERR_ARGUMENT, "column '%s' has more than %d distinct values",
                       r->header[c->col], SG_CSV_MAX_LEVELS);
    }
    c->code[i] = (int32_t)k;
    return SG_OK;
}

static sg_status read_records(reader *r, lexer *lx) {
    for (;;) {
        int eof;
        sg_status st = lex_record(r->ctx, lx, &eof);
        if (st || eof) return st;
        size_t line = lx->fline[0];
        if (lx->nf != r->ncol)
            return sg_fail(r->ctx, SG_ERR_ARGUMENT, "line %zu: %zu field%s, the header has %zu",
                           line, lx->nf, lx->nf == 1 ? "" : "s", r->ncol);
        if ((st = grow_records(r))) return st;
        size_t i = r->nrec++;
        r->lines[i] = line;
        r->bad[i] = 0;
        for (size_t u = 0; u < r->nuse; u++)
            if ((st = take_value(r, lx, i, &r->use[u]))) return st;
    }
}

/* Level order: by value when every level is a number (v then holds
 * it; otherwise v is 0 for all), ties and the rest by bytes. */
typedef struct level_key {
    const char *s;
    double v;
} level_key;

static int level_cmp(const void *a, const void *b) {
    const level_key *x = a, *y = b;
    if (x->v != y->v) return x->v < y->v ? -1 : 1;
    return strcmp(x->s, y->s);
}

/* Levels used by kept records, sorted (or the fixed order); fills map. */
static sg_status order_levels(reader *r, used_col *c, char ***out) {
    size_t n = c->tab.n;
    c->map = malloc((n ? n : 1) * sizeof *c->map);
    char **lv = malloc((n ? n : 1) * sizeof *lv);
    if (!c->map || !lv) {
        free(lv);
        return OOM(r->ctx);
    }
    size_t m = 0;
    if (c->fixed) {
        for (size_t k = 0; k < n; k++) c->map[k] = (long)k, lv[m++] = c->tab.s[k];
    } else {
        uint8_t *used = calloc(n ? n : 1, 1);
        level_key *key = malloc((n ? n : 1) * sizeof *key);
        if (!used || !key) {
            free(used);
            free(key);
            free(lv);
            return OOM(r->ctx);
        }
        for (size_t i = 0; i < r->nrec; i++)
            if (!r->bad[i]) used[c->code[i]] = 1;
        int numeric = 1;
        for (size_t k = 0; k < n; k++) {
            if (!used[k]) continue;
            key[m].s = c->tab.s[k];
            if (!parse_number(key[m].s, &key[m].v)) numeric = 0;
            m++;
        }
        for (size_t j = 0; j < m && !numeric; j++) key[j].v = 0;
        qsort(key, m, sizeof *key, level_cmp);
        for (size_t k = 0; k < n; k++) c->map[k] = -1;
        for (size_t j = 0; j < m; j++) {
            lv[j] = (char *)key[j].s;
            c->map[strtab_find(&c->tab, lv[j])] = (long)j;
        }
        free(used);
        free(key);
    }
    c->nlev = m;
    /* Copies, so that the data set owns its strings. */
    for (size_t j = 0; j < m; j++)
        if (!(lv[j] = strdup(lv[j]))) {
            free_strings(lv, j);
            return OOM(r->ctx);
        }
    *out = lv;
    return SG_OK;
}

static sg_status check_columns(reader *r) {
    for (size_t u = 0; u < r->nuse; u++) {
        const used_col *c = &r->use[u];
        if (c->kind == USE_NUM && c->n_bad && !c->n_ok)
            return sg_fail(r->ctx, SG_ERR_ARGUMENT,
                           "column '%s' is not numeric (line %zu: %s); declare it categorical "
                           "(--categorical)%s",
                           r->header[c->col], c->bad_line, c->bad_value,
                           u < r->nfeat ? "" : " or fit class labels");
    }
    if (r->err_line && !r->o->drop_missing) return sg_fail(r->ctx, SG_ERR_ARGUMENT, "%s", r->err);
    if (!r->nrec) return sg_fail(r->ctx, SG_ERR_ARGUMENT, "no data records after the header");
    return SG_OK;
}

static char *join_name(const char *a, const char *b) {
    size_t na = strlen(a), nb = strlen(b);
    char *s = malloc(na + nb + 2);
    if (!s) return NULL;
    memcpy(s, a, na);
    s[na] = '=';
    memcpy(s + na + 1, b, nb + 1);
    return s;
}

/* Builds the data set from the kept records. */
static sg_status build(reader *r, sg_dataset *d) {
    sg_context *ctx = r->ctx;
    size_t n = 0;
    for (size_t i = 0; i < r->nrec; i++) {
        if (!r->bad[i]) n++;
        else if (!d->dropped++) d->first_dropped_line = r->lines[i];
    }
    if (!n)
        return sg_fail(ctx, SG_ERR_ARGUMENT, "no record left: all %zu have missing or malformed values",
                       r->nrec);
    d->n = n;
    if (!(d->features = calloc(r->nfeat ? r->nfeat : 1, sizeof *d->features))) return OOM(ctx);
    for (size_t u = 0; u < r->nfeat; u++, d->nfeatures++)
        if (!(d->features[u] = strdup(r->header[r->use[u].col]))) return OOM(ctx);
    size_t p = 0;
    for (size_t u = 0; u < r->nfeat; u++) {
        used_col *c = &r->use[u];
        if (c->kind == USE_NUM) {
            p++;
            continue;
        }
        cat_col *cc = &d->cats[d->ncats++];
        if (!(cc->name = strdup(r->header[c->col]))) return OOM(ctx);
        sg_status st = order_levels(r, c, &cc->levels);
        if (st) return st;
        cc->nlevels = c->nlev;
        if (c->nlev < 2)
            return sg_fail(ctx, SG_ERR_ARGUMENT, "categorical column '%s' has a single level '%s'",
                           cc->name, cc->levels[0]);
        p += c->nlev - 1;
    }
    if (p && n > (size_t)-1 / sizeof(double) / p) return OOM(ctx);
    d->p = p;
    size_t np = n * p;
    d->x = malloc((np ? np : 1) * sizeof *d->x);
    d->col_names = calloc(p ? p : 1, sizeof *d->col_names);
    d->lines = malloc(n * sizeof *d->lines);
    if (!d->x || !d->col_names || !d->lines) return OOM(ctx);
    for (size_t u = 0, j = 0, k = 0; u < r->nfeat; u++) {
        used_col *c = &r->use[u];
        if (c->kind == USE_NUM) {
            if (!(d->col_names[j++] = strdup(r->header[c->col]))) return OOM(ctx);
            continue;
        }
        for (size_t l = 1; l < c->nlev; l++)
            if (!(d->col_names[j++] = join_name(d->cats[k].name, d->cats[k].levels[l])))
                return OOM(ctx);
        k++;
    }
    for (size_t i = 0, t = 0; i < r->nrec; i++) {
        if (r->bad[i]) continue;
        double *row = d->x + t * p;
        size_t j = 0;
        for (size_t u = 0; u < r->nfeat; u++) {
            used_col *c = &r->use[u];
            if (c->kind == USE_NUM) {
                row[j++] = c->num[i];
                continue;
            }
            long lev = c->map[c->code[i]];
            for (size_t l = 1; l < c->nlev; l++) row[j++] = (long)l == lev;
        }
        d->lines[t++] = r->lines[i];
    }
    if (r->nuse == r->nfeat) return SG_OK;
    used_col *c = &r->use[r->nfeat];
    if (c->kind == USE_NUM) {
        if (!(d->y = malloc(n * sizeof *d->y))) return OOM(ctx);
        for (size_t i = 0, t = 0; i < r->nrec; i++)
            if (!r->bad[i]) d->y[t++] = c->num[i];
        return SG_OK;
    }
    sg_status st = order_levels(r, c, &d->classes);
    if (st) return st;
    d->nclasses = c->nlev;
    if (!(d->labels = malloc(n * sizeof *d->labels))) return OOM(ctx);
    for (size_t i = 0, t = 0; i < r->nrec; i++)
        if (!r->bad[i]) d->labels[t++] = (int32_t)c->map[c->code[i]];
    return SG_OK;
}

sg_status sg_csv_read_buffer(sg_context *ctx, const char *data, size_t size,
                             const sg_csv_options *options, sg_dataset **out) {
    if (!ctx) return SG_ERR_ARGUMENT;
    sg_ok(ctx);
    if (!out) return sg_fail(ctx, SG_ERR_ARGUMENT, "csv: out is NULL");
    *out = NULL;
    if (!data && size) return sg_fail(ctx, SG_ERR_ARGUMENT, "csv: data is NULL");
    sg_csv_options def = sg_csv_options_default();
    const sg_csv_options *o = options ? options : &def;
    sg_status st = check_options(ctx, o);
    if (st) return st;
    size_t max = o->max_bytes ? o->max_bytes : SG_CSV_DEFAULT_MAX_BYTES;
    if (size > max)
        return sg_fail(ctx, SG_ERR_ARGUMENT, "csv: input of %zu bytes is over the limit of %zu",
                       size, max);
    lexer lx;
    memset(&lx, 0, sizeof lx);
    lx.p = data;
    lx.end = data + size;
    lx.line = 1;
    lx.delim = o->delimiter ? o->delimiter : ',';
    if (size >= 3 && memcmp(data, "\xEF\xBB\xBF", 3) == 0) lx.p += 3;
    reader r;
    memset(&r, 0, sizeof r);
    r.ctx = ctx;
    r.o = o;
    sg_dataset *d = NULL;
    int eof;
    if (!(st = lex_record(ctx, &lx, &eof)) && eof)
        st = sg_fail(ctx, SG_ERR_ARGUMENT, "csv: empty input (no header)");
    if (!st) st = setup_columns(&r, &lx);
    if (!st) st = read_records(&r, &lx);
    if (!st) st = check_columns(&r);
    if (!st && !(d = calloc(1, sizeof *d))) st = OOM(ctx);
    if (!st && !(d->cats = calloc(r.nfeat ? r.nfeat : 1, sizeof *d->cats))) st = OOM(ctx);
    if (!st) st = build(&r, d);
    reader_free(&r);
    lexer_free(&lx);
    if (st) {
        sg_dataset_destroy(d);
        return st;
    }
    *out = d;
    return SG_OK;
}

sg_status sg_csv_read_file(sg_context *ctx, const char *path, const sg_csv_options *options,
                           sg_dataset **out) {
    if (!ctx) return SG_ERR_ARGUMENT;
    sg_ok(ctx);
    if (!out) return sg_fail(ctx, SG_ERR_ARGUMENT, "csv: out is NULL");
    *out = NULL;
    if (!path) return sg_fail(ctx, SG_ERR_ARGUMENT, "csv: path is NULL");
    size_t max = options && options->max_bytes ? options->max_bytes : SG_CSV_DEFAULT_MAX_BYTES;
    FILE *f = fopen(path, "rb");
    if (!f) return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: %s", path, strerror(errno));
    /* Read in chunks (works for pipes too), refusing more than max. */
    size_t len = 0, cap = 1 << 16;
    char *buf = malloc(cap);
    sg_status st = buf ? SG_OK : OOM(ctx);
    while (!st) {
        if (len == cap) {
            size_t ncap = cap > max / 2 ? max + 1 : 2 * cap;
            char *nb = ncap > cap ? realloc(buf, ncap) : NULL;
            if (!nb) {
                st = ncap > cap ? OOM(ctx) : sg_fail(ctx, SG_ERR_ARGUMENT, "%s: over the limit of %zu bytes", path, max);
                break;
            }
            buf = nb;
            cap = ncap;
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (len > max) st = sg_fail(ctx, SG_ERR_ARGUMENT, "%s: over the limit of %zu bytes", path, max);
        else if (got == 0 && ferror(f)) st = sg_fail(ctx, SG_ERR_ARGUMENT, "%s: read error", path);
        else if (got == 0) break;
    }
    fclose(f);
    if (!st) {
        st = sg_csv_read_buffer(ctx, buf, len, options, out);
        /* Name the file in the message. */
        if (st) {
            char msg[sizeof ctx->error];
            snprintf(msg, sizeof msg, "%s", ctx->error);
            sg_fail(ctx, st, "%s: %s", path, msg);
        }
    }
    free(buf);
    return st;
}

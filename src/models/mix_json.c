/*
 * mix_json.c - the model file: versioned JSON written with 17 significant
 * digits (a loaded model predicts the same bits) and read back by a strict
 * parser that checks every field's presence, type, size, range and
 * finiteness, and the consistency of the derived fields, reporting the
 * first problem by name. Nothing else belongs here.
 *
 * Layout (version 1): format, version, family, gate, experts, features,
 * classes, groups, top_k, temperature, level_gates, center, scale,
 * expert_coef, sigma2, gate_coef, gate2_coef (the internal, standardized
 * parameters, docs/MIXTURE.md), raw (the raw-scale copies, checked against
 * the internal ones), fit (the summary), path, names.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models/mix_internal.h"

#define FORMAT_NAME "softgate-mixture"
#define FORMAT_VERSION 1

/* ---- writing ----------------------------------------------------------- */

static void w_str(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if (*c == '"' || *c == '\\') fprintf(f, "\\%c", *c);
        else if (*c < 0x20) fprintf(f, "\\u%04x", *c);
        else fputc(*c, f);
    }
    fputc('"', f);
}

static void w_vec(FILE *f, const double *v, size_t n) {
    fputc('[', f);
    for (size_t i = 0; i < n; i++) fprintf(f, "%s%.17g", i ? ", " : "", v[i]);
    fputc(']', f);
}

static void w_mat(FILE *f, const double *v, size_t rows, size_t cols) {
    fputc('[', f);
    for (size_t i = 0; i < rows; i++) {
        fputs(i ? ",\n    " : "\n    ", f);
        w_vec(f, v + i * cols, cols);
    }
    fputs(rows ? "\n  ]" : "]", f);
}

static void w_names(FILE *f, char **v, size_t n) {
    if (!v) {
        fputs("null", f);
        return;
    }
    fputc('[', f);
    for (size_t i = 0; i < n; i++) {
        if (i) fputs(", ", f);
        w_str(f, v[i]);
    }
    fputc(']', f);
}

static size_t beta_rows(const sg_mix_model *m) {
    return m->family == SG_MIX_MULTINOMIAL ? (size_t)m->E * (size_t)m->C : (size_t)m->E;
}

static void write_model(FILE *f, const sg_mix_model *m) {
    size_t q = m->q, E = (size_t)m->E;
    fprintf(f, "{\n  \"format\": \"%s\",\n  \"version\": %d,\n", FORMAT_NAME, FORMAT_VERSION);
    fprintf(f, "  \"family\": \"%s\",\n  \"gate\": \"%s\",\n", sg_mix_family_name(m->family),
            sg_mix_gate_name(m->gate));
    fprintf(f, "  \"experts\": %d,\n  \"features\": %zu,\n  \"classes\": %d,\n", m->E, m->p,
            m->family == SG_MIX_MULTINOMIAL ? m->C : 0);
    fprintf(f, "  \"groups\": %d,\n  \"top_k\": %d,\n  \"temperature\": %.17g,\n", m->G, m->K, m->T);
    fputs("  \"level_gates\": [", f);
    for (int l = 0; l < m->nlevels; l++)
        fprintf(f, "%s\"%s\"", l ? ", " : "", m->lev[l].laplace ? "laplace" : "softmax");
    fputs("],\n  \"center\": ", f);
    w_vec(f, m->center, m->p);
    fputs(",\n  \"scale\": ", f);
    w_vec(f, m->scale, m->p);
    fputs(",\n  \"expert_coef\": ", f);
    w_mat(f, m->beta, beta_rows(m), q);
    fputs(",\n  \"sigma2\": ", f);
    w_vec(f, m->sigma2, m->family == SG_MIX_GAUSSIAN ? E : 0);
    for (int l = 0; l < 2; l++) {
        fprintf(f, ",\n  \"%s\": ", l ? "gate2_coef" : "gate_coef");
        if (l < m->nlevels)
            w_mat(f, m->lev[l].w, (size_t)m->lev[l].m * m->lev[l].blocks, mix_level_cols(m, l));
        else
            fputs("[]", f);
    }
    fputs(",\n  \"raw\": {\n  \"expert_coef\": ", f);
    w_mat(f, m->raw_beta, beta_rows(m), q);
    fputs(",\n  \"sigma\": ", f);
    w_vec(f, m->raw_sigma, m->family == SG_MIX_GAUSSIAN ? E : 0);
    for (int l = 0; l < 2; l++) {
        fprintf(f, ",\n  \"%s\": ", l ? "gate2_coef" : "gate_coef");
        if (l < m->nlevels)
            w_mat(f, l ? m->raw_g1 : m->raw_g0, (size_t)m->lev[l].m * m->lev[l].blocks,
                  mix_level_cols(m, l));
        else
            fputs("[]", f);
    }
    fputs("},\n", f);
    fprintf(f,
            "  \"fit\": {\"n\": %zu, \"loglik\": %.17g, \"objective\": %.17g, \"df\": %.17g, "
            "\"aic\": %.17g, \"bic\": %.17g, \"icl\": %.17g, \"iterations\": %d, "
            "\"converged\": %s, \"best_restart\": %d, \"grad_norm\": %.17g, "
            "\"max_decrease\": %.17g, \"lambda\": %.17g},\n",
            m->n, m->loglik, m->objective, m->df, m->aic, m->bic, m->icl, m->iterations,
            m->converged ? "true" : "false", m->best_restart, m->grad_norm, m->max_decrease,
            m->lambda);
    fputs("  \"path\": ", f);
    w_mat(f, m->path, m->path_len, 4);
    fputs(",\n  \"names\": {\"response\": ", f);
    if (m->response) w_str(f, m->response);
    else fputs("null", f);
    fputs(", \"features\": ", f);
    w_names(f, m->features, m->p);
    fputs(", \"classes\": ", f);
    w_names(f, m->classes, m->family == SG_MIX_MULTINOMIAL ? (size_t)m->C : 0);
    fputs(", \"metadata\": ", f);
    if (m->metadata) w_str(f, m->metadata);
    else fputs("null", f);
    fputs("}\n}\n", f);
}

sg_status sg_mix_save_json_string(sg_context *ctx, const sg_mix_model *m, char **json) {
    const char *op = "sg_mix_save_json_string";
    sg_ok(ctx);
    if (!m || !json) return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: %s is NULL", op, m ? "json" : "model");
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return sg_fail(ctx, SG_ERR_NO_MEMORY, "%s: out of memory", op);
    write_model(f, m);
    if (fclose(f) != 0 || !buf) {
        free(buf);
        return sg_fail(ctx, SG_ERR_NO_MEMORY, "%s: out of memory", op);
    }
    *json = buf;
    return SG_OK;
}

sg_status sg_mix_save_json(sg_context *ctx, const sg_mix_model *m, const char *path) {
    const char *op = "sg_mix_save_json";
    sg_ok(ctx);
    if (!path) return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: path is NULL", op);
    char *s = NULL;
    sg_status st = sg_mix_save_json_string(ctx, m, &s);
    if (st != SG_OK) return st;
    FILE *f = fopen(path, "wb");
    if (!f) {
        int e = errno;
        free(s);
        return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: cannot open %s for writing: %s", op, path, strerror(e));
    }
    size_t len = strlen(s);
    int ok = fwrite(s, 1, len, f) == len;
    ok = (fclose(f) == 0) && ok;
    free(s);
    if (!ok) return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: writing %s failed", op, path);
    return SG_OK;
}

/* ---- a strict JSON parser ---------------------------------------------- */

typedef enum { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ } jtype;

typedef struct jv {
    jtype t;
    double num;
    char *str;       /* J_STR */
    struct jv *it;   /* J_ARR, J_OBJ: items */
    char **keys;     /* J_OBJ */
    size_t count;
} jv;

typedef struct jp {
    const char *s, *p;
    char err[160];
    int depth;
} jp;

static void jfree(jv *v) {
    if (!v) return;
    free(v->str);
    for (size_t i = 0; i < v->count; i++) {
        jfree(&v->it[i]);
        if (v->keys) free(v->keys[i]);
    }
    free(v->it), free(v->keys);
}

static int jerr(jp *p, const char *what) {
    if (!p->err[0])
        snprintf(p->err, sizeof p->err, "not valid JSON at byte %zu: %s", (size_t)(p->p - p->s), what);
    return 0;
}

static void jws(jp *p) {
    while (*p->p == ' ' || *p->p == '\t' || *p->p == '\n' || *p->p == '\r') p->p++;
}

static int jvalue(jp *p, jv *v);

static int jstring(jp *p, char **out) {
    if (*p->p != '"') return jerr(p, "expected a string");
    p->p++;
    size_t cap = 32, len = 0;
    char *b = malloc(cap);
    if (!b) return jerr(p, "out of memory");
    for (;;) {
        unsigned char c = (unsigned char)*p->p;
        if (c == 0 || c < 0x20) {
            free(b);
            return jerr(p, "unterminated string");
        }
        p->p++;
        if (c == '"') break;
        if (c == '\\') {
            char e = *p->p++;
            switch (e) {
            case '"': case '\\': case '/': c = (unsigned char)e; break;
            case 'n': c = '\n'; break;
            case 't': c = '\t'; break;
            case 'r': c = '\r'; break;
            case 'b': c = '\b'; break;
            case 'f': c = '\f'; break;
            case 'u': {
                unsigned u = 0;
                for (int i = 0; i < 4; i++) {
                    char h = *p->p++;
                    u <<= 4;
                    if (h >= '0' && h <= '9') u |= (unsigned)(h - '0');
                    else if (h >= 'a' && h <= 'f') u |= (unsigned)(h - 'a' + 10);
                    else if (h >= 'A' && h <= 'F') u |= (unsigned)(h - 'A' + 10);
                    else {
                        free(b);
                        return jerr(p, "bad \\u escape");
                    }
                }
                if (u == 0 || u > 0x7f) {
                    free(b);
                    return jerr(p, "only ASCII \\u escapes (other text as UTF-8)");
                }
                c = (unsigned char)u;
                break;
            }
            default: free(b); return jerr(p, "bad escape");
            }
        }
        if (len + 2 > cap) {
            char *nb = realloc(b, cap *= 2);
            if (!nb) {
                free(b);
                return jerr(p, "out of memory");
            }
            b = nb;
        }
        b[len++] = (char)c;
    }
    b[len] = 0;
    *out = b;
    return 1;
}

static int jnumber(jp *p, jv *v) {
    const char *q = p->p;
    if (*q == '-') q++;
    if (*q == '0') q++;
    else if (*q >= '1' && *q <= '9') while (*q >= '0' && *q <= '9') q++;
    else return jerr(p, "invalid value (JSON has no NaN or Infinity)");
    if (*q == '.') {
        q++;
        if (!(*q >= '0' && *q <= '9')) return jerr(p, "bad number");
        while (*q >= '0' && *q <= '9') q++;
    }
    if (*q == 'e' || *q == 'E') {
        q++;
        if (*q == '+' || *q == '-') q++;
        if (!(*q >= '0' && *q <= '9')) return jerr(p, "bad number");
        while (*q >= '0' && *q <= '9') q++;
    }
    v->t = J_NUM;
    v->num = strtod(p->p, NULL);
    p->p = q;
    return 1;
}

static int jpush(jv *v, size_t *cap, jv *item, char *key) {
    if (v->count == *cap) {
        size_t nc = *cap ? 2 * *cap : 8;
        jv *ni = realloc(v->it, nc * sizeof *ni);
        if (!ni) return 0;
        v->it = ni;
        if (v->t == J_OBJ) {
            char **nk = realloc(v->keys, nc * sizeof *nk);
            if (!nk) return 0;
            v->keys = nk;
        }
        *cap = nc;
    }
    v->it[v->count] = *item;
    if (v->t == J_OBJ) v->keys[v->count] = key;
    v->count++;
    return 1;
}

static int jcompound(jp *p, jv *v, int obj) {
    size_t cap = 0;
    v->t = obj ? J_OBJ : J_ARR;
    if (++p->depth > 64) return jerr(p, "nested too deeply");
    p->p++;
    jws(p);
    if (*p->p == (obj ? '}' : ']')) {
        p->p++;
        p->depth--;
        return 1;
    }
    for (;;) {
        char *key = NULL;
        jv item;
        memset(&item, 0, sizeof item);
        jws(p);
        if (obj) {
            if (!jstring(p, &key)) return 0;
            for (size_t i = 0; i < v->count; i++)
                if (strcmp(v->keys[i], key) == 0) {
                    free(key);
                    return jerr(p, "duplicate key");
                }
            jws(p);
            if (*p->p != ':') {
                free(key);
                return jerr(p, "expected ':'");
            }
            p->p++;
        }
        if (!jvalue(p, &item) || !jpush(v, &cap, &item, key)) {
            jfree(&item);
            free(key);
            return jerr(p, "bad value");
        }
        jws(p);
        if (*p->p == ',') {
            p->p++;
            continue;
        }
        if (*p->p == (obj ? '}' : ']')) {
            p->p++;
            p->depth--;
            return 1;
        }
        return jerr(p, obj ? "expected ',' or '}'" : "expected ',' or ']'");
    }
}

static int jvalue(jp *p, jv *v) {
    memset(v, 0, sizeof *v);
    jws(p);
    char c = *p->p;
    if (c == '{') return jcompound(p, v, 1);
    if (c == '[') return jcompound(p, v, 0);
    if (c == '"') {
        v->t = J_STR;
        return jstring(p, &v->str);
    }
    if (strncmp(p->p, "true", 4) == 0) return v->t = J_BOOL, v->num = 1, p->p += 4, 1;
    if (strncmp(p->p, "false", 5) == 0) return v->t = J_BOOL, v->num = 0, p->p += 5, 1;
    if (strncmp(p->p, "null", 4) == 0) return v->t = J_NULL, p->p += 4, 1;
    if (c == 0) return jerr(p, "unexpected end of file (truncated?)");
    return jnumber(p, v);
}

/* ---- checked field access ---------------------------------------------- */

typedef struct loader {
    sg_context *ctx;
    const char *src; /* file name or "string" */
    const char *op;
    sg_status failed;
} loader;

static int lfail(loader *L, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int lfail(loader *L, const char *fmt, ...) {
    char msg[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (!L->failed) sg_fail(L->ctx, SG_ERR_ARGUMENT, "%s: %s: %s", L->op, L->src, msg);
    L->failed = SG_ERR_ARGUMENT;
    return 0;
}

static const jv *field(loader *L, const jv *o, const char *key, jtype t, const char *where) {
    for (size_t i = 0; i < o->count; i++)
        if (strcmp(o->keys[i], key) == 0) {
            const jv *v = &o->it[i];
            static const char *tn[] = {"null", "a boolean", "a number", "a string", "an array", "an object"};
            if (v->t != t) {
                lfail(L, "field \"%s%s\" is %s, expected %s", where, key, tn[v->t], tn[t]);
                return NULL;
            }
            return v;
        }
    lfail(L, "field \"%s%s\" is missing", where, key);
    return NULL;
}

static int check_keys(loader *L, const jv *o, const char *const *known, size_t nk, const char *where) {
    for (size_t i = 0; i < o->count; i++) {
        int ok = 0;
        for (size_t j = 0; j < nk; j++) ok |= strcmp(o->keys[i], known[j]) == 0;
        if (!ok) return lfail(L, "unknown field \"%s%s\"", where, o->keys[i]);
    }
    return 1;
}

static int get_int(loader *L, const jv *o, const char *key, long lo, long hi, long *out) {
    const jv *v = field(L, o, key, J_NUM, "");
    if (!v) return 0;
    if (!(v->num >= (double)lo && v->num <= (double)hi) || v->num != floor(v->num))
        return lfail(L, "field \"%s\" = %g is not an integer in [%ld, %ld]", key, v->num, lo, hi);
    *out = (long)v->num;
    return 1;
}

static int get_num(loader *L, const jv *o, const char *key, const char *where, double *out) {
    const jv *v = field(L, o, key, J_NUM, where);
    if (!v) return 0;
    if (!isfinite(v->num)) return lfail(L, "field \"%s%s\" is not finite", where, key);
    *out = v->num;
    return 1;
}

/* A numeric matrix [rows x cols] (rows == 1 && vec: a flat vector). */
static int get_mat(loader *L, const jv *o, const char *key, const char *where, size_t rows,
                   size_t cols, int vec, double *out) {
    const jv *a = field(L, o, key, J_ARR, where);
    if (!a) return 0;
    size_t want = vec ? rows * cols : rows;
    if (a->count != want)
        return lfail(L, "field \"%s%s\" has %zu %s, expected %zu", where, key, a->count,
                     vec ? "values" : "rows", want);
    for (size_t i = 0; i < a->count; i++) {
        if (vec) {
            if (a->it[i].t != J_NUM) return lfail(L, "field \"%s%s\"[%zu] is not a number", where, key, i);
            if (!isfinite(a->it[i].num)) return lfail(L, "field \"%s%s\"[%zu] is not finite", where, key, i);
            out[i] = a->it[i].num;
            continue;
        }
        const jv *r = &a->it[i];
        if (r->t != J_ARR || r->count != cols)
            return lfail(L, "field \"%s%s\" row %zu has %zu values, expected %zu", where, key, i,
                         r->t == J_ARR ? r->count : 0, cols);
        for (size_t j = 0; j < cols; j++) {
            if (r->it[j].t != J_NUM) return lfail(L, "field \"%s%s\"[%zu][%zu] is not a number", where, key, i, j);
            if (!isfinite(r->it[j].num))
                return lfail(L, "field \"%s%s\"[%zu][%zu] is not finite", where, key, i, j);
            out[i * cols + j] = r->it[j].num;
        }
    }
    return 1;
}

static int enum_of(const char *s, const char *(*name)(int), int count) {
    for (int i = 0; i < count; i++)
        if (name(i) && strcmp(name(i), s) == 0) return i;
    return -1;
}
static const char *fam_name(int i) { return sg_mix_family_name((sg_mix_family)i); }
static const char *gate_name(int i) { return sg_mix_gate_name((sg_mix_gate)i); }

static int close_to(double a, double b) {
    return fabs(a - b) <= 1e-9 * fmax(1.0, fmax(fabs(a), fabs(b)));
}

static int get_strings(loader *L, const jv *names, const char *key, size_t count, char ***out) {
    const jv *v = NULL;
    for (size_t i = 0; i < names->count; i++)
        if (strcmp(names->keys[i], key) == 0) v = &names->it[i];
    if (!v) return lfail(L, "field \"names.%s\" is missing", key);
    if (v->t == J_NULL) return 1;
    if (v->t != J_ARR || v->count != count)
        return lfail(L, "field \"names.%s\" must be null or an array of %zu strings", key, count);
    if (count == 0) return 1;
    char **s = calloc(count, sizeof *s);
    if (!s) return lfail(L, "out of memory");
    *out = s;
    for (size_t i = 0; i < count; i++) {
        if (v->it[i].t != J_STR || strlen(v->it[i].str) > 255)
            return lfail(L, "field \"names.%s\"[%zu] is not a string of <= 255 bytes", key, i);
        s[i] = malloc(strlen(v->it[i].str) + 1);
        if (!s[i]) return lfail(L, "out of memory");
        strcpy(s[i], v->it[i].str);
    }
    return 1;
}

static int get_opt_string(loader *L, const jv *names, const char *key, char **out) {
    for (size_t i = 0; i < names->count; i++)
        if (strcmp(names->keys[i], key) == 0) {
            const jv *v = &names->it[i];
            if (v->t == J_NULL) return 1;
            if (v->t != J_STR) return lfail(L, "field \"names.%s\" must be null or a string", key);
            *out = malloc(strlen(v->str) + 1);
            if (!*out) return lfail(L, "out of memory");
            strcpy(*out, v->str);
            return 1;
        }
    return lfail(L, "field \"names.%s\" is missing", key);
}

static int load_fit(loader *L, const jv *root, sg_mix_model *m) {
    static const char *const keys[] = {"n", "loglik", "objective", "df", "aic", "bic", "icl",
                                       "iterations", "converged", "best_restart", "grad_norm",
                                       "max_decrease", "lambda"};
    const jv *f = field(L, root, "fit", J_OBJ, "");
    if (!f || !check_keys(L, f, keys, 13, "fit.")) return 0;
    double n = 0, it = 0, br = 0;
    const jv *conv;
    if (!get_num(L, f, "n", "fit.", &n) || !get_num(L, f, "loglik", "fit.", &m->loglik) ||
        !get_num(L, f, "objective", "fit.", &m->objective) || !get_num(L, f, "df", "fit.", &m->df) ||
        !get_num(L, f, "aic", "fit.", &m->aic) || !get_num(L, f, "bic", "fit.", &m->bic) ||
        !get_num(L, f, "icl", "fit.", &m->icl) || !get_num(L, f, "iterations", "fit.", &it) ||
        !(conv = field(L, f, "converged", J_BOOL, "fit.")) ||
        !get_num(L, f, "best_restart", "fit.", &br) ||
        !get_num(L, f, "grad_norm", "fit.", &m->grad_norm) ||
        !get_num(L, f, "max_decrease", "fit.", &m->max_decrease) ||
        !get_num(L, f, "lambda", "fit.", &m->lambda))
        return 0;
    if (!(n >= 2 && n == floor(n) && n < 1e15)) return lfail(L, "field \"fit.n\" = %g is not a count >= 2", n);
    if (!(it >= 0 && it == floor(it) && it < 2e9)) return lfail(L, "field \"fit.iterations\" is not a count");
    if (!(br >= 0 && br == floor(br) && br < 2e9)) return lfail(L, "field \"fit.best_restart\" is not a count");
    if (m->lambda < 0 || m->df <= 0) return lfail(L, "field \"fit.lambda\" < 0 or \"fit.df\" <= 0");
    m->n = (size_t)n;
    m->iterations = (int)it;
    m->best_restart = (int)br;
    m->converged = conv->num != 0;
    if (!close_to(m->aic, -2 * m->loglik + 2 * m->df))
        return lfail(L, "field \"fit.aic\" does not equal -2 loglik + 2 df");
    if (!close_to(m->bic, -2 * m->loglik + m->df * log(n)))
        return lfail(L, "field \"fit.bic\" does not equal -2 loglik + df log n");
    return 1;
}

static int load_body(loader *L, const jv *root, sg_mix_model **out) {
    static const char *const keys[] = {"format", "version", "family", "gate", "experts",
                                       "features", "classes", "groups", "top_k", "temperature",
                                       "level_gates", "center", "scale", "expert_coef", "sigma2",
                                       "gate_coef", "gate2_coef", "raw", "fit", "path", "names"};
    if (root->t != J_OBJ) return lfail(L, "the top level is not a JSON object");
    const jv *fmt = field(L, root, "format", J_STR, "");
    if (!fmt) return 0;
    if (strcmp(fmt->str, FORMAT_NAME) != 0)
        return lfail(L, "field \"format\" is \"%.60s\", not \"%s\"", fmt->str, FORMAT_NAME);
    const jv *ver = field(L, root, "version", J_NUM, "");
    if (!ver) return 0;
    if (ver->num != FORMAT_VERSION)
        return lfail(L, "unsupported version %g (this build reads version %d)", ver->num, FORMAT_VERSION);
    if (!check_keys(L, root, keys, sizeof keys / sizeof keys[0], "")) return 0;
    const jv *fam = field(L, root, "family", J_STR, ""), *gt = field(L, root, "gate", J_STR, "");
    if (!fam || !gt) return 0;
    int famv = enum_of(fam->str, fam_name, 2), gatev = enum_of(gt->str, gate_name, 6);
    if (famv < 0) return lfail(L, "field \"family\" = \"%.40s\" is not a family", fam->str);
    if (gatev < 0) return lfail(L, "field \"gate\" = \"%.40s\" is not a gate", gt->str);
    long E, p, C, G, K;
    double T;
    if (!get_int(L, root, "experts", 1, 256, &E) || !get_int(L, root, "features", 0, 1000000, &p) ||
        !get_int(L, root, "classes", 0, 256, &C) || !get_int(L, root, "groups", 1, 256, &G) ||
        !get_int(L, root, "top_k", 1, 256, &K) || !get_num(L, root, "temperature", "", &T))
        return 0;
    const jv *lg = field(L, root, "level_gates", J_ARR, "");
    if (!lg) return 0;
    /* rebuild the shape through the fit's own checks, on a spec */
    sg_mix_spec s = sg_mix_spec_default();
    s.family = (sg_mix_family)famv;
    s.gate = (sg_mix_gate)gatev;
    s.experts = (int)E, s.classes = famv == SG_MIX_MULTINOMIAL ? (int)C : 2;
    s.groups = (int)G, s.top_k = (int)K, s.temperature = T;
    if (famv == SG_MIX_GAUSSIAN && C != 0) return lfail(L, "field \"classes\" must be 0 for gaussian experts");
    if (gatev != SG_MIX_GATE_TOPK && K != E) return lfail(L, "field \"top_k\" must equal experts for this gate");
    if (gatev != SG_MIX_GATE_TEMPERATURE && T != 1.0) return lfail(L, "field \"temperature\" must be 1 for this gate");
    if (gatev != SG_MIX_GATE_HIERARCHICAL && G != 1) return lfail(L, "field \"groups\" must be 1 for this gate");
    size_t nl = gatev == SG_MIX_GATE_HIERARCHICAL ? 2 : 1;
    if (lg->count != nl) return lfail(L, "field \"level_gates\" has %zu entries, expected %zu", lg->count, nl);
    for (size_t l = 0; l < nl; l++) {
        if (lg->it[l].t != J_STR) return lfail(L, "field \"level_gates\"[%zu] is not a string", l);
        int lap = strcmp(lg->it[l].str, "laplace") == 0;
        if (!lap && strcmp(lg->it[l].str, "softmax") != 0)
            return lfail(L, "field \"level_gates\"[%zu] must be \"softmax\" or \"laplace\"", l);
        if (nl == 2) s.level_gate[l] = lap ? SG_MIX_GATE_LAPLACE : SG_MIX_GATE_SOFTMAX;
        else if (lap != (gatev == SG_MIX_GATE_LAPLACE))
            return lfail(L, "field \"level_gates\"[0] does not match the gate");
    }
    sg_mix_model shape;
    sg_context *ctx = L->ctx;
    /* n only matters for the df check: use a large one, the real n comes from "fit" */
    if (mix_check_spec(ctx, &s, (size_t)1 << 40, (size_t)p, &shape) != SG_OK)
        return lfail(L, "inconsistent model shape: %s", sg_context_error(ctx));
    sg_mix_model *m = calloc(1, sizeof *m);
    if (!m) return lfail(L, "out of memory");
    *m = shape;
    *out = m;
    if (!mix_model_alloc(m)) return lfail(L, "out of memory");
    size_t q = m->q, br = beta_rows(m);
    if (!get_mat(L, root, "center", "", 1, m->p, 1, m->center) ||
        !get_mat(L, root, "scale", "", 1, m->p, 1, m->scale) ||
        !get_mat(L, root, "expert_coef", "", br, q, 0, m->beta) ||
        !get_mat(L, root, "sigma2", "", 1, famv == SG_MIX_GAUSSIAN ? (size_t)E : 0, 1, m->sigma2))
        return 0;
    for (size_t j = 0; j < m->p; j++)
        if (!(m->scale[j] > 0)) return lfail(L, "field \"scale\"[%zu] is not > 0", j);
    if (famv == SG_MIX_GAUSSIAN)
        for (long k = 0; k < E; k++)
            if (!(m->sigma2[k] > 0)) return lfail(L, "field \"sigma2\"[%ld] is not > 0", k);
    for (int l = 0; l < 2; l++) {
        const char *key = l ? "gate2_coef" : "gate_coef";
        size_t rows = l < m->nlevels ? (size_t)m->lev[l].m * m->lev[l].blocks : 0;
        size_t cols = l < m->nlevels ? mix_level_cols(m, l) : 0;
        if (l < m->nlevels) {
            if (!get_mat(L, root, key, "", rows, cols, 0, m->lev[l].w)) return 0;
        } else {
            const jv *a = field(L, root, key, J_ARR, "");
            if (!a) return 0;
            if (a->count) return lfail(L, "field \"%s\" must be empty for this gate", key);
        }
    }
    /* the reference rows of linear gates and multinomial experts are zero */
    for (int l = 0; l < m->nlevels; l++) {
        if (m->lev[l].laplace) continue;
        for (int b = 0; b < m->lev[l].blocks; b++)
            for (size_t j = 0; j < q; j++)
                if (m->lev[l].w[((size_t)b * m->lev[l].m + m->lev[l].m - 1) * q + j] != 0)
                    return lfail(L, "field \"%s\": the reference row of block %d must be zero",
                                 l ? "gate2_coef" : "gate_coef", b);
    }
    if (famv == SG_MIX_MULTINOMIAL)
        for (long k = 0; k < E; k++)
            for (size_t j = 0; j < q; j++)
                if (m->beta[((size_t)k * C + (size_t)C - 1) * q + j] != 0)
                    return lfail(L, "field \"expert_coef\": the reference class row of expert %ld must be zero", k);
    if (!mix_model_finish(m)) return lfail(L, "out of memory");
    /* raw copies: present, right sizes, equal to those derived */
    static const char *const rkeys[] = {"expert_coef", "sigma", "gate_coef", "gate2_coef"};
    const jv *raw = field(L, root, "raw", J_OBJ, "");
    if (!raw || !check_keys(L, raw, rkeys, 4, "raw.")) return 0;
    size_t big = br * q + (size_t)E + 4 * (size_t)E * (m->p + 1) + 16;
    double *tmp = malloc(big * sizeof *tmp);
    if (!tmp) return lfail(L, "out of memory");
    int ok = get_mat(L, raw, "expert_coef", "raw.", br, q, 0, tmp);
    for (size_t i = 0; ok && i < br * q; i++)
        if (!close_to(tmp[i], m->raw_beta[i])) ok = lfail(L, "field \"raw.expert_coef\" does not match \"expert_coef\"");
    ok = ok && get_mat(L, raw, "sigma", "raw.", 1, famv == SG_MIX_GAUSSIAN ? (size_t)E : 0, 1, tmp);
    for (long k = 0; ok && famv == SG_MIX_GAUSSIAN && k < E; k++)
        if (!close_to(tmp[k], m->raw_sigma[k])) ok = lfail(L, "field \"raw.sigma\" does not match \"sigma2\"");
    for (int l = 0; ok && l < 2; l++) {
        const char *key = l ? "gate2_coef" : "gate_coef";
        if (l >= m->nlevels) {
            const jv *a = field(L, raw, key, J_ARR, "raw.");
            ok = a && (a->count == 0 || lfail(L, "field \"raw.%s\" must be empty", key));
            continue;
        }
        size_t rows = (size_t)m->lev[l].m * m->lev[l].blocks, cols = mix_level_cols(m, l);
        ok = get_mat(L, raw, key, "raw.", rows, cols, 0, tmp);
        const double *ref = l ? m->raw_g1 : m->raw_g0;
        for (size_t i = 0; ok && i < rows * cols; i++)
            if (!close_to(tmp[i], ref[i])) ok = lfail(L, "field \"raw.%s\" does not match \"%s\"", key, key);
    }
    free(tmp);
    if (!ok || !load_fit(L, root, m)) return 0;
    const jv *path = field(L, root, "path", J_ARR, "");
    if (!path) return 0;
    if (path->count) {
        m->path = malloc(path->count * 4 * sizeof(double));
        if (!m->path) return lfail(L, "out of memory");
        if (!get_mat(L, root, "path", "", path->count, 4, 0, m->path)) return 0;
        m->path_len = path->count;
    }
    static const char *const nkeys[] = {"response", "features", "classes", "metadata"};
    const jv *names = field(L, root, "names", J_OBJ, "");
    if (!names || !check_keys(L, names, nkeys, 4, "names.")) return 0;
    if (!get_opt_string(L, names, "response", &m->response) ||
        !get_strings(L, names, "features", m->p, &m->features) ||
        !get_strings(L, names, "classes", famv == SG_MIX_MULTINOMIAL ? (size_t)C : 0, &m->classes) ||
        !get_opt_string(L, names, "metadata", &m->metadata))
        return 0;
    return 1;
}

static sg_status load_text(sg_context *ctx, const char *op, const char *src, const char *text,
                           sg_mix_model **out) {
    jp p;
    memset(&p, 0, sizeof p);
    p.s = p.p = text;
    jv root;
    loader L = {ctx, src, op, SG_OK};
    if (!jvalue(&p, &root)) {
        jfree(&root);
        return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: %s: %s", op, src, p.err);
    }
    jws(&p);
    if (*p.p) {
        jfree(&root);
        return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: %s: not valid JSON at byte %zu: trailing data",
                       op, src, (size_t)(p.p - p.s));
    }
    sg_mix_model *m = NULL;
    int ok = load_body(&L, &root, &m);
    jfree(&root);
    if (!ok) {
        sg_mix_model_free(m);
        return L.failed ? L.failed : SG_ERR_ARGUMENT;
    }
    sg_ok(ctx);
    *out = m;
    return SG_OK;
}

sg_status sg_mix_load_json_string(sg_context *ctx, const char *json, sg_mix_model **out) {
    const char *op = "sg_mix_load_json_string";
    sg_ok(ctx);
    if (!out) return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: model is NULL", op);
    *out = NULL;
    if (!json) return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: json is NULL", op);
    return load_text(ctx, op, "string", json, out);
}

sg_status sg_mix_load_json(sg_context *ctx, const char *path, sg_mix_model **out) {
    const char *op = "sg_mix_load_json";
    sg_ok(ctx);
    if (!out) return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: model is NULL", op);
    *out = NULL;
    if (!path) return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: path is NULL", op);
    FILE *f = fopen(path, "rb");
    if (!f) return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: cannot open %s: %s", op, path, strerror(errno));
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t r = fread(buf + len, 1, cap - len - 1, f);
        len += r;
        if (len < cap - 1) break;
        if (cap > ((size_t)1 << 31)) {
            free(buf), fclose(f);
            return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: %s is larger than 2 GiB", op, path);
        }
        char *nb = realloc(buf, cap *= 2);
        if (!nb) free(buf);
        buf = nb;
    }
    int rerr = ferror(f);
    fclose(f);
    if (!buf) return sg_fail(ctx, SG_ERR_NO_MEMORY, "%s: out of memory", op);
    if (rerr) {
        free(buf);
        return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: reading %s failed", op, path);
    }
    buf[len] = 0;
    if (strlen(buf) != len) {
        free(buf);
        return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: %s: not valid JSON: contains a NUL byte", op, path);
    }
    sg_status st = load_text(ctx, op, path, buf, out);
    free(buf);
    return st;
}

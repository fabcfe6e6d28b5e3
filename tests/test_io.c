/*
 * test_io.c - the CSV reader (include/softgate/io.h): RFC 4180 quoting,
 * CRLF, class labels, one-hot encoding, every malformed case with its line
 * and column in the message, drop_missing, limits.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test.h"

static sg_dataset *read_ok(sg_context *ctx, const char *text, const sg_csv_options *o) {
    sg_dataset *d = NULL;
    sg_status st = sg_csv_read_buffer(ctx, text, strlen(text), o, &d);
    CHECK(st == SG_OK && d, "read failed: %s", sg_context_error(ctx));
    return d;
}

/* Reading fails and the message contains every one of the given parts. */
static void read_err(sg_context *ctx, const char *text, const sg_csv_options *o,
                     const char *part1, const char *part2) {
    sg_dataset *d = (sg_dataset *)1;
    sg_status st = sg_csv_read_buffer(ctx, text, strlen(text), o, &d);
    const char *msg = sg_context_error(ctx);
    CHECK(st != SG_OK && d == NULL, "expected an error for %s", text);
    CHECK(strstr(msg, part1) != NULL, "message '%s' lacks '%s'", msg, part1);
    CHECK(!part2 || strstr(msg, part2) != NULL, "message '%s' lacks '%s'", msg, part2);
    if (st == SG_OK) sg_dataset_destroy(d);
}

TEST(io_csv_numeric_and_response) {
    sg_context *ctx = test_context(1);
    sg_csv_options o = sg_csv_options_default();
    o.response = "y";
    sg_dataset *d = read_ok(ctx, "a,y,b\n1,2,3\n-4.5,1e3,0x10\n", &o);
    if (d) {
        CHECK(sg_dataset_rows(d) == 2 && sg_dataset_cols(d) == 2, "shape %zu x %zu",
              sg_dataset_rows(d), sg_dataset_cols(d));
        const double *x = sg_dataset_x(d), *y = sg_dataset_y(d);
        CHECK(x[0] == 1 && x[1] == 3 && x[2] == -4.5 && x[3] == 16, "x %g %g %g %g", x[0], x[1],
              x[2], x[3]);
        CHECK(y && y[0] == 2 && y[1] == 1000, "y");
        CHECK(!strcmp(sg_dataset_col_name(d, 0), "a") && !strcmp(sg_dataset_col_name(d, 1), "b"),
              "names");
        CHECK(sg_dataset_col_name(d, 2) == NULL && sg_dataset_labels(d) == NULL, "no labels");
        CHECK(sg_dataset_line(d, 0) == 2 && sg_dataset_line(d, 1) == 3, "lines");
        sg_dataset_destroy(d);
    }
    /* Feature order from the options; unused columns may hold anything. */
    const char *feats[] = {"b", "a"};
    o.features = feats;
    o.n_features = 2;
    d = read_ok(ctx, "a,y,b,note\n1,2,3,hello\n", &o);
    if (d) {
        const double *x = sg_dataset_x(d);
        CHECK(x[0] == 3 && x[1] == 1 && !strcmp(sg_dataset_col_name(d, 0), "b"), "order");
        sg_dataset_destroy(d);
    }
    sg_context_destroy(ctx);
}

TEST(io_csv_quotes_crlf) {
    sg_context *ctx = test_context(1);
    sg_csv_options o = sg_csv_options_default();
    o.response = "label";
    o.response_kind = SG_CSV_RESPONSE_LABELS;
    /* Embedded delimiter, doubled quotes, a line break inside quotes, CRLF,
     * a quoted number, a UTF-8 BOM, trailing blank lines. */
    const char *text = "\xEF\xBB\xBF\"x\",label\r\n"
                       "\"1.5\",\"a, b\"\r\n"
                       " 2 ,\"say \"\"hi\"\"\"\r\n"
                       "3,\"two\nlines\"\r\n"
                       "4,\"a, b\"\r\n\r\n\n";
    sg_dataset *d = read_ok(ctx, text, &o);
    if (d) {
        CHECK(sg_dataset_rows(d) == 4, "rows %zu", sg_dataset_rows(d));
        const double *x = sg_dataset_x(d);
        CHECK(x[0] == 1.5 && x[1] == 2 && x[2] == 3 && x[3] == 4, "x");
        CHECK(sg_dataset_classes(d) == 3, "classes %zu", sg_dataset_classes(d));
        /* Sorted by bytes: "a, b" < "say \"hi\"" < "two\nlines". */
        CHECK(!strcmp(sg_dataset_class_name(d, 0), "a, b") &&
                  !strcmp(sg_dataset_class_name(d, 1), "say \"hi\"") &&
                  !strcmp(sg_dataset_class_name(d, 2), "two\nlines"),
              "class names");
        const int32_t *l = sg_dataset_labels(d);
        CHECK(l[0] == 0 && l[1] == 1 && l[2] == 2 && l[3] == 0, "labels %d %d %d %d", l[0], l[1],
              l[2], l[3]);
        /* The record after the two-line field starts on line 6. */
        CHECK(sg_dataset_line(d, 3) == 6, "line %zu", sg_dataset_line(d, 3));
        sg_dataset_destroy(d);
    }
    /* Lines are counted through quoted line breaks in error messages too. */
    read_err(ctx, "x,label\n1,\"a\nb\nc\"\nzz,b\n", &o, "line 5, column 1 ('x')", "'zz'");
    /* Another delimiter, no final line break. */
    sg_csv_options s = sg_csv_options_default();
    s.delimiter = ';';
    d = read_ok(ctx, "p;q\n1.5;2", &s);
    if (d) {
        CHECK(sg_dataset_rows(d) == 1 && sg_dataset_cols(d) == 2, "semicolon shape");
        sg_dataset_destroy(d);
    }
    read_err(ctx, "p;q\n1.5;2", NULL, "column 'p;q' is not numeric", "'1.5;2'");
    sg_context_destroy(ctx);
}

TEST(io_csv_labels) {
    sg_context *ctx = test_context(1);
    sg_csv_options o = sg_csv_options_default();
    o.response = "y";
    o.response_kind = SG_CSV_RESPONSE_LABELS;
    /* Numeric labels sort by value: 2 < 10. */
    sg_dataset *d = read_ok(ctx, "x,y\n0,10\n1,2\n2,10\n", &o);
    if (d) {
        CHECK(sg_dataset_classes(d) == 2 && !strcmp(sg_dataset_class_name(d, 0), "2") &&
                  !strcmp(sg_dataset_class_name(d, 1), "10"),
              "numeric label order");
        const int32_t *l = sg_dataset_labels(d);
        CHECK(l[0] == 1 && l[1] == 0 && l[2] == 1, "labels");
        CHECK(sg_dataset_y(d) == NULL, "no numeric y with labels");
        sg_dataset_destroy(d);
    }
    /* Fixed classes keep their order; an unknown class is an error. */
    const char *cls[] = {"setosa", "virginica", "versicolor"};
    o.class_labels = cls;
    o.n_class_labels = 3;
    d = read_ok(ctx, "x,y\n0,versicolor\n1,setosa\n", &o);
    if (d) {
        const int32_t *l = sg_dataset_labels(d);
        CHECK(sg_dataset_classes(d) == 3 && l[0] == 2 && l[1] == 0, "fixed classes");
        sg_dataset_destroy(d);
    }
    read_err(ctx, "x,y\n0,setosa\n1,rose\n", &o, "line 3, column 2 ('y')", "'rose'");
    /* A numeric response that holds text names the column. */
    sg_csv_options n = sg_csv_options_default();
    n.response = "y";
    read_err(ctx, "x,y\n0,a\n1,b\n", &n, "column 'y' is not numeric", "line 2");
    read_err(ctx, "x,y\n0,1\n", &(sg_csv_options){.response = "z"}, "response column 'z'", NULL);
    sg_context_destroy(ctx);
}

TEST(io_csv_one_hot) {
    sg_context *ctx = test_context(1);
    sg_csv_options o = sg_csv_options_default();
    const char *cat[] = {"color"};
    o.response = "y";
    o.categorical = cat;
    o.n_categorical = 1;
    sg_dataset *d = read_ok(ctx, "color,x,y\nred,1,0\nblue,2,1\ngreen,3,2\nred,4,3\n", &o);
    if (d) {
        /* Levels blue (reference), green, red: columns color=green,
         * color=red, then x. */
        CHECK(sg_dataset_cols(d) == 3, "cols %zu", sg_dataset_cols(d));
        CHECK(!strcmp(sg_dataset_col_name(d, 0), "color=green") &&
                  !strcmp(sg_dataset_col_name(d, 1), "color=red") &&
                  !strcmp(sg_dataset_col_name(d, 2), "x"),
              "names %s %s", sg_dataset_col_name(d, 0), sg_dataset_col_name(d, 1));
        const double want[4][3] = {{0, 1, 1}, {0, 0, 2}, {1, 0, 3}, {0, 1, 4}};
        const double *x = sg_dataset_x(d);
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 3; j++)
                CHECK(x[i * 3 + j] == want[i][j], "x[%d][%d] = %g", i, j, x[i * 3 + j]);
        CHECK(sg_dataset_feature_count(d) == 2 && !strcmp(sg_dataset_feature_name(d, 0), "color") &&
                  !strcmp(sg_dataset_feature_name(d, 1), "x") && !sg_dataset_feature_name(d, 2),
              "raw features");
        CHECK(sg_dataset_categorical_count(d) == 1 &&
                  !strcmp(sg_dataset_categorical_name(d, 0), "color") &&
                  sg_dataset_level_count(d, 0) == 3 &&
                  !strcmp(sg_dataset_level_name(d, 0, 0), "blue"),
              "levels");
        sg_dataset_destroy(d);
    }
    /* Fixed levels (as a model passes them back): their order, and a new
     * level is an error naming it. */
    const char *names[] = {"red", "blue", "green"};
    sg_csv_levels lv = {"color", 3, names};
    o.levels = &lv;
    o.n_levels = 1;
    d = read_ok(ctx, "color,x,y\nblue,1,0\n", &o);
    if (d) {
        const double *x = sg_dataset_x(d);
        CHECK(!strcmp(sg_dataset_col_name(d, 0), "color=blue") && x[0] == 1 && x[1] == 0,
              "fixed levels");
        sg_dataset_destroy(d);
    }
    read_err(ctx, "color,x,y\nblue,1,0\npink,2,0\n", &o, "line 3, column 1 ('color')", "'pink'");
    o.levels = NULL;
    o.n_levels = 0;
    read_err(ctx, "color,x,y\nred,1,0\nred,2,1\n", &o, "'color' has a single level", "red");
    /* A non-numeric column not declared categorical is an error naming it. */
    sg_csv_options n = sg_csv_options_default();
    n.response = "y";
    read_err(ctx, "color,x,y\nred,1,0\nblue,2,1\n", &n, "column 'color' is not numeric",
             "categorical");
    const char *bad[] = {"shape"};
    o.categorical = bad;
    read_err(ctx, "color,x,y\nred,1,0\n", &o, "categorical column 'shape'", NULL);
    sg_context_destroy(ctx);
}

TEST(io_csv_malformed) {
    sg_context *ctx = test_context(1);
    sg_csv_options o = sg_csv_options_default();
    o.response = "y";
    read_err(ctx, "x,y\n1,2\n3,abc\n", &o, "line 3, column 2 ('y')", "'abc' is not a finite number");
    read_err(ctx, "x,y\n1,2\n,4\n", &o, "line 3, column 1 ('x')", "missing value");
    read_err(ctx, "x,y\n1,2\nNA,4\n", &o, "line 3, column 1 ('x')", "missing value 'NA'");
    read_err(ctx, "x,y\n1,2\n3,inf\n", &o, "line 3, column 2 ('y')", "'inf'");
    read_err(ctx, "x,y\n1,2\n3,1e999\n", &o, "line 3, column 2", "'1e999'");
    read_err(ctx, "x,y\n1,2\n3,4,5\n", &o, "line 3: 3 fields", "header has 2");
    read_err(ctx, "x,y\n1,2\n\n3,4\n", &o, "line 3: 1 field", NULL);
    read_err(ctx, "x,y\n1,2\n3,4\"5\n", &o, "line 3, column 2", "quote inside an unquoted");
    read_err(ctx, "x,y\n1,2\n\"3\"x,4\n", &o, "line 3, column 1", "after a closing quote");
    read_err(ctx, "x,y\n1,2\n3,\"4\n5,6\n", &o, "line 3, column 2", "never closed");
    read_err(ctx, "x,x\n1,2\n", NULL, "'x' appears twice", NULL);
    read_err(ctx, "x,y\n", &o, "no data records", NULL);
    read_err(ctx, "", &o, "empty input", NULL);
    read_err(ctx, "x,y\n1,2\n", &(sg_csv_options){.response = "y", .features = (const char *[]){"w"},
                                                  .n_features = 1},
             "feature column 'w'", NULL);
    read_err(ctx, "x,y\n1,2\n", &(sg_csv_options){.response = "y", .features = (const char *[]){"y"},
                                                  .n_features = 1},
             "'y' is the response", NULL);
    read_err(ctx, "x,y\n1,2\n", &(sg_csv_options){.max_bytes = 4}, "over the limit", NULL);
    /* A missing value in an unused column is fine. */
    o.features = (const char *[]){"x"};
    o.n_features = 1;
    sg_dataset *d = read_ok(ctx, "x,y,z\n1,2,\n", &o);
    if (d) {
        CHECK(sg_dataset_cols(d) == 1, "z is not a feature");
        sg_dataset_destroy(d);
    }
    sg_context_destroy(ctx);
}

TEST(io_csv_drop_missing) {
    sg_context *ctx = test_context(1);
    sg_csv_options o = sg_csv_options_default();
    const char *cat[] = {"c"};
    o.response = "y";
    o.categorical = cat;
    o.n_categorical = 1;
    o.drop_missing = 1;
    /* Lines 3 (missing x), 5 (malformed y), 6 (NA c) and 8 are dropped;
     * level "z" only occurs in a dropped record, so it is no column. */
    const char *text = "x,c,y\n1,a,1\n,b,2\n3,b,3\n4,a,oops\n5,NA,5\n6,a,6\n7,z,\n";
    sg_dataset *d = read_ok(ctx, text, &o);
    if (d) {
        CHECK(sg_dataset_rows(d) == 3, "rows %zu", sg_dataset_rows(d));
        CHECK(sg_dataset_dropped(d) == 4 && sg_dataset_first_dropped_line(d) == 3,
              "dropped %zu first %zu", sg_dataset_dropped(d), sg_dataset_first_dropped_line(d));
        CHECK(sg_dataset_cols(d) == 2 && !strcmp(sg_dataset_col_name(d, 1), "c=b"), "cols");
        const double *y = sg_dataset_y(d);
        CHECK(y[0] == 1 && y[1] == 3 && y[2] == 6, "kept y");
        CHECK(sg_dataset_line(d, 1) == 4 && sg_dataset_line(d, 2) == 7, "kept lines");
        sg_dataset_destroy(d);
    }
    /* Structural errors are errors even with drop_missing. */
    read_err(ctx, "x,c,y\n1,a,1\n2,b\n", &o, "line 3: 2 fields", NULL);
    read_err(ctx, "x,c,y\n,a,1\n1,b,\n", &o, "no record left", "2");
    sg_context_destroy(ctx);
}

TEST(io_csv_file_and_roundtrip) {
    sg_context *ctx = test_context(1);
    sg_dataset *d = NULL;
    CHECK(sg_csv_read_file(ctx, "/nonexistent/x.csv", NULL, &d) != SG_OK && !d, "missing file");
    CHECK(strstr(sg_context_error(ctx), "/nonexistent/x.csv") != NULL, "path named: %s",
          sg_context_error(ctx));
    /* Random doubles printed with %.17g (some quoted) read back exactly. */
    char path[] = "/tmp/softgate_test_io_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0, "mkstemp");
    if (fd < 0) {
        sg_context_destroy(ctx);
        return;
    }
    FILE *f = fdopen(fd, "w");
    test_rng rng = test_rng_seed(7);
    size_t n = test_quick ? 200 : 3000, p = 4;
    double *want = malloc(n * p * sizeof *want);
    fprintf(f, "c0,c1,c2,c3\r\n");
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < p; j++) {
            double v = test_normal(&rng) * pow(10.0, (double)(int)(test_uniform(&rng) * 40 - 20));
            want[i * p + j] = v;
            fprintf(f, (i + j) % 3 ? "%.17g%s" : "\"%.17g\"%s", v, j + 1 < p ? "," : "\r\n");
        }
    fclose(f);
    CHECK(sg_csv_read_file(ctx, path, NULL, &d) == SG_OK, "%s", sg_context_error(ctx));
    if (d) {
        CHECK(sg_dataset_rows(d) == n && sg_dataset_cols(d) == p, "shape");
        size_t bad = 0;
        for (size_t k = 0; k < n * p; k++) bad += sg_dataset_x(d)[k] != want[k];
        CHECK(bad == 0, "%zu values differ", bad);
        sg_dataset_destroy(d);
    }
    /* The file's name prefixes errors from the buffer reader. */
    CHECK(sg_csv_read_file(ctx, path, &(sg_csv_options){.response = "nope"}, &d) != SG_OK &&
              strstr(sg_context_error(ctx), path) && strstr(sg_context_error(ctx), "'nope'"),
          "%s", sg_context_error(ctx));
    remove(path);
    free(want);
    sg_context_destroy(ctx);
}

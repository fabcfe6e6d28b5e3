/*
 * test_csv_numbers.c - the CSV reader's numbers (src/io/csv.c): plain
 * decimals go through a fast path (at most 15 significant digits, decimal
 * exponent within +-22), everything else through strtod; every value must be
 * the double strtod gives, bit for bit.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"

TEST(io_csv_numbers_as_strtod) {
    sg_context *ctx = test_context(1);
    test_rng rng = test_rng_seed(20261129);
    size_t n = test_quick ? 1000 : 6000, cap = n * 48 + 16, len = 0;
    char *text = test_alloc(cap), (*vals)[40] = test_alloc(n * sizeof *vals);
    static const char *fixed[] = {"0",     "-0",    "+3",   "12345.", ".5",     "-.25",
                                  "00012", "1e22",  "1e23", "1e-22",  "1e-23",  "9007199254740993",
                                  "123456789012345", "1234567890123456", "0.1", "2.5E+3",
                                  "4e0",   "7.e1",  "0.000000000000000000001234", "1e0400"};
    size_t nf = sizeof fixed / sizeof *fixed;
    len += (size_t)snprintf(text + len, cap - len, "v\n");
    for (size_t i = 0; i < n; i++) {
        if (i < nf) {
            snprintf(vals[i], sizeof vals[i], "%s", fixed[i]);
        } else {
            /* random significands of 1..17 digits, exponents -30..30, written
             * as %e, %f or %g the way data files hold them */
            int digits = 1 + (int)(test_uniform(&rng) * 17);
            double m = (test_uniform(&rng) * 2 - 1) * pow(10, (int)(test_uniform(&rng) * 61) - 30);
            int form = (int)(test_uniform(&rng) * 3);
            if (form == 0) snprintf(vals[i], sizeof vals[i], "%.*e", digits - 1, m);
            else if (form == 1 && fabs(m) < 1e15 && fabs(m) > 1e-10)
                snprintf(vals[i], sizeof vals[i], "%.*f", digits, m);
            else snprintf(vals[i], sizeof vals[i], "%.*g", digits, m);
        }
        len += (size_t)snprintf(text + len, cap - len, "%s\n", vals[i]);
    }
    sg_dataset *d = NULL;
    sg_status st = sg_csv_read_buffer(ctx, text, len, NULL, &d);
    /* "1e0400" is out of range: an error naming its line */
    CHECK(st != SG_OK && strstr(sg_context_error(ctx), "line 21"), "out of range: %s",
          sg_context_error(ctx));
    if (d) sg_dataset_destroy(d);
    /* without it, every value is strtod's */
    snprintf(vals[nf - 1], sizeof vals[0], "%s", "-1e-5");
    len = (size_t)snprintf(text, cap, "v\n");
    for (size_t i = 0; i < n; i++) len += (size_t)snprintf(text + len, cap - len, "%s\n", vals[i]);
    d = NULL;
    st = sg_csv_read_buffer(ctx, text, len, NULL, &d);
    CHECK(st == SG_OK && d, "read: %s", sg_context_error(ctx));
    if (d) {
        const double *x = sg_dataset_x(d);
        size_t bad = 0;
        for (size_t i = 0; i < n && sg_dataset_rows(d) == n; i++) {
            double want = strtod(vals[i], NULL);
            if (memcmp(&want, &x[i], sizeof want) != 0 && bad++ < 5)
                CHECK(0, "'%s': %.17g, strtod %.17g", vals[i], x[i], want);
        }
        CHECK(sg_dataset_rows(d) == n && bad == 0, "%zu rows, %zu values differ", sg_dataset_rows(d), bad);
        sg_dataset_destroy(d);
    }
    free(text), free(vals);
    sg_context_destroy(ctx);
}

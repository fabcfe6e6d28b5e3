/*
 * softgate.c - the command-line tool: a thin layer that parses arguments,
 * calls the public API and prints. All computing happens in the library.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../bench/bench.h"
#include "mixture_cmd.h"
#include "softgate.h"

static void usage(FILE *f) {
    fprintf(f,
            "softgate %s - the softmax family, gates and mixtures of experts\n"
            "\n"
            "usage:\n"
            "  softgate info [--isa-levels]   CPU features and the kernel chosen for each slot\n"
            "  softgate bench NAME [...]      benchmarks (softgate bench --help lists them)\n"
            "  softgate fit DATA.csv --response Y [...]   fit a mixture of experts (fit --help)\n"
            "  softgate predict MODEL.json DATA.csv [-o OUT.csv]   predictions as CSV\n"
            "  softgate eval MODEL.json DATA.csv  held-out log-likelihood, RMSE or accuracy\n"
            "  softgate demo                  fit and plot the Old Faithful demo (docs/CLI.md)\n"
            "  softgate version\n"
            "\n"
            "environment: SOFTGATE_ISA=ref|avx2|avx512|native restricts the kernels used.\n",
            SG_VERSION_STRING);
}

static int cmd_info(int argc, char **argv) {
    if (argc > 0 && strcmp(argv[0], "--isa-levels") == 0) {
        /* The levels this CPU can run, for the test driver. */
        for (int isa = SG_ISA_REF; isa <= SG_ISA_AVX512; isa++)
            if (sg_cpu_supports((sg_isa)isa)) printf("%s%s", isa ? " " : "", sg_isa_name((sg_isa)isa));
        printf("\n");
        return 0;
    }
    if (argc > 0) {
        fprintf(stderr, "softgate info: unknown option '%s'\n", argv[0]);
        return 2;
    }
    printf("softgate %s\n", SG_VERSION_STRING);
    const char *env = getenv("SOFTGATE_ISA");
    if (env && *env && strcmp(env, "ref") && strcmp(env, "avx2") && strcmp(env, "avx512") &&
        strcmp(env, "native"))
        fprintf(stderr, "softgate: warning: SOFTGATE_ISA=%s is not ref, avx2, avx512 or native; "
                        "using native\n", env);
    printf("cpu features: %s\n", sg_cpu_features());
    printf("isa in use:   %s\n", sg_isa_name(sg_active_isa()));
    printf("kernels:\n");
    for (size_t i = 0; i < sg_kernel_count(); i++)
        printf("  %-30s %s\n", sg_kernel_slot_name(i), sg_kernel_impl_name(i));
    return 0;
}

static void list_benches(FILE *f) {
    for (size_t i = 0; i < sg_bench_count(); i++)
        fprintf(f, "  softgate bench %-12s %s\n", sg_bench_name(i), sg_bench_summary(i));
}

static int cmd_bench(int argc, char **argv) {
    if (argc < 1 || strcmp(argv[0], "--help") == 0) {
        FILE *f = argc < 1 ? stderr : stdout;
        fprintf(f, "usage: softgate bench NAME [options]   (softgate bench NAME --help)\n");
        list_benches(f);
        return argc < 1 ? 2 : 0;
    }
    sg_bench_fn fn = sg_bench_find(argv[0]);
    if (fn) return fn(argc - 1, argv + 1);
    fprintf(stderr, "softgate bench: unknown benchmark '%s'; available:\n", argv[0]);
    list_benches(stderr);
    return 2;
}

int main(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "help") == 0 || strcmp(argv[1], "--help") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "info") == 0) return cmd_info(argc - 2, argv + 2);
    if (strcmp(argv[1], "bench") == 0) return cmd_bench(argc - 2, argv + 2);
    if (strcmp(argv[1], "fit") == 0) return sg_cli_fit(argc - 2, argv + 2);
    if (strcmp(argv[1], "predict") == 0) return sg_cli_predict(argc - 2, argv + 2);
    if (strcmp(argv[1], "eval") == 0) return sg_cli_eval(argc - 2, argv + 2);
    if (strcmp(argv[1], "demo") == 0) return sg_cli_demo(argc - 2, argv + 2);
    if (strcmp(argv[1], "version") == 0 || strcmp(argv[1], "--version") == 0) {
        printf("softgate %s\n", SG_VERSION_STRING);
        return 0;
    }
    fprintf(stderr, "softgate: unknown command '%s' (try: softgate help)\n", argv[1]);
    return 2;
}

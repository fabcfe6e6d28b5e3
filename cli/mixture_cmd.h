/*
 * mixture_cmd.h - the CLI's mixture-of-experts commands (fit, predict,
 * eval, demo in mixture_cmd.c), the SVG plot (svg_plot.c) and the demo
 * data compiled into the binary (demo_data.c). CLI-internal.
 */
#ifndef SG_CLI_MIXTURE_CMD_H
#define SG_CLI_MIXTURE_CMD_H

#include <stddef.h>
#include <stdio.h>

/* Each takes the arguments after the command name; returns the exit code
 * (0 ok, 1 failure, 2 usage error). */
int sg_cli_fit(int argc, char **argv);
int sg_cli_predict(int argc, char **argv);
int sg_cli_eval(int argc, char **argv);
int sg_cli_demo(int argc, char **argv);

/* The demo data set (data/faithful.csv), byte for byte. */
extern const char sg_demo_csv[];
extern const size_t sg_demo_csv_size;

/*
 * A fitted single-covariate Gaussian mixture of experts, for the plot:
 * n points (x, y) with their most probable expert (cls, 0-based); E expert
 * lines y = b0[k] + b1[k] x; the gate probabilities gate [m x E] at the m
 * grid points gx (increasing).
 */
typedef struct sg_plot_data {
    const char *title, *x_name, *y_name;
    size_t n;
    const double *x, *y;
    const int *cls;
    int experts;
    const double *b0, *b1;
    size_t m;
    const double *gx, *gate;
} sg_plot_data;

/* Writes the plot as a standalone SVG document; 0 on success. */
int sg_plot_svg(FILE *f, const sg_plot_data *d);

#endif

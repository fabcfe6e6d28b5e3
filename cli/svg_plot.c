/*
 * svg_plot.c - the plot of `softgate fit --plot` and `softgate demo`: a
 * single-covariate Gaussian mixture of experts as plain SVG 1.1 (no
 * dependencies, no scripts, no external fonts): the data points coloured
 * by their most probable expert with each expert's mean line on top, and
 * the gate probabilities of every expert against x in a panel below.
 * Fitting and file handling do not belong here.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "mixture_cmd.h"

static const char *const palette[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd",
                                      "#ff7f0e", "#17becf", "#8c564b", "#e377c2"};
#define NPAL (sizeof palette / sizeof palette[0])

/* Geometry (pixels). */
#define W 760.0
#define LEFT 70.0
#define RIGHT 150.0 /* room for the legend */
#define TOP 40.0
#define H1 360.0    /* data panel */
#define GAP 50.0
#define H2 150.0    /* gate panel */
#define BOTTOM 50.0

static void xml_text(FILE *f, const char *s) {
    for (; s && *s; s++) {
        switch (*s) {
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '&': fputs("&amp;", f); break;
        case '"': fputs("&quot;", f); break;
        default:
            if ((unsigned char)*s >= 0x20 || *s == '\t') fputc(*s, f);
        }
    }
}

/* A "nice" tick step giving about `want` intervals over [lo, hi]. */
static double nice_step(double lo, double hi, int want) {
    double raw = (hi - lo) / want;
    if (!(raw > 0) || !isfinite(raw)) return 1;
    double mag = pow(10, floor(log10(raw))), r = raw / mag;
    return (r < 1.5 ? 1 : r < 3 ? 2 : r < 7 ? 5 : 10) * mag;
}

typedef struct axis {
    double lo, hi;   /* data range */
    double p0, p1;   /* pixel range (p0 maps lo) */
} axis;

static double map(const axis *a, double v) { return a->p0 + (v - a->lo) / (a->hi - a->lo) * (a->p1 - a->p0); }

/* Widens [lo, hi] by 4% each side (and a degenerate range to width 1). */
static void pad(double *lo, double *hi) {
    if (!(*hi > *lo)) {
        *lo -= 0.5;
        *hi += 0.5;
        return;
    }
    double d = 0.04 * (*hi - *lo);
    *lo -= d;
    *hi += d;
}

static void ticks_x(FILE *f, const axis *ax, double ybase, int labels) {
    double s = nice_step(ax->lo, ax->hi, 8);
    for (double v = ceil(ax->lo / s) * s; v <= ax->hi + 1e-9 * s; v += s) {
        double px = map(ax, v);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#333\"/>\n", px,
                ybase, px, ybase + 5);
        if (labels)
            fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%g</text>\n", px,
                    ybase + 18, fabs(v) < 1e-12 * s ? 0.0 : v);
    }
}

static void ticks_y(FILE *f, const axis *ay, int want) {
    double s = nice_step(ay->lo, ay->hi, want);
    for (double v = ceil(ay->lo / s) * s; v <= ay->hi + 1e-9 * s; v += s) {
        double py = map(ay, v);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#333\"/>\n",
                LEFT - 5, py, LEFT, py);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n", LEFT - 8, py + 4,
                fabs(v) < 1e-12 * s ? 0.0 : v);
    }
}

static void frame(FILE *f, double top, double h) {
    fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" "
               "stroke=\"#333\"/>\n",
            LEFT, top, W - LEFT - RIGHT, h);
}

int sg_plot_svg(FILE *f, const sg_plot_data *d) {
    if (!d->n || d->experts < 1 || d->m < 2) return -1;
    double xlo = d->x[0], xhi = d->x[0], ylo = d->y[0], yhi = d->y[0];
    for (size_t i = 1; i < d->n; i++) {
        xlo = fmin(xlo, d->x[i]), xhi = fmax(xhi, d->x[i]);
        ylo = fmin(ylo, d->y[i]), yhi = fmax(yhi, d->y[i]);
    }
    pad(&xlo, &xhi);
    pad(&ylo, &yhi);
    double right = W - RIGHT, top2 = TOP + H1 + GAP, height = top2 + H2 + BOTTOM;
    axis ax = {xlo, xhi, LEFT, right};
    axis ay = {ylo, yhi, TOP + H1, TOP};
    axis ag = {0, 1, top2 + H2, top2};

    fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
               "<!-- softgate plot: mixture of experts -->\n"
               "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
               "viewBox=\"0 0 %.0f %.0f\" font-family=\"sans-serif\" font-size=\"12\">\n"
               "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
            W, height, W, height);
    fprintf(f, "<text x=\"%.1f\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">", (LEFT + right) / 2);
    xml_text(f, d->title);
    fputs("</text>\n", f);

    /* Data panel: clip lines to the frame. */
    fprintf(f, "<defs><clipPath id=\"panel\"><rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" "
               "height=\"%.1f\"/></clipPath></defs>\n",
            LEFT, TOP, right - LEFT, H1);
    frame(f, TOP, H1);
    ticks_x(f, &ax, TOP + H1, 1);
    ticks_y(f, &ay, 6);
    fputs("<g clip-path=\"url(#panel)\">\n", f);
    for (size_t i = 0; i < d->n; i++)
        fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2.6\" fill=\"%s\" fill-opacity=\"0.55\"/>\n",
                map(&ax, d->x[i]), map(&ay, d->y[i]), palette[(size_t)d->cls[i] % NPAL]);
    for (int k = 0; k < d->experts; k++)
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
                   "stroke-width=\"2.5\"/>\n",
                LEFT, map(&ay, d->b0[k] + d->b1[k] * xlo), right, map(&ay, d->b0[k] + d->b1[k] * xhi),
                palette[(size_t)k % NPAL]);
    fputs("</g>\n", f);
    fprintf(f, "<text x=\"18\" y=\"%.1f\" text-anchor=\"middle\" transform=\"rotate(-90 18 %.1f)\">",
            TOP + H1 / 2, TOP + H1 / 2);
    xml_text(f, d->y_name);
    fputs("</text>\n", f);

    /* Gate panel. */
    frame(f, top2, H2);
    ticks_x(f, &ax, top2 + H2, 1);
    ticks_y(f, &ag, 2);
    for (int k = 0; k < d->experts; k++) {
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"",
                palette[(size_t)k % NPAL]);
        for (size_t j = 0; j < d->m; j++) {
            double g = d->gate[j * (size_t)d->experts + (size_t)k];
            if (!isfinite(g)) continue;
            fprintf(f, "%.1f,%.1f ", map(&ax, d->gx[j]), map(&ag, g));
        }
        fputs("\"/>\n", f);
    }
    fprintf(f, "<text x=\"18\" y=\"%.1f\" text-anchor=\"middle\" transform=\"rotate(-90 18 %.1f)\">"
               "gate</text>\n",
            top2 + H2 / 2, top2 + H2 / 2);
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">", (LEFT + right) / 2, height - 10);
    xml_text(f, d->x_name);
    fputs("</text>\n", f);

    /* Legend. */
    for (int k = 0; k < d->experts; k++) {
        double ly = TOP + 10 + 20 * k;
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
                   "stroke-width=\"3\"/>\n<text x=\"%.1f\" y=\"%.1f\">expert %d</text>\n",
                right + 15, ly, right + 40, ly, palette[(size_t)k % NPAL], right + 46, ly + 4, k + 1);
    }
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" fill=\"#555\">points: most</text>\n"
               "<text x=\"%.1f\" y=\"%.1f\" fill=\"#555\">probable expert</text>\n",
            right + 15, TOP + 30 + 20 * d->experts, right + 15, TOP + 45 + 20 * d->experts);
    fputs("</svg>\n", f);
    return ferror(f) ? -1 : 0;
}

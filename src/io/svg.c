/*
 * svg.c - line charts as self-contained SVG (nabla/io.h), for loss and
 * accuracy curves. One shared y range over all series, 5 ticks per axis.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../../include/nabla/io.h"

static void text_escaped(FILE *f, const char *s) {
    for (; s && *s; s++) {
        if (*s == '<') fputs("&lt;", f);
        else if (*s == '>') fputs("&gt;", f);
        else if (*s == '&') fputs("&amp;", f);
        else fputc(*s, f);
    }
}

int nb_svg_curves(const char *path, const char *title, int n, const char *const *labels, const double *const *ys,
                  const int64_t *lens) {
    const char *fn = "nb_svg_curves";
    if (!path || n <= 0 || !ys || !lens) return nb_fail(fn, "need a path and at least one series"), -1;
    double lo = INFINITY, hi = -INFINITY;
    int64_t maxlen = 1;
    for (int i = 0; i < n; i++) {
        if (lens[i] > maxlen) maxlen = lens[i];
        for (int64_t k = 0; ys[i] && k < lens[i]; k++)
            if (isfinite(ys[i][k])) lo = fmin(lo, ys[i][k]), hi = fmax(hi, ys[i][k]);
    }
    if (!(lo <= hi)) lo = 0, hi = 1;
    if (hi - lo < 1e-12) hi = lo + 1;
    FILE *f = fopen(path, "w");
    if (!f) return nb_fail(fn, "cannot open the output file"), -1;
    const double W = 720, H = 420, L = 70, R = 160, T = 40, B = 50;
    const char *colors[6] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"};
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%g\" height=\"%g\" viewBox=\"0 0 %g %g\" "
               "font-family=\"Helvetica, Arial, sans-serif\" font-size=\"12\">\n", W, H, W, H);
    fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n<text x=\"%g\" y=\"24\" font-size=\"16\">", L);
    text_escaped(f, title ? title : "");
    fprintf(f, "</text>\n");
    double pw = W - L - R, ph = H - T - B;
    for (int t = 0; t <= 4; t++) {
        double v = lo + (hi - lo) * t / 4, y = T + ph * (1 - t / 4.0);
        double x = L + pw * t / 4;
        fprintf(f, "<line x1=\"%g\" y1=\"%g\" x2=\"%g\" y2=\"%g\" stroke=\"#ddd\"/>\n", L, y, L + pw, y);
        fprintf(f, "<text x=\"%g\" y=\"%g\" text-anchor=\"end\">%.4g</text>\n", L - 6, y + 4, v);
        fprintf(f, "<text x=\"%g\" y=\"%g\" text-anchor=\"middle\">%.4g</text>\n", x, T + ph + 18,
                (double)(maxlen - 1) * t / 4);
    }
    fprintf(f, "<rect x=\"%g\" y=\"%g\" width=\"%g\" height=\"%g\" fill=\"none\" stroke=\"#333\"/>\n", L, T, pw, ph);
    for (int i = 0; i < n; i++) {
        const char *c = colors[i % 6];
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.8\" points=\"", c);
        for (int64_t k = 0; ys[i] && k < lens[i]; k++) {
            if (!isfinite(ys[i][k])) continue;
            double x = L + pw * (maxlen > 1 ? (double)k / (double)(maxlen - 1) : 0.5);
            double y = T + ph * (1 - (ys[i][k] - lo) / (hi - lo));
            fprintf(f, "%.2f,%.2f ", x, y);
        }
        fprintf(f, "\"/>\n<line x1=\"%g\" y1=\"%g\" x2=\"%g\" y2=\"%g\" stroke=\"%s\" stroke-width=\"3\"/>\n",
                L + pw + 12, T + 12 + 18.0 * i, L + pw + 32, T + 12 + 18.0 * i, c);
        fprintf(f, "<text x=\"%g\" y=\"%g\">", L + pw + 38, T + 16 + 18.0 * i);
        text_escaped(f, labels && labels[i] ? labels[i] : "series");
        fprintf(f, "</text>\n");
    }
    fprintf(f, "</svg>\n");
    int bad = ferror(f);
    if (fclose(f) != 0 || bad) return nb_fail(fn, "write failed"), -1;
    return 0;
}

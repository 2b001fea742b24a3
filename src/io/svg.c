/*
 * svg.c - line charts as self-contained SVG (nabla/io.h), for the loss and
 * accuracy curves of a training run.
 *
 * A chart is one or more panels stacked top to bottom that share the x axis
 * (points x = 1, 2, ..., as a console numbers epochs); each panel has its own
 * y axis with a title, and its series' legend above it. Axes span round
 * numbers: ticks step by 1, 2 or 5 times a power of ten (nb_nice_ticks), the y
 * range is widened to the ticks around the data, the x ticks are whole numbers.
 * The last finite value of each series is written at the right end of its line
 * (labels of one panel pushed apart so they never overlap). The output uses
 * only basic SVG 1.1 (rect, line, polyline, circle, text), so any viewer or
 * converter renders it.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../../include/nabla/io.h"

int nb_nice_ticks(double lo, double hi, int max_ticks, double *first, double *step) {
    if (!isfinite(lo) || !isfinite(hi) || lo > hi || max_ticks < 3 || !first || !step)
        return nb_fail("nb_nice_ticks", "need finite lo <= hi, max_ticks >= 3 and two outputs"), 0;
    if (hi - lo <= 1e-12 * fmax(1, fmax(fabs(lo), fabs(hi)))) { /* one value: a small range around it */
        double pad = lo != 0 ? fabs(lo) * 0.05 : 0.5;
        lo -= pad;
        hi += pad;
    }
    double raw = (hi - lo) / (max_ticks - 1), mag = pow(10, floor(log10(raw)));
    static const double mult[] = {1, 2, 5, 10, 20, 50, 100};
    for (size_t i = 0; i < sizeof mult / sizeof mult[0]; i++) {
        double s = mult[i] * mag, a = floor(lo / s + 1e-9), b = ceil(hi / s - 1e-9);
        int n = (int)(b - a) + 1;
        if (n <= max_ticks) {
            *first = a * s;
            *step = s;
            return n < 2 ? 2 : n;
        }
    }
    /* not reached: 100 mag > 10 raw >= (hi - lo) / (max_ticks - 2), and a step that large needs at most
       max_ticks ticks wherever the range lies */
    return nb_fail("nb_nice_ticks", "no step fits"), 0;
}

static void text_escaped(FILE *f, const char *s) {
    for (; s && *s; s++) {
        if (*s == '<') fputs("&lt;", f);
        else if (*s == '>') fputs("&gt;", f);
        else if (*s == '&') fputs("&amp;", f);
        else if (*s == '"') fputs("&quot;", f);
        else fputc(*s, f);
    }
}

/* v printed with as many decimals as the step needs (step 0.05 -> 2), never "-0". */
static void tick_label(char *buf, size_t cap, double v, double step) {
    if (fabs(v) < step * 1e-6) v = 0;
    int dec = (int)ceil(-log10(step) - 1e-9);
    if (dec < 0) dec = 0;
    if (fabs(v) >= 1e6 || (v != 0 && fabs(v) < 1e-4)) snprintf(buf, cap, "%.3g", v);
    else snprintf(buf, cap, "%.*f", dec, v);
}

/* A log axis's tick: plain from 0.0001 to 10000, else as a power of ten written short ("1e9", "1e-5"), so
   the labels of one axis keep one style and stay narrow. */
static void log_tick_label(char *buf, size_t cap, double v) {
    if (v >= 1e-4 && v <= 1e4) {
        snprintf(buf, cap, "%g", v);
        return;
    }
    int e = (int)floor(log10(v) + 1e-9);
    double m = v / pow(10, e);
    if (fabs(m - round(m)) < 1e-6) snprintf(buf, cap, "%.0fe%d", round(m), e);
    else snprintf(buf, cap, "%.2ge%d", m, e);
}

/* The last finite value of a series, with its index; false when it has none. */
static bool last_finite(const nb_svg_series *s, int64_t *at) {
    for (int64_t k = s->len - 1; s->y && k >= 0; k--)
        if (isfinite(s->y[k])) return *at = k, true;
    return false;
}

/* A y axis: linear from lo to hi, or log10 from 10^lo to 10^hi. */
typedef struct {
    bool log;
    double lo, hi;
} axis;

static bool plotted(const axis *a, double v) { return isfinite(v) && (!a->log || v > 0); }

/* Log axis ticks: the 1-2-5 values while [lo, hi] spans at most 3 decades, else the powers of ten; the
   axis runs from the largest tick value <= lo to the smallest >= hi. Returns how many (at most cap). */
static int log_ticks(double lo, double hi, double *t, int cap, axis *a) {
    int k0 = (int)floor(log10(lo) + 1e-9), k1 = (int)ceil(log10(hi) - 1e-9);
    bool all = k1 - k0 <= 3;
    static const double m[3] = {1, 2, 5};
    int n = 0;
    for (int k = k0; k <= k1 + 1 && n < cap; k++)
        for (int j = 0; j < (all ? 3 : 1) && n < cap; j++) {
            double v = m[j] * pow(10, k);
            if (v <= lo * (1 + 1e-9)) n = 0; /* a later value still <= lo starts the axis instead */
            t[n++] = v;
            if (v >= hi * (1 - 1e-9)) goto done;
        }
done:
    if (n < 2) t[n] = t[0] * (all ? 2 : 10), n = 2; /* lo == hi on a tick */
    a->log = true;
    a->lo = log10(t[0]);
    a->hi = log10(t[n - 1]);
    return n;
}

static int chart(const char *fn, const char *path, const char *title, const char *xlabel, int npanels,
                 const nb_svg_panel *panels, int nseries, const nb_svg_series *series) {
    if (!path || npanels <= 0 || npanels > 8 || nseries <= 0 || !series)
        return nb_fail(fn, "need a path, 1 to 8 panels and at least one series"), -1;
    int64_t maxlen = 1;
    for (int i = 0; i < nseries; i++) {
        if (series[i].panel < 0 || series[i].panel >= npanels || series[i].len < 0)
            return nb_failf(fn, "series %d: panel %d of %d, length %lld", i, series[i].panel, npanels,
                            (long long)series[i].len), -1;
        if (series[i].len > maxlen) maxlen = series[i].len;
    }
    FILE *f = fopen(path, "w");
    if (!f) return nb_failf(fn, "cannot open '%s': %s", path, strerror(errno)), -1;

    const double W = 760, L = 78, R = 92, T = 58, PH = 230, GAP = 58, B = 58;
    const double pw = W - L - R, H = T + npanels * PH + (npanels - 1) * GAP + B + 22;
    static const char *colors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"};
    /* x axis: points at 1..maxlen, whole-number ticks in 1-2-5 steps (and 1 itself where it fits) */
    double xlo = 1, xhi = (double)maxlen;
    if (maxlen == 1) xlo = 0.5, xhi = 1.5;
    double xfirst, xstep;
    nb_nice_ticks(1, (double)maxlen, 8, &xfirst, &xstep);
    if (xstep < 1) xstep = 1;
#define XPOS(v) (L + pw * ((v) - xlo) / (xhi - xlo))

    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%g\" height=\"%g\" viewBox=\"0 0 %g %g\" "
               "font-family=\"Helvetica, Arial, sans-serif\" font-size=\"12\">\n", W, H, W, H);
    fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
    fprintf(f, "<text x=\"%g\" y=\"24\" font-size=\"16\" font-weight=\"bold\">", L);
    text_escaped(f, title ? title : "");
    fprintf(f, "</text>\n");

    for (int p = 0; p < npanels; p++) {
        double top = T + p * (PH + GAP), bottom = top + PH;
        /* y range over this panel's values, widened to round ticks */
        axis ax = {panels && panels[p].log_y, 0, 1};
        double lo = INFINITY, hi = -INFINITY;
        for (int i = 0; i < nseries; i++)
            for (int64_t k = 0; series[i].panel == p && series[i].y && k < series[i].len; k++)
                if (plotted(&ax, series[i].y[k])) lo = fmin(lo, series[i].y[k]), hi = fmax(hi, series[i].y[k]);
        double ticks[64] = {0}, ystep = 0;
        int nt;
        if (ax.log) {
            if (!(lo <= hi)) lo = 0.1, hi = 1;
            nt = log_ticks(lo, hi, ticks, 64, &ax);
        } else {
            if (!(lo <= hi)) lo = 0, hi = 1;
            double yfirst;
            nt = nb_nice_ticks(lo, hi, 6, &yfirst, &ystep);
            if (nt < 2) nt = 2, yfirst = lo, ystep = hi - lo; /* not reached: lo <= hi are finite */
            for (int t = 0; t < nt; t++) ticks[t] = yfirst + t * ystep;
            ax.lo = ticks[0];
            ax.hi = ticks[nt - 1];
        }
#define YPOS(v) (bottom - PH * ((ax.log ? log10(v) : (v)) - ax.lo) / (ax.hi - ax.lo))
        char buf[64];
        for (int t = 0; t < nt; t++) {
            double v = ticks[t], y = YPOS(v);
            fprintf(f, "<line x1=\"%g\" y1=\"%.2f\" x2=\"%g\" y2=\"%.2f\" stroke=\"#e4e4e4\"/>\n", L, y, L + pw, y);
            if (ax.log) log_tick_label(buf, sizeof buf, v);
            else tick_label(buf, sizeof buf, v, ystep);
            fprintf(f, "<text class=\"%s\" x=\"%g\" y=\"%.2f\" text-anchor=\"end\" fill=\"#333\">%s</text>\n",
                    ax.log ? "ytick log" : "ytick", L - 7, y + 4, buf);
        }
        for (double v = ceil(xlo / xstep) * xstep; v <= xhi + 1e-9; v += xstep) {
            if (v < 1) continue;
            double x = XPOS(v);
            fprintf(f, "<line x1=\"%.2f\" y1=\"%g\" x2=\"%.2f\" y2=\"%g\" stroke=\"#e4e4e4\"/>\n", x, top, x, bottom);
            fprintf(f, "<line x1=\"%.2f\" y1=\"%g\" x2=\"%.2f\" y2=\"%g\" stroke=\"#333\"/>\n", x, bottom, x, bottom + 5);
            if (p == npanels - 1)
                fprintf(f, "<text x=\"%.2f\" y=\"%g\" text-anchor=\"middle\" fill=\"#333\">%.0f</text>\n", x, bottom + 19, v);
        }
        if (xstep > 2 && maxlen > 1) { /* the first epoch, unless a tick is close */
            double x = XPOS(1);
            fprintf(f, "<line x1=\"%.2f\" y1=\"%g\" x2=\"%.2f\" y2=\"%g\" stroke=\"#333\"/>\n", x, bottom, x, bottom + 5);
            if (p == npanels - 1)
                fprintf(f, "<text x=\"%.2f\" y=\"%g\" text-anchor=\"middle\" fill=\"#333\">1</text>\n", x, bottom + 19);
        }
        fprintf(f, "<rect x=\"%g\" y=\"%g\" width=\"%g\" height=\"%g\" fill=\"none\" stroke=\"#333\"/>\n", L, top, pw, PH);
        if (panels && panels[p].ylabel) {
            fprintf(f, "<text transform=\"translate(%g,%g) rotate(-90)\" text-anchor=\"middle\" font-size=\"13\">",
                    L - 52, top + PH / 2);
            text_escaped(f, panels[p].ylabel);
            if (ax.log) fputs(" (log scale)", f);
            fprintf(f, "</text>\n");
        }
        /* the series, then the legend above the panel and the final values right of it */
        double lx = L, endy[64];
        int endi[64], nend = 0;
        for (int i = 0; i < nseries; i++) {
            const nb_svg_series *s = &series[i];
            if (s->panel != p) continue;
            const char *c = colors[i % 6];
            fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" stroke-linejoin=\"round\" points=\"", c);
            for (int64_t k = 0; s->y && k < s->len; k++)
                if (plotted(&ax, s->y[k])) fprintf(f, "%.2f,%.2f ", XPOS((double)(k + 1)), YPOS(s->y[k]));
            fprintf(f, "\"/>\n");
            for (int64_t k = 0; s->y && k < s->len && s->len <= 30; k++)
                if (plotted(&ax, s->y[k]))
                    fprintf(f, "<circle cx=\"%.2f\" cy=\"%.2f\" r=\"2.5\" fill=\"%s\"/>\n", XPOS((double)(k + 1)),
                            YPOS(s->y[k]), c);
            fprintf(f, "<line x1=\"%g\" y1=\"%g\" x2=\"%g\" y2=\"%g\" stroke=\"%s\" stroke-width=\"3\"/>\n", lx, top - 10,
                    lx + 18, top - 10, c);
            fprintf(f, "<text x=\"%g\" y=\"%g\">", lx + 23, top - 6);
            text_escaped(f, s->label ? s->label : "series");
            fprintf(f, "</text>\n");
            lx += 23 + 7.2 * (double)strlen(s->label ? s->label : "series") + 22;
            int64_t at = 0;
            if (nend < 64 && last_finite(s, &at) && plotted(&ax, s->y[at])) endy[nend] = YPOS(s->y[at]), endi[nend++] = i;
        }
        /* final-value labels in order of height, at least 14 px apart, inside the panel's height */
        for (int a = 1; a < nend; a++)
            for (int b = a; b > 0 && endy[b] < endy[b - 1]; b--) {
                double ty = endy[b];
                int ti = endi[b];
                endy[b] = endy[b - 1], endi[b] = endi[b - 1];
                endy[b - 1] = ty, endi[b - 1] = ti;
            }
        for (int a = 1; a < nend; a++)
            if (endy[a] < endy[a - 1] + 14) endy[a] = endy[a - 1] + 14;
        for (int a = nend - 1; a >= 0; a--) {
            if (endy[a] > bottom + 4 - 14.0 * (nend - 1 - a)) endy[a] = bottom + 4 - 14.0 * (nend - 1 - a);
            if (a + 1 < nend && endy[a] > endy[a + 1] - 14) endy[a] = endy[a + 1] - 14;
        }
        for (int a = 0; a < nend; a++) {
            const nb_svg_series *s = &series[endi[a]];
            int64_t at = 0;
            last_finite(s, &at);
            double v = s->y[at];
            snprintf(buf, sizeof buf, fabs(v) >= 1e5 || (v != 0 && fabs(v) < 1e-3) ? "%.3g" : "%.4f", v);
            fprintf(f, "<text x=\"%g\" y=\"%.2f\" fill=\"%s\" font-weight=\"bold\">%s</text>\n", L + pw + 7,
                    endy[a] + 4, colors[endi[a] % 6], buf);
        }
#undef YPOS
    }
    double axis_y = T + npanels * PH + (npanels - 1) * GAP;
    fprintf(f, "<text x=\"%g\" y=\"%g\" text-anchor=\"middle\" font-size=\"13\">", L + pw / 2, axis_y + 42);
    text_escaped(f, xlabel ? xlabel : "");
    fprintf(f, "</text>\n</svg>\n");
#undef XPOS
    int bad = ferror(f);
    if (fclose(f) != 0 || bad) return nb_failf(fn, "cannot write '%s': %s", path, strerror(errno)), -1;
    return 0;
}

int nb_svg_chart(const char *path, const char *title, const char *xlabel, int npanels, const nb_svg_panel *panels,
                 int nseries, const nb_svg_series *series) {
    return chart("nb_svg_chart", path, title, xlabel, npanels, panels, nseries, series);
}

int nb_svg_curves(const char *path, const char *title, int n, const char *const *labels, const double *const *ys,
                  const int64_t *lens) {
    const char *fn = "nb_svg_curves";
    if (!path || n <= 0 || !ys || !lens) return nb_fail(fn, "need a path and at least one series"), -1;
    if (n > 64) return nb_fail(fn, "at most 64 series"), -1;
    nb_svg_series s[64];
    for (int i = 0; i < n; i++) s[i] = (nb_svg_series){labels ? labels[i] : NULL, ys[i], lens[i], 0};
    return chart(fn, path, title, "x", 1, NULL, n, s);
}

/*
 * units.c - library parts the nabla program's outputs rest on:
 *  - nb_nice_ticks, the axis ticks of the curves SVG: for many ranges the ticks
 *    cover the data, are at most max_ticks, start at a multiple of the step, and
 *    step by 1, 2 or 5 times a power of ten, the smallest such step that fits;
 *  - graph drawings label tensors with their names, escaped for DOT and Mermaid.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "nabla.h"
#include "nabla/io.h"

static int failed;

#define CHECK(c)                                                                     \
    do {                                                                             \
        if (!(c)) failed++, printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #c);     \
    } while (0)

static int is_125(double step) {
    double m = step / pow(10, floor(log10(step)));
    return fabs(m - 1) < 1e-9 || fabs(m - 2) < 1e-9 || fabs(m - 5) < 1e-9 || fabs(m - 10) < 1e-9;
}

static void check_range(double lo, double hi, int max) {
    double first = NAN, step = NAN;
    int n = nb_nice_ticks(lo, hi, max, &first, &step);
    CHECK(n >= 2 && n <= max);
    CHECK(step > 0 && is_125(step));
    CHECK(first <= lo + 1e-9 * step && first + (n - 1) * step >= hi - 1e-9 * step);
    CHECK(fabs(first / step - round(first / step)) < 1e-6);
    /* the next smaller 1-2-5 step would need more than max ticks */
    double m = step / pow(10, floor(log10(step) + 1e-12)), smaller = step * (fabs(m - 5) < 1e-9 ? 0.4 : 0.5);
    if (hi - lo > 1e-9 * fmax(1, fabs(lo))) CHECK(ceil(hi / smaller - 1e-9) - floor(lo / smaller + 1e-9) + 1 > max);
    if (failed && failed < 5) printf("  range [%g, %g] max %d: first %g step %g n %d\n", lo, hi, max, first, step, n);
}

static char *render(nb_tensor *t, bool mermaid) {
    static char buf[4096];
    FILE *f = tmpfile();
    if (!f) return NULL;
    int rc = mermaid ? nb_graph_mermaid(t, f) : nb_graph_dot(t, f);
    rewind(f);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = 0;
    fclose(f);
    return rc == 0 ? buf : NULL;
}

static void test_draw_names(void) {
    nb_scope_begin();
    nb_tensor *w = nb_full(NB_F64, 2, (int64_t[]){2, 3}, 1.0), *x = nb_full(NB_F64, 2, (int64_t[]){3, 1}, 2.0);
    nb_set_requires_grad(w, true);
    nb_set_name(w, "layers.0.weight");
    nb_set_name(x, "say \"hi\" <b> \\");
    nb_tensor *y = nb_sum(nb_matmul(w, x));
    char *dot = render(y, false);
    CHECK(dot && strstr(dot, "label=\"layers.0.weight (2,3)\""));
    CHECK(dot && strstr(dot, "label=\"say \\\"hi\\\" <b> \\\\ (3,1)\""));
    char *mm = render(y, true);
    CHECK(mm && strstr(mm, "((\"layers.0.weight (2,3) leaf\"))"));
    CHECK(mm && strstr(mm, "((\"say #34;hi#34; #60;b#62; \\ (3,1)\"))"));
    nb_scope_end();
}

int main(void) {
    test_draw_names();
    double first, step;
    /* the loss axis: 0.0005863 .. 0.2684 */
    int n = nb_nice_ticks(0.0005863, 0.2684, 6, &first, &step);
    CHECK(n == 4 && first == 0 && fabs(step - 0.1) < 1e-15);
    n = nb_nice_ticks(0.73, 1.0, 6, &first, &step); /* 0.70 .. 1.00 by 0.05 would be 7 ticks */
    CHECK(n == 4 && fabs(first - 0.7) < 1e-12 && fabs(step - 0.1) < 1e-15);
    n = nb_nice_ticks(1, 60, 8, &first, &step);
    CHECK(n == 7 && first == 0 && step == 10);
    n = nb_nice_ticks(1, 3, 8, &first, &step);
    CHECK(n == 5 && first == 1 && step == 0.5);
    n = nb_nice_ticks(-3.2, 7.9, 6, &first, &step);
    CHECK(n == 4 && first == -5 && step == 5);
    n = nb_nice_ticks(1, 1, 6, &first, &step); /* one value: a small range around it */
    CHECK(n >= 2 && first <= 1 && first + (n - 1) * step >= 1 && is_125(step));
    n = nb_nice_ticks(0, 0, 6, &first, &step);
    CHECK(n >= 2 && first <= 0 && first + (n - 1) * step >= 0);
    CHECK(nb_nice_ticks(NAN, 1, 6, &first, &step) == 0 && nb_last_error() && strstr(nb_last_error(), "nb_nice_ticks"));
    nb_clear_error();
    CHECK(nb_nice_ticks(0, INFINITY, 6, &first, &step) == 0);
    CHECK(nb_nice_ticks(2, 1, 6, &first, &step) == 0);
    CHECK(nb_nice_ticks(0, 1, 2, &first, &step) == 0);
    nb_clear_error();
    /* many ranges, scales from 1e-6 to 1e9, both signs */
    unsigned long long s = 12345;
    for (int i = 0; i < 20000; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        double u = (double)(s >> 11) / 9007199254740992.0;
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        double v = (double)(s >> 11) / 9007199254740992.0;
        double scale = pow(10, -6 + 15 * u), lo = (v - 0.5) * scale * (i % 3 ? 1 : 4), hi = lo + scale * v;
        check_range(lo, hi, 3 + i % 8);
    }
    printf("%s\n", failed ? "units: FAILED" : "units: all passed");
    return failed != 0;
}

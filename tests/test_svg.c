/*
 * test_svg.c - nb_nice_ticks, the axis ticks of the curves SVG: for many ranges
 * the ticks cover the data, are at most max_ticks, start at a multiple of the
 * step, and step by 1, 2 or 5 times a power of ten, the smallest such step that
 * fits; bad ranges are errors.
 */
#include "harness.h"
#include "nabla/io.h"

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
    if (th_cur_failed && th_cur_failed < 5) printf("  range [%g, %g] max %d: first %g step %g n %d\n", lo, hi, max, first, step, n);
}

static void test_nice_ticks(void) {
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
}

int main(void) {
    RUN(test_nice_ticks);
    return th_finish();
}

/*
 * bench_vmath.c - elements per second of vmath's f32 row functions against the C library's scalar ones.
 *
 * One thread, rows of 2^20 floats drawn over each function's useful range, the median of repeated runs.
 * Libm columns: expf, logf, tanhf, 1 / (1 + expf(-x)), erff, x (1 + erff(x / sqrt 2)) / 2 in a plain
 * loop (what the f32 unary kernels ran before). Also prints each instruction-set variant this CPU has, and
 * nbi_vexpf_fast (exp_fast: f32 arithmetic, 1.07 ulp) on exp's inputs. Figures only.
 */
#define _POSIX_C_SOURCE 199309L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "timing.h"
#include "vmath.h"

#define N (1 << 20)

static void libm_row(int f, float *y, const float *x, int64_t n) {
    switch (f) {
    case 0: for (int64_t i = 0; i < n; i++) y[i] = expf(x[i]); break;
    case 1: for (int64_t i = 0; i < n; i++) y[i] = logf(x[i]); break;
    case 2: for (int64_t i = 0; i < n; i++) y[i] = tanhf(x[i]); break;
    case 3: for (int64_t i = 0; i < n; i++) y[i] = 1.0f / (1.0f + expf(-x[i])); break;
    case 4: for (int64_t i = 0; i < n; i++) y[i] = erff(x[i]); break;
    default:
        for (int64_t i = 0; i < n; i++) y[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.70710678f));
        break;
    }
}

int main(void) {
    static const char *names[6] = {"exp", "log", "tanh", "sigmoid", "erf", "gelu"};
    static const float lo[6] = {-80, 1e-6f, -6, -20, -4, -8}, hi[6] = {80, 1e6f, 6, 20, 4, 8};
    float *x = malloc(sizeof(float) * N), *y = malloc(sizeof(float) * N);
    double t[200], sec;
    int runs;
    unsigned s = 12345;
    printf("%-8s %12s %12s %12s %12s %8s\n", "Melem/s", "libm", "vmath", "generic", "avx2", "avx512");
    for (int f = 0; f < 6; f++) {
        for (int i = 0; i < N; i++) {
            s = s * 1664525u + 1013904223u;
            const float u = (float)(s >> 8) / 16777216.0f;
            x[i] = f == 1 ? expf(logf(lo[f]) + u * (logf(hi[f]) - logf(lo[f]))) : lo[f] + u * (hi[f] - lo[f]);
        }
        double rate[5];
        libm_row(f, y, x, N);
        BENCH_TIME_MEDIAN(sec, runs, t, 200, 5, 0.5, libm_row(f, y, x, N));
        rate[0] = N / sec / 1e6;
        void (*fn[6])(float *, const float *, int64_t) = {nbi_vexpf, nbi_vlogf, nbi_vtanhf, nbi_vsigmoidf, nbi_verff, nbi_vgeluf};
        fn[f](y, x, N);
        BENCH_TIME_MEDIAN(sec, runs, t, 200, 5, 0.5, fn[f](y, x, N));
        rate[1] = N / sec / 1e6;
        for (int v = 0; v < 3; v++) {
            rate[2 + v] = 0;
            if (!nbi_vmath_variant(v, f, y, x, N)) continue;
            BENCH_TIME_MEDIAN(sec, runs, t, 200, 5, 0.5, nbi_vmath_variant(v, f, y, x, N));
            rate[2 + v] = N / sec / 1e6;
        }
        printf("%-8s %12.0f %12.0f %12.0f %12.0f %8.0f\n", names[f], rate[0], rate[1], rate[2], rate[3], rate[4]);
        if (f != 0) continue;
        /* exp_fast: the f32-arithmetic exp of the softmax family, attention and the GELU gradient (1.07 ulp) */
        nbi_vexpf_fast(y, x, N);
        BENCH_TIME_MEDIAN(sec, runs, t, 200, 5, 0.5, nbi_vexpf_fast(y, x, N));
        rate[1] = N / sec / 1e6;
        for (int v = 0; v < 3; v++) {
            rate[2 + v] = 0;
            if (!nbi_vexpf_fast_variant(v, y, x, N)) continue;
            BENCH_TIME_MEDIAN(sec, runs, t, 200, 5, 0.5, nbi_vexpf_fast_variant(v, y, x, N));
            rate[2 + v] = N / sec / 1e6;
        }
        printf("%-8s %12s %12.0f %12.0f %12.0f %8.0f\n", "exp_fast", "", rate[1], rate[2], rate[3], rate[4]);
    }
    (void)runs;
    free(x);
    free(y);
    return 0;
}

/*
 * peer_openblas.c - OpenBLAS peer of bench_gemm: GFLOP/s of cblas_sgemm on square f32 row-major
 * products C = A * B (NoTrans / NoTrans, alpha 1, beta 0) at n = 64 ... 2048.
 *
 *   usage: peer_openblas THREADS [BUDGET_S [N]]     (N: that size only)
 *
 * THREADS is handed to openblas_set_num_threads (bench/run.sh also sets OPENBLAS_NUM_THREADS to it) and
 * is printed as the thread count of every line. Per size: the matrices are filled as bench_gemm fills
 * them (srand(1), then A and B interleaved from rand() / RAND_MAX - 0.5), one warm-up call, then timed
 * calls until BUDGET_S seconds (default 1.0) have passed, at least MIN_REPS of them; the median counts.
 *
 * Output: '#' comment lines, and one line "openblas gemm_gflops N THREADS VALUE" per size.
 * Built by bench/run.sh against libopenblas.so; it is no part of the library or its build.
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <cblas.h>

#include "timing.h"

/* OpenBLAS extensions; declared here too in case the cblas.h found is not OpenBLAS's own. */
void openblas_set_num_threads(int num_threads);
int openblas_get_num_threads(void);
char *openblas_get_config(void);
char *openblas_get_corename(void);

enum { MIN_REPS = 3, MAX_REPS = 200000 };

static void sgemm(int n, const float *a, const float *b, float *c)
{
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
}

/* Largest relative error of row 0 of c against a double-precision product (a sanity check only). */
static double row0_error(int n, const float *a, const float *b, const float *c)
{
    double err = 0, scale = 1e-30;
    for (int j = 0; j < n; ++j) {
        double s = 0;
        for (int k = 0; k < n; ++k)
            s += (double)a[k] * (double)b[(size_t)k * (size_t)n + (size_t)j];
        err = fmax(err, fabs(s - (double)c[j]));
        scale = fmax(scale, fabs(s));
    }
    return err / scale;
}

int main(int argc, char **argv)
{
    static const int sizes[] = {64, 128, 256, 512, 1024, 2048};
    if (argc < 2 || argc > 4 || atoi(argv[1]) < 1) {
        fprintf(stderr, "usage: %s THREADS [BUDGET_S [N]]\n", argv[0]);
        return 2;
    }
    const int threads = atoi(argv[1]);
    const double budget = argc > 2 ? atof(argv[2]) : 1.0;
    const int only = argc > 3 ? atoi(argv[3]) : 0;
    double *times = malloc(MAX_REPS * sizeof(double));
    if (!times) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    openblas_set_num_threads(threads);
    printf("# OpenBLAS %s; core %s; %d thread(s) (openblas_get_num_threads); budget %.2f s per size\n",
           openblas_get_config(), openblas_get_corename(), openblas_get_num_threads(), budget);
    fflush(stdout);

    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; ++si) {
        const int n = sizes[si];
        if (only && n != only)
            continue;
        const size_t nn = (size_t)n * (size_t)n;
        float *a = malloc(nn * sizeof(float)), *b = malloc(nn * sizeof(float)), *c = malloc(nn * sizeof(float));
        if (!a || !b || !c) {
            fprintf(stderr, "out of memory\n");
            return 1;
        }
        srand(1);
        for (size_t i = 0; i < nn; ++i) {
            a[i] = (float)rand() / (float)RAND_MAX - 0.5f;
            b[i] = (float)rand() / (float)RAND_MAX - 0.5f;
        }
        sgemm(n, a, b, c); /* warm-up: thread start, buffers, first touch of c */
        const double err = row0_error(n, a, b, c);

        int reps;
        double med;
        BENCH_TIME_MEDIAN(med, reps, times, MAX_REPS, MIN_REPS, budget, sgemm(n, a, b, c));
        printf("# sgemm %d: %d reps, median %.1f us, row 0 rel err %.2g\n", n, reps, med * 1e6, err);
        printf("openblas gemm_gflops %d %d %.2f\n", n, threads, 2.0 * n * (double)n * n / med * 1e-9);
        fflush(stdout);
        free(a);
        free(b);
        free(c);
    }
    free(times);
    return 0;
}

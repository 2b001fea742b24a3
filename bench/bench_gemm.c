/*
 * bench_gemm.c - GFLOP/s of nbi_gemm_f32 / nbi_gemm_f64 on square row-major products, median of several
 * runs per size, with a chosen kernel on THREADS threads (default: nabla's default).
 *
 *   usage: bench_gemm [kernel [threads]]     kernel: 0 auto (default), 1 reference, 2 avx2, 3 avx512,
 *                                           4 the system BLAS (a build with -DNABLA_BLAS=ON; BLAS threads
 *                                           follow its own settings, e.g. OPENBLAS_NUM_THREADS)
 *          bench_gemm --table [--quick | --budget S] [--only N THREADS]
 *                                           f32 at 64..2048 on 1 and 2 threads (or only n = N on THREADS),
 *                                           as the lines "nabla gemm_gflops N THREADS GFLOPS" that
 *                                           bench/run.sh reads; each the median of the runs within S
 *                                           seconds (default 1, --quick 0.1), at least 5
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gemm.h"
#include "nabla.h"
#include "timing.h"

/* One warm-up call, then the median seconds of the calls within `budget` seconds (at least min_runs). */
#define TIME_MEDIAN(result, min_runs, budget, call)                                                            \
    do {                                                                                                       \
        enum { CAP_ = 2000 };                                                                                  \
        static double t_[CAP_];                                                                                \
        int runs_;                                                                                             \
        call;                                                                                                  \
        BENCH_TIME_MEDIAN(result, runs_, t_, CAP_, min_runs, budget, call);                                    \
    } while (0)

static const int sizes[] = {64, 128, 256, 512, 1024, 2048};

/* The table's rows: median of runs within a time budget per size and thread count. */
static int table(double budget, int only_n, int only_threads)
{
    for (int threads = 1; threads <= 2; threads++) {
        if (only_threads && threads != only_threads)
            continue;
        nb_set_num_threads(threads);
        for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; ++si) {
            const int n = sizes[si];
            if (only_n && n != only_n)
                continue;
            const size_t nn = (size_t)n * (size_t)n;
            float *a = malloc(nn * sizeof(float)), *b = malloc(nn * sizeof(float)), *c = malloc(nn * sizeof(float));
            if (!a || !b || !c) {
                printf("# out of memory at n = %d\n", n);
                return 1;
            }
            srand(1); /* the fill of bench/peer_openblas.c */
            for (size_t i = 0; i < nn; ++i) {
                a[i] = (float)rand() / (float)RAND_MAX - 0.5f;
                b[i] = (float)rand() / (float)RAND_MAX - 0.5f;
            }
            double t;
            TIME_MEDIAN(t, 5, budget, nbi_gemm_f32(n, n, n, a, n, 1, b, n, 1, c, n, false));
            printf("nabla gemm_gflops %d %d %.2f\n", n, threads, 2.0 * n * (double)n * n / t * 1e-9);
            fflush(stdout);
            free(a);
            free(b);
            free(c);
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--table") == 0) {
        printf("# nabla gemm: kernel %s, f32 row-major C = A B, median GFLOP/s\n", nbi_gemm_kernel_name());
        double budget = 1.0;
        int only_n = 0, only_threads = 0;
        for (int i = 2; i < argc; i++) {
            if (strcmp(argv[i], "--quick") == 0) {
                budget = 0.1;
            } else if (strcmp(argv[i], "--budget") == 0 && i + 1 < argc && atof(argv[i + 1]) > 0) {
                budget = atof(argv[++i]);
            } else if (strcmp(argv[i], "--only") == 0 && i + 2 < argc) {
                only_n = atoi(argv[++i]);
                only_threads = atoi(argv[++i]);
            } else {
                fprintf(stderr, "usage: %s --table [--quick | --budget S] [--only N THREADS]\n", argv[0]);
                return 2;
            }
        }
        int rc = table(budget, only_n, only_threads);
        nbi_gemm_release_buffers();
        return rc;
    }
    const int kernel = nbi_gemm_set_kernel(argc > 1 ? atoi(argv[1]) : 0);
    (void)kernel;
    if (argc > 2)
        nb_set_num_threads(atoi(argv[2]));
    printf("kernel: %s, %d threads\n", nbi_gemm_kernel_name(), nb_num_threads());
    printf("%6s %12s %12s", "n", "f32 GFLOP/s", "f64 GFLOP/s");
    printf("\n");
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; ++si) {
        const int n = sizes[si];
        const size_t nn = (size_t)n * (size_t)n;
        float *as = malloc(nn * sizeof(float)), *bs = malloc(nn * sizeof(float)), *cs = malloc(nn * sizeof(float));
        double *ad = malloc(nn * sizeof(double)), *bd = malloc(nn * sizeof(double)),
               *cd = malloc(nn * sizeof(double));
        if (!as || !bs || !cs || !ad || !bd || !cd) {
            fprintf(stderr, "out of memory\n");
            return 1;
        }
        srand(1);
        for (size_t i = 0; i < nn; ++i) {
            as[i] = (float)rand() / (float)RAND_MAX - 0.5f;
            bs[i] = (float)rand() / (float)RAND_MAX - 0.5f;
            ad[i] = as[i];
            bd[i] = bs[i];
        }
        const double flops = 2.0 * n * (double)n * n;
        double ts, td;
        TIME_MEDIAN(ts, 3, 0.3, nbi_gemm_f32(n, n, n, as, n, 1, bs, n, 1, cs, n, false));
        TIME_MEDIAN(td, 3, 0.3, nbi_gemm_f64(n, n, n, ad, n, 1, bd, n, 1, cd, n, false));
        printf("%6d %12.1f %12.1f", n, flops / ts * 1e-9, flops / td * 1e-9);
        printf("\n");
        fflush(stdout);
        free(as);
        free(bs);
        free(cs);
        free(ad);
        free(bd);
        free(cd);
    }
    nbi_gemm_release_buffers();
    return 0;
}

/*
 * timing.h - the clock, the median and the timing loop shared by the benchmark programs (bench_gemm,
 * bench_core, and peer_openblas, which builds without nabla): header-only, C library only. Include it
 * after defining _POSIX_C_SOURCE (for clock_gettime).
 */
#ifndef NABLA_BENCH_TIMING_H
#define NABLA_BENCH_TIMING_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Seconds on the monotonic clock. */
static inline double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static inline int bench_cmp_double(const void *x, const void *y)
{
    const double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

/* The median of v[0..n) (sorts v). */
static inline double bench_median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, bench_cmp_double);
    return (n % 2) ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Times `call` into t[] until `budget` seconds have passed, at least min_runs and at most cap times; sets
   runs to how many and result to the median seconds. Warming up is the caller's. */
#define BENCH_TIME_MEDIAN(result, runs, t, cap, min_runs, budget, call)                                     \
    do {                                                                                                       \
        const double start_ = bench_now();                                                                     \
        (runs) = 0;                                                                                            \
        while ((runs) < (cap) && ((runs) < (min_runs) || bench_now() - start_ < (budget))) {                  \
            const double t0_ = bench_now();                                                                    \
            call;                                                                                              \
            (t)[(runs)++] = bench_now() - t0_;                                                                 \
        }                                                                                                      \
        (result) = bench_median((t), (runs));                                                                  \
    } while (0)

/* A "Name:  value kB" field of /proc/self/status (VmRSS, VmHWM), in KiB; -1 when it cannot be read. */
static inline long bench_status_kib(const char *field)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    size_t n = strlen(field);
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, field, n) == 0 && line[n] == ':') v = atol(line + n + 1);
    if (f) fclose(f);
    return v;
}

#endif

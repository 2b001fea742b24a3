/*
 * bench_core.c - core cost figures of nabla, printed as machine-readable lines.
 *
 *   (a) per-op cost of a graph of 1,000 scalar ops (rank-0 f32, add / mul /
 *       tanh on requires_grad leaves), forward and backward, in microseconds;
 *   (b) f32 matmul GFLOP/s at 256, 512 and 1024 (square, contiguous);
 *   (c) elementwise add throughput out = a + b in GB/s (f32, 16M elements,
 *       3 * 4 * n bytes per call).
 *
 * Every figure is the median over repetitions. The output is one figure per
 * line: "nabla <name> [<size>] <value>"; lines starting with '#' are comments.
 * bench/peer_torch.py prints the same lines for PyTorch and bench/run_core.sh
 * puts both in a table. Nothing here asserts on time.
 *
 * Usage: bench_core [--quick]   (--quick: fewer repetitions, smaller add)
 */
#define _POSIX_C_SOURCE 200809L

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nabla.h"

#define SCALAR_OPS 1000

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *pa, const void *pb)
{
    double a = *(const double *)pa, b = *(const double *)pb;
    return (a > b) - (a < b);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return (n % 2) ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void report_error(const char *what)
{
    const char *m = nb_last_error();
    printf("# %s failed: %s\n", what, m ? m : "(no message)");
    nb_clear_error();
}

/* Deterministic uniform numbers in [-1, 1). */
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static float rand_unit(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((double)(rng_state >> 11) * (1.0 / 9007199254740992.0) * 2.0 - 1.0);
}

static nb_tensor *random_f32(int rank, const int64_t *shape)
{
    int64_t n = 1;
    for (int i = 0; i < rank; i++)
        n *= shape[i];
    float *buf = malloc((size_t)n * sizeof *buf);
    if (!buf)
        return NULL;
    for (int64_t i = 0; i < n; i++)
        buf[i] = rand_unit();
    nb_tensor *t = nb_new(NB_F32, rank, shape, buf);
    free(buf);
    return t;
}

/* ------------------------------------------------------------------------ */
/* (a) scalar graph                                                          */
/* ------------------------------------------------------------------------ */

/* SCALAR_OPS ops in the repeating pattern h = tanh(h * w + b): one op per
   step, so the graph holds exactly SCALAR_OPS recorded nodes. */
static nb_tensor *scalar_forward(nb_tensor *x, nb_tensor *w, nb_tensor *b)
{
    nb_tensor *h = x;
    for (int i = 0; i < SCALAR_OPS; i++) {
        switch (i % 3) {
        case 0: h = nb_mul(h, w); break;
        case 1: h = nb_add(h, b); break;
        default: h = nb_tanh(h); break;
        }
    }
    return h;
}

static int bench_scalar(int reps, int warmup)
{
    nb_clear_error();
    /* Leaves live outside every scope; each repetition builds its graph in a
       scope of its own and frees it with nb_scope_end (timed, as part of the
       backward figure: PyTorch frees its graph inside backward). */
    nb_tensor *x = nb_scalar(NB_F32, 0.5), *w = nb_scalar(NB_F32, 0.9), *b = nb_scalar(NB_F32, 0.1);
    if (!x || !w || !b) {
        report_error("scalar leaves");
        nb_free(x), nb_free(w), nb_free(b);
        return 1;
    }
    nb_set_requires_grad(x, true);
    nb_set_requires_grad(w, true);
    nb_set_requires_grad(b, true);

    double *fwd = malloc((size_t)reps * sizeof *fwd), *bwd = malloc((size_t)reps * sizeof *bwd),
           *tot = malloc((size_t)reps * sizeof *tot);
    int rc = 0;
    if (!fwd || !bwd || !tot) {
        printf("# scalar: out of memory\n");
        rc = 1;
        goto done;
    }
    for (int r = -warmup; r < reps; r++) {
        if (nb_grad(x)) { /* from the second repetition on */
            nb_zero_grad(x);
            nb_zero_grad(w);
            nb_zero_grad(b);
        }
        nb_scope_begin();
        double t0 = now_s();
        nb_tensor *y = scalar_forward(x, w, b);
        double t1 = now_s();
        int st = y ? nb_backward(y, NULL, 0) : 1;
        nb_scope_end();
        double t2 = now_s();
        if (st) {
            report_error("scalar graph");
            rc = 1;
            goto done;
        }
        if (r >= 0) {
            fwd[r] = (t1 - t0) * 1e6 / SCALAR_OPS;
            bwd[r] = (t2 - t1) * 1e6 / SCALAR_OPS;
            tot[r] = (t2 - t0) * 1e6 / SCALAR_OPS;
        }
    }
    printf("# scalar graph: %d ops (mul, add, tanh) on rank-0 f32 leaves, %d reps, median\n", SCALAR_OPS, reps);
    printf("# scalar check: dy/dw = %.6g\n", nb_item(nb_grad(w)));
    printf("nabla scalar_fwd_us %.4f\n", median(fwd, reps));
    printf("nabla scalar_bwd_us %.4f\n", median(bwd, reps));
    printf("nabla scalar_op_us %.4f\n", median(tot, reps));
done:
    free(fwd), free(bwd), free(tot);
    nb_free(x), nb_free(w), nb_free(b);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* (b) matmul                                                                */
/* ------------------------------------------------------------------------ */

/* Largest relative error of a few entries of c = a b against a double dot. */
static double matmul_check(nb_tensor *a, nb_tensor *bm, nb_tensor *c, int64_t n)
{
    const float *pa = nb_data(a), *pb = nb_data(bm), *pc = nb_data(c);
    if (!pa || !pb || !pc)
        return INFINITY;
    double worst = 0.0;
    const int64_t probes[][2] = {{0, 0}, {n - 1, n - 1}, {n / 3, n / 2}, {n - 1, 0}, {7 % n, n - 2}};
    for (size_t k = 0; k < sizeof probes / sizeof probes[0]; k++) {
        int64_t i = probes[k][0], j = probes[k][1];
        double ref = 0.0, mag = 0.0;
        for (int64_t p = 0; p < n; p++) {
            ref += (double)pa[i * n + p] * (double)pb[p * n + j];
            mag += fabs((double)pa[i * n + p] * (double)pb[p * n + j]);
        }
        double err = fabs((double)pc[i * n + j] - ref) / (mag > 0 ? mag : 1.0);
        if (err > worst)
            worst = err;
    }
    return worst;
}

static int bench_matmul(int64_t n, int min_reps, double budget_s)
{
    nb_clear_error();
    const int64_t shape[2] = {n, n};
    int rc = 0;
    nb_tensor *a = random_f32(2, shape), *bm = random_f32(2, shape);
    if (!a || !bm) {
        report_error("matmul inputs");
        nb_free(a), nb_free(bm);
        return 1;
    }
    enum { MAX_REPS = 200 };
    double times[MAX_REPS];
    int reps = 0;
    double flop = 2.0 * (double)n * (double)n * (double)n, start = now_s();

    /* warm-up run, also checked against a double-precision reference */
    nb_scope_begin();
    nb_tensor *c = nb_matmul(a, bm);
    if (!c) {
        report_error("matmul");
        nb_scope_end();
        rc = 1;
        goto done;
    }
    double err = matmul_check(a, bm, c, n);
    nb_scope_end();
    if (!(err < 1e-4))
        printf("# WARNING: matmul %lld result differs from the reference (rel err %.3g)\n", (long long)n, err);

    while (reps < MAX_REPS && (reps < min_reps || now_s() - start < budget_s)) {
        nb_scope_begin();
        double t0 = now_s();
        c = nb_matmul(a, bm);
        double t1 = now_s();
        nb_scope_end();
        if (!c) {
            report_error("matmul");
            rc = 1;
            goto done;
        }
        times[reps++] = t1 - t0;
    }
    printf("# matmul %lldx%lld f32: %d reps, median (rel err of probed entries %.2g)\n", (long long)n,
           (long long)n, reps, err);
    printf("nabla matmul_gflops %lld %.2f\n", (long long)n, flop / median(times, reps) * 1e-9);
done:
    nb_free(a), nb_free(bm);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* (c) elementwise add                                                       */
/* ------------------------------------------------------------------------ */

static int bench_add(int64_t n, int reps)
{
    nb_clear_error();
    const int64_t shape[1] = {n};
    nb_tensor *a = nb_full(NB_F32, 1, shape, 1.0), *b = nb_full(NB_F32, 1, shape, 2.0);
    nb_tensor *d = nb_full(NB_F32, 1, shape, 0.0);
    double *t_out = malloc((size_t)reps * sizeof *t_out), *t_inp = malloc((size_t)reps * sizeof *t_inp);
    int rc = 0;
    if (!a || !b || !d || !t_out || !t_inp) {
        report_error("add inputs");
        rc = 1;
        goto done;
    }
    double bytes = 3.0 * 4.0 * (double)n;

    /* out = a + b: a fresh result each call, as in PyTorch's a + b */
    for (int r = -2; r < reps; r++) {
        nb_scope_begin();
        double t0 = now_s();
        nb_tensor *c = nb_add(a, b);
        double t1 = now_s();
        if (!c) {
            report_error("add");
            nb_scope_end();
            rc = 1;
            goto done;
        }
        if (r == -2) {
            const float *pc = nb_data(c);
            if (!pc || pc[0] != 3.0f || pc[n - 1] != 3.0f)
                printf("# WARNING: add result is wrong\n");
        }
        nb_scope_end();
        if (r >= 0)
            t_out[r] = t1 - t0;
    }
    /* d += b in place: no allocation, same 3 * 4 * n bytes */
    for (int r = -2; r < reps; r++) {
        double t0 = now_s();
        int st = nb_add_(d, b);
        double t1 = now_s();
        if (st) {
            report_error("add_");
            rc = 1;
            goto done;
        }
        if (r >= 0)
            t_inp[r] = t1 - t0;
    }
    printf("# add f32: n = %lld, bytes counted 3*4*n, %d reps, median\n", (long long)n, reps);
    printf("nabla add_gbps %.2f\n", bytes / median(t_out, reps) * 1e-9);
    printf("nabla add_inplace_gbps %.2f\n", bytes / median(t_inp, reps) * 1e-9);
done:
    free(t_out), free(t_inp);
    nb_free(a), nb_free(b), nb_free(d);
    return rc;
}

int main(int argc, char **argv)
{
    int quick = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0) {
            quick = 1;
        } else {
            fprintf(stderr, "usage: %s [--quick]\n", argv[0]);
            return 2;
        }
    }
    int fails = 0;
    printf("# nabla %d.%d.%d core benchmark%s\n", NABLA_VERSION_MAJOR, NABLA_VERSION_MINOR, NABLA_VERSION_PATCH,
           quick ? " (quick)" : "");
    fflush(stdout);

    fails += bench_scalar(quick ? 20 : 200, quick ? 2 : 20);
    fflush(stdout);

    const int64_t sizes[] = {256, 512, 1024};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        fails += bench_matmul(sizes[i], quick ? 2 : 5, quick ? 0.2 : 1.5);
        fflush(stdout);
    }

    fails += bench_add(quick ? (int64_t)1 << 20 : (int64_t)1 << 24, quick ? 5 : 30);
    fflush(stdout);
    return fails ? 1 : 0;
}

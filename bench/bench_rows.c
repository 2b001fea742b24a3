/*
 * bench_rows.c - nanoseconds per row of the row kernels (softmax, log-softmax, cross-entropy forward and
 * backward, layer norm forward and backward) on the fast CPU kernel set and on the reference set, at the
 * shapes of bench_gpt2's small config: the loss over 256 rows of 8192 logits, layer norm over 256 rows of
 * 256 (B 4 x T 64 tokens, C 256), and the attention softmax over 1024 rows of 64 (B 4 x NH 4 x T 64).
 *
 * Usage: bench_rows [--threads N] [--dtype f32|f64]
 *
 * The kernels are called through their tables (src/backend/backend.h), f32 unless asked; each figure is the
 * median of repeated runs after a warm-up. Figures only: nothing passes or fails.
 */
#define _POSIX_C_SOURCE 199309L
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "timing.h"

#define CAP 2000

static double t_runs[CAP];

typedef struct {
    const nbi_backend *be;
    nb_dtype dt;
    void *x, *y, *dx, *g, *gamma, *beta, *dgamma, *dbeta;
    int64_t *t;
    double *ms, *mean, *rstd, loss;
    int64_t rows, n;
} job;

enum { SOFTMAX, LOG_SOFTMAX, XENT_FWD, XENT_BWD, XENT_BOTH, XENT_OPT_FWD, XENT_OPT_BWD, LN_FWD, LN_BWD, LN_BOTH, NKIND };
static const char *NAMES[NKIND] = {"softmax",       "log_softmax",   "xent_fwd",      "xent_bwd",
                                   "xent_fwd+bwd",  "xent_opt_fwd",  "xent_opt_bwd",  "layernorm_fwd",
                                   "layernorm_bwd", "layernorm_fwd+bwd"};
/* nb_cross_entropy_ex's options in the kernels: smoothing 0.1, the targets set to -100 on every eighth row */
static const nbi_ce_opts OPTS = {-100, 0.1, NULL, NULL};

static void run(job *j, int kind) {
    const nbi_backend *be = j->be;
    switch (kind) {
    case SOFTMAX: be->softmax(j->dt, j->y, j->x, j->rows, j->n, 1, false); break;
    case LOG_SOFTMAX: be->softmax(j->dt, j->y, j->x, j->rows, j->n, 1, true); break;
    case XENT_FWD: be->cross_entropy(j->dt, &j->loss, j->x, j->t, 1, j->rows, j->n, j->ms, NULL, NULL); break;
    case XENT_BWD:
        be->cross_entropy_grad(j->dt, j->dx, j->x, j->t, 1, j->rows, j->n, 1.0 / (double)j->rows, j->ms, NULL, NULL);
        break;
    case XENT_OPT_FWD: be->cross_entropy(j->dt, &j->loss, j->x, j->t, 1, j->rows, j->n, j->ms, NULL, &OPTS); break;
    case XENT_OPT_BWD:
        be->cross_entropy_grad(j->dt, j->dx, j->x, j->t, 1, j->rows, j->n, 1.0 / (double)j->rows, j->ms, NULL, &OPTS);
        break;
    case XENT_BOTH: run(j, XENT_FWD), run(j, XENT_BWD); break;
    case LN_FWD: be->layer_norm(j->dt, j->y, j->x, j->gamma, j->beta, j->rows, j->n, 1e-5, j->mean, j->rstd); break;
    case LN_BWD:
        be->layer_norm_grad(j->dt, j->dx, j->dgamma, j->dbeta, j->g, j->x, j->gamma, j->rows, j->n, 1e-5, j->mean,
                            j->rstd);
        break;
    default: run(j, LN_FWD), run(j, LN_BWD); break;
    }
}

static void *fill(nb_dtype dt, int64_t n, double scale, uint64_t seed) {
    const size_t es = dt == NB_F32 ? 4 : 8;
    char *p = malloc(es * (size_t)n);
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (int64_t i = 0; i < n; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        const double v = ((double)(s >> 11) * 0x1p-53 * 2 - 1) * scale;
        if (dt == NB_F32)
            ((float *)(void *)p)[i] = (float)v;
        else
            ((double *)(void *)p)[i] = v;
    }
    return p;
}

/* ns per row of kind on be over rows x n. */
static double time_kind(const nbi_backend *be, nb_dtype dt, int kind, int64_t rows, int64_t n) {
    job j = {.be = be, .dt = dt, .rows = rows, .n = n};
    j.x = fill(dt, rows * n, 4, 1), j.y = fill(dt, rows * n, 1, 2), j.dx = fill(dt, rows * n, 1, 3);
    j.g = fill(dt, rows * n, 1, 4), j.gamma = fill(dt, n, 1, 5), j.beta = fill(dt, n, 1, 6);
    j.dgamma = fill(dt, n, 1, 7), j.dbeta = fill(dt, n, 1, 8);
    j.t = malloc(sizeof(int64_t) * (size_t)rows);
    for (int64_t i = 0; i < rows; i++) j.t[i] = (kind == XENT_OPT_FWD || kind == XENT_OPT_BWD) && i % 8 == 7 ? -100 : (i * 7919) % n;
    j.ms = malloc(sizeof(double) * 2 * (size_t)rows), j.mean = malloc(sizeof(double) * (size_t)rows);
    j.rstd = malloc(sizeof(double) * (size_t)rows);
    run(&j, kind == XENT_OPT_FWD || kind == XENT_OPT_BWD ? XENT_OPT_FWD : XENT_FWD), run(&j, LN_FWD); /* the statistics the backward passes read */
    for (int w = 0; w < 3; w++) run(&j, kind);
    double med;
    int runs;
    BENCH_TIME_MEDIAN(med, runs, t_runs, CAP, 5, 0.3, run(&j, kind));
    (void)runs;
    free(j.x), free(j.y), free(j.dx), free(j.g), free(j.gamma), free(j.beta), free(j.dgamma), free(j.dbeta);
    free(j.t), free(j.ms), free(j.mean), free(j.rstd);
    return med * 1e9 / (double)rows;
}

int main(int argc, char **argv) {
    int threads = 1;
    nb_dtype dt = NB_F32;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (strcmp(argv[i], "--dtype") == 0 && i + 1 < argc)
            dt = strcmp(argv[++i], "f64") == 0 ? NB_F64 : NB_F32;
        else {
            fprintf(stderr, "usage: %s [--threads N] [--dtype f32|f64]\n", argv[0]);
            return 2;
        }
    }
    if (nb_set_num_threads(threads) != 0) return 1;
    printf("# bench_rows threads=%d dtype=%s (ns per row, median)\n", threads, dt == NB_F32 ? "f32" : "f64");
    printf("%-20s %6s %6s %12s %12s %8s\n", "kernel", "rows", "n", "fast", "reference", "ratio");
    static const struct {
        int kind;
        int64_t rows, n;
    } cases[] = {{SOFTMAX, 256, 8192},     {LOG_SOFTMAX, 256, 8192}, {SOFTMAX, 1024, 64},
                 {XENT_FWD, 256, 8192},    {XENT_BWD, 256, 8192},    {XENT_BOTH, 256, 8192},
                 {XENT_OPT_FWD, 256, 8192}, {XENT_OPT_BWD, 256, 8192},
                 {LN_FWD, 256, 256},       {LN_BWD, 256, 256},       {LN_BOTH, 256, 256}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const double fast = time_kind(nbi_backend_cpu(), dt, cases[c].kind, cases[c].rows, cases[c].n);
        const double ref = time_kind(nbi_backend_reference(), dt, cases[c].kind, cases[c].rows, cases[c].n);
        printf("%-20s %6lld %6lld %12.1f %12.1f %8.2f\n", NAMES[cases[c].kind], (long long)cases[c].rows,
               (long long)cases[c].n, fast, ref, ref / fast);
    }
    return 0;
}

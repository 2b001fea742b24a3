/*
 * bench_attention.c - milliseconds and peak memory of causal attention forward + backward at GPT-2 small's
 * shape (B 1, 12 heads, T 1024, d 64) through nb_attention on the fast CPU kernel set and on the reference
 * set, and through the explicit math (matmul, softmax, matmul: the (T, T) matrices on the graph) on the fast
 * set, for comparison with bench/peer_torch_attention.py.
 *
 * Usage: bench_attention [--threads N] [--dtype f32|f64] [--T n] [--no-reference] [--no-math]
 *
 * Each variant runs in a child process of its own, so that its peak (nabla's counter, nb_memory_stats.peak,
 * and the process's VmHWM) is its own. Figures: the median of repeated forward+backward steps after a warm-up
 * (the reference set: one step), and the forward alone. Figures only: nothing passes or fails.
 */
#define _POSIX_C_SOURCE 199309L
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "backend/backend.h"
#include "core/internal.h"
#include "timing.h"

#define CAP 5000
static double t_runs[CAP];

enum { FUSED, MATH };

static nb_tensor *rand_t(nb_dtype dt, int64_t n, const int64_t *shape, uint64_t seed) {
    double *buf = malloc(sizeof(double) * (size_t)n);
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (int64_t i = 0; i < n; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        buf[i] = (double)(s >> 11) * (1.0 / 9007199254740992.0) * 2 - 1;
    }
    nb_tensor *t = nb_from_f64(dt, 4, shape, buf);
    free(buf);
    return t;
}

static nb_tensor *math_attention(nb_tensor *q, nb_tensor *k, nb_tensor *v, nb_tensor *causal, double scale) {
    nb_tensor *s = nb_add(nb_scale(nb_matmul(q, nb_transpose(k, -2, -1)), scale), causal);
    return nb_matmul(nb_softmax(s, -1), v);
}

/* One forward (+ backward) step; returns 0. */
static int step(int kind, nb_tensor *q, nb_tensor *k, nb_tensor *v, nb_tensor *cm, nb_tensor *w, bool backward) {
    nb_scope_begin();
    nb_set_grad_enabled(backward);
    nb_tensor *y = kind == FUSED ? nb_attention(q, k, v, NULL, true, 0) : math_attention(q, k, v, cm, 0.125);
    int rc = y ? 0 : -1;
    if (backward && y) rc = nb_backward(nb_sum(nb_mul(y, w)), NULL, 0);
    nb_set_grad_enabled(true);
    nb_scope_end();
    nb_zero_grad(q), nb_zero_grad(k), nb_zero_grad(v);
    return rc;
}

static void run_variant(const char *label, const nbi_backend *be, int kind, nb_dtype dt, int64_t T, int once) {
    nbi_use_backend(be);
    int64_t shape[4] = {1, 12, T, 64}, n = 12 * T * 64;
    nb_tensor *q = rand_t(dt, n, shape, 1), *k = rand_t(dt, n, shape, 2), *v = rand_t(dt, n, shape, 3);
    nb_tensor *w = rand_t(dt, n, shape, 4);
    nb_tensor *cm = NULL;
    if (kind == MATH) {
        cm = nb_full(dt, 2, (int64_t[]){T, T}, 0);
        for (int64_t i = 0; i < T; i++)
            for (int64_t j = i + 1; j < T; j++) nbi_set_at(cm, i * T + j, -INFINITY);
    }
    nb_set_requires_grad(q, true), nb_set_requires_grad(k, true), nb_set_requires_grad(v, true);
    nb_memory_stats m0, m1;
    nb_get_memory_stats(&m0);
    if (step(kind, q, k, v, cm, w, true) != 0) { /* warm-up */
        printf("%-34s failed: %s\n", label, nb_last_error());
        return;
    }
    double tf, tb;
    int runs;
    BENCH_TIME_MEDIAN(tf, runs, t_runs, CAP, once ? 1 : 3, once ? 0 : 1.0, step(kind, q, k, v, cm, w, false));
    BENCH_TIME_MEDIAN(tb, runs, t_runs, CAP, once ? 1 : 3, once ? 0 : 2.0, step(kind, q, k, v, cm, w, true));
    nb_get_memory_stats(&m1);
    printf("%-34s fwd %9.3f ms  fwd+bwd %9.3f ms  (%2d runs)  peak %7.1f MiB above the inputs, VmHWM %7.1f MiB\n",
           label, tf * 1e3, tb * 1e3, runs, (double)(m1.peak - m0.in_use) / 1048576.0,
           (double)bench_status_kib("VmHWM") / 1024.0);
    fflush(stdout);
}

int main(int argc, char **argv) {
    int threads = 0;
    nb_dtype dt = NB_F32;
    int64_t T = 1024;
    int ref = 1, math = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--dtype") && i + 1 < argc) dt = strcmp(argv[++i], "f64") == 0 ? NB_F64 : NB_F32;
        else if (!strcmp(argv[i], "--T") && i + 1 < argc) T = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--no-reference")) ref = 0;
        else if (!strcmp(argv[i], "--no-math")) math = 0;
        else {
            fprintf(stderr, "usage: %s [--threads N] [--dtype f32|f64] [--T n] [--no-reference] [--no-math]\n", argv[0]);
            return 2;
        }
    }
    printf("causal attention, B 1, heads 12, T %lld, d 64, %s, %d threads (0: the default): forward and "
           "forward+backward\n", (long long)T, dt == NB_F32 ? "f32" : "f64", threads);
    struct {
        const char *label;
        const nbi_backend *be;
        int kind, once;
    } vs[3] = {{"nb_attention, fast kernels", nbi_backend_cpu(), FUSED, 0},
               {"explicit math (matmul, softmax)", nbi_backend_cpu(), MATH, 0},
               {"nb_attention, reference kernels", nbi_backend_reference(), FUSED, 1}};
    for (int i = 0; i < 3; i++) {
        if ((i == 1 && !math) || (i == 2 && !ref)) continue;
        fflush(stdout);
        pid_t p = fork();
        if (p == 0) {
            if (threads > 0) nb_set_num_threads(threads);
            run_variant(vs[i].label, vs[i].be, vs[i].kind, dt, T, vs[i].once);
            _exit(0);
        }
        if (p > 0) waitpid(p, NULL, 0);
    }
    return 0;
}

/*
 * bench_core.c - nabla's figures for the table of bench/run.sh, as lines
 * "nabla <figure> [<args>] <value>" ('#' lines are comments):
 *
 *   mlp_peak_mib V       peak memory of the MLP training loop below: VmHWM is
 *                        reset (/proc/self/clear_refs) and VmRSS read just
 *                        before the model and data are built, 50 steps run,
 *                        V = VmHWM - that VmRSS, in MiB (measured first, in a
 *                        process that has allocated nothing else yet);
 *   mlp_step_ms T V      one SGD step of an MLP 784-256-256-10 (ReLU), batch
 *                        128, cross-entropy, lr 0.01, f32, on T = 1 and 2
 *                        threads: zero the gradients, forward, loss, backward,
 *                        update; median ms;
 *   mlp_core_step_ms T V the same MLP and step written from core ops only, as a
 *                        user of nabla.h alone writes it: nb_matmul, nb_add
 *                        (the bias), nb_relu, nb_cross_entropy, nb_backward,
 *                        and a plain SGD loop over nb_data; weights stored
 *                        (in, out) so that a layer is x @ W + b;
 *   tiny_op_us V         a graph of 1,000 rank-0 f32 ops (mul, add, tanh),
 *                        forward, backward and freeing, median us per op;
 *   clock_ghz V          the core clock measured with a chain of dependent
 *                        integer adds (one per cycle; the best of 40 windows
 *                        of 20M cycles), for the peak FLOP rate.
 *
 * bench/peer_torch.py prints the same figures for PyTorch. Nothing here
 * asserts on time.
 *
 * Usage: bench_core [--table] [--quick]   (--quick: fewer repetitions)
 *        bench_core --mlp T [--quick]      only mlp_step_ms on T threads (one round of bench/run.sh's
 *                                          alternating rounds against PyTorch)
 *        bench_core --mlp-core T [--quick] only mlp_core_step_ms on T threads
 */
#define _POSIX_C_SOURCE 200809L

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nabla.h"
#include "nabla/nn.h"
#include "timing.h"

#define SCALAR_OPS 1000


static void report_error(const char *what)
{
    const char *m = nb_last_error();
    printf("# %s failed: %s\n", what, m ? m : "(no message)");
    nb_clear_error();
}

/* ------------------------------------------------------------------------ */
/* MLP training step                                                        */
/* ------------------------------------------------------------------------ */

typedef struct {
    nb_module *net;
    nb_optim *opt;
    nb_tensor *x, *y;
} mlp;

static int mlp_init(mlp *m)
{
    nb_rng rng;
    nb_rng_seed(&rng, 1);
    nb_module *mods[5] = {nb_linear(784, 256, true, NB_INIT_XAVIER, NB_F32, &rng), nb_relu_layer(),
                          nb_linear(256, 256, true, NB_INIT_XAVIER, NB_F32, &rng), nb_relu_layer(),
                          nb_linear(256, 10, true, NB_INIT_XAVIER, NB_F32, &rng)};
    m->net = nb_sequential(5, mods);
    nb_tensor *ps[8];
    int np = m->net ? nb_module_params(m->net, ps, NULL, 8) : 0;
    m->opt = np > 0 ? nb_sgd(np, ps, 0.01, 0, 0, false) : NULL;
    double *xv = malloc(sizeof(double) * 128 * 784), yv[128];
    if (xv) {
        for (int i = 0; i < 128 * 784; i++) xv[i] = nb_rng_uniform(&rng);
        for (int i = 0; i < 128; i++) yv[i] = (double)(nb_rng_next(&rng) % 10);
        m->x = nb_from_f64(NB_F32, 2, (int64_t[]){128, 784}, xv);
        m->y = nb_from_f64(NB_I64, 1, (int64_t[]){128}, yv);
    }
    free(xv);
    return m->net && m->opt && m->x && m->y ? 0 : -1;
}

static int mlp_step(mlp *m, double *loss)
{
    nb_scope_begin();
    nb_optim_zero_grad(m->opt);
    nb_tensor *l = nb_cross_entropy(nb_forward(m->net, m->x), m->y);
    int rc = l && nb_backward(l, NULL, 0) == 0 && nb_optim_step(m->opt) == 0 ? 0 : -1;
    if (loss && rc == 0) *loss = nb_item(l);
    nb_scope_end();
    return rc;
}

static void mlp_free(mlp *m)
{
    nb_optim_free(m->opt);
    nb_module_free(m->net);
    nb_free(m->x);
    nb_free(m->y);
}

/* The same network from core ops: W[i] (in, out) and b[i] (out) as leaves. */
typedef struct {
    nb_tensor *w[3], *b[3], *x, *y;
} mlp_core;

static int mlp_core_init(mlp_core *m)
{
    static const int64_t dims[4] = {784, 256, 256, 10};
    nb_rng rng;
    nb_rng_seed(&rng, 1);
    for (int l = 0; l < 3; l++) {
        int64_t in = dims[l], out = dims[l + 1];
        double a = sqrt(6.0 / (double)(in + out)), *v = malloc(sizeof(double) * (size_t)(in * out));
        if (!v) return -1;
        for (int64_t i = 0; i < in * out; i++) v[i] = (2 * nb_rng_uniform(&rng) - 1) * a;
        m->w[l] = nb_from_f64(NB_F32, 2, (int64_t[]){in, out}, v);
        m->b[l] = nb_full(NB_F32, 1, &out, 0.0);
        free(v);
        nb_set_requires_grad(m->w[l], true);
        nb_set_requires_grad(m->b[l], true);
    }
    double *xv = malloc(sizeof(double) * 128 * 784), yv[128];
    if (!xv) return -1;
    for (int i = 0; i < 128 * 784; i++) xv[i] = nb_rng_uniform(&rng);
    for (int i = 0; i < 128; i++) yv[i] = (double)(nb_rng_next(&rng) % 10);
    m->x = nb_from_f64(NB_F32, 2, (int64_t[]){128, 784}, xv);
    m->y = nb_from_f64(NB_I64, 1, (int64_t[]){128}, yv);
    free(xv);
    return m->x && m->y && m->w[2] && m->b[2] ? 0 : -1;
}

/* p -= lr g over the raw floats, then the gradient is dropped for the next step (as PyTorch's zero_grad does by
   default: set to None; the next backward hands the parameter a fresh gradient instead of adding into zeros). */
static void sgd(nb_tensor *p, float lr)
{
    float *w = nb_data(p), *g = nb_data(nb_grad(p));
    int64_t n = nb_numel(p);
    for (int64_t i = 0; i < n; i++) w[i] -= lr * g[i];
    nb_clear_grad(p);
}

static int mlp_core_step(mlp_core *m, double *loss)
{
    nb_scope_begin();
    nb_tensor *h = m->x;
    for (int l = 0; l < 3; l++) {
        h = nb_add(nb_matmul(h, m->w[l]), m->b[l]);
        if (l < 2) h = nb_relu(h);
    }
    nb_tensor *l = nb_cross_entropy(h, m->y);
    int rc = l && nb_backward(l, NULL, 0) == 0 ? 0 : -1;
    if (loss && rc == 0) *loss = nb_item(l);
    for (int i = 0; i < 3 && rc == 0; i++) {
        sgd(m->w[i], 0.01f);
        sgd(m->b[i], 0.01f);
    }
    nb_scope_end();
    return rc;
}

static void mlp_core_free(mlp_core *m)
{
    for (int i = 0; i < 3; i++) nb_free(m->w[i]), nb_free(m->b[i]);
    nb_free(m->x);
    nb_free(m->y);
}

static int bench_mlp_peak(void)
{
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (!f || fputs("5", f) < 0 || fclose(f) != 0) {
        printf("# mlp peak: cannot reset VmHWM; no figure\n");
        return 0;
    }
    long base = bench_status_kib("VmRSS");
    mlp m = {0};
    int rc = mlp_init(&m);
    for (int s = 0; s < 50 && rc == 0; s++) rc = mlp_step(&m, NULL);
    long hwm = bench_status_kib("VmHWM");
    nb_memory_stats st;
    nb_get_memory_stats(&st);
    mlp_free(&m);
    if (rc != 0 || base < 0 || hwm < 0) {
        report_error("mlp peak");
        return 1;
    }
    printf("# mlp peak: baseline VmRSS %.1f MiB, whole-process VmHWM %.1f MiB; nabla's own peak (in use + cached) "
           "%.1f MiB, %lld blocks from malloc in all\n",
           base / 1024.0, hwm / 1024.0, st.peak / 1048576.0, (long long)st.system_allocs);
    printf("nabla mlp_peak_mib %.1f\n", (hwm - base) / 1024.0);
    return 0;
}

/* One of the two MLPs (core: from core ops) on `threads` threads: median step time over `steps` after warmup. */
static int bench_mlp_step(bool core, int threads, int steps, int warmup)
{
    nb_set_num_threads(threads);
    mlp m = {0};
    mlp_core mc = {0};
    double *t = malloc(sizeof(double) * (size_t)steps), l0 = 0, l1 = 0;
    int rc = !t ? -1 : core ? mlp_core_init(&mc) : mlp_init(&m);
    for (int s = -warmup; s < steps && rc == 0; s++) {
        double t0 = bench_now(), *loss = s == -warmup ? &l0 : s == steps - 1 ? &l1 : NULL;
        rc = core ? mlp_core_step(&mc, loss) : mlp_step(&m, loss);
        if (s >= 0) t[s] = bench_now() - t0;
    }
    const char *what = core ? "mlp from core ops" : "mlp step";
    if (rc == 0) {
        printf("# %s, %d threads: loss %.4f -> %.4f over %d steps\n", what, threads, l0, l1, steps + warmup);
        printf("nabla %s %d %.4f\n", core ? "mlp_core_step_ms" : "mlp_step_ms", threads, bench_median(t, steps) * 1e3);
    } else {
        report_error(what);
    }
    if (core)
        mlp_core_free(&mc);
    else
        mlp_free(&m);
    free(t);
    return rc ? 1 : 0;
}

/* ------------------------------------------------------------------------ */
/* Clock                                                                    */
/* ------------------------------------------------------------------------ */

static void bench_clock(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
    double best = 0;
    for (int r = 0; r < 40; r++) { /* many short windows: the best one is the least disturbed by other tenants */
        uint64_t x = 0, n = 5000000;
        double t0 = bench_now();
        for (uint64_t i = 0; i < n; i++)
            __asm__ volatile("add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0" : "+r"(x));
        double ghz = 4.0 * (double)n / (bench_now() - t0) * 1e-9;
        if (ghz > best) best = ghz;
    }
    printf("nabla clock_ghz %.3f\n", best);
#else
    printf("# clock: not measured on this architecture\n");
#endif
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
        double t0 = bench_now();
        nb_tensor *y = scalar_forward(x, w, b);
        double t1 = bench_now();
        int st = y ? nb_backward(y, NULL, 0) : 1;
        nb_scope_end();
        double t2 = bench_now();
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
    printf("# scalar graph: forward %.4f us per op, backward and free %.4f us per op\n", bench_median(fwd, reps),
           bench_median(bwd, reps));
    printf("nabla tiny_op_us %.4f\n", bench_median(tot, reps));
done:
    free(fwd), free(bwd), free(tot);
    nb_free(x), nb_free(w), nb_free(b);
    return rc;
}


int main(int argc, char **argv)
{
    int quick = 0, mlp_threads = 0, core_threads = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0) {
            quick = 1;
        } else if (strcmp(argv[i], "--mlp") == 0 && i + 1 < argc && atoi(argv[i + 1]) > 0) {
            mlp_threads = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--mlp-core") == 0 && i + 1 < argc && atoi(argv[i + 1]) > 0) {
            core_threads = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--table") != 0) { /* --table: the only format there is; accepted for bench/run.sh */
            fprintf(stderr, "usage: %s [--table] [--quick] | --mlp THREADS [--quick] | --mlp-core THREADS [--quick]\n",
                    argv[0]);
            return 2;
        }
    }
    if (mlp_threads > 0)
        return bench_mlp_step(false, mlp_threads, quick ? 30 : 300, quick ? 5 : 30);
    if (core_threads > 0)
        return bench_mlp_step(true, core_threads, quick ? 30 : 300, quick ? 5 : 30);
    int fails = 0;
    printf("# nabla %d.%d.%d core benchmark%s\n", NABLA_VERSION_MAJOR, NABLA_VERSION_MINOR, NABLA_VERSION_PATCH,
           quick ? " (quick)" : "");
    fflush(stdout);
    nb_set_num_threads(1);
    fails += bench_mlp_peak(); /* first: nothing cached yet */
    fflush(stdout);
    bench_clock();
    fflush(stdout);
    for (int threads = 1; threads <= 2; threads++) {
        fails += bench_mlp_step(false, threads, quick ? 30 : 300, quick ? 5 : 30);
        fflush(stdout);
        fails += bench_mlp_step(true, threads, quick ? 30 : 300, quick ? 5 : 30);
        fflush(stdout);
    }
    nb_set_num_threads(1);
    fails += bench_scalar(quick ? 20 : 200, quick ? 2 : 20);
    fflush(stdout);
    return fails ? 1 : 0;
}

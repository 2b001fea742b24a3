/*
 * bench_cnn.c - the default CNN's training step and its convolutions alone, the same measurements as
 * bench/peer_torch_cnn.py.
 *
 * The network (Fashion-MNIST's shape: 28x28x1 inputs, 10 classes), an nb_sequential in f32:
 *   0 Conv2d(1, 32, 3x3, padding 1)   1 BatchNorm2d(32)   2 ReLU   3 MaxPool2d(2)
 *   4 Conv2d(32, 64, 3x3, padding 1)  5 BatchNorm2d(64)   6 ReLU   7 MaxPool2d(2)
 *   8 Flatten   9 Linear(3136, 128)   10 ReLU   11 Dropout(0.25)   12 Linear(128, 10)
 * BatchNorm eps 1e-5, momentum 0.1; loss nb_cross_entropy; Adam (lr 1e-3, betas 0.9 and 0.999, eps 1e-8).
 *
 * Usage: bench_cnn [--step | --conv | --layer conv1|conv2] [--threads N] [--steps S] [--warmup W]
 *   --step (the default)  one training step on a batch of 128 random inputs (N(0, 1)) with random labels,
 *                         a new batch each step, one scope per step: forward, loss, backward, Adam. Prints
 *                         each step, "nabla cnn_step_ms THREADS V" (the median of the timed steps),
 *                         "nabla cnn_peak_mib THREADS V" and a RESULT line as bench_gpt2's: peak_mib
 *                         (VmHWM - VmRSS, VmHWM reset just before the model is built), nabla_peak_mib,
 *                         timed_system_allocs and cpu_per_wall.
 *   --conv                nb_conv2d forward and backward (the gradients of the input, the weight and the
 *                         bias, from a fixed random output gradient) alone at each convolution's shape,
 *                         N 128, 3x3, padding 1: conv1 (1 -> 32, 28x28) and conv2 (32 -> 64, 14x14).
 *                         Prints "nabla conv_ms LAYER THREADS V" (the median) and a RESULT line per layer.
 *   --layer L             --conv for one layer alone (conv1 or conv2), for profiling.
 * Defaults: --steps 20 --warmup 3. Nothing here asserts on time.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nabla.h"
#include "nabla/nn.h"
#include "timing.h"

#define BATCH 128
#define CLASSES 10

/* Seconds of CPU time of the whole process (every thread). */
static double cpu_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int fail(const char *what)
{
    const char *e = nb_last_error();
    printf("# %s failed: %s\n", what, e ? e : "(no message)");
    return 1;
}

static nb_module *build_cnn(nb_rng *rng, nb_rng *drop_rng)
{
    const nb_conv2d_opts pad1 = {.padding = {1, 1}}, pool = {0};
    nb_module *mods[13] = {
        nb_conv2d_layer(1, 32, 3, 3, pad1, true, NB_F32, rng),
        nb_batch_norm2d_layer(32, 1e-5, 0.1, NB_F32),
        nb_relu_layer(),
        nb_max_pool2d_layer(2, 2, pool),
        nb_conv2d_layer(32, 64, 3, 3, pad1, true, NB_F32, rng),
        nb_batch_norm2d_layer(64, 1e-5, 0.1, NB_F32),
        nb_relu_layer(),
        nb_max_pool2d_layer(2, 2, pool),
        nb_flatten_layer(),
        nb_linear(64 * 7 * 7, 128, true, NB_INIT_KAIMING, NB_F32, rng),
        nb_relu_layer(),
        nb_dropout_layer(0.25, drop_rng),
        nb_linear(128, CLASSES, true, NB_INIT_KAIMING, NB_F32, rng),
    };
    return nb_sequential(13, mods);
}

/* A batch of BATCH random images (N(0, 1)) and labels, outside every scope. */
static int make_batch(nb_rng *rng, nb_tensor **x, nb_tensor **y)
{
    *x = nb_randn(NB_F32, 4, (int64_t[]){BATCH, 1, 28, 28}, rng);
    *y = nb_new(NB_I64, 1, (int64_t[]){BATCH}, NULL);
    if (!*x || !*y) return -1;
    int64_t *yi = nb_data(*y);
    for (int64_t i = 0; i < BATCH; i++) yi[i] = (int64_t)(nb_rng_next(rng) % CLASSES);
    return 0;
}

static int run_step(int threads, int steps, int warmup)
{
    /* VmHWM from here: the model, its optimizer state, the data and the steps. */
    FILE *f = fopen("/proc/self/clear_refs", "w");
    const bool hwm_ok = f && fputs("5", f) >= 0 && fclose(f) == 0;
    if (f && !hwm_ok) f = NULL;
    const long base = bench_status_kib("VmRSS");

    nb_rng rng, drop_rng, data_rng;
    nb_rng_seed(&rng, 1);
    nb_rng_seed(&drop_rng, 2);
    nb_rng_seed(&data_rng, 3);
    nb_module *net = build_cnn(&rng, &drop_rng);
    if (!net) return fail("build");
    nb_tensor *params[16];
    const int np = nb_module_params(net, params, NULL, 16);
    if (np < 0 || np > 16) return fail("nb_module_params");
    nb_optim *opt = nb_adam(np, params, 1e-3, 0.9, 0.999, 1e-8, 0.0);
    double *ms = malloc(sizeof(double) * (size_t)steps);
    if (!opt || !ms) return fail("setup");
    printf("# nabla %d.%d.%d threads=%d cnn params=%lld batch=%d\n", NABLA_VERSION_MAJOR, NABLA_VERSION_MINOR,
           NABLA_VERSION_PATCH, nb_num_threads(), (long long)nb_module_num_params(net), BATCH);
    fflush(stdout);

    nb_memory_stats st0 = {0}, st1;
    double cpu0 = cpu_seconds(), wall0 = bench_now();
    for (int s = 0; s < warmup + steps; s++) {
        nb_tensor *x, *y;
        if (make_batch(&data_rng, &x, &y) != 0) return fail("batch");
        if (s == warmup) {
            nb_get_memory_stats(&st0);
            cpu0 = cpu_seconds();
            wall0 = bench_now();
        }
        const double t0 = bench_now();
        nb_scope_begin();
        nb_optim_zero_grad(opt);
        nb_tensor *l = nb_cross_entropy(nb_forward(net, x), y);
        if (!l || nb_backward(l, NULL, 0) != 0 || nb_optim_step(opt) != 0) return fail("step");
        const double loss = nb_item(l);
        nb_scope_end();
        const double dt = (bench_now() - t0) * 1e3;
        if (s >= warmup) ms[s - warmup] = dt;
        printf("step %d: loss %.4f (%.2f ms)%s\n", s, loss, dt, s < warmup ? " [warmup]" : "");
        nb_free(x);
        nb_free(y);
    }
    nb_get_memory_stats(&st1);
    const double cpu_per_wall = (cpu_seconds() - cpu0) / (bench_now() - wall0);
    const long hwm = bench_status_kib("VmHWM");
    double lo = ms[0], hi = ms[0];
    for (int s = 1; s < steps; s++) {
        lo = ms[s] < lo ? ms[s] : lo;
        hi = ms[s] > hi ? ms[s] : hi;
    }
    const double med = bench_median(ms, steps);
    const double peak = hwm_ok && base >= 0 && hwm >= 0 ? (hwm - base) / 1024.0 : -1;
    const long long timed_allocs = (long long)(st1.system_allocs - st0.system_allocs);
    printf("# memory: nabla peak (in use + cached + scratch) %.1f MiB, cached at end %.1f MiB, %lld blocks from "
           "the system in all, %lld during the %d timed steps\n",
           st1.peak / 1048576.0, st1.cached / 1048576.0, (long long)st1.system_allocs, timed_allocs, steps);
    printf("nabla cnn_step_ms %d %.3f\n", threads, med);
    if (peak >= 0) printf("nabla cnn_peak_mib %d %.1f\n", threads, peak);
    printf("RESULT cnn_step threads=%d median_ms=%.2f min_ms=%.2f max_ms=%.2f peak_mib=%.1f nabla_peak_mib=%.1f "
           "timed_system_allocs=%lld cpu_per_wall=%.2f\n",
           threads, med, lo, hi, peak, st1.peak / 1048576.0, timed_allocs, cpu_per_wall);
    nb_optim_free(opt);
    nb_module_free(net);
    free(ms);
    return 0;
}

static int run_conv(int threads, int steps, int warmup, const char *only)
{
    static const struct {
        const char *name;
        int64_t C, O, H;
    } layers[] = {{"conv1", 1, 32, 28}, {"conv2", 32, 64, 14}};
    const nb_conv2d_opts pad1 = {.padding = {1, 1}};
    double *ms = malloc(sizeof(double) * (size_t)steps);
    if (!ms) return fail("setup");
    printf("# nabla %d.%d.%d threads=%d conv2d forward + backward (input, weight, bias), N %d, 3x3, padding 1\n",
           NABLA_VERSION_MAJOR, NABLA_VERSION_MINOR, NABLA_VERSION_PATCH, nb_num_threads(), BATCH);
    for (int li = 0; li < 2; li++) {
        if (only && strcmp(only, layers[li].name) != 0) continue;
        const int64_t C = layers[li].C, O = layers[li].O, H = layers[li].H;
        nb_rng rng;
        nb_rng_seed(&rng, 7);
        nb_tensor *x = nb_randn(NB_F32, 4, (int64_t[]){BATCH, C, H, H}, &rng);
        nb_tensor *w = nb_randn(NB_F32, 4, (int64_t[]){O, C, 3, 3}, &rng);
        nb_tensor *b = nb_randn(NB_F32, 1, (int64_t[]){O}, &rng);
        nb_tensor *gy = nb_randn(NB_F32, 4, (int64_t[]){BATCH, O, H, H}, &rng);
        if (!x || !w || !b || !gy) return fail("conv setup");
        nb_set_requires_grad(x, true);
        nb_set_requires_grad(w, true);
        nb_set_requires_grad(b, true);
        double cpu0 = cpu_seconds(), wall0 = bench_now();
        for (int s = 0; s < warmup + steps; s++) {
            if (s == warmup) {
                cpu0 = cpu_seconds();
                wall0 = bench_now();
            }
            nb_clear_grad(x);
            nb_clear_grad(w);
            nb_clear_grad(b);
            const double t0 = bench_now();
            nb_scope_begin();
            nb_tensor *y = nb_conv2d(x, w, b, pad1);
            if (!y || nb_backward(y, gy, 0) != 0) return fail("conv step");
            nb_scope_end();
            const double dt = (bench_now() - t0) * 1e3;
            if (s >= warmup) ms[s - warmup] = dt;
        }
        const double cpu_per_wall = (cpu_seconds() - cpu0) / (bench_now() - wall0);
        double lo = ms[0], hi = ms[0];
        for (int s = 1; s < steps; s++) {
            lo = ms[s] < lo ? ms[s] : lo;
            hi = ms[s] > hi ? ms[s] : hi;
        }
        const double med = bench_median(ms, steps);
        printf("nabla conv_ms %s %d %.3f\n", layers[li].name, threads, med);
        printf("RESULT conv=%s shape=(%d,%lld,%lld,%lld)->%lld threads=%d median_ms=%.3f min_ms=%.3f max_ms=%.3f "
               "cpu_per_wall=%.2f\n",
               layers[li].name, BATCH, (long long)C, (long long)H, (long long)H, (long long)O, threads, med, lo, hi,
               cpu_per_wall);
        fflush(stdout);
        nb_free(x);
        nb_free(w);
        nb_free(b);
        nb_free(gy);
    }
    free(ms);
    return 0;
}

int main(int argc, char **argv)
{
    int threads = 1, steps = 20, warmup = 3;
    bool conv = false;
    const char *only = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--step") == 0) conv = false;
        else if (strcmp(a, "--conv") == 0) conv = true;
        else if (strcmp(a, "--layer") == 0 && v && (strcmp(v, "conv1") == 0 || strcmp(v, "conv2") == 0))
            conv = true, only = v, i++;
        else if (strcmp(a, "--threads") == 0 && v && atoi(v) > 0) threads = atoi(v), i++;
        else if (strcmp(a, "--steps") == 0 && v && atoi(v) > 0) steps = atoi(v), i++;
        else if (strcmp(a, "--warmup") == 0 && v && atoi(v) >= 0) warmup = atoi(v), i++;
        else {
            fprintf(stderr, "usage: %s [--step | --conv | --layer conv1|conv2] [--threads N] [--steps S] [--warmup W]\n", argv[0]);
            return 2;
        }
    }
    if (nb_set_num_threads(threads) != 0) return fail("nb_set_num_threads");
    return conv ? run_conv(threads, steps, warmup, only) : run_step(threads, steps, warmup);
}

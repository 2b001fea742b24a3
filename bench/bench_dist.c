/*
 * bench_dist.c - what overlapping the all-reduce with backward buys: the time of
 * a data-parallel backward of an MLP done three ways, on every rank:
 *   plain     nb_backward alone (no communication: the floor)
 *   after     nb_backward, then nb_dist_allreduce_grads (communication after)
 *   ddp       nb_ddp_backward (bucketed all-gathers started from the hook)
 * Run under mpirun: mpirun -np 2 bench_dist [width] [steps] [bucket_kib] [batch].
 * Each process uses one thread. Built without MPI it says so and exits.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "nabla.h"
#include "nabla/dist.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    if (!nb_dist_available()) {
        printf("bench_dist: nabla was built without MPI\n");
        return 0;
    }
    if (nb_dist_init(&argc, &argv) != 0) {
        fprintf(stderr, "bench_dist: %s\n", nb_last_error());
        return 1;
    }
    int64_t w = argc > 1 ? atoll(argv[1]) : 512;
    int steps = argc > 2 ? atoi(argv[2]) : 20;
    size_t bucket = (size_t)(argc > 3 ? atoll(argv[3]) : 256) << 10;
    int64_t batch = argc > 4 ? atoll(argv[4]) : 64;
    nb_set_num_threads(1);
    nb_rng rng;
    nb_rng_seed(&rng, 1);
    enum { L = 6 };
    nb_module *mods[2 * L - 1];
    for (int i = 0; i < L; i++) {
        mods[2 * i] = nb_linear(w, w, true, NB_INIT_KAIMING, NB_F32, &rng);
        if (i < L - 1) mods[2 * i + 1] = nb_tanh_layer();
    }
    nb_module *m = nb_sequential(2 * L - 1, mods);
    nb_tensor *ps[64];
    int np = nb_module_params(m, ps, NULL, 64);
    nb_optim *o = nb_sgd(np, ps, 0.0, 0, 0, false);
    nb_ddp *d = nb_ddp_new(m, o, bucket);
    if (!d) {
        fprintf(stderr, "bench_dist: %s\n", nb_last_error());
        return 1;
    }
    double *t[3];
    for (int k = 0; k < 3; k++) t[k] = calloc((size_t)steps, sizeof(double));
    for (int s = 0; s < steps; s++)
        for (int k = 0; k < 3; k++) {
            nb_scope_begin();
            nb_tensor *x = nb_randn(NB_F32, 2, (int64_t[]){batch, w}, &rng);
            nb_tensor *y = nb_forward(m, x);
            nb_tensor *loss = nb_mean(nb_mul(y, y));
            nb_optim_zero_grad(o);
            nb_dist_barrier();
            double t0 = now();
            int rc = k == 0 ? nb_backward(loss, NULL, 0)
                     : k == 1 ? (nb_backward(loss, NULL, 0) || nb_dist_allreduce_grads(np, ps))
                              : nb_ddp_backward(d, loss);
            t[k][s] = now() - t0;
            nb_scope_end();
            if (nb_dist_any_failed(rc)) {
                fprintf(stderr, "bench_dist: %s\n", nb_last_error() ? nb_last_error() : "failed elsewhere");
                return 1;
            }
        }
    int during = 0, nb = nb_ddp_buckets(d, &during);
    for (int k = 0; k < 3; k++) qsort(t[k], (size_t)steps, sizeof(double), cmp);
    if (nb_dist_rank() == 0)
        printf("bench_dist: %d processes, MLP %d x (%lld x %lld), batch %lld per rank, %d buckets of %zu KiB (%d "
               "started during backward); median ms: plain backward %.2f, backward then all-reduce %.2f, "
               "nb_ddp_backward %.2f\n",
               nb_dist_size(), L, (long long)w, (long long)w, (long long)batch, nb, bucket >> 10, during, 1e3 * t[0][steps / 2],
               1e3 * t[1][steps / 2], 1e3 * t[2][steps / 2]);
    for (int k = 0; k < 3; k++) free(t[k]);
    nb_ddp_free(d);
    nb_optim_free(o);
    nb_module_free(m);
    nb_dist_finalize();
    return 0;
}

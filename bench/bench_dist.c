/*
 * bench_dist.c - data-parallel training steps under mpirun: throughput, and the communication per step
 * with and without its overlap with backward.
 *
 *   mpirun -np P bench_dist mlp|gpt [--threads T] [--steps N] [--bucket KiB]
 *
 *   mlp  the Fashion-MNIST MLP of `nabla train` (784-256-10, ReLU, Adam, global batch 128)
 *   gpt  GPT-2 "small" of the issue (nb_gpt: 4 layers, 256 wide, 4 heads, vocab 8192, T 64,
 *        AdamW, global batch 4)
 *
 * Every step draws the same global batch on every rank (random inputs, the seed of the step), and each
 * rank trains on its shard (nb_dist_shard), so P processes do the work of one on the whole batch. With
 * P > 1 the steps alternate between nb_ddp with overlap (buckets start from the gradient-ready hook)
 * and without (all buckets start after backward): the wait after backward without overlap is the
 * communication alone, with overlap it is the part not hidden. Rank 0 prints medians over the steps.
 * Built without MPI it says so and exits.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nabla.h"
#include "nabla/dist.h"
#include "nabla/gpt.h"
#include "timing.h"

typedef struct {
    bool gpt;
    int64_t batch, T, vocab; /* global batch; gpt: tokens and vocabulary */
    nb_module *m;
    nb_optim *opt;
} workload;

static int die(const char *what) {
    fprintf(stderr, "bench_dist: %s: %s\n", what, nb_last_error() ? nb_last_error() : "failed on another rank");
    return 1;
}

enum { NBATCH = 8 }; /* global batches drawn once, used in turn */

/* Global batch k: inputs (B, 784) f32 or tokens (B, T) i64, and targets (B) or (B T). */
static int make_batches(workload *w, nb_tensor **x, nb_tensor **y) {
    nb_rng rng;
    nb_rng_seed(&rng, 1000);
    int64_t B = w->batch, T = w->T;
    for (int k = 0; k < NBATCH; k++) {
        if (w->gpt) {
            x[k] = nb_new(NB_I64, 2, (int64_t[]){B, T}, NULL);
            y[k] = nb_new(NB_I64, 1, (int64_t[]){B * T}, NULL);
        } else {
            x[k] = nb_rand(NB_F32, 2, (int64_t[]){B, 784}, &rng);
            y[k] = nb_new(NB_I64, 1, (int64_t[]){B}, NULL);
        }
        if (!x[k] || !y[k]) return -1;
        int64_t *px = nb_data(x[k]), *py = nb_data(y[k]);
        for (int64_t i = 0; i < (w->gpt ? B * T : B); i++) {
            if (w->gpt) px[i] = (int64_t)(nb_rng_next(&rng) % (uint64_t)w->vocab);
            py[i] = (int64_t)(nb_rng_next(&rng) % (uint64_t)(w->gpt ? w->vocab : 10));
        }
    }
    return 0;
}

/* The loss of this rank's shard (rows off .. off+n) of a global batch, scaled so that the average over
   the ranks is the global batch's mean loss. */
static nb_tensor *shard_loss(workload *w, nb_tensor *x, nb_tensor *y, int64_t off, int64_t n) {
    int64_t T = w->gpt ? w->T : 1;
    nb_tensor *out = nb_forward(w->m, nb_slice(x, 0, off, off + n));
    if (w->gpt) out = nb_reshape(out, 2, (int64_t[]){n * T, w->vocab});
    nb_tensor *loss = nb_cross_entropy(out, nb_slice(y, 0, off * T, (off + n) * T));
    double f = (double)n * nb_dist_size() / (double)w->batch;
    return f == 1.0 ? loss : nb_scale(loss, f);
}

int main(int argc, char **argv) {
    if (!nb_dist_available()) {
        printf("bench_dist: nabla was built without MPI\n");
        return 0;
    }
    if (nb_dist_init(&argc, &argv) != 0) return die("nb_dist_init");
    workload w = {0};
    int threads = 1, steps = 0;
    size_t bucket = (size_t)1 << 20;
    const char *name = argc > 1 ? argv[1] : "mlp";
    w.gpt = strcmp(name, "gpt") == 0;
    if (!w.gpt && strcmp(name, "mlp")) {
        fprintf(stderr, "usage: mpirun -np P bench_dist mlp|gpt [--threads T] [--steps N] [--bucket KiB]\n");
        return 1;
    }
    for (int i = 2; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--steps")) steps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--bucket")) bucket = (size_t)atoll(argv[i + 1]) << 10;
    }
    nb_set_num_threads(threads);
    nb_rng rng;
    nb_rng_seed(&rng, 1);
    if (w.gpt) {
        w.batch = 4, w.T = 64, w.vocab = 8192;
        nb_gpt_config gc = {w.vocab, 64, 4, 4, 256, 0.0};
        if (!(w.m = nb_gpt(&gc, NB_F32, &rng)) || !(w.opt = nb_gpt_adamw(w.m, 1e-4, 0.9, 0.999, 1e-8, 0.0)))
            return die("nb_gpt");
        if (!steps) steps = 40;
    } else {
        w.batch = 128;
        nb_module *mods[3] = {nb_linear(784, 256, true, NB_INIT_KAIMING, NB_F32, &rng), nb_relu_layer(),
                              nb_linear(256, 10, true, NB_INIT_XAVIER, NB_F32, &rng)};
        if (!(w.m = nb_sequential(3, mods))) return die("nb_sequential");
        nb_tensor *ps[8];
        int np = nb_module_params(w.m, ps, NULL, 8);
        if (!(w.opt = nb_adam(np, ps, 2e-3, 0.9, 0.999, 1e-8, 0.0))) return die("nb_adam");
        if (!steps) steps = 400;
    }
    int P = nb_dist_size(), rank = nb_dist_rank();
    int64_t off = 0, n = nb_dist_shard(w.batch, rank, P, &off);
    nb_ddp *d = NULL;
    if (P > 1 && !(d = nb_ddp_new(w.m, w.opt, bucket))) return die("nb_ddp_new");

    /* Per step and mode (0: overlap, 1: after backward): step, backward and wait seconds. */
    double *t[2][5];
    for (int k = 0; k < 2; k++)
        for (int j = 0; j < 5; j++) t[k][j] = calloc((size_t)steps, sizeof(double));
    nb_tensor *bx[NBATCH], *by[NBATCH];
    if (make_batches(&w, bx, by) != 0) return die("batches");
    int cnt[2] = {0, 0}, warm = 5;
    for (int s = 0; s < steps + warm; s++) {
        int mode = d ? s % 2 : 0;
        if (d) nb_ddp_set_overlap(d, mode == 0);
        if (d) nb_dist_barrier();
        nb_scope_begin();
        double t0 = bench_now();
        nb_tensor *loss = shard_loss(&w, bx[s % NBATCH], by[s % NBATCH], off, n);
        int rc = !loss;
        if (!rc) rc = d ? nb_ddp_backward(d, loss) : nb_backward(loss, NULL, 0);
        if (!rc) rc = nb_optim_step(w.opt);
        nb_optim_zero_grad(w.opt);
        double dt = bench_now() - t0;
        nb_scope_end();
        if (d ? nb_dist_any_failed(rc) : rc) return die("step");
        nb_ddp_stats st = {0};
        if (d) nb_ddp_stats_get(d, &st, true);
        if (s < warm) continue;
        int i = cnt[mode]++;
        t[mode][0][i] = dt, t[mode][1][i] = st.backward_seconds, t[mode][2][i] = st.wait_seconds;
        t[mode][3][i] = st.finish_seconds;
        t[mode][4][i] = st.average_seconds;
    }
    if (rank == 0) {
        double step = bench_median(t[0][0], cnt[0]);
        double items = w.gpt ? (double)(w.batch * w.T) : (double)w.batch;
        printf("bench_dist %s: %d process%s x %d thread%s, global batch %lld%s: step %.2f ms, %.0f %s/s\n", name, P,
               P > 1 ? "es" : "", threads, threads > 1 ? "s" : "", (long long)w.batch, w.gpt ? " x 64 tokens" : "",
               1e3 * step, items / step, w.gpt ? "tokens" : "samples");
        if (d) {
            nb_ddp_stats st;
            nb_ddp_stats_get(d, &st, false);
            int during = 0, nbk = nb_ddp_buckets(d, &during);
            double bw = bench_median(t[0][1], cnt[0]), exposed = bench_median(t[0][2], cnt[0]);
            double step_off = bench_median(t[1][0], cnt[1]), alone = bench_median(t[1][2], cnt[1]);
            double bw_off = bench_median(t[1][1], cnt[1]), fin = bench_median(t[0][3], cnt[0]);
            double fin_off = bench_median(t[1][3], cnt[1]), avg = bench_median(t[0][4], cnt[0]);
            printf("  %d bucket%s of <= %zu KiB, %lld gradient bytes per rank per step, %d bucket%s started during "
                   "the last backward\n",
                   nbk, nbk > 1 ? "s" : "", bucket >> 10, (long long)st.bytes, during, during == 1 ? "" : "s");
            printf("  without overlap (buckets started after backward): step %.2f ms, backward %.2f ms, then %.2f ms "
                   "(communication %.2f ms)\n",
                   1e3 * step_off, 1e3 * bw_off, 1e3 * fin_off, 1e3 * alone);
            printf("  with overlap (buckets started from the hook):      step %.2f ms, backward %.2f ms, then %.2f ms "
                   "(communication %.2f ms): %.0f%% of the communication hidden behind backward\n",
                   1e3 * step, 1e3 * bw, 1e3 * fin, 1e3 * exposed, alone > 0 ? 100.0 * (1.0 - exposed / alone) : 0.0);
            printf("  of the time after backward with overlap: the averaging into .grad (%.2f ms)\n",
                   1e3 * avg);
        }
    }
    for (int k = 0; k < 2; k++)
        for (int j = 0; j < 5; j++) free(t[k][j]);
    for (int k = 0; k < NBATCH; k++) nb_free(bx[k]), nb_free(by[k]);
    nb_ddp_free(d);
    nb_optim_free(w.opt);
    nb_module_free(w.m);
    nb_dist_finalize();
    return 0;
}

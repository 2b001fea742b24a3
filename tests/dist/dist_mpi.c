/*
 * dist_mpi.c - nabla/dist.h on 2 processes (ctest dist_mpi runs it under
 * mpirun -np 2). Every rank runs every check; mpirun fails when a rank does.
 *  - nb_dist_broadcast_module makes differently seeded modules identical, and
 *    refuses, on both ranks, modules whose shapes differ;
 *  - nb_dist_allreduce_grads averages, with the bits of the rank-order sum;
 *  - an MLP trained 100 steps with nb_ddp, each rank on its nb_dist_shard of a
 *    global batch B, matches one process trained on the whole batch (run on
 *    rank 0 inside this program) within float rounding, the maximum
 *    difference printed; two such runs give identical bits, on both ranks,
 *    and so does a run without the overlap (nb_ddp_set_overlap); the counters
 *    of nb_ddp_stats_get add up;
 *  - nb_dist_any_failed and a failing nb_ddp_backward stop both ranks.
 */
#include "harness.h"
#include "nabla/dist.h"

/* The values of every rank equal (bit for bit) to this rank's: the average over the ranks of an exact copy
   is the value itself, on every rank exactly when they all agree. Collective. */
static bool same_everywhere(const float *v, int64_t n) {
    nb_scope_begin();
    nb_tensor *p = nb_full(NB_F64, 1, (int64_t[]){n}, 0);
    nb_set_requires_grad(p, true);
    double *c = malloc(sizeof(double) * (size_t)n);
    for (int64_t i = 0; i < n; i++) c[i] = v[i];
    nb_tensor *ct = nb_from_f64(NB_F64, 1, (int64_t[]){n}, c);
    bool ok = nb_backward(nb_sum(nb_mul(p, ct)), NULL, 0) == 0 && nb_dist_allreduce_grads(1, &p) == 0;
    double got[4096];
    int64_t k = ok ? nb_read_f64(nb_grad(p), got, 4096) : -1;
    ok = ok && k == n;
    for (int64_t i = 0; ok && i < n && i < 4096; i++) ok = memcmp(&got[i], &c[i], sizeof(double)) == 0;
    nb_clear_grad(p);
    free(c);
    nb_scope_end();
    return nb_dist_any_failed(!ok) == 0;
}

static nb_module *mlp(uint64_t seed, int64_t hidden) {
    nb_rng rng;
    nb_rng_seed(&rng, seed);
    nb_module *mods[5] = {nb_linear(6, hidden, true, NB_INIT_KAIMING, NB_F32, &rng), nb_tanh_layer(),
                          nb_linear(hidden, hidden, true, NB_INIT_KAIMING, NB_F32, &rng), nb_tanh_layer(),
                          nb_linear(hidden, 2, true, NB_INIT_KAIMING, NB_F32, &rng)};
    return nb_sequential(5, mods);
}

static int params_of(nb_module *m, float *out, int cap, bool grads) {
    nb_tensor *ps[16];
    int np = nb_module_params(m, ps, NULL, 16), k = 0;
    for (int i = 0; i < np; i++) {
        nb_tensor *t = grads ? nb_grad(ps[i]) : ps[i];
        if (!t) continue;
        double v[1024];
        int64_t n = nb_read_f64(t, v, 1024);
        for (int64_t j = 0; j < n && k < cap; j++) out[k++] = (float)v[j];
    }
    return k;
}

static void test_broadcast(void) {
    int rank = nb_dist_rank();
    nb_module *m = mlp(1000 + (uint64_t)rank, 8); /* differently initialised on each rank */
    float v[512];
    int n = params_of(m, v, 512, false);
    CHECK(!same_everywhere(v, n));
    CHECK(nb_dist_broadcast_module(m) == 0);
    n = params_of(m, v, 512, false);
    CHECK(same_everywhere(v, n));
    nb_module_free(m);
    /* shapes that differ: refused on both ranks */
    m = mlp(5, rank == 0 ? 8 : 9);
    CHECK(nb_dist_broadcast_module(m) != 0);
    CHECK_ERR("nb_dist_broadcast_module");
    nb_module_free(m);
}

static void test_allreduce(void) {
    int rank = nb_dist_rank(), size = nb_dist_size();
    enum { N = 37 };
    nb_tensor *p32 = nb_full(NB_F32, 1, (int64_t[]){N}, 0), *p64 = nb_full(NB_F64, 2, (int64_t[]){N, 2}, 0);
    nb_set_requires_grad(p32, true);
    nb_set_requires_grad(p64, true);
    double c32[N], c64[2 * N];
    for (int i = 0; i < N; i++) c32[i] = (float)((rank + 1) * 0.1 * (i + 1) + rank / 3.0);
    for (int i = 0; i < 2 * N; i++) c64[i] = (rank + 1) * 1.0 / (i + 3) - rank;
    nb_scope_begin();
    nb_tensor *loss = nb_add(nb_sum(nb_mul(p32, nb_from_f64(NB_F32, 1, (int64_t[]){N}, c32))),
                             nb_sum(nb_mul(p64, nb_from_f64(NB_F64, 2, (int64_t[]){N, 2}, c64))));
    CHECK(nb_backward(loss, NULL, 0) == 0);
    nb_scope_end();
    nb_tensor *ps[2] = {p32, p64};
    CHECK(nb_dist_allreduce_grads(2, ps) == 0);
    /* expected: the rank-order sum in double, divided by the size, rounded once */
    double g32[N], g64[2 * N];
    nb_read_f64(nb_grad(p32), g32, N);
    nb_read_f64(nb_grad(p64), g64, 2 * N);
    for (int i = 0; i < N; i++) {
        double s = 0;
        for (int r = 0; r < size; r++) s += (double)(float)((r + 1) * 0.1 * (i + 1) + r / 3.0);
        CHECK((float)g32[i] == (float)(s / size));
    }
    for (int i = 0; i < 2 * N; i++) {
        double s = 0;
        for (int r = 0; r < size; r++) s += (r + 1) * 1.0 / (i + 3) - r;
        CHECK(g64[i] == s / size);
    }
    nb_free(p32);
    nb_free(p64);
}

/* The data: a fixed global batch of B rows, regression to a smooth target. */
enum { B = 16, STEPS = 100, HIDDEN = 16 };

static void batch(int step, nb_tensor **x, nb_tensor **y) {
    nb_rng rng;
    nb_rng_seed(&rng, 77 + (uint64_t)step);
    *x = nb_randn(NB_F32, 2, (int64_t[]){B, 6}, &rng);
    *y = nb_tanh(nb_matmul(*x, nb_full(NB_F32, 2, (int64_t[]){6, 2}, 0.3)));
}

/* 100 steps of data-parallel SGD with momentum (this rank's shard of each batch); the parameters into out. */
static int train_ddp(float *out, int cap, int *buckets, int *during, bool overlap) {
    int rank = nb_dist_rank(), size = nb_dist_size();
    nb_module *m = mlp(42 + (uint64_t)rank * 1000, HIDDEN); /* broadcast makes rank 0's start everywhere */
    nb_tensor *ps[16];
    int np = nb_module_params(m, ps, NULL, 16);
    nb_optim *o = nb_sgd(np, ps, 0.05, 0.9, 0, false);
    nb_ddp *d = nb_ddp_new(m, o, 256); /* small buckets: several per step */
    CHECK(d != NULL);
    CHECK(nb_ddp_set_overlap(d, overlap) == 0);
    int64_t off, n = nb_dist_shard(B, rank, size, &off);
    for (int step = 0; step < STEPS && d; step++) {
        nb_scope_begin();
        nb_tensor *x, *y;
        batch(step, &x, &y);
        nb_tensor *loss = nb_mse_loss(nb_forward(m, nb_slice(x, 0, off, off + n)), nb_slice(y, 0, off, off + n));
        nb_optim_zero_grad(o);
        int bad = nb_ddp_backward(d, loss) != 0 || nb_ddp_step(d) != 0;
        nb_scope_end();
        CHECK(nb_dist_any_failed(bad) == 0);
    }
    if (d) *buckets = nb_ddp_buckets(d, during);
    nb_ddp_stats st;
    CHECK(nb_ddp_stats_get(d, &st, false) == 0);
    CHECK(st.steps == STEPS && st.buckets == *buckets && st.started_during_backward == *during);
    CHECK(st.backward_seconds > 0 && st.finish_seconds >= st.wait_seconds + st.average_seconds);
    int k = params_of(m, out, cap, false);
    nb_ddp_free(d);
    nb_optim_free(o);
    nb_module_free(m);
    return k;
}

/* The same on one process and the whole batch. */
static int train_single(float *out, int cap) {
    nb_module *m = mlp(42, HIDDEN);
    nb_tensor *ps[16];
    int np = nb_module_params(m, ps, NULL, 16);
    nb_optim *o = nb_sgd(np, ps, 0.05, 0.9, 0, false);
    for (int step = 0; step < STEPS; step++) {
        nb_scope_begin();
        nb_tensor *x, *y;
        batch(step, &x, &y);
        nb_optim_zero_grad(o);
        CHECK(nb_backward(nb_mse_loss(nb_forward(m, x), y), NULL, 0) == 0);
        CHECK(nb_optim_step(o) == 0);
        nb_scope_end();
    }
    int k = params_of(m, out, cap, false);
    nb_optim_free(o);
    nb_module_free(m);
    return k;
}

static void test_ddp_matches_single(void) {
    static float a[2048], b[2048], c[2048], ref[2048];
    int buckets = 0, during = 0;
    int nc = train_ddp(c, 2048, &buckets, &during, false);
    CHECK(buckets > 1 && during == 0); /* without overlap: every bucket after backward */
    int na = train_ddp(a, 2048, &buckets, &during, true);
    int nb2 = train_ddp(b, 2048, &buckets, &during, true);
    CHECK(na > 0 && na == nb2 && na == nc);
    CHECK(memcmp(a, b, sizeof(float) * (size_t)na) == 0); /* two runs: the same bits */
    CHECK(memcmp(a, c, sizeof(float) * (size_t)na) == 0); /* with and without overlap: the same bits */
    CHECK(same_everywhere(a, na));                        /* every rank: the same bits */
    CHECK(buckets > 1 && during == buckets);
    int fail = 0;
    if (nb_dist_rank() == 0) {
        int nr = train_single(ref, 2048);
        CHECK(nr == na);
        double maxd = 0, maxv = 0;
        for (int i = 0; i < na && i < nr; i++) {
            double dlt = fabs((double)a[i] - (double)ref[i]);
            if (dlt > maxd) maxd = dlt;
            if (fabs(ref[i]) > maxv) maxv = fabs(ref[i]);
        }
        printf("dist_mpi: %d processes vs 1 after %d steps of SGD (global batch %d, %d parameters, %d buckets, "
               "%d started during backward): max |difference| %.3g (largest |parameter| %.3g)\n",
               nb_dist_size(), STEPS, B, na, buckets, during, maxd, maxv);
        fail = !(maxd <= 1e-5 * (1 + maxv));
        CHECK(!fail);
    }
    CHECK(nb_dist_any_failed(fail) == 0);
}

/* nb_dist_allreduce_sum: every rank gets the sum over the ranks. */
static void test_allreduce_sum(void) {
    int rank = nb_dist_rank(), size = nb_dist_size();
    double v[3] = {rank + 0.5, -rank, 1};
    CHECK(nb_dist_allreduce_sum(v, 3) == 0);
    double want0 = 0, want1 = 0;
    for (int r = 0; r < size; r++) want0 += r + 0.5, want1 -= r;
    CHECK(v[0] == want0 && v[1] == want1 && v[2] == size);
    CHECK(nb_dist_allreduce_sum(v, 0) == 0);
}

static void test_any_failed(void) {
    int rank = nb_dist_rank();
    CHECK(nb_dist_any_failed(0) == 0);
    CHECK(nb_dist_any_failed(rank == 1) == 1); /* one rank fails: both see it */
    CHECK(nb_dist_any_failed(rank == 0 ? 7 : 0) == 1);
    CHECK(nb_dist_barrier() == 0);

    /* nb_ddp_backward failing on rank 1 (its graph is already released): both ranks return an error */
    nb_module *m = mlp(3, 8);
    nb_tensor *ps[16];
    int np = nb_module_params(m, ps, NULL, 16);
    nb_optim *o = nb_sgd(np, ps, 0.1, 0, 0, false);
    nb_ddp *d = nb_ddp_new(m, o, 0);
    CHECK(d != NULL);
    nb_scope_begin();
    nb_rng rng;
    nb_rng_seed(&rng, 9);
    nb_tensor *loss = nb_mse_loss(nb_forward(m, nb_randn(NB_F32, 2, (int64_t[]){4, 6}, &rng)),
                                  nb_full(NB_F32, 2, (int64_t[]){4, 2}, 0.5));
    if (rank == 1) CHECK(nb_backward(loss, NULL, 0) == 0); /* releases the graph */
    nb_optim_zero_grad(o);
    CHECK(nb_ddp_backward(d, loss) != 0);
    if (rank == 0) CHECK_ERR("nb_ddp_backward: backward failed on rank 1");
    else CHECK_ERR("already released");
    nb_scope_end();
    /* and the next step works again on both */
    nb_scope_begin();
    loss = nb_mse_loss(nb_forward(m, nb_randn(NB_F32, 2, (int64_t[]){4, 6}, &rng)),
                       nb_full(NB_F32, 2, (int64_t[]){4, 2}, 0.5));
    nb_optim_zero_grad(o);
    CHECK(nb_ddp_backward(d, loss) == 0);
    float g[512];
    int n = params_of(m, g, 512, true);
    CHECK(n > 0 && same_everywhere(g, n));
    nb_scope_end();
    nb_ddp_free(d);
    nb_optim_free(o);
    nb_module_free(m);
}

int main(int argc, char **argv) {
    if (nb_dist_init(&argc, &argv) != 0) {
        fprintf(stderr, "dist_mpi: %s\n", nb_last_error());
        return 1;
    }
    if (nb_dist_size() != 2) {
        fprintf(stderr, "dist_mpi: run me on 2 processes (mpirun -np 2), not %d\n", nb_dist_size());
        nb_dist_finalize();
        return 1;
    }
    RUN(test_broadcast);
    RUN(test_allreduce);
    RUN(test_ddp_matches_single);
    RUN(test_allreduce_sum);
    RUN(test_any_failed);
    CHECK(nb_memory_in_use() == 0);
    CHECK(nb_dist_finalize() == 0);
    return th_finish();
}

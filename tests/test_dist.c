/*
 * test_dist.c - nabla/dist.h in one process, in every build: nb_dist_shard;
 * the gradient-ready hook of the engine (once per leaf, the installed value,
 * the last layer's gradients before the first layer's); without MPI, the
 * "built without MPI" errors; with MPI, a single process (size 1): broadcast
 * and all-reduce change nothing, nb_ddp gives the bits of a plain backward.
 * The averaging kernel (rank_mean) of both kernel sets, against its definition.
 * Two processes: tests/dist/dist_mpi.c (ctest dist_mpi).
 */
#include "harness.h"
#include "nabla/dist.h"

#include "backend/backend.h"

#include <string.h>

static void test_shard(void) {
    for (int size = 1; size <= 7; size++)
        for (int64_t b = 0; b <= 23; b++) {
            int64_t next = 0, lo = INT64_MAX, hi = -1;
            for (int r = 0; r < size; r++) {
                int64_t off = -1, n = nb_dist_shard(b, r, size, &off);
                CHECK(off == next); /* in rank order, no gap, no overlap */
                next = off + n;
                if (n < lo) lo = n;
                if (n > hi) hi = n;
            }
            CHECK(next == b);      /* the union is the whole batch */
            CHECK(hi - lo <= 1);   /* sizes differ by at most one */
        }
    int64_t off;
    CHECK(nb_dist_shard(10, 0, 3, &off) == 4 && off == 0);
    CHECK(nb_dist_shard(10, 1, 3, &off) == 3 && off == 4);
    CHECK(nb_dist_shard(10, 2, 3, NULL) == 3);
    CHECK(nb_dist_shard(10, 3, 3, &off) == -1);
    CHECK_ERR("nb_dist_shard");
    CHECK(nb_dist_shard(-1, 0, 1, &off) == -1);
    CHECK_ERR("nb_dist_shard");
    CHECK(nb_dist_shard(4, 0, 0, &off) == -1);
    CHECK_ERR("nb_dist_shard");
}

static nb_module *mlp(uint64_t seed) {
    nb_rng rng;
    nb_rng_seed(&rng, seed);
    nb_module *mods[3] = {nb_linear(4, 8, true, NB_INIT_KAIMING, NB_F32, &rng), nb_tanh_layer(),
                          nb_linear(8, 3, true, NB_INIT_KAIMING, NB_F32, &rng)};
    return nb_sequential(3, mods);
}

static nb_tensor *mlp_loss(nb_module *m, int64_t n, uint64_t seed) {
    nb_rng rng;
    nb_rng_seed(&rng, seed);
    nb_tensor *x = nb_randn(NB_F32, 2, (int64_t[]){n, 4}, &rng);
    nb_tensor *y = nb_randn(NB_F32, 2, (int64_t[]){n, 3}, &rng);
    return nb_mse_loss(nb_forward(m, x), y);
}

/* What the hook saw, in the order it fired. */
static struct {
    nb_tensor *params[8];
    int np;
    int order[16], n;
    float vals[4][64];
} seen;

static void hook(nb_tensor *leaf, nb_tensor *grad, void *user) {
    CHECK(user == &seen);
    CHECK(nb_is_contiguous(grad) && nb_numel(grad) == nb_numel(leaf));
    for (int i = 0; i < seen.np; i++)
        if (seen.params[i] == leaf && seen.n < 16) {
            seen.order[seen.n++] = i;
            double v[64];
            int64_t k = nb_read_f64(grad, v, 64);
            for (int64_t j = 0; j < k && j < 64; j++) seen.vals[i][j] = (float)v[j];
        }
}

static void test_grad_hook(void) {
    nb_module *m = mlp(1);
    seen.np = nb_module_params(m, seen.params, NULL, 8);
    CHECK(seen.np == 4); /* fc1 weight, bias, fc2 weight, bias */
    for (int pass = 0; pass < 2; pass++) { /* the second adds to the first's .grad */
        seen.n = 0;
        nb_scope_begin();
        nb_set_grad_ready_hook(hook, &seen);
        void *u = NULL;
        CHECK(nb_grad_ready_hook(&u) == hook && u == &seen);
        CHECK(nb_backward(mlp_loss(m, 5, 7), NULL, 0) == 0);
        nb_set_grad_ready_hook(NULL, NULL);
        CHECK(nb_grad_ready_hook(NULL) == NULL);
        nb_scope_end();
        CHECK(seen.n == 4);
        /* the last layer's gradients are final before the first layer's */
        int pos[4] = {-1, -1, -1, -1};
        for (int k = 0; k < seen.n; k++) pos[seen.order[k]] = k;
        CHECK(pos[2] >= 0 && pos[3] >= 0 && pos[0] >= 0 && pos[1] >= 0);
        CHECK(pos[2] < pos[0] && pos[3] < pos[0] && pos[2] < pos[1] && pos[3] < pos[1]);
        /* and each value seen is the one installed */
        for (int i = 0; i < 4; i++) {
            double v[64];
            int64_t k = nb_read_f64(nb_grad(seen.params[i]), v, 64);
            for (int64_t j = 0; j < k && j < 64; j++) CHECK(seen.vals[i][j] == (float)v[j]);
        }
    }
    /* nb_gradient does not fire it */
    seen.n = 0;
    nb_scope_begin();
    nb_set_grad_ready_hook(hook, &seen);
    CHECK(nb_gradient(mlp_loss(m, 5, 7), seen.params[0], 0) != NULL);
    nb_set_grad_ready_hook(NULL, NULL);
    nb_scope_end();
    CHECK(seen.n == 0);
    nb_module_free(m);
}

static void read_all(nb_module *m, bool grads, float *out, int cap) {
    nb_tensor *ps[8];
    int np = nb_module_params(m, ps, NULL, 8), k = 0;
    for (int i = 0; i < np; i++) {
        nb_tensor *t = grads ? nb_grad(ps[i]) : ps[i];
        double v[64];
        int64_t n = t ? nb_read_f64(t, v, 64) : 0;
        for (int64_t j = 0; j < n && k < cap; j++) out[k++] = (float)v[j];
    }
}

static void test_without_mpi(void) {
    if (nb_dist_available()) return;
    CHECK(nb_dist_rank() == 0 && nb_dist_size() == 1);
    CHECK(nb_dist_init(NULL, NULL) != 0);
    CHECK_ERR("nb_dist_init: nabla was built without MPI");
    CHECK(nb_dist_finalize() != 0);
    CHECK_ERR("nb_dist_finalize: nabla was built without MPI");
    CHECK(nb_dist_barrier() != 0);
    CHECK_ERR("nb_dist_barrier: nabla was built without MPI");
    CHECK(nb_dist_any_failed(0) != 0);
    CHECK_ERR("nb_dist_any_failed: nabla was built without MPI");
    CHECK(nb_dist_broadcast_module(NULL) != 0);
    CHECK_ERR("nb_dist_broadcast_module: nabla was built without MPI");
    CHECK(nb_dist_allreduce_grads(0, NULL) != 0);
    CHECK_ERR("nb_dist_allreduce_grads: nabla was built without MPI");
    double one = 1;
    CHECK(nb_dist_allreduce_sum(&one, 1) != 0 && one == 1);
    CHECK_ERR("nb_dist_allreduce_sum: nabla was built without MPI");
    nb_module *m = mlp(1);
    nb_tensor *ps[4];
    nb_module_params(m, ps, NULL, 4);
    nb_optim *o = nb_sgd(4, ps, 0.1, 0, 0, false);
    CHECK(nb_ddp_new(m, o, 0) == NULL);
    CHECK_ERR("nb_ddp_new: nabla was built without MPI");
    CHECK(nb_ddp_backward(NULL, NULL) != 0);
    CHECK_ERR("nb_ddp_backward: nabla was built without MPI");
    CHECK(nb_ddp_step(NULL) != 0);
    CHECK_ERR("nb_ddp_step: nabla was built without MPI");
    nb_ddp_stats st = {.steps = 7};
    CHECK(nb_ddp_stats_get(NULL, &st, false) != 0 && st.steps == 0);
    CHECK_ERR("nb_ddp_stats_get: nabla was built without MPI");
    CHECK(nb_ddp_set_overlap(NULL, false) != 0);
    CHECK_ERR("nb_ddp_set_overlap: nabla was built without MPI");
    nb_ddp_free(NULL);
    nb_optim_free(o);
    nb_module_free(m);
}

static void test_single_process(void) {
    if (!nb_dist_available()) return;
    CHECK(nb_dist_rank() == 0 && nb_dist_size() == 1);
    CHECK(nb_dist_any_failed(0) == 0 && nb_dist_any_failed(5) == 1); /* before init: this process alone */
    CHECK(nb_dist_barrier() != 0);
    CHECK_ERR("call nb_dist_init first");
    nb_module *m = mlp(1), *ref = mlp(1);
    nb_tensor *ps[4], *rps[4];
    nb_module_params(m, ps, NULL, 4);
    nb_module_params(ref, rps, NULL, 4);
    nb_optim *o = nb_adam(4, ps, 0.01, 0.9, 0.999, 1e-8, 0), *ro = nb_adam(4, rps, 0.01, 0.9, 0.999, 1e-8, 0);
    CHECK(nb_ddp_new(m, o, 0) == NULL);
    CHECK_ERR("nb_ddp_new: call nb_dist_init first");

    CHECK(nb_dist_init(NULL, NULL) == 0);
    CHECK(nb_dist_init(NULL, NULL) == 0); /* again: nothing */
    CHECK(nb_dist_rank() == 0 && nb_dist_size() == 1);
    CHECK(nb_dist_barrier() == 0);
    CHECK(nb_dist_any_failed(0) == 0 && nb_dist_any_failed(1) == 1);
    double v[2] = {1.5, -2};
    CHECK(nb_dist_allreduce_sum(v, 2) == 0 && v[0] == 1.5 && v[1] == -2); /* one rank: the values themselves */
    CHECK(nb_dist_allreduce_sum(NULL, 2) != 0);
    CHECK_ERR("nb_dist_allreduce_sum: n 2 must be >= 0 and v given");
    CHECK(nb_dist_broadcast_module(m) == 0);

    /* a bucket of 64 bytes: each parameter one of its own (and fc1's weight larger than that) */
    nb_ddp *d = nb_ddp_new(m, o, 64);
    CHECK(d != NULL);
    int during = -1;
    for (int step = 0; step < 5; step++) {
        nb_scope_begin();
        nb_optim_zero_grad(o);
        nb_optim_zero_grad(ro);
        CHECK(nb_ddp_backward(d, mlp_loss(m, 6, 100 + step)) == 0);
        CHECK(nb_backward(mlp_loss(ref, 6, 100 + step), NULL, 0) == 0);
        float a[128] = {0}, b[128] = {0};
        read_all(m, true, a, 128);
        read_all(ref, true, b, 128);
        CHECK(memcmp(a, b, sizeof a) == 0); /* size 1: the very bits of a plain backward */
        /* all-reduce over one process changes nothing */
        CHECK(nb_dist_allreduce_grads(4, ps) == 0);
        read_all(m, true, a, 128);
        CHECK(memcmp(a, b, sizeof a) == 0);
        CHECK(nb_ddp_step(d) == 0);
        CHECK(nb_optim_step(ro) == 0);
        nb_scope_end();
    }
    CHECK(nb_ddp_buckets(d, &during) == 4);
    CHECK(during == 4); /* every bucket started from the hook, while backward ran */
    nb_ddp_stats st;
    CHECK(nb_ddp_stats_get(d, &st, true) == 0);
    CHECK(st.steps == 5 && st.buckets == 4 && st.started_during_backward == 4);
    int64_t bytes = 0;
    for (int i = 0; i < 4; i++) bytes += nb_numel(ps[i]) * 4;
    CHECK(st.bytes == bytes);
    CHECK(st.backward_seconds > 0 && st.wait_seconds >= 0 && st.average_seconds >= 0);
    CHECK(st.finish_seconds >= st.wait_seconds + st.average_seconds);
    CHECK(nb_ddp_stats_get(d, &st, false) == 0 && st.steps == 0 && st.backward_seconds == 0); /* reset */
    /* without overlap: the buckets start after backward, the gradients are the same bits */
    CHECK(nb_ddp_set_overlap(d, false) == 0);
    nb_scope_begin();
    nb_optim_zero_grad(o);
    nb_optim_zero_grad(ro);
    CHECK(nb_ddp_backward(d, mlp_loss(m, 6, 200)) == 0);
    CHECK(nb_backward(mlp_loss(ref, 6, 200), NULL, 0) == 0);
    {
        float ga[128] = {0}, gb[128] = {0};
        read_all(m, true, ga, 128);
        read_all(ref, true, gb, 128);
        CHECK(memcmp(ga, gb, sizeof ga) == 0);
    }
    nb_scope_end();
    CHECK(nb_ddp_buckets(d, &during) == 4 && during == 0);
    CHECK(nb_ddp_stats_get(d, &st, false) == 0 && st.steps == 1 && st.started_during_backward == 0);
    CHECK(nb_ddp_stats_get(NULL, &st, false) != 0);
    CHECK_ERR("nb_ddp_stats_get: ddp and s must not be NULL");
    CHECK(nb_ddp_stats_get(d, NULL, false) != 0);
    CHECK_ERR("nb_ddp_stats_get: ddp and s must not be NULL");
    CHECK(nb_ddp_set_overlap(NULL, true) != 0);
    CHECK_ERR("nb_ddp_set_overlap: ddp is NULL");
    float a[128] = {0}, b[128] = {0};
    read_all(m, false, a, 128);
    read_all(ref, false, b, 128);
    CHECK(memcmp(a, b, sizeof a) == 0);
    CHECK(nb_grad_ready_hook(NULL) == NULL); /* restored */
    nb_ddp_free(d);
    CHECK(nb_ddp_backward(NULL, NULL) != 0);
    CHECK_ERR("nb_ddp_backward");
    CHECK(nb_dist_finalize() == 0);
    CHECK(nb_dist_size() == 1);
    nb_optim_free(o);
    nb_optim_free(ro);
    nb_module_free(m);
    nb_module_free(ref);
}

/* rank_mean of the fast and the reference set: the bits of its definition (the ranks' values summed in double in
   rank order, divided by p, rounded once), on 1 and 2 threads; n spans several blocks and thread parts, with a
   tail; the ranks' runs stride apart, with a gap. */
static void test_rank_mean(void) {
    const int64_t n = 70013, stride = n + 5;
    for (int f64 = 0; f64 <= 1; f64++)
        for (int p = 1; p <= 3; p++) {
            size_t es = f64 ? sizeof(double) : sizeof(float);
            char *src = malloc(es * (size_t)(stride * p)), *want = malloc(es * (size_t)n), *got = malloc(es * (size_t)n);
            CHECK(src && want && got);
            if (!src || !want || !got) goto next;
            uint64_t h = 0x9e3779b97f4a7c15ull * (uint64_t)(p + 7 * f64);
            for (int64_t i = 0; i < stride * p; i++) { /* values of mixed magnitude and sign */
                h ^= h >> 12, h ^= h << 25, h ^= h >> 27;
                double v = ((double)(h >> 11) / 9007199254740992.0 - 0.5) * ((i % 7) ? 1.0 : 1e6);
                if (f64) ((double *)src)[i] = v;
                else ((float *)src)[i] = (float)v;
            }
            for (int64_t j = 0; j < n; j++) {
                double a = f64 ? ((double *)src)[j] : (double)((float *)src)[j];
                for (int r = 1; r < p; r++)
                    a += f64 ? ((double *)src)[r * stride + j] : (double)((float *)src)[r * stride + j];
                if (f64) ((double *)want)[j] = a / p;
                else ((float *)want)[j] = (float)(a / p);
            }
            const nbi_backend *sets[2] = {nbi_backend_cpu(), nbi_backend_reference()};
            for (int k = 0; k < 2; k++)
                for (int threads = 1; threads <= 2; threads++) {
                    nb_set_num_threads(threads);
                    memset(got, 0xff, es * (size_t)n);
                    sets[k]->rank_mean(f64 ? NB_F64 : NB_F32, got, src, stride, n, p);
                    CHECK(memcmp(got, want, es * (size_t)n) == 0);
                }
            nb_set_num_threads(0);
        next:
            free(src), free(want), free(got);
        }
}

int main(void) {
    RUN(test_shard);
    RUN(test_rank_mean);
    RUN(test_grad_hook);
    RUN(test_without_mpi);
    RUN(test_single_process);
    CHECK(nb_memory_in_use() == 0);
    return th_finish();
}

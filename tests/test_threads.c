/*
 * test_threads.c - the worker pool and application threads, written to be run
 * under ThreadSanitizer as well (make tsan; make test runs it there).
 *
 * 1. Everything the pool splits (matrix products in every layout, large unary
 *    and binary elementwise ops, reductions over an axis and over everything,
 *    the optimizer updates, the softmax family and cross-entropy (split over
 *    rows; the loss summed in row order), layer norm and its gradient (dx split by
 *    rows, dgamma and dbeta by columns), attention forward and backward (split by
 *    batch-heads and blocks of queries or keys), and whole training steps: forward, backward, Adam)
 *    gives the same bits on 2, 3 and 4 threads as on 1, with the pool resized
 *    between runs.
 * 2. Two application threads each train a model of their own at the same time,
 *    contending for the one pool (a job submitted while the pool is busy runs on
 *    its caller alone); each ends with the bits of a sequential run, and errors
 *    and grad mode stay per thread.
 *
 * Sizes are just above the thresholds at which the kernels split (2^20
 * multiply-adds per thread for a product, 2^15 elements per thread for an
 * elementwise op or a reduction), so that the run stays short under TSan.
 */
#define _POSIX_C_SOURCE 200809L
#include <string.h>
#include <dirent.h>
#include <pthread.h>

#include "harness.h"
#include "nabla/nn.h"

/* ------------------------------------------------------------------ helpers */

/* The elements of t, row-major, as doubles (exact for f32 and f64), in a
   malloc'd array of *n entries; NULL for a NULL t. */
static double *values(const nb_tensor *t, int64_t *n) {
    *n = 0;
    if (!t) return NULL;
    int64_t k = nb_numel(t);
    double *v = malloc(sizeof(double) * (size_t)(k ? k : 1));
    if (v) *n = nb_read_f64(t, v, k);
    return v;
}

/* True when a and b hold the same number of elements with the same bits. */
static bool same_bits(const double *a, int64_t na, const double *b, int64_t nb) {
    return a && b && na == nb && memcmp(a, b, sizeof(double) * (size_t)na) == 0;
}

/* Threads of this process (Linux: entries of /proc/self/task), or -1 where that cannot be read. */
static int count_threads(void) {
    DIR *d = opendir("/proc/self/task");
    if (!d) return -1;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n;
}

static nb_tensor *rand_t(nb_dtype dt, int rank, const int64_t *shape) { return th_rand(dt, rank, shape, -1, 1); }

/* ------------------------------------------------- 1. pool: bit-identical */

#define NRES 56

/* Every threaded kernel once; writes each result's values to res[i] (malloc'd)
   and their counts to len[i]; returns how many results there are. */
static int run_kernels(double **res, int64_t *len) {
    int k = 0;
    nb_scope_begin();
    th_seed(42);
    for (int di = 0; di < 2; di++) {
        nb_dtype dt = di ? NB_F64 : NB_F32;
        /* products: 4 x 2^20 multiply-adds and more, both layouts of each operand, a narrow C, a batch */
        nb_tensor *a = rand_t(dt, 2, (int64_t[]){192, 160}), *b = rand_t(dt, 2, (int64_t[]){160, 176});
        nb_tensor *at = nb_transpose(rand_t(dt, 2, (int64_t[]){160, 192}), 0, 1);
        nb_tensor *bt = nb_transpose(rand_t(dt, 2, (int64_t[]){176, 160}), 0, 1);
        nb_tensor *p[5] = {nb_matmul(a, b), nb_matmul(at, bt), nb_matmul(a, bt),
                           nb_matmul(rand_t(dt, 2, (int64_t[]){2048, 512}), rand_t(dt, 2, (int64_t[]){512, 10})),
                           nb_matmul(rand_t(dt, 3, (int64_t[]){3, 96, 128}), nb_expand(rand_t(dt, 3, (int64_t[]){1, 128, 112}), 3,
                                                                                        (int64_t[]){3, 128, 112}))};
        for (int i = 0; i < 5; i++, k++) res[k] = values(p[i], &len[k]);
        /* elementwise: 2^18 elements, a broadcast operand, a non-contiguous one */
        nb_tensor *x = rand_t(dt, 2, (int64_t[]){512, 512}), *y = rand_t(dt, 2, (int64_t[]){512, 512});
        nb_tensor *row = rand_t(dt, 1, (int64_t[]){512});
        nb_tensor *e = nb_add(nb_mul(nb_tanh(x), nb_exp(y)), nb_div(nb_transpose(y, 0, 1), nb_add_scalar(row, 3)));
        res[k] = values(e, &len[k]), k++;
        /* reductions: over an axis (both), and over everything (chunked) */
        int ax0 = 0, ax1 = 1;
        res[k] = values(nb_sum_axes(e, 1, &ax0, false), &len[k]), k++;
        res[k] = values(nb_max_axes(e, 1, &ax1, true), &len[k]), k++;
        res[k] = values(nb_sum(e), &len[k]), k++;
        res[k] = values(nb_mean(nb_mul(x, y)), &len[k]), k++;
        /* the optimizer updates, fused and split across threads */
        nb_tensor *w = nb_clone(x), *g = nb_clone(y), *m = nb_full(dt, 2, (int64_t[]){512, 512}, 0);
        nb_tensor *v = nb_full(dt, 2, (int64_t[]){512, 512}, 0), *buf = nb_full(dt, 2, (int64_t[]){512, 512}, 0);
        CHECK(nb_adam_update_(w, g, m, v, 1e-3, 0.9, 0.999, 1e-8, 0.01, true, 1) == 0);
        CHECK(nb_sgd_update_(w, g, buf, 0.1, 0.9, 1e-4, true, true) == 0);
        res[k] = values(w, &len[k]), k++;
        /* rows: softmax and log-softmax along the last axis and along the first (strided rows), and
           cross-entropy with its first-order gradient, 512 rows of 1000 */
        nb_tensor *lg = nb_scale(rand_t(dt, 2, (int64_t[]){512, 1000}), 8);
        double tv[512];
        for (int i = 0; i < 512; i++) tv[i] = (double)((i * 37 + 11) % 1000);
        nb_tensor *tg = nb_from_f64(NB_I64, 1, (int64_t[]){512}, tv);
        res[k] = values(nb_softmax(lg, 1), &len[k]), k++;
        res[k] = values(nb_log_softmax(lg, -1), &len[k]), k++;
        res[k] = values(nb_softmax(lg, 0), &len[k]), k++;
        nb_set_requires_grad(lg, true);
        nb_tensor *ce = nb_cross_entropy(lg, tg);
        res[k] = values(ce, &len[k]), k++;
        CHECK(nb_backward(ce, NULL, 0) == 0);
        res[k] = values(nb_grad(lg), &len[k]), k++;
        /* short rows (4096 of 24: the f32 exps of groups of rows in one call, the groups cut where the parts
           are) */
        res[k] = values(nb_softmax(nb_scale(rand_t(dt, 2, (int64_t[]){4096, 24}), 30), 1), &len[k]), k++;
        /* layer norm and its fused gradient, 512 rows of 256: dx split by rows, dgamma and dbeta by columns */
        nb_tensor *lx = rand_t(dt, 2, (int64_t[]){512, 256}), *ga = nb_add_scalar(rand_t(dt, 1, (int64_t[]){256}), 1);
        nb_tensor *be = rand_t(dt, 1, (int64_t[]){256}), *lw = rand_t(dt, 2, (int64_t[]){512, 256});
        nb_set_requires_grad(lx, true), nb_set_requires_grad(ga, true), nb_set_requires_grad(be, true);
        nb_tensor *ly = nb_layer_norm(lx, ga, be, 1e-5);
        res[k] = values(ly, &len[k]), k++;
        CHECK(nb_backward(nb_sum(nb_mul(ly, lw)), NULL, 0) == 0);
        res[k] = values(nb_grad(lx), &len[k]), k++;
        res[k] = values(nb_grad(ga), &len[k]), k++;
        res[k] = values(nb_grad(be), &len[k]), k++;
        /* attention, causal with an additive mask, 4 batch-heads of 100 queries and 100 keys of 32: the forward
           split over (batch-head, block of 32 queries), the backward's dq and dmask likewise, dk and dv over
           (batch-head, block of 64 keys) */
        nb_tensor *aq = rand_t(dt, 3, (int64_t[]){4, 100, 32}), *ak = rand_t(dt, 3, (int64_t[]){4, 100, 32});
        nb_tensor *av = rand_t(dt, 3, (int64_t[]){4, 100, 32}), *am = rand_t(dt, 2, (int64_t[]){100, 100});
        nb_tensor *aw = rand_t(dt, 3, (int64_t[]){4, 100, 32});
        nb_set_requires_grad(aq, true), nb_set_requires_grad(ak, true), nb_set_requires_grad(av, true);
        nb_set_requires_grad(am, true);
        nb_tensor *ay = nb_attention(aq, ak, av, am, true, 0);
        res[k] = values(ay, &len[k]), k++;
        CHECK(nb_backward(nb_sum(nb_mul(ay, aw)), NULL, 0) == 0);
        res[k] = values(nb_grad(aq), &len[k]), k++;
        res[k] = values(nb_grad(ak), &len[k]), k++;
        res[k] = values(nb_grad(av), &len[k]), k++;
        res[k] = values(nb_grad(am), &len[k]), k++;
    }
    nb_scope_end();
    return k;
}

/* A few training steps of an MLP whose products split (batch 256, width 512),
   forward, backward through matmul, relu, layer norm and cross-entropy, then
   Adam. Returns the parameters' values after the last step. */
static double *train_mlp(nb_dtype dt, uint64_t seed, int steps, int64_t *n_out) {
    nb_rng rng;
    nb_rng_seed(&rng, seed);
    nb_module *mods[5] = {nb_linear(128, 512, true, NB_INIT_KAIMING, dt, &rng), nb_relu_layer(),
                          nb_layer_norm_layer(512, 1e-5, dt), nb_linear(512, 256, true, NB_INIT_XAVIER, dt, &rng),
                          nb_tanh_layer()};
    nb_module *seq = nb_sequential(5, mods);
    nb_module *head = nb_linear(256, 10, true, NB_INIT_XAVIER, dt, &rng);
    nb_tensor *ps[16];
    int np = seq ? nb_module_params(seq, ps, NULL, 12) : 0;
    if (head) np += nb_module_params(head, ps + np, NULL, 4);
    nb_optim *o = np == 8 ? nb_adam(np, ps, 1e-3, 0.9, 0.999, 1e-8, 0) : NULL;
    CHECK(o != NULL);
    /* data from the same generator, so each run with a seed sees the same batches */
    double *xb = malloc(sizeof(double) * 256 * 128), *yb = malloc(sizeof(double) * 256);
    for (int s = 0; o && xb && yb && s < steps; s++) {
        for (int i = 0; i < 256 * 128; i++) xb[i] = 2 * nb_rng_uniform(&rng) - 1;
        for (int i = 0; i < 256; i++) yb[i] = (double)(nb_rng_next(&rng) % 10);
        nb_scope_begin();
        nb_tensor *x = nb_from_f64(dt, 2, (int64_t[]){256, 128}, xb);
        nb_tensor *y = nb_from_f64(NB_I64, 1, (int64_t[]){256}, yb);
        nb_tensor *loss = nb_cross_entropy(nb_forward(head, nb_forward(seq, x)), y);
        nb_optim_zero_grad(o);
        CHECK(nb_backward(loss, NULL, 0) == 0);
        CHECK(nb_optim_step(o) == 0);
        nb_scope_end();
    }
    /* all parameters, concatenated */
    int64_t total = 0;
    for (int i = 0; i < np; i++) total += nb_numel(ps[i]);
    double *out = malloc(sizeof(double) * (size_t)(total ? total : 1));
    int64_t at = 0;
    for (int i = 0; out && i < np; i++) at += nb_read_f64(ps[i], out + at, total - at);
    *n_out = at;
    nb_optim_free(o);
    nb_module_free(seq);
    nb_module_free(head);
    free(xb);
    free(yb);
    return out;
}

static void test_pool_bit_identical(void) {
    double *ref[NRES] = {0}, *got[NRES] = {0};
    int64_t rlen[NRES], glen[NRES];
    CHECK(nb_set_num_threads(1) == 0);
    int nref = run_kernels(ref, rlen);
    int64_t nref32, nref64;
    double *tref32 = train_mlp(NB_F32, 7, 2, &nref32), *tref64 = train_mlp(NB_F64, 8, 2, &nref64);
    CHECK(nref == 52);
    for (int threads = 2; threads <= 4; threads++) {
        CHECK(nb_set_num_threads(threads) == 0);
        CHECK(nb_num_threads() == threads);
        int n = run_kernels(got, glen);
        CHECK(n == nref);
        /* the pool really ran: its threads - 1 workers are up beside this thread (the reference kernels run on
           the calling thread alone) */
        int nt = count_threads();
        CHECK(nt < 0 || nt >= threads || strcmp(nb_backend_name(nb_cpu()), "reference") == 0);
        for (int i = 0; i < n && i < nref; i++) {
            if (!same_bits(got[i], glen[i], ref[i], rlen[i])) {
                th_cur_failed++;
                fprintf(stderr, "%d threads: result %d differs from the one-thread result\n", threads, i);
            }
            free(got[i]);
        }
        int64_t n32, n64;
        double *t32 = train_mlp(NB_F32, 7, 2, &n32), *t64 = train_mlp(NB_F64, 8, 2, &n64);
        CHECK(n32 > 100000 && same_bits(t32, n32, tref32, nref32));
        CHECK(n64 > 100000 && same_bits(t64, n64, tref64, nref64));
        free(t32);
        free(t64);
    }
    for (int i = 0; i < nref; i++) free(ref[i]);
    free(tref32);
    free(tref64);
    CHECK(nb_set_num_threads(0) == 0);
}

/* A test that could not fail would be worth nothing: the comparison above sees a one-bit change. */
static void test_same_bits_sees_one_ulp(void) {
    double a[3] = {1, 2, 3}, b[3] = {1, 2, 3};
    CHECK(same_bits(a, 3, b, 3));
    b[1] = nextafter(2.0, 3.0);
    CHECK(!same_bits(a, 3, b, 3));
    CHECK(!same_bits(a, 3, b, 2));
}

/* ------------------------------------------- 2. two application threads */

typedef struct {
    nb_dtype dt;
    uint64_t seed;
    double *params;
    int64_t n;
    int error_ok, grad_mode_ok;
} job;

static pthread_barrier_t barrier;

/* Thread 0 records an error and turns grad mode off while thread 1 looks:
   thread 1 must see neither, and thread 0 must still see its own. */
static void *app_thread(void *arg) {
    job *j = arg;
    int me = j->dt == NB_F32 ? 0 : 1;
    nb_clear_error();
    if (me == 0) {
        CHECK(nb_transpose(NULL, 0, 1) == NULL);
        nb_set_grad_enabled(false);
    }
    pthread_barrier_wait(&barrier);
    if (me == 1) {
        j->error_ok = nb_last_error() == NULL;
        j->grad_mode_ok = nb_grad_enabled();
    }
    pthread_barrier_wait(&barrier);
    if (me == 0) {
        const char *m = nb_last_error();
        j->error_ok = m && strstr(m, "nb_transpose") != NULL;
        j->grad_mode_ok = !nb_grad_enabled();
        nb_clear_error();
        nb_set_grad_enabled(true);
    }
    j->params = train_mlp(j->dt, j->seed, 3, &j->n);
    return NULL;
}

static void test_two_application_threads(void) {
    CHECK(nb_set_num_threads(2) == 0);
    int64_t n0, n1;
    double *seq0 = train_mlp(NB_F32, 11, 3, &n0), *seq1 = train_mlp(NB_F64, 12, 3, &n1);
    for (int round = 0; round < 2; round++) {
        job jobs[2] = {{NB_F32, 11, NULL, 0, 0, 0}, {NB_F64, 12, NULL, 0, 0, 0}};
        CHECK(pthread_barrier_init(&barrier, NULL, 2) == 0);
        pthread_t th[2];
        for (int i = 0; i < 2; i++) CHECK(pthread_create(&th[i], NULL, app_thread, &jobs[i]) == 0);
        for (int i = 0; i < 2; i++) CHECK(pthread_join(th[i], NULL) == 0);
        pthread_barrier_destroy(&barrier);
        CHECK(jobs[0].error_ok && jobs[1].error_ok);
        CHECK(jobs[0].grad_mode_ok && jobs[1].grad_mode_ok);
        CHECK(n0 > 100000 && same_bits(jobs[0].params, jobs[0].n, seq0, n0));
        CHECK(n1 > 100000 && same_bits(jobs[1].params, jobs[1].n, seq1, n1));
        free(jobs[0].params);
        free(jobs[1].params);
    }
    free(seq0);
    free(seq1);
    /* the pool is still usable from the main thread afterwards, at a new size */
    CHECK(nb_set_num_threads(3) == 0);
    nb_scope_begin();
    nb_tensor *m = nb_full(NB_F64, 2, (int64_t[]){256, 256}, 0.5);
    CHECK(nb_item(nb_sum(nb_matmul(m, m))) == 256.0 * 256 * 256 * 0.25);
    nb_scope_end();
    CHECK(nb_set_num_threads(0) == 0);
}

int main(void) {
    RUN(test_same_bits_sees_one_ulp);
    RUN(test_pool_bit_identical);
    RUN(test_two_application_threads);
    nb_release_cached_memory();
    return th_finish();
}

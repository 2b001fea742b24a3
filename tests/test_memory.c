/*
 * test_memory.c - the cache of freed blocks: after the first step of a
 * training loop, a step takes nothing from the system allocator and faults in
 * no new page; a cached block is poisoned under AddressSanitizer; a cache
 * limit of 0 sends every allocation to the allocator hook.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <sys/resource.h>

#include "harness.h"
#include "nabla/nn.h"

#if defined(__SANITIZE_ADDRESS__)
#define TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_ASAN 1
#endif
#endif
#ifdef TEST_ASAN
#include <sanitizer/asan_interface.h>
#endif

static long minor_faults(void) {
    struct rusage ru;
    return getrusage(RUSAGE_SELF, &ru) == 0 ? ru.ru_minflt : -1;
}

typedef struct {
    nb_module *net;
    nb_optim *opt;
    nb_tensor *x, *y;
} mlp;

/* A 64-256-256-10 MLP with Adam on a fixed batch of 128: products large
   enough to be split across two threads. */
static int mlp_init(mlp *m) {
    nb_rng rng;
    nb_rng_seed(&rng, 7);
    nb_module *mods[5] = {nb_linear(64, 256, true, NB_INIT_XAVIER, NB_F32, &rng), nb_relu_layer(),
                          nb_linear(256, 256, true, NB_INIT_XAVIER, NB_F32, &rng), nb_relu_layer(),
                          nb_linear(256, 10, true, NB_INIT_XAVIER, NB_F32, &rng)};
    m->net = nb_sequential(5, mods);
    nb_tensor *ps[16];
    int np = m->net ? nb_module_params(m->net, ps, NULL, 16) : 0;
    m->opt = np > 0 ? nb_adam(np, ps, 1e-3, 0.9, 0.999, 1e-8, 0) : NULL;
    double xv[128 * 64], yv[128];
    for (int i = 0; i < 128 * 64; i++) xv[i] = nb_rng_uniform(&rng) - 0.5;
    for (int i = 0; i < 128; i++) yv[i] = (double)(i % 10);
    m->x = nb_from_f64(NB_F32, 2, (int64_t[]){128, 64}, xv);
    m->y = nb_from_f64(NB_I64, 1, (int64_t[]){128}, yv);
    return m->net && m->opt && m->x && m->y ? 0 : -1;
}

static int mlp_step(mlp *m) {
    nb_scope_begin();
    nb_optim_zero_grad(m->opt);
    nb_tensor *loss = nb_cross_entropy(nb_forward(m->net, m->x), m->y);
    int rc = loss && nb_backward(loss, NULL, 0) == 0 && nb_optim_step(m->opt) == 0 ? 0 : -1;
    nb_scope_end();
    return rc;
}

static void mlp_free(mlp *m) {
    nb_optim_free(m->opt);
    nb_module_free(m->net);
    nb_free(m->x);
    nb_free(m->y);
}

static void steady_state(int threads) {
    CHECK(nb_set_num_threads(threads) == 0);
    nb_scope_begin();
    mlp m;
    CHECK(mlp_init(&m) == 0);
    CHECK(mlp_step(&m) == 0);
    CHECK(mlp_step(&m) == 0);
    nb_memory_stats a, b;
    nb_get_memory_stats(&a);
    long f0 = minor_faults();
    for (int s = 0; s < 5; s++) CHECK(mlp_step(&m) == 0);
    long f1 = minor_faults();
    nb_get_memory_stats(&b);
    CHECK(b.system_allocs == a.system_allocs); /* nothing new from malloc */
    CHECK(b.system_frees == a.system_frees);
    CHECK(b.reuses > a.reuses + 5 * 20); /* every step's tensors came from the cache */
    CHECK(b.in_use == a.in_use);
    CHECK(b.peak == a.peak);
#ifndef TEST_ASAN /* the sanitizer's own bookkeeping may touch fresh shadow pages */
    CHECK(f1 == f0);
#endif
    if (f1 != f0) printf("  (%d threads: %ld minor page faults in 5 steps)\n", threads, f1 - f0);
    mlp_free(&m);
    nb_scope_end();
    CHECK(nb_set_num_threads(1) == 0);
}

static void test_steady_state_one_thread(void) { steady_state(1); }
static void test_steady_state_two_threads(void) { steady_state(2); }

/* Same losses with the cache on and off: reuse never changes a result. */
static void test_cache_off_same_result(void) {
    double loss[2][4];
    for (int pass = 0; pass < 2; pass++) {
        nb_set_cache_limit(pass == 0 ? (int64_t)256 << 20 : 0);
        nb_scope_begin();
        mlp m;
        CHECK(mlp_init(&m) == 0);
        for (int s = 0; s < 4; s++) {
            CHECK(mlp_step(&m) == 0);
            nb_scope_begin();
            nb_set_grad_enabled(false);
            loss[pass][s] = nb_item(nb_cross_entropy(nb_forward(m.net, m.x), m.y));
            nb_set_grad_enabled(true);
            nb_scope_end();
        }
        nb_memory_stats st;
        nb_get_memory_stats(&st);
        if (pass == 1) CHECK(st.cached == 0);
        mlp_free(&m);
        nb_scope_end();
    }
    nb_set_cache_limit((int64_t)256 << 20);
    for (int s = 0; s < 4; s++) CHECK(loss[0][s] == loss[1][s]);
    CHECK(loss[0][3] < loss[0][0]);
}

/* With the cache disabled, every allocation reaches the hook. */
static long hook_calls;
static void *counting_alloc(size_t n, void *ud) {
    (void)ud;
    hook_calls++;
    return malloc(n);
}
static void plain_free(void *p, void *ud) {
    (void)ud;
    free(p);
}

static void test_limit_zero_reaches_hook(void) {
    nb_set_allocator(counting_alloc, plain_free, NULL);
    nb_set_cache_limit(0);
    hook_calls = 0;
    for (int i = 0; i < 10; i++) nb_free(nb_full(NB_F32, 1, (int64_t[]){1000}, 1.0));
    CHECK(hook_calls >= 10);
    nb_set_cache_limit((int64_t)256 << 20);
    hook_calls = 0;
    for (int i = 0; i < 10; i++) nb_free(nb_full(NB_F32, 1, (int64_t[]){1000}, 1.0));
    CHECK(hook_calls >= 1 && hook_calls < 10); /* the first one's blocks are reused */
    nb_memory_stats st;
    nb_get_memory_stats(&st);
    CHECK(st.cached > 0);
    nb_release_cached_memory();
    nb_get_memory_stats(&st);
    CHECK(st.cached == 0);
    nb_set_allocator(NULL, NULL, NULL);
}

/* A block freed into the cache is poisoned (use after free is still caught),
   and so is the slack past a block's size. */
static void test_poisoned(void) {
#ifdef TEST_ASAN
    nb_tensor *t = nb_full(NB_F32, 1, (int64_t[]){5}, 1.0); /* 20 bytes in a 64-byte class */
    float *p = nb_data(t);
    CHECK(!__asan_address_is_poisoned(p + 4));
    CHECK(__asan_address_is_poisoned(p + 5));
    nb_free(t);
    CHECK(__asan_address_is_poisoned(p));
#else
    printf("  (not an AddressSanitizer build: poisoning not checked)\n");
#endif
}

/* A thread of the application allocates, frees a tensor made by another
   thread, and exits: its own list of small blocks is folded back, and the
   bytes in use return to where they were. */
static void *worker(void *arg) {
    nb_free(arg); /* made by the main thread */
    for (int i = 0; i < 100; i++) {
        nb_scope_begin();
        nb_tensor *a = nb_full(NB_F32, 1, (int64_t[]){3}, 1.0);
        nb_tensor *b = nb_add(a, nb_scalar(NB_F32, 2.0));
        if (!b || nb_get(b, (int64_t[]){2}) != 3.0) return arg;
        nb_scope_end();
    }
    return NULL;
}

/* A limit of 0 also empties the lists of a thread other than the caller, at
   that thread's next allocation. */
static void *fill_and_wait(void *arg) {
    _Atomic int *phase = arg;
    for (int i = 0; i < 50; i++) nb_free(nb_full(NB_F32, 1, (int64_t[]){3}, 1.0)); /* blocks kept by this thread */
    *phase = 1;
    while (*phase != 2) {
    }
    nb_free(nb_full(NB_F32, 1, (int64_t[]){3}, 1.0)); /* its next allocation */
    *phase = 3;
    return NULL;
}

static void test_limit_zero_other_thread(void) {
    _Atomic int phase = 0;
    pthread_t th;
    CHECK(pthread_create(&th, NULL, fill_and_wait, (void *)&phase) == 0);
    while (phase != 1) {
    }
    nb_set_cache_limit(0);
    phase = 2;
    while (phase != 3) {
    }
    nb_memory_stats st;
    nb_get_memory_stats(&st);
    CHECK(st.cached == 0);
    CHECK(pthread_join(th, NULL) == 0);
    nb_set_cache_limit((int64_t)256 << 20);
}

static void test_other_threads(void) {
    int64_t before = nb_memory_in_use();
    nb_tensor *t = nb_full(NB_F32, 1, (int64_t[]){5}, 1.0);
    CHECK(nb_memory_in_use() > before);
    pthread_t th;
    void *res = t;
    CHECK(pthread_create(&th, NULL, worker, t) == 0);
    CHECK(pthread_join(th, &res) == 0);
    CHECK(res == NULL);
    CHECK(nb_memory_in_use() == before);
    nb_memory_stats st;
    nb_get_memory_stats(&st);
    CHECK(st.in_use == before && st.cached >= 0);
}

/* By default the cache grows with the live tensors' high-water mark: a step whose tensors peak above 256 MiB
   finds its blocks again (here: 320 MiB freed and asked for again, twice, takes nothing new from the system). */
static void test_default_limit_follows_peak(void) {
    const int64_t n = (int64_t)80 << 20; /* 320 MiB of f32 */
    for (int round = 0; round < 3; round++) {
        nb_memory_stats before, after;
        nb_get_memory_stats(&before);
        nb_tensor *a = nb_full(NB_F32, 1, &n, 1.0);
        CHECK(a != NULL);
        nb_free(a);
        nb_get_memory_stats(&after);
        if (round > 0) CHECK(after.system_allocs == before.system_allocs && after.reuses > before.reuses);
        CHECK(after.cached >= n * 4);
    }
    nb_release_cached_memory();
}

/* A miss takes a cached block of a larger class, up to twice the size asked for, and the block goes back to
   its own class when freed: a 100000-float tensor freed, then one of 80000 floats (a smaller class) reuses
   it, then one of 100000 again; one of 40000 floats (under half) does not. Under ASan the bytes past the
   smaller request stay poisoned. */
static void test_larger_class_reused(void) {
    nb_set_cache_limit((int64_t)256 << 20);
    nb_free(nb_full(NB_F32, 1, (int64_t[]){100000}, 0.0));
    nb_memory_stats a, b;
    nb_get_memory_stats(&a);
    nb_tensor *t = nb_full(NB_F32, 1, (int64_t[]){80000}, 0.0);
    nb_get_memory_stats(&b);
    CHECK(t && b.system_allocs == a.system_allocs && b.reuses > a.reuses);
#ifdef TEST_ASAN
    if (t) CHECK(__asan_address_is_poisoned((float *)nb_data(t) + 80000));
#endif
    nb_free(t);
    nb_get_memory_stats(&a);
    t = nb_full(NB_F32, 1, (int64_t[]){100000}, 0.0);
    nb_get_memory_stats(&b);
    CHECK(t && b.system_allocs == a.system_allocs && b.reuses > a.reuses);
    nb_free(t);
    nb_get_memory_stats(&a);
    t = nb_full(NB_F32, 1, (int64_t[]){40000}, 0.0);
    nb_get_memory_stats(&b);
    CHECK(t && b.system_allocs == a.system_allocs + 1);
    nb_free(t);
}

int main(void) {
    RUN(test_default_limit_follows_peak); /* first: the others set limits of their own */
    RUN(test_steady_state_one_thread);
    RUN(test_steady_state_two_threads);
    RUN(test_cache_off_same_result);
    RUN(test_limit_zero_reaches_hook);
    RUN(test_poisoned);
    RUN(test_larger_class_reused);
    RUN(test_other_threads);
    RUN(test_limit_zero_other_thread);
    return th_finish();
}

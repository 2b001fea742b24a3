/*
 * test_mem_accounting.c - what nb_memory_in_use() counts: the memory of live
 * tensors and graphs alone. Once a program has freed everything it is 0,
 * whatever the cache of freed blocks and the threads' matrix-product packing
 * buffers (nb_memory_stats.cached and .scratch) still hold; those two go back
 * to the allocator with nb_release_cached_memory (the workers' buffers when
 * the pool stops). Runs first in its process, so nothing else is alive.
 */
#include <string.h>
#include "harness.h"

/* A forward and backward with products large enough to be packed, and split across the workers. */
static void train_a_little(void) {
    for (int step = 0; step < 3; step++) {
        nb_scope_begin();
        nb_tensor *a = nb_full(NB_F32, 2, (int64_t[]){256, 300}, 0.01);
        nb_tensor *b = nb_full(NB_F32, 2, (int64_t[]){300, 200}, 0.02);
        nb_tensor *c = nb_full(NB_F64, 2, (int64_t[]){70, 90}, 0.5);
        nb_set_requires_grad(a, true);
        nb_set_requires_grad(c, true);
        nb_tensor *L = nb_add(nb_sum(nb_tanh(nb_matmul(a, b))),
                              nb_to(nb_sum(nb_matmul(c, nb_transpose(c, 0, 1))), NB_F32));
        CHECK(nb_backward(L, NULL, 0) == 0);
        nb_scope_end();
    }
}

/* The reference kernels (NABLA_KERNELS=reference) keep no packing buffers between products. */
static bool fast_kernels = true;

static void test_zero_after_freeing_everything(void) {
    CHECK(nb_memory_in_use() == 0);
    for (int threads = 1; threads <= 3; threads++) {
        CHECK(nb_set_num_threads(threads) == 0);
        train_a_little();
        nb_memory_stats st;
        nb_get_memory_stats(&st);
        CHECK(nb_memory_in_use() == 0);
        CHECK(st.in_use == 0);
        CHECK(st.cached > 0);  /* freed blocks kept for the next step */
        CHECK(st.scratch > 0 || fast_kernels == false); /* packing buffers kept for the next product */
        /* a tensor outside every scope counts until it is freed */
        nb_tensor *t = nb_full(NB_F64, 1, (int64_t[]){1000}, 1.0);
        CHECK(nb_memory_in_use() >= 8000);
        nb_free(t);
        CHECK(nb_memory_in_use() == 0);
    }
}

static void test_release(void) {
    CHECK(nb_set_num_threads(1) == 0); /* stops the workers, which free their buffers */
    train_a_little();
    nb_memory_stats st;
    nb_get_memory_stats(&st);
    CHECK((st.scratch > 0 || !fast_kernels) && st.cached > 0);
    int64_t frees = st.system_frees;
    nb_release_cached_memory();
    nb_get_memory_stats(&st);
    CHECK(st.in_use == 0);
    CHECK(st.cached == 0);
    CHECK(st.scratch == 0);
    CHECK(st.system_frees > frees);
    CHECK(st.system_allocs == st.system_frees); /* every block went back */
    /* and all of it works again */
    train_a_little();
    CHECK(nb_memory_in_use() == 0);
    CHECK(nb_set_num_threads(0) == 0);
}

int main(void) {
    fast_kernels = strcmp(nb_backend_name(nb_cpu()), "cpu") == 0;
    RUN(test_zero_after_freeing_everything);
    RUN(test_release);
    return th_finish();
}

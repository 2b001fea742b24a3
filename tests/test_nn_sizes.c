/*
 * test_nn_sizes.c - layers asked for sizes whose element or byte counts do
 * not fit in 64 bits, or for a dtype a parameter cannot have: each is an
 * error naming the layer and the sizes, never a short allocation that is then
 * overrun.
 */
#include "harness.h"
#include "nabla/nn.h"

static void expect_refused(nb_module *m, const char *fn, const char *sizes) {
    CHECK(m == NULL);
    const char *e = nb_last_error();
    CHECK(e && strstr(e, fn) && strstr(e, sizes));
    if (e && (!strstr(e, fn) || !strstr(e, sizes))) fprintf(stderr, "  got: %s\n", e);
    nb_clear_error();
    nb_module_free(m);
}

static void test_linear_sizes(void) {
    nb_rng r;
    nb_rng_seed(&r, 1);
    int64_t big = (int64_t)1 << 61; /* 2^61 doubles are 2^64 bytes: wraps to 0 */
    expect_refused(nb_linear(big, 1, true, NB_INIT_XAVIER, NB_F32, &r), "nb_linear", "2305843009213693952");
    expect_refused(nb_linear(1, big, false, NB_INIT_KAIMING, NB_F64, &r), "nb_linear", "2305843009213693952");
    expect_refused(nb_linear(INT64_MAX, 1, true, NB_INIT_XAVIER, NB_F32, &r), "nb_linear", "9223372036854775807");
    expect_refused(nb_linear(INT64_MAX, INT64_MAX, true, NB_INIT_XAVIER, NB_F32, &r), "nb_linear",
                   "9223372036854775807");
    expect_refused(nb_linear((int64_t)1 << 32, (int64_t)1 << 32, true, NB_INIT_XAVIER, NB_F32, &r), "nb_linear",
                   "4294967296");
    expect_refused(nb_linear(3, 2, true, NB_INIT_XAVIER, NB_I64, &r), "nb_linear", "dtype");
    expect_refused(nb_linear(3, 2, true, (nb_init)9, NB_F32, &r), "nb_linear", "init");
    /* sizes that fit still work, and the initial values are those of U(-a, a) */
    nb_module *m = nb_linear(300, 200, true, NB_INIT_XAVIER, NB_F64, &r);
    CHECK(m != NULL);
    nb_tensor *w;
    nb_module_params(m, &w, NULL, 1);
    double lo = 1, hi = -1, a = sqrt(6.0 / 500);
    const double *d = nb_data(w);
    for (int64_t i = 0; d && i < nb_numel(w); i++) lo = d[i] < lo ? d[i] : lo, hi = d[i] > hi ? d[i] : hi;
    CHECK(lo >= -a && hi < a && lo < -0.9 * a && hi > 0.9 * a);
    nb_module_free(m);
}

/* The same seed gives the same initial weights as the values drawn in turn. */
static void test_linear_init_values(void) {
    nb_rng r, q;
    nb_rng_seed(&r, 9);
    nb_rng_seed(&q, 9);
    nb_module *m = nb_linear(3, 2, false, NB_INIT_KAIMING, NB_F32, &r);
    nb_tensor *w;
    nb_module_params(m, &w, NULL, 1);
    double a = sqrt(6.0 / 3);
    for (int i = 0; i < 6; i++) {
        float want = (float)((2 * nb_rng_uniform(&q) - 1) * a);
        CHECK(((const float *)nb_data(w))[i] == want);
    }
    nb_module_free(m);
}

static void test_embedding_sizes(void) {
    nb_rng r;
    nb_rng_seed(&r, 2);
    int64_t big = (int64_t)1 << 61;
    expect_refused(nb_embedding(big, 1, NB_F32, &r), "nb_embedding", "2305843009213693952");
    expect_refused(nb_embedding(1, big, NB_F64, &r), "nb_embedding", "2305843009213693952");
    expect_refused(nb_embedding(INT64_MAX, 2, NB_F32, &r), "nb_embedding", "9223372036854775807");
    expect_refused(nb_embedding(4, 2, NB_I64, &r), "nb_embedding", "dtype");
    nb_module *m = nb_embedding(10, 4, NB_F32, &r);
    CHECK(m != NULL && nb_module_num_params(m) == 40);
    nb_module_free(m);
}

static void test_layer_norm_sizes(void) {
    expect_refused(nb_layer_norm_layer(INT64_MAX, 1e-5, NB_F32), "nb_layer_norm_layer", "9223372036854775807");
    expect_refused(nb_layer_norm_layer(4, 1e-5, NB_I64), "nb_layer_norm_layer", "dtype");
}

int main(void) {
    RUN(test_linear_sizes);
    RUN(test_linear_init_values);
    RUN(test_embedding_sizes);
    RUN(test_layer_norm_sizes);
    return th_finish();
}

/*
 * test_core.c - the seeds' worked examples, tensors and views, ownership,
 * and the engine's guarantees (multiple paths, retain/release, higher order,
 * grad mode, version counters, deep graphs, threads, allocation failures).
 */
#include <pthread.h>

#include "harness.h"

static double grad_of(nb_tensor *t) { return nb_item(nb_grad(t)); }

static nb_tensor *leaf(double v) {
    nb_tensor *t = nb_scalar(NB_F64, v);
    nb_set_requires_grad(t, true);
    return t;
}

/* Seed 002, section 3.5: L = x + y. */
static void test_seed_sum(void) {
    nb_scope_begin();
    nb_tensor *x = leaf(3), *y = leaf(-4);
    nb_tensor *L = nb_add(x, y);
    CHECK(nb_backward(L, NULL, 0) == 0);
    CHECK_CLOSE(nb_item(L), -1, 0, 0);
    CHECK_CLOSE(grad_of(x), 1, 0, 0);
    CHECK_CLOSE(grad_of(y), 1, 0, 0);
    nb_scope_end();
}

/* Section 3.6: L = x^2 y, dL/dx = 2xy, dL/dy = x^2. */
static void test_seed_square_times(void) {
    nb_scope_begin();
    nb_tensor *x = leaf(3), *y = leaf(-4);
    nb_tensor *L = nb_mul(nb_pow(x, 2), y);
    CHECK(nb_backward(L, NULL, 0) == 0);
    CHECK_CLOSE(nb_item(L), -36, 0, 0);
    CHECK_CLOSE(grad_of(x), -24, 0, 0);
    CHECK_CLOSE(grad_of(y), 9, 0, 0);
    nb_scope_end();
}

/* Section 3.7: L = (2x + xy)^2 reuses x on two paths; dL/dx = 2(2x+xy)(2+y), dL/dy = 2(2x+xy)x. */
static void test_seed_reuse(void) {
    nb_scope_begin();
    nb_tensor *x = leaf(3), *y = leaf(-4);
    nb_tensor *I3 = nb_add(nb_scale(x, 2), nb_mul(x, y));
    nb_tensor *L = nb_pow(I3, 2);
    CHECK(nb_backward(L, NULL, 0) == 0);
    double i3 = 2 * 3 + 3 * -4.0;
    CHECK_CLOSE(nb_item(L), i3 * i3, 0, 0);
    CHECK_CLOSE(grad_of(x), 2 * i3 * (2 - 4), 1e-12, 0);
    CHECK_CLOSE(grad_of(y), 2 * i3 * 3, 1e-12, 0);
    nb_scope_end();
}

/* Seed 000: the neuron y = tanh(x w + b) at x = 2, w = -3, b = 0.5. */
static void test_seed_neuron(void) {
    nb_scope_begin();
    nb_tensor *x = leaf(2), *w = leaf(-3), *b = leaf(0.5);
    nb_tensor *y = nb_tanh(nb_add(nb_mul(x, w), b));
    CHECK(nb_backward(y, NULL, 0) == 0);
    double t = tanh(-5.5), d = 1 - t * t;
    CHECK_CLOSE(nb_item(y), t, 1e-15, 0);
    CHECK_CLOSE(grad_of(x), d * -3, 1e-15, 1e-12);
    CHECK_CLOSE(grad_of(w), d * 2, 1e-15, 1e-12);
    CHECK_CLOSE(grad_of(b), d, 1e-15, 1e-12);
    nb_scope_end();
}

/* Seed 001 example 3: the gradient of a broadcast bias is the column sum of G. */
static void test_seed_bias_broadcast(void) {
    nb_scope_begin();
    nb_tensor *A = nb_from_f64(NB_F64, 2, (int64_t[]){2, 2}, (double[]){1, 2, 3, 4});
    nb_tensor *b = nb_from_f64(NB_F64, 1, (int64_t[]){2}, (double[]){5, 6});
    nb_set_requires_grad(A, true);
    nb_set_requires_grad(b, true);
    nb_tensor *G = nb_from_f64(NB_F64, 2, (int64_t[]){2, 2}, (double[]){0.5, -1, 2, 3});
    nb_tensor *C = nb_add(A, b);
    CHECK(nb_backward(C, G, 0) == 0);
    double gb[2], gA[4];
    CHECK(nb_rank(nb_grad(b)) == 1 && nb_shape(nb_grad(b))[0] == 2);
    nb_read_f64(nb_grad(b), gb, 2);
    nb_read_f64(nb_grad(A), gA, 4);
    CHECK_CLOSE(gb[0], 2.5, 0, 0);
    CHECK_CLOSE(gb[1], 2, 0, 0);
    CHECK_CLOSE(gA[3], 3, 0, 0);
    nb_scope_end();
}

/* Seed 002 section 7.3: MSE = mean((yhat - y)^2) has gradient 2/n (yhat - y). */
static void test_seed_mse(void) {
    nb_scope_begin();
    double yv[5] = {1, -2, 0.5, 3, 0}, hv[5] = {0.5, -1, 1.5, 2, 0.25};
    nb_tensor *y = nb_from_f64(NB_F64, 1, (int64_t[]){5}, yv);
    nb_tensor *yhat = nb_from_f64(NB_F64, 1, (int64_t[]){5}, hv);
    nb_set_requires_grad(yhat, true);
    nb_tensor *L = nb_mean(nb_pow(nb_sub(yhat, y), 2));
    CHECK(nb_backward(L, NULL, 0) == 0);
    double g[5];
    nb_read_f64(nb_grad(yhat), g, 5);
    for (int i = 0; i < 5; i++) CHECK_CLOSE(g[i], 2.0 / 5 * (hv[i] - yv[i]), 1e-15, 1e-14);
    nb_scope_end();
}

static void test_tensor_basics(void) {
    nb_scope_begin();
    nb_tensor *t = nb_new(NB_F32, 3, (int64_t[]){2, 3, 4}, NULL);
    CHECK(nb_rank(t) == 3 && nb_numel(t) == 24 && nb_dtype_of(t) == NB_F32);
    CHECK(((uintptr_t)nb_data(t) & 63) == 0);
    nb_tensor *big = nb_new(NB_F64, 1, (int64_t[]){1000}, NULL);
    CHECK(((uintptr_t)nb_data(big) & 63) == 0);
    int64_t s8[8] = {1, 2, 1, 2, 1, 2, 1, 2};
    nb_tensor *r8 = nb_full(NB_F64, 8, s8, 1.5);
    CHECK(nb_rank(r8) == 8 && nb_numel(r8) == 16);
    CHECK_CLOSE(nb_item(nb_sum(r8)), 24, 0, 0);
    nb_tensor *s = nb_scalar(NB_I64, 7);
    CHECK(nb_dtype_of(s) == NB_I64 && nb_item(s) == 7);
    nb_tensor *e = nb_new(NB_F64, 2, (int64_t[]){0, 3}, NULL);
    CHECK(nb_numel(e) == 0);
    CHECK_CLOSE(nb_item(nb_sum(e)), 0, 0, 0);
    CHECK(isnan(nb_item(nb_mean(e))));
    nb_scope_end();
}

/* Views share storage; gradients flow through them. */
static void test_views(void) {
    nb_scope_begin();
    double v[6] = {1, 2, 3, 4, 5, 6};
    nb_tensor *a = nb_from_f64(NB_F64, 2, (int64_t[]){2, 3}, v);
    nb_set_requires_grad(a, true);
    nb_tensor *t = nb_transpose(a, 0, 1);
    CHECK(!nb_is_contiguous(t));
    CHECK(nb_get(t, (int64_t[]){2, 1}) == 6);
    nb_tensor *r = nb_reshape(a, 1, (int64_t[]){-1});
    CHECK(nb_rank(r) == 1 && nb_shape(r)[0] == 6);
    nb_tensor *sl = nb_slice(a, 1, 1, 3);
    CHECK(nb_get(sl, (int64_t[]){1, 0}) == 5);
    /* a write through the base shows in every view */
    nb_set_grad_enabled(false);
    nb_tensor *d = nb_detach(a);
    CHECK(nb_fill_(nb_slice(d, 0, 0, 1), 9) == 0);
    nb_set_grad_enabled(true);
    CHECK(nb_get(t, (int64_t[]){0, 0}) == 9 && nb_get(r, (int64_t[]){1}) == 9 && nb_get(sl, (int64_t[]){0, 0}) == 9);
    /* gradient through transpose + slice + reshape of a non-contiguous view */
    nb_tensor *w = nb_from_f64(NB_F64, 2, (int64_t[]){3, 1}, (double[]){1, 10, 100});
    nb_tensor *L = nb_sum(nb_mul(nb_reshape(nb_slice(t, 0, 1, 3), 2, (int64_t[]){2, 2}),
                                 nb_slice(w, 0, 1, 3)));
    CHECK(nb_backward(L, NULL, 0) == 0);
    double g[6];
    nb_read_f64(nb_grad(a), g, 6);
    double want[6] = {0, 10, 100, 0, 10, 100};
    for (int i = 0; i < 6; i++) CHECK_CLOSE(g[i], want[i], 0, 0);
    nb_scope_end();
}

/* Several slices of one tensor: the later parts' gradients are added into the first's table in place (the
   slices overlap here, and one part's path also runs through a non-slice op); the sums as by hand. */
static void test_slices_share_gradient(void) {
    nb_scope_begin();
    double v[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    nb_tensor *x = nb_from_f64(NB_F64, 2, (int64_t[]){4, 2}, v);
    nb_set_requires_grad(x, true);
    nb_tensor *p[3] = {NULL, NULL, NULL};
    CHECK(nb_split(x, 0, 3, (int64_t[]){1, 2, 1}, p) == 0); /* rows 0, 1-2, 3 */
    nb_tensor *o = nb_slice(x, 0, 1, 3);                    /* rows 1-2 again */
    nb_tensor *L = nb_add(nb_add(nb_sum(nb_scale(p[0], 2)), nb_sum(nb_mul(p[1], o))),
                          nb_add(nb_sum(nb_scale(p[2], -1)), nb_sum(nb_scale(nb_slice(x, 1, 1, 2), 10))));
    CHECK(nb_backward(L, NULL, 0) == 0);
    double g[8];
    CHECK(nb_read_f64(nb_grad(x), g, 8) == 8);
    /* d/dx: row 0: 2; rows 1-2: 2 x (from p1 * o); row 3: -1; column 1: + 10 */
    const double want[8] = {2, 12, 6, 18, 10, 22, -1, 9};
    for (int i = 0; i < 8; i++) CHECK_CLOSE(g[i], want[i], 0, 0);
    nb_scope_end();
}

static void test_promotion(void) {
    nb_scope_begin();
    nb_tensor *a = nb_full(NB_F32, 1, (int64_t[]){3}, 1.5);
    nb_tensor *b = nb_full(NB_F64, 1, (int64_t[]){3}, 2.0);
    nb_set_requires_grad(a, true);
    nb_set_requires_grad(b, true);
    nb_tensor *c = nb_mul(a, b);
    CHECK(nb_dtype_of(c) == NB_F64);
    nb_tensor *s = nb_scalar(NB_F64, 2.0);
    CHECK(nb_dtype_of(nb_mul(a, s)) == NB_F32); /* a rank-0 operand does not promote */
    CHECK(nb_backward(nb_sum(c), NULL, 0) == 0);
    CHECK(nb_dtype_of(nb_grad(a)) == NB_F32 && nb_dtype_of(nb_grad(b)) == NB_F64);
    CHECK_CLOSE(nb_get(nb_grad(a), (int64_t[]){0}), 2.0, 0, 0);
    CHECK_CLOSE(nb_get(nb_grad(b), (int64_t[]){0}), 1.5, 0, 0);
    nb_scope_end();
}

/* Gradients accumulate across backward calls until nb_zero_grad. */
static void test_accumulate_and_zero(void) {
    nb_scope_begin();
    nb_tensor *x = leaf(2);
    for (int i = 0; i < 3; i++) CHECK(nb_backward(nb_mul(x, x), NULL, 0) == 0);
    CHECK_CLOSE(grad_of(x), 12, 0, 0);
    nb_zero_grad(x);
    CHECK_CLOSE(grad_of(x), 0, 0, 0);
    CHECK(nb_backward(nb_mul(x, x), NULL, 0) == 0);
    CHECK_CLOSE(grad_of(x), 4, 0, 0);
    nb_scope_end();
}

static void test_retain_and_release(void) {
    nb_scope_begin();
    nb_tensor *x = leaf(3);
    nb_tensor *y = nb_exp(nb_mul(x, x));
    CHECK(nb_backward(y, NULL, NB_RETAIN_GRAPH) == 0);
    CHECK(nb_backward(y, NULL, 0) == 0);
    CHECK_CLOSE(grad_of(x), 2 * 6 * exp(9), 0, 1e-14);
    CHECK(nb_backward(y, NULL, 0) != 0);
    CHECK_ERR("already released");
    CHECK_CLOSE(grad_of(x), 2 * 6 * exp(9), 0, 1e-14); /* unchanged by the failed call */
    nb_scope_end();
}

/* Higher order: d/dx x^3 = 3x^2, d2 = 6x, d3 = 6. */
static void test_higher_order(void) {
    nb_scope_begin();
    nb_tensor *x = leaf(2);
    nb_tensor *y = nb_pow(x, 3);
    nb_tensor *g1 = nb_gradient(y, x, NB_CREATE_GRAPH);
    CHECK_CLOSE(nb_item(g1), 12, 0, 0);
    nb_tensor *g2 = nb_gradient(g1, x, NB_CREATE_GRAPH);
    CHECK_CLOSE(nb_item(g2), 12, 0, 0);
    nb_tensor *g3 = nb_gradient(g2, x, 0);
    CHECK_CLOSE(nb_item(g3), 6, 0, 0);
    CHECK(nb_grad(x) == NULL); /* nb_gradient touches no .grad */
    /* backward with NB_CREATE_GRAPH leaves a differentiable .grad */
    nb_tensor *z = nb_mul(nb_sin(x), x);
    CHECK(nb_backward(z, NULL, NB_CREATE_GRAPH) == 0);
    nb_tensor *gx = nb_grad(x); /* cos(x) x + sin(x) */
    CHECK_CLOSE(nb_item(gx), cos(2.0) * 2 + sin(2.0), 1e-15, 1e-14);
    nb_tensor *h = nb_gradient(gx, x, 0); /* -sin(x) x + 2 cos(x) */
    CHECK_CLOSE(nb_item(h), -sin(2.0) * 2 + 2 * cos(2.0), 1e-15, 1e-14);
    nb_zero_grad(x); /* drops the graph-carrying gradient (it refers back to x) */
    nb_scope_end();
}

static void test_gradient_intermediate(void) {
    nb_scope_begin();
    nb_tensor *x = leaf(1.5);
    nb_tensor *u = nb_mul(x, x);
    nb_tensor *L = nb_add(nb_sin(u), u);
    nb_tensor *gu = nb_gradient(L, u, NB_RETAIN_GRAPH);
    CHECK_CLOSE(nb_item(gu), cos(2.25) + 1, 1e-15, 1e-14);
    nb_tensor *unused = leaf(1);
    nb_tensor *gz = nb_gradient(L, unused, NB_RETAIN_GRAPH);
    CHECK(gz && nb_item(gz) == 0);
    nb_tensor *gs[2];
    nb_tensor *wrt[2] = {x, u};
    CHECK(nb_gradients(L, NULL, 2, wrt, 0, gs) == 0);
    CHECK_CLOSE(nb_item(gs[0]), (cos(2.25) + 1) * 3, 1e-15, 1e-14);
    nb_scope_end();
}

static void test_grad_mode(void) {
    nb_scope_begin();
    nb_tensor *x = leaf(2);
    nb_set_grad_enabled(false);
    CHECK(!nb_grad_enabled());
    nb_tensor *y = nb_mul(x, x);
    CHECK(!nb_requires_grad(y) && nb_is_leaf(y));
    nb_set_grad_enabled(true);
    CHECK(nb_backward(y, NULL, 0) != 0);
    CHECK_ERR("does not require grad");
    nb_tensor *d = nb_detach(nb_mul(x, x));
    CHECK(!nb_requires_grad(d));
    nb_scope_end();
}

/* An in-place change to a value saved for backward makes backward fail. */
static void test_version_counter(void) {
    nb_scope_begin();
    nb_tensor *w = nb_full(NB_F64, 1, (int64_t[]){3}, 2.0);
    nb_set_requires_grad(w, true);
    nb_tensor *x = nb_full(NB_F64, 1, (int64_t[]){3}, 1.0);
    nb_tensor *L = nb_sum(nb_mul(w, x));
    CHECK(nb_add_(x, nb_scalar(NB_F64, 1.0)) == 0);
    CHECK(nb_backward(L, NULL, 0) != 0);
    CHECK_ERR("modified in place");
    CHECK(nb_grad(w) == NULL);
    /* an op whose backward does not read x is unaffected, as in PyTorch */
    nb_tensor *L2 = nb_sum(nb_add(w, x));
    CHECK(nb_scale_(x, 3.0) == 0);
    CHECK(nb_backward(L2, NULL, 0) == 0);
    /* the output of exp is saved: changing it through a view is caught */
    nb_tensor *e = nb_exp(w);
    nb_tensor *L3 = nb_sum(e);
    nb_set_grad_enabled(false);
    CHECK(nb_fill_(nb_detach(e), 0) == 0);
    nb_set_grad_enabled(true);
    CHECK(nb_backward(L3, NULL, 0) != 0);
    CHECK_ERR("modified in place");
    /* a gradient saved by a graph and then accumulated into is caught too */
    nb_tensor *q = nb_full(NB_F64, 1, (int64_t[]){2}, 1.0), *r = nb_full(NB_F64, 1, (int64_t[]){2}, 1.0);
    nb_set_requires_grad(q, true);
    nb_set_requires_grad(r, true);
    CHECK(nb_backward(nb_sum(nb_mul(q, q)), NULL, 0) == 0);
    nb_tensor *prod = nb_sum(nb_mul(r, nb_grad(q)));
    CHECK(nb_backward(nb_sum(nb_mul(q, q)), NULL, 0) == 0);
    CHECK(nb_backward(prod, NULL, 0) != 0);
    CHECK_ERR("modified in place");
    /* in-place on a leaf that requires grad is refused while grad mode is on */
    CHECK(nb_add_(w, x) != 0);
    CHECK_ERR("requires grad");
    nb_scope_end();
}

/* A chain of a million nodes: ordering and freeing need no deep recursion. */
static void test_deep_chain(void) {
    nb_scope_begin();
    nb_tensor *x = leaf(1.0);
    nb_tensor *y = x;
    for (int i = 0; i < 1000000; i++) y = nb_add_scalar(y, 1e-6);
    CHECK(nb_backward(y, NULL, 0) == 0);
    CHECK_CLOSE(grad_of(x), 1, 0, 0);
    CHECK_CLOSE(nb_item(y), 2.0, 1e-9, 0);
    nb_scope_end();
    /* kept result: its graph outlives the scope and is freed with it */
    nb_scope_begin();
    nb_tensor *x2 = leaf(1.0);
    nb_tensor *z = x2;
    for (int i = 0; i < 1000000; i++) z = nb_mul(z, x2);
    nb_keep(z);
    nb_keep(x2);
    nb_scope_end();
    CHECK(nb_backward(z, NULL, 0) == 0);
    CHECK_CLOSE(grad_of(x2), 1000001, 0, 0);
    nb_free(z);
    nb_free(x2);
}

/* Scopes own every intermediate; kept tensors move out; nothing leaks (ASan). */
static void test_scopes(void) {
    nb_tensor *kept;
    nb_scope_begin();
    CHECK(nb_scope_depth() == 1);
    nb_tensor *y = nb_full(NB_F64, 1, (int64_t[]){4}, 1.0);
    nb_tensor *yhat = nb_full(NB_F64, 1, (int64_t[]){4}, 3.0);
    nb_scope_begin();
    kept = nb_keep(nb_mean(nb_pow(nb_sub(y, yhat), 2)));
    nb_scope_end();
    CHECK_CLOSE(nb_item(kept), 4, 0, 0);
    nb_keep(kept); /* out of every scope */
    nb_scope_end();
    CHECK(nb_scope_depth() == 0);
    CHECK_CLOSE(nb_item(kept), 4, 0, 0);
    nb_free(kept);
    nb_scope_end();
    CHECK_ERR("no open scope");
    nb_free(NULL);
}

/* A training loop of 100,000 steps inside scopes: memory stays flat. */
static void test_training_loop_constant_memory(void) {
    nb_tensor *w = nb_full(NB_F64, 2, (int64_t[]){4, 1}, 0.0);
    nb_tensor *b = nb_scalar(NB_F64, 0.0);
    nb_set_requires_grad(w, true);
    nb_set_requires_grad(b, true);
    double xv[8 * 4], yv[8];
    for (int i = 0; i < 8; i++) {
        yv[i] = 0;
        for (int j = 0; j < 4; j++) {
            xv[i * 4 + j] = ((i * 7 + j * 3) % 5) / 5.0 - 0.4;
            yv[i] += (j + 1) * xv[i * 4 + j];
        }
        yv[i] += 0.5;
    }
    nb_tensor *X = nb_from_f64(NB_F64, 2, (int64_t[]){8, 4}, xv);
    nb_tensor *Y = nb_from_f64(NB_F64, 2, (int64_t[]){8, 1}, yv);
    double loss = 0;
    int64_t mem_early = 0;
    for (int step = 0; step < 100000; step++) {
        if (step == 10) mem_early = nb_memory_in_use();
        nb_scope_begin();
        nb_tensor *L = nb_mean(nb_pow(nb_sub(nb_add(nb_matmul(X, w), b), Y), 2));
        nb_backward(L, NULL, 0);
        nb_set_grad_enabled(false);
        nb_axpy_(w, -0.1, nb_grad(w));
        nb_axpy_(b, -0.1, nb_grad(b));
        nb_set_grad_enabled(true);
        nb_zero_grad(w);
        nb_zero_grad(b);
        loss = nb_item(L);
        nb_scope_end();
    }
    CHECK(loss < 1e-12);
    CHECK(nb_memory_in_use() == mem_early); /* nothing piles up over 100,000 steps */
    CHECK_CLOSE(nb_get(w, (int64_t[]){3, 0}), 4, 1e-6, 0);
    CHECK_CLOSE(nb_item(b), 0.5, 1e-6, 0);
    nb_free(w);
    nb_free(b);
    nb_free(X);
    nb_free(Y);
}

static void *thread_main(void *arg) {
    double *out = arg;
    nb_scope_begin();
    nb_tensor *x = nb_scalar(NB_F64, out[0]);
    nb_set_requires_grad(x, true);
    double acc = 0;
    for (int i = 0; i < 2000; i++) {
        nb_scope_begin();
        nb_tensor *y = nb_mul(nb_sin(x), nb_exp(x));
        if (nb_backward(y, NULL, 0) == 0) acc += nb_item(y);
        nb_scope_end();
    }
    out[1] = nb_item(nb_grad(x));
    out[2] = acc;
    /* a packed matrix product: its per-thread buffers must be freed at thread exit (LSan) */
    nb_tensor *m = nb_full(NB_F32, 2, (int64_t[]){64, 64}, 0.5);
    out[3] = nb_item(nb_sum(nb_matmul(m, m)));
    nb_scope_end();
    return NULL;
}

static void test_two_threads(void) {
    double a[4] = {0.5, 0, 0, 0}, b[4] = {-1.25, 0, 0, 0};
    pthread_t ta, tb;
    CHECK(pthread_create(&ta, NULL, thread_main, a) == 0);
    CHECK(pthread_create(&tb, NULL, thread_main, b) == 0);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    double *r[2] = {a, b};
    for (int k = 0; k < 2; k++) {
        double x = r[k][0];
        CHECK_CLOSE(r[k][1], 2000 * (cos(x) + sin(x)) * exp(x), 1e-9, 1e-12);
        CHECK_CLOSE(r[k][2], 2000 * sin(x) * exp(x), 1e-9, 1e-12);
        CHECK_CLOSE(r[k][3], 64.0 * 64 * 64 * 0.25, 0, 0);
    }
}

/* Allocation failure at every point of a forward+backward: each run fails
   cleanly or succeeds, leaks nothing (ASan) and leaves the inputs intact. */
static void test_alloc_failures(void) {
    int succeeded = 0;
    nb_set_cache_limit(0); /* every allocation reaches the hook, none is served from the cache */
    for (long fail_at = 1; fail_at < 400 && !succeeded; fail_at++) {
        th_inject(fail_at);
        nb_clear_error();
        nb_scope_begin();
        nb_tensor *a = nb_full(NB_F64, 2, (int64_t[]){3, 40}, 0.5);
        nb_tensor *b = nb_full(NB_F64, 2, (int64_t[]){40, 2}, 2.0);
        nb_set_requires_grad(a, true);
        nb_set_requires_grad(b, true);
        nb_tensor *L = nb_sum(nb_tanh(nb_matmul(a, b)));
        int rc = nb_backward(L, NULL, 0);
        if (rc == 0 && nb_grad(a) && nb_grad(b)) {
            succeeded = 1;
            CHECK_CLOSE(nb_get(nb_grad(b), (int64_t[]){0, 0}), 3 * 0.5 * (1 - pow(tanh(40.0), 2)), 1e-12, 1e-9);
        } else {
            CHECK(nb_last_error() != NULL);
            if (a) CHECK(nb_get(a, (int64_t[]){2, 39}) == 0.5);
            if (a) CHECK(nb_grad(a) == NULL || nb_grad(b) == NULL);
        }
        nb_scope_end();
        nb_set_allocator(NULL, NULL, NULL);
    }
    CHECK(succeeded);
    nb_set_cache_limit((int64_t)256 << 20);
    nb_clear_error();
}

int main(void) {
    RUN(test_seed_sum);
    RUN(test_seed_square_times);
    RUN(test_seed_reuse);
    RUN(test_seed_neuron);
    RUN(test_seed_bias_broadcast);
    RUN(test_seed_mse);
    RUN(test_tensor_basics);
    RUN(test_views);
    RUN(test_slices_share_gradient);
    RUN(test_promotion);
    RUN(test_accumulate_and_zero);
    RUN(test_retain_and_release);
    RUN(test_higher_order);
    RUN(test_gradient_intermediate);
    RUN(test_grad_mode);
    RUN(test_version_counter);
    RUN(test_deep_chain);
    RUN(test_scopes);
    RUN(test_training_loop_constant_memory);
    RUN(test_two_threads);
    RUN(test_alloc_failures);
    return th_finish();
}

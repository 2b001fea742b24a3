/*
 * test_custom.c - user-defined ops: seed 004's MatrixMultiplication as a
 * forward/backward pair with saved tensors, checked by nb_gradcheck (first and
 * second order) and against nb_matmul; a backward of the wrong shape and a
 * saved tensor changed in place are clear errors.
 */
#include "harness.h"

static nb_tensor *mm_forward(nb_ctx *ctx, int n, nb_tensor *const *in, void *ud) {
    (void)n;
    (void)ud;
    if (nb_ctx_save(ctx, 2, in) != 0) return NULL; /* ctx.save_for_backward(x, w) */
    return nb_matmul(in[0], in[1]);
}

static int mm_backward(nb_ctx *ctx, nb_tensor *dldy, nb_tensor **grads, void *ud) {
    int *calls = ud;
    if (calls) (*calls)++;
    nb_tensor *x = nb_ctx_saved(ctx, 0), *w = nb_ctx_saved(ctx, 1);
    if (!x || !w) return -1;
    grads[0] = nb_matmul(dldy, nb_transpose(w, 0, 1)); /* dl/dx = dl/dy w^T */
    grads[1] = nb_matmul(nb_transpose(x, 0, 1), dldy); /* dl/dw = x^T dl/dy */
    return grads[0] && grads[1] ? 0 : -1;
}

static int bad_backward(nb_ctx *ctx, nb_tensor *dldy, nb_tensor **grads, void *ud) {
    (void)ctx;
    (void)ud;
    grads[0] = nb_sum(dldy); /* wrong shape */
    return 0;
}

static nb_tensor *id_forward(nb_ctx *ctx, int n, nb_tensor *const *in, void *ud) {
    (void)ctx, (void)n, (void)ud;
    return in[0]; /* returns its input: the op must still produce a new tensor */
}
static int twice_backward(nb_ctx *ctx, nb_tensor *g, nb_tensor **grads, void *ud) {
    (void)ctx, (void)ud;
    return (grads[0] = nb_scale(g, 2)) ? 0 : -1;
}

static void test_forward_returning_input(void) {
    nb_scope_begin();
    nb_tensor *x = nb_full(NB_F64, 1, (int64_t[]){2}, 1.0);
    nb_set_requires_grad(x, true);
    nb_tensor *y = nb_custom("id", 1, &x, id_forward, twice_backward, NULL);
    CHECK(y != x && nb_is_leaf(x));
    CHECK(nb_backward(nb_sum(y), NULL, 0) == 0);
    CHECK(nb_grad(x) && nb_get(nb_grad(x), (int64_t[]){1}) == 2);
    nb_scope_end();
}

static nb_tensor *mm(int n, nb_tensor *const *in, void *ud) { return nb_custom("MatrixMultiplication", n, in, mm_forward, mm_backward, ud); }

static void test_gradcheck_custom(void) {
    nb_scope_begin();
    nb_tensor *in[2] = {th_rand(NB_F64, 2, (int64_t[]){3, 4}, -1, 1), th_rand(NB_F64, 2, (int64_t[]){4, 2}, -1, 1)};
    nb_gradcheck_opts o = {.second_order = true};
    CHECK(nb_gradcheck(mm, NULL, 2, in, &o, NULL) == 0);
    nb_scope_end();
}

static void test_matches_matmul(void) {
    nb_scope_begin();
    int calls = 0;
    nb_tensor *x = th_rand(NB_F64, 2, (int64_t[]){3, 4}, -1, 1), *w = th_rand(NB_F64, 2, (int64_t[]){4, 5}, -1, 1);
    nb_set_requires_grad(x, true);
    nb_set_requires_grad(w, true);
    nb_tensor *in[2] = {x, w};
    nb_tensor *y = nb_custom("MatrixMultiplication", 2, in, mm_forward, mm_backward, &calls);
    nb_tensor *ref = nb_matmul(x, w);
    CHECK(nb_item(nb_sum(nb_abs(nb_sub(y, ref)))) == 0);
    CHECK(nb_backward(nb_sum(nb_tanh(y)), NULL, 0) == 0);
    CHECK(calls == 1);
    nb_tensor *gx = nb_gradient(nb_sum(nb_tanh(ref)), x, 0);
    double a[12], b[12];
    nb_read_f64(nb_grad(x), a, 12);
    nb_read_f64(gx, b, 12);
    for (int i = 0; i < 12; i++) CHECK_CLOSE(a[i], b[i], 1e-15, 1e-13);
    nb_scope_end();
}

static void test_custom_errors(void) {
    nb_scope_begin();
    nb_tensor *x = th_rand(NB_F64, 2, (int64_t[]){2, 3}, -1, 1), *w = th_rand(NB_F64, 2, (int64_t[]){3, 2}, -1, 1);
    nb_set_requires_grad(x, true);
    nb_tensor *in[2] = {x, w};
    nb_tensor *y = nb_custom("BadOp", 2, in, mm_forward, bad_backward, NULL);
    CHECK(y != NULL);
    CHECK(nb_backward(nb_sum(y), NULL, 0) != 0);
    CHECK_ERR("backward of op 'BadOp' gave a f64 gradient () for input 0 of shape (2,3)");
    CHECK(nb_grad(x) == NULL);
    /* a saved tensor changed in place after the forward */
    nb_tensor *w2 = nb_full(NB_F64, 2, (int64_t[]){3, 2}, 1.0);
    nb_tensor *in2[2] = {x, w2};
    nb_tensor *y2 = nb_custom("MatrixMultiplication", 2, in2, mm_forward, mm_backward, NULL);
    CHECK(nb_scale_(w2, 2.0) == 0);
    CHECK(nb_backward(nb_sum(y2), NULL, 0) != 0);
    CHECK_ERR("MatrixMultiplication: saved tensor 1 (3,2) was modified in place");
    CHECK(nb_custom("x", 2, in, NULL, mm_backward, NULL) == NULL);
    CHECK_ERR("nb_custom: x: need forward and backward callbacks");
    CHECK(nb_custom("x", 2, (nb_tensor *[]){x, NULL}, mm_forward, mm_backward, NULL) == NULL);
    CHECK_ERR("nb_custom: argument 2 is NULL");
    nb_scope_end();
}

int main(void) {
    th_seed(3);
    RUN(test_gradcheck_custom);
    RUN(test_matches_matmul);
    RUN(test_custom_errors);
    RUN(test_forward_returning_input);
    return th_finish();
}

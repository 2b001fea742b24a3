/*
 * test_errors.c - every public function answers a caller's mistake with NULL
 * or a nonzero status and a message naming the function and the shapes or
 * values at fault; inputs stay unchanged and nothing leaks.
 */
#include "harness.h"

static nb_tensor *m(int64_t r, int64_t c) {
    nb_tensor *t = nb_full(NB_F64, 2, (int64_t[]){r, c}, 1.0);
    return t;
}

static void test_null_inputs(void) {
    nb_scope_begin();
    nb_tensor *a = m(2, 3);
    CHECK(nb_add(NULL, a) == NULL);
    CHECK_ERR("nb_add: argument 1 is NULL");
    CHECK(nb_matmul(a, NULL) == NULL);
    CHECK_ERR("nb_matmul: argument 2 is NULL");
    /* the first message is kept through a chain of calls */
    CHECK(nb_exp(nb_log(nb_sum_axes(a, 1, (int[]){5}, false))) == NULL);
    CHECK_ERR("nb_sum_axes: axis 5 is out of range");
    CHECK(nb_rank(NULL) == -1 && nb_numel(NULL) == -1 && nb_shape(NULL) == NULL);
    nb_clear_error();
    CHECK(isnan(nb_item(NULL)));
    CHECK_ERR("nb_item");
    CHECK(nb_backward(NULL, NULL, 0) != 0);
    CHECK_ERR("nb_backward");
    CHECK(nb_gradient(a, NULL, 0) == NULL);
    CHECK_ERR("nb_gradient: argument 2 is NULL");
    CHECK(nb_concat(2, (nb_tensor *[]){a, NULL}, 0) == NULL);
    CHECK_ERR("nb_concat: argument 2 is NULL");
    nb_set_requires_grad(NULL, true);
    CHECK_ERR("nb_set_requires_grad");
    CHECK(nb_add_(NULL, a) != 0);
    CHECK_ERR("nb_add_");
    CHECK(nb_keep(NULL) == NULL);
    CHECK_ERR("nb_keep");
    CHECK(nb_data(NULL) == NULL);
    CHECK_ERR("nb_data");
    CHECK(nb_dense(a, NULL, NULL, NB_ACT_NONE) == NULL);
    CHECK_ERR("nb_dense: argument 2 is NULL");
    nb_clear_grad(NULL);
    CHECK_ERR("nb_clear_grad");
    CHECK(nb_sgd_update_(NULL, a, NULL, 0.1, 0, 0, false, true) != 0);
    CHECK_ERR("nb_sgd_update_");
    CHECK(nb_adam_update_(a, a, NULL, a, 0.1, 0.9, 0.999, 1e-8, 0, false, 1) != 0);
    CHECK_ERR("nb_adam_update_: argument 3 is NULL");
    CHECK(nb_all_finite(NULL, NULL) == -1);
    CHECK_ERR("nb_all_finite: argument 1 is NULL");
    nb_get_memory_stats(NULL); /* nothing to write to: a no-op */
    CHECK(nb_last_error() == NULL);
    nb_scope_end();
}

static void test_dtype(void) {
    nb_scope_begin();
    nb_tensor *i = nb_new(NB_I64, 1, (int64_t[]){3}, NULL), *f = nb_full(NB_F64, 1, (int64_t[]){3}, 1);
    CHECK(nb_add(i, f) == NULL);
    CHECK_ERR("nb_add: argument 1 (3,) has dtype i64");
    CHECK(nb_tanh(i) == NULL);
    CHECK_ERR("nb_tanh: argument 1 (3,) has dtype i64");
    nb_set_requires_grad(i, true);
    CHECK_ERR("nb_set_requires_grad: tensor (3,) has dtype i64");
    CHECK(nb_new((nb_dtype)7, 0, NULL, NULL) == NULL);
    CHECK_ERR("nb_new: unknown dtype 7");
    CHECK(nb_dense(i, f, NULL, NB_ACT_NONE) == NULL);
    CHECK_ERR("nb_dense: argument 1 (3,) has dtype i64");
    CHECK(nb_all_finite(i, NULL) == -1);
    CHECK_ERR("nb_all_finite: argument 1 (3,) has dtype i64");
    nb_tensor *f32 = nb_full(NB_F32, 1, (int64_t[]){3}, 1);
    CHECK(nb_sgd_update_(f, f32, NULL, 0.1, 0, 0, false, true) != 0); /* the gradient must match p's dtype */
    CHECK_ERR("nb_sgd_update_: gradient (3,) must be contiguous with the shape and dtype of the parameter (3,)");
    CHECK(nb_get(f, (int64_t[]){0}) == 1);
    nb_tensor *c = nb_to(i, NB_F32); /* conversions are fine */
    CHECK(c && nb_dtype_of(c) == NB_F32);
    nb_scope_end();
}

static void test_shapes(void) {
    nb_scope_begin();
    nb_tensor *a = m(2, 3), *b = m(4, 5), *c = m(4, 3);
    CHECK(nb_matmul(a, b) == NULL);
    CHECK_ERR("nb_matmul: (2,3) @ (4,5): inner dimensions 3 and 4 differ");
    CHECK(nb_add(a, c) == NULL);
    CHECK_ERR("nb_add: shapes (2,3) and (4,3) do not broadcast");
    CHECK(nb_mul(a, b) == NULL);
    CHECK_ERR("nb_mul: shapes (2,3) and (4,5) do not broadcast");
    CHECK(nb_where(m(3, 3), a, a) == NULL);
    CHECK_ERR("nb_where: condition (3,3)");
    nb_tensor *b3 = nb_full(NB_F64, 3, (int64_t[]){2, 3, 4}, 1), *b4 = nb_full(NB_F64, 3, (int64_t[]){3, 4, 5}, 1);
    CHECK(nb_matmul(b3, b4) == NULL);
    CHECK_ERR("batch dimensions do not broadcast");
    CHECK(nb_matmul(nb_scalar(NB_F64, 1), a) == NULL);
    CHECK_ERR("need rank >= 1");
    CHECK(nb_concat(2, (nb_tensor *[]){a, b}, 0) == NULL);
    CHECK_ERR("nb_concat: tensor 1 (4,5) does not match tensor 0 (2,3) outside axis 0");
    CHECK(nb_expand(a, 2, (int64_t[]){4, 3}) == NULL);
    CHECK_ERR("nb_expand: cannot expand (2,3) to (4,3)");
    CHECK(nb_backward(a, m(3, 2), 0) != 0);
    CHECK_ERR("nb_backward");
    nb_scope_end();
}

static void test_axes(void) {
    nb_scope_begin();
    nb_tensor *a = m(2, 3);
    CHECK(nb_transpose(a, 0, 2) == NULL);
    CHECK_ERR("nb_transpose: axes 0 and 2 are out of range for a tensor (2,3) of rank 2");
    CHECK(nb_permute(a, (int[]){0, 0}) == NULL);
    CHECK_ERR("nb_permute: perm entry 1 (0) is out of range or repeated for (2,3)");
    CHECK(nb_sum_axes(a, 2, (int[]){1, -1}, false) == NULL);
    CHECK_ERR("nb_sum_axes: axis -1 appears twice");
    CHECK(nb_mean_axes(a, 1, (int[]){-3}, true) == NULL);
    CHECK_ERR("nb_mean_axes: axis -3 is out of range for a tensor (2,3) of rank 2");
    CHECK(nb_max_axes(nb_new(NB_F64, 2, (int64_t[]){2, 0}, NULL), 1, (int[]){1}, false) == NULL);
    CHECK_ERR("nb_max_axes: cannot take the max over axis 1 of size 0 of (2,0)");
    CHECK(nb_slice(a, 3, 0, 1) == NULL);
    CHECK_ERR("nb_slice: axis 3 is out of range");
    CHECK(isnan(nb_get(a, (int64_t[]){0, 3})));
    CHECK_ERR("nb_get: index 3 is out of range for axis 1 of (2,3)");
    nb_scope_end();
}

static void test_slices(void) {
    nb_scope_begin();
    nb_tensor *a = m(2, 3);
    CHECK(nb_slice(a, 1, 4, 5) == NULL);
    CHECK_ERR("nb_slice: range [4, 5) is out of bounds for axis 1 of size 3 in (2,3)");
    CHECK(nb_slice(a, 0, 2, 1) == NULL);
    CHECK_ERR("nb_slice: range [2, 1) is out of bounds");
    CHECK(nb_slice(a, 0, -5, 1) == NULL);
    CHECK_ERR("nb_slice: range [-5, 1)");
    nb_tensor *s = nb_slice(a, 1, -2, 100); /* stop is clamped, as in Python */
    CHECK(s && nb_shape(s)[1] == 2);
    nb_scope_end();
}

static void test_reshape_and_overflow(void) {
    nb_scope_begin();
    nb_tensor *a = m(2, 3);
    CHECK(nb_reshape(a, 2, (int64_t[]){4, 2}) == NULL);
    CHECK_ERR("nb_reshape: cannot reshape (2,3) (6 elements) to (4,2) (8 elements)");
    CHECK(nb_reshape(a, 2, (int64_t[]){-1, 4}) == NULL);
    CHECK_ERR("nb_reshape: cannot infer axis 0: (2,3) has 6 elements, not a multiple of 4");
    CHECK(nb_reshape(a, 2, (int64_t[]){-1, -1}) == NULL);
    CHECK_ERR("more than one -1");
    int64_t huge[3] = {INT64_C(1) << 40, INT64_C(1) << 40, 16};
    CHECK(nb_new(NB_F32, 3, huge, NULL) == NULL);
    CHECK_ERR("nb_new: shape overflows");
    CHECK(nb_reshape(a, 3, huge) == NULL);
    CHECK_ERR("nb_reshape: invalid or overflowing size");
    int64_t big[2] = {INT64_C(1) << 31, INT64_C(1) << 31};
    CHECK(nb_full(NB_F64, 2, big, 0) == NULL);
    CHECK_ERR("nb_full: shape overflows");
    CHECK(nb_new(NB_F32, 9, huge, NULL) == NULL);
    CHECK_ERR("nb_new: rank 9 is outside 0..8");
    CHECK(nb_new(NB_F32, 1, (int64_t[]){-2}, NULL) == NULL);
    CHECK_ERR("nb_new: axis 0 has negative size -2");
    nb_scope_end();
}

/* A size-0 axis anywhere makes a tensor contiguous (nothing to lay out), as the strides of a new tensor say. */
static void test_empty_contiguous(void) {
    nb_scope_begin();
    int64_t shapes[][3] = {{0, 3, 2}, {3, 0, 2}, {3, 2, 0}, {2, 0, 0}};
    for (int k = 0; k < 4; k++) {
        nb_tensor *t = nb_new(NB_F32, 3, shapes[k], NULL);
        CHECK(t && nb_numel(t) == 0);
        CHECK(nb_is_contiguous(t));
        CHECK(nb_data(t) != NULL);
        CHECK(nb_last_error() == NULL);
        nb_tensor *r = nb_reshape(t, 2, (int64_t[]){shapes[k][0], 0});
        CHECK(r && nb_is_contiguous(r) && nb_data(r) != NULL);
        CHECK(nb_last_error() == NULL);
    }
    nb_tensor *m0 = nb_full(NB_F64, 2, (int64_t[]){4, 0}, 1.0);
    CHECK(nb_data(m0) != NULL && nb_is_contiguous(nb_add(m0, m0)));
    CHECK(nb_last_error() == NULL);
    nb_scope_end();
}

/* A shape with a size-0 axis is held to the same bound as one with data: the product of its other sizes, in
   bytes, must fit in int64, or its strides and offsets would overflow. */
static void test_empty_huge_shapes(void) {
    nb_scope_begin();
    const int64_t big = INT64_C(1) << 62;
    CHECK(nb_new(NB_F32, 3, (int64_t[]){big, 0, 4}, NULL) == NULL);
    CHECK_ERR("nb_new: shape overflows: (4611686018427387904,0,4) needs more than 2^63 bytes");
    CHECK(nb_full(NB_F64, 3, (int64_t[]){0, INT64_C(1) << 61, 2}, 0.0) == NULL);
    CHECK_ERR("shape overflows");
    nb_tensor *e = nb_new(NB_F32, 1, (int64_t[]){0}, NULL);
    CHECK(nb_reshape(e, 3, (int64_t[]){big, 0, 4}) == NULL);
    CHECK_ERR("nb_reshape: shape overflows: (4611686018427387904,0,4)");
    CHECK(nb_reshape(e, 2, (int64_t[]){0, -1}) == NULL);
    CHECK_ERR("nb_reshape: cannot infer axis 1");
    nb_tensor *e3 = nb_new(NB_F32, 3, (int64_t[]){0, 1, 1}, NULL);
    CHECK(nb_expand(e3, 3, (int64_t[]){0, big, 4}) == NULL);
    CHECK_ERR("nb_expand: cannot expand (0,1,1) to (0,4611686018427387904,4): the element count exceeds 2^63");
    nb_tensor *e4 = nb_new(NB_F32, 3, (int64_t[]){1, 1, 0}, NULL);
    CHECK(nb_expand(e4, 3, (int64_t[]){big, 4, 0}) == NULL);
    CHECK_ERR("nb_expand");
    CHECK(nb_numel(nb_expand(e4, 3, (int64_t[]){INT64_C(1) << 60, 1, 0})) == 0);
    /* shapes that fit are fine, whatever their sizes */
    nb_tensor *ok = nb_new(NB_F32, 3, (int64_t[]){INT64_C(1) << 60, 0, 1}, NULL);
    CHECK(ok && nb_numel(ok) == 0 && nb_is_contiguous(ok));
    nb_tensor *v = nb_expand(e3, 3, (int64_t[]){0, INT64_C(1) << 40, 1 << 20});
    CHECK(v && nb_numel(v) == 0 && nb_numel(nb_sum(v)) == 1 && nb_item(nb_sum(v)) == 0);
    CHECK(nb_last_error() == NULL);
    nb_scope_end();
}

/* A failed call leaves its inputs unchanged (values, grads, graph). */
static void test_inputs_untouched(void) {
    nb_scope_begin();
    nb_tensor *a = m(2, 3), *b = m(3, 2);
    nb_set_requires_grad(a, true);
    nb_tensor *bad = nb_add(a, b);
    CHECK(bad == NULL);
    CHECK_ERR("do not broadcast");
    CHECK(nb_add_(nb_detach(a), b) != 0);
    CHECK_ERR("nb_add_: src (3,2) does not broadcast to dst (2,3)");
    double v[6];
    nb_read_f64(a, v, 6);
    for (int i = 0; i < 6; i++) CHECK(v[i] == 1.0);
    CHECK(nb_grad(a) == NULL && nb_is_leaf(a));
    nb_tensor *y = nb_matmul(a, b);
    CHECK(nb_backward(y, NULL, 0) != 0); /* non-scalar root without a seed */
    CHECK_ERR("nb_backward: root (2,2) has 4 elements");
    CHECK(nb_grad(a) == NULL);
    CHECK(nb_backward(nb_sum(y), NULL, 0) == 0); /* the graph is still intact */
    CHECK(nb_grad(a) != NULL);
    nb_scope_end();
}

static void test_misc(void) {
    nb_scope_begin();
    nb_tensor *a = m(2, 3);
    nb_tensor *y = nb_mul(a, a);
    nb_set_requires_grad(a, true);
    nb_tensor *z = nb_mul(a, a);
    nb_set_requires_grad(z, false);
    CHECK_ERR("nb_set_requires_grad: tensor (2,3) is the result of op 'mul', not a leaf");
    CHECK(nb_data(nb_transpose(y, 0, 1)) == NULL);
    CHECK_ERR("nb_data: tensor (3,2) is not contiguous");
    CHECK(isnan(nb_item(a)));
    CHECK_ERR("nb_item: tensor (2,3) has 6 elements, not 1");
    CHECK(nb_read_f64(a, NULL, 6) == -1);
    CHECK_ERR("nb_read_f64");
    CHECK(nb_gradients(z, NULL, 0, NULL, 0, NULL) != 0);
    CHECK_ERR("nb_gradients");
    CHECK(nb_fill_(nb_expand(nb_detach(nb_slice(a, 0, 0, 1)), 2, (int64_t[]){4, 3}), 1) != 0);
    CHECK_ERR("nb_fill_: dst (4,3) is an expanded view");
    nb_tensor *k = nb_keep(nb_scalar(NB_F64, 1));
    nb_scope_end();
    nb_free(k);
    nb_scope_begin();
    nb_tensor *k2 = nb_scalar(NB_F64, 2);
    nb_tensor *k3 = nb_add_scalar(k2, 1);
    nb_set_requires_grad(k2, true);
    nb_free(k3);
    nb_scope_end();
}

/* transformer ops */
static void test_transformer_ops(void) {
    nb_scope_begin();
    nb_rng r;
    nb_rng_seed(&r, 1);
    nb_tensor *a = m(2, 3), *v = nb_full(NB_F64, 1, (int64_t[]){3}, 1.0);
    nb_tensor *i = nb_new(NB_I64, 2, (int64_t[]){2, 3}, NULL);
    CHECK(nb_gelu_tanh(NULL) == NULL);
    CHECK_ERR("nb_gelu_tanh: argument 1 is NULL");
    CHECK(nb_gelu_tanh(i) == NULL);
    CHECK_ERR("nb_gelu_tanh: argument 1 (2,3) has dtype i64");
    CHECK(nb_randn(NB_F32, 1, (int64_t[]){3}, NULL) == NULL);
    CHECK_ERR("nb_randn: the random generator is NULL");
    CHECK(nb_randn(NB_I64, 1, (int64_t[]){3}, &r) == NULL);
    CHECK_ERR("nb_randn: dtype i64 is not a float dtype");
    CHECK(nb_randn((nb_dtype)7, 1, (int64_t[]){3}, &r) == NULL);
    CHECK_ERR("nb_randn: unknown dtype 7");
    CHECK(nb_randn(NB_F32, 2, (int64_t[]){3, -1}, &r) == NULL);
    CHECK_ERR("nb_randn: axis 1 has negative size -1");
    CHECK(nb_randn(NB_F32, 1, NULL, &r) == NULL);
    CHECK_ERR("nb_randn: shape is NULL for rank 1");
    CHECK(nb_randn(NB_F32, NB_MAX_RANK + 1, (int64_t[NB_MAX_RANK + 1]){0}, &r) == NULL);
    CHECK_ERR("nb_randn: rank");
    CHECK(nb_randn(NB_F64, 2, (int64_t[]){INT64_MAX, 2}, &r) == NULL);
    CHECK_ERR("nb_randn: shape overflows");
    CHECK(nb_rand(NB_F32, 1, (int64_t[]){3}, NULL) == NULL);
    CHECK_ERR("nb_rand: the random generator is NULL");
    CHECK(nb_rand(NB_I64, 0, NULL, &r) == NULL);
    CHECK_ERR("nb_rand: dtype i64");
    CHECK(nb_arange(NB_F64, 0, 5, 0) == NULL);
    CHECK_ERR("nb_arange: step 0 must be finite and nonzero");
    CHECK(nb_arange(NB_F64, 0, 5, -1) == NULL);
    CHECK_ERR("nb_arange: step -1 points away from end 5 (start 0)");
    CHECK(nb_arange(NB_F64, 0, INFINITY, 1) == NULL);
    CHECK_ERR("nb_arange: start 0 and end inf must be finite");
    CHECK(nb_arange(NB_F64, 0, 1e300, 1) == NULL);
    CHECK_ERR("nb_arange: 1e+300 elements are more than 2^53");
    CHECK(nb_arange(NB_I64, 0, 1e20, 1e18) == NULL);
    CHECK_ERR("nb_arange: value 9.9e+19 cannot be stored in i64");
    CHECK(nb_arange((nb_dtype)9, 0, 1, 1) == NULL);
    CHECK_ERR("nb_arange: unknown dtype 9");
    CHECK(nb_tril(v, 0) == NULL);
    CHECK_ERR("nb_tril: tensor (3,) has rank 1, below 2");
    CHECK(nb_triu(i, 0) == NULL);
    CHECK_ERR("nb_triu: argument 1 (2,3) has dtype i64");
    CHECK(nb_tril(NULL, 0) == NULL);
    CHECK_ERR("nb_tril: argument 1 is NULL");
    CHECK(nb_masked_fill(a, NULL, 0) == NULL);
    CHECK_ERR("nb_masked_fill: argument 2 is NULL");
    CHECK(nb_masked_fill(i, a, 0) == NULL);
    CHECK_ERR("nb_masked_fill: argument 1 (2,3) has dtype i64");
    CHECK(nb_masked_fill(a, nb_full(NB_I64, 2, (int64_t[]){3, 1}, 1), 0) == NULL);
    CHECK_ERR("nb_masked_fill: mask (3,1) does not broadcast to the shape of x (2,3)");
    CHECK(nb_masked_fill(v, a, 0) == NULL); /* the mask would enlarge x */
    CHECK_ERR("nb_masked_fill: mask (2,3) does not broadcast to the shape of x (3,)");
    CHECK(nb_argmax(a, 2, false) == NULL);
    CHECK_ERR("nb_argmax: axis 2 is out of range");
    CHECK(nb_argmax(i, 0, false) == NULL);
    CHECK_ERR("nb_argmax: argument 1 (2,3) has dtype i64");
    CHECK(nb_argmax(nb_full(NB_F32, 2, (int64_t[]){2, 0}, 0), 1, true) == NULL);
    CHECK_ERR("nb_argmax: axis 1 of (2,0) is empty");
    CHECK(nb_argmax(NULL, 0, false) == NULL);
    CHECK_ERR("nb_argmax: argument 1 is NULL");
    nb_tensor *tv = a, *ti = a;
    CHECK(nb_topk(a, 4, 1, true, &tv, &ti) != 0 && tv == NULL && ti == NULL);
    CHECK_ERR("nb_topk: k = 4 is outside [0, 3], the size of axis 1 of (2,3)");
    CHECK(nb_topk(a, -1, 0, true, &tv, NULL) != 0);
    CHECK_ERR("nb_topk: k = -1 is outside [0, 2]");
    CHECK(nb_topk(a, 1, 3, true, &tv, NULL) != 0);
    CHECK_ERR("nb_topk: axis 3 is out of range");
    CHECK(nb_topk(i, 1, 0, true, &tv, NULL) != 0);
    CHECK_ERR("nb_topk: argument 1 (2,3) has dtype i64");
    CHECK(nb_multinomial(v, 2, NULL) == NULL);
    CHECK_ERR("nb_multinomial: the random generator is NULL");
    CHECK(nb_multinomial(v, -1, &r) == NULL);
    CHECK_ERR("nb_multinomial: num_samples -1 is negative");
    CHECK(nb_multinomial(nb_full(NB_F64, 3, (int64_t[]){1, 1, 2}, 1), 1, &r) == NULL);
    CHECK_ERR("nb_multinomial: probabilities (1,1,2) must have rank 1 or 2");
    CHECK(nb_multinomial(nb_from_f64(NB_F64, 1, (int64_t[]){2}, (double[]){1, -0.5}), 1, &r) == NULL);
    CHECK_ERR("nb_multinomial: probabilities (2,) hold a negative value (-0.5)");
    CHECK(nb_multinomial(nb_from_f64(NB_F32, 1, (int64_t[]){2}, (double[]){1, NAN}), 1, &r) == NULL);
    CHECK_ERR("nb_multinomial: probabilities (2,) hold an infinity or a NaN");
    CHECK(nb_multinomial(nb_from_f64(NB_F64, 2, (int64_t[]){2, 2}, (double[]){1, 0, 0, 0}), 1, &r) == NULL);
    CHECK_ERR("nb_multinomial: a row of (2,2) sums to 0");
    CHECK(nb_multinomial(nb_full(NB_F64, 2, (int64_t[]){2, 0}, 1), 1, &r) == NULL);
    CHECK_ERR("nb_multinomial: probabilities (2,0) have no categories");
    CHECK(nb_multinomial(i, 1, &r) == NULL);
    CHECK_ERR("nb_multinomial: argument 1 (2,3) has dtype i64");
    nb_scope_end();
}

int main(void) {
    RUN(test_null_inputs);
    RUN(test_dtype);
    RUN(test_shapes);
    RUN(test_axes);
    RUN(test_slices);
    RUN(test_reshape_and_overflow);
    RUN(test_empty_contiguous);
    RUN(test_empty_huge_shapes);
    RUN(test_inputs_untouched);
    RUN(test_misc);
    RUN(test_transformer_ops);
    return th_finish();
}

/*
 * test_linalg.c - inverse, det, logdet: values (X X^-1 = I, a known
 * determinant, pivoting), first- and second-order gradient checks on batched
 * and transposed inputs, and singular / non-square inputs as errors.
 */
#include "harness.h"

/* Well-conditioned random matrices: uniform entries plus 3 I. */
static nb_tensor *wellcond(int rank, const int64_t *shape) {
    nb_tensor *a = th_rand(NB_F64, rank, shape, -1, 1);
    int64_t n = shape[rank - 1], total = nb_numel(a);
    double *d = nb_data(a);
    for (int64_t b = 0; b < total / (n * n); b++)
        for (int64_t i = 0; i < n; i++) d[b * n * n + i * n + i] += 3;
    return a;
}

static nb_tensor *f_inv(int n, nb_tensor *const *in, void *ud) {
    (void)n;
    int k = *(const int *)ud;
    return k == 0 ? nb_inverse(in[0]) : k == 1 ? nb_det(in[0]) : nb_logdet(in[0]);
}

static void test_gradchecks(void) {
    for (int k = 0; k < 3; k++)
        for (int layout = 0; layout < 2; layout++) {
            nb_scope_begin();
            nb_tensor *x = wellcond(3, (int64_t[]){2, 3, 3});
            if (layout) {
                nb_set_requires_grad(x, true);
                x = nb_transpose(x, -1, -2);
            }
            nb_gradcheck_opts o = {.second_order = true};
            nb_gradcheck_result r;
            int rc = nb_gradcheck(f_inv, &k, 1, &x, &o, &r);
            CHECK(rc == 0);
            if (rc) fprintf(stderr, "  kind %d: order %d analytic %g numeric %g\n", k, r.order, r.analytic, r.numeric);
            nb_scope_end();
        }
}

static void test_values(void) {
    nb_scope_begin();
    /* needs a row swap: the first pivot is 0 */
    nb_tensor *a = nb_from_f64(NB_F64, 2, (int64_t[]){3, 3}, (double[]){0, 2, 1, 1, 1, 0, 3, 0, 1});
    CHECK_CLOSE(nb_item(nb_det(a)), 0 * (1 - 0) - 2 * (1 - 0) + 1 * (0 - 3), 1e-14, 0);
    nb_tensor *I = nb_matmul(a, nb_inverse(a));
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) CHECK_CLOSE(nb_get(I, (int64_t[]){i, j}), i == j, 1e-14, 0);
    nb_tensor *s = nb_from_f64(NB_F64, 2, (int64_t[]){2, 2}, (double[]){2, 1, 1, 3});
    CHECK_CLOSE(nb_item(nb_logdet(s)), log(5.0), 0, 1e-15);
    CHECK(isnan(nb_item(nb_logdet(nb_neg(nb_from_f64(NB_F64, 2, (int64_t[]){1, 1}, (double[]){2}))))));
    nb_tensor *f = nb_from_f64(NB_F32, 2, (int64_t[]){2, 2}, (double[]){4, 7, 2, 6});
    CHECK_CLOSE(nb_get(nb_inverse(f), (int64_t[]){0, 1}), -0.7, 1e-6, 0);
    nb_scope_end();
}

static void test_errors(void) {
    nb_scope_begin();
    nb_tensor *sing = nb_from_f64(NB_F64, 3, (int64_t[]){2, 2, 2}, (double[]){1, 0, 0, 1, 1, 2, 2, 4});
    CHECK(nb_inverse(sing) == NULL);
    CHECK_ERR("nb_inverse: matrix 1 of (2,2,2) is singular");
    CHECK(nb_get(nb_det(sing), (int64_t[]){1}) == 0);
    CHECK(nb_inverse(nb_full(NB_F64, 2, (int64_t[]){2, 3}, 1)) == NULL);
    CHECK_ERR("nb_inverse: input (2,3) is not a (batch of) square matrices");
    CHECK(nb_det(nb_full(NB_F64, 1, (int64_t[]){4}, 1)) == NULL);
    CHECK_ERR("nb_det: input (4,) is not");
    CHECK(nb_get(nb_det(nb_full(NB_F64, 3, (int64_t[]){2, 0, 0}, 0)), (int64_t[]){1}) == 1); /* det of 0x0 */
    CHECK(nb_get(nb_logdet(nb_full(NB_F64, 3, (int64_t[]){2, 0, 0}, 0)), (int64_t[]){0}) == 0);
    CHECK(nb_logdet(NULL) == NULL);
    CHECK_ERR("nb_logdet: argument 1 is NULL");
    nb_scope_end();
}

int main(void) {
    th_seed(9);
    RUN(test_gradchecks);
    RUN(test_values);
    RUN(test_errors);
    return th_finish();
}

/*
 * test_index.c - index_select and gather: values, repeated indices
 * accumulating in the gradient, first- and second-order gradient checks, and
 * bad indices as errors.
 */
#include "harness.h"

static nb_tensor *idx1;
static nb_tensor *idx2;

static nb_tensor *f_sel(int n, nb_tensor *const *in, void *ud) {
    (void)n;
    int k = *(const int *)ud;
    if (k == 0) return nb_mul(nb_index_select(in[0], 0, idx1), nb_index_select(in[0], 0, idx1));
    if (k == 1) return nb_tanh(nb_index_select(in[0], -1, idx1));
    return nb_mul(nb_gather(in[0], 1, idx2), nb_gather(in[0], 1, idx2));
}

static void test_gradchecks(void) {
    nb_scope_begin();
    idx1 = nb_from_f64(NB_I64, 1, (int64_t[]){5}, (double[]){2, 0, 2, -1, 1});
    idx2 = nb_from_f64(NB_I64, 2, (int64_t[]){3, 2}, (double[]){0, 0, 3, 1, -1, 2});
    for (int k = 0; k < 3; k++) {
        nb_tensor *x = th_rand(NB_F64, 2, (int64_t[]){3, 4}, -1, 1);
        nb_gradcheck_opts o = {.second_order = true};
        CHECK(nb_gradcheck(f_sel, &k, 1, &x, &o, NULL) == 0);
    }
    nb_scope_end();
}

static void test_values(void) {
    nb_scope_begin();
    nb_tensor *table = nb_from_f64(NB_F64, 2, (int64_t[]){3, 2}, (double[]){1, 2, 3, 4, 5, 6});
    nb_set_requires_grad(table, true);
    nb_tensor *ids = nb_from_f64(NB_I64, 1, (int64_t[]){4}, (double[]){2, 0, 2, 2});
    nb_tensor *e = nb_index_select(table, 0, ids); /* embedding lookup */
    CHECK(nb_shape(e)[0] == 4 && nb_get(e, (int64_t[]){0, 1}) == 6 && nb_get(e, (int64_t[]){1, 0}) == 1);
    CHECK(nb_backward(nb_sum(e), NULL, 0) == 0);
    CHECK(nb_get(nb_grad(table), (int64_t[]){2, 0}) == 3); /* row 2 used three times */
    CHECK(nb_get(nb_grad(table), (int64_t[]){1, 0}) == 0);
    nb_tensor *g = nb_gather(table, 1, nb_from_f64(NB_I64, 2, (int64_t[]){3, 1}, (double[]){1, 0, 1}));
    CHECK(nb_get(g, (int64_t[]){0, 0}) == 2 && nb_get(g, (int64_t[]){1, 0}) == 3 && nb_get(g, (int64_t[]){2, 0}) == 6);
    nb_scope_end();
}

static void test_errors(void) {
    nb_scope_begin();
    nb_tensor *a = nb_full(NB_F64, 2, (int64_t[]){3, 2}, 1);
    CHECK(nb_index_select(a, 0, nb_from_f64(NB_I64, 1, (int64_t[]){2}, (double[]){1, 3})) == NULL);
    CHECK_ERR("nb_index_select: index 3 at position 1 is out of range for axis 0 of size 3");
    CHECK(nb_index_select(a, 0, nb_full(NB_F64, 1, (int64_t[]){2}, 0)) == NULL);
    CHECK_ERR("nb_index_select: indices (2,) must be i64");
    CHECK(nb_index_select(a, 2, nb_new(NB_I64, 1, (int64_t[]){2}, NULL)) == NULL);
    CHECK_ERR("nb_index_select: axis 2 is out of range");
    CHECK(nb_gather(a, 1, nb_new(NB_I64, 2, (int64_t[]){2, 2}, NULL)) == NULL);
    CHECK_ERR("nb_gather: indices (2,2) must have the rank of (3,2) and match it outside axis 1");
    CHECK(nb_gather(a, 1, nb_from_f64(NB_I64, 2, (int64_t[]){3, 1}, (double[]){0, -3, 1})) == NULL);
    CHECK_ERR("nb_gather: index -3 at position 1 is out of range for axis 1 of size 2");
    nb_scope_end();
}

/* i64 tensors (labels) are selected exactly, contiguous or strided, beyond 2^53. */
static void test_i64(void) {
    nb_scope_begin();
    const int64_t big = ((int64_t)1 << 53) + 1, v[6] = {big, 1, 2, big + 2, -5, 7}; /* (2, 3) */
    nb_tensor *t = nb_new(NB_I64, 2, (int64_t[]){2, 3}, v);
    nb_tensor *idx = nb_new(NB_I64, 1, (int64_t[]){3}, (int64_t[]){1, 0, 1});
    nb_tensor *r = nb_index_select(t, 0, idx);                       /* rows: whole-row copies */
    nb_tensor *rt = nb_index_select(nb_transpose(t, 0, 1), 1, idx); /* strided: element copies */
    CHECK(r && nb_shape(r)[0] == 3 && rt && nb_shape(rt)[0] == 3 && nb_shape(rt)[1] == 3);
    if (r && rt) {
        const int64_t *pr = nb_data(r), *prt = nb_data(rt);
        CHECK(pr[0] == big + 2 && pr[3] == big && pr[6] == big + 2 && pr[8] == 7);
        CHECK(prt[0] == big + 2 && prt[1] == big && prt[3] == -5 && prt[4] == 1);
        CHECK(!nb_requires_grad(r));
    }
    nb_scope_end();
}

/* A table used twice, as a tied embedding is (looked up, then multiplied by its head): the lookup's rows are added
   into the gradient the other use gave first, in place, with a repeated row; the same values as a separate sum. */
static void test_tied(void) {
    nb_scope_begin();
    nb_tensor *table = nb_from_f64(NB_F64, 2, (int64_t[]){3, 2}, (double[]){1, 2, 3, 4, 5, 6});
    nb_set_requires_grad(table, true);
    nb_tensor *ids = nb_from_f64(NB_I64, 1, (int64_t[]){4}, (double[]){2, 0, 2, 2});
    nb_tensor *e = nb_index_select(table, 0, ids); /* (4, 2), recorded first so that its backward runs last */
    nb_tensor *w = nb_from_f64(NB_F64, 2, (int64_t[]){2, 2}, (double[]){0.5, -1, 2, 0.25});
    nb_tensor *head = nb_matmul(e, nb_transpose(table, 0, 1)); /* (4, 3): every row of the table */
    nb_tensor *L = nb_add(nb_sum(nb_mul(head, head)), nb_sum(nb_matmul(e, w)));
    CHECK(nb_backward(L, NULL, 0) == 0);
    /* dL/dtable = 2 H^T E (the head's use) + S^T (2 H table + 1 w^T), S (4, 3) the lookup's one-hot rows */
    double ev[4][2] = {{5, 6}, {1, 2}, {5, 6}, {5, 6}}, tv[3][2] = {{1, 2}, {3, 4}, {5, 6}}, want[3][2] = {{0}};
    double hv[4][3], wv[2][2] = {{0.5, -1}, {2, 0.25}};
    const int id[4] = {2, 0, 2, 2};
    for (int i = 0; i < 4; i++)
        for (int r = 0; r < 3; r++) hv[i][r] = ev[i][0] * tv[r][0] + ev[i][1] * tv[r][1];
    for (int r = 0; r < 3; r++)
        for (int c = 0; c < 2; c++)
            for (int i = 0; i < 4; i++) want[r][c] += 2 * hv[i][r] * ev[i][c];
    for (int i = 0; i < 4; i++)
        for (int c = 0; c < 2; c++) {
            double de = wv[c][0] + wv[c][1];
            for (int r = 0; r < 3; r++) de += 2 * hv[i][r] * tv[r][c];
            want[id[i]][c] += de;
        }
    for (int r = 0; r < 3; r++)
        for (int c = 0; c < 2; c++) CHECK(fabs(nb_get(nb_grad(table), (int64_t[]){r, c}) - want[r][c]) <= 1e-12);
    nb_scope_end();
}

int main(void) {
    th_seed(13);
    RUN(test_gradchecks);
    RUN(test_values);
    RUN(test_tied);
    RUN(test_errors);
    RUN(test_i64);
    return th_finish();
}

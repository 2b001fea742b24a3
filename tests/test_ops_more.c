/*
 * test_ops_more.c - log1p, expm1, softplus, flip, squeeze/unsqueeze, stack,
 * split, maximum/minimum, clamp, logsumexp, var, norm: first- and second-order
 * gradient checks, values against direct formulas, where() not leaking NaN from
 * the unselected branch, and bad inputs.
 */
#include "harness.h"

enum { LOG1P, EXPM1, SOFTPLUS, FLIP, SQUEEZE, STACK, SPLIT, MAXIMUM, MINIMUM, CLAMP, LSE, VAR, NORM, CUMSUM, PAD, COUNT };
static const char *names[COUNT] = {"log1p", "expm1", "softplus", "flip", "squeeze", "stack", "split",
                                   "maximum", "minimum", "clamp", "logsumexp", "var", "norm", "cumsum", "pad"};

static nb_tensor *apply(int n, nb_tensor *const *in, void *ud) {
    (void)n;
    nb_tensor *x = in[0];
    switch (*(const int *)ud) {
    case LOG1P: return nb_log1p(nb_scale(x, 0.6)); /* inside (-1, inf) */
    case EXPM1: return nb_expm1(x);
    case SOFTPLUS: return nb_softplus(nb_scale(x, 8)); /* crosses the threshold 20 */
    case FLIP: return nb_mul(nb_flip(x, 1), nb_flip(nb_flip(x, 0), 1));
    case SQUEEZE: return nb_squeeze(nb_unsqueeze(nb_mul(nb_unsqueeze(x, 0), x), 2), 2);
    case STACK: return nb_stack(2, (nb_tensor *[]){x, nb_exp(x)}, 1);
    case SPLIT: {
        nb_tensor *p[2];
        if (nb_split(x, 1, 2, (int64_t[]){1, 3}, p) != 0) return NULL;
        return nb_matmul(nb_transpose(p[0], 0, 1), p[1]); /* (1,3) @ (3,3) */
    }
    case MAXIMUM: return nb_maximum(x, in[1]);
    case MINIMUM: return nb_minimum(x, in[1]);
    case CLAMP: return nb_clamp(x, -0.5, 0.7);
    case LSE: return nb_logsumexp(x, 1, (int[]){1}, false);
    case VAR: return nb_var_axes(x, 1, (int[]){0}, 1, true);
    case NORM: return nb_norm(x);
    case CUMSUM: return nb_mul(nb_cumsum(x, 1), nb_cumsum(x, -2));
    case PAD: return nb_mul(nb_pad(x, (int64_t[]){1, 0, 2, 1}, 0.5), nb_pad(x, (int64_t[]){0, 1, 0, 3}, -1));
    }
    return NULL;
}

static void test_gradchecks(void) {
    for (int op = 0; op < COUNT; op++) {
        nb_scope_begin();
        nb_tensor *in[2] = {th_rand(NB_F64, 2, (int64_t[]){3, 4}, -1.5, 1.5),
                            th_rand(NB_F64, 1, (int64_t[]){4}, -1.5, 1.5)};
        if (op == CLAMP) { /* keep away from the bounds, where the gradient jumps */
            double *d = nb_data(in[0]);
            for (int i = 0; i < 12; i++)
                if (fabs(d[i] + 0.5) < 0.05 || fabs(d[i] - 0.7) < 0.05) d[i] += 0.2;
        }
        nb_gradcheck_opts o = {.second_order = true};
        nb_gradcheck_result r;
        int n = (op == MAXIMUM || op == MINIMUM) ? 2 : 1;
        int rc = nb_gradcheck(apply, &op, n, in, &o, &r);
        CHECK(rc == 0);
        if (rc)
            fprintf(stderr, "  %s: order %d input %d analytic %g numeric %g (%s)\n", names[op], r.order, r.input,
                    r.analytic, r.numeric, nb_last_error() ? nb_last_error() : "");
        nb_scope_end();
    }
}

static void test_values(void) {
    nb_scope_begin();
    nb_tensor *x = nb_from_f64(NB_F64, 1, (int64_t[]){4}, (double[]){1e-10, -0.5, 2, 30});
    CHECK_CLOSE(nb_get(nb_log1p(x), (int64_t[]){0}), 1e-10 - 5e-21, 0, 1e-15);
    CHECK_CLOSE(nb_get(nb_expm1(x), (int64_t[]){0}), 1e-10 + 5e-21, 0, 1e-15);
    CHECK_CLOSE(nb_get(nb_softplus(x), (int64_t[]){2}), log1p(exp(2.0)), 0, 1e-15);
    CHECK(nb_get(nb_softplus(x), (int64_t[]){3}) == 30);
    nb_tensor *f = nb_flip(x, 0);
    CHECK(nb_get(f, (int64_t[]){0}) == 30 && nb_get(f, (int64_t[]){3}) == 1e-10);
    nb_tensor *a = nb_from_f64(NB_F64, 1, (int64_t[]){3}, (double[]){1, 5, 2});
    nb_tensor *b = nb_from_f64(NB_F64, 1, (int64_t[]){3}, (double[]){3, 5, 1});
    nb_set_requires_grad(a, true);
    nb_set_requires_grad(b, true);
    CHECK(nb_backward(nb_sum(nb_maximum(a, b)), NULL, 0) == 0);
    CHECK(nb_get(nb_grad(a), (int64_t[]){1}) == 0.5 && nb_get(nb_grad(b), (int64_t[]){1}) == 0.5); /* tie */
    CHECK(nb_get(nb_grad(a), (int64_t[]){2}) == 1 && nb_get(nb_grad(b), (int64_t[]){0}) == 1);
    nb_tensor *big = nb_from_f64(NB_F64, 1, (int64_t[]){2}, (double[]){1000, 1000});
    CHECK_CLOSE(nb_item(nb_logsumexp(big, 0, NULL, false)), 1000 + log(2.0), 0, 1e-15);
    nb_tensor *v = nb_from_f64(NB_F64, 1, (int64_t[]){4}, (double[]){1, 2, 3, 4});
    CHECK_CLOSE(nb_item(nb_var_axes(v, 0, NULL, 1, false)), 5.0 / 3, 0, 1e-15);
    CHECK_CLOSE(nb_item(nb_norm(v)), sqrt(30.0), 0, 1e-15);
    nb_tensor *c = nb_clamp(v, 1.5, 3);
    CHECK(nb_get(c, (int64_t[]){0}) == 1.5 && nb_get(c, (int64_t[]){3}) == 3 && nb_get(c, (int64_t[]){1}) == 2);
    nb_scope_end();
}

/* The unselected branch of where() must not leak NaN or inf into the gradient. */
static void test_where_no_nan(void) {
    nb_scope_begin();
    nb_tensor *x = nb_from_f64(NB_F64, 1, (int64_t[]){3}, (double[]){0, 4, -1});
    nb_set_requires_grad(x, true);
    nb_tensor *zero = nb_scalar(NB_F64, 0);
    nb_tensor *y = nb_add(nb_where(nb_gt(x, zero), nb_sqrt(x), zero), nb_where(nb_gt(x, zero), nb_log(x), zero));
    CHECK(nb_backward(nb_sum(y), NULL, 0) == 0);
    double g[3];
    nb_read_f64(nb_grad(x), g, 3);
    CHECK(g[0] == 0 && g[2] == 0);
    CHECK_CLOSE(g[1], 0.25 + 0.25, 0, 1e-15);
    nb_scope_end();
}

static void test_dropout(void) {
    nb_scope_begin();
    nb_tensor *x = nb_full(NB_F64, 1, (int64_t[]){10000}, 2.0);
    nb_set_requires_grad(x, true);
    nb_rng r1, r2;
    nb_rng_seed(&r1, 42);
    nb_rng_seed(&r2, 42);
    nb_tensor *a = nb_dropout(x, 0.3, true, &r1), *b = nb_dropout(x, 0.3, true, &r2);
    double va[10000], vb[10000];
    nb_read_f64(a, va, 10000);
    nb_read_f64(b, vb, 10000);
    int kept = 0, same = 1;
    for (int i = 0; i < 10000; i++) {
        same &= va[i] == vb[i];
        CHECK(va[i] == 0 || fabs(va[i] - 2.0 / 0.7) < 1e-12);
        kept += va[i] != 0;
    }
    CHECK(same);                            /* reproducible for a seed */
    CHECK(kept > 6800 && kept < 7200);      /* about 1 - p kept */
    CHECK(nb_backward(nb_sum(a), NULL, 0) == 0);
    CHECK(nb_get(nb_grad(x), (int64_t[]){5}) == (va[5] != 0 ? 1 / 0.7 : 0));
    nb_tensor *e = nb_dropout(x, 0.3, false, NULL); /* eval: identity */
    CHECK(nb_get(e, (int64_t[]){7}) == 2.0);
    CHECK(nb_item(nb_sum(nb_dropout(x, 1.0, true, &r1))) == 0);
    CHECK(nb_dropout(x, 1.5, true, &r1) == NULL);
    CHECK_ERR("nb_dropout: probability 1.5 is outside [0, 1]");
    CHECK(nb_dropout(x, 0.5, true, NULL) == NULL);
    CHECK_ERR("nb_dropout: a random generator is needed");
    nb_scope_end();
    /* outside every scope the caller frees only the result: the mask goes with it (it leaked before) */
    int64_t before = nb_memory_in_use();
    nb_tensor *y = nb_full(NB_F32, 1, (int64_t[]){8}, 1.0);
    nb_set_requires_grad(y, true);
    nb_tensor *d = nb_dropout(y, 0.5, true, &r1);
    CHECK(d != NULL);
    nb_free(d);
    nb_free(y);
    CHECK(nb_memory_in_use() == before);
}

static void test_errors(void) {
    nb_scope_begin();
    nb_tensor *a = nb_full(NB_F64, 2, (int64_t[]){2, 3}, 1), *p[2];
    CHECK(nb_squeeze(a, 0) == NULL);
    CHECK_ERR("nb_squeeze: axis 0 of (2,3) is out of range or not of size 1");
    CHECK(nb_unsqueeze(a, 4) == NULL);
    CHECK_ERR("nb_unsqueeze: axis 4 is out of range for inserting into (2,3)");
    CHECK(nb_split(a, 1, 2, (int64_t[]){1, 1}, p) != 0);
    CHECK_ERR("nb_split: sizes add up to 2, but axis 1 of (2,3) has 3");
    CHECK(nb_stack(2, (nb_tensor *[]){a, nb_full(NB_F64, 1, (int64_t[]){3}, 1)}, 0) == NULL);
    CHECK_ERR("nb_concat");
    CHECK(nb_clamp(a, 2, 1) == NULL);
    CHECK_ERR("nb_clamp: lower bound 2 is above upper bound 1");
    CHECK(nb_maximum(a, nb_full(NB_F64, 1, (int64_t[]){2}, 1)) == NULL);
    CHECK_ERR("do not broadcast");
    CHECK(nb_flip(a, 2) == NULL);
    CHECK_ERR("nb_flip: axis 2 is out of range");
    CHECK(nb_pad(a, (int64_t[]){0, -1, 0, 0}, 0) == NULL);
    CHECK_ERR("nb_pad: padding (0, -1) of axis 0 is negative");
    CHECK(nb_cumsum(a, 3) == NULL);
    CHECK_ERR("nb_cumsum: axis 3 is out of range");
    CHECK(nb_log1p(NULL) == NULL);
    CHECK_ERR("nb_log1p: argument 1 is NULL");
    CHECK(nb_set_num_threads(-1) == -1);
    CHECK_ERR("nb_set_num_threads: n = -1 is out of range");
    CHECK(nb_set_num_threads(3) == 0 && nb_num_threads() == 3);
    CHECK(nb_set_num_threads(0) == 0 && nb_num_threads() >= 1);
    nb_scope_end();
}

/* An op with more inputs than saves_in has bits: concat of 40 tensors, and a product that reads input 35. */
static void test_many_inputs(void) {
    nb_scope_begin();
    nb_tensor *x = nb_full(NB_F64, 1, (int64_t[]){2}, 1.5), *ts[40];
    nb_set_requires_grad(x, true);
    for (int i = 0; i < 40; i++) ts[i] = nb_scale(x, (double)(i + 1));
    nb_tensor *c = nb_concat(40, ts, 0);
    CHECK(c && nb_backward(nb_sum(nb_mul(c, c)), NULL, 0) == 0);
    double want = 0; /* d/dx sum_i (i+1)^2 x^2 = 2 x sum (i+1)^2 per element */
    for (int i = 1; i <= 40; i++) want += 2.0 * 1.5 * i * i;
    CHECK_CLOSE(nb_get(nb_grad(x), (int64_t[]){1}), want, 1e-9, 1e-12);
    nb_scope_end();
}

/* Large elementwise ops split across threads give the same bits as on one, on flat and strided operands. */
static void test_threaded_elementwise(void) {
    nb_scope_begin();
    int64_t shape[2] = {300, 700};
    double *v = malloc(sizeof(double) * 300 * 700);
    for (int i = 0; i < 300 * 700; i++) v[i] = sin(0.001 * i) * 3;
    nb_tensor *a = nb_from_f64(NB_F32, 2, shape, v), *b = nb_from_f64(NB_F32, 2, shape, v);
    nb_tensor *bt = nb_reshape(b, 2, (int64_t[]){700, 300}), *r[2][3];
    for (int t = 0; t < 2; t++) {
        nb_set_num_threads(t ? 3 : 1);
        r[t][0] = nb_tanh(a);
        r[t][1] = nb_add(a, nb_transpose(bt, 0, 1));
        r[t][2] = nb_mul(a, nb_slice(b, 0, 0, 1)); /* broadcast row */
    }
    nb_set_num_threads(0);
    for (int k = 0; k < 3; k++) CHECK(r[0][k] && r[1][k] && memcmp(nb_data(r[0][k]), nb_data(r[1][k]), 4 * 300 * 700) == 0);
    CHECK_CLOSE(nb_get(r[1][0], (int64_t[]){299, 699}), tanh((double)(float)v[300 * 700 - 1]), 1e-6, 1e-6);
    free(v);
    nb_scope_end();
}

static bool same_bits(nb_tensor *a, nb_tensor *b);

/* Large reductions split across threads (over kept axes, or in fixed chunks
   for a sum of everything) give the same bits on 1 and 3 threads, and the
   right values. */
static void test_threaded_reductions(void) {
    nb_scope_begin();
    int64_t shape[3] = {40, 300, 70};
    int64_t n = 40 * 300 * 70;
    double *v = malloc(sizeof(double) * (size_t)n), exact = 0, col0 = 0;
    for (int64_t i = 0; i < n; i++) {
        v[i] = sin(0.001 * (double)i) * 3;
        exact += v[i];
    }
    for (int64_t i = 0; i < 40 * 300; i++) col0 += v[i * 70];
    nb_tensor *a = nb_from_f64(NB_F64, 3, shape, v), *af = nb_to(a, NB_F32), *r[2][8];
    for (int t = 0; t < 2; t++) {
        nb_set_num_threads(t ? 3 : 1);
        r[t][0] = nb_sum(a);                                      /* chunked */
        r[t][1] = nb_sum_axes(a, 2, (int[]){0, 1}, false);        /* kept innermost axis */
        r[t][2] = nb_sum_axes(a, 1, (int[]){2}, false);           /* kept outer axes */
        r[t][3] = nb_mean_axes(nb_transpose(af, 0, 2), 1, (int[]){1}, false); /* strided */
        r[t][4] = nb_max_axes(af, 1, (int[]){1}, false);
        r[t][5] = nb_sum(af);
        r[t][6] = nb_sum_axes(nb_transpose(nb_reshape(a, 2, (int64_t[]){2800, 300}), 0, 1), 1, (int[]){0}, false);
        r[t][7] = nb_sum_axes(nb_reshape(a, 2, (int64_t[]){2800, 300}), 1, (int[]){0}, false); /* kept inner axis */
    }
    nb_set_num_threads(0);
    for (int k = 0; k < 8; k++) CHECK(r[0][k] && r[1][k] && same_bits(r[0][k], r[1][k]));
    CHECK_CLOSE(nb_item(r[0][0]), exact, 1e-9, 1e-12);
    CHECK_CLOSE(nb_get(r[0][1], (int64_t[]){0}), col0, 1e-9, 1e-12);
    CHECK_CLOSE(nb_item(r[0][5]), exact, 1e-2, 1e-5);
    free(v);
    nb_scope_end();
}

/* nb_dense gives the bits of nb_matmul + nb_add + the activation, forward and
   backward, on a product large enough for the packed (and threaded) GEMM. */
static bool same_bits(nb_tensor *a, nb_tensor *b) {
    if (!a || !b || nb_numel(a) != nb_numel(b) || nb_dtype_of(a) != nb_dtype_of(b)) return false;
    a = nb_contiguous(a);
    b = nb_contiguous(b);
    return memcmp(nb_data(a), nb_data(b), (size_t)nb_numel(a) * (nb_dtype_of(a) == NB_F32 ? 4 : 8)) == 0;
}

static void test_dense_matches_parts(void) {
    for (int dt = 0; dt < 2; dt++)
        for (int act = NB_ACT_NONE; act <= NB_ACT_SIGMOID; act++)
            for (int threads = 1; threads <= 2; threads++) {
                nb_set_num_threads(threads);
                nb_scope_begin();
                nb_dtype t = dt ? NB_F64 : NB_F32;
                nb_tensor *x = th_rand(t, 2, (int64_t[]){130, 70}, -1, 1), *w = th_rand(t, 2, (int64_t[]){90, 70}, -1, 1),
                          *b = th_rand(t, 1, (int64_t[]){90}, -1, 1), *g = th_rand(t, 2, (int64_t[]){130, 90}, -1, 1);
                nb_tensor *xs[2], *ws[2], *bs[2], *ys[2];
                for (int k = 0; k < 2; k++) {
                    xs[k] = nb_clone(x), ws[k] = nb_clone(w), bs[k] = nb_clone(b);
                    nb_set_requires_grad(xs[k], true);
                    nb_set_requires_grad(ws[k], true);
                    nb_set_requires_grad(bs[k], true);
                }
                ys[0] = nb_dense(xs[0], ws[0], bs[0], (nb_act)act);
                nb_tensor *z = nb_add(nb_matmul(xs[1], nb_transpose(ws[1], 0, 1)), bs[1]);
                ys[1] = act == NB_ACT_RELU ? nb_relu(z) : act == NB_ACT_TANH ? nb_tanh(z) : act == NB_ACT_SIGMOID ? nb_sigmoid(z) : z;
                CHECK(same_bits(ys[0], ys[1]));
                for (int k = 0; k < 2; k++) CHECK(nb_backward(ys[k], g, 0) == 0);
                CHECK(same_bits(nb_grad(xs[0]), nb_grad(xs[1])));
                CHECK(same_bits(nb_grad(ws[0]), nb_grad(ws[1])));
                CHECK(same_bits(nb_grad(bs[0]), nb_grad(bs[1])));
                nb_scope_end();
            }
    nb_set_num_threads(1);
}

static void test_dense_errors(void) {
    nb_scope_begin();
    nb_tensor *x = nb_full(NB_F32, 2, (int64_t[]){3, 4}, 1), *w = nb_full(NB_F32, 2, (int64_t[]){5, 4}, 1),
              *b = nb_full(NB_F32, 1, (int64_t[]){5}, 1);
    CHECK(nb_dense(x, nb_full(NB_F32, 2, (int64_t[]){5, 3}, 1), b, NB_ACT_NONE) == NULL);
    CHECK_ERR("nb_dense");
    CHECK(nb_dense(x, w, nb_full(NB_F32, 1, (int64_t[]){4}, 1), NB_ACT_NONE) == NULL);
    CHECK_ERR("bias");
    CHECK(nb_dense(x, nb_full(NB_F64, 2, (int64_t[]){5, 4}, 1), NULL, NB_ACT_NONE) == NULL);
    CHECK_ERR("dtype");
    CHECK(nb_dense(x, w, b, (nb_act)9) == NULL);
    CHECK_ERR("activation");
    CHECK(nb_dense(NULL, w, b, NB_ACT_NONE) == NULL);
    CHECK_ERR("nb_dense");
    nb_tensor *y = nb_dense(x, w, b, NB_ACT_RELU); /* (3, 5) of 4 + 1 */
    CHECK(y && nb_shape(y)[0] == 3 && nb_shape(y)[1] == 5 && nb_get(y, (int64_t[]){2, 4}) == 5);
    /* no inputs: the bias alone, and a gradient for it */
    nb_tensor *x0 = nb_full(NB_F32, 2, (int64_t[]){3, 0}, 0), *w0 = nb_full(NB_F32, 2, (int64_t[]){5, 0}, 0);
    nb_set_requires_grad(w0, true);
    nb_set_requires_grad(b, true);
    nb_tensor *y0 = nb_dense(x0, w0, b, NB_ACT_NONE);
    CHECK(y0 && nb_numel(y0) == 15 && nb_get(y0, (int64_t[]){2, 4}) == 1);
    CHECK(y0 && nb_backward(nb_sum(y0), NULL, 0) == 0 && nb_get(nb_grad(b), (int64_t[]){0}) == 3);
    nb_scope_end();
}

int main(void) {
    th_seed(5);
    RUN(test_threaded_elementwise);
    RUN(test_threaded_reductions);
    RUN(test_many_inputs);
    RUN(test_gradchecks);
    RUN(test_values);
    RUN(test_where_no_nan);
    RUN(test_dropout);
    RUN(test_errors);
    RUN(test_dense_matches_parts);
    RUN(test_dense_errors);
    return th_finish();
}

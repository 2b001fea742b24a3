/*
 * test_pool.c - nb_max_pool2d, nb_avg_pool2d, nb_global_avg_pool2d and nb_flatten: gradient checks of first
 * and second order in f64 (odd sizes, non-square windows, stride, padding, dilation, batch 1, C = 1, views as
 * input), max pooling against a direct scan (ties to the first maximum, NaN wins, the padding never picked)
 * with its indices and where its gradient goes, average pooling against the window sums, the errors naming
 * the values, and every allocation failing. PyTorch's values (a case with tied maxima among them) are checked
 * by test_reference and test_hvp (tools/refformat.py, POOL_CASES).
 */
#include "harness.h"

typedef struct {
    int op; /* 0 max, 1 avg, 2 global average, 3 flatten(1, -1) of a max pool */
    int k[2];
    nb_conv2d_opts o;
    bool view;
} pcase;

static nb_tensor *pool_fn(int n, nb_tensor *const *in, void *ud) {
    (void)n;
    const pcase *c = ud;
    nb_tensor *x = c->view ? nb_transpose(in[0], 2, 3) : in[0];
    switch (c->op) {
    case 0: return nb_max_pool2d(x, c->k, c->o);
    case 1: return nb_avg_pool2d(x, c->k, c->o);
    case 2: return nb_global_avg_pool2d(x);
    default: return nb_flatten(nb_max_pool2d(x, c->k, c->o), 1, -1);
    }
}

#define SH(...) ((int64_t[]){__VA_ARGS__})
#define OPTS(sh, sw, ph, pw, dh, dw) ((nb_conv2d_opts){{sh, sw}, {ph, pw}, {dh, dw}, 0})

static void check(const char *what, pcase c, nb_tensor *x) {
    nb_gradcheck_opts o = {.second_order = true};
    nb_gradcheck_result r;
    int rc = nb_gradcheck(pool_fn, &c, 1, &x, &o, &r);
    CHECK(rc == 0);
    if (rc != 0)
        fprintf(stderr, "gradcheck %s: rc %d order %d index %lld analytic %.10g numeric %.10g (%s)\n", what, rc,
                r.order, (long long)r.index, r.analytic, r.numeric, nb_last_error() ? nb_last_error() : "");
    nb_clear_error();
}

/* Distinct values far apart (max pooling is not differentiable at ties): a shuffled ramp. */
static nb_tensor *ramp(int64_t n, int64_t c, int64_t h, int64_t w) {
    int64_t m = n * c * h * w;
    double *v = malloc(sizeof(double) * (size_t)m);
    for (int64_t i = 0; i < m; i++) v[i] = (double)((i * 7919) % m) * 0.1 - 0.05 * (double)m;
    nb_tensor *t = nb_from_f64(NB_F64, 4, SH(n, c, h, w), v);
    free(v);
    return t;
}

static void test_gradcheck(void) {
    nb_scope_begin();
    check("max 2x2", (pcase){0, {2, 2}, OPTS(0, 0, 0, 0, 0, 0), false}, ramp(2, 3, 6, 5));
    check("max 3x2 stride pad", (pcase){0, {3, 2}, OPTS(2, 1, 1, 1, 0, 0), false}, ramp(2, 2, 7, 6));
    check("max dilation", (pcase){0, {2, 3}, OPTS(1, 2, 1, 1, 2, 1), false}, ramp(1, 1, 7, 8));
    check("max view", (pcase){0, {2, 2}, OPTS(1, 1, 0, 0, 0, 0), true}, ramp(1, 2, 5, 4));
    th_seed(31);
    check("avg 2x2", (pcase){1, {2, 2}, OPTS(0, 0, 0, 0, 0, 0), false}, th_rand(NB_F64, 4, SH(2, 3, 6, 5), -1, 1));
    check("avg 3x3 pad", (pcase){1, {3, 3}, OPTS(2, 1, 1, 1, 0, 0), false}, th_rand(NB_F64, 4, SH(1, 2, 7, 6), -1, 1));
    check("avg view", (pcase){1, {2, 3}, OPTS(1, 1, 0, 1, 0, 0), true}, th_rand(NB_F64, 4, SH(2, 1, 5, 4), -1, 1));
    check("global", (pcase){2, {0, 0}, OPTS(0, 0, 0, 0, 0, 0), false}, th_rand(NB_F64, 4, SH(2, 3, 5, 4), -1, 1));
    check("flatten", (pcase){3, {2, 2}, OPTS(0, 0, 0, 0, 0, 0), false}, ramp(2, 2, 4, 4));
    nb_scope_end();
}

/* Max pooling against a direct scan, f32 and f64, with its indices and the gradient's destination. */
static void test_max_direct(void) {
    nb_scope_begin();
    const int k[2] = {3, 2};
    nb_conv2d_opts o = OPTS(2, 1, 1, 1, 1, 2);
    for (int dk = 0; dk < 2; dk++) {
        nb_dtype dt = dk ? NB_F32 : NB_F64;
        th_seed(32);
        nb_tensor *r = th_rand(NB_F64, 4, SH(2, 3, 8, 7), 0, 3);
        for (int64_t e = 0; e < nb_numel(r); e++) ((double *)nb_data(r))[e] = floor(((double *)nb_data(r))[e]);
        nb_tensor *x = nb_to(r, dt); /* values in {0, 1, 2}: many ties */
        nb_set_requires_grad(x, true);
        nb_tensor *idx = NULL, *y = nb_max_pool2d_with_indices(x, k, o, &idx);
        CHECK(y && idx && nb_shape(y)[2] == 4 && nb_shape(y)[3] == 7 && nb_dtype_of(idx) == NB_I64);
        if (!y || !idx) break;
        double grad[2 * 3 * 8 * 7] = {0};
        bool ok = true;
        for (int64_t pl = 0; pl < 6; pl++)
            for (int64_t i = 0; i < 4; i++)
                for (int64_t j = 0; j < 7; j++) {
                    double best = -INFINITY;
                    int64_t at = -1;
                    for (int p = 0; p < 3; p++)
                        for (int q = 0; q < 2; q++) {
                            int64_t h = i * 2 - 1 + p, w = j - 1 + 2 * q;
                            if (h < 0 || h >= 8 || w < 0 || w >= 7) continue;
                            double v = nb_get(x, SH(pl / 3, pl % 3, h, w));
                            if (v > best) best = v, at = h * 7 + w; /* strictly greater: the first of ties */
                        }
                    ok &= nb_get(y, SH(pl / 3, pl % 3, i, j)) == best;
                    ok &= (int64_t)nb_get(idx, SH(pl / 3, pl % 3, i, j)) == at;
                    grad[pl * 56 + at] += 1;
                }
        CHECK(ok);
        CHECK(nb_backward(nb_sum(y), NULL, 0) == 0);
        for (int64_t e = 0; e < 2 * 3 * 8 * 7; e++) {
            double gv = nb_get(nb_grad(x), SH(e / 168, e / 56 % 3, e / 7 % 8, e % 7));
            CHECK(gv == grad[e]);
        }
    }
    /* NaN wins (the last NaN of the window), as PyTorch */
    nb_tensor *x = nb_from_f64(NB_F64, 4, SH(1, 1, 2, 2), (double[]){1, NAN, 5, NAN});
    nb_tensor *idx = NULL, *y = nb_max_pool2d_with_indices(x, (int[]){2, 2}, (nb_conv2d_opts){0}, &idx);
    CHECK(y && isnan(nb_item(y)) && nb_get(idx, SH(0, 0, 0, 0)) == 3);
    /* all-negative values with padding: the padding is never picked */
    x = nb_full(NB_F32, 4, SH(1, 1, 2, 2), -7);
    y = nb_max_pool2d(x, (int[]){2, 2}, OPTS(1, 1, 1, 1, 0, 0));
    CHECK(y && nb_numel(y) == 9 && nb_get(y, SH(0, 0, 0, 0)) == -7 && nb_get(y, SH(0, 0, 2, 2)) == -7);
    nb_scope_end();
}

/* 2 x 2 windows with stride 2 and no padding take a vector path in the fast f32 set: ties and NaNs, widths
   that leave a remainder (and rows wider than one vector), odd heights, many planes, 1 and 2 threads, all
   against a direct scan. */
static void test_max_2x2(void) {
    nb_scope_begin();
    static const int64_t shapes[][4] = {{3, 5, 7, 23}, {2, 3, 9, 38}, {1, 1, 2, 2}, {4, 7, 14, 14}, {2, 2, 28, 28}};
    int keep = nb_num_threads();
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
        const int64_t *sh = shapes[k];
        int64_t N = sh[0], C = sh[1], H = sh[2], W = sh[3], OH = H / 2, OW = W / 2;
        th_seed(40 + (int)k);
        nb_tensor *r = th_rand(NB_F64, 4, sh, 0, 3);
        double *rv = nb_data(r);
        for (int64_t e = 0; e < nb_numel(r); e++) rv[e] = e % 17 == 5 ? NAN : floor(rv[e]); /* ties, NaNs */
        nb_tensor *x = nb_to(r, NB_F32), *idx[2] = {NULL, NULL}, *y[2];
        for (int t = 0; t < 2; t++) {
            nb_set_num_threads(t + 1);
            y[t] = nb_max_pool2d_with_indices(x, (int[]){2, 2}, (nb_conv2d_opts){0}, &idx[t]);
        }
        nb_set_num_threads(keep);
        CHECK(y[0] && y[1] && idx[0] && idx[1]);
        if (!y[0] || !y[1] || !idx[0] || !idx[1]) continue;
        CHECK(memcmp(nb_data(y[0]), nb_data(y[1]), sizeof(float) * (size_t)nb_numel(y[0])) == 0);
        CHECK(memcmp(nb_data(idx[0]), nb_data(idx[1]), sizeof(int64_t) * (size_t)nb_numel(idx[0])) == 0);
        bool ok = true;
        const float *yv = nb_data(y[0]);
        const int64_t *iv = nb_data(idx[0]);
        for (int64_t pl = 0; pl < N * C; pl++)
            for (int64_t i = 0; i < OH; i++)
                for (int64_t j = 0; j < OW; j++) {
                    double best = 0;
                    int64_t at = -1;
                    for (int p = 0; p < 2; p++)
                        for (int q = 0; q < 2; q++) {
                            int64_t e = (2 * i + p) * W + 2 * j + q;
                            double v = rv[pl * H * W + e];
                            if (at < 0 || v > best || v != v) best = v, at = e; /* first of ties, last NaN */
                        }
                    float got = yv[(pl * OH + i) * OW + j];
                    ok &= isnan(best) ? isnan(got) : got == (float)best;
                    ok &= iv[(pl * OH + i) * OW + j] == at;
                }
        if (!ok) fprintf(stderr, "max_2x2: shape %zu differs from the direct scan\n", k);
        CHECK(ok);
    }
    nb_scope_end();
}

static void test_avg_direct(void) {
    nb_scope_begin();
    th_seed(33);
    nb_tensor *x = th_rand(NB_F64, 4, SH(2, 2, 7, 6), -1, 1);
    nb_tensor *y = nb_avg_pool2d(x, (int[]){3, 2}, OPTS(2, 2, 1, 1, 0, 0)); /* (2,2,4,4) */
    CHECK(y && nb_shape(y)[2] == 4 && nb_shape(y)[3] == 4);
    double worst = 0;
    for (int64_t pl = 0; y && pl < 4; pl++)
        for (int64_t i = 0; i < 4; i++)
            for (int64_t j = 0; j < 4; j++) {
                double s = 0;
                for (int p = 0; p < 3; p++)
                    for (int q = 0; q < 2; q++) {
                        int64_t h = i * 2 - 1 + p, w = j * 2 - 1 + q;
                        if (h >= 0 && h < 7 && w >= 0 && w < 6) s += nb_get(x, SH(pl / 2, pl % 2, h, w));
                    }
                worst = fmax(worst, fabs(s / 6 - nb_get(y, SH(pl / 2, pl % 2, i, j))));
            }
    CHECK(worst < 1e-15);
    nb_tensor *g = nb_global_avg_pool2d(x);
    CHECK(g && nb_rank(g) == 4 && nb_shape(g)[2] == 1 && nb_shape(g)[3] == 1);
    nb_tensor *f = nb_flatten(x, 1, -1), *f2 = nb_flatten(x, 0, 1);
    CHECK(f && nb_rank(f) == 2 && nb_shape(f)[1] == 84 && f2 && nb_rank(f2) == 3 && nb_shape(f2)[0] == 4);
    nb_scope_end();
}

static void test_errors(void) {
    nb_scope_begin();
    nb_tensor *x = nb_full(NB_F32, 4, SH(2, 3, 5, 5), 0);
    nb_conv2d_opts d = {0};
    CHECK(nb_max_pool2d(nb_full(NB_F32, 3, SH(3, 5, 5), 0), (int[]){2, 2}, d) == NULL);
    CHECK_ERR("nb_max_pool2d: x must have rank 4 (N, C, H, W), not (3,5,5)");
    CHECK(nb_max_pool2d(x, (int[]){0, 2}, d) == NULL);
    CHECK_ERR("the kernel (0, 2) must be positive");
    CHECK(nb_max_pool2d(x, (int[]){2, 2}, OPTS(0, 0, 2, 0, 0, 0)) == NULL);
    CHECK_ERR("the padding (2, 0) must be at most half the kernel (2, 2)");
    CHECK(nb_max_pool2d(x, (int[]){6, 2}, d) == NULL);
    CHECK_ERR("the kernel (6, 2) (dilated: 6, 2) is larger than the padded input 5x5 of x (2,3,5,5)");
    CHECK(nb_max_pool2d(x, (int[]){2, 2}, OPTS(0, 0, -1, 0, 0, 0)) == NULL);
    CHECK_ERR("must not be negative");
    CHECK(nb_max_pool2d(x, NULL, d) == NULL);
    CHECK_ERR("kernel is NULL");
    CHECK(nb_avg_pool2d(x, (int[]){2, 2}, OPTS(0, 0, 0, 0, 2, 1)) == NULL);
    CHECK_ERR("nb_avg_pool2d: average pooling has no dilation (given (2, 1))");
    CHECK(nb_avg_pool2d(nb_full(NB_I64, 4, SH(1, 1, 2, 2), 0), (int[]){2, 2}, d) == NULL);
    CHECK(nb_last_error() != NULL);
    nb_clear_error();
    CHECK(nb_global_avg_pool2d(nb_full(NB_F32, 2, SH(2, 3), 0)) == NULL);
    CHECK_ERR("nb_global_avg_pool2d: x must have rank 4");
    CHECK(nb_flatten(x, 2, 1) == NULL);
    CHECK_ERR("nb_flatten: axes 2 to 1 do not name a range of the axes of (2,3,5,5)");
    CHECK(nb_flatten(x, 0, 4) == NULL);
    CHECK_ERR("axes 0 to 4");
    nb_scope_end();
}

static int pool_at(void *unused) {
    (void)unused;
    nb_scope_begin();
    nb_tensor *x = ramp(2, 2, 5, 6);
    int rc = x ? 0 : -1;
    if (rc == 0) {
        nb_set_requires_grad(x, true);
        nb_tensor *idx;
        nb_tensor *y = nb_max_pool2d_with_indices(nb_transpose(x, 2, 3), (int[]){2, 2}, OPTS(1, 1, 1, 0, 0, 0), &idx);
        nb_tensor *z = y ? nb_avg_pool2d(y, (int[]){2, 2}, (nb_conv2d_opts){0}) : NULL;
        rc = z && nb_backward(nb_sum(nb_flatten(z, 0, -1)), NULL, 0) == 0 ? 0 : -1;
    }
    nb_scope_end();
    return rc;
}
static void test_oom(void) { CHECK(th_fail_each(pool_at, NULL, 5000) > 5); }

int main(void) {
    RUN(test_gradcheck);
    RUN(test_max_direct);
    RUN(test_max_2x2);
    RUN(test_avg_direct);
    RUN(test_errors);
    if (!getenv("SKIP_OOM")) RUN(test_oom);
    return th_finish();
}

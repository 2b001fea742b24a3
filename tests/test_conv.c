/*
 * test_conv.c - nb_conv2d and its gradient ops nb_conv2d_input / nb_conv2d_weight: gradient checks of first
 * and second order in f64 (stride, padding, dilation, groups incl. depthwise, odd sizes, C = 1, non-square
 * kernels, batch 1, views as input, with and without bias), the forward against a direct loop, the gradient
 * ops against the gradients nb_backward gives, the fast kernels against the reference set, the thread split,
 * the Winograd kernels of 3x3 stride-1 f32 convolutions against f64,
 * the errors naming the shapes, and every allocation failing. PyTorch's values are checked by
 * test_reference (tools/gen_reference.py, conv2d_*) and test_hvp.
 */
#include "harness.h"

typedef struct {
    nb_conv2d_opts o;
    bool bias;
    bool x_view; /* x given as the (H, W) transpose of a stored (N, C, W, H) leaf */
} ccase;

static nb_tensor *conv_fn(int n, nb_tensor *const *in, void *ud) {
    const ccase *c = ud;
    nb_tensor *x = c->x_view ? nb_transpose(in[0], 2, 3) : in[0];
    return nb_conv2d(x, in[1], n > 2 ? in[2] : NULL, c->o);
}

#define SH(...) ((int64_t[]){__VA_ARGS__})
#define RND(r, ...) th_rand(NB_F64, r, SH(__VA_ARGS__), -1.5, 1.5)

static int check(const char *what, ccase *c, int n, nb_tensor **in, bool second) {
    nb_gradcheck_opts o = {0};
    o.second_order = second;
    nb_gradcheck_result r;
    int rc = nb_gradcheck(conv_fn, c, n, in, &o, &r);
    CHECK(rc == 0);
    if (rc != 0)
        fprintf(stderr, "gradcheck %s: rc %d order %d input %d index %lld analytic %.10g numeric %.10g (%s)\n", what,
                rc, r.order, r.input, (long long)r.index, r.analytic, r.numeric, nb_last_error() ? nb_last_error() : "");
    nb_clear_error();
    return rc;
}

#define OPTS(sh, sw, ph, pw, dh, dw, g) ((nb_conv2d_opts){{sh, sw}, {ph, pw}, {dh, dw}, g})

static void test_gradcheck(void) {
    nb_scope_begin();
    th_seed(21);
    ccase c = {.bias = true};
    check("plain 3x3", &c, 3, (nb_tensor *[]){RND(4, 2, 3, 5, 6), RND(4, 4, 3, 3, 3), RND(1, 4)}, true);
    c.o = OPTS(2, 1, 1, 2, 1, 1, 0); /* stride 2x1, padding 1x2, odd sizes, non-square kernel */
    check("stride padding", &c, 3, (nb_tensor *[]){RND(4, 2, 2, 7, 5), RND(4, 3, 2, 3, 2), RND(1, 3)}, true);
    c.o = OPTS(1, 2, 2, 1, 2, 1, 0); /* dilation 2x1 */
    check("dilation", &c, 3, (nb_tensor *[]){RND(4, 1, 2, 6, 7), RND(4, 2, 2, 2, 3), RND(1, 2)}, true);
    c = (ccase){.o = OPTS(1, 1, 1, 1, 1, 1, 2)}; /* groups 2, no bias */
    check("groups", &c, 2, (nb_tensor *[]){RND(4, 2, 4, 5, 4), RND(4, 6, 2, 3, 3)}, true);
    c = (ccase){.o = OPTS(2, 2, 1, 1, 1, 1, 3), .bias = true}; /* depthwise: groups = C = O */
    check("depthwise", &c, 3, (nb_tensor *[]){RND(4, 1, 3, 6, 5), RND(4, 3, 1, 3, 3), RND(1, 3)}, true);
    c = (ccase){.bias = true}; /* C = 1, batch 1, 1x1 kernel (the pointwise path) */
    check("pointwise C=1", &c, 3, (nb_tensor *[]){RND(4, 1, 1, 4, 3), RND(4, 3, 1, 1, 1), RND(1, 3)}, true);
    c = (ccase){.o = OPTS(1, 1, 0, 0, 1, 1, 2)}; /* pointwise with groups */
    check("pointwise groups", &c, 2, (nb_tensor *[]){RND(4, 2, 4, 3, 2), RND(4, 2, 2, 1, 1)}, true);
    c = (ccase){.o = OPTS(3, 2, 0, 1, 1, 1, 0), .x_view = true}; /* a view as input; stride not covering the input */
    check("view", &c, 2, (nb_tensor *[]){RND(4, 2, 2, 5, 8), RND(4, 2, 2, 2, 3)}, true);
    c = (ccase){.bias = true}; /* a kernel the size of the input: 1x1 output */
    check("full kernel", &c, 3, (nb_tensor *[]){RND(4, 2, 2, 3, 4), RND(4, 3, 2, 3, 4), RND(1, 3)}, true);
    nb_scope_end();
}

/* The gradient ops themselves, differentiated once and twice (their rules are made of the three ops). */
static nb_tensor *input_fn(int n, nb_tensor *const *in, void *ud) {
    (void)n;
    const ccase *c = ud;
    return nb_conv2d_input(SH(2, 4, 7, 6), in[1], in[0], c->o);
}
static nb_tensor *weight_fn(int n, nb_tensor *const *in, void *ud) {
    (void)n;
    const ccase *c = ud;
    return nb_conv2d_weight(in[0], SH(6, 2, 3, 2), in[1], c->o);
}

static void test_gradcheck_gradient_ops(void) {
    nb_scope_begin();
    th_seed(22);
    ccase c = {.o = OPTS(2, 1, 1, 0, 1, 2, 2)}; /* x (2,4,7,6), w (6,2,3,2): y (2,6,4,4) */
    nb_gradcheck_opts o = {.second_order = true};
    nb_gradcheck_result r;
    CHECK(nb_gradcheck(input_fn, &c, 2, (nb_tensor *[]){RND(4, 2, 6, 4, 4), RND(4, 6, 2, 3, 2)}, &o, &r) == 0);
    CHECK(nb_gradcheck(weight_fn, &c, 2, (nb_tensor *[]){RND(4, 2, 4, 7, 6), RND(4, 2, 6, 4, 4)}, &o, &r) == 0);
    nb_scope_end();
}

/* The forward against the definition (direct loops in double), f32 and f64, and the gradient ops against
   nb_backward's gradients. */
static void test_forward_and_gradient_ops(void) {
    nb_scope_begin();
    th_seed(23);
    nb_conv2d_opts o = OPTS(2, 1, 1, 2, 1, 2, 2);
    for (int k = 0; k < 2; k++) {
        nb_dtype dt = k ? NB_F32 : NB_F64;
        nb_tensor *x = th_rand(dt, 4, SH(3, 4, 9, 8), -1, 1), *w = th_rand(dt, 4, SH(6, 2, 3, 3), -1, 1);
        nb_tensor *b = th_rand(dt, 1, SH(6), -1, 1);
        nb_set_requires_grad(x, true), nb_set_requires_grad(w, true), nb_set_requires_grad(b, true);
        nb_tensor *y = nb_conv2d(x, w, b, o);
        CHECK(y && nb_shape(y)[0] == 3 && nb_shape(y)[1] == 6 && nb_shape(y)[2] == 5 && nb_shape(y)[3] == 8);
        if (!y) break;
        double worst = 0;
        for (int64_t n = 0; n < 3; n++)
            for (int64_t oc = 0; oc < 6; oc++)
                for (int64_t i = 0; i < 5; i++)
                    for (int64_t j = 0; j < 8; j++) {
                        double acc = nb_get(b, SH(oc));
                        for (int64_t c = 0; c < 2; c++)
                            for (int64_t p = 0; p < 3; p++)
                                for (int64_t q = 0; q < 3; q++) {
                                    int64_t h = i * 2 - 1 + p, ww = j - 2 + 2 * q;
                                    if (h >= 0 && h < 9 && ww >= 0 && ww < 8)
                                        acc += nb_get(w, SH(oc, c, p, q)) * nb_get(x, SH(n, oc / 3 * 2 + c, h, ww));
                                }
                        worst = fmax(worst, fabs(acc - nb_get(y, SH(n, oc, i, j))));
                    }
        CHECK(worst < (k ? 1e-5 : 1e-13));
        nb_tensor *g = th_rand(dt, 4, SH(3, 6, 5, 8), -1, 1);
        CHECK(nb_backward(nb_sum(nb_mul(y, g)), NULL, 0) == 0);
        nb_tensor *dx = nb_conv2d_input(nb_shape(x), w, g, o), *dw = nb_conv2d_weight(x, nb_shape(w), g, o);
        CHECK(dx && dw);
        for (int64_t e = 0; dx && e < nb_numel(x); e++)
            CHECK(((k ? (double)((float *)nb_data(dx))[e] : ((double *)nb_data(dx))[e]) ==
                   (k ? (double)((float *)nb_data(nb_grad(x)))[e] : ((double *)nb_data(nb_grad(x)))[e])));
        for (int64_t e = 0; dw && e < nb_numel(w); e++)
            CHECK(((k ? (double)((float *)nb_data(dw))[e] : ((double *)nb_data(dw))[e]) ==
                   (k ? (double)((float *)nb_data(nb_grad(w)))[e] : ((double *)nb_data(nb_grad(w)))[e])));
        nb_tensor *db = nb_sum_axes(g, 3, (int[]){0, 2, 3}, false);
        for (int64_t e = 0; e < 6; e++) CHECK_CLOSE(nb_get(db, SH(e)), nb_get(nb_grad(b), SH(e)), 1e-6, 1e-6);
    }
    nb_scope_end();
}

/* The largest |a - b| over the elements, in units of eps32 max|b| (b the f64 result). */
static double norm_err(nb_tensor *a, nb_tensor *b) {
    double worst = 0, big = 0;
    int64_t n = nb_numel(b);
    for (int64_t e = 0; e < n; e++) {
        double u = ((float *)nb_data(a))[e], v = ((double *)nb_data(b))[e];
        worst = fmax(worst, fabs(u - v)), big = fmax(big, fabs(v));
    }
    return worst / (big > 0 ? big : 1) / 1.1920928955078125e-7;
}

/* f32 3x3 stride-1 convolutions with 8 or more channels each way take the fast set's Winograd kernels
   (F(2x2, 3x3): odd and even sizes, padding 0, 1 and 2, rows wider than 16 tiles, one image, several chunks
   and weight-gradient blocks): forward, input and weight gradients against the same in f64 (the im2col
   path) within the bound of docs/OPS.md (norm 4 k, k the terms of each sum), and the same bits on 1 and 2
   threads. */
static void test_winograd(void) {
    nb_scope_begin();
    th_seed(29);
    static const int64_t cases[][6] = {
        /* N, C, O, H, W, padding */
        {3, 8, 9, 5, 7, 1}, {37, 9, 16, 14, 14, 1}, {2, 16, 8, 6, 4, 0}, {2, 8, 8, 9, 11, 2}, {1, 12, 10, 33, 40, 1},
        {5, 8, 12, 2, 3, 1}, {4, 32, 64, 14, 14, 1},
    };
    int keep = nb_num_threads();
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const int64_t *c = cases[k];
        int64_t N = c[0], C = c[1], O = c[2], H = c[3], W = c[4], p = c[5], OH = H + 2 * p - 2, OW = W + 2 * p - 2;
        nb_conv2d_opts o = OPTS(1, 1, (int)p, (int)p, 1, 1, 1);
        nb_tensor *x = th_rand(NB_F32, 4, SH(N, C, H, W), -1, 1), *w = th_rand(NB_F32, 4, SH(O, C, 3, 3), -1, 1);
        nb_tensor *b = th_rand(NB_F32, 1, SH(O), -1, 1), *g = th_rand(NB_F32, 4, SH(N, O, OH, OW), -1, 1);
        nb_tensor *x64 = nb_to(x, NB_F64), *w64 = nb_to(w, NB_F64), *b64 = nb_to(b, NB_F64), *g64 = nb_to(g, NB_F64);
        nb_tensor *r[2][3];
        for (int t = 0; t < 2; t++) {
            nb_set_num_threads(t + 1);
            r[t][0] = nb_conv2d(x, w, b, o);
            r[t][1] = nb_conv2d_input(nb_shape(x), w, g, o);
            r[t][2] = nb_conv2d_weight(x, nb_shape(w), g, o);
        }
        nb_set_num_threads(keep);
        nb_tensor *ref[3] = {nb_conv2d(x64, w64, b64, o), nb_conv2d_input(nb_shape(x), w64, g64, o),
                             nb_conv2d_weight(x64, nb_shape(w), g64, o)};
        double bound[3] = {4.0 * (C * 9 + 1), 4.0 * O * 9, 4.0 * N * OH * OW};
        for (int j = 0; j < 3; j++) {
            CHECK(r[0][j] && r[1][j] && ref[j]);
            if (!r[0][j] || !r[1][j] || !ref[j]) continue;
            double e = norm_err(r[0][j], ref[j]);
            if (!(e <= bound[j]))
                fprintf(stderr, "winograd case %zu kernel %d: error %.3g eps max|ref| > bound %.0f\n", k, j, e, bound[j]);
            CHECK(e <= bound[j]);
            CHECK(memcmp(nb_data(r[0][j]), nb_data(r[1][j]), sizeof(float) * (size_t)nb_numel(r[0][j])) == 0);
        }
    }
    nb_scope_end();
}

/* The same bits on 1, 2 and 3 threads, for each of the three kernels (images split across the pool; the
   weight gradient's blocks of images summed in order). */
static void test_threads(void) {
    nb_scope_begin();
    th_seed(24);
    int keep = nb_num_threads();
    nb_conv2d_opts o = OPTS(1, 1, 1, 1, 1, 1, 0);
    nb_tensor *x = th_rand(NB_F32, 4, SH(37, 3, 12, 11), -1, 1), *w = th_rand(NB_F32, 4, SH(8, 3, 3, 3), -1, 1);
    nb_tensor *g = th_rand(NB_F32, 4, SH(37, 8, 12, 11), -1, 1);
    nb_tensor *r[3][3];
    for (int t = 1; t <= 3; t++) {
        nb_set_num_threads(t);
        r[t - 1][0] = nb_conv2d(x, w, NULL, o);
        r[t - 1][1] = nb_conv2d_input(nb_shape(x), w, g, o);
        r[t - 1][2] = nb_conv2d_weight(x, nb_shape(w), g, o);
    }
    nb_set_num_threads(keep);
    for (int t = 1; t < 3; t++)
        for (int k = 0; k < 3; k++) {
            CHECK(r[t][k] && r[0][k]);
            if (r[t][k] && r[0][k])
                CHECK(memcmp(nb_data(r[t][k]), nb_data(r[0][k]), sizeof(float) * (size_t)nb_numel(r[0][k])) == 0);
        }
    nb_scope_end();
}

static void test_errors(void) {
    nb_scope_begin();
    nb_tensor *x = nb_full(NB_F32, 4, SH(2, 3, 5, 5), 0), *w = nb_full(NB_F32, 4, SH(4, 3, 3, 3), 0);
    nb_conv2d_opts d = {0};
    CHECK(nb_conv2d(nb_full(NB_F32, 3, SH(3, 5, 5), 0), w, NULL, d) == NULL);
    CHECK_ERR("nb_conv2d: x must have rank 4 (N, C, H, W), not (3,5,5)");
    CHECK(nb_conv2d(x, nb_full(NB_F32, 2, SH(4, 27), 0), NULL, d) == NULL);
    CHECK_ERR("w must have rank 4 (out channels, in channels / groups, kH, kW), not (4,27)");
    CHECK(nb_conv2d(x, w, NULL, OPTS(1, 1, 0, 0, 1, 1, 2)) == NULL);
    CHECK_ERR("groups 2 must divide the input channels 3 and the output channels 4");
    CHECK(nb_conv2d(x, nb_full(NB_F32, 4, SH(4, 2, 3, 3), 0), NULL, d) == NULL);
    CHECK_ERR("the weight (4,2,3,3) expects 2 x 1 groups = 2 input channels, the input (2,3,5,5) has 3");
    CHECK(nb_conv2d(x, nb_full(NB_F32, 4, SH(4, 3, 7, 3), 0), NULL, d) == NULL);
    CHECK_ERR("the kernel 7x3 (dilation 1x1) is larger than the padded input 5x5 (input 5x5, padding 0x0)");
    CHECK(nb_conv2d(x, w, NULL, OPTS(1, 1, 0, 0, 3, 1, 0)) == NULL);
    CHECK_ERR("the kernel 3x3 (dilation 3x1) is larger than the padded input 5x5");
    CHECK(nb_conv2d(x, w, NULL, OPTS(1, 1, -1, 0, 1, 1, 0)) == NULL);
    CHECK_ERR("padding (-1, 0)");
    CHECK(nb_conv2d(x, w, NULL, OPTS(-2, 1, 0, 0, 1, 1, 0)) == NULL);
    CHECK_ERR("must not be negative");
    CHECK(nb_conv2d(x, w, nb_full(NB_F32, 1, SH(3), 0), d) == NULL);
    CHECK_ERR("the bias (3,) must be (4,)");
    CHECK(nb_conv2d(x, nb_full(NB_F64, 4, SH(4, 3, 3, 3), 0), NULL, d) == NULL);
    CHECK_ERR("must share one dtype");
    CHECK(nb_conv2d(nb_full(NB_I64, 4, SH(2, 3, 5, 5), 0), w, NULL, d) == NULL);
    CHECK(nb_last_error() != NULL);
    nb_clear_error();
    CHECK(nb_conv2d_input(SH(2, 3, 5, 5), w, nb_full(NB_F32, 4, SH(2, 4, 4, 3), 0), d) == NULL);
    CHECK_ERR("nb_conv2d_input: the output gradient (2,4,4,3) should be (2,4,3,3)");
    CHECK(nb_conv2d_weight(x, SH(4, 3, 3, 3), nb_full(NB_F32, 4, SH(2, 5, 3, 3), 0), d) == NULL);
    CHECK_ERR("nb_conv2d_weight: the output gradient (2,5,3,3) should be (2,4,3,3)");
    CHECK(nb_conv2d_input(NULL, w, x, d) == NULL);
    CHECK_ERR("x_shape is NULL");
    /* a padded input just large enough; zero-size batch */
    nb_tensor *y = nb_conv2d(x, nb_full(NB_F32, 4, SH(4, 3, 7, 7), 0), NULL, OPTS(1, 1, 1, 1, 1, 1, 0));
    CHECK(y && nb_shape(y)[2] == 1 && nb_shape(y)[3] == 1);
    y = nb_conv2d(nb_full(NB_F32, 4, SH(0, 3, 5, 5), 0), w, NULL, d);
    CHECK(y && nb_shape(y)[0] == 0 && nb_shape(y)[2] == 3);
    nb_scope_end();
}

/* Forward and both gradients with the at-th allocation failing. */
static int step_at(void *unused) {
    (void)unused;
    nb_scope_begin();
    th_seed(25);
    nb_tensor *x = th_rand(NB_F32, 4, SH(9, 2, 6, 5), -1, 1), *w = th_rand(NB_F32, 4, SH(4, 2, 3, 3), -1, 1);
    nb_tensor *b = th_rand(NB_F32, 1, SH(4), -1, 1);
    int rc = x && w && b ? 0 : -1;
    if (rc == 0) {
        nb_set_requires_grad(x, true), nb_set_requires_grad(w, true), nb_set_requires_grad(b, true);
        nb_tensor *y = nb_conv2d(nb_transpose(x, 2, 3), w, b, OPTS(2, 1, 1, 1, 1, 1, 0));
        rc = y && nb_backward(nb_sum(y), NULL, 0) == 0 ? 0 : -1;
    }
    nb_scope_end();
    return rc;
}
static void test_oom(void) { CHECK(th_fail_each(step_at, NULL, 5000) > 5); }

int main(void) {
    RUN(test_gradcheck);
    RUN(test_gradcheck_gradient_ops);
    RUN(test_forward_and_gradient_ops);
    RUN(test_threads);
    RUN(test_winograd);
    RUN(test_errors);
    if (!getenv("SKIP_OOM")) RUN(test_oom);
    return th_finish();
}

/*
 * test_backend_ops.c - every op on both CPU kernel sets, compared element by element.
 *
 * In the spirit of ggml's test-backend-ops: each case builds one or more outputs from random inputs (the
 * shapes of the gradient checks: odd sizes so that SIMD tails and the thread split are hit, inputs large
 * enough to cross the fast set's parallel threshold, size-1 axes, broadcasting, transposed, sliced and
 * flipped views as operands), in f32 and in f64, and computes the gradient of sum_i sum(W_i * y_i), for a
 * fixed random W_i, with respect to every input, so that every input's gradient is produced. The case runs
 * twice in one process: on the reference kernel set (src/backend/ref, the oracle) and on the fast one
 * (src/backend/cpu, with two threads), the inputs and W the same values both times. Outputs and gradients
 * are then compared:
 *   BITS      the same bits (NaN meets NaN by its bits), where backend.h promises it;
 *   ULP(k)    within k units in the last place of the dtype (values compared as floats of that dtype);
 *   NORM(k)   |fast - ref| <= k eps(dtype) max|ref| over the whole tensor (a normwise bound: sums,
 *             products, rows), k being chosen from the reduced length as stated per case.
 * Each case prints its largest difference (absolute, relative and as a fraction of the bound); the groups'
 * summary at the end is the table of docs/OPS.md ("Kernel sets: fast against reference"). The test fails
 * when a difference exceeds its bound, and when an op of the registry (src/ops/ops.def) occurs in no case.
 */
#include "harness.h"

#include "backend/backend.h"
#include "core/internal.h"
#include "opcover.h"

#include <float.h>

#define BO_MAX_IN 4
#define BO_MAX_OUT 6

typedef enum { BITS, ULP, NORM } bo_mode;
typedef struct {
    bo_mode mode;
    double k;
} bo_bound;
#define B_BITS {BITS, 0}
#define B_ULP(k) {ULP, k}
#define B_NORM(k) {NORM, k}

typedef struct {
    int rank;
    int64_t shape[NB_MAX_RANK];
    double lo, hi;
    bool rg;
} bo_input;

enum { F32 = 1, F64 = 2, BOTH = 3 };

typedef struct {
    const char *name; /* "group/variant": the summary is per group */
    int (*fn)(nb_tensor **x, nb_tensor **out, nb_dtype dt);
    int n;
    bo_input in[BO_MAX_IN];
    bo_bound fwd, bwd;
    int dtypes;
} bo_case;

#define I1(a) {1, {a}, -2, 2, true}
#define I2(a, b) {2, {a, b}, -2, 2, true}
#define I3(a, b, c) {3, {a, b, c}, -2, 2, true}
#define I4(a, b, c, d) {4, {a, b, c, d}, -2, 2, true}
#define I1R(a, lo, hi) {1, {a}, lo, hi, true}
#define I2R(a, b, lo, hi) {2, {a, b}, lo, hi, true}
#define I3R(a, b, c, lo, hi) {3, {a, b, c}, lo, hi, true}
#define I1C(a) {1, {a}, -2, 2, false}
#define I2C(a, b) {2, {a, b}, -2, 2, false}
#define I2CR(a, b, lo, hi) {2, {a, b}, lo, hi, false}

static nb_tensor *tr(nb_tensor *t) { return nb_transpose(t, 0, 1); }
static nb_tensor *idx1(int n, const double *v) { return nb_from_f64(NB_I64, 1, (int64_t[]){n}, v); }
#define AX(...) ((int[]){__VA_ARGS__})
#define SH(...) ((int64_t[]){__VA_ARGS__})
#define OUT1(e) (out[0] = (e), 1)
#define OUT2(e0, e1) (out[0] = (e0), out[1] = (e1), 2)

/* ---- elementwise binary, where, comparisons --------------------------------------------------------- */
static int f_add_bcast(nb_tensor **x, nb_tensor **out, nb_dtype dt) { (void)dt; return OUT1(nb_add(x[0], x[1])); }
static int f_add_views(nb_tensor **x, nb_tensor **out, nb_dtype dt) {
    (void)dt;
    return OUT1(nb_add(tr(x[0]), nb_slice(x[1], 1, 2, 19)));
}
static int f_sub(nb_tensor **x, nb_tensor **out, nb_dtype dt) { (void)dt; return OUT1(nb_sub(x[0], x[1])); }
static int f_mul_flip(nb_tensor **x, nb_tensor **out, nb_dtype dt) {
    (void)dt;
    return OUT1(nb_mul(x[0], nb_flip(x[1], 0)));
}
static int f_div(nb_tensor **x, nb_tensor **out, nb_dtype dt) { (void)dt; return OUT1(nb_div(x[0], x[1])); }
static int f_pow_t(nb_tensor **x, nb_tensor **out, nb_dtype dt) { (void)dt; return OUT1(nb_pow_t(x[0], x[1])); }
static int f_where(nb_tensor **x, nb_tensor **out, nb_dtype dt) {
    (void)dt;
    return OUT1(nb_where(nb_gt(x[0], x[1]), x[0], tr(x[2])));
}
static int f_compare(nb_tensor **x, nb_tensor **out, nb_dtype dt) {
    (void)dt;
    nb_tensor *r = nb_scale(x[0], 0.0); /* a tie with x[1] where it is 0 */
    out[0] = nb_gt(x[0], x[1]);
    out[1] = nb_lt(tr(x[2]), x[1]);
    out[2] = nb_eq(nb_add(x[1], r), x[1]);
    out[3] = nb_eq(x[0], nb_flip(x[0], 1));
    return 4;
}
/* Mixed dtypes: promotion to f64, and a rank-0 f64 operand taking the ranked operand's dtype. */
static int f_mixed(nb_tensor **x, nb_tensor **out, nb_dtype dt) {
    nb_dtype other = dt == NB_F32 ? NB_F64 : NB_F32;
    nb_tensor *s = nb_sum(x[1]);
    out[0] = nb_mul(x[0], nb_to(x[1], other));
    out[1] = nb_add(x[0], nb_to(s, other));
    return 2;
}

/* ---- unary ------------------------------------------------------------------------------------------- */
#define UNARY(NAME, EXPR)                                                                \
    static int NAME(nb_tensor **x, nb_tensor **out, nb_dtype dt) {                       \
        (void)dt;                                                                        \
        nb_tensor *a = x[0], *b = tr(x[0]);                                              \
        out[0] = EXPR;                                                                   \
        a = b;                                                                           \
        out[1] = EXPR;                                                                   \
        return 2;                                                                        \
    }
UNARY(u_neg, nb_neg(a))
UNARY(u_scale, nb_scale(a, 1.37))
UNARY(u_add_scalar, nb_add_scalar(a, 0.3))
UNARY(u_pow3, nb_pow(a, 3.0))
UNARY(u_pow2, nb_pow(a, 2.0))
UNARY(u_pow_m15, nb_pow(a, -1.5))
UNARY(u_pow_half, nb_pow(a, 0.5))
UNARY(u_exp, nb_exp(a))
UNARY(u_log, nb_log(a))
UNARY(u_sqrt, nb_sqrt(a))
UNARY(u_abs, nb_abs(a))
UNARY(u_sin, nb_sin(a))
UNARY(u_cos, nb_cos(a))
UNARY(u_tanh, nb_tanh(a))
UNARY(u_sigmoid, nb_sigmoid(a))
UNARY(u_relu, nb_relu(a))
UNARY(u_leaky, nb_leaky_relu(a, 0.07))
UNARY(u_gelu, nb_gelu(a))
UNARY(u_erf, nb_erf(a))
UNARY(u_sign, nb_sign(a))
UNARY(u_log1p, nb_log1p(a))
UNARY(u_expm1, nb_expm1(a))
UNARY(u_softplus, nb_softplus(a))
/* Large inputs: the fast set splits them across its two threads. */
static int u_big(nb_tensor **x, nb_tensor **out, nb_dtype dt) {
    (void)dt;
    out[0] = nb_exp(x[0]);
    out[1] = nb_tanh(x[0]);
    out[2] = nb_sigmoid(tr(x[0]));
    out[3] = nb_relu(x[0]);
    return 4;
}
static int b_big(nb_tensor **x, nb_tensor **out, nb_dtype dt) {
    (void)dt;
    out[0] = nb_mul(x[0], x[1]);
    out[1] = nb_div(nb_flip(x[0], 1), x[1]);
    return 2;
}

/* ---- reductions -------------------------------------------------------------------------------------- */
static int f_sum_axis(nb_tensor **x, nb_tensor **out, nb_dtype dt) {
    (void)dt;
    out[0] = nb_sum_axes(x[0], 1, AX(1), false);
    out[1] = nb_sum_axes(x[0], 1, AX(0), true);
    out[2] = nb_sum(tr(x[0]));
    return 3;
}
static int f_sum_3d(nb_tensor **x, nb_tensor **out, nb_dtype dt) {
    (void)dt;
    out[0] = nb_sum_axes(x[0], 2, AX(0, 2), true);
    out[1] = nb_sum_axes(nb_permute(x[0], AX(2, 0, 1)), 1, AX(-1), false);
    return 2;
}
static int f_sum_big(nb_tensor **x, nb_tensor **out, nb_dtype dt) {
    (void)dt;
    out[0] = nb_sum(x[0]);
    out[1] = nb_sum_axes(x[0], 1, AX(0), false);
    out[2] = nb_sum_axes(tr(x[0]), 1, AX(1), false);
    return 3;
}
static int f_mean(nb_tensor **x, nb_tensor **out, nb_dtype dt) {
    (void)dt;
    out[0] = nb_mean_axes(x[0], 1, AX(0), false);
    out[1] = nb_mean(nb_flip(x[0], 1));
    out[2] = nb_mean_axes(x[0], 2, AX(0, 1), true);
    return 3;
}
static int f_max(nb_tensor **x, nb_tensor **out, nb_dtype dt) {
    (void)dt;
    out[0] = nb_max_axes(x[0], 1, AX(1), false);
    out[1] = nb_max_axes(tr(x[0]), 1, AX(1), true);
    out[2] = nb_max_axes(x[0], 0, NULL, false);
    return 3;
}
/* Ties: values rounded to a few levels, so the gradient is split among equal maxima. */
static int f_max_ties(nb_tensor **x, nb_tensor **out, nb_dtype dt) {
    (void)dt;
    nb_tensor *q = nb_sign(x[1]); /* -1, 0, 1: many ties, a constant */
    out[0] = nb_max_axes(nb_add(x[0], q), 1, AX(0), false);
    out[1] = nb_max_axes(nb_mul(nb_scale(x[0], 0.0), q), 1, AX(1), false);
    return 2;
}
static int f_cumsum(nb_tensor **x, nb_tensor **out, nb_dtype dt) {
    (void)dt;
    out[0] = nb_cumsum(x[0], 1);
    out[1] = nb_cumsum(tr(x[0]), 0);
    out[2] = nb_cumsum(nb_reshape(x[0], 3, SH(7, 1, 130)), 2);
    return 3;
}

/* ---- rows: softmax family, losses, layer norm --------------------------------------------------------- */
static int f_softmax(nb_tensor **x, nb_tensor **out, nb_dtype dt) {
    (void)dt;
    out[0] = nb_softmax(x[0], 1);
    out[1] = nb_softmax(tr(x[0]), 0);
    out[2] = nb_softmax(nb_reshape(x[0], 3, SH(7, 3, 11)), 1);
    return 3;
}
static int f_log_softmax(nb_tensor **x, nb_tensor **out, nb_dtype dt) {
    (void)dt;
    out[0] = nb_log_softmax(x[0], 1);
    out[1] = nb_log_softmax(x[0], 0);
    return 2;
}
static const double tgt17[] = {0, 32, 5, 5, 17, 1, 31, 2, 0, 9, 30, 4, 16, 8, 3, 12, 25};
static int f_cross_entropy(nb_tensor **x, nb_tensor **out, nb_dtype dt) {
    (void)dt;
    out[0] = nb_cross_entropy(x[0], idx1(17, tgt17));
    out[1] = nb_cross_entropy(tr(x[1]), idx1(17, tgt17));
    return 2;
}
/* nb_cross_entropy_ex: (B, T, C) with targets ignored (every fifth), smoothing, each reduction */
static int f_cross_entropy_ex(nb_tensor **x, nb_tensor **out, nb_dtype dt) {
    (void)dt;
    double tv[17];
    for (int i = 0; i < 17; i++) tv[i] = i % 5 == 2 ? -100 : tgt17[i];
    nb_tensor *t = nb_reshape(idx1(17, tv), 2, SH(1, 17));
    nb_tensor *x3 = nb_reshape(x[0], 3, SH(1, 17, 33));
    nb_ce_options mean = {-100, NB_REDUCE_MEAN, 0.1}, sum = {-100, NB_REDUCE_SUM, 0}, none = {-100, NB_REDUCE_NONE, 0.25};
    out[0] = nb_cross_entropy_ex(x3, t, &mean);
    out[1] = nb_cross_entropy_ex(x3, t, &sum);
    out[2] = nb_cross_entropy_ex(x3, t, &none);
    return 3;
}
static int f_nll(nb_tensor **x, nb_tensor **out, nb_dtype dt) {
    (void)dt;
    out[0] = nb_nll_loss(nb_log_softmax(x[0], 1), idx1(17, tgt17));
    out[1] = nb_nll_loss(x[0], idx1(17, tgt17));
    return 2;
}
/* ---- attention ---------------------------------------------------------------------------------------- */
static int f_attention(nb_tensor **x, nb_tensor **out, nb_dtype dt) {
    (void)dt;
    out[0] = nb_attention(x[0], x[1], x[2], NULL, false, 0);
    out[1] = nb_attention(x[0], x[1], x[2], NULL, true, 0.4); /* Tq < Tk: the last query sees every key */
    return 2;
}
static int f_attention_mask(nb_tensor **x, nb_tensor **out, nb_dtype dt) {
    (void)dt; /* q (2,3,Tq,d) against k, v broadcast over its first axis; mask (Tq, Tk) with a gradient */
    out[0] = nb_attention(x[0], x[1], nb_transpose(x[2], -1, -2), x[3], true, 0);
    return 1;
}
static int f_attention_keep(nb_tensor **x, nb_tensor **out, nb_dtype dt) {
    (void)dt; /* an i64 keep mask (1,Tk) broadcast over queries, and one (Tq,Tk) keeping about 3 keys in 4 */
    int64_t Tq = nb_shape(x[0])[1], Tk = nb_shape(x[1])[1];
    nb_tensor *row = nb_to(nb_gt(x[1], nb_scalar(nb_dtype_of(x[1]), -1.5)), NB_I64);
    nb_tensor *k1 = nb_slice(nb_slice(row, 0, 0, 1), 2, 0, 1);
    nb_tensor *m1 = nb_reshape(k1, 2, SH(1, Tk));
    double *keep = malloc(sizeof(double) * (size_t)(Tq * Tk));
    for (int64_t i = 0; i < Tq * Tk; i++) keep[i] = (i % Tk) == 0 || ((i * 7919) % 4) != 0;
    nb_tensor *m2 = nb_from_f64(NB_I64, 2, SH(Tq, Tk), keep);
    free(keep);
    out[0] = nb_attention(x[0], x[1], x[2], m1, false, 0);
    out[1] = nb_attention(x[0], x[1], x[2], m2, true, 0);
    return 2;
}
/* ---- convolution ------------------------------------------------------------------------------------- */
static int f_conv2d(nb_tensor **x, nb_tensor **out, nb_dtype dt) {
    (void)dt; /* groups 2, stride (1, 2), padding 1, with bias */
    out[0] = nb_conv2d(x[0], x[1], x[2], (nb_conv2d_opts){{1, 2}, {1, 1}, {1, 1}, 2});
    return 1;
}
static int f_conv2d_big(nb_tensor **x, nb_tensor **out, nb_dtype dt) {
    (void)dt; /* 33 images: the weight gradient's blocks of 8, across the two threads */
    out[0] = nb_conv2d(x[0], x[1], x[2], (nb_conv2d_opts){{1, 1}, {1, 1}, {1, 1}, 1});
    return 1;
}
static int f_conv2d_views(nb_tensor **x, nb_tensor **out, nb_dtype dt) {
    (void)dt; /* a transposed view as input; a pointwise kernel; a dilated one; the gradient ops as ops */
    nb_tensor *xt = nb_transpose(x[0], 2, 3);
    out[0] = nb_conv2d(xt, x[1], NULL, (nb_conv2d_opts){0});
    out[1] = nb_conv2d(xt, x[2], NULL, (nb_conv2d_opts){{2, 1}, {0, 2}, {2, 1}, 0});
    nb_tensor *g = out[1] ? nb_tanh(out[1]) : NULL;
    out[2] = nb_conv2d_input(nb_shape(xt), x[2], g, (nb_conv2d_opts){{2, 1}, {0, 2}, {2, 1}, 0});
    out[3] = nb_conv2d_weight(xt, nb_shape(x[2]), g, (nb_conv2d_opts){{2, 1}, {0, 2}, {2, 1}, 0});
    return 4;
}
static int f_pool(nb_tensor **x, nb_tensor **out, nb_dtype dt) {
    (void)dt; /* max (its index kernel, then gather) with padding and dilation on a view; average (a conv) */
    nb_tensor *xt = nb_transpose(x[0], 2, 3);
    out[0] = nb_max_pool2d(xt, (int[]){3, 2}, (nb_conv2d_opts){{2, 1}, {1, 1}, {1, 2}, 0});
    out[1] = nb_avg_pool2d(x[0], (int[]){2, 3}, (nb_conv2d_opts){{0, 0}, {1, 1}, {0, 0}, 0});
    out[2] = nb_global_avg_pool2d(x[0]);
    return 3;
}
static int f_batch_norm(nb_tensor **x, nb_tensor **out, nb_dtype dt) {
    (void)dt; /* (N, C, H, W) with gamma and beta; (N, C) of a transposed view without them */
    out[0] = nb_batch_norm(x[0], x[1], x[2], NULL, NULL, true, 0.1, 1e-5);
    out[1] = nb_batch_norm(nb_transpose(x[3], 0, 1), NULL, NULL, NULL, NULL, true, 0.1, 1e-5);
    return 2;
}
static int f_layer_norm(nb_tensor **x, nb_tensor **out, nb_dtype dt) {
    (void)dt;
    out[0] = nb_layer_norm(x[0], x[1], x[2], 1e-5);
    return 1;
}
static int f_layer_norm_plain(nb_tensor **x, nb_tensor **out, nb_dtype dt) {
    (void)dt;
    out[0] = nb_layer_norm(x[0], NULL, NULL, 1e-5);
    out[1] = nb_layer_norm(nb_transpose(x[0], 1, 2), NULL, NULL, 1e-5);
    return 2;
}
static int f_layer_norm_gamma(nb_tensor **x, nb_tensor **out, nb_dtype dt) {
    (void)dt;
    out[0] = nb_layer_norm(x[0], x[1], NULL, 1e-5);
    out[1] = nb_layer_norm(x[0], NULL, x[1], 1e-5);
    return 2;
}

/* ---- products ---------------------------------------------------------------------------------------- */
static int f_matmul(nb_tensor **x, nb_tensor **out, nb_dtype dt) { (void)dt; return OUT1(nb_matmul(x[0], x[1])); }
static int f_matmul_vec(nb_tensor **x, nb_tensor **out, nb_dtype dt) {
    (void)dt;
    out[0] = nb_matmul(x[0], x[1]); /* (33) @ (33, 7) */
    out[1] = nb_matmul(tr(x[1]), x[0]); /* (7, 33) @ (33) */
    out[2] = nb_matmul(x[0], x[0]);    /* (33) @ (33) */
    return 3;
}
static int f_matmul_t(nb_tensor **x, nb_tensor **out, nb_dtype dt) {
    (void)dt;
    out[0] = nb_matmul(tr(x[0]), tr(x[1]));
    out[1] = nb_matmul(nb_flip(tr(x[0]), 0), x[2]);
    return 2;
}
static int f_dense(nb_tensor **x, nb_tensor **out, nb_dtype dt) {
    (void)dt;
    out[0] = nb_dense(x[0], x[1], x[2], NB_ACT_NONE);
    out[1] = nb_dense(x[0], x[1], x[2], NB_ACT_RELU);
    out[2] = nb_dense(x[0], x[1], x[2], NB_ACT_TANH);
    out[3] = nb_dense(x[0], x[1], x[2], NB_ACT_SIGMOID);
    out[4] = nb_dense(x[0], x[1], NULL, NB_ACT_RELU);
    out[5] = nb_dense(x[0], x[1], NULL, NB_ACT_SIGMOID);
    return 6;
}
static int f_dense_views(nb_tensor **x, nb_tensor **out, nb_dtype dt) {
    (void)dt;
    out[0] = nb_dense(tr(x[0]), x[1], x[2], NB_ACT_RELU);
    out[1] = nb_dense(tr(x[0]), x[1], x[2], NB_ACT_TANH);
    out[2] = nb_dense(nb_unsqueeze(tr(x[0]), 0), x[1], x[2], NB_ACT_NONE);
    return 3;
}
static int f_linalg(nb_tensor **x, nb_tensor **out, nb_dtype dt) {
    int n = (int)nb_shape(x[0])[nb_rank(x[0]) - 1];
    double eye[49] = {0};
    for (int i = 0; i < n; i++) eye[i * n + i] = 5.0;
    nb_tensor *a = nb_add(x[0], nb_from_f64(dt, 2, SH(n, n), eye)); /* diagonally dominant: det > 0 */
    out[0] = nb_inverse(a);
    out[1] = nb_det(a);
    out[2] = nb_logdet(a);
    return 3;
}

/* ---- indexing, layout -------------------------------------------------------------------------------- */
static const double sel[] = {2, 0, -1, 6, 2, 3, 1};
static int f_index(nb_tensor **x, nb_tensor **out, nb_dtype dt) {
    (void)dt;
    double g[7 * 5];
    for (int i = 0; i < 35; i++) g[i] = (double)((i * 7 + 3) % 5) - (i % 3 == 0 ? 5 : 0);
    out[0] = nb_index_select(x[0], 0, idx1(7, sel));
    out[1] = nb_index_select(tr(x[0]), 1, idx1(7, sel));
    out[2] = nb_gather(x[0], 1, nb_from_f64(NB_I64, 2, SH(7, 5), g));
    out[3] = nb_gather(x[0], 0, nb_from_f64(NB_I64, 2, SH(5, 5), g));
    return 4;
}
/* Gradients as ops: their graphs hold slice_backward, index_add and scatter_add (and the rules of
   index_select and gather's backward run at first order on them). */
static int f_grad_ops(nb_tensor **x, nb_tensor **out, nb_dtype dt) {
    (void)dt;
    nb_tensor *a = x[0];
    double g[7 * 5];
    for (int i = 0; i < 35; i++) g[i] = (double)((i * 3 + 1) % 5);
    nb_tensor *s = nb_slice(a, 0, 1, 5);
    nb_tensor *i = nb_index_select(a, 0, idx1(7, sel));
    nb_tensor *gg = nb_gather(a, 1, nb_from_f64(NB_I64, 2, SH(7, 5), g));
    nb_tensor *inner =
        nb_add(nb_add(nb_sum(nb_mul(s, s)), nb_sum(nb_mul(i, i))), nb_sum(nb_mul(gg, nb_exp(gg))));
    return OUT1(nb_gradient(inner, a, NB_CREATE_GRAPH));
}
static int f_pad(nb_tensor **x, nb_tensor **out, nb_dtype dt) {
    (void)dt;
    out[0] = nb_pad(x[0], SH(1, 0, 2, 3), 0.5);
    out[1] = nb_pad(tr(x[0]), SH(0, 2, 0, 0), -1.0);
    return 2;
}
static int f_concat(nb_tensor **x, nb_tensor **out, nb_dtype dt) {
    (void)dt;
    nb_tensor *parts[3];
    out[0] = nb_concat(3, (nb_tensor *[]){x[0], tr(x[1]), x[0]}, 1);
    out[1] = nb_stack(2, (nb_tensor *[]){x[0], nb_flip(x[0], 0)}, 1);
    CHECK(nb_split(x[2], 0, 3, SH(1, 4, 2), parts) == 0);
    out[2] = nb_mul(parts[1], parts[1]);
    out[3] = nb_add(parts[0], parts[2]);
    return 4;
}
static int f_views(nb_tensor **x, nb_tensor **out, nb_dtype dt) {
    (void)dt;
    nb_tensor *a = nb_reshape(x[0], 3, SH(5, 3, 11));
    a = nb_permute(a, AX(2, 0, 1));
    a = nb_slice(a, 2, 1, 3);
    a = nb_flip(a, 1);
    out[0] = nb_clone(a);
    out[1] = nb_expand(nb_slice(x[1], 0, 0, 1), 3, SH(2, 4, 7));
    out[2] = nb_reshape(tr(x[1]), 1, SH(-1)); /* a copy: the view is not contiguous */
    out[3] = nb_contiguous(nb_squeeze(nb_unsqueeze(tr(x[1]), 0), 0));
    out[4] = nb_to_device(x[1], nb_cpu());
    return 5;
}
static int f_cast(nb_tensor **x, nb_tensor **out, nb_dtype dt) {
    nb_dtype other = dt == NB_F32 ? NB_F64 : NB_F32;
    out[0] = nb_to(x[0], other);
    out[1] = nb_to(nb_to(tr(x[0]), other), dt);
    out[2] = nb_to(x[0], dt);
    return 3;
}
static int f_dropout(nb_tensor **x, nb_tensor **out, nb_dtype dt) {
    (void)dt;
    nb_rng r;
    nb_rng_seed(&r, 1234);
    out[0] = nb_dropout(x[0], 0.3, true, &r);
    out[1] = nb_dropout(tr(x[0]), 0.5, true, &r);
    return 2;
}
static int f_custom(nb_tensor **x, nb_tensor **out, nb_dtype dt) {
    (void)dt;
    return OUT1(nb_custom("cube", 1, x, cube_fw, cube_bw, NULL));
}
static int f_composites(nb_tensor **x, nb_tensor **out, nb_dtype dt) {
    (void)dt;
    out[0] = nb_maximum(x[0], x[1]);
    out[1] = nb_minimum(x[0], nb_clamp(x[1], -0.5, 0.5));
    out[2] = nb_logsumexp(x[0], 1, AX(1), false);
    out[3] = nb_var_axes(x[0], 1, AX(0), 1, true);
    out[4] = nb_norm(x[1]);
    out[5] = nb_einsum("ij,kj->ik", 2, (nb_tensor *[]){x[0], x[1]});
    return 6;
}

/* ---- in place, optimizers, finiteness (no gradients) ------------------------------------------------- */
static int f_inplace(nb_tensor **x, nb_tensor **out, nb_dtype dt) {
    (void)dt;
    nb_tensor *d = nb_clone(x[0]);
    int r = 0;
    r |= nb_add_(d, x[1]);                    /* (1, 130) broadcast */
    r |= nb_mul_(d, nb_flip(x[0], 0));
    r |= nb_sub_(nb_slice(d, 1, 3, 90), nb_slice(x[0], 1, 10, 97));
    r |= nb_scale_(d, -0.75);
    r |= nb_axpy_(d, 0.3, x[0]);
    r |= nb_fill_(nb_slice(d, 0, 2, 4), 1.25);
    nb_tensor *c = nb_clone(x[2]);
    r |= nb_copy_(nb_slice(c, 0, 1, 3), nb_slice(tr(x[2]), 0, 0, 2));
    CHECK(r == 0);
    return OUT2(d, c);
}
static int f_sgd(nb_tensor **x, nb_tensor **out, nb_dtype dt) {
    (void)dt;
    nb_tensor *p = nb_clone(x[0]), *buf = nb_clone(x[2]), *q = nb_clone(x[0]), *qb = nb_clone(x[2]);
    nb_tensor *p0 = nb_clone(x[0]);
    int r = 0;
    r |= nb_sgd_update_(p0, x[1], NULL, 0.01, 0.0, 0.0, false, false);
    r |= nb_sgd_update_(p, x[1], buf, 0.01, 0.9, 1e-2, false, false);
    r |= nb_sgd_update_(p, x[1], buf, 0.01, 0.9, 1e-2, false, false);
    r |= nb_sgd_update_(q, x[1], qb, 0.03, 0.8, 0.0, true, true);
    r |= nb_sgd_update_(q, x[1], qb, 0.03, 0.8, 5e-3, true, false);
    CHECK(r == 0);
    out[0] = p0, out[1] = p, out[2] = buf, out[3] = q, out[4] = qb;
    return 5;
}
static int f_adam(nb_tensor **x, nb_tensor **out, nb_dtype dt) {
    nb_tensor *p = nb_clone(x[0]), *m = nb_full(dt, 2, nb_shape(x[0]), 0), *v = nb_full(dt, 2, nb_shape(x[0]), 0);
    nb_tensor *q = nb_clone(x[0]), *qm = nb_full(dt, 2, nb_shape(x[0]), 0), *qv = nb_full(dt, 2, nb_shape(x[0]), 0);
    int r = 0;
    for (int t = 1; t <= 3; t++) {
        r |= nb_adam_update_(p, x[1], m, v, 1e-3, 0.9, 0.999, 1e-8, 1e-2, false, t);
        r |= nb_adam_update_(q, x[1], qm, qv, 1e-3, 0.9, 0.99, 1e-6, 1e-2, true, t);
    }
    CHECK(r == 0);
    out[0] = p, out[1] = m, out[2] = v, out[3] = q, out[4] = qm, out[5] = qv;
    return 6;
}
static int f_all_finite(nb_tensor **x, nb_tensor **out, nb_dtype dt) {
    nb_tensor *d = nb_clone(x[0]);
    int64_t w1 = -7, w2 = -7, w3 = -7;
    int r1 = nb_all_finite(d, &w1);
    CHECK(nb_fill_(nb_slice(nb_slice(d, 0, 200, 201), 1, 100, 101), INFINITY) == 0);
    int r2 = nb_all_finite(d, &w2);
    CHECK(nb_fill_(nb_slice(nb_slice(d, 0, 299, 300), 1, 3, 4), NAN) == 0);
    int r3 = nb_all_finite(nb_flip(d, 0), &w3);
    CHECK(r1 == 1 && r2 == 0 && r3 == 0 && w2 == 200 * 257 + 100 && w3 == 3);
    out[0] = nb_from_f64(dt, 1, SH(6), (double[]){r1, (double)w1, r2, (double)w2, r3, (double)w3});
    out[1] = d;
    return 2;
}

/* ---- transformer ops --------------------------------------------------------------------------------- */
UNARY(u_gelu_tanh, nb_gelu_tanh(a))
/* Random fills: the same stream on both sets (an odd count, a large one, one element). */
static int f_random(nb_tensor **x, nb_tensor **out, nb_dtype dt) {
    (void)x;
    nb_rng r;
    nb_rng_seed(&r, 2024);
    out[0] = nb_randn(dt, 2, SH(33, 17), &r);
    out[1] = nb_rand(dt, 2, SH(300, 257), &r);
    out[2] = nb_randn(dt, 1, SH(1), &r);
    out[3] = nb_randn(dt, 2, SH(300, 257), &r);
    return 4;
}
static int f_arange(nb_tensor **x, nb_tensor **out, nb_dtype dt) {
    (void)x;
    out[0] = nb_arange(dt, -3, 7.5, 0.25);
    out[1] = nb_arange(NB_I64, 10, -7, -3);
    out[2] = nb_arange(dt, 0, 130, 1);
    return 3;
}
static int f_tri(nb_tensor **x, nb_tensor **out, nb_dtype dt) {
    (void)dt;
    out[0] = nb_tril(x[0], 0);
    out[1] = nb_triu(tr(x[0]), 1);
    out[2] = nb_tril(x[1], -2);
    out[3] = nb_triu(x[1], 3);
    return 4;
}
static int f_masked_fill(nb_tensor **x, nb_tensor **out, nb_dtype dt) {
    nb_tensor *m = nb_gt(x[1], nb_scalar(dt, 0)); /* (1, 33): broadcast along the rows */
    out[0] = nb_masked_fill(x[0], m, -INFINITY);
    out[1] = nb_masked_fill(tr(x[0]), nb_to(nb_gt(x[2], nb_scalar(dt, 0.5)), NB_I64), 2.5);
    return 2;
}
static int f_argmax(nb_tensor **x, nb_tensor **out, nb_dtype dt) {
    (void)dt;
    out[0] = nb_argmax(x[0], 1, false);
    out[1] = nb_argmax(tr(x[0]), 0, true);
    out[2] = nb_argmax(nb_sign(x[0]), 0, false); /* ties: the first index */
    return 3;
}
static int f_topk(nb_tensor **x, nb_tensor **out, nb_dtype dt) {
    (void)dt;
    if (nb_topk(x[0], 5, 1, true, &out[0], &out[1]) != 0) return 0;
    if (nb_topk(tr(x[0]), 3, 0, false, &out[2], &out[3]) != 0) return 0;
    if (nb_topk(nb_sign(x[0]), 4, 0, true, NULL, &out[4]) != 0) return 0; /* ties: the lower index first */
    return 5;
}
static int f_multinomial(nb_tensor **x, nb_tensor **out, nb_dtype dt) {
    nb_rng r;
    nb_rng_seed(&r, 77);
    nb_tensor *p = nb_softmax(x[0], 1);
    out[0] = nb_multinomial(p, 9, &r);
    out[1] = nb_multinomial(nb_relu(nb_slice(x[0], 0, 0, 1)), 20, &r); /* zeros: never drawn */
    out[2] = nb_multinomial(nb_reshape(nb_scalar(dt, 1), 1, SH(1)), 3, &r);
    return 3;
}

/* ---- the cases --------------------------------------------------------------------------------------- */
/* Bounds. Every reduction kernel accumulates in double, so an f32 reduction is within an f32 rounding of
   the exact value in both sets (NORM(2) covers two roundings); an f64 one within n eps sum|terms| of it,
   n the reduced length. The backward of a broadcast operand sums the gradient back (a reduction). */
#define E_BITS B_BITS, B_BITS
static const bo_case cases[] = {
    /* binary: bit-identical forward; backward bit-identical unless an operand was broadcast (sum_to) */
    {"add/bcast", f_add_bcast, 2, {I2(33, 17), I1(17)}, B_BITS, B_NORM(2 * 33), BOTH},
    {"add/views", f_add_views, 2, {I2(17, 33), I2(33, 20)}, E_BITS, BOTH},
    {"sub/bcast", f_sub, 2, {I3(7, 1, 5), I2(3, 1)}, B_BITS, B_NORM(2 * 7 * 5), BOTH},
    {"mul/flip", f_mul_flip, 2, {I2(130, 33), I2(130, 33)}, E_BITS, BOTH},
    {"mul/big", b_big, 2, {I2(300, 257), I2R(300, 257, 0.5, 2)}, E_BITS, BOTH},
    {"div/bcast", f_div, 2, {I2(5, 33), I2R(5, 1, 0.5, 2)}, B_BITS, B_NORM(2 * 33), BOTH},
    {"pow_t/bcast", f_pow_t, 2, {I2R(17, 5, 0.5, 2), I1(5)}, B_BITS, B_NORM(2 * 17), BOTH},
    {"where/views", f_where, 3, {I2(7, 33), I2(7, 33), I2(33, 7)}, E_BITS, BOTH},
    {"compare/views", f_compare, 3, {I2C(7, 33), I2C(7, 33), I2C(33, 7)}, E_BITS, BOTH},
    {"mixed_dtypes/bcast", f_mixed, 2, {I2(5, 17), I2(5, 17)}, B_BITS, B_NORM(2 * 85), BOTH},
    /* unary: f32 within 1 ulp (the fast set's vmath and libm against the reference's double maths);
       f64 within a few ulps (both the C library, the same functions: in practice bit-identical) */
    {"neg", u_neg, 1, {I2(17, 33)}, E_BITS, BOTH},
    {"scale", u_scale, 1, {I2(17, 33)}, E_BITS, BOTH},
    {"add_scalar", u_add_scalar, 1, {I2(17, 33)}, E_BITS, BOTH},
    {"pow/3", u_pow3, 1, {I2(17, 33)}, B_ULP(1), B_NORM(4), BOTH},
    {"pow/2", u_pow2, 1, {I2(17, 33)}, B_ULP(1), B_NORM(4), BOTH},
    {"pow/-1.5", u_pow_m15, 1, {I2R(17, 33, 0.3, 3)}, B_ULP(1), B_NORM(4), BOTH},
    {"pow/0.5", u_pow_half, 1, {I2R(17, 33, 0.3, 3)}, B_ULP(1), B_NORM(4), BOTH},
    {"exp", u_exp, 1, {I2R(17, 33, -10, 10)}, B_ULP(1), B_NORM(4), BOTH},
    {"log", u_log, 1, {I2R(17, 33, 0.01, 50)}, B_ULP(1), B_NORM(4), BOTH},
    {"sqrt", u_sqrt, 1, {I2R(17, 33, 0.01, 50)}, B_ULP(1), B_NORM(4), BOTH},
    {"abs", u_abs, 1, {I2(17, 33)}, E_BITS, BOTH},
    {"sin", u_sin, 1, {I2R(17, 33, -6, 6)}, B_ULP(1), B_NORM(4), BOTH},
    {"cos", u_cos, 1, {I2R(17, 33, -6, 6)}, B_ULP(1), B_NORM(4), BOTH},
    {"tanh", u_tanh, 1, {I2R(17, 33, -5, 5)}, B_ULP(1), B_NORM(4), BOTH},
    {"sigmoid", u_sigmoid, 1, {I2R(17, 33, -12, 12)}, B_ULP(1), B_NORM(4), BOTH},
    {"relu", u_relu, 1, {I2(17, 33)}, E_BITS, BOTH},
    {"leaky_relu", u_leaky, 1, {I2(17, 33)}, E_BITS, BOTH},
    {"gelu", u_gelu, 1, {I2R(17, 33, -10, 6)}, B_ULP(1), B_NORM(8), BOTH}, /* x < -5: where 1 + erf cancels */
    {"erf", u_erf, 1, {I2R(17, 33, -4, 4)}, B_ULP(1), B_NORM(4), BOTH},
    {"sign", u_sign, 1, {I2(17, 33)}, E_BITS, BOTH},
    {"log1p", u_log1p, 1, {I2R(17, 33, -0.9, 20)}, B_ULP(1), B_NORM(4), BOTH},
    {"expm1", u_expm1, 1, {I2R(17, 33, -5, 5)}, B_ULP(1), B_NORM(4), BOTH},
    {"softplus", u_softplus, 1, {I2R(17, 33, -25, 25)}, B_ULP(2), B_NORM(4), BOTH},
    {"unary/big", u_big, 1, {I2R(300, 257, -4, 4)}, B_ULP(1), B_NORM(4), BOTH},
    /* reductions: NORM(2) in f32, NORM(n) in f64 with n the reduced length */
    {"sum/2d", f_sum_axis, 1, {I2(33, 130)}, B_NORM(130 * 33), B_BITS, BOTH},
    {"sum/3d", f_sum_3d, 1, {I3(7, 1, 17)}, B_NORM(7 * 17), B_BITS, BOTH},
    {"sum/big", f_sum_big, 1, {I2(300, 257)}, B_NORM(300 * 257), B_BITS, BOTH},
    {"mean", f_mean, 1, {I2(33, 17)}, B_NORM(2 * 33 * 17), B_BITS, BOTH},
    {"max", f_max, 1, {I2(17, 130)}, E_BITS, BOTH},
    {"max/ties", f_max_ties, 2, {I2(17, 33), I2C(17, 33)}, B_BITS, B_NORM(4), BOTH},
    {"cumsum", f_cumsum, 1, {I2(7, 130)}, B_NORM(130), B_NORM(130), BOTH},
    /* rows */
    {"softmax", f_softmax, 1, {I2R(7, 33, -8, 8)}, B_NORM(4 * 33), B_NORM(8 * 33), BOTH},
    {"log_softmax", f_log_softmax, 1, {I2R(7, 33, -8, 8)}, B_NORM(4 * 33), B_NORM(8 * 33), BOTH},
    {"log_softmax/big", f_log_softmax, 1, {I2R(300, 257, -8, 8)}, B_NORM(4 * 300), B_NORM(8 * 300), BOTH},
    {"cross_entropy", f_cross_entropy, 2, {I2R(17, 33, -5, 5), I2R(33, 17, -5, 5)}, B_NORM(4 * 17 * 33),
     B_NORM(8 * 33), BOTH},
    {"cross_entropy_ex", f_cross_entropy_ex, 1, {I2R(17, 33, -5, 5)}, B_NORM(4 * 17 * 33), B_NORM(8 * 33), BOTH},
    {"nll_loss", f_nll, 1, {I2R(17, 33, -5, 5)}, B_NORM(4 * 17 * 33), B_NORM(8 * 33), BOTH},
    {"layer_norm", f_layer_norm, 3, {I2(17, 33), I1(33), I1(33)}, B_NORM(8 * 33), B_NORM(8 * (17 + 33)), BOTH},
    {"layer_norm/plain_3d", f_layer_norm_plain, 1, {I3(3, 5, 130)}, B_NORM(8 * 130), B_NORM(8 * (15 + 130)), BOTH},
    {"layer_norm/gamma_beta", f_layer_norm_gamma, 2, {I2(33, 7), I1(7)}, B_NORM(8 * 7), B_NORM(8 * (33 + 7)), BOTH},
    {"layer_norm/big", f_layer_norm, 3, {I2(300, 257), I1(257), I1(257)}, B_NORM(8 * 257), B_NORM(8 * (300 + 257)),
     BOTH},
    /* attention: scores of length d, softmax and weighted sums over Tk keys (f32 in f32), the backward's sums over
       Tq queries */
    {"attention", f_attention, 3, {I3(3, 37, 5), I3(3, 70, 5), I3(3, 70, 7)}, B_NORM(4 * (5 + 70)),
     B_NORM(4 * (5 + 70 + 37)), BOTH},
    {"attention/mask_bcast", f_attention_mask, 4, {I4(2, 3, 33, 16), I3(3, 70, 16), I3(3, 9, 70), I2(33, 70)},
     B_NORM(4 * (16 + 70)), B_NORM(4 * (16 + 70 + 33)), BOTH},
    {"attention/keep", f_attention_keep, 3, {I3(2, 40, 8), I3(2, 70, 8), I3(2, 70, 8)}, B_NORM(4 * (8 + 70)),
     B_NORM(4 * (8 + 70 + 40)), BOTH},
    {"attention/big", f_attention, 3, {I3(4, 100, 32), I3(4, 130, 32), I3(4, 130, 32)}, B_NORM(4 * (32 + 130)),
     B_NORM(4 * (32 + 130 + 100)), BOTH},
    /* convolution: f32 sums of C/G kH kW terms (forward), O/G kH kW (input gradient) and N H' W' (weight
       gradient) in f32 */
    {"batch_norm", f_batch_norm, 4, {I4(7, 5, 6, 9), I1(5), I1(5), I2(33, 17)}, B_NORM(8), B_NORM(8 * 7 * 54), BOTH},
    {"conv2d", f_conv2d, 3, {I4(5, 6, 13, 11), I4(8, 3, 3, 3), I1(8)}, B_NORM(2 * 27), B_NORM(2 * 5 * 13 * 6),
     BOTH},
    {"conv2d/big", f_conv2d_big, 3, {I4(33, 8, 12, 10), I4(16, 8, 3, 3), I1(16)}, B_NORM(2 * 72),
     B_NORM(2 * 33 * 120), BOTH},
    {"conv2d/views_grad_ops", f_conv2d_views, 3, {I4(3, 4, 9, 7), I4(5, 4, 1, 1), I4(6, 4, 2, 3)}, B_NORM(4 * 3 * 63),
     B_NORM(8 * 3 * 63), BOTH},
    {"pool2d", f_pool, 1, {I4(7, 5, 13, 11)}, B_NORM(4 * 143), B_NORM(8 * 143), BOTH},
    /* products: NORM(2k) with k the inner length (f32 gemm accumulates in f32) */
    {"matmul", f_matmul, 2, {I2(17, 33), I2(33, 7)}, B_NORM(2 * 33), B_NORM(2 * 17), BOTH},
    {"matmul/vectors", f_matmul_vec, 2, {I1(33), I2(33, 7)}, B_NORM(2 * 33), B_NORM(2 * 33), BOTH},
    {"matmul/batched", f_matmul, 2, {I4(3, 1, 5, 17), I3(4, 17, 7)}, B_NORM(2 * 17), B_NORM(2 * 4 * 7), BOTH},
    {"matmul/transposed", f_matmul_t, 3, {I2(33, 17), I2(7, 33), I2(33, 5)}, B_NORM(2 * 33), B_NORM(2 * 17), BOTH},
    {"matmul/big", f_matmul, 2, {I2(300, 257), I2(257, 33)}, B_NORM(2 * 257), B_NORM(2 * 300), BOTH},
    {"dense", f_dense, 3, {I2(17, 33), I2(7, 33), I1(7)}, B_NORM(2 * 33), B_NORM(2 * 6 * 17), BOTH},
    {"dense/views", f_dense_views, 3, {I2(33, 17), I2(5, 33), I1(5)}, B_NORM(2 * 33), B_NORM(2 * 3 * 17), BOTH},
    {"dense/big", f_dense, 3, {I2(300, 257), I2(9, 257), I1(9)}, B_NORM(2 * 257), B_NORM(2 * 6 * 300), BOTH},
    /* LU in double, the same algorithm: NORM(n^2) */
    {"linalg", f_linalg, 1, {I2R(7, 7, -0.5, 0.5)}, B_NORM(49), B_NORM(2 * 49), BOTH},
    {"linalg/batched", f_linalg, 1, {I3R(3, 5, 5, -0.5, 0.5)}, B_NORM(25), B_NORM(2 * 25), BOTH},
    /* moves */
    {"index", f_index, 1, {I2(7, 5)}, B_BITS, B_BITS, BOTH},
    {"grad_ops", f_grad_ops, 1, {I2(7, 5)}, B_NORM(4), B_NORM(8), BOTH},
    {"pad", f_pad, 1, {I2(7, 33)}, E_BITS, BOTH},
    {"concat_stack_split", f_concat, 3, {I2(5, 17), I2(3, 5), I2(7, 33)}, E_BITS, BOTH},
    {"views", f_views, 2, {I2(15, 11), I2(4, 7)}, E_BITS, BOTH},
    {"cast", f_cast, 1, {I2(17, 33)}, E_BITS, BOTH},
    {"dropout", f_dropout, 1, {I2(33, 130)}, E_BITS, BOTH},
    {"custom", f_custom, 1, {I2(17, 33)}, E_BITS, BOTH},
    {"composites", f_composites, 2, {I2(17, 33), I2(1, 33)}, B_NORM(4 * 33), B_NORM(8 * 33), BOTH},
    /* no gradients */
    {"inplace", f_inplace, 3, {I2C(7, 130), I2C(1, 130), I2C(5, 5)}, E_BITS, BOTH},
    {"sgd_update", f_sgd, 3, {I2C(300, 257), I2C(300, 257), I2C(300, 257)}, E_BITS, BOTH},
    {"adam_update", f_adam, 2, {I2C(300, 257), I2C(300, 257)}, E_BITS, BOTH},
    {"all_finite", f_all_finite, 1, {I2C(300, 257)}, E_BITS, BOTH},
    /* transformer ops: gelu_tanh as the unary ops (its fused f32 gradient takes e^(-2u) from the f32 exp in the
       fast set: normwise);
       random fills, arange, tril/triu, masked_fill (composites of where) and argmax bit-identical */
    {"gelu_tanh", u_gelu_tanh, 1, {I2R(17, 33, -12, 8)}, B_ULP(1), B_NORM(8), BOTH},
    {"gelu_tanh/big", u_gelu_tanh, 1, {I2R(300, 257, -6, 6)}, B_ULP(1), B_NORM(8), BOTH},
    {"randn_rand", f_random, 1, {I2C(1, 1)}, E_BITS, BOTH},
    {"arange", f_arange, 1, {I2C(1, 1)}, E_BITS, BOTH},
    {"tril_triu", f_tri, 2, {I2(17, 33), I3(3, 7, 5)}, E_BITS, BOTH},
    {"masked_fill", f_masked_fill, 3, {I2(7, 33), I2C(1, 33), I2C(33, 7)}, E_BITS, BOTH},
    {"argmax", f_argmax, 1, {I2C(17, 130)}, E_BITS, BOTH},
    {"topk", f_topk, 1, {I2(17, 33)}, E_BITS, BOTH},
    {"multinomial", f_multinomial, 1, {I2C(17, 33)}, E_BITS, BOTH},
};
#define NCASES ((int)(sizeof cases / sizeof cases[0]))

/* ---- running and comparing --------------------------------------------------------------------------- */
typedef struct {
    int n; /* tensors: outputs, then gradients */
    int nout;
    double *v[BO_MAX_OUT + BO_MAX_IN];
    int64_t len[BO_MAX_OUT + BO_MAX_IN];
    nb_dtype dt[BO_MAX_OUT + BO_MAX_IN];
} bo_result;

static void result_free(bo_result *r) {
    for (int i = 0; i < r->n; i++) free(r->v[i]);
    memset(r, 0, sizeof *r);
}

static double *read_all(nb_tensor *t, int64_t *len) {
    int64_t n = nb_numel(t);
    double *v = (double *)malloc(sizeof(double) * (size_t)(n > 0 ? n : 1));
    *len = n;
    if (v && nb_read_f64(t, v, n) != n) *len = -1;
    return v;
}

static uint64_t name_seed(const char *s, nb_dtype dt) {
    uint64_t h = 1469598103934665603ull ^ (uint64_t)dt;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

static bool op_seen[NBI_OP_COUNT];

/* One run of case c in dtype dt on kernel set be: outputs and every input's gradient into *r. */
static int run_on(const bo_case *c, nb_dtype dt, const nbi_backend *be, bo_result *r) {
    memset(r, 0, sizeof *r);
    nb_clear_error();
    nbi_use_backend(be);
    nb_scope_begin();
    th_seed(name_seed(c->name, dt));
    nb_tensor *x[BO_MAX_IN], *wrt[BO_MAX_IN], *out[BO_MAX_OUT] = {0}, *g[BO_MAX_IN] = {0};
    int nw = 0, rc = -1;
    for (int i = 0; i < c->n; i++) {
        x[i] = th_rand(dt, c->in[i].rank, c->in[i].shape, c->in[i].lo, c->in[i].hi);
        if (c->in[i].rg) {
            nb_set_requires_grad(x[i], true);
            wrt[nw++] = x[i];
        }
    }
    int nout = c->fn(x, out, dt);
    if (nout < 1) goto done;
    for (int k = 0; k < nout; k++)
        if (!out[k]) goto done;
    collect_ops(nout, out, op_seen);
    nb_tensor *loss = NULL;
    for (int k = 0; k < nout; k++) {
        if (!nb_requires_grad(out[k])) continue;
        nb_tensor *w = th_rand(nb_dtype_of(out[k]), nb_rank(out[k]), nb_shape(out[k]), -1, 1);
        nb_tensor *term = nb_sum(nb_mul(w, out[k]));
        loss = loss ? nb_add(loss, term) : term;
    }
    if (!loss) nw = 0; /* no output depends on an input through a graph (sign, comparisons) */
    if (nw && nb_gradients(loss, NULL, nw, wrt, 0, g) != 0) goto done;
    r->nout = nout;
    for (int k = 0; k < nout + nw; k++) {
        nb_tensor *t = k < nout ? out[k] : g[k - nout];
        r->dt[r->n] = nb_dtype_of(t);
        r->v[r->n] = read_all(t, &r->len[r->n]);
        if (!r->v[r->n] || r->len[r->n] < 0) goto done;
        r->n++;
    }
    rc = 0;
done:
    if (rc) fprintf(stderr, "%s (%s) on %s: %s\n", c->name, dt == NB_F32 ? "f32" : "f64", be->name,
                    nb_last_error() ? nb_last_error() : "failed");
    nb_scope_end();
    return rc;
}

/* The ordered integer of a float (so that adjacent floats differ by 1). */
static int64_t ord32(float f) {
    int32_t i;
    memcpy(&i, &f, 4);
    return i < 0 ? (int64_t)INT32_MIN - i : i;
}
static int64_t ord64(double d) {
    int64_t i;
    memcpy(&i, &d, 8);
    return i < 0 ? INT64_MIN - i : i;
}

typedef struct {
    double abs, rel, ratio; /* the largest |fast - ref|, |fast - ref| / |ref|, and difference / bound */
    double ulps;            /* ULP: the largest distance in ulps */
    int64_t bad;
} bo_stat;

static void compare(const char *what, const double *ref, const double *fast, int64_t n, nb_dtype dt, bo_bound b,
                    bo_stat *st) {
    double eps = dt == NB_F32 ? FLT_EPSILON : DBL_EPSILON, maxref = 0;
    for (int64_t i = 0; i < n; i++)
        if (isfinite(ref[i]) && fabs(ref[i]) > maxref) maxref = fabs(ref[i]);
    for (int64_t i = 0; i < n; i++) {
        double a = ref[i], f = fast[i], d = fabs(f - a);
        bool same = memcmp(&a, &f, sizeof a) == 0, ok;
        if (!same && (isnan(a) || isnan(f) || isinf(a) || isinf(f))) {
            ok = false; /* special values must agree exactly (NaN meets NaN by its bits) */
            d = INFINITY;
        } else if (b.mode == BITS) {
            ok = same;
            if (!same && st->ratio < INFINITY) st->ratio = INFINITY;
        } else if (b.mode == ULP) {
            double u = dt == NB_F32 ? fabs((double)(ord32((float)f) - ord32((float)a)))
                                    : fabs((double)(ord64(f) - ord64(a)));
            if (u > st->ulps) st->ulps = u;
            ok = u <= b.k;
            if (u / b.k > st->ratio) st->ratio = u / b.k;
        } else {
            double allowed = b.k * eps * (maxref > 0 ? maxref : 1);
            ok = d <= allowed;
            if (d / allowed > st->ratio) st->ratio = d / allowed;
        }
        if (d > st->abs) st->abs = d;
        if (a != 0 && d / fabs(a) > st->rel) st->rel = d / fabs(a);
        if (!ok && st->bad++ < 3)
            fprintf(stderr, "  %s element %lld: reference %.17g, fast %.17g\n", what, (long long)i, a, f);
    }
}

/* The summary per group and dtype: the largest differences of its cases. */
typedef struct {
    char group[40];
    nb_dtype dt;
    bo_bound fwd, bwd;
    bo_stat f, b;
    bool has_bwd;
} bo_group;
static bo_group groups[128];
static int ngroups;

/* BITS < ULP(k) < NORM(k), then by k. */
static bool looser(bo_bound a, bo_bound b) { return a.mode != b.mode ? a.mode > b.mode : a.k > b.k; }

static void merge(bo_stat *into, const bo_stat *s) {
    if (s->abs > into->abs) into->abs = s->abs;
    if (s->rel > into->rel) into->rel = s->rel;
    if (s->ratio > into->ratio) into->ratio = s->ratio;
    if (s->ulps > into->ulps) into->ulps = s->ulps;
    into->bad += s->bad;
}

static const char *bound_str(bo_bound b, char *buf, size_t cap) {
    if (b.mode == BITS)
        snprintf(buf, cap, "bits");
    else if (b.mode == ULP)
        snprintf(buf, cap, "%g ulp", b.k);
    else
        snprintf(buf, cap, "norm %g eps", b.k);
    return buf;
}

static void run_case(const bo_case *c, nb_dtype dt) {
    const char *dn = dt == NB_F32 ? "f32" : "f64";
    bo_result ref, fast;
    int r1 = run_on(c, dt, nbi_backend_reference(), &ref);
    int r2 = run_on(c, dt, nbi_backend_cpu(), &fast);
    CHECK(r1 == 0 && r2 == 0);
    CHECK(ref.n == fast.n);
    bo_stat sf = {0}, sb = {0};
    for (int k = 0; r1 == 0 && r2 == 0 && k < ref.n && k < fast.n; k++) {
        CHECK(ref.len[k] == fast.len[k] && ref.dt[k] == fast.dt[k]);
        if (ref.len[k] != fast.len[k]) continue;
        char what[80];
        bool out = k < ref.nout;
        snprintf(what, sizeof what, "%s (%s) %s %d", c->name, dn, out ? "output" : "gradient",
                 out ? k : k - ref.nout);
        int64_t bad0 = (out ? sf : sb).bad;
        /* a cast's output has the other dtype: its bound is in that dtype's eps */
        compare(what, ref.v[k], fast.v[k], ref.len[k], ref.dt[k] == NB_I64 ? dt : ref.dt[k], out ? c->fwd : c->bwd,
                out ? &sf : &sb);
        if ((out ? sf : sb).bad != bad0) {
            th_cur_failed++;
            fprintf(stderr, "  in %s\n", what);
        }
    }
    char b1[40], b2[40];
    bool has_bwd = ref.n > ref.nout;
    printf("%-24s %s  fwd: max abs %.3g rel %.3g (bound %s, %.2f of it)", c->name, dn, sf.abs, sf.rel,
           bound_str(c->fwd, b1, sizeof b1), sf.ratio);
    if (c->fwd.mode == ULP) printf(" [%g ulp]", sf.ulps);
    if (has_bwd)
        printf("  bwd: max abs %.3g rel %.3g (bound %s, %.2f of it)", sb.abs, sb.rel, bound_str(c->bwd, b2, sizeof b2),
               sb.ratio);
    printf("\n");
    /* the group */
    char grp[40];
    snprintf(grp, sizeof grp, "%s", c->name);
    char *slash = strchr(grp, '/');
    if (slash) *slash = 0;
    bo_group *g = NULL;
    for (int i = 0; i < ngroups && !g; i++)
        if (!strcmp(groups[i].group, grp) && groups[i].dt == dt) g = &groups[i];
    if (!g && ngroups < 128) {
        g = &groups[ngroups++];
        memset(g, 0, sizeof *g);
        snprintf(g->group, sizeof g->group, "%s", grp);
        g->dt = dt;
        g->fwd = c->fwd;
        g->bwd = c->bwd;
    }
    if (g) {
        merge(&g->f, &sf);
        merge(&g->b, &sb);
        g->has_bwd |= has_bwd;
        if (looser(c->fwd, g->fwd)) g->fwd = c->fwd; /* the loosest of the group's cases, for the table */
        if (looser(c->bwd, g->bwd)) g->bwd = c->bwd;
    }
    result_free(&ref);
    result_free(&fast);
}

static void test_fast_against_reference(void) {
    for (int i = 0; i < NCASES; i++) {
        if (cases[i].dtypes & F32) run_case(&cases[i], NB_F32);
        if (cases[i].dtypes & F64) run_case(&cases[i], NB_F64);
    }
    nbi_use_backend(nbi_backend_for(nb_cpu()));
    printf("\nsummary per group (largest differences over its cases; ratio = largest difference / bound):\n");
    for (int i = 0; i < ngroups; i++) {
        const bo_group *g = &groups[i];
        char b1[40], b2[40];
        printf("  %-20s %s  fwd %-18s abs %-9.3g rel %-9.3g ratio %.2f", g->group, g->dt == NB_F32 ? "f32" : "f64",
               bound_str(g->fwd, b1, sizeof b1), g->f.abs, g->f.rel, g->f.ratio);
        if (g->fwd.mode == ULP) printf(" (%g ulp)", g->f.ulps);
        if (g->has_bwd)
            printf(" | bwd %-18s abs %-9.3g rel %-9.3g ratio %.2f", bound_str(g->bwd, b2, sizeof b2), g->b.abs,
                   g->b.rel, g->b.ratio);
        printf("\n");
    }
}

/* Every op of the registry occurs in some case's graph. */
static void test_every_op_exercised(void) {
    for (int op = 0; op < NBI_OP_COUNT; op++)
        if (!op_seen[op]) {
            fprintf(stderr, "op '%s' occurs in no case of tests/test_backend_ops.c\n", nbi_ops[op].name);
            th_cur_failed++;
        }
    CHECK(nb_memory_in_use() == 0); /* every case freed its tensors */
}

int main(void) {
    if (nb_set_num_threads(2) != 0) return 1; /* the fast set splits large ops between two threads */
    RUN(test_fast_against_reference);
    RUN(test_every_op_exercised);
    nb_set_num_threads(0);
    return th_finish();
}

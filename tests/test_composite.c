/*
 * test_composite.c - every op's composite gradient rule equals its fused one.
 *
 * Some ops have two first-order rules: a fused kernel taken when the backward
 * records nothing (tanh, sigmoid and relu through nbi_fused_grad; dense with
 * each activation, and its ReLU pass that also sums the bias gradient;
 * cross_entropy; layer_norm; attention; conv2d and its gradient ops, whose one rule is made of those ops and
 * runs recorded or not), and the rule written with differentiable ops
 * that NB_CREATE_GRAPH takes and that every second derivative differentiates.
 * The gradient checks of first order only see the fused rule and those of
 * second order differentiate whatever the composite one computes, so a wrong
 * composite rule would go unseen; here both are computed on the same graph
 * and must agree to 1e-12 (absolute plus relative), in f64.
 *
 * Each case draws random inputs (seeded from its name), builds y = op(...)
 * with broadcasting, non-contiguous views and absent operands where the fused
 * paths have conditions on them, and computes the gradient of y for a random
 * seed W (contiguous, or a transposed view) twice: nb_gradients without flags
 * (fused) and with NB_CREATE_GRAPH (composite). Every op of the registry
 * (src/ops/ops.def) must occur in the graph of some case, so an op added later,
 * fused or not, fails here until it has a case.
 */
#include "harness.h"
#include "nabla/nn.h"

#include "core/internal.h"
#include "opcover.h"

#define CC_MAX_IN 4

typedef struct {
    int rank;
    int64_t shape[NB_MAX_RANK];
    double lo, hi;
    bool rg;
} cc_input;

typedef struct {
    const char *name;
    nb_tensor *(*fn)(nb_tensor **x);
    int n;
    cc_input in[CC_MAX_IN];
    bool seed_t; /* the seed is the transpose of a contiguous tensor (2-D outputs) */
} cc_case;

#define IN1(a) {1, {a}, -2, 2, true}
#define IN2(a, b) {2, {a, b}, -2, 2, true}
#define IN3(a, b, c) {3, {a, b, c}, -2, 2, true}
#define IN2R(a, b, lo, hi) {2, {a, b}, lo, hi, true}
#define IN2C(a, b) {2, {a, b}, -2, 2, false} /* a constant operand */
#define IN3C(a, b, c) {3, {a, b, c}, -2, 2, false}
#define IN1C(a) {1, {a}, -2, 2, false}

static nb_tensor *tr(nb_tensor *t) { return nb_transpose(t, 0, 1); }
static nb_tensor *idx(int n, const double *v) { return nb_from_f64(NB_I64, 1, (int64_t[]){n}, v); }

/* ---- the fused rules ---------------------------------------------------- */
static nb_tensor *f_sigmoid(nb_tensor **x) { return nb_sigmoid(x[0]); }
static nb_tensor *f_sigmoid_view(nb_tensor **x) { return nb_sigmoid(tr(x[0])); }
static nb_tensor *f_tanh(nb_tensor **x) { return nb_tanh(x[0]); }
static nb_tensor *f_tanh_bcast(nb_tensor **x) { return nb_tanh(nb_add(x[0], x[1])); }
static nb_tensor *f_relu(nb_tensor **x) { return nb_relu(x[0]); }
static nb_tensor *f_relu_view(nb_tensor **x) { return nb_relu(tr(x[0])); }
static nb_tensor *f_relu_expand(nb_tensor **x) { return nb_relu(nb_expand(x[0], 2, (int64_t[]){4, 3})); }
static nb_tensor *f_dense_none(nb_tensor **x) { return nb_dense(x[0], x[1], x[2], NB_ACT_NONE); }
static nb_tensor *f_dense_relu(nb_tensor **x) { return nb_dense(x[0], x[1], x[2], NB_ACT_RELU); }
static nb_tensor *f_dense_relu_nob(nb_tensor **x) { return nb_dense(x[0], x[1], NULL, NB_ACT_RELU); }
static nb_tensor *f_dense_tanh(nb_tensor **x) { return nb_dense(x[0], x[1], x[2], NB_ACT_TANH); }
static nb_tensor *f_dense_sigmoid(nb_tensor **x) { return nb_dense(x[0], x[1], x[2], NB_ACT_SIGMOID); }
static nb_tensor *f_dense_sigmoid_nob(nb_tensor **x) { return nb_dense(x[0], x[1], NULL, NB_ACT_SIGMOID); }
static nb_tensor *f_dense_tanh_xt(nb_tensor **x) { return nb_dense(tr(x[0]), x[1], x[2], NB_ACT_TANH); }
static nb_tensor *f_dense_relu_xt(nb_tensor **x) { return nb_dense(tr(x[0]), x[1], x[2], NB_ACT_RELU); }
static nb_tensor *f_dense_relu_wt(nb_tensor **x) { return nb_dense(x[0], tr(x[1]), x[2], NB_ACT_RELU); }
static const double ce_t[] = {2, 0, 1, 4, 4};
static nb_tensor *f_ce(nb_tensor **x) { return nb_cross_entropy(x[0], idx(5, ce_t)); }
static nb_tensor *f_ce_view(nb_tensor **x) { return nb_cross_entropy(tr(x[0]), idx(5, ce_t)); }
/* nb_cross_entropy_ex: (B, T, C) logits, ignored targets, smoothing, each reduction */
static const double cex_t[] = {2, -100, 1, 4, 0, -100};
static nb_tensor *cex(nb_tensor *x, nb_reduction r, double eps) {
    nb_ce_options o = {-100, r, eps};
    return nb_cross_entropy_ex(x, nb_reshape(idx(6, cex_t), 2, (int64_t[]){2, 3}), &o);
}
static nb_tensor *f_cex_mean(nb_tensor **x) { return cex(x[0], NB_REDUCE_MEAN, 0.2); }
static nb_tensor *f_cex_sum(nb_tensor **x) { return cex(x[0], NB_REDUCE_SUM, 0); }
static nb_tensor *f_cex_none(nb_tensor **x) { return cex(x[0], NB_REDUCE_NONE, 0.1); }
/* attention: the fused backward kernel against softmax and matmuls */
#define IN4(a, b, c, d) {4, {a, b, c, d}, -2, 2, true}
#define IN4C(a, b, c, d) {4, {a, b, c, d}, -2, 2, false}
static nb_tensor *f_attn(nb_tensor **x) { return nb_attention(x[0], x[1], x[2], NULL, false, 0); }
static nb_tensor *f_attn_causal(nb_tensor **x) { return nb_attention(x[0], x[1], x[2], NULL, true, 0.7); }
static nb_tensor *f_attn_mask(nb_tensor **x) { return nb_attention(x[0], x[1], x[2], x[3], true, 0); }
static nb_tensor *f_attn_keep(nb_tensor **x) { /* an i64 mask: keep where x[3] > -1.5 */
    nb_tensor *m = nb_to(nb_gt(x[3], nb_scalar(NB_F64, -1.5)), NB_I64);
    return nb_attention(x[0], nb_transpose(x[1], 0, 1), x[2], m, false, 0);
}
/* convolution: one rule (its gradient ops), recorded or not */
#define CONV_OPTS ((nb_conv2d_opts){{2, 1}, {1, 0}, {1, 2}, 2})
/* max pooling: the scatter kernel against a recorded scatter_add (inputs far from ties: a random draw) */
static nb_tensor *f_max_pool(nb_tensor **x) {
    return nb_max_pool2d(x[0], (int[]){3, 2}, (nb_conv2d_opts){{2, 1}, {1, 1}, {1, 2}, 0});
}
static nb_tensor *f_conv(nb_tensor **x) { return nb_conv2d(x[0], x[1], x[2], CONV_OPTS); }
static nb_tensor *f_conv_input(nb_tensor **x) {
    return nb_conv2d_input((int64_t[]){2, 4, 7, 6}, x[1], x[0], CONV_OPTS); /* g (2,6,4,4), w (6,2,3,2) */
}
static nb_tensor *f_conv_weight(nb_tensor **x) {
    return nb_conv2d_weight(x[0], (int64_t[]){6, 2, 3, 2}, x[1], CONV_OPTS); /* x (2,4,7,6), g (2,6,4,4) */
}
/* batch norm: a composite of mean_axes, sub, mul, pow (no rule of its own) */
static nb_tensor *f_bn(nb_tensor **x) { return nb_batch_norm(x[0], x[1], x[2], NULL, NULL, true, 0.1, 1e-5); }
static nb_tensor *f_bn_eval(nb_tensor **x) { /* x (4,3) seen as (3,4); running statistics constant */
    return nb_batch_norm(nb_transpose(x[0], 0, 1), x[1], NULL, x[2], nb_exp(x[3]), false, 0.1, 1e-5);
}
static nb_tensor *f_ln(nb_tensor **x) { return nb_layer_norm(x[0], x[1], x[2], 1e-5); }
static nb_tensor *f_ln_plain(nb_tensor **x) { return nb_layer_norm(x[0], NULL, NULL, 1e-5); }
static nb_tensor *f_ln_gamma(nb_tensor **x) { return nb_layer_norm(x[0], x[1], NULL, 1e-5); }
static nb_tensor *f_ln_beta(nb_tensor **x) { return nb_layer_norm(x[0], NULL, x[1], 1e-5); }
static nb_tensor *f_ln_view(nb_tensor **x) { return nb_layer_norm(tr(x[0]), x[1], x[2], 1e-5); }

/* transformer ops: gelu_tanh's fused rule (in double), and its tails where sigmoid(2u) saturates */
static nb_tensor *f_gelu_tanh(nb_tensor **x) { return nb_gelu_tanh(x[0]); }
static nb_tensor *f_gelu_tanh_view(nb_tensor **x) { return nb_gelu_tanh(tr(x[0])); }

/* ---- the other ops (one rule; both runs must agree all the same) ---------- */
static nb_tensor *f_add(nb_tensor **x) { return nb_add(x[0], x[1]); }
static nb_tensor *f_sub(nb_tensor **x) { return nb_sub(x[0], x[1]); }
static nb_tensor *f_mul(nb_tensor **x) { return nb_mul(x[0], x[1]); }
static nb_tensor *f_div(nb_tensor **x) { return nb_div(x[0], x[1]); }
static nb_tensor *f_pow_t(nb_tensor **x) { return nb_pow_t(x[0], x[1]); }
static nb_tensor *f_where(nb_tensor **x) { return nb_where(nb_gt(x[0], x[1]), x[0], x[1]); }
static nb_tensor *f_unary(nb_tensor **x) {
    nb_tensor *a = x[0];
    nb_tensor *terms[] = {nb_neg(a),  nb_scale(a, 1.5), nb_add_scalar(a, 0.25), nb_pow(a, 3.0),
                          nb_exp(a),  nb_sin(a),        nb_cos(a),              nb_abs(a),
                          nb_gelu(a), nb_erf(a),        nb_expm1(a),            nb_softplus(a),
                          nb_leaky_relu(a, 0.1)};
    return nb_stack((int)(sizeof terms / sizeof terms[0]), terms, 0);
}
static nb_tensor *f_positive(nb_tensor **x) {
    nb_tensor *a = x[0];
    nb_tensor *terms[] = {nb_log(a), nb_sqrt(a), nb_log1p(a), nb_pow(a, -1.5)};
    return nb_concat(4, terms, 1);
}
static nb_tensor *f_reduce(nb_tensor **x) {
    nb_tensor *a = x[0];
    nb_tensor *terms[] = {nb_sum_axes(a, 1, (int[]){1}, false), nb_mean_axes(a, 1, (int[]){0}, false),
                          nb_max_axes(a, 1, (int[]){1}, false), nb_logsumexp(a, 1, (int[]){1}, false)};
    return nb_concat(4, terms, 0);
}
static nb_tensor *f_shape(nb_tensor **x) {
    nb_tensor *a = nb_reshape(x[0], 3, (int64_t[]){2, 3, 2});
    a = nb_permute(a, (int[]){2, 0, 1});
    a = nb_slice(a, 2, 1, 3);
    a = nb_flip(a, 1);
    a = nb_clone(nb_expand(a, 4, (int64_t[]){2, 2, 2, 2}));
    return nb_to(nb_to(a, NB_F32), NB_F64);
}
static nb_tensor *f_matmul(nb_tensor **x) { return nb_matmul(x[0], x[1]); }
static nb_tensor *f_matmul_t(nb_tensor **x) { return nb_matmul(tr(x[0]), x[1]); }
static nb_tensor *f_softmax(nb_tensor **x) { return nb_softmax(x[0], 1); }
static nb_tensor *f_log_softmax(nb_tensor **x) { return nb_log_softmax(x[0], 0); }
static nb_tensor *f_nll(nb_tensor **x) { return nb_nll_loss(nb_log_softmax(x[0], 1), idx(5, ce_t)); }
static nb_tensor *f_linalg(nb_tensor **x) {
    nb_tensor *a = nb_add(x[0], nb_scale(nb_from_f64(NB_F64, 2, (int64_t[]){3, 3},
                                                      (double[]){1, 0, 0, 0, 1, 0, 0, 0, 1}),
                                         3.0));
    nb_tensor *terms[] = {nb_reshape(nb_inverse(a), 1, (int64_t[]){9}), nb_reshape(nb_det(a), 1, (int64_t[]){1}),
                          nb_reshape(nb_logdet(a), 1, (int64_t[]){1})};
    return nb_concat(3, terms, 0);
}
static const double sel[] = {2, 0, 2, 1};
static const double gat[] = {1, 0, 2, 2, 2, 0, 0, 1, 1, 2, 1, 0};
static nb_tensor *f_index(nb_tensor **x) {
    nb_tensor *g = nb_gather(x[0], 1, nb_from_f64(NB_I64, 2, (int64_t[]){4, 3}, gat));
    return nb_add(nb_index_select(x[0], 0, idx(4, sel)), g);
}
static nb_tensor *f_cumsum_pad(nb_tensor **x) {
    return nb_pad(nb_cumsum(x[0], 1), (int64_t[]){1, 0, 2, 1}, 0.5);
}
/* Gradients as ops: their graphs hold slice_backward, index_add and
   scatter_add, whose own rules then run at first order. */
static nb_tensor *f_grad_ops(nb_tensor **x) {
    nb_tensor *a = x[0];
    nb_tensor *s = nb_slice(a, 0, 1, 3);
    nb_tensor *i = nb_index_select(a, 1, idx(4, sel));
    nb_tensor *g = nb_gather(a, 1, nb_from_f64(NB_I64, 2, (int64_t[]){4, 3}, gat));
    nb_tensor *inner = nb_add(nb_add(nb_sum(nb_mul(s, s)), nb_sum(nb_mul(i, i))), nb_sum(nb_mul(g, nb_exp(g))));
    return nb_gradient(inner, a, NB_CREATE_GRAPH);
}
static nb_tensor *f_custom(nb_tensor **x) { return nb_custom("cube", 1, x, cube_fw, cube_bw, NULL); }
static nb_tensor *f_losses(nb_tensor **x) {
    nb_tensor *p = nb_sigmoid(x[0]);
    nb_tensor *terms[] = {nb_mse_loss(x[0], x[1]), nb_l1_loss(x[0], x[1]), nb_bce_loss(p, nb_sigmoid(x[1])),
                          nb_bce_with_logits_loss(x[0], nb_sigmoid(x[1])), nb_var_axes(x[0], 0, NULL, 1, false),
                          nb_norm(x[0]), nb_sum(nb_clamp(x[0], -0.5, 0.5)), nb_sum(nb_maximum(x[0], x[1]))};
    return nb_stack(8, terms, 0);
}

static const cc_case cases[] = {
    /* Fused rules. */
    {"sigmoid", f_sigmoid, 1, {IN2R(3, 4, -6, 6)}, false},
    {"sigmoid_seed_view", f_sigmoid, 1, {IN2R(3, 4, -6, 6)}, true},
    {"sigmoid_input_view", f_sigmoid_view, 1, {IN2R(4, 3, -6, 6)}, false},
    {"tanh", f_tanh, 1, {IN2R(3, 4, -3, 3)}, true},
    {"tanh_bcast", f_tanh_bcast, 2, {IN2(3, 1), IN1(4)}, false},
    {"relu", f_relu, 1, {IN2(3, 4)}, false},
    {"relu_input_view", f_relu_view, 1, {IN2(4, 3)}, true},
    {"relu_expand", f_relu_expand, 1, {IN1(3)}, false},
    {"dense_none", f_dense_none, 3, {IN2(5, 4), IN2(3, 4), IN1(3)}, false},
    {"dense_relu", f_dense_relu, 3, {IN2(5, 4), IN2(3, 4), IN1(3)}, false},
    {"dense_relu_seed_view", f_dense_relu, 3, {IN2(4, 4), IN2(4, 4), IN1(4)}, true},
    {"dense_relu_bias_const", f_dense_relu, 3, {IN2(5, 4), IN2(3, 4), IN1C(3)}, false},
    {"dense_relu_nobias", f_dense_relu_nob, 2, {IN2(5, 4), IN2(3, 4)}, false},
    {"dense_relu_3d", f_dense_relu, 3, {IN3(2, 3, 4), IN2(5, 4), IN1(5)}, false},
    {"dense_relu_x_view", f_dense_relu_xt, 3, {IN2(4, 5), IN2(3, 4), IN1(3)}, false},
    {"dense_relu_w_view", f_dense_relu_wt, 3, {IN2(5, 4), IN2(4, 3), IN1(3)}, false},
    {"dense_tanh", f_dense_tanh, 3, {IN2(5, 4), IN2(3, 4), IN1(3)}, false},
    {"dense_tanh_3d", f_dense_tanh, 3, {IN3(2, 3, 4), IN2(5, 4), IN1(5)}, false},
    {"dense_tanh_x_view", f_dense_tanh_xt, 3, {IN2(4, 5), IN2(3, 4), IN1(3)}, false},
    {"dense_sigmoid", f_dense_sigmoid, 3, {IN2(5, 4), IN2(3, 4), IN1(3)}, true},
    {"dense_sigmoid_nobias", f_dense_sigmoid_nob, 2, {IN2(5, 4), IN2(3, 4)}, false},
    {"cross_entropy", f_ce, 1, {IN2R(5, 5, -3, 3)}, false},
    {"cross_entropy_view", f_ce_view, 1, {IN2R(6, 5, -3, 3)}, false},
    {"cross_entropy_ex_mean", f_cex_mean, 1, {IN3(2, 3, 5)}, false},
    {"cross_entropy_ex_sum", f_cex_sum, 1, {IN3(2, 3, 5)}, false},
    {"cross_entropy_ex_none", f_cex_none, 1, {IN3(2, 3, 5)}, false},
    {"layer_norm", f_ln, 3, {IN2(4, 5), IN1(5), IN1(5)}, false},
    {"layer_norm_3d", f_ln, 3, {IN3(2, 3, 4), IN1(4), IN1(4)}, false},
    {"layer_norm_plain", f_ln_plain, 1, {IN2(4, 5)}, false},
    {"layer_norm_gamma", f_ln_gamma, 2, {IN2(4, 5), IN1(5)}, false},
    {"layer_norm_beta", f_ln_beta, 2, {IN2(4, 5), IN1(5)}, false},
    {"layer_norm_gamma_const", f_ln, 3, {IN2(4, 5), IN1C(5), IN1(5)}, false},
    /* The fused layer-norm kernel needs contiguous x and seed: these two take the composite rule both ways. */
    {"layer_norm_seed_view", f_ln, 3, {IN2(5, 5), IN1(5), IN1(5)}, true},
    {"layer_norm_input_view", f_ln_view, 3, {IN2(4, 5), IN1(4), IN1(4)}, false},
    {"batch_norm", f_bn, 3, {IN4(3, 4, 2, 3), IN1(4), IN1(4)}, false},
    {"batch_norm_eval_view", f_bn_eval, 4, {IN2(4, 3), IN1(4), IN1C(4), IN1C(4)}, false},
    /* transformer ops */
    {"gelu_tanh", f_gelu_tanh, 1, {IN2R(3, 4, -4, 4)}, false},
    {"gelu_tanh_tails", f_gelu_tanh, 1, {IN2R(4, 5, -12, 12)}, true},
    {"gelu_tanh_input_view", f_gelu_tanh_view, 1, {IN2R(4, 3, -5, 5)}, false},
    {"attention", f_attn, 3, {IN3(2, 4, 5), IN3(2, 6, 5), IN3(2, 6, 3)}, false},
    {"attention_causal_kv", f_attn_causal, 3, {IN3(2, 3, 4), IN3(2, 7, 4), IN3(2, 7, 5)}, false},
    {"attention_mask_bcast", f_attn_mask, 4, {IN4(2, 2, 5, 3), IN3(2, 5, 3), IN2(5, 4), IN2(5, 5)}, false},
    {"attention_keep_const_v", f_attn_keep, 4, {IN3(2, 4, 3), IN3(5, 2, 3), IN3C(2, 5, 2), IN2C(4, 5)}, false},
    {"max_pool2d", f_max_pool, 1, {IN4(2, 3, 7, 6)}, false},
    {"conv2d", f_conv, 3, {IN4(2, 4, 7, 6), IN4(6, 2, 3, 2), IN1(6)}, false},
    {"conv2d_input", f_conv_input, 2, {IN4(2, 6, 4, 4), IN4(6, 2, 3, 2)}, false},
    {"conv2d_weight", f_conv_weight, 2, {IN4(2, 4, 7, 6), IN4(2, 6, 4, 4)}, false},
    /* Every other op. */
    {"add", f_add, 2, {IN2(3, 4), IN1(4)}, false},
    {"sub", f_sub, 2, {IN2(3, 1), IN2(1, 4)}, false},
    {"mul", f_mul, 2, {IN2(3, 4), IN2C(3, 4)}, false},
    {"div", f_div, 2, {IN2(3, 4), IN2R(3, 1, 0.5, 2)}, false},
    {"pow_t", f_pow_t, 2, {IN2R(3, 4, 0.5, 2), IN1(4)}, false},
    {"where", f_where, 2, {IN2(3, 4), IN1(4)}, false},
    {"unary", f_unary, 1, {IN2(3, 4)}, false},
    {"positive", f_positive, 1, {IN2R(3, 4, 0.2, 3)}, false},
    {"reduce", f_reduce, 1, {IN2(3, 3)}, false},
    {"shape", f_shape, 1, {IN2(3, 4)}, false},
    {"matmul", f_matmul, 2, {IN3(2, 3, 4), IN2(4, 5)}, false},
    {"matmul_view", f_matmul_t, 2, {IN2(4, 3), IN1(4)}, false},
    {"softmax", f_softmax, 1, {IN2(3, 5)}, false},
    {"log_softmax", f_log_softmax, 1, {IN2(3, 5)}, true},
    {"nll_loss", f_nll, 1, {IN2(5, 5)}, false},
    {"linalg", f_linalg, 1, {IN2R(3, 3, -1, 1)}, false},
    {"index", f_index, 1, {IN2(4, 3)}, false},
    {"cumsum_pad", f_cumsum_pad, 1, {IN2(3, 4)}, false},
    {"grad_ops", f_grad_ops, 1, {IN2(4, 3)}, false},
    {"custom", f_custom, 1, {IN2(3, 4)}, false},
    {"losses", f_losses, 2, {IN2(3, 4), IN2(3, 4)}, false},
};
#define NCASES ((int)(sizeof cases / sizeof cases[0]))

static nb_tensor *leaf(const cc_input *in) {
    nb_tensor *t = th_rand(NB_F64, in->rank, in->shape, in->lo, in->hi);
    if (in->rg) nb_set_requires_grad(t, true);
    return t;
}

static uint64_t name_seed(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

static int op_cases[NBI_OP_COUNT];

/* Gradients of y (seeded by W) with respect to the inputs that require grad, by the fused rules (create false)
   or the composite ones; y is rebuilt from copies of the same inputs each time. */
static int grads(const cc_case *c, nb_tensor **x, bool create, nb_tensor *seed, nb_tensor **out, bool *seen) {
    nb_tensor *xs[CC_MAX_IN], *wrt[CC_MAX_IN];
    int nw = 0;
    for (int i = 0; i < c->n; i++) {
        xs[i] = nb_clone(x[i]); /* a fresh leaf of the same values (x[i] is outside every graph) */
        if (c->in[i].rg) {
            nb_set_requires_grad(xs[i], true);
            wrt[nw++] = xs[i];
        }
    }
    nb_tensor *y = c->fn(xs);
    if (!y) return -1;
    if (seen) collect_ops(1, &y, seen);
    if (!seed) return -1;
    return nb_gradients(y, seed, nw, wrt, create ? NB_CREATE_GRAPH : 0, out);
}

static void run_case(const cc_case *c) {
    nb_clear_error();
    nb_scope_begin();
    th_seed(name_seed(c->name));
    nb_tensor *x[CC_MAX_IN];
    for (int i = 0; i < c->n; i++) {
        cc_input in = c->in[i];
        in.rg = false;
        x[i] = leaf(&in);
    }
    /* The output's shape, from a run without gradients. */
    nb_set_grad_enabled(false);
    nb_tensor *y0 = c->fn(x);
    nb_set_grad_enabled(true);
    CHECK(y0 != NULL);
    if (!y0) {
        nb_scope_end();
        return;
    }
    nb_tensor *seed;
    if (c->seed_t) {
        CHECK(nb_rank(y0) == 2);
        seed = tr(th_rand(NB_F64, 2, (int64_t[]){nb_shape(y0)[1], nb_shape(y0)[0]}, -1, 1));
        CHECK(!nb_is_contiguous(seed));
    } else {
        seed = th_rand(NB_F64, nb_rank(y0), nb_shape(y0), -1, 1);
    }
    nb_tensor *gf[CC_MAX_IN] = {0}, *gc[CC_MAX_IN] = {0};
    bool seen[NBI_OP_COUNT] = {0};
    int rf = grads(c, x, false, seed, gf, seen);
    int rc = grads(c, x, true, seed, gc, NULL);
    CHECK(rf == 0);
    CHECK(rc == 0);
    for (int op = 0; op < NBI_OP_COUNT; op++) op_cases[op] += seen[op];
    int nw = 0;
    for (int i = 0; i < c->n; i++) nw += c->in[i].rg;
    for (int k = 0; k < nw && rf == 0 && rc == 0; k++) {
        int64_t n = nb_numel(gf[k]);
        CHECK(n == nb_numel(gc[k]));
        CHECK(nb_dtype_of(gf[k]) == NB_F64 && nb_dtype_of(gc[k]) == NB_F64);
        double *a = (double *)malloc(sizeof(double) * (size_t)(n ? n : 1));
        double *b = (double *)malloc(sizeof(double) * (size_t)(n ? n : 1));
        CHECK(nb_read_f64(gf[k], a, n) == n && nb_read_f64(gc[k], b, n) == n);
        int bad = 0;
        double any = 0;
        for (int64_t j = 0; j < n; j++) {
            any += fabs(a[j]);
            if (!(fabs(a[j] - b[j]) <= 1e-12 + 1e-12 * fabs(a[j]))) {
                if (bad++ < 3)
                    fprintf(stderr, "%s: gradient %d element %lld: fused %.17g, composite %.17g\n", c->name, k,
                            (long long)j, a[j], b[j]);
            }
        }
        CHECK(bad == 0);
        CHECK(any > 0); /* a gradient of zeros would compare equal whatever the rules */
        free(a);
        free(b);
    }
    nb_scope_end();
}

static void test_fused_equals_composite(void) {
    for (int i = 0; i < NCASES; i++) {
        int before = th_cur_failed;
        run_case(&cases[i]);
        if (th_cur_failed != before) fprintf(stderr, "  in case %s\n", cases[i].name);
    }
}

/* Every op of the registry occurs in some case's graph. */
static void test_every_op_has_a_case(void) {
    for (int op = 0; op < NBI_OP_COUNT; op++)
        if (!op_cases[op]) {
            fprintf(stderr, "op '%s' occurs in no case of tests/test_composite.c\n", nbi_ops[op].name);
            th_cur_failed++;
        }
}

int main(void) {
    RUN(test_fused_equals_composite);
    RUN(test_every_op_has_a_case);
    return th_finish();
}

/*
 * elementwise.c - binary and unary elementwise ops: forward and gradient rules.
 *
 * Forward: check, promote dtypes, broadcast, allocate, run the kernel of the
 * operands' backend (src/backend/backend.h), record. Backward rules are written with the
 * public ops, so they are differentiable themselves; broadcasting is undone by
 * nbi_sum_to, which sums the gradient over the broadcast axes.
 */
#include <math.h>

#include "../core/internal.h"

#define SQRT1_2 0.70710678118654752440
#define TWO_OVER_SQRTPI 1.12837916709551257390
#define INV_SQRT_2PI 0.39894228040143267794

/* Result dtype of a binary op, as PyTorch: f64 wins, except that a rank-0
   operand does not promote a ranked one. */
static nb_dtype promote(const nb_tensor *a, const nb_tensor *b) {
    if (a->dtype == b->dtype) return a->dtype;
    if (a->rank == 0 && b->rank > 0) return b->dtype;
    if (b->rank == 0 && a->rank > 0) return a->dtype;
    return NB_F64;
}

/* Shared front half of every broadcasting op: validates a and b, casts them to
   the common dtype (recorded, so gradients flow back in each operand's dtype)
   and returns the output tensor, or NULL. */
static nb_tensor *prepare2(const char *fn, nb_tensor **a, nb_tensor **b) {
    if (!nbi_check_float(fn, *a, 1) || !nbi_check_float(fn, *b, 2)) return NULL;
    int r;
    int64_t shape[NB_MAX_RANK] = {0};
    if (!nbi_broadcast((*a)->rank, (*a)->shape, (*b)->rank, (*b)->shape, &r, shape))
        return nbi_err(fn, "shapes %s and %s do not broadcast", NBI_SHAPE(*a), NBI_SHAPE(*b));
    if ((*a)->st->be != (*b)->st->be && !nbi_same_device(fn, 2, (nb_tensor *[]){*a, *b})) return NULL;
    nb_dtype dt = promote(*a, *b);
    if ((*a)->dtype != dt && !(*a = nb_to(*a, dt))) return NULL;
    if ((*b)->dtype != dt && !(*b = nb_to(*b, dt))) return NULL;
    return nbi_empty_like_be(fn, *a, dt, r, shape);
}

static nb_tensor *binary(const char *fn, nbi_op op, nbi_binop k, nb_tensor *a, nb_tensor *b, uint32_t saves) {
    nb_tensor *out = prepare2(fn, &a, &b);
    if (!out) return NULL;
    nbi_k_binary(k, out, a, b);
    nb_tensor *in[2] = {a, b};
    if (op != NBI_OP_COUNT && nbi_needs_grad(2, in)) return nbi_record(out, op, 2, in, saves, false);
    return out;
}

nb_tensor *nb_add(nb_tensor *a, nb_tensor *b) { return binary("nb_add", NBI_OP_ADD, NBI_B_ADD, a, b, 0); }
nb_tensor *nb_sub(nb_tensor *a, nb_tensor *b) { return binary("nb_sub", NBI_OP_SUB, NBI_B_SUB, a, b, 0); }
nb_tensor *nb_mul(nb_tensor *a, nb_tensor *b) { return binary("nb_mul", NBI_OP_MUL, NBI_B_MUL, a, b, 3); }
nb_tensor *nb_div(nb_tensor *a, nb_tensor *b) { return binary("nb_div", NBI_OP_DIV, NBI_B_DIV, a, b, 3); }
nb_tensor *nb_pow_t(nb_tensor *a, nb_tensor *p) {
    nb_tensor *out = binary("nb_pow_t", NBI_OP_POW_T, NBI_B_POW, a, p, 3);
    if (out && out->has_node) out->node.saves_out = 1, out->node.out_ver = out->st->version;
    return out;
}
/* Comparisons are never recorded (NBI_OP_COUNT). */
nb_tensor *nb_gt(nb_tensor *a, nb_tensor *b) { return binary("nb_gt", NBI_OP_COUNT, NBI_B_GT, a, b, 0); }
nb_tensor *nb_lt(nb_tensor *a, nb_tensor *b) { return binary("nb_lt", NBI_OP_COUNT, NBI_B_LT, a, b, 0); }
nb_tensor *nb_eq(nb_tensor *a, nb_tensor *b) { return binary("nb_eq", NBI_OP_COUNT, NBI_B_EQ, a, b, 0); }

nb_tensor *nb_where(nb_tensor *cond, nb_tensor *a, nb_tensor *b) {
    const char *fn = "nb_where";
    if (!nbi_check(fn, cond, 1) || !nbi_check_float(fn, a, 2) || !nbi_check_float(fn, b, 3)) return NULL;
    int r1, r;
    int64_t s1[NB_MAX_RANK], shape[NB_MAX_RANK];
    if (!nbi_broadcast(a->rank, a->shape, b->rank, b->shape, &r1, s1) ||
        !nbi_broadcast(cond->rank, cond->shape, r1, s1, &r, shape)) {
        char sa[160], sb[160];
        return nbi_err(fn, "condition %s and values %s, %s do not broadcast", NBI_SHAPE(cond),
                       nbi_shape_s(a, sa, sizeof sa), nbi_shape_s(b, sb, sizeof sb));
    }
    if (!nbi_same_device(fn, 3, (nb_tensor *[]){cond, a, b})) return NULL;
    nb_dtype dt = promote(a, b);
    if (a->dtype != dt && !(a = nb_to(a, dt))) return NULL;
    if (b->dtype != dt && !(b = nb_to(b, dt))) return NULL;
    nb_tensor *out = nbi_empty_like_be(fn, a, dt, r, shape);
    if (!out) return NULL;
    nbi_k_where(out, cond, a, b);
    nb_tensor *in[3] = {cond, a, b};
    if (nbi_needs_grad(3, in)) return nbi_record(out, NBI_OP_WHERE, 3, in, 1, false);
    return out;
}

static nb_tensor *unary(const char *fn, nbi_op op, nbi_unop k, nb_tensor *a, double c, bool saves_in,
                        bool saves_out) {
    if (!nbi_check_float(fn, a, 1)) return NULL;
    nb_tensor *out = nbi_empty_like_be(fn, a, a->dtype, a->rank, a->shape);
    if (!out) return NULL;
    nbi_k_unary(k, out, a, c);
    if (op == NBI_OP_COUNT || !nbi_needs_grad(1, &a)) return out;
    if (!nbi_record(out, op, 1, &a, saves_in ? 1 : 0, saves_out)) return NULL;
    out->node.p[0] = c;
    return out;
}

nb_tensor *nb_neg(nb_tensor *a) { return unary("nb_neg", NBI_OP_NEG, NBI_U_NEG, a, 0, false, false); }
nb_tensor *nb_scale(nb_tensor *a, double c) { return unary("nb_scale", NBI_OP_SCALE, NBI_U_SCALE, a, c, 0, 0); }
nb_tensor *nb_add_scalar(nb_tensor *a, double c) {
    return unary("nb_add_scalar", NBI_OP_ADD_SCALAR, NBI_U_ADDC, a, c, false, false);
}
nb_tensor *nb_pow(nb_tensor *a, double p) { return unary("nb_pow", NBI_OP_POW, NBI_U_POWC, a, p, true, false); }
nb_tensor *nb_exp(nb_tensor *a) { return unary("nb_exp", NBI_OP_EXP, NBI_U_EXP, a, 0, false, true); }
nb_tensor *nb_log(nb_tensor *a) { return unary("nb_log", NBI_OP_LOG, NBI_U_LOG, a, 0, true, false); }
nb_tensor *nb_sqrt(nb_tensor *a) { return unary("nb_sqrt", NBI_OP_SQRT, NBI_U_SQRT, a, 0, false, true); }
nb_tensor *nb_abs(nb_tensor *a) { return unary("nb_abs", NBI_OP_ABS, NBI_U_ABS, a, 0, true, false); }
nb_tensor *nb_sin(nb_tensor *a) { return unary("nb_sin", NBI_OP_SIN, NBI_U_SIN, a, 0, true, false); }
nb_tensor *nb_cos(nb_tensor *a) { return unary("nb_cos", NBI_OP_COS, NBI_U_COS, a, 0, true, false); }
nb_tensor *nb_tanh(nb_tensor *a) { return unary("nb_tanh", NBI_OP_TANH, NBI_U_TANH, a, 0, false, true); }
nb_tensor *nb_sigmoid(nb_tensor *a) {
    return unary("nb_sigmoid", NBI_OP_SIGMOID, NBI_U_SIGMOID, a, 0, false, true);
}
nb_tensor *nb_relu(nb_tensor *a) { return unary("nb_relu", NBI_OP_RELU, NBI_U_RELU, a, 0, true, false); }
nb_tensor *nb_leaky_relu(nb_tensor *a, double alpha) {
    return unary("nb_leaky_relu", NBI_OP_LEAKY_RELU, NBI_U_LEAKY, a, alpha, true, false);
}
nb_tensor *nb_gelu(nb_tensor *a) { return unary("nb_gelu", NBI_OP_GELU, NBI_U_GELU, a, 0, true, false); }
nb_tensor *nb_erf(nb_tensor *a) { return unary("nb_erf", NBI_OP_ERF, NBI_U_ERF, a, 0, true, false); }
nb_tensor *nb_log1p(nb_tensor *a) { return unary("nb_log1p", NBI_OP_LOG1P, NBI_U_LOG1P, a, 0, true, false); }
nb_tensor *nb_expm1(nb_tensor *a) { return unary("nb_expm1", NBI_OP_EXPM1, NBI_U_EXPM1, a, 0, false, true); }
nb_tensor *nb_softplus(nb_tensor *a) {
    return unary("nb_softplus", NBI_OP_SOFTPLUS, NBI_U_SOFTPLUS, a, 0, true, false);
}
nb_tensor *nb_sign(nb_tensor *a) { return unary("nb_sign", NBI_OP_COUNT, NBI_U_SIGN, a, 0, false, false); }

/* ---- transformer ops ---- */
/* With a graph to build over a contiguous f32 input and a backend that can, the forward keeps e^(-2u) for the
   gradient (one f32 tensor of x's size on the node): the backward then computes no exp. */
nb_tensor *nb_gelu_tanh(nb_tensor *a) {
    const char *fn = "nb_gelu_tanh";
    if (!nbi_check_float(fn, a, 1)) return NULL;
    const nbi_backend *be = nbi_be(a);
    if (a->dtype != NB_F32 || !be->gelu_tanh_keep || !nbi_is_contig(a) || !nbi_needs_grad(1, &a))
        return unary(fn, NBI_OP_GELU_TANH, NBI_U_GELU_TANH, a, 0, true, false);
    nb_tensor *out = nbi_empty_like_be(fn, a, a->dtype, a->rank, a->shape);
    nb_tensor *e = out ? nbi_empty_like_be(fn, a, a->dtype, a->rank, a->shape) : NULL;
    if (!e) return nb_free(out), NULL;
    be->gelu_tanh_keep(a->dtype, nbi_arr_of(out).data, nbi_arr_of(e).data, nbi_arr_of(a).data, a->numel);
    if (!(out = nbi_record(out, NBI_OP_GELU_TANH, 1, &a, 1, false))) /* it freed out */
        return nb_free(e), NULL;
    if (nbi_save(out, 1, &e) != 0) nb_free(out), out = NULL;
    nb_free(e);
    return out;
}

/* ------------------------------------------------------------ gradients -- */

#define IN(k) (out->node.in[k])
#define WANT(k) (IN(k)->requires_grad)

static nb_tensor *cst(const nb_tensor *like, double v) { return nb_scalar(like->dtype, v); }

/* g * expr, but exactly 0 wherever g is 0: a rule with a pole (1/x, 1/sqrt x)
   would otherwise turn the zero gradient of an unselected where() branch into
   0 * inf = NaN. */
static nb_tensor *zero_safe(nb_tensor *g, nb_tensor *val) {
    nb_tensor *zero = nb_scalar(g->dtype, 0);
    return nb_where(nb_eq(g, zero), zero, val);
}

/* 1 - x */
static nb_tensor *one_minus(nb_tensor *x) { return nb_add_scalar(nb_neg(x), 1.0); }

#define SUM_TO(g, k) nbi_sum_to((g), IN(k)->rank, IN(k)->shape)

int nbi_bw_add(nb_tensor *out, nb_tensor *g, nb_tensor **gin) {
    if (WANT(0) && !(gin[0] = SUM_TO(g, 0))) return -1;
    if (WANT(1) && !(gin[1] = SUM_TO(g, 1))) return -1;
    return 0;
}

int nbi_bw_sub(nb_tensor *out, nb_tensor *g, nb_tensor **gin) {
    if (WANT(0) && !(gin[0] = SUM_TO(g, 0))) return -1;
    if (WANT(1) && !(gin[1] = SUM_TO(nb_neg(g), 1))) return -1;
    return 0;
}

/* dA = G B, dB = G A */
int nbi_bw_mul(nb_tensor *out, nb_tensor *g, nb_tensor **gin) {
    if (WANT(0) && !(gin[0] = SUM_TO(nb_mul(g, IN(1)), 0))) return -1;
    if (WANT(1) && !(gin[1] = SUM_TO(nb_mul(g, IN(0)), 1))) return -1;
    return 0;
}

/* dA = G / B, dB = -G A / B^2 */
int nbi_bw_div(nb_tensor *out, nb_tensor *g, nb_tensor **gin) {
    if (WANT(0) && !(gin[0] = SUM_TO(zero_safe(g, nb_div(g, IN(1))), 0))) return -1;
    if (WANT(1) && !(gin[1] = SUM_TO(zero_safe(g, nb_neg(nb_div(nb_mul(g, IN(0)), nb_mul(IN(1), IN(1))))), 1)))
        return -1;
    return 0;
}

/* R = A^P: dA = G P A^(P-1) (0 where P = 0), dP = G R ln A (0 where A = 0, P >= 0) */
int nbi_bw_pow_t(nb_tensor *out, nb_tensor *g, nb_tensor **gin) {
    nb_tensor *a = IN(0), *p = IN(1), *zero = cst(a, 0);
    if (WANT(0)) {
        nb_tensor *d = nb_mul(p, nb_pow_t(a, nb_add_scalar(p, -1.0)));
        if (!(gin[0] = SUM_TO(zero_safe(g, nb_mul(g, nb_where(nb_eq(p, zero), zero, d))), 0))) return -1;
    }
    if (WANT(1)) {
        nb_tensor *mask = nb_mul(nb_eq(a, zero), one_minus(nb_lt(p, zero)));
        nb_tensor *safe_a = nb_where(mask, cst(a, 1), a); /* keeps log finite where masked */
        nb_tensor *d = nb_where(mask, zero, nb_mul(out, nb_log(safe_a)));
        if (!(gin[1] = SUM_TO(zero_safe(g, nb_mul(g, d)), 1))) return -1;
    }
    return 0;
}

int nbi_bw_where(nb_tensor *out, nb_tensor *g, nb_tensor **gin) {
    nb_tensor *zero = cst(g, 0);
    if (WANT(1) && !(gin[1] = SUM_TO(nb_where(IN(0), g, zero), 1))) return -1;
    if (WANT(2) && !(gin[2] = SUM_TO(nb_where(IN(0), zero, g), 2))) return -1;
    return 0;
}

int nbi_bw_neg(nb_tensor *out, nb_tensor *g, nb_tensor **gin) {
    (void)out;
    return (gin[0] = nb_neg(g)) ? 0 : -1;
}

int nbi_bw_scale(nb_tensor *out, nb_tensor *g, nb_tensor **gin) {
    return (gin[0] = nb_scale(g, out->node.p[0])) ? 0 : -1;
}

int nbi_bw_add_scalar(nb_tensor *out, nb_tensor *g, nb_tensor **gin) {
    (void)out;
    gin[0] = g;
    return 0;
}

int nbi_bw_pow(nb_tensor *out, nb_tensor *g, nb_tensor **gin) {
    double p = out->node.p[0];
    if (p == 0) return (gin[0] = nbi_const_like(IN(0), 0.0)) ? 0 : -1;
    nb_tensor *d = nb_mul(g, nb_scale(nb_pow(IN(0), p - 1.0), p));
    return (gin[0] = p < 1 ? zero_safe(g, d) : d) ? 0 : -1;
}

int nbi_bw_exp(nb_tensor *out, nb_tensor *g, nb_tensor **gin) { return (gin[0] = nb_mul(g, out)) ? 0 : -1; }
int nbi_bw_log(nb_tensor *out, nb_tensor *g, nb_tensor **gin) {
    return (gin[0] = zero_safe(g, nb_div(g, IN(0)))) ? 0 : -1;
}
int nbi_bw_sqrt(nb_tensor *out, nb_tensor *g, nb_tensor **gin) {
    return (gin[0] = zero_safe(g, nb_div(g, nb_scale(out, 2.0)))) ? 0 : -1;
}
int nbi_bw_abs(nb_tensor *out, nb_tensor *g, nb_tensor **gin) {
    return (gin[0] = nb_mul(g, nb_sign(IN(0)))) ? 0 : -1;
}
int nbi_bw_sin(nb_tensor *out, nb_tensor *g, nb_tensor **gin) { return (gin[0] = nb_mul(g, nb_cos(IN(0)))) ? 0 : -1; }
int nbi_bw_cos(nb_tensor *out, nb_tensor *g, nb_tensor **gin) {
    return (gin[0] = nb_mul(g, nb_neg(nb_sin(IN(0))))) ? 0 : -1;
}
nb_tensor *nbi_fused_grad(nbi_binop op, nb_tensor *g, nb_tensor *v) {
    if (nb_grad_enabled() || g->dtype != v->dtype || g->rank != v->rank) return NULL;
    for (int i = 0; i < g->rank; i++)
        if (g->shape[i] != v->shape[i]) return NULL;
    if (g->st->be != v->st->be) return NULL;
    nb_tensor *r = nbi_empty_like_be("backward", g, g->dtype, g->rank, g->shape);
    if (r) nbi_k_binary(op, r, g, v);
    return r;
}

/* tanh' = 1 - R^2 */
int nbi_bw_tanh(nb_tensor *out, nb_tensor *g, nb_tensor **gin) {
    if ((gin[0] = nbi_fused_grad(NBI_B_TANH_GRAD, g, out)) != NULL) return 0;
    return (gin[0] = nb_mul(g, one_minus(nb_mul(out, out)))) ? 0 : -1;
}
/* sigmoid' = R (1 - R) */
int nbi_bw_sigmoid(nb_tensor *out, nb_tensor *g, nb_tensor **gin) {
    if ((gin[0] = nbi_fused_grad(NBI_B_SIGMOID_GRAD, g, out)) != NULL) return 0;
    return (gin[0] = nb_mul(g, nb_mul(out, one_minus(out)))) ? 0 : -1;
}
/* relu'(x) = [x > 0]; the mask is a constant */
int nbi_bw_relu(nb_tensor *out, nb_tensor *g, nb_tensor **gin) {
    if ((gin[0] = nbi_fused_grad(NBI_B_RELU_GRAD, g, IN(0))) != NULL) return 0;
    return (gin[0] = nb_mul(g, nb_gt(IN(0), cst(g, 0)))) ? 0 : -1;
}
int nbi_bw_leaky_relu(nb_tensor *out, nb_tensor *g, nb_tensor **gin) {
    nb_tensor *slope = nb_where(nb_gt(IN(0), cst(g, 0)), cst(g, 1), cst(g, out->node.p[0]));
    return (gin[0] = nb_mul(g, slope)) ? 0 : -1;
}
/* gelu'(x) = Phi(x) + x phi(x) */
int nbi_bw_gelu(nb_tensor *out, nb_tensor *g, nb_tensor **gin) {
    nb_tensor *x = IN(0);
    nb_tensor *cdf = nb_scale(nb_add_scalar(nb_erf(nb_scale(x, SQRT1_2)), 1.0), 0.5);
    nb_tensor *pdf = nb_scale(nb_exp(nb_scale(nb_mul(x, x), -0.5)), INV_SQRT_2PI);
    return (gin[0] = nb_mul(g, nb_add(cdf, nb_mul(x, pdf)))) ? 0 : -1;
}
/* erf'(x) = 2 / sqrt(pi) exp(-x^2) */
int nbi_bw_erf(nb_tensor *out, nb_tensor *g, nb_tensor **gin) {
    nb_tensor *x = IN(0);
    return (gin[0] = nb_mul(g, nb_scale(nb_exp(nb_neg(nb_mul(x, x))), TWO_OVER_SQRTPI))) ? 0 : -1;
}

int nbi_bw_log1p(nb_tensor *out, nb_tensor *g, nb_tensor **gin) {
    return (gin[0] = zero_safe(g, nb_div(g, nb_add_scalar(IN(0), 1.0)))) ? 0 : -1;
}
int nbi_bw_expm1(nb_tensor *out, nb_tensor *g, nb_tensor **gin) {
    return (gin[0] = nb_mul(g, nb_add_scalar(out, 1.0))) ? 0 : -1;
}
/* softplus' = sigmoid, and exactly 1 above the threshold 20 where the forward is linear */
int nbi_bw_softplus(nb_tensor *out, nb_tensor *g, nb_tensor **gin) {
    nb_tensor *linear = nb_gt(IN(0), cst(g, 20));
    return (gin[0] = nb_mul(g, nb_where(linear, cst(g, 1), nb_sigmoid(IN(0))))) ? 0 : -1;
}

/* ---- transformer ops ---- */
/* gelu_tanh(x) = x s, s = sigmoid(2u), u = k (x + c x^3) (src/backend/gelu_tanh.h):
   gelu_tanh'(x) = s + 2 x u' s (1 - s), u' = k (1 + 3 c x^2). First order: one fused pass in double
   (NBI_B_GELU_TANH_GRAD); under NB_CREATE_GRAPH the same formula from differentiable ops. */
#define GELU_TANH_K 0.7978845608028654
#define GELU_TANH_C 0.044715
int nbi_bw_gelu_tanh(nb_tensor *out, nb_tensor *g, nb_tensor **gin) {
    const nbi_backend *be = nbi_be(g);
    if (out->node.nsaved > 0 && !nb_grad_enabled() && be->gelu_tanh_grad_kept && g->dtype == NB_F32 &&
        nbi_is_contig(g) && nbi_is_contig(IN(0)) && g->numel == IN(0)->numel && nbi_be(IN(0)) == be) {
        nb_tensor *e = nbi_saved("gelu_tanh backward", out, 0);
        if (!e) return -1;
        nb_tensor *r = nbi_empty_like_be("gelu_tanh backward", g, g->dtype, g->rank, g->shape);
        if (!r) return -1;
        be->gelu_tanh_grad_kept(g->dtype, nbi_arr_of(r).data, nbi_arr_of(g).data, nbi_arr_of(IN(0)).data,
                                nbi_arr_of(e).data, g->numel);
        gin[0] = r;
        return 0;
    }
    if ((gin[0] = nbi_fused_grad(NBI_B_GELU_TANH_GRAD, g, IN(0))) != NULL) return 0;
    nb_tensor *x = IN(0);
    nb_tensor *x2 = nb_mul(x, x);
    nb_tensor *u2 = nb_scale(nb_add(x, nb_scale(nb_mul(x2, x), GELU_TANH_C)), 2.0 * GELU_TANH_K);
    nb_tensor *s = nb_sigmoid(u2), *sm = nb_sigmoid(nb_neg(u2));
    nb_tensor *du2 = nb_scale(nb_add_scalar(nb_scale(x2, 3.0 * GELU_TANH_C), 1.0), 2.0 * GELU_TANH_K);
    nb_tensor *d = nb_add(s, nb_mul(nb_mul(x, du2), nb_mul(s, sm)));
    return (gin[0] = nb_mul(g, d)) ? 0 : -1;
}

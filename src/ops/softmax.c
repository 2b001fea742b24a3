/*
 * softmax.c - softmax and log-softmax along an axis, and the classification
 * losses built on them: forward kernels and gradient rules.
 *
 * The row kernels (the backend's softmax, cross_entropy, cross_entropy_grad)
 * subtract the maximum along the axis before exponentiating, so logits of any
 * size give finite results. The input is viewed as (outer, n, inner) with the
 * reduced axis in the middle.
 *
 * Gradients (seed 004):  softmax      dX = R (G - sum(G R))
 *                        log_softmax  dX = G - softmax(X) sum(G)
 *                        nll_loss     dX = -G onehot(t) / N
 *                        cross_entropy dX = G (softmax(X) - onehot(t)) / N
 */
#include <math.h>

#include "../core/internal.h"

/* Target i of t (N) i64. */
static int64_t target_at(const nb_tensor *t, int64_t i) { return (int64_t)nbi_get_at(t, i * t->strides[0]); }

/* out (contiguous) = softmax or log-softmax of x (contiguous) along axis ax, through the backend's row kernel. */
static void softmax_kernel(nb_tensor *out, const nb_tensor *x, int ax, bool logarithm) {
    int64_t n = x->shape[ax], outer = 1, inner = 1;
    for (int i = 0; i < ax; i++) outer *= x->shape[i];
    for (int i = ax + 1; i < x->rank; i++) inner *= x->shape[i];
    nbi_arr o = nbi_arr_of(out), xa = nbi_arr_of(x);
    nbi_be(x)->softmax(x->dtype, o.data, xa.data, outer, n, inner, logarithm);
}

static nb_tensor *softmax_op(const char *fn, nbi_op op, nb_tensor *a, int axis) {
    if (!nbi_check_float(fn, a, 1)) return NULL;
    int ax;
    if (a->rank == 0 || !nbi_axis(axis, a->rank, &ax))
        return nbi_err(fn, "axis %d is out of range for a tensor %s of rank %d", axis, NBI_SHAPE(a), a->rank);
    nb_tensor *c = nbi_contiguous_input(fn, a);
    if (!c) return NULL;
    nb_tensor *out = nbi_empty_like_be(fn, a, a->dtype, a->rank, a->shape);
    if (out) softmax_kernel(out, c, ax, op == NBI_OP_LOG_SOFTMAX);
    if (c != a) nb_free(c);
    if (!out || !nbi_needs_grad(1, &a)) return out;
    if (!nbi_record(out, op, 1, &a, 0, true)) return NULL;
    out->node.ip[0] = ax;
    return out;
}

nb_tensor *nb_softmax(nb_tensor *a, int axis) { return softmax_op("nb_softmax", NBI_OP_SOFTMAX, a, axis); }
nb_tensor *nb_log_softmax(nb_tensor *a, int axis) {
    return softmax_op("nb_log_softmax", NBI_OP_LOG_SOFTMAX, a, axis);
}

/* Validate (N,C) scores and (N) i64 targets in [0, C). */
static bool check_targets(const char *fn, const nb_tensor *x, const nb_tensor *t) {
    if (!nbi_check_float(fn, x, 1) || !nbi_check(fn, t, 2)) return false;
    if (!nbi_same_device(fn, 2, (nb_tensor *[]){(nb_tensor *)x, (nb_tensor *)t})) return false;
    if (x->rank != 2) {
        nbi_err(fn, "input %s must have shape (N,C)", NBI_SHAPE(x));
        return false;
    }
    if (t->dtype != NB_I64 || t->rank != 1 || t->shape[0] != x->shape[0]) {
        char b[160];
        nbi_err(fn, "targets %s must be i64 of shape (%lld,) for input %s", NBI_SHAPE(t), (long long)x->shape[0],
                nbi_shape_s(x, b, sizeof b));
        return false;
    }
    int64_t C = x->shape[1], bad = 0;
    nbi_arr ta = nbi_arr_of(t);
    int64_t i = nbi_be(t)->index_check(&ta, C, &bad);
    if (i < 0) { /* every target in [-C, C): refuse the negative ones too */
        int64_t at = 0;
        for (i = 0; i < t->numel; i++)
            if ((at = (int64_t)nbi_get_at(t, i * t->strides[0])) < 0) break;
        if (i == t->numel) return true;
        bad = at;
    }
    nbi_err(fn, "target %lld at index %lld is outside [0, %lld)", (long long)bad, (long long)i, (long long)C);
    return false;
}

/* -mean over rows i of log p[i, t_i]: p given as logarithms (nll_loss, any strides) or as the softmax of
   logits x (cross_entropy). */
static nb_tensor *loss_op(const char *fn, nbi_op op, nb_tensor *x, nb_tensor *t) {
    if (!check_targets(fn, x, t)) return NULL;
    int64_t N = x->shape[0], C = x->shape[1];
    double acc = 0;
    nb_tensor *in[2] = {x, t}, *ms = NULL; /* cross-entropy keeps its rows' max and sum of exps (N, 2) */
    if (op == NBI_OP_CROSS_ENTROPY) { /* -log softmax(x)[t] = log sum exp(x - m) - (x[t] - m), in double */
        if (N > 0 && nbi_needs_grad(2, in) && !(ms = nbi_empty_like_be(fn, x, NB_F64, 2, (int64_t[]){N, 2})))
            return NULL;
        nb_tensor *c = N > 0 ? nbi_contiguous_input(fn, x) : x; /* N = 0: no rows (and C = 0 implies N = 0) */
        nbi_arr xa = nbi_arr_of(x), ta = nbi_arr_of(t), la = ms ? nbi_arr_of(ms) : xa;
        if (c) xa = nbi_arr_of(c);
        if (!c || (N > 0 && nbi_be(x)->cross_entropy(x->dtype, &acc, xa.data, (const int64_t *)(const void *)ta.data,
                                                      t->strides[0], N, C,
                                                      ms ? (double *)(void *)la.data : NULL) != 0)) {
            if (c) nbi_err(fn, "out of memory for logits %s", NBI_SHAPE(x));
            if (c && c != x) nb_free(c);
            nb_free(ms);
            return NULL;
        }
        if (c != x) nb_free(c);
    } else {
        for (int64_t i = 0; i < N; i++)
            acc -= nbi_get_at(x, i * x->strides[0] + target_at(t, i) * x->strides[1]);
    }
    nb_tensor *out = nbi_empty_like_be(fn, x, x->dtype, 0, NULL);
    if (out) nbi_set_at(out, 0, N ? acc / (double)N : NAN);
    if (out && nbi_needs_grad(2, in)) {
        out = nbi_record(out, op, 2, in, 3, false);
        if (out && ms && nbi_save(out, 1, &ms) != 0) nb_free(out), out = NULL;
    }
    nb_free(ms);
    return out;
}

nb_tensor *nb_nll_loss(nb_tensor *logp, nb_tensor *targets) {
    return loss_op("nb_nll_loss", NBI_OP_NLL_LOSS, logp, targets);
}
nb_tensor *nb_cross_entropy(nb_tensor *logits, nb_tensor *targets) {
    return loss_op("nb_cross_entropy", NBI_OP_CROSS_ENTROPY, logits, targets);
}

/* ------------------------------------------------------------ gradients -- */

int nbi_bw_softmax(nb_tensor *out, nb_tensor *g, nb_tensor **gin) {
    int ax = out->node.ip[0];
    nb_tensor *s = nb_sum_axes(nb_mul(g, out), 1, &ax, true);
    return (gin[0] = nb_mul(out, nb_sub(g, s))) ? 0 : -1;
}

int nbi_bw_log_softmax(nb_tensor *out, nb_tensor *g, nb_tensor **gin) {
    int ax = out->node.ip[0];
    nb_tensor *sm = nb_exp(out); /* softmax(X), differentiable through out */
    return (gin[0] = nb_sub(g, nb_mul(sm, nb_sum_axes(g, 1, &ax, true)))) ? 0 : -1;
}

/* onehot(t) / N as a constant (N,C) tensor of x's dtype */
static nb_tensor *onehot_over_n(const nb_tensor *x, const nb_tensor *t) {
    nb_tensor *oh = nbi_empty_like_be("nb_cross_entropy", x, x->dtype, 2, x->shape);
    if (!oh) return NULL;
    nbi_k_fill(oh, 0);
    int64_t N = x->shape[0], C = x->shape[1];
    for (int64_t i = 0; i < N; i++) nbi_set_at(oh, i * C + target_at(t, i), 1.0 / (double)N);
    return oh;
}

int nbi_bw_nll_loss(nb_tensor *out, nb_tensor *g, nb_tensor **gin) {
    nb_tensor *x = out->node.in[0];
    if (!x->requires_grad) return 0;
    return (gin[0] = nb_mul(nb_neg(g), onehot_over_n(x, out->node.in[1]))) ? 0 : -1;
}

/* The first-order rule in one pass per row, in double, each element rounded
   once: dX = g (softmax(X) - onehot(t)) / N. */
static nb_tensor *cross_entropy_grad(nb_tensor *x, const nb_tensor *t, const nb_tensor *g, const nb_tensor *ms) {
    int64_t N = x->shape[0], C = x->shape[1];
    nb_tensor *c = nbi_contiguous_input("nb_cross_entropy", x);
    nb_tensor *d = c ? nbi_empty_like_be("nb_cross_entropy", x, x->dtype, 2, x->shape) : NULL;
    int rc = -1;
    if (d) {
        nbi_arr da = nbi_arr_of(d), xa = nbi_arr_of(c), ta = nbi_arr_of(t), la = ms ? nbi_arr_of(ms) : da;
        rc = nbi_be(x)->cross_entropy_grad(x->dtype, da.data, xa.data, (const int64_t *)(const void *)ta.data,
                                           t->strides[0], N, C, nbi_get_at(g, 0) / (double)N,
                                           ms ? (const double *)(const void *)la.data : NULL);
    }
    if (rc != 0) {
        if (d) nbi_err("nb_cross_entropy", "out of memory for the gradient of logits %s", NBI_SHAPE(x));
        nb_free(d);
        if (c && c != x) nb_free(c);
        return NULL;
    }
    if (c != x) nb_free(c);
    return d;
}

int nbi_bw_cross_entropy(nb_tensor *out, nb_tensor *g, nb_tensor **gin) {
    nb_tensor *x = out->node.in[0];
    if (!x->requires_grad) return 0;
    if (!nb_grad_enabled() && x->shape[0] > 0) { /* first order: one fused pass with the saved row statistics */
        nb_tensor *ms = out->node.nsaved > 0 ? nbi_saved("nb_cross_entropy backward", out, 0) : NULL;
        if (out->node.nsaved > 0 && !ms) return -1;
        return (gin[0] = cross_entropy_grad(x, out->node.in[1], g, ms)) ? 0 : -1;
    }
    nb_tensor *sm = nb_scale(nb_softmax(x, 1), 1.0 / (double)x->shape[0]);
    return (gin[0] = nb_mul(g, nb_sub(sm, onehot_over_n(x, out->node.in[1])))) ? 0 : -1;
}

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
 *
 * nb_cross_entropy_ex (PyTorch's ignore_index, reduction and label smoothing,
 * class axis last) views logits (..., C) as (N, C) and records the same op with
 * its options on the node (ip[0] reduction, ip[1] = 1, lp[0] ignore_index,
 * lp[1] the rows not ignored, p[0] eps); the kernels take them as an
 * nbi_ce_opts: dX = w_i (softmax(X) - (1 - eps) onehot(t) - eps / C), 0 at
 * ignored rows, with w_i = G / valid, G or G_i for mean, sum and none.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

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
    int64_t i = nbi_be(t)->index_check(&ta, 0, C, &bad);
    if (i < 0) return true;
    nbi_err(fn, "target %lld at index %lld is outside [0, %lld)", (long long)bad, (long long)i, (long long)C);
    return false;
}

/* The cross-entropy op's parameters, kept on its node: nb_cross_entropy's plain mean (ex false, the kernels without
   options) or nb_cross_entropy_ex's reduction, ignore_index, smoothing and count of rows not ignored. */
typedef struct {
    bool ex;
    nb_reduction red;
    int64_t ignore, valid;
    double eps;
} ce_params;

static ce_params params_of(const nb_tensor *out) {
    const nbi_node *nd = &out->node;
    return (ce_params){nd->ip[1] != 0, (nb_reduction)nd->ip[0], nd->lp[0], nd->lp[1], nd->p[0]};
}

/* -mean over rows i of log p[i, t_i]: p given as logarithms (nll_loss, any strides) or as the softmax of
   logits x (cross_entropy; ce: nb_cross_entropy_ex's options, targets already checked, for x (N, C)). */
static nb_tensor *loss_op(const char *fn, nbi_op op, nb_tensor *x, nb_tensor *t, const ce_params *ce) {
    if (!ce && !check_targets(fn, x, t)) return NULL;
    ce_params plain = {false, NB_REDUCE_MEAN, 0, x->shape[0], 0};
    if (!ce) ce = &plain;
    int64_t N = x->shape[0], C = x->shape[1];
    double acc = 0, *rows = NULL;
    /* cross-entropy keeps its rows' max and sum of exps (N, 2), and room (N, C) for what the backend's forward
       keeps for its gradient (the CPU's f32 rows: their exps, so the backward only scales them) */
    nb_tensor *in[2] = {x, t}, *ms = NULL, *ex = NULL;
    if (op == NBI_OP_CROSS_ENTROPY) { /* -log softmax(x)[t] = log sum exp(x - m) - (x[t] - m), in double */
        if (N > 0 && nbi_needs_grad(2, in) &&
            (!(ms = nbi_empty_like_be(fn, x, NB_F64, 2, (int64_t[]){N, 2})) ||
             !(ex = nbi_empty_like_be(fn, x, x->dtype, 2, x->shape)))) {
            nb_free(ms);
            return NULL;
        }
        if (N > 0 && ce->red == NB_REDUCE_NONE && !(rows = nbi_alloc(sizeof(double) * (size_t)N))) {
            nb_free(ms);
            nb_free(ex);
            return nbi_err(fn, "out of memory for logits %s", NBI_SHAPE(x));
        }
        nb_tensor *c = N > 0 ? nbi_contiguous_input(fn, x) : x; /* N = 0: no rows (and C = 0 implies N = 0) */
        nbi_arr xa = nbi_arr_of(x), ta = nbi_arr_of(t), la = ms ? nbi_arr_of(ms) : xa, ea = ex ? nbi_arr_of(ex) : xa;
        nbi_ce_opts o = {ce->ignore, ce->eps, rows, NULL};
        if (c) xa = nbi_arr_of(c);
        if (!c || (N > 0 && nbi_be(x)->cross_entropy(x->dtype, &acc, xa.data, (const int64_t *)(const void *)ta.data,
                                                      t->strides[0], N, C, ms ? (double *)(void *)la.data : NULL,
                                                      ex ? ea.data : NULL, ce->ex ? &o : NULL) != 0)) {
            if (c) nbi_err(fn, "out of memory for logits %s", NBI_SHAPE(x));
            if (c && c != x) nb_free(c);
            nb_free(ms);
            nb_free(ex);
            nbi_dealloc(rows);
            return NULL;
        }
        if (c != x) nb_free(c);
    } else {
        for (int64_t i = 0; i < N; i++)
            acc -= nbi_get_at(x, i * x->strides[0] + target_at(t, i) * x->strides[1]);
    }
    nb_tensor *out = ce->red == NB_REDUCE_NONE ? nbi_empty_like_be(fn, x, x->dtype, 1, &N)
                                               : nbi_empty_like_be(fn, x, x->dtype, 0, NULL);
    if (out && ce->red == NB_REDUCE_NONE)
        for (int64_t i = 0; i < N; i++) nbi_set_at(out, i, rows[i]);
    else if (out)
        nbi_set_at(out, 0, ce->red == NB_REDUCE_SUM ? acc : ce->valid ? acc / (double)ce->valid : NAN);
    nbi_dealloc(rows);
    if (out && nbi_needs_grad(2, in)) {
        out = nbi_record(out, op, 2, in, 3, false);
        if (out) {
            out->node.ip[0] = (int32_t)ce->red, out->node.ip[1] = ce->ex;
            out->node.lp[0] = ce->ignore, out->node.lp[1] = ce->valid, out->node.p[0] = ce->eps;
        }
        if (out && ms && nbi_save(out, 2, (nb_tensor *[]){ms, ex}) != 0) nb_free(out), out = NULL;
    }
    nb_free(ms);
    nb_free(ex);
    return out;
}

nb_tensor *nb_nll_loss(nb_tensor *logp, nb_tensor *targets) {
    return loss_op("nb_nll_loss", NBI_OP_NLL_LOSS, logp, targets, NULL);
}
nb_tensor *nb_cross_entropy(nb_tensor *logits, nb_tensor *targets) {
    return loss_op("nb_cross_entropy", NBI_OP_CROSS_ENTROPY, logits, targets, NULL);
}

/* Checks nb_cross_entropy_ex's operands: logits (..., C) float, targets (...) i64, every target in [0, C) or
   ignore_index; counts the targets not ignored into *valid. t1 is targets viewed as (N). */
static bool check_ex(const char *fn, const nb_tensor *x, const nb_tensor *t, const nb_tensor *t1,
                     const nb_ce_options *o, int64_t *valid) {
    int64_t C = x->shape[x->rank - 1], N = t1->numel, ts = t1->strides[0], n = 0;
    const int64_t *tp = (const int64_t *)(const void *)nbi_arr_of(t1).data;
    for (int64_t i = 0; i < N; i++) {
        const int64_t v = tp[i * ts];
        if (v == o->ignore_index) continue;
        if (v < 0 || v >= C) {
            char at[24 * NB_MAX_RANK + 4] = "(";
            size_t len = 1;
            int64_t idx[NB_MAX_RANK], r = i;
            for (int d = t->rank - 1; d >= 0; d--) idx[d] = t->shape[d] ? r % t->shape[d] : 0, r /= t->shape[d] ? t->shape[d] : 1;
            for (int d = 0; d < t->rank; d++)
                len += (size_t)snprintf(at + len, sizeof at - len, d ? ", %lld" : "%lld", (long long)idx[d]);
            snprintf(at + len, sizeof at - len, ")");
            nbi_err(fn, "target %lld at %s is outside [0, %lld) and is not ignore_index %lld", (long long)v, at,
                    (long long)C, (long long)o->ignore_index);
            return false;
        }
        n++;
    }
    *valid = n;
    return true;
}

nb_tensor *nb_cross_entropy_ex(nb_tensor *logits, nb_tensor *targets, const nb_ce_options *opt) {
    const char *fn = "nb_cross_entropy_ex";
    const nb_ce_options def = {-100, NB_REDUCE_MEAN, 0.0}, *o = opt ? opt : &def;
    if (!nbi_check_float(fn, logits, 1) || !nbi_check(fn, targets, 2)) return NULL;
    if (!nbi_same_device(fn, 2, (nb_tensor *[]){logits, targets})) return NULL;
    if (o->reduction != NB_REDUCE_MEAN && o->reduction != NB_REDUCE_SUM && o->reduction != NB_REDUCE_NONE)
        return nbi_err(fn, "reduction %d is not NB_REDUCE_MEAN, NB_REDUCE_SUM or NB_REDUCE_NONE", (int)o->reduction);
    if (!(o->label_smoothing >= 0 && o->label_smoothing <= 1))
        return nbi_err(fn, "label_smoothing %g is outside [0, 1]", o->label_smoothing);
    if (logits->rank < 1) return nbi_err(fn, "logits %s must have a class axis (last)", NBI_SHAPE(logits));
    bool shape_ok = targets->dtype == NB_I64 && targets->rank == logits->rank - 1;
    for (int d = 0; shape_ok && d < targets->rank; d++) shape_ok = targets->shape[d] == logits->shape[d];
    if (!shape_ok) {
        char b[160];
        return nbi_err(fn, "targets %s must be i64 with the shape of logits %s without its last (class) axis",
                       NBI_SHAPE(targets), nbi_shape_s(logits, b, sizeof b));
    }
    int64_t N = targets->numel, C = logits->shape[logits->rank - 1], valid = 0;
    nb_tensor *t1 = targets->rank == 1 ? targets : nb_reshape(targets, 1, &N);
    if (!t1) return NULL;
    nb_tensor *x2 = NULL, *out = NULL;
    if (check_ex(fn, logits, targets, t1, o, &valid)) {
        x2 = logits->rank == 2 ? logits : nb_reshape(logits, 2, (int64_t[]){N, C});
        ce_params p = {true, o->reduction, o->ignore_index, valid, o->label_smoothing};
        if (x2) out = loss_op(fn, NBI_OP_CROSS_ENTROPY, x2, t1, &p);
        if (out && o->reduction == NB_REDUCE_NONE && targets->rank != 1) {
            nb_tensor *r = nb_reshape(out, targets->rank, targets->shape);
            nb_free(out);
            out = r;
        }
    }
    if (x2 && x2 != logits) nb_free(x2);
    if (t1 != targets) nb_free(t1);
    return out;
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
   once: dX = g (softmax(X) - onehot(t)) / N; under nb_cross_entropy_ex's options dX = w_i (softmax(X) - (1 - eps)
   onehot(t) - eps / C) with w_i = g / valid (mean), g (sum) or g_i (none), and 0 at ignored rows. */
/* into: NULL, or a tensor of x's shape and dtype on the memory of ex (nbi_bw_reuse_saved) for the gradient. */
static nb_tensor *cross_entropy_grad(nb_tensor *x, const nb_tensor *t, const nb_tensor *g, const nb_tensor *ms,
                                     const nb_tensor *ex, const ce_params *p, nb_tensor *into) {
    int64_t N = x->shape[0], C = x->shape[1];
    double *w = NULL;
    if (p->ex && p->red == NB_REDUCE_NONE) {
        if (!(w = nbi_alloc(sizeof(double) * (size_t)N))) {
            nb_free(into);
            return nbi_err("nb_cross_entropy_ex", "out of memory for the gradient of logits %s", NBI_SHAPE(x));
        }
        for (int64_t i = 0; i < N; i++) w[i] = nbi_get_at(g, i * g->strides[0]);
    }
    nb_tensor *c = nbi_contiguous_input("nb_cross_entropy", x);
    nb_tensor *d = !c ? NULL : into ? into : nbi_empty_like_be("nb_cross_entropy", x, x->dtype, 2, x->shape);
    if (!c) nb_free(into);
    int rc = -1;
    if (d) {
        nbi_arr da = nbi_arr_of(d), xa = nbi_arr_of(c), ta = nbi_arr_of(t), la = ms ? nbi_arr_of(ms) : da,
                ea = ex ? nbi_arr_of(ex) : da;
        nbi_ce_opts o = {p->ignore, p->eps, NULL, w};
        double gs = p->red == NB_REDUCE_NONE ? 0
                    : p->red == NB_REDUCE_SUM ? nbi_get_at(g, 0)
                                              : nbi_get_at(g, 0) / (double)p->valid;
        rc = nbi_be(x)->cross_entropy_grad(x->dtype, da.data, xa.data, (const int64_t *)(const void *)ta.data,
                                           t->strides[0], N, C, gs,
                                           ms ? (const double *)(const void *)la.data : NULL,
                                           ms && ex ? ea.data : NULL, p->ex ? &o : NULL);
    }
    nbi_dealloc(w);
    if (rc != 0) {
        if (d) nbi_err("nb_cross_entropy", "out of memory for the gradient of logits %s", NBI_SHAPE(x));
        nb_free(d);
        if (c && c != x) nb_free(c);
        return NULL;
    }
    if (c != x) nb_free(c);
    return d;
}

/* nb_cross_entropy_ex's constants for the composite rule: A (N, C) = (1 - eps) onehot(t) + eps / C and V (N, 1) =
   1 / valid (mean) or 1, both 0 at ignored rows. */
static int ex_constants(const nb_tensor *x, const nb_tensor *t, const ce_params *p, nb_tensor **A, nb_tensor **V) {
    int64_t N = x->shape[0], C = x->shape[1];
    *A = nbi_empty_like_be("nb_cross_entropy_ex", x, x->dtype, 2, x->shape);
    *V = nbi_empty_like_be("nb_cross_entropy_ex", x, x->dtype, 2, (int64_t[]){N, 1});
    if (!*A || !*V) return -1;
    const double v = p->red == NB_REDUCE_MEAN ? 1.0 / (double)p->valid : 1.0, d = p->eps / (double)C;
    for (int64_t i = 0; i < N; i++) {
        const int64_t ti = target_at(t, i);
        const bool ign = ti == p->ignore;
        nbi_set_at(*V, i, ign ? 0.0 : v);
        for (int64_t k = 0; k < C; k++) nbi_set_at(*A, i * C + k, ign ? 0.0 : (k == ti ? 1.0 - p->eps : 0.0) + d);
    }
    return 0;
}

int nbi_bw_cross_entropy(nb_tensor *out, nb_tensor *g, nb_tensor **gin) {
    nb_tensor *x = out->node.in[0];
    if (!x->requires_grad) return 0;
    const ce_params p = params_of(out);
    if (!nb_grad_enabled() && x->shape[0] > 0) { /* first order: one fused pass with the saved row statistics */
        nb_tensor *ms = out->node.nsaved > 0 ? nbi_saved("nb_cross_entropy backward", out, 0) : NULL;
        /* the kept exps, unless an earlier run of this backward (one that failed later on) wrote over them */
        const bool kept = out->node.nsaved > 1 && !nbi_saved_spent(out, 1);
        nb_tensor *ex = kept ? nbi_saved("nb_cross_entropy backward", out, 1) : NULL;
        if ((out->node.nsaved > 0 && !ms) || (kept && !ex)) return -1;
        /* the gradient over the kept exps (the kernel scales them in place) when the graph goes with this backward */
        nb_tensor *into = ms && ex && ex->dtype == x->dtype && x->rank == 2 ? nbi_bw_reuse_saved(out, 1) : NULL;
        return (gin[0] = cross_entropy_grad(x, out->node.in[1], g, ms, ex, &p, into)) ? 0 : -1;
    }
    if (p.ex) { /* g (softmax(X) - A) V, differentiable in X and g */
        nb_tensor *A, *V;
        if (ex_constants(x, out->node.in[1], &p, &A, &V) != 0) return -1;
        nb_tensor *gv = p.red == NB_REDUCE_NONE ? nb_mul(nb_reshape(g, 2, (int64_t[]){x->shape[0], 1}), V) : nb_mul(g, V);
        return (gin[0] = nb_mul(gv, nb_sub(nb_softmax(x, 1), A))) ? 0 : -1;
    }
    nb_tensor *sm = nb_scale(nb_softmax(x, 1), 1.0 / (double)x->shape[0]);
    return (gin[0] = nb_mul(g, nb_sub(sm, onehot_over_n(x, out->node.in[1])))) ? 0 : -1;
}

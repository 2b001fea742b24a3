/*
 * inplace.c - the in-place ops (suffix _), the optimizers' fused updates among
 * them. They are never recorded; each bumps the version counter of the storage
 * it writes, which is how backward notices that a value it saved has since
 * changed.
 */
#include <math.h>

#include "../core/internal.h"

static bool has_overlap(const nb_tensor *t) {
    for (int i = 0; i < t->rank; i++)
        if (t->strides[i] == 0 && t->shape[i] > 1) return true;
    return false;
}

/* Validate dst (and src, which must broadcast to dst's shape); returns src as
   the kernel should read it (converted or copied when needed), or NULL. */
static nb_tensor *prepare(const char *fn, nb_tensor *dst, nb_tensor *src, bool need_src) {
    if (!nbi_check_float(fn, dst, 1)) return NULL;
    if (dst->requires_grad && nb_grad_enabled())
        return nbi_err(fn, "dst %s requires grad; in-place ops on it are refused while grad mode is on "
                           "(wrap the update in nb_set_grad_enabled(false))",
                       NBI_SHAPE(dst));
    if (has_overlap(dst))
        return nbi_err(fn, "dst %s is an expanded view whose elements overlap", NBI_SHAPE(dst));
    if (!need_src) return dst;
    if (!nbi_check_float(fn, src, 2)) return NULL;
    int r;
    int64_t shape[NB_MAX_RANK] = {0};
    bool ok = nbi_broadcast(dst->rank, dst->shape, src->rank, src->shape, &r, shape) && r == dst->rank;
    for (int i = 0; ok && i < r; i++)
        if (shape[i] != dst->shape[i]) ok = false;
    if (!ok) {
        char b[160];
        return nbi_err(fn, "src %s does not broadcast to dst %s", NBI_SHAPE(src), nbi_shape_s(dst, b, sizeof b));
    }
    if (!nbi_same_device(fn, 2, (nb_tensor *[]){dst, src})) return NULL;
    bool alias = src->st == dst->st && src != dst;
    if (src->dtype != dst->dtype || alias) {
        bool was = nb_grad_enabled();
        nb_set_grad_enabled(false);
        src = nb_to(src, dst->dtype);
        nb_set_grad_enabled(was);
    }
    return src;
}

static int finish(nb_tensor *dst, nb_tensor *src, nb_tensor *orig) {
    if (src != orig && src != dst) nb_free(src);
    dst->st->version++;
    return 0;
}

static int binary_(const char *fn, nbi_binop op, nb_tensor *dst, nb_tensor *src) {
    nb_tensor *s = prepare(fn, dst, src, true);
    if (!s) return -1;
    nbi_k_binary(op, dst, dst, s);
    return finish(dst, s, src);
}

int nb_add_(nb_tensor *dst, nb_tensor *src) { return binary_("nb_add_", NBI_B_ADD, dst, src); }
int nb_sub_(nb_tensor *dst, nb_tensor *src) { return binary_("nb_sub_", NBI_B_SUB, dst, src); }
int nb_mul_(nb_tensor *dst, nb_tensor *src) { return binary_("nb_mul_", NBI_B_MUL, dst, src); }
int nb_copy_(nb_tensor *dst, nb_tensor *src) { return binary_("nb_copy_", NBI_B_COPY2, dst, src); }

int nb_scale_(nb_tensor *dst, double c) {
    if (!prepare("nb_scale_", dst, NULL, false)) return -1;
    nbi_k_unary(NBI_U_SCALE, dst, dst, c);
    return finish(dst, dst, dst);
}

int nb_fill_(nb_tensor *dst, double v) {
    if (!prepare("nb_fill_", dst, NULL, false)) return -1;
    nbi_k_fill(dst, v);
    return finish(dst, dst, dst);
}

int nb_axpy_(nb_tensor *dst, double alpha, nb_tensor *src) {
    nb_tensor *s = prepare("nb_axpy_", dst, src, true);
    if (!s) return -1;
    nb_tensor *t = nbi_empty_like_be("nb_axpy_", dst, dst->dtype, s->rank, s->shape);
    if (!t) {
        if (s != src) nb_free(s);
        return -1;
    }
    nbi_k_unary(NBI_U_SCALE, t, s, alpha);
    nbi_k_binary(NBI_B_ADD, dst, dst, t);
    nb_free(t);
    return finish(dst, s, src);
}

/* ---- optimizer updates ---- */

/* p and each state tensor: contiguous, p's shape and float dtype. */
static bool check_state(const char *fn, const nb_tensor *p, const nb_tensor *t, int argi, const char *what) {
    if (!nbi_check_float(fn, t, argi)) return false;
    bool same = t->dtype == p->dtype && t->rank == p->rank && nbi_is_contig(t);
    for (int i = 0; same && i < t->rank; i++) same = t->shape[i] == p->shape[i];
    if (!same) {
        char b[160];
        nbi_err(fn, "%s %s must be contiguous with the shape and dtype of the parameter %s", what, NBI_SHAPE(t),
                nbi_shape_s(p, b, sizeof b));
        return false;
    }
    if (!nbi_same_device(fn, 2, (nb_tensor *[]){(nb_tensor *)p, (nb_tensor *)t})) return false;
    if (t != p && t->st == p->st) {
        nbi_err(fn, "%s %s shares storage with the parameter", what, NBI_SHAPE(t));
        return false;
    }
    return true;
}

static bool check_param(const char *fn, nb_tensor *p) {
    if (!prepare(fn, p, NULL, false)) return false;
    if (!nbi_is_contig(p)) {
        nbi_err(fn, "parameter %s must be contiguous", NBI_SHAPE(p));
        return false;
    }
    return true;
}

int nb_sgd_update_(nb_tensor *p, const nb_tensor *g, nb_tensor *buf, double lr, double momentum,
                   double weight_decay, bool nesterov, bool first) {
    const char *fn = "nb_sgd_update_";
    if (!check_param(fn, p) || !check_state(fn, p, g, 2, "gradient")) return -1;
    if (momentum != 0 && !buf) return nbi_err(fn, "momentum %g needs a buffer", momentum), -1;
    if (momentum != 0 && !check_state(fn, p, buf, 3, "momentum buffer")) return -1;
    nbi_update u = {NBI_UPD_SGD, lr, momentum, 0, 0, weight_decay, 1, 1, nesterov, first};
    nbi_arr pa = nbi_arr_of(p), ga = nbi_arr_of(g), ba = momentum != 0 ? nbi_arr_of(buf) : pa;
    nbi_be(p)->update(&u, p->dtype, pa.data, ga.data, momentum != 0 ? ba.data : NULL, NULL, p->numel);
    if (momentum != 0) buf->st->version++;
    p->st->version++;
    return 0;
}

int nb_adam_update_(nb_tensor *p, const nb_tensor *g, nb_tensor *m, nb_tensor *v, double lr, double beta1,
                    double beta2, double eps, double weight_decay, bool decoupled, int64_t t) {
    const char *fn = "nb_adam_update_";
    if (!check_param(fn, p) || !check_state(fn, p, g, 2, "gradient") || !check_state(fn, p, m, 3, "first moment") ||
        !check_state(fn, p, v, 4, "second moment"))
        return -1;
    if (m == v) return nbi_err(fn, "the two moments must be different tensors"), -1;
    if (t < 1) return nbi_err(fn, "step %lld must be >= 1", (long long)t), -1;
    nbi_update u = {decoupled ? NBI_UPD_ADAMW : NBI_UPD_ADAM, lr, beta1, beta2, eps, weight_decay,
                    1 - pow(beta1, (double)t), 1 - pow(beta2, (double)t), false, false};
    nbi_arr pa = nbi_arr_of(p), ga = nbi_arr_of(g), ma = nbi_arr_of(m), va = nbi_arr_of(v);
    nbi_be(p)->update(&u, p->dtype, pa.data, ga.data, ma.data, va.data, p->numel);
    p->st->version++;
    m->st->version++;
    v->st->version++;
    return 0;
}

int nb_all_finite(const nb_tensor *t, int64_t *where) {
    if (!nbi_check_float("nb_all_finite", t, 1)) return -1;
    int64_t k = -1;
    if (nbi_is_contig(t)) {
        nbi_arr a = nbi_arr_of(t);
        k = nbi_be(t)->first_nonfinite(t->dtype, a.data, t->numel);
    } else {
        for (int64_t i = 0; i < t->numel && k < 0; i++)
            if (!isfinite(nbi_get_at(t, nbi_offset_of(t, i)))) k = i;
    }
    if (k >= 0 && where) *where = k;
    return k < 0;
}

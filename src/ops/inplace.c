/*
 * inplace.c - the in-place ops (suffix _). They are never recorded; each bumps
 * the version counter of the storage it writes, which is how backward notices
 * that a value it saved has since changed.
 */
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
    bool alias = nbi_root(src) == nbi_root(dst) && src != dst;
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
    nbi_root(dst)->version++;
    return 0;
}

static int binary_(const char *fn, nbi_binop op, nb_tensor *dst, nb_tensor *src) {
    nb_tensor *s = prepare(fn, dst, src, true);
    if (!s) return -1;
    nbi_cpu_inplace(op, dst, s);
    return finish(dst, s, src);
}

int nb_add_(nb_tensor *dst, nb_tensor *src) { return binary_("nb_add_", NBI_B_ADD, dst, src); }
int nb_sub_(nb_tensor *dst, nb_tensor *src) { return binary_("nb_sub_", NBI_B_SUB, dst, src); }
int nb_mul_(nb_tensor *dst, nb_tensor *src) { return binary_("nb_mul_", NBI_B_MUL, dst, src); }
int nb_copy_(nb_tensor *dst, nb_tensor *src) { return binary_("nb_copy_", NBI_B_COPY2, dst, src); }

int nb_scale_(nb_tensor *dst, double c) {
    if (!prepare("nb_scale_", dst, NULL, false)) return -1;
    nbi_cpu_unary(NBI_U_SCALE, dst, dst, c);
    return finish(dst, dst, dst);
}

int nb_fill_(nb_tensor *dst, double v) {
    if (!prepare("nb_fill_", dst, NULL, false)) return -1;
    nbi_cpu_fill(dst, v);
    return finish(dst, dst, dst);
}

int nb_axpy_(nb_tensor *dst, double alpha, nb_tensor *src) {
    nb_tensor *s = prepare("nb_axpy_", dst, src, true);
    if (!s) return -1;
    nb_tensor *t = nbi_empty("nb_axpy_", dst->dtype, s->rank, s->shape);
    if (!t) {
        if (s != src) nb_free(s);
        return -1;
    }
    nbi_cpu_unary(NBI_U_SCALE, t, s, alpha);
    nbi_cpu_inplace(NBI_B_ADD, dst, t);
    nb_free(t);
    return finish(dst, s, src);
}

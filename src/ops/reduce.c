/*
 * reduce.c - sum, mean and max over axes: forward and gradient rules.
 *
 * Axes are a bit mask internally. Kernels accumulate in double whatever the
 * dtype (src/backend/cpu/kernels.c). Gradients broadcast the upstream gradient
 * back over the reduced axes with an expand view (no copy).
 */
#include <math.h>

#include "../core/internal.h"

static bool parse_axes(const char *fn, const nb_tensor *a, int naxes, const int *axes, uint32_t *mask) {
    *mask = 0;
    if (naxes == 0) {
        *mask = (uint32_t)((1u << a->rank) - 1);
        return true;
    }
    if (naxes < 0 || !axes) {
        nbi_err(fn, "axes list is NULL or its count %d is negative", naxes);
        return false;
    }
    for (int i = 0; i < naxes; i++) {
        int ax;
        if (!nbi_axis(axes[i], a->rank, &ax)) {
            nbi_err(fn, "axis %d is out of range for a tensor %s of rank %d", axes[i], NBI_SHAPE(a), a->rank);
            return false;
        }
        if (*mask >> ax & 1) {
            nbi_err(fn, "axis %d appears twice in the axes list for %s", axes[i], NBI_SHAPE(a));
            return false;
        }
        *mask |= 1u << ax;
    }
    return true;
}

static int reduced_shape(const nb_tensor *a, uint32_t mask, bool keepdim, int64_t *shape) {
    int r = 0;
    for (int i = 0; i < a->rank; i++) {
        if (mask >> i & 1) {
            if (keepdim) shape[r++] = 1;
        } else {
            shape[r++] = a->shape[i];
        }
    }
    return r;
}

static nb_tensor *reduce(const char *fn, nbi_op op, nb_tensor *a, uint32_t mask, bool keepdim) {
    int64_t shape[NB_MAX_RANK] = {0}, count = 1;
    int r = reduced_shape(a, mask, keepdim, shape);
    for (int i = 0; i < a->rank; i++)
        if (mask >> i & 1) count *= a->shape[i];
    if (op == NBI_OP_MAX_AXES)
        for (int i = 0; i < a->rank; i++)
            if ((mask >> i & 1) && a->shape[i] == 0)
                return nbi_err(fn, "cannot take the max over axis %d of size 0 of %s", i, NBI_SHAPE(a));
    nb_tensor *out = nbi_empty_like_be(fn, a, a->dtype, r, shape);
    if (!out) return NULL;
    double div = op == NBI_OP_MEAN_AXES ? (double)count : 1.0;
    nbi_arr o = nbi_arr_of(out), x = nbi_arr_of(a);
    if (nbi_be(a)->reduce(op == NBI_OP_MAX_AXES ? NBI_R_MAX : NBI_R_SUM, &o, &x, mask, div) != 0) {
        nb_free(out);
        return nbi_err(fn, "out of memory reducing %s", NBI_SHAPE(a));
    }
    if (!nbi_needs_grad(1, &a)) return out;
    if (!nbi_record(out, op, 1, &a, op == NBI_OP_MAX_AXES ? 1 : 0, op == NBI_OP_MAX_AXES)) return NULL;
    out->node.ip[0] = (int32_t)mask;
    out->node.ip[1] = keepdim;
    return out;
}

static nb_tensor *reduce_axes(const char *fn, nbi_op op, nb_tensor *a, int naxes, const int *axes, bool keepdim) {
    uint32_t mask;
    if (!nbi_check_float(fn, a, 1) || !parse_axes(fn, a, naxes, axes, &mask)) return NULL;
    return reduce(fn, op, a, mask, keepdim);
}

nb_tensor *nb_sum(nb_tensor *a) { return reduce_axes("nb_sum", NBI_OP_SUM_AXES, a, 0, NULL, false); }
nb_tensor *nb_mean(nb_tensor *a) { return reduce_axes("nb_mean", NBI_OP_MEAN_AXES, a, 0, NULL, false); }
nb_tensor *nb_sum_axes(nb_tensor *a, int naxes, const int *axes, bool keepdim) {
    return reduce_axes("nb_sum_axes", NBI_OP_SUM_AXES, a, naxes, axes, keepdim);
}
nb_tensor *nb_mean_axes(nb_tensor *a, int naxes, const int *axes, bool keepdim) {
    return reduce_axes("nb_mean_axes", NBI_OP_MEAN_AXES, a, naxes, axes, keepdim);
}
nb_tensor *nb_max_axes(nb_tensor *a, int naxes, const int *axes, bool keepdim) {
    return reduce_axes("nb_max_axes", NBI_OP_MAX_AXES, a, naxes, axes, keepdim);
}

nb_tensor *nbi_sum_to(nb_tensor *g, int rank, const int64_t *shape) {
    if (!g) return NULL;
    int lead = g->rank - rank;
    bool same = lead == 0;
    uint32_t mask = 0;
    for (int i = 0; i < g->rank; i++) {
        if (i < lead || (shape[i - lead] == 1 && g->shape[i] != 1)) mask |= 1u << i;
        if (i >= lead && shape[i - lead] != g->shape[i]) same = false;
    }
    if (same) return g;
    nb_tensor *s = reduce("nbi_sum_to", NBI_OP_SUM_AXES, g, mask, true);
    return nb_reshape(s, rank, shape);
}

/* ------------------------------------------------------------ gradients -- */

/* g (the reduced shape) viewed in the input's shape, without copying. */
static nb_tensor *spread(nb_tensor *out, nb_tensor *g) {
    nb_tensor *in = out->node.in[0];
    uint32_t mask = (uint32_t)out->node.ip[0];
    if (!out->node.ip[1]) {
        int64_t shape[NB_MAX_RANK] = {0};
        int r = reduced_shape(in, mask, true, shape);
        g = nb_reshape(g, r, shape);
    }
    return nb_expand(g, in->rank, in->shape);
}

static int64_t count_of(nb_tensor *out) {
    nb_tensor *in = out->node.in[0];
    int64_t c = 1;
    for (int i = 0; i < in->rank; i++)
        if (out->node.ip[0] >> i & 1) c *= in->shape[i];
    return c;
}

int nbi_bw_sum_axes(nb_tensor *out, nb_tensor *g, nb_tensor **gin) { return (gin[0] = spread(out, g)) ? 0 : -1; }

int nbi_bw_mean_axes(nb_tensor *out, nb_tensor *g, nb_tensor **gin) {
    nb_tensor *n = nb_scalar(g->dtype, (double)count_of(out));
    return (gin[0] = nb_div(spread(out, g), n)) ? 0 : -1;
}

/* The gradient goes to the maximal elements, split evenly among ties. */
int nbi_bw_max_axes(nb_tensor *out, nb_tensor *g, nb_tensor **gin) {
    nb_tensor *in = out->node.in[0];
    nb_tensor *mask = nb_eq(in, spread(out, out));
    if (!mask) return -1;
    nb_tensor *count = reduce("nb_max_axes", NBI_OP_SUM_AXES, mask, (uint32_t)out->node.ip[0], true);
    if (!count) return -1;
    nb_tensor *gk = spread(out, g);
    return (gin[0] = nb_mul(mask, nb_div(gk, nb_expand(count, in->rank, in->shape)))) ? 0 : -1;
}

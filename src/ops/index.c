/*
 * index.c - selecting by integer indices along an axis, and the scatter-adds
 * that are their gradients (and whose gradients are the selections again).
 *
 *   index_select(a, axis, idx)  R[.., k, ..] = A[.., idx[k], ..], idx 1-D: embedding lookup
 *   gather(a, axis, idx)        R[i] = A[i with coordinate axis replaced by idx[i]], idx of a's rank
 *   index_add / scatter_add     zeros of the source shape, G added at those positions
 *
 * Indices are NB_I64; negative ones count from the end; anything else out of
 * range is an error naming the first bad index.
 */
#include <string.h>

#include "../core/internal.h"

/* Validate idx against size n; returns false (error recorded) on a bad index. */
static bool check_idx(const char *fn, const nb_tensor *idx, int64_t n, int ax) {
    if (idx->dtype != NB_I64) {
        nbi_err(fn, "indices %s must be i64", NBI_SHAPE(idx));
        return false;
    }
    nbi_arr ia = nbi_arr_of(idx);
    int64_t v = 0, i = nbi_be(idx)->index_check(&ia, -n, n, &v);
    if (i >= 0) {
        nbi_err(fn, "index %lld at position %lld is out of range for axis %d of size %lld", (long long)v,
                (long long)i, ax, (long long)n);
        return false;
    }
    return true;
}

/* The backend's index_move on tensors. */
static void move(nb_tensor *dst, const nb_tensor *src, const nb_tensor *idx, int ax, bool elementwise, bool add,
                 bool index_on_dst) {
    nbi_arr d = nbi_arr_of(dst), s = nbi_arr_of(src), i = nbi_arr_of(idx);
    nbi_be(dst)->index_move(&d, &s, &i, ax, elementwise, add, index_on_dst);
}

static nb_tensor *select_op(const char *fn, nbi_op op, nb_tensor *a, int axis, nb_tensor *idx) {
    if (!nbi_check(fn, a, 1) || !nbi_check(fn, idx, 3)) return NULL; /* any dtype: i64 labels too */
    if (!nbi_same_device(fn, 2, (nb_tensor *[]){a, idx})) return NULL;
    int ax;
    if (!nbi_axis_arg(fn, axis, a, &ax)) return NULL;
    int64_t shape[NB_MAX_RANK] = {0};
    memcpy(shape, a->shape, sizeof(int64_t) * (size_t)a->rank);
    bool elementwise = op == NBI_OP_GATHER;
    if (elementwise) {
        bool ok = idx->rank == a->rank;
        for (int d = 0; ok && d < a->rank; d++)
            if (d != ax && idx->shape[d] != a->shape[d]) ok = false;
        if (!ok) {
            char b[160];
            return nbi_err(fn, "indices %s must have the rank of %s and match it outside axis %d", NBI_SHAPE(idx),
                           nbi_shape_s(a, b, sizeof b), ax);
        }
        memcpy(shape, idx->shape, sizeof(int64_t) * (size_t)idx->rank);
    } else {
        if (idx->rank != 1) return nbi_err(fn, "indices %s must be 1-D", NBI_SHAPE(idx));
        shape[ax] = idx->shape[0];
    }
    if (!check_idx(fn, idx, a->shape[ax], ax)) return NULL;
    nb_tensor *out = nbi_empty_like_be(fn, a, a->dtype, a->rank, shape);
    if (!out) return NULL;
    move(out, a, idx, ax, elementwise, false, false);
    nb_tensor *in[2] = {a, idx};
    if (!nbi_needs_grad(2, in)) return out;
    if (!nbi_record(out, op, 2, in, 2, false)) return NULL;
    out->node.ip[0] = ax;
    return out;
}

nb_tensor *nb_index_select(nb_tensor *a, int axis, nb_tensor *idx) {
    return select_op("nb_index_select", NBI_OP_INDEX_SELECT, a, axis, idx);
}
nb_tensor *nb_gather(nb_tensor *a, int axis, nb_tensor *idx) {
    return select_op("nb_gather", NBI_OP_GATHER, a, axis, idx);
}

/* Zeros of shape (rank, shape) with g added at the selected positions. */
static nb_tensor *scatter(nbi_op op, nb_tensor *g, nb_tensor *idx, int ax, int rank, const int64_t *shape) {
    if (!g) return NULL;
    nb_tensor *out = nbi_empty_like_be("scatter", g, g->dtype, rank, shape);
    if (!out) return NULL;
    nbi_k_fill(out, 0);
    move(out, g, idx, ax, op == NBI_OP_SCATTER_ADD, true, true);
    nb_tensor *in[2] = {g, idx};
    if (!nbi_needs_grad(2, in)) return out;
    if (!nbi_record(out, op, 2, in, 2, false)) return NULL;
    out->node.ip[0] = ax;
    return out;
}

nb_tensor *nbi_scatter_add(nb_tensor *g, nb_tensor *idx, int ax, int rank, const int64_t *shape) {
    return scatter(NBI_OP_SCATTER_ADD, g, idx, ax, rank, shape);
}

int nbi_bw_index_select(nb_tensor *out, nb_tensor *g, nb_tensor **gin) {
    nb_tensor *a = out->node.in[0], *acc = nbi_bw_acc(a);
    if (acc) { /* a's gradient so far (a tied embedding's, from its head) takes the selected rows in place, */
        move(acc, g, out->node.in[1], out->node.ip[0], false, true, true); /* not a table of zeros added to it */
        return 0;
    }
    return (gin[0] = scatter(NBI_OP_INDEX_ADD, g, out->node.in[1], out->node.ip[0], a->rank, a->shape)) ? 0 : -1;
}
int nbi_bw_gather(nb_tensor *out, nb_tensor *g, nb_tensor **gin) {
    nb_tensor *a = out->node.in[0];
    return (gin[0] = scatter(NBI_OP_SCATTER_ADD, g, out->node.in[1], out->node.ip[0], a->rank, a->shape)) ? 0 : -1;
}
int nbi_bw_index_add(nb_tensor *out, nb_tensor *g, nb_tensor **gin) {
    return (gin[0] = nb_index_select(g, out->node.ip[0], out->node.in[1])) ? 0 : -1;
}
int nbi_bw_scatter_add(nb_tensor *out, nb_tensor *g, nb_tensor **gin) {
    return (gin[0] = nb_gather(g, out->node.ip[0], out->node.in[1])) ? 0 : -1;
}

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
    for (int64_t i = 0; i < idx->numel; i++) {
        int64_t v = *(const int64_t *)(const void *)(idx->data + nbi_offset_of(idx, i) * 8);
        if (v < -n || v >= n) {
            nbi_err(fn, "index %lld at position %lld is out of range for axis %d of size %lld", (long long)v,
                    (long long)i, ax, (long long)n);
            return false;
        }
    }
    return true;
}

static int64_t idx_at(const nb_tensor *idx, int64_t pos, int64_t n) {
    int64_t v = *(const int64_t *)(const void *)(idx->data + nbi_offset_of(idx, pos) * 8);
    return v < 0 ? v + n : v;
}

/* Walk every element of `it` (shape), mapping it to (src, dst) offsets:
   gather=true: dst = it, src = it with coordinate ax replaced by the index.
   scatter=true flips the roles and adds. */
static void move(nb_tensor *dst, const nb_tensor *src, const nb_tensor *idx, int ax, bool elementwise, bool add,
                 bool index_on_dst) {
    const nb_tensor *walk = index_on_dst ? src : dst; /* the tensor whose shape we iterate */
    const nb_tensor *other = index_on_dst ? dst : src;
    int64_t n = other->shape[ax], es = (int64_t)nbi_dsize(dst->dtype);
    if (!elementwise && nbi_is_contig(src) && nbi_is_contig(dst) && src->dtype == dst->dtype) {
        /* Whole rows: a batch of samples, an embedding lookup and its gradient. */
        int64_t outer = 1, inner = 1, nw = walk->shape[ax];
        for (int d = 0; d < ax; d++) outer *= walk->shape[d];
        for (int d = ax + 1; d < walk->rank; d++) inner *= walk->shape[d];
        for (int64_t o = 0; o < outer; o++)
            for (int64_t j = 0; j < nw; j++) {
                int64_t k = idx_at(idx, j, n);
                int64_t ow = (o * nw + j) * inner, oo = (o * n + k) * inner;
                const char *ps = src->data + (index_on_dst ? ow : oo) * es;
                char *pd = dst->data + (index_on_dst ? oo : ow) * es;
                if (!add)
                    memcpy(pd, ps, (size_t)(inner * es));
                else if (dst->dtype == NB_F32)
                    for (int64_t i = 0; i < inner; i++) ((float *)(void *)pd)[i] += ((const float *)(const void *)ps)[i];
                else
                    for (int64_t i = 0; i < inner; i++) ((double *)(void *)pd)[i] += ((const double *)(const void *)ps)[i];
            }
        return;
    }
    int64_t coord[NB_MAX_RANK] = {0};
    for (int64_t e = 0; e < walk->numel; e++) {
        int64_t rem = e;
        for (int d = walk->rank - 1; d >= 0; d--) {
            coord[d] = rem % walk->shape[d];
            rem /= walk->shape[d];
        }
        int64_t k = elementwise ? idx_at(idx, e, n) : idx_at(idx, coord[ax], n);
        int64_t ow = 0, oo = 0;
        for (int d = 0; d < walk->rank; d++) {
            ow += coord[d] * walk->strides[d];
            oo += (d == ax ? k : coord[d]) * other->strides[d];
        }
        const char *ps = src->data + (index_on_dst ? ow : oo) * es;
        char *pd = dst->data + (index_on_dst ? oo : ow) * es;
        if (add)
            nbi_store(dst->dtype, pd, nbi_load(dst, pd) + nbi_load(src, ps));
        else
            memcpy(pd, ps, (size_t)es); /* one dtype: an exact copy, i64 included */
    }
}

static nb_tensor *select_op(const char *fn, nbi_op op, nb_tensor *a, int axis, nb_tensor *idx) {
    if (!nbi_check(fn, a, 1) || !nbi_check(fn, idx, 3)) return NULL; /* any dtype: i64 labels too */
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
    nb_tensor *out = nbi_empty(fn, a->dtype, a->rank, shape);
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
    nb_tensor *out = nbi_empty("scatter", g->dtype, rank, shape);
    if (!out) return NULL;
    nbi_cpu_fill(out, 0);
    move(out, g, idx, ax, op == NBI_OP_SCATTER_ADD, true, true);
    nb_tensor *in[2] = {g, idx};
    if (!nbi_needs_grad(2, in)) return out;
    if (!nbi_record(out, op, 2, in, 2, false)) return NULL;
    out->node.ip[0] = ax;
    return out;
}

int nbi_bw_index_select(nb_tensor *out, nb_tensor *g, nb_tensor **gin) {
    nb_tensor *a = out->node.in[0];
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

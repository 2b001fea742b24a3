/*
 * shape.c - views and layout ops: reshape, permute/transpose, slice, expand,
 * concat, dtype casts and copies, with their gradient rules.
 *
 * Views share their source's storage (nbi_view) and differ only in shape, strides
 * and first element; no data moves. Gradients of views are views or copies of
 * the upstream gradient in the input's geometry.
 */
#include <string.h>

#include "../core/internal.h"

static nb_tensor *record1(nb_tensor *out, nbi_op op, nb_tensor *a) {
    if (!out || !nbi_needs_grad(1, &a)) return out;
    return nbi_record(out, op, 1, &a, 0, false);
}

/* A contiguous copy of a in dtype dt, unrecorded. */
static nb_tensor *copy_as(const char *fn, nb_tensor *a, nb_dtype dt) {
    nb_tensor *out = nbi_empty_like_be(fn, a, dt, a->rank, a->shape);
    if (out) nbi_k_copy(out, a);
    return out;
}

nb_tensor *nb_reshape(nb_tensor *a, int rank, const int64_t *shape) {
    const char *fn = "nb_reshape";
    if (!nbi_check(fn, a, 1)) return NULL;
    if (rank < 0 || rank > NB_MAX_RANK || (rank > 0 && !shape))
        return nbi_err(fn, "rank %d is outside 0..%d or the shape is NULL", rank, NB_MAX_RANK);
    int64_t s[NB_MAX_RANK], n = 1;
    int infer = -1;
    for (int i = 0; i < rank; i++) {
        s[i] = shape[i];
        if (s[i] == -1) {
            if (infer >= 0) return nbi_err(fn, "more than one -1 in the new shape for %s", NBI_SHAPE(a));
            infer = i;
        } else if (s[i] < 0 || !nbi_mul_ok(n, s[i], &n)) {
            return nbi_err(fn, "invalid or overflowing size %lld at axis %d", (long long)s[i], i);
        }
    }
    if (infer >= 0) {
        if (n == 0 || a->numel % n != 0)
            return nbi_err(fn, "cannot infer axis %d: %s has %lld elements, not a multiple of %lld", infer,
                           NBI_SHAPE(a), (long long)a->numel, (long long)n);
        s[infer] = a->numel / n;
        n = a->numel;
    }
    if (n != a->numel) {
        char buf[160];
        return nbi_err(fn, "cannot reshape %s (%lld elements) to %s (%lld elements)", NBI_SHAPE(a),
                       (long long)a->numel, nb_shape_str(rank, s, buf, sizeof buf), (long long)n);
    }
    if (!nbi_shape_ok(fn, nbi_dsize(a->dtype), rank, s)) return NULL; /* an empty a: other sizes may be huge */
    nb_tensor *out;
    if (nbi_is_contig(a)) {
        int64_t st[NB_MAX_RANK];
        nbi_contig_strides(rank, s, st);
        out = nbi_view(a, rank, s, st, a->offset);
    } else {
        nb_tensor *c = copy_as(fn, a, a->dtype);
        if (!c) return NULL;
        int64_t st[NB_MAX_RANK];
        nbi_contig_strides(rank, s, st);
        out = nbi_view(c, rank, s, st, c->offset);
        nb_free(c);
    }
    return record1(out, NBI_OP_RESHAPE, a);
}

nb_tensor *nb_permute(nb_tensor *a, const int *perm) {
    const char *fn = "nb_permute";
    if (!nbi_check(fn, a, 1)) return NULL;
    if (!perm && a->rank > 0) return nbi_err(fn, "perm is NULL for a tensor %s", NBI_SHAPE(a));
    int64_t s[NB_MAX_RANK] = {0}, st[NB_MAX_RANK] = {0};
    uint32_t seen = 0;
    int p[NB_MAX_RANK];
    for (int i = 0; i < a->rank; i++) {
        if (!nbi_axis(perm[i], a->rank, &p[i]) || (seen >> p[i] & 1))
            return nbi_err(fn, "perm entry %d (%d) is out of range or repeated for %s", i, perm[i], NBI_SHAPE(a));
        seen |= 1u << p[i];
        s[i] = a->shape[p[i]];
        st[i] = a->strides[p[i]];
    }
    nb_tensor *out = record1(nbi_view(a, a->rank, s, st, a->offset), NBI_OP_PERMUTE, a);
    if (out && out->has_node)
        for (int i = 0; i < a->rank; i++) out->node.ip[i] = p[i];
    return out;
}

nb_tensor *nb_transpose(nb_tensor *a, int d0, int d1) {
    const char *fn = "nb_transpose";
    if (!nbi_check(fn, a, 1)) return NULL;
    int x, y, perm[NB_MAX_RANK];
    if (!nbi_axis(d0, a->rank, &x) || !nbi_axis(d1, a->rank, &y))
        return nbi_err(fn, "axes %d and %d are out of range for a tensor %s of rank %d", d0, d1, NBI_SHAPE(a),
                       a->rank);
    for (int i = 0; i < a->rank; i++) perm[i] = i;
    perm[x] = y;
    perm[y] = x;
    return nb_permute(a, perm);
}

nb_tensor *nb_slice(nb_tensor *a, int axis, int64_t start, int64_t stop) {
    const char *fn = "nb_slice";
    if (!nbi_check(fn, a, 1)) return NULL;
    int ax;
    if (!nbi_axis_arg(fn, axis, a, &ax)) return NULL;
    int64_t n = a->shape[ax], b = start < 0 ? start + n : start, e = stop < 0 ? stop + n : stop;
    if (e > n) e = n;
    if (b < 0 || b > n || e < b)
        return nbi_err(fn, "range [%lld, %lld) is out of bounds for axis %d of size %lld in %s", (long long)start,
                       (long long)stop, ax, (long long)n, NBI_SHAPE(a));
    int64_t s[NB_MAX_RANK] = {0};
    memcpy(s, a->shape, sizeof s);
    s[ax] = e - b;
    nb_tensor *out = record1(nbi_view(a, a->rank, s, a->strides, a->offset + b * a->strides[ax]), NBI_OP_SLICE, a);
    if (out && out->has_node) {
        out->node.ip[0] = ax;
        out->node.lp[0] = b;
    }
    return out;
}

nb_tensor *nb_expand(nb_tensor *a, int rank, const int64_t *shape) {
    const char *fn = "nb_expand";
    if (!nbi_check(fn, a, 1)) return NULL;
    if (rank < a->rank || rank > NB_MAX_RANK || (rank > 0 && !shape))
        return nbi_err(fn, "cannot expand %s to rank %d", NBI_SHAPE(a), rank);
    int64_t s[NB_MAX_RANK] = {0}, st[NB_MAX_RANK] = {0}, count = 1;
    int lead = rank - a->rank;
    for (int i = 0; i < rank; i++) {
        int j = i - lead;
        int64_t want = shape[i] == -1 && j >= 0 ? a->shape[j] : shape[i];
        if (want < 0 || (j >= 0 && a->shape[j] != 1 && a->shape[j] != want)) {
            char buf[160];
            return nbi_err(fn, "cannot expand %s to %s: axis %d has size %lld", NBI_SHAPE(a),
                           nb_shape_str(rank, shape, buf, sizeof buf), i, j >= 0 ? (long long)a->shape[j] : 0LL);
        }
        s[i] = want;
        /* sizes of 0 aside: an empty result with a huge count of the others would overflow later */
        if (want > 0 && !nbi_mul_ok(count, want, &count)) {
            char buf[160];
            return nbi_err(fn, "cannot expand %s to %s: the element count exceeds 2^63 (sizes of 0 aside)",
                           NBI_SHAPE(a), nb_shape_str(rank, shape, buf, sizeof buf));
        }
        st[i] = (j < 0 || (a->shape[j] == 1 && want != 1)) ? 0 : a->strides[j];
    }
    return record1(nbi_view(a, rank, s, st, a->offset), NBI_OP_EXPAND, a);
}

nb_tensor *nb_concat(int n, nb_tensor *const *ts, int axis) {
    const char *fn = "nb_concat";
    if (n <= 0 || !ts) return nbi_err(fn, "need at least one tensor (got %d)", n);
    for (int i = 0; i < n; i++)
        if (!nbi_check_float(fn, ts[i], i + 1)) return NULL;
    int ax;
    nb_tensor *t0 = ts[0];
    if (!nbi_axis(axis, t0->rank, &ax))
        return nbi_err(fn, "axis %d is out of range for tensors of rank %d", axis, t0->rank);
    int64_t s[NB_MAX_RANK] = {0};
    memcpy(s, t0->shape, sizeof s);
    s[ax] = 0;
    nb_dtype dt = t0->dtype;
    for (int i = 0; i < n; i++) {
        nb_tensor *t = ts[i];
        bool ok = t->rank == t0->rank;
        for (int d = 0; ok && d < t->rank; d++)
            if (d != ax && t->shape[d] != t0->shape[d]) ok = false;
        if (!ok) {
            char b0[160];
            return nbi_err(fn, "tensor %d %s does not match tensor 0 %s outside axis %d", i, NBI_SHAPE(t),
                           nbi_shape_s(t0, b0, sizeof b0), ax);
        }
        if (s[ax] > INT64_MAX - t->shape[ax])
            return nbi_err(fn, "the sizes along axis %d add up to more than 2^63", ax);
        s[ax] += t->shape[ax];
        if (t->dtype == NB_F64) dt = NB_F64;
    }
    if (!nbi_same_device(fn, n, ts)) return NULL;
    nb_tensor *out = nbi_empty_like_be(fn, t0, dt, t0->rank, s);
    if (!out) return NULL;
    int64_t off = 0; /* each input into its slab of out */
    for (int i = 0; i < n; i++) {
        nbi_k_copy_into(out, off * out->strides[ax], ts[i]);
        off += ts[i]->shape[ax];
    }
    if (!nbi_needs_grad(n, ts)) return out;
    /* Record with inputs cast to the result dtype, so each gradient has its input's dtype. */
    if (!nbi_record(out, NBI_OP_CONCAT, n, ts, 0, false)) return NULL;
    out->node.ip[0] = ax;
    return out;
}

nb_tensor *nb_to(nb_tensor *t, nb_dtype dt) {
    const char *fn = "nb_to";
    if (!nbi_check(fn, t, 1)) return NULL;
    if (dt != NB_F32 && dt != NB_F64 && dt != NB_I64) return nbi_err(fn, "unknown dtype %d", (int)dt);
    if (dt == NB_I64 && t->dtype != NB_I64) {
        /* Every value must have an i64 value: converting NaN, an infinity or one out of range is undefined. */
        for (int64_t i = 0; i < t->numel; i++) {
            double v = nbi_get_at(t, nbi_offset_of(t, i));
            if (!nbi_i64_fits(v)) {
                char ix[160];
                return nbi_err(fn, "element %s of %s is %.17g, which cannot be converted to i64 (which takes finite "
                                   "values in [-2^63, 2^63), truncated toward zero)",
                               nbi_index_str(t->rank, t->shape, i, ix, sizeof ix), NBI_SHAPE(t), v);
            }
        }
    }
    nb_tensor *out = copy_as(fn, t, dt);
    if (!out || dt == NB_I64 || t->dtype == NB_I64) return out;
    return record1(out, NBI_OP_CAST, t);
}

nb_tensor *nb_clone(nb_tensor *t) {
    if (!nbi_check_float("nb_clone", t, 1)) return NULL;
    return record1(copy_as("nb_clone", t, t->dtype), NBI_OP_CLONE, t);
}

nb_tensor *nb_contiguous(nb_tensor *t) {
    if (!nbi_check("nb_contiguous", t, 1)) return NULL;
    if (nbi_is_contig(t)) return nb_reshape(t, t->rank, t->shape);
    return t->dtype == NB_I64 ? copy_as("nb_contiguous", t, NB_I64) : nb_clone(t);
}

nb_tensor *nb_flip(nb_tensor *a, int axis) {
    const char *fn = "nb_flip";
    if (!nbi_check(fn, a, 1)) return NULL;
    int ax;
    if (!nbi_axis_arg(fn, axis, a, &ax)) return NULL;
    int64_t st[NB_MAX_RANK] = {0};
    memcpy(st, a->strides, sizeof st);
    st[ax] = -st[ax];
    int64_t last = a->shape[ax] > 0 ? a->shape[ax] - 1 : 0;
    nb_tensor *out = record1(nbi_view(a, a->rank, a->shape, st, a->offset + last * a->strides[ax]), NBI_OP_FLIP, a);
    if (out && out->has_node) out->node.ip[0] = ax;
    return out;
}

nb_tensor *nb_squeeze(nb_tensor *a, int axis) {
    const char *fn = "nb_squeeze";
    if (!nbi_check(fn, a, 1)) return NULL;
    int ax;
    if (!nbi_axis(axis, a->rank, &ax) || a->shape[ax] != 1)
        return nbi_err(fn, "axis %d of %s is out of range or not of size 1", axis, NBI_SHAPE(a));
    int64_t s[NB_MAX_RANK] = {0};
    int r = 0;
    for (int i = 0; i < a->rank; i++)
        if (i != ax) s[r++] = a->shape[i];
    return nb_reshape(a, r, s);
}

nb_tensor *nb_unsqueeze(nb_tensor *a, int axis) {
    const char *fn = "nb_unsqueeze";
    if (!nbi_check(fn, a, 1)) return NULL;
    int ax;
    if (a->rank >= NB_MAX_RANK || !nbi_axis(axis, a->rank + 1, &ax))
        return nbi_err(fn, "axis %d is out of range for inserting into %s", axis, NBI_SHAPE(a));
    int64_t s[NB_MAX_RANK] = {0};
    for (int i = 0, j = 0; i <= a->rank; i++) s[i] = i == ax ? 1 : a->shape[j++];
    return nb_reshape(a, a->rank + 1, s);
}

nb_tensor *nb_stack(int n, nb_tensor *const *ts, int axis) {
    const char *fn = "nb_stack";
    if (n <= 0 || !ts || n > 1024) return nbi_err(fn, "need 1..1024 tensors (got %d)", n);
    nb_tensor *u[1024];
    for (int i = 0; i < n; i++) {
        if (!nbi_check_float(fn, ts[i], i + 1)) return NULL;
        if (!(u[i] = nb_unsqueeze(ts[i], axis))) return NULL;
    }
    return nb_concat(n, u, axis);
}

int nb_split(nb_tensor *a, int axis, int n, const int64_t *sizes, nb_tensor **out) {
    const char *fn = "nb_split";
    if (!nbi_check(fn, a, 1)) return -1;
    int ax;
    if (!nbi_axis(axis, a->rank, &ax))
        return nbi_err(fn, "axis %d is out of range for a tensor %s of rank %d", axis, NBI_SHAPE(a), a->rank), -1;
    if (n <= 0 || !sizes || !out) return nbi_err(fn, "need n > 0 sizes and room for the pieces"), -1;
    int64_t total = 0;
    for (int i = 0; i < n; i++) {
        if (sizes[i] < 0) return nbi_err(fn, "size %d is negative (%lld)", i, (long long)sizes[i]), -1;
        if (total > a->shape[ax] - sizes[i]) /* the sum already exceeds the axis (and might overflow) */
            return nbi_err(fn, "sizes %d.. add up to more than axis %d of %s (%lld)", i, ax, NBI_SHAPE(a),
                           (long long)a->shape[ax]), -1;
        total += sizes[i];
    }
    if (total != a->shape[ax])
        return nbi_err(fn, "sizes add up to %lld, but axis %d of %s has %lld", (long long)total, ax, NBI_SHAPE(a),
                       (long long)a->shape[ax]),
               -1;
    int64_t off = 0;
    for (int i = 0; i < n; i++) {
        out[i] = nb_slice(a, ax, off, off + sizes[i]);
        if (!out[i]) {
            for (int k = 0; k < i; k++) nb_free(out[k]), out[k] = NULL;
            return -1;
        }
        off += sizes[i];
    }
    return 0;
}

/* Zeros of the sliced input's shape with g written into the slice: the
   gradient of slice, itself differentiable (its gradient is the slice again). */
static nb_tensor *slice_backward(nb_tensor *g, int ax, int64_t start, int rank, const int64_t *shape) {
    if (!g) return NULL;
    nb_tensor *out = nbi_empty_like_be("slice_backward", g, g->dtype, rank, shape);
    if (!out) return NULL;
    nbi_k_fill(out, 0);
    nbi_k_copy_into(out, start * out->strides[ax], g);
    if (!record1(out, NBI_OP_SLICE_BW, g)) return NULL;
    if (out->has_node) {
        out->node.ip[0] = ax;
        out->node.lp[0] = start;
    }
    return out;
}

/* ------------------------------------------------------------ gradients -- */

#define IN(k) (out->node.in[k])

int nbi_bw_reshape(nb_tensor *out, nb_tensor *g, nb_tensor **gin) {
    return (gin[0] = nb_reshape(g, IN(0)->rank, IN(0)->shape)) ? 0 : -1;
}

int nbi_bw_permute(nb_tensor *out, nb_tensor *g, nb_tensor **gin) {
    int inv[NB_MAX_RANK];
    for (int i = 0; i < out->rank; i++) inv[out->node.ip[i]] = i;
    return (gin[0] = nb_permute(g, inv)) ? 0 : -1;
}

int nbi_bw_slice(nb_tensor *out, nb_tensor *g, nb_tensor **gin) {
    nb_tensor *a = IN(0), *acc = nbi_bw_acc(a);
    if (acc && g->dtype == acc->dtype) { /* a's gradient so far (another part of a split) takes this one in place: */
        const int ax = out->node.ip[0];    /* one zeroed table for all the parts, not one per part added up */
        nb_tensor *v = nbi_view(acc, g->rank, g->shape, acc->strides, acc->offset + out->node.lp[0] * acc->strides[ax]);
        if (!v) return -1;
        nbi_k_binary(NBI_B_ADD, v, v, g);
        nb_free(v);
        return 0;
    }
    return (gin[0] = slice_backward(g, out->node.ip[0], out->node.lp[0], IN(0)->rank, IN(0)->shape)) ? 0 : -1;
}

int nbi_bw_slice_bw(nb_tensor *out, nb_tensor *g, nb_tensor **gin) {
    int ax = out->node.ip[0];
    int64_t b = out->node.lp[0];
    return (gin[0] = nb_slice(g, ax, b, b + IN(0)->shape[ax])) ? 0 : -1;
}

int nbi_bw_expand(nb_tensor *out, nb_tensor *g, nb_tensor **gin) {
    return (gin[0] = nbi_sum_to(g, IN(0)->rank, IN(0)->shape)) ? 0 : -1;
}

int nbi_bw_concat(nb_tensor *out, nb_tensor *g, nb_tensor **gin) {
    int ax = out->node.ip[0];
    int64_t off = 0;
    for (int i = 0; i < out->node.nin; i++) {
        nb_tensor *x = IN(i);
        int64_t len = x->shape[ax];
        if (x->requires_grad) {
            nb_tensor *s = nb_slice(g, ax, off, off + len);
            if (s && s->dtype != x->dtype) s = nb_to(s, x->dtype);
            if (!(gin[i] = s)) return -1;
        }
        off += len;
    }
    return 0;
}

int nbi_bw_cast(nb_tensor *out, nb_tensor *g, nb_tensor **gin) {
    return (gin[0] = nb_to(g, IN(0)->dtype)) ? 0 : -1;
}

int nbi_bw_clone(nb_tensor *out, nb_tensor *g, nb_tensor **gin) {
    (void)out;
    gin[0] = g;
    return 0;
}

int nbi_bw_flip(nb_tensor *out, nb_tensor *g, nb_tensor **gin) {
    return (gin[0] = nb_flip(g, out->node.ip[0])) ? 0 : -1;
}

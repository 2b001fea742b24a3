/*
 * transformer.c - the ops a transformer's code reaches for besides the core ones: random tensors, arange,
 * tril/triu, masked_fill and argmax (gelu_tanh, a kernel op, is in elementwise.c).
 *
 *   randn, rand          the backend's normal / uniform random fills (stream order in backend.h)
 *   arange               values start + i step, made on the host and copied in (nb_from_f64)
 *   tril, triu           where(mask, x, 0) with a constant (rows, cols) mask: gradient where(mask, G, 0)
 *   masked_fill          where(mask, value, x): gradient where(mask, 0, G)
 *   argmax               from max_axes, eq and a max over index values, outside every graph
 * The composites record no node of their own; their gradients, of any order, come from nb_where.
 */
#include <math.h>

#include "../core/internal.h"

#define I64_RANGE "i64 (which takes finite values in [-2^63, 2^63), truncated toward zero)"

/* ---------------------------------------------------------------- random --- */

static nb_tensor *random_fill(const char *fn, nb_dtype dt, int rank, const int64_t *shape, nb_rng *rng,
                              bool normal) {
    if (dt != NB_F32 && dt != NB_F64) {
        if (dt == NB_I64) return nbi_err(fn, "dtype i64 is not a float dtype (f32 or f64)");
        return nbi_err(fn, "unknown dtype %d", (int)dt);
    }
    if (!rng) return nbi_err(fn, "the random generator is NULL");
    if (rank < 0 || rank > NB_MAX_RANK) return nbi_err(fn, "rank %d is outside [0, %d]", rank, NB_MAX_RANK);
    if (rank > 0 && !shape) return nbi_err(fn, "shape is NULL for rank %d", rank);
    nb_tensor *t = nbi_empty(fn, dt, rank, shape);
    if (!t) return NULL;
    nbi_arr d = nbi_arr_of(t);
    if (normal)
        nbi_be(t)->normal(dt, d.data, t->numel, rng, 0.0, 1.0);
    else
        nbi_be(t)->uniform(dt, d.data, t->numel, rng, 0.0, 1.0);
    return t;
}

nb_tensor *nb_randn(nb_dtype dt, int rank, const int64_t *shape, nb_rng *rng) {
    return random_fill("nb_randn", dt, rank, shape, rng, true);
}

nb_tensor *nb_rand(nb_dtype dt, int rank, const int64_t *shape, nb_rng *rng) {
    return random_fill("nb_rand", dt, rank, shape, rng, false);
}

/* ---------------------------------------------------------------- arange --- */

nb_tensor *nb_arange(nb_dtype dt, double start, double end, double step) {
    const char *fn = "nb_arange";
    if (dt != NB_F32 && dt != NB_F64 && dt != NB_I64) return nbi_err(fn, "unknown dtype %d", (int)dt);
    if (!isfinite(start) || !isfinite(end)) return nbi_err(fn, "start %g and end %g must be finite", start, end);
    if (!isfinite(step) || step == 0) return nbi_err(fn, "step %g must be finite and nonzero", step);
    if ((end - start) * step < 0)
        return nbi_err(fn, "step %g points away from end %g (start %g)", step, end, start);
    double len = ceil((end - start) / step);
    if (!(len <= 9007199254740992.0)) return nbi_err(fn, "%g elements are more than 2^53", len);
    int64_t n = (int64_t)len;
    if (dt == NB_I64 && n > 0) {
        double last = start + (double)(n - 1) * step;
        if (!nbi_i64_fits(start) || !nbi_i64_fits(last))
            return nbi_err(fn, "value %.17g cannot be stored in " I64_RANGE, nbi_i64_fits(start) ? last : start);
    }
    if (!nbi_shape_ok(fn, 8, 1, &n)) return NULL;
    double *v = nbi_alloc((size_t)(n ? n : 1) * sizeof(double));
    if (!v) return nbi_err(fn, "out of memory for %lld values", (long long)n);
    for (int64_t i = 0; i < n; i++) v[i] = start + (double)i * step;
    nb_tensor *t = nb_from_f64(dt, 1, &n, v);
    nbi_dealloc(v);
    return t;
}

/* ------------------------------------------------------------ tril, triu --- */

static nb_tensor *tri(const char *fn, nb_tensor *x, int64_t k, bool lower) {
    if (!nbi_check_float(fn, x, 1)) return NULL;
    if (x->rank < 2) return nbi_err(fn, "tensor %s has rank %d, below 2", NBI_SHAPE(x), x->rank);
    int64_t m = x->shape[x->rank - 2], n = x->shape[x->rank - 1], mn;
    if (!nbi_mul_ok(m, n, &mn)) return nbi_err(fn, "matrix %s is too large", NBI_SHAPE(x));
    double *v = nbi_alloc((size_t)(mn ? mn : 1) * sizeof(double));
    if (!v) return nbi_err(fn, "out of memory for a %lld x %lld mask", (long long)m, (long long)n);
    /* keep (i, j) when j - i <= k (tril) or j - i >= k (triu) */
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) v[i * n + j] = lower ? (j - i <= k) : (j - i >= k);
    nb_tensor *mask = nb_from_f64(x->dtype, 2, (int64_t[]){m, n}, v);
    nbi_dealloc(v);
    if (!mask) return NULL;
    if (mask->st->be != x->st->be && !(mask = nb_to_device(mask, nb_device_of(x)))) return NULL;
    return nb_where(mask, x, nb_scalar(x->dtype, 0.0));
}

nb_tensor *nb_tril(nb_tensor *x, int64_t k) { return tri("nb_tril", x, k, true); }
nb_tensor *nb_triu(nb_tensor *x, int64_t k) { return tri("nb_triu", x, k, false); }

/* ----------------------------------------------------------- masked_fill --- */

nb_tensor *nb_masked_fill(nb_tensor *x, nb_tensor *mask, double value) {
    const char *fn = "nb_masked_fill";
    if (!nbi_check_float(fn, x, 1) || !nbi_check(fn, mask, 2)) return NULL;
    int r;
    int64_t shape[NB_MAX_RANK] = {0};
    bool same = nbi_broadcast(mask->rank, mask->shape, x->rank, x->shape, &r, shape) && r == x->rank;
    for (int i = 0; same && i < r; i++) same = shape[i] == x->shape[i];
    if (!same) {
        char sm[160];
        return nbi_err(fn, "mask %s does not broadcast to the shape of x %s", nbi_shape_s(mask, sm, sizeof sm),
                       NBI_SHAPE(x));
    }
    if (!nbi_same_device(fn, 2, (nb_tensor *[]){x, mask})) return NULL;
    return nb_where(mask, nb_scalar(x->dtype, value), x);
}

/* ---------------------------------------------------------------- argmax --- */

nb_tensor *nb_argmax(nb_tensor *x, int axis, bool keepdim) {
    const char *fn = "nb_argmax";
    if (!nbi_check_float(fn, x, 1)) return NULL;
    int ax;
    if (!nbi_axis_arg(fn, axis, x, &ax)) return NULL;
    const int64_t n = x->shape[ax];
    if (n == 0) return nbi_err(fn, "axis %d of %s is empty: it has no largest value", axis, NBI_SHAPE(x));
    if (n > 9007199254740992LL) return nbi_err(fn, "axis %d of %s is longer than 2^53", axis, NBI_SHAPE(x));
    nb_tensor *d = nb_detach(x);
    if (!d) return NULL;
    /* hit = x == max, or x is NaN (NaN is the largest: max_axes gives NaN, which equals nothing) */
    nb_tensor *m = nb_max_axes(d, 1, &ax, true);
    nb_tensor *hit = nb_add(nb_eq(d, m), nb_add_scalar(nb_neg(nb_eq(d, d)), 1.0));
    /* the index along ax where hit, n elsewhere; the first index is the smallest: -max(-index) */
    int64_t ishape[NB_MAX_RANK];
    for (int i = 0; i < x->rank; i++) ishape[i] = i == ax ? n : 1;
    nb_tensor *idx = nb_arange(NB_F64, 0, (double)n, 1);
    if (idx && idx->st->be != x->st->be) idx = nb_to_device(idx, nb_device_of(x));
    idx = nb_reshape(idx, x->rank, ishape);
    nb_tensor *cand = nb_where(hit, nb_neg(idx), nb_scalar(NB_F64, -(double)n));
    nb_tensor *best = nb_neg(nb_max_axes(cand, 1, &ax, keepdim));
    return best ? nb_to(best, NB_I64) : NULL;
}

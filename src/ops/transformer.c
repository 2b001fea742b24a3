/*
 * transformer.c - the ops a transformer's code reaches for besides the core ones: random tensors, arange,
 * tril/triu, masked_fill and argmax (gelu_tanh, a kernel op, is in elementwise.c).
 *
 *   randn, rand          the backend's normal / uniform random fills (stream order in backend.h)
 *   arange               values start + i step, made on the host and copied in (nb_from_f64)
 *   tril, triu           where(mask, x, 0) with a constant (rows, cols) mask: gradient where(mask, G, 0)
 *   masked_fill          where(mask, value, x): gradient where(mask, 0, G)
 *   argmax               from max_axes, eq and a max over index values, outside every graph
 *   topk                 k rounds of that argmax over the values not yet taken; values = gather(x, indices)
 *   multinomial          counts of cdf <= u total per draw (cdf the cumulative sum in double)
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

/* ------------------------------------------------------------------ topk --- */

/* The first index along ax (keepdim, f64) where hit is nonzero, or n where none is; idx is 0 .. n-1 along ax
   (broadcastable). */
static nb_tensor *first_index(nb_tensor *hit, nb_tensor *idx, int ax, int64_t n) {
    nb_tensor *cand = nb_where(hit, nb_neg(idx), nb_scalar(NB_F64, -(double)n));
    return nb_neg(nb_max_axes(cand, 1, &ax, true));
}

/* 0 .. n-1 along axis ax of a rank-`rank` tensor (size 1 elsewhere), f64, on the backend of like. */
static nb_tensor *index_col(const nb_tensor *like, int rank, int ax, int64_t n) {
    int64_t shape[NB_MAX_RANK];
    for (int i = 0; i < rank; i++) shape[i] = i == ax ? n : 1;
    nb_tensor *idx = nb_arange(NB_F64, 0, (double)n, 1);
    if (idx && idx->st->be != like->st->be) idx = nb_to_device(idx, nb_device_of(like));
    return nb_reshape(idx, rank, shape);
}

int nb_topk(nb_tensor *x, int64_t k, int axis, bool largest, nb_tensor **values, nb_tensor **indices) {
    const char *fn = "nb_topk";
    if (values) *values = NULL;
    if (indices) *indices = NULL;
    if (!nbi_check_float(fn, x, 1)) return -1;
    int ax;
    if (!nbi_axis_arg(fn, axis, x, &ax)) return -1;
    const int64_t n = x->shape[ax];
    if (k < 0 || k > n) {
        nbi_err(fn, "k = %lld is outside [0, %lld], the size of axis %d of %s", (long long)k, (long long)n, axis,
                NBI_SHAPE(x));
        return -1;
    }
    if (n > 9007199254740992LL) {
        nbi_err(fn, "axis %d of %s is longer than 2^53", axis, NBI_SHAPE(x));
        return -1;
    }
    nb_tensor *idx_out;
    if (k == 0) {
        int64_t shape[NB_MAX_RANK];
        for (int i = 0; i < x->rank; i++) shape[i] = i == ax ? 0 : x->shape[i];
        idx_out = nb_full(NB_I64, x->rank, shape, 0);
        if (idx_out && idx_out->st->be != x->st->be) idx_out = nb_to_device(idx_out, nb_device_of(x));
    } else {
        /* key: x for the largest, -x for the smallest; NaN is the largest either way (as PyTorch), so it comes
           first for the largest and last for the smallest */
        nb_tensor *d = nb_detach(x);
        nb_tensor *key = largest ? d : nb_neg(d);
        nb_tensor *col = index_col(x, x->rank, ax, n);
        nb_tensor *notnan = nb_eq(key, key), *ninf = nb_scalar(x->dtype, -INFINITY);
        nb_tensor *avail = nb_full(x->dtype, x->rank, x->shape, 1.0);
        if (avail && avail->st->be != x->st->be) avail = nb_to_device(avail, nb_device_of(x));
        nb_tensor **picks = nbi_alloc(sizeof(nb_tensor *) * (size_t)k);
        if (!picks) {
            nbi_err(fn, "out of memory for %lld indices", (long long)k);
            return -1;
        }
        bool ok = key && col && avail;
        for (int64_t r = 0; r < k && ok; r++) {
            nb_scope_begin(); /* each round's temporaries go at its end: only the pick and avail stay */
            nb_tensor *num = nb_mul(avail, notnan);                             /* available numbers */
            nb_tensor *isn = nb_mul(avail, nb_add_scalar(nb_neg(notnan), 1.0)); /* available NaNs */
            nb_tensor *kk = nb_where(num, key, ninf);
            nb_tensor *m = nb_max_axes(kk, 1, &ax, true);
            nb_tensor *fh = first_index(nb_mul(nb_eq(kk, m), num), col, ax, n);
            nb_tensor *fn_ = first_index(isn, col, ax, n);
            nb_tensor *lim = nb_scalar(NB_F64, (double)n);
            nb_tensor *pick = largest ? nb_where(nb_lt(fn_, lim), fn_, fh) : nb_where(nb_lt(fh, lim), fh, fn_);
            nb_tensor *next = nb_sub(avail, nb_to(nb_eq(col, pick), x->dtype));
            ok = pick && next;
            if (ok) {
                picks[r] = nb_keep(pick);
                nb_keep(next);
            }
            nb_scope_end();
            if (ok) {
                nb_free(avail);
                avail = next;
            }
        }
        nb_tensor *all = ok ? (k == 1 ? picks[0] : nb_concat((int)k, picks, ax)) : NULL;
        nbi_dealloc(picks);
        idx_out = all ? nb_to(all, NB_I64) : NULL;
    }
    if (!idx_out) return -1;
    if (values) {
        *values = k == 0 ? nb_slice(x, ax, 0, 0) : nb_gather(x, ax, idx_out);
        if (!*values) return -1;
    }
    if (indices) *indices = idx_out;
    return 0;
}

/* ----------------------------------------------------------- multinomial --- */

nb_tensor *nb_multinomial(nb_tensor *p, int64_t num_samples, nb_rng *rng) {
    const char *fn = "nb_multinomial";
    if (!nbi_check_float(fn, p, 1)) return NULL;
    if (p->rank != 1 && p->rank != 2) return nbi_err(fn, "probabilities %s must have rank 1 or 2", NBI_SHAPE(p));
    if (!rng) return nbi_err(fn, "the random generator is NULL");
    if (num_samples < 0) return nbi_err(fn, "num_samples %lld is negative", (long long)num_samples);
    const int64_t n = p->shape[p->rank - 1], rows = p->rank == 2 ? p->shape[0] : 1;
    if (n == 0) return nbi_err(fn, "probabilities %s have no categories", NBI_SHAPE(p));
    if (n > 9007199254740992LL) return nbi_err(fn, "%lld categories are more than 2^53", (long long)n);
    int64_t rs, rsn;
    if (!nbi_mul_ok(rows, num_samples, &rs) || !nbi_mul_ok(rs, n, &rsn))
        return nbi_err(fn, "%lld draws over %lld categories are too many", (long long)rs, (long long)n);
    int64_t oshape[2] = {rows, num_samples};
    int orank = p->rank;
    if (orank == 1) oshape[0] = num_samples;
    if (rs == 0) {
        nb_tensor *e = nb_full(NB_I64, orank, oshape, 0);
        if (e && e->st->be != p->st->be) e = nb_to_device(e, nb_device_of(p));
        return e;
    }
    nb_tensor *pd = nb_reshape(nb_to(nb_detach(p), NB_F64), 2, (int64_t[]){rows, n});
    if (!pd) return NULL;
    int64_t where_bad = -1;
    int fin = nb_all_finite(pd, &where_bad);
    if (fin != 1) {
        if (fin == 0) nbi_err(fn, "probabilities %s hold an infinity or a NaN", NBI_SHAPE(p));
        return NULL;
    }
    double lo = -nb_item(nb_max_axes(nb_neg(pd), 0, NULL, false));
    if (!(lo >= 0)) return nbi_err(fn, "probabilities %s hold a negative value (%g)", NBI_SHAPE(p), lo);
    nb_tensor *cdf = nb_cumsum(pd, 1);
    nb_tensor *total = nb_slice(cdf, 1, n - 1, n); /* (rows, 1) */
    double tmin = -nb_item(nb_max_axes(nb_neg(total), 0, NULL, false));
    if (!(tmin > 0)) return nbi_err(fn, "a row of %s sums to 0: no category can be drawn", NBI_SHAPE(p));
    /* t (rows, S, 1) = u total, one draw per sample in row-major order; the index is the number of cdf values
       <= t: then cdf[i - 1] <= t < cdf[i], so p[i] > 0 (u total may round up to total: the last positive) */
    nb_tensor *u = nb_rand(NB_F64, 2, (int64_t[]){rows, num_samples}, rng);
    if (u && u->st->be != p->st->be) u = nb_to_device(u, nb_device_of(p));
    nb_tensor *t = nb_reshape(nb_mul(u, total), 3, (int64_t[]){rows, num_samples, 1});
    nb_tensor *c3 = nb_reshape(cdf, 3, (int64_t[]){rows, 1, n});
    nb_tensor *le = nb_add_scalar(nb_neg(nb_lt(t, c3)), 1.0); /* cdf <= t */
    nb_tensor *count = nb_sum_axes(le, 1, (int[]){2}, false); /* (rows, S) */
    nb_tensor *col = index_col(p, 2, 1, n);
    nb_tensor *flipped = nb_flip(nb_gt(pd, nb_scalar(NB_F64, 0)), 1);
    nb_tensor *last = nb_add_scalar(nb_neg(first_index(flipped, col, 1, n)), (double)(n - 1)); /* (rows, 1) */
    nb_tensor *pick = nb_where(nb_lt(count, nb_scalar(NB_F64, (double)n)), count, last);
    pick = nb_reshape(pick, orank, oshape);
    return pick ? nb_to(pick, NB_I64) : NULL;
}

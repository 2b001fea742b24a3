/*
 * misc.c - cumulative sum, constant padding, and inverted dropout, with the
 * random generator dropout draws from.
 *
 *   cumsum along an axis   dA = flip(cumsum(flip(G)))
 *   pad with a constant    dA = G sliced back to A's region
 *   dropout(x, p)          x * mask / (1 - p), mask ~ Bernoulli(1 - p), as the
 *                          seed's inverted dropout; the identity when not training
 */
#include <math.h>
#include <string.h>

#include "../core/internal.h"

/* ----------------------------------------------------------------- rng --- */

void nb_rng_seed(nb_rng *r, uint64_t seed) {
    if (r) r->state = seed;
}

uint64_t nb_rng_next(nb_rng *r) {
    uint64_t z = (r->state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

double nb_rng_uniform(nb_rng *r) { return (double)(nb_rng_next(r) >> 11) * (1.0 / 9007199254740992.0); }

/* -------------------------------------------------------------- cumsum --- */

nb_tensor *nb_cumsum(nb_tensor *a, int axis) {
    const char *fn = "nb_cumsum";
    if (!nbi_check_float(fn, a, 1)) return NULL;
    int ax;
    if (!nbi_axis_arg(fn, axis, a, &ax)) return NULL;
    nb_tensor *out = nbi_empty_like_be(fn, a, a->dtype, a->rank, a->shape);
    if (!out) return NULL;
    nbi_k_copy(out, a);
    int64_t n = a->shape[ax], outer = 1, inner = 1;
    for (int i = 0; i < ax; i++) outer *= a->shape[i];
    for (int i = ax + 1; i < a->rank; i++) inner *= a->shape[i];
    nbi_arr o = nbi_arr_of(out);
    nbi_be(out)->cumsum(out->dtype, o.data, outer, n, inner);
    if (!nbi_needs_grad(1, &a)) return out;
    if (!nbi_record(out, NBI_OP_CUMSUM, 1, &a, 0, false)) return NULL;
    out->node.ip[0] = ax;
    return out;
}

int nbi_bw_cumsum(nb_tensor *out, nb_tensor *g, nb_tensor **gin) {
    int ax = out->node.ip[0];
    return (gin[0] = nb_flip(nb_cumsum(nb_flip(g, ax), ax), ax)) ? 0 : -1;
}

/* ----------------------------------------------------------------- pad --- */

nb_tensor *nb_pad(nb_tensor *a, const int64_t *pads, double value) {
    const char *fn = "nb_pad";
    if (!nbi_check_float(fn, a, 1)) return NULL;
    if (!pads && a->rank > 0) return nbi_err(fn, "pads is NULL for a tensor %s", NBI_SHAPE(a));
    int64_t shape[NB_MAX_RANK] = {0};
    for (int i = 0; i < a->rank; i++) {
        int64_t lo = pads[2 * i], hi = pads[2 * i + 1];
        if (lo < 0 || hi < 0)
            return nbi_err(fn, "padding (%lld, %lld) of axis %d is negative", (long long)lo, (long long)hi, i);
        /* The backward keeps each leading pad in an int32 node parameter. */
        if (lo > INT32_MAX || hi > INT64_MAX - a->shape[i] - lo)
            return nbi_err(fn, "padding (%lld, %lld) of axis %d of %s is too large (the leading one at most %d, "
                               "the padded size at most %lld)",
                           (long long)lo, (long long)hi, i, NBI_SHAPE(a), INT32_MAX, (long long)INT64_MAX);
        shape[i] = a->shape[i] + lo + hi;
    }
    nb_tensor *out = nbi_empty_like_be(fn, a, a->dtype, a->rank, shape);
    if (!out) return NULL;
    nbi_k_fill(out, value);
    int64_t off = 0;
    for (int i = 0; i < a->rank; i++) off += pads[2 * i] * out->strides[i];
    nbi_k_copy_into(out, off, a);
    if (!nbi_needs_grad(1, &a)) return out;
    if (!nbi_record(out, NBI_OP_PAD, 1, &a, 0, false)) return NULL;
    for (int i = 0; i < a->rank; i++) out->node.ip[i] = (int32_t)pads[2 * i];
    return out;
}

int nbi_bw_pad(nb_tensor *out, nb_tensor *g, nb_tensor **gin) {
    nb_tensor *a = out->node.in[0], *r = g;
    for (int i = 0; i < a->rank && r; i++) r = nb_slice(r, i, out->node.ip[i], out->node.ip[i] + a->shape[i]);
    return (gin[0] = r) ? 0 : -1;
}

/* -------------------------------------------------------------- dropout -- */

nb_tensor *nb_dropout(nb_tensor *x, double p, bool training, nb_rng *rng) {
    const char *fn = "nb_dropout";
    if (!nbi_check_float(fn, x, 1)) return NULL;
    if (!(p >= 0 && p <= 1)) return nbi_err(fn, "probability %g is outside [0, 1]", p);
    if (!training || p == 0) return nb_reshape(x, x->rank, x->shape); /* identity, recorded as a view */
    if (!rng) return nbi_err(fn, "a random generator is needed in training mode");
    nb_tensor *mask = nbi_empty_like_be(fn, x, x->dtype, x->rank, x->shape);
    if (!mask) return NULL;
    double keep = p == 1 ? 0 : 1.0 / (1.0 - p);
    nbi_arr m = nbi_arr_of(mask);
    nbi_be(mask)->bernoulli(mask->dtype, m.data, mask->numel, rng, p, keep);
    snprintf(mask->name, sizeof mask->name, "dropout mask");
    nb_tensor *out = nb_mul(x, mask);
    nb_free(mask); /* the caller's handle is the result's; the graph keeps the mask while it needs it */
    return out;
}

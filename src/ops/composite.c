/*
 * composite.c - ops written entirely with other ops. They record no node of
 * their own; their gradients (of any order) come from the ops they are made of.
 *
 *   maximum(a, b)  a where a > b, b where a < b, (a + b) / 2 at ties, so a tie
 *                  splits the gradient evenly (as PyTorch)
 *   clamp(x, lo, hi)  gradient 1 inside [lo, hi] (bounds included), 0 outside
 *   logsumexp      m + log sum exp(x - m), m the (detached) max, or 0 where that is infinite: stable
 *   var_axes       sum (x - mean)^2 / max(0, n - correction)
 *   norm           sqrt(sum x^2)
 */
#include <math.h>

#include "../core/internal.h"

static nb_tensor *pick(nb_tensor *a, nb_tensor *b, bool max) {
    nb_tensor *first = max ? nb_gt(a, b) : nb_lt(a, b), *second = max ? nb_lt(a, b) : nb_gt(a, b);
    return nb_where(first, a, nb_where(second, b, nb_scale(nb_add(a, b), 0.5)));
}

nb_tensor *nb_maximum(nb_tensor *a, nb_tensor *b) {
    if (!nbi_check_float("nb_maximum", a, 1) || !nbi_check_float("nb_maximum", b, 2)) return NULL;
    return pick(a, b, true);
}

nb_tensor *nb_minimum(nb_tensor *a, nb_tensor *b) {
    if (!nbi_check_float("nb_minimum", a, 1) || !nbi_check_float("nb_minimum", b, 2)) return NULL;
    return pick(a, b, false);
}

nb_tensor *nb_clamp(nb_tensor *x, double lo, double hi) {
    if (!nbi_check_float("nb_clamp", x, 1)) return NULL;
    if (!(lo <= hi)) return nbi_err("nb_clamp", "lower bound %g is above upper bound %g", lo, hi);
    nb_tensor *l = nb_scalar(x->dtype, lo), *h = nb_scalar(x->dtype, hi);
    return nb_where(nb_lt(x, l), nb_expand(l, x->rank, x->shape), nb_where(nb_gt(x, h), h, x));
}

nb_tensor *nb_logsumexp(nb_tensor *x, int naxes, const int *axes, bool keepdim) {
    nb_tensor *m = nb_max_axes(x, naxes, axes, true);
    if (!m) return NULL;
    /* An infinite maximum is replaced by 0 (as PyTorch does), so that x - m is never inf - inf: a slice of
       -inf gives log 0 = -inf, one holding +inf gives log inf = +inf, not NaN. */
    m = nb_detach(m);
    m = nb_where(nb_eq(nb_abs(m), nb_scalar(m->dtype, INFINITY)), nb_scalar(m->dtype, 0), m);
    nb_tensor *r = nb_add(nb_log(nb_sum_axes(nb_exp(nb_sub(x, m)), naxes, axes, true)), m);
    if (!r || keepdim) return r;
    int64_t shape[NB_MAX_RANK] = {0};
    int rank = 0;
    for (int i = 0; i < x->rank; i++) {
        bool reduced = naxes == 0;
        for (int k = 0; k < naxes; k++) {
            int a;
            if (nbi_axis(axes[k], x->rank, &a) && a == i) reduced = true;
        }
        if (!reduced) shape[rank++] = x->shape[i];
    }
    return nb_reshape(r, rank, shape);
}

nb_tensor *nb_var_axes(nb_tensor *x, int naxes, const int *axes, int correction, bool keepdim) {
    nb_tensor *mu = nb_mean_axes(x, naxes, axes, true);
    if (!mu) return NULL;
    int64_t n = x->numel / (mu->numel ? mu->numel : 1);
    /* No degrees of freedom left (correction >= n): divide by 0, as PyTorch, giving inf (NaN for equal values)
       rather than a negative variance. */
    double dof = n - correction > 0 ? (double)(n - correction) : 0.0;
    nb_tensor *d = nb_sub(x, mu);
    return nb_scale(nb_sum_axes(nb_mul(d, d), naxes, axes, keepdim), 1.0 / dof);
}

nb_tensor *nb_norm(nb_tensor *x) {
    if (!nbi_check_float("nb_norm", x, 1)) return NULL;
    return nb_sqrt(nb_sum(nb_mul(x, x)));
}

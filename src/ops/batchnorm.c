/*
 * batchnorm.c - batch normalisation (PyTorch's F.batch_norm), a composite: it
 * records no node of its own, so its gradients of every order come from the
 * ops it is made of.
 *
 * x is (N, C), (N, C, L) or (N, C, H, W); the statistics of channel c are taken
 * over every axis but 1, n = N L (or N H W) values each:
 *     batch statistics (training, or no running statistics given):
 *         mu = mean(x), var = mean((x - mu)^2) (biased)
 *     running statistics (eval): mu = running_mean, var = running_var (constants)
 *     y = (x - mu) / sqrt(var + eps) * gamma + beta
 * Training with running statistics also updates them in place, outside the
 * graph, as PyTorch does:
 *     running_mean = (1 - momentum) running_mean + momentum mu
 *     running_var  = (1 - momentum) running_var  + momentum var n / (n - 1)
 * Every argument is checked before anything is written, and the new running
 * values are computed in full before either is copied, so a failed call
 * leaves them as they were.
 */
#include <math.h>

#include "../core/internal.h"

/* The result, and in training the new running values (new_m, new_v, NULL when not wanted). Temporaries go to
   the caller's scope. */
static nb_tensor *forward(nb_tensor *x, nb_tensor *gamma, nb_tensor *beta, nb_tensor *rm, nb_tensor *rv, bool batch,
                          double eps, int64_t n, double momentum, nb_tensor **new_m, nb_tensor **new_v) {
    int axes[3] = {0, 2, 3}, naxes = x->rank - 1;
    int64_t C = x->shape[1], bshape[4] = {1, C, 1, 1};
    nb_tensor *mu, *var, *d;
    if (batch) {
        mu = nb_mean_axes(x, naxes, axes, true);
        d = nb_sub(x, mu);
        var = nb_mean_axes(nb_mul(d, d), naxes, axes, true);
    } else { /* constants: no gradient reaches the running statistics */
        mu = nb_reshape(nb_detach(rm), x->rank, bshape);
        var = nb_reshape(nb_detach(rv), x->rank, bshape);
        d = nb_sub(x, mu);
    }
    nb_tensor *y = nb_mul(d, nb_pow(nb_add_scalar(var, eps), -0.5));
    if (gamma) y = nb_mul(y, nb_reshape(gamma, x->rank, bshape));
    if (beta) y = nb_add(y, nb_reshape(beta, x->rank, bshape));
    if (!y || !new_m) return y;
    bool was = nb_grad_enabled();
    nb_set_grad_enabled(false);
    nb_tensor *m1 = nb_reshape(nb_detach(mu), 1, &C), *v1 = nb_reshape(nb_detach(var), 1, &C);
    *new_m = nb_add(nb_scale(rm, 1 - momentum), nb_scale(m1, momentum));
    *new_v = nb_add(nb_scale(rv, 1 - momentum), nb_scale(v1, momentum * (double)n / (double)(n - 1)));
    nb_set_grad_enabled(was);
    return *new_m && *new_v ? y : NULL;
}

nb_tensor *nb_batch_norm(nb_tensor *x, nb_tensor *gamma, nb_tensor *beta, nb_tensor *running_mean,
                         nb_tensor *running_var, bool training, double momentum, double eps) {
    const char *fn = "nb_batch_norm";
    static const char *const names[4] = {"gamma", "beta", "running_mean", "running_var"};
    if (!nbi_check_float(fn, x, 1)) return NULL;
    if (x->rank < 2 || x->rank > 4)
        return nbi_err(fn, "input %s must have rank 2 (N, C), 3 (N, C, L) or 4 (N, C, H, W)", NBI_SHAPE(x));
    int64_t C = x->shape[1], n = x->shape[0];
    for (int i = 2; i < x->rank; i++) n *= x->shape[i];
    nb_tensor *p[4] = {gamma, beta, running_mean, running_var};
    char b[160];
    for (int i = 0; i < 4; i++) {
        if (!p[i]) continue;
        if (!nbi_check_float(fn, p[i], i + 2)) return NULL;
        if (p[i]->rank != 1 || p[i]->shape[0] != C)
            return nbi_err(fn, "%s %s must have shape (%lld,) to match input %s (channels on axis 1)", names[i],
                           NBI_SHAPE(p[i]), (long long)C, nbi_shape_s(x, b, sizeof b));
        if (p[i]->dtype != x->dtype)
            return nbi_err(fn, "%s %s is %s but input %s is %s: they must share one dtype", names[i],
                           NBI_SHAPE(p[i]), p[i]->dtype == NB_F32 ? "f32" : "f64", nbi_shape_s(x, b, sizeof b),
                           x->dtype == NB_F32 ? "f32" : "f64");
    }
    if (!running_mean != !running_var)
        return nbi_err(fn, "running_mean %s and running_var %s must be given together (input %s)",
                       running_mean ? NBI_SHAPE(running_mean) : "NULL", running_var ? NBI_SHAPE(running_var) : "NULL",
                       nbi_shape_s(x, b, sizeof b));
    if (!(momentum >= 0 && momentum <= 1))
        return nbi_err(fn, "momentum %g must be in [0, 1] (input %s)", momentum, NBI_SHAPE(x));
    if (!(eps > 0) || !isfinite(eps))
        return nbi_err(fn, "eps %g must be finite and > 0 (input %s)", eps, NBI_SHAPE(x));
    bool batch = training || !running_mean, update = training && running_mean && n > 0;
    if (batch && n == 1)
        return nbi_err(fn, "expected more than 1 value per channel when training, got input %s", NBI_SHAPE(x));
    for (int i = 2; update && i < 4; i++)
        if (C > 1 && p[i]->strides[0] == 0)
            return nbi_err(fn, "%s %s is an expanded view whose elements overlap: it cannot be updated in place",
                           names[i], NBI_SHAPE(p[i]));
    if (!nbi_same_device(fn, 5, (nb_tensor *[]){x, gamma, beta, running_mean, running_var})) return NULL;
    int depth = nb_scope_depth();
    nb_scope_begin();
    if (nb_scope_depth() != depth + 1) return NULL; /* no room for the scope: error recorded */
    nb_tensor *new_m = NULL, *new_v = NULL;
    nb_tensor *y = forward(x, gamma, beta, running_mean, running_var, batch, eps, n, momentum,
                           update ? &new_m : NULL, update ? &new_v : NULL);
    if (y && update) {
        /* Checked above and of one dtype: the copies cannot fail, so both statistics change or neither does. */
        bool was = nb_grad_enabled();
        nb_set_grad_enabled(false);
        if (nb_copy_(running_mean, new_m) != 0 || nb_copy_(running_var, new_v) != 0) y = NULL;
        nb_set_grad_enabled(was);
    }
    if (y) y = nb_keep(y);
    nb_scope_end();
    return y;
}

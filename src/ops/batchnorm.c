/*
 * batchnorm.c - batch normalisation (PyTorch's F.batch_norm).
 *
 * With the batch's statistics it is an op (batch_norm): the backend's kernel
 * computes each channel's mean and rstd (saved on the node) and y in one
 * pass; the first-order backward is the batch_norm_grad kernel, and when a
 * graph of the gradient is being built the rule is written with
 * differentiable ops (below), so it differentiates again. With running
 * statistics (eval) it is a composite of ops (an affine map per channel).
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

/* The op with the batch's statistics: y, and the batch's mean and biased variance (C) in f64 for the running
   update (NULL when not wanted). */
static nb_tensor *fused(const char *fn, nb_tensor *x, nb_tensor *gamma, nb_tensor *beta, double eps, nb_tensor **mean64,
                        nb_tensor **var64) {
    const nbi_backend *be = nbi_be(x);
    int64_t N = x->shape[0], C = x->shape[1], S = 1;
    for (int i = 2; i < x->rank; i++) S *= x->shape[i];
    nb_tensor *cx = nbi_contiguous_input(fn, x);
    nb_tensor *cg = cx && gamma ? nbi_contiguous_input(fn, gamma) : NULL;
    nb_tensor *cb = cx && beta ? nbi_contiguous_input(fn, beta) : NULL;
    nb_tensor *mean = cx && (!gamma || cg) && (!beta || cb) ? nbi_empty_like_be(fn, x, NB_F64, 1, &C) : NULL;
    nb_tensor *rstd = mean ? nbi_empty_like_be(fn, x, NB_F64, 1, &C) : NULL;
    nb_tensor *var = rstd ? nbi_empty_like_be(fn, x, NB_F64, 1, &C) : NULL;
    nb_tensor *y = var ? nbi_empty_like_be(fn, x, x->dtype, x->rank, x->shape) : NULL;
    if (y) {
        nbi_arr ya = nbi_arr_of(y), xa = nbi_arr_of(cx), ma = nbi_arr_of(mean), ra = nbi_arr_of(rstd),
                va = nbi_arr_of(var), ga = cg ? nbi_arr_of(cg) : xa, ba = cb ? nbi_arr_of(cb) : xa;
        if (be->batch_norm(x->dtype, ya.data, (double *)(void *)ma.data, (double *)(void *)ra.data,
                           (double *)(void *)va.data, xa.data, cg ? ga.data : NULL, cb ? ba.data : NULL, N, C, S,
                           eps) != 0) {
            nb_free(y);
            y = nbi_err(fn, "out of memory for input %s", NBI_SHAPE(x));
        }
    }
    if (cx && cx != x) nb_free(cx);
    if (cg && cg != gamma) nb_free(cg);
    if (cb && cb != beta) nb_free(cb);
    nb_tensor *in[3];
    int n = 0;
    in[n++] = x;
    if (gamma) in[n++] = gamma;
    if (beta) in[n++] = beta;
    if (y && nbi_needs_grad(n, in) && (y = nbi_record(y, NBI_OP_BATCH_NORM, n, in, 3u, false)) != NULL) {
        y->node.ip[0] = gamma != NULL;
        y->node.ip[1] = beta != NULL;
        y->node.p[0] = eps;
        if (nbi_save(y, 2, (nb_tensor *[]){mean, rstd}) != 0) nb_free(y), y = NULL;
    }
    nb_free(rstd);
    if (y && mean64) *mean64 = mean, *var64 = var;
    else nb_free(mean), nb_free(var);
    return y;
}

int nbi_bw_batch_norm(nb_tensor *out, nb_tensor *g, nb_tensor **gin) {
    const char *fn = "batch_norm backward";
    nb_tensor *x = out->node.in[0];
    nb_tensor *gamma = out->node.ip[0] ? out->node.in[1] : NULL;
    int ib = out->node.ip[0] ? 2 : 1;
    nb_tensor *beta = out->node.ip[1] ? out->node.in[ib] : NULL;
    int64_t N = x->shape[0], C = x->shape[1], S = 1, bshape[4] = {1, C, 1, 1};
    for (int i = 2; i < x->rank; i++) S *= x->shape[i];
    bool wx = x->requires_grad, wg = gamma && gamma->requires_grad, wb = beta && beta->requires_grad;
    const nbi_backend *be = nbi_be(x);
    if (!nb_grad_enabled() && nbi_has_kernel(be, batch_norm_grad) && g->dtype == x->dtype) {
        nb_tensor *mean = nbi_saved(fn, out, 0), *rstd = mean ? nbi_saved(fn, out, 1) : NULL;
        if (!rstd) return -1;
        nb_tensor *cx = nbi_contiguous_input(fn, x), *cg = cx ? nbi_contiguous_input(fn, g) : NULL;
        nb_tensor *cgm = cg && gamma ? nbi_contiguous_input(fn, gamma) : NULL;
        nb_tensor *dx = cg && (!gamma || cgm) && wx ? nbi_empty_like_be(fn, x, x->dtype, x->rank, x->shape) : NULL;
        nb_tensor *dg = cg && (!gamma || cgm) && wg ? nbi_empty_like_be(fn, x, x->dtype, 1, &C) : NULL;
        nb_tensor *db = cg && (!gamma || cgm) && wb ? nbi_empty_like_be(fn, x, x->dtype, 1, &C) : NULL;
        int rc = cg && (!gamma || cgm) && (!wx || dx) && (!wg || dg) && (!wb || db) ? 0 : -1;
        if (rc == 0) {
            nbi_arr ga = nbi_arr_of(cg), xa = nbi_arr_of(cx), ma = nbi_arr_of(mean), ra = nbi_arr_of(rstd);
            nbi_arr dxa = dx ? nbi_arr_of(dx) : ga, dga = dg ? nbi_arr_of(dg) : ga, dba = db ? nbi_arr_of(db) : ga,
                    gma = cgm ? nbi_arr_of(cgm) : ga;
            rc = be->batch_norm_grad(x->dtype, dx ? dxa.data : NULL, dg ? dga.data : NULL, db ? dba.data : NULL,
                                     ga.data, xa.data, cgm ? gma.data : NULL, (const double *)(const void *)ma.data,
                                     (const double *)(const void *)ra.data, N, C, S);
            if (rc != 0) nbi_err(fn, "out of memory for input %s", NBI_SHAPE(x));
        }
        if (cx && cx != x) nb_free(cx);
        if (cg && cg != g) nb_free(cg);
        if (cgm && cgm != gamma) nb_free(cgm);
        if (rc != 0) {
            nb_free(dx), nb_free(dg), nb_free(db);
            return -1;
        }
        gin[0] = dx;
        if (wg) gin[1] = dg;
        if (wb) gin[ib] = db;
        return 0;
    }
    /* The rule with differentiable ops: xh = (x - mu) r, gg = g gamma,
       dx = r (gg - mean(gg) - xh mean(gg xh)), dgamma = sum(g xh), dbeta = sum(g), over every axis but 1. */
    int axes[3] = {0, 2, 3}, na = x->rank - 1;
    nb_tensor *mu = nb_mean_axes(x, na, axes, true), *xc = nb_sub(x, mu);
    nb_tensor *r = nb_pow(nb_add_scalar(nb_mean_axes(nb_mul(xc, xc), na, axes, true), out->node.p[0]), -0.5);
    nb_tensor *xh = nb_mul(xc, r);
    if (wx) {
        nb_tensor *gg = gamma ? nb_mul(g, nb_reshape(gamma, x->rank, bshape)) : g;
        nb_tensor *t = nb_sub(nb_sub(gg, nb_mean_axes(gg, na, axes, true)),
                              nb_mul(xh, nb_mean_axes(nb_mul(gg, xh), na, axes, true)));
        if (!(gin[0] = nb_mul(r, t))) return -1;
    }
    if (wg && !(gin[1] = nb_sum_axes(nb_mul(g, xh), na, axes, false))) return -1;
    if (wb && !(gin[ib] = nb_sum_axes(g, na, axes, false))) return -1;
    return 0;
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
    nb_tensor *new_m = NULL, *new_v = NULL, *y;
    if (batch && nbi_has_kernel(nbi_be(x), batch_norm)) {
        nb_tensor *m64 = NULL, *v64 = NULL;
        y = fused(fn, x, gamma, beta, eps, update ? &m64 : NULL, update ? &v64 : NULL);
        if (y && update) { /* the running values, outside the graph */
            bool was = nb_grad_enabled();
            nb_set_grad_enabled(false);
            new_m = nb_add(nb_scale(running_mean, 1 - momentum), nb_scale(nb_to(m64, x->dtype), momentum));
            new_v = nb_add(nb_scale(running_var, 1 - momentum),
                           nb_scale(nb_to(v64, x->dtype), momentum * (double)n / (double)(n - 1)));
            nb_set_grad_enabled(was);
            if (!new_m || !new_v) y = NULL;
        }
    } else {
        y = forward(x, gamma, beta, running_mean, running_var, batch, eps, n, momentum, update ? &new_m : NULL,
                    update ? &new_v : NULL);
    }
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

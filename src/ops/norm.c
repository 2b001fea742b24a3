/*
 * norm.c - layer normalisation over the last axis: forward kernel and fused
 * gradient rule.
 *
 * For each row x of length D:  mu = mean(x), var = mean((x - mu)^2) (biased),
 * r = 1 / sqrt(var + eps), xhat = (x - mu) r, y = gamma xhat + beta.
 * The seed's closed form (004, "layer normalization") gives, with
 * dxhat = G gamma:
 *     dx     = r (dxhat - mean(dxhat) - xhat mean(dxhat xhat))
 *     dgamma = sum over rows of G xhat,   dbeta = sum over rows of G
 * The first-order backward runs this in one pass per row (in double); when a
 * graph of the gradient is being built, the rule recomputes xhat and r from x
 * with differentiable ops, so the gradient can itself be differentiated.
 */
#include <math.h>

#include "../core/internal.h"


/* The mean and 1 / sqrt(var + eps) of the D elements of contiguous x from o, in double. */
static void row_stats(const nb_tensor *x, int64_t o, int64_t D, double eps, double *mu, double *rstd) {
    double m = 0, var = 0;
    for (int64_t j = 0; j < D; j++) m += nbi_at(x, o + j);
    m /= (double)D;
    for (int64_t j = 0; j < D; j++) {
        double v = nbi_at(x, o + j) - m;
        var += v * v;
    }
    *mu = m;
    *rstd = 1.0 / sqrt(var / (double)D + eps);
}

static void layer_norm_kernel(nb_tensor *y, const nb_tensor *x, const nb_tensor *gamma, const nb_tensor *beta,
                              double eps) {
    int64_t D = x->shape[x->rank - 1], rows = D ? x->numel / D : 0;
    for (int64_t r = 0; r < rows; r++) {
        double mu, rstd;
        row_stats(x, r * D, D, eps, &mu, &rstd);
        for (int64_t j = 0; j < D; j++) {
            double v = (nbi_at(x, r * D + j) - mu) * rstd;
            if (gamma) v *= nbi_load(gamma, gamma->data + j * gamma->strides[0] * (int64_t)nbi_dsize(gamma->dtype));
            if (beta) v += nbi_load(beta, beta->data + j * beta->strides[0] * (int64_t)nbi_dsize(beta->dtype));
            nbi_put(y, r * D + j, v);
        }
    }
}

nb_tensor *nb_layer_norm(nb_tensor *x, nb_tensor *gamma, nb_tensor *beta, double eps) {
    const char *fn = "nb_layer_norm";
    if (!nbi_check_float(fn, x, 1)) return NULL;
    if (x->rank == 0) return nbi_err(fn, "input %s needs rank >= 1", NBI_SHAPE(x));
    if (!(eps >= 0)) return nbi_err(fn, "eps %g must be >= 0", eps);
    int64_t D = x->shape[x->rank - 1];
    nb_tensor *p[2] = {gamma, beta};
    for (int i = 0; i < 2; i++) {
        if (!p[i]) continue;
        if (!nbi_check_float(fn, p[i], i + 2)) return NULL;
        if (p[i]->rank != 1 || p[i]->shape[0] != D) {
            char b[160];
            return nbi_err(fn, "%s %s must have shape (%lld,) to match input %s", i ? "beta" : "gamma",
                           NBI_SHAPE(p[i]), (long long)D, nbi_shape_s(x, b, sizeof b));
        }
        if (p[i]->dtype != x->dtype && !(p[i] = nb_to(p[i], x->dtype))) return NULL;
    }
    nb_tensor *c = nbi_contiguous_input(fn, x);
    if (!c) return NULL;
    nb_tensor *y = nbi_empty(fn, x->dtype, x->rank, x->shape);
    if (y) layer_norm_kernel(y, c, p[0], p[1], eps);
    if (c != x) nb_free(c);
    nb_tensor *in[3] = {x};
    int n = 1;
    for (int i = 0; i < 2; i++)
        if (p[i]) in[n++] = p[i];
    if (!y || !nbi_needs_grad(n, in)) return y;
    if (!nbi_record(y, NBI_OP_LAYER_NORM, n, in, (1u << n) - 1, false)) return NULL;
    y->node.ip[0] = gamma != NULL;
    y->node.ip[1] = beta != NULL;
    y->node.p[0] = eps;
    return y;
}

/* The closed form above in one pass per row, in double, each result rounded
   once: the first-order backward (no graph of the gradient is built). dx, dg
   and db may be NULL when not wanted. */
static int layer_norm_backward_kernel(nb_tensor *dx, nb_tensor *dg, nb_tensor *db, const nb_tensor *g,
                                      const nb_tensor *x, const nb_tensor *gamma, double eps) {
    int64_t D = x->shape[x->rank - 1], rows = D ? x->numel / D : 0;
    double *acc = nbi_alloc(sizeof(double) * (size_t)(3 * D + 1)), *sg = acc + D, *sb = acc + 2 * D;
    if (!acc) return -1;
    for (int64_t j = 0; j < 2 * D; j++) sg[j] = 0;
    for (int64_t r = 0; r < rows; r++) {
        const int64_t o = r * D;
        double mu, rstd, m1 = 0, m2 = 0;
        row_stats(x, o, D, eps, &mu, &rstd);
        for (int64_t j = 0; j < D; j++) { /* acc holds xhat for this row */
            double xh = (nbi_at(x, o + j) - mu) * rstd, gj = nbi_at(g, o + j), dxh = gamma ? gj * nbi_at(gamma, j) : gj;
            acc[j] = xh;
            m1 += dxh;
            m2 += dxh * xh;
            sg[j] += gj * xh;
            sb[j] += gj;
        }
        m1 /= (double)D;
        m2 /= (double)D;
        if (dx)
            for (int64_t j = 0; j < D; j++) {
                double gj = nbi_at(g, o + j), dxh = gamma ? gj * nbi_at(gamma, j) : gj;
                nbi_put(dx, o + j, rstd * (dxh - m1 - acc[j] * m2));
            }
    }
    for (int64_t j = 0; j < D; j++) {
        if (dg) nbi_put(dg, j, sg[j]);
        if (db) nbi_put(db, j, sb[j]);
    }
    nbi_dealloc(acc);
    return 0;
}

int nbi_bw_layer_norm(nb_tensor *out, nb_tensor *g, nb_tensor **gin) {
    nb_tensor *x = out->node.in[0];
    nb_tensor *gamma = out->node.ip[0] ? out->node.in[1] : NULL;
    int ib = out->node.ip[0] ? 2 : 1;
    nb_tensor *beta = out->node.ip[1] ? out->node.in[ib] : NULL;
    if (!nb_grad_enabled() && nbi_is_contig(x) && nbi_is_contig(g) && g->dtype == x->dtype &&
        (!gamma || (nbi_is_contig(gamma) && gamma->dtype == x->dtype))) {
        int64_t D = x->shape[x->rank - 1];
        bool wg = gamma && gamma->requires_grad, wb = beta && beta->requires_grad;
        nb_tensor *dx = x->requires_grad ? nbi_empty("layer_norm backward", x->dtype, x->rank, x->shape) : NULL;
        nb_tensor *dg = wg ? nbi_empty("layer_norm backward", x->dtype, 1, &D) : NULL;
        nb_tensor *db = wb ? nbi_empty("layer_norm backward", x->dtype, 1, &D) : NULL;
        if ((x->requires_grad && !dx) || (wg && !dg) || (wb && !db)) return -1;
        if (layer_norm_backward_kernel(dx, dg, db, g, x, gamma, out->node.p[0]) != 0)
            return nbi_err("layer_norm backward", "out of memory"), -1;
        gin[0] = dx;
        if (wg) gin[1] = dg;
        if (wb) gin[ib] = db;
        return 0;
    }
    int last = -1, nlead = x->rank - 1, lead[NB_MAX_RANK];
    for (int i = 0; i < nlead; i++) lead[i] = i;
    nb_tensor *mu = nb_mean_axes(x, 1, &last, true);
    nb_tensor *xc = nb_sub(x, mu);
    nb_tensor *r = nb_pow(nb_add_scalar(nb_mean_axes(nb_mul(xc, xc), 1, &last, true), out->node.p[0]), -0.5);
    nb_tensor *xhat = nb_mul(xc, r);
    if (!xhat) return -1;
    if (x->requires_grad) {
        nb_tensor *dxhat = gamma ? nb_mul(g, gamma) : g;
        nb_tensor *m1 = nb_mean_axes(dxhat, 1, &last, true);
        nb_tensor *m2 = nb_mean_axes(nb_mul(dxhat, xhat), 1, &last, true);
        if (!(gin[0] = nb_mul(r, nb_sub(nb_sub(dxhat, m1), nb_mul(xhat, m2))))) return -1;
    }
    if (gamma && gamma->requires_grad) {
        nb_tensor *s = nb_mul(g, xhat);
        if (!(gin[1] = nlead ? nb_sum_axes(s, nlead, lead, false) : s)) return -1;
    }
    if (beta && beta->requires_grad && !(gin[ib] = nlead ? nb_sum_axes(g, nlead, lead, false) : g)) return -1;
    return 0;
}

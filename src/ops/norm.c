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
 * The first-order backward runs this in one pass per row (the backend's
 * layer_norm_grad kernel); when a
 * graph of the gradient is being built, the rule recomputes xhat and r from x
 * with differentiable ops, so the gradient can itself be differentiated.
 */
#include <math.h>

#include "../core/internal.h"


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
    if (!nbi_same_device(fn, 3, (nb_tensor *[]){x, gamma, beta})) return NULL;
    nb_tensor *c = nbi_contiguous_input(fn, x);
    nb_tensor *cg = c && p[0] ? nbi_contiguous_input(fn, p[0]) : NULL, *cb = c && p[1] ? nbi_contiguous_input(fn, p[1]) : NULL;
    nb_tensor *in[3] = {x};
    int n = 1;
    for (int i = 0; i < 2; i++)
        if (p[i]) in[n++] = p[i];
    int64_t rows = D ? x->numel / D : 0;
    bool rec = nbi_needs_grad(n, in);
    /* recorded: the rows' mean and rstd are kept on the node for the backward */
    nb_tensor *mean = rec ? nbi_empty_like_be(fn, x, NB_F64, 1, &rows) : NULL;
    nb_tensor *rstd = mean ? nbi_empty_like_be(fn, x, NB_F64, 1, &rows) : NULL;
    nb_tensor *y = c && (!p[0] || cg) && (!p[1] || cb) && (!rec || rstd)
                       ? nbi_empty_like_be(fn, x, x->dtype, x->rank, x->shape) : NULL;
    if (y) {
        nbi_arr ya = nbi_arr_of(y), xa = nbi_arr_of(c), ga = cg ? nbi_arr_of(cg) : ya, ba = cb ? nbi_arr_of(cb) : ya,
                ma = mean ? nbi_arr_of(mean) : ya, ra = rstd ? nbi_arr_of(rstd) : ya;
        if (nbi_be(x)->layer_norm(x->dtype, ya.data, xa.data, cg ? ga.data : NULL, cb ? ba.data : NULL, rows, D, eps,
                                  mean ? (double *)(void *)ma.data : NULL,
                                  rstd ? (double *)(void *)ra.data : NULL) != 0) {
            nb_free(y);
            y = nbi_err(fn, "out of memory for %s", NBI_SHAPE(x));
        }
    }
    if (cg && cg != p[0]) nb_free(cg);
    if (cb && cb != p[1]) nb_free(cb);
    if (c && c != x) nb_free(c);
    if (y && rec && (y = nbi_record(y, NBI_OP_LAYER_NORM, n, in, (1u << n) - 1, false)) != NULL) {
        y->node.ip[0] = gamma != NULL;
        y->node.ip[1] = beta != NULL;
        y->node.p[0] = eps;
        if (nbi_save(y, 2, (nb_tensor *[]){mean, rstd}) != 0) nb_free(y), y = NULL;
    }
    nb_free(mean);
    nb_free(rstd);
    return y;
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
        nb_tensor *dx = x->requires_grad ? nbi_empty_like_be("layer_norm backward", x, x->dtype, x->rank, x->shape) : NULL;
        nb_tensor *dg = wg ? nbi_empty_like_be("layer_norm backward", x, x->dtype, 1, &D) : NULL;
        nb_tensor *db = wb ? nbi_empty_like_be("layer_norm backward", x, x->dtype, 1, &D) : NULL;
        if ((x->requires_grad && !dx) || (wg && !dg) || (wb && !db)) return -1;
        nb_tensor *mean = nbi_saved("layer_norm backward", out, 0), *rstd = nbi_saved("layer_norm backward", out, 1);
        if (!mean || !rstd) return -1;
        nbi_arr ga = nbi_arr_of(g), xa = nbi_arr_of(x), dxa = dx ? nbi_arr_of(dx) : ga, dga = dg ? nbi_arr_of(dg) : ga,
                dba = db ? nbi_arr_of(db) : ga, gma = gamma ? nbi_arr_of(gamma) : ga, ma = nbi_arr_of(mean),
                ra = nbi_arr_of(rstd);
        if (nbi_be(x)->layer_norm_grad(x->dtype, dx ? dxa.data : NULL, dg ? dga.data : NULL, db ? dba.data : NULL,
                                       ga.data, xa.data, gamma ? gma.data : NULL, D ? x->numel / D : 0, D,
                                       out->node.p[0], (const double *)(const void *)ma.data,
                                       (const double *)(const void *)ra.data) != 0) {
            nb_free(dx), nb_free(dg), nb_free(db);
            return nbi_err("layer_norm backward", "out of memory"), -1;
        }
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

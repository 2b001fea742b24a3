/*
 * gradcheck.c - compare analytic gradients with central differences.
 *
 * The analytic Jacobian comes from one vector-Jacobian product per output
 * element (seeded with a one-hot tensor), or, for large outputs, from a single
 * product with a fixed random projection v (then both sides are the gradient
 * of sum(f(x) v)). The numeric Jacobian perturbs each input element in place
 * by +-eps with grad mode off and restores it exactly. The second-order check
 * runs the same comparison on h(x) = the vector-Jacobian product of f at x,
 * computed with NB_CREATE_GRAPH.
 */
#include <math.h>
#include <string.h>

#include "../core/internal.h"

typedef struct {
    nb_fn f;
    void *ud;
    nb_tensor *v; /* fixed cotangent of f's output for the second-order check */
} vjp_ctx;

static uint64_t rng_next(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Random values in [0.5, 1.5) with random signs, so no entry is near zero. */
static nb_tensor *random_like(const nb_tensor *t, uint64_t seed) {
    double *vals = nbi_alloc(sizeof(double) * (size_t)(t->numel + 1));
    nb_tensor *r = vals ? nbi_empty_like_be("nb_gradcheck", t, t->dtype, t->rank, t->shape) : NULL;
    if (r) {
        for (int64_t i = 0; i < r->numel; i++) {
            uint64_t x = rng_next(&seed);
            double v = 0.5 + (double)(x >> 11) * (1.0 / 9007199254740992.0);
            vals[i] = (x & 1) ? v : -v;
        }
        nbi_write_host(r, vals, false);
    }
    nbi_dealloc(vals);
    return r;
}

/* h(x): the gradients of sum(f(x) v) with respect to every input, flattened and joined. */
static nb_tensor *vjp_fn(int n, nb_tensor *const *in, void *vud) {
    vjp_ctx *c = vud;
    nb_tensor *out = c->f(n, in, c->ud);
    if (!out) return NULL;
    nb_tensor *grads[16];
    if (n > 16) return nbi_err("nb_gradcheck", "at most 16 inputs for the second-order check");
    if (!nb_grad_enabled()) {
        /* numeric side: the same values, computed with grad mode on, then cut */
        nb_set_grad_enabled(true);
        nb_tensor *r = vjp_fn(n, in, vud);
        nb_set_grad_enabled(false);
        return r ? nb_detach(r) : NULL;
    }
    if (!out->requires_grad) {
        for (int i = 0; i < n; i++) grads[i] = nbi_const_like(in[i], 0.0);
    } else if (nb_gradients(out, c->v, n, in, NB_CREATE_GRAPH, grads) != 0) {
        return NULL;
    }
    nb_tensor *flat[16];
    for (int i = 0; i < n; i++) {
        if (!grads[i]) return NULL;
        flat[i] = nb_reshape(grads[i], 1, (int64_t[]){grads[i]->numel});
        if (flat[i] && flat[i]->dtype != NB_F64) flat[i] = nb_to(flat[i], NB_F64);
    }
    return nb_concat(n, flat, 0);
}

typedef struct {
    double eps, atol, rtol;
    int64_t max_rows;
} params;

static int compare(const char *fn, nb_fn f, void *ud, int n, nb_tensor *const *in, const params *p,
                   nb_gradcheck_result *res, int order) {
    int rc = -1;
    nb_scope_begin();
    nb_tensor *out = f(n, in, ud);
    if (!out) {
        nbi_err(fn, "the function failed");
        goto done;
    }
    int64_t nout = out->numel, total = 0, offs[17];
    for (int i = 0; i < n; i++) {
        offs[i] = total;
        total += in[i]->numel;
    }
    offs[n] = total;
    bool full = nout <= p->max_rows;
    int64_t rows = full ? nout : 1;
    nb_tensor *v = full ? NULL : random_like(out, 0x5eed + (uint64_t)order);
    double *ana = nbi_alloc(sizeof(double) * (size_t)(rows * total + 1));
    double *fp = nbi_alloc(sizeof(double) * (size_t)(nout + 1)), *fm = nbi_alloc(sizeof(double) * (size_t)(nout + 1));
    double *vv = nbi_alloc(sizeof(double) * (size_t)(nout + 1));
    if (!ana || !fp || !fm || !vv || (!full && !v)) {
        nbi_err(fn, "out of memory");
        goto freeall;
    }
    if (v) nb_read_f64(v, vv, nout);
    /* analytic rows */
    for (int64_t j = 0; j < rows; j++) {
        nb_scope_begin();
        nb_tensor *seed = v, *g[16];
        if (full) {
            seed = nbi_const_like(out, 0.0);
            if (seed) nbi_set_at(seed, j, 1.0);
        }
        int r = seed ? nb_gradients(out, seed, n, in, NB_RETAIN_GRAPH, g) : -1;
        for (int i = 0; r == 0 && i < n; i++) nb_read_f64(g[i], ana + j * total + offs[i], in[i]->numel);
        nb_scope_end();
        if (r != 0) goto freeall;
    }
    /* numeric columns, compared as they come */
    bool was = nb_grad_enabled();
    nb_set_grad_enabled(false);
    res->passed = true;
    for (int i = 0; i < n; i++) {
        nb_tensor *x = in[i];
        for (int64_t e = 0; e < x->numel; e++) {
            const int64_t at = nbi_offset_of(x, e);
            double orig = nbi_get_at(x, at);
            double *side[2] = {fp, fm};
            bool ok = true;
            for (int s = 0; s < 2 && ok; s++) {
                nbi_set_at(x, at, orig + (s == 0 ? p->eps : -p->eps));
                nb_scope_begin();
                nb_tensor *y = f(n, in, ud);
                ok = y && y->numel == nout && nb_read_f64(y, side[s], nout) == nout;
                nb_scope_end();
            }
            nbi_set_at(x, at, orig);
            if (!ok) {
                nb_set_grad_enabled(was);
                nbi_err(fn, "the function failed or changed its output size under perturbation");
                goto freeall;
            }
            for (int64_t j = 0; j < rows; j++) {
                double num;
                if (full) {
                    num = (fp[j] - fm[j]) / (2 * p->eps);
                } else {
                    double acc = 0;
                    for (int64_t k = 0; k < nout; k++) acc += vv[k] * (fp[k] - fm[k]);
                    num = acc / (2 * p->eps);
                }
                double a = ana[j * total + offs[i] + e];
                double excess = fabs(a - num) - (p->atol + p->rtol * fabs(num));
                if (excess != excess) excess = INFINITY; /* NaN on either side fails */
                double ratio = excess == INFINITY ? INFINITY : fabs(a - num) / (p->atol + p->rtol * fabs(num));
                if (ratio > res->worst_ratio) res->worst_ratio = ratio;
                if (excess > 0 && (res->passed || excess > res->excess)) {
                    res->passed = false;
                    res->input = i;
                    res->index = e;
                    res->out_index = full ? j : -1;
                    res->analytic = a;
                    res->numeric = num;
                    res->excess = excess;
                    res->order = order;
                } else if (res->passed && excess > res->excess) {
                    res->excess = excess;
                }
            }
        }
    }
    nb_set_grad_enabled(was);
    rc = res->passed ? 0 : 1;
freeall:
    nbi_dealloc(ana);
    nbi_dealloc(fp);
    nbi_dealloc(fm);
    nbi_dealloc(vv);
done:
    nb_scope_end();
    return rc;
}

int nb_gradcheck(nb_fn f, void *ud, int n, nb_tensor *const *inputs, const nb_gradcheck_opts *opts,
                 nb_gradcheck_result *res) {
    const char *fn = "nb_gradcheck";
    nb_gradcheck_result local;
    if (!res) res = &local;
    memset(res, 0, sizeof *res);
    res->excess = -INFINITY;
    res->worst_ratio = 0;
    if (!f || n <= 0 || n > 16 || !inputs) return nbi_err(fn, "need a function and 1..16 inputs (got %d)", n), -1;
    params p = {1e-6, 1e-5, 1e-3, 256};
    bool tol_given = opts && opts->atol > 0 && opts->rtol > 0;
    if (opts) {
        if (opts->eps > 0) p.eps = opts->eps;
        if (opts->atol > 0) p.atol = opts->atol;
        if (opts->rtol > 0) p.rtol = opts->rtol;
        if (opts->max_jacobian_rows > 0) p.max_rows = opts->max_jacobian_rows;
    }
    bool set[16] = {0};
    for (int i = 0; i < n; i++) {
        if (!nbi_check_float(fn, inputs[i], i + 1)) return -1;
        if (inputs[i]->dtype == NB_F32 && !tol_given)
            return nbi_err(fn, "input %d %s is f32; central differences need f64 unless atol and rtol are given",
                           i, NBI_SHAPE(inputs[i])),
                   -1;
    }
    for (int i = 0; i < n; i++)
        if (!inputs[i]->has_node && !inputs[i]->requires_grad) {
            inputs[i]->requires_grad = true;
            set[i] = true;
        }
    bool was = nb_grad_enabled();
    nb_set_grad_enabled(true);
    int rc = compare(fn, f, ud, n, inputs, &p, res, 1);
    if (rc == 0 && opts && opts->second_order) {
        nb_scope_begin();
        nb_tensor *out = f(n, inputs, ud);
        vjp_ctx c = {f, ud, out ? random_like(out, 0xcafe) : NULL};
        if (!c.v) {
            nbi_err(fn, "the function failed");
            rc = -1;
        } else {
            nb_gradcheck_result r2;
            memset(&r2, 0, sizeof r2);
            r2.excess = -INFINITY;
            r2.worst_ratio = 0;
            rc = compare(fn, vjp_fn, &c, n, inputs, &p, &r2, 2);
            double worst = r2.worst_ratio > res->worst_ratio ? r2.worst_ratio : res->worst_ratio;
            if (rc == 1 || (rc == 0 && r2.excess > res->excess)) *res = r2;
            res->worst_ratio = worst; /* over both orders */
        }
        nb_scope_end();
    }
    nb_set_grad_enabled(was);
    for (int i = 0; i < n; i++)
        if (set[i]) inputs[i]->requires_grad = false;
    return rc;
}

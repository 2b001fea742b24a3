/*
 * module.c - modules (nabla/nn.h): a small tree of layers with named
 * parameters, built only on the public API.
 *
 * Every module has a kind, up to a few parameters, children, a train flag and
 * a forward function. Parameters are created outside every scope (nb_keep up
 * to the top), so they live until nb_module_free. Memory comes from nb_alloc,
 * so the allocator hook sees it; sizes are checked for overflow before any
 * allocation (a weight of d_out x d_in elements must have a byte count that
 * fits in 64 bits).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../include/nabla/nn.h"

#define MAX_PARAMS 4

typedef nb_tensor *(*forward_fn)(nb_module *m, nb_tensor *x);

struct nb_module {
    const char *kind;
    forward_fn forward;
    bool training;
    int nparams;
    nb_tensor *params[MAX_PARAMS];
    const char *pnames[MAX_PARAMS];
    int nchildren;
    nb_module **children;
    char **cnames; /* dotted names of the parameters ("0.weight"), built on demand, one block */
    double a;           /* alpha, p, eps */
    nb_rng *rng;
};

static nb_module *new_module(const char *fn, const char *kind, forward_fn f) {
    nb_module *m = nb_alloc_zeroed(fn, 1, sizeof *m);
    if (!m) return NULL;
    m->kind = kind;
    m->forward = f;
    m->training = true;
    return m;
}

static void unscope(nb_tensor *t) {
    for (int d = nb_scope_depth(); d > 0 && t; d--) nb_keep(t);
}

static bool add_param(nb_module *m, const char *name, nb_tensor *t) {
    if (!t) return false;
    nb_set_requires_grad(t, true);
    unscope(t);
    m->pnames[m->nparams] = name;
    m->params[m->nparams++] = t;
    return true;
}

/* A parameter's dtype and the size of a (rows, cols) table of it: true, or
   false with an error naming fn and the sizes when the dtype is not a float
   one or the element or byte count does not fit in 64 bits. */
static bool table_ok(const char *fn, int64_t rows, int64_t cols, nb_dtype dt) {
    if (dt != NB_F32 && dt != NB_F64) return nb_failf(fn, "dtype %d is not NB_F32 or NB_F64", (int)dt), false;
    int64_t n, bytes;
    if (__builtin_mul_overflow(rows, cols, &n) || __builtin_mul_overflow(n, dt == NB_F32 ? 4 : 8, &bytes))
        return nb_failf(fn, "a (%lld, %lld) %s table does not fit in memory (its byte count overflows 64 bits)",
                        (long long)rows, (long long)cols, dt == NB_F32 ? "f32" : "f64"),
               false;
    return true;
}

/* A (rows, cols) table of U(-a, a) values, or N(0, 1) ones when normal,
   drawn in row-major order (the same values as drawing them in turn and
   converting each to dt). */
static nb_tensor *random_table(nb_dtype dt, int64_t rows, int64_t cols, double a, nb_rng *rng, bool normal) {
    nb_tensor *t = nb_new(dt, 2, (int64_t[]){rows, cols}, NULL);
    if (!t) return NULL;
    void *d = nb_data(t); /* a new tensor is contiguous: never NULL */
    for (int64_t i = 0, n = rows * cols; i < n; i++) {
        double v;
        if (normal) { /* Box-Muller */
            double u1 = nb_rng_uniform(rng), u2 = nb_rng_uniform(rng);
            v = sqrt(-2 * log(1 - u1)) * cos(6.28318530717958647692 * u2);
        } else {
            v = (2 * nb_rng_uniform(rng) - 1) * a;
        }
        if (dt == NB_F32) ((float *)d)[i] = (float)v;
        else ((double *)d)[i] = v;
    }
    return t;
}

static nb_tensor *fwd_linear(nb_module *m, nb_tensor *x) {
    return nb_dense(x, m->params[0], m->nparams > 1 ? m->params[1] : NULL, NB_ACT_NONE);
}

nb_module *nb_linear(int64_t d_in, int64_t d_out, bool bias, nb_init init, nb_dtype dt, nb_rng *rng) {
    const char *fn = "nb_linear";
    if (d_in <= 0 || d_out <= 0 || !rng)
        return nb_failf(fn, "sizes (d_in %lld, d_out %lld) must be positive and rng given", (long long)d_in,
                        (long long)d_out);
    if (init != NB_INIT_XAVIER && init != NB_INIT_KAIMING)
        return nb_failf(fn, "init %d is not NB_INIT_XAVIER or NB_INIT_KAIMING", (int)init);
    if (!table_ok(fn, d_out, d_in, dt)) return NULL;
    nb_module *m = new_module(fn, "Linear", fwd_linear);
    if (!m) return NULL;
    /* d_in + d_out in double: the sum of two int64 may overflow, their doubles cannot */
    double a = init == NB_INIT_KAIMING ? sqrt(6.0 / (double)d_in) : sqrt(6.0 / ((double)d_in + (double)d_out));
    if (!add_param(m, "weight", random_table(dt, d_out, d_in, a, rng, false)) ||
        (bias && !add_param(m, "bias", nb_full(dt, 1, (int64_t[]){d_out}, 0.0)))) {
        nb_module_free(m);
        return NULL;
    }
    return m;
}

static nb_tensor *fwd_relu(nb_module *m, nb_tensor *x) { (void)m; return nb_relu(x); }
static nb_tensor *fwd_sigmoid(nb_module *m, nb_tensor *x) { (void)m; return nb_sigmoid(x); }
static nb_tensor *fwd_tanh(nb_module *m, nb_tensor *x) { (void)m; return nb_tanh(x); }
static nb_tensor *fwd_gelu(nb_module *m, nb_tensor *x) { (void)m; return nb_gelu(x); }
static nb_tensor *fwd_leaky(nb_module *m, nb_tensor *x) { return nb_leaky_relu(x, m->a); }
static nb_tensor *fwd_dropout(nb_module *m, nb_tensor *x) { return nb_dropout(x, m->a, m->training, m->rng); }

nb_module *nb_relu_layer(void) { return new_module("nb_relu_layer", "ReLU", fwd_relu); }
nb_module *nb_sigmoid_layer(void) { return new_module("nb_sigmoid_layer", "Sigmoid", fwd_sigmoid); }
nb_module *nb_tanh_layer(void) { return new_module("nb_tanh_layer", "Tanh", fwd_tanh); }
nb_module *nb_gelu_layer(void) { return new_module("nb_gelu_layer", "GELU", fwd_gelu); }
nb_module *nb_leaky_relu_layer(double alpha) {
    nb_module *m = new_module("nb_leaky_relu_layer", "LeakyReLU", fwd_leaky);
    if (m) m->a = alpha;
    return m;
}
nb_module *nb_dropout_layer(double p, nb_rng *rng) {
    if (!(p >= 0 && p <= 1) || !rng) return nb_fail("nb_dropout_layer", "p must be in [0, 1] and rng given");
    nb_module *m = new_module("nb_dropout_layer", "Dropout", fwd_dropout);
    if (m) m->a = p, m->rng = rng;
    return m;
}

static nb_tensor *fwd_layer_norm(nb_module *m, nb_tensor *x) {
    return nb_layer_norm(x, m->params[0], m->params[1], m->a);
}

nb_module *nb_layer_norm_layer(int64_t d, double eps, nb_dtype dt) {
    const char *fn = "nb_layer_norm_layer";
    if (d <= 0) return nb_failf(fn, "size %lld must be positive", (long long)d);
    if (!table_ok(fn, 1, d, dt)) return NULL;
    nb_module *m = new_module(fn, "LayerNorm", fwd_layer_norm);
    if (!m) return NULL;
    m->a = eps;
    if (!add_param(m, "weight", nb_full(dt, 1, (int64_t[]){d}, 1.0)) ||
        !add_param(m, "bias", nb_full(dt, 1, (int64_t[]){d}, 0.0))) {
        nb_module_free(m);
        return NULL;
    }
    return m;
}

static nb_tensor *fwd_embedding(nb_module *m, nb_tensor *ids) {
    if (!ids) return nb_index_select(m->params[0], 0, ids);
    int64_t n = nb_numel(ids), d = nb_shape(m->params[0])[1];
    nb_tensor *flat = nb_reshape(ids, 1, &n);
    nb_tensor *rows = nb_index_select(m->params[0], 0, flat);
    int64_t shape[NB_MAX_RANK];
    int r = nb_rank(ids);
    if (r >= NB_MAX_RANK) return nb_fail("nb_forward", "Embedding: ids have too high a rank");
    memcpy(shape, nb_shape(ids), sizeof(int64_t) * (size_t)r);
    shape[r] = d;
    return nb_reshape(rows, r + 1, shape);
}

nb_module *nb_embedding(int64_t n, int64_t d, nb_dtype dt, nb_rng *rng) {
    const char *fn = "nb_embedding";
    if (n <= 0 || d <= 0 || !rng)
        return nb_failf(fn, "sizes (n %lld, d %lld) must be positive and rng given", (long long)n, (long long)d);
    if (!table_ok(fn, n, d, dt)) return NULL;
    nb_module *m = new_module(fn, "Embedding", fwd_embedding);
    if (m && !add_param(m, "weight", random_table(dt, n, d, 0, rng, true))) {
        nb_module_free(m);
        return NULL;
    }
    return m;
}

static nb_tensor *fwd_residual(nb_module *m, nb_tensor *x) {
    nb_tensor *y = nb_forward(m->children[0], x);
    if (!y || !x) return NULL;
    int r = nb_rank(y);
    bool same = r == nb_rank(x);
    for (int i = 0; same && i < r; i++) same = nb_shape(x)[i] == nb_shape(y)[i];
    if (!same) {
        char a[96], b[96], msg[256];
        snprintf(msg, sizeof msg, "Residual: inner output %s does not match input %s",
                 nb_shape_str(r, nb_shape(y), a, sizeof a), nb_shape_str(nb_rank(x), nb_shape(x), b, sizeof b));
        return nb_fail("nb_forward", msg);
    }
    return nb_add(y, x);
}

/* A Linear followed by ReLU, Tanh or Sigmoid runs as one fused nb_dense. */
static nb_act fused_act(const nb_module *next) {
    if (next->forward == fwd_relu) return NB_ACT_RELU;
    if (next->forward == fwd_tanh) return NB_ACT_TANH;
    if (next->forward == fwd_sigmoid) return NB_ACT_SIGMOID;
    return NB_ACT_NONE;
}

static nb_tensor *fwd_sequential(nb_module *m, nb_tensor *x) {
    for (int i = 0; i < m->nchildren && x; i++) {
        nb_module *c = m->children[i];
        nb_act act = c->forward == fwd_linear && i + 1 < m->nchildren ? fused_act(m->children[i + 1]) : NB_ACT_NONE;
        if (act != NB_ACT_NONE) {
            x = nb_dense(x, c->params[0], c->nparams > 1 ? c->params[1] : NULL, act);
            i++;
        } else {
            x = nb_forward(c, x);
        }
    }
    return x;
}

static nb_module *container(const char *fn, const char *kind, forward_fn f, int n, nb_module *const *mods) {
    bool ok = n > 0 && mods;
    for (int i = 0; ok && i < n; i++) ok = mods[i] != NULL;
    if (!ok) nb_failf(fn, "%s", n > 0 && mods ? "a child module is NULL" : "needs at least one module");
    nb_module *m = ok ? new_module(fn, kind, f) : NULL;
    if (m) m->children = nb_alloc_zeroed(fn, (size_t)n, sizeof *m->children);
    if (!m || !m->children) {
        for (int i = 0; mods && i < n; i++) nb_module_free(mods[i]);
        nb_dealloc(m);
        return NULL;
    }
    memcpy(m->children, mods, sizeof *m->children * (size_t)n);
    m->nchildren = n;
    return m;
}

nb_module *nb_residual(nb_module *inner) { return container("nb_residual", "Residual", fwd_residual, 1, &inner); }
nb_module *nb_sequential(int n, nb_module *const *mods) {
    return container("nb_sequential", "Sequential", fwd_sequential, n, mods);
}

nb_tensor *nb_forward(nb_module *m, nb_tensor *x) {
    if (!m) return nb_fail("nb_forward", "module is NULL");
    return m->forward(m, x);
}

void nb_module_train(nb_module *m, bool on) {
    if (!m) return;
    m->training = on;
    for (int i = 0; i < m->nchildren; i++) nb_module_train(m->children[i], on);
}

bool nb_module_training(const nb_module *m) { return m && m->training; }
const char *nb_module_kind(const nb_module *m) { return m ? m->kind : NULL; }

/* The parameters of m and its children in order, from index k: those below cap go to params. Returns the
   index after the last. */
static int collect(nb_module *m, nb_tensor **params, int cap, int k) {
    for (int i = 0; i < m->nparams; i++, k++)
        if (params && k < cap) params[k] = m->params[i];
    for (int c = 0; c < m->nchildren; c++) k = collect(m->children[c], params, cap, k);
    return k;
}

/* The bytes of the dotted names of m's parameters under a prefix of plen bytes (into *bytes, NULs
   included), and the longest prefix met (into *maxp). */
static void measure(const nb_module *m, size_t plen, size_t *bytes, size_t *maxp) {
    if (plen > *maxp) *maxp = plen;
    for (int i = 0; i < m->nparams; i++) *bytes += plen + strlen(m->pnames[i]) + 1;
    for (int c = 0; c < m->nchildren; c++)
        measure(m->children[c], plen + (size_t)snprintf(NULL, 0, "%d.", c), bytes, maxp);
}

/* Write the names of m's parameters (prefix[0..plen), then the parameter's own name) at *at, pointed to by
   names[k], names[k + 1], ...; the prefix grows in place for the children. Returns the index after the last. */
static int name_all(const nb_module *m, char *prefix, size_t plen, char **names, char **at, int k) {
    for (int i = 0; i < m->nparams; i++) {
        size_t n = strlen(m->pnames[i]);
        names[k++] = *at;
        memcpy(*at, prefix, plen);
        memcpy(*at + plen, m->pnames[i], n + 1);
        *at += plen + n + 1;
    }
    for (int c = 0; c < m->nchildren; c++) {
        int d = sprintf(prefix + plen, "%d.", c);
        k = name_all(m->children[c], prefix, plen + (size_t)d, names, at, k);
    }
    return k;
}

/* Build m->cnames as one block: total pointers, the names (of any length, so deep nesting never cuts
   one), then room for the longest prefix and its NUL. */
static bool build_names(nb_module *m, int total) {
    size_t bytes = 0, maxp = 0;
    measure(m, 0, &bytes, &maxp);
    size_t ptrs = sizeof(char *) * (size_t)(total ? total : 1);
    char **block = nb_alloc("nb_module_params", ptrs + bytes + maxp + 16);
    if (!block) return false;
    char *at = (char *)block + ptrs, *prefix = at + bytes;
    name_all(m, prefix, 0, block, &at, 0);
    m->cnames = block;
    return true;
}

int nb_module_params(nb_module *m, nb_tensor **params, const char **names, int cap) {
    if (!m) return nb_fail("nb_module_params", "module is NULL"), -1;
    int total = collect(m, params, cap, 0);
    /* names point into a table kept until nb_module_free (a module tree does not change once built);
       without it there are no names to give */
    if (names && !m->cnames && !build_names(m, total)) return -1;
    for (int k = 0; names && k < total && k < cap; k++) names[k] = m->cnames[k];
    return total;
}

int nb_module_name_params(nb_module *m) {
    if (!m) return nb_fail("nb_module_name_params", "module is NULL"), -1;
    int total = nb_module_params(m, NULL, NULL, 0);
    nb_tensor **ps = nb_alloc("nb_module_name_params", sizeof *ps * (size_t)(total ? total : 1));
    const char **names = nb_alloc("nb_module_name_params", sizeof *names * (size_t)(total ? total : 1));
    if (!ps || !names || nb_module_params(m, ps, names, total) < 0) {
        nb_dealloc(ps), nb_dealloc(names);
        return -1;
    }
    for (int i = 0; i < total; i++) nb_set_name(ps[i], names[i]);
    nb_dealloc(ps), nb_dealloc(names);
    return total;
}

int64_t nb_module_num_params(nb_module *m) {
    if (!m) return 0;
    int64_t n = 0;
    for (int i = 0; i < m->nparams; i++) n += nb_numel(m->params[i]);
    for (int c = 0; c < m->nchildren; c++) n += nb_module_num_params(m->children[c]);
    return n;
}

void nb_module_zero_grad(nb_module *m) {
    if (!m) return;
    for (int i = 0; i < m->nparams; i++) nb_zero_grad(m->params[i]);
    for (int c = 0; c < m->nchildren; c++) nb_module_zero_grad(m->children[c]);
}

void nb_module_free(nb_module *m) {
    if (!m) return;
    for (int i = 0; i < m->nparams; i++) nb_free(m->params[i]);
    for (int c = 0; c < m->nchildren; c++) nb_module_free(m->children[c]);
    nb_dealloc(m->children);
    nb_dealloc(m->cnames);
    nb_dealloc(m);
}

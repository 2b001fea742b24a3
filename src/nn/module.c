/*
 * module.c - modules (nabla/nn.h): a tree of modules with named parameters,
 * buffers and children, built only on the public API.
 *
 * A module is a class (kind, forward, free_state: nb_module_class), the
 * state its maker gave it, a train flag, and three growable lists: parameters
 * and buffers (name, tensor) and children (name, module). Each registered
 * tensor is held with nb_retain and let go with nb_release, so a tensor
 * registered twice (weight tying) is freed when its last holder lets go, and
 * the caller's own handle stays the caller's. A child has one parent
 * (m->parent), which rules out cycles and a module owned twice.
 *
 * Flat listings (nb_module_params and the others) come from a table built on
 * demand: every registration in pre-order with its dotted path, and the
 * unique tensors (first path wins, found by sorting the pointers). The table
 * is kept until the tree changes; a registration anywhere below a module
 * retires the tables of it and its ancestors, which are kept (not freed)
 * until nb_module_free, so names handed out stay valid as promised.
 *
 * The built-in layers are modules of this kind like any user's. Memory comes
 * from nb_alloc, so the allocator hook sees it; sizes are checked for
 * overflow before any allocation (a weight of d_out x d_in elements must have
 * a byte count that fits in 64 bits).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../include/nabla/nn.h"

typedef struct {
    char *name;
    nb_tensor *t;
} slot;

typedef struct {
    char *name;
    nb_module *m;
} kid;

/* The flat lists of a tree: [0] unique parameters, [1] unique buffers, [2] every parameter registration,
   [3] every buffer registration; names point into the same block. */
enum { T_PARAMS, T_BUFFERS, T_PARAM_PATHS, T_BUFFER_PATHS };
typedef struct table {
    struct table *next; /* the retired list */
    int n[4];
    nb_tensor **t[4];
    const char **name[4];
} table;

struct nb_module {
    const nb_module_class *cls;
    void *state;
    nb_module *parent;
    bool training;
    int np, cap_p, nb, cap_b, nk, cap_k;
    slot *params, *bufs;
    kid *kids;
    table *tab;     /* NULL until asked for, or after a change */
    table *retired; /* tables replaced since, freed with the module */
};

/* ------------------------------------------------------------ the class */

nb_module *nb_module_new(const nb_module_class *cls, void *state) {
    const char *fn = "nb_module_new";
    if (!cls || !cls->forward || !cls->kind || !*cls->kind)
        return nb_fail(fn, !cls ? "class is NULL" : !cls->forward ? "the class has no forward function"
                                                                  : "the class has no kind (a name such as \"MLP\")");
    nb_module *m = nb_alloc_zeroed(fn, 1, sizeof *m);
    if (!m) return NULL;
    m->cls = cls;
    m->state = state;
    m->training = true;
    return m;
}

void *nb_module_state(const nb_module *m) { return m ? m->state : NULL; }
const nb_module_class *nb_module_class_of(const nb_module *m) { return m ? m->cls : NULL; }
const char *nb_module_kind(const nb_module *m) { return m ? m->cls->kind : NULL; }

static void retire(nb_module *m) {
    for (; m; m = m->parent)
        if (m->tab) {
            m->tab->next = m->retired;
            m->retired = m->tab;
            m->tab = NULL;
        }
}

/* 0 when name may be added to m, else -1 with an error. */
static int check_name(const char *fn, const nb_module *m, const char *name) {
    if (!m) return nb_fail(fn, "module is NULL"), -1;
    if (!name || !*name) return nb_failf(fn, "%s: a name must not be NULL or empty", m->cls->kind), -1;
    for (const char *c = name; *c; c++) {
        if (*c == '.')
            return nb_failf(fn, "%s: name '%s' has a '.' (dots separate the parts of a path)", m->cls->kind, name), -1;
        if (*c == '"' || *c == '\\' || (unsigned char)*c < 32)
            return nb_failf(fn, "%s: name has a character not allowed (byte 0x%02x at offset %d)", m->cls->kind,
                            (unsigned char)*c, (int)(c - name)),
                   -1;
    }
    const char *what = NULL;
    for (int i = 0; !what && i < m->np; i++)
        if (strcmp(m->params[i].name, name) == 0) what = "a parameter";
    for (int i = 0; !what && i < m->nb; i++)
        if (strcmp(m->bufs[i].name, name) == 0) what = "a buffer";
    for (int i = 0; !what && i < m->nk; i++)
        if (strcmp(m->kids[i].name, name) == 0) what = "a child";
    if (what) return nb_failf(fn, "%s already has %s named '%s'", m->cls->kind, what, name), -1;
    return 0;
}

/* Room for one more entry of size `size` in *arr (count n, capacity *cap): 0, or -1 with an error. */
static int grow(const char *fn, void **arr, int n, int *cap, size_t size) {
    if (n < *cap) return 0;
    if (n >= (1 << 29)) return nb_failf(fn, "more than %d entries in one module", 1 << 29), -1;
    int nc = *cap ? *cap * 2 : 4;
    void *a = nb_alloc(fn, (size_t)nc * size);
    if (!a) return -1;
    if (n) memcpy(a, *arr, (size_t)n * size);
    nb_dealloc(*arr);
    *arr = a;
    *cap = nc;
    return 0;
}

static char *copy_name(const char *fn, const char *name) {
    size_t n = strlen(name) + 1;
    char *c = nb_alloc(fn, n);
    if (c) memcpy(c, name, n);
    return c;
}

static int add_tensor(const char *fn, nb_module *m, const char *name, nb_tensor *t, bool param) {
    if (check_name(fn, m, name) != 0) return -1;
    const char *kind = m->cls->kind;
    if (!t) return nb_failf(fn, "%s: tensor '%s' is NULL", kind, name), -1;
    if (!nb_is_leaf(t) || !nb_is_contiguous(t))
        return nb_failf(fn, "%s: tensor '%s' must be a contiguous leaf (not the result of a recorded op)", kind, name),
               -1;
    if (param && nb_dtype_of(t) == NB_I64)
        return nb_failf(fn, "%s: parameter '%s' has dtype i64; a parameter is f32 or f64", kind, name), -1;
    if (!param && nb_requires_grad(t))
        return nb_failf(fn, "%s: buffer '%s' requires grad; a buffer is not trained (register it as a parameter)",
                        kind, name),
               -1;
    slot *other = param ? m->bufs : m->params;
    for (int i = 0, n = param ? m->nb : m->np; i < n; i++)
        if (other[i].t == t)
            return nb_failf(fn, "%s: tensor '%s' is already the %s '%s'; a tensor is a parameter or a buffer", kind,
                            name, param ? "buffer" : "parameter", other[i].name),
                   -1;
    int *n = param ? &m->np : &m->nb;
    if (grow(fn, param ? (void **)&m->params : (void **)&m->bufs, *n, param ? &m->cap_p : &m->cap_b, sizeof(slot)))
        return -1;
    char *c = copy_name(fn, name);
    if (!c) return -1;
    if (!nb_retain(t)) {
        nb_dealloc(c);
        return -1;
    }
    if (param) nb_set_requires_grad(t, true);
    (param ? m->params : m->bufs)[(*n)++] = (slot){c, t};
    retire(m);
    return 0;
}

int nb_module_add_param(nb_module *m, const char *name, nb_tensor *t) {
    return add_tensor("nb_module_add_param", m, name, t, true);
}

int nb_module_set_param(nb_module *m, const char *name, nb_tensor *t) {
    const char *fn = "nb_module_set_param";
    if (!m || !name) return nb_fail(fn, "module or name is NULL"), -1;
    slot *s = NULL;
    for (int i = 0; i < m->np && !s; i++)
        if (strcmp(m->params[i].name, name) == 0) s = &m->params[i];
    if (!s) return nb_failf(fn, "%s has no parameter named '%s'", m->cls->kind, name), -1;
    if (!t) return nb_failf(fn, "%s: tensor for '%s' is NULL", m->cls->kind, name), -1;
    if (t == s->t) return 0;
    bool same = nb_dtype_of(t) == nb_dtype_of(s->t) && nb_rank(t) == nb_rank(s->t);
    for (int d = 0; same && d < nb_rank(t); d++) same = nb_shape(t)[d] == nb_shape(s->t)[d];
    if (!same || !nb_is_leaf(t) || !nb_is_contiguous(t)) {
        char a[96], b[96];
        return nb_failf(fn, "%s: parameter '%s' is %s %s; the new tensor must be a contiguous leaf of that dtype "
                            "and shape, not %s %s%s",
                        m->cls->kind, name, nb_dtype_of(s->t) == NB_F32 ? "f32" : "f64",
                        nb_shape_str(nb_rank(s->t), nb_shape(s->t), a, sizeof a),
                        nb_dtype_of(t) == NB_F32 ? "f32" : nb_dtype_of(t) == NB_F64 ? "f64" : "i64",
                        nb_shape_str(nb_rank(t), nb_shape(t), b, sizeof b),
                        nb_is_leaf(t) && nb_is_contiguous(t) ? "" : " (or not a contiguous leaf)"),
               -1;
    }
    for (int i = 0; i < m->nb; i++)
        if (m->bufs[i].t == t)
            return nb_failf(fn, "%s: tensor for '%s' is already the buffer '%s'", m->cls->kind, name, m->bufs[i].name),
                   -1;
    if (!nb_retain(t)) return -1;
    nb_set_requires_grad(t, true);
    nb_release(s->t);
    s->t = t;
    retire(m);
    return 0;
}

int nb_module_add_buffer(nb_module *m, const char *name, nb_tensor *t) {
    return add_tensor("nb_module_add_buffer", m, name, t, false);
}

int nb_module_add_child(nb_module *m, const char *name, nb_module *child) {
    const char *fn = "nb_module_add_child";
    if (check_name(fn, m, name) != 0) return -1;
    if (!child) return nb_failf(fn, "%s: child '%s' is NULL", m->cls->kind, name), -1;
    if (child->parent)
        return nb_failf(fn, "%s: child '%s' (%s) already has a parent (%s); a module has one", m->cls->kind, name,
                        child->cls->kind, child->parent->cls->kind),
               -1;
    for (const nb_module *a = m; a; a = a->parent)
        if (a == child)
            return nb_failf(fn, "%s: child '%s' is the module itself or one of its ancestors (a cycle)", m->cls->kind,
                            name),
                   -1;
    if (grow(fn, (void **)&m->kids, m->nk, &m->cap_k, sizeof(kid))) return -1;
    char *c = copy_name(fn, name);
    if (!c) return -1;
    m->kids[m->nk++] = (kid){c, child};
    child->parent = m;
    retire(m);
    return 0;
}

/* -------------------------------------------------------------- lookups */

/* The module reached from m by the first `len` bytes of path (parts separated by '.'), or NULL with an error. */
static nb_module *walk(const char *fn, nb_module *m, const char *path, size_t len) {
    const char *p = path, *end = path + len;
    while (p < end) {
        const char *dot = memchr(p, '.', (size_t)(end - p));
        size_t n = dot ? (size_t)(dot - p) : (size_t)(end - p);
        nb_module *next = NULL;
        for (int i = 0; i < m->nk && !next; i++)
            if (strlen(m->kids[i].name) == n && memcmp(m->kids[i].name, p, n) == 0) next = m->kids[i].m;
        if (!next)
            return nb_failf(fn, "no '%s': %s%s%.*s%s has no child '%.*s'", path, m->cls->kind, p == path ? "" : " at '",
                            p == path ? 0 : (int)(p - path - 1), path, p == path ? "" : "'", (int)n, p),
                   NULL;
        m = next;
        p += n + (dot ? 1 : 0);
    }
    return m;
}

static nb_tensor *lookup(const char *fn, nb_module *m, const char *path, bool param) {
    if (!m || !path) return nb_fail(fn, "module or path is NULL");
    const char *last = strrchr(path, '.');
    const char *leaf = last ? last + 1 : path;
    nb_module *owner = walk(fn, m, path, last ? (size_t)(last - path) : 0);
    if (!owner) return NULL;
    slot *s = param ? owner->params : owner->bufs;
    for (int i = 0, n = param ? owner->np : owner->nb; i < n; i++)
        if (strcmp(s[i].name, leaf) == 0) return s[i].t;
    return nb_failf(fn, "no '%s': %s%s%.*s%s has no %s '%s'", path, owner->cls->kind, last ? " at '" : "",
                    last ? (int)(last - path) : 0, path, last ? "'" : "", param ? "parameter" : "buffer", leaf);
}

nb_tensor *nb_module_param(nb_module *m, const char *path) { return lookup("nb_module_param", m, path, true); }
nb_tensor *nb_module_buffer(nb_module *m, const char *path) { return lookup("nb_module_buffer", m, path, false); }

nb_module *nb_module_child(nb_module *m, const char *path) {
    if (!m || !path || !*path) return nb_fail("nb_module_child", "module or path is NULL or empty");
    return walk("nb_module_child", m, path, strlen(path));
}

int nb_module_children(nb_module *m, nb_module **kids, const char **names, int cap) {
    if (!m) return nb_fail("nb_module_children", "module is NULL"), -1;
    for (int i = 0; i < m->nk && i < cap; i++) {
        if (kids) kids[i] = m->kids[i].m;
        if (names) names[i] = m->kids[i].name;
    }
    return m->nk;
}

/* ---------------------------------------------------------- flat tables */

/* Registrations below m (parameters into n[0], buffers into n[1]), the bytes of their dotted names under a
   prefix of plen bytes (NULs included) and the longest prefix met. */
static void measure(const nb_module *m, size_t plen, int64_t n[2], size_t *bytes, size_t *maxp) {
    if (plen > *maxp) *maxp = plen;
    for (int i = 0; i < m->np; i++) *bytes += plen + strlen(m->params[i].name) + 1;
    for (int i = 0; i < m->nb; i++) *bytes += plen + strlen(m->bufs[i].name) + 1;
    n[0] += m->np, n[1] += m->nb;
    for (int c = 0; c < m->nk; c++) measure(m->kids[c].m, plen + strlen(m->kids[c].name) + 1, n, bytes, maxp);
}

static void fill_one(table *tb, int which, nb_tensor *t, const char *prefix, size_t plen, const char *name,
                     char **at) {
    size_t n = strlen(name);
    memcpy(*at, prefix, plen);
    memcpy(*at + plen, name, n + 1);
    tb->t[which][tb->n[which]] = t;
    tb->name[which][tb->n[which]++] = *at;
    *at += plen + n + 1;
}

static void fill(const nb_module *m, char *prefix, size_t plen, table *tb, char **at) {
    for (int i = 0; i < m->np; i++) fill_one(tb, T_PARAM_PATHS, m->params[i].t, prefix, plen, m->params[i].name, at);
    for (int i = 0; i < m->nb; i++) fill_one(tb, T_BUFFER_PATHS, m->bufs[i].t, prefix, plen, m->bufs[i].name, at);
    for (int c = 0; c < m->nk; c++) {
        size_t n = strlen(m->kids[c].name);
        memcpy(prefix + plen, m->kids[c].name, n);
        prefix[plen + n] = '.';
        fill(m->kids[c].m, prefix, plen + n + 1, tb, at);
    }
}

typedef struct {
    const nb_tensor *t;
    int i; /* index over parameters then buffers */
} occ;

static int cmp_occ(const void *a, const void *b) {
    const occ *x = a, *y = b;
    if (x->t != y->t) return x->t < y->t ? -1 : 1;
    return (x->i > y->i) - (x->i < y->i);
}

static table *get_table(const char *fn, nb_module *m) {
    if (m->tab) return m->tab;
    int64_t n[2] = {0, 0};
    size_t bytes = 0, maxp = 0;
    measure(m, 0, n, &bytes, &maxp);
    if (n[0] + n[1] > (1 << 29)) return nb_failf(fn, "more than %d tensors in one tree", 1 << 29);
    size_t r = (size_t)(n[0] + n[1]) + 1;
    size_t ptrs = 4 * r * (sizeof(nb_tensor *) + sizeof(char *));
    table *tb = nb_alloc(fn, sizeof *tb + ptrs + bytes + maxp + 1);
    occ *o = nb_alloc(fn, r * (sizeof *o + 1));
    if (!tb || !o) {
        nb_dealloc(tb), nb_dealloc(o);
        return NULL;
    }
    memset(tb, 0, sizeof *tb);
    char *p = (char *)(tb + 1);
    for (int k = 0; k < 4; k++) {
        tb->t[k] = (nb_tensor **)p, p += r * sizeof(nb_tensor *);
        tb->name[k] = (const char **)p, p += r * sizeof(char *);
    }
    char *at = p, *prefix = p + bytes;
    fill(m, prefix, 0, tb, &at);
    /* a tensor met again is a tied one: the first registration (in pre-order) names it */
    int np = tb->n[T_PARAM_PATHS], nall = np + tb->n[T_BUFFER_PATHS];
    char *dup = (char *)(o + r);
    for (int i = 0; i < nall; i++) {
        o[i] = (occ){i < np ? tb->t[T_PARAM_PATHS][i] : tb->t[T_BUFFER_PATHS][i - np], i};
        dup[i] = 0;
    }
    qsort(o, (size_t)nall, sizeof *o, cmp_occ);
    for (int i = 1; i < nall; i++) {
        if (o[i].t != o[i - 1].t) continue;
        int a = o[i - 1].i, b = o[i].i;
        dup[b] = 1;
        if ((a < np) != (b < np)) {
            const char *pn = tb->name[T_PARAM_PATHS][a < np ? a : b], *bn = tb->name[T_BUFFER_PATHS][(a < np ? b : a) - np];
            nb_failf(fn, "%s: one tensor is both the parameter '%s' and the buffer '%s'", m->cls->kind, pn, bn);
            nb_dealloc(tb), nb_dealloc(o);
            return NULL;
        }
    }
    for (int i = 0; i < nall; i++) {
        if (dup[i]) continue;
        int k = i < np ? T_PARAMS : T_BUFFERS, j = i < np ? i : i - np;
        int from = i < np ? T_PARAM_PATHS : T_BUFFER_PATHS;
        tb->t[k][tb->n[k]] = tb->t[from][j];
        tb->name[k][tb->n[k]++] = tb->name[from][j];
    }
    nb_dealloc(o);
    m->tab = tb;
    return tb;
}

static int listing(const char *fn, nb_module *m, int which, nb_tensor **ts, const char **names, int cap) {
    if (!m) return nb_fail(fn, "module is NULL"), -1;
    table *tb = get_table(fn, m);
    if (!tb) return -1;
    for (int i = 0; i < tb->n[which] && i < cap; i++) {
        if (ts) ts[i] = tb->t[which][i];
        if (names) names[i] = tb->name[which][i];
    }
    return tb->n[which];
}

int nb_module_params(nb_module *m, nb_tensor **params, const char **names, int cap) {
    return listing("nb_module_params", m, T_PARAMS, params, names, cap);
}
int nb_module_buffers(nb_module *m, nb_tensor **bufs, const char **names, int cap) {
    return listing("nb_module_buffers", m, T_BUFFERS, bufs, names, cap);
}
int nb_module_param_paths(nb_module *m, nb_tensor **params, const char **names, int cap) {
    return listing("nb_module_param_paths", m, T_PARAM_PATHS, params, names, cap);
}
int nb_module_buffer_paths(nb_module *m, nb_tensor **bufs, const char **names, int cap) {
    return listing("nb_module_buffer_paths", m, T_BUFFER_PATHS, bufs, names, cap);
}

/* ------------------------------------------------------- built-in layers */

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

/* Register a tensor the caller made, then drop the caller's handle: the module's hold is left. t NULL (a failed
   creation) keeps the error already recorded. */
static int add_made(nb_module *m, const char *name, nb_tensor *t) {
    if (!t) return -1;
    int rc = nb_module_add_param(m, name, t);
    nb_free(t);
    return rc;
}

static nb_tensor *fwd_linear(nb_module *m, nb_tensor *x) {
    return nb_dense(x, m->params[0].t, m->np > 1 ? m->params[1].t : NULL, NB_ACT_NONE);
}
static const nb_module_class linear_class = {.kind = "Linear", .forward = fwd_linear};

nb_module *nb_linear(int64_t d_in, int64_t d_out, bool bias, nb_init init, nb_dtype dt, nb_rng *rng) {
    const char *fn = "nb_linear";
    if (d_in <= 0 || d_out <= 0 || !rng)
        return nb_failf(fn, "sizes (d_in %lld, d_out %lld) must be positive and rng given", (long long)d_in,
                        (long long)d_out);
    if (init != NB_INIT_XAVIER && init != NB_INIT_KAIMING)
        return nb_failf(fn, "init %d is not NB_INIT_XAVIER or NB_INIT_KAIMING", (int)init);
    if (!table_ok(fn, d_out, d_in, dt)) return NULL;
    nb_module *m = nb_module_new(&linear_class, NULL);
    if (!m) return NULL;
    /* d_in + d_out in double: the sum of two int64 may overflow, their doubles cannot */
    double a = init == NB_INIT_KAIMING ? sqrt(6.0 / (double)d_in) : sqrt(6.0 / ((double)d_in + (double)d_out));
    if (add_made(m, "weight", random_table(dt, d_out, d_in, a, rng, false)) != 0 ||
        (bias && add_made(m, "bias", nb_full(dt, 1, (int64_t[]){d_out}, 0.0)) != 0)) {
        nb_module_free(m);
        return NULL;
    }
    return m;
}

/* The state of the layers with a number (LeakyReLU's alpha, Dropout's p, LayerNorm's eps) and an rng. */
typedef struct {
    double a;
    nb_rng *rng;
} layer_state;

static layer_state *state_of(nb_module *m) { return m->state; }

static nb_tensor *fwd_relu(nb_module *m, nb_tensor *x) { (void)m; return nb_relu(x); }
static nb_tensor *fwd_sigmoid(nb_module *m, nb_tensor *x) { (void)m; return nb_sigmoid(x); }
static nb_tensor *fwd_tanh(nb_module *m, nb_tensor *x) { (void)m; return nb_tanh(x); }
static nb_tensor *fwd_gelu(nb_module *m, nb_tensor *x) { (void)m; return nb_gelu(x); }
static nb_tensor *fwd_leaky(nb_module *m, nb_tensor *x) { return nb_leaky_relu(x, state_of(m)->a); }
static nb_tensor *fwd_dropout(nb_module *m, nb_tensor *x) {
    return nb_dropout(x, state_of(m)->a, m->training, state_of(m)->rng);
}

static const nb_module_class relu_class = {.kind = "ReLU", .forward = fwd_relu};
static const nb_module_class sigmoid_class = {.kind = "Sigmoid", .forward = fwd_sigmoid};
static const nb_module_class tanh_class = {.kind = "Tanh", .forward = fwd_tanh};
static const nb_module_class gelu_class = {.kind = "GELU", .forward = fwd_gelu};
static const nb_module_class leaky_class = {.kind = "LeakyReLU", .forward = fwd_leaky, .free_state = nb_dealloc};
static const nb_module_class dropout_class = {.kind = "Dropout", .forward = fwd_dropout, .free_state = nb_dealloc};

nb_module *nb_relu_layer(void) { return nb_module_new(&relu_class, NULL); }
nb_module *nb_sigmoid_layer(void) { return nb_module_new(&sigmoid_class, NULL); }
nb_module *nb_tanh_layer(void) { return nb_module_new(&tanh_class, NULL); }
nb_module *nb_gelu_layer(void) { return nb_module_new(&gelu_class, NULL); }

/* A module of class cls whose state is {a, rng}: NULL with the error when out of memory. */
static nb_module *with_state(const char *fn, const nb_module_class *cls, double a, nb_rng *rng) {
    layer_state *st = nb_alloc(fn, sizeof *st);
    if (!st) return NULL;
    *st = (layer_state){a, rng};
    nb_module *m = nb_module_new(cls, st);
    if (!m) nb_dealloc(st);
    return m;
}

nb_module *nb_leaky_relu_layer(double alpha) { return with_state("nb_leaky_relu_layer", &leaky_class, alpha, NULL); }
nb_module *nb_dropout_layer(double p, nb_rng *rng) {
    if (!(p >= 0 && p <= 1) || !rng) return nb_fail("nb_dropout_layer", "p must be in [0, 1] and rng given");
    return with_state("nb_dropout_layer", &dropout_class, p, rng);
}

static nb_tensor *fwd_layer_norm(nb_module *m, nb_tensor *x) {
    return nb_layer_norm(x, m->params[0].t, m->params[1].t, state_of(m)->a);
}
static const nb_module_class layer_norm_class = {.kind = "LayerNorm", .forward = fwd_layer_norm,
                                                 .free_state = nb_dealloc};

nb_module *nb_layer_norm_layer(int64_t d, double eps, nb_dtype dt) {
    const char *fn = "nb_layer_norm_layer";
    if (d <= 0) return nb_failf(fn, "size %lld must be positive", (long long)d);
    if (!table_ok(fn, 1, d, dt)) return NULL;
    nb_module *m = with_state(fn, &layer_norm_class, eps, NULL);
    if (!m) return NULL;
    if (add_made(m, "weight", nb_full(dt, 1, (int64_t[]){d}, 1.0)) != 0 ||
        add_made(m, "bias", nb_full(dt, 1, (int64_t[]){d}, 0.0)) != 0) {
        nb_module_free(m);
        return NULL;
    }
    return m;
}

static nb_tensor *fwd_embedding(nb_module *m, nb_tensor *ids) {
    nb_tensor *table = m->params[0].t;
    int64_t n = nb_numel(ids), d = nb_shape(table)[1];
    nb_tensor *flat = nb_reshape(ids, 1, &n);
    nb_tensor *rows = nb_index_select(table, 0, flat);
    int64_t shape[NB_MAX_RANK];
    int r = nb_rank(ids);
    if (r >= NB_MAX_RANK) return nb_fail("nb_forward", "Embedding: ids have too high a rank");
    memcpy(shape, nb_shape(ids), sizeof(int64_t) * (size_t)r);
    shape[r] = d;
    return nb_reshape(rows, r + 1, shape);
}
static const nb_module_class embedding_class = {.kind = "Embedding", .forward = fwd_embedding};

nb_module *nb_embedding(int64_t n, int64_t d, nb_dtype dt, nb_rng *rng) {
    const char *fn = "nb_embedding";
    if (n <= 0 || d <= 0 || !rng)
        return nb_failf(fn, "sizes (n %lld, d %lld) must be positive and rng given", (long long)n, (long long)d);
    if (!table_ok(fn, n, d, dt)) return NULL;
    nb_module *m = nb_module_new(&embedding_class, NULL);
    if (m && add_made(m, "weight", random_table(dt, n, d, 0, rng, true)) != 0) {
        nb_module_free(m);
        return NULL;
    }
    return m;
}

static nb_tensor *fwd_residual(nb_module *m, nb_tensor *x) {
    nb_tensor *y = nb_forward(m->kids[0].m, x);
    if (!y) return NULL;
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
static const nb_module_class residual_class = {.kind = "Residual", .forward = fwd_residual};

/* A Linear followed by ReLU, Tanh or Sigmoid runs as one fused nb_dense. */
static nb_act fused_act(const nb_module *next) {
    if (next->cls == &relu_class) return NB_ACT_RELU;
    if (next->cls == &tanh_class) return NB_ACT_TANH;
    if (next->cls == &sigmoid_class) return NB_ACT_SIGMOID;
    return NB_ACT_NONE;
}

static nb_tensor *fwd_sequential(nb_module *m, nb_tensor *x) {
    for (int i = 0; i < m->nk && x; i++) {
        nb_module *c = m->kids[i].m;
        nb_act act = c->cls == &linear_class && i + 1 < m->nk ? fused_act(m->kids[i + 1].m) : NB_ACT_NONE;
        if (act != NB_ACT_NONE) {
            x = nb_dense(x, c->params[0].t, c->np > 1 ? c->params[1].t : NULL, act);
            i++;
        } else {
            x = nb_forward(c, x);
        }
    }
    return x;
}
static const nb_module_class sequential_class = {.kind = "Sequential", .forward = fwd_sequential};

/* A container of the n modules, named "0", "1", ...; on failure every module given is freed. */
static nb_module *container(const char *fn, const nb_module_class *cls, int n, nb_module *const *mods) {
    bool ok = n > 0 && mods;
    for (int i = 0; ok && i < n; i++) ok = mods[i] != NULL;
    if (!ok) nb_failf(fn, "%s", n > 0 && mods ? "a child module is NULL" : "needs at least one module");
    nb_module *m = ok ? nb_module_new(cls, NULL) : NULL;
    int added = 0;
    for (char name[16]; m && added < n; added++) {
        snprintf(name, sizeof name, "%d", added);
        if (nb_module_add_child(m, name, mods[added]) != 0) break;
    }
    if (m && added == n) return m;
    nb_module_free(m); /* and the children added */
    for (int i = added; mods && i < n; i++) nb_module_free(mods[i]);
    return NULL;
}

nb_module *nb_residual(nb_module *inner) { return container("nb_residual", &residual_class, 1, &inner); }
nb_module *nb_sequential(int n, nb_module *const *mods) {
    return container("nb_sequential", &sequential_class, n, mods);
}

/* --------------------------------------------------------------- calls */

nb_tensor *nb_forward(nb_module *m, nb_tensor *x) {
    if (!m) return nb_fail("nb_forward", "module is NULL");
    if (!x) return nb_failf("nb_forward", "%s: input is NULL", m->cls->kind);
    return m->cls->forward(m, x);
}

void nb_module_train(nb_module *m, bool on) {
    if (!m) return;
    m->training = on;
    for (int i = 0; i < m->nk; i++) nb_module_train(m->kids[i].m, on);
}

bool nb_module_training(const nb_module *m) { return m && m->training; }

int nb_module_name_params(nb_module *m) {
    if (!m) return nb_fail("nb_module_name_params", "module is NULL"), -1;
    table *tb = get_table("nb_module_name_params", m);
    if (!tb) return -1;
    for (int i = 0; i < tb->n[T_PARAMS]; i++) nb_set_name(tb->t[T_PARAMS][i], tb->name[T_PARAMS][i]);
    return tb->n[T_PARAMS];
}

int64_t nb_module_num_params(nb_module *m) {
    if (!m) return 0;
    table *tb = get_table("nb_module_num_params", m);
    if (!tb) return -1;
    int64_t n = 0;
    for (int i = 0; i < tb->n[T_PARAMS]; i++) n += nb_numel(tb->t[T_PARAMS][i]);
    return n;
}

void nb_module_zero_grad(nb_module *m) {
    if (!m) return;
    for (int i = 0; i < m->np; i++) nb_zero_grad(m->params[i].t);
    for (int c = 0; c < m->nk; c++) nb_module_zero_grad(m->kids[c].m);
}

static void free_tree(nb_module *m) {
    if (m->cls->free_state) m->cls->free_state(m->state);
    for (int i = 0; i < m->np; i++) nb_release(m->params[i].t), nb_dealloc(m->params[i].name);
    for (int i = 0; i < m->nb; i++) nb_release(m->bufs[i].t), nb_dealloc(m->bufs[i].name);
    for (int c = 0; c < m->nk; c++) free_tree(m->kids[c].m), nb_dealloc(m->kids[c].name);
    nb_dealloc(m->params), nb_dealloc(m->bufs), nb_dealloc(m->kids);
    nb_dealloc(m->tab);
    for (table *t = m->retired, *next; t; t = next) next = t->next, nb_dealloc(t);
    nb_dealloc(m);
}

void nb_module_free(nb_module *m) {
    if (!m) return;
    if (m->parent) {
        const char *name = "?";
        for (int i = 0; i < m->parent->nk; i++)
            if (m->parent->kids[i].m == m) name = m->parent->kids[i].name;
        nb_failf("nb_module_free", "%s is the child '%s' of %s, which frees it; free the root", m->cls->kind, name,
                 m->parent->cls->kind);
        return;
    }
    free_tree(m);
}

/*
 * tensor.c - creation, reference counting, scopes and element access.
 *
 * Ownership model (see internal.h): refs counts the user's handle plus every
 * internal pointer (views to their root, graph nodes to their inputs, leaves to
 * their gradient). Scopes are per-thread doubly linked lists of the handles
 * made inside them. Destruction runs from an explicit work list, never by
 * recursion, so a graph of any depth can be freed.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define INLINE_BYTES 256 /* data this small lives in the tensor's own block */

static size_t header_size(void) { return (sizeof(nb_tensor) + NBI_ALIGN - 1) & ~(size_t)(NBI_ALIGN - 1); }

void nbi_contig_strides(int rank, const int64_t *shape, int64_t *strides) {
    int64_t s = 1;
    for (int i = rank - 1; i >= 0; i--) {
        strides[i] = s;
        s *= shape[i] ? shape[i] : 1;
    }
}

/* Row-major with the strides nbi_contig_strides gives, axes of size 1 aside (nbi_geom_contig). */
bool nbi_is_contig(const nb_tensor *t) { return nbi_geom_contig(t->rank, t->shape, t->strides, t->numel); }

static void scope_add(nb_tensor *t) {
    nbi_thread *th = nbi_tls();
    if (th->nscopes == 0) {
        t->scope = -1;
        return;
    }
    int s = th->nscopes - 1;
    t->scope = s;
    t->sprev = NULL;
    t->snext = th->scope_first[s];
    if (t->snext) t->snext->sprev = t;
    th->scope_first[s] = t;
}

void nbi_unscope(nb_tensor *t) {
    if (t->scope < 0) return;
    nbi_thread *th = nbi_tls();
    if (t->sprev)
        t->sprev->snext = t->snext;
    else if (t->scope < th->nscopes)
        th->scope_first[t->scope] = t->snext;
    if (t->snext) t->snext->sprev = t->sprev;
    t->sprev = t->snext = NULL;
    t->scope = -1;
}

void nbi_adopt(nb_tensor *t) {
    t->user = true;
    scope_add(t);
}

static nb_tensor *new_header(nb_dtype dt, int rank, const int64_t *shape, size_t extra) {
    nb_tensor *t = nbi_alloc(header_size() + extra);
    if (!t) return NULL;
    memset(t, 0, sizeof *t);
    t->magic = NBI_MAGIC;
    t->refs = 1;
    t->user = true;
    t->dtype = dt;
    t->rank = (int8_t)rank;
    t->numel = 1;
    for (int i = 0; i < rank; i++) {
        t->shape[i] = shape[i];
        t->numel *= shape[i];
    }
    scope_add(t);
    return t;
}

/* A new tensor with storage of its own on backend be (its header in the tensor's allocation, small data too). */
nb_tensor *nbi_empty_on(const char *fn, const nbi_backend *be, nb_dtype dt, int rank, const int64_t *shape) {
    if (rank < 0 || rank > NB_MAX_RANK) return nbi_err(fn, "rank %d is outside 0..%d", rank, NB_MAX_RANK);
    if (!nbi_shape_ok(fn, nbi_dsize(dt), rank, shape)) return NULL;
    int64_t n = 1;
    for (int i = 0; i < rank; i++) n *= shape[i]; /* cannot overflow: bounded by nbi_shape_ok */
    int64_t bytes = n * (int64_t)nbi_dsize(dt);
    bool inl = bytes <= INLINE_BYTES && be == nbi_default_be(); /* inline data is host memory */
    nb_tensor *t = new_header(dt, rank, shape, inl ? (size_t)bytes : 0);
    if (!t) return nbi_err(fn, "out of memory for a tensor header");
    nbi_storage *st = &t->own;
    st->refs = 1;
    st->be = be;
    st->bytes = (size_t)bytes;
    st->home = t;
    if (inl) {
        st->ptr = (char *)t + header_size();
    } else {
        st->ptr = be->alloc(bytes ? (size_t)bytes : 1);
        if (!st->ptr) {
            nbi_unscope(t);
            t->magic = 0;
            nbi_dealloc(t);
            return nbi_err(fn, "out of memory for %lld bytes", (long long)bytes);
        }
        st->owns_ptr = true;
    }
    t->st = st;
    nbi_contig_strides(rank, shape, t->strides);
    return t;
}

nb_tensor *nbi_empty(const char *fn, nb_dtype dt, int rank, const int64_t *shape) {
    return nbi_empty_on(fn, nbi_default_be(), dt, rank, shape);
}

nb_tensor *nbi_view(nb_tensor *src, int rank, const int64_t *shape, const int64_t *strides, int64_t offset) {
    if (!nbi_shape_ok("view", 1, rank, shape)) return NULL; /* the callers check; new_header relies on it */
    nb_tensor *t = new_header(src->dtype, rank, shape, 0);
    if (!t) return nbi_err("view", "out of memory for a tensor header");
    memcpy(t->strides, strides, sizeof(int64_t) * (size_t)rank);
    t->offset = offset;
    t->st = src->st;
    t->st->refs++;
    return t;
}

/* Drop a reference to storage st; the last one frees its memory and the allocation holding it. */
static void storage_unref(nbi_storage *st) {
    if (--st->refs > 0) return;
    if (st->owns_ptr) st->be->dealloc(st->ptr);
    nbi_dealloc(st->home);
}

void nbi_ref(nb_tensor *t) { t->refs++; }

/* Drop the references t holds on other tensors into the work list. */
static void push(nb_tensor ***stack, size_t *n, size_t *cap, nb_tensor *t) {
    if (!t) return;
    if (--t->refs > 0) return;
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 64;
        nb_tensor **ns = realloc(*stack, nc * sizeof **stack);
        if (!ns) return; /* cannot happen in practice; leaks rather than crash */
        *stack = ns;
        *cap = nc;
    }
    (*stack)[(*n)++] = t;
}

typedef struct {
    nb_tensor ***stack;
    size_t *n, *cap;
} push_arg;

static void push(nb_tensor ***stack, size_t *n, size_t *cap, nb_tensor *t);
static void push_cb(nb_tensor *t, void *vp) {
    push_arg *p = vp;
    push(p->stack, p->n, p->cap, t);
}

static void destroy(nb_tensor *t, nb_tensor ***stack, size_t *n, size_t *cap) {
    if (t->has_node && (t->node.saved || t->node.ext)) {
        push_arg pa = {stack, n, cap};
        nbi_node_free_saved(&t->node, push_cb, &pa);
    }
    if (t->has_node && !t->node.released) {
        for (int i = 0; i < t->node.nin; i++) push(stack, n, cap, t->node.in[i]);
    }
    if (t->has_node && t->node.in != t->node.in_inline) {
        nbi_dealloc(t->node.in);
        nbi_dealloc(t->node.in_ver);
    }
    push(stack, n, cap, t->grad);
    push(stack, n, cap, t->acc);
    t->magic = 0;
    bool embedded = t->st == &t->own; /* then t's allocation goes with its storage */
    storage_unref(t->st);
    if (!embedded) nbi_dealloc(t);
}

void nbi_unref(nb_tensor *t) {
    if (!t) return;
    if (--t->refs > 0) return;
    nb_tensor *local[32];
    nb_tensor **stack = NULL;
    size_t n = 0, cap = 0;
    /* A short local array first: most frees touch a handful of tensors. */
    size_t ln = 0;
    local[ln++] = t;
    while (ln > 0 || n > 0) {
        nb_tensor *x = ln > 0 ? local[--ln] : stack[--n];
        /* children go to the heap stack; move them to local while there is room */
        size_t before = n;
        destroy(x, &stack, &n, &cap);
        while (n > before && ln < 32) local[ln++] = stack[--n];
    }
    free(stack);
}

/* ---------------------------------------------------------------- scopes -- */

void nb_scope_begin(void) {
    nbi_thread *th = nbi_tls();
    if (th->nscopes == th->cap_scopes) {
        int nc = th->cap_scopes ? th->cap_scopes * 2 : 16;
        nb_tensor **ns = realloc(th->scope_first, (size_t)nc * sizeof *ns);
        if (!ns) {
            /* Without room for another list the new scope shares its parent's (its tensors are
               freed later, with the parent); the matching nb_scope_end then frees nothing. */
            nbi_err("nb_scope_begin", "out of memory for scope %d", th->nscopes);
            th->shared_scopes++;
            return;
        }
        th->scope_first = ns;
        th->cap_scopes = nc;
    }
    th->scope_first[th->nscopes++] = NULL;
}

void nb_scope_end(void) {
    nbi_thread *th = nbi_tls();
    if (th->shared_scopes > 0) {
        th->shared_scopes--;
        return;
    }
    if (th->nscopes == 0) {
        nbi_err("nb_scope_end", "no open scope on this thread");
        return;
    }
    int s = th->nscopes - 1;
    while (th->scope_first[s]) {
        nb_tensor *t = th->scope_first[s];
        th->scope_first[s] = t->snext;
        if (t->snext) t->snext->sprev = NULL;
        t->sprev = t->snext = NULL;
        t->scope = -1;
        t->user = false;
        nbi_unref(t);
    }
    th->nscopes--;
    if (th->nscopes == 0) {
        free(th->scope_first);
        th->scope_first = NULL;
        th->cap_scopes = 0;
    }
}

int nb_scope_depth(void) { return nbi_tls()->nscopes + nbi_tls()->shared_scopes; }

nb_tensor *nb_keep(nb_tensor *t) {
    if (!nbi_check("nb_keep", t, 1)) return NULL;
    if (t->scope < 0) return t;
    int s = t->scope;
    nbi_unscope(t);
    if (s > 0) {
        nbi_thread *th = nbi_tls();
        t->scope = s - 1;
        t->snext = th->scope_first[s - 1];
        if (t->snext) t->snext->sprev = t;
        th->scope_first[s - 1] = t;
    }
    return t;
}

void nb_free(nb_tensor *t) {
    if (!t) return;
    if (t->magic != NBI_MAGIC || !t->user) {
        nbi_err("nb_free", "tensor was already freed");
        return;
    }
    nbi_unscope(t);
    t->user = false;
    nbi_unref(t);
}

/* A hold is a counted reference like a graph node's (so the engine never reuses a held tensor's memory), also
   counted in holds so that nb_release can tell a hold from a stray call. */
nb_tensor *nb_retain(nb_tensor *t) {
    if (!nbi_check("nb_retain", t, 1)) return NULL;
    if (!t->user && t->holds == 0) return nbi_err_force("nb_retain", "tensor was already freed");
    if (t->holds == INT32_MAX || t->refs == INT32_MAX)
        return nbi_err("nb_retain", "tensor %s is held 2^31 - 1 times already", NBI_SHAPE(t));
    t->holds++;
    nbi_ref(t);
    return t;
}

void nb_release(nb_tensor *t) {
    if (!t) return;
    if (t->magic != NBI_MAGIC || t->holds == 0) {
        nbi_err("nb_release", "tensor is not held (no nb_retain left to release)");
        return;
    }
    t->holds--;
    nbi_unref(t);
}

/* -------------------------------------------------------------- creation -- */

static void store_from(nb_tensor *t, const void *data, bool from_f64) { nbi_write_host(t, data, !from_f64); }

static bool dtype_ok(const char *fn, nb_dtype dt) {
    if (dt != NB_F32 && dt != NB_F64 && dt != NB_I64) {
        nbi_err(fn, "unknown dtype %d", (int)dt);
        return false;
    }
    return true;
}

static bool shape_arg_ok(const char *fn, int rank, const int64_t *shape) {
    if (rank < 0 || rank > NB_MAX_RANK) {
        nbi_err(fn, "rank %d is outside 0..%d", rank, NB_MAX_RANK);
        return false;
    }
    if (rank > 0 && !shape) {
        nbi_err(fn, "shape is NULL for rank %d", rank);
        return false;
    }
    return true;
}

nb_tensor *nb_new(nb_dtype dt, int rank, const int64_t *shape, const void *data) {
    if (!dtype_ok("nb_new", dt) || !shape_arg_ok("nb_new", rank, shape)) return NULL;
    nb_tensor *t = nbi_empty("nb_new", dt, rank, shape);
    if (t) store_from(t, data, false);
    return t;
}

char *nbi_index_str(int rank, const int64_t *shape, int64_t i, char *buf, size_t cap) {
    int64_t idx[NB_MAX_RANK] = {0};
    for (int d = rank - 1; d >= 0; d--) {
        idx[d] = shape[d] ? i % shape[d] : 0;
        i = shape[d] ? i / shape[d] : 0;
    }
    return nb_shape_str(rank, idx, buf, cap);
}

#define NBI_I64_RANGE "i64 (which takes finite values in [-2^63, 2^63), truncated toward zero)"

static nb_tensor *from_f64(const char *fn, nb_dtype dt, int rank, const int64_t *shape, const double *src) {
    if (!dtype_ok(fn, dt) || !shape_arg_ok(fn, rank, shape)) return NULL;
    nb_tensor *t = nbi_empty(fn, dt, rank, shape);
    if (!t || dt != NB_I64 || !src) {
        if (t) store_from(t, src, true);
        return t;
    }
    for (int64_t i = 0; i < t->numel; i++)
        if (!nbi_i64_fits(src[i])) {
            char ix[160];
            nb_free(t);
            if (rank == 0) return nbi_err(fn, "value %.17g cannot be stored in " NBI_I64_RANGE, src[i]);
            return nbi_err(fn, "element %s is %.17g, which cannot be stored in " NBI_I64_RANGE,
                           nbi_index_str(rank, shape, i, ix, sizeof ix), src[i]);
        }
    store_from(t, src, true);
    return t;
}

nb_tensor *nb_from_f64(nb_dtype dt, int rank, const int64_t *shape, const double *src) {
    return from_f64("nb_from_f64", dt, rank, shape, src);
}

nb_tensor *nb_scalar(nb_dtype dt, double v) { return from_f64("nb_scalar", dt, 0, NULL, &v); }

nb_tensor *nb_full(nb_dtype dt, int rank, const int64_t *shape, double v) {
    if (!dtype_ok("nb_full", dt) || !shape_arg_ok("nb_full", rank, shape)) return NULL;
    if (dt == NB_I64 && !nbi_i64_fits(v))
        return nbi_err("nb_full", "value %.17g cannot be stored in " NBI_I64_RANGE, v);
    nb_tensor *t = nbi_empty("nb_full", dt, rank, shape);
    if (t) {
        nbi_arr d = nbi_arr_of(t);
        nbi_be(t)->fill(&d, v);
    }
    return t;
}

nb_tensor *nbi_const_like(nb_tensor *like, double v) {
    return nb_full(like->dtype, like->rank, like->shape, v);
}

/* ---------------------------------------------------------------- access -- */

int nb_rank(const nb_tensor *t) { return nbi_check("nb_rank", t, 1) ? t->rank : -1; }
const int64_t *nb_shape(const nb_tensor *t) { return nbi_check("nb_shape", t, 1) ? t->shape : NULL; }
const int64_t *nb_strides(const nb_tensor *t) { return nbi_check("nb_strides", t, 1) ? t->strides : NULL; }
int64_t nb_numel(const nb_tensor *t) { return nbi_check("nb_numel", t, 1) ? t->numel : -1; }
nb_dtype nb_dtype_of(const nb_tensor *t) { return nbi_check("nb_dtype_of", t, 1) ? t->dtype : NB_F32; }
bool nb_is_contiguous(const nb_tensor *t) { return nbi_check("nb_is_contiguous", t, 1) && nbi_is_contig(t); }

double nbi_load(nb_dtype dt, const char *p) {
    switch (dt) {
    case NB_F32: return *(const float *)p;
    case NB_F64: return *(const double *)p;
    default: return (double)*(const int64_t *)p;
    }
}

void nbi_store(nb_dtype dt, char *p, double v) {
    switch (dt) {
    case NB_F32: *(float *)p = (float)v; break;
    case NB_F64: *(double *)p = v; break;
    default: *(int64_t *)p = (int64_t)v; break;
    }
}

int64_t nbi_offset_of(const nb_tensor *t, int64_t i) {
    int64_t off = 0;
    for (int d = t->rank - 1; d >= 0; d--) {
        int64_t n = t->shape[d];
        off += (i % n) * t->strides[d];
        i /= n;
    }
    return off;
}

double nb_item(const nb_tensor *t) {
    if (!nbi_check("nb_item", t, 1)) return NAN;
    if (t->numel != 1) {
        nbi_err("nb_item", "tensor %s has %lld elements, not 1", NBI_SHAPE(t), (long long)t->numel);
        return NAN;
    }
    return nbi_get_at(t, nbi_offset_of(t, 0));
}

int64_t nb_read_f64(const nb_tensor *t, double *dst, int64_t cap) {
    if (!nbi_check("nb_read_f64", t, 1)) return -1;
    if (cap < 0 || (cap > 0 && !dst)) {
        nbi_err("nb_read_f64", "destination is NULL or capacity %lld is negative", (long long)cap);
        return -1;
    }
    int64_t n = t->numel < cap ? t->numel : cap;
    if (nbi_read_f64(t, dst, n) != 0) {
        nbi_err("nb_read_f64", "out of memory for a copy of %s", NBI_SHAPE(t));
        return -1;
    }
    return t->numel;
}

double nb_get(const nb_tensor *t, const int64_t *index) {
    if (!nbi_check("nb_get", t, 1)) return NAN;
    if (t->rank > 0 && !index) {
        nbi_err("nb_get", "index is NULL for a tensor %s", NBI_SHAPE(t));
        return NAN;
    }
    int64_t off = 0;
    for (int d = 0; d < t->rank; d++) {
        int64_t i = index[d] < 0 ? index[d] + t->shape[d] : index[d];
        if (i < 0 || i >= t->shape[d]) {
            nbi_err("nb_get", "index %lld is out of range for axis %d of %s", (long long)index[d], d,
                    NBI_SHAPE(t));
            return NAN;
        }
        off += i * t->strides[d];
    }
    return nbi_get_at(t, off);
}

void *nb_data(nb_tensor *t) {
    if (!nbi_check("nb_data", t, 1)) return NULL;
    if (!nbi_is_contig(t)) return nbi_err("nb_data", "tensor %s is not contiguous", NBI_SHAPE(t));
    if (t->st->be->device.type != NB_DEV_CPU)
        return nbi_err("nb_data", "tensor %s is not on the CPU (nb_to_device it first)", NBI_SHAPE(t));
    return nbi_arr_of(t).data;
}

static const char *dtype_name(nb_dtype dt) { return dt == NB_F32 ? "f32" : dt == NB_F64 ? "f64" : "i64"; }

void nb_print(const nb_tensor *t, FILE *f) {
    if (!f) return;
    if (!nbi_check("nb_print", t, 1)) {
        fprintf(f, "tensor(NULL)\n");
        return;
    }
    fprintf(f, "tensor(%s, %s)", dtype_name(t->dtype), NBI_SHAPE(t));
    int64_t limit = t->numel > 1000 ? 6 : t->numel;
    fputc(' ', f);
    for (int64_t i = 0; i < t->numel; i++) {
        if (i == limit && limit < t->numel) {
            fprintf(f, " ...");
            break;
        }
        int opens = 0, closes = 0;
        for (int64_t d = t->rank - 1, span = 1; d >= 0; d--) {
            span *= t->shape[d];
            if (i % span == 0) opens++;
            if ((i + 1) % span == 0) closes++;
        }
        if (i > 0) fputs(opens ? ", " : ", ", f);
        for (int k = 0; k < opens; k++) fputc('[', f);
        double v = nbi_get_at(t, nbi_offset_of(t, i));
        if (v != v)
            fputs("nan", f);
        else
            fprintf(f, "%.6g", v);
        for (int k = 0; k < closes; k++) fputc(']', f);
    }
    if (t->numel == 0) fputs("[]", f);
    fputc('\n', f);
}

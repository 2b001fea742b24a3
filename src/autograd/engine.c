/*
 * engine.c - graph recording and the reverse-mode backward pass.
 *
 * Recording (define-by-run): an op whose inputs require grad, run while grad
 * mode is on, calls nbi_record, which stores the op, counted references to its
 * inputs and the storage versions of the values its backward will read into
 * the result's inline node. The graph is thus the set of tensors reachable
 * through node inputs; C control flow decides what gets recorded.
 *
 * Backward:
 *  1. An iterative depth-first search from the root (no recursion: a chain of a
 *     million nodes is fine) lists the tensors that need a gradient in
 *     post-order, and marks those that lead to a wanted gradient (every leaf
 *     for nb_backward, the tensors asked for by nb_gradients). Released graphs and stale saved values (a version counter
 *     moved by an in-place op) are found here, before anything is computed, so a
 *     failed backward changes nothing.
 *  2. In reverse post-order (a topological order from the root), each tensor's
 *     accumulated gradient `acc` goes through its op's backward rule; the
 *     results are added into the inputs' `acc`, which sums the contributions
 *     of every path. Each rule runs inside its own scope so temporaries die at
 *     once; rules are ordinary differentiable ops, recorded only under
 *     NB_CREATE_GRAPH, which is how gradients of gradients work.
 *  3. Leaves' gradients are accumulated into their .grad (or handed to the
 *     caller by nb_gradients), and without NB_RETAIN_GRAPH every node visited
 *     drops its inputs ("released"). Every new .grad is made before the first
 *     is installed, so a call that fails (out of memory, say) leaves every
 *     .grad as it was and can simply be retried.
 *
 * With a gradient-ready hook set (nb_set_grad_ready_hook), step 3's first pass
 * is done leaf by leaf during step 2: each leaf's last consumer (the smallest
 * post-order position among the nodes that take it as input) is found before
 * the pass, and as soon as the reverse walk has passed that position the
 * leaf's new gradient is made and handed to the hook. Installing still waits
 * for the end, so the failure contract above is unchanged.
 */
#include <stdlib.h>
#include <string.h>

#include "../core/internal.h"

void nb_set_grad_enabled(bool on) { nbi_tls()->grad_off = !on; }
bool nb_grad_enabled(void) { return !nbi_tls()->grad_off; }

bool nbi_needs_grad(int n, nb_tensor *const *in) {
    if (nbi_tls()->grad_off) return false;
    for (int i = 0; i < n; i++)
        if (in[i] && in[i]->requires_grad) return true;
    return false;
}

nb_tensor *nbi_record(nb_tensor *out, nbi_op op, int n, nb_tensor *const *in, uint32_t saves_in, bool saves_out) {
    nbi_node *nd = &out->node;
    nd->in = nd->in_inline;
    nd->in_ver = nd->ver_inline;
    if (n > NBI_INLINE_IN) {
        nd->in = nbi_alloc(sizeof(nb_tensor *) * (size_t)n);
        nd->in_ver = nbi_alloc(sizeof(uint32_t) * (size_t)n);
        if (!nd->in || !nd->in_ver) {
            nbi_dealloc(nd->in);
            nbi_dealloc(nd->in_ver);
            nd->in = nd->in_inline;
            nb_free(out);
            return nbi_err(nbi_ops[op].name, "out of memory recording the graph");
        }
    }
    nd->op = (uint16_t)op;
    nd->nin = n;
    nd->nsaved = 0;
    nd->saved = NULL;
    nd->saved_ver = NULL;
    nd->saves_in = saves_in;
    nd->saves_out = saves_out;
    nd->saved_spent = 0;
    nd->released = 0;
    for (int i = 0; i < n; i++) {
        nd->in[i] = in[i];
        nbi_ref(in[i]);
        nd->in_ver[i] = in[i]->st->version;
    }
    nd->out_ver = out->st->version;
    out->has_node = true;
    out->requires_grad = true;
    return out;
}

int nbi_save(nb_tensor *out, int n, nb_tensor *const *ts) {
    nbi_node *nd = &out->node;
    const char *name = nbi_ops[nd->op].name;
    int most = nbi_ops[nd->op].saved < 0 ? NBI_MAX_SAVED : nbi_ops[nd->op].saved;
    if (n < 0 || nd->nsaved + n > most)
        return nbi_err(name, "cannot save %d more tensors on the node (%d saved, at most %d)", n, nd->nsaved, most), -1;
    if (n == 0) return 0;
    if (!nd->saved) { /* room for the op's most, in one block: pointers then versions */
        nd->saved = nbi_alloc((sizeof(nb_tensor *) + sizeof(uint32_t)) * (size_t)most);
        if (!nd->saved) return nbi_err(name, "out of memory saving tensors for the backward"), -1;
        nd->saved_ver = (uint32_t *)(void *)(nd->saved + most);
    }
    for (int i = 0; i < n; i++) {
        nb_tensor *t = ts[i];
        if (t) nbi_ref(t);
        nd->saved_ver[nd->nsaved] = t ? t->st->version : 0;
        nd->saved[nd->nsaved++] = t;
    }
    return 0;
}

nb_tensor *nbi_saved(const char *fn, const nb_tensor *out, int i) {
    const nbi_node *nd = &out->node;
    const char *name = nd->op == NBI_OP_CUSTOM && nd->ext ? nb_ctx_name(nd->ext) : nbi_ops[nd->op].name;
    if (!out->has_node || nd->released)
        return nbi_err(fn, "the graph through op '%s' was released: its saved tensors are gone", name);
    if (i < 0 || i >= nd->nsaved)
        return nbi_err(fn, "%s: index %d is outside the %d saved tensors", name, i, nd->nsaved);
    nb_tensor *t = nd->saved[i];
    if (t && t->st->version != nd->saved_ver[i])
        return nbi_err(fn, "%s: saved tensor %d %s was modified in place after it was saved", name, i, NBI_SHAPE(t));
    return t;
}

void nbi_node_free_saved(nbi_node *nd, void (*drop)(nb_tensor *t, void *arg), void *arg) {
    for (int i = 0; i < nd->nsaved; i++)
        if (nd->saved[i]) drop(nd->saved[i], arg);
    nd->nsaved = 0;
    nbi_dealloc(nd->saved);
    nd->saved = NULL;
    nd->saved_ver = NULL;
    nbi_dealloc(nd->ext);
    nd->ext = NULL;
}

static void unref_cb(nb_tensor *t, void *arg) {
    (void)arg;
    nbi_unref(t);
}

void nbi_release_node(nb_tensor *t) {
    if (!t->has_node || t->node.released) return;
    t->node.released = 1;
    if (t->node.saved || t->node.ext) nbi_node_free_saved(&t->node, unref_cb, NULL);
    for (int i = 0; i < t->node.nin; i++) {
        nbi_unref(t->node.in[i]);
        t->node.in[i] = NULL;
    }
}

/* ----------------------------------------------------------- leaves ------ */

void nb_set_requires_grad(nb_tensor *t, bool on) {
    if (!nbi_check("nb_set_requires_grad", t, 1)) return;
    if (t->has_node) {
        nbi_err("nb_set_requires_grad", "tensor %s is the result of op '%s', not a leaf; use nb_detach first",
                NBI_SHAPE(t), nbi_ops[t->node.op].name);
        return;
    }
    if (on && t->dtype == NB_I64) {
        nbi_err("nb_set_requires_grad", "tensor %s has dtype i64; only f32 and f64 tensors can require grad",
                NBI_SHAPE(t));
        return;
    }
    t->requires_grad = on;
}

bool nb_requires_grad(const nb_tensor *t) { return nbi_check("nb_requires_grad", t, 1) && t->requires_grad; }
bool nb_is_leaf(const nb_tensor *t) { return nbi_check("nb_is_leaf", t, 1) && !t->has_node; }

nb_tensor *nb_grad(const nb_tensor *t) {
    if (!nbi_check("nb_grad", t, 1)) return NULL;
    return t->grad;
}

void nb_zero_grad(nb_tensor *t) {
    if (!nbi_check("nb_zero_grad", t, 1) || !t->grad) return;
    if (t->grad->has_node) {
        nbi_unref(t->grad);
        t->grad = NULL;
    } else {
        nbi_k_fill(t->grad, 0);
        t->grad->st->version++;
    }
}

void nb_clear_grad(nb_tensor *t) {
    if (!nbi_check("nb_clear_grad", t, 1) || !t->grad) return;
    nbi_unref(t->grad);
    t->grad = NULL;
}

nb_tensor *nb_detach(nb_tensor *t) {
    if (!nbi_check("nb_detach", t, 1)) return NULL;
    return nbi_view(t, t->rank, t->shape, t->strides, t->offset);
}

/* ----------------------------------------------------------- backward ---- */

typedef struct {
    nb_tensor *t;
    int next;
} frame;

/* A growable array in library memory. */
static bool grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return true;
    size_t nc = *cap ? *cap * 2 : 256;
    while (nc < need) nc *= 2;
    void *np = nbi_alloc(nc * elem);
    if (!np) return false;
    if (*p) memcpy(np, *p, *cap * elem);
    nbi_dealloc(*p);
    *p = np;
    *cap = nc;
    return true;
}

static int wrt_index(nb_tensor *t, int nwrt, nb_tensor *const *wrt) {
    for (int i = 0; i < nwrt; i++)
        if (wrt[i] == t) return i;
    return -1;
}

/* Post-order of the tensors between root and the leaves (or wrt) that need a
   gradient. Every listed tensor gets a reference, dropped by the caller. */
static int topo(const char *fn, nb_tensor *root, int nwrt, nb_tensor *const *wrt, nb_tensor ***order,
                size_t *norder) {
    nbi_thread *th = nbi_tls();
    uint64_t mark = ++th->epoch;
    frame *stack = NULL;
    size_t ns = 0, cs = 0, no = 0, co = 0;
    nb_tensor **out = NULL;
    int rc = 0;
    if (!grow((void **)&stack, &cs, 1, sizeof(frame))) goto oom;
    stack[ns++] = (frame){root, 0};
    root->mark = mark;
    while (ns > 0) {
        frame *f = &stack[ns - 1];
        nb_tensor *t = f->t;
        /* A released node asked for by nb_gradients is an end point; any other is an error. */
        bool expand = t->has_node && !(t->node.released && nwrt && wrt_index(t, nwrt, wrt) >= 0);
        if (expand && f->next == 0 && t->node.released) {
            nbi_err(fn, "the graph through op '%s' %s was already released by a previous backward; "
                        "pass NB_RETAIN_GRAPH to the first one to backpropagate twice",
                    nbi_ops[t->node.op].name, NBI_SHAPE(t));
            rc = -1;
            goto done;
        }
        if (expand && f->next < t->node.nin) {
            nb_tensor *c = t->node.in[f->next++];
            if (c->requires_grad && c->mark != mark) {
                c->mark = mark;
                if (!grow((void **)&stack, &cs, ns + 1, sizeof(frame))) goto oom;
                stack[ns++] = (frame){c, 0};
            }
            continue;
        }
        if (!grow((void **)&out, &co, no + 1, sizeof(nb_tensor *))) goto oom;
        nbi_ref(t);
        out[no++] = t;
        ns--;
    }
    /* Which tensors lead to a wanted gradient (post-order: children first). */
    for (size_t i = 0; i < no; i++) {
        nb_tensor *t = out[i];
        bool need = nwrt == 0 || wrt_index(t, nwrt, wrt) >= 0;
        if (!need && t->has_node && !t->node.released)
            for (int k = 0; k < t->node.nin && !need; k++) {
                nb_tensor *c = t->node.in[k];
                need = c->requires_grad && c->mark == mark && c->bw_needed;
            }
        t->bw_needed = need;
    }
    /* Saved values must not have changed since they were recorded. */
    for (size_t i = 0; i < no && rc == 0; i++) {
        nb_tensor *t = out[i];
        if (!t->has_node || t->node.released || !t->bw_needed) continue;
        nbi_node *nd = &t->node;
        for (int k = 0; k < nd->nin; k++) {
            if (!(nd->saves_in >> (k < 31 ? k : 31) & 1)) continue; /* bit 31: inputs 31 and up */
            uint32_t v = nd->in[k]->st->version;
            if (v != nd->in_ver[k]) {
                nbi_err(fn, "input %d %s of op '%s' was modified in place after it was used (version %u, "
                            "saved at version %u); backward would be wrong",
                        k, NBI_SHAPE(nd->in[k]), nbi_ops[nd->op].name, v, nd->in_ver[k]);
                rc = -1;
                break;
            }
        }
        if (rc == 0 && nd->saves_out && t->st->version != nd->out_ver) {
            nbi_err(fn, "the output %s of op '%s' was modified in place after it was computed; backward would be "
                        "wrong",
                    NBI_SHAPE(t), nbi_ops[nd->op].name);
            rc = -1;
        }
    }
    goto done;
oom:
    nbi_err(fn, "out of memory ordering the graph");
    rc = -1;
done:
    nbi_dealloc(stack);
    if (rc != 0) {
        for (size_t i = 0; i < no; i++) nbi_unref(out[i]);
        nbi_dealloc(out);
        out = NULL;
        no = 0;
    }
    *order = out;
    *norder = no;
    return rc;
}

static void set_acc(nb_tensor *t, nb_tensor *g) {
    if (g) nbi_ref(g);
    if (t->acc) nbi_unref(t->acc);
    t->acc = g;
}

static bool same_shape(const nb_tensor *a, const nb_tensor *b) {
    if (a->rank != b->rank) return false;
    for (int i = 0; i < a->rank; i++)
        if (a->shape[i] != b->shape[i]) return false;
    return true;
}

/* Run one node's rule and add its results into its inputs' acc. */
static int step(const char *fn, nb_tensor *t) {
    nbi_node *nd = &t->node;
    nb_tensor *inl[8] = {0};
    nb_tensor **gin = inl;
    if (nd->nin > 8) {
        gin = nbi_alloc(sizeof(nb_tensor *) * (size_t)nd->nin);
        if (!gin) {
            nbi_err(fn, "out of memory in backward");
            return -1;
        }
        memset(gin, 0, sizeof(nb_tensor *) * (size_t)nd->nin);
    }
    int rc = 0;
    nb_scope_begin();
    if (nbi_ops[nd->op].backward(t, t->acc, gin) != 0) {
        nbi_err(fn, "backward of op '%s' failed", nbi_ops[nd->op].name);
        rc = -1;
    }
    for (int i = 0; i < nd->nin && rc == 0; i++) {
        nb_tensor *x = nd->in[i], *g = gin[i];
        if (!g || !x->requires_grad || !x->bw_needed) continue;
        if (!same_shape(g, x) || g->dtype != x->dtype) {
            char gs[160];
            const char *name = nd->op == NBI_OP_CUSTOM ? nb_ctx_name(nd->ext) : nbi_ops[nd->op].name;
            nbi_err(fn, "backward of op '%s' gave a %s gradient %s for input %d of shape %s and dtype %s", name,
                    g->dtype == NB_F32 ? "f32" : "f64", nbi_shape_s(g, gs, sizeof gs), i, NBI_SHAPE(x),
                    x->dtype == NB_F32 ? "f32" : "f64");
            rc = -1;
            break;
        }
        nb_tensor *acc = x->acc;
        if (nbi_bw_acc(x)) {
            nbi_k_binary(NBI_B_ADD, acc, acc, g); /* ours alone: summed in place, the bits of nb_add */
            continue;
        }
        if (acc) {
            g = nb_add(acc, g);
            if (!g) {
                rc = -1;
                break;
            }
        }
        set_acc(x, g);
    }
    nb_scope_end();
    if (gin != inl) nbi_dealloc(gin);
    return rc;
}

nb_tensor *nbi_bw_acc(const nb_tensor *x) {
    nb_tensor *acc = x->acc;
    return acc && x->requires_grad && x->bw_needed && !nb_grad_enabled() && acc->refs == 1 && !acc->user &&
                   acc->st->refs == 1 && !acc->has_node && acc->dtype == x->dtype && nbi_is_contig(acc)
               ? acc
               : NULL;
}

nb_tensor *nbi_bw_reuse_saved(nb_tensor *out, int i) {
    nbi_node *nd = &out->node;
    if (!nbi_tls()->bw_frees || nb_grad_enabled() || !out->has_node || nd->released || i < 0 || i >= nd->nsaved ||
        i >= 16 || (nd->saved_spent >> i & 1u))
        return NULL;
    nb_tensor *t = nd->saved[i];
    if (!t || t->refs != 1 || t->user || t->st->refs != 1 || !nbi_is_contig(t) || t->st->version != nd->saved_ver[i])
        return NULL;
    nb_tensor *v = nbi_view(t, t->rank, t->shape, t->strides, t->offset);
    if (v) nd->saved_spent |= (uint16_t)(1u << i); /* the node keeps the memory (a failed pass frees nothing of it) */
    return v;
}

bool nbi_saved_spent(const nb_tensor *out, int i) {
    return out->has_node && i >= 0 && i < 16 && (out->node.saved_spent >> i & 1u);
}

void nb_set_grad_ready_hook(nb_grad_hook fn, void *user) {
    nbi_thread *th = nbi_tls();
    th->grad_hook = fn;
    th->grad_hook_user = fn ? user : NULL;
}

nb_grad_hook nb_grad_ready_hook(void **user) {
    nbi_thread *th = nbi_tls();
    if (user) *user = th->grad_hook_user;
    return th->grad_hook;
}

/* A leaf's bw_last once its new gradient was made early: MADE, the acc is the new .grad; MADE_COPY, the acc
   holds old .grad + contribution, to be copied into the existing .grad (which keeps its identity). */
enum { BW_MADE = -2, BW_MADE_COPY = -3 };

/* Make leaf t's new gradient (old .grad plus its acc) in its acc; see the two passes in run_backward. Sets
   *copy when the result is to be copied into t's existing .grad rather than to replace it. */
static int make_leaf_grad(nb_tensor *t, bool create, bool early, bool *copy) {
    nb_tensor *g = t->acc;
    *copy = false;
    if (!create && t->grad && !t->grad->has_node) {
        if (!early) return 0; /* summed in place at install */
        *copy = true;         /* the hook needs the final value now: old + new, the bits of the in-place sum */
    } else if (!create && !t->grad && !g->user && g->refs == 1 && g->st->refs == 1 && !g->has_node &&
               nbi_is_contig(g)) {
        return 0; /* held by nothing else: the gradient takes the buffer instead of a copy */
    }
    nb_scope_begin();
    nb_tensor *ng;
    if (create) ng = t->grad ? nb_add(t->grad, g) : nb_add_scalar(g, 0.0);
    else ng = t->grad ? nb_add(t->grad, g) : nb_clone(g); /* grad mode is off: no graph */
    if (ng) set_acc(t, ng);
    nb_scope_end();
    return ng ? 0 : -1;
}

typedef struct {
    int64_t last;
    size_t pos;
} leaf_due;

static int due_cmp(const void *a, const void *b) { /* latest-firing first: by last, then position, descending */
    const leaf_due *x = a, *y = b;
    if (x->last != y->last) return x->last < y->last ? 1 : -1;
    return x->pos < y->pos ? 1 : x->pos > y->pos ? -1 : 0;
}

/* Fire the hook for the leaves due at or after position `at` (from *next on); returns 0 or -1. */
static int fire_due(nb_tensor **order, const leaf_due *due, size_t ndue, size_t *next, int64_t at, bool create) {
    nbi_thread *th = nbi_tls();
    for (; *next < ndue && due[*next].last >= at; (*next)++) {
        nb_tensor *t = order[due[*next].pos];
        if (!t->acc) continue; /* no contribution reached it: its .grad stays, no hook */
        bool copy;
        if (make_leaf_grad(t, create, true, &copy) != 0) return -1;
        t->bw_last = copy ? BW_MADE_COPY : BW_MADE;
        th->grad_hook(t, t->acc, th->grad_hook_user);
    }
    return 0;
}

/* Seed as a tensor of root's shape and dtype (a new ones tensor for NULL). */
static nb_tensor *make_seed(const char *fn, nb_tensor *root, const nb_tensor *seed) {
    if (!seed) {
        if (root->numel != 1)
            return nbi_err(fn, "root %s has %lld elements; a non-scalar root needs a seed of its shape%s",
                           NBI_SHAPE(root), (long long)root->numel,
                           strcmp(fn, "nb_gradient") == 0 ? " (use nb_gradients)" : "");
        return nbi_const_like(root, 1.0);
    }
    if (!nbi_check_float(fn, seed, 2)) return NULL;
    if (!same_shape(seed, root))
        return nbi_err(fn, "seed %s does not match root %s", NBI_SHAPE(seed), NBI_SHAPE(root));
    if (seed->dtype != root->dtype) return nb_to((nb_tensor *)seed, root->dtype);
    nbi_ref((nb_tensor *)seed); /* an alias handle, so the scope can drop it like the others */
    nb_tensor *s = nbi_view((nb_tensor *)seed, seed->rank, seed->shape, seed->strides, seed->offset);
    nbi_unref((nb_tensor *)seed);
    return s;
}

static int run_backward(const char *fn, nb_tensor *root, const nb_tensor *seed, int nwrt, nb_tensor *const *wrt,
                        nb_tensor **results, unsigned flags) {
    if (!nbi_check_float(fn, root, 1)) return -1;
    nbi_thread *th = nbi_tls();
    if (!root->requires_grad) {
        if (nwrt == 0)
            return nbi_err(fn, "root %s does not require grad: nothing it depends on requires grad",
                           NBI_SHAPE(root)),
                   -1;
        for (int j = 0; j < nwrt; j++) results[j] = nbi_const_like(wrt[j], 0.0);
        for (int j = 0; j < nwrt; j++)
            if (!results[j]) {
                for (int k = 0; k < nwrt; k++) nb_free(results[k]), results[k] = NULL;
                return -1;
            }
        return 0;
    }
    bool create = flags & NB_CREATE_GRAPH, retain = create || (flags & NB_RETAIN_GRAPH);
    nb_tensor **order = NULL;
    size_t no = 0;
    if (topo(fn, root, nwrt, wrt, &order, &no) != 0) return -1;

    bool saved_off = th->grad_off, saved_frees = th->bw_frees;
    th->grad_off = !create;
    th->bw_frees = !retain;
    int rc = 0;
    nb_scope_begin();
    nb_tensor *s = make_seed(fn, root, seed);
    if (!s) rc = -1;
    else set_acc(root, s);
    nb_scope_end();

    /* The gradient-ready hook: each leaf's last consumer, and the leaves in the order they become final. */
    bool hooked = rc == 0 && nwrt == 0 && th->grad_hook;
    leaf_due *due = NULL;
    size_t ndue = 0, next_due = 0;
    if (hooked) {
        for (size_t i = 0; i < no; i++)
            if (!order[i]->has_node) order[i]->bw_last = (int64_t)no, ndue++;
        for (size_t i = 0; i < no; i++) {
            nb_tensor *t = order[i];
            if (!t->has_node || t->node.released || !t->bw_needed) continue;
            for (int k = 0; k < t->node.nin; k++) {
                nb_tensor *c = t->node.in[k];
                if (c->requires_grad && !c->has_node && c->mark == th->epoch && c->bw_last > (int64_t)i)
                    c->bw_last = (int64_t)i;
            }
        }
        due = ndue ? nbi_alloc(sizeof(leaf_due) * ndue) : NULL;
        if (ndue && !due) {
            nbi_err(fn, "out of memory in backward");
            rc = -1;
        }
        ndue = 0;
        for (size_t i = 0; i < no && rc == 0; i++)
            if (!order[i]->has_node) due[ndue++] = (leaf_due){order[i]->bw_last, i};
        if (rc == 0) {
            if (ndue) qsort(due, ndue, sizeof(leaf_due), due_cmp);
            rc = fire_due(order, due, ndue, &next_due, (int64_t)no, create);
        }
    }

    for (size_t i = no; i-- > 0 && rc == 0;) {
        nb_tensor *t = order[i];
        if (t->acc && t->has_node && !t->node.released && t->bw_needed) {
            rc = step(fn, t);
            if (!nwrt || wrt_index(t, nwrt, wrt) < 0) set_acc(t, NULL); /* a wanted gradient stays */
        }
        if (hooked && rc == 0) rc = fire_due(order, due, ndue, &next_due, (int64_t)i, create);
    }
    nbi_dealloc(due);

    if (rc == 0 && nwrt == 0) {
        /* Accumulate into the leaves' .grad in two passes, so that a failure changes no .grad: first every new
           gradient that needs memory is made and left in the leaf's acc (replacing its contribution), then,
           when all were made, they are installed, and the contributions to gradients summed in place are
           added (which cannot fail). */
        for (size_t i = 0; i < no && rc == 0; i++) {
            nb_tensor *t = order[i];
            if (t->has_node || !t->acc || (hooked && (t->bw_last == BW_MADE || t->bw_last == BW_MADE_COPY)))
                continue;
            bool copy;
            rc = make_leaf_grad(t, create, false, &copy);
        }
        for (size_t i = 0; i < no && rc == 0; i++) {
            nb_tensor *t = order[i], *g = t->acc;
            if (t->has_node || !g) continue;
            if (hooked && t->bw_last == BW_MADE_COPY) {
                nbi_k_copy(t->grad, g); /* made early as old + new: the same bits as the sum in place */
                t->grad->st->version++;
                continue;
            }
            if (!create && t->grad && !t->grad->has_node) {
                nbi_k_binary(NBI_B_ADD, t->grad, t->grad, g);
                t->grad->st->version++; /* a graph that saved the old value will notice */
                continue;
            }
            nbi_ref(g);
            if (t->grad) nbi_unref(t->grad);
            t->grad = g;
        }
    }
    if (rc == 0 && nwrt > 0) {
        for (int j = 0; j < nwrt; j++) {
            nb_tensor *g = wrt[j]->acc;
            if (!g) {
                g = nbi_const_like(wrt[j], 0.0);
                if (!g) {
                    rc = -1;
                    break;
                }
                results[j] = g;
                continue;
            }
            if (g->user) {
                /* Someone already holds this handle (the seed, say): hand out an alias. */
                g = nb_reshape(g, g->rank, g->shape);
                if (!g) {
                    rc = -1;
                    break;
                }
                results[j] = g;
            } else {
                nbi_ref(g);
                nbi_adopt(g);
                results[j] = g;
            }
        }
        if (rc != 0)
            for (int j = 0; j < nwrt; j++) {
                nb_free(results[j]);
                results[j] = NULL;
            }
    }
    th->grad_off = saved_off;
    th->bw_frees = saved_frees;
    for (size_t i = 0; i < no; i++) set_acc(order[i], NULL);
    if (rc == 0 && !retain)
        for (size_t i = 0; i < no; i++) nbi_release_node(order[i]);
    for (size_t i = 0; i < no; i++) nbi_unref(order[i]);
    nbi_dealloc(order);
    return rc;
}

int nb_backward(nb_tensor *root, const nb_tensor *seed, unsigned flags) {
    return run_backward("nb_backward", root, seed, 0, NULL, NULL, flags);
}

int nb_gradients(nb_tensor *out, const nb_tensor *seed, int n, nb_tensor *const *wrt, unsigned flags,
                 nb_tensor **grads) {
    const char *fn = "nb_gradients";
    if (n <= 0 || !wrt || !grads) return nbi_err(fn, "need n > 0 tensors and room for their gradients"), -1;
    for (int i = 0; i < n; i++) {
        grads[i] = NULL;
        if (!nbi_check_float(fn, wrt[i], 4)) return -1;
    }
    return run_backward(fn, out, seed, n, wrt, grads, flags);
}

nb_tensor *nb_gradient(nb_tensor *out, nb_tensor *wrt, unsigned flags) {
    nb_tensor *g = NULL;
    if (!nbi_check_float("nb_gradient", wrt, 2)) return NULL;
    if (run_backward("nb_gradient", out, NULL, 1, &wrt, &g, flags) != 0) return NULL;
    return g;
}

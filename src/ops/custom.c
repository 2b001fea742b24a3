/*
 * custom.c - user-defined ops: a forward and a backward callback with saved
 * tensors and user data, like torch.autograd.Function.
 *
 * The forward runs with grad mode off on the inputs; its result is then
 * recorded as one node whose context (callbacks, user data; plain memory) lives
 * in the node's `ext`. Tensors saved with nb_ctx_save during the forward are
 * held by the context until the node exists, then kept on the node like any
 * op's (nbi_save): versions checked when nb_ctx_saved reads them, dropped when
 * the graph is released. The engine checks the backward's gradients like any
 * rule's: each must have its input's shape and dtype.
 */
#include <string.h>

#include "../core/internal.h"

struct nb_ctx {
    char name[48];
    nb_custom_backward backward;
    void *ud;
    int npending; /* saved during the forward, before the node exists (counted references) */
    nb_tensor *pending[NBI_MAX_SAVED];
    uint32_t pending_ver[NBI_MAX_SAVED];
    const nb_tensor *out; /* the node's output, while the backward runs */
    nb_tensor *const *inputs;
    int ninputs;
};

static void drop_pending(nb_ctx *c) {
    for (int i = 0; i < c->npending; i++) nbi_unref(c->pending[i]);
    c->npending = 0;
}

static void free_ctx(nb_ctx *c) {
    drop_pending(c);
    nbi_dealloc(c);
}

int nb_ctx_save(nb_ctx *ctx, int n, nb_tensor *const *ts) {
    const char *fn = "nb_ctx_save";
    if (!ctx) return nbi_err(fn, "context is NULL"), -1;
    if (ctx->out) return nbi_err(fn, "%s: tensors are saved in the forward, not the backward", ctx->name), -1;
    if (n < 0 || ctx->npending + n > NBI_MAX_SAVED || (n > 0 && !ts))
        return nbi_err(fn, "%s: cannot save %d more tensors (at most %d)", ctx->name, n, NBI_MAX_SAVED), -1;
    for (int i = 0; i < n; i++)
        if (!nbi_check(fn, ts[i], i + 1)) return -1;
    for (int i = 0; i < n; i++) {
        nbi_ref(ts[i]);
        ctx->pending_ver[ctx->npending] = ts[i]->st->version;
        ctx->pending[ctx->npending++] = ts[i];
    }
    return 0;
}

nb_tensor *nb_ctx_saved(const nb_ctx *ctx, int i) {
    if (!ctx) return nbi_err("nb_ctx_saved", "context is NULL");
    if (ctx->out) return nbi_saved("nb_ctx_saved", ctx->out, i);
    if (i < 0 || i >= ctx->npending) /* still in the forward */
        return nbi_err("nb_ctx_saved", "%s: index %d is outside the %d saved tensors", ctx->name, i, ctx->npending);
    if (ctx->pending[i]->st->version != ctx->pending_ver[i])
        return nbi_err("nb_ctx_saved", "%s: saved tensor %d %s was modified in place after it was saved",
                       ctx->name, i, NBI_SHAPE(ctx->pending[i]));
    return ctx->pending[i];
}

nb_tensor *nb_custom(const char *name, int n, nb_tensor *const *inputs, nb_custom_forward forward,
                     nb_custom_backward backward, void *ud) {
    const char *fn = "nb_custom";
    if (!forward || !backward || n <= 0 || n > 64 || !inputs)
        return nbi_err(fn, "%s: need forward and backward callbacks and 1..64 inputs (got %d)", name ? name : "?",
                       n);
    for (int i = 0; i < n; i++)
        if (!nbi_check(fn, inputs[i], i + 1)) return NULL;
    nb_ctx *c = nbi_alloc(sizeof *c);
    if (!c) return nbi_err(fn, "out of memory");
    memset(c, 0, sizeof *c);
    snprintf(c->name, sizeof c->name, "%s", name ? name : "custom");
    c->backward = backward;
    c->ud = ud;
    c->inputs = inputs;
    c->ninputs = n;
    bool was = nb_grad_enabled();
    nb_set_grad_enabled(false);
    nb_tensor *out = forward(c, n, inputs, ud);
    nb_set_grad_enabled(was);
    c->inputs = NULL;
    if (!out) {
        free_ctx(c);
        return nbi_err(fn, "%s: the forward callback failed", c->name);
    }
    bool is_input = false;
    for (int i = 0; i < n; i++) is_input |= out == inputs[i];
    if (is_input || out->has_node || out->st != &out->own || out->st->refs != 1 || out->refs != 1 || !out->user) {
        /* Results must be fresh tensors the op can own: copy anything else. */
        nb_set_grad_enabled(false);
        nb_tensor *o2 = nb_clone(out);
        nb_set_grad_enabled(was);
        out = o2;
        if (!out) {
            free_ctx(c);
            return NULL;
        }
    }
    if (!nbi_needs_grad(n, inputs)) {
        free_ctx(c);
        return out;
    }
    if (!nbi_record(out, NBI_OP_CUSTOM, n, inputs, 0, false)) {
        free_ctx(c);
        return NULL;
    }
    out->node.ext = c;
    int rc = nbi_save(out, c->npending, c->pending);
    for (int i = 0; rc == 0 && i < c->npending; i++) out->node.saved_ver[i] = c->pending_ver[i]; /* as saved */
    drop_pending(c);
    if (rc != 0) {
        nb_free(out);
        return NULL;
    }
    return out;
}

const char *nb_ctx_name(const nb_ctx *ctx) { return ctx ? ctx->name : NULL; }

int nbi_bw_custom(nb_tensor *out, nb_tensor *g, nb_tensor **gin) {
    nb_ctx *c = out->node.ext;
    if (!c) return nbi_err("backward", "custom op context is missing"), -1;
    c->inputs = out->node.in;
    c->ninputs = out->node.nin;
    c->out = out;
    int rc = c->backward(c, g, gin, c->ud);
    c->out = NULL;
    c->inputs = NULL;
    if (rc != 0) return nbi_err("backward", "%s: the backward callback failed", c->name), -1;
    return 0;
}

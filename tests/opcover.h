/*
 * opcover.h - what tests/test_composite.c and tests/test_hvp.c share for their
 * check that every op of the registry (src/ops/ops.def) occurs in some case:
 * collect_ops, which marks the ops recorded in a graph, and the user-defined
 * op of their custom-op cases. Include after harness.h and core/internal.h
 * (the graph's nodes).
 */
#ifndef NABLA_TEST_OPCOVER_H
#define NABLA_TEST_OPCOVER_H

/* Marks in `seen` (NBI_OP_COUNT flags) every op recorded in the graph behind the n roots (NULL ones skipped). */
static void collect_ops(int n, nb_tensor *const *roots, bool *seen) {
    size_t cap = 256, nvis = 0, nstack = 0;
    nb_tensor **vis = (nb_tensor **)malloc(cap * sizeof *vis), **stack = (nb_tensor **)malloc(cap * sizeof *stack);
    size_t scap = cap;
    if (!vis || !stack) goto out;
    for (int i = 0; i < n && nstack < scap; i++)
        if (roots[i]) stack[nstack++] = roots[i];
    while (nstack) {
        nb_tensor *t = stack[--nstack];
        bool dup = false;
        for (size_t k = 0; k < nvis && !dup; k++) dup = vis[k] == t;
        if (dup || !t->has_node || t->node.released) continue;
        if (nvis == cap) {
            nb_tensor **nv = (nb_tensor **)realloc(vis, 2 * cap * sizeof *vis);
            if (!nv) goto out;
            vis = nv;
            cap *= 2;
        }
        vis[nvis++] = t;
        seen[t->node.op] = true;
        for (int i = 0; i < t->node.nin; i++) {
            if (nstack == scap) {
                nb_tensor **ns = (nb_tensor **)realloc(stack, 2 * scap * sizeof *stack);
                if (!ns) goto out;
                stack = ns;
                scap *= 2;
            }
            stack[nstack++] = t->node.in[i];
        }
    }
out:
    free(vis);
    free(stack);
}

/* A user-defined op, y = x^3, whose backward 3 x^2 g is built from nabla ops: nb_custom("cube", 1, x, cube_fw,
   cube_bw, NULL). */
static nb_tensor *cube_fw(nb_ctx *ctx, int n, nb_tensor *const *in, void *ud) {
    (void)n;
    (void)ud;
    if (nb_ctx_save(ctx, 1, in) != 0) return NULL;
    return nb_mul(in[0], nb_mul(in[0], in[0]));
}
static int cube_bw(nb_ctx *ctx, nb_tensor *g, nb_tensor **gin, void *ud) {
    (void)ud;
    nb_tensor *x = nb_ctx_saved(ctx, 0);
    return (gin[0] = nb_mul(g, nb_scale(nb_mul(x, x), 3.0))) ? 0 : -1;
}

#endif

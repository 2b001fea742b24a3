/*
 * test_hvp.c - second derivatives of every op against PyTorch.
 *
 * tests/data/hvp_reference.txt (made by tools/gen_hvp_reference.py, whose
 * docstring describes the format) holds, for each case, an op with its
 * parameters and inputs, constants W and U of the output's shape, a direction
 * v_i per input that requires grad, and PyTorch's values of
 *
 *     f = sum(W * y) + sum(U * y * y) / 2,   y = op(x...)
 *     g_i = df/dx_i
 *     (H v)_i = d/dx_i sum_j sum(g_j * v_j)    (torch.autograd.grad, create_graph)
 *
 * Cases "t0:<op>" run the op on a transposed (non-contiguous) view of input 0.
 * Each case is run in f64: y within 1e-12 + 1e-10 |ref|; g from the fused
 * first-order rules (no NB_CREATE_GRAPH) and from the composite ones
 * (NB_CREATE_GRAPH), and H v from nabla's double backward (the second pass
 * both with and without NB_CREATE_GRAPH), all within 1e-10 relative to the
 * reference with an absolute floor of 1e-12 times the largest reference value
 * of that tensor (at least 1e-12).
 *
 * Coverage: the graph each case differentiates twice (forward and first
 * backward) is walked and the recorded ops are counted; every op of the
 * registry (src/ops/ops.def) must occur in some case, so a new op without an
 * HVP case fails here. A case whose op this file does not know fails too.
 */
#include "harness.h"
#include "nabla/nn.h"
#include "refdata.h"
#include "refcheck.h"

#include "core/internal.h"
#include "opcover.h"

#include <stdbool.h>

#ifndef NB_TEST_DATA_DIR
#define NB_TEST_DATA_DIR "tests/data"
#endif

/* ------------------------------------------------------------------------ */
/* Reading (tests/refdata.h)                                                */
/* ------------------------------------------------------------------------ */

/* A "<word> <i>" block for input i: i in range, requiring grad, seen once. */
static bool read_indexed(FILE *f, const rd_case *c, const char *word, rd_tensor *arr, int *seen) {
    int64_t k;
    if (!rd_expect_word(f, word) || !rd_read_int(f, &k) || k < 0 || k >= c->ninputs || !c->rg[k] || seen[k]) {
        fprintf(stderr, "hvp_reference.txt: case %s: bad '%s' block\n", c->name, word);
        return false;
    }
    seen[k] = 1;
    return rd_read_tensor(f, &arr[k]);
}

/* Reads one case (at least one input; after the weight, quad, then dir, grad and hvp blocks for each input that
   requires grad); false at a format error. */
static bool read_case(FILE *f, rd_case *c) {
    if (!rd_read_head(f, c) || c->ninputs < 1) return false;
    int nrg = 0;
    for (int i = 0; i < c->ninputs; i++) nrg += c->rg[i];
    if (!rd_expect_word(f, "quad") || !rd_read_tensor(f, &c->quad)) return false;
    int seen_d[RD_MAX_INPUTS] = {0}, seen_h[RD_MAX_INPUTS] = {0};
    for (int j = 0; j < nrg; j++)
        if (!read_indexed(f, c, "dir", c->dir, seen_d)) return false;
    for (int j = 0; j < nrg; j++)
        if (!read_indexed(f, c, "grad", c->grad, c->has_grad)) return false;
    for (int j = 0; j < nrg; j++)
        if (!read_indexed(f, c, "hvp", c->hvp, seen_h)) return false;
    return rd_expect_word(f, "end");
}

/* ------------------------------------------------------------------------ */
/* Dispatch                                                                 */
/* ------------------------------------------------------------------------ */

/* Runs the op of case c on inputs x ("t0:<op>": <op> on the transpose of x[0]): first the ops of this file
   (conversions, dropout, a user-defined op, and var and layer_norm with its parameters), then those it shares
   with tests/test_reference.c (tests/refcheck.h). *known is false for an unknown op. */
static nb_tensor *apply_op(const rd_case *c, nb_tensor **x0, bool *known) {
    const char *op = c->op;
    nb_tensor *x[RD_MAX_INPUTS];
    for (int i = 0; i < c->ninputs; i++) x[i] = x0[i];
    if (strncmp(op, "t0:", 3) == 0) {
        op += 3;
        x[0] = nb_transpose(x[0], 0, 1);
    }
    *known = true;
    if (RD_IS("to_f32_f64")) { RD_NEED(1, 0); return nb_to(nb_to(x[0], NB_F32), NB_F64); }
    if (RD_IS("contiguous_t")) { RD_NEED(1, 0); return nb_contiguous(nb_transpose(x[0], 0, 1)); }
    if (RD_IS("var")) { /* params: correction keepdim axis */
        RD_NEED(1, 3);
        int axis = (int)c->params[2];
        return nb_var_axes(x[0], 1, &axis, (int)c->params[0], (int)c->params[1] != 0);
    }
    if (RD_IS("layer_norm")) { /* params: eps has_gamma has_beta; inputs x [gamma] [beta] */
        bool has_gamma = c->nparams == 3 && (int)c->params[1] != 0;
        bool has_beta = c->nparams == 3 && (int)c->params[2] != 0;
        RD_NEED(1 + has_gamma + has_beta, 3);
        nb_tensor *gamma = has_gamma ? x[1] : NULL, *beta = has_beta ? x[1 + has_gamma] : NULL;
        return nb_layer_norm(x[0], gamma, beta, c->params[0]);
    }
    /* Dropout with nabla's generator (params p seed), and a user-defined op. */
    if (RD_IS("dropout")) {
        RD_NEED(1, 2);
        nb_rng r;
        nb_rng_seed(&r, (uint64_t)c->params[1]);
        return nb_dropout(x[0], c->params[0], true, &r);
    }
    if (RD_IS("custom_cube")) { RD_NEED(1, 0); return nb_custom("cube", 1, x, cube_fw, cube_bw, NULL); }
    return rd_apply_op(c, op, x, known);
}

/* ------------------------------------------------------------------------ */
/* Coverage (the ops recorded in a graph: collect_ops, tests/opcover.h)    */
/* ------------------------------------------------------------------------ */

static int op_cases[NBI_OP_COUNT]; /* cases whose differentiated graphs hold each op */

/* ------------------------------------------------------------------------ */
/* Checking                                                                 */
/* ------------------------------------------------------------------------ */

/* Compares t with ref (shape and values); NULL t stands for zeros. The
   absolute floor is 1e-12 times the tensor's largest |ref| (at least 1e-12).
   Returns the number of mismatches, the first few printed. */
static int compare(const char *cname, const char *what, const nb_tensor *t, const rd_tensor *ref, double rtol) {
    char b1[96], b2[96];
    if (t && (nb_rank(t) != ref->rank || memcmp(nb_shape(t), ref->shape, sizeof(int64_t) * (size_t)ref->rank))) {
        fprintf(stderr, "case %s: %s has shape %s, expected %s\n", cname, what,
                nb_shape_str(nb_rank(t), nb_shape(t), b1, sizeof b1),
                nb_shape_str(ref->rank, ref->shape, b2, sizeof b2));
        return 1;
    }
    if (t && nb_dtype_of(t) != NB_F64) {
        fprintf(stderr, "case %s: %s is not f64\n", cname, what);
        return 1;
    }
    double *got = (double *)calloc((size_t)(ref->n ? ref->n : 1), sizeof(double));
    if (!got) return 1;
    if (t && nb_read_f64(t, got, ref->n) != ref->n) {
        fprintf(stderr, "case %s: %s: nb_read_f64 failed\n", cname, what);
        free(got);
        return 1;
    }
    double scale = 1.0;
    for (int64_t i = 0; i < ref->n; i++)
        if (fabs(ref->v[i]) > scale) scale = fabs(ref->v[i]);
    int bad = 0;
    for (int64_t i = 0; i < ref->n; i++) {
        double a = got[i], b = ref->v[i];
        if (!(fabs(a - b) <= 1e-12 * scale + rtol * fabs(b))) {
            if (bad < 4)
                fprintf(stderr, "case %s: %s element %lld = %.17g, expected %.17g (diff %.3g)\n", cname, what,
                        (long long)i, a, b, fabs(a - b));
            bad++;
        }
    }
    if (bad > 4) fprintf(stderr, "case %s: %s: %d mismatching elements in all\n", cname, what, bad);
    free(got);
    return bad;
}

static nb_tensor *from_ref(const rd_tensor *t) { return nb_from_f64(NB_F64, t->rank, t->shape, t->v); }

static const char *err(void) { return nb_last_error() ? nb_last_error() : "no error"; }

/* Builds y and f = sum(W y) + sum(U y y) / 2 on fresh leaves x (rg ones in wrt[0..*nw)). */
static nb_tensor *build_f(const rd_case *c, nb_tensor **x, nb_tensor **wrt, int *nw, nb_tensor **y, bool *known) {
    *nw = 0;
    for (int i = 0; i < c->ninputs; i++) {
        x[i] = from_ref(&c->in[i]);
        if (!x[i]) return NULL;
        if (c->rg[i]) {
            nb_set_requires_grad(x[i], true);
            wrt[(*nw)++] = x[i];
        }
    }
    *y = apply_op(c, x, known);
    if (!*y) return NULL;
    nb_tensor *W = from_ref(&c->weight), *U = from_ref(&c->quad);
    return nb_add(nb_sum(nb_mul(W, *y)), nb_scale(nb_sum(nb_mul(U, nb_mul(*y, *y))), 0.5));
}

/* Runs case c. Returns the number of failures. */
static int run_case(const rd_case *c, bool *unknown_op) {
    int fails = 0;
    const double rtol = 1e-10;
    nb_tensor *x[RD_MAX_INPUTS] = {0}, *wrt[RD_MAX_INPUTS] = {0}, *g[RD_MAX_INPUTS] = {0};
    nb_tensor *hv[RD_MAX_INPUTS] = {0}, *y = NULL;
    int nw = 0, idx[RD_MAX_INPUTS];
    for (int i = 0, k = 0; i < c->ninputs; i++)
        if (c->rg[i]) idx[k++] = i;
    char what[48];

    nb_clear_error();
    nb_scope_begin();
    int depth = nb_scope_depth();
    bool known = true;

    /* First order through the fused rules. */
    nb_tensor *f = build_f(c, x, wrt, &nw, &y, &known);
    if (!known) {
        fprintf(stderr, "case %s: unknown op '%s' (add it to apply_op in tests/test_hvp.c)\n", c->name, c->op);
        *unknown_op = true;
        fails++;
        goto done;
    }
    if (!f) {
        fprintf(stderr, "case %s: building f failed: %s\n", c->name, err());
        fails++;
        goto done;
    }
    fails += compare(c->name, "output", y, &c->out, rtol);
    if (nw == 0) goto done;
    if (nb_gradients(f, NULL, nw, wrt, 0, g) != 0) {
        fprintf(stderr, "case %s: first-order nb_gradients failed: %s\n", c->name, err());
        fails++;
        goto done;
    }
    for (int k = 0; k < nw; k++) {
        snprintf(what, sizeof what, "grad %d (fused)", idx[k]);
        fails += compare(c->name, what, g[k], &c->grad[idx[k]], rtol);
    }

    /* Again through the composite rules, then twice differentiated. */
    f = build_f(c, x, wrt, &nw, &y, &known);
    if (!f || nb_gradients(f, NULL, nw, wrt, NB_CREATE_GRAPH, g) != 0) {
        fprintf(stderr, "case %s: nb_gradients with NB_CREATE_GRAPH failed: %s\n", c->name, err());
        fails++;
        goto done;
    }
    nb_tensor *s = NULL;
    for (int k = 0; k < nw; k++) {
        snprintf(what, sizeof what, "grad %d (composite)", idx[k]);
        fails += compare(c->name, what, g[k], &c->grad[idx[k]], rtol);
        nb_tensor *term = nb_sum(nb_mul(g[k], from_ref(&c->dir[idx[k]])));
        s = s ? nb_add(s, term) : term;
    }
    if (!s) {
        fprintf(stderr, "case %s: building sum(g v) failed: %s\n", c->name, err());
        fails++;
        goto done;
    }
    bool seen[NBI_OP_COUNT] = {0};
    collect_ops(1, &s, seen);
    for (int op = 0; op < NBI_OP_COUNT; op++) op_cases[op] += seen[op];

    static const unsigned second[2] = {NB_RETAIN_GRAPH, NB_CREATE_GRAPH};
    static const char *second_name[2] = {"", " (created graph)"};
    for (int pass = 0; pass < 2; pass++) {
        if (nb_gradients(s, NULL, nw, wrt, second[pass], hv) != 0) {
            fprintf(stderr, "case %s: second-order nb_gradients%s failed: %s\n", c->name, second_name[pass], err());
            fails++;
            goto done;
        }
        for (int k = 0; k < nw; k++) {
            snprintf(what, sizeof what, "hvp %d%s", idx[k], second_name[pass]);
            fails += compare(c->name, what, hv[k], &c->hvp[idx[k]], rtol);
        }
    }

done:
    if (nb_scope_depth() != depth) {
        fprintf(stderr, "case %s: scope depth changed from %d to %d\n", c->name, depth, nb_scope_depth());
        fails++;
    }
    nb_scope_end();
    return fails;
}

int main(void) {
    const char *path = NB_TEST_DATA_DIR "/hvp_reference.txt";
    if (!rd_run_cases(path, read_case, run_case, "tests/test_hvp.c")) return th_finish();

    /* Every op of the registry must have its second derivative checked. */
    int missing = 0;
    for (int op = 0; op < NBI_OP_COUNT; op++)
        if (!op_cases[op]) {
            fprintf(stderr, "op '%s' occurs in no case of %s (add one to tools/gen_hvp_reference.py)\n",
                    nbi_ops[op].name, path);
            missing++;
        }
    if (missing) th_failed++;
    else th_passed++;
    return th_finish();
}

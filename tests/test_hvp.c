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

/* Runs the op of case c on inputs x ("t0:<op>": <op> on the transpose of x[0]).
   *known is false for an unknown op. */
static nb_tensor *apply_op(const rd_case *c, nb_tensor **x0, bool *known) {
    const char *op = c->op;
    nb_tensor *x[RD_MAX_INPUTS];
    for (int i = 0; i < c->ninputs; i++) x[i] = x0[i];
    if (strncmp(op, "t0:", 3) == 0) {
        op += 3;
        x[0] = nb_transpose(x[0], 0, 1);
    }
    const int np = c->nparams;
    int ia[RD_MAX_PARAMS];
    int64_t la[RD_MAX_PARAMS];
    for (int i = 0; i < np; i++) {
        ia[i] = (int)c->params[i];
        la[i] = (int64_t)c->params[i];
    }
    *known = true;
#define IS(s) (strcmp(op, (s)) == 0)
#define NEED(ni, npar)                                                                                       \
    do {                                                                                                     \
        if (c->ninputs != (ni) || np != (npar)) {                                                            \
            fprintf(stderr, "case %s: op %s expects %d inputs and %d params, has %d and %d\n", c->name, op, \
                    (ni), (npar), c->ninputs, np);                                                           \
            return NULL;                                                                                     \
        }                                                                                                    \
    } while (0)
    /* Elementwise binary and where. */
    if (IS("add")) { NEED(2, 0); return nb_add(x[0], x[1]); }
    if (IS("sub")) { NEED(2, 0); return nb_sub(x[0], x[1]); }
    if (IS("mul")) { NEED(2, 0); return nb_mul(x[0], x[1]); }
    if (IS("div")) { NEED(2, 0); return nb_div(x[0], x[1]); }
    if (IS("pow_t")) { NEED(2, 0); return nb_pow_t(x[0], x[1]); }
    if (IS("where")) { NEED(3, 0); return nb_where(x[0], x[1], x[2]); }
    if (IS("maximum")) { NEED(2, 0); return nb_maximum(x[0], x[1]); }
    if (IS("minimum")) { NEED(2, 0); return nb_minimum(x[0], x[1]); }
    if (IS("clamp")) { NEED(1, 2); return nb_clamp(x[0], c->params[0], c->params[1]); }
    /* With a constant. */
    if (IS("neg")) { NEED(1, 0); return nb_neg(x[0]); }
    if (IS("scale")) { NEED(1, 1); return nb_scale(x[0], c->params[0]); }
    if (IS("add_scalar")) { NEED(1, 1); return nb_add_scalar(x[0], c->params[0]); }
    if (IS("pow")) { NEED(1, 1); return nb_pow(x[0], c->params[0]); }
    /* Unary. */
    if (IS("exp")) { NEED(1, 0); return nb_exp(x[0]); }
    if (IS("log")) { NEED(1, 0); return nb_log(x[0]); }
    if (IS("sqrt")) { NEED(1, 0); return nb_sqrt(x[0]); }
    if (IS("abs")) { NEED(1, 0); return nb_abs(x[0]); }
    if (IS("sin")) { NEED(1, 0); return nb_sin(x[0]); }
    if (IS("cos")) { NEED(1, 0); return nb_cos(x[0]); }
    if (IS("tanh")) { NEED(1, 0); return nb_tanh(x[0]); }
    if (IS("sigmoid")) { NEED(1, 0); return nb_sigmoid(x[0]); }
    if (IS("relu")) { NEED(1, 0); return nb_relu(x[0]); }
    if (IS("leaky_relu")) { NEED(1, 1); return nb_leaky_relu(x[0], c->params[0]); }
    if (IS("gelu")) { NEED(1, 0); return nb_gelu(x[0]); }
    if (IS("erf")) { NEED(1, 0); return nb_erf(x[0]); }
    if (IS("sign")) { NEED(1, 0); return nb_sign(x[0]); }
    if (IS("log1p")) { NEED(1, 0); return nb_log1p(x[0]); }
    if (IS("expm1")) { NEED(1, 0); return nb_expm1(x[0]); }
    if (IS("softplus")) { NEED(1, 0); return nb_softplus(x[0]); }
    /* Conversion and copies. */
    if (IS("to_f32_f64")) { NEED(1, 0); return nb_to(nb_to(x[0], NB_F32), NB_F64); }
    if (IS("clone")) { NEED(1, 0); return nb_clone(x[0]); }
    if (IS("contiguous_t")) { NEED(1, 0); return nb_contiguous(nb_transpose(x[0], 0, 1)); }
    /* Reductions: params keepdim axis... */
    if (IS("sum")) { NEED(1, 0); return nb_sum(x[0]); }
    if (IS("mean")) { NEED(1, 0); return nb_mean(x[0]); }
    if (IS("sum_axes") || IS("mean_axes") || IS("max_axes")) {
        if (c->ninputs != 1 || np < 1) { NEED(1, 1); }
        bool keep = ia[0] != 0;
        int naxes = np - 1;
        const int *axes = naxes ? ia + 1 : NULL;
        if (IS("sum_axes")) return nb_sum_axes(x[0], naxes, axes, keep);
        if (IS("mean_axes")) return nb_mean_axes(x[0], naxes, axes, keep);
        return nb_max_axes(x[0], naxes, axes, keep);
    }
    if (IS("logsumexp")) { NEED(1, 1); return nb_logsumexp(x[0], 1, ia, false); }
    if (IS("var")) { NEED(1, 3); return nb_var_axes(x[0], 1, ia + 2, ia[0], ia[1] != 0); }
    if (IS("norm")) { NEED(1, 0); return nb_norm(x[0]); }
    /* Shape. */
    if (IS("reshape")) { NEED(1, np); return nb_reshape(x[0], np, la); }
    if (IS("transpose")) { NEED(1, 2); return nb_transpose(x[0], ia[0], ia[1]); }
    if (IS("permute")) { NEED(1, np); return nb_permute(x[0], ia); }
    if (IS("slice")) { NEED(1, 3); return nb_slice(x[0], ia[0], la[1], la[2]); }
    if (IS("expand")) { NEED(1, np); return nb_expand(x[0], np, la); }
    if (IS("concat")) {
        if (np != 1) { NEED(c->ninputs, 1); }
        return nb_concat(c->ninputs, x, ia[0]);
    }
    if (IS("flip")) { NEED(1, 1); return nb_flip(x[0], ia[0]); }
    if (IS("stack")) { NEED(2, 1); return nb_stack(2, x, ia[0]); }
    if (IS("unsqueeze")) { NEED(1, 1); return nb_unsqueeze(x[0], ia[0]); }
    if (IS("squeeze")) { NEED(1, 1); return nb_squeeze(x[0], ia[0]); }
    if (IS("split_second")) { /* the second piece of a split into sizes params[1..] */
        NEED(1, 3);
        nb_tensor *p[2];
        int64_t sz[2] = {la[1], la[2]};
        return nb_split(x[0], ia[0], 2, sz, p) == 0 ? p[1] : NULL;
    }
    /* Products. */
    if (IS("matmul")) { NEED(2, 0); return nb_matmul(x[0], x[1]); }
    if (IS("dense")) {
        if (c->ninputs == 2) { NEED(2, 1); return nb_dense(x[0], x[1], NULL, (nb_act)ia[0]); }
        NEED(3, 1);
        return nb_dense(x[0], x[1], x[2], (nb_act)ia[0]);
    }
    if (strncmp(op, "einsum:", 7) == 0) return nb_einsum(op + 7, c->ninputs, x);
    /* Softmax family; the losses' targets come as params. */
    if (IS("softmax")) { NEED(1, 1); return nb_softmax(x[0], ia[0]); }
    if (IS("log_softmax")) { NEED(1, 1); return nb_log_softmax(x[0], ia[0]); }
    if (IS("cross_entropy") || IS("nll_loss")) {
        NEED(1, np);
        nb_tensor *t = nb_from_f64(NB_I64, 1, (int64_t[]){np}, c->params);
        return IS("nll_loss") ? nb_nll_loss(x[0], t) : nb_cross_entropy(x[0], t);
    }
    if (IS("layer_norm")) { /* params: eps has_gamma has_beta; inputs x [gamma] [beta] */
        NEED(1 + (ia[1] != 0) + (ia[2] != 0), 3);
        nb_tensor *gamma = ia[1] ? x[1] : NULL, *beta = ia[2] ? x[1 + (ia[1] != 0)] : NULL;
        return nb_layer_norm(x[0], gamma, beta, c->params[0]);
    }
    /* Linear algebra. */
    if (IS("inverse")) { NEED(1, 0); return nb_inverse(x[0]); }
    if (IS("det")) { NEED(1, 0); return nb_det(x[0]); }
    if (IS("logdet")) { NEED(1, 0); return nb_logdet(x[0]); }
    /* Indexing, cumsum, pad. */
    if (IS("index_select")) {
        NEED(1, np);
        nb_tensor *ix = nb_from_f64(NB_I64, 1, (int64_t[]){np - 1}, c->params + 1);
        return nb_index_select(x[0], ia[0], ix);
    }
    if (IS("gather")) {
        NEED(1, np);
        nb_tensor *ix = nb_from_f64(NB_I64, nb_rank(x[0]), nb_shape(x[0]), c->params + 1);
        return nb_gather(x[0], ia[0], ix);
    }
    if (IS("cumsum")) { NEED(1, 1); return nb_cumsum(x[0], ia[0]); }
    if (IS("pad")) {
        NEED(1, np);
        int64_t pads[2 * NB_MAX_RANK];
        for (int i = 1; i < np; i++) pads[i - 1] = la[i];
        return nb_pad(x[0], pads, c->params[0]);
    }
    /* Losses (nabla/nn.h). */
    if (IS("mse_loss")) { NEED(2, 0); return nb_mse_loss(x[0], x[1]); }
    if (IS("l1_loss")) { NEED(2, 0); return nb_l1_loss(x[0], x[1]); }
    if (IS("bce_loss")) { NEED(2, 0); return nb_bce_loss(x[0], x[1]); }
    if (IS("bce_with_logits_loss")) { NEED(2, 0); return nb_bce_with_logits_loss(x[0], x[1]); }
    if (IS("hinge_loss")) { NEED(2, 0); return nb_hinge_loss(x[0], x[1]); }
    /* Dropout with nabla's generator (params p seed), and a user-defined op. */
    if (IS("dropout")) {
        NEED(1, 2);
        nb_rng r;
        nb_rng_seed(&r, (uint64_t)c->params[1]);
        return nb_dropout(x[0], c->params[0], true, &r);
    }
    if (IS("custom_cube")) { NEED(1, 0); return nb_custom("cube", 1, x, cube_fw, cube_bw, NULL); }
#undef NEED
#undef IS
    *known = false;
    return NULL;
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
    int64_t ncases = 0;
    FILE *f = rd_open(path, &ncases);
    if (!f) {
        th_failed++;
        return th_finish();
    }
    rd_case *c = (rd_case *)calloc(1, sizeof *c);
    if (!c) {
        fclose(f);
        th_failed++;
        return th_finish();
    }
    int nunknown = 0;
    for (int64_t k = 0; k < ncases; k++) {
        if (!read_case(f, c)) {
            fprintf(stderr, "%s: format error in case %lld (%s)\n", path, (long long)k + 1, c->name[0] ? c->name : "?");
            rd_free_case(c);
            th_failed++;
            break;
        }
        th_cur_name = c->name;
        bool unknown = false;
        int fails = run_case(c, &unknown);
        if (unknown) nunknown++;
        if (fails) {
            th_failed++;
            fprintf(stderr, "FAIL %s\n", c->name);
        } else {
            th_passed++;
        }
        rd_free_case(c);
    }
    if (rd_trailing(f, ncases)) th_failed++;
    free(c);
    fclose(f);
    if (nunknown) fprintf(stderr, "%d case(s) with an op unknown to tests/test_hvp.c\n", nunknown);

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

/*
 * test_reference.c - every op against PyTorch reference values.
 *
 * tests/data/reference.txt (made by tools/gen_reference.py, whose docstring
 * describes the format) holds, for each case, an op with its parameters and
 * inputs, PyTorch's output, a weight W and the gradients of L = sum(out * W).
 * Each case is run twice:
 *  - in f64: output and gradients within 1e-12 + 1e-10 |ref|;
 *  - in f32 (inputs and W converted): output within 1e-5 + 1e-4 |ref|,
 *    gradients within 1e-4 + 1e-3 |ref|.
 * A case whose op this file does not know fails, so the data and the dispatch
 * below cannot drift apart silently. Each case counts as one test.
 */
#include "harness.h"
#include "nabla/nn.h"
#include "refdata.h"

#include <stdbool.h>

#ifndef NB_TEST_DATA_DIR
#define NB_TEST_DATA_DIR "tests/data"
#endif

/* ------------------------------------------------------------------------ */
/* Reading (tests/refdata.h)                                                */
/* ------------------------------------------------------------------------ */

/* Every input that requires grad has a grad block, and no other input has one. */
static bool grads_match_rg(const rd_case *c) {
    for (int i = 0; i < c->ninputs; i++)
        if (c->rg[i] != c->has_grad[i]) {
            fprintf(stderr, "reference.txt: case %s: input %d: requires_grad and grad block disagree\n", c->name,
                    i);
            return false;
        }
    return true;
}

/* ------------------------------------------------------------------------ */
/* Dispatch                                                                 */
/* ------------------------------------------------------------------------ */

static int iparam(const rd_case *c, int i) { return (int)c->params[i]; }

/* Runs the op of case c on inputs x. *known is false for an unknown op. */
static nb_tensor *apply_op(const rd_case *c, nb_tensor **x, bool *known) {
    const char *op = c->op;
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
    /* Elementwise binary. */
    if (IS("add")) { NEED(2, 0); return nb_add(x[0], x[1]); }
    if (IS("sub")) { NEED(2, 0); return nb_sub(x[0], x[1]); }
    if (IS("mul")) { NEED(2, 0); return nb_mul(x[0], x[1]); }
    if (IS("div")) { NEED(2, 0); return nb_div(x[0], x[1]); }
    if (IS("pow_t")) { NEED(2, 0); return nb_pow_t(x[0], x[1]); }
    if (IS("gt")) { NEED(2, 0); return nb_gt(x[0], x[1]); }
    if (IS("lt")) { NEED(2, 0); return nb_lt(x[0], x[1]); }
    if (IS("eq")) { NEED(2, 0); return nb_eq(x[0], x[1]); }
    if (IS("where")) { NEED(3, 0); return nb_where(x[0], x[1], x[2]); }
    if (IS("log1p")) { NEED(1, 0); return nb_log1p(x[0]); }
    if (IS("expm1")) { NEED(1, 0); return nb_expm1(x[0]); }
    if (IS("softplus")) { NEED(1, 0); return nb_softplus(x[0]); }
    if (IS("flip")) { NEED(1, 1); return nb_flip(x[0], iparam(c, 0)); }
    if (IS("maximum")) { NEED(2, 0); return nb_maximum(x[0], x[1]); }
    if (IS("minimum")) { NEED(2, 0); return nb_minimum(x[0], x[1]); }
    if (IS("clamp")) { NEED(1, 2); return nb_clamp(x[0], c->params[0], c->params[1]); }
    if (IS("logsumexp")) { NEED(1, 1); int a = iparam(c, 0); return nb_logsumexp(x[0], 1, &a, false); }
    if (IS("var")) { NEED(1, 1); int a = iparam(c, 0); return nb_var_axes(x[0], 1, &a, 1, true); }
    if (IS("norm")) { NEED(1, 0); return nb_norm(x[0]); }
    if (IS("index_select")) {
        NEED(1, np);
        nb_tensor *ix = nb_from_f64(NB_I64, 1, (int64_t[]){np - 1}, c->params + 1);
        return nb_index_select(x[0], iparam(c, 0), ix);
    }
    if (IS("gather")) {
        NEED(1, np);
        nb_tensor *ix = nb_from_f64(NB_I64, nb_rank(x[0]), nb_shape(x[0]), c->params + 1);
        return nb_gather(x[0], iparam(c, 0), ix);
    }
    if (strncmp(op, "einsum:", 7) == 0) { NEED(c->ninputs, 0); return nb_einsum(op + 7, c->ninputs, x); }
    if (IS("mse_loss")) { NEED(2, 0); return nb_mse_loss(x[0], x[1]); }
    if (IS("l1_loss")) { NEED(2, 0); return nb_l1_loss(x[0], x[1]); }
    if (IS("bce_loss")) { NEED(2, 0); return nb_bce_loss(x[0], x[1]); }
    if (IS("bce_with_logits_loss")) { NEED(2, 0); return nb_bce_with_logits_loss(x[0], x[1]); }
    if (IS("hinge_loss")) { NEED(2, 0); return nb_hinge_loss(x[0], x[1]); }
    if (IS("stack")) { NEED(2, 1); return nb_stack(2, x, iparam(c, 0)); }
    if (IS("unsqueeze")) { NEED(1, 1); return nb_unsqueeze(x[0], iparam(c, 0)); }
    if (IS("squeeze")) { NEED(1, 1); return nb_squeeze(x[0], iparam(c, 0)); }
    if (IS("split_second")) { /* the second piece of a split into sizes params[1..] */
        NEED(1, 3);
        nb_tensor *p[2];
        int64_t sz[2] = {(int64_t)c->params[1], (int64_t)c->params[2]};
        return nb_split(x[0], iparam(c, 0), 2, sz, p) == 0 ? p[1] : NULL;
    }
    if (IS("cumsum")) { NEED(1, 1); return nb_cumsum(x[0], iparam(c, 0)); }
    if (IS("pad")) {
        NEED(1, np);
        int64_t pads[2 * NB_MAX_RANK];
        for (int i = 1; i < np; i++) pads[i - 1] = (int64_t)c->params[i];
        return nb_pad(x[0], pads, c->params[0]);
    }
    if (IS("inverse")) { NEED(1, 0); return nb_inverse(x[0]); }
    if (IS("det")) { NEED(1, 0); return nb_det(x[0]); }
    if (IS("logdet")) { NEED(1, 0); return nb_logdet(x[0]); }
    if (IS("layer_norm")) {
        if (c->ninputs == 1) { NEED(1, 1); return nb_layer_norm(x[0], NULL, NULL, c->params[0]); }
        NEED(3, 1);
        return nb_layer_norm(x[0], x[1], x[2], c->params[0]);
    }
    /* Softmax family; the losses' targets come as params. */
    if (IS("softmax")) { NEED(1, 1); return nb_softmax(x[0], iparam(c, 0)); }
    if (IS("log_softmax")) { NEED(1, 1); return nb_log_softmax(x[0], iparam(c, 0)); }
    if (IS("cross_entropy") || IS("nll_loss")) {
        NEED(1, np);
        nb_tensor *t = nb_from_f64(NB_I64, 1, (int64_t[]){np}, c->params);
        return IS("nll_loss") ? nb_nll_loss(x[0], t) : nb_cross_entropy(x[0], t);
    }
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
    /* Conversion and copies. */
    if (IS("to")) { NEED(1, 1); return nb_to(x[0], iparam(c, 0) == 0 ? NB_F32 : NB_F64); }
    if (IS("clone")) { NEED(1, 0); return nb_clone(x[0]); }
    if (IS("contiguous")) { NEED(1, 0); return nb_contiguous(x[0]); }
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
    /* Shape. */
    if (IS("reshape")) {
        if (c->ninputs != 1) { NEED(1, np); }
        return nb_reshape(x[0], np, la);
    }
    if (IS("transpose")) { NEED(1, 2); return nb_transpose(x[0], ia[0], ia[1]); }
    if (IS("permute")) {
        if (c->ninputs != 1) { NEED(1, np); }
        return nb_permute(x[0], ia);
    }
    if (IS("slice")) { NEED(1, 3); return nb_slice(x[0], ia[0], la[1], la[2]); }
    if (IS("expand")) {
        if (c->ninputs != 1) { NEED(1, np); }
        return nb_expand(x[0], np, la);
    }
    if (IS("concat")) {
        if (c->ninputs < 1 || np != 1) { NEED(c->ninputs < 1 ? 1 : c->ninputs, 1); }
        return nb_concat(c->ninputs, x, ia[0]);
    }
    if (IS("matmul")) { NEED(2, 0); return nb_matmul(x[0], x[1]); }
    if (IS("dense")) {
        if (c->ninputs == 2) { NEED(2, 1); return nb_dense(x[0], x[1], NULL, (nb_act)iparam(c, 0)); }
        NEED(3, 1);
        return nb_dense(x[0], x[1], x[2], (nb_act)iparam(c, 0));
    }
#undef NEED
#undef IS
    *known = false;
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Checking                                                                 */
/* ------------------------------------------------------------------------ */

static const char *dtype_name(nb_dtype dt) { return dt == NB_F32 ? "f32" : dt == NB_F64 ? "f64" : "i64"; }

/* Compares t (shape and values) with ref; t NULL stands for zeros of ref's
   shape. Returns the number of mismatches (reported, the first few printed). */
static int compare(const char *cname, const char *what, const char *pass, const nb_tensor *t, const rd_tensor *ref,
                   double atol, double rtol) {
    char b1[96], b2[96];
    if (t) {
        if (nb_rank(t) != ref->rank || memcmp(nb_shape(t), ref->shape, sizeof(int64_t) * (size_t)ref->rank) != 0) {
            fprintf(stderr, "case %s [%s]: %s has shape %s, expected %s\n", cname, pass, what,
                    nb_rank(t) >= 0 ? nb_shape_str(nb_rank(t), nb_shape(t), b1, sizeof b1) : "(null)",
                    nb_shape_str(ref->rank, ref->shape, b2, sizeof b2));
            return 1;
        }
    }
    double *got = (double *)calloc((size_t)(ref->n ? ref->n : 1), sizeof(double));
    if (!got) return 1;
    if (t && nb_read_f64(t, got, ref->n) != ref->n) {
        fprintf(stderr, "case %s [%s]: %s: nb_read_f64 failed (%s)\n", cname, pass, what,
                nb_last_error() ? nb_last_error() : "no error");
        free(got);
        return 1;
    }
    int bad = 0;
    for (int64_t i = 0; i < ref->n; i++) {
        double a = got[i], b = ref->v[i];
        if (!(fabs(a - b) <= atol + rtol * fabs(b))) {
            if (bad < 4)
                fprintf(stderr, "case %s [%s]: %s element %lld = %.17g, expected %.17g (diff %.3g)\n", cname, pass,
                        what, (long long)i, a, b, fabs(a - b));
            bad++;
        }
    }
    if (bad > 4) fprintf(stderr, "case %s [%s]: %s: %d mismatching elements in all\n", cname, pass, what, bad);
    free(got);
    return bad;
}

static bool all_zero(const rd_tensor *t) {
    for (int64_t i = 0; i < t->n; i++)
        if (t->v[i] != 0.0) return false;
    return true;
}

/* One pass of case c in dtype dt. Returns the number of failures. */
static int run_pass(const rd_case *c, nb_dtype dt, bool *unknown_op) {
    const bool f64 = dt == NB_F64;
    const char *pass = dtype_name(dt);
    const double atol = f64 ? 1e-12 : 1e-5, rtol = f64 ? 1e-10 : 1e-4;
    const double gatol = f64 ? 1e-12 : 1e-4, grtol = f64 ? 1e-10 : 1e-3;
    int fails = 0;
    nb_tensor *x[RD_MAX_INPUTS] = {0};

    nb_clear_error();
    nb_scope_begin();
    int depth = nb_scope_depth();
    bool any_rg = false;
    for (int i = 0; i < c->ninputs; i++) {
        x[i] = nb_from_f64(dt, c->in[i].rank, c->in[i].shape, c->in[i].v);
        if (!x[i]) {
            fprintf(stderr, "case %s [%s]: nb_from_f64 of input %d failed: %s\n", c->name, pass, i,
                    nb_last_error() ? nb_last_error() : "no error");
            fails++;
            goto done;
        }
        if (c->rg[i]) {
            nb_set_requires_grad(x[i], true);
            any_rg = true;
        }
    }

    bool known = true;
    nb_tensor *out = apply_op(c, x, &known);
    if (!known) {
        fprintf(stderr, "case %s: unknown op '%s' (add it to apply_op in tests/test_reference.c)\n", c->name,
                c->op);
        *unknown_op = true;
        fails++;
        goto done;
    }
    if (!out) {
        fprintf(stderr, "case %s [%s]: op %s returned NULL: %s\n", c->name, pass, c->op,
                nb_last_error() ? nb_last_error() : "no error");
        fails++;
        goto done;
    }
    nb_dtype want = dt;
    if (strcmp(c->op, "to") == 0) want = c->params[0] == 0 ? NB_F32 : NB_F64;
    if (nb_dtype_of(out) != want) {
        fprintf(stderr, "case %s [%s]: output dtype %s, expected %s\n", c->name, pass, dtype_name(nb_dtype_of(out)),
                dtype_name(want));
        fails++;
    }
    int bad = compare(c->name, "output", pass, out, &c->out, atol, rtol);
    fails += bad;
    if (bad || !any_rg) goto done;

    nb_tensor *W = nb_from_f64(dt, c->weight.rank, c->weight.shape, c->weight.v);
    nb_tensor *L = nb_sum(nb_mul(out, W));
    if (!L) {
        fprintf(stderr, "case %s [%s]: building L = sum(out * W) failed: %s\n", c->name, pass,
                nb_last_error() ? nb_last_error() : "no error");
        fails++;
        goto done;
    }
    if (nb_backward(L, NULL, 0) != 0) {
        /* Acceptable only for sign, whose gradient is identically zero (it may
           be left out of the graph), and only when the reference agrees. */
        bool zero = strcmp(c->op, "sign") == 0;
        for (int i = 0; i < c->ninputs; i++)
            if (c->has_grad[i] && !all_zero(&c->grad[i])) zero = false;
        if (!zero) {
            fprintf(stderr, "case %s [%s]: nb_backward failed: %s\n", c->name, pass,
                    nb_last_error() ? nb_last_error() : "no error");
            fails++;
        }
        nb_clear_error();
        goto done;
    }
    for (int i = 0; i < c->ninputs; i++) {
        if (!c->has_grad[i]) continue;
        nb_tensor *g = nb_grad(x[i]);
        char what[32];
        snprintf(what, sizeof what, "grad %d", i);
        if (g && nb_dtype_of(g) != dt) {
            fprintf(stderr, "case %s [%s]: %s has dtype %s\n", c->name, pass, what, dtype_name(nb_dtype_of(g)));
            fails++;
        }
        fails += compare(c->name, what, pass, g, &c->grad[i], gatol, grtol);
    }

done:
    if (nb_scope_depth() != depth) {
        fprintf(stderr, "case %s [%s]: scope depth changed from %d to %d\n", c->name, pass, depth,
                nb_scope_depth());
        fails++;
    }
    nb_scope_end();
    return fails;
}

int main(void) {
    const char *path = NB_TEST_DATA_DIR "/reference.txt";
    int64_t ncases = 0;
    FILE *f = rd_open(path, &ncases);
    if (!f) {
        th_failed++;
        return th_finish();
    }
    int nunknown = 0;
    rd_case *c = (rd_case *)calloc(1, sizeof *c);
    if (!c) {
        fclose(f);
        th_failed++;
        return th_finish();
    }
    for (int64_t k = 0; k < ncases; k++) {
        if (!rd_read_case(f, c) || !grads_match_rg(c)) {
            fprintf(stderr, "%s: format error in case %lld (%s)\n", path, (long long)k + 1,
                    c->name[0] ? c->name : "?");
            rd_free_case(c);
            th_failed++;
            break;
        }
        th_cur_name = c->name;
        bool unknown = false;
        int fails = run_pass(c, NB_F64, &unknown);
        if (!unknown) fails += run_pass(c, NB_F32, &unknown);
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
    if (nunknown) fprintf(stderr, "%d case(s) with an op unknown to tests/test_reference.c\n", nunknown);
    return th_finish();
}

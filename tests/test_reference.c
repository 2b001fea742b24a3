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
#include "refcheck.h"

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

/* Runs the op of case c on inputs x: first the ops of this file (comparisons, conversions, and var and
   layer_norm with its parameters), then those it shares with tests/test_hvp.c (tests/refcheck.h). *known is
   false for an unknown op. */
static nb_tensor *apply_op(const rd_case *c, nb_tensor **x, bool *known) {
    const char *op = c->op;
    *known = true;
    if (RD_IS("gt")) { RD_NEED(2, 0); return nb_gt(x[0], x[1]); }
    if (RD_IS("lt")) { RD_NEED(2, 0); return nb_lt(x[0], x[1]); }
    if (RD_IS("eq")) { RD_NEED(2, 0); return nb_eq(x[0], x[1]); }
    if (RD_IS("to")) { RD_NEED(1, 1); return nb_to(x[0], (int)c->params[0] == 0 ? NB_F32 : NB_F64); }
    if (RD_IS("contiguous")) { RD_NEED(1, 0); return nb_contiguous(x[0]); }
    /* transformer ops: argmax params axis keepdim (an i64 result); arange params start end step, its one
       input (rank 0, no grad) giving the dtype */
    if (RD_IS("argmax")) { RD_NEED(1, 2); return nb_argmax(x[0], (int)c->params[0], c->params[1] != 0); }
    if (RD_IS("topk") || RD_IS("topk_indices")) { /* params k axis largest */
        RD_NEED(1, 3);
        nb_tensor *v = NULL, *ix = NULL;
        if (nb_topk(x[0], (int64_t)c->params[0], (int)c->params[1], c->params[2] != 0, &v, &ix) != 0) return NULL;
        return RD_IS("topk") ? v : ix;
    }
    if (RD_IS("arange")) {
        RD_NEED(1, 3);
        return nb_arange(nb_dtype_of(x[0]), c->params[0], c->params[1], c->params[2]);
    }
    if (RD_IS("var")) { RD_NEED(1, 1); int a = (int)c->params[0]; return nb_var_axes(x[0], 1, &a, 1, true); }
    if (RD_IS("layer_norm")) {
        if (c->ninputs == 1) { RD_NEED(1, 1); return nb_layer_norm(x[0], NULL, NULL, c->params[0]); }
        RD_NEED(3, 1);
        return nb_layer_norm(x[0], x[1], x[2], c->params[0]);
    }
    return rd_apply_op(c, op, x, known);
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
    if (strcmp(c->op, "argmax") == 0 || strcmp(c->op, "topk_indices") == 0) want = NB_I64;
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

static bool read_case(FILE *f, rd_case *c) { return rd_read_case(f, c) && grads_match_rg(c); }

/* Runs case c in f64, then in f32. Returns the number of failures. */
static int run_case(const rd_case *c, bool *unknown_op) {
    int fails = run_pass(c, NB_F64, unknown_op);
    if (!*unknown_op) fails += run_pass(c, NB_F32, unknown_op);
    return fails;
}

int main(void) {
    rd_run_cases(NB_TEST_DATA_DIR "/reference.txt", read_case, run_case, "tests/test_reference.c");
    return th_finish();
}

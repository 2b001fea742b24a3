/*
 * test_numerics.c - infinities, NaNs and degenerate parameters against
 * PyTorch, and nabla's documented choices where it does not follow PyTorch
 * (docs/OPS.md, "Special values").
 *
 * tests/data/numerics_reference.txt (made by tools/gen_numerics_reference.py,
 * whose docstring gives the format) holds logsumexp, softmax, log_softmax,
 * cross-entropy, var, det, logdet and inverse cases with their PyTorch outputs
 * and, where nabla means to agree, the gradients of sum(out * W). Each case is
 * run in f64 and, when its inputs fit in f32, in f32. NaN must meet NaN, an
 * infinity the same infinity, a finite value a finite value within
 * 1e-12 + 1e-10 |ref| (f64) or 1e-5 + 1e-4 |ref| (f32).
 */
#include <float.h>

#include "harness.h"
#include "refdata.h"

#ifndef NB_TEST_DATA_DIR
#define NB_TEST_DATA_DIR "tests/data"
#endif

/* NaN meets NaN, an infinity the same infinity, finite values within atol + rtol |want|. */
static bool same_value(double got, double want, double atol, double rtol) {
    if (isnan(want) || isnan(got)) return isnan(want) && isnan(got);
    if (isinf(want) || isinf(got)) return got == want;
    return fabs(got - want) <= atol + rtol * fabs(want);
}

static int compare(const char *cname, const char *what, nb_dtype dt, nb_tensor *t, const rd_tensor *ref, double atol,
                   double rtol) {
    if (!t) {
        fprintf(stderr, "  %s (%s) %s: NULL (%s)\n", cname, dt == NB_F32 ? "f32" : "f64", what,
                nb_last_error() ? nb_last_error() : "no message");
        return 1;
    }
    bool shape_ok = nb_rank(t) == ref->rank;
    for (int i = 0; shape_ok && i < ref->rank; i++) shape_ok = nb_shape(t)[i] == ref->shape[i];
    if (!shape_ok) {
        char s[64], r[64];
        fprintf(stderr, "  %s (%s) %s: shape %s, expected %s\n", cname, dt == NB_F32 ? "f32" : "f64", what,
                nb_shape_str(nb_rank(t), nb_shape(t), s, sizeof s), nb_shape_str(ref->rank, ref->shape, r, sizeof r));
        return 1;
    }
    double *got = calloc((size_t)ref->n + 1, sizeof(double));
    nb_read_f64(t, got, ref->n);
    int bad = 0;
    for (int64_t i = 0; i < ref->n; i++)
        if (!same_value(got[i], ref->v[i], atol, rtol)) {
            if (bad++ < 3)
                fprintf(stderr, "  %s (%s) %s[%lld] = %.17g, expected %.17g\n", cname, dt == NB_F32 ? "f32" : "f64",
                        what, (long long)i, got[i], ref->v[i]);
        }
    free(got);
    return bad ? 1 : 0;
}

static nb_tensor *run_op(const rd_case *c, nb_tensor **x) {
    const char *op = c->op;
    int axes[RD_MAX_PARAMS];
    if (strcmp(op, "logsumexp") == 0) {
        for (int i = 1; i < c->nparams; i++) axes[i - 1] = (int)c->params[i];
        return nb_logsumexp(x[0], c->nparams - 1, c->nparams > 1 ? axes : NULL, c->params[0] != 0);
    }
    if (strcmp(op, "softmax") == 0) return nb_softmax(x[0], (int)c->params[0]);
    if (strcmp(op, "log_softmax") == 0) return nb_log_softmax(x[0], (int)c->params[0]);
    if (strcmp(op, "var_axes") == 0) {
        for (int i = 2; i < c->nparams; i++) axes[i - 2] = (int)c->params[i];
        return nb_var_axes(x[0], c->nparams - 2, c->nparams > 2 ? axes : NULL, (int)c->params[0], c->params[1] != 0);
    }
    if (strcmp(op, "cross_entropy") == 0) {
        nb_tensor *t = nb_from_f64(NB_I64, 1, (int64_t[]){c->nparams}, c->params);
        return nb_cross_entropy(x[0], t);
    }
    if (strcmp(op, "det") == 0) return nb_det(x[0]);
    if (strcmp(op, "logdet") == 0) return nb_logdet(x[0]);
    if (strcmp(op, "inverse") == 0) return nb_inverse(x[0]);
    fprintf(stderr, "  %s: unknown op %s\n", c->name, op);
    return NULL;
}

/* Returns the number of comparisons that failed. */
static int run_case(const rd_case *c, nb_dtype dt) {
    double atol = dt == NB_F64 ? 1e-12 : 1e-5, rtol = dt == NB_F64 ? 1e-10 : 1e-4;
    int bad = 0;
    nb_scope_begin();
    nb_tensor *x[RD_MAX_INPUTS] = {0};
    for (int i = 0; i < c->ninputs; i++) {
        x[i] = nb_from_f64(dt, c->in[i].rank, c->in[i].shape, c->in[i].v);
        if (c->rg[i]) nb_set_requires_grad(x[i], true);
    }
    nb_tensor *out = run_op(c, x);
    bad += compare(c->name, "output", dt, out, &c->out, atol, rtol);
    bool any = false;
    for (int i = 0; i < c->ninputs; i++) any |= c->has_grad[i];
    if (out && any) {
        nb_tensor *w = nb_from_f64(dt, c->weight.rank, c->weight.shape, c->weight.v);
        if (nb_backward(nb_sum(nb_mul(out, w)), NULL, 0) != 0) {
            fprintf(stderr, "  %s: backward failed: %s\n", c->name, nb_last_error() ? nb_last_error() : "?");
            bad++;
        } else {
            for (int i = 0; i < c->ninputs; i++)
                if (c->has_grad[i]) bad += compare(c->name, "gradient", dt, nb_grad(x[i]), &c->grad[i], atol, rtol);
        }
    }
    nb_scope_end();
    nb_clear_error();
    return bad;
}

static bool fits_f32(const rd_case *c) {
    for (int i = 0; i < c->ninputs; i++)
        for (int64_t k = 0; k < c->in[i].n; k++)
            if (isfinite(c->in[i].v[k]) && fabs(c->in[i].v[k]) > FLT_MAX) return false;
    return true;
}

static void test_reference(void) {
    int64_t n = 0;
    FILE *f = rd_open(NB_TEST_DATA_DIR "/numerics_reference.txt", &n);
    CHECK(f != NULL);
    if (!f) return;
    int failed = 0;
    for (int64_t i = 0; i < n; i++) {
        rd_case c;
        if (!rd_read_case(f, &c)) {
            fprintf(stderr, "  case %lld: malformed (%s)\n", (long long)i, c.name);
            rd_free_case(&c);
            CHECK(0);
            break;
        }
        int bad = run_case(&c, NB_F64);
        if (fits_f32(&c)) bad += run_case(&c, NB_F32);
        if (bad) failed++;
        rd_free_case(&c);
    }
    fclose(f);
    if (failed) fprintf(stderr, "  %d of %lld special-value cases differ from PyTorch\n", failed, (long long)n);
    CHECK(failed == 0);
}

/* var where n - correction <= 0: inf, or NaN when all values are equal (as PyTorch), and a NaN gradient
   (PyTorch divides 2 (x - mean) by n - correction without clamping it, so for correction > n its gradient
   has the wrong sign and is finite while the value is infinite). */
static void test_var_no_degrees_of_freedom(void) {
    for (int d = 0; d < 2; d++) {
        nb_dtype dt = d ? NB_F64 : NB_F32;
        for (int corr = 3; corr <= 5; corr++) {
            nb_scope_begin();
            nb_tensor *x = nb_from_f64(dt, 2, (int64_t[]){2, 3}, (double[]){1, 2, 3, 2, 2, 2});
            nb_set_requires_grad(x, true);
            nb_tensor *v = nb_var_axes(x, 1, (int[]){1}, corr, false);
            CHECK(v != NULL);
            if (v) {
                CHECK(nb_get(v, (int64_t[]){0}) == INFINITY);
                CHECK(isnan(nb_get(v, (int64_t[]){1})));
                CHECK(nb_backward(nb_sum(nb_mul(v, nb_from_f64(dt, 1, (int64_t[]){2}, (double[]){1, 0}))), NULL,
                                  0) == 0);
                double g[6];
                CHECK(nb_read_f64(nb_grad(x), g, 6) == 6);
                for (int i = 0; i < 6; i++) CHECK(isnan(g[i]));
            }
            nb_scope_end();
        }
    }
    /* still exact with degrees of freedom left, and a correction below 0 is allowed */
    nb_scope_begin();
    nb_tensor *x = nb_from_f64(NB_F64, 1, (int64_t[]){3}, (double[]){1, 2, 3});
    CHECK_CLOSE(nb_item(nb_var_axes(x, 0, NULL, 2, false)), 2.0, 1e-15, 0);
    CHECK_CLOSE(nb_item(nb_var_axes(x, 0, NULL, -1, false)), 0.5, 1e-15, 0);
    nb_scope_end();
}

/* A slice holding an infinity or a NaN: var is NaN (inf - inf, as PyTorch), and so is its whole gradient
   (PyTorch's rule 2 (x - mean) / (n - correction) keeps -inf at the finite elements); other slices are
   untouched. */
static void test_var_non_finite(void) {
    for (int d = 0; d < 2; d++) {
        nb_dtype dt = d ? NB_F64 : NB_F32;
        nb_scope_begin();
        nb_tensor *x = nb_from_f64(dt, 2, (int64_t[]){3, 3}, (double[]){INFINITY, 1, 2, NAN, 1, 2, 1, 2, 4});
        nb_set_requires_grad(x, true);
        nb_tensor *v = nb_var_axes(x, 1, (int[]){1}, 1, false);
        CHECK(v && isnan(nb_get(v, (int64_t[]){0})) && isnan(nb_get(v, (int64_t[]){1})));
        CHECK(v && fabs(nb_get(v, (int64_t[]){2}) - 7.0 / 3.0) < 1e-6);
        CHECK(v && nb_backward(nb_sum(v), NULL, 0) == 0);
        double g[9];
        CHECK(nb_read_f64(nb_grad(x), g, 9) == 9);
        for (int i = 0; i < 6; i++) CHECK(isnan(g[i]));
        CHECK_CLOSE(g[6], -4.0 / 3.0, 1e-6, 0); /* 2 (x - mean) / 2 */
        CHECK_CLOSE(g[8], 5.0 / 3.0, 1e-6, 0);
        nb_scope_end();
    }
}

/* A singular matrix: det 0 (NaN when it holds a NaN), logdet -inf (log 0, as torch.logdet), inverse an error;
   the gradients of det and logdet need the inverse, so they fail with a message. */
static void test_singular(void) {
    nb_scope_begin();
    nb_tensor *s = nb_from_f64(NB_F64, 3, (int64_t[]){2, 2, 2}, (double[]){1, 2, 2, 4, 0, NAN, 0, 1});
    nb_tensor *d = nb_det(s), *l = nb_logdet(s);
    CHECK(d && nb_get(d, (int64_t[]){0}) == 0 && isnan(nb_get(d, (int64_t[]){1})));
    CHECK(l && nb_get(l, (int64_t[]){0}) == -INFINITY && isnan(nb_get(l, (int64_t[]){1})));
    CHECK(nb_inverse(s) == NULL);
    CHECK_ERR("nb_inverse: matrix 0 of (2,2,2) is singular");
    /* a NaN and a zero pivot: all NaN, like any matrix holding a NaN (PyTorch reports this one as singular) */
    nb_tensor *ni = nb_inverse(nb_slice(s, 0, 1, 2));
    CHECK(ni != NULL);
    if (ni)
        for (int i = 0; i < 2; i++)
            for (int j = 0; j < 2; j++) CHECK(isnan(nb_get(ni, (int64_t[]){0, i, j})));
    nb_tensor *a = nb_from_f64(NB_F64, 2, (int64_t[]){2, 2}, (double[]){1, 2, 2, 4});
    nb_set_requires_grad(a, true);
    CHECK(nb_backward(nb_logdet(a), NULL, 0) != 0);
    CHECK_ERR("singular");
    CHECK(nb_grad(a) == NULL);
    nb_scope_end();
}

int main(void) {
    RUN(test_reference);
    RUN(test_var_no_degrees_of_freedom);
    RUN(test_var_non_finite);
    RUN(test_singular);
    return th_finish();
}

/*
 * test_norm.c - layer norm: gradient checks (first and second order, with and
 * without gamma/beta, batched, non-contiguous), the seed's closed form for dx,
 * dgamma and dbeta computed by hand, and bad inputs.
 */
#include "harness.h"

typedef struct {
    bool affine;
} spec;

static nb_tensor *ln(int n, nb_tensor *const *in, void *ud) {
    const spec *s = ud;
    (void)n;
    return nb_layer_norm(in[0], s->affine ? in[1] : NULL, s->affine ? in[2] : NULL, 1e-5);
}

static void test_gradcheck(void) {
    for (int affine = 0; affine < 2; affine++)
        for (int layout = 0; layout < 2; layout++) {
            nb_scope_begin();
            spec s = {affine};
            nb_tensor *x;
            if (layout == 0) {
                x = th_rand(NB_F64, 3, (int64_t[]){2, 3, 5}, -2, 2);
            } else {
                nb_tensor *b = th_rand(NB_F64, 3, (int64_t[]){2, 5, 3}, -2, 2);
                nb_set_requires_grad(b, true);
                x = nb_transpose(b, 1, 2);
            }
            nb_tensor *in[3] = {x, th_rand(NB_F64, 1, (int64_t[]){5}, 0.5, 1.5),
                                th_rand(NB_F64, 1, (int64_t[]){5}, -1, 1)};
            nb_gradcheck_opts o = {.second_order = true};
            nb_gradcheck_result r;
            int rc = nb_gradcheck(ln, &s, affine ? 3 : 1, in, &o, &r);
            CHECK(rc == 0);
            if (rc) fprintf(stderr, "  order %d input %d analytic %g numeric %g\n", r.order, r.input, r.analytic, r.numeric);
            nb_scope_end();
        }
}

/* The closed form of the seed, computed element by element. */
static void test_closed_form(void) {
    nb_scope_begin();
    enum { R = 3, D = 4 };
    nb_tensor *x = th_rand(NB_F64, 2, (int64_t[]){R, D}, -2, 2);
    nb_tensor *ga = th_rand(NB_F64, 1, (int64_t[]){D}, 0.5, 1.5), *be = th_rand(NB_F64, 1, (int64_t[]){D}, -1, 1);
    nb_tensor *G = th_rand(NB_F64, 2, (int64_t[]){R, D}, -1, 1);
    nb_set_requires_grad(x, true);
    nb_set_requires_grad(ga, true);
    nb_set_requires_grad(be, true);
    nb_tensor *y = nb_layer_norm(x, ga, be, 1e-5);
    CHECK(nb_backward(y, G, 0) == 0);
    double xv[R * D], gv[R * D], gam[D], yv[R * D], dx[R * D], dg[D], db[D];
    nb_read_f64(x, xv, R * D);
    nb_read_f64(G, gv, R * D);
    nb_read_f64(ga, gam, D);
    nb_read_f64(y, yv, R * D);
    nb_read_f64(nb_grad(x), dx, R * D);
    nb_read_f64(nb_grad(ga), dg, D);
    nb_read_f64(nb_grad(be), db, D);
    double wdg[D] = {0}, wdb[D] = {0};
    for (int r = 0; r < R; r++) {
        double mu = 0, var = 0, xh[D], dxh[D], m1 = 0, m2 = 0;
        for (int j = 0; j < D; j++) mu += xv[r * D + j] / D;
        for (int j = 0; j < D; j++) var += (xv[r * D + j] - mu) * (xv[r * D + j] - mu) / D;
        double rs = 1 / sqrt(var + 1e-5);
        for (int j = 0; j < D; j++) {
            xh[j] = (xv[r * D + j] - mu) * rs;
            dxh[j] = gv[r * D + j] * gam[j];
            m1 += dxh[j] / D;
            m2 += dxh[j] * xh[j] / D;
            wdg[j] += gv[r * D + j] * xh[j];
            wdb[j] += gv[r * D + j];
        }
        for (int j = 0; j < D; j++) CHECK_CLOSE(dx[r * D + j], rs * (dxh[j] - m1 - xh[j] * m2), 1e-13, 1e-11);
    }
    for (int j = 0; j < D; j++) {
        CHECK_CLOSE(dg[j], wdg[j], 1e-13, 1e-12);
        CHECK_CLOSE(db[j], wdb[j], 1e-13, 1e-12);
    }
    nb_scope_end();
}

static void test_errors(void) {
    nb_scope_begin();
    nb_tensor *x = nb_full(NB_F64, 2, (int64_t[]){3, 4}, 1);
    CHECK(nb_layer_norm(x, nb_full(NB_F64, 1, (int64_t[]){3}, 1), NULL, 1e-5) == NULL);
    CHECK_ERR("nb_layer_norm: gamma (3,) must have shape (4,) to match input (3,4)");
    CHECK(nb_layer_norm(x, NULL, nb_full(NB_F64, 2, (int64_t[]){1, 4}, 1), 1e-5) == NULL);
    CHECK_ERR("nb_layer_norm: beta (1,4) must have shape (4,)");
    CHECK(nb_layer_norm(x, NULL, NULL, -1) == NULL);
    CHECK_ERR("nb_layer_norm: eps -1 must be >= 0");
    CHECK(nb_layer_norm(nb_scalar(NB_F64, 1), NULL, NULL, 1e-5) == NULL);
    CHECK_ERR("nb_layer_norm: input () needs rank >= 1");
    CHECK(nb_layer_norm(NULL, NULL, NULL, 1e-5) == NULL);
    CHECK_ERR("nb_layer_norm: argument 1 is NULL");
    /* a constant row normalises to 0 (+ beta), finite */
    nb_tensor *y = nb_layer_norm(x, NULL, NULL, 1e-5);
    CHECK(y && nb_get(y, (int64_t[]){1, 2}) == 0);
    nb_scope_end();
}

/* The first-order backward runs a fused kernel; with NB_CREATE_GRAPH the rule
   is built from differentiable ops. Both give the same gradients (to rounding),
   in f32 and f64, with and without gamma and beta, and with x a constant. */
static void test_fused_backward_matches_composite(void) {
    for (int dt = 0; dt < 2; dt++)
        for (int affine = 0; affine < 2; affine++)
            for (int xgrad = 0; xgrad < 2; xgrad++) {
                nb_scope_begin();
                nb_dtype t = dt ? NB_F64 : NB_F32;
                nb_tensor *x = th_rand(t, 3, (int64_t[]){2, 5, 33}, -2, 2), *g = th_rand(t, 3, (int64_t[]){2, 5, 33}, -1, 1);
                nb_tensor *gamma = th_rand(t, 1, (int64_t[]){33}, 0.5, 1.5), *beta = th_rand(t, 1, (int64_t[]){33}, -1, 1);
                nb_set_requires_grad(x, xgrad);
                nb_set_requires_grad(gamma, true);
                nb_set_requires_grad(beta, true);
                nb_tensor *y = nb_layer_norm(x, affine ? gamma : NULL, affine ? beta : NULL, 1e-5);
                nb_tensor *wrt[3] = {affine ? gamma : x, affine ? beta : x, x}, *fused[3], *comp[3];
                int n = affine ? (xgrad ? 3 : 2) : 1;
                CHECK(nb_gradients(y, g, n, wrt, NB_RETAIN_GRAPH, fused) == 0);
                CHECK(nb_gradients(y, g, n, wrt, NB_CREATE_GRAPH, comp) == 0);
                for (int k = 0; k < n; k++) {
                    double worst = 0;
                    for (int64_t i = 0; i < nb_numel(fused[k]); i++) {
                        int64_t idx[3] = {0}, r = i;
                        for (int d = nb_rank(fused[k]) - 1; d >= 0; d--) {
                            idx[d] = r % nb_shape(fused[k])[d];
                            r /= nb_shape(fused[k])[d];
                        }
                        double e = fabs(nb_get(fused[k], idx) - nb_get(comp[k], idx));
                        if (e > worst) worst = e;
                    }
                    CHECK(worst < (dt ? 1e-12 : 2e-5));
                }
                nb_scope_end();
            }
}

int main(void) {
    th_seed(11);
    RUN(test_gradcheck);
    RUN(test_closed_form);
    RUN(test_fused_backward_matches_composite);
    RUN(test_errors);
    return th_finish();
}

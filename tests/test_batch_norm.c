/*
 * test_batch_norm.c - nb_batch_norm: gradient checks of first and second order in f64 ((N,C), (N,C,L) and
 * (N,C,H,W) with odd sizes, C = 1, batch 1, with and without gamma and beta, training with and without
 * running statistics, eval with them, a strided view as input), the forward against the definition in both
 * modes, the running statistics after three training calls against a direct computation and against
 * PyTorch's values (tools/gen_batch_norm_stats.py), the errors naming the shapes with nothing changed, and
 * every allocation failing. PyTorch's outputs, gradients and HVPs are checked by test_reference and test_hvp
 * (tools/gen_reference.py and tools/gen_hvp_reference.py, batch_norm_*).
 */
#include "harness.h"

#define SH(...) ((int64_t[]){__VA_ARGS__})
#define RND(r, ...) th_rand(NB_F64, r, SH(__VA_ARGS__), -1.5, 1.5)

typedef struct {
    bool training, gamma, beta, view; /* view: x is the (0, 1) transpose of the stored leaf */
    nb_tensor *rm, *rv;               /* running statistics, or NULL */
} bcase;

static nb_tensor *bn_fn(int n, nb_tensor *const *in, void *ud) {
    const bcase *c = ud;
    int k = 1;
    nb_tensor *x = c->view ? nb_transpose(in[0], 0, 1) : in[0];
    nb_tensor *g = c->gamma && k < n ? in[k++] : NULL;
    nb_tensor *b = c->beta && k < n ? in[k++] : NULL;
    return nb_batch_norm(x, g, b, c->rm, c->rv, c->training, 0.1, 1e-5);
}

static void check(const char *what, bcase *c, int rank, const int64_t *xs) {
    int64_t C = xs[c->view ? 0 : 1];
    nb_tensor *in[3] = {th_rand(NB_F64, rank, xs, -1.5, 1.5)};
    int n = 1;
    if (c->gamma) in[n++] = th_rand(NB_F64, 1, &C, 0.5, 1.5);
    if (c->beta) in[n++] = th_rand(NB_F64, 1, &C, -1, 1);
    nb_gradcheck_opts o = {.second_order = true};
    nb_gradcheck_result r;
    int rc = nb_gradcheck(bn_fn, c, n, in, &o, &r);
    CHECK(rc == 0);
    if (rc != 0)
        fprintf(stderr, "gradcheck %s: rc %d order %d input %d index %lld analytic %.10g numeric %.10g (%s)\n", what,
                rc, r.order, r.input, (long long)r.index, r.analytic, r.numeric,
                nb_last_error() ? nb_last_error() : "");
    nb_clear_error();
}

static void test_gradcheck(void) {
    nb_scope_begin();
    th_seed(41);
    nb_tensor *rm3 = RND(1, 3), *rv3 = th_rand(NB_F64, 1, SH(3), 0.5, 2);
    nb_tensor *rm4 = RND(1, 4), *rv4 = th_rand(NB_F64, 1, SH(4), 0.5, 2);
    bcase c = {.training = true, .gamma = true, .beta = true};
    check("(N,C) training", &c, 2, SH(5, 3));
    c.rm = rm3, c.rv = rv3; /* odd sizes; the running statistics updated on every call do not change y */
    check("(N,C,H,W) training, running", &c, 4, SH(3, 3, 5, 3));
    c = (bcase){.training = true}; /* C = 1, no gamma or beta */
    check("C = 1", &c, 4, SH(4, 1, 3, 2));
    c = (bcase){.training = true, .gamma = true, .rm = rm3, .rv = rv3}; /* batch 1, H and W > 1 */
    check("batch 1", &c, 4, SH(1, 3, 3, 4));
    c = (bcase){.training = true, .beta = true}; /* (N,C,L), beta only */
    check("(N,C,L) beta", &c, 3, SH(2, 3, 5));
    c = (bcase){.gamma = true, .beta = true, .rm = rm4, .rv = rv4}; /* eval: the running statistics */
    check("eval (N,C,H,W)", &c, 4, SH(3, 4, 2, 3));
    c = (bcase){.rm = rm3, .rv = rv3};
    check("eval (N,C)", &c, 2, SH(4, 3));
    c = (bcase){.gamma = true, .beta = true}; /* eval without running statistics: the batch's */
    check("eval, batch statistics", &c, 2, SH(4, 3));
    c = (bcase){.training = true, .gamma = true, .beta = true, .view = true}; /* x (2,3,4,5) strided */
    check("view training", &c, 4, SH(3, 2, 4, 5));
    c = (bcase){.gamma = true, .view = true, .rm = rm3, .rv = rv3};
    check("view eval", &c, 4, SH(3, 2, 3, 2));
    nb_scope_end();
}

static double at(nb_tensor *t, int64_t i) {
    return nb_dtype_of(t) == NB_F32 ? (double)((float *)nb_data(t))[i] : ((double *)nb_data(t))[i];
}

/* y against the definition, in double, for x (N, C, S) (S the product of the trailing sizes), both modes. */
static void test_forward(void) {
    nb_scope_begin();
    th_seed(42);
    for (int k = 0; k < 2; k++) {
        nb_dtype dt = k ? NB_F32 : NB_F64;
        double tol = k ? 2e-5 : 1e-13, eps = 1e-3;
        const int64_t N = 3, C = 4, S = 6;
        nb_tensor *x = th_rand(dt, 4, SH(N, C, 2, 3), -2, 2), *g = th_rand(dt, 1, SH(C), -1.5, 1.5);
        nb_tensor *b = th_rand(dt, 1, SH(C), -1, 1), *rm = th_rand(dt, 1, SH(C), -1, 1);
        nb_tensor *rv = th_rand(dt, 1, SH(C), 0.25, 2);
        nb_tensor *ye = nb_batch_norm(x, g, b, rm, rv, false, 0.1, eps);
        nb_tensor *yt = nb_batch_norm(x, g, b, NULL, NULL, true, 0.1, eps);
        CHECK(ye && yt);
        if (!ye || !yt) break;
        double we = 0, wt = 0;
        for (int64_t c = 0; c < C; c++) {
            double mu = 0, var = 0;
            for (int64_t n = 0; n < N; n++)
                for (int64_t s = 0; s < S; s++) mu += at(x, (n * C + c) * S + s);
            mu /= (double)(N * S);
            for (int64_t n = 0; n < N; n++)
                for (int64_t s = 0; s < S; s++) var += pow(at(x, (n * C + c) * S + s) - mu, 2);
            var /= (double)(N * S);
            for (int64_t n = 0; n < N; n++)
                for (int64_t s = 0; s < S; s++) {
                    int64_t i = (n * C + c) * S + s;
                    double e = (at(x, i) - at(rm, c)) / sqrt(at(rv, c) + eps) * at(g, c) + at(b, c);
                    double t = (at(x, i) - mu) / sqrt(var + eps) * at(g, c) + at(b, c);
                    we = fmax(we, fabs(e - at(ye, i)));
                    wt = fmax(wt, fabs(t - at(yt, i)));
                }
        }
        CHECK(we < tol);
        CHECK(wt < tol);
        CHECK(nb_dtype_of(ye) == dt && nb_rank(ye) == 4 && nb_shape(ye)[1] == C);
    }
    nb_scope_end();
}

/* Eval: gradients reach x, gamma and beta, never the running statistics (even when they require grad); those
   are left as they were. Training with running statistics that require grad updates them under grad mode. */
static void test_eval_gradients(void) {
    nb_scope_begin();
    th_seed(43);
    nb_tensor *x = RND(2, 5, 3), *g = RND(1, 3), *b = RND(1, 3), *rm = RND(1, 3);
    nb_tensor *rv = th_rand(NB_F64, 1, SH(3), 0.5, 2), *rm0 = nb_clone(rm), *rv0 = nb_clone(rv);
    nb_set_requires_grad(x, true), nb_set_requires_grad(g, true), nb_set_requires_grad(b, true);
    nb_set_requires_grad(rm, true), nb_set_requires_grad(rv, true);
    nb_tensor *y = nb_batch_norm(x, g, b, rm, rv, false, 0.1, 1e-5);
    CHECK(y && nb_backward(nb_sum(y), NULL, 0) == 0);
    CHECK(nb_grad(x) && nb_grad(g) && nb_grad(b));
    CHECK(nb_grad(rm) == NULL && nb_grad(rv) == NULL);
    for (int64_t i = 0; i < 3; i++) {
        CHECK(at(rm, i) == at(rm0, i) && at(rv, i) == at(rv0, i));
        /* d sum(y) / dx = gamma / sqrt(rv + eps) for every element */
        if (nb_grad(x)) CHECK_CLOSE(at(nb_grad(x), 3 + i), at(g, i) / sqrt(at(rv, i) + 1e-5), 1e-14, 1e-13);
        if (nb_grad(b)) CHECK(at(nb_grad(b), i) == 5);
    }
    y = nb_batch_norm(x, g, b, rm, rv, true, 0.5, 1e-5);
    CHECK(y && nb_backward(nb_sum(nb_mul(y, y)), NULL, 0) == 0);
    CHECK(at(rm, 0) != at(rm0, 0));
    CHECK(nb_grad(rm) == NULL);
    nb_scope_end();
}

/* PyTorch's running statistics (tools/gen_batch_norm_stats.py, whose docstring gives the inputs). */
static const double torch_stats[4][2][3] = {
    /* tools/gen_batch_norm_stats.py, PyTorch 1.13.0a0 */
    {{0.46388888888888891, -0.24583333333333335}, {1.4148692810457517, 0.7369485294117647}}, /* call 1, 0.1 */
    {{0.31319444444444444, -0.15312500000000001}, {1.223325163398693, 0.70758272058823535}}, /* call 2, 0.25 */
    {{0.068819444444444433, -0.015312499999999998}, {0.67986928104575162, 0.71928768382352937}}, /* call 3, 0.9 */
    {{0.050000000000000003, 0.45000000000000001, 0.14999999999999999},
     {0.23125000000000001, 0.23125000000000001, 0.36249999999999999}}, /* (5, 3), momentum 1 */
};

static nb_tensor *formula_x(int rank, const int64_t *shape, int64_t a, int64_t b, int64_t m, double d, double o) {
    int64_t n = 1;
    for (int i = 0; i < rank; i++) n *= shape[i];
    double v[64];
    for (int64_t i = 0; i < n; i++) v[i] = (double)((a * i + b) % m) / d - o;
    return nb_from_f64(NB_F64, rank, shape, v);
}

/* Three training calls: the running statistics against their update computed here from the batch (mean,
   unbiased variance) and against PyTorch's; y does not depend on them. Then f32 running statistics, and
   momentum 0 (no change) and 1 (the batch's statistics). */
static void test_running_stats(void) {
    nb_scope_begin();
    static const double momenta[3] = {0.1, 0.25, 0.9};
    nb_tensor *rm = nb_from_f64(NB_F64, 1, SH(2), (double[]){0.5, -0.25});
    nb_tensor *rv = nb_from_f64(NB_F64, 1, SH(2), (double[]){1.5, 0.75});
    double em[2] = {0.5, -0.25}, ev[2] = {1.5, 0.75};
    for (int k = 0; k < 3; k++) {
        nb_tensor *x = formula_x(4, SH(3, 2, 2, 3), 7, 5 * k, 11, 4, 1.25);
        nb_tensor *y = nb_batch_norm(x, NULL, NULL, rm, rv, true, momenta[k], 1e-5);
        nb_tensor *y0 = nb_batch_norm(x, NULL, NULL, NULL, NULL, true, momenta[k], 1e-5);
        CHECK(y && y0);
        for (int64_t i = 0; y && y0 && i < 36; i++) CHECK(at(y, i) == at(y0, i));
        for (int c = 0; c < 2; c++) {
            double mu = 0, ss = 0;
            for (int n = 0; n < 3; n++)
                for (int s = 0; s < 6; s++) mu += at(x, (n * 2 + c) * 6 + s);
            mu /= 18;
            for (int n = 0; n < 3; n++)
                for (int s = 0; s < 6; s++) ss += pow(at(x, (n * 2 + c) * 6 + s) - mu, 2);
            em[c] = (1 - momenta[k]) * em[c] + momenta[k] * mu;
            ev[c] = (1 - momenta[k]) * ev[c] + momenta[k] * ss / 17;
            CHECK_CLOSE(at(rm, c), em[c], 1e-15, 1e-14);
            CHECK_CLOSE(at(rv, c), ev[c], 1e-15, 1e-14);
            CHECK_CLOSE(at(rm, c), torch_stats[k][0][c], 1e-15, 1e-14);
            CHECK_CLOSE(at(rv, c), torch_stats[k][1][c], 1e-15, 1e-14);
        }
    }
    /* (N, C), momentum 1: the batch's mean and unbiased variance */
    nb_tensor *x = formula_x(2, SH(5, 3), 3, 1, 7, 4, 0.5);
    nb_tensor *m = nb_full(NB_F64, 1, SH(3), 0), *v = nb_full(NB_F64, 1, SH(3), 1);
    CHECK(nb_batch_norm(x, NULL, NULL, m, v, true, 1, 1e-5) != NULL);
    for (int c = 0; c < 3; c++) {
        CHECK_CLOSE(at(m, c), torch_stats[3][0][c], 1e-15, 1e-14);
        CHECK_CLOSE(at(v, c), torch_stats[3][1][c], 1e-15, 1e-14);
    }
    /* momentum 0 leaves them; f32 statistics follow f32 input */
    double keep_m[3], keep_v[3];
    for (int c = 0; c < 3; c++) keep_m[c] = at(m, c), keep_v[c] = at(v, c);
    CHECK(nb_batch_norm(nb_scale(x, 3), NULL, NULL, m, v, true, 0, 1e-5) != NULL);
    for (int c = 0; c < 3; c++) CHECK(at(m, c) == keep_m[c] && at(v, c) == keep_v[c]);
    nb_tensor *mf = nb_full(NB_F32, 1, SH(3), 0), *vf = nb_full(NB_F32, 1, SH(3), 1);
    CHECK(nb_batch_norm(nb_to(x, NB_F32), NULL, NULL, mf, vf, true, 1, 1e-5) != NULL);
    for (int c = 0; c < 3; c++) {
        CHECK_CLOSE(at(mf, c), torch_stats[3][0][c], 1e-7, 1e-6);
        CHECK_CLOSE(at(vf, c), torch_stats[3][1][c], 1e-7, 1e-6);
    }
    /* running statistics that are views (negative strides) are updated where they lie */
    nb_tensor *bm = nb_full(NB_F64, 1, SH(3), 7), *bv = nb_full(NB_F64, 1, SH(3), 7);
    nb_tensor *sm = nb_flip(bm, 0), *sv = nb_flip(bv, 0);
    CHECK(sm && sv && !nb_is_contiguous(sm));
    CHECK(nb_batch_norm(x, NULL, NULL, sm, sv, true, 1, 1e-5) != NULL);
    for (int c = 0; c < 3; c++) {
        CHECK_CLOSE(at(bm, 2 - c), torch_stats[3][0][c], 1e-15, 1e-14);
        CHECK_CLOSE(at(bv, 2 - c), torch_stats[3][1][c], 1e-15, 1e-14);
    }
    nb_scope_end();
}

static bool unchanged(nb_tensor *rm, nb_tensor *rv) {
    for (int64_t i = 0; i < nb_numel(rm); i++)
        if (at(rm, i) != 0.25 || at(rv, i) != 2) return false;
    return true;
}

static void test_errors(void) {
    nb_scope_begin();
    nb_tensor *x = nb_full(NB_F64, 2, SH(4, 3), 1), *c3 = nb_full(NB_F64, 1, SH(3), 1);
    nb_tensor *rm = nb_full(NB_F64, 1, SH(3), 0.25), *rv = nb_full(NB_F64, 1, SH(3), 2);
    CHECK(nb_batch_norm(nb_full(NB_F64, 1, SH(3), 0), NULL, NULL, rm, rv, true, 0.1, 1e-5) == NULL);
    CHECK_ERR("nb_batch_norm: input (3,) must have rank 2 (N, C), 3 (N, C, L) or 4 (N, C, H, W)");
    CHECK(nb_batch_norm(nb_full(NB_F64, 5, SH(2, 3, 1, 2, 2), 0), NULL, NULL, rm, rv, true, 0.1, 1e-5) == NULL);
    CHECK_ERR("input (2,3,1,2,2) must have rank 2");
    CHECK(nb_batch_norm(x, nb_full(NB_F64, 1, SH(4), 1), NULL, rm, rv, true, 0.1, 1e-5) == NULL);
    CHECK_ERR("nb_batch_norm: gamma (4,) must have shape (3,) to match input (4,3)");
    CHECK(nb_batch_norm(x, c3, nb_full(NB_F64, 2, SH(1, 3), 1), rm, rv, true, 0.1, 1e-5) == NULL);
    CHECK_ERR("beta (1,3) must have shape (3,) to match input (4,3)");
    CHECK(nb_batch_norm(x, c3, c3, nb_full(NB_F64, 1, SH(2), 0), rv, true, 0.1, 1e-5) == NULL);
    CHECK_ERR("running_mean (2,) must have shape (3,) to match input (4,3)");
    CHECK(nb_batch_norm(nb_full(NB_F64, 4, SH(2, 5, 2, 2), 0), NULL, NULL, rm, rv, false, 0.1, 1e-5) == NULL);
    CHECK_ERR("running_mean (3,) must have shape (5,) to match input (2,5,2,2)");
    CHECK(nb_batch_norm(x, nb_full(NB_F32, 1, SH(3), 1), NULL, rm, rv, true, 0.1, 1e-5) == NULL);
    CHECK_ERR("gamma (3,) is f32 but input (4,3) is f64: they must share one dtype");
    CHECK(nb_batch_norm(x, NULL, NULL, rm, nb_full(NB_F32, 1, SH(3), 1), true, 0.1, 1e-5) == NULL);
    CHECK_ERR("running_var (3,) is f32 but input (4,3) is f64");
    CHECK(nb_batch_norm(x, NULL, NULL, rm, NULL, true, 0.1, 1e-5) == NULL);
    CHECK_ERR("running_mean (3,) and running_var NULL must be given together (input (4,3))");
    CHECK(nb_batch_norm(x, NULL, NULL, NULL, rv, false, 0.1, 1e-5) == NULL);
    CHECK_ERR("running_mean NULL and running_var (3,) must be given together");
    CHECK(nb_batch_norm(x, NULL, NULL, rm, rv, true, -0.1, 1e-5) == NULL);
    CHECK_ERR("momentum -0.1 must be in [0, 1] (input (4,3))");
    CHECK(nb_batch_norm(x, NULL, NULL, rm, rv, true, 1.5, 1e-5) == NULL);
    CHECK_ERR("momentum 1.5 must be in [0, 1]");
    CHECK(nb_batch_norm(x, NULL, NULL, rm, rv, true, NAN, 1e-5) == NULL);
    CHECK_ERR("momentum nan must be in [0, 1]");
    CHECK(nb_batch_norm(x, NULL, NULL, rm, rv, true, 0.1, 0) == NULL);
    CHECK_ERR("eps 0 must be finite and > 0 (input (4,3))");
    CHECK(nb_batch_norm(x, NULL, NULL, rm, rv, false, 0.1, -1e-5) == NULL);
    CHECK_ERR("eps -1e-05 must be finite and > 0");
    CHECK(nb_batch_norm(x, NULL, NULL, rm, rv, true, 0.1, INFINITY) == NULL);
    CHECK_ERR("eps inf must be finite");
    CHECK(nb_batch_norm(x, NULL, NULL, rm, rv, true, 0.1, NAN) == NULL);
    CHECK_ERR("eps nan must be finite");
    /* one value per channel: an error in training (as PyTorch) and wherever the batch's statistics are used */
    CHECK(nb_batch_norm(nb_full(NB_F64, 2, SH(1, 3), 1), c3, c3, rm, rv, true, 0.1, 1e-5) == NULL);
    CHECK_ERR("nb_batch_norm: expected more than 1 value per channel when training, got input (1,3)");
    CHECK(nb_batch_norm(nb_full(NB_F64, 4, SH(1, 3, 1, 1), 1), NULL, NULL, rm, rv, true, 0.1, 1e-5) == NULL);
    CHECK_ERR("got input (1,3,1,1)");
    CHECK(nb_batch_norm(nb_full(NB_F64, 2, SH(1, 3), 1), NULL, NULL, NULL, NULL, false, 0.1, 1e-5) == NULL);
    CHECK_ERR("expected more than 1 value per channel");
    /* an expanded running statistic cannot take the update */
    nb_tensor *ex = nb_expand(nb_full(NB_F64, 1, SH(1), 0.25), 1, SH(3));
    CHECK(nb_batch_norm(x, NULL, NULL, ex, rv, true, 0.1, 1e-5) == NULL);
    CHECK_ERR("running_mean (3,) is an expanded view whose elements overlap");
    CHECK(nb_batch_norm(NULL, NULL, NULL, rm, rv, true, 0.1, 1e-5) == NULL);
    CHECK(nb_last_error() != NULL);
    nb_clear_error();
    CHECK(nb_batch_norm(nb_full(NB_I64, 2, SH(4, 3), 1), NULL, NULL, rm, rv, true, 0.1, 1e-5) == NULL);
    CHECK_ERR("dtype i64");
    CHECK(unchanged(rm, rv));
    /* accepted: eval with one value per channel, an expanded statistic in eval, an empty batch (no update) */
    nb_tensor *y = nb_batch_norm(nb_full(NB_F64, 2, SH(1, 3), 1.25), NULL, NULL, rm, rv, false, 0.1, 1e-5);
    CHECK(y && fabs(at(y, 0) - 1 / sqrt(2 + 1e-5)) < 1e-15);
    CHECK(nb_batch_norm(x, NULL, NULL, ex, rv, false, 0.1, 1e-5) != NULL);
    y = nb_batch_norm(nb_full(NB_F64, 4, SH(0, 3, 2, 2), 1), c3, c3, rm, rv, true, 0.1, 1e-5);
    CHECK(y && nb_numel(y) == 0 && nb_shape(y)[1] == 3);
    CHECK(unchanged(rm, rv));
    nb_scope_end();
}

/* Training with running statistics (x a view) and backward, then eval, with the at-th allocation failing; a
   failed call leaves the running statistics as they were. */
static int step_at(void *unused) {
    (void)unused;
    nb_scope_begin();
    th_seed(44);
    nb_tensor *x = th_rand(NB_F32, 4, SH(4, 3, 3, 2), -1, 1), *g = th_rand(NB_F32, 1, SH(3), 0.5, 1.5);
    nb_tensor *b = th_rand(NB_F32, 1, SH(3), -1, 1);
    nb_tensor *rm = nb_full(NB_F32, 1, SH(3), 0.25), *rv = nb_full(NB_F32, 1, SH(3), 2);
    int rc = x && g && b && rm && rv ? 0 : -1;
    if (rc == 0) {
        nb_set_requires_grad(x, true), nb_set_requires_grad(g, true), nb_set_requires_grad(b, true);
        nb_tensor *y = nb_batch_norm(nb_transpose(x, 2, 3), g, b, rm, rv, true, 0.1, 1e-5);
        if (!y) CHECK(unchanged(rm, rv));
        rc = y && nb_backward(nb_sum(nb_mul(y, y)), NULL, 0) == 0 ? 0 : -1;
        nb_tensor *ye = rc == 0 ? nb_batch_norm(x, g, b, rm, rv, false, 0.1, 1e-5) : NULL;
        rc = ye && nb_backward(nb_sum(nb_mul(ye, ye)), NULL, 0) == 0 ? 0 : -1;
    }
    nb_scope_end();
    return rc;
}
static void test_oom(void) { CHECK(th_fail_each(step_at, NULL, 5000) > 5); }

int main(void) {
    RUN(test_gradcheck);
    RUN(test_forward);
    RUN(test_eval_gradients);
    RUN(test_running_stats);
    RUN(test_errors);
    if (!getenv("SKIP_OOM")) RUN(test_oom);
    return th_finish();
}

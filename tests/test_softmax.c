/*
 * test_softmax.c - softmax, log_softmax, nll_loss and cross_entropy: gradient
 * checks (first and second order, each axis, non-contiguous inputs), the seed's
 * closed form (softmax - onehot) / N, stability at +-1e4, f32 rows equal to libm's double exp rounded, and
 * bad targets.
 */
#include "harness.h"

typedef struct {
    int kind, axis;
    nb_tensor *targets;
    nb_ce_options ce; /* kind 4: nb_cross_entropy_ex */
} spec;

static nb_tensor *apply(int n, nb_tensor *const *in, void *ud) {
    (void)n;
    const spec *s = ud;
    switch (s->kind) {
    case 0: return nb_softmax(in[0], s->axis);
    case 1: return nb_log_softmax(in[0], s->axis);
    case 2: return nb_cross_entropy(in[0], s->targets);
    case 4: return nb_cross_entropy_ex(in[0], s->targets, &s->ce);
    default: return nb_nll_loss(nb_log_softmax(in[0], 1), s->targets);
    }
}

static void check(spec *s, nb_tensor *x) {
    nb_gradcheck_opts o = {.second_order = true};
    nb_gradcheck_result r;
    int rc = nb_gradcheck(apply, s, 1, &x, &o, &r);
    CHECK(rc == 0);
    if (rc != 0)
        fprintf(stderr, "  kind %d axis %d: order %d index %lld analytic %g numeric %g\n", s->kind, s->axis, r.order,
                (long long)r.index, r.analytic, r.numeric);
}

static void test_gradcheck_softmax(void) {
    for (int kind = 0; kind < 2; kind++)
        for (int axis = -3; axis < 3; axis++) {
            nb_scope_begin();
            spec s = {kind, axis, NULL, {0, NB_REDUCE_MEAN, 0}};
            nb_tensor *x = th_rand(NB_F64, 3, (int64_t[]){2, 3, 4}, -2, 2);
            check(&s, x);
            nb_tensor *base = th_rand(NB_F64, 3, (int64_t[]){4, 3, 2}, -2, 2);
            nb_set_requires_grad(base, true);
            check(&s, nb_transpose(base, 0, 2)); /* non-contiguous */
            nb_scope_end();
        }
}

static void test_gradcheck_losses(void) {
    nb_scope_begin();
    nb_tensor *t = nb_from_f64(NB_I64, 1, (int64_t[]){5}, (double[]){0, 3, 1, 3, 2});
    for (int kind = 2; kind < 4; kind++) {
        spec s = {kind, 1, t, {0, NB_REDUCE_MEAN, 0}};
        check(&s, th_rand(NB_F64, 2, (int64_t[]){5, 4}, -3, 3));
        nb_tensor *base = th_rand(NB_F64, 2, (int64_t[]){4, 5}, -3, 3);
        nb_set_requires_grad(base, true);
        check(&s, nb_transpose(base, 0, 1));
    }
    nb_scope_end();
}

/* Seed 004: d CE / d logits = (softmax(logits) - onehot) / N. */
/* max |a - b| over two tensors of one size (INFINITY when either is NULL). */
static double maxdiff(nb_tensor *a, nb_tensor *b) {
    if (!a || !b || nb_numel(a) != nb_numel(b)) return INFINITY;
    int64_t n = nb_numel(a);
    double *u = malloc(sizeof(double) * (size_t)(2 * n + 1)), w = 0;
    nb_read_f64(a, u, n), nb_read_f64(b, u + n, n);
    for (int64_t i = 0; i < n; i++) w = fmax(w, fabs(u[i] - u[n + i]));
    free(u);
    return w;
}

/* nb_cross_entropy_ex, f64, first and second order: each reduction, ignored targets (the default -100 and one
   in range), smoothing, 2-D, 3-D and strided logits, a vector. The ignored entries get no gradient. */
static void test_gradcheck_cross_entropy_ex(void) {
    nb_scope_begin();
    nb_tensor *t2 = nb_from_f64(NB_I64, 1, (int64_t[]){5}, (double[]){0, -100, 1, 3, -100});
    nb_tensor *t2in = nb_from_f64(NB_I64, 1, (int64_t[]){5}, (double[]){0, 2, 1, 3, 2}); /* ignore_index 2 */
    nb_tensor *t3 = nb_from_f64(NB_I64, 2, (int64_t[]){2, 3}, (double[]){3, -100, 0, 1, 1, 2});
    nb_tensor *t0 = nb_from_f64(NB_I64, 0, NULL, (double[]){2});
    const double eps[3] = {0, 0.2, 1};
    for (int red = 0; red < 3; red++)
        for (int e = 0; e < 3; e++) {
            spec s = {4, 0, t2, {-100, (nb_reduction)red, eps[e]}};
            check(&s, th_rand(NB_F64, 2, (int64_t[]){5, 4}, -3, 3));
            s.targets = t2in, s.ce.ignore_index = 2;
            check(&s, th_rand(NB_F64, 2, (int64_t[]){5, 4}, -3, 3));
            s.targets = t3, s.ce.ignore_index = -100;
            check(&s, th_rand(NB_F64, 3, (int64_t[]){2, 3, 4}, -3, 3));
            nb_tensor *base = th_rand(NB_F64, 3, (int64_t[]){4, 3, 2}, -3, 3); /* strided (2, 3, 4) */
            nb_set_requires_grad(base, true);
            check(&s, nb_transpose(base, 0, 2));
            s.targets = t0;
            check(&s, th_rand(NB_F64, 1, (int64_t[]){4}, -3, 3));
        }
    /* the ignored rows' gradient is exactly 0, fused and composite */
    nb_tensor *x = th_rand(NB_F64, 2, (int64_t[]){5, 4}, -3, 3);
    nb_set_requires_grad(x, true);
    nb_ce_options o = {-100, NB_REDUCE_SUM, 0.3};
    for (int create = 0; create < 2; create++) {
        nb_tensor *g = NULL;
        CHECK(nb_gradients(nb_cross_entropy_ex(x, t2, &o), NULL, 1, &x, create ? NB_CREATE_GRAPH : 0, &g) == 0);
        for (int64_t k = 0; g && k < 4; k++) CHECK(nb_get(g, (int64_t[]){1, k}) == 0 && nb_get(g, (int64_t[]){4, k}) == 0);
    }
    nb_scope_end();
}

/* nb_cross_entropy_ex against hand-computed values and nb_cross_entropy: defaults (opt NULL) equal
   nb_cross_entropy's bits on (N, C); reduction none has the targets' shape with 0 where ignored, sum is its
   sum, mean divides by the targets not ignored; every target ignored gives NaN (mean), 0 (sum) and zero
   gradients; N = 0. */
static void test_cross_entropy_ex_values(void) {
    nb_scope_begin();
    for (int dt = 0; dt < 2; dt++) {
        nb_dtype d = dt ? NB_F64 : NB_F32;
        nb_tensor *x = th_rand(d, 2, (int64_t[]){37, 11}, -4, 4);
        double tv[37];
        for (int i = 0; i < 37; i++) tv[i] = (double)((i * 5) % 11);
        nb_tensor *t = nb_from_f64(NB_I64, 1, (int64_t[]){37}, tv);
        nb_set_requires_grad(x, true);
        nb_tensor *a = nb_cross_entropy(x, t), *b = nb_cross_entropy_ex(x, t, NULL), *ga = NULL, *gb = NULL;
        CHECK(nb_item(a) == nb_item(b));
        CHECK(nb_gradients(a, NULL, 1, &x, 0, &ga) == 0 && nb_gradients(b, NULL, 1, &x, 0, &gb) == 0);
        CHECK(maxdiff(ga, gb) == 0);
        /* (B, T, C) with ignored positions: none, sum, mean */
        nb_tensor *x3 = nb_reshape(x, 3, (int64_t[]){1, 37, 11});
        for (int i = 0; i < 37; i += 4) tv[i] = -100;
        nb_tensor *t3 = nb_from_f64(NB_I64, 2, (int64_t[]){1, 37}, tv);
        nb_ce_options o = {-100, NB_REDUCE_NONE, 0.1};
        nb_tensor *none = nb_cross_entropy_ex(x3, t3, &o);
        CHECK(none && nb_rank(none) == 2 && nb_shape(none)[0] == 1 && nb_shape(none)[1] == 37);
        double want_sum = 0, got[37];
        int valid = 0;
        nb_read_f64(none, got, 37);
        for (int i = 0; i < 37; i++) {
            if (tv[i] == -100) {
                CHECK(got[i] == 0);
                continue;
            }
            double row[11], m = -INFINITY, se = 0, xs = 0;
            for (int k = 0; k < 11; k++) row[k] = nb_get(x, (int64_t[]){i, k}), m = fmax(m, row[k]), xs += row[k];
            for (int k = 0; k < 11; k++) se += exp(row[k] - m);
            const double ls = m + log(se), want = 0.9 * (ls - row[(int)tv[i]]) + 0.1 * (ls - xs / 11);
            CHECK_CLOSE(got[i], want, 0, dt ? 1e-14 : 1e-6);
            want_sum += want, valid++;
        }
        o.reduction = NB_REDUCE_SUM;
        CHECK_CLOSE(nb_item(nb_cross_entropy_ex(x3, t3, &o)), want_sum, 0, dt ? 1e-13 : 1e-5);
        o.reduction = NB_REDUCE_MEAN;
        CHECK_CLOSE(nb_item(nb_cross_entropy_ex(x3, t3, &o)), want_sum / valid, 0, dt ? 1e-14 : 1e-6);
        /* fused against composite under each reduction, with a seed other than 1 */
        for (int red = 0; red < 3; red++) {
            o.reduction = (nb_reduction)red;
            nb_tensor *L = nb_sum(nb_scale(nb_cross_entropy_ex(x3, t3, &o), 3.0)), *f = NULL, *c = NULL;
            CHECK(nb_gradients(L, NULL, 1, &x, NB_RETAIN_GRAPH, &f) == 0);
            CHECK(nb_gradients(L, NULL, 1, &x, NB_CREATE_GRAPH, &c) == 0);
            const double md = maxdiff(f, c);
            if (getenv("NABLA_TEST_VERBOSE")) fprintf(stderr, "dt %d red %d: %g\n", dt, red, md);
            CHECK(md <= (dt ? 1e-14 : 1e-6));
        }
        /* every target ignored */
        nb_tensor *all = nb_full(NB_I64, 1, (int64_t[]){37}, -100), *g = NULL;
        o.reduction = NB_REDUCE_MEAN;
        nb_tensor *L = nb_cross_entropy_ex(x, all, &o);
        CHECK(L && isnan(nb_item(L)));
        CHECK(nb_gradients(L, NULL, 1, &x, 0, &g) == 0);
        CHECK(g && nb_item(nb_sum(nb_abs(g))) == 0);
        o.reduction = NB_REDUCE_SUM;
        CHECK(nb_item(nb_cross_entropy_ex(x, all, &o)) == 0);
        /* no rows */
        nb_tensor *x0 = nb_full(d, 3, (int64_t[]){2, 0, 5}, 0), *t0 = nb_full(NB_I64, 2, (int64_t[]){2, 0}, 0);
        CHECK(isnan(nb_item(nb_cross_entropy_ex(x0, t0, NULL))));
        o.reduction = NB_REDUCE_NONE;
        nb_tensor *e = nb_cross_entropy_ex(x0, t0, &o);
        CHECK(e && nb_rank(e) == 2 && nb_numel(e) == 0);
        nb_set_requires_grad(x0, true);
        for (int red = 0; red < 3; red++) {
            nb_tensor *g0 = NULL;
            o.reduction = (nb_reduction)red;
            CHECK(nb_gradients(nb_sum(nb_cross_entropy_ex(x0, t0, &o)), NULL, 1, &x0, 0, &g0) == 0);
            CHECK(g0 && nb_numel(g0) == 0 && nb_rank(g0) == 3);
        }
        /* a -inf logit under smoothing: +inf loss, a finite gradient (PyTorch's values) */
        nb_tensor *xi = nb_from_f64(d, 2, (int64_t[]){2, 3}, (double[]){-INFINITY, 0, 1, 0.5, 1, 2});
        nb_set_requires_grad(xi, true);
        nb_ce_options so = {-100, NB_REDUCE_MEAN, 0.1};
        nb_tensor *Li = nb_cross_entropy_ex(xi, nb_from_f64(NB_I64, 1, (int64_t[]){2}, (double[]){1, 2}), &so);
        CHECK(Li && nb_item(Li) == INFINITY);
        CHECK(nb_backward(Li, NULL, 0) == 0);
        const double e1 = exp(1.0), want[3] = {-0.1 / 6, 0.5 * (1 / (1 + e1) - 0.9 - 0.1 / 3), 0.5 * (e1 / (1 + e1) - 0.1 / 3)};
        for (int k = 0; k < 3; k++) CHECK_CLOSE(nb_get(nb_grad(xi), (int64_t[]){0, k}), want[k], 1e-7, 0);
    }
    nb_scope_end();
}

/* nb_cross_entropy_ex under failing allocations, each reduction, forward and fused backward: an error and no
   gradient, or the gradient of the run that succeeds. */
static void test_cross_entropy_ex_alloc_failures(void) {
    nb_set_cache_limit(0);
    for (int red = 0; red < 3; red++) {
        int succeeded = 0;
        for (long fail_at = 1; fail_at < 400 && !succeeded; fail_at++) {
            th_inject(fail_at);
            nb_clear_error();
            nb_scope_begin();
            nb_tensor *x = nb_full(NB_F32, 3, (int64_t[]){2, 3, 5}, 0.5);
            nb_tensor *t = nb_from_f64(NB_I64, 2, (int64_t[]){2, 3}, (double[]){0, -100, 4, 1, 2, 3});
            nb_ce_options o = {-100, (nb_reduction)red, 0.1};
            if (x) nb_set_requires_grad(x, true);
            nb_tensor *L = nb_sum(nb_cross_entropy_ex(x, t, &o));
            if (L && nb_backward(L, NULL, 0) == 0 && nb_grad(x)) {
                succeeded = 1;
                CHECK(nb_get(nb_grad(x), (int64_t[]){0, 1, 2}) == 0);
                CHECK_CLOSE(nb_get(nb_grad(x), (int64_t[]){0, 0, 0}), (red == 0 ? 0.2 : 1) * (0.2 - 0.9 - 0.02), 1e-7, 0);
            } else {
                CHECK(nb_last_error() != NULL);
            }
            nb_scope_end();
            nb_set_allocator(NULL, NULL, NULL);
        }
        CHECK(succeeded);
    }
    nb_set_cache_limit((int64_t)256 << 20);
    nb_clear_error();
}

static void test_cross_entropy_closed_form(void) {
    nb_scope_begin();
    nb_tensor *x = th_rand(NB_F64, 2, (int64_t[]){3, 4}, -2, 2);
    nb_set_requires_grad(x, true);
    int64_t tv[3] = {2, 0, 3};
    nb_tensor *t = nb_new(NB_I64, 1, (int64_t[]){3}, tv);
    nb_tensor *L = nb_cross_entropy(x, t);
    CHECK(nb_backward(L, NULL, 0) == 0);
    double xv[12], g[12], loss = 0;
    nb_read_f64(x, xv, 12);
    nb_read_f64(nb_grad(x), g, 12);
    for (int i = 0; i < 3; i++) {
        double m = -INFINITY, s = 0;
        for (int j = 0; j < 4; j++) m = fmax(m, xv[i * 4 + j]);
        for (int j = 0; j < 4; j++) s += exp(xv[i * 4 + j] - m);
        loss -= (xv[i * 4 + tv[i]] - m - log(s)) / 3;
        for (int j = 0; j < 4; j++)
            CHECK_CLOSE(g[i * 4 + j], (exp(xv[i * 4 + j] - m) / s - (j == tv[i])) / 3, 1e-15, 1e-12);
    }
    CHECK_CLOSE(nb_item(L), loss, 1e-15, 1e-12);
    nb_scope_end();
}

static void test_stability(void) {
    nb_scope_begin();
    for (int dt = 0; dt < 2; dt++) {
        nb_tensor *x = nb_from_f64(dt ? NB_F64 : NB_F32, 2, (int64_t[]){2, 3}, (double[]){1e4, -1e4, 0, -1e4, 3, 1e4});
        nb_set_requires_grad(x, true);
        nb_tensor *t = nb_from_f64(NB_I64, 1, (int64_t[]){2}, (double[]){1, 2});
        nb_tensor *L = nb_add(nb_add(nb_cross_entropy(x, t), nb_sum(nb_softmax(x, 1))),
                              nb_sum(nb_mul(nb_log_softmax(x, 0), nb_scalar(NB_F64, 0.5))));
        CHECK(isfinite(nb_item(L)));
        CHECK(nb_backward(L, NULL, 0) == 0);
        double g[6];
        nb_read_f64(nb_grad(x), g, 6);
        for (int i = 0; i < 6; i++) CHECK(isfinite(g[i]));
        CHECK_CLOSE(nb_item(nb_cross_entropy(x, t)), (2e4 + 0) / 2, 0, 1e-6);
    }
    nb_scope_end();
}

static void test_errors(void) {
    nb_scope_begin();
    nb_tensor *x = nb_full(NB_F64, 2, (int64_t[]){3, 4}, 0);
    nb_tensor *bad = nb_from_f64(NB_I64, 1, (int64_t[]){3}, (double[]){0, 4, -1});
    CHECK(nb_cross_entropy(x, bad) == NULL);
    CHECK_ERR("nb_cross_entropy: target 4 at index 1 is outside [0, 4)");
    CHECK(nb_nll_loss(x, nb_full(NB_F64, 1, (int64_t[]){3}, 0)) == NULL);
    CHECK_ERR("nb_nll_loss: targets (3,) must be i64 of shape (3,) for input (3,4)");
    CHECK(nb_cross_entropy(x, nb_new(NB_I64, 1, (int64_t[]){2}, NULL)) == NULL);
    CHECK_ERR("must be i64 of shape (3,)");
    CHECK(nb_cross_entropy(nb_full(NB_F64, 1, (int64_t[]){3}, 0), bad) == NULL);
    CHECK_ERR("nb_cross_entropy: input (3,) must have shape (N,C)");
    /* nb_cross_entropy_ex */
    nb_tensor *x3 = nb_full(NB_F64, 3, (int64_t[]){2, 3, 4}, 0);
    nb_tensor *t3 = nb_from_f64(NB_I64, 2, (int64_t[]){2, 3}, (double[]){0, 1, -100, 3, 4, 2});
    CHECK(nb_cross_entropy_ex(x3, t3, NULL) == NULL);
    CHECK_ERR("nb_cross_entropy_ex: target 4 at (1, 1) is outside [0, 4) and is not ignore_index -100");
    nb_ce_options o = {3, NB_REDUCE_MEAN, 0};
    CHECK(nb_cross_entropy_ex(x3, t3, &o) == NULL);
    CHECK_ERR("nb_cross_entropy_ex: target -100 at (0, 2) is outside [0, 4) and is not ignore_index 3");
    CHECK(nb_cross_entropy_ex(x, bad, NULL) == NULL);
    CHECK_ERR("nb_cross_entropy_ex: target 4 at (1) is outside [0, 4)");
    CHECK(nb_cross_entropy_ex(x3, bad, NULL) == NULL);
    CHECK_ERR("nb_cross_entropy_ex: targets (3,) must be i64 with the shape of logits (2,3,4) without its last (class) axis");
    CHECK(nb_cross_entropy_ex(x3, nb_full(NB_F64, 2, (int64_t[]){2, 3}, 0), NULL) == NULL);
    CHECK_ERR("must be i64 with the shape of logits");
    CHECK(nb_cross_entropy_ex(nb_scalar(NB_F64, 1), nb_scalar(NB_I64, 0), NULL) == NULL);
    CHECK_ERR("nb_cross_entropy_ex: logits () must have a class axis (last)");
    CHECK(nb_cross_entropy_ex(nb_full(NB_I64, 2, (int64_t[]){3, 4}, 0), bad, NULL) == NULL);
    CHECK_ERR("nb_cross_entropy_ex:");
    nb_ce_options bo = {-100, (nb_reduction)7, 0};
    CHECK(nb_cross_entropy_ex(x3, t3, &bo) == NULL);
    CHECK_ERR("nb_cross_entropy_ex: reduction 7 is not NB_REDUCE_MEAN, NB_REDUCE_SUM or NB_REDUCE_NONE");
    const double badeps[3] = {-0.1, 1.5, NAN};
    for (int i = 0; i < 3; i++) {
        nb_ce_options eo = {-100, NB_REDUCE_MEAN, badeps[i]};
        CHECK(nb_cross_entropy_ex(x3, t3, &eo) == NULL);
        CHECK_ERR("is outside [0, 1]");
    }
    CHECK(nb_cross_entropy_ex(NULL, t3, NULL) == NULL);
    CHECK_ERR("nb_cross_entropy_ex: argument 1 is NULL");
    CHECK(nb_softmax(x, 2) == NULL);
    CHECK_ERR("nb_softmax: axis 2 is out of range for a tensor (3,4) of rank 2");
    CHECK(nb_log_softmax(nb_scalar(NB_F64, 1), 0) == NULL);
    CHECK_ERR("nb_log_softmax: axis 0 is out of range");
    CHECK(nb_softmax(NULL, 0) == NULL);
    CHECK_ERR("nb_softmax: argument 1 is NULL");
    nb_scope_end();
}

/* The first-order cross-entropy backward is one fused pass; with
   NB_CREATE_GRAPH the rule is built from ops. Same gradient to rounding, in
   f32 and f64, on a transposed (strided) input too. */
static void test_cross_entropy_fused_backward(void) {
    for (int dt = 0; dt < 2; dt++)
        for (int strided = 0; strided < 2; strided++) {
            nb_scope_begin();
            nb_dtype t = dt ? NB_F64 : NB_F32;
            nb_tensor *base = th_rand(t, 2, strided ? (int64_t[]){10, 37} : (int64_t[]){37, 10}, -4, 4);
            nb_tensor *x = strided ? nb_transpose(base, 0, 1) : base;
            double tv[37];
            for (int i = 0; i < 37; i++) tv[i] = (double)((i * 7) % 10);
            nb_tensor *tg = nb_from_f64(NB_I64, 1, (int64_t[]){37}, tv);
            nb_set_requires_grad(base, true);
            nb_tensor *L = nb_scale(nb_cross_entropy(x, tg), 3.0); /* a seed other than 1 */
            nb_tensor *fused = NULL, *comp = NULL;
            CHECK(nb_gradients(L, NULL, 1, &base, NB_RETAIN_GRAPH, &fused) == 0);
            CHECK(nb_gradients(L, NULL, 1, &base, NB_CREATE_GRAPH, &comp) == 0);
            double worst = 0;
            for (int64_t i = 0; fused && comp && i < nb_numel(base); i++) {
                int64_t idx[2] = {i / nb_shape(base)[1], i % nb_shape(base)[1]};
                double e = fabs(nb_get(fused, idx) - nb_get(comp, idx));
                if (e > worst) worst = e;
            }
            CHECK(fused && comp && worst < (dt ? 1e-15 : 1e-7));
            nb_scope_end();
        }
}

/* A backward that releases its graph writes the f32 cross-entropy gradient over the exps the forward kept: the
   same bits as a retained graph's backward (which keeps them), through a graph whose first backward retained it
   and whose second released it (a third is the released graph's clean error), and through a fresh graph; a
   backward that fails after the rule wrote over them and is run again: test_backward_oom. */
static void test_cross_entropy_grad_over_exps(void) {
    nb_scope_begin();
    nb_tensor *x = th_rand(NB_F32, 2, (int64_t[]){33, 300}, -6, 6);
    double tv[33];
    for (int i = 0; i < 33; i++) tv[i] = (double)((i * 37) % 300);
    nb_tensor *tg = nb_from_f64(NB_I64, 1, (int64_t[]){33}, tv);
    nb_set_requires_grad(x, true);
    nb_tensor *L = nb_cross_entropy(x, tg);
    nb_tensor *kept = NULL, *over = NULL, *again = NULL;
    CHECK(nb_gradients(L, NULL, 1, &x, NB_RETAIN_GRAPH, &kept) == 0);
    CHECK(nb_gradients(L, NULL, 1, &x, 0, &over) == 0);
    CHECK(kept && over && memcmp(nb_data(kept), nb_data(over), sizeof(float) * 33 * 300) == 0);
    CHECK(nb_gradients(L, NULL, 1, &x, 0, &again) != 0 && again == NULL && strstr(nb_last_error(), "released"));
    nb_clear_error();
    nb_tensor *L2 = nb_cross_entropy(x, tg); /* released at once: the same bits again */
    CHECK(nb_backward(L2, NULL, 0) == 0);
    CHECK(memcmp(nb_data(nb_grad(x)), nb_data(kept), sizeof(float) * 33 * 300) == 0);
    nb_scope_end();
}

/* The f32 ulp of v: 2^(exponent - 23), 2^-149 for subnormals and 0. */
static double ulp32(double v) {
    v = fabs(v);
    if (!(v >= 0x1p-126)) return 0x1p-149;
    return ldexp(1.0, ilogb(v) - 23);
}

/* |got - want| in f32 ulps of want (0 when both are the same NaN or infinity). */
static double ulps(double got, double want) {
    if (got == want || (isnan(got) && isnan(want))) return 0;
    if (!isfinite(got) || !isfinite(want)) return INFINITY;
    return fabs(got - want) / ulp32(want);
}

/* f32 softmax rows compute their exps in f32 (docs/OPS.md, "f32 accuracy"): against the computation in double
   (not rounded), softmax and the cross-entropy gradient are within 6.8 ulp, log-softmax 3.7 ulp and the mean
   loss 3.7 ulp (log-softmax plus n 2^-52 absolute, for the rounding of the
   double sums: next to 0 an ulp is tiny), over arguments from 0 down to past exp's underflow (rows of 1..37 values and some long ones,
   200 rows per length), plus -inf and a NaN row (exact: NaN, 0). The gradient at the target, p_t - 1, may
   lose to cancellation as the double formula does: there (n + 8) 2^-53 |gs| absolute is allowed on top (the
   double sum of the row's n exps, whose rounding the max's exact 1 dominates where 1 - p_t is tiny). */
static void test_f32_rows_within_bound(void) {
    double worst_sm = 0, worst_lsm = 0, worst_g = 0, worst_l = 0;
    int bad = 0;
    for (int64_t n = 1; n <= 45; n++) {
        const int64_t len = n <= 37 ? n : (n - 37) * 300; /* then rows of 300 .. 2400 */
        nb_scope_begin();
        const int64_t rows = n <= 37 ? 200 : 20;
        double *v = malloc(sizeof(double) * (size_t)(rows * len)), *tv = malloc(sizeof(double) * (size_t)rows);
        double *got = malloc(sizeof(double) * (size_t)(rows * len)), *gg = malloc(sizeof(double) * (size_t)(rows * len));
        double *gl = malloc(sizeof(double) * (size_t)(rows * len));
        for (int64_t i = 0; i < rows * len; i++) /* spreads from 1 to 800 so that x - max reaches -745 and beyond */
            v[i] = (double)(float)(th_uniform(-1, 1) * (double)(1 << (i % 10)) * (i % 7 == 0 ? 0.78 : 0.01));
        if (len > 2) v[3] = -INFINITY;
        for (int64_t i = 0; i < rows; i++) tv[i] = (double)(i % len);
        nb_tensor *x = nb_from_f64(NB_F32, 2, (int64_t[]){rows, len}, v), *t = nb_from_f64(NB_I64, 1, (int64_t[]){rows}, tv);
        nb_set_requires_grad(x, true);
        nb_tensor *L = nb_cross_entropy(x, t);
        CHECK(nb_backward(L, NULL, 0) == 0);
        nb_read_f64(nb_softmax(x, 1), got, rows * len);
        nb_read_f64(nb_log_softmax(x, 1), gl, rows * len);
        nb_read_f64(nb_grad(x), gg, rows * len);
        double loss = 0;
        const double gs = 1.0 / (double)rows;
        for (int64_t i = 0; i < rows; i++) {
            const double *r = v + i * len;
            double m = -INFINITY, s = 0;
            for (int64_t k = 0; k < len; k++) m = fmax(m, r[k]);
            for (int64_t k = 0; k < len; k++) s += exp(r[k] - m);
            loss -= (r[(int64_t)tv[i]] - m) - log(s);
            for (int64_t k = 0; k < len; k++) {
                const int64_t at = i * len + k;
                const double p = exp(r[k] - m) / s, lp = (r[k] - m) - log(s), dg = gs * (p - (k == (int64_t)tv[i]));
                /* log-softmax: n 2^-52 absolute on top, for the double sums' rounding (a max element's lp ~ 0) */
                const double e1 = ulps(got[at], p),
                             e2 = ulps(fabs(gl[at] - lp) <= (double)len * 0x1p-52 ? lp : gl[at], lp);
                const double e3 = k == (int64_t)tv[i] ? ulps(fabs(gg[at] - dg) <= (double)(len + 8) * 0x1p-53 * gs ? dg : gg[at], dg)
                                                      : ulps(gg[at], dg);
                worst_sm = fmax(worst_sm, e1), worst_lsm = fmax(worst_lsm, e2), worst_g = fmax(worst_g, e3);
                bad += !(e1 <= 6.8) + !(e2 <= 3.7) + !(e3 <= 6.8);
                bad += r[k] == -INFINITY && (got[at] != 0 || gl[at] != -INFINITY); /* exact: 0 and -inf */
            }
        }
        worst_l = fmax(worst_l, ulps(nb_item(L), loss / (double)rows));
        free(v), free(tv), free(got), free(gg), free(gl);
        nb_scope_end();
    }
    CHECK(bad == 0);
    CHECK(worst_l <= 3.7);
    if (getenv("NABLA_TEST_VERBOSE"))
        fprintf(stderr, "f32 rows, worst ulps: softmax %.3f log-softmax %.3f grad %.3f loss %.3f\n", worst_sm,
                worst_lsm, worst_g, worst_l);
    nb_scope_begin();
    double nanrow[3], one, lrow[3], allinf[2];
    nb_read_f64(nb_softmax(nb_from_f64(NB_F32, 2, (int64_t[]){1, 3}, (double[]){1, NAN, 2}), 1), nanrow, 3);
    CHECK(isnan(nanrow[0]) && isnan(nanrow[1]) && isnan(nanrow[2]));
    nb_read_f64(nb_log_softmax(nb_from_f64(NB_F32, 2, (int64_t[]){1, 3}, (double[]){1, NAN, 2}), 1), lrow, 3);
    CHECK(isnan(lrow[0]) && isnan(lrow[1]) && isnan(lrow[2]));
    /* a lone NaN: exp(NaN - NaN) must be NaN, not a clamped finite value that would divide to 1 */
    nb_read_f64(nb_softmax(nb_from_f64(NB_F32, 2, (int64_t[]){1, 1}, (double[]){NAN}), 1), &one, 1);
    CHECK(isnan(one));
    /* a row of -inf: NaN, as PyTorch */
    nb_read_f64(nb_softmax(nb_from_f64(NB_F32, 2, (int64_t[]){1, 2}, (double[]){-INFINITY, -INFINITY}), 1), allinf, 2);
    CHECK(isnan(allinf[0]) && isnan(allinf[1]));
    /* +inf: inf - inf is NaN */
    nb_read_f64(nb_softmax(nb_from_f64(NB_F32, 2, (int64_t[]){1, 2}, (double[]){INFINITY, 1}), 1), allinf, 2);
    CHECK(isnan(allinf[0]) && isnan(allinf[1]));
    nb_scope_end();
}

int main(void) {
    th_seed(7);
    RUN(test_gradcheck_softmax);
    RUN(test_gradcheck_losses);
    RUN(test_gradcheck_cross_entropy_ex);
    RUN(test_cross_entropy_ex_values);
    RUN(test_cross_entropy_ex_alloc_failures);
    RUN(test_cross_entropy_closed_form);
    RUN(test_cross_entropy_fused_backward);
    RUN(test_cross_entropy_grad_over_exps);
    RUN(test_stability);
    RUN(test_f32_rows_within_bound);
    RUN(test_errors);
    return th_finish();
}

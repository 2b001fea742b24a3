/*
 * test_gradcheck.c - every op of the core checked with nb_gradcheck against
 * central differences in f64, first and second order: random shapes with
 * size-1 axes, broadcasting in each operand position, non-contiguous inputs
 * (transposed and sliced views), reductions over each axis with and without
 * keepdim, and batched matmul with broadcast batch axes.
 */
#include "harness.h"

typedef nb_tensor *(*un_fn)(nb_tensor *);
typedef nb_tensor *(*bin_fn)(nb_tensor *, nb_tensor *);

typedef struct {
    un_fn un;
    bin_fn bin;
    int axes[4], naxes;
    bool keepdim;
    double c;
    int kind;
} spec;

enum { K_UN, K_BIN, K_SUM, K_MEAN, K_MAX, K_PERMUTE, K_TRANSPOSE, K_SLICE, K_RESHAPE, K_EXPAND, K_CONCAT,
       K_LEAKY, K_POW, K_SCALE, K_ADDC, K_WHERE, K_TO32, K_DENSE,
       K_TRIL, K_TRIU, K_MASKED_FILL, K_TOPK /* transformer ops */ };

static nb_tensor *apply(int n, nb_tensor *const *in, void *ud) {
    const spec *s = ud;
    nb_tensor *a = in[0];
    switch (s->kind) {
    case K_UN: return s->un(a);
    case K_BIN: return s->bin(a, in[1]);
    case K_SUM: return nb_sum_axes(a, s->naxes, s->naxes ? s->axes : NULL, s->keepdim);
    case K_MEAN: return nb_mean_axes(a, s->naxes, s->naxes ? s->axes : NULL, s->keepdim);
    case K_MAX: return nb_max_axes(a, s->naxes, s->naxes ? s->axes : NULL, s->keepdim);
    case K_PERMUTE: return nb_permute(a, s->axes);
    case K_TRANSPOSE: return nb_transpose(a, s->axes[0], s->axes[1]);
    case K_SLICE: return nb_slice(a, s->axes[0], s->axes[1], s->axes[2]);
    case K_RESHAPE: return nb_reshape(a, 2, (int64_t[]){-1, s->axes[0]});
    case K_EXPAND: return nb_expand(a, 3, (int64_t[]){2, 3, 4});
    case K_CONCAT: return nb_concat(n, in, s->axes[0]);
    case K_LEAKY: return nb_leaky_relu(a, s->c);
    case K_POW: return nb_pow(a, s->c);
    case K_SCALE: return nb_scale(a, s->c);
    case K_ADDC: return nb_add_scalar(a, s->c);
    case K_WHERE: {
        nb_tensor *cond = nb_gt(nb_sin(nb_scale(nb_detach(a), 7.0)), nb_scalar(NB_F64, 0));
        return nb_where(cond, nb_mul(a, in[1]), nb_exp(in[1]));
    }
    case K_TO32: return nb_to(nb_mul(nb_to(a, NB_F32), nb_to(a, NB_F32)), NB_F64);
    case K_DENSE: return nb_dense(a, in[1], n > 2 ? in[2] : NULL, (nb_act)s->c);
    /* transformer ops: the mask of masked_fill is a constant from the values of a (sin 7a > 0), broadcast
       along the first axis */
    case K_TRIL: return nb_tril(a, (int64_t)s->c);
    case K_TRIU: return nb_triu(a, (int64_t)s->c);
    case K_MASKED_FILL: {
        nb_tensor *m = nb_gt(nb_sin(nb_scale(nb_sum_axes(nb_detach(a), 1, (int[]){0}, true), 7.0)),
                             nb_scalar(NB_F64, 0));
        return nb_mul(nb_masked_fill(a, nb_to(m, NB_I64), s->c), a);
    }
    case K_TOPK: { /* c: k; axes[0]: axis; keepdim: largest; squared, so that the second order is not 0 */
        nb_tensor *v = NULL;
        if (nb_topk(a, (int64_t)s->c, s->axes[0], s->keepdim, &v, NULL) != 0) return NULL;
        return nb_mul(v, v);
    }
    }
    return NULL;
}

/* Inputs of a given shape in one of three layouts: 0 contiguous, 1 a transposed
   view (last two axes), 2 a slice of a wider tensor. Values in [lo, hi), away from
   0 by at least `gap` when gap > 0 (kinks of relu, abs; poles of div). */
static nb_tensor *make_input(int rank, const int64_t *shape, int layout, double lo, double hi, double gap) {
    int64_t s[NB_MAX_RANK];
    for (int i = 0; i < rank; i++) s[i] = shape[i];
    nb_tensor *base;
    if (layout == 1 && rank >= 2) {
        int64_t t = s[rank - 1];
        s[rank - 1] = s[rank - 2];
        s[rank - 2] = t;
        base = th_rand(NB_F64, rank, s, lo, hi);
    } else if (layout == 2 && rank >= 1) {
        s[rank - 1] += 3;
        base = th_rand(NB_F64, rank, s, lo, hi);
    } else {
        base = th_rand(NB_F64, rank, s, lo, hi);
    }
    if (gap > 0) {
        double *d = nb_data(base);
        for (int64_t i = 0; i < nb_numel(base); i++)
            if (fabs(d[i]) < gap) d[i] = d[i] < 0 ? -gap - 0.1 : gap + 0.1;
    }
    nb_set_requires_grad(base, true);
    if (layout == 1 && rank >= 2) return nb_transpose(base, -1, -2);
    if (layout == 2 && rank >= 1) return nb_slice(base, rank - 1, 1, 1 + shape[rank - 1]);
    return base;
}

static int checks_run;

static void run_check(const char *what, spec *s, int n, nb_tensor **in) {
    nb_gradcheck_opts o = {0};
    o.second_order = true;
    nb_gradcheck_result r;
    int rc = nb_gradcheck(apply, s, n, in, &o, &r);
    if (rc == 0) CHECK(r.passed && r.worst_ratio <= 1 && r.excess <= 0);
    checks_run++;
    if (rc != 0) {
        th_cur_failed++;
        fprintf(stderr, "gradcheck %s: rc %d order %d input %d index %lld analytic %.10g numeric %.10g (%s)\n", what,
                rc, r.order, r.input, (long long)r.index, r.analytic, r.numeric,
                nb_last_error() ? nb_last_error() : "");
        nb_clear_error();
    }
}

static const struct {
    const char *name;
    un_fn f;
    double lo, hi, gap;
} unaries[] = {
    {"neg", nb_neg, -2, 2, 0},        {"exp", nb_exp, -2, 2, 0},         {"log", nb_log, 0.2, 3, 0},
    {"sqrt", nb_sqrt, 0.2, 3, 0},     {"abs", nb_abs, -2, 2, 0.05},      {"sin", nb_sin, -3, 3, 0},
    {"cos", nb_cos, -3, 3, 0},        {"tanh", nb_tanh, -2, 2, 0},       {"sigmoid", nb_sigmoid, -4, 4, 0},
    {"relu", nb_relu, -2, 2, 0.05},   {"gelu", nb_gelu, -3, 3, 0},       {"erf", nb_erf, -2, 2, 0},
    {"clone", nb_clone, -2, 2, 0},    {"contiguous", nb_contiguous, -2, 2, 0},
    {"gelu_tanh", nb_gelu_tanh, -4, 4, 0}, /* transformer ops */
};

static const int64_t shapes[][4] = {{3, 4}, {1, 3, 1}, {2, 1, 3}, {5, 0}};
static const int shape_rank[] = {2, 3, 3, 1};

static void test_unary(void) {
    for (size_t u = 0; u < sizeof unaries / sizeof unaries[0]; u++)
        for (int sh = 0; sh < 3; sh++)
            for (int layout = 0; layout < 3; layout++) {
                nb_scope_begin();
                spec s = {.un = unaries[u].f, .kind = K_UN};
                nb_tensor *x = make_input(shape_rank[sh], shapes[sh], layout, unaries[u].lo, unaries[u].hi,
                                          unaries[u].gap);
                run_check(unaries[u].name, &s, 1, &x);
                nb_scope_end();
            }
    /* scalar-parameter ops */
    struct {
        int kind;
        double c, lo, hi, gap;
    } ps[] = {{K_LEAKY, 0.01, -2, 2, 0.05}, {K_LEAKY, 0.3, -2, 2, 0.05}, {K_POW, 2, -2, 2, 0},
              {K_POW, 3, -2, 2, 0},        {K_POW, 0.5, 0.3, 2, 0},     {K_POW, -1, 0.3, 2, 0},
              {K_POW, 1.7, 0.3, 2, 0},     {K_POW, 0, -2, 2, 0},        {K_POW, -2.5, 0.3, 2, 0},
              {K_SCALE, -1.5, -2, 2, 0},   {K_ADDC, 4, -2, 2, 0},       {K_TO32, 0, -1, 1, 0}};
    for (size_t i = 0; i < sizeof ps / sizeof ps[0]; i++)
        for (int layout = 0; layout < 3; layout++) {
            nb_scope_begin();
            spec s = {.kind = ps[i].kind, .c = ps[i].c};
            nb_tensor *x = make_input(2, (int64_t[]){3, 4}, layout, ps[i].lo, ps[i].hi, ps[i].gap);
            if (ps[i].kind == K_TO32) {
                /* f32 in the middle: loose tolerances (f32 rounding), still f64 at the ends */
                nb_gradcheck_opts o = {.eps = 1e-3, .atol = 1e-3, .rtol = 1e-2, .second_order = true};
                CHECK(nb_gradcheck(apply, &s, 1, &x, &o, NULL) == 0);
            } else {
                run_check("scalar-param op", &s, 1, &x);
            }
            nb_scope_end();
        }
}

static void test_binary(void) {
    struct {
        const char *name;
        bin_fn f;
        double alo, ahi, blo, bhi, bgap;
    } ops[] = {{"add", nb_add, -2, 2, -2, 2, 0},  {"sub", nb_sub, -2, 2, -2, 2, 0},
               {"mul", nb_mul, -2, 2, -2, 2, 0},  {"div", nb_div, -2, 2, -2, 2, 0.3},
               {"pow_t", nb_pow_t, 0.3, 2, -2, 2, 0}};
    /* shape pairs: same, row broadcast, both broadcast, missing leading axes, rank 0 */
    struct {
        int ra, rb;
        int64_t a[3], b[3];
    } pairs[] = {{2, 2, {3, 4}, {3, 4}},    {2, 1, {3, 4}, {4}},       {1, 2, {4}, {3, 4}},
                 {2, 2, {3, 1}, {1, 4}},    {3, 2, {2, 1, 4}, {3, 1}}, {2, 3, {3, 1}, {2, 1, 4}},
                 {0, 2, {0}, {2, 3}},       {2, 0, {2, 3}, {0}},       {3, 3, {1, 3, 1}, {2, 1, 1}}};
    for (size_t o = 0; o < sizeof ops / sizeof ops[0]; o++)
        for (size_t p = 0; p < sizeof pairs / sizeof pairs[0]; p++)
            for (int layout = 0; layout < 2; layout++) {
                nb_scope_begin();
                spec s = {.bin = ops[o].f, .kind = K_BIN};
                nb_tensor *in[2] = {make_input(pairs[p].ra, pairs[p].a, layout, ops[o].alo, ops[o].ahi, 0),
                                    make_input(pairs[p].rb, pairs[p].b, layout == 1 ? 2 : 0, ops[o].blo,
                                               ops[o].bhi, ops[o].bgap)};
                run_check(ops[o].name, &s, 2, in);
                nb_scope_end();
            }
    /* where: both branches and broadcasting of the selected values */
    nb_scope_begin();
    spec w = {.kind = K_WHERE};
    nb_tensor *in[2] = {make_input(2, (int64_t[]){3, 4}, 1, -2, 2, 0), make_input(1, (int64_t[]){4}, 0, -1, 1, 0)};
    run_check("where", &w, 2, in);
    nb_scope_end();
}

static void test_reductions(void) {
    int kinds[3] = {K_SUM, K_MEAN, K_MAX};
    int64_t shape[3] = {2, 3, 4};
    int axsets[][3] = {{0}, {1}, {2}, {-1}, {0, 2}, {-1, 0}, {0, 1, 2}};
    int naxs[] = {1, 1, 1, 1, 2, 2, 3};
    for (int k = 0; k < 3; k++)
        for (size_t a = 0; a < sizeof naxs / sizeof naxs[0] + 1; a++)
            for (int keep = 0; keep < 2; keep++)
                for (int layout = 0; layout < 2; layout++) {
                    nb_scope_begin();
                    spec s = {.kind = kinds[k], .keepdim = keep};
                    if (a < sizeof naxs / sizeof naxs[0]) {
                        s.naxes = naxs[a];
                        for (int i = 0; i < naxs[a]; i++) s.axes[i] = axsets[a][i];
                    }
                    nb_tensor *x = make_input(3, shape, layout, -2, 2, 0);
                    run_check("reduction", &s, 1, &x);
                    nb_scope_end();
                }
    /* sum and mean of everything, and a size-1 axis */
    nb_scope_begin();
    spec s1 = {.un = nb_sum, .kind = K_UN}, s2 = {.un = nb_mean, .kind = K_UN};
    nb_tensor *x = make_input(3, (int64_t[]){1, 3, 1}, 0, -2, 2, 0);
    run_check("sum", &s1, 1, &x);
    run_check("mean", &s2, 1, &x);
    nb_scope_end();
}

static void test_shape_ops(void) {
    nb_scope_begin();
    int64_t shape[3] = {2, 3, 4};
    for (int layout = 0; layout < 3; layout++) {
        spec p = {.kind = K_PERMUTE, .axes = {2, 0, 1}};
        spec t = {.kind = K_TRANSPOSE, .axes = {0, -1}};
        spec sl = {.kind = K_SLICE, .axes = {1, 1, 3}};
        spec sl2 = {.kind = K_SLICE, .axes = {-1, -3, 4}};
        spec r = {.kind = K_RESHAPE, .axes = {6}};
        nb_tensor *x = make_input(3, shape, layout, -2, 2, 0);
        run_check("permute", &p, 1, &x);
        run_check("transpose", &t, 1, &x);
        run_check("slice", &sl, 1, &x);
        run_check("slice negative", &sl2, 1, &x);
        run_check("reshape", &r, 1, &x);
    }
    spec e = {.kind = K_EXPAND};
    nb_tensor *x1 = make_input(2, (int64_t[]){3, 1}, 0, -2, 2, 0);
    run_check("expand", &e, 1, &x1);
    for (int ax = -1; ax < 3; ax++) {
        spec c = {.kind = K_CONCAT, .axes = {ax}};
        int a = ax < 0 ? 2 : ax;
        int64_t s0[3] = {2, 3, 4}, s1[3] = {2, 3, 4}, s2[3] = {2, 3, 4};
        s1[a] = 1;
        s2[a] = 2;
        nb_tensor *in[3] = {make_input(3, s0, 0, -2, 2, 0), make_input(3, s1, 1, -2, 2, 0),
                            make_input(3, s2, 2, -2, 2, 0)};
        run_check("concat", &c, 3, in);
        if (ax == 2) break;
    }
    nb_scope_end();
}

static void test_matmul(void) {
    struct {
        int ra, rb;
        int64_t a[4], b[4];
    } cases[] = {{2, 2, {3, 4}, {4, 5}},           {1, 2, {4}, {4, 5}},        {2, 1, {3, 4}, {4}},
                 {1, 1, {4}, {4}},                 {3, 2, {2, 3, 4}, {4, 5}},  {2, 3, {3, 4}, {2, 4, 5}},
                 {4, 3, {2, 1, 3, 4}, {5, 4, 2}},  {3, 1, {2, 3, 4}, {4}},     {1, 3, {4}, {2, 4, 3}},
                 {3, 3, {1, 1, 4}, {3, 4, 1}}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (int layout = 0; layout < 3; layout++) {
            nb_scope_begin();
            spec s = {.bin = nb_matmul, .kind = K_BIN};
            nb_tensor *in[2] = {make_input(cases[c].ra, cases[c].a, layout, -1, 1, 0),
                                make_input(cases[c].rb, cases[c].b, (layout + 1) % 3, -1, 1, 0)};
            run_check("matmul", &s, 2, in);
            nb_scope_end();
        }
}

/* The checker itself: it catches a wrong gradient, reports where, and refuses f32. */
/* The fused dense layer for every activation, with and without bias, on x of
   rank 1, 2 (in each layout) and 3; relu's inputs stay away from its kink. */
static void test_dense(void) {
    struct {
        int rx;
        int64_t x[3];
    } cases[] = {{2, {3, 4}}, {1, {4}}, {3, {2, 3, 4}}};
    for (int act = NB_ACT_NONE; act <= NB_ACT_SIGMOID; act++)
        for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
            for (int layout = 0; layout < 3; layout++)
                for (int bias = 0; bias < 2; bias++) {
                    nb_scope_begin();
                    spec s = {.kind = K_DENSE, .c = act};
                    nb_tensor *in[3] = {make_input(cases[c].rx, cases[c].x, layout, -1, 1, 0),
                                        make_input(2, (int64_t[]){5, 4}, (layout + 1) % 3, -1, 1, 0),
                                        make_input(1, (int64_t[]){5}, 0, -1, 1, 0)};
                    if (act == NB_ACT_RELU) { /* keep x w^T + b away from 0 */
                        nb_tensor *y = nb_dense(in[0], in[1], bias ? in[2] : NULL, NB_ACT_NONE);
                        double mn = 1;
                        for (int64_t i = 0; y && i < nb_numel(y); i++) {
                            int64_t idx[3] = {0}, r = i;
                            for (int d = nb_rank(y) - 1; d >= 0; d--) {
                                idx[d] = r % nb_shape(y)[d];
                                r /= nb_shape(y)[d];
                            }
                            double v = fabs(nb_get(y, idx));
                            if (v < mn) mn = v;
                        }
                        if (mn < 1e-3) {
                            nb_scope_end();
                            continue;
                        }
                    }
                    run_check("dense", &s, bias ? 3 : 2, in);
                    nb_scope_end();
                }
}

/* transformer ops: tril / triu with offsets on batches and views, topk's values and masked_fill (squared or
   times a, so that their second derivatives are not 0) */
static void test_transformer_ops(void) {
    const double ks[] = {0, 1, -1, 2, -3};
    for (int kind = K_TRIL; kind <= K_TRIU; kind++)
        for (size_t i = 0; i < sizeof ks / sizeof ks[0]; i++)
            for (int layout = 0; layout < 3; layout++) {
                nb_scope_begin();
                spec s = {.kind = kind, .c = ks[i]};
                nb_tensor *x = make_input(3, (int64_t[]){2, 3, 4}, layout, -2, 2, 0);
                run_check(kind == K_TRIL ? "tril" : "triu", &s, 1, &x);
                nb_scope_end();
            }
    for (int layout = 0; layout < 3; layout++)
        for (int largest = 0; largest < 2; largest++)
            for (int axis = -1; axis < 1; axis++) {
                nb_scope_begin();
                spec s = {.kind = K_TOPK, .c = 2, .keepdim = largest, .axes = {axis}};
                nb_tensor *x = make_input(2, (int64_t[]){3, 4}, layout, -2, 2, 0);
                run_check("topk", &s, 1, &x);
                nb_scope_end();
            }
    for (int layout = 0; layout < 3; layout++) {
        nb_scope_begin();
        spec s = {.kind = K_MASKED_FILL, .c = -1.5};
        nb_tensor *x = make_input(2, (int64_t[]){3, 4}, layout, -2, 2, 0);
        run_check("masked_fill", &s, 1, &x);
        nb_scope_end();
    }
}

static nb_tensor *half_detached(int n, nb_tensor *const *in, void *ud) {
    (void)n;
    (void)ud;
    return nb_mul(in[0], nb_detach(in[0])); /* analytic x, true 2x */
}

static void test_checker_catches(void) {
    nb_scope_begin();
    nb_tensor *x = nb_from_f64(NB_F64, 1, (int64_t[]){3}, (double[]){1, 2, 3});
    nb_gradcheck_result r;
    CHECK(nb_gradcheck(half_detached, NULL, 1, &x, NULL, &r) == 1);
    CHECK(!r.passed && r.input == 0 && r.order == 1);
    CHECK(r.worst_ratio > 1 && r.excess > 0);
    CHECK_CLOSE(r.numeric, 2 * (r.index + 1), 1e-6, 0);
    CHECK_CLOSE(r.analytic, r.index + 1, 1e-12, 0);
    CHECK(!nb_requires_grad(x)); /* restored */
    nb_tensor *x32 = nb_full(NB_F32, 1, (int64_t[]){3}, 1.0);
    CHECK(nb_gradcheck(half_detached, NULL, 1, &x32, NULL, &r) == -1);
    CHECK_ERR("is f32");
    nb_scope_end();
}

int main(void) {
    th_seed(42);
    RUN(test_unary);
    RUN(test_binary);
    RUN(test_reductions);
    RUN(test_shape_ops);
    RUN(test_matmul);
    RUN(test_dense);
    RUN(test_transformer_ops);
    RUN(test_checker_catches);
    printf("%d gradient checks\n", checks_run);
    return th_finish();
}

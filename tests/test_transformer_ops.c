/*
 * test_transformer_ops.c - gelu_tanh, randn / rand, arange, tril / triu, masked_fill and argmax beyond the
 * shared suites (gradient checks, PyTorch references, kernel sets, errors):
 *  - gelu_tanh in f32 against the exact function (long double) over a sweep of f32 inputs, on every
 *    instruction-set variant and through nb_gelu_tanh: within GT_F32_ULP (docs/OPS.md, "f32 accuracy"); in
 *    f64 within GT_F64_ULP(|u|); PyTorch's form 0.5 x (1 + tanh u) where it does not cancel; special values;
 *  - randn / rand: the stream order of backend.h (Box-Muller pairs), reproducibility from a seed, the mean
 *    and variance of a large sample, f32 the rounded f64 values;
 *  - arange, tril / triu (infinities above the diagonal become 0), masked_fill with -inf before a softmax
 *    (a causal attention mask: its gradient is 0 where filled), argmax (ties, NaN, keepdim, never recorded);
 *  - topk (order, ties, NaN, k = 0 and n, its gradient), multinomial (frequencies, zero-probability
 *    categories never drawn, one uniform per sample, reproducibility).
 */
#include <float.h>

#include "harness.h"
#include "vmath.h"

#define GT_F32_ULP 0.501
/* f64: the five roundings of u = sqrt(2/pi) (x + 0.044715 x^3) are amplified by e^(-2u): within 2 + 10|u| ulp
   (the function's own relative condition number is about 6|u| for large negative x) */
#define GT_F64_ULP(u) (2 + 10 * (u))

static long double gelu_tanh_exact(long double x) {
    const long double k = 0.797884560802865355879892119868763737L; /* sqrt(2/pi) */
    long double u = k * (x + 0.044715L * x * x * x);
    return x / (1.0L + expl(-2.0L * u));
}

/* |y - exact| in units of the last place of the dtype at exact (2^-149 / 2^-1074 below the normal range). */
static double ulps_f32(float y, long double e) {
    long double a = fabsl(e);
    int ex;
    frexpl(a, &ex);
    long double ulp = ldexpl(1.0L, (ex - 24 < -149 ? -149 : ex - 24));
    return (double)(fabsl((long double)y - e) / ulp);
}
static double ulps_f64(double y, long double e) {
    long double a = fabsl(e);
    int ex;
    frexpl(a, &ex);
    long double ulp = ldexpl(1.0L, (ex - 53 < -1074 ? -1074 : ex - 53));
    return (double)(fabsl((long double)y - e) / ulp);
}

static void test_gelu_tanh_f32_accuracy(void) {
    /* every 601st f32 bit pattern in [-12, 12], both signs (beyond, the result is x, -0 or NaN: see below) */
    int64_t n = 0, cap = (1 << 22) + 64;
    float *x = malloc(sizeof(float) * (size_t)cap), *y = malloc(sizeof(float) * (size_t)cap),
          *y2 = malloc(sizeof(float) * (size_t)cap);
    CHECK(x && y && y2);
    if (!x || !y || !y2) return;
    for (uint32_t b = 0; b <= 0x41400000u; b += 601) {
        float v;
        memcpy(&v, &b, sizeof v);
        x[n++] = v;
        x[n++] = -v;
    }
    const float extra[] = {1e-30f, -1e-30f, 1e-40f, -1e-40f, 100.0f, 1e10f, FLT_MAX, -11.0f, -10.6f, 0.0f};
    for (size_t i = 0; i < sizeof extra / sizeof extra[0]; i++) x[n++] = extra[i];
    double worst = 0;
    float wx = 0;
    nbi_vgelu_tanhf(y, x, n);
    for (int64_t i = 0; i < n; i++) {
        double u = ulps_f32(y[i], gelu_tanh_exact((long double)x[i]));
        if (u > worst) worst = u, wx = x[i];
    }
    printf("gelu_tanh f32: %lld inputs, worst %.4f ulp at x = %.9g (bound %g)\n", (long long)n, worst, (double)wx,
           GT_F32_ULP);
    CHECK(worst <= GT_F32_ULP);
    /* every instruction-set variant gives the same bits */
    for (int v = 0; v < 3; v++)
        if (nbi_vmath_variant(v, 6, y2, x, n)) CHECK(memcmp(y, y2, sizeof(float) * (size_t)n) == 0);
    /* nb_gelu_tanh on f32: these bits (the fast set) or the reference's double rounded once, as close */
    nb_scope_begin();
    nb_tensor *t = nb_new(NB_F32, 1, &n, x);
    nb_tensor *r = nb_gelu_tanh(t);
    const float *ry = r ? (const float *)nb_data(r) : NULL;
    CHECK(ry != NULL);
    int64_t far = 0;
    for (int64_t i = 0; ry && i < n; i++)
        if (ulps_f32(ry[i], gelu_tanh_exact((long double)x[i])) > GT_F32_ULP) far++;
    CHECK(far == 0);
    nb_scope_end();
    free(x);
    free(y);
    free(y2);
}

static void test_gelu_tanh_f64(void) {
    nb_scope_begin();
    enum { N = 20001 };
    double *x = malloc(sizeof(double) * N);
    for (int i = 0; i < N; i++) x[i] = -20.0 + 40.0 * i / (N - 1);
    nb_tensor *t = nb_from_f64(NB_F64, 1, (int64_t[]){N}, x);
    const double *y = nb_data(nb_gelu_tanh(t));
    double wx = 0, worst = 0, torch_diff = 0; /* worst: the largest error / GT_F64_ULP(|u|) */
    for (int i = 0; i < N; i++) {
        double uu = fabs(0.7978845608028654 * (x[i] + 0.044715 * x[i] * x[i] * x[i]));
        double u = ulps_f64(y[i], gelu_tanh_exact(x[i])) / GT_F64_ULP(uu);
        if (u > worst) worst = u, wx = x[i];
        /* PyTorch's form, where 1 + tanh u keeps its digits (x > -3) */
        if (x[i] > -3) {
            double k = 0.7978845608028654, tu = tanh(k * (x[i] + 0.044715 * x[i] * x[i] * x[i]));
            double d = fabs(y[i] - 0.5 * x[i] * (1 + tu));
            if (d > torch_diff) torch_diff = d;
        }
    }
    printf("gelu_tanh f64: worst %.3f of the bound 2 + 10|u| ulp at x = %.17g; PyTorch's form within %.3g for x > -3\n",
           worst, wx, torch_diff);
    CHECK(worst <= 1);
    CHECK(torch_diff <= 1e-15 * 20);
    free(x);
    nb_scope_end();
}

static void test_gelu_tanh_specials(void) {
    nb_scope_begin();
    const double xs[] = {INFINITY, -INFINITY, NAN, 0.0, -0.0, -30.0, -1e200, 1e200};
    for (int d = 0; d < 2; d++) {
        nb_dtype dt = d ? NB_F64 : NB_F32;
        nb_tensor *t = nb_from_f64(dt, 1, (int64_t[]){8}, xs);
        double y[8];
        CHECK(nb_read_f64(nb_gelu_tanh(t), y, 8) == 8);
        CHECK(y[0] == INFINITY);
        CHECK(isnan(y[1]) && isnan(y[2]));
        CHECK(y[3] == 0 && !signbit(y[3]));
        CHECK(y[4] == 0 && signbit(y[4]));
        CHECK(y[5] == 0 && signbit(y[5]));
        if (d) CHECK(y[6] == 0 && signbit(y[6])); /* x^3 overflows: still -0 */
        else CHECK(isnan(y[6]));                  /* -1e200 is -inf in f32 */
        CHECK(y[7] == (d ? 1e200 : INFINITY));
    }
    /* gradients: the limits 0 and 1 in the tails, on both rules (the composite one: up to x^2 overflowing) */
    nb_tensor *x = nb_from_f64(NB_F64, 1, (int64_t[]){4}, (double[]){-40.0, -1e200, 1e200, 40.0});
    nb_set_requires_grad(x, true);
    for (int create = 0; create < 2; create++) {
        nb_tensor *g = nb_gradient(nb_sum(nb_gelu_tanh(x)), x, create ? NB_CREATE_GRAPH : 0);
        double gv[4];
        CHECK(nb_read_f64(g, gv, 4) == 4);
        CHECK(gv[0] == 0 && gv[3] == 1);
        if (!create) CHECK(gv[1] == 0 && gv[2] == 1);
    }
    /* f32's fused gradient: e^(-2u) overflows to inf (s = 0, e s NaN) or underflows to 0 in the tails */
    nb_tensor *xf = nb_from_f64(NB_F32, 1, (int64_t[]){4}, (double[]){-100.0, -1e30, 1e30, 100.0});
    nb_set_requires_grad(xf, true);
    double gf[4];
    CHECK(nb_read_f64(nb_gradient(nb_sum(nb_gelu_tanh(xf)), xf, 0), gf, 4) == 4);
    CHECK(gf[0] == 0 && gf[1] == 0 && gf[2] == 1 && gf[3] == 1);
    nb_scope_end();
}

/* With a graph to build, f32 gelu_tanh keeps e^(-2u) for its gradient: the same output bits as without a graph,
   and a gradient within 4 ulp of the f64 gradient at the same points, over [-12, 12] and the tails (e^(-2u)
   past FLT_MAX where the gradient is a subnormal, and underflowing), and of a strided input's rule (the double
   formula with the C library's exp); ulps of the larger of the result and its first term g sigmoid(2u). */
static void test_gelu_tanh_kept_exps(void) {
    nb_scope_begin();
    enum { N = 4099 };
    double v[N];
    for (int i = 0; i < N; i++) v[i] = -12.0 + 24.0 * i / (N - 1);
    v[0] = -100, v[1] = 100, v[2] = -9.5, v[3] = 1e-30;
    nb_tensor *x = nb_from_f64(NB_F32, 1, (int64_t[]){N}, v), *w = th_rand(NB_F32, 1, (int64_t[]){N}, -1, 1);
    nb_tensor *y0 = nb_gelu_tanh(x); /* no graph: the unary op */
    nb_set_requires_grad(x, true);
    nb_tensor *y1 = nb_gelu_tanh(x);
    CHECK(y0 && y1 && memcmp(nb_data(y0), nb_data(y1), sizeof(float) * N) == 0);
    nb_tensor *gk = nb_gradient(nb_sum(nb_mul(y1, w)), x, 0); /* kept e */
    nb_tensor *x2 = nb_reshape(x, 2, (int64_t[]){1, N}), *xt = nb_transpose(nb_expand(x2, 2, (int64_t[]){2, N}), 0, 1);
    nb_tensor *wt = nb_transpose(nb_expand(nb_reshape(w, 2, (int64_t[]){1, N}), 2, (int64_t[]){2, N}), 0, 1);
    nb_tensor *gr = nb_gradient(nb_scale(nb_sum(nb_mul(nb_gelu_tanh(xt), wt)), 0.5), x, 0); /* strided: in double */
    nb_tensor *xd = nb_to(nb_detach(x), NB_F64), *wd = nb_to(w, NB_F64);
    nb_set_requires_grad(xd, true);
    nb_tensor *gd = nb_gradient(nb_sum(nb_mul(nb_gelu_tanh(xd), wd)), xd, 0); /* f64 */
    double a[N], b[N], c[N];
    CHECK(nb_read_f64(gk, a, N) == N && nb_read_f64(gr, b, N) == N && nb_read_f64(gd, c, N) == N);
    double worst = 0, apart = 0, wv[N];
    CHECK(nb_read_f64(w, wv, N) == N);
    for (int i = 0; i < N; i++) { /* ulps of the result or of its first term, g sigmoid(2u) (the root near -0.75) */
        const double xf = (double)(float)v[i], u = 0.7978845608028654 * (xf + 0.044715 * xf * xf * xf);
        const double ulp = fmax(fmax(fabs(c[i]), fabs(wv[i]) / (1.0 + exp(-2.0 * u))), 0x1p-126) * 0x1p-23;
        worst = fmax(worst, fabs(a[i] - c[i]) / ulp), apart = fmax(apart, fabs(a[i] - b[i]) / ulp);
    }
    printf("gelu_tanh f32 gradient from the kept exps: within %.2f ulp of f64's, %.2f of the strided input's rule\n",
           worst, apart);
    CHECK(worst <= 4);
    CHECK(apart <= 4);
    nb_scope_end();
}

/* Box-Muller as backend.h's normal slot states it, for pairs of nb_rng_uniform draws. */
static void expected_normal(uint64_t seed, double *z, int64_t n) {
    nb_rng r;
    nb_rng_seed(&r, seed);
    for (int64_t i = 0; i < n; i += 2) {
        double u1 = nb_rng_uniform(&r), u2 = nb_rng_uniform(&r);
        double rad = sqrt(-2 * log(1 - u1));
        z[i] = rad * cos(6.28318530717958647692 * u2);
        if (i + 1 < n) z[i + 1] = rad * sin(6.28318530717958647692 * u2);
    }
}

static void test_randn(void) {
    nb_scope_begin();
    nb_rng r, r2;
    nb_rng_seed(&r, 7);
    nb_tensor *a = nb_randn(NB_F64, 2, (int64_t[]){3, 5}, &r); /* 15: an odd count */
    double z[16], v[15];
    expected_normal(7, z, 15);
    CHECK(nb_read_f64(a, v, 15) == 15);
    for (int i = 0; i < 15; i++) CHECK(v[i] == z[i]);
    /* 8 pairs drawn: the stream continues after 16 uniforms */
    nb_rng_seed(&r2, 7);
    for (int i = 0; i < 16; i++) nb_rng_uniform(&r2);
    CHECK(r.state == r2.state);
    /* the same seed gives the same tensor; f32 holds the f64 values rounded */
    nb_rng_seed(&r, 7);
    nb_tensor *b = nb_randn(NB_F32, 1, (int64_t[]){15}, &r);
    CHECK(nb_read_f64(b, v, 15) == 15);
    for (int i = 0; i < 15; i++) CHECK(v[i] == (double)(float)z[i]);
    CHECK(!nb_requires_grad(b));
    /* moments of a large sample: mean 0, variance 1 (tolerances about 7 standard errors) */
    enum { N = 1000000 };
    nb_rng_seed(&r, 12345);
    nb_tensor *big = nb_randn(NB_F64, 1, (int64_t[]){N}, &r);
    const double *d = nb_data(big);
    double s = 0, s2 = 0;
    int64_t tail = 0;
    for (int i = 0; i < N; i++) s += d[i], s2 += d[i] * d[i], tail += fabs(d[i]) > 1.959963984540054;
    double mean = s / N, var = s2 / N - mean * mean;
    printf("randn: mean %.5f, variance %.5f, P(|z| > 1.96) %.5f over %d\n", mean, var, (double)tail / N, N);
    CHECK(fabs(mean) < 0.007);
    CHECK(fabs(var - 1) < 0.01);
    CHECK(fabs((double)tail / N - 0.05) < 0.0015);
    /* a different seed, different values; rank 0 and empty shapes */
    nb_rng_seed(&r, 12346);
    nb_tensor *other = nb_randn(NB_F64, 1, (int64_t[]){4}, &r);
    CHECK(nb_get(other, (int64_t[]){0}) != d[0]);
    nb_tensor *s0 = nb_randn(NB_F64, 0, NULL, &r);
    CHECK(s0 && nb_rank(s0) == 0 && isfinite(nb_item(s0)));
    uint64_t before = r.state;
    nb_tensor *e = nb_randn(NB_F32, 2, (int64_t[]){0, 3}, &r);
    CHECK(e && nb_numel(e) == 0 && r.state == before);
    nb_scope_end();
}

static void test_rand(void) {
    nb_scope_begin();
    nb_rng r, r2;
    nb_rng_seed(&r, 99);
    nb_rng_seed(&r2, 99);
    enum { N = 1000000 };
    nb_tensor *u = nb_rand(NB_F64, 1, (int64_t[]){N}, &r);
    const double *d = nb_data(u);
    double s = 0, s2 = 0, lo = 1, hi = 0;
    bool same = true;
    for (int i = 0; i < N; i++) {
        s += d[i], s2 += d[i] * d[i];
        lo = d[i] < lo ? d[i] : lo, hi = d[i] > hi ? d[i] : hi;
        if (i < 100) same = same && d[i] == nb_rng_uniform(&r2);
    }
    CHECK(same);
    CHECK(lo >= 0 && hi < 1);
    double mean = s / N, var = s2 / N - mean * mean;
    CHECK(fabs(mean - 0.5) < 0.002 && fabs(var - 1.0 / 12) < 0.001);
    nb_tensor *f = nb_rand(NB_F32, 2, (int64_t[]){4, 4}, &r);
    CHECK(f && nb_dtype_of(f) == NB_F32);
    nb_scope_end();
}

static void expect(nb_tensor *t, int64_t n, const double *want) {
    double v[64];
    CHECK(t != NULL && nb_numel(t) == n && nb_rank(t) == 1);
    if (!t || nb_numel(t) != n) return;
    CHECK(nb_read_f64(t, v, n) == n);
    for (int64_t i = 0; i < n; i++) CHECK(v[i] == want[i]);
}

static void test_arange(void) {
    nb_scope_begin();
    expect(nb_arange(NB_I64, 0, 5, 1), 5, (double[]){0, 1, 2, 3, 4});
    expect(nb_arange(NB_F32, 1, 2, 0.25), 4, (double[]){1, 1.25, 1.5, 1.75});
    expect(nb_arange(NB_F64, 5, -4.5, -1.5), 7, (double[]){5, 3.5, 2, 0.5, -1, -2.5, -4});
    expect(nb_arange(NB_I64, 10, -7, -3), 6, (double[]){10, 7, 4, 1, -2, -5});
    expect(nb_arange(NB_I64, 0.5, 3, 1), 3, (double[]){0, 1, 2}); /* 0.5, 1.5, 2.5 truncated */
    nb_tensor *e = nb_arange(NB_F64, 2, 2, 1);
    CHECK(e && nb_numel(e) == 0 && nb_rank(e) == 1);
    CHECK(nb_dtype_of(nb_arange(NB_I64, 0, 3, 1)) == NB_I64);
    /* a causal mask from arange: (T, 1) >= (1, T) */
    nb_tensor *i = nb_arange(NB_F64, 0, 4, 1);
    nb_tensor *causal = nb_lt(nb_reshape(i, 2, (int64_t[]){1, 4}), nb_add_scalar(nb_reshape(i, 2, (int64_t[]){4, 1}), 1));
    CHECK(nb_get(causal, (int64_t[]){2, 2}) == 1 && nb_get(causal, (int64_t[]){1, 2}) == 0);
    nb_scope_end();
}

static void test_tril_triu(void) {
    nb_scope_begin();
    /* infinities and NaNs where zeroed become exact zeros, as torch.tril */
    nb_tensor *x = nb_from_f64(NB_F64, 2, (int64_t[]){3, 3}, (double[]){1, INFINITY, NAN, 4, 5, -INFINITY, 7, 8, 9});
    double v[9];
    CHECK(nb_read_f64(nb_tril(x, 0), v, 9) == 9);
    const double lo[] = {1, 0, 0, 4, 5, 0, 7, 8, 9};
    for (int i = 0; i < 9; i++) CHECK(v[i] == lo[i]);
    CHECK(nb_read_f64(nb_triu(x, 1), v, 9) == 9);
    CHECK(isinf(v[1]) && isnan(v[2]) && isinf(v[5]) && v[0] == 0 && v[3] == 0 && v[4] == 0 && v[8] == 0);
    /* offsets beyond the matrix: everything or nothing kept */
    nb_tensor *ones = nb_full(NB_F32, 3, (int64_t[]){2, 3, 4}, 1);
    CHECK(nb_item(nb_sum(nb_tril(ones, 100))) == 24 && nb_item(nb_sum(nb_tril(ones, -100))) == 0);
    CHECK(nb_item(nb_sum(nb_triu(ones, INT64_MIN))) == 24 && nb_item(nb_sum(nb_triu(ones, INT64_MAX))) == 0);
    CHECK(nb_item(nb_sum(nb_tril(ones, 0))) == 2 * (1 + 2 + 3)); /* (3, 4): 1 + 2 + 3 per batch */
    CHECK(nb_dtype_of(nb_tril(ones, 0)) == NB_F32);
    /* empty matrices */
    nb_tensor *e = nb_tril(nb_full(NB_F64, 2, (int64_t[]){0, 3}, 1), 0);
    CHECK(e && nb_numel(e) == 0);
    nb_scope_end();
}

static void test_masked_fill(void) {
    nb_scope_begin();
    /* causal attention: scores masked with -inf above the diagonal, then softmax along the last axis */
    nb_tensor *s = th_rand(NB_F64, 2, (int64_t[]){4, 4}, -1, 1);
    nb_set_requires_grad(s, true);
    nb_tensor *keep = nb_tril(nb_full(NB_F64, 2, (int64_t[]){4, 4}, 1), 0);
    nb_tensor *above = nb_eq(keep, nb_scalar(NB_F64, 0));
    nb_tensor *p = nb_softmax(nb_masked_fill(s, above, -INFINITY), 1);
    double pv[16];
    CHECK(nb_read_f64(p, pv, 16) == 16);
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) CHECK(j > i ? pv[i * 4 + j] == 0 : pv[i * 4 + j] > 0);
    CHECK(pv[0] == 1);
    nb_tensor *w = th_rand(NB_F64, 2, (int64_t[]){4, 4}, -1, 1);
    nb_tensor *g = nb_gradient(nb_sum(nb_mul(p, w)), s, 0);
    double gv[16];
    CHECK(nb_read_f64(g, gv, 16) == 16);
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) CHECK(j > i ? gv[i * 4 + j] == 0 : isfinite(gv[i * 4 + j]));
    /* an i64 mask, a rank-0 mask, an f32 x with an f64 mask */
    nb_tensor *x = nb_from_f64(NB_F32, 2, (int64_t[]){2, 2}, (double[]){1, 2, 3, 4});
    nb_tensor *mi = nb_from_f64(NB_I64, 1, (int64_t[]){2}, (double[]){0, 5});
    double v[4];
    CHECK(nb_read_f64(nb_masked_fill(x, mi, -7), v, 4) == 4);
    CHECK(v[0] == 1 && v[1] == -7 && v[2] == 3 && v[3] == -7);
    nb_tensor *r = nb_masked_fill(x, nb_scalar(NB_F64, 1), 0.5);
    CHECK(r && nb_dtype_of(r) == NB_F32 && nb_item(nb_sum(r)) == 2);
    nb_scope_end();
}

static void test_argmax(void) {
    nb_scope_begin();
    nb_tensor *x = nb_from_f64(NB_F64, 2, (int64_t[]){4, 4},
                               (double[]){1, 3, 3, 0, NAN, 2, NAN, 9, -INFINITY, -INFINITY, -INFINITY, -INFINITY,
                                          -1, -1, INFINITY, -1});
    nb_set_requires_grad(x, true);
    nb_tensor *a = nb_argmax(x, 1, false);
    double v[4];
    CHECK(a && nb_dtype_of(a) == NB_I64 && !nb_requires_grad(a) && nb_rank(a) == 1);
    CHECK(nb_read_f64(a, v, 4) == 4);
    CHECK(v[0] == 1 && v[1] == 0 && v[2] == 0 && v[3] == 2);
    nb_tensor *k = nb_argmax(x, -2, true); /* along the columns */
    CHECK(k && nb_rank(k) == 2 && nb_shape(k)[0] == 1 && nb_shape(k)[1] == 4);
    CHECK(nb_read_f64(k, v, 4) == 4);
    CHECK(v[0] == 1 && v[1] == 0 && v[2] == 1 && v[3] == 1);
    /* f32, rank 3, a long axis (the thread split of the fast set) */
    nb_tensor *big = nb_from_f64(NB_F32, 1, (int64_t[]){1}, (double[]){0});
    big = nb_mul(nb_full(NB_F32, 3, (int64_t[]){2, 70000, 1}, 1), big);
    CHECK(nb_item(nb_sum(nb_to(nb_argmax(big, 1, false), NB_F64))) == 0);
    nb_tensor *r = nb_arange(NB_F32, 0, 70000, 1);
    CHECK(nb_item(nb_argmax(nb_flip(r, 0), 0, false)) == 0 && nb_item(nb_argmax(r, 0, false)) == 69999);
    nb_scope_end();
}

static void test_topk(void) {
    nb_scope_begin();
    nb_tensor *x = nb_from_f64(NB_F64, 2, (int64_t[]){2, 5}, (double[]){3, 1, NAN, 3, -INFINITY, 0, 5, 5, -1, 2});
    nb_set_requires_grad(x, true);
    nb_tensor *v, *i;
    double a[10];
    CHECK(nb_topk(x, 4, 1, true, &v, &i) == 0);
    CHECK(nb_dtype_of(i) == NB_I64 && !nb_requires_grad(i) && nb_requires_grad(v));
    CHECK(nb_rank(v) == 2 && nb_shape(v)[0] == 2 && nb_shape(v)[1] == 4);
    CHECK(nb_read_f64(i, a, 8) == 8);
    const double want[] = {2, 0, 3, 1, 1, 2, 4, 0}; /* NaN first, ties by index */
    for (int k = 0; k < 8; k++) CHECK(a[k] == want[k]);
    CHECK(nb_topk(x, 5, -1, false, NULL, &i) == 0);
    CHECK(nb_read_f64(i, a, 10) == 10);
    const double want_small[] = {4, 1, 0, 3, 2, 3, 0, 4, 1, 2}; /* -inf first, NaN last */
    for (int k = 0; k < 10; k++) CHECK(a[k] == want_small[k]);
    /* the gradient goes to the picked places */
    CHECK(nb_topk(x, 2, 1, true, &v, NULL) == 0);
    nb_tensor *g = nb_gradient(nb_sum(nb_where(nb_eq(v, v), v, nb_scalar(NB_F64, 0))), x, 0);
    CHECK(nb_read_f64(g, a, 10) == 10);
    const double gw[] = {1, 0, 0, 0, 0, 0, 1, 1, 0, 0};
    for (int k = 0; k < 10; k++) CHECK(a[k] == gw[k]);
    /* k = 0 and k = n */
    CHECK(nb_topk(x, 0, 1, true, &v, &i) == 0);
    CHECK(nb_numel(v) == 0 && nb_numel(i) == 0 && nb_shape(i)[1] == 0 && nb_dtype_of(i) == NB_I64);
    CHECK(nb_topk(nb_full(NB_F32, 1, (int64_t[]){3}, 2), 3, 0, true, &v, &i) == 0);
    CHECK(nb_read_f64(i, a, 3) == 3 && a[0] == 0 && a[1] == 1 && a[2] == 2);
    nb_scope_end();
}

static void test_multinomial(void) {
    nb_scope_begin();
    nb_rng r, r2;
    nb_rng_seed(&r, 5);
    enum { S = 200000 };
    const double p[] = {0.1, 0, 0.6, 0.3};
    nb_tensor *pt = nb_from_f64(NB_F32, 2, (int64_t[]){2, 4}, (double[]){0.1, 0, 0.6, 0.3, 0, 0, 2, 0});
    nb_tensor *s = nb_multinomial(pt, S, &r);
    CHECK(s && nb_dtype_of(s) == NB_I64 && nb_rank(s) == 2 && nb_shape(s)[1] == S);
    const int64_t *d = nb_data(s);
    int64_t cnt[4] = {0}, other = 0;
    for (int k = 0; d && k < S; k++) cnt[d[k]]++, other += d[S + k] != 2;
    double chi2 = 0;
    for (int c = 0; c < 4; c++)
        if (p[c] > 0) chi2 += (cnt[c] - S * p[c]) * (cnt[c] - S * p[c]) / (S * p[c]);
    printf("multinomial: counts %lld %lld %lld %lld, chi-square %.2f (2 degrees of freedom)\n", (long long)cnt[0],
           (long long)cnt[1], (long long)cnt[2], (long long)cnt[3], chi2);
    CHECK(cnt[1] == 0 && other == 0);
    CHECK(chi2 < 20); /* P(chi2(2) > 20) = 4.5e-5 */
    /* one uniform per sample: the same seed gives the same draws, and the stream moves by rows x samples */
    nb_rng_seed(&r, 5);
    nb_rng_seed(&r2, 5);
    nb_tensor *s2 = nb_multinomial(pt, 10, &r);
    for (int k = 0; k < 20; k++) nb_rng_uniform(&r2);
    CHECK(r.state == r2.state);
    nb_rng_seed(&r, 5);
    nb_tensor *s3 = nb_multinomial(pt, 10, &r);
    CHECK(nb_item(nb_sum(nb_to(nb_eq(nb_to(s2, NB_F64), nb_to(s3, NB_F64)), NB_F64))) == 20);
    /* rank 1: (num_samples); unnormalised weights; no samples */
    nb_tensor *one = nb_multinomial(nb_from_f64(NB_F64, 1, (int64_t[]){3}, (double[]){0, 0, 7}), 5, &r);
    CHECK(one && nb_rank(one) == 1 && nb_numel(one) == 5 && nb_item(nb_sum(nb_to(one, NB_F64))) == 10);
    nb_tensor *none = nb_multinomial(pt, 0, &r);
    CHECK(none && nb_numel(none) == 0 && nb_rank(none) == 2);
    nb_scope_end();
}

int main(void) {
    th_seed(3);
    RUN(test_gelu_tanh_f32_accuracy);
    RUN(test_gelu_tanh_f64);
    RUN(test_gelu_tanh_specials);
    RUN(test_gelu_tanh_kept_exps);
    RUN(test_randn);
    RUN(test_rand);
    RUN(test_arange);
    RUN(test_tril_triu);
    RUN(test_masked_fill);
    RUN(test_argmax);
    RUN(test_topk);
    RUN(test_multinomial);
    return th_finish();
}

/*
 * test_vmath.c - the vectorised f32 functions of src/backend/cpu/vmath.h against double references.
 *
 * Inputs: every 4099th f32 bit pattern (both signs, subnormals, NaNs and infinities among them), every
 * pattern in windows of 4096 around the points where a function changes regime (0, the smallest
 * subnormals, the largest finite floats, the overflow and underflow edges of exp and sigmoid, where tanh and
 * erf reach 1, the ends of erf's two approximations, where GELU underflows) and the special values by name.
 * Each result must be within VM_MAX_ULP of the reference (tests/vmath_ref.h) and each special exact: NaN for
 * NaN, the right infinity, a zero of the right sign. The AVX2 and AVX-512 variants must give the generic
 * variant's bits, a row must give the same bits whatever its length and offset, and the f32 unary ops
 * (nb_exp ... nb_gelu) must give these functions' bits. tools/ulp_sweep.c runs the same comparison over all
 * 2^32 inputs.
 */
#include <float.h>

#include "harness.h"
#include "vmath_ref.h"

/* Every function is correctly rounded but where its true value lies within about 1e-6 ulp of a midpoint
   between two floats (the double evaluation has a relative error near 2e-14): at most 0.5 ulp plus that. */
#define VM_MAX_ULP 0.5001

static float *xs;
static int64_t nx;

static void add(float v) { xs[nx++] = v; }

static void add_window(float c, int half) {
    uint32_t b = vm_bits(c);
    for (int k = -half; k < half; k++) {
        uint32_t bk = b + (uint32_t)k; /* wraps through the sign bit around 0: both signs */
        add(vm_float(bk));
    }
}

static void build_inputs(void) {
    static const float centres[] = {
        0.0f, -0.0f, FLT_MIN, -FLT_MIN, 1.0f, -1.0f, 2.0f, 0.5f, FLT_MAX, -FLT_MAX,
        88.7228317f, 88.7228394f, -87.3365479f, -103.972084f, -103.278931f, /* exp: overflow, subnormal, zero */
        103.972084f, 16.6355324f, -88.7228317f,                             /* sigmoid's edges */
        9.01092052f, -9.01092052f, 0.55f, 0.0004f,                          /* tanh: saturation, small */
        3.92205f, -3.92205f, 0.8862269f,                                    /* erf: saturation, 1 */
        1.41421356f, -1.41421356f, -14.8492424f, -13.0f, 5.6f,             /* gelu: z = +-1, underflow */
        0.70710677f, 1.41421354f, 1e-30f, 1e30f,                           /* log: m = sqrt 2, extremes */
    };
    const int ncent = (int)(sizeof centres / sizeof centres[0]);
    const uint64_t stride = 4099;
    xs = malloc(sizeof(float) * (size_t)(((uint64_t)1 << 32) / stride + 2 + (uint64_t)ncent * 4096 + 64));
    nx = 0;
    for (uint64_t b = 0; b < ((uint64_t)1 << 32); b += stride) add(vm_float((uint32_t)b));
    for (int i = 0; i < ncent; i++) add_window(centres[i], 2048);
    add(INFINITY), add(-INFINITY), add(NAN), add(-NAN), add(vm_float(0x7f800001u)), add(vm_float(0xffc00001u));
    add(vm_float(1)), add(vm_float(0x80000001u)), add(vm_float(0x007fffffu)), add(vm_float(0x807fffffu));
}

static void check_function(int f) {
    float *y = malloc(sizeof(float) * (size_t)nx);
    vm_fn[f](y, xs, nx);
    double worst = 0;
    float worst_x = 0;
    int64_t special = 0;
    for (int64_t i = 0; i < nx; i++) {
        const double e = vm_ulp_error(y[i], vm_ref(f, xs[i]));
        if (e < 0) {
            if (special++ < 5)
                fprintf(stderr, "%s(%a) = %a, reference %a\n", vm_name[f], (double)xs[i], (double)y[i],
                        vm_ref(f, xs[i]));
        } else if (e > worst) {
            worst = e, worst_x = xs[i];
        }
    }
    if (worst > VM_MAX_ULP) fprintf(stderr, "%s: %.4f ulp at x = %a\n", vm_name[f], worst, (double)worst_x);
    CHECK(worst <= VM_MAX_ULP);
    CHECK(special == 0);
    free(y);
}

static void test_exp(void) { check_function(VM_EXP); }
static void test_log(void) { check_function(VM_LOG); }
static void test_tanh(void) { check_function(VM_TANH); }
static void test_sigmoid(void) { check_function(VM_SIGMOID); }
static void test_erf(void) { check_function(VM_ERF); }
static void test_gelu(void) { check_function(VM_GELU); }

/* Specials by name, exactly (bits for zeros and infinities). */
static void test_specials(void) {
    static const struct {
        int f;
        float x, want;
    } cases[] = {
        {VM_EXP, 0.0f, 1.0f},      {VM_EXP, -0.0f, 1.0f},         {VM_EXP, INFINITY, INFINITY},
        {VM_EXP, -INFINITY, 0.0f}, {VM_EXP, 88.7228394f, INFINITY}, {VM_EXP, -104.0f, 0.0f},
        {VM_LOG, 1.0f, 0.0f},      {VM_LOG, 0.0f, -INFINITY},     {VM_LOG, -0.0f, -INFINITY},
        {VM_LOG, INFINITY, INFINITY},
        {VM_TANH, 0.0f, 0.0f},     {VM_TANH, -0.0f, -0.0f},       {VM_TANH, INFINITY, 1.0f},
        {VM_TANH, -INFINITY, -1.0f},
        {VM_SIGMOID, 0.0f, 0.5f},  {VM_SIGMOID, INFINITY, 1.0f},  {VM_SIGMOID, -INFINITY, 0.0f},
        {VM_SIGMOID, -0.0f, 0.5f},
        {VM_ERF, 0.0f, 0.0f},      {VM_ERF, -0.0f, -0.0f},        {VM_ERF, INFINITY, 1.0f},
        {VM_ERF, -INFINITY, -1.0f},
        {VM_GELU, 0.0f, 0.0f},     {VM_GELU, -0.0f, -0.0f},       {VM_GELU, INFINITY, INFINITY},
        {VM_GELU, -20.0f, -0.0f},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        float y;
        vm_fn[cases[i].f](&y, &cases[i].x, 1);
        if (vm_bits(y) != vm_bits(cases[i].want))
            fprintf(stderr, "%s(%a) = %a, want %a\n", vm_name[cases[i].f], (double)cases[i].x, (double)y,
                    (double)cases[i].want);
        CHECK(vm_bits(y) == vm_bits(cases[i].want));
    }
    float gi = -INFINITY, go = 0; /* gelu(-inf) = -inf * 0: NaN, as in the f64 path and in PyTorch */
    nbi_vgeluf(&go, &gi, 1);
    CHECK(isnan(go));
    for (int f = 0; f < VM_COUNT; f++) { /* NaN in, NaN out, also for the log of a negative number */
        float in[3] = {NAN, -NAN, -1.0f}, out[3];
        vm_fn[f](out, in, f == VM_LOG ? 3 : 2);
        CHECK(isnan(out[0]) && isnan(out[1]));
        if (f == VM_LOG) CHECK(isnan(out[2]));
    }
}

/* Every instruction-set variant this CPU has gives the generic variant's bits, and a row's results do not
   depend on its length or where it starts (vector body against scalar tail). */
static void test_variants_and_offsets(void) {
    float *y0 = malloc(sizeof(float) * (size_t)nx), *y1 = malloc(sizeof(float) * (size_t)nx);
    for (int f = 0; f < VM_COUNT; f++) {
        CHECK(nbi_vmath_variant(0, f, y0, xs, nx));
        for (int v = 1; v <= 2; v++) {
            if (!nbi_vmath_variant(v, f, y1, xs, nx)) continue;
            int64_t diff = 0;
            for (int64_t i = 0; i < nx; i++) diff += vm_bits(y0[i]) != vm_bits(y1[i]);
            if (diff) fprintf(stderr, "%s: variant %d differs from the generic one at %lld inputs\n", vm_name[f],
                              v, (long long)diff);
            CHECK(diff == 0);
        }
        int64_t diff = 0;
        for (int64_t start = 0; start < 40; start += 3) {
            const int64_t len = 37 - start % 17;
            vm_fn[f](y1, xs + 5000 + start, len);
            for (int64_t i = 0; i < len; i++) diff += vm_bits(y1[i]) != vm_bits(y0[5000 + start + i]);
        }
        CHECK(diff == 0);
    }
    free(y0);
    free(y1);
}

/* nbi_vexpf_fast (the exps of the softmax family, attention and the GELU gradient): within 1.07 ulp of e^x over
   the test inputs (tools/ulp_sweep.c exp_fast sweeps all 2^32), specials exact (NaN, e^-inf = 0, overflow to
   +inf, 0 well past the underflow edge), the same bits on every variant and whatever a row's length. */
static void test_exp_fast(void) {
    float *y0 = malloc(sizeof(float) * (size_t)nx), *y1 = malloc(sizeof(float) * (size_t)nx);
    CHECK(nbi_vexpf_fast_variant(0, y0, xs, nx));
    double worst = 0;
    int64_t special = 0, diff = 0;
    for (int64_t i = 0; i < nx; i++) {
        const double e = vm_ulp_error(y0[i], exp((double)xs[i]));
        if (e < 0) { /* only where the true value lies within that ulp of FLT_MAX may inf stand for it */
            special += !(isinf(y0[i]) && exp((double)xs[i]) > 0x1.fffffcp127);
            continue;
        }
        worst = fmax(worst, e);
    }
    printf("    exp_fast: largest error %.4f ulp over %lld inputs\n", worst, (long long)nx);
    CHECK(worst <= 1.07);
    CHECK(special == 0);
    for (int v = 1; v <= 2; v++) {
        if (!nbi_vexpf_fast_variant(v, y1, xs, nx)) continue;
        for (int64_t i = 0; i < nx; i++) diff += vm_bits(y0[i]) != vm_bits(y1[i]);
    }
    for (int64_t start = 0; start < 40; start += 3) {
        const int64_t len = 37 - start % 17;
        nbi_vexpf_fast(y1, xs + 5000 + start, len);
        for (int64_t i = 0; i < len; i++) diff += vm_bits(y1[i]) != vm_bits(y0[5000 + start + i]);
    }
    CHECK(diff == 0);
    const float sp[6] = {NAN, -INFINITY, INFINITY, 0.0f, 100.0f, -200.0f};
    float ys[6];
    nbi_vexpf_fast(ys, sp, 6);
    CHECK(ys[0] != ys[0] && ys[1] == 0.0f && ys[2] == INFINITY && ys[3] == 1.0f && ys[4] == INFINITY &&
          ys[5] == 0.0f);
    free(y0);
    free(y1);
}

/* nbi_vexpf_shifted, the softmax family's fused pass, against its definition written out: d = x - m in f32,
   E = nbi_vexpf_fast(d), e = E + E lo (lo the exact rounding error of d, E > 0 only), the sum of e in double over
   16 lanes, then the lanes in order, then the tail in order; every bit of e and of the sum, on every variant,
   for row lengths around the lane count and a long row, with NaN, -inf and underflowing values among them. */
static void test_shifted(void) {
    enum { N = 8192 + 37 };
    float *x = malloc(sizeof(float) * N), *d = malloc(sizeof(float) * N), *e = malloc(sizeof(float) * N);
    float *want = malloc(sizeof(float) * N);
    th_seed(11);
    for (int i = 0; i < N; i++) x[i] = (float)th_uniform(-30, 8);
    x[3] = -INFINITY, x[70] = -200.0f, x[71] = 7.9999995f, x[140] = 1e-30f;
    static const int64_t lens[] = {1, 15, 16, 17, 31, 63, 64, 65, 100, 8192, N};
    int64_t diff = 0, far = 0;
    for (int li = 0; li < (int)(sizeof lens / sizeof lens[0]); li++) {
        const int64_t n = lens[li];
        for (int mi = 0; mi < 3; mi++) {
            const float m = mi == 0 ? 8.0f : mi == 1 ? 0.37f : -1.5f;
            for (int64_t k = 0; k < n; k++) d[k] = x[k] - m;
            nbi_vexpf_fast(d, d, n);
            double acc[16] = {0}, sw = 0;
            int64_t k = 0;
            for (; k < n; k++) {
                const float dk = x[k] - m, bb = dk - x[k], lo = (x[k] - (dk - bb)) + (-m - bb);
                want[k] = d[k] > 0 ? d[k] + d[k] * lo : d[k];
                const double ex = exp((double)x[k] - (double)m); /* within 3.136 u, or subnormal */
                far += fabs((double)want[k] - ex) > 3.136 * 0x1p-24 * ex + 1.07 * 0x1p-149;
            }
            for (k = 0; k + 16 <= n; k += 16)
                for (int l = 0; l < 16; l++) acc[l] += (double)want[k + l];
            for (int l = 0; l < 16; l++) sw += acc[l];
            for (; k < n; k++) sw += (double)want[k];
            for (int v = 0; v <= 2; v++) {
                const double s = nbi_vexpf_shifted_variant(v, e, x, n, m);
                if (s == -1) continue;
                diff += memcmp(e, want, sizeof(float) * (size_t)n) != 0 || memcmp(&s, &sw, sizeof s) != 0;
            }
            const double s = nbi_vexpf_shifted(e, x, n, m);
            diff += memcmp(e, want, sizeof(float) * (size_t)n) != 0 || memcmp(&s, &sw, sizeof s) != 0;
        }
    }
    CHECK(diff == 0);
    CHECK(far == 0);
    x[5] = NAN; /* a NaN stays NaN and makes the sum NaN */
    const double s = nbi_vexpf_shifted(e, x, 64, 8.0f);
    CHECK(e[5] != e[5] && s != s && e[3] == 0.0f);
    free(x);
    free(d);
    free(e);
    free(want);
}

/* The f32 unary ops run on these functions: the same bits for a contiguous tensor and for a transposed view
   (the strided path through a buffer). */
static void test_ops_use_vmath(void) {
    nb_tensor *(*const ops[VM_COUNT])(nb_tensor *) = {nb_exp, nb_log, nb_tanh, nb_sigmoid, nb_erf, nb_gelu};
    const int64_t shape[2] = {301, 419};
    const int64_t n = shape[0] * shape[1];
    th_seed(7);
    nb_scope_begin();
    nb_tensor *a = th_rand(NB_F32, 2, shape, -12, 12), *pos = th_rand(NB_F32, 2, shape, 1e-3, 50);
    float *want = malloc(sizeof(float) * (size_t)n), *wantt = malloc(sizeof(float) * (size_t)n);
    for (int f = 0; f < VM_COUNT; f++) {
        nb_tensor *x = f == VM_LOG ? pos : a;
        nb_tensor *xt = nb_contiguous(nb_transpose(x, 0, 1)); /* (419, 301) */
        vm_fn[f](want, (const float *)nb_data(x), n);
        vm_fn[f](wantt, (const float *)nb_data(xt), n);
        nb_tensor *y = ops[f](x), *yt = nb_contiguous(ops[f](nb_transpose(x, 0, 1)));
        CHECK(y && yt);
        if (!y || !yt) continue;
        CHECK(memcmp(nb_data(y), want, sizeof(float) * (size_t)n) == 0);
        CHECK(memcmp(nb_data(yt), wantt, sizeof(float) * (size_t)n) == 0);
    }
    free(want);
    free(wantt);
    nb_scope_end();
}

int main(void) {
    build_inputs();
    RUN(test_exp);
    RUN(test_log);
    RUN(test_tanh);
    RUN(test_sigmoid);
    RUN(test_erf);
    RUN(test_gelu);
    RUN(test_specials);
    RUN(test_variants_and_offsets);
    RUN(test_exp_fast);
    RUN(test_shifted);
    RUN(test_ops_use_vmath);
    free(xs);
    return th_finish();
}

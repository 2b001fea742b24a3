/*
 * vmath.c - vectorised f32 exp, log, tanh, sigmoid, erf and GELU.
 *
 * Each f32 argument is widened to double, the function is evaluated there with a relative error of at
 * most about 2e-14, and the result is rounded to f32 once. An f32 result within 2e-14 of the true value
 * rounds to the correctly rounded f32 or, when the true value lies within 2e-14 of a midpoint between two
 * floats, to its neighbour: every result is within 1 ulp of the correctly rounded one, and nearly all are
 * correctly rounded (tools/ulp_sweep.c counts them over all 2^32 inputs). Working in double also makes the
 * edges free: f32 subnormal inputs are normal doubles, subnormal and overflowing results round once, in
 * the final conversion, exactly as a correctly rounded function does.
 *
 * The code is branch-free (range reduction by the 1.5 * 2^52 rounding trick, exponents built from bits
 * through memcpy, specials applied by selects at the end) so that GCC vectorises each loop. It uses only
 * IEEE-exact operations (+, -, *, /, fma, conversions, comparisons) and is compiled without FMA contraction
 * (the exp polynomial's fused multiply-adds are explicit fma calls: the FMA instruction in the AVX2+FMA and
 * AVX-512 variants, the C library's correctly rounded fma in the generic one), so the generic, AVX2 and
 * AVX-512 variants below give the same bits (test_vmath compares them).
 */
#include "vmath.h"

#include <math.h>
#include <string.h>

#define INLINE static inline __attribute__((always_inline))

INLINE double from_bits(uint64_t b) {
    double d;
    memcpy(&d, &b, sizeof d);
    return d;
}

INLINE uint64_t to_bits(double d) {
    uint64_t b;
    memcpy(&b, &d, sizeof b);
    return b;
}

/* e^r - 1 for |r| <= ln 2 / 2 + tiny: Taylor series to r^11 (the first term left out is below 6e-15), by
   Horner's rule in fused multiply-adds (half the operations of a multiply and an add per step). */
INLINE double expm1_reduced(double r) {
    double p = 1.0 / 39916800.0;
    p = fma(p, r, 1.0 / 3628800.0);
    p = fma(p, r, 1.0 / 362880.0);
    p = fma(p, r, 1.0 / 40320.0);
    p = fma(p, r, 1.0 / 5040.0);
    p = fma(p, r, 1.0 / 720.0);
    p = fma(p, r, 1.0 / 120.0);
    p = fma(p, r, 1.0 / 24.0);
    p = fma(p, r, 1.0 / 6.0);
    p = fma(p, r, 0.5);
    p = fma(p, r, 1.0);
    return p * r;
}

/* Splits x (|x| <= 1000) as n ln 2 + r, |r| <= ln 2 / 2 + tiny, and returns 2^n in *s: ln 2 in two parts
   (Cody and Waite; the first has 32 bits, so n * LN2_HI is exact). */
#define LN2_HI 6.93147180369123816490e-01
#define LN2_LO 1.90821492927058770002e-10
#define SHIFT 0x1.8p52
INLINE double reduce(double x, double *s) {
    const double t = x * 1.4426950408889634 + SHIFT, n = t - SHIFT;
    *s = from_bits((to_bits(t) - to_bits(SHIFT) + 1023u) << 52); /* n + 1023 in [1, 2046] */
    return (x - n * LN2_HI) - n * LN2_LO;
}

/* e^x in double for x in [-1000, 1000] whose result is a normal double (x in about [-708, 709]). */
INLINE double exp_d(double x) {
    double s;
    const double r = reduce(x, &s);
    return s + s * expm1_reduced(r);
}

/* e^x - 1 in double for x in [0, 700], with a small relative error also near 0. */
INLINE double expm1_d(double x) {
    double s;
    const double r = reduce(x, &s);
    return s * expm1_reduced(r) + (s - 1.0);
}

INLINE float expf_1(float x) {
    const double xd = (double)x;
    /* e^89 overflows f32 and e^-104 rounds to 0, so clamping there changes no result (and +-inf with it). */
    const double xc = xd < -104.0 ? -104.0 : xd > 89.0 ? 89.0 : xd;
    const float y = (float)exp_d(xc);
    return x != x ? x : y;
}

/* 2^k for k in [-126, 127]: the exponent bits of a normal float. */
INLINE float pow2f(int32_t k) {
    const uint32_t b = (uint32_t)(k + 127) << 23;
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}

/* e^x in f32 arithmetic for the kernels whose exps feed sums and quotients (softmax rows, cross-entropy,
   attention, the GELU gradient): x = n ln 2 + r (|r| <= ln 2 / 2 + tiny, ln 2 in two parts, the first with 12
   bits so that n * LN2F_HI is exact), e^r = 1 + (r + r^2 (1/2 + r/6 + ... + r^5/5040)) by Horner's rule in
   fused multiply-adds (the Taylor term left out is below 6e-9), scaled by 2^a 2^b with a + b = n (each a
   normal float: the product rounds once, also where it overflows or is subnormal). Within 1.07 ulp of e^x
   for every f32 x (tools/ulp_sweep.c exp_fast), about four times the speed of expf_1. */
INLINE float expf_fast_1(float x) {
    const float xc = x < -104.0f ? -104.0f : x > 89.0f ? 89.0f : x;
    const float t = fmaf(xc, 1.44269504f, 0x1.8p23f), n = t - 0x1.8p23f; /* n = round(x / ln 2) */
    float r = fmaf(n, -0.693145751953125f, xc);
    r = fmaf(n, -1.428606765330187e-06f, r);
    float p = 1.0f / 5040.0f;
    p = fmaf(p, r, 1.0f / 720.0f);
    p = fmaf(p, r, 1.0f / 120.0f);
    p = fmaf(p, r, 1.0f / 24.0f);
    p = fmaf(p, r, 1.0f / 6.0f);
    p = fmaf(p, r, 0.5f);
    p = fmaf(p * r, r, r) + 1.0f;
    uint32_t tb; /* n as an integer from t's low bits (no float-to-int conversion, which a NaN x makes undefined) */
    memcpy(&tb, &t, sizeof tb);
    const int32_t ni = (int32_t)(tb - 0x4b400000u), a = ni / 2, b = ni - a; /* n in [-150, 129]; 0x1.8p23f's bits */
    const float y = (p * pow2f(a)) * pow2f(b);
    return x != x ? x : y;
}

INLINE float logf_1(float x) {
    const double xd = (double)x; /* f32 subnormals are normal here */
    const uint64_t b = to_bits(xd);
    /* xd = 2^e m, m in [1, 2), then m in [sqrt 2 / 2, sqrt 2) so that log m is small near x = 1 */
    const double m1 = from_bits((b & 0x000fffffffffffffu) | 0x3ff0000000000000u), m2 = m1 * 0.5;
    const int big = m1 > 1.4142135623730951;
    const double m = big ? m2 : m1;
    /* e as a double without an int64 conversion (which needs AVX-512DQ to vectorise) */
    const double e0 = from_bits(to_bits(SHIFT) + ((b >> 52) & 0x7ff)) - SHIFT - 1023.0;
    const double e = big ? e0 + 1.0 : e0;
    const double f = m - 1.0; /* exact */
    const double s = f / (2.0 + f), w = s * s; /* log m = 2 atanh s = 2 (s + s^3/3 + ...) */
    double p = 1.0 / 19.0;
    p = p * w + 1.0 / 17.0;
    p = p * w + 1.0 / 15.0;
    p = p * w + 1.0 / 13.0;
    p = p * w + 1.0 / 11.0;
    p = p * w + 1.0 / 9.0;
    p = p * w + 1.0 / 7.0;
    p = p * w + 1.0 / 5.0;
    p = p * w + 1.0 / 3.0;
    const double logm = 2.0 * s + 2.0 * s * (p * w);
    double r = e * 0.6931471805599453 + logm;
    r = xd < 0.0 ? (double)NAN : r;
    r = xd == 0.0 ? -(double)INFINITY : r;
    r = xd == (double)INFINITY ? xd : r;
    r = xd != xd ? xd : r;
    return (float)r;
}

INLINE float tanhf_1(float x) {
    const double a = fabs((double)x);
    const double ac = a > 20.0 ? 20.0 : a; /* tanh 9.1 already rounds to 1 */
    const double em = expm1_d(2.0 * ac);  /* tanh a = (e^2a - 1) / (e^2a + 1) */
    const double t = em / (em + 2.0);
    const float y = (float)copysign(t, (double)x);
    return x != x ? x : y;
}

INLINE float sigmoidf_1(float x) {
    const double xd = -(double)x;
    /* e^-x < 2^-60 for x > 40 and the result rounds to 1; x < -110 gives 0 as x = -104 does */
    const double xc = xd < -40.0 ? -40.0 : xd > 110.0 ? 110.0 : xd;
    const float y = (float)(1.0 / (1.0 + exp_d(xc)));
    return x != x ? x : y;
}

/* erf a for |a| <= 1: Taylor series to a^35 (terms alternate and stay below 1: no cancellation to speak of;
   the first term left out is below 8e-17). */
INLINE double erf_small(double a) {
    static const double c[18] = {
        1.1283791670955126, -0.37612638903183754, 0.11283791670955126, -0.026866170645131252,
        0.0052239776254421879, -0.00085483270234508522, 0.00012055332981789664, -1.492565035840625e-05,
        1.6462114365889246e-06, -1.6365844691234924e-07, 1.4807192815879218e-08, -1.2290555301717926e-09,
        9.4227590646504113e-11, -6.7113668551641105e-12, 4.4632242632864775e-13, -2.7835162072109212e-14,
        1.6342614095367152e-15, -9.0639708428086728e-17,
    };
    const double w = a * a;
    double p = c[17];
#pragma GCC unroll 17
    for (int k = 16; k >= 0; k--) p = p * w + c[k];
    return p * a;
}

/* erfc a for a in [1, 10.5] (clamp before), with w = a * a passed separately so that the exponent can be
   exact: erfc a = t e^(h(t) - a^2), t = 2 / (2 + a), h a Chebyshev series of degree 16 in t
   (tools/gen_vmath_coeffs.py; relative error below 2e-14). */
#define ERFC_TA 0.16
#define ERFC_TB 0.66666666666666663
INLINE double erfc_tail(double a, double w) {
    static const double c[17] = {
        -0.77818834412026716,   0.32691038617113971,    0.0084166708081733193,  -0.0011692169786992324,
        -0.00012221244883490635, 1.0572821377110575e-05, 1.9275437910404313e-06, -1.5639807692258146e-07,
        -3.29505673013486e-08,  3.2496854163177605e-09, 5.6291069139291492e-10, -7.9241988526490559e-11,
        -8.4643136943896019e-12, 1.9561330333317527e-12, 7.6862960440848843e-14, -4.4124703890702221e-14,
        1.6853185513809876e-15,
    };
    const double t = 2.0 / (2.0 + a);
    const double u = (2.0 * t - (ERFC_TA + ERFC_TB)) / (ERFC_TB - ERFC_TA), u2 = 2.0 * u;
    double b1 = 0.0, b2 = 0.0;
#pragma GCC unroll 16
    for (int k = 16; k >= 1; k--) {
        const double b0 = u2 * b1 - b2 + c[k];
        b2 = b1;
        b1 = b0;
    }
    const double h = u * b1 - b2 + c[0];
    return t * exp_d(h - w);
}

INLINE float erff_1(float x) {
    const double xd = (double)x, a = fabs(xd);
    const double ac = a < 1.0 ? 1.0 : a > 10.5 ? 10.5 : a;
    const double small = erf_small(a < 1.0 ? a : 1.0);
    const double big = 1.0 - erfc_tail(ac, ac * ac);
    const float y = (float)copysign(a < 1.0 ? small : big, xd);
    return x != x ? x : y;
}

INLINE float geluf_1(float x) {
    const double xd = (double)x;
    const double z = xd * 0.70710678118654752, a = fabs(z);
    const double w = xd * xd * 0.5; /* z^2, exact */
    const double ac = a < 1.0 ? 1.0 : a > 10.5 ? 10.5 : a, wc = a < 1.0 ? 1.0 : a > 10.5 ? 110.25 : w;
    const double ec = erfc_tail(ac, wc);
    const double small = erf_small(a < 1.0 ? z : 1.0);
    /* 1 + erf z without cancellation: erfc |z| itself below z = -1 */
    const double phi2 = a < 1.0 ? 1.0 + small : z > 0.0 ? 2.0 - ec : ec;
    const float y = (float)(0.5 * xd * phi2);
    /* below z = -10.5 the result is below half the smallest subnormal; x = -inf gives NaN, as the product
       -inf * 0 does in the f64 path and in PyTorch */
    return x != x ? x : x == -INFINITY ? NAN : z < -10.5 ? -0.0f : y;
}

/* GELU's tanh form (transformer ops): x / (1 + e^(-2u)), u = sqrt(2/pi) (x + 0.044715 x^3), in double. u's
   relative error is a few 1e-16 and |2u| <= 110 where it matters, so e^(-2u) is within about 5e-14: the f32
   result is within 0.501 ulp. For -2u > 110 (x below about -10.6) the result is below half the smallest f32
   subnormal: -0; for -2u < -40, 1 + e^(-2u) rounds to 1 in double: the result is x. */
INLINE float gelu_tanhf_1(float x) {
    const double xd = (double)x;
    const double v = -2.0 * (0.7978845608028654 * (xd + 0.044715 * (xd * xd * xd)));
    const double vc = v < -40.0 ? -40.0 : v > 110.0 ? 110.0 : v;
    const float y = (float)(xd / (1.0 + exp_d(vc)));
    return x != x ? x : x == -INFINITY ? NAN : v > 110.0 ? -0.0f : y;
}

/* gelu_tanhf_1's result, and e^(-2u) in *e as NBI_GELU_E_PUT stores it: exp_d of -2u clamped to [-200, 200] (the
   same y: below -40, 1 + e^(-2u) rounds to 1 in double either way). */
INLINE float gelu_tanhf_keep_1(float x, float *e) {
    const double xd = (double)x;
    const double v = -2.0 * (0.7978845608028654 * (xd + 0.044715 * (xd * xd * xd)));
    const double vc = v < -200.0 ? -200.0 : v > 200.0 ? 200.0 : v;
    const double ev = exp_d(vc);
    const float y = (float)(xd / (1.0 + ev));
    *e = NBI_GELU_E_PUT(ev);
    return x != x ? x : x == -INFINITY ? NAN : v > 110.0 ? -0.0f : y;
}

#define ROW_KEEP(NAME, ATTR)                                                                   \
    ATTR static void NAME(float *y, float *e, const float *x, int64_t n) {                     \
        for (int64_t i = 0; i < n; i++) y[i] = gelu_tanhf_keep_1(x[i], &e[i]);                 \
    }

/* Whole vectors of 16, then the last n % 16 values (4 or more) through a zero-padded block of 16, so that a short
   row (an attention row, a causal one of any length) is not left to the compiler's scalar remainder loop. */
#define ROW(NAME, F, ATTR)                                                 \
    ATTR static void NAME(float *y, const float *x, int64_t n) {           \
        const int64_t n16 = n % 16 < 4 ? n : n / 16 * 16;                  \
        for (int64_t i = 0; i < n16; i++) y[i] = F(x[i]);                  \
        if (n16 < n) {                                                     \
            float t[16];                                                   \
            for (int i = 0; i < 16; i++) t[i] = n16 + i < n ? x[n16 + i] : 0.0f; \
            for (int i = 0; i < 16; i++) t[i] = F(t[i]);                   \
            for (int64_t i = n16; i < n; i++) y[i] = t[i - n16];           \
        }                                                                  \
    }

/* The softmax family's exps: e = exp(x - m) with the rounding error lo of the f32 difference d = x - m
   (Knuth's TwoSum, exact) folded in as E + E lo, E = expf_fast_1(d); a zero E (x - m = -inf, or underflow) stays zero
   and a NaN stays NaN. One pass over the row, which stays in L1 (the shift, exp and sum as separate passes
   walk a 32 KiB row three times more). */
INLINE float expf_shifted_1(float x, float m) {
    const float d = x - m, bb = d - x, lo = (x - (d - bb)) + (-m - bb);
    const float E = expf_fast_1(d);
    return E > 0 ? E + E * lo : E;
}

/* Returns the sum of the e written, in double: SUM_LANES lanes (value k to lane k % SUM_LANES) over the whole
   blocks, the lanes added in order, then the values past the last whole block in order. */
#define SUM_LANES 16
#define SHIFTED_SUM(NAME, ATTR)                                                    \
    ATTR static double NAME(float *e, const float *x, int64_t n, float m) {       \
        double acc[SUM_LANES];                                                     \
        for (int l = 0; l < SUM_LANES; l++) acc[l] = 0;                            \
        int64_t k = 0;                                                             \
        for (; k + SUM_LANES <= n; k += SUM_LANES)                                 \
            for (int l = 0; l < SUM_LANES; l++) {                                  \
                const float v = expf_shifted_1(x[k + l], m);                       \
                e[k + l] = v;                                                      \
                acc[l] += (double)v;                                               \
            }                                                                      \
        double s = 0;                                                              \
        for (int l = 0; l < SUM_LANES; l++) s += acc[l];                           \
        if (k < n) { /* the tail through one padded block, summed in order */      \
            float t[SUM_LANES];                                                    \
            for (int l = 0; l < SUM_LANES; l++) t[l] = k + l < n ? x[k + l] : m;   \
            for (int l = 0; l < SUM_LANES; l++) t[l] = expf_shifted_1(t[l], m);    \
            for (int64_t i = k; i < n; i++) e[i] = t[i - k], s += (double)t[i - k]; \
        }                                                                          \
        return s;                                                                  \
    }

#define VARIANT(SFX, ATTR)                         \
    ROW_KEEP(vgelu_tanh_keep_##SFX, ATTR)          \
    SHIFTED_SUM(vexp_shifted_##SFX, ATTR)          \
    ROW(vexp_fast_##SFX, expf_fast_1, ATTR)        \
    ROW(vexp_##SFX, expf_1, ATTR)                  \
    ROW(vlog_##SFX, logf_1, ATTR)                  \
    ROW(vtanh_##SFX, tanhf_1, ATTR)                \
    ROW(vsigmoid_##SFX, sigmoidf_1, ATTR)          \
    ROW(verf_##SFX, erff_1, ATTR)                  \
    ROW(vgelu_##SFX, geluf_1, ATTR)                \
    ROW(vgelu_tanh_##SFX, gelu_tanhf_1, ATTR)      \
    static void (*const tab_##SFX[7])(float *, const float *, int64_t) = {                    \
        vexp_##SFX, vlog_##SFX, vtanh_##SFX, vsigmoid_##SFX, verf_##SFX, vgelu_##SFX, vgelu_tanh_##SFX};

typedef void (*vfn)(float *, const float *, int64_t);

VARIANT(generic, )
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(NBI_NO_CLONES)
#define HAVE_X86_VARIANTS 1
VARIANT(avx2, __attribute__((target("avx2,fma"))))
VARIANT(avx512, __attribute__((target("avx512f,fma"))))
#endif

typedef double (*sfn)(float *, const float *, int64_t, float);

static vfn pick_fast(void) {
#ifdef HAVE_X86_VARIANTS
    if (__builtin_cpu_supports("avx512f")) return vexp_fast_avx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return vexp_fast_avx2;
#endif
    return vexp_fast_generic;
}

static sfn pick_shifted(void) {
#ifdef HAVE_X86_VARIANTS
    if (__builtin_cpu_supports("avx512f")) return vexp_shifted_avx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return vexp_shifted_avx2;
#endif
    return vexp_shifted_generic;
}

static vfn pick(int fn) {
#ifdef HAVE_X86_VARIANTS
    if (__builtin_cpu_supports("avx512f")) return tab_avx512[fn];
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return tab_avx2[fn];
#endif
    return tab_generic[fn];
}

void nbi_vexpf(float *y, const float *x, int64_t n) { pick(0)(y, x, n); }
void nbi_vlogf(float *y, const float *x, int64_t n) { pick(1)(y, x, n); }
void nbi_vtanhf(float *y, const float *x, int64_t n) { pick(2)(y, x, n); }
void nbi_vsigmoidf(float *y, const float *x, int64_t n) { pick(3)(y, x, n); }
void nbi_verff(float *y, const float *x, int64_t n) { pick(4)(y, x, n); }
void nbi_vgeluf(float *y, const float *x, int64_t n) { pick(5)(y, x, n); }
void nbi_vgelu_tanhf(float *y, const float *x, int64_t n) { pick(6)(y, x, n); }

double nbi_vexpf_shifted(float *e, const float *x, int64_t n, float m) { return pick_shifted()(e, x, n, m); }

void nbi_vexpf_fast(float *y, const float *x, int64_t n) { pick_fast()(y, x, n); }

void nbi_vgelu_tanhf_keep(float *y, float *e, const float *x, int64_t n) {
#ifdef HAVE_X86_VARIANTS
    if (__builtin_cpu_supports("avx512f")) {
        vgelu_tanh_keep_avx512(y, e, x, n);
        return;
    }
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        vgelu_tanh_keep_avx2(y, e, x, n);
        return;
    }
#endif
    vgelu_tanh_keep_generic(y, e, x, n);
}

int nbi_vexpf_fast_variant(int variant, float *y, const float *x, int64_t n) {
    switch (variant) {
    case 0: vexp_fast_generic(y, x, n); return 1;
#ifdef HAVE_X86_VARIANTS
    case 1:
        if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return 0;
        vexp_fast_avx2(y, x, n);
        return 1;
    case 2:
        if (!__builtin_cpu_supports("avx512f")) return 0;
        vexp_fast_avx512(y, x, n);
        return 1;
#endif
    default: return 0;
    }
}

double nbi_vexpf_shifted_variant(int variant, float *e, const float *x, int64_t n, float m) {
    switch (variant) {
    case 0: return vexp_shifted_generic(e, x, n, m);
#ifdef HAVE_X86_VARIANTS
    case 1:
        if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return -1;
        return vexp_shifted_avx2(e, x, n, m);
    case 2:
        if (!__builtin_cpu_supports("avx512f")) return -1;
        return vexp_shifted_avx512(e, x, n, m);
#endif
    default: return -1;
    }
}

int nbi_vmath_variant(int variant, int fn, float *y, const float *x, int64_t n) {
    if (fn < 0 || fn > 6) return 0;
    switch (variant) {
    case 0: tab_generic[fn](y, x, n); return 1;
#ifdef HAVE_X86_VARIANTS
    case 1:
        if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return 0;
        tab_avx2[fn](y, x, n);
        return 1;
    case 2:
        if (!__builtin_cpu_supports("avx512f")) return 0;
        tab_avx512[fn](y, x, n);
        return 1;
#endif
    default: return 0;
    }
}

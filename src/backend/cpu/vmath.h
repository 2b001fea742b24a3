/*
 * vmath.h - vectorised f32 exp, log, tanh, sigmoid, erf and GELU on rows.
 *
 * Each function reads n floats from x and writes n floats to y (y may equal x; the two must not otherwise
 * overlap). Shapes: x is (n,), y is (n,). Every result is within 0.5001 ulp of the true value for every f32
 * input: the correctly rounded float except, rarely, where the true value lies within about 1e-6 ulp of a
 * midpoint between two floats (over all 2^32 inputs, tools/ulp_sweep.c finds 2 such results each for exp,
 * log and GELU and none for tanh, sigmoid and erf). Specials are exact: NaN in gives NaN out (log of a number below 0 too),
 * +-0, +-inf, subnormal inputs and outputs, and the overflow and underflow edges round as the correctly
 * rounded function does. Results do not depend on the instruction set picked at run time (each variant
 * performs the same IEEE operations in the same order, fused multiply-adds only where the code calls fma,
 * never by contraction) nor on n or alignment.
 */
#ifndef NABLA_VMATH_H
#define NABLA_VMATH_H

#include <stdint.h>

void nbi_vexpf(float *y, const float *x, int64_t n);     /* e^x */
void nbi_vlogf(float *y, const float *x, int64_t n);     /* ln x; -inf at +-0, NaN below 0 */
void nbi_vtanhf(float *y, const float *x, int64_t n);    /* tanh x, odd (tanh -0 = -0) */
void nbi_vsigmoidf(float *y, const float *x, int64_t n); /* 1 / (1 + e^-x) */
void nbi_verff(float *y, const float *x, int64_t n);     /* erf x, odd */
void nbi_vgeluf(float *y, const float *x, int64_t n);    /* x (1 + erf(x / sqrt 2)) / 2; -0 for x = -inf */
/* GELU's tanh form x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) as x / (1 + e^(-2u)) in double (no
   cancellation for negative x): within 0.501 ulp of that exact function (tests/test_transformer_ops.c);
   NaN for x = -inf, as PyTorch. */
void nbi_vgelu_tanhf(float *y, const float *x, int64_t n);
/* nbi_vgelu_tanhf's y (the same bits) and e (n) = e^(-2u) as NBI_GELU_E_PUT stores it, which the gradient needs:
   kept by the forward, it spares the backward its exps. */
void nbi_vgelu_tanhf_keep(float *y, float *e, const float *x, int64_t n);
/* e^(-2u) (double, > 0) in an f32: itself, rounded, below 2^127; above, negated and scaled by 2^-128 (e^(-2u)
   passes FLT_MAX near x = -10.7, where the gradient is still a subnormal; +inf only past 2^255, where it is 0);
   NBI_GELU_E_GET gives it back as a double (within the f32 rounding). */
#define NBI_GELU_E_PUT(ev) ((ev) < 0x1p127 ? (float)(ev) : -(float)((ev) * 0x1p-128))
#define NBI_GELU_E_GET(e) ((e) < 0 ? -(double)(e) * 0x1p128 : (double)(e))

/* e^x in f32 arithmetic, for kernels whose exps feed sums and quotients (softmax rows, cross-entropy,
   attention, the GELU gradient), not for results returned as they are: within 1.07 ulp of e^x for every f32
   x (tools/ulp_sweep.c exp_fast), about four times the speed of nbi_vexpf. NaN gives NaN, e^x below half the
   smallest subnormal 0, above FLT_MAX +inf (within that ulp of the edge); the same bits on every variant. */
void nbi_vexpf_fast(float *y, const float *x, int64_t n);
/* The same on one instruction-set variant (as nbi_vmath_variant); 0 if this CPU or build lacks it. */
int nbi_vexpf_fast_variant(int variant, float *y, const float *x, int64_t n);

/* The softmax family's exps of a row shifted by its max m: e[k] = exp(x[k] - m) (k < n), E = nbi_vexpf_fast's
   exp of the f32 difference d = x[k] - m and that difference's rounding error lo folded in as E + E lo, so that
   e is within 3.14 u (u = 2^-24) of exp(x[k] - m) (rows.c states the bound); NaN stays NaN, a zero E stays
   zero. Returns the sum of the e in double: 16 lanes (value k to lane k % 16) over the whole blocks of 16, the
   lanes added in order, then the remaining values in order. One pass (rows.c's grouped path computes the same
   bits in three). */
double nbi_vexpf_shifted(float *e, const float *x, int64_t n, float m);
/* The same on one instruction-set variant (as nbi_vmath_variant); -1 if this CPU or build lacks it. */
double nbi_vexpf_shifted_variant(int variant, float *e, const float *x, int64_t n, float m);

/* For tests and benchmarks: run one instruction-set variant (0 generic x86-64/portable C, 1 AVX2+FMA,
   2 AVX-512F). Returns 0 if this CPU or build lacks it. fn: 0 exp, 1 log, 2 tanh, 3 sigmoid, 4 erf,
   5 gelu, 6 gelu_tanh. */
int nbi_vmath_variant(int variant, int fn, float *y, const float *x, int64_t n);

#endif

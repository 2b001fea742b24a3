/*
 * vmath_ref.h - references and error measures for the f32 functions of src/backend/cpu/vmath.h, shared by
 * tests/test_vmath.c and tools/ulp_sweep.c.
 *
 * The reference for each float x is the C library's double function at (double)x (for sigmoid and GELU,
 * forms without cancellation: 1 / (1 + e^-x) and x erfc(-x / sqrt 2) / 2), within a few double ulps of the
 * true value: a float error measured against it is exact to about 1e-8 ulp.
 */
#ifndef NABLA_VMATH_REF_H
#define NABLA_VMATH_REF_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "vmath.h"

enum { VM_EXP, VM_LOG, VM_TANH, VM_SIGMOID, VM_ERF, VM_GELU, VM_COUNT };
static const char *const vm_name[VM_COUNT] = {"exp", "log", "tanh", "sigmoid", "erf", "gelu"};
static void (*const vm_fn[VM_COUNT])(float *, const float *, int64_t) = {
    nbi_vexpf, nbi_vlogf, nbi_vtanhf, nbi_vsigmoidf, nbi_verff, nbi_vgeluf};

static double vm_ref(int f, float x) {
    const double d = x;
    switch (f) {
    case VM_EXP: return exp(d);
    case VM_LOG: return log(d);
    case VM_TANH: return tanh(d);
    case VM_SIGMOID: return 1.0 / (1.0 + exp(-d));
    case VM_ERF: return erf(d);
    default: return d == -INFINITY ? NAN : 0.5 * d * erfc(-d * 0.70710678118654752440);
    }
}

static uint32_t vm_bits(float f) {
    uint32_t b;
    memcpy(&b, &f, sizeof b);
    return b;
}

static float vm_float(uint32_t b) {
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}

/* The error of y in ulps of the float format at the reference r (2^-149 below 2^-126), or -1 when y is not
   the exact special value it must be: NaN for NaN, the infinity r rounds to, a zero of r's sign where r
   rounds to zero. */
static double vm_ulp_error(float y, double r) {
    const float rf = (float)r;
    if (isnan(r) || isnan(y)) return isnan(r) && isnan(y) ? 0 : -1;
    if (isinf(rf) || isinf(y)) return y == rf ? 0 : -1;
    if (rf == 0 && y == 0 && signbit(rf) != signbit(y)) return -1;
    int e;
    frexp(r, &e); /* |r| in [2^(e-1), 2^e) */
    const double ulp = ldexp(1.0, (e - 1 < -126 ? -126 : e - 1) - 23);
    return fabs((double)y - r) / ulp;
}

#endif

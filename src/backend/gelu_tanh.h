/*
 * gelu_tanh.h - GELU's tanh approximation (PyTorch's gelu(approximate='tanh'), GPT-2's) in double, shared
 * by both CPU kernel sets so that their f64 results and fused gradients have the same bits.
 *
 *   gelu_tanh(x) = x/2 (1 + tanh u),  u = sqrt(2/pi) (x + 0.044715 x^3)
 *                = x sigmoid(2u) = x / (1 + e^(-2u))
 *
 * The second form is the one evaluated: 1 + tanh u cancels for negative x (all digits lost below about
 * x = -9 in double, x = -5 in f32), 1 + e^(-2u) does not. Special values: +inf gives +inf, -inf gives NaN
 * (-inf * 0, as PyTorch), a large negative x gives -0 or a tiny negative number (PyTorch's form rounds to
 * -0 earlier). The derivative is NaN at +-inf.
 *
 *   gelu_tanh'(x) = s + 2 x u' s (1 - s),  s = sigmoid(2u), 1 - s = sigmoid(-2u), u' = sqrt(2/pi) (1 + 3 0.044715 x^2)
 */
#ifndef NABLA_GELU_TANH_H
#define NABLA_GELU_TANH_H

#include <math.h>

#define NBI_GELU_TANH_K 0.7978845608028654 /* sqrt(2/pi) */
#define NBI_GELU_TANH_C 0.044715

static inline double nbi_gelu_tanh_d(double x) {
    const double u = NBI_GELU_TANH_K * (x + NBI_GELU_TANH_C * (x * x * x));
    return x / (1.0 + exp(-2.0 * u));
}

static inline double nbi_gelu_tanh_grad_d(double x) {
    const double u = NBI_GELU_TANH_K * (x + NBI_GELU_TANH_C * (x * x * x));
    const double du = NBI_GELU_TANH_K * (1.0 + 3.0 * NBI_GELU_TANH_C * (x * x));
    const double e = exp(-2.0 * u);
    const double s = 1.0 / (1.0 + e), sm = 1.0 / (1.0 + 1.0 / e); /* sigmoid(2u), sigmoid(-2u): no inf/inf */
    /* where s or 1 - s is 0 the second term is 0 for a finite x (x^2 may overflow: no inf * 0 then) */
    return (s == 0.0 || sm == 0.0) && isfinite(x) ? s : s + 2.0 * x * du * s * sm;
}

#endif

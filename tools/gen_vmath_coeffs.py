#!/usr/bin/env python3
"""Chebyshev coefficients for the erfc tail of src/backend/cpu/vmath.c.

For z in [1, ZMAX], erfc(z) = t exp(h(t) - z^2) with t = 2 / (2 + z) (the form of Numerical Recipes'
erfccheb); h is smooth in t and is interpolated at Chebyshev points of u = (2t - (ta + tb)) / (tb - ta)
on [-1, 1], from Python's math.erfc (the C library's, within an ulp or so in double). Prints the
coefficients in the order vmath.c's Clenshaw loop reads them and the largest error of the series over
a dense grid of z, relative to erfc. Usage: python3 tools/gen_vmath_coeffs.py [degree]
"""
import math
import sys

ZMAX = 10.5
DEG = int(sys.argv[1]) if len(sys.argv) > 1 else 24
ta, tb = 2 / (2 + ZMAX), 2 / 3


def h(t):
    z = 2 / t - 2
    return math.log(math.erfc(z) / t) + z * z


N = 200
nodes = [math.cos(math.pi * (j + 0.5) / N) for j in range(N)]
vals = [h(((tb - ta) * u + (ta + tb)) / 2) for u in nodes]
c = [2 / N * sum(v * math.cos(k * math.pi * (j + 0.5) / N) for j, v in enumerate(vals)) for k in range(DEG + 1)]
c[0] /= 2


def series(u):
    b1 = b2 = 0.0
    for k in range(DEG, 0, -1):
        b1, b2 = 2 * u * b1 - b2 + c[k], b1
    return u * b1 - b2 + c[0]


worst = 0.0
for i in range(20001):
    z = 1 + (ZMAX - 1) * i / 20000
    t = 2 / (2 + z)
    u = (2 * t - (ta + tb)) / (tb - ta)
    e = t * math.exp(series(u) - z * z)
    worst = max(worst, abs(e / math.erfc(z) - 1))
print("/* t in [%.17g, %.17g], degree %d, max relative error %.3g */" % (ta, tb, DEG, worst))
for k in range(DEG + 1):
    print("    %.17g," % c[k])

/*
 * ulp_sweep.c - the error of vmath's f32 functions over every f32 input.
 *
 * For each function named on the command line (all six if none) runs all 2^32 bit patterns (or every
 * STRIDE-th, with -s STRIDE) through the vectorised row function in blocks and compares each result with
 * the double reference of tests/vmath_ref.h. exp_fast (named only) sweeps nbi_vexpf_fast against exp; an
 * infinity for a true value within its ulp of FLT_MAX is counted as an error of 1 ulp, not a special. Prints the largest error in ulps and the input where it
 * occurs, how many results are not the correctly rounded float, and how many specials (NaN, infinities,
 * zero signs) differ, which must be none. Figures only; build: the ulp_sweep target.
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include "vmath_ref.h"

#define BLOCK (1 << 20)

/* f VM_COUNT: exp_fast */
static int sweep(int f, uint64_t stride) {
    const bool fast = f == VM_COUNT;
    static float x[BLOCK], y[BLOCK];
    double worst = 0;
    float worst_x = 0, worst_y = 0;
    uint64_t special = 0, misrounded = 0, count = 0;
    float first_special = 0;
    for (uint64_t b = 0; b < ((uint64_t)1 << 32);) {
        int64_t n = 0;
        for (; n < BLOCK && b < ((uint64_t)1 << 32); n++, b += stride) x[n] = vm_float((uint32_t)b);
        if (fast)
            nbi_vexpf_fast(y, x, n);
        else
            vm_fn[f](y, x, n);
        for (int64_t i = 0; i < n; i++) {
            const double r = vm_ref(fast ? VM_EXP : f, x[i]);
            double e = vm_ulp_error(y[i], r);
            if (fast && e < 0 && isinf(y[i]) && r > 0x1.fffffcp127) e = 1;
            if (e < 0) {
                if (special++ == 0) first_special = x[i];
                continue;
            }
            if (!isnan(r) && vm_bits(y[i]) != vm_bits((float)r)) misrounded++;
            if (e > worst) worst = e, worst_x = x[i], worst_y = y[i];
        }
        count += (uint64_t)n;
    }
    printf("%-8s %" PRIu64 " inputs: max error %.6f ulp at x = %a (%.9g, got %a, reference %a); "
           "%" PRIu64 " not correctly rounded; %" PRIu64 " special mismatches",
           fast ? "exp_fast" : vm_name[f], count, worst, (double)worst_x, (double)worst_x, (double)worst_y,
           vm_ref(fast ? VM_EXP : f, worst_x), misrounded, special);
    if (special) printf(" (first at x = %a)", (double)first_special);
    printf("\n");
    fflush(stdout);
    return special != 0;
}

int main(int argc, char **argv) {
    uint64_t stride = 1;
    int bad = 0, any = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-s") && i + 1 < argc) {
            stride = strtoull(argv[++i], NULL, 10);
            if (stride == 0) stride = 1;
            continue;
        }
        int f = 0;
        while (f < VM_COUNT && strcmp(argv[i], vm_name[f])) f++;
        if (f == VM_COUNT && strcmp(argv[i], "exp_fast")) {
            fprintf(stderr, "usage: ulp_sweep [-s STRIDE] [exp|log|tanh|sigmoid|erf|gelu|exp_fast]...\n");
            return 2;
        }
        bad |= sweep(f, stride);
        any = 1;
    }
    if (!any)
        for (int f = 0; f < VM_COUNT; f++) bad |= sweep(f, stride);
    return bad;
}

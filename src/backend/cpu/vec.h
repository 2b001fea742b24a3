/*
 * vec.h - portable short vectors for the CPU set's plain-C kernels (winograd.c, pool.c): GCC's and Clang's
 * vector types, lowered by the compiler to one AVX-512 register or to halves and quarters of it, so one
 * source serves each clone of NBI_CLONES (the function compiled for AVX-512, AVX2 and the baseline, the
 * best picked at load time). Vector and scalar code do the same operations in the same order, so every
 * element rounds alike. Unaligned loads and stores; the types may alias float and int32.
 */
#ifndef NABLA_BACKEND_CPU_VEC_H
#define NABLA_BACKEND_CPU_VEC_H

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && !defined(NBI_NO_CLONES)
#define NBI_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define NBI_CLONES
#endif

/* Inlined into each clone of its caller, so that it is compiled for the clone's instruction set. */
#if defined(__GNUC__) || defined(__clang__)
#define NBI_INLINE __attribute__((always_inline)) inline
#else
#define NBI_INLINE inline
#endif

#if defined(__GNUC__) || defined(__clang__)
typedef float vf16 __attribute__((vector_size(64), aligned(4), may_alias));
typedef float vf8 __attribute__((vector_size(32), aligned(4), may_alias));
typedef int vi8 __attribute__((vector_size(32), aligned(4), may_alias));
typedef int vi16 __attribute__((vector_size(64), aligned(4), may_alias));
#define VW 16 /* floats per vf16; 0 when the compiler has no vector types */
#define VLD(p) (*(const vf16 *)(p))
#define VST(p, x) (*(vf16 *)(p) = (x))
#define VLD8(p) (*(const vf8 *)(p))
#define VST8(p, x) (*(vf8 *)(p) = (x))
/* A vector of the listed lanes of a and b (a's lanes first, then b's), as many lanes as listed. */
#define SHUF(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define VW 0
#endif

#endif /* NABLA_BACKEND_CPU_VEC_H */

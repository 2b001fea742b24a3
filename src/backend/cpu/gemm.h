/*
 * gemm.h - dense matrix multiply for the CPU backend (internal).
 *
 * C = A B (+ C when accumulate), f32 and f64, any operand strides. Large products run through a packed,
 * cache-blocked driver with a SIMD micro-kernel chosen at run time (AVX-512F, AVX2+FMA, or portable C);
 * small products and matrix-vector shapes use direct loops.
 */
#ifndef NABLA_BACKEND_CPU_GEMM_H
#define NABLA_BACKEND_CPU_GEMM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifndef NBI_API
#define NBI_API __attribute__((visibility("hidden")))
#endif

/* Allocation hooks provided by the library: 64-byte aligned memory; nbi_alloc returns NULL on failure. */
NBI_API void *nbi_alloc(size_t n);
NBI_API void nbi_dealloc(void *p);
/* The same for the per-thread packing buffers kept between products (counted apart from tensors). */
NBI_API void *nbi_alloc_scratch(size_t n);
NBI_API void nbi_dealloc_scratch(void *p);

/* C = A B (+ C when accumulate). A is m x k with element (i,p) at a[i*rsa + p*csa];
   B is k x n with element (p,j) at b[p*rsb + j*csb]; C is m x n with element (i,j) at c[i*ldc + j].
   Any strides (transposed operands are just swapped strides) are consumed by the packing routines,
   never copied first. m, n or k may be 0 (k == 0 with accumulate false writes zeros). Returns 0, or -1
   if a temporary buffer could not be allocated (C then unchanged). C must not overlap A or B.
   Results are bit-identical from run to run for the same inputs and the same kernel. */
NBI_API int nbi_gemm_f32(int64_t m, int64_t n, int64_t k, const float *a, int64_t rsa, int64_t csa,
                         const float *b, int64_t rsb, int64_t csb, float *c, int64_t ldc, bool accumulate);
NBI_API int nbi_gemm_f64(int64_t m, int64_t n, int64_t k, const double *a, int64_t rsa, int64_t csa,
                         const double *b, int64_t rsb, int64_t csb, double *c, int64_t ldc, bool accumulate);

/* The plain-C reference (the tests' oracle), same contract. Sums in double (f32) / in order (f64). */
NBI_API int nbi_gemm_f32_ref(int64_t m, int64_t n, int64_t k, const float *a, int64_t rsa, int64_t csa,
                             const float *b, int64_t rsb, int64_t csb, float *c, int64_t ldc, bool accumulate);
NBI_API int nbi_gemm_f64_ref(int64_t m, int64_t n, int64_t k, const double *a, int64_t rsa, int64_t csa,
                             const double *b, int64_t rsb, int64_t csb, double *c, int64_t ldc,
                             bool accumulate);

/* Kernel ids for nbi_gemm_set_kernel. */
enum { NBI_GEMM_AUTO = 0, NBI_GEMM_REF = 1, NBI_GEMM_AVX2 = 2, NBI_GEMM_AVX512 = 3, NBI_GEMM_BLAS = 4 };

/* Force a kernel for tests/benchmarks: 0 = auto (best supported), 1 = reference, 2 = AVX2, 3 = AVX-512,
   4 = the system BLAS (only in a build with -DNABLA_BLAS=ON; for comparison, never picked by auto; a
   product whose operands BLAS cannot take runs on the best own kernel). Returns the kernel now in use (a
   request the CPU or the build cannot run falls back to the best supported). */
NBI_API int nbi_gemm_set_kernel(int which);
/* "reference", "avx2" or "avx512": the kernel in use (selecting it first if none was). */
NBI_API const char *nbi_gemm_kernel_name(void);

/* Frees the calling thread's cached packing buffers (call at thread exit; later multiplies re-allocate). */
NBI_API void nbi_gemm_release_buffers(void);

/* Registered with the allocator (src/core/mem.c) when this set first keeps something between calls. */
NBI_API void nbi_mem_on_release(void (*fn)(bool all));
NBI_API void nbi_cpu_release(bool all);

#endif /* NABLA_BACKEND_CPU_GEMM_H */

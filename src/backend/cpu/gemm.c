/*
 * gemm.c - packed, cache-blocked matrix multiply (f32, f64) for the CPU backend.
 *
 * C (m x n) = A (m x k) B (k x n) [+ C].  Operands may have any strides; C has unit column stride.
 *
 * Blocking (the usual five-loop scheme, outermost first):
 *
 *   for jc in [0,n) step NC          B block  Bp = B[pc:pc+KC, jc:jc+NC]  packed, lives in L3
 *     for pc in [0,k) step KC
 *       pack B block -> Bp: NC/NR micro-panels, each KC x NR stored row by row (NR contiguous values / step)
 *       for ic in [0,m) step MC      A block  Ap = A[ic:ic+MC, pc:pc+KC]  packed, lives in L2
 *         pack A block -> Ap: MC/MR micro-panels, each MR x KC stored column by column (MR values / step)
 *         for jr in [0,NC) step NR   one B micro-panel (KC x NR), stays in L1 across the ir loop
 *           for ir in [0,MC) step MR one A micro-panel (MR x KC), streamed from L2
 *             micro-kernel: C[ir:ir+MR, jr:jr+NR] (+)= Ap_panel * Bp_panel
 *
 * Packing pads partial panels with zeros, so the micro-kernels always run a full MR x NR tile; the tile is
 * written straight to C when it is whole and through a small stack buffer at the right/bottom edges. The
 * packing routines read A and B through their strides, so transposed or strided operands cost nothing extra.
 * K, M and N are split into blocks of near-equal size (never one long block plus a sliver).
 *
 * Micro-kernel contract: ukr(kc, pa, pb, c, ldc, mr, nr, beta) with pa = MR x kc panel (MR values per k
 * step), pb = kc x NR panel (NR values per k step); computes the MR x NR product in registers over the kc
 * steps, then stores the top-left mr x nr of it to C (row stride ldc): C = T when beta == 0 (C is not read),
 * C += T when beta == 1. Every k step broadcasts MR scalars of A against NR/W vectors of B (W = lanes per
 * register) and accumulates into MR * NR/W registers.
 *
 *   kernel        type  MR x NR  accumulators         KC   MC   NC
 *   AVX-512F      f32   12 x 32  24 zmm (12 x 2)      384  144  4096
 *   AVX-512F      f64   12 x 16  24 zmm (12 x 2)      256  144  2048
 *   AVX2+FMA      f32    6 x 16  12 ymm  (6 x 2)      256  144  4096
 *   AVX2+FMA      f64    6 x  8  12 ymm  (6 x 2)      256   96  2048
 *   portable C    both   4 x  8  array, auto-vectorised 256  64  2048
 *
 * Why these sizes: the tile uses 24 of the 32 zmm registers (12 of 16 ymm) for accumulators, leaving room
 * for the two B vectors and the broadcast; 24 independent FMA chains cover the FMA latency x throughput
 * (4 cycles x 2 pipes) with margin, and per k step there are MR + 2 loads for 2 MR FMAs, well under the load
 * ports' rate. KC sizes the B micro-panel (KC x NR) to stay in the 48 KiB L1D next to the streamed A panel;
 * MC x KC of A fits comfortably in a 1 MiB L2; KC x NC of B stays in L3. Values were tuned on AMD Zen 5.
 *
 * Small products (m n k <= 16^3) and matrix-vector shapes (m == 1 or n == 1) skip packing and run direct
 * loops (an axpy or dot formulation along whichever operand dimension is contiguous).
 *
 * Determinism: every loop order, block split and reduction order depends only on the shape, the strides
 * and the selected kernel, so results are bit-identical from run to run.
 */
#include "gemm.h"

#include <stdatomic.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#define NBI_GEMM_X86 1
#include <immintrin.h>
#else
#define NBI_GEMM_X86 0
#endif

#define NBI_GEMM_SMALL 4096 /* m n k at or below this: direct loops, no packing */

static inline int64_t min_i64(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
static inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

/* ------------------------------------------------------------------------------------------------ */
/* Per-thread packing buffers                                                                        */

static _Thread_local void *tl_buf[2];
static _Thread_local size_t tl_cap[2];

static void *get_buf(int which, size_t bytes)
{
    if (tl_cap[which] >= bytes)
        return tl_buf[which];
    bytes = (bytes + 4095) & ~(size_t)4095;
    void *p = nbi_alloc(bytes);
    if (!p)
        return NULL;
    if (tl_buf[which])
        nbi_dealloc(tl_buf[which]);
    tl_buf[which] = p;
    tl_cap[which] = bytes;
    return p;
}

void nbi_gemm_release_buffers(void)
{
    for (int i = 0; i < 2; ++i) {
        if (tl_buf[i])
            nbi_dealloc(tl_buf[i]);
        tl_buf[i] = NULL;
        tl_cap[i] = 0;
    }
}

/* ------------------------------------------------------------------------------------------------ */
/* Type-generic portable parts, instantiated for float (s) and double (d).                           */

#define GEN_MR 4
#define GEN_NR 8

typedef void (*ukr_s_fn)(int64_t kc, const float *pa, const float *pb, float *c, int64_t ldc, int mr, int nr,
                         int beta);
typedef void (*ukr_d_fn)(int64_t kc, const double *pa, const double *pb, double *c, int64_t ldc, int mr,
                         int nr, int beta);
typedef void (*axpy_s_fn)(int64_t n, float alpha, const float *x, float *y);
typedef void (*axpy_d_fn)(int64_t n, double alpha, const double *x, double *y);
typedef float (*dot_s_fn)(int64_t n, const float *x, const float *y);
typedef double (*dot_d_fn)(int64_t n, const double *x, const double *y);

#define NBI_GEMM_DEFINE_GENERIC(T, S)                                                                          \
    typedef struct {                                                                                           \
        int mr, nr;                                                                                            \
        int64_t kc, mc, nc;                                                                                    \
        ukr_##S##_fn ukr;                                                                                      \
        axpy_##S##_fn axpy;                                                                                    \
        dot_##S##_fn dot;                                                                                      \
    } cfg_##S;                                                                                                 \
                                                                                                               \
    /* Stores the mr x nr top-left of tile t (row stride tn) to C: C = t (beta 0) or C += t (beta 1). */       \
    static void edge_store_##S(const T *t, int tn, T *c, int64_t ldc, int mr, int nr, int beta)              \
    {                                                                                                          \
        for (int i = 0; i < mr; ++i) {                                                                         \
            T *ci = c + i * ldc;                                                                               \
            const T *ti = t + i * tn;                                                                          \
            if (beta)                                                                                          \
                for (int j = 0; j < nr; ++j)                                                                   \
                    ci[j] += ti[j];                                                                            \
            else                                                                                               \
                for (int j = 0; j < nr; ++j)                                                                   \
                    ci[j] = ti[j];                                                                             \
        }                                                                                                      \
    }                                                                                                          \
                                                                                                               \
    /* Portable micro-kernel, GEN_MR x GEN_NR. */                                                              \
    static void ukr_gen_##S(int64_t kc, const T *restrict pa, const T *restrict pb, T *restrict c,            \
                            int64_t ldc, int mr, int nr, int beta)                                             \
    {                                                                                                          \
        T acc[GEN_MR * GEN_NR];                                                                                \
        for (int i = 0; i < GEN_MR * GEN_NR; ++i)                                                              \
            acc[i] = 0;                                                                                        \
        for (int64_t p = 0; p < kc; ++p) {                                                                     \
            for (int i = 0; i < GEN_MR; ++i) {                                                                 \
                const T ai = pa[i];                                                                            \
                for (int j = 0; j < GEN_NR; ++j)                                                               \
                    acc[i * GEN_NR + j] += ai * pb[j];                                                         \
            }                                                                                                  \
            pa += GEN_MR;                                                                                      \
            pb += GEN_NR;                                                                                      \
        }                                                                                                      \
        edge_store_##S(acc, GEN_NR, c, ldc, mr, nr, beta);                                                     \
    }                                                                                                          \
                                                                                                               \
    static void axpy_gen_##S(int64_t n, T alpha, const T *restrict x, T *restrict y)                           \
    {                                                                                                          \
        for (int64_t j = 0; j < n; ++j)                                                                        \
            y[j] += alpha * x[j];                                                                              \
    }                                                                                                          \
                                                                                                               \
    static T dot_gen_##S(int64_t n, const T *restrict x, const T *restrict y)        \
    {                                                                                                          \
        T s0 = 0, s1 = 0, s2 = 0, s3 = 0;                                                                      \
        int64_t p = 0;                                                                                         \
        for (; p + 4 <= n; p += 4) {                                                                           \
            s0 += x[p] * y[p];                                                                                 \
            s1 += x[p + 1] * y[p + 1];                                                                         \
            s2 += x[p + 2] * y[p + 2];                                                                         \
            s3 += x[p + 3] * y[p + 3];                                                                         \
        }                                                                                                      \
        for (; p < n; ++p)                                                                                     \
            s0 += x[p] * y[p];                                                                                 \
        return (s0 + s1) + (s2 + s3);                                                                          \
    }                                                                                                          \
                                                                                                               \
    /* A block (mc x kc) -> MR-row micro-panels, each kc steps of MR values, zero-padded. */                   \
    static inline __attribute__((always_inline)) void pack_a_impl_##S(T *restrict dst, const T *a,             \
                                                                      int64_t rsa, int64_t csa, int64_t mc,    \
                                                                      int64_t kc, const int MR)                \
    {                                                                                                          \
        for (int64_t ir = 0; ir < mc; ir += MR) {                                                              \
            const int64_t mr = min_i64(MR, mc - ir);                                                           \
            const T *src = a + ir * rsa;                                                                       \
            if (mr == MR && csa == 1) {                                                                        \
                for (int64_t p = 0; p < kc; ++p)                                                               \
                    for (int i = 0; i < MR; ++i)                                                               \
                        dst[p * MR + i] = src[i * rsa + p];                                                    \
            } else if (mr == MR && rsa == 1) {                                                                 \
                for (int64_t p = 0; p < kc; ++p)                                                               \
                    for (int i = 0; i < MR; ++i)                                                               \
                        dst[p * MR + i] = src[p * csa + i];                                                    \
            } else {                                                                                           \
                for (int64_t p = 0; p < kc; ++p)                                                               \
                    for (int i = 0; i < MR; ++i)                                                               \
                        dst[p * MR + i] = i < mr ? src[i * rsa + p * csa] : (T)0;                              \
            }                                                                                                  \
            dst += MR * kc;                                                                                    \
        }                                                                                                      \
    }                                                                                                          \
                                                                                                               \
    static void pack_a_##S(T *restrict dst, const T *a, int64_t rsa, int64_t csa, int64_t mc, int64_t kc,      \
                           int MR)                                                                             \
    {                                                                                                          \
        switch (MR) {                                                                                          \
        case 4: pack_a_impl_##S(dst, a, rsa, csa, mc, kc, 4); break;                                           \
        case 6: pack_a_impl_##S(dst, a, rsa, csa, mc, kc, 6); break;                                           \
        case 12: pack_a_impl_##S(dst, a, rsa, csa, mc, kc, 12); break;                                         \
        default: pack_a_impl_##S(dst, a, rsa, csa, mc, kc, MR); break;                                         \
        }                                                                                                      \
    }                                                                                                          \
                                                                                                               \
    /* B block (kc x nc) -> NR-column micro-panels, each kc steps of NR values, zero-padded. */                \
    static inline __attribute__((always_inline)) void pack_b_impl_##S(T *restrict dst, const T *b,             \
                                                                      int64_t rsb, int64_t csb, int64_t kc,    \
                                                                      int64_t nc, const int NR)                \
    {                                                                                                          \
        for (int64_t jr = 0; jr < nc; jr += NR) {                                                              \
            const int64_t nr = min_i64(NR, nc - jr);                                                           \
            const T *src = b + jr * csb;                                                                       \
            if (nr == NR && csb == 1) {                                                                        \
                for (int64_t p = 0; p < kc; ++p)                                                               \
                    memcpy(dst + p * NR, src + p * rsb, sizeof(T) * (size_t)NR);                               \
            } else if (nr == NR && rsb == 1) {                                                                 \
                for (int64_t p = 0; p < kc; ++p)                                                               \
                    for (int j = 0; j < NR; ++j)                                                               \
                        dst[p * NR + j] = src[j * csb + p];                                                    \
            } else {                                                                                           \
                for (int64_t p = 0; p < kc; ++p)                                                               \
                    for (int j = 0; j < NR; ++j)                                                               \
                        dst[p * NR + j] = j < nr ? src[p * rsb + j * csb] : (T)0;                              \
            }                                                                                                  \
            dst += NR * kc;                                                                                    \
        }                                                                                                      \
    }                                                                                                          \
                                                                                                               \
    static void pack_b_##S(T *restrict dst, const T *b, int64_t rsb, int64_t csb, int64_t kc, int64_t nc,      \
                           int NR)                                                                             \
    {                                                                                                          \
        switch (NR) {                                                                                          \
        case 8: pack_b_impl_##S(dst, b, rsb, csb, kc, nc, 8); break;                                           \
        case 16: pack_b_impl_##S(dst, b, rsb, csb, kc, nc, 16); break;                                         \
        case 32: pack_b_impl_##S(dst, b, rsb, csb, kc, nc, 32); break;                                         \
        default: pack_b_impl_##S(dst, b, rsb, csb, kc, nc, NR); break;                                         \
        }                                                                                                      \
    }                                                                                                          \
                                                                                                               \
    static void zero_c_##S(int64_t m, int64_t n, T *c, int64_t ldc)                                            \
    {                                                                                                          \
        for (int64_t i = 0; i < m; ++i)                                                                        \
            for (int64_t j = 0; j < n; ++j)                                                                    \
                c[i * ldc + j] = 0;                                                                            \
    }                                                                                                          \
                                                                                                               \
    /* Direct loops for small products and matrix-vector shapes. Returns 0 when the shape should be packed. */ \
    static int direct_##S(const cfg_##S *cf, int64_t m, int64_t n, int64_t k, const T *a, int64_t rsa,         \
                          int64_t csa, const T *b, int64_t rsb, int64_t csb, T *c, int64_t ldc, bool acc)      \
    {                                                                                                          \
        const int small = m <= NBI_GEMM_SMALL && n <= NBI_GEMM_SMALL && k <= NBI_GEMM_SMALL &&                 \
                          m * n * k <= NBI_GEMM_SMALL;                                                         \
        if (!small && m != 1 && n != 1)                                                                        \
            return 0;                                                                                          \
        /* Vector length of each formulation whose inner loop is contiguous in memory (0 if not). */          \
        const int64_t len_j = (csb == 1 || n == 1) ? n : 0;                       /* C row += a B row */        \
        const int64_t len_p = ((csa == 1 || k == 1) && (rsb == 1 || k == 1)) ? k : 0; /* A row . B col */     \
        const int64_t len_i = ((rsa == 1 || m == 1) && (ldc == 1 || m == 1)) ? m : 0; /* C col += A col b */ \
        int64_t best = len_j > len_p ? len_j : len_p;                                                          \
        if (len_i > best)                                                                                      \
            best = len_i;                                                                                      \
        if (!small && best < 8)                                                                                \
            return 0;                                                                                          \
        if (best > 0 && best == len_p) {                                                                       \
            for (int64_t i = 0; i < m; ++i)                                                                    \
                for (int64_t j = 0; j < n; ++j) {                                                              \
                    const T s = cf->dot(k, a + i * rsa, b + j * csb);                                    \
                    c[i * ldc + j] = acc ? c[i * ldc + j] + s : s;                                             \
                }                                                                                              \
            return 1;                                                                                          \
        }                                                                                                      \
        if (!acc)                                                                                              \
            zero_c_##S(m, n, c, ldc);                                                                          \
        if (best > 0 && best == len_j) {                                                                       \
            for (int64_t i = 0; i < m; ++i)                                                                    \
                for (int64_t p = 0; p < k; ++p)                                                                \
                    cf->axpy(n, a[i * rsa + p * csa], b + p * rsb, c + i * ldc);                               \
        } else if (best > 0 && best == len_i) {                                                                \
            for (int64_t j = 0; j < n; ++j)                                                                    \
                for (int64_t p = 0; p < k; ++p)                                                                \
                    cf->axpy(m, b[p * rsb + j * csb], a + p * csa, c + j);                                     \
        } else {                                                                                               \
            for (int64_t i = 0; i < m; ++i)                                                                    \
                for (int64_t p = 0; p < k; ++p) {                                                              \
                    const T aip = a[i * rsa + p * csa];                                                        \
                    for (int64_t j = 0; j < n; ++j)                                                            \
                        c[i * ldc + j] += aip * b[p * rsb + j * csb];                                          \
                }                                                                                              \
        }                                                                                                      \
        return 1;                                                                                              \
    }                                                                                                          \
                                                                                                               \
    /* The blocked driver (see the top of the file). */                                                        \
    static int packed_##S(const cfg_##S *cf, int64_t m, int64_t n, int64_t k, const T *a, int64_t rsa,         \
                          int64_t csa, const T *b, int64_t rsb, int64_t csb, T *c, int64_t ldc, bool acc)      \
    {                                                                                                          \
        const int MR = cf->mr, NR = cf->nr;                                                                    \
        const int64_t kcb = ceil_div(k, ceil_div(k, cf->kc));                                                  \
        const int64_t mcb = round_up(ceil_div(m, ceil_div(m, cf->mc)), MR);                                    \
        const int64_t ncb = round_up(ceil_div(n, ceil_div(n, cf->nc)), NR);                                    \
        T *ap = (T *)get_buf(0, sizeof(T) * (size_t)(mcb * kcb));                                              \
        T *bp = ap ? (T *)get_buf(1, sizeof(T) * (size_t)(ncb * kcb)) : NULL;                                  \
        if (!ap || !bp)                                                                                        \
            return -1;                                                                                         \
        for (int64_t jc = 0; jc < n; jc += ncb) {                                                              \
            const int64_t nc = min_i64(ncb, n - jc);                                                           \
            for (int64_t pc = 0; pc < k; pc += kcb) {                                                          \
                const int64_t kc = min_i64(kcb, k - pc);                                                       \
                const int beta = pc > 0 || acc;                                                                \
                pack_b_##S(bp, b + pc * rsb + jc * csb, rsb, csb, kc, nc, NR);                                 \
                for (int64_t ic = 0; ic < m; ic += mcb) {                                                      \
                    const int64_t mc = min_i64(mcb, m - ic);                                                   \
                    pack_a_##S(ap, a + ic * rsa + pc * csa, rsa, csa, mc, kc, MR);                             \
                    for (int64_t jr = 0; jr < nc; jr += NR) {                                                  \
                        const int nr = (int)min_i64(NR, nc - jr);                                              \
                        T *cj = c + ic * ldc + jc + jr;                                                        \
                        for (int64_t ir = 0; ir < mc; ir += MR)                                                \
                            cf->ukr(kc, ap + ir * kc, bp + jr * kc, cj + ir * ldc, ldc,                        \
                                    (int)min_i64(MR, mc - ir), nr, beta);                                      \
                    }                                                                                          \
                }                                                                                              \
            }                                                                                                  \
        }                                                                                                      \
        return 0;                                                                                              \
    }                                                                                                          \
                                                                                                               \
    static int gemm_##S(const cfg_##S *cf, int64_t m, int64_t n, int64_t k, const T *a, int64_t rsa,           \
                        int64_t csa, const T *b, int64_t rsb, int64_t csb, T *c, int64_t ldc, bool acc)        \
    {                                                                                                          \
        if (m <= 0 || n <= 0)                                                                                  \
            return 0;                                                                                          \
        if (k <= 0) {                                                                                          \
            if (!acc)                                                                                          \
                zero_c_##S(m, n, c, ldc);                                                                      \
            return 0;                                                                                          \
        }                                                                                                      \
        if (direct_##S(cf, m, n, k, a, rsa, csa, b, rsb, csb, c, ldc, acc))                                    \
            return 0;                                                                                          \
        return packed_##S(cf, m, n, k, a, rsa, csa, b, rsb, csb, c, ldc, acc);                                 \
    }                                                                                                          \
                                                                                                               \
    static void ref_##S(int64_t m, int64_t n, int64_t k, const T *a, int64_t rsa, int64_t csa, const T *b,     \
                        int64_t rsb, int64_t csb, T *c, int64_t ldc, bool acc)                                 \
    {                                                                                                          \
        for (int64_t i = 0; i < m; ++i)                                                                        \
            for (int64_t j = 0; j < n; ++j) {                                                                  \
                double s = acc ? (double)c[i * ldc + j] : 0.0;                                                 \
                double d = 0.0;                                                                                \
                for (int64_t p = 0; p < k; ++p)                                                                \
                    d += (double)a[i * rsa + p * csa] * (double)b[p * rsb + j * csb];                          \
                c[i * ldc + j] = (T)(s + d);                                                                   \
            }                                                                                                  \
    }

NBI_GEMM_DEFINE_GENERIC(float, s)
NBI_GEMM_DEFINE_GENERIC(double, d)

/* ------------------------------------------------------------------------------------------------ */
/* x86 SIMD micro-kernels and vector helpers                                                         */

#if NBI_GEMM_X86

/* Register-tile building blocks: row i of the tile is two vectors c<i>_0, c<i>_1 (NR = 2 W). The vector
   type and intrinsics come from VT/VZERO/VSET1/VFMA/VLOAD/VSTORE/VADD/VW, defined per kernel below. */
#define UK_ROWS6(X) X(0) X(1) X(2) X(3) X(4) X(5)
#define UK_ROWS12(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
#define UK_DECL(i) VT c##i##_0 = VZERO(), c##i##_1 = VZERO();
#define UK_FMA(i)                                                                                              \
    {                                                                                                          \
        const VT a_ = VSET1(pa[i]);                                                                            \
        c##i##_0 = VFMA(a_, b0, c##i##_0);                                                                     \
        c##i##_1 = VFMA(a_, b1, c##i##_1);                                                                     \
    }
#define UK_STORE(i)                                                                                            \
    VSTORE(c + (i)*ldc, c##i##_0);                                                                             \
    VSTORE(c + (i)*ldc + VW, c##i##_1);
#define UK_STORE_ADD(i)                                                                                        \
    VSTORE(c + (i)*ldc, VADD(VLOAD(c + (i)*ldc), c##i##_0));                                                   \
    VSTORE(c + (i)*ldc + VW, VADD(VLOAD(c + (i)*ldc + VW), c##i##_1));
#define UK_STORE_TILE(i)                                                                                       \
    VSTORE(tile + (i)*2 * VW, c##i##_0);                                                                       \
    VSTORE(tile + (i)*2 * VW + VW, c##i##_1);

/* Body of an MR x (2 VW) micro-kernel; ROWS enumerates the MR rows. */
#define UK_BODY(T, S, ROWS, MR_)                                                                               \
    ROWS(UK_DECL)                                                                                              \
    for (int64_t p = 0; p < kc; ++p) {                                                                         \
        const VT b0 = VLOAD(pb), b1 = VLOAD(pb + VW);                                                          \
        ROWS(UK_FMA)                                                                                           \
        pa += (MR_);                                                                                           \
        pb += 2 * VW;                                                                                          \
    }                                                                                                          \
    if (mr == (MR_) && nr == 2 * VW) {                                                                         \
        if (beta) {                                                                                            \
            ROWS(UK_STORE_ADD)                                                                                 \
        } else {                                                                                               \
            ROWS(UK_STORE)                                                                                     \
        }                                                                                                      \
    } else {                                                                                                   \
        _Alignas(64) T tile[(MR_)*2 * VW];                                                                     \
        ROWS(UK_STORE_TILE)                                                                                    \
        edge_store_##S(tile, 2 * VW, c, ldc, mr, nr, beta);                                                    \
    }

/* AVX-512F, f32: 12 x 32 */
#define VT __m512
#define VZERO _mm512_setzero_ps
#define VSET1 _mm512_set1_ps
#define VFMA _mm512_fmadd_ps
#define VLOAD _mm512_loadu_ps
#define VSTORE _mm512_storeu_ps
#define VADD _mm512_add_ps
#define VW 16
__attribute__((target("avx512f,fma"))) static void ukr_avx512_s(int64_t kc, const float *restrict pa,
                                                                 const float *restrict pb, float *restrict c,
                                                                 int64_t ldc, int mr, int nr, int beta)
{
    UK_BODY(float, s, UK_ROWS12, 12)
}
#undef VT
#undef VZERO
#undef VSET1
#undef VFMA
#undef VLOAD
#undef VSTORE
#undef VADD
#undef VW

/* AVX-512F, f64: 12 x 16 */
#define VT __m512d
#define VZERO _mm512_setzero_pd
#define VSET1 _mm512_set1_pd
#define VFMA _mm512_fmadd_pd
#define VLOAD _mm512_loadu_pd
#define VSTORE _mm512_storeu_pd
#define VADD _mm512_add_pd
#define VW 8
__attribute__((target("avx512f,fma"))) static void ukr_avx512_d(int64_t kc, const double *restrict pa,
                                                                 const double *restrict pb, double *restrict c,
                                                                 int64_t ldc, int mr, int nr, int beta)
{
    UK_BODY(double, d, UK_ROWS12, 12)
}
#undef VT
#undef VZERO
#undef VSET1
#undef VFMA
#undef VLOAD
#undef VSTORE
#undef VADD
#undef VW

/* AVX2+FMA, f32: 6 x 16 */
#define VT __m256
#define VZERO _mm256_setzero_ps
#define VSET1 _mm256_set1_ps
#define VFMA _mm256_fmadd_ps
#define VLOAD _mm256_loadu_ps
#define VSTORE _mm256_storeu_ps
#define VADD _mm256_add_ps
#define VW 8
__attribute__((target("avx2,fma"))) static void ukr_avx2_s(int64_t kc, const float *restrict pa,
                                                            const float *restrict pb, float *restrict c,
                                                            int64_t ldc, int mr, int nr, int beta)
{
    UK_BODY(float, s, UK_ROWS6, 6)
}
#undef VT
#undef VZERO
#undef VSET1
#undef VFMA
#undef VLOAD
#undef VSTORE
#undef VADD
#undef VW

/* AVX2+FMA, f64: 6 x 8 */
#define VT __m256d
#define VZERO _mm256_setzero_pd
#define VSET1 _mm256_set1_pd
#define VFMA _mm256_fmadd_pd
#define VLOAD _mm256_loadu_pd
#define VSTORE _mm256_storeu_pd
#define VADD _mm256_add_pd
#define VW 4
__attribute__((target("avx2,fma"))) static void ukr_avx2_d(int64_t kc, const double *restrict pa,
                                                            const double *restrict pb, double *restrict c,
                                                            int64_t ldc, int mr, int nr, int beta)
{
    UK_BODY(double, d, UK_ROWS6, 6)
}
#undef VT
#undef VZERO
#undef VSET1
#undef VFMA
#undef VLOAD
#undef VSTORE
#undef VADD
#undef VW

/* Vector helpers for the direct path (AVX2 is enough: these are bound by memory, not FMA throughput). */
__attribute__((target("avx2,fma"))) static void axpy_avx2_s(int64_t n, float alpha, const float *restrict x,
                                                             float *restrict y)
{
    const __m256 va = _mm256_set1_ps(alpha);
    int64_t j = 0;
    for (; j + 32 <= n; j += 32) {
        _mm256_storeu_ps(y + j, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + j), _mm256_loadu_ps(y + j)));
        _mm256_storeu_ps(y + j + 8, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + j + 8), _mm256_loadu_ps(y + j + 8)));
        _mm256_storeu_ps(y + j + 16,
                         _mm256_fmadd_ps(va, _mm256_loadu_ps(x + j + 16), _mm256_loadu_ps(y + j + 16)));
        _mm256_storeu_ps(y + j + 24,
                         _mm256_fmadd_ps(va, _mm256_loadu_ps(x + j + 24), _mm256_loadu_ps(y + j + 24)));
    }
    for (; j + 8 <= n; j += 8)
        _mm256_storeu_ps(y + j, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + j), _mm256_loadu_ps(y + j)));
    for (; j < n; ++j)
        y[j] += alpha * x[j];
}

__attribute__((target("avx2,fma"))) static void axpy_avx2_d(int64_t n, double alpha, const double *restrict x,
                                                             double *restrict y)
{
    const __m256d va = _mm256_set1_pd(alpha);
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) {
        _mm256_storeu_pd(y + j, _mm256_fmadd_pd(va, _mm256_loadu_pd(x + j), _mm256_loadu_pd(y + j)));
        _mm256_storeu_pd(y + j + 4, _mm256_fmadd_pd(va, _mm256_loadu_pd(x + j + 4), _mm256_loadu_pd(y + j + 4)));
        _mm256_storeu_pd(y + j + 8, _mm256_fmadd_pd(va, _mm256_loadu_pd(x + j + 8), _mm256_loadu_pd(y + j + 8)));
        _mm256_storeu_pd(y + j + 12,
                         _mm256_fmadd_pd(va, _mm256_loadu_pd(x + j + 12), _mm256_loadu_pd(y + j + 12)));
    }
    for (; j + 4 <= n; j += 4)
        _mm256_storeu_pd(y + j, _mm256_fmadd_pd(va, _mm256_loadu_pd(x + j), _mm256_loadu_pd(y + j)));
    for (; j < n; ++j)
        y[j] += alpha * x[j];
}

__attribute__((target("avx2,fma"))) static float dot_avx2_s(int64_t n, const float *restrict x,
                                                            const float *restrict y)
{
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(),
           s3 = _mm256_setzero_ps();
    int64_t p = 0;
    for (; p + 32 <= n; p += 32) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + p), _mm256_loadu_ps(y + p), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + p + 8), _mm256_loadu_ps(y + p + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(x + p + 16), _mm256_loadu_ps(y + p + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(x + p + 24), _mm256_loadu_ps(y + p + 24), s3);
    }
    for (; p + 8 <= n; p += 8)
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + p), _mm256_loadu_ps(y + p), s0);
    const __m256 s = _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3));
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    float r = _mm_cvtss_f32(h);
    for (; p < n; ++p)
        r += x[p] * y[p];
    return r;
}

__attribute__((target("avx2,fma"))) static double dot_avx2_d(int64_t n, const double *restrict x,
                                                             const double *restrict y)
{
    __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd(), s2 = _mm256_setzero_pd(),
            s3 = _mm256_setzero_pd();
    int64_t p = 0;
    for (; p + 16 <= n; p += 16) {
        s0 = _mm256_fmadd_pd(_mm256_loadu_pd(x + p), _mm256_loadu_pd(y + p), s0);
        s1 = _mm256_fmadd_pd(_mm256_loadu_pd(x + p + 4), _mm256_loadu_pd(y + p + 4), s1);
        s2 = _mm256_fmadd_pd(_mm256_loadu_pd(x + p + 8), _mm256_loadu_pd(y + p + 8), s2);
        s3 = _mm256_fmadd_pd(_mm256_loadu_pd(x + p + 12), _mm256_loadu_pd(y + p + 12), s3);
    }
    for (; p + 4 <= n; p += 4)
        s0 = _mm256_fmadd_pd(_mm256_loadu_pd(x + p), _mm256_loadu_pd(y + p), s0);
    const __m256d s = _mm256_add_pd(_mm256_add_pd(s0, s1), _mm256_add_pd(s2, s3));
    __m128d h = _mm_add_pd(_mm256_castpd256_pd128(s), _mm256_extractf128_pd(s, 1));
    h = _mm_add_sd(h, _mm_unpackhi_pd(h, h));
    double r = _mm_cvtsd_f64(h);
    for (; p < n; ++p)
        r += x[p] * y[p];
    return r;
}

#endif /* NBI_GEMM_X86 */

/* ------------------------------------------------------------------------------------------------ */
/* Kernel tables and run-time selection                                                              */

static const cfg_s cfgs_s[4] = {
    [NBI_GEMM_REF] = {GEN_MR, GEN_NR, 256, 64, 2048, ukr_gen_s, axpy_gen_s, dot_gen_s},
#if NBI_GEMM_X86
    [NBI_GEMM_AVX2] = {6, 16, 256, 144, 4096, ukr_avx2_s, axpy_avx2_s, dot_avx2_s},
    [NBI_GEMM_AVX512] = {12, 32, 384, 144, 4096, ukr_avx512_s, axpy_avx2_s, dot_avx2_s},
#endif
};
static const cfg_d cfgs_d[4] = {
    [NBI_GEMM_REF] = {GEN_MR, GEN_NR, 256, 64, 2048, ukr_gen_d, axpy_gen_d, dot_gen_d},
#if NBI_GEMM_X86
    [NBI_GEMM_AVX2] = {6, 8, 256, 96, 2048, ukr_avx2_d, axpy_avx2_d, dot_avx2_d},
    [NBI_GEMM_AVX512] = {12, 16, 256, 144, 2048, ukr_avx512_d, axpy_avx2_d, dot_avx2_d},
#endif
};

static _Atomic int g_kernel; /* 0 until selected */

static int best_kernel(void)
{
#if NBI_GEMM_X86
    __builtin_cpu_init();
    const int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (avx2 && __builtin_cpu_supports("avx512f"))
        return NBI_GEMM_AVX512;
    if (avx2)
        return NBI_GEMM_AVX2;
#endif
    return NBI_GEMM_REF;
}

static int current_kernel(void)
{
    int k = atomic_load_explicit(&g_kernel, memory_order_relaxed);
    if (k == 0) {
        k = best_kernel();
        atomic_store_explicit(&g_kernel, k, memory_order_relaxed);
    }
    return k;
}

int nbi_gemm_set_kernel(int which)
{
    const int best = best_kernel();
    const int k = (which <= NBI_GEMM_AUTO || which > best) ? best : which;
    atomic_store_explicit(&g_kernel, k, memory_order_relaxed);
    return k;
}

const char *nbi_gemm_kernel_name(void)
{
    switch (current_kernel()) {
    case NBI_GEMM_AVX512: return "avx512";
    case NBI_GEMM_AVX2: return "avx2";
    default: return "reference";
    }
}

/* ------------------------------------------------------------------------------------------------ */
/* Entry points                                                                                      */

int nbi_gemm_f32(int64_t m, int64_t n, int64_t k, const float *a, int64_t rsa, int64_t csa, const float *b,
                 int64_t rsb, int64_t csb, float *c, int64_t ldc, bool accumulate)
{
    return gemm_s(&cfgs_s[current_kernel()], m, n, k, a, rsa, csa, b, rsb, csb, c, ldc, accumulate);
}

int nbi_gemm_f64(int64_t m, int64_t n, int64_t k, const double *a, int64_t rsa, int64_t csa, const double *b,
                 int64_t rsb, int64_t csb, double *c, int64_t ldc, bool accumulate)
{
    return gemm_d(&cfgs_d[current_kernel()], m, n, k, a, rsa, csa, b, rsb, csb, c, ldc, accumulate);
}

int nbi_gemm_f32_ref(int64_t m, int64_t n, int64_t k, const float *a, int64_t rsa, int64_t csa,
                     const float *b, int64_t rsb, int64_t csb, float *c, int64_t ldc, bool accumulate)
{
    if (m > 0 && n > 0)
        ref_s(m, n, k < 0 ? 0 : k, a, rsa, csa, b, rsb, csb, c, ldc, accumulate);
    return 0;
}

int nbi_gemm_f64_ref(int64_t m, int64_t n, int64_t k, const double *a, int64_t rsa, int64_t csa,
                     const double *b, int64_t rsb, int64_t csb, double *c, int64_t ldc, bool accumulate)
{
    if (m > 0 && n > 0)
        ref_d(m, n, k < 0 ? 0 : k, a, rsa, csa, b, rsb, csb, c, ldc, accumulate);
    return 0;
}

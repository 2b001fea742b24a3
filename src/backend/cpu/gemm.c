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
 * packing routines read A and B through their strides, so transposed or strided operands cost nothing extra;
 * with AVX-512 the layouts that need a transpose (row-major A, column-major B for f32) use register
 * transposes (16 x 16 f32, 8 x 8 f64) instead of element-by-element copies.
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
 * With AVX-512 (f32) more is read in place (see packed_s): rows of A contiguous along k, full tiles of an A
 * stored by columns, full panels of a row-major B. A narrow C, and a B stored by columns that is wider than
 * A is tall, run as C^T = B^T A^T, each tile stored transposed into C by the micro-kernel (see gemm_s).
 *
 * Determinism: every loop order, block split and reduction order depends only on the shape, the strides
 * and the selected kernel, so results are bit-identical from run to run.
 */
#include "gemm.h"
#include "threads.h"

#include <pthread.h>

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#define NBI_GEMM_X86 1
#include <immintrin.h>
#else
#define NBI_GEMM_X86 0
#endif

#define NBI_GEMM_SMALL 4096 /* m n k at or below this: direct loops, no packing */
#define NBI_GEMM_THREAD_WORK (1 << 20) /* multiply-adds per thread, at least, before a product is split */

static inline int64_t min_i64(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
static inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

/* ------------------------------------------------------------------------------------------------ */
/* Per-thread packing buffers                                                                        */

static _Thread_local void *tl_buf[2];
static _Thread_local size_t tl_cap[2];

/* A thread's buffers are freed when it exits, through a key destructor. */
static pthread_key_t buf_key;
static pthread_once_t buf_once = PTHREAD_ONCE_INIT;
static void buf_exit(void *unused) { (void)unused; nbi_gemm_release_buffers(); }
static void buf_key_init(void) { (void)pthread_key_create(&buf_key, buf_exit); }

static void *get_buf(int which, size_t bytes)
{
    if (tl_cap[which] >= bytes)
        return tl_buf[which];
    bytes = (bytes + 4095) & ~(size_t)4095;
    void *p = nbi_alloc_scratch(bytes);
    if (!p)
        return NULL;
    if (tl_buf[which])
        nbi_dealloc_scratch(tl_buf[which]);
    tl_buf[which] = p;
    tl_cap[which] = bytes;
    pthread_once(&buf_once, buf_key_init);
    (void)pthread_setspecific(buf_key, (void *)1);
    nbi_mem_on_release(nbi_cpu_release);
    return p;
}

void nbi_gemm_release_buffers(void)
{
    for (int i = 0; i < 2; ++i) {
        if (tl_buf[i])
            nbi_dealloc_scratch(tl_buf[i]);
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
/* Direct-A variant: A read in place, row i of the tile at a + i * rsa (k contiguous), no packing. */
/* Both take B's k stride bs: NR for a packed panel, the row stride for B read in place. */
typedef void (*ukra_s_fn)(int64_t kc, const float *a, int64_t rsa, const float *pb, int64_t bs, float *c,
                          int64_t ldc, int mr, int nr, int beta);
typedef void (*ukra_d_fn)(int64_t kc, const double *a, int64_t rsa, const double *pb, int64_t bs, double *c,
                          int64_t ldc, int mr, int nr, int beta);
/* A with its mr rows contiguous at each k (a packed panel, as = MR; or A stored by columns, read in place,
   as = its column stride), B with k stride bs (read in place when its rows are contiguous). */
typedef void (*ukrb_s_fn)(int64_t kc, const float *pa, int64_t as, const float *pb, int64_t bs, float *c,
                          int64_t ldc, int mr, int nr, int beta);
typedef void (*ukrb_d_fn)(int64_t kc, const double *pa, int64_t as, const double *pb, int64_t bs, double *c,
                          int64_t ldc, int mr, int nr, int beta);
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
        void (*pack_a)(T *dst, const T *a, int64_t rsa, int64_t csa, int64_t mc, int64_t kc, int MR);          \
        void (*pack_b)(T *dst, const T *b, int64_t rsb, int64_t csb, int64_t kc, int64_t nc, int NR);          \
        ukra_##S##_fn ukr_a; /* NULL: A is always packed */                                                    \
        ukrb_##S##_fn ukr_b; /* NULL: B is always packed (else full panels of row-major B are read in place) */ \
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
        int64_t jr = 0;                                                                                        \
        if (csb == 1) { /* rows of B contiguous: walk each row once across all full panels */                  \
            const int64_t nfull = nc / NR;                                                                     \
            for (int64_t p = 0; p < kc; ++p)                                                                   \
                for (int64_t q = 0; q < nfull; ++q)                                                            \
                    memcpy(dst + q * NR * kc + p * NR, b + p * rsb + q * NR, sizeof(T) * (size_t)NR);          \
            jr = nfull * NR;                                                                                   \
            dst += nfull * NR * kc;                                                                            \
        }                                                                                                      \
        for (; jr < nc; jr += NR) {                                                                            \
            const int64_t nr = min_i64(NR, nc - jr);                                                           \
            const T *src = b + jr * csb;                                                                       \
            if (nr == NR && rsb == 1) {                                                                        \
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
    /* ct: C is stored transposed, element (i, j) at c[j ldc + i] (the micro-kernels told by beta's bit 2,  */ \
    /* which only cfgs with ukr_a and ukr_b take). */                                                          \
    static int packed_##S(const cfg_##S *cf, int64_t m, int64_t n, int64_t k, const T *a, int64_t rsa,         \
                          int64_t csa, const T *b, int64_t rsb, int64_t csb, T *c, int64_t ldc, bool acc,      \
                          bool ct)                                                                             \
    {                                                                                                          \
        const int MR = cf->mr, NR = cf->nr;                                                                    \
        const int64_t kcb = ceil_div(k, ceil_div(k, cf->kc));                                                  \
        const int64_t mcb = round_up(ceil_div(m, ceil_div(m, cf->mc)), MR);                                    \
        const int64_t ncb = round_up(ceil_div(n, ceil_div(n, cf->nc)), NR);                                    \
        /* Rows of A with contiguous k, and full panels of B whose rows are contiguous, are read in place by */ \
        /* the micro-kernel: packing them would only copy. Only while a block of A (mc rows) or a k block  */ \
        /* of B spans at most 512 KiB: rows further apart cost more in TLB and cache-set conflicts (a      */ \
        /* 1024-wide A's rows all fall in the same sets) than their packing, most when the cache is shared. */ \
        const bool direct_a = cf->ukr_a && csa == 1 && mcb * rsa * (int64_t)sizeof(T) <= (512 << 10);           \
        /* A stored by columns holds each full tile's MR rows contiguous at every k, as a packed panel does: */  \
        /* read in place too (with the same span limit); only a last partial tile is packed, as the kernel  */  \
        /* must not read past A.                                                                             */  \
        const bool strided_a = !direct_a && cf->ukr_b && rsa == 1 && kcb * csa * (int64_t)sizeof(T) <= (512 << 10); \
        const bool direct_b = cf->ukr_a && cf->ukr_b && csb == 1 && kcb * rsb * (int64_t)sizeof(T) <= (512 << 10); \
        /* A C over 1 MiB is out of cache by the time a tile of it is stored (or added to) again. */          \
        const bool big_c = m * n * (int64_t)sizeof(T) > (1 << 20);                                             \
        T *ap = (T *)get_buf(0, sizeof(T) * (size_t)(mcb * kcb));                                              \
        T *bp = ap ? (T *)get_buf(1, sizeof(T) * (size_t)(ncb * kcb)) : NULL;                                  \
        if (!ap || !bp)                                                                                        \
            return -1;                                                                                         \
        for (int64_t jc = 0; jc < n; jc += ncb) {                                                              \
            const int64_t nc = min_i64(ncb, n - jc), nfull = direct_b ? nc / NR * NR : 0;                      \
            for (int64_t pc = 0; pc < k; pc += kcb) {                                                          \
                const int64_t kc = min_i64(kcb, k - pc);                                                       \
                const int beta = (pc > 0 || acc) | (ct ? 2 : 0);                                               \
                const T *bb = b + pc * rsb + jc * csb;                                                         \
                if (nfull < nc) /* all of B, or only its last partial panel */                                 \
                    cf->pack_b(bp + nfull * kc, bb + nfull * csb, rsb, csb, kc, nc - nfull, NR);               \
                for (int64_t ic = 0; ic < m; ic += mcb) {                                                      \
                    const int64_t mc = min_i64(mcb, m - ic);                                                   \
                    const T *ab = a + ic * rsa + pc * csa;                                                     \
                    const int64_t mfull = strided_a ? mc / MR * MR : 0;                                        \
                    if (!direct_a && mfull < mc) /* all of A, or only its last partial tile */                 \
                        cf->pack_a(ap, ab + mfull * rsa, rsa, csa, mc - mfull, kc, MR);                        \
                    for (int64_t jr = 0; jr < nc; jr += NR) {                                                  \
                        const int nr = (int)min_i64(NR, nc - jr);                                              \
                        const bool in_place = jr < nfull;                                                      \
                        const T *pb = in_place ? bb + jr : bp + jr * kc;                                       \
                        const int64_t bs = in_place ? rsb : NR;                                                \
                        /* a tile's rows step by ldc (ct: by 1), its columns by 1 (ct: by ldc) */              \
                        const int64_t ri = ct ? 1 : ldc, cj_ = ct ? ldc : 1;                                   \
                        T *cj = c + ic * ri + (jc + jr) * cj_;                                                 \
                        for (int64_t ir = 0; ir < mc; ir += MR) {                                              \
                            const int mr = (int)min_i64(MR, mc - ir);                                          \
                            T *ct_ = cj + ir * ri;                                                             \
                            if (big_c) /* fetched for writing while the kernel runs its k loop */              \
                                for (int i = 0; i < (ct ? nr : mr); ++i) {                                     \
                                    __builtin_prefetch(ct_ + i * ldc, 1, 3);                                   \
                                    __builtin_prefetch(ct_ + i * ldc + (ct ? mr : nr) - 1, 1, 3);              \
                                }                                                                              \
                            if (direct_a)                                                                      \
                                cf->ukr_a(kc, ab + ir * rsa, rsa, pb, bs, ct_, ldc, mr, nr, beta);             \
                            else if (ir < mfull)                                                               \
                                cf->ukr_b(kc, ab + ir, csa, pb, bs, ct_, ldc, mr, nr, beta);                   \
                            else if (cf->ukr_b)                                                                \
                                cf->ukr_b(kc, ap + (ir - mfull) * kc, MR, pb, bs, ct_, ldc, mr, nr, beta);     \
                            else                                                                               \
                                cf->ukr(kc, ap + ir * kc, pb, ct_, ldc, mr, nr, beta);                         \
                        }                                                                                      \
                    }                                                                                          \
                }                                                                                              \
            }                                                                                                  \
        }                                                                                                      \
        return 0;                                                                                              \
    }                                                                                                          \
                                                                                                               \
    typedef struct {                                                                                           \
        const cfg_##S *cf;                                                                                     \
        int64_t m, n, k;                                                                                       \
        const T *a;                                                                                            \
        int64_t rsa, csa;                                                                                      \
        const T *b;                                                                                            \
        int64_t rsb, csb;                                                                                      \
        T *c;                                                                                                  \
        int64_t ldc;                                                                                           \
        bool acc, by_n;                                                                                        \
        int64_t unit;                                                                                          \
    } split_##S;                                                                                               \
                                                                                                               \
    static int split_part_##S(void *vj, int64_t lo, int64_t hi)                                                \
    {                                                                                                          \
        const split_##S *j = vj;                                                                               \
        if (j->by_n) {                                                                                         \
            const int64_t j0 = lo * j->unit, j1 = min_i64(hi * j->unit, j->n);                                 \
            return packed_##S(j->cf, j->m, j1 - j0, j->k, j->a, j->rsa, j->csa, j->b + j0 * j->csb, j->rsb,    \
                              j->csb, j->c + j0, j->ldc, j->acc, false);                                       \
        }                                                                                                      \
        const int64_t i0 = lo * j->unit, i1 = min_i64(hi * j->unit, j->m);                                     \
        return packed_##S(j->cf, i1 - i0, j->n, j->k, j->a + i0 * j->rsa, j->rsa, j->csa, j->b, j->rsb,        \
                          j->csb, j->c + i0 * j->ldc, j->ldc, j->acc, false);                                  \
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
        const int parts = nbi_parallel_parts(m * n * k, NBI_GEMM_THREAD_WORK);                                 \
        /* Some products run as C^T = B^T A^T, the micro-kernels storing each tile transposed into C: a     */ \
        /* narrow C (under half a tile wide, many rows: a classifier's logits), so the tile's long side     */ \
        /* covers m instead of padding n; and a large B (over 2 MiB, out of L2) stored by columns with A by  */ \
        /* rows and n > m (x wte^T, a tied head's logits), so B^T is read in place and the transposing pack */ \
        /* covers A, the smaller (a B within L2 packs faster than the transposed stores cost). Every       */ \
        /* element is the same chain of FMAs over the same k blocks, so the same bits. */                      \
        const bool narrow = 2 * n < cf->nr && m >= 4 * cf->mr;                                                \
        const bool wide_bt = rsb == 1 && csb != 1 && csa == 1 && n > m && m >= 2 * cf->nr &&                   \
                             k * n * (int64_t)sizeof(T) > (2 << 20);                                           \
        if (parts <= 1 && cf->ukr_a && cf->ukr_b && (narrow || wide_bt))                                       \
            return packed_##S(cf, n, m, k, b, csb, rsb, a, csa, rsa, c, ldc, acc, true);                       \
        if (parts <= 1)                                                                                        \
            return packed_##S(cf, m, n, k, a, rsa, csa, b, rsb, csb, c, ldc, acc, false);                      \
        /* Split C along its longer side into whole register tiles; each part packs its own slice of the  */   \
        /* split operand and all of the other, so the parts share nothing and every element's sum runs in */   \
        /* the same order as on one thread. */                                                                 \
        split_##S j = {cf, m, n, k, a, rsa, csa, b, rsb, csb, c, ldc, acc, n >= m, n >= m ? cf->nr : cf->mr}; \
        const int64_t units = ceil_div(j.by_n ? n : m, j.unit);                                                \
        return nbi_parallel_for(units, units / parts, split_part_##S, &j);                                     \
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
#define UK_ROWS4(X) X(0) X(1) X(2) X(3)
#define UK_ROWS8(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)
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

/* The end of every micro-kernel: the tile to C (= or += by beta), through a buffer at the edges. */
#define UK_TAIL(T, S, ROWS, MR_)                                                                               \
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

/* Body of an MR x (2 VW) micro-kernel on a packed A panel, B read at k stride bs; ROWS enumerates the MR
   rows. UK_BODY is the packed B panel (bs = 2 VW). */
#define UKB_BODY(T, S, ROWS, MR_)                                                                              \
    ROWS(UK_DECL)                                                                                              \
    for (int64_t p = 0; p < kc; ++p) {                                                                         \
        const VT b0 = VLOAD(pb), b1 = VLOAD(pb + VW);                                                          \
        ROWS(UK_FMA)                                                                                           \
        pa += as;                                                                                              \
        pb += bs;                                                                                              \
    }                                                                                                          \
    UK_TAIL(T, S, ROWS, MR_)
#define UK_BODY(T, S, ROWS, MR_)                                                                               \
    const int64_t as = (MR_), bs = 2 * VW;                                                                     \
    UKB_BODY(T, S, ROWS, MR_)

/* The direct-A body: row i of the tile is read at a + i * rsa (rows past mr repeat the last real row, so
   nothing outside A is touched; their results are dropped by the edge store). */
#define UKA_PTR(i) const T *a##i = a + (int64_t)((i) < mr ? (i) : mr - 1) * rsa;
#define UKA_FMA(i)                                                                                             \
    {                                                                                                          \
        const VT a_ = VSET1(a##i[p]);                                                                          \
        c##i##_0 = VFMA(a_, b0, c##i##_0);                                                                     \
        c##i##_1 = VFMA(a_, b1, c##i##_1);                                                                     \
    }
#define UKA_BODY(T, S, ROWS, MR_)                                                                              \
    ROWS(UK_DECL)                                                                                              \
    ROWS(UKA_PTR)                                                                                              \
    for (int64_t p = 0; p < kc; ++p) {                                                                         \
        const VT b0 = VLOAD(pb), b1 = VLOAD(pb + VW);                                                          \
        ROWS(UKA_FMA)                                                                                          \
        pb += bs;                                                                                              \
    }                                                                                                          \
    UK_TAIL(T, S, ROWS, MR_)

/* Half-width tiles (MR x VW, one vector per row) for a last panel of at most VW columns: FMA is UKH_FMA_A
   (A read in place by rows, as UKA_BODY does) or UKH_FMA_B (A with k stride as, as UKB_BODY), NEXT_A what
   advances A by one k step. */
#define UKH_DECL(i) VT c##i##_0 = VZERO();
#define UKH_FMA_A(i) c##i##_0 = VFMA(VSET1(a##i[p]), b0, c##i##_0);
#define UKH_FMA_B(i) c##i##_0 = VFMA(VSET1(pa[i]), b0, c##i##_0);
#define UKH_STORE_TILE(i) VSTORE(tile + (i)*VW, c##i##_0);
#define UKH_BODY(T, S, ROWS, MR_, FMA, NEXT_A)                                                                 \
    ROWS(UKH_DECL)                                                                                             \
    for (int64_t p = 0; p < kc; ++p) {                                                                         \
        const VT b0 = VLOAD(pb);                                                                               \
        ROWS(FMA)                                                                                              \
        pb += bs;                                                                                              \
        NEXT_A                                                                                                 \
    }                                                                                                          \
    _Alignas(64) T tile[(MR_)*VW];                                                                             \
    ROWS(UKH_STORE_TILE)                                                                                       \
    edge_store_##S(tile, VW, c, ldc, mr, nr, beta);

/* AVX-512F, f32: 12 x 32 */
__attribute__((target("avx512f"))) static void tstore_avx512_s(const float *t, float *c, int64_t ldc, int mr,
                                                               int nr, bool acc);
#define VT __m512
#define VZERO _mm512_setzero_ps
#define VSET1 _mm512_set1_ps
#define VFMA _mm512_fmadd_ps
#define VLOAD _mm512_loadu_ps
#define VSTORE _mm512_storeu_ps
#define VADD _mm512_add_ps
#define VW 16
/* 12 x 16: a last panel of at most 16 columns (n = 784 = 24 x 32 + 16) computes no padding columns. */
__attribute__((target("avx512f,fma"))) static void ukrah_avx512_s(int64_t kc, const float *restrict a, int64_t rsa,
                                                                   const float *restrict pb, int64_t bs, float *restrict c,
                                                                   int64_t ldc, int mr, int nr, int beta)
{
    typedef float T;
    UK_ROWS12(UKA_PTR)
    UKH_BODY(float, s, UK_ROWS12, 12, UKH_FMA_A, )
}
__attribute__((target("avx512f,fma"))) static void ukrbh_avx512_s(int64_t kc, const float *restrict pa, int64_t as,
                                                                   const float *restrict pb, int64_t bs, float *restrict c,
                                                                   int64_t ldc, int mr, int nr, int beta)
{
    UKH_BODY(float, s, UK_ROWS12, 12, UKH_FMA_B, pa += as;)
}
__attribute__((target("avx512f,fma"))) static void ukr_avx512_s(int64_t kc, const float *restrict pa,
                                                                 const float *restrict pb, float *restrict c,
                                                                 int64_t ldc, int mr, int nr, int beta)
{
    UK_BODY(float, s, UK_ROWS12, 12)
}
/* Edge tiles of 4 and 8 rows get tiles of their own height, so m = 64 or 128 wastes no FMA on padding. */
__attribute__((target("avx512f,fma"))) static void ukrb4_avx512_s(int64_t kc, const float *restrict pa, int64_t as,
                                                                   const float *restrict pb, int64_t bs,
                                                                   float *restrict c, int64_t ldc, int mr, int nr,
                                                                   int beta)
{
    UKB_BODY(float, s, UK_ROWS4, 4)
}
__attribute__((target("avx512f,fma"))) static void ukrb8_avx512_s(int64_t kc, const float *restrict pa, int64_t as,
                                                                   const float *restrict pb, int64_t bs,
                                                                   float *restrict c, int64_t ldc, int mr, int nr,
                                                                   int beta)
{
    UKB_BODY(float, s, UK_ROWS8, 8)
}
__attribute__((target("avx512f,fma"))) static void ukrb_avx512_s(int64_t kc, const float *restrict pa, int64_t as,
                                                                  const float *restrict pb, int64_t bs,
                                                                  float *restrict c, int64_t ldc, int mr, int nr,
                                                                  int beta)
{
    if (beta & 2) { /* C stored transposed: the tile through a buffer */
        _Alignas(64) float t[12 * 32];
        ukrb_avx512_s(kc, pa, as, pb, bs, t, 32, mr, nr, 0);
        tstore_avx512_s(t, c, ldc, mr, nr, beta & 1);
        return;
    }
    if (nr <= 16 && mr > 4) {
        ukrbh_avx512_s(kc, pa, as, pb, bs, c, ldc, mr, nr, beta);
        return;
    }
    if (mr <= 4) {
        ukrb4_avx512_s(kc, pa, as, pb, bs, c, ldc, mr, nr, beta);
        return;
    }
    if (mr <= 8) {
        ukrb8_avx512_s(kc, pa, as, pb, bs, c, ldc, mr, nr, beta);
        return;
    }
    UKB_BODY(float, s, UK_ROWS12, 12)
}
__attribute__((target("avx512f,fma"))) static void ukra4_avx512_s(int64_t kc, const float *restrict a, int64_t rsa,
                                                                   const float *restrict pb, int64_t bs, float *restrict c,
                                                                   int64_t ldc, int mr, int nr, int beta)
{
    typedef float T;
    UKA_BODY(float, s, UK_ROWS4, 4)
}
__attribute__((target("avx512f,fma"))) static void ukra8_avx512_s(int64_t kc, const float *restrict a, int64_t rsa,
                                                                   const float *restrict pb, int64_t bs, float *restrict c,
                                                                   int64_t ldc, int mr, int nr, int beta)
{
    typedef float T;
    UKA_BODY(float, s, UK_ROWS8, 8)
}
__attribute__((target("avx512f,fma"))) static void ukra_avx512_s(int64_t kc, const float *restrict a, int64_t rsa,
                                                                  const float *restrict pb, int64_t bs, float *restrict c,
                                                                  int64_t ldc, int mr, int nr, int beta)
{
    typedef float T;
    if (beta & 2) { /* C stored transposed: the tile through a buffer */
        _Alignas(64) float t[12 * 32];
        ukra_avx512_s(kc, a, rsa, pb, bs, t, 32, mr, nr, 0);
        tstore_avx512_s(t, c, ldc, mr, nr, beta & 1);
        return;
    }
    if (nr <= 16 && mr > 4) {
        ukrah_avx512_s(kc, a, rsa, pb, bs, c, ldc, mr, nr, beta);
        return;
    }
    if (mr <= 4) {
        ukra4_avx512_s(kc, a, rsa, pb, bs, c, ldc, mr, nr, beta);
        return;
    }
    if (mr <= 8) {
        ukra8_avx512_s(kc, a, rsa, pb, bs, c, ldc, mr, nr, beta);
        return;
    }
    UKA_BODY(float, s, UK_ROWS12, 12)
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

/* AVX-512 packing: the row-major A panel (and column-major B panel) needs a transpose; 16 x 16 (f32) or
   8 x 8 (f64) register transposes replace the scalar gather-by-row loops. */

/* In-place transpose of the 16 x 16 f32 block held in r[0..15] (r[i] = row i). */
__attribute__((target("avx512f"), always_inline)) static inline void transpose16_ps(__m512 *r)
{
    /* t: 2 x 2 interleave of row pairs; u[4g + e] holds rows 4g..4g+3 at column 4b + e in 128-bit block b */
    const __m512 t0 = _mm512_unpacklo_ps(r[0], r[1]), t1 = _mm512_unpackhi_ps(r[0], r[1]);
    const __m512 t2 = _mm512_unpacklo_ps(r[2], r[3]), t3 = _mm512_unpackhi_ps(r[2], r[3]);
    const __m512 t4 = _mm512_unpacklo_ps(r[4], r[5]), t5 = _mm512_unpackhi_ps(r[4], r[5]);
    const __m512 t6 = _mm512_unpacklo_ps(r[6], r[7]), t7 = _mm512_unpackhi_ps(r[6], r[7]);
    const __m512 t8 = _mm512_unpacklo_ps(r[8], r[9]), t9 = _mm512_unpackhi_ps(r[8], r[9]);
    const __m512 t10 = _mm512_unpacklo_ps(r[10], r[11]), t11 = _mm512_unpackhi_ps(r[10], r[11]);
    const __m512 t12 = _mm512_unpacklo_ps(r[12], r[13]), t13 = _mm512_unpackhi_ps(r[12], r[13]);
    const __m512 t14 = _mm512_unpacklo_ps(r[14], r[15]), t15 = _mm512_unpackhi_ps(r[14], r[15]);
    const __m512 u[16] = {
        _mm512_shuffle_ps(t0, t2, 0x44),   _mm512_shuffle_ps(t0, t2, 0xEE),   _mm512_shuffle_ps(t1, t3, 0x44),
        _mm512_shuffle_ps(t1, t3, 0xEE),   _mm512_shuffle_ps(t4, t6, 0x44),   _mm512_shuffle_ps(t4, t6, 0xEE),
        _mm512_shuffle_ps(t5, t7, 0x44),   _mm512_shuffle_ps(t5, t7, 0xEE),   _mm512_shuffle_ps(t8, t10, 0x44),
        _mm512_shuffle_ps(t8, t10, 0xEE),  _mm512_shuffle_ps(t9, t11, 0x44),  _mm512_shuffle_ps(t9, t11, 0xEE),
        _mm512_shuffle_ps(t12, t14, 0x44), _mm512_shuffle_ps(t12, t14, 0xEE), _mm512_shuffle_ps(t13, t15, 0x44),
        _mm512_shuffle_ps(t13, t15, 0xEE),
    };
    /* column 4b + e = 128-bit block b of u[e], u[4 + e], u[8 + e], u[12 + e] */
    for (int e = 0; e < 4; ++e) {
        const __m512 va = _mm512_shuffle_f32x4(u[e], u[4 + e], 0x88), vb = _mm512_shuffle_f32x4(u[e], u[4 + e], 0xDD);
        const __m512 wa = _mm512_shuffle_f32x4(u[8 + e], u[12 + e], 0x88);
        const __m512 wb = _mm512_shuffle_f32x4(u[8 + e], u[12 + e], 0xDD);
        r[e] = _mm512_shuffle_f32x4(va, wa, 0x88);
        r[4 + e] = _mm512_shuffle_f32x4(vb, wb, 0x88);
        r[8 + e] = _mm512_shuffle_f32x4(va, wa, 0xDD);
        r[12 + e] = _mm512_shuffle_f32x4(vb, wb, 0xDD);
    }
}

/* In-place transpose of the 8 x 8 f64 block held in r[0..7]. */
__attribute__((target("avx512f"), always_inline)) static inline void transpose8_pd(__m512d *r)
{
    /* x[2h + e] holds rows 2h, 2h+1 at column 2b + e in 128-bit block b */
    const __m512d x[8] = {
        _mm512_unpacklo_pd(r[0], r[1]), _mm512_unpackhi_pd(r[0], r[1]), _mm512_unpacklo_pd(r[2], r[3]),
        _mm512_unpackhi_pd(r[2], r[3]), _mm512_unpacklo_pd(r[4], r[5]), _mm512_unpackhi_pd(r[4], r[5]),
        _mm512_unpacklo_pd(r[6], r[7]), _mm512_unpackhi_pd(r[6], r[7]),
    };
    for (int e = 0; e < 2; ++e) {
        const __m512d a8 = _mm512_shuffle_f64x2(x[e], x[2 + e], 0x88), ad = _mm512_shuffle_f64x2(x[e], x[2 + e], 0xDD);
        const __m512d b8 = _mm512_shuffle_f64x2(x[4 + e], x[6 + e], 0x88);
        const __m512d bd = _mm512_shuffle_f64x2(x[4 + e], x[6 + e], 0xDD);
        r[e] = _mm512_shuffle_f64x2(a8, b8, 0x88);
        r[2 + e] = _mm512_shuffle_f64x2(ad, bd, 0x88);
        r[4 + e] = _mm512_shuffle_f64x2(a8, b8, 0xDD);
        r[6 + e] = _mm512_shuffle_f64x2(ad, bd, 0xDD);
    }
}

/* f32 A block, MR = 12: 16 columns of a 12-row panel at a time (rows 12..15 of the transpose are zero). */
__attribute__((target("avx512f"))) static void pack_a_avx512_s(float *restrict dst, const float *a, int64_t rsa,
                                                               int64_t csa, int64_t mc, int64_t kc, int MR)
{
    int64_t ir = 0;
    if (csa == 1 && MR == 12) {
        for (; ir + 12 <= mc; ir += 12) {
            const float *src = a + ir * rsa;
            int64_t p = 0;
            for (; p + 16 <= kc; p += 16) {
                __m512 r[16];
                for (int i = 0; i < 12; ++i)
                    r[i] = _mm512_loadu_ps(src + i * rsa + p);
                for (int i = 12; i < 16; ++i)
                    r[i] = _mm512_setzero_ps();
                transpose16_ps(r);
                /* column j of the panel goes to dst[(p + j) * 12 ..]: 16-wide stores in ascending order, each
                   one's 4 spare lanes overwritten by the next; the last one is masked to 12 lanes */
                float *d = dst + p * 12;
                for (int j = 0; j < 15; ++j)
                    _mm512_storeu_ps(d + j * 12, r[j]);
                _mm512_mask_storeu_ps(d + 15 * 12, (__mmask16)0x0FFF, r[15]);
            }
            for (; p < kc; ++p)
                for (int i = 0; i < 12; ++i)
                    dst[p * 12 + i] = src[i * rsa + p];
            dst += 12 * kc;
        }
    } else if (rsa == 1 && MR == 12) { /* A by columns: k step p's 12 values of each panel, one row of A at a time */
        const int64_t tiles = mc / 12;
        for (int64_t p = 0; p < kc; ++p) {
            const float *src = a + p * csa;
            if (p + 8 < kc) /* rows of A far apart: the row 8 steps ahead is fetched now */
                for (int64_t i = 0; i < tiles * 12; i += 16)
                    _mm_prefetch((const char *)(src + 8 * csa + i), _MM_HINT_T0);
            for (int64_t t = 0; t < tiles; ++t)
                _mm512_mask_storeu_ps(dst + t * 12 * kc + p * 12, (__mmask16)0x0FFF,
                                      _mm512_maskz_loadu_ps((__mmask16)0x0FFF, src + t * 12));
        }
        ir = tiles * 12;
        dst += tiles * 12 * kc;
    }
    if (ir < mc)
        pack_a_s(dst, a + ir * rsa, rsa, csa, mc - ir, kc, MR);
}

/* f64 A block, MR = 12: 8 columns at a time; rows 0..7 by one 8 x 8 transpose, rows 8..11 by a second one
   (with zero rows 12..15) of which the low 4 lanes are kept. */
__attribute__((target("avx512f"))) static void pack_a_avx512_d(double *restrict dst, const double *a, int64_t rsa,
                                                               int64_t csa, int64_t mc, int64_t kc, int MR)
{
    int64_t ir = 0;
    if (csa == 1 && MR == 12) {
        for (; ir + 12 <= mc; ir += 12) {
            const double *src = a + ir * rsa;
            int64_t p = 0;
            for (; p + 8 <= kc; p += 8) {
                __m512d r[8], s[8];
                for (int i = 0; i < 8; ++i)
                    r[i] = _mm512_loadu_pd(src + i * rsa + p);
                for (int i = 0; i < 4; ++i)
                    s[i] = _mm512_loadu_pd(src + (8 + i) * rsa + p);
                for (int i = 4; i < 8; ++i)
                    s[i] = _mm512_setzero_pd();
                transpose8_pd(r);
                transpose8_pd(s);
                double *d = dst + p * 12;
                for (int j = 0; j < 8; ++j) {
                    _mm512_storeu_pd(d + j * 12, r[j]);
                    _mm256_storeu_pd(d + j * 12 + 8, _mm512_castpd512_pd256(s[j]));
                }
            }
            for (; p < kc; ++p)
                for (int i = 0; i < 12; ++i)
                    dst[p * 12 + i] = src[i * rsa + p];
            dst += 12 * kc;
        }
    }
    if (ir < mc)
        pack_a_d(dst, a + ir * rsa, rsa, csa, mc - ir, kc, MR);
}

/* f32 B block, NR = 32: B stored by columns (rsb == 1), two 16 x 16 transposes per 16 rows of a full panel;
   B stored by rows (csb == 1), vector copies (a partial panel masked). */
__attribute__((target("avx512f"))) static void pack_b_avx512_s(float *restrict dst, const float *b, int64_t rsb,
                                                               int64_t csb, int64_t kc, int64_t nc, int NR)
{
    int64_t jr = 0;
    if (rsb == 1 && csb != 1 && NR == 32) {
        for (; jr + 32 <= nc; jr += 32) {
            const float *src = b + jr * csb;
            int64_t p = 0;
            for (; p + 16 <= kc; p += 16)
                for (int h = 0; h < 2; ++h) {
                    __m512 r[16];
                    for (int j = 0; j < 16; ++j)
                        r[j] = _mm512_loadu_ps(src + (16 * h + j) * csb + p);
                    transpose16_ps(r);
                    for (int q = 0; q < 16; ++q)
                        _mm512_storeu_ps(dst + (p + q) * 32 + 16 * h, r[q]);
                }
            for (; p < kc; ++p)
                for (int j = 0; j < 32; ++j)
                    dst[p * 32 + j] = src[j * csb + p];
            dst += 32 * kc;
        }
    }
    if (csb == 1 && NR == 32) { /* B by rows: copies of 32 per row of each panel, the last one masked, zeros after */
        for (; jr < nc; jr += 32) {
            const int nr = (int)min_i64(32, nc - jr);
            const __mmask16 m0 = (__mmask16)(nr >= 16 ? 0xffff : (1u << nr) - 1),
                            m1 = (__mmask16)(nr >= 32 ? 0xffff : nr > 16 ? (1u << (nr - 16)) - 1 : 0);
            const float *src = b + jr;
            for (int64_t p = 0; p < kc; ++p) {
                _mm512_storeu_ps(dst + p * 32, _mm512_maskz_loadu_ps(m0, src + p * rsb));
                _mm512_storeu_ps(dst + p * 32 + 16, _mm512_maskz_loadu_ps(m1, src + p * rsb + 16));
            }
            dst += 32 * kc;
        }
        return;
    }
    if (jr < nc)
        pack_b_s(dst, b + jr * csb, rsb, csb, kc, nc - jr, NR);
}

/* C^T's tile: c[j ldc + i] = t[i][j] (acc: +=) for i < mr, j < nr, t (12 x 32, row stride 32) written by a
   micro-kernel with beta 0 (rows past mr and columns past nr are not read). Two 16 x 16 register transposes,
   each C row's mr values by one masked store. */
__attribute__((target("avx512f"))) static void tstore_avx512_s(const float *t, float *c, int64_t ldc, int mr,
                                                               int nr, bool acc)
{
    const __mmask16 rows = (__mmask16)((1u << mr) - 1);
    for (int h = 0; h < 2 && 16 * h < nr; ++h) {
        const int n = nr - 16 * h < 16 ? nr - 16 * h : 16;
        const __mmask16 cols = (__mmask16)(n == 16 ? 0xffff : (1u << n) - 1);
        __m512 r[16];
        for (int i = 0; i < 16; ++i)
            r[i] = i < mr ? _mm512_maskz_loadu_ps(cols, t + i * 32 + 16 * h) : _mm512_setzero_ps();
        transpose16_ps(r);
        for (int q = 0; q < n; ++q) {
            float *cq = c + (16 * h + q) * ldc;
            _mm512_mask_storeu_ps(cq, rows, acc ? _mm512_add_ps(_mm512_maskz_loadu_ps(rows, cq), r[q]) : r[q]);
        }
    }
}

#endif /* NBI_GEMM_X86 */

/* ------------------------------------------------------------------------------------------------ */
/* Kernel tables and run-time selection                                                              */

static const cfg_s cfgs_s[4] = {
    [NBI_GEMM_REF] = {GEN_MR, GEN_NR, 256, 64, 2048, ukr_gen_s, axpy_gen_s, dot_gen_s, pack_a_s, pack_b_s, NULL, NULL},
#if NBI_GEMM_X86
    [NBI_GEMM_AVX2] = {6, 16, 256, 144, 4096, ukr_avx2_s, axpy_avx2_s, dot_avx2_s, pack_a_s, pack_b_s, NULL, NULL},
    [NBI_GEMM_AVX512] = {12, 32, 384, 144, 4096, ukr_avx512_s, axpy_avx2_s, dot_avx2_s, pack_a_avx512_s, pack_b_avx512_s,
                         ukra_avx512_s, ukrb_avx512_s},
#endif
};
static const cfg_d cfgs_d[4] = {
    [NBI_GEMM_REF] = {GEN_MR, GEN_NR, 256, 64, 2048, ukr_gen_d, axpy_gen_d, dot_gen_d, pack_a_d, pack_b_d, NULL, NULL},
#if NBI_GEMM_X86
    [NBI_GEMM_AVX2] = {6, 8, 256, 96, 2048, ukr_avx2_d, axpy_avx2_d, dot_avx2_d, pack_a_d, pack_b_d, NULL, NULL},
    [NBI_GEMM_AVX512] = {12, 16, 256, 144, 2048, ukr_avx512_d, axpy_avx2_d, dot_avx2_d, pack_a_avx512_d, pack_b_d,
                         NULL, NULL},
#endif
};

static _Atomic int g_kernel; /* 0 until selected */

/* ------------------------------------------------------------------------------------------------ */
/* Optional BLAS (built with -DNABLA_BLAS=ON), for comparison: the Fortran sgemm_/dgemm_ every BLAS   */
/* provides, on a row-major product seen as the column-major C^T = B^T A^T. Operands with neither     */
/* stride 1 fall back to nabla's own kernels.                                                         */

#ifdef NABLA_HAVE_BLAS
void sgemm_(const char *ta, const char *tb, const int *m, const int *n, const int *k, const float *alpha,
            const float *a, const int *lda, const float *b, const int *ldb, const float *beta, float *c,
            const int *ldc);
void dgemm_(const char *ta, const char *tb, const int *m, const int *n, const int *k, const double *alpha,
            const double *a, const int *lda, const double *b, const int *ldb, const double *beta, double *c,
            const int *ldc);

/* The BLAS view of one operand stored as rows x cols with strides (rs, cs), to be used transposed
   (as the column-major cols x rows): 'N' with ld = rs when rows are contiguous, 'T' with ld = cs when
   columns are; 0 if neither. */
static char blas_view(int64_t rows, int64_t cols, int64_t rs, int64_t cs, int *ld)
{
    if (cs == 1 && rs >= (cols > 1 ? cols : 1) && rs <= INT32_MAX) {
        *ld = (int)(rs > 0 ? rs : 1);
        return 'N';
    }
    if (rs == 1 && cs >= (rows > 1 ? rows : 1) && cs <= INT32_MAX) {
        *ld = (int)cs;
        return 'T';
    }
    return 0;
}

#define DEF_BLAS(T, S, FN)                                                                                     \
    static bool blas_##S(int64_t m, int64_t n, int64_t k, const T *a, int64_t rsa, int64_t csa, const T *b,    \
                         int64_t rsb, int64_t csb, T *c, int64_t ldc, bool acc)                               \
    {                                                                                                          \
        int lda, ldb;                                                                                          \
        const char ta = blas_view(m, k, rsa, csa, &lda), tb = blas_view(k, n, rsb, csb, &ldb);                \
        if (!ta || !tb || m > INT32_MAX || n > INT32_MAX || k > INT32_MAX || ldc < n || ldc > INT32_MAX ||    \
            m <= 0 || n <= 0 || k <= 0)                                                                        \
            return false;                                                                                      \
        const int M = (int)n, N = (int)m, K = (int)k, LDC = (int)(ldc > 0 ? ldc : 1);                          \
        const T one = 1, beta = acc ? 1 : 0;                                                                   \
        FN(&tb, &ta, &M, &N, &K, &one, b, &ldb, a, &lda, &beta, c, &LDC);                                      \
        return true;                                                                                           \
    }
DEF_BLAS(float, s, sgemm_)
DEF_BLAS(double, d, dgemm_)
#endif

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

/* The kernel in use: chosen on first use, the best the CPU runs unless the environment variable
   NABLA_GEMM names one (reference, avx2, avx512, or blas in a build with it). */
static int current_kernel(void)
{
    int k = atomic_load_explicit(&g_kernel, memory_order_relaxed);
    if (k == 0) {
        const char *e = getenv("NABLA_GEMM");
        int want = NBI_GEMM_AUTO;
        if (e && strcmp(e, "reference") == 0) want = NBI_GEMM_REF;
        else if (e && strcmp(e, "avx2") == 0) want = NBI_GEMM_AVX2;
        else if (e && strcmp(e, "avx512") == 0) want = NBI_GEMM_AVX512;
        else if (e && strcmp(e, "blas") == 0) want = NBI_GEMM_BLAS;
        k = nbi_gemm_set_kernel(want);
    }
    return k;
}

int nbi_gemm_set_kernel(int which)
{
#ifdef NABLA_HAVE_BLAS
    if (which == NBI_GEMM_BLAS) {
        atomic_store_explicit(&g_kernel, NBI_GEMM_BLAS, memory_order_relaxed);
        return NBI_GEMM_BLAS;
    }
#endif
    const int best = best_kernel();
    const int k = (which <= NBI_GEMM_AUTO || which > best || which == NBI_GEMM_BLAS) ? best : which;
    atomic_store_explicit(&g_kernel, k, memory_order_relaxed);
    return k;
}

const char *nbi_gemm_kernel_name(void)
{
    switch (current_kernel()) {
    case NBI_GEMM_BLAS: return "blas";
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
    const int kern = current_kernel();
#ifdef NABLA_HAVE_BLAS
    if (kern == NBI_GEMM_BLAS && blas_s(m, n, k, a, rsa, csa, b, rsb, csb, c, ldc, accumulate))
        return 0;
#endif
    return gemm_s(&cfgs_s[kern == NBI_GEMM_BLAS ? best_kernel() : kern], m, n, k, a, rsa, csa, b, rsb, csb, c,
                  ldc, accumulate);
}

int nbi_gemm_f64(int64_t m, int64_t n, int64_t k, const double *a, int64_t rsa, int64_t csa, const double *b,
                 int64_t rsb, int64_t csb, double *c, int64_t ldc, bool accumulate)
{
    const int kern = current_kernel();
#ifdef NABLA_HAVE_BLAS
    if (kern == NBI_GEMM_BLAS && blas_d(m, n, k, a, rsa, csa, b, rsb, csb, c, ldc, accumulate))
        return 0;
#endif
    return gemm_d(&cfgs_d[kern == NBI_GEMM_BLAS ? best_kernel() : kern], m, n, k, a, rsa, csa, b, rsb, csb, c,
                  ldc, accumulate);
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

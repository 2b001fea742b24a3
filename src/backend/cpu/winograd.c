/*
 * winograd.c - 3x3 stride-1 f32 convolution for the CPU set by Winograd's F(2x2, 3x3) (Lavin and Gray,
 * "Fast Algorithms for Convolutional Neural Networks", 2015): 16 multiplications per 2x2 outputs and
 * input channel instead of 36, the products batched as 16 GEMMs.
 *
 * Each output tile of 2x2 (tile t = (image, ti, tj), its top-left output (2 ti, 2 tj)) reads a 4x4 input
 * patch d (rows 2 ti - ph .. +3, columns 2 tj - pw .. +3, zeros outside the image). With
 *   B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]   G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1]
 *   A^T = [1 1 1 0; 0 1 -1 -1]
 * and e = (u, v) one of the 16 points of a 4x4 tile:
 *   V[e][c][t] = (B^T d B)[e]             input transform, per channel and tile
 *   U[e][o][c] = (G g G^T)[e]             weight transform, g = w[o, c] (3x3)
 *   M[e][o][t] = sum_c U[e][o][c] V[e][c][t]        16 GEMMs (O, C) x (C, tiles)
 *   y[o, tile] = (A^T M[.][o][t] A) + b[o]          2x2 outputs, those inside (OH, OW) kept
 * The input gradient is this convolution of dy with the kernel turned by 180 degrees and its two channel
 * axes swapped, padding 2 - p (stride 1: the transposed convolution is a convolution). The weight
 * gradient is the exact adjoint of the forward: dM = A dy_tile A^T (A 4x2, the tile's 2x2 of dy, zeros
 * outside (OH, OW)), dU[e] = sum_t dM[e][.][t] V[e][.][t]^T (16 GEMMs (O, tiles) x (tiles, C)),
 * dw = G^T dU G. In exact arithmetic all three equal the direct sums; in f32 the transforms add a few
 * roundings (docs/OPS.md states the bound against the reference set).
 *
 * Work goes a chunk of images at a time (128 to 384 tiles, a count fixed by the shape), chunks split across
 * the worker pool, each with its own V and M; the weight gradient sums image blocks of a size fixed by N
 * alone in order, as conv.c does: the same bits for any thread count.
 */
#include <string.h>

#include "../backend.h"
#include "cpu.h"
#include "gemm.h"
#include "threads.h"
#include "vec.h"



bool nbi_cpu_winograd_ok(const nbi_conv *cv) {
    return cv->KH == 3 && cv->KW == 3 && cv->sh == 1 && cv->sw == 1 && cv->dh == 1 && cv->dw == 1 && cv->G == 1 &&
           cv->ph <= 2 && cv->pw <= 2 && cv->C >= 8 && cv->O >= 8 && cv->OH >= 2 && cv->OW >= 2;
}

/* U[e][o][c] = (G g G^T)[e] for g = w[o, c] (O, C, 3, 3). */
static void weight_transform(const float *w, int64_t O, int64_t C, float *U) {
    for (int64_t o = 0; o < O; o++)
        for (int64_t c = 0; c < C; c++) {
            const float *g = w + (o * C + c) * 9;
            float r[4][3], u[4][4];
            for (int q = 0; q < 3; q++) { /* G g: rows 0..3 */
                r[0][q] = g[q];
                r[1][q] = 0.5f * (g[q] + g[3 + q] + g[6 + q]);
                r[2][q] = 0.5f * (g[q] - g[3 + q] + g[6 + q]);
                r[3][q] = g[6 + q];
            }
            for (int p = 0; p < 4; p++) { /* (G g) G^T */
                u[p][0] = r[p][0];
                u[p][1] = 0.5f * (r[p][0] + r[p][1] + r[p][2]);
                u[p][2] = 0.5f * (r[p][0] - r[p][1] + r[p][2]);
                u[p][3] = r[p][2];
            }
            for (int e = 0; e < 16; e++) U[(e * O + o) * C + c] = u[e / 4][e % 4];
        }
}

/* The geometry of one transform pass: images of C planes H x W, tiles TH x TW of 2x2 outputs, padding.
   Tile t = (b TH + ti) TW + tj. */
typedef struct {
    int64_t C, H, W, TH, TW, ph, pw;
} tiling;

static int64_t plane_tiles(int64_t TH, int64_t TW) { return TH * TW; }

/* The transforms take the planes of a chunk WG at a time and run each step (copy into a padded plane, split
   into phase planes, the tile loops) on all WG planes before the next step reads them: the steps write and
   read the same rows at different offsets, and a load that overlaps a store still in the store buffer waits
   for it. They also prefetch the planes of the next group from memory (the input and dy) or for writing (y),
   which the hardware does not do soon enough across such short rows. */
#define WG 4

/* Scratch floats the transforms need per worker: WG sets of eight phase planes of (TH + 1) x TW (with room
   for the excess of the vector stores), then WG padded planes (2 TH + 2) x (2 TW + 2) (each with room for
   reads past its end; the output transform's row buffer in their place). */
static int64_t phase_size(int64_t TH, int64_t TW) { return (TH + 2) * TW + 48; }
static int64_t pad_size(int64_t TH, int64_t TW) { return (2 * TH + 2) * (2 * TW + 2) + 4 * TW + 192; }
static int64_t plane_scratch(int64_t TH, int64_t TW) { return WG * (8 * phase_size(TH, TW) + pad_size(TH, TW)); }

/* Prefetches the n floats at p (for writing when w), a line at a time. */
NBI_INLINE static void prefetch_plane(const float *p, int64_t n, bool w) {
    for (int64_t j = 0; j < n; j += 16) {
        if (w) __builtin_prefetch(p + j, 1);
        else __builtin_prefetch(p + j);
    }
}

/* The tile loops below run 16 tiles at a time on GCC's and Clang's vector types (one AVX-512 register, or
   its halves and quarters on narrower clones), the last 16 again for a remainder (a tile done twice is
   written twice with the same values), one at a time when there are fewer than 16; both do the same
   operations in the same order, so every tile rounds alike. */
#define SLD(p) (*(p))
#define SST(p, x) (*(p) = (x))

/* BODY(T, LD, ST) for every tile q < Q, as said above (BODY reads q). */
#if VW
#define TILE_LOOP(Q, BODY)                                                                                          \
    do {                                                                                                            \
        int64_t q = 0;                                                                                              \
        for (; q + VW <= (Q); q += VW) BODY(vf16, VLD, VST);                                                        \
        if (q < (Q) && (Q) >= VW) { /* the last VW tiles again: the ones done twice get the same values */          \
            q = (Q) - VW;                                                                                           \
            BODY(vf16, VLD, VST);                                                                                   \
            break;                                                                                                  \
        }                                                                                                           \
        for (; q < (Q); q++) BODY(float, SLD, SST);                                                                 \
    } while (0)
#else
#define TILE_LOOP(Q, BODY)                                                                                          \
    do {                                                                                                            \
        for (int64_t q = 0; q < (Q); q++) BODY(float, SLD, SST);                                                    \
    } while (0)
#endif

/* ev[j] = r[2 j], od[j] = r[2 j + 1] for j < n; r holds 2 n floats rounded up to 32, ev and od room for n
   rounded up to 16 (the excess is scratch). */
NBI_INLINE static void split_even_odd(const float *r, int64_t n, float *ev, float *od) {
    int64_t j = 0;
#if VW
    for (; j < n; j += 16) {
        vf16 lo = VLD(r + 2 * j), hi = VLD(r + 2 * j + 16);
        VST(ev + j, SHUF(lo, hi, 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30));
        VST(od + j, SHUF(lo, hi, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31));
    }
#endif
    for (; j < n; j++) ev[j] = r[2 * j], od[j] = r[2 * j + 1];
}

/* From a padded row r: e[j] = r[2 j], o[j] = r[2 j + 1], es[j] = r[2 j + 2], os[j] = r[2 j + 3] for j < n,
   each written 16 at a time (up to n rounded up to 16: the excess lands on the next row, written after);
   r is read up to 2 n rounded up to 32, plus 2. */
NBI_INLINE static void split_four(const float *r, int64_t n, float *e, float *o, float *es, float *os) {
    int64_t j = 0;
#if VW
    for (; j < n; j += 16) {
        vf16 lo = VLD(r + 2 * j), hi = VLD(r + 2 * j + 16), lo2 = VLD(r + 2 * j + 2), hi2 = VLD(r + 2 * j + 18);
        VST(e + j, SHUF(lo, hi, 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30));
        VST(o + j, SHUF(lo, hi, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31));
        VST(es + j, SHUF(lo2, hi2, 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30));
        VST(os + j, SHUF(lo2, hi2, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31));
    }
#endif
    for (; j < n; j++) e[j] = r[2 * j], o[j] = r[2 * j + 1], es[j] = r[2 * j + 2], os[j] = r[2 * j + 3];
}

/* r[2 j] = ev[j], r[2 j + 1] = od[j] for j < n; r has room for 2 n rounded up to 32, ev and od hold n
   rounded up to 16. */
NBI_INLINE static void merge_even_odd(const float *ev, const float *od, int64_t n, float *r) {
    int64_t j = 0;
#if VW
    for (; j < n; j += 16) {
        vf16 e = VLD(ev + j), o = VLD(od + j);
        VST(r + 2 * j, SHUF(e, o, 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23));
        VST(r + 2 * j + 16, SHUF(e, o, 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31));
    }
#endif
    for (; j < n; j++) r[2 * j] = ev[j], r[2 * j + 1] = od[j];
}

static int64_t up16(int64_t n) { return (n + 15) / 16 * 16; }

/* The distance between the 16 matrices of V, M or dM for an (r, P) matrix each: r P rounded up to 16 floats,
   plus 16, so that the 16 rows a transform writes together never fall on the same cache sets (r P floats is
   a multiple of 4 KiB for many shapes). */
static int64_t e_stride(int64_t r, int64_t P) { return up16(r * P) + 16; }

/* dst[j] = src[j] for j < n, inline (a call per row of a small image costs more than the copy): 16 at a
   time while src + 16 and dst + 16 stay within src_end and dst_end, the last 16 with zeros in the lanes from
   n on (so dst[j] = 0 for n <= j < n rounded up to 16), else one at a time. */
NBI_INLINE static void copy_row(float *dst, const float *src, int64_t n, const float *src_end, const float *dst_end) {
    int64_t j = 0;
#if VW
    for (; j + 16 <= n && src + j + 16 <= src_end && dst + j + 16 <= dst_end; j += 16) VST(dst + j, VLD(src + j));
    if (j < n && src + j + 16 <= src_end && dst + j + 16 <= dst_end) {
        const vi16 lane = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
        VST(dst + j, (vf16)((vi16)VLD(src + j) & (lane < (int)(n - j))));
        return;
    }
#endif
    for (; j < n; j++) dst[j] = src[j];
}

/* The 16 transformed values of tile q from the phase planes (see input_transform); v's matrices CP apart. */
#define IN_TILE(T, LD, ST)                                                                                          \
    do {                                                                                                            \
        T d00 = LD(X00 + q), d01 = LD(X01 + q), d02 = LD(S00 + q), d03 = LD(S01 + q);                               \
        T d10 = LD(X10 + q), d11 = LD(X11 + q), d12 = LD(S10 + q), d13 = LD(S11 + q);                               \
        T d20 = LD(X00 + q + L), d21 = LD(X01 + q + L), d22 = LD(S00 + q + L), d23 = LD(S01 + q + L);               \
        T d30 = LD(X10 + q + L), d31 = LD(X11 + q + L), d32 = LD(S10 + q + L), d33 = LD(S11 + q + L);               \
        /* B^T d: rows d0 - d2, d1 + d2, d2 - d1, d1 - d3 */                                                        \
        T t00 = d00 - d20, t01 = d01 - d21, t02 = d02 - d22, t03 = d03 - d23;                                       \
        T t10 = d10 + d20, t11 = d11 + d21, t12 = d12 + d22, t13 = d13 + d23;                                       \
        T t20 = d20 - d10, t21 = d21 - d11, t22 = d22 - d12, t23 = d23 - d13;                                       \
        T t30 = d10 - d30, t31 = d11 - d31, t32 = d12 - d32, t33 = d13 - d33;                                       \
        /* (B^T d) B: columns the same way */                                                                       \
        ST(v + 0 * CP + q, t00 - t02), ST(v + 1 * CP + q, t01 + t02), ST(v + 2 * CP + q, t02 - t01);               \
        ST(v + 3 * CP + q, t01 - t03), ST(v + 4 * CP + q, t10 - t12), ST(v + 5 * CP + q, t11 + t12);               \
        ST(v + 6 * CP + q, t12 - t11), ST(v + 7 * CP + q, t11 - t13), ST(v + 8 * CP + q, t20 - t22);               \
        ST(v + 9 * CP + q, t21 + t22), ST(v + 10 * CP + q, t22 - t21), ST(v + 11 * CP + q, t21 - t23);             \
        ST(v + 12 * CP + q, t30 - t32), ST(v + 13 * CP + q, t31 + t32), ST(v + 14 * CP + q, t32 - t31);            \
        ST(v + 15 * CP + q, t31 - t33);                                                                             \
    } while (0)

NBI_INLINE static void in_tiles(int64_t Q, int64_t L, int64_t CP, const float *X00, const float *X01, const float *X10,
                                const float *X11, const float *S00, const float *S01, const float *S10,
                                const float *S11, float *v) {
    TILE_LOOP(Q, IN_TILE);
}

/* The four outputs (plus bo) of tile q from M's 16 rows (S apart) into the output's phases. */
#define OUT_TILE(T, LD, ST)                                                                                         \
    do {                                                                                                            \
        T m00 = LD(mt + q), m01 = LD(mt + S + q), m02 = LD(mt + 2 * S + q), m03 = LD(mt + 3 * S + q);               \
        T m10 = LD(mt + 4 * S + q), m11 = LD(mt + 5 * S + q), m12 = LD(mt + 6 * S + q), m13 = LD(mt + 7 * S + q);   \
        T m20 = LD(mt + 8 * S + q), m21 = LD(mt + 9 * S + q), m22 = LD(mt + 10 * S + q);                            \
        T m23 = LD(mt + 11 * S + q), m30 = LD(mt + 12 * S + q), m31 = LD(mt + 13 * S + q);                          \
        T m32 = LD(mt + 14 * S + q), m33 = LD(mt + 15 * S + q);                                                     \
        /* A^T M: rows m0 + m1 + m2 and m1 - m2 - m3 */                                                             \
        T s00 = m00 + m10 + m20, s01 = m01 + m11 + m21, s02 = m02 + m12 + m22, s03 = m03 + m13 + m23;               \
        T s10 = m10 - m20 - m30, s11 = m11 - m21 - m31, s12 = m12 - m22 - m32, s13 = m13 - m23 - m33;               \
        /* (A^T M) A: columns the same way */                                                                       \
        ST(Y00 + q, s00 + s01 + s02 + bo), ST(Y01 + q, s01 - s02 - s03 + bo);                                       \
        ST(Y10 + q, s10 + s11 + s12 + bo), ST(Y11 + q, s11 - s12 - s13 + bo);                                       \
    } while (0)

NBI_INLINE static void out_tiles(int64_t Q, int64_t S, const float *mt, float bo, float *Y00, float *Y01, float *Y10,
                             float *Y11) {
    TILE_LOOP(Q, OUT_TILE);
}

/* The 16 values of A g A^T for tile q from dy's four phases; mt's rows S apart. A = [1 0; 1 1; 1 -1; 0 -1]:
   A g has rows (a, b) = g0, g0 + g1, g0 - g1, -g1, and each row gives (a, a + b, a - b, -b). */
#define GRAD_TILE(T, LD, ST)                                                                                        \
    do {                                                                                                            \
        T g00 = LD(G00 + q), g01 = LD(G01 + q), g10 = LD(G10 + q), g11 = LD(G11 + q);                               \
        T a0 = g00, b0 = g01, a1 = g00 + g10, b1 = g01 + g11, a2 = g00 - g10, b2 = g01 - g11, a3 = -g10, b3 = -g11; \
        ST(mt + 0 * S + q, a0), ST(mt + 1 * S + q, a0 + b0), ST(mt + 2 * S + q, a0 - b0), ST(mt + 3 * S + q, -b0); \
        ST(mt + 4 * S + q, a1), ST(mt + 5 * S + q, a1 + b1), ST(mt + 6 * S + q, a1 - b1), ST(mt + 7 * S + q, -b1); \
        ST(mt + 8 * S + q, a2), ST(mt + 9 * S + q, a2 + b2), ST(mt + 10 * S + q, a2 - b2);                          \
        ST(mt + 11 * S + q, -b2), ST(mt + 12 * S + q, a3), ST(mt + 13 * S + q, a3 + b3);                            \
        ST(mt + 14 * S + q, a3 - b3), ST(mt + 15 * S + q, -b3);                                                     \
    } while (0)

NBI_INLINE static void grad_tiles(int64_t Q, int64_t S, const float *G00, const float *G01, const float *G10,
                              const float *G11, float *mt) {
    TILE_LOOP(Q, GRAD_TILE);
}

/* The padded planes of the input and gradient transforms: WG of them at pads, pad_size apart, each R rows of
   Wp (room for 64 floats more). clear_pads zeroes them once per call (what no row copy reaches stays zero);
   pad_planes copies planes k0 .. k0 + gn - 1 of src (nplanes planes of H x W) into them, row h at row h + top
   and column left, n floats a row with zeros after (copy_row), and prefetches the planes WG further on. */
static void clear_pads(float *pads, int64_t R, int64_t Wp, int64_t pstride) {
    for (int g = 0; g < WG; g++)
        for (int64_t j = 0; j < R * Wp + 64; j++) pads[g * pstride + j] = 0.0f;
}

NBI_INLINE static void pad_planes(const float *src, int64_t nplanes, int64_t H, int64_t W, int64_t k0, int gn, float *pads,
                                  int64_t pstride, int64_t R, int64_t Wp, int64_t top, int64_t left, int64_t n) {
    const float *end = src + nplanes * H * W;
    for (int g = 0; g < gn; g++) {
        const float *sp = src + (k0 + g) * H * W;
        float *pad = pads + g * pstride;
        if (k0 + g + WG < nplanes) prefetch_plane(sp + WG * H * W, H * W, false);
        for (int64_t h = 0; h < H && h + top < R; h++)
            copy_row(pad + (h + top) * Wp + left, sp + h * W, n, end, pad + R * Wp + 64);
    }
}

/* V[e][c][t] (V + e sE + c P + t) = (B^T d B)[e] for the m images at x (m, C, H, W). Each plane, padded
   (pad: rows 2 TH + 2 of 2 TW + 2), is split into eight phase planes of rows TW long,
     X_ab[i][j] = pad[2 i + a][2 j + b]   and the same one column of tiles on, S_ab[i][j] = X_ab[i][j + 1],
   so that tap (r, s) of tile q = ti TW + tj is X_(r&1)(s&1)[q + (r>>1) TW] for s < 2 and S_(r&1)(s&1)[...]
   for s >= 2: each of the 16 outputs is a vector loop over q. tmp: plane_scratch floats. */
NBI_CLONES static void input_transform(const tiling *tl, const float *x, int64_t m, float *V, int64_t P, int64_t sE,
                                       float *tmp) {
    int64_t C = tl->C, H = tl->H, W = tl->W, TH = tl->TH, TW = tl->TW, Q = TH * TW;
    int64_t ps = phase_size(TH, TW), Wp = 2 * TW + 2, R = 2 * TH + 2; /* a phase plane; the padded plane */
    int64_t cl = tl->pw, cr = tl->pw + W < Wp ? tl->pw + W : Wp; /* the image's columns in a padded row */
    float *pads = tmp + WG * 8 * ps; /* WG padded planes */
    clear_pads(pads, R, Wp, pad_size(TH, TW));
    for (int64_t k0 = 0; k0 < m * C; k0 += WG) { /* planes k = b C + c, at x + k H W */
        int gn = m * C - k0 < WG ? (int)(m * C - k0) : WG;
        /* the whole padded planes first (their columns outside [cl, cr) and rows outside the image stay zero) */
        pad_planes(x, m * C, H, W, k0, gn, pads, pad_size(TH, TW), R, Wp, tl->ph, cl, cr - cl);
        /* padded row i2 = 2 i + a into row i of X_a0, X_a1, S_a0, S_a1 (planes 4 a + 0..3 of set g), in order */
        for (int g = 0; g < gn; g++) {
            const float *pad = pads + g * pad_size(TH, TW);
            for (int64_t i2 = 0; i2 < R; i2++) {
                float *dst = tmp + (8 * g + 4 * (i2 & 1)) * ps + (i2 >> 1) * TW;
                split_four(pad + i2 * Wp, TW, dst, dst + ps, dst + 2 * ps, dst + 3 * ps);
            }
        }
        for (int g = 0; g < gn; g++) {
            int64_t b = (k0 + g) / C, c = (k0 + g) % C;
            const float *X0 = tmp + 8 * g * ps, *X1 = X0 + 4 * ps; /* a = 0 and a = 1: X_a0, X_a1, S_a0, S_a1 */
            in_tiles(Q, TW, sE, X0, X0 + ps, X1, X1 + ps, X0 + 2 * ps, X0 + 3 * ps, X1 + 2 * ps, X1 + 3 * ps,
                     V + c * P + b * Q);
        }
    }
}

/* y (m, O, OH, OW) = A^T M[.][o][t] A + b[o] from M[e][o][t] (P tiles). The four outputs of every tile of a
   plane as vector loops over q into Y_ab (the output's phases), then interleaved into the rows of y.
   tmp: plane_scratch floats. */
NBI_CLONES static void output_transform(const float *M, int64_t O, int64_t P, int64_t S, int64_t TH, int64_t TW,
                                        int64_t OH, int64_t OW, const float *bias, int64_t m, float *y, float *tmp) {
    int64_t Q = TH * TW, ps = phase_size(TH, TW), OHW = OH * OW;
    float *row = tmp + WG * 8 * ps;
    const float *yend = y + m * O * OHW;
    for (int64_t k0 = 0; k0 < m * O; k0 += WG) { /* planes k = b O + o, at y + k OH OW */
        int gn = m * O - k0 < WG ? (int)(m * O - k0) : WG;
        for (int g = 0; g < gn; g++) { /* the four outputs of every tile into Y_ab (planes 0..3 of set g) */
            int64_t b = (k0 + g) / O, o = (k0 + g) % O;
            float *Y = tmp + 8 * g * ps;
            out_tiles(Q, S, M + o * P + b * Q, bias ? bias[o] : 0.0f, Y, Y + ps, Y + 2 * ps, Y + 3 * ps);
        }
        for (int g = 0; g < gn; g++) { /* interleaved into the rows of y */
            float *yp = y + (k0 + g) * OHW;
            const float *Y = tmp + 8 * g * ps;
            if (k0 + g + WG < m * O) prefetch_plane(yp + WG * OHW, OHW, true);
            for (int64_t ti = 0; ti < TH; ti++)
                for (int a = 0; a < 2 && 2 * ti + a < OH; a++) {
                    merge_even_odd(Y + 2 * a * ps + ti * TW, Y + (2 * a + 1) * ps + ti * TW, TW, row);
                    copy_row(yp + (2 * ti + a) * OW, row, OW, row + 2 * up16(TW), yend); /* the rest: later rows */
                }
        }
    }
}

/* dM[e][o][t] = (A g A^T)[e] for g the 2x2 of dy (m, O, OH, OW) at tile t (zeros outside): each plane
   copied into a zero-padded one (rows 2 TH of 2 TW), split into its four phases G_ab[ti][tj] =
   dy[2 ti + a][2 tj + b], then vector loops over q. tmp: plane_scratch floats. */
NBI_CLONES static void grad_transform(const float *dy, int64_t O, int64_t P, int64_t S, int64_t TH, int64_t TW,
                                      int64_t OH, int64_t OW, int64_t m, float *dM, float *tmp) {
    int64_t Q = TH * TW, ps = phase_size(TH, TW), Wp = 2 * TW; /* Wp >= OW */
    float *pads = tmp + WG * 8 * ps; /* WG padded planes; rows from OH and columns from OW stay zero */
    clear_pads(pads, 2 * TH, Wp, pad_size(TH, TW));
    for (int64_t k0 = 0; k0 < m * O; k0 += WG) { /* planes k = b O + o, at dy + k OH OW */
        int gn = m * O - k0 < WG ? (int)(m * O - k0) : WG;
        pad_planes(dy, m * O, OH, OW, k0, gn, pads, pad_size(TH, TW), 2 * TH, Wp, 0, 0, OW);
        for (int g = 0; g < gn; g++) { /* row i into row i/2 of G_a0 and G_a1 (planes 2 a, 2 a + 1 of set g) */
            const float *pad = pads + g * pad_size(TH, TW);
            for (int64_t i = 0; i < 2 * TH; i++) {
                float *ev = tmp + (8 * g + 2 * (i & 1)) * ps + (i >> 1) * TW;
                split_even_odd(pad + i * Wp, TW, ev, ev + ps);
            }
        }
        for (int g = 0; g < gn; g++) {
            int64_t b = (k0 + g) / O, o = (k0 + g) % O;
            const float *G = tmp + 8 * g * ps;
            grad_tiles(Q, S, G, G + ps, G + 2 * ps, G + 3 * ps, dM + o * P + b * Q);
        }
    }
}

/* ------------------------------------------------------------------ forward (and input gradient) --- */

/* One pass over the images: the forward (x, U, bias into y) or the weight gradient (x, dy into part). */
typedef struct {
    tiling tl;
    int64_t N, O, OH, OW, chunk, block; /* images per chunk; weight gradient: images per block */
    const float *x, *U, *bias, *dy;
    float *y, *part; /* part: 16 O C per block */
} wino_job;

/* A worker's scratch for chunks of jb->chunk images: V (16 matrices of C x tiles), M or dM (16 of O x tiles),
   the transforms' planes. NULL when out of memory. */
static float *chunk_scratch(const wino_job *jb, float **M, float **tmp) {
    const tiling *tl = &jb->tl;
    int64_t Pmax = jb->chunk * plane_tiles(tl->TH, tl->TW);
    int64_t nV = 16 * e_stride(tl->C, Pmax), nM = 16 * e_stride(jb->O, Pmax);
    float *V = nbi_alloc(sizeof(float) * (size_t)(nV + nM + plane_scratch(tl->TH, tl->TW)));
    if (V) *M = V + nV, *tmp = V + nV + nM;
    return V;
}

static int fwd_chunks(void *ctx, int64_t lo, int64_t hi) {
    const wino_job *jb = ctx;
    const tiling *tl = &jb->tl;
    int64_t C = tl->C, O = jb->O, T1 = plane_tiles(tl->TH, tl->TW);
    float *M, *tmp, *V = chunk_scratch(jb, &M, &tmp);
    if (!V) return -1;
    int rc = 0;
    for (int64_t k = lo; k < hi && rc == 0; k++) {
        int64_t n0 = k * jb->chunk, m = jb->N - n0 < jb->chunk ? jb->N - n0 : jb->chunk, P = m * T1;
        int64_t sV = e_stride(C, P), sM = e_stride(O, P);
        input_transform(tl, jb->x + n0 * C * tl->H * tl->W, m, V, P, sV, tmp);
        for (int e = 0; e < 16 && rc == 0; e++)
            rc = nbi_gemm_f32(O, P, C, jb->U + e * O * C, C, 1, V + e * sV, P, 1, M + e * sM, P, false);
        if (rc == 0)
            output_transform(M, O, P, sM, tl->TH, tl->TW, jb->OH, jb->OW, jb->bias, m, jb->y + n0 * O * jb->OH * jb->OW,
                             tmp);
    }
    nbi_dealloc(V);
    return rc;
}

/* Images per chunk: between about 128 and 384 tiles, the count that leaves the least of the GEMM's last
   panel empty (a panel is 32 columns, a last one of at most 16 runs on a 16-wide kernel), the larger count
   on a tie; at least one image, at most 32; a function of the shape only (the products of the weight
   gradient sum over a chunk's tiles). For 14 x 14 outputs (49 tiles an image): 8 images, 392 tiles, 2%
   padding, and 128 images make 16 chunks, an even share for 2, 4, 8 or 16 threads. */
static int64_t tile_chunk(int64_t tiles_per_image) {
    int64_t q = tiles_per_image > 0 ? tiles_per_image : 1, lo = (128 + q - 1) / q, hi = (384 + q - 1) / q;
    if (hi > 32) hi = 32;
    if (lo > hi) lo = hi;
    int64_t best = lo;
    double waste = 2;
    for (int64_t m = lo; m <= hi; m++) {
        int64_t r = m * q % 32, pad = r == 0 ? 0 : r <= 16 ? 16 - r : 32 - r;
        double w = (double)pad / (double)(m * q);
        if (w <= waste + 1e-12) waste = w, best = m;
    }
    return best;
}

/* y (N, O, OH, OW) = the 3x3 stride-1 convolution of x (N, C, H, W) with U (the transformed weights). */
static int winograd_forward(float *y, const float *x, const float *U, const float *b, int64_t N, int64_t C,
                            int64_t H, int64_t W, int64_t O, int64_t OH, int64_t OW, int64_t ph, int64_t pw) {
    wino_job jb = {{C, H, W, (OH + 1) / 2, (OW + 1) / 2, ph, pw}, N, O, OH, OW, 0, 0, x, U, b, NULL, y, NULL};
    jb.chunk = tile_chunk(plane_tiles(jb.tl.TH, jb.tl.TW));
    return nbi_parallel_for((N + jb.chunk - 1) / jb.chunk, 1, fwd_chunks, &jb);
}

int nbi_cpu_winograd_conv2d(float *y, const float *x, const float *w, const float *b, const nbi_conv *cv) {
    float *U = nbi_alloc(sizeof(float) * (size_t)(16 * cv->O * cv->C));
    if (!U) return -1;
    weight_transform(w, cv->O, cv->C, U);
    int rc = winograd_forward(y, x, U, b, cv->N, cv->C, cv->H, cv->W, cv->O, cv->OH, cv->OW, cv->ph, cv->pw);
    nbi_dealloc(U);
    return rc;
}

int nbi_cpu_winograd_conv2d_input(float *dx, const float *dy, const float *w, const nbi_conv *cv) {
    int64_t O = cv->O, C = cv->C;
    float *wt = nbi_alloc(sizeof(float) * (size_t)(9 * O * C + 16 * O * C));
    if (!wt) return -1;
    float *U = wt + 9 * O * C;
    for (int64_t c = 0; c < C; c++) /* wt (C, O, 3, 3): wt[c, o, p, q] = w[o, c, 2 - p, 2 - q] */
        for (int64_t o = 0; o < O; o++)
            for (int p = 0; p < 9; p++) wt[(c * O + o) * 9 + p] = w[(o * C + c) * 9 + 8 - p];
    weight_transform(wt, C, O, U);
    int rc = winograd_forward(dx, dy, U, NULL, cv->N, O, cv->OH, cv->OW, C, cv->H, cv->W, 2 - cv->ph, 2 - cv->pw);
    nbi_dealloc(wt);
    return rc;
}

/* ----------------------------------------------------------------------------- weight gradient --- */

static int bww_blocks(void *ctx, int64_t lo, int64_t hi) {
    const wino_job *jb = ctx;
    const tiling *tl = &jb->tl;
    int64_t C = tl->C, O = jb->O, T1 = plane_tiles(tl->TH, tl->TW);
    float *dM, *tmp, *V = chunk_scratch(jb, &dM, &tmp);
    if (!V) return -1;
    int rc = 0;
    for (int64_t k = lo; k < hi && rc == 0; k++) {
        float *acc = jb->part + k * 16 * O * C;
        int64_t nb0 = k * jb->block, nb1 = nb0 + jb->block < jb->N ? nb0 + jb->block : jb->N;
        for (int64_t n0 = nb0; n0 < nb1 && rc == 0; n0 += jb->chunk) {
            int64_t m = nb1 - n0 < jb->chunk ? nb1 - n0 : jb->chunk, P = m * T1;
            int64_t sV = e_stride(C, P), sM = e_stride(O, P);
            input_transform(tl, jb->x + n0 * C * tl->H * tl->W, m, V, P, sV, tmp);
            grad_transform(jb->dy + n0 * O * jb->OH * jb->OW, O, P, sM, tl->TH, tl->TW, jb->OH, jb->OW, m, dM, tmp);
            /* dU[e] (O, C) += dM[e] (O, P) V[e]^T: V[e] (C, P) read as its transpose */
            for (int e = 0; e < 16 && rc == 0; e++)
                rc = nbi_gemm_f32(O, C, P, dM + e * sM, P, 1, V + e * sV, 1, P, acc + e * O * C, C, n0 > nb0);
        }
    }
    nbi_dealloc(V);
    return rc;
}

/* Blocks of images for the weight gradient: at least 32 images each and at most 64 blocks (N alone). Each
   block keeps 16 O C floats of partial sums until the end (4 blocks of a batch of 128: 1 MiB for O = 64,
   C = 32). */
static int64_t image_block(int64_t N) {
    int64_t b = (N + 63) / 64;
    return b < 32 ? 32 : b;
}

int nbi_cpu_winograd_conv2d_weight(float *dw, const float *x, const float *dy, const nbi_conv *cv) {
    int64_t O = cv->O, C = cv->C, nw = 16 * O * C, blk = image_block(cv->N), nb = (cv->N + blk - 1) / blk;
    if (nb == 0) {
        memset(dw, 0, sizeof(float) * (size_t)(9 * O * C));
        return 0;
    }
    float *part = nbi_alloc(sizeof(float) * (size_t)(nb * nw));
    if (!part) return -1;
    wino_job jb = {{C, cv->H, cv->W, (cv->OH + 1) / 2, (cv->OW + 1) / 2, cv->ph, cv->pw}, cv->N, O, cv->OH, cv->OW, 0,
                   blk, x, NULL, NULL, dy, NULL, part};
    int64_t ck = tile_chunk(plane_tiles(jb.tl.TH, jb.tl.TW));
    jb.chunk = ck < blk ? ck : blk;
    int rc = nbi_parallel_for(nb, 1, bww_blocks, &jb);
    for (int64_t k = 1; rc == 0 && k < nb; k++)
        for (int64_t e = 0; e < nw; e++) part[e] += part[k * nw + e];
    for (int64_t o = 0; rc == 0 && o < O; o++) /* dw = G^T dU G */
        for (int64_t c = 0; c < C; c++) {
            float u[4][4], r[3][4];
            for (int e = 0; e < 16; e++) u[e / 4][e % 4] = part[(e * O + o) * C + c];
            for (int q = 0; q < 4; q++) { /* G^T dU: G^T = [1 1/2 1/2 0; 0 1/2 -1/2 0; 0 1/2 1/2 1] */
                r[0][q] = u[0][q] + 0.5f * (u[1][q] + u[2][q]);
                r[1][q] = 0.5f * (u[1][q] - u[2][q]);
                r[2][q] = 0.5f * (u[1][q] + u[2][q]) + u[3][q];
            }
            float *g = dw + (o * C + c) * 9;
            for (int p = 0; p < 3; p++) { /* (G^T dU) G */
                g[3 * p + 0] = r[p][0] + 0.5f * (r[p][1] + r[p][2]);
                g[3 * p + 1] = 0.5f * (r[p][1] - r[p][2]);
                g[3 * p + 2] = 0.5f * (r[p][1] + r[p][2]) + r[p][3];
            }
        }
    nbi_dealloc(part);
    return rc;
}

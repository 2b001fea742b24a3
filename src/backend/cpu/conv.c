/*
 * conv.c - 2-D convolution for the CPU set: im2col onto the packed GEMM (gemm.c), split over images;
 * f32 3x3 stride-1 convolutions with 8 or more channels in and out go to winograd.c instead.
 *
 * For image n and group g (Cg = C/G input and Og = O/G output channels, CK = Cg KH KW, S = OH OW):
 *   col (CK, S)        col[(c KH + p) KW + q, i OW + j] = x[n, g Cg + c, i sh - ph + p dh, j sw - pw + q dw]
 *                      (0 in the padding)
 *   forward            y[n, g Og : (g+1) Og] (Og, S) = w_g (Og, CK) col + b
 *   input gradient     colg (CK, S) = w_g^T dy[n, g]; dx[n] += col2im(colg)
 *   weight gradient    dw_g (Og, CK) += dy[n, g] (Og, S) col^T
 * The images go through the products a chunk at a time (side by side as columns: about 2048 of them, a
 * count fixed by the shape), so that small images still make products large enough for the GEMM. A 1x1
 * kernel with stride 1 and no padding needs no col: x[n, g] is it. Chunks are split across the worker
 * pool, each part with its own col buffer and GEMMs on its own thread; with one chunk the GEMM itself is
 * split. The weight gradient sums images in blocks of a size fixed by N alone, each block in
 * image order into its own buffer, then the blocks in order: the same bits for any thread count.
 */
#include <string.h>

#include "../backend.h"
#include "cpu.h"
#include "gemm.h"
#include "threads.h"

static bool pointwise(const nbi_conv *cv) {
    return cv->KH == 1 && cv->KW == 1 && cv->sh == 1 && cv->sw == 1 && cv->ph == 0 && cv->pw == 0;
}

/* The output columns [*j0, *j1) whose input column j sw + off lies inside [0, W); the others read padding. */
static void col_span(const nbi_conv *cv, int64_t off, int64_t *j0, int64_t *j1) {
    int64_t lo = off < 0 ? (-off + cv->sw - 1) / cv->sw : 0;           /* the first j with j sw + off >= 0 */
    int64_t hi = cv->W - off > 0 ? (cv->W - off - 1) / cv->sw + 1 : 0; /* one past the last with j sw + off < W */
    *j0 = lo < cv->OW ? lo : cv->OW;
    *j1 = hi < cv->OW ? hi : cv->OW;
    if (*j1 < *j0) *j1 = *j0;
}

#define CONV_KERNELS(T, S, GEMM)                                                                                   \
    /* col (CK, OH OW) from the Cg channels of one image starting at x (Cg, H, W); col's rows ld apart. */         \
    static void im2col_##S(const nbi_conv *cv, int64_t Cg, const T *x, T *col, int64_t ld) {                       \
        for (int64_t c = 0; c < Cg; c++)                                                                           \
            for (int64_t p = 0; p < cv->KH; p++)                                                                   \
                for (int64_t q = 0; q < cv->KW; q++) {                                                             \
                    T *row = col + ((c * cv->KH + p) * cv->KW + q) * ld;                                           \
                    int64_t off = q * cv->dw - cv->pw, j0, j1;                                                     \
                    col_span(cv, off, &j0, &j1);                                                                   \
                    for (int64_t i = 0; i < cv->OH; i++) {                                                         \
                        int64_t h = i * cv->sh - cv->ph + p * cv->dh;                                              \
                        T *r = row + i * cv->OW;                                                                   \
                        if (h < 0 || h >= cv->H) {                                                                 \
                            memset(r, 0, sizeof(T) * (size_t)cv->OW);                                              \
                            continue;                                                                              \
                        }                                                                                          \
                        const T *xr = x + (c * cv->H + h) * cv->W;                                                 \
                        for (int64_t j = 0; j < j0; j++) r[j] = 0;                                                 \
                        if (cv->sw == 1)                                                                           \
                            memcpy(r + j0, xr + j0 + off, sizeof(T) * (size_t)(j1 - j0));                          \
                        else                                                                                       \
                            for (int64_t j = j0; j < j1; j++) r[j] = xr[j * cv->sw + off];                         \
                        for (int64_t j = j1; j < cv->OW; j++) r[j] = 0;                                            \
                    }                                                                                              \
                }                                                                                                  \
    }                                                                                                              \
                                                                                                                   \
    /* dx (Cg, H, W) += the taps of colg (CK, OH OW; rows ld apart), in (c, p, q, i, j) order. */                  \
    static void col2im_##S(const nbi_conv *cv, int64_t Cg, const T *col, int64_t ld, T *dx) {                      \
        for (int64_t c = 0; c < Cg; c++)                                                                           \
            for (int64_t p = 0; p < cv->KH; p++)                                                                   \
                for (int64_t q = 0; q < cv->KW; q++) {                                                             \
                    const T *row = col + ((c * cv->KH + p) * cv->KW + q) * ld;                                     \
                    int64_t off = q * cv->dw - cv->pw, j0, j1;                                                     \
                    col_span(cv, off, &j0, &j1);                                                                   \
                    for (int64_t i = 0; i < cv->OH; i++) {                                                         \
                        int64_t h = i * cv->sh - cv->ph + p * cv->dh;                                              \
                        if (h < 0 || h >= cv->H) continue;                                                         \
                        T *xr = dx + (c * cv->H + h) * cv->W;                                                      \
                        const T *r = row + i * cv->OW;                                                             \
                        if (cv->sw == 1)                                                                           \
                            for (int64_t j = j0; j < j1; j++) xr[j + off] += r[j];                                 \
                        else                                                                                       \
                            for (int64_t j = j0; j < j1; j++) xr[j * cv->sw + off] += r[j];                        \
                    }                                                                                              \
                }                                                                                                  \
    }                                                                                                              \
                                                                                                                   \
    typedef struct {                                                                                               \
        const nbi_conv *cv;                                                                                        \
        T *out;                                                                                                    \
        const T *a, *b, *bias;                                                                                     \
        T *part; /* weight gradient: one (O, CK) buffer per block */                                               \
        int64_t block, chunk; /* images per weight-gradient block; images per product */                           \
    } job_##S;                                                                                                     \
                                                                                                                   \
    /* Scratch of one part: col (CK, chunk OH OW) and a (Og, chunk OH OW) staging area for y or dy. */             \
    static T *scratch_##S(const job_##S *jb, T **stage) {                                                          \
        const nbi_conv *cv = jb->cv;                                                                               \
        int64_t cols = jb->chunk * cv->OH * cv->OW, CK = cv->C / cv->G * cv->KH * cv->KW;                          \
        T *col = nbi_alloc(sizeof(T) * (size_t)((CK + cv->O / cv->G) * cols));                                     \
        *stage = col ? col + CK * cols : NULL;                                                                     \
        return col;                                                                                                \
    }                                                                                                              \
                                                                                                                   \
    /* Forward for the chunks [lo, hi) of jb->chunk images: a = x, b = w. The chunk's images side by side in       \
       one product, y_g (Og, m S) = w_g col, then scattered to the images (with the bias). */                      \
    static int fwd_##S(void *ctx, int64_t lo, int64_t hi) {                                                        \
        const job_##S *jb = ctx;                                                                                   \
        const nbi_conv *cv = jb->cv;                                                                               \
        int64_t Cg = cv->C / cv->G, Og = cv->O / cv->G, CK = Cg * cv->KH * cv->KW, OHW = cv->OH * cv->OW;          \
        bool pw = pointwise(cv);                                                                                   \
        T *stage = NULL, *col = pw ? NULL : scratch_##S(jb, &stage);                                               \
        if (!pw && !col) return -1;                                                                                \
        int rc = 0;                                                                                                \
        for (int64_t ck = lo; ck < hi && rc == 0; ck++) {                                                          \
            int64_t n0 = ck * jb->chunk, m = cv->N - n0 < jb->chunk ? cv->N - n0 : jb->chunk, ld = m * OHW;        \
            for (int64_t g = 0; g < cv->G && rc == 0; g++) {                                                       \
                for (int64_t b = 0; !pw && b < m; b++)                                                             \
                    im2col_##S(cv, Cg, jb->a + ((n0 + b) * cv->C + g * Cg) * cv->H * cv->W, col + b * OHW, ld);    \
                for (int64_t b = 0; b < (pw ? m : 1) && rc == 0; b++) {                                            \
                    const T *src = pw ? jb->a + ((n0 + b) * cv->C + g * Cg) * cv->H * cv->W : col;                 \
                    T *dst = pw || m == 1 ? jb->out + ((n0 + b) * cv->O + g * Og) * OHW : stage;                   \
                    int64_t n = pw ? OHW : ld;                                                                     \
                    rc = GEMM(Og, n, CK, jb->b + g * Og * CK, CK, 1, src, n, 1, dst, n, false);                    \
                }                                                                                                  \
                for (int64_t b = 0; rc == 0 && b < m; b++) {                                                       \
                    T *yg = jb->out + ((n0 + b) * cv->O + g * Og) * OHW;                                           \
                    for (int64_t o = 0; o < Og; o++) {                                                             \
                        T bo = jb->bias ? jb->bias[g * Og + o] : (T)0;                                             \
                        if (!pw && m > 1)                                                                          \
                            for (int64_t s = 0; s < OHW; s++) yg[o * OHW + s] = stage[o * ld + b * OHW + s] + bo;  \
                        else if (jb->bias)                                                                         \
                            for (int64_t s = 0; s < OHW; s++) yg[o * OHW + s] += bo;                               \
                    }                                                                                              \
                }                                                                                                  \
            }                                                                                                      \
        }                                                                                                          \
        nbi_dealloc(col);                                                                                          \
        return rc;                                                                                                 \
    }                                                                                                              \
                                                                                                                   \
    /* dy of the chunk's m images for group g side by side: stage (Og, m S). */                                    \
    static void gather_dy_##S(const job_##S *jb, const T *dy, int64_t n0, int64_t m, int64_t g, T *stage) {        \
        const nbi_conv *cv = jb->cv;                                                                               \
        int64_t Og = cv->O / cv->G, OHW = cv->OH * cv->OW, ld = m * OHW;                                           \
        for (int64_t b = 0; b < m; b++)                                                                            \
            for (int64_t o = 0; o < Og; o++)                                                                       \
                memcpy(stage + o * ld + b * OHW, dy + ((n0 + b) * cv->O + g * Og + o) * OHW, sizeof(T) * (size_t)OHW); \
    }                                                                                                              \
                                                                                                                   \
    /* Input gradient for the chunks [lo, hi): a = dy, b = w. colg (CK, m S) = w_g^T dy_g, then col2im per image. */ \
    static int bwx_##S(void *ctx, int64_t lo, int64_t hi) {                                                        \
        const job_##S *jb = ctx;                                                                                   \
        const nbi_conv *cv = jb->cv;                                                                               \
        int64_t Cg = cv->C / cv->G, Og = cv->O / cv->G, CK = Cg * cv->KH * cv->KW, OHW = cv->OH * cv->OW;          \
        int64_t HW = cv->H * cv->W;                                                                                \
        bool pw = pointwise(cv);                                                                                   \
        T *stage = NULL, *col = pw ? NULL : scratch_##S(jb, &stage);                                               \
        if (!pw && !col) return -1;                                                                                \
        int rc = 0;                                                                                                \
        for (int64_t ck = lo; ck < hi && rc == 0; ck++) {                                                          \
            int64_t n0 = ck * jb->chunk, m = cv->N - n0 < jb->chunk ? cv->N - n0 : jb->chunk, ld = m * OHW;        \
            if (!pw) memset(jb->out + n0 * cv->C * HW, 0, sizeof(T) * (size_t)(m * cv->C * HW));                   \
            for (int64_t g = 0; g < cv->G && rc == 0; g++) {                                                       \
                if (pw) {                                                                                          \
                    for (int64_t b = 0; b < m && rc == 0; b++)                                                     \
                        rc = GEMM(CK, OHW, Og, jb->b + g * Og * CK, 1, CK, jb->a + ((n0 + b) * cv->O + g * Og) * OHW, OHW, \
                                  1, jb->out + ((n0 + b) * cv->C + g * Cg) * HW, OHW, false);                      \
                    continue;                                                                                      \
                }                                                                                                  \
                const T *dyg = jb->a + (n0 * cv->O + g * Og) * OHW;                                                \
                if (m > 1) gather_dy_##S(jb, jb->a, n0, m, g, stage), dyg = stage;                                 \
                rc = GEMM(CK, ld, Og, jb->b + g * Og * CK, 1, CK, dyg, ld, 1, col, ld, false);                     \
                for (int64_t b = 0; rc == 0 && b < m; b++)                                                         \
                    col2im_##S(cv, Cg, col + b * OHW, ld, jb->out + ((n0 + b) * cv->C + g * Cg) * HW);             \
            }                                                                                                      \
        }                                                                                                          \
        nbi_dealloc(col);                                                                                          \
        return rc;                                                                                                 \
    }                                                                                                              \
                                                                                                                   \
    /* Weight gradient of the blocks [lo, hi) of jb->block images each: a = x, b = dy; block k into part k, its    \
       images taken jb->chunk at a time: dw_g += dy_g (Og, m S) col^T. */                                          \
    static int bww_##S(void *ctx, int64_t lo, int64_t hi) {                                                        \
        const job_##S *jb = ctx;                                                                                   \
        const nbi_conv *cv = jb->cv;                                                                               \
        int64_t Cg = cv->C / cv->G, Og = cv->O / cv->G, CK = Cg * cv->KH * cv->KW, OHW = cv->OH * cv->OW;          \
        bool pw = pointwise(cv);                                                                                   \
        T *stage = NULL, *col = pw ? NULL : scratch_##S(jb, &stage);                                               \
        if (!pw && !col) return -1;                                                                                \
        int rc = 0;                                                                                                \
        for (int64_t k = lo; k < hi && rc == 0; k++) {                                                             \
            T *acc = jb->part + k * cv->O * CK;                                                                    \
            int64_t nb0 = k * jb->block, nb1 = nb0 + jb->block < cv->N ? nb0 + jb->block : cv->N;                  \
            for (int64_t n0 = nb0; n0 < nb1 && rc == 0; n0 += pw ? 1 : jb->chunk) {                                \
                int64_t m = pw ? 1 : nb1 - n0 < jb->chunk ? nb1 - n0 : jb->chunk, ld = m * OHW;                    \
                for (int64_t g = 0; g < cv->G && rc == 0; g++) {                                                   \
                    const T *xg = jb->a + (n0 * cv->C + g * Cg) * cv->H * cv->W;                                   \
                    for (int64_t b = 0; !pw && b < m; b++)                                                         \
                        im2col_##S(cv, Cg, jb->a + ((n0 + b) * cv->C + g * Cg) * cv->H * cv->W, col + b * OHW, ld); \
                    const T *dyg = jb->b + (n0 * cv->O + g * Og) * OHW;                                            \
                    if (m > 1) gather_dy_##S(jb, jb->b, n0, m, g, stage), dyg = stage;                             \
                    rc = GEMM(Og, CK, ld, dyg, ld, 1, pw ? xg : col, 1, ld, acc + g * Og * CK, CK, n0 > nb0);      \
                }                                                                                                  \
            }                                                                                                      \
        }                                                                                                          \
        nbi_dealloc(col);                                                                                          \
        return rc;                                                                                                 \
    }

CONV_KERNELS(float, f32, nbi_gemm_f32)
CONV_KERNELS(double, f64, nbi_gemm_f64)

/* Images per product: enough that the chunk's outputs make about 2048 columns (up to 32 images; a function
   of the shape only). */
static int64_t image_chunk(const nbi_conv *cv) {
    int64_t s = cv->OH * cv->OW, k = s >= 2048 ? 1 : 2048 / (s > 0 ? s : 1);
    return k > 32 ? 32 : k;
}

int nbi_cpu_conv2d(nb_dtype dt, void *y, const void *x, const void *w, const void *b, const nbi_conv *cv) {
    if (dt == NB_F32 && nbi_cpu_winograd_ok(cv)) return nbi_cpu_winograd_conv2d(y, x, w, b, cv);
    int64_t k = image_chunk(cv), nc = (cv->N + k - 1) / k;
    if (dt == NB_F32) {
        job_f32 jb = {cv, y, x, w, b, NULL, 0, k};
        return nbi_parallel_for(nc, 1, fwd_f32, &jb);
    }
    job_f64 jb = {cv, y, x, w, b, NULL, 0, k};
    return nbi_parallel_for(nc, 1, fwd_f64, &jb);
}

int nbi_cpu_conv2d_input(nb_dtype dt, void *dx, const void *dy, const void *w, const nbi_conv *cv) {
    if (dt == NB_F32 && nbi_cpu_winograd_ok(cv)) return nbi_cpu_winograd_conv2d_input(dx, dy, w, cv);
    int64_t k = image_chunk(cv), nc = (cv->N + k - 1) / k;
    if (dt == NB_F32) {
        job_f32 jb = {cv, dx, dy, w, NULL, NULL, 0, k};
        return nbi_parallel_for(nc, 1, bwx_f32, &jb);
    }
    job_f64 jb = {cv, dx, dy, w, NULL, NULL, 0, k};
    return nbi_parallel_for(nc, 1, bwx_f64, &jb);
}

/* Blocks of images for the weight gradient: at least 8 images each and at most 64 blocks (a function of N
   only, so the summation order does not depend on the thread count). */
static int64_t image_block(int64_t N) {
    int64_t b = (N + 63) / 64;
    return b < 8 ? 8 : b;
}

int nbi_cpu_conv2d_weight(nb_dtype dt, void *dw, const void *x, const void *dy, const nbi_conv *cv) {
    if (dt == NB_F32 && nbi_cpu_winograd_ok(cv)) return nbi_cpu_winograd_conv2d_weight(dw, x, dy, cv);
    int64_t CK = cv->C / cv->G * cv->KH * cv->KW, nw = cv->O * CK, blk = image_block(cv->N);
    int64_t nb = (cv->N + blk - 1) / blk;
    size_t es = dt == NB_F32 ? sizeof(float) : sizeof(double);
    if (nb == 0) { /* no images: zeros */
        memset(dw, 0, es * (size_t)nw);
        return 0;
    }
    void *part = nb == 1 ? dw : nbi_alloc(es * (size_t)(nb * nw));
    if (!part) return -1;
    int rc;
    if (dt == NB_F32) {
        job_f32 jb = {cv, NULL, x, dy, NULL, part, blk, image_chunk(cv)};
        rc = nbi_parallel_for(nb, 1, bww_f32, &jb);
        for (int64_t k = 1; rc == 0 && k < nb; k++)
            for (int64_t e = 0; e < nw; e++) ((float *)part)[e] += ((float *)part)[k * nw + e];
    } else {
        job_f64 jb = {cv, NULL, x, dy, NULL, part, blk, image_chunk(cv)};
        rc = nbi_parallel_for(nb, 1, bww_f64, &jb);
        for (int64_t k = 1; rc == 0 && k < nb; k++)
            for (int64_t e = 0; e < nw; e++) ((double *)part)[e] += ((double *)part)[k * nw + e];
    }
    if (rc == 0 && part != dw) memcpy(dw, part, es * (size_t)nw);
    if (part != dw) nbi_dealloc(part);
    return rc;
}


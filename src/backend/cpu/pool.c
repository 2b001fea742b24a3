/*
 * pool.c - 2-D max pooling for the CPU set: planes (n, c) split across the worker pool.
 *
 *   forward   y[pl, i, j] = the window's largest x, idx[pl, i, j] = its position h W + w
 *             (x (N C, H, W), y and idx (N C, OH, OW)); each window scanned row by row as the reference
 *             scans it, a value replacing the current one when greater or NaN. Without padding a row's
 *             outputs are taken in runs, each tap compared for the whole run with selects instead of branches
 *             (which random data mispredicts; the loop vectorises, compiled for AVX-512, AVX2 and the
 *             baseline); the result is exact either way.
 *   backward  dx[pl] = 0, then dx[pl, idx[pl, s]] += g[pl, s] for s in order: one plane per part, so
 *             the sums do not depend on the cut.
 */
#include <string.h>

#include "../backend.h"
#include "cpu.h"
#include "threads.h"
#include "vec.h"


typedef struct {
    const nbi_conv *cv;
    void *y;
    int64_t *idx;
    const void *x;
    nb_dtype dt;
} pool_job;

/* v replaces the current best (first of ties, the last NaN). */
#define BETTER(v, best, at) ((at) < 0 || (v) > (best) || (v) != (v))

/* 2 x 2 windows, stride 2, no padding (the usual pooling) of one plane: the four taps of each output in
   scan order with the rule above, 8 outputs of a row at a time (16 inputs of each of its two rows split
   into even and odd columns, selects instead of branches), the last ones too when the 16-wide reads stay
   below xend and the 8-wide writes below yend (outputs written past a row's end are those of later rows,
   written again after); else one at a time. f32 only: returns 0 for f64 (the general code runs). */
NBI_INLINE static int pool2x2_float(const nbi_conv *cv, const float *xp, float *yp, int64_t *ip, const float *xend,
                                    const float *yend) {
    int64_t W = cv->W, OW = cv->OW;
    for (int64_t i = 0; i < cv->OH; i++) {
        const float *r0 = xp + 2 * i * W, *r1 = r0 + W;
        int64_t a0 = 2 * i * W, j = 0;
#if VW
        for (; j < OW && r1 + 2 * j + 16 <= xend && yp + i * OW + j + 8 <= yend; j += 8) {
            vf16 u = VLD(r0 + 2 * j), d = VLD(r1 + 2 * j);
            vf8 best = SHUF(u, u, 0, 2, 4, 6, 8, 10, 12, 14), v;
            vi8 code = {0}, m;
            v = SHUF(u, u, 1, 3, 5, 7, 9, 11, 13, 15);
            m = (v > best) | (v != v);
            best = (vf8)(((vi8)v & m) | ((vi8)best & ~m)), code = (m & 1) | (code & ~m);
            v = SHUF(d, d, 0, 2, 4, 6, 8, 10, 12, 14);
            m = (v > best) | (v != v);
            best = (vf8)(((vi8)v & m) | ((vi8)best & ~m)), code = (m & 2) | (code & ~m);
            v = SHUF(d, d, 1, 3, 5, 7, 9, 11, 13, 15);
            m = (v > best) | (v != v);
            best = (vf8)(((vi8)v & m) | ((vi8)best & ~m)), code = (m & 3) | (code & ~m);
            VST8(yp + i * OW + j, best);
            for (int l = 0; l < 8; l++) ip[i * OW + j + l] = a0 + (code[l] >> 1) * W + 2 * (j + l) + (code[l] & 1);
        }
#endif
        for (; j < OW; j++) {
            float v[4] = {r0[2 * j], r0[2 * j + 1], r1[2 * j], r1[2 * j + 1]}, best = v[0];
            int k = 0;
            for (int t = 1; t < 4; t++)
                if (v[t] > best || v[t] != v[t]) best = v[t], k = t;
            yp[i * OW + j] = best;
            ip[i * OW + j] = a0 + (k >> 1) * W + 2 * j + (k & 1);
        }
    }
    return 1;
}
NBI_INLINE static int pool2x2_double(const nbi_conv *cv, const double *xp, double *yp, int64_t *ip,
                                     const double *xend, const double *yend) {
    (void)cv, (void)xp, (void)yp, (void)ip, (void)xend, (void)yend;
    return 0;
}

#define POOL_PLANES(T)                                                                                             \
    for (int64_t pl = lo; pl < hi; pl++) {                                                                         \
        const T *xp = (const T *)jb->x + pl * cv->H * cv->W, *xend = (const T *)jb->x + cv->N * cv->C * cv->H * cv->W; \
        const T *yend = (const T *)jb->y + hi * cv->OH * cv->OW; /* this part's outputs end there */              \
        T *yp = (T *)jb->y + pl * cv->OH * cv->OW;                                                                 \
        int64_t *ip = jb->idx + pl * cv->OH * cv->OW;                                                              \
        if (inside && cv->KH == 2 && cv->KW == 2 && cv->sh == 2 && cv->sw == 2 && cv->dh == 1 && cv->dw == 1 &&    \
            pool2x2_##T(cv, xp, yp, ip, xend, yend))                                                               \
            continue;                                                                                              \
        if (inside) { /* no padding: runs of up to 64 outputs of a row, each tap compared with selects */      \
            for (int64_t i = 0; i < cv->OH; i++)                                                                   \
                for (int64_t j0 = 0; j0 < cv->OW; j0 += 64) {                                                      \
                    int64_t nj = cv->OW - j0 < 64 ? cv->OW - j0 : 64, sw = cv->sw, at[64];                         \
                    T best[64];                                                                                    \
                    for (int64_t j = 0; j < nj; j++) {                                                             \
                        at[j] = i * cv->sh * cv->W + (j0 + j) * sw;                                                \
                        best[j] = xp[at[j]];                                                                       \
                    }                                                                                              \
                    for (int64_t p = 0; p < cv->KH; p++)                                                           \
                        for (int64_t q = p ? 0 : 1; q < cv->KW; q++) {                                             \
                            int64_t e0 = (i * cv->sh + p * cv->dh) * cv->W + j0 * sw + q * cv->dw;                 \
                            for (int64_t j = 0; j < nj; j++) { /* selects, no branch: vectorised */            \
                                T v = xp[e0 + j * sw];                                                             \
                                bool take = (v > best[j]) | (v != v);                                              \
                                best[j] = take ? v : best[j];                                                      \
                                at[j] = take ? e0 + j * sw : at[j];                                                \
                            }                                                                                      \
                        }                                                                                          \
                    memcpy(ip + i * cv->OW + j0, at, sizeof(int64_t) * (size_t)nj);                                \
                    memcpy(yp + i * cv->OW + j0, best, sizeof(T) * (size_t)nj);                                    \
                }                                                                                                  \
            continue;                                                                                              \
        }                                                                                                          \
        for (int64_t i = 0; i < cv->OH; i++)                                                                       \
            for (int64_t j = 0; j < cv->OW; j++) {                                                                 \
                T best = 0;                                                                                        \
                int64_t at = -1;                                                                                   \
                for (int64_t p = 0; p < cv->KH; p++) {                                                             \
                    int64_t h = i * cv->sh - cv->ph + p * cv->dh;                                                  \
                    if (h < 0 || h >= cv->H) continue;                                                             \
                    for (int64_t q = 0; q < cv->KW; q++) {                                                         \
                        int64_t w = j * cv->sw - cv->pw + q * cv->dw;                                              \
                        if (w < 0 || w >= cv->W) continue;                                                         \
                        T v = xp[h * cv->W + w];                                                                   \
                        if (BETTER(v, best, at)) best = v, at = h * cv->W + w;                                     \
                    }                                                                                              \
                }                                                                                                  \
                yp[i * cv->OW + j] = best;                                                                         \
                ip[i * cv->OW + j] = at;                                                                           \
            }                                                                                                      \
    }

NBI_CLONES static int pool_planes(void *ctx, int64_t lo, int64_t hi) {
    const pool_job *jb = ctx;
    const nbi_conv *cv = jb->cv;
    bool inside = cv->ph == 0 && cv->pw == 0; /* every window inside the plane */
    if (jb->dt == NB_F32) {
        POOL_PLANES(float)
    } else {
        POOL_PLANES(double)
    }
    return 0;
}

/* Planes per part: at least about 16k window taps of work each. */
static int64_t grain(int64_t per) {
    int64_t w = per > 0 ? per : 1;
    return w >= 16384 ? 1 : 16384 / w;
}

void nbi_cpu_max_pool2d(nb_dtype dt, void *y, int64_t *idx, const void *x, const nbi_conv *cv) {
    pool_job jb = {cv, y, idx, x, dt};
    (void)nbi_parallel_for(cv->N * cv->C, grain(cv->OH * cv->OW * cv->KH * cv->KW), pool_planes, &jb);
}

typedef struct {
    const nbi_conv *cv;
    void *dx;
    const void *g;
    const int64_t *idx;
    nb_dtype dt;
} grad_job;

#define GRAD_PLANES(T)                                                                                             \
    for (int64_t pl = lo; pl < hi; pl++) {                                                                         \
        T *d = (T *)jb->dx + pl * HW;                                                                              \
        const T *g = (const T *)jb->g + pl * S;                                                                    \
        const int64_t *ip = jb->idx + pl * S;                                                                      \
        memset(d, 0, sizeof(T) * (size_t)HW);                                                                      \
        for (int64_t s = 0; s < S; s++) d[ip[s]] += g[s];                                                          \
    }

static int grad_planes(void *ctx, int64_t lo, int64_t hi) {
    const grad_job *jb = ctx;
    int64_t HW = jb->cv->H * jb->cv->W, S = jb->cv->OH * jb->cv->OW;
    if (jb->dt == NB_F32) {
        GRAD_PLANES(float)
    } else {
        GRAD_PLANES(double)
    }
    return 0;
}

void nbi_cpu_max_pool2d_grad(nb_dtype dt, void *dx, const void *g, const int64_t *idx, const nbi_conv *cv) {
    grad_job jb = {cv, dx, g, idx, dt};
    (void)nbi_parallel_for(cv->N * cv->C, grain(cv->H * cv->W), grad_planes, &jb);
}

/*
 * pool.c - 2-D max pooling for the CPU set: planes (n, c) split across the worker pool.
 *
 *   forward   y[pl, i, j] = the window's largest x, idx[pl, i, j] = its position h W + w
 *             (x (N C, H, W), y and idx (N C, OH, OW)); each window scanned row by row as the reference
 *             scans it, a value replacing the current one when greater or NaN. Without padding a row's
 *             outputs are taken in runs, each tap compared for the whole run with masks instead of branches
 *             (which random data mispredicts); the result is exact either way.
 *   backward  dx[pl] = 0, then dx[pl, idx[pl, s]] += g[pl, s] for s in order: one plane per part, so
 *             the sums do not depend on the cut.
 */
#include <string.h>

#include "../backend.h"
#include "cpu.h"
#include "threads.h"

typedef struct {
    const nbi_conv *cv;
    void *y;
    int64_t *idx;
    const void *x;
    nb_dtype dt;
} pool_job;

/* v replaces the current best (first of ties, the last NaN). */
#define BETTER(v, best, at) ((at) < 0 || (v) > (best) || (v) != (v))

#define POOL_PLANES(T)                                                                                             \
    for (int64_t pl = lo; pl < hi; pl++) {                                                                         \
        const T *xp = (const T *)jb->x + pl * cv->H * cv->W;                                                       \
        T *yp = (T *)jb->y + pl * cv->OH * cv->OW;                                                                 \
        int64_t *ip = jb->idx + pl * cv->OH * cv->OW;                                                              \
        if (inside) { /* no padding: runs of up to 64 outputs of a row, each tap compared with masks */        \
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
                            for (int64_t j = 0; j < nj; j++) {                                                     \
                                T v = xp[e0 + j * sw];                                                             \
                                int64_t take = -(int64_t)((v > best[j]) | (v != v)); /* all ones or 0 */           \
                                at[j] = (at[j] & ~take) | ((e0 + j * sw) & take);                                  \
                                best[j] = xp[at[j]];                                                               \
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

static int pool_planes(void *ctx, int64_t lo, int64_t hi) {
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

/*
 * pool.c - 2-D max pooling for the CPU set: planes (n, c) split across the worker pool.
 *
 *   forward   y[pl, i, j] = the window's largest x, idx[pl, i, j] = its position h W + w
 *             (x (N C, H, W), y and idx (N C, OH, OW)); each window scanned row by row as the reference
 *             scans it, a value replacing the current one when greater or NaN. The common 2x2 window with
 *             stride 2 and no padding has a loop of its own; the result is exact either way.
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
        if (fast2) {                                                                                               \
            for (int64_t i = 0; i < cv->OH; i++) {                                                                 \
                const T *r0 = xp + 2 * i * cv->W, *r1 = r0 + cv->W;                                                \
                for (int64_t j = 0; j < cv->OW; j++) {                                                             \
                    int64_t w = 2 * j, at = 2 * i * cv->W + w;                                                     \
                    T best = r0[w];                                                                                \
                    if (r0[w + 1] > best || r0[w + 1] != r0[w + 1]) best = r0[w + 1], at = 2 * i * cv->W + w + 1;   \
                    if (r1[w] > best || r1[w] != r1[w]) best = r1[w], at = (2 * i + 1) * cv->W + w;                \
                    if (r1[w + 1] > best || r1[w + 1] != r1[w + 1]) best = r1[w + 1], at = (2 * i + 1) * cv->W + w + 1; \
                    yp[i * cv->OW + j] = best;                                                                     \
                    ip[i * cv->OW + j] = at;                                                                       \
                }                                                                                                  \
            }                                                                                                      \
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
    bool fast2 = cv->KH == 2 && cv->KW == 2 && cv->sh == 2 && cv->sw == 2 && cv->ph == 0 && cv->pw == 0 &&
                 cv->dh == 1 && cv->dw == 1;
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

/*
 * batchnorm.c - batch normalisation with the batch's statistics for the CPU set: channels split across the
 * worker pool, each channel's sums in double over its N rows of S values in order (32 partial sums per row,
 * four vector registers of AVX-512, combined in a fixed order), so the bits do not depend on the thread
 * count. Compiled for AVX-512, AVX2 and the baseline (function clones picked at run time, no contraction:
 * every clone rounds alike).
 *
 *   forward   mean, var (biased), rstd = 1 / sqrt(var + eps);  y = (x - mean) rstd gamma + beta
 *   backward  dbeta = sum g, dgamma = sum g xh, dx = gamma rstd (g - dbeta / M - xh dgamma / M)
 * with x, y, g, dx (N, C, S) contiguous, M = N S, xh = (x - mean) rstd.
 */
#include <math.h>

#include "../backend.h"
#include "cpu.h"
#include "threads.h"
#include "vec.h"


typedef struct {
    nb_dtype dt;
    void *y, *dx, *dgamma, *dbeta;
    double *mean, *rstd, *var;
    const void *x, *g, *gamma, *beta;
    int64_t N, C, S;
    double eps;
} bn_job;

/* sum_s a[s] - shift, sum_s (a[s] - mu)^2 and sum_s g[s] (x[s] - mu) in double with 32 partial sums
   (combined pairwise in a fixed order). */
#define PARTIALS 32
#define COMBINE(p)                                                                                                 \
    do {                                                                                                           \
        for (int w = PARTIALS / 2; w > 0; w /= 2)                                                                  \
            for (int k = 0; k < w; k++) p[k] += p[k + w];                                                          \
    } while (0)
#define SUMS(T)                                                                                                    \
    static inline double sum_##T(const T *a, int64_t n, double shift) {                                            \
        double p[PARTIALS] = {0};                                                                                  \
        int64_t s = 0;                                                                                             \
        for (; s + PARTIALS <= n; s += PARTIALS)                                                                   \
            for (int k = 0; k < PARTIALS; k++) p[k] += (double)a[s + k] - shift;                                   \
        for (; s < n; s++) p[0] += (double)a[s] - shift;                                                           \
        COMBINE(p);                                                                                                \
        return p[0];                                                                                               \
    }                                                                                                              \
    static inline double sumsq_##T(const T *a, int64_t n, double mu) {                                             \
        double p[PARTIALS] = {0};                                                                                  \
        int64_t s = 0;                                                                                             \
        for (; s + PARTIALS <= n; s += PARTIALS)                                                                   \
            for (int k = 0; k < PARTIALS; k++) {                                                                   \
                double d = (double)a[s + k] - mu;                                                                  \
                p[k] += d * d;                                                                                     \
            }                                                                                                      \
        for (; s < n; s++) {                                                                                       \
            double d = (double)a[s] - mu;                                                                          \
            p[0] += d * d;                                                                                         \
        }                                                                                                          \
        COMBINE(p);                                                                                                \
        return p[0];                                                                                               \
    }                                                                                                              \
    static inline double sumgx_##T(const T *g, const T *x, int64_t n, double mu) {                                 \
        double p[PARTIALS] = {0};                                                                                  \
        int64_t s = 0;                                                                                             \
        for (; s + PARTIALS <= n; s += PARTIALS)                                                                   \
            for (int k = 0; k < PARTIALS; k++) p[k] += (double)g[s + k] * ((double)x[s + k] - mu);                 \
        for (; s < n; s++) p[0] += (double)g[s] * ((double)x[s] - mu);                                             \
        COMBINE(p);                                                                                                \
        return p[0];                                                                                               \
    }                                                                                                              \
                                                                                                                   \
    NBI_CLONES static void fwd_##T(const bn_job *j, int64_t lo, int64_t hi) {                                                 \
        const T *x = j->x, *gm = j->gamma, *bt = j->beta;                                                          \
        T *y = j->y;                                                                                               \
        int64_t N = j->N, C = j->C, S = j->S;                                                                      \
        double M = (double)(N * S);                                                                                \
        for (int64_t c = lo; c < hi; c++) {                                                                        \
            double sum = 0, sq = 0;                                                                                \
            for (int64_t n = 0; n < N; n++) sum += sum_##T(x + (n * C + c) * S, S, 0.0);                           \
            double mu = sum / M;                                                                                   \
            for (int64_t n = 0; n < N; n++) sq += sumsq_##T(x + (n * C + c) * S, S, mu);                           \
            double v = sq / M, r = 1.0 / sqrt(v + j->eps);                                                         \
            j->mean[c] = mu, j->var[c] = v, j->rstd[c] = r;                                                        \
            double a = r * (gm ? (double)gm[c] : 1.0), b = bt ? (double)bt[c] : 0.0;                               \
            for (int64_t n = 0; n < N; n++) {                                                                      \
                const T *xr = x + (n * C + c) * S;                                                                 \
                T *yr = y + (n * C + c) * S;                                                                       \
                for (int64_t s = 0; s < S; s++) yr[s] = (T)(((double)xr[s] - mu) * a + b);                         \
            }                                                                                                      \
        }                                                                                                          \
    }                                                                                                              \
                                                                                                                   \
    NBI_CLONES static void bwd_##T(const bn_job *j, int64_t lo, int64_t hi) {                                                 \
        const T *x = j->x, *g = j->g, *gm = j->gamma;                                                              \
        int64_t N = j->N, C = j->C, S = j->S;                                                                      \
        double M = (double)(N * S);                                                                                \
        for (int64_t c = lo; c < hi; c++) {                                                                        \
            double mu = j->mean[c], r = j->rstd[c], sg = 0, sgx = 0;                                               \
            for (int64_t n = 0; n < N; n++) {                                                                      \
                sg += sum_##T(g + (n * C + c) * S, S, 0.0);                                                        \
                sgx += sumgx_##T(g + (n * C + c) * S, x + (n * C + c) * S, S, mu);                                 \
            }                                                                                                      \
            sgx *= r;                                                                                              \
            if (j->dbeta) ((T *)j->dbeta)[c] = (T)sg;                                                              \
            if (j->dgamma) ((T *)j->dgamma)[c] = (T)sgx;                                                           \
            if (!j->dx) continue;                                                                                  \
            double k = (gm ? (double)gm[c] : 1.0) * r, mg = sg / M, mgx = sgx / M;                                 \
            for (int64_t n = 0; n < N; n++) {                                                                      \
                const T *xr = x + (n * C + c) * S, *gr = g + (n * C + c) * S;                                      \
                T *dr = (T *)j->dx + (n * C + c) * S;                                                              \
                for (int64_t s = 0; s < S; s++)                                                                    \
                    dr[s] = (T)(k * ((double)gr[s] - mg - ((double)xr[s] - mu) * r * mgx));                        \
            }                                                                                                      \
        }                                                                                                          \
    }

SUMS(float)
SUMS(double)

static int fwd_part(void *ctx, int64_t lo, int64_t hi) {
    const bn_job *j = ctx;
    if (j->dt == NB_F32) fwd_float(j, lo, hi);
    else fwd_double(j, lo, hi);
    return 0;
}

static int bwd_part(void *ctx, int64_t lo, int64_t hi) {
    const bn_job *j = ctx;
    if (j->dt == NB_F32) bwd_float(j, lo, hi);
    else bwd_double(j, lo, hi);
    return 0;
}

/* Channels per part: at least about 32k values of work each. */
static int64_t grain(int64_t per) { return per >= 32768 ? 1 : 32768 / (per > 0 ? per : 1); }

int nbi_cpu_batch_norm(nb_dtype dt, void *y, double *mean, double *rstd, double *var, const void *x, const void *gamma,
                       const void *beta, int64_t N, int64_t C, int64_t S, double eps) {
    bn_job j = {.dt = dt, .y = y, .mean = mean, .rstd = rstd, .var = var, .x = x, .gamma = gamma, .beta = beta,
                .N = N, .C = C, .S = S, .eps = eps};
    return nbi_parallel_for(C, grain(N * S), fwd_part, &j);
}

int nbi_cpu_batch_norm_grad(nb_dtype dt, void *dx, void *dgamma, void *dbeta, const void *g, const void *x,
                            const void *gamma, const double *mean, const double *rstd, int64_t N, int64_t C, int64_t S) {
    bn_job j = {.dt = dt, .dx = dx, .dgamma = dgamma, .dbeta = dbeta, .mean = (double *)mean, .rstd = (double *)rstd,
                .x = x, .g = g, .gamma = gamma, .N = N, .C = C, .S = S};
    return nbi_parallel_for(C, grain(N * S), bwd_part, &j);
}

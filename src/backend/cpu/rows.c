/*
 * rows.c - the CPU's row kernels: softmax and log-softmax along an axis,
 * cross-entropy and its first-order gradient, layer norm and its gradient.
 *
 * Rows are computed in double (each result rounded once to the tensor's
 * dtype) and split across the thread pool. Every row is computed alone, by
 * the same operations whatever the cut, so the bits do not depend on the
 * thread count; sums across rows (cross-entropy's loss, layer norm's
 * parameter gradients) are combined in row order on the calling thread.
 */
#include <math.h>
#include <string.h>

#include "../../core/internal.h"
#include "cpu.h"
#include "threads.h"

static inline double ld(nb_dtype dt, const void *p, int64_t i) {
    return dt == NB_F32 ? (double)((const float *)p)[i] : ((const double *)p)[i];
}
static inline void st(nb_dtype dt, void *p, int64_t i, double v) {
    if (dt == NB_F32)
        ((float *)p)[i] = (float)v;
    else
        ((double *)p)[i] = v;
}

/* ------------------------------------------------- softmax family rows -- */

/* Contiguous rows of length n. Part p of `parts` takes rows [N p / parts, N (p + 1) / parts) and walks them in
   blocks of at most `block` rows (about 2^16 values) through nbi_cpu_softmax_rows, into scratch of its own:
   e (block x n), m and s (block), slice p of one buffer. */
#define ROW_PART_MIN (1 << 15) /* values per part at least: smaller inputs stay on the calling thread */
#define ROW_BLOCK (1 << 16)    /* values per block of exps */

typedef enum { ROWS_SOFTMAX, ROWS_LOG_SOFTMAX, ROWS_CE_LOSS, ROWS_CE_GRAD } rows_kind;

typedef struct {
    rows_kind kind;
    nb_dtype dt;
    const void *x;       /* (N, n) */
    const int64_t *t;    /* (N) targets at t[i ts] */
    int64_t ts;
    void *out;           /* softmax, log-softmax or the gradient: (N, n) */
    double *loss;        /* ROWS_CE_LOSS: (N), log softmax(x)[i, t_i] */
    double *ms;          /* ROWS_CE_LOSS: (N, 2) or NULL, each row's max and sum of exps */
    double gs;           /* ROWS_CE_GRAD: g / N */
    double *scratch;     /* parts x block x (n + 2) */
    int64_t N, n, block;
    int parts;
} rows_job;

static int rows_part(void *vj, int64_t lo, int64_t hi) {
    const rows_job *j = vj;
    const int64_t n = j->n, es = (int64_t)nbi_dsize(j->dt);
    const nb_dtype dt = j->dt;
    for (int64_t p = lo; p < hi; p++) {
        double *e = j->scratch + p * j->block * (n + 2), *m = e + j->block * n, *s = m + j->block;
        const int64_t end = j->N * (p + 1) / j->parts;
        for (int64_t r0 = j->N * p / j->parts; r0 < end;) {
            const int64_t rows = end - r0 < j->block ? end - r0 : j->block;
            nbi_cpu_softmax_rows(dt, (const char *)j->x + r0 * n * es, rows, n, e, m, s);
            for (int64_t i = 0; i < rows; i++, r0++) {
                const double *er = e + i * n, si = s[i];
                switch (j->kind) {
                case ROWS_SOFTMAX:
                    for (int64_t k = 0; k < n; k++) st(dt, j->out, r0 * n + k, er[k] / si);
                    break;
                case ROWS_LOG_SOFTMAX: {
                    const double ls = log(si);
                    for (int64_t k = 0; k < n; k++) st(dt, j->out, r0 * n + k, (ld(dt, j->x, r0 * n + k) - m[i]) - ls);
                    break;
                }
                case ROWS_CE_LOSS:
                    j->loss[r0] = (ld(dt, j->x, r0 * n + j->t[r0 * j->ts]) - m[i]) - log(si);
                    if (j->ms) j->ms[2 * r0] = m[i], j->ms[2 * r0 + 1] = si;
                    break;
                case ROWS_CE_GRAD: {
                    const int64_t ti = j->t[r0 * j->ts];
                    for (int64_t k = 0; k < n; k++)
                        st(dt, j->out, r0 * n + k, j->gs * (er[k] / si - (k == ti ? 1.0 : 0.0)));
                    break;
                }
                }
            }
        }
    }
    return 0;
}

/* Runs j (N >= 1, n >= 1) over the pool. Returns false, having computed nothing, when its scratch cannot be
   allocated. */
static bool rows_run(rows_job *j) {
    const int64_t per = ROW_BLOCK / j->n;
    j->parts = nbi_parallel_parts(j->N, (ROW_PART_MIN + j->n - 1) / j->n);
    const int64_t most = (j->N + j->parts - 1) / j->parts; /* rows of the longest part */
    j->block = per < 1 ? 1 : per < most ? per : most;
    int64_t count;
    if (!nbi_mul_ok(j->block, j->n + 2, &count) || !nbi_mul_ok(count, j->parts, &count) ||
        !nbi_mul_ok(count, (int64_t)sizeof(double), &count))
        return false;
    j->scratch = nbi_alloc((size_t)count);
    if (!j->scratch) return false;
    nbi_parallel_for(j->parts, 1, rows_part, j); /* each part of ours is one range of the pool's, or several */
    nbi_dealloc(j->scratch);
    j->scratch = NULL;
    return true;
}

/* The max m and sum s of exp(x - m) over the n elements base + k step of x, in double (m = 0 when all are
   -inf, so that exp stays finite). */
static void row_stats(nb_dtype dt, const void *x, int64_t base, int64_t n, int64_t step, double *m, double *s) {
    double mx = -INFINITY, sum = 0;
    for (int64_t k = 0; k < n; k++) {
        double v = ld(dt, x, base + k * step);
        if (v > mx || v != v) mx = v;
    }
    if (mx == -INFINITY) mx = 0;
    for (int64_t k = 0; k < n; k++) sum += exp(ld(dt, x, base + k * step) - mx);
    *m = mx;
    *s = sum;
}

/* Rows along an axis that is not innermost (or when the scratch above cannot be had): row r = o inner + i of
   x viewed as (outer, n, inner), one at a time, split across the pool. */
typedef struct {
    nb_dtype dt;
    void *out;
    const void *x;
    int64_t n, inner;
    bool logarithm;
} strided_job;

static int strided_part(void *vj, int64_t lo, int64_t hi) {
    const strided_job *j = vj;
    for (int64_t r = lo; r < hi; r++) {
        int64_t base = (r / j->inner) * j->n * j->inner + r % j->inner;
        double m, s;
        row_stats(j->dt, j->x, base, j->n, j->inner, &m, &s);
        double ls = log(s);
        for (int64_t k = 0; k < j->n; k++) {
            double v = ld(j->dt, j->x, base + k * j->inner) - m;
            st(j->dt, j->out, base + k * j->inner, j->logarithm ? v - ls : exp(v) / s);
        }
    }
    return 0;
}

/* y (outer, n, inner) = softmax or log-softmax of x (outer, n, inner) along n. */
void nbi_cpu_softmax(nb_dtype dt, void *y, const void *x, int64_t outer, int64_t n, int64_t inner, bool log) {
    if (n == 0 || outer == 0 || inner == 0) return; /* no elements */
    rows_job j = {.kind = log ? ROWS_LOG_SOFTMAX : ROWS_SOFTMAX, .dt = dt, .x = x, .out = y, .N = outer, .n = n};
    if (inner == 1 && rows_run(&j)) return; /* rows contiguous: the exps in blocks of rows */
    strided_job sj = {dt, y, x, n, inner, log};
    nbi_parallel_for(outer * inner, (ROW_PART_MIN + n - 1) / n, strided_part, &sj);
}

/* *loss = -sum over rows of log softmax(x (N, C))[i, t_i], in row order whatever the thread count. */
int nbi_cpu_cross_entropy(nb_dtype dt, double *loss, const void *x, const int64_t *t, int64_t ts, int64_t N,
                          int64_t C, double *ms) {
    double *rows = nbi_alloc(sizeof(double) * (size_t)N); /* N doubles fit: x holds N C >= N values */
    rows_job j = {.kind = ROWS_CE_LOSS, .dt = dt, .x = x, .t = t, .ts = ts, .loss = rows, .ms = ms, .N = N, .n = C};
    if (!rows || !rows_run(&j)) {
        nbi_dealloc(rows);
        return -1;
    }
    double acc = 0;
    for (int64_t i = 0; i < N; i++) acc -= rows[i];
    nbi_dealloc(rows);
    *loss = acc;
    return 0;
}

/* With the rows' max m and sum s: dx = gs (exp(x - m) / s - onehot(t)), one pass per row, split across the pool
   (the bits of the recomputing path: the same m, s and exps). */
typedef struct {
    nb_dtype dt;
    void *dx;
    const void *x;
    const int64_t *t;
    int64_t ts, C;
    double gs;
    const double *ms;
} ce_grad_job;

static int ce_grad_part(void *vj, int64_t lo, int64_t hi) {
    const ce_grad_job *j = vj;
    const int64_t C = j->C;
    double e[256];
    for (int64_t i = lo; i < hi; i++) {
        const int64_t ti = j->t[i * j->ts];
        const double m = j->ms[2 * i], s = j->ms[2 * i + 1];
        for (int64_t k0 = 0; k0 < C; k0 += 256) { /* exps in blocks, vectorised */
            const int64_t w = C - k0 < 256 ? C - k0 : 256;
            for (int64_t k = 0; k < w; k++) e[k] = ld(j->dt, j->x, i * C + k0 + k) - m;
            nbi_cpu_exp_block(j->dt, e, w);
            for (int64_t k = 0; k < w; k++)
                st(j->dt, j->dx, i * C + k0 + k, j->gs * (e[k] / s - (k0 + k == ti ? 1.0 : 0.0)));
        }
    }
    return 0;
}

/* dx (N, C) = gs (softmax(x) - onehot(t)), each element rounded once. */
int nbi_cpu_cross_entropy_grad(nb_dtype dt, void *dx, const void *x, const int64_t *t, int64_t ts, int64_t N,
                               int64_t C, double gs, const double *ms) {
    if (ms) {
        ce_grad_job cj = {dt, dx, x, t, ts, C, gs, ms};
        nbi_parallel_for(N, (ROW_PART_MIN + C - 1) / C, ce_grad_part, &cj);
        return 0;
    }
    rows_job j = {.kind = ROWS_CE_GRAD, .dt = dt, .x = x, .t = t, .ts = ts, .out = dx, .gs = gs, .N = N, .n = C};
    return rows_run(&j) ? 0 : -1;
}

/* ------------------------------------------------------------ layer norm -- */

/* The mean and 1 / sqrt(var + eps) of the D values of x from o, in double. */
static void ln_stats(nb_dtype dt, const void *x, int64_t o, int64_t D, double eps, double *mu, double *rstd) {
    double m = 0, var = 0;
    for (int64_t j = 0; j < D; j++) m += ld(dt, x, o + j);
    m /= (double)D;
    for (int64_t j = 0; j < D; j++) {
        double v = ld(dt, x, o + j) - m;
        var += v * v;
    }
    *mu = m;
    *rstd = 1.0 / sqrt(var / (double)D + eps);
}

typedef struct {
    nb_dtype dt;
    void *y;
    const void *x, *gamma, *beta;
    int64_t D;
    double eps, *mean, *rstd;
} ln_job;

static int ln_part(void *vj, int64_t lo, int64_t hi) {
    const ln_job *j = vj;
    const int64_t D = j->D;
    for (int64_t r = lo; r < hi; r++) {
        double mu, rstd;
        ln_stats(j->dt, j->x, r * D, D, j->eps, &mu, &rstd);
        if (j->mean) j->mean[r] = mu;
        if (j->rstd) j->rstd[r] = rstd;
        for (int64_t k = 0; k < D; k++) {
            double v = (ld(j->dt, j->x, r * D + k) - mu) * rstd;
            if (j->gamma) v *= ld(j->dt, j->gamma, k);
            if (j->beta) v += ld(j->dt, j->beta, k);
            st(j->dt, j->y, r * D + k, v);
        }
    }
    return 0;
}

/* y (rows, D) = layer norm of x (rows, D) with gamma, beta (D) or NULL; each row alone, split across the pool. */
int nbi_cpu_layer_norm(nb_dtype dt, void *y, const void *x, const void *gamma, const void *beta, int64_t rows,
                       int64_t D, double eps, double *mean, double *rstd) {
    if (rows == 0 || D == 0) return 0;
    ln_job j = {dt, y, x, gamma, beta, D, eps, mean, rstd};
    nbi_parallel_for(rows, (ROW_PART_MIN + D - 1) / D, ln_part, &j);
    return 0;
}

/* The closed form, dxhat = g gamma:  dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat)),
   dgamma = sum over rows of g xhat, dbeta = sum over rows of g; in double, each result rounded once. */
int nbi_cpu_layer_norm_grad(nb_dtype dt, void *dx, void *dgamma, void *dbeta, const void *g, const void *x,
                            const void *gamma, int64_t rows, int64_t D, double eps, const double *mean,
                            const double *rstd) {
    double *acc = nbi_alloc(sizeof(double) * (size_t)(3 * D + 1)), *sg = acc + D, *sb = acc + 2 * D;
    if (!acc) return -1;
    for (int64_t j = 0; j < 2 * D; j++) sg[j] = 0;
    for (int64_t r = 0; r < rows; r++) {
        const int64_t o = r * D;
        double mu, rs, m1 = 0, m2 = 0;
        if (mean && rstd)
            mu = mean[r], rs = rstd[r];
        else
            ln_stats(dt, x, o, D, eps, &mu, &rs);
        for (int64_t j = 0; j < D; j++) { /* acc holds xhat for this row */
            double xh = (ld(dt, x, o + j) - mu) * rs, gj = ld(dt, g, o + j), dxh = gamma ? gj * ld(dt, gamma, j) : gj;
            acc[j] = xh;
            m1 += dxh;
            m2 += dxh * xh;
            sg[j] += gj * xh;
            sb[j] += gj;
        }
        m1 /= (double)D;
        m2 /= (double)D;
        if (dx)
            for (int64_t j = 0; j < D; j++) {
                double gj = ld(dt, g, o + j), dxh = gamma ? gj * ld(dt, gamma, j) : gj;
                st(dt, dx, o + j, rs * (dxh - m1 - acc[j] * m2));
            }
    }
    for (int64_t j = 0; j < D; j++) {
        if (dgamma) st(dt, dgamma, j, sg[j]);
        if (dbeta) st(dt, dbeta, j, sb[j]);
    }
    nbi_dealloc(acc);
    return 0;
}

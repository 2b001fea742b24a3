/*
 * rows.c - the CPU's row kernels: softmax and log-softmax along an axis,
 * cross-entropy and its first-order gradient, layer norm and its gradient.
 *
 * f32 rows of the softmax family (contiguous rows: softmax, log-softmax,
 * cross-entropy and its gradient) compute their exps natively in f32
 * (nbi_vexpf_fast, within 1.07 ulp, with a correction for the rounding of
 * x - max) and their sums in double; f64 rows, and rows along an axis that is
 * not innermost, compute in double, each result rounded once. Layer norm
 * computes in double for both dtypes (no transcendental: double costs little
 * and keeps x - mean exact enough), vectorised. Each kernel's error bound
 * against the reference set (src/backend/ref/: exact in double, rounded once)
 * is stated at the kernel and in docs/OPS.md ("f32 accuracy").
 *
 * The cross-entropy kernels take nb_cross_entropy_ex's options (nbi_ce_opts:
 * ignored rows, label smoothing, per-row terms and weights) in the same one
 * pass per row; without them (NULL) they run the plain mean's code unchanged.
 *
 * Every row is computed alone, by the same operations whatever the cut, so
 * the bits do not depend on the thread count; sums within a row run over a
 * fixed number of lanes (L32, L64) fixed by the C code, not by the
 * instruction set the clones pick, so every variant gives the same bits.
 * Sums across rows (cross-entropy's loss) are combined in row order on the
 * calling thread; layer norm's parameter gradients are split by columns, each
 * column summed over the rows in row order by one part.
 */
#include <math.h>
#include <string.h>

#include "../../core/internal.h"
#include "cpu.h"
#include "threads.h"
#include "vmath.h"

/* The hot loops are also compiled for AVX2 and AVX-512 and picked when the program loads, as in kernels.c;
   without FMA contraction every variant rounds the same. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && !defined(NBI_NO_CLONES)
#define NBI_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define NBI_CLONES
#endif

#define L32 16 /* lanes of the f32 loops' sums and maxima */
#define L64 8  /* lanes of the double sums of layer norm */

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

/* f64 rows (f32 rows take the f32 path above). Contiguous rows of length n. Part p of `parts` takes rows [N p / parts, N (p + 1) / parts) and walks them in
   blocks of at most `block` rows (about 2^16 values) through nbi_cpu_softmax_rows, into scratch of its own:
   e (block x n), m and s (block), slice p of one buffer. */
#define ROW_PART_MIN (1 << 15) /* values per part at least: smaller inputs stay on the calling thread */
#define ROW_BLOCK (1 << 16)    /* values per block of exps */

typedef enum { ROWS_SOFTMAX, ROWS_LOG_SOFTMAX, ROWS_CE_LOSS, ROWS_CE_GRAD } rows_kind;

/* ------------------------------------------------------ f32 rows, in f32 -- */

/* Error bounds of the f32 path (u = 2^-24; an f32 ulp of v is at least u |v|; "ulp" below is the f32 ulp of
   the exact value, 2^-149 for subnormals), against the exact result:
     e = exp(x - m):  d = x - m rounded to f32 with its rounding error lo (TwoSum, exact), e = E + E lo with
                      E = nbi_vexpf_fast(d) (within 1.0678 ulp: relative error <= 2.1356 u), exp(lo) = 1 + lo +
                      O(lo^2), |lo| <= 2^-17, and E + E lo rounded once: |e / exp(x - m) - 1| <= 3.136 u
                      (subnormal e: 1.07 ulp absolute more).
     s = sum of e in double over L32 lanes: |s / S - 1| <= 3.136 u + n 2^-53, and the max's own term is
                      exp(0) = 1 exactly, so |s - S| <= 3.136 u (S - 1) + n 2^-53 S.
     softmax          e (1 / s) in double, rounded once: <= 6.8 ulp (6.272 u relative before rounding).
     log-softmax      ((x - m) - log s) in double, rounded once: log s is off by <= 3.136 u (S - 1) / S
                      <= 3.136 u log S <= 3.136 u |y|: <= 3.7 ulp (plus n 2^-53 absolute).
     cross-entropy    each row's term (x_t - m) - log s in double: relative error <= 3.136 u (+ n 2^-53
                      absolute); the terms share a sign, so the loss is within 3.136 u |loss| (double).
     its gradient     gs e / s for k != t, in double, rounded once: <= 6.8 ulp; for k = t the reference's
                      double formula gs (exp(x_t - m) / s - 1) with libm's exp: the error is s's alone,
                      <= 6.8 ulp of the exact value or (n + 8) 2^-53 |gs| absolute (where 1 - p_t is tiny,
                      s's n 2^-53 S dominates).
   m is the max, as the reference's: NaN when the row holds a NaN, 0 when every value is -inf. */
#define F32_CHUNK 2048 /* values whose exps one call of nbi_vexpf_fast takes at least (short rows come in groups) */
#define F32_GROUP 256  /* rows of a group at most (their statistics live on the stack) */
#define F32_FUSED 64   /* rows at least this long take nbi_vexpf_shifted, shorter ones the grouped passes */

/* The max of x (n >= 1), NaN ignored (a NaN shows in the sum of exps and is looked for then). */
NBI_CLONES static float f32_max(const float *x, int64_t n) {
    float mx[L32];
    for (int l = 0; l < L32; l++) mx[l] = -INFINITY;
    int64_t k = 0;
    for (; k + L32 <= n; k += L32)
        for (int l = 0; l < L32; l++) mx[l] = x[k + l] > mx[l] ? x[k + l] : mx[l];
    float m = -INFINITY;
    for (; k < n; k++) m = x[k] > m ? x[k] : m;
    for (int l = 0; l < L32; l++) m = mx[l] > m ? mx[l] : m;
    return m;
}

NBI_CLONES static void f32_shift(float *e, const float *x, int64_t n, float m) {
    for (int64_t k = 0; k < n; k++) e[k] = x[k] - m;
}

/* e = exp(x - m) from E = exp(fl(x - m)): the error lo of fl(x - m) (Knuth's TwoSum) folds in as E + E lo. A
   zero E (x - m = -inf, or underflow) stays zero; a NaN stays NaN. */
static inline float f32_fix(float E, float x, float m) {
    const float d = x - m, bb = d - x, lo = (x - (d - bb)) + (-m - bb);
    return E > 0 ? E + E * lo : E;
}

/* e (n) = exp(x - m) from e = exp(fl(x - m)); returns the sum of the corrected e in double (L32 lanes, then the
   lanes in order, then the tail). */
NBI_CLONES static double f32_fix_sum(float *e, const float *x, int64_t n, float m) {
    double acc[L32];
    for (int l = 0; l < L32; l++) acc[l] = 0;
    int64_t k = 0;
    for (; k + L32 <= n; k += L32)
        for (int l = 0; l < L32; l++) {
            const float v = f32_fix(e[k + l], x[k + l], m);
            e[k + l] = v;
            acc[l] += (double)v;
        }
    double s = 0;
    for (int l = 0; l < L32; l++) s += acc[l];
    for (; k < n; k++) {
        const float v = f32_fix(e[k], x[k], m);
        e[k] = v;
        s += (double)v;
    }
    return s;
}

/* y (n) = e c, in double, rounded once (y may be e). */
NBI_CLONES static void f32_scale(float *y, const float *e, int64_t n, double c) {
    for (int64_t k = 0; k < n; k++) y[k] = (float)((double)e[k] * c);
}

/* y (n) = ((x - m) - ls), in double, rounded once. */
NBI_CLONES static void f32_logsm(float *y, const float *x, int64_t n, double m, double ls) {
    for (int64_t k = 0; k < n; k++) y[k] = (float)(((double)x[k] - m) - ls);
}

/* y (n) = e c - d, in double, rounded once (y may be e). */
NBI_CLONES static void f32_scale_sub(float *y, const float *e, int64_t n, double c, double d) {
    for (int64_t k = 0; k < n; k++) y[k] = (float)((double)e[k] * c - d);
}

/* The sum of x (n) in double over L32 lanes, then the lanes in order, then the tail. */
NBI_CLONES static double f32_sum(const float *x, int64_t n) {
    double acc[L32];
    for (int l = 0; l < L32; l++) acc[l] = 0;
    int64_t k = 0;
    for (; k + L32 <= n; k += L32)
        for (int l = 0; l < L32; l++) acc[l] += (double)x[k + l];
    double s = 0;
    for (int l = 0; l < L32; l++) s += acc[l];
    for (; k < n; k++) s += (double)x[k];
    return s;
}

/* log softmax(x)[t] = lpt of a row negated into its cross-entropy term under ce: (1 - eps) (-lpt) + eps (m + ls -
   xsum / n); the caller negates again (the loss path sums -terms). */
static inline double ce_term(double lpt, double m, double ls, double xsum, int64_t n, double eps) {
    return eps > 0 ? (1.0 - eps) * -lpt + eps * ((m + ls) - xsum / (double)n) : -lpt;
}

static bool f32_has_nan(const float *x, int64_t n) {
    for (int64_t k = 0; k < n; k++)
        if (x[k] != x[k]) return true;
    return false;
}

/* Rows (rows x n, contiguous, rows <= F32_GROUP, rows n <= max(n, F32_CHUNK)) of x into e (the same shape): e = exp(x - m) with
   each row's m = its max (given in m when given is true, else found and written) and s = its sum of e. Rows of
   F32_FUSED or more values go through nbi_vexpf_shifted (vmath.h: the shift, exp, correction and sum in one
   pass); shorter ones are shifted, exponentiated as one run across the group and corrected and summed
   (f32_fix_sum), which vectorises across rows. Both give the same bits (test_vmath checks the fused pass
   against this definition). */
static void f32_block(float *e, const float *x, int64_t rows, int64_t n, float *m, double *s, bool given) {
    if (n >= F32_FUSED) { /* each row in one pass after its max: the same bits as the passes below */
        for (int64_t i = 0; i < rows; i++) {
            if (!given) {
                const float mx = f32_max(x + i * n, n);
                m[i] = mx == -INFINITY ? 0.0f : mx;
            }
            const double si = nbi_vexpf_shifted(e + i * n, x + i * n, n, m[i]);
            if (!given) {
                s[i] = si;
                if (si != si && f32_has_nan(x + i * n, n)) m[i] = NAN;
            }
        }
        return;
    }
    for (int64_t i = 0; i < rows; i++) {
        if (!given) {
            const float mx = f32_max(x + i * n, n);
            m[i] = mx == -INFINITY ? 0.0f : mx;
        }
        f32_shift(e + i * n, x + i * n, n, m[i]);
    }
    nbi_vexpf_fast(e, e, rows * n); /* one call for the group: short rows vectorise across rows */
    for (int64_t i = 0; i < rows; i++) {
        const double si = f32_fix_sum(e + i * n, x + i * n, n, m[i]);
        if (!given) {
            s[i] = si;
            if (si != si && f32_has_nan(x + i * n, n)) m[i] = NAN; /* the reference's max: NaN once met */
        }
    }
}

typedef struct {
    rows_kind kind;
    const float *x;       /* (N, n) */
    const int64_t *t;     /* (N) at t[i ts] */
    int64_t ts, n;
    float *out;           /* softmax, log-softmax or the gradient: (N, n) */
    double *loss;         /* ROWS_CE_LOSS: (N) */
    double *ms;           /* ROWS_CE_LOSS: (N, 2) or NULL */
    float *ex;            /* ROWS_CE_LOSS: (N, n) or NULL, each row's exps kept for the gradient */
    const double *msin;   /* ROWS_CE_GRAD: (N, 2) or NULL (recomputed) */
    const float *exin;    /* ROWS_CE_GRAD: (N, n) or NULL, the forward's exps (used with msin) */
    double gs;
    const nbi_ce_opts *ce; /* ROWS_CE_LOSS, ROWS_CE_GRAD: ignored rows, smoothing, weights; or NULL */
} f32_job;

static int f32_part(void *vj, int64_t lo, int64_t hi) {
    const f32_job *j = vj;
    const int64_t n = j->n, per = n >= F32_CHUNK ? 1 : F32_CHUNK / n < F32_GROUP ? F32_CHUNK / n : F32_GROUP;
    float m[F32_GROUP];
    double s[F32_GROUP];
    float *buf = NULL; /* the loss has no output rows to hold the exps, unless they are kept (ex) */
    if (j->kind == ROWS_CE_LOSS && !j->ex && !(buf = nbi_alloc(sizeof(float) * (size_t)(per * n)))) return -1;
    const bool given = j->kind == ROWS_CE_GRAD && j->msin, reuse = given && j->exin;
    for (int64_t r0 = lo; r0 < hi; r0 += per) {
        const int64_t rows = hi - r0 < per ? hi - r0 : per;
        const float *x = j->x + r0 * n;
        float *e = buf ? buf : j->kind == ROWS_CE_LOSS ? j->ex + r0 * n : j->out + r0 * n;
        if (given)
            for (int64_t i = 0; i < rows; i++) m[i] = (float)j->msin[2 * (r0 + i)], s[i] = j->msin[2 * (r0 + i) + 1];
        if (!reuse) /* with the forward's exps (the same bits this computes) the gradient only scales them */
            f32_block(e, x, rows, n, m, s, given);
        for (int64_t i = 0; i < rows; i++) {
            const int64_t r = r0 + i;
            float *er = e + i * n;
            const float *xr = x + i * n;
            switch (j->kind) {
            case ROWS_SOFTMAX: f32_scale(er, er, n, 1.0 / s[i]); break;
            case ROWS_LOG_SOFTMAX: f32_logsm(er, xr, n, (double)m[i], log(s[i])); break;
            case ROWS_CE_LOSS: {
                const int64_t ti = j->t[r * j->ts];
                if (j->ms) j->ms[2 * r] = (double)m[i], j->ms[2 * r + 1] = s[i];
                if (!j->ce) {
                    j->loss[r] = ((double)xr[ti] - (double)m[i]) - log(s[i]);
                    break;
                }
                if (ti == j->ce->ignore) {
                    j->loss[r] = 0;
                    break;
                }
                const double ls = log(s[i]), eps = j->ce->eps;
                j->loss[r] = -ce_term(((double)xr[ti] - (double)m[i]) - ls, (double)m[i], ls,
                                      eps > 0 ? f32_sum(xr, n) : 0, n, eps);
                break;
            }
            case ROWS_CE_GRAD: {
                const int64_t ti = j->t[r * j->ts];
                const float *es = reuse ? j->exin + r * n : er; /* the row's exps */
                if (!j->ce) {
                    f32_scale(er, es, n, j->gs / s[i]);
                    er[ti] = (float)(j->gs * (exp((double)xr[ti] - (double)m[i]) / s[i] - 1.0));
                    break;
                }
                if (ti == j->ce->ignore) {
                    memset(er, 0, sizeof(float) * (size_t)n);
                    break;
                }
                const double w = j->ce->w ? j->ce->w[r] : j->gs, eps = j->ce->eps, d = eps / (double)n;
                if (eps > 0)
                    f32_scale_sub(er, es, n, w / s[i], w * d);
                else
                    f32_scale(er, es, n, w / s[i]);
                er[ti] = (float)(w * ((exp((double)xr[ti] - (double)m[i]) / s[i] - (1.0 - eps)) - d));
                break;
            }
            }
        }
    }
    nbi_dealloc(buf);
    return 0;
}

/* Runs j over N >= 1 rows of n >= 1 across the pool: 0, or -1 out of memory. */
static int f32_run(f32_job *j, int64_t N) {
    return nbi_parallel_for(N, (ROW_PART_MIN + j->n - 1) / j->n, f32_part, j) ? -1 : 0;
}

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
    const nbi_ce_opts *ce; /* ROWS_CE_LOSS, ROWS_CE_GRAD: or NULL */
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
                case ROWS_CE_LOSS: {
                    const int64_t ti = j->t[r0 * j->ts];
                    if (j->ms) j->ms[2 * r0] = m[i], j->ms[2 * r0 + 1] = si;
                    if (j->ce && ti == j->ce->ignore) {
                        j->loss[r0] = 0;
                        break;
                    }
                    const double ls = log(si), lpt = (ld(dt, j->x, r0 * n + ti) - m[i]) - ls;
                    if (!j->ce) {
                        j->loss[r0] = lpt;
                        break;
                    }
                    double xsum = 0;
                    if (j->ce->eps > 0)
                        for (int64_t k = 0; k < n; k++) xsum += ld(dt, j->x, r0 * n + k);
                    j->loss[r0] = -ce_term(lpt, m[i], ls, xsum, n, j->ce->eps);
                    break;
                }
                case ROWS_CE_GRAD: {
                    const int64_t ti = j->t[r0 * j->ts];
                    if (!j->ce) {
                        for (int64_t k = 0; k < n; k++)
                            st(dt, j->out, r0 * n + k, j->gs * (er[k] / si - (k == ti ? 1.0 : 0.0)));
                        break;
                    }
                    const bool ign = ti == j->ce->ignore;
                    const double w = j->ce->w ? j->ce->w[r0] : j->gs, eps = j->ce->eps, d = eps / (double)n;
                    for (int64_t k = 0; k < n; k++)
                        st(dt, j->out, r0 * n + k, ign ? 0.0 : w * ((er[k] / si - (k == ti ? 1.0 - eps : 0.0)) - d));
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

/* y (outer, n, inner) = softmax or log-softmax of x (outer, n, inner) along n. f32 with inner 1: in f32, softmax
   within 6.8 ulp and log-softmax within 3.7 ulp (+ n 2^-52 absolute) of the exact value; otherwise in double,
   each result rounded once (the reference's bits but for the order of the sum of exps). */
void nbi_cpu_softmax(nb_dtype dt, void *y, const void *x, int64_t outer, int64_t n, int64_t inner, bool log) {
    if (n == 0 || outer == 0 || inner == 0) return; /* no elements */
    if (dt == NB_F32 && inner == 1) { /* rows contiguous: in f32, each row in place in y */
        f32_job fj = {.kind = log ? ROWS_LOG_SOFTMAX : ROWS_SOFTMAX, .x = x, .out = y, .n = n};
        if (f32_run(&fj, outer) == 0) return; /* (the part cannot fail: no scratch) */
    }
    rows_job j = {.kind = log ? ROWS_LOG_SOFTMAX : ROWS_SOFTMAX, .dt = dt, .x = x, .out = y, .N = outer, .n = n};
    if (inner == 1 && rows_run(&j)) return; /* rows contiguous: the exps in blocks of rows */
    strided_job sj = {dt, y, x, n, inner, log};
    nbi_parallel_for(outer * inner, (ROW_PART_MIN + n - 1) / n, strided_part, &sj);
}

/* *loss = -sum over rows of log softmax(x (N, C))[i, t_i], in row order whatever the thread count. f32: each row's
   term within 2.0004 u (u = 2^-24) relative of the exact value, so the loss too (the terms share a sign). */
int nbi_cpu_cross_entropy(nb_dtype dt, double *loss, const void *x, const int64_t *t, int64_t ts, int64_t N,
                          int64_t C, double *ms, void *ex, const nbi_ce_opts *ce) {
    double *rows = nbi_alloc(sizeof(double) * (size_t)N); /* N doubles fit: x holds N C >= N values */
    if (dt == NB_F32) { /* f32 rows keep their exps in ex (with ms) for the gradient; f64 rows leave ex alone */
        f32_job fj = {.kind = ROWS_CE_LOSS, .x = x, .t = t, .ts = ts, .loss = rows, .ms = ms, .ex = ms ? ex : NULL,
                      .n = C, .ce = ce};
        if (!rows || f32_run(&fj, N)) {
            nbi_dealloc(rows);
            return -1;
        }
    } else {
        rows_job j = {.kind = ROWS_CE_LOSS, .dt = dt, .x = x, .t = t, .ts = ts, .loss = rows, .ms = ms, .ce = ce,
                      .N = N, .n = C};
        if (!rows || !rows_run(&j)) {
            nbi_dealloc(rows);
            return -1;
        }
    }
    double acc = 0;
    for (int64_t i = 0; i < N; i++) acc -= rows[i];
    if (ce && ce->rows)
        for (int64_t i = 0; i < N; i++) ce->rows[i] = -rows[i];
    nbi_dealloc(rows);
    *loss = acc;
    return 0;
}

/* f64: with the rows' max m and sum s: dx = gs (exp(x - m) / s - onehot(t)), one pass per row, split across the pool
   (the bits of the recomputing path: the same m, s and exps). */
typedef struct {
    nb_dtype dt;
    void *dx;
    const void *x;
    const int64_t *t;
    int64_t ts, C;
    double gs;
    const double *ms;
    const nbi_ce_opts *ce;
} ce_grad_job;

static int ce_grad_part(void *vj, int64_t lo, int64_t hi) {
    const ce_grad_job *j = vj;
    const int64_t C = j->C;
    double e[256];
    for (int64_t i = lo; i < hi; i++) {
        const int64_t ti = j->t[i * j->ts];
        const double m = j->ms[2 * i], s = j->ms[2 * i + 1];
        if (j->ce && ti == j->ce->ignore) {
            for (int64_t k = 0; k < C; k++) st(j->dt, j->dx, i * C + k, 0.0);
            continue;
        }
        const double gs = j->ce && j->ce->w ? j->ce->w[i] : j->gs, eps = j->ce ? j->ce->eps : 0,
                     d = eps / (double)C, on = 1.0 - eps;
        for (int64_t k0 = 0; k0 < C; k0 += 256) { /* exps in blocks, vectorised */
            const int64_t w = C - k0 < 256 ? C - k0 : 256;
            for (int64_t k = 0; k < w; k++) e[k] = ld(j->dt, j->x, i * C + k0 + k) - m;
            nbi_cpu_exp_block(e, w);
            if (!j->ce)
                for (int64_t k = 0; k < w; k++)
                    st(j->dt, j->dx, i * C + k0 + k, gs * (e[k] / s - (k0 + k == ti ? 1.0 : 0.0)));
            else
                for (int64_t k = 0; k < w; k++)
                    st(j->dt, j->dx, i * C + k0 + k, gs * ((e[k] / s - (k0 + k == ti ? on : 0.0)) - d));
        }
    }
    return 0;
}

/* dx (N, C) = gs (softmax(x) - onehot(t)), each element rounded once; f32 within 6.8 ulp of the exact value (at
   the target, where 1 - p is tiny: (C + 8) 2^-53 gs absolute). dx may be ex (the forward's exps, scaled in place). */
int nbi_cpu_cross_entropy_grad(nb_dtype dt, void *dx, const void *x, const int64_t *t, int64_t ts, int64_t N,
                               int64_t C, double gs, const double *ms, const void *ex, const nbi_ce_opts *ce) {
    if (dt == NB_F32) { /* one pass per row with ms (scaling the forward's exps when ex holds them); without, the
                           forward's m and s first (the same values) */
        f32_job fj = {.kind = ROWS_CE_GRAD, .x = x, .t = t, .ts = ts, .out = dx, .msin = ms,
                      .exin = ms ? ex : NULL, .gs = gs, .n = C, .ce = ce};
        return f32_run(&fj, N);
    }
    if (ms) {
        ce_grad_job cj = {dt, dx, x, t, ts, C, gs, ms, ce};
        nbi_parallel_for(N, (ROW_PART_MIN + C - 1) / C, ce_grad_part, &cj);
        return 0;
    }
    rows_job j = {.kind = ROWS_CE_GRAD, .dt = dt, .x = x, .t = t, .ts = ts, .out = dx, .gs = gs, .ce = ce, .N = N,
                  .n = C};
    return rows_run(&j) ? 0 : -1;
}


/* ------------------------------------------------------------ layer norm -- */

/* Both dtypes compute in double (T only says what is loaded and stored), vectorised over L64 lanes, each result
   rounded once. Against the reference (the same formulas with sums in element order): the row's sums are
   associated differently (lanes), which moves mean and rstd by about D 2^-53 relative to the row's scale, so an
   f32 result is within 0.5 ulp of the reference's double value plus D 2^-52 (max |x - mean| rstd |gamma| +
   |beta|) absolute: the reference's own f32 bits except rarely 1 ulp off, next to a halfway point. dgamma and
   dbeta are summed as the reference sums them (row order, the same operations): with the same mean and rstd
   they are its bits. f64 results are within a few units of 2^-52 of the reference's. */

/* The body of ln_grad_row, once with gamma and once without (so that each loop vectorises). */
#define LN_DXH_GAMMA(i) ((double)g[i] * (double)gamma[i])
#define LN_DXH_ONE(i) ((double)g[i])
#define LN_GRAD_BODY(T, DXH)                                                        \
    do {                                                                         \
        double a1[L64], a2[L64], m1 = 0, m2 = 0;                                 \
        for (int l = 0; l < L64; l++) a1[l] = a2[l] = 0;                         \
        int64_t k = 0;                                                           \
        for (; k + L64 <= D; k += L64)                                           \
            for (int l = 0; l < L64; l++) {                                      \
                const double xh = ((double)x[k + l] - mu) * rs, dxh = DXH(k + l); \
                a1[l] += dxh;                                                    \
                a2[l] += dxh * xh;                                               \
            }                                                                    \
        for (int l = 0; l < L64; l++) m1 += a1[l], m2 += a2[l];                  \
        for (; k < D; k++) {                                                     \
            const double xh = ((double)x[k] - mu) * rs, dxh = DXH(k);            \
            m1 += dxh;                                                           \
            m2 += dxh * xh;                                                      \
        }                                                                        \
        m1 /= (double)D;                                                         \
        m2 /= (double)D;                                                         \
        for (k = 0; k < D; k++) {                                                \
            const double xh = ((double)x[k] - mu) * rs, dxh = DXH(k);            \
            dx[k] = (T)(rs * ((dxh - m1) - xh * m2));                            \
        }                                                                        \
    } while (0)

#define LN_KERNELS(T, SFX)                                                                                      \
    /* The mean and 1 / sqrt(var + eps) (var biased, two passes) of x (D). */                                  \
    NBI_CLONES static void ln_stats_##SFX(const T *x, int64_t D, double eps, double *mu, double *rstd) {       \
        double a[L64], m = 0, v = 0;                                                                            \
        int64_t k = 0;                                                                                          \
        for (int l = 0; l < L64; l++) a[l] = 0;                                                                 \
        for (; k + L64 <= D; k += L64)                                                                          \
            for (int l = 0; l < L64; l++) a[l] += (double)x[k + l];                                             \
        for (int l = 0; l < L64; l++) m += a[l];                                                                \
        for (; k < D; k++) m += (double)x[k];                                                                   \
        m /= (double)D;                                                                                         \
        for (int l = 0; l < L64; l++) a[l] = 0;                                                                 \
        for (k = 0; k + L64 <= D; k += L64)                                                                     \
            for (int l = 0; l < L64; l++) {                                                                     \
                const double d = (double)x[k + l] - m;                                                          \
                a[l] += d * d;                                                                                  \
            }                                                                                                   \
        for (int l = 0; l < L64; l++) v += a[l];                                                                \
        for (; k < D; k++) {                                                                                    \
            const double d = (double)x[k] - m;                                                                  \
            v += d * d;                                                                                         \
        }                                                                                                       \
        *mu = m;                                                                                                \
        *rstd = 1.0 / sqrt(v / (double)D + eps);                                                                \
    }                                                                                                           \
    /* y (D) = (x - mu) rstd gamma + beta, gamma and beta (D) or NULL. */                                      \
    NBI_CLONES static void ln_row_##SFX(T *restrict y, const T *restrict x, const T *gamma, const T *beta,     \
                                        int64_t D, double mu, double rs) {                                      \
        if (gamma && beta)                                                                                      \
            for (int64_t k = 0; k < D; k++) y[k] = (T)(((double)x[k] - mu) * rs * (double)gamma[k] + (double)beta[k]); \
        else if (gamma)                                                                                         \
            for (int64_t k = 0; k < D; k++) y[k] = (T)(((double)x[k] - mu) * rs * (double)gamma[k]);          \
        else if (beta)                                                                                          \
            for (int64_t k = 0; k < D; k++) y[k] = (T)(((double)x[k] - mu) * rs + (double)beta[k]);           \
        else                                                                                                    \
            for (int64_t k = 0; k < D; k++) y[k] = (T)(((double)x[k] - mu) * rs);                             \
    }                                                                                                           \
    /* dx (D) = rs (dxh - m1 - xh m2) with xh = (x - mu) rs, dxh = g gamma, m1 = mean(dxh), m2 = mean(dxh xh). */ \
    NBI_CLONES static void ln_grad_row_##SFX(T *restrict dx, const T *g, const T *x, const T *gamma, int64_t D, \
                                             double mu, double rs) {                                            \
        if (gamma)                                                                                              \
            LN_GRAD_BODY(T, LN_DXH_GAMMA);                                                                         \
        else                                                                                                    \
            LN_GRAD_BODY(T, LN_DXH_ONE);                                                                         \
    }                                                                                                           \
    /* sg[j] += g[r, j] xh[r, j], sb[j] += g[r, j] over rows r in order, for the w columns at x, g (rows D apart). */ \
    NBI_CLONES static void ln_colsum_##SFX(double *restrict sg, double *restrict sb, const T *g, const T *x,  \
                                           int64_t rows, int64_t D, int64_t w, const double *mu, const double *rs) { \
        for (int64_t r = 0; r < rows; r++) {                                                                    \
            const T *gr = g + r * D, *xr = x + r * D;                                                           \
            const double m = mu[r], s = rs[r];                                                                  \
            for (int64_t k = 0; k < w; k++) {                                                                   \
                const double gk = (double)gr[k];                                                                \
                sg[k] += gk * (((double)xr[k] - m) * s);                                                        \
                sb[k] += gk;                                                                                    \
            }                                                                                                   \
        }                                                                                                       \
    }

LN_KERNELS(float, f32)
LN_KERNELS(double, f64)

typedef struct {
    nb_dtype dt;
    void *y, *dx, *dgamma, *dbeta;
    const void *x, *g, *gamma, *beta;
    int64_t rows, D;
    double eps, *mean, *rstd; /* forward: written when not NULL; backward: given, or scratch to fill */
    bool have_stats;          /* backward: mean and rstd hold the forward's values */
} ln_job;

static int ln_part(void *vj, int64_t lo, int64_t hi) {
    const ln_job *j = vj;
    const int64_t D = j->D;
    for (int64_t r = lo; r < hi; r++) {
        double mu, rs;
        if (j->dt == NB_F32) {
            const float *x = (const float *)j->x + r * D;
            ln_stats_f32(x, D, j->eps, &mu, &rs);
            ln_row_f32((float *)j->y + r * D, x, j->gamma, j->beta, D, mu, rs);
        } else {
            const double *x = (const double *)j->x + r * D;
            ln_stats_f64(x, D, j->eps, &mu, &rs);
            ln_row_f64((double *)j->y + r * D, x, j->gamma, j->beta, D, mu, rs);
        }
        if (j->mean) j->mean[r] = mu;
        if (j->rstd) j->rstd[r] = rs;
    }
    return 0;
}

/* y (rows, D) = layer norm of x (rows, D) with gamma, beta (D) or NULL; each row alone, split across the pool.
   Bound: see above (f32 within 0.5 ulp + D 2^-52 relative to the row's scale of the exact value). */
int nbi_cpu_layer_norm(nb_dtype dt, void *y, const void *x, const void *gamma, const void *beta, int64_t rows,
                       int64_t D, double eps, double *mean, double *rstd) {
    if (rows == 0 || D == 0) return 0;
    ln_job j = {.dt = dt, .y = y, .x = x, .gamma = gamma, .beta = beta, .rows = rows, .D = D, .eps = eps,
                .mean = mean, .rstd = rstd};
    nbi_parallel_for(rows, (ROW_PART_MIN + D - 1) / D, ln_part, &j);
    return 0;
}

/* Backward, part 1 (split by rows): each row's mean and rstd when not given, and its dx. */
static int ln_grad_rows(void *vj, int64_t lo, int64_t hi) {
    const ln_job *j = vj;
    const int64_t D = j->D;
    for (int64_t r = lo; r < hi; r++) {
        double mu, rs;
        const int64_t o = r * D;
        if (j->have_stats)
            mu = j->mean[r], rs = j->rstd[r];
        else if (j->dt == NB_F32)
            ln_stats_f32((const float *)j->x + o, D, j->eps, &mu, &rs);
        else
            ln_stats_f64((const double *)j->x + o, D, j->eps, &mu, &rs);
        if (!j->have_stats) j->mean[r] = mu, j->rstd[r] = rs;
        if (!j->dx) continue;
        if (j->dt == NB_F32)
            ln_grad_row_f32((float *)j->dx + o, (const float *)j->g + o, (const float *)j->x + o, j->gamma, D, mu, rs);
        else
            ln_grad_row_f64((double *)j->dx + o, (const double *)j->g + o, (const double *)j->x + o, j->gamma, D,
                            mu, rs);
    }
    return 0;
}

/* Backward, part 2 (split by columns): dgamma and dbeta, each column summed over the rows in row order by the
   one part that holds it, 256 columns at a time: the same operations in the same order for any cut. */
#define LN_COLS 256
static int ln_grad_cols(void *vj, int64_t lo, int64_t hi) {
    const ln_job *j = vj;
    double sg[LN_COLS], sb[LN_COLS];
    for (int64_t c0 = lo; c0 < hi; c0 += LN_COLS) {
        const int64_t w = hi - c0 < LN_COLS ? hi - c0 : LN_COLS;
        for (int64_t k = 0; k < w; k++) sg[k] = sb[k] = 0;
        if (j->dt == NB_F32)
            ln_colsum_f32(sg, sb, (const float *)j->g + c0, (const float *)j->x + c0, j->rows, j->D, w, j->mean, j->rstd);
        else
            ln_colsum_f64(sg, sb, (const double *)j->g + c0, (const double *)j->x + c0, j->rows, j->D, w, j->mean,
                          j->rstd);
        for (int64_t k = 0; k < w; k++) {
            if (j->dgamma) st(j->dt, j->dgamma, c0 + k, sg[k]);
            if (j->dbeta) st(j->dt, j->dbeta, c0 + k, sb[k]);
        }
    }
    return 0;
}

/* The closed form, dxhat = g gamma:  dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat)),
   dgamma = sum over rows of g xhat, dbeta = sum over rows of g; in double, each result rounded once. dx is
   split across the pool by rows, dgamma and dbeta by columns (each column's sum in row order, whatever the
   thread count). Bound: dx within 0.5 ulp + D 2^-52 (relative to the row's scale) of the exact value; dgamma
   and dbeta the reference's bits given the same mean and rstd. */
int nbi_cpu_layer_norm_grad(nb_dtype dt, void *dx, void *dgamma, void *dbeta, const void *g, const void *x,
                            const void *gamma, int64_t rows, int64_t D, double eps, const double *mean,
                            const double *rstd) {
    if (D == 0) return 0;
    ln_job j = {.dt = dt, .dx = dx, .dgamma = dgamma, .dbeta = dbeta, .x = x, .g = g, .gamma = gamma,
                .rows = rows, .D = D, .eps = eps, .have_stats = mean && rstd};
    double *scratch = NULL;
    if (j.have_stats) {
        j.mean = (double *)mean, j.rstd = (double *)rstd; /* read only: have_stats */
    } else {
        if (!(scratch = nbi_alloc(sizeof(double) * (size_t)(2 * rows + 1)))) return -1;
        j.mean = scratch, j.rstd = scratch + rows;
    }
    if (rows > 0 && (dx || !j.have_stats)) nbi_parallel_for(rows, (ROW_PART_MIN + D - 1) / D, ln_grad_rows, &j);
    if (dgamma || dbeta) nbi_parallel_for(D, (ROW_PART_MIN + rows - 1) / (rows > 0 ? rows : 1), ln_grad_cols, &j);
    nbi_dealloc(scratch);
    return 0;
}

/*
 * softmax.c - softmax and log-softmax along an axis, and the classification
 * losses built on them: forward kernels and gradient rules.
 *
 * Kernels subtract the maximum along the axis before exponentiating, so logits
 * of any size give finite results, and accumulate in double. The input is
 * viewed as (outer, n, inner) with the reduced axis in the middle.
 *
 * Gradients (seed 004):  softmax      dX = R (G - sum(G R))
 *                        log_softmax  dX = G - softmax(X) sum(G)
 *                        nll_loss     dX = -G onehot(t) / N
 *                        cross_entropy dX = G (softmax(X) - onehot(t)) / N
 */
#include <math.h>

#include "../core/internal.h"
#include "../backend/cpu/threads.h"

/* The max m and sum s of exp(x - m) over the n elements base + k * step of contiguous x, in double
   (m = 0 when all are -inf, so that exp stays finite). */
static void row_stats(const nb_tensor *x, int64_t base, int64_t n, int64_t step, double *m, double *s) {
    double mx = -INFINITY, sum = 0;
    for (int64_t k = 0; k < n; k++) {
        double v = nbi_at(x, base + k * step);
        if (v > mx || v != v) mx = v;
    }
    if (mx == -INFINITY) mx = 0;
    for (int64_t k = 0; k < n; k++) sum += exp(nbi_at(x, base + k * step) - mx);
    *m = mx;
    *s = sum;
}

/* Contiguous rows of length n, split across the thread pool. Part p of `parts` takes rows
   [N p / parts, N (p + 1) / parts) and walks them in blocks of at most `block` rows (about 2^16 values)
   through nbi_cpu_softmax_rows, into scratch of its own: e (block x n), m and s (block), slice p of one
   buffer the caller allocates. Every row is computed alone, by the same operations whatever the cut, so
   the bits do not depend on the thread count; cross-entropy's losses go to a per-row buffer and are summed
   afterwards, in row order, on the calling thread. Shared by the softmax kernel, the cross-entropy loss
   and its first-order gradient. */
#define ROW_PART_MIN (1 << 15) /* values per part at least: smaller inputs stay on the calling thread */
#define ROW_BLOCK (1 << 16)    /* values per block of exps */

typedef enum { ROWS_SOFTMAX, ROWS_LOG_SOFTMAX, ROWS_CE_LOSS, ROWS_CE_GRAD } rows_kind;

typedef struct {
    rows_kind kind;
    const nb_tensor *x, *t; /* x: contiguous (N, n); t: the (N) targets of the losses */
    nb_tensor *out;         /* softmax, log-softmax or the gradient: contiguous (N, n) */
    double *loss;           /* ROWS_CE_LOSS: (N), log softmax(x)[i, t_i] */
    double gs;              /* ROWS_CE_GRAD: g / N */
    double *scratch;        /* parts x block x (n + 2) */
    int64_t N, n, block;
    int parts;
} rows_job;

static int64_t target_at(const nb_tensor *t, int64_t i) {
    return *(const int64_t *)(const void *)(t->data + i * t->strides[0] * 8);
}

/* Parts lo .. hi - 1 of job vj. */
static int rows_part(void *vj, int64_t lo, int64_t hi) {
    const rows_job *j = vj;
    const int64_t n = j->n, es = (int64_t)nbi_dsize(j->x->dtype);
    for (int64_t p = lo; p < hi; p++) {
        double *e = j->scratch + p * j->block * (n + 2), *m = e + j->block * n, *s = m + j->block;
        const int64_t end = j->N * (p + 1) / j->parts;
        for (int64_t r0 = j->N * p / j->parts; r0 < end;) {
            const int64_t rows = end - r0 < j->block ? end - r0 : j->block;
            nbi_cpu_softmax_rows(j->x->dtype, j->x->data + r0 * n * es, rows, n, e, m, s);
            for (int64_t i = 0; i < rows; i++, r0++) {
                const double *er = e + i * n, si = s[i];
                switch (j->kind) {
                case ROWS_SOFTMAX:
                    for (int64_t k = 0; k < n; k++) nbi_put(j->out, r0 * n + k, er[k] / si);
                    break;
                case ROWS_LOG_SOFTMAX: {
                    const double ls = log(si);
                    for (int64_t k = 0; k < n; k++) nbi_put(j->out, r0 * n + k, (nbi_at(j->x, r0 * n + k) - m[i]) - ls);
                    break;
                }
                case ROWS_CE_LOSS:
                    j->loss[r0] = (nbi_at(j->x, r0 * n + target_at(j->t, r0)) - m[i]) - log(si);
                    break;
                case ROWS_CE_GRAD: {
                    const int64_t ti = target_at(j->t, r0);
                    for (int64_t k = 0; k < n; k++)
                        nbi_put(j->out, r0 * n + k, j->gs * (er[k] / si - (k == ti ? 1.0 : 0.0)));
                    break;
                }
                }
            }
        }
    }
    return 0;
}

/* Runs j (kind, x, t, out, loss, gs, N >= 1 and n >= 1 set) over the pool. Returns false, having computed
   nothing, when its scratch cannot be allocated; the caller reports it. */
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

/* The rows of a softmax along an axis that is not innermost (or when the scratch above cannot be had):
   rows r = o inner + i of x viewed as (outer, n, inner), one at a time, split across the pool. */
typedef struct {
    nb_tensor *out;
    const nb_tensor *x;
    int64_t n, inner;
    bool logarithm;
} strided_job;

static int strided_part(void *vj, int64_t lo, int64_t hi) {
    const strided_job *j = vj;
    for (int64_t r = lo; r < hi; r++) {
        int64_t base = (r / j->inner) * j->n * j->inner + r % j->inner;
        double m, s;
        row_stats(j->x, base, j->n, j->inner, &m, &s);
        double ls = log(s);
        for (int64_t k = 0; k < j->n; k++) {
            double v = nbi_at(j->x, base + k * j->inner) - m;
            nbi_put(j->out, base + k * j->inner, j->logarithm ? v - ls : exp(v) / s);
        }
    }
    return 0;
}

/* out (contiguous) = softmax or log-softmax of x (contiguous) along axis ax. */
static void softmax_kernel(nb_tensor *out, const nb_tensor *x, int ax, bool logarithm) {
    int64_t n = x->shape[ax], outer = 1, inner = 1;
    for (int i = 0; i < ax; i++) outer *= x->shape[i];
    for (int i = ax + 1; i < x->rank; i++) inner *= x->shape[i];
    if (n == 0 || outer == 0 || inner == 0) return; /* no elements */
    rows_job j = {.kind = logarithm ? ROWS_LOG_SOFTMAX : ROWS_SOFTMAX, .x = x, .out = out, .N = outer, .n = n};
    if (inner == 1 && rows_run(&j)) return; /* rows contiguous: the exps in blocks of rows */
    strided_job sj = {out, x, n, inner, logarithm};
    nbi_parallel_for(outer * inner, (ROW_PART_MIN + n - 1) / n, strided_part, &sj);
}

static nb_tensor *softmax_op(const char *fn, nbi_op op, nb_tensor *a, int axis) {
    if (!nbi_check_float(fn, a, 1)) return NULL;
    int ax;
    if (a->rank == 0 || !nbi_axis(axis, a->rank, &ax))
        return nbi_err(fn, "axis %d is out of range for a tensor %s of rank %d", axis, NBI_SHAPE(a), a->rank);
    nb_tensor *c = nbi_contiguous_input(fn, a);
    if (!c) return NULL;
    nb_tensor *out = nbi_empty(fn, a->dtype, a->rank, a->shape);
    if (out) softmax_kernel(out, c, ax, op == NBI_OP_LOG_SOFTMAX);
    if (c != a) nb_free(c);
    if (!out || !nbi_needs_grad(1, &a)) return out;
    if (!nbi_record(out, op, 1, &a, 0, true)) return NULL;
    out->node.ip[0] = ax;
    return out;
}

nb_tensor *nb_softmax(nb_tensor *a, int axis) { return softmax_op("nb_softmax", NBI_OP_SOFTMAX, a, axis); }
nb_tensor *nb_log_softmax(nb_tensor *a, int axis) {
    return softmax_op("nb_log_softmax", NBI_OP_LOG_SOFTMAX, a, axis);
}

/* Validate (N,C) scores and (N) i64 targets in [0, C). */
static bool check_targets(const char *fn, const nb_tensor *x, const nb_tensor *t) {
    if (!nbi_check_float(fn, x, 1) || !nbi_check(fn, t, 2)) return false;
    if (x->rank != 2) {
        nbi_err(fn, "input %s must have shape (N,C)", NBI_SHAPE(x));
        return false;
    }
    if (t->dtype != NB_I64 || t->rank != 1 || t->shape[0] != x->shape[0]) {
        char b[160];
        nbi_err(fn, "targets %s must be i64 of shape (%lld,) for input %s", NBI_SHAPE(t), (long long)x->shape[0],
                nbi_shape_s(x, b, sizeof b));
        return false;
    }
    int64_t C = x->shape[1];
    for (int64_t i = 0; i < t->numel; i++) {
        int64_t c = *(const int64_t *)(const void *)(t->data + i * t->strides[0] * 8);
        if (c < 0 || c >= C) {
            nbi_err(fn, "target %lld at index %lld is outside [0, %lld)", (long long)c, (long long)i, (long long)C);
            return false;
        }
    }
    return true;
}

/* -mean over rows i of log p[i, t_i]: p given as logarithms (nll_loss, any strides) or as the softmax of
   logits x (cross_entropy). */
static nb_tensor *loss_op(const char *fn, nbi_op op, nb_tensor *x, nb_tensor *t) {
    if (!check_targets(fn, x, t)) return NULL;
    int64_t N = x->shape[0], C = x->shape[1];
    double acc = 0;
    if (op == NBI_OP_CROSS_ENTROPY) { /* -log softmax(x)[t] = log sum exp(x - m) - (x[t] - m), in double */
        nb_tensor *c = N > 0 ? nbi_contiguous_input(fn, x) : x; /* N = 0: no rows (and C = 0 implies N = 0) */
        if (!c) return NULL;
        double *loss = N > 0 ? nbi_alloc(sizeof(double) * (size_t)N) : NULL; /* N doubles fit: x holds N C >= N */
        rows_job j = {.kind = ROWS_CE_LOSS, .x = c, .t = t, .loss = loss, .N = N, .n = C};
        if (N > 0 && (!loss || !rows_run(&j))) {
            nbi_err(fn, "out of memory for logits %s", NBI_SHAPE(x));
            nbi_dealloc(loss);
            if (c != x) nb_free(c);
            return NULL;
        }
        for (int64_t i = 0; i < N; i++) acc -= loss[i]; /* in row order, whatever the thread count */
        nbi_dealloc(loss);
        if (c != x) nb_free(c);
    } else {
        int64_t es = (int64_t)nbi_dsize(x->dtype);
        for (int64_t i = 0; i < N; i++)
            acc -= nbi_load(x, x->data + (i * x->strides[0] + target_at(t, i) * x->strides[1]) * es);
    }
    nb_tensor *out = nbi_empty(fn, x->dtype, 0, NULL);
    if (!out) return NULL;
    nbi_store(out->dtype, out->data, N ? acc / (double)N : NAN);
    nb_tensor *in[2] = {x, t};
    if (!nbi_needs_grad(2, in)) return out;
    return nbi_record(out, op, 2, in, 3, false);
}

nb_tensor *nb_nll_loss(nb_tensor *logp, nb_tensor *targets) {
    return loss_op("nb_nll_loss", NBI_OP_NLL_LOSS, logp, targets);
}
nb_tensor *nb_cross_entropy(nb_tensor *logits, nb_tensor *targets) {
    return loss_op("nb_cross_entropy", NBI_OP_CROSS_ENTROPY, logits, targets);
}

/* ------------------------------------------------------------ gradients -- */

int nbi_bw_softmax(nb_tensor *out, nb_tensor *g, nb_tensor **gin) {
    int ax = out->node.ip[0];
    nb_tensor *s = nb_sum_axes(nb_mul(g, out), 1, &ax, true);
    return (gin[0] = nb_mul(out, nb_sub(g, s))) ? 0 : -1;
}

int nbi_bw_log_softmax(nb_tensor *out, nb_tensor *g, nb_tensor **gin) {
    int ax = out->node.ip[0];
    nb_tensor *sm = nb_exp(out); /* softmax(X), differentiable through out */
    return (gin[0] = nb_sub(g, nb_mul(sm, nb_sum_axes(g, 1, &ax, true)))) ? 0 : -1;
}

/* onehot(t) / N as a constant (N,C) tensor of x's dtype */
static nb_tensor *onehot_over_n(const nb_tensor *x, const nb_tensor *t) {
    nb_tensor *oh = nbi_empty("nb_cross_entropy", x->dtype, 2, x->shape);
    if (!oh) return NULL;
    nbi_cpu_fill(oh, 0);
    int64_t N = x->shape[0], C = x->shape[1], es = (int64_t)nbi_dsize(x->dtype);
    for (int64_t i = 0; i < N; i++) nbi_store(oh->dtype, oh->data + (i * C + target_at(t, i)) * es, 1.0 / (double)N);
    return oh;
}

int nbi_bw_nll_loss(nb_tensor *out, nb_tensor *g, nb_tensor **gin) {
    nb_tensor *x = out->node.in[0];
    if (!x->requires_grad) return 0;
    return (gin[0] = nb_mul(nb_neg(g), onehot_over_n(x, out->node.in[1]))) ? 0 : -1;
}

/* The first-order rule in one pass per row, in double, each element rounded
   once: dX = g (softmax(X) - onehot(t)) / N. */
static nb_tensor *cross_entropy_grad(nb_tensor *x, const nb_tensor *t, const nb_tensor *g) {
    int64_t N = x->shape[0], C = x->shape[1];
    nb_tensor *c = nbi_contiguous_input("nb_cross_entropy", x);
    nb_tensor *d = c ? nbi_empty("nb_cross_entropy", x->dtype, 2, x->shape) : NULL;
    rows_job j = {.kind = ROWS_CE_GRAD, .x = c, .t = t, .out = d, .N = N, .n = C};
    if (d) j.gs = nbi_load(g, g->data) / (double)N;
    if (!d || !rows_run(&j)) {
        if (d) nbi_err("nb_cross_entropy", "out of memory for the gradient of logits %s", NBI_SHAPE(x));
        nb_free(d);
        if (c && c != x) nb_free(c);
        return NULL;
    }
    if (c != x) nb_free(c);
    return d;
}

int nbi_bw_cross_entropy(nb_tensor *out, nb_tensor *g, nb_tensor **gin) {
    nb_tensor *x = out->node.in[0];
    if (!x->requires_grad) return 0;
    if (!nb_grad_enabled() && x->shape[0] > 0) /* first order: one fused pass */
        return (gin[0] = cross_entropy_grad(x, out->node.in[1], g)) ? 0 : -1;
    nb_tensor *sm = nb_scale(nb_softmax(x, 1), 1.0 / (double)x->shape[0]);
    return (gin[0] = nb_mul(g, nb_sub(sm, onehot_over_n(x, out->node.in[1])))) ? 0 : -1;
}

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

/* Contiguous rows of length n in blocks of at most 2^16 values: e (rows x n), m and s (rows) for
   nbi_cpu_softmax_rows, shared by the softmax kernel, the cross-entropy loss and its gradient. */
typedef struct {
    double *e, *m, *s;
    int64_t rows;
} row_block;

static bool row_block_init(row_block *b, int64_t N, int64_t n) {
    int64_t r = n > 0 ? (1 << 16) / n : 1; /* rows of no values: one at a time, nothing to allocate for */
    b->rows = r < 1 ? 1 : r > N ? (N > 0 ? N : 1) : r;
    b->e = nbi_alloc(sizeof(double) * (size_t)(b->rows * (n + 2)));
    b->m = b->e ? b->e + b->rows * n : NULL;
    b->s = b->e ? b->m + b->rows : NULL;
    return b->e != NULL;
}

/* Rows r0 .. r0 + rows - 1 of contiguous x (rows of n) into b; returns how many rows it took. */
static int64_t row_block_fill(row_block *b, const nb_tensor *x, int64_t r0, int64_t N, int64_t n) {
    int64_t rows = N - r0 < b->rows ? N - r0 : b->rows;
    nbi_cpu_softmax_rows(x->dtype, x->data + r0 * n * (int64_t)nbi_dsize(x->dtype), rows, n, b->e, b->m, b->s);
    return rows;
}

/* out (contiguous) = softmax or log-softmax of x (contiguous) along axis ax. */
static void softmax_kernel(nb_tensor *out, const nb_tensor *x, int ax, bool logarithm) {
    int64_t n = x->shape[ax], outer = 1, inner = 1;
    for (int i = 0; i < ax; i++) outer *= x->shape[i];
    for (int i = ax + 1; i < x->rank; i++) inner *= x->shape[i];
    if (n == 0 || outer == 0 || inner == 0) return; /* no elements */
    row_block b;
    if (inner == 1 && row_block_init(&b, outer, n)) { /* rows contiguous: the exps in blocks of rows */
        for (int64_t o0 = 0; o0 < outer;) {
            int64_t rows = row_block_fill(&b, x, o0, outer, n);
            for (int64_t i = 0; i < rows; i++, o0++) {
                const double *e = b.e + i * n, ls = log(b.s[i]);
                for (int64_t k = 0; k < n; k++)
                    nbi_put(out, o0 * n + k, logarithm ? (nbi_at(x, o0 * n + k) - b.m[i]) - ls : e[k] / b.s[i]);
            }
        }
        nbi_dealloc(b.e);
        return;
    }
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            int64_t base = o * n * inner + i;
            double m, s;
            row_stats(x, base, n, inner, &m, &s);
            double ls = log(s);
            for (int64_t k = 0; k < n; k++) {
                double v = nbi_at(x, base + k * inner) - m;
                nbi_put(out, base + k * inner, logarithm ? v - ls : exp(v) / s);
            }
        }
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

static int64_t target_at(const nb_tensor *t, int64_t i) {
    return *(const int64_t *)(const void *)(t->data + i * t->strides[0] * 8);
}

/* -mean over rows i of log p[i, t_i]: p given as logarithms (nll_loss, any strides) or as the softmax of
   logits x (cross_entropy). */
static nb_tensor *loss_op(const char *fn, nbi_op op, nb_tensor *x, nb_tensor *t) {
    if (!check_targets(fn, x, t)) return NULL;
    int64_t N = x->shape[0], C = x->shape[1];
    double acc = 0;
    if (op == NBI_OP_CROSS_ENTROPY) { /* -log softmax(x)[t] = log sum exp(x - m) - (x[t] - m), in double */
        nb_tensor *c = nbi_contiguous_input(fn, x);
        row_block b;
        if (!c || !row_block_init(&b, N, C)) {
            if (c) nbi_err(fn, "out of memory for logits %s", NBI_SHAPE(x));
            if (c && c != x) nb_free(c);
            return NULL;
        }
        for (int64_t i0 = 0; i0 < N;) {
            int64_t rows = row_block_fill(&b, c, i0, N, C);
            for (int64_t i = 0; i < rows; i++, i0++) acc -= (nbi_at(c, i0 * C + target_at(t, i0)) - b.m[i]) - log(b.s[i]);
        }
        nbi_dealloc(b.e);
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
    row_block b;
    if (!d || !row_block_init(&b, N, C)) {
        if (d) nbi_err("nb_cross_entropy", "out of memory for the gradient of logits %s", NBI_SHAPE(x));
        nb_free(d);
        if (c && c != x) nb_free(c);
        return NULL;
    }
    double gs = nbi_load(g, g->data) / (double)N;
    for (int64_t i0 = 0; i0 < N;) {
        int64_t rows = row_block_fill(&b, c, i0, N, C);
        for (int64_t i = 0; i < rows; i++, i0++) {
            const int64_t ti = target_at(t, i0);
            for (int64_t k = 0; k < C; k++)
                nbi_put(d, i0 * C + k, gs * (b.e[i * C + k] / b.s[i] - (k == ti ? 1.0 : 0.0)));
        }
    }
    nbi_dealloc(b.e);
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

/*
 * misc.c - the CPU's other kernels: batched LU (inverse, determinant,
 * log-determinant), index checks and moves (select, gather and their
 * scatter-add gradients), cumulative sums and random fills.
 */
#include <math.h>
#include <string.h>

#include "../../core/internal.h"
#include "cpu.h"

/* ------------------------------------------------------------- linalg -- */

/* LU of the n x n matrix a (row-major, overwritten), pivots in piv. Returns
   the determinant's sign (+-1), or 0 when a pivot is exactly zero. As in
   LAPACK's getrf, the pivot is the first entry of largest magnitude, so
   infinities give what LAPACK gives (the caller handles NaNs). */
static int lu(double *a, int64_t n, int64_t *piv) {
    int sign = 1;
    for (int64_t k = 0; k < n; k++) {
        int64_t p = k;
        for (int64_t i = k + 1; i < n; i++)
            if (fabs(a[i * n + k]) > fabs(a[p * n + k])) p = i;
        piv[k] = p;
        if (a[p * n + k] == 0) return 0;
        if (p != k) {
            sign = -sign;
            for (int64_t j = 0; j < n; j++) {
                double t = a[k * n + j];
                a[k * n + j] = a[p * n + j];
                a[p * n + j] = t;
            }
        }
        for (int64_t i = k + 1; i < n; i++) {
            double f = a[i * n + k] /= a[k * n + k];
            for (int64_t j = k + 1; j < n; j++) a[i * n + j] -= f * a[k * n + j];
        }
    }
    return sign;
}

/* out = the inverse (..., n, n), det or logdet (...) of each matrix of x (..., n, n), any strides. */
int nbi_cpu_linalg(nbi_linalg_kind kind, const nbi_arr *out, const nbi_arr *x, int64_t *bad) {
    int r = x->rank;
    int64_t n = x->shape[r - 1], nb = n ? x->numel / (n * n) : 0, es = (int64_t)nbi_dsize(x->dtype);
    double *w = nbi_alloc(sizeof(double) * (size_t)(n * n * 2 + 1));
    int64_t *piv = nbi_alloc(sizeof(int64_t) * (size_t)(n + 1));
    if (!w || !piv) {
        nbi_dealloc(w);
        nbi_dealloc(piv);
        return -1;
    }
    if (n == 0 && kind != NBI_LA_INV) nbi_cpu_fill(out, kind == NBI_LA_DET ? 1.0 : 0.0); /* det of 0x0 is 1 */
    for (int64_t b = 0; b < nb; b++) {
        int64_t off = 0, rem = b; /* matrix b (any strides) */
        for (int d = r - 3; d >= 0; d--) {
            off += (rem % x->shape[d]) * x->strides[d];
            rem /= x->shape[d];
        }
        bool has_nan = false;
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < n; j++) {
                double v = nbi_load(x->dtype, x->data + (off + i * x->strides[r - 2] + j * x->strides[r - 1]) * es);
                has_nan |= v != v;
                w[i * n + j] = v;
            }
        if (has_nan) { /* NaN determinant and log-determinant, an all-NaN inverse (PyTorch's values) */
            for (int64_t i = 0; i < (kind == NBI_LA_INV ? n * n : 1); i++)
                nbi_store(out->dtype, out->data + (b * (kind == NBI_LA_INV ? n * n : 1) + i) * es, NAN);
            continue;
        }
        int sign = lu(w, n, piv);
        if (sign == 0 && kind == NBI_LA_INV) {
            nbi_dealloc(w);
            nbi_dealloc(piv);
            *bad = b;
            return 1;
        }
        if (kind != NBI_LA_INV) {
            double v = sign, lg = 0;
            if (sign != 0)
                for (int64_t i = 0; i < n; i++) {
                    double u = w[i * n + i];
                    if (kind == NBI_LA_DET)
                        v *= u;
                    else {
                        lg += log(fabs(u));
                        if (u < 0) v = -v;
                    }
                }
            else
                v = 0, lg = -INFINITY; /* singular: det 0, logdet log 0 */
            nbi_store(out->dtype, out->data + b * es, kind == NBI_LA_DET ? v : (v >= 0 ? lg : NAN));
            continue;
        }
        /* inverse: solve L U X = P I column by column */
        double *col = w + n * n;
        for (int64_t c = 0; c < n; c++) {
            for (int64_t i = 0; i < n; i++) col[i] = i == c ? 1 : 0;
            for (int64_t k = 0; k < n; k++) {
                double t = col[k];
                col[k] = col[piv[k]];
                col[piv[k]] = t;
            }
            for (int64_t i = 0; i < n; i++)
                for (int64_t k = 0; k < i; k++) col[i] -= w[i * n + k] * col[k];
            for (int64_t i = n - 1; i >= 0; i--) {
                for (int64_t k = i + 1; k < n; k++) col[i] -= w[i * n + k] * col[k];
                col[i] /= w[i * n + i];
            }
            for (int64_t i = 0; i < n; i++) nbi_store(out->dtype, out->data + (b * n * n + i * n + c) * es, col[i]);
        }
    }
    nbi_dealloc(w);
    nbi_dealloc(piv);
    return 0;
}

/* -------------------------------------------------------------- index -- */

/* Offset in elements of row-major position i of a. */
static int64_t offset_of(const nbi_arr *a, int64_t i) {
    int64_t off = 0;
    for (int d = a->rank - 1; d >= 0; d--) {
        off += (i % a->shape[d]) * a->strides[d];
        i /= a->shape[d];
    }
    return off;
}

int64_t nbi_cpu_index_check(const nbi_arr *idx, int64_t n, int64_t *bad) {
    for (int64_t i = 0; i < idx->numel; i++) {
        int64_t v = *(const int64_t *)(const void *)(idx->data + offset_of(idx, i) * 8);
        if (v < -n || v >= n) {
            *bad = v;
            return i;
        }
    }
    return -1;
}

static int64_t idx_at(const nbi_arr *idx, int64_t pos, int64_t n) {
    int64_t v = *(const int64_t *)(const void *)(idx->data + offset_of(idx, pos) * 8);
    return v < 0 ? v + n : v;
}

static bool arr_contig(const nbi_arr *t) {
    int64_t s = 1;
    for (int i = t->rank - 1; i >= 0; i--) {
        if (t->shape[i] != 1 && t->strides[i] != s) return false;
        s *= t->shape[i];
    }
    return true;
}

void nbi_cpu_index_move(const nbi_arr *dst, const nbi_arr *src, const nbi_arr *idx, int ax, bool elementwise,
                        bool add, bool index_on_dst) {
    const nbi_arr *walk = index_on_dst ? src : dst; /* the operand whose shape we iterate */
    const nbi_arr *other = index_on_dst ? dst : src;
    int64_t n = other->shape[ax], es = (int64_t)nbi_dsize(dst->dtype);
    if (!elementwise && arr_contig(src) && arr_contig(dst) && src->dtype == dst->dtype) {
        /* Whole rows: a batch of samples, an embedding lookup and its gradient. */
        int64_t outer = 1, inner = 1, nw = walk->shape[ax];
        for (int d = 0; d < ax; d++) outer *= walk->shape[d];
        for (int d = ax + 1; d < walk->rank; d++) inner *= walk->shape[d];
        for (int64_t o = 0; o < outer; o++)
            for (int64_t j = 0; j < nw; j++) {
                int64_t k = idx_at(idx, j, n);
                int64_t ow = (o * nw + j) * inner, oo = (o * n + k) * inner;
                const char *ps = src->data + (index_on_dst ? ow : oo) * es;
                char *pd = dst->data + (index_on_dst ? oo : ow) * es;
                if (!add)
                    memcpy(pd, ps, (size_t)(inner * es));
                else if (dst->dtype == NB_F32)
                    for (int64_t i = 0; i < inner; i++) ((float *)(void *)pd)[i] += ((const float *)(const void *)ps)[i];
                else
                    for (int64_t i = 0; i < inner; i++) ((double *)(void *)pd)[i] += ((const double *)(const void *)ps)[i];
            }
        return;
    }
    int64_t coord[NB_MAX_RANK] = {0};
    for (int64_t e = 0; e < walk->numel; e++) {
        int64_t rem = e;
        for (int d = walk->rank - 1; d >= 0; d--) {
            coord[d] = rem % walk->shape[d];
            rem /= walk->shape[d];
        }
        int64_t k = elementwise ? idx_at(idx, e, n) : idx_at(idx, coord[ax], n);
        int64_t ow = 0, oo = 0;
        for (int d = 0; d < walk->rank; d++) {
            ow += coord[d] * walk->strides[d];
            oo += (d == ax ? k : coord[d]) * other->strides[d];
        }
        const char *ps = src->data + (index_on_dst ? ow : oo) * es;
        char *pd = dst->data + (index_on_dst ? oo : ow) * es;
        if (add)
            nbi_store(dst->dtype, pd, nbi_load(dst->dtype, pd) + nbi_load(src->dtype, ps));
        else
            memcpy(pd, ps, (size_t)es); /* one dtype: an exact copy, i64 included */
    }
}

/* ------------------------------------------------------------- cumsum -- */

/* x (outer, n, inner) = its running sums along n, in double, each rounded once. */
void nbi_cpu_cumsum(nb_dtype dt, void *x, int64_t outer, int64_t n, int64_t inner) {
    int64_t es = (int64_t)nbi_dsize(dt);
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            double acc = 0;
            for (int64_t k = 0; k < n; k++) {
                char *p = (char *)x + ((o * n + k) * inner + i) * es;
                acc += nbi_load(dt, p);
                nbi_store(dt, p, acc);
            }
        }
}

/* ------------------------------------------------------------- random -- */

void nbi_cpu_bernoulli(nb_dtype dt, void *x, int64_t n, nb_rng *rng, double p, double keep) {
    int64_t es = (int64_t)nbi_dsize(dt);
    for (int64_t i = 0; i < n; i++) nbi_store(dt, (char *)x + i * es, nb_rng_uniform(rng) < p ? 0 : keep);
}

void nbi_cpu_uniform(nb_dtype dt, void *x, int64_t n, nb_rng *rng, double lo, double hi) {
    int64_t es = (int64_t)nbi_dsize(dt);
    for (int64_t i = 0; i < n; i++) nbi_store(dt, (char *)x + i * es, lo + (hi - lo) * nb_rng_uniform(rng));
}

/* Box-Muller on pairs: r = sqrt(-2 log(1 - u1)), z0 = r cos(2 pi u2), z1 = r sin(2 pi u2). */
void nbi_cpu_normal(nb_dtype dt, void *x, int64_t n, nb_rng *rng, double mean, double std) {
    int64_t es = (int64_t)nbi_dsize(dt);
    for (int64_t i = 0; i < n; i += 2) {
        double u1 = nb_rng_uniform(rng), u2 = nb_rng_uniform(rng);
        double r = sqrt(-2.0 * log(1.0 - u1)), a = 6.283185307179586 * u2;
        nbi_store(dt, (char *)x + i * es, mean + std * (r * cos(a)));
        if (i + 1 < n) nbi_store(dt, (char *)x + (i + 1) * es, mean + std * (r * sin(a)));
    }
}

/*
 * linalg.c - matrix inverse, determinant and log-determinant of square
 * matrices, batched over leading axes: LU factorisation with partial
 * pivoting (in double), and the gradient rules of seed 004:
 *
 *   Y = X^-1        dX = -Y^T G Y^T
 *   d = det X       dX = G d X^-T
 *   l = log det X   dX = G X^-T
 *
 * A singular matrix (a zero pivot) has det 0 and logdet -inf; its inverse is
 * an error naming its batch index, as are the gradients of det and logdet
 * there (they need the inverse). A matrix holding a NaN has NaN det and
 * logdet and an all-NaN inverse; infinities go through the LU as in LAPACK
 * (docs/OPS.md, "Special values").
 */
#include <math.h>
#include <string.h>

#include "../core/internal.h"

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

typedef enum { L_INV, L_DET, L_LOGDET } lin_kind;

static nb_tensor *linalg(const char *fn, nbi_op op, lin_kind kind, nb_tensor *x) {
    if (!nbi_check_float(fn, x, 1)) return NULL;
    if (x->rank < 2 || x->shape[x->rank - 1] != x->shape[x->rank - 2])
        return nbi_err(fn, "input %s is not a (batch of) square matrices", NBI_SHAPE(x));
    int64_t n = x->shape[x->rank - 1], nb = n ? x->numel / (n * n) : 0;
    nb_tensor *out = kind == L_INV ? nbi_empty(fn, x->dtype, x->rank, x->shape)
                                   : nbi_empty(fn, x->dtype, x->rank - 2, x->shape);
    if (!out) return NULL;
    double *w = nbi_alloc(sizeof(double) * (size_t)(n * n * 2 + 1));
    int64_t *piv = nbi_alloc(sizeof(int64_t) * (size_t)(n + 1));
    if (!w || !piv) {
        nbi_dealloc(w);
        nbi_dealloc(piv);
        nb_free(out);
        return nbi_err(fn, "out of memory for %s", NBI_SHAPE(x));
    }
    int64_t es = (int64_t)nbi_dsize(x->dtype), r = x->rank;
    if (n == 0 && kind != L_INV) nbi_cpu_fill(out, kind == L_DET ? 1.0 : 0.0); /* det of 0x0 is 1 */
    for (int64_t b = 0; b < nb; b++) {
        /* gather matrix b (any strides) */
        int64_t off = 0, rem = b;
        for (int d = r - 3; d >= 0; d--) {
            off += (rem % x->shape[d]) * x->strides[d];
            rem /= x->shape[d];
        }
        bool has_nan = false;
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < n; j++) {
                double v = nbi_load(x, x->data + (off + i * x->strides[r - 2] + j * x->strides[r - 1]) * es);
                has_nan |= v != v;
                w[i * n + j] = v;
            }
        if (has_nan) { /* NaN determinant and log-determinant, an all-NaN inverse (PyTorch's values) */
            for (int64_t i = 0; i < (kind == L_INV ? n * n : 1); i++)
                nbi_store(out->dtype, out->data + (b * (kind == L_INV ? n * n : 1) + i) * es, NAN);
            continue;
        }
        int sign = lu(w, n, piv);
        if (sign == 0 && kind == L_INV) {
            nbi_dealloc(w);
            nbi_dealloc(piv);
            nb_free(out);
            return nbi_err(fn, "matrix %lld of %s is singular", (long long)b, NBI_SHAPE(x));
        }
        if (kind != L_INV) {
            double v = sign, lg = 0;
            if (sign != 0)
                for (int64_t i = 0; i < n; i++) {
                    double u = w[i * n + i];
                    if (kind == L_DET)
                        v *= u;
                    else {
                        lg += log(fabs(u));
                        if (u < 0) v = -v;
                    }
                }
            else
                v = 0, lg = -INFINITY; /* singular: det 0, logdet log 0 */
            nbi_store(out->dtype, out->data + b * es, kind == L_DET ? v : (v >= 0 ? lg : NAN));
            continue;
        }
        /* inverse: solve L U X = P I column by column */
        double *inv = w + n * n;
        for (int64_t c = 0; c < n; c++) {
            double *col = inv; /* reuse as a column buffer, written into out as we go */
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
    if (!nbi_needs_grad(1, &x)) return out;
    return nbi_record(out, op, 1, &x, 1, kind == L_INV || kind == L_DET);
}

nb_tensor *nb_inverse(nb_tensor *a) { return linalg("nb_inverse", NBI_OP_INVERSE, L_INV, a); }
nb_tensor *nb_det(nb_tensor *a) { return linalg("nb_det", NBI_OP_DET, L_DET, a); }
nb_tensor *nb_logdet(nb_tensor *a) { return linalg("nb_logdet", NBI_OP_LOGDET, L_LOGDET, a); }

/* ------------------------------------------------------------ gradients -- */

/* -Y^T G Y^T */
int nbi_bw_inverse(nb_tensor *out, nb_tensor *g, nb_tensor **gin) {
    nb_tensor *yt = nb_transpose(out, -1, -2);
    return (gin[0] = nb_neg(nb_matmul(nb_matmul(yt, g), yt))) ? 0 : -1;
}

/* g (batch) as (batch, 1, 1) times X^-T */
static nb_tensor *times_inv_t(nb_tensor *x, nb_tensor *s) {
    int64_t shape[NB_MAX_RANK] = {0};
    for (int i = 0; i < x->rank - 2; i++) shape[i] = x->shape[i];
    shape[x->rank - 2] = shape[x->rank - 1] = 1;
    return nb_mul(nb_reshape(s, x->rank, shape), nb_transpose(nb_inverse(x), -1, -2));
}

int nbi_bw_det(nb_tensor *out, nb_tensor *g, nb_tensor **gin) {
    return (gin[0] = times_inv_t(out->node.in[0], nb_mul(g, out))) ? 0 : -1;
}

int nbi_bw_logdet(nb_tensor *out, nb_tensor *g, nb_tensor **gin) {
    return (gin[0] = times_inv_t(out->node.in[0], g)) ? 0 : -1;
}

/*
 * linalg.c - matrix inverse, determinant and log-determinant of square
 * matrices, batched over leading axes (the backend's linalg kernel: LU with
 * partial pivoting, in double), and the gradient rules of seed 004:
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

typedef enum { L_INV, L_DET, L_LOGDET } lin_kind;

static nb_tensor *linalg(const char *fn, nbi_op op, lin_kind kind, nb_tensor *x) {
    if (!nbi_check_float(fn, x, 1)) return NULL;
    if (x->rank < 2 || x->shape[x->rank - 1] != x->shape[x->rank - 2])
        return nbi_err(fn, "input %s is not a (batch of) square matrices", NBI_SHAPE(x));
    nb_tensor *out = kind == L_INV ? nbi_empty_like_be(fn, x, x->dtype, x->rank, x->shape)
                                   : nbi_empty_like_be(fn, x, x->dtype, x->rank - 2, x->shape);
    if (!out) return NULL;
    nbi_arr o = nbi_arr_of(out), xa = nbi_arr_of(x);
    int64_t bad = 0;
    static const nbi_linalg_kind kinds[] = {NBI_LA_INV, NBI_LA_DET, NBI_LA_LOGDET};
    int rc = nbi_be(x)->linalg(kinds[kind], &o, &xa, &bad);
    if (rc != 0) {
        nb_free(out);
        if (rc > 0) return nbi_err(fn, "matrix %lld of %s is singular", (long long)bad, NBI_SHAPE(x));
        return nbi_err(fn, "out of memory for %s", NBI_SHAPE(x));
    }
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

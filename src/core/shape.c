/*
 * shape.c - shape arithmetic: broadcasting, axes, and shapes as text.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

char *nb_shape_str(int rank, const int64_t *shape, char *buf, size_t cap) {
    if (!buf || cap == 0) return buf;
    size_t n = 0;
    buf[0] = 0;
    n += (size_t)snprintf(buf + n, cap - n, "(");
    for (int i = 0; i < rank && n < cap; i++)
        n += (size_t)snprintf(buf + n, cap - n, i ? ",%lld" : "%lld", (long long)shape[i]);
    if (n < cap) snprintf(buf + n, cap - n, rank == 1 ? ",)" : ")");
    return buf;
}

const char *nbi_shape_s(const nb_tensor *t, char *buf, size_t cap) {
    return nb_shape_str(t->rank, t->shape, buf, cap);
}

bool nbi_shape_ok(const char *fn, size_t esize, int rank, const int64_t *shape) {
    for (int i = 0; i < rank; i++)
        if (shape[i] < 0) {
            nbi_err(fn, "axis %d has negative size %lld", i, (long long)shape[i]);
            return false;
        }
    int64_t bytes = (int64_t)esize;
    bool ok = true;
    for (int i = 0; i < rank && ok; i++)
        if (shape[i] > 0) ok = nbi_mul_ok(bytes, shape[i], &bytes);
    if (ok && (uint64_t)bytes <= (uint64_t)SIZE_MAX / 2) return true;
    char buf[160];
    if (esize == 1)
        nbi_err(fn, "shape overflows: %s has more than 2^63 - 1 elements (sizes of 0 aside)",
                nb_shape_str(rank, shape, buf, sizeof buf));
    else
        nbi_err(fn, "shape overflows: %s needs more than 2^63 bytes of %d-byte elements (sizes of 0 aside)",
                nb_shape_str(rank, shape, buf, sizeof buf), (int)esize);
    return false;
}

bool nbi_broadcast(int ra, const int64_t *sa, int rb, const int64_t *sb, int *rout, int64_t *out) {
    int r = ra > rb ? ra : rb;
    for (int i = 0; i < r; i++) {
        int ia = i - (r - ra), ib = i - (r - rb);
        int64_t da = ia >= 0 ? sa[ia] : 1, db = ib >= 0 ? sb[ib] : 1;
        if (da == db || db == 1)
            out[i] = da;
        else if (da == 1)
            out[i] = db;
        else
            return false;
    }
    *rout = r;
    return true;
}

bool nbi_axis(int axis, int rank, int *out) {
    int a = axis < 0 ? axis + rank : axis;
    if (a < 0 || a >= rank) return false;
    *out = a;
    return true;
}

void nbi_bstrides(const nb_tensor *t, int rank, const int64_t *shape, int64_t *strides) {
    int off = rank - t->rank;
    for (int i = 0; i < rank; i++) {
        int j = i - off;
        strides[i] = (j < 0 || (t->shape[j] == 1 && shape[i] != 1)) ? 0 : t->strides[j];
    }
}

bool nbi_axis_arg(const char *fn, int axis, const nb_tensor *t, int *out) {
    if (nbi_axis(axis, t->rank, out)) return true;
    nbi_err(fn, "axis %d is out of range for a tensor %s of rank %d", axis, NBI_SHAPE(t), t->rank);
    return false;
}

nb_tensor *nbi_contiguous_input(const char *fn, nb_tensor *t) {
    if (nbi_is_contig(t)) return t;
    nb_tensor *c = nbi_empty_like_be(fn, t, t->dtype, t->rank, t->shape);
    if (c) nbi_k_copy(c, t);
    return c;
}

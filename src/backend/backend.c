/*
 * backend.c - what every backend shares: choosing the kernel table of a device,
 * a tensor's geometry as kernels see it, element access through a backend's
 * copies, and the batch loop of matmul over a backend's gemm.
 *
 * This file and the kernel sets under it are the only places that turn a
 * storage and an offset into an address.
 */
#include <stdlib.h>
#include <string.h>

#include "../core/internal.h"

/* ---------------------------------------------------------- selection ---- */

static const nbi_backend *cpu_choice;

static const nbi_backend *pick_cpu(void) {
    const char *k = getenv("NABLA_KERNELS");
    return k && strcmp(k, "reference") == 0 ? nbi_backend_reference() : nbi_backend_cpu();
}

/* The choice is made once, when the first tensor is made (library load would
   be earlier but is not portable); threads racing here all compute the same value. */
const nbi_backend *nbi_default_be(void) {
    const nbi_backend *b = __atomic_load_n(&cpu_choice, __ATOMIC_ACQUIRE);
    if (!b) {
        b = pick_cpu();
        __atomic_store_n(&cpu_choice, b, __ATOMIC_RELEASE);
    }
    return b;
}

void nbi_use_backend(const nbi_backend *be) { __atomic_store_n(&cpu_choice, be, __ATOMIC_RELEASE); }

const nbi_backend *nbi_backend_for(nb_device dev) {
    if (dev.type == NB_DEV_CPU && dev.index == 0) return nbi_default_be();
    return NULL;
}

/* ----------------------------------------------------------- geometry ---- */

/* nbi_arr_of (src/core/internal.h) builds a kernel's view of a tensor with nbi_addr (backend.h). */

/* ---------------------------------------------------- element access ---- */

double nbi_get_at(const nb_tensor *t, int64_t off) {
    _Alignas(8) char buf[8];
    size_t es = nbi_dsize(t->dtype);
    t->st->be->to_host(buf, nbi_arr_of(t).data + off * (int64_t)es, es);
    return nbi_load(t->dtype, buf);
}

void nbi_set_at(nb_tensor *t, int64_t off, double v) {
    _Alignas(8) char buf[8];
    size_t es = nbi_dsize(t->dtype);
    nbi_store(t->dtype, buf, v);
    t->st->be->from_host(nbi_arr_of(t).data + off * (int64_t)es, buf, es);
}

/* Through a contiguous f64 copy on t's device (none needed for a contiguous f64 tensor). */
int nbi_read_f64(const nb_tensor *t, double *dst, int64_t n) {
    if (n <= 0) return 0;
    const nbi_backend *be = t->st->be;
    nbi_arr src = nbi_arr_of(t);
    if (t->dtype == NB_F64 && nbi_is_contig(t)) {
        be->to_host(dst, src.data, (size_t)n * 8);
        return 0;
    }
    int64_t st[NB_MAX_RANK];
    nbi_contig_strides(t->rank, t->shape, st);
    char *tmp = be->alloc((size_t)t->numel * 8);
    if (!tmp) return -1;
    nbi_arr d = {tmp, NB_F64, t->rank, t->numel, t->shape, st};
    be->copy(&d, &src);
    be->to_host(dst, tmp, (size_t)n * 8);
    be->dealloc(tmp);
    return 0;
}

void nbi_read_host(const nb_tensor *t, void *dst) {
    t->st->be->to_host(dst, nbi_arr_of(t).data, (size_t)t->numel * nbi_dsize(t->dtype));
}

void nbi_write_host(nb_tensor *t, const void *src, bool raw) {
    const nbi_backend *be = t->st->be;
    nbi_arr d = nbi_arr_of(t);
    size_t es = nbi_dsize(t->dtype);
    if (!src) {
        be->fill(&d, 0);
    } else if (raw || t->dtype == NB_F64) {
        be->from_host(d.data, src, (size_t)t->numel * es);
    } else { /* doubles to f32 or i64: converted on the host in blocks */
        _Alignas(8) char buf[4096];
        const double *s = src;
        int64_t per = (int64_t)(sizeof buf / es);
        for (int64_t i = 0; i < t->numel; i += per) {
            int64_t m = t->numel - i < per ? t->numel - i : per;
            for (int64_t k = 0; k < m; k++) nbi_store(t->dtype, buf + k * (int64_t)es, s[i + k]);
            be->from_host(d.data + i * (int64_t)es, buf, (size_t)m * es);
        }
    }
}

/* ------------------------------------------------------- matmul loop ---- */

/* out (..., m, n) = a (..., m, k) @ b (..., k, n): each matrix product is one gemm call, which reads any strides
   (transposed operands and broadcast batches are never copied). When b is shared by every batch and a holds every
   batch itself, contiguously, a's batch and row axes fold into one tall product. */
int nbi_matmul_driver(const nbi_backend *be, const nbi_arr *out, const nbi_arr *a, const nbi_arr *b) {
    int ra = a->rank, rb = b->rank, br = out->rank - 2, bra = ra - 2, brb = rb - 2;
    int64_t m = a->shape[ra - 2], k = a->shape[ra - 1], n = b->shape[rb - 1];
    int64_t es = (int64_t)nbi_dsize(out->dtype);
    int64_t sa[NB_MAX_RANK] = {0}, sb[NB_MAX_RANK] = {0}, nbatch = 1;
    for (int i = 0; i < br; i++) { /* batch strides of each operand over out's batch shape (0: shared) */
        int ia = i - (br - bra), ib = i - (br - brb);
        sa[i] = (ia >= 0 && a->shape[ia] != 1) ? a->strides[ia] : 0;
        sb[i] = (ib >= 0 && b->shape[ib] != 1) ? b->strides[ib] : 0;
        nbatch *= out->shape[i];
    }
    if (nbatch == 0) return 0;
    bool one_tall = bra == br;
    for (int i = 0; i < br; i++)
        if (sb[i] || a->shape[i] != out->shape[i]) one_tall = false;
    if (one_tall && nbi_geom_contig(ra, a->shape, a->strides, a->numel))
        return be->gemm(out->dtype, nbatch * m, n, k, a->data, k, a->strides[ra - 1], b->data, b->strides[rb - 2],
                        b->strides[rb - 1], out->data, n, false);
    int64_t idx[NB_MAX_RANK] = {0};
    for (int64_t t = 0; t < nbatch; t++) {
        int64_t oa = 0, ob = 0;
        for (int i = 0; i < br; i++) {
            oa += idx[i] * sa[i];
            ob += idx[i] * sb[i];
        }
        int rc = be->gemm(out->dtype, m, n, k, a->data + oa * es, a->strides[ra - 2], a->strides[ra - 1],
                          b->data + ob * es, b->strides[rb - 2], b->strides[rb - 1], out->data + t * m * n * es, n,
                          false);
        if (rc != 0) return rc;
        for (int i = br - 1; i >= 0; i--) {
            if (++idx[i] < out->shape[i]) break;
            idx[i] = 0;
        }
    }
    return 0;
}

/* ------------------------------------------- calls on tensors (ops) ---- */

void nbi_k_fill(nb_tensor *dst, double v) {
    nbi_arr d = nbi_arr_of(dst);
    nbi_be(dst)->fill(&d, v);
}

void nbi_k_rank_mean(nb_tensor *dst, const void *src, int64_t stride, int p) {
    nbi_be(dst)->rank_mean(dst->dtype, nbi_arr_of(dst).data, src, stride, dst->numel, p);
}

void nbi_k_copy(nb_tensor *dst, const nb_tensor *src) {
    nbi_arr d = nbi_arr_of(dst), s = nbi_arr_of(src);
    nbi_be(dst)->copy(&d, &s);
}

void nbi_k_unary(nbi_unop op, nb_tensor *out, const nb_tensor *a, double c) {
    nbi_arr o = nbi_arr_of(out), x = nbi_arr_of(a);
    nbi_be(out)->unary(op, &o, &x, c);
}

void nbi_k_binary(nbi_binop op, nb_tensor *out, const nb_tensor *a, const nb_tensor *b) {
    nbi_arr o = nbi_arr_of(out), x = nbi_arr_of(a), y = nbi_arr_of(b);
    nbi_be(out)->binary(op, &o, &x, &y);
}

void nbi_k_where(nb_tensor *out, const nb_tensor *cond, const nb_tensor *a, const nb_tensor *b) {
    nbi_arr o = nbi_arr_of(out), c = nbi_arr_of(cond), x = nbi_arr_of(a), y = nbi_arr_of(b);
    nbi_be(out)->where(&o, &c, &x, &y);
}

void nbi_k_copy_into(nb_tensor *dst, int64_t off, const nb_tensor *src) {
    nbi_arr d = nbi_arr_of(dst), s = nbi_arr_of(src);
    d.data += off * (int64_t)nbi_dsize(dst->dtype);
    d.shape = src->shape;
    d.numel = src->numel;
    nbi_be(dst)->copy(&d, &s);
}

/*
 * matmul.c - NumPy matmul: forward and gradient rules.
 *
 * 1-D operands are promoted to a row (a) or a column (b) with a reshape view,
 * so the core op always sees stacks of matrices (..., M, K) @ (..., K, N) whose
 * batch axes broadcast. Each matrix product is one call to the packed GEMM
 * (src/backend/cpu/gemm.c), which reads any strides: transposed operands and
 * broadcast batches are never copied.
 *
 * Gradients: dA = G B^T, dB = A^T G (summed over broadcast batch axes).
 */
#include <string.h>

#include "../backend/cpu/gemm.h"
#include "../core/internal.h"

static int gemm(nb_tensor *out, const char *pa, int64_t rsa, const nb_tensor *a, const char *pb,
                const nb_tensor *b, char *pc, int64_t m) {
    int r = a->rank;
    int64_t k = a->shape[r - 1], n = b->shape[b->rank - 1];
    if (out->dtype == NB_F32)
        return nbi_gemm_f32(m, n, k, (const float *)(const void *)pa, rsa, a->strides[r - 1],
                            (const float *)(const void *)pb, b->strides[b->rank - 2], b->strides[b->rank - 1],
                            (float *)(void *)pc, n, false);
    return nbi_gemm_f64(m, n, k, (const double *)(const void *)pa, rsa, a->strides[r - 1],
                        (const double *)(const void *)pb, b->strides[b->rank - 2], b->strides[b->rank - 1],
                        (double *)(void *)pc, n, false);
}

/* a (..., M, K) @ b (..., K, N), same dtype, both rank >= 2. */
static nb_tensor *matmul_core(const char *fn, nb_tensor *a, nb_tensor *b) {
    int bra = a->rank - 2, brb = b->rank - 2, br;
    int64_t bshape[NB_MAX_RANK] = {0}, shape[NB_MAX_RANK] = {0};
    if (!nbi_broadcast(bra, a->shape, brb, b->shape, &br, bshape) || br + 2 > NB_MAX_RANK) {
        char sb[160];
        return nbi_err(fn, "%s @ %s: batch dimensions do not broadcast", NBI_SHAPE(a),
                       nbi_shape_s(b, sb, sizeof sb));
    }
    int64_t m = a->shape[a->rank - 2], n = b->shape[b->rank - 1];
    memcpy(shape, bshape, sizeof(int64_t) * (size_t)br);
    shape[br] = m;
    shape[br + 1] = n;
    nb_tensor *out = nbi_empty(fn, a->dtype, br + 2, shape);
    if (!out) return NULL;

    /* Batch strides of each operand over the broadcast batch shape (0 = shared). */
    int64_t sa[NB_MAX_RANK] = {0}, sb[NB_MAX_RANK] = {0}, nbatch = 1;
    for (int i = 0; i < br; i++) {
        int ia = i - (br - bra), ib = i - (br - brb);
        sa[i] = (ia >= 0 && a->shape[ia] != 1) ? a->strides[ia] : 0;
        sb[i] = (ib >= 0 && b->shape[ib] != 1) ? b->strides[ib] : 0;
        nbatch *= bshape[i];
    }
    int64_t es = (int64_t)nbi_dsize(a->dtype);
    bool b_shared = true;
    for (int i = 0; i < br; i++)
        if (sb[i]) b_shared = false;
    int rc = 0;
    if (nbatch > 0 && b_shared && nbi_is_contig(a) && a->rank - 2 == br) {
        /* One tall product: a's batch and row axes fold into M. */
        rc = gemm(out, a->data, a->shape[a->rank - 1], a, b->data, b, out->data, nbatch * m);
    } else {
        int64_t idx[NB_MAX_RANK] = {0};
        for (int64_t t = 0; t < nbatch && rc == 0; t++) {
            int64_t oa = 0, ob = 0;
            for (int i = 0; i < br; i++) {
                oa += idx[i] * sa[i];
                ob += idx[i] * sb[i];
            }
            rc = gemm(out, a->data + oa * es, a->strides[a->rank - 2], a, b->data + ob * es, b,
                      out->data + t * m * n * es, m);
            for (int i = br - 1; i >= 0; i--) {
                if (++idx[i] < bshape[i]) break;
                idx[i] = 0;
            }
        }
    }
    if (rc != 0) {
        nb_free(out);
        return nbi_err(fn, "out of memory for matrix product buffers");
    }
    nb_tensor *in[2] = {a, b};
    if (nbi_needs_grad(2, in)) return nbi_record(out, NBI_OP_MATMUL, 2, in, 3, false);
    return out;
}

nb_tensor *nb_matmul(nb_tensor *a, nb_tensor *b) {
    const char *fn = "nb_matmul";
    if (!nbi_check_float(fn, a, 1) || !nbi_check_float(fn, b, 2)) return NULL;
    char sa[160], sb[160];
    nbi_shape_s(a, sa, sizeof sa);
    nbi_shape_s(b, sb, sizeof sb);
    if (a->rank == 0 || b->rank == 0) return nbi_err(fn, "%s @ %s: both operands need rank >= 1", sa, sb);
    int64_t ka = a->shape[a->rank - 1], kb = b->shape[b->rank == 1 ? 0 : b->rank - 2];
    if (ka != kb)
        return nbi_err(fn, "%s @ %s: inner dimensions %lld and %lld differ", sa, sb, (long long)ka, (long long)kb);
    if (a->dtype != b->dtype) {
        if (a->dtype != NB_F64 && !(a = nb_to(a, NB_F64))) return NULL;
        if (b->dtype != NB_F64 && !(b = nb_to(b, NB_F64))) return NULL;
    }
    bool a1 = a->rank == 1, b1 = b->rank == 1;
    if (a1 && !(a = nb_reshape(a, 2, (int64_t[]){1, ka}))) return NULL;
    if (b1 && !(b = nb_reshape(b, 2, (int64_t[]){kb, 1}))) return NULL;
    nb_tensor *r = matmul_core(fn, a, b);
    if (!r || (!a1 && !b1)) return r;
    int64_t shape[NB_MAX_RANK] = {0};
    int rank = 0;
    for (int i = 0; i < r->rank; i++) {
        if (a1 && i == r->rank - 2) continue;
        if (b1 && i == r->rank - 1) continue;
        shape[rank++] = r->shape[i];
    }
    return nb_reshape(r, rank, shape);
}

int nbi_bw_matmul(nb_tensor *out, nb_tensor *g, nb_tensor **gin) {
    nb_tensor *a = out->node.in[0], *b = out->node.in[1];
    if (a->requires_grad && !(gin[0] = nbi_sum_to(nb_matmul(g, nb_transpose(b, -1, -2)), a->rank, a->shape)))
        return -1;
    if (b->requires_grad && !(gin[1] = nbi_sum_to(nb_matmul(nb_transpose(a, -1, -2), g), b->rank, b->shape)))
        return -1;
    return 0;
}

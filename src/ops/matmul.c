/*
 * matmul.c - NumPy matmul: forward and gradient rules.
 *
 * 1-D operands are promoted to a row (a) or a column (b) with a reshape view,
 * so the core op always sees stacks of matrices (..., M, K) @ (..., K, N) whose
 * batch axes broadcast. The backend's matmul kernel runs them (each product
 * one GEMM call that reads any strides: transposed operands and broadcast
 * batches are never copied).
 *
 * Gradients: dA = G B^T, dB = A^T G (summed over broadcast batch axes).
 */
#include <string.h>

#include "../core/internal.h"

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
    nb_tensor *out = nbi_empty_like_be(fn, a, a->dtype, br + 2, shape);
    if (!out) return NULL;
    nbi_arr o = nbi_arr_of(out), aa = nbi_arr_of(a), ba = nbi_arr_of(b);
    int rc = nbi_be(a)->matmul(&o, &aa, &ba);
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
    if (!nbi_same_device(fn, 2, (nb_tensor *[]){a, b})) return NULL;
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

/* ------------------------------------------------------------------------ */
/* dense: act(x w^T + b), the fully connected layer in one op                */
/* ------------------------------------------------------------------------ */

/* The same op from its parts, for operands the fused path does not take
   (strided batches, a strided bias). */
static nb_tensor *dense_composite(nb_tensor *x, nb_tensor *w, nb_tensor *b, nb_act act) {
    nb_tensor *y = nb_matmul(x, nb_transpose(w, 0, 1));
    if (b) y = nb_add(y, b);
    switch (act) {
    case NB_ACT_RELU: return nb_relu(y);
    case NB_ACT_TANH: return nb_tanh(y);
    case NB_ACT_SIGMOID: return nb_sigmoid(y);
    default: return y;
    }
}

nb_tensor *nb_dense(nb_tensor *x, nb_tensor *w, nb_tensor *b, nb_act act) {
    const char *fn = "nb_dense";
    if (!nbi_check_float(fn, x, 1) || !nbi_check_float(fn, w, 2) || (b && !nbi_check_float(fn, b, 3))) return NULL;
    if ((int)act < NB_ACT_NONE || (int)act > NB_ACT_SIGMOID) return nbi_err(fn, "unknown activation %d", (int)act);
    char sx[160], sw[160];
    nbi_shape_s(x, sx, sizeof sx);
    nbi_shape_s(w, sw, sizeof sw);
    if (x->rank < 1 || w->rank != 2 || x->shape[x->rank - 1] != w->shape[1])
        return nbi_err(fn, "x %s and weight %s: need x (..., in) and weight (out, in)", sx, sw);
    if (b && (b->rank != 1 || b->shape[0] != w->shape[0]))
        return nbi_err(fn, "bias %s must be (%lld) for weight %s", NBI_SHAPE(b), (long long)w->shape[0], sw);
    if (x->dtype != w->dtype || (b && b->dtype != x->dtype))
        return nbi_err(fn, "x %s, weight %s and bias must share a dtype", sx, sw);
    if (!nbi_same_device(fn, 3, (nb_tensor *[]){x, w, b})) return NULL;
    int64_t in = w->shape[1], nout = w->shape[0], m = 1; /* m: the rows, every axis but the last */
    for (int i = 0; i + 1 < x->rank; i++) m *= x->shape[i];
    if (!nbi_is_contig(x) && x->rank != 2) return dense_composite(x, w, b, act);
    if (b && !nbi_is_contig(b)) return dense_composite(x, w, b, act);
    int64_t shape[NB_MAX_RANK] = {0};
    memcpy(shape, x->shape, sizeof(int64_t) * (size_t)x->rank);
    shape[x->rank - 1] = nout;
    nb_tensor *out = nbi_empty_like_be(fn, x, x->dtype, x->rank, shape);
    if (!out) return NULL;
    int64_t rsa = x->rank == 2 ? x->strides[0] : in, csa = x->strides[x->rank - 1];
    const nbi_backend *be = nbi_be(x);
    nbi_arr xa = nbi_arr_of(x), wa = nbi_arr_of(w), oa = nbi_arr_of(out), bb = b ? nbi_arr_of(b) : oa;
    int rc = be->gemm(x->dtype, m, nout, in, xa.data, rsa, csa, wa.data, w->strides[1], w->strides[0], oa.data,
                      nout, false);
    if (rc != 0) {
        nb_free(out);
        return nbi_err(fn, "out of memory for matrix product buffers");
    }
    /* The epilogue, one pass over each row while it is in cache, rounded as the separate ops are. */
    if (b || act == NB_ACT_RELU) be->bias_relu(x->dtype, oa.data, m, nout, b ? bb.data : NULL, act == NB_ACT_RELU);
    if (act == NB_ACT_TANH) nbi_k_unary(NBI_U_TANH, out, out, 0);
    if (act == NB_ACT_SIGMOID) nbi_k_unary(NBI_U_SIGMOID, out, out, 0);
    nb_tensor *ins[3] = {x, w, b};
    int n = b ? 3 : 2;
    if (!nbi_needs_grad(n, ins)) return out;
    if (!nbi_record(out, NBI_OP_DENSE, n, ins, 3, act != NB_ACT_NONE)) return NULL;
    out->node.ip[0] = (int32_t)act;
    return out;
}

/* G' = G act'(Y): relu' = [Y > 0], tanh' = 1 - Y^2, sigmoid' = Y (1 - Y). First order: one kernel pass (with
   the bias gradient's column sums in the same pass for ReLU); else the composite rule. */
static nb_tensor *dense_act_grad(nb_tensor *out, nb_tensor *g, int act, nb_tensor **db, int64_t nout) {
    static const nbi_binop rule[] = {NBI_B_MUL, NBI_B_RELU_GRAD, NBI_B_TANH_GRAD, NBI_B_SIGMOID_GRAD};
    if (act == NB_ACT_NONE) return g;
    if (act == NB_ACT_RELU && db && !nb_grad_enabled() && nbi_is_contig(g) && nbi_is_contig(out) &&
        g->dtype == out->dtype) {
        nb_tensor *r = nbi_empty_like_be("nb_dense backward", g, g->dtype, g->rank, g->shape);
        *db = r ? nbi_empty_like_be("nb_dense backward", g, g->dtype, 1, &nout) : NULL;
        nbi_arr ra = r ? nbi_arr_of(r) : nbi_arr_of(g), ga = nbi_arr_of(g), ya = nbi_arr_of(out),
                da = *db ? nbi_arr_of(*db) : ga;
        if (!*db || nbi_be(g)->relu_mask_colsum(g->dtype, ra.data, ga.data, ya.data, da.data, nout ? g->numel / nout : 0,
                                                nout) != 0) {
            nb_free(r);
            nb_free(*db);
            *db = NULL;
            return nbi_err("nb_dense backward", "out of memory");
        }
        return r;
    }
    nb_tensor *r = nbi_fused_grad(rule[act], g, out);
    if (r) return r;
    nb_tensor *y = nb_detach(out), *one = nb_scalar(g->dtype, 1.0);
    if (act == NB_ACT_RELU) return nb_mul(g, nb_gt(y, nb_scalar(g->dtype, 0.0)));
    if (nb_grad_enabled()) y = out; /* second order: the derivative's own dependence on y */
    if (act == NB_ACT_TANH) return nb_mul(g, nb_sub(one, nb_mul(y, y)));
    return nb_mul(g, nb_mul(y, nb_sub(one, y)));
}

/* Above this many bytes of G' (out of the core's cache), dX and dW are computed together over blocks of
   DENSE_BW_BLOCK outputs: each block of G' is read from memory once, for both products. */
#define DENSE_BW_SPLIT ((int64_t)4 << 20)
#define DENSE_BW_BLOCK 512

/* dX (m x in) = G' W and dW (nout x in) = G'^T X over blocks of the nout axis, first order, G' (m x nout), x
   (m x in, rows rsx apart) and w (nout x in) contiguous rows: dX summed block after block, each dW block whole.
   0, 1 (not taken: the caller runs the two products), or -1. */
static int dense_bw_blocked(nb_tensor *gp, nb_tensor *x, nb_tensor *w, int64_t m, nb_tensor **gin) {
    const int64_t nout = w->shape[0], in = w->shape[1], es = (int64_t)nbi_dsize(gp->dtype);
    const int64_t rsx = x->rank == 2 ? x->strides[0] : in;
    if (nb_grad_enabled() || !x->requires_grad || !w->requires_grad || m * nout * es <= DENSE_BW_SPLIT ||
        !nbi_is_contig(gp) || gp->dtype != x->dtype || w->dtype != x->dtype || w->strides[1] != 1 ||
        w->strides[0] != in || x->strides[x->rank - 1] != 1 || (x->rank != 2 && !nbi_is_contig(x)))
        return 1;
    const char *fn = "nb_dense backward";
    nb_tensor *dx = nbi_empty_like_be(fn, x, x->dtype, x->rank, x->shape);
    nb_tensor *dw = dx ? nbi_empty_like_be(fn, w, w->dtype, 2, w->shape) : NULL;
    if (!dw) return nb_free(dx), -1;
    const nbi_backend *be = nbi_be(x);
    const char *pg = nbi_arr_of(gp).data, *px = nbi_arr_of(x).data, *pw = nbi_arr_of(w).data;
    char *pdx = nbi_arr_of(dx).data, *pdw = nbi_arr_of(dw).data;
    int rc = 0;
    for (int64_t v0 = 0; v0 < nout && rc == 0; v0 += DENSE_BW_BLOCK) {
        const int64_t vb = nout - v0 < DENSE_BW_BLOCK ? nout - v0 : DENSE_BW_BLOCK;
        rc = be->gemm(gp->dtype, m, in, vb, pg + v0 * es, nout, 1, pw + v0 * in * es, in, 1, pdx, in, v0 > 0);
        if (rc == 0) rc = be->gemm(gp->dtype, vb, in, m, pg + v0 * es, 1, nout, px, rsx, 1, pdw + v0 * in * es, in, false);
    }
    if (rc != 0) {
        nb_free(dx), nb_free(dw);
        nbi_err(fn, "out of memory for matrix product buffers");
        return -1;
    }
    gin[0] = dx, gin[1] = dw;
    return 0;
}

/* dX = G' W, dW = G'^T X (rows of every batch), db = sum of G' over rows. */
int nbi_bw_dense(nb_tensor *out, nb_tensor *g, nb_tensor **gin) {
    nb_tensor *x = out->node.in[0], *w = out->node.in[1], *b = out->node.nin > 2 ? out->node.in[2] : NULL;
    int64_t nout = w->shape[0], in = w->shape[1], m = 1;
    nb_tensor *db = NULL;
    nb_tensor *gp = dense_act_grad(out, g, out->node.ip[0], b && b->requires_grad ? &db : NULL, nout);
    if (!gp) return -1;
    for (int i = 0; i + 1 < x->rank; i++) m *= x->shape[i];
    const int blocked = dense_bw_blocked(gp, x, w, m, gin); /* a large G' (a tied head's logits): both at once */
    if (blocked < 0) return -1;
    if (blocked == 0) {
        nb_tensor *g2 = nb_reshape(gp, 2, (int64_t[]){m, nout});
        if (b && b->requires_grad && !(gin[2] = db ? db : nb_sum_axes(g2, 1, (int[]){0}, false))) return -1;
        return 0;
    }
    if (x->requires_grad && !(gin[0] = nb_matmul(gp, w))) return -1;
    nb_tensor *g2 = nb_reshape(gp, 2, (int64_t[]){m, nout});
    nb_tensor *x2 = w->requires_grad ? nb_reshape(x, 2, (int64_t[]){m, in}) : NULL;
    if (w->requires_grad && w->strides[0] == 1 && w->strides[1] == nout && nout > 1) {
        /* w is the transpose of a contiguous (in, nout) weight (GPT-2's Conv1D): the gradient in that layout,
           x^T g, so that the transpose's backward hands the weight a contiguous gradient (no strided copy) */
        if (!(gin[1] = nb_transpose(nb_matmul(nb_transpose(x2, 0, 1), g2), 0, 1))) return -1;
    } else if (w->requires_grad && !(gin[1] = nb_matmul(nb_transpose(g2, 0, 1), x2)))
        return -1;
    if (b && b->requires_grad && !(gin[2] = db ? db : nb_sum_axes(g2, 1, (int[]){0}, false))) return -1;
    return 0;
}

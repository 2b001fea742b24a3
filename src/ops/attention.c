/*
 * attention.c - scaled dot-product attention: forward through the backend's
 * attention kernel, and its gradient rules.
 *
 * With s = scale q k^T + mask (the last two axes; -inf where causal leaves a key out), p = softmax(s) along the
 * keys and out = p v:
 *     dv = p^T G,   dS = p (G v^T - rowsum(G v^T p)) = p (G v^T - rowsum(G out)),
 *     dq = scale dS k,   dk = scale dS^T q,   dmask = dS,
 * each summed back over the axes along which its input was broadcast. The first-order backward runs the
 * backend's attention_grad kernel (probabilities recomputed from the saved per-row log-sum-exp, no (Tq, Tk)
 * matrix kept); when a graph of the gradient is being built, the rule is the formulas above written with
 * differentiable ops (matmul, softmax), so it can itself be differentiated.
 *
 * The kernels read q, k, v (and the backward's g) through row layouts (nbi_rows: each row's values contiguous,
 * rows and batch-heads at any strides, the batch axes folded into at most two): a permuted view of a fused qkv
 * projection, or an operand broadcast over heads, is read in place; one the layouts cannot describe is copied
 * to contiguous (BH, T, d) first. The mask (an i64 keep/drop mask becomes additive 0 / -inf first) is copied to
 * (T'q, Tk) when it is the same for every batch-head (msb 0; T'q 1 or Tq: msq 0 or Tk), else to (BH, T'q, Tk).
 */
#include <math.h>

#include "../core/internal.h"

#define FN "nb_attention"

static const char *dtn(nb_dtype dt) { return dt == NB_F32 ? "f32" : dt == NB_F64 ? "f64" : "i64"; }

/* The shapes of one call: the batch axes (q, k, v broadcast) and the sizes of the last two. */
typedef struct {
    int brank;
    int64_t bshape[NB_MAX_RANK];
    int64_t BH, Tq, Tk, d, dv;
} attn_geom;

static bool geom_of(const char *fn, nb_tensor *q, nb_tensor *k, nb_tensor *v, nb_tensor *mask, attn_geom *G) {
    nb_tensor *t[3] = {q, k, v};
    for (int i = 0; i < 3; i++)
        if (t[i]->rank < 2) {
            nbi_err(fn, "%s %s needs rank >= 2", i == 0 ? "q" : i == 1 ? "k" : "v", NBI_SHAPE(t[i]));
            return false;
        }
    char b1[160], b2[160];
    G->Tq = q->shape[q->rank - 2], G->d = q->shape[q->rank - 1];
    G->Tk = k->shape[k->rank - 2], G->dv = v->shape[v->rank - 1];
    if (k->shape[k->rank - 1] != G->d) {
        nbi_err(fn, "q %s and k %s differ in their last axis", nbi_shape_s(q, b1, sizeof b1), nbi_shape_s(k, b2, sizeof b2));
        return false;
    }
    if (v->shape[v->rank - 2] != G->Tk) {
        nbi_err(fn, "k %s and v %s differ in their number of keys (axis -2)", nbi_shape_s(k, b1, sizeof b1),
                nbi_shape_s(v, b2, sizeof b2));
        return false;
    }
    if (G->Tq == 0 || G->Tk == 0 || G->d == 0 || G->dv == 0) {
        nbi_err(fn, "q %s, k %s and v %s need nonzero sizes along their last two axes", nbi_shape_s(q, b1, sizeof b1),
                nbi_shape_s(k, b2, sizeof b2), NBI_SHAPE(v));
        return false;
    }
    int r = 0, r2;
    int64_t s[NB_MAX_RANK], s2[NB_MAX_RANK];
    if (!nbi_broadcast(q->rank - 2, q->shape, k->rank - 2, k->shape, &r, s) ||
        !nbi_broadcast(r, s, v->rank - 2, v->shape, &r2, s2)) {
        nbi_err(fn, "the leading axes of q %s, k %s and v %s do not broadcast", nbi_shape_s(q, b1, sizeof b1),
                nbi_shape_s(k, b2, sizeof b2), NBI_SHAPE(v));
        return false;
    }
    if (r2 > NB_MAX_RANK - 2) {
        nbi_err(fn, "the leading axes of q %s, k %s and v %s have rank %d > %d", nbi_shape_s(q, b1, sizeof b1),
                nbi_shape_s(k, b2, sizeof b2), NBI_SHAPE(v), r2, NB_MAX_RANK - 2);
        return false;
    }
    G->brank = r2;
    G->BH = 1;
    for (int i = 0; i < r2; i++) G->bshape[i] = s2[i], G->BH *= s2[i];
    if (mask) { /* broadcastable to (batch..., Tq, Tk) without growing it */
        int64_t full[NB_MAX_RANK], o[NB_MAX_RANK];
        int ro;
        for (int i = 0; i < r2; i++) full[i] = s2[i];
        full[r2] = G->Tq, full[r2 + 1] = G->Tk;
        bool ok = mask->rank <= r2 + 2 && nbi_broadcast(mask->rank, mask->shape, r2 + 2, full, &ro, o);
        for (int i = 0; ok && i < ro; i++) ok = o[i] == full[i];
        if (!ok) {
            nbi_err(fn, "mask %s does not broadcast to the scores' shape (batch..., %lld, %lld) of q %s and k %s",
                    NBI_SHAPE(mask), (long long)G->Tq, (long long)G->Tk, nbi_shape_s(q, b1, sizeof b1),
                    nbi_shape_s(k, b2, sizeof b2));
            return false;
        }
    }
    return true;
}

/* x broadcast to (batch..., a, b) as a contiguous tensor of dtype dt: x itself when it already is one, else an
   unrecorded copy (the caller frees it when it differs from x). */
static nb_tensor *dense_operand(const char *fn, nb_tensor *x, int brank, const int64_t *bshape, int64_t a, int64_t b) {
    int rank = brank + 2;
    int64_t shape[NB_MAX_RANK], strides[NB_MAX_RANK];
    for (int i = 0; i < brank; i++) shape[i] = bshape[i];
    shape[brank] = a, shape[brank + 1] = b;
    bool same = x->rank == rank;
    for (int i = 0; same && i < rank; i++) same = x->shape[i] == shape[i];
    if (same && nbi_is_contig(x)) return x;
    nb_tensor *c = nbi_empty_like_be(fn, x, x->dtype, rank, shape);
    if (!c) return NULL;
    nbi_bstrides(x, rank, shape, strides);
    nb_tensor *view = nbi_view(x, rank, shape, strides, x->offset);
    if (!view) return nb_free(c), NULL;
    nbi_k_copy(c, view);
    nb_free(view);
    return c;
}

/* x broadcast to (batch..., a, n) as the kernels read it: x itself with its layout in *L when its rows are
   contiguous and its batch axes fold into at most two strides (nbi_rows), else a contiguous copy (freed by the
   caller when it differs from x) with the contiguous layout. */
static nb_tensor *rows_operand(const char *fn, nb_tensor *x, int brank, const int64_t *bshape, int64_t a, int64_t n,
                               nbi_rows *L) {
    int64_t shape[NB_MAX_RANK], strides[NB_MAX_RANK], gsz[2] = {1, 1}, gst[2] = {0, 0};
    const int rank = brank + 2;
    for (int i = 0; i < brank; i++) shape[i] = bshape[i];
    shape[brank] = a, shape[brank + 1] = n;
    nbi_bstrides(x, rank, shape, strides);
    bool ok = n == 1 || strides[rank - 1] == 1;
    int ng = 0;
    for (int i = 0; ok && i < brank; i++) {
        if (shape[i] == 1) continue;
        if (ng > 0 && gst[ng - 1] == strides[i] * shape[i]) /* continues the group before it */
            gsz[ng - 1] *= shape[i], gst[ng - 1] = strides[i];
        else if (ng < 2)
            gsz[ng] = shape[i], gst[ng] = strides[i], ng++;
        else
            ok = false;
    }
    if (ok) {
        *L = ng == 2 ? (nbi_rows){gsz[1], gst[0], gst[1], strides[brank]} : (nbi_rows){1, gst[0], 0, strides[brank]};
        return x;
    }
    *L = (nbi_rows){1, a * n, 0, n};
    return dense_operand(fn, x, brank, bshape, a, n);
}

/* The mask as the kernels take it: a contiguous copy (or mask itself) with its strides msb, msq. */
static nb_tensor *dense_mask(const char *fn, nb_tensor *mask, const attn_geom *G, int64_t *msb, int64_t *msq) {
    int lead = mask->rank - 2;
    bool per_bh = false;
    for (int i = 0; i < lead; i++) per_bh |= mask->shape[i] != 1;
    int64_t mq = mask->rank >= 2 ? mask->shape[mask->rank - 2] : 1;
    nb_tensor *c = per_bh ? dense_operand(fn, mask, G->brank, G->bshape, mq, G->Tk)
                          : dense_operand(fn, mask, 0, NULL, mq, G->Tk);
    *msq = mq == 1 ? 0 : G->Tk;
    *msb = per_bh ? mq * G->Tk : 0;
    return c;
}

/* An i64 keep/drop mask as additive values of dtype dt: 0 where it is nonzero, -inf where it is 0. */
static nb_tensor *additive_mask(const char *fn, nb_tensor *mask, nb_dtype dt) {
    nb_tensor *c = nbi_empty_like_be(fn, mask, dt, mask->rank, mask->shape);
    nb_tensor *zero = c ? nbi_empty_like_be(fn, mask, dt, 0, NULL) : NULL;
    nb_tensor *ninf = zero ? nbi_empty_like_be(fn, mask, dt, 0, NULL) : NULL;
    if (!ninf) {
        nb_free(c), nb_free(zero);
        return NULL;
    }
    nbi_k_fill(zero, 0);
    nbi_k_fill(ninf, -INFINITY);
    nbi_k_where(c, mask, zero, ninf);
    nb_free(zero), nb_free(ninf);
    return c;
}

static void free_if(nb_tensor *t, const nb_tensor *orig) {
    if (t && t != orig) nb_free(t);
}

nb_tensor *nb_attention(nb_tensor *q, nb_tensor *k, nb_tensor *v, nb_tensor *mask, bool causal, double scale) {
    if (!nbi_check_float(FN, q, 1) || !nbi_check_float(FN, k, 2) || !nbi_check_float(FN, v, 3)) return NULL;
    if (mask && !nbi_check(FN, mask, 4)) return NULL;
    if (!nbi_same_device(FN, 4, (nb_tensor *[]){q, k, v, mask})) return NULL;
    if (k->dtype != q->dtype || v->dtype != q->dtype)
        return nbi_err(FN, "q %s, k %s and v %s must share one dtype (%s, %s, %s)", NBI_SHAPE(q), NBI_SHAPE(k),
                       NBI_SHAPE(v), dtn(q->dtype), dtn(k->dtype), dtn(v->dtype));
    if (!(isfinite(scale))) return nbi_err(FN, "scale %g must be finite", scale);
    attn_geom G;
    if (!geom_of(FN, q, k, v, mask, &G)) return NULL;
    const nbi_backend *be = nbi_be(q);
    if (!nbi_has_kernel(be, attention)) return nbi_no_kernel(FN, q, "attention");
    nb_dtype dt = q->dtype;
    if (scale == 0) scale = 1.0 / sqrt((double)G.d);
    /* the mask as an additive input of q's dtype (a conversion of a float one is recorded: it gets a gradient) */
    nb_tensor *am = NULL;
    bool own_am = false;
    if (mask && mask->dtype == NB_I64) {
        if (!(am = additive_mask(FN, mask, dt))) return NULL;
        own_am = true;
    } else if (mask) {
        am = mask->dtype == dt ? mask : nb_to(mask, dt);
        if (!am) return NULL;
    }
    nb_tensor *in[4] = {q, k, v, am};
    int n = am ? 4 : 3;
    bool rec = nbi_needs_grad(n, in);
    int64_t msb = 0, msq = 0, lshape[NB_MAX_RANK], oshape[NB_MAX_RANK];
    for (int i = 0; i < G.brank; i++) lshape[i] = oshape[i] = G.bshape[i];
    lshape[G.brank] = G.Tq;
    oshape[G.brank] = G.Tq, oshape[G.brank + 1] = G.dv;
    nbi_rows lay[4];
    nb_tensor *cq = rows_operand(FN, q, G.brank, G.bshape, G.Tq, G.d, &lay[0]);
    nb_tensor *ck = cq ? rows_operand(FN, k, G.brank, G.bshape, G.Tk, G.d, &lay[1]) : NULL;
    nb_tensor *cv = ck ? rows_operand(FN, v, G.brank, G.bshape, G.Tk, G.dv, &lay[2]) : NULL;
    lay[3] = (nbi_rows){1, G.Tq * G.dv, 0, G.dv}; /* no g in the forward */
    nb_tensor *cm = cv && am ? dense_mask(FN, am, &G, &msb, &msq) : NULL;
    nb_tensor *lse = cv && (!am || cm) ? nbi_empty_like_be(FN, q, NB_F64, G.brank + 1, lshape) : NULL;
    nb_tensor *out = lse ? nbi_empty_like_be(FN, q, dt, G.brank + 2, oshape) : NULL;
    if (out) {
        nbi_arr oa = nbi_arr_of(out), la = nbi_arr_of(lse), qa = nbi_arr_of(cq), ka = nbi_arr_of(ck),
                va = nbi_arr_of(cv), ma = cm ? nbi_arr_of(cm) : oa;
        if (G.BH > 0 && be->attention(dt, oa.data, (double *)(void *)la.data, qa.data, ka.data, va.data,
                                      cm ? ma.data : NULL, msb, msq, G.BH, G.Tq, G.Tk, G.d, G.dv, causal,
                                      scale, lay) != 0) {
            nb_free(out);
            out = nbi_err(FN, "out of memory for q %s", NBI_SHAPE(q));
        }
    }
    free_if(cq, q), free_if(ck, k), free_if(cv, v), free_if(cm, am);
    if (out && rec && (out = nbi_record(out, NBI_OP_ATTENTION, n, in, (1u << n) - 1, true)) != NULL) {
        out->node.ip[0] = am != NULL;
        out->node.ip[1] = causal;
        out->node.p[0] = scale;
        if (nbi_save(out, 1, &lse) != 0) nb_free(out), out = NULL;
    }
    nb_free(lse);
    if (own_am) nb_free(am);
    return out;
}

/* ------------------------------------------------------------ gradients -- */

/* The additive causal mask (Tq, Tk): 0 where query i sees key j (j <= i + Tk - Tq), -inf elsewhere. */
static nb_tensor *causal_mask(const nb_tensor *like, int64_t Tq, int64_t Tk) {
    nb_tensor *c = nbi_empty_like_be("attention backward", like, like->dtype, 2, (int64_t[]){Tq, Tk});
    if (!c) return NULL;
    for (int64_t i = 0; i < Tq; i++)
        for (int64_t j = 0; j < Tk; j++) nbi_set_at(c, i * Tk + j, j > i + Tk - Tq ? -INFINITY : 0.0);
    return c;
}

/* The rule with differentiable ops (used when a graph of the gradient is being built). */
static int attention_composite(nb_tensor *out, nb_tensor *g, nb_tensor **gin, const attn_geom *G) {
    nb_tensor *q = out->node.in[0], *k = out->node.in[1], *v = out->node.in[2];
    nb_tensor *mask = out->node.ip[0] ? out->node.in[3] : NULL;
    double scale = out->node.p[0];
    int last = -1;
    nb_tensor *s = nb_scale(nb_matmul(q, nb_transpose(k, -2, -1)), scale);
    if (mask) s = nb_add(s, mask);
    if (out->node.ip[1]) {
        nb_tensor *cm = causal_mask(q, G->Tq, G->Tk);
        if (!cm) return -1;
        s = nb_add(s, cm);
        nb_free(cm);
    }
    nb_tensor *p = nb_softmax(s, -1);
    if (!p) return -1;
    if (v->requires_grad && !(gin[2] = nbi_sum_to(nb_matmul(nb_transpose(p, -2, -1), g), v->rank, v->shape)))
        return -1;
    bool wm = mask && mask->requires_grad;
    if (!q->requires_grad && !k->requires_grad && !wm) return 0;
    nb_tensor *dp = nb_matmul(g, nb_transpose(v, -2, -1));
    nb_tensor *ds = nb_mul(p, nb_sub(dp, nb_sum_axes(nb_mul(dp, p), 1, &last, true)));
    if (!ds) return -1;
    if (q->requires_grad && !(gin[0] = nbi_sum_to(nb_scale(nb_matmul(ds, k), scale), q->rank, q->shape))) return -1;
    if (k->requires_grad &&
        !(gin[1] = nbi_sum_to(nb_scale(nb_matmul(nb_transpose(ds, -2, -1), q), scale), k->rank, k->shape)))
        return -1;
    if (wm && !(gin[3] = nbi_sum_to(ds, mask->rank, mask->shape))) return -1;
    return 0;
}

/* x (batch..., a, b) contiguous summed back to the shape of t. */
static nb_tensor *sum_back(nb_tensor *x, const nb_tensor *t) {
    nb_tensor *r = nbi_sum_to(x, t->rank, t->shape);
    if (r != x) nb_free(x);
    return r;
}

int nbi_bw_attention(nb_tensor *out, nb_tensor *g, nb_tensor **gin) {
    const char *fn = "attention backward";
    nb_tensor *q = out->node.in[0], *k = out->node.in[1], *v = out->node.in[2];
    nb_tensor *mask = out->node.ip[0] ? out->node.in[3] : NULL;
    attn_geom G;
    if (!geom_of(fn, q, k, v, mask, &G)) return -1;
    const nbi_backend *be = nbi_be(q);
    if (nb_grad_enabled() || !nbi_has_kernel(be, attention_grad) || g->dtype != q->dtype)
        return attention_composite(out, g, gin, &G);
    nb_dtype dt = q->dtype;
    bool wm = mask && mask->requires_grad;
    nb_tensor *lse = nbi_saved(fn, out, 0);
    if (!lse) return -1;
    int64_t msb = 0, msq = 0, sq[NB_MAX_RANK], sk[NB_MAX_RANK], sv[NB_MAX_RANK], sm[NB_MAX_RANK];
    for (int i = 0; i < G.brank; i++) sq[i] = sk[i] = sv[i] = sm[i] = G.bshape[i];
    int r = G.brank;
    sq[r] = G.Tq, sq[r + 1] = G.d, sk[r] = G.Tk, sk[r + 1] = G.d, sv[r] = G.Tk, sv[r + 1] = G.dv;
    sm[r] = G.Tq, sm[r + 1] = G.Tk;
    nbi_rows lay[4];
    nb_tensor *cq = rows_operand(fn, q, G.brank, G.bshape, G.Tq, G.d, &lay[0]);
    nb_tensor *ck = cq ? rows_operand(fn, k, G.brank, G.bshape, G.Tk, G.d, &lay[1]) : NULL;
    nb_tensor *cv = ck ? rows_operand(fn, v, G.brank, G.bshape, G.Tk, G.dv, &lay[2]) : NULL;
    nb_tensor *cg = cv ? rows_operand(fn, g, G.brank, G.bshape, G.Tq, G.dv, &lay[3]) : NULL;
    nb_tensor *cm = cg && mask ? dense_mask(fn, mask, &G, &msb, &msq) : NULL;
    bool ok = cg && (!mask || cm);
    nb_tensor *dq = ok ? nbi_empty_like_be(fn, q, dt, r + 2, sq) : NULL;
    nb_tensor *dk = dq ? nbi_empty_like_be(fn, q, dt, r + 2, sk) : NULL;
    nb_tensor *dv = dk ? nbi_empty_like_be(fn, q, dt, r + 2, sv) : NULL;
    nb_tensor *dm = dv && wm ? nbi_empty_like_be(fn, q, dt, r + 2, sm) : NULL;
    int rc = -1;
    if (dv && (!wm || dm)) {
        nbi_arr a[10] = {nbi_arr_of(dq), nbi_arr_of(dk), nbi_arr_of(dv), nbi_arr_of(dm ? dm : dv), nbi_arr_of(cg),
                         nbi_arr_of(cq), nbi_arr_of(ck), nbi_arr_of(cv), nbi_arr_of(out), nbi_arr_of(lse)};
        nbi_arr ma = cm ? nbi_arr_of(cm) : a[0];
        rc = G.BH == 0 ? 0
                       : be->attention_grad(dt, a[0].data, a[1].data, a[2].data, dm ? a[3].data : NULL, a[4].data,
                                            a[5].data, a[6].data, a[7].data, a[8].data,
                                            (const double *)(const void *)a[9].data, cm ? ma.data : NULL, msb, msq,
                                            G.BH, G.Tq, G.Tk, G.d, G.dv, out->node.ip[1] != 0, out->node.p[0], lay);
        if (rc != 0) nbi_err(fn, "out of memory for q %s", NBI_SHAPE(q));
    }
    free_if(cq, q), free_if(ck, k), free_if(cv, v), free_if(cg, g), free_if(cm, mask);
    if (rc != 0) {
        nb_free(dq), nb_free(dk), nb_free(dv), nb_free(dm);
        return -1;
    }
    nb_tensor *res[4] = {dq, dk, dv, dm};
    nb_tensor *ins[4] = {q, k, v, mask};
    for (int i = 0; i < 4; i++) {
        if (!res[i]) continue;
        if (!ins[i]->requires_grad) {
            nb_free(res[i]);
            continue;
        }
        if (!(gin[i] = sum_back(res[i], ins[i]))) {
            for (int j = i + 1; j < 4; j++) nb_free(res[j]);
            return -1;
        }
    }
    return 0;
}

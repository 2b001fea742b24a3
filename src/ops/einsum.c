/*
 * einsum.c - Einstein summation built entirely from public ops. It records no
 * node of its own: the graph it leaves behind is made of permute, reshape,
 * mul, sum_axes and matmul nodes, so gradients of any order come for free.
 *
 * Notation (as NumPy / PyTorch): "ij,jk->ik". Labels are the letters a-z and
 * A-Z; spaces are ignored. Without "->" the output is every label that occurs
 * exactly once over all inputs, in ASCII order (so "ij,jk" is "ik" and "ii" is
 * a trace), preceded by the broadcast ("...") axes. "..." stands for leading
 * axes of an operand; the ellipsis axes of all operands are aligned on the
 * right and broadcast as NumPy does. A label repeated within an operand takes
 * the diagonal; a label absent from the output is summed. A label whose size
 * is 1 in one operand and N in another broadcasts (its size is N).
 *
 * The algorithm, with each operand's axes named by labels:
 *
 *  1. Parse, check ranks and sizes, and give every label its size: the one
 *     size other than 1 that the operands agree on (or 1).
 *  2. Per operand ("reduce"):
 *     a. axes of size 1 whose label has a larger size are broadcast axes: the
 *        value is constant along the label, so the axis is dropped (reshape)
 *        and the label treated as absent from this operand;
 *     b. a label on two axes p, q (size n) becomes one axis: x * I, where I is
 *        the n x n identity mask shaped (1,..,n@p,..,n@q,..,1) (a constant made
 *        with nb_eq of two iotas), summed over q. Repeat until no label repeats;
 *     c. labels that occur in this operand only and not in the output are
 *        summed (nb_sum_axes).
 *     Afterwards every label of an operand is in the output or in another operand.
 *  3. Contract pairs until one tensor is left. For 3+ operands the order is
 *     greedy (as opt_einsum's greedy): among all pairs of the remaining tensors
 *     take the one whose result has the fewest elements (ties: fewer FLOPs,
 *     then the leftmost pair) among those whose result has rank at most
 *     NB_MAX_RANK; the result replaces the left member. When no pair fits that
 *     rank, nb_einsum and nb_einsum_path both fail with the same message.
 *     A pair A, B splits the labels into
 *        batch    in A and B, and in the output or a remaining tensor
 *        contr    in A and B, nowhere else (summed by this product)
 *        free_a   in A only;  free_b  in B only
 *     and runs as a batched matrix product
 *        A -> permute (batch, free_a, contr) -> reshape (batch.., M, K)
 *        B -> permute (batch, contr, free_b) -> reshape (batch.., K, N)
 *        nb_matmul -> (batch.., M, N) -> reshape (batch.., free_a.., free_b..)
 *     where M, K, N are the products of the group sizes (reshapes that would
 *     not change the shape are skipped, so transposed views reach the GEMM
 *     without a copy; batch axes are merged only when the rank would exceed
 *     NB_MAX_RANK). With no contracted label the product is an elementwise,
 *     broadcasting nb_mul of (batch, free_a, 1..) and (batch, 1.., free_b):
 *     the same result without a GEMM per element.
 *  4. Permute the last tensor to the output order.
 *
 * The FLOP estimate of nb_einsum_path is 2 x the product of the sizes of the
 * labels in each pairwise contraction (one multiply-add per combination),
 * summed over the contractions; the single-operand steps of 2 are not counted.
 * All intermediates live in a private scope; only the result is kept (it may
 * be a view of an operand, as in NumPy, e.g. for "ij->ji").
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../core/internal.h"

#define EIN_MAX_OPS 26
#define EIN_ELL 52                      /* labels 52.. are the broadcast ("...") axes */
#define EIN_NLAB (EIN_ELL + NB_MAX_RANK) /* 60 labels: fit a uint64_t mask */
#define EIN_DESC 192                    /* a path description: at most 26*2 digits + 25*3 punctuation */

typedef uint64_t ein_mask;
#define BIT(l) ((ein_mask)1 << (l))

typedef struct {
    const char *fn, *spec;
    int n;
    int rank[EIN_MAX_OPS];
    int lab[EIN_MAX_OPS][NB_MAX_RANK]; /* label of each axis */
    int nout, out[NB_MAX_RANK];
    ein_mask outmask;
    int64_t size[EIN_NLAB]; /* -1: the label occurs nowhere */
    ein_mask present[EIN_MAX_OPS]; /* labels of each operand, broadcast (size 1 < size) ones left out */
    ein_mask kept[EIN_MAX_OPS];    /* labels of each operand after step 2 */
} ein_spec;

static int label_of(char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return 26 + (c - 'a');
    return -1;
}

/* A label as text: the letter, or "...[k]" for a broadcast axis. */
static const char *label_str(int l, char *buf) {
    if (l < 26) snprintf(buf, 16, "%c", 'A' + l);
    else if (l < EIN_ELL) snprintf(buf, 16, "%c", 'a' + (l - 26));
    else snprintf(buf, 16, "...[%d]", l - EIN_ELL);
    return buf;
}
#define LABEL(l) label_str((l), (char[16]){0})

/* One term of the spec: its letters' labels and where the ellipsis sits (-1: none). */
typedef struct {
    const char *s;
    int len;
    int nl, lab[EIN_NLAB], ell;
} ein_term;

static bool parse_term(ein_spec *p, const char *s, int len, ein_term *t, const char *what) {
    t->s = s;
    t->len = len;
    t->nl = 0;
    t->ell = -1;
    for (int i = 0; i < len; i++) {
        char c = s[i];
        if (c == ' ') continue;
        if (c == '.') {
            if (i + 2 >= len || s[i + 1] != '.' || s[i + 2] != '.') {
                nbi_err(p->fn, "\"%s\": %s \"%.*s\": a '.' that is not part of \"...\"", p->spec, what, len, s);
                return false;
            }
            if (t->ell >= 0) {
                nbi_err(p->fn, "\"%s\": %s \"%.*s\" has more than one \"...\"", p->spec, what, len, s);
                return false;
            }
            t->ell = t->nl;
            i += 2;
            continue;
        }
        int l = label_of(c);
        if (l < 0) {
            nbi_err(p->fn, "\"%s\": invalid character '%c' in %s \"%.*s\" (labels are a-z and A-Z)", p->spec, c,
                    what, len, s);
            return false;
        }
        if (t->nl >= EIN_NLAB) {
            nbi_err(p->fn, "\"%s\": %s \"%.*s\" has too many labels", p->spec, what, len, s);
            return false;
        }
        t->lab[t->nl++] = l;
    }
    return true;
}

/* Steps 1 and the bookkeeping of 2: fills p or records an error. */
static bool parse(ein_spec *p, const char *fn, const char *spec, int n, nb_tensor *const *ops) {
    memset(p, 0, sizeof *p);
    p->fn = fn;
    p->spec = spec ? spec : "(null)";
    p->n = n;
    if (!spec) return nbi_err(fn, "the spec is NULL"), false;
    if (n < 1 || n > EIN_MAX_OPS) return nbi_err(fn, "\"%s\": %d operands (1..%d allowed)", spec, n, EIN_MAX_OPS), false;
    if (!ops) return nbi_err(fn, "\"%s\": the operand array is NULL", spec), false;
    for (int i = 0; i < n; i++)
        if (!nbi_check_float(fn, ops[i], i + 1)) return false;

    /* Split "in0,in1,...->out". */
    const char *arrow = strstr(spec, "->");
    size_t inlen = arrow ? (size_t)(arrow - spec) : strlen(spec);
    if (arrow && strstr(arrow + 2, "->")) return nbi_err(fn, "\"%s\": more than one \"->\"", spec), false;
    for (const char *c = spec; *c; c++) {
        if (c == arrow) {
            c++;
            continue;
        }
        if (*c == '-' || *c == '>')
            return nbi_err(fn, "\"%s\": a '%c' that is not part of one \"->\"", spec, *c), false;
    }
    int nterms = 1;
    for (size_t i = 0; i < inlen; i++) nterms += spec[i] == ',';
    if (nterms != n)
        return nbi_err(fn, "\"%s\" has %d input term%s but %d operand%s given", spec, nterms, nterms == 1 ? "" : "s",
                       n, n == 1 ? " was" : "s were"),
               false;
    if (arrow && strchr(arrow + 2, ','))
        return nbi_err(fn, "\"%s\": the output term contains ','", spec), false;

    ein_term terms[EIN_MAX_OPS];
    const char *s = spec;
    int nell = 0;
    for (int i = 0; i < n; i++) {
        const char *e = s;
        while ((size_t)(e - spec) < inlen && *e != ',') e++;
        char what[32];
        snprintf(what, sizeof what, "input term %d", i);
        if (!parse_term(p, s, (int)(e - s), &terms[i], what)) return false;
        ein_term *t = &terms[i];
        int r = ops[i]->rank;
        if (t->ell < 0 && r != t->nl)
            return nbi_err(fn, "\"%s\": operand %d has rank %d (shape %s) but its subscripts \"%.*s\" name %d axes",
                           spec, i, r, NBI_SHAPE(ops[i]), t->len, t->s, t->nl),
                   false;
        if (t->ell >= 0 && r < t->nl)
            return nbi_err(fn, "\"%s\": operand %d has rank %d (shape %s) but its subscripts \"%.*s\" name at least %d axes",
                           spec, i, r, NBI_SHAPE(ops[i]), t->len, t->s, t->nl),
                   false;
        if (r - t->nl > nell) nell = r - t->nl;
        s = e + 1;
    }

    /* Labels of every axis; sizes. */
    int64_t sz_op[EIN_NLAB]; /* operand that set a size other than 1 */
    for (int l = 0; l < EIN_NLAB; l++) p->size[l] = -1, sz_op[l] = -1;
    int count[EIN_NLAB] = {0};
    for (int i = 0; i < n; i++) {
        ein_term *t = &terms[i];
        int r = ops[i]->rank, ne = r - t->nl, ax = 0;
        p->rank[i] = r;
        for (int k = 0; k <= t->nl; k++) {
            if (k == t->ell)
                for (int e = 0; e < ne; e++) p->lab[i][ax++] = EIN_ELL + (nell - ne) + e;
            if (k < t->nl) p->lab[i][ax++] = t->lab[k];
        }
        for (int a = 0; a < r; a++) {
            int l = p->lab[i][a];
            int64_t d = ops[i]->shape[a];
            count[l] += l < EIN_ELL;
            for (int b = 0; b < a; b++)
                if (p->lab[i][b] == l && ops[i]->shape[b] != d)
                    return nbi_err(fn, "\"%s\": operand %d repeats index '%s' with sizes %lld and %lld", spec, i,
                                   LABEL(l), (long long)ops[i]->shape[b], (long long)d),
                           false;
            if (p->size[l] < 0 || p->size[l] == 1) {
                if (p->size[l] < 0 || d != 1) p->size[l] = d, sz_op[l] = i;
            } else if (d != 1 && d != p->size[l]) {
                return nbi_err(fn, "\"%s\": index '%s' has size %lld in operand %lld but %lld in operand %d", spec,
                               LABEL(l), (long long)p->size[l], (long long)sz_op[l], (long long)d, i),
                       false;
            }
        }
    }

    /* The output. */
    if (arrow) {
        ein_term t;
        if (!parse_term(p, arrow + 2, (int)strlen(arrow + 2), &t, "output term")) return false;
        int nr = t.nl + (t.ell >= 0 ? nell : 0);
        if (nr > NB_MAX_RANK)
            return nbi_err(fn, "\"%s\": the output would have rank %d (at most %d)", spec, nr, NB_MAX_RANK), false;
        for (int k = 0; k <= t.nl; k++) {
            if (k == t.ell)
                for (int e = 0; e < nell; e++) p->out[p->nout++] = EIN_ELL + e;
            if (k == t.nl) break;
            int l = t.lab[k];
            if (p->size[l] < 0)
                return nbi_err(fn, "\"%s\": output index '%s' does not appear in any input", spec, LABEL(l)), false;
            if (p->outmask & BIT(l))
                return nbi_err(fn, "\"%s\": output index '%s' is repeated", spec, LABEL(l)), false;
            p->outmask |= BIT(l);
            p->out[p->nout++] = l;
        }
        for (int e = 0; e < p->nout; e++) p->outmask |= BIT(p->out[e]);
    } else {
        for (int e = 0; e < nell; e++) p->out[p->nout++] = EIN_ELL + e;
        for (int l = 0; l < EIN_ELL; l++) {
            if (count[l] != 1) continue;
            if (p->nout >= NB_MAX_RANK)
                return nbi_err(fn, "\"%s\": the implicit output has more than %d axes", spec, NB_MAX_RANK), false;
            p->out[p->nout++] = l;
        }
        for (int e = 0; e < p->nout; e++) p->outmask |= BIT(p->out[e]);
    }

    /* Which labels each operand keeps after step 2. */
    for (int i = 0; i < n; i++)
        for (int a = 0; a < p->rank[i]; a++) {
            int l = p->lab[i][a];
            if (ops[i]->shape[a] == p->size[l]) p->present[i] |= BIT(l);
        }
    for (int i = 0; i < n; i++) {
        ein_mask others = p->outmask;
        for (int k = 0; k < n; k++)
            if (k != i) others |= p->present[k];
        p->kept[i] = p->present[i] & others;
    }
    return true;
}

static double mask_numel(const ein_spec *p, ein_mask m) {
    double v = 1;
    for (int l = 0; l < EIN_NLAB; l++)
        if (m & BIT(l)) v *= (double)p->size[l];
    return v;
}

static int count_labels(ein_mask m) {
    int k = 0;
    for (; m; m &= m - 1) k++;
    return k;
}

/* The labels that a contraction of a and b must keep: those in the output or another remaining tensor. */
static ein_mask kept_by_pair(const ein_spec *p, int cnt, const ein_mask *m, int i, int j) {
    ein_mask others = p->outmask;
    for (int k = 0; k < cnt; k++)
        if (k != i && k != j) others |= m[k];
    return (m[i] | m[j]) & others;
}

/* Step 3's order: pairs[s] = {i, j} in the list as it stands before step s (the result replaces i, j is
   removed). Only pairs whose result has rank <= NB_MAX_RANK are taken; when every pair left would exceed it,
   records the error under p->fn and returns -1 (so nb_einsum and nb_einsum_path fail alike). Else returns
   the FLOP estimate and writes the description. */
static double plan(const ein_spec *p, int (*pairs)[2], char *desc, size_t cap) {
    int cnt = p->n;
    ein_mask m[EIN_MAX_OPS];
    char d[EIN_MAX_OPS][EIN_DESC];
    for (int i = 0; i < cnt; i++) {
        m[i] = p->kept[i];
        snprintf(d[i], EIN_DESC, "%d", i);
    }
    double flops = 0;
    for (int step = 0; cnt > 1; step++) {
        int bi = -1, bj = -1, over = 0;
        double bsize = INFINITY, bflops = INFINITY;
        for (int i = 0; i < cnt; i++)
            for (int j = i + 1; j < cnt; j++) {
                ein_mask keep = kept_by_pair(p, cnt, m, i, j);
                int rank = count_labels(keep);
                if (rank > NB_MAX_RANK) {
                    if (!over || rank < over) over = rank;
                    continue;
                }
                double rs = mask_numel(p, keep), fl = 2 * mask_numel(p, m[i] | m[j]);
                if (bi < 0 || rs < bsize || (rs == bsize && fl < bflops)) bi = i, bj = j, bsize = rs, bflops = fl;
            }
        if (bi < 0) {
            nbi_err(p->fn, "\"%s\": every pair of the %d operands left would make an intermediate result of rank %d or "
                    "more (at most %d)", p->spec, cnt, over, NB_MAX_RANK);
            return -1;
        }
        pairs[step][0] = bi;
        pairs[step][1] = bj;
        flops += bflops;
        m[bi] = kept_by_pair(p, cnt, m, bi, bj);
        /* "(left,right)": fits, since 26 operands need at most 117 characters */
        char tmp[EIN_DESC];
        size_t la = strlen(d[bi]), lb = strlen(d[bj]);
        if (la + lb + 4 > EIN_DESC) la = lb = 0;
        tmp[0] = '(';
        memcpy(tmp + 1, d[bi], la);
        tmp[1 + la] = ',';
        memcpy(tmp + 2 + la, d[bj], lb);
        tmp[2 + la + lb] = ')';
        tmp[3 + la + lb] = 0;
        memcpy(d[bi], tmp, la + lb + 4);
        for (int k = bj; k + 1 < cnt; k++) {
            m[k] = m[k + 1];
            memcpy(d[k], d[k + 1], EIN_DESC);
        }
        cnt--;
    }
    if (desc && cap) snprintf(desc, cap, "%s", d[0]);
    return flops;
}

/* A tensor under construction with the label of each axis. */
typedef struct {
    nb_tensor *t;
    int rank, lab[NB_MAX_RANK];
} ein_t;

/* Reshape unless the shape is already that. */
static nb_tensor *reshape_if(nb_tensor *t, int rank, const int64_t *shape) {
    if (!t) return NULL;
    if (t->rank == rank && (rank == 0 || !memcmp(t->shape, shape, sizeof(int64_t) * (size_t)rank))) return t;
    return nb_reshape(t, rank, shape);
}

/* The n x n identity as a constant of dtype dt shaped (1,..,n at p,..,n at q,..,1) for rank r. */
static nb_tensor *eye_mask(nb_dtype dt, int64_t n, int r, int p, int q) {
    double *iota = nbi_alloc(sizeof(double) * (size_t)(n ? n : 1));
    if (!iota) return nbi_err("nb_einsum", "out of memory for an index of %lld entries", (long long)n);
    for (int64_t k = 0; k < n; k++) iota[k] = (double)k;
    nb_tensor *v = nb_from_f64(dt, 1, &n, iota);
    nbi_dealloc(iota);
    int64_t sp[NB_MAX_RANK], sq[NB_MAX_RANK];
    for (int a = 0; a < r; a++) sp[a] = sq[a] = 1;
    sp[p] = n;
    sq[q] = n;
    return nb_eq(reshape_if(v, r, sp), reshape_if(v, r, sq));
}

/* Step 2 for operand i. */
static bool reduce_operand(const ein_spec *p, int i, nb_tensor *x, ein_t *o) {
    int r = 0;
    int64_t shape[NB_MAX_RANK];
    /* a. drop broadcast axes */
    for (int a = 0; a < x->rank; a++) {
        int l = p->lab[i][a];
        if (x->shape[a] != p->size[l]) continue;
        o->lab[r] = l;
        shape[r++] = x->shape[a];
    }
    nb_tensor *t = reshape_if(x, r, shape);
    /* b. diagonals */
    for (bool again = true; again && t;) {
        again = false;
        for (int a = 0; a < r && !again; a++)
            for (int b = a + 1; b < r && !again; b++) {
                if (o->lab[a] != o->lab[b]) continue;
                nb_tensor *mask = eye_mask(t->dtype, t->shape[a], r, a, b);
                t = mask ? nb_sum_axes(nb_mul(t, mask), 1, &b, false) : NULL;
                for (int c = b; c + 1 < r; c++) o->lab[c] = o->lab[c + 1];
                r--;
                again = true;
            }
    }
    /* c. sum labels needed nowhere else */
    int axes[NB_MAX_RANK], na = 0, nr = 0;
    for (int a = 0; a < r; a++) {
        if (p->kept[i] & BIT(o->lab[a])) o->lab[nr++] = o->lab[a];
        else axes[na++] = a;
    }
    if (t && na) t = nb_sum_axes(t, na, axes, false);
    o->t = t;
    o->rank = nr;
    return t != NULL;
}

static int find_lab(const ein_t *x, int l) {
    for (int a = 0; a < x->rank; a++)
        if (x->lab[a] == l) return a;
    return -1;
}

/* Step 3: one pairwise contraction keeping the labels in `keep`. */
static bool contract(const ein_spec *p, const ein_t *A, const ein_t *B, ein_mask keep, ein_t *R) {
    int batch[NB_MAX_RANK], contr[NB_MAX_RANK], fa[NB_MAX_RANK], fb[NB_MAX_RANK];
    int nb = 0, nc = 0, nfa = 0, nfb = 0;
    for (int a = 0; a < A->rank; a++) {
        int l = A->lab[a];
        if (find_lab(B, l) < 0) fa[nfa++] = l;
        else if (keep & BIT(l)) batch[nb++] = l;
        else contr[nc++] = l;
    }
    for (int b = 0; b < B->rank; b++)
        if (find_lab(A, B->lab[b]) < 0) fb[nfb++] = B->lab[b];
    int rr = nb + nfa + nfb;
    if (rr > NB_MAX_RANK)
        return nbi_err(p->fn, "\"%s\": an intermediate result would have rank %d (at most %d)", p->spec, rr,
                       NB_MAX_RANK),
               false;

    int pa[NB_MAX_RANK], pb[NB_MAX_RANK], k = 0;
    int64_t bshape[NB_MAX_RANK], M = 1, K = 1, N = 1;
    for (int e = 0; e < nb; e++) pa[k++] = find_lab(A, batch[e]), bshape[e] = p->size[batch[e]];
    for (int e = 0; e < nfa; e++) pa[k++] = find_lab(A, fa[e]), M *= p->size[fa[e]];
    for (int e = 0; e < nc; e++) pa[k++] = find_lab(A, contr[e]), K *= p->size[contr[e]];
    k = 0;
    for (int e = 0; e < nb; e++) pb[k++] = find_lab(B, batch[e]);
    for (int e = 0; e < nc; e++) pb[k++] = find_lab(B, contr[e]);
    for (int e = 0; e < nfb; e++) pb[k++] = find_lab(B, fb[e]), N *= p->size[fb[e]];
    nb_tensor *ta = nb_permute(A->t, pa), *tb = nb_permute(B->t, pb), *t;

    int64_t sa[NB_MAX_RANK], sb[NB_MAX_RANK], sr[NB_MAX_RANK];
    int k0 = 0;
    for (int e = 0; e < nb; e++) sr[k0++] = bshape[e];
    for (int e = 0; e < nfa; e++) sr[k0++] = p->size[fa[e]];
    for (int e = 0; e < nfb; e++) sr[k0++] = p->size[fb[e]];
    if (nc == 0) {
        /* (batch, free_a, 1..) * (batch, 1.., free_b) */
        for (int e = 0; e < rr; e++) sa[e] = sb[e] = sr[e];
        for (int e = nb + nfa; e < rr; e++) sa[e] = 1;
        for (int e = nb; e < nb + nfa; e++) sb[e] = 1;
        t = nb_mul(reshape_if(ta, rr, sa), reshape_if(tb, rr, sb));
    } else {
        /* Batch axes stay separate (the GEMM walks their strides) unless the rank would not fit. */
        int nbk = nb;
        if (nb + 2 > NB_MAX_RANK) {
            int64_t bn = 1;
            for (int e = 0; e < nb; e++) bn *= bshape[e];
            bshape[0] = bn;
            nbk = 1;
        }
        for (int e = 0; e < nbk; e++) sa[e] = sb[e] = bshape[e];
        sa[nbk] = M, sa[nbk + 1] = K;
        sb[nbk] = K, sb[nbk + 1] = N;
        t = nb_matmul(reshape_if(ta, nbk + 2, sa), reshape_if(tb, nbk + 2, sb));
        t = reshape_if(t, rr, sr);
    }
    R->t = t;
    R->rank = rr;
    k = 0;
    for (int e = 0; e < nb; e++) R->lab[k++] = batch[e];
    for (int e = 0; e < nfa; e++) R->lab[k++] = fa[e];
    for (int e = 0; e < nfb; e++) R->lab[k++] = fb[e];
    return t != NULL;
}

static nb_tensor *einsum_run(const ein_spec *p, nb_tensor *const *ops) {
    ein_t x[EIN_MAX_OPS];
    int pairs[EIN_MAX_OPS][2];
    if (plan(p, pairs, NULL, 0) < 0) return NULL;
    for (int i = 0; i < p->n; i++)
        if (!reduce_operand(p, i, ops[i], &x[i])) return NULL;
    int cnt = p->n;
    for (int step = 0; cnt > 1; step++) {
        int i = pairs[step][0], j = pairs[step][1];
        ein_mask m[EIN_MAX_OPS];
        for (int k = 0; k < cnt; k++) {
            m[k] = 0;
            for (int a = 0; a < x[k].rank; a++) m[k] |= BIT(x[k].lab[a]);
        }
        ein_t r;
        if (!contract(p, &x[i], &x[j], kept_by_pair(p, cnt, m, i, j), &r)) return NULL;
        x[i] = r;
        for (int k = j; k + 1 < cnt; k++) x[k] = x[k + 1];
        cnt--;
    }
    /* 4. output order */
    int perm[NB_MAX_RANK];
    bool identity = true;
    for (int e = 0; e < p->nout; e++) {
        perm[e] = find_lab(&x[0], p->out[e]);
        if (perm[e] < 0)
            return nbi_err(p->fn, "\"%s\": internal error: output index '%s' was lost", p->spec, LABEL(p->out[e]));
        identity = identity && perm[e] == e;
    }
    if (x[0].rank != p->nout)
        return nbi_err(p->fn, "\"%s\": internal error: result of rank %d for an output of rank %d", p->spec,
                       x[0].rank, p->nout);
    nb_tensor *t = x[0].t;
    /* Always a new handle (a view when nothing moves), never an operand's own. */
    return identity ? nb_reshape(t, t->rank, t->shape) : nb_permute(t, perm);
}

nb_tensor *nb_einsum(const char *spec, int n, nb_tensor *const *operands) {
    const char *fn = "nb_einsum";
    ein_spec p;
    if (!parse(&p, fn, spec, n, operands)) return NULL;
    int depth = nb_scope_depth();
    nb_scope_begin();
    if (nb_scope_depth() != depth + 1) return NULL; /* no room for the scope: error recorded */
    nb_tensor *r = einsum_run(&p, operands);
    if (r) r = nb_keep(r);
    nb_scope_end();
    return r;
}

int64_t nb_einsum_path(const char *spec, int n, nb_tensor *const *operands, char *buf, size_t cap) {
    ein_spec p;
    if (buf && cap) buf[0] = 0;
    if (!parse(&p, "nb_einsum_path", spec, n, operands)) return -1;
    int pairs[EIN_MAX_OPS][2];
    double f = plan(&p, pairs, buf, cap);
    if (f < 0) return -1;
    return f >= 9.2e18 ? INT64_MAX : (int64_t)f;
}

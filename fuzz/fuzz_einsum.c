/*
 * fuzz_einsum.c - nb_einsum and nb_einsum_path on spec strings with small operands.
 *
 * Input: one byte of options, the spec (up to a NUL byte or 80 characters),
 * then bytes for the sizes and values. The operands are shaped from the spec
 * as the harness reads it (each letter of an operand's term is an axis whose
 * size is chosen per letter; "..." gives 0-2 leading axes), so most specs get
 * operands that fit; options bend that:
 *   bit 0  f64 operands (else f32)
 *   bit 1  one axis of one operand one larger than its label's size
 *   bit 2  one operand fewer or more than the spec has terms
 *   bit 3  after backward, a second-order gradient (NB_CREATE_GRAPH)
 *   bit 4  integer values in [-3, 3] and f64, and the result compared with a
 *          naive sum over every label (specs without "...", where the naive
 *          reading is unambiguous)
 * Invariants: no crash; a NULL result has a message; nb_einsum_path succeeds
 * exactly when nb_einsum does; a result's gradients have their operands'
 * shapes; the naive comparison is exact; nothing leaks.
 */
#include "fuzz.h"

#include <ctype.h>

#define MAXOPS 27
#define MAXSPEC 80

typedef struct {
    int nterms;               /* terms left of "->" (or in the whole spec) */
    char labels[MAXOPS][32];  /* each term's letters in order (without "...") */
    int nlab[MAXOPS];
    int ell[MAXOPS];          /* "..." present in the term */
    bool arrow;
    char out[64];             /* letters right of "->" */
    int nout;
    bool out_ell;
    bool bad;                 /* too long for this reader: no naive comparison */
} spec_view;

/* A loose reading of the spec, only to shape operands and to evaluate simple specs. */
static void view(const char *s, spec_view *v) {
    memset(v, 0, sizeof *v);
    const char *arrow = strstr(s, "->");
    v->arrow = arrow != NULL;
    const char *end = arrow ? arrow : s + strlen(s);
    int t = 0;
    for (const char *p = s; p < end && t < MAXOPS; p++) {
        if (*p == ',') {
            t++;
            continue;
        }
        if (p + 2 < end && p[0] == '.' && p[1] == '.' && p[2] == '.') {
            v->ell[t] = 1;
            p += 2;
        } else if ((unsigned char)*p < 128 && isalpha((unsigned char)*p)) {
            if (v->nlab[t] < 31) v->labels[t][v->nlab[t]++] = *p;
            else v->bad = true;
        }
    }
    v->nterms = t + 1 > MAXOPS ? MAXOPS : t + 1;
    if (arrow) {
        for (const char *p = arrow + 2; *p; p++) {
            if (p[0] == '.' && p[1] == '.' && p[2] == '.') {
                v->out_ell = true;
                p += 2;
            } else if ((unsigned char)*p < 128 && isalpha((unsigned char)*p)) {
                if (v->nout < 63) v->out[v->nout++] = *p;
                else v->bad = true;
            }
        }
    }
}

static int letter(char c) { return c >= 'a' ? c - 'a' : 26 + c - 'A'; }

/* The naive einsum of a spec without "...": every assignment of the labels,
   the product of the operands' elements summed into the output element.
   Returns false when the spec or sizes are not ones it reads (then nothing is
   compared), else writes the result (count *nres) to res. */
static bool naive(const spec_view *v, int n, nb_tensor *const *ops, double *res, int64_t cap, int64_t *nres,
                  int *rank, int64_t *shape) {
    if (v->bad || n != v->nterms || v->out_ell) return false;
    int64_t size[52];
    int count[52] = {0};
    for (int i = 0; i < 52; i++) size[i] = -1;
    for (int t = 0; t < n; t++) {
        if (v->ell[t] || nb_rank(ops[t]) != v->nlab[t]) return false;
        for (int k = 0; k < v->nlab[t]; k++) {
            int l = letter(v->labels[t][k]);
            int64_t d = nb_shape(ops[t])[k];
            count[l]++;
            if (size[l] < 0 || size[l] == 1) size[l] = d;
            else if (d != 1 && d != size[l]) return false;
        }
    }
    /* the output's labels: explicit, or those seen once in ASCII order */
    char out[64];
    int nout = 0;
    if (v->arrow) {
        for (int k = 0; k < v->nout; k++) {
            int l = letter(v->out[k]);
            if (size[l] < 0) return false;
            for (int j = 0; j < k; j++)
                if (v->out[j] == v->out[k]) return false;
            out[nout++] = v->out[k];
        }
    } else {
        for (int c = 'A'; c <= 'z'; c++)
            if (isalpha(c) && count[letter((char)c)] == 1) out[nout++] = (char)c;
    }
    if (nout > NB_MAX_RANK) return false;
    int used[52], nused = 0;
    int64_t total = 1, outn = 1;
    for (int l = 0; l < 52; l++)
        if (size[l] >= 0) {
            used[nused++] = l;
            total *= size[l];
            if (total > 4096) return false;
        }
    for (int k = 0; k < nout; k++) {
        shape[k] = size[letter(out[k])];
        outn *= shape[k];
    }
    if (outn > cap) return false;
    *rank = nout;
    *nres = outn;
    for (int64_t i = 0; i < outn; i++) res[i] = 0;
    int64_t idx[52] = {0};
    double *vals[MAXOPS];
    for (int t = 0; t < n; t++) {
        int64_t m = nb_numel(ops[t]);
        vals[t] = malloc(sizeof(double) * (size_t)(m ? m : 1));
        nb_read_f64(ops[t], vals[t], m);
    }
    for (int64_t a = 0; a < total; a++) {
        int64_t r = a;
        for (int u = nused - 1; u >= 0; u--) {
            idx[used[u]] = size[used[u]] ? r % size[used[u]] : 0;
            if (size[used[u]]) r /= size[used[u]];
        }
        double prod = 1;
        for (int t = 0; t < n; t++) {
            int64_t off = 0;
            for (int k = 0; k < v->nlab[t]; k++) {
                int64_t d = nb_shape(ops[t])[k];
                off = off * d + (d == 1 ? 0 : idx[letter(v->labels[t][k])]);
            }
            prod *= vals[t][off];
        }
        int64_t o = 0;
        for (int k = 0; k < nout; k++) o = o * shape[k] + idx[letter(out[k])];
        res[o] += prod;
    }
    for (int t = 0; t < n; t++) free(vals[t]);
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fz_init();
    fz_bytes b = {data, size};
    uint8_t opt = fz_u8(&b);
    char spec[MAXSPEC + 1];
    int len = 0;
    while (len < MAXSPEC && b.n) {
        char c = (char)fz_u8(&b);
        if (!c) break;
        spec[len++] = c;
    }
    spec[len] = 0;
    spec_view v;
    view(spec, &v);
    bool exact = opt & 16;
    nb_dtype dt = (opt & 1) || exact ? NB_F64 : NB_F32;

    /* sizes per letter, and up to two broadcast axes */
    static const int64_t sizes[8] = {1, 2, 3, 2, 3, 1, 0, 4};
    int64_t lsize[52], esize[2];
    for (int l = 0; l < 52; l++) lsize[l] = 0;
    for (int t = 0; t < v.nterms; t++)
        for (int k = 0; k < v.nlab[t]; k++) {
            int l = letter(v.labels[t][k]);
            if (!lsize[l]) lsize[l] = 1 + sizes[fz_pick(&b, 8)];
        }
    esize[0] = sizes[fz_pick(&b, 8)];
    esize[1] = sizes[fz_pick(&b, 8)];
    int n = v.nterms;
    if (opt & 4) n += fz_u8(&b) & 1 ? 1 : -1;
    if (n < 0) n = 0;
    if (n > MAXOPS) n = MAXOPS;
    int bent = opt & 2 ? fz_pick(&b, n ? n : 1) : -1;

    nb_scope_begin();
    nb_tensor *ops[MAXOPS];
    for (int t = 0; t < n; t++) {
        int64_t shape[NB_MAX_RANK + 4];
        int rank = 0;
        if (t < v.nterms && v.ell[t]) {
            int ne = fz_pick(&b, 3);
            for (int e = 0; e < ne; e++) shape[rank++] = fz_u8(&b) & 1 ? 1 : esize[e];
        }
        for (int k = 0; t < v.nterms && k < v.nlab[t] && rank < NB_MAX_RANK + 1; k++) {
            int64_t s = lsize[letter(v.labels[t][k])] - 1;
            shape[rank++] = s == 2 && fz_u8(&b) % 4 == 0 ? 1 : s; /* a size-1 axis broadcasts */
        }
        if (t == bent && rank > 0) shape[fz_pick(&b, rank)] += 1;
        if (rank > NB_MAX_RANK) rank = NB_MAX_RANK; /* the library is then given a wrong rank */
        int64_t numel = 1;
        for (int k = 0; k < rank; k++) numel *= shape[k];
        double *vals = malloc(sizeof(double) * (size_t)(numel ? numel : 1));
        for (int64_t i = 0; i < numel; i++) vals[i] = exact ? fz_range(&b, -3, 3) : fz_value(&b);
        ops[t] = nb_from_f64(dt, rank, shape, vals);
        free(vals);
        FZ_ASSERT(ops[t] != NULL);
        nb_set_requires_grad(ops[t], true);
    }

    char path[256];
    int64_t flops = nb_einsum_path(spec, n, ops, path, sizeof path);
    bool path_ok = flops >= 0;
    if (!path_ok) FZ_FAILED_WITH_MESSAGE();
    nb_clear_error();
    nb_tensor *r = nb_einsum(spec, n, ops);
    if (!r) FZ_FAILED_WITH_MESSAGE();
    if (path_ok != (r != NULL)) {
        fprintf(stderr, "spec '%s': nb_einsum_path %s, nb_einsum %s (%s)\n", spec, path_ok ? "succeeds" : "fails",
                r ? "succeeds" : "fails", nb_last_error() ? nb_last_error() : "");
        abort();
    }
    if (r) {
        if (exact) {
            static double want[1 << 14];
            int64_t nw, wshape[NB_MAX_RANK];
            int wrank;
            if (naive(&v, n, ops, want, 1 << 14, &nw, &wrank, wshape)) {
                FZ_ASSERT(nb_rank(r) == wrank);
                for (int k = 0; k < wrank; k++) FZ_ASSERT(nb_shape(r)[k] == wshape[k]);
                double *got = malloc(sizeof(double) * (size_t)(nw ? nw : 1));
                FZ_ASSERT(nb_read_f64(r, got, nw) == nw);
                for (int64_t i = 0; i < nw; i++)
                    if (!(got[i] == want[i])) {
                        fprintf(stderr, "spec '%s': element %lld is %.17g, the naive sum %.17g\n", spec,
                                (long long)i, got[i], want[i]);
                        abort();
                    }
                free(got);
            }
        }
        /* backward through the recorded contraction; every operand gets a gradient of its shape */
        nb_tensor *loss = nb_sum(nb_mul(r, r));
        FZ_ASSERT(loss != NULL);
        unsigned flags = opt & 8 ? NB_CREATE_GRAPH : 0;
        nb_tensor *grads[MAXOPS];
        if (nb_gradients(loss, NULL, n, ops, flags, grads) != 0) {
            FZ_FAILED_WITH_MESSAGE();
        } else {
            for (int t = 0; t < n; t++) {
                FZ_ASSERT(grads[t] && nb_rank(grads[t]) == nb_rank(ops[t]));
                for (int k = 0; k < nb_rank(ops[t]); k++) FZ_ASSERT(nb_shape(grads[t])[k] == nb_shape(ops[t])[k]);
            }
            if ((opt & 8) && n > 0) {
                nb_tensor *g2 = nb_gradient(nb_sum(grads[0]), ops[0], 0);
                if (!g2) FZ_FAILED_WITH_MESSAGE();
            }
        }
    }
    nb_scope_end();
    fz_check_memory();
    return 0;
}

/*
 * test_matmul_diff.c - nb_matmul against a naive triple loop, forward and
 * backward, over random batched and broadcast products.
 *
 * Each operand is built as a view of a leaf "root" tensor: a random
 * permutation of its axes (transposes included), a slice that leaves gaps, a
 * flip (negative stride), and nb_expand of size-1 axes (stride 0; batch axes,
 * and now and then a matrix axis or a whole vector). Batch axes are full,
 * size 1 (broadcast by matmul) or expanded, on either side; ranks 1 to 4;
 * f32, f64 and mixed. The same view ops applied to a root holding 0, 1, 2, ...
 * tell which root element each logical element reads, so the naive gradients
 * of the logical operands are scattered back onto the roots without relying
 * on any backward rule. Checked per case: the product, the roots' gradients
 * of sum(W * (a @ b)) for a random W, and those of plain sum(a @ b) (whose
 * seed reaches matmul's backward as an expanded scalar).
 */
#include "harness.h"

#define NCASES 3000

/* How one operand is laid out: logical shape L (rank r); expanded axes (size 1 in the root, stride 0 in the
   view); the root's axes permuted by q; a slice of axis `sl` (in the view's numbering) from a root `extra`
   longer, starting at `off`; a flipped axis. */
typedef struct {
    int r;
    int64_t L[4];
    bool expand[4];
    int q[4];
    int sl, flip;
    int64_t extra, off;
} opspec;

static int64_t rnd(int64_t lo, int64_t hi) { return lo + (int64_t)(th_next() % (uint64_t)(hi - lo + 1)); }

static void random_layout(opspec *s) {
    for (int i = 0; i < s->r; i++) s->q[i] = i;
    int kind = (int)rnd(0, 5);
    if (s->r >= 2 && (kind == 1 || kind == 4)) { /* transposed matrices */
        s->q[s->r - 1] = s->r - 2;
        s->q[s->r - 2] = s->r - 1;
    } else if (s->r >= 2 && kind == 2) { /* any permutation */
        for (int i = s->r - 1; i > 0; i--) {
            int j = (int)rnd(0, i), t = s->q[i];
            s->q[i] = s->q[j];
            s->q[j] = t;
        }
    }
    s->sl = -1;
    s->flip = -1;
    if (kind == 3 || kind == 4) { /* a slice of one of the last two axes (of the only one for a vector) */
        s->sl = s->r >= 2 ? s->r - (int)rnd(1, 2) : 0;
        s->extra = rnd(1, 3);
        s->off = rnd(0, s->extra);
    }
    if (kind == 5) s->flip = (int)rnd(0, s->r - 1);
}

/* The shape of the root behind spec. */
static void root_shape(const opspec *s, int64_t *Q) {
    int64_t P[4];
    for (int i = 0; i < s->r; i++) P[i] = s->expand[i] ? 1 : s->L[i];
    if (s->sl >= 0) P[s->sl] += s->extra;
    for (int i = 0; i < s->r; i++) Q[s->q[i]] = P[i];
}

static nb_tensor *make_view(const opspec *s, nb_tensor *root) {
    nb_tensor *v = root;
    bool ident = true;
    for (int i = 0; i < s->r; i++)
        if (s->q[i] != i) ident = false;
    if (!ident) v = nb_permute(v, s->q);
    if (s->sl >= 0) {
        int64_t len = s->expand[s->sl] ? 1 : s->L[s->sl];
        v = nb_slice(v, s->sl, s->off, s->off + len);
    }
    if (s->flip >= 0) v = nb_flip(v, s->flip);
    bool any = false;
    for (int i = 0; i < s->r; i++) any |= s->expand[i];
    if (any) v = nb_expand(v, s->r, s->L);
    return v;
}

static int64_t prod(int r, const int64_t *sh) {
    int64_t n = 1;
    for (int i = 0; i < r; i++) n *= sh[i];
    return n;
}

static double *read_all(nb_tensor *t) {
    int64_t n = nb_numel(t);
    double *d = calloc((size_t)(n > 0 ? n : 1), sizeof(double));
    if (n > 0) nb_read_f64(t, d, n);
    return d;
}

/* Naive a @ b with NumPy's rules on dense row-major logical operands. Writes C (the broadcast batches, then
   M x N) and, when W is given, the gradients dA = W B^T and dB = A^T W summed over broadcasting, with the
   sums of absolute terms (for tolerances) in sabs_*. */
typedef struct {
    int ra, rb;
    const int64_t *sa, *sb;
} mm_shapes;

static void naive(const mm_shapes *S, const double *A, const double *B, const double *W, double *C, double *Cabs,
                  double *dA, double *dAabs, double *dB, double *dBabs) {
    int64_t ash[4], bsh[4];
    int ar = S->ra, brk = S->rb;
    memcpy(ash, S->sa, sizeof(int64_t) * (size_t)ar);
    memcpy(bsh, S->sb, sizeof(int64_t) * (size_t)brk);
    if (ar == 1) { /* a row */
        ash[1] = ash[0];
        ash[0] = 1;
        ar = 2;
    }
    if (brk == 1) { /* a column */
        bsh[1] = 1;
        brk = 2;
    }
    int na = ar - 2, nbt = brk - 2, nbr = na > nbt ? na : nbt;
    int64_t bshape[2] = {1, 1};
    for (int i = 0; i < nbr; i++) {
        int ia = i - (nbr - na), ib = i - (nbr - nbt);
        int64_t da = ia >= 0 ? ash[ia] : 1, db = ib >= 0 ? bsh[ib] : 1;
        bshape[i] = da == 1 ? db : da;
    }
    int64_t M = ash[ar - 2], K = ash[ar - 1], N = bsh[brk - 1], nbatch = prod(nbr, bshape);
    for (int64_t t = 0; t < nbatch; t++) {
        int64_t idx[2] = {0, 0}, rem = t;
        for (int i = nbr - 1; i >= 0; i--) {
            idx[i] = rem % bshape[i];
            rem /= bshape[i];
        }
        int64_t oa = 0, ob = 0;
        for (int i = 0; i < na; i++) oa = oa * ash[i] + (ash[i] == 1 ? 0 : idx[i + nbr - na]);
        for (int i = 0; i < nbt; i++) ob = ob * bsh[i] + (bsh[i] == 1 ? 0 : idx[i + nbr - nbt]);
        const double *a = A + oa * M * K, *b = B + ob * K * N;
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++) {
                double s = 0, sabs = 0;
                for (int64_t k = 0; k < K; k++) {
                    s += a[i * K + k] * b[k * N + j];
                    sabs += fabs(a[i * K + k] * b[k * N + j]);
                }
                C[(t * M + i) * N + j] = s;
                Cabs[(t * M + i) * N + j] = sabs;
                if (!W) continue;
                double w = W[(t * M + i) * N + j];
                for (int64_t k = 0; k < K; k++) {
                    dA[oa * M * K + i * K + k] += w * b[k * N + j];
                    dAabs[oa * M * K + i * K + k] += fabs(w * b[k * N + j]);
                    dB[ob * K * N + k * N + j] += a[i * K + k] * w;
                    dBabs[ob * K * N + k * N + j] += fabs(a[i * K + k] * w);
                }
            }
    }
}

/* |got - want| <= rtol * scale (+ a floor for zero scales) for n elements. Returns the number wrong. */
static int64_t compare(const double *got, const double *want, const double *scale, int64_t n, double rtol) {
    int64_t bad = 0;
    for (int64_t i = 0; i < n; i++)
        if (!(fabs(got[i] - want[i]) <= rtol * scale[i] + 1e-300)) bad++;
    return bad;
}

static const char *dt_name(nb_dtype dt) { return dt == NB_F32 ? "f32" : "f64"; }

static void describe(const char *what, const opspec *s, nb_dtype dt, nb_tensor *v) {
    char sh[64];
    fprintf(stderr, "    %s %s %s strides (", what, dt_name(dt), nb_shape_str(s->r, s->L, sh, sizeof sh));
    for (int i = 0; i < s->r; i++) fprintf(stderr, "%s%lld", i ? "," : "", v ? (long long)nb_strides(v)[i] : 0LL);
    fprintf(stderr, ")\n");
}

/* One case: returns 0 when forward and both backwards agree with the naive loop, else 1. */
static int run_case(const opspec *sa, nb_dtype da, const opspec *sb, nb_dtype dbt, bool verbose) {
    int wrong = 0;
    nb_scope_begin();
    int64_t Qa[4], Qb[4];
    root_shape(sa, Qa);
    root_shape(sb, Qb);
    int64_t na = prod(sa->r, Qa), nbn = prod(sb->r, Qb);
    nb_tensor *ra = th_rand(da, sa->r, Qa, -1, 1), *rb = th_rand(dbt, sb->r, Qb, -1, 1);
    double *ia = malloc(sizeof(double) * (size_t)(na + 1)), *ib = malloc(sizeof(double) * (size_t)(nbn + 1));
    for (int64_t i = 0; i < na; i++) ia[i] = (double)i;
    for (int64_t i = 0; i < nbn; i++) ib[i] = (double)i;
    nb_tensor *iota_a = nb_from_f64(NB_F64, sa->r, Qa, ia), *iota_b = nb_from_f64(NB_F64, sb->r, Qb, ib);
    free(ia);
    free(ib);
    nb_set_requires_grad(ra, true);
    nb_set_requires_grad(rb, true);
    nb_tensor *va = make_view(sa, ra), *vb = make_view(sb, rb);
    double *A = read_all(va), *B = read_all(vb), *mapa = read_all(make_view(sa, iota_a)),
           *mapb = read_all(make_view(sb, iota_b));
    int64_t la = prod(sa->r, sa->L), lb = prod(sb->r, sb->L);

    nb_tensor *c = nb_matmul(va, vb);
    nb_dtype cdt = da == NB_F64 || dbt == NB_F64 ? NB_F64 : NB_F32;
    double rtol = cdt == NB_F32 || da != dbt ? 2e-6 : 1e-14;
    if (!c) {
        if (verbose) fprintf(stderr, "    nb_matmul failed: %s\n", nb_last_error() ? nb_last_error() : "?");
        wrong = 1;
        goto done;
    }
    int64_t nc = nb_numel(c);
    double *W = malloc(sizeof(double) * (size_t)(nc + 1));
    for (int64_t i = 0; i < nc; i++) W[i] = th_uniform(-1, 1);
    double *C = calloc((size_t)nc + 1, sizeof(double)), *Cabs = calloc((size_t)nc + 1, sizeof(double));
    double *dA = calloc((size_t)la + 1, sizeof(double)), *dAabs = calloc((size_t)la + 1, sizeof(double));
    double *dB = calloc((size_t)lb + 1, sizeof(double)), *dBabs = calloc((size_t)lb + 1, sizeof(double));
    double *gA = calloc((size_t)na + 1, sizeof(double)), *gAabs = calloc((size_t)na + 1, sizeof(double));
    double *gB = calloc((size_t)nbn + 1, sizeof(double)), *gBabs = calloc((size_t)nbn + 1, sizeof(double));
    mm_shapes S = {sa->r, sb->r, sa->L, sb->L};
    double *got = read_all(c);
    for (int pass = 0; pass < 3; pass++) {
        /* pass 0: forward; 1: d sum(W * c); 2: d sum(c), W = 1 */
        if (pass == 2)
            for (int64_t i = 0; i < nc; i++) W[i] = 1;
        memset(dA, 0, sizeof(double) * (size_t)la);
        memset(dAabs, 0, sizeof(double) * (size_t)la);
        memset(dB, 0, sizeof(double) * (size_t)lb);
        memset(dBabs, 0, sizeof(double) * (size_t)lb);
        naive(&S, A, B, pass ? W : NULL, C, Cabs, dA, dAabs, dB, dBabs);
        if (pass == 0) {
            int64_t bad = compare(got, C, Cabs, nc, rtol);
            if (bad) {
                wrong = 1;
                if (verbose) fprintf(stderr, "    forward: %lld of %lld elements wrong\n", (long long)bad, (long long)nc);
            }
            continue;
        }
        memset(gA, 0, sizeof(double) * (size_t)na);
        memset(gAabs, 0, sizeof(double) * (size_t)na);
        memset(gB, 0, sizeof(double) * (size_t)nbn);
        memset(gBabs, 0, sizeof(double) * (size_t)nbn);
        for (int64_t i = 0; i < la; i++) {
            gA[(int64_t)mapa[i]] += dA[i];
            gAabs[(int64_t)mapa[i]] += dAabs[i];
        }
        for (int64_t i = 0; i < lb; i++) {
            gB[(int64_t)mapb[i]] += dB[i];
            gBabs[(int64_t)mapb[i]] += dBabs[i];
        }
        nb_clear_grad(ra);
        nb_clear_grad(rb);
        nb_tensor *L;
        if (pass == 1) {
            nb_tensor *w = nb_from_f64(cdt, nb_rank(c), nb_shape(c), W);
            L = nb_sum(nb_mul(w, c));
        } else {
            L = nb_sum(nb_matmul(va, vb));
        }
        int rc = L ? nb_backward(L, NULL, pass == 1 ? NB_RETAIN_GRAPH : 0) : -1;
        if (rc != 0 || !nb_grad(ra) || !nb_grad(rb)) {
            if (verbose) fprintf(stderr, "    backward %d failed: %s\n", pass, nb_last_error() ? nb_last_error() : "?");
            nb_clear_error();
            wrong = 1;
            continue;
        }
        double *ga = read_all(nb_grad(ra)), *gb = read_all(nb_grad(rb));
        /* The leaf gradients are rounded to the leaves' dtypes. */
        double rta = da == NB_F32 ? 2e-6 : rtol, rtb = dbt == NB_F32 ? 2e-6 : rtol;
        int64_t bada = compare(ga, gA, gAabs, na, rta), badb = compare(gb, gB, gBabs, nbn, rtb);
        if (bada || badb) {
            wrong = 1;
            if (verbose)
                fprintf(stderr, "    backward of %s: %lld of %lld in dA, %lld of %lld in dB wrong\n",
                        pass == 1 ? "sum(W * c)" : "sum(c)", (long long)bada, (long long)na, (long long)badb,
                        (long long)nbn);
        }
        free(ga);
        free(gb);
    }
    free(got);
    free(W);
    free(C);
    free(Cabs);
    free(dA);
    free(dAabs);
    free(dB);
    free(dBabs);
    free(gA);
    free(gAabs);
    free(gB);
    free(gBabs);
done:
    if (wrong && verbose) {
        describe("a", sa, da, va);
        describe("b", sb, dbt, vb);
    }
    free(A);
    free(B);
    free(mapa);
    free(mapb);
    nb_scope_end();
    return wrong;
}

/* A matrix dimension: mostly small, sometimes past the GEMM's tile sizes, now and then 0. */
static int64_t rand_dim(void) {
    int64_t u = rnd(0, 99);
    if (u < 3) return 0;
    if (u < 15) return rnd(10, 40);
    return rnd(1, 7);
}

static void random_case(opspec *sa, nb_dtype *da, opspec *sb, nb_dtype *db) {
    memset(sa, 0, sizeof *sa);
    memset(sb, 0, sizeof *sb);
    int64_t M = rand_dim(), K = rand_dim(), N = rand_dim();
    /* rank: 1 (vector) 10%, else 2..4 */
    int ra = rnd(0, 9) == 0 ? 1 : (int)rnd(2, 4), rb = rnd(0, 9) == 0 ? 1 : (int)rnd(2, 4);
    int nba = ra >= 2 ? ra - 2 : 0, nbb = rb >= 2 ? rb - 2 : 0, nbr = nba > nbb ? nba : nbb;
    int64_t bshape[2];
    for (int i = 0; i < nbr; i++) bshape[i] = rnd(0, 49) == 0 ? 0 : rnd(1, 4);
    sa->r = ra;
    sb->r = rb;
    /* batch axes: full, size 1 (broadcast by matmul) or expanded (stride 0) */
    for (int i = 0; i < nba; i++) {
        int64_t full = bshape[i + nbr - nba];
        int mode = (int)rnd(0, 2);
        sa->L[i] = mode == 1 ? 1 : full;
        sa->expand[i] = mode == 2 && full != 1;
    }
    for (int i = 0; i < nbb; i++) {
        int64_t full = bshape[i + nbr - nbb];
        int mode = (int)rnd(0, 2);
        sb->L[i] = mode == 1 ? 1 : full;
        sb->expand[i] = mode == 2 && full != 1;
    }
    if (ra == 1) {
        sa->L[0] = K;
    } else {
        sa->L[ra - 2] = M;
        sa->L[ra - 1] = K;
    }
    if (rb == 1) {
        sb->L[0] = K;
    } else {
        sb->L[rb - 2] = K;
        sb->L[rb - 1] = N;
    }
    /* now and then a matrix axis (or a whole vector) expanded from size 1 */
    if (rnd(0, 14) == 0) sa->expand[ra - (int)rnd(1, ra >= 2 ? 2 : 1)] = true;
    if (rnd(0, 14) == 0) sb->expand[rb - (int)rnd(1, rb >= 2 ? 2 : 1)] = true;
    random_layout(sa);
    random_layout(sb);
    int d = (int)rnd(0, 9); /* f32, f64, sometimes mixed */
    *da = d < 4 ? NB_F32 : d < 8 ? NB_F64 : d == 8 ? NB_F32 : NB_F64;
    *db = d < 4 ? NB_F32 : d < 8 ? NB_F64 : d == 8 ? NB_F64 : NB_F32;
}

static void test_random_products(void) {
    th_seed(20261202);
    int wrong = 0, shown = 0;
    for (int c = 0; c < NCASES; c++) {
        opspec sa, sb;
        nb_dtype da, db;
        random_case(&sa, &da, &sb, &db);
        uint64_t state = th_rng_state;
        if (run_case(&sa, da, &sb, db, false)) {
            wrong++;
            if (shown++ < 5) { /* run it again, saying what is wrong */
                fprintf(stderr, "  case %d wrong:\n", c);
                uint64_t after = th_rng_state;
                th_rng_state = state;
                run_case(&sa, da, &sb, db, true);
                th_rng_state = after;
            }
        }
    }
    if (wrong) fprintf(stderr, "  %d of %d random products wrong\n", wrong, NCASES);
    CHECK(wrong == 0);
}

/* Every layout of a 2-D and a 3-D product by hand, with each side's batch axis size 1, full or expanded. */
static void test_all_layouts(void) {
    th_seed(7);
    int wrong = 0, total = 0;
    for (int la = 0; la < 6; la++)
        for (int lb = 0; lb < 6; lb++)
            for (int ma = 0; ma < 4; ma++)     /* a's batch: none, 1, full, expanded */
                for (int mb = 0; mb < 4; mb++) /* b's batch: none, 1, full, expanded */
                    for (int d = 0; d < 2; d++) {
                        opspec sa = {0}, sb = {0};
                        int64_t M = 5, K = 3, N = 4, B = 3;
                        sa.r = ma ? 3 : 2;
                        sb.r = mb ? 3 : 2;
                        if (ma) {
                            sa.L[0] = ma == 1 ? 1 : B;
                            sa.expand[0] = ma == 3;
                        }
                        if (mb) {
                            sb.L[0] = mb == 1 ? 1 : B;
                            sb.expand[0] = mb == 3;
                        }
                        sa.L[sa.r - 2] = M;
                        sa.L[sa.r - 1] = K;
                        sb.L[sb.r - 2] = K;
                        sb.L[sb.r - 1] = N;
                        /* layouts: contiguous, transposed, reversed axes, sliced, sliced + transposed, flipped */
                        opspec *s[2] = {&sa, &sb};
                        int lay[2] = {la, lb};
                        for (int o = 0; o < 2; o++) {
                            for (int i = 0; i < s[o]->r; i++) s[o]->q[i] = s[o]->r - 1 - i;
                            if (lay[o] == 0 || lay[o] == 3 || lay[o] == 5)
                                for (int i = 0; i < s[o]->r; i++) s[o]->q[i] = i;
                            if (lay[o] == 1 || lay[o] == 4) {
                                for (int i = 0; i < s[o]->r; i++) s[o]->q[i] = i;
                                s[o]->q[s[o]->r - 1] = s[o]->r - 2;
                                s[o]->q[s[o]->r - 2] = s[o]->r - 1;
                            }
                            s[o]->sl = lay[o] == 3 || lay[o] == 4 ? s[o]->r - 1 - o : -1;
                            s[o]->extra = 2;
                            s[o]->off = 1;
                            s[o]->flip = lay[o] == 5 ? s[o]->r - 2 : -1;
                        }
                        nb_dtype dt = d ? NB_F64 : NB_F32;
                        total++;
                        if (run_case(&sa, dt, &sb, dt, wrong < 3)) wrong++;
                    }
    if (wrong) fprintf(stderr, "  %d of %d layout combinations wrong\n", wrong, total);
    CHECK(wrong == 0);
}

/* 1-D operands: vector @ matrix, matrix @ vector, vector @ vector, vector @ batch, batch @ vector, each of
   contiguous, strided, flipped or expanded vectors. */
static void test_vectors(void) {
    th_seed(11);
    int wrong = 0;
    for (int ra = 1; ra <= 4; ra++)
        for (int rb = 1; rb <= 4; rb++) {
            if (ra > 1 && rb > 1) continue;
            for (int lay = 0; lay < 4; lay++)
                for (int d = 0; d < 2; d++) {
                    opspec sa = {0}, sb = {0};
                    int64_t K = 6, M = 3, N = 2;
                    sa.r = ra;
                    sb.r = rb;
                    for (int i = 0; i + 2 < ra; i++) sa.L[i] = 2;
                    for (int i = 0; i + 2 < rb; i++) sb.L[i] = i == 0 ? 1 : 2;
                    if (ra == 1) sa.L[0] = K;
                    else {
                        sa.L[ra - 2] = M;
                        sa.L[ra - 1] = K;
                    }
                    if (rb == 1) sb.L[0] = K;
                    else {
                        sb.L[rb - 2] = K;
                        sb.L[rb - 1] = N;
                    }
                    opspec *v = ra == 1 ? &sa : &sb, *o = ra == 1 ? &sb : &sa;
                    for (int i = 0; i < 4; i++) v->q[i] = o->q[i] = i;
                    v->sl = o->sl = v->flip = o->flip = -1;
                    if (lay == 1) { /* a gap before and after */
                        v->sl = 0;
                        v->extra = 3;
                        v->off = 2;
                    }
                    if (lay == 2) v->flip = 0;
                    if (lay == 3) v->expand[0] = true; /* one value, stride 0 */
                    nb_dtype dt = d ? NB_F64 : NB_F32;
                    if (run_case(&sa, dt, &sb, dt, wrong < 3)) wrong++;
                }
        }
    CHECK(wrong == 0);
}

/* The product from the issue: (1,1,3) @ expand((1,3,1) -> (3,3,1)) is three times the same dot product; the
   tall-product path once read a's one batch as if it held three. */
static void test_broadcast_a_expanded_b(void) {
    for (int d = 0; d < 2; d++) {
        nb_dtype dt = d ? NB_F64 : NB_F32;
        nb_scope_begin();
        nb_tensor *a = nb_from_f64(dt, 3, (int64_t[]){1, 1, 3}, (double[]){1, 2, 3});
        nb_tensor *b = nb_from_f64(dt, 3, (int64_t[]){1, 3, 1}, (double[]){-1, 0, -2});
        nb_set_requires_grad(a, true);
        nb_set_requires_grad(b, true);
        nb_tensor *c = nb_matmul(a, nb_expand(b, 3, (int64_t[]){3, 3, 1}));
        CHECK(c && nb_rank(c) == 3 && nb_shape(c)[0] == 3 && nb_shape(c)[1] == 1 && nb_shape(c)[2] == 1);
        double v[3] = {0, 0, 0};
        CHECK(nb_read_f64(c, v, 3) == 3);
        for (int i = 0; i < 3; i++) CHECK(v[i] == -7);
        CHECK(nb_backward(nb_sum(c), NULL, 0) == 0);
        double ga[3] = {0}, gb[3] = {0};
        CHECK(nb_read_f64(nb_grad(a), ga, 3) == 3);
        CHECK(nb_read_f64(nb_grad(b), gb, 3) == 3);
        CHECK(ga[0] == -3 && ga[1] == 0 && ga[2] == -6);
        CHECK(gb[0] == 3 && gb[1] == 6 && gb[2] == 9);
        nb_scope_end();
    }
}

/* nb_dense's backward with a gradient of the output past 4 MiB (a tied head's logits: x and the weight both
   needing gradients) computes dx and dW over blocks of the outputs: both against a naive sum in long double,
   x (3, 100, 24) and W (4000, 24) in f32 and f64, with a bias. */
static void test_dense_backward_blocked(void) {
    for (int d = 0; d < 2; d++) {
        const nb_dtype dt = d ? NB_F64 : NB_F32;
        enum { M = 300, IN = 24, OUT = 4000 };
        nb_scope_begin();
        th_seed(21);
        nb_tensor *x = th_rand(dt, 3, (int64_t[]){3, 100, IN}, -1, 1), *w = th_rand(dt, 2, (int64_t[]){OUT, IN}, -1, 1);
        nb_tensor *bias = th_rand(dt, 1, (int64_t[]){OUT}, -1, 1), *R = th_rand(dt, 3, (int64_t[]){3, 100, OUT}, -1, 1);
        nb_set_requires_grad(x, true), nb_set_requires_grad(w, true), nb_set_requires_grad(bias, true);
        CHECK(nb_backward(nb_sum(nb_mul(nb_dense(x, w, bias, NB_ACT_NONE), R)), NULL, 0) == 0);
        double *xv = malloc(sizeof(double) * M * IN), *wv = malloc(sizeof(double) * OUT * IN);
        double *rv = malloc(sizeof(double) * M * OUT), *gx = malloc(sizeof(double) * M * IN);
        double *gw = malloc(sizeof(double) * OUT * IN), *gb = malloc(sizeof(double) * OUT);
        nb_read_f64(x, xv, M * IN), nb_read_f64(w, wv, OUT * IN), nb_read_f64(R, rv, M * OUT);
        CHECK(nb_read_f64(nb_grad(x), gx, M * IN) == M * IN && nb_read_f64(nb_grad(w), gw, OUT * IN) == OUT * IN);
        CHECK(nb_read_f64(nb_grad(bias), gb, OUT) == OUT);
        const double tol = d ? 1e-12 : 2e-5;
        double worst = 0;
        for (int i = 0; i < M; i++)
            for (int j = 0; j < IN; j++) { /* dx = R W */
                long double sum = 0, mag = 0;
                for (int v = 0; v < OUT; v++) sum += (long double)rv[i * OUT + v] * wv[v * IN + j], mag += fabsl((long double)rv[i * OUT + v] * wv[v * IN + j]);
                worst = fmax(worst, (double)(fabsl(gx[i * IN + j] - sum) / mag));
            }
        for (int v = 0; v < OUT; v++) {
            long double sb = 0, mb = 0;
            for (int i = 0; i < M; i++) sb += rv[i * OUT + v], mb += fabsl((long double)rv[i * OUT + v]);
            worst = fmax(worst, (double)(fabsl(gb[v] - sb) / mb));
            for (int j = 0; j < IN; j++) { /* dW = R^T x */
                long double sum = 0, mag = 0;
                for (int i = 0; i < M; i++) sum += (long double)rv[i * OUT + v] * xv[i * IN + j], mag += fabsl((long double)rv[i * OUT + v] * xv[i * IN + j]);
                worst = fmax(worst, (double)(fabsl(gw[v * IN + j] - sum) / mag));
            }
        }
        if (!(worst <= tol)) printf("    dense backward, blocked, %s: worst relative error %.3g\n", d ? "f64" : "f32", worst);
        CHECK(worst <= tol);
        free(xv), free(wv), free(rv), free(gx), free(gw), free(gb);
        nb_scope_end();
    }
}

int main(void) {
    RUN(test_dense_backward_blocked);
    RUN(test_broadcast_a_expanded_b);
    RUN(test_vectors);
    RUN(test_all_layouts);
    RUN(test_random_products);
    return th_finish();
}

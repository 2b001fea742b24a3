/*
 * test_attention.c - nb_attention: gradient checks of first and second order in f64 (without a mask, with an
 * additive float mask that gets a gradient and with an i64 keep/drop mask, causal with Tq != Tk, sizes that are
 * not multiples of the CPU kernel's blocks of 32 queries and 64 keys, broadcast leading axes, strided operands),
 * the fast kernels against the reference set on those shapes, the default scale, rows that see no key, the
 * causal alignment a KV cache relies on, what the graph keeps, the errors, and every allocation failing.
 * PyTorch's values are checked by test_reference (tools/gen_reference.py, attention_*) and test_hvp; the
 * thread split by test_threads; the bounds by test_backend_ops.
 */
#include "harness.h"

#include "backend/backend.h"
#include "core/internal.h"

typedef struct {
    bool causal;
    double scale;
    int mask;           /* 0 none, 1 input 3 is an additive float mask, 2 keep (an i64 mask built from keep) */
    nb_tensor *keep;    /* i64 */
    bool q_view;        /* q given as the transpose of a stored (d, Tq) leaf's last two axes */
} acase;

static nb_tensor *attn_fn(int n, nb_tensor *const *in, void *ud) {
    const acase *c = ud;
    nb_tensor *q = c->q_view ? nb_transpose(in[0], -1, -2) : in[0];
    nb_tensor *m = c->mask == 1 ? in[3] : c->mask == 2 ? c->keep : NULL;
    (void)n;
    return nb_attention(q, in[1], in[2], m, c->causal, c->scale);
}

/* An i64 mask of this shape with about 30% zeros and every row keeping key 0. */
static nb_tensor *keep_mask(int rank, const int64_t *shape) {
    nb_tensor *u = th_rand(NB_F64, rank, shape, 0, 1);
    double *d = nb_data(u);
    int64_t cols = shape[rank - 1];
    for (int64_t i = 0; i < nb_numel(u); i++) d[i] = (i % cols == 0 || d[i] > 0.3) ? 1 : 0;
    return nb_to(u, NB_I64);
}

static void check(const char *what, acase *c, int n, nb_tensor **in, bool second) {
    nb_gradcheck_opts o = {0};
    o.second_order = second;
    nb_gradcheck_result r;
    int rc = nb_gradcheck(attn_fn, c, n, in, &o, &r);
    if (getenv("ATTN_VERBOSE")) printf("%s: rc %d worst ratio %.3g\n", what, rc, r.worst_ratio);
    CHECK(rc == 0);
    if (rc != 0)
        fprintf(stderr, "gradcheck %s: rc %d order %d input %d index %lld analytic %.10g numeric %.10g (%s)\n", what,
                rc, r.order, r.input, (long long)r.index, r.analytic, r.numeric, nb_last_error() ? nb_last_error() : "");
    nb_clear_error();
}

#define SH(...) ((int64_t[]){__VA_ARGS__})
#define RND(r, ...) th_rand(NB_F64, r, SH(__VA_ARGS__), -1.5, 1.5)

static void test_gradcheck_plain_and_causal(void) {
    nb_scope_begin();
    th_seed(11);
    acase c = {0};
    nb_tensor *in[3] = {RND(3, 2, 4, 5), RND(3, 2, 6, 5), RND(3, 2, 6, 3)};
    check("plain", &c, 3, in, true);
    c.causal = true;
    check("causal square", &c, 3, (nb_tensor *[]){RND(3, 2, 6, 4), RND(3, 2, 6, 4), RND(3, 2, 6, 2)}, true);
    c.scale = 0.3; /* Tq 3, Tk 7: query i sees keys j <= i + 4 */
    check("causal kv", &c, 3, (nb_tensor *[]){RND(3, 2, 3, 5), RND(3, 2, 7, 5), RND(3, 2, 7, 4)}, true);
    nb_scope_end();
}

static void test_gradcheck_masks(void) {
    nb_scope_begin();
    th_seed(12);
    acase c = {.mask = 1};
    check("float mask", &c, 4, (nb_tensor *[]){RND(3, 2, 3, 4), RND(3, 2, 5, 4), RND(3, 2, 5, 3), RND(2, 3, 5)},
          true);
    c.causal = true; /* a mask broadcast along the queries and the batch, with causal */
    check("float mask row causal", &c, 4,
          (nb_tensor *[]){RND(3, 2, 4, 3), RND(3, 2, 6, 3), RND(3, 2, 6, 2), RND(3, 1, 1, 6)}, true);
    c = (acase){.mask = 2, .keep = keep_mask(3, SH(2, 4, 6))};
    check("i64 mask", &c, 3, (nb_tensor *[]){RND(3, 2, 4, 3), RND(3, 2, 6, 3), RND(3, 2, 6, 2)}, true);
    c.causal = true;
    c.keep = keep_mask(2, SH(4, 6));
    check("i64 mask causal", &c, 3, (nb_tensor *[]){RND(3, 2, 4, 3), RND(3, 2, 6, 3), RND(3, 2, 6, 2)}, true);
    nb_scope_end();
}

static void test_gradcheck_blocks_and_broadcast(void) {
    nb_scope_begin();
    th_seed(13);
    acase c = {.causal = true}; /* d 5, Tq 37 and Tk 70: partial blocks of queries and of keys */
    check("blocks", &c, 3, (nb_tensor *[]){RND(3, 1, 37, 5), RND(3, 1, 70, 5), RND(3, 1, 70, 3)}, false);
    c = (acase){.mask = 1};
    check("blocks mask", &c, 4, (nb_tensor *[]){RND(2, 37, 5), RND(2, 37, 5), RND(2, 37, 2), RND(2, 37, 37)},
          false);
    c = (acase){.causal = true}; /* q (2,3,T,d) with k (1,3,T,d) and v (3,T,d) */
    check("broadcast", &c, 3, (nb_tensor *[]){RND(4, 2, 3, 4, 3), RND(4, 1, 3, 4, 3), RND(3, 3, 4, 2)}, true);
    c = (acase){.mask = 1, .q_view = true}; /* q a transposed view; a mask (2,1,Tq,Tk) broadcast over heads */
    check("views", &c, 4,
          (nb_tensor *[]){RND(4, 2, 3, 4, 5), RND(4, 2, 3, 6, 4), RND(2, 6, 3), RND(4, 2, 1, 5, 6)}, true);
    nb_scope_end();
}

/* Forward and first-order gradients of sum(W out) on the current kernel set. */
static void run_once(nb_tensor **x, int n, const acase *c, nb_tensor *W, double *res, int64_t cap) {
    nb_tensor *in[4];
    for (int i = 0; i < n; i++) {
        in[i] = nb_clone(x[i]);
        nb_set_requires_grad(in[i], true);
    }
    nb_tensor *y = attn_fn(n, in, (void *)c);
    nb_tensor *loss = nb_sum(nb_mul(y, W));
    CHECK(nb_backward(loss, NULL, 0) == 0);
    int64_t at = 0;
    nb_tensor *t[5] = {y};
    for (int i = 0; i < n; i++) t[i + 1] = nb_grad(in[i]);
    for (int i = 0; i <= n && at < cap; i++) {
        nb_tensor *f = nb_to(t[i], NB_F64);
        const double *d = nb_data(f);
        for (int64_t e = 0; e < nb_numel(f) && at < cap; e++) res[at++] = d[e];
    }
}

/* Tk 70: two key blocks, the two-pass backward; Tk 30: one block, the one-pass backward (with causal, the first 7
   queries see no key). d 5 and dv 7, then d 20 and dv 35: whole 16 x 16 tiles of the f32 transposes of k and v
   and partial ones after them. */
static void test_fast_against_reference(void) {
    nb_dtype dts[2] = {NB_F64, NB_F32};
    for (int di = 0; di < 8; di++) {
        nb_scope_begin();
        th_seed(14);
        nb_dtype dt = dts[di % 2];
        const int64_t Tk = di % 4 < 2 ? 70 : 30, d = di < 4 ? 5 : 20, dv = di < 4 ? 7 : 35;
        nb_tensor *x[4] = {nb_to(RND(3, 3, 37, d), dt), nb_to(RND(3, 3, Tk, d), dt), nb_to(RND(3, 3, Tk, dv), dt),
                           nb_to(RND(2, 37, Tk), dt)};
        acase cs[3] = {{.causal = true}, {.mask = 1, .causal = true, .scale = 0.5}, {.mask = 1}};
        for (int k = 0; k < 3; k++) {
            int n = cs[k].mask ? 4 : 3;
            nb_tensor *W = nb_to(RND(3, 3, 37, dv), dt);
            enum { CAP = 3 * 37 * 35 + 3 * 37 * 20 + 3 * 70 * (20 + 35) + 37 * 70 };
            static double a[CAP], b[CAP];
            const nbi_backend *was = nbi_default_be();
            nbi_use_backend(nbi_backend_reference());
            nb_tensor *xr[4];
            for (int i = 0; i < n; i++) {
                xr[i] = nb_full(dt, nb_rank(x[i]), nb_shape(x[i]), 0);
                nb_copy_(xr[i], x[i]);
            }
            nb_tensor *Wr = nb_full(dt, nb_rank(W), nb_shape(W), 0);
            nb_copy_(Wr, W);
            memset(a, 0, sizeof a), memset(b, 0, sizeof b);
            run_once(xr, n, &cs[k], Wr, a, CAP);
            nbi_use_backend(was);
            run_once(x, n, &cs[k], W, b, CAP);
            double worst = 0, big = 0;
            for (int e = 0; e < CAP; e++) {
                worst = fmax(worst, fabs(a[e] - b[e]));
                big = fmax(big, fabs(a[e]));
                if (isnan(a[e]) != isnan(b[e])) worst = INFINITY;
            }
            double tol = (dt == NB_F32 ? 1e-5 : 1e-13) * (big > 1 ? big : 1);
            printf("fast against reference, Tk %lld, d %lld, case %d %s: largest difference %.3g (max |ref| %.3g)\n",
                   (long long)Tk, (long long)d, k, dt == NB_F32 ? "f32" : "f64", worst, big);
            if (!(worst <= tol)) {
                CHECK(worst <= tol);
                fprintf(stderr, "case %d %s: |fast - reference| %.3g > %.3g\n", k, dt == NB_F32 ? "f32" : "f64", worst,
                        tol);
            }
        }
        nb_scope_end();
    }
}

/* q, k and v read in place through their row layouts give the bits of their contiguous copies, on the kernel set in
   use: q, k, v as (B, 1, NH, T, d) permuted slices of one (B, T, 3, NH, d) tensor (GPT's fused projection), k and
   v also a batch-broadcast slice of it, and the output's gradient arriving as a permuted view (contiguous for
   the copies); forward values and every gradient of the fused tensor. */
static void test_strided_operands(void) {
    const int perm[5] = {0, 2, 3, 1, 4};
    for (int di = 0; di < 4; di++) {
        nb_scope_begin();
        th_seed(16);
        const nb_dtype dt = di % 2 ? NB_F32 : NB_F64;
        const bool bcast = di >= 2;
        double got[2][2 * 37 * 3 * 3 * 20 + 2 * 37 * 3 * 20];
        int64_t n[2] = {0, 0};
        for (int copy = 0; copy < 2; copy++) {
            th_seed(16);
            nb_tensor *qkv = nb_to(RND(5, 2, 37, 3, 3, 20), dt), *W = nb_to(RND(5, 2, 37, 1, 3, 20), dt);
            nb_set_requires_grad(qkv, true);
            nb_tensor *t[3];
            for (int i = 0; i < 3; i++) {
                t[i] = nb_permute(nb_slice(qkv, 2, i, i + 1), perm); /* (2, 1, 3, 37, 20) */
                if (bcast && i > 0) t[i] = nb_slice(t[i], 0, 1, 2);  /* (1, 1, 3, 37, 20), broadcast over B */
                if (copy) t[i] = nb_contiguous(t[i]);
            }
            CHECK(copy || !nb_is_contiguous(t[0]));
            nb_tensor *y = nb_attention(t[0], t[1], t[2], NULL, di != 1, 0);
            /* the output's gradient: a permuted view of W in place, the same values contiguous for the copies */
            nb_tensor *L = copy ? nb_sum(nb_mul(y, nb_contiguous(nb_permute(W, perm))))
                                : nb_sum(nb_mul(nb_permute(y, (int[]){0, 3, 1, 2, 4}), W));
            CHECK(y && L && nb_backward(L, NULL, 0) == 0);
            nb_tensor *parts[2] = {nb_to(y, NB_F64), nb_to(nb_grad(qkv), NB_F64)};
            for (int p = 0; p < 2; p++) {
                CHECK(parts[p] != NULL);
                if (!parts[p]) continue;
                n[copy] += nb_read_f64(parts[p], got[copy] + n[copy], (int64_t)(sizeof got[0] / sizeof(double)) - n[copy]);
            }
        }
        CHECK(n[0] == n[1] && n[0] == 2 * 37 * 3 * 3 * 20 + 2 * 37 * 3 * 20);
        CHECK(memcmp(got[0], got[1], sizeof(double) * (size_t)n[0]) == 0);
        nb_scope_end();
    }
}

static void test_default_scale_and_special_rows(void) {
    nb_scope_begin();
    th_seed(15);
    nb_tensor *q = RND(3, 2, 3, 4), *k = RND(3, 2, 5, 4), *v = RND(3, 2, 5, 2);
    nb_tensor *a = nb_attention(q, k, v, NULL, false, 0), *b = nb_attention(q, k, v, NULL, false, 0.5);
    CHECK(a && b && memcmp(nb_data(a), nb_data(b), sizeof(double) * 12) == 0);
    /* a row whose mask is all -inf gives NaN, as PyTorch's math path; the others are untouched */
    nb_tensor *m = nb_full(NB_F64, 2, SH(3, 5), 0);
    for (int j = 0; j < 5; j++) ((double *)nb_data(m))[5 + j] = -INFINITY;
    nb_tensor *y = nb_attention(q, k, v, m, false, 0);
    const double *d = nb_data(y), *e = nb_data(a);
    CHECK(y && isnan(d[2]) && isnan(d[3]) && isnan(d[8]) && d[0] == e[0] && d[5] == e[5] && d[11] == e[11]);
    /* causal with Tq > Tk: the first Tq - Tk queries see no key */
    nb_tensor *z = nb_attention(RND(2, 6, 4), RND(2, 4, 4), RND(2, 4, 3), NULL, true, 0);
    d = nb_data(z);
    CHECK(z && isnan(d[0]) && isnan(d[5]) && isfinite(d[6]) && isfinite(d[17]));
    /* a keep mask is the additive 0 / -inf one */
    nb_tensor *keep = nb_from_f64(NB_I64, 2, SH(3, 5), (double[]){1, 0, 1, 1, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 1});
    nb_tensor *add = nb_from_f64(NB_F64, 2, SH(3, 5),
                                 (double[]){0, -INFINITY, 0, 0, -INFINITY, -INFINITY, 0, 0, 0, 0, 0, -INFINITY,
                                            -INFINITY, -INFINITY, 0});
    nb_tensor *y1 = nb_attention(q, k, v, keep, true, 0), *y2 = nb_attention(q, k, v, add, true, 0);
    CHECK(y1 && y2 && memcmp(nb_data(y1), nb_data(y2), sizeof(double) * 12) == 0);
    nb_scope_end();
}

/* causal aligns the last query with the last key: query i of a full causal run equals one query against the
   first i + 1 keys (a KV cache), and a block of the last queries against every key. */
static void test_kv_cache_alignment(void) {
    nb_scope_begin();
    th_seed(19);
    const int64_t T = 70, d = 5;
    nb_tensor *q = RND(3, 2, T, d), *k = RND(3, 2, T, d), *v = RND(3, 2, T, 3);
    nb_tensor *full = nb_attention(q, k, v, NULL, true, 0);
    const double *f = nb_data(full);
    const int64_t rows[4] = {0, 5, 63, 69};
    for (int t = 0; t < 4; t++) {
        int64_t i = rows[t];
        nb_tensor *one = nb_attention(nb_contiguous(nb_slice(q, 1, i, i + 1)), nb_contiguous(nb_slice(k, 1, 0, i + 1)),
                                      nb_contiguous(nb_slice(v, 1, 0, i + 1)), NULL, true, 0);
        const double *o = nb_data(one);
        for (int b = 0; b < 2; b++)
            for (int c = 0; c < 3; c++) CHECK_CLOSE(o[b * 3 + c], f[(b * T + i) * 3 + c], 1e-15, 1e-14);
    }
    nb_tensor *last = nb_attention(nb_contiguous(nb_slice(q, 1, T - 7, T)), k, v, NULL, true, 0);
    const double *l = nb_data(last);
    for (int b = 0; b < 2; b++)
        for (int64_t x = 0; x < 7 * 3; x++) CHECK_CLOSE(l[b * 21 + x], f[(b * T + T - 7) * 3 + x], 1e-15, 1e-14);
    nb_scope_end();
}

static void test_graph_keeps_lse_only(void) {
    nb_scope_begin();
    th_seed(16);
    nb_tensor *q = RND(3, 2, 40, 8), *k = RND(3, 2, 50, 8), *v = RND(3, 2, 50, 8);
    nb_set_requires_grad(q, true);
    nb_tensor *y = nb_attention(q, k, v, NULL, true, 0);
    CHECK(y && y->has_node && y->node.nsaved == 1);
    if (y && y->node.nsaved == 1) {
        nb_tensor *lse = y->node.saved[0];
        CHECK(lse->dtype == NB_F64 && lse->rank == 2 && lse->shape[0] == 2 && lse->shape[1] == 40);
    }
    nb_scope_end();
}

static const nbi_backend *fake_be(bool with_kernel) {
    static nbi_backend fake[2];
    fake[with_kernel] = *nbi_backend_cpu();
    fake[with_kernel].name = "fake";
    fake[with_kernel].device = (nb_device){NB_DEV_CUDA, 0};
    if (!with_kernel) fake[0].attention = NULL;
    return &fake[with_kernel];
}

static void test_errors(void) {
    nb_scope_begin();
    th_seed(17);
    nb_tensor *q = RND(3, 2, 3, 4), *k = RND(3, 2, 5, 4), *v = RND(3, 2, 5, 2);
    CHECK(!nb_attention(q, RND(3, 2, 5, 3), v, NULL, false, 0));
    CHECK_ERR("nb_attention: q (2,3,4) and k (2,5,3) differ in their last axis");
    CHECK(!nb_attention(q, k, RND(3, 2, 6, 2), NULL, false, 0));
    CHECK_ERR("differ in their number of keys");
    CHECK(!nb_attention(q, RND(3, 3, 5, 4), v, NULL, false, 0));
    CHECK_ERR("do not broadcast");
    CHECK(!nb_attention(RND(1, 4), k, v, NULL, false, 0));
    CHECK_ERR("needs rank >= 2");
    CHECK(!nb_attention(q, k, v, RND(2, 3, 4), false, 0));
    CHECK_ERR("mask (3,4) does not broadcast");
    CHECK(!nb_attention(q, k, v, RND(3, 3, 3, 5), false, 0)); /* would add batch entries */
    CHECK_ERR("does not broadcast");
    CHECK(!nb_attention(q, k, v, RND(4, 1, 2, 3, 5), false, 0)); /* would add an axis */
    CHECK_ERR("does not broadcast");
    CHECK(!nb_attention(q, nb_to(k, NB_F32), v, NULL, false, 0));
    CHECK_ERR("must share one dtype");
    CHECK(!nb_attention(nb_to(q, NB_I64), k, v, NULL, false, 0));
    CHECK_ERR("nb_attention");
    CHECK(!nb_attention(q, k, v, NULL, false, NAN));
    CHECK_ERR("scale nan must be finite");
    CHECK(!nb_attention(RND(3, 2, 0, 4), k, v, NULL, false, 0));
    CHECK_ERR("need nonzero sizes");
    CHECK(!nb_attention(NULL, k, v, NULL, false, 0));
    nb_clear_error();
    /* a mask of f32 with f64 operands is converted */
    CHECK(nb_attention(q, k, v, nb_to(RND(2, 3, 5), NB_F32), false, 0) != NULL);
    /* devices */
    nb_tensor *kd = nbi_empty_on("test", fake_be(true), NB_F64, 3, SH(2, 5, 4));
    nbi_k_fill(kd, 0.5);
    CHECK(!nb_attention(q, kd, v, NULL, false, 0));
    CHECK_ERR("nb_attention: operands are on different devices");
    nb_tensor *md = nbi_empty_on("test", fake_be(true), NB_F64, 2, SH(3, 5));
    nbi_k_fill(md, 0);
    CHECK(!nb_attention(q, k, v, md, false, 0));
    CHECK_ERR("different devices");
    nb_tensor *qn = nbi_empty_on("test", fake_be(false), NB_F64, 3, SH(2, 3, 4));
    nb_tensor *kn = nbi_empty_on("test", fake_be(false), NB_F64, 3, SH(2, 5, 4));
    nb_tensor *vn = nbi_empty_on("test", fake_be(false), NB_F64, 3, SH(2, 5, 2));
    CHECK(!nb_attention(qn, kn, vn, NULL, false, 0));
    CHECK_ERR("has no kernel 'attention'");
    nb_scope_end();
}

/* Every allocation of a forward and backward failing in turn: an error, nothing leaked, and the next try works. */
static void test_out_of_memory(void) {
    th_seed(18);
    double worked = 0;
    for (long at = 1; at < 400; at++) {
        nb_scope_begin();
        nb_tensor *q = RND(4, 2, 1, 40, 5), *k = RND(3, 3, 70, 5), *v = RND(3, 3, 70, 3), *m = RND(2, 40, 70);
        nb_set_requires_grad(q, true), nb_set_requires_grad(k, true), nb_set_requires_grad(m, true);
        th_inject(at);
        nb_tensor *y = nb_attention(q, k, v, m, true, 0);
        int rc = y ? nb_backward(nb_sum(y), NULL, 0) : -1;
        long used = th_alloc_count;
        th_stop_injecting();
        if (rc != 0) CHECK(nb_last_error() != NULL);
        nb_clear_error();
        nb_scope_end();
        CHECK(nb_memory_in_use() == 0);
        if (rc == 0 && used < at) { /* no allocation failed: every one has been tried */
            worked = 1;
            break;
        }
    }
    CHECK(worked);
}

int main(void) {
    RUN(test_gradcheck_plain_and_causal);
    RUN(test_gradcheck_masks);
    RUN(test_gradcheck_blocks_and_broadcast);
    RUN(test_fast_against_reference);
    RUN(test_strided_operands);
    RUN(test_default_scale_and_special_rows);
    RUN(test_kv_cache_alignment);
    RUN(test_graph_keeps_lse_only);
    RUN(test_errors);
    RUN(test_out_of_memory);
    return th_finish();
}

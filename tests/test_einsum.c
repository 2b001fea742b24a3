/* test_einsum.c - nb_einsum against the direct ops, a brute-force oracle, gradient checks, the greedy path,
   broadcasting and malformed specs. */
#include "harness.h"

NB_API nb_tensor *nb_einsum(const char *spec, int n, nb_tensor *const *operands);
NB_API int64_t nb_einsum_path(const char *spec, int n, nb_tensor *const *operands, char *buf, size_t cap);

#define S(...) ((const int64_t[]){__VA_ARGS__})
#define R64(...) th_rand(NB_F64, (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), S(__VA_ARGS__), -1, 1)

static nb_tensor *ein1(const char *spec, nb_tensor *a) { return nb_einsum(spec, 1, (nb_tensor *[]){a}); }
static nb_tensor *ein2(const char *spec, nb_tensor *a, nb_tensor *b) {
    return nb_einsum(spec, 2, (nb_tensor *[]){a, b});
}

/* Same shape and values within tol. */
static int same(nb_tensor *x, nb_tensor *y, double tol) {
    if (!x || !y) return 0;
    if (nb_rank(x) != nb_rank(y)) return 0;
    for (int i = 0; i < nb_rank(x); i++)
        if (nb_shape(x)[i] != nb_shape(y)[i]) return 0;
    int64_t n = nb_numel(x);
    double *a = malloc(sizeof(double) * (size_t)(n + 1)), *b = malloc(sizeof(double) * (size_t)(n + 1));
    nb_read_f64(x, a, n);
    nb_read_f64(y, b, n);
    int ok = 1;
    for (int64_t i = 0; i < n; i++)
        if (!(fabs(a[i] - b[i]) <= tol * (1 + fabs(b[i])))) ok = 0;
    free(a);
    free(b);
    return ok;
}
#define CHECK_SAME(x, y) CHECK(same((x), (y), 1e-10))

/* ---- a brute-force oracle: loops over every combination of label values (letters only, explicit output) ---- */
static nb_tensor *oracle(const char *spec, int n, nb_tensor *const *ops) {
    int64_t size[128] = {0};
    const char *terms[27];
    int tlen[27];
    const char *s = spec;
    for (int i = 0; i < n; i++) {
        terms[i] = s;
        tlen[i] = (int)strcspn(s, ",-");
        for (int a = 0; a < tlen[i]; a++) {
            int64_t d = nb_shape(ops[i])[a];
            if (d != 1 || !size[(int)s[a]]) size[(int)s[a]] = d;
        }
        s += tlen[i] + 1;
    }
    const char *out = strstr(spec, "->") + 2;
    int nout = (int)strlen(out);
    char labs[64];
    int nl = 0;
    for (int c = 0; c < 128; c++)
        if (size[c]) labs[nl++] = (char)c;
    int64_t oshape[8], onum = 1, total = 1;
    for (int a = 0; a < nout; a++) onum *= (oshape[a] = size[(int)out[a]]);
    for (int k = 0; k < nl; k++) total *= size[(int)labs[k]];
    double *res = calloc((size_t)(onum + 1), sizeof(double));
    int64_t val[128] = {0};
    for (int64_t it = 0; it < total; it++) {
        int64_t r = it;
        for (int k = nl - 1; k >= 0; k--) {
            val[(int)labs[k]] = r % size[(int)labs[k]];
            r /= size[(int)labs[k]];
        }
        double prod = 1;
        for (int i = 0; i < n; i++) {
            int64_t idx[8];
            for (int a = 0; a < tlen[i]; a++) idx[a] = nb_shape(ops[i])[a] == 1 ? 0 : val[(int)terms[i][a]];
            prod *= nb_get(ops[i], idx);
        }
        int64_t o = 0;
        for (int a = 0; a < nout; a++) o = o * oshape[a] + val[(int)out[a]];
        res[o] += prod;
    }
    nb_tensor *t = nb_from_f64(NB_F64, nout, oshape, res);
    free(res);
    return t;
}

static void test_table(void) {
    nb_scope_begin();
    nb_tensor *A = R64(3, 4), *B = R64(4, 5), *C = R64(3, 4), *Q = R64(4, 4), *u = R64(4), *v = R64(5);
    CHECK_SAME(ein1("ij->ji", A), nb_transpose(A, 0, 1));
    /* trace */
    double tr = 0;
    for (int64_t i = 0; i < 4; i++) tr += nb_get(Q, S(i, i));
    CHECK_CLOSE(nb_item(ein1("ii->", Q)), tr, 1e-12, 1e-12);
    CHECK(nb_rank(ein1("ii->", Q)) == 0);
    CHECK_SAME(ein2("ij,jk->ik", A, B), nb_matmul(A, B));
    CHECK_SAME(ein2("ij,ij->ij", A, C), nb_mul(A, C));
    CHECK_SAME(ein2("i,j->ij", u, v), nb_mul(nb_reshape(u, 2, S(4, 1)), v));
    nb_tensor *w = R64(4);
    CHECK_SAME(ein2("i,i->", u, w), nb_sum(nb_mul(u, w)));
    CHECK_SAME(ein2("i,i->", u, u), nb_sum(nb_mul(u, u)));
    CHECK_SAME(ein1("ij->", A), nb_sum(A));
    CHECK_SAME(ein1("ij->i", A), nb_sum_axes(A, 1, (int[]){1}, false));
    CHECK_SAME(ein1("ij->j", A), nb_sum_axes(A, 1, (int[]){0}, false));
    double dg[4];
    for (int64_t i = 0; i < 4; i++) dg[i] = nb_get(Q, S(i, i));
    CHECK_SAME(ein1("ii->i", Q), nb_from_f64(NB_F64, 1, S(4), dg));
    CHECK_SAME(ein1("ij->ij", A), A);
    /* spaces are ignored; upper case letters are labels */
    CHECK_SAME(ein2(" iJ , Jk -> ik ", A, B), nb_matmul(A, B));
    nb_scope_end();
}

static void test_batched(void) {
    nb_scope_begin();
    nb_tensor *A = R64(2, 3, 4), *B = R64(2, 4, 5);
    CHECK_SAME(ein2("bij,bjk->bik", A, B), nb_matmul(A, B));
    CHECK_SAME(ein2("bij,bjk->bki", A, B), nb_permute(nb_matmul(A, B), (int[]){0, 2, 1}));
    nb_tensor *q = R64(2, 3, 5, 4), *k = R64(2, 3, 6, 4);
    CHECK_SAME(ein2("bhqd,bhkd->bhqk", q, k), nb_matmul(q, nb_transpose(k, -1, -2)));
    /* ellipsis with broadcast batch axes: (2,1,3,4) x (5,4,2) -> (2,5,3,2) as matmul */
    nb_tensor *x = R64(2, 1, 3, 4), *y = R64(5, 4, 2);
    nb_tensor *r = ein2("...ij,...jk->...ik", x, y);
    CHECK(nb_rank(r) == 4 && nb_shape(r)[1] == 5);
    CHECK_SAME(r, nb_matmul(x, y));
    CHECK_SAME(ein2("...ij,...jk", x, y), nb_matmul(x, y)); /* implicit: ellipsis first */
    CHECK_SAME(ein1("...ij->...ji", x), nb_transpose(x, -1, -2));
    CHECK_SAME(ein1("i...->...", A), nb_sum_axes(A, 1, (int[]){0}, false));
    CHECK_SAME(ein1("...->", A), nb_sum(A)); /* ellipsis absent from the output is summed */
    nb_scope_end();
}

static void test_implicit(void) {
    nb_scope_begin();
    nb_tensor *A = R64(3, 4), *B = R64(4, 5), *Q = R64(4, 4);
    CHECK_SAME(ein2("ij,jk", A, B), nb_matmul(A, B));
    CHECK_SAME(ein1("ba", A), nb_transpose(A, 0, 1)); /* sorted: "ab" */
    CHECK_SAME(ein1("ii", Q), ein1("ii->", Q));
    CHECK_SAME(ein1("ij", A), A);
    CHECK_SAME(ein2("ij,ij", A, A), nb_sum(nb_mul(A, A)));
    nb_scope_end();
}

static void test_chains(void) {
    nb_scope_begin();
    nb_tensor *A = R64(3, 4), *B = R64(4, 5), *C = R64(5, 6), *D = R64(6, 2);
    CHECK_SAME(nb_einsum("ij,jk,kl->il", 3, (nb_tensor *[]){A, B, C}), nb_matmul(nb_matmul(A, B), C));
    CHECK_SAME(nb_einsum("ab,bc,cd,de->ae", 4, (nb_tensor *[]){A, B, C, D}),
               nb_matmul(nb_matmul(nb_matmul(A, B), C), D));
    CHECK_SAME(nb_einsum("ab,bc,cd,de->ea", 4, (nb_tensor *[]){A, B, C, D}),
               nb_transpose(nb_matmul(A, nb_matmul(B, nb_matmul(C, D))), 0, 1));
    CHECK_SAME(nb_einsum("ab,bc,cd,de", 4, (nb_tensor *[]){A, B, C, D}),
               nb_matmul(nb_matmul(nb_matmul(A, B), C), D));
    nb_scope_end();
}

static void test_oracle(void) {
    nb_scope_begin();
    struct {
        const char *spec;
        int n;
        int rank[4];
        int64_t shape[4][4];
    } cases[] = {
        {"iij,jk,k->i", 3, {3, 2, 1}, {{3, 3, 4}, {4, 2}, {2}}},
        {"ijk,kji->", 2, {3, 3}, {{2, 3, 4}, {4, 3, 2}}},
        {"abc,cd,de,ea->b", 4, {3, 2, 2, 2}, {{2, 3, 4}, {4, 5}, {5, 2}, {2, 2}}},
        {"ij,ij,ij->", 3, {2, 2, 2}, {{3, 4}, {3, 4}, {3, 4}}},
        {"i,i,i->i", 3, {1, 1, 1}, {{5}, {5}, {5}}},
        {"ab,ab->ba", 2, {2, 2}, {{3, 2}, {3, 2}}},
        {"iii->i", 1, {3}, {{3, 3, 3}}},
        {"iji->j", 1, {3}, {{3, 2, 3}}},
        {"ijk,jl->kli", 2, {3, 2}, {{2, 3, 4}, {3, 2}}},
        {"ij,jk,ki->", 3, {2, 2, 2}, {{3, 4}, {4, 5}, {5, 3}}},
        {"ab,c->abc", 2, {2, 1}, {{2, 3}, {4}}},
        {"ab,->ab", 2, {2, 0}, {{2, 3}, {0}}},
        {"ij,ij->ij", 2, {2, 2}, {{3, 4}, {1, 4}}}, /* size-1 axis broadcasts */
        {"ij,jk->ik", 2, {2, 2}, {{3, 4}, {1, 5}}}, /* a broadcast contracted axis */
        {"ij,jk->ijk", 2, {2, 2}, {{3, 1}, {4, 5}}},
        {"abij,bcjk,ck->ai", 3, {4, 4, 2}, {{2, 3, 2, 2}, {3, 2, 2, 3}, {2, 3}}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        nb_tensor *ops[4];
        for (int i = 0; i < cases[c].n; i++)
            ops[i] = th_rand(NB_F64, cases[c].rank[i], cases[c].shape[i], -1, 1);
        nb_tensor *got = nb_einsum(cases[c].spec, cases[c].n, ops), *want = oracle(cases[c].spec, cases[c].n, ops);
        if (!same(got, want, 1e-10)) {
            th_cur_failed++;
            fprintf(stderr, "oracle mismatch for \"%s\" (%s)\n", cases[c].spec,
                    nb_last_error() ? nb_last_error() : "no error");
            nb_clear_error();
        }
    }
    nb_scope_end();
}

static void test_broadcast_size1(void) {
    nb_scope_begin();
    nb_tensor *A = R64(3, 4), *b = R64(1, 4), *c = R64(3, 1);
    CHECK_SAME(ein2("ij,ij->ij", A, b), nb_mul(A, b));
    CHECK_SAME(ein2("ij,ij->ij", b, A), nb_mul(A, b));
    CHECK_SAME(ein2("ij,ij->ij", b, c), nb_mul(b, c));
    CHECK_SAME(ein2("ij,ij->", A, c), nb_sum(nb_mul(A, c)));
    nb_tensor *x = R64(1, 3, 4), *y = R64(2, 4, 5);
    CHECK_SAME(ein2("bij,bjk->bik", x, y), nb_matmul(x, y));
    /* both operands size 1: the label keeps size 1 */
    nb_tensor *r = ein2("ij,ij->ij", R64(1, 4), R64(1, 4));
    CHECK(r && nb_shape(r)[0] == 1);
    nb_scope_end();
}

static void test_dtypes_and_empty(void) {
    nb_scope_begin();
    nb_tensor *A = th_rand(NB_F32, 2, S(3, 4), -1, 1), *B = th_rand(NB_F32, 2, S(4, 5), -1, 1);
    nb_tensor *r = ein2("ij,jk->ik", A, B);
    CHECK(r && nb_dtype_of(r) == NB_F32);
    CHECK(same(r, nb_matmul(A, B), 1e-5));
    CHECK(nb_dtype_of(ein1("ii->i", th_rand(NB_F32, 2, S(3, 3), -1, 1))) == NB_F32);
    /* an empty contracted axis gives zeros; an empty kept axis gives an empty result */
    nb_tensor *z = ein2("ij,jk->ik", nb_full(NB_F64, 2, S(3, 0), 1), nb_full(NB_F64, 2, S(0, 2), 1));
    CHECK(z && nb_numel(z) == 6);
    CHECK(z && nb_item(nb_sum(nb_abs(z))) == 0);
    nb_tensor *e = ein2("ij,jk->ik", nb_full(NB_F64, 2, S(0, 3), 1), R64(3, 2));
    CHECK(e && nb_numel(e) == 0 && nb_shape(e)[0] == 0);
    nb_scope_end();
}

static void test_path(void) {
    nb_scope_begin();
    char buf[64];
    /* A chain 2x100 . 100x100 . 100x100 . 100x2: the greedy order is (0,1) then 2 then 3, also left to right. */
    nb_tensor *a = R64(2, 100), *b = R64(100, 100), *c = R64(100, 100), *d = R64(100, 2);
    int64_t f = nb_einsum_path("ab,bc,cd,de->ae", 4, (nb_tensor *[]){a, b, c, d}, buf, sizeof buf);
    int64_t ltr = 2 * (2 * 100 * 100 + 2 * 100 * 100 + 2 * 100 * 2);
    CHECK(f > 0 && f <= ltr);
    CHECK(strcmp(buf, "(((0,1),2),3)") == 0);
    /* A chain where left to right is costly: greedy starts from the thin end. */
    nb_tensor *a2 = R64(100, 100);
    int64_t g = nb_einsum_path("ab,bc,cd,de->ae", 4, (nb_tensor *[]){a2, b, c, d}, buf, sizeof buf);
    int64_t ltr2 = 2 * (100 * 100 * 100 + 100 * 100 * 100 + 100 * 100 * 2);
    CHECK(g == 2 * 3 * (100 * 100 * 2));
    CHECK(g * 20 < ltr2);
    CHECK(strcmp(buf, "(0,(1,(2,3)))") == 0);
    CHECK(same(nb_einsum("ab,bc,cd,de->ae", 4, (nb_tensor *[]){a2, b, c, d}),
               nb_matmul(nb_matmul(nb_matmul(a2, b), c), d), 1e-9));
    /* one operand: no contraction */
    CHECK(nb_einsum_path("ii->", 1, (nb_tensor *[]){b}, buf, sizeof buf) == 0 && strcmp(buf, "0") == 0);
    CHECK(nb_einsum_path("ij,jk->ik", 2, (nb_tensor *[]){a, b}, NULL, 0) == 2 * 2 * 100 * 100);
    /* a short buffer is truncated, still terminated */
    char tiny[4];
    CHECK(nb_einsum_path("ab,bc,cd,de->ae", 4, (nb_tensor *[]){a, b, c, d}, tiny, sizeof tiny) == f);
    CHECK(strlen(tiny) == 3);
    nb_scope_end();
}

/* The greedy order never makes an intermediate above NB_MAX_RANK when another pair fits, and
   nb_einsum_path succeeds exactly when nb_einsum does. With e of size 2 and every other label of size 1,
   contracting operands 0 and 2 first makes the smallest result, but of rank 9 (b l c W k d j z i). */
static void test_path_rank_limit(void) {
    nb_scope_begin();
    nb_tensor *a = nb_full(NB_F64, 5, (int64_t[]){2, 1, 1, 1, 1}, 1.0);
    nb_tensor *b = nb_full(NB_F64, 1, (int64_t[]){1}, 1.0);
    nb_tensor *c = nb_full(NB_F64, 6, (int64_t[]){1, 1, 1, 2, 1, 1}, 1.0);
    nb_tensor *ops[3] = {a, b, c};
    char buf[64];
    int64_t f = nb_einsum_path("eblcW,c,kdjezi", 3, ops, buf, sizeof buf);
    nb_tensor *r = nb_einsum("eblcW,c,kdjezi", 3, ops);
    CHECK(f >= 0 && r != NULL);
    CHECK(strcmp(buf, "((0,2),1)") != 0);
    /* the output: W b d i j k l z, every element the sum over e of 1 * 1 */
    CHECK(r && nb_rank(r) == 8 && nb_numel(r) == 1 && nb_item(r) == 2);
    nb_scope_end();
}

/* ---- gradients ---- */
static nb_tensor *ein_fn(int n, nb_tensor *const *in, void *ud) { return nb_einsum((const char *)ud, n, in); }

static void gc(const char *spec, int n, nb_tensor *const *in) {
    nb_gradcheck_opts o = {.second_order = true};
    nb_gradcheck_result res;
    int rc = nb_gradcheck(ein_fn, (void *)spec, n, in, &o, &res);
    if (rc != 0) {
        th_cur_failed++;
        fprintf(stderr, "gradcheck \"%s\": rc %d order %d input %d analytic %g numeric %g (%s)\n", spec, rc,
                res.order, res.input, res.analytic, res.numeric, nb_last_error() ? nb_last_error() : "");
        nb_clear_error();
    }
}

static void test_gradients(void) {
    nb_scope_begin();
    gc("ij,jk->ik", 2, (nb_tensor *[]){R64(3, 4), R64(4, 2)});
    gc("ii->", 1, (nb_tensor *[]){R64(4, 4)});
    gc("ii->i", 1, (nb_tensor *[]){R64(4, 4)});
    gc("i,j->ij", 2, (nb_tensor *[]){R64(3), R64(4)});
    gc("bhqd,bhkd->bhqk", 2, (nb_tensor *[]){R64(2, 2, 3, 4), R64(2, 2, 5, 4)});
    gc("ij,jk,kl->il", 3, (nb_tensor *[]){R64(2, 3), R64(3, 4), R64(4, 2)});
    gc("i,i->", 2, (nb_tensor *[]){R64(5), R64(5)});
    gc("...ij,...jk->...ik", 2, (nb_tensor *[]){R64(2, 1, 2, 3), R64(3, 3, 2)});
    gc("ij,ij->ij", 2, (nb_tensor *[]){R64(3, 4), R64(1, 4)});
    gc("iij,jk,k->i", 3, (nb_tensor *[]){R64(3, 3, 2), R64(2, 3), R64(3)});
    /* the same tensor twice (L2 norm squared) */
    nb_tensor *u = R64(5);
    gc("i,i->", 2, (nb_tensor *[]){u, u});
    /* a backward through einsum accumulates into leaves */
    nb_tensor *A = R64(3, 4), *B = R64(4, 2);
    nb_set_requires_grad(A, true);
    CHECK(nb_backward(nb_sum(ein2("ij,jk->ik", A, B)), NULL, 0) == 0);
    CHECK_SAME(nb_grad(A), nb_expand(nb_reshape(nb_sum_axes(B, 1, (int[]){1}, false), 2, S(1, 4)), 2, S(3, 4)));
    nb_scope_end();
}

static void test_errors(void) {
    nb_scope_begin();
    nb_tensor *A = R64(3, 4), *B = R64(4, 5), *Q = R64(4, 4);
    CHECK(!ein2("ij,j%->i", A, B));
    CHECK_ERR("invalid character '%'");
    CHECK(!ein2("ij,j1->i", A, B));
    CHECK_ERR("\"ij,j1->i\"");
    CHECK(!ein2("ij,jk,kl->il", A, B));
    CHECK_ERR("3 input terms but 2 operands");
    CHECK(!ein1("ijk->i", A));
    CHECK_ERR("operand 0 has rank 2 (shape (3,4)) but its subscripts \"ijk\" name 3 axes");
    CHECK(!ein1("i...jk->i", A));
    CHECK_ERR("at least 3 axes");
    CHECK(!ein2("ij,kj->ik", A, B));
    CHECK_ERR("index 'j' has size 4 in operand 0 but 5 in operand 1");
    CHECK(!ein1("ii->i", A));
    CHECK_ERR("repeats index 'i' with sizes 3 and 4");
    CHECK(!ein2("ij,jk->iz", A, B));
    CHECK_ERR("output index 'z' does not appear in any input");
    CHECK(!ein2("ij,jk->ii", A, B));
    CHECK_ERR("output index 'i' is repeated");
    CHECK(!ein2("ij,jk->i-k", A, B));
    CHECK_ERR("not part of one \"->\"");
    CHECK(!ein2("ij,jk->i>k", A, B));
    CHECK_ERR("\"ij,jk->i>k\"");
    CHECK(!ein1("ij->i->j", A));
    CHECK_ERR("more than one \"->\"");
    CHECK(!ein1("i..j->i", A));
    CHECK_ERR("not part of \"...\"");
    CHECK(!ein1("...i...->i", A));
    CHECK_ERR("more than one \"...\"");
    CHECK(!ein1("ij->i,j", A));
    CHECK_ERR("output term contains ','");
    CHECK(!nb_einsum(NULL, 1, (nb_tensor *[]){A}));
    CHECK_ERR("spec is NULL");
    CHECK(!nb_einsum("ij->", 0, NULL));
    CHECK_ERR("0 operands");
    CHECK(!nb_einsum("ij->", 27, (nb_tensor *[27]){A}));
    CHECK_ERR("27 operands");
    CHECK(!ein2("ij,jk->ik", A, NULL));
    CHECK_ERR("nb_einsum: argument 2 is NULL");
    CHECK(!ein1("i->i", nb_new(NB_I64, 1, S(3), NULL)));
    CHECK_ERR("i64");
    /* a NULL operand keeps an earlier message */
    CHECK(!ein2("ij,jk->ik", A, nb_matmul(A, A)));
    CHECK_ERR("nb_matmul");
    /* an output of rank 9 */
    nb_tensor *v = R64(1);
    nb_tensor *nine[9] = {v, v, v, v, v, v, v, v, v};
    CHECK(!nb_einsum("a,b,c,d,e,f,g,h,i->abcdefghi", 9, nine));
    CHECK_ERR("rank 9");
    CHECK(nb_einsum("a,b,c,d,e,f,g,h,i->", 9, nine) != NULL);
    /* path errors */
    char buf[16] = "x";
    CHECK(nb_einsum_path("ij,kj->ik", 2, (nb_tensor *[]){A, B}, buf, sizeof buf) == -1);
    CHECK(buf[0] == 0);
    CHECK_ERR("nb_einsum_path: \"ij,kj->ik\": index 'j'");
    CHECK(nb_einsum_path("ij,jk->ik", 2, (nb_tensor *[]){A, Q}, NULL, 0) == 2 * 3 * 4 * 4);
    nb_scope_end();
}

/* Outside every scope the result is the caller's and nothing else is left behind; inside, the scope frees all. */
static void test_memory(void) {
    int64_t base = nb_memory_in_use();
    nb_tensor *A = R64(3, 4), *B = R64(4, 5), *C = R64(5, 2);
    nb_set_requires_grad(A, true);
    nb_tensor *r = nb_einsum("ij,jk,kl->il", 3, (nb_tensor *[]){A, B, C});
    CHECK(r != NULL && nb_scope_depth() == 0);
    nb_free(A);
    nb_free(B);
    nb_free(C);
    CHECK(nb_memory_in_use() > base); /* r and its graph are alive */
    nb_free(r);
    CHECK(nb_memory_in_use() == base);
    nb_scope_begin();
    int64_t before = nb_memory_in_use();
    nb_scope_begin();
    nb_tensor *x = R64(3, 3), *y = R64(3, 3);
    nb_set_requires_grad(x, true);
    CHECK(nb_backward(nb_sum(nb_einsum("ii,ij->j", 2, (nb_tensor *[]){x, y})), NULL, NB_CREATE_GRAPH) == 0);
    nb_scope_end();
    CHECK(nb_memory_in_use() == before);
    nb_scope_end();
}

int main(void) {
    th_seed(7);
    RUN(test_table);
    RUN(test_batched);
    RUN(test_implicit);
    RUN(test_chains);
    RUN(test_oracle);
    RUN(test_broadcast_size1);
    RUN(test_dtypes_and_empty);
    RUN(test_path);
    RUN(test_path_rank_limit);
    RUN(test_gradients);
    RUN(test_errors);
    RUN(test_memory);
    return th_finish();
}

/*
 * test_gemm.c - checks every kernel the CPU supports (reference, AVX2, AVX-512) against the plain-C oracle
 * nbi_gemm_*_ref, for f32 and f64: sizes that are not multiples of the register tile, m = 1, n = 1, k = 0/1,
 * transposed and strided operands (rsa > k, ldc > n, negative strides), accumulate on and off, sizes that
 * cross the cache blocks, bit-identical reruns, untouched padding in C, and allocation failure.
 *
 * Products large enough to be split across threads give the same bits on 1, 2, 3 and 4 threads, and every
 * layout of A and B gives the same bits.
 * Allocation failures are injected through nb_set_allocator. Exits nonzero on failure; the last line
 * printed is "N passed, N failed".
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gemm.h"
#include "nabla.h"

static void *failing_alloc(size_t n, void *ud)
{
    (void)n;
    (void)ud;
    return NULL;
}

static void plain_free(void *p, void *ud)
{
    (void)ud;
    free(p);
}

static int n_passed, n_failed;

static void check(int ok, const char *what)
{
    if (ok) {
        n_passed++;
    } else {
        n_failed++;
        fprintf(stderr, "FAIL: %s\n", what);
    }
}

/* Deterministic generator (xorshift64*), values in [-1, 1). */
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rng_next(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1Dull;
}
static double rng_uniform(void)
{
    return (double)(rng_next() >> 11) * (2.0 / 9007199254740992.0) - 1.0;
}

/* One layout of a multiply: operand storage is a contiguous block; element strides derive from the flags. */
typedef struct {
    int64_t m, n, k;
    int ta, tb;           /* A / B stored transposed (column-major) */
    int64_t pa, pb, pc;   /* extra elements per stored row (leading-dimension padding) */
    int neg_b;            /* walk B's rows backwards (negative row stride) */
    int acc;              /* accumulate */
} gcase;

#define SENTINEL 12345.0

/* Test body for one element type. T: element type, S: suffix, EPS: machine epsilon. */
#define DEFINE_RUN_CASE(T, S, EPS)                                                                             \
    static int run_case_##S(const gcase *g, int kernel)                                                        \
    {                                                                                                          \
        const int64_t m = g->m, n = g->n, k = g->k;                                                            \
        /* A: m x k. Row-major: rsa = k + pa, csa = 1. Transposed: stored k x m, rsa = 1, csa = m + pa. */     \
        const int64_t lda = (g->ta ? m : k) + g->pa, arows = g->ta ? k : m;                                    \
        const int64_t ldb = (g->tb ? k : n) + g->pb, brows = g->tb ? n : k;                                    \
        const int64_t ldc = n + g->pc;                                                                         \
        const size_t asz = (size_t)(arows * lda) + 1, bsz = (size_t)(brows * ldb) + 1;                         \
        const size_t csz = (size_t)(m * ldc) + 1;                                                              \
        T *a = malloc(asz * sizeof(T)), *b = malloc(bsz * sizeof(T));                                          \
        T *aa = malloc(asz * sizeof(T)), *ba = malloc(bsz * sizeof(T));                                        \
        T *c0 = malloc(csz * sizeof(T)), *c = malloc(csz * sizeof(T)), *c2 = malloc(csz * sizeof(T));          \
        T *cr = malloc(csz * sizeof(T)), *bound = malloc(csz * sizeof(T));                                     \
        int ok = a && b && aa && ba && c0 && c && c2 && cr && bound;                                           \
        if (!ok)                                                                                               \
            goto done;                                                                                         \
        for (size_t i = 0; i < asz; ++i) {                                                                     \
            a[i] = (T)rng_uniform();                                                                           \
            aa[i] = (T)fabs((double)a[i]);                                                                     \
        }                                                                                                      \
        for (size_t i = 0; i < bsz; ++i) {                                                                     \
            b[i] = (T)rng_uniform();                                                                           \
            ba[i] = (T)fabs((double)b[i]);                                                                     \
        }                                                                                                      \
        for (size_t i = 0; i < csz; ++i)                                                                       \
            c0[i] = (T)SENTINEL;                                                                               \
        for (int64_t i = 0; i < m; ++i)                                                                        \
            for (int64_t j = 0; j < n; ++j)                                                                    \
                c0[i * ldc + j] = g->acc ? (T)rng_uniform() : (T)NAN; /* NaN: must not be read */              \
        const int64_t rsa = g->ta ? 1 : lda, csa = g->ta ? lda : 1;                                            \
        int64_t rsb = g->tb ? 1 : ldb, csb = g->tb ? ldb : 1;                                                  \
        int64_t boff = 0;                                                                                      \
        if (g->neg_b && k > 0) { /* logical row p of B is stored row k-1-p */                                  \
            boff = (k - 1) * rsb;                                                                              \
            rsb = -rsb;                                                                                        \
        }                                                                                                      \
        memcpy(c, c0, csz * sizeof(T));                                                                        \
        memcpy(c2, c0, csz * sizeof(T));                                                                       \
        memcpy(cr, c0, csz * sizeof(T));                                                                       \
        nbi_gemm_set_kernel(1);                                                                                \
        nbi_gemm_##S##_ref(m, n, k, a, rsa, csa, b + boff, rsb, csb, cr, ldc, g->acc);                         \
        /* error bound: (k + 2) eps (|A| |B| + |C0|) */                                                         \
        for (size_t i = 0; i < csz; ++i)                                                                       \
            bound[i] = (T)fabs((double)c0[i]);                                                                 \
        nbi_gemm_##S##_ref(m, n, k, aa, rsa, csa, ba + boff, rsb, csb, bound, ldc, g->acc);                    \
        nbi_gemm_set_kernel(kernel);                                                                           \
        const int r1 = nbi_gemm_##S(m, n, k, a, rsa, csa, b + boff, rsb, csb, c, ldc, g->acc);                 \
        const int r2 = nbi_gemm_##S(m, n, k, a, rsa, csa, b + boff, rsb, csb, c2, ldc, g->acc);                \
        ok = r1 == 0 && r2 == 0;                                                                               \
        if (ok && memcmp(c, c2, csz * sizeof(T)) != 0) {                                                       \
            fprintf(stderr, "  rerun not bit-identical\n");                                                    \
            ok = 0;                                                                                            \
        }                                                                                                      \
        for (int64_t i = 0; ok && i < m; ++i)                                                                  \
            for (int64_t j = 0; ok && j < ldc; ++j) {                                                          \
                const int64_t x = i * ldc + j;                                                                 \
                if (j >= n) {                                                                                  \
                    if (c[x] != (T)SENTINEL) {                                                                 \
                        fprintf(stderr, "  padding C[%lld,%lld] overwritten\n", (long long)i, (long long)j);   \
                        ok = 0;                                                                                \
                    }                                                                                          \
                    continue;                                                                                  \
                }                                                                                              \
                const double tol = (double)(k + 2) * (EPS) * (double)bound[x] + 1e-30;                         \
                const double err = fabs((double)c[x] - (double)cr[x]);                                         \
                if (!(err <= tol)) {                                                                           \
                    fprintf(stderr, "  C[%lld,%lld] = %.17g, expected %.17g (tol %.3g)\n", (long long)i,       \
                            (long long)j, (double)c[x], (double)cr[x], tol);                                   \
                    ok = 0;                                                                                    \
                }                                                                                              \
            }                                                                                                  \
        if (ok && c[csz - 1] != (T)SENTINEL) {                                                                 \
            fprintf(stderr, "  C overrun\n");                                                                  \
            ok = 0;                                                                                            \
        }                                                                                                      \
    done:                                                                                                      \
        free(a);                                                                                               \
        free(b);                                                                                               \
        free(aa);                                                                                              \
        free(ba);                                                                                              \
        free(c0);                                                                                              \
        free(c);                                                                                               \
        free(c2);                                                                                              \
        free(cr);                                                                                              \
        free(bound);                                                                                           \
        return ok;                                                                                             \
    }

DEFINE_RUN_CASE(float, f32, FLT_EPSILON)
DEFINE_RUN_CASE(double, f64, DBL_EPSILON)

static const char *kernel_names[] = {"auto", "reference", "avx2", "avx512"};

static void run(const gcase *g, int kernel)
{
    char what[256];
    for (int t = 0; t < 2; ++t) {
        const int ok = t == 0 ? run_case_f32(g, kernel) : run_case_f64(g, kernel);
        snprintf(what, sizeof what, "%s %s m=%lld n=%lld k=%lld ta=%d tb=%d pad=%lld/%lld/%lld neg_b=%d acc=%d",
                 kernel_names[kernel], t == 0 ? "f32" : "f64", (long long)g->m, (long long)g->n, (long long)g->k,
                 g->ta, g->tb, (long long)g->pa, (long long)g->pb, (long long)g->pc, g->neg_b, g->acc);
        check(ok, what);
    }
}

/* A case with a layout drawn from the generator. */
static gcase random_layout(int64_t m, int64_t n, int64_t k)
{
    gcase g = {m, n, k, 0, 0, 0, 0, 0, 0, 0};
    const uint64_t r = rng_next() >> 20;
    g.ta = (int)(r & 1);
    g.tb = (int)((r >> 1) & 1);
    g.acc = (int)((r >> 2) & 1);
    g.pa = (r >> 3) & 1 ? (int64_t)((r >> 8) % 7) + 1 : 0;
    g.pb = (r >> 4) & 1 ? (int64_t)((r >> 11) % 7) + 1 : 0;
    g.pc = (r >> 5) & 1 ? (int64_t)((r >> 14) % 7) + 1 : 0;
    g.neg_b = ((r >> 6) & 7) == 0;
    return g;
}

static void test_kernel(int kernel)
{
    static const int64_t small[] = {1, 2, 3, 7, 13, 31, 33, 65};
    static const int64_t sizes[] = {1, 2, 3, 7, 13, 31, 33, 65, 100, 129, 257};
    const int ns = (int)(sizeof small / sizeof small[0]);
    const int nz = (int)(sizeof sizes / sizeof sizes[0]);

    /* every (m, n, k) over the small sizes, layout drawn at random */
    for (int x = 0; x < ns; ++x)
        for (int y = 0; y < ns; ++y)
            for (int z = 0; z < ns; ++z) {
                const gcase g = random_layout(small[x], small[y], small[z]);
                run(&g, kernel);
            }

    /* the larger sizes in a rotation, every layout flag combination for a few of them */
    for (int x = 0; x < nz; ++x) {
        const gcase g = random_layout(sizes[x], sizes[(x + 4) % nz], sizes[(x + 7) % nz]);
        run(&g, kernel);
    }
    for (int f = 0; f < 16; ++f) {
        gcase g = {100, 129, 257, f & 1, (f >> 1) & 1, (f >> 2) & 1 ? 5 : 0, (f >> 2) & 1 ? 3 : 0,
                   (f >> 2) & 1 ? 9 : 0, 0, (f >> 3) & 1};
        run(&g, kernel);
        g.m = 257;
        g.n = 65;
        g.k = 31;
        run(&g, kernel);
    }

    /* matrix-vector shapes (direct path) in every layout */
    for (int f = 0; f < 32; ++f) {
        const int64_t big = 700;
        gcase g = {1, big, 513, f & 1, (f >> 1) & 1, (f >> 2) & 1 ? 3 : 0, (f >> 2) & 1 ? 2 : 0,
                   (f >> 2) & 1 ? 5 : 0, (f >> 4) & 1, (f >> 3) & 1};
        run(&g, kernel);
        g.m = big;
        g.n = 1;
        run(&g, kernel);
        g.m = 1;
        g.n = 1;
        run(&g, kernel);
    }

    /* k = 0 and k = 1 (accumulate off writes zeros; on leaves C) */
    for (int acc = 0; acc < 2; ++acc)
        for (int64_t k = 0; k < 2; ++k) {
            gcase g = {33, 65, k, 0, 1, 2, 0, 3, 0, acc};
            run(&g, kernel);
            g.m = 300;
            g.n = 200;
            run(&g, kernel);
        }

    /* crossing the cache blocks: K > KC (several K blocks, beta switching), M > MC, N > NC */
    {
        gcase g = {150, 70, 900, 0, 0, 1, 2, 3, 0, 0};
        run(&g, kernel);
        g.acc = 1;
        g.ta = 1;
        run(&g, kernel);
        gcase h = {13, 4200, 20, 1, 0, 0, 0, 4, 0, 1};
        run(&h, kernel);
        gcase w = {300, 301, 300, 0, 1, 0, 0, 0, 0, 0};
        run(&w, kernel);
        /* x W^T with a W over 2 MiB (AVX-512 f32 runs it transposed, on one thread only): edges off the 16 x 16
           blocks, padded C */
        const int threads = nb_num_threads();
        nb_set_num_threads(1);
        for (int acc = 0; acc < 2; ++acc) {
            gcase t = {100, 2100, 300, 0, 1, 0, 0, 3, 0, acc};
            run(&t, kernel);
            /* several k blocks, each added into the transposed tiles of C; and a narrow C the same way */
            gcase t2 = {100, 700, 900, 0, 1, 0, 0, 3, 0, acc};
            run(&t2, kernel);
            gcase nc = {250, 7, 900, 0, 0, 0, 0, 2, 0, acc};
            run(&nc, kernel);
        }
        nb_set_num_threads(threads);
    }
}

/* Allocation failure: -1 and C unchanged. */
static void test_alloc_failure(void)
{
    const int64_t n = 96;
    float *a = calloc((size_t)(n * n), sizeof(float)), *b = calloc((size_t)(n * n), sizeof(float));
    float *c = malloc((size_t)(n * n) * sizeof(float));
    if (!a || !b || !c) {
        check(0, "alloc_failure: test allocation");
        goto done;
    }
    for (int64_t i = 0; i < n * n; ++i) {
        a[i] = 1.0f;
        b[i] = 1.0f;
        c[i] = 7.0f;
    }
    nbi_gemm_set_kernel(0);
    nb_set_allocator(failing_alloc, plain_free, NULL); /* also drops the cached packing buffers */
    const int r = nbi_gemm_f32(n, n, n, a, n, 1, b, n, 1, c, n, false);
    nb_set_allocator(NULL, NULL, NULL);
    int unchanged = 1;
    for (int64_t i = 0; i < n * n; ++i)
        unchanged &= c[i] == 7.0f;
    check(r == -1 && unchanged, "alloc_failure: returns -1 and leaves C unchanged");
    const int r2 = nbi_gemm_f32(n, n, n, a, n, 1, b, n, 1, c, n, false);
    check(r2 == 0 && c[0] == (float)n && c[n * n - 1] == (float)n, "alloc_failure: recovers");
done:
    free(a);
    free(b);
    free(c);
}

/* The same product on 1..4 threads: bit-identical, and equal to the oracle within rounding. */
static void test_threads(void)
{
    /* {20000, 10, 256}, {9000, 13, 900} are narrow: on one thread they run as C^T = B^T A^T (AVX-512 f32),
       split as they are; the last three are matrix-vector products (direct loops) */
    static const int64_t shapes[][3] = {{300, 200, 150}, {1000, 20, 500}, {37, 999, 64},  {513, 257, 129},
                                        {20000, 10, 256}, {9000, 13, 900}, {1, 5003, 700}, {5003, 1, 700},
                                        {1, 2563, 1000}};
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; ++si) {
        const int64_t m = shapes[si][0], n = shapes[si][1], k = shapes[si][2];
        for (int trans = 0; trans < 3; ++trans) {
            float *a = malloc(sizeof(float) * (size_t)(m * k)), *b = malloc(sizeof(float) * (size_t)(k * n));
            float *c1 = malloc(sizeof(float) * (size_t)(m * n)), *ct = malloc(sizeof(float) * (size_t)(m * n));
            double *d1 = malloc(sizeof(double) * (size_t)(m * n)), *dt = malloc(sizeof(double) * (size_t)(m * n));
            double *ad = malloc(sizeof(double) * (size_t)(m * k)), *bd = malloc(sizeof(double) * (size_t)(k * n));
            if (!a || !b || !c1 || !ct || !d1 || !dt || !ad || !bd) {
                check(0, "threads: test allocation");
                goto next;
            }
            for (int64_t i = 0; i < m * k; ++i)
                ad[i] = a[i] = (float)((i * 7919 % 2003) - 1001) / 1001.0f;
            for (int64_t i = 0; i < k * n; ++i)
                bd[i] = b[i] = (float)((i * 104729 % 1999) - 999) / 999.0f;
            /* trans 1: A read as its transpose (A stored k x m); 2: B read as its transpose (B stored n x k) */
            const int64_t rsa = trans == 1 ? 1 : k, csa = trans == 1 ? m : 1;
            const int64_t rsb = trans == 2 ? 1 : n, csb = trans == 2 ? k : 1;
            nb_set_num_threads(1);
            int ok = nbi_gemm_f32(m, n, k, a, rsa, csa, b, rsb, csb, c1, n, false) == 0;
            ok &= nbi_gemm_f64(m, n, k, ad, rsa, csa, bd, rsb, csb, d1, n, false) == 0;
            for (int t = 2; t <= 4; ++t) {
                nb_set_num_threads(t);
                ok &= nbi_gemm_f32(m, n, k, a, rsa, csa, b, rsb, csb, ct, n, false) == 0;
                ok &= nbi_gemm_f64(m, n, k, ad, rsa, csa, bd, rsb, csb, dt, n, false) == 0;
                ok &= memcmp(c1, ct, sizeof(float) * (size_t)(m * n)) == 0;
                ok &= memcmp(d1, dt, sizeof(double) * (size_t)(m * n)) == 0;
            }
            nbi_gemm_f64_ref(m, n, k, ad, rsa, csa, bd, rsb, csb, dt, n, false);
            for (int64_t i = 0; i < m * n; ++i)
                ok &= fabs(d1[i] - dt[i]) <= 1e-12 * (double)k;
            char what[96];
            snprintf(what, sizeof what, "threads: %lldx%lldx%lld%s bit-identical on 1-4 threads", (long long)m,
                     (long long)n, (long long)k, trans == 1 ? " (A transposed)" : trans == 2 ? " (B transposed)" : "");
            check(ok, what);
        next:
            free(a), free(b), free(c1), free(ct), free(d1), free(dt), free(ad), free(bd);
        }
    }
    nb_set_num_threads(0);
}

/* Every layout of A and B (each stored by rows or by columns, which picks packed, in-place or column-strided
   reads) gives the same bits: each element is one chain of multiply-adds over k in order whatever the path. */
static void test_layouts(int kernel)
{
    /* On one thread, where every path is taken (a split product skips the transposed x W^T and reads a
       narrower block of A). {144, 70, 1000}: row-major A too wide to read in place (a block of it spans over
       512 KiB), so packed; {50, 1010, 600}: the same for a row-major B, every panel copied, the last of 18
       columns; {100, 700, 900} (as x W^T) and {250, 7, 900} (narrow) run as C^T = B^T A^T over 3 k blocks. */
    static const int64_t shapes[][3] = {{256, 784, 128}, {100, 70, 300}, {128, 256, 784},
                                        {44, 40, 9},     {144, 70, 1000}, {50, 1010, 600},
                                        {100, 700, 900}, {250, 7, 900}};
    const int threads = nb_num_threads();
    nb_set_num_threads(1);
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; ++si) {
        const int64_t m = shapes[si][0], n = shapes[si][1], k = shapes[si][2];
        float *a = malloc(sizeof(float) * (size_t)(m * k)), *at = malloc(sizeof(float) * (size_t)(m * k));
        float *b = malloc(sizeof(float) * (size_t)(k * n)), *bt = malloc(sizeof(float) * (size_t)(k * n));
        float *c0 = malloc(sizeof(float) * (size_t)(m * n)), *c = malloc(sizeof(float) * (size_t)(m * n));
        double *ad = malloc(sizeof(double) * (size_t)(m * k)), *adt = malloc(sizeof(double) * (size_t)(m * k));
        double *bd = malloc(sizeof(double) * (size_t)(k * n)), *bdt = malloc(sizeof(double) * (size_t)(k * n));
        double *d0 = malloc(sizeof(double) * (size_t)(m * n)), *d = malloc(sizeof(double) * (size_t)(m * n));
        int ok = a && at && b && bt && c0 && c && ad && adt && bd && bdt && d0 && d;
        if (ok) {
            for (int64_t i = 0; i < m; ++i)
                for (int64_t p = 0; p < k; ++p)
                    at[p * m + i] = a[i * k + p] = (float)(adt[p * m + i] = ad[i * k + p] = rng_uniform());
            for (int64_t p = 0; p < k; ++p)
                for (int64_t j = 0; j < n; ++j)
                    bt[j * k + p] = b[p * n + j] = (float)(bdt[j * k + p] = bd[p * n + j] = rng_uniform());
            nbi_gemm_set_kernel(kernel);
            ok = nbi_gemm_f32(m, n, k, a, k, 1, b, n, 1, c0, n, false) == 0 &&
                 nbi_gemm_f64(m, n, k, ad, k, 1, bd, n, 1, d0, n, false) == 0;
            for (int f = 1; ok && f < 4; ++f) {
                const int ta = f & 1, tb = f >> 1;
                ok = nbi_gemm_f32(m, n, k, ta ? at : a, ta ? 1 : k, ta ? m : 1, tb ? bt : b, tb ? 1 : n,
                                  tb ? k : 1, c, n, false) == 0 &&
                     nbi_gemm_f64(m, n, k, ta ? adt : ad, ta ? 1 : k, ta ? m : 1, tb ? bdt : bd, tb ? 1 : n,
                                  tb ? k : 1, d, n, false) == 0 &&
                     memcmp(c, c0, sizeof(float) * (size_t)(m * n)) == 0 &&
                     memcmp(d, d0, sizeof(double) * (size_t)(m * n)) == 0;
            }
        }
        char what[96];
        snprintf(what, sizeof what, "%s: %lldx%lldx%lld same bits in all four layouts", kernel_names[kernel],
                 (long long)m, (long long)n, (long long)k);
        check(ok, what);
        free(a), free(at), free(b), free(bt), free(c0), free(c), free(ad), free(adt), free(bd), free(bdt);
        free(d0), free(d);
    }
    nb_set_num_threads(threads);
}

/* Batched shapes through nb_matmul (each batch one product; broadcast batches read in place, a
   transposed b consumed by the packing) against the reference kernel batch by batch. */
static void test_batched(int kernel)
{
    static const int64_t sa[][4] = {{3, 37, 29}, {2, 1, 13, 70}, {4, 65, 33}};
    static const int64_t sb[][4] = {{29, 41}, {3, 70, 9}, {4, 40, 33}}; /* the last one is used transposed */
    static const int ra[] = {3, 4, 3}, rb[] = {2, 3, 3};
    for (int c = 0; c < 3; ++c) {
        nb_scope_begin();
        int64_t na = 1, nb = 1;
        for (int i = 0; i < ra[c]; ++i)
            na *= sa[c][i];
        for (int i = 0; i < rb[c]; ++i)
            nb *= sb[c][i];
        float *va = malloc(sizeof(float) * (size_t)na), *vb = malloc(sizeof(float) * (size_t)nb);
        for (int64_t i = 0; i < na; ++i)
            va[i] = (float)((i * 7919) % 201) / 100.0f - 1.0f;
        for (int64_t i = 0; i < nb; ++i)
            vb[i] = (float)((i * 104729) % 199) / 100.0f - 1.0f;
        nb_tensor *a = nb_new(NB_F32, ra[c], sa[c], va), *b = nb_new(NB_F32, rb[c], sb[c], vb);
        if (c == 2)
            b = nb_transpose(b, 1, 2); /* (4, 33, 40) */
        nbi_gemm_set_kernel(kernel);
        nb_tensor *r = nb_matmul(a, b);
        nbi_gemm_set_kernel(NBI_GEMM_REF);
        int ok = r != NULL;
        /* the same batches one by one with the reference kernel */
        const int64_t m = sa[c][ra[c] - 2], k = sa[c][ra[c] - 1], n = nb_shape(b)[nb_rank(b) - 1];
        const int64_t batches = ok ? nb_numel(r) / (m * n) : 0;
        float *want = malloc(sizeof(float) * (size_t)(m * n));
        for (int64_t t = 0; ok && t < batches; ++t) {
            /* batch index t of the result maps to a's and b's batches by broadcasting */
            int64_t ia = c == 1 ? t / 3 : t, ib = c == 0 ? 0 : c == 1 ? t % 3 : t;
            const float *pa = va + ia * m * k;
            if (c == 2)
                nbi_gemm_f32_ref(m, n, k, pa, k, 1, vb + ib * n * k, 1, k, want, n, false);
            else
                nbi_gemm_f32_ref(m, n, k, pa, k, 1, vb + ib * k * n, n, 1, want, n, false);
            const float *got = (const float *)nb_data(r) + t * m * n;
            for (int64_t i = 0; i < m * n; ++i)
                if (fabsf(got[i] - want[i]) > 1e-5f * (1.0f + fabsf(want[i])))
                    ok = 0;
        }
        char what[96];
        snprintf(what, sizeof what, "batched matmul case %d, kernel %s", c, kernel_names[kernel]);
        check(ok, what);
        free(want);
        free(va);
        free(vb);
        nb_scope_end();
    }
}

int main(void)
{
    const int best = nbi_gemm_set_kernel(0);
    printf("best kernel: %s\n", nbi_gemm_kernel_name());
    check(nbi_gemm_set_kernel(1) == 1 && strcmp(nbi_gemm_kernel_name(), "reference") == 0, "select reference");
    check(nbi_gemm_set_kernel(99) == best, "bad request falls back to best");
    for (int kernel = 1; kernel <= 3; ++kernel) {
        if (nbi_gemm_set_kernel(kernel) != kernel) {
            printf("kernel %s: not supported here, skipped\n", kernel_names[kernel]);
            check(nbi_gemm_set_kernel(kernel) == best, "unsupported request falls back to best");
            continue;
        }
        const int before = n_failed;
        test_kernel(kernel);
        test_layouts(kernel);
        test_batched(kernel);
        nbi_gemm_set_kernel(kernel);
        printf("kernel %s: %s\n", kernel_names[kernel], n_failed == before ? "ok" : "FAILED");
    }
    test_alloc_failure();
    nbi_gemm_set_kernel(0);
    test_threads();
    nb_set_allocator(NULL, NULL, NULL); /* joins the workers, freeing their buffers */
    nbi_gemm_release_buffers();
    printf("%d passed, %d failed\n", n_passed, n_failed);
    return n_failed != 0;
}

/*
 * kernels.c - CPU kernels for elementwise maths, copies and reductions.
 *
 * Every kernel runs through one strided iterator: the operands' byte strides
 * are laid over a common shape, size-1 axes are dropped and axes that are
 * contiguous across all operands are merged, so most calls collapse to a
 * single flat row. The iterator calls a row function once per innermost row,
 * never per element; row functions switch on the op once and then run a plain
 * loop, with a separate branch for unit strides that the compiler vectorises.
 */
#include <math.h>
#include <string.h>

#include "../../core/internal.h"
#include "cpu.h"
#include "threads.h"
#include "vmath.h"
#include "../gelu_tanh.h"

#define MAXOPS 4

/* The hottest row functions are also compiled for AVX2 and AVX-512 and picked
   when the program loads (GCC's function multiversioning, on x86-64 Linux).
   Without FMA contraction (see CMakeLists.txt) every variant rounds the same. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && !defined(NBI_NO_CLONES)
#define NBI_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define NBI_CLONES
#endif

typedef void (*row_fn)(int64_t n, char **p, const int64_t *s, void *ctx);

typedef struct {
    int rank, nops;
    int64_t shape[NB_MAX_RANK];
    int64_t st[MAXOPS][NB_MAX_RANK]; /* bytes */
} iter_t;

static void iter_collapse(iter_t *it) {
    int r = 0;
    for (int i = 0; i < it->rank; i++) {
        if (it->shape[i] == 1) continue;
        if (r > 0) {
            bool merge = true;
            for (int k = 0; k < it->nops; k++)
                if (it->st[k][r - 1] != it->st[k][i] * it->shape[i]) merge = false;
            if (merge) {
                it->shape[r - 1] *= it->shape[i];
                for (int k = 0; k < it->nops; k++) it->st[k][r - 1] = it->st[k][i];
                continue;
            }
        }
        it->shape[r] = it->shape[i];
        for (int k = 0; k < it->nops; k++) it->st[k][r] = it->st[k][i];
        r++;
    }
    it->rank = r;
}

static void iter_run(iter_t *it, char **base, row_fn fn, void *ctx) {
    for (int i = 0; i < it->rank; i++)
        if (it->shape[i] == 0) return;
    iter_collapse(it);
    char *p[MAXOPS];
    int64_t s[MAXOPS];
    for (int k = 0; k < it->nops; k++) p[k] = base[k];
    if (it->rank == 0) {
        for (int k = 0; k < it->nops; k++) s[k] = 0;
        fn(1, p, s, ctx);
        return;
    }
    int in = it->rank - 1;
    int64_t n = it->shape[in], idx[NB_MAX_RANK] = {0};
    for (int k = 0; k < it->nops; k++) s[k] = it->st[k][in];
    for (;;) {
        fn(n, p, s, ctx);
        int d = in - 1;
        for (; d >= 0; d--) {
            if (++idx[d] < it->shape[d]) {
                for (int k = 0; k < it->nops; k++) p[k] += it->st[k][d];
                break;
            }
            for (int k = 0; k < it->nops; k++) p[k] -= it->st[k][d] * (it->shape[d] - 1);
            idx[d] = 0;
        }
        if (d < 0) return;
    }
}

/* Elementwise kernels (each output element written once, from its own inputs)
   split the collapsed iteration across threads: a single row into ranges, or
   the outermost axis into slabs. Any cut gives the same bits. */
#define PAR_MIN_ELEMS (1 << 15) /* elements per thread, at least */

typedef struct {
    iter_t it;
    char *base[MAXOPS];
    row_fn fn;
    void *ctx;
} par_job;

static int par_part(void *vj, int64_t lo, int64_t hi) {
    const par_job *j = vj;
    iter_t sub = j->it;
    char *base[MAXOPS];
    for (int k = 0; k < sub.nops; k++) base[k] = j->base[k] + lo * sub.st[k][0];
    sub.shape[0] = hi - lo;
    iter_run(&sub, base, j->fn, j->ctx);
    return 0;
}

static void iter_run_par(iter_t *it, char **base, row_fn fn, void *ctx) {
    int64_t total = 1;
    for (int i = 0; i < it->rank; i++) total *= it->shape[i];
    if (total < 2 * PAR_MIN_ELEMS || nbi_parallel_parts(total, PAR_MIN_ELEMS) < 2) {
        iter_run(it, base, fn, ctx);
        return;
    }
    iter_collapse(it);
    if (it->rank == 0) {
        iter_run(it, base, fn, ctx);
        return;
    }
    par_job j = {*it, {0}, fn, ctx};
    for (int k = 0; k < it->nops; k++) j.base[k] = base[k];
    /* a slab of the outer axis must hold enough elements; a single row is cut into ranges */
    int64_t inner = total / it->shape[0];
    int64_t grain = (PAR_MIN_ELEMS + inner - 1) / inner;
    nbi_parallel_for(it->shape[0], grain, par_part, &j);
}

/* Lay operand t (broadcast) over the iterator's shape as operand k. */
static void iter_set(iter_t *it, int k, const nbi_arr *t) {
    int off = it->rank - t->rank;
    int64_t es = (int64_t)nbi_dsize(t->dtype);
    for (int i = 0; i < it->rank; i++) {
        int j = i - off;
        it->st[k][i] = (j < 0 || (t->shape[j] == 1 && it->shape[i] != 1)) ? 0 : t->strides[j] * es;
    }
}

static bool arr_contig(const nbi_arr *t) { return nbi_geom_contig(t->rank, t->shape, t->strides, t->numel); }

static void iter_init(iter_t *it, const nbi_arr *out, int nops) {
    it->rank = out->rank;
    it->nops = nops;
    memcpy(it->shape, out->shape, sizeof(int64_t) * (size_t)out->rank);
    int64_t es = (int64_t)nbi_dsize(out->dtype);
    for (int i = 0; i < out->rank; i++) it->st[0][i] = out->strides[i] * es;
}

/* ------------------------------------------------------------- unary ---- */

typedef struct {
    nbi_unop op;
    double c;
} unary_ctx;

#define UNARY_LOOP(T, EXPR)                                                         \
    do {                                                                            \
        if (so == (int64_t)sizeof(T) && sa == (int64_t)sizeof(T)) {                 \
            T *o = (T *)po;                                                         \
            const T *a = (const T *)pa;                                             \
            for (int64_t i = 0; i < n; i++) {                                       \
                T x = a[i];                                                         \
                o[i] = (EXPR);                                                      \
            }                                                                       \
        } else {                                                                    \
            for (int64_t i = 0; i < n; i++) {                                       \
                T x = *(const T *)(pa + i * sa);                                    \
                *(T *)(po + i * so) = (EXPR);                                       \
            }                                                                       \
        }                                                                           \
    } while (0)

/* GELU in double, x Phi(x) = x/2 (1 + erf(z)) with z = x / sqrt(2), as x/2 erfc(-z): 1 + erf(z) cancels for
   negative x (all digits lost below x = -8.3), erfc does not. erfc is steep there, so the rounding error d of
   z is put back to first order, erfc(-(z + d)) = erfc(-z) + 2/sqrt(pi) exp(-z^2) d: within 0.5 ulp
   throughout, the same function as the reference set's. (f32 GELU runs on vmath's nbi_vgeluf.) */
static double gelu_f64(double x) {
    const double s_hi = 0.7071067811865476, s_lo = -4.833646656726457e-17; /* 1/sqrt(2) = s_hi + s_lo */
    double z = x * s_hi, d = isfinite(x) ? fma(x, s_hi, -z) + x * s_lo : 0;
    return 0.5 * x * (erfc(-z) + 1.1283791670955126 * exp(-z * z) * d);
}

/* SFX is f for float maths and empty for double. */
#define DEF_UNARY(NAME, T, SFX)                                                               \
    static void NAME(int64_t n, char **p, const int64_t *s, void *vctx) {                     \
        const unary_ctx *ctx = vctx;                                                          \
        char *po = p[0];                                                                      \
        const char *pa = p[1];                                                                \
        int64_t so = s[0], sa = s[1];                                                         \
        const T c = (T)ctx->c;                                                                \
        switch (ctx->op) {                                                                    \
        case NBI_U_NEG: UNARY_LOOP(T, -x); break;                                             \
        case NBI_U_EXP: UNARY_LOOP(T, exp##SFX(x)); break;                                    \
        case NBI_U_LOG: UNARY_LOOP(T, log##SFX(x)); break;                                    \
        case NBI_U_SQRT: UNARY_LOOP(T, sqrt##SFX(x)); break;                                  \
        case NBI_U_ABS: UNARY_LOOP(T, fabs##SFX(x)); break;                                   \
        case NBI_U_SIN: UNARY_LOOP(T, sin##SFX(x)); break;                                    \
        case NBI_U_COS: UNARY_LOOP(T, cos##SFX(x)); break;                                    \
        case NBI_U_TANH: UNARY_LOOP(T, tanh##SFX(x)); break;                                  \
        case NBI_U_SIGMOID: UNARY_LOOP(T, (T)1 / ((T)1 + exp##SFX(-x))); break;               \
        case NBI_U_RELU: UNARY_LOOP(T, x < 0 ? (T)0 : x); break;                              \
        case NBI_U_LEAKY: UNARY_LOOP(T, x > 0 ? x : c * x); break;                            \
        case NBI_U_GELU: UNARY_LOOP(T, (T)gelu_f64((double)x)); break;                        \
        case NBI_U_ERF: UNARY_LOOP(T, erf##SFX(x)); break;                                    \
        case NBI_U_SIGN: UNARY_LOOP(T, x != x ? x : (T)((x > 0) - (x < 0))); break;           \
        case NBI_U_SCALE: UNARY_LOOP(T, c * x); break;                                        \
        case NBI_U_ADDC: UNARY_LOOP(T, x + c); break;                                         \
        case NBI_U_COPY: UNARY_LOOP(T, x); break;                                             \
        case NBI_U_LOG1P: UNARY_LOOP(T, log1p##SFX(x)); break;                                \
        case NBI_U_EXPM1: UNARY_LOOP(T, expm1##SFX(x)); break;                                \
        case NBI_U_SOFTPLUS: /* PyTorch's threshold 20: linear above it */                    \
            UNARY_LOOP(T, x > (T)20 ? x : log1p##SFX(exp##SFX(x)));                           \
            break;                                                                            \
        case NBI_U_GELU_TANH: UNARY_LOOP(T, (T)nbi_gelu_tanh_d((double)x)); break;            \
        case NBI_U_POWC:                                                                      \
            if (c == 2)                                                                       \
                UNARY_LOOP(T, x * x);                                                         \
            else if (c == 3)                                                                  \
                UNARY_LOOP(T, x * x * x);                                                     \
            else if (c == 1)                                                                  \
                UNARY_LOOP(T, x);                                                             \
            else if (c == 0.5)                                                                \
                UNARY_LOOP(T, sqrt##SFX(x));                                                  \
            else if (c == -1)                                                                 \
                UNARY_LOOP(T, (T)1 / x);                                                      \
            else if (c == -2)                                                                 \
                UNARY_LOOP(T, (T)1 / (x * x));                                               \
            else if (c == -0.5)                                                               \
                UNARY_LOOP(T, (T)1 / sqrt##SFX(x));                                           \
            else                                                                              \
                UNARY_LOOP(T, pow##SFX(x, c));                                                \
            break;                                                                            \
        }                                                                                     \
    }

DEF_UNARY(unary_f32_libm, float, f)
DEF_UNARY(unary_f64, double, )

/* f32 exp, log, tanh, sigmoid, erf and GELU run on vmath's row functions (within 0.5001 ulp of the correctly
   rounded result, the same bits on every instruction set); a strided row goes through a small buffer. The
   rest of f32, and all of f64, use the C library (unary_f32_libm, unary_f64). */
static void unary_f32(int64_t n, char **p, const int64_t *s, void *vctx) {
    const unary_ctx *ctx = vctx;
    void (*fn)(float *, const float *, int64_t);
    switch (ctx->op) {
    case NBI_U_EXP: fn = nbi_vexpf; break;
    case NBI_U_LOG: fn = nbi_vlogf; break;
    case NBI_U_TANH: fn = nbi_vtanhf; break;
    case NBI_U_SIGMOID: fn = nbi_vsigmoidf; break;
    case NBI_U_ERF: fn = nbi_verff; break;
    case NBI_U_GELU: fn = nbi_vgeluf; break;
    case NBI_U_GELU_TANH: fn = nbi_vgelu_tanhf; break;
    default: unary_f32_libm(n, p, s, vctx); return;
    }
    if (s[0] == (int64_t)sizeof(float) && s[1] == (int64_t)sizeof(float)) {
        fn((float *)(void *)p[0], (const float *)(const void *)p[1], n);
        return;
    }
    enum { CHUNK = 256 };
    float buf[CHUNK];
    for (int64_t i0 = 0; i0 < n; i0 += CHUNK) {
        const int64_t m = n - i0 < CHUNK ? n - i0 : CHUNK;
        for (int64_t i = 0; i < m; i++) buf[i] = *(const float *)(const void *)(p[1] + (i0 + i) * s[1]);
        fn(buf, buf, m);
        for (int64_t i = 0; i < m; i++) *(float *)(void *)(p[0] + (i0 + i) * s[0]) = buf[i];
    }
}

static void unary_i64(int64_t n, char **p, const int64_t *s, void *vctx) {
    (void)vctx; /* only copies reach here */
    for (int64_t i = 0; i < n; i++) *(int64_t *)(p[0] + i * s[0]) = *(const int64_t *)(p[1] + i * s[1]);
}

void nbi_cpu_unary(nbi_unop op, const nbi_arr *out, const nbi_arr *a, double c) {
    unary_ctx ctx = {op, c};
    row_fn fn = out->dtype == NB_F32 ? unary_f32 : out->dtype == NB_F64 ? unary_f64 : unary_i64;
    if (out->numel == 1 && a->numel == 1 && out->dtype == a->dtype) { /* a scalar: no iterator */
        char *p[2] = {out->data, a->data};
        int64_t st[2] = {0, 0};
        fn(1, p, st, &ctx);
        return;
    }
    iter_t it;
    iter_init(&it, out, 2);
    iter_set(&it, 1, a);
    char *base[2] = {out->data, a->data};
    iter_run_par(&it, base, fn, &ctx);
}

/* ------------------------------------------------------------ binary ---- */

#define BINARY_LOOP(T, EXPR)                                                        \
    do {                                                                            \
        if (so == (int64_t)sizeof(T) && sa == (int64_t)sizeof(T) &&                 \
            sb == (int64_t)sizeof(T)) {                                             \
            T *o = (T *)po;                                                         \
            const T *A = (const T *)pa, *B = (const T *)pb;                         \
            for (int64_t i = 0; i < n; i++) {                                       \
                T x = A[i], y = B[i];                                               \
                o[i] = (EXPR);                                                      \
            }                                                                       \
        } else if (so == (int64_t)sizeof(T) && sa == (int64_t)sizeof(T) && sb == 0) { \
            T *o = (T *)po;                                                         \
            const T *A = (const T *)pa;                                             \
            const T y = *(const T *)pb;                                             \
            for (int64_t i = 0; i < n; i++) {                                       \
                T x = A[i];                                                         \
                o[i] = (EXPR);                                                      \
            }                                                                       \
        } else {                                                                    \
            for (int64_t i = 0; i < n; i++) {                                       \
                T x = *(const T *)(pa + i * sa), y = *(const T *)(pb + i * sb);     \
                *(T *)(po + i * so) = (EXPR);                                       \
            }                                                                       \
        }                                                                           \
    } while (0)

/* o (n) = g gelu_tanh'(x) for contiguous f32 rows: e = e^(-2u) by vmath's nbi_vexpf_fast (within 1.07 ulp), then
   s = 1 / (1 + e), 1 - s = e s (one division) and g (s + 2 x u' s (1 - s)) in double, rounded once; within a
   few f32 ulp of nbi_gelu_tanh_grad_d (the reference's), not its bits. At e = inf, s = 0 and e s is NaN: the
   s == 0 case below takes it, as it takes the reference's 1 - s = 1 / (1 + 1/e) = 1 there. */
/* o (n) = g gelu_tanh'(x) from e = e^(-2u) (the double formula above, rounded once); kept: e as
   NBI_GELU_E_PUT stores it. */
static inline __attribute__((always_inline)) void gelu_tanh_grad_e(int64_t n, float *o, const float *g, const float *x,
                                                                   const float *e, bool kept) {
    for (int64_t i = 0; i < n; i++) {
        double xi = x[i], ei = kept ? NBI_GELU_E_GET(e[i]) : (double)e[i];
        double du = NBI_GELU_TANH_K * (1.0 + 3.0 * NBI_GELU_TANH_C * (xi * xi));
        double sp = 1.0 / (1.0 + ei), sm = ei * sp;
        double d = (sp == 0.0 || sm == 0.0) && isfinite(xi) ? sp : sp + 2.0 * xi * du * sp * sm;
        o[i] = (float)((double)g[i] * d);
    }
}

NBI_CLONES static void gelu_tanh_grad_f32(int64_t n, float *o, const float *g, const float *x) {
    float e[256];
    for (int64_t i0 = 0; i0 < n; i0 += 256) {
        int64_t m = n - i0 < 256 ? n - i0 : 256;
        for (int64_t i = 0; i < m; i++) {
            float xi = x[i0 + i];
            e[i] = (float)(-2.0 * NBI_GELU_TANH_K * ((double)xi + NBI_GELU_TANH_C * ((double)xi * xi * xi)));
        }
        nbi_vexpf_fast(e, e, m);
        gelu_tanh_grad_e(m, o + i0, g + i0, x + i0, e, false);
    }
}

/* The f32 GELU (tanh form) with its e^(-2u) kept, and its gradient from them: contiguous rows, split across the
   pool (every element alone: any split gives the same bits). */
typedef struct {
    float *y;
    float *e;
    const float *x, *g;
} gelu_keep_job;

static int gelu_keep_part(void *vj, int64_t lo, int64_t hi) {
    const gelu_keep_job *j = vj;
    nbi_vgelu_tanhf_keep(j->y + lo, j->e + lo, j->x + lo, hi - lo);
    return 0;
}

NBI_CLONES static int gelu_kept_grad_part(void *vj, int64_t lo, int64_t hi) {
    const gelu_keep_job *j = vj;
    gelu_tanh_grad_e(hi - lo, j->y + lo, j->g + lo, j->x + lo, j->e + lo, true);
    return 0;
}

void nbi_cpu_gelu_tanh_keep(nb_dtype dt, void *y, void *e, const void *x, int64_t n) {
    if (dt != NB_F32) return;
    gelu_keep_job j = {y, e, x, NULL};
    nbi_parallel_for(n, PAR_MIN_ELEMS, gelu_keep_part, &j);
}

void nbi_cpu_gelu_tanh_grad_kept(nb_dtype dt, void *o, const void *g, const void *x, const void *e, int64_t n) {
    if (dt != NB_F32) return;
    gelu_keep_job j = {o, (float *)(uintptr_t)e, x, g};
    nbi_parallel_for(n, PAR_MIN_ELEMS, gelu_kept_grad_part, &j);
}

#define DEF_BINARY(NAME, T, SFX)                                                  \
    NBI_CLONES static void NAME(int64_t n, char **p, const int64_t *s, void *vctx) { \
        nbi_binop op = *(const nbi_binop *)vctx;                                  \
        char *po = p[0];                                                          \
        const char *pa = p[1], *pb = p[2];                                        \
        int64_t so = s[0], sa = s[1], sb = s[2];                                  \
        switch (op) {                                                             \
        case NBI_B_ADD: BINARY_LOOP(T, x + y); break;                             \
        case NBI_B_SUB: BINARY_LOOP(T, x - y); break;                             \
        case NBI_B_MUL: BINARY_LOOP(T, x * y); break;                             \
        case NBI_B_DIV: BINARY_LOOP(T, x / y); break;                             \
        case NBI_B_POW: BINARY_LOOP(T, pow##SFX(x, y)); break;                    \
        case NBI_B_GT: BINARY_LOOP(T, (T)(x > y)); break;                         \
        case NBI_B_LT: BINARY_LOOP(T, (T)(x < y)); break;                         \
        case NBI_B_EQ: BINARY_LOOP(T, (T)(x == y)); break;                        \
        case NBI_B_COPY2: BINARY_LOOP(T, ((void)x, y)); break;                    \
        case NBI_B_TANH_GRAD: BINARY_LOOP(T, x * ((T)1 - y * y)); break;          \
        case NBI_B_SIGMOID_GRAD: BINARY_LOOP(T, x * (y * ((T)1 - y))); break;     \
        case NBI_B_RELU_GRAD: BINARY_LOOP(T, x * (T)(y > 0)); break;              \
        case NBI_B_GELU_TANH_GRAD: /* in double, rounded once */                 \
            BINARY_LOOP(T, (T)((double)x * nbi_gelu_tanh_grad_d((double)y))); break; \
        }                                                                         \
    }

DEF_BINARY(binary_f32, float, f)
DEF_BINARY(binary_f64, double, )

/* Operand t covers out element for element in one flat row (no broadcast, no strides). */
static bool flat_like(const nbi_arr *out, const nbi_arr *t) {
    if (t->numel != out->numel || t->rank != out->rank || !arr_contig(t)) return false;
    for (int i = 0; i < t->rank; i++)
        if (t->shape[i] != out->shape[i]) return false;
    return true;
}

/* The f32 rows of G gelu_tanh'(X): vectorised where the row is contiguous, else the double formula. */
static void gelu_tanh_grad_row(int64_t n, char **p, const int64_t *s, void *vctx) {
    if (s[0] == 4 && s[1] == 4 && s[2] == 4) gelu_tanh_grad_f32(n, (float *)p[0], (const float *)p[1], (const float *)p[2]);
    else binary_f32(n, p, s, vctx);
}

void nbi_cpu_binary(nbi_binop op, const nbi_arr *out, const nbi_arr *a, const nbi_arr *b) {
    row_fn fn = out->dtype == NB_F32 ? (op == NBI_B_GELU_TANH_GRAD ? gelu_tanh_grad_row : binary_f32) : binary_f64;
    if (out->numel == 1 || (out->numel < 2 * PAR_MIN_ELEMS && arr_contig(out) && flat_like(out, a) &&
                            flat_like(out, b))) { /* one row, no iterator: scalars and small flat operands */
        char *p[3] = {out->data, a->data, b->data};
        int64_t es = out->numel == 1 ? 0 : (int64_t)nbi_dsize(out->dtype), st[3] = {es, es, es};
        fn(out->numel, p, st, &op);
        return;
    }
    iter_t it;
    iter_init(&it, out, 3);
    iter_set(&it, 1, a);
    iter_set(&it, 2, b);
    char *base[3] = {out->data, a->data, b->data};
    iter_run_par(&it, base, fn, &op);
}


/* ------------------------------------------------------------- where ---- */

static void where_row(int64_t n, char **p, const int64_t *s, void *vctx) {
    const nbi_arr *const *t = vctx; /* out, cond */
    nb_dtype dt = t[0]->dtype, ct = t[1]->dtype;
    for (int64_t i = 0; i < n; i++) {
        const char *pc = p[1] + i * s[1];
        bool c = ct == NB_F32 ? *(const float *)pc != 0 : ct == NB_F64 ? *(const double *)pc != 0
                                                                       : *(const int64_t *)pc != 0;
        const char *src = c ? p[2] + i * s[2] : p[3] + i * s[3];
        memcpy(p[0] + i * s[0], src, dt == NB_F32 ? 4 : 8);
    }
}

void nbi_cpu_where(const nbi_arr *out, const nbi_arr *cond, const nbi_arr *a, const nbi_arr *b) {
    iter_t it;
    iter_init(&it, out, 4);
    iter_set(&it, 1, cond);
    iter_set(&it, 2, a);
    iter_set(&it, 3, b);
    char *base[4] = {out->data, cond->data, a->data, b->data};
    const nbi_arr *ctx[2] = {out, cond};
    iter_run(&it, base, where_row, (void *)ctx);
}

/* -------------------------------------------------------------- copy ---- */

static void convert_row(int64_t n, char **p, const int64_t *s, void *vctx) {
    const nbi_arr *const *t = vctx; /* dst, src */
    nb_dtype dd = t[0]->dtype, sd = t[1]->dtype;
    for (int64_t i = 0; i < n; i++) {
        const char *ps = p[1] + i * s[1];
        char *pd = p[0] + i * s[0];
        if (dd == NB_I64 && sd == NB_I64)
            *(int64_t *)pd = *(const int64_t *)ps;
        else
            nbi_store(dd, pd, nbi_load(t[1]->dtype, ps));
    }
}

void nbi_cpu_copy(const nbi_arr *dst, const nbi_arr *src) {
    if (dst->dtype == src->dtype) {
        nbi_cpu_unary(NBI_U_COPY, dst, src, 0);
        return;
    }
    iter_t it;
    iter_init(&it, dst, 2);
    iter_set(&it, 1, src);
    char *base[2] = {dst->data, src->data};
    const nbi_arr *ctx[2] = {dst, src};
    iter_run(&it, base, convert_row, (void *)ctx);
}

typedef struct {
    _Alignas(8) char v[8];
    size_t es;
} fill_ctx;

static void fill_row(int64_t n, char **p, const int64_t *s, void *vctx) {
    const fill_ctx *f = vctx;
    for (int64_t i = 0; i < n; i++) memcpy(p[0] + i * s[0], f->v, f->es);
}

void nbi_cpu_fill(const nbi_arr *dst, double v) {
    if (arr_contig(dst)) {
        int64_t n = dst->numel;
        if (dst->dtype == NB_F32) {
            float f = (float)v, *o = (float *)(void *)dst->data;
            for (int64_t i = 0; i < n; i++) o[i] = f;
        } else if (dst->dtype == NB_F64) {
            double *o = (double *)(void *)dst->data;
            for (int64_t i = 0; i < n; i++) o[i] = v;
        } else {
            int64_t q = (int64_t)v, *o = (int64_t *)(void *)dst->data;
            for (int64_t i = 0; i < n; i++) o[i] = q;
        }
        return;
    }
    fill_ctx ctx;
    ctx.es = nbi_dsize(dst->dtype);
    nbi_store(dst->dtype, ctx.v, v);
    iter_t it;
    iter_init(&it, dst, 1);
    char *base[1] = {dst->data};
    iter_run(&it, base, fill_row, &ctx);
}

/* --------------------------------------------------------- reductions --- */

typedef struct {
    nbi_redop op;
    nb_dtype dt;
} red_ctx;

/* p[0] walks a double accumulator (stride 0 along reduced axes), p[1] the input. */
NBI_CLONES static void reduce_row(int64_t n, char **p, const int64_t *s, void *vctx) {
    const red_ctx *ctx = vctx;
    double *acc = (double *)(void *)p[0];
    const char *pa = p[1];
    int64_t sa = s[1];
    if (s[0] == 0) { /* reduce the whole row into one accumulator */
        if (ctx->op == NBI_R_SUM) {
            double a0 = 0, a1 = 0, a2 = 0, a3 = 0;
            int64_t i = 0;
/* four running sums over a contiguous row of T, in a fixed order */
#define SUM4(T)                                                     \
    do {                                                            \
        const T *x = (const T *)(const void *)pa;                   \
        for (; i + 4 <= n; i += 4) {                                \
            a0 += x[i];                                             \
            a1 += x[i + 1];                                         \
            a2 += x[i + 2];                                         \
            a3 += x[i + 3];                                         \
        }                                                           \
        for (; i < n; i++) a0 += x[i];                              \
    } while (0)
            if (ctx->dt == NB_F32 && sa == 4) {
                SUM4(float);
            } else if (ctx->dt == NB_F64 && sa == 8) {
                SUM4(double);
            } else {
                for (; i < n; i++)
                    a0 += ctx->dt == NB_F32 ? *(const float *)(const void *)(pa + i * sa)
                                            : *(const double *)(const void *)(pa + i * sa);
            }
            *acc += (a0 + a1) + (a2 + a3);
        } else {
            double m = *acc;
            for (int64_t i = 0; i < n; i++) {
                double v = ctx->dt == NB_F32 ? *(const float *)(const void *)(pa + i * sa)
                                             : *(const double *)(const void *)(pa + i * sa);
                if (v > m || v != v) m = v;
                if (m != m) break;
            }
            *acc = m;
        }
        return;
    }
    int64_t so = s[0] / 8;
    if (ctx->op == NBI_R_SUM && so == 1 && ctx->dt == NB_F32 && sa == 4) { /* a row added to a row of sums */
        const float *x = (const float *)(const void *)pa;
        for (int64_t i = 0; i < n; i++) acc[i] += x[i];
        return;
    }
    if (ctx->op == NBI_R_SUM && so == 1 && ctx->dt == NB_F64 && sa == 8) {
        const double *x = (const double *)(const void *)pa;
        for (int64_t i = 0; i < n; i++) acc[i] += x[i];
        return;
    }
    for (int64_t i = 0; i < n; i++) {
        double v = ctx->dt == NB_F32 ? *(const float *)(const void *)(pa + i * sa)
                                     : *(const double *)(const void *)(pa + i * sa);
        double *o = acc + i * so;
        if (ctx->op == NBI_R_SUM)
            *o += v;
        else if (v > *o || v != v || *o != *o)
            *o = (*o != *o) ? *o : v;
    }
}

/* Large reductions split across the worker pool without changing any sum's
   order, so the bits are the same for any thread count:
   - with kept axes, along the outermost kept axis: each part owns whole output
     elements and adds their inputs in the one-thread order;
   - a sum of everything, in chunks of RED_CHUNK elements whose partial sums are
     then added in chunk order: the chunks are fixed by the size alone. */
#define RED_CHUNK ((int64_t)1 << 16)

/* One part of a reduction whose kept axis is the innermost: columns [lo, hi)
   of every row, in the one-thread order. */
static int par_cols(void *vj, int64_t lo, int64_t hi) {
    const par_job *j = vj;
    iter_t sub = j->it;
    int in = sub.rank - 1;
    char *base[MAXOPS];
    for (int k = 0; k < sub.nops; k++) base[k] = j->base[k] + lo * sub.st[k][in];
    sub.shape[in] = hi - lo;
    iter_run(&sub, base, j->fn, j->ctx);
    return 0;
}

static void reduce_run(iter_t *it, char **base, red_ctx *ctx) {
    int64_t total = 1;
    for (int i = 0; i < it->rank; i++) total *= it->shape[i];
    iter_collapse(it);
    int d = 0;
    while (d < it->rank && (it->st[0][d] == 0 || it->shape[d] < 2)) d++; /* outermost kept axis */
    if (d == it->rank || total < 2 * PAR_MIN_ELEMS || nbi_parallel_parts(total, PAR_MIN_ELEMS) < 2) {
        iter_run(it, base, reduce_row, ctx);
        return;
    }
    par_job j = {*it, {0}, reduce_row, ctx};
    for (int k = 0; k < it->nops; k++) j.base[k] = base[k];
    int64_t others = total / it->shape[d], grain = (PAR_MIN_ELEMS + others - 1) / others;
    if (d == it->rank - 1) { /* only the innermost axis is kept: cut it into column ranges, in place */
        nbi_parallel_for(it->shape[d], grain, par_cols, &j);
        return;
    }
    for (int i = d; i > 0; i--) { /* axis d first; the reduced axes keep their order */
        j.it.shape[i] = it->shape[i - 1];
        for (int k = 0; k < it->nops; k++) j.it.st[k][i] = it->st[k][i - 1];
    }
    j.it.shape[0] = it->shape[d];
    for (int k = 0; k < it->nops; k++) j.it.st[k][0] = it->st[k][d];
    nbi_parallel_for(j.it.shape[0], grain, par_part, &j);
}

/* The sum of chunk c of contiguous a (four running sums, as any row). */
static double chunk_sum(const nbi_arr *a, int64_t c) {
    red_ctx ctx = {NBI_R_SUM, a->dtype};
    int64_t es = (int64_t)nbi_dsize(a->dtype), n = a->numel - c * RED_CHUNK;
    double sum = 0;
    char *p[2] = {(char *)&sum, a->data + c * RED_CHUNK * es};
    int64_t st[2] = {0, es};
    reduce_row(n < RED_CHUNK ? n : RED_CHUNK, p, st, &ctx);
    return sum;
}

typedef struct {
    const nbi_arr *a;
    double *part;
} chunk_job;

static int chunk_part(void *vj, int64_t lo, int64_t hi) {
    const chunk_job *j = vj;
    for (int64_t c = lo; c < hi; c++) j->part[c] = chunk_sum(j->a, c);
    return 0;
}

static double chunked_sum(const nbi_arr *a) {
    int64_t nc = (a->numel + RED_CHUNK - 1) / RED_CHUNK;
    double local[64], *part = nc <= 64 ? local : nbi_alloc((size_t)nc * sizeof(double)), sum = 0;
    if (!part) { /* no room for the partial sums: the same chunks, one after another */
        for (int64_t c = 0; c < nc; c++) sum += chunk_sum(a, c);
        return sum;
    }
    chunk_job j = {a, part};
    nbi_parallel_for(nc, (PAR_MIN_ELEMS + RED_CHUNK - 1) / RED_CHUNK, chunk_part, &j);
    for (int64_t c = 0; c < nc; c++) sum += part[c];
    if (part != local) nbi_dealloc(part);
    return sum;
}

int nbi_cpu_reduce(nbi_redop op, const nbi_arr *out, const nbi_arr *a, uint32_t mask, double div) {
    int64_t nout = out->numel;
    double local[64];
    double *acc = nout <= 64 ? local : nbi_alloc((size_t)nout * sizeof(double));
    if (!acc) return -1;
    for (int64_t i = 0; i < nout; i++) acc[i] = op == NBI_R_SUM ? 0.0 : -INFINITY;
    iter_t it;
    it.rank = a->rank;
    it.nops = 2;
    memcpy(it.shape, a->shape, sizeof(int64_t) * (size_t)a->rank);
    int64_t s = 8;
    for (int i = a->rank - 1; i >= 0; i--) {
        it.st[0][i] = (mask >> i & 1) ? 0 : s;
        if (!(mask >> i & 1)) s *= a->shape[i];
        it.st[1][i] = a->strides[i] * (int64_t)nbi_dsize(a->dtype);
    }
    red_ctx ctx = {op, a->dtype};
    char *base[2] = {(char *)acc, a->data};
    if (nout == 1 && op == NBI_R_SUM && a->numel >= 2 * RED_CHUNK && arr_contig(a))
        acc[0] = chunked_sum(a);
    else
        reduce_run(&it, base, &ctx);
    if (div != 1.0)
        for (int64_t i = 0; i < nout; i++) acc[i] /= div;
    if (out->dtype == NB_F32)
        for (int64_t i = 0; i < nout; i++) ((float *)(void *)out->data)[i] = (float)acc[i];
    else
        memcpy(out->data, acc, (size_t)nout * 8);
    if (acc != local) nbi_dealloc(acc);
    return 0;
}

/* ---- dense layer: forward epilogue, and the ReLU and bias gradients of its backward ---- */

#define DEF_DENSE_KERNELS(T, SFX)                                                                   \
    NBI_CLONES static void bias_relu_##SFX(T *restrict y, int64_t m, int64_t n, const T *restrict b, bool relu) { \
        for (int64_t i = 0; i < m; i++) {                                                           \
            T *restrict r = y + i * n;                                                              \
            if (b)                                                                                  \
                for (int64_t j = 0; j < n; j++) r[j] += b[j];                                       \
            if (relu)                                                                               \
                for (int64_t j = 0; j < n; j++) r[j] = r[j] < 0 ? (T)0 : r[j];                      \
        }                                                                                           \
    }
DEF_DENSE_KERNELS(float, f32)
DEF_DENSE_KERNELS(double, f64)

void nbi_cpu_bias_relu(nb_dtype dt, void *y, int64_t m, int64_t n, const void *b, bool relu) {
    if (dt == NB_F32)
        bias_relu_f32(y, m, n, b, relu);
    else
        bias_relu_f64(y, m, n, b, relu);
}

#define DEF_MASK_COLSUM(T, SFX)                                                                     \
    NBI_CLONES static void relu_mask_colsum_##SFX(T *restrict r, const T *restrict g, const T *restrict y,  \
                                                 double *restrict acc, int64_t m, int64_t n) {     \
        for (int64_t i = 0; i < m; i++) { /* two loops per row (in L1), each of which vectorises */ \
            T *restrict ri = r + i * n;                                                             \
            const T *restrict gi = g + i * n, *restrict yi = y + i * n;                             \
            for (int64_t j = 0; j < n; j++) ri[j] = gi[j] * (T)(yi[j] > 0); /* as NBI_B_RELU_GRAD */ \
            for (int64_t j = 0; j < n; j++) acc[j] += ri[j];                                        \
        }                                                                                           \
    }
DEF_MASK_COLSUM(float, f32)
DEF_MASK_COLSUM(double, f64)

int nbi_cpu_relu_mask_colsum(nb_dtype dt, void *r, const void *g, const void *y, void *sums, int64_t m, int64_t n) {
    double *acc = nbi_alloc(sizeof(double) * (size_t)(n ? n : 1));
    if (!acc) return -1;
    for (int64_t j = 0; j < n; j++) acc[j] = 0;
    if (dt == NB_F32) {
        relu_mask_colsum_f32(r, g, y, acc, m, n);
        for (int64_t j = 0; j < n; j++) ((float *)sums)[j] = (float)acc[j];
    } else {
        relu_mask_colsum_f64(r, g, y, acc, m, n);
        memcpy(sums, acc, sizeof(double) * (size_t)n);
    }
    nbi_dealloc(acc);
    return 0;
}

/* ---- optimizer updates (nb_sgd_update_, nb_adam_update_) ---- */

/* One fused pass over p, g and the state, in the parameter's precision (as
   torch.optim); every element is independent, so any split gives the same
   bits. Compute-bound (divisions, square roots), hence the AVX variants. */
typedef struct {
    const nbi_update *u;
    void *p, *m, *v;
    const void *g;
} update_job;

#define DEF_UPDATE(T, SQRT, SFX)                                                                    \
    NBI_CLONES static int update_##SFX(void *ctx, int64_t lo, int64_t hi) {                        \
        const update_job *j = ctx;                                                                  \
        const nbi_update *u = j->u;                                                                 \
        T *restrict p = j->p, *restrict m = j->m, *restrict v = j->v;                               \
        const T *restrict g = j->g;                                                                 \
        const T lr = (T)u->lr, wd = (T)u->wd, b1 = (T)u->beta1, b2 = (T)u->beta2, eps = (T)u->eps;  \
        if (u->kind == NBI_UPD_SGD) {                                                               \
            if (u->beta1 == 0)                                                                      \
                for (int64_t k = lo; k < hi; k++) p[k] -= lr * (g[k] + wd * p[k]);                  \
            else                                                                                    \
                for (int64_t k = lo; k < hi; k++) {                                                 \
                    T d = g[k] + wd * p[k];                                                         \
                    T buf = u->first ? d : b1 * m[k] + d;                                           \
                    m[k] = buf;                                                                     \
                    p[k] -= lr * (u->nesterov ? d + b1 * buf : buf);                                \
                }                                                                                   \
            return 0;                                                                               \
        }                                                                                           \
        const T step = (T)(u->lr / u->bc1), rbc2 = (T)(1 / sqrt(u->bc2));                          \
        const T decay = u->kind == NBI_UPD_ADAMW ? (T)(1 - u->lr * u->wd) : (T)1;                   \
        const T l2 = u->kind == NBI_UPD_ADAMW ? (T)0 : wd;                                          \
        for (int64_t k = lo; k < hi; k++) {                                                         \
            T w = p[k] * decay, gr = g[k] + l2 * p[k];                                              \
            T mk = b1 * m[k] + (1 - b1) * gr, vk = b2 * v[k] + (1 - b2) * gr * gr;                  \
            m[k] = mk;                                                                              \
            v[k] = vk;                                                                              \
            p[k] = w - step * mk / (SQRT(vk) * rbc2 + eps);                                         \
        }                                                                                           \
        return 0;                                                                                   \
    }
DEF_UPDATE(float, sqrtf, f32)
DEF_UPDATE(double, sqrt, f64)

void nbi_cpu_update(const nbi_update *u, nb_dtype dt, void *p, const void *g, void *m, void *v, int64_t n) {
    update_job j = {u, p, m, v, g};
    nbi_parallel_for(n, PAR_MIN_ELEMS, dt == NB_F32 ? update_f32 : update_f64, &j);
}

/* Whether any element has an all-ones exponent (an infinity or a NaN): one
   branch-free pass over the bits, which vectorises. */
#define DEF_ANY_NONFINITE(T, U, EXP, SFX)                                     \
    NBI_CLONES static bool any_nonfinite_##SFX(const T *f, int64_t n) {      \
        U bad = 0;                                                            \
        for (int64_t k = 0; k < n; k++) {                                     \
            U b;                                                              \
            memcpy(&b, &f[k], sizeof b);                                      \
            bad |= (U)((b & EXP) == EXP);                                     \
        }                                                                     \
        return bad != 0;                                                      \
    }
DEF_ANY_NONFINITE(float, uint32_t, 0x7f800000u, f32)
DEF_ANY_NONFINITE(double, uint64_t, 0x7ff0000000000000u, f64)

int64_t nbi_cpu_first_nonfinite(nb_dtype dt, const void *x, int64_t n) {
    const float *f = x;
    const double *d = x;
    if (dt == NB_F32 ? !any_nonfinite_f32(f, n) : !any_nonfinite_f64(d, n)) return -1;
    for (int64_t k = 0; k < n; k++)
        if (!isfinite(dt == NB_F32 ? (double)f[k] : d[k])) return k;
    return -1;
}

/* dst (n) = (sum over r < p of src[r stride + j], in double, in rank order) / p, rounded once: blocks of 256
   columns, rank by rank, so that the loops vectorise; parts of the columns on the pool. */
typedef struct {
    void *dst;
    const void *src;
    int64_t stride;
    int p;
} rank_mean_job;

#define DEF_RANK_MEAN(T, SFX)                                                              \
    NBI_CLONES static void rank_mean_cols_##SFX(T *d, const T *s, int64_t stride, int64_t n, int p) { \
        double acc[256];                                                                   \
        for (int64_t j0 = 0; j0 < n; j0 += 256) {                                          \
            const int64_t m = n - j0 < 256 ? n - j0 : 256;                                 \
            for (int64_t j = 0; j < m; j++) acc[j] = (double)s[j0 + j];                    \
            for (int r = 1; r < p; r++) {                                                  \
                const T *sr = s + (int64_t)r * stride + j0;                                \
                for (int64_t j = 0; j < m; j++) acc[j] += (double)sr[j];                   \
            }                                                                              \
            for (int64_t j = 0; j < m; j++) d[j0 + j] = (T)(acc[j] / (double)p);           \
        }                                                                                  \
    }                                                                                      \
    static int rank_mean_part_##SFX(void *vj, int64_t lo, int64_t hi) {                    \
        const rank_mean_job *j = vj;                                                       \
        rank_mean_cols_##SFX((T *)j->dst + lo, (const T *)j->src + lo, j->stride, hi - lo, j->p); \
        return 0;                                                                          \
    }
DEF_RANK_MEAN(float, f32)
DEF_RANK_MEAN(double, f64)

void nbi_cpu_rank_mean(nb_dtype dt, void *dst, const void *src, int64_t stride, int64_t n, int p) {
    rank_mean_job j = {dst, src, stride, p};
    nbi_parallel_for(n, PAR_MIN_ELEMS, dt == NB_F32 ? rank_mean_part_f32 : rank_mean_part_f64, &j);
}

void nbi_cpu_exp_block(double *v, int64_t n) {
    for (int64_t k = 0; k < n; k++) v[k] = exp(v[k]);
}

void nbi_cpu_softmax_rows(nb_dtype dt, const void *x, int64_t rows, int64_t n, double *e, double *m, double *s) {
    const float *xf = x;
    const double *xd = x;
    for (int64_t i = 0; i < rows; i++) {
        double mx = -INFINITY;
        for (int64_t k = i * n; k < (i + 1) * n; k++) {
            double v = dt == NB_F32 ? (double)xf[k] : xd[k];
            if (v > mx || v != v) mx = v;
        }
        m[i] = mx == -INFINITY ? 0 : mx;
        for (int64_t k = i * n; k < (i + 1) * n; k++) e[k] = (dt == NB_F32 ? (double)xf[k] : xd[k]) - m[i];
    }
    for (int64_t k = 0; k < rows * n; k++) e[k] = exp(e[k]);
    for (int64_t i = 0; i < rows; i++) {
        double sum = 0;
        for (int64_t k = i * n; k < (i + 1) * n; k++) sum += e[k];
        s[i] = sum;
    }
}

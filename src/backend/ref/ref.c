/*
 * ref.c - the reference kernel set: every slot of struct nbi_backend
 * (src/backend/backend.h) in plain C, one thread, no SIMD, written to be read.
 *
 * This is the oracle the fast kernels are checked against, so it computes as
 * exactly as the contract allows:
 *  - maths that the contract lets round freely (unary functions, reductions,
 *    products, softmax, cross-entropy, layer norm, cumsum) is done in double and
 *    rounded once to the output dtype; an f32 function is the double libm
 *    function of the f32 value, rounded once;
 *  - where the contract asks for the same bits in every kernel set (binary ops,
 *    optimizer updates, index_move's add, where, copy, fill, bias_relu and the
 *    mask of relu_mask_colsum), the kernel computes exactly the formula of the
 *    contract in the dtype, operation by operation, as the CPU set does;
 *  - sums run over one double accumulator in plain row-major order.
 *
 * Shapes are written in each kernel's comment as llm.c writes them. Strided
 * operands are walked with a multi-index over the output's shape (next_index)
 * and each operand's element found from it (offset_in), broadcasting as
 * nbi_bstrides does. Offsets are in elements throughout.
 *
 * Floating-point expressions must not be contracted into fused multiply-adds
 * (ISO C mode or -ffp-contract=off), or the bit-identical kernels would differ
 * from the CPU set on machines with FMA.
 */
#include <math.h>
#include <string.h>

#include "../backend.h"
#include "ref.h"
#include "../gelu_tanh.h"

/* The library allocator (src/core/mem.c): 64-byte aligned, NULL when out of memory. */
#if defined(__GNUC__)
__attribute__((visibility("hidden"))) void *nbi_alloc(size_t n);
__attribute__((visibility("hidden"))) void nbi_dealloc(void *p);
#else
void *nbi_alloc(size_t n);
void nbi_dealloc(void *p);
#endif

/* ------------------------------------------------------------ helpers ---- */

static size_t dsize(nb_dtype dt) { return dt == NB_F32 ? 4 : 8; }

/* Element off (in elements from data) of dtype dt, as a double. */
static double load(nb_dtype dt, const void *data, int64_t off) {
    switch (dt) {
    case NB_F32: return (double)((const float *)data)[off];
    case NB_F64: return ((const double *)data)[off];
    default: return (double)((const int64_t *)data)[off];
    }
}

/* Element off of data = v, rounded once to dt (an i64 is truncated toward zero: the caller guarantees that
   v fits). */
static void store(nb_dtype dt, void *data, int64_t off, double v) {
    switch (dt) {
    case NB_F32: ((float *)data)[off] = (float)v; break;
    case NB_F64: ((double *)data)[off] = v; break;
    default: ((int64_t *)data)[off] = (int64_t)v; break;
    }
}

/* Steps idx, a multi-index into shape (rank axes), to the next position in row-major order (back to all
   zeros after the last). */
static void next_index(int rank, const int64_t *shape, int64_t *idx) {
    for (int d = rank - 1; d >= 0; d--) {
        if (++idx[d] < shape[d]) return;
        idx[d] = 0;
    }
}

/* The offset (in elements) of t's element at multi-index idx of a shape of `rank` axes that t broadcasts
   to: trailing axes aligned; a leading axis that t lacks, or a size-1 axis of t, is read at 0 (stride 0). */
static int64_t offset_in(const nbi_arr *t, int rank, const int64_t *idx) {
    int64_t off = 0;
    for (int j = 0; j < t->rank; j++) {
        int d = rank - t->rank + j; /* t's axis j is axis d of the walked shape */
        if (t->shape[j] != 1) off += idx[d] * t->strides[j];
    }
    return off;
}

/* -------------------------------------------------------------- memory ---- */

static void copy_bytes(void *dst, const void *src, size_t bytes) {
    if (bytes) memcpy(dst, src, bytes);
}

/* --------------------------------------------------- strided elementwise ---- */

/* dst (any shape and strides) = v */
static void ref_fill(const nbi_arr *dst, double v) {
    int64_t idx[NB_MAX_RANK] = {0};
    for (int64_t e = 0; e < dst->numel; e++) {
        store(dst->dtype, dst->data, offset_in(dst, dst->rank, idx), v);
        next_index(dst->rank, dst->shape, idx);
    }
}

/* dst (any shape and strides) = src (broadcast to dst's shape), converted to dst's dtype through double; one
   dtype to the same is a copy of the element's bytes (exact, i64 included) */
static void ref_copy(const nbi_arr *dst, const nbi_arr *src) {
    const int64_t es = (int64_t)dsize(dst->dtype);
    int64_t idx[NB_MAX_RANK] = {0};
    for (int64_t e = 0; e < dst->numel; e++) {
        int64_t od = offset_in(dst, dst->rank, idx), os = offset_in(src, dst->rank, idx);
        if (dst->dtype == src->dtype)
            memcpy(dst->data + od * es, src->data + os * es, (size_t)es);
        else
            store(dst->dtype, dst->data, od, load(src->dtype, src->data, os));
        next_index(dst->rank, dst->shape, idx);
    }
}

/* GELU, x Phi(x) = x/2 (1 + erf(z)) with z = x / sqrt(2), as x/2 erfc(-z): the same function without the
   cancellation of 1 + erf(z) for negative x. erfc is steep there, so the rounding error d of z is put back
   to first order, erfc(-(z + d)) = erfc(-z) + 2/sqrt(pi) exp(-z^2) d: within 0.5 ulp in double throughout. */
static double gelu(double x) {
    const double s_hi = 0.7071067811865476, s_lo = -4.833646656726457e-17; /* 1/sqrt(2) = s_hi + s_lo */
    double z = x * s_hi, d = isfinite(x) ? fma(x, s_hi, -z) + x * s_lo : 0;
    return 0.5 * x * (erfc(-z) + 1.1283791670955126 * exp(-z * z) * d);
}

/* One float unary op on x, in double. The special exponents of POWC are those of the CPU set, so that the
   special values (0, infinities) come out the same. */
static double unary_double(nbi_unop op, double x, double c) {
    switch (op) {
    case NBI_U_NEG: return -x;
    case NBI_U_EXP: return exp(x);
    case NBI_U_LOG: return log(x);
    case NBI_U_SQRT: return sqrt(x);
    case NBI_U_ABS: return fabs(x);
    case NBI_U_SIN: return sin(x);
    case NBI_U_COS: return cos(x);
    case NBI_U_TANH: return tanh(x);
    case NBI_U_SIGMOID: return 1 / (1 + exp(-x));
    case NBI_U_RELU: return x < 0 ? 0 : x;
    case NBI_U_LEAKY: return x > 0 ? x : c * x;
    case NBI_U_GELU: return gelu(x);
    case NBI_U_ERF: return erf(x);
    case NBI_U_SIGN: return x != x ? x : (double)((x > 0) - (x < 0));
    case NBI_U_SCALE: return c * x;
    case NBI_U_ADDC: return x + c;
    case NBI_U_COPY: return x;
    case NBI_U_LOG1P: return log1p(x);
    case NBI_U_EXPM1: return expm1(x);
    case NBI_U_SOFTPLUS: return x > 20 ? x : log1p(exp(x)); /* PyTorch's threshold 20: linear above it */
    case NBI_U_GELU_TANH: return nbi_gelu_tanh_d(x); /* transformer ops */
    case NBI_U_POWC:
        if (c == 2) return x * x;
        if (c == 3) return x * x * x;
        if (c == 1) return x;
        if (c == 0.5) return sqrt(x);
        if (c == -1) return 1 / x;
        if (c == -2) return 1 / (x * x);
        if (c == -0.5) return 1 / sqrt(x);
        return pow(x, c);
    }
    return x;
}

/* One i64 unary op (NEG, ABS, SIGN, COPY, SCALE, ADDC; c is integral). Overflow wraps around (two's
   complement), as PyTorch's integer tensors do. */
static int64_t unary_i64(nbi_unop op, int64_t x, double c) {
    switch (op) {
    case NBI_U_NEG: return (int64_t)(0 - (uint64_t)x);
    case NBI_U_ABS: return x < 0 ? (int64_t)(0 - (uint64_t)x) : x;
    case NBI_U_SIGN: return (x > 0) - (x < 0);
    case NBI_U_SCALE: return (int64_t)((uint64_t)x * (uint64_t)(int64_t)c);
    case NBI_U_ADDC: return (int64_t)((uint64_t)x + (uint64_t)(int64_t)c);
    default: return x; /* NBI_U_COPY */
    }
}

/* out (any strides) = op(a; c), a broadcast to out's shape, both of out's dtype; out may alias a. The
   parameter c is a value of that dtype (an f32 op uses (float)c, as the CPU set), the function of it and x is
   computed in double and rounded once. */
static void ref_unary(nbi_unop op, const nbi_arr *out, const nbi_arr *a, double c) {
    if (out->dtype == NB_F32) c = (double)(float)c;
    int64_t idx[NB_MAX_RANK] = {0};
    for (int64_t e = 0; e < out->numel; e++) {
        int64_t oo = offset_in(out, out->rank, idx), oa = offset_in(a, out->rank, idx);
        if (out->dtype == NB_I64) {
            int64_t x = ((const int64_t *)(const void *)a->data)[oa];
            ((int64_t *)(void *)out->data)[oo] = unary_i64(op, x, c);
        } else {
            store(out->dtype, out->data, oo, unary_double(op, load(a->dtype, a->data, oa), c));
        }
        next_index(out->rank, out->shape, idx);
    }
}

/* The binary ops in f32 arithmetic (each operation rounded to float): the same bits in every kernel set. */
static float binary_f32(nbi_binop op, float x, float y) {
    switch (op) {
    case NBI_B_ADD: return x + y;
    case NBI_B_SUB: return x - y;
    case NBI_B_MUL: return x * y;
    case NBI_B_DIV: return x / y;
    case NBI_B_POW: return powf(x, y);
    case NBI_B_GT: return (float)(x > y);
    case NBI_B_LT: return (float)(x < y);
    case NBI_B_EQ: return (float)(x == y);
    case NBI_B_COPY2: return y;
    case NBI_B_TANH_GRAD: return x * (1.0f - y * y);
    case NBI_B_SIGMOID_GRAD: return x * (y * (1.0f - y));
    case NBI_B_RELU_GRAD: return x * (float)(y > 0);
    case NBI_B_GELU_TANH_GRAD: return (float)((double)x * nbi_gelu_tanh_grad_d((double)y)); /* in double */
    }
    return 0;
}

/* The same in f64. */
static double binary_f64(nbi_binop op, double x, double y) {
    switch (op) {
    case NBI_B_ADD: return x + y;
    case NBI_B_SUB: return x - y;
    case NBI_B_MUL: return x * y;
    case NBI_B_DIV: return x / y;
    case NBI_B_POW: return pow(x, y);
    case NBI_B_GT: return (double)(x > y);
    case NBI_B_LT: return (double)(x < y);
    case NBI_B_EQ: return (double)(x == y);
    case NBI_B_COPY2: return y;
    case NBI_B_TANH_GRAD: return x * (1.0 - y * y);
    case NBI_B_SIGMOID_GRAD: return x * (y * (1.0 - y));
    case NBI_B_RELU_GRAD: return x * (double)(y > 0);
    case NBI_B_GELU_TANH_GRAD: return x * nbi_gelu_tanh_grad_d(y);
    }
    return 0;
}

/* out (any strides) = a op b, a and b broadcast to out's shape, all f32 or all f64; out may alias a */
static void ref_binary(nbi_binop op, const nbi_arr *out, const nbi_arr *a, const nbi_arr *b) {
    int64_t idx[NB_MAX_RANK] = {0};
    for (int64_t e = 0; e < out->numel; e++) {
        int64_t oo = offset_in(out, out->rank, idx), oa = offset_in(a, out->rank, idx),
                ob = offset_in(b, out->rank, idx);
        if (out->dtype == NB_F32) {
            const float *fa = (const float *)(const void *)a->data, *fb = (const float *)(const void *)b->data;
            ((float *)(void *)out->data)[oo] = binary_f32(op, fa[oa], fb[ob]);
        } else {
            const double *da = (const double *)(const void *)a->data, *db = (const double *)(const void *)b->data;
            ((double *)(void *)out->data)[oo] = binary_f64(op, da[oa], db[ob]);
        }
        next_index(out->rank, out->shape, idx);
    }
}

/* out (any strides) = cond != 0 ? a : b, all three broadcast to out's shape; the chosen element copied
   exactly */
static void ref_where(const nbi_arr *out, const nbi_arr *cond, const nbi_arr *a, const nbi_arr *b) {
    const size_t es = dsize(out->dtype);
    int64_t idx[NB_MAX_RANK] = {0};
    for (int64_t e = 0; e < out->numel; e++) {
        bool c = load(cond->dtype, cond->data, offset_in(cond, out->rank, idx)) != 0;
        const nbi_arr *pick = c ? a : b;
        const char *src = pick->data + offset_in(pick, out->rank, idx) * (int64_t)es;
        memcpy(out->data + offset_in(out, out->rank, idx) * (int64_t)es, src, es);
        next_index(out->rank, out->shape, idx);
    }
}

/* out (the kept axes of a, contiguous) = sum or max of a (any strides) over the axes in mask (bit i: axis i
   of a). One double accumulator per output element, fed in row-major order of a. Max starts at -inf and
   keeps the first NaN it meets. The result is divided by div (as the CPU set: 1 for a max) and rounded once. */
static int ref_reduce(nbi_redop op, const nbi_arr *out, const nbi_arr *a, uint32_t mask, double div) {
    const int64_t nout = out->numel;
    double *acc = nbi_alloc(sizeof(double) * (size_t)(nout > 0 ? nout : 1));
    if (!acc) return -1;
    for (int64_t o = 0; o < nout; o++) acc[o] = op == NBI_R_SUM ? 0.0 : -INFINITY;
    int64_t idx[NB_MAX_RANK] = {0};
    for (int64_t e = 0; e < a->numel; e++) {
        int64_t o = 0; /* the output element: a's kept coordinates, row-major */
        for (int d = 0; d < a->rank; d++)
            if (!(mask >> d & 1)) o = o * a->shape[d] + idx[d];
        double v = load(a->dtype, a->data, offset_in(a, a->rank, idx));
        if (op == NBI_R_SUM)
            acc[o] += v;
        else if (acc[o] == acc[o] && (v > acc[o] || v != v)) /* a NaN, once in, stays */
            acc[o] = v;
        next_index(a->rank, a->shape, idx);
    }
    for (int64_t o = 0; o < nout; o++) store(out->dtype, out->data, o, acc[o] / div);
    nbi_dealloc(acc);
    return 0;
}

/* x (outer, n, inner), contiguous, in place = its running sum along n: a double accumulator per (outer,
   inner) column, each partial sum rounded once */
void nbi_ref_cumsum(nb_dtype dt, void *x, int64_t outer, int64_t n, int64_t inner) {
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            double acc = 0;
            for (int64_t k = 0; k < n; k++) {
                int64_t off = (o * n + k) * inner + i;
                acc += load(dt, x, off);
                store(dt, x, off, acc);
            }
        }
}

/* ------------------------------------------------------------ products ---- */

/* C (m, n), rows ldc apart, (+)= A (m, k) @ B (k, n) with A[i,p] at a[i rsa + p csa], B[p,j] at
   b[p rsb + j csb]: each C[i,j] a double dot product over p = 0 .. k-1, rounded once to dt, then (when
   accumulating) added to C[i,j] in dt */
static int ref_gemm(nb_dtype dt, int64_t m, int64_t n, int64_t k, const void *a, int64_t rsa, int64_t csa,
                    const void *b, int64_t rsb, int64_t csb, void *c, int64_t ldc, bool accumulate) {
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            double s = 0;
            for (int64_t p = 0; p < k; p++) s += load(dt, a, i * rsa + p * csa) * load(dt, b, p * rsb + j * csb);
            if (dt == NB_F32) {
                float *cij = (float *)c + i * ldc + j;
                *cij = accumulate ? *cij + (float)s : (float)s;
            } else {
                double *cij = (double *)c + i * ldc + j;
                *cij = accumulate ? *cij + s : s;
            }
        }
    return 0;
}

/* out (..., m, n) = a (..., m, k) @ b (..., k, n): the shared batch loop over ref_gemm */
static int ref_matmul(const nbi_arr *out, const nbi_arr *a, const nbi_arr *b) {
    return nbi_matmul_driver(nbi_backend_reference(), out, a, b);
}

/* y (m, n) += b (n) on every row (b NULL: nothing added), then y = relu(y) when asked; in dt */
static void ref_bias_relu(nb_dtype dt, void *y, int64_t m, int64_t n, const void *b, bool relu) {
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            if (dt == NB_F32) {
                float *v = (float *)y + i * n + j;
                if (b) *v += ((const float *)b)[j];
                if (relu) *v = *v < 0 ? 0.0f : *v;
            } else {
                double *v = (double *)y + i * n + j;
                if (b) *v += ((const double *)b)[j];
                if (relu) *v = *v < 0 ? 0.0 : *v;
            }
        }
}

/* r (m, n) = g (m, n) [y (m, n) > 0] in dt (as NBI_B_RELU_GRAD); sums (n) = the column sums of r, one double
   per column added to row by row, rounded once */
static int ref_relu_mask_colsum(nb_dtype dt, void *r, const void *g, const void *y, void *sums, int64_t m,
                                int64_t n) {
    double *acc = nbi_alloc(sizeof(double) * (size_t)(n > 0 ? n : 1));
    if (!acc) return -1;
    for (int64_t j = 0; j < n; j++) acc[j] = 0;
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            int64_t o = i * n + j;
            if (dt == NB_F32)
                ((float *)r)[o] = ((const float *)g)[o] * (float)(((const float *)y)[o] > 0);
            else
                ((double *)r)[o] = ((const double *)g)[o] * (double)(((const double *)y)[o] > 0);
            acc[j] += load(dt, r, o);
        }
    for (int64_t j = 0; j < n; j++) store(dt, sums, j, acc[j]);
    nbi_dealloc(acc);
    return 0;
}

/* LU of the n x n matrix w (row-major, overwritten by L below the diagonal and U on and above it) with
   partial pivoting: the pivot of column k is the first entry of largest magnitude on or below the
   diagonal, as LAPACK's getrf, and piv[k] the row swapped with row k. Returns the sign of the permutation
   (+-1), or 0 as soon as a pivot is exactly zero (singular). */
static int lu(double *w, int64_t n, int64_t *piv) {
    int sign = 1;
    for (int64_t k = 0; k < n; k++) {
        int64_t p = k;
        for (int64_t i = k + 1; i < n; i++)
            if (fabs(w[i * n + k]) > fabs(w[p * n + k])) p = i;
        piv[k] = p;
        if (w[p * n + k] == 0) return 0;
        if (p != k) {
            sign = -sign;
            for (int64_t j = 0; j < n; j++) {
                double t = w[k * n + j];
                w[k * n + j] = w[p * n + j];
                w[p * n + j] = t;
            }
        }
        for (int64_t i = k + 1; i < n; i++) {
            double f = w[i * n + k] /= w[k * n + k];
            for (int64_t j = k + 1; j < n; j++) w[i * n + j] -= f * w[k * n + j];
        }
    }
    return sign;
}

/* For each matrix X (n, n) of x (..., n, n), any strides, in row-major batch order, in double:
     INV:    out (..., n, n) = X^-1, column by column from L U X^-1 = P I; a singular X stops the kernel
             with 1 and its batch index in *bad;
     DET:    out (...) = sign(P) prod diag(U); 0 when singular; 1 for n = 0;
     LOGDET: out (...) = sum log |diag(U)|; -inf when singular, NaN when det < 0, 0 for n = 0.
   A matrix holding a NaN gives NaN (an all-NaN inverse) and no LU. */
int nbi_ref_linalg(nbi_linalg_kind kind, const nbi_arr *out, const nbi_arr *x, int64_t *bad) {
    const int r = x->rank;
    const int64_t n = x->shape[r - 1], rs = x->strides[r - 2], cs = x->strides[r - 1];
    int64_t batches = 1;
    for (int d = 0; d < r - 2; d++) batches *= x->shape[d];
    double *w = nbi_alloc(sizeof(double) * (size_t)(n * n + n + 1)), *col = w ? w + n * n : NULL;
    int64_t *piv = nbi_alloc(sizeof(int64_t) * (size_t)(n + 1));
    if (!w || !piv) {
        nbi_dealloc(w);
        nbi_dealloc(piv);
        return -1;
    }
    int status = 0;
    int64_t bidx[NB_MAX_RANK] = {0}; /* the batch coordinates of matrix b */
    for (int64_t b = 0; b < batches; b++, next_index(r - 2, x->shape, bidx)) {
        int64_t off = 0;
        for (int d = 0; d < r - 2; d++) off += bidx[d] * x->strides[d];
        bool has_nan = false;
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < n; j++) {
                double v = load(x->dtype, x->data, off + i * rs + j * cs);
                has_nan |= v != v;
                w[i * n + j] = v;
            }
        if (has_nan) { /* NaN determinant and log-determinant, an all-NaN inverse (PyTorch's values) */
            int64_t count = kind == NBI_LA_INV ? n * n : 1;
            for (int64_t i = 0; i < count; i++) store(out->dtype, out->data, b * count + i, NAN);
            continue;
        }
        int sign = lu(w, n, piv);
        if (kind == NBI_LA_DET) {
            double det = sign;
            if (sign != 0)
                for (int64_t i = 0; i < n; i++) det *= w[i * n + i];
            store(out->dtype, out->data, b, det);
        } else if (kind == NBI_LA_LOGDET) {
            double lg = 0, s = sign;
            if (sign == 0)
                lg = -INFINITY; /* log 0 */
            else
                for (int64_t i = 0; i < n; i++) {
                    lg += log(fabs(w[i * n + i]));
                    if (w[i * n + i] < 0) s = -s;
                }
            store(out->dtype, out->data, b, s >= 0 ? lg : NAN);
        } else {
            if (sign == 0) {
                *bad = b;
                status = 1;
                break;
            }
            for (int64_t c = 0; c < n; c++) { /* column c of X^-1: solve L U v = P e_c */
                for (int64_t i = 0; i < n; i++) col[i] = i == c ? 1 : 0;
                for (int64_t k = 0; k < n; k++) { /* apply the row swaps in order */
                    double t = col[k];
                    col[k] = col[piv[k]];
                    col[piv[k]] = t;
                }
                for (int64_t i = 0; i < n; i++) /* forward: L has a unit diagonal */
                    for (int64_t k = 0; k < i; k++) col[i] -= w[i * n + k] * col[k];
                for (int64_t i = n - 1; i >= 0; i--) { /* backward through U */
                    for (int64_t k = i + 1; k < n; k++) col[i] -= w[i * n + k] * col[k];
                    col[i] /= w[i * n + i];
                }
                for (int64_t i = 0; i < n; i++) store(out->dtype, out->data, b * n * n + i * n + c, col[i]);
            }
        }
    }
    nbi_dealloc(w);
    nbi_dealloc(piv);
    return status;
}

/* ----------------------------------------------- softmax, cross-entropy ---- */

/* The max m and the sum s of exp(x - m) over the n elements x[base + k step] (contiguous x of dtype dt), in
   double: a NaN is the max once met, and m = 0 when every element is -inf (so a row of -inf gives s = 0). */
static void softmax_stats(nb_dtype dt, const void *x, int64_t base, int64_t n, int64_t step, double *m,
                          double *s) {
    double mx = -INFINITY, sum = 0;
    for (int64_t k = 0; k < n; k++) {
        double v = load(dt, x, base + k * step);
        if (v > mx || v != v) mx = v;
    }
    if (mx == -INFINITY) mx = 0;
    for (int64_t k = 0; k < n; k++) sum += exp(load(dt, x, base + k * step) - mx);
    *m = mx;
    *s = sum;
}

/* y (outer, n, inner) = softmax of x (outer, n, inner) along n, or log-softmax when logarithm, per row in
   double: softmax = exp(x - m) / s, log-softmax = (x - m) - log s; each element rounded once */
static void ref_softmax(nb_dtype dt, void *y, const void *x, int64_t outer, int64_t n, int64_t inner,
                        bool logarithm) {
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            const int64_t base = o * n * inner + i; /* element k of this row at base + k inner */
            double m, s;
            softmax_stats(dt, x, base, n, inner, &m, &s);
            const double ls = log(s);
            for (int64_t k = 0; k < n; k++) {
                double v = load(dt, x, base + k * inner) - m;
                store(dt, y, base + k * inner, logarithm ? v - ls : exp(v) / s);
            }
        }
}

/* *loss = -sum over rows i of log softmax(x[i])[t[i]] for x (N, C), t (N) at t[i ts]: row i's term is
   (x[i, t[i]] - m) - log s in double, subtracted from one double in row order. With ce: 0 at ignored rows, and
   under smoothing eps the term (1 - eps) (log s - (x_t - m)) + eps ((m + log s) - sum_k x_k / C), the sum in
   element order; ce->rows gets each term. */
static int ref_cross_entropy(nb_dtype dt, double *loss, const void *x, const int64_t *t, int64_t ts, int64_t N,
                             int64_t C, double *ms, void *ex, const nbi_ce_opts *ce) {
    (void)ex; /* the gradient recomputes each exp in double */
    double total = 0;
    for (int64_t i = 0; i < N; i++) {
        double m, s;
        softmax_stats(dt, x, i * C, C, 1, &m, &s);
        if (ms) ms[2 * i] = m, ms[2 * i + 1] = s;
        const int64_t ti = t[i * ts];
        double term = 0;
        if (!ce || ti != ce->ignore) {
            const double ls = log(s);
            term = -((load(dt, x, i * C + ti) - m) - ls);
            if (ce && ce->eps > 0) {
                double xs = 0;
                for (int64_t k = 0; k < C; k++) xs += load(dt, x, i * C + k);
                term = (1.0 - ce->eps) * term + ce->eps * ((m + ls) - xs / (double)C);
            }
        }
        if (ce && ce->rows) ce->rows[i] = term;
        total -= -term;
    }
    *loss = total;
    return 0;
}

/* dx (N, C) = gs (softmax(x[i]) - onehot(t[i])) for x (N, C), t (N) at t[i ts]: gs (exp(x - m) / s - [k == t])
   in double, rounded once, with the row's m and s from ms (N, 2) when given, else recomputed. With ce: w_i ((p -
   (1 - eps) [k == t]) - eps / C), w_i = ce->w[i] or gs, and 0 at ignored rows. */
static int ref_cross_entropy_grad(nb_dtype dt, void *dx, const void *x, const int64_t *t, int64_t ts, int64_t N,
                                  int64_t C, double gs, const double *ms, const void *ex, const nbi_ce_opts *ce) {
    (void)ex;
    for (int64_t i = 0; i < N; i++) {
        double m, s;
        if (ms)
            m = ms[2 * i], s = ms[2 * i + 1];
        else
            softmax_stats(dt, x, i * C, C, 1, &m, &s);
        const int64_t ti = t[i * ts];
        if (ce && ti == ce->ignore) {
            for (int64_t k = 0; k < C; k++) store(dt, dx, i * C + k, 0.0);
            continue;
        }
        const double w = ce && ce->w ? ce->w[i] : gs, eps = ce ? ce->eps : 0, d = eps / (double)C;
        for (int64_t k = 0; k < C; k++) {
            double p = exp(load(dt, x, i * C + k) - m) / s;
            if (!ce)
                store(dt, dx, i * C + k, w * (p - (k == ti ? 1.0 : 0.0)));
            else
                store(dt, dx, i * C + k, w * ((p - (k == ti ? 1.0 - eps : 0.0)) - d));
        }
    }
    return 0;
}

/* ---------------------------------------------------------- layer norm ---- */

/* The mean mu and rstd = 1 / sqrt(var + eps) of row x[o .. o + D) (var biased), two passes in double. */
static void norm_stats(nb_dtype dt, const void *x, int64_t o, int64_t D, double eps, double *mu, double *rstd) {
    double m = 0, var = 0;
    for (int64_t j = 0; j < D; j++) m += load(dt, x, o + j);
    m /= (double)D;
    for (int64_t j = 0; j < D; j++) {
        double v = load(dt, x, o + j) - m;
        var += v * v;
    }
    *mu = m;
    *rstd = 1.0 / sqrt(var / (double)D + eps);
}

/* y (rows, D) = (x - mean) rstd gamma + beta per row of x (rows, D), gamma and beta (D) or NULL, in double,
   rounded once; mean (rows) and rstd (rows) written when not NULL */
static int ref_layer_norm(nb_dtype dt, void *y, const void *x, const void *gamma, const void *beta, int64_t rows,
                          int64_t D, double eps, double *mean, double *rstd) {
    for (int64_t r = 0; r < rows; r++) {
        double mu, rs;
        norm_stats(dt, x, r * D, D, eps, &mu, &rs);
        for (int64_t j = 0; j < D; j++) {
            double v = (load(dt, x, r * D + j) - mu) * rs;
            if (gamma) v *= load(dt, gamma, j);
            if (beta) v += load(dt, beta, j);
            store(dt, y, r * D + j, v);
        }
        if (mean) mean[r] = mu;
        if (rstd) rstd[r] = rs;
    }
    return 0;
}

/* From g (rows, D), x (rows, D) and gamma (D, NULL for ones), per row with xhat = (x - mu) rstd and
   dxhat = g gamma, in double:
     dx (rows, D) = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat)),
     dgamma (D) = sum over rows of g xhat,  dbeta (D) = sum over rows of g  (row order, rounded once);
   each output NULL when not wanted */
static int ref_layer_norm_grad(nb_dtype dt, void *dx, void *dgamma, void *dbeta, const void *g, const void *x,
                               const void *gamma, int64_t rows, int64_t D, double eps, const double *mean,
                               const double *rstd) {
    double *xhat = nbi_alloc(sizeof(double) * (size_t)(3 * D + 1)), *sg = xhat ? xhat + D : NULL,
           *sb = xhat ? xhat + 2 * D : NULL;
    if (!xhat) return -1;
    for (int64_t j = 0; j < D; j++) sg[j] = sb[j] = 0;
    for (int64_t r = 0; r < rows; r++) {
        const int64_t o = r * D;
        double mu, rs, m1 = 0, m2 = 0;
        if (mean && rstd) /* as layer_norm wrote them */
            mu = mean[r], rs = rstd[r];
        else
            norm_stats(dt, x, o, D, eps, &mu, &rs);
        for (int64_t j = 0; j < D; j++) {
            double gj = load(dt, g, o + j), dxh = gamma ? gj * load(dt, gamma, j) : gj;
            xhat[j] = (load(dt, x, o + j) - mu) * rs;
            m1 += dxh;
            m2 += dxh * xhat[j];
            sg[j] += gj * xhat[j];
            sb[j] += gj;
        }
        m1 /= (double)D;
        m2 /= (double)D;
        if (dx)
            for (int64_t j = 0; j < D; j++) {
                double gj = load(dt, g, o + j), dxh = gamma ? gj * load(dt, gamma, j) : gj;
                store(dt, dx, o + j, rs * (dxh - m1 - xhat[j] * m2));
            }
    }
    for (int64_t j = 0; j < D; j++) {
        if (dgamma) store(dt, dgamma, j, sg[j]);
        if (dbeta) store(dt, dbeta, j, sb[j]);
    }
    nbi_dealloc(xhat);
    return 0;
}

/* ----------------------------------------------------- gather / scatter ---- */

/* -1 when every value of idx (i64, any shape and strides) is in [lo, hi); else the row-major position of the
   first that is not, its value in *bad */
static int64_t ref_index_check(const nbi_arr *idx, int64_t lo, int64_t hi, int64_t *bad) {
    const int64_t *v = (const int64_t *)(const void *)idx->data;
    int64_t pos[NB_MAX_RANK] = {0};
    for (int64_t e = 0; e < idx->numel; e++) {
        int64_t k = v[offset_in(idx, idx->rank, pos)];
        if (k < lo || k >= hi) {
            *bad = k;
            return e;
        }
        next_index(idx->rank, idx->shape, pos);
    }
    return -1;
}

/* dst[od] += src[os] in dst's dtype (i64 wraps around) */
static void add_element(nb_dtype dt, char *dst, int64_t od, const char *src, int64_t os) {
    if (dt == NB_F32)
        ((float *)(void *)dst)[od] += ((const float *)(const void *)src)[os];
    else if (dt == NB_F64)
        ((double *)(void *)dst)[od] += ((const double *)(const void *)src)[os];
    else {
        int64_t *d = (int64_t *)(void *)dst;
        d[od] = (int64_t)((uint64_t)d[od] + (uint64_t)((const int64_t *)(const void *)src)[os]);
    }
}

/* Walk every element of the walked operand W (dst when selecting, src when scattering), in row-major order,
   and pair it with the element of the other operand O at the same coordinates except along ax, where O is
   at k = idx[...] (+ O's size along ax when negative):
     select  (index_on_dst false): dst[.., j, ..] = src[.., k, ..];
     scatter (index_on_dst true):  dst[.., k, ..] (+)= src[.., j, ..].
   elementwise: k is idx at W's coordinates (idx has W's shape); else idx is 1-D and k = idx[j]. dst and src
   share a dtype; a move is an exact copy, an add is in that dtype, in walk order. */
static void ref_index_move(const nbi_arr *dst, const nbi_arr *src, const nbi_arr *idx, int ax, bool elementwise,
                           bool add, bool index_on_dst) {
    const nbi_arr *walk = index_on_dst ? src : dst, *other = index_on_dst ? dst : src;
    const int64_t n = other->shape[ax], es = (int64_t)dsize(dst->dtype);
    const int64_t *iv = (const int64_t *)(const void *)idx->data;
    int64_t coord[NB_MAX_RANK] = {0};
    for (int64_t e = 0; e < walk->numel; e++) {
        int64_t k = elementwise ? iv[offset_in(idx, walk->rank, coord)] : iv[coord[ax] * idx->strides[0]];
        if (k < 0) k += n;
        int64_t ow = 0, oo = 0; /* offsets in W and in O */
        for (int d = 0; d < walk->rank; d++) {
            ow += coord[d] * walk->strides[d];
            oo += (d == ax ? k : coord[d]) * other->strides[d];
        }
        const int64_t od = index_on_dst ? oo : ow, os = index_on_dst ? ow : oo;
        if (add)
            add_element(dst->dtype, dst->data, od, src->data, os);
        else
            memcpy(dst->data + od * es, src->data + os * es, (size_t)es);
        next_index(walk->rank, walk->shape, coord);
    }
}

/* ---------------------------------------------------------- optimizers ---- */

/* One step over p, g, m, v (n each) in T arithmetic, as torch.optim; these are the CPU set's expressions
   exactly, evaluated in the same order, so that every kernel set gives the same bits.
     SGD:   d = g + wd p; m = first ? d : beta1 m + d (when beta1 != 0); p -= lr (nesterov ? d + beta1 m : m)
            (p -= lr d when beta1 == 0)
     Adam:  gr = g + wd p (AdamW: p *= 1 - lr wd instead); m = b1 m + (1 - b1) gr; v = b2 v + (1 - b2) gr gr;
            p = p - lr / bc1 m / (sqrt(v) / sqrt(bc2) + eps) */
#define DEF_UPDATE(T, SQRT, NAME)                                                                          \
    static void NAME(const nbi_update *u, T *p, const T *g, T *m, T *v, int64_t n) {                      \
        const T lr = (T)u->lr, wd = (T)u->wd, b1 = (T)u->beta1, b2 = (T)u->beta2, eps = (T)u->eps;        \
        if (u->kind == NBI_UPD_SGD) {                                                                     \
            for (int64_t k = 0; k < n; k++) {                                                             \
                if (u->beta1 == 0) {                                                                      \
                    p[k] -= lr * (g[k] + wd * p[k]);                                                      \
                    continue;                                                                             \
                }                                                                                         \
                T d = g[k] + wd * p[k];                                                                   \
                T buf = u->first ? d : b1 * m[k] + d;                                                     \
                m[k] = buf;                                                                               \
                p[k] -= lr * (u->nesterov ? d + b1 * buf : buf);                                          \
            }                                                                                             \
            return;                                                                                       \
        }                                                                                                 \
        const T step = (T)(u->lr / u->bc1), rbc2 = (T)(1 / sqrt(u->bc2));                                \
        const T decay = u->kind == NBI_UPD_ADAMW ? (T)(1 - u->lr * u->wd) : (T)1;                         \
        const T l2 = u->kind == NBI_UPD_ADAMW ? (T)0 : wd;                                                \
        for (int64_t k = 0; k < n; k++) {                                                                 \
            T w = p[k] * decay, gr = g[k] + l2 * p[k];                                                    \
            T mk = b1 * m[k] + (1 - b1) * gr, vk = b2 * v[k] + (1 - b2) * gr * gr;                        \
            m[k] = mk;                                                                                    \
            v[k] = vk;                                                                                    \
            p[k] = w - step * mk / (SQRT(vk) * rbc2 + eps);                                               \
        }                                                                                                 \
    }
DEF_UPDATE(float, sqrtf, update_f32)
DEF_UPDATE(double, sqrt, update_f64)

/* p, g, m, v (n), contiguous, of dtype dt: one optimizer step in place */
static void ref_update(const nbi_update *u, nb_dtype dt, void *p, const void *g, void *m, void *v, int64_t n) {
    if (dt == NB_F32)
        update_f32(u, p, g, m, v, n);
    else
        update_f64(u, p, g, m, v, n);
}

/* -1 when the n values of x (n) are all finite, else the index of the first infinity or NaN */
/* dst[j] = (src[j] + src[stride + j] + ... + src[(p - 1) stride + j]) / p, in double in rank order, rounded once. */
static void ref_rank_mean(nb_dtype dt, void *dst, const void *src, int64_t stride, int64_t n, int p) {
    for (int64_t j = 0; j < n; j++) {
        double a = load(dt, src, j);
        for (int r = 1; r < p; r++) a += load(dt, src, (int64_t)r * stride + j);
        store(dt, dst, j, a / (double)p);
    }
}

static int64_t ref_first_nonfinite(nb_dtype dt, const void *x, int64_t n) {
    for (int64_t k = 0; k < n; k++)
        if (!isfinite(load(dt, x, k))) return k;
    return -1;
}

/* ------------------------------------------------------- random fills ---- */
/* The streams below are part of the contract: every backend draws the same numbers in the same order. */

/* x (n) = u < p ? 0 : keep with u = nb_rng_uniform(rng), one draw per element in order (dropout's mask) */
void nbi_ref_bernoulli(nb_dtype dt, void *x, int64_t n, nb_rng *rng, double p, double keep) {
    for (int64_t i = 0; i < n; i++) store(dt, x, i, nb_rng_uniform(rng) < p ? 0 : keep);
}

/* x (n) = lo + (hi - lo) u with u = nb_rng_uniform(rng), one draw per element in order, rounded once */
void nbi_ref_uniform(nb_dtype dt, void *x, int64_t n, nb_rng *rng, double lo, double hi) {
    for (int64_t i = 0; i < n; i++) store(dt, x, i, lo + (hi - lo) * nb_rng_uniform(rng));
}

/* x (n) = mean + std z, rounded once, with z standard normal by Box-Muller. Elements go in pairs (i, i+1):
   u1 = nb_rng_uniform(rng), then u2 = nb_rng_uniform(rng), r = sqrt(-2 log(1 - u1)), and
   z = r cos(2 pi u2) for element i, z = r sin(2 pi u2) for element i+1. When n is odd, the last element
   takes the cosine of a last pair of its own (both draws are made; the sine is dropped). */
void nbi_ref_normal(nb_dtype dt, void *x, int64_t n, nb_rng *rng, double mean, double std) {
    const double two_pi = 6.28318530717958647692;
    for (int64_t i = 0; i < n; i += 2) {
        double u1 = nb_rng_uniform(rng), u2 = nb_rng_uniform(rng);
        double r = sqrt(-2 * log(1 - u1));
        store(dt, x, i, mean + std * (r * cos(two_pi * u2)));
        if (i + 1 < n) store(dt, x, i + 1, mean + std * (r * sin(two_pi * u2)));
    }
}

/* ----------------------------------------------------------- batch norm ---- */

static int ref_batch_norm(nb_dtype dt, void *y, double *mean, double *rstd, double *var, const void *x,
                          const void *gamma, const void *beta, int64_t N, int64_t C, int64_t S, double eps) {
    double M = (double)(N * S);
    for (int64_t c = 0; c < C; c++) {
        double sum = 0, sq = 0;
        for (int64_t n = 0; n < N; n++)
            for (int64_t s = 0; s < S; s++) sum += load(dt, x, (n * C + c) * S + s);
        double mu = sum / M;
        for (int64_t n = 0; n < N; n++)
            for (int64_t s = 0; s < S; s++) {
                double d = load(dt, x, (n * C + c) * S + s) - mu;
                sq += d * d;
            }
        double v = sq / M, r = 1.0 / sqrt(v + eps), gm = gamma ? load(dt, gamma, c) : 1.0;
        double bt = beta ? load(dt, beta, c) : 0.0;
        mean[c] = mu, var[c] = v, rstd[c] = r;
        for (int64_t n = 0; n < N; n++)
            for (int64_t s = 0; s < S; s++) {
                int64_t at = (n * C + c) * S + s;
                store(dt, y, at, (load(dt, x, at) - mu) * r * gm + bt);
            }
    }
    return 0;
}

static int ref_batch_norm_grad(nb_dtype dt, void *dx, void *dgamma, void *dbeta, const void *g, const void *x,
                               const void *gamma, const double *mean, const double *rstd, int64_t N, int64_t C,
                               int64_t S) {
    double M = (double)(N * S);
    for (int64_t c = 0; c < C; c++) {
        double sg = 0, sgx = 0;
        for (int64_t n = 0; n < N; n++)
            for (int64_t s = 0; s < S; s++) {
                int64_t at = (n * C + c) * S + s;
                double gv = load(dt, g, at);
                sg += gv, sgx += gv * (load(dt, x, at) - mean[c]) * rstd[c];
            }
        if (dbeta) store(dt, dbeta, c, sg);
        if (dgamma) store(dt, dgamma, c, sgx);
        double k = (gamma ? load(dt, gamma, c) : 1.0) * rstd[c];
        for (int64_t n = 0; dx && n < N; n++)
            for (int64_t s = 0; s < S; s++) {
                int64_t at = (n * C + c) * S + s;
                double xh = (load(dt, x, at) - mean[c]) * rstd[c];
                store(dt, dx, at, k * (load(dt, g, at) - sg / M - xh * sgx / M));
            }
    }
    return 0;
}

/* -------------------------------------------------------------- conv2d ---- */

/* The index into x (N, C, H, W) of output (n, i, j)'s tap (p, q) in input channel ci, or -1 in the padding. */
static int64_t conv_tap(const nbi_conv *cv, int64_t n, int64_t ci, int64_t i, int64_t j, int64_t p, int64_t q) {
    int64_t h = i * cv->sh - cv->ph + p * cv->dh, w = j * cv->sw - cv->pw + q * cv->dw;
    if (h < 0 || h >= cv->H || w < 0 || w >= cv->W) return -1;
    return ((n * cv->C + ci) * cv->H + h) * cv->W + w;
}

/* The definition, one output at a time: the sum in double, rounded once. */
static int ref_conv2d(nb_dtype dt, void *y, const void *x, const void *w, const void *b, const nbi_conv *cv) {
    int64_t Cg = cv->C / cv->G, Og = cv->O / cv->G;
    for (int64_t n = 0; n < cv->N; n++)
        for (int64_t o = 0; o < cv->O; o++)
            for (int64_t i = 0; i < cv->OH; i++)
                for (int64_t j = 0; j < cv->OW; j++) {
                    double acc = b ? load(dt, b, o) : 0.0;
                    for (int64_t c = 0; c < Cg; c++)
                        for (int64_t p = 0; p < cv->KH; p++)
                            for (int64_t q = 0; q < cv->KW; q++) {
                                int64_t at = conv_tap(cv, n, o / Og * Cg + c, i, j, p, q);
                                if (at >= 0) acc += load(dt, w, ((o * Cg + c) * cv->KH + p) * cv->KW + q) * load(dt, x, at);
                            }
                    store(dt, y, ((n * cv->O + o) * cv->OH + i) * cv->OW + j, acc);
                }
    return 0;
}

/* dx in double, scattering each dy term to the taps it came from in (n, o, i, j, c, p, q) order, rounded once. */
static int ref_conv2d_input(nb_dtype dt, void *dx, const void *dy, const void *w, const nbi_conv *cv) {
    int64_t Cg = cv->C / cv->G, Og = cv->O / cv->G, nx = cv->N * cv->C * cv->H * cv->W;
    double *acc = nbi_alloc(sizeof(double) * (size_t)(nx ? nx : 1));
    if (!acc) return -1;
    for (int64_t e = 0; e < nx; e++) acc[e] = 0;
    for (int64_t n = 0; n < cv->N; n++)
        for (int64_t o = 0; o < cv->O; o++)
            for (int64_t i = 0; i < cv->OH; i++)
                for (int64_t j = 0; j < cv->OW; j++) {
                    double g = load(dt, dy, ((n * cv->O + o) * cv->OH + i) * cv->OW + j);
                    for (int64_t c = 0; c < Cg; c++)
                        for (int64_t p = 0; p < cv->KH; p++)
                            for (int64_t q = 0; q < cv->KW; q++) {
                                int64_t at = conv_tap(cv, n, o / Og * Cg + c, i, j, p, q);
                                if (at >= 0) acc[at] += g * load(dt, w, ((o * Cg + c) * cv->KH + p) * cv->KW + q);
                            }
                }
    for (int64_t e = 0; e < nx; e++) store(dt, dx, e, acc[e]);
    nbi_dealloc(acc);
    return 0;
}

/* dw one weight at a time: the sum over (n, i, j) in double, rounded once. */
static int ref_conv2d_weight(nb_dtype dt, void *dw, const void *x, const void *dy, const nbi_conv *cv) {
    int64_t Cg = cv->C / cv->G, Og = cv->O / cv->G;
    for (int64_t o = 0; o < cv->O; o++)
        for (int64_t c = 0; c < Cg; c++)
            for (int64_t p = 0; p < cv->KH; p++)
                for (int64_t q = 0; q < cv->KW; q++) {
                    double acc = 0;
                    for (int64_t n = 0; n < cv->N; n++)
                        for (int64_t i = 0; i < cv->OH; i++)
                            for (int64_t j = 0; j < cv->OW; j++) {
                                int64_t at = conv_tap(cv, n, o / Og * Cg + c, i, j, p, q);
                                if (at >= 0) acc += load(dt, dy, ((n * cv->O + o) * cv->OH + i) * cv->OW + j) * load(dt, x, at);
                            }
                    store(dt, dw, ((o * Cg + c) * cv->KH + p) * cv->KW + q, acc);
                }
    return 0;
}

/* Each window scanned row by row: a value replaces the current one when it is greater or NaN. */
static void ref_max_pool2d(nb_dtype dt, void *y, int64_t *idx, const void *x, const nbi_conv *cv) {
    for (int64_t pl = 0; pl < cv->N * cv->C; pl++)
        for (int64_t i = 0; i < cv->OH; i++)
            for (int64_t j = 0; j < cv->OW; j++) {
                double best = 0;
                int64_t at = -1;
                for (int64_t p = 0; p < cv->KH; p++)
                    for (int64_t q = 0; q < cv->KW; q++) {
                        int64_t h = i * cv->sh - cv->ph + p * cv->dh, w = j * cv->sw - cv->pw + q * cv->dw;
                        if (h < 0 || h >= cv->H || w < 0 || w >= cv->W) continue;
                        double v = load(dt, x, (pl * cv->H + h) * cv->W + w);
                        if (at < 0 || v > best || v != v) best = v, at = h * cv->W + w;
                    }
                idx[(pl * cv->OH + i) * cv->OW + j] = at;
                store(dt, y, (pl * cv->OH + i) * cv->OW + j, best);
            }
}

static void ref_max_pool2d_grad(nb_dtype dt, void *dx, const void *g, const int64_t *idx, const nbi_conv *cv) {
    int64_t HW = cv->H * cv->W, S = cv->OH * cv->OW;
    for (int64_t e = 0; e < cv->N * cv->C * HW; e++) store(dt, dx, e, 0.0);
    for (int64_t pl = 0; pl < cv->N * cv->C; pl++)
        for (int64_t s = 0; s < S; s++) {
            int64_t at = pl * HW + idx[pl * S + s];
            store(dt, dx, at, load(dt, dx, at) + load(dt, g, pl * S + s));
        }
}

/* ------------------------------------------------------------ attention ---- */

/* The element offset of row t of batch-head b of an operand with layout L (NULL: contiguous, rows n long, T of
   them per batch-head). */
static int64_t arow(const nbi_rows *L, int64_t b, int64_t t, int64_t T, int64_t n) {
    return L ? nbi_rows_at(L, b, t) : (b * T + t) * n;
}

/* Row i of batch-head b: s (Tk) = scale q.k + mask, in double, with vis[j] whether causal lets query i see key
   j (s = -inf where it does not). Returns the row's max over the keys it sees (-inf when none). */
static double attn_scores(nb_dtype dt, double *s, const void *q, const void *k, const void *mask, int64_t msb,
                          int64_t msq, int64_t b, int64_t i, int64_t Tq, int64_t Tk, int64_t d, bool causal,
                          double scale, const nbi_rows *lay) {
    double m = -INFINITY;
    for (int64_t j = 0; j < Tk; j++) {
        if (causal && j > i + Tk - Tq) {
            s[j] = -INFINITY;
            continue;
        }
        double dot = 0;
        for (int64_t c = 0; c < d; c++)
            dot += load(dt, q, arow(lay ? &lay[0] : NULL, b, i, Tq, d) + c) * load(dt, k, arow(lay ? &lay[1] : NULL, b, j, Tk, d) + c);
        s[j] = dot * scale + (mask ? load(dt, mask, b * msb + i * msq + j) : 0.0);
        m = s[j] > m ? s[j] : m;
    }
    return m;
}

/* out = softmax(q k^T scale + mask) v, one row at a time: the full row of scores, its max m, l = sum exp(s - m),
   out = sum exp(s - m) v / l, lse = m + log l; all in double, each result rounded once. */
static int ref_attention(nb_dtype dt, void *out, double *lse, const void *q, const void *k, const void *v,
                         const void *mask, int64_t msb, int64_t msq, int64_t BH, int64_t Tq, int64_t Tk, int64_t d,
                         int64_t dv, bool causal, double scale, const nbi_rows *lay) {
    double *s = nbi_alloc(sizeof(double) * (size_t)(Tk + dv)), *acc = s ? s + Tk : NULL;
    if (!s) return -1;
    for (int64_t b = 0; b < BH; b++)
        for (int64_t i = 0; i < Tq; i++) {
            double m = attn_scores(dt, s, q, k, mask, msb, msq, b, i, Tq, Tk, d, causal, scale, lay), l = 0;
            for (int64_t c = 0; c < dv; c++) acc[c] = 0;
            for (int64_t j = 0; j < Tk; j++) {
                if (causal && j > i + Tk - Tq) continue;
                double e = exp(s[j] - (m == -INFINITY ? 0.0 : m)); /* every key -inf: l = 0 */
                l += e;
                for (int64_t c = 0; c < dv; c++) acc[c] += e * load(dt, v, arow(lay ? &lay[2] : NULL, b, j, Tk, dv) + c);
            }
            for (int64_t c = 0; c < dv; c++) store(dt, out, (b * Tq + i) * dv + c, acc[c] / l); /* l = 0: NaN */
            lse[b * Tq + i] = m + log(l);
        }
    nbi_dealloc(s);
    return 0;
}

/* The explicit formulas, in double: per row, p = exp(s - lse), D = g.out, dS = p (g v^T - D); dq = scale dS k,
   dk += scale dS^T q, dv += p^T g, accumulated over rows in order (dk, dv in double for the whole batch-head). */
static int ref_attention_grad(nb_dtype dt, void *dq, void *dk, void *dvv, void *dmask, const void *g, const void *q,
                              const void *k, const void *v, const void *out, const double *lse, const void *mask,
                              int64_t msb, int64_t msq, int64_t BH, int64_t Tq, int64_t Tk, int64_t d, int64_t dv,
                              bool causal, double scale, const nbi_rows *lay) {
    const nbi_rows *lq = lay ? &lay[0] : NULL, *lk = lay ? &lay[1] : NULL, *lv = lay ? &lay[2] : NULL,
                   *lg = lay ? &lay[3] : NULL;
    double *s = nbi_alloc(sizeof(double) * (size_t)(2 * Tk + d + Tk * (d + dv)));
    if (!s) return -1;
    double *ds = s + Tk, *aq = ds + Tk, *ak = aq + d, *av = ak + Tk * d;
    for (int64_t b = 0; b < BH; b++) {
        for (int64_t x = 0; x < Tk * (d + dv); x++) ak[x] = 0;
        for (int64_t i = 0; i < Tq; i++) {
            (void)attn_scores(dt, s, q, k, mask, msb, msq, b, i, Tq, Tk, d, causal, scale, lay);
            double L = lse[b * Tq + i], D = 0;
            const int64_t gi = arow(lg, b, i, Tq, dv), qi = arow(lq, b, i, Tq, d);
            for (int64_t c = 0; c < dv; c++) D += load(dt, g, gi + c) * load(dt, out, (b * Tq + i) * dv + c);
            for (int64_t c = 0; c < d; c++) aq[c] = 0;
            for (int64_t j = 0; j < Tk; j++) {
                bool seen = !(causal && j > i + Tk - Tq);
                double p = seen ? exp(s[j] - L) : 0.0, dp = 0;
                for (int64_t c = 0; c < dv && seen; c++) dp += load(dt, g, gi + c) * load(dt, v, arow(lv, b, j, Tk, dv) + c);
                ds[j] = seen ? p * (dp - D) : 0.0;
                if (dmask) store(dt, dmask, (b * Tq + i) * Tk + j, ds[j]);
                if (!seen) continue;
                for (int64_t c = 0; c < d; c++) {
                    aq[c] += ds[j] * load(dt, k, arow(lk, b, j, Tk, d) + c);
                    ak[j * d + c] += ds[j] * load(dt, q, qi + c);
                }
                for (int64_t c = 0; c < dv; c++) av[j * dv + c] += p * load(dt, g, gi + c);
            }
            for (int64_t c = 0; c < d; c++) store(dt, dq, (b * Tq + i) * d + c, scale * aq[c]);
        }
        for (int64_t x = 0; x < Tk * d; x++) store(dt, dk, b * Tk * d + x, scale * ak[x]);
        for (int64_t x = 0; x < Tk * dv; x++) store(dt, dvv, b * Tk * dv + x, av[x]);
    }
    nbi_dealloc(s);
    return 0;
}

/* --------------------------------------------------------------- table ---- */

static const nbi_backend reference = {
    .name = "reference",
    .device = {NB_DEV_CPU, 0},
    .alloc = nbi_alloc,
    .dealloc = nbi_dealloc,
    .to_host = copy_bytes,
    .from_host = copy_bytes,
    .fill = ref_fill,
    .copy = ref_copy,
    .unary = ref_unary,
    .binary = ref_binary,
    .where = ref_where,
    .reduce = ref_reduce,
    .cumsum = nbi_ref_cumsum,
    .gemm = ref_gemm,
    .matmul = ref_matmul,
    .bias_relu = ref_bias_relu,
    .relu_mask_colsum = ref_relu_mask_colsum,
    .linalg = nbi_ref_linalg,
    .softmax = ref_softmax,
    .cross_entropy = ref_cross_entropy,
    .cross_entropy_grad = ref_cross_entropy_grad,
    .layer_norm = ref_layer_norm,
    .layer_norm_grad = ref_layer_norm_grad,
    .index_check = ref_index_check,
    .index_move = ref_index_move,
    .update = ref_update,
    .first_nonfinite = ref_first_nonfinite,
    .rank_mean = ref_rank_mean,
    .bernoulli = nbi_ref_bernoulli,
    .uniform = nbi_ref_uniform,
    .normal = nbi_ref_normal,
    .attention = ref_attention,
    .attention_grad = ref_attention_grad,
    .batch_norm = ref_batch_norm,
    .batch_norm_grad = ref_batch_norm_grad,
    .conv2d = ref_conv2d,
    .conv2d_input = ref_conv2d_input,
    .conv2d_weight = ref_conv2d_weight,
    .max_pool2d = ref_max_pool2d,
    .max_pool2d_grad = ref_max_pool2d_grad,
    /* conv2d, pool2d and their gradients: not written yet (NULL) */
};

const nbi_backend *nbi_backend_reference(void) { return &reference; }

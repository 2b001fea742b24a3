/*
 * backend.h - the contract between the ops and the kernels that do the work.
 *
 * A backend is one table of kernels (struct nbi_backend) for one device. Ops
 * validate their arguments, allocate their results through the tensor's
 * storage, and call kernels through the table of the backend their operands
 * live on (nbi_be(t)); they never call a kernel by name and never do
 * arithmetic on data pointers. The engine and core do the same.
 *
 * Kernels work on raw pointers, sizes and strides. A strided operand comes as
 * an nbi_arr: a pointer to its element 0, its dtype, rank, shape and strides
 * (in elements) - the geometry of a view and nothing else (no reference
 * count, no graph). Row kernels take contiguous pointers and their sizes, with
 * the shapes written in a comment, as llm.c writes them.
 *
 * What every kernel guarantees (docs/DESIGN.md, "The backend contract"):
 *  - arguments are valid: the op checked shapes, dtypes, index ranges and
 *    overflow before the call; a kernel only reports running out of memory
 *    (a return value of -1, nothing written that the caller keeps);
 *  - results do not depend on the thread count: work is split so that every
 *    output element is computed by the same operations in the same order
 *    whatever the cut (sums across a split are combined in a fixed order);
 *  - rounding is stated per kernel below and per op in docs/OPS.md; the
 *    reference backend (src/backend/ref/) is the oracle every fast kernel is
 *    compared with (tests/test_backend_ops.c);
 *  - a kernel never prints, aborts or records an error message: the op does.
 *
 * Adding a kernel: add its slot here with its contract, write it in the
 * reference backend (plain C, one thread, written for clarity), write the
 * fast one in src/backend/cpu/ (or leave the slot NULL: nbi_has_kernel says
 * so and the op reports "backend cpu has no kernel 'x'"), and add its cases
 * to tests/test_backend_ops.c. Adding a backend: fill a table, give it a
 * device, and make nbi_backend_for return it for that device.
 */
#ifndef NABLA_BACKEND_H
#define NABLA_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "nabla.h"

#ifndef NBI_API
#if defined(__GNUC__)
#define NBI_API __attribute__((visibility("hidden")))
#else
#define NBI_API
#endif
#endif

/* The geometry of a 2-D convolution (nb_conv2d): x (N, C, H, W), w (O, C/G, KH, KW), y (N, O, OH, OW) with
   OH = (H + 2 ph - dh (KH - 1) - 1) / sh + 1 and OW likewise; G groups divide C and O. */
typedef struct nbi_conv {
    int64_t N, C, H, W, O, G, KH, KW, OH, OW;
    int64_t sh, sw, ph, pw, dh, dw; /* stride, padding, dilation */
} nbi_conv;

/* A strided array as a kernel sees it. shape and strides have rank entries;
   data points at element 0 (the storage pointer plus the view's offset). */
typedef struct nbi_arr {
    char *data;
    nb_dtype dtype;
    int rank;
    int64_t numel;
    const int64_t *shape;
    const int64_t *strides; /* in elements; 0 along a broadcast axis */
} nbi_arr;

/* The address of the element `offset` elements into storage memory base, for a dtype of esize bytes: the one
   place a storage and a view's offset become an address (nbi_arr_of in src/core/internal.h calls it). */
static inline char *nbi_addr(char *base, int64_t offset, int64_t esize) { return base + offset * esize; }

/* Whether a geometry is row-major without gaps, axes of size 1 aside. Without elements it is, whatever its
   strides: there is nothing to lay out (and a fresh (n, 0) tensor's strides count the size-0 axis as 1). */
static inline bool nbi_geom_contig(int rank, const int64_t *shape, const int64_t *strides, int64_t numel) {
    if (numel == 0) return true;
    int64_t s = 1;
    for (int i = rank - 1; i >= 0; i--) {
        if (shape[i] != 1 && strides[i] != s) return false;
        s *= shape[i];
    }
    return true;
}

/* Elementwise binary ops. The *_GRAD kinds are first-order backward rules in
   one pass (a = G, b = the op's output or input), each rounded step by step as
   the composite rule: G (1 - R R), G (R (1 - R)), G [X > 0]. */
typedef enum {
    NBI_B_ADD, NBI_B_SUB, NBI_B_MUL, NBI_B_DIV, NBI_B_POW, NBI_B_GT, NBI_B_LT, NBI_B_EQ, NBI_B_COPY2,
    NBI_B_TANH_GRAD, NBI_B_SIGMOID_GRAD, NBI_B_RELU_GRAD,
    /* transformer ops: G gelu_tanh'(X) (a = G, b = X); the reference computes it in double by
       src/backend/gelu_tanh.h's nbi_gelu_tanh_grad_d and rounds once (f64: the same bits in every set); a fast
       set may take e^(-2u) from an f32 exp for f32 (within a few ulp) */
    NBI_B_GELU_TANH_GRAD
} nbi_binop;
/* Elementwise unary ops; c is the op's parameter (SCALE, ADDC, POWC, LEAKY). */
typedef enum {
    NBI_U_NEG, NBI_U_EXP, NBI_U_LOG, NBI_U_SQRT, NBI_U_ABS, NBI_U_SIN, NBI_U_COS, NBI_U_TANH,
    NBI_U_SIGMOID, NBI_U_RELU, NBI_U_LEAKY, NBI_U_GELU, NBI_U_ERF, NBI_U_SIGN, NBI_U_SCALE, NBI_U_ADDC,
    NBI_U_POWC, NBI_U_COPY, NBI_U_LOG1P, NBI_U_EXPM1, NBI_U_SOFTPLUS,
    /* transformer ops: GELU's tanh form x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), evaluated as
       x sigmoid(2 sqrt(2/pi) (x + 0.044715 x^3)) (src/backend/gelu_tanh.h): f64 the same bits in every
       kernel set, f32 within 1 ulp (docs/OPS.md) */
    NBI_U_GELU_TANH
} nbi_unop;
typedef enum { NBI_R_SUM, NBI_R_MAX } nbi_redop;
typedef enum { NBI_LA_INV, NBI_LA_DET, NBI_LA_LOGDET } nbi_linalg_kind;

/* One optimizer step over n elements. */
typedef enum { NBI_UPD_SGD, NBI_UPD_ADAM, NBI_UPD_ADAMW } nbi_upd_kind;
typedef struct {
    nbi_upd_kind kind;
    double lr, beta1, beta2, eps, wd; /* beta1: SGD's momentum */
    double bc1, bc2;                  /* Adam's bias corrections 1 - beta^t */
    bool nesterov, first;             /* SGD: Nesterov momentum; the first step (buffer = d) */
} nbi_update;

/* Options of the cross-entropy kernels (nb_cross_entropy_ex): ignored rows, label smoothing, per-row terms
   and weights. */
typedef struct {
    int64_t ignore;  /* a row whose target equals it has term 0 and gradient row 0; every other target is in [0, C) */
    double eps;      /* label smoothing, in [0, 1] */
    double *rows;    /* cross_entropy: each row's term (N), or NULL */
    const double *w; /* cross_entropy_grad: each row's weight (N) in place of gs, or NULL */
} nbi_ce_opts;

/* Where an attention operand (BH, T, n) keeps its rows: row t of batch-head b at element
   (b / nh) bs + (b % nh) hs + t rs of the data, its n values contiguous (a contiguous operand: nh 1, bs T n,
   hs 0, rs n). The batch-heads of a (B, NH, T, n) view of a (B, T, 3, NH, n) tensor, say, without a copy. */
typedef struct {
    int64_t nh, bs, hs, rs;
} nbi_rows;

/* The element offset of row t of batch-head b under L. */
static inline int64_t nbi_rows_at(const nbi_rows *L, int64_t b, int64_t t) {
    return (b / L->nh) * L->bs + (b % L->nh) * L->hs + t * L->rs;
}

typedef struct nbi_backend {
    const char *name;  /* "cpu", "reference" */
    nb_device device;

    /* ---- memory ---- */
    /* bytes (> 0) of device memory, 64-byte aligned, uninitialised; NULL when out of memory. */
    void *(*alloc)(size_t bytes);
    void (*dealloc)(void *p);
    /* Copies of bytes between host memory and this device's memory (either may be the same on a host backend). */
    void (*to_host)(void *host_dst, const void *dev_src, size_t bytes);
    void (*from_host)(void *dev_dst, const void *host_src, size_t bytes);

    /* ---- strided elementwise (out has its own geometry; inputs broadcast to out's shape) ---- */
    /* dst (any strides) = v, converted to dst's dtype (v is a valid i64 for i64). */
    void (*fill)(const nbi_arr *dst, double v);
    /* dst (any strides) = src broadcast, converted to dst's dtype (through double; i64 to i64 exactly). */
    void (*copy)(const nbi_arr *dst, const nbi_arr *src);
    /* out = op(a; c), out and a of one float dtype (i64 for NEG/ABS/SIGN/COPY/SCALE/ADDC only);
       out may alias a exactly (in place). f32 rounds as the f32 libm function or better:
       exp, log, tanh, sigmoid, erf, gelu within 1 ulp (docs/OPS.md gives each kernel set's bound). */
    void (*unary)(nbi_unop op, const nbi_arr *out, const nbi_arr *a, double c);
    /* out = a op b in out's dtype (all three share it); out may alias a exactly (in place). Rounded once per
       operation, in the dtype: bit-identical in every kernel set. GT/LT/EQ give 1 or 0. */
    void (*binary)(nbi_binop op, const nbi_arr *out, const nbi_arr *a, const nbi_arr *b);
    /* Optional (NULL: the unary op and NBI_B_GELU_TANH_GRAD are used): f32 GELU (tanh form) of contiguous x (n)
       into y with unary's bits, keeping e (n) = e^(-2u) rounded to f32 for the gradient; and o (n) =
       g gelu_tanh'(x) from that e (no exps), in double, rounded once. Other dtypes: not called. */
    void (*gelu_tanh_keep)(nb_dtype dt, void *y, void *e, const void *x, int64_t n);
    void (*gelu_tanh_grad_kept)(nb_dtype dt, void *o, const void *g, const void *x, const void *e, int64_t n);
    /* out = cond != 0 ? a : b (cond any dtype; a, b of out's dtype). */
    void (*where)(const nbi_arr *out, const nbi_arr *cond, const nbi_arr *a, const nbi_arr *b);
    /* out (contiguous, the kept axes of a in order) = the sum or max of a over the axes in mask (bit i:
       axis i), accumulated in double, a sum divided by div before rounding to out's dtype. NaN propagates
       through max. Sums may be associated differently by different kernel sets (docs/OPS.md bounds them).
       0, or -1 out of memory. */
    int (*reduce)(nbi_redop op, const nbi_arr *out, const nbi_arr *a, uint32_t mask, double div);
    /* x (contiguous, outer x n x inner) = its cumulative sum along the middle axis, in place, accumulated in
       double and rounded once per element. */
    void (*cumsum)(nb_dtype dt, void *x, int64_t outer, int64_t n, int64_t inner);

    /* ---- products ---- */
    /* C (m x n, rows ldc apart) (+)= A (m x k) B (k x n), A[i,p] at a[i rsa + p csa], B[p,j] at b[p rsb + j csb];
       f32 or f64 (dt), accumulated in dt. Different kernel sets may associate the k products differently.
       0, or -1 out of memory. */
    int (*gemm)(nb_dtype dt, int64_t m, int64_t n, int64_t k, const void *a, int64_t rsa, int64_t csa,
                const void *b, int64_t rsb, int64_t csb, void *c, int64_t ldc, bool accumulate);
    /* out (contiguous (..., m, n)) = a (..., m, k) @ b (..., k, n), the batch axes of a and b broadcast to
       out's (rank >= 2 each, out's rank the larger; a vector operand is given as a matrix). 0, or -1. */
    int (*matmul)(const nbi_arr *out, const nbi_arr *a, const nbi_arr *b);
    /* y (m x n, contiguous) += b (n; NULL for none) on every row, then relu when asked. */
    void (*bias_relu)(nb_dtype dt, void *y, int64_t m, int64_t n, const void *b, bool relu);
    /* r (m x n) = g [y > 0] and sums (n) = the column sums of r, summed in double row by row. 0, or -1. */
    int (*relu_mask_colsum)(nb_dtype dt, void *r, const void *g, const void *y, void *sums, int64_t m, int64_t n);
    /* Batched LU of x (..., n, n, any strides) into out: the inverse (contiguous (..., n, n)), the determinant
       or log-determinant (contiguous (...)), in double, with partial pivoting; a matrix with a NaN gives NaN
       (all-NaN inverse). Returns 0; 1 when an inverse is asked of a singular matrix (its index in *bad);
       -1 out of memory. */
    int (*linalg)(nbi_linalg_kind kind, const nbi_arr *out, const nbi_arr *x, int64_t *bad);

    /* ---- rows: softmax, cross-entropy, layer norm (f32 or f64, contiguous) ---- */
    /* y (outer x n x inner) = softmax (or log-softmax) of x along the middle axis: max-subtracted, a row of
       -inf gives NaN (softmax) as PyTorch, NaN propagates. The reference rounds each result once from double;
       a fast set may compute f32 rows in f32 within the bounds of docs/OPS.md ("f32 accuracy"). */
    void (*softmax)(nb_dtype dt, void *y, const void *x, int64_t outer, int64_t n, int64_t inner, bool log);
    /* *loss = -sum over rows i of log softmax(x[i])[t[i]] for x (N x C), t (N) i64 in [0, C) at t[i ts],
       summed in row order, and ms (N x 2; NULL: not wanted) = each row's max m (as softmax's) and sum s of
       exp(x - m), in double (f32 rows: the exps may be f32's, docs/OPS.md). N >= 1. With ce (NULL: as just
       said), see nbi_ce_opts: row i's term is (1 - eps) (log s - (x[i, t_i] - m)) + eps (m + log s -
       mean_k x[i, k]) (eps 0: the first part alone), 0 where t_i is ce->ignore; *loss is their sum in row
       order and ce->rows (when not NULL) gets each. ex: NULL, or room for N x C values of dt (given with ms)
       that the kernel may fill with what its cross_entropy_grad reads back instead of recomputing (the CPU
       set: f32 rows' exps); a set that has no use for it leaves it alone. 0, or -1 out of memory. */
    int (*cross_entropy)(nb_dtype dt, double *loss, const void *x, const int64_t *t, int64_t ts, int64_t N,
                         int64_t C, double *ms, void *ex, const nbi_ce_opts *ce);
    /* dx (N x C) = gs (exp(x - m) / s - onehot(t[i])) in double, rounded once (f32: within docs/OPS.md's
       bound, the exps f32's): the first-order gradient of
       cross_entropy's mean (gs = g / N), with each row's m and s from ms (N x 2, as cross_entropy wrote it)
       or, when ms is NULL, recomputed (the same values). With ce: row i is w_i (p - (1 - eps) onehot(t_i) -
       eps / C), w_i = ce->w[i] (or gs when ce->w is NULL), and exactly 0 where t_i is ce->ignore. ex: NULL,
       or the buffer cross_entropy was given with ms for these x (the same bits as without it); dx may be ex
       itself (the op writes the gradient over the kept exps when the graph is released with this backward).
       0, or -1 out of memory. */
    int (*cross_entropy_grad)(nb_dtype dt, void *dx, const void *x, const int64_t *t, int64_t ts, int64_t N,
                              int64_t C, double gs, const double *ms, const void *ex, const nbi_ce_opts *ce);
    /* y (rows x D) = (x - mean) / sqrt(var + eps) * gamma + beta per row of x (rows x D), var biased;
       gamma, beta (D) or NULL; mean and rstd (rows, doubles) written when not NULL. 0, or -1. */
    int (*layer_norm)(nb_dtype dt, void *y, const void *x, const void *gamma, const void *beta, int64_t rows,
                      int64_t D, double eps, double *mean, double *rstd);
    /* The closed-form first-order gradient of layer_norm: dx (rows x D), dgamma and dbeta (D) (each NULL
       when not wanted) from g (rows x D), x and gamma (D, or NULL for 1), with the rows' mean and rstd
       (rows each) as layer_norm wrote them, or NULL to recompute them (the same values). Column sums over
       rows in row order, whatever the thread count. 0, or -1 out of memory. */
    int (*layer_norm_grad)(nb_dtype dt, void *dx, void *dgamma, void *dbeta, const void *g, const void *x,
                           const void *gamma, int64_t rows, int64_t D, double eps, const double *mean,
                           const double *rstd);

    /* ---- gather / scatter ---- */
    /* -1 when every value of idx (i64, any strides) is in [lo, hi), else the row-major position of the first
       that is not (its value in *bad): [-n, n) for indices along an axis of n, [0, C) for class targets. */
    int64_t (*index_check)(const nbi_arr *idx, int64_t lo, int64_t hi, int64_t *bad);
    /* Move elements between dst and src along axis ax by idx (negative indices count from the end of that
       axis of the indexed operand). index_on_dst false: dst[.., k, ..] = src[.., idx[k], ..] (select; walk
       dst), true: dst[.., idx[k], ..] (+)= src[.., k, ..] (scatter; walk src). elementwise: idx has the walked
       operand's shape and is read per element (gather / scatter_add); else idx is 1-D along ax. add: += in
       dst's dtype, in walk order. */
    void (*index_move)(const nbi_arr *dst, const nbi_arr *src, const nbi_arr *idx, int ax, bool elementwise,
                       bool add, bool index_on_dst);

    /* ---- optimizers ---- */
    /* One update in place over contiguous p, g, m, v (n each, dtype dt; m and v unused as the kind needs),
       in dt, each element independent: bit-identical in every kernel set. */
    void (*update)(const nbi_update *u, nb_dtype dt, void *p, const void *g, void *m, void *v, int64_t n);
    /* -1 when all n values of x are finite, else the index of the first that is not. */
    int64_t (*first_nonfinite)(nb_dtype dt, const void *x, int64_t n);

    /* ---- random fills (the stream of rng is consumed in element order: the same values on every backend) ---- */
    /* x (n) = 0 with probability p, else keep (dropout's mask), one nb_rng_uniform per element. */
    void (*bernoulli)(nb_dtype dt, void *x, int64_t n, nb_rng *rng, double p, double keep);
    /* x (n) = lo + (hi - lo) u, u = nb_rng_uniform. */
    void (*uniform)(nb_dtype dt, void *x, int64_t n, nb_rng *rng, double lo, double hi);
    /* x (n) = mean + std z, z standard normal by Box-Muller from pairs of nb_rng_uniform. */
    void (*normal)(nb_dtype dt, void *x, int64_t n, nb_rng *rng, double mean, double std);

    /* ---- scaled dot-product attention (f32 or f64 dt) ---- */
    /* q, k, v and g are read through their layouts lay[0..3] (nbi_rows: any row and batch strides, each row's
       values contiguous; NULL: all four contiguous); out, lse, dq, dk, dvv and dmask are contiguous. */
    /* For each batch-head b < BH, query row i < Tq and key j < Tk:
         s[b,i,j] = scale (q[b,i,:] . k[b,j,:]) + mask[b,i,j]      (no mask term when mask is NULL)
         p[b,i,:] = softmax(s[b,i,:]),  out[b,i,:] = sum_j p[b,i,j] v[b,j,:]
         lse[b,i] = log sum_j exp(s[b,i,j])                       (doubles)
       out (BH, Tq, dv), lse (BH, Tq), q (BH, Tq, d), k (BH, Tk, d), v (BH, Tk, dv); the mask holds additive values
       of dt, element (b, i, j) at mask[b msb + i msq + j] (msb or msq 0: broadcast along that axis). causal: query
       i sees keys j <= i + Tk - Tq only (the others are left out of the sum: p = 0). A row that sees no key (all
       s = -inf, or causal with i + Tk - Tq < 0) gives out NaN and lse -inf; NaN propagates. The reference computes
       each row in double and rounds once; a fast set may compute f32 in f32 (online softmax over key blocks)
       within the bound of docs/OPS.md. Tq, Tk, d, dv >= 1. 0, or -1 out of memory. */
    int (*attention)(nb_dtype dt, void *out, double *lse, const void *q, const void *k, const void *v,
                     const void *mask, int64_t msb, int64_t msq, int64_t BH, int64_t Tq, int64_t Tk, int64_t d,
                     int64_t dv, bool causal, double scale, const nbi_rows *lay);
    /* The first-order gradient of attention from g = dL/dout (BH, Tq, dv), with q, k, v, mask, causal and scale as
       given to attention and its out and lse: with p recomputed from lse (p = exp(s - lse), 0 where causal
       leaves a key out), D[b,i] = sum_c g[b,i,c] out[b,i,c] and dS = p (g v^T - D):
         dq (BH, Tq, d) = scale dS k,  dk (BH, Tk, d) = scale dS^T q,  dvv (BH, Tk, dv) = p^T g,
         dmask (BH, Tq, Tk; NULL: not wanted) = dS (0 where causal leaves a key out).
       Sums over rows in row order whatever the thread count. 0, or -1 out of memory. */
    int (*attention_grad)(nb_dtype dt, void *dq, void *dk, void *dvv, void *dmask, const void *g, const void *q,
                          const void *k, const void *v, const void *out, const double *lse, const void *mask,
                          int64_t msb, int64_t msq, int64_t BH, int64_t Tq, int64_t Tk, int64_t d, int64_t dv,
                          bool causal, double scale, const nbi_rows *lay);

    /* ---- 2-D convolution (f32 or f64 dt, contiguous NCHW operands; nbi_conv geometry below) ---- */
    /* y (N, O, OH, OW) = conv(x (N, C, H, W), w (O, C/G, KH, KW)) + b (O; NULL: none), PyTorch's conv2d:
         y[n,o,i,j] = b[o] + sum_{c<C/G, p<KH, q<KW} w[o,c,p,q] x[n, g C/G + c, i sh - ph + p dh, j sw - pw + q dw]
       with g = o / (O/G) and the x terms outside the image left out (zero padding). The reference sums each
       output in double and rounds once; a fast set may sum f32 in f32 in another grouping (docs/OPS.md). */
    int (*conv2d)(nb_dtype dt, void *y, const void *x, const void *w, const void *b, const nbi_conv *cv);
    /* The gradient of conv2d with respect to x for dy = dL/dy (N, O, OH, OW): dx (N, C, H, W), the transposed
       convolution dx[n, c', h, w'] = sum over (o, i, j, p, q) with h = i sh - ph + p dh, w' = j sw - pw + q dw of
       w[o, c, p, q] dy[n, o, i, j]. */
    int (*conv2d_input)(nb_dtype dt, void *dx, const void *dy, const void *w, const nbi_conv *cv);
    /* The gradient with respect to w: dw (O, C/G, KH, KW), dw[o,c,p,q] = sum_{n,i,j} dy[n,o,i,j] x[n, g C/G + c, ...];
       the sum over images is combined in a fixed order whatever the thread count. */
    int (*conv2d_weight)(nb_dtype dt, void *dw, const void *x, const void *dy, const nbi_conv *cv);

    /* ---- batch normalisation with the batch's statistics (f32 or f64 dt; x contiguous (N, C, S)) ---- */
    /* For each channel c, over its M = N S values: mean[c], var[c] (biased) and rstd[c] = 1 / sqrt(var + eps) in
       double (the values summed in (n, s) order), then y = (x - mean) rstd gamma[c] + beta[c] (gamma, beta NULL:
       1 and 0), rounded once. 0, or -1 out of memory. */
    int (*batch_norm)(nb_dtype dt, void *y, double *mean, double *rstd, double *var, const void *x, const void *gamma,
                      const void *beta, int64_t N, int64_t C, int64_t S, double eps);
    /* The first-order gradient from g (N, C, S), with xh = (x - mean) rstd, per channel in double:
         dbeta = sum g,  dgamma = sum g xh,  dx = gamma rstd (g - dbeta / M - xh dgamma / M)
       (gamma NULL: 1; dx, dgamma or dbeta NULL: not wanted). 0, or -1 out of memory. */
    int (*batch_norm_grad)(nb_dtype dt, void *dx, void *dgamma, void *dbeta, const void *g, const void *x,
                           const void *gamma, const double *mean, const double *rstd, int64_t N, int64_t C, int64_t S);

    /* ---- 2-D max pooling (f32 or f64 dt, contiguous x (N, C, H, W); nbi_conv geometry with O and G unused) ---- */
    /* y (N, C, OH, OW) the largest x of each window and idx (N, C, OH, OW) its position h W + w in its (H, W)
       plane (taps in the padding left out), PyTorch's rule: scanning the window row by row, a value replaces the
       current one when it is greater or NaN (so the first of tied maxima, the last NaN). Exact on every set. */
    void (*max_pool2d)(nb_dtype dt, void *y, int64_t *idx, const void *x, const nbi_conv *cv);
    /* dx (N, C, H, W) = 0, then dx[n, c, idx[n, c, i, j]] += g[n, c, i, j] over (i, j) in order (each plane
       summed in that order whatever the thread count). */
    void (*max_pool2d_grad)(nb_dtype dt, void *dx, const void *g, const int64_t *idx, const nbi_conv *cv);

    /* ---- data parallelism (nabla/dist.h) ---- */
    /* dst (n, contiguous, this device's memory) = the mean over p >= 1 ranks of src (host memory: rank r's n
       values at src + r stride, dtype dt): summed in double in rank order, divided by p, rounded once to dt.
       Bit-identical in every kernel set, for any thread count. */
    void (*rank_mean)(nb_dtype dt, void *dst, const void *src, int64_t stride, int64_t n, int p);
} nbi_backend;

/* The kernel sets. */
NBI_API const nbi_backend *nbi_backend_cpu(void);       /* src/backend/cpu/: SIMD and the thread pool */
NBI_API const nbi_backend *nbi_backend_reference(void); /* src/backend/ref/: plain C, one thread: the oracle */
/* The table for a device: the CPU's is the fast set, or the reference set when the environment has
   NABLA_KERNELS=reference when the library first asks. NULL when nabla has no backend for dev. */
NBI_API const nbi_backend *nbi_backend_for(nb_device dev);
/* Make be the CPU's kernel set for tensors made from now on (tests: tests/test_backend_ops.c runs every op on
   both sets in one process; tensors keep the set they were made with). */
NBI_API void nbi_use_backend(const nbi_backend *be);
/* Whether backend be has the kernel in slot `member` of its table. */
#define nbi_has_kernel(be, member) ((be)->member != NULL)

/* The matmul driver both CPU kernel sets share: the batch loop over gemm (src/backend/matmul.c). */
NBI_API int nbi_matmul_driver(const nbi_backend *be, const nbi_arr *out, const nbi_arr *a, const nbi_arr *b);

#endif

/*
 * cpu.h - the fast CPU kernel set (internal): the functions behind the "cpu"
 * table of src/backend/cpu/cpu.c. Each has the contract of its slot in
 * src/backend/backend.h.
 */
#ifndef NABLA_BACKEND_CPU_H
#define NABLA_BACKEND_CPU_H

#include "../backend.h"

#ifndef NBI_API
#define NBI_API __attribute__((visibility("hidden")))
#endif

/* cpu.c: give back the calling thread's packing buffers and, with all, stop the worker pool (registered with
   nbi_mem_on_release). */
NBI_API void nbi_cpu_release(bool all);

/* kernels.c: strided elementwise maths, copies, reductions, the dense epilogue, optimizer updates */
NBI_API void nbi_cpu_fill(const nbi_arr *dst, double v);
NBI_API void nbi_cpu_copy(const nbi_arr *dst, const nbi_arr *src);
NBI_API void nbi_cpu_unary(nbi_unop op, const nbi_arr *out, const nbi_arr *a, double c);
NBI_API void nbi_cpu_binary(nbi_binop op, const nbi_arr *out, const nbi_arr *a, const nbi_arr *b);
NBI_API void nbi_cpu_gelu_tanh_keep(nb_dtype dt, void *y, void *e, const void *x, int64_t n);
NBI_API void nbi_cpu_gelu_tanh_grad_kept(nb_dtype dt, void *o, const void *g, const void *x, const void *e, int64_t n);
NBI_API void nbi_cpu_where(const nbi_arr *out, const nbi_arr *cond, const nbi_arr *a, const nbi_arr *b);
NBI_API int nbi_cpu_reduce(nbi_redop op, const nbi_arr *out, const nbi_arr *a, uint32_t mask, double div);
NBI_API void nbi_cpu_bias_relu(nb_dtype dt, void *y, int64_t m, int64_t n, const void *b, bool relu);
NBI_API int nbi_cpu_relu_mask_colsum(nb_dtype dt, void *r, const void *g, const void *y, void *sums, int64_t m,
                                     int64_t n);
NBI_API void nbi_cpu_update(const nbi_update *u, nb_dtype dt, void *p, const void *g, void *m, void *v, int64_t n);
NBI_API int64_t nbi_cpu_first_nonfinite(nb_dtype dt, const void *x, int64_t n);
NBI_API void nbi_cpu_rank_mean(nb_dtype dt, void *dst, const void *src, int64_t stride, int64_t n, int p);
/* Softmax statistics of rows rows of n contiguous f32 or f64 values at x, in double with libm's exp (rows.c's f64
   rows; f32 rows have kernels of their own in f32): m[i] = the max of row i (0 when every value is -inf, NaN when
   one is NaN), e[i n + k] = exp(x - m[i]) (rows x n doubles), s[i] = the sum of row i of e in order. */
NBI_API void nbi_cpu_softmax_rows(nb_dtype dt, const void *x, int64_t rows, int64_t n, double *e, double *m,
                                  double *s);

/* v (n) = exp(v) in place, libm's (the f64 rows). */
NBI_API void nbi_cpu_exp_block(double *v, int64_t n);

/* rows.c: softmax, log-softmax, cross-entropy and layer norm rows, over the thread pool (f32 softmax rows and
   cross-entropy in f32 with the exps of vmath.h; bounds in rows.c and docs/OPS.md) */
NBI_API void nbi_cpu_softmax(nb_dtype dt, void *y, const void *x, int64_t outer, int64_t n, int64_t inner, bool log);
NBI_API int nbi_cpu_cross_entropy(nb_dtype dt, double *loss, const void *x, const int64_t *t, int64_t ts, int64_t N,
                                  int64_t C, double *ms, void *ex, const nbi_ce_opts *ce);
NBI_API int nbi_cpu_cross_entropy_grad(nb_dtype dt, void *dx, const void *x, const int64_t *t, int64_t ts,
                                       int64_t N, int64_t C, double gs, const double *ms, const void *ex,
                                       const nbi_ce_opts *ce);
NBI_API int nbi_cpu_layer_norm(nb_dtype dt, void *y, const void *x, const void *gamma, const void *beta,
                               int64_t rows, int64_t D, double eps, double *mean, double *rstd);
NBI_API int nbi_cpu_layer_norm_grad(nb_dtype dt, void *dx, void *dgamma, void *dbeta, const void *g, const void *x,
                                    const void *gamma, int64_t rows, int64_t D, double eps, const double *mean,
                                    const double *rstd);

/* attention.c: scaled dot-product attention, flash-style, over the thread pool (backend.h's contract) */
/* batchnorm.c: batch normalisation with the batch's statistics */
NBI_API int nbi_cpu_batch_norm(nb_dtype dt, void *y, double *mean, double *rstd, double *var, const void *x,
                               const void *gamma, const void *beta, int64_t N, int64_t C, int64_t S, double eps);
NBI_API int nbi_cpu_batch_norm_grad(nb_dtype dt, void *dx, void *dgamma, void *dbeta, const void *g, const void *x,
                                    const void *gamma, const double *mean, const double *rstd, int64_t N, int64_t C,
                                    int64_t S);
/* conv.c: 2-D convolution (im2col on the packed GEMM) */
NBI_API int nbi_cpu_conv2d(nb_dtype dt, void *y, const void *x, const void *w, const void *b, const nbi_conv *cv);
NBI_API int nbi_cpu_conv2d_input(nb_dtype dt, void *dx, const void *dy, const void *w, const nbi_conv *cv);
NBI_API int nbi_cpu_conv2d_weight(nb_dtype dt, void *dw, const void *x, const void *dy, const nbi_conv *cv);
/* winograd.c: f32 3x3 stride-1 convolution by F(2x2, 3x3), for the geometries nbi_cpu_winograd_ok accepts
   (dilation 1, one group, padding <= 2, 8 or more channels in and out); same contracts as the three above */
NBI_API bool nbi_cpu_winograd_ok(const nbi_conv *cv);
NBI_API int nbi_cpu_winograd_conv2d(float *y, const float *x, const float *w, const float *b, const nbi_conv *cv);
NBI_API int nbi_cpu_winograd_conv2d_input(float *dx, const float *dy, const float *w, const nbi_conv *cv);
NBI_API int nbi_cpu_winograd_conv2d_weight(float *dw, const float *x, const float *dy, const nbi_conv *cv);
/* pool.c: max pooling */
NBI_API void nbi_cpu_max_pool2d(nb_dtype dt, void *y, int64_t *idx, const void *x, const nbi_conv *cv);
NBI_API void nbi_cpu_max_pool2d_grad(nb_dtype dt, void *dx, const void *g, const int64_t *idx, const nbi_conv *cv);
NBI_API int nbi_cpu_attention(nb_dtype dt, void *out, double *lse, const void *q, const void *k, const void *v,
                              const void *mask, int64_t msb, int64_t msq, int64_t BH, int64_t Tq, int64_t Tk,
                              int64_t d, int64_t dv, bool causal, double scale, const nbi_rows *lay);
NBI_API int nbi_cpu_attention_grad(nb_dtype dt, void *dq, void *dk, void *dvv, void *dmask, const void *g,
                                   const void *q, const void *k, const void *v, const void *out, const double *lse,
                                   const void *mask, int64_t msb, int64_t msq, int64_t BH, int64_t Tq, int64_t Tk,
                                   int64_t d, int64_t dv, bool causal, double scale, const nbi_rows *lay);

/* misc.c: index checks and moves */
NBI_API int64_t nbi_cpu_index_check(const nbi_arr *idx, int64_t lo, int64_t hi, int64_t *bad);
NBI_API void nbi_cpu_index_move(const nbi_arr *dst, const nbi_arr *src, const nbi_arr *idx, int ax, bool elementwise,
                                bool add, bool index_on_dst);

#endif

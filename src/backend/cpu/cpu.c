/*
 * cpu.c - the "cpu" kernel table: the fast CPU kernels (SIMD variants chosen
 * at run time, the worker pool of threads.c, the packed GEMM of gemm.c).
 */
#include <string.h>

#include "../../core/internal.h"
#include "cpu.h"
#include "gemm.h"
#include "threads.h"
#include "../ref/ref.h"

void nbi_cpu_release(bool all) {
    nbi_gemm_release_buffers();
    if (all) nbi_pool_shutdown(); /* the workers free theirs as they exit */
}

static void host_copy(void *dst, const void *src, size_t bytes) {
    if (bytes) memcpy(dst, src, bytes);
}

static int cpu_gemm(nb_dtype dt, int64_t m, int64_t n, int64_t k, const void *a, int64_t rsa, int64_t csa,
                    const void *b, int64_t rsb, int64_t csb, void *c, int64_t ldc, bool accumulate) {
    if (dt == NB_F32) return nbi_gemm_f32(m, n, k, a, rsa, csa, b, rsb, csb, c, ldc, accumulate);
    return nbi_gemm_f64(m, n, k, a, rsa, csa, b, rsb, csb, c, ldc, accumulate);
}

static int cpu_matmul(const nbi_arr *out, const nbi_arr *a, const nbi_arr *b) {
    return nbi_matmul_driver(nbi_backend_cpu(), out, a, b);
}

static const nbi_backend cpu_backend = {
    .name = "cpu",
    .device = {NB_DEV_CPU, 0},
    .alloc = nbi_alloc,
    .dealloc = nbi_dealloc,
    .to_host = host_copy,
    .from_host = host_copy,
    .fill = nbi_cpu_fill,
    .copy = nbi_cpu_copy,
    .unary = nbi_cpu_unary,
    .binary = nbi_cpu_binary,
    .gelu_tanh_keep = nbi_cpu_gelu_tanh_keep,
    .gelu_tanh_grad_kept = nbi_cpu_gelu_tanh_grad_kept,
    .where = nbi_cpu_where,
    .reduce = nbi_cpu_reduce,
    .cumsum = nbi_ref_cumsum, /* the reference set's (src/backend/ref/ref.h): no faster version */
    .gemm = cpu_gemm,
    .matmul = cpu_matmul,
    .bias_relu = nbi_cpu_bias_relu,
    .relu_mask_colsum = nbi_cpu_relu_mask_colsum,
    .linalg = nbi_ref_linalg,
    .softmax = nbi_cpu_softmax,
    .cross_entropy = nbi_cpu_cross_entropy,
    .cross_entropy_grad = nbi_cpu_cross_entropy_grad,
    .layer_norm = nbi_cpu_layer_norm,
    .layer_norm_grad = nbi_cpu_layer_norm_grad,
    .attention = nbi_cpu_attention,
    .attention_grad = nbi_cpu_attention_grad,
    .batch_norm = nbi_cpu_batch_norm,
    .batch_norm_grad = nbi_cpu_batch_norm_grad,
    .conv2d = nbi_cpu_conv2d,
    .conv2d_input = nbi_cpu_conv2d_input,
    .conv2d_weight = nbi_cpu_conv2d_weight,
    .max_pool2d = nbi_cpu_max_pool2d,
    .max_pool2d_grad = nbi_cpu_max_pool2d_grad,
    .index_check = nbi_cpu_index_check,
    .index_move = nbi_cpu_index_move,
    .update = nbi_cpu_update,
    .first_nonfinite = nbi_cpu_first_nonfinite,
    .rank_mean = nbi_cpu_rank_mean,
    .bernoulli = nbi_ref_bernoulli,
    .uniform = nbi_ref_uniform,
    .normal = nbi_ref_normal,
};

const nbi_backend *nbi_backend_cpu(void) { return &cpu_backend; }

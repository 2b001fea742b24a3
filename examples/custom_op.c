/*
 * custom_op.c - defining an op by a forward and a backward function, as
 * torch.autograd.Function does (seed 004's MatrixMultiplication): the forward
 * saves x and w for the backward, which returns dl/dx = dl/dy w^T and
 * dl/dw = x^T dl/dy. nb_gradcheck then checks it against central differences.
 */
#include <stdio.h>

#include "nabla.h"

static nb_tensor *mm_forward(nb_ctx *ctx, int n, nb_tensor *const *in, void *ud) {
    (void)n;
    (void)ud;
    nb_ctx_save(ctx, 2, in); /* x, w */
    return nb_matmul(in[0], in[1]);
}

static int mm_backward(nb_ctx *ctx, nb_tensor *dldy, nb_tensor **grads, void *ud) {
    (void)ud;
    nb_tensor *x = nb_ctx_saved(ctx, 0), *w = nb_ctx_saved(ctx, 1);
    grads[0] = nb_matmul(dldy, nb_transpose(w, 0, 1));
    grads[1] = nb_matmul(nb_transpose(x, 0, 1), dldy);
    return grads[0] && grads[1] ? 0 : -1;
}

static nb_tensor *matrix_multiplication(int n, nb_tensor *const *in, void *ud) {
    return nb_custom("MatrixMultiplication", n, in, mm_forward, mm_backward, ud);
}

int main(void) {
    nb_scope_begin();
    nb_tensor *x = nb_from_f64(NB_F64, 2, (int64_t[]){2, 3}, (double[]){1, 2, 3, 4, 5, 6});
    nb_tensor *w = nb_from_f64(NB_F64, 2, (int64_t[]){3, 2}, (double[]){0.5, -1, 0.25, 2, -0.5, 1});
    nb_set_requires_grad(x, true);
    nb_set_requires_grad(w, true);
    nb_tensor *in[2] = {x, w};
    nb_tensor *loss = nb_sum(matrix_multiplication(2, in, NULL));
    if (nb_backward(loss, NULL, 0) != 0) {
        fprintf(stderr, "custom_op: %s\n", nb_last_error());
        nb_scope_end();
        return 1;
    }
    printf("loss = %g\ndl/dx = ", nb_item(loss));
    nb_print(nb_grad(x), stdout);
    printf("dl/dw = ");
    nb_print(nb_grad(w), stdout);
    nb_gradcheck_opts opts = {.second_order = true};
    nb_gradcheck_result r;
    int rc = nb_gradcheck(matrix_multiplication, NULL, 2, in, &opts, &r);
    printf("gradcheck: %s (worst excess %.3g)\n", rc == 0 ? "passed" : "FAILED", r.excess);
    nb_scope_end();
    return rc == 0 ? 0 : 1;
}

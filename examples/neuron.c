/*
 * neuron.c - the seeds' single neuron, y = tanh(x w + b), and its gradients.
 *
 * x = 2, w = -3, b = 0.5 gives y = tanh(-5.5); backward fills dy/dx, dy/dw and
 * dy/db. Build and run with `make run`, or link any program with -lnabla -lm.
 */
#include <stdio.h>

#include "nabla.h"

int main(void) {
    nb_scope_begin();
    nb_tensor *x = nb_scalar(NB_F64, 2.0);
    nb_tensor *w = nb_scalar(NB_F64, -3.0);
    nb_tensor *b = nb_scalar(NB_F64, 0.5);
    nb_set_requires_grad(x, true);
    nb_set_requires_grad(w, true);
    nb_set_requires_grad(b, true);

    nb_tensor *y = nb_tanh(nb_add(nb_mul(x, w), b)); /* the graph is recorded as this runs */
    if (!y || nb_backward(y, NULL, 0) != 0) {
        fprintf(stderr, "neuron: %s\n", nb_last_error());
        nb_scope_end();
        return 1;
    }
    printf("y     = %.6f\n", nb_item(y));
    printf("dy/dx = %.6f\n", nb_item(nb_grad(x)));
    printf("dy/dw = %.6f\n", nb_item(nb_grad(w)));
    printf("dy/db = %.6f\n", nb_item(nb_grad(b)));
    nb_scope_end(); /* frees x, w, b, y, the intermediates and the gradients */
    return 0;
}

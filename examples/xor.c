/*
 * xor.c - the XOR problem, which no linear model can solve, learned by a
 * 2-8-1 MLP: Linear(2, 8), tanh, Linear(8, 1), trained full-batch on the four
 * points with the logistic loss on logits (nb_bce_with_logits_loss) and Adam.
 *
 * It shows the usual training step with nabla/nn.h: open a scope, forward,
 * loss, backward, optimizer step, close the scope (freeing the step's graph);
 * the parameters live outside every scope until nb_module_free.
 * Exits 0 only when all four points are classified correctly.
 */
#include <stdio.h>

#include "nabla.h"
#include "nabla/nn.h"

enum { HIDDEN = 8, STEPS = 500, LOG_EVERY = 100 };

static int fail(const char *what) {
    fprintf(stderr, "xor: %s: %s\n", what, nb_last_error() ? nb_last_error() : "(no message)");
    return 1;
}

int main(void) {
    static const double xs[4][2] = {{0, 0}, {0, 1}, {1, 0}, {1, 1}};
    static const double ys[4] = {0, 1, 1, 0};

    nb_rng rng;
    nb_rng_seed(&rng, 42);
    /* The sequential container owns its layers, so one nb_module_free releases them all. */
    nb_module *layers[3] = {nb_linear(2, HIDDEN, true, NB_INIT_XAVIER, NB_F64, &rng), nb_tanh_layer(),
                            nb_linear(HIDDEN, 1, true, NB_INIT_XAVIER, NB_F64, &rng)};
    nb_module *mlp = nb_sequential(3, layers);
    if (!mlp) return fail("building the model");

    nb_tensor *params[4]; /* 0.weight, 0.bias, 2.weight, 2.bias */
    int np = nb_module_params(mlp, params, NULL, 4);
    nb_optim *opt = np == 4 ? nb_adam(np, params, 0.05, 0.9, 0.999, 1e-8, 0.0) : NULL;
    /* The inputs and labels are made outside every scope and freed at the end. */
    nb_tensor *x = nb_from_f64(NB_F64, 2, (int64_t[]){4, 2}, &xs[0][0]);
    nb_tensor *y = nb_from_f64(NB_F64, 2, (int64_t[]){4, 1}, ys);
    int rc = 1;
    if (!opt || !x || !y) {
        rc = fail("setting up");
        goto done;
    }

    for (int step = 0; step <= STEPS; step++) {
        nb_scope_begin();
        nb_optim_zero_grad(opt);
        nb_tensor *loss = nb_bce_with_logits_loss(nb_forward(mlp, x), y); /* logits (4,1) */
        int bad = !loss || nb_backward(loss, NULL, 0) != 0 || nb_optim_step(opt) != 0;
        if (!bad && step % LOG_EVERY == 0) printf("step %4d  loss %.6f\n", step, nb_item(loss));
        nb_scope_end();
        if (bad) {
            rc = fail("training step");
            goto done;
        }
    }

    /* Evaluation needs no graph: with grad mode off no op is recorded. */
    nb_set_grad_enabled(false);
    nb_scope_begin();
    double p[4];
    nb_tensor *prob = nb_sigmoid(nb_forward(mlp, x));
    if (nb_read_f64(prob, p, 4) != 4) {
        rc = fail("predicting");
    } else {
        int correct = 0;
        for (int i = 0; i < 4; i++) {
            int label = p[i] > 0.5;
            correct += label == (int)ys[i];
            printf("%g xor %g -> p = %.4f (class %d, want %g)\n", xs[i][0], xs[i][1], p[i], label, ys[i]);
        }
        printf("%d/4 correct\n", correct);
        rc = correct == 4 ? 0 : 1;
    }
    nb_scope_end();
    nb_set_grad_enabled(true);

done:
    nb_free(x);
    nb_free(y);
    nb_optim_free(opt);
    nb_module_free(mlp);
    return rc;
}

/*
 * linear_regression.c - fit y = 3x - 2 + noise with one Linear(1, 1) layer,
 * the mean squared error and plain gradient descent (nb_sgd, full batch).
 *
 * The 200 points have x uniform in [-1, 1) and Gaussian noise of standard
 * deviation 0.1, both drawn from a seeded nb_rng, so every run prints the same
 * numbers. Exits 0 only when the learned w and b are within 0.05 of 3 and -2.
 */
#include <math.h>
#include <stdio.h>

#include "nabla.h"
#include "nabla/nn.h"

enum { N = 200, STEPS = 500, LOG_EVERY = 100 };

static int fail(const char *what) {
    fprintf(stderr, "linear_regression: %s: %s\n", what, nb_last_error() ? nb_last_error() : "(no message)");
    return 1;
}

/* A standard normal draw by the Box-Muller transform (1 - u keeps the log finite). */
static double normal(nb_rng *r) {
    double u = 1.0 - nb_rng_uniform(r), v = nb_rng_uniform(r);
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

int main(void) {
    nb_rng rng;
    nb_rng_seed(&rng, 7);
    static double xs[N], ys[N];
    for (int i = 0; i < N; i++) {
        xs[i] = 2.0 * nb_rng_uniform(&rng) - 1.0;
        ys[i] = 3.0 * xs[i] - 2.0 + 0.1 * normal(&rng);
    }
    /* Made outside every scope: they live until nb_free. Shapes (N, 1), one feature per row. */
    nb_tensor *x = nb_from_f64(NB_F64, 2, (int64_t[]){N, 1}, xs);
    nb_tensor *y = nb_from_f64(NB_F64, 2, (int64_t[]){N, 1}, ys);
    nb_module *model = nb_linear(1, 1, true, NB_INIT_XAVIER, NB_F64, &rng); /* y = x w^T + b */
    nb_tensor *params[2] = {NULL, NULL};                                    /* weight (1,1), bias (1) */
    nb_optim *opt = NULL;
    int rc = 1;
    if (!x || !y || !model || nb_module_params(model, params, NULL, 2) != 2 ||
        !(opt = nb_sgd(2, params, 0.1, 0.0, 0.0, false))) {
        rc = fail("setting up");
        goto done;
    }

    for (int step = 0; step <= STEPS; step++) {
        nb_scope_begin(); /* everything the step makes (graph, loss) is freed at its end */
        nb_optim_zero_grad(opt);
        nb_tensor *loss = nb_mse_loss(nb_forward(model, x), y);
        int bad = !loss || nb_backward(loss, NULL, 0) != 0 || nb_optim_step(opt) != 0;
        if (!bad && step % LOG_EVERY == 0) printf("step %3d  mse %.6f\n", step, nb_item(loss));
        nb_scope_end();
        if (bad) {
            rc = fail("training step");
            goto done;
        }
    }

    double w = nb_item(params[0]), b = nb_item(params[1]);
    if (isnan(w) || isnan(b)) {
        rc = fail("reading the parameters");
        goto done;
    }
    printf("learned w = %.4f (true 3), b = %.4f (true -2)\n", w, b);
    rc = fabs(w - 3.0) <= 0.05 && fabs(b + 2.0) <= 0.05 ? 0 : 1;
    if (rc) fprintf(stderr, "linear_regression: w or b is more than 0.05 away from the truth\n");

done:
    nb_free(x);
    nb_free(y);
    nb_optim_free(opt);
    nb_module_free(model);
    return rc;
}

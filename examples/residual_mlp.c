/*
 * residual_mlp.c - a module of one's own: a residual MLP block,
 *
 *     y = x + W2 relu(W1 x + b1) + b2     x, y (B, D); W1 (H, D), b1 (H); W2 (D, H), b2 (D)
 *
 * written as an nb_module_class (a forward function and a free function for
 * its state) with four named parameters, then stacked twice in a Sequential
 * between two built-in Linear layers and trained with Adam to fit
 * f(a, b) = sin(2a) b on 256 points of [-2, 2]^2.
 *
 * The parameters get dotted names from the tree ("1.w1", "2.b2", ...), which
 * are also their names in a checkpoint. Exits 0 only when the fit's mean
 * squared error ends below 1/20 of the target's variance.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "nabla.h"
#include "nabla/nn.h"

enum { N = 256, D = 16, H = 32, STEPS = 1500, LOG_EVERY = 300 };

/* ------------------------------------------------------- the block */

typedef struct {
    int64_t calls; /* forward calls, to show a block's own state */
} block_state;

static nb_tensor *block_forward(nb_module *m, nb_tensor *x) {
    block_state *st = nb_module_state(m);
    st->calls++;
    /* nb_dense(x, W, b, act) is act(x W^T + b): W is (out, in), as in PyTorch's Linear */
    nb_tensor *h = nb_dense(x, nb_module_param(m, "w1"), nb_module_param(m, "b1"), NB_ACT_RELU); /* (B, H) */
    nb_tensor *r = nb_dense(h, nb_module_param(m, "w2"), nb_module_param(m, "b2"), NB_ACT_NONE); /* (B, D) */
    return nb_add(x, r);
}

static void block_free(void *state) { free(state); }

static const nb_module_class block_class = {
    .kind = "ResidualMLP",
    .forward = block_forward,
    .free_state = block_free,
};

/* A (rows, cols) tensor of U(-a, a) values. */
static nb_tensor *uniform(int64_t rows, int64_t cols, double a, nb_rng *rng) {
    double *v = malloc(sizeof *v * (size_t)(rows * cols));
    if (!v) return NULL;
    for (int64_t i = 0; i < rows * cols; i++) v[i] = (2 * nb_rng_uniform(rng) - 1) * a;
    nb_tensor *t = nb_from_f64(NB_F64, 2, (int64_t[]){rows, cols}, v);
    free(v);
    return t;
}

/* A new block of width d and hidden width h, or NULL with the library's error. The tensors are made in a
   scope: the module keeps its own hold on each, and the scope's end drops the maker's. W2 starts small, so a
   block starts close to the identity. */
static nb_module *residual_block(int64_t d, int64_t h, nb_rng *rng) {
    block_state *st = calloc(1, sizeof *st);
    nb_module *m = st ? nb_module_new(&block_class, st) : NULL;
    if (!m) {
        free(st);
        return NULL;
    }
    nb_scope_begin();
    int rc = nb_module_add_param(m, "w1", uniform(h, d, sqrt(6.0 / (double)d), rng));
    if (rc == 0) rc = nb_module_add_param(m, "b1", nb_full(NB_F64, 1, (int64_t[]){h}, 0.0));
    if (rc == 0) rc = nb_module_add_param(m, "w2", uniform(d, h, 0.1 / sqrt((double)h), rng));
    if (rc == 0) rc = nb_module_add_param(m, "b2", nb_full(NB_F64, 1, (int64_t[]){d}, 0.0));
    nb_scope_end();
    if (rc != 0) {
        nb_module_free(m);
        return NULL;
    }
    return m;
}

/* ----------------------------------------------------------- training */

static int fail(const char *what) {
    fprintf(stderr, "residual_mlp: %s: %s\n", what, nb_last_error() ? nb_last_error() : "(no message)");
    return 1;
}

int main(void) {
    nb_rng rng;
    nb_rng_seed(&rng, 7);
    static double xs[N][2], ys[N];
    double mean = 0, var = 0;
    for (int i = 0; i < N; i++) {
        xs[i][0] = 4 * nb_rng_uniform(&rng) - 2;
        xs[i][1] = 4 * nb_rng_uniform(&rng) - 2;
        ys[i] = sin(2 * xs[i][0]) * xs[i][1];
        mean += ys[i] / N;
    }
    for (int i = 0; i < N; i++) var += (ys[i] - mean) * (ys[i] - mean) / N;

    /* Linear(2, D), two blocks, Linear(D, 1): the Sequential owns them all */
    nb_module *mods[4] = {nb_linear(2, D, true, NB_INIT_XAVIER, NB_F64, &rng), residual_block(D, H, &rng),
                          residual_block(D, H, &rng), nb_linear(D, 1, true, NB_INIT_XAVIER, NB_F64, &rng)};
    nb_module *net = nb_sequential(4, mods);
    if (!net) return fail("building the model");

    nb_tensor *params[16];
    const char *names[16];
    int np = nb_module_params(net, params, names, 16);
    printf("%d parameters (%lld numbers):", np, (long long)nb_module_num_params(net));
    for (int i = 0; i < np && i < 16; i++) printf(" %s", names[i]);
    printf("\n");

    nb_optim *opt = np == 12 ? nb_adam(np, params, 0.01, 0.9, 0.999, 1e-8, 0.0) : NULL;
    nb_tensor *x = nb_from_f64(NB_F64, 2, (int64_t[]){N, 2}, &xs[0][0]);
    nb_tensor *y = nb_from_f64(NB_F64, 2, (int64_t[]){N, 1}, ys);
    int rc = 1;
    if (!opt || !x || !y) {
        rc = fail("setting up");
        goto done;
    }

    double mse = INFINITY;
    for (int step = 0; step <= STEPS; step++) {
        nb_scope_begin();
        nb_optim_zero_grad(opt);
        nb_tensor *loss = nb_mse_loss(nb_forward(net, x), y);
        if (!loss || nb_backward(loss, NULL, 0) != 0 || nb_optim_step(opt) != 0) {
            nb_scope_end();
            rc = fail("training");
            goto done;
        }
        mse = nb_item(loss);
        if (step % LOG_EVERY == 0) printf("step %4d  mse %.5f\n", step, mse);
        nb_scope_end();
    }
    block_state *st = nb_module_state(nb_module_child(net, "1"));
    printf("target variance %.4f, final mse %.5f; block 1 ran %lld times\n", var, mse, (long long)st->calls);
    rc = mse < var / 20 && st->calls == STEPS + 1 ? 0 : 1;
    if (rc) fprintf(stderr, "residual_mlp: the fit did not converge (mse %g, variance %g)\n", mse, var);

done:
    nb_free(x);
    nb_free(y);
    nb_optim_free(opt);
    nb_module_free(net);
    return rc;
}

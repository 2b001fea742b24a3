/*
 * test_modules.c - modules of nabla/nn.h: Linear's formula and Xavier bounds,
 * parameter names and counts, train/eval, residual and embedding, and a
 * 2-layer MLP that learns XOR with Adam in constant memory.
 */
#include "harness.h"
#include "nabla/nn.h"

static void test_linear(void) {
    nb_rng rng;
    nb_rng_seed(&rng, 1);
    nb_module *lin = nb_linear(4, 3, true, NB_INIT_XAVIER, NB_F64, &rng);
    nb_tensor *p[2];
    const char *names[2];
    CHECK(nb_module_params(lin, p, names, 2) == 2);
    CHECK(strcmp(names[0], "weight") == 0 && strcmp(names[1], "bias") == 0);
    CHECK(nb_shape(p[0])[0] == 3 && nb_shape(p[0])[1] == 4 && nb_module_num_params(lin) == 15);
    double w[12], bound = sqrt(6.0 / 7);
    nb_read_f64(p[0], w, 12);
    for (int i = 0; i < 12; i++) CHECK(fabs(w[i]) <= bound);
    nb_scope_begin();
    nb_tensor *x = th_rand(NB_F64, 2, (int64_t[]){5, 4}, -1, 1);
    nb_tensor *y = nb_forward(lin, x);
    CHECK(nb_rank(y) == 2 && nb_shape(y)[0] == 5 && nb_shape(y)[1] == 3);
    double xv[20];
    nb_read_f64(x, xv, 20);
    double want = 0;
    for (int k = 0; k < 4; k++) want += xv[4 + k] * w[2 * 4 + k];
    CHECK_CLOSE(nb_get(y, (int64_t[]){1, 2}), want, 1e-15, 1e-13);
    nb_scope_end();
    nb_module_free(lin);
}

static void test_containers(void) {
    nb_rng rng;
    nb_rng_seed(&rng, 2);
    nb_module *mods[4] = {nb_linear(3, 3, true, NB_INIT_KAIMING, NB_F32, &rng), nb_relu_layer(),
                          nb_dropout_layer(0.5, &rng), nb_layer_norm_layer(3, 1e-5, NB_F32)};
    nb_module *net = nb_sequential(2, (nb_module *[]){nb_residual(nb_sequential(4, mods)), nb_tanh_layer()});
    const char *names[8];
    nb_tensor *ps[8];
    CHECK(nb_module_params(net, ps, names, 8) == 4);
    CHECK(strcmp(names[0], "0.0.0.weight") == 0 && strcmp(names[3], "0.0.3.bias") == 0);
    nb_scope_begin();
    nb_tensor *x = th_rand(NB_F32, 2, (int64_t[]){2, 3}, -1, 1);
    nb_module_train(net, false);
    CHECK(!nb_module_training(mods[2]));
    nb_tensor *a = nb_forward(net, x), *b = nb_forward(net, x);
    CHECK(nb_item(nb_sum(nb_abs(nb_sub(a, b)))) == 0); /* eval: dropout is the identity */
    nb_module *bad = nb_residual(nb_linear(3, 2, true, NB_INIT_XAVIER, NB_F32, &rng));
    CHECK(nb_forward(bad, x) == NULL);
    CHECK_ERR("nb_forward: Residual: inner output (2,2) does not match input (2,3)");
    nb_module_free(bad);
    nb_module *emb = nb_embedding(10, 4, NB_F64, &rng);
    nb_tensor *ids = nb_from_f64(NB_I64, 2, (int64_t[]){2, 3}, (double[]){1, 2, 3, 1, 1, 9});
    nb_tensor *e = nb_forward(emb, ids);
    CHECK(nb_rank(e) == 3 && nb_shape(e)[2] == 4);
    CHECK(nb_backward(nb_sum(e), NULL, 0) == 0);
    nb_tensor *ew;
    nb_module_params(emb, &ew, NULL, 1);
    CHECK(nb_get(nb_grad(ew), (int64_t[]){1, 0}) == 3 && nb_get(nb_grad(ew), (int64_t[]){0, 0}) == 0);
    nb_module_free(emb);
    nb_scope_end();
    nb_module_free(net);
}

/* XOR with a 2-layer MLP (seed 002's layers and losses) */
static void test_xor(void) {
    nb_rng rng;
    nb_rng_seed(&rng, 7);
    nb_module *net = nb_sequential(3, (nb_module *[]){nb_linear(2, 8, true, NB_INIT_XAVIER, NB_F64, &rng),
                                                      nb_tanh_layer(), nb_linear(8, 1, true, NB_INIT_XAVIER, NB_F64, &rng)});
    nb_tensor *ps[4];
    int np = nb_module_params(net, ps, NULL, 4);
    nb_optim *opt = nb_adam(np, ps, 0.05, 0.9, 0.999, 1e-8, 0);
    nb_tensor *X = nb_keep(nb_from_f64(NB_F64, 2, (int64_t[]){4, 2}, (double[]){0, 0, 0, 1, 1, 0, 1, 1}));
    nb_tensor *Y = nb_keep(nb_from_f64(NB_F64, 2, (int64_t[]){4, 1}, (double[]){0, 1, 1, 0}));
    double loss = 1;
    int64_t mem = 0;
    for (int step = 0; step < 500; step++) {
        if (step == 10) mem = nb_memory_in_use();
        nb_scope_begin();
        nb_optim_zero_grad(opt);
        nb_tensor *L = nb_bce_with_logits_loss(nb_forward(net, X), Y);
        nb_backward(L, NULL, 0);
        nb_optim_step(opt);
        loss = nb_item(L);
        nb_scope_end();
    }
    CHECK(loss < 0.05);
    CHECK(nb_memory_in_use() == mem);
    nb_scope_begin();
    nb_tensor *p = nb_sigmoid(nb_forward(net, X));
    for (int i = 0; i < 4; i++) CHECK(fabs(nb_get(p, (int64_t[]){i, 0}) - (i == 1 || i == 2)) < 0.2);
    nb_scope_end();
    nb_free(X);
    nb_free(Y);
    nb_optim_free(opt);
    nb_module_free(net);
}

int main(void) {
    th_seed(4);
    RUN(test_linear);
    RUN(test_containers);
    RUN(test_xor);
    return th_finish();
}

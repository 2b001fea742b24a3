/*
 * test_nn.c - losses and optimizers of nabla/nn.h: torch.optim trajectories
 * (tests/data/nn_reference.txt, made by tools/gen_nn_reference.py), a
 * non-finite gradient leaving every parameter unchanged, gradient clipping,
 * schedules, and the losses' gradients (first and second order).
 */
#include "harness.h"
#include "nabla/nn.h"

static void test_torch_trajectories(void) {
    FILE *f = fopen(NB_TEST_DATA_DIR "/nn_reference.txt", "r");
    CHECK(f != NULL);
    if (!f) return;
    char line[4096], kind[16];
    int blocks = 0;
    while (fgets(line, sizeof line, f)) {
        double lr, mom, wd, b1, b2, eps;
        int nest;
        if (sscanf(line, "opt %15s %lf %lf %lf %d %lf %lf %lf", kind, &lr, &mom, &wd, &nest, &b1, &b2, &eps) != 8)
            continue;
        nb_scope_begin();
        double init[6];
        CHECK(fscanf(f, " init %lf %lf %lf %lf %lf %lf", &init[0], &init[1], &init[2], &init[3], &init[4],
                     &init[5]) == 6);
        nb_tensor *p = nb_from_f64(NB_F64, 2, (int64_t[]){2, 3}, init);
        nb_set_requires_grad(p, true);
        nb_optim *o = strcmp(kind, "sgd") == 0    ? nb_sgd(1, &p, lr, mom, wd, nest)
                      : strcmp(kind, "adam") == 0 ? nb_adam(1, &p, lr, b1, b2, eps, wd)
                                                  : nb_adamw(1, &p, lr, b1, b2, eps, wd);
        CHECK(o != NULL);
        for (int s = 0; s < 4 && o; s++) {
            double g[6], want[6];
            CHECK(fscanf(f, " step") == 0);
            for (int i = 0; i < 6; i++) CHECK(fscanf(f, "%lf", &g[i]) == 1);
            for (int i = 0; i < 6; i++) CHECK(fscanf(f, "%lf", &want[i]) == 1);
            /* give p the gradient g: backward of sum(p * g) */
            nb_optim_zero_grad(o);
            nb_tensor *gt = nb_from_f64(NB_F64, 2, (int64_t[]){2, 3}, g);
            CHECK(nb_backward(nb_sum(nb_mul(p, gt)), NULL, 0) == 0);
            CHECK(nb_optim_step(o) == 0);
            double got[6];
            nb_read_f64(p, got, 6);
            for (int i = 0; i < 6; i++) CHECK_CLOSE(got[i], want[i], 1e-14, 1e-12);
        }
        nb_optim_free(o);
        nb_scope_end();
        blocks++;
    }
    fclose(f);
    CHECK(blocks == 6);
}

static void test_nonfinite_grad(void) {
    nb_scope_begin();
    nb_tensor *a = nb_full(NB_F32, 1, (int64_t[]){3}, 1.0), *b = nb_full(NB_F32, 1, (int64_t[]){2}, 2.0);
    nb_set_requires_grad(a, true);
    nb_set_requires_grad(b, true);
    nb_tensor *ps[2] = {a, b};
    nb_optim *o = nb_adam(2, ps, 0.1, 0.9, 0.999, 1e-8, 0);
    nb_tensor *L = nb_add(nb_sum(a), nb_sum(nb_log(nb_sub(b, nb_scalar(NB_F32, 2.0))))); /* log 0 */
    CHECK(nb_backward(L, NULL, 0) == 0);
    CHECK(nb_optim_step(o) != 0);
    CHECK_ERR("nb_optim_step: gradient of parameter 1 has a non-finite value at index 0");
    CHECK(nb_get(a, (int64_t[]){0}) == 1.0 && nb_get(b, (int64_t[]){1}) == 2.0);
    CHECK(nb_optim_steps(o) == 0);
    nb_optim_set_lr(o, NAN); /* refused: the rate stays */
    CHECK_ERR("nb_optim_set_lr: learning rate nan must be >= 0; the rate stays 0.1");
    nb_optim_set_lr(o, -1);
    CHECK(nb_optim_lr(o) == 0.1);
    nb_optim_set_lr(o, 0.05);
    CHECK(nb_optim_lr(o) == 0.05);
    nb_optim_free(o);
    nb_scope_end();
}

static void test_clip_and_schedules(void) {
    nb_scope_begin();
    nb_tensor *a = nb_full(NB_F64, 1, (int64_t[]){4}, 0.0);
    nb_set_requires_grad(a, true);
    CHECK(nb_backward(nb_sum(nb_scale(a, 3.0)), NULL, 0) == 0); /* grad 3 each: norm 6 */
    CHECK_CLOSE(nb_clip_grad_norm(1, &a, 1.5), 6.0, 0, 1e-15);
    CHECK_CLOSE(nb_get(nb_grad(a), (int64_t[]){2}), 3.0 * 1.5 / (6.0 + 1e-6), 0, 1e-15);
    CHECK_CLOSE(nb_lr_step_decay(0.1, 25, 10, 0.5), 0.025, 0, 1e-15);
    CHECK_CLOSE(nb_lr_cosine(1.0, 0, 10, 110, 0.0), 0.1, 0, 1e-15);
    CHECK_CLOSE(nb_lr_cosine(1.0, 60, 10, 110, 0.0), 0.5, 0, 1e-12);
    CHECK_CLOSE(nb_lr_cosine(1.0, 110, 10, 110, 0.01), 0.01, 0, 0);
    nb_scope_end();
}

typedef nb_tensor *(*loss_fn)(nb_tensor *, nb_tensor *);
static nb_tensor *target;
static nb_tensor *apply_loss(int n, nb_tensor *const *in, void *ud) {
    (void)n;
    return (*(loss_fn *)ud)(in[0], target);
}

static void test_loss_gradchecks(void) {
    loss_fn fns[4] = {nb_mse_loss, nb_bce_loss, nb_bce_with_logits_loss, nb_hinge_loss};
    for (int k = 0; k < 4; k++) {
        nb_scope_begin();
        nb_tensor *x = th_rand(NB_F64, 2, (int64_t[]){3, 4}, k == 1 ? 0.1 : -2, k == 1 ? 0.9 : 2);
        if (k == 3) {
            target = nb_from_f64(NB_F64, 2, (int64_t[]){3, 4}, (double[]){1, -1, 1, 1, -1, -1, 1, -1, 1, 1, -1, 1});
            double *d = nb_data(x); /* keep 1 - y s away from the kink at 0 */
            for (int i = 0; i < 12; i++)
                if (fabs(fabs(d[i]) - 1) < 0.05) d[i] *= 1.2;
        } else {
            target = th_rand(NB_F64, 2, (int64_t[]){3, 4}, 0, 1);
        }
        nb_gradcheck_opts o = {.second_order = true};
        CHECK(nb_gradcheck(apply_loss, &fns[k], 1, &x, &o, NULL) == 0);
        nb_scope_end();
    }
    nb_scope_begin();
    nb_tensor *s = nb_full(NB_F64, 1, (int64_t[]){2}, 0.5);
    CHECK(nb_hinge_loss(s, nb_from_f64(NB_F64, 1, (int64_t[]){2}, (double[]){1, 0})) == NULL);
    CHECK_ERR("nb_hinge_loss: label 0 at index 1 is not -1 or +1");
    CHECK(nb_mse_loss(s, nb_full(NB_F64, 1, (int64_t[]){3}, 0)) == NULL);
    CHECK_ERR("do not broadcast");
    CHECK(nb_sgd(1, &s, 0.1, 0, 0, false) == NULL);
    CHECK_ERR("nb_sgd: parameter 0 is NULL or not a contiguous leaf that requires grad");
    nb_scope_end();
}

/* The core's fused updates: the formula on one element, argument checks that
   leave everything unchanged, and nb_all_finite. */
static void test_update_ops(void) {
    nb_scope_begin();
    nb_tensor *p = nb_full(NB_F64, 1, (int64_t[]){4}, 1.0), *g = nb_full(NB_F64, 1, (int64_t[]){4}, 0.5);
    nb_tensor *m = nb_full(NB_F64, 1, (int64_t[]){4}, 0.0), *v = nb_full(NB_F64, 1, (int64_t[]){4}, 0.0);
    CHECK(nb_sgd_update_(p, g, NULL, 0.1, 0, 0, false, true) == 0);
    CHECK(nb_get(p, (int64_t[]){3}) == 1.0 - 0.1 * 0.5);
    /* Adam, step 1: m = 0.1 g, v = 0.001 g^2, p -= lr m / 0.1 / (sqrt(v) / sqrt(0.001) + eps) = lr g / (|g| + eps) */
    CHECK(nb_adam_update_(p, g, m, v, 0.01, 0.9, 0.999, 1e-8, 0, false, 1) == 0);
    CHECK_CLOSE(nb_get(p, (int64_t[]){0}), 0.95 - 0.01 * 0.5 / (0.5 + 1e-8), 1e-15, 1e-12);
    CHECK_CLOSE(nb_get(m, (int64_t[]){0}), 0.05, 1e-15, 1e-12);
    double before = nb_get(p, (int64_t[]){0});
    nb_tensor *g3 = nb_full(NB_F64, 1, (int64_t[]){3}, 0.5);
    CHECK(nb_adam_update_(p, g3, m, v, 0.01, 0.9, 0.999, 1e-8, 0, false, 2) != 0);
    CHECK_ERR("gradient");
    CHECK(nb_adam_update_(p, g, m, m, 0.01, 0.9, 0.999, 1e-8, 0, false, 2) != 0);
    CHECK_ERR("different");
    CHECK(nb_adam_update_(p, g, m, v, 0.01, 0.9, 0.999, 1e-8, 0, false, 0) != 0);
    CHECK_ERR("step");
    CHECK(nb_adam_update_(p, nb_reshape(p, 1, (int64_t[]){4}), m, v, 0.01, 0.9, 0.999, 1e-8, 0, false, 2) != 0);
    CHECK_ERR("shares storage");
    CHECK(nb_sgd_update_(p, g, NULL, 0.1, 0.9, 0, false, true) != 0);
    CHECK_ERR("needs a buffer");
    nb_set_requires_grad(p, true); /* grad mode is on: refused, as every in-place op */
    CHECK(nb_sgd_update_(p, g, NULL, 0.1, 0, 0, false, true) != 0);
    CHECK_ERR("requires grad");
    CHECK(nb_get(p, (int64_t[]){0}) == before);
    int64_t at = -1;
    CHECK(nb_all_finite(g, &at) == 1 && at == -1);
    nb_tensor *bad = nb_from_f64(NB_F32, 2, (int64_t[]){2, 3}, (double[]){1, 2, 3, 4, NAN, 6});
    CHECK(nb_all_finite(bad, &at) == 0 && at == 4);
    CHECK(nb_all_finite(nb_transpose(bad, 0, 1), &at) == 0 && at == 3); /* (1, 1) of the transpose */
    CHECK(nb_all_finite(NULL, &at) == -1);
    nb_clear_error();
    nb_scope_end();
}

int main(void) {
    th_seed(21);
    RUN(test_torch_trajectories);
    RUN(test_nonfinite_grad);
    RUN(test_clip_and_schedules);
    RUN(test_loss_gradchecks);
    RUN(test_update_ops);
    return th_finish();
}

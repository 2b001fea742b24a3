/*
 * test_cnn.c - the convolutional layers (nabla/nn.h) and image data (nabla/data.h): a network written by
 * PyTorch (tools/gen_cnn_reference.py: tests/data/cnn_torch.safetensors) loads into the same network built
 * from nabla's layers and gives PyTorch's outputs in eval and in training mode, and the same running
 * statistics after a training forward; nabla's checkpoint of it holds PyTorch's names, shapes and dtypes;
 * Conv2d's initialisation range; eval mode; the layers' errors; nb_dataset_to_images and
 * nb_random_crop_flip.
 */
#include <stdio.h>
#include <unistd.h>

#include "harness.h"
#include "nabla/data.h"
#include "nabla/io.h"

#define SH(...) ((int64_t[]){__VA_ARGS__})

static const char *data_path(const char *name) {
    static char buf[1024];
    snprintf(buf, sizeof buf, "%s/%s", NB_TEST_DATA_DIR, name);
    return buf;
}

/* The network of `nabla train --model cnn --hidden 128` for 8x8 images, 10 classes, no dropout. */
static nb_module *cnn(nb_rng *rng) {
    nb_conv2d_opts pad1 = {{1, 1}, {1, 1}, {1, 1}, 1}, none = {{0, 0}, {0, 0}, {0, 0}, 0};
    nb_module *m[12] = {
        nb_conv2d_layer(1, 32, 3, 3, pad1, true, NB_F32, rng), nb_batch_norm2d_layer(32, 1e-5, 0.1, NB_F32),
        nb_relu_layer(), nb_max_pool2d_layer(2, 2, none),
        nb_conv2d_layer(32, 64, 3, 3, pad1, true, NB_F32, rng), nb_batch_norm2d_layer(64, 1e-5, 0.1, NB_F32),
        nb_relu_layer(), nb_max_pool2d_layer(2, 2, none),
        nb_flatten_layer(), nb_linear(256, 128, true, NB_INIT_KAIMING, NB_F32, rng), nb_relu_layer(),
        nb_linear(128, 10, true, NB_INIT_XAVIER, NB_F32, rng)};
    return nb_sequential(12, m);
}

static nb_tensor *load1(const char *name, nb_dtype dt, int rank, const int64_t *shape) {
    nb_tensor *t = nb_new(dt, rank, shape, NULL);
    if (t && nb_load_safetensors(data_path("cnn_torch.safetensors"), 1, &t, &name) != 0) {
        nb_free(t);
        return NULL;
    }
    return t;
}

/* max |a - b| / max |b|: a normwise relative difference (f32 rounding through a dozen layers) */
static double worst_rel(nb_tensor *a, nb_tensor *b) {
    double w = 0, m = 0;
    for (int64_t i = 0; i < nb_numel(a); i++) {
        double x = ((float *)nb_data(a))[i], y = ((float *)nb_data(b))[i];
        w = fmax(w, fabs(x - y)), m = fmax(m, fabs(y));
    }
    return w / (m > 0 ? m : 1);
}

static void test_pytorch_network(void) {
    nb_rng rng;
    nb_rng_seed(&rng, 3);
    nb_module *m = cnn(&rng);
    CHECK(m != NULL);
    if (!m) return;
    CHECK(nb_module_load(m, data_path("cnn_torch.safetensors")) == 0);
    nb_scope_begin();
    nb_tensor *x = load1("input", NB_F32, 4, SH(6, 1, 8, 8)), *ev = load1("eval_logits", NB_F32, 2, SH(6, 10));
    nb_tensor *tr = load1("train_logits", NB_F32, 2, SH(6, 10));
    CHECK(x && ev && tr);
    nb_tensor *nbt = nb_module_buffer(m, "1.num_batches_tracked");
    int64_t tracked = nbt ? ((int64_t *)nb_data(nbt))[0] : -1;
    CHECK(tracked == 5); /* PyTorch's count after its 5 training steps, loaded */
    nb_module_train(m, false);
    nb_tensor *y = x ? nb_forward(m, x) : NULL;
    CHECK(y && worst_rel(y, ev) < 1e-5);
    /* the same predictions, so the same accuracy on any data */
    for (int64_t i = 0; y && i < 6; i++) {
        int best_a = 0, best_b = 0;
        for (int k = 1; k < 10; k++) {
            if (((float *)nb_data(y))[i * 10 + k] > ((float *)nb_data(y))[i * 10 + best_a]) best_a = k;
            if (((float *)nb_data(ev))[i * 10 + k] > ((float *)nb_data(ev))[i * 10 + best_b]) best_b = k;
        }
        CHECK(best_a == best_b);
    }
    /* training mode: batch statistics, and the running ones updated as PyTorch does */
    nb_module_train(m, true);
    y = x ? nb_forward(m, x) : NULL;
    CHECK(y && worst_rel(y, tr) < 1e-5);
    CHECK(nbt && ((int64_t *)nb_data(nbt))[0] == 6);
    static const char *const after[4] = {"after.1.running_mean", "after.1.running_var", "after.5.running_mean",
                                         "after.5.running_var"};
    static const char *const mine[4] = {"1.running_mean", "1.running_var", "5.running_mean", "5.running_var"};
    for (int k = 0; k < 4; k++) {
        int64_t c = k < 2 ? 32 : 64;
        nb_tensor *want = load1(after[k], NB_F32, 1, &c), *got = nb_module_buffer(m, mine[k]);
        CHECK(want && got && worst_rel(got, want) < 1e-5);
    }
    /* nabla's checkpoint of it: every name of PyTorch's state_dict with its dtype and shape */
    char path[64];
    snprintf(path, sizeof path, "cnn_roundtrip_%d.safetensors", (int)getpid());
    CHECK(nb_module_save(m, path) == 0);
    nb_tensor *ts[64];
    const char *names[64];
    int n = nb_module_param_paths(m, ts, names, 64), nb = nb_module_buffer_paths(m, ts + (n > 0 ? n : 0), names + (n > 0 ? n : 0), 64 - (n > 0 ? n : 0));
    CHECK(n == 12 && nb == 6); /* 4 weights and biases of conv/linear, 2 of batch norm; 3 buffers x 2 */
    for (int i = 0; n > 0 && nb > 0 && i < n + nb; i++) {
        nb_tensor *a = nb_new(nb_dtype_of(ts[i]), nb_rank(ts[i]), nb_shape(ts[i]), NULL);
        nb_tensor *b = nb_new(nb_dtype_of(ts[i]), nb_rank(ts[i]), nb_shape(ts[i]), NULL);
        CHECK(nb_load_safetensors(data_path("cnn_torch.safetensors"), 1, &a, &names[i]) == 0); /* PyTorch has it */
        CHECK(nb_load_safetensors(path, 1, &b, &names[i]) == 0);                               /* nabla wrote it */
        nb_free(a), nb_free(b);
    }
    remove(path);
    nb_scope_end();
    nb_module_free(m);
}

static void test_layers(void) {
    nb_rng rng;
    nb_rng_seed(&rng, 4);
    nb_conv2d_opts d = {0};
    nb_module *c = nb_conv2d_layer(6, 4, 3, 2, (nb_conv2d_opts){{1, 1}, {0, 0}, {1, 1}, 2}, true, NB_F64, &rng);
    CHECK(c && !strcmp(nb_module_kind(c), "Conv2d"));
    nb_tensor *w = c ? nb_module_param(c, "weight") : NULL, *b = c ? nb_module_param(c, "bias") : NULL;
    CHECK(w && nb_shape(w)[0] == 4 && nb_shape(w)[1] == 3 && nb_shape(w)[2] == 3 && nb_shape(w)[3] == 2);
    double bound = 1.0 / sqrt(3.0 * 3 * 2), mx = 0;
    for (int64_t i = 0; w && i < nb_numel(w); i++) mx = fmax(mx, fabs(((double *)nb_data(w))[i]));
    for (int64_t i = 0; b && i < nb_numel(b); i++) mx = fmax(mx, fabs(((double *)nb_data(b))[i]));
    CHECK(mx <= bound && mx > 0.7 * bound); /* U(-1/sqrt(fan_in), 1/sqrt(fan_in)) */
    nb_module_free(c);
    CHECK(nb_conv2d_layer(5, 4, 3, 3, (nb_conv2d_opts){{0, 0}, {0, 0}, {0, 0}, 2}, true, NB_F32, &rng) == NULL);
    CHECK_ERR("nb_conv2d_layer: groups 2 must divide the input channels 5 and the output channels 4");
    CHECK(nb_conv2d_layer(1, 4, 0, 3, d, true, NB_F32, &rng) == NULL);
    CHECK_ERR("kernel 0x3");
    CHECK(nb_conv2d_layer(1, 4, 3, 3, d, true, NB_I64, &rng) == NULL);
    CHECK_ERR("dtype");
    CHECK(nb_max_pool2d_layer(0, 2, d) == NULL);
    CHECK_ERR("nb_max_pool2d_layer: the kernel 0x2 must be positive");
    CHECK(nb_batch_norm2d_layer(0, 1e-5, 0.1, NB_F32) == NULL);
    CHECK_ERR("channels 0");
    CHECK(nb_batch_norm2d_layer(3, 0, 0.1, NB_F32) == NULL);
    CHECK_ERR("eps 0");
    /* eval mode: batch norm uses the running statistics (here the initial 0 and 1: y = x / sqrt(1 + eps)) */
    nb_module *bn = nb_batch_norm2d_layer(2, 1e-5, 0.1, NB_F64);
    nb_scope_begin();
    nb_tensor *x = th_rand(NB_F64, 4, SH(3, 2, 2, 2), -1, 1);
    nb_module_train(bn, false);
    nb_tensor *y = nb_forward(bn, x);
    CHECK(y != NULL);
    for (int64_t i = 0; y && i < 24; i++) CHECK_CLOSE(((double *)nb_data(y))[i], ((double *)nb_data(x))[i] / sqrt(1 + 1e-5), 1e-15, 1e-15);
    CHECK(((int64_t *)nb_data(nb_module_buffer(bn, "num_batches_tracked")))[0] == 0);
    nb_module_train(bn, true);
    CHECK(nb_forward(bn, x) != NULL);
    CHECK(((int64_t *)nb_data(nb_module_buffer(bn, "num_batches_tracked")))[0] == 1);
    nb_scope_end();
    nb_module_free(bn);
    nb_module *f = nb_flatten_layer(), *g = nb_global_avg_pool2d_layer();
    nb_scope_begin();
    nb_tensor *z = nb_forward(f, nb_forward(g, th_rand(NB_F32, 4, SH(3, 5, 4, 2), -1, 1)));
    CHECK(z && nb_rank(z) == 2 && nb_shape(z)[0] == 3 && nb_shape(z)[1] == 5);
    nb_scope_end();
    nb_module_free(f), nb_module_free(g);
}

static void test_images(void) {
    nb_scope_begin();
    /* 2 images of 2x3, values 1..12: a reshape of the features */
    double v[12];
    for (int i = 0; i < 12; i++) v[i] = i + 1;
    nb_dataset ds = {.x = nb_keep(nb_from_f64(NB_F32, 2, SH(2, 6), v)), .y = nb_keep(nb_full(NB_I64, 1, SH(2), 0)),
                     .n = 2, .d = 6, .classes = 1};
    CHECK(nb_dataset_to_images(&ds, 1, 4, 2) != 0);
    CHECK_ERR("images of 1 x 4 x 2 do not hold the 6 features of a sample");
    CHECK(nb_dataset_to_images(&ds, 1, 2, 3) == 0 && nb_rank(ds.x) == 4 && nb_shape(ds.x)[3] == 3 && ds.d == 6);
    nb_rng rng;
    nb_rng_seed(&rng, 9);
    nb_tensor *same = nb_random_crop_flip(ds.x, 0, false, &rng);
    CHECK(same && memcmp(nb_data(same), nb_data(ds.x), 12 * sizeof(float)) == 0);
    /* flips and shifts as documented: recompute the draws */
    nb_rng a = rng;
    nb_tensor *aug = nb_random_crop_flip(ds.x, 1, true, &rng);
    CHECK(aug != NULL);
    for (int64_t b = 0; aug && b < 2; b++) {
        int64_t dy = (int64_t)(nb_rng_next(&a) % 3) - 1, dx = (int64_t)(nb_rng_next(&a) % 3) - 1;
        bool mirror = nb_rng_uniform(&a) < 0.5;
        for (int64_t i = 0; i < 2; i++)
            for (int64_t j = 0; j < 3; j++) {
                int64_t si = i + dy, sj = (mirror ? 2 - j : j) + dx;
                float want = si < 0 || si >= 2 || sj < 0 || sj >= 3 ? 0.0f : (float)v[b * 6 + si * 3 + sj];
                CHECK(((float *)nb_data(aug))[b * 6 + i * 3 + j] == want);
            }
    }
    CHECK(rng.state == a.state);
    CHECK(nb_random_crop_flip(nb_full(NB_F32, 2, SH(2, 6), 0), 1, true, &rng) == NULL);
    CHECK_ERR("nb_random_crop_flip: x must be float images (B, C, H, W), not (2,6)");
    CHECK(nb_random_crop_flip(ds.x, -1, true, &rng) == NULL);
    CHECK_ERR("pad -1");
    CHECK(nb_random_crop_flip(ds.x, 1, true, NULL) == NULL);
    CHECK_ERR("nb_random_crop_flip: x and rng must not be NULL");
    CHECK(nb_dataset_to_images(NULL, 1, 2, 3) != 0);
    CHECK_ERR("nb_dataset_to_images: the data set is NULL or empty");
    nb_scope_end();
    nb_dataset_free(&ds);
}

int main(void) {
    RUN(test_pytorch_network);
    RUN(test_layers);
    RUN(test_images);
    return th_finish();
}

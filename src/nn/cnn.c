/*
 * cnn.c - the layers of convolutional networks (nabla/nn.h), built only on the public API:
 *
 *   Conv2d       weight (out, in / groups, kH, kW), bias (out): nb_conv2d
 *   MaxPool2d    nb_max_pool2d;  AvgPool2d: nb_avg_pool2d;  GlobalAvgPool2d: nb_global_avg_pool2d
 *   BatchNorm2d  weight, bias (C); buffers running_mean, running_var (C) and num_batches_tracked (an NB_I64
 *                scalar), PyTorch's names, so a checkpoint of a network of these loads in PyTorch
 *   Flatten      nb_flatten(x, 1, -1)
 */
#include <math.h>
#include <string.h>

#include "../../include/nabla/nn.h"

typedef struct {
    nb_conv2d_opts o;
    int k[2];
    double eps, momentum;
} cnn_state;

static cnn_state *cst(nb_module *m) { return nb_module_state(m); }

/* A module of class cls with a copy of s as its state. */
static nb_module *with(const char *fn, const nb_module_class *cls, cnn_state s) {
    cnn_state *p = nb_alloc(fn, sizeof *p);
    if (!p) return NULL;
    *p = s;
    nb_module *m = nb_module_new(cls, p);
    if (!m) nb_dealloc(p);
    return m;
}

/* Register t (NULL: a failed creation, its error kept) as a parameter or buffer and drop the caller's handle. */
static int put(nb_module *m, const char *name, nb_tensor *t, bool buffer) {
    if (!t) return -1;
    int rc = buffer ? nb_module_add_buffer(m, name, t) : nb_module_add_param(m, name, t);
    nb_free(t);
    return rc;
}

/* ---------------------------------------------------------------- Conv2d */

static nb_tensor *fwd_conv(nb_module *m, nb_tensor *x) {
    return nb_conv2d(x, nb_module_param(m, "weight"), nb_module_param(m, "bias"), cst(m)->o);
}
static const nb_module_class conv_class = {.kind = "Conv2d", .forward = fwd_conv, .free_state = nb_dealloc};

/* n values of U(-a, a) in dt, drawn from rng in order. */
static nb_tensor *uniform(nb_dtype dt, int rank, const int64_t *shape, double a, nb_rng *rng) {
    nb_tensor *t = nb_rand(dt, rank, shape, rng); /* U(0, 1) */
    if (!t) return NULL;
    void *d = nb_data(t);
    for (int64_t i = 0, n = nb_numel(t); i < n; i++)
        if (dt == NB_F32) ((float *)d)[i] = (float)((2.0 * ((float *)d)[i] - 1.0) * a);
        else ((double *)d)[i] = (2.0 * ((double *)d)[i] - 1.0) * a;
    return t;
}

nb_module *nb_conv2d_layer(int64_t in, int64_t out, int kh, int kw, nb_conv2d_opts o, bool bias, nb_dtype dt,
                           nb_rng *rng) {
    const char *fn = "nb_conv2d_layer";
    int64_t g = o.groups ? o.groups : 1;
    if (in <= 0 || out <= 0 || kh <= 0 || kw <= 0 || !rng || o.groups < 0)
        return nb_failf(fn, "channels %lld -> %lld, kernel %dx%d and groups %d must be positive and rng given",
                        (long long)in, (long long)out, kh, kw, o.groups);
    if (in % g != 0 || out % g != 0)
        return nb_failf(fn, "groups %lld must divide the input channels %lld and the output channels %lld",
                        (long long)g, (long long)in, (long long)out);
    if (dt != NB_F32 && dt != NB_F64) return nb_failf(fn, "dtype %d is not NB_F32 or NB_F64", (int)dt);
    if (in / g > ((int64_t)1 << 30) / kh / kw || out > ((int64_t)1 << 30))
        return nb_failf(fn, "channels %lld -> %lld with a %dx%d kernel are too large", (long long)in, (long long)out,
                        kh, kw);
    nb_module *m = with(fn, &conv_class, (cnn_state){.o = o});
    if (!m) return NULL;
    /* PyTorch's default: kaiming_uniform_(a = sqrt 5), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)), bias the same */
    double fan_in = (double)(in / g) * kh * kw, a = 1.0 / sqrt(fan_in);
    if (put(m, "weight", uniform(dt, 4, (int64_t[]){out, in / g, kh, kw}, a, rng), false) != 0 ||
        (bias && put(m, "bias", uniform(dt, 1, (int64_t[]){out}, a, rng), false) != 0)) {
        nb_module_free(m);
        return NULL;
    }
    return m;
}

/* --------------------------------------------------------------- pooling */

static nb_tensor *fwd_max(nb_module *m, nb_tensor *x) { return nb_max_pool2d(x, cst(m)->k, cst(m)->o); }
static nb_tensor *fwd_avg(nb_module *m, nb_tensor *x) { return nb_avg_pool2d(x, cst(m)->k, cst(m)->o); }
static nb_tensor *fwd_gap(nb_module *m, nb_tensor *x) { (void)m; return nb_global_avg_pool2d(x); }
static nb_tensor *fwd_flatten(nb_module *m, nb_tensor *x) { (void)m; return nb_flatten(x, 1, -1); }
static const nb_module_class max_class = {.kind = "MaxPool2d", .forward = fwd_max, .free_state = nb_dealloc};
static const nb_module_class avg_class = {.kind = "AvgPool2d", .forward = fwd_avg, .free_state = nb_dealloc};
static const nb_module_class gap_class = {.kind = "GlobalAvgPool2d", .forward = fwd_gap};
static const nb_module_class flatten_class = {.kind = "Flatten", .forward = fwd_flatten};

static nb_module *pool(const char *fn, const nb_module_class *cls, int kh, int kw, nb_conv2d_opts o) {
    if (kh <= 0 || kw <= 0) return nb_failf(fn, "the kernel %dx%d must be positive", kh, kw);
    return with(fn, cls, (cnn_state){.o = o, .k = {kh, kw}});
}
nb_module *nb_max_pool2d_layer(int kh, int kw, nb_conv2d_opts o) {
    return pool("nb_max_pool2d_layer", &max_class, kh, kw, o);
}
nb_module *nb_avg_pool2d_layer(int kh, int kw, nb_conv2d_opts o) {
    return pool("nb_avg_pool2d_layer", &avg_class, kh, kw, o);
}
nb_module *nb_global_avg_pool2d_layer(void) { return nb_module_new(&gap_class, NULL); }
nb_module *nb_flatten_layer(void) { return nb_module_new(&flatten_class, NULL); }

/* ----------------------------------------------------------- BatchNorm2d */

static nb_tensor *fwd_bn(nb_module *m, nb_tensor *x) {
    const cnn_state *s = cst(m);
    bool train = nb_module_training(m);
    nb_tensor *y = nb_batch_norm(x, nb_module_param(m, "weight"), nb_module_param(m, "bias"),
                                 nb_module_buffer(m, "running_mean"), nb_module_buffer(m, "running_var"), train,
                                 s->momentum, s->eps);
    nb_tensor *nbt = nb_module_buffer(m, "num_batches_tracked");
    if (y && train && nbt) ((int64_t *)nb_data(nbt))[0]++;
    return y;
}
static const nb_module_class bn_class = {.kind = "BatchNorm2d", .forward = fwd_bn, .free_state = nb_dealloc};

nb_module *nb_batch_norm2d_layer(int64_t c, double eps, double momentum, nb_dtype dt) {
    const char *fn = "nb_batch_norm2d_layer";
    if (c <= 0 || c > ((int64_t)1 << 40)) return nb_failf(fn, "channels %lld must be positive", (long long)c);
    if (!(eps > 0) || !isfinite(eps) || !(momentum >= 0 && momentum <= 1))
        return nb_failf(fn, "eps %g must be finite and > 0, momentum %g in [0, 1]", eps, momentum);
    if (dt != NB_F32 && dt != NB_F64) return nb_failf(fn, "dtype %d is not NB_F32 or NB_F64", (int)dt);
    nb_module *m = with(fn, &bn_class, (cnn_state){.eps = eps, .momentum = momentum});
    if (!m) return NULL;
    int64_t sh[1] = {c};
    if (put(m, "weight", nb_full(dt, 1, sh, 1.0), false) != 0 || put(m, "bias", nb_full(dt, 1, sh, 0.0), false) != 0 ||
        put(m, "running_mean", nb_full(dt, 1, sh, 0.0), true) != 0 ||
        put(m, "running_var", nb_full(dt, 1, sh, 1.0), true) != 0 ||
        put(m, "num_batches_tracked", nb_full(NB_I64, 0, NULL, 0.0), true) != 0) {
        nb_module_free(m);
        return NULL;
    }
    return m;
}

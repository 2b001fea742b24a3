/*
 * test_backend.c - the seams of the backend layer: storage shared by views,
 * devices, kernels a backend lacks, and tensors saved on graph nodes.
 */
#include "harness.h"

#include "core/internal.h"

/* A view shares its source's storage, which outlives the source while the view lives; versions are per storage. */
static void test_storage_shared_by_views(void) {
    nb_scope_begin();
    nb_tensor *a = nb_from_f64(NB_F64, 2, (int64_t[]){3, 4}, (double[]){0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11});
    nb_tensor *v = nb_slice(nb_transpose(a, 0, 1), 0, 1, 3); /* (2, 3) */
    CHECK(v->st == a->st && a->st->refs == 3); /* a, the transpose and the slice */
    CHECK(v->offset == 1);
    uint32_t ver = a->st->version;
    CHECK(nb_add_(v, nb_scalar(NB_F64, 100)) == 0);
    CHECK(a->st->version == ver + 1);
    CHECK(nb_get(a, (int64_t[]){0, 1}) == 101 && nb_get(a, (int64_t[]){0, 0}) == 0);
    nb_tensor *keep = nb_retain(v);
    nb_scope_end(); /* a is gone; the storage lives on in v */
    CHECK(nb_get(keep, (int64_t[]){1, 2}) == 110);
    CHECK(keep->st->refs == 1);
    nb_release(keep);
    CHECK(nb_memory_in_use() == 0);
}

/* A table like the CPU's, on a device that does not exist: how a second backend's tensors meet the CPU's. */
static nbi_backend fake;

static void test_devices(void) {
    char b[32];
    nb_scope_begin();
    CHECK(nb_device_of(nb_scalar(NB_F32, 1)).type == NB_DEV_CPU);
    CHECK(strcmp(nb_device_str(nb_cpu(), b, sizeof b), "cpu") == 0);
    CHECK(strcmp(nb_device_str((nb_device){NB_DEV_CUDA, 1}, b, sizeof b), "cuda:1") == 0);
    CHECK(nb_device_available(nb_cpu()));
    CHECK(!nb_device_available((nb_device){NB_DEV_CUDA, 0}));
    const char *name = nb_backend_name(nb_cpu());
    CHECK(name && (strcmp(name, "cpu") == 0 || strcmp(name, "reference") == 0));
    nb_tensor *x = nb_full(NB_F32, 1, (int64_t[]){3}, 2.0);
    nb_tensor *same = nb_to_device(x, nb_cpu()); /* already there: a view */
    CHECK(same && same->st == x->st);
    CHECK(!nb_to_device(x, (nb_device){NB_DEV_CUDA, 0}));
    CHECK_ERR("nb_to_device: device cuda:0 is not available");
    CHECK(!nb_to_device(NULL, nb_cpu()));
    CHECK_ERR("nb_to_device");
    CHECK(nb_device_of(NULL).type == NB_DEV_CPU);
    CHECK_ERR("nb_device_of");
    CHECK(nb_device_str(nb_cpu(), NULL, 0) == NULL);
    CHECK(nb_backend_name((nb_device){NB_DEV_CUDA, 0}) == NULL);

    fake = *nbi_default_be();
    fake.name = "fake";
    fake.device = (nb_device){NB_DEV_CUDA, 0};
    nb_tensor *y = nbi_empty_on("test", &fake, NB_F32, 1, (int64_t[]){3});
    CHECK(y && nb_device_of(y).type == NB_DEV_CUDA);
    nbi_k_fill(y, 1.0);
    CHECK(!nb_add(x, y));
    CHECK_ERR("nb_add: operands are on different devices: tensor (3,) on cpu and tensor (3,) on cuda:0");
    CHECK(!nb_matmul(x, y));
    CHECK_ERR("nb_matmul: operands are on different devices");
    CHECK(!nb_where(x, x, y));
    CHECK_ERR("nb_where: operands are on different devices");
    CHECK(!nb_concat(2, (nb_tensor *[]){x, y}, 0));
    CHECK_ERR("nb_concat: operands are on different devices");
    CHECK(nb_add_(x, y) != 0);
    CHECK_ERR("nb_add_: operands are on different devices");
    double before[3];
    nb_read_f64(x, before, 3);
    CHECK(before[0] == 2 && before[2] == 2); /* the failed call left x as it was */
    nb_tensor *z = nb_exp(y); /* one operand: its device */
    CHECK(z && nb_device_of(z).type == NB_DEV_CUDA && z->st->be == &fake);
    CHECK(!nb_data(y));
    CHECK_ERR("nb_data: tensor (3,) is not on the CPU");
    /* a kernel the backend lacks: the op can say so */
    fake.softmax = NULL;
    CHECK(!nbi_has_kernel(&fake, softmax) && nbi_has_kernel(nbi_default_be(), softmax));
    CHECK(nbi_has_kernel(nbi_default_be(), attention) && nbi_has_kernel(nbi_default_be(), conv2d) &&
          nbi_has_kernel(nbi_default_be(), max_pool2d) && nbi_has_kernel(nbi_default_be(), batch_norm));
    CHECK(!nbi_no_kernel("nb_softmax", y, "softmax"));
    CHECK_ERR("nb_softmax: backend fake has no kernel 'softmax' (tensor (3,) on cuda:0)");
    nb_scope_end();
    CHECK(nb_memory_in_use() == 0);
}

/* Ops keep the tensors their backward needs on their node (the count in ops.def); a released graph drops them. */
static void test_saved_on_nodes(void) {
    CHECK(nbi_ops[NBI_OP_CROSS_ENTROPY].saved == 2 && nbi_ops[NBI_OP_LAYER_NORM].saved == 2 &&
          nbi_ops[NBI_OP_ATTENTION].saved == 1);
    CHECK(nbi_ops[NBI_OP_CUSTOM].saved == -1 && nbi_ops[NBI_OP_ADD].saved == 0);
    nb_scope_begin();
    nb_tensor *x = nb_from_f64(NB_F64, 2, (int64_t[]){2, 3}, (double[]){1, 2, 3, -1, 0, 4});
    nb_tensor *t = nb_from_f64(NB_I64, 1, (int64_t[]){2}, (double[]){2, 0});
    nb_set_requires_grad(x, true);
    nb_tensor *L = nb_cross_entropy(x, t);
    /* the rows' statistics (2, 2), and room the shape of x for what the backend keeps for the gradient */
    CHECK(L->node.nsaved == 2 && L->node.saved[0]->dtype == NB_F64 && L->node.saved[0]->shape[0] == 2 &&
          L->node.saved[0]->shape[1] == 2 && L->node.saved[1]->shape[0] == 2 && L->node.saved[1]->shape[1] == 3);
    nb_tensor *ms = nbi_saved("test", L, 0);
    CHECK(ms && nb_get(ms, (int64_t[]){0, 0}) == 3 && nb_get(ms, (int64_t[]){1, 0}) == 4); /* the row maxima */
    CHECK(!nbi_saved("test", L, 2));
    CHECK_ERR("test: cross_entropy: index 2 is outside the 2 saved tensors");
    CHECK(nbi_save(L, 1, &x) != 0); /* its count is 2 */
    CHECK_ERR("cannot save 1 more tensors on the node (2 saved, at most 2)");
    nb_tensor *y = nb_layer_norm(x, NULL, NULL, 1e-5);
    CHECK(y->node.nsaved == 2);
    CHECK(nb_backward(L, NULL, 0) == 0);
    CHECK(L->node.nsaved == 0 && L->node.released); /* dropped with the graph */
    CHECK(!nbi_saved("test", L, 0));
    CHECK_ERR("the graph through op 'cross_entropy' was released");
    nb_scope_end();
    CHECK(nb_memory_in_use() == 0);
}

/* Custom ops save through the same mechanism: the node holds what nb_ctx_save kept, versions checked. */
static nb_tensor *sq_fwd(nb_ctx *ctx, int n, nb_tensor *const *in, void *ud) {
    (void)n, (void)ud;
    if (nb_ctx_save(ctx, 1, in) != 0) return NULL;
    return nb_mul(in[0], in[0]);
}
static int sq_bwd(nb_ctx *ctx, nb_tensor *g, nb_tensor **gin, void *ud) {
    (void)ud;
    nb_tensor *x = nb_ctx_saved(ctx, 0);
    if (!x) return -1;
    CHECK(nb_ctx_save(ctx, 1, &x) != 0); /* not in the backward */
    nb_clear_error();
    gin[0] = nb_scale(nb_mul(g, x), 2.0);
    return gin[0] ? 0 : -1;
}

static void test_custom_saves_on_node(void) {
    nb_scope_begin();
    nb_tensor *x = nb_from_f64(NB_F64, 1, (int64_t[]){3}, (double[]){1, 2, 3});
    nb_set_requires_grad(x, true);
    nb_tensor *y = nb_custom("square", 1, &x, sq_fwd, sq_bwd, NULL);
    CHECK(y && y->node.nsaved == 1 && y->node.saved[0] == x);
    CHECK(nb_backward(nb_sum(y), NULL, NB_RETAIN_GRAPH) == 0);
    CHECK(nb_get(nb_grad(x), (int64_t[]){2}) == 6);
    nb_tensor *x2 = nb_from_f64(NB_F64, 1, (int64_t[]){3}, (double[]){1, 2, 3});
    nb_set_requires_grad(x2, true);
    nb_tensor *y2 = nb_custom("square", 1, &x2, sq_fwd, sq_bwd, NULL);
    bool was = nb_grad_enabled();
    nb_set_grad_enabled(false);
    nb_tensor *x2v = nb_detach(x2);
    CHECK(nb_scale_(x2v, 2.0) == 0); /* changes the saved value */
    nb_set_grad_enabled(was);
    CHECK(nb_backward(nb_sum(y2), NULL, 0) != 0);
    CHECK(nb_last_error() && strstr(nb_last_error(), "modified in place"));
    nb_clear_error();
    nb_scope_end();
    CHECK(nb_memory_in_use() == 0);
}

/* The f32 row kernels of the fast set against the reference set, called directly: each within its bound of the
   reference's result (docs/OPS.md, "f32 accuracy"), and the paths that recompute the row statistics (ms or mean
   and rstd NULL) give the bits of the paths that are handed them. */
static float ulp_f(float v) {
    v = fabsf(v);
    return v < 0x1p-126f ? 0x1p-149f : ldexpf(1.0f, ilogbf(v) - 23);
}
static int beyond(const float *got, const float *want, int64_t n, double ulps_allowed) {
    int bad = 0;
    for (int64_t i = 0; i < n; i++)
        bad += !(fabs((double)got[i] - (double)want[i]) <= ulps_allowed * ulp_f(want[i]));
    return bad;
}

static void test_f32_rows_against_reference(void) {
    const nbi_backend *cpu = nbi_backend_cpu(), *ref = nbi_backend_reference();
    const int64_t N = 64, C = 1000, D = 200;
    float *x = malloc(sizeof(float) * N * C), *a = malloc(sizeof(float) * N * C), *b = malloc(sizeof(float) * N * C);
    float *gm = malloc(sizeof(float) * D), *bt = malloc(sizeof(float) * D), *g = malloc(sizeof(float) * N * D);
    float *dg[2], *db[2];
    int64_t *t = malloc(sizeof(int64_t) * N);
    double ms[2][2 * 64], mean[2][64], rstd[2][64], loss[2];
    for (int i = 0; i < 2; i++) dg[i] = malloc(sizeof(float) * D), db[i] = malloc(sizeof(float) * D);
    for (int64_t i = 0; i < N * C; i++) x[i] = (float)(th_uniform(-1, 1) * (i % 5 == 0 ? 40 : 3));
    for (int64_t i = 0; i < N; i++) t[i] = (i * 97) % C;
    for (int64_t j = 0; j < D; j++) gm[j] = (float)th_uniform(0.5, 1.5), bt[j] = (float)th_uniform(-1, 1);
    for (int64_t i = 0; i < N * D; i++) g[i] = (float)th_uniform(-1, 1);
    /* softmax and log-softmax: the reference is rounded once, so its bound plus half an ulp */
    for (int lg = 0; lg < 2; lg++) {
        cpu->softmax(NB_F32, a, x, N, C, 1, lg);
        ref->softmax(NB_F32, b, x, N, C, 1, lg);
        CHECK(beyond(a, b, N * C, lg ? 3 : 5) == 0);
    }
    /* cross-entropy and its gradient, with the statistics and without, and with the forward's kept exps (ex):
       every way the same bits */
    float *e = malloc(sizeof(float) * N * C), *c = malloc(sizeof(float) * N * C);
    double ms2[2 * 64], loss2;
    CHECK(cpu->cross_entropy(NB_F32, &loss[0], x, t, 1, N, C, ms[0], NULL, NULL) == 0);
    CHECK(ref->cross_entropy(NB_F32, &loss[1], x, t, 1, N, C, ms[1], NULL, NULL) == 0);
    CHECK(fabs(loss[0] - loss[1]) <= 0x1p-22 * fabs(loss[1]));
    CHECK(cpu->cross_entropy_grad(NB_F32, a, x, t, 1, N, C, 1.0 / N, ms[0], NULL, NULL) == 0);
    CHECK(ref->cross_entropy_grad(NB_F32, b, x, t, 1, N, C, 1.0 / N, ms[1], NULL, NULL) == 0);
    CHECK(beyond(a, b, N * C, 5) == 0);
    CHECK(cpu->cross_entropy_grad(NB_F32, b, x, t, 1, N, C, 1.0 / N, NULL, NULL, NULL) == 0);
    CHECK(memcmp(a, b, sizeof(float) * N * C) == 0);
    CHECK(cpu->cross_entropy(NB_F32, &loss2, x, t, 1, N, C, ms2, e, NULL) == 0);
    CHECK(loss2 == loss[0] && memcmp(ms2, ms[0], sizeof ms2) == 0);
    CHECK(cpu->cross_entropy_grad(NB_F32, c, x, t, 1, N, C, 1.0 / N, ms2, e, NULL) == 0);
    CHECK(memcmp(a, c, sizeof(float) * N * C) == 0);
    /* with options: every third row ignored, smoothing, per-row weights and terms */
    {
        int64_t *ti = malloc(sizeof(int64_t) * N);
        double *w = malloc(sizeof(double) * N), *rw[2] = {malloc(sizeof(double) * N), malloc(sizeof(double) * N)};
        for (int64_t i = 0; i < N; i++) ti[i] = i % 3 == 1 ? -100 : t[i], w[i] = th_uniform(-1, 1);
        nbi_ce_opts o[2] = {{-100, 0.25, rw[0], w}, {-100, 0.25, rw[1], w}};
        CHECK(cpu->cross_entropy(NB_F32, &loss[0], x, ti, 1, N, C, ms[0], NULL, &o[0]) == 0);
        CHECK(ref->cross_entropy(NB_F32, &loss[1], x, ti, 1, N, C, ms[1], NULL, &o[1]) == 0);
        CHECK(fabs(loss[0] - loss[1]) <= 0x1p-20 * fabs(loss[1]));
        CHECK(rw[0][1] == 0 && rw[1][1] == 0);
        for (int64_t i = 0; i < N; i++) CHECK(fabs(rw[0][i] - rw[1][i]) <= 0x1p-20 * (fabs(rw[1][i]) + 1));
        CHECK(cpu->cross_entropy_grad(NB_F32, a, x, ti, 1, N, C, 0, ms[0], NULL, &o[0]) == 0);
        CHECK(ref->cross_entropy_grad(NB_F32, b, x, ti, 1, N, C, 0, ms[1], NULL, &o[1]) == 0);
        for (int64_t i = 0; i < N * C; i++) CHECK(fabs(a[i] - b[i]) <= 0x1p-21 * (fabs(w[i / C]) + fabs(b[i])));
        CHECK(a[C] == 0 && a[2 * C - 1] == 0);
        CHECK(cpu->cross_entropy_grad(NB_F32, b, x, ti, 1, N, C, 0, NULL, NULL, &o[0]) == 0);
        CHECK(memcmp(a, b, sizeof(float) * N * C) == 0);
        CHECK(cpu->cross_entropy(NB_F32, &loss2, x, ti, 1, N, C, ms2, e, &o[0]) == 0);
        CHECK(cpu->cross_entropy_grad(NB_F32, c, x, ti, 1, N, C, 0, ms2, e, &o[0]) == 0);
        CHECK(memcmp(a, c, sizeof(float) * N * C) == 0);
        free(ti), free(w), free(rw[0]), free(rw[1]);
    }
    free(e), free(c);
    /* layer norm: the reference's bits but rarely 1 ulp; dgamma and dbeta its bits given the same statistics */
    CHECK(cpu->layer_norm(NB_F32, a, x, gm, bt, N, D, 1e-5, mean[0], rstd[0]) == 0);
    CHECK(ref->layer_norm(NB_F32, b, x, gm, bt, N, D, 1e-5, mean[1], rstd[1]) == 0);
    CHECK(beyond(a, b, N * D, 1) == 0);
    CHECK(cpu->layer_norm_grad(NB_F32, a, dg[0], db[0], g, x, gm, N, D, 1e-5, mean[0], rstd[0]) == 0);
    CHECK(ref->layer_norm_grad(NB_F32, b, dg[1], db[1], g, x, gm, N, D, 1e-5, mean[0], rstd[0]) == 0);
    CHECK(beyond(a, b, N * D, 1) == 0);
    CHECK(memcmp(dg[0], dg[1], sizeof(float) * D) == 0 && memcmp(db[0], db[1], sizeof(float) * D) == 0);
    CHECK(cpu->layer_norm_grad(NB_F32, b, dg[1], db[1], g, x, gm, N, D, 1e-5, NULL, NULL) == 0);
    CHECK(memcmp(a, b, sizeof(float) * N * D) == 0);
    CHECK(memcmp(dg[0], dg[1], sizeof(float) * D) == 0 && memcmp(db[0], db[1], sizeof(float) * D) == 0);
    free(x), free(a), free(b), free(gm), free(bt), free(g), free(t);
    for (int i = 0; i < 2; i++) free(dg[i]), free(db[i]);
}

int main(void) {
    RUN(test_storage_shared_by_views);
    RUN(test_devices);
    RUN(test_saved_on_nodes);
    RUN(test_custom_saves_on_node);
    RUN(test_f32_rows_against_reference);
    return th_finish();
}

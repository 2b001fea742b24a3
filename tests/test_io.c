/*
 * test_io.c - safetensors checkpoints: a file from an independent writer
 * (tools/gen_safetensors.py) is read correctly, nabla writes the same bytes
 * for the same tensors, modules round-trip, and truncated, corrupt or
 * mismatched files are errors that change nothing.
 */
#include "harness.h"
#include "nabla/io.h"

#define REF NB_TEST_DATA_DIR "/reference.safetensors"

static unsigned char *slurp(const char *path, long *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)*n);
    if (b && fread(b, 1, (size_t)*n, f) != (size_t)*n) *n = -1;
    fclose(f);
    return b;
}

static void spit(const char *path, const unsigned char *b, long n) {
    FILE *f = fopen(path, "wb");
    if (f) {
        fwrite(b, 1, (size_t)n, f);
        fclose(f);
    }
}

static void test_read_independent_and_write_same_bytes(void) {
    nb_scope_begin();
    nb_tensor *w = nb_new(NB_F32, 2, (int64_t[]){2, 3}, NULL), *b = nb_new(NB_F32, 1, (int64_t[]){3}, NULL);
    nb_tensor *d = nb_new(NB_F64, 2, (int64_t[]){2, 2}, NULL), *c = nb_new(NB_I64, 1, (int64_t[]){1}, NULL);
    nb_tensor *ts[4] = {w, b, d, c};
    const char *names[4] = {"a.weight", "a.bias", "b", "count"};
    CHECK(nb_load_safetensors(REF, 4, ts, names) == 0);
    for (int i = 0; i < 6; i++) CHECK(nb_get(w, (int64_t[]){i / 3, i % 3}) == 0.5 * i - 1);
    CHECK(nb_get(b, (int64_t[]){2}) == 3.25 && nb_get(b, (int64_t[]){1}) == -2);
    CHECK(nb_get(d, (int64_t[]){1, 0}) == 2.0 / 3 && nb_item(c) == 42);
    CHECK(nb_save_safetensors("/tmp/nabla_test_io.safetensors", 4, ts, names) == 0);
    long n1, n2;
    unsigned char *a1 = slurp(REF, &n1), *a2 = slurp("/tmp/nabla_test_io.safetensors", &n2);
    CHECK(a1 && a2 && n1 == n2 && memcmp(a1, a2, (size_t)n1) == 0);
    free(a1);
    free(a2);
    nb_scope_end();
}

static void test_module_round_trip(void) {
    nb_rng r;
    nb_rng_seed(&r, 5);
    nb_module *m1 = nb_sequential(2, (nb_module *[]){nb_linear(3, 4, true, NB_INIT_XAVIER, NB_F32, &r),
                                                     nb_linear(4, 2, true, NB_INIT_XAVIER, NB_F32, &r)});
    nb_module *m2 = nb_sequential(2, (nb_module *[]){nb_linear(3, 4, true, NB_INIT_XAVIER, NB_F32, &r),
                                                     nb_linear(4, 2, true, NB_INIT_XAVIER, NB_F32, &r)});
    CHECK(nb_module_save(m1, "/tmp/nabla_test_m.safetensors") == 0);
    CHECK(nb_module_load(m2, "/tmp/nabla_test_m.safetensors") == 0);
    nb_scope_begin();
    nb_tensor *x = th_rand(NB_F32, 2, (int64_t[]){2, 3}, -1, 1);
    CHECK(nb_item(nb_sum(nb_abs(nb_sub(nb_forward(m1, x), nb_forward(m2, x))))) == 0);
    nb_scope_end();
    /* a model of another shape: error, nothing changed */
    nb_module *m3 = nb_linear(3, 5, true, NB_INIT_XAVIER, NB_F32, &r);
    nb_tensor *w3;
    nb_module_params(m3, &w3, NULL, 1);
    double before = nb_get(w3, (int64_t[]){0, 0});
    CHECK(nb_module_load(m3, "/tmp/nabla_test_m.safetensors") != 0);
    CHECK_ERR("no tensor named 'weight'");
    CHECK(nb_get(w3, (int64_t[]){0, 0}) == before);
    nb_module_free(m1);
    nb_module_free(m2);
    nb_module_free(m3);
}

static void test_bad_files(void) {
    nb_scope_begin();
    nb_tensor *w = nb_full(NB_F32, 2, (int64_t[]){2, 3}, 7), *b = nb_full(NB_F32, 1, (int64_t[]){3}, 7);
    nb_tensor *ts[2] = {w, b};
    const char *names[2] = {"a.weight", "a.bias"};
    long n;
    unsigned char *raw = slurp(REF, &n);
    CHECK(raw != NULL);
    if (!raw) return;
    spit("/tmp/nabla_trunc.safetensors", raw, n - 5); /* truncated data */
    CHECK(nb_load_safetensors("/tmp/nabla_trunc.safetensors", 2, ts, names) != 0);
    CHECK_ERR("do not fit the file");
    spit("/tmp/nabla_trunc.safetensors", raw, 12); /* truncated header */
    CHECK(nb_load_safetensors("/tmp/nabla_trunc.safetensors", 2, ts, names) != 0);
    CHECK_ERR("beyond the file");
    raw[8] = '#'; /* corrupt JSON */
    spit("/tmp/nabla_bad.safetensors", raw, n);
    CHECK(nb_load_safetensors("/tmp/nabla_bad.safetensors", 2, ts, names) != 0);
    CHECK_ERR("nb_load_safetensors: corrupt header");
    free(raw);
    nb_tensor *wrong = nb_full(NB_F32, 2, (int64_t[]){3, 2}, 7);
    nb_tensor *ts2[2] = {b, wrong};
    const char *names2[2] = {"a.bias", "a.weight"};
    CHECK(nb_load_safetensors(REF, 2, ts2, names2) != 0);
    CHECK_ERR("tensor 'a.weight' in the file is F32 (2,3), the model's is F32 (3,2)");
    CHECK(nb_get(b, (int64_t[]){0}) == 7); /* all or nothing: the matching one was not written either */
    CHECK(nb_get(w, (int64_t[]){0, 0}) == 7);
    CHECK(nb_load_safetensors("/nonexistent/x.safetensors", 2, ts, names) != 0);
    CHECK_ERR("cannot open");
    CHECK(nb_save_safetensors("/nonexistent/dir/x.safetensors", 2, ts, names) != 0);
    CHECK_ERR("cannot write");
    const char *dup[2] = {"x", "x"};
    CHECK(nb_save_safetensors("/tmp/nabla_dup.safetensors", 2, ts, dup) != 0);
    CHECK_ERR("name 'x' appears twice");
    nb_scope_end();
}

static void test_svg(void) {
    double loss[5] = {2.3, 1.1, 0.7, NAN, 0.4}, acc[3] = {0.2, 0.6, 0.9};
    const double *ys[2] = {loss, acc};
    int64_t lens[2] = {5, 3};
    const char *labels[2] = {"train loss", "test <accuracy>"};
    CHECK(nb_svg_curves("/tmp/nabla_curves.svg", "run & curves", 2, labels, ys, lens) == 0);
    long n;
    unsigned char *b = slurp("/tmp/nabla_curves.svg", &n);
    CHECK(b != NULL);
    if (!b) return;
    char *s = malloc((size_t)n + 1);
    memcpy(s, b, (size_t)n);
    s[n] = 0;
    CHECK(strstr(s, "<svg xmlns=\"http://www.w3.org/2000/svg\"") == s);
    CHECK(strstr(s, "</svg>") != NULL && strstr(s, "run &amp; curves") && strstr(s, "test &lt;accuracy&gt;"));
    int polylines = 0, points = 0;
    for (char *p = s; (p = strstr(p, "<polyline")); p++) polylines++;
    char *first = strstr(s, "points=\"");
    for (char *p = first; p && *p != '/'; p++) points += *p == ',';
    CHECK(polylines == 2 && points == 4); /* the NaN point is skipped */
    free(s);
    free(b);
    CHECK(nb_svg_curves("/nonexistent/x.svg", "t", 2, labels, ys, lens) != 0);
    CHECK_ERR("nb_svg_curves: cannot open");
}

/* grad of sum(p * c * (1 + step)) is c (1 + step) */
static void fake_step(nb_optim *o, nb_tensor *p, int step) {
    nb_scope_begin();
    nb_tensor *c = nb_from_f64(NB_F32, 1, (int64_t[]){3}, (double[]){0.5, -1.0, 2.0});
    nb_optim_zero_grad(o);
    CHECK(nb_backward(nb_sum(nb_mul(p, nb_scale(c, 1.0 + step))), NULL, 0) == 0);
    CHECK(nb_optim_step(o) == 0);
    nb_scope_end();
}

/* Saving Adam's state after 3 steps and loading it into a fresh Adam gives the same 4th step. */
static void test_optim_state(void) {
    const char *path = "/tmp/nabla_test_optim.safetensors";
    double v0[3] = {1, 2, 3};
    nb_tensor *p = nb_from_f64(NB_F32, 1, (int64_t[]){3}, v0), *q = nb_from_f64(NB_F32, 1, (int64_t[]){3}, v0);
    nb_set_requires_grad(p, true);
    nb_set_requires_grad(q, true);
    nb_optim *a = nb_adam(1, &p, 0.1, 0.9, 0.999, 1e-8, 0), *b = nb_adam(1, &q, 0.1, 0.9, 0.999, 1e-8, 0);
    nb_optim *s = nb_sgd(1, &q, 0.1, 0.9, 0, false);
    for (int i = 0; i < 3; i++) fake_step(a, p, i);
    CHECK(nb_optim_save(a, path) == 0);
    CHECK(nb_optim_load(s, path) == 0); /* SGD reads m only: accepted */
    CHECK(nb_optim_steps(s) == 3);
    nb_set_grad_enabled(false);
    CHECK(nb_copy_(q, p) == 0);
    nb_set_grad_enabled(true);
    CHECK(nb_optim_load(b, path) == 0 && nb_optim_steps(b) == 3);
    fake_step(a, p, 3);
    fake_step(b, q, 3);
    CHECK(memcmp(nb_data(p), nb_data(q), 3 * sizeof(float)) == 0);
    /* a state file without the second moments: refused, nothing changes */
    CHECK(nb_optim_save(s, path) == 0);
    CHECK(nb_optim_load(b, path) != 0);
    CHECK(nb_optim_steps(b) == 4);
    CHECK(nb_optim_load(b, "/nonexistent/state.safetensors") != 0);
    nb_clear_error();
    CHECK(nb_optim_save(NULL, path) != 0);
    CHECK_ERR("nb_optim_save: optimizer or path is NULL");
    CHECK(nb_optim_load(b, NULL) != 0);
    CHECK_ERR("nb_optim_load: optimizer or path is NULL");
    CHECK(nb_optim_steps(b) == 4);
    remove(path);
    nb_optim_free(a), nb_optim_free(b), nb_optim_free(s);
    nb_free(p), nb_free(q);
}

int main(void) {
    RUN(test_svg);
    RUN(test_optim_state);
    th_seed(8);
    RUN(test_read_independent_and_write_same_bytes);
    RUN(test_module_round_trip);
    RUN(test_bad_files);
    return th_finish();
}

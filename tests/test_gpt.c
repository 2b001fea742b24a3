/*
 * test_gpt.c - the GPT-2 model (nabla/gpt.h): parameter names, layouts and
 * initialisation; loading a GPT-2 style safetensors file written by PyTorch
 * (tools/gen_gpt_reference.py: tests/data/gpt_tiny_f64/f32.safetensors) and
 * matching its logits, loss, every parameter's gradient and the losses of 20
 * AdamW steps with GPT-2's weight-decay grouping; dropout in training and
 * eval mode; the errors of building, loading and forward.
 */
#include <stdio.h>
#include <unistd.h>

#include "harness.h"
#include "nabla/gpt.h"
#include "nabla/io.h"

#define VOCAB 61
#define CTX 16
#define LAYERS 2
#define HEADS 2
#define DIM 24
#define B 3
#define T 11
#define STEPS 20

static const nb_gpt_config tiny = {VOCAB, CTX, LAYERS, HEADS, DIM, 0.0};

static char *data_path(const char *name) {
    static char buf[1024];
    snprintf(buf, sizeof buf, "%s/%s", NB_TEST_DATA_DIR, name);
    return buf;
}

/* The tensor `name` of the file, of the given dtype and shape (NULL on failure). */
static nb_tensor *load1(const char *path, const char *name, nb_dtype dt, int rank, const int64_t *shape) {
    nb_tensor *t = nb_new(dt, rank, shape, NULL);
    if (t && nb_load_safetensors(path, 1, &t, &name) != 0) {
        nb_free(t);
        return NULL;
    }
    return t;
}

static double get(nb_tensor *t, int64_t i) {
    const void *d = nb_data(t);
    return nb_dtype_of(t) == NB_F32 ? ((const float *)d)[i] : nb_dtype_of(t) == NB_F64 ? ((const double *)d)[i]
                                                                                        : (double)((const int64_t *)d)[i];
}

static double max_abs(nb_tensor *t) {
    double m = 0;
    for (int64_t i = 0; i < nb_numel(t); i++) m = fmax(m, fabs(get(t, i)));
    return m;
}

/* ------------------------------------------------------------- structure */

static const char *const BLOCK[] = {"ln_1.weight",      "ln_1.bias",        "attn.c_attn.weight", "attn.c_attn.bias",
                                    "attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight",        "ln_2.bias",
                                    "mlp.c_fc.weight",  "mlp.c_fc.bias",    "mlp.c_proj.weight",  "mlp.c_proj.bias"};

static void test_names_and_init(void) {
    nb_rng rng;
    nb_rng_seed(&rng, 5);
    nb_gpt_config cfg = {97, 64, 3, 4, 32, 0.0};
    nb_module *g = nb_gpt(&cfg, NB_F64, &rng);
    CHECK(g != NULL);
    if (!g) return;
    CHECK(strcmp(nb_module_kind(g), "GPT") == 0);
    CHECK(nb_gpt_config_of(g) && nb_gpt_config_of(g)->dim == 32 && nb_gpt_config_of(g)->heads == 4);
    CHECK(nb_module_training(g));
    nb_tensor *ps[64];
    const char *names[64];
    int n = nb_module_params(g, ps, names, 64);
    CHECK(n == 2 + 12 * 3 + 2);
    if (n != 40) {
        nb_module_free(g);
        return;
    }
    int64_t C = 32, expect_shape[12][2] = {{C, 0}, {C, 0}, {C, 3 * C}, {3 * C, 0}, {C, C}, {C, 0},
                                           {C, 0}, {C, 0}, {C, 4 * C}, {4 * C, 0}, {4 * C, C}, {C, 0}};
    CHECK(strcmp(names[0], "wte.weight") == 0 && nb_shape(ps[0])[0] == 97 && nb_shape(ps[0])[1] == C);
    CHECK(strcmp(names[1], "wpe.weight") == 0 && nb_shape(ps[1])[0] == 64 && nb_shape(ps[1])[1] == C);
    int64_t total = 97 * C + 64 * C + 2 * C;
    for (int l = 0; l < 3; l++)
        for (int k = 0; k < 12; k++) {
            char want[64];
            snprintf(want, sizeof want, "h.%d.%s", l, BLOCK[k]);
            nb_tensor *p = ps[2 + 12 * l + k];
            CHECK(strcmp(names[2 + 12 * l + k], want) == 0);
            int rank = expect_shape[k][1] ? 2 : 1;
            CHECK(nb_rank(p) == rank && nb_shape(p)[0] == expect_shape[k][0] &&
                  (rank == 1 || nb_shape(p)[1] == expect_shape[k][1]));
            CHECK(nb_module_param(g, want) == p);
            total += nb_numel(p);
            /* initialisation: biases 0, layer norms 1 / 0, weights normal with GPT-2's deviations */
            double s = 0, s2 = 0;
            for (int64_t i = 0; i < nb_numel(p); i++) s += get(p, i), s2 += get(p, i) * get(p, i);
            double mean = s / (double)nb_numel(p), sd = sqrt(s2 / (double)nb_numel(p) - mean * mean);
            if (strstr(want, "ln_") && strstr(want, "weight")) CHECK(mean == 1 && sd == 0);
            else if (strstr(want, "bias")) CHECK(mean == 0 && sd == 0);
            else {
                double want_sd = strstr(want, "c_proj") ? 0.02 / sqrt(6.0) : 0.02;
                CHECK_CLOSE(sd, want_sd, 0, 0.1);
                CHECK(fabs(mean) < 0.2 * want_sd);
            }
        }
    CHECK(strcmp(names[38], "ln_f.weight") == 0 && strcmp(names[39], "ln_f.bias") == 0);
    CHECK(nb_module_num_params(g) == total);
    for (int i = 0; i < 2; i++) {
        double s2 = 0;
        for (int64_t k = 0; k < nb_numel(ps[i]); k++) s2 += get(ps[i], k) * get(ps[i], k);
        CHECK_CLOSE(sqrt(s2 / (double)nb_numel(ps[i])), 0.02, 0, 0.1);
    }
    CHECK(strcmp(nb_module_kind(nb_module_child(g, "h.1.attn")), "CausalSelfAttention") == 0);
    CHECK(strcmp(nb_module_kind(nb_module_child(g, "h.1.mlp.c_fc")), "Conv1D") == 0);
    CHECK(strcmp(nb_module_kind(nb_module_child(g, "wte")), "Embedding") == 0);
    CHECK(nb_module_child(g, "lm_head") == NULL);
    nb_clear_error();
    nb_module_free(g);
}

/* ------------------------------------------------------------- reference */

static void check_reference(nb_dtype dt) {
    const char *path = data_path(dt == NB_F64 ? "gpt_tiny_f64.safetensors" : "gpt_tiny_f32.safetensors");
    double rtol = dt == NB_F64 ? 1e-10 : 1e-5;
    nb_rng rng;
    nb_rng_seed(&rng, 1);
    nb_module *g = nb_gpt(&tiny, dt, &rng);
    CHECK(g != NULL);
    if (!g) return;
    CHECK(nb_module_load(g, path) == 0);
    nb_scope_begin();
    nb_tensor *tokens = load1(path, "expected.tokens", NB_I64, 2, (int64_t[]){B, T});
    nb_tensor *targets = load1(path, "expected.targets", NB_I64, 1, (int64_t[]){B * T});
    nb_tensor *want = load1(path, "expected.logits", dt, 3, (int64_t[]){B, T, VOCAB});
    nb_tensor *want_loss = load1(path, "expected.loss", dt, 1, (int64_t[]){1});
    nb_tensor *want_losses = load1(path, "expected.losses", dt, 1, (int64_t[]){STEPS});
    nb_tensor *want_wte = load1(path, "expected.wte_sum", NB_F64, 1, (int64_t[]){1});
    CHECK(tokens && targets && want && want_loss && want_losses && want_wte);
    if (!(tokens && targets && want && want_loss && want_losses && want_wte)) goto out;

    /* logits and loss */
    nb_scope_begin();
    nb_tensor *logits = nb_forward(g, tokens);
    CHECK(logits && nb_rank(logits) == 3 && nb_shape(logits)[0] == B && nb_shape(logits)[1] == T &&
          nb_shape(logits)[2] == VOCAB && nb_dtype_of(logits) == dt);
    if (!logits) {
        nb_scope_end();
        goto out;
    }
    double scale = max_abs(want), worst = 0;
    for (int64_t i = 0; i < nb_numel(want); i++) worst = fmax(worst, fabs(get(logits, i) - get(want, i)));
    if (!(worst <= rtol * scale)) fprintf(stderr, "logits differ by %g (scale %g)\n", worst, scale);
    CHECK(worst <= rtol * scale);
    nb_tensor *loss = nb_cross_entropy(nb_reshape(logits, 2, (int64_t[]){B * T, VOCAB}), targets);
    CHECK_CLOSE(nb_item(loss), get(want_loss, 0), 0, rtol);

    /* every parameter's gradient: sum, sum of |g|, L2 norm */
    CHECK(nb_backward(loss, NULL, 0) == 0);
    nb_tensor *ps[64];
    const char *names[64];
    int n = nb_module_params(g, ps, names, 64);
    CHECK(n == 2 + 12 * LAYERS + 2);
    for (int i = 0; i < n; i++) {
        char key[96];
        snprintf(key, sizeof key, "expected.grad.%s", names[i]);
        nb_tensor *st = load1(path, key, NB_F64, 1, (int64_t[]){3});
        nb_tensor *gr = nb_grad(ps[i]);
        CHECK(st && gr);
        if (!st || !gr) continue;
        double s = 0, a = 0, q = 0;
        for (int64_t k = 0; k < nb_numel(gr); k++) s += get(gr, k), a += fabs(get(gr, k)), q += get(gr, k) * get(gr, k);
        double gtol = rtol; /* relative to the sum of |g|: a sum that nearly cancels is held to its terms */
        if (!(fabs(s - get(st, 0)) <= gtol * get(st, 1) && fabs(a - get(st, 1)) <= gtol * get(st, 1) &&
              fabs(sqrt(q) - get(st, 2)) <= gtol * get(st, 2)))
            fprintf(stderr, "%s: gradient sum %.10g |.| %.10g norm %.10g, expected %.10g %.10g %.10g\n", names[i], s,
                    a, sqrt(q), get(st, 0), get(st, 1), get(st, 2));
        CHECK(fabs(s - get(st, 0)) <= gtol * get(st, 1));
        CHECK(fabs(a - get(st, 1)) <= gtol * get(st, 1));
        CHECK(fabs(sqrt(q) - get(st, 2)) <= gtol * get(st, 2));
    }
    nb_scope_end();

    /* 20 AdamW steps, decay 0.1 on the projection matrices only */
    nb_optim *o = nb_gpt_adamw(g, 1e-3, 0.9, 0.999, 1e-8, 0.1);
    CHECK(o != NULL);
    for (int s = 0; o && s < STEPS; s++) {
        nb_scope_begin();
        nb_optim_zero_grad(o);
        nb_tensor *l = nb_cross_entropy(nb_reshape(nb_forward(g, tokens), 2, (int64_t[]){B * T, VOCAB}), targets);
        CHECK(l && nb_backward(l, NULL, 0) == 0 && nb_optim_step(o) == 0);
        nb_set_grad_enabled(false);
        nb_tensor *after = nb_cross_entropy(nb_reshape(nb_forward(g, tokens), 2, (int64_t[]){B * T, VOCAB}), targets);
        nb_set_grad_enabled(true);
        CHECK(after != NULL);
        if (after) CHECK_CLOSE(nb_item(after), get(want_losses, s), 0, dt == NB_F64 ? 1e-10 : 1e-5);
        nb_scope_end();
    }
    double wsum = 0;
    nb_tensor *wte = nb_module_param(g, "wte.weight");
    for (int64_t k = 0; k < nb_numel(wte); k++) wsum += get(wte, k);
    CHECK_CLOSE(wsum, get(want_wte, 0), dt == NB_F64 ? 1e-12 : 1e-5, rtol);
    nb_optim_free(o);
out:
    nb_scope_end();
    nb_module_free(g);
}

static void test_reference_f64(void) { check_reference(NB_F64); }
static void test_reference_f32(void) { check_reference(NB_F32); }

/* --------------------------------------------------------------- dropout */

static void test_dropout(void) {
    nb_rng r1, r2;
    nb_rng_seed(&r1, 9);
    nb_rng_seed(&r2, 9);
    nb_gpt_config cfg = tiny;
    cfg.dropout = 0.25;
    nb_module *g = nb_gpt(&cfg, NB_F64, &r1), *plain = nb_gpt(&tiny, NB_F64, &r2); /* the same weights */
    CHECK(g && plain);
    if (!g || !plain) goto out;
    nb_scope_begin();
    nb_tensor *tokens = nb_arange(NB_I64, 0, 2 * 8, 1);
    tokens = nb_reshape(tokens, 2, (int64_t[]){2, 8});
    nb_tensor *a = nb_forward(g, tokens), *b = nb_forward(g, tokens), *p = nb_forward(plain, tokens);
    CHECK(a && b && p);
    double d_ab = 0, d_ap = 0;
    for (int64_t i = 0; a && b && p && i < nb_numel(a); i++)
        d_ab = fmax(d_ab, fabs(get(a, i) - get(b, i))), d_ap = fmax(d_ap, fabs(get(a, i) - get(p, i)));
    CHECK(d_ab > 1e-3 && d_ap > 1e-3); /* training: each call draws new masks */
    nb_module_train(g, false);
    CHECK(!nb_module_training(nb_module_child(g, "h.0.mlp")));
    a = nb_forward(g, tokens), b = nb_forward(g, tokens);
    for (int64_t i = 0; a && b && i < nb_numel(a); i++) CHECK(get(a, i) == get(b, i) && get(a, i) == get(p, i));
    nb_scope_end();
out:
    nb_module_free(g);
    nb_module_free(plain);
}

/* nb_adamw_decay with decays {0.1, 0} steps as nb_adamw with 0.1 on the first parameter and 0 on the second. */
static void test_adamw_decay(void) {
    nb_tensor *p[4];
    for (int i = 0; i < 4; i++) {
        p[i] = nb_from_f64(NB_F64, 1, (int64_t[]){3}, (double[]){1, -2, 0.5});
        nb_set_requires_grad(p[i], true);
    }
    nb_optim *both = nb_adamw_decay(2, p, 0.01, 0.9, 0.999, 1e-8, (double[]){0.1, 0.0});
    nb_optim *a = nb_adamw(1, &p[2], 0.01, 0.9, 0.999, 1e-8, 0.1), *b = nb_adamw(1, &p[3], 0.01, 0.9, 0.999, 1e-8, 0);
    CHECK(both && a && b);
    for (int s = 0; both && a && b && s < 3; s++) {
        nb_scope_begin();
        for (int i = 0; i < 4; i++) {
            nb_clear_grad(p[i]);
            nb_tensor *l = nb_sum(nb_mul(p[i], nb_from_f64(NB_F64, 1, (int64_t[]){3}, (double[]){1, 0.5, -3})));
            CHECK(nb_backward(l, NULL, 0) == 0);
        }
        CHECK(nb_optim_step(both) == 0 && nb_optim_step(a) == 0 && nb_optim_step(b) == 0);
        nb_scope_end();
    }
    for (int k = 0; k < 3; k++) CHECK(get(p[0], k) == get(p[2], k) && get(p[1], k) == get(p[3], k));
    CHECK(get(p[0], 0) != get(p[1], 0)); /* the decay made a difference */
    nb_optim_free(both), nb_optim_free(a), nb_optim_free(b);
    for (int i = 0; i < 4; i++) nb_free(p[i]);
}

/* ---------------------------------------------------------------- errors */

static void test_build_errors(void) {
    nb_rng rng;
    nb_rng_seed(&rng, 1);
    nb_gpt_config c = tiny;
    c.dim = 25;
    CHECK(nb_gpt(&c, NB_F32, &rng) == NULL);
    CHECK_ERR("dim 25");
    c = tiny, c.layers = 0;
    CHECK(nb_gpt(&c, NB_F32, &rng) == NULL);
    CHECK_ERR("layers 0");
    c = tiny, c.dropout = 1;
    CHECK(nb_gpt(&c, NB_F32, &rng) == NULL);
    CHECK_ERR("dropout 1");
    CHECK(nb_gpt(&tiny, NB_I64, &rng) == NULL);
    CHECK_ERR("dtype");
    CHECK(nb_gpt(&tiny, NB_F32, NULL) == NULL);
    CHECK_ERR("NULL");
    CHECK(nb_gpt_config_of(NULL) == NULL);
    CHECK(nb_gpt_adamw(NULL, 1e-3, 0.9, 0.999, 1e-8, 0.1) == NULL);
    CHECK_ERR("not a GPT");
    nb_tensor *w = nb_full(NB_F32, 1, (int64_t[]){2}, 1.0);
    nb_set_requires_grad(w, true);
    CHECK(nb_adamw_decay(1, &w, 1e-3, 0.9, 0.999, 1e-8, (double[]){-1}) == NULL);
    CHECK_ERR("weight decay -1 of parameter 0");
    CHECK(nb_adamw_decay(1, &w, 1e-3, 0.9, 0.999, 1e-8, NULL) == NULL);
    CHECK_ERR("NULL");
    nb_free(w);
}

static void test_forward_errors(void) {
    nb_rng rng;
    nb_rng_seed(&rng, 1);
    nb_module *g = nb_gpt(&tiny, NB_F32, &rng);
    CHECK(g != NULL);
    if (!g) return;
    nb_scope_begin();
    nb_tensor *ok = nb_reshape(nb_arange(NB_I64, 0, 6, 1), 2, (int64_t[]){2, 3});
    CHECK(nb_forward(g, ok) != NULL);
    nb_tensor *bad = nb_from_f64(NB_I64, 2, (int64_t[]){1, 3}, (double[]){1, 61, 2});
    CHECK(nb_forward(g, bad) == NULL);
    CHECK_ERR("token 61 at (0, 1) is outside [0, vocab 61)");
    bad = nb_from_f64(NB_I64, 2, (int64_t[]){1, 2}, (double[]){-1, 2});
    CHECK(nb_forward(g, bad) == NULL);
    CHECK_ERR("token -1 at (0, 0)");
    CHECK(nb_forward(g, nb_full(NB_I64, 2, (int64_t[]){1, 17}, 0)) == NULL);
    CHECK_ERR("(1, 17); need B >= 1 and 1 <= T <= ctx 16");
    CHECK(nb_forward(g, nb_full(NB_I64, 1, (int64_t[]){5}, 0)) == NULL);
    CHECK_ERR("(B, T) NB_I64 tensor, not i64 (5,)");
    CHECK(nb_forward(g, nb_full(NB_F32, 2, (int64_t[]){1, 5}, 0)) == NULL);
    CHECK_ERR("not f32 (1,5)");
    CHECK(nb_forward(g, nb_full(NB_I64, 2, (int64_t[]){0, 5}, 0)) == NULL);
    CHECK_ERR("need B >= 1");
    /* a transposed (non-contiguous) batch of tokens works */
    nb_tensor *tt = nb_transpose(nb_reshape(nb_arange(NB_I64, 0, 6, 1), 2, (int64_t[]){3, 2}), 0, 1);
    nb_tensor *y1 = nb_forward(g, tt), *y2 = nb_forward(g, nb_contiguous(tt));
    CHECK(y1 && y2);
    for (int64_t i = 0; y1 && y2 && i < nb_numel(y1); i++) CHECK(get(y1, i) == get(y2, i));
    nb_scope_end();
    nb_module_free(g);
}

static void test_load_errors(void) {
    nb_rng rng;
    nb_rng_seed(&rng, 1);
    const char *path = data_path("gpt_tiny_f32.safetensors");
    nb_gpt_config c = tiny;
    c.ctx = 32; /* wpe (32, 24) against the file's (16, 24) */
    nb_module *g = nb_gpt(&c, NB_F32, &rng);
    nb_tensor *wte = g ? nb_module_param(g, "wte.weight") : NULL;
    CHECK(wte != NULL);
    if (!wte) {
        nb_module_free(g);
        return;
    }
    float before = ((float *)nb_data(wte))[0];
    CHECK(nb_module_load(g, path) != 0);
    CHECK_ERR("'wpe.weight' in the file is F32 (16,24), the model's is F32 (32,24)");
    CHECK(((float *)nb_data(wte))[0] == before); /* nothing changed */
    nb_module_free(g);
    c = tiny, c.layers = 3;
    g = nb_gpt(&c, NB_F32, &rng);
    CHECK(nb_module_load(g, path) != 0);
    CHECK_ERR("no tensor named 'h.2.ln_1.weight'");
    nb_module_free(g);
    /* the f64 model against the f32 file */
    g = nb_gpt(&tiny, NB_F64, &rng);
    CHECK(nb_module_load(g, path) != 0);
    CHECK_ERR("is F32 (61,24), the model's is F64 (61,24)");
    nb_module_free(g);
    /* a skipped tensor of a dtype nabla does not read (BOOL) is fine; asking for it is an error naming it */
    nb_tensor *mask = nb_new(NB_F32, 4, (int64_t[]){1, 1, CTX, CTX}, NULL);
    const char *name = "h.0.attn.bias";
    CHECK(nb_load_safetensors(path, 1, &mask, &name) != 0);
    CHECK_ERR("'h.0.attn.bias' in the file is BOOL (1,1,16,16)");
    nb_free(mask);
}

static void test_save_roundtrip(void) {
    nb_rng rng;
    nb_rng_seed(&rng, 3);
    nb_module *a = nb_gpt(&tiny, NB_F32, &rng), *b = nb_gpt(&tiny, NB_F32, &rng);
    char path[64];
    snprintf(path, sizeof path, "gpt_roundtrip_%d.safetensors", (int)getpid());
    CHECK(a && b && nb_module_save(a, path) == 0 && nb_module_load(b, path) == 0);
    remove(path);
    nb_scope_begin();
    nb_tensor *tok = nb_reshape(nb_arange(NB_I64, 0, 16, 1), 2, (int64_t[]){1, 16});
    nb_tensor *ya = nb_forward(a, tok), *yb = nb_forward(b, tok);
    CHECK(ya && yb);
    for (int64_t i = 0; ya && yb && i < nb_numel(ya); i++) CHECK(get(ya, i) == get(yb, i));
    nb_scope_end();
    nb_module_free(a);
    nb_module_free(b);
}

/* Building, loading, one training step and freeing, with the at-th allocation failing: an error, and no
   memory left behind, at every point. */
static int build_load_step(void) {
    nb_rng rng;
    nb_rng_seed(&rng, 2);
    nb_gpt_config cfg = tiny;
    cfg.dropout = 0.1;
    nb_module *g = nb_gpt(&cfg, NB_F32, &rng);
    int rc = g ? nb_module_load(g, data_path("gpt_tiny_f32.safetensors")) : -1;
    nb_optim *o = rc == 0 ? nb_gpt_adamw(g, 1e-3, 0.9, 0.999, 1e-8, 0.1) : NULL;
    if (rc == 0 && !o) rc = -1;
    if (rc == 0) {
        nb_scope_begin();
        nb_tensor *tok = nb_reshape(nb_arange(NB_I64, 0, 10, 1), 2, (int64_t[]){2, 5});
        nb_tensor *l = nb_cross_entropy(nb_reshape(nb_forward(g, tok), 2, (int64_t[]){10, VOCAB}),
                                        nb_arange(NB_I64, 5, 15, 1));
        rc = l && nb_backward(l, NULL, 0) == 0 && nb_optim_step(o) == 0 ? 0 : -1;
        nb_scope_end();
    }
    nb_optim_free(o);
    nb_module_free(g);
    return rc;
}

static int build_load_step_at(void *unused) {
    (void)unused;
    return build_load_step();
}

static void test_oom(void) { CHECK(th_fail_each(build_load_step_at, NULL, 20000) > 100); }

int main(void) {
    RUN(test_names_and_init);
    RUN(test_reference_f64);
    RUN(test_reference_f32);
    RUN(test_dropout);
    RUN(test_adamw_decay);
    RUN(test_build_errors);
    RUN(test_forward_errors);
    RUN(test_load_errors);
    RUN(test_save_roundtrip);
    if (!getenv("SKIP_OOM")) RUN(test_oom);
    return th_finish();
}

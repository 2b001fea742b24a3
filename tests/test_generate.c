/*
 * test_generate.c - decoding with a GPT (nabla/gpt.h): the KV cache's logits
 * against nb_forward on the whole sequence, fed in chunks and in batches;
 * nb_gpt_generate with and without the cache giving the same tokens (greedy
 * and sampled, f32 and f64); greedy against an argmax of nb_forward; sampled
 * tokens inside the top k and their frequencies against softmax(logits / t);
 * the stop at ctx and by the callback; the errors, with nothing changed; an
 * allocation failing at every point.
 */
#include <stdio.h>

#include "harness.h"
#include "nabla/gpt.h"
#include "nabla/io.h"

#define VOCAB 61
#define CTX 16

static const nb_gpt_config tiny = {VOCAB, CTX, 2, 2, 24, 0.0};

/* The tiny GPT with the PyTorch-written weights of test_gpt (varied enough that logits are far apart). */
static nb_module *model(nb_dtype dt) {
    nb_rng rng;
    nb_rng_seed(&rng, 5);
    nb_module *g = nb_gpt(&tiny, dt, &rng);
    char path[1024];
    snprintf(path, sizeof path, "%s/gpt_tiny_%s.safetensors", NB_TEST_DATA_DIR, dt == NB_F32 ? "f32" : "f64");
    if (g && nb_module_load(g, path) != 0) {
        nb_module_free(g);
        return NULL;
    }
    return g;
}

static double at(nb_tensor *t, int64_t i) {
    const void *d = nb_data(t);
    return nb_dtype_of(t) == NB_F32 ? ((const float *)d)[i] : ((const double *)d)[i];
}

static nb_tensor *ids(int64_t b, int64_t t, const int64_t *v) { return nb_new(NB_I64, 2, (int64_t[]){b, t}, v); }

/* ------------------------------------------------------------ the cache */

/* The cached path's logits against the whole prefix's, each row's largest difference relative to its largest
   logit (the two paths block their sums differently: a few ulp of the row's scale apart, 2e-7 in f32 and 5e-16
   in f64 here; a wrong cache is off by the logits' own size). */
static void check_cached_logits(nb_dtype dt, double tol) {
    nb_module *g = model(dt);
    CHECK(g != NULL);
    if (!g) return;
    enum { Bn = 2, Tn = 13 };
    int64_t tok[Bn * Tn];
    for (int i = 0; i < Bn * Tn; i++) tok[i] = (i * 37 + 11) % VOCAB;
    nb_scope_begin();
    nb_tensor *full = nb_forward(g, ids(Bn, Tn, tok)); /* (2, 13, 61) */
    nb_gpt_cache *c = nb_gpt_cache_new(g, Bn);
    CHECK(full && c && nb_gpt_cache_len(c) == 0);
    static const int chunks[] = {4, 1, 1, 5, 2}; /* 13 positions */
    int pos = 0;
    double worst = 0;
    for (size_t k = 0; c && k < sizeof chunks / sizeof chunks[0]; k++) {
        int n = chunks[k];
        int64_t part[Bn * 5];
        for (int b = 0; b < Bn; b++)
            for (int j = 0; j < n; j++) part[b * n + j] = tok[b * Tn + pos + j];
        nb_tensor *y = nb_gpt_forward_cached(g, c, ids(Bn, n, part));
        CHECK(y && nb_shape(y)[0] == Bn && nb_shape(y)[1] == n && nb_shape(y)[2] == VOCAB);
        for (int b = 0; y && b < Bn; b++)
            for (int j = 0; j < n; j++) { /* each row's largest difference against its largest logit */
                double diff = 0, big = 0;
                for (int v = 0; v < VOCAB; v++) {
                    double want = at(full, ((int64_t)b * Tn + pos + j) * VOCAB + v);
                    double got = at(y, ((int64_t)b * n + j) * VOCAB + v);
                    diff = fmax(diff, fabs(got - want)), big = fmax(big, fabs(want));
                }
                worst = fmax(worst, diff / big);
            }
        pos += n;
        CHECK(nb_gpt_cache_len(c) == pos);
    }
    CHECK(worst <= tol);
    if (worst > tol) printf("    cached logits differ by %.3g (relative) in %s\n", worst, dt == NB_F32 ? "f32" : "f64");
    /* reset: the same logits again from position 0 */
    nb_gpt_cache_reset(c);
    CHECK(nb_gpt_cache_len(c) == 0);
    nb_tensor *y = nb_gpt_forward_cached(g, c, ids(Bn, Tn, tok));
    for (int64_t i = 0; y && i < nb_numel(y); i++) CHECK_CLOSE(at(y, i), at(full, i), tol, tol);
    nb_gpt_cache_free(c);
    nb_scope_end();
    nb_module_free(g);
}
static void test_cache_f64(void) { check_cached_logits(NB_F64, 1e-13); }
static void test_cache_f32(void) { check_cached_logits(NB_F32, 2e-6); }

/* The cache leaves the caller's grad mode and the model's training mode as they were, records nothing, and
   outlives the scope it was made in. */
static void test_cache_modes(void) {
    nb_module *g = model(NB_F64);
    CHECK(g != NULL);
    if (!g) return;
    nb_scope_begin();
    nb_gpt_cache *c = nb_gpt_cache_new(g, 1);
    nb_scope_end();
    nb_scope_begin();
    nb_set_grad_enabled(true);
    nb_module_train(g, true);
    nb_tensor *y = nb_gpt_forward_cached(g, c, ids(1, 3, (int64_t[]){1, 2, 3}));
    CHECK(y && !nb_requires_grad(y));
    CHECK(nb_grad_enabled() && nb_module_training(g));
    y = nb_gpt_forward_cached(g, c, ids(1, 2, (int64_t[]){4, 5}));
    CHECK(y && nb_gpt_cache_len(c) == 5);
    nb_scope_end();
    nb_gpt_cache_free(c);
    nb_module_free(g);
}

static void test_cache_errors(void) {
    nb_module *g = model(NB_F32), *h = model(NB_F32);
    CHECK(g && h);
    if (!g || !h) {
        nb_module_free(g), nb_module_free(h);
        return;
    }
    nb_scope_begin();
    CHECK(nb_gpt_cache_new(g, 0) == NULL);
    CHECK_ERR("nb_gpt_cache_new: batch 0 is not in [1, 2^32]");
    nb_module *lin = nb_relu_layer();
    CHECK(nb_gpt_cache_new(lin, 1) == NULL);
    CHECK_ERR("not a GPT");
    nb_gpt_cache *c = nb_gpt_cache_new(g, 2);
    CHECK(c != NULL);
    int64_t t10[20] = {0};
    CHECK(nb_gpt_forward_cached(g, c, ids(2, 10, t10)) != NULL);
    CHECK(nb_gpt_forward_cached(g, c, ids(2, 7, t10)) == NULL);
    CHECK_ERR("nb_gpt_forward_cached: GPT: 7 new tokens after the 10 cached ones exceed ctx 16");
    CHECK(nb_gpt_cache_len(c) == 10);
    CHECK(nb_gpt_forward_cached(g, c, ids(1, 2, t10)) == NULL);
    CHECK_ERR("tokens have batch 1, the cache 2");
    CHECK(nb_gpt_forward_cached(g, c, ids(2, 1, (int64_t[]){3, 61})) == NULL);
    CHECK_ERR("token 61 at (1, 0) is outside [0, vocab 61)");
    CHECK(nb_gpt_forward_cached(h, c, ids(2, 1, t10)) == NULL);
    CHECK_ERR("the cache was made for another model");
    CHECK(nb_gpt_forward_cached(g, NULL, ids(2, 1, t10)) == NULL);
    CHECK_ERR("the cache is NULL");
    CHECK(nb_gpt_forward_cached(g, c, nb_full(NB_F32, 2, (int64_t[]){2, 1}, 0)) == NULL);
    CHECK_ERR("(B, T) NB_I64 tensor");
    CHECK(nb_gpt_cache_len(c) == 10);
    CHECK(nb_gpt_forward_cached(g, c, ids(2, 6, t10)) != NULL); /* exactly up to ctx */
    CHECK(nb_gpt_cache_len(c) == CTX);
    nb_gpt_cache_free(c);
    nb_module_free(lin);
    nb_scope_end();
    nb_module_free(g), nb_module_free(h);
}

/* ----------------------------------------------------------- generation */

static const int64_t prompt[] = {3, 14, 15, 9};

static void check_same_tokens(nb_dtype dt, double temperature, int64_t top_k) {
    nb_module *g = model(dt);
    CHECK(g != NULL);
    if (!g) return;
    nb_gen_options o = nb_gen_defaults();
    o.temperature = temperature, o.top_k = top_k, o.seed = 42;
    int64_t a[CTX], b[CTX];
    int64_t na = nb_gpt_generate(g, prompt, 4, 20, &o, a);
    o.no_cache = true;
    int64_t nb = nb_gpt_generate(g, prompt, 4, 20, &o, b);
    CHECK(na == CTX - 4 && nb == na); /* stops at ctx */
    for (int64_t i = 0; i < na && i < nb; i++) CHECK(a[i] == b[i]);
    for (int64_t i = 0; i < na; i++) CHECK(a[i] >= 0 && a[i] < VOCAB);
    nb_module_free(g);
}
static void test_same_tokens_greedy_f32(void) { check_same_tokens(NB_F32, 0, 0); }
static void test_same_tokens_greedy_f64(void) { check_same_tokens(NB_F64, 0, 0); }
static void test_same_tokens_sampled_f64(void) { check_same_tokens(NB_F64, 0.9, 0); }
static void test_same_tokens_top_k_f32(void) { check_same_tokens(NB_F32, 1.3, 5); }

/* Sliding past ctx: the same tokens with and without the cache, as many as asked. */
static void test_slide(void) {
    nb_module *g = model(NB_F64);
    CHECK(g != NULL);
    if (!g) return;
    nb_gen_options o = nb_gen_defaults();
    o.slide = true, o.seed = 9, o.top_k = 10;
    int64_t a[40], b[40], full[CTX];
    CHECK(nb_gpt_generate(g, prompt, 4, 40, &o, a) == 40);
    o.no_cache = true;
    CHECK(nb_gpt_generate(g, prompt, 4, 40, &o, b) == 40);
    for (int i = 0; i < 40; i++) CHECK(a[i] == b[i]);
    for (int i = 0; i < CTX; i++) full[i] = (7 * i) % VOCAB;
    CHECK(nb_gpt_generate(g, full, CTX, 3, &o, a) == 3); /* a full prompt slides at once */
    /* after a slide the model sees the newer half: greedy from the full prompt equals greedy from its
       last ctx / 2 tokens followed by that first token */
    o = nb_gen_defaults(), o.temperature = 0, o.slide = true;
    int64_t g1[2], g2[1], half[CTX / 2 + 1];
    CHECK(nb_gpt_generate(g, full, CTX, 2, &o, g1) == 2);
    memcpy(half, full + CTX / 2, sizeof(int64_t) * (CTX / 2));
    half[CTX / 2] = g1[0];
    CHECK(nb_gpt_generate(g, half, CTX / 2 + 1, 1, &o, g2) == 1);
    CHECK(g2[0] == g1[1]);
    nb_module_free(g);
}

/* The logits of the last position of seq[0 .. n) by nb_forward, into out (VOCAB doubles). */
static int last_logits(nb_module *g, const int64_t *seq, int64_t n, double *out) {
    nb_scope_begin();
    nb_tensor *y = nb_forward(g, ids(1, n, seq));
    for (int v = 0; y && v < VOCAB; v++) out[v] = at(y, (n - 1) * VOCAB + v);
    nb_scope_end();
    return y ? 0 : -1;
}

static void test_greedy_is_argmax(void) {
    nb_module *g = model(NB_F64);
    CHECK(g != NULL);
    if (!g) return;
    nb_gen_options o = nb_gen_defaults();
    o.temperature = 0;
    int64_t out[CTX], seq[CTX];
    int64_t n = nb_gpt_generate(g, prompt, 4, 8, &o, out);
    CHECK(n == 8);
    o.temperature = 1, o.top_k = 1; /* top-1 sampling is greedy too */
    int64_t out1[CTX];
    CHECK(nb_gpt_generate(g, prompt, 4, 8, &o, out1) == 8);
    memcpy(seq, prompt, sizeof prompt);
    for (int64_t i = 0; i < n; i++) {
        double l[VOCAB];
        CHECK(last_logits(g, seq, 4 + i, l) == 0);
        int best = 0;
        for (int v = 1; v < VOCAB; v++)
            if (l[v] > l[best]) best = v;
        CHECK(out[i] == best && out1[i] == best);
        seq[4 + i] = out[i];
    }
    nb_module_free(g);
}

/* One token from the prompt, over many seeds: every draw within the top k, and the frequencies those of
   softmax(logits / t) over the top k (2000 draws: the standard error of a frequency is <= 0.011). */
static void test_sampling_distribution(void) {
    nb_module *g = model(NB_F64);
    CHECK(g != NULL);
    if (!g) return;
    const double t = 3.0; /* flattens the distribution so that several tokens are likely */
    const int k = 6, draws = 2000;
    double l[VOCAB], p[VOCAB], f[VOCAB] = {0};
    CHECK(last_logits(g, prompt, 4, l) == 0);
    double sorted[VOCAB];
    memcpy(sorted, l, sizeof l);
    for (int i = 0; i < VOCAB; i++) /* descending, selection */
        for (int j = i + 1; j < VOCAB; j++)
            if (sorted[j] > sorted[i]) {
                double s = sorted[i];
                sorted[i] = sorted[j], sorted[j] = s;
            }
    double sum = 0;
    for (int v = 0; v < VOCAB; v++) sum += p[v] = l[v] >= sorted[k - 1] ? exp((l[v] - sorted[0]) / t) : 0;
    nb_gen_options o = nb_gen_defaults();
    o.temperature = t, o.top_k = k;
    int bad = 0;
    for (int s = 0; s < draws; s++) {
        int64_t tok;
        o.seed = (uint64_t)s;
        if (nb_gpt_generate(g, prompt, 4, 1, &o, &tok) != 1) {
            bad++;
            continue;
        }
        bad += p[tok] == 0;
        f[tok] += 1.0 / draws;
    }
    CHECK(bad == 0);
    double worst = 0;
    for (int v = 0; v < VOCAB; v++) worst = fmax(worst, fabs(f[v] - p[v] / sum));
    CHECK(worst < 0.04);
    nb_module_free(g);
}

typedef struct {
    int calls;
    int64_t seen[CTX];
} stop_at_3;

static int on_token(int64_t token, int64_t index, void *user) {
    stop_at_3 *s = user;
    s->seen[s->calls++] = token;
    return index == 2;
}

static void test_callback_and_ctx(void) {
    nb_module *g = model(NB_F32);
    CHECK(g != NULL);
    if (!g) return;
    nb_gen_options o = nb_gen_defaults();
    stop_at_3 s = {0};
    o.on_token = on_token, o.user = &s;
    int64_t out[CTX];
    CHECK(nb_gpt_generate(g, prompt, 4, 10, &o, out) == 3);
    CHECK(s.calls == 3 && s.seen[0] == out[0] && s.seen[2] == out[2]);
    /* the same seed gives the same tokens; the sequence never exceeds ctx */
    int64_t again[CTX], full[CTX];
    CHECK(nb_gpt_generate(g, prompt, 4, 3, NULL, again) == 3);
    for (int i = 0; i < 3; i++) CHECK(again[i] == out[i]);
    for (int i = 0; i < CTX; i++) full[i] = i % VOCAB;
    CHECK(nb_gpt_generate(g, full, CTX, 5, NULL, out) == 0);
    CHECK(nb_gpt_generate(g, full, CTX - 1, 5, NULL, out) == 1);
    CHECK(nb_gpt_generate(g, prompt, 4, 0, NULL, NULL) == 0);
    nb_module_free(g);
}

static void test_generate_errors(void) {
    nb_module *g = model(NB_F32);
    CHECK(g != NULL);
    if (!g) return;
    int64_t out[4] = {-7, -7, -7, -7}, big[CTX + 1] = {0};
    nb_gen_options o = nb_gen_defaults();
    CHECK(nb_gpt_generate(g, big, CTX + 1, 2, NULL, out) == -1);
    CHECK_ERR("nb_gpt_generate: the prompt has 17 tokens; need 1 to ctx 16");
    CHECK(nb_gpt_generate(g, big, 0, 2, NULL, out) == -1);
    CHECK_ERR("the prompt has 0 tokens");
    CHECK(nb_gpt_generate(g, (int64_t[]){1, 61}, 2, 2, NULL, out) == -1);
    CHECK_ERR("prompt token 61 at 1 is outside [0, vocab 61)");
    CHECK(nb_gpt_generate(g, (int64_t[]){-2}, 1, 2, NULL, out) == -1);
    CHECK_ERR("prompt token -2 at 0");
    CHECK(nb_gpt_generate(g, prompt, 4, -1, NULL, out) == -1);
    CHECK_ERR("count -1 is negative");
    o.temperature = -0.5;
    CHECK(nb_gpt_generate(g, prompt, 4, 2, &o, out) == -1);
    CHECK_ERR("temperature -0.5 and top_k 0");
    o.temperature = NAN;
    CHECK(nb_gpt_generate(g, prompt, 4, 2, &o, out) == -1);
    CHECK_ERR("temperature nan");
    o = nb_gen_defaults(), o.top_k = -3;
    CHECK(nb_gpt_generate(g, prompt, 4, 2, &o, out) == -1);
    CHECK_ERR("top_k -3");
    CHECK(nb_gpt_generate(g, NULL, 4, 2, NULL, out) == -1);
    CHECK_ERR("prompt or out is NULL");
    CHECK(nb_gpt_generate(g, prompt, 4, 2, NULL, NULL) == -1);
    CHECK_ERR("prompt or out is NULL");
    CHECK(nb_gpt_generate(NULL, prompt, 4, 2, NULL, out) == -1);
    CHECK_ERR("not a GPT");
    for (int i = 0; i < 4; i++) CHECK(out[i] == -7); /* nothing written */
    nb_module_free(g);
}

/* Generating with the at-th allocation failing: -1 with an error and nothing leaked, at every point. */
static int generate_at(void *unused) {
    (void)unused;
    nb_module *g = model(NB_F32);
    int64_t out[8];
    int64_t n = g ? nb_gpt_generate(g, prompt, 4, 3, NULL, out) : -1;
    nb_module_free(g);
    return n == 3 ? 0 : -1;
}
static void test_oom(void) { CHECK(th_fail_each(generate_at, NULL, 20000) > 50); }

int main(void) {
    RUN(test_cache_f64);
    RUN(test_cache_f32);
    RUN(test_cache_modes);
    RUN(test_cache_errors);
    RUN(test_same_tokens_greedy_f32);
    RUN(test_same_tokens_greedy_f64);
    RUN(test_same_tokens_sampled_f64);
    RUN(test_same_tokens_top_k_f32);
    RUN(test_slide);
    RUN(test_greedy_is_argmax);
    RUN(test_sampling_distribution);
    RUN(test_callback_and_ctx);
    RUN(test_generate_errors);
    if (!getenv("SKIP_OOM")) RUN(test_oom);
    return th_finish();
}

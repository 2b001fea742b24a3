/*
 * test_open_modules.c - modules written by their users (nb_module_class):
 * any number of named parameters, buffers and children, dotted paths and
 * lookups, weight tying (one tensor, one gradient from both uses, one
 * optimizer state, freed once), checkpoints with buffers and tied tensors,
 * nb_retain / nb_release, the errors with their messages, and allocation
 * failures over building and listing a tree.
 */
#include <stdio.h>
#include <unistd.h>

#include "harness.h"
#include "nabla/io.h"
#include "nabla/nn.h"

/* ---------------------------------------------------------- a user module */

/* y = x W0 ... W5 summed: six (2,2) parameters, a step counter and a running mean as buffers, and two Linear
   children "in" and "out" (2 -> 2). */
typedef struct {
    int calls;
    int *freed; /* set to 1 by free_state */
} many_state;

static nb_tensor *many_forward(nb_module *m, nb_tensor *x) {
    many_state *st = nb_module_state(m);
    st->calls++;
    nb_tensor *h = nb_forward(nb_module_child(m, "in"), x);
    char name[8];
    for (int i = 0; i < 6; i++) {
        snprintf(name, sizeof name, "w%d", i);
        h = nb_matmul(h, nb_module_param(m, name));
    }
    return nb_forward(nb_module_child(m, "out"), h);
}

static void many_free(void *p) {
    many_state *st = p;
    *st->freed = 1;
    free(st);
}

static const nb_module_class many_class = {.kind = "Many", .forward = many_forward, .free_state = many_free};

static nb_module *many_new(nb_rng *rng, int *freed) {
    many_state *st = malloc(sizeof *st);
    *st = (many_state){0, freed};
    nb_module *m = nb_module_new(&many_class, st);
    if (!m) {
        free(st);
        return NULL;
    }
    nb_scope_begin(); /* the module's holds outlive the scope */
    char name[8];
    int rc = 0;
    for (int i = 0; i < 6 && rc == 0; i++) {
        snprintf(name, sizeof name, "w%d", i);
        rc = nb_module_add_param(m, name, nb_from_f64(NB_F64, 2, (int64_t[]){2, 2}, (double[]){1, 0.1 * i, 0, 1}));
    }
    if (rc == 0) rc = nb_module_add_buffer(m, "steps", nb_scalar(NB_I64, 0));
    if (rc == 0) rc = nb_module_add_buffer(m, "running_mean", nb_full(NB_F64, 1, (int64_t[]){2}, 0.5));
    nb_scope_end();
    nb_module *in = rc == 0 ? nb_linear(2, 2, true, NB_INIT_XAVIER, NB_F64, rng) : NULL;
    if (rc == 0 && (rc = nb_module_add_child(m, "in", in)) != 0) nb_module_free(in);
    nb_module *out = rc == 0 ? nb_linear(2, 2, false, NB_INIT_XAVIER, NB_F64, rng) : NULL;
    if (rc == 0 && (rc = nb_module_add_child(m, "out", out)) != 0) nb_module_free(out);
    if (rc != 0) {
        nb_module_free(m);
        return NULL;
    }
    return m;
}

static void test_user_module(void) {
    nb_rng rng;
    nb_rng_seed(&rng, 3);
    int64_t mem0 = nb_memory_in_use();
    int freed = 0;
    nb_module *m = many_new(&rng, &freed);
    CHECK(m != NULL);
    CHECK(strcmp(nb_module_kind(m), "Many") == 0 && nb_module_class_of(m) == &many_class);
    nb_tensor *ps[16];
    const char *names[16];
    CHECK(nb_module_params(m, ps, names, 16) == 9);
    const char *want[9] = {"w0", "w1", "w2", "w3", "w4", "w5", "in.weight", "in.bias", "out.weight"};
    for (int i = 0; i < 9; i++) CHECK(strcmp(names[i], want[i]) == 0);
    for (int i = 0; i < 9; i++) CHECK(nb_requires_grad(ps[i]) && nb_is_leaf(ps[i]));
    CHECK(nb_module_num_params(m) == 6 * 4 + 4 + 2 + 4);
    nb_tensor *bs[4];
    CHECK(nb_module_buffers(m, bs, names, 4) == 2);
    CHECK(strcmp(names[0], "steps") == 0 && strcmp(names[1], "running_mean") == 0);
    CHECK(nb_dtype_of(bs[0]) == NB_I64 && !nb_requires_grad(bs[1]));
    CHECK(nb_module_param(m, "w3") == ps[3] && nb_module_param(m, "in.bias") == ps[7]);
    CHECK(nb_module_buffer(m, "running_mean") == bs[1]);
    nb_module *kids[4];
    CHECK(nb_module_children(m, kids, names, 4) == 2);
    CHECK(strcmp(names[1], "out") == 0 && kids[1] == nb_module_child(m, "out"));
    CHECK(strcmp(nb_module_kind(kids[0]), "Linear") == 0);

    /* forward and backward through the user's forward; every parameter gets a gradient */
    nb_scope_begin();
    nb_tensor *x = th_rand(NB_F64, 2, (int64_t[]){3, 2}, -1, 1);
    nb_tensor *y = nb_forward(m, x);
    CHECK(y && nb_shape(y)[0] == 3 && nb_shape(y)[1] == 2);
    CHECK(((many_state *)nb_module_state(m))->calls == 1);
    CHECK(nb_backward(nb_sum(nb_mul(y, y)), NULL, 0) == 0);
    for (int i = 0; i < 9; i++) CHECK(nb_grad(ps[i]) != NULL);
    nb_scope_end();
    nb_module_zero_grad(m);

    /* train flag reaches the children */
    nb_module_train(m, false);
    CHECK(!nb_module_training(kids[0]) && !nb_module_training(m));
    nb_module_free(m);
    CHECK(freed == 1);
    CHECK(nb_memory_in_use() == mem0);
}

/* Deep paths: blocks.0.attn.proj.weight */
static nb_tensor *pass_forward(nb_module *m, nb_tensor *x) {
    (void)m;
    return x;
}
static const nb_module_class box_class = {.kind = "Box", .forward = pass_forward};

static void test_dotted_paths(void) {
    nb_rng rng;
    nb_rng_seed(&rng, 4);
    nb_module *root = nb_module_new(&box_class, NULL);
    nb_module *attn = nb_module_new(&box_class, NULL);
    CHECK(nb_module_add_child(attn, "proj", nb_linear(4, 4, true, NB_INIT_XAVIER, NB_F32, &rng)) == 0);
    nb_module *blocks =
        nb_sequential(2, (nb_module *[]){nb_module_new(&box_class, NULL), nb_layer_norm_layer(4, 1e-5, NB_F32)});
    CHECK(nb_module_add_child(nb_module_child(blocks, "0"), "attn", attn) == 0);
    CHECK(nb_module_add_child(root, "blocks", blocks) == 0);
    const char *names[8];
    nb_tensor *ps[8];
    CHECK(nb_module_params(root, ps, names, 8) == 4);
    CHECK(strcmp(names[0], "blocks.0.attn.proj.weight") == 0);
    CHECK(strcmp(names[1], "blocks.0.attn.proj.bias") == 0);
    CHECK(strcmp(names[2], "blocks.1.weight") == 0 && strcmp(names[3], "blocks.1.bias") == 0);
    CHECK(nb_module_param(root, "blocks.0.attn.proj.weight") == ps[0]);
    CHECK(nb_module_child(root, "blocks.0.attn") == attn);
    /* a parameter added after a listing appears in the next one; the old names stay valid */
    nb_tensor *g = nb_full(NB_F32, 1, (int64_t[]){4}, 2.0);
    CHECK(nb_module_add_param(attn, "gain", g) == 0);
    nb_free(g); /* the module's hold remains */
    const char *names2[8];
    CHECK(nb_module_params(root, NULL, names2, 8) == 5);
    /* a module's own parameters come before its children's */
    CHECK(strcmp(names2[0], "blocks.0.attn.gain") == 0 && strcmp(names2[1], "blocks.0.attn.proj.weight") == 0);
    CHECK(strcmp(names[0], "blocks.0.attn.proj.weight") == 0);
    CHECK(nb_get(nb_module_param(root, "blocks.0.attn.gain"), (int64_t[]){3}) == 2.0);
    /* lookups that miss say where */
    nb_clear_error();
    CHECK(nb_module_param(root, "blocks.0.attn.proj.scale") == NULL);
    CHECK_ERR("nb_module_param: no 'blocks.0.attn.proj.scale': Linear at 'blocks.0.attn.proj' has no parameter 'scale'");
    nb_clear_error();
    CHECK(nb_module_param(root, "blocks.7.weight") == NULL);
    CHECK_ERR("Sequential at 'blocks' has no child '7'");
    nb_clear_error();
    CHECK(nb_module_buffer(root, "blocks.1.weight") == NULL);
    CHECK_ERR("has no buffer 'weight'");
    nb_clear_error();
    nb_module_free(root);
}

/* ------------------------------------------------------------ weight tying */

/* ids (B) -> Embedding (V, d) -> tanh -> head: a Linear d -> V whose weight is the embedding's table. */
static nb_tensor *lm_forward(nb_module *m, nb_tensor *ids) {
    nb_tensor *h = nb_tanh(nb_forward(nb_module_child(m, "emb"), ids));
    return nb_forward(nb_module_child(m, "head"), h);
}
static const nb_module_class lm_class = {.kind = "TinyLM", .forward = lm_forward};

enum { V = 5, D = 3, B = 4 };

static nb_module *tiny_lm(nb_rng *rng) {
    nb_module *lm = nb_module_new(&lm_class, NULL);
    nb_module *emb = nb_embedding(V, D, NB_F64, rng), *head = nb_linear(D, V, false, NB_INIT_XAVIER, NB_F64, rng);
    CHECK(nb_module_add_child(lm, "emb", emb) == 0 && nb_module_add_child(lm, "head", head) == 0);
    CHECK(nb_module_set_param(head, "weight", nb_module_param(emb, "weight")) == 0);
    return lm;
}

static void test_tying(void) {
    nb_rng rng;
    nb_rng_seed(&rng, 5);
    int64_t mem0 = nb_memory_in_use();
    nb_module *lm = tiny_lm(&rng);
    nb_tensor *w = nb_module_param(lm, "emb.weight");
    CHECK(nb_module_param(lm, "head.weight") == w);
    nb_tensor *ps[4];
    const char *names[4];
    CHECK(nb_module_params(lm, ps, names, 4) == 1 && ps[0] == w && strcmp(names[0], "emb.weight") == 0);
    CHECK(nb_module_param_paths(lm, ps, names, 4) == 2 && ps[1] == w && strcmp(names[1], "head.weight") == 0);
    CHECK(nb_module_num_params(lm) == V * D);

    /* the gradient of the tied table is the sum of its two uses', computed here from two untied copies */
    nb_tensor *ids = nb_from_f64(NB_I64, 1, (int64_t[]){B}, (double[]){0, 3, 3, 4});
    nb_tensor *tgt = nb_from_f64(NB_I64, 1, (int64_t[]){B}, (double[]){1, 2, 0, 4});
    nb_scope_begin();
    CHECK(nb_backward(nb_cross_entropy(nb_forward(lm, ids), tgt), NULL, 0) == 0);
    double g[V * D], w1g[V * D], w2g[V * D];
    nb_read_f64(nb_grad(w), g, V * D);
    double wv[V * D];
    nb_read_f64(w, wv, V * D);
    nb_tensor *w1 = nb_from_f64(NB_F64, 2, (int64_t[]){V, D}, wv), *w2 = nb_from_f64(NB_F64, 2, (int64_t[]){V, D}, wv);
    nb_set_requires_grad(w1, true), nb_set_requires_grad(w2, true);
    nb_tensor *h = nb_tanh(nb_index_select(w1, 0, ids));
    CHECK(nb_backward(nb_cross_entropy(nb_matmul(h, nb_transpose(w2, 0, 1)), tgt), NULL, 0) == 0);
    nb_read_f64(nb_grad(w1), w1g, V * D);
    nb_read_f64(nb_grad(w2), w2g, V * D);
    bool both = false;
    for (int i = 0; i < V * D; i++) {
        CHECK_CLOSE(g[i], w1g[i] + w2g[i], 1e-14, 1e-12);
        both = both || (w1g[i] != 0 && w2g[i] != 0);
    }
    CHECK(both);
    nb_scope_end();
    nb_module_zero_grad(lm);

    /* one optimizer state; a few steps lower the loss */
    int n = nb_module_params(lm, ps, NULL, 4);
    nb_optim *opt = nb_adam(n, ps, 0.05, 0.9, 0.999, 1e-8, 0);
    CHECK(opt != NULL);
    double first = 0, last = 0;
    for (int step = 0; step < 30; step++) {
        nb_scope_begin();
        nb_optim_zero_grad(opt);
        nb_tensor *loss = nb_cross_entropy(nb_forward(lm, ids), tgt);
        CHECK(nb_backward(loss, NULL, 0) == 0);
        if (step == 0) first = nb_item(loss);
        last = nb_item(loss);
        CHECK(nb_optim_step(opt) == 0);
        nb_scope_end();
    }
    CHECK(last < 0.5 * first);
    nb_tensor *twice[2] = {ps[0], ps[0]};
    CHECK(nb_sgd(2, twice, 0.1, 0, 0, false) == NULL);
    CHECK_ERR("nb_sgd: parameters 0 and 1 are the same tensor; list each once");
    nb_clear_error();
    CHECK(nb_module_param(lm, "head.weight") == nb_module_param(lm, "emb.weight"));
    nb_optim_free(opt);
    nb_free(ids), nb_free(tgt);
    nb_module_free(lm); /* the table is freed once (ASan) */
    CHECK(nb_memory_in_use() == mem0);

    /* two separate trees sharing a tensor: either may be freed first */
    nb_module *a = nb_embedding(V, D, NB_F32, &rng);
    nb_module *b = nb_linear(D, V, false, NB_INIT_XAVIER, NB_F32, &rng);
    CHECK(nb_module_set_param(b, "weight", nb_module_param(a, "weight")) == 0);
    nb_module_free(a);
    nb_scope_begin();
    nb_tensor *y = nb_forward(b, th_rand(NB_F32, 2, (int64_t[]){2, D}, -1, 1));
    CHECK(y && nb_shape(y)[1] == V);
    nb_scope_end();
    nb_module_free(b);
    CHECK(nb_memory_in_use() == mem0);
}

/* -------------------------------------------------------------- checkpoints */

static const char *tmp_path(const char *name) {
    static char buf[256];
    const char *dir = getenv("TMPDIR");
    snprintf(buf, sizeof buf, "%s/nabla_open_modules_%d_%s", dir && *dir ? dir : "/tmp", (int)getpid(), name);
    return buf;
}

static void test_checkpoints(void) {
    nb_rng rng;
    nb_rng_seed(&rng, 6);
    int freed = 0, freed2 = 0;
    nb_module *m = many_new(&rng, &freed), *m2 = many_new(&rng, &freed2);
    char path[256];
    snprintf(path, sizeof path, "%s", tmp_path("many.safetensors"));
    nb_tensor *steps = nb_module_buffer(m, "steps"), *mean = nb_module_buffer(m, "running_mean");
    *(int64_t *)nb_data(steps) = 41;
    ((double *)nb_data(mean))[1] = -7.25;
    CHECK(nb_module_save(m, path) == 0);
    /* the file holds every parameter and buffer by its path */
    nb_tensor *probe = nb_scalar(NB_I64, 0);
    CHECK(nb_load_safetensors(path, 1, &probe, (const char *[]){"steps"}) == 0 && nb_item(probe) == 41);
    nb_free(probe);
    CHECK(nb_module_load(m2, path) == 0);
    CHECK(*(int64_t *)nb_data(nb_module_buffer(m2, "steps")) == 41);
    CHECK(((double *)nb_data(nb_module_buffer(m2, "running_mean")))[1] == -7.25);
    double a[4], b[4];
    nb_read_f64(nb_module_param(m, "in.weight"), a, 4);
    nb_read_f64(nb_module_param(m2, "in.weight"), b, 4);
    CHECK(memcmp(a, b, sizeof a) == 0);
    nb_module_free(m);
    nb_module_free(m2);

    /* a tied parameter is saved once, under its first path; a file with either name or both loads */
    nb_module *lm = tiny_lm(&rng), *lm2 = tiny_lm(&rng);
    CHECK(nb_module_save(lm, path) == 0);
    nb_tensor *t = nb_full(NB_F64, 2, (int64_t[]){V, D}, 0);
    nb_clear_error();
    CHECK(nb_load_safetensors(path, 1, &t, (const char *[]){"head.weight"}) != 0);
    CHECK_ERR("no tensor named 'head.weight'");
    nb_clear_error();
    CHECK(nb_module_load(lm2, path) == 0);
    double w1[V * D], w2[V * D];
    nb_read_f64(nb_module_param(lm, "emb.weight"), w1, V * D);
    nb_read_f64(nb_module_param(lm2, "head.weight"), w2, V * D);
    CHECK(memcmp(w1, w2, sizeof w1) == 0);
    for (int i = 0; i < V * D; i++) ((double *)nb_data(t))[i] = i;
    CHECK(nb_save_safetensors(path, 1, &t, (const char *[]){"head.weight"}) == 0); /* the other name only */
    CHECK(nb_module_load(lm2, path) == 0);
    CHECK(nb_get(nb_module_param(lm2, "emb.weight"), (int64_t[]){2, 1}) == 7);
    CHECK(nb_save_safetensors(path, 2, (nb_tensor *[]){t, t}, (const char *[]){"emb.weight", "head.weight"}) == 0);
    CHECK(nb_module_load(lm, path) == 0);
    CHECK(nb_get(nb_module_param(lm, "head.weight"), (int64_t[]){4, 2}) == 14);
    CHECK(nb_save_safetensors(path, 1, &t, (const char *[]){"other"}) == 0);
    CHECK(nb_module_load(lm, path) != 0);
    CHECK_ERR("no tensor named 'emb.weight' (nor under the other names of that tied tensor)");
    nb_clear_error();
    nb_free(t);
    nb_module_free(lm);
    nb_module_free(lm2);
    remove(path);
}

/* ------------------------------------------------------------ nb_retain */

static void test_retain(void) {
    int64_t mem0 = nb_memory_in_use();
    nb_scope_begin();
    nb_tensor *t = nb_full(NB_F32, 1, (int64_t[]){100}, 1.5);
    CHECK(nb_retain(t) == t);
    nb_scope_end(); /* the maker's handle goes, the hold keeps t */
    nb_scope_begin();
    CHECK(nb_numel(t) == 100 && nb_item(nb_sum(t)) == 150);
    nb_scope_end();
    nb_clear_error();
    nb_free(t); /* the maker's handle was already released */
    CHECK_ERR("nb_free: tensor was already freed");
    nb_clear_error();
    nb_release(t);
    CHECK(nb_memory_in_use() == mem0);
    /* released while the maker's scope is still open: the scope frees it */
    nb_scope_begin();
    t = nb_full(NB_F32, 1, (int64_t[]){100}, 1.5);
    CHECK(nb_retain(t) == t);
    nb_release(t);
    CHECK(nb_numel(t) == 100);
    nb_release(t);
    CHECK_ERR("nb_release: tensor is not held");
    nb_clear_error();
    nb_scope_end();
    CHECK(nb_memory_in_use() == mem0);
    CHECK(nb_retain(NULL) == NULL);
    CHECK_ERR("nb_retain: argument 1 is NULL");
    nb_clear_error();
}

/* ------------------------------------------------------------------ errors */

static void test_errors(void) {
    nb_rng rng;
    nb_rng_seed(&rng, 7);
    int64_t mem0 = nb_memory_in_use();
    nb_clear_error();
    CHECK(nb_module_new(NULL, NULL) == NULL);
    CHECK_ERR("nb_module_new: class is NULL");
    nb_clear_error();
    static const nb_module_class no_forward = {.kind = "X"};
    CHECK(nb_module_new(&no_forward, NULL) == NULL);
    CHECK_ERR("nb_module_new: the class has no forward function");
    nb_clear_error();
    static const nb_module_class no_kind = {.forward = pass_forward};
    CHECK(nb_module_new(&no_kind, NULL) == NULL);
    CHECK_ERR("the class has no kind");
    nb_clear_error();

    nb_module *m = nb_module_new(&box_class, NULL);
    nb_tensor *t = nb_full(NB_F64, 1, (int64_t[]){3}, 1);
    CHECK(nb_module_add_param(NULL, "w", t) != 0);
    CHECK_ERR("nb_module_add_param: module is NULL");
    nb_clear_error();
    CHECK(nb_module_add_param(m, "", t) != 0);
    CHECK_ERR("nb_module_add_param: Box: a name must not be NULL or empty");
    nb_clear_error();
    CHECK(nb_module_add_param(m, NULL, t) != 0);
    CHECK_ERR("a name must not be NULL or empty");
    nb_clear_error();
    CHECK(nb_module_add_param(m, "a.b", t) != 0);
    CHECK_ERR("nb_module_add_param: Box: name 'a.b' has a '.'");
    nb_clear_error();
    CHECK(nb_module_add_param(m, "a\"b", t) != 0);
    CHECK_ERR("name has a character not allowed (byte 0x22 at offset 1)");
    nb_clear_error();
    CHECK(nb_module_add_param(m, "w", NULL) != 0);
    CHECK_ERR("nb_module_add_param: Box: tensor 'w' is NULL");
    nb_clear_error();
    CHECK(!nb_requires_grad(t)); /* untouched by the failures */
    CHECK(nb_module_add_param(m, "w", t) == 0);
    CHECK(nb_requires_grad(t));
    CHECK(nb_module_add_param(m, "w", t) != 0);
    CHECK_ERR("nb_module_add_param: Box already has a parameter named 'w'");
    nb_clear_error();
    nb_tensor *ids = nb_scalar(NB_I64, 1);
    CHECK(nb_module_add_param(m, "i", ids) != 0);
    CHECK_ERR("parameter 'i' has dtype i64");
    nb_clear_error();
    CHECK(nb_module_add_buffer(m, "w", ids) != 0);
    CHECK_ERR("nb_module_add_buffer: Box already has a parameter named 'w'");
    nb_clear_error();
    CHECK(nb_module_add_buffer(m, "b", t) != 0);
    CHECK_ERR("buffer 'b' requires grad");
    nb_clear_error();
    nb_scope_begin();
    nb_tensor *r = nb_mul(t, t);
    CHECK(nb_module_add_param(m, "r", r) != 0);
    CHECK_ERR("tensor 'r' must be a contiguous leaf");
    nb_clear_error();
    CHECK(nb_module_add_buffer(m, "tt", nb_transpose(nb_full(NB_F64, 2, (int64_t[]){2, 3}, 0), 0, 1)) != 0);
    CHECK_ERR("tensor 'tt' must be a contiguous leaf");
    nb_clear_error();
    nb_scope_end();
    CHECK(nb_module_add_buffer(m, "ids", ids) == 0);
    nb_module *relu = nb_relu_layer();
    CHECK(nb_module_add_child(m, "ids", relu) != 0);
    CHECK_ERR("nb_module_add_child: Box already has a buffer named 'ids'");
    nb_clear_error();
    nb_module_free(relu); /* still the caller's */
    nb_free(ids);

    /* set_param: shape and name checked */
    nb_tensor *u = nb_full(NB_F64, 1, (int64_t[]){4}, 1);
    CHECK(nb_module_set_param(m, "w", u) != 0);
    CHECK_ERR("nb_module_set_param: Box: parameter 'w' is f64 (3,); the new tensor must be a contiguous leaf of that "
              "dtype and shape, not f64 (4,)");
    nb_clear_error();
    CHECK(nb_module_set_param(m, "nope", u) != 0);
    CHECK_ERR("nb_module_set_param: Box has no parameter named 'nope'");
    nb_clear_error();
    nb_free(u);

    /* children: one parent, no cycles, freed by the root only */
    nb_module *c = nb_module_new(&box_class, NULL);
    CHECK(nb_module_add_child(m, "c", c) == 0);
    CHECK(nb_module_add_child(m, "d", c) != 0);
    CHECK_ERR("nb_module_add_child: Box: child 'd' (Box) already has a parent (Box)");
    nb_clear_error();
    CHECK(nb_module_add_child(c, "up", m) != 0);
    CHECK_ERR("child 'up' is the module itself or one of its ancestors");
    nb_clear_error();
    CHECK(nb_module_add_child(m, "self", m) != 0);
    CHECK_ERR("a cycle");
    nb_clear_error();
    CHECK(nb_module_add_child(m, "n", NULL) != 0);
    CHECK_ERR("nb_module_add_child: Box: child 'n' is NULL");
    nb_clear_error();
    nb_module_free(c);
    CHECK_ERR("nb_module_free: Box is the child 'c' of Box, which frees it; free the root");
    nb_clear_error();
    CHECK(nb_forward(m, NULL) == NULL);
    CHECK_ERR("nb_forward: Box: input is NULL");
    nb_clear_error();

    /* a tensor both a parameter and a buffer in one tree is refused when listed */
    nb_tensor *shared = nb_full(NB_F64, 1, (int64_t[]){2}, 0);
    nb_module *p1 = nb_module_new(&box_class, NULL);
    CHECK(nb_module_add_buffer(c, "s", shared) == 0);
    CHECK(nb_module_add_param(p1, "s", shared) == 0);
    CHECK(nb_module_add_child(m, "p1", p1) == 0);
    CHECK(nb_module_params(m, NULL, NULL, 0) < 0);
    CHECK_ERR("one tensor is both the parameter 'p1.s' and the buffer 'c.s'");
    nb_clear_error();
    nb_free(shared);
    nb_free(t);
    nb_module_free(m);
    CHECK(nb_last_error() == NULL);
    CHECK(nb_memory_in_use() == mem0);
}

/* ------------------------------------------------------ allocation failures */

/* Build a tree (a user module with many parameters and buffers, a Sequential of built-in layers, a tied
   parameter), list it with names and save it. Returns 0, or nonzero after a failure (everything freed). */
static int build_and_list(const char *path) {
    nb_rng rng;
    nb_rng_seed(&rng, 8);
    int freed = 0;
    nb_module *root = nb_module_new(&box_class, NULL);
    if (!root) return -1;
    nb_module *m = many_new(&rng, &freed);
    int rc = m ? 0 : -1;
    if (rc == 0 && (rc = nb_module_add_child(root, "many", m)) != 0) nb_module_free(m);
    nb_module *seq = rc == 0 ? nb_sequential(3, (nb_module *[]){nb_linear(2, 3, true, NB_INIT_KAIMING, NB_F64, &rng),
                                                                nb_relu_layer(), nb_layer_norm_layer(3, 1e-5, NB_F64)})
                             : NULL;
    if (rc == 0 && !seq) rc = -1;
    if (rc == 0 && (rc = nb_module_add_child(root, "seq", seq)) != 0) nb_module_free(seq);
    if (rc == 0) rc = nb_module_set_param(nb_module_child(root, "seq.2"), "weight", nb_module_param(root, "seq.0.bias"));
    nb_tensor *ps[32];
    const char *names[32];
    if (rc == 0 && nb_module_params(root, ps, names, 32) != 12) rc = -1;
    if (rc == 0 && nb_module_buffers(root, ps, names, 32) != 2) rc = -1;
    if (rc == 0) rc = nb_module_save(root, path);
    nb_module_free(root);
    return rc;
}

static int build_and_list_at(void *path) { return build_and_list(path); }

static void test_oom(void) {
    char path[256];
    snprintf(path, sizeof path, "%s", tmp_path("oom.safetensors"));
    CHECK(th_fail_each(build_and_list_at, path, 5000) > 20);
    remove(path);
}

int main(void) {
    th_seed(11);
    RUN(test_user_module);
    RUN(test_dotted_paths);
    RUN(test_tying);
    RUN(test_checkpoints);
    RUN(test_retain);
    RUN(test_errors);
    if (!getenv("SKIP_OOM")) RUN(test_oom);
    return th_finish();
}

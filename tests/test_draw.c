/*
 * test_draw.c - drawing the graph of the seeds' example L = (2x + xy)^2: the
 * drawing has the tensors of its breakdown table (x, y, I1 = 2x, I2 = xy,
 * I3 = I1 + I2, L = I3^2) and its four ops with the right edges.
 */
#include "harness.h"
#include "nabla/nn.h"

static int count(const char *s, const char *sub) {
    int n = 0;
    for (const char *p = s; (p = strstr(p, sub)); p++) n++;
    return n;
}

static char *render(nb_tensor *t, bool mermaid) {
    static char buf[8192];
    FILE *f = tmpfile();
    if (!f) return NULL;
    int rc = mermaid ? nb_graph_mermaid(t, f) : nb_graph_dot(t, f);
    rewind(f);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = 0;
    fclose(f);
    return rc == 0 ? buf : NULL;
}

static void test_seed_reuse_graph(void) {
    nb_scope_begin();
    nb_tensor *x = nb_scalar(NB_F64, 3), *y = nb_scalar(NB_F64, -4);
    nb_set_requires_grad(x, true);
    nb_set_requires_grad(y, true);
    nb_set_name(x, "x");
    nb_set_name(y, "y");
    nb_tensor *I1 = nb_scale(x, 2), *I2 = nb_mul(x, y), *I3 = nb_add(I1, I2), *L = nb_pow(I3, 2);
    nb_set_name(I1, "I1");
    nb_set_name(I2, "I2");
    nb_set_name(I3, "I3");
    nb_set_name(L, "L");
    char *dot = render(L, false);
    CHECK(dot != NULL);
    if (dot) {
        CHECK(strstr(dot, "digraph nabla {") == dot);
        CHECK(count(dot, "shape=ellipse") == 6); /* x y I1 I2 I3 L */
        CHECK(count(dot, "shape=box") == 4);     /* scale mul add pow */
        CHECK(count(dot, "peripheries=2") == 2); /* the two leaves */
        CHECK(strstr(dot, "label=\"x ()\"") && strstr(dot, "label=\"L ()\""));
        CHECK(strstr(dot, "label=\"scale\"") && strstr(dot, "label=\"mul\"") && strstr(dot, "label=\"add\"") &&
              strstr(dot, "label=\"pow\""));
        CHECK(count(dot, " -> ") == 1 + 2 + 2 + 1 + 4); /* op inputs + one result edge per op */
    }
    char *mm = render(L, true);
    CHECK(mm != NULL);
    if (mm) {
        CHECK(strstr(mm, "flowchart LR") == mm);
        CHECK(count(mm, "((\"") == 6 && count(mm, " leaf\"") == 2);
        CHECK(count(mm, " --> ") == 10);
        /* x feeds both scale and mul: reuse shows as two edges out of x */
        CHECK(strstr(mm, "t0((\"x () leaf\"))") != NULL);
        CHECK(count(mm, "t0 --> ") == 2);
    }
    CHECK(nb_graph_dot(NULL, stdout) != 0);
    CHECK_ERR("nb_graph_dot: argument 1 is NULL");
    CHECK(nb_graph_mermaid(L, NULL) != 0);
    CHECK_ERR("nb_graph_mermaid: file is NULL");
    nb_scope_end();
}

/* A module's parameters drawn under their dotted paths once nb_module_name_params labels them. */
static void test_module_names(void) {
    nb_scope_begin();
    nb_rng rng;
    nb_rng_seed(&rng, 1);
    nb_module *net = nb_sequential(3, (nb_module *[]){nb_linear(4, 3, true, NB_INIT_XAVIER, NB_F64, &rng), nb_relu_layer(),
                                                      nb_linear(3, 2, true, NB_INIT_XAVIER, NB_F64, &rng)});
    CHECK(net != NULL);
    nb_tensor *x = nb_full(NB_F64, 2, (int64_t[]){5, 4}, 0.5);
    nb_tensor *out = nb_sum(nb_forward(net, x));
    char *dot = render(out, false);
    CHECK(dot && !strstr(dot, "0.weight")); /* unnamed: t<i> labels */
    CHECK(nb_module_name_params(net) == 4);
    dot = render(out, false);
    CHECK(dot && strstr(dot, "0.weight") && strstr(dot, "0.bias") && strstr(dot, "2.weight") && strstr(dot, "2.bias"));
    CHECK(dot && strstr(dot, "\"dense+relu\"") && strstr(dot, "\"dense\"")); /* the fused activation is shown */
    char *mmd = render(out, true);
    CHECK(mmd && strstr(mmd, "2.weight"));
    nb_tensor *dl = nb_sum(nb_dropout(x, 0.5, true, &rng)); /* x needs no grad: make one that does */
    CHECK(dl != NULL);
    nb_set_requires_grad(x, true);
    dl = nb_sum(nb_dropout(x, 0.5, true, &rng));
    dot = render(dl, false);
    CHECK(dot && strstr(dot, "dropout mask"));
    CHECK(nb_module_name_params(NULL) == -1);
    CHECK_ERR("nb_module_name_params: module is NULL");
    nb_module_free(net);
    nb_scope_end();
}

/* Names are escaped for each language: quotes, angle brackets and backslashes. */
static void test_draw_names(void) {
    nb_scope_begin();
    nb_tensor *w = nb_full(NB_F64, 2, (int64_t[]){2, 3}, 1.0), *x = nb_full(NB_F64, 2, (int64_t[]){3, 1}, 2.0);
    nb_set_requires_grad(w, true);
    nb_set_name(w, "layers.0.weight");
    nb_set_name(x, "say \"hi\" <b> \\");
    nb_tensor *y = nb_sum(nb_matmul(w, x));
    char *dot = render(y, false);
    CHECK(dot && strstr(dot, "label=\"layers.0.weight (2,3)\""));
    CHECK(dot && strstr(dot, "label=\"say \\\"hi\\\" <b> \\\\ (3,1)\""));
    char *mm = render(y, true);
    CHECK(mm && strstr(mm, "((\"layers.0.weight (2,3) leaf\"))"));
    CHECK(mm && strstr(mm, "((\"say #34;hi#34; #60;b#62; \\ (3,1)\"))"));
    nb_scope_end();
}

int main(void) {
    RUN(test_seed_reuse_graph);
    RUN(test_draw_names);
    RUN(test_module_names);
    return th_finish();
}

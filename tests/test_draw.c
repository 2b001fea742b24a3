/*
 * test_draw.c - drawing the graph of the seeds' example L = (2x + xy)^2: the
 * drawing has the tensors of its breakdown table (x, y, I1 = 2x, I2 = xy,
 * I3 = I1 + I2, L = I3^2) and its four ops with the right edges.
 */
#include "harness.h"

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

int main(void) {
    RUN(test_seed_reuse_graph);
    return th_finish();
}

/*
 * test_backward_oom.c - nb_backward is all or nothing: an allocation failure
 * at any point of a backward pass returns an error with a message, leaves
 * every leaf's .grad exactly as it was (the same tensor, the same bits, or
 * still none), releases no graph and leaks nothing, so the same call simply
 * succeeds when retried and gives the gradients of a run that never failed.
 * The same holds with a gradient-ready hook set, which makes the leaves' new
 * gradients during the pass (the hook sees the values later installed).
 */
#include "harness.h"

#define NLEAF 5

typedef struct {
    nb_tensor *leaf[NLEAF];
    nb_tensor *loss;
} problem;

/* Five leaves reaching the loss along different paths: x through a product and a square; w transposed (its
   gradient arrives as a view, so it is copied); b broadcast; s an f32 scalar promoted to f64; u through a
   reshape. x and b start with gradients of their own (summed in place, or, under NB_CREATE_GRAPH, by an op),
   the others with none. */
static void build(problem *p, unsigned flags) {
    double xv[12], wv[8];
    for (int i = 0; i < 12; i++) xv[i] = 0.1 * i - 0.5;
    for (int i = 0; i < 8; i++) wv[i] = 0.3 - 0.07 * i;
    nb_tensor *x = nb_from_f64(NB_F64, 2, (int64_t[]){3, 4}, xv);
    nb_tensor *w = nb_from_f64(NB_F64, 2, (int64_t[]){2, 4}, wv);
    nb_tensor *b = nb_from_f64(NB_F64, 1, (int64_t[]){2}, (double[]){0.25, -0.5});
    nb_tensor *s = nb_scalar(NB_F32, 1.5);
    nb_tensor *u = nb_from_f64(NB_F64, 1, (int64_t[]){6}, (double[]){1, -2, 3, -4, 5, -6});
    nb_tensor *leaves[NLEAF] = {x, w, b, s, u};
    for (int i = 0; i < NLEAF; i++) {
        nb_set_requires_grad(leaves[i], true);
        p->leaf[i] = leaves[i];
    }
    /* gradients already there: d/dx sum(3x), d/db sum(b^2) */
    CHECK(nb_backward(nb_add(nb_sum(nb_scale(x, 3)), nb_sum(nb_mul(b, b))), NULL, flags & NB_CREATE_GRAPH) == 0);
    nb_tensor *h = nb_tanh(nb_add(nb_matmul(x, nb_transpose(w, 0, 1)), b)); /* (3,2) */
    nb_tensor *y = nb_mul(h, nb_reshape(u, 2, (int64_t[]){3, 2}));
    p->loss = nb_add(nb_mul(nb_sum(y), s), nb_sum(nb_mul(x, x)));
}

typedef struct {
    nb_tensor *grad[NLEAF];
    double val[NLEAF][12];
    int64_t n[NLEAF];
} snapshot;

static void snap(const problem *p, snapshot *sn) {
    memset(sn, 0, sizeof *sn);
    for (int i = 0; i < NLEAF; i++) {
        sn->grad[i] = nb_grad(p->leaf[i]);
        sn->n[i] = sn->grad[i] ? nb_read_f64(sn->grad[i], sn->val[i], 12) : -1;
    }
}

/* The same tensors (when same_tensors) holding the same bits. */
static int same(const snapshot *a, const snapshot *b, bool same_tensors) {
    for (int i = 0; i < NLEAF; i++) {
        if (same_tensors && a->grad[i] != b->grad[i]) return 0;
        if (!a->grad[i] != !b->grad[i] || a->n[i] != b->n[i]) return 0;
        if (memcmp(a->val[i], b->val[i], sizeof a->val[i]) != 0) return 0;
    }
    return 1;
}

static void clear(problem *p) {
    for (int i = 0; i < NLEAF; i++) nb_clear_grad(p->leaf[i]); /* under NB_CREATE_GRAPH they refer to the leaves */
}

/* The gradient-ready hook: what it saw of each leaf in the last pass. */
static const problem *hook_problem;
static double hook_val[NLEAF][12];
static int hook_calls[NLEAF];

static void record_hook(nb_tensor *leaf, nb_tensor *grad, void *user) {
    (void)user;
    for (int i = 0; i < NLEAF; i++)
        if (hook_problem && hook_problem->leaf[i] == leaf) {
            hook_calls[i]++;
            nb_read_f64(grad, hook_val[i], 12);
        }
}

static void run(unsigned flags) {
    nb_set_cache_limit(0); /* every allocation reaches the hook */
    memset(hook_calls, 0, sizeof hook_calls);
    snapshot clean, before, after;
    nb_scope_begin();
    problem p;
    build(&p, flags);
    hook_problem = &p;
    memset(hook_calls, 0, sizeof hook_calls);
    th_inject(0);
    CHECK(nb_backward(p.loss, NULL, flags) == 0);
    th_stop_injecting();
    long total = th_alloc_count;
    snap(&p, &clean);
    for (int i = 0; i < NLEAF; i++) CHECK(clean.grad[i] != NULL);
    if (nb_grad_ready_hook(NULL))
        for (int i = 0; i < NLEAF; i++) {
            CHECK(hook_calls[i] == 1); /* once per leaf, with the value installed */
            CHECK(memcmp(hook_val[i], clean.val[i], sizeof(double) * (size_t)clean.n[i]) == 0);
        }
    clear(&p);
    nb_scope_end();

    /* Fail each allocation of the pass in turn (one, a scope's bookkeeping, may fail without failing it). */
    int failures = 0;
    for (long fail_at = 1; fail_at <= total; fail_at++) {
        nb_scope_begin();
        build(&p, flags);
        snap(&p, &before);
        int64_t in_use = nb_memory_in_use();
        nb_clear_error();
        th_inject(fail_at);
        int rc = nb_backward(p.loss, NULL, flags);
        th_stop_injecting();
        if (rc == 0) {
            snap(&p, &after);
            CHECK(same(&after, &clean, false));
        } else {
            failures++;
            CHECK(nb_last_error() != NULL);
            snap(&p, &after);
            if (!same(&after, &before, true)) {
                fprintf(stderr, "  allocation %ld failed (%s): a gradient changed\n", fail_at,
                        nb_last_error() ? nb_last_error() : "no message");
                CHECK(0);
            }
            CHECK(nb_memory_in_use() == in_use); /* nothing kept of the failed pass */
            nb_clear_error();
            /* the graph is intact: the same call now succeeds, with the gradients of a clean run */
            CHECK(nb_backward(p.loss, NULL, flags) == 0);
            snap(&p, &after);
            if (!same(&after, &clean, false)) {
                fprintf(stderr, "  allocation %ld failed: the retry's gradients differ from a clean run's\n",
                        fail_at);
                CHECK(0);
            }
        }
        clear(&p);
        nb_scope_end();
    }
    CHECK(total > 10 && failures > total / 2);
    nb_set_cache_limit((int64_t)256 << 20);
    nb_clear_error();
}

static void test_backward_oom(void) { run(0); }
static void test_backward_oom_create_graph(void) { run(NB_CREATE_GRAPH); }
static void test_backward_oom_hooked(void) {
    nb_set_grad_ready_hook(record_hook, NULL);
    run(0);
    run(NB_CREATE_GRAPH);
    nb_set_grad_ready_hook(NULL, NULL);
    hook_problem = NULL;
}

/* nb_gradients hands gradients to the caller and touches no .grad, failing or not. */
static void test_gradients_oom(void) {
    nb_set_cache_limit(0);
    long total = 0;
    for (long fail_at = 0; fail_at <= total; fail_at++) { /* 0: a clean run, counting the allocations */
        nb_scope_begin();
        problem p;
        build(&p, 0);
        snapshot before, after;
        snap(&p, &before);
        nb_tensor *g[NLEAF] = {0};
        nb_clear_error();
        th_inject(fail_at);
        int rc = nb_gradients(p.loss, NULL, NLEAF, p.leaf, 0, g);
        th_stop_injecting();
        snap(&p, &after);
        CHECK(same(&after, &before, true));
        if (fail_at == 0) {
            total = th_alloc_count;
            CHECK(rc == 0);
        }
        if (rc != 0) {
            CHECK(nb_last_error() != NULL);
            for (int i = 0; i < NLEAF; i++) CHECK(g[i] == NULL);
        }
        nb_scope_end();
    }
    CHECK(total > 10);
    nb_set_cache_limit((int64_t)256 << 20);
    nb_clear_error();
}

/* A cross-entropy over f32 logits writes its gradient over the exps its forward kept when the backward releases
   the graph: a pass that fails after that (the product's backward below it) keeps the graph, and its retry
   recomputes the exps, giving a clean run's bits. Every allocation of the pass failed in turn. */
static void test_backward_oom_cross_entropy(void) {
    nb_set_cache_limit(0);
    double xv[8 * 6], wv[5 * 6], tv[8];
    for (int i = 0; i < 8 * 6; i++) xv[i] = 0.37 * (i % 7) - 1.1;
    for (int i = 0; i < 5 * 6; i++) wv[i] = 0.21 * (i % 5) - 0.4;
    for (int i = 0; i < 8; i++) tv[i] = i % 5;
    float clean[2][8 * 6];
    long total = 0;
    int failures = 0;
    for (long fail_at = 0; fail_at <= total; fail_at++) { /* 0: a clean run, counting the allocations */
        nb_scope_begin();
        nb_tensor *x = nb_from_f64(NB_F32, 2, (int64_t[]){8, 6}, xv), *w = nb_from_f64(NB_F32, 2, (int64_t[]){5, 6}, wv);
        nb_tensor *t = nb_from_f64(NB_I64, 1, (int64_t[]){8}, tv);
        nb_set_requires_grad(x, true), nb_set_requires_grad(w, true);
        nb_tensor *L = nb_cross_entropy(nb_tanh(nb_matmul(x, nb_transpose(w, 0, 1))), t);
        int64_t in_use = nb_memory_in_use();
        nb_clear_error();
        th_inject(fail_at);
        int rc = nb_backward(L, NULL, 0);
        th_stop_injecting();
        if (fail_at == 0) {
            total = th_alloc_count;
            CHECK(rc == 0);
        } else if (rc != 0) {
            failures++;
            CHECK(nb_grad(x) == NULL && nb_grad(w) == NULL && nb_memory_in_use() == in_use);
            nb_clear_error();
            rc = nb_backward(L, NULL, 0); /* the retry */
            if (rc != 0) fprintf(stderr, "  allocation %ld failed: the retry failed too (%s)\n", fail_at, nb_last_error());
            CHECK(rc == 0);
        }
        for (int k = 0; k < 2 && rc == 0; k++) {
            const float *g = nb_data(nb_grad(k ? w : x));
            const int64_t n = k ? 5 * 6 : 8 * 6;
            if (fail_at == 0) memcpy(clean[k], g, sizeof(float) * (size_t)n);
            else CHECK(memcmp(clean[k], g, sizeof(float) * (size_t)n) == 0);
        }
        nb_scope_end();
    }
    CHECK(total > 5 && failures > 0);
    nb_set_cache_limit((int64_t)256 << 20);
    nb_clear_error();
}

int main(void) {
    RUN(test_backward_oom);
    RUN(test_backward_oom_cross_entropy);
    RUN(test_backward_oom_create_graph);
    RUN(test_backward_oom_hooked);
    RUN(test_gradients_oom);
    return th_finish();
}

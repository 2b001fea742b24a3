/*
 * test_random_expr.c - random expressions of 50 ops drawn from the whole op
 * set, on shapes kept valid by construction (every intermediate is (3,4)), each
 * checked with nb_gradcheck against central differences, for 200 seeds.
 *
 * Ops with kinks (relu, abs, max, clamp, where) are left out: a random point
 * can land within eps of a kink, where central differences are meaningless.
 * Every few steps a tanh keeps magnitudes moderate so f64 differences stay
 * accurate.
 */
#include "harness.h"

#define STEPS 50
#define NOPS 30

static nb_rng rng;

static int pick(int n) { return (int)(nb_rng_next(&rng) % (uint64_t)n); }

static nb_tensor *step(int op, nb_tensor *a, nb_tensor *b, nb_tensor *c) {
    int ax = pick(2);
    switch (op) {
    case 0: return nb_add(a, b);
    case 1: return nb_sub(a, b);
    case 2: return nb_mul(a, b);
    case 3: return nb_div(a, nb_add_scalar(nb_mul(b, b), 1));
    case 4: return nb_tanh(a);
    case 5: return nb_sigmoid(a);
    case 6: return nb_sin(a);
    case 7: return nb_exp(nb_tanh(a));
    case 8: return nb_log(nb_add_scalar(nb_mul(a, a), 1));
    case 9: return nb_sqrt(nb_add_scalar(nb_pow(a, 2), 1));
    case 10: return nb_gelu(a);
    case 11: return nb_softplus(a);
    case 12: return nb_add(a, nb_mean_axes(b, 1, &ax, true));
    case 13: return nb_mul(a, nb_sum_axes(nb_tanh(b), 1, &ax, true));
    case 14: return nb_softmax(a, ax);
    case 15: return nb_log_softmax(a, ax);
    case 16: return nb_layer_norm(a, NULL, NULL, 1e-5);
    case 17: return nb_scale(nb_matmul(nb_matmul(a, nb_transpose(b, 0, 1)), c), 0.1);
    case 18: return nb_slice(nb_concat(2, (nb_tensor *[]){a, b}, 1), 1, 2, 6);
    case 19: return nb_transpose(nb_reshape(nb_transpose(a, 0, 1), 2, (int64_t[]){3, 4}), 0, 0);
    case 20: return nb_flip(nb_mul(a, nb_cos(b)), ax);
    case 21: return nb_scale(nb_cumsum(a, ax), 0.25);
    case 22: return nb_slice(nb_slice(nb_pad(a, (int64_t[]){1, 0, 0, 2}, 0.5), 0, 0, 3), 1, 1, 5);
    case 23: return nb_index_select(a, 0, nb_from_f64(NB_I64, 1, (int64_t[]){3}, (double[]){2, 0, 2}));
    case 24: return nb_add(a, nb_logsumexp(b, 1, &ax, true));
    case 25: { /* 0.1 a b^T + 3 I is well conditioned for |a|, |b| <= 1 */
        nb_tensor *i3 = nb_from_f64(NB_F64, 2, (int64_t[]){3, 3}, (double[]){3, 0, 0, 0, 3, 0, 0, 0, 3});
        return nb_matmul(nb_inverse(nb_add(nb_scale(nb_matmul(nb_tanh(a), nb_transpose(nb_tanh(b), 0, 1)), 0.1), i3)), c);
    }
    case 26: return nb_pow_t(nb_add_scalar(nb_mul(a, a), 0.5), nb_tanh(b));
    case 27: return nb_erf(nb_sub(a, c));
    case 28: return nb_expm1(nb_tanh(a));
    case 29: return nb_mul(nb_var_axes(a, 1, &ax, 1, true), b);
    }
    return NULL;
}

static nb_tensor *expr(int n, nb_tensor *const *in, void *ud) {
    (void)n;
    uint64_t seed = *(const uint64_t *)ud;
    nb_rng_seed(&rng, seed);
    nb_tensor *pool[STEPS + 2] = {in[0], in[1]};
    int np = 2;
    for (int s = 0; s < STEPS; s++) {
        int op = pick(NOPS);
        nb_tensor *a = pool[pick(np)], *b = pool[pick(np)], *c = pool[pick(np)];
        nb_tensor *r = step(op, a, b, c);
        if (!r) return NULL;
        if (s % 5 == 4) r = nb_tanh(r);
        pool[np++] = r;
    }
    nb_tensor *out = pool[np - 1];
    for (int k = 0; k < 3; k++) out = nb_add(out, nb_scale(pool[2 + pick(np - 2)], 0.3));
    return nb_sum(nb_mul(out, nb_cos(in[0])));
}

static void test_random_expressions(void) {
    int failed = 0;
    for (uint64_t seed = 1; seed <= 200; seed++) {
        nb_scope_begin();
        th_seed(seed * 7919);
        nb_tensor *in[2] = {th_rand(NB_F64, 2, (int64_t[]){3, 4}, -1, 1), th_rand(NB_F64, 2, (int64_t[]){3, 4}, -1, 1)};
        nb_gradcheck_result r;
        int rc = nb_gradcheck(expr, &seed, 2, in, NULL, &r);
        if (rc != 0) {
            failed++;
            fprintf(stderr, "seed %llu: rc %d input %d index %lld analytic %.10g numeric %.10g (%s)\n",
                    (unsigned long long)seed, rc, r.input, (long long)r.index, r.analytic, r.numeric,
                    nb_last_error() ? nb_last_error() : "");
            nb_clear_error();
        }
        nb_scope_end();
    }
    CHECK(failed == 0);
}

int main(void) {
    RUN(test_random_expressions);
    return th_finish();
}

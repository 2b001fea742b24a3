/*
 * nabla.c - the `nabla` program: train a classifier MLP, evaluate a
 * checkpoint, run the gradient checks.
 *
 *   nabla train [options]     train on the embedded digits (default), Fashion-MNIST, IDX files or a CSV
 *   nabla train --model gpt --text FILE   train a GPT on the bytes of a text
 *   nabla generate CHECKPOINT --prompt TEXT   continue a text with such a GPT
 *   nabla eval CHECKPOINT     evaluate a checkpoint written by train (its options are read from the file)
 *   nabla gradcheck           check every op's gradient and print a table
 *   nabla --version           the program's name and version
 *   mpirun -np N nabla train ...   data-parallel training (nabla/dist.h; the first process prints and writes)
 *
 * Every failure is a one-line message and exit status 1. train and eval live in train.c, the GPT's
 * train and generate in gpt.c.
 */
#include <stdio.h>
#include <string.h>

#include <stdlib.h>

#include "nabla.h"
#include "nabla/dist.h"
#include "cli.h"

/* ------------------------------------------------------------ gradcheck --- */

typedef struct {
    const char *name;
    int n;          /* inputs: (3, 4) f64 each; the second of matmul is (4, 3) */
    int positive;   /* inputs drawn in (0.5, 1.5) instead of (-1, 1) */
    int which;
} gc_case;

static nb_tensor *gc_fn(int n, nb_tensor *const *in, void *ud) {
    (void)n;
    const gc_case *c = ud;
    nb_tensor *a = in[0], *b = c->n > 1 ? in[1] : NULL;
    switch (c->which) {
    case 0: return nb_add(a, b);
    case 1: return nb_sub(a, b);
    case 2: return nb_mul(a, b);
    case 3: return nb_div(a, b);
    case 4: return nb_pow(a, 2.5);
    case 5: return nb_sum(a);
    case 6: return nb_mean(a);
    case 7: return nb_reshape(a, 2, (int64_t[]){4, 3});
    case 8: return nb_transpose(a, 0, 1);
    case 9: return nb_concat(2, (nb_tensor *[]){a, b}, 0);
    case 10: return nb_matmul(a, b);
    case 11: return nb_sigmoid(a);
    case 12: return nb_tanh(a);
    case 13: return nb_exp(a);
    case 14: return nb_log(a);
    case 15: return nb_relu(a);
    case 16: return nb_leaky_relu(a, 0.01);
    case 17: return nb_softmax(a, 1);
    case 18: return nb_log_softmax(a, 1);
    case 19: return nb_layer_norm(a, NULL, NULL, 1e-5);
    case 20: { /* a well-conditioned square: the first 3 columns + 3 I */
        static const double eye3[9] = {3, 0, 0, 0, 3, 0, 0, 0, 3};
        return nb_inverse(nb_add(nb_slice(a, 1, 0, 3), nb_from_f64(NB_F64, 2, (int64_t[]){3, 3}, eye3)));
    }
    case 21: return nb_einsum("ij,kj->ik", 2, (nb_tensor *[]){a, b});
    default: return NULL;
    }
}

static int cmd_gradcheck(int argc, char **argv) {
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("usage: nabla gradcheck\n"
                   "  checks each op's analytic gradient (first and second order) against central\n"
                   "  differences in f64 (eps 1e-6, atol 1e-5, rtol 1e-3) on random (3, 4) inputs and\n"
                   "  prints a table; exits 1 if any check fails. The test suite checks many more\n"
                   "  shapes, layouts and broadcasts.\n");
            return 0;
        }
        return cli_die("unknown option (see nabla gradcheck --help)", argv[i]);
    }
    static const gc_case cases[] = {
        {"add", 2, 0, 0},       {"sub", 2, 0, 1},         {"mul", 2, 0, 2},        {"div", 2, 1, 3},
        {"pow 2.5", 1, 1, 4},   {"sum", 1, 0, 5},         {"mean", 1, 0, 6},       {"reshape", 1, 0, 7},
        {"transpose", 1, 0, 8}, {"concat", 2, 0, 9},      {"matmul", 2, 0, 10},    {"sigmoid", 1, 0, 11},
        {"tanh", 1, 0, 12},     {"exp", 1, 0, 13},        {"log", 1, 1, 14},       {"relu", 1, 0, 15},
        {"leaky_relu", 1, 0, 16}, {"softmax", 1, 0, 17},  {"log_softmax", 1, 0, 18}, {"layer_norm", 1, 0, 19},
        {"inverse", 1, 0, 20},  {"einsum ij,kj->ik", 2, 0, 21},
    };
    nb_rng rng;
    nb_rng_seed(&rng, 7);
    int failed = 0;
    printf("| op | inputs | 1st order | 2nd order | worst abs(a - n) / (atol + rtol abs(n)), both orders (<= 1 passes) |\n"
           "|---|---|---|---|---|\n");
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const gc_case *c = &cases[ci];
        nb_scope_begin();
        nb_tensor *in[2];
        for (int k = 0; k < c->n; k++) {
            int64_t shape[2] = {c->which == 10 && k == 1 ? 4 : 3, c->which == 10 && k == 1 ? 3 : 4};
            double v[12];
            for (int e = 0; e < 12; e++) {
                double u = (double)(nb_rng_next(&rng) >> 11) / 9007199254740992.0;
                v[e] = c->positive ? 0.5 + u : 2 * u - 1;
                if (c->which == 15 || c->which == 16) v[e] += v[e] < 0 ? -0.05 : 0.05; /* away from the kink */
            }
            in[k] = nb_from_f64(NB_F64, 2, shape, v);
            nb_set_requires_grad(in[k], true);
        }
        nb_gradcheck_opts o1 = {0}, o2 = {0};
        o2.second_order = true;
        nb_gradcheck_result r1, r2;
        int rc1 = nb_gradcheck(gc_fn, (void *)c, c->n, in, &o1, &r1);
        int rc2 = rc1 == 0 ? nb_gradcheck(gc_fn, (void *)c, c->n, in, &o2, &r2) : rc1;
        if (rc1 < 0 || rc2 < 0) {
            printf("| %s | %d | error: %s | | |\n", c->name, c->n, nb_last_error());
            failed++;
        } else {
            printf("| %s | %d | %s | %s | %.2e |\n", c->name, c->n, rc1 == 0 ? "pass" : "FAIL",
                   rc2 == 0 ? "pass" : "FAIL", rc1 ? r1.worst_ratio : r2.worst_ratio);
            failed += rc1 != 0 || rc2 != 0;
        }
        nb_scope_end();
    }
    printf("%d of %d ops pass\n", (int)(sizeof cases / sizeof cases[0]) - failed, (int)(sizeof cases / sizeof cases[0]));
    return failed != 0;
}

static void usage(FILE *f) {
    fprintf(f, "usage: nabla COMMAND [options]\n"
               "  train       train a classifier MLP (nabla train --help), or with --model gpt a GPT on\n"
               "              the bytes of a text (nabla train --model gpt --help)\n"
               "  eval        evaluate a checkpoint written by train (nabla eval --help)\n"
               "  generate    continue a text with a GPT trained by train --model gpt (nabla generate --help)\n"
               "  gradcheck   check the ops' gradients against finite differences (nabla gradcheck --help)\n"
               "  --version   the program's version\n"
               "  --help      this text\n");
}

static int dispatch(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 1 : 0;
    }
    if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0) {
        printf("nabla %d.%d.%d\n", NABLA_VERSION_MAJOR, NABLA_VERSION_MINOR, NABLA_VERSION_PATCH);
        return 0;
    }
    if (strcmp(argv[1], "train") == 0) return cmd_train(argc - 2, argv + 2);
    if (strcmp(argv[1], "eval") == 0) return cmd_eval(argc - 2, argv + 2);
    if (strcmp(argv[1], "generate") == 0) return cmd_generate(argc - 2, argv + 2);
    if (strcmp(argv[1], "gradcheck") == 0) return cmd_gradcheck(argc - 2, argv + 2);
    return cli_die("unknown command (see nabla --help)", argv[1]);
}

/* Whether an MPI launcher (mpirun, srun) started this process. */
static bool launched_by_mpi(void) {
    return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMIX_RANK") || getenv("PMI_RANK") || getenv("PMI_SIZE");
}

int main(int argc, char **argv) {
    bool dist = launched_by_mpi();
    if (dist && !nb_dist_available())
        return cli_die("started by an MPI launcher", "this nabla was built without MPI (install libopenmpi-dev and rebuild)");
    if (dist && nb_dist_init(&argc, &argv) != 0) {
        const char *m = nb_last_error();
        return cli_die("cannot start MPI", m ? m : "unknown error");
    }
    int rc = dispatch(argc, argv);
    if (dist) nb_dist_finalize();
    /* Everything the library holds goes back before exit, so a leak checker (valgrind) sees nothing held:
       restoring the default allocator stops the worker threads (each frees its buffers), frees this
       thread's matrix-product buffers and empties the block cache. */
    nb_set_allocator(NULL, NULL, NULL);
    nb_release_cached_memory();
    return rc;
}

/*
 * nabla.c - the `nabla` program: train a classifier MLP, evaluate a
 * checkpoint, run the gradient checks.
 *
 *   nabla train [options]     train on the embedded digits (default), Fashion-MNIST, IDX files or a CSV
 *   nabla eval CHECKPOINT     evaluate a checkpoint written by train (its options are read from the file)
 *   nabla gradcheck           check every op's gradient and print a table
 *
 * Every failure is a one-line message and a nonzero exit status.
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "nabla.h"
#include "nabla/data.h"
#include "nabla/io.h"
#include "nabla/nn.h"

extern const int nabla_digits_rows;
extern const uint8_t nabla_digits[];

typedef struct {
    const char *data, *csv, *out, *activation, *optimizer;
    int64_t hidden[8];
    int nhidden;
    double dropout, lr;
    int epochs;
    int64_t batch;
    uint64_t seed;
    int cosine;
} options;

static int die(const char *what, const char *detail) {
    fprintf(stderr, "nabla: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    return 1;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void usage_train(FILE *f) {
    fprintf(f, "usage: nabla train [options]\n"
               "  --data digits|fashion-mnist|DIR  data set (default digits, embedded; DIR holds train-/t10k-\n"
               "                                   images-idx3-ubyte[.gz] and labels-idx1-ubyte[.gz])\n"
               "  --csv FILE          a CSV whose last column is the label (80/20 split)\n"
               "  --hidden 128,64     hidden layer sizes (default 256)\n"
               "  --activation NAME   relu (default), tanh, gelu, sigmoid, leaky_relu\n"
               "  --dropout P         dropout after each hidden layer (default 0)\n"
               "  --epochs N          passes over the training set (default 60 for digits, 15 otherwise)\n"
               "  --batch N           mini-batch size (default 64 for digits, 128 otherwise)\n"
               "  --lr X              learning rate (default 5e-3 for digits, 2e-3 otherwise)\n"
               "  --optimizer NAME    adam (default), adamw, sgd (momentum 0.9)\n"
               "  --schedule NAME     constant (default for digits) or cosine (decay from --lr to 0 over the\n"
               "                      run; default otherwise)\n"
               "  --seed N            random seed (default 1)\n"
               "  --threads N         worker threads (default NABLA_NUM_THREADS or the number of cores);\n"
               "                      results are bit-identical for any count\n"
               "  --out DIR           where the checkpoint, curves and graph go (default out)\n");
}

static int parse_list(const char *s, int64_t *v, int cap) {
    int n = 0;
    while (*s && n < cap) {
        char *e;
        long long x = strtoll(s, &e, 10);
        if (e == s || x <= 0) return -1;
        v[n++] = x;
        s = *e == ',' ? e + 1 : e;
        if (*e && *e != ',') return -1;
    }
    return n;
}

/* digits: pixels / 16, shuffled 80/20 split from the seed */
static int load_digits(uint64_t seed, nb_dataset *tr, nb_dataset *te) {
    int n = nabla_digits_rows, ntr = n * 4 / 5;
    int *perm = malloc(sizeof(int) * (size_t)n);
    double *x = malloc(sizeof(double) * (size_t)n * 64), *y = malloc(sizeof(double) * (size_t)n);
    if (!perm || !x || !y) return -1;
    nb_rng r;
    nb_rng_seed(&r, seed ^ 0xd161);
    for (int i = 0; i < n; i++) perm[i] = i;
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(nb_rng_next(&r) % (uint64_t)(i + 1)), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    for (int i = 0; i < n; i++) {
        const uint8_t *row = nabla_digits + 65 * perm[i];
        for (int k = 0; k < 64; k++) x[i * 64 + k] = row[k] / 16.0;
        y[i] = row[64];
    }
    nb_dataset *ds[2] = {tr, te};
    int lo[2] = {0, ntr}, cnt[2] = {ntr, n - ntr};
    for (int k = 0; k < 2; k++) {
        ds[k]->x = nb_from_f64(NB_F32, 2, (int64_t[]){cnt[k], 64}, x + lo[k] * 64);
        ds[k]->y = nb_from_f64(NB_I64, 1, (int64_t[]){cnt[k]}, y + lo[k]);
        ds[k]->n = cnt[k];
        ds[k]->d = 64;
        ds[k]->classes = 10;
    }
    free(perm);
    free(x);
    free(y);
    return tr->x && te->x ? 0 : -1;
}

static int load_data(const options *o, nb_dataset *tr, nb_dataset *te) {
    memset(tr, 0, sizeof *tr);
    memset(te, 0, sizeof *te);
    if (o->csv) {
        nb_dataset all;
        if (nb_load_csv(o->csv, -1, NB_F32, &all) != 0) return -1;
        int64_t ntr = all.n * 4 / 5;
        tr->x = nb_slice(all.x, 0, 0, ntr);
        tr->y = nb_slice(all.y, 0, 0, ntr);
        te->x = nb_slice(all.x, 0, ntr, all.n);
        te->y = nb_slice(all.y, 0, ntr, all.n);
        tr->n = ntr, te->n = all.n - ntr, tr->d = te->d = all.d, tr->classes = te->classes = all.classes;
        nb_dataset_free(&all); /* the slices keep the storage alive */
        return tr->x && te->x ? 0 : -1;
    }
    if (strcmp(o->data, "digits") == 0) return load_digits(o->seed, tr, te);
    const char *dir = strcmp(o->data, "fashion-mnist") == 0 ? "/usr/share/datasets/fashion-mnist" : o->data;
    char a[1024], b[1024];
    for (int k = 0; k < 2; k++) {
        const char *part = k ? "t10k" : "train";
        nb_dataset *ds = k ? te : tr;
        int rc = -1;
        for (int gz = 1; gz >= 0 && rc != 0; gz--) {
            snprintf(a, sizeof a, "%s/%s-images-idx3-ubyte%s", dir, part, gz ? ".gz" : "");
            snprintf(b, sizeof b, "%s/%s-labels-idx1-ubyte%s", dir, part, gz ? ".gz" : "");
            if (access(a, R_OK) != 0) continue;
            nb_clear_error();
            rc = nb_load_idx(a, b, NB_F32, ds);
        }
        if (rc != 0) {
            if (!nb_last_error()) {
                char msg[1200];
                snprintf(msg, sizeof msg, "no %s-images-idx3-ubyte[.gz] in '%s'", part, dir);
                nb_fail("nabla train", msg);
            }
            return -1;
        }
    }
    return 0;
}

static nb_module *activation(const char *name) {
    if (strcmp(name, "relu") == 0) return nb_relu_layer();
    if (strcmp(name, "tanh") == 0) return nb_tanh_layer();
    if (strcmp(name, "gelu") == 0) return nb_gelu_layer();
    if (strcmp(name, "sigmoid") == 0) return nb_sigmoid_layer();
    if (strcmp(name, "leaky_relu") == 0) return nb_leaky_relu_layer(0.01);
    return NULL;
}

static nb_module *build(const options *o, int64_t d, int64_t classes, nb_rng *rng) {
    nb_module *mods[32];
    int n = 0;
    int64_t prev = d;
    for (int i = 0; i < o->nhidden; i++) {
        mods[n++] = nb_linear(prev, o->hidden[i], true,
                              strcmp(o->activation, "relu") == 0 ? NB_INIT_KAIMING : NB_INIT_XAVIER, NB_F32, rng);
        mods[n++] = activation(o->activation);
        if (o->dropout > 0) mods[n++] = nb_dropout_layer(o->dropout, rng);
        prev = o->hidden[i];
    }
    mods[n++] = nb_linear(prev, classes, true, NB_INIT_XAVIER, NB_F32, rng);
    return nb_sequential(n, mods);
}

static double accuracy(nb_module *m, const nb_dataset *ds) {
    int64_t correct = 0;
    nb_module_train(m, false);
    bool was = nb_grad_enabled();
    nb_set_grad_enabled(false);
    for (int64_t lo = 0; lo < ds->n; lo += 1000) {
        int64_t hi = lo + 1000 < ds->n ? lo + 1000 : ds->n;
        nb_scope_begin();
        nb_tensor *logits = nb_forward(m, nb_slice(ds->x, 0, lo, hi));
        int64_t c = nb_shape(logits)[1];
        float *lv = nb_data(logits);
        for (int64_t i = 0; i < hi - lo; i++) {
            int64_t best = 0;
            for (int64_t k = 1; k < c; k++)
                if (lv[i * c + k] > lv[i * c + best]) best = k;
            correct += best == (int64_t)nb_get(ds->y, (int64_t[]){lo + i});
        }
        nb_scope_end();
    }
    nb_set_grad_enabled(was);
    nb_module_train(m, true);
    return ds->n ? (double)correct / (double)ds->n : 0;
}

static void progress(bool tty, int epoch, int epochs, int64_t done, int64_t total, double loss, double acc,
                     double rate) {
    if (!tty) return;
    int w = 30, fill = total ? (int)(w * done / total) : w;
    fprintf(stderr, "\r  epoch %2d/%d [", epoch, epochs);
    for (int i = 0; i < w; i++) fputc(i < fill ? '=' : (i == fill ? '>' : ' '), stderr);
    fprintf(stderr, "] loss %.4f acc %.4f %7.0f samples/s", loss, acc, rate);
    fflush(stderr);
}

static int cmd_train(int argc, char **argv) {
    options o = {"digits", NULL, "out", "relu", "adam", {0}, 0, 0.0, 0, 0, 0, 1, -1};
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage_train(stdout);
            return 0;
        }
        if (!v) return die("missing value for option", a);
        i++;
        char *e = NULL;
        if (strcmp(a, "--data") == 0) o.data = v;
        else if (strcmp(a, "--csv") == 0) o.csv = v;
        else if (strcmp(a, "--out") == 0) o.out = v;
        else if (strcmp(a, "--activation") == 0) o.activation = v;
        else if (strcmp(a, "--optimizer") == 0) o.optimizer = v;
        else if (strcmp(a, "--schedule") == 0) {
            if (strcmp(v, "cosine") && strcmp(v, "constant")) return die("bad --schedule (cosine or constant)", v);
            o.cosine = strcmp(v, "cosine") == 0;
        }
        else if (strcmp(a, "--hidden") == 0) {
            if ((o.nhidden = parse_list(v, o.hidden, 8)) < 0) return die("bad --hidden (want e.g. 128,64)", v);
        } else if (strcmp(a, "--dropout") == 0) {
            o.dropout = strtod(v, &e);
            if (*e || !(o.dropout >= 0 && o.dropout < 1)) return die("bad --dropout (want 0 <= p < 1)", v);
        } else if (strcmp(a, "--lr") == 0) {
            o.lr = strtod(v, &e);
            if (*e || !(o.lr > 0)) return die("bad --lr", v);
        } else if (strcmp(a, "--epochs") == 0) {
            o.epochs = (int)strtol(v, &e, 10);
            if (*e || o.epochs <= 0) return die("bad --epochs", v);
        } else if (strcmp(a, "--batch") == 0) {
            o.batch = strtoll(v, &e, 10);
            if (*e || o.batch <= 0) return die("bad --batch", v);
        } else if (strcmp(a, "--seed") == 0) {
            o.seed = strtoull(v, &e, 10);
            if (*e) return die("bad --seed", v);
        } else if (strcmp(a, "--threads") == 0) {
            long t = strtol(v, &e, 10);
            if (*e || t <= 0 || nb_set_num_threads((int)t) != 0) return die("bad --threads (want 1 to 256)", v);
        } else {
            return die("unknown option (see nabla train --help)", a);
        }
    }
    nb_module *act = activation(o.activation);
    if (!act) return die("unknown --activation", o.activation);
    nb_module_free(act);
    bool fashion = strcmp(o.data, "digits") != 0 || o.csv;
    if (o.nhidden == 0) o.hidden[o.nhidden++] = 256;
    if (o.epochs == 0) o.epochs = fashion ? 15 : 60;
    if (o.lr == 0) o.lr = fashion ? 2e-3 : 5e-3;
    if (o.batch == 0) o.batch = fashion ? 128 : 64;
    if (o.cosine < 0) o.cosine = fashion;
    nb_dataset tr, te;
    if (load_data(&o, &tr, &te) != 0) return die("cannot load the data", nb_last_error());
    nb_rng rng;
    nb_rng_seed(&rng, o.seed);
    nb_module *net = build(&o, tr.d, tr.classes > te.classes ? tr.classes : te.classes, &rng);
    nb_tensor *ps[64];
    int np = nb_module_params(net, ps, NULL, 64);
    nb_optim *opt = strcmp(o.optimizer, "sgd") == 0     ? nb_sgd(np, ps, o.lr, 0.9, 0, false)
                    : strcmp(o.optimizer, "adamw") == 0 ? nb_adamw(np, ps, o.lr, 0.9, 0.999, 1e-8, 0.01)
                    : strcmp(o.optimizer, "adam") == 0  ? nb_adam(np, ps, o.lr, 0.9, 0.999, 1e-8, 0)
                                                        : NULL;
    if (!opt) return die("unknown --optimizer", o.optimizer);
    printf("nabla train: %lld training and %lld test samples of %lld features, %lld classes; %lld parameters\n",
           (long long)tr.n, (long long)te.n, (long long)tr.d, (long long)tr.classes,
           (long long)nb_module_num_params(net));
    nb_batcher *bat = nb_batcher_new(&tr, o.batch, true, &rng);
    bool tty = isatty(2);
    double *losses = calloc((size_t)o.epochs, sizeof(double)), *accs = calloc((size_t)o.epochs, sizeof(double));
    double t0 = now();
    for (int ep = 0; ep < o.epochs; ep++) {
        double sum = 0, te0 = now();
        int64_t done = 0, correct = 0;
        nb_tensor *x, *y;
        nb_scope_begin();
        while (nb_batcher_next(bat, &x, &y)) {
            nb_scope_begin();
            if (o.cosine) /* cosine decay from --lr to 0 over the run */
                nb_optim_set_lr(opt, nb_lr_cosine(o.lr, nb_optim_steps(opt), 0,
                                                  (int64_t)o.epochs * ((tr.n + o.batch - 1) / o.batch), 0));
            nb_optim_zero_grad(opt);
            nb_tensor *logits = nb_forward(net, x);
            nb_tensor *loss = nb_cross_entropy(logits, y);
            if (!loss || nb_backward(loss, NULL, 0) != 0 || nb_optim_step(opt) != 0) {
                nb_scope_end();
                nb_scope_end();
                return die("training failed", nb_last_error());
            }
            int64_t m = nb_shape(x)[0], c = nb_shape(logits)[1];
            float *lv = nb_data(logits);
            for (int64_t i = 0; i < m; i++) {
                int64_t best = 0;
                for (int64_t k = 1; k < c; k++)
                    if (lv[i * c + k] > lv[i * c + best]) best = k;
                correct += best == (int64_t)nb_get(y, (int64_t[]){i});
            }
            sum += nb_item(loss) * (double)m;
            done += m;
            progress(tty, ep + 1, o.epochs, done, tr.n, sum / (double)done, (double)correct / (double)done,
                     (double)done / (now() - te0));
            nb_scope_end();
        }
        nb_scope_end();
        losses[ep] = sum / (double)done;
        accs[ep] = accuracy(net, &te);
        if (tty) fputc('\n', stderr);
        printf("epoch %d/%d  loss %.4f  train acc %.4f  test acc %.4f  %.0f samples/s\n", ep + 1, o.epochs, losses[ep],
               (double)correct / (double)done, accs[ep], (double)done / (now() - te0));
        fflush(stdout);
    }
    double secs = now() - t0;
    mkdir(o.out, 0777);
    char path[1200];
    snprintf(path, sizeof path, "%s/model.safetensors", o.out);
    int rc = nb_module_save(net, path);
    if (rc == 0) { /* the optimizer's moments and step count, to resume training */
        snprintf(path, sizeof path, "%s/optim.safetensors", o.out);
        rc = nb_optim_save(opt, path);
    }
    if (rc == 0) { /* what nabla eval needs to rebuild the model and its data */
        snprintf(path, sizeof path, "%s/model.args", o.out);
        FILE *f = fopen(path, "w");
        if (f) {
            fprintf(f, "data %s\ncsv %s\nactivation %s\ndropout %.17g\nseed %llu\nhidden", o.data,
                    o.csv ? o.csv : "-", o.activation, o.dropout, (unsigned long long)o.seed);
            for (int i = 0; i < o.nhidden; i++) fprintf(f, "%c%lld", i ? ',' : ' ', (long long)o.hidden[i]);
            fputc('\n', f);
        }
        if (!f || fclose(f) != 0) {
            nb_fail("nabla train", "cannot write model.args");
            rc = -1;
        }
    }
    if (rc == 0) {
        const double *ys[2] = {losses, accs};
        int64_t lens[2] = {o.epochs, o.epochs};
        const char *labels[2] = {"train loss", "test accuracy"};
        snprintf(path, sizeof path, "%s/curves.svg", o.out);
        rc = nb_svg_curves(path, "nabla train", 2, labels, ys, lens);
    }
    if (rc == 0) { /* the graph of one batch's loss */
        snprintf(path, sizeof path, "%s/graph.dot", o.out);
        FILE *f = fopen(path, "w");
        nb_scope_begin();
        nb_tensor *x = nb_slice(tr.x, 0, 0, 2), *y = nb_slice(tr.y, 0, 0, 2);
        nb_tensor *loss = nb_cross_entropy(nb_forward(net, x), y);
        rc = f && loss ? nb_graph_dot(loss, f) : -1;
        if (f) fclose(f);
        snprintf(path, sizeof path, "%s/graph.mmd", o.out);
        f = fopen(path, "w");
        if (rc == 0) rc = f ? nb_graph_mermaid(loss, f) : -1;
        if (f) fclose(f);
        nb_scope_end();
    }
    if (rc != 0) return die("cannot write the outputs", nb_last_error());
    printf("trained in %.1f s; wrote %s/model.safetensors (+ model.args, optim.safetensors), %s/curves.svg, %s/graph.dot and %s/graph.mmd\n", secs,
           o.out, o.out, o.out, o.out);
    printf("test accuracy: %.4f\n", accs[o.epochs - 1]);
    free(losses);
    free(accs);
    nb_batcher_free(bat);
    nb_optim_free(opt);
    nb_module_free(net);
    nb_dataset_free(&tr);
    nb_dataset_free(&te);
    return 0;
}

/* ----------------------------------------------------------------- eval --- */

static int cmd_eval(int argc, char **argv) {
    if (argc >= 1 && (strcmp(argv[0], "--help") == 0 || strcmp(argv[0], "-h") == 0)) {
        printf("usage: nabla eval CHECKPOINT\n"
               "  evaluates a model.safetensors written by nabla train on the test split of the data it\n"
               "  was trained on; the model's options are read from model.args beside the checkpoint.\n"
               "  Prints 'test accuracy: 0.XXXX'.\n");
        return 0;
    }
    if (argc != 1) return die("usage: nabla eval CHECKPOINT (see nabla eval --help)", NULL);
    char args[1200], line[1100];
    const char *slash = strrchr(argv[0], '/');
    snprintf(args, sizeof args, "%.*smodel.args", slash ? (int)(slash - argv[0] + 1) : 0, argv[0]);
    FILE *f = fopen(args, "r");
    if (!f) return die("cannot open the model's options", args);
    static char data[1024], csv[1024], act[64];
    options o = {"digits", NULL, "out", "relu", "adam", {0}, 0, 0.0, 0, 0, 0, 1, -1};
    int got = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long long seed;
        char hid[256];
        if (sscanf(line, "data %1023s", data) == 1) o.data = data, got |= 1;
        else if (sscanf(line, "csv %1023s", csv) == 1) o.csv = strcmp(csv, "-") ? csv : NULL;
        else if (sscanf(line, "activation %63s", act) == 1) o.activation = act, got |= 2;
        else if (sscanf(line, "dropout %lf", &o.dropout) == 1) got |= 4;
        else if (sscanf(line, "seed %llu", &seed) == 1) o.seed = seed, got |= 8;
        else if (sscanf(line, "hidden %255s", hid) == 1 && (o.nhidden = parse_list(hid, o.hidden, 8)) > 0) got |= 16;
    }
    fclose(f);
    nb_module *act_m = got == 31 ? activation(o.activation) : NULL;
    if (!act_m) return die("malformed model options", args);
    nb_module_free(act_m);
    nb_dataset tr, te;
    if (load_data(&o, &tr, &te) != 0) return die("cannot load the data", nb_last_error());
    nb_rng rng;
    nb_rng_seed(&rng, o.seed);
    nb_module *net = build(&o, tr.d, tr.classes > te.classes ? tr.classes : te.classes, &rng);
    int rc = net && nb_module_load(net, argv[0]) == 0 ? 0 : 1;
    if (rc == 0) printf("test accuracy: %.4f\n", accuracy(net, &te));
    else die("cannot load the checkpoint", nb_last_error());
    nb_module_free(net);
    nb_dataset_free(&tr);
    nb_dataset_free(&te);
    return rc;
}

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
        return die("unknown option (see nabla gradcheck --help)", argv[i]);
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
               "  train       train a classifier MLP (nabla train --help)\n"
               "  eval        evaluate a checkpoint written by train (nabla eval --help)\n"
               "  gradcheck   check the ops' gradients against finite differences (nabla gradcheck --help)\n"
               "  --help      this text\n");
}

int main(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 1 : 0;
    }
    if (strcmp(argv[1], "train") == 0) return cmd_train(argc - 2, argv + 2);
    if (strcmp(argv[1], "eval") == 0) return cmd_eval(argc - 2, argv + 2);
    if (strcmp(argv[1], "gradcheck") == 0) return cmd_gradcheck(argc - 2, argv + 2);
    return die("unknown command (see nabla --help)", argv[1]);
}

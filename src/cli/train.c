/*
 * train.c - `nabla train` and `nabla eval`.
 *
 * A run is one struct (run) that owns everything the command allocates: the
 * data, the model, the optimizer, the batcher, the per-epoch history and, for
 * a CSV, the class names and the standardisation statistics. Every exit path,
 * success or failure, goes through run_free, so nothing leaks on any of them.
 *
 * What a run writes into --out at the end, and on the way after an epoch once
 * SAVE_EVERY seconds have passed since the last save (so an interrupted run can
 * be resumed from its last saved epoch):
 *   model.safetensors   the parameters
 *   optim.safetensors   the optimizer's moments and step count
 *   history.csv         epoch,train_loss,train_acc,test_loss,test_acc (one row per epoch done)
 *   model.args          the options, the epochs done and the generator state; for a CSV
 *                       also its absolute path, the class names and the feature statistics
 *                       (written last: the other files are complete when it names their epoch)
 * and at the end curves.svg, graph.dot and graph.mmd.
 *
 * Resuming (train --resume DIR) rebuilds the run from DIR: the same data, split
 * and statistics from the saved options, the parameters, the optimizer state,
 * and the generator as it was just before the shuffle of the next epoch, so the
 * remaining epochs draw exactly what an uninterrupted run draws, and the
 * checkpoint is the same bytes.
 */
#define _XOPEN_SOURCE 700
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "nabla.h"
#include "nabla/data.h"
#include "nabla/dist.h"
#include "nabla/io.h"
#include "nabla/nn.h"
#include "cli.h"

extern const int nabla_digits_rows;
extern const uint8_t nabla_digits[];

#define MAX_LAYERS 8
#define MAX_HIDDEN ((int64_t)1 << 30)
#define MAX_EPOCHS 1000000
#define MAX_BATCH ((int64_t)1 << 24)
#define MAX_LR 1000.0
#define MAX_THREADS 256
#define PATH_CAP 4096
#define MAX_PARAMS (2 * (MAX_LAYERS + 1))
#define SAVE_EVERY 30.0 /* seconds between the saves of a resumable state during a run */

typedef struct {
    char data[PATH_CAP], csv[PATH_CAP], activation[32], optimizer[16];
    const char *out, *resume;
    int64_t hidden[MAX_LAYERS];
    int nhidden;
    double dropout, lr;
    int64_t epochs, batch;
    uint64_t seed;
    int cosine; /* -1: the default for the data */
    bool data_given;
    bool cnn;     /* --model cnn: the convolutional network (build) instead of the MLP */
    int augment;  /* --augment: 1 random crops (padding 2) and flips of the training images; -1: the default */
} options;

typedef struct {
    options o;
    nb_dataset tr, te;
    int64_t classes;
    char **names;        /* class names (labels of a CSV that are not integers), else NULL */
    int64_t nnames;
    double *mean, *std;  /* feature standardisation (CSV only), nstats each */
    int64_t nstats;
    nb_module *net;
    nb_optim *opt;
    nb_batcher *bat;
    nb_tensor *params[MAX_PARAMS];
    const char *pnames[MAX_PARAMS];
    int np;
    double *hist;        /* 4 per epoch: train loss, train acc, test loss, test acc */
    int64_t done;        /* epochs completed */
    nb_rng rng;
    nb_rng rng_next;     /* the generator just before the shuffle of epoch done + 1 */
    int rank, size;      /* under mpirun: this process and the count (else 0 and 1) */
    nb_ddp *ddp;         /* size > 1: the data-parallel wrapper of net and opt */
    bool synced;         /* size > 1: the processes agreed that set-up worked */
} run;

static void run_free(run *r) {
    nb_ddp_free(r->ddp);
    nb_batcher_free(r->bat);
    nb_optim_free(r->opt);
    nb_module_free(r->net);
    nb_dataset_free(&r->tr);
    nb_dataset_free(&r->te);
    for (int64_t i = 0; i < r->nnames; i++) free(r->names[i]);
    free(r->names);
    free(r->mean);
    free(r->std);
    free(r->hist);
    memset(r, 0, sizeof *r);
}





/* ------------------------------------------------------------- numbers --- */




/* "128,64": 1 to MAX_LAYERS sizes in [1, MAX_HIDDEN]; returns the count or -1. */
static int to_list(const char *s, int64_t *v) {
    int n = 0;
    char buf[32];
    for (const char *p = s;; p++) {
        const char *c = strchr(p, ',');
        size_t len = c ? (size_t)(c - p) : strlen(p);
        if (n == MAX_LAYERS || len == 0 || len >= sizeof buf) return -1;
        memcpy(buf, p, len);
        buf[len] = 0;
        if (!to_int(buf, 1, MAX_HIDDEN, &v[n++])) return -1;
        if (!c) return n;
        p = c;
    }
}


static bool set_str(char *dst, size_t cap, const char *s) {
    if (strlen(s) >= cap) return false;
    memcpy(dst, s, strlen(s) + 1);
    return true;
}

/* ------------------------------------------------------------- options --- */

static void usage_train(FILE *f) {
    fprintf(f,
            "usage: nabla train [options]      (--opt value or --opt=value)\n"
            "  --model mlp|cnn|gpt mlp (default): a classifier MLP; cnn: a convolutional classifier of square\n"
            "                      images (two conv 3x3 + batch norm + activation + 2x2 max pool blocks of 32\n"
            "                      and 64 channels, a hidden layer of --hidden (default 256) and the output);\n"
            "                      gpt: a language model on a text (see nabla train --model gpt --help)\n"
            "  --augment on|off    cnn: random crops (padding 2) and horizontal flips of the training images\n"
            "                      (default off)\n"
            "  --data digits|fashion-mnist|DIR  data set (default digits, embedded; DIR holds train-/t10k-\n"
            "                                   images-idx3-ubyte[.gz] and labels-idx1-ubyte[.gz])\n"
            "  --csv FILE          a CSV whose last column is the label: a seeded shuffled 80/20 split,\n"
            "                      features standardised with the training part's mean and deviation\n"
            "  --hidden 128,64     hidden layer sizes, 1 to %d layers of 1 to %" PRId64 " (default 256)\n"
            "  --activation NAME   relu (default), tanh, gelu, sigmoid, leaky_relu\n"
            "  --dropout P         dropout after each hidden layer, 0 <= P < 1 (default 0)\n"
            "  --epochs N          passes over the training set, 1 to %d (default 60 for digits,\n"
            "                      15 otherwise; with --resume, the total to reach)\n"
            "  --batch N           mini-batch size, 1 to %" PRId64 " (default 64 for digits, 128 otherwise)\n"
            "  --lr X              learning rate, 0 < X <= %g (default 5e-3 for digits, 2e-3 otherwise)\n"
            "  --optimizer NAME    adam (default), adamw, sgd (momentum 0.9)\n"
            "  --schedule NAME     constant (default for digits) or cosine (decay from --lr to 0 over the\n"
            "                      run; default otherwise)\n"
            "  --seed N            random seed, 0 to 2^64-1 (default 1)\n"
            "  --threads N         worker threads, 1 to %d (default NABLA_NUM_THREADS or the number of\n"
            "                      cores); results are bit-identical for any count\n"
            "  --out DIR           where the checkpoint, curves and graph go, created if missing (default\n"
            "                      out; with --resume, the folder resumed)\n"
            "  --resume DIR        continue the run saved in DIR (its last saved epoch) up to --epochs;\n"
            "                      the other options come from DIR/model.args (only --epochs, --out and\n"
            "                      --threads may be given)\n",
            MAX_LAYERS, MAX_HIDDEN, MAX_EPOCHS, MAX_BATCH, MAX_LR, MAX_THREADS);
}

static int set_threads(const char *opt, const char *v) {
    int64_t t;
    if (!to_int(v, 1, MAX_THREADS, &t) || nb_set_num_threads((int)t) != 0)
        return bad_option(opt, v, "an integer from 1 to 256");
    return 0;
}

static void defaults(options *o) {
    memset(o, 0, sizeof *o);
    strcpy(o->data, "digits");
    strcpy(o->activation, "relu");
    strcpy(o->optimizer, "adam");
    o->out = NULL;
    o->seed = 1;
    o->cosine = -1;
    o->augment = -1;
}

static bool known_activation(const char *s) {
    return !strcmp(s, "relu") || !strcmp(s, "tanh") || !strcmp(s, "gelu") || !strcmp(s, "sigmoid") ||
           !strcmp(s, "leaky_relu");
}

static bool known_option(const char *s) {
    static const char *const names[] = {"--model", "--augment", "--data", "--csv", "--out", "--resume", "--activation", "--optimizer",
                                        "--schedule", "--hidden", "--dropout", "--lr", "--epochs", "--batch",
                                        "--seed", "--threads"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strcmp(s, names[i])) return true;
    return false;
}

static bool known_optimizer(const char *s) { return !strcmp(s, "adam") || !strcmp(s, "adamw") || !strcmp(s, "sgd"); }

/* Sets one option from its value; prints the error and returns 1 when the value is bad, -1 for an
   unknown option. */
static int set_option(options *o, const char *opt, const char *v) {
    int64_t n;
    if (!strcmp(opt, "--model")) { /* gpt was dispatched by cmd_train */
        if (strcmp(v, "mlp") && strcmp(v, "cnn")) return bad_option(opt, v, "mlp (default), cnn or gpt");
        o->cnn = !strcmp(v, "cnn");
        return 0;
    }
    if (!strcmp(opt, "--augment")) {
        if (strcmp(v, "on") && strcmp(v, "off")) return bad_option(opt, v, "on or off");
        o->augment = !strcmp(v, "on");
        return 0;
    }
    if (!strcmp(opt, "--data")) {
        if (!*v || !set_str(o->data, sizeof o->data, v)) return bad_option(opt, v, "digits, fashion-mnist or a folder");
        o->data_given = true;
    } else if (!strcmp(opt, "--csv")) {
        if (!set_str(o->csv, sizeof o->csv, v) || !*v) return bad_option(opt, v, "a file name");
    } else if (!strcmp(opt, "--out")) {
        if (!*v || strlen(v) > PATH_CAP - 64) return bad_option(opt, v, "a folder name of 1 to 4032 bytes");
        o->out = v;
    } else if (!strcmp(opt, "--resume")) {
        if (!*v || strlen(v) > PATH_CAP - 64) return bad_option(opt, v, "a folder name of 1 to 4032 bytes");
        o->resume = v;
    } else if (!strcmp(opt, "--activation")) {
        if (!known_activation(v)) return bad_option(opt, v, "relu, tanh, gelu, sigmoid or leaky_relu");
        strcpy(o->activation, v);
    } else if (!strcmp(opt, "--optimizer")) {
        if (!known_optimizer(v)) return bad_option(opt, v, "adam, adamw or sgd");
        strcpy(o->optimizer, v);
    } else if (!strcmp(opt, "--schedule")) {
        if (strcmp(v, "cosine") && strcmp(v, "constant")) return bad_option(opt, v, "cosine or constant");
        o->cosine = !strcmp(v, "cosine");
    } else if (!strcmp(opt, "--hidden")) {
        if ((o->nhidden = to_list(v, o->hidden)) < 0) {
            char want[128];
            snprintf(want, sizeof want, "1 to %d layer sizes from 1 to %" PRId64 ", separated by commas", MAX_LAYERS,
                     MAX_HIDDEN);
            return bad_option(opt, v, want);
        }
    } else if (!strcmp(opt, "--dropout")) {
        if (!to_real(v, 0, 1, false, &o->dropout)) return bad_option(opt, v, "a number from 0 up to (not including) 1");
    } else if (!strcmp(opt, "--lr")) {
        if (!to_real(v, 0, MAX_LR, true, &o->lr)) return bad_option(opt, v, "a finite number > 0 and at most 1000");
    } else if (!strcmp(opt, "--epochs")) {
        if (!to_int(v, 1, MAX_EPOCHS, &n)) return bad_option(opt, v, "an integer from 1 to 1000000");
        o->epochs = n;
    } else if (!strcmp(opt, "--batch")) {
        if (!to_int(v, 1, MAX_BATCH, &n)) return bad_option(opt, v, "an integer from 1 to 16777216");
        o->batch = n;
    } else if (!strcmp(opt, "--seed")) {
        if (!to_u64(v, &o->seed)) return bad_option(opt, v, "an integer from 0 to 18446744073709551615");
    } else if (!strcmp(opt, "--threads")) {
        return set_threads(opt, v);
    } else {
        return -1;
    }
    return 0;
}


/* ---------------------------------------------------------- model.args --- */

static void put_escaped(FILE *f, const char *s) {
    for (; *s; s++) {
        if (*s == '\\') fputs("\\\\", f);
        else if (*s == '\n') fputs("\\n", f);
        else if (*s == '\r') fputs("\\r", f);
        else fputc(*s, f);
    }
}

static char *get_escaped(const char *s) {
    char *out = malloc(strlen(s) + 1), *o = out;
    if (!out) return NULL;
    for (; *s; s++) {
        if (*s == '\\' && (s[1] == '\\' || s[1] == 'n' || s[1] == 'r')) {
            s++;
            *o++ = *s == 'n' ? '\n' : *s == 'r' ? '\r' : '\\';
        } else {
            *o++ = *s;
        }
    }
    *o = 0;
    return out;
}

static void put_list(FILE *f, const char *key, const double *v, int64_t n) {
    fprintf(f, "%s", key);
    for (int64_t i = 0; i < n; i++) fprintf(f, "%c%.17g", i ? ',' : ' ', v[i]);
    fputc('\n', f);
}

static double *get_list(const char *s, int64_t *n) {
    int64_t cap = 1;
    for (const char *p = s; *p; p++) cap += *p == ',';
    double *v = malloc(sizeof(double) * (size_t)cap);
    if (!v) return NULL;
    int64_t k = 0;
    const char *p = s;
    for (;;) {
        char *e;
        errno = 0;
        v[k] = strtod(p, &e);
        if (e == p || errno == ERANGE || !isfinite(v[k]) || (*e && *e != ',')) break;
        k++;
        if (!*e) {
            *n = k;
            return v;
        }
        p = e + 1;
    }
    free(v);
    return NULL;
}

/* Writes path through a temporary file in the same folder and a rename, so a reader sees the old
   file or the new one, never half of one. write_fn returns nonzero on its own failure. */
static int write_atomic(const char *path, int (*write_fn)(FILE *, const run *), const run *r) {
    char tmp[PATH_CAP + 32];
    snprintf(tmp, sizeof tmp, "%s.tmp%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) return die_errno("cannot write", tmp);
    int bad = write_fn(f, r) != 0 || fflush(f) != 0 || fsync(fileno(f)) != 0 || ferror(f);
    int err = errno;
    if (fclose(f) != 0 && !bad) bad = 1, err = errno;
    if (!bad && rename(tmp, path) != 0) bad = 1, err = errno;
    if (bad) {
        unlink(tmp);
        errno = err ? err : EIO;
        return die_errno("cannot write", path);
    }
    return 0;
}

static int write_args(FILE *f, const run *r) {
    const options *o = &r->o;
    fputs("data ", f);
    put_escaped(f, o->csv[0] ? "-" : o->data);
    fputs("\ncsv ", f);
    put_escaped(f, o->csv[0] ? o->csv : "-");
    fprintf(f, "\nactivation %s\ndropout %.17g\nseed %" PRIu64 "\nhidden", o->activation, o->dropout, o->seed);
    for (int i = 0; i < o->nhidden; i++) fprintf(f, "%c%" PRId64, i ? ',' : ' ', o->hidden[i]);
    fprintf(f, "\noptimizer %s\nlr %.17g\nbatch %" PRId64 "\nschedule %s\nepochs %" PRId64 "\ndone %" PRId64
               "\nrng %" PRIu64 "\nclasses %" PRId64 "\n",
            o->optimizer, o->lr, o->batch, o->cosine ? "cosine" : "constant", o->epochs, r->done,
            r->rng_next.state, r->classes);
    fprintf(f, "model %s\naugment %d\n", o->cnn ? "cnn" : "mlp", o->augment > 0);
    for (int64_t i = 0; i < r->nnames; i++) {
        fprintf(f, "class %" PRId64 " ", i);
        put_escaped(f, r->names[i]);
        fputc('\n', f);
    }
    if (r->nstats) {
        put_list(f, "mean", r->mean, r->nstats);
        put_list(f, "std", r->std, r->nstats);
    }
    return 0;
}

static int write_history(FILE *f, const run *r) {
    fprintf(f, "epoch,train_loss,train_acc,test_loss,test_acc\n");
    for (int64_t e = 0; e < r->done; e++) {
        const double *h = r->hist + 4 * e;
        fprintf(f, "%" PRId64 ",%.17g,%.17g,%.17g,%.17g\n", e + 1, h[0], h[1], h[2], h[3]);
    }
    return 0;
}

enum { A_DATA = 1, A_CSV = 2, A_ACT = 4, A_DROP = 8, A_SEED = 16, A_HID = 32, A_OPT = 64, A_LR = 128,
       A_BATCH = 256, A_SCHED = 512, A_EPOCHS = 1024, A_DONE = 2048, A_RNG = 4096, A_CLASSES = 8192 };
#define A_MODEL (A_DATA | A_CSV | A_ACT | A_DROP | A_SEED | A_HID)
#define A_RESUME (A_MODEL | A_OPT | A_LR | A_BATCH | A_SCHED | A_EPOCHS | A_DONE | A_RNG)

/* Reads model.args into r (options, epochs done, generator, class names, statistics); need is the set
   of keys that must be there. Prints the error and returns 1 on failure. */
static int read_args(const char *path, run *r, int need) {
    FILE *f = fopen(path, "r");
    if (!f) return die_errno("cannot open the model's options", path);
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int got = 0, lineno = 0, bad = 0;
    options *o = &r->o;
    while (!bad && (len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
        char *v = strchr(line, ' ');
        if (!v) {
            bad = len > 0;
            continue;
        }
        *v++ = 0;
        const char *k = line;
        int64_t n = 0;
        if (!strcmp(k, "data") || !strcmp(k, "csv")) {
            char *u = get_escaped(v);
            bool data = k[0] == 'd';
            bad = !u || !set_str(data ? o->data : o->csv, PATH_CAP, strcmp(u, "-") ? u : data ? "digits" : "");
            got |= data ? A_DATA : A_CSV;
            free(u);
        }
        else if (!strcmp(k, "model")) bad = strcmp(v, "mlp") && strcmp(v, "cnn"), o->cnn = !strcmp(v, "cnn");
        else if (!strcmp(k, "augment")) bad = strcmp(v, "0") && strcmp(v, "1"), o->augment = !strcmp(v, "1");
        else if (!strcmp(k, "activation")) bad = !known_activation(v) || !set_str(o->activation, sizeof o->activation, v), got |= A_ACT;
        else if (!strcmp(k, "dropout")) bad = !to_real(v, 0, 1, false, &o->dropout), got |= A_DROP;
        else if (!strcmp(k, "seed")) bad = !to_u64(v, &o->seed), got |= A_SEED;
        else if (!strcmp(k, "hidden")) bad = (o->nhidden = to_list(v, o->hidden)) < 0, got |= A_HID;
        else if (!strcmp(k, "optimizer")) bad = !known_optimizer(v) || !set_str(o->optimizer, sizeof o->optimizer, v), got |= A_OPT;
        else if (!strcmp(k, "lr")) bad = !to_real(v, 0, MAX_LR, true, &o->lr), got |= A_LR;
        else if (!strcmp(k, "batch")) bad = !to_int(v, 1, MAX_BATCH, &o->batch), got |= A_BATCH;
        else if (!strcmp(k, "schedule")) bad = strcmp(v, "cosine") && strcmp(v, "constant"), o->cosine = !strcmp(v, "cosine"), got |= A_SCHED;
        else if (!strcmp(k, "epochs")) bad = !to_int(v, 1, MAX_EPOCHS, &o->epochs), got |= A_EPOCHS;
        else if (!strcmp(k, "done")) bad = !to_int(v, 0, MAX_EPOCHS, &r->done), got |= A_DONE;
        else if (!strcmp(k, "rng")) bad = !to_u64(v, &r->rng_next.state), got |= A_RNG;
        else if (!strcmp(k, "classes")) bad = !to_int(v, 1, NB_MAX_CLASSES, &r->classes), got |= A_CLASSES;
        else if (!strcmp(k, "class")) {
            char *sp = strchr(v, ' ');
            if (sp) *sp = 0;
            bad = !sp || !to_int(v, 0, NB_MAX_CLASSES - 1, &n) || n != r->nnames;
            if (!bad) {
                char **nn = realloc(r->names, sizeof(char *) * (size_t)(n + 1));
                bad = !nn;
                if (nn) r->names = nn;
                if (nn && !(nn[n] = get_escaped(sp + 1))) bad = 1;
                if (!bad) r->nnames++;
            }
        } else if (!strcmp(k, "mean") || !strcmp(k, "std")) {
            double **dst = k[0] == 'm' ? &r->mean : &r->std;
            free(*dst);
            *dst = get_list(v, &n);
            bad = !*dst || (r->nstats && n != r->nstats);
            r->nstats = n;
        }
        /* unknown keys are skipped: a newer nabla may write more */
    }
    free(line);
    fclose(f);
    if (bad) {
        fprintf(stderr, "nabla: malformed model options '%s': line %d\n", path, lineno);
        return 1;
    }
    if ((got & need) != need || (r->nstats && (!r->mean || !r->std))) {
        fprintf(stderr, "nabla: malformed model options '%s': %s\n", path,
                (need & A_DONE) && !(got & A_DONE) ? "no resume state (written by an older nabla)" : "a key is missing");
        return 1;
    }
    if (r->nnames && (!(got & A_CLASSES) || r->nnames != r->classes)) {
        fprintf(stderr, "nabla: malformed model options '%s': the class names do not match the class count\n", path);
        return 1;
    }
    return 0;
}

static int read_history(const char *path, run *r) {
    FILE *f = fopen(path, "r");
    if (!f) return die_errno("cannot open the run's history", path);
    char line[512];
    int64_t e = 0;
    int bad = !fgets(line, sizeof line, f) || strncmp(line, "epoch,", 6) != 0;
    while (!bad && e < r->done && fgets(line, sizeof line, f)) {
        double *h = r->hist + 4 * e;
        long long ep;
        bad = sscanf(line, "%lld,%lf,%lf,%lf,%lf", &ep, &h[0], &h[1], &h[2], &h[3]) != 5 || ep != e + 1;
        e++;
    }
    fclose(f);
    if (bad || e != r->done) {
        fprintf(stderr, "nabla: malformed run history '%s': want %" PRId64 " epochs\n", path, r->done);
        return 1;
    }
    return 0;
}

/* ---------------------------------------------------------------- data --- */

/* digits: pixels / 16, shuffled 80/20 split from the seed */
static int load_digits(uint64_t seed, nb_dataset *tr, nb_dataset *te) {
    int n = nabla_digits_rows, ntr = n * 4 / 5;
    int *perm = malloc(sizeof(int) * (size_t)n);
    double *x = malloc(sizeof(double) * (size_t)n * 64), *y = malloc(sizeof(double) * (size_t)n);
    int rc = -1;
    if (!perm || !x || !y) {
        nb_fail("nabla", "out of memory loading the digits");
        goto done;
    }
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
    rc = tr->x && tr->y && te->x && te->y ? 0 : -1;
done:
    free(perm);
    free(x);
    free(y);
    return rc;
}

/* A CSV (nb_load_csv_opts: header detected, integer or string labels in the last column): a seeded
   shuffled 80/20 split, then the features standardised. Training computes the statistics from its part
   and keeps them and the class names in r; eval and resume pass the saved ones, so the same names map
   to the same classes and the features are scaled as in training. */
static int load_csv(run *r, bool saved) {
    nb_dataset all;
    memset(&all, 0, sizeof all);
    nb_csv_options opt = nb_csv_defaults();
    if (saved && r->nnames) {
        opt.class_names = (const char *const *)r->names;
        opt.n_class_names = r->nnames;
    }
    if (nb_load_csv_opts(r->o.csv, &opt, NB_F32, &all) != 0) return -1;
    int rc = -1;
    nb_scope_begin();
    if (nb_dataset_split(&all, 0.2, r->o.seed ^ 0x5eed5111u /* not the model's stream */, &r->tr, &r->te) != 0)
        goto done;
    if (r->tr.n < 1 || r->te.n < 1) {
        nb_failf("nabla", "'%s' has %" PRId64 " data row%s; a training and a test part need at least 3", r->o.csv,
                 all.n, all.n == 1 ? "" : "s");
        goto done;
    }
    int64_t d = all.d;
    nb_tensor *mean = NULL, *std = NULL;
    if (!saved) {
        if (nb_dataset_feature_stats(&r->tr, &mean, &std) != 0) goto done;
        r->mean = malloc(sizeof(double) * (size_t)d);
        r->std = malloc(sizeof(double) * (size_t)d);
        if (all.class_names && !(r->names = calloc((size_t)all.classes, sizeof(char *)))) goto oom;
        if (!r->mean || !r->std) goto oom;
        r->nstats = d;
        for (int64_t k = 0; k < d; k++) r->mean[k] = nb_get(mean, &k), r->std[k] = nb_get(std, &k);
        for (int64_t i = 0; all.class_names && i < all.classes; i++, r->nnames++)
            if (!(r->names[i] = strdup(all.class_names[i]))) goto oom;
    } else {
        if (r->nstats != d) {
            nb_failf("nabla", "'%s' has %" PRId64 " features, the saved statistics %" PRId64, r->o.csv, d, r->nstats);
            goto done;
        }
        mean = nb_from_f64(NB_F32, 1, &d, r->mean);
        std = nb_from_f64(NB_F32, 1, &d, r->std);
    }
    if (nb_dataset_standardize(&r->tr, mean, std) != 0 || nb_dataset_standardize(&r->te, mean, std) != 0) goto done;
    rc = 0;
    goto done;
oom:
    nb_fail("nabla", "out of memory standardising the data");
done:
    nb_scope_end();
    nb_dataset_free(&all);
    return rc;
}

static int load_data(run *r, bool have_stats) {
    const options *o = &r->o;
    nb_clear_error();
    int rc;
    if (o->csv[0]) {
        rc = load_csv(r, have_stats);
    } else if (strcmp(o->data, "digits") == 0) {
        rc = load_digits(o->seed, &r->tr, &r->te);
    } else {
        const char *dir = strcmp(o->data, "fashion-mnist") == 0 ? "/usr/share/datasets/fashion-mnist" : o->data;
        struct stat st;
        if (stat(dir, &st) != 0) {
            nb_failf("nabla", "cannot read the data folder '%s': %s", dir, strerror(errno));
            return -1;
        }
        if (!S_ISDIR(st.st_mode)) {
            nb_failf("nabla", "'%s' is not a folder (--data takes digits, fashion-mnist or a folder of IDX files)", dir);
            return -1;
        }
        char a[PATH_CAP + 64], b[PATH_CAP + 64];
        rc = 0;
        for (int k = 0; k < 2 && rc == 0; k++) {
            const char *part = k ? "t10k" : "train";
            nb_dataset *ds = k ? &r->te : &r->tr;
            rc = -1;
            for (int gz = 1; gz >= 0 && rc != 0; gz--) {
                snprintf(a, sizeof a, "%s/%s-images-idx3-ubyte%s", dir, part, gz ? ".gz" : "");
                snprintf(b, sizeof b, "%s/%s-labels-idx1-ubyte%s", dir, part, gz ? ".gz" : "");
                if (access(a, R_OK) != 0) continue;
                nb_clear_error();
                rc = nb_load_idx(a, b, NB_F32, ds);
            }
            if (rc != 0 && !nb_last_error()) nb_failf("nabla", "no %s-images-idx3-ubyte[.gz] in '%s'", part, dir);
        }
        if (rc == 0 && r->tr.d != r->te.d)
            rc = -1, nb_failf("nabla", "the training images have %" PRId64 " pixels, the test images %" PRId64, r->tr.d,
                             r->te.d);
    }
    if (rc != 0) return -1;
    if (r->tr.n < 1 || r->te.n < 1) {
        nb_fail("nabla", "the training or the test part is empty");
        return -1;
    }
    int64_t c = r->tr.classes > r->te.classes ? r->tr.classes : r->te.classes;
    if (c < 2) {
        nb_failf("nabla", "the data has %" PRId64 " class; a classifier needs at least 2", c);
        return -1;
    }
    if (r->classes == 0) r->classes = c;
    if (c > r->classes) {
        nb_failf("nabla", "the data has %" PRId64 " classes, the model %" PRId64, c, r->classes);
        return -1;
    }
    return 0;
}

/* --------------------------------------------------------------- model --- */

static nb_module *activation(const char *name) {
    if (strcmp(name, "relu") == 0) return nb_relu_layer();
    if (strcmp(name, "tanh") == 0) return nb_tanh_layer();
    if (strcmp(name, "gelu") == 0) return nb_gelu_layer();
    if (strcmp(name, "sigmoid") == 0) return nb_sigmoid_layer();
    return nb_leaky_relu_layer(0.01);
}

/* The n modules made into r->net (in order), its parameters listed in r->params with their names; made: every
   one of them was made (else the made ones are freed). 0, or -1 with the library's error. */
static int assemble(run *r, nb_module **mods, int n, bool made) {
    if (!made) {
        for (int i = 0; i < n; i++) nb_module_free(mods[i]);
        return -1;
    }
    r->net = nb_sequential(n, mods); /* frees the modules when it fails */
    if (!r->net) return -1;
    r->np = nb_module_params(r->net, r->params, r->pnames, MAX_PARAMS);
    return r->np > 0 && r->np <= MAX_PARAMS ? 0 : -1;
}

/* Appends a module to mods while every earlier one was made. */
#define PUT(expr) (ok = ok && (mods[n++] = (expr)) != NULL)

/* --model cnn: two blocks of conv 3x3 (padding 1), batch norm, the activation and a 2x2 max pool (32 then 64
   channels), then a hidden linear layer (--hidden, default 256: the first of its sizes) with dropout
   (--dropout) and the output layer. The images are square, side s (the features' count is s^2): the
   flattened size is 64 (s/4)^2. */
static int build_cnn(run *r) {
    const options *o = &r->o;
    nb_module *mods[16];
    int n = 0;
    bool ok = true;
    int64_t s = nb_shape(r->tr.x)[2], side = s / 4, hidden = o->hidden[0];
    nb_conv2d_opts pad1 = {{1, 1}, {1, 1}, {1, 1}, 1}, none = {{0, 0}, {0, 0}, {0, 0}, 0};
    nb_clear_error();
    if (side < 1) return nb_failf("nabla", "images of %" PRId64 "x%" PRId64 " are too small for two 2x2 poolings", s, s), -1;
    for (int b = 0; b < 2; b++) {
        int64_t cin = b ? 32 : 1, cout = b ? 64 : 32;
        PUT(nb_conv2d_layer(cin, cout, 3, 3, pad1, true, NB_F32, &r->rng));
        PUT(nb_batch_norm2d_layer(cout, 1e-5, 0.1, NB_F32));
        PUT(activation(o->activation));
        PUT(nb_max_pool2d_layer(2, 2, none));
    }
    PUT(nb_flatten_layer());
    nb_init init = strcmp(o->activation, "relu") == 0 ? NB_INIT_KAIMING : NB_INIT_XAVIER;
    PUT(nb_linear(64 * side * side, hidden, true, init, NB_F32, &r->rng));
    PUT(activation(o->activation));
    if (o->dropout > 0) PUT(nb_dropout_layer(o->dropout, &r->rng));
    PUT(nb_linear(hidden, r->classes, true, NB_INIT_XAVIER, NB_F32, &r->rng));
    return assemble(r, mods, n, ok);
}

/* The MLP (or, with --model cnn, build_cnn's network). */
static int build(run *r) {
    const options *o = &r->o;
    if (o->cnn) return build_cnn(r);
    nb_module *mods[3 * MAX_LAYERS + 1];
    int n = 0;
    bool ok = true;
    int64_t prev = r->tr.d;
    nb_clear_error();
    for (int i = 0; i <= o->nhidden && ok; i++) {
        bool last = i == o->nhidden;
        int64_t width = last ? r->classes : o->hidden[i];
        nb_init init = !last && strcmp(o->activation, "relu") == 0 ? NB_INIT_KAIMING : NB_INIT_XAVIER;
        PUT(nb_linear(prev, width, true, init, NB_F32, &r->rng));
        if (last) break;
        PUT(activation(o->activation));
        if (o->dropout > 0) PUT(nb_dropout_layer(o->dropout, &r->rng));
        prev = width;
    }
    return assemble(r, mods, n, ok);
}
#undef PUT

/* Loads the data (have_stats as for load_data), then builds the model from the seed; nonzero after a message. */
static int load_and_build(run *r, bool have_stats) {
    if (load_data(r, have_stats) != 0) return die_lib("cannot load the data");
    if (r->o.cnn) { /* square images of one channel */
        int64_t s = (int64_t)floor(sqrt((double)r->tr.d) + 0.5);
        if (s * s != r->tr.d) {
            fprintf(stderr, "nabla: --model cnn needs square images; the data has %" PRId64 " features per sample\n",
                    r->tr.d);
            return 1;
        }
        nb_clear_error();
        if (nb_dataset_to_images(&r->tr, 1, s, s) != 0 || nb_dataset_to_images(&r->te, 1, s, s) != 0)
            return die_lib("cannot load the data");
    }
    nb_rng_seed(&r->rng, r->o.seed);
    if (build(r) != 0) return die_lib("cannot build the model");
    return 0;
}

static int make_optimizer(run *r) {
    const options *o = &r->o;
    nb_clear_error();
    if (!strcmp(o->optimizer, "sgd")) r->opt = nb_sgd(r->np, r->params, o->lr, 0.9, 0, false);
    else if (!strcmp(o->optimizer, "adamw")) r->opt = nb_adamw(r->np, r->params, o->lr, 0.9, 0.999, 1e-8, 0.01);
    else r->opt = nb_adam(r->np, r->params, o->lr, 0.9, 0.999, 1e-8, 0);
    return r->opt ? 0 : -1;
}

/* Mean cross-entropy and accuracy of m on ds, in eval mode, 1000 rows at a time. */
static int evaluate(nb_module *m, const nb_dataset *ds, double *loss, double *acc) {
    int64_t correct = 0;
    double sum = 0;
    int rc = 0;
    nb_module_train(m, false);
    bool was = nb_grad_enabled();
    nb_set_grad_enabled(false);
    for (int64_t lo = 0; lo < ds->n && rc == 0; lo += 1000) {
        int64_t hi = lo + 1000 < ds->n ? lo + 1000 : ds->n;
        nb_scope_begin();
        nb_tensor *y = nb_slice(ds->y, 0, lo, hi);
        nb_tensor *logits = nb_forward(m, nb_slice(ds->x, 0, lo, hi));
        nb_tensor *l = logits && y ? nb_cross_entropy(logits, y) : NULL;
        if (!l) {
            rc = -1;
        } else {
            int64_t c = nb_shape(logits)[1];
            const float *lv = nb_data(logits);
            for (int64_t i = 0; i < hi - lo; i++) {
                int64_t best = 0;
                for (int64_t k = 1; k < c; k++)
                    if (lv[i * c + k] > lv[i * c + best]) best = k;
                correct += best == (int64_t)nb_get(y, (int64_t[]){i});
            }
            sum += nb_item(l) * (double)(hi - lo);
        }
        nb_scope_end();
    }
    nb_set_grad_enabled(was);
    nb_module_train(m, true);
    *loss = sum / (double)ds->n;
    *acc = (double)correct / (double)ds->n;
    return rc;
}

/* ---------------------------------------------------------------- files --- */


static void join(char *buf, size_t cap, const char *dir, const char *name) { snprintf(buf, cap, "%s/%s", dir, name); }

/* The checkpoint, optimizer state, history and options after an epoch (model.args last). */
static int save_epoch(run *r) {
    char path[PATH_CAP + 64];
    join(path, sizeof path, r->o.out, "model.safetensors");
    nb_clear_error();
    if (nb_module_save(r->net, path) != 0) return die_lib("cannot save the checkpoint");
    join(path, sizeof path, r->o.out, "optim.safetensors");
    if (nb_optim_save(r->opt, path) != 0) return die_lib("cannot save the optimizer state");
    join(path, sizeof path, r->o.out, "history.csv");
    if (write_atomic(path, write_history, r) != 0) return 1;
    join(path, sizeof path, r->o.out, "model.args");
    return write_atomic(path, write_args, r);
}

static int write_curves(run *r) {
    int64_t n = r->done;
    double *v = malloc(sizeof(double) * 4 * (size_t)(n ? n : 1));
    if (!v) return cli_die("cannot write the curves", "out of memory");
    for (int64_t e = 0; e < n; e++)
        for (int k = 0; k < 4; k++) v[k * n + e] = r->hist[4 * e + k];
    nb_svg_series s[4] = {
        {"train loss", v + 0 * n, n, 0},
        {"test loss", v + 2 * n, n, 0},
        {"train accuracy", v + 1 * n, n, 1},
        {"test accuracy", v + 3 * n, n, 1},
    };
    /* the loss on a log axis once it spans more than a factor of 20 (it falls over decades) */
    double lmin = INFINITY, lmax = 0;
    for (int64_t e = 0; e < n; e++)
        for (int k = 0; k < 4; k += 2)
            if (isfinite(r->hist[4 * e + k]) && r->hist[4 * e + k] > 0)
                lmin = fmin(lmin, r->hist[4 * e + k]), lmax = fmax(lmax, r->hist[4 * e + k]);
    nb_svg_panel panels[2] = {{"cross-entropy loss", lmax > 20 * lmin}, {"accuracy", false}};
    char path[PATH_CAP + 64], title[PATH_CAP + 64];
    join(path, sizeof path, r->o.out, "curves.svg");
    const char *data = r->o.csv[0] ? strrchr(r->o.csv, '/') + 1 : r->o.data;
    snprintf(title, sizeof title, "nabla train: %s, %s, %s", r->o.cnn ? "CNN" : "MLP", data, r->o.optimizer);
    nb_clear_error();
    int rc = nb_svg_chart(path, title, "epoch", 2, panels, 4, s);
    free(v);
    return rc == 0 ? 0 : die_lib("cannot write the curves");
}

/* The graph of one small batch's loss, parameters named by their module paths. */
static int write_graph(run *r) {
    if (nb_module_name_params(r->net) < 0) return die_lib("cannot name the parameters");
    char path[PATH_CAP + 64];
    int rc = 0;
    nb_clear_error();
    nb_scope_begin();
    nb_tensor *x = nb_slice(r->tr.x, 0, 0, r->tr.n < 2 ? r->tr.n : 2), *y = nb_slice(r->tr.y, 0, 0, r->tr.n < 2 ? r->tr.n : 2);
    nb_set_name(x, "input");
    nb_set_name(y, "labels");
    nb_tensor *loss = x && y ? nb_cross_entropy(nb_forward(r->net, x), y) : NULL;
    nb_set_name(loss, "loss");
    if (!loss) rc = die_lib("cannot draw the graph");
    for (int k = 0; k < 2 && rc == 0; k++) {
        join(path, sizeof path, r->o.out, k ? "graph.mmd" : "graph.dot");
        FILE *f = fopen(path, "w");
        if (!f) {
            rc = die_errno("cannot write", path);
            break;
        }
        int bad = (k ? nb_graph_mermaid(loss, f) : nb_graph_dot(loss, f)) != 0;
        if (fclose(f) != 0 && !bad) rc = die_errno("cannot write", path);
        else if (bad) rc = die_lib("cannot draw the graph");
    }
    nb_scope_end();
    return rc;
}

/* --------------------------------------------------------------- train --- */

static void progress(bool tty, int64_t epoch, int64_t epochs, int64_t done, int64_t total, double loss, double acc,
                     double rate) {
    if (!tty) return;
    int w = 30, fill = total ? (int)(w * done / total) : w;
    fprintf(stderr, "\r  epoch %2" PRId64 "/%" PRId64 " [", epoch, epochs);
    for (int i = 0; i < w; i++) fputc(i < fill ? '=' : (i == fill ? '>' : ' '), stderr);
    fprintf(stderr, "] loss %.4f acc %.4f %7.0f samples/s", loss, acc, rate);
    fflush(stderr);
}

/* One epoch over r->bat; returns 0 or prints the failure. */
static int train_epoch(run *r, bool tty) {
    const options *o = &r->o;
    double sum = 0, t0 = now();
    int64_t done = 0, correct = 0, ep = r->done;
    int64_t steps_total = o->epochs * ((r->tr.n + o->batch - 1) / o->batch);
    int rc = 0;
    nb_tensor *x, *y;
    nb_clear_error();
    for (;;) {
        nb_rng before = r->rng;
        nb_scope_begin();
        if (!nb_batcher_next(r->bat, &x, &y)) {
            nb_scope_end();
            r->rng_next = before; /* the batcher has just reshuffled for the next epoch from this state */
            break;
        }
        if (o->cosine) /* cosine decay from --lr to 0 over the run */
            nb_optim_set_lr(r->opt, nb_lr_cosine(o->lr, nb_optim_steps(r->opt), 0, steps_total, 0));
        nb_optim_zero_grad(r->opt);
        if (o->cnn && o->augment > 0) x = nb_random_crop_flip(x, 2, true, &r->rng); /* NULL: the forward fails with it */
        /* under mpirun every process draws the same batch and takes its shard of it; the loss is scaled so
           that the average over the processes is the batch's mean */
        int64_t mb = x ? nb_shape(x)[0] : 0, off = 0, m = r->size > 1 ? nb_dist_shard(mb, r->rank, r->size, &off) : mb;
        if (r->size > 1) x = nb_slice(x, 0, off, off + m), y = nb_slice(y, 0, off, off + m);
        nb_tensor *logits = nb_forward(r->net, x);
        nb_tensor *loss = m > 0 ? nb_cross_entropy(logits, y) : nb_scale(nb_sum(logits), 0.0);
        bool bad;
        if (r->size > 1) {
            nb_tensor *ls = loss ? nb_scale(loss, (double)r->size * (double)m / (double)mb) : NULL;
            bad = nb_dist_any_failed(!ls) != 0 || nb_ddp_backward(r->ddp, ls) != 0 || nb_optim_step(r->opt) != 0;
        } else {
            bad = !loss || nb_backward(loss, NULL, 0) != 0 || nb_optim_step(r->opt) != 0;
        }
        if (bad) {
            nb_scope_end();
            rc = 1;
            break;
        }
        int64_t c = nb_shape(logits)[1];
        const float *lv = nb_data(logits);
        for (int64_t i = 0; i < m; i++) {
            int64_t best = 0;
            for (int64_t k = 1; k < c; k++)
                if (lv[i * c + k] > lv[i * c + best]) best = k;
            correct += best == (int64_t)nb_get(y, (int64_t[]){i});
        }
        double lval = m > 0 ? nb_item(loss) : 0.0;
        nb_scope_end();
        if (r->size > 1 && nb_dist_any_failed(!isfinite(lval)) == 1 && isfinite(lval)) {
            fprintf(stderr, "nabla: training diverged in another process in epoch %" PRId64 " (try a smaller --lr)\n",
                    ep + 1);
            return 1;
        }
        if (!isfinite(lval)) {
            fprintf(stderr, "%snabla: training diverged: the loss is %g in epoch %" PRId64 " (try a smaller --lr)\n",
                    tty ? "\n" : "", lval, ep + 1);
            return 1;
        }
        sum += lval * (double)m;
        done += m;
        progress(tty, ep + 1, o->epochs, done, r->tr.n, sum / (double)done, (double)correct / (double)done,
                 (double)done / (now() - t0));
    }
    if (tty) fputc('\n', stderr);
    if (rc != 0) return die_lib("training failed");
    double tot[3] = {sum, (double)done, (double)correct}; /* over every process's shards */
    if (r->size > 1 && nb_dist_allreduce_sum(tot, 3) != 0) return die_lib("training failed");
    sum = tot[0], done = (int64_t)tot[1], correct = (int64_t)tot[2];
    if (done != r->tr.n) return die_lib("training failed");
    double *h = r->hist + 4 * ep;
    h[0] = sum / (double)done;
    h[1] = (double)correct / (double)done;
    h[2] = h[3] = NAN; /* the test figures: the first process's */
    if (r->rank == 0 && evaluate(r->net, &r->te, &h[2], &h[3]) != 0) return die_lib("evaluation failed");
    printf("epoch %" PRId64 "/%" PRId64 "  loss %.4f  train acc %.4f  test loss %.4f  test acc %.4f  %.0f samples/s\n",
           ep + 1, o->epochs, h[0], h[1], h[2], h[3], (double)done / (now() - t0));
    fflush(stdout);
    r->done = ep + 1;
    return 0;
}

/* train --resume: the saved run in r->o.resume, continued into r->o.out up to epochs (0: as saved). */
static int resume(run *r, int64_t epochs) {
    char path[PATH_CAP + 64];
    const char *dir = r->o.resume, *out = r->o.out ? r->o.out : dir;
    join(path, sizeof path, dir, "model.safetensors");
    if (access(path, R_OK) != 0) return die_errno("no checkpoint to resume", path);
    join(path, sizeof path, dir, "model.args");
    if (read_args(path, r, A_RESUME)) return 1;
    r->o.resume = dir;
    r->o.out = out;
    if (epochs) r->o.epochs = epochs;
    if (r->o.epochs <= r->done) {
        fprintf(stderr, "nabla: '%s' has already trained %" PRId64 " epochs; give --epochs more than %" PRId64
                        " to continue\n", dir, r->done, r->done);
        return 1;
    }
    if (r->done < 1) return cli_die("nothing to resume: no complete epoch in", dir);
    return 0;
}

/* The value of --model in argv (NULL when absent). */
static const char *model_kind(int argc, char **argv) {
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--model")) return i + 1 < argc ? argv[i + 1] : "";
        if (!strncmp(argv[i], "--model=", 8)) return argv[i] + 8;
    }
    return NULL;
}

int cmd_train(int argc, char **argv) {
    const char *kind = model_kind(argc, argv);
    if (kind && !strcmp(kind, "gpt")) return cmd_train_gpt(argc, argv);
    if (kind && strcmp(kind, "mlp") && strcmp(kind, "cnn")) return bad_option("--model", kind, "mlp (default), cnn or gpt");
    run r;
    memset(&r, 0, sizeof r);
    r.rank = nb_dist_rank() > 0 ? nb_dist_rank() : 0;
    r.size = nb_dist_size() > 1 ? nb_dist_size() : 1;
    if (r.rank != 0 && !freopen("/dev/null", "w", stdout)) return cli_die("cannot quiet the output", "stdout");
    defaults(&r.o);
    bool model_opts = false;
    char first_model_opt[64] = "";
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage_train(stdout);
            return 0;
        }
        char name[64];
        const char *v;
        if (next_option(argc, argv, &i, name, sizeof name, &v)) return 1;
        if (!known_option(name)) return cli_die("unknown option (see nabla train --help)", name);
        if (!v) return cli_die("missing value for option", name);
        int rc = set_option(&r.o, name, v);
        if (rc != 0) return rc;
        if (strcmp(name, "--epochs") && strcmp(name, "--out") && strcmp(name, "--threads") && strcmp(name, "--resume"))
            if (!model_opts) model_opts = true, snprintf(first_model_opt, sizeof first_model_opt, "%s", name);
    }
    int rc = 1;
    bool fresh = !r.o.resume;
    if (!fresh) {
        if (model_opts) {
            fprintf(stderr, "nabla: %s cannot be given with --resume (the run's options are read from %s/model.args)\n",
                    first_model_opt, r.o.resume);
            return 1;
        }
        int64_t epochs = r.o.epochs;
        if (resume(&r, epochs)) goto done;
    } else {
        if (r.o.csv[0] && r.o.data_given) {
            fprintf(stderr, "nabla: --data and --csv cannot both be given (--csv trains on the CSV alone)\n");
            return 1;
        }
        bool small = strcmp(r.o.data, "digits") == 0 && !r.o.csv[0];
        if (r.o.nhidden == 0) r.o.hidden[r.o.nhidden++] = 256;
        if (r.o.epochs == 0) r.o.epochs = small ? 60 : 15;
        if (r.o.lr == 0) r.o.lr = small ? 5e-3 : 2e-3;
        if (r.o.batch == 0) r.o.batch = small ? 64 : 128;
        if (r.o.cosine < 0) r.o.cosine = !small;
        if (!r.o.out) r.o.out = "out";
        if (r.o.csv[0]) { /* eval may run from another folder */
            char *abs = realpath(r.o.csv, NULL);
            if (!abs) {
                rc = die_errno("cannot open the CSV", r.o.csv);
                goto done;
            }
            bool fits = set_str(r.o.csv, sizeof r.o.csv, abs);
            free(abs);
            if (!fits) {
                rc = cli_die("CSV path too long", r.o.csv);
                goto done;
            }
        }
    }
    if (make_out_dir(r.o.out) != 0) goto done;
    if (load_and_build(&r, !fresh) != 0) goto done;
    if (make_optimizer(&r) != 0) {
        rc = die_lib("cannot create the optimizer");
        goto done;
    }
    if (!(r.hist = calloc((size_t)r.o.epochs, 4 * sizeof(double)))) {
        rc = cli_die("cannot keep the history", "out of memory");
        goto done;
    }
    if (!fresh) {
        char path[PATH_CAP + 64];
        join(path, sizeof path, r.o.resume, "model.safetensors");
        if (nb_module_load(r.net, path) != 0) {
            rc = die_lib("cannot load the checkpoint");
            goto done;
        }
        join(path, sizeof path, r.o.resume, "optim.safetensors");
        if (nb_optim_load(r.opt, path) != 0) {
            rc = die_lib("cannot load the optimizer state");
            goto done;
        }
        int64_t per_epoch = (r.tr.n + r.o.batch - 1) / r.o.batch;
        if (nb_optim_steps(r.opt) != r.done * per_epoch) {
            fprintf(stderr, "nabla: cannot resume '%s': the optimizer state has %" PRId64 " steps, %" PRId64
                            " epochs take %" PRId64 "\n", r.o.resume, nb_optim_steps(r.opt), r.done, r.done * per_epoch);
            goto done;
        }
        join(path, sizeof path, r.o.resume, "history.csv");
        if (read_history(path, &r) != 0) goto done;
        r.rng = r.rng_next;
    }
    if (!(r.bat = nb_batcher_new(&r.tr, r.o.batch, true, &r.rng))) {
        rc = die_lib("cannot make batches");
        goto done;
    }
    if (r.size > 1) { /* every process set up: the first one's parameters everywhere, then the wrapper */
        r.synced = true;
        int other = nb_dist_any_failed(0);
        if (other != 0) {
            if (r.rank == 0) fprintf(stderr, "nabla: another process failed to set up (its message above); stopping\n");
            goto done;
        }
        nb_clear_error();
        if (nb_dist_broadcast_module(r.net) != 0 || !(r.ddp = nb_ddp_new(r.net, r.opt, (size_t)1 << 20))) {
            rc = die_lib("cannot start data-parallel training");
            goto done;
        }
        if (r.o.batch < r.size) {
            fprintf(stderr, "nabla: --batch %" PRId64 " is smaller than the %d processes\n", r.o.batch, r.size);
            goto done;
        }
    }
    printf("nabla train: %" PRId64 " training and %" PRId64 " test samples of %" PRId64 " features, %" PRId64
           " classes; %" PRId64 " parameters\n",
           r.tr.n, r.te.n, r.tr.d, r.classes, nb_module_num_params(r.net));
    if (!fresh) printf("resuming '%s' after epoch %" PRId64 "\n", r.o.resume, r.done);
    if (r.size > 1) printf("data-parallel over %d processes: each takes its part of every batch of %" PRId64 "\n", r.size,
                           r.o.batch);
    bool tty = isatty(2) && r.rank == 0;
    double t0 = now(), saved = t0;
    while (r.done < r.o.epochs) {
        if (train_epoch(&r, tty) != 0) goto done;
        /* a resumable state at the end, and on the way whenever SAVE_EVERY seconds have passed (each save
           syncs four files to disk, too slow to do after every epoch of a small model) */
        if (r.rank == 0 && (r.done == r.o.epochs || now() - saved >= SAVE_EVERY)) { /* the first process writes */
            if (save_epoch(&r) != 0) goto done;
            saved = now();
        }
    }
    double secs = now() - t0;
    if (r.rank == 0 && (write_curves(&r) != 0 || write_graph(&r) != 0)) goto done;
    const char *out = r.o.out;
    printf("trained in %.1f s; wrote %s/model.safetensors (+ model.args, optim.safetensors, history.csv), %s/curves.svg, "
           "%s/graph.dot and %s/graph.mmd\n",
           secs, out, out, out, out);
    printf("test accuracy: %.4f\n", r.hist[4 * (r.done - 1) + 3]);
    rc = 0;
done:
    if (r.size > 1 && !r.synced) nb_dist_any_failed(1); /* tell the others, waiting to start, to stop */
    run_free(&r);
    return rc;
}

/* ----------------------------------------------------------------- eval --- */

int cmd_eval(int argc, char **argv) {
    const char *ckpt = NULL;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("usage: nabla eval CHECKPOINT [--threads N]\n"
                   "  evaluates a model.safetensors written by nabla train on the test split of the data it\n"
                   "  was trained on; the model's options (and for a CSV its class names and feature\n"
                   "  statistics) are read from model.args beside the checkpoint. Prints the class names\n"
                   "  when the labels were names, then 'test accuracy: 0.XXXX'.\n"
                   "  --threads N   worker threads, 1 to 256 (results are the same for any count)\n");
            return 0;
        }
        if (strncmp(argv[i], "--", 2) == 0) {
            char name[64];
            const char *v;
            if (next_option(argc, argv, &i, name, sizeof name, &v)) return 1;
            if (strcmp(name, "--threads") != 0) return cli_die("unknown option (see nabla eval --help)", name);
            if (!v) return cli_die("missing value for option", name);
            if (set_threads(name, v)) return 1;
        } else if (!ckpt) {
            ckpt = argv[i];
        } else {
            return cli_die("usage: nabla eval CHECKPOINT [--threads N] (see nabla eval --help)", NULL);
        }
    }
    if (!ckpt) return cli_die("usage: nabla eval CHECKPOINT [--threads N] (see nabla eval --help)", NULL);
    struct stat st;
    if (stat(ckpt, &st) != 0) return die_errno("no checkpoint", ckpt);
    if (S_ISDIR(st.st_mode)) {
        errno = EISDIR;
        return die_errno("not a checkpoint", ckpt);
    }
    run r;
    memset(&r, 0, sizeof r);
    defaults(&r.o);
    char args[PATH_CAP + 64];
    const char *slash = strrchr(ckpt, '/');
    if (strlen(ckpt) > PATH_CAP) return cli_die("checkpoint path too long", NULL);
    snprintf(args, sizeof args, "%.*smodel.args", slash ? (int)(slash - ckpt + 1) : 0, ckpt);
    int rc = 1;
    if (read_args(args, &r, A_MODEL) != 0) goto done;
    if (load_and_build(&r, r.o.csv[0] != 0) != 0) goto done;
    nb_clear_error();
    if (nb_module_load(r.net, ckpt) != 0) {
        rc = die_lib("cannot load the checkpoint");
        goto done;
    }
    double loss, acc;
    if (evaluate(r.net, &r.te, &loss, &acc) != 0) {
        rc = die_lib("evaluation failed");
        goto done;
    }
    if (r.nnames) {
        printf("classes:");
        for (int64_t i = 0; i < r.nnames; i++) printf(" %" PRId64 "=%s", i, r.names[i]);
        printf("\n");
    }
    printf("test accuracy: %.4f\n", acc);
    rc = 0;
done:
    run_free(&r);
    return rc;
}

/*
 * gpt.c - `nabla train --model gpt` (a GPT on byte-level text) and `nabla generate`.
 *
 * train --model gpt --text FILE|DIR reads the text (a folder: its regular files in name order, those
 * holding a NUL byte skipped), keeps its last --val-frac as the validation part, and trains nb_gpt with
 * AdamW (GPT-2's grouping, betas 0.9 and 0.95) on random windows of ctx + 1 bytes, with a linear warmup
 * and a cosine decay to a tenth of --lr, and the gradients clipped to norm 1. Every --eval-every steps
 * and at the end it prints the validation loss: the mean over --eval-batches batches of windows drawn
 * from a generator seeded with the seed plus one, so each evaluation sees the same windows.
 *
 * What it writes into --out:
 *   model.safetensors   the parameters under GPT-2's names (nabla/gpt.h)
 *   config.json         vocab_size, n_positions, n_layer, n_head, n_embd and dropout (GPT-2's keys)
 *   history.csv         step,train_loss,val_loss (val_loss empty between evaluations)
 *   curves.svg          the training and validation loss against the step
 * and it prints a sample generated from --prompt. generate reads config.json and model.safetensors from
 * a folder (or the folder of the given model.safetensors) and continues the prompt, byte by byte as
 * the tokens come.
 */
#define _XOPEN_SOURCE 700
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nabla.h"
#include "nabla/data.h"
#include "nabla/dist.h"
#include "nabla/gpt.h"
#include "nabla/io.h"
#include "cli.h"

#define MAX_STEPS ((int64_t)1 << 40)
#define MAX_SIZE ((int64_t)1 << 20) /* ctx, dim, layers, heads, batch */
#define MAX_FILES 100000

typedef struct {
    const char *text, *out, *prompt;
    int64_t ctx, layers, heads, dim, batch, steps, warmup, eval_every, eval_batches, sample_tokens, top_k;
    double lr, dropout, val_frac, weight_decay, clip, temperature;
    uint64_t seed;
    bool cosine;
} gpt_options;

static void defaults(gpt_options *o) {
    *o = (gpt_options){.out = "out-gpt", .prompt = "\n", .ctx = 64, .layers = 4, .heads = 4, .dim = 128,
                       .batch = 16, .steps = 1000, .warmup = 100, .eval_every = 100, .eval_batches = 10,
                       .sample_tokens = 300, .top_k = 40, .lr = 2e-3, .val_frac = 0.1, .weight_decay = 0.1,
                       .clip = 1.0, .temperature = 0.8, .seed = 1, .cosine = true};
}

static void usage_train(FILE *f) {
    gpt_options d;
    defaults(&d);
    fprintf(f,
            "usage: nabla train --model gpt --text FILE|DIR [options]      (--opt value or --opt=value)\n"
            "  trains a GPT-2 style model on the bytes of a text (a folder: its text files in name order)\n"
            "  --text FILE|DIR     the text (required); its last --val-frac is kept for validation\n"
            "  --ctx N             context length in bytes (default %" PRId64 ")\n"
            "  --layers N          transformer blocks (default %" PRId64 ")\n"
            "  --heads N           attention heads (default %" PRId64 ")\n"
            "  --dim N             width, a multiple of --heads (default %" PRId64 ")\n"
            "  --dropout P         dropout, 0 <= P < 1 (default 0)\n"
            "  --batch N           windows per step (default %" PRId64 ")\n"
            "  --steps N           training steps (default %" PRId64 ")\n"
            "  --lr X              peak learning rate of AdamW (default %g)\n"
            "  --warmup N          steps of linear warmup (default %" PRId64 ")\n"
            "  --schedule NAME     cosine (default: decay to a tenth of --lr at the last step) or constant\n"
            "  --weight-decay X    AdamW's decay of the projection weights (default %g)\n"
            "  --clip X            clip the gradients' global norm to X, 0 for none (default %g)\n"
            "  --val-frac X        the part of the text kept for validation, 0 < X < 1 (default %g)\n"
            "  --eval-every N      steps between validation losses (default %" PRId64 ")\n"
            "  --eval-batches N    batches per validation loss (default %" PRId64 ")\n"
            "  --prompt TEXT       the start of the sample printed at the end (default a newline)\n"
            "  --sample-tokens N   bytes of that sample, 0 for none (default %" PRId64 ")\n"
            "  --seed N            random seed (default 1)\n"
            "  --threads N         worker threads (default NABLA_NUM_THREADS or the number of cores)\n"
            "  --out DIR           where model.safetensors, config.json, history.csv and curves.svg go\n"
            "                      (default %s)\n",
            d.ctx, d.layers, d.heads, d.dim, d.batch, d.steps, d.lr, d.warmup, d.weight_decay, d.clip, d.val_frac,
            d.eval_every, d.eval_batches, d.sample_tokens, d.out);
}

static int set_threads(const char *opt, const char *v) {
    int64_t t;
    if (!to_int(v, 1, 256, &t) || nb_set_num_threads((int)t) != 0) return bad_option(opt, v, "an integer from 1 to 256");
    return 0;
}

/* One option; 1 after printing the error, -1 for an unknown name. */
static int set_option(gpt_options *o, const char *opt, const char *v) {
    static const struct {
        const char *name;
        size_t off;
        int64_t lo, hi;
    } ints[] = {
        {"--ctx", offsetof(gpt_options, ctx), 1, MAX_SIZE},
        {"--layers", offsetof(gpt_options, layers), 1, 1000},
        {"--heads", offsetof(gpt_options, heads), 1, MAX_SIZE},
        {"--dim", offsetof(gpt_options, dim), 1, MAX_SIZE},
        {"--batch", offsetof(gpt_options, batch), 1, MAX_SIZE},
        {"--steps", offsetof(gpt_options, steps), 1, MAX_STEPS},
        {"--warmup", offsetof(gpt_options, warmup), 0, MAX_STEPS},
        {"--eval-every", offsetof(gpt_options, eval_every), 1, MAX_STEPS},
        {"--eval-batches", offsetof(gpt_options, eval_batches), 1, MAX_SIZE},
        {"--sample-tokens", offsetof(gpt_options, sample_tokens), 0, MAX_SIZE},
    };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
        if (!strcmp(opt, ints[i].name)) {
            char want[64];
            snprintf(want, sizeof want, "an integer from %" PRId64 " to %" PRId64, ints[i].lo, ints[i].hi);
            return to_int(v, ints[i].lo, ints[i].hi, (int64_t *)((char *)o + ints[i].off)) ? 0
                                                                                            : bad_option(opt, v, want);
        }
    if (!strcmp(opt, "--text")) o->text = v;
    else if (!strcmp(opt, "--out")) {
        if (!*v) return bad_option(opt, v, "a folder name");
        o->out = v;
    } else if (!strcmp(opt, "--prompt")) o->prompt = v;
    else if (!strcmp(opt, "--model")) {
        if (strcmp(v, "gpt")) return bad_option(opt, v, "gpt");
    } else if (!strcmp(opt, "--lr")) {
        if (!to_real(v, 0, 1000, true, &o->lr)) return bad_option(opt, v, "a number in (0, 1000]");
    } else if (!strcmp(opt, "--dropout")) {
        if (!to_real(v, 0, 1, false, &o->dropout)) return bad_option(opt, v, "a number in [0, 1)");
    } else if (!strcmp(opt, "--val-frac")) {
        if (!to_real(v, 0, 1, false, &o->val_frac) || o->val_frac == 0) return bad_option(opt, v, "a number in (0, 1)");
    } else if (!strcmp(opt, "--weight-decay")) {
        if (!to_real(v, 0, 1000, false, &o->weight_decay)) return bad_option(opt, v, "a number in [0, 1000)");
    } else if (!strcmp(opt, "--clip")) {
        if (!to_real(v, 0, 1e300, false, &o->clip)) return bad_option(opt, v, "a number >= 0");
    } else if (!strcmp(opt, "--schedule")) {
        if (strcmp(v, "cosine") && strcmp(v, "constant")) return bad_option(opt, v, "cosine or constant");
        o->cosine = !strcmp(v, "cosine");
    } else if (!strcmp(opt, "--seed")) {
        if (!to_u64(v, &o->seed)) return bad_option(opt, v, "an integer from 0 to 2^64-1");
    } else if (!strcmp(opt, "--threads")) return set_threads(opt, v);
    else return -1;
    return 0;
}

/* ----------------------------------------------------------------- text --- */

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The text files of dir (regular files, not links, without a NUL byte) in name order, concatenated. */
static int load_dir(const char *dir, nb_text *out) {
    DIR *d = opendir(dir);
    if (!d) return die_errno("cannot read the folder", dir);
    char **names = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        if (n == MAX_FILES) {
            rc = cli_die("more than 100000 files in the folder", dir);
            break;
        }
        if (n == cap) {
            char **m = realloc(names, sizeof *names * (cap = cap ? 2 * cap : 64));
            if (!m) {
                rc = cli_die("cannot list the folder", "out of memory");
                break;
            }
            names = m;
        }
        if (!(names[n] = malloc(strlen(dir) + strlen(e->d_name) + 2))) {
            rc = cli_die("cannot list the folder", "out of memory");
            break;
        }
        sprintf(names[n++], "%s/%s", dir, e->d_name);
    }
    closedir(d);
    qsort(names, n, sizeof *names, by_name);
    uint8_t *all = NULL;
    size_t len = 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        struct stat st;
        if (lstat(names[i], &st) != 0 || !S_ISREG(st.st_mode)) continue;
        nb_text t;
        if (nb_load_text(names[i], &t) != 0) {
            rc = die_lib("cannot read the text");
            break;
        }
        if (t.n > 0 && !memchr(t.bytes, 0, (size_t)t.n)) {
            uint8_t *m = realloc(all, len + (size_t)t.n);
            if (!m) rc = cli_die("cannot read the text", "out of memory");
            else memcpy(m + len, t.bytes, (size_t)t.n), all = m, len += (size_t)t.n;
        }
        nb_text_free(&t);
    }
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
    if (rc == 0 && nb_text_from_mem(all, len, out) != 0) rc = die_lib("cannot read the text");
    free(all);
    return rc;
}

static int load_text(const char *path, nb_text *out) {
    struct stat st;
    if (stat(path, &st) != 0) return die_errno("cannot open the text", path);
    if (S_ISDIR(st.st_mode)) return load_dir(path, out);
    return nb_load_text(path, out) == 0 ? 0 : die_lib("cannot read the text");
}

/* --------------------------------------------------------------- config --- */

static int write_config(const char *path, const nb_gpt_config *c) {
    FILE *f = fopen(path, "w");
    if (!f) return die_errno("cannot write", path);
    fprintf(f,
            "{\n  \"model_type\": \"gpt2\",\n  \"tokenizer\": \"bytes\",\n  \"vocab_size\": %" PRId64
            ",\n  \"n_positions\": %" PRId64 ",\n  \"n_layer\": %" PRId64 ",\n  \"n_head\": %" PRId64
            ",\n  \"n_embd\": %" PRId64 ",\n  \"dropout\": %.17g\n}\n",
            c->vocab, c->ctx, c->layers, c->heads, c->dim, c->dropout);
    if (fclose(f) != 0) return die_errno("cannot write", path);
    return 0;
}

/* The number after "key": in the JSON text s, or NAN. */
static double json_number(const char *s, const char *key) {
    char k[64];
    snprintf(k, sizeof k, "\"%s\"", key);
    const char *p = strstr(s, k);
    if (!p) return NAN;
    p += strlen(k);
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
    if (*p++ != ':') return NAN;
    char *e;
    double v = strtod(p, &e);
    return e == p ? NAN : v;
}

static int read_config(const char *path, nb_gpt_config *c) {
    FILE *f = fopen(path, "r");
    if (!f) return die_errno("cannot open the model's configuration", path);
    char buf[4096];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    static const char *const keys[] = {"vocab_size", "n_positions", "n_layer", "n_head", "n_embd"};
    int64_t *dst[] = {&c->vocab, &c->ctx, &c->layers, &c->heads, &c->dim};
    for (int i = 0; i < 5; i++) {
        double v = json_number(buf, keys[i]);
        if (!(v >= 1 && v <= (double)MAX_SIZE * 64 && v == floor(v))) {
            fprintf(stderr, "nabla: bad configuration '%s': \"%s\" is missing or not a positive integer\n", path,
                    keys[i]);
            return 1;
        }
        *dst[i] = (int64_t)v;
    }
    double p = json_number(buf, "dropout");
    c->dropout = p >= 0 && p < 1 ? p : 0;
    return 0;
}

/* ---------------------------------------------------------------- train --- */

typedef struct {
    gpt_options o;
    nb_text all, tr, va;
    nb_module *gpt;
    nb_optim *opt;
    nb_tensor **params;
    int np;
    double *train_loss, *val_loss; /* per step; val_loss NAN between evaluations */
    nb_rng init_rng, data_rng;
    int rank, size;  /* under mpirun: this process and the count (else 0 and 1) */
    nb_ddp *ddp;     /* size > 1: the data-parallel wrapper */
    bool synced;     /* size > 1: the processes agreed that set-up worked */
} gpt_run;

static void run_free(gpt_run *r) {
    nb_ddp_free(r->ddp);
    nb_optim_free(r->opt);
    nb_module_free(r->gpt);
    nb_text_free(&r->all), nb_text_free(&r->tr), nb_text_free(&r->va);
    free(r->params), free(r->train_loss), free(r->val_loss);
}

/* The mean loss over the batches from a generator seeded with seed + 1 (the same windows every time). */
static int validation_loss(gpt_run *r, double *loss) {
    nb_rng rng;
    nb_rng_seed(&rng, r->o.seed + 1);
    bool grad = nb_grad_enabled();
    nb_set_grad_enabled(false);
    nb_module_train(r->gpt, false);
    double sum = 0;
    int rc = 0;
    for (int64_t b = 0; b < r->o.eval_batches && rc == 0; b++) {
        nb_scope_begin();
        nb_tensor *x, *y;
        nb_tensor *l = nb_text_batch(&r->va, r->o.batch, r->o.ctx, &rng, &x, &y) == 0
                           ? nb_cross_entropy(nb_reshape(nb_forward(r->gpt, x), 2, (int64_t[]){r->o.batch * r->o.ctx, 256}),
                                              nb_reshape(y, 1, (int64_t[]){r->o.batch * r->o.ctx}))
                           : NULL;
        if (l) sum += nb_item(l);
        else rc = 1;
        nb_scope_end();
    }
    nb_module_train(r->gpt, true);
    nb_set_grad_enabled(grad);
    *loss = sum / (double)r->o.eval_batches;
    return rc;
}

static void progress(int64_t step, int64_t steps, double loss, double rate) {
    int w = 30, fill = (int)(w * step / steps);
    fprintf(stderr, "\r  step %" PRId64 "/%" PRId64 " [", step, steps);
    for (int i = 0; i < w; i++) fputc(i < fill ? '=' : (i == fill ? '>' : ' '), stderr);
    fprintf(stderr, "] loss %.4f %8.0f tokens/s", loss, rate);
    fflush(stderr);
}

static int write_history(const gpt_run *r, const char *path) {
    FILE *f = fopen(path, "w");
    if (!f) return die_errno("cannot write", path);
    fputs("step,train_loss,val_loss\n", f);
    for (int64_t s = 0; s < r->o.steps; s++) {
        fprintf(f, "%" PRId64 ",%.6f,", s + 1, r->train_loss[s]);
        if (isfinite(r->val_loss[s])) fprintf(f, "%.6f", r->val_loss[s]);
        fputc('\n', f);
    }
    if (fclose(f) != 0) return die_errno("cannot write", path);
    return 0;
}

static int on_byte(int64_t token, int64_t index, void *user) {
    (void)index, (void)user;
    putchar((int)token);
    fflush(stdout);
    return 0;
}

/* Prints prompt and its continuation of up to n bytes from gpt (the prompt's bytes must be < vocab). */
static int sample(nb_module *gpt, const char *prompt, int64_t n, double temperature, int64_t top_k, uint64_t seed) {
    const nb_gpt_config *c = nb_gpt_config_of(gpt);
    size_t len = strlen(prompt);
    if (len == 0) return cli_die("bad --prompt", "the prompt is empty (give at least one byte)");
    if ((int64_t)len > c->ctx) {
        fprintf(stderr, "nabla: the prompt has %zu bytes; the model's context is %" PRId64 "\n", len, c->ctx);
        return 1;
    }
    int64_t *ids = malloc(sizeof(int64_t) * len), *out = malloc(sizeof(int64_t) * (size_t)(n ? n : 1));
    int rc = 0;
    if (!ids || !out) rc = cli_die("cannot generate", "out of memory");
    for (size_t i = 0; rc == 0 && i < len; i++) {
        ids[i] = (unsigned char)prompt[i];
        if (ids[i] >= c->vocab) {
            fprintf(stderr, "nabla: prompt byte %" PRId64 " at %zu is outside the model's vocabulary of %" PRId64 "\n",
                    ids[i], i, c->vocab);
            rc = 1;
        }
    }
    if (rc == 0) {
        nb_gen_options g = nb_gen_defaults();
        g.temperature = temperature, g.top_k = top_k, g.seed = seed, g.on_token = on_byte;
        g.slide = true; /* a sample longer than the context goes on from the newer half of it */
        fputs(prompt, stdout);
        nb_clear_error();
        int64_t made = nb_gpt_generate(gpt, ids, (int64_t)len, n, &g, out);
        putchar('\n');
        if (made < 0) rc = die_lib("cannot generate");
    }
    free(ids), free(out);
    return rc;
}

static int train(gpt_run *r) {
    const gpt_options *o = &r->o;
    if (load_text(o->text, &r->all) != 0) return 1;
    if (r->all.n == 0) return cli_die("the text is empty", o->text);
    if (nb_text_split(&r->all, o->val_frac, &r->tr, &r->va) != 0) return die_lib("cannot split the text");
    if (r->tr.n < o->ctx + 1 || r->va.n < o->ctx + 1) {
        fprintf(stderr,
                "nabla: the text '%s' is too short: %" PRId64 " bytes give %" PRId64 " for training and %" PRId64
                " for validation, and each part needs at least --ctx + 1 = %" PRId64 "\n",
                o->text, r->all.n, r->tr.n, r->va.n, o->ctx + 1);
        return 1;
    }
    if (o->dim % o->heads != 0) {
        fprintf(stderr, "nabla: --dim %" PRId64 " is not a multiple of --heads %" PRId64 "\n", o->dim, o->heads);
        return 1;
    }
    if (make_out_dir(o->out) != 0) return 1;
    nb_gpt_config cfg = {256, o->ctx, o->layers, o->heads, o->dim, o->dropout};
    nb_rng_seed(&r->init_rng, o->seed);
    nb_rng_seed(&r->data_rng, o->seed ^ 0x5851F42D4C957F2Dull);
    nb_clear_error();
    if (!(r->gpt = nb_gpt(&cfg, NB_F32, &r->init_rng))) return die_lib("cannot build the model");
    if (!(r->opt = nb_gpt_adamw(r->gpt, o->lr, 0.9, 0.95, 1e-8, o->weight_decay)))
        return die_lib("cannot create the optimizer");
    r->np = nb_module_params(r->gpt, NULL, NULL, 0);
    r->params = malloc(sizeof *r->params * (size_t)r->np);
    r->train_loss = malloc(sizeof(double) * (size_t)o->steps);
    r->val_loss = malloc(sizeof(double) * (size_t)o->steps);
    if (!r->params || !r->train_loss || !r->val_loss) return cli_die("cannot train", "out of memory");
    nb_module_params(r->gpt, r->params, NULL, r->np);
    if (r->size > 1) { /* every process set up: the first one's parameters everywhere, then the wrapper */
        r->synced = true;
        if (nb_dist_any_failed(0) != 0) {
            if (r->rank == 0) fprintf(stderr, "nabla: another process failed to set up (its message above); stopping\n");
            return 1;
        }
        if (o->batch < r->size) {
            fprintf(stderr, "nabla: --batch %" PRId64 " is smaller than the %d processes\n", o->batch, r->size);
            return 1;
        }
        nb_clear_error();
        if (nb_dist_broadcast_module(r->gpt) != 0 || !(r->ddp = nb_ddp_new(r->gpt, r->opt, (size_t)1 << 20)))
            return die_lib("cannot start data-parallel training");
        printf("data-parallel over %d processes: each takes its part of every batch of %" PRId64 " windows\n", r->size,
               o->batch);
    }
    printf("nabla train: GPT of %" PRId64 " layers, %" PRId64 " heads, width %" PRId64 ", context %" PRId64
           " (%" PRId64 " parameters) on %" PRId64 " bytes of text (%" PRId64 " for validation)\n",
           o->layers, o->heads, o->dim, o->ctx, nb_module_num_params(r->gpt), r->all.n, r->va.n);
    fflush(stdout);
    bool tty = isatty(2) && r->rank == 0;
    double t0 = now(), since = 0, train_time = 0;
    int64_t since_n = 0, B = o->batch, T = o->ctx;
    for (int64_t s = 0; s < o->steps; s++) {
        double ts = now();
        nb_optim_set_lr(r->opt, o->cosine ? nb_lr_cosine(o->lr, s, o->warmup, o->steps, o->lr / 10)
                                          : s < o->warmup ? o->lr * (double)(s + 1) / (double)o->warmup : o->lr);
        nb_optim_zero_grad(r->opt);
        nb_scope_begin();
        nb_tensor *x, *y, *loss = NULL;
        /* every process draws the same windows and takes its part of them (the loss scaled so that the
           average over the processes is the batch's mean) */
        int64_t off = 0, m = r->size > 1 ? nb_dist_shard(B, r->rank, r->size, &off) : B;
        if (nb_text_batch(&r->tr, B, T, &r->data_rng, &x, &y) == 0) {
            if (r->size > 1) x = nb_slice(x, 0, off, off + m), y = nb_slice(y, 0, off, off + m);
            loss = nb_cross_entropy(nb_reshape(nb_forward(r->gpt, x), 2, (int64_t[]){m * T, 256}),
                                    nb_reshape(y, 1, (int64_t[]){m * T}));
        }
        int bad;
        double l = NAN;
        if (r->size > 1) {
            nb_tensor *ls = loss ? nb_scale(loss, (double)r->size * (double)m / (double)B) : NULL;
            bad = nb_dist_any_failed(!ls) != 0 || nb_ddp_backward(r->ddp, ls) != 0 ||
                  (o->clip > 0 && nb_clip_grad_norm(r->np, r->params, o->clip) < 0) || nb_optim_step(r->opt) != 0;
            if (!bad) l = nb_item(loss) * (double)m / (double)B; /* this shard's part of the batch's mean */
            bad = bad || nb_dist_allreduce_sum(&l, 1) != 0;
        } else {
            bad = !loss || nb_backward(loss, NULL, 0) != 0 ||
                  (o->clip > 0 && nb_clip_grad_norm(r->np, r->params, o->clip) < 0) || nb_optim_step(r->opt) != 0;
            if (!bad) l = nb_item(loss);
        }
        nb_scope_end();
        if (bad) {
            if (tty) fputc('\n', stderr);
            return die_lib("training failed");
        }
        if (!isfinite(l)) {
            fprintf(stderr, "%snabla: training diverged: the loss is %g at step %" PRId64 " (try a smaller --lr)\n",
                    tty ? "\n" : "", l, s + 1);
            return 1;
        }
        train_time += now() - ts;
        r->train_loss[s] = l, r->val_loss[s] = NAN;
        since += l, since_n++;
        if (tty) progress(s + 1, o->steps, since / (double)since_n, (double)((s + 1) * B * T) / train_time);
        if ((s + 1) % o->eval_every == 0 || s + 1 == o->steps) {
            if (r->rank == 0 && validation_loss(r, &r->val_loss[s]) != 0) { /* the first process's figure */
                if (tty) fputc('\n', stderr);
                return die_lib("cannot compute the validation loss");
            }
            if (tty) fputc('\n', stderr);
            printf("step %" PRId64 "/%" PRId64 "  train loss %.4f  val loss %.4f  %.0f tokens/s\n", s + 1, o->steps,
                   since / (double)since_n, r->val_loss[s], (double)((s + 1) * B * T) / train_time);
            fflush(stdout);
            since = 0, since_n = 0;
        }
    }
    double secs = now() - t0;
    if (r->rank != 0) return 0; /* the first process writes */
    char path[CLI_PATH_CAP + 64];
    snprintf(path, sizeof path, "%s/model.safetensors", o->out);
    if (nb_module_save(r->gpt, path) != 0) return die_lib("cannot save the checkpoint");
    snprintf(path, sizeof path, "%s/config.json", o->out);
    if (write_config(path, &cfg) != 0) return 1;
    snprintf(path, sizeof path, "%s/history.csv", o->out);
    if (write_history(r, path) != 0) return 1;
    snprintf(path, sizeof path, "%s/curves.svg", o->out);
    nb_svg_series series[2] = {{"train loss", r->train_loss, o->steps, 0}, {"validation loss", r->val_loss, o->steps, 0}};
    nb_svg_panel panel = {"cross-entropy (nats per byte)", false};
    char title[256];
    const char *base = strrchr(o->text, '/');
    snprintf(title, sizeof title, "nabla train --model gpt: %s", base && base[1] ? base + 1 : o->text);
    if (nb_svg_chart(path, title, "step", 1, &panel, 2, series) != 0) return die_lib("cannot write the curves");
    printf("trained in %.1f s (%.0f tokens/s); wrote %s/model.safetensors (+ config.json), %s/history.csv and "
           "%s/curves.svg\n",
           secs, (double)(o->steps * B * T) / train_time, o->out, o->out, o->out);
    printf("validation loss: %.4f\n", r->val_loss[o->steps - 1]);
    if (o->sample_tokens > 0) {
        printf("sample:\n");
        return sample(r->gpt, o->prompt, o->sample_tokens, o->temperature, o->top_k, o->seed);
    }
    return 0;
}

int cmd_train_gpt(int argc, char **argv) {
    gpt_run r;
    memset(&r, 0, sizeof r);
    defaults(&r.o);
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage_train(stdout);
            return 0;
        }
        char name[64];
        const char *v;
        if (next_option(argc, argv, &i, name, sizeof name, &v)) return 1;
        if (!v) return cli_die("missing value for option", name);
        int rc = set_option(&r.o, name, v);
        if (rc < 0) return cli_die("unknown option (see nabla train --model gpt --help)", name);
        if (rc) return rc;
    }
    if (!r.o.text) return cli_die("no text to train on", "give --text FILE or --text DIR");
    r.rank = nb_dist_rank() > 0 ? nb_dist_rank() : 0;
    r.size = nb_dist_size() > 1 ? nb_dist_size() : 1;
    if (r.rank != 0 && !freopen("/dev/null", "w", stdout)) return cli_die("cannot quiet the output", "stdout");
    int rc = train(&r);
    if (r.size > 1 && !r.synced) nb_dist_any_failed(1); /* tell the others, waiting to start, to stop */
    run_free(&r);
    return rc;
}

/* ------------------------------------------------------------- generate --- */

static void usage_generate(FILE *f) {
    fprintf(f, "usage: nabla generate CHECKPOINT --prompt TEXT [options]\n"
               "  continues TEXT with a model trained by `nabla train --model gpt`; CHECKPOINT is its --out\n"
               "  folder (or the model.safetensors in it, next to config.json)\n"
               "  --prompt TEXT       the start, 1 to ctx bytes (required)\n"
               "  --tokens N          bytes to generate (default 200); past the model's context it goes on\n"
               "                      from the newer half of it\n"
               "  --temperature X     0 takes the most likely byte; higher is more varied (default 0.8)\n"
               "  --top-k N           sample among the N most likely bytes, 0 for all (default 40)\n"
               "  --seed N            random seed (default 1)\n"
               "  --threads N         worker threads\n");
}

int cmd_generate(int argc, char **argv) {
    const char *ckpt = NULL, *prompt = NULL;
    int64_t tokens = 200, top_k = 40;
    double temperature = 0.8;
    uint64_t seed = 1;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage_generate(stdout);
            return 0;
        }
        if (strncmp(argv[i], "--", 2) != 0) {
            if (ckpt) return cli_die("more than one checkpoint given", argv[i]);
            ckpt = argv[i];
            continue;
        }
        char name[64];
        const char *v;
        if (next_option(argc, argv, &i, name, sizeof name, &v)) return 1;
        if (!v) return cli_die("missing value for option", name);
        if (!strcmp(name, "--prompt")) prompt = v;
        else if (!strcmp(name, "--tokens")) {
            if (!to_int(v, 0, MAX_SIZE * 64, &tokens)) return bad_option(name, v, "an integer from 0 to 2^26");
        } else if (!strcmp(name, "--temperature")) {
            if (!to_real(v, 0, 1000, false, &temperature)) return bad_option(name, v, "a number in [0, 1000)");
        } else if (!strcmp(name, "--top-k")) {
            if (!to_int(v, 0, MAX_SIZE * 64, &top_k)) return bad_option(name, v, "an integer >= 0");
        } else if (!strcmp(name, "--seed")) {
            if (!to_u64(v, &seed)) return bad_option(name, v, "an integer from 0 to 2^64-1");
        } else if (!strcmp(name, "--threads")) {
            if (set_threads(name, v)) return 1;
        } else return cli_die("unknown option (see nabla generate --help)", name);
    }
    if (!ckpt) return cli_die("no checkpoint given", "nabla generate CHECKPOINT --prompt TEXT");
    if (!prompt) return cli_die("no prompt given", "--prompt TEXT");
    char dir[CLI_PATH_CAP], path[CLI_PATH_CAP + 64];
    struct stat st;
    if (stat(ckpt, &st) != 0) return die_errno("cannot open the checkpoint", ckpt);
    if (strlen(ckpt) >= sizeof dir) return cli_die("checkpoint path too long", ckpt);
    strcpy(dir, ckpt);
    if (!S_ISDIR(st.st_mode)) { /* a model.safetensors: its folder */
        char *slash = strrchr(dir, '/');
        if (slash) *slash = 0;
        else strcpy(dir, ".");
    }
    nb_gpt_config cfg;
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (read_config(path, &cfg) != 0) return 1;
    cfg.dropout = 0;
    nb_rng rng;
    nb_rng_seed(&rng, seed);
    nb_clear_error();
    nb_module *gpt = nb_gpt(&cfg, NB_F32, &rng);
    if (!gpt) return die_lib("cannot build the model of the configuration");
    if (S_ISDIR(st.st_mode)) snprintf(path, sizeof path, "%s/model.safetensors", dir);
    else snprintf(path, sizeof path, "%s", ckpt);
    int rc = nb_module_load(gpt, path) == 0 ? 0 : die_lib("cannot load the checkpoint");
    if (rc == 0) rc = sample(gpt, prompt, tokens, temperature, top_k, seed);
    nb_module_free(gpt);
    return rc;
}

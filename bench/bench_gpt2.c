/*
 * bench_gpt2.c - one GPT-2 training step (forward, backward, AdamW) written from nabla's public ops
 * only, the same model as bench/peer_torch_gpt2.py (a copy of the PyTorch peer ../shared/peers/
 * torch_gpt2.py with a peak-memory figure and a --check mode), which has the shape of llm.c's
 * train_gpt2.c:
 *
 *   x = wte[idx] + wpe[0..T)                                  idx (B,T) -> x (B,T,C)
 *   L pre-LN blocks:
 *     h = layer_norm(x); qkv = h qkv_w^T + qkv_b              (B,T,3C)
 *     q, k, v = the three C-wide parts, heads split           each (B,NH,T,hs), hs = C/NH
 *     a = softmax(q k^T / sqrt(hs) + mask)                     (B,NH,T,T), mask (T,T) 0 / -inf above the diagonal
 *     x = x + proj(heads of a v joined back to (B,T,C))
 *     h = layer_norm(x); f = h fc_w^T + fc_b                  (B,T,4C)
 *     x = x + fcproj(0.5 f (1 + tanh(sqrt(2/pi) (f + 0.044715 f^3))))
 *   logits = layer_norm(x) wte^T                               (B*T,Vp), tied to the embedding
 *   loss = cross_entropy(logits, targets)                      targets < V
 *   AdamW: lr 1e-4, betas (0.9, 0.999), eps 1e-8, weight decay 0
 *
 * f32 throughout; one scope per step; the gradients are dropped (set to none) before each step, as
 * the peer's zero_grad(set_to_none=True).
 *
 * Usage: bench_gpt2 [--config small|124m] [--threads N] [--steps S] [--warmup W] [--B B] [--T T]
 *                   [--attention math|fused]   (math, the default: matmul, softmax, matmul as the peer;
 *                                                fused: nb_attention)
 *                   [--gelu math|op]           (math, the default: written out from nb_tanh; op:
 *                                                nb_gelu_tanh, as the peer's F.gelu(approximate="tanh"))
 *                   [--model ops|nb_gpt]       (ops, the default: the model above written from ops; nb_gpt:
 *                                                the library's GPT (nabla/gpt.h) of the same sizes, with
 *                                                nb_attention and nb_gelu_tanh, AdamW over its parameters)
 *        bench_gpt2 --check     the tiny check model: loss and gradient sums from a deterministic
 *                               initialisation, for bench/peer_torch_gpt2.py --check to compare
 *
 * Prints each step, "nabla gpt2_step_ms CONFIG THREADS V" (the median; bench/run.sh's table reads it),
 * "nabla gpt2_peak_mib CONFIG THREADS V" (with --model nb_gpt the label is nabla_gpt, not nabla) and a
 * RESULT line like the peer's, with
 *   peak_mib        VmHWM - VmRSS, VmHWM reset (/proc/self/clear_refs) just before the model is built;
 *   nabla_peak_mib  nabla's own peak (in use + cached + matrix-product scratch, nb_get_memory_stats);
 *   timed_system_allocs  blocks nabla took from the system allocator during the timed steps (after
 *                   the warm-up): 0 when every step is served from nabla's block cache;
 *   cpu_per_wall    CPU seconds of the process over wall seconds in the timed steps (as the peer's:
 *                   well under the thread count when other processes share the cores).
 * Nothing here asserts on time.
 */
#define _POSIX_C_SOURCE 200809L

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nabla.h"
#include "nabla/gpt.h"
#include "nabla/nn.h"
#include "timing.h"

#define PI 3.14159265358979323846

typedef struct {
    const char *name;
    int64_t maxT, V, Vp, L, NH, C;
} gpt2_config;

static const gpt2_config CONFIGS[] = {
    {"small", 256, 8192, 8192, 4, 4, 256},
    {"124m", 1024, 50257, 50304, 12, 12, 768},
    {"check", 16, 60, 64, 2, 2, 16}, /* --check: vocabulary padded as 124m's is */
};

enum { LN1W, LN1B, QKVW, QKVB, PROJW, PROJB, LN2W, LN2B, FCW, FCB, FCPW, FCPB, NPB };
static const char *const BLOCK_NAMES[NPB] = {"ln1.weight", "ln1.bias",   "qkv.weight", "qkv.bias",
                                             "attproj.weight", "attproj.bias", "ln2.weight", "ln2.bias",
                                             "fc.weight", "fc.bias", "fcproj.weight", "fcproj.bias"};

/* The parameters in the peer's model.parameters() order: wte, wpe, the blocks' NPB each, lnf.weight,
   lnf.bias. */
typedef struct {
    gpt2_config cfg;
    int n;
    nb_tensor **p;
    char (*names)[48];
    nb_tensor *mask; /* (T,T): 0 on and below the diagonal, -inf above */
    nb_optim *opt;
} gpt2;

static nb_tensor *param(gpt2 *m, int i, int rank, int64_t d0, int64_t d1, const char *name)
{
    const int64_t shape[2] = {d0, d1};
    m->p[i] = nb_new(NB_F32, rank, shape, NULL);
    snprintf(m->names[i], sizeof m->names[i], "%s", name);
    if (m->p[i]) nb_set_requires_grad(m->p[i], true);
    return m->p[i];
}

/* --attention fused: nb_attention instead of the explicit matmul, softmax, matmul (the default, as the peer). */
static bool fused_attention;
/* --gelu op: nb_gelu_tanh (as the peer's F.gelu(approximate="tanh")) instead of GELU-tanh written out from
   nb_tanh and arithmetic (the default, until the op's fused backward, one scalar pass in double, is vectorised:
   it is slower than the written-out chain today). */
static bool gelu_math = true;

/* Builds the parameters (zeros) and the mask; the caller initialises the values. */
static int gpt2_build(gpt2 *m, const gpt2_config *cfg, int64_t T)
{
    const int64_t C = cfg->C;
    m->cfg = *cfg;
    m->n = 2 + NPB * (int)cfg->L + 2;
    m->p = calloc((size_t)m->n, sizeof *m->p);
    m->names = calloc((size_t)m->n, sizeof *m->names);
    if (!m->p || !m->names) return -1;
    param(m, 0, 2, cfg->Vp, C, "wte.weight");
    param(m, 1, 2, cfg->maxT, C, "wpe.weight");
    for (int l = 0; l < cfg->L; l++) {
        const int64_t rows[NPB] = {C, C, 3 * C, 3 * C, C, C, C, C, 4 * C, 4 * C, C, C};
        const int64_t cols[NPB] = {0, 0, C, 0, C, 0, 0, 0, C, 0, 4 * C, 0};
        for (int j = 0; j < NPB; j++) {
            char name[48];
            snprintf(name, sizeof name, "blocks.%d.%s", l, BLOCK_NAMES[j]);
            param(m, 2 + NPB * l + j, cols[j] ? 2 : 1, rows[j], cols[j], name);
        }
    }
    param(m, m->n - 2, 1, C, 0, "lnf.weight");
    param(m, m->n - 1, 1, C, 0, "lnf.bias");
    for (int i = 0; i < m->n; i++)
        if (!m->p[i]) return -1;
    m->mask = nb_new(NB_F32, 2, (int64_t[]){T, T}, NULL);
    if (!m->mask) return -1;
    float *mk = nb_data(m->mask);
    for (int64_t i = 0; i < T; i++)
        for (int64_t j = 0; j < T; j++) mk[i * T + j] = j > i ? -INFINITY : 0.0f;
    m->opt = nb_adamw(m->n, m->p, 1e-4, 0.9, 0.999, 1e-8, 0.0);
    return m->opt ? 0 : -1;
}

static void gpt2_free(gpt2 *m)
{
    nb_optim_free(m->opt);
    for (int i = 0; m->p && i < m->n; i++) nb_free(m->p[i]);
    nb_free(m->mask);
    free(m->p);
    free(m->names);
}

/* The peer's initialisation: Linear and Embedding weights N(0, 0.02), biases 0, layer norms 1 and 0,
   the padded rows of wte (V..Vp) 0. */
static void init_normal(gpt2 *m, uint64_t seed)
{
    nb_rng rng;
    nb_rng_seed(&rng, seed);
    for (int i = 0; i < m->n; i++) {
        float *d = nb_data(m->p[i]);
        const int64_t n = nb_numel(m->p[i]);
        const char *nm = m->names[i];
        const size_t len = strlen(nm);
        if (strstr(nm, "ln") && strcmp(nm + len - 6, "weight") == 0) {
            for (int64_t k = 0; k < n; k++) d[k] = 1.0f;
        } else if (strcmp(nm + len - 4, "bias") == 0) {
            for (int64_t k = 0; k < n; k++) d[k] = 0.0f;
        } else {
            for (int64_t k = 0; k < n; k += 2) { /* Box-Muller, two normals per pair of uniforms */
                const double u1 = 1.0 - nb_rng_uniform(&rng), u2 = nb_rng_uniform(&rng);
                const double r = 0.02 * sqrt(-2.0 * log(u1));
                d[k] = (float)(r * cos(2 * PI * u2));
                if (k + 1 < n) d[k + 1] = (float)(r * sin(2 * PI * u2));
            }
        }
    }
    float *wte = nb_data(m->p[0]);
    for (int64_t k = m->cfg.V * m->cfg.C; k < m->cfg.Vp * m->cfg.C; k++) wte[k] = 0.0f;
}

/* The check's initialisation, computed the same way by bench/peer_torch_gpt2.py --check: element k of
   parameter i is base + amp sin(0.7 k + 1.1 i + 0.3) rounded to f32 (base 1, amp 0.1 for layer norm
   weights; base 0, amp 0.02 for biases; base 0, amp 0.1 for the other weights), wte's padded rows 0. */
static void init_check(gpt2 *m)
{
    for (int i = 0; i < m->n; i++) {
        float *d = nb_data(m->p[i]);
        const int64_t n = nb_numel(m->p[i]);
        const char *nm = m->names[i];
        const size_t len = strlen(nm);
        double base = 0.0, amp = 0.1;
        if (strstr(nm, "ln") && strcmp(nm + len - 6, "weight") == 0) base = 1.0;
        else if (strcmp(nm + len - 4, "bias") == 0) amp = 0.02;
        for (int64_t k = 0; k < n; k++) d[k] = (float)(base + amp * sin(0.7 * (double)k + 1.1 * i + 0.3));
    }
    float *wte = nb_data(m->p[0]);
    for (int64_t k = m->cfg.V * m->cfg.C; k < m->cfg.Vp * m->cfg.C; k++) wte[k] = 0.0f;
}

/* The loss of tokens idx (B*T) against targets (B*T), both NB_I64; pos holds 0..T-1. */
static nb_tensor *gpt2_loss(gpt2 *m, nb_tensor *idx, nb_tensor *targets, nb_tensor *pos, int64_t B, int64_t T)
{
    const int64_t C = m->cfg.C, NH = m->cfg.NH, hs = C / NH;
    nb_tensor **p = m->p;
    nb_tensor *tok = nb_reshape(nb_index_select(p[0], 0, idx), 3, (int64_t[]){B, T, C});
    nb_tensor *x = nb_add(tok, nb_index_select(p[1], 0, pos)); /* (B,T,C) + (T,C) */
    for (int l = 0; l < m->cfg.L; l++) {
        nb_tensor **w = p + 2 + NPB * l;
        /* attention */
        nb_tensor *h = nb_layer_norm(x, w[LN1W], w[LN1B], 1e-5);
        nb_tensor *qkv = nb_dense(h, w[QKVW], w[QKVB], NB_ACT_NONE); /* (B,T,3C) */
        qkv = nb_reshape(qkv, 5, (int64_t[]){B, T, 3, NH, hs});
        qkv = nb_permute(qkv, (int[]){2, 0, 3, 1, 4}); /* (3,B,NH,T,hs), a view */
        nb_tensor *part[3] = {NULL, NULL, NULL};
        if (nb_split(qkv, 0, 3, (int64_t[]){1, 1, 1}, part) != 0) return NULL;
        nb_tensor *q = nb_squeeze(part[0], 0), *k = nb_squeeze(part[1], 0), *v = nb_squeeze(part[2], 0);
        nb_tensor *y;
        if (fused_attention) { /* --attention fused: the same math, no (B,NH,T,T) tensor */
            y = nb_permute(nb_attention(q, k, v, NULL, true, 1.0 / sqrt((double)hs)), (int[]){0, 2, 1, 3});
        } else {
            nb_tensor *att = nb_scale(nb_matmul(q, nb_transpose(k, 2, 3)), 1.0 / sqrt((double)hs)); /* (B,NH,T,T) */
            att = nb_softmax(nb_add(att, m->mask), 3);
            y = nb_permute(nb_matmul(att, v), (int[]){0, 2, 1, 3}); /* (B,T,NH,hs) */
        }
        y = nb_reshape(nb_contiguous(y), 3, (int64_t[]){B, T, C});
        x = nb_add(x, nb_dense(y, w[PROJW], w[PROJB], NB_ACT_NONE));
        /* MLP with GELU (tanh approximation) */
        h = nb_layer_norm(x, w[LN2W], w[LN2B], 1e-5);
        nb_tensor *f = nb_dense(h, w[FCW], w[FCB], NB_ACT_NONE); /* (B,T,4C) */
        nb_tensor *g;
        if (gelu_math) { /* --gelu math: written out from nb_tanh and arithmetic */
            nb_tensor *cube = nb_mul(nb_mul(f, f), f);
            nb_tensor *t = nb_tanh(nb_scale(nb_add(f, nb_scale(cube, 0.044715)), sqrt(2.0 / PI)));
            g = nb_mul(nb_scale(f, 0.5), nb_add_scalar(t, 1.0));
        } else { /* the op, as the peer's F.gelu(approximate="tanh") */
            g = nb_gelu_tanh(f);
        }
        x = nb_add(x, nb_dense(g, w[FCPW], w[FCPB], NB_ACT_NONE));
    }
    x = nb_layer_norm(x, p[m->n - 2], p[m->n - 1], 1e-5);
    nb_tensor *logits = nb_dense(nb_reshape(x, 2, (int64_t[]){B * T, C}), p[0], NULL, NB_ACT_NONE); /* (B*T,Vp) */
    return nb_cross_entropy(logits, targets);
}

/* --model nb_gpt: the library's model (NULL: the model written from ops). */
static nb_module *lib_gpt;

/* One training step in its own scope; the loss goes to *loss. */
static int gpt2_step(gpt2 *m, nb_tensor *idx, nb_tensor *targets, nb_tensor *pos, int64_t B, int64_t T,
                     double *loss)
{
    nb_scope_begin();
    nb_optim_zero_grad(m->opt);
    nb_tensor *l = lib_gpt ? nb_cross_entropy(nb_reshape(nb_forward(lib_gpt, nb_reshape(idx, 2, (int64_t[]){B, T})),
                                                         2, (int64_t[]){B * T, m->cfg.Vp}),
                                              targets)
                           : gpt2_loss(m, idx, targets, pos, B, T);
    int rc = l && nb_backward(l, NULL, 0) == 0 && nb_optim_step(m->opt) == 0 ? 0 : -1;
    if (rc == 0) *loss = nb_item(l);
    nb_scope_end();
    return rc;
}

/* Seconds of CPU time of the whole process (every thread). */
static double cpu_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int fail(const char *what)
{
    const char *e = nb_last_error();
    printf("# %s failed: %s\n", what, e ? e : "(no message)");
    return 1;
}

/* Tokens and targets for `steps` steps: (B*T) NB_I64 each, outside every scope. */
static int make_tokens(nb_tensor **idx, nb_tensor **tgt, int n, int64_t B, int64_t T, int64_t V, bool check)
{
    nb_rng rng;
    nb_rng_seed(&rng, 1);
    for (int s = 0; s < n; s++) {
        idx[s] = nb_new(NB_I64, 1, (int64_t[]){B * T}, NULL);
        tgt[s] = nb_new(NB_I64, 1, (int64_t[]){B * T}, NULL);
        if (!idx[s] || !tgt[s]) return -1;
        int64_t *xi = nb_data(idx[s]), *yi = nb_data(tgt[s]);
        for (int64_t b = 0; b < B; b++) {
            int64_t prev = check ? (b * 31 + 5) % V : (int64_t)(nb_rng_next(&rng) % (uint64_t)V);
            for (int64_t t = 0; t < T; t++) {
                const int64_t next = check ? (b * 31 + (t + 1) * 17 + 5) % V : (int64_t)(nb_rng_next(&rng) % (uint64_t)V);
                xi[b * T + t] = prev;
                yi[b * T + t] = next;
                prev = next;
            }
        }
    }
    return 0;
}

/* --check: the loss, the sums of each gradient (plain, absolute, and weighted by sin(k)), and the
   loss after one AdamW step, as "check KEY VALUE" lines. */
static int run_check(void)
{
    const gpt2_config *cfg = &CONFIGS[2];
    const int64_t B = 2, T = 8;
    gpt2 m = {0};
    nb_tensor *idx[1] = {NULL}, *tgt[1] = {NULL};
    nb_tensor *pos = nb_new(NB_I64, 1, (int64_t[]){T}, NULL);
    if (gpt2_build(&m, cfg, T) != 0 || !pos || make_tokens(idx, tgt, 1, B, T, cfg->V, true) != 0)
        return fail("check setup");
    for (int64_t t = 0; t < T; t++) ((int64_t *)nb_data(pos))[t] = t;
    init_check(&m);
    printf("# check model: maxT %lld V %lld Vp %lld L %lld NH %lld C %lld, B %lld T %lld\n", (long long)cfg->maxT,
           (long long)cfg->V, (long long)cfg->Vp, (long long)cfg->L, (long long)cfg->NH, (long long)cfg->C,
           (long long)B, (long long)T);
    nb_scope_begin();
    nb_tensor *l = gpt2_loss(&m, idx[0], tgt[0], pos, B, T);
    if (!l || nb_backward(l, NULL, 0) != 0) return fail("check step");
    printf("check loss0 %.9e\n", nb_item(l));
    for (int i = 0; i < m.n; i++) {
        nb_tensor *g = nb_grad(m.p[i]);
        const float *d = g ? nb_data(g) : NULL;
        double s = 0, a = 0, w = 0;
        for (int64_t k = 0; d && k < nb_numel(g); k++) {
            s += d[k];
            a += fabs(d[k]);
            w += d[k] * sin((double)k);
        }
        printf("check grad %s %.9e %.9e %.9e\n", m.names[i], s, a, w);
    }
    if (nb_optim_step(m.opt) != 0) return fail("check update");
    nb_scope_end();
    double loss1 = 0;
    if (gpt2_step(&m, idx[0], tgt[0], pos, B, T, &loss1) != 0) return fail("check second step");
    printf("check loss1 %.9e\n", loss1);
    gpt2_free(&m);
    nb_free(idx[0]);
    nb_free(tgt[0]);
    nb_free(pos);
    return 0;
}

int main(int argc, char **argv)
{
    const gpt2_config *cfg = &CONFIGS[0];
    int threads = 1, steps = 10, warmup = 3;
    int64_t B = 4, T = 64;
    bool use_lib = false;
    for (int i = 1; i < argc; i += 2) { /* every option but --check takes a value */
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--check") == 0) return run_check();
        if (strcmp(a, "--config") == 0 && v && strcmp(v, "small") == 0) cfg = &CONFIGS[0];
        else if (strcmp(a, "--config") == 0 && v && strcmp(v, "124m") == 0) cfg = &CONFIGS[1];
        else if (strcmp(a, "--threads") == 0 && v && atoi(v) > 0) threads = atoi(v);
        else if (strcmp(a, "--steps") == 0 && v && atoi(v) > 0) steps = atoi(v);
        else if (strcmp(a, "--warmup") == 0 && v && atoi(v) >= 0) warmup = atoi(v);
        else if (strcmp(a, "--B") == 0 && v && atoi(v) > 0) B = atoi(v);
        else if (strcmp(a, "--T") == 0 && v && atoi(v) > 0) T = atoi(v);
        else if (strcmp(a, "--attention") == 0 && v && (strcmp(v, "fused") == 0 || strcmp(v, "math") == 0))
            fused_attention = strcmp(v, "fused") == 0;
        else if (strcmp(a, "--gelu") == 0 && v && (strcmp(v, "op") == 0 || strcmp(v, "math") == 0))
            gelu_math = strcmp(v, "math") == 0;
        else if (strcmp(a, "--model") == 0 && v && (strcmp(v, "ops") == 0 || strcmp(v, "nb_gpt") == 0))
            use_lib = strcmp(v, "nb_gpt") == 0;
        else {
            fprintf(stderr, "usage: %s [--config small|124m] [--threads N] [--steps S] [--warmup W] [--B B] [--T T]\n"
                            "       [--attention math|fused] [--gelu math|op] [--model ops|nb_gpt]\n"
                            "       %s --check\n", argv[0], argv[0]);
            return 2;
        }
    }
    if (T > cfg->maxT) {
        fprintf(stderr, "%s: T %lld exceeds the config's %lld positions\n", argv[0], (long long)T,
                (long long)cfg->maxT);
        return 2;
    }
    if (nb_set_num_threads(threads) != 0) return fail("nb_set_num_threads");

    /* VmHWM from here: the model, its optimizer state, the data and the steps. */
    FILE *f = fopen("/proc/self/clear_refs", "w");
    const bool hwm_ok = f && fputs("5", f) >= 0 && fclose(f) == 0;
    if (f && !hwm_ok) f = NULL;
    const long base = bench_status_kib("VmRSS");

    gpt2 m = {0};
    const int n = warmup + steps;
    nb_tensor **idx = calloc((size_t)n, sizeof *idx), **tgt = calloc((size_t)n, sizeof *tgt);
    nb_tensor *pos = nb_new(NB_I64, 1, (int64_t[]){T}, NULL);
    double *ms = malloc(sizeof(double) * (size_t)steps);
    if (!idx || !tgt || !ms || !pos || make_tokens(idx, tgt, n, B, T, cfg->V, false) != 0) return fail("setup");
    int64_t nparams = 0;
    nb_rng rng;
    nb_rng_seed(&rng, 1);
    if (use_lib) { /* the library's GPT: its own initialisation, AdamW as the peer's */
        m.cfg = *cfg;
        nb_gpt_config gc = {cfg->Vp, cfg->maxT, cfg->L, cfg->NH, cfg->C, 0.0};
        if (!(lib_gpt = nb_gpt(&gc, NB_F32, &rng)) || !(m.opt = nb_gpt_adamw(lib_gpt, 1e-4, 0.9, 0.999, 1e-8, 0.0)))
            return fail("nb_gpt");
        nparams = nb_module_num_params(lib_gpt);
        printf("# model: nb_gpt (nabla/gpt.h)\n");
    } else {
        if (gpt2_build(&m, cfg, T) != 0) return fail("setup");
        init_normal(&m, 0);
        for (int i = 0; i < m.n; i++) nparams += nb_numel(m.p[i]);
    }
    for (int64_t t = 0; t < T; t++) ((int64_t *)nb_data(pos))[t] = t;
    printf("# nabla %d.%d.%d threads=%d config=%s maxT=%lld V=%lld Vp=%lld L=%lld NH=%lld C=%lld params=%lld B=%lld "
           "T=%lld\n",
           NABLA_VERSION_MAJOR, NABLA_VERSION_MINOR, NABLA_VERSION_PATCH, nb_num_threads(), cfg->name,
           (long long)cfg->maxT, (long long)cfg->V, (long long)cfg->Vp, (long long)cfg->L, (long long)cfg->NH,
           (long long)cfg->C, (long long)nparams, (long long)B, (long long)T);
    if (fused_attention) printf("# attention fused (nb_attention)\n");
    if (!gelu_math) printf("# GELU by nb_gelu_tanh\n");
    fflush(stdout);

    nb_memory_stats st0 = {0}, st1;
    double cpu0 = cpu_seconds(), wall0 = bench_now();
    for (int s = 0; s < n; s++) {
        if (s == warmup) {
            nb_get_memory_stats(&st0);
            cpu0 = cpu_seconds();
            wall0 = bench_now();
        }
        double loss = 0;
        const double t0 = bench_now();
        if (gpt2_step(&m, idx[s], tgt[s], pos, B, T, &loss) != 0) return fail("step");
        const double dt = (bench_now() - t0) * 1e3;
        if (s >= warmup) ms[s - warmup] = dt;
        printf("step %d: loss %.4f (%.1f ms)%s\n", s, loss, dt, s < warmup ? " [warmup]" : "");
        fflush(stdout);
    }
    nb_get_memory_stats(&st1);
    const double cpu_per_wall = (cpu_seconds() - cpu0) / (bench_now() - wall0);
    const long hwm = bench_status_kib("VmHWM");
    double lo = ms[0], hi = ms[0];
    for (int s = 1; s < steps; s++) {
        lo = ms[s] < lo ? ms[s] : lo;
        hi = ms[s] > hi ? ms[s] : hi;
    }
    const double med = bench_median(ms, steps);
    const double peak = hwm_ok && base >= 0 && hwm >= 0 ? (hwm - base) / 1024.0 : -1;
    const long long timed_allocs = (long long)(st1.system_allocs - st0.system_allocs);
    printf("# memory: nabla peak (in use + cached + scratch) %.1f MiB, cached at end %.1f MiB, %lld blocks from "
           "the system in all, %lld during the %d timed steps, %lld given back during them\n",
           st1.peak / 1048576.0, st1.cached / 1048576.0, (long long)st1.system_allocs, timed_allocs, steps,
           (long long)(st1.system_frees - st0.system_frees));
    const char *who = lib_gpt ? "nabla_gpt" : "nabla";
    printf("%s gpt2_step_ms %s %d %.3f\n", who, cfg->name, threads, med);
    if (peak >= 0) printf("%s gpt2_peak_mib %s %d %.1f\n", who, cfg->name, threads, peak);
    printf("%s gpt2_timed_allocs %s %d %lld\n", who, cfg->name, threads, timed_allocs);
    printf("RESULT config=%s threads=%d median_ms=%.1f min_ms=%.1f max_ms=%.1f peak_mib=%.1f nabla_peak_mib=%.1f "
           "timed_system_allocs=%lld cpu_per_wall=%.2f\n",
           cfg->name, threads, med, lo, hi, peak, st1.peak / 1048576.0, timed_allocs, cpu_per_wall);

    if (lib_gpt) {
        nb_optim_free(m.opt);
        nb_module_free(lib_gpt);
    } else
        gpt2_free(&m);
    for (int s = 0; s < n; s++) {
        nb_free(idx[s]);
        nb_free(tgt[s]);
    }
    nb_free(pos);
    free(idx);
    free(tgt);
    free(ms);
    return 0;
}

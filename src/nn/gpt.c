/*
 * gpt.c - a GPT-2 model (nabla/gpt.h) as a tree of modules of the open
 * module class, built only on the public API.
 *
 *     GPT                  wte, wpe (Embedding), h (Sequential of Block), ln_f (LayerNorm)
 *     Block                ln_1, attn (CausalSelfAttention), ln_2, mlp (MLP)
 *     CausalSelfAttention  c_attn, c_proj (Conv1D)
 *     MLP                  c_fc, c_proj (Conv1D)
 *
 * A Conv1D keeps GPT-2's (in, out) weight and runs as nb_dense over a
 * transposed view of it: nb_dense reads the weight through its strides, so
 * no copy is made and the values are those of nb_matmul(x, W) + b. The head
 * is nb_dense(x, wte) with no parameter of its own. Every module shares the
 * root's state (the configuration and the dropout rng); only the root frees
 * it.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../../include/nabla/gpt.h"

typedef struct {
    nb_gpt_config cfg;
    nb_rng *rng;
} gpt_state;

static gpt_state *st(nb_module *m) { return nb_module_state(m); }

static nb_tensor *drop(nb_module *m, nb_tensor *x) {
    gpt_state *s = st(m);
    if (!x || s->cfg.dropout == 0) return x;
    return nb_dropout(x, s->cfg.dropout, nb_module_training(m), s->rng);
}

/* ---------------------------------------------------------------- layers */

static nb_tensor *fwd_conv1d(nb_module *m, nb_tensor *x) {
    nb_tensor *w = nb_module_param(m, "weight"), *b = nb_module_param(m, "bias");
    return nb_dense(x, nb_transpose(w, 0, 1), b, NB_ACT_NONE);
}
static const nb_module_class conv1d_class = {.kind = "Conv1D", .forward = fwd_conv1d};

static nb_tensor *fwd_embedding(nb_module *m, nb_tensor *ids) {
    nb_tensor *table = nb_module_param(m, "weight");
    int64_t n = nb_numel(ids), r = nb_rank(ids), shape[NB_MAX_RANK];
    if (r >= NB_MAX_RANK) return nb_fail("nb_forward", "Embedding: ids have too high a rank");
    memcpy(shape, nb_shape(ids), sizeof(int64_t) * (size_t)r);
    shape[r] = nb_shape(table)[1];
    return nb_reshape(nb_index_select(table, 0, nb_reshape(ids, 1, &n)), (int)r + 1, shape);
}
static const nb_module_class embedding_class = {.kind = "Embedding", .forward = fwd_embedding};

/* x (B, T, C) -> (B, T, C): causal self-attention over `heads` heads, then the output projection. With a
   cache (kc, vc: (B, NH, ctx, hs), holding len positions), x holds positions len .. len + T - 1: their keys
   and values are written into the cache and the queries attend to all len + T positions. */
static nb_tensor *attn_core(nb_module *m, nb_tensor *x, nb_tensor *kc, nb_tensor *vc, int64_t len) {
    if (!x) return NULL;
    const nb_gpt_config *c = &st(m)->cfg;
    int64_t B = nb_shape(x)[0], T = nb_shape(x)[1], C = c->dim, NH = c->heads, hs = C / NH;
    nb_tensor *qkv = nb_forward(nb_module_child(m, "c_attn"), x); /* (B, T, 3C): q, k, v */
    if (!qkv) return NULL;
    /* q, k, v as (B, 1, NH, T, hs) views of qkv seen as (B, T, 3, NH, hs): split before the permute, so that in the
       backward their gradients are added into one table in qkv's own layout (no copy back into it) */
    nb_tensor *part[3] = {NULL, NULL, NULL};
    if (nb_split(nb_reshape(qkv, 5, (int64_t[]){B, T, 3, NH, hs}), 2, 3, (int64_t[]){1, 1, 1}, part) != 0) return NULL;
    nb_tensor *q = nb_permute(part[0], (int[]){0, 2, 3, 1, 4}), *k = nb_permute(part[1], (int[]){0, 2, 3, 1, 4}),
              *v = nb_permute(part[2], (int[]){0, 2, 3, 1, 4});
    if (kc) { /* append, then attend to the whole cached prefix: (B, NH, T, hs) */
        const int64_t sh4[4] = {B, NH, T, hs};
        q = nb_reshape(q, 4, sh4), k = nb_reshape(k, 4, sh4), v = nb_reshape(v, 4, sh4);
        if (nb_copy_(nb_slice(kc, 2, len, len + T), k) != 0 || nb_copy_(nb_slice(vc, 2, len, len + T), v) != 0)
            return NULL;
        k = nb_slice(kc, 2, 0, len + T), v = nb_slice(vc, 2, 0, len + T);
    }
    nb_tensor *y = nb_attention(q, k, v, NULL, true, 1.0 / sqrt((double)hs)); /* (B, [1,] NH, T, hs) */
    y = nb_permute(y, kc ? (int[]){0, 2, 1, 3} : (int[]){0, 3, 1, 2, 4});
    y = nb_reshape(nb_contiguous(y), 3, (int64_t[]){B, T, C});
    if (!y) return NULL;
    return drop(m, nb_forward(nb_module_child(m, "c_proj"), y));
}
static nb_tensor *fwd_attn(nb_module *m, nb_tensor *x) { return attn_core(m, x, NULL, NULL, 0); }
static const nb_module_class attn_class = {.kind = "CausalSelfAttention", .forward = fwd_attn};

static nb_tensor *fwd_mlp(nb_module *m, nb_tensor *x) {
    nb_tensor *h = nb_gelu_tanh(nb_forward(nb_module_child(m, "c_fc"), x));
    if (!h) return NULL;
    return drop(m, nb_forward(nb_module_child(m, "c_proj"), h));
}
static const nb_module_class mlp_class = {.kind = "MLP", .forward = fwd_mlp};

static nb_tensor *block_core(nb_module *m, nb_tensor *x, nb_tensor *kc, nb_tensor *vc, int64_t len) {
    nb_tensor *a = attn_core(nb_module_child(m, "attn"), nb_forward(nb_module_child(m, "ln_1"), x), kc, vc, len);
    if (!a) return NULL;
    x = nb_add(x, a);
    nb_tensor *f = x ? nb_forward(nb_module_child(m, "mlp"), nb_forward(nb_module_child(m, "ln_2"), x)) : NULL;
    return f ? nb_add(x, f) : NULL;
}
static nb_tensor *fwd_block(nb_module *m, nb_tensor *x) { return block_core(m, x, NULL, NULL, 0); }
static const nb_module_class block_class = {.kind = "Block", .forward = fwd_block};

/* ------------------------------------------------------------------ root */

/* The tokens (B, T) checked (NB_I64, ids in [0, vocab), 1 <= T and pos + T <= ctx) as a contiguous
   tensor, or NULL with an error of fn. */
static nb_tensor *check_tokens(const char *fn, const nb_gpt_config *c, nb_tensor *tokens, int64_t pos) {
    if (nb_dtype_of(tokens) != NB_I64 || nb_rank(tokens) != 2) {
        char s[128];
        return nb_failf(fn, "GPT: tokens must be a (B, T) NB_I64 tensor, not %s %s",
                        nb_dtype_of(tokens) == NB_I64 ? "i64" : nb_dtype_of(tokens) == NB_F32 ? "f32" : "f64",
                        nb_shape_str(nb_rank(tokens), nb_shape(tokens), s, sizeof s));
    }
    int64_t B = nb_shape(tokens)[0], T = nb_shape(tokens)[1];
    if (B < 1 || T < 1 || T > c->ctx - pos) {
        if (pos > 0)
            return nb_failf(fn, "GPT: %lld new tokens after the %lld cached ones exceed ctx %lld", (long long)T,
                            (long long)pos, (long long)c->ctx);
        return nb_failf(fn, "GPT: tokens are (%lld, %lld); need B >= 1 and 1 <= T <= ctx %lld", (long long)B,
                        (long long)T, (long long)c->ctx);
    }
    nb_tensor *ids = nb_contiguous(tokens);
    const int64_t *d = ids ? nb_data(ids) : NULL;
    if (!d) return ids ? nb_fail(fn, "GPT: cannot read the tokens (not in host memory)") : NULL;
    for (int64_t i = 0; i < B * T; i++)
        if (d[i] < 0 || d[i] >= c->vocab)
            return nb_failf(fn, "GPT: token %lld at (%lld, %lld) is outside [0, vocab %lld)", (long long)d[i],
                            (long long)(i / T), (long long)(i % T), (long long)c->vocab);
    return ids;
}

/* The logits of ids (B, T) at positions pos .. pos + T - 1; with a cache (kc, vc: one per layer). last:
   only the last position's logits, (B, 1, vocab). */
static nb_tensor *run_gpt(nb_module *m, nb_tensor *ids, nb_tensor *const *kc, nb_tensor *const *vc, int64_t pos,
                          bool last) {
    const nb_gpt_config *c = &st(m)->cfg;
    int64_t T = nb_shape(ids)[1];
    nb_tensor *wte = nb_module_param(m, "wte.weight"), *wpe = nb_module_param(m, "wpe.weight");
    nb_tensor *x = nb_add(nb_forward(nb_module_child(m, "wte"), ids), nb_slice(wpe, 0, pos, pos + T)); /* (B,T,C) */
    x = drop(m, x);
    if (!x) return NULL;
    if (!kc) x = nb_forward(nb_module_child(m, "h"), x);
    else
        for (int64_t i = 0; x && i < c->layers; i++) {
            char name[32];
            snprintf(name, sizeof name, "h.%lld", (long long)i);
            x = block_core(nb_module_child(m, name), x, kc[i], vc[i], pos);
        }
    if (x && last) x = nb_slice(x, 1, T - 1, T);
    x = nb_forward(nb_module_child(m, "ln_f"), x);
    return x ? nb_dense(x, wte, NULL, NB_ACT_NONE) : NULL; /* tied head: x wte^T */
}

static nb_tensor *fwd_gpt(nb_module *m, nb_tensor *tokens) {
    nb_tensor *ids = check_tokens("nb_forward", &st(m)->cfg, tokens, 0);
    return ids ? run_gpt(m, ids, NULL, NULL, 0, false) : NULL;
}
static const nb_module_class gpt_class = {.kind = "GPT", .forward = fwd_gpt, .free_state = nb_dealloc};

/* -------------------------------------------------------------- building */

/* Register t (NULL: a failed creation, its error kept) and drop the caller's handle. */
static int add(nb_module *m, const char *name, nb_tensor *t) {
    if (!t) return -1;
    int rc = nb_module_add_param(m, name, t);
    nb_free(t);
    return rc;
}

static nb_tensor *normal(nb_dtype dt, int64_t rows, int64_t cols, double sd, nb_rng *rng) {
    nb_tensor *t = nb_randn(dt, 2, (int64_t[]){rows, cols}, rng);
    if (!t) return NULL;
    void *p = nb_data(t);
    for (int64_t i = 0, n = rows * cols; i < n; i++)
        if (dt == NB_F32) ((float *)p)[i] = (float)(((float *)p)[i] * sd);
        else ((double *)p)[i] *= sd;
    return t;
}

/* A child made by make (NULL: its error kept), added to m as name; 0 or -1. */
static int child(nb_module *m, const char *name, nb_module *k) {
    if (!k) return -1;
    if (nb_module_add_child(m, name, k) != 0) {
        nb_module_free(k);
        return -1;
    }
    return 0;
}

static nb_module *conv1d(gpt_state *s, int64_t in, int64_t out, double sd, nb_dtype dt) {
    nb_module *m = nb_module_new(&conv1d_class, s);
    if (m && (add(m, "weight", normal(dt, in, out, sd, s->rng)) != 0 ||
              add(m, "bias", nb_full(dt, 1, (int64_t[]){out}, 0.0)) != 0)) {
        nb_module_free(m);
        return NULL;
    }
    return m;
}

static nb_module *pair(const nb_module_class *cls, gpt_state *s, const char *n1, nb_module *a, const char *n2,
                       nb_module *b) {
    nb_module *m = a && b ? nb_module_new(cls, s) : NULL;
    if (!m) {
        nb_module_free(a), nb_module_free(b);
        return NULL;
    }
    if (child(m, n1, a) != 0) {
        nb_module_free(b);
        nb_module_free(m);
        return NULL;
    }
    if (child(m, n2, b) != 0) {
        nb_module_free(m);
        return NULL;
    }
    return m;
}

static nb_module *block(gpt_state *s, nb_dtype dt) {
    int64_t C = s->cfg.dim;
    double sd = 0.02, sdr = 0.02 / sqrt(2.0 * (double)s->cfg.layers);
    nb_module *m = nb_module_new(&block_class, s);
    if (!m) return NULL;
    if (child(m, "ln_1", nb_layer_norm_layer(C, 1e-5, dt)) != 0 ||
        child(m, "attn", pair(&attn_class, s, "c_attn", conv1d(s, C, 3 * C, sd, dt), "c_proj",
                              conv1d(s, C, C, sdr, dt))) != 0 ||
        child(m, "ln_2", nb_layer_norm_layer(C, 1e-5, dt)) != 0 ||
        child(m, "mlp", pair(&mlp_class, s, "c_fc", conv1d(s, C, 4 * C, sd, dt), "c_proj",
                             conv1d(s, 4 * C, C, sdr, dt))) != 0) {
        nb_module_free(m);
        return NULL;
    }
    return m;
}

static nb_module *embedding(gpt_state *s, int64_t n, int64_t d, nb_dtype dt) {
    nb_module *m = nb_module_new(&embedding_class, s);
    if (m && add(m, "weight", normal(dt, n, d, 0.02, s->rng)) != 0) {
        nb_module_free(m);
        return NULL;
    }
    return m;
}

nb_module *nb_gpt(const nb_gpt_config *cfg, nb_dtype dt, nb_rng *rng) {
    const char *fn = "nb_gpt";
    if (!cfg || !rng) return nb_fail(fn, "cfg or rng is NULL");
    const nb_gpt_config *c = cfg;
    if (c->vocab <= 0 || c->ctx <= 0 || c->layers <= 0 || c->heads <= 0 || c->dim <= 0 || c->dim % c->heads != 0)
        return nb_failf(fn, "sizes vocab %lld, ctx %lld, layers %lld, heads %lld, dim %lld: each must be positive "
                            "and dim a multiple of heads",
                        (long long)c->vocab, (long long)c->ctx, (long long)c->layers, (long long)c->heads,
                        (long long)c->dim);
    if (c->layers > 100000 || c->dim > ((int64_t)1 << 40) / 4 || c->vocab > ((int64_t)1 << 40) ||
        c->ctx > ((int64_t)1 << 40))
        return nb_failf(fn, "sizes vocab %lld, ctx %lld, layers %lld, dim %lld are too large", (long long)c->vocab,
                        (long long)c->ctx, (long long)c->layers, (long long)c->dim);
    if (!(c->dropout >= 0 && c->dropout < 1)) return nb_failf(fn, "dropout %g is not in [0, 1)", c->dropout);
    if (dt != NB_F32 && dt != NB_F64) return nb_failf(fn, "dtype %d is not NB_F32 or NB_F64", (int)dt);
    gpt_state *s = nb_alloc(fn, sizeof *s);
    if (!s) return NULL;
    *s = (gpt_state){*c, rng};
    nb_module *m = nb_module_new(&gpt_class, s);
    if (!m) {
        nb_dealloc(s);
        return NULL;
    }
    nb_module **blocks = nb_alloc_zeroed(fn, (size_t)c->layers, sizeof *blocks);
    int rc = blocks ? 0 : -1;
    if (rc == 0) rc = child(m, "wte", embedding(s, c->vocab, c->dim, dt));
    if (rc == 0) rc = child(m, "wpe", embedding(s, c->ctx, c->dim, dt));
    for (int64_t i = 0; rc == 0 && i < c->layers; i++)
        if (!(blocks[i] = block(s, dt))) {
            for (int64_t j = 0; j < i; j++) nb_module_free(blocks[j]);
            rc = -1;
        }
    if (rc == 0) rc = child(m, "h", nb_sequential((int)c->layers, blocks)); /* frees the blocks on failure */
    if (rc == 0) rc = child(m, "ln_f", nb_layer_norm_layer(c->dim, 1e-5, dt));
    nb_dealloc(blocks);
    if (rc != 0) {
        nb_module_free(m);
        return NULL;
    }
    return m;
}

const nb_gpt_config *nb_gpt_config_of(const nb_module *gpt) {
    return nb_module_class_of(gpt) == &gpt_class ? &((gpt_state *)nb_module_state(gpt))->cfg : NULL;
}

nb_optim *nb_gpt_adamw(nb_module *gpt, double lr, double beta1, double beta2, double eps, double wd) {
    const char *fn = "nb_gpt_adamw";
    if (!nb_gpt_config_of(gpt)) return nb_fail(fn, "the module is not a GPT (nb_gpt)");
    int n = nb_module_params(gpt, NULL, NULL, 0);
    if (n <= 0) return NULL;
    nb_tensor **ps = nb_alloc(fn, sizeof *ps * (size_t)n);
    const char **names = nb_alloc(fn, sizeof *names * (size_t)n);
    double *decay = nb_alloc(fn, sizeof *decay * (size_t)n);
    nb_optim *o = NULL;
    if (ps && names && decay) {
        nb_module_params(gpt, ps, names, n);
        for (int i = 0; i < n; i++) /* the 2-D weights but the embeddings */
            decay[i] = nb_rank(ps[i]) == 2 && strncmp(names[i], "wte.", 4) != 0 && strncmp(names[i], "wpe.", 4) != 0
                           ? wd
                           : 0.0;
        o = nb_adamw_decay(n, ps, lr, beta1, beta2, eps, decay);
    }
    nb_dealloc(ps), nb_dealloc(names), nb_dealloc(decay);
    return o;
}

/* ------------------------------------------------------------ generation */

struct nb_gpt_cache {
    const nb_module *gpt; /* the model it was made for */
    int64_t batch, len, layers;
    nb_tensor **k, **v;   /* per layer (batch, heads, ctx, dim / heads), held with nb_retain */
};

void nb_gpt_cache_free(nb_gpt_cache *c) {
    if (!c) return;
    for (int64_t i = 0; i < c->layers; i++) {
        if (c->k) nb_release(c->k[i]);
        if (c->v) nb_release(c->v[i]);
    }
    nb_dealloc(c->k), nb_dealloc(c->v), nb_dealloc(c);
}

/* A zero tensor that lives until nb_release, whatever scope is open. */
static nb_tensor *held(nb_dtype dt, int rank, const int64_t *shape) {
    nb_tensor *t = nb_new(dt, rank, shape, NULL);
    if (t && !nb_retain(t)) {
        nb_free(t);
        return NULL;
    }
    nb_free(t); /* the maker's handle; the hold keeps it */
    return t;
}

nb_gpt_cache *nb_gpt_cache_new(nb_module *gpt, int64_t batch) {
    const char *fn = "nb_gpt_cache_new";
    const nb_gpt_config *cfg = nb_gpt_config_of(gpt);
    if (!cfg) return nb_fail(fn, "the module is not a GPT (nb_gpt)");
    if (batch < 1 || batch > ((int64_t)1 << 32)) return nb_failf(fn, "batch %lld is not in [1, 2^32]", (long long)batch);
    nb_gpt_cache *c = nb_alloc_zeroed(fn, 1, sizeof *c);
    if (!c) return NULL;
    *c = (nb_gpt_cache){gpt, batch, 0, cfg->layers, NULL, NULL};
    c->k = nb_alloc_zeroed(fn, (size_t)cfg->layers, sizeof *c->k);
    c->v = nb_alloc_zeroed(fn, (size_t)cfg->layers, sizeof *c->v);
    nb_dtype dt = nb_dtype_of(nb_module_param(gpt, "wte.weight"));
    int64_t shape[4] = {batch, cfg->heads, cfg->ctx, cfg->dim / cfg->heads};
    bool ok = c->k && c->v;
    for (int64_t i = 0; ok && i < cfg->layers; i++)
        ok = (c->k[i] = held(dt, 4, shape)) && (c->v[i] = held(dt, 4, shape));
    if (!ok) {
        nb_gpt_cache_free(c);
        return NULL;
    }
    return c;
}

int64_t nb_gpt_cache_len(const nb_gpt_cache *c) { return c ? c->len : 0; }
void nb_gpt_cache_reset(nb_gpt_cache *c) {
    if (c) c->len = 0;
}

/* The cached forward; last: only the last position's logits. The caller's grad mode and the model's
   training mode are restored. */
static nb_tensor *forward_cached(const char *fn, nb_module *gpt, nb_gpt_cache *c, nb_tensor *tokens, bool last) {
    const nb_gpt_config *cfg = nb_gpt_config_of(gpt);
    if (!cfg || !c) return nb_fail(fn, !c ? "the cache is NULL" : "the module is not a GPT (nb_gpt)");
    if (c->gpt != gpt) return nb_fail(fn, "the cache was made for another model");
    nb_tensor *ids = check_tokens(fn, cfg, tokens, c->len);
    if (!ids) return NULL;
    if (nb_shape(ids)[0] != c->batch)
        return nb_failf(fn, "tokens have batch %lld, the cache %lld", (long long)nb_shape(ids)[0],
                        (long long)c->batch);
    bool grad = nb_grad_enabled(), training = nb_module_training(gpt);
    nb_set_grad_enabled(false);
    nb_module_train(gpt, false);
    nb_tensor *y = run_gpt(gpt, ids, c->k, c->v, c->len, last);
    nb_module_train(gpt, training);
    nb_set_grad_enabled(grad);
    if (y) c->len += nb_shape(ids)[1]; /* on failure the keys written past len are ignored */
    return y;
}

nb_tensor *nb_gpt_forward_cached(nb_module *gpt, nb_gpt_cache *c, nb_tensor *tokens) {
    return forward_cached("nb_gpt_forward_cached", gpt, c, tokens, false);
}

nb_gen_options nb_gen_defaults(void) { return (nb_gen_options){.temperature = 1.0}; }

#define TOPK_BUF 256 /* top_k up to this: the k-th largest logit in one pass */

/* A token drawn from logits (n values of dtype dt) as nb_gpt_generate describes; p is n doubles of scratch. */
static int64_t sample(const void *logits, nb_dtype dt, int64_t n, const nb_gen_options *o, double *p, nb_rng *rng) {
    for (int64_t i = 0; i < n; i++) p[i] = dt == NB_F32 ? (double)((const float *)logits)[i] : ((const double *)logits)[i];
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++)
        if (p[i] > p[best] || (p[i] == p[i] && p[best] != p[best])) best = i;
    if (o->temperature == 0) return best;
    double kth = -INFINITY; /* the k-th largest logit (ties counted): those below it are dropped */
    if (o->top_k > 0 && o->top_k < n && o->top_k <= TOPK_BUF) {
        /* one pass keeping the k largest values seen, in descending order; NaN and +inf are not counted, as
           in the rounds below (whose first round looks below +inf) */
        double top[TOPK_BUF];
        int64_t have = 0, k = o->top_k;
        for (int64_t i = 0; i < n; i++) {
            const double x = p[i];
            if (!(x < INFINITY) || (have == k && !(x > top[k - 1]))) continue;
            int64_t j = have < k ? have++ : k - 1;
            for (; j > 0 && top[j - 1] < x; j--) top[j] = top[j - 1];
            top[j] = x;
        }
        if (have > 0) kth = top[have - 1];
    } else if (o->top_k > 0 && o->top_k < n) {
        /* k rounds of "the largest value below the previous one, counting ties" */
        int64_t seen = 0;
        double prev = INFINITY;
        while (seen < o->top_k) {
            double m = -INFINITY;
            int64_t cnt = 0;
            for (int64_t i = 0; i < n; i++)
                if (p[i] < prev && p[i] > m) m = p[i], cnt = 1;
                else if (p[i] == m) cnt++;
            if (cnt == 0) break;
            kth = m, prev = m, seen += cnt;
        }
    }
    double mx = p[best], sum = 0;
    for (int64_t i = 0; i < n; i++) {
        p[i] = p[i] >= kth ? exp((p[i] - mx) / o->temperature) : 0.0;
        sum += p[i];
    }
    double u = nb_rng_uniform(rng) * sum, acc = 0;
    int64_t last = best;
    for (int64_t i = 0; i < n; i++) {
        if (p[i] == 0) continue;
        acc += p[i];
        last = i;
        if (u < acc) return i;
    }
    return last; /* u * sum rounded up to the total */
}

int64_t nb_gpt_generate(nb_module *gpt, const int64_t *prompt, int64_t n_prompt, int64_t count,
                        const nb_gen_options *opt, int64_t *out) {
    const char *fn = "nb_gpt_generate";
    const nb_gpt_config *cfg = nb_gpt_config_of(gpt);
    nb_gen_options o = opt ? *opt : nb_gen_defaults();
    if (!cfg) return nb_fail(fn, "the module is not a GPT (nb_gpt)"), -1;
    if (!prompt || (count > 0 && !out)) return nb_fail(fn, "prompt or out is NULL"), -1;
    if (n_prompt < 1 || n_prompt > cfg->ctx)
        return nb_failf(fn, "the prompt has %lld tokens; need 1 to ctx %lld", (long long)n_prompt,
                        (long long)cfg->ctx), -1;
    if (count < 0) return nb_failf(fn, "count %lld is negative", (long long)count), -1;
    if (!(o.temperature >= 0 && isfinite(o.temperature)) || o.top_k < 0)
        return nb_failf(fn, "temperature %g and top_k %lld: need a finite temperature >= 0 and top_k >= 0",
                        o.temperature, (long long)o.top_k), -1;
    for (int64_t i = 0; i < n_prompt; i++)
        if (prompt[i] < 0 || prompt[i] >= cfg->vocab)
            return nb_failf(fn, "prompt token %lld at %lld is outside [0, vocab %lld)", (long long)prompt[i],
                            (long long)i, (long long)cfg->vocab), -1;
    int64_t room = cfg->ctx - n_prompt, want = o.slide || count < room ? count : room;
    if (want == 0) return 0;
    nb_rng rng;
    nb_rng_seed(&rng, o.seed);
    double *p = nb_alloc(fn, sizeof(double) * (size_t)cfg->vocab);
    int64_t *seq = nb_alloc(fn, sizeof(int64_t) * (size_t)cfg->ctx); /* the tokens the model sees */
    nb_gpt_cache *c = !o.no_cache && p && seq ? nb_gpt_cache_new(gpt, 1) : NULL;
    int64_t made = -1;
    if (p && seq && (c || o.no_cache)) {
        memcpy(seq, prompt, sizeof(int64_t) * (size_t)n_prompt);
        bool grad = nb_grad_enabled(), training = nb_module_training(gpt);
        nb_set_grad_enabled(false);
        nb_module_train(gpt, false);
        int64_t len = n_prompt, fed = 0; /* seq[0 .. len) known; seq[0 .. fed) in the cache */
        made = 0;
        while (made < want) {
            nb_scope_begin();
            nb_tensor *ids = nb_new(NB_I64, 2, (int64_t[]){1, len - fed}, seq + fed), *logits;
            if (o.no_cache) logits = ids ? run_gpt(gpt, ids, NULL, NULL, 0, true) : NULL;
            else logits = ids ? forward_cached(fn, gpt, c, ids, true) : NULL;
            const void *row = logits ? nb_data(logits) : NULL;
            int64_t tok = row ? sample(row, nb_dtype_of(logits), cfg->vocab, &o, p, &rng) : -1;
            nb_scope_end();
            if (tok < 0) {
                made = -1;
                break;
            }
            fed = o.no_cache ? 0 : len;
            if (len == cfg->ctx) { /* slide: keep the newer half, whose keys and values are recomputed */
                int64_t keep = cfg->ctx / 2;
                memmove(seq, seq + len - keep, sizeof(int64_t) * (size_t)keep);
                len = keep, fed = 0;
                nb_gpt_cache_reset(c);
            }
            seq[len++] = out[made] = tok;
            made++;
            if (o.on_token && o.on_token(tok, made - 1, o.user) != 0) break;
        }
        nb_module_train(gpt, training);
        nb_set_grad_enabled(grad);
    }
    nb_gpt_cache_free(c);
    nb_dealloc(p), nb_dealloc(seq);
    return made;
}

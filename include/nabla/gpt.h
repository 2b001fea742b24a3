/*
 * nabla/gpt.h - a GPT-2 language model as a module (nabla/nn.h), built only
 * on the public API.
 *
 * The model is GPT-2's: token and position embeddings, `layers` pre-LN
 * blocks (causal self-attention with one fused q/k/v projection, then a
 * GELU-tanh MLP of width 4 dim, each added to the residual stream), a final
 * layer norm, and an output head tied to the token embedding (logits =
 * x wte^T, no parameter of its own). Layer norms use eps 1e-5.
 *
 * Its parameters have the names and layouts of the published GPT-2
 * checkpoint (Hugging Face's GPT2Model, i.e. GPT2LMHeadModel without the
 * "transformer." prefix), so nb_module_load reads a GPT-2 model.safetensors
 * of the same sizes and dtype directly:
 *
 *     wte.weight              (vocab, dim)
 *     wpe.weight              (ctx, dim)
 *     h.<i>.ln_1.weight/bias  (dim)
 *     h.<i>.attn.c_attn.weight (dim, 3 dim), .bias (3 dim)   q, k, v in that order
 *     h.<i>.attn.c_proj.weight (dim, dim),   .bias (dim)
 *     h.<i>.ln_2.weight/bias  (dim)
 *     h.<i>.mlp.c_fc.weight   (dim, 4 dim),  .bias (4 dim)
 *     h.<i>.mlp.c_proj.weight (4 dim, dim),  .bias (dim)
 *     ln_f.weight/bias        (dim)
 *
 * The projections are GPT-2's Conv1D: weight (in, out) and y = x W + b (the
 * transpose of nb_linear's layout). Tensors of such a file that the model
 * does not have (the stored causal-mask buffers h.<i>.attn.bias and
 * h.<i>.attn.masked_bias, lm_head.weight, which equals wte.weight) are
 * skipped; a missing or mis-shaped one is an error naming it, and nothing is
 * changed. The published files are f32: build the model with NB_F32 to load
 * them.
 *
 * Initialisation is GPT-2's: normal(0, 0.02) for the projection weights and
 * both embeddings, the residual projections (attn.c_proj.weight,
 * mlp.c_proj.weight) scaled by 1/sqrt(2 layers), zero biases, layer norms at
 * weight 1 and bias 0.
 *
 * Dropout: with cfg->dropout = p > 0, in training mode (nb_module_train;
 * a new model is in training mode), inverted dropout of rate p is applied
 * after the embeddings' sum, after the attention's output projection and
 * after the MLP, drawing from the rng given to nb_gpt (kept, not owned: it
 * must outlive the model). There is no dropout on the attention
 * probabilities (the fused nb_attention keeps no probability matrix). In eval
 * mode, or with p = 0, forward is deterministic.
 *
 * The modules are of the kinds "GPT" (the root), "Embedding" (wte, wpe),
 * "Sequential" (h), "Block", "CausalSelfAttention", "MLP", "Conv1D" and
 * "LayerNorm".
 */
#ifndef NABLA_GPT_H
#define NABLA_GPT_H

#include "nn.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int64_t vocab;  /* token ids are in [0, vocab) (GPT-2: 50257) */
    int64_t ctx;    /* the longest sequence, the rows of wpe (GPT-2: 1024) */
    int64_t layers; /* blocks (GPT-2 124M: 12) */
    int64_t heads;  /* attention heads; dim must be a multiple of heads (GPT-2 124M: 12) */
    int64_t dim;    /* the residual stream's width (GPT-2 124M: 768) */
    double dropout; /* in [0, 1); 0 for none (GPT-2 was trained with 0.1) */
} nb_gpt_config;

/* A new GPT-2 model of the given sizes in dtype dt (NB_F32 or NB_F64),
   initialised from rng (which dropout also draws from later). Fails, naming
   the values, for a size that is not positive, dim not a multiple of heads,
   a dropout outside [0, 1), a NULL cfg or rng, or another dtype.

   nb_forward(gpt, tokens), tokens a (B, T) NB_I64 tensor of ids in
   [0, vocab) with 1 <= T <= ctx, gives the logits (B, T, vocab) of the next
   token at each position. Other ranks or dtypes, T > ctx and ids outside
   [0, vocab) are errors naming the values (NULL, nothing recorded). For
   training, nb_cross_entropy(nb_reshape(logits, 2, {B T, vocab}), targets)
   is the usual loss. */
NB_API nb_module *nb_gpt(const nb_gpt_config *cfg, nb_dtype dt, nb_rng *rng);

/* The configuration gpt was built with (NULL when gpt is not a GPT). */
NB_API const nb_gpt_config *nb_gpt_config_of(const nb_module *gpt);

/* AdamW over every parameter of gpt (nb_adamw_decay), with GPT-2's grouping:
   weight decay wd on the projection matrices (the c_attn, c_proj and c_fc
   weights) and none on the biases, the layer norms and the embeddings wte
   and wpe. */
NB_API nb_optim *nb_gpt_adamw(nb_module *gpt, double lr, double beta1, double beta2, double eps, double wd);

/* ------------------------------------------------------------ generation */

/* A key/value cache for decoding with gpt a few tokens at a time: for each
   block, the keys and values of the positions seen so far, (batch, heads,
   ctx, dim / heads) each in the model's dtype (2 layers batch ctx dim
   elements in all). The cache keeps no reference to the model's parameters;
   use it only with the model it was made for, and free it before the model. */
typedef struct nb_gpt_cache nb_gpt_cache;

/* A new, empty cache for gpt and `batch` sequences. NULL with an error for a
   module that is not a GPT or batch < 1. */
NB_API nb_gpt_cache *nb_gpt_cache_new(nb_module *gpt, int64_t batch);
/* Positions held (0 for a new or reset cache). */
NB_API int64_t nb_gpt_cache_len(const nb_gpt_cache *c);
/* Forget every position (the memory is kept for reuse). */
NB_API void nb_gpt_cache_reset(nb_gpt_cache *c);
NB_API void nb_gpt_cache_free(nb_gpt_cache *c);

/* The logits (B, T, vocab) of tokens (B, T) NB_I64 placed at positions
   len .. len + T - 1 after the len = nb_gpt_cache_len(c) positions already in
   the cache, whose keys and values it reads instead of recomputing them; the
   new positions' keys and values are appended. The values are those of
   nb_forward on the whole sequence (up to rounding: the products are summed
   in another grouping). Runs in eval mode (no dropout) and records no graph,
   whatever the grad mode; the result belongs to the current scope. Errors
   (NULL, nothing changed, the cache included): gpt not the cache's model
   kind or sizes, B other than the cache's batch, len + T > ctx, ids outside
   [0, vocab), another dtype or rank. */
NB_API nb_tensor *nb_gpt_forward_cached(nb_module *gpt, nb_gpt_cache *c, nb_tensor *tokens);

/* Called with each new token and its index among the new ones; a nonzero
   return stops the generation after that token. */
typedef int (*nb_token_fn)(int64_t token, int64_t index, void *user);

typedef struct {
    double temperature; /* logits are divided by it before sampling; 0 takes the most likely token
                           (the first one on a tie); default 1 */
    int64_t top_k;      /* sample among the k most likely tokens only (those tied with the k-th
                           included, as PyTorch's usual top-k filter); 0 (default): all of them */
    uint64_t seed;      /* the sampler's nb_rng seed; default 0 */
    bool no_cache;      /* recompute the whole sequence for each token instead of using a KV cache
                           (slower, same tokens: a check of the cache); default false */
    bool slide;         /* when the sequence fills ctx, drop the older half of the context and go on
                           from the newer half (its keys and values recomputed) instead of stopping;
                           default false */
    nb_token_fn on_token; /* NULL (default) or called after each token */
    void *user;         /* passed to on_token */
} nb_gen_options;

/* The defaults above. */
NB_API nb_gen_options nb_gen_defaults(void);

/* Continues the prompt (n_prompt >= 1 ids in [0, vocab)) by up to `count`
   tokens sampled from gpt, written to out[0 .. count). Each token is drawn
   from softmax(logits / temperature) restricted to the top_k most likely ones,
   by one nb_rng_uniform draw against the cumulative probabilities in double.
   Generation stops cleanly when the sequence (prompt and new tokens) reaches
   ctx tokens (unless slide is set: the model then keeps the last ctx / 2
   tokens and continues from them), or when on_token returns nonzero. Returns the number
   of tokens written (0 when the prompt already fills ctx and slide is not
   set), or -1 with an error: a NULL
   or non-GPT model, prompt or out (when count > 0), n_prompt < 1 or > ctx, an
   id outside [0, vocab), count < 0, temperature < 0 or not finite, top_k < 0.
   opt NULL means nb_gen_defaults(). The model is run in eval mode without a
   graph and left in the mode it was in. */
NB_API int64_t nb_gpt_generate(nb_module *gpt, const int64_t *prompt, int64_t n_prompt, int64_t count,
                               const nb_gen_options *opt, int64_t *out);

#ifdef __cplusplus
}
#endif
#endif

/*
 * nabla/nn.h - modules, losses and optimizers, built only on the public API of nabla.h.
 *
 * Losses take predictions and targets of the same shape (broadcasting as the
 * ops do) and return the mean over all elements as a rank-0 tensor of the
 * current scope. Optimizers update a list of leaf parameters in place from
 * their accumulated gradients.
 */
#ifndef NABLA_NN_H
#define NABLA_NN_H

#include "../nabla.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ----------------------------------------------------------------- modules */

/* A module: a forward function, a train/eval flag, and any number of named
   parameters, named buffers and named child modules. Parameters are leaves
   that require grad; buffers are state that is saved and loaded with the
   parameters but not trained (running statistics, counters). The module keeps
   its own hold (nb_retain) on each registered tensor and owns its children,
   so everything lives until nb_module_free of the root. Forward results belong
   to the current scope.

   Names are dotted paths: a parameter "weight" of the child "proj" of the
   child "attn" of the child "0" of the child "blocks" is
   "blocks.0.attn.proj.weight", the name it has in a checkpoint. Parameters
   and buffers are listed in pre-order: a module's own (in registration
   order), then each child's in turn. */
typedef struct nb_module nb_module;
typedef enum { NB_INIT_XAVIER, NB_INIT_KAIMING } nb_init;

/* A kind of module, as SQLite's sqlite3_module: what a user writes to make a
   module of their own. Give it static storage (it is referenced, not copied)
   and zero the fields it does not use (designated initialisers do); later
   versions may add optional fields at the end, where NULL means "none".

       static nb_tensor *block_forward(nb_module *m, nb_tensor *x) {
           nb_tensor *h = nb_relu(nb_forward(nb_module_child(m, "fc1"), x));
           return nb_add(x, nb_forward(nb_module_child(m, "fc2"), h));
       }
       static const nb_module_class block_class = {.kind = "Block", .forward = block_forward};

       nb_module *b = nb_module_new(&block_class, NULL);
       nb_module_add_child(b, "fc1", nb_linear(d, h, true, NB_INIT_KAIMING, NB_F32, &rng));
       ...

   forward (required) maps x to the module's output; x is never NULL (nb_forward
   answers NULL itself). It reads its state with nb_module_state, its tensors
   with nb_module_param / nb_module_buffer / nb_module_child, and the mode with
   nb_module_training. On failure it returns NULL with an error (nb_fail).
   free_state (optional) frees the state given to nb_module_new; it is called
   once, by nb_module_free, before the module's tensors and children are
   released. */
typedef struct nb_module_class {
    const char *kind; /* "Linear", "ResidualMLP": nb_module_kind and error messages */
    nb_tensor *(*forward)(nb_module *m, nb_tensor *x);
    void (*free_state)(void *state);
} nb_module_class;

/* A new module of class cls, in training mode, with no parameters, buffers
   or children, holding state (any pointer, NULL allowed; owned from now on
   when cls->free_state is set). Fails for a NULL cls or forward, or a kind
   that is NULL or empty; state then stays the caller's. */
NB_API nb_module *nb_module_new(const nb_module_class *cls, void *state);
/* The state given to nb_module_new (NULL for NULL). */
NB_API void *nb_module_state(const nb_module *m);
/* The class of m (NULL for NULL): a forward can tell its children's kinds. */
NB_API const nb_module_class *nb_module_class_of(const nb_module *m);

/* Register t as the parameter `name` of m. A name is non-empty, has no '.',
   no control characters, '"' or '\\' (it becomes part of a checkpoint's
   JSON), and is unique among m's parameters, buffers and children. t must be
   a contiguous f32 or f64 leaf; it is made to require grad, and m keeps a hold
   on it (nb_retain): the caller's handle stays the caller's, to free or leave
   to its scope. The same tensor may be registered in two places (weight
   tying, such as a language model's head sharing its embedding's table): it
   is then one parameter, listed, counted, trained and saved once under its
   first dotted path, and freed once, when its last module is. A tensor is a
   parameter or a buffer, not both. Returns 0, or nonzero with an error naming
   the module's kind, the name and the fault; m and t are then unchanged. */
NB_API int nb_module_add_param(nb_module *m, const char *name, nb_tensor *t);
/* Replace m's parameter `name` with t, of the same dtype and shape (the
   tying idiom: nb_module_set_param(head, "weight", nb_module_param(emb,
   "weight")) makes a Linear head share an Embedding's table). m takes a hold
   on t and releases its hold on the old tensor (freed if it was the last),
   whose gradient and optimizer state go with it: build optimizers after
   tying. Returns 0, or nonzero with an error; m and t are then unchanged. */
NB_API int nb_module_set_param(nb_module *m, const char *name, nb_tensor *t);
/* Register t as the buffer `name` of m: saved and loaded with the parameters,
   not trained. t is a contiguous leaf of any dtype that does not require grad;
   names, holds and sharing as for parameters. */
NB_API int nb_module_add_buffer(nb_module *m, const char *name, nb_tensor *t);
/* Make child the child `name` of m; m owns it from now on (nb_module_free of
   m frees it). A module has at most one parent: a child already placed, m
   itself or one of m's ancestors is refused. On failure the child stays the
   caller's. */
NB_API int nb_module_add_child(nb_module *m, const char *name, nb_module *child);

/* The parameter, buffer or descendant module at a dotted path below m
   ("blocks.0.attn.proj.weight", "blocks.0"), or NULL with an error naming the
   path and the part that was not found. */
NB_API nb_tensor *nb_module_param(nb_module *m, const char *path);
NB_API nb_tensor *nb_module_buffer(nb_module *m, const char *path);
NB_API nb_module *nb_module_child(nb_module *m, const char *path);
/* m's direct children in order, with their own names ("0", "attn"); writes up
   to cap of them and returns how many there are (-1 for NULL m). */
NB_API int nb_module_children(nb_module *m, nb_module **kids, const char **names, int cap);

/* Y = X W^T + b, W (d_out, d_in) and b (d_out): Xavier/Glorot uniform
   U(-a, a), a = sqrt(6 / (d_in + d_out)), or Kaiming uniform a = sqrt(6 / d_in)
   (for ReLU); b starts at 0. dt is NB_F32 or NB_F64. Layers with a table
   (Linear, Embedding, LayerNorm) fail, naming the sizes, when its element or
   byte count does not fit in 64 bits, and on another dtype. */
NB_API nb_module *nb_linear(int64_t d_in, int64_t d_out, bool bias, nb_init init, nb_dtype dt, nb_rng *rng);
NB_API nb_module *nb_relu_layer(void);
NB_API nb_module *nb_sigmoid_layer(void);
NB_API nb_module *nb_tanh_layer(void);
NB_API nb_module *nb_gelu_layer(void);
NB_API nb_module *nb_leaky_relu_layer(double alpha); /* PyTorch's default alpha is 0.01 */
/* Inverted dropout in training mode, the identity in eval mode; draws from rng (not owned). */
NB_API nb_module *nb_dropout_layer(double p, nb_rng *rng);
/* Layer norm over the last axis of size d, with gamma = 1 and beta = 0 to start. */
NB_API nb_module *nb_layer_norm_layer(int64_t d, double eps, nb_dtype dt);
/* A (n, d) table, N(0, 1) initialised; forward takes NB_I64 ids of any shape. */
NB_API nb_module *nb_embedding(int64_t n, int64_t d, nb_dtype dt, nb_rng *rng);
/* Convolutional layers, PyTorch's names and defaults. Conv2d: weight (out, in / groups, kh, kw) and bias
   (out) drawn from U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = in / groups kh kw (PyTorch's default
   initialisation); forward is nb_conv2d with o. */
NB_API nb_module *nb_conv2d_layer(int64_t in, int64_t out, int kh, int kw, nb_conv2d_opts o, bool bias, nb_dtype dt,
                                  nb_rng *rng);
/* MaxPool2d and AvgPool2d over kh x kw windows with o (stride 0: the kernel); GlobalAvgPool2d (N,C,H,W) ->
   (N,C,1,1); Flatten (N, ...) -> (N, rest), as torch.nn.Flatten. No parameters. */
NB_API nb_module *nb_max_pool2d_layer(int kh, int kw, nb_conv2d_opts o);
NB_API nb_module *nb_avg_pool2d_layer(int kh, int kw, nb_conv2d_opts o);
NB_API nb_module *nb_global_avg_pool2d_layer(void);
NB_API nb_module *nb_flatten_layer(void);
/* BatchNorm2d (also takes (N,C)): weight 1 and bias 0 (C); buffers running_mean 0, running_var 1 (C) and
   num_batches_tracked (an NB_I64 scalar), PyTorch's names. In training mode nb_batch_norm with the batch's
   statistics updates the running ones (momentum as PyTorch's, 0.1 there) and counts the batch; in eval mode
   it normalises with the running ones. */
NB_API nb_module *nb_batch_norm2d_layer(int64_t c, double eps, double momentum, nb_dtype dt);
/* f(X) + X around inner (owned); a shape mismatch is an error at forward. */
NB_API nb_module *nb_residual(nb_module *inner);
/* The n modules applied in order (owned; NULL entries make it fail and free the rest). */
NB_API nb_module *nb_sequential(int n, nb_module *const *mods);

NB_API nb_tensor *nb_forward(nb_module *m, nb_tensor *x);
/* Train (true) or eval (false) mode for m and all its children. */
NB_API void nb_module_train(nb_module *m, bool on);
NB_API bool nb_module_training(const nb_module *m);
/* The parameters of m and its children in order, each once (a tied one under
   its first path), with dotted names such as "0.weight" (PyTorch's
   named_parameters); writes up to cap of them and returns how many there are,
   or -1 with an error. The names stay valid until nb_module_free of m. */
NB_API int nb_module_params(nb_module *m, nb_tensor **params, const char **names, int cap);
/* The same for buffers (named_buffers). */
NB_API int nb_module_buffers(nb_module *m, nb_tensor **bufs, const char **names, int cap);
/* Every registration of a parameter, a tied one under each of its paths
   (named_parameters(remove_duplicate=False)): what a checkpoint's loader
   matches names against. */
NB_API int nb_module_param_paths(nb_module *m, nb_tensor **params, const char **names, int cap);
/* The same for buffers. */
NB_API int nb_module_buffer_paths(nb_module *m, nb_tensor **bufs, const char **names, int cap);
/* Label each parameter with its dotted name (nb_set_name), so graph drawings
   (nb_graph_dot, nb_graph_mermaid) show "0.weight" rather than t<i>. Returns
   the number of parameters, or -1 with an error. */
NB_API int nb_module_name_params(nb_module *m);
/* Total number of parameter elements, a tied parameter counted once (0 for
   NULL, -1 with an error when out of memory). */
NB_API int64_t nb_module_num_params(nb_module *m);
NB_API void nb_module_zero_grad(nb_module *m);
/* The module's kind, e.g. "Linear". */
NB_API const char *nb_module_kind(const nb_module *m);
/* Free m, its state (free_state), its children, and its holds on its
   tensors (a tensor is freed when its last holder lets go). m must be a root
   (a child is freed by its parent: freeing one is refused with an error).
   NULL is ignored. */
NB_API void nb_module_free(nb_module *m);

/* ------------------------------------------------------------------ losses */

/* mean((pred - target)^2) */
NB_API nb_tensor *nb_mse_loss(nb_tensor *pred, nb_tensor *target);
/* mean(|pred - target|) (MAE); the subgradient at 0 is 0 */
NB_API nb_tensor *nb_l1_loss(nb_tensor *pred, nb_tensor *target);
/* -mean(t log p + (1 - t) log(1 - p)) on probabilities p in [0, 1]; each log
   is clamped at -100 as PyTorch does, so p = 0 or 1 gives a finite loss. */
NB_API nb_tensor *nb_bce_loss(nb_tensor *prob, nb_tensor *target);
/* The same on logits x, computed stably: mean(max(x, 0) - x t + log(1 + e^-|x|)). */
NB_API nb_tensor *nb_bce_with_logits_loss(nb_tensor *logits, nb_tensor *target);
/* mean(max(0, 1 - y s)) for scores s and labels y in {-1, +1} (other labels are an error). */
NB_API nb_tensor *nb_hinge_loss(nb_tensor *scores, nb_tensor *labels);

/* -------------------------------------------------------------- optimizers */

typedef struct nb_optim nb_optim;

/* Each optimizer takes n distinct parameters (a tensor listed twice is
   refused, naming both positions; nb_module_params lists a tied one once). */
/* SGD as torch.optim.SGD: with weight decay wd, g = grad + wd p; with momentum
   mu, b = mu b + g (b = g on the first step), and the step is b, or g + mu b
   with Nesterov; p -= lr step. */
NB_API nb_optim *nb_sgd(int n, nb_tensor *const *params, double lr, double momentum, double weight_decay,
                        bool nesterov);
/* Adam as torch.optim.Adam (weight decay added to the gradient, bias-corrected moments). */
NB_API nb_optim *nb_adam(int n, nb_tensor *const *params, double lr, double beta1, double beta2, double eps,
                         double weight_decay);
/* AdamW as torch.optim.AdamW: the weight decay is decoupled, p -= lr wd p before the Adam step. */
NB_API nb_optim *nb_adamw(int n, nb_tensor *const *params, double lr, double beta1, double beta2, double eps,
                          double weight_decay);
/* AdamW with a weight decay for each parameter, decay[i] for params[i] (each
   finite and >= 0), as torch.optim.AdamW with parameter groups that differ
   only in weight_decay: the usual transformer recipe decays the matrices and
   not the biases, norms and embeddings (nb_gpt_adamw builds that for a GPT).
   The decay values are copied. */
NB_API nb_optim *nb_adamw_decay(int n, nb_tensor *const *params, double lr, double beta1, double beta2, double eps,
                                const double *decay);
/* Apply one update from the parameters' gradients (a parameter without one is
   skipped). If any gradient holds a NaN or an infinity, nothing changes and the
   call fails with an error naming the parameter. The step count grows only
   when the step succeeded. Allocates nothing. Returns 0 or nonzero. */
NB_API int nb_optim_step(nb_optim *o);
/* Drop every parameter's gradient (nb_clear_grad, as torch's default
   zero_grad(set_to_none=True)): the next backward stores fresh ones. */
NB_API void nb_optim_zero_grad(nb_optim *o);
/* Sets the learning rate for the next steps (schedules call it each step). A NaN or negative rate is
   refused: the rate is left as it was and nb_last_error() says why. */
NB_API void nb_optim_set_lr(nb_optim *o, double lr);
NB_API double nb_optim_lr(const nb_optim *o);
/* Steps taken so far. */
NB_API int64_t nb_optim_steps(const nb_optim *o);
/* Save the optimizer's state (momentum / moment buffers and the step count) as
   safetensors (atomically, like nb_save_safetensors), or load it into an
   optimizer of the same kind over parameters of the same shapes: all or
   nothing, a mismatched, truncated or corrupt file changes nothing, nor does
   a step count that is not a whole number from 0 to 2^53 (the error names it).
   The hyper-parameters (lr, betas, ...) are not stored. Return 0 or nonzero. */
NB_API int nb_optim_save(nb_optim *o, const char *path);
NB_API int nb_optim_load(nb_optim *o, const char *path);
/* Free the optimizer and its state (not the parameters). NULL is ignored. */
NB_API void nb_optim_free(nb_optim *o);

/* Scale the gradients of the n parameters so that their global L2 norm is at
   most max_norm; returns the norm before clipping (or -1 on error). */
NB_API double nb_clip_grad_norm(int n, nb_tensor *const *params, double max_norm);

/* Learning-rate schedules, as functions of the step (0-based). */
/* base * gamma^(floor(step / step_size)) */
NB_API double nb_lr_step_decay(double base, int64_t step, int64_t step_size, double gamma);
/* Linear warmup from 0 over `warmup` steps, then cosine from base down to min_lr at `total`. */
NB_API double nb_lr_cosine(double base, int64_t step, int64_t warmup, int64_t total, double min_lr);

#ifdef __cplusplus
}
#endif
#endif

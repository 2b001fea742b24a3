/*
 * nabla/nn.h - losses and optimizers, built only on the public API of nabla.h.
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

/* A module (the seeds' BaseLayer): named parameters, child modules, a train/
   eval mode, and a forward call. Parameters are leaves that require grad and
   live outside every scope until nb_module_free. Containers (sequential,
   residual) own their children. Forward results belong to the current scope. */
typedef struct nb_module nb_module;
typedef enum { NB_INIT_XAVIER, NB_INIT_KAIMING } nb_init;

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
/* f(X) + X around inner (owned); a shape mismatch is an error at forward. */
NB_API nb_module *nb_residual(nb_module *inner);
/* The n modules applied in order (owned; NULL entries make it fail and free the rest). */
NB_API nb_module *nb_sequential(int n, nb_module *const *mods);

NB_API nb_tensor *nb_forward(nb_module *m, nb_tensor *x);
/* Train (true) or eval (false) mode for m and all its children. */
NB_API void nb_module_train(nb_module *m, bool on);
NB_API bool nb_module_training(const nb_module *m);
/* The parameters of m and its children in order, with dotted names such as
   "0.weight"; writes up to cap of them and returns how many there are. */
NB_API int nb_module_params(nb_module *m, nb_tensor **params, const char **names, int cap);
/* Label each parameter with its dotted name (nb_set_name), so graph drawings
   (nb_graph_dot, nb_graph_mermaid) show "0.weight" rather than t<i>. Returns
   the number of parameters, or -1 with an error. */
NB_API int nb_module_name_params(nb_module *m);
/* Total number of parameter elements. */
NB_API int64_t nb_module_num_params(nb_module *m);
NB_API void nb_module_zero_grad(nb_module *m);
/* The module's kind, e.g. "Linear". */
NB_API const char *nb_module_kind(const nb_module *m);
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

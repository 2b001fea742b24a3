/*
 * nabla.h - tensors and reverse-mode automatic differentiation in C11.
 *
 * The one header a user needs. Everything is reached through the opaque
 * handle nb_tensor. A quick tour:
 *
 *     nb_scope_begin();
 *     nb_tensor *x = nb_scalar(NB_F64, 2.0), *w = nb_scalar(NB_F64, -3.0);
 *     nb_set_requires_grad(x, true);  nb_set_requires_grad(w, true);
 *     nb_tensor *y = nb_tanh(nb_add_scalar(nb_mul(x, w), 0.5));
 *     nb_backward(y, NULL, 0);
 *     printf("%g %g\n", nb_item(nb_grad(x)), nb_item(nb_grad(w)));
 *     nb_scope_end();            // frees x, w, y, every intermediate, the grads
 *
 * Conventions that hold for every function below:
 *  - A call that fails returns NULL (or a nonzero status), never aborts, exits or
 *    prints, leaves its inputs unchanged, and records a message for the calling
 *    thread that names the function and the shapes or values at fault (read it
 *    with nb_last_error()). An op given a NULL input returns NULL and keeps the
 *    message already recorded, so a chain of calls reports the first failure.
 *  - Axes may be negative (counting from the end, as in NumPy).
 *  - Binary ops broadcast as NumPy does. Mixing f32 and f64 promotes as PyTorch
 *    does: the result is f64, unless one operand has rank 0 and the other does
 *    not, in which case the result takes the dtype of the ranked operand. The
 *    gradient that flows back to each operand has that operand's dtype.
 *  - Arithmetic needs f32 or f64; NB_I64 tensors hold indices and are refused by
 *    every differentiable op.
 *  - Op results are new tensors. View ops (reshape of a contiguous tensor,
 *    transpose, permute, slice, expand, detach) share storage with their input.
 *  - Tensors are not shared between threads while any thread is building a graph
 *    with them: each thread has its own scopes, grad mode, errors and graphs.
 */
#ifndef NABLA_H
#define NABLA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32) && defined(NABLA_SHARED_BUILD)
#define NB_API __declspec(dllexport)
#elif defined(__GNUC__)
#define NB_API __attribute__((visibility("default")))
#else
#define NB_API
#endif

#define NABLA_VERSION_MAJOR 0
#define NABLA_VERSION_MINOR 1
#define NABLA_VERSION_PATCH 0

/* The largest rank a tensor may have. */
#define NB_MAX_RANK 8

typedef struct nb_tensor nb_tensor; /* opaque handle */
typedef enum { NB_F32, NB_F64, NB_I64 } nb_dtype;

/* ------------------------------------------------------------------------ */
/* Errors                                                                   */
/* ------------------------------------------------------------------------ */

/* The message of the first failure on this thread since nb_clear_error(), or
   NULL when there was none. The text is owned by the library and stays valid
   until the next nb_clear_error() on this thread. */
NB_API const char *nb_last_error(void);
/* Forget the recorded message of this thread. */
NB_API void nb_clear_error(void);
/* For libraries built on nabla: record "fn: msg" as the thread's error
   (unless one is already recorded) and return NULL. */
NB_API void *nb_fail(const char *fn, const char *msg);
/* The same with a printf-style message. */
NB_API void *nb_failf(const char *fn, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* ------------------------------------------------------------------------ */
/* Memory                                                                   */
/* ------------------------------------------------------------------------ */

/* Route every allocation of the library through alloc_fn/free_fn (both NULL
   restores malloc/free). alloc_fn(size, ud) returns memory or NULL; the library
   aligns it itself. Each block is freed through the hook that allocated it,
   whenever that happens; this call gives the cached free blocks back (this
   thread's and the shared ones now, other threads' at their next allocation)
   and the calling thread's matrix-product buffers. Call it while no other
   thread is using the library. Used by tests to inject allocation failures. */
NB_API void nb_set_allocator(void *(*alloc_fn)(size_t size, void *ud), void (*free_fn)(void *p, void *ud),
                             void *ud);

/* Bytes of live tensors and graph bookkeeping right now, over all threads: 0
   once a program has freed every tensor. Flat across the steps of a training
   loop that frees each step's scope. Cached free blocks and the library's
   scratch buffers (below) are not counted. */
NB_API int64_t nb_memory_in_use(void);

/* Freed blocks are kept in a cache of size classes (at most 1/8 larger than
   asked for) and handed out again, so after the first step of a training loop
   whose shapes repeat, a step takes nothing from the system allocator and
   touches no new page. The counters prove it: */
typedef struct nb_memory_stats {
    int64_t in_use;        /* nb_memory_in_use() */
    int64_t cached;        /* bytes of freed blocks kept for reuse */
    int64_t peak;          /* the most in_use + cached + scratch ever held */
    int64_t system_allocs; /* blocks taken from the allocator (malloc or the hook) */
    int64_t system_frees;  /* blocks given back to it */
    int64_t reuses;        /* allocations served from the cache */
    int64_t scratch;       /* bytes of the matrix-product packing buffers each thread keeps between products */
} nb_memory_stats;
/* Copies the counters (all since the start of the process) into *out. */
NB_API void nb_get_memory_stats(nb_memory_stats *out);
/* The most bytes the shared cache keeps; a freed block that would take it past
   this goes back to the system. By default (until this is called) the limit is
   the larger of 256 MiB and the most bytes live tensors have held at once, so
   a training step whose tensors peak above 256 MiB still reuses its blocks
   (memory held stays under twice that peak). Each thread also keeps up
   to 8 MiB of blocks of at most 1 KiB for itself. 0 disables the cache (and
   empties it: other threads' own blocks at their next allocation), so that
   every allocation reaches the allocator hook. */
NB_API void nb_set_cache_limit(int64_t bytes);
/* Gives every cached block back to the system allocator now, and the calling
   thread's matrix-product buffers (the workers' stay until nb_set_allocator or
   nb_set_num_threads stops them, or they exit). Cached blocks and scratch
   buffers stay reachable, so a leak checker at exit does not report them as
   lost whether or not this is called. */
NB_API void nb_release_cached_memory(void);

/* Memory for code built on nabla (its own layers: nabla/nn.h and nabla/io.h
   use these), taken through the allocator hook and the cache like the
   library's own, so that nb_set_allocator sees it and nb_memory_in_use counts
   it. nb_alloc gives n bytes (64-byte aligned, uninitialised); nb_alloc_zeroed
   gives count * size zeroed bytes. On failure, or when count * size
   overflows, they return NULL and record "fn: out of memory (N bytes)" (fn
   being the caller's function name) as the thread's error. Free the block
   with nb_dealloc (NULL is ignored), never with free(). */
NB_API void *nb_alloc(const char *fn, size_t n);
NB_API void *nb_alloc_zeroed(const char *fn, size_t count, size_t size);
NB_API void nb_dealloc(void *p);

/* Threads. Matrix products and large unary and binary elementwise ops are
   split across a pool of worker threads (reductions, copies and small ops run
   on the caller). The
   default is the environment variable NABLA_NUM_THREADS if set, else the
   number of online cores. n = 0 restores the default; n from 1 to 256 sets it
   (1: no workers). Results are bit-identical for every thread count: each
   output element is computed by one thread, in the same order. Workers spin
   about 50 us after a job, then sleep. Call while no other thread is running
   ops. Returns 0, or -1 with an error for n out of range. */
NB_API int nb_set_num_threads(int n);
/* The thread count in use. */
NB_API int nb_num_threads(void);

/* Ownership. Every tensor made between nb_scope_begin() and the matching
   nb_scope_end() on this thread (op results, graph nodes, gradients returned by
   nb_gradient) is freed by nb_scope_end(). A tensor made outside every scope
   lives until nb_free(). The gradient that nb_backward accumulates into a leaf
   belongs to that leaf. Scopes nest. A handle freed by its scope or nb_free()
   must not be used again; the library keeps internally whatever a surviving
   graph still needs. */
NB_API void nb_scope_begin(void);
/* Free every tensor of the innermost scope of this thread. Without an open scope
   it records an error and does nothing. */
NB_API void nb_scope_end(void);
/* Number of open scopes on this thread. */
NB_API int nb_scope_depth(void);
/* Move t into the scope enclosing the one that owns it (or out of every scope,
   so that it lives until nb_free). Returns t; NULL gives NULL. */
NB_API nb_tensor *nb_keep(nb_tensor *t);
/* Free t now (whether or not a scope owns it); a tensor that nb_retain holds
   lives on until its last nb_release. NULL is ignored. Freeing a
   handle twice is detected and recorded as an error when the tensor is still
   alive inside a graph, and is undefined otherwise, as with free(). */
NB_API void nb_free(nb_tensor *t);
/* Hold t for code that keeps it beyond its maker's use of it (modules keep
   their parameters this way): t stays alive, its handle valid, until every
   nb_retain is matched by an nb_release, whatever its maker does meanwhile
   (nb_free, or the end of the scope that owns it, release only the maker's
   handle, as always). Returns t, or NULL with an error for NULL or a freed
   handle. */
NB_API nb_tensor *nb_retain(nb_tensor *t);
/* Drop one hold taken by nb_retain; t is freed when nothing else keeps it.
   NULL is ignored; a tensor without a hold is an error (nothing changes). */
NB_API void nb_release(nb_tensor *t);

/* ------------------------------------------------------------------------ */
/* Creation and access                                                      */
/* ------------------------------------------------------------------------ */

/* A new tensor of the given shape; data (row-major, of dtype dt) is copied;
   data == NULL gives zeros. rank 0 is a scalar (shape may be NULL). Size-0
   axes are allowed. Fails on a negative axis, rank > NB_MAX_RANK, or a size
   that overflows: the product of the sizes other than 0, in bytes, must fit in
   int64 even when a size is 0. Memory is 64-byte aligned. */
NB_API nb_tensor *nb_new(nb_dtype dt, int rank, const int64_t *shape, const void *data);
/* A rank-0 tensor holding v. For NB_I64 (here and in nb_full, nb_from_f64 and
   nb_to) a value is truncated toward zero; NaN, an infinity or a value outside
   [-2^63, 2^63) has no i64 value and is an error naming it (and its index). */
NB_API nb_tensor *nb_scalar(nb_dtype dt, double v);
/* A tensor filled with v. */
NB_API nb_tensor *nb_full(nb_dtype dt, int rank, const int64_t *shape, double v);
/* A tensor of shape `shape` from row-major doubles, converted to dt. */
NB_API nb_tensor *nb_from_f64(nb_dtype dt, int rank, const int64_t *shape, const double *src);

NB_API int nb_rank(const nb_tensor *t);                 /* -1 for NULL */
NB_API const int64_t *nb_shape(const nb_tensor *t);     /* rank entries; NULL for NULL */
NB_API const int64_t *nb_strides(const nb_tensor *t);   /* in elements; NULL for NULL */
NB_API int64_t nb_numel(const nb_tensor *t);            /* -1 for NULL */
NB_API nb_dtype nb_dtype_of(const nb_tensor *t);        /* NB_F32 for NULL (and an error) */
NB_API bool nb_is_contiguous(const nb_tensor *t);       /* row-major, no gaps; true without elements */
/* Value of a one-element tensor as a double; NaN and an error otherwise. */
NB_API double nb_item(const nb_tensor *t);
/* Copy up to cap elements, row-major (views are walked in logical order),
   converted to double, into dst. Returns the number of elements of t (which
   may exceed cap: then only cap are written), or -1 on error. */
NB_API int64_t nb_read_f64(const nb_tensor *t, double *dst, int64_t cap);
/* Element at a multi-index (rank entries, negative counts from the end). */
NB_API double nb_get(const nb_tensor *t, const int64_t *index);
/* Pointer to the first element of a contiguous tensor, else NULL (with an
   error). Writes through it are not seen by the version counter. CPU only:
   the address is host memory; a tensor on another device gives NULL and an
   error (move it with nb_to_device first). */
NB_API void *nb_data(nb_tensor *t);

/* ---- devices ----
   Every tensor lives on one device, whose backend (a table of kernels) does
   its ops. Only the CPU exists today; NB_DEV_CUDA is the seam a CUDA backend
   plugs into (nb_device_available says whether this build has it). An op's
   result lives on its operands' device; operands on different devices are an
   error naming both. On the CPU, NABLA_KERNELS=reference in the environment
   (read when the library first needs a kernel) selects the reference kernels:
   plain C, one thread, the oracle the fast kernels are tested against. */
typedef enum { NB_DEV_CPU = 0, NB_DEV_CUDA = 1 } nb_device_type;
typedef struct nb_device {
    nb_device_type type;
    int index; /* which device of its type: 0 for the CPU */
} nb_device;
/* The CPU device. */
NB_API nb_device nb_cpu(void);
/* The device t lives on (the CPU, with an error, for NULL). */
NB_API nb_device nb_device_of(const nb_tensor *t);
/* Whether this build and machine have dev. */
NB_API bool nb_device_available(nb_device dev);
/* "cpu", "cuda:0" into buf; returns buf. */
NB_API char *nb_device_str(nb_device dev, char *buf, size_t cap);
/* The name of the kernel set serving dev: "cpu" (the fast CPU kernels) or "reference"; NULL if none. */
NB_API const char *nb_backend_name(nb_device dev);
/* t on device dev. When t is already there: a view sharing t's storage
   (recorded like a reshape; torch's .to returns its input). NULL and an error
   naming the device when this build has no backend for it. With a second
   backend, a copy on dev whose gradient returns to t's device; this build has
   only the CPU, so nothing else can be asked of it yet. */
NB_API nb_tensor *nb_to_device(nb_tensor *t, nb_device dev);
/* Write a readable form of t and a newline to f:
   "tensor(f64, (2,3)) [[1, 2, 3], [4, 5, 6]]" (NaN prints as nan). */
NB_API void nb_print(const nb_tensor *t, FILE *f);
/* Format a shape as "(2,3)" into buf; returns buf. */
NB_API char *nb_shape_str(int rank, const int64_t *shape, char *buf, size_t cap);

/* ------------------------------------------------------------------------ */
/* Autodiff                                                                 */
/* ------------------------------------------------------------------------ */

/* Mark a leaf (a tensor made by nb_new & co, not by an op) as a parameter whose
   gradient backward accumulates. Fails for an op result or an NB_I64 tensor. */
NB_API void nb_set_requires_grad(nb_tensor *t, bool on);
NB_API bool nb_requires_grad(const nb_tensor *t);
/* True when t was not produced by a recorded op. */
NB_API bool nb_is_leaf(const nb_tensor *t);
/* The gradient accumulated into leaf t (owned by t; do not free), or NULL. */
NB_API nb_tensor *nb_grad(const nb_tensor *t);
/* Set the accumulated gradient of t to zeros (in place, bumping its version;
   a gradient that carries a graph from NB_CREATE_GRAPH is dropped instead). */
NB_API void nb_zero_grad(nb_tensor *t);
/* Drop the accumulated gradient of t (nb_grad(t) becomes NULL, a pointer to
   the old one is no longer valid): the next backward stores its gradient
   without adding it to zeros. torch's zero_grad(set_to_none=True). */
NB_API void nb_clear_grad(nb_tensor *t);

enum { NB_RETAIN_GRAPH = 1, NB_CREATE_GRAPH = 2 };
/* Backpropagate from root, accumulating d(root)/d(leaf), weighted by seed, into
   the gradient of every leaf that requires grad and reaches root. seed NULL
   needs a one-element root (seed 1); else seed has root's shape. Without
   NB_RETAIN_GRAPH the graph's saved tensors are released afterwards and a
   second backward through it is an error. With NB_CREATE_GRAPH the backward
   pass is itself recorded, so the gradients can be differentiated again; the
   leaf's gradient then refers back to the leaf through that graph (as in
   PyTorch), so call nb_zero_grad on such leaves before freeing them, or use
   nb_gradient, which returns gradients owned by the scope instead.
   Returns 0, or nonzero with an error (then no gradient was changed). */
NB_API int nb_backward(nb_tensor *root, const nb_tensor *seed, unsigned flags);
/* d out / d wrt for a one-element out, where wrt is any tensor that out was
   computed from (a leaf or an intermediate). Touches no .grad. A wrt that out
   does not depend on gives zeros. The result belongs to the current scope. */
NB_API nb_tensor *nb_gradient(nb_tensor *out, nb_tensor *wrt, unsigned flags);
/* The general form: vector-Jacobian products of out (seeded by seed, or 1 for a
   one-element out when seed is NULL) with respect to n tensors at once, written
   to grads[0..n-1]. Returns 0 or nonzero with an error (grads then NULL). */
NB_API int nb_gradients(nb_tensor *out, const nb_tensor *seed, int n, nb_tensor *const *wrt, unsigned flags,
                        nb_tensor **grads);
/* A gradient-ready hook (per thread), for code that wants to act on each leaf's
   gradient while the rest of the backward pass still runs (nabla/dist.h's
   nb_ddp starts its all-reduces this way). During nb_backward on this thread
   (not nb_gradient/nb_gradients), fn(leaf, grad, user) is called once for each
   leaf that receives a gradient, as soon as that gradient is final: right
   after the last node that feeds the leaf (its last consumer in the
   topological order) has run its backward rule, while the nodes nearer the
   inputs are still to come. grad is the value the leaf's .grad will hold when
   nb_backward returns (its old .grad plus this pass's contribution), a
   contiguous tensor of the leaf's shape and dtype owned by the library: read
   it, do not modify or free it, nor keep it after fn returns. The .grad itself
   is installed only when the whole pass has succeeded, so a backward that
   fails after some hooks have fired still changes no .grad (the hook has then
   seen values that were never installed). fn runs on the thread calling
   nb_backward, with grad mode off (on under NB_CREATE_GRAPH), and must not
   call nb_backward itself. Leaves fire in a fixed order for a given graph.
   fn NULL removes the hook. */
typedef void (*nb_grad_hook)(nb_tensor *leaf, nb_tensor *grad, void *user);
NB_API void nb_set_grad_ready_hook(nb_grad_hook fn, void *user);
/* The hook set on this thread (NULL if none); *user gets its argument when user is not NULL. */
NB_API nb_grad_hook nb_grad_ready_hook(void **user);
/* Grad mode of this thread (like torch.no_grad): when off, no op is recorded. */
NB_API void nb_set_grad_enabled(bool on);
NB_API bool nb_grad_enabled(void);
/* A tensor sharing t's storage, outside every graph (requires no grad). */
NB_API nb_tensor *nb_detach(nb_tensor *t);

/* Give t a short label (at most 23 characters kept) used when drawing graphs,
   e.g. a module's parameters their dotted names (nb_module_name_params),
   as `nabla train` does for its graph.dot. Any text is allowed: the drawings
   escape it. */
NB_API void nb_set_name(nb_tensor *t, const char *name);
/* Write the graph that produced t: tensors as nodes labelled with their name
   (or t<i>) and shape, each recorded op as a box with edges from its inputs
   and to its result; leaves that require grad are marked. DOT for Graphviz,
   or a Mermaid flowchart. Return 0, or nonzero with an error. */
NB_API int nb_graph_dot(nb_tensor *t, FILE *f);
NB_API int nb_graph_mermaid(nb_tensor *t, FILE *f);

/* Numerical gradient check. f maps the n inputs to one tensor (any shape); it
   must build its result only from its inputs with nabla ops. The check compares
   the analytic Jacobian (one backward pass per output element, or a random
   projection when the output has more than max_jacobian_rows elements) with
   central differences (f(x + eps) - f(x - eps)) / 2 eps, and passes when
   |analytic - numeric| <= atol + rtol * |numeric| for every element. Inputs
   must be f64 unless the caller sets tolerances (atol > 0 and rtol > 0). Leaf
   inputs that do not require grad are given it for the check and restored.
   second_order also checks the gradient of the gradient (the vector-Jacobian
   product differentiated again with respect to the inputs). */
typedef nb_tensor *(*nb_fn)(int n, nb_tensor *const *inputs, void *ud);
typedef struct {
    double eps;   /* 0: 1e-6 */
    double atol;  /* 0: 1e-5 */
    double rtol;  /* 0: 1e-3 */
    bool second_order;
    int64_t max_jacobian_rows; /* 0: 256 */
} nb_gradcheck_opts;
typedef struct {
    bool passed;
    int input;            /* input holding the worst element */
    int64_t index;        /* its row-major index in that input */
    int64_t out_index;    /* output element (or -1 for a projection) */
    double analytic, numeric;
    double excess;        /* worst |a - n| - (atol + rtol |n|); <= 0 when passed */
    double worst_ratio;   /* worst |a - n| / (atol + rtol |n|) over every element checked (both
                             orders with second_order); <= 1 when passed */
    int order;            /* 1, or 2 when the second-order check failed */
} nb_gradcheck_result;
/* Returns 0 when the check passes, 1 when it fails (res says where), -1 on an
   error (bad arguments, f failed). opts and res may be NULL. */
NB_API int nb_gradcheck(nb_fn f, void *ud, int n, nb_tensor *const *inputs, const nb_gradcheck_opts *opts,
                        nb_gradcheck_result *res);

/* ------------------------------------------------------------------------ */
/* Ops. Forward kernels and gradient rules live in src/ops; the list of every  */
/* op with its rule is src/ops/ops.def and docs/OPS.md.                      */
/* ------------------------------------------------------------------------ */

/* Elementwise binary, broadcasting. */
NB_API nb_tensor *nb_add(nb_tensor *a, nb_tensor *b);
NB_API nb_tensor *nb_sub(nb_tensor *a, nb_tensor *b);
NB_API nb_tensor *nb_mul(nb_tensor *a, nb_tensor *b);   /* Hadamard */
NB_API nb_tensor *nb_div(nb_tensor *a, nb_tensor *b);
NB_API nb_tensor *nb_pow_t(nb_tensor *a, nb_tensor *p); /* a^p, differentiable in both;
                                                           d/dp is 0 where a = 0 and p >= 0 */
/* Comparisons give 0/1 of the promoted dtype, outside every graph. */
NB_API nb_tensor *nb_gt(nb_tensor *a, nb_tensor *b);
NB_API nb_tensor *nb_lt(nb_tensor *a, nb_tensor *b);
NB_API nb_tensor *nb_eq(nb_tensor *a, nb_tensor *b);
/* cond ? a : b elementwise (cond nonzero), broadcasting all three. The gradient
   of the branch not taken is exactly 0 there (no NaN or inf leaks in). */
NB_API nb_tensor *nb_where(nb_tensor *cond, nb_tensor *a, nb_tensor *b);

/* Elementwise with a constant. */
NB_API nb_tensor *nb_neg(nb_tensor *a);
NB_API nb_tensor *nb_scale(nb_tensor *a, double c);      /* c a */
NB_API nb_tensor *nb_add_scalar(nb_tensor *a, double c); /* a + c */
NB_API nb_tensor *nb_pow(nb_tensor *a, double p);        /* a^p; gradient p a^(p-1), 0 for p = 0 */

/* Elementwise unary. Subgradients at kinks: relu'(0) = 0, |x|'(0) = 0,
   leaky_relu'(0) = alpha. sigmoid is exact and finite for any |x|. gelu is the
   exact form x Phi(x) = x (1 + erf(x / sqrt 2)) / 2. */
NB_API nb_tensor *nb_exp(nb_tensor *a);
NB_API nb_tensor *nb_log(nb_tensor *a);
NB_API nb_tensor *nb_sqrt(nb_tensor *a);
NB_API nb_tensor *nb_abs(nb_tensor *a);
NB_API nb_tensor *nb_sin(nb_tensor *a);
NB_API nb_tensor *nb_cos(nb_tensor *a);
NB_API nb_tensor *nb_tanh(nb_tensor *a);
NB_API nb_tensor *nb_sigmoid(nb_tensor *a);
NB_API nb_tensor *nb_relu(nb_tensor *a);
NB_API nb_tensor *nb_leaky_relu(nb_tensor *a, double alpha);
NB_API nb_tensor *nb_gelu(nb_tensor *a);
NB_API nb_tensor *nb_erf(nb_tensor *a);
NB_API nb_tensor *nb_sign(nb_tensor *a); /* -1, 0, 1; gradient 0 */

NB_API nb_tensor *nb_log1p(nb_tensor *a);    /* log(1 + a), accurate near 0 */
NB_API nb_tensor *nb_expm1(nb_tensor *a);    /* exp(a) - 1, accurate near 0 */
NB_API nb_tensor *nb_softplus(nb_tensor *a); /* log(1 + exp(a)); a itself above 20 (as PyTorch) */

/* Composites (their gradients come from the ops they are built from).
   maximum/minimum broadcast; at a tie the gradient is split evenly.
   clamp passes the gradient inside [lo, hi], bounds included.
   logsumexp is max-shifted (by 0 where the max is infinite, so +inf gives
   +inf, as PyTorch); var_axes divides by max(0, n - correction), 1 being
   PyTorch's default (no degrees of freedom: inf, or NaN for equal values);
   norm is the L2 norm of all elements. docs/OPS.md ("Special values") lists
   what these and the other ops give for infinities and NaNs. */
NB_API nb_tensor *nb_maximum(nb_tensor *a, nb_tensor *b);
NB_API nb_tensor *nb_minimum(nb_tensor *a, nb_tensor *b);
NB_API nb_tensor *nb_clamp(nb_tensor *x, double lo, double hi);
NB_API nb_tensor *nb_logsumexp(nb_tensor *x, int naxes, const int *axes, bool keepdim);
NB_API nb_tensor *nb_var_axes(nb_tensor *x, int naxes, const int *axes, int correction, bool keepdim);
NB_API nb_tensor *nb_norm(nb_tensor *x);

/* dtype conversion (differentiable between f32 and f64; to or from NB_I64 it
   is outside every graph). Returns a new tensor even when dt is t's dtype.
   To NB_I64 values are truncated toward zero; the first element (row-major)
   that is NaN, infinite or outside [-2^63, 2^63) makes it an error naming its
   index and value. */
NB_API nb_tensor *nb_to(nb_tensor *t, nb_dtype dt);
/* A contiguous copy, recorded in the graph. */
NB_API nb_tensor *nb_clone(nb_tensor *t);
/* t itself moved to no new storage when already contiguous (a view), else a
   contiguous copy; recorded in the graph either way. */
NB_API nb_tensor *nb_contiguous(nb_tensor *t);

/* Reductions. nb_sum / nb_mean reduce every axis to rank 0. The _axes forms
   reduce the naxes listed (naxes == 0 with axes NULL reduces all); keepdim keeps
   them as size 1. The mean of zero elements is NaN, the sum 0. max of an axis of
   size 0 is an error. max_axes: when several elements tie for the maximum, the
   gradient is split evenly among them (as torch.amax). */
NB_API nb_tensor *nb_sum(nb_tensor *a);
NB_API nb_tensor *nb_mean(nb_tensor *a);
NB_API nb_tensor *nb_sum_axes(nb_tensor *a, int naxes, const int *axes, bool keepdim);
NB_API nb_tensor *nb_mean_axes(nb_tensor *a, int naxes, const int *axes, bool keepdim);
NB_API nb_tensor *nb_max_axes(nb_tensor *a, int naxes, const int *axes, bool keepdim);

/* Shape. reshape accepts one -1 entry to infer; it is a view when a is
   contiguous, a copy otherwise. transpose swaps two axes; permute reorders all
   (perm has rank entries); slice keeps [start, stop) of one axis (negative
   start/stop count from the end, as Python; stop is clamped to the size, a
   start beyond it is an error); expand broadcasts size-1 axes (and new leading
   axes) to shape without copying; concat joins tensors that agree on every
   other axis. */
NB_API nb_tensor *nb_reshape(nb_tensor *a, int rank, const int64_t *shape);
NB_API nb_tensor *nb_transpose(nb_tensor *a, int d0, int d1);
NB_API nb_tensor *nb_permute(nb_tensor *a, const int *perm);
NB_API nb_tensor *nb_slice(nb_tensor *a, int axis, int64_t start, int64_t stop);
NB_API nb_tensor *nb_expand(nb_tensor *a, int rank, const int64_t *shape);
NB_API nb_tensor *nb_concat(int n, nb_tensor *const *ts, int axis);
/* flip reverses one axis (a view with a negative stride); squeeze drops an axis
   of size 1; unsqueeze inserts one at `axis` (in the result's numbering); stack
   joins same-shaped tensors along a new axis; split cuts `a` along axis into n
   views of the given sizes (which must add up to the axis), written to out. */
NB_API nb_tensor *nb_flip(nb_tensor *a, int axis);
NB_API nb_tensor *nb_squeeze(nb_tensor *a, int axis);
NB_API nb_tensor *nb_unsqueeze(nb_tensor *a, int axis);
NB_API nb_tensor *nb_stack(int n, nb_tensor *const *ts, int axis);
NB_API int nb_split(nb_tensor *a, int axis, int n, const int64_t *sizes, nb_tensor **out);

/* NumPy matmul: 1-D operands are promoted (a to a row, b to a column) and the
   added axis removed from the result; 2-D is the matrix product; higher ranks
   are stacks of matrices whose leading (batch) axes broadcast. */
NB_API nb_tensor *nb_matmul(nb_tensor *a, nb_tensor *b);

/* A fully connected layer in one op: act(x w^T + b) for x (..., in), weight w
   (out, in) and bias b (out) or NULL, all of one dtype; the result is
   (..., out). One matrix product whose epilogue adds the bias and applies the
   activation to each row while it is in cache; the same values as nb_matmul,
   nb_add and the activation in turn. Backward: dx = G' w, dw = G'^T x,
   db = the column sums of G', with G' = G act'(y) computed from the output. */
typedef enum { NB_ACT_NONE, NB_ACT_RELU, NB_ACT_TANH, NB_ACT_SIGMOID } nb_act;
NB_API nb_tensor *nb_dense(nb_tensor *x, nb_tensor *w, nb_tensor *b, nb_act act);

/* Softmax and log-softmax along an axis, max-subtracted: finite for logits of
   any size. */
NB_API nb_tensor *nb_softmax(nb_tensor *a, int axis);
NB_API nb_tensor *nb_log_softmax(nb_tensor *a, int axis);
/* Mean cross-entropy of logits (N,C) against NB_I64 targets (N) in [0, C),
   fused: its gradient is (softmax(logits) - onehot(targets)) / N. A target
   outside [0, C) is an error naming the first bad index. */
NB_API nb_tensor *nb_cross_entropy(nb_tensor *logits, nb_tensor *targets);
/* Cross-entropy with PyTorch 1.13's F.cross_entropy semantics (class indices, no class weights) over logits of
   any shape with the class axis LAST: logits (..., C) against NB_I64 targets (...) of the leading shape, e.g.
   a transformer's (B, T, C) against (B, T). PyTorch's F.cross_entropy takes the class axis second, (N, C, d1,
   ...) against (N, d1, ...): move it last (nb_permute) to pass such logits here; for (N, C) and (C) the two
   layouts are the same. opt NULL: the defaults {ignore_index -100, NB_REDUCE_MEAN, label_smoothing 0}.
   A target equal to ignore_index contributes 0 and is left out of the mean's denominator (the mean over the
   targets not ignored; NaN when every target is ignored, as PyTorch); any other target outside [0, C) is an
   error naming it and its position. NB_REDUCE_NONE gives the per-position losses (the targets' shape, 0 where
   ignored), NB_REDUCE_SUM their sum. label_smoothing eps in [0, 1]: each term is (1 - eps) (-log p[t]) +
   eps mean_k (-log p[k]). Fused as nb_cross_entropy: one pass per row forward and one backward, whatever the
   options; the recorded backward (NB_CREATE_GRAPH) is differentiable again. */
typedef enum { NB_REDUCE_MEAN, NB_REDUCE_SUM, NB_REDUCE_NONE } nb_reduction;
typedef struct {
    int64_t ignore_index;
    nb_reduction reduction;
    double label_smoothing;
} nb_ce_options;
NB_API nb_tensor *nb_cross_entropy_ex(nb_tensor *logits, nb_tensor *targets, const nb_ce_options *opt);
/* Mean negative log-likelihood: -mean_i logp[i, targets[i]] for log-probabilities (N,C). */
NB_API nb_tensor *nb_nll_loss(nb_tensor *logp, nb_tensor *targets);

/* Layer normalisation over the last axis: (x - mean) / sqrt(var + eps) * gamma
   + beta with the biased variance; gamma and beta have shape (D,) and may be
   NULL (no scale / no shift). */
NB_API nb_tensor *nb_layer_norm(nb_tensor *x, nb_tensor *gamma, nb_tensor *beta, double eps);
/* Batch norm over all axes but 1 ((N,C) or (N,C,H,W)); training uses and updates the running
   statistics (momentum as PyTorch's, unbiased running variance); eval uses them.
   PyTorch's F.batch_norm(x, running_mean, running_var, gamma, beta, training, momentum, eps): x is
   (N,C), (N,C,L) or (N,C,H,W) and float; gamma, beta, running_mean and running_var are (C,) of x's
   dtype or NULL (the running pair both or neither). With training, or without running statistics
   (PyTorch's function raises there; this is nn.BatchNorm with track_running_stats=False in eval),
   each channel is normalised by the mean and biased variance of its n = N (L or H W) values:
   y = (x - mean) / sqrt(var + eps) gamma + beta; training with running statistics then sets, in place
   and outside the graph, running_mean = (1 - momentum) running_mean + momentum mean and running_var =
   (1 - momentum) running_var + momentum var n / (n - 1) (an empty batch changes nothing). Eval with
   running statistics uses them instead (no gradient reaches them). Errors (nothing changed): other
   ranks, shapes other than (C,), mixed dtypes, one running tensor without the other, momentum outside
   [0, 1], eps not finite and > 0, n = 1 where batch statistics are used. A composite: gradients of
   every order in x, gamma and beta. */
NB_API nb_tensor *nb_batch_norm(nb_tensor *x, nb_tensor *gamma, nb_tensor *beta, nb_tensor *running_mean,
                                nb_tensor *running_var, bool training, double momentum, double eps);

/* Scaled dot-product attention: softmax(q k^T * scale + mask) v over the last two axes.
   q (..., Tq, d), k (..., Tk, d), v (..., Tk, dv); leading axes broadcast; mask NULL or
   broadcastable to (..., Tq, Tk): additive (float) or keep/drop (i64 0/1); causal: query i sees
   keys j <= i + (Tk - Tq) (the last query aligned with the last key, so a KV cache works);
   scale 0 means 1/sqrt(d). Result (..., Tq, dv).
   q, k and v share one float dtype; a float mask of the other dtype is converted (a recorded cast), and it is
   a differentiable input: its gradient is that of the scores, summed over the axes it was broadcast along.
   An i64 mask keeps key j for query i where it is nonzero and leaves it out (-inf) where it is 0; it gets no
   gradient. The mask may not add leading axes beyond those of q, k and v. Tq, Tk, d and dv must be >= 1.
   A query row that sees no key (every score -inf) gives NaN, as PyTorch's math path does (docs/OPS.md,
   "Special values"). The graph keeps q, k, v, the mask, the result and each row's log-sum-exp: no
   (..., Tq, Tk) matrix. */
NB_API nb_tensor *nb_attention(nb_tensor *q, nb_tensor *k, nb_tensor *v, nb_tensor *mask, bool causal, double scale);

/* Convolution and pooling options; 0 means the default (stride 1, padding 0, dilation 1, groups 1). */
typedef struct { int stride[2], padding[2], dilation[2], groups; } nb_conv2d_opts; /* 0 = default: 1, 0, 1, 1 */
/* x (N,C,H,W), w (O, C/groups, kH, kW), b (O) or NULL: PyTorch's conv2d (a cross-correlation, zero padding).
   Result (N,O,H',W'), H' = (H + 2 padding - dilation (kH - 1) - 1) / stride + 1 (W' likewise). x, w and b share
   one float dtype; views are fine. Errors name the shapes: ranks other than 4, channels not divisible by
   groups, a weight whose C/groups disagrees with x, a (dilated) kernel larger than the padded input, a
   negative stride, padding, dilation or groups, a bias not of shape (O). Gradients of every order (docs/OPS.md):
   the input gradient is nb_conv2d_input, the weight gradient nb_conv2d_weight. */
NB_API nb_tensor *nb_conv2d(nb_tensor *x, nb_tensor *w, nb_tensor *b, nb_conv2d_opts o);
/* torch.nn.grad.conv2d_input: the gradient with respect to x (of shape x_shape) of conv2d(x, w, o) for the output
   gradient g (N,O,H',W'), i.e. the transposed convolution of g with w; H' and W' must be those conv2d gives for
   x_shape (input positions no output reads get 0). Differentiable in w and g. */
NB_API nb_tensor *nb_conv2d_input(const int64_t x_shape[4], nb_tensor *w, nb_tensor *g, nb_conv2d_opts o);
/* torch.nn.grad.conv2d_weight: the gradient with respect to w (of shape w_shape) of conv2d(x, w, o) for the
   output gradient g. Differentiable in x and g. */
NB_API nb_tensor *nb_conv2d_weight(nb_tensor *x, const int64_t w_shape[4], nb_tensor *g, nb_conv2d_opts o);
/* Pooling windows kernel (kH,kW); o.stride 0 means the kernel size; o.groups unused. x (N,C,H,W) float;
   padding at most half the (dilated) kernel, as PyTorch requires; result (N,C,H',W') with H' as for nb_conv2d
   (no ceil mode). max_pool2d: the padding is never picked (as -inf); ties go to the first maximum of the
   window in row order and a NaN wins, as PyTorch; the gradient goes to the picked position. avg_pool2d: the
   sum over the window divided by kH kW, padding counted (PyTorch's default count_include_pad); no dilation. */
NB_API nb_tensor *nb_max_pool2d(nb_tensor *x, const int kernel[2], nb_conv2d_opts o);
NB_API nb_tensor *nb_avg_pool2d(nb_tensor *x, const int kernel[2], nb_conv2d_opts o);
/* max_pool2d that also gives the picked positions (return_indices=True): *indices (N,C,H',W') NB_I64, each the
   flat position h W + w in its (H, W) plane, a new tensor of the current scope (NULL: not wanted). */
NB_API nb_tensor *nb_max_pool2d_with_indices(nb_tensor *x, const int kernel[2], nb_conv2d_opts o,
                                             nb_tensor **indices);
/* Global average pooling (adaptive_avg_pool2d(x, 1)): x (N,C,H,W) -> (N,C,1,1), the mean of each plane. */
NB_API nb_tensor *nb_global_avg_pool2d(nb_tensor *x);
/* torch.flatten(x, start, end): axes start..end (negative counts from the end) merged into one; a view when
   x's layout allows it. A rank-0 x gives (1). */
NB_API nb_tensor *nb_flatten(nb_tensor *x, int start, int end);

/* Custom ops, like torch.autograd.Function. forward computes the result from
   the inputs (grad mode is off inside it) and may save tensors for backward
   with nb_ctx_save; backward receives the gradient of the result and writes
   into grad_inputs[i] the gradient for input i (leave NULL where none), each
   of input i's shape and dtype, built with nabla ops (then the op is also
   differentiable twice). Both return: forward the result or NULL, backward 0
   or nonzero. A backward that gives a gradient of the wrong shape makes
   nb_backward fail with a message naming the op. */
typedef struct nb_ctx nb_ctx;
typedef nb_tensor *(*nb_custom_forward)(nb_ctx *ctx, int n, nb_tensor *const *inputs, void *ud);
typedef int (*nb_custom_backward)(nb_ctx *ctx, nb_tensor *grad_out, nb_tensor **grad_inputs, void *ud);
NB_API nb_tensor *nb_custom(const char *name, int n, nb_tensor *const *inputs, nb_custom_forward forward,
                            nb_custom_backward backward, void *ud);
/* Save n tensors (up to 16 in all) for backward; they stay alive with the graph. */
NB_API int nb_ctx_save(nb_ctx *ctx, int n, nb_tensor *const *ts);
/* Saved tensor i, or NULL with an error if it was modified in place since. */
NB_API nb_tensor *nb_ctx_saved(const nb_ctx *ctx, int i);
/* The name given to nb_custom. */
NB_API const char *nb_ctx_name(const nb_ctx *ctx);

/* Einstein summation in NumPy/PyTorch notation: "ij,jk->ik"; an implicit
   output ("ij,jk": "..." first, then the letters that appear once, in ASCII
   order); repeated indices within an operand (diagonal "ii->i", trace "ii->");
   indices absent from the output are summed; "..." for leading (broadcast) axes
   (those missing from an explicit output are summed); size-1 axes broadcast;
   1..26 operands; labels a-z and A-Z, spaces ignored. Built from permute,
   reshape, mul, sum and matmul, so gradients of any order come from those; for
   three or more operands the pair contracted next is the one with the smallest
   result (greedy, as opt_einsum) among those whose result has rank at most
   NB_MAX_RANK; when no pair does, it is an error. The result may be a view of an operand
   ("ij->ji"). Errors name the spec and what is wrong. */
NB_API nb_tensor *nb_einsum(const char *spec, int n, nb_tensor *const *operands);
/* The contraction order nb_einsum would choose for spec and these shapes:
   writes a description such as "((0,1),2)" into buf (NULL allowed) and returns
   the estimated FLOP count of the pairwise contractions (2 x multiply-adds;
   single-operand diagonals and sums count 0), or -1 on error: every error of
   the spec, the shapes or the rank limit that nb_einsum reports (not the
   failure to allocate an intermediate, which it does not make). */
NB_API int64_t nb_einsum_path(const char *spec, int n, nb_tensor *const *operands, char *buf, size_t cap);

/* Square matrices (..., n, n), batched over leading axes, by LU with partial
   pivoting. nb_inverse fails on a singular matrix (naming its batch index);
   nb_det gives 0 for one and nb_logdet -inf (their gradients then fail,
   needing the inverse); nb_logdet is log(det), NaN for a negative determinant
   (as torch.logdet). A matrix holding a NaN has NaN det and logdet and an
   all-NaN inverse. */
NB_API nb_tensor *nb_inverse(nb_tensor *a);
NB_API nb_tensor *nb_det(nb_tensor *a);
NB_API nb_tensor *nb_logdet(nb_tensor *a);

/* Selection by NB_I64 indices along an axis (negative indices count from the
   end; others out of range are an error naming the first). index_select takes
   whole slices: idx is 1-D and the result has len(idx) along axis (an
   embedding lookup is index_select(table, 0, ids)). gather picks elementwise:
   idx has a's rank, matches a outside axis, and gives the result's shape.
   a may be of any dtype (i64 labels too; those carry no gradient). Gradients
   scatter-add back, so repeated indices accumulate. */
NB_API nb_tensor *nb_index_select(nb_tensor *a, int axis, nb_tensor *idx);
NB_API nb_tensor *nb_gather(nb_tensor *a, int axis, nb_tensor *idx);

/* Cumulative sum along an axis (accumulated in double). */
NB_API nb_tensor *nb_cumsum(nb_tensor *a, int axis);
/* Constant padding: pads holds (before, after) for each axis, 2 * rank entries, none negative. */
NB_API nb_tensor *nb_pad(nb_tensor *a, const int64_t *pads, double value);

/* A small seedable random generator (splitmix64): the same seed gives the same
   sequence on every machine. Its state is plain data; copy it to fork a stream. */
typedef struct nb_rng {
    uint64_t state;
} nb_rng;
NB_API void nb_rng_seed(nb_rng *r, uint64_t seed);
NB_API uint64_t nb_rng_next(nb_rng *r);
NB_API double nb_rng_uniform(nb_rng *r); /* in [0, 1) */
/* Inverted dropout: in training, each element is zeroed with probability p and
   the others scaled by 1 / (1 - p), drawing from rng (reproducible for a seed);
   otherwise (or for p = 0) the identity. The mask is a constant of the graph. */
NB_API nb_tensor *nb_dropout(nb_tensor *x, double p, bool training, nb_rng *rng);

/* ------------------------------------------------------------------------ */
/* Transformer ops                                                          */
/* ------------------------------------------------------------------------ */
/* GELU's tanh approximation, PyTorch's gelu(x, approximate='tanh') (GPT-2's):
   x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), computed as the equal
   x sigmoid(2 sqrt(2/pi) (x + 0.044715 x^3)), which does not cancel for
   negative x. f32 within 0.501 ulp of the exact function, f64 within
   2 + 10|u| ulp, u = sqrt(2/pi) (x + 0.044715 x^3) (docs/OPS.md). -inf gives
   NaN as PyTorch; the gradient is NaN at +-inf. */
NB_API nb_tensor *nb_gelu_tanh(nb_tensor *x);
/* Random tensors (torch.randn, torch.rand) of a float dtype, drawn from rng in
   row-major order: the same values for a seed on every kernel set and thread
   count. randn: standard normal by Box-Muller, one pair of nb_rng_uniform draws
   per two elements (an odd count draws a last pair and keeps its first value);
   rand: uniform in [0, 1), one draw per element. Errors: a NULL rng, NB_I64,
   a bad shape (as nb_full). Never recorded. */
NB_API nb_tensor *nb_randn(nb_dtype dt, int rank, const int64_t *shape, nb_rng *rng);
NB_API nb_tensor *nb_rand(nb_dtype dt, int rank, const int64_t *shape, nb_rng *rng);
/* torch.arange(start, end, step): the 1-D tensor start, start + step, ...
   below end (above it for a negative step), ceil((end - start) / step)
   elements, element i computed as start + i step in double and converted to dt
   (NB_I64 truncates toward zero, as nb_full). Errors: step 0 or not finite,
   start or end not finite, a step whose sign points away from end (as PyTorch),
   a length beyond 2^53. start == end gives an empty tensor. Never recorded. */
NB_API nb_tensor *nb_arange(nb_dtype dt, double start, double end, double step);
/* torch.tril(x, k) / torch.triu(x, k): x (rank >= 2, float) with the elements
   above (tril) or below (triu) diagonal k of its last two axes set to 0, every
   batch alike; k = 0 the main diagonal, k > 0 above it, k < 0 below it. The
   gradient passes where x is kept and is 0 elsewhere (a composite of nb_where). */
NB_API nb_tensor *nb_tril(nb_tensor *x, int64_t k);
NB_API nb_tensor *nb_triu(nb_tensor *x, int64_t k);
/* torch.masked_fill(x, mask, value): x (float) with value wherever mask
   (NB_I64, f32 or f64; nonzero means fill) is set; mask broadcasts to x's shape
   (the result has x's shape). The gradient passes where not filled, 0 where
   filled; mask carries none. value may be +-inf (attention's -inf mask). */
NB_API nb_tensor *nb_masked_fill(nb_tensor *x, nb_tensor *mask, double value);
/* torch.argmax(x, axis, keepdim): the NB_I64 index along axis of the largest
   value of x (float), the first one at ties, and that of the first NaN where a
   slice holds one (NaN counts as the largest, as PyTorch). The axis is removed
   unless keepdim. An empty axis is an error. Never recorded. */
NB_API nb_tensor *nb_argmax(nb_tensor *x, int axis, bool keepdim);
/* torch.topk(x, k, axis, largest, sorted=True): the k largest (largest true) or
   smallest values of x (float) along axis, in order, into *values (x's rank,
   k along axis; recorded: its gradient is scattered back to the picked places,
   a gather), and their NB_I64 indices into *indices (never recorded). Either
   pointer may be NULL. Ties: the lower index first. NaN counts as the largest
   (first for largest, last for smallest), as PyTorch. k in [0, size of axis].
   k rounds of argmax: O(k n) work, meant for a k much smaller than n. Returns 0,
   or -1 with an error (then both are NULL). */
NB_API int nb_topk(nb_tensor *x, int64_t k, int axis, bool largest, nb_tensor **values, nb_tensor **indices);
/* torch.multinomial(p, num_samples, replacement=True): num_samples category
   indices (NB_I64) drawn independently per row of p (n) or (rows, n), with
   probability p[i] / sum(p) (p need not be normalised). Draws one
   nb_rng_uniform per sample, row by row: index i with cdf[i-1] <= u sum < cdf[i],
   cdf the cumulative sum in double (a category of probability 0 is never
   drawn). The result is (num_samples) or (rows, num_samples); never recorded.
   Errors: NULL rng, rank other than 1 or 2, no categories, a negative,
   infinite or NaN probability, a row summing to 0, num_samples < 0. Work and
   scratch memory: rows x num_samples x n. */
NB_API nb_tensor *nb_multinomial(nb_tensor *p, int64_t num_samples, nb_rng *rng);

/* ------------------------------------------------------------------------ */
/* In-place ops (suffix _). They bump the version counter of the storage, so a */
/* backward that needs a value saved before the change fails with an error.  */
/* They refuse a target that requires grad while grad mode is on, and are     */
/* never recorded. Return 0 or nonzero with an error (dst then unchanged).    */
/* ------------------------------------------------------------------------ */
NB_API int nb_add_(nb_tensor *dst, nb_tensor *src);   /* dst += src (src broadcasts to dst) */
NB_API int nb_sub_(nb_tensor *dst, nb_tensor *src);   /* dst -= src */
NB_API int nb_mul_(nb_tensor *dst, nb_tensor *src);   /* dst *= src */
NB_API int nb_copy_(nb_tensor *dst, nb_tensor *src);  /* dst = src */
NB_API int nb_scale_(nb_tensor *dst, double c);       /* dst *= c */
NB_API int nb_fill_(nb_tensor *dst, double v);        /* dst = v */
NB_API int nb_axpy_(nb_tensor *dst, double alpha, nb_tensor *src); /* dst += alpha src */

/* Optimizer updates in place: one fused pass over the parameter p, its gradient
   g and its state, computed in p's precision (as torch.optim computes them) and
   split across threads when large. p, g and the state are contiguous, of p's
   shape and float dtype, and do not share storage. nabla/nn.h's optimizers call
   these; they are public for training loops of one's own.
   SGD: d = g + weight_decay p; with momentum, buf = (first ? d : momentum buf + d)
   and d = nesterov ? d + momentum buf : buf; then p -= lr d. buf may be NULL
   when momentum is 0. */
NB_API int nb_sgd_update_(nb_tensor *p, const nb_tensor *g, nb_tensor *buf, double lr, double momentum,
                          double weight_decay, bool nesterov, bool first);
/* Adam at step t >= 1 (decoupled false: weight decay added to g as L2) or AdamW
   (decoupled: p *= 1 - lr weight_decay first): m = beta1 m + (1 - beta1) g,
   v = beta2 v + (1 - beta2) g^2,
   p -= lr / (1 - beta1^t) m / (sqrt(v) / sqrt(1 - beta2^t) + eps). */
NB_API int nb_adam_update_(nb_tensor *p, const nb_tensor *g, nb_tensor *m, nb_tensor *v, double lr, double beta1,
                           double beta2, double eps, double weight_decay, bool decoupled, int64_t t);
/* 1 when no element of t is an infinity or a NaN; 0 when one is (its row-major
   index goes to *where when where is not NULL); -1 on an error. */
NB_API int nb_all_finite(const nb_tensor *t, int64_t *where);

#ifdef __cplusplus
}
#endif
#endif /* NABLA_H */

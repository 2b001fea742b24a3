/*
 * internal.h - the structures behind nb_tensor, shared by every source file.
 *
 * A tensor is a strided view (dtype, shape, strides, offset) of a storage: a
 * reference-counted block of device memory with its backend (the device's
 * kernel table), size and version counter. Views share their source's
 * storage. The storage of a tensor made by an op lives in that tensor's own
 * allocation, small data included (one allocation per op result); it outlives
 * the tensor while views of it remain.
 *
 * Lifetime is reference counted. `refs` counts the user's handle (while
 * `user` is set) plus every graph node, view and gradient that points at the
 * tensor. A scope owns the user handle of the tensors made inside it; when the
 * count reaches zero the tensor is destroyed (iteratively, so that freeing a
 * chain of a million nodes needs no deep recursion).
 *
 * A tensor made by a recorded op carries its graph node inline: the op, the
 * counted input tensors, the versions of the inputs its backward reads, and a
 * few parameters. See src/autograd/engine.c for the backward pass.
 */
#ifndef NABLA_INTERNAL_H
#define NABLA_INTERNAL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "nabla.h"

#if defined(__GNUC__)
#define NBI_API __attribute__((visibility("hidden")))
#else
#define NBI_API
#endif

#include "../backend/backend.h"

#define NBI_ALIGN 64
#define NBI_MAGIC 0x6e61626cu  /* live handle */

/* The ops, from the one list in src/ops/ops.def. */
typedef enum {
#define NB_OP(id, name, arity, saved, rule) NBI_OP_##id,
#include "../ops/ops.def"
#undef NB_OP
    NBI_OP_COUNT
} nbi_op;

struct nb_tensor;
/* A backward rule: given the node's output `out` and the gradient g of the
   loss with respect to it (g has out's shape), write into gin[i] the gradient
   for input i (NULL where input i needs none). Rules are written with the
   public differentiable ops, so a recorded backward (NB_CREATE_GRAPH) is
   itself differentiable. Return 0, or -1 with an error recorded. */
typedef int (*nbi_backward_fn)(struct nb_tensor *out, struct nb_tensor *g, struct nb_tensor **gin);

typedef struct {
    const char *name;
    int arity; /* -1: variadic */
    int saved; /* tensors kept on the node for the backward (nbi_save); -1: any number up to NBI_MAX_SAVED */
    nbi_backward_fn backward;
} nbi_op_info;
#define NBI_MAX_SAVED 16
NBI_API extern const nbi_op_info nbi_ops[NBI_OP_COUNT];

#define NBI_INLINE_IN 2

typedef struct {
    uint16_t op;
    uint8_t released;   /* saved tensors dropped after a backward */
    uint8_t saves_out;  /* backward reads the output's value */
    uint16_t saved_spent; /* bit i: saved tensor i was written over by a backward (nbi_bw_reuse_saved) */
    int32_t nin;
    uint32_t saves_in;  /* bit i: backward reads input i's value (bit 31: inputs 31 and up) */
    uint32_t out_ver;   /* version of the output storage when recorded */
    struct nb_tensor **in; /* points at in_inline or a separate array */
    struct nb_tensor *in_inline[NBI_INLINE_IN];
    uint32_t *in_ver;
    uint32_t ver_inline[NBI_INLINE_IN];
    int32_t nsaved;     /* tensors saved for the backward (nbi_save), with their versions */
    struct nb_tensor **saved;
    uint32_t *saved_ver;
    double p[2];        /* op parameters: scalar, exponent, alpha ... */
    int32_t ip[NB_MAX_RANK + 2]; /* integer parameters: axes, perm ... */
    int64_t lp[2];      /* slice start/stop */
    void *ext;          /* op-owned plain memory (a custom op's context, no tensors in it); freed with the node */
} nbi_node;

typedef struct nbi_storage {
    int32_t refs;          /* views sharing it (each tensor counts once) */
    uint32_t version;      /* bumped by every in-place write through any view */
    const nbi_backend *be; /* the device's kernels and allocator */
    char *ptr;             /* the device memory */
    size_t bytes;
    bool owns_ptr;         /* ptr came from be->alloc (else it lies in home, after the header) */
    void *home;            /* the allocation holding this header, freed when refs reach 0 */
} nbi_storage;

struct nb_tensor {
    uint32_t magic;
    int32_t refs;
    nb_dtype dtype;
    int8_t rank;
    bool requires_grad;
    bool user;          /* the user's handle is alive (counted in refs) */
    int32_t holds;      /* nb_retain calls not yet matched by nb_release (each also counted in refs) */
    bool has_node;
    int32_t scope;      /* index of the owning scope, -1 for none */
    int64_t numel;
    int64_t shape[NB_MAX_RANK];
    int64_t strides[NB_MAX_RANK]; /* in elements */
    int64_t offset;     /* of element 0 in the storage, in elements */
    nbi_storage *st;    /* shared by every view of it */
    nbi_storage own;    /* the storage of a tensor that made its own (st == &own) */
    struct nb_tensor *sprev, *snext; /* scope list */
    struct nb_tensor *grad; /* accumulated gradient of a leaf */
    /* backward bookkeeping */
    uint64_t mark;
    int64_t draw_id;    /* index while a graph is being drawn */
    char name[24];      /* optional label for drawings (nb_set_name) */
    bool bw_needed;     /* leads to a tensor whose gradient is wanted */
    int64_t bw_last;    /* a leaf's last consumer in the backward order, or its state once its hook fired */
    struct nb_tensor *acc;
    nbi_node node;
};

/* ---- errors (src/core/error.c) ---- */
#if defined(__GNUC__)
#define NBI_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define NBI_PRINTF(a, b)
#endif
/* Record "fn: message" unless a message is already recorded. Returns NULL. */
NBI_API void *nbi_err(const char *fn, const char *fmt, ...) NBI_PRINTF(2, 3);
/* The same, but replacing any message already there. */
NBI_API void *nbi_err_force(const char *fn, const char *fmt, ...) NBI_PRINTF(2, 3);
/* Check a tensor argument: NULL keeps the first message; a dead handle is an error. */
NBI_API bool nbi_check(const char *fn, const nb_tensor *t, int argi);
/* Check a float (f32/f64) tensor argument. */
NBI_API bool nbi_check_float(const char *fn, const nb_tensor *t, int argi);

/* ---- memory (src/core/mem.c) ---- */
NBI_API void *nbi_alloc(size_t n);   /* 64-byte aligned, NULL on failure */
NBI_API void nbi_dealloc(void *p);
/* Blocks the library keeps for itself between calls (a thread's matrix-product packing buffers): straight from
   the hook and back to it, counted in nb_memory_stats.scratch instead of in_use. */
NBI_API void *nbi_alloc_scratch(size_t n);
NBI_API void nbi_dealloc_scratch(void *p);
NBI_API bool nbi_mul_ok(int64_t a, int64_t b, int64_t *out); /* overflow-checked a*b >= 0 */
/* Register fn (once) to give back what a kernel set keeps between calls: the calling thread's scratch, and with
   all (the allocation hooks are changing) its worker threads too. */
NBI_API void nbi_mem_on_release(void (*fn)(bool all));

/* ---- thread state ---- */
typedef struct {
    bool grad_off;          /* grad mode disabled */
    uint64_t epoch;         /* backward traversal marks */
    nb_tensor **scope_first; /* first tensor of each open scope's list */
    int nscopes, cap_scopes;
    int shared_scopes;      /* begun while out of memory: they share the parent's list */
    nb_grad_hook grad_hook; /* nb_set_grad_ready_hook */
    void *grad_hook_user;
    bool bw_frees;          /* in a backward that releases its graph as it ends (no NB_RETAIN_GRAPH) */
} nbi_thread;
NBI_API nbi_thread *nbi_tls(void);

/* ---- tensors (src/core/tensor.c) ---- */
static inline size_t nbi_dsize(nb_dtype dt) { return dt == NB_F32 ? 4 : 8; }
/* A new uninitialised contiguous root of the given shape, owned by the current scope. */
NBI_API nb_tensor *nbi_empty(const char *fn, nb_dtype dt, int rank, const int64_t *shape);
/* The same on backend be (nbi_empty uses the CPU's; ops use their operands'). */
NBI_API nb_tensor *nbi_empty_on(const char *fn, const nbi_backend *be, nb_dtype dt, int rank, const int64_t *shape);
/* nbi_empty on the backend of `like`. */
static inline nb_tensor *nbi_empty_like_be(const char *fn, const nb_tensor *like, nb_dtype dt, int rank,
                                           const int64_t *shape) {
    return nbi_empty_on(fn, like->st->be, dt, rank, shape);
}
/* A view of src's storage with the given geometry (offset in elements from the storage's start), owned by
   the current scope. */
NBI_API nb_tensor *nbi_view(nb_tensor *src, int rank, const int64_t *shape, const int64_t *strides, int64_t offset);
NBI_API void nbi_ref(nb_tensor *t);
NBI_API void nbi_unref(nb_tensor *t);
/* Hand t's user handle over: remove it from its scope without dropping it. */
NBI_API void nbi_unscope(nb_tensor *t);
/* Give t (whose user handle is gone but which is alive) a user handle in the current scope. */
NBI_API void nbi_adopt(nb_tensor *t);
NBI_API void nbi_contig_strides(int rank, const int64_t *shape, int64_t *strides);
NBI_API bool nbi_is_contig(const nb_tensor *t);
/* A value of dtype dt at host address p as a double, and storing one. */
NBI_API double nbi_load(nb_dtype dt, const char *p);
NBI_API void nbi_store(nb_dtype dt, char *p, double v);
/* Whether v has an i64 value (truncated toward zero): finite and in [-2^63, 2^63). NaN does not. Converting
   any other double to an integer is undefined behaviour, so every caller value bound for an i64 tensor is
   checked with this first. */
static inline bool nbi_i64_fits(double v) { return v >= -9223372036854775808.0 && v < 9223372036854775808.0; }
/* The multi-index of row-major position i in a tensor of this shape, as "(1,2)", into buf. */
NBI_API char *nbi_index_str(int rank, const int64_t *shape, int64_t i, char *buf, size_t cap);
/* Offset in elements of the element at row-major position `i`. */
NBI_API int64_t nbi_offset_of(const nb_tensor *t, int64_t i);

/* ---- shapes (src/core/shape.c) ---- */
NBI_API const char *nbi_shape_s(const nb_tensor *t, char *buf, size_t cap);
#define NBI_SHAPE(t) nbi_shape_s((t), (char[160]){0}, 160)
/* Whether a tensor may have this shape: every size >= 0 and the product of the sizes other than 0, times
   esize, at most 2^63 - 1 (and half the address space). esize is the element size for a tensor laid out
   contiguously (nbi_empty, reshape): an empty one is then held to the bound one with data has, so that its
   contiguous strides and byte offsets cannot overflow; esize 1 bounds the element count only (views whose
   strides come from a valid tensor, like an expand with stride 0). Otherwise records under fn "axis I has
   negative size S" or "shape overflows: ..." and returns false. */
NBI_API bool nbi_shape_ok(const char *fn, size_t esize, int rank, const int64_t *shape);
/* Broadcast two shapes; returns false (no error recorded) if they do not. */
NBI_API bool nbi_broadcast(int ra, const int64_t *sa, int rb, const int64_t *sb, int *rout, int64_t *out);
/* Normalise an axis for a tensor of the given rank; false if out of range. */
NBI_API bool nbi_axis(int axis, int rank, int *out);
/* nbi_axis for an op's axis argument: records "axis A is out of range for a
   tensor S of rank R" under fn when it is not. */
NBI_API bool nbi_axis_arg(const char *fn, int axis, const nb_tensor *t, int *out);
/* t itself when contiguous, else an unrecorded contiguous copy (a kernel's input). */
NBI_API nb_tensor *nbi_contiguous_input(const char *fn, nb_tensor *t);
/* A zero tensor of the given shape with g added at idx along axis ax (the gradient of gather: a recorded
   scatter_add when g needs grad); src/ops/index.c. */
NBI_API nb_tensor *nbi_scatter_add(nb_tensor *g, nb_tensor *idx, int ax, int rank, const int64_t *shape);
/* Strides of t as seen from a broadcast shape of rank `rank` (0 where broadcast). */
NBI_API void nbi_bstrides(const nb_tensor *t, int rank, const int64_t *shape, int64_t *strides);

/* ---- graph recording (src/autograd/engine.c) ---- */
/* Does an op on these inputs need recording? */
NBI_API bool nbi_needs_grad(int n, nb_tensor *const *in);
/* Record out as the result of op on inputs in[0..n-1]. saves_in/saves_out say
   which values its backward reads (their versions are checked then). Returns
   out, or NULL (out freed) when memory ran out. */
NBI_API nb_tensor *nbi_record(nb_tensor *out, nbi_op op, int n, nb_tensor *const *in, uint32_t saves_in,
                              bool saves_out);
NBI_API void nbi_release_node(nb_tensor *t);
/* Keep n tensors (NULL ones too) on out's node for its backward, after those already saved (counted references
   and their storage versions). out must have a node; at most the op's count in ops.def (NBI_MAX_SAVED for -1).
   Returns 0, or -1 with an error recorded (out of memory: nothing saved). */
/* For a backward rule: x's pending gradient (the sum of the contributions so far) when the rule may add its
   own contribution into it in place (first order, held by nothing else), else NULL. A rule that does so gives
   NULL as x's gradient. */
NBI_API nb_tensor *nbi_bw_acc(const nb_tensor *x);
/* For a first-order rule of a backward that releases its graph: a new tensor on the memory of saved tensor i of
   out's node when nothing else holds it, for the rule's result to be written over it, else NULL. The slot is
   marked spent (nbi_saved_spent): if that backward fails and is run again, the rule must do without it. */
NBI_API nb_tensor *nbi_bw_reuse_saved(nb_tensor *out, int i);
/* Whether saved tensor i of out's node was written over by nbi_bw_reuse_saved. */
NBI_API bool nbi_saved_spent(const nb_tensor *out, int i);
NBI_API int nbi_save(nb_tensor *out, int n, nb_tensor *const *ts);
/* Saved tensor i of out's node, or NULL with an error under fn naming the op when it was modified in place
   since it was saved, the graph was released, or there is no such tensor. */
NBI_API nb_tensor *nbi_saved(const char *fn, const nb_tensor *out, int i);
/* Drop the saved tensors and op-owned memory of a node, pushing each tensor to drop (nbi_unref, or the
   destroy list of src/core/tensor.c). */
NBI_API void nbi_node_free_saved(nbi_node *nd, void (*drop)(nb_tensor *t, void *arg), void *arg);

/* Sum g over the axes along which a tensor of shape (rank, shape) was broadcast
   to g's shape, so that the result has that shape. Differentiable. */
NBI_API nb_tensor *nbi_sum_to(nb_tensor *g, int rank, const int64_t *shape);
/* Results of ops that cannot be recorded (comparison masks) */
NBI_API nb_tensor *nbi_const_like(nb_tensor *like, double v);

/* ---- kernels: through the tensor's backend (src/backend/backend.h) ---- */
/* The kernel table of the device t lives on. */
static inline const nbi_backend *nbi_be(const nb_tensor *t) { return t->st->be; }
/* t's geometry as a kernel sees it. */
static inline nbi_arr nbi_arr_of(const nb_tensor *t) {
    nbi_arr a = {nbi_addr(t->st->ptr, t->offset, (int64_t)nbi_dsize(t->dtype)), t->dtype, t->rank, t->numel, t->shape,
                 t->strides};
    return a;
}
/* The kernel table new tensors get when no operand says otherwise: the CPU's. */
NBI_API const nbi_backend *nbi_default_be(void);
/* Whether the n tensors (NULL ones skipped) live on one device; otherwise records
   "fn: operands are on different devices: cpu and cuda:0" and returns false. */
NBI_API bool nbi_same_device(const char *fn, int n, nb_tensor *const *ts);
/* Records "fn: backend B has no kernel 'name' (tensor S on device D)" and returns NULL. */
NBI_API void *nbi_no_kernel(const char *fn, const nb_tensor *t, const char *name);
/* Read or write one element of t at offset off (in elements, from element 0 of the view), as a double. */
NBI_API double nbi_get_at(const nb_tensor *t, int64_t off);
NBI_API void nbi_set_at(nb_tensor *t, int64_t off, double v);
/* The first n elements of t in row-major order as doubles into host memory dst. 0, or -1 out of memory. */
NBI_API int nbi_read_f64(const nb_tensor *t, double *dst, int64_t n);
/* Fill t from n host doubles (or from host bytes of t's dtype when raw), row-major; t contiguous. */
NBI_API void nbi_write_host(nb_tensor *t, const void *src, bool raw);
/* host dst (t->numel elements of t's dtype) = t's elements, raw; t contiguous. */
NBI_API void nbi_read_host(const nb_tensor *t, void *dst);

/* Kernel calls on tensors, through out's (dst's) backend: the strided elementwise slots. */
NBI_API void nbi_k_fill(nb_tensor *dst, double v);
NBI_API void nbi_k_copy(nb_tensor *dst, const nb_tensor *src);
/* dst (contiguous) = the mean over p ranks of src (host memory, rank r's dst->numel values at src + r stride,
   dst's dtype), summed in double in rank order (nabla/dist.h's all-reduce). */
NBI_API void nbi_k_rank_mean(nb_tensor *dst, const void *src, int64_t stride, int p);
NBI_API void nbi_k_unary(nbi_unop op, nb_tensor *out, const nb_tensor *a, double c);
NBI_API void nbi_k_binary(nbi_binop op, nb_tensor *out, const nb_tensor *a, const nb_tensor *b);
NBI_API void nbi_k_where(nb_tensor *out, const nb_tensor *cond, const nb_tensor *a, const nb_tensor *b);
/* src copied into the block of dst (same rank) that starts off elements after dst's element 0, with src's shape
   and dst's strides (concat, pad, the gradient of slice). */
NBI_API void nbi_k_copy_into(nb_tensor *dst, int64_t off, const nb_tensor *src);

/* ---- first-order backward in one pass (src/ops/elementwise.c) ---- */
/* G op v (an NBI_B_*_GRAD rule) as one kernel pass when no graph of the gradient is being built (the usual
   first-order backward) and g and v have one shape and dtype: one tensor instead of three or four, the same
   bits as the composite rule. NULL otherwise: the caller takes its composite rule. */
NBI_API nb_tensor *nbi_fused_grad(nbi_binop op, nb_tensor *g, nb_tensor *v);

#endif

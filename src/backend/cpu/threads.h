/*
 * threads.h - the worker pool that splits large kernels across cores (internal).
 *
 * One process-wide pool of nb_num_threads() - 1 workers; the calling thread
 * takes the first part itself. A kernel is split into contiguous ranges of
 * [0, n); every caller arranges that the result does not depend on how the
 * range is cut (each output element is computed by one part, in the same
 * order as on one thread), so results are bit-identical for any thread count.
 * Between jobs the workers spin for a few microseconds, then sleep on a
 * condition variable. A job submitted while the pool is busy (another
 * application thread) or from inside a worker runs on the caller alone.
 */
#ifndef NABLA_BACKEND_CPU_THREADS_H
#define NABLA_BACKEND_CPU_THREADS_H

#include <stdbool.h>
#include <stdint.h>

#ifndef NBI_API
#define NBI_API __attribute__((visibility("hidden")))
#endif

/* Runs fn(ctx, lo, hi) over disjoint ranges covering [0, n), at most one range
   per thread and none shorter than `grain` (so n < 2 grain runs on the caller
   alone). Returns 0, or the first nonzero value a part returned. */
typedef int (*nbi_range_fn)(void *ctx, int64_t lo, int64_t hi);
NBI_API int nbi_parallel_for(int64_t n, int64_t grain, nbi_range_fn fn, void *ctx);

/* The number of threads a job of n items with this grain would use. */
NBI_API int nbi_parallel_parts(int64_t n, int64_t grain);

/* Joins the workers (their cached buffers are freed as they exit); the next
   parallel job starts them again. */
NBI_API void nbi_pool_shutdown(void);

/* Registered with the allocator (src/core/mem.c) when this set first keeps something between calls. */
NBI_API void nbi_mem_on_release(void (*fn)(bool all));
NBI_API void nbi_cpu_release(bool all);

#endif /* NABLA_BACKEND_CPU_THREADS_H */

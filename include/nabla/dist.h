/*
 * nabla/dist.h - data-parallel training over MPI processes.
 *
 * Each process (a "rank") holds a full copy of the model, computes the
 * gradient of its own part of the global batch, and the gradients are
 * averaged over the ranks before every optimizer step, so all copies stay
 * identical. A training loop:
 *
 *     nb_dist_init(&argc, &argv);
 *     nb_module *m = ...;  nb_optim *opt = nb_adam(...);   // same seed everywhere
 *     nb_ddp *d = nb_ddp_new(m, opt, 0);                    // rank 0's weights everywhere
 *     for (step...) {
 *         int64_t off, n = nb_dist_shard(B, nb_dist_rank(), nb_dist_size(), &off);
 *         nb_scope_begin();
 *         nb_tensor *loss = ...loss of rows off..off+n-1, scaled by n / B...;
 *         nb_optim_zero_grad(opt);
 *         int bad = nb_ddp_backward(d, loss) != 0 || nb_ddp_step(d) != 0;
 *         nb_scope_end();
 *         if (nb_dist_any_failed(bad)) break;           // every rank stops together
 *     }
 *     nb_ddp_free(d);  ...  nb_dist_finalize();
 *
 * Averages are computed in a reduction order fixed by rank, not by the MPI
 * library: every rank gathers every rank's values and sums them in rank order
 * 0, 1, ..., P-1 (in double), then divides by P. So the result has the same
 * bits on every rank and in every run with the same inputs.
 *
 * Loss scaling: the averaged gradient is the mean over ranks of each rank's
 * gradient. For it to equal the gradient of a mean loss over the global batch
 * of B rows, rank r's loss should be its shard's mean times P n_r / B (exactly
 * the shard's mean when B divides evenly).
 *
 * The library is built with MPI when CMake finds it (option NABLA_MPI); then
 * nb_dist_available() is true. Without MPI every function below that would
 * need it fails with the error "<function>: nabla was built without MPI";
 * nb_dist_rank and nb_dist_size give 0 and 1, and nb_dist_shard works.
 * Only the thread that called nb_dist_init may call these functions (MPI is
 * initialised with MPI_THREAD_FUNNELED). Every function that communicates is
 * collective: every rank must call it, in the same order, or the ranks wait
 * for each other forever. All return 0 on success and nonzero (with an error
 * recorded on the calling thread) on failure, never abort and never print.
 */
#ifndef NABLA_DIST_H
#define NABLA_DIST_H

#include "nn.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Whether this build of nabla has MPI. */
NB_API bool nb_dist_available(void);

/* Start MPI (MPI_Init_thread with MPI_THREAD_FUNNELED, passing argc and argv,
   which may be NULL) or, when the program already initialised MPI itself, use
   it as it is (nb_dist_finalize then leaves it for the program to finalise).
   Calling it again after success does nothing. Works on MPI_COMM_WORLD.
   Fails when MPI cannot give at least MPI_THREAD_FUNNELED, or without MPI. */
NB_API int nb_dist_init(int *argc, char ***argv);
/* Finalise MPI if nb_dist_init started it; afterwards rank and size are 0 and
   1 again. Collective. Fails without MPI or before nb_dist_init. */
NB_API int nb_dist_finalize(void);
/* This process's rank, 0..size-1; 0 before nb_dist_init and without MPI. */
NB_API int nb_dist_rank(void);
/* The number of processes; 1 before nb_dist_init and without MPI. */
NB_API int nb_dist_size(void);

/* Make every parameter and buffer of m (in nb_module_params and
   nb_module_buffers order) equal to rank 0's, bit for bit. Every rank's m must
   have the same structure: the same number of parameters and buffers with the
   same shapes and dtypes (checked; a mismatch on any rank fails on all of them
   and changes nothing). The copies are in place (tensor identities, optimizer
   state and gradients untouched). Collective. */
NB_API int nb_dist_broadcast_module(nb_module *m);

/* Replace the .grad of each of the n parameters by its average over the ranks
   (the fixed rank-order sum divided by size, rounded once to the dtype). A
   parameter without a .grad on a rank counts as zeros there and gets a .grad
   when its average is computed. The n parameters must agree in number, shape
   and dtype on every rank (checked as above: a failure on one rank fails
   all). Collective. */
NB_API int nb_dist_allreduce_grads(int n, nb_tensor *const *params);

/* Wait until every rank has called it. Collective. */
NB_API int nb_dist_barrier(void);

/* An all-reduce of a failure flag: returns 1 when local_failed is nonzero on
   any rank, 0 when it is zero on all of them (the same answer on every rank,
   so all can stop together), -1 with an error when the communication itself
   fails. Before nb_dist_init it returns local_failed != 0 (a single process).
   Collective. */
NB_API int nb_dist_any_failed(int local_failed);

/* v[0 .. n) summed over the ranks, in rank order (the same bits on every rank), written back into v on
   every rank: for metrics such as a loss summed over the ranks' shards. Before nb_dist_init, v is left as
   it is (a single process). 0, or -1 with an error. Collective. */
NB_API int nb_dist_allreduce_sum(double *v, int n);

/* Rank's part of a global batch of global_batch rows split over size ranks:
   returns the number of rows (those of the lower ranks first, sizes differing
   by at most one: the first global_batch % size ranks get one more) and
   writes the first row's index to *offset (when not NULL). Consecutive ranks
   take consecutive rows, so the parts in rank order are the whole batch.
   Pure arithmetic: needs no MPI. Returns -1 with an error for a negative
   batch, size < 1 or a rank outside 0..size-1. */
NB_API int64_t nb_dist_shard(int64_t global_batch, int rank, int size, int64_t *offset);

/* ---------------------------------------------------------------- nb_ddp */

/* Data-parallel training of one module (PyTorch's DistributedDataParallel):
   the parameters' gradients are averaged over the ranks while the backward
   pass still runs. The parameters (nb_module_params order, those requiring
   grad) are split into buckets of about bucket_bytes (0: 1 MiB; a parameter
   larger than that makes a bucket of its own; one dtype per bucket), filled
   from the last parameter to the first, the order in which a backward pass
   usually finishes them. During nb_ddp_backward a gradient-ready hook copies
   each final gradient into its bucket, and each bucket whose gradients are all
   there starts a non-blocking all-gather (buckets start in their fixed order,
   never in arrival order, so every rank issues the same collectives and the
   buckets are the same every step). */
typedef struct nb_ddp nb_ddp;

/* A wrapper for m trained with opt (opt's parameters should be m's). Makes the
   ranks' copies of m identical first (nb_dist_broadcast_module). Collective.
   Returns NULL with an error (on every rank when the broadcast fails) before
   nb_dist_init, without MPI, for a module without parameters or when out of
   memory. m and opt stay the caller's: free them after nb_ddp_free. */
NB_API nb_ddp *nb_ddp_new(nb_module *m, nb_optim *opt, size_t bucket_bytes);
/* nb_backward(loss, NULL, 0) with the averaging overlapped: returns once every
   parameter's .grad holds its average over the ranks (a parameter that got no
   gradient on a rank counts as zeros there). Installs this thread's
   gradient-ready hook for the duration of the call (and restores the previous
   one). Collective: when the backward fails on some rank, every rank still
   completes the collectives, then all return nonzero (the failing one with
   backward's error, the others with "nb_ddp_backward: backward failed on
   rank R"); the .grad of a rank whose own backward succeeded then holds its
   local, not averaged, gradient. Drop the gradients (nb_optim_zero_grad)
   before the next step. */
NB_API int nb_ddp_backward(nb_ddp *d, nb_tensor *loss);
/* The optimizer step (nb_optim_step). Every rank holds the same averaged
   gradients, so the models stay identical. Local: a failure (a non-finite
   gradient, say) is the same on every rank, since the gradients are. */
NB_API int nb_ddp_step(nb_ddp *d);
/* Free the wrapper (not the module or the optimizer). NULL is ignored. */
NB_API void nb_ddp_free(nb_ddp *d);

/* Counters of the last nb_ddp_backward, to see the overlap: buckets in all,
   and how many had started their all-gather before the backward pass
   returned. */
NB_API int nb_ddp_buckets(const nb_ddp *d, int *started_during_backward);

/* Where the time of nb_ddp_backward goes, summed over the calls since the
   wrapper was made (or the last reset). Seconds are this rank's wall-clock
   time (MPI_Wtime). */
typedef struct {
    int64_t steps;                /* successful nb_ddp_backward calls counted */
    int buckets;                  /* buckets in all */
    int started_during_backward;  /* of them, started before the last backward pass returned */
    int64_t bytes;                /* gradient bytes this rank sends per call (all buckets) */
    double backward_seconds;      /* in the backward pass, hooks (copies into buckets, starts) included */
    double wait_seconds;          /* after the backward pass, starting the buckets not yet started and
                                     waiting for all the all-gathers: the communication not hidden
                                     behind backward */
    double finish_seconds;        /* after the backward pass in all: the waits, the failure-flag
                                     all-reduce and the averaging into .grad */
    double average_seconds;       /* of which the averaging of the gathered gradients into .grad */
} nb_ddp_stats;

/* Copy d's counters into *s; when reset is true, zero them afterwards.
   0, or -1 with an error (NULL arguments, or built without MPI). */
NB_API int nb_ddp_stats_get(const nb_ddp *d, nb_ddp_stats *s, bool reset);

/* overlap true (the default) starts each bucket's all-gather from the
   gradient-ready hook, during backward; false starts them all after the
   backward pass returns, so wait_seconds then measures the communication
   alone (for measuring what the overlap hides). The results are the same
   bits either way. Must be set to the same value on every rank. 0, or -1
   with an error. */
NB_API int nb_ddp_set_overlap(nb_ddp *d, bool overlap);

#ifdef __cplusplus
}
#endif
#endif /* NABLA_DIST_H */

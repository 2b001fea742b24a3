/*
 * dist.c - data-parallel training over MPI (include/nabla/dist.h).
 *
 * Built against MPI when CMake finds it (NABLA_HAVE_MPI); otherwise every
 * function that needs MPI fails with "<function>: nabla was built without MPI".
 *
 * Averages: every rank all-gathers the values of every rank and sums them in
 * rank order 0..P-1 in double, then divides by P and rounds once to the
 * tensor's dtype. The order is fixed by rank, not by the MPI library's
 * reduction algorithm, so every rank computes the same bits, in every run.
 *
 * nb_ddp: the parameters are cut into buckets (last parameter first, one
 * dtype per bucket); the engine's gradient-ready hook copies each final
 * gradient into its bucket's send buffer, and every bucket that is full starts
 * its MPI_Iallgather, in bucket order, while backward goes on. After backward
 * the buckets still open are filled (a parameter that got no gradient sends
 * its .grad, or zeros), started, waited for, and averaged into the .grads.
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "../../include/nabla/dist.h"
#include "../core/internal.h"

int64_t nb_dist_shard(int64_t global_batch, int rank, int size, int64_t *offset) {
    const char *fn = "nb_dist_shard";
    if (global_batch < 0 || size < 1 || rank < 0 || rank >= size)
        return nbi_err(fn, "need global_batch >= 0, size >= 1 and 0 <= rank < size (got %lld, rank %d, size %d)",
                       (long long)global_batch, rank, size),
               -1;
    int64_t base = global_batch / size, extra = global_batch % size;
    int64_t n = base + (rank < extra ? 1 : 0);
    if (offset) *offset = (int64_t)rank * base + (rank < extra ? rank : extra);
    return n;
}

#ifndef NABLA_HAVE_MPI

static int no_mpi(const char *fn) { return nbi_err(fn, "nabla was built without MPI"), -1; }

bool nb_dist_available(void) { return false; }
int nb_dist_init(int *argc, char ***argv) {
    (void)argc, (void)argv;
    return no_mpi("nb_dist_init");
}
int nb_dist_finalize(void) { return no_mpi("nb_dist_finalize"); }
int nb_dist_rank(void) { return 0; }
int nb_dist_size(void) { return 1; }
int nb_dist_broadcast_module(nb_module *m) {
    (void)m;
    return no_mpi("nb_dist_broadcast_module");
}
int nb_dist_allreduce_grads(int n, nb_tensor *const *params) {
    (void)n, (void)params;
    return no_mpi("nb_dist_allreduce_grads");
}
int nb_dist_barrier(void) { return no_mpi("nb_dist_barrier"); }
int nb_dist_any_failed(int local_failed) {
    (void)local_failed;
    return no_mpi("nb_dist_any_failed");
}
int nb_dist_allreduce_sum(double *v, int n) {
    (void)v, (void)n;
    return no_mpi("nb_dist_allreduce_sum");
}
nb_ddp *nb_ddp_new(nb_module *m, nb_optim *opt, size_t bucket_bytes) {
    (void)m, (void)opt, (void)bucket_bytes;
    return nbi_err("nb_ddp_new", "nabla was built without MPI");
}
int nb_ddp_backward(nb_ddp *d, nb_tensor *loss) {
    (void)d, (void)loss;
    return no_mpi("nb_ddp_backward");
}
int nb_ddp_step(nb_ddp *d) {
    (void)d;
    return no_mpi("nb_ddp_step");
}
void nb_ddp_free(nb_ddp *d) { (void)d; }
int nb_ddp_buckets(const nb_ddp *d, int *started_during_backward) {
    (void)d;
    if (started_during_backward) *started_during_backward = 0;
    return no_mpi("nb_ddp_buckets");
}
int nb_ddp_set_overlap(nb_ddp *d, bool overlap) {
    (void)d, (void)overlap;
    return no_mpi("nb_ddp_set_overlap");
}
int nb_ddp_stats_get(const nb_ddp *d, nb_ddp_stats *s, bool reset) {
    (void)d, (void)reset;
    if (s) *s = (nb_ddp_stats){0};
    return no_mpi("nb_ddp_stats_get");
}

#else /* NABLA_HAVE_MPI */

#include <mpi.h>

static struct {
    bool on;         /* nb_dist_init succeeded */
    bool started;    /* and called MPI_Init_thread itself */
    int rank, size;
    MPI_Comm comm;   /* a duplicate of MPI_COMM_WORLD that returns errors instead of aborting */
} g_dist = {false, false, 0, 1, MPI_COMM_NULL};

bool nb_dist_available(void) { return true; }

static int mpi_fail(const char *fn, const char *what, int code) {
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(code, msg, &len) != MPI_SUCCESS) len = 0;
    msg[len < MPI_MAX_ERROR_STRING ? len : MPI_MAX_ERROR_STRING - 1] = 0;
    return nbi_err(fn, "%s failed: %s", what, len ? msg : "unknown MPI error"), -1;
}

static int need_init(const char *fn) {
    if (g_dist.on) return 0;
    return nbi_err(fn, "call nb_dist_init first"), -1;
}

int nb_dist_init(int *argc, char ***argv) {
    const char *fn = "nb_dist_init";
    if (g_dist.on) return 0;
    int flag = 0, prov = 0, rc;
    if ((rc = MPI_Initialized(&flag)) != MPI_SUCCESS) return mpi_fail(fn, "MPI_Initialized", rc);
    bool started = false;
    if (flag) {
        int fin = 0;
        MPI_Finalized(&fin);
        if (fin) return nbi_err(fn, "MPI was already finalized"), -1;
        if ((rc = MPI_Query_thread(&prov)) != MPI_SUCCESS) return mpi_fail(fn, "MPI_Query_thread", rc);
    } else {
        if ((rc = MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &prov)) != MPI_SUCCESS)
            return mpi_fail(fn, "MPI_Init_thread", rc);
        started = true;
    }
    if (prov < MPI_THREAD_FUNNELED) {
        if (started) MPI_Finalize();
        return nbi_err(fn, "MPI gives thread level %d, below MPI_THREAD_FUNNELED", prov), -1;
    }
    MPI_Comm comm;
    if ((rc = MPI_Comm_dup(MPI_COMM_WORLD, &comm)) != MPI_SUCCESS) {
        if (started) MPI_Finalize();
        return mpi_fail(fn, "MPI_Comm_dup", rc);
    }
    MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN);
    MPI_Comm_rank(comm, &g_dist.rank);
    MPI_Comm_size(comm, &g_dist.size);
    g_dist.comm = comm;
    g_dist.started = started;
    g_dist.on = true;
    return 0;
}

int nb_dist_finalize(void) {
    const char *fn = "nb_dist_finalize";
    if (need_init(fn)) return -1;
    MPI_Comm_free(&g_dist.comm);
    int rc = g_dist.started ? MPI_Finalize() : MPI_SUCCESS;
    g_dist.on = g_dist.started = false;
    g_dist.rank = 0;
    g_dist.size = 1;
    g_dist.comm = MPI_COMM_NULL;
    return rc == MPI_SUCCESS ? 0 : mpi_fail(fn, "MPI_Finalize", rc);
}

int nb_dist_rank(void) { return g_dist.on ? g_dist.rank : 0; }
int nb_dist_size(void) { return g_dist.on ? g_dist.size : 1; }

int nb_dist_barrier(void) {
    if (need_init("nb_dist_barrier")) return -1;
    int rc = MPI_Barrier(g_dist.comm);
    return rc == MPI_SUCCESS ? 0 : mpi_fail("nb_dist_barrier", "MPI_Barrier", rc);
}

int nb_dist_any_failed(int local_failed) {
    int in = local_failed != 0, out = in;
    if (!g_dist.on) return in;
    int rc = MPI_Allreduce(&in, &out, 1, MPI_INT, MPI_MAX, g_dist.comm);
    return rc == MPI_SUCCESS ? out : mpi_fail("nb_dist_any_failed", "MPI_Allreduce", rc);
}

int nb_dist_allreduce_sum(double *v, int n) {
    const char *fn = "nb_dist_allreduce_sum";
    if (n < 0 || (n > 0 && !v)) return nbi_err(fn, "n %d must be >= 0 and v given", n), -1;
    if (!g_dist.on || n == 0) return 0;
    double *all = nbi_alloc(sizeof(double) * (size_t)n * (size_t)g_dist.size);
    if (!all) return nbi_err(fn, "out of memory for %d values from %d ranks", n, g_dist.size), -1;
    int rc = MPI_Allgather(v, n, MPI_DOUBLE, all, n, MPI_DOUBLE, g_dist.comm);
    if (rc == MPI_SUCCESS)
        for (int i = 0; i < n; i++) {
            double s = 0;
            for (int r = 0; r < g_dist.size; r++) s += all[(size_t)r * (size_t)n + (size_t)i];
            v[i] = s;
        }
    nbi_dealloc(all);
    return rc == MPI_SUCCESS ? 0 : mpi_fail(fn, "MPI_Allgather", rc);
}

/* ---------------------------------------------------------------- helpers */

/* FNV-1a over the bytes of v. */
static uint64_t mix(uint64_t h, const void *v, size_t n) {
    const unsigned char *p = v;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001B3ull;
    return h;
}

static uint64_t sig_tensor(uint64_t h, const nb_tensor *t) {
    int32_t dt = (int32_t)t->dtype, rk = t->rank;
    h = mix(h, &dt, sizeof dt);
    h = mix(h, &rk, sizeof rk);
    return mix(h, t->shape, sizeof(int64_t) * (size_t)t->rank);
}

/* Whether every rank is ok and has the same signature; on a mismatch every rank fails with a message naming the
   first rank that differs from rank 0 (or that failed). Collective. */
static int agree(const char *fn, bool ok, uint64_t sig) {
    uint64_t mine[2] = {ok ? 1u : 0u, sig};
    int p = g_dist.size;
    uint64_t *all = nbi_alloc(sizeof(uint64_t) * 2 * (size_t)p);
    /* every rank must take part even when out of memory here: agree on that first */
    int lack = all == NULL, any = 0, rc = MPI_Allreduce(&lack, &any, 1, MPI_INT, MPI_MAX, g_dist.comm);
    if (rc != MPI_SUCCESS) return nbi_dealloc(all), mpi_fail(fn, "MPI_Allreduce", rc);
    if (any) return nbi_dealloc(all), nbi_err(fn, "out of memory on some rank"), -1;
    rc = MPI_Allgather(mine, 2, MPI_UINT64_T, all, 2, MPI_UINT64_T, g_dist.comm);
    if (rc != MPI_SUCCESS) return nbi_dealloc(all), mpi_fail(fn, "MPI_Allgather", rc);
    int res = 0;
    for (int r = 0; r < p && res == 0; r++) {
        if (!all[2 * r]) {
            if (ok) nbi_err(fn, "rank %d failed", r);
            res = -1;
        } else if (all[2 * r + 1] != all[1]) {
            nbi_err(fn, "rank %d's tensors differ from rank 0's in number, shape or dtype", r);
            res = -1;
        }
    }
    nbi_dealloc(all);
    return res;
}

static MPI_Datatype mpi_type(nb_dtype dt) { return dt == NB_F32 ? MPI_FLOAT : MPI_DOUBLE; }

/* Give p a zero .grad (it had none). */
static int zero_grad_for(const char *fn, nb_tensor *p) {
    nb_scope_begin();
    nb_tensor *g = nbi_empty(fn, p->dtype, p->rank, p->shape);
    if (g) {
        nbi_k_fill(g, 0);
        nbi_ref(g);
        p->grad = g;
    }
    nb_scope_end();
    return g ? 0 : -1;
}

static bool float_param(const nb_tensor *t) {
    return t && t->magic == NBI_MAGIC && (t->dtype == NB_F32 || t->dtype == NB_F64) && nbi_is_contig(t);
}

/* ---------------------------------------------------------- broadcast --- */

int nb_dist_broadcast_module(nb_module *m) {
    const char *fn = "nb_dist_broadcast_module";
    if (need_init(fn)) return -1;
    int np = m ? nb_module_params(m, NULL, NULL, 0) : -1;
    int nbuf = m ? nb_module_buffers(m, NULL, NULL, 0) : -1;
    nb_tensor **ts = NULL;
    bool ok = np >= 0 && nbuf >= 0;
    if (!m) nbi_err(fn, "module is NULL");
    if (ok) {
        ts = nbi_alloc(sizeof(nb_tensor *) * (size_t)(np + nbuf + 1));
        ok = ts && nb_module_params(m, ts, NULL, np) == np && nb_module_buffers(m, ts + np, NULL, nbuf) == nbuf;
        if (!ts) nbi_err(fn, "out of memory");
    }
    uint64_t sig = 0xCBF29CE484222325ull;
    if (ok) {
        int32_t counts[2] = {np, nbuf};
        sig = mix(sig, counts, sizeof counts);
        for (int i = 0; i < np + nbuf && ok; i++) {
            if (!ts[i] || !nbi_is_contig(ts[i])) {
                nbi_err(fn, "tensor %d of the module is not contiguous", i);
                ok = false;
            } else {
                sig = sig_tensor(sig, ts[i]);
            }
        }
    }
    /* Each tensor goes through one host buffer (the tensors may live on a device): read on rank 0, broadcast,
       written on the others. */
    char *buf = NULL;
    if (ok) {
        int64_t most = 0;
        for (int i = 0; i < np + nbuf; i++) {
            int64_t bytes = ts[i]->numel * (int64_t)nbi_dsize(ts[i]->dtype);
            most = bytes > most ? bytes : most;
        }
        buf = nbi_alloc((size_t)(most > 0 ? most : 1));
        if (!buf) nbi_err(fn, "out of memory"), ok = false;
    }
    if (agree(fn, ok, sig) != 0) return nbi_dealloc(buf), nbi_dealloc(ts), -1;
    int res = 0;
    for (int i = 0; i < np + nbuf && res == 0; i++) {
        int64_t bytes = ts[i]->numel * (int64_t)nbi_dsize(ts[i]->dtype);
        if (g_dist.rank == 0) nbi_read_host(ts[i], buf);
        for (int64_t off = 0; off < bytes && res == 0; off += 1 << 30) {
            int chunk = (int)(bytes - off < (1 << 30) ? bytes - off : (1 << 30));
            int rc = MPI_Bcast(buf + off, chunk, MPI_BYTE, 0, g_dist.comm);
            if (rc != MPI_SUCCESS) res = mpi_fail(fn, "MPI_Bcast", rc);
        }
        if (res == 0 && g_dist.rank != 0) {
            nbi_write_host(ts[i], buf, true);
            ts[i]->st->version++;
        }
    }
    nbi_dealloc(buf);
    nbi_dealloc(ts);
    return res;
}

/* ---------------------------------------------------------- allreduce --- */

int nb_dist_allreduce_grads(int n, nb_tensor *const *params) {
    const char *fn = "nb_dist_allreduce_grads";
    if (need_init(fn)) return -1;
    bool ok = n >= 0 && (n == 0 || params);
    if (!ok) nbi_err(fn, "need n >= 0 parameters");
    uint64_t sig = mix(0xCBF29CE484222325ull, &n, sizeof n);
    int64_t most = 0;
    for (int i = 0; i < n && ok; i++) {
        nb_tensor *t = params[i];
        if (!float_param(t) || (t->grad && (!nbi_is_contig(t->grad) || t->grad->dtype != t->dtype))) {
            nbi_err(fn, "parameter %d is not a contiguous f32 or f64 tensor with a contiguous gradient", i);
            ok = false;
        } else if (t->numel > INT_MAX) {
            nbi_err(fn, "parameter %d has %lld elements, more than one MPI call can move", i, (long long)t->numel);
            ok = false;
        } else {
            sig = sig_tensor(sig, t);
            if (t->numel > most) most = t->numel;
        }
    }
    int p = g_dist.size;
    char *buf = NULL;
    if (ok) {
        buf = nbi_alloc((size_t)most * 8 * (size_t)(p + 1) + 8);
        if (!buf) ok = false, nbi_err(fn, "out of memory");
    }
    if (agree(fn, ok, sig) != 0) return nbi_dealloc(buf), -1;
    int res = 0;
    /* which parameters have a gradient on some rank */
    int *has = nbi_alloc(sizeof(int) * (size_t)(n + 1)), *any = nbi_alloc(sizeof(int) * (size_t)(n + 1));
    int lack = !has || !any, anylack = 0;
    int rc = MPI_Allreduce(&lack, &anylack, 1, MPI_INT, MPI_MAX, g_dist.comm);
    if (rc != MPI_SUCCESS) res = mpi_fail(fn, "MPI_Allreduce", rc);
    else if (anylack) res = -1, nbi_err(fn, "out of memory on some rank");
    if (res == 0) {
        for (int i = 0; i < n; i++) has[i] = params[i]->grad != NULL;
        rc = MPI_Allreduce(has, any, n, MPI_INT, MPI_MAX, g_dist.comm);
        if (rc != MPI_SUCCESS) res = mpi_fail(fn, "MPI_Allreduce", rc);
    }
    /* Every rank runs the same collectives whatever fails locally (a .grad it cannot make), so none waits
       forever; an MPI failure ends the loop on every rank alike. */
    bool mpi_ok = res == 0;
    for (int i = 0; i < n && mpi_ok; i++) {
        nb_tensor *t = params[i];
        if (!any[i]) continue;
        int64_t k = t->numel;
        size_t es = nbi_dsize(t->dtype);
        char *send = buf, *recv = buf + (size_t)k * es;
        if (t->grad) nbi_read_host(t->grad, send);
        else memset(send, 0, (size_t)k * es);
        rc = MPI_Allgather(send, (int)k, mpi_type(t->dtype), recv, (int)k, mpi_type(t->dtype), g_dist.comm);
        if (rc != MPI_SUCCESS) {
            res = mpi_fail(fn, "MPI_Allgather", rc);
            mpi_ok = false;
            break;
        }
        if (!t->grad && zero_grad_for(fn, t) != 0) {
            res = -1;
            continue;
        }
        nbi_k_rank_mean(t->grad, recv, k, p);
        t->grad->st->version++;
    }
    nbi_dealloc(has);
    nbi_dealloc(any);
    nbi_dealloc(buf);
    return res;
}

/* ---------------------------------------------------------------- ddp --- */

typedef struct {
    nb_dtype dtype;
    int64_t n;        /* elements */
    int nparams, ready;
    char *send, *recv; /* n and size * n elements */
    MPI_Request req;
    bool started, done;
} bucket;

typedef struct {
    nb_tensor *t;
    int idx;
} pslot;

struct nb_ddp {
    nb_module *m;
    nb_optim *opt;
    int np;
    nb_tensor **params;
    int *pb;          /* bucket of each parameter */
    int64_t *poff;    /* its first element in the bucket */
    bool *pready;     /* its gradient is in the bucket */
    pslot *lookup;    /* params sorted by address */
    int nb, next;     /* buckets, the next to start */
    bucket *b;
    int *flags;       /* np + 1 ints for the after-backward all-reduce */
    int *flags_all;
    bool mpi_failed;
    int mpi_rc;
    const char *mpi_what;
    int started_during; /* buckets started inside the backward pass */
    bool in_backward;
    bool overlap;       /* start buckets from the hook (else only after backward) */
    nb_ddp_stats st;
};

static int pslot_cmp(const void *a, const void *b) {
    uintptr_t x = (uintptr_t)((const pslot *)a)->t, y = (uintptr_t)((const pslot *)b)->t;
    return x < y ? -1 : x > y ? 1 : 0;
}

void nb_ddp_free(nb_ddp *d) {
    if (!d) return;
    if (d->b)
        for (int i = 0; i < d->nb; i++) {
            if (d->b[i].started && !d->b[i].done) MPI_Wait(&d->b[i].req, MPI_STATUS_IGNORE);
            nbi_dealloc(d->b[i].send);
            nbi_dealloc(d->b[i].recv);
        }
    nbi_dealloc(d->b);
    nbi_dealloc(d->params);
    nbi_dealloc(d->pb);
    nbi_dealloc(d->poff);
    nbi_dealloc(d->pready);
    nbi_dealloc(d->lookup);
    nbi_dealloc(d->flags);
    nbi_dealloc(d->flags_all);
    nbi_dealloc(d);
}

static nb_ddp *ddp_build(const char *fn, nb_module *m, nb_optim *opt, size_t bucket_bytes) {
    nb_ddp *d = nbi_alloc(sizeof *d);
    if (!d) return nbi_err(fn, "out of memory");
    memset(d, 0, sizeof *d);
    d->m = m;
    d->opt = opt;
    d->overlap = true;
    int all = nb_module_params(m, NULL, NULL, 0);
    if (all < 0) return nb_ddp_free(d), NULL;
    nb_tensor **ps = nbi_alloc(sizeof(nb_tensor *) * (size_t)(all + 1));
    if (!ps) return nb_ddp_free(d), nbi_err(fn, "out of memory");
    nb_module_params(m, ps, NULL, all);
    int np = 0;
    for (int i = 0; i < all; i++)
        if (ps[i]->requires_grad) ps[np++] = ps[i];
    d->params = ps;
    d->np = np;
    if (np == 0) return nb_ddp_free(d), nbi_err(fn, "the module has no parameter that requires grad");
    for (int i = 0; i < np; i++) {
        if (!float_param(ps[i])) return nb_ddp_free(d), nbi_err(fn, "parameter %d is not contiguous", i);
        if (ps[i]->numel > INT_MAX / (g_dist.size > 0 ? g_dist.size : 1))
            return nb_ddp_free(d), nbi_err(fn, "parameter %d is too large for one MPI call", i);
    }
    d->pb = nbi_alloc(sizeof(int) * (size_t)np);
    d->poff = nbi_alloc(sizeof(int64_t) * (size_t)np);
    d->pready = nbi_alloc(sizeof(bool) * (size_t)np);
    d->lookup = nbi_alloc(sizeof(pslot) * (size_t)np);
    d->b = nbi_alloc(sizeof(bucket) * (size_t)np);
    d->flags = nbi_alloc(sizeof(int) * (size_t)(np + 1));
    d->flags_all = nbi_alloc(sizeof(int) * (size_t)(np + 1));
    if (!d->pb || !d->poff || !d->pready || !d->lookup || !d->b || !d->flags || !d->flags_all)
        return nb_ddp_free(d), nbi_err(fn, "out of memory");
    memset(d->b, 0, sizeof(bucket) * (size_t)np);
    /* Buckets from the last parameter to the first. */
    if (bucket_bytes == 0) bucket_bytes = (size_t)1 << 20;
    int nb = 0;
    for (int i = np - 1; i >= 0; i--) {
        nb_tensor *t = ps[i];
        size_t es = nbi_dsize(t->dtype);
        bucket *cur = nb ? &d->b[nb - 1] : NULL;
        if (!cur || cur->dtype != t->dtype || (size_t)(cur->n + t->numel) * es > bucket_bytes ||
            cur->n + t->numel > INT_MAX / g_dist.size) {
            cur = &d->b[nb++];
            cur->dtype = t->dtype;
        }
        d->pb[i] = (int)(cur - d->b);
        d->poff[i] = cur->n;
        cur->n += t->numel;
        cur->nparams++;
    }
    d->nb = nb;
    for (int k = 0; k < nb; k++) {
        size_t es = nbi_dsize(d->b[k].dtype), n = (size_t)d->b[k].n;
        d->b[k].send = nbi_alloc(n * es + 64);
        d->b[k].recv = nbi_alloc(n * es * (size_t)g_dist.size + 64);
        if (!d->b[k].send || !d->b[k].recv) return nb_ddp_free(d), nbi_err(fn, "out of memory");
    }
    for (int i = 0; i < np; i++) d->lookup[i] = (pslot){ps[i], i};
    qsort(d->lookup, (size_t)np, sizeof(pslot), pslot_cmp);
    return d;
}

nb_ddp *nb_ddp_new(nb_module *m, nb_optim *opt, size_t bucket_bytes) {
    const char *fn = "nb_ddp_new";
    if (need_init(fn)) return NULL;
    if (!m || !opt) {
        nbi_err(fn, "module and optimizer must not be NULL");
        agree(fn, false, 0);
        return NULL;
    }
    nb_ddp *d = ddp_build(fn, m, opt, bucket_bytes);
    if (!d) {
        agree(fn, false, 0);
        return NULL;
    }
    if (nb_dist_broadcast_module(m) != 0) return nb_ddp_free(d), NULL;
    return d;
}

static void start_bucket(nb_ddp *d, int k) {
    bucket *b = &d->b[k];
    MPI_Datatype ty = mpi_type(b->dtype);
    int rc = MPI_Iallgather(b->send, (int)b->n, ty, b->recv, (int)b->n, ty, g_dist.comm, &b->req);
    b->started = true;
    if (rc != MPI_SUCCESS) {
        b->done = true;
        if (!d->mpi_failed) d->mpi_failed = true, d->mpi_rc = rc, d->mpi_what = "MPI_Iallgather";
        return;
    }
    if (d->in_backward) d->started_during++;
}

/* Start the buckets that are full, in bucket order. */
static void start_ready(nb_ddp *d) {
    while (d->next < d->nb && d->b[d->next].ready == d->b[d->next].nparams) start_bucket(d, d->next++);
}

static void put_param(nb_ddp *d, int i, const nb_tensor *g) {
    bucket *b = &d->b[d->pb[i]];
    size_t es = nbi_dsize(b->dtype);
    char *dst = b->send + (size_t)d->poff[i] * es;
    if (g) nbi_read_host(g, dst);
    else memset(dst, 0, (size_t)d->params[i]->numel * es);
    d->pready[i] = true;
    b->ready++;
}

static void ddp_hook(nb_tensor *leaf, nb_tensor *grad, void *user) {
    nb_ddp *d = user;
    pslot key = {leaf, 0};
    pslot *s = bsearch(&key, d->lookup, (size_t)d->np, sizeof(pslot), pslot_cmp);
    if (!s || d->pready[s->idx]) return;
    if (!nbi_is_contig(grad) || grad->dtype != leaf->dtype) return; /* left for the pass after backward */
    d->flags[s->idx] = 1;
    put_param(d, s->idx, grad);
    if (!d->overlap) return;
    start_ready(d);
    /* Let MPI progress the collectives already under way. */
    for (int k = 0; k < d->next; k++) {
        if (d->b[k].done) continue;
        int flag = 0;
        MPI_Test(&d->b[k].req, &flag, MPI_STATUS_IGNORE);
        if (flag) d->b[k].done = true;
        break;
    }
}

int nb_ddp_backward(nb_ddp *d, nb_tensor *loss) {
    const char *fn = "nb_ddp_backward";
    if (!d) return nbi_err(fn, "ddp is NULL"), -1;
    if (need_init(fn)) return -1;
    for (int k = 0; k < d->nb; k++) d->b[k].ready = 0, d->b[k].started = d->b[k].done = false;
    for (int i = 0; i < d->np; i++) d->pready[i] = false, d->flags[i] = 0;
    d->next = 0;
    d->mpi_failed = false;
    d->started_during = 0;

    void *old_user;
    nb_grad_hook old = nb_grad_ready_hook(&old_user);
    nb_set_grad_ready_hook(ddp_hook, d);
    d->in_backward = true;
    double t0 = MPI_Wtime();
    int rc = nb_backward(loss, NULL, 0);
    double t1 = MPI_Wtime();
    d->in_backward = false;
    nb_set_grad_ready_hook(old, old_user);

    /* Whatever did not arrive: the .grad as it is (or zeros), and the failure flag. */
    for (int i = 0; i < d->np; i++) {
        if (d->pready[i]) continue;
        nb_tensor *g = d->params[i]->grad;
        bool usable = g && rc == 0 && nbi_is_contig(g) && g->dtype == d->params[i]->dtype;
        d->flags[i] = usable;
        put_param(d, i, usable ? g : NULL);
    }
    double t2 = MPI_Wtime();
    start_ready(d);
    for (int k = 0; k < d->nb; k++)
        if (d->b[k].started && !d->b[k].done) {
            int e = MPI_Wait(&d->b[k].req, MPI_STATUS_IGNORE);
            d->b[k].done = true;
            if (e != MPI_SUCCESS && !d->mpi_failed) d->mpi_failed = true, d->mpi_rc = e, d->mpi_what = "MPI_Wait";
        }
    double t3 = MPI_Wtime();
    /* One all-reduce (max) of: which parameters have a gradient somewhere, and the lowest failing rank (as
       size - rank, 0 for none). */
    int p = g_dist.size;
    d->flags[d->np] = rc != 0 || d->mpi_failed ? p - g_dist.rank : 0;
    int e = MPI_Allreduce(d->flags, d->flags_all, d->np + 1, MPI_INT, MPI_MAX, g_dist.comm);
    if (e != MPI_SUCCESS) return mpi_fail(fn, "MPI_Allreduce", e);
    if (d->mpi_failed) return mpi_fail(fn, d->mpi_what, d->mpi_rc);
    if (rc != 0) return -1; /* backward's own error is recorded */
    if (d->flags_all[d->np]) return nbi_err(fn, "backward failed on rank %d", p - d->flags_all[d->np]), -1;

    double t4 = MPI_Wtime();
    for (int i = 0; i < d->np; i++) {
        nb_tensor *t = d->params[i];
        if (!d->flags_all[i]) continue; /* no gradient on any rank: none here either */
        if (!t->grad && zero_grad_for(fn, t) != 0) return -1;
        if (!nbi_is_contig(t->grad)) return nbi_err(fn, "the gradient of parameter %d is not contiguous", i), -1;
        const bucket *b = &d->b[d->pb[i]];
        size_t es = nbi_dsize(b->dtype);
        /* rank r's values of this parameter start at r n + off in the bucket's receive buffer */
        nbi_k_rank_mean(t->grad, b->recv + (size_t)d->poff[i] * es, b->n, p);
        t->grad->st->version++;
    }
    d->st.steps++;
    d->st.buckets = d->nb;
    d->st.started_during_backward = d->started_during;
    d->st.backward_seconds += t1 - t0;
    d->st.wait_seconds += t3 - t2;
    double t5 = MPI_Wtime();
    d->st.average_seconds += t5 - t4;
    d->st.finish_seconds += t5 - t1;
    return 0;
}

int nb_ddp_step(nb_ddp *d) {
    if (!d) return nbi_err("nb_ddp_step", "ddp is NULL"), -1;
    return nb_optim_step(d->opt);
}

int nb_ddp_buckets(const nb_ddp *d, int *started_during_backward) {
    if (started_during_backward) *started_during_backward = d ? d->started_during : 0;
    if (!d) return nbi_err("nb_ddp_buckets", "ddp is NULL"), -1;
    return d->nb;
}

int nb_ddp_set_overlap(nb_ddp *d, bool overlap) {
    if (!d) return nbi_err("nb_ddp_set_overlap", "ddp is NULL"), -1;
    d->overlap = overlap;
    return 0;
}

int nb_ddp_stats_get(const nb_ddp *d, nb_ddp_stats *s, bool reset) {
    if (!d || !s) return nbi_err("nb_ddp_stats_get", "ddp and s must not be NULL"), -1;
    *s = d->st;
    s->bytes = 0;
    for (int k = 0; k < d->nb; k++) s->bytes += d->b[k].n * (int64_t)nbi_dsize(d->b[k].dtype);
    if (reset) ((nb_ddp *)d)->st = (nb_ddp_stats){0};
    return 0;
}

#endif /* NABLA_HAVE_MPI */

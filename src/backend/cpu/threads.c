/*
 * threads.c - the worker pool (see threads.h) and nb_set_num_threads.
 *
 * A job is published by bumping a generation counter; every worker takes part
 * in every job (it runs its range, or nothing when the job has fewer parts
 * than there are workers) and counts itself done, so the workers move in
 * lockstep and the next job waits for all of them. Workers spin on the
 * counter for about 50 microseconds (the gap between the kernels of one
 * training step), then sleep on a condition variable until woken.
 */
#define _POSIX_C_SOURCE 200809L
#include "threads.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "../../core/internal.h"

#define MAX_THREADS 256
#define SPIN_NS 50000

#if defined(__x86_64__) || defined(__i386__)
#define cpu_relax() __builtin_ia32_pause()
#else
#define cpu_relax() ((void)0)
#endif

static pthread_mutex_t submit_mu = PTHREAD_MUTEX_INITIALIZER; /* held by the thread whose job runs */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;        /* guards sleeping and stopping */
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;

static int nthreads;        /* configured (0: not yet read from the environment) */
static int nworkers;        /* started */
static pthread_t workers[MAX_THREADS];
static uint64_t start_gen[MAX_THREADS + 1]; /* the generation before a worker's first job */
static bool stopping;
static int sleepers;
static _Atomic uint64_t generation;
static _Atomic int pending;
static _Atomic int job_rc;
static struct {
    nbi_range_fn fn;
    void *ctx;
    int64_t n;
    int parts;
} job;
static _Thread_local bool in_pool;

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return 1e9 * (double)ts.tv_sec + (double)ts.tv_nsec;
}

static int default_threads(void) {
    const char *env = getenv("NABLA_NUM_THREADS");
    if (env && *env) {
        char *e;
        long v = strtol(env, &e, 10);
        if (!*e && v > 0) return v > MAX_THREADS ? MAX_THREADS : (int)v;
    }
    long c = sysconf(_SC_NPROCESSORS_ONLN);
    return c < 1 ? 1 : c > MAX_THREADS ? MAX_THREADS : (int)c;
}

static int configured(void) {
    int n = __atomic_load_n(&nthreads, __ATOMIC_ACQUIRE);
    if (n == 0) {
        n = default_threads();
        __atomic_store_n(&nthreads, n, __ATOMIC_RELEASE);
    }
    return n;
}

/* Part p of job: the p-th of `parts` near-equal contiguous ranges. */
static void run_part(int p) {
    int64_t lo = job.n * p / job.parts, hi = job.n * (p + 1) / job.parts;
    int rc = job.fn(job.ctx, lo, hi);
    if (rc) {
        int zero = 0;
        atomic_compare_exchange_strong(&job_rc, &zero, rc);
    }
}

static void *worker_main(void *arg) {
    int id = (int)(intptr_t)arg; /* 1 .. nworkers; part 0 is the caller's */
    in_pool = true;
    uint64_t seen = start_gen[id];
    for (;;) {
        double t0 = now_ns();
        for (int spin = 0; atomic_load_explicit(&generation, memory_order_acquire) == seen; spin++) {
            cpu_relax();
            if ((spin & 63) == 63 && now_ns() - t0 > SPIN_NS) {
                pthread_mutex_lock(&mu);
                sleepers++;
                while (atomic_load(&generation) == seen && !stopping) pthread_cond_wait(&cv, &mu);
                sleepers--;
                bool stop = stopping && atomic_load(&generation) == seen;
                pthread_mutex_unlock(&mu);
                if (stop) return NULL;
            }
        }
        seen = atomic_load(&generation);
        if (id < job.parts) run_part(id);
        atomic_fetch_sub_explicit(&pending, 1, memory_order_release);
    }
}

/* With submit_mu held: start workers up to n - 1. */
static void start_workers(int n) {
    if (nworkers < n - 1) nbi_mem_on_release(nbi_cpu_release);
    while (nworkers < n - 1) {
        start_gen[nworkers + 1] = atomic_load(&generation); /* set before the thread starts */
        if (pthread_create(&workers[nworkers], NULL, worker_main, (void *)(intptr_t)(nworkers + 1)) != 0) break;
        nworkers++;
    }
}

/* With submit_mu held. */
static void stop_workers(void) {
    if (nworkers == 0) return;
    pthread_mutex_lock(&mu);
    stopping = true;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    for (int i = 0; i < nworkers; i++) pthread_join(workers[i], NULL);
    nworkers = 0;
    stopping = false;
}

int nbi_parallel_parts(int64_t n, int64_t grain) {
    if (grain < 1) grain = 1;
    int64_t p = n / grain;
    int t = configured();
    return p < 1 ? 1 : p < t ? (int)p : t;
}

int nbi_parallel_for(int64_t n, int64_t grain, nbi_range_fn fn, void *ctx) {
    if (n <= 0) return 0;
    int parts = nbi_parallel_parts(n, grain);
    if (parts <= 1 || in_pool || pthread_mutex_trylock(&submit_mu) != 0) return fn(ctx, 0, n);
    start_workers(configured());
    if (parts > nworkers + 1) parts = nworkers + 1;
    if (parts <= 1) {
        pthread_mutex_unlock(&submit_mu);
        return fn(ctx, 0, n);
    }
    job.fn = fn;
    job.ctx = ctx;
    job.n = n;
    job.parts = parts;
    atomic_store(&job_rc, 0);
    atomic_store(&pending, nworkers);
    pthread_mutex_lock(&mu);
    atomic_fetch_add_explicit(&generation, 1, memory_order_release);
    if (sleepers) pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    in_pool = true;
    run_part(0);
    in_pool = false;
    for (int spin = 0; atomic_load_explicit(&pending, memory_order_acquire) > 0; spin++) {
        cpu_relax();
        if (spin > 4096) sched_yield();
    }
    int rc = atomic_load(&job_rc);
    pthread_mutex_unlock(&submit_mu);
    return rc;
}

void nbi_pool_shutdown(void) {
    pthread_mutex_lock(&submit_mu);
    stop_workers();
    pthread_mutex_unlock(&submit_mu);
}

int nb_set_num_threads(int n) {
    if (n < 0 || n > MAX_THREADS) {
        nbi_err("nb_set_num_threads", "n = %d is out of range (0 for the default, up to %d)", n, MAX_THREADS);
        return -1;
    }
    pthread_mutex_lock(&submit_mu);
    int want = n == 0 ? default_threads() : n;
    if (want != nthreads) {
        stop_workers(); /* restarted at the size asked for by the next job */
        __atomic_store_n(&nthreads, want, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&submit_mu);
    return 0;
}

int nb_num_threads(void) { return configured(); }

/* At process exit (or when the shared library is unloaded) the idle workers are stopped and joined, so no
   thread outlives the code it runs and leak checkers see none of its memory. While another thread's job is
   running the pool is left as it is. */
__attribute__((destructor)) static void pool_at_exit(void) {
    if (pthread_mutex_trylock(&submit_mu) != 0) return;
    stop_workers();
    pthread_mutex_unlock(&submit_mu);
}

/*
 * harness.h - the tiny test harness every tests/test_*.c uses.
 *
 * A test file defines functions `static void test_xxx(void)` and lists them in
 * main with RUN(test_xxx). CHECK-style macros count failures and print the
 * file:line of each; main returns th_finish(), which prints the closing line
 * "N passed, N failed" and returns nonzero when anything failed.
 */
#ifndef NABLA_TEST_HARNESS_H
#define NABLA_TEST_HARNESS_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nabla.h"

#if defined(__GNUC__)
#define TH_UNUSED __attribute__((unused))
#else
#define TH_UNUSED
#endif
static TH_UNUSED int th_passed, th_failed, th_cur_failed;
static TH_UNUSED const char *th_cur_name;

#define CHECK(cond)                                                                                            \
    do {                                                                                                       \
        if (!(cond)) {                                                                                         \
            th_cur_failed++;                                                                                   \
            fprintf(stderr, "%s:%d: %s: CHECK(%s) failed (last error: %s)\n", __FILE__, __LINE__, th_cur_name, \
                    #cond, nb_last_error() ? nb_last_error() : "none");                                        \
        }                                                                                                      \
    } while (0)

/* |a - b| <= atol + rtol |b| */
#define CHECK_CLOSE(a, b, atol, rtol)                                                                   \
    do {                                                                                                \
        double th_a = (double)(a), th_b = (double)(b);                                                  \
        if (!(fabs(th_a - th_b) <= (atol) + (rtol) * fabs(th_b))) {                                     \
            th_cur_failed++;                                                                            \
            fprintf(stderr, "%s:%d: %s: %s = %.17g, expected %s = %.17g\n", __FILE__, __LINE__,         \
                    th_cur_name, #a, th_a, #b, th_b);                                                   \
        }                                                                                               \
    } while (0)

/* The call returned NULL/nonzero and recorded a message containing `sub`. */
#define CHECK_ERR(sub)                                                                                  \
    do {                                                                                                \
        const char *th_m = nb_last_error();                                                             \
        if (!th_m || !strstr(th_m, (sub))) {                                                            \
            th_cur_failed++;                                                                            \
            fprintf(stderr, "%s:%d: %s: expected an error containing \"%s\", got \"%s\"\n", __FILE__,   \
                    __LINE__, th_cur_name, (sub), th_m ? th_m : "(none)");                              \
        }                                                                                               \
        nb_clear_error();                                                                               \
    } while (0)

#define RUN(fn)                                                                                         \
    do {                                                                                                \
        th_cur_name = #fn;                                                                              \
        th_cur_failed = 0;                                                                              \
        nb_clear_error();                                                                               \
        fn();                                                                                           \
        if (th_cur_failed) {                                                                            \
            th_failed++;                                                                                \
            fprintf(stderr, "FAIL %s\n", #fn);                                                          \
        } else {                                                                                        \
            th_passed++;                                                                                \
        }                                                                                               \
    } while (0)

static inline int th_finish(void) {
    printf("%d passed, %d failed\n", th_passed, th_failed);
    return th_failed ? 1 : 0;
}

/* A small deterministic generator for test data (splitmix64). */
static TH_UNUSED uint64_t th_rng_state = 0x9E3779B97F4A7C15ull;
static inline void th_seed(uint64_t s) { th_rng_state = s ? s : 0x9E3779B97F4A7C15ull; }
static inline uint64_t th_next(void) {
    uint64_t z = (th_rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
/* Uniform in [lo, hi). */
static inline double th_uniform(double lo, double hi) {
    return lo + (hi - lo) * (double)(th_next() >> 11) * (1.0 / 9007199254740992.0);
}
/* A tensor of shape `shape` with uniform values in [lo, hi). */
static inline nb_tensor *th_rand(nb_dtype dt, int rank, const int64_t *shape, double lo, double hi) {
    int64_t n = 1;
    for (int i = 0; i < rank; i++) n *= shape[i];
    double *buf = (double *)malloc(sizeof(double) * (size_t)(n ? n : 1));
    for (int64_t i = 0; i < n; i++) buf[i] = th_uniform(lo, hi);
    nb_tensor *t = nb_from_f64(dt, rank, shape, buf);
    free(buf);
    return t;
}

/* Allocation failures: th_inject(at) installs an allocator whose at-th allocation from then on returns NULL (at 0:
   none does), th_alloc_count counting them; th_stop_injecting puts back the default one. */
static TH_UNUSED long th_fail_at, th_alloc_count;
static inline void *th_failing_alloc(size_t n, void *ud) {
    (void)ud;
    if (++th_alloc_count == th_fail_at) return NULL;
    return malloc(n);
}
static inline void th_plain_free(void *p, void *ud) {
    (void)ud;
    free(p);
}
static inline void th_inject(long at) {
    th_alloc_count = 0;
    th_fail_at = at;
    nb_set_allocator(th_failing_alloc, th_plain_free, NULL);
}
static inline void th_stop_injecting(void) { nb_set_allocator(NULL, NULL, NULL); }

/* Runs fn with allocation 1, 2, ... failing in turn, until a run succeeds (or `most` tries): each failed run must
   record a message and leave nb_memory_in_use() where it was. Returns the try that succeeded, or 0 if none did
   (the caller checks it, and that it took more than the few tries its work needs). The cache is off meanwhile, so
   that every allocation reaches the hook, and set back to 256 MiB after. */
static TH_UNUSED long th_fail_each(int (*fn)(void *arg), void *arg, long most) {
    nb_set_cache_limit(0);
    int64_t mem0 = nb_memory_in_use();
    long ok = 0;
    for (long at = 1; at < most && !ok; at++) {
        nb_clear_error();
        th_inject(at);
        int rc = fn(arg);
        th_stop_injecting();
        if (rc == 0) {
            ok = at;
            break;
        }
        const char *msg = nb_last_error();
        CHECK(msg && *msg);
        CHECK(nb_memory_in_use() == mem0);
    }
    nb_clear_error();
    nb_set_cache_limit((int64_t)256 << 20);
    return ok;
}

#endif

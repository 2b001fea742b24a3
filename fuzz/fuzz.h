/*
 * fuzz.h - what the libFuzzer targets in fuzz/ share: a reader that turns the
 * fuzzer's bytes into choices, files in memory for the loaders that take a
 * path, and the invariants every target checks.
 *
 * Every target calls fz_init() once; it turns the block cache off (so ASan sees
 * each free at once), runs the library on one thread (reproducible runs), and
 * records how much memory the library holds, which must be the same after
 * every input (fz_check_memory): an input that leaves a tensor behind fails
 * (ASan's leak check would not see it while the library still points to it).
 */
#ifndef NABLA_FUZZ_H
#define NABLA_FUZZ_H

#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "nabla.h"

/* A violated invariant: print it and abort, so that libFuzzer keeps the input. */
#define FZ_ASSERT(cond)                                                                                        \
    do {                                                                                                       \
        if (!(cond)) {                                                                                         \
            fprintf(stderr, "%s:%d: invariant failed: %s (last error: %s)\n", __FILE__, __LINE__, #cond,       \
                    nb_last_error() ? nb_last_error() : "none");                                               \
            abort();                                                                                           \
        }                                                                                                      \
    } while (0)

/* ------------------------------------------------------------------ bytes */

typedef struct {
    const uint8_t *p;
    size_t n;
} fz_bytes;

/* The next byte, or 0 once the input is used up (so every input is a program). */
static inline uint8_t fz_u8(fz_bytes *b) {
    if (b->n == 0) return 0;
    b->n--;
    return *b->p++;
}
static inline uint16_t fz_u16(fz_bytes *b) { return (uint16_t)(fz_u8(b) | fz_u8(b) << 8); }
/* A choice in [0, n). */
static inline int fz_pick(fz_bytes *b, int n) { return n <= 1 ? 0 : fz_u8(b) % n; }
/* A small signed integer in [lo, hi]. */
static inline int fz_range(fz_bytes *b, int lo, int hi) { return lo + fz_pick(b, hi - lo + 1); }

/* A value for a tensor element: small integers and halves mostly, sometimes an
   extreme (huge, tiny, negative zero, infinities, NaN). */
static inline double fz_value(fz_bytes *b) {
    static const double special[] = {0.0, -0.0, 1e300, -1e300, 1e-310, 3.4e38, 1e-45, 1.0 / 0.0, -1.0 / 0.0, 0.0 / 0.0};
    uint8_t c = fz_u8(b);
    if (c < 240) return ((int)c - 120) / 16.0;
    return special[(c - 240) % (int)(sizeof special / sizeof *special)];
}

/* ------------------------------------------------------------ in-memory files */

/* A file in memory (memfd) that fopen can open again by its /proc path. */
typedef struct {
    int fd;
    char path[64];
} fz_file;

static inline void fz_file_open(fz_file *f, const char *name) {
    f->fd = memfd_create(name, 0);
    if (f->fd < 0) {
        perror("memfd_create");
        abort();
    }
    snprintf(f->path, sizeof f->path, "/proc/self/fd/%d", f->fd);
}

/* Replace the file's contents with data[0..n). */
static inline void fz_file_set(fz_file *f, const void *data, size_t n) {
    if (ftruncate(f->fd, 0) != 0 || (n && pwrite(f->fd, data, n, 0) != (ssize_t)n)) {
        perror("fz_file_set");
        abort();
    }
}

/* ------------------------------------------------------------------- state */

static int64_t fz_baseline = -1;

static inline void fz_init(void) {
    if (fz_baseline >= 0) return;
    nb_set_cache_limit(0);
    nb_set_num_threads(1);
    nb_clear_error();
    nb_set_allocator(NULL, NULL, NULL);
    fz_baseline = nb_memory_in_use();
}

/* Every tensor an input made is freed again, no scope is left open, and the
   thread's error is cleared for the next input. */
static inline void fz_check_memory(void) {
    FZ_ASSERT(nb_scope_depth() == 0);
    nb_set_allocator(NULL, NULL, NULL); /* gives back the matrix-product buffers, which are counted */
    int64_t now = nb_memory_in_use();
    if (now != fz_baseline) {
        fprintf(stderr, "memory in use %lld bytes after the input, %lld before\n", (long long)now,
                (long long)fz_baseline);
        abort();
    }
    nb_clear_error();
}

/* After a call failed: it must have said why. */
#define FZ_FAILED_WITH_MESSAGE() FZ_ASSERT(nb_last_error() != NULL && nb_last_error()[0] != 0)

#endif /* NABLA_FUZZ_H */

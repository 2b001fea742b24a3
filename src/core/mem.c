/*
 * mem.c - the one allocation hook (as Lua's lua_Alloc) and aligned blocks.
 *
 * Every byte the library allocates comes through nbi_alloc, so a test can
 * make the Nth allocation fail and check that the call fails cleanly. Blocks
 * are 64-byte aligned: the hook's pointer and the block's size are kept just
 * before the block, so the library can count the bytes it holds.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static void *default_alloc(size_t n, void *ud) {
    (void)ud;
    return malloc(n);
}
static void default_free(void *p, void *ud) {
    (void)ud;
    free(p);
}

static void *(*alloc_fn)(size_t, void *) = default_alloc;
static void (*free_fn)(void *, void *) = default_free;
static void *alloc_ud;

void nbi_gemm_release_buffers(void);
void nbi_pool_shutdown(void);

void nb_set_allocator(void *(*a)(size_t size, void *ud), void (*f)(void *p, void *ud), void *ud) {
    nbi_gemm_release_buffers(); /* cached blocks go back through the hook that made them */
    nbi_pool_shutdown();        /* the workers free theirs as they exit */
    if (!a || !f) {
        alloc_fn = default_alloc;
        free_fn = default_free;
        alloc_ud = NULL;
        return;
    }
    alloc_fn = a;
    free_fn = f;
    alloc_ud = ud;
}

static _Atomic int64_t bytes_in_use;

typedef struct {
    void *raw;
    size_t size;
} block_head;

void *nbi_alloc(size_t n) {
    size_t extra = NBI_ALIGN + sizeof(block_head);
    if (n > SIZE_MAX - extra) return NULL;
    char *raw = alloc_fn(n + extra, alloc_ud);
    if (!raw) return NULL;
    uintptr_t p = ((uintptr_t)raw + sizeof(block_head) + NBI_ALIGN - 1) & ~(uintptr_t)(NBI_ALIGN - 1);
    block_head h = {raw, n};
    memcpy((char *)p - sizeof h, &h, sizeof h);
    atomic_fetch_add_explicit(&bytes_in_use, (int64_t)n, memory_order_relaxed);
    return (void *)p;
}

void nbi_dealloc(void *p) {
    if (!p) return;
    block_head h;
    memcpy(&h, (char *)p - sizeof h, sizeof h);
    atomic_fetch_sub_explicit(&bytes_in_use, (int64_t)h.size, memory_order_relaxed);
    free_fn(h.raw, alloc_ud);
}

int64_t nb_memory_in_use(void) { return atomic_load_explicit(&bytes_in_use, memory_order_relaxed); }

bool nbi_mul_ok(int64_t a, int64_t b, int64_t *out) {
    if (a < 0 || b < 0) return false;
    if (a != 0 && b > INT64_MAX / a) return false;
    *out = a * b;
    return true;
}

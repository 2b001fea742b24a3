/*
 * mem.c - the one allocation hook (as Lua's lua_Alloc) and aligned blocks.
 *
 * Every byte the library allocates comes through nbi_alloc, so a test can
 * make the Nth allocation fail and check that the call fails cleanly. Blocks
 * are 64-byte aligned: the hook's pointer is kept just before the block.
 */
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

void nb_set_allocator(void *(*a)(size_t size, void *ud), void (*f)(void *p, void *ud), void *ud) {
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

void *nbi_alloc(size_t n) {
    if (n > SIZE_MAX - NBI_ALIGN - sizeof(void *)) return NULL;
    char *raw = alloc_fn(n + NBI_ALIGN + sizeof(void *), alloc_ud);
    if (!raw) return NULL;
    uintptr_t p = ((uintptr_t)raw + sizeof(void *) + NBI_ALIGN - 1) & ~(uintptr_t)(NBI_ALIGN - 1);
    memcpy((char *)p - sizeof(void *), &raw, sizeof raw);
    return (void *)p;
}

void nbi_dealloc(void *p) {
    if (!p) return;
    void *raw;
    memcpy(&raw, (char *)p - sizeof(void *), sizeof raw);
    free_fn(raw, alloc_ud);
}

bool nbi_mul_ok(int64_t a, int64_t b, int64_t *out) {
    if (a < 0 || b < 0) return false;
    if (a != 0 && b > INT64_MAX / a) return false;
    *out = a * b;
    return true;
}

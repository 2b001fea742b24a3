/*
 * mem.c - the one allocation hook (as Lua's lua_Alloc), aligned blocks and
 * the cache of freed blocks that makes a training loop's steady state free of
 * system allocations.
 *
 * Every byte the library allocates comes through nbi_alloc, so a test can
 * make the Nth allocation fail and check that the call fails cleanly. Blocks
 * are 64-byte aligned: the hook's pointer, the block's size and capacity are
 * kept just before the block.
 *
 * Freed blocks go to a cache of size classes (64-byte steps up to 1 KiB, then
 * eight classes per doubling, so at most 1/8 is wasted) instead of back to the
 * hook, up to nb_set_cache_limit bytes. The next request of that class takes
 * one back: after the first step of a loop whose shapes repeat, every block
 * comes from the cache and no page is touched for the first time. Under
 * AddressSanitizer, cached blocks (and the slack past each block's size) are
 * poisoned, so a use after free is still caught.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#if defined(__SANITIZE_ADDRESS__)
#define NBI_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define NBI_ASAN 1
#endif
#endif
#ifdef NBI_ASAN
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION(p, n)
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

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

typedef struct block_head {
    void *raw;               /* what the hook returned */
    size_t size, cap;        /* bytes asked for; bytes usable (the size class) */
    struct block_head *next; /* next cached block of the same class */
} block_head;

#define NCLASS (16 + 8 * 54)
static block_head *cache[NCLASS];
static atomic_flag lock = ATOMIC_FLAG_INIT;
static int64_t cache_limit = (int64_t)256 << 20;
static nb_memory_stats st; /* every field but in_use is kept under the lock */
static _Atomic int64_t bytes_in_use;

static void take_lock(void) {
    while (atomic_flag_test_and_set_explicit(&lock, memory_order_acquire)) {
    }
}
static void drop_lock(void) { atomic_flag_clear_explicit(&lock, memory_order_release); }

/* The class of a request of n bytes and its capacity; -1 past the last class. */
static int size_class(size_t n, size_t *cap) {
    if (n <= 1024) {
        size_t k = n ? (n + 63) / 64 : 1;
        *cap = k * 64;
        return (int)k - 1;
    }
    int e = 63 - __builtin_clzll((unsigned long long)(n - 1)); /* 2^e < n <= 2^(e+1) */
    size_t base = (size_t)1 << e, step = base >> 3, k = (n - base + step - 1) / step;
    int c = 16 + (e - 10) * 8 + (int)k - 1;
    if (c >= NCLASS) return -1;
    *cap = base + k * step;
    return c;
}

static block_head *head_of(void *p) { return (block_head *)((char *)p - sizeof(block_head)); }

/* Gives every cached block back to the hook. */
static void flush(void) {
    take_lock();
    block_head *all = NULL;
    for (int c = 0; c < NCLASS; c++)
        while (cache[c]) {
            block_head *h = cache[c];
            cache[c] = h->next;
            h->next = all;
            all = h;
            st.cached -= (int64_t)h->cap;
            st.system_frees++;
        }
    drop_lock();
    while (all) {
        block_head *h = all;
        all = h->next;
        free_fn(h->raw, alloc_ud);
    }
}

void nb_set_allocator(void *(*a)(size_t size, void *ud), void (*f)(void *p, void *ud), void *ud) {
    nbi_gemm_release_buffers(); /* cached blocks go back through the hook that made them */
    nbi_pool_shutdown();        /* the workers free theirs as they exit */
    flush();
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

void nb_set_cache_limit(int64_t bytes) {
    take_lock();
    cache_limit = bytes > 0 ? bytes : 0;
    drop_lock();
    if (bytes <= 0) flush();
}

void nb_release_cached_memory(void) { flush(); }

void nb_get_memory_stats(nb_memory_stats *out) {
    if (!out) return;
    take_lock();
    *out = st;
    drop_lock();
    out->in_use = atomic_load_explicit(&bytes_in_use, memory_order_relaxed);
}

void *nbi_alloc(size_t n) {
    size_t cap = n;
    int c = size_class(n, &cap);
    char *p = NULL;
    if (c >= 0) {
        take_lock();
        block_head *h = cache[c];
        if (h) {
            cache[c] = h->next;
            st.cached -= (int64_t)h->cap;
            st.reuses++;
            p = (char *)h + sizeof *h;
            h->size = n;
            h->next = NULL;
        }
        drop_lock();
        if (p) {
            UNPOISON(p, n);
            atomic_fetch_add_explicit(&bytes_in_use, (int64_t)n, memory_order_relaxed);
            return p;
        }
    }
    size_t extra = NBI_ALIGN + sizeof(block_head);
    if (cap > SIZE_MAX - extra) return NULL;
    char *raw = alloc_fn(cap + extra, alloc_ud);
    if (!raw) return NULL;
    p = (char *)(((uintptr_t)raw + sizeof(block_head) + NBI_ALIGN - 1) & ~(uintptr_t)(NBI_ALIGN - 1));
    block_head *h = head_of(p);
    h->raw = raw;
    h->size = n;
    h->cap = cap;
    h->next = NULL;
    POISON(p + n, cap - n);
    int64_t used = atomic_fetch_add_explicit(&bytes_in_use, (int64_t)n, memory_order_relaxed) + (int64_t)n;
    take_lock();
    st.system_allocs++;
    if (used + st.cached > st.peak) st.peak = used + st.cached;
    drop_lock();
    return p;
}

void nbi_dealloc(void *p) {
    if (!p) return;
    block_head *h = head_of(p);
    size_t cap;
    int c = size_class(h->size, &cap);
    atomic_fetch_sub_explicit(&bytes_in_use, (int64_t)h->size, memory_order_relaxed);
    POISON(p, h->cap); /* before another thread can take it from the cache */
    take_lock();
    if (c >= 0 && cap == h->cap && st.cached + (int64_t)cap <= cache_limit) {
        h->next = cache[c];
        cache[c] = h;
        st.cached += (int64_t)cap;
        drop_lock();
        return;
    }
    st.system_frees++;
    drop_lock();
    free_fn(h->raw, alloc_ud);
}

int64_t nb_memory_in_use(void) { return atomic_load_explicit(&bytes_in_use, memory_order_relaxed); }

bool nbi_mul_ok(int64_t a, int64_t b, int64_t *out) {
    if (a < 0 || b < 0) return false;
    if (a != 0 && b > INT64_MAX / a) return false;
    *out = a * b;
    return true;
}

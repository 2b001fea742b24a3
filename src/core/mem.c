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
 * comes from the cache and no page is touched for the first time. A request
 * over 1 KiB whose class is empty takes a block of up to eight classes above
 * (at most twice its size): a block idle in the cache holds its pages anyway,
 * where a new one would add to them (a CNN step's peak: 5 MiB less). Freed, a
 * block goes back to its own class. Under
 * AddressSanitizer, cached blocks (and the slack past each block's size) are
 * poisoned, so a use after free is still caught.
 *
 * The lists of cached blocks hold the hook's own pointers (the start of each
 * allocation), not the aligned blocks inside them, so a leak checker run at
 * exit (valgrind) sees every cached block as reachable rather than "possibly
 * lost". The same holds for the scratch blocks (a thread's matrix-product
 * packing buffers, kept between products): they are on one list of their own
 * and counted apart, so nb_memory_in_use() is the memory of live tensors and
 * graphs alone.
 */
#include <pthread.h>
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

/* What kernel sets keep between calls (a thread's packing buffers, worker threads), given back when the hooks
   change or the caller asks: each set registers a function once; mem.c calls no kernel code itself. */
#define MAX_RELEASE 4
static void (*_Atomic release_fns[MAX_RELEASE])(bool all);

void nbi_mem_on_release(void (*fn)(bool all)) {
    for (int i = 0; i < MAX_RELEASE; i++) {
        void (*cur)(bool) = atomic_load(&release_fns[i]);
        if (cur == fn) return;
        if (!cur) {
            void (*none)(bool) = NULL;
            if (atomic_compare_exchange_strong(&release_fns[i], &none, fn) || none == fn) return;
        }
    }
}

static void run_release(bool all) {
    for (int i = 0; i < MAX_RELEASE; i++) {
        void (*fn)(bool) = atomic_load(&release_fns[i]);
        if (fn) fn(all);
    }
}

typedef struct block_head {
    void *raw;                          /* what the hook returned */
    void (*free_fn)(void *p, void *ud); /* the hook that gives it back, whatever the hook is now */
    void *ud;
    size_t size, cap; /* bytes asked for; bytes usable (the size class) */
    void *next;       /* the raw pointer of the next block on the same list */
} block_head;

/* Lists link raw pointers (the start of each allocation); the block and its head follow from it. */
static char *block_of_raw(void *raw) {
    return (char *)(((uintptr_t)raw + sizeof(block_head) + NBI_ALIGN - 1) & ~(uintptr_t)(NBI_ALIGN - 1));
}
static block_head *head_of_raw(void *raw) { return (block_head *)(block_of_raw(raw) - sizeof(block_head)); }

#define NCLASS (16 + 8 * 54)
static void *cache[NCLASS];   /* raw pointers */
static void *scratch_list;    /* raw pointers of the live scratch blocks */
static atomic_flag lock = ATOMIC_FLAG_INIT;
/* -1 (the default, until nb_set_cache_limit is called): the shared cache keeps up to the larger of 256 MiB and the most bytes live
   tensors have held at once (in_hw), so that a step whose live memory peaks above 256 MiB (GPT-2 124M: about
   1.5 GiB) still finds its blocks again at the next step instead of faulting in new pages; memory held stays
   under twice the peak of the live tensors. */
static _Atomic int64_t cache_limit = -1;
static int64_t in_hw; /* high-water mark of st.in_use, under the lock */
#define CACHE_FLOOR ((int64_t)256 << 20)
#define SPILL 8 /* classes above a request's that a cache miss may take from: at most twice its size */
static nb_memory_stats st; /* kept under the lock */

/* Each thread also keeps up to TL_BYTES of blocks of the classes up to 1 KiB
   (tensor headers, scalars) in a list of its own, taken and given without the
   lock. Its counters are written by that thread only and summed by
   nb_get_memory_stats. Emptying the cache bumps `epoch`: a thread whose lists
   are of an older epoch frees them before its next allocation. Every block
   records the hook that made it, so it is always freed through that one. */
#define TL_CLASSES 16
#define TL_BYTES ((int64_t)8 << 20)
typedef struct tl_cache {
    void *list[TL_CLASSES]; /* raw pointers */
    unsigned epoch;
    bool registered, dead;
    _Atomic int64_t in_use, cached, reuses, frees;
    struct tl_cache *next, *prev;
} tl_cache;
static _Thread_local tl_cache tl;
static tl_cache *threads_head; /* every registered thread's cache, under the lock */
static _Atomic unsigned epoch = 1;
static pthread_key_t tl_key;
static pthread_once_t tl_once = PTHREAD_ONCE_INIT;

static void take_lock(void) {
    while (atomic_flag_test_and_set_explicit(&lock, memory_order_acquire)) {
    }
}
static void drop_lock(void) { atomic_flag_clear_explicit(&lock, memory_order_release); }

/* A counter written by its own thread only: no locked instruction needed. */
static void bump(_Atomic int64_t *c, int64_t d) {
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + d, memory_order_relaxed);
}

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

/* Pops the first block of a list. */
static block_head *pop(void **list) {
    block_head *h = head_of_raw(*list);
    *list = h->next;
    h->next = NULL;
    return h;
}
static void push(void **list, block_head *h) {
    h->next = *list;
    *list = h->raw;
}

static void give_back(block_head *h) {
    UNPOISON((char *)h + sizeof *h, h->cap); /* the hook's memory is the hook's again */
    h->free_fn(h->raw, h->ud);
}

/* Frees every block of this thread's lists. */
static void tl_drain(tl_cache *t) {
    for (int c = 0; c < TL_CLASSES; c++)
        while (t->list[c]) {
            block_head *h = pop(&t->list[c]);
            bump(&t->cached, -(int64_t)h->cap);
            bump(&t->frees, 1);
            give_back(h);
        }
}

/* Thread exit: the lists are freed and the counters folded into the totals. */
static void tl_exit(void *arg) {
    tl_cache *t = arg;
    tl_drain(t);
    take_lock();
    st.in_use += atomic_load_explicit(&t->in_use, memory_order_relaxed);
    st.cached += atomic_load_explicit(&t->cached, memory_order_relaxed);
    st.reuses += atomic_load_explicit(&t->reuses, memory_order_relaxed);
    st.system_frees += atomic_load_explicit(&t->frees, memory_order_relaxed);
    if (t->prev) t->prev->next = t->next;
    else threads_head = t->next;
    if (t->next) t->next->prev = t->prev;
    drop_lock();
    t->dead = true; /* later frees on this thread (other destructors) take the shared path */
}
static void tl_key_init(void) { (void)pthread_key_create(&tl_key, tl_exit); }

/* This thread's lists, ready for use, or NULL when they are off. */
static tl_cache *tl_get(void) {
    tl_cache *t = &tl;
    if (t->dead) return NULL;
    unsigned e = atomic_load_explicit(&epoch, memory_order_acquire);
    if (t->epoch != e) {
        tl_drain(t);
        t->epoch = e;
    }
    if (atomic_load_explicit(&cache_limit, memory_order_relaxed) == 0) return NULL;
    if (!t->registered) {
        pthread_once(&tl_once, tl_key_init);
        if (pthread_setspecific(tl_key, t) != 0) return NULL;
        take_lock();
        t->next = threads_head;
        if (threads_head) threads_head->prev = t;
        threads_head = t;
        drop_lock();
        t->registered = true;
    }
    return t;
}

/* Sums of every thread's counters, under the lock. */
static void add_threads(nb_memory_stats *s) {
    for (tl_cache *t = threads_head; t; t = t->next) {
        s->in_use += atomic_load_explicit(&t->in_use, memory_order_relaxed);
        s->cached += atomic_load_explicit(&t->cached, memory_order_relaxed);
        s->reuses += atomic_load_explicit(&t->reuses, memory_order_relaxed);
        s->system_frees += atomic_load_explicit(&t->frees, memory_order_relaxed);
    }
}

/* Gives every cached block back: the shared lists now, this thread's lists
   now, other threads' lists at their next allocation. */
static void flush(void) {
    atomic_fetch_add_explicit(&epoch, 1, memory_order_acq_rel);
    tl_drain(&tl);
    take_lock();
    void *all = NULL;
    for (int c = 0; c < NCLASS; c++)
        while (cache[c]) {
            block_head *h = pop(&cache[c]);
            push(&all, h);
            st.cached -= (int64_t)h->cap;
            st.system_frees++;
        }
    drop_lock();
    while (all) give_back(pop(&all));
}

void nb_set_allocator(void *(*a)(size_t size, void *ud), void (*f)(void *p, void *ud), void *ud) {
    run_release(true); /* the calling thread's scratch goes back through the hook that made it; workers stop */
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
    atomic_store_explicit(&cache_limit, bytes > 0 ? bytes : 0, memory_order_relaxed);
    if (bytes <= 0) flush();
}

void nb_release_cached_memory(void) {
    run_release(false);
    flush();
}

void nb_get_memory_stats(nb_memory_stats *out) {
    if (!out) return;
    take_lock();
    *out = st;
    add_threads(out);
    drop_lock();
}

int64_t nb_memory_in_use(void) {
    nb_memory_stats s;
    nb_get_memory_stats(&s);
    return s.in_use;
}

/* A new block from the hook: n bytes asked for, cap usable; its head filled in, the slack poisoned. */
static block_head *new_block(size_t n, size_t cap) {
    size_t extra = NBI_ALIGN + sizeof(block_head);
    if (cap > SIZE_MAX - extra) return NULL;
    char *raw = alloc_fn(cap + extra, alloc_ud);
    if (!raw) return NULL;
    char *p = block_of_raw(raw);
    block_head *h = head_of(p);
    h->raw = raw;
    h->free_fn = free_fn;
    h->ud = alloc_ud;
    h->size = n;
    h->cap = cap;
    h->next = NULL;
    POISON(p + n, cap - n);
    return h;
}

/* Under the lock, after the totals grew. */
static void note_peak(void) {
    nb_memory_stats now = st;
    add_threads(&now);
    int64_t held = now.in_use + now.cached + now.scratch;
    if (held > st.peak) st.peak = held;
}

void *nbi_alloc(size_t n) {
    size_t cap = n;
    int c = size_class(n, &cap);
    block_head *h = NULL;
    tl_cache *t = c >= 0 && c < TL_CLASSES ? tl_get() : NULL;
    if (t && t->list[c]) { /* this thread's own list: no lock */
        h = pop(&t->list[c]);
        bump(&t->cached, -(int64_t)h->cap);
        bump(&t->in_use, (int64_t)n);
        bump(&t->reuses, 1);
    } else if (c >= 0) {
        take_lock();
        /* a miss takes a cached block of up to SPILL classes above (a larger block idle in the cache holds
           its pages anyway; a new one would add to them), beyond the thread-local classes */
        int cc = c;
        while (!cache[cc] && cc >= TL_CLASSES && cc < c + SPILL && cc + 1 < NCLASS) cc++;
        if (cache[cc]) {
            h = pop(&cache[cc]);
            st.cached -= (int64_t)h->cap;
            st.reuses++;
            st.in_use += (int64_t)n;
            if (st.in_use > in_hw) in_hw = st.in_use;
        }
        drop_lock();
    }
    if (h) {
        char *p = (char *)h + sizeof *h;
        h->size = n;
        UNPOISON(p, n);
        return p;
    }
    h = new_block(n, cap);
    if (!h) return NULL;
    take_lock();
    st.system_allocs++;
    st.in_use += (int64_t)n;
    if (st.in_use > in_hw) in_hw = st.in_use;
    note_peak();
    drop_lock();
    return (char *)h + sizeof *h;
}

void *nbi_alloc_scratch(size_t n) {
    block_head *h = new_block(n, n);
    if (!h) return NULL;
    take_lock();
    st.system_allocs++;
    st.scratch += (int64_t)n;
    push(&scratch_list, h);
    note_peak();
    drop_lock();
    return (char *)h + sizeof *h;
}

void nbi_dealloc_scratch(void *p) {
    if (!p) return;
    block_head *h = head_of(p);
    take_lock();
    void **link = &scratch_list;
    while (*link != h->raw) link = &head_of_raw(*link)->next; /* a few blocks per thread */
    *link = h->next;
    h->next = NULL;
    st.scratch -= (int64_t)h->size;
    st.system_frees++;
    drop_lock();
    give_back(h);
}

void nbi_dealloc(void *p) {
    if (!p) return;
    block_head *h = head_of(p);
    size_t cap;
    int c = size_class(h->cap, &cap); /* the block's own class (it may have served a smaller request) */
    POISON(p, h->cap); /* before another thread can take it from the cache */
    bool fits = c >= 0 && cap == h->cap;
    tl_cache *t = fits && c < TL_CLASSES ? tl_get() : NULL;
    if (t && atomic_load_explicit(&t->cached, memory_order_relaxed) + (int64_t)cap <= TL_BYTES) {
        push(&t->list[c], h);
        bump(&t->cached, (int64_t)cap);
        bump(&t->in_use, -(int64_t)h->size);
        return;
    }
    take_lock();
    st.in_use -= (int64_t)h->size;
    int64_t limit = atomic_load_explicit(&cache_limit, memory_order_relaxed);
    if (limit < 0) limit = in_hw > CACHE_FLOOR ? in_hw : CACHE_FLOOR;
    if (fits && st.cached + (int64_t)cap <= limit) {
        push(&cache[c], h);
        st.cached += (int64_t)cap;
        drop_lock();
        return;
    }
    st.system_frees++;
    drop_lock();
    give_back(h);
}

void *nb_alloc(const char *fn, size_t n) {
    void *p = nbi_alloc(n);
    if (!p) nbi_err(fn ? fn : "nb_alloc", "out of memory (%zu bytes)", n);
    return p;
}

void *nb_alloc_zeroed(const char *fn, size_t count, size_t size) {
    if (size && count > SIZE_MAX / size)
        return nbi_err(fn ? fn : "nb_alloc_zeroed", "out of memory (%zu x %zu bytes overflows)", count, size);
    void *p = nb_alloc(fn ? fn : "nb_alloc_zeroed", count * size);
    if (p) memset(p, 0, count * size);
    return p;
}

void nb_dealloc(void *p) { nbi_dealloc(p); }

bool nbi_mul_ok(int64_t a, int64_t b, int64_t *out) {
    if (a < 0 || b < 0) return false;
    if (a != 0 && b > INT64_MAX / a) return false;
    *out = a * b;
    return true;
}

/*
 * Internals of the instrumented arena (the allocator sources and the tests only).
 *
 * Counting scheme (see docs/allocator.md):
 *   - Each (thread, arena) pair owns an as__tblock: its private jemalloc
 *     tcache id, its bins and its own counters per tag and per layer,
 *     written only by that thread with relaxed atomic stores (plain moves
 *     on x86; no locked instruction). live = sum over blocks of their live
 *     values (+ retired threads); the total is the sum of the tags.
 *   - Peaks and the budget need a global order, so every counter (and the
 *     total) also has a global "charged" value G, written under the
 *     arena's G lock (at most one locked instruction per fold). A thread folds its
 *     pending delta into G only when a counter's live value passes its
 *     folded one (net growth) or its pending frees pass AS__FOLD_BYTES.
 *     A thread charges the total the sum of its tags' folded values, and a
 *     growing tag folds all of the thread's tags (counters.c). So G >= true
 *     live at every instant, G == true live whenever it rises with one
 *     thread active (exact peaks), and alloc/free churn that does not grow
 *     memory touches no shared cache line.
 *   - Direct blocks (usable > AS__FOLD_BYTES) skip the threads' counters:
 *     they are counted in the global ones alone (d, next to G; the charged
 *     value is G + d), by whichever thread allocates or frees them.
 *   - The G lock is biased to the arena's first thread (plain stores, no
 *     locked instruction) until another writer revokes it (membarrier).
 *   - A block records the id of the thread block that charged it. A free on
 *     another thread (an autograd worker, the offload I/O thread) is folded
 *     into G at once: lazily kept, those frees would never meet the
 *     allocations they offset, and G would drift up by up to AS__FOLD_BYTES
 *     per counter and freeing thread (budget failures, inflated peaks).
 *   - Small blocks (usable <= AS__TAB_MAX) freed by a thread go to that
 *     thread's bins (a few slots per size class, in front of jemalloc's
 *     generic mallocx/sdallocx path) and are handed out again by its next
 *     allocation of that class. The counters count them as freed.
 */
#ifndef AS_ALLOCATOR_INTERNAL_H
#define AS_ALLOCATOR_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <jemalloc/jemalloc.h>

#include "actstore/alloc.h"

/* Pending frees a thread may keep before folding them into G (per counter).
 * Bounds how far a concurrent peak or budget check can over-count. */
#define AS__FOLD_BYTES ((int64_t)4 << 20)
/* Blocks of more usable bytes are direct: counted in the global counters
 * alone (d), under the G lock, by whichever thread allocates or frees them;
 * the threads' counters never see them. Such a block always folds (it is
 * larger than the pending frees may be), so counting it twice would only
 * add work. */
#define AS__DIRECT(usable) ((int64_t)(usable) > AS__FOLD_BYTES)

#define AS__NAME_MAX 64
#define AS__NCOUNTERS (AS_TAG_MAX + AS_LAYER_MAX) /* tags first, then layers */
/* Usable sizes of requests up to AS__TAB_MAX come from a table; blocks of
 * those sizes are kept in per-thread bins. */
#define AS__TAB_MAX 32768u
#define AS__NBINS 48                       /* size classes <= AS__TAB_MAX */
#define AS__BIN_SLOTS 32                   /* slots per bin at most */
#define AS__BIN_BYTES 16384u               /* bytes per bin at most (>= 1 slot) */
#define AS__RANGES_MAX 1024
#define AS__DEFAULT_TIMELINE 4096

/* One counter of one thread. Single writer (the owning thread). The
 * pending delta (not yet in G) is live - folded; it is <= 0 between
 * operations and >= -AS__FOLD_BYTES. */
typedef struct as__tcounter {
    _Atomic int64_t live_req, live_use;     /* may go negative per thread */
    _Atomic int64_t fold_req, fold_use;     /* live value at the last fold */
    _Atomic uint64_t allocs, frees;
} as__tcounter;

/* Global side of one counter (one cache line). The charged value is
 * g + d: g >= the threads' live sum, d exact. */
typedef struct as__gcounter {
    _Atomic int64_t  g_req, g_use;        /* charged by the threads' folds */
    _Atomic uint64_t peak_req, peak_use;
    _Atomic int64_t  d_req, d_use;        /* live direct blocks (AS__DIRECT) */
    _Atomic uint64_t d_allocs, d_frees;   /* (tags and layers; not the total) */
} as__gcounter;

typedef struct as__thread as__thread;

/* Freed blocks of one size class kept by a thread (owner only; read by the
 * arena's destroyer, which no call may race). cap 0: not kept. */
typedef struct as__bin {
    uint32_t n, cap;
    void    *slot[AS__BIN_SLOTS];
} as__bin;

/* The state of one thread for one arena. */
typedef struct as__tblock {
    struct as_arena   *arena;
    as__thread        *owner;
    unsigned           slot;               /* index in owner->slots */
    uint32_t           id;                 /* as_block.shard; unique, never 0 */
    unsigned           tcache;             /* jemalloc explicit tcache id */
    int                flags;              /* MALLOCX_ARENA | MALLOCX_TCACHE */
    uint32_t           used;               /* tags this thread has charged: only
                                              they can hold pending deltas (a
                                              thread's first charge of a tag
                                              always folds: counters.c) */
    struct as__tblock *prev, *next;        /* arena's list (g_reg_lock) */
    as__bin            bins[AS__NBINS + 1]; /* last: never keeps (cap 0) */
    as__tcounter       c[AS__NCOUNTERS];
} as__tblock;

/* Retired totals of exited threads (under g_reg_lock). */
typedef struct as__rcounter {
    int64_t  live_req, live_use;
    uint64_t allocs, frees;
} as__rcounter;

/* Extent hooks: the jemalloc struct first so a hook's extent_hooks_t * can
 * be cast back. */
typedef struct as__hooks {
    extent_hooks_t   h;
    struct as_arena *arena;
} as__hooks;

struct as_arena {
    as__hooks        hooks;                /* must stay valid until destroy */
    unsigned         index;                /* jemalloc arena index */
    uint64_t         uid;                  /* unique per process, never 0 */
    int              base_flags;           /* MALLOCX_ARENA(index) */
    bool             checked;
    _Atomic uint64_t budget;
    _Atomic long     fault_n;              /* fault injection: fail the nth
                                              allocation from now (0 = off) */
    bool             fault_sticky;         /* ... and every one after it */

    /* names */
    pthread_mutex_t  names_lock;
    _Atomic unsigned ntags, nlayers;
    char             tag_names[AS_TAG_MAX][AS__NAME_MAX];
    char             layer_names[AS_LAYER_MAX][AS__NAME_MAX];

    /* counters */
    _Atomic int      glock;                /* held by every writer of G and
                                              of the peaks (counters.c) */
    _Atomic uint32_t bias;                 /* thread block that holds G by
                                              bias_busy alone (0: none) */
    _Atomic int      bias_busy;
    as__gcounter     gtotal;
    as__gcounter     g[AS__NCOUNTERS];
    as__tblock      *blocks;               /* g_reg_lock */
    as__rcounter     retired[AS__NCOUNTERS];
    unsigned         nthreads;             /* live blocks (g_reg_lock) */

    /* extent hooks */
    _Atomic uint64_t reserved, released, purged;
    pthread_mutex_t  ranges_lock;
    size_t           nranges;
    bool             ranges_overflow;
    struct { uintptr_t lo, hi; } ranges[AS__RANGES_MAX];

    /* jemalloc statistics */
    pthread_mutex_t  stats_lock;
    size_t           mib_epoch[1], mib_resident[4], mib_mapped[4], mib_retained[4];
    size_t           mib_len;
    _Atomic uint64_t resident, mapped, retained;

    /* timeline */
    pthread_mutex_t  tl_lock;
    as_sample       *tl;
    size_t           tl_cap;
    uint64_t         tl_next_seq;          /* seq of the next sample */
    _Atomic uint64_t step;
    _Atomic int      phase;
    as_sample_fn     hook_fn;              /* tl_lock */
    void            *hook_ud;

    /* sampler */
    unsigned         sampler_hz;
    bool             sampler_running, sampler_stop;
    pthread_t        sampler;
    pthread_cond_t   sampler_cv;           /* CLOCK_MONOTONIC; tl_lock */
};

/* ---- thread.c ---- */
/* The last arena the thread used and its block: the allocation fast path. */
extern _Thread_local uint64_t as__tls_uid __attribute__((tls_model("initial-exec")));
extern _Thread_local struct as__tblock *as__tls_blk __attribute__((tls_model("initial-exec")));

/* The calling thread's block for arena a, created on first use (tcache
 * created, block linked). NULL on failure (out of memory / no tcache). */
as__tblock *as__tblock_get(as_arena *a);
static inline as__tblock *as__tblock_fast(as_arena *a)
{
    if (__builtin_expect(as__tls_uid == a->uid, 1))
        return as__tls_blk;
    return as__tblock_get(a);
}
/* Destroy every block of a (arena destroy; caller guarantees no other call
 * on a runs). */
void as__arena_drop_blocks(as_arena *a);
/* Number of threads holding a block (and a tcache) for a. */
unsigned as__arena_nthreads(as_arena *a);
/* The registry lock: held to read the blocks of any arena. */
void as__reg_lock(void);
void as__reg_unlock(void);

/* ---- sizes.c ---- */
/* Table entry per 8 bytes of request: usable size (bits 0..15), bin
 * (bits 16..23; AS__NBINS = not kept), alignment flag needed (bit 31). */
#define AS__TAB_ALIGN 0x80000000u
/* Largest request whose usable size the four-per-doubling rule gives. */
#define AS__LARGE_RULE_MAX ((size_t)1 << 40)
extern uint32_t as__size_tab[AS__TAB_MAX / 8 + 1];
extern bool as__large_rule;                /* the rule matched nallocx */
void as__size_table_init(void);
/* Usable size and alignment flag from jemalloc (nallocx); 0 if too large. */
size_t as__size_slow(size_t size, int *align_flag);
/* jemalloc's size class of a request above AS__TAB_MAX: four classes per
 * doubling, so round up to a quarter of the power of two below size - 1.
 * Such classes are page multiples: no alignment flag. */
static inline size_t as__usable_large(size_t size)
{
    unsigned lg = 63u - (unsigned)__builtin_clzll((unsigned long long)(size - 1));
    size_t delta = (size_t)1 << (lg - 2);
    return (size + delta - 1) & ~(delta - 1);
}
/* Set up the bins of a new block (after as__size_table_init); checked
 * arenas keep none, so every free is verified and returned to jemalloc. */
void as__bins_init(as__tblock *b, bool keep);
/* Return every block kept in b's bins to jemalloc (through b's tcache). */
void as__bins_drain(as__tblock *b);

/* ---- counters.c ---- */
/* The G lock: every writer of a charged value or a peak holds it, so a
 * fold costs one locked exchange however many counters it moves (readers
 * take none: each value is atomic on its own). A leaf lock, held for a few
 * dozen instructions; waiters spin, then yield.
 *
 * Biased: while one thread alone has written G (a->bias names its block),
 * it takes the lock with plain stores (bias_busy) and no locked
 * instruction. The first other writer revokes the bias for good: it takes
 * glock, clears bias, forces a barrier on every thread of the process
 * (membarrier), so the owner either saw the clear or shows bias_busy, and
 * waits for bias_busy to drop (counters.c). Without membarrier no arena is
 * biased. */
void as__glock_wait(as_arena *a);
void as__glock_revoke(as_arena *a);
/* Returns how G was taken, for as__gunlock. b may be NULL. */
static inline bool as__glock(as_arena *a, const as__tblock *b)
{
    if (b && b->id == atomic_load_explicit(&a->bias, memory_order_relaxed)) {
        atomic_store_explicit(&a->bias_busy, 1, memory_order_relaxed);
        atomic_signal_fence(memory_order_seq_cst);  /* the revoker's barrier orders it */
        if (__builtin_expect(b->id == atomic_load_explicit(&a->bias, memory_order_relaxed), 1))
            return true;
        atomic_store_explicit(&a->bias_busy, 0, memory_order_release);
    }
    if (__builtin_expect(atomic_exchange_explicit(&a->glock, 1, memory_order_acquire), 0))
        as__glock_wait(a);
    if (__builtin_expect(atomic_load_explicit(&a->bias, memory_order_relaxed) != 0, 0))
        as__glock_revoke(a);
    return false;
}
static inline void as__gunlock(as_arena *a, bool biased)
{
    atomic_store_explicit(biased ? &a->bias_busy : &a->glock, 0, memory_order_release);
}
/* Give b the bias when no thread block but b exists (registry lock held),
 * and take it back from b (b's thread, or the arena's destroyer). */
void as__glock_bias(as_arena *a, const as__tblock *b);
void as__glock_unbias(as_arena *a, const as__tblock *b);
/* Fold the thread's pending deltas into G (owner, or with the owner
 * quiescent). */
void as__tblock_fold(as__tblock *b);
/* An allocation / a free of (r, u) bytes of tag and layer by b's thread. */
void as__charge(as_arena *a, as__tblock *b, unsigned tag, unsigned layer,
                int64_t r, int64_t u);
void as__discharge(as_arena *a, as__tblock *b, unsigned tag, unsigned layer,
                   int64_t r, int64_t u);
/* ---- direct blocks (AS__DIRECT): inline, so the allocation path's direct
 * entry (alloc.c) makes no call of its own besides jemalloc's ---- */
/* A direct block's charge raised a charged value (g + d) of the total
 * (when raise_total), the tag or the layer above its peak (G lock held):
 * fold b's pending frees first, if any, so that with one thread the charged
 * values are the live ones when they set a peak, then raise the peaks. */
void as__direct_peaks(as_arena *a, as__tblock *b, unsigned tag, unsigned layer,
                      bool raise_total);
/* d of one counter grows by (r, u) (G lock held); true when the charged
 * value g + d then stands above its peak. */
__attribute__((always_inline))
static inline bool as__d_add(as__gcounter *g, int64_t r, int64_t u)
{
    int64_t dr = atomic_load_explicit(&g->d_req, memory_order_relaxed) + r;
    int64_t du = atomic_load_explicit(&g->d_use, memory_order_relaxed) + u;
    atomic_store_explicit(&g->d_req, dr, memory_order_relaxed);
    atomic_store_explicit(&g->d_use, du, memory_order_relaxed);
    /* peaks stay below 2^63: one signed compare each */
    return atomic_load_explicit(&g->g_req, memory_order_relaxed) + dr >
               (int64_t)atomic_load_explicit(&g->peak_req, memory_order_relaxed) ||
           atomic_load_explicit(&g->g_use, memory_order_relaxed) + du >
               (int64_t)atomic_load_explicit(&g->peak_use, memory_order_relaxed);
}
/* d of one counter shrinks by (r, u) (G lock held). */
static inline void as__d_sub(as__gcounter *g, int64_t r, int64_t u)
{
    atomic_store_explicit(&g->d_req, atomic_load_explicit(&g->d_req, memory_order_relaxed) - r,
                          memory_order_relaxed);
    atomic_store_explicit(&g->d_use, atomic_load_explicit(&g->d_use, memory_order_relaxed) - u,
                          memory_order_relaxed);
}
static inline void as__d_count(_Atomic uint64_t *p)
{
    atomic_store_explicit(p, atomic_load_explicit(p, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}
/* A direct block of tag and layer allocated by b's thread, G lock held.
 * In steady use no peak moves, and b's pending frees (which would make a
 * charged value stand above the live one) stay pending: the peaks are
 * looked at, and the frees folded, only when a charged value passes its
 * peak. raise_total false leaves the total's peak to the caller. */
__attribute__((always_inline))
static inline void as__direct_charge_locked(as_arena *a, as__tblock *b, unsigned tag,
                                            unsigned layer, int64_t r, int64_t u,
                                            bool raise_total)
{
    as__gcounter *gt = &a->g[tag], *gl = &a->g[AS_TAG_MAX + layer];
    bool over = as__d_add(&a->gtotal, r, u) & raise_total;
    over |= as__d_add(gt, r, u);
    as__d_count(&gt->d_allocs);
    over |= as__d_add(gl, r, u);
    as__d_count(&gl->d_allocs);
    if (__builtin_expect(over, 0))
        as__direct_peaks(a, b, tag, layer, raise_total);
}
/* A direct block (AS__DIRECT) of tag and layer allocated by b's thread /
 * freed by any thread (b: the freeing thread's block, for the G lock's
 * bias; may be NULL). The peaks rise to the charged values (the live
 * values when one thread is active). */
__attribute__((always_inline))
static inline void as__direct_charge(as_arena *a, as__tblock *b, unsigned tag,
                                     unsigned layer, int64_t r, int64_t u)
{
    bool gb = as__glock(a, b);
    as__direct_charge_locked(a, b, tag, layer, r, u, true);
    as__gunlock(a, gb);
}
__attribute__((always_inline))
static inline void as__direct_discharge(as_arena *a, as__tblock *b, unsigned tag,
                                        unsigned layer, int64_t r, int64_t u)
{
    as__gcounter *gt = &a->g[tag], *gl = &a->g[AS_TAG_MAX + layer];
    bool gb = as__glock(a, b);
    as__d_sub(&a->gtotal, r, u);
    as__d_sub(gt, r, u);
    as__d_count(&gt->d_frees);
    as__d_sub(gl, r, u);
    as__d_count(&gl->d_frees);
    as__gunlock(a, gb);
}
/* as__direct_charge under the budget (as__charge_budget's contract). */
bool as__direct_charge_budget(as_arena *a, as__tblock *b, unsigned tag, unsigned layer,
                              int64_t r, int64_t u, uint64_t budget, uint64_t *live);
/* A free by b's thread of a block another thread charged. */
void as__discharge_remote(as_arena *a, as__tblock *b, unsigned tag, unsigned layer,
                          int64_t r, int64_t u);
/* Budget: is there room for usable more bytes (a cheap look at the charged
 * total, then the true live value, returned in *live when there is not)? */
bool as__budget_room(as_arena *a, as__tblock *b, uint64_t usable, uint64_t budget,
                     uint64_t *live);
/* as__charge under the budget; false (nothing changed, the true live value
 * in *live) when the allocation does not fit. */
bool as__charge_budget(as_arena *a, as__tblock *b, unsigned tag, unsigned layer,
                       int64_t r, int64_t u, uint64_t budget, uint64_t *live);
/* Live usable (and requested) bytes: the sum over threads (+ retired), as
 * a snapshot reads it. Caller holds the registry lock. */
uint64_t as__true_live_locked(as_arena *a, uint64_t *requested);

/* ---- alloc.c ---- */
/* Fault injection (declared for the store and tests in store_internal.h). */
void as__arena_fault_set(as_arena *a, long nth, bool sticky);
bool as__arena_fault(as_arena *a);
long as__arena_fault_left(as_arena *a);

/* ---- hooks.c ---- */
int  as__hooks_init(as__hooks *h, as_arena *a);
bool as__ranges_contain(as_arena *a, const void *p);

/* ---- arena.c ---- */
/* Sum the live values of the first nt tags and nl layers into out (array of
 * nt + nl: tags, then layers). Caller holds the registry lock. */
void as__sum_live(as_arena *a, unsigned nt, unsigned nl, as__rcounter *out);
void as__set_error(const as_arena *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* ---- sampler.c ---- */
int  as__timeline_init(as_arena *a, size_t cap);
void as__timeline_free(as_arena *a);
int  as__sampler_start(as_arena *a);
void as__sampler_stop(as_arena *a);
int  as__stats_init(as_arena *a);

#endif

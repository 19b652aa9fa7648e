/*
 * The allocation path: as_alloc / as_calloc / as_free / as_arena_owns.
 *
 * Cost model (docs/benchmarks.md has the figures): one thread-local
 * lookup, a table load for the usable size, a block from the thread's bin
 * of that size class or else mallocx/sdallocx with the arena and the
 * thread's private tcache, and two counter updates (tag, layer; the total
 * is their sum) that are plain loads and stores on memory only this thread
 * writes. Shared counters are touched (under the G lock, counters.c) only
 * when a counter grows past its folded value or its pending frees pass
 * AS__FOLD_BYTES, and by direct blocks (AS__DIRECT), which are counted
 * there alone; small and mid-size alloc/free churn touches none.
 */
#include <assert.h>
#include <stdio.h>
#include <string.h>

#include "allocator/fault.h"
#include "allocator/internal.h"

#define RLX memory_order_relaxed
#define LIKELY(x)   __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)

static inline int64_t ld(_Atomic int64_t *p) { return atomic_load_explicit(p, RLX); }
static inline void st(_Atomic int64_t *p, int64_t v) { atomic_store_explicit(p, v, RLX); }
static inline void inc(_Atomic uint64_t *p)
{
    atomic_store_explicit(p, atomic_load_explicit(p, RLX) + 1, RLX);
}

/* Usable size, alignment flag and bin of a request (size > 0); usable 0
 * when the size overflows the size classes. */
static inline size_t usable_of(size_t size, int *align_flag, unsigned *bin)
{
    if (LIKELY(size <= AS__TAB_MAX)) {
        uint32_t e = as__size_tab[(size + 7) >> 3];
        *align_flag = (e & AS__TAB_ALIGN) ? MALLOCX_LG_ALIGN(size >= 64 ? 6 : 4) : 0;
        *bin = (e >> 16) & 0xff;
        return e & 0xffff;
    }
    *bin = AS__NBINS;
    *align_flag = 0;
    if (LIKELY(as__large_rule && size <= AS__LARGE_RULE_MAX))
        return as__usable_large(size);
    return as__size_slow(size, align_flag);
}

static char *human(uint64_t v, char *buf, size_t n)
{
    static const char *const unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double x = (double)v;
    unsigned u = 0;
    while (x >= 1024.0 && u < 4) {
        x /= 1024.0;
        u++;
    }
    if (u == 0)
        snprintf(buf, n, "%llu B", (unsigned long long)v);
    else
        snprintf(buf, n, "%.1f %s", x, unit[u]);
    return buf;
}

__attribute__((noinline, cold))
static int budget_error(as_arena *a, size_t size, size_t usable, uint16_t tag,
                        uint16_t layer, uint64_t budget, uint64_t live, as_block *out)
{
    memset(out, 0, sizeof *out);
    char b1[32], b2[32], b3[32], b4[32];
    as__set_error(a, "budget %s exceeded: tag %s, layer %s, request %s (usable %s), live %s",
                  human(budget, b1, sizeof b1), a->tag_names[tag],
                  a->layer_names[layer], human(size, b2, sizeof b2),
                  human(usable, b3, sizeof b3), human(live, b4, sizeof b4));
    return AS_EBUDGET;
}

__attribute__((noinline, cold))
static int bad_ids(as_arena *a, uint16_t tag, uint16_t layer, as_block *out)
{
    if (out)
        memset(out, 0, sizeof *out);
    if (!a || !out)
        return AS_EINVAL;
    unsigned nt = atomic_load(&a->ntags), nl = atomic_load(&a->nlayers);
    if (tag >= nt)
        as__set_error(a, "unknown tag %u (%u registered)", tag, nt);
    else
        as__set_error(a, "unknown layer %u (%u registered), tag %s", layer, nl,
                      a->tag_names[tag]);
    return AS_EINVAL;
}

/* ---- fault injection (tests): SQLite's fail-the-Nth-allocation loop ---- */

_Thread_local struct as_arena *as__fault_tls;

void as__arena_fault_set(as_arena *a, long nth, bool sticky)
{
    a->fault_sticky = sticky;
    atomic_store(&a->fault_n, nth > 0 ? nth : 0);
    as__fault_tls = nth > 0 ? a : NULL;   /* this thread's as__fmalloc counts too */
}

__attribute__((noinline))
static bool fault_step(as_arena *a, long n)
{
    if (n > 1) {
        atomic_store_explicit(&a->fault_n, n - 1, RLX);
        return false;
    }
    if (!a->fault_sticky)
        atomic_store_explicit(&a->fault_n, 0, RLX);
    return true;
}

long as__arena_fault_left(as_arena *a)
{
    return atomic_load(&a->fault_n);
}

bool as__arena_fault(as_arena *a)
{
    long n = atomic_load_explicit(&a->fault_n, RLX);
    return UNLIKELY(n != 0) && fault_step(a, n);
}

/* ---- counters: the common case (the rest is in counters.c) ---- */

/* New live values of counter t after adding (r, u); false when that would
 * fold it (as__charge's and as__discharge's tests). */
static inline bool no_fold(as__tcounter *t, int64_t r, int64_t u, int64_t *lr, int64_t *lu)
{
    *lr = ld(&t->live_req) + r;
    *lu = ld(&t->live_use) + u;
    if (r > 0)
        return *lr <= ld(&t->fold_req) && *lu <= ld(&t->fold_use);
    return *lr >= ld(&t->fold_req) - AS__FOLD_BYTES && *lu >= ld(&t->fold_use) - AS__FOLD_BYTES;
}

static inline void set_live(as__tcounter *t, int64_t lr, int64_t lu, _Atomic uint64_t *count)
{
    st(&t->live_req, lr);
    st(&t->live_use, lu);
    inc(count);
}

/* The counters' common case: an allocation (r > 0) or a free (r < 0) by
 * the thread that charged the block, where neither the tag's nor the
 * layer's counter folds. Updates both and returns true; false (nothing
 * changed) otherwise, for as__charge / as__discharge. */
__attribute__((always_inline))
static inline bool count_nofold(as__tblock *b, unsigned tag, unsigned layer, int64_t r,
                                int64_t u)
{
    as__tcounter *tt = &b->c[tag], *tl = &b->c[AS_TAG_MAX + layer];
    int64_t r1, u1, r2, u2;
    if (UNLIKELY(!no_fold(tt, r, u, &r1, &u1) || !no_fold(tl, r, u, &r2, &u2)))
        return false;
    set_live(tt, r1, u1, r > 0 ? &tt->allocs : &tt->frees);
    set_live(tl, r2, u2, r > 0 ? &tl->allocs : &tl->frees);
    return true;
}

/* Return a block to the thread's bin of its class, or to jemalloc when the
 * bin is full or the class is not kept. A usable size that is not a class
 * of the table (a corrupted block) never enters a bin. */
static inline void give(as__tblock *b, void *p, size_t usable)
{
    if (LIKELY(usable <= AS__TAB_MAX)) {
        uint32_t e = as__size_tab[(usable + 7) >> 3];
        as__bin *bn = &b->bins[(e >> 16) & 0xff];
        uint32_t n = bn->n;
        if (LIKELY(n < bn->cap && (e & 0xffff) == usable)) {
            bn->slot[n] = p;
            bn->n = n + 1;
            return;
        }
    }
    /* usable is a size class, so sdallocx needs no alignment flag. */
    sdallocx(p, usable, b->flags);
}

/* Memory for a request: the thread's bin of its class, else jemalloc. */
static inline void *take(as__tblock *b, size_t size, size_t usable, unsigned bin, int flags)
{
    as__bin *bn = &b->bins[bin];
    uint32_t n = bn->n;
    if (LIKELY(n)) {
        bn->n = --n;
        void *p = bn->slot[n];
        if (flags & MALLOCX_ZERO)
            memset(p, 0, usable);
        return p;
    }
    return mallocx(size, b->flags | flags);
}

__attribute__((noinline))
static int do_alloc(as_arena *a, size_t size, uint16_t tag, uint16_t layer,
                    as_block *out, int zero)
{
    if (UNLIKELY(!a || !out ||
                 tag >= atomic_load_explicit(&a->ntags, memory_order_acquire) ||
                 layer >= atomic_load_explicit(&a->nlayers, memory_order_acquire)))
        return bad_ids(a, tag, layer, out);
    if (UNLIKELY(size == 0)) {
        memset(out, 0, sizeof *out);
        out->tag = tag;
        out->layer = layer;
        return 0;
    }
    if (UNLIKELY(atomic_load_explicit(&a->fault_n, RLX) != 0) && as__arena_fault(a)) {
        memset(out, 0, sizeof *out);
        as__set_error(a, "out of memory: %zu bytes (tag %s, layer %s): injected "
                      "failure", size, a->tag_names[tag], a->layer_names[layer]);
        return AS_ENOMEM;
    }
    as__tblock *b = as__tblock_fast(a);
    if (UNLIKELY(!b)) {
        memset(out, 0, sizeof *out);
        as__set_error(a, "no per-thread state for arena %u (out of memory or "
                      "more than 64 arenas used by this thread)", a->index);
        return AS_ENOMEM;
    }
    int align_flag;
    unsigned bin;
    size_t usable = usable_of(size, &align_flag, &bin);
    if (UNLIKELY(usable == 0)) {           /* size overflows the size classes */
        memset(out, 0, sizeof *out);
        as__set_error(a, "cannot allocate %zu bytes (tag %s): too large", size,
                      a->tag_names[tag]);
        return AS_ENOMEM;
    }
    uint64_t budget = atomic_load_explicit(&a->budget, RLX), live;
    if (UNLIKELY(budget) && !as__budget_room(a, b, usable, budget, &live))
        return budget_error(a, size, usable, tag, layer, budget, live, out);
    void *p = take(b, size, usable, bin, align_flag | zero);
    if (UNLIKELY(!p)) {
        memset(out, 0, sizeof *out);
        as__set_error(a, "out of memory: %zu bytes (tag %s, layer %s) in arena %u",
                      size, a->tag_names[tag], a->layer_names[layer], a->index);
        return AS_ENOMEM;
    }
    int64_t r = (int64_t)size, u = (int64_t)usable;
    if (AS__DIRECT(u)) {
        if (!budget) {
            as__direct_charge(a, b, tag, layer, r, u);
        } else if (!as__direct_charge_budget(a, b, tag, layer, r, u, budget, &live)) {
            give(b, p, usable);
            return budget_error(a, size, usable, tag, layer, budget, live, out);
        }
    } else if (UNLIKELY(budget)) {
        if (!as__charge_budget(a, b, tag, layer, r, u, budget, &live)) {
            give(b, p, usable);
            return budget_error(a, size, usable, tag, layer, budget, live, out);
        }
    } else if (!count_nofold(b, tag, layer, r, u)) {
        as__charge(a, b, tag, layer, r, u);
    }

    out->ptr = p;
    out->size = size;
    out->usable = usable;
    out->tag = tag;
    out->layer = layer;
    out->shard = b->id;
    return 0;
}

/* ---- the fast paths ------------------------------------------------------
 * The common cases, for valid arguments without budget, fault injection or
 * checked mode, on a thread that has its block for the arena at hand:
 *   - a small block from (to) the bin of its class, with no counter that
 *     would fold: no call at all, so no register is saved;
 *   - a large block straight from (to) jemalloc.
 * Anything else goes the full way (do_alloc / free_slow), which checks and
 * reports everything; the fast paths change nothing before they commit. */

/* The calling thread's block when the request qualifies, else NULL. */
static inline as__tblock *fast_ok(as_arena *a, uint16_t tag, uint16_t layer)
{
    if (UNLIKELY(!a || tag >= atomic_load_explicit(&a->ntags, memory_order_acquire) ||
                 layer >= atomic_load_explicit(&a->nlayers, memory_order_acquire) ||
                 (atomic_load_explicit(&a->fault_n, RLX) |
                  (long)atomic_load_explicit(&a->budget, RLX) | a->checked) != 0 ||
                 as__tls_uid != a->uid))
        return NULL;
    return as__tls_blk;
}

/* The whole block, so that no field of the caller's struct is left stale. */
static inline void set_block(as_block *out, void *p, size_t size, size_t usable,
                             uint16_t tag, uint16_t layer, uint32_t shard)
{
    *out = (as_block){.ptr = p, .size = size, .usable = usable, .tag = tag,
                      .layer = layer, .shard = shard};
}

/* size in 1 .. AS__TAB_MAX */
static inline bool alloc_bin(as__tblock *b, size_t size, uint16_t tag, uint16_t layer,
                             as_block *out)
{
    uint32_t e = as__size_tab[(size + 7) >> 3];
    as__bin *bn = &b->bins[(e >> 16) & 0xff];
    uint32_t n = bn->n;
    int64_t u = e & 0xffff;
    if (UNLIKELY(n == 0 || !count_nofold(b, tag, layer, (int64_t)size, u)))
        return false;
    bn->n = --n;
    set_block(out, bn->slot[n], size, (size_t)u, tag, layer, b->id);
    return true;
}

/* size > AS__TAB_MAX: an entry of its own, reached by a size test before
 * anything is saved, so these sizes pay one prologue and make no call
 * besides mallocx when no counter folds. Such classes need no alignment
 * flag; above AS__FOLD_BYTES (size and usable alike: a class is never below
 * its request) the block is direct. */
__attribute__((noinline, hot))
static int alloc_big(as_arena *a, size_t size, uint16_t tag, uint16_t layer, as_block *out)
{
    as__tblock *b = fast_ok(a, tag, layer);
    if (UNLIKELY(!b || !out || size > AS__LARGE_RULE_MAX || !as__large_rule))
        return do_alloc(a, size, tag, layer, out, 0);
    size_t usable = as__usable_large(size);
    void *p = mallocx(size, b->flags);
    if (UNLIKELY(!p))
        return do_alloc(a, size, tag, layer, out, 0);   /* says why */
    int64_t r = (int64_t)size, u = (int64_t)usable;
    if (AS__DIRECT(u))
        as__direct_charge(a, b, tag, layer, r, u);
    else if (!count_nofold(b, tag, layer, r, u))
        as__charge(a, b, tag, layer, r, u);
    set_block(out, p, size, usable, tag, layer, b->id);
    return 0;
}

static inline bool free_bin(as__tblock *b, as_block *blk)
{
    int64_t r = (int64_t)blk->size, u = (int64_t)blk->usable;
    uint32_t e = as__size_tab[(u + 7) >> 3];
    as__bin *bn = &b->bins[(e >> 16) & 0xff];
    uint32_t n = bn->n;
    if (UNLIKELY(n >= bn->cap || (e & 0xffff) != (uint32_t)u || blk->shard != b->id ||
                 !count_nofold(b, blk->tag, blk->layer, -r, -u)))
        return false;
    bn->slot[n] = blk->ptr;
    bn->n = n + 1;
    memset(blk, 0, sizeof *blk);
    return true;
}

/* size <= AS__TAB_MAX */
__attribute__((noinline, hot))
static int alloc_small(as_arena *a, size_t size, uint16_t tag, uint16_t layer,
                       as_block *out)
{
    as__tblock *b = fast_ok(a, tag, layer);
    if (LIKELY(b && out && size) && LIKELY(alloc_bin(b, size, tag, layer, out)))
        return 0;
    return do_alloc(a, size, tag, layer, out, 0);
}

/* Two entries by size, so that neither pays the other's prologue (GCC
 * saves the registers of a whole function before its first test). */
__attribute__((hot))
int as_alloc(as_arena *a, size_t size, uint16_t tag, uint16_t layer, as_block *out)
{
    if (UNLIKELY(size > AS__TAB_MAX))
        return alloc_big(a, size, tag, layer, out);
    return alloc_small(a, size, tag, layer, out);
}

int as_calloc(as_arena *a, size_t size, uint16_t tag, uint16_t layer, as_block *out)
{
    return do_alloc(a, size, tag, layer, out, MALLOCX_ZERO);
}

bool as_arena_owns(const as_arena *ca, const void *p)
{
    if (!ca || !p)
        return false;
    as_arena *a = (as_arena *)ca;          /* only the range lock is taken */
    if (!as__ranges_contain(a, p))
        return false;
    unsigned ind = UINT32_MAX;
    size_t sz = sizeof ind;
    const void *q = p;
    if (mallctl("arenas.lookup", &ind, &sz, &q, sizeof q) != 0)
        return false;
    return ind == a->index;
}

/* The block is a live allocation of a: the pointer lies in one of its
 * extents and jemalloc's size for it is the block's usable size. */
static int check_block(as_arena *a, const as_block *blk, const char *what)
{
    if (!as_arena_owns(a, blk->ptr)) {
        as__set_error(a, "%s of %p (tag %s, %zu bytes): not allocated by arena %u",
                      what, blk->ptr, a->tag_names[blk->tag], blk->size, a->index);
        return AS_EFOREIGN;
    }
    size_t real = sallocx(blk->ptr, 0);
    if (real != blk->usable || blk->size > real) {
        as__set_error(a, "%s of %p: block says %zu/%zu bytes, jemalloc says %zu",
                      what, blk->ptr, blk->size, blk->usable, real);
        return AS_EINVAL;
    }
    return 0;
}

int as_arena_check_block(as_arena *a, const as_block *blk)
{
    if (!a || !blk || !blk->ptr)
        return AS_EINVAL;
    if (blk->tag >= atomic_load_explicit(&a->ntags, memory_order_acquire) ||
        blk->layer >= atomic_load_explicit(&a->nlayers, memory_order_acquire)) {
        as__set_error(a, "block %p: unknown tag %u or layer %u", blk->ptr, blk->tag,
                      blk->layer);
        return AS_EINVAL;
    }
    return check_block(a, blk, "block");
}

__attribute__((noinline))
static int free_slow(as_arena *a, as_block *blk)
{
    if (!blk)
        return AS_EINVAL;
    if (UNLIKELY(!blk->ptr)) {
        memset(blk, 0, sizeof *blk);
        return 0;
    }
    if (!a)
        return AS_EINVAL;
    uint16_t tag = blk->tag, layer = blk->layer;
    if (tag >= atomic_load_explicit(&a->ntags, memory_order_acquire) ||
        layer >= atomic_load_explicit(&a->nlayers, memory_order_acquire)) {
        as__set_error(a, "free of %p: unknown tag %u or layer %u", blk->ptr, tag, layer);
        return AS_EINVAL;
    }
    if (UNLIKELY(a->checked)) {
        int rc = check_block(a, blk, "free");
        if (rc)
            return rc;
    }
    as__tblock *b = as__tblock_fast(a);
    if (UNLIKELY(!b)) {
        as__set_error(a, "no per-thread state for arena %u", a->index);
        return AS_ENOMEM;
    }
    give(b, blk->ptr, blk->usable);
    int64_t r = (int64_t)blk->size, u = (int64_t)blk->usable;
    if (AS__DIRECT(u))
        as__direct_discharge(a, b, tag, layer, r, u);
    else if (UNLIKELY(blk->shard != b->id))
        as__discharge_remote(a, b, tag, layer, r, u);
    else if (!count_nofold(b, tag, layer, -r, -u))
        as__discharge(a, b, tag, layer, r, u);
    memset(blk, 0, sizeof *blk);
    return 0;
}

/* usable > AS__TAB_MAX, any thread's block: as alloc_big, an entry of its
 * own. */
__attribute__((noinline, hot))
static int free_big(as_arena *a, as_block *blk)
{
    as__tblock *b = blk->ptr ? fast_ok(a, blk->tag, blk->layer) : NULL;
    if (UNLIKELY(!b))
        return free_slow(a, blk);
    size_t usable = blk->usable;
    int64_t r = (int64_t)blk->size, u = (int64_t)usable;
    unsigned tag = blk->tag, layer = blk->layer;
    uint32_t shard = blk->shard;
    sdallocx(blk->ptr, usable, b->flags);
    if (AS__DIRECT(u))
        as__direct_discharge(a, b, tag, layer, r, u);
    else if (shard != b->id)
        as__discharge_remote(a, b, tag, layer, r, u);
    else if (!count_nofold(b, tag, layer, -r, -u))
        as__discharge(a, b, tag, layer, r, u);
    memset(blk, 0, sizeof *blk);
    return 0;
}

__attribute__((hot))
int as_free(as_arena *a, as_block *blk)
{
    if (UNLIKELY(blk && blk->usable > AS__TAB_MAX))
        return free_big(a, blk);
    as__tblock *b = blk && blk->ptr ? fast_ok(a, blk->tag, blk->layer) : NULL;
    if (LIKELY(b) && LIKELY(free_bin(b, blk)))
        return 0;
    return free_slow(a, blk);
}

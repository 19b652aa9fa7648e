/*
 * The allocation path: as_alloc / as_calloc / as_free / as_arena_owns.
 *
 * Cost model (docs/allocator.md has the figures): one thread-local lookup,
 * nallocx for the usable size, mallocx/sdallocx with the arena and the
 * thread's private tcache, and three counter updates (total, tag, layer)
 * that are plain loads and stores on memory only this thread writes. A
 * shared atomic is touched only when the thread's net usage grows (fold
 * with atomic add + atomic max for the peak) or its pending frees pass
 * AS__FOLD_BYTES; alloc/free churn in steady state touches none.
 */
#include <assert.h>
#include <stdio.h>
#include <string.h>

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

/* ---- usable sizes ------------------------------------------------------
 * nallocx costs about as much as the rest of our bookkeeping, so the usable
 * size (and whether the alignment flag is needed) of every small request is
 * tabulated once, per 8 bytes (size classes are multiples of 8, so a
 * request and its round-up to 8 share a class). */
#define AS__TAB_MAX 32768u
#define AS__TAB_ALIGN 0x80000000u
static uint32_t g_usable[AS__TAB_MAX / 8 + 1];
static pthread_once_t g_tab_once = PTHREAD_ONCE_INIT;

/* Flags and usable size for a request of size bytes (size > 0): alignment
 * 64 for size >= 64, else 16. Size classes that are multiples of the
 * alignment are naturally aligned (slab regions sit at multiples of their
 * size in page-aligned slabs), so the flag is added only for the others. */
static size_t size_slow(size_t size, int *align_flag)
{
    size_t align = size >= 64 ? 64 : 16;
    size_t usable = nallocx(size, 0);
    *align_flag = 0;
    if (usable % align) {
        *align_flag = MALLOCX_LG_ALIGN(align == 64 ? 6 : 4);
        usable = nallocx(size, *align_flag);
    }
    return usable;
}

static void tab_init(void)
{
    for (size_t i = 1; i <= AS__TAB_MAX / 8; i++) {
        int fl;
        size_t u = size_slow(i * 8, &fl);
        assert(u < AS__TAB_ALIGN);
        g_usable[i] = (uint32_t)u | (fl ? AS__TAB_ALIGN : 0);
    }
}

void as__size_table_init(void)
{
    pthread_once(&g_tab_once, tab_init);
}

static inline size_t usable_of(size_t size, int *align_flag)
{
    if (LIKELY(size <= AS__TAB_MAX)) {
        uint32_t e = g_usable[(size + 7) >> 3];
        *align_flag = (e & AS__TAB_ALIGN) ? MALLOCX_LG_ALIGN(size >= 64 ? 6 : 4) : 0;
        return e & ~AS__TAB_ALIGN;
    }
    return size_slow(size, align_flag);
}

/* ---- counters ------------------------------------------------------------
 * pending = live - folded (see internal.h). Folding is the only place a
 * shared cache line is written. */

__attribute__((noinline))
static void fold_up(as__tcounter *t, as__gcounter *g, int64_t lr, int64_t lu,
                    int64_t pr, int64_t pu)
{
    int64_t nr = atomic_fetch_add_explicit(&g->g_req, pr, RLX) + pr;
    int64_t nu = atomic_fetch_add_explicit(&g->g_use, pu, RLX) + pu;
    if (nr > 0)
        as__atomic_max(&g->peak_req, (uint64_t)nr);
    if (nu > 0)
        as__atomic_max(&g->peak_use, (uint64_t)nu);
    st(&t->fold_req, lr);
    st(&t->fold_use, lu);
}

__attribute__((noinline))
static void fold_down(as__tcounter *t, as__gcounter *g, int64_t lr, int64_t lu,
                      int64_t pr, int64_t pu)
{
    atomic_fetch_add_explicit(&g->g_req, pr, RLX);
    atomic_fetch_add_explicit(&g->g_use, pu, RLX);
    st(&t->fold_req, lr);
    st(&t->fold_use, lu);
}

/* Charge an allocation of (r, u) bytes to counter t/g. */
static inline void charge(as__tcounter *t, as__gcounter *g, int64_t r, int64_t u)
{
    int64_t lr = ld(&t->live_req) + r, lu = ld(&t->live_use) + u;
    st(&t->live_req, lr);
    st(&t->live_use, lu);
    inc(&t->allocs);
    int64_t pr = lr - ld(&t->fold_req), pu = lu - ld(&t->fold_use);
    if (UNLIKELY(pr > 0 || pu > 0))
        fold_up(t, g, lr, lu, pr, pu);
}

/* Record a free of (r, u) bytes in counter t/g. */
static inline void discharge(as__tcounter *t, as__gcounter *g, int64_t r, int64_t u)
{
    int64_t lr = ld(&t->live_req) - r, lu = ld(&t->live_use) - u;
    st(&t->live_req, lr);
    st(&t->live_use, lu);
    inc(&t->frees);
    int64_t pr = lr - ld(&t->fold_req), pu = lu - ld(&t->fold_use);
    if (UNLIKELY(pr < -AS__FOLD_BYTES || pu < -AS__FOLD_BYTES))
        fold_down(t, g, lr, lu, pr, pu);
}

/* A free of a block another thread charged: into G at once (see
 * internal.h). live and folded move together, so the pending delta of this
 * thread is unchanged. */
__attribute__((noinline))
static void discharge_remote(as__tcounter *t, as__gcounter *g, int64_t r, int64_t u)
{
    st(&t->live_req, ld(&t->live_req) - r);
    st(&t->live_use, ld(&t->live_use) - u);
    st(&t->fold_req, ld(&t->fold_req) - r);
    st(&t->fold_use, ld(&t->fold_use) - u);
    inc(&t->frees);
    atomic_fetch_sub_explicit(&g->g_req, r, RLX);
    atomic_fetch_sub_explicit(&g->g_use, u, RLX);
}

/* The total counter with a budget. Returns false (nothing changed) when
 * the allocation would take the charged total past the budget. */
__attribute__((noinline))
static bool charge_total_budget(as_arena *a, as__tblock *b, int64_t r, int64_t u,
                                uint64_t budget)
{
    as__tcounter *t = &b->total;
    as__gcounter *g = &a->gtotal;
    int64_t lr = ld(&t->live_req) + r, lu = ld(&t->live_use) + u;
    int64_t pr = lr - ld(&t->fold_req), pu = lu - ld(&t->fold_use);
    int64_t cur = atomic_load_explicit(&g->g_use, RLX);
    if (pr <= 0 && pu <= 0) {              /* covered by our own pending frees */
        if (cur + pu > (int64_t)budget)
            return false;
    } else {
        do {
            if (cur + pu > (int64_t)budget)
                return false;
        } while (!atomic_compare_exchange_weak_explicit(&g->g_use, &cur, cur + pu,
                                                        RLX, RLX));
        int64_t nr = atomic_fetch_add_explicit(&g->g_req, pr, RLX) + pr;
        if (nr > 0)
            as__atomic_max(&g->peak_req, (uint64_t)nr);
        if (cur + pu > 0)
            as__atomic_max(&g->peak_use, (uint64_t)(cur + pu));
        st(&t->fold_req, lr);
        st(&t->fold_use, lu);
    }
    st(&t->live_req, lr);
    st(&t->live_use, lu);
    inc(&t->allocs);
    return true;
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

/* True live usable bytes of a: the sum over threads (+ retired), as a
 * snapshot reads it. Caller holds the registry lock. */
static uint64_t true_live_locked(as_arena *a, uint64_t *requested)
{
    int64_t v = 0, q = 0;
    for (unsigned i = 0; i < AS_TAG_MAX; i++) {
        v += a->retired[i].live_use;
        q += a->retired[i].live_req;
    }
    for (as__tblock *b = a->blocks; b; b = b->next) {
        v += ld(&b->total.live_use);
        q += ld(&b->total.live_req);
    }
    if (requested)
        *requested = q > 0 ? (uint64_t)q : 0;
    return v > 0 ? (uint64_t)v : 0;
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

/* The charged total says no. It may stand above the true live value by
 * frees other threads have not folded yet (see internal.h), so recount:
 * returns true (charged, under the registry lock so that two recounts do
 * not both spend the same room) when the allocation fits the true value;
 * else *live gets that value for the message. */
__attribute__((noinline, cold))
static bool budget_recount(as_arena *a, as__tblock *b, int64_t r, int64_t u,
                           uint64_t budget, uint64_t *live)
{
    as__reg_lock();
    uint64_t live_req;
    *live = true_live_locked(a, &live_req);
    bool fits = *live + (uint64_t)u <= budget;
    if (fits) {
        /* into G like charge(), but the peak gets the true value: G stands
         * above it by exactly the frees we just stepped around */
        as__tcounter *t = &b->total;
        int64_t lr = ld(&t->live_req) + r, lu = ld(&t->live_use) + u;
        atomic_fetch_add_explicit(&a->gtotal.g_req, lr - ld(&t->fold_req), RLX);
        atomic_fetch_add_explicit(&a->gtotal.g_use, lu - ld(&t->fold_use), RLX);
        as__atomic_max(&a->gtotal.peak_use, *live + (uint64_t)u);
        as__atomic_max(&a->gtotal.peak_req, live_req + (uint64_t)r);
        st(&t->fold_req, lr);
        st(&t->fold_use, lu);
        st(&t->live_req, lr);
        st(&t->live_use, lu);
        inc(&t->allocs);
    }
    as__reg_unlock();
    return fits;
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

void as__arena_fault_set(as_arena *a, long nth, bool sticky)
{
    a->fault_sticky = sticky;
    atomic_store(&a->fault_n, nth > 0 ? nth : 0);
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

static inline int do_alloc(as_arena *a, size_t size, uint16_t tag, uint16_t layer,
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
    size_t usable = usable_of(size, &align_flag);
    if (UNLIKELY(usable == 0)) {           /* size overflows the size classes */
        memset(out, 0, sizeof *out);
        as__set_error(a, "cannot allocate %zu bytes (tag %s): too large", size,
                      a->tag_names[tag]);
        return AS_ENOMEM;
    }
    uint64_t budget = atomic_load_explicit(&a->budget, RLX);
    if (UNLIKELY(budget)) {                /* early out before mallocx */
        as__tcounter *t = &b->total;
        int64_t pu = ld(&t->live_use) - ld(&t->fold_use) + (int64_t)usable;
        if (atomic_load_explicit(&a->gtotal.g_use, RLX) + pu > (int64_t)budget) {
            as__reg_lock();
            uint64_t live = true_live_locked(a, NULL);
            as__reg_unlock();
            if (live + usable > budget)
                return budget_error(a, size, usable, tag, layer, budget, live, out);
        }
    }
    void *p = mallocx(size, b->flags | align_flag | zero);
    if (UNLIKELY(!p)) {
        memset(out, 0, sizeof *out);
        as__set_error(a, "out of memory: %zu bytes (tag %s, layer %s) in arena %u",
                      size, a->tag_names[tag], a->layer_names[layer], a->index);
        return AS_ENOMEM;
    }
    int64_t r = (int64_t)size, u = (int64_t)usable;
    if (UNLIKELY(budget)) {
        uint64_t live;
        if (!charge_total_budget(a, b, r, u, budget) &&
            !budget_recount(a, b, r, u, budget, &live)) {
            sdallocx(p, usable, b->flags);
            return budget_error(a, size, usable, tag, layer, budget, live, out);
        }
    } else {
        charge(&b->total, &a->gtotal, r, u);
    }
    charge(&b->c[tag], &a->g[tag], r, u);
    charge(&b->c[AS_TAG_MAX + layer], &a->g[AS_TAG_MAX + layer], r, u);

    out->ptr = p;
    out->size = size;
    out->usable = usable;
    out->tag = tag;
    out->layer = layer;
    out->shard = b->id;
    return 0;
}

int as_alloc(as_arena *a, size_t size, uint16_t tag, uint16_t layer, as_block *out)
{
    return do_alloc(a, size, tag, layer, out, 0);
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

int as_free(as_arena *a, as_block *blk)
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
    /* usable is a size class, so sdallocx needs no alignment flag. */
    sdallocx(blk->ptr, blk->usable, b->flags);
    int64_t r = (int64_t)blk->size, u = (int64_t)blk->usable;
    if (UNLIKELY(blk->shard != b->id)) {
        discharge_remote(&b->total, &a->gtotal, r, u);
        discharge_remote(&b->c[tag], &a->g[tag], r, u);
        discharge_remote(&b->c[AS_TAG_MAX + layer], &a->g[AS_TAG_MAX + layer], r, u);
        memset(blk, 0, sizeof *blk);
        return 0;
    }
    discharge(&b->total, &a->gtotal, r, u);
    discharge(&b->c[tag], &a->g[tag], r, u);
    discharge(&b->c[AS_TAG_MAX + layer], &a->g[AS_TAG_MAX + layer], r, u);
    memset(blk, 0, sizeof *blk);
    return 0;
}

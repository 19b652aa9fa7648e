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

static inline int64_t ld(_Atomic int64_t *p) { return atomic_load_explicit(p, RLX); }
static inline void st(_Atomic int64_t *p, int64_t v) { atomic_store_explicit(p, v, RLX); }
static inline void inc(_Atomic uint64_t *p)
{
    atomic_store_explicit(p, atomic_load_explicit(p, RLX) + 1, RLX);
}

/* Charge an allocation of (r, u) bytes to counter t/g. */
static inline void charge(as__tcounter *t, as__gcounter *g, int64_t r, int64_t u)
{
    int64_t pr = ld(&t->pend_req) + r, pu = ld(&t->pend_use) + u;
    if (pr > 0 || pu > 0) {
        int64_t nr = atomic_fetch_add_explicit(&g->g_req, pr, RLX) + pr;
        int64_t nu = atomic_fetch_add_explicit(&g->g_use, pu, RLX) + pu;
        if (nr > 0 && (uint64_t)nr > atomic_load_explicit(&g->peak_req, RLX))
            as__atomic_max(&g->peak_req, (uint64_t)nr);
        if (nu > 0 && (uint64_t)nu > atomic_load_explicit(&g->peak_use, RLX))
            as__atomic_max(&g->peak_use, (uint64_t)nu);
        pr = pu = 0;
    }
    st(&t->pend_req, pr);
    st(&t->pend_use, pu);
}

/* Record a free of (r, u) bytes in counter t/g. */
static inline void discharge(as__tcounter *t, as__gcounter *g, int64_t r, int64_t u)
{
    int64_t pr = ld(&t->pend_req) - r, pu = ld(&t->pend_use) - u;
    if (pr < -AS__FOLD_BYTES || pu < -AS__FOLD_BYTES) {
        atomic_fetch_add_explicit(&g->g_req, pr, RLX);
        atomic_fetch_add_explicit(&g->g_use, pu, RLX);
        pr = pu = 0;
    }
    st(&t->pend_req, pr);
    st(&t->pend_use, pu);
}

/* The total counter also enforces the budget. Returns false (nothing
 * changed) when the allocation would pass it. */
static inline bool charge_total(as_arena *a, as__tblock *b, int64_t r, int64_t u,
                                uint64_t budget)
{
    as__tcounter *t = &b->total;
    as__gcounter *g = &a->gtotal;
    if (!budget) {
        charge(t, g, r, u);
        return true;
    }
    int64_t pr = ld(&t->pend_req) + r, pu = ld(&t->pend_use) + u;
    int64_t cur = atomic_load_explicit(&g->g_use, RLX);
    if (pr <= 0 && pu <= 0) {              /* covered by our own pending frees */
        if (cur + pu > (int64_t)budget)
            return false;
        st(&t->pend_req, pr);
        st(&t->pend_use, pu);
        return true;
    }
    do {
        if (cur + pu > (int64_t)budget)
            return false;
    } while (!atomic_compare_exchange_weak_explicit(&g->g_use, &cur, cur + pu, RLX, RLX));
    int64_t nu = cur + pu;
    int64_t nr = atomic_fetch_add_explicit(&g->g_req, pr, RLX) + pr;
    if (nr > 0)
        as__atomic_max(&g->peak_req, (uint64_t)nr);
    if (nu > 0)
        as__atomic_max(&g->peak_use, (uint64_t)nu);
    st(&t->pend_req, 0);
    st(&t->pend_use, 0);
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

static int budget_error(as_arena *a, size_t size, size_t usable, uint16_t tag,
                        uint16_t layer, uint64_t budget)
{
    char b1[32], b2[32], b3[32], b4[32];
    int64_t live = atomic_load(&a->gtotal.g_use);
    as__set_error(a, "budget %s exceeded: tag %s, layer %s, request %s (usable %s), live %s",
                  human(budget, b1, sizeof b1), a->tag_names[tag],
                  a->layer_names[layer], human(size, b2, sizeof b2),
                  human(usable, b3, sizeof b3),
                  human(live > 0 ? (uint64_t)live : 0, b4, sizeof b4));
    return AS_EBUDGET;
}

static int do_alloc(as_arena *a, size_t size, uint16_t tag, uint16_t layer,
                    as_block *out, int zero)
{
    if (!out)
        return AS_EINVAL;
    memset(out, 0, sizeof *out);
    if (!a)
        return AS_EINVAL;
    if (tag >= atomic_load_explicit(&a->ntags, memory_order_acquire)) {
        as__set_error(a, "unknown tag %u (%u registered)", tag, atomic_load(&a->ntags));
        return AS_EINVAL;
    }
    if (layer >= atomic_load_explicit(&a->nlayers, memory_order_acquire)) {
        as__set_error(a, "unknown layer %u (%u registered), tag %s", layer,
                      atomic_load(&a->nlayers), a->tag_names[tag]);
        return AS_EINVAL;
    }
    if (size == 0) {
        out->tag = tag;
        out->layer = layer;
        return 0;
    }
    as__tblock *b = as__tblock_get(a);
    if (!b) {
        as__set_error(a, "no per-thread state for arena %u (out of memory or "
                      "more than 64 arenas used by this thread)", a->index);
        return AS_ENOMEM;
    }
    /* Size classes that are multiples of the wanted alignment are naturally
     * aligned (slab regions sit at multiples of their size in page-aligned
     * slabs), so the alignment flag is added only for the others. */
    int flags = b->flags | zero;
    size_t align = size >= 64 ? 64 : 16;
    size_t usable = nallocx(size, flags);
    if (usable % align) {
        flags |= MALLOCX_LG_ALIGN(align == 64 ? 6 : 4);
        usable = nallocx(size, flags);
    }
    if (usable == 0) {                     /* size overflows the size classes */
        as__set_error(a, "cannot allocate %zu bytes (tag %s): too large", size,
                      a->tag_names[tag]);
        return AS_ENOMEM;
    }
    uint64_t budget = atomic_load_explicit(&a->budget, RLX);
    if (budget) {                          /* early out before mallocx */
        int64_t g = atomic_load_explicit(&a->gtotal.g_use, RLX);
        if (g + ld(&b->total.pend_use) + (int64_t)usable > (int64_t)budget)
            return budget_error(a, size, usable, tag, layer, budget);
    }
    void *p = mallocx(size, flags);
    if (!p) {
        as__set_error(a, "out of memory: %zu bytes (tag %s, layer %s) in arena %u",
                      size, a->tag_names[tag], a->layer_names[layer], a->index);
        return AS_ENOMEM;
    }
    int64_t r = (int64_t)size, u = (int64_t)usable;
    if (!charge_total(a, b, r, u, budget)) {
        sdallocx(p, usable, b->flags);
        return budget_error(a, size, usable, tag, layer, budget);
    }
    as__tcounter *tt = &b->c[tag], *tl = &b->c[AS_TAG_MAX + layer];
    charge(tt, &a->g[tag], r, u);
    charge(tl, &a->g[AS_TAG_MAX + layer], r, u);
    st(&tt->live_req, ld(&tt->live_req) + r);
    st(&tt->live_use, ld(&tt->live_use) + u);
    inc(&tt->allocs);
    st(&tl->live_req, ld(&tl->live_req) + r);
    st(&tl->live_use, ld(&tl->live_use) + u);
    inc(&tl->allocs);

    out->ptr = p;
    out->size = size;
    out->usable = usable;
    out->tag = tag;
    out->layer = layer;
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

int as_free(as_arena *a, as_block *blk)
{
    if (!blk)
        return AS_EINVAL;
    if (!blk->ptr) {
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
    if (a->checked) {
        if (!as_arena_owns(a, blk->ptr)) {
            as__set_error(a, "free of %p (tag %s, %zu bytes): not allocated by arena %u",
                          blk->ptr, a->tag_names[tag], blk->size, a->index);
            return AS_EFOREIGN;
        }
        size_t real = sallocx(blk->ptr, 0);
        if (real != blk->usable || blk->size > real) {
            as__set_error(a, "free of %p: block says %zu/%zu bytes, jemalloc says %zu",
                          blk->ptr, blk->size, blk->usable, real);
            return AS_EINVAL;
        }
    }
    as__tblock *b = as__tblock_get(a);
    if (!b) {
        as__set_error(a, "no per-thread state for arena %u", a->index);
        return AS_ENOMEM;
    }
    /* usable is a size class, so sdallocx needs no alignment flag. */
    sdallocx(blk->ptr, blk->usable, b->flags);
    int64_t r = (int64_t)blk->size, u = (int64_t)blk->usable;
    as__tcounter *tt = &b->c[tag], *tl = &b->c[AS_TAG_MAX + layer];
    discharge(&b->total, &a->gtotal, r, u);
    discharge(tt, &a->g[tag], r, u);
    discharge(tl, &a->g[AS_TAG_MAX + layer], r, u);
    st(&tt->live_req, ld(&tt->live_req) - r);
    st(&tt->live_use, ld(&tt->live_use) - u);
    inc(&tt->frees);
    st(&tl->live_req, ld(&tl->live_req) - r);
    st(&tl->live_use, ld(&tl->live_use) - u);
    inc(&tl->frees);
    memset(blk, 0, sizeof *blk);
    return 0;
}

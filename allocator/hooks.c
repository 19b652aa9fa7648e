/*
 * Extent hooks of an arena: jemalloc's default hooks (read once from
 * "arena.0.extent_hooks"), wrapped to count the bytes the arena reserves
 * from the system, releases and purges, and to remember the address ranges
 * it holds.
 *
 * The ranges make checked frees safe: "arenas.lookup" dereferences
 * jemalloc's radix tree and crashes on an address jemalloc never mapped
 * (a stack or glibc pointer), so a pointer is first checked against the
 * ranges this arena's hooks handed out, and only then looked up.
 *
 * Hooks run inside jemalloc, possibly under its locks: they only touch
 * atomics and a leaf mutex, and never allocate.
 */
#include <assert.h>
#include <string.h>

#include "allocator/internal.h"

static pthread_once_t  g_def_once = PTHREAD_ONCE_INIT;
static extent_hooks_t *g_def;             /* jemalloc's default hooks */

static void read_default_hooks(void)
{
    extent_hooks_t *h = NULL;
    size_t sz = sizeof h;
    if (mallctl("arena.0.extent_hooks", &h, &sz, NULL, 0) == 0)
        g_def = h;
}

static as_arena *arena_of(extent_hooks_t *h)
{
    return ((as__hooks *)h)->arena;
}

/* ---- address ranges (ranges_lock) ---- */

static void ranges_add(as_arena *a, uintptr_t lo, uintptr_t hi)
{
    pthread_mutex_lock(&a->ranges_lock);
    for (size_t i = 0; i < a->nranges; i++) {
        if (a->ranges[i].hi == lo) {
            a->ranges[i].hi = hi;
            goto out;
        }
        if (a->ranges[i].lo == hi) {
            a->ranges[i].lo = lo;
            goto out;
        }
    }
    if (a->nranges < AS__RANGES_MAX) {
        a->ranges[a->nranges].lo = lo;
        a->ranges[a->nranges].hi = hi;
        a->nranges++;
    } else {
        a->ranges_overflow = true;
    }
out:
    pthread_mutex_unlock(&a->ranges_lock);
}

static void ranges_remove(as_arena *a, uintptr_t lo, uintptr_t hi)
{
    pthread_mutex_lock(&a->ranges_lock);
    for (size_t i = 0; i < a->nranges; i++) {
        uintptr_t rlo = a->ranges[i].lo, rhi = a->ranges[i].hi;
        if (lo < rlo || hi > rhi)
            continue;
        if (lo == rlo && hi == rhi) {
            a->ranges[i] = a->ranges[--a->nranges];
        } else if (lo == rlo) {
            a->ranges[i].lo = hi;
        } else if (hi == rhi) {
            a->ranges[i].hi = lo;
        } else if (a->nranges < AS__RANGES_MAX) {
            a->ranges[i].hi = lo;
            a->ranges[a->nranges].lo = hi;
            a->ranges[a->nranges].hi = rhi;
            a->nranges++;
        } /* else keep the whole range: only makes the check looser */
        break;
    }
    pthread_mutex_unlock(&a->ranges_lock);
}

bool as__ranges_contain(as_arena *a, const void *p)
{
    uintptr_t x = (uintptr_t)p;
    bool in = false;
    pthread_mutex_lock(&a->ranges_lock);
    for (size_t i = 0; i < a->nranges && !in; i++)
        in = x >= a->ranges[i].lo && x < a->ranges[i].hi;
    pthread_mutex_unlock(&a->ranges_lock);
    return in;
}

/* ---- the hooks ---- */

/* Extents the OS gave the arena (mapped) or took back (unmapped). */
static void mapped(extent_hooks_t *h, void *addr, size_t size)
{
    as_arena *a = arena_of(h);
    atomic_fetch_add_explicit(&a->reserved, size, memory_order_relaxed);
    ranges_add(a, (uintptr_t)addr, (uintptr_t)addr + size);
}

static void unmapped(extent_hooks_t *h, void *addr, size_t size)
{
    as_arena *a = arena_of(h);
    atomic_fetch_add_explicit(&a->released, size, memory_order_relaxed);
    ranges_remove(a, (uintptr_t)addr, (uintptr_t)addr + size);
}

/* A purge's result (jemalloc's convention: true = failed); on success len
 * bytes went back to the OS. */
static bool purged(extent_hooks_t *h, size_t len, bool failed)
{
    if (!failed)
        atomic_fetch_add_explicit(&arena_of(h)->purged, len, memory_order_relaxed);
    return failed;
}

static void *h_alloc(extent_hooks_t *h, void *addr, size_t size, size_t align,
                     bool *zero, bool *commit, unsigned ind)
{
    void *p = g_def->alloc(g_def, addr, size, align, zero, commit, ind);
    if (p)
        mapped(h, p, size);
    return p;
}

static bool h_dalloc(extent_hooks_t *h, void *addr, size_t size,
                     bool committed, unsigned ind)
{
    bool keep = g_def->dalloc(g_def, addr, size, committed, ind);
    if (!keep)
        unmapped(h, addr, size);
    return keep;
}

static void h_destroy(extent_hooks_t *h, void *addr, size_t size,
                      bool committed, unsigned ind)
{
    g_def->destroy(g_def, addr, size, committed, ind);
    unmapped(h, addr, size);
}

static bool h_commit(extent_hooks_t *h, void *addr, size_t size, size_t off,
                     size_t len, unsigned ind)
{
    return g_def->commit(g_def, addr, size, off, len, ind);
}

static bool h_decommit(extent_hooks_t *h, void *addr, size_t size, size_t off,
                       size_t len, unsigned ind)
{
    return g_def->decommit(g_def, addr, size, off, len, ind);
}

static bool h_purge_lazy(extent_hooks_t *h, void *addr, size_t size,
                         size_t off, size_t len, unsigned ind)
{
    return purged(h, len, g_def->purge_lazy(g_def, addr, size, off, len, ind));
}

static bool h_purge_forced(extent_hooks_t *h, void *addr, size_t size,
                           size_t off, size_t len, unsigned ind)
{
    return purged(h, len, g_def->purge_forced(g_def, addr, size, off, len, ind));
}

static bool h_split(extent_hooks_t *h, void *addr, size_t size, size_t a_sz,
                    size_t b_sz, bool committed, unsigned ind)
{
    return g_def->split(g_def, addr, size, a_sz, b_sz, committed, ind);
}

static bool h_merge(extent_hooks_t *h, void *a_addr, size_t a_sz, void *b_addr,
                    size_t b_sz, bool committed, unsigned ind)
{
    return g_def->merge(g_def, a_addr, a_sz, b_addr, b_sz, committed, ind);
}

int as__hooks_init(as__hooks *h, as_arena *a)
{
    pthread_once(&g_def_once, read_default_hooks);
    if (!g_def || !g_def->alloc)
        return AS_EIO;
    memset(h, 0, sizeof *h);
    h->arena = a;
    /* A NULL default hook means "not supported": keep it NULL. */
    h->h.alloc        = h_alloc;
    h->h.dalloc       = g_def->dalloc ? h_dalloc : NULL;
    h->h.destroy      = g_def->destroy ? h_destroy : NULL;
    h->h.commit       = g_def->commit ? h_commit : NULL;
    h->h.decommit     = g_def->decommit ? h_decommit : NULL;
    h->h.purge_lazy   = g_def->purge_lazy ? h_purge_lazy : NULL;
    h->h.purge_forced = g_def->purge_forced ? h_purge_forced : NULL;
    h->h.split        = g_def->split ? h_split : NULL;
    h->h.merge        = g_def->merge ? h_merge : NULL;
    return 0;
}

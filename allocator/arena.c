/*
 * The instrumented jemalloc arena: lifetime, names, budget, peaks, errors
 * and snapshots. The allocation path is in alloc.c, the per-thread state in
 * thread.c, the extent hooks in hooks.c, the sampler and timeline in
 * sampler.c. See include/actstore/alloc.h and docs/allocator.md.
 */
#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "allocator/fault.h"
#include "allocator/internal.h"
#include "util/clock.h"
#include "util/err.h"

static const char *const fixed_tags[AS_TAG_FIXED_COUNT] = {
    "weights", "gradients", "optimizer", "activations",
    "saved", "workspace", "service", "other",
};

static _Atomic uint64_t g_next_uid = 1;

/* ---- per-thread last error ------------------------------------------- */

static _Thread_local as_last_err tls_err;

void as__set_error(const as_arena *a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    as_last_err_vset(&tls_err, a->uid, fmt, ap);
    va_end(ap);
}

const char *as_arena_last_error(const as_arena *a)
{
    return a ? as_last_err_get(&tls_err, a->uid, "no error") : "no arena";
}

/* ---- create / destroy ------------------------------------------------- */

/* Keep the pages of freed extents (MADV_FREE after the dirty decay, which
 * the kernel may reclaim) instead of jemalloc 5.3's eager purge of extents
 * of 8 MiB and more (opt.oversize_threshold), which it skips only when a
 * decay is disabled. Training allocates the same large sizes every step:
 * with eager purging each of them page-faults its block in again (bench
 * store, 64 MiB tensors: keep save 0.6 -> 3.2 GB/s, q8 0.9 -> 2.2 GB/s on
 * the reference machine). Best effort: a refusal changes nothing else. */
static void keep_freed_pages(unsigned ind)
{
    char name[64];
    snprintf(name, sizeof name, "arena.%u.muzzy_decay_ms", ind);
    ssize_t never = -1;
    (void)mallctl(name, NULL, NULL, &never, sizeof never);
}

int as_arena_create(const as_arena_config *cfg, as_arena **out)
{
    static const as_arena_config defaults = {0};
    if (!out)
        return AS_EINVAL;
    *out = NULL;
    if (!cfg)
        cfg = &defaults;
    if (cfg->sampler_hz > 10)
        return AS_EINVAL;

    as_arena *a = calloc(1, sizeof *a);
    if (!a)
        return AS_ENOMEM;
    a->uid = atomic_fetch_add(&g_next_uid, 1);
    a->checked = cfg->checked;
    a->sampler_hz = cfg->sampler_hz;
    atomic_store(&a->budget, cfg->budget_bytes);
    pthread_mutex_init(&a->names_lock, NULL);
    pthread_mutex_init(&a->ranges_lock, NULL);
    pthread_mutex_init(&a->stats_lock, NULL);
    pthread_mutex_init(&a->tl_lock, NULL);
    for (unsigned i = 0; i < AS_TAG_FIXED_COUNT; i++)
        snprintf(a->tag_names[i], AS__NAME_MAX, "%s", fixed_tags[i]);
    atomic_store(&a->ntags, AS_TAG_FIXED_COUNT);
    snprintf(a->layer_names[0], AS__NAME_MAX, "none");
    atomic_store(&a->nlayers, 1u);

    int rc = as__timeline_init(a, cfg->timeline_capacity ? cfg->timeline_capacity
                                                        : AS__DEFAULT_TIMELINE);
    if (rc == 0)
        rc = as__hooks_init(&a->hooks, a);
    as__size_table_init();
    if (rc != 0)
        goto fail;

    extent_hooks_t *hp = &a->hooks.h;
    unsigned ind;
    size_t sz = sizeof ind;
    if (mallctl("arenas.create", &ind, &sz, &hp, sizeof hp) != 0) {
        rc = AS_EIO;
        goto fail;
    }
    a->index = ind;
    a->base_flags = MALLOCX_ARENA(ind);
    keep_freed_pages(ind);
    if ((rc = as__stats_init(a)) != 0 || (rc = as__sampler_start(a)) != 0) {
        char name[64];
        snprintf(name, sizeof name, "arena.%u.destroy", ind);
        mallctl(name, NULL, NULL, NULL, 0);
        goto fail;
    }
    *out = a;
    return 0;
fail:
    as__timeline_free(a);
    free(a);
    return rc;
}

void as_arena_destroy(as_arena *a)
{
    if (!a)
        return;
    as__sampler_stop(a);
    if (as__fault_tls == a)
        as__fault_tls = NULL;
    /* Every thread's tcache goes first: cached blocks return to the arena. */
    as__arena_drop_blocks(a);
    char name[64];
    snprintf(name, sizeof name, "arena.%u.destroy", a->index);
    int rc = mallctl(name, NULL, NULL, NULL, 0);
    assert(rc == 0);
    (void)rc;
    as__timeline_free(a);
    pthread_mutex_destroy(&a->names_lock);
    pthread_mutex_destroy(&a->ranges_lock);
    pthread_mutex_destroy(&a->stats_lock);
    pthread_mutex_destroy(&a->tl_lock);
    free(a);
}

/* ---- names ------------------------------------------------------------ */

static int register_name(as_arena *a, char (*names)[AS__NAME_MAX],
                         _Atomic unsigned *count, unsigned max,
                         const char *name, uint16_t *id)
{
    if (!a || !name || !name[0] || !id)
        return AS_EINVAL;
    char key[AS__NAME_MAX];
    snprintf(key, sizeof key, "%s", name);
    pthread_mutex_lock(&a->names_lock);
    unsigned n = atomic_load(count);
    for (unsigned i = 0; i < n; i++)
        if (!strcmp(names[i], key)) {
            pthread_mutex_unlock(&a->names_lock);
            *id = (uint16_t)i;
            return 0;
        }
    if (n >= max) {
        pthread_mutex_unlock(&a->names_lock);
        as__set_error(a, "cannot register '%s': table full (%u entries)", key, max);
        return AS_ERANGE;
    }
    memcpy(names[n], key, sizeof key);
    atomic_store_explicit(count, n + 1, memory_order_release);
    pthread_mutex_unlock(&a->names_lock);
    *id = (uint16_t)n;
    return 0;
}

int as_arena_tag_register(as_arena *a, const char *name, uint16_t *id)
{
    return register_name(a, a ? a->tag_names : NULL, a ? &a->ntags : NULL,
                         AS_TAG_MAX, name, id);
}

int as_arena_layer_register(as_arena *a, const char *name, uint16_t *id)
{
    return register_name(a, a ? a->layer_names : NULL, a ? &a->nlayers : NULL,
                         AS_LAYER_MAX, name, id);
}

const char *as_arena_tag_name(const as_arena *a, uint16_t tag)
{
    if (!a || tag >= atomic_load_explicit(&a->ntags, memory_order_acquire))
        return NULL;
    return a->tag_names[tag];
}

const char *as_arena_layer_name(const as_arena *a, uint16_t layer)
{
    if (!a || layer >= atomic_load_explicit(&a->nlayers, memory_order_acquire))
        return NULL;
    return a->layer_names[layer];
}

const char *as_phase_name(int phase)
{
    switch (phase) {
    case AS_PHASE_NONE:      return "none";
    case AS_PHASE_FORWARD:   return "forward";
    case AS_PHASE_BACKWARD:  return "backward";
    case AS_PHASE_OPTIMIZER: return "optimizer";
    case AS_PHASE_EVAL:      return "eval";
    default:                 return "unknown";
    }
}

/* ---- budget and peaks ------------------------------------------------- */

void as_arena_set_budget(as_arena *a, uint64_t budget_bytes)
{
    if (a)
        atomic_store(&a->budget, budget_bytes);
}

uint64_t as_arena_budget(const as_arena *a)
{
    return a ? atomic_load(&a->budget) : 0;
}

/* G lock held: no fold moves G or a peak meanwhile. */
static void reset_peak(as__gcounter *g)
{
    int64_t u = atomic_load_explicit(&g->g_use, memory_order_relaxed) +
                atomic_load_explicit(&g->d_use, memory_order_relaxed);
    int64_t r = atomic_load_explicit(&g->g_req, memory_order_relaxed) +
                atomic_load_explicit(&g->d_req, memory_order_relaxed);
    atomic_store_explicit(&g->peak_use, u > 0 ? (uint64_t)u : 0, memory_order_relaxed);
    atomic_store_explicit(&g->peak_req, r > 0 ? (uint64_t)r : 0, memory_order_relaxed);
}

void as_arena_reset_peaks(as_arena *a)
{
    if (!a)
        return;
    /* The caller's own pending frees are folded so that, with one thread,
     * the new peaks are exactly the live values. */
    as__tblock *b = as__tblock_get(a);
    if (b)
        as__tblock_fold(b);
    bool gb = as__glock(a, b);
    reset_peak(&a->gtotal);
    for (unsigned i = 0; i < AS__NCOUNTERS; i++)
        reset_peak(&a->g[i]);
    as__gunlock(a, gb);
}

/* ---- snapshots -------------------------------------------------------- */

static void add_live(as__rcounter *o, const as__tcounter *t)
{
    o->live_req += atomic_load_explicit(&t->live_req, memory_order_relaxed);
    o->live_use += atomic_load_explicit(&t->live_use, memory_order_relaxed);
    o->allocs   += atomic_load_explicit(&t->allocs, memory_order_relaxed);
    o->frees    += atomic_load_explicit(&t->frees, memory_order_relaxed);
}

static void add_direct(as__rcounter *o, const as__gcounter *g)
{
    o->live_req += atomic_load_explicit(&g->d_req, memory_order_relaxed);
    o->live_use += atomic_load_explicit(&g->d_use, memory_order_relaxed);
    o->allocs   += atomic_load_explicit(&g->d_allocs, memory_order_relaxed);
    o->frees    += atomic_load_explicit(&g->d_frees, memory_order_relaxed);
}

void as__sum_live(as_arena *a, unsigned nt, unsigned nl, as__rcounter *out)
{
    /* Only registered tags and layers: the rest of the counters stay zero. */
    memcpy(out, a->retired, sizeof *out * nt);
    memcpy(out + nt, a->retired + AS_TAG_MAX, sizeof *out * nl);
    for (as__tblock *b = a->blocks; b; b = b->next) {
        for (unsigned i = 0; i < nt; i++)
            add_live(&out[i], &b->c[i]);
        for (unsigned i = 0; i < nl; i++)
            add_live(&out[nt + i], &b->c[AS_TAG_MAX + i]);
    }
    for (unsigned i = 0; i < nt; i++)
        add_direct(&out[i], &a->g[i]);
    for (unsigned i = 0; i < nl; i++)
        add_direct(&out[nt + i], &a->g[AS_TAG_MAX + i]);
}

static uint64_t pos(int64_t v) { return v > 0 ? (uint64_t)v : 0; }

static void fill_counter(as_counter *c, const as__rcounter *r, as__gcounter *g)
{
    c->live_requested = pos(r->live_req);
    c->live_usable = pos(r->live_use);
    c->allocs = r->allocs;
    c->frees = r->frees;
    /* Peaks are read after the live values, so peak >= live unless a reset
     * ran in between; clamp for that case. */
    c->peak_requested = atomic_load(&g->peak_req);
    c->peak_usable = atomic_load(&g->peak_use);
    if (c->peak_requested < c->live_requested)
        c->peak_requested = c->live_requested;
    if (c->peak_usable < c->live_usable)
        c->peak_usable = c->live_usable;
}

/* The snapshot's copies count against fault injection (tests). */
static void *snap_alloc(as_arena *a, size_t k, size_t n)
{
    return as__arena_fault(a) ? NULL : calloc(k, n);
}

int as_arena_snapshot_take(as_arena *a, uint64_t since_seq, as_arena_snapshot *out)
{
    if (!a || !out)
        return AS_EINVAL;
    memset(out, 0, sizeof *out);
    unsigned nt = atomic_load_explicit(&a->ntags, memory_order_acquire);
    unsigned nl = atomic_load_explicit(&a->nlayers, memory_order_acquire);
    as__rcounter *sum = snap_alloc(a, nt + nl, sizeof(as__rcounter));
    if (!sum)
        return AS_ENOMEM;
    out->layers = snap_alloc(a, nl, sizeof *out->layers);
    out->layer_names = snap_alloc(a, nl, sizeof *out->layer_names);
    if (!out->layers || !out->layer_names) {
        free(sum);
        as_arena_snapshot_free(out);
        return AS_ENOMEM;
    }

    out->t_ns = as_clock_wall_ns();
    out->arena_index = a->index;
    out->budget_bytes = atomic_load(&a->budget);
    as__reg_lock();
    as__sum_live(a, nt, nl, sum);
    as__reg_unlock();

    /* Every block has exactly one tag: the total is the sum of the tags, so
     * the copy is consistent with itself even while threads allocate. */
    as__rcounter tot = {0};
    out->ntags = nt;
    for (unsigned i = 0; i < nt; i++) {
        fill_counter(&out->tags[i], &sum[i], &a->g[i]);
        out->tag_names[i] = a->tag_names[i];
        tot.live_req += sum[i].live_req;
        tot.live_use += sum[i].live_use;
        tot.allocs += sum[i].allocs;
        tot.frees += sum[i].frees;
    }
    fill_counter(&out->total, &tot, &a->gtotal);
    out->nlayers = nl;
    for (unsigned i = 0; i < nl; i++) {
        fill_counter(&out->layers[i], &sum[nt + i], &a->g[AS_TAG_MAX + i]);
        out->layer_names[i] = a->layer_names[i];
    }
    free(sum);

    out->reserved_bytes = atomic_load(&a->reserved);
    out->released_bytes = atomic_load(&a->released);
    out->purged_bytes = atomic_load(&a->purged);
    out->resident = atomic_load(&a->resident);
    out->mapped = atomic_load(&a->mapped);
    out->retained = atomic_load(&a->retained);
    out->nthreads = as__arena_nthreads(a);

    pthread_mutex_lock(&a->tl_lock);
    out->step = atomic_load(&a->step);
    out->phase = atomic_load(&a->phase);
    uint64_t next = a->tl_next_seq;         /* samples 1 .. next-1 exist */
    uint64_t first = next > a->tl_cap ? next - a->tl_cap : 1;
    if (first <= since_seq)
        first = since_seq < next ? since_seq + 1 : next;   /* UINT64_MAX: none */
    size_t n = next > first ? (size_t)(next - first) : 0;
    if (n) {
        out->samples = snap_alloc(a, n, sizeof *out->samples);
        if (!out->samples) {
            pthread_mutex_unlock(&a->tl_lock);
            as_arena_snapshot_free(out);
            return AS_ENOMEM;
        }
        for (size_t k = 0; k < n; k++)
            out->samples[k] = a->tl[(first + k - 1) % a->tl_cap];
    }
    out->nsamples = n;
    out->last_seq = next - 1;
    pthread_mutex_unlock(&a->tl_lock);
    return 0;
}

void as_arena_snapshot_free(as_arena_snapshot *s)
{
    if (!s)
        return;
    free(s->layers);
    free(s->layer_names);
    free(s->samples);
    s->layers = NULL;
    s->layer_names = NULL;
    s->samples = NULL;
    s->nlayers = s->nsamples = 0;
}

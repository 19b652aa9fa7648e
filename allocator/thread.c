/*
 * Per-(thread, arena) state: the private jemalloc tcache, the bins of freed
 * small blocks and the thread's own counters.
 *
 * Every thread that uses an arena gets an as__tblock, created on first use
 * with "tcache.create" and reached through thread-local storage: a one-entry
 * cache (last arena used) in front of a small per-thread table. The block is
 * destroyed (bins drained, "tcache.destroy", counters retired into the
 * arena) either when the thread exits (pthread key destructor) or when the
 * arena is destroyed, whichever comes first. Both paths run under one
 * registry lock, so they cannot both free the same block.
 *
 * Arena uids are never reused, so a stale thread-local entry of a destroyed
 * arena can never match a live arena and is never dereferenced. The slot's
 * uid is atomic because the arena's destroyer clears it while the owner may
 * be scanning its table for another arena.
 */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "allocator/internal.h"
#include "util/list.h"

#define AS__TSLOTS 64

typedef struct as__tslot {
    _Atomic uint64_t uid;                 /* 0 = free */
    as__tblock      *blk;
} as__tslot;

struct as__thread {
    as__tslot slots[AS__TSLOTS];
};

static pthread_mutex_t  g_reg_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t   g_key_once = PTHREAD_ONCE_INIT;
static pthread_key_t    g_key;
static _Thread_local as__thread *tls_thread;
_Thread_local uint64_t as__tls_uid __attribute__((tls_model("initial-exec")));
_Thread_local as__tblock *as__tls_blk __attribute__((tls_model("initial-exec")));
#define tls_last_uid as__tls_uid
#define tls_last_blk as__tls_blk

void as__reg_lock(void)   { pthread_mutex_lock(&g_reg_lock); }
void as__reg_unlock(void) { pthread_mutex_unlock(&g_reg_lock); }

/* Retire a block: fold, move its counts into the arena, drop its tcache,
 * unlink and free it. Caller holds g_reg_lock. */
static void retire_block(as__tblock *b)
{
    as_arena *a = b->arena;
    as__tblock_fold(b);
    as__glock_unbias(a, b);
    for (unsigned i = 0; i < AS__NCOUNTERS; i++) {
        as__tcounter *t = &b->c[i];
        as__rcounter *r = &a->retired[i];
        r->live_req += atomic_load_explicit(&t->live_req, memory_order_relaxed);
        r->live_use += atomic_load_explicit(&t->live_use, memory_order_relaxed);
        r->allocs   += atomic_load_explicit(&t->allocs, memory_order_relaxed);
        r->frees    += atomic_load_explicit(&t->frees, memory_order_relaxed);
    }
    as__bins_drain(b);
    if (b->tcache != UINT32_MAX) {
        unsigned tc = b->tcache;
        mallctl("tcache.destroy", NULL, NULL, &tc, sizeof tc);
    }
    AS_LIST_REMOVE(&a->blocks, b);
    assert(a->nthreads > 0);
    a->nthreads--;
    atomic_store(&b->owner->slots[b->slot].uid, 0);
    b->owner->slots[b->slot].blk = NULL;
    free(b);
}

/* pthread key destructor: the thread exits. */
static void thread_exit(void *p)
{
    as__thread *t = p;
    pthread_mutex_lock(&g_reg_lock);
    for (unsigned i = 0; i < AS__TSLOTS; i++)
        if (atomic_load(&t->slots[i].uid) != 0)
            retire_block(t->slots[i].blk);
    pthread_mutex_unlock(&g_reg_lock);
    free(t);
    tls_thread = NULL;
    tls_last_uid = 0;
    tls_last_blk = NULL;
}

static void make_key(void)
{
    int rc = pthread_key_create(&g_key, thread_exit);
    assert(rc == 0);
    (void)rc;
}

as__tblock *as__tblock_get(as_arena *a)
{
    if (tls_last_uid == a->uid)
        return tls_last_blk;
    as__thread *t = tls_thread;
    if (t) {
        for (unsigned i = 0; i < AS__TSLOTS; i++)
            if (atomic_load_explicit(&t->slots[i].uid, memory_order_relaxed) == a->uid) {
                tls_last_uid = a->uid;
                tls_last_blk = t->slots[i].blk;
                return tls_last_blk;
            }
    } else {
        pthread_once(&g_key_once, make_key);
        t = calloc(1, sizeof *t);
        if (!t)
            return NULL;
        if (pthread_setspecific(g_key, t) != 0) {
            free(t);
            return NULL;
        }
        tls_thread = t;
    }

    /* First use of a by this thread. */
    as__tblock *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    unsigned tc;
    size_t sz = sizeof tc;
    static _Atomic uint32_t next_id = 1;
    b->arena = a;
    b->owner = t;
    do
        b->id = atomic_fetch_add_explicit(&next_id, 1, memory_order_relaxed);
    while (b->id == 0);
    if (mallctl("tcache.create", &tc, &sz, NULL, 0) == 0) {
        b->tcache = tc;
        b->flags = a->base_flags | MALLOCX_TCACHE(tc);
    } else {
        b->tcache = UINT32_MAX;            /* still correct, just slower */
        b->flags = a->base_flags | MALLOCX_TCACHE_NONE;
    }
    as__bins_init(b, !a->checked);

    pthread_mutex_lock(&g_reg_lock);
    unsigned slot = AS__TSLOTS;
    for (unsigned i = 0; i < AS__TSLOTS; i++)
        if (atomic_load(&t->slots[i].uid) == 0) {
            slot = i;
            break;
        }
    if (slot == AS__TSLOTS) {
        pthread_mutex_unlock(&g_reg_lock);
        if (b->tcache != UINT32_MAX)
            mallctl("tcache.destroy", NULL, NULL, &b->tcache, sizeof b->tcache);
        free(b);
        return NULL;
    }
    b->slot = slot;
    AS_LIST_PUSH(&a->blocks, b);
    if (a->nthreads++ == 0)
        as__glock_bias(a, b);              /* the only block: its thread alone writes G */
    t->slots[slot].blk = b;
    atomic_store(&t->slots[slot].uid, a->uid);
    pthread_mutex_unlock(&g_reg_lock);

    tls_last_uid = a->uid;
    tls_last_blk = b;
    return b;
}

void as__arena_drop_blocks(as_arena *a)
{
    pthread_mutex_lock(&g_reg_lock);
    while (a->blocks)
        retire_block(a->blocks);
    pthread_mutex_unlock(&g_reg_lock);
    if (tls_last_uid == a->uid) {
        tls_last_uid = 0;
        tls_last_blk = NULL;
    }
}

unsigned as__arena_nthreads(as_arena *a)
{
    pthread_mutex_lock(&g_reg_lock);
    unsigned n = a->nthreads;
    pthread_mutex_unlock(&g_reg_lock);
    return n;
}

void as_arena_flush_thread_cache(as_arena *a)
{
    if (!a)
        return;
    as__tblock *b = as__tblock_get(a);
    if (b)
        as__bins_drain(b);
    if (b && b->tcache != UINT32_MAX) {
        unsigned tc = b->tcache;
        mallctl("tcache.flush", NULL, NULL, &tc, sizeof tc);
    }
}

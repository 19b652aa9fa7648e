/*
 * The timeline of an arena and its sampler thread.
 *
 * The timeline is a fixed-capacity ring of as_sample (plain malloc, not the
 * arena): sample seq s lives in slot (s - 1) % cap, so the newest cap
 * samples are kept and older ones are overwritten. Ticks come from the
 * sampler thread (off by default, 1..10 Hz); step and phase marks are
 * appended by the caller's thread when it sets them, in call order.
 *
 * A tick refreshes jemalloc's "epoch" (global, ~15 us, never on the
 * allocation path) and reads this arena's resident / mapped / retained
 * bytes through MIBs resolved once at creation.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "allocator/internal.h"
#include "util/clock.h"

int as__timeline_init(as_arena *a, size_t cap)
{
    a->tl = calloc(cap, sizeof *a->tl);
    if (!a->tl)
        return AS_ENOMEM;
    a->tl_cap = cap;
    a->tl_next_seq = 1;
    return 0;
}

void as__timeline_free(as_arena *a)
{
    free(a->tl);
    a->tl = NULL;
}

/* ---- jemalloc statistics ---------------------------------------------- */

int as__stats_init(as_arena *a)
{
    size_t n = 1;
    if (mallctlnametomib("epoch", a->mib_epoch, &n) != 0)
        return AS_EIO;
    static const char *const names[3] = {
        "stats.arenas.0.resident", "stats.arenas.0.mapped", "stats.arenas.0.retained",
    };
    size_t *mibs[3] = {a->mib_resident, a->mib_mapped, a->mib_retained};
    for (int i = 0; i < 3; i++) {
        n = 4;
        if (mallctlnametomib(names[i], mibs[i], &n) != 0 || n != 4)
            return AS_EIO;
        mibs[i][2] = a->index;
    }
    a->mib_len = 4;
    return 0;
}

int as_arena_refresh_stats(as_arena *a)
{
    if (!a)
        return AS_EINVAL;
    uint64_t one = 1, v[3];
    size_t *mibs[3] = {a->mib_resident, a->mib_mapped, a->mib_retained};
    pthread_mutex_lock(&a->stats_lock);
    int rc = mallctlbymib(a->mib_epoch, 1, NULL, NULL, &one, sizeof one);
    for (int i = 0; i < 3 && rc == 0; i++) {
        size_t val = 0, sz = sizeof val;
        rc = mallctlbymib(mibs[i], a->mib_len, &val, &sz, NULL, 0);
        v[i] = val;
    }
    if (rc == 0) {
        atomic_store(&a->resident, v[0]);
        atomic_store(&a->mapped, v[1]);
        atomic_store(&a->retained, v[2]);
    }
    pthread_mutex_unlock(&a->stats_lock);
    if (rc != 0) {
        as__set_error(a, "jemalloc statistics of arena %u unreadable (mallctl %d)",
                      a->index, rc);
        return AS_EIO;
    }
    return 0;
}

/* ---- samples ---------------------------------------------------------- */

/* Live and peak totals plus the live bytes of the fixed tags, now. */
static void fill_counters(as_arena *a, as_sample *s)
{
    int64_t tag[AS_TAG_MAX] = {0};
    as__reg_lock();
    for (unsigned i = 0; i < AS_TAG_MAX; i++)
        tag[i] = a->retired[i].live_use;
    for (as__tblock *b = a->blocks; b; b = b->next)
        for (unsigned i = 0; i < AS_TAG_MAX; i++)
            tag[i] += atomic_load_explicit(&b->c[i].live_use, memory_order_relaxed);
    as__reg_unlock();
    uint64_t live = 0;
    for (unsigned i = 0; i < AS_TAG_MAX; i++) {
        uint64_t v = tag[i] > 0 ? (uint64_t)tag[i] : 0;
        live += v;
        if (i < AS_TAG_FIXED_COUNT)
            s->tag_live[i] = v;
    }
    s->live_usable = live;
    s->peak_usable = atomic_load(&a->gtotal.peak_use);
    if (s->peak_usable < live)
        s->peak_usable = live;
}

/* Append s (seq, step, phase assigned here) under tl_lock. */
static void append(as_arena *a, as_sample *s)
{
    pthread_mutex_lock(&a->tl_lock);
    s->seq = a->tl_next_seq++;
    s->step = atomic_load(&a->step);
    s->phase = (uint8_t)atomic_load(&a->phase);
    a->tl[(s->seq - 1) % a->tl_cap] = *s;
    pthread_mutex_unlock(&a->tl_lock);
}

static void mark(as_arena *a, int type)
{
    as_sample s;
    memset(&s, 0, sizeof s);
    s.t_ns = as_clock_wall_ns();
    s.type = (uint8_t)type;
    fill_counters(a, &s);
    append(a, &s);
}

void as_arena_mark_step(as_arena *a, uint64_t step)
{
    if (!a)
        return;
    atomic_store(&a->step, step);
    mark(a, AS_SAMPLE_STEP);
}

void as_arena_mark_phase(as_arena *a, int phase)
{
    if (!a)
        return;
    atomic_store(&a->phase, phase);
    mark(a, AS_SAMPLE_PHASE);
}

void as_arena_set_sample_hook(as_arena *a, as_sample_fn fn, void *ud)
{
    if (!a)
        return;
    pthread_mutex_lock(&a->tl_lock);
    a->hook_fn = fn;
    a->hook_ud = ud;
    pthread_mutex_unlock(&a->tl_lock);
}

int as_arena_sample_now(as_arena *a)
{
    if (!a)
        return AS_EINVAL;
    as_sample s;
    memset(&s, 0, sizeof s);
    int rc = as_arena_refresh_stats(a);
    s.t_ns = as_clock_wall_ns();
    s.type = AS_SAMPLE_TICK;
    s.resident = atomic_load(&a->resident);
    s.mapped = atomic_load(&a->mapped);
    s.retained = atomic_load(&a->retained);
    fill_counters(a, &s);
    pthread_mutex_lock(&a->tl_lock);
    as_sample_fn fn = a->hook_fn;
    void *ud = a->hook_ud;
    pthread_mutex_unlock(&a->tl_lock);
    if (fn)
        fn(ud, s.extra);
    append(a, &s);
    return rc;
}

/* ---- the sampler thread ----------------------------------------------- */

static void *sampler_main(void *p)
{
    as_arena *a = p;
    uint64_t period = 1000000000u / a->sampler_hz;
    uint64_t next = as_clock_wall_ns() + period;
    pthread_mutex_lock(&a->tl_lock);
    while (!a->sampler_stop) {
        struct timespec ts = {(time_t)(next / 1000000000u), (long)(next % 1000000000u)};
        int rc = pthread_cond_timedwait(&a->sampler_cv, &a->tl_lock, &ts);
        if (a->sampler_stop)
            break;
        if (rc != ETIMEDOUT)
            continue;
        pthread_mutex_unlock(&a->tl_lock);
        as_arena_sample_now(a);
        next += period;
        uint64_t now = as_clock_wall_ns();
        if (next < now)                    /* fell behind: do not burst */
            next = now + period;
        pthread_mutex_lock(&a->tl_lock);
    }
    pthread_mutex_unlock(&a->tl_lock);
    return NULL;
}

int as__sampler_start(as_arena *a)
{
    if (!a->sampler_hz)
        return 0;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(&a->sampler_cv, &ca);
    pthread_condattr_destroy(&ca);
    if (rc != 0)
        return AS_ENOMEM;
    a->sampler_stop = false;
    if (pthread_create(&a->sampler, NULL, sampler_main, a) != 0) {
        pthread_cond_destroy(&a->sampler_cv);
        return AS_ENOMEM;
    }
    a->sampler_running = true;
    return 0;
}

void as__sampler_stop(as_arena *a)
{
    if (!a->sampler_running)
        return;
    pthread_mutex_lock(&a->tl_lock);
    a->sampler_stop = true;
    pthread_cond_signal(&a->sampler_cv);
    pthread_mutex_unlock(&a->tl_lock);
    pthread_join(a->sampler, NULL);
    pthread_cond_destroy(&a->sampler_cv);
    a->sampler_running = false;
}

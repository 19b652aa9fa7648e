/* The instrumented arena: exact counters, jemalloc agreement, threads,
 * budget. Timeline, checked frees and thread caches: test_alloc_misc.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <pthread.h>
#include <sched.h>

#include "actstore/alloc.h"
#include "allocator/internal.h"
#include "support/held_thread.h"
#include "support/arena.h"
#include "support/xfree_queue.h"
#include "support/test_main.h"
#include "util/rng.h"

extern void *__libc_malloc(size_t);
extern void __libc_free(void *);


/* Log-uniform size in [1, max]. */
static size_t rand_size(uint64_t *s, unsigned max_log2)
{
    unsigned lg = (unsigned)(as_rng_next(s) % (max_log2 + 1));
    size_t lo = (size_t)1 << lg;
    size_t span = lg ? lo : 1;
    size_t v = lo + as_rng_next(s) % span;
    size_t max = (size_t)1 << max_log2;
    return v > max ? max : v;
}

/* Scale iteration counts down under sanitizers or when asked. */
static unsigned long scaled(unsigned long n)
{
    const char *e = getenv("AS_TEST_SCALE");   /* divisor */
    unsigned long d = e ? strtoul(e, NULL, 10) : 1;
#if defined(__SANITIZE_ADDRESS__)
    d *= 4;
#endif
    return d > 1 ? n / d : n;
}

static uint64_t je_u64(const char *fmt, unsigned ind)
{
    char name[128];
    snprintf(name, sizeof name, fmt, ind);
    size_t v = 0, sz = sizeof v;
    assert_int_equal(mallctl(name, &v, &sz, NULL, 0), 0);
    return v;
}

static void je_epoch(void)
{
    uint64_t one = 1;
    assert_int_equal(mallctl("epoch", NULL, NULL, &one, sizeof one), 0);
}

/* ---- exactness on one thread ----------------------------------------- */

#define NCNT ((int)AS_TAG_MAX + 8)
typedef struct model {
    uint64_t live_req[NCNT], live_use[NCNT], peak_req[NCNT], peak_use[NCNT];
    uint64_t allocs[NCNT], frees[NCNT];
} model;
/* counter index: tag t -> t, layer l -> AS_TAG_MAX + l, total -> NCNT-1 */
#define TOTAL (NCNT - 1)

static void model_add(model *m, int c, int64_t r, int64_t u, int sign)
{
    m->live_req[c] += (uint64_t)(sign * r);
    m->live_use[c] += (uint64_t)(sign * u);
    if (sign > 0) {
        m->allocs[c]++;
        if (m->live_req[c] > m->peak_req[c]) m->peak_req[c] = m->live_req[c];
        if (m->live_use[c] > m->peak_use[c]) m->peak_use[c] = m->live_use[c];
    } else {
        m->frees[c]++;
    }
}

static void model_block(model *m, const as_block *b, int sign)
{
    model_add(m, b->tag, (int64_t)b->size, (int64_t)b->usable, sign);
    model_add(m, AS_TAG_MAX + b->layer, (int64_t)b->size, (int64_t)b->usable, sign);
    model_add(m, TOTAL, (int64_t)b->size, (int64_t)b->usable, sign);
}

static void check_counter(const as_counter *c, const model *m, int i, bool peaks)
{
    assert_int_equal(c->live_requested, m->live_req[i]);
    assert_int_equal(c->live_usable, m->live_use[i]);
    assert_int_equal(c->allocs, m->allocs[i]);
    assert_int_equal(c->frees, m->frees[i]);
    if (peaks) {
        assert_int_equal(c->peak_requested, m->peak_req[i]);
        assert_int_equal(c->peak_usable, m->peak_use[i]);
    }
}

static void check_model(as_arena *a, const model *m, unsigned nlayers, bool peaks)
{
    as_arena_snapshot s;
    assert_int_equal(as_arena_snapshot_take(a, 0, &s), 0);
    check_counter(&s.total, m, TOTAL, peaks);
    for (unsigned t = 0; t < s.ntags; t++)
        check_counter(&s.tags[t], m, (int)t, peaks);
    assert_int_equal(s.nlayers, nlayers);
    for (unsigned l = 0; l < nlayers; l++)
        check_counter(&s.layers[l], m, AS_TAG_MAX + (int)l, peaks);
    as_arena_snapshot_free(&s);
}

static void reset_model_peaks(model *m)
{
    for (int i = 0; i < NCNT; i++) {
        m->peak_req[i] = m->live_req[i];
        m->peak_use[i] = m->live_use[i];
    }
}

/* checked: every free verified, no bins (the general paths); unchecked:
 * the fast paths and the per-thread bins. */
static void random_sequence(bool checked)
{
    as_arena *a = arena_new(&(as_arena_config){.checked = checked});
    uint16_t t1, t2, l[5];
    assert_int_equal(as_arena_tag_register(a, "kv-cache", &t1), 0);
    assert_int_equal(as_arena_tag_register(a, "scratch", &t2), 0);
    assert_int_equal(t1, AS_TAG_FIXED_COUNT);
    char name[32];
    for (int i = 0; i < 5; i++) {
        snprintf(name, sizeof name, "blocks.%d.attn", i);
        l[i] = arena_layer(a, name);
        assert_int_equal(l[i], i + 1);
    }
    uint16_t again;
    assert_int_equal(as_arena_tag_register(a, "kv-cache", &again), 0);
    assert_int_equal(again, t1);
    const unsigned ntags = AS_TAG_FIXED_COUNT + 2, nlayers = 6;

    static model m;
    memset(&m, 0, sizeof m);
    enum { NLIVE = 192 };
    static as_block live[NLIVE];
    memset(live, 0, sizeof live);
    uint64_t seed = 0x9e3779b97f4a7c15ull, live_bytes = 0;
    const unsigned long ops = scaled(20000);
    for (unsigned long op = 0; op < ops; op++) {
        unsigned k = (unsigned)(as_rng_next(&seed) % NLIVE);
        as_block *b = &live[k];
        if (b->ptr) {
            model_block(&m, b, -1);
            live_bytes -= b->usable;
            assert_int_equal(as_free(a, b), 0);
            assert_null(b->ptr);
        } else {
            size_t sz = rand_size(&seed, 26);         /* 1 B .. 64 MiB */
            if (live_bytes + sz > ((uint64_t)768 << 20))
                continue;                             /* keep the test small */
            uint16_t tag = (uint16_t)(as_rng_next(&seed) % ntags);
            uint16_t lay = (uint16_t)(as_rng_next(&seed) % nlayers);
            int rc = (sz < 4096 && (op & 1)) ? as_calloc(a, sz, tag, lay, b)
                                             : as_alloc(a, sz, tag, lay, b);
            assert_int_equal(rc, 0);
            assert_non_null(b->ptr);
            assert_int_equal(b->usable, sallocx(b->ptr, 0));
            assert_true(b->usable >= sz);
            assert_int_equal((uintptr_t)b->ptr % (sz >= 64 ? 64 : 16), 0);
            if (sz < 4096 && (op & 1)) {              /* calloc: zero, also from a bin */
                const unsigned char *z = b->ptr;
                for (size_t i = 0; i < sz; i++)
                    assert_int_equal(z[i], 0);
            }
            ((volatile char *)b->ptr)[0] = 1;
            ((volatile char *)b->ptr)[sz - 1] = 2;
            model_block(&m, b, +1);
            live_bytes += b->usable;
        }
        if (op % 2000 == 1999)
            check_model(a, &m, nlayers, true);
        if (op == ops / 2) {
            as_arena_reset_peaks(a);
            reset_model_peaks(&m);
            check_model(a, &m, nlayers, true);
        }
    }
    check_model(a, &m, nlayers, true);

    /* live == sum of sallocx over the live blocks, per tag and in total */
    uint64_t by_tag[AS_TAG_MAX] = {0}, total = 0;
    for (unsigned k = 0; k < NLIVE; k++)
        if (live[k].ptr) {
            size_t u = sallocx(live[k].ptr, 0);
            by_tag[live[k].tag] += u;
            total += u;
        }
    as_arena_snapshot s;
    assert_int_equal(as_arena_snapshot_take(a, 0, &s), 0);
    assert_int_equal(s.total.live_usable, total);
    for (unsigned t = 0; t < ntags; t++)
        assert_int_equal(s.tags[t].live_usable, by_tag[t]);
    assert_string_equal(s.tag_names[t1], "kv-cache");
    assert_string_equal(s.layer_names[0], "none");
    assert_string_equal(s.layer_names[3], "blocks.2.attn");
    assert_true(s.reserved_bytes > 0);
    as_arena_snapshot_free(&s);

    for (unsigned k = 0; k < NLIVE; k++) {
        if (live[k].ptr)
            model_block(&m, &live[k], -1);
        assert_int_equal(as_free(a, &live[k]), 0);
    }
    check_model(a, &m, nlayers, true);
    as_arena_destroy(a);
}

static void test_random_sequence_is_exact(void **state)
{
    (void)state;
    random_sequence(true);
}

static void test_random_sequence_fast_paths_exact(void **state)
{
    (void)state;
    random_sequence(false);
}

/* ---- jemalloc's own statistics agree -------------------------------- */

static void test_jemalloc_stats_agree(void **state)
{
    (void)state;
    as_arena *a = arena_new(NULL);
    enum { N = 300 };
    static as_block b[N];
    uint64_t seed = 42;
    for (int i = 0; i < N; i++)
        assert_int_equal(as_alloc(a, rand_size(&seed, i % 10 ? 16 : 24),
                                  (uint16_t)(i % AS_TAG_FIXED_COUNT), 0, &b[i]), 0);
    for (int i = 0; i < N; i += 3)
        assert_int_equal(as_free(a, &b[i]), 0);
    unsigned ind;
    as_arena_snapshot s;
    assert_int_equal(as_arena_snapshot_take(a, 0, &s), 0);
    ind = s.arena_index;
    uint64_t ours = s.total.live_usable;
    as_arena_snapshot_free(&s);

    /* Freed blocks sit in our private tcache: jemalloc counts them as
     * allocated until the cache is flushed. */
    je_epoch();
    uint64_t before = je_u64("stats.arenas.%u.small.allocated", ind) +
                      je_u64("stats.arenas.%u.large.allocated", ind);
    assert_true(before > ours);
    as_arena_flush_thread_cache(a);
    je_epoch();
    uint64_t je = je_u64("stats.arenas.%u.small.allocated", ind) +
                  je_u64("stats.arenas.%u.large.allocated", ind);
    assert_int_equal(je, ours);

    /* The extent hooks saw what jemalloc mapped, and purges. */
    assert_int_equal(as_arena_refresh_stats(a), 0);
    assert_int_equal(as_arena_snapshot_take(a, 0, &s), 0);
    assert_true(s.mapped > 0 && s.resident > 0);
    assert_true(s.reserved_bytes >= s.mapped);
    uint64_t purged0 = s.purged_bytes;
    as_arena_snapshot_free(&s);
    for (int i = 0; i < N; i++)
        assert_int_equal(as_free(a, &b[i]), 0);
    as_arena_flush_thread_cache(a);
    char name[64];
    snprintf(name, sizeof name, "arena.%u.purge", ind);
    assert_int_equal(mallctl(name, NULL, NULL, NULL, 0), 0);
    assert_int_equal(as_arena_snapshot_take(a, 0, &s), 0);
    assert_true(s.purged_bytes > purged0);
    assert_int_equal(s.total.live_usable, 0);
    as_arena_snapshot_free(&s);
    as_arena_destroy(a);
}

/* ---- four threads ---------------------------------------------------- */

typedef struct worker {
    as_arena *a;
    uint64_t  seed;
    unsigned long ops;
    model     m;            /* this thread's own contribution */
    as_block  live[64];
} worker;

static void *worker_main(void *p)
{
    worker *w = p;
    for (unsigned long op = 0; op < w->ops; op++) {
        uint64_t r = as_rng_next(&w->seed);
        as_block *b = &w->live[r % 64];
        if (b->ptr) {
            model_block(&w->m, b, -1);
            if (as_free(w->a, b) != 0)
                abort();
        } else {
            size_t sz = (r >> 8) % 16 == 0 ? rand_size(&w->seed, 20)
                                            : rand_size(&w->seed, 10);
            uint16_t tag = (uint16_t)((r >> 16) % AS_TAG_FIXED_COUNT);
            uint16_t lay = (uint16_t)((r >> 24) % 4);
            int rc = (r >> 32) & 1 ? as_alloc(w->a, sz, tag, lay, b)
                                   : as_calloc(w->a, sz, tag, lay, b);
            if (rc != 0)
                abort();
            model_block(&w->m, b, +1);
        }
    }
    return NULL;       /* the live blocks are freed by the main thread */
}

static void test_four_threads_exact_totals(void **state)
{
    (void)state;
    as_arena *a = arena_new(NULL);
    for (int i = 1; i < 4; i++) {   /* layers 1..3 for the workers */
        char n[16];
        snprintf(n, sizeof n, "layer%d", i);
        arena_layer(a, n);
    }
    static worker w[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        memset(&w[i], 0, sizeof w[i]);
        w[i].a = a;
        w[i].seed = 0x1234567ull * (uint64_t)(i + 1);
        w[i].ops = scaled(1000000);
        assert_int_equal(pthread_create(&th[i], NULL, worker_main, &w[i]), 0);
    }
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);

    static model sum;
    memset(&sum, 0, sizeof sum);
    for (int i = 0; i < 4; i++)
        for (int c = 0; c < NCNT; c++) {
            sum.live_req[c] += w[i].m.live_req[c];
            sum.live_use[c] += w[i].m.live_use[c];
            sum.allocs[c] += w[i].m.allocs[c];
            sum.frees[c] += w[i].m.frees[c];
        }
    as_arena_snapshot s;
    assert_int_equal(as_arena_snapshot_take(a, 0, &s), 0);
    assert_int_equal(s.nthreads, 0);            /* exited threads released */
    check_counter(&s.total, &sum, TOTAL, false);
    for (unsigned t = 0; t < AS_TAG_FIXED_COUNT; t++)
        check_counter(&s.tags[t], &sum, (int)t, false);
    for (unsigned l = 0; l < 4; l++)
        check_counter(&s.layers[l], &sum, AS_TAG_MAX + (int)l, false);
    assert_true(s.total.allocs > 4 * scaled(1000000) / 3);
    assert_true(s.total.peak_usable >= s.total.live_usable);
    as_arena_snapshot_free(&s);

    /* Cross-thread frees: the main thread frees what the workers left. */
    for (int i = 0; i < 4; i++)
        for (int k = 0; k < 64; k++) {
            if (w[i].live[k].ptr)
                model_block(&sum, &w[i].live[k], -1);
            assert_int_equal(as_free(a, &w[i].live[k]), 0);
        }
    assert_int_equal(as_arena_snapshot_take(a, 0, &s), 0);
    check_counter(&s.total, &sum, TOTAL, false);
    assert_int_equal(s.total.live_usable, 0);
    assert_int_equal(s.total.live_requested, 0);
    for (unsigned t = 0; t < AS_TAG_FIXED_COUNT; t++)
        assert_int_equal(s.tags[t].live_usable, 0);
    as_arena_snapshot_free(&s);
    as_arena_destroy(a);
}

/* ---- budget ---------------------------------------------------------- */

static void test_budget_failure_changes_nothing(void **state)
{
    (void)state;
    as_arena *a = arena_new(&(as_arena_config){.budget_bytes = 1u << 20});
    uint16_t conv = arena_layer(a, "conv1");
    as_block b1, b2;
    assert_int_equal(as_alloc(a, 512 << 10, AS_TAG_SAVED, conv, &b1), 0);

    as_arena_snapshot s0, s1;
    assert_int_equal(as_arena_snapshot_take(a, 0, &s0), 0);
    memset(&b2, 0xab, sizeof b2);
    assert_int_equal(as_alloc(a, 600 << 10, AS_TAG_SAVED, conv, &b2), AS_EBUDGET);
    assert_null(b2.ptr);
    assert_int_equal(b2.size, 0);
    const char *e = as_arena_last_error(a);
    assert_non_null(strstr(e, "budget 1.0 MiB"));
    assert_non_null(strstr(e, "tag saved"));
    assert_non_null(strstr(e, "layer conv1"));
    assert_non_null(strstr(e, "request 600.0 KiB"));
    assert_non_null(strstr(e, "live 512.0 KiB"));
    assert_int_equal(as_arena_snapshot_take(a, 0, &s1), 0);
    assert_memory_equal(&s0.total, &s1.total, sizeof s0.total);
    assert_memory_equal(s0.tags, s1.tags, sizeof s0.tags);
    assert_memory_equal(s0.layers, s1.layers, s0.nlayers * sizeof *s0.layers);
    as_arena_snapshot_free(&s0);
    as_arena_snapshot_free(&s1);

    /* Within the budget it works; a lowered budget blocks the next one,
     * also when the thread's own pending frees would cover it. */
    assert_int_equal(as_alloc(a, 256 << 10, AS_TAG_SAVED, conv, &b2), 0);
    assert_int_equal(as_free(a, &b2), 0);
    as_arena_set_budget(a, 100 << 10);
    assert_int_equal(as_arena_budget(a), 100 << 10);
    assert_int_equal(as_alloc(a, 256 << 10, AS_TAG_SAVED, conv, &b2), AS_EBUDGET);
    as_arena_set_budget(a, 0);
    assert_int_equal(as_alloc(a, 8 << 20, AS_TAG_SAVED, conv, &b2), 0);
    assert_int_equal(as_free(a, &b2), 0);
    assert_int_equal(as_free(a, &b1), 0);
    as_arena_destroy(a);
}

typedef struct bworker { as_arena *a; as_block b[64]; int ok; } bworker;

static void *budget_worker(void *p)
{
    bworker *w = p;
    for (int round = 0; round < 50; round++) {
        for (int i = 0; i < 64; i++)
            if (!w->b[i].ptr && as_alloc(w->a, 1 << 20, AS_TAG_OTHER, 0, &w->b[i]) == 0)
                w->ok++;
        for (int i = round % 2; i < 64; i += 2)
            as_free(w->a, &w->b[i]);
    }
    return NULL;
}

static void test_budget_holds_under_threads(void **state)
{
    (void)state;
    as_arena *a = arena_new(&(as_arena_config){.budget_bytes = 40u << 20});
    static bworker w[4];
    pthread_t th[4];
    memset(w, 0, sizeof w);
    for (int i = 0; i < 4; i++) {
        w[i].a = a;
        assert_int_equal(pthread_create(&th[i], NULL, budget_worker, &w[i]), 0);
    }
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    as_arena_snapshot s;
    assert_int_equal(as_arena_snapshot_take(a, 0, &s), 0);
    assert_true(s.total.peak_usable <= 40u << 20);
    assert_true(s.total.live_usable <= 40u << 20);
    assert_true(s.total.allocs > 40);
    as_arena_snapshot_free(&s);
    for (int i = 0; i < 4; i++)
        for (int k = 0; k < 64; k++)
            assert_int_equal(as_free(a, &w[i].b[k]), 0);
    as_arena_destroy(a);
}

/* What an autograd engine does: blocks allocated on one thread, freed on a
 * long-lived worker. With at most 256 KiB live, a 2 MiB budget never fails
 * and the peak stays at what was truly live. */
static void test_cross_thread_frees_exact(void **state)
{
    (void)state;
    as_arena *a = arena_new(&(as_arena_config){.budget_bytes = 2u << 20});
    static xq q;
    pthread_t th;
    xq_start(&q, a, &th);
    size_t usable = 0;
    for (int i = 0; i < 400; i++) {
        xq_wait_room(&q);                  /* at most 4 x 64 KiB live */
        as_block b;
        int rc = as_alloc(a, 64 << 10, AS_TAG_SAVED, 0, &b);
        if (rc)
            fprintf(stderr, "alloc %d: %s\n", i, as_arena_last_error(a));
        assert_int_equal(rc, 0);
        usable = b.usable;
        xq_push(&q, &b);
    }
    xq_finish(&q, th);
    as_arena_snapshot s;
    assert_int_equal(as_arena_snapshot_take(a, 0, &s), 0);
    assert_int_equal(s.total.live_usable, 0);
    assert_int_equal(s.tags[AS_TAG_SAVED].live_usable, 0);
    assert_true(s.total.peak_usable <= 4 * usable);
    assert_true(s.tags[AS_TAG_SAVED].peak_usable <= 4 * usable);
    assert_int_equal(s.total.allocs, 400);
    assert_int_equal(s.total.frees, 400);
    as_arena_snapshot_free(&s);
    /* the freeing thread exited: its counters retired, nothing drifts */
    as_arena_reset_peaks(a);
    as_block b;
    assert_int_equal(as_alloc(a, 64 << 10, AS_TAG_SAVED, 0, &b), 0);
    assert_int_equal(as_arena_snapshot_take(a, 0, &s), 0);
    assert_int_equal(s.total.peak_usable, usable);
    as_arena_snapshot_free(&s);
    assert_int_equal(as_free(a, &b), 0);
    as_arena_destroy(a);
}

/* Another thread's own frees not yet folded (it allocated and freed, then
 * went quiet) must neither fail an allocation that fits nor show up as
 * "live" in the budget message. */

static void *quiet_worker(void *p)
{
    held_thread *h = p;
    as_block b;
    assert_int_equal(as_alloc(h->a, 768 << 10, AS_TAG_WORKSPACE, 0, &b), 0);
    assert_int_equal(as_free(h->a, &b), 0);
    held_wait(h);                          /* freed, still alive */
    return NULL;
}

static void test_budget_counts_true_live(void **state)
{
    (void)state;
    as_arena *a = arena_new(&(as_arena_config){.budget_bytes = 1u << 20});
    held_thread h;
    held_start(&h, a, quiet_worker);
    as_block b1, b2;
    int rc = as_alloc(a, 512 << 10, AS_TAG_SAVED, 0, &b1);
    if (rc)
        fprintf(stderr, "%s\n", as_arena_last_error(a));
    assert_int_equal(rc, 0);               /* 512 KiB live of 1 MiB */
    assert_int_equal(as_alloc(a, 600 << 10, AS_TAG_SAVED, 0, &b2), AS_EBUDGET);
    const char *e = as_arena_last_error(a);
    if (!strstr(e, "live 512.0 KiB"))
        fprintf(stderr, "%s\n", e);
    assert_non_null(strstr(e, "live 512.0 KiB"));
    assert_int_equal(as_free(a, &b1), 0);
    held_release(&h);
    as_arena_destroy(a);
}

AS_TEST_MAIN(NULL, NULL,
             cmocka_unit_test(test_random_sequence_is_exact),
             cmocka_unit_test(test_random_sequence_fast_paths_exact),
             cmocka_unit_test(test_jemalloc_stats_agree),
             cmocka_unit_test(test_four_threads_exact_totals),
             cmocka_unit_test(test_budget_failure_changes_nothing),
             cmocka_unit_test(test_budget_holds_under_threads),
             cmocka_unit_test(test_cross_thread_frees_exact),
             cmocka_unit_test(test_budget_counts_true_live))

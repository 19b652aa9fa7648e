/* The instrumented arena: timeline and sampler, checked frees and bad
 * input, private thread caches released at thread exit and at destroy. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <pthread.h>

#include "actstore/alloc.h"
#include "allocator/internal.h"
#include "support/held_thread.h"
#include "support/arena.h"
#include "support/test_main.h"

extern void *__libc_malloc(size_t);
extern void __libc_free(void *);

static uint64_t je_allocated(unsigned ind)
{
    uint64_t one = 1;
    assert_int_equal(mallctl("epoch", NULL, NULL, &one, sizeof one), 0);
    char name[96];
    size_t v = 0, w = 0, sz = sizeof v;
    snprintf(name, sizeof name, "stats.arenas.%u.small.allocated", ind);
    assert_int_equal(mallctl(name, &v, &sz, NULL, 0), 0);
    snprintf(name, sizeof name, "stats.arenas.%u.large.allocated", ind);
    assert_int_equal(mallctl(name, &w, &sz, NULL, 0), 0);
    return v + w;
}

/* ---- timeline -------------------------------------------------------- */

static void extra_hook(void *ud, uint64_t extra[AS_SAMPLE_EXTRA])
{
    uint64_t *n = ud;
    extra[0] = ++*n;
    extra[AS_SAMPLE_EXTRA - 1] = 77;
}

static void test_timeline_wraps_and_keeps_marks_in_order(void **state)
{
    (void)state;
    as_arena *a = arena_new(&(as_arena_config){.timeline_capacity = 8});
    uint64_t hook_calls = 0;
    as_arena_set_sample_hook(a, extra_hook, &hook_calls);
    as_block b;
    assert_int_equal(as_alloc(a, 1 << 20, AS_TAG_ACTIVATIONS, 0, &b), 0);

    /* 20 entries: step, phases and ticks interleaved */
    uint8_t want_type[21];
    uint64_t want_step[21];
    uint8_t want_phase[21];
    uint64_t step = 0;
    int phase = 0;
    for (int i = 1; i <= 20; i++) {
        switch (i % 4) {
        case 1: as_arena_mark_step(a, ++step); want_type[i] = AS_SAMPLE_STEP; break;
        case 2: as_arena_mark_phase(a, phase = AS_PHASE_FORWARD); want_type[i] = AS_SAMPLE_PHASE; break;
        case 3: as_arena_mark_phase(a, phase = AS_PHASE_BACKWARD); want_type[i] = AS_SAMPLE_PHASE; break;
        default: assert_int_equal(as_arena_sample_now(a), 0); want_type[i] = AS_SAMPLE_TICK; break;
        }
        want_step[i] = step;
        want_phase[i] = (uint8_t)phase;
    }
    as_arena_snapshot s;
    assert_int_equal(as_arena_snapshot_take(a, 0, &s), 0);
    assert_int_equal(s.nsamples, 8);               /* oldest overwritten */
    assert_int_equal(s.last_seq, 20);
    assert_int_equal(s.step, 5);
    assert_int_equal(s.phase, AS_PHASE_BACKWARD);
    for (size_t k = 0; k < s.nsamples; k++) {
        const as_sample *x = &s.samples[k];
        uint64_t seq = 13 + k;
        assert_int_equal(x->seq, seq);
        assert_int_equal(x->type, want_type[seq]);
        assert_int_equal(x->step, want_step[seq]);
        assert_int_equal(x->phase, want_phase[seq]);
        if (k)
            assert_true(x->t_ns >= s.samples[k - 1].t_ns);
        assert_int_equal(x->live_usable, b.usable);
        assert_int_equal(x->tag_live[AS_TAG_ACTIVATIONS], b.usable);
        if (x->type == AS_SAMPLE_TICK) {
            assert_true(x->resident > 0 && x->mapped > 0);
            assert_int_equal(x->extra[AS_SAMPLE_EXTRA - 1], 77);
        } else {
            assert_int_equal(x->resident, 0);
            assert_int_equal(x->extra[0], 0);
        }
    }
    assert_int_equal(hook_calls, 5);
    assert_string_equal(as_phase_name(AS_PHASE_BACKWARD), "backward");
    as_arena_snapshot_free(&s);

    /* increments */
    assert_int_equal(as_arena_snapshot_take(a, 17, &s), 0);
    assert_int_equal(s.nsamples, 3);
    assert_int_equal(s.samples[0].seq, 18);
    as_arena_snapshot_free(&s);
    assert_int_equal(as_arena_snapshot_take(a, 20, &s), 0);
    assert_int_equal(s.nsamples, 0);
    assert_null(s.samples);
    as_arena_snapshot_free(&s);
    /* past the newest, and UINT64_MAX ("counters only"; since + 1 wraps) */
    assert_int_equal(as_arena_snapshot_take(a, 25, &s), 0);
    assert_int_equal(s.nsamples, 0);
    as_arena_snapshot_free(&s);
    assert_int_equal(as_arena_snapshot_take(a, UINT64_MAX, &s), 0);
    assert_int_equal(s.nsamples, 0);
    assert_null(s.samples);
    assert_int_equal(s.last_seq, 20);
    assert_int_equal(s.total.live_usable, b.usable);
    as_arena_snapshot_free(&s);
    assert_int_equal(as_free(a, &b), 0);
    as_arena_destroy(a);
}

static void test_sampler_thread_ticks(void **state)
{
    (void)state;
    as_arena_config bad = {.sampler_hz = 11};
    as_arena *a = (as_arena *)1;
    assert_int_equal(as_arena_create(&bad, &a), AS_EINVAL);
    assert_null(a);

    as_arena_config cfg = {.sampler_hz = 10};
    assert_int_equal(as_arena_create(&cfg, &a), 0);
    as_block b;
    assert_int_equal(as_alloc(a, 3 << 20, AS_TAG_WEIGHTS, 0, &b), 0);
    as_arena_mark_phase(a, AS_PHASE_FORWARD);
    struct timespec ts = {0, 350 * 1000 * 1000};
    nanosleep(&ts, NULL);
    as_arena_snapshot s;
    assert_int_equal(as_arena_snapshot_take(a, 0, &s), 0);
    size_t ticks = 0;
    for (size_t k = 0; k < s.nsamples; k++)
        if (s.samples[k].type == AS_SAMPLE_TICK) {
            ticks++;
            assert_true(s.samples[k].mapped >= b.usable);
            assert_int_equal(s.samples[k].phase, AS_PHASE_FORWARD);
        }
    assert_true(ticks >= 2 && ticks <= 5);
    assert_true(s.resident > 0);
    as_arena_snapshot_free(&s);
    assert_int_equal(as_free(a, &b), 0);
    as_arena_destroy(a);                            /* joins the sampler */
}

/* ---- checked mode and bad input -------------------------------------- */

static void test_checked_mode_rejects_foreign_pointers(void **state)
{
    (void)state;
    as_arena_config cfg = {.checked = true};
    as_arena *a, *other;
    assert_int_equal(as_arena_create(&cfg, &a), 0);
    assert_int_equal(as_arena_create(NULL, &other), 0);
    as_block mine, theirs, forged;
    assert_int_equal(as_alloc(a, 100, AS_TAG_OTHER, 0, &mine), 0);
    assert_int_equal(as_alloc(other, 100, AS_TAG_OTHER, 0, &theirs), 0);
    assert_true(as_arena_owns(a, mine.ptr));
    assert_false(as_arena_owns(a, theirs.ptr));

    as_arena_snapshot s0, s1;
    assert_int_equal(as_arena_snapshot_take(a, 0, &s0), 0);
    as_block copy = theirs;
    assert_int_equal(as_free(a, &copy), AS_EFOREIGN);
    assert_non_null(strstr(as_arena_last_error(a), "not allocated by arena"));
    assert_ptr_equal(copy.ptr, theirs.ptr);         /* nothing freed */

    int on_stack = 0;
    void *glibc = __libc_malloc(64), *plain = malloc(64);
    void *ptrs[] = {&on_stack, glibc, plain, (void *)(uintptr_t)0x1000};
    for (size_t i = 0; i < sizeof ptrs / sizeof ptrs[0]; i++) {
        forged = mine;
        forged.ptr = ptrs[i];
        assert_int_equal(as_free(a, &forged), AS_EFOREIGN);
    }
    __libc_free(glibc);
    free(plain);
    /* our pointer with a made-up size */
    forged = mine;
    forged.usable = 4096;
    assert_int_equal(as_free(a, &forged), AS_EINVAL);
    assert_int_equal(as_arena_snapshot_take(a, 0, &s1), 0);
    assert_memory_equal(&s0.total, &s1.total, sizeof s0.total);
    as_arena_snapshot_free(&s0);
    as_arena_snapshot_free(&s1);

    /* the real frees still work */
    assert_int_equal(as_free(other, &theirs), 0);
    assert_int_equal(as_free(a, &mine), 0);
    assert_null(mine.ptr);

    /* NULL and empty blocks, unknown ids */
    as_block empty = {0};
    assert_int_equal(as_free(a, &empty), 0);
    assert_int_equal(as_free(a, NULL), AS_EINVAL);
    assert_int_equal(as_alloc(a, 0, AS_TAG_OTHER, 0, &empty), 0);
    assert_null(empty.ptr);
    assert_int_equal(as_free(a, &empty), 0);
    as_block b;
    assert_int_equal(as_alloc(a, 10, AS_TAG_FIXED_COUNT, 0, &b), AS_EINVAL);
    assert_non_null(strstr(as_arena_last_error(a), "unknown tag"));
    assert_int_equal(as_alloc(a, 10, AS_TAG_OTHER, 5, &b), AS_EINVAL);
    assert_non_null(strstr(as_arena_last_error(a), "unknown layer"));
    assert_int_equal(as_alloc(a, (size_t)1 << 62, AS_TAG_OTHER, 0, &b), AS_ENOMEM);
    assert_null(b.ptr);
    uint16_t id;
    assert_int_equal(as_arena_tag_register(a, "", &id), AS_EINVAL);
    for (unsigned i = AS_TAG_FIXED_COUNT; i < AS_TAG_MAX; i++) {
        char n[16];
        snprintf(n, sizeof n, "t%u", i);
        assert_int_equal(as_arena_tag_register(a, n, &id), 0);
    }
    assert_int_equal(as_arena_tag_register(a, "one-too-many", &id), AS_ERANGE);
    assert_null(as_arena_tag_name(a, AS_TAG_MAX));
    assert_string_equal(as_arena_tag_name(a, AS_TAG_SAVED), "saved");
    as_arena_destroy(other);
    as_arena_destroy(a);
    as_arena_destroy(NULL);
}

/* ---- thread caches --------------------------------------------------- */

static void *tc_main(void *p)
{
    held_thread *h = p;
    as_block b[64];
    for (int i = 0; i < 64; i++)
        if (as_alloc(h->a, 48, AS_TAG_WORKSPACE, 0, &b[i]) != 0)
            abort();
    for (int i = 0; i < 64; i++)
        as_free(h->a, &b[i]);          /* stays in the thread's tcache */
    held_wait(h);                      /* main checks the cache, may destroy the arena */
    return NULL;
}

static void test_thread_exit_releases_tcache(void **state)
{
    (void)state;
    as_arena *a = arena_new(NULL);
    as_arena_snapshot s;
    assert_int_equal(as_arena_snapshot_take(a, 0, &s), 0);
    unsigned ind = s.arena_index;
    as_arena_snapshot_free(&s);

    held_thread h;
    held_start(&h, a, tc_main);
    assert_int_equal(as__arena_nthreads(a), 1);
    assert_true(je_allocated(ind) > 0);            /* cached in its tcache */
    held_release(&h);
    assert_int_equal(as__arena_nthreads(a), 0);
    assert_int_equal(je_allocated(ind), 0);        /* destroyed -> flushed */
    assert_int_equal(as_arena_snapshot_take(a, 0, &s), 0);
    assert_int_equal(s.total.allocs, 64);
    assert_int_equal(s.total.frees, 64);
    assert_int_equal(s.total.live_usable, 0);
    as_arena_snapshot_free(&s);
    as_arena_destroy(a);
}

static void test_destroy_before_thread_exit(void **state)
{
    (void)state;
    as_arena *a, *keep;
    assert_int_equal(as_arena_create(NULL, &a), 0);
    assert_int_equal(as_arena_create(NULL, &keep), 0);
    held_thread h;
    held_start(&h, a, tc_main);
    /* The worker still runs: destroying the arena destroys its tcache;
     * its exit must then leave the freed state alone (ASan checks). */
    as_arena_destroy(a);
    held_release(&h);
    /* A new arena gets a fresh uid: this thread's stale entries of older
     * arenas never match it. */
    as_block b;
    assert_int_equal(as_alloc(keep, 4096, AS_TAG_OTHER, 0, &b), 0);
    assert_int_equal(as__arena_nthreads(keep), 1);
    assert_int_equal(as_free(keep, &b), 0);
    as_arena_destroy(keep);
}

static void test_many_arenas_one_thread(void **state)
{
    (void)state;
    enum { N = 6 };
    as_arena *a[N];
    as_block b[N];
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < N; i++) {
            assert_int_equal(as_arena_create(NULL, &a[i]), 0);
            assert_int_equal(as_alloc(a[i], (size_t)(i + 1) * 1000, AS_TAG_OTHER, 0, &b[i]), 0);
        }
        /* Ownership is asked while every arena is alive: a[(i + 1) % N]
         * wraps to an arena the loop below has already destroyed. */
        for (int i = 0; i < N; i++) {
            assert_true(as_arena_owns(a[i], b[i].ptr));
            assert_false(as_arena_owns(a[(i + 1) % N], b[i].ptr));
        }
        for (int i = 0; i < N; i++) {
            as_arena_snapshot s;
            assert_int_equal(as_arena_snapshot_take(a[i], 0, &s), 0);
            assert_int_equal(s.total.live_requested, (uint64_t)(i + 1) * 1000);
            assert_int_equal(s.nthreads, 1);
            as_arena_snapshot_free(&s);
            assert_int_equal(as_free(a[i], &b[i]), 0);
            as_arena_destroy(a[i]);
        }
    }
}

AS_TEST_MAIN(NULL, NULL,
             cmocka_unit_test(test_timeline_wraps_and_keeps_marks_in_order),
             cmocka_unit_test(test_sampler_thread_ticks),
             cmocka_unit_test(test_checked_mode_rejects_foreign_pointers),
             cmocka_unit_test(test_thread_exit_releases_tcache),
             cmocka_unit_test(test_destroy_before_thread_exit),
             cmocka_unit_test(test_many_arenas_one_thread))

/* The allocator's per-thread bins of freed small blocks, the usable sizes
 * computed without jemalloc, and the counters on the fast paths: exact live
 * bytes and peaks per tag when frees in one tag meet growth in another,
 * blocks freed on another thread, bins drained when threads exit. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <pthread.h>

#include "actstore/alloc.h"
#include "allocator/internal.h"
#include "util/rng.h"
#include "support/arena.h"
#include "support/test_main.h"

static uint64_t je_allocated(unsigned ind)
{
    uint64_t one = 1;
    assert_int_equal(mallctl("epoch", NULL, NULL, &one, sizeof one), 0);
    uint64_t sum = 0;
    const char *fmt[2] = {"stats.arenas.%u.small.allocated", "stats.arenas.%u.large.allocated"};
    for (int k = 0; k < 2; k++) {
        char name[96];
        snprintf(name, sizeof name, fmt[k], ind);
        size_t v = 0, sz = sizeof v;
        assert_int_equal(mallctl(name, &v, &sz, NULL, 0), 0);
        sum += v;
    }
    return sum;
}

/* The table and the four-per-doubling rule give what nallocx gives. */
static void test_usable_sizes_match_jemalloc(void **state)
{
    (void)state;
    as__size_table_init();
    for (size_t size = 1; size <= AS__TAB_MAX; size++) {
        int fl;
        size_t want = as__size_slow(size, &fl);
        uint32_t e = as__size_tab[(size + 7) >> 3];
        assert_int_equal(e & 0xffff, want);
        assert_int_equal((e & AS__TAB_ALIGN) != 0, fl != 0);
    }
    assert_true(as__large_rule);
    uint64_t seed = 7;
    for (size_t p = AS__TAB_MAX; p < AS__LARGE_RULE_MAX; p <<= 1) {
        size_t probe[6] = {p + 1, p + p / 4, p + p / 4 + 1, p + p / 2 - 1,
                           2 * p - 1, p + 1 + as_rng_next(&seed) % p};
        for (int k = 0; k < 6; k++)
            assert_int_equal(as__usable_large(probe[k]), nallocx(probe[k], 0));
    }
}

/* Freed blocks come back from the bin: zeroed for as_calloc, aligned for a
 * request of another size of the same class, and counted exactly. */
static void test_bins_reuse_zero_and_align(void **state)
{
    (void)state;
    as_arena *a = arena_new(NULL);
    enum { N = 16 };
    as_block b[N];
    void *old[N];
    for (int i = 0; i < N; i++) {
        assert_int_equal(as_alloc(a, 96, AS_TAG_WORKSPACE, 0, &b[i]), 0);
        assert_int_equal(b[i].usable, 128);           /* 64-aligned class */
        memset(b[i].ptr, 0xaa, b[i].usable);
        old[i] = b[i].ptr;
    }
    for (int i = 0; i < N; i++)
        assert_int_equal(as_free(a, &b[i]), 0);
    int reused = 0;
    for (int i = 0; i < N; i++) {
        assert_int_equal(as_calloc(a, 100 + (size_t)i, AS_TAG_SAVED, 0, &b[i]), 0);
        assert_int_equal((uintptr_t)b[i].ptr % 64, 0);
        const unsigned char *z = b[i].ptr;
        for (size_t k = 0; k < b[i].usable; k++)
            assert_int_equal(z[k], 0);
        for (int j = 0; j < N; j++)
            reused += b[i].ptr == old[j];
    }
    assert_int_equal(reused, N);                      /* all from the bin */
    as_arena_snapshot s = arena_snap(a);
    assert_int_equal(s.tags[AS_TAG_SAVED].live_usable, N * 128);
    assert_int_equal(s.tags[AS_TAG_WORKSPACE].live_usable, 0);
    assert_int_equal(s.tags[AS_TAG_WORKSPACE].frees, N);
    assert_int_equal(s.total.allocs, 2 * N);
    as_arena_snapshot_free(&s);
    for (int i = 0; i < N; i++)
        assert_int_equal(as_free(a, &b[i]), 0);
    as_arena_destroy(a);
}

/* Frees in one tag then growth in another, all on the fast paths: the
 * thread's pending frees offset the growth, so the total's peak is exactly
 * the most that was live at once, while each tag's peak is its own. */
static void test_peaks_exact_across_tags(void **state)
{
    (void)state;
    as_arena *a = arena_new(NULL);
    uint16_t l1 = arena_layer(a, "l1"), l2 = arena_layer(a, "l2");
    enum { N = 24 };
    as_block x[N], y[N];
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < N; i++)
            assert_int_equal(as_alloc(a, 64, AS_TAG_ACTIVATIONS, l1, &x[i]), 0);
        for (int i = 0; i < N; i++)
            assert_int_equal(as_free(a, &x[i]), 0);
        for (int i = 0; i < N; i++)
            assert_int_equal(as_alloc(a, 64, AS_TAG_SAVED, l2, &y[i]), 0);
        as_arena_snapshot s = arena_snap(a);
        assert_int_equal(s.total.live_usable, N * 64);
        assert_int_equal(s.total.peak_usable, N * 64);
        assert_int_equal(s.total.peak_requested, N * 64);
        assert_int_equal(s.tags[AS_TAG_ACTIVATIONS].peak_usable, N * 64);
        assert_int_equal(s.tags[AS_TAG_SAVED].peak_usable, N * 64);
        assert_int_equal(s.layers[l1].peak_usable, N * 64);
        assert_int_equal(s.layers[l1].live_usable, 0);
        as_arena_snapshot_free(&s);
        for (int i = 0; i < N; i++)
            assert_int_equal(as_free(a, &y[i]), 0);
        as_arena_reset_peaks(a);
        s = arena_snap(a);
        assert_int_equal(s.total.peak_usable, 0);
        as_arena_snapshot_free(&s);
    }
    as_arena_destroy(a);
}

/* A worker frees blocks the main thread allocated (into the worker's
 * bins), allocates from them in another tag, and exits: counts exact, and
 * once every cache is returned jemalloc holds nothing for the arena. */
typedef struct xw {
    as_arena *a;
    as_block *blocks;
    int       n;
} xw;

static void *xw_main(void *p)
{
    xw *w = p;
    for (int i = 0; i < w->n; i++)
        if (as_free(w->a, &w->blocks[i]) != 0)
            abort();
    as_block own[40];
    for (int round = 0; round < 5; round++) {
        for (int i = 0; i < 40; i++)
            if (as_alloc(w->a, 57 + (size_t)(i % 8), AS_TAG_OTHER, 0, &own[i]) != 0)
                abort();
        for (int i = 0; i < 40; i++)
            if (as_free(w->a, &own[i]) != 0)
                abort();
    }
    return NULL;
}

static void test_cross_thread_frees_into_bins(void **state)
{
    (void)state;
    as_arena *a = arena_new(NULL);
    enum { N = 200 };
    static as_block blocks[N];
    for (int i = 0; i < N; i++)
        assert_int_equal(as_alloc(a, 64, AS_TAG_SAVED, 0, &blocks[i]), 0);
    as_arena_snapshot s = arena_snap(a);
    unsigned ind = s.arena_index;
    assert_int_equal(s.total.live_usable, N * 64);
    as_arena_snapshot_free(&s);

    xw w = {a, blocks, N};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, xw_main, &w), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    s = arena_snap(a);
    assert_int_equal(s.total.live_usable, 0);
    assert_int_equal(s.total.live_requested, 0);
    assert_int_equal(s.tags[AS_TAG_SAVED].frees, N);
    assert_int_equal(s.tags[AS_TAG_OTHER].allocs, 200);
    assert_int_equal(s.tags[AS_TAG_OTHER].frees, 200);
    assert_int_equal(s.tags[AS_TAG_OTHER].peak_usable, 40 * 64);
    assert_true(s.total.peak_usable <= N * 64);
    assert_int_equal(s.nthreads, 1);                  /* the worker's state is gone */
    as_arena_snapshot_free(&s);
    as_arena_flush_thread_cache(a);
    assert_int_equal(je_allocated(ind), 0);
    as_arena_destroy(a);
}

AS_TEST_MAIN(NULL, NULL,
             cmocka_unit_test(test_usable_sizes_match_jemalloc),
             cmocka_unit_test(test_bins_reuse_zero_and_align),
             cmocka_unit_test(test_peaks_exact_across_tags),
             cmocka_unit_test(test_cross_thread_frees_into_bins))

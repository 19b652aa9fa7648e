/* Direct blocks (usable above the fold bound, counted in the arena's
 * global counters alone) and the biased G lock: exact peaks when a thread
 * has frees pending, frees on another thread, the budget's two looks, and
 * the bias given to the first thread and revoked by the second. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <pthread.h>
#include <sched.h>

#include "actstore/alloc.h"
#include "allocator/internal.h"
#include "support/arena.h"
#include "support/held_thread.h"
#include "support/xfree_queue.h"
#include "support/test_main.h"

#define MIB ((size_t)1 << 20)

static void expect_peak(as_arena *a, uint16_t tag, uint16_t layer, uint64_t req, uint64_t use)
{
    as_arena_snapshot s = arena_snap(a);
    const as_counter *c[3] = {&s.total, &s.tags[tag], &s.layers[layer]};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(c[i]->peak_requested, req);
        assert_int_equal(c[i]->peak_usable, use);
    }
    as_arena_snapshot_free(&s);
}

/* One thread with frees pending (a 2 MiB block freed, not folded): a
 * direct block must neither count them (peak 8 MiB, not 10) nor lose the
 * room they leave (a 2 MiB block then taken from them: peak 10 MiB). */
static void test_direct_peaks_exact_with_pending_frees(void **state)
{
    (void)state;
    for (int absorb = 0; absorb < 2; absorb++) {
        as_arena *a = arena_new(NULL);
        uint16_t l = arena_layer(a, "conv");
        as_block small, big;
        assert_int_equal(as_alloc(a, 2 * MIB, AS_TAG_ACTIVATIONS, l, &small), 0);
        assert_int_equal(as_free(a, &small), 0);         /* pending: 2 MiB */
        assert_int_equal(as_alloc(a, 8 * MIB + 5, AS_TAG_ACTIVATIONS, l, &big), 0);
        assert_true(AS__DIRECT(big.usable));
        uint64_t req = big.size, use = big.usable;
        if (absorb) {                                     /* no fold: from the pending */
            assert_int_equal(as_alloc(a, 2 * MIB, AS_TAG_ACTIVATIONS, l, &small), 0);
            req += small.size;
            use += small.usable;
            assert_int_equal(as_free(a, &small), 0);
        }
        assert_int_equal(as_free(a, &big), 0);
        expect_peak(a, AS_TAG_ACTIVATIONS, l, req, use);   /* live is 0: no clamp */
        as_arena_snapshot s = arena_snap(a);
        assert_int_equal(s.total.live_usable, 0);
        assert_int_equal(s.tags[AS_TAG_ACTIVATIONS].allocs, 2u + (unsigned)absorb);
        assert_int_equal(s.layers[l].frees, 2u + (unsigned)absorb);
        as_arena_snapshot_free(&s);
        as_arena_destroy(a);
    }
}

/* A direct block that raises no peak leaves the thread's pending frees
 * pending (its charged values stand above the live ones, below the peaks);
 * the first direct block that would raise a peak folds them first, so the
 * total's, the tag's and the layer's peaks are the live values. */
static void test_direct_peaks_lazy(void **state)
{
    (void)state;
    as_arena *a = arena_new(NULL);
    uint16_t l1 = arena_layer(a, "conv"), l2 = arena_layer(a, "attn");
    as_block big, small, mid, other;
    assert_int_equal(as_alloc(a, 16 * MIB, AS_TAG_ACTIVATIONS, l1, &big), 0);
    assert_int_equal(as_free(a, &big), 0);               /* peaks: 16 MiB */
    assert_int_equal(as_alloc(a, 2 * MIB, AS_TAG_ACTIVATIONS, l1, &small), 0);
    assert_int_equal(as_free(a, &small), 0);             /* pending: 2 MiB */
    as__tblock *b = as__tblock_get(a);
    assert_non_null(b);
    assert_int_equal(as_alloc(a, 8 * MIB, AS_TAG_ACTIVATIONS, l1, &mid), 0);
    assert_true(AS__DIRECT(mid.usable));
    /* charged 10 MiB <= peak 16 MiB: nothing folded, nothing raised */
    assert_int_equal(atomic_load(&b->c[AS_TAG_ACTIVATIONS].live_use) -
                         atomic_load(&b->c[AS_TAG_ACTIVATIONS].fold_use),
                     -(int64_t)(2 * MIB));
    expect_peak(a, AS_TAG_ACTIVATIONS, l1, 16 * MIB, 16 * MIB);
    as_arena_snapshot s = arena_snap(a);
    assert_int_equal(s.total.live_usable, 8 * MIB);
    assert_int_equal(s.layers[l1].live_usable, 8 * MIB);
    as_arena_snapshot_free(&s);
    /* 12 MiB more in another tag and layer: charged 2 + 8 + 12 > 16, so the
     * 2 MiB fold first and the total's peak is the live 20 MiB, not 22 */
    assert_int_equal(as_alloc(a, 12 * MIB, AS_TAG_WORKSPACE, l2, &other), 0);
    assert_int_equal(atomic_load(&b->c[AS_TAG_ACTIVATIONS].live_use),
                     atomic_load(&b->c[AS_TAG_ACTIVATIONS].fold_use));
    s = arena_snap(a);
    assert_int_equal(s.total.peak_usable, 20 * MIB);
    assert_int_equal(s.total.peak_requested, 20 * MIB);
    assert_int_equal(s.total.live_usable, 20 * MIB);
    assert_int_equal(s.tags[AS_TAG_WORKSPACE].peak_usable, 12 * MIB);
    assert_int_equal(s.layers[l2].peak_usable, 12 * MIB);
    assert_int_equal(s.tags[AS_TAG_ACTIVATIONS].peak_usable, 16 * MIB);
    as_arena_snapshot_free(&s);
    assert_int_equal(as_free(a, &other), 0);
    assert_int_equal(as_free(a, &mid), 0);
    /* after a reset the same pattern raises the peaks at once: exact */
    as_arena_reset_peaks(a);
    assert_int_equal(as_alloc(a, 2 * MIB, AS_TAG_ACTIVATIONS, l1, &small), 0);
    assert_int_equal(as_free(a, &small), 0);             /* pending again */
    assert_int_equal(as_alloc(a, 8 * MIB, AS_TAG_ACTIVATIONS, l1, &mid), 0);
    assert_int_equal(as_free(a, &mid), 0);
    expect_peak(a, AS_TAG_ACTIVATIONS, l1, 8 * MIB, 8 * MIB);
    s = arena_snap(a);
    assert_int_equal(s.total.live_usable, 0);
    assert_int_equal(s.total.live_requested, 0);
    as_arena_snapshot_free(&s);
    as_arena_destroy(a);
}

/* Direct blocks allocated on one thread and freed on a worker (an autograd
 * engine's pattern): at most 4 in flight, a budget of 5 never fails, the
 * peak is at most the 4 in flight, and everything ends at zero. */
static void test_direct_cross_thread_frees(void **state)
{
    (void)state;
    as_arena *a = arena_new(&(as_arena_config){.budget_bytes = 5 * 8 * MIB});
    static xq q;
    pthread_t th;
    xq_start(&q, a, &th);
    for (int i = 0; i < 200; i++) {
        xq_wait_room(&q);
        as_block b;
        /* alternate the general path (budget) and the fast path */
        as_arena_set_budget(a, i & 1 ? 0 : 5 * 8 * MIB);
        int rc = as_alloc(a, 8 * MIB, AS_TAG_SAVED, 0, &b);
        if (rc)
            fprintf(stderr, "alloc %d: %s\n", i, as_arena_last_error(a));
        assert_int_equal(rc, 0);
        xq_push(&q, &b);
    }
    xq_finish(&q, th);
    as_arena_snapshot s = arena_snap(a);
    assert_int_equal(s.total.live_usable, 0);
    assert_int_equal(s.total.live_requested, 0);
    assert_true(s.total.peak_usable <= 4 * 8 * MIB);
    assert_true(s.tags[AS_TAG_SAVED].peak_usable <= 4 * 8 * MIB);
    assert_int_equal(s.tags[AS_TAG_SAVED].allocs, 200);
    assert_int_equal(s.tags[AS_TAG_SAVED].frees, 200);
    assert_int_equal(s.layers[0].frees, 200);
    as_arena_snapshot_free(&s);
    as_arena_destroy(a);
}

/* Another thread's unfolded frees (3 MiB, within the bound) stand in the
 * charged total: an 8 MiB direct block under a 9 MiB budget must still fit
 * (the recount), with the peak at the true 8 MiB; 2 MiB more must not, and
 * the message shows the true live bytes. */
static void *pending_worker(void *p)
{
    held_thread *h = p;
    as_block b;
    assert_int_equal(as_alloc(h->a, 3 * MIB, AS_TAG_WORKSPACE, 0, &b), 0);
    assert_int_equal(as_free(h->a, &b), 0);
    held_wait(h);
    return NULL;
}

static void test_direct_budget_recount(void **state)
{
    (void)state;
    as_arena *a = arena_new(&(as_arena_config){.budget_bytes = 9 * MIB});
    held_thread h;
    held_start(&h, a, pending_worker);
    as_block big, more;
    int rc = as_alloc(a, 8 * MIB, AS_TAG_SAVED, 0, &big);
    if (rc)
        fprintf(stderr, "%s\n", as_arena_last_error(a));
    assert_int_equal(rc, 0);
    as_arena_snapshot s = arena_snap(a);
    assert_int_equal(s.total.peak_usable, 8 * MIB);
    assert_int_equal(s.tags[AS_TAG_SAVED].live_usable, 8 * MIB);
    as_arena_snapshot_free(&s);
    assert_int_equal(as_alloc(a, 2 * MIB, AS_TAG_SAVED, 0, &more), AS_EBUDGET);
    const char *e = as_arena_last_error(a);
    if (!strstr(e, "live 8.0 MiB"))
        fprintf(stderr, "%s\n", e);
    assert_non_null(strstr(e, "live 8.0 MiB"));
    /* a direct block that does not fit either */
    assert_int_equal(as_alloc(a, 5 * MIB, AS_TAG_SAVED, 0, &more), AS_EBUDGET);
    assert_null(more.ptr);
    assert_int_equal(as_free(a, &big), 0);
    held_release(&h);
    s = arena_snap(a);
    assert_int_equal(s.total.live_usable, 0);
    assert_int_equal(s.total.allocs, 2);                /* the worker's and big */
    as_arena_snapshot_free(&s);
    as_arena_destroy(a);
}

/* The bias: the first thread of an arena writes G without a locked
 * instruction; a second writer revokes it for good. Two threads then churn
 * direct and small blocks at once; the counters end exact. */
typedef struct churn {
    as_arena *a;
    uint16_t  tag;
    unsigned  n;
    uint64_t  allocs;
} churn;

static void *churn_main(void *p)
{
    churn *c = p;
    as_block big, small;
    for (unsigned i = 0; i < c->n; i++) {
        if (as_alloc(c->a, (5 + i % 4) * MIB, c->tag, 0, &big) != 0 ||
            as_alloc(c->a, 1000 + i % 3000, c->tag, 0, &small) != 0)
            abort();
        if (as_free(c->a, &big) != 0 || as_free(c->a, &small) != 0)
            abort();
        c->allocs += 2;
    }
    return NULL;
}

static void test_bias_given_and_revoked(void **state)
{
    (void)state;
    as_arena *a = arena_new(NULL);
    as_block b;
    assert_int_equal(as_alloc(a, 8 * MIB, AS_TAG_WEIGHTS, 0, &b), 0);
    uint32_t bias = atomic_load(&a->bias);
    /* biased to this thread's block unless membarrier is unavailable */
    assert_true(bias == 0 || bias == b.shard);
    assert_int_equal(as_free(a, &b), 0);

    churn c[2] = {{a, AS_TAG_ACTIVATIONS, 2000, 0}, {a, AS_TAG_GRADIENTS, 2000, 0}};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, churn_main, &c[1]), 0);
    churn_main(&c[0]);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(atomic_load(&a->bias), 0);          /* revoked by the second */
    assert_int_equal(atomic_load(&a->bias_busy), 0);

    as_arena_snapshot s = arena_snap(a);
    assert_int_equal(s.total.live_usable, 0);
    assert_int_equal(s.total.live_requested, 0);
    assert_int_equal(s.tags[AS_TAG_ACTIVATIONS].allocs, c[0].allocs);
    assert_int_equal(s.tags[AS_TAG_GRADIENTS].allocs, c[1].allocs);
    assert_int_equal(s.tags[AS_TAG_GRADIENTS].frees, c[1].allocs);
    assert_true(s.tags[AS_TAG_ACTIVATIONS].peak_usable >= 8 * MIB);
    assert_true(s.total.peak_usable <= 2 * (8 * MIB + 4096) + 4 * (4 * MIB));
    as_arena_snapshot_free(&s);
    /* after the revoke, one thread's peaks are exact again from a reset */
    as_arena_reset_peaks(a);
    assert_int_equal(as_alloc(a, 6 * MIB, AS_TAG_WEIGHTS, 0, &b), 0);
    assert_int_equal(as_free(a, &b), 0);
    s = arena_snap(a);
    assert_int_equal(s.total.peak_usable, 6 * MIB);
    assert_int_equal(s.tags[AS_TAG_WEIGHTS].peak_usable, 6 * MIB);
    as_arena_snapshot_free(&s);
    as_arena_destroy(a);
}

/* The owner's thread exits: its bias goes with it, and a new sole thread
 * of the arena gets one. */
static void *one_direct(void *p)
{
    as_arena *a = p;
    as_block b;
    if (as_alloc(a, 8 * MIB, AS_TAG_OTHER, 0, &b) != 0 || as_free(a, &b) != 0)
        abort();
    return NULL;
}

static void test_bias_follows_sole_thread(void **state)
{
    (void)state;
    as_arena *a = arena_new(NULL);
    for (int i = 0; i < 3; i++) {
        pthread_t th;
        assert_int_equal(pthread_create(&th, NULL, one_direct, a), 0);
        assert_int_equal(pthread_join(th, NULL), 0);
        assert_int_equal(atomic_load(&a->bias), 0);      /* gone with its thread */
        assert_int_equal(as__arena_nthreads(a), 0);
    }
    as_arena_snapshot s = arena_snap(a);
    assert_int_equal(s.tags[AS_TAG_OTHER].allocs, 3);
    assert_int_equal(s.tags[AS_TAG_OTHER].frees, 3);
    assert_int_equal(s.total.live_usable, 0);
    assert_int_equal(s.total.peak_usable, 8 * MIB);
    as_arena_snapshot_free(&s);
    as_arena_destroy(a);
}

AS_TEST_MAIN(NULL, NULL,
             cmocka_unit_test(test_direct_peaks_exact_with_pending_frees),
             cmocka_unit_test(test_direct_peaks_lazy),
             cmocka_unit_test(test_direct_cross_thread_frees),
             cmocka_unit_test(test_direct_budget_recount),
             cmocka_unit_test(test_bias_given_and_revoked),
             cmocka_unit_test(test_bias_follows_sole_thread))

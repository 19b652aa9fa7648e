/*
 * What an autograd engine does to an arena: blocks allocated on one thread
 * and freed on a long-lived worker. A queue of at most 4 blocks in flight
 * (the producer writes head, the worker tail) and the worker that frees
 * them until done. Header-only.
 */
#ifndef AS_TESTS_SUPPORT_XFREE_QUEUE_H
#define AS_TESTS_SUPPORT_XFREE_QUEUE_H

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>

#include <cmocka.h>

#include "actstore/alloc.h"

typedef struct xq {
    as_arena       *a;
    as_block        b[4];
    _Atomic int     head, tail;       /* producer writes head, worker tail */
    _Atomic bool    done;
} xq;

static inline void *xfree_worker(void *p)
{
    xq *q = p;
    for (;;) {
        int t = atomic_load(&q->tail);
        if (t == atomic_load(&q->head)) {
            if (atomic_load(&q->done) && t == atomic_load(&q->head))
                return NULL;
            sched_yield();
            continue;
        }
        as_block b = q->b[t % 4];
        assert_int_equal(as_free(q->a, &b), 0);
        atomic_store(&q->tail, t + 1);
    }
}

/* Start the worker on q (zeroed) for arena a; xq_finish joins it once it
 * has freed everything pushed. */
static inline void xq_start(xq *q, as_arena *a, pthread_t *th)
{
    memset(q, 0, sizeof *q);
    q->a = a;
    assert_int_equal(pthread_create(th, NULL, xfree_worker, q), 0);
}

static inline void xq_finish(xq *q, pthread_t th)
{
    atomic_store(&q->done, true);
    assert_int_equal(pthread_join(th, NULL), 0);
}

/* Producer side: wait until fewer than 4 blocks are in flight (before
 * allocating the next, so at most 4 are ever live), then hand it over. */
static inline void xq_wait_room(xq *q)
{
    while (atomic_load(&q->head) - atomic_load(&q->tail) >= 4)
        sched_yield();
}

static inline void xq_push(xq *q, const as_block *b)
{
    q->b[atomic_load(&q->head) % 4] = *b;
    atomic_store(&q->head, atomic_load(&q->head) + 1);
}

#endif

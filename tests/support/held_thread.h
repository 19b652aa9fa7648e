/*
 * A worker thread held alive on an arena: it does its work, then waits
 * while the test looks at the arena (the thread's caches and counters are
 * still there), and exits when the test releases it. Header-only.
 */
#ifndef AS_TESTS_SUPPORT_HELD_THREAD_H
#define AS_TESTS_SUPPORT_HELD_THREAD_H

#include <pthread.h>

#include <cmocka.h>

#include "actstore/alloc.h"

typedef struct held_thread {
    as_arena *a;                  /* the arena the worker works on */
    pthread_barrier_t bar;
    pthread_t th;
} held_thread;

/* Run fn(h) on a thread; returns once fn has called held_wait(h). */
static inline void held_start(held_thread *h, as_arena *a, void *(*fn)(void *))
{
    h->a = a;
    assert_int_equal(pthread_barrier_init(&h->bar, NULL, 2), 0);
    assert_int_equal(pthread_create(&h->th, NULL, fn, h), 0);
    pthread_barrier_wait(&h->bar);
}

/* In the worker, after its work: wait until the test calls held_release. */
static inline void held_wait(held_thread *h)
{
    pthread_barrier_wait(&h->bar);   /* work done, thread alive */
    pthread_barrier_wait(&h->bar);   /* the test has looked */
}

/* Let the worker exit and join it. */
static inline void held_release(held_thread *h)
{
    pthread_barrier_wait(&h->bar);
    assert_int_equal(pthread_join(h->th, NULL), 0);
    pthread_barrier_destroy(&h->bar);
}

#endif

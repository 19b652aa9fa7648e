/*
 * Store statistics in the store tests (test_store.c, test_store_codecs.c):
 * take a snapshot, asserting it succeeds, and find one layer in it.
 * Header-only (static inline).
 */
#ifndef AS_TESTS_SUPPORT_STORE_STATS_H
#define AS_TESTS_SUPPORT_STORE_STATS_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "actstore/store.h"

/* A statistics snapshot of s (the caller frees it: as_store_stats_free). */
static inline as_store_stats stats(as_store *s)
{
    as_store_stats st;
    assert_int_equal(as_store_stats_take(s, &st), 0);
    return st;
}

/* Nothing held: no live handle, no raw or stored bytes live. */
static inline void expect_nothing_live(as_store *s)
{
    as_store_stats st = stats(s);
    assert_int_equal(st.live_handles, 0);
    assert_int_equal(st.total.raw_live, 0);
    assert_int_equal(st.total.stored_live, 0);
    as_store_stats_free(&st);
}

/* The layer called name in st; fails the test when it is not there. */
static inline const as_store_layer_stats *layer_of(const as_store_stats *st,
                                                   const char *name)
{
    for (size_t i = 0; i < st->nlayers; i++)
        if (!strcmp(st->layers[i].name, name))
            return &st->layers[i];
    fail_msg("layer %s not in the stats", name);
    return NULL;
}

#endif

/*
 * An arena for the allocator tests (test_alloc*.c), asserting it is
 * created. Header-only (static inline).
 */
#ifndef AS_TESTS_SUPPORT_ARENA_H
#define AS_TESTS_SUPPORT_ARENA_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "actstore/alloc.h"

/* An arena with cfg (NULL: the defaults); the caller destroys it. */
static inline as_arena *arena_new(const as_arena_config *cfg)
{
    as_arena *a = NULL;
    assert_int_equal(as_arena_create(cfg, &a), 0);
    return a;
}

/* A snapshot of a with its whole timeline, asserting it is taken; the
 * caller frees it. */
static inline as_arena_snapshot arena_snap(as_arena *a)
{
    as_arena_snapshot s;
    assert_int_equal(as_arena_snapshot_take(a, UINT64_MAX, &s), 0);
    return s;
}

/* The id of layer name in a (registered, or found), asserting it. */
static inline uint16_t arena_layer(as_arena *a, const char *name)
{
    uint16_t id;
    assert_int_equal(as_arena_layer_register(a, name, &id), 0);
    return id;
}

#endif

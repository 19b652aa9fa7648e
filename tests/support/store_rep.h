/*
 * The stored representation behind a handle, for the tests that read or
 * corrupt stored bytes (test_corrupt.c, test_store_codecs.c,
 * test_act_policies.c). Header-only (static inline).
 */
#ifndef AS_TESTS_SUPPORT_STORE_REP_H
#define AS_TESTS_SUPPORT_STORE_REP_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "store/store_internal.h"

/* The representation of h, without a reference: valid while h lives. */
static inline as_rep *rep_of(as_store *s, as_handle h)
{
    as_item *it;
    as_rep *r;
    assert_int_equal(as__lookup_rep(s, h, &it, &r, "test"), 0);
    as__rep_unref(s, r);   /* the item keeps it */
    as__item_unref(s, it);
    return r;
}

#endif

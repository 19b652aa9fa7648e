/* Error names and version. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "actstore/common.h"
#include "support/test_main.h"

static void test_strerror_names_every_code(void **state)
{
    (void)state;
    assert_string_equal(as_strerror(AS_EBUDGET), "allocation over budget");
    assert_string_equal(as_err_name(AS_EHANDLE), "AS_EHANDLE");
    assert_string_equal(as_strerror(12345), "unknown error");
    for (int c = -1; c >= AS_EFORMAT; c--)
        assert_string_not_equal(as_strerror(c), "unknown error");
}

static void test_version_matches_header(void **state)
{
    (void)state;
    assert_string_equal(as_version_string(), AS_VERSION_STRING);
    assert_int_equal(as_version_number(), AS_VERSION_NUMBER);
}

AS_TEST_MAIN(NULL, NULL,
             cmocka_unit_test(test_strerror_names_every_code),
             cmocka_unit_test(test_version_matches_header))

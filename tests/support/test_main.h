/*
 * main() of a test program: the listed cmocka tests (cmocka_unit_test(fn),
 * ...) run as one group, with the group's setup and teardown (NULL for
 * none). Exit status: the number of failed tests.
 */
#ifndef AS_TESTS_SUPPORT_TEST_MAIN_H
#define AS_TESTS_SUPPORT_TEST_MAIN_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#define AS_TEST_MAIN(SETUP, TEARDOWN, ...)                         \
    int main(void)                                                 \
    {                                                              \
        const struct CMUnitTest tests[] = {__VA_ARGS__};           \
        return cmocka_run_group_tests(tests, SETUP, TEARDOWN);     \
    }

#endif

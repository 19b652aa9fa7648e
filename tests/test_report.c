/* A/B report pieces: paired statistics and the SVG writer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "client/stats.h"
#include "client/svg.h"

static void test_summary_and_median(void **state)
{
    (void)state;
    const double x[] = {2, 4, 4, 4, 5, 5, 7, 9};
    as_summary s = as_stats_summary(x, 8);
    assert_true(fabs(s.mean - 5.0) < 1e-12);
    assert_true(fabs(s.sd - sqrt(32.0 / 7.0)) < 1e-12);
    double y[] = {3, 1, 2, 4};
    assert_true(as_stats_median(y, 4) == 2.5);
}

static void test_paired_ci(void **state)
{
    (void)state;
    /* b - a = {1, 2, 3}: mean 2, sd 1, t(2) = 4.303, half = 4.303/sqrt(3). */
    const double a[] = {10, 20, 30}, b[] = {11, 22, 33};
    as_paired p = as_stats_paired(a, b, 3);
    assert_true(fabs(p.mean_diff - 2.0) < 1e-12);
    assert_true(fabs(p.ci_half - 4.303 / sqrt(3.0)) < 1e-9);
    assert_false(p.significant);
    /* Identical arms: zero difference, zero-width interval, not significant. */
    as_paired z = as_stats_paired(a, a, 3);
    assert_true(z.mean_diff == 0.0 && z.ci_half == 0.0);
    assert_false(z.significant);
    /* One seed: no interval. */
    as_paired one = as_stats_paired(a, b, 1);
    assert_true(isnan(one.ci_half));
    assert_true(as_stats_t975(1000) == 1.96);
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = calloc(1, (size_t)n + 1);
    assert_true(fread(s, 1, (size_t)n, f) == (size_t)n);
    fclose(f);
    return s;
}

static void test_svg_charts(void **state)
{
    (void)state;
    char path[] = "/tmp/as_test_svg_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const double x[] = {0, 1, 2, 3}, y[] = {0, 3 << 20, 5 << 20, 6 << 20};
    as_svg_series s = {"arm <A>", x, y, 4, false};
    as_svg_axes ax = {"memory", "step", "saved bytes", AS_SVG_BYTES, true};
    assert_int_equal(as_svg_line_chart(path, &ax, &s, 1), 0);
    char *t = slurp(path);
    assert_non_null(strstr(t, "<svg"));
    assert_non_null(strstr(t, "MiB"));
    assert_non_null(strstr(t, "arm &lt;A&gt;"));
    assert_non_null(strstr(t, "<polyline"));
    free(t);
    const char *cats[] = {"softmax", "conv_input"}, *groups[] = {"A", "B"};
    const double v[] = {100, 200, 10, NAN};
    assert_int_equal(as_svg_bar_chart(path, &ax, cats, 2, groups, 2, v), 0);
    t = slurp(path);
    assert_non_null(strstr(t, "conv_input"));
    assert_non_null(strstr(t, "<rect x="));
    free(t);
    unlink(path);
    assert_int_equal(as_svg_line_chart("/nonexistent/dir/x.svg", &ax, &s, 1), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_summary_and_median),
        cmocka_unit_test(test_paired_ci),
        cmocka_unit_test(test_svg_charts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

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

#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "client/report.h"
#include "client/stats.h"
#include "client/svg.h"
#include "support/test_main.h"

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
    /* large df: exact quantiles t(40) 2.0211, t(63) 1.9983, t(1000) 1.9623 */
    assert_true(fabs(as_stats_t975(40) - 2.0211) < 2e-4);
    assert_true(fabs(as_stats_t975(63) - 1.9983) < 2e-4);
    assert_true(fabs(as_stats_t975(1000) - 1.9623) < 2e-4);
    assert_true(fabs(as_stats_t975(31) - 2.0395) < 2e-4);
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

/* The file at path holds every string of has and none of lacks (each list
 * NULL-terminated; lacks may be NULL). */
static void expect_file(const char *path, const char *const *has,
                        const char *const *lacks)
{
    char *t = slurp(path);
    for (; has && *has; has++)
        if (!strstr(t, *has))
            fail_msg("%s lacks \"%s\"", path, *has);
    for (; lacks && *lacks; lacks++)
        if (strstr(t, *lacks))
            fail_msg("%s holds \"%s\"", path, *lacks);
    free(t);
}
#define HAS(...) ((const char *const[]){__VA_ARGS__, NULL})

static void test_svg_charts(void **state)
{
    (void)state;
    char path[] = "/tmp/as_test_svg_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const double x[] = {0, 1, 2, 3}, y[] = {0, 3 << 20, 5 << 20, 6 << 20};
    as_svg_series s = {"arm <A>", x, y, 4, false, 0};
    as_svg_axes ax = {"memory", "step", "saved bytes", AS_SVG_BYTES, true, false, false};
    assert_int_equal(as_svg_line_chart(path, &ax, &s, 1), 0);
    expect_file(path, HAS("<svg", "MiB", "arm &lt;A&gt;", "<polyline"), NULL);
    const char *cats[] = {"softmax", "conv_input"}, *groups[] = {"A", "B"};
    const double v[] = {100, 200, 10, NAN};
    assert_int_equal(as_svg_bar_chart(path, &ax, cats, 2, groups, 2, v), 0);
    expect_file(path, HAS("conv_input", "<rect x="), NULL);
    /* Many long names: split at '_' onto two lines instead of tiny text. */
    const char *many[] = {"activation_output", "activation_input", "attention_input",
                          "linear_input", "norm_input", "softmax_output", "conv_output",
                          "dropout_mask"};
    double mv[16];
    for (int i = 0; i < 16; i++)
        mv[i] = 1000.0 * (i + 1);
    assert_int_equal(as_svg_bar_chart(path, &ax, many, 8, groups, 2, mv), 0);
    expect_file(path, HAS(">activation</tspan><tspan", ">output</tspan>"), NULL);
    /* A flat series a rounding error apart (cosines 1 and 1 - 1e-16) once
     * looped forever on ticks below the values' ulp. */
    const double yc[] = {1.0, 0.9999999999999999, 1.0, 1.0};
    as_svg_series sc = {"cos", x, yc, 4, false, 0};
    as_svg_axes axc = {"cosine", "step", "cosine", AS_SVG_PLAIN, false, false, false};
    assert_int_equal(as_svg_line_chart(path, &axc, &sc, 1), 0);
    char *t = slurp(path);
    size_t nticks = 0;
    for (const char *q = t; (q = strstr(q, "text-anchor=\"end\"")); q++)
        nticks++;
    assert_true(nticks >= 2 && nticks <= 20);
    free(t);
    unlink(path);
    assert_int_equal(as_svg_line_chart("/nonexistent/dir/x.svg", &ax, &s, 1), -1);
}


/* ---- reports from fake data ------------------------------------------- */

/* Fill one run as a training would: steps with a decreasing loss, memory,
 * gradient checks, evaluation, peaks. `shift` makes arm B differ. */
static void fake_run(as_report *r, as_rep_run *run, long steps, double acc,
                     uint64_t softmax_stored, double cos, double ms)
{
    for (long s = 0; s < steps; s++) {
        double loss = 2.3 * exp(-0.01 * (double)s) + 0.01 * (double)(run->seed % 3);
        assert_int_equal(as_report_push_step(run, loss, (double)softmax_stored + 1000.0,
                                             (double)softmax_stored + 5e6, ms + (double)(s % 2)),
                         0);
        if (r->check_every && s % r->check_every == 0) {
            double pt[2] = {cos, cos - 0.01};
            assert_int_equal(as_report_push_cos(r, run, s, cos, pt), 0);
        }
    }
    run->finished = steps == r->steps;
    run->evaluated = run->finished;
    run->eval_accuracy = acc;
    run->eval_loss = 0.5 - acc / 10;
    run->kind_stored_peak[AS_KIND_SOFTMAX_OUTPUT] = softmax_stored;
    run->kind_raw_peak[AS_KIND_SOFTMAX_OUTPUT] = 6100000;
    run->kind_stored_peak[AS_KIND_LINEAR_INPUT] = 2000000;
    run->kind_raw_peak[AS_KIND_LINEAR_INPUT] = 2000000;
    run->saved_stored_peak = softmax_stored + 2000000;
    run->saved_raw_peak = 8100000;
    run->arena_peak = softmax_stored + 9000000;
}

static void fake_report(as_report *r, bool same, long steps_b_last)
{
    const uint64_t seeds[] = {1, 2, 3};
    assert_int_equal(as_report_init(r, "vit", "small", "default=keep",
                                    same ? "default=keep" : "softmax=soa:5", seeds, 3, 120, 50),
                     0);
    const char *names[] = {"blocks.0.attn.qkv.W", "head.W"};
    assert_int_equal(as_report_set_tensors(r, names, 2), 0);
    const double acc_a[] = {0.80, 0.82, 0.81}, acc_b[] = {0.79, 0.82, 0.80};
    for (size_t i = 0; i < 3; i++) {
        fake_run(r, &r->arm[0].runs[i], 120, acc_a[i], 6100000, 1.0, 10.0);
        fake_run(r, &r->arm[1].runs[i], i == 2 ? steps_b_last : 120,
                 same ? acc_a[i] : acc_b[i], same ? 6100000 : 1000000, same ? 1.0 : 0.995,
                 same ? 10.0 : 10.4);
    }
}

static cJSON *load_json(const char *path)
{
    char *t = slurp(path);
    cJSON *j = cJSON_Parse(t);
    free(t);
    assert_non_null(j);
    return j;
}

static void rm_report(const char *dir)
{
    static const char *f[] = {"report.json", "report.md", "loss.svg", "memory.svg",
                              "kinds.svg", "cosine.svg"};
    char p[1024];
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, f[i]);
        unlink(p);
    }
    rmdir(dir);
}

static void test_report_files(void **state)
{
    (void)state;
    as_report r;
    fake_report(&r, false, 120);
    char dir[] = "/tmp/as_test_report_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char sub[600], err[512];
    snprintf(sub, sizeof sub, "%s/a/b", dir); /* created with parents */
    assert_int_equal(as_report_prepare_dir(sub, err, sizeof err), 0);
    assert_int_equal(as_report_write(&r, sub, err, sizeof err), 0);
    /* AS_TEST_REPORT_DIR=DIR keeps a copy to look at the plots. */
    const char *keep = getenv("AS_TEST_REPORT_DIR");
    if (keep && as_report_prepare_dir(keep, err, sizeof err) == 0)
        assert_int_equal(as_report_write(&r, keep, err, sizeof err), 0);

    char p[700];
    snprintf(p, sizeof p, "%s/report.json", sub);
    cJSON *j = load_json(p);
    assert_string_equal(cJSON_GetObjectItem(j, "format")->valuestring, AS_REPORT_FORMAT);
    assert_false(cJSON_IsTrue(cJSON_GetObjectItem(j, "partial")));
    cJSON *arms = cJSON_GetObjectItem(j, "arms");
    assert_int_equal(cJSON_GetArraySize(arms), 2);
    cJSON *runb = cJSON_GetArrayItem(cJSON_GetObjectItem(cJSON_GetArrayItem(arms, 1), "runs"), 0);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(runb, "loss")), 120);
    cJSON *sm = cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(runb, "saved"),
                                                        "by_kind"), "softmax_output");
    assert_true(cJSON_GetObjectItem(sm, "stored_peak_bytes")->valuedouble == 1000000);
    cJSON *gc = cJSON_GetObjectItem(runb, "grad_cosine");
    assert_int_equal(cJSON_GetArraySize(gc), 3); /* steps 0, 50, 100 */
    cJSON *g0 = cJSON_GetArrayItem(gc, 0);
    assert_true(fabs(cJSON_GetObjectItem(g0, "min")->valuedouble - 0.985) < 1e-12);
    assert_true(cJSON_IsNumber(cJSON_GetObjectItem(cJSON_GetObjectItem(g0, "per_tensor"),
                                                   "head.W")));
    /* paired: accuracy diffs (points) {-1, 0, -1}: mean -2/3, sd 0.577 */
    cJSON *pa = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "paired"), "eval_accuracy");
    assert_non_null(pa);
    assert_true(fabs(cJSON_GetObjectItem(pa, "diff")->valuedouble + 2.0 / 3.0) < 1e-9);
    double half = 4.303 * sqrt(1.0 / 3.0) / sqrt(3.0);
    assert_true(fabs(cJSON_GetObjectItem(pa, "ci95_half")->valuedouble - half) < 1e-6);
    assert_true(cJSON_IsNumber(cJSON_GetObjectItem(pa, "ci95_low")));
    assert_true(cJSON_IsNumber(cJSON_GetObjectItem(pa, "ci95_high")));
    assert_false(cJSON_IsTrue(cJSON_GetObjectItem(pa, "significant")));
    cJSON *ps = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "paired"), "softmax_output");
    assert_true(cJSON_GetObjectItem(ps, "diff")->valuedouble == -5100000);
    const char *v = cJSON_GetObjectItem(j, "verdict")->valuestring;
    assert_non_null(strstr(v, "all saved: 2.7x less (7.7 MiB -> 2.9 MiB); arena peak 1.5x less"));
    assert_non_null(strstr(v, "most: 6.1x less softmax_output"));
    assert_non_null(strstr(v, "accuracy -0.67 +/- 1.43 points (not significant)"));
    assert_non_null(strstr(v, "step time +4%"));
    cJSON_Delete(j);

    snprintf(p, sizeof p, "%s/report.md", sub);
    expect_file(p, HAS("| eval accuracy (%) | 81.00 ± 1.00 | 80.33 ± 1.53 | -0.67 | "
                       "[-2.10, +0.77] | no |",
                       "softmax_output", "**Verdict:** all saved: 2.7x less"),
                HAS("PARTIAL"));
    static const char *svgs[] = {"loss.svg", "memory.svg", "kinds.svg", "cosine.svg"};
    for (size_t i = 0; i < 4; i++) {
        snprintf(p, sizeof p, "%s/%s", sub, svgs[i]);
        expect_file(p, HAS("<svg", "</svg>"), HAS("nan", "inf"));
    }
    snprintf(p, sizeof p, "%s/memory.svg", sub);
    expect_file(p, HAS("MiB", "peak bytes"), NULL);
    rm_report(sub);
    snprintf(p, sizeof p, "%s/a", dir);
    rmdir(p);
    rmdir(dir);
    as_report_free(&r);
}

static void test_report_same_policy_zero(void **state)
{
    (void)state;
    as_report r;
    fake_report(&r, true, 120);
    as_rep_metric *m;
    size_t n = as_report_metrics(&r, &m);
    assert_true(n >= 7);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(m[i].n, 3);
        assert_true(m[i].diff == 0.0);
        assert_true(m[i].ci_half == 0.0);
        assert_false(m[i].significant);
    }
    free(m);
    char v[512];
    as_report_verdict(&r, v, sizeof v);
    assert_non_null(strstr(v, "all saved: the same (7.7 MiB)"));
    assert_non_null(strstr(v, "accuracy +0.00 +/- 0.00 points (not significant)"));
    as_report_free(&r);
}

static void test_report_partial(void **state)
{
    (void)state;
    as_report r;
    fake_report(&r, false, 40); /* arm B of seed 3 interrupted at step 40 */
    r.partial = true;
    snprintf(r.partial_reason, sizeof r.partial_reason, "interrupted (SIGINT) at step 40");
    size_t idx[3];
    assert_int_equal(as_report_pairs(&r, idx), 2);
    as_rep_metric *m;
    size_t n = as_report_metrics(&r, &m);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(m[i].n, 2);
    free(m);
    char dir[] = "/tmp/as_test_partial_XXXXXX", err[512], p[600];
    assert_non_null(mkdtemp(dir));
    assert_int_equal(as_report_write(&r, dir, err, sizeof err), 0);
    snprintf(p, sizeof p, "%s/report.json", dir);
    cJSON *j = load_json(p);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(j, "partial")));
    assert_non_null(strstr(cJSON_GetObjectItem(j, "partial_reason")->valuestring, "SIGINT"));
    assert_non_null(strstr(cJSON_GetObjectItem(j, "verdict")->valuestring, "PARTIAL: "));
    cJSON *runs = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "arms"), 1),
                                      "runs");
    cJSON *last = cJSON_GetArrayItem(runs, 2);
    assert_false(cJSON_IsTrue(cJSON_GetObjectItem(last, "finished")));
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(cJSON_GetObjectItem(last, "eval"), "accuracy")));
    cJSON_Delete(j);
    snprintf(p, sizeof p, "%s/report.md", dir);
    expect_file(p, HAS("**PARTIAL REPORT**", "40 (unfinished)"), NULL);
    rm_report(dir);
    as_report_free(&r);

    /* Nothing finished: the pair in progress still gives memory figures. */
    const uint64_t seeds[] = {7};
    assert_int_equal(as_report_init(&r, "cnn", "small", "default=keep", "conv_input=invert",
                                    seeds, 1, 100, 0), 0);
    as_report_push_step(&r.arm[0].runs[0], 2.0, 100, 200, 5);
    as_report_push_step(&r.arm[1].runs[0], 2.0, 50, 150, 6);
    r.arm[0].runs[0].kind_raw_peak[AS_KIND_CONV_INPUT] = 100;
    r.arm[0].runs[0].kind_stored_peak[AS_KIND_CONV_INPUT] = 100;
    r.arm[1].runs[0].kind_raw_peak[AS_KIND_CONV_INPUT] = 100;
    r.arm[1].runs[0].kind_stored_peak[AS_KIND_CONV_INPUT] = 25;
    r.partial = true;
    char v[512];
    as_report_verdict(&r, v, sizeof v);
    assert_non_null(strstr(v, "PARTIAL: all saved: the same"));
    assert_non_null(strstr(v, "most: 4.0x less conv_input"));
    assert_non_null(strstr(v, "(1 seed, no interval)"));
    as_report_free(&r);
}

static void test_prepare_dir_errors(void **state)
{
    (void)state;
    char err[512];
    assert_int_equal(as_report_prepare_dir("/dev/null/out", err, sizeof err), -1);
    assert_non_null(strstr(err, "/dev/null/out"));
    assert_int_equal(as_report_prepare_dir("/proc/actstore-no/out", err, sizeof err), -1);
    assert_non_null(strstr(err, "/proc/actstore-no/out"));
    assert_int_equal(as_report_prepare_dir("", err, sizeof err), -1);
    char f[] = "/tmp/as_test_file_XXXXXX";
    int fd = mkstemp(f);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(as_report_prepare_dir(f, err, sizeof err), -1);
    assert_non_null(strstr(err, "not a directory"));
    unlink(f);
}

AS_TEST_MAIN(NULL, NULL,
             cmocka_unit_test(test_summary_and_median),
             cmocka_unit_test(test_paired_ci),
             cmocka_unit_test(test_svg_charts),
             cmocka_unit_test(test_report_files),
             cmocka_unit_test(test_report_same_policy_zero),
             cmocka_unit_test(test_report_partial),
             cmocka_unit_test(test_prepare_dir_errors))

/*
 * actstore ab, end to end on the small presets: the command is run as a
 * process ($AS_BIN, set by ctest), its report files are parsed with cJSON.
 *
 *   - both arms run every step, report files exist and parse, the CI
 *     columns are numbers;
 *   - identical seeds give identical arm-A results across two invocations
 *     (with different B arms);
 *   - an A/B of a policy against itself reports a zero difference;
 *   - cnn (leaky) keep vs conv_input=invert holds less conv_input memory;
 *   - Ctrl-C finishes the step, writes a partial report, exits 1;
 *   - bad input (unknown model, malformed spec, unwritable folder) is a
 *     clear error before any training starts.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <cjson/cJSON.h>

#include "client/ab.h"
#include "support/scratch.h"
#include "support/test_main.h"
#include "util/clock.h"


static const char *bin(void)
{
    const char *b = getenv("AS_BIN");
    return b ? b : AS_BINARY_DIR "/client/actstore";
}

/* Run the command line (a shell string after the binary), capture stderr
 * and stdout together into *out (malloc'ed); return the exit status. */
static int run(char **out, const char *fmt, ...)
{
    char args[2048], cmd[4096], log[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(log, sizeof log, "%s/log.txt", scratch_dir);
    snprintf(cmd, sizeof cmd, "'%s' %s > '%s' 2>&1", bin(), args, log);
    int st = system(cmd);
    FILE *f = fopen(log, "rb");
    assert_non_null(f);
    char *s = calloc(1, 1 << 20);
    size_t n = fread(s, 1, (1 << 20) - 1, f);
    s[n] = 0;
    fclose(f);
    if (out)
        *out = s;
    else
        free(s);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static cJSON *load_file(const char *dir, const char *name)
{
    char p[700];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "rb");
    if (!f)
        fail_msg("no %s", p);
    char *s = calloc(1, 8 << 20);
    size_t n = fread(s, 1, (8 << 20) - 1, f);
    fclose(f);
    s[n] = 0;
    cJSON *j = cJSON_Parse(s);
    free(s);
    if (!j)
        fail_msg("%s does not parse", p);
    return j;
}

static cJSON *load(const char *dir)
{
    return load_file(dir, "report.json");
}

static cJSON *arm_run(cJSON *j, int arm, int seed)
{
    cJSON *a = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "arms"), arm);
    return cJSON_GetArrayItem(cJSON_GetObjectItem(a, "runs"), seed);
}

static double num(cJSON *o, const char *path)
{
    /* "a.b.c" */
    char buf[128];
    snprintf(buf, sizeof buf, "%s", path);
    cJSON *x = o;
    for (char *t = strtok(buf, "."); t && x; t = strtok(NULL, "."))
        x = cJSON_GetObjectItem(x, t);
    if (!cJSON_IsNumber(x))
        fail_msg("%s is not a number", path);
    return x->valuedouble;
}

static bool file_ok(const char *dir, const char *name)
{
    char p[700];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    struct stat st;
    return stat(p, &st) == 0 && st.st_size > 100;
}

#define VIT "ab --model vit --preset small --steps 12 --seeds 2 --check-every 5 --quiet"

static void test_vit_pair_and_determinism(void **state)
{
    (void)state;
    char d1[600], d2[600];
    snprintf(d1, sizeof d1, "%s/vit-soa", scratch_dir);
    snprintf(d2, sizeof d2, "%s/vit-self", scratch_dir);
    char *out;
    int rc = run(&out, VIT " --a default=keep --b 'softmax=soa:5; default=keep' --out '%s' "
                       "--serve 127.0.0.1:0", d1);
    if (rc != 0)
        fail_msg("exit %d: %s", rc, out);
    assert_non_null(strstr(out, "dashboard at http://127.0.0.1:"));
    assert_non_null(strstr(out, "vit: all saved: "));
    free(out);
    static const char *files[] = {"report.json", "report.md", "loss.svg", "memory.svg",
                                  "kinds.svg", "cosine.svg"};
    for (size_t i = 0; i < 6; i++)
        assert_true(file_ok(d1, files[i]));

    cJSON *j = load(d1);
    assert_false(cJSON_IsTrue(cJSON_GetObjectItem(j, "partial")));
    for (int a = 0; a < 2; a++)
        for (int s = 0; s < 2; s++) {
            cJSON *r = arm_run(j, a, s);
            assert_true(num(r, "steps") == 12);
            assert_true(cJSON_IsTrue(cJSON_GetObjectItem(r, "finished")));
            assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(r, "loss")), 12);
            double acc = num(r, "eval.accuracy");
            assert_true(acc > 0.1 && acc <= 1.0);
            /* checks at steps 0, 5, 10 */
            assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(r, "grad_cosine")), 3);
            assert_true(num(r, "saved.stored_peak_bytes") > 0);
            assert_true(num(r, "arena_peak_bytes") >= num(r, "saved.stored_peak_bytes"));
            assert_true(num(r, "step_ms_median") > 0);
        }
    /* B really approximates the softmax, A keeps it. */
    double sa = num(arm_run(j, 0, 0), "saved.by_kind.softmax_output.stored_peak_bytes");
    double sb = num(arm_run(j, 1, 0), "saved.by_kind.softmax_output.stored_peak_bytes");
    assert_true(sb < sa);
    double ca = num(cJSON_GetArrayItem(cJSON_GetObjectItem(arm_run(j, 0, 0), "grad_cosine"), 1),
                    "overall");
    double cb = num(cJSON_GetArrayItem(cJSON_GetObjectItem(arm_run(j, 1, 0), "grad_cosine"), 1),
                    "overall");
    assert_true(ca == 1.0);          /* keep gives the exact gradients */
    assert_true(cb < 1.0 && cb > 0.9);
    /* CI columns are numbers. */
    cJSON *paired = cJSON_GetObjectItem(j, "paired");
    static const char *keys[] = {"eval_accuracy", "eval_loss", "saved_peak", "softmax_output",
                                 "arena_peak", "step_ms", "grad_cosine"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        cJSON *m = cJSON_GetObjectItem(paired, keys[i]);
        if (!m)
            fail_msg("paired.%s missing", keys[i]);
        assert_true(num(m, "pairs") == 2);
        assert_true(isfinite(num(m, "ci95_low")) && isfinite(num(m, "ci95_high")));
        assert_true(num(m, "ci95_low") <= num(m, "diff") && num(m, "diff") <= num(m, "ci95_high"));
    }
    assert_true(num(cJSON_GetObjectItem(paired, "softmax_output"), "diff") < 0);

    /* Second invocation: same seeds, another B (A against itself). */
    rc = run(&out, VIT " --a default=keep --b default=keep --out '%s'", d2);
    if (rc != 0)
        fail_msg("exit %d: %s", rc, out);
    free(out);
    cJSON *k = load(d2);
    for (int s = 0; s < 2; s++) {
        cJSON *r1 = arm_run(j, 0, s), *r2 = arm_run(k, 0, s);
        cJSON *l1 = cJSON_GetObjectItem(r1, "loss"), *l2 = cJSON_GetObjectItem(r2, "loss");
        for (int i = 0; i < 12; i++)
            assert_true(cJSON_GetArrayItem(l1, i)->valuedouble ==
                        cJSON_GetArrayItem(l2, i)->valuedouble);
        assert_true(num(r1, "eval.accuracy") == num(r2, "eval.accuracy"));
        assert_true(num(r1, "eval.loss") == num(r2, "eval.loss"));
        assert_true(num(r1, "saved.stored_peak_bytes") == num(r2, "saved.stored_peak_bytes"));
    }
    /* A/B of a policy against itself: zero difference, not significant. */
    paired = cJSON_GetObjectItem(k, "paired");
    static const char *zero[] = {"eval_accuracy", "eval_loss", "final_train_loss", "saved_peak",
                                 "softmax_output", "arena_peak", "grad_cosine",
                                 "grad_cosine_min"};
    for (size_t i = 0; i < sizeof zero / sizeof zero[0]; i++) {
        cJSON *m = cJSON_GetObjectItem(paired, zero[i]);
        assert_non_null(m);
        assert_true(num(m, "diff") == 0.0);
        assert_true(num(m, "ci95_half") == 0.0);
        assert_false(cJSON_IsTrue(cJSON_GetObjectItem(m, "significant")));
    }
    const char *v = cJSON_GetObjectItem(k, "verdict")->valuestring;
    assert_non_null(strstr(v, "all saved: the same"));
    assert_non_null(strstr(v, "accuracy +0.00 +/- 0.00 points (not significant)"));
    cJSON_Delete(j);
    cJSON_Delete(k);
}

static void test_cnn_invert(void **state)
{
    (void)state;
    char d[600];
    snprintf(d, sizeof d, "%s/cnn", scratch_dir);
    char *out;
    int rc = run(&out, "ab --model cnn --act leaky --preset small --steps 8 --seeds 1 "
                       "--check-every 4 --quiet --a default=keep "
                       "--b 'conv_input=invert; default=keep' --out '%s' --json '%s/copy.json'",
                 d, scratch_dir);
    if (rc != 0)
        fail_msg("exit %d: %s", rc, out);
    free(out);
    cJSON *j = load(d);
    assert_string_equal(cJSON_GetObjectItem(j, "options")->valuestring, "act=leaky");
    /* --json FILE: the same document */
    cJSON *copy = load_file(scratch_dir, "copy.json");
    assert_true(cJSON_Compare(j, copy, true));
    cJSON_Delete(copy);
    double a = num(arm_run(j, 0, 0), "saved.by_kind.conv_input.stored_peak_bytes");
    double b = num(arm_run(j, 1, 0), "saved.by_kind.conv_input.stored_peak_bytes");
    assert_true(b < a);
    /* One seed: no interval, and the JSON says so with null. */
    cJSON *m = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "paired"), "conv_input");
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(m, "ci95_half")));
    /* inversion rebuilds the inputs: gradients stay close to exact */
    cJSON *gc = cJSON_GetObjectItem(arm_run(j, 1, 0), "grad_cosine");
    assert_int_equal(cJSON_GetArraySize(gc), 2);
    assert_true(num(cJSON_GetArrayItem(gc, 1), "overall") > 0.999);
    cJSON_Delete(j);
}

static void test_ctrl_c_partial(void **state)
{
    (void)state;
    char d[600], log[700];
    snprintf(d, sizeof d, "%s/interrupted", scratch_dir);
    snprintf(log, sizeof log, "%s/int.log", scratch_dir);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        FILE *f = freopen(log, "w", stderr);
        FILE *o = freopen("/dev/null", "w", stdout);
        (void)f;
        (void)o;
        execl(bin(), bin(), "ab", "--model", "vit", "--preset", "small", "--steps", "100000",
              "--seeds", "2", "--check-every", "0", "--a", "default=keep", "--b",
              "softmax=soa:5; default=keep", "--out", d, (char *)NULL);
        _exit(127);
    }
    /* wait until training is under way (the first progress line; bounded,
     * for a loaded machine) */
    char *s = calloc(1, 1 << 16);
    for (double t0 = as_clock_wall_s(); as_clock_wall_s() - t0 < 120;) {
        usleep(50000);
        FILE *f = fopen(log, "rb");
        if (f) {
            size_t n = fread(s, 1, (1 << 16) - 1, f);
            s[n] = 0;
            fclose(f);
            if (strstr(s, "training 100000 steps"))
                break;
        }
    }
    if (!strstr(s, "training 100000 steps")) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        fail_msg("no training line: %s", s);
    }
    usleep(300000); /* a few steps */
    kill(pid, SIGINT);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 1);
    FILE *f = fopen(log, "rb");
    size_t n = fread(s, 1, (1 << 16) - 1, f);
    s[n] = 0;
    fclose(f);
    assert_non_null(strstr(s, "partial report in"));
    free(s);
    cJSON *j = load(d);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(j, "partial")));
    assert_non_null(strstr(cJSON_GetObjectItem(j, "partial_reason")->valuestring,
                           "interrupted at step"));
    cJSON *ra = arm_run(j, 0, 0), *rb = arm_run(j, 1, 0);
    double steps = num(ra, "steps");
    assert_true(steps >= 1 && steps < 100000);
    assert_true(num(rb, "steps") == steps); /* both arms stopped after the same step */
    assert_false(cJSON_IsTrue(cJSON_GetObjectItem(ra, "finished")));
    assert_true(num(arm_run(j, 0, 1), "steps") == 0); /* seed 2 never started */
    assert_non_null(strstr(cJSON_GetObjectItem(j, "verdict")->valuestring, "PARTIAL: "));
    cJSON_Delete(j);
}

static void test_bad_input(void **state)
{
    (void)state;
    char *out, d[600];
    snprintf(d, sizeof d, "%s/never", scratch_dir);
    struct {
        const char *args;
        int code;
        const char *want[3];
    } cases[] = {
        {"--model resnet --a default=keep --b default=keep", 2,
         {"unknown model 'resnet'", "cnn, vit, lm"}},
        {"--model vit --preset huge --a default=keep --b default=keep", 2,
         {"unknown preset 'huge'"}},
        {"--model vit --a default=keep --b 'softmax=soa:5; conv_input'", 2,
         {"arm B (--b)", "offset"}},
        {"--model vit --a 'softmax==keep' --b default=keep", 2, {"arm A (--a)", "offset"}},
        {"--model vit --a default=keep --b 'softmax=nosuch:3'", 2, {"arm B", "offset"}},
        {"--model vit --a default=keep", 2, {"--b SPEC"}},
        {"--model vit --a default=keep --b default=keep --seeds 0", 2, {"--seeds 0"}},
        {"--model vit --a default=keep --b default=keep --steps 5 --epochs 1", 2,
         {"not both"}},
        {"--model vit --a default=keep --b default=keep --act leaky", 2, {"cnn model only"}},
        {"--model vit --a default=keep --b default=keep --bogus 1", 2, {"unknown option"}},
        {"--model vit --a default=keep --b default=keep --out /dev/null/out", 1,
         {"output folder /dev/null/out"}},
        {"--model vit --a default=keep --b default=keep --out /proc/as-nope", 1,
         {"output folder /proc/as-nope"}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = run(&out, "ab %s%s%s", cases[i].args, strstr(cases[i].args, "--out") ? "" : " --out ",
                 strstr(cases[i].args, "--out") ? "" : d);
        if (rc != cases[i].code)
            fail_msg("case %zu (%s): exit %d, want %d: %s", i, cases[i].args, rc, cases[i].code,
                     out);
        for (int w = 0; w < 3 && cases[i].want[w]; w++)
            if (!strstr(out, cases[i].want[w]))
                fail_msg("case %zu (%s): message lacks '%s': %s", i, cases[i].args,
                         cases[i].want[w], out);
        /* before any training: no progress line, no report */
        assert_null(strstr(out, " step "));
        free(out);
    }
    assert_false(file_ok(d, "report.json"));
    assert_int_equal(run(&out, "ab --help"), 0);
    assert_non_null(strstr(out, "usage: actstore ab"));
    free(out);
}

static void test_demo_small(void **state)
{
    (void)state;
    char d[600], p[700];
    snprintf(d, sizeof d, "%s/demo", scratch_dir);
    char *out;
    int rc = run(&out, "demo --preset small --steps 6 --seeds 2 --serve 127.0.0.1:0 --quiet "
                       "--out '%s'", d);
    if (rc != 0)
        fail_msg("exit %d: %s", rc, out);
    assert_non_null(strstr(out, "dashboard at http://127.0.0.1:"));
    assert_true(strstr(out, "dashboard at") < strstr(out, "done in")); /* URL first */
    /* the whole model leads: at least 10x less saved (the plan may leave
     * some of the budget unused) */
    static const char *const heads[2] = {"  vit (keep vs auto at keep / 10): all saved: ",
                                         "  cnn (leaky) (keep vs auto at keep / 10): all saved: "};
    for (int k = 0; k < 2; k++) {
        const char *v = strstr(out, heads[k]);
        assert_non_null(v);
        double x = strtod(v + strlen(heads[k]), NULL);
        assert_true(x >= 9.95 && x < 30);
    }
    assert_non_null(strstr(out, "arena peak"));
    snprintf(p, sizeof p, "reports: %s/", d);
    assert_non_null(strstr(out, p));
    free(out);
    snprintf(p, sizeof p, "%s/vit", d);
    cJSON *j = load(p);
    assert_string_equal(cJSON_GetObjectItem(j, "model")->valuestring, "vit");
    cJSON_Delete(j);
    snprintf(p, sizeof p, "%s/cnn", d);
    j = load(p);
    assert_string_equal(cJSON_GetObjectItem(j, "options")->valuestring, "act=leaky");
    assert_true(num(arm_run(j, 1, 1), "steps") == 6);
    /* arm B planned with auto within a tenth of keep's bytes, every seed */
    for (int si = 0; si < 2; si++) {
        cJSON *rb = arm_run(j, 1, si);
        double budget = num(rb, "saved_budget_bytes");
        assert_true(budget > 0);
        assert_true(num(rb, "saved.stored_peak_bytes") <= budget);
        assert_true(num(arm_run(j, 0, si), "saved.stored_peak_bytes") >= 9.9 * budget);
        cJSON *plan = cJSON_GetObjectItem(rb, "plan");
        assert_true(cJSON_IsTrue(cJSON_GetObjectItem(plan, "active")));
        assert_true(cJSON_GetArraySize(cJSON_GetObjectItem(plan, "layers")) > 3);
        assert_null(cJSON_GetObjectItem(arm_run(j, 0, si), "plan"));
    }
    cJSON_Delete(j);
    assert_int_equal(run(&out, "ab --model vit --a default=keep --b default=keep --ratio 10"), 2);
    assert_non_null(strstr(out, "neither spec does"));
    free(out);
    assert_int_equal(run(&out, "demo --preset nope"), 2);
    assert_non_null(strstr(out, "unknown preset 'nope'"));
    free(out);
}

static void test_cosine(void **state)
{
    (void)state;
    const float a[] = {1, 2, 3}, b[] = {2, 4, 6}, c[] = {-1, -2, -3}, z[] = {0, 0, 0};
    double acc[3] = {0, 0, 0};
    assert_true(fabs(as_ab_cosine(a, b, 3, acc) - 1.0) < 1e-12);
    assert_true(fabs(as_ab_cosine(a, c, 3, acc) + 1.0) < 1e-12);
    /* overall over both pairs: dot 28 - 14 = 14, |x|^2 = 28, |y|^2 = 56 + 14 */
    assert_true(fabs(as_ab_cosine_of(acc) - 14.0 / sqrt(28.0 * 70.0)) < 1e-12);
    assert_true(as_ab_cosine(z, z, 3, NULL) == 1.0);
    assert_true(as_ab_cosine(a, z, 3, NULL) == 0.0);
}

AS_TEST_MAIN(scratch_group_setup, scratch_group_teardown,
             cmocka_unit_test(test_cosine),
             cmocka_unit_test(test_bad_input),
             cmocka_unit_test(test_vit_pair_and_determinism),
             cmocka_unit_test(test_cnn_invert),
             cmocka_unit_test(test_ctrl_c_partial),
             cmocka_unit_test(test_demo_small))

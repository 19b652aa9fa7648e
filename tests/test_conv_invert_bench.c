/* `actstore bench conv`: the JSON has the documented fields (docs/benchmarks.md), with
 * values that make sense, and bad arguments are usage errors. Runs the
 * command built next to the tests (AS_BIN, set by CTest). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <cmocka.h>
#include "support/test_main.h"

static const char *bin(void)
{
    const char *b = getenv("AS_BIN");
    return b && *b ? b : AS_BINARY_DIR "/client/actstore";
}

static int run(const char *args, char *out, size_t outlen)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "'%s' bench conv %s 2>&1", bin(), args);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(out, 1, outlen - 1, p);
    out[n] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_json_fields(void **state)
{
    (void)state;
    char path[] = "/tmp/as_bench_conv_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    char args[256], out[16384];
    snprintf(args, sizeof args, "--quick --reps 1 --json %s", path);
    int rc = run(args, out, sizeof out);
    if (rc != 0)
        fail_msg("exit %d: %s", rc, out);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = 0;
    fclose(f);
    unlink(path);
    cJSON *root = cJSON_Parse(buf);
    assert_non_null(root);
    assert_string_equal(cJSON_GetObjectItem(root, "bench")->valuestring, "conv");
    const cJSON *res = cJSON_GetObjectItem(root, "results");
    assert_true(cJSON_IsArray(res) && cJSON_GetArraySize(res) >= 5);
    static const char *const num[] = {"n", "cin", "cout", "h", "w", "k", "pad", "forward_ms"};
    int applied = 0, fell_back = 0;
    for (int i = 0; i < cJSON_GetArraySize(res); i++) {
        const cJSON *r = cJSON_GetArrayItem(res, i);
        for (size_t k = 0; k < sizeof num / sizeof num[0]; k++)
            assert_true(cJSON_IsNumber(cJSON_GetObjectItem(r, num[k])));
        const cJSON *fb = cJSON_GetObjectItem(r, "fallback");
        assert_true(cJSON_IsBool(fb));
        static const char *const opt[] = {"invert_ms", "ratio", "max_rel_err", "cond"};
        for (size_t k = 0; k < sizeof opt / sizeof opt[0]; k++)   /* present; null on fallback */
            assert_non_null(cJSON_GetObjectItem(r, opt[k]));
        if (cJSON_IsTrue(fb)) {
            fell_back++;
            assert_non_null(strstr(cJSON_GetObjectItem(r, "reason")->valuestring,
                                   "condition number"));
        } else {
            applied++;
            assert_true(cJSON_GetObjectItem(r, "max_rel_err")->valuedouble <= 1e-4);
            assert_true(cJSON_GetObjectItem(r, "cond")->valuedouble <= 1e4);
            assert_true(cJSON_GetObjectItem(r, "ratio")->valuedouble > 0);
            const double sr = cJSON_GetObjectItem(r, "stored_over_raw")->valuedouble;
            assert_true(sr >= 0 && sr < 1);
        }
    }
    assert_true(applied >= 4);
    assert_true(fell_back >= 1);   /* 16->16 at 28x28, N = 8: cond 1.24e4 */
    cJSON_Delete(root);
}

static void test_bad_arguments(void **state)
{
    (void)state;
    char out[4096];
    assert_int_equal(run("--reps 0", out, sizeof out), 2);
    assert_non_null(strstr(out, "--reps"));
    assert_int_equal(run("--cond-max 0.5", out, sizeof out), 2);
    assert_non_null(strstr(out, "--cond-max"));
    assert_int_equal(run("--frobnicate", out, sizeof out), 2);
    assert_non_null(strstr(out, "--frobnicate"));
    assert_int_equal(run("--help", out, sizeof out), 0);
    assert_non_null(strstr(out, "stream_ratio"));
}

AS_TEST_MAIN(NULL, NULL,
             cmocka_unit_test(test_json_fields),
             cmocka_unit_test(test_bad_arguments))

/*
 * The service from the command line, end to end: `actstore train --serve
 * 127.0.0.1:0` prints its dashboard URL, serves while it trains, and
 * `actstore top ADDR --once` prints the run's tables; bad --serve values
 * fail with a message naming the flag. Uses the binary in $AS_BIN (set by
 * ctest). Every wait is bounded.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "client/client.h"
#include "support/test_main.h"
#include "test_service_proc.h"

static const char *bin(void)
{
    const char *b = getenv("AS_BIN");
    if (!b || access(b, X_OK))
        fail_msg("AS_BIN is not set to the actstore binary (run through ctest)");
    return b;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = 0;
    fclose(f);
    return buf;
}

static void test_train_serve_and_top(void **state)
{
    (void)state;
    const char *dir = scratch_dir;
    char log[300], out[300];
    snprintf(log, sizeof log, "%s/train.log", dir);
    snprintf(out, sizeof out, "%s/top.txt", dir);
    char *argv[] = {(char *)bin(), "train", "--model", "vit", "--policy",
                    "linear_input=bf16; default=keep", "--steps", "100000", "--threads", "1",
                    "--serve", "127.0.0.1:0", NULL};
    pid_t pid = proc_spawn(argv, log, NULL, 0);
    assert_true(pid > 0);

    /* the URL line, then a few steps */
    char addr[64] = "";
    for (double t0 = as_clock_wall_s(); as_clock_wall_s() - t0 < 30 && !addr[0];) {
        const char *l = slurp(log);
        const char *u = l ? strstr(l, "dashboard at http://") : NULL;
        if (u)
            sscanf(u + strlen("dashboard at http://"), "%63[0-9.:]", addr);
        int st;
        if (!addr[0] && waitpid(pid, &st, WNOHANG) == pid)
            fail_msg("actstore train exited early:\n%s", l ? l : "");
        usleep(100000);
    }
    if (!addr[0]) {
        proc_stop(pid, 5);
        fail_msg("no dashboard URL from actstore train --serve within 30 s:\n%s", slurp(log));
    }
    /* the run's store is visible: steps advance, a saved tensor is there */
    double step = 0;
    for (double t0 = as_clock_wall_s(); as_clock_wall_s() - t0 < 30 && step < 5;) {
        as_client_response r;
        char err[256];
        if (as_client_get(addr, "/metrics", 2000, &r, err, sizeof err) == 0) {
            const char *m = strstr(r.body, "\nactstore_training_step{job=\"t\",rank=\"0\",host=\"h\",store=\"train\"} ");
            if (m)
                step = atof(m + strlen("\nactstore_training_step{job=\"t\",rank=\"0\",host=\"h\",store=\"train\"} "));
            as_client_response_free(&r);
        }
        usleep(200000);
    }
    char cmd[1600];
    snprintf(cmd, sizeof cmd, "'%s' top %s --once > '%s' 2>&1", bin(), addr, out);
    int rc = system(cmd);
    char *top = strdup(slurp(out) ? slurp(out) : "");

    /* live mode on a pseudo-terminal (script(1), util-linux): it redraws
     * at the tick rate until 'q' arrives on the terminal; 'q' is sent once
     * six frames are on the transcript (script -f flushes each write), or
     * after 20 s, so a loaded host is given time to draw */
    char live[300];
    snprintf(live, sizeof live, "%s/live.txt", dir);
    int live_rc = -1;
    char *live_out = NULL;
    if (system("command -v script >/dev/null 2>&1") == 0) {
        snprintf(cmd, sizeof cmd,
                 "(for i in $(seq 200); do [ \"$(grep -o 'actstore top' '%s' 2>/dev/null | wc -l)\" -ge 6 ] "
                 "&& break; sleep 0.1; done; printf q) | timeout 40 script -qfec \"'%s' top %s --layers 3\" '%s' "
                 "> /dev/null 2>&1", live, bin(), addr, live);
        live_rc = system(cmd);
        live_out = strdup(slurp(live) ? slurp(live) : "");
    } else {
        fail_msg("script(1) not found: install util-linux (bsdutils)");
    }
    proc_stop(pid, 10);
    fprintf(stderr, "train --serve at %s reached step %.0f; top --once:\n%s", addr, step, top);
    assert_true(step >= 5);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(top, "store train"));
    assert_non_null(strstr(top, "linear_input"));
    assert_non_null(strstr(top, "blocks.0.attn"));
    assert_non_null(strstr(top, "bf16"));
    assert_non_null(strstr(top, "MiB"));
    free(top);
    /* several frames were drawn (each starts with the title and a frame
     * counter), and 'q' ended it with status 0 */
    unsigned frames = 0;
    for (const char *p = live_out; (p = strstr(p, "actstore top")); p++)
        frames++;
    fprintf(stderr, "top live: %u frames, exit %d\n", frames, live_rc);
    assert_true(frames >= 5);
    assert_non_null(strstr(live_out, "(q quits)"));
    assert_int_equal(live_rc, 0);
    free(live_out);
}

static void test_bad_serve(void **state)
{
    (void)state;
    const char *dir = scratch_dir;
    char out[300], cmd[1200];
    snprintf(out, sizeof out, "%s/err.txt", dir);
    /* a non-loopback address without --serve-remote */
    snprintf(cmd, sizeof cmd, "'%s' train --model vit --policy default=keep --steps 1 "
                              "--serve 0.0.0.0:0 > '%s' 2>&1", bin(), out);
    int rc = system(cmd);
    char *msg = slurp(out);
    fprintf(stderr, "%s", msg ? msg : "");
    assert_true(WIFEXITED(rc) && WEXITSTATUS(rc) == 1);
    assert_non_null(strstr(msg, "--serve"));
    assert_non_null(strstr(msg, "--serve-remote"));
    /* not an address */
    snprintf(cmd, sizeof cmd, "'%s' train --model vit --policy default=keep --steps 1 "
                              "--serve 'no:such:addr' > '%s' 2>&1", bin(), out);
    rc = system(cmd);
    msg = slurp(out);
    fprintf(stderr, "%s", msg ? msg : "");
    assert_true(WIFEXITED(rc) && WEXITSTATUS(rc) == 1);
    assert_non_null(strstr(msg, "bad address"));
    /* top against nothing: a clear failure, not a hang */
    int port = proc_free_port();
    snprintf(cmd, sizeof cmd, "'%s' top 127.0.0.1:%d --once > '%s' 2>&1", bin(), port, out);
    rc = system(cmd);
    msg = slurp(out);
    fprintf(stderr, "%s", msg ? msg : "");
    assert_true(WIFEXITED(rc) && WEXITSTATUS(rc) == 1);
    assert_non_null(strstr(msg, "actstore top"));
}

/* The scratch directory, and the fleet labels of the spawned commands'
 * services. */
static int setup(void **state)
{
    setenv("ACTSTORE_JOB", "t", 1);
    setenv("ACTSTORE_RANK", "0", 1);
    setenv("ACTSTORE_HOST", "h", 1);
    return scratch_group_setup(state);
}

AS_TEST_MAIN(setup, scratch_group_teardown,
             cmocka_unit_test(test_train_serve_and_top),
             cmocka_unit_test(test_bad_serve))

/*
 * The fleet view: three `actstore train --serve` processes on 127.0.0.1
 * (ranks 0 and 1 labelled by flags, rank 2 by the environment), one real
 * Prometheus scraping all three with docs/prometheus/actstore-rules.yml
 * loaded:
 *   - every sample carries job, rank and host, and the three ranks show;
 *   - sum by (kind) (actstore_kind_raw_peak_bytes{job="fleet"}) equals the
 *     sum of the three ranks' series at the same instant, kind by kind;
 *   - a recording rule of the file evaluates over the three, and the
 *     trainers' own figures (train_loss) arrive from all three;
 *   - `actstore top` with the three addresses prints one line per rank and
 *     the total.
 * Prometheus and promtool come from the Debian package prometheus
 * (AS_SETUP_TEST_TOOLS=1 scripts/setup.sh); a missing tool fails the test.
 * Every wait is bounded; the children are stopped at the end.
 */
#include <ctype.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <cjson/cJSON.h>

#include "client/client.h"
#include "test_service_proc.h"

#define NRANK 3
/* Bound of every wait for the fleet: seconds on a quiet machine, sized
 * for a loaded 2-core CI host. */
#define FLEET_WAIT_S 120

static pid_t trainers[NRANK], prom = -1;
static char taddr[NRANK][64], paddr[64], scratch[256];

/* Prometheus instant query at time t (0: now); the result array (owned by
 * *doc, which the caller deletes) or NULL. */
static const cJSON *query(const char *q, double t, cJSON **doc)
{
    char path[1024];
    size_t n = (size_t)snprintf(path, sizeof path, "/api/v1/query?query=");
    for (const unsigned char *c = (const unsigned char *)q; *c && n + 4 < sizeof path; c++)
        n += (size_t)snprintf(path + n, sizeof path - n,
                              isalnum(*c) || *c == '_' ? "%c" : "%%%02X", *c);
    if (t > 0)
        snprintf(path + n, sizeof path - n, "&time=%.3f", t);
    int status;
    char *body = proc_http_get(paddr, path, &status);
    if (getenv("AS_FLEET_DEBUG"))
        fprintf(stderr, "%s -> %d %.500s\n", path, status, body ? body : "-");
    *doc = body ? cJSON_Parse(body) : NULL;
    free(body);
    const cJSON *res = *doc ? cJSON_GetObjectItem(cJSON_GetObjectItem(*doc, "data"), "result")
                            : NULL;
    return cJSON_IsArray(res) ? res : NULL;
}

static double value_of(const cJSON *sample)
{
    const cJSON *v = cJSON_GetArrayItem(cJSON_GetObjectItem(sample, "value"), 1);
    return cJSON_IsString(v) ? atof(v->valuestring) : -1;
}

static const char *label(const cJSON *sample, const char *name)
{
    const cJSON *v = cJSON_GetObjectItem(cJSON_GetObjectItem(sample, "metric"), name);
    return cJSON_IsString(v) ? v->valuestring : "";
}

/* Scalar of a query whose result has one sample, else -1; *at (may be
 * NULL) gets the evaluation time Prometheus used. */
static double scalar_at(const char *q, double *at)
{
    cJSON *doc;
    const cJSON *res = query(q, 0, &doc);
    const cJSON *one = res && cJSON_GetArraySize(res) == 1 ? cJSON_GetArrayItem(res, 0) : NULL;
    double v = one ? value_of(one) : -1;
    const cJSON *t = one ? cJSON_GetArrayItem(cJSON_GetObjectItem(one, "value"), 0) : NULL;
    if (at)
        *at = cJSON_IsNumber(t) ? t->valuedouble : 0;
    cJSON_Delete(doc);
    return v;
}
static double scalar(const char *q) { return scalar_at(q, NULL); }

static int setup(void **state)
{
    (void)state;
    const char *bin = getenv("AS_BIN");
    if (!bin || access(bin, X_OK)) {
        fprintf(stderr, "AS_BIN (the actstore command) not set by ctest\n");
        return -1;
    }
    if (!scratch_make(scratch, sizeof scratch, "fleet"))
        return -1;
    for (int r = 0; r < NRANK; r++) {
        char log[300], rank[8], host[8];
        snprintf(log, sizeof log, "%s/train%d.log", scratch, r);
        snprintf(taddr[r], sizeof taddr[r], "127.0.0.1:%d", proc_free_port());
        snprintf(rank, sizeof rank, "%d", r);
        snprintf(host, sizeof host, "h%d", r);
        char *argv[24] = {(char *)bin, "train", "--model", "vit", "--preset", "small",
                          "--policy", "softmax=sotk:16:3; default=keep", "--steps", "100000",
                          "--threads", "1", "--quiet", "--serve", taddr[r], "--job", "fleet"};
        int a = 17;
        if (r < 2) {   /* ranks 0, 1 by flags; rank 2 by the environment */
            argv[a++] = "--rank", argv[a++] = rank, argv[a++] = "--host", argv[a++] = host;
        } else {
            setenv("ACTSTORE_RANK", rank, 1);
            setenv("ACTSTORE_HOST", host, 1);
        }
        trainers[r] = proc_spawn(argv, log, NULL, 0);
        unsetenv("ACTSTORE_RANK");
        unsetenv("ACTSTORE_HOST");
        if (trainers[r] <= 0)
            return -1;
    }
    /* every rank serving and a few steps in (bounded) */
    for (int r = 0; r < NRANK; r++) {
        bool ok = false;
        for (double t0 = as_clock_wall_s(); as_clock_wall_s() - t0 < FLEET_WAIT_S && !ok;) {
            int status;
            char *m = proc_http_get(taddr[r], "/metrics", &status);
            const char *s = m ? strstr(m, "\nactstore_training_step{") : NULL;
            s = s ? strchr(s, '}') : NULL;
            ok = s && atof(s + 1) >= 2;
            free(m);
            if (!ok)
                usleep(200000);
        }
        if (!ok) {
            char log[300];
            snprintf(log, sizeof log, "%s/train%d.log", scratch, r);
            proc_dump_log(log, 3000);
            fprintf(stderr, "rank %d at %s not serving within %d s\n", r, taddr[r],
                    FLEET_WAIT_S);
            return -1;
        }
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    if (prom > 0)
        proc_stop(prom, 10);
    for (int r = 0; r < NRANK; r++)
        if (trainers[r] > 0)
            proc_stop(trainers[r], 10);
    scratch_remove(scratch);
    return 0;
}

static void start_prometheus(void)
{
    char bin[512], tool[512], rules[600];
    PROC_REQUIRE("AS_PROMETHEUS", "prometheus", "prometheus", bin);
    PROC_REQUIRE("AS_PROMTOOL", "promtool", "prometheus", tool);
    snprintf(rules, sizeof rules, "%s/docs/prometheus/actstore-rules.yml", AS_SOURCE_DIR);
    char cmd[1500];
    snprintf(cmd, sizeof cmd, "'%s' check rules '%s' >/dev/null", tool, rules);
    assert_int_equal(system(cmd), 0);
    char cfg[1200];
    snprintf(cfg, sizeof cfg,
             "global:\n  scrape_interval: 2s\n  scrape_timeout: 2s\n"
             "  evaluation_interval: 2s\nrule_files: ['%s']\n"
             "scrape_configs:\n  - job_name: actstore-fleet\n    honor_labels: true\n"
             "    static_configs:\n      - targets: ['%s', '%s', '%s']\n",
             rules, taddr[0], taddr[1], taddr[2]);
    prom = proc_prometheus_start(bin, scratch, cfg, paddr, sizeof paddr);
    if (prom <= 0)
        fail_msg("Prometheus did not start (its log is above)");
}

static void test_prometheus_fleet(void **state)
{
    (void)state;
    start_prometheus();
    /* all three scraped, each with its own rank and host (bounded; the
     * three trainers and Prometheus share 2 cores with whatever else runs) */
    double up = -1, ranks = -1, hosts = -1, rec = -1, loss = -1;
    for (double t0 = as_clock_wall_s(); as_clock_wall_s() - t0 < FLEET_WAIT_S; usleep(500000)) {
        up = scalar("sum(up{job=\"actstore-fleet\"})");
        ranks = scalar("count(count by (rank) (actstore_kind_raw_peak_bytes"
                       "{job=\"fleet\",kind=\"softmax_output\"} > 0))");
        hosts = scalar("count(count by (host) (actstore_build_info{job=\"fleet\"}))");
        rec = scalar("job:actstore_saved_raw_peak_bytes:sum{job=\"fleet\"}");
        /* the trainers' own figures (as_store_report_metric) */
        loss = scalar("count(actstore_training_metric{job=\"fleet\",name=\"train_loss\"} > 0)");
        if (up == 3 && ranks == 3 && hosts == 3 && rec > 0 && loss == 3)
            break;
    }
    fprintf(stderr, "fleet: up %g, ranks with softmax saves %g, hosts %g, recording rule %g, "
                    "ranks reporting train_loss %g\n", up, ranks, hosts, rec, loss);
    assert_true(up == 3 && ranks == 3 && hosts == 3);
    assert_true(rec > 0);
    assert_true(loss == 3);

    /* the aggregation equals the sum of the ranks' series at one instant
     * (Prometheus' own clock: the time it evaluated a query at just now)
     * when all three were up (a scrape may time out on a loaded machine) */
    double t = 0, up_at = -1;
    for (double t0 = as_clock_wall_s(); as_clock_wall_s() - t0 < FLEET_WAIT_S; usleep(500000))
        if ((up_at = scalar_at("sum(up{job=\"actstore-fleet\"})", &t)) == 3 && t > 0)
            break;
    assert_true(up_at == 3 && t > 0);
    cJSON *dsum, *dall;
    const cJSON *sum = query("sum by (kind) (actstore_kind_raw_peak_bytes{job=\"fleet\"})", t,
                             &dsum);
    const cJSON *all = query("actstore_kind_raw_peak_bytes{job=\"fleet\"}", t, &dall);
    assert_non_null(sum);
    assert_non_null(all);
    int kinds = 0;
    const cJSON *s, *e;
    cJSON_ArrayForEach(s, sum) {
        double tot = 0;
        int n = 0;
        cJSON_ArrayForEach(e, all)
            if (!strcmp(label(e, "kind"), label(s, "kind"))) {
                tot += value_of(e);
                n++;
                assert_true(label(e, "rank")[0] && label(e, "host")[0]);
            }
        fprintf(stderr, "  kind %-18s sum %12.0f over %d series\n", label(s, "kind"),
                value_of(s), n);
        assert_true(value_of(s) == tot);
        if (!strcmp(label(s, "kind"), "softmax_output")) {
            assert_int_equal(n, NRANK);
            assert_true(tot > 0);
        }
        kinds++;
    }
    assert_true(kinds >= 2);
    bool seen[NRANK] = {0};
    cJSON_ArrayForEach(e, all) {
        int r = atoi(label(e, "rank"));
        char host[8];
        snprintf(host, sizeof host, "h%d", r);
        assert_true(r >= 0 && r < NRANK);
        assert_string_equal(label(e, "host"), host);
        seen[r] = true;
    }
    assert_true(seen[0] && seen[1] && seen[2]);
    cJSON_Delete(dsum);
    cJSON_Delete(dall);
}

static void test_top_fleet(void **state)
{
    (void)state;
    char out[300], cmd[1200];
    snprintf(out, sizeof out, "%s/top.txt", scratch);
    snprintf(cmd, sizeof cmd, "'%s' top %s %s %s --once > '%s' 2>&1", getenv("AS_BIN"),
             taddr[0], taddr[1], taddr[2], out);
    assert_int_equal(system(cmd), 0);
    FILE *f = fopen(out, "r");
    assert_non_null(f);
    char line[512];
    int ranks = 0, total = 0;
    while (fgets(line, sizeof line, f)) {
        char job[32], rank[16], host[32];
        if (sscanf(line, "%31s %15s %31s", job, rank, host) == 3 && !strcmp(job, "fleet")) {
            char want[24];
            snprintf(want, sizeof want, "h%s", rank);
            assert_string_equal(host, want);
            ranks++;
        }
        total += !strncmp(line, "total", 5) && strstr(line, "3/3 up");
    }
    fclose(f);
    assert_int_equal(ranks, NRANK);
    assert_int_equal(total, 1);
    /* a rank that does not answer: shown, and the exit status says so */
    snprintf(cmd, sizeof cmd, "'%s' top %s 127.0.0.1:%d --once > '%s' 2>&1", getenv("AS_BIN"),
             taddr[0], proc_free_port(), out);
    int rc = system(cmd);
    assert_true(WIFEXITED(rc) && WEXITSTATUS(rc) == 1);
}

int main(void)
{
    unsetenv("ACTSTORE_JOB");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prometheus_fleet),
        cmocka_unit_test(test_top_fleet),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

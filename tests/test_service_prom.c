/*
 * Service + Prometheus, on a real workload (two stores driven like a
 * training loop, tests/test_service_work.h):
 *   - promtool check metrics passes on the live /metrics output;
 *   - a real Prometheus server on loopback, scraping the service every
 *     second, returns our samples through its HTTP API.
 * Both tools come from the Debian package prometheus (scripts/setup.sh
 * installs it with AS_SETUP_TEST_TOOLS=1, as scripts/test.sh does). A
 * missing tool FAILS the test with a message saying so. Override paths
 * with AS_PROMTOOL / AS_PROMETHEUS. Every wait is bounded.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <cjson/cJSON.h>

#include "client/client.h"
#include "test_service_proc.h"
#include "test_service_util.h"
#include "test_service_work.h"

static work_arm arms[2];
static as_service *svc;
static char svc_addr[64];
static char scratch[256];

static int setup(void **state)
{
    (void)state;
    if (work_start(&arms[0], "A", "default=keep") ||
        work_start(&arms[1], "B", "linear_input=fp16; default=q8")) {
        fprintf(stderr, "workload: %s %s\n", arms[0].err, arms[1].err);
        return -1;
    }
    as_service_source src[2] = {{.store = arms[0].store}, {.store = arms[1].store}};
    char err[256];
    if (as_service_start(NULL, src, 2, &svc, err, sizeof err)) {
        fprintf(stderr, "service: %s\n", err);
        return -1;
    }
    snprintf(svc_addr, sizeof svc_addr, "127.0.0.1:%d", as_service_port(svc));
    if (!scratch_make(scratch, sizeof scratch, "prom")) {
        perror("mkdtemp");
        return -1;
    }
    /* let a few steps run so every family has samples */
    for (int i = 0; i < 100 && atomic_load(&arms[1].steps) < 3; i++)
        usleep(50000);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    as_service_stop(svc);
    work_stop(&arms[0]);
    work_stop(&arms[1]);
    if (arms[0].rc || arms[1].rc)
        fprintf(stderr, "workload errors: %s / %s\n", arms[0].err, arms[1].err);
    scratch_remove(scratch);
    return arms[0].rc || arms[1].rc ? -1 : 0;
}

static void test_promtool_live(void **state)
{
    (void)state;
    char tool[512];
    PROC_REQUIRE("AS_PROMTOOL", "promtool", "prometheus", tool);
    int status;
    char *m = proc_http_get(svc_addr, "/metrics", &status);
    assert_int_equal(status, 200);
    /* real figures: both stores, kinds and layers of the workload */
    assert_non_null(strstr(m, "actstore_saved_raw_bytes{" FLEET "store=\"B\"}"));
    assert_non_null(strstr(m, "actstore_kind_stored_peak_bytes{" FLEET "store=\"A\",kind=\"linear_input\"}"));
    assert_non_null(strstr(m, "actstore_layer_raw_peak_bytes{" FLEET "store=\"B\",layer=\"blocks.5.mlp\",policy="));
    assert_non_null(strstr(m, "actstore_policy_stored_peak_bytes{" FLEET "store=\"B\",policy=\"fp16\"}"));
    int rc = proc_promtool_check(tool, m, scratch);
    free(m);
    assert_int_equal(rc, 0);
}

/* Query Prometheus' HTTP API; returns the first result's value or -1. */
static double prom_query(const char *addr, const char *query_enc, char *why, size_t whylen)
{
    char path[600];
    snprintf(path, sizeof path, "/api/v1/query?query=%s", query_enc);
    int status;
    char *body = proc_http_get(addr, path, &status);
    double v = -1;
    if (!body) {
        snprintf(why, whylen, "no answer from Prometheus");
        return -1;
    }
    cJSON *j = cJSON_Parse(body);
    const cJSON *res = j ? cJSON_GetObjectItem(cJSON_GetObjectItem(j, "data"), "result") : NULL;
    const cJSON *first = cJSON_GetArrayItem(res, 0);
    const cJSON *val = first ? cJSON_GetArrayItem(cJSON_GetObjectItem(first, "value"), 1) : NULL;
    if (cJSON_IsString(val))
        v = atof(val->valuestring);
    else
        snprintf(why, whylen, "HTTP %d: %.300s", status, body);
    cJSON_Delete(j);
    free(body);
    return v;
}

static void test_prometheus_scrapes(void **state)
{
    (void)state;
    char bin[512];
    PROC_REQUIRE("AS_PROMETHEUS", "prometheus", "prometheus", bin);
    char cfg[300], paddr[64];
    snprintf(cfg, sizeof cfg,
             "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n"
             "scrape_configs:\n  - job_name: actstore\n    static_configs:\n"
             "      - targets: ['%s']\n", svc_addr);
    pid_t pid = proc_prometheus_start(bin, scratch, cfg, paddr, sizeof paddr);
    if (pid <= 0)
        fail_msg("Prometheus did not start (its log is above)");

    /* wait (bounded) for a scrape that carries our samples */
    char why[512] = "";
    double live = -1, up = -1, ratio = -1, peak = -1;
    double t0 = as_clock_wall_s();
    while (as_clock_wall_s() - t0 < 40) {
        up = prom_query(paddr, "up%7Bjob%3D%22actstore%22%7D", why, sizeof why);
        live = prom_query(paddr, "actstore_live_bytes%7Bstore%3D%22A%22%7D", why, sizeof why);
        if (up == 1 && live > 0)
            break;
        usleep(300000);
    }
    double waited = as_clock_wall_s() - t0;
    /* a derived figure from two series: B's saved raw/stored peak ratio */
    ratio = prom_query(paddr,
                       "actstore_saved_raw_peak_bytes%7Bstore%3D%22B%22%7D%20%2F%20"
                       "actstore_saved_stored_peak_bytes%7Bstore%3D%22B%22%7D", why, sizeof why);
    peak = prom_query(paddr, "max_over_time(actstore_peak_since_scrape_bytes%7Bstore%3D%22B%22%7D%5B1m%5D)",
                      why, sizeof why);
    char *targets = NULL;
    if (up != 1 || live <= 0) {
        int status;
        targets = proc_http_get(paddr, "/api/v1/targets", &status);
    }
    int st = proc_stop(pid, 10);
    fprintf(stderr, "prometheus: first sample after %.1f s; up=%g live_bytes{A}=%g "
                    "saved raw/stored peak {B}=%.2f peak_since_scrape{B}=%g (exit status %d)\n",
            waited, up, live, ratio, peak, st);
    if (up != 1 || live <= 0) {
        fprintf(stderr, "last answer: %s\ntargets: %.2000s\n", why, targets ? targets : "-");
        char log[300];
        snprintf(log, sizeof log, "%s/prometheus.log", scratch);
        proc_dump_log(log, 4000);
    }
    free(targets);
    assert_true(up == 1);
    assert_true(live > 0);
    /* B stores fp16 / q8: the ratio is between 2 and 4 (q8 groups carry scales) */
    assert_true(ratio > 1.8 && ratio <= 4.0);
    assert_true(peak > 0);
}

int main(void)
{
    fleet_env();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_promtool_live),
        cmocka_unit_test(test_prometheus_scrapes),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

/* Service: endpoints, HTTP validation and limits, lifetime (fake provider). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <cjson/cJSON.h>

#include "test_service_proc.h"
#include "test_service_util.h"

static fake_src srcs[2] = {{.nlayers = 100, .name_len = 0}, {.nlayers = 30, .name_len = 0}};

static void test_start_stop(void **state)
{
    (void)state;
    as_service *svc = fake_start(NULL, srcs, 2);
    assert_true(as_service_port(svc) > 0);
    assert_non_null(strstr(as_service_url(svc), "http://127.0.0.1:"));
    assert_int_equal(as__service_stop(svc), 0);
}

static void test_bad_config(void **state)
{
    (void)state;
    as__svc_provider prov = {fake_take, fake_release, srcs};
    as_service *svc = NULL;
    char err[256] = "";
    const char *labels[] = {"A"};
    as_service_config cfg = {.addr = "0.0.0.0:0"};
    assert_int_equal(as__service_start_with(&cfg, labels, 1, &prov, &svc, err, sizeof err), AS_EINVAL);
    assert_non_null(strstr(err, "allow_remote"));
    assert_null(svc);
    cfg.addr = "127.0.0.1:99999";
    assert_int_equal(as__service_start_with(&cfg, labels, 1, &prov, &svc, err, sizeof err), AS_EINVAL);
    cfg.addr = "not an address:80";
    assert_int_equal(as__service_start_with(&cfg, labels, 1, &prov, &svc, err, sizeof err), AS_EINVAL);
    cfg.addr = NULL;
    cfg.tick_hz = 1000;
    assert_int_equal(as__service_start_with(&cfg, labels, 1, &prov, &svc, err, sizeof err), AS_EINVAL);
    assert_int_equal(as__service_start_with(NULL, labels, 0, &prov, &svc, err, sizeof err), AS_EINVAL);
    /* the public entry rejects a source with neither store nor arena */
    as_service_source s = {.label = "x"};
    assert_int_equal(as_service_start(NULL, &s, 1, &svc, err, sizeof err), AS_EINVAL);
    /* allow_remote prints a warning before binding. 192.0.2.1 (TEST-NET-1,
     * RFC 5737) is on no interface, so the bind fails and nothing is ever
     * exposed; the warning must have been printed all the same. */
    {
        char wpath[] = "/tmp/as_warn_XXXXXX";
        int wfd = mkstemp(wpath);
        assert_true(wfd >= 0);
        fflush(stderr);
        int saved = dup(2);
        dup2(wfd, 2);
        as_service_config rc_cfg = {.addr = "192.0.2.1:0", .allow_remote = true};
        as_service *x = NULL;
        int rc = as__service_start_with(&rc_cfg, labels, 1, &prov, &x, err, sizeof err);
        fflush(stderr);
        dup2(saved, 2);
        close(saved);
        char wbuf[512] = "";
        lseek(wfd, 0, SEEK_SET);
        ssize_t wn = read(wfd, wbuf, sizeof wbuf - 1);
        wbuf[wn > 0 ? wn : 0] = 0;
        close(wfd);
        unlink(wpath);
        if (rc == 0)
            as__service_stop(x);
        assert_int_equal(rc, AS_EIO);
        assert_non_null(strstr(err, "192.0.2.1"));
        assert_non_null(strstr(wbuf, "WARNING"));
        assert_non_null(strstr(wbuf, "non-loopback"));
    }
    /* a v4-mapped loopback address is loopback: no allow_remote needed,
     * and IPv4 clients reach it */
    cfg.addr = "[::ffff:127.0.0.1]:0";
    cfg.tick_hz = 0;
    as_service *m = NULL;
    int s6 = socket(AF_INET6, SOCK_STREAM, 0);
    if (s6 < 0) {
        fprintf(stderr, "note: this machine has no IPv6 sockets (%s): the v4-mapped "
                        "loopback bind is not checked\n", strerror(errno));
    } else {
        close(s6);
        assert_int_equal(as__service_start_with(&cfg, labels, 1, &prov, &m, err, sizeof err), 0);
        char *mr = tget(as_service_port(m), "/metrics", NULL);
        assert_int_equal(tstatus(mr), 200);
        free(mr);
        assert_int_equal(as__service_stop(m), 0);
    }
    /* the port is taken: AS_EIO naming the address */
    as_service *a = fake_start(NULL, srcs, 1);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", as_service_port(a));
    cfg.addr = addr;
    cfg.tick_hz = 0;
    assert_int_equal(as__service_start_with(&cfg, labels, 1, &prov, &svc, err, sizeof err), AS_EIO);
    assert_non_null(strstr(err, "127.0.0.1"));
    assert_int_equal(as__service_stop(a), 0);
}

static cJSON *get_json(int port, const char *path)
{
    char *r = tget(port, path, NULL);
    assert_non_null(r);
    assert_int_equal(tstatus(r), 200);
    assert_non_null(strstr(r, "Content-Type: application/json"));
    cJSON *j = cJSON_Parse(tbody(r));
    free(r);
    assert_non_null(j);
    return j;
}

/* /api/v1/plan from real stores: one planning with auto within a budget,
 * one without a planner. */
static void test_plan_endpoint(void **state)
{
    (void)state;
    as_store *st[2] = {NULL, NULL};
    char err[256] = "";
    const char *specs[2] = {"default=auto", "default=keep"};
    for (int i = 0; i < 2; i++) {
        as_store_config sc = {.policy = specs[i], .label = i ? "keep" : "auto"};
        assert_int_equal(as_store_create(&sc, &st[i], err, sizeof err), 0);
    }
    float *x = calloc(4096, sizeof *x);
    assert_non_null(x);
    for (int i = 0; i < 4096; i++)
        x[i] = (float)((i * 37) % 101) / 50.0f - 1.0f;
    static const char *const layers[3] = {"fc1", "fc2", "gelu"};
    for (uint64_t k = 0; k < 2; k++)
        for (int i = 0; i < 2; i++) {
            as_store_step_begin(st[i], k);
            for (int l = 0; l < 3; l++) {
                as_save_info info = {.kind = l == 2 ? AS_KIND_ACTIVATION_INPUT
                                                    : AS_KIND_LINEAR_INPUT,
                                     .layer = layers[l]};
                as_tensor t = {.data = x, .dtype = AS_F32, .ndim = 2, .shape = {64, 64}};
                as_handle h;
                assert_int_equal(as_store_save(st[i], &info, &t, &h), 0);
            }
            as_store_step_end(st[i]);
        }
    assert_int_equal(as_store_set_budget(st[0], 3 * 4096 * 4 / 6), 0);
    as_service_source src[2] = {{.label = "auto", .store = st[0]},
                                {.label = "keep", .store = st[1]}};
    as_service *svc = NULL;
    assert_int_equal(as_service_start(NULL, src, 2, &svc, err, sizeof err), 0);
    int port = as_service_port(svc);
    cJSON *j = NULL;
    for (int tries = 0; tries < 50; tries++) {   /* the first tick fills the views */
        j = get_json(port, "/api/v1/plan");
        cJSON *p0 = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "stores"), 0),
                                        "plan");
        if (cJSON_IsObject(p0))
            break;
        cJSON_Delete(j);
        j = NULL;
        usleep(20000);
    }
    assert_non_null(j);
    assert_non_null(cJSON_GetObjectItem(j, "version"));
    cJSON *stores = cJSON_GetObjectItem(j, "stores");
    assert_int_equal(cJSON_GetArraySize(stores), 2);
    cJSON *a = cJSON_GetArrayItem(stores, 0);
    assert_string_equal(cJSON_GetObjectItem(a, "label")->valuestring, "auto");
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(a, "available")));
    cJSON *pa = cJSON_GetObjectItem(a, "plan");
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(pa, "active")));
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(pa, "feasible")));
    assert_int_equal(cJSON_GetObjectItem(pa, "budget_bytes")->valuedouble, 3 * 4096 * 4 / 6);
    assert_int_equal(cJSON_GetObjectItem(pa, "keep_bytes")->valuedouble, 3 * 4096 * 4);
    assert_true(cJSON_GetObjectItem(pa, "planned_bytes")->valuedouble <= 3 * 4096 * 4 / 6);
    cJSON *ls = cJSON_GetObjectItem(pa, "layers");
    assert_int_equal(cJSON_GetArraySize(ls), 3);
    for (int i = 0; i < 3; i++) {
        cJSON *e = cJSON_GetArrayItem(ls, i);
        assert_string_equal(cJSON_GetObjectItem(e, "layer")->valuestring, layers[i]);
        assert_string_equal(cJSON_GetObjectItem(e, "kind")->valuestring,
                            i == 2 ? "activation_input" : "linear_input");
        assert_true(cJSON_IsString(cJSON_GetObjectItem(e, "policy")));
        assert_int_equal(cJSON_GetObjectItem(e, "raw_bytes")->valuedouble, 4096 * 4);
        assert_true(cJSON_GetObjectItem(e, "stored_bytes")->valuedouble <= 4096 * 4);
        double c = cJSON_GetObjectItem(e, "cosine")->valuedouble;
        assert_true(c > 0.5 && c <= 1.0 + 1e-9);
        assert_true(cJSON_IsNumber(cJSON_GetObjectItem(e, "rel_error")));
        assert_true(cJSON_IsNumber(cJSON_GetObjectItem(e, "time_ns")));
    }
    cJSON *pk = cJSON_GetObjectItem(cJSON_GetArrayItem(stores, 1), "plan");
    assert_false(cJSON_IsTrue(cJSON_GetObjectItem(pk, "active")));
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(pk, "layers")), 0);
    cJSON_Delete(j);
    char *r = tget(port, "/api/v1/plan", NULL);   /* HEAD-able like the others */
    assert_int_equal(tstatus(r), 200);
    free(r);
    assert_int_equal(as__service_stop(svc), 0);
    for (int i = 0; i < 2; i++)
        as_store_destroy(st[i]);
    free(x);
}

static void test_endpoints(void **state)
{
    (void)state;
    as_service *svc = fake_start(NULL, srcs, 2);
    int port = as_service_port(svc);

    char *r = tget(port, "/", NULL);
    assert_int_equal(tstatus(r), 200);
    assert_non_null(strstr(r, "text/html"));
    assert_non_null(strstr(r, "uplot.min.js"));
    free(r);
    size_t len = 0;
    r = tget(port, "/uplot.min.js", &len);
    assert_int_equal(tstatus(r), 200);
    assert_true(len > 20000);
    free(r);

    cJSON *j = get_json(port, "/api/v1/snapshot");
    cJSON *stores = cJSON_GetObjectItem(j, "stores");
    assert_int_equal(cJSON_GetArraySize(stores), 2);
    cJSON *a = cJSON_GetArrayItem(stores, 0);
    assert_string_equal(cJSON_GetObjectItem(a, "label")->valuestring, "A");
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(a, "layers")), 100);
    cJSON *saved = cJSON_GetObjectItem(a, "saved");
    assert_true(cJSON_GetObjectItem(saved, "raw_bytes")->valuedouble > 0);
    assert_true(cJSON_GetObjectItem(saved, "ratio")->valuedouble > 3.9);
    assert_non_null(cJSON_GetObjectItem(cJSON_GetObjectItem(a, "arena"), "resident_bytes"));
    /* layers come largest first */
    cJSON *l0 = cJSON_GetArrayItem(cJSON_GetObjectItem(a, "layers"), 0);
    assert_string_equal(cJSON_GetObjectItem(l0, "name")->valuestring, "blocks.99.attn");
    cJSON_Delete(j);

    usleep(350000);
    j = get_json(port, "/api/v1/timeline");
    int npts = cJSON_GetArraySize(cJSON_GetObjectItem(j, "t"));
    assert_true(npts >= 2);
    cJSON *s0 = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "stores"), 0);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(s0, "live")), npts);
    assert_true(cJSON_GetArraySize(cJSON_GetObjectItem(j, "marks")) >= 1);
    double seq = cJSON_GetObjectItem(j, "seq")->valuedouble;
    cJSON_Delete(j);
    char path[64];
    snprintf(path, sizeof path, "/api/v1/timeline?since=%.0f", seq);
    j = get_json(port, path);
    assert_true(cJSON_GetArraySize(cJSON_GetObjectItem(j, "t")) <= 1);
    cJSON_Delete(j);
    r = tget(port, "/api/v1/timeline?since=abc", NULL);
    assert_int_equal(tstatus(r), 400);
    free(r);

    j = get_json(port, "/api/v1/trace");
    cJSON *ev = cJSON_GetObjectItem(j, "traceEvents");
    assert_true(cJSON_GetArraySize(ev) > 4);
    bool counter = false, instant = false;
    cJSON *e;
    cJSON_ArrayForEach(e, ev) {
        const char *ph = cJSON_GetObjectItem(e, "ph")->valuestring;
        counter |= !strcmp(ph, "C");
        instant |= !strcmp(ph, "i");
    }
    assert_true(counter && instant);
    cJSON_Delete(j);

    r = tget(port, "/metrics", NULL);
    assert_int_equal(tstatus(r), 200);
    assert_non_null(strstr(r, "text/plain; version=0.0.4"));
    const char *m = tbody(r);
    assert_non_null(strstr(m, "# TYPE actstore_live_bytes gauge\n"));
    assert_non_null(strstr(m, "\nactstore_build_info{" FLEET "version=\"" AS_VERSION_STRING "\"} 1\n"));
    assert_non_null(strstr(m, "actstore_live_bytes{" FLEET "store=\"A\"} "));
    assert_non_null(strstr(m, "actstore_kind_stored_bytes{" FLEET "store=\"B\",kind=\"softmax_output\"} "));
    assert_non_null(strstr(m, "actstore_peak_since_scrape_bytes{" FLEET "store=\"A\"} "));
    assert_non_null(strstr(m, "actstore_policy_raw_bytes{" FLEET "store=\"A\",policy=\"soa\"} "));
    /* per-layer series capped to the top 20 (largest first) */
    size_t nlayer = 0;
    for (const char *p = m; (p = strstr(p, "\nactstore_layer_raw_bytes{" FLEET "store=\"A\"")); p++)
        nlayer++;
    assert_int_equal(nlayer, 20);
    assert_non_null(strstr(m, "layer=\"blocks.99.attn\""));
    assert_null(strstr(m, "layer=\"blocks.5.attn\""));
    if (getenv("AS_PROMTOOL_OUT")) {
        FILE *f = fopen(getenv("AS_PROMTOOL_OUT"), "w");
        if (f) {
            fputs(m, f);
            fclose(f);
        }
    }
    free(r);
    assert_int_equal(as__service_stop(svc), 0);
}

/* proc_promtool_check in a scratch directory of its own. */
static int promtool_check(const char *tool, const char *text)
{
    char dir[256];
    assert_non_null(scratch_make(dir, sizeof dir, "metrics"));
    int rc = proc_promtool_check(tool, text, dir);
    scratch_remove(dir);
    return rc;
}

/* promtool check metrics on a live /metrics (fails without promtool). */
static void test_promtool(void **state)
{
    (void)state;
    char tool[512];
    PROC_REQUIRE("AS_PROMTOOL", "promtool", "prometheus", tool);
    as_service *svc = fake_start(NULL, srcs, 2);
    char *r = tget(as_service_port(svc), "/metrics", NULL);
    assert_int_equal(tstatus(r), 200);
    int rc = promtool_check(tool, tbody(r));
    free(r);
    assert_int_equal(rc, 0);
    assert_int_equal(as__service_stop(svc), 0);
}

static void expect_status(int port, const char *raw, int status, bool closes)
{
    int fd = tconnect(port);
    assert_true(fd >= 0);
    assert_int_equal(tsend(fd, raw, strlen(raw)), 0);
    char *r = tread_response(fd, !strncmp(raw, "HEAD", 4), NULL);
    if (tstatus(r) != status)
        fprintf(stderr, "request %.40s...: got %s\n", raw, r ? r : "(nothing)");
    assert_int_equal(tstatus(r), status);
    if (closes) {
        assert_non_null(strstr(r, "Connection: close"));
        assert_true(tclosed(fd));
    }
    free(r);
    close(fd);
}

static void test_hostile(void **state)
{
    (void)state;
    as_service_config cfg = {.max_header_bytes = 1024};
    as_service *svc = fake_start(&cfg, srcs, 1);
    int port = as_service_port(svc);
    expect_status(port, "POST /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 405, true);
    expect_status(port, "DELETE / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 405, true);
    expect_status(port, "POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", 413, true);
    expect_status(port, "GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", 413, true);
    expect_status(port, "GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 400, true);
    expect_status(port, "GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 411, true);
    expect_status(port, "GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\nabc", 400, true);
    expect_status(port, "GARBAGE\r\n\r\n", 400, true);
    expect_status(port, "GET / HTTP/1.1\r\nBad Header\r\n\r\n", 400, true);
    expect_status(port, "\x01\x02\x03\xff\r\n\r\n", 400, true);
    expect_status(port, "GET /nope HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 404, false);
    /* DNS rebinding: only loopback names as Host on a loopback bind */
    expect_status(port, "GET /metrics HTTP/1.1\r\nHost: evil.example\r\n\r\n", 403, true);
    expect_status(port, "GET /metrics HTTP/1.1\r\nHost: evil.example:8080\r\n\r\n", 403, true);
    expect_status(port, "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1.evil.example\r\n\r\n", 403, true);
    expect_status(port, "GET /metrics HTTP/1.1\r\nHost: 10.0.0.1\r\n\r\n", 403, true);
    /* a loopback-looking prefix longer than the Host buffer, a name an
     * attacker can own; a second Host header */
    char longhost[512];
    snprintf(longhost, sizeof longhost,
             "GET /api/v1/snapshot HTTP/1.1\r\nHost: 127.0.0.1%0200d.evil.example\r\n\r\n", 1);
    expect_status(port, longhost, 403, true);
    snprintf(longhost, sizeof longhost,
             "GET /api/v1/snapshot HTTP/1.1\r\nHost: 127.0.0.1%070d1.evil.example\r\n\r\n", 1);
    expect_status(port, longhost, 403, true);
    expect_status(port, "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\n\r\n", 403, true);
    expect_status(port, "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: 127.0.0.1\r\n\r\n", 403, true);
    expect_status(port, "GET /metrics HTTP/1.1\r\nHost: [::2]:80\r\n\r\n", 403, true);
    expect_status(port, "GET /metrics HTTP/1.1\r\nHost: localhost:9464\r\n\r\n", 200, false);
    expect_status(port, "GET /metrics HTTP/1.1\r\nHost: LOCALHOST\r\n\r\n", 200, false);
    expect_status(port, "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:1\r\n\r\n", 200, false);
    expect_status(port, "GET /metrics HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", 200, false);
    expect_status(port, "GET /metrics HTTP/1.1\r\nHost: [::ffff:7f00:1]:8080\r\n\r\n", 200, false);
    expect_status(port, "GET /metrics HTTP/1.1\r\nHost: [0:0::1]\r\n\r\n", 200, false);
    expect_status(port, "GET /metrics HTTP/1.1\r\nHost: [::ffff:10.0.0.1]\r\n\r\n", 403, true);
    expect_status(port, "GET /metrics HTTP/1.1\r\nHost: [::1\r\n\r\n", 403, true);
    expect_status(port, "GET /metrics HTTP/1.0\r\n\r\n", 200, false);   /* no Host at all */
    /* Upgrade is not offered: one plain answer, then close, nothing after */
    {
        int ufd = tconnect(port);
        static const char up[] = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                 "Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
        assert_int_equal(tsend(ufd, up, sizeof up - 1), 0);
        static char all[1 << 17];
        size_t got = 0;
        for (ssize_t k; got < sizeof all - 1 && (k = recv(ufd, all + got, sizeof all - 1 - got, 0)) > 0;)
            got += (size_t)k;
        all[got] = 0;
        assert_int_equal(tstatus(all), 200);
        assert_non_null(strstr(all, "Connection: close"));
        assert_null(strstr(all + 12, "HTTP/1.1 "));   /* no second response */
        close(ufd);
    }
    char big[4096];
    snprintf(big, sizeof big, "GET / HTTP/1.1\r\nX-Big: %03000d\r\n\r\n", 7);
    expect_status(port, big, 431, true);
    char *longurl = malloc(3000);
    memset(longurl, 'a', 2999);
    longurl[2999] = 0;
    memcpy(longurl, "GET /", 5);
    char *req = malloc(4000);
    snprintf(req, 4000, "%s HTTP/1.1\r\n\r\n", longurl);
    as_service_config cfg2 = {.max_header_bytes = 65536};
    /* a provider of its own: the first service's thread takes from srcs */
    static fake_src srcs2[1] = {{.nlayers = 10}};
    as_service *svc2 = fake_start(&cfg2, srcs2, 1);
    expect_status(as_service_port(svc2), req, 414, true);
    assert_int_equal(as__service_stop(svc2), 0);
    free(longurl);
    free(req);

    /* HEAD: headers only, with the body's length */
    int fd = tconnect(port);
    const char *head = "HEAD /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    assert_int_equal(tsend(fd, head, strlen(head)), 0);
    size_t len;
    char *r = tread_response(fd, true, &len);
    assert_int_equal(tstatus(r), 200);
    assert_string_equal(tbody(r), "");
    free(r);
    /* keep-alive: a second (pipelined) pair on the same connection */
    const char *two = "GET /api/v1/snapshot HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                      "GET /nope HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    assert_int_equal(tsend(fd, two, strlen(two)), 0);
    /* both responses, in order, on the same connection */
    static char acc[1 << 17];
    acc[0] = 0;
    size_t n = 0;
    while (n < sizeof acc - 1 && !strstr(acc, "HTTP/1.1 404")) {
        ssize_t got = recv(fd, acc + n, sizeof acc - 1 - n, 0);
        if (got <= 0)
            break;
        n += (size_t)got;
        acc[n] = 0;
    }
    assert_int_equal(tstatus(acc), 200);
    char *second = strstr(acc, "HTTP/1.1 404");
    assert_non_null(second);
    assert_true(second > acc);
    close(fd);

    /* a client that sends half a request and vanishes; one that resets */
    fd = tconnect(port);
    tsend(fd, "GET / HT", 8);
    close(fd);
    fd = tconnect(port);
    struct linger lg = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    tsend(fd, "GET /metrics HTTP/1.1\r\n", 23);
    close(fd);

    /* still serving */
    tassert_serving(port);
    as_service_stats st;
    as_service_get_stats(svc, &st);
    assert_true(st.responses_4xx >= 11);
    assert_int_equal(as__service_stop(svc), 0);
}

static void test_connection_limit(void **state)
{
    (void)state;
    as_service_config cfg = {.max_connections = 4};
    as_service *svc = fake_start(&cfg, srcs, 1);
    int port = as_service_port(svc);
    int fds[4];
    for (int i = 0; i < 4; i++) {
        fds[i] = tconnect(port);
        assert_true(fds[i] >= 0);
        usleep(20000);
    }
    usleep(100000);
    /* connections held without requests do not lock a scrape out: the
     * longest idle one gives way */
    tassert_serving(port);
    assert_true(tclosed(fds[0]));
    for (int i = 0; i < 4; i++)
        close(fds[i]);
    usleep(100000);
    /* event streams are not given up: with every slot streaming, 503 */
    static const char ev[] = "GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    for (int i = 0; i < 4; i++) {
        fds[i] = tconnect(port);
        assert_int_equal(tsend(fds[i], ev, sizeof ev - 1), 0);
        char buf[256];
        assert_true(recv(fds[i], buf, sizeof buf, 0) > 0);
    }
    expect_status(port, "GET / HTTP/1.1\r\n\r\n", 503, true);
    for (int i = 0; i < 4; i++)
        close(fds[i]);
    usleep(100000);
    tassert_serving(port);
    as_service_stats st;
    as_service_get_stats(svc, &st);
    assert_true(st.connections_rejected >= 2);
    assert_int_equal(as__service_stop(svc), 0);
}

/* Names with quotes, backslashes, newlines, control and invalid UTF-8
 * bytes come out as valid JSON and valid Prometheus text. */
static const char weird_name[] = "we\"ird\\la\nyer\x01\xff\xc3(\xc3\xa9\xe2\x82";

static int weird_take(void *ud, size_t i, uint64_t since, as__svc_view *v)
{
    int rc = fake_take(ud, i, since, v);
    if (!rc && v->store.nlayers) {
        free((char *)v->store.layers[v->store.nlayers - 1].name);   /* the largest */
        v->store.layers[v->store.nlayers - 1].name = strdup(weird_name);
    }
    return rc;
}

static void test_names_escaped(void **state)
{
    (void)state;
    fake_src src[1] = {{.nlayers = 5}};
    as__svc_provider prov = {weird_take, fake_release, src};
    const char *labels[] = {"arm \"A\"\\1\xfe"};
    as_service *svc = NULL;
    char err[256];
    assert_int_equal(as__service_start_with(NULL, labels, 1, &prov, &svc, err, sizeof err), 0);
    int port = as_service_port(svc);
    cJSON *j = get_json(port, "/api/v1/snapshot");
    cJSON *st = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "stores"), 0);
    assert_string_equal(cJSON_GetObjectItem(st, "label")->valuestring, "arm \"A\"\\1\xef\xbf\xbd");
    cJSON *l0 = cJSON_GetArrayItem(cJSON_GetObjectItem(st, "layers"), 0);
    assert_string_equal(cJSON_GetObjectItem(l0, "name")->valuestring,
                        "we\"ird\\la\nyer\x01\xef\xbf\xbd\xef\xbf\xbd(\xc3\xa9\xef\xbf\xbd\xef\xbf\xbd");
    cJSON_Delete(j);
    j = get_json(port, "/api/v1/timeline");
    cJSON_Delete(j);
    j = get_json(port, "/api/v1/trace");
    cJSON_Delete(j);
    char *r = tget(port, "/metrics", NULL);
    assert_int_equal(tstatus(r), 200);
    const char *m = tbody(r);
    assert_non_null(strstr(m, "{" FLEET "store=\"arm \\\"A\\\"\\\\1\xef\xbf\xbd\",layer=\"we\\\"ird\\\\la\\nyer"));
    char tool[512];
    PROC_REQUIRE("AS_PROMTOOL", "promtool", "prometheus", tool);
    int rc = promtool_check(tool, m);
    free(r);
    assert_int_equal(rc, 0);
    assert_int_equal(as__service_stop(svc), 0);
}

/* Send raw bytes, half-close, read what comes back until EOF (bounded). */
static size_t blast(int port, const char *data, size_t n, char *resp, size_t cap)
{
    int fd = tconnect(port);
    if (fd < 0)
        return 0;
    struct timeval tv = {0, 500000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    tsend(fd, data, n);
    shutdown(fd, SHUT_WR);
    size_t got = 0;
    while (got < cap - 1) {
        ssize_t r = recv(fd, resp + got, cap - 1 - got, 0);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    resp[got] = 0;
    close(fd);
    return got;
}

/* Hostile and random input: every response is a well-formed status line
 * from the allowed set, and the service keeps serving (run it under
 * ASan/UBSan: nothing a client sends may crash the process). */
static void test_fuzz(void **state)
{
    (void)state;
    as_service_config cfg = {.max_header_bytes = 2048};
    as_service *svc = fake_start(&cfg, srcs, 2);
    int port = as_service_port(svc);
    /* seeds with their lengths (one holds a NUL byte) */
#define SEED(x) {x, sizeof x - 1}
    static const struct { const char *s; size_t n; } seeds[] = {
        SEED("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"),
        SEED("HEAD /api/v1/snapshot HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n"),
        SEED("GET /api/v1/timeline?since=3 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"),
        SEED("GET http://evil.example/metrics HTTP/1.1\r\nHost: evil\r\n\r\n"),
        SEED("GET /../../etc/passwd HTTP/1.1\r\n\r\n"),
        SEED("GET / HTTP/1.0\r\n\r\n"),
        SEED("GET / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"),
        SEED("GET / HTTP/1.1\r\nTransfer-Encoding: identity\r\n\r\n"),
        SEED("GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n"),
        SEED("GET / HTTP/1.1\nHost: x\n\n"),
        SEED("GET /\0metrics HTTP/1.1\r\n\r\n"),
        SEED("GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET / HTTP/1.1\r\n\r\n"),
        SEED("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
    };
#undef SEED
    const size_t nseeds = sizeof seeds / sizeof seeds[0];
    static char buf[8192], resp[1 << 16];
    unsigned rng = 20261201u, statuses[600] = {0}, answered = 0;
    for (int iter = 0; iter < 300; iter++) {
        size_t n;
        int mode = iter % 4;
        if (mode == 0) {                 /* random bytes */
            n = 1 + (size_t)(rand_r(&rng) % 3000);
            for (size_t i = 0; i < n; i++)
                buf[i] = (char)(rand_r(&rng) & 0xff);
        } else {                         /* a seed, mutated, truncated or repeated */
            size_t pick = (size_t)rand_r(&rng) % nseeds;
            const char *sd = seeds[pick].s;
            size_t sl = seeds[pick].n;
            n = 0;
            int reps = mode == 3 ? 1 + rand_r(&rng) % 40 : 1;
            for (int r = 0; r < reps && n + sl < sizeof buf; r++) {
                memcpy(buf + n, sd, sl);
                n += sl;
            }
            if (mode == 1)
                for (int k = 0; k < 1 + rand_r(&rng) % 4; k++)
                    buf[(size_t)rand_r(&rng) % n] = (char)(rand_r(&rng) & 0xff);
            if (mode == 2)
                n = 1 + (size_t)rand_r(&rng) % n;
        }
        size_t got = blast(port, buf, n, resp, sizeof resp);
        /* every response on the connection starts with an allowed status */
        for (char *p = resp; got && (p = strstr(p, "HTTP/1.1 ")); p += 9) {
            int st = atoi(p + 9);
            if (p == resp || p[-1] == '\n') {
                if (st < 100 || st >= 600)
                    fail_msg("iteration %d: bad status line '%.40s'", iter, p);
                statuses[st]++;
                answered++;
            }
        }
    }
    static const int allowed[] = {200, 400, 403, 404, 405, 408, 411, 413, 414, 431, 503};
    unsigned total_allowed = 0;
    for (size_t k = 0; k < sizeof allowed / sizeof allowed[0]; k++)
        total_allowed += statuses[allowed[k]];
    fprintf(stderr, "fuzz: %u responses (200: %u, 400: %u, 404: %u, 405: %u, 411: %u, 413: %u, "
                    "431: %u)\n", answered, statuses[200], statuses[400], statuses[404],
            statuses[405], statuses[411], statuses[413], statuses[431]);
    assert_int_equal(total_allowed, answered);
    assert_true(statuses[200] > 0 && statuses[400] > 0);
    /* still serving, and every hostile connection is gone */
    tassert_serving(port);
    assert_int_equal(as__service_stop(svc), 0);
}

/* A client pipelining thousands of requests without reading the answers
 * is dropped before the queued responses grow without bound; a request
 * trickling in a byte at a time gets 408 at the idle deadline. */
static void test_flood_and_slowloris(void **state)
{
    (void)state;
    as_service_config cfg = {.sse_queue_limit = 256 * 1024, .idle_timeout_ms = 800};
    as_service *svc = fake_start(&cfg, srcs, 2);
    int port = as_service_port(svc);
    uint64_t mem0 = as__svc_memory();
    if (AS_TEST_TSAN)
        goto slowloris;   /* the flood races the kernel's buffers: too slow here */

    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int small = 4096;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    struct timeval tv = {0, 200000};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    static const char req[] = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    uint64_t peak = 0;
    as_service_stats st;
    /* send until the service drops us (bounded: 10 s; a slow sanitizer
     * build parses more slowly than we send, so full buffers just wait) */
    double t0 = (double)as_clock_wall_ns() * 1e-9;
    for (int i = 0; i < 20000 && (double)as_clock_wall_ns() * 1e-9 - t0 < 10; i++) {
        ssize_t w = send(fd, req, sizeof req - 1, MSG_NOSIGNAL);
        uint64_t m = as__svc_memory();
        peak = m > peak ? m : peak;
        as_service_get_stats(svc, &st);
        if (st.sse_dropped >= 1 || (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK))
            break;
    }
    for (int i = 0; i < 100 && !st.sse_dropped; i++) {
        usleep(50000);
        as_service_get_stats(svc, &st);
        uint64_t m = as__svc_memory();
        peak = m > peak ? m : peak;
    }
    fprintf(stderr, "flood: service memory %.1f MiB at most (%.1f MiB before), %llu dropped\n",
            peak / 1048576.0, mem0 / 1048576.0, (unsigned long long)st.sse_dropped);
    assert_true(st.sse_dropped >= 1);
    assert_true(peak < mem0 + 16u * 1024 * 1024);   /* 5000 answers would be ~150 MiB */
    close(fd);

slowloris:
    /* slowloris: one byte every 150 ms never completes a request */
    fd = tconnect(port);
    static const char slow[] = "GET /metrics HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    t0 = (double)as_clock_wall_ns() * 1e-9;
    char resp[512] = "";
    bool reset = false;
    for (size_t i = 0; i < sizeof slow - 1; i++) {
        if (send(fd, slow + i, 1, MSG_NOSIGNAL) <= 0) {
            reset = true;
            break;
        }
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        if (poll(&pf, 1, 150) > 0) {
            ssize_t r = recv(fd, resp, sizeof resp - 1, 0);
            resp[r > 0 ? r : 0] = 0;
            reset = r <= 0;
            break;
        }
    }
    double waited = (double)as_clock_wall_ns() * 1e-9 - t0;
    fprintf(stderr, "slowloris: '%.30s'%s after %.2f s\n", resp, reset ? " (reset)" : "",
            waited);
    /* cut at the idle deadline with a 408, never a reset (the lingering
     * close: tests/test_service_linger.c) */
    assert_false(reset);
    assert_int_equal(tstatus(resp), 408);
    assert_true(waited > 0.5 && waited < 3.0);
    close(fd);

    /* blank lines between requests (skipped by the parser) do not renew
     * the idle deadline: closed after it, however often they come */
    fd = tconnect(port);
    t0 = (double)as_clock_wall_ns() * 1e-9;
    bool gone = false;
    while (!gone && (double)as_clock_wall_ns() * 1e-9 - t0 < 4.0) {
        if (send(fd, "\r\n", 2, MSG_NOSIGNAL) <= 0)
            break;
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        if (poll(&pf, 1, 150) > 0) {
            char tmp[64];
            gone = recv(fd, tmp, sizeof tmp, 0) <= 0;
        }
    }
    waited = (double)as_clock_wall_ns() * 1e-9 - t0;
    fprintf(stderr, "CRLF trickle: closed %d after %.2f s\n", gone, waited);
    assert_true(gone);
    assert_true(waited < 3.0);
    close(fd);
    tassert_serving(port);
    assert_int_equal(as__service_stop(svc), 0);
}

/* Stop while clients are connected (idle, mid-request, SSE). */
static void test_stop_with_clients(void **state)
{
    (void)state;
    as_service *svc = fake_start(NULL, srcs, 2);
    int port = as_service_port(svc);
    int a = tconnect(port), b = tconnect(port), c = tconnect(port);
    tsend(b, "GET /metr", 9);
    const char *ev = "GET /api/v1/events HTTP/1.1\r\n\r\n";
    tsend(c, ev, strlen(ev));
    usleep(200000);
    assert_int_equal(as__service_stop(svc), 0);
    close(a);
    close(b);
    close(c);
}

int main(void)
{
    fleet_env();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_start_stop),
        cmocka_unit_test(test_bad_config),
        cmocka_unit_test(test_endpoints),
        cmocka_unit_test(test_plan_endpoint),
        cmocka_unit_test(test_promtool),
        cmocka_unit_test(test_hostile),
        cmocka_unit_test(test_connection_limit),
        cmocka_unit_test(test_fuzz),
        cmocka_unit_test(test_names_escaped),
        cmocka_unit_test(test_flood_and_slowloris),
        cmocka_unit_test(test_stop_with_clients),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

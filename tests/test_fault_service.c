/*
 * Allocation-failure injection on the service's request paths, SQLite's
 * way: for N = 1, 2, ... the Nth allocation of the service's own memory
 * (as__svc_malloc / realloc: the connection, response buffers, write
 * requests, SSE frames) fails while one request is served on a socketless
 * connection, until the request runs to the end without reaching N; then
 * once more with every allocation from the Nth on failing. Every time: no
 * crash; what was written is well-formed (a full 200 response, or a 500
 * "out of memory", or nothing when not even that fitted, the connection
 * then closed); the service's memory back to its level before (no leak);
 * and the same request served right after gives the full 200 response
 * (nothing the service holds was lost).
 */
#include <malloc.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "actstore/service.h"
#include "actstore/store.h"
#include "store/service/svc.h"
#include "store/store_internal.h"
#include "tests/support/http_check.h"

typedef struct out {
    char    *p;
    size_t   len;
    unsigned writes;
    int      status;      /* of the first write; 0: nothing written */
    bool     closed;      /* the service closed the connection */
    bool     bad;
    char     why[160];
} out;

static bool head_req;

static void sink(as__conn *c, void *ud, const uv_buf_t *bufs, unsigned n)
{
    (void)c;
    out *o = ud;
    size_t add = 0;
    for (unsigned i = 0; i < n; i++)
        add += bufs[i].len;
    char *q = realloc(o->p, o->len + add + 1);
    assert_non_null(q);
    o->p = q;
    size_t start = o->len;
    for (unsigned i = 0; i < n; i++) {
        memcpy(o->p + o->len, bufs[i].base, bufs[i].len);
        o->len += bufs[i].len;
    }
    o->p[o->len] = 0;
    const char *why;
    if (o->writes++ == 0) {
        hc_resp r;
        why = hc_head(o->p, o->len, &r);
        if (!why) {
            why = hc_response(o->p, o->len, head_req && r.status < 400, &r);
            o->status = r.status;
        }
    } else {
        why = hc_sse(o->p + start, add);   /* only a stream writes twice */
    }
    if (why && !o->bad) {
        o->bad = true;
        snprintf(o->why, sizeof o->why, "%s", why);
    }
}

typedef struct fx {
    as_store   *s;
    as_service *svc;
} fx;

static void fx_init(fx *f)
{
    as_store_config cfg = {.policy = "default=q8; layer:blk.1=zstd", .label = "fault"};
    assert_int_equal(as_store_create(&cfg, &f->s, NULL, 0), 0);
    static float x[8192];
    for (size_t i = 0; i < 8192; i++)
        x[i] = (float)(i % 131) * 0.5f - 20.0f;
    as_tensor t = {.data = x, .dtype = AS_F32, .ndim = 2, .shape = {64, 128}};
    as_store_step_begin(f->s, 1);
    for (int k = 0; k < 4; k++) {
        as_save_info info = {.kind = AS_KIND_ACTIVATION_OUTPUT,
                             .layer = k % 2 ? "blk.1" : "blk.0"};
        as_handle h;
        assert_int_equal(as_store_save(f->s, &info, &t, &h), 0);
    }
    as_service_config sc = {.timeline_points = 32, .heartbeat_ms = 1, .quiet = true};
    as_service_source src = {.store = f->s};
    char err[256] = "";
    if (as__service_open_local(&sc, &src, 1, &f->svc, err, sizeof err))
        fail_msg("open_local: %s", err);
}

static void fx_free(fx *f)
{
    assert_int_equal(as__service_close_local(f->svc), 0);
    as_store_step_end(f->s);
    as_store_destroy(f->s);
}

/* The service's memory, less the latest SSE frame (rebuilt by each tick,
 * its size follows the figures it carries). */
static uint64_t svc_mem(const as_service *svc)
{
    return as__svc_memory() - (svc->frame ? malloc_usable_size(svc->frame) : 0);
}

/* Serve req on a fresh connection (a tick after it for the event stream);
 * the connection is closed and freed before returning. Returns whether the
 * connection could be opened. */
static bool serve(fx *f, const char *req, bool tick, out *o)
{
    memset(o, 0, sizeof *o);
    head_req = !strncmp(req, "HEAD ", 5);
    as__conn *c = as__conn_open_local(f->svc, sink, o);
    if (!c)
        return false;
    as__conn_feed(c, req, strlen(req));
    if (tick)
        as__service_tick(f->svc);
    o->closed = as__conn_closed(c);
    if (!o->closed)
        as__conn_close(c);
    uv_run(&f->svc->loop, UV_RUN_NOWAIT);
    assert_null(f->svc->conns);
    return true;
}

static void check_clean(fx *f, const char *req, bool tick, int want)
{
    out o;
    assert_true(serve(f, req, tick, &o));
    if (o.bad || o.status != want)
        fail_msg("%s: status %d, %s\n%.400s", req, o.status, o.why, o.p ? o.p : "");
    free(o.p);
}

/* Serve req with the nth allocation failing; returns whether the failure
 * was reached. */
static bool serve_failing(fx *f, const char *req, bool tick, int want, long n,
                          bool sticky, int *nfail)
{
    uint64_t base = svc_mem(f->svc);
    out o;
    as__svc_fault_set(n, sticky);
    bool opened = serve(f, req, tick, &o);
    bool reached = as__svc_fault_left() == 0;
    as__svc_fault_set(0, false);
    if (o.bad)
        fail_msg("%s, allocation %ld failing: malformed (%s)\n%.400s", req, n, o.why, o.p);
    if (opened && o.status != want && o.status != 500 && o.status != 0)
        fail_msg("%s, allocation %ld failing: status %d", req, n, o.status);
    /* a failure shows as no connection, another status, or (keep-alive
     * requests) the connection closed by the service */
    *nfail += !opened || o.status != want || (want == 200 && o.closed);
    free(o.p);
    if (svc_mem(f->svc) != base)
        fail_msg("%s, allocation %ld failing: service memory %llu, was %llu", req, n,
                 (unsigned long long)svc_mem(f->svc), (unsigned long long)base);
    check_clean(f, req, tick, want);     /* nothing lost */
    return reached;
}

/* The same with the nth allocation of the store's and the arena's side
 * failing (the views a request reads: arena snapshot, store stats, plan):
 * the request answers 500 or 200, the arena's live bytes stay, and the
 * next clean request is complete. */
static bool serve_failing_store(fx *f, const char *req, bool tick, int want, long n,
                                bool sticky, int *nfail)
{
    as_arena *a = as_store_arena(f->s);
    as_arena_snapshot s0;
    assert_int_equal(as_arena_snapshot_take(a, UINT64_MAX, &s0), 0);
    uint64_t base = s0.total.live_usable, sbase = svc_mem(f->svc);
    as_arena_snapshot_free(&s0);
    out o;
    as__arena_fault_set(a, n, sticky);
    bool opened = serve(f, req, tick, &o);
    bool reached = sticky ? as__arena_fault_left(a) == 1 : as__arena_fault_left(a) == 0;
    as__arena_fault_set(a, 0, false);
    if (o.bad)
        fail_msg("%s, store allocation %ld failing: malformed (%s)\n%.400s", req, n, o.why,
                 o.p);
    if (opened && o.status != want && o.status != 500 && o.status != 0)
        fail_msg("%s, store allocation %ld failing: status %d", req, n, o.status);
    *nfail += !opened || o.status != want;
    free(o.p);
    assert_int_equal(as_arena_snapshot_take(a, UINT64_MAX, &s0), 0);
    if (s0.total.live_usable != base || svc_mem(f->svc) != sbase)
        fail_msg("%s, store allocation %ld failing: arena live %llu (was %llu), service "
                 "memory %llu (was %llu)", req, n, (unsigned long long)s0.total.live_usable,
                 (unsigned long long)base, (unsigned long long)svc_mem(f->svc),
                 (unsigned long long)sbase);
    as_arena_snapshot_free(&s0);
    check_clean(f, req, tick, want);
    return reached;
}

static void run_request_store(const char *req, bool tick, int want)
{
    fx f;
    fx_init(&f);
    check_clean(&f, req, tick, want);
    int nfail = 0;
    long n = 1;
    while (serve_failing_store(&f, req, tick, want, n, false, &nfail))
        n++;
    for (long k = 1; k < n; k++)
        serve_failing_store(&f, req, tick, want, k, true, &nfail);
    fprintf(stderr, "%-32.*s %ld store/arena allocations, %d failures answered\n",
            (int)strcspn(req, "\r"), req, n - 1, nfail);
    assert_true(n > 3);            /* snapshot, stats and plan at least */
    fx_free(&f);
}

static void run_request(const char *req, bool tick, int want)
{
    fx f;
    fx_init(&f);
    check_clean(&f, req, tick, want);   /* warm: the first SSE frame, views */
    check_clean(&f, req, tick, want);
    int nfail = 0;
    long n = 1;
    while (serve_failing(&f, req, tick, want, n, false, &nfail))
        n++;
    long allocs = n - 1;
    for (long k = 1; k <= allocs; k++)   /* sticky: every one from the kth on */
        serve_failing(&f, req, tick, want, k, true, &nfail);
    fprintf(stderr, "%-32.*s %ld allocations, %d failures answered\n",
            (int)strcspn(req, "\r"), req, allocs, nfail);
    assert_true(allocs >= 2);      /* the connection and the response at least */
    assert_true(nfail >= allocs);  /* at least every sticky run failed */
    fx_free(&f);
}

#define REQ(path) "GET " path " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"

static void test_fault_snapshot(void **st) { (void)st; run_request(REQ("/api/v1/snapshot"), false, 200); }
static void test_fault_views(void **st)
{
    (void)st;
    /* the views are taken by the service's tick, which serve() runs */
    run_request_store(REQ("/api/v1/snapshot"), true, 200);
    run_request_store(REQ("/metrics"), true, 200);
    run_request_store(REQ("/api/v1/plan"), true, 200);
}
static void test_fault_metrics(void **st) { (void)st; run_request(REQ("/metrics"), false, 200); }
static void test_fault_plan(void **st) { (void)st; run_request(REQ("/api/v1/plan"), false, 200); }
static void test_fault_timeline(void **st) { (void)st; run_request(REQ("/api/v1/timeline?since=0"), false, 200); }
static void test_fault_trace(void **st) { (void)st; run_request(REQ("/api/v1/trace"), false, 200); }
static void test_fault_events(void **st) { (void)st; run_request(REQ("/api/v1/events"), true, 200); }
static void test_fault_error(void **st)
{
    (void)st;
    run_request("POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", false, 413);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fault_snapshot),
        cmocka_unit_test(test_fault_views),
        cmocka_unit_test(test_fault_metrics),
        cmocka_unit_test(test_fault_plan),
        cmocka_unit_test(test_fault_timeline),
        cmocka_unit_test(test_fault_trace),
        cmocka_unit_test(test_fault_events),
        cmocka_unit_test(test_fault_error),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

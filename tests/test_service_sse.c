/* Service event stream: rate, slow clients dropped, 500 concurrent clients. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <cjson/cJSON.h>

#include <sys/resource.h>

#include "test_service_util.h"
#include "client/client.h"

/* ---- one client: >= 9 events a second, frames are JSON with data ---------------- */

typedef struct counter {
    unsigned events, comments, bad_json;
    uint64_t t_first, t_last;
    unsigned stop_after;
} counter;

static int count_event(void *ud, const char *d, size_t n, bool comment)
{
    counter *c = ud;
    (void)n;
    if (comment) {
        c->comments++;
        return 0;
    }
    uint64_t now = as_clock_wall_ns();
    if (!c->events)
        c->t_first = now;
    c->t_last = now;
    c->events++;
    if (c->events <= 3) {
        cJSON *j = cJSON_Parse(d);
        if (!j || !cJSON_GetObjectItem(j, "now") || !cJSON_GetObjectItem(j, "stores"))
            c->bad_json++;
        cJSON_Delete(j);
    }
    return c->stop_after && c->events >= c->stop_after;
}

static void test_rate(void **state)
{
    (void)state;
    if (AS_TEST_TSAN)
        skip();   /* a rate: meaningless at TSan's speed */
    fake_src src[2] = {{.nlayers = 40}, {.nlayers = 40}};
    as_service_config cfg = {.heartbeat_ms = 300};
    as_service *svc = fake_start(&cfg, src, 2);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", as_service_port(svc));
    /* A loaded machine can stall the service's thread or this one for a
     * while: the rate must be reached in one of up to three 2.6 s windows
     * (a stream slower than 9/s fails all three). */
    counter c = {0};
    double rate = 0;
    int rc = 0;
    char err[256];
    for (int w = 0; w < 3 && rate < 9.0 && !rc; w++) {
        c = (counter){0};
        rc = as_client_subscribe(addr, 2600, count_event, &c, err, sizeof err);
        double span = (double)(c.t_last - c.t_first) * 1e-9;
        rate = span > 0 ? (c.events - 1) / span : 0;
        fprintf(stderr, "sse window %d: %u events in %.2f s (%.1f/s), %u heartbeats\n", w + 1,
                c.events, span, rate, c.comments);
    }
    /* stopped before any assertion: a failed one must not leave it serving
     * into the next test */
    assert_int_equal(as__service_stop(svc), 0);
    assert_int_equal(rc, 0);
    assert_true(c.events >= 20);
    assert_true(rate >= 9.0);
    assert_true(c.comments >= 3);
    assert_int_equal(c.bad_json, 0);
}

/* ---- a stalled client is dropped, another keeps receiving ------------------------- */

typedef struct stall_ctx {
    as_service *svc;
    counter     good;
    unsigned    events_at_drop;
    uint64_t    t_drop, t_start;
    uv_timer_t  timer;
    as_client_sse *s;
    bool        done;
} stall_ctx;

static void stall_check(uv_timer_t *t)
{
    stall_ctx *x = t->data;
    as_service_stats st;
    as_service_get_stats(x->svc, &st);
    uint64_t now = as_clock_wall_ns();
    if (!x->t_drop && st.sse_dropped >= 1) {
        x->t_drop = now;
        x->events_at_drop = x->good.events;
    }
    /* done once the good client has had 10 frames after the drop (0.2 s at
     * 50 Hz on a quiet machine); the bound is for a loaded one */
    if ((x->t_drop && x->good.events - x->events_at_drop >= 10) ||
        now - x->t_start > 60000000000ull) {
        uv_timer_stop(t);
        as_client_sse_close(x->s);
        x->done = true;
    }
}

static void stall_end(void *ud, int rc) { (void)ud; (void)rc; }

static void test_stalled_client_dropped(void **state)
{
    (void)state;
    /* big frames (long layer names), fast ticks, a small queue limit */
    fake_src src[1] = {{.nlayers = 200, .name_len = 400}};
    as_service_config cfg = {.tick_hz = 50, .sse_queue_limit = 64 * 1024};
    as_service *svc = fake_start(&cfg, src, 1);
    int port = as_service_port(svc);

    /* the stalled client: tiny receive buffer, subscribes, never reads */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int small = 4096;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    const char *req = "GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    assert_int_equal(tsend(fd, req, strlen(req)), 0);

    uv_loop_t loop;
    uv_loop_init(&loop);
    stall_ctx x = {.svc = svc, .t_start = as_clock_wall_ns()};
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    assert_int_equal(as_client_sse_open(&loop, addr, count_event, stall_end, &x.good, &x.s), 0);
    uv_timer_init(&loop, &x.timer);
    x.timer.data = &x;
    uv_timer_start(&x.timer, stall_check, 50, 50);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&x.timer, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);

    fprintf(stderr, "stall: dropped after %.2f s; good client %u events (%u after the drop)\n",
            x.t_drop ? (double)(x.t_drop - x.t_start) * 1e-9 : -1.0, x.good.events,
            x.good.events - x.events_at_drop);
    assert_true(x.t_drop != 0);
    assert_true(x.good.events - x.events_at_drop >= 10);
    /* the service closed the stalled connection: reading what was queued
     * (at most the queue limit plus the kernel buffers) ends in EOF */
    assert_true(tclosed(fd));
    close(fd);
    /* the service still answers */
    char *r = tget(port, "/metrics", NULL);
    assert_int_equal(tstatus(r), 200);
    assert_non_null(strstr(r, "actstore_service_sse_dropped_total{job=\"t\",rank=\"0\",host=\"h\"} 1"));
    free(r);
    assert_int_equal(as__service_stop(svc), 0);
}

/* ---- 500 concurrent clients all receive events (bounded) ---------------------------- */

#define NCLIENTS 500

typedef struct many_ctx {
    counter        c[NCLIENTS];
    as_client_sse *s[NCLIENTS];
    bool           ended[NCLIENTS];
    int            end_rc[NCLIENTS];
    uv_timer_t     timer;
    uint64_t       t_start;
    unsigned       ok;
} many_ctx;

static many_ctx *g_many;

static void many_end(void *ud, int rc)
{
    counter *c = ud;
    size_t i = (size_t)(c - g_many->c);
    g_many->ended[i] = true;
    g_many->end_rc[i] = rc;
}

static void many_check(uv_timer_t *t)
{
    many_ctx *m = t->data;
    unsigned ok = 0;
    for (int i = 0; i < NCLIENTS; i++)
        ok += m->c[i].events >= 3;
    m->ok = ok;
    if (ok == NCLIENTS || as_clock_wall_ns() - m->t_start > 30000000000ull) {
        uv_timer_stop(t);
        for (int i = 0; i < NCLIENTS; i++)
            if (!m->ended[i])
                as_client_sse_close(m->s[i]);
    }
}

static void test_500_clients(void **state)
{
    (void)state;
    /* 500 clients and 500 server sides are 1000+ descriptors in this one
     * process: many machines default to a soft limit of 1024 */
    struct rlimit rl;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_cur < 2 * NCLIENTS + 100) {
        rl.rlim_cur = rl.rlim_max < 4096 ? rl.rlim_max : 4096;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur < 2 * NCLIENTS + 100)
        fail_msg("need %d file descriptors for %d clients, the hard limit is %llu "
                 "(raise it: ulimit -Hn)", 2 * NCLIENTS + 100, NCLIENTS,
                 (unsigned long long)rl.rlim_max);
    fake_src src[1] = {{.nlayers = 5}};
    as_service *svc = fake_start(NULL, src, 1);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", as_service_port(svc));
    many_ctx *m = calloc(1, sizeof *m);
    g_many = m;
    uv_loop_t loop;
    uv_loop_init(&loop);
    m->t_start = as_clock_wall_ns();
    for (int i = 0; i < NCLIENTS; i++)
        assert_int_equal(as_client_sse_open(&loop, addr, count_event, many_end, &m->c[i], &m->s[i]), 0);
    uv_timer_init(&loop, &m->timer);
    m->timer.data = m;
    uv_timer_start(&m->timer, many_check, 100, 100);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&m->timer, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    as_service_stats st;
    as_service_get_stats(svc, &st);
    fprintf(stderr, "500 clients: %u received >= 3 events in %.2f s; peak sse clients seen %llu, "
                    "dropped %llu\n",
            m->ok, (double)(as_clock_wall_ns() - m->t_start) * 1e-9,
            (unsigned long long)st.sse_clients, (unsigned long long)st.sse_dropped);
    assert_int_equal(m->ok, NCLIENTS);
    free(m);
    assert_int_equal(as__service_stop(svc), 0);
}

int main(void)
{
    fleet_env();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rate),
        cmocka_unit_test(test_stalled_client_dropped),
        cmocka_unit_test(test_500_clients),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

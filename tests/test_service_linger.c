/*
 * How the service ends a connection it answered with an error (loopback,
 * real sockets): a request still trickling in at the idle deadline gets
 * 408, then the write side is shut down and what the client still sends
 * is read and discarded until its EOF or the drain bound, so the client
 * reads the 408 and a clean end of stream, never a reset.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "test_service_util.h"

static fake_src srcs[1] = {{.nlayers = 4, .name_len = 0}};

static double now_s(void) { return (double)as_clock_wall_ns() * 1e-9; }

/* A service with the given idle deadline and a client connected to it. */
static as_service *start_connected(unsigned idle_ms, int *port, int *fd)
{
    as_service_config cfg = {.idle_timeout_ms = idle_ms};
    as_service *svc = fake_start(&cfg, srcs, 1);
    assert_non_null(svc);
    *port = as_service_port(svc);
    *fd = tconnect(*port);
    assert_true(*fd >= 0);
    return svc;
}

/* Trickle `req` a byte every 100 ms until something comes back; returns
 * what came (the response, or an empty string on reset) and sets *reset
 * when a send or the read failed. */
static void trickle_until_answer(int fd, const char *req, char *resp, size_t cap,
                                 bool *reset)
{
    size_t n = strlen(req);
    *reset = false;
    resp[0] = 0;
    for (size_t i = 0; i < 200; i++) {
        if (send(fd, req + i % n, 1, MSG_NOSIGNAL) <= 0) {
            *reset = true;
            return;
        }
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        if (poll(&pf, 1, 100) > 0) {
            ssize_t r = recv(fd, resp, cap - 1, 0);
            resp[r > 0 ? r : 0] = 0;
            *reset = r < 0;
            return;
        }
    }
}

/* The request starts well after the connect: the deadline runs from the
 * connect, and the trickle is answered 408 at that deadline rather than cut
 * as an idle connection (which, with its bytes unread, resets). Then the
 * client keeps sending for a while: the service drains, and the client's
 * shutdown is answered with EOF. */
static void test_408_then_lingering_close(void **state)
{
    (void)state;
    int port, fd;
    as_service *svc = start_connected(600, &port, &fd);
    double t0 = now_s();
    usleep(350000);                        /* past half the deadline */
    char resp[1024];
    bool reset;
    trickle_until_answer(fd, "GET /metrics HTTP/1.1\r\nX-Slow: aaaaaaaaaaaa", resp,
                         sizeof resp, &reset);
    double waited = now_s() - t0;
    fprintf(stderr, "trickle: '%.30s'%s after %.2f s\n", resp, reset ? " (reset)" : "",
            waited);
    assert_false(reset);
    assert_int_equal(tstatus(resp), 408);
    assert_non_null(strstr(resp, "Connection: close"));
    assert_true(waited > 0.5 && waited < 3.0);

    /* the service reads and discards what still comes after the 408 */
    for (int i = 0; i < 5; i++) {
        assert_int_equal(tsend(fd, "bbbbbbbbbbbbbbbb", 16), 0);
        usleep(50000);
    }
    assert_int_equal(shutdown(fd, SHUT_WR), 0);
    char tail[256];
    ssize_t r;
    size_t more = 0;
    while ((r = recv(fd, tail, sizeof tail, 0)) > 0)
        more += (size_t)r;
    fprintf(stderr, "after the 408: %zu more bytes, end %zd (%s)\n", more, r,
            r < 0 ? strerror(errno) : "EOF");
    assert_int_equal(r, 0);                /* a FIN, not ECONNRESET */
    close(fd);
    tassert_serving(port);
    assert_int_equal(as__service_stop(svc), 0);
}

/* A client that goes on sending after the 408 and never ends its side
 * is not drained forever: the connection is closed at the drain bound. */
static void test_drain_is_bounded(void **state)
{
    (void)state;
    int port, fd;
    as_service *svc = start_connected(400, &port, &fd);
    char resp[1024];
    bool reset;
    trickle_until_answer(fd, "GET / HTTP/1.1\r\nX-Slow: ", resp, sizeof resp, &reset);
    assert_false(reset);
    assert_int_equal(tstatus(resp), 408);
    /* the service's FIN comes first (EOF); the cut shows as a failed send
     * or a reset on the read */
    double t0 = now_s();
    bool gone = false, eof = false;
    while (!gone && now_s() - t0 < 10.0) {
        if (send(fd, "c", 1, MSG_NOSIGNAL) <= 0) {
            gone = true;
            break;
        }
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        if (poll(&pf, 1, 100) > 0) {
            char tmp[64];
            ssize_t r = recv(fd, tmp, sizeof tmp, 0);
            gone = r < 0;
            if (r == 0 && !eof) {
                eof = true;
                fprintf(stderr, "endless sender: EOF after %.2f s\n", now_s() - t0);
            }
            if (r == 0)
                usleep(100000);
        }
    }
    double waited = now_s() - t0;
    fprintf(stderr, "endless sender: cut %d after %.2f s of draining\n", gone, waited);
    assert_true(eof);
    assert_true(gone);
    assert_true(waited > 1.0 && waited < 8.0);
    close(fd);
    tassert_serving(port);
    assert_int_equal(as__service_stop(svc), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_408_then_lingering_close),
        cmocka_unit_test(test_drain_is_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

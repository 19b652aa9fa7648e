/*
 * HTTP/1.1 for the service: connections, request parsing (llhttp),
 * validation, routing and responses (the event stream is in sse.c).
 *
 * Only GET and HEAD without a body are served. The llhttp of Debian 12
 * (8.1.0) has known request-smuggling flaws, so anything that could carry
 * a body is refused before llhttp looks at one, and the connection closed:
 *     Transfer-Encoding (any)  -> 411
 *     Content-Length > 0       -> 413
 *     Content-Length: 0        -> 400
 *     other methods            -> 405 (Allow: GET, HEAD)
 *     Host not a loopback name on a loopback bind (DNS rebinding), longer
 *     than any loopback name, or given twice -> 403
 *     parse error              -> 400
 *     request line + headers over max_header_bytes -> 431, URL > 2 KiB -> 414
 *     connection limit reached -> the longest-idle non-SSE connection is
 *     closed for the new one; 503 when all are event streams
 * After an error response the connection is half-closed (FIN after the
 * response) and what the client still sends is read and discarded for up
 * to 2 s, so the client reads the status instead of a reset.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <arpa/inet.h>
#include <sys/socket.h>

#include <llhttp.h>

#include "conn.h"
#include "util/list.h"

typedef struct wreq {
    uv_write_t req;
    char      *own;        /* freed after the write (as__svc_free) */
    as__frame *frame;      /* unref'd after the write */
} wreq;

static uint64_t now_ns(void) { return uv_hrtime(); }

/* ---- closing ------------------------------------------------------------ */

static void on_closed(uv_handle_t *h)
{
    as__conn *c = h->data;
    as_service *svc = c->svc;
    AS_LIST_REMOVE(&svc->conns, c);
    svc->nconns--;
    if (c->sse)
        svc->nsse--;
    AS__STAT_SET(svc, AS__ST_OPEN, svc->nconns);
    AS__STAT_SET(svc, AS__ST_SSE, svc->nsse);
    as__svc_free(c);
}

void as__conn_close(as__conn *c)
{
    if (c->closing)
        return;
    c->closing = true;
    uv_close((uv_handle_t *)&c->tcp, on_closed);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    as__conn *c = req->data;
    if (status < 0)
        as__conn_close(c);
    /* else keep reading (and discarding) until EOF or the drain timeout */
}

/* Stop serving this connection: FIN after pending writes, then drain. */
static void conn_finish(as__conn *c)
{
    if (c->draining || c->closing)
        return;
    c->draining = true;
    c->drain_since_ns = now_ns();
    c->shut.data = c;
    if (uv_shutdown(&c->shut, (uv_stream_t *)&c->tcp, on_shutdown))
        as__conn_close(c);
}

/* ---- writing ------------------------------------------------------------ */

static void on_write(uv_write_t *req, int status)
{
    wreq *w = (wreq *)req;
    as__conn *c = req->data;
    as__svc_free(w->own);
    as__frame_unref(w->frame);
    as__svc_free(w);
    c->pending--;
    if (status < 0)
        as__conn_close(c);
}

/* Queue bufs; own / frame are released after the write (also on error). */
int as__conn_write(as__conn *c, uv_buf_t *bufs, unsigned n, char *own,
                      as__frame *frame)
{
    wreq *w = as__svc_malloc(sizeof *w);
    if (!w || c->closing) {
        as__svc_free(own);
        as__frame_unref(frame);
        as__svc_free(w);
        if (!c->closing)
            as__conn_close(c);
        return -1;
    }
    w->own = own;
    w->frame = frame;
    w->req.data = c;
    c->pending++;
    if (c->sink) {   /* no socket: the bytes are delivered now */
        c->sink(c, c->sink_ud, bufs, n);
        on_write(&w->req, 0);
        return 0;
    }
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, bufs, n, on_write)) {
        c->pending--;
        as__svc_free(own);
        as__frame_unref(frame);
        as__svc_free(w);
        as__conn_close(c);
        return -1;
    }
    return 0;
}

static const char *reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default:  return "Unknown";
    }
}

/* Send a response. body is copied unless static_body (then it must outlive
 * the write: embedded assets). head: headers only (Content-Length of the
 * full body). close: Connection: close and finish after the write. */
static void respond(as__conn *c, int status, const char *ctype, const char *extra,
                    const char *body, size_t len, bool static_body, bool head,
                    bool close)
{
    as_service *svc = c->svc;
    if (status >= 500)
        AS__STAT_ADD(svc, AS__ST_5XX, 1);
    else if (status >= 400)
        AS__STAT_ADD(svc, AS__ST_4XX, 1);
    as__sb h;
    as__sb_init(&h);
    as__sb_printf(&h, "HTTP/1.1 %d %s\r\nServer: actstore/%s\r\n"
                      "Content-Type: %s\r\nContent-Length: %zu\r\n"
                      "Connection: %s\r\n%s\r\n",
                  status, reason(status), AS_VERSION_STRING, ctype, len,
                  close ? "close" : "keep-alive", extra ? extra : "");
    if (!head && !static_body && len)
        as__sb_put(&h, body, len);
    if (h.oom) {
        as__sb_free(&h);
        as__conn_close(c);
        return;
    }
    uv_buf_t bufs[2] = {uv_buf_init(h.p, (unsigned)h.len), uv_buf_init(NULL, 0)};
    unsigned n = 1;
    if (!head && static_body && len) {
        bufs[1] = uv_buf_init((char *)body, (unsigned)len);
        n = 2;
    }
    if (as__conn_write(c, bufs, n, h.p, NULL) == 0 && close)
        conn_finish(c);
}

static void respond_error(as__conn *c, int status, const char *msg)
{
    char body[256];
    int n = snprintf(body, sizeof body, "%d %s: %s\n", status, reason(status), msg);
    respond(c, status, "text/plain; charset=utf-8",
            status == 405 ? "Allow: GET, HEAD\r\n" : NULL, body, (size_t)n, false,
            false, true);
}

void as__http_sweep(as_service *svc)
{
    uint64_t now = now_ns();
    uint64_t idle = svc->cfg.idle_timeout_ms * 1000000ull;
    for (as__conn *c = svc->conns, *next; c; c = next) {
        next = c->next;
        if (c->closing)
            continue;
        if (c->draining) {
            if (now - c->drain_since_ns > 2000000000ull)
                as__conn_close(c);
        } else if (!c->sse && now - c->last_active_ns > idle) {
            /* The deadline runs from the last completed request (or the
             * connect), however often bytes come. A request trickling in
             * (slowloris) is answered 408 and half-closed, never cut with
             * its bytes unread: that close would reset the connection. */
            if (c->in_message)
                respond_error(c, 408, "request not completed in time");
            else
                as__conn_close(c);
        }
    }
}

void as__http_close_all(as_service *svc)
{
    for (as__conn *c = svc->conns; c; c = c->next)
        as__conn_close(c);
}

/* ---- routing ---------------------------------------------------------------- */

static bool path_is(const char *p, size_t n, const char *want)
{
    return strlen(want) == n && !memcmp(p, want, n);
}

static void send_doc(as__conn *c, as__sb *b, const char *ctype, bool head, bool keep)
{
    if (b->oom) {
        as__sb_free(b);
        respond_error(c, 500, "out of memory");
        return;
    }
    respond(c, 200, ctype, "Cache-Control: no-store\r\n", b->p ? b->p : "", b->len,
            false, head, !keep);
    as__sb_free(b);
}

/* Returns true when the connection switched to SSE. */
static bool route(as__conn *c, bool head, bool keep)
{
    as_service *svc = c->svc;
    AS__STAT_ADD(svc, AS__ST_REQUESTS, 1);
    const char *url = c->url;
    const char *q = memchr(url, '?', c->url_len);
    size_t plen = q ? (size_t)(q - url) : c->url_len;
    const char *query = q ? q + 1 : "";
    as__sb b;
    as__sb_init(&b);

    if (path_is(url, plen, "/metrics")) {
        as__render_metrics(svc, &b);
        send_doc(c, &b, "text/plain; version=0.0.4; charset=utf-8", head, keep);
    } else if (path_is(url, plen, "/api/v1/snapshot")) {
        as__render_snapshot(svc, &b);
        send_doc(c, &b, "application/json", head, keep);
    } else if (path_is(url, plen, "/api/v1/plan")) {
        as__render_plan(svc, &b);
        send_doc(c, &b, "application/json", head, keep);
    } else if (path_is(url, plen, "/api/v1/timeline")) {
        uint64_t since = 0;
        if (*query) {
            if (strncmp(query, "since=", 6)) {
                respond_error(c, 400, "expected ?since=SEQ");
                return false;
            }
            char *end;
            since = strtoull(query + 6, &end, 10);
            if (end == query + 6 || (*end && *end != '&')) {
                respond_error(c, 400, "since must be a non-negative integer");
                return false;
            }
        }
        as__render_timeline(svc, since, &b);
        send_doc(c, &b, "application/json", head, keep);
    } else if (path_is(url, plen, "/api/v1/trace")) {
        as__render_trace(svc, &b);
        send_doc(c, &b, "application/json", head, keep);
    } else if (path_is(url, plen, "/api/v1/events")) {
        if (head) {
            respond(c, 200, "text/event-stream", NULL, "", 0, true, true, !keep);
            return false;
        }
        as__sse_start(c);
        return true;
    } else {
        const as__asset *a = as__asset_find(url, plen);
        if (!a) {
            respond_error(c, 404, "no such path (try /, /metrics, /api/v1/snapshot)");
            return false;
        }
        respond(c, 200, a->ctype, "Cache-Control: no-cache\r\n", (const char *)a->data,
                a->len, true, head, !keep);
    }
    return false;
}

/* ---- llhttp callbacks ---------------------------------------------------------- */

static as__conn *P(llhttp_t *p) { return p->data; }

static int hdr_account(as__conn *c, size_t n)
{
    c->hdr_bytes += n;
    if (c->hdr_bytes > c->svc->cfg.max_header_bytes) {
        c->reject = 431;
        return -1;
    }
    return 0;
}

static int cb_begin(llhttp_t *p)
{
    as__conn *c = P(p);
    c->url_len = c->hdr_bytes = c->field_len = 0;
    c->field_done = c->has_cl = c->has_te = c->cl_nonzero = c->has_host = false;
    c->host_bad = false;
    c->host_len = 0;
    c->host[0] = 0;
    c->reject = 0;
    c->in_message = true;
    c->msg_start_ns = now_ns();
    return 0;
}

static int cb_url(llhttp_t *p, const char *at, size_t n)
{
    as__conn *c = P(p);
    if (hdr_account(c, n))
        return -1;
    if (c->url_len + n >= URL_MAX) {
        c->reject = 414;
        return -1;
    }
    memcpy(c->url + c->url_len, at, n);
    c->url_len += n;
    c->url[c->url_len] = 0;
    return 0;
}

static int cb_field(llhttp_t *p, const char *at, size_t n)
{
    as__conn *c = P(p);
    if (hdr_account(c, n + 4))
        return -1;
    if (c->field_done) {
        c->field_len = 0;
        c->field_done = false;
    }
    for (size_t i = 0; i < n && c->field_len < sizeof c->field - 1; i++) {
        char ch = at[i];
        c->field[c->field_len++] = (ch >= 'A' && ch <= 'Z') ? (char)(ch + 32) : ch;
    }
    c->field[c->field_len] = 0;
    return 0;
}

static int cb_value(llhttp_t *p, const char *at, size_t n)
{
    as__conn *c = P(p);
    if (hdr_account(c, n))
        return -1;
    if (!c->field_done) {
        c->field_done = true;
        if (!strcmp(c->field, "content-length"))
            c->has_cl = true;
        else if (!strcmp(c->field, "transfer-encoding"))
            c->has_te = true;
        else if (!strcmp(c->field, "host")) {
            /* a second Host would be appended to the first */
            c->host_bad |= c->has_host;
            c->has_host = true;
        }
    }
    if (c->has_host && !strcmp(c->field, "host")) {
        /* checking a prefix would pass 127.0.0.1111...1.evil.example */
        if (n > sizeof c->host - 1 - c->host_len) {
            c->host_bad = true;
            n = sizeof c->host - 1 - c->host_len;
        }
        memcpy(c->host + c->host_len, at, n);
        c->host_len += n;
        c->host[c->host_len] = 0;
    }
    if (c->has_cl && !strcmp(c->field, "content-length"))
        for (size_t i = 0; i < n; i++)
            if (at[i] >= '1' && at[i] <= '9')
                c->cl_nonzero = true;
    return 0;
}

/* DNS rebinding: a web page on evil.example whose name is re-pointed at
 * 127.0.0.1 could read this service with the browser's same-origin
 * blessing. On a loopback bind only loopback names are accepted as Host
 * (127.x.y.z, localhost, [::1], with or without a port). */
static bool host_is_loopback(const char *h)
{
    char name[72];
    const char *end;
    if (h[0] == '[') {
        /* [::1], [::ffff:127.0.0.1] in any spelling ([::ffff:7f00:1]) */
        end = strchr(h, ']');
        if (!end || (end[1] && end[1] != ':') || (size_t)(end - h - 1) >= sizeof name)
            return false;
        memcpy(name, h + 1, (size_t)(end - h - 1));
        name[end - h - 1] = 0;
        unsigned char a[16];
        static const unsigned char lo[16] = {[15] = 1};
        static const unsigned char mapped[12] = {[10] = 0xff, [11] = 0xff};
        if (inet_pton(AF_INET6, name, a) != 1)
            return false;
        return !memcmp(a, lo, 16) || (!memcmp(a, mapped, 12) && a[12] == 127);
    }
    end = strchr(h, ':');
    size_t n = end ? (size_t)(end - h) : strlen(h);
    if (n >= sizeof name)
        return false;
    memcpy(name, h, n);
    name[n] = 0;
    if (!strcasecmp(name, "localhost") || !strcasecmp(name, "localhost."))
        return true;
    if (strncmp(name, "127.", 4) || strspn(name, "0123456789.") != n)
        return false;
    int dots = 0;
    for (size_t i = 0; i < n; i++)
        dots += name[i] == '.';
    return dots == 3;
}

static int cb_headers_complete(llhttp_t *p)
{
    as__conn *c = P(p);
    if (c->has_te)
        c->reject = 411;
    else if (c->has_cl)
        c->reject = c->cl_nonzero ? 413 : 400;
    else if (p->method != HTTP_GET && p->method != HTTP_HEAD)
        c->reject = 405;
    else if (c->has_host && !c->svc->cfg.allow_remote &&
             (c->host_bad || !host_is_loopback(c->host)))
        c->reject = 403;
    return c->reject ? -1 : 0;
}

static int cb_complete(llhttp_t *p)
{
    as__conn *c = P(p);
    c->in_message = false;
    c->last_active_ns = now_ns();
    /* Upgrade (WebSocket, h2c) is not offered: answer the request as plain
     * HTTP and close, since llhttp parses nothing after an upgrade */
    bool keep = llhttp_should_keep_alive(p) && !p->upgrade;
    bool sse = route(c, p->method == HTTP_HEAD, keep);
    /* Pipelined requests from a client that does not read its responses
     * would queue without bound (a memory attack on the training process):
     * past 4x the SSE queue limit the client is dropped like a slow SSE
     * reader. The queue only grows once the kernel's buffers are full. */
    if (!sse && !c->closing &&
        uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) > 4 * c->svc->cfg.sse_queue_limit) {
        AS__STAT_ADD(c->svc, AS__ST_DROPPED, 1);
        as__conn_close(c);
        return HPE_PAUSED;
    }
    if (sse || !keep || c->draining || c->closing)
        return HPE_PAUSED;   /* parse nothing more on this connection */
    return 0;
}

static llhttp_settings_t settings;
static uv_once_t settings_once = UV_ONCE_INIT;
static void settings_init(void)
{
    llhttp_settings_init(&settings);
    settings.on_message_begin = cb_begin;
    settings.on_url = cb_url;
    settings.on_header_field = cb_field;
    settings.on_header_value = cb_value;
    settings.on_headers_complete = cb_headers_complete;
    settings.on_message_complete = cb_complete;
}

/* ---- reading ---------------------------------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    (void)hint;
    /* One buffer per service: libuv calls read_cb right after alloc_cb on
     * this (single) loop thread, and data is consumed synchronously. */
    static _Thread_local char rbuf[16384];
    (void)h;
    *buf = uv_buf_init(rbuf, sizeof rbuf);
}

static const char *reject_text(int status)
{
    switch (status) {
    case 411: return "Transfer-Encoding is not accepted (no request bodies)";
    case 413: return "request bodies are not accepted";
    case 405: return "only GET and HEAD are served";
    case 403: return "Host is not a loopback name (this service binds loopback only)";
    case 414: return "URL too long";
    case 431: return "request headers too large";
    default:  return "malformed or unsupported request (Content-Length not accepted)";
    }
}

void as__conn_feed(as__conn *c, const char *p, size_t n)
{
    /* Bytes alone do not keep a connection: only a completed request
     * (cb_complete) renews the idle deadline, so blank lines sent between
     * requests (llhttp skips them) cannot hold it open. */
    if (n == 0 || c->closing || c->draining || c->sse)
        return;     /* discard */
    llhttp_errno_t e = llhttp_execute(&c->parser, p, n);
    if (e == HPE_OK || e == HPE_PAUSED || e == HPE_PAUSED_UPGRADE)
        return;
    int status = c->reject ? c->reject : 400;
    respond_error(c, status, c->reject ? reject_text(status) : llhttp_get_error_reason(&c->parser));
}

bool as__conn_closed(const as__conn *c) { return c->closing; }

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    as__conn *c = s->data;
    if (nread < 0) {
        as__conn_close(c);
        return;
    }
    as__conn_feed(c, buf->base, (size_t)nread);
}

/* At the connection limit, the connection to give up for a new one: the
 * non-SSE one idle the longest (or trickling a request the longest), so
 * connections held open without requests cannot lock out a scrape. NULL
 * when every open connection is an event stream, or when the limit is
 * not reached once closing ones are left out. */
static as__conn *evict_pick(as_service *svc, as__conn *fresh)
{
    as__conn *victim = NULL;
    uint64_t oldest = UINT64_MAX;
    unsigned open = 0;
    for (as__conn *c = svc->conns; c; c = c->next) {
        if (c->closing || c->draining)
            continue;
        open++;
        if (c == fresh || c->sse)
            continue;
        uint64_t since = c->in_message ? c->msg_start_ns : c->last_active_ns;
        if (since < oldest) {
            oldest = since;
            victim = c;
        }
    }
    return open > svc->cfg.max_connections ? victim : NULL;
}

/* A new connection in svc's list, its handle initialized on loop (no
 * socket yet) and its parser ready; NULL when out of memory. */
static as__conn *conn_new(as_service *svc, uv_loop_t *loop)
{
    uv_once(&settings_once, settings_init);
    as__conn *c = as__svc_malloc(sizeof *c);
    if (!c)
        return NULL;
    memset(c, 0, sizeof *c);
    c->svc = svc;
    uv_tcp_init(loop, &c->tcp);
    c->tcp.data = c;
    AS_LIST_PUSH(&svc->conns, c);
    svc->nconns++;
    AS__STAT_SET(svc, AS__ST_OPEN, svc->nconns);
    AS__STAT_ADD(svc, AS__ST_CONN_TOTAL, 1);
    c->last_active_ns = now_ns();
    llhttp_init(&c->parser, HTTP_REQUEST, &settings);
    c->parser.data = c;
    return c;
}

as__conn *as__conn_open_local(as_service *svc, as__conn_sink sink, void *ud)
{
    as__conn *c = conn_new(svc, &svc->loop);
    if (c) {
        c->sink = sink;
        c->sink_ud = ud;
    }
    return c;
}

void as__http_on_connection(uv_stream_t *server, int status)
{
    as_service *svc = server->data;
    if (status < 0)
        return;
    as__conn *c = conn_new(svc, server->loop);
    if (!c)
        return;   /* not accepted: libuv offers it again on the next accept */
    if (uv_accept(server, (uv_stream_t *)&c->tcp)) {
        as__conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    if (svc->nconns > svc->cfg.max_connections) {
        AS__STAT_ADD(svc, AS__ST_REJECTED, 1);
        as__conn *victim = evict_pick(svc, c);
        if (victim) {
            as__conn_close(victim);
            uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
            return;
        }
        if (svc->nconns > svc->cfg.max_connections + 64) {
            as__conn_close(c);     /* flooded: no courtesy response */
            return;
        }
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
        respond_error(c, 503, "connection limit reached");
        return;
    }
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

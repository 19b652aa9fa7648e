/* Client library for a running actstore service (see client.h). */
#include "client.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "actstore/common.h"
#include "util/err.h"

typedef struct conn {
    uv_tcp_t          tcp;
    uv_connect_t      creq;
    uv_write_t        wreq;
    char              req[512];
    char             *buf;          /* received, not yet consumed */
    size_t            len, cap;
    bool              headers_done, sse, closing, ended;
    bool              chunked;      /* Transfer-Encoding: chunked (GET) */
    int               status;
    long long         content_length;   /* -1 unknown */
    int               rc;
    /* SSE */
    as_client_event_fn on_event;
    as_client_end_fn   on_end;
    void              *ud;
    char              *data;        /* current event's data lines */
    size_t             dlen, dcap;
    /* GET */
    as_client_response *resp;
} conn;

struct as_client_sse { conn c; };

static int parse_addr(const char *addr, struct sockaddr_in *sa, char *host, size_t hostlen)
{
    if (!addr)
        return AS_EINVAL;
    if (!strncmp(addr, "http://", 7))
        addr += 7;
    char tmp[128];
    snprintf(tmp, sizeof tmp, "%s", addr);
    char *slash = strchr(tmp, '/');
    if (slash)
        *slash = 0;
    char *colon = strrchr(tmp, ':');
    const char *h = "127.0.0.1", *p = tmp;
    if (colon) {
        *colon = 0;
        p = colon + 1;
        if (tmp[0])
            h = tmp;
    }
    if (!strcmp(h, "localhost"))
        h = "127.0.0.1";
    char *end;
    long port = strtol(p, &end, 10);
    if (!*p || *end || port <= 0 || port > 65535)
        return AS_EINVAL;
    if (uv_ip4_addr(h, (int)port, sa))
        return AS_EINVAL;
    snprintf(host, hostlen, "%s:%ld", h, port);
    return 0;
}

/* ---- receiving ------------------------------------------------------------- */

static void on_closed(uv_handle_t *h)
{
    conn *c = h->data;
    if (c->sse && c->on_end)
        c->on_end(c->ud, c->rc);
    free(c->buf);
    free(c->data);
    if (c->sse)
        free(c);
}

static void conn_end(conn *c, int rc)
{
    if (c->closing)
        return;
    c->closing = true;
    c->rc = rc;
    uv_close((uv_handle_t *)&c->tcp, on_closed);
}

static int grow(char **p, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 0;
    size_t n = *cap ? *cap : 4096;
    while (n < need)
        n *= 2;
    char *q = realloc(*p, n);
    if (!q)
        return -1;
    *p = q;
    *cap = n;
    return 0;
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    conn *c = h->data;
    (void)hint;
    if (grow(&c->buf, &c->cap, c->len + 16384 + 1)) {
        *b = uv_buf_init(NULL, 0);
        return;
    }
    *b = uv_buf_init(c->buf + c->len, (unsigned)(c->cap - c->len - 1));
}

/* Parse the status line and headers once complete; returns bytes used or 0. */
static size_t parse_headers(conn *c)
{
    c->buf[c->len] = 0;
    char *eoh = strstr(c->buf, "\r\n\r\n");
    if (!eoh)
        return 0;
    if (sscanf(c->buf, "HTTP/1.%*d %d", &c->status) != 1)
        c->status = -1;
    c->content_length = -1;
    for (char *line = strstr(c->buf, "\r\n"); line && line < eoh; line = strstr(line + 2, "\r\n"))
        if (!strncasecmp(line + 2, "Content-Length:", 15))
            c->content_length = atoll(line + 17);
        else if (!strncasecmp(line + 2, "Transfer-Encoding:", 18) &&
                 strstr(line + 20, "chunked") && strstr(line + 20, "chunked") < eoh)
            c->chunked = true;
    c->headers_done = true;
    return (size_t)(eoh + 4 - c->buf);
}

/* SSE: consume complete lines from buf. */
static void sse_feed(conn *c)
{
    size_t off = 0;
    while (!c->closing) {
        char *nl = memchr(c->buf + off, '\n', c->len - off);
        if (!nl)
            break;
        size_t ll = (size_t)(nl - (c->buf + off));
        char *line = c->buf + off;
        if (ll && line[ll - 1] == '\r')
            ll--;
        off = (size_t)(nl - c->buf) + 1;
        int stop = 0;
        if (ll == 0) {                       /* dispatch */
            if (c->dlen) {
                c->data[c->dlen] = 0;
                stop = c->on_event(c->ud, c->data, c->dlen, false);
                c->dlen = 0;
            }
        } else if (line[0] == ':') {
            stop = c->on_event(c->ud, line + 1, ll - 1, true);
        } else if (ll >= 5 && !memcmp(line, "data:", 5)) {
            size_t s = ll > 5 && line[5] == ' ' ? 6 : 5;
            if (grow(&c->data, &c->dcap, c->dlen + (ll - s) + 2)) {
                conn_end(c, AS_ENOMEM);
                return;
            }
            if (c->dlen)
                c->data[c->dlen++] = '\n';
            memcpy(c->data + c->dlen, line + s, ll - s);
            c->dlen += ll - s;
        }                                    /* id:, retry:, event: ignored */
        if (stop)
            conn_end(c, 0);
    }
    memmove(c->buf, c->buf + off, c->len - off);
    c->len -= off;
}

/* Decode a chunked body (delimited by the close: GETs ask for one) in
 * place: sizes in hex, extensions and trailers ignored. AS_EFORMAT when
 * malformed or cut before the last chunk. */
static int dechunk(conn *c)
{
    size_t in = 0, out = 0;
    c->buf[c->len] = 0;   /* on_alloc keeps a spare byte: strtoull stops */
    for (;;) {
        char *end;
        unsigned long long n = strtoull(c->buf + in, &end, 16);
        char *eol = memchr(c->buf + in, '\n', c->len - in);
        if (end == c->buf + in || !eol)
            return AS_EFORMAT;
        in = (size_t)(eol - c->buf) + 1;
        if (n == 0)
            break;
        if (n > c->len - in || c->len - in - n < 2)
            return AS_EFORMAT;
        memmove(c->buf + out, c->buf + in, n);
        out += n;
        in += n + 2;   /* data, CRLF */
    }
    c->len = out;
    return 0;
}

static void finish_get(conn *c, int rc)
{
    if (!rc && c->chunked)
        rc = dechunk(c);
    if (!rc && c->resp) {
        c->resp->status = c->status;
        c->resp->len = c->len;
        c->resp->body = malloc(c->len + 1);
        if (!c->resp->body)
            rc = AS_ENOMEM;
        else {
            memcpy(c->resp->body, c->buf, c->len);
            c->resp->body[c->len] = 0;
        }
    }
    conn_end(c, rc);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    conn *c = s->data;
    (void)b;
    if (c->closing)
        return;
    if (n < 0) {
        if (!c->sse && c->headers_done && (c->content_length < 0 || c->chunked) &&
            n == UV_EOF)
            finish_get(c, 0);   /* body delimited by close */
        else
            conn_end(c, AS_EIO);
        return;
    }
    c->len += (size_t)n;
    if (!c->headers_done) {
        size_t used = parse_headers(c);
        if (!used)
            return;
        memmove(c->buf, c->buf + used, c->len - used);
        c->len -= used;
        if (c->sse && c->status != 200) {
            conn_end(c, AS_EFORMAT);
            return;
        }
    }
    if (c->sse)
        sse_feed(c);
    else if (!c->chunked && c->content_length >= 0 && c->len >= (size_t)c->content_length) {
        c->len = (size_t)c->content_length;
        finish_get(c, 0);
    }
}

static void on_written(uv_write_t *w, int status)
{
    conn *c = w->data;
    if (status < 0)
        conn_end(c, AS_EIO);
}

static void on_connect(uv_connect_t *r, int status)
{
    conn *c = r->data;
    if (c->closing)
        return;
    if (status < 0) {
        conn_end(c, AS_EIO);
        return;
    }
    uv_buf_t b = uv_buf_init(c->req, (unsigned)strlen(c->req));
    c->wreq.data = c;
    if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_written) ||
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read))
        conn_end(c, AS_EIO);
}

static int conn_start(uv_loop_t *loop, conn *c, const char *addr, const char *path)
{
    struct sockaddr_in sa;
    char host[160];
    if (parse_addr(addr, &sa, host, sizeof host))
        return AS_EINVAL;
    snprintf(c->req, sizeof c->req,
             "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: actstore-client\r\n%s\r\n", path,
             host, c->sse ? "Accept: text/event-stream\r\n" : "Connection: close\r\n");
    uv_tcp_init(loop, &c->tcp);
    c->tcp.data = c;
    c->creq.data = c;
    if (uv_tcp_connect(&c->creq, &c->tcp, (const struct sockaddr *)&sa, on_connect)) {
        c->closing = true;
        c->rc = AS_EIO;
        uv_close((uv_handle_t *)&c->tcp, on_closed);
        return AS_EIO;
    }
    return 0;
}

/* ---- one-shot GET ------------------------------------------------------------ */

/* Run a one-shot client's loop to its end, then close its timer and the
 * loop. rc: how the connection started; AS_EINVAL (a bad address) gets its
 * message here. */
static int loop_finish(uv_loop_t *loop, uv_timer_t *timer, int rc, const char *addr,
                       char *err, size_t errlen)
{
    uv_run(loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)timer, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_loop_close(loop);
    if (rc == AS_EINVAL)
        return as_set_err(err, errlen, rc, "bad address '%s' (expected HOST:PORT)",
                          addr ? addr : "");
    return rc;
}

static void on_timeout(uv_timer_t *t)
{
    conn *c = t->data;
    conn_end(c, AS_EIO);
}

int as_client_get(const char *addr, const char *path, int timeout_ms,
                  as_client_response *out, char *err, size_t errlen)
{
    if (!out || !path)
        return as_set_err(err, errlen, AS_EINVAL, "path and out are required");
    memset(out, 0, sizeof *out);
    uv_loop_t loop;
    if (uv_loop_init(&loop))
        return as_set_err(err, errlen, AS_EIO, "cannot create an event loop");
    conn c;
    memset(&c, 0, sizeof c);
    c.resp = out;
    int rc = conn_start(&loop, &c, addr, path);
    uv_timer_t timer;
    uv_timer_init(&loop, &timer);
    timer.data = &c;
    uv_timer_start(&timer, on_timeout, timeout_ms > 0 ? (uint64_t)timeout_ms : 5000, 0);
    uv_unref((uv_handle_t *)&timer);
    rc = loop_finish(&loop, &timer, rc, addr, err, errlen);
    if (rc == AS_EINVAL)
        return rc;
    if (!rc)
        rc = c.rc;
    if (!rc && c.status <= 0)
        rc = AS_EFORMAT;
    if (rc) {
        as_client_response_free(out);
        return as_set_err(err, errlen, rc, "GET %s from %s: %s", path, addr,
                       rc == AS_EIO ? "connection failed, reset or timed out" : as_strerror(rc));
    }
    return 0;
}

void as_client_response_free(as_client_response *r)
{
    if (!r)
        return;
    free(r->body);
    memset(r, 0, sizeof *r);
}

/* ---- event stream ----------------------------------------------------------------- */

int as_client_sse_open(uv_loop_t *loop, const char *addr, as_client_event_fn on_event,
                       as_client_end_fn on_end, void *ud, as_client_sse **out)
{
    if (!loop || !on_event || !out)
        return AS_EINVAL;
    *out = NULL;
    struct sockaddr_in sa;
    char host[160];
    if (parse_addr(addr, &sa, host, sizeof host))
        return AS_EINVAL;
    as_client_sse *s = calloc(1, sizeof *s);
    if (!s)
        return AS_ENOMEM;
    s->c.sse = true;
    s->c.on_event = on_event;
    s->c.on_end = on_end;
    s->c.ud = ud;
    int rc = conn_start(loop, &s->c, addr, "/api/v1/events");
    if (rc)
        return rc;   /* freed by its close callback, which reports AS_EIO */
    *out = s;
    return 0;
}

void as_client_sse_close(as_client_sse *s)
{
    if (s)
        conn_end(&s->c, 0);
}

typedef struct sub_ctx {
    as_client_event_fn fn;
    void *ud;
    int rc;
    bool ended;
    uv_timer_t timer;
    as_client_sse *s;
} sub_ctx;

static int sub_event(void *ud, const char *d, size_t n, bool comment)
{
    sub_ctx *x = ud;
    return x->fn(x->ud, d, n, comment);
}

static void sub_end(void *ud, int rc)
{
    sub_ctx *x = ud;
    x->rc = rc;
    x->ended = true;
    uv_timer_stop(&x->timer);
}

static void sub_timeout(uv_timer_t *t)
{
    sub_ctx *x = t->data;
    if (!x->ended)
        as_client_sse_close(x->s);
}

int as_client_subscribe(const char *addr, int duration_ms, as_client_event_fn fn,
                        void *ud, char *err, size_t errlen)
{
    uv_loop_t loop;
    if (uv_loop_init(&loop))
        return as_set_err(err, errlen, AS_EIO, "cannot create an event loop");
    sub_ctx x = {.fn = fn, .ud = ud};
    uv_timer_init(&loop, &x.timer);
    x.timer.data = &x;
    int rc = as_client_sse_open(&loop, addr, sub_event, sub_end, &x, &x.s);
    if (!rc && duration_ms > 0)
        uv_timer_start(&x.timer, sub_timeout, (uint64_t)duration_ms, 0);
    rc = loop_finish(&loop, &x.timer, rc, addr, err, errlen);
    if (rc == AS_EINVAL)
        return rc;
    if (!rc)
        rc = x.rc;
    if (rc)
        as_set_err(err, errlen, rc, "event stream from %s: %s", addr,
                rc == AS_EIO ? "connection failed or closed" : as_strerror(rc));
    return rc;
}

/* ---- serving helper ------------------------------------------------------------------ */

int as_client_serve(const char *cmd, const char *addr, bool allow_remote,
                    as_store *const *stores, const char *const *labels, size_t n,
                    const char *const fleet[3], as_service **out)
{
    as_service_source src[16];
    if (n < 1 || n > 16) {
        fprintf(stderr, "actstore %s: error: --serve needs 1..16 stores\n", cmd);
        return AS_EINVAL;
    }
    for (size_t i = 0; i < n; i++)
        src[i] = (as_service_source){.label = labels ? labels[i] : NULL, .store = stores[i]};
    as_service_config cfg = {.addr = addr, .allow_remote = allow_remote};
    if (fleet)
        cfg.job = fleet[0], cfg.rank = fleet[1], cfg.host = fleet[2];
    char err[256] = "";
    int rc = as_service_start(&cfg, src, n, out, err, sizeof err);
    if (rc) {
        fprintf(stderr, "actstore %s: error: --serve %s: %s%s\n", cmd, addr ? addr : "", err,
                rc == AS_EINVAL && strstr(err, "allow_remote") ? " (add --serve-remote)" : "");
        return rc;
    }
    fprintf(stderr, "actstore %s: dashboard at %s  (metrics: %smetrics)\n", cmd,
            as_service_url(*out), as_service_url(*out));
    return 0;
}

/*
 * The event stream (/api/v1/events): one frame built per tick and shared
 * by reference by every client, heartbeats, and dropping the clients that
 * do not keep up (never waiting for them).
 */
#include <string.h>
#include <sys/socket.h>

#include "conn.h"

/* ---- frames ------------------------------------------------------------- */

as__frame *as__frame_new(const as__sb *b)
{
    as__frame *f = as__svc_malloc(sizeof *f + b->len);
    if (!f)
        return NULL;
    f->refs = 1;
    f->len = b->len;
    memcpy(f->data, b->p, b->len);
    return f;
}

void as__frame_unref(as__frame *f)
{
    if (f && --f->refs == 0)
        as__svc_free(f);
}

/* ---- SSE ------------------------------------------------------------------ */

static void sse_send_frame(as__conn *c, as__frame *f)
{
    f->refs++;
    uv_buf_t b = uv_buf_init(f->data, (unsigned)f->len);
    if (as__conn_write(c, &b, 1, NULL, f) == 0)
        AS__STAT_ADD(c->svc, AS__ST_FRAMES, 1);
}

void as__sse_start(as__conn *c)
{
    static const char hdr[] =
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
        "Cache-Control: no-cache, no-store\r\nConnection: keep-alive\r\n"
        "X-Accel-Buffering: no\r\n\r\nretry: 2000\n\n";
    as_service *svc = c->svc;
    c->sse = true;
    svc->nsse++;
    AS__STAT_SET(svc, AS__ST_SSE, svc->nsse);
    /* A small kernel send buffer per client: a client that stops reading
     * is detected after ~100 KiB instead of several MiB, and 500 clients
     * do not pin 500 autotuned buffers. */
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0) {
        int sz = 64 * 1024;
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
    }
    uv_buf_t b = uv_buf_init((char *)hdr, sizeof hdr - 1);
    if (as__conn_write(c, &b, 1, NULL, NULL))
        return;
    if (!svc->frame) {
        /* No client was subscribed, so no frame was built this tick. */
        as__sb fb;
        as__sb_init(&fb);
        as__render_frame(svc, &fb);
        if (!fb.oom)
            svc->frame = as__frame_new(&fb);
        as__sb_free(&fb);
    }
    if (svc->frame)
        sse_send_frame(c, svc->frame);
}

void as__http_broadcast(as_service *svc, as__frame *f)
{
    uint64_t now = uv_hrtime();
    for (as__conn *c = svc->conns, *next; c; c = next) {
        next = c->next;
        if (!c->sse || c->closing || c->draining)
            continue;
        size_t q = uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp);
        if (q == 0)
            c->backlog_since_ns = 0;
        else if (!c->backlog_since_ns)
            c->backlog_since_ns = now;
        /* Drop a client whose queue passed the limit, or that has not
         * drained its backlog for 5 s: never wait for a slow reader. */
        if (q > svc->cfg.sse_queue_limit ||
            (c->backlog_since_ns && now - c->backlog_since_ns > 5000000000ull)) {
            AS__STAT_ADD(svc, AS__ST_DROPPED, 1);
            as__conn_close(c);
            continue;
        }
        sse_send_frame(c, f);
    }
}

void as__http_heartbeat(as_service *svc)
{
    static char hb[] = ": heartbeat\n\n";
    for (as__conn *c = svc->conns; c; c = c->next) {
        if (!c->sse || c->closing || c->draining)
            continue;
        uv_buf_t b = uv_buf_init(hb, sizeof hb - 1);
        as__conn_write(c, &b, 1, NULL, NULL);
    }
}


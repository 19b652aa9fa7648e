/*
 * One HTTP connection of the service (store/service/). Internal: shared by
 * http.c (requests and responses) and sse.c (the event stream). Touched
 * only by the service thread.
 */
#ifndef AS_SERVICE_CONN_H
#define AS_SERVICE_CONN_H

#include <llhttp.h>

#include "svc.h"

#define URL_MAX 2048

struct as__conn {
    uv_tcp_t     tcp;
    as_service  *svc;
    as__conn    *prev, *next;
    llhttp_t     parser;
    char         url[URL_MAX];
    size_t       url_len, hdr_bytes;
    char         field[20];          /* lowercased header name prefix */
    size_t       field_len;
    bool         field_done;         /* a value followed the current field */
    bool         has_cl, has_te, cl_nonzero, has_host;
    char         host[72];           /* Host header value */
    bool         host_bad;           /* Host too long for host[] or repeated */
    size_t       host_len;
    int          reject;             /* status decided in a callback */
    bool         sse, draining, closing, in_message;
    unsigned     pending;            /* writes in flight */
    uint64_t     last_active_ns, drain_since_ns, backlog_since_ns;
    uint64_t     msg_start_ns;       /* first byte of the current request */
    uv_shutdown_t shut;
    as__conn_sink sink;              /* socketless (as__conn_open_local) */
    void         *sink_ud;
};

/* Queue bufs; own (as__svc_free) and frame (unref) are released after the
 * write, also on error. Returns 0, or -1 when the connection was closed. */
int as__conn_write(as__conn *c, uv_buf_t *bufs, unsigned n, char *own, as__frame *frame);
/* Switch c to the event stream: headers, then the current frame. */
void as__sse_start(as__conn *c);

#endif

/*
 * libFuzzer target: the service's request handling, in process, no socket.
 * A service over a store with saved items (as__service_open_local) gets one
 * socketless connection per input (as__conn_open_local); the input is fed
 * as a client's bytes, split into reads of fuzzer-chosen sizes, with ticks
 * (timeline, SSE frames, heartbeats, sweep) between them. Every write the
 * service makes must be a well-formed HTTP/1.1 response (status line with
 * its reason, 'Name: value' headers, Content-Length matching the body, none
 * after HEAD, JSON and Prometheus bodies that parse), or after an event
 * stream's head a well-formed event; nothing may follow a Connection: close
 * response; the connection must be freed once closed. ASan/UBSan catch the
 * rest.
 *
 * Input: byte 0 = mode: bits 0-2 the read size (0: the whole input as one
 * read; k: reads of 1 .. 2^k bytes, sizes from a fixed sequence), bit 3 a
 * tick after each of the first two reads, bit 4 a tick at the end. The rest: the bytes.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "actstore/service.h"
#include "actstore/store.h"
#include "store/service/conn.h"
#include "tests/support/http_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static as_store *store;
static as_service *svc;

typedef struct conn_state {
    bool sse;            /* the event stream's head was written */
    bool closed;         /* a Connection: close response was written */
    unsigned writes;
} conn_state;

static void die(const char *what, const uv_buf_t *bufs, unsigned n)
{
    fprintf(stderr, "malformed write: %s\n", what);
    for (unsigned i = 0; i < n; i++)
        fwrite(bufs[i].base, 1, bufs[i].len < 2048 ? bufs[i].len : 2048, stderr);
    fputc('\n', stderr);
    abort();
}

static void sink(as__conn *c, void *ud, const uv_buf_t *bufs, unsigned n)
{
    conn_state *st = ud;
    size_t len = 0;
    for (unsigned i = 0; i < n; i++)
        len += bufs[i].len;
    char *p = malloc(len ? len : 1);   /* exact size: ASan sees an overread */
    if (!p)
        abort();
    size_t off = 0;
    for (unsigned i = 0; i < n; i++) {
        memcpy(p + off, bufs[i].base, bufs[i].len);
        off += bufs[i].len;
    }
    st->writes++;
    if (st->closed)
        die("a write after a Connection: close response", bufs, n);
    const char *why;
    if (st->sse) {
        why = hc_sse(p, len);
    } else {
        hc_resp r;
        why = hc_head(p, len, &r);
        if (!why) {
            bool head_only = r.status < 400 && c->parser.method == HTTP_HEAD;
            why = hc_response(p, len, head_only, &r);
            st->closed = r.close;
            st->sse = r.event_stream && r.status == 200 && !head_only;
        }
    }
    if (why)
        die(why, bufs, n);
    free(p);
}

static void setup(void)
{
    as_store_config cfg = {.policy = "default=q8; layer:blk.1=zstd; activation_input=fp16",
                           .label = "fuzz"};
    if (as_store_create(&cfg, &store, NULL, 0))
        abort();
    static float x[4096];
    for (size_t i = 0; i < 4096; i++)
        x[i] = (float)i * 0.25f - 300.0f;
    as_tensor t = {.data = x, .dtype = AS_F32, .ndim = 2, .shape = {64, 64}};
    static const char *const layers[] = {"blk.0", "blk.1", "head \"q\"\\"};
    as_store_step_begin(store, 1);
    for (int k = 0; k < 6; k++) {
        as_save_info info = {.kind = k % 2 ? AS_KIND_ACTIVATION_INPUT : AS_KIND_GENERIC,
                             .layer = layers[k % 3]};
        as_handle h;
        if (as_store_save(store, &info, &t, &h))
            abort();
        if (k % 2 && as_store_release(store, h))
            abort();
    }
    as_service_config sc = {.max_header_bytes = 512, .timeline_points = 8, .quiet = true};
    as_service_source src = {.store = store};
    char err[256];
    if (as__service_open_local(&sc, &src, 1, &svc, err, sizeof err)) {
        fprintf(stderr, "open_local: %s\n", err);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!svc)
        setup();
    if (size < 1)
        return 0;
    unsigned mode = data[0];
    conn_state st = {0};
    as__conn *c = as__conn_open_local(svc, sink, &st);
    if (!c)
        abort();
    const char *p = (const char *)data + 1;
    size_t left = size - 1;
    uint32_t h = 2166136261u ^ mode;
    int ticks = 0;
    while (left) {
        size_t n = left;
        if (mode & 7) {
            h = h * 16777619u + 0x9e3779b9u;
            n = 1 + (h >> 8) % (1u << (mode & 7));
            if (n > left)
                n = left;
        }
        as__conn_feed(c, p, n);
        p += n, left -= n;
        if ((mode & 8) && ticks < 2) {   /* a tick costs ~100 reads */
            as__service_tick(svc);
            ticks++;
        }
    }
    if (mode & 16)
        as__service_tick(svc);
    if (!as__conn_closed(c))
        as__conn_close(c);
    uv_run(&svc->loop, UV_RUN_NOWAIT);   /* the close callback frees it */
    if (svc->conns || svc->nconns || svc->nsse) {
        fprintf(stderr, "connection not freed after close (%u open, %u streams)\n",
                svc->nconns, svc->nsse);
        abort();
    }
    return 0;
}

/*
 * actstore — the live memory service.
 *
 * Runs inside the training process, on its own thread with its own libuv
 * loop, and serves what the allocator and the store know over HTTP/1.1:
 *
 *     /                   dashboard page (embedded; uPlot charts)
 *     /metrics            Prometheus text exposition 0.0.4
 *     /api/v1/snapshot    JSON: everything the dashboard shows, now
 *     /api/v1/timeline    JSON: the service's ring of samples, ?since=SEQ
 *     /api/v1/events      Server-Sent Events, one shared frame per tick
 *     /api/v1/trace       Chrome trace-event JSON (Perfetto)
 *
 * Training never waits for it: the service reads the store and the arena
 * through their snapshot calls (as_store_stats_take, as_arena_snapshot_take)
 * on the service thread, at the tick rate; no call is made on the training
 * threads. Slow clients are dropped, never waited for.
 *
 * Only GET and HEAD are served. Requests with a body, a Content-Length or a
 * Transfer-Encoding are rejected and the connection closed (the llhttp of
 * Debian 12 has known request-smuggling flaws). See docs/service.md.
 */
#ifndef ACTSTORE_SERVICE_H
#define ACTSTORE_SERVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "actstore/alloc.h"
#include "actstore/common.h"
#include "actstore/store.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct as_service as_service;

/* What to serve: a store, or only an arena (then there are no per-kind or
 * per-layer store figures). label names it in every output ("A", "B");
 * NULL = the store's label, else "store<i>". Pointers must stay valid until
 * as_service_stop() returns. */
typedef struct as_service_source {
    const char *label;
    as_store   *store;    /* may be NULL */
    as_arena   *arena;    /* NULL = the store's arena (as_store_arena) */
} as_service_source;

/* Every field has a default when zero / NULL. */
typedef struct as_service_config {
    const char *addr;            /* "HOST:PORT", ":PORT" or "PORT"; NULL =
                                    "127.0.0.1:0" (port chosen by the OS) */
    bool        allow_remote;    /* required to bind a non-loopback address
                                    (a warning is printed to stderr) */
    unsigned    max_connections; /* default: a quarter of the process's
                                    descriptor limit, 16..1024; beyond:
                                    503 and close */
    unsigned    max_header_bytes;/* request line + headers; default 8192;
                                    beyond: 431 and close */
    unsigned    tick_hz;         /* sampling and SSE rate; default 10, 1..50 */
    unsigned    heartbeat_ms;    /* SSE comment lines; default 5000 */
    size_t      sse_queue_limit; /* bytes queued to one SSE client before it
                                    is dropped; default 1 MiB */
    unsigned    idle_timeout_ms; /* idle keep-alive / slow header timeout;
                                    default 30000 */
    unsigned    metrics_top_layers; /* per-layer series per store; default 20 */
    unsigned    timeline_points; /* ring capacity (ticks); default 3000 */
    bool        quiet;           /* do not print the warning for remote binds */
    /* Fleet labels, on every /metrics sample and in /api/v1/snapshot, so
     * one Prometheus can aggregate many training processes (docs/service.md,
     * "Fleet view"). NULL = the environment: ACTSTORE_JOB; ACTSTORE_RANK,
     * else RANK, OMPI_COMM_WORLD_RANK, PMI_RANK; ACTSTORE_HOST; else
     * "actstore", "0" and the host name. Copied at start; 1..63 bytes
     * (rank 1..31), else AS_EINVAL. */
    const char *job, *rank, *host;
} as_service_config;

/* Start serving nsrc sources (1..16) on cfg->addr (cfg may be NULL).
 * Binds and listens before returning, so the port is known and requests
 * can be made as soon as this returns 0. On success *out owns the service.
 * Errors: AS_EINVAL (bad address, nsrc out of range, source without store
 * and arena, bad config value, non-loopback address without allow_remote;
 * err names which), AS_EIO (bind/listen failed: err has the system error),
 * AS_ENOMEM. err (may be NULL) receives a message on error.
 * Thread-safety: may be called from any thread; one call per service.
 * Training threads keep using the stores and arenas meanwhile: the service
 * only calls their snapshot functions, on its own thread. That thread
 * blocks SIGPIPE for itself (a client closing mid-response); the process's
 * signal dispositions are left alone. */
AS_API int as_service_start(const as_service_config *cfg,
                            const as_service_source *src, size_t nsrc,
                            as_service **out, char *err, size_t errlen);

/* Stop: close every connection and the listener, join the thread, close the
 * loop, free everything. NULL-safe. Must not race with other calls on the
 * same service. */
AS_API void as_service_stop(as_service *svc);

/* The bound port (useful with port 0) and the base URL
 * ("http://127.0.0.1:8080/"). The string is owned by the service and valid
 * until as_service_stop. Thread-safe (fixed at start). NULL svc: -1 / "". */
AS_API int as_service_port(const as_service *svc);
AS_API const char *as_service_url(const as_service *svc);

/* Counters of the service itself. sse_dropped counts every client dropped
 * for not reading (slow event-stream readers, pipelining floods). */
typedef struct as_service_stats {
    uint64_t requests, responses_4xx, responses_5xx;
    uint64_t connections_open, connections_total, connections_rejected;
    uint64_t sse_clients, sse_frames, sse_dropped;
    uint64_t ticks;
    uint64_t tick_ns_last, tick_ns_max;   /* time to gather + build a frame */
    uint64_t memory_bytes;                /* the service's own buffers */
    uint64_t cpu_ns;                      /* CPU time of the service thread
                                             (updated every tick) */
} as_service_stats;
/* Copy the counters into *out (zeroed for a NULL svc). Thread-safe: each
 * counter is read atomically, but the set is not one consistent instant.
 * No errors. */
AS_API void as_service_get_stats(const as_service *svc, as_service_stats *out);

#ifdef __cplusplus
}
#endif
#endif

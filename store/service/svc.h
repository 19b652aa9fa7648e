/*
 * Internals of the service (store/service/). Not installed.
 *
 * Threads: everything below is touched only by the service thread, except
 * the stats counters (atomics) and the start/stop handshake.
 */
#ifndef AS_SERVICE_SVC_H
#define AS_SERVICE_SVC_H

#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "actstore/service.h"

/* ---- the service's own memory ------------------------------------------
 * Plain malloc (jemalloc's default arenas, not the instrumented arena), so
 * it never shows up in the numbers it serves; counted apart and exported as
 * actstore_service_memory_bytes. */
void *as__svc_malloc(size_t n);
void *as__svc_realloc(void *p, size_t n);
void  as__svc_free(void *p);
uint64_t as__svc_memory(void);

/* ---- growable text buffer ----------------------------------------------- */
typedef struct as__sb {
    char  *p;
    size_t len, cap;
    bool   oom;          /* sticky: an append failed; content truncated */
} as__sb;

void as__sb_init(as__sb *b);
void as__sb_free(as__sb *b);
void as__sb_reserve(as__sb *b, size_t extra);
void as__sb_put(as__sb *b, const char *s, size_t n);
void as__sb_puts(as__sb *b, const char *s);
void as__sb_printf(as__sb *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void as__sb_u64(as__sb *b, uint64_t v);
void as__sb_dbl(as__sb *b, double v);      /* JSON-safe: NaN/inf -> 0 */
void as__sb_jstr(as__sb *b, const char *s); /* JSON string with quotes */
void as__sb_plabel(as__sb *b, const char *s); /* Prometheus label value */

/* ---- data provider -----------------------------------------------------
 * One view per source per tick: the arena snapshot (new timeline samples
 * since since_seq only) and the store accounting. The default provider
 * calls as_arena_snapshot_take / as_store_stats_take; tests plug in a fake
 * one (as__service_start_with). */
typedef struct as__svc_view {
    bool              has_arena, has_store, has_plan;
    as_arena_snapshot arena;
    as_store_stats    store;
    as_store_plan     plan;      /* auto's plan (plan.active when there is one) */
} as__svc_view;

typedef struct as__svc_provider {
    /* Fill *v (zeroed by the caller). Returns 0 or an AS_E* code (the
     * source is then shown as unavailable for this tick). */
    int  (*take)(void *ud, size_t i, uint64_t since_seq, as__svc_view *v);
    void (*release)(void *ud, size_t i, as__svc_view *v);
    void *ud;
} as__svc_provider;

/* as_service_stop that returns uv_loop_close()'s result (tests: 0). */
int as__service_stop(as_service *svc);

int as__service_start_with(const as_service_config *cfg,
                           const char *const *labels, size_t nsrc,
                           const as__svc_provider *prov, as_service **out,
                           char *err, size_t errlen);

typedef struct as__conn as__conn;

/* ---- the service without a thread or a socket (fuzz/, tests) -------------
 * as__service_open_local builds a service over the default provider like
 * as_service_start, with its loop but no listener and no thread: the caller
 * drives it on its own thread with as__service_tick (one tick: gather,
 * timeline, SSE frame, heartbeat, sweep), as__conn_open_local /
 * as__conn_feed (http.c) and uv_run(&svc->loop, UV_RUN_NOWAIT) for the
 * close callbacks. as__service_close_local closes every connection and
 * frees it all; returns uv_loop_close()'s result (0). */
int  as__service_open_local(const as_service_config *cfg, const as_service_source *src,
                            size_t nsrc, as_service **out, char *err, size_t errlen);
void as__service_tick(as_service *svc);
int  as__service_close_local(as_service *svc);

/* Where a socketless connection's bytes go: every write (one response, the
 * event stream's header, one frame or heartbeat) as one call, synchronously. */
typedef void (*as__conn_sink)(as__conn *c, void *ud, const uv_buf_t *bufs, unsigned n);
/* A connection with no socket, parsed and answered like an accepted one.
 * NULL when out of memory. Closed by as__service_close_local, or earlier
 * by the service itself (an error response, Connection: close). */
as__conn *as__conn_open_local(as_service *svc, as__conn_sink sink, void *ud);
/* Bytes as one read from the socket would deliver them. */
void as__conn_feed(as__conn *c, const char *p, size_t n);
/* Close now (pending writes are cancelled; freed in the close callback,
 * in the next loop run). */
void as__conn_close(as__conn *c);
/* Whether c was closed. */
bool as__conn_closed(const as__conn *c);

/* ---- fault injection (tests): the nth as__svc_malloc / as__svc_realloc
 * from now fails (sticky: every one from the nth on). Process-wide. */
void as__svc_fault_set(long nth, bool sticky);
long as__svc_fault_left(void);   /* allocations to go; 0 = done */

/* ---- timeline ring (one point per tick and source) ---------------------- */
typedef struct as__svc_point {
    uint64_t live, peak, resident;
    uint64_t saved_raw, saved_stored;
    uint64_t saved_raw_peak, saved_stored_peak;   /* per step */
    uint64_t tags[AS_TAG_FIXED_COUNT];
    uint64_t kind_stored[AS_KIND_COUNT];
    uint64_t kind_stored_peak[AS_KIND_COUNT];   /* per step */
    uint64_t step;
    uint8_t  phase, valid;
} as__svc_point;

typedef struct as__svc_mark {
    uint64_t seq, t_ns, step;
    uint16_t src;
    uint8_t  type;    /* AS_SAMPLE_STEP or AS_SAMPLE_PHASE */
    uint8_t  phase;
} as__svc_mark;

/* ---- SSE frames: built once per tick, shared by every client ------------ */
typedef struct as__frame {
    unsigned refs;
    size_t   len;
    char     data[];
} as__frame;

struct as_service {
    as_service_config cfg;
    char              addr_host[64];
    int               port;
    char              url[96];
    size_t            nsrc;
    char            (*labels)[64];
    /* fleet labels (fleet.c) and their Prometheus form, job="..",rank=".." */
    char              fleet_job[64], fleet_rank[32], fleet_host[64];
    char              prom_labels[256];
    as__svc_provider  prov;
    struct default_src { as_store *store; as_arena *arena; uint64_t last_refresh_ns; } *dsrc;

    uv_thread_t       thread;
    uv_loop_t         loop;
    uv_tcp_t          listener;
    uv_timer_t        tick;
    uv_async_t        wake;        /* stop request */
    uv_sem_t          ready;
    int               start_rc;
    int               loop_close_rc;   /* uv_loop_close() at thread exit */
    char              start_err[160];
    atomic_bool       stopping;

    /* latest views (one per source) and the monotonic clock of the tick */
    as__svc_view     *views;
    int              *view_rc;
    uint64_t         *since_seq;   /* per source: last arena sample seq */
    uint64_t          now_ns, start_ns;
    uint64_t          last_heartbeat_ns;

    /* timeline */
    size_t            tl_cap, tl_count, tl_head;   /* head = next slot */
    uint64_t          tl_seq;                      /* seq of the newest */
    uint64_t         *tl_seqs, *tl_t;              /* (tl_cap) */
    as__svc_point    *tl_pts;                      /* (tl_cap, nsrc) */
    as__svc_mark     *marks;                       /* (mk_cap) ring */
    size_t            mk_cap, mk_count, mk_head;
    uint64_t          mk_first_new;   /* seq of the first mark of this tick */

    /* peak since last scrape, per source */
    uint64_t         *scrape_peak, *prev_peak_seen;

    /* connections */
    as__conn         *conns;       /* doubly linked list */
    unsigned          nconns, nsse;
    as__frame        *frame;       /* latest SSE frame (ref held) */

    /* stats (atomics: read from other threads) */
    atomic_uint_fast64_t st[16];
};

/* The arena figures of a source, in the order both renderings list them:
 * BOTH(JSON key, Prometheus family, type, help, as_arena_snapshot field)
 * rows go to the JSON snapshot (render.c) and to /metrics (metrics.c),
 * JSON(key, field) rows to the JSON snapshot only. */
#define AS__SVC_ARENA(BOTH, JSON)                                               \
    BOTH("live_bytes", "actstore_live_bytes", "gauge",                          \
         "Bytes live in the allocator arena (usable sizes, all tags).",        \
         total.live_usable)                                                     \
    BOTH("peak_bytes", "actstore_peak_bytes", "gauge",                          \
         "Peak live bytes since the last peak reset (per training step).",     \
         total.peak_usable)                                                     \
    JSON("requested_bytes", total.live_requested)                               \
    BOTH("budget_bytes", "actstore_budget_bytes", "gauge",                      \
         "Allocation budget of the arena (0 = none).", budget_bytes)            \
    BOTH("resident_bytes", "actstore_arena_resident_bytes", "gauge",            \
         "Resident bytes of the jemalloc arena (last stats refresh).", resident) \
    BOTH("mapped_bytes", "actstore_arena_mapped_bytes", "gauge",                \
         "Mapped bytes of the jemalloc arena.", mapped)                         \
    BOTH("retained_bytes", "actstore_arena_retained_bytes", "gauge",            \
         "Retained (unmapped, reusable) bytes of the jemalloc arena.", retained) \
    BOTH("reserved_bytes", "actstore_arena_reserved_bytes_total", "counter",    \
         "Bytes reserved from the OS by the arena's extent hooks.",            \
         reserved_bytes)                                                        \
    BOTH("purged_bytes", "actstore_arena_purged_bytes_total", "counter",        \
         "Bytes purged back to the OS by the arena's extent hooks.",           \
         purged_bytes)                                                          \
    BOTH("allocs", "actstore_allocations_total", "counter",                     \
         "Allocations made in the arena.", total.allocs)                        \
    BOTH("frees", "actstore_frees_total", "counter", "Frees made in the arena.", \
         total.frees)

/* The counters of as_service_stats: X(index name, field), in st[] order. */
#define AS__SVC_STATS(X)                                                    \
    X(REQUESTS, requests) X(4XX, responses_4xx) X(5XX, responses_5xx)      \
    X(OPEN, connections_open) X(CONN_TOTAL, connections_total)             \
    X(REJECTED, connections_rejected) X(SSE, sse_clients)                  \
    X(FRAMES, sse_frames) X(DROPPED, sse_dropped) X(TICKS, ticks)          \
    X(TICK_NS, tick_ns_last) X(TICK_MAX, tick_ns_max) X(CPU_NS, cpu_ns)
enum {
#define AS__ST_INDEX(k, field) AS__ST_##k,
    AS__SVC_STATS(AS__ST_INDEX)
#undef AS__ST_INDEX
};
#define AS__STAT_ADD(svc, k, v) atomic_fetch_add(&(svc)->st[k], (v))
#define AS__STAT_SET(svc, k, v) atomic_store(&(svc)->st[k], (v))

/* http.c */
void as__http_on_connection(uv_stream_t *server, int status);
void as__http_close_all(as_service *svc);
void as__http_broadcast(as_service *svc, as__frame *f);
void as__http_heartbeat(as_service *svc);
void as__http_sweep(as_service *svc);
as__frame *as__frame_new(const as__sb *b);
void as__frame_unref(as__frame *f);

/* render.c: JSON documents and the SSE frame */
void as__render_snapshot(as_service *svc, as__sb *b);
void as__render_plan(as_service *svc, as__sb *b);
void as__render_timeline(as_service *svc, uint64_t since, as__sb *b);
void as__render_frame(as_service *svc, as__sb *b);
void as__render_trace(as_service *svc, as__sb *b);

/* metrics.c */
void as__render_metrics(as_service *svc, as__sb *b);

/* assets.c (generated at build time): the dashboard files */
typedef struct as__asset {
    const char          *path;   /* "/", "/uplot.min.js", ... */
    const char          *ctype;
    const unsigned char *data;
    size_t               len;
} as__asset;
const as__asset *as__asset_find(const char *path, size_t len);

/* Helpers shared by the renderers. */
/* Resolve the fleet labels (config, environment, defaults) into svc. */
int as__svc_fleet_init(as_service *svc, const as_service_config *c,
                       char *err, size_t errlen);

const char *as__svc_kind_name(int kind);
const char *as__svc_phase_name(int phase);
const char *as__svc_tag_name(const as__svc_view *v, size_t t);
double as__ns_to_s(uint64_t ns, uint64_t origin);

/* Timeline access: i-th point from the oldest (0 .. tl_count-1). */
static inline size_t as__tl_slot(const as_service *svc, size_t i)
{
    return (svc->tl_head + svc->tl_cap - svc->tl_count + i) % svc->tl_cap;
}

#endif

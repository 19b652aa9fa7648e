/*
 * The service: lifetime (start/stop handshake with its thread), the tick
 * (gather one view per source, append to the timeline ring, build and
 * broadcast the shared SSE frame), and the default data provider.
 *
 * Threading: as_service_start() spawns the service thread, which owns the
 * loop and every handle; the caller waits on a semaphore until the listener
 * is bound (or failed). as_service_stop() wakes the loop with an async
 * handle, which closes everything; the loop then runs out of handles, the
 * thread closes it and exits, and stop joins it.
 */
#include <arpa/inet.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "svc.h"
#include "util/clock.h"
#include "util/err.h"

/* ---- defaults and address ------------------------------------------------ */

/* "HOST:PORT", "[V6]:PORT", ":PORT", "PORT", "HOST" (port 0). */
static int parse_addr(const char *addr, char *host, size_t hostlen, int *port)
{
    const char *colon = NULL, *h = addr, *hend;
    if (addr[0] == '[') {
        const char *rb = strchr(addr, ']');
        if (!rb)
            return -1;
        h = addr + 1;
        hend = rb;
        colon = rb[1] == ':' ? rb + 1 : NULL;
        if (rb[1] && !colon)
            return -1;
    } else {
        colon = strrchr(addr, ':');
        hend = colon ? colon : addr + strlen(addr);
        if (!colon && strspn(addr, "0123456789") == strlen(addr) && *addr) {
            hend = addr;   /* a bare port */
            colon = addr - 1;
        }
    }
    size_t hl = (size_t)(hend - h);
    if (hl >= hostlen)
        return -1;
    memcpy(host, h, hl);
    host[hl] = 0;
    if (!hl || !strcmp(host, "localhost"))
        snprintf(host, hostlen, "127.0.0.1");
    *port = 0;
    if (colon) {
        const char *p = colon + 1;
        if (!*p || strspn(p, "0123456789") != strlen(p) || strlen(p) > 5)
            return -1;
        *port = atoi(p);
        if (*port > 65535)
            return -1;
    }
    return 0;
}

static bool is_loopback(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;
        return (ntohl(s4->sin_addr.s_addr) >> 24) == 127;
    }
    const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
    static const unsigned char lo[16] = {[15] = 1};
    static const unsigned char mapped[12] = {[10] = 0xff, [11] = 0xff};  /* ::ffff:a.b.c.d */
    const unsigned char *a = (const unsigned char *)&s6->sin6_addr;
    return !memcmp(a, lo, 16) || (!memcmp(a, mapped, 12) && a[12] == 127);
}

/* ---- the default provider (store + arena snapshots) ---------------------- */

static int dflt_take(void *ud, size_t i, uint64_t since, as__svc_view *v)
{
    struct default_src *d = &((struct default_src *)ud)[i];
    if (d->arena) {
        /* jemalloc's resident/mapped figures are refreshed by the arena's
         * sampler when it runs; refresh them here at most twice a second
         * (about 15 us a call, on this thread). */
        uint64_t now = as_clock_wall_ns();
        if (now - d->last_refresh_ns > 500000000ull) {
            as_arena_refresh_stats(d->arena);
            d->last_refresh_ns = now;
        }
        int rc = as_arena_snapshot_take(d->arena, since, &v->arena);
        if (rc)
            return rc;
        v->has_arena = true;
    }
    if (d->store) {
        int rc = as_store_stats_take(d->store, &v->store);
        if (rc) {
            if (v->has_arena)
                as_arena_snapshot_free(&v->arena);
            v->has_arena = false;
            return rc;
        }
        v->has_store = true;
        if (as_store_plan_take(d->store, &v->plan) == 0)
            v->has_plan = true;
    }
    return 0;
}

static void dflt_release(void *ud, size_t i, as__svc_view *v)
{
    (void)ud;
    (void)i;
    if (v->has_arena)
        as_arena_snapshot_free(&v->arena);
    if (v->has_store)
        as_store_stats_free(&v->store);
    if (v->has_plan)
        as_store_plan_free(&v->plan);
}

/* ---- the tick ------------------------------------------------------------ */

static void peak_observe(as_service *svc, size_t i, uint64_t peak, uint64_t live)
{
    /* A peak figure that changed since the last observation (new maximum,
     * or reset by the trainer) happened after that observation, so it
     * belongs to this scrape interval; an unchanged one may be older, so
     * only the live value counts then. */
    uint64_t cand = peak != svc->prev_peak_seen[i] ? peak : live;
    svc->prev_peak_seen[i] = peak;
    if (cand > svc->scrape_peak[i])
        svc->scrape_peak[i] = cand;
}

static void push_mark(as_service *svc, size_t src, const as_sample *s)
{
    as__svc_mark *m = &svc->marks[svc->mk_head];
    m->seq = svc->tl_seq + 1;     /* ordered with the tick that saw it */
    m->t_ns = s->t_ns;
    m->step = s->step;
    m->src = (uint16_t)src;
    m->type = s->type;
    m->phase = s->phase;
    svc->mk_head = (svc->mk_head + 1) % svc->mk_cap;
    if (svc->mk_count < svc->mk_cap)
        svc->mk_count++;
}

static void gather(as_service *svc)
{
    for (size_t i = 0; i < svc->nsrc; i++) {
        as__svc_view *v = &svc->views[i];
        if (svc->view_rc[i] == 0)
            svc->prov.release(svc->prov.ud, i, v);
        memset(v, 0, sizeof *v);
        svc->view_rc[i] = svc->prov.take(svc->prov.ud, i, svc->since_seq[i], v);
        if (svc->view_rc[i]) {
            memset(v, 0, sizeof *v);
            continue;
        }
        if (v->has_arena) {
            const as_arena_snapshot *a = &v->arena;
            for (size_t k = 0; k < a->nsamples; k++) {
                const as_sample *s = &a->samples[k];
                if (s->seq > svc->since_seq[i])
                    svc->since_seq[i] = s->seq;
                if (s->type == AS_SAMPLE_STEP || s->type == AS_SAMPLE_PHASE)
                    push_mark(svc, i, s);
                peak_observe(svc, i, s->peak_usable, s->live_usable);
            }
            peak_observe(svc, i, a->total.peak_usable, a->total.live_usable);
        }
    }
}

static void timeline_append(as_service *svc)
{
    size_t slot = svc->tl_head;
    svc->tl_seq++;
    svc->tl_seqs[slot] = svc->tl_seq;
    svc->tl_t[slot] = svc->now_ns;
    for (size_t i = 0; i < svc->nsrc; i++) {
        as__svc_point *p = &svc->tl_pts[slot * svc->nsrc + i];
        const as__svc_view *v = &svc->views[i];
        memset(p, 0, sizeof *p);
        if (svc->view_rc[i])
            continue;
        p->valid = 1;
        if (v->has_arena) {
            p->live = v->arena.total.live_usable;
            p->peak = v->arena.total.peak_usable;
            p->resident = v->arena.resident;
            for (size_t t = 0; t < AS_TAG_FIXED_COUNT && t < v->arena.ntags; t++)
                p->tags[t] = v->arena.tags[t].live_usable;
            p->step = v->arena.step;
            p->phase = (uint8_t)v->arena.phase;
        }
        if (v->has_store) {
            p->saved_raw = v->store.total.raw_live;
            p->saved_stored = v->store.total.stored_live;
            p->saved_raw_peak = v->store.total.raw_peak;
            p->saved_stored_peak = v->store.total.stored_peak;
            for (size_t k = 0; k < AS_KIND_COUNT; k++) {
                p->kind_stored[k] = v->store.kinds[k].stored_live;
                p->kind_stored_peak[k] = v->store.kinds[k].stored_peak;
            }
            p->step = v->store.step;
            p->phase = (uint8_t)v->store.phase;
        }
    }
    svc->tl_head = (svc->tl_head + 1) % svc->tl_cap;
    if (svc->tl_count < svc->tl_cap)
        svc->tl_count++;
}

void as__service_tick(as_service *svc)
{
    uint64_t t0 = uv_hrtime();
    svc->now_ns = as_clock_wall_ns();
    svc->mk_first_new = svc->tl_seq + 1;
    gather(svc);
    timeline_append(svc);
    if (svc->nsse) {
        as__sb b;
        as__sb_init(&b);
        as__render_frame(svc, &b);
        as__frame *f = b.oom ? NULL : as__frame_new(&b);
        as__sb_free(&b);
        if (f) {
            if (svc->frame)
                as__frame_unref(svc->frame);
            svc->frame = f;
            as__http_broadcast(svc, f);
        }
    }
    if (svc->now_ns - svc->last_heartbeat_ns >= svc->cfg.heartbeat_ms * 1000000ull) {
        svc->last_heartbeat_ns = svc->now_ns;
        as__http_heartbeat(svc);
    }
    as__http_sweep(svc);
    uint64_t dt = uv_hrtime() - t0;
    AS__STAT_ADD(svc, AS__ST_TICKS, 1);
    AS__STAT_SET(svc, AS__ST_TICK_NS, dt);
    if (dt > atomic_load(&svc->st[AS__ST_TICK_MAX]))
        AS__STAT_SET(svc, AS__ST_TICK_MAX, dt);
    struct timespec cpu;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &cpu) == 0)
        AS__STAT_SET(svc, AS__ST_CPU_NS, (uint64_t)cpu.tv_sec * 1000000000ull + (uint64_t)cpu.tv_nsec);
}

static void on_tick(uv_timer_t *t) { as__service_tick(t->data); }

/* ---- thread, start, stop ------------------------------------------------- */

static void on_close_noop(uv_handle_t *h) { (void)h; }

static void on_wake(uv_async_t *a)
{
    as_service *svc = a->data;
    if (!atomic_load(&svc->stopping))
        return;
    uv_timer_stop(&svc->tick);
    uv_close((uv_handle_t *)&svc->tick, on_close_noop);
    uv_close((uv_handle_t *)&svc->listener, on_close_noop);
    uv_close((uv_handle_t *)&svc->wake, on_close_noop);
    as__http_close_all(svc);
}

static int bind_listen(as_service *svc)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    int rc = uv_ip4_addr(svc->addr_host, svc->port, (struct sockaddr_in *)&ss);
    if (rc)
        rc = uv_ip6_addr(svc->addr_host, svc->port, (struct sockaddr_in6 *)&ss);
    if (rc) {
        snprintf(svc->start_err, sizeof svc->start_err,
                 "address '%s' is not a numeric IPv4/IPv6 address", svc->addr_host);
        return AS_EINVAL;
    }
    if (!is_loopback(&ss)) {
        if (!svc->cfg.allow_remote) {
            snprintf(svc->start_err, sizeof svc->start_err,
                     "refusing to bind non-loopback address %s without allow_remote "
                     "(the service has no authentication)", svc->addr_host);
            return AS_EINVAL;
        }
        if (!svc->cfg.quiet)
            fprintf(stderr, "actstore service: WARNING: listening on non-loopback "
                            "address %s; anyone who can reach it sees the memory "
                            "figures of this process\n", svc->addr_host);
    }
    rc = uv_tcp_bind(&svc->listener, (const struct sockaddr *)&ss, 0);
    if (!rc)
        rc = uv_listen((uv_stream_t *)&svc->listener, 511, as__http_on_connection);
    if (rc) {
        snprintf(svc->start_err, sizeof svc->start_err, "cannot listen on %s:%d: %s",
                 svc->addr_host, svc->port, uv_strerror(rc));
        return AS_EIO;
    }
    struct sockaddr_storage got;
    int len = sizeof got;
    uv_tcp_getsockname(&svc->listener, (struct sockaddr *)&got, &len);
    svc->port = ntohs(got.ss_family == AF_INET
                          ? ((struct sockaddr_in *)&got)->sin_port
                          : ((struct sockaddr_in6 *)&got)->sin6_port);
    bool v6 = got.ss_family == AF_INET6;
    snprintf(svc->url, sizeof svc->url, "http://%s%s%s:%d/", v6 ? "[" : "",
             svc->addr_host, v6 ? "]" : "", svc->port);
    return 0;
}

/* The first view, before any tick, so the first request has data. */
static void first_view(as_service *svc)
{
    svc->now_ns = svc->start_ns = svc->last_heartbeat_ns = as_clock_wall_ns();
    gather(svc);
    timeline_append(svc);
}

static void thread_main(void *arg)
{
    as_service *svc = arg;
    /* A write to a connection the client already closed raises SIGPIPE in
     * the writing thread, whose default action ends the whole training
     * process. Block it on this thread only (the host's disposition is left
     * alone): the write then fails with EPIPE and the connection is closed. */
    sigset_t pipe_set;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, NULL);
    uv_tcp_init(&svc->loop, &svc->listener);
    svc->listener.data = svc;
    uv_timer_init(&svc->loop, &svc->tick);
    svc->tick.data = svc;
    uv_async_init(&svc->loop, &svc->wake, on_wake);
    svc->wake.data = svc;
    svc->start_rc = bind_listen(svc);
    if (svc->start_rc) {
        atomic_store(&svc->stopping, true);
        on_wake(&svc->wake);
        uv_run(&svc->loop, UV_RUN_DEFAULT);
        svc->loop_close_rc = uv_loop_close(&svc->loop);
        uv_sem_post(&svc->ready);
        return;
    }
    first_view(svc);
    uint64_t period = 1000 / svc->cfg.tick_hz;
    uv_timer_start(&svc->tick, on_tick, period, period);
    uv_sem_post(&svc->ready);
    uv_run(&svc->loop, UV_RUN_DEFAULT);
    svc->loop_close_rc = uv_loop_close(&svc->loop);
}

/* The service's arrays, X(field, elements): allocated together when it is
 * created (one missing fails the creation), freed by svc_free. */
#define SVC_ARRAYS(X)                                                          \
    X(labels, svc->nsrc) X(views, svc->nsrc) X(view_rc, svc->nsrc)            \
    X(since_seq, svc->nsrc) X(scrape_peak, svc->nsrc)                         \
    X(prev_peak_seen, svc->nsrc) X(tl_seqs, svc->tl_cap) X(tl_t, svc->tl_cap) \
    X(tl_pts, svc->tl_cap * svc->nsrc) X(marks, svc->mk_cap)

static void svc_free(as_service *svc)
{
    if (!svc)
        return;
    if (svc->views)
        for (size_t i = 0; i < svc->nsrc; i++)
            if (svc->view_rc[i] == 0)
                svc->prov.release(svc->prov.ud, i, &svc->views[i]);
    if (svc->frame)
        as__frame_unref(svc->frame);
#define FREE_ARRAY(f, n) as__svc_free(svc->f);
    SVC_ARRAYS(FREE_ARRAY)
#undef FREE_ARRAY
    as__svc_free(svc->dsrc);
    as__svc_free(svc);
}

/* Check cfg, allocate the service, its views and rings, and init its loop
 * (no listener, no thread yet). */
static int svc_create(const as_service_config *cfg, const char *const *labels,
                      size_t nsrc, const as__svc_provider *prov, as_service **out,
                      char *err, size_t errlen)
{
    if (!out || !prov || !prov->take || !prov->release)
        return as_set_err(err, errlen, AS_EINVAL, "out and provider are required");
    *out = NULL;
    if (nsrc < 1 || nsrc > 16)
        return as_set_err(err, errlen, AS_EINVAL, "need 1..16 sources, got %zu", nsrc);
    as_service_config c = cfg ? *cfg : (as_service_config){0};
    if (!c.max_connections) {
        /* the service shares the training process's descriptors: by default
         * it takes at most a quarter of them (a data loader or the offload
         * policy must still be able to open files) */
        struct rlimit rl;
        rlim_t q = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY
                       ? rl.rlim_cur / 4 : 1024;
        c.max_connections = q < 16 ? 16 : q > 1024 ? 1024 : (unsigned)q;
    }
    if (!c.max_header_bytes) c.max_header_bytes = 8192;
    if (!c.tick_hz) c.tick_hz = 10;
    if (!c.heartbeat_ms) c.heartbeat_ms = 5000;
    if (!c.sse_queue_limit) c.sse_queue_limit = 1u << 20;
    if (!c.idle_timeout_ms) c.idle_timeout_ms = 30000;
    if (!c.metrics_top_layers) c.metrics_top_layers = 20;
    if (!c.timeline_points) c.timeline_points = 3000;
    if (c.tick_hz > 50)
        return as_set_err(err, errlen, AS_EINVAL, "tick_hz %u out of range 1..50", c.tick_hz);
    if (c.max_header_bytes < 256)
        return as_set_err(err, errlen, AS_EINVAL, "max_header_bytes %u below 256",
                       c.max_header_bytes);

    as_service *svc = as__svc_malloc(sizeof *svc);
    if (!svc)
        return as_set_err(err, errlen, AS_ENOMEM, "out of memory");
    memset(svc, 0, sizeof *svc);
    svc->cfg = c;
    svc->cfg.addr = NULL;
    if (parse_addr(c.addr ? c.addr : "127.0.0.1:0", svc->addr_host,
                   sizeof svc->addr_host, &svc->port)) {
        svc_free(svc);
        return as_set_err(err, errlen, AS_EINVAL,
                       "bad address '%s' (expected HOST:PORT, :PORT or PORT)", c.addr);
    }
    int frc = as__svc_fleet_init(svc, &c, err, errlen);
    if (frc) {
        svc_free(svc);
        return frc;
    }
    svc->nsrc = nsrc;
    svc->prov = *prov;
    svc->tl_cap = c.timeline_points;
    svc->mk_cap = 16384;   /* ~75 s of marks at 50 steps/s, 4 marks a step */
    bool arrays = true;
#define ALLOC_ARRAY(f, n) arrays &= (svc->f = as__svc_malloc((n) * sizeof *svc->f)) != NULL;
    SVC_ARRAYS(ALLOC_ARRAY)
#undef ALLOC_ARRAY
    if (!arrays) {
        svc_free(svc);
        return as_set_err(err, errlen, AS_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < nsrc; i++) {
        svc->view_rc[i] = AS_ENOTFOUND;   /* nothing taken yet */
        svc->since_seq[i] = svc->scrape_peak[i] = svc->prev_peak_seen[i] = 0;
        memset(&svc->views[i], 0, sizeof svc->views[i]);
        if (labels && labels[i] && labels[i][0])
            snprintf(svc->labels[i], sizeof svc->labels[i], "%s", labels[i]);
        else
            snprintf(svc->labels[i], sizeof svc->labels[i], "store%zu", i);
    }
    if (uv_loop_init(&svc->loop) || uv_sem_init(&svc->ready, 0)) {
        svc_free(svc);
        return as_set_err(err, errlen, AS_EIO, "cannot initialize the event loop");
    }
    *out = svc;
    return 0;
}

int as__service_start_with(const as_service_config *cfg,
                           const char *const *labels, size_t nsrc,
                           const as__svc_provider *prov, as_service **out,
                           char *err, size_t errlen)
{
    as_service *svc = NULL;
    int rc = svc_create(cfg, labels, nsrc, prov, &svc, err, errlen);
    if (rc)
        return rc;
    *out = NULL;
    if (uv_thread_create(&svc->thread, thread_main, svc)) {
        uv_loop_close(&svc->loop);
        uv_sem_destroy(&svc->ready);
        svc_free(svc);
        return as_set_err(err, errlen, AS_EIO, "cannot create the service thread");
    }
    uv_sem_wait(&svc->ready);
    if (svc->start_rc) {
        rc = svc->start_rc;
        as_set_err(err, errlen, rc, "%s", svc->start_err);
        uv_thread_join(&svc->thread);
        uv_sem_destroy(&svc->ready);
        svc_free(svc);
        return rc;
    }
    *out = svc;
    return 0;
}

/* The default provider over src (labels[nsrc] filled), or an error. */
static int default_provider(const as_service_source *src, size_t nsrc,
                            const char **labels, as__svc_provider *prov,
                            char *err, size_t errlen)
{
    if (nsrc < 1 || nsrc > 16)
        return as_set_err(err, errlen, AS_EINVAL, "need 1..16 sources, got %zu", nsrc);
    struct default_src *d = as__svc_malloc(nsrc * sizeof *d);
    if (!d)
        return as_set_err(err, errlen, AS_ENOMEM, "out of memory");
    for (size_t i = 0; i < nsrc; i++) {
        d[i].store = src[i].store;
        d[i].last_refresh_ns = 0;
        d[i].arena = src[i].arena ? src[i].arena
                     : src[i].store ? as_store_arena(src[i].store) : NULL;
        if (!d[i].store && !d[i].arena) {
            as__svc_free(d);
            return as_set_err(err, errlen, AS_EINVAL, "source %zu has neither store nor arena", i);
        }
        labels[i] = src[i].label ? src[i].label
                    : src[i].store ? as_store_label(src[i].store) : NULL;
    }
    *prov = (as__svc_provider){dflt_take, dflt_release, d};
    return 0;
}

/* A service over the default provider: started (its thread and listener),
 * or local (no thread, no socket: as__service_open_local). */
static int open_default(const as_service_config *cfg, const as_service_source *src,
                        size_t nsrc, bool local, as_service **out, char *err, size_t errlen)
{
    if (!src || !out)
        return as_set_err(err, errlen, AS_EINVAL, "sources and out are required");
    const char *labels[16];
    as__svc_provider prov = {0};
    int rc = default_provider(src, nsrc, labels, &prov, err, errlen);
    if (rc)
        return rc;
    as_service *svc = NULL;
    rc = local ? svc_create(cfg, labels, nsrc, &prov, &svc, err, errlen)
               : as__service_start_with(cfg, labels, nsrc, &prov, &svc, err, errlen);
    if (rc) {
        as__svc_free(prov.ud);
        return rc;
    }
    svc->dsrc = prov.ud;   /* freed with the service; the thread never reads this field */
    if (local)
        first_view(svc);
    *out = svc;
    return 0;
}

int as_service_start(const as_service_config *cfg, const as_service_source *src,
                     size_t nsrc, as_service **out, char *err, size_t errlen)
{
    return open_default(cfg, src, nsrc, false, out, err, errlen);
}

int as__service_open_local(const as_service_config *cfg, const as_service_source *src,
                           size_t nsrc, as_service **out, char *err, size_t errlen)
{
    return open_default(cfg, src, nsrc, true, out, err, errlen);
}

int as__service_close_local(as_service *svc)
{
    if (!svc)
        return 0;
    as__http_close_all(svc);
    uv_run(&svc->loop, UV_RUN_DEFAULT);   /* the close callbacks */
    int rc = uv_loop_close(&svc->loop);
    uv_sem_destroy(&svc->ready);
    svc_free(svc);
    return rc;
}

int as__service_stop(as_service *svc)
{
    if (!svc)
        return 0;
    atomic_store(&svc->stopping, true);
    uv_async_send(&svc->wake);
    uv_thread_join(&svc->thread);
    uv_sem_destroy(&svc->ready);
    int rc = svc->loop_close_rc;
    svc_free(svc);
    return rc;
}

void as_service_stop(as_service *svc) { (void)as__service_stop(svc); }

int as_service_port(const as_service *svc) { return svc ? svc->port : -1; }

const char *as_service_url(const as_service *svc) { return svc ? svc->url : ""; }

void as_service_get_stats(const as_service *svc, as_service_stats *o)
{
    memset(o, 0, sizeof *o);
    if (!svc)
        return;
    as_service *s = (as_service *)svc;
#define LOAD(k, field) o->field = atomic_load(&s->st[AS__ST_##k]);
    AS__SVC_STATS(LOAD)
#undef LOAD
    o->memory_bytes = as__svc_memory();
}

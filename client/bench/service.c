/*
 * actstore bench service: what the live service costs a training run, and
 * how fast /metrics answers.
 *
 * 1. Step time of the vit small preset (Fashion-MNIST) in four
 *    configurations, measured side by side in one run:
 *      plain        a run whose arena has no timeline sampler (what
 *                   `actstore train` does without --serve);
 *      off          the run used for the three below: sampler at 10 Hz
 *                   (what --serve turns on), no service;
 *      on_idle      the service started on that run's store, no client;
 *      on_clients   the service with 10 SSE clients reading the event
 *                   stream and a /metrics scrape every 100 ms.
 *    Each repeat runs one block of --steps steps per configuration (after
 *    --warmup unmeasured steps), the block order rotated every repeat so a
 *    drift of the machine does not favour one configuration. A block's
 *    figure is its median step time; a configuration's figure is the
 *    median of its block medians. Overheads are ratios of those medians
 *    (the machine is shared and noisy), and the median of the per-repeat
 *    ratios with its distribution-free 95% interval. Both wall time and
 *    the training thread's CPU time are measured.
 * 2. /metrics latency on a store with 100 layers (each with saved
 *    tensors of two kinds under two policies): a keep-alive loopback
 *    client sends --requests GETs back to back; p50 / p99 / max of the
 *    time from sending the request to the last byte of the body, with the
 *    default cap of 20 per-layer series and with all 100.
 * Targets: on_clients <= 2% over off; /metrics p99 <= 2 ms.
 */
#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "actstore/service.h"
#include "bench.h"
#include "util/clock.h"
#include "util/loopback.h"
#include "cli.h"
#include "client.h"
#include "layers/train.h"
#include "stats.h"

#define CMD "bench service"

enum { C_PLAIN, C_OFF, C_IDLE, C_CLIENTS, NCONF };
static const char *const conf_name[NCONF] = {"plain", "off", "on_idle", "on_clients"};


/* ---- the load: SSE clients on their own loop, a scraper thread ---------------- */

typedef struct load {
    char        addr[64];
    unsigned    nclients;
    unsigned    scrape_ms;
    pthread_t   sse_thread, scrape_thread;
    uv_loop_t   loop;
    uv_async_t  stop_async;
    as_client_sse **sse;
    atomic_ulong events, scrapes, scrape_errors, ended;
    atomic_bool stop;
    double      t_start, t_stop;
    unsigned long events_at_stop;
    double      cpu_sse, cpu_scrape;  /* CPU time of the client threads */
} load;

static int on_event(void *ud, const char *d, size_t n, bool comment)
{
    load *l = ud;
    (void)d;
    (void)n;
    if (!comment)
        atomic_fetch_add(&l->events, 1);
    return 0;
}

static void on_end(void *ud, int rc)
{
    load *l = ud;
    (void)rc;
    atomic_fetch_add(&l->ended, 1);
}

static void on_stop(uv_async_t *a)
{
    load *l = a->data;
    for (unsigned i = 0; i < l->nclients; i++)
        if (l->sse[i])
            as_client_sse_close(l->sse[i]);
    uv_close((uv_handle_t *)&l->stop_async, NULL);
}


static void *sse_main(void *arg)
{
    load *l = arg;
    uv_run(&l->loop, UV_RUN_DEFAULT);
    l->cpu_sse = as_clock_thread_cpu_s();
    return NULL;
}

static void *scrape_main(void *arg)
{
    load *l = arg;
    while (!atomic_load(&l->stop)) {
        as_client_response r;
        char err[256];
        if (as_client_get(l->addr, "/metrics", 2000, &r, err, sizeof err) == 0 && r.status == 200)
            atomic_fetch_add(&l->scrapes, 1);
        else
            atomic_fetch_add(&l->scrape_errors, 1);
        as_client_response_free(&r);
        struct timespec ts = {0, (long)l->scrape_ms * 1000000L};
        nanosleep(&ts, NULL);
    }
    l->cpu_scrape = as_clock_thread_cpu_s();
    return NULL;
}

/* Connect the clients (waits until the service counts them all). */
static int load_start(load *l, as_service *svc)
{
    snprintf(l->addr, sizeof l->addr, "127.0.0.1:%d", as_service_port(svc));
    atomic_store(&l->stop, false);
    atomic_store(&l->events, 0);
    atomic_store(&l->ended, 0);
    l->sse = calloc(l->nclients ? l->nclients : 1, sizeof *l->sse);
    if (!l->sse || uv_loop_init(&l->loop))
        return AS_ENOMEM;
    uv_async_init(&l->loop, &l->stop_async, on_stop);
    l->stop_async.data = l;
    for (unsigned i = 0; i < l->nclients; i++)
        if (as_client_sse_open(&l->loop, l->addr, on_event, on_end, l, &l->sse[i]))
            return AS_EIO;
    if (pthread_create(&l->sse_thread, NULL, sse_main, l))
        return AS_ENOMEM;
    for (double t0 = as_clock_wall_s(); as_clock_wall_s() - t0 < 10;) {
        as_service_stats st;
        as_service_get_stats(svc, &st);
        if (st.sse_clients >= l->nclients)
            break;
        usleep(10000);
    }
    if (l->scrape_ms && pthread_create(&l->scrape_thread, NULL, scrape_main, l))
        return AS_ENOMEM;
    /* every client has had the frame sent on subscription: the rate
     * counts from here */
    for (double t0 = as_clock_wall_s(); as_clock_wall_s() - t0 < 2 && atomic_load(&l->events) < l->nclients;)
        usleep(5000);
    atomic_store(&l->events, 0);
    l->t_start = as_clock_wall_s();
    return 0;
}

static void load_stop(load *l)
{
    l->t_stop = as_clock_wall_s();
    l->events_at_stop = atomic_load(&l->events);
    atomic_store(&l->stop, true);
    if (l->scrape_ms)
        pthread_join(l->scrape_thread, NULL);
    uv_async_send(&l->stop_async);
    pthread_join(l->sse_thread, NULL);
    uv_loop_close(&l->loop);
    free(l->sse);
    l->sse = NULL;
}

/* ---- part 1: step time ----------------------------------------------------------- */

typedef struct steps_cfg {
    long     steps, warmup;
    unsigned repeats, clients, scrape_ms;
    int      threads;
    const char *policy, *data_dir;
} steps_cfg;

typedef struct steps_res {
    double *block_ms[NCONF];      /* (repeats) block medians */
    double  median_ms[NCONF];
    double *block_cpu[NCONF];     /* (repeats) block medians of step CPU time */
    double  median_cpu[NCONF];
    double  events_per_s;         /* per SSE client, on_clients blocks */
    unsigned long scrapes, scrape_errors, dropped;
    double  tick_ms_max;
    double  cpu_s[NCONF], wall_s[NCONF];   /* service thread CPU during blocks */
    double  client_cpu_s, client_wall_s;    /* the bench's client threads */
} steps_res;

/* Wall and CPU time (this thread: with one BLAS thread every kernel runs
 * here) of each measured step. CPU time does not count the time other
 * processes hold the cores, so it resolves cache and lock effects of the
 * service on a busy machine where wall time cannot. */
static int run_block(as_nn_run *run, long warmup, long steps, double *step_ms, double *cpu_ms,
                     char *err, size_t errlen)
{
    for (long k = 0; k < warmup + steps; k++) {
        double t0 = as_clock_wall_s(), c0 = as_clock_thread_cpu_s();
        if (as_nn_run_step(run, NULL)) {
            snprintf(err, errlen, "training step: %s", as_nn_run_error(run));
            return AS_EIO;
        }
        if (k >= warmup) {
            step_ms[k - warmup] = (as_clock_wall_s() - t0) * 1e3;
            cpu_ms[k - warmup] = (as_clock_thread_cpu_s() - c0) * 1e3;
        }
    }
    return 0;
}

static int bench_steps(const steps_cfg *c, steps_res *res, char *err, size_t errlen)
{
    as_nn_preset p;
    if (as_nn_preset_get("vit", "small", &p)) {
        snprintf(err, errlen, "no vit small preset");
        return AS_ENOTFOUND;
    }
    p.steps = (c->steps + c->warmup) * (long)c->repeats * NCONF + 10;
    as_store *stores[2] = {NULL, NULL};
    as_nn_run *runs[2] = {NULL, NULL};
    int rc = 0;
    for (int i = 0; i < 2 && !rc; i++) {
        as_store_config scfg = {.label = i ? "train" : "plain", .sampler_hz = i ? 10 : 0};
        rc = as_store_create(&scfg, &stores[i], err, errlen);
        if (rc)
            break;
        as_nn_train_opts o = {.policy = c->policy, .seed = 1, .threads = c->threads,
                              .data_dir = c->data_dir, .store = stores[i]};
        rc = as_nn_run_create(&p, &o, &runs[i], err, errlen);
    }
    double *ms = malloc((size_t)c->steps * sizeof *ms);
    double *cms = malloc((size_t)c->steps * sizeof *cms);
    bool ok = ms && cms;
    for (int k = 0; k < NCONF; k++) {
        res->block_ms[k] = calloc(c->repeats, sizeof(double));
        res->block_cpu[k] = calloc(c->repeats, sizeof(double));
        ok = ok && res->block_ms[k] && res->block_cpu[k];
    }
    if (!ok)
        rc = rc ? rc : AS_ENOMEM;
    double events_s = 0, clients_time = 0;
    for (unsigned r = 0; r < c->repeats && !rc; r++) {
        for (int j = 0; j < NCONF && !rc; j++) {
            int k = (j + (int)r) % NCONF;          /* rotated order */
            as_service *svc = NULL;
            load l = {.nclients = c->clients, .scrape_ms = c->scrape_ms};
            as_nn_run *run = runs[k == C_PLAIN ? 0 : 1];
            if (k == C_IDLE || k == C_CLIENTS) {
                as_service_source src = {.store = stores[1]};
                as_service_config sc = {.quiet = true};
                rc = as_service_start(&sc, &src, 1, &svc, err, errlen);
                if (!rc && k == C_CLIENTS && (rc = load_start(&l, svc)))
                    snprintf(err, errlen, "cannot connect the clients");
            }
            as_service_stats st0 = {0};
            if (svc) {
                usleep(150000);    /* a tick, so the CPU figure is fresh */
                as_service_get_stats(svc, &st0);
            }
            double w0 = as_clock_wall_s();
            if (!rc)
                rc = run_block(run, c->warmup, c->steps, ms, cms, err, errlen);
            if (svc) {
                usleep(150000);
                as_service_stats st;
                as_service_get_stats(svc, &st);
                res->cpu_s[k] += (double)(st.cpu_ns - st0.cpu_ns) * 1e-9;
                res->wall_s[k] += as_clock_wall_s() - w0;
                if (k == C_CLIENTS) {
                    load_stop(&l);
                    res->client_cpu_s += l.cpu_sse + l.cpu_scrape;
                    res->client_wall_s += l.t_stop - l.t_start;
                    events_s += (double)l.events_at_stop / (c->clients ? c->clients : 1);
                    clients_time += l.t_stop - l.t_start;
                    res->scrapes += atomic_load(&l.scrapes);
                    res->scrape_errors += atomic_load(&l.scrape_errors);
                    res->dropped += st.sse_dropped;
                }
                if (st.tick_ns_max * 1e-6 > res->tick_ms_max)
                    res->tick_ms_max = st.tick_ns_max * 1e-6;
                as_service_stop(svc);
            }
            if (!rc) {
                res->block_ms[k][r] = as_stats_median(ms, (size_t)c->steps);
                res->block_cpu[k][r] = as_stats_median(cms, (size_t)c->steps);
            }
            fprintf(stderr, "\r" CMD ": repeat %u/%u %-10s %.2f ms/step   ", r + 1, c->repeats,
                    conf_name[k], rc ? 0 : res->block_ms[k][r]);
        }
    }
    fprintf(stderr, "\n");
    res->events_per_s = clients_time > 0 ? events_s / clients_time : 0;
    for (int k = 0; k < NCONF && !rc; k++) {
        double *tmp = malloc(c->repeats * sizeof *tmp);
        memcpy(tmp, res->block_ms[k], c->repeats * sizeof *tmp);
        res->median_ms[k] = as_stats_median(tmp, c->repeats);
        memcpy(tmp, res->block_cpu[k], c->repeats * sizeof *tmp);
        res->median_cpu[k] = as_stats_median(tmp, c->repeats);
        free(tmp);
    }
    free(ms);
    free(cms);
    for (int i = 0; i < 2; i++) {
        as_nn_run_destroy(runs[i]);
        as_store_destroy(stores[i]);
    }
    return rc;
}

/* ---- part 2: /metrics latency ------------------------------------------------------ */

static int ka_connect(int port)
{
    int fd = as_loopback_connect(port, 5);
    int one = 1;
    if (fd >= 0)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

/* One keep-alive GET; returns the body length or -1. buf grows as needed. */
static long ka_get(int fd, const char *path, char **buf, size_t *cap)
{
    char req[256];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", path);
    if (send(fd, req, (size_t)n, MSG_NOSIGNAL) != n)
        return -1;
    size_t len = 0;
    long want = -1, hdr = 0;
    for (;;) {
        if (len + 65536 > *cap) {
            *cap = (*cap ? *cap * 2 : 1 << 20);
            char *nb = realloc(*buf, *cap);
            if (!nb)
                return -1;
            *buf = nb;
        }
        ssize_t r = recv(fd, *buf + len, *cap - len - 1, 0);
        if (r <= 0)
            return -1;
        len += (size_t)r;
        (*buf)[len] = 0;
        if (want < 0) {
            char *eoh = strstr(*buf, "\r\n\r\n");
            if (!eoh)
                continue;
            hdr = eoh + 4 - *buf;
            char *cl = NULL;
            for (char *q = *buf; q < eoh && !cl; q++)
                if (!strncasecmp(q, "\r\nContent-Length:", 17))
                    cl = q;
            if (!cl || strncmp(*buf, "HTTP/1.1 200", 12))
                return -1;
            want = atol(cl + 17);
        }
        if ((long)len >= hdr + want)
            return want;
    }
}

/* 95% confidence interval of the median of x (n values, sorted in place):
 * order statistics x[k-1] and x[n-k] with the largest k such that
 * P(Binomial(n, 1/2) <= k - 1) <= 0.025 (sign test; no assumption on the
 * distribution, robust to the outliers a busy machine produces). */
static void median_ci(double *x, size_t n, double *lo, double *hi)
{
    as_stats_sort(x, n);
    double p = pow(0.5, (double)n), cum = p;   /* P(X <= 0) */
    size_t k = 0;
    for (size_t j = 1; j < n && cum <= 0.025; j++) {
        k = j;                                  /* P(X <= j - 1) <= 0.025 */
        p *= (double)(n - j + 1) / (double)j;
        cum += p;
    }
    if (k == 0) {                               /* too few values */
        *lo = x[0];
        *hi = x[n - 1];
        return;
    }
    *lo = x[k - 1];
    *hi = x[n - k];
}

typedef struct lat_res {
    unsigned top;
    double p50_ms, p99_ms, max_ms;
    double cpu_ms;          /* service thread CPU per request */
    long   bytes, series;
} lat_res;

/* Both caps are served at once (two services on one store) and measured
 * in alternating rounds of 100 requests, so a busy spell of the machine
 * lands on both rows alike. */
#define NCAPS 2
#define ROUND 100

static int bench_metrics(unsigned layers, unsigned requests, const unsigned top[NCAPS],
                         lat_res out[NCAPS], char *err, size_t errlen)
{
    as_store *s = NULL;
    as_store_config scfg = {.label = "bench", .sampler_hz = 10,
                            .policy = "linear_input=fp16; default=keep"};
    int rc = as_store_create(&scfg, &s, err, errlen);
    if (rc)
        return rc;
    /* `layers` layers, each with a linear input (fp16) and a norm input
     * (keep), sizes varying with the layer index; left live as in
     * mid-forward */
    as_store_step_begin(s, 1);
    as_store_phase(s, AS_PHASE_FORWARD);
    float *buf = calloc(64 * 256, sizeof *buf);
    if (!buf)
        rc = AS_ENOMEM;
    static const char *const part[4] = {"attn", "ln", "mlp.fc1", "mlp.fc2"};
    for (unsigned l = 0; l < layers && !rc; l++) {
        char name[48];
        snprintf(name, sizeof name, "blocks.%u.%s", l / 4, part[l % 4]);
        as_tensor t = {.data = buf, .dtype = AS_F32, .ndim = 2,
                       .shape = {16 + (int64_t)(l % 48), 256}};
        as_handle h;
        as_save_info a = {.kind = AS_KIND_LINEAR_INPUT, .layer = name};
        as_save_info b = {.kind = AS_KIND_NORM_INPUT, .layer = name};
        rc = as_store_save(s, &a, &t, &h);
        if (!rc)
            rc = as_store_save(s, &b, &t, &h);
        if (rc)
            snprintf(err, errlen, "save: %s", as_store_last_error(s));
    }
    free(buf);
    as_service *svc[NCAPS] = {NULL};
    int fd[NCAPS] = {-1, -1};
    double *lat[NCAPS] = {NULL};
    char *body[NCAPS] = {NULL};
    size_t cap[NCAPS] = {0};
    as_service_stats c0[NCAPS], c1[NCAPS];
    for (int k = 0; k < NCAPS && !rc; k++) {
        as_service_source src = {.store = s};
        as_service_config sc = {.metrics_top_layers = top[k], .quiet = true};
        rc = as_service_start(&sc, &src, 1, &svc[k], err, errlen);
        lat[k] = calloc(requests, sizeof *lat[k]);
        if (!rc && ((fd[k] = ka_connect(as_service_port(svc[k]))) < 0 || !lat[k])) {
            snprintf(err, errlen, "cannot connect to the service");
            rc = AS_EIO;
        }
    }
    usleep(300000);   /* a few ticks: the views hold every layer */
    for (int k = 0; k < NCAPS && !rc; k++)           /* warm-up */
        for (int i = 0; i < 50 && !rc; i++)
            if (ka_get(fd[k], "/metrics", &body[k], &cap[k]) < 0)
                rc = AS_EIO;
    usleep(150000);   /* the CPU figures are refreshed each tick */
    for (int k = 0; k < NCAPS && !rc; k++)
        as_service_get_stats(svc[k], &c0[k]);
    for (unsigned done = 0; done < requests && !rc;) {
        unsigned n = requests - done < ROUND ? requests - done : ROUND;
        for (int k = 0; k < NCAPS && !rc; k++)
            for (unsigned i = 0; i < n; i++) {
                double t0 = as_clock_wall_s();
                long got = ka_get(fd[k], "/metrics", &body[k], &cap[k]);
                lat[k][done + i] = (as_clock_wall_s() - t0) * 1e3;
                if (got < 0) {
                    snprintf(err, errlen, "GET /metrics failed (request %u)", done + i);
                    rc = AS_EIO;
                    break;
                }
                out[k].bytes = got;
            }
        done += n;
    }
    if (rc == AS_EIO && !err[0])
        snprintf(err, errlen, "GET /metrics failed during the warm-up");
    if (!rc) {
        usleep(150000);
        for (int k = 0; k < NCAPS; k++) {
            as_service_get_stats(svc[k], &c1[k]);
            /* includes the ticks' own work during the run */
            out[k].cpu_ms = (double)(c1[k].cpu_ns - c0[k].cpu_ns) * 1e-6 / requests;
            out[k].series = 0;
            for (const char *q = body[k]; (q = strstr(q, "\nactstore_")); q++)
                out[k].series++;
            out[k].top = top[k];
            as_stats_sort(lat[k], requests);   /* p50, p99, max */
            out[k].p50_ms = lat[k][requests / 2];
            out[k].p99_ms = lat[k][(size_t)((requests - 1) * 0.99)];
            out[k].max_ms = lat[k][requests - 1];
        }
    }
    for (int k = 0; k < NCAPS; k++) {
        if (fd[k] >= 0)
            close(fd[k]);
        free(body[k]);
        free(lat[k]);
        as_service_stop(svc[k]);
    }
    as_store_destroy(s);
    return rc;
}

/* ---- command ----------------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: actstore bench service [--json FILE] [--repeats N] [--steps N] [--warmup N]\n"
            "                              [--clients N] [--scrape-ms MS] [--threads T]\n"
            "                              [--layers N] [--requests N] [--data-dir DIR]\n\n"
            "Step time of the vit small preset with the service off, on with no client, and\n"
            "on with SSE clients and a /metrics scrape (medians side by side in one run),\n"
            "then /metrics latency (p50/p99) on a store with 100 layers.\n"
            "  --json FILE     write {\"bench\":\"service\",...} (\"-\" = stdout)\n"
            "  --repeats N     blocks per configuration (default 7)\n"
            "  --steps N       measured steps per block (default 40)\n"
            "  --warmup N      unmeasured steps before each block (default 3)\n"
            "  --clients N     SSE clients in on_clients (default 10)\n"
            "  --scrape-ms MS  /metrics scrape period in on_clients (default 100)\n"
            "  --threads T     OpenBLAS threads of the training run (default 1)\n"
            "  --layers N      layers of the /metrics store (default 100)\n"
            "  --requests N    timed /metrics requests per cap (default 2000; both caps\n"
            "                  alternate in rounds of 100)\n"
            "  --data-dir DIR  Fashion-MNIST directory\n"
            "  --part P        all (default), steps or metrics\n"
            "The load average before and after is recorded: the figures of a busy machine\n"
            "(load above the core count) show its scheduling delays, not the service.\n");
}

/* One run of the bench: its options and results. */
typedef struct svc_bench {
    steps_cfg   c;
    unsigned    layers, requests;
    const char *json_path;
    bool        do_steps, do_metrics;
    double      load0[3], load1[3];
    long        ncpu;
    steps_res   sr;
    lat_res     lr[NCAPS];
    /* paired overheads vs off (wall, CPU): median of the per-repeat ratios
     * and its 95% interval; pd: paired mean difference */
    as_paired   pd[NCONF];
    double      rmed[NCONF], glo[NCONF], ghi[NCONF];
    double      cmed[NCONF], clo[NCONF], chi[NCONF];
} svc_bench;

/* Returns AS_CLI_RUN, or an exit code after --help or a usage error. */
static int parse_args(svc_bench *b, int argc, char **argv)
{
    const char *part = "all";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        unsigned long long v = 0;
        if (as_cli_is_help(a)) {
            usage(stdout);
            return AS_EXIT_OK;
        }
        if (i + 1 >= argc)
            return as_cli_usage(CMD, "unknown option or missing value: '%s'", a);
        const char *val = argv[++i];
        if (!strcmp(a, "--json")) {
            b->json_path = val;
            continue;
        }
        if (!strcmp(a, "--data-dir")) {
            b->c.data_dir = val;
            continue;
        }
        if (!strcmp(a, "--part")) {
            if (strcmp(val, "all") && strcmp(val, "steps") && strcmp(val, "metrics"))
                return as_cli_usage(CMD, "--part must be all, steps or metrics, not '%s'", val);
            part = val;
            continue;
        }
        if (as_cli_parse_u64(CMD, a, val, &v))
            return AS_EXIT_USAGE;
        steps_cfg *c = &b->c;
        if (!strcmp(a, "--repeats") && v >= 1 && v <= 1000) c->repeats = (unsigned)v;
        else if (!strcmp(a, "--steps") && v >= 1 && v <= 100000) c->steps = (long)v;
        else if (!strcmp(a, "--warmup") && v <= 1000) c->warmup = (long)v;
        else if (!strcmp(a, "--clients") && v <= 1000) c->clients = (unsigned)v;
        else if (!strcmp(a, "--scrape-ms") && v <= 60000) c->scrape_ms = (unsigned)v;
        else if (!strcmp(a, "--threads") && v <= 256) c->threads = (int)v;
        else if (!strcmp(a, "--layers") && v >= 1 && v <= 1000) b->layers = (unsigned)v;
        else if (!strcmp(a, "--requests") && v >= 10 && v <= 1000000) b->requests = (unsigned)v;
        else
            return as_cli_usage(CMD, "unknown option '%s' or value %s out of range", a, val);
    }
    b->do_steps = strcmp(part, "metrics") != 0;
    b->do_metrics = strcmp(part, "steps") != 0;
    return AS_CLI_RUN;
}

/* Paired overheads over repeats (block medians, same repeat = same
 * moment): the median of the per-repeat ratios and its distribution-free
 * 95% interval, for wall and CPU time. */
static void paired_overheads(svc_bench *b)
{
    const steps_res *sr = &b->sr;
    unsigned n = b->c.repeats;
    double *lr_ = calloc(n ? n : 1, sizeof *lr_);
    for (int k = 0; k < NCONF && b->do_steps && lr_; k++) {
        b->pd[k] = as_stats_paired(sr->block_ms[C_OFF], sr->block_ms[k], n);
        for (unsigned r = 0; r < n; r++)
            lr_[r] = log(sr->block_ms[k][r] / sr->block_ms[C_OFF][r]);
        double lo, hi;
        median_ci(lr_, n, &lo, &hi);
        b->glo[k] = exp(lo) - 1;
        b->ghi[k] = exp(hi) - 1;
        b->rmed[k] = exp(as_stats_median(lr_, n)) - 1;
        for (unsigned r = 0; r < n; r++)
            lr_[r] = log(sr->block_cpu[k][r] / sr->block_cpu[C_OFF][r]);
        median_ci(lr_, n, &lo, &hi);
        b->clo[k] = exp(lo) - 1;
        b->chi[k] = exp(hi) - 1;
        b->cmed[k] = exp(as_stats_median(lr_, n)) - 1;
    }
    free(lr_);
}

/* One clock's table: medians, their ratio to off, the paired median and
 * its 95% interval. */
static void print_clock(const char *clock, const double *median, const double *pmed,
                        const double *lo, const double *hi)
{
    printf("  %-11s %9s %9s %15s %24s\n", clock, "ms/step", "medians", "paired median",
           "95% CI of the median");
    for (int k = 0; k < NCONF; k++)
        printf("  %-11s %9.3f %+8.2f%% %+14.2f%%      [%+6.2f%%, %+6.2f%%]\n", conf_name[k],
               median[k], 100 * (median[k] / median[C_OFF] - 1), 100 * pmed[k], 100 * lo[k],
               100 * hi[k]);
}

static void print_steps(const svc_bench *b)
{
    const steps_cfg *c = &b->c;
    const steps_res *sr = &b->sr;
    printf("  vit small, %u repeats x %ld steps per configuration, %d BLAS thread(s)\n",
           c->repeats, c->steps, c->threads);
    print_clock("wall time", sr->median_ms, b->rmed, b->glo, b->ghi);
    print_clock("CPU time", sr->median_cpu, b->cmed, b->clo, b->chi);
    printf("\n  on_clients: %u SSE clients at %.1f events/s each, %lu scrapes (%lu failed), "
           "%lu dropped; service tick max %.3f ms\n",
           c->clients, sr->events_per_s, sr->scrapes, sr->scrape_errors, sr->dropped,
           sr->tick_ms_max);
    printf("  service thread CPU: %.2f%% of a core idle, %.2f%% with the clients and scrapes\n",
           100 * sr->cpu_s[C_IDLE] / (sr->wall_s[C_IDLE] > 0 ? sr->wall_s[C_IDLE] : 1),
           100 * sr->cpu_s[C_CLIENTS] / (sr->wall_s[C_CLIENTS] > 0 ? sr->wall_s[C_CLIENTS] : 1));
    printf("  the bench's own client threads (10 SSE readers, the scraper): %.2f%% of a core\n",
           100 * sr->client_cpu_s / (sr->client_wall_s > 0 ? sr->client_wall_s : 1));
}

static void print_report(const svc_bench *b)
{
    printf("actstore bench service: load average %.2f before, %.2f after, %ld cores\n\n",
           b->load0[0], b->load1[0], b->ncpu);
    if (b->do_steps)
        print_steps(b);
    if (b->do_metrics)
        printf("\n  /metrics, %u layers, %u requests (keep-alive, loopback):\n", b->layers,
               b->requests);
    for (int k = 0; k < 2 && b->do_metrics; k++)
        printf("    top %-4u layers: p50 %.3f ms  p99 %.3f ms  max %.3f ms  service CPU %.3f "
               "ms/request  (%ld bytes, %ld samples)\n", b->lr[k].top, b->lr[k].p50_ms,
               b->lr[k].p99_ms, b->lr[k].max_ms, b->lr[k].cpu_ms, b->lr[k].bytes,
               b->lr[k].series);
    /* the verdict uses the paired median (wall time): blocks measured at
     * the same moment, robust to the load shifts of a shared machine */
    double over = b->do_steps ? b->rmed[C_CLIENTS] : 0;
    if (b->do_steps)
        printf("\n  target: step overhead with clients %+.2f%% (paired median of wall time, "
               "95%% CI [%+.2f%%, %+.2f%%]; <= 2%%: %s)\n", 100 * over,
               100 * b->glo[C_CLIENTS], 100 * b->ghi[C_CLIENTS],
               over <= 0.02 ? "met" : "NOT met");
    if (b->do_metrics)
        printf("%s  target: /metrics p99 %.3f ms with the default cap (<= 2 ms: %s)\n",
               b->do_steps ? "" : "\n", b->lr[0].p99_ms, b->lr[0].p99_ms <= 2 ? "met" : "NOT met");
}

static void steps_json(const svc_bench *b, cJSON *root)
{
    const steps_res *sr = &b->sr;
    int n = (int)b->c.repeats;
    cJSON *cf = cJSON_AddArrayToObject(root, "step_time");
    for (int k = 0; k < NCONF && b->do_steps; k++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "config", conf_name[k]);
        cJSON_AddNumberToObject(o, "median_ms", sr->median_ms[k]);
        cJSON_AddNumberToObject(o, "vs_off", sr->median_ms[k] / sr->median_ms[C_OFF] - 1);
        cJSON_AddNumberToObject(o, "paired_median_vs_off", b->rmed[k]);
        cJSON_AddNumberToObject(o, "paired_median_ci95_lo", b->glo[k]);
        cJSON_AddNumberToObject(o, "paired_median_ci95_hi", b->ghi[k]);
        cJSON_AddNumberToObject(o, "paired_diff_ms", b->pd[k].mean_diff);
        cJSON_AddNumberToObject(o, "paired_ci_half_ms",
                                isnan(b->pd[k].ci_half) ? 0 : b->pd[k].ci_half);
        cJSON_AddItemToObject(o, "block_medians_ms", cJSON_CreateDoubleArray(sr->block_ms[k], n));
        cJSON_AddNumberToObject(o, "cpu_median_ms", sr->median_cpu[k]);
        cJSON_AddNumberToObject(o, "cpu_paired_median_vs_off", b->cmed[k]);
        cJSON_AddNumberToObject(o, "cpu_paired_median_ci95_lo", b->clo[k]);
        cJSON_AddNumberToObject(o, "cpu_paired_median_ci95_hi", b->chi[k]);
        cJSON_AddItemToObject(o, "block_cpu_medians_ms",
                              cJSON_CreateDoubleArray(sr->block_cpu[k], n));
        cJSON_AddItemToArray(cf, o);
    }
    cJSON_AddNumberToObject(root, "sse_events_per_s_per_client", sr->events_per_s);
    cJSON_AddNumberToObject(root, "scrapes", (double)sr->scrapes);
    cJSON_AddNumberToObject(root, "scrape_errors", (double)sr->scrape_errors);
    cJSON_AddNumberToObject(root, "sse_dropped", (double)sr->dropped);
    cJSON_AddNumberToObject(root, "tick_ms_max", sr->tick_ms_max);
    cJSON_AddNumberToObject(root, "service_cpu_share_idle",
                            sr->wall_s[C_IDLE] > 0 ? sr->cpu_s[C_IDLE] / sr->wall_s[C_IDLE] : 0);
    cJSON_AddNumberToObject(root, "client_threads_cpu_share",
                            sr->client_wall_s > 0 ? sr->client_cpu_s / sr->client_wall_s : 0);
    cJSON_AddNumberToObject(root, "service_cpu_share_clients",
                            sr->wall_s[C_CLIENTS] > 0
                                ? sr->cpu_s[C_CLIENTS] / sr->wall_s[C_CLIENTS] : 0);
}

static void metrics_json(const svc_bench *b, cJSON *root)
{
    cJSON *ml = cJSON_AddArrayToObject(root, "metrics_latency");
    for (int k = 0; k < 2 && b->do_metrics; k++) {
        const lat_res *l = &b->lr[k];
        const as_cli_num row[] = {
            {"layers", b->layers}, {"top_layers", l->top}, {"requests", b->requests},
            {"p50_ms", l->p50_ms}, {"p99_ms", l->p99_ms}, {"max_ms", l->max_ms},
            {"service_cpu_ms_per_request", l->cpu_ms},
            {"body_bytes", (double)l->bytes}, {"samples", (double)l->series},
        };
        cJSON *o = cJSON_CreateObject();
        as_cli_add_nums(o, row, sizeof row / sizeof row[0]);
        cJSON_AddItemToArray(ml, o);
    }
}

static int write_json(const svc_bench *b)
{
    const steps_cfg *c = &b->c;
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "bench", "service");
    cJSON_AddStringToObject(root, "model", "vit");
    cJSON_AddStringToObject(root, "preset", "small");
    cJSON_AddStringToObject(root, "policy", c->policy);
    cJSON_AddItemToObject(root, "loadavg_before", cJSON_CreateDoubleArray(b->load0, 3));
    cJSON_AddItemToObject(root, "loadavg_after", cJSON_CreateDoubleArray(b->load1, 3));
    const as_cli_num setup[] = {
        {"cores", (double)b->ncpu},
        {"repeats", c->repeats},
        {"steps_per_block", (double)c->steps},
        {"warmup_steps", (double)c->warmup},
        {"threads", c->threads},
        {"clients", c->clients},
        {"scrape_ms", c->scrape_ms},
    };
    as_cli_add_nums(root, setup, sizeof setup / sizeof setup[0]);
    steps_json(b, root);
    metrics_json(b, root);
    cJSON *t = cJSON_AddObjectToObject(root, "targets");
    if (b->do_steps) {
        double over = b->rmed[C_CLIENTS];
        cJSON_AddNumberToObject(t, "step_overhead_with_clients", over);
        cJSON_AddNumberToObject(t, "step_overhead_ci95_lo", b->glo[C_CLIENTS]);
        cJSON_AddNumberToObject(t, "step_overhead_ci95_hi", b->ghi[C_CLIENTS]);
        cJSON_AddBoolToObject(t, "step_overhead_met", over <= 0.02);
    }
    if (b->do_metrics)
        cJSON_AddBoolToObject(t, "metrics_p99_met", b->lr[0].p99_ms <= 2);
    int w = as_cli_write_json(CMD, b->json_path, root);
    cJSON_Delete(root);
    return w ? AS_EIO : 0;
}

int as_bench_service(int argc, char **argv)
{
    svc_bench b = {.c = {.steps = 40, .warmup = 3, .repeats = 7, .clients = 10,
                         .scrape_ms = 100, .threads = 1,
                         .policy = "softmax=soa:5; default=keep"},
                   .layers = 100, .requests = 2000};
    signal(SIGPIPE, SIG_IGN);   /* a dropped client connection: EPIPE, not death */
    int rc = parse_args(&b, argc, argv);
    if (rc != AS_CLI_RUN)
        return rc;
    char err[512] = "";
    getloadavg(b.load0, 3);
    if (b.do_steps && (rc = bench_steps(&b.c, &b.sr, err, sizeof err)))
        return as_cli_fail(CMD, "%s", err);
    const unsigned tops[NCAPS] = {20, b.layers};
    if (b.do_metrics)
        rc = bench_metrics(b.layers, b.requests, tops, b.lr, err, sizeof err);
    if (rc)
        return as_cli_fail(CMD, "%s", err);
    getloadavg(b.load1, 3);
    if (!b.do_steps)
        b.c.repeats = 0;
    paired_overheads(&b);
    b.ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    print_report(&b);
    if (b.json_path)
        rc = write_json(&b);
    for (int k = 0; k < NCONF; k++) {
        free(b.sr.block_ms[k]);
        free(b.sr.block_cpu[k]);
    }
    return rc ? AS_EXIT_FAIL : AS_EXIT_OK;
}

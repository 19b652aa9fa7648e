/*
 * Helpers for the service tests (header-only, static): a fake data provider
 * (arena snapshot + store accounting that change every tick) and blocking
 * loopback HTTP helpers that can send arbitrary bytes.
 */
#ifndef AS_TEST_SERVICE_UTIL_H
#define AS_TEST_SERVICE_UTIL_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "util/loopback.h"
#include "store/service/svc.h"
#include "util/clock.h"

/* Under ThreadSanitizer everything runs 5-20x slower: the tests that
 * measure rates or race the kernel's buffers skip those checks. */
#if defined(__SANITIZE_THREAD__)
#define AS_TEST_TSAN 1
#else
#define AS_TEST_TSAN 0
#endif

/* ---- fake provider -------------------------------------------------------- */

typedef struct fake_src {
    size_t      nlayers;
    size_t      name_len;       /* pad layer names to this length */
    atomic_uint takes;
    uint64_t    seq;
} fake_src;

static __attribute__((unused)) int fake_take(void *ud, size_t i, uint64_t since, as__svc_view *v)
{
    fake_src *f = &((fake_src *)ud)[i];
    unsigned n = atomic_fetch_add(&f->takes, 1) + 1;
    uint64_t base = (1ull << 20) * (i + 1) + (uint64_t)(n % 50) * 4096;
    as_arena_snapshot *a = &v->arena;
    v->has_arena = true;
    a->t_ns = as_clock_wall_ns();
    a->total.live_usable = base;
    a->total.peak_usable = base + 65536;
    a->total.allocs = n * 10;
    a->total.frees = n * 9;
    a->ntags = AS_TAG_FIXED_COUNT;
    static const char *const tags[] = {"weights", "gradients", "optimizer", "activations",
                                       "saved", "workspace", "service", "other"};
    for (size_t t = 0; t < AS_TAG_FIXED_COUNT; t++) {
        a->tag_names[t] = tags[t];
        a->tags[t].live_usable = base / 8;
        a->tags[t].peak_usable = base / 4;
    }
    a->resident = base * 2;
    a->mapped = base * 3;
    a->step = n / 5;
    a->phase = (int)(n % 2) + 1;
    /* a step mark every 5 takes, a phase mark every take */
    a->samples = calloc(2, sizeof *a->samples);
    a->nsamples = 0;
    if (a->samples) {
        as_sample *s = &a->samples[a->nsamples++];
        s->seq = ++f->seq;
        s->t_ns = a->t_ns;
        s->type = AS_SAMPLE_PHASE;
        s->phase = (uint8_t)a->phase;
        s->step = a->step;
        s->live_usable = base;
        s->peak_usable = base + 65536;
        if (n % 5 == 0) {
            s = &a->samples[a->nsamples++];
            s->seq = ++f->seq;
            s->t_ns = a->t_ns;
            s->type = AS_SAMPLE_STEP;
            s->step = a->step;
        }
    }
    (void)since;

    as_store_stats *st = &v->store;
    v->has_store = true;
    st->label = NULL;
    st->step = a->step;
    st->phase = a->phase;
    st->total.raw_live = base;
    st->total.stored_live = base / 4;
    st->total.raw_peak = base + 1000;
    st->total.stored_peak = base / 4 + 1000;
    st->total.saves = n * 3;
    st->kinds[AS_KIND_SOFTMAX_OUTPUT] = (as_store_counter){.raw_live = base / 2, .stored_live = base / 16, .raw_peak = base / 2, .stored_peak = base / 16, .saves = n, .encode_ns = 1000};
    st->kinds[AS_KIND_CONV_INPUT] = (as_store_counter){.raw_live = base / 2, .stored_live = base / 8, .raw_peak = base / 2, .stored_peak = base / 8, .saves = n, .fallbacks = 1};
    st->npolicies = 2;
    st->policies = calloc(2, sizeof *st->policies);
    if (st->policies) {
        snprintf(st->policies[0].name, sizeof st->policies[0].name, "soa");
        st->policies[0].c = st->kinds[AS_KIND_SOFTMAX_OUTPUT];
        snprintf(st->policies[1].name, sizeof st->policies[1].name, "invert");
        st->policies[1].c = st->kinds[AS_KIND_CONV_INPUT];
    }
    st->nlayers = f->nlayers;
    st->layers = calloc(f->nlayers ? f->nlayers : 1, sizeof *st->layers);
    for (size_t l = 0; st->layers && l < f->nlayers; l++) {
        char *name = malloc(f->name_len + 32);
        if (!name)
            continue;
        int k = snprintf(name, f->name_len + 32, "blocks.%zu.attn", l);
        while ((size_t)k < f->name_len)
            name[k++] = 'x';
        name[k] = 0;
        st->layers[l].name = name;
        snprintf(st->layers[l].policy, sizeof st->layers[l].policy, "%s", l % 2 ? "soa:5" : "keep");
        st->layers[l].c.raw_live = (l + 1) * 1000;
        st->layers[l].c.raw_peak = (l + 1) * 1000;
        st->layers[l].c.stored_live = (l + 1) * 250;
        st->layers[l].c.fallbacks = l % 7 == 0;
    }
    snprintf(st->spec, sizeof st->spec, "softmax=soa:5; default=keep");
    return 0;
}

static __attribute__((unused)) void fake_release(void *ud, size_t i, as__svc_view *v)
{
    (void)ud;
    (void)i;
    free(v->arena.samples);
    for (size_t l = 0; v->store.layers && l < v->store.nlayers; l++)
        free((char *)v->store.layers[l].name);
    free(v->store.layers);
    free(v->store.policies);
}

/* A service over the n fake sources; fails the test when it does not start. */
static __attribute__((unused)) as_service *fake_start(const as_service_config *cfg, fake_src *src, size_t n)
{
    static const char *const labels[] = {"A", "B", "C", "D"};
    as__svc_provider prov = {fake_take, fake_release, src};
    as_service *svc = NULL;
    char err[256] = "";
    int rc = as__service_start_with(cfg, labels, n, &prov, &svc, err, sizeof err);
    if (rc)
        fail_msg("service start failed: %s (%s)", as_strerror(rc), err);
    return svc;
}

/* ---- blocking loopback HTTP ---------------------------------------------------- */

static __attribute__((unused)) int tconnect(int port)
{
    return as_loopback_connect(port, 5);
}

static __attribute__((unused)) int tsend(int fd, const char *data, size_t n)
{
    while (n) {
        ssize_t w = send(fd, data, n, MSG_NOSIGNAL);
        if (w <= 0)
            return -1;
        data += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Read one response: headers, then Content-Length bytes (unless head), or
 * to EOF. Returns a malloc'd NUL-terminated buffer (NULL on timeout with
 * nothing read); *len = total bytes. */
static __attribute__((unused)) char *tread_response(int fd, bool head, size_t *len)
{
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    ssize_t want = -1;
    while (buf) {
        if (n == cap) {
            cap *= 2;
            buf = realloc(buf, cap + 1);
            if (!buf)
                break;
        }
        ssize_t r = recv(fd, buf + n, cap - n, 0);
        if (r <= 0)
            break;
        n += (size_t)r;
        buf[n] = 0;
        char *eoh = strstr(buf, "\r\n\r\n");
        if (eoh && want < 0) {
            char *cl = NULL;
            for (char *q = buf; q < eoh && !cl; q++)
                if (!strncasecmp(q, "\r\nContent-Length:", 17))
                    cl = q;
            if (cl && cl < eoh)
                want = (ssize_t)(eoh + 4 - buf) + (head ? 0 : atol(cl + 17));
        }
        if (want >= 0 && (ssize_t)n >= want)
            break;
    }
    if (buf) {
        buf[n] = 0;
        if (!n) {
            free(buf);
            buf = NULL;
        }
    }
    if (len)
        *len = n;
    return buf;
}

static __attribute__((unused)) int tstatus(const char *resp)
{
    int st = 0;
    if (!resp || sscanf(resp, "HTTP/1.1 %d", &st) != 1)
        return -1;
    return st;
}

/* One request on a new connection; returns the response (malloc'd). */
static __attribute__((unused)) char *thttp(int port, const char *raw, size_t *len)
{
    int fd = tconnect(port);
    if (fd < 0)
        return NULL;
    char *r = NULL;
    if (tsend(fd, raw, strlen(raw)) == 0)
        r = tread_response(fd, !strncmp(raw, "HEAD", 4), len);
    close(fd);
    return r;
}

static __attribute__((unused)) char *tget(int port, const char *path, size_t *len)
{
    char req[512];
    snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", path);
    return thttp(port, req, len);
}

/* The service still answers: GET /metrics returns 200. */
static __attribute__((unused)) void tassert_serving(int port)
{
    char *r = tget(port, "/metrics", NULL);
    assert_int_equal(tstatus(r), 200);
    free(r);
}

static __attribute__((unused)) const char *tbody(const char *resp)
{
    const char *p = resp ? strstr(resp, "\r\n\r\n") : NULL;
    return p ? p + 4 : "";
}

/* Did the server close the connection (EOF within the timeout)? */
static __attribute__((unused)) bool tclosed(int fd)
{
    char tmp[4096];
    for (int i = 0; i < 100; i++) {
        ssize_t r = recv(fd, tmp, sizeof tmp, 0);
        if (r == 0)
            return true;
        if (r < 0)
            return errno == ECONNRESET;
    }
    return false;
}

/* The fleet labels every /metrics sample starts with, set through the
 * environment (the library reads it when the config leaves them NULL). */
#define FLEET "job=\"t\",rank=\"0\",host=\"h\","
static __attribute__((unused)) void fleet_env(void)
{
    setenv("ACTSTORE_JOB", "t", 1);
    setenv("ACTSTORE_RANK", "0", 1);
    setenv("ACTSTORE_HOST", "h", 1);
}

#endif

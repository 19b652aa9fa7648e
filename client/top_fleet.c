/*
 * actstore top ADDR ADDR...: one line per store of every endpoint (job,
 * rank and host from each service's snapshot), then the fleet's total.
 * Live mode polls every endpoint's /api/v1/snapshot once a second (one
 * request each, 900 ms timeout, so a dead rank costs one timeout per
 * frame and shows as "unreachable"); q or Ctrl-C quits. --once prints one
 * table and exits 1 when an endpoint did not answer within 5 s (as the
 * single-endpoint --once: a busy trainer's service may answer late, and
 * one table has no frame rate to keep).
 */
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "cli.h"
#include "client.h"
#include "top_fleet.h"

typedef struct fleet_sum {
    double live, peak, raw, stored, fallbacks, meta;
    int    stores;
} fleet_sum;

static void line(FILE *f, const char *job, const char *rank, const char *host,
                 const char *store, const char *step, const char *phase,
                 const fleet_sum *s)
{
    char b[4][32], r[16];
    if (s->stored > 0)
        snprintf(r, sizeof r, "%.1fx", s->raw / s->stored);
    else
        snprintf(r, sizeof r, "-");
    fprintf(f, "%-12.12s %-5.5s %-14.14s %-8.8s %7s %-9.9s %10s %10s %10s %10s %6s %9.0f %5.0f\n",
            job, rank, host, store, step, phase, as_cli_human_bytes(s->live, b[0], 32),
            as_cli_human_bytes(s->peak, b[1], 32), as_cli_human_bytes(s->raw, b[2], 32),
            as_cli_human_bytes(s->stored, b[3], 32), r, s->fallbacks, s->meta);
}

/* One endpoint: its stores' lines, added to *tot. 0, or -1 unreachable
 * (no answer within timeout_ms). */
static int endpoint(FILE *f, const char *addr, int timeout_ms, fleet_sum *tot)
{
    as_client_response resp;
    char err[256] = "";
    if (as_client_get(addr, "/api/v1/snapshot", timeout_ms, &resp, err, sizeof err)) {
        fprintf(f, "%-12s unreachable: %s (%s)\n", "-", addr, err);
        return -1;
    }
    if (resp.status != 200) {
        fprintf(f, "%-12s %s answered HTTP %d\n", "-", addr, resp.status);
        as_client_response_free(&resp);
        return -1;
    }
    cJSON *j = cJSON_Parse(resp.body);
    as_client_response_free(&resp);
    if (!j) {
        fprintf(f, "%-12s %s: snapshot is not JSON\n", "-", addr);
        return -1;
    }
    const cJSON *s;
    cJSON_ArrayForEach(s, cJSON_GetObjectItem(j, "stores")) {
        const cJSON *a = cJSON_GetObjectItem(s, "arena"), *sv = cJSON_GetObjectItem(s, "saved");
        fleet_sum one = {.live = as_cli_jnum(a, "live_bytes", 0), .peak = as_cli_jnum(a, "peak_bytes", 0),
                         .raw = as_cli_jnum(sv, "raw_peak_bytes", 0),
                         .stored = as_cli_jnum(sv, "stored_peak_bytes", 0),
                         .fallbacks = as_cli_jnum(sv, "fallbacks", 0),
                         .meta = as_cli_jnum(sv, "meta_mismatches", 0), .stores = 1};
        char step[24];
        snprintf(step, sizeof step, "%.0f", as_cli_jnum(s, "step", 0));
        line(f, as_cli_jstr(j, "job", "-"), as_cli_jstr(j, "rank", "-"), as_cli_jstr(j, "host", "-"), as_cli_jstr(s, "label", "-"), step,
             as_cli_jstr(s, "phase", "-"), &one);
        tot->live += one.live, tot->peak += one.peak, tot->raw += one.raw;
        tot->stored += one.stored, tot->fallbacks += one.fallbacks, tot->meta += one.meta;
        tot->stores++;
    }
    cJSON_Delete(j);
    return 0;
}

/* The whole table; returns the number of endpoints that did not answer. */
static int table(FILE *f, const char *const *addrs, int n, int timeout_ms)
{
    fprintf(f, "%-12s %-5s %-14s %-8s %7s %-9s %10s %10s %10s %10s %6s %9s %5s\n", "job",
            "rank", "host", "store", "step", "phase", "live", "peak", "saved raw",
            "stored", "ratio", "fallbacks", "meta");
    fleet_sum tot = {0};
    int down = 0;
    for (int i = 0; i < n; i++)
        down += endpoint(f, addrs[i], timeout_ms, &tot) != 0;
    char who[48];
    snprintf(who, sizeof who, "%d/%d up", n - down, n);
    line(f, "total", "", who, "", "", "", &tot);
    return down;
}

static volatile sig_atomic_t interrupted;
static void on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
}

int as_top_fleet(const char *const *addrs, int n, bool once)
{
    if (once) {
        printf("actstore top  %d endpoints\n\n", n);
        int down = table(stdout, addrs, n, 5000);
        return down ? as_cli_fail("top", "%d of %d endpoints did not answer", down, n)
                    : AS_EXIT_OK;
    }
    struct termios old, raw;
    bool tty = tcgetattr(0, &old) == 0;
    if (tty) {
        raw = old;
        raw.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
        tcsetattr(0, TCSANOW, &raw);
    }
    struct sigaction sa = {.sa_handler = on_sigint}, old_sa;
    sigaction(SIGINT, &sa, &old_sa);   /* no SA_RESTART: poll returns */
    printf("\x1b[?25l");
    for (unsigned frame = 1; !interrupted; frame++) {
        char when[32];
        time_t now = time(NULL);
        strftime(when, sizeof when, "%H:%M:%S", localtime(&now));
        printf("\x1b[H\x1b[2J\x1b[1mactstore top\x1b[0m  %d endpoints  %s  frame %u   "
               "(q quits)\n\n", n, when, frame);
        table(stdout, addrs, n, 900);
        fflush(stdout);
        struct pollfd p = {.fd = 0, .events = POLLIN};
        char c = 0;
        if (poll(&p, 1, 1000) > 0 && (read(0, &c, 1) <= 0 || c == 'q' || c == 'Q' || c == 3))
            break;
    }
    printf("\x1b[?25h\n");
    if (tty)
        tcsetattr(0, TCSANOW, &old);
    sigaction(SIGINT, &old_sa, NULL);
    return AS_EXIT_OK;
}

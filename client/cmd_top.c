/*
 * actstore top ADDR: a live terminal view of a running service (totals,
 * per-kind and top-layer tables, a sparkline of live bytes). Subscribes to
 * the event stream; q (or Ctrl-C) quits. --once (implied when stdout is not
 * a terminal) prints one snapshot and exits.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <uv.h>

#include "cli.h"
#include "client.h"
#include "top_fleet.h"
#include "util/clock.h"

#define HIST 64   /* sparkline points per store */
#define MAX_STORES 16

/* Per-step peaks reset when a step begins, so right after a boundary they
 * read 0. Live mode shows the larger of this step's peak so far and the
 * final peaks of the steps seen in the last 2 s, always including the last
 * finished one (as the dashboard does): steady for slow steps and for
 * steps shorter than a frame alike. */
#define HELD_MAX 2048
#define HELD_DONE 16
typedef struct held_done {
    double t, raw, stored;
} held_done;
typedef struct held {
    char      key[96];
    double    step, raw, stored;
    held_done done[HELD_DONE];     /* oldest first */
    int       ndone;
} held;

typedef struct top_state {
    const char *addr;
    int         layers;              /* top layers shown */
    double      hist[MAX_STORES][HIST];
    int         nhist[MAX_STORES];
    unsigned    frames;
    uv_loop_t  *loop;
    uv_tty_t    tty;
    uv_signal_t sig;
    as_client_sse *sse;
    bool        tty_open, quit;
    int         end_rc;
    held        held[HELD_MAX];
    int         nheld;
} top_state;

static void hold(top_state *st, int si, const char *group, const char *name, double step,
                 double *raw, double *stored)
{
    char key[96];
    snprintf(key, sizeof key, "%d/%s/%s", si, group, name);
    held *h = NULL;
    for (int i = 0; i < st->nheld && !h; i++)
        if (!strcmp(st->held[i].key, key))
            h = &st->held[i];
    if (!h) {
        if (st->nheld == HELD_MAX)
            return;
        h = &st->held[st->nheld++];
        snprintf(h->key, sizeof h->key, "%s", key);
        h->step = step;
        h->raw = *raw;
        h->stored = *stored;
        h->ndone = 0;
    }
    double now = as_clock_wall_s();
    if (step != h->step) {
        if (h->ndone == HELD_DONE) {
            memmove(h->done, h->done + 1, (HELD_DONE - 1) * sizeof *h->done);
            h->ndone--;
        }
        h->done[h->ndone++] = (held_done){now, h->raw, h->stored};
        h->step = step;
        h->raw = *raw;
        h->stored = *stored;
    } else if (*raw >= h->raw) {
        h->raw = *raw;
        h->stored = *stored;
    }
    int drop = 0;
    while (drop < h->ndone - 1 && now - h->done[drop].t > 2.0)
        drop++;
    if (drop) {
        memmove(h->done, h->done + drop, (size_t)(h->ndone - drop) * sizeof *h->done);
        h->ndone -= drop;
    }
    *raw = h->raw;
    *stored = h->stored;
    for (int i = 0; i < h->ndone; i++)
        if (h->done[i].raw > *raw) {
            *raw = h->done[i].raw;
            *stored = h->done[i].stored;
        }
}

typedef struct row {
    const cJSON *j;
    double raw, stored;
} row;

static int cmp_row(const void *a, const void *b)
{
    const row *x = a, *y = b;
    if (x->raw != y->raw)
        return x->raw < y->raw ? 1 : -1;
    return strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(x->j, "name")),
                  cJSON_GetStringValue(cJSON_GetObjectItem(y->j, "name")));
}

static const char *hb(double v, char *buf)
{
    return as_cli_human_bytes(v, buf, 32);
}

static void sparkline(FILE *f, const double *v, int n)
{
    static const char *const bars[] = {"▁", "▂", "▃", "▄", "▅", "▆", "▇", "█"};
    double lo = 0, hi = 0;
    for (int i = 0; i < n; i++)
        hi = v[i] > hi ? v[i] : hi;
    for (int i = 0; i < n; i++) {
        int k = hi > lo ? (int)((v[i] - lo) / (hi - lo) * 7.0 + 0.5) : 0;
        fputs(bars[k < 0 ? 0 : k > 7 ? 7 : k], f);
    }
}

static void ratio_str(double raw, double stored, char *buf, size_t n)
{
    if (stored > 0)
        snprintf(buf, n, "%.1fx", raw / stored);
    else
        snprintf(buf, n, "%s", raw > 0 ? "inf" : "-");
}

/* Print every store of a snapshot (or of a frame's "now" array). */
static void render(FILE *f, top_state *st, const cJSON *stores, bool color)
{
    const char *B = color ? "\x1b[1m" : "", *D = color ? "\x1b[2m" : "", *R = color ? "\x1b[0m" : "";
    char b1[32], b2[32], b3[32], b4[32], r[16];
    int si = 0;
    const cJSON *s;
    cJSON_ArrayForEach(s, stores) {
        if (si >= MAX_STORES)
            break;
        fprintf(f, "%sstore %s%s", B, as_cli_jstr(s, "label", ""), R);
        if (!cJSON_IsTrue(cJSON_GetObjectItem(s, "available"))) {
            fprintf(f, "  unavailable (%s)\n\n", as_cli_jstr(s, "error", ""));
            si++;
            continue;
        }
        fprintf(f, "  step %.0f  %s\n", as_cli_jnum(s, "step", 0), as_cli_jstr(s, "phase", ""));
        const cJSON *a = cJSON_GetObjectItem(s, "arena");
        if (a) {
            fprintf(f, "  live %-10s peak %-10s resident %-10s", hb(as_cli_jnum(a, "live_bytes", 0), b1),
                    hb(as_cli_jnum(a, "peak_bytes", 0), b2), hb(as_cli_jnum(a, "resident_bytes", 0), b3));
            if (as_cli_jnum(a, "budget_bytes", 0) > 0)
                fprintf(f, " budget %s", hb(as_cli_jnum(a, "budget_bytes", 0), b4));
            fputc('\n', f);
        }
        if (st->nhist[si] > 1) {
            fprintf(f, "  %slive%s ", D, R);
            sparkline(f, st->hist[si] + (HIST - st->nhist[si]), st->nhist[si]);
            fputc('\n', f);
        }
        const cJSON *sv = cJSON_GetObjectItem(s, "saved");
        double step = as_cli_jnum(s, "step", 0);
        if (sv) {
            double raw = as_cli_jnum(sv, "raw_peak_bytes", 0), sto = as_cli_jnum(sv, "stored_peak_bytes", 0);
            hold(st, si, "total", "", step, &raw, &sto);
            ratio_str(raw, sto, r, sizeof r);
            char d[32];
            as_cli_human_bytes(raw > sto ? raw - sto : sto - raw, d, sizeof d);
            fprintf(f, "  saved now %s of %s raw   step peak %s of %s raw (%s%s%s, %s %s)\n",
                    hb(as_cli_jnum(sv, "stored_bytes", 0), b1), hb(as_cli_jnum(sv, "raw_bytes", 0), b2),
                    hb(sto, b3), hb(raw, b4), B, r, R, raw >= sto ? "saving" : "costing", d);
            fprintf(f, "  %s%-20s %10s %10s %7s %8s %9s%s\n", D, "kind", "raw peak", "stored",
                    "ratio", "saves", "fallbacks", R);
            const cJSON *k;
            cJSON_ArrayForEach(k, cJSON_GetObjectItem(s, "kinds")) {
                double kr = as_cli_jnum(k, "raw_peak_bytes", 0), ks = as_cli_jnum(k, "stored_peak_bytes", 0);
                hold(st, si, "kind", as_cli_jstr(k, "name", ""), step, &kr, &ks);
                ratio_str(kr, ks, r, sizeof r);
                fprintf(f, "  %-20s %10s %10s %7s %8.0f %9.0f\n", as_cli_jstr(k, "name", ""), hb(kr, b1),
                        hb(ks, b2), r, as_cli_jnum(k, "saves", 0), as_cli_jnum(k, "fallbacks", 0));
            }
            fprintf(f, "  %s%-28s %-14s %10s %10s %7s %9s%s\n", D, "top layers", "policy",
                    "raw peak", "stored", "ratio", "fallbacks", R);
            static row rows[1024];
            int n = 0;
            cJSON_ArrayForEach(k, cJSON_GetObjectItem(s, "layers")) {
                if (n == 1024)
                    break;
                rows[n] = (row){k, as_cli_jnum(k, "raw_peak_bytes", 0), as_cli_jnum(k, "stored_peak_bytes", 0)};
                hold(st, si, "layer", as_cli_jstr(k, "name", ""), step, &rows[n].raw, &rows[n].stored);
                n++;
            }
            qsort(rows, (size_t)n, sizeof *rows, cmp_row);
            for (int i = 0; i < n && i < st->layers; i++) {
                const cJSON *l = rows[i].j;
                ratio_str(rows[i].raw, rows[i].stored, r, sizeof r);
                fprintf(f, "  %-28.28s %-14.14s %10s %10s %7s %9.0f\n", as_cli_jstr(l, "name", ""),
                        as_cli_jstr(l, "policy", ""), hb(rows[i].raw, b1), hb(rows[i].stored, b2), r,
                        as_cli_jnum(l, "fallbacks", 0));
            }
        }
        fputc('\n', f);
        si++;
    }
}

static void push_hist(top_state *st, int si, double v)
{
    if (si >= MAX_STORES)
        return;
    memmove(st->hist[si], st->hist[si] + 1, (HIST - 1) * sizeof(double));
    st->hist[si][HIST - 1] = v;
    if (st->nhist[si] < HIST)
        st->nhist[si]++;
}

/* ---- live mode -------------------------------------------------------------- */

static void stop_all(top_state *st)
{
    if (st->quit)
        return;
    st->quit = true;
    if (st->sse)
        as_client_sse_close(st->sse);
    if (st->tty_open) {
        uv_tty_reset_mode();
        uv_close((uv_handle_t *)&st->tty, NULL);
    }
    uv_close((uv_handle_t *)&st->sig, NULL);
}

static int on_frame(void *ud, const char *data, size_t len, bool comment)
{
    top_state *st = ud;
    (void)len;
    if (comment)
        return 0;
    cJSON *j = cJSON_Parse(data);
    if (!j)
        return 0;
    int si = 0;
    const cJSON *s;
    cJSON_ArrayForEach(s, cJSON_GetObjectItem(j, "stores")) {
        const cJSON *live = cJSON_GetArrayItem(cJSON_GetObjectItem(s, "live"), 0);
        if (cJSON_IsNumber(live))
            push_hist(st, si, live->valuedouble);
        si++;
    }
    st->frames++;
    char when[32];
    time_t now = time(NULL);
    strftime(when, sizeof when, "%H:%M:%S", localtime(&now));
    printf("\x1b[H\x1b[2J\x1b[1mactstore top\x1b[0m  %s  %s  frame %u   (q quits)\n\n", st->addr,
           when, st->frames);
    render(stdout, st, cJSON_GetObjectItem(j, "now"), true);
    fflush(stdout);
    cJSON_Delete(j);
    return 0;
}

static void on_end(void *ud, int rc)
{
    top_state *st = ud;
    st->sse = NULL;
    st->end_rc = rc;
    stop_all(st);
}

static void on_key_alloc(uv_handle_t *h, size_t n, uv_buf_t *b)
{
    static char buf[64];
    (void)h;
    (void)n;
    *b = uv_buf_init(buf, sizeof buf);
}

static void on_key(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    top_state *st = s->data;
    if (n < 0) {
        stop_all(st);
        return;
    }
    for (ssize_t i = 0; i < n; i++)
        if (b->base[i] == 'q' || b->base[i] == 'Q' || b->base[i] == 3)
            stop_all(st);
}

static void on_sigint(uv_signal_t *h, int sig)
{
    (void)sig;
    stop_all(h->data);
}

static int run_live(top_state *st)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    st->loop = &loop;
    uv_signal_init(&loop, &st->sig);
    st->sig.data = st;
    uv_signal_start(&st->sig, on_sigint, SIGINT);
    if (uv_tty_init(&loop, &st->tty, 0, 1) == 0) {
        st->tty_open = true;
        st->tty.data = st;
        uv_tty_set_mode(&st->tty, UV_TTY_MODE_RAW);
        uv_read_start((uv_stream_t *)&st->tty, on_key_alloc, on_key);
    }
    int rc = as_client_sse_open(&loop, st->addr, on_frame, on_end, st, &st->sse);
    if (rc) {
        stop_all(st);
        st->end_rc = rc;
    }
    printf("\x1b[?25l");   /* hide the cursor while drawing */
    uv_run(&loop, UV_RUN_DEFAULT);
    printf("\x1b[?25h\n");
    uv_loop_close(&loop);
    uv_tty_reset_mode();
    if (st->end_rc && !(st->quit && st->end_rc == 0))
        return as_cli_fail("top", "lost the event stream from %s (%s)", st->addr,
                           as_strerror(st->end_rc));
    return AS_EXIT_OK;
}

/* ---- once ------------------------------------------------------------------------ */

static int run_once(top_state *st)
{
    char err[256];
    as_client_response r;
    if (as_client_get(st->addr, "/api/v1/timeline", 5000, &r, err, sizeof err))
        return as_cli_fail("top", "%s", err);
    cJSON *tl = cJSON_Parse(r.body);
    as_client_response_free(&r);
    int si = 0;
    const cJSON *s;
    const cJSON *tl_stores = tl ? cJSON_GetObjectItem(tl, "stores") : NULL;
    cJSON_ArrayForEach(s, tl_stores) {
        const cJSON *live = cJSON_GetObjectItem(s, "live");
        int n = cJSON_GetArraySize(live);
        for (int i = n > HIST ? n - HIST : 0; i < n; i++)
            push_hist(st, si, cJSON_GetArrayItem(live, i)->valuedouble);
        si++;
    }
    cJSON_Delete(tl);
    if (as_client_get(st->addr, "/api/v1/snapshot", 5000, &r, err, sizeof err))
        return as_cli_fail("top", "%s", err);
    if (r.status != 200) {
        int status = r.status;
        as_client_response_free(&r);
        return as_cli_fail("top", "%s answered HTTP %d", st->addr, status);
    }
    cJSON *j = cJSON_Parse(r.body);
    as_client_response_free(&r);
    if (!j)
        return as_cli_fail("top", "%s sent a snapshot that is not JSON", st->addr);
    printf("actstore top  %s  uptime %.0f s\n\n", st->addr, as_cli_jnum(j, "uptime_s", 0));
    render(stdout, st, cJSON_GetObjectItem(j, "stores"), false);
    cJSON_Delete(j);
    return AS_EXIT_OK;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: actstore top ADDR [ADDR...] [--once] [--layers N]\n\n"
               "Live terminal view of a running actstore service (started with --serve ADDR):\n"
               "totals, per-kind and top-layer tables, a sparkline of live bytes.\n"
               "With several ADDRs (one per rank): one line per store with its job, rank\n"
               "and host, and the fleet's total; --once then exits 1 if one is down.\n"
               "  ADDR        HOST:PORT, :PORT, PORT or http://HOST:PORT/\n"
               "  --once      print one snapshot and exit (default when stdout is not a terminal)\n"
               "  --layers N  top layers to show (default 10)\n"
               "Keys: q quits.\n");
}

int as_cmd_top(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);   /* a service that goes away: EPIPE, not death */
    top_state *st = calloc(1, sizeof *st);
    if (!st)
        return as_cli_fail("top", "out of memory");
    st->layers = 10;
    bool once = false;
    const char *addrs[64];
    int naddr = 0;
    for (int i = 1; i < argc; i++) {
        const char *v;
        if (as_cli_is_help(argv[i])) {
            usage(stdout);
            free(st);
            return AS_EXIT_OK;
        } else if (!strcmp(argv[i], "--once")) {
            once = true;
        } else if ((v = as_cli_flag_value(argc, argv, &i, "--layers"))) {
            unsigned long long n;
            if (as_cli_parse_u64("top", "--layers", v, &n)) {
                free(st);
                return AS_EXIT_USAGE;
            }
            st->layers = (int)(n > 1000 ? 1000 : n);
        } else if (argv[i][0] == '-' || naddr == 64) {
            free(st);
            return as_cli_usage("top", "unexpected argument '%s'%s", argv[i],
                                naddr == 64 ? " (at most 64 ADDRs)" : "");
        } else {
            addrs[naddr++] = st->addr = argv[i];
        }
    }
    if (!st->addr) {
        free(st);
        return as_cli_usage("top", "missing ADDR (the --serve address of a running command)");
    }
    if (!once && (!as_cli_stdout_is_tty() || !isatty(0)))
        once = true;
    int rc = naddr > 1 ? as_top_fleet(addrs, naddr, once)
             : once    ? run_once(st) : run_live(st);
    free(st);
    return rc;
}

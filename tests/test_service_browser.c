/*
 * The dashboard in a real browser: headless Chromium (Debian package
 * chromium) loads the page of a running service with real data (two stores
 * driven like a training loop, tests/test_service_work.h), and the test
 * reads the DOM to check that every chart received data, the tables are
 * filled and the units are humanized. The browser is driven through the
 * DevTools protocol over a pipe (--remote-debugging-pipe: NUL-separated
 * JSON on fds 3 and 4), so no port and no WebSocket are involved.
 *
 * Artifacts (kept on success and failure) in <build>/test-artifacts/:
 * dashboard.png (full-page screenshot), dashboard-dom.json (what the DOM
 * said), chromium.log. A missing chromium FAILS the test (set AS_CHROMIUM
 * to use another binary). Every wait is bounded.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <cjson/cJSON.h>

#include <poll.h>

#include "test_service_proc.h"
#include "test_service_util.h"
#include "test_service_work.h"
#include "layers/train.h"
#include "support/test_main.h"

#ifndef AS_BINARY_DIR
#define AS_BINARY_DIR "."
#endif

/* ---- DevTools protocol over the pipe ------------------------------------------ */

typedef struct cdp {
    int    wfd, rfd;
    char  *buf;
    size_t len, cap;
    int    next_id;
} cdp;

static int cdp_send(cdp *c, const char *session, const char *method, cJSON *params)
{
    cJSON *m = cJSON_CreateObject();
    int id = ++c->next_id;
    cJSON_AddNumberToObject(m, "id", id);
    cJSON_AddStringToObject(m, "method", method);
    if (session)
        cJSON_AddStringToObject(m, "sessionId", session);
    cJSON_AddItemToObject(m, "params", params ? params : cJSON_CreateObject());
    char *s = cJSON_PrintUnformatted(m);
    cJSON_Delete(m);
    size_t n = strlen(s) + 1;              /* with the NUL separator */
    const char *p = s;
    while (n) {
        ssize_t w = write(c->wfd, p, n);
        if (w <= 0) {
            free(s);
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    free(s);
    return id;
}

/* The reply to request id (events are skipped), or NULL on timeout / EOF. */
static cJSON *cdp_wait(cdp *c, int id, double timeout_s)
{
    double t0 = as_clock_wall_s();
    for (;;) {
        char *nul;
        while (c->len && (nul = memchr(c->buf, 0, c->len))) {
            cJSON *m = cJSON_Parse(c->buf);
            size_t used = (size_t)(nul - c->buf) + 1;
            memmove(c->buf, c->buf + used, c->len - used);
            c->len -= used;
            const cJSON *mid = m ? cJSON_GetObjectItem(m, "id") : NULL;
            if (cJSON_IsNumber(mid) && mid->valueint == id)
                return m;
            cJSON_Delete(m);
        }
        double left = timeout_s - (as_clock_wall_s() - t0);
        if (left <= 0)
            return NULL;
        struct pollfd pf = {.fd = c->rfd, .events = POLLIN};
        if (poll(&pf, 1, (int)(left * 1000) + 1) <= 0)
            continue;
        if (c->cap - c->len < 65536) {
            c->cap = c->cap ? c->cap * 2 : 1 << 20;
            c->buf = realloc(c->buf, c->cap);
            assert_non_null(c->buf);
        }
        ssize_t r = read(c->rfd, c->buf + c->len, c->cap - c->len - 1);
        if (r <= 0)
            return NULL;
        c->len += (size_t)r;
    }
}

/* Send and wait; fails the test on timeout or a protocol error. */
static cJSON *cdp_call(cdp *c, const char *session, const char *method, cJSON *params,
                       double timeout_s)
{
    int id = cdp_send(c, session, method, params);
    if (id < 0)
        fail_msg("DevTools pipe: cannot send %s (browser gone?)", method);
    cJSON *r = cdp_wait(c, id, timeout_s);
    if (!r)
        fail_msg("DevTools: no answer to %s within %.0f s", method, timeout_s);
    const cJSON *err = cJSON_GetObjectItem(r, "error");
    if (err) {
        char *s = cJSON_PrintUnformatted(err);
        fail_msg("DevTools: %s failed: %s", method, s);
    }
    return r;
}

static const cJSON *result(const cJSON *r, const char *k)
{
    return cJSON_GetObjectItem(cJSON_GetObjectItem(r, "result"), k);
}

/* ---- base64 (the screenshot) ------------------------------------------------------- */

static size_t b64_decode(const char *in, unsigned char *out)
{
    static signed char map[256];
    if (!map['B']) {
        memset(map, -1, sizeof map);
        const char *a = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        for (int i = 0; i < 64; i++)
            map[(unsigned char)a[i]] = (signed char)i;
    }
    size_t n = 0;
    unsigned v = 0;
    int bits = 0;
    for (; *in; in++) {
        int d = map[(unsigned char)*in];
        if (d < 0)
            continue;          /* '=' padding, newlines */
        v = (v << 6) | (unsigned)d;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[n++] = (unsigned char)(v >> bits);
        }
    }
    return n;
}

/* ---- the test ------------------------------------------------------------------ */

/* What the page says about itself (see store/service/web/app.js). */
static const char dom_probe[] =
    "(() => {"
    " const q = id => document.getElementById(id);"
    " const ch = id => { const e = q(id); return e ? {points: +e.dataset.points,"
    "   nonzero: +e.dataset.nonzero, canvas: e.querySelectorAll('canvas').length} : null; };"
    " const rows = id => { const e = q(id); return e ? e.querySelectorAll('tbody tr').length : -1; };"
    " const txt = id => { const e = q(id); return e ? e.textContent : null; };"
    " const body = document.body.innerText;"
    " return JSON.stringify({state: document.body.dataset.state, frames: +document.body.dataset.frames,"
    "  points: +document.body.dataset.points, uplot: typeof uPlot,"
    "  live: ch('chart-live'), saved: ch('chart-saved'), kindsA: ch('chart-kinds-0'),"
    "  kindsB: ch('chart-kinds-1'), tagsA: ch('chart-tags-0'), tagsB: ch('chart-tags-1'),"
    "  layersHistA: ch('chart-lhist-0'), polHistB: ch('chart-phist-1'), polHistA: ch('chart-phist-0'),"
    "  layersA: rows('layers-0'), layersB: rows('layers-1'), polA: rows('pol-0'), polB: rows('pol-1'),"
    "  compare: rows('compare'), liveA: txt('k-live-0'), ratioA: txt('k-ratio-0'),"
    "  ratioB: txt('k-ratio-1'), storedB: txt('k-stored-1'), step: txt('step'),"
    "  firstLayerB: (document.querySelector('#layers-1 tbody td.name') || {}).textContent,"
    "  kindsMode: (document.querySelector('.kinds-mode') || {}).textContent,"
    "  bad: /NaN|undefined|Infinity/.test(body)});"
    "})()";

static double dnum(const cJSON *o, const char *a, const char *b)
{
    const cJSON *x = cJSON_GetObjectItem(o, a);
    if (b)
        x = cJSON_GetObjectItem(x, b);
    return cJSON_IsNumber(x) ? x->valuedouble : -1;
}

static const char *dstr(const cJSON *o, const char *k)
{
    const cJSON *x = cJSON_GetObjectItem(o, k);
    return cJSON_IsString(x) ? x->valuestring : "";
}

/* The page has drawn what test_dashboard_ab checks: the event stream
 * flowed, every chart holds data from both stores, the tables are filled
 * and the page's own history charts have points. Every field is read
 * through dnum (a chart not built yet is null in the probe). */
static bool dom_ready(const cJSON *d)
{
    return dnum(d, "frames", NULL) >= 15 && dnum(d, "live", "points") >= 30 &&
           dnum(d, "live", "nonzero") >= 4 && dnum(d, "saved", "nonzero") >= 4 &&
           dnum(d, "kindsA", "nonzero") >= 3 && dnum(d, "kindsB", "nonzero") >= 3 &&
           dnum(d, "tagsA", "nonzero") >= 3 && dnum(d, "tagsB", "points") >= 30 &&
           dnum(d, "layersA", NULL) >= WORK_LAYERS && dnum(d, "layersB", NULL) >= WORK_LAYERS &&
           dnum(d, "polB", NULL) >= 2 && dnum(d, "layersHistA", "nonzero") >= 3 &&
           dnum(d, "polHistB", "nonzero") >= 2 && dnum(d, "compare", NULL) == 2;
}

/* "123 B", "4.66 MiB", "388 KiB": a number, a space, a binary unit */
static bool humanized(const char *s)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || v < 0 || *end != ' ')
        return false;
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    for (size_t i = 0; i < 5; i++)
        if (!strcmp(end + 1, units[i]))
            return true;
    return false;
}


/* The page's state (dom_probe) parsed, or NULL while the page cannot say. */
static cJSON *probe(cdp *c, const char *session)
{
    cJSON *p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "expression", dom_probe);
    cJSON_AddBoolToObject(p, "returnByValue", 1);
    cJSON *r = cdp_call(c, session, "Runtime.evaluate", p, 30);
    const cJSON *val = cJSON_GetObjectItem(result(r, "result"), "value");
    cJSON *dom = cJSON_IsString(val) ? cJSON_Parse(val->valuestring) : NULL;
    cJSON_Delete(r);
    return dom;
}

/* Everything a test starts, stopped by fx_teardown whether the test passed
 * or not: a failed assertion leaves the test body by longjmp, and a
 * service, worker thread or browser left running into the next test (or
 * into exit) takes the whole process down. */
typedef struct trainer {
    as_nn_run  *run;
    pthread_t   thread;
    atomic_bool stop;
    atomic_long steps;
    int         rc;
} trainer;

static struct fixture {
    work_arm    arms[2];
    as_store   *store;
    trainer     tr;
    bool        tr_running;
    as_service *svc;
    pid_t       chromium;
    cdp         c;
    char        profile[300];
} fx;

static void fx_stop_browser(void)
{
    if (fx.chromium > 0) {
        if (fx.c.wfd > 0) {
            int id = cdp_send(&fx.c, NULL, "Browser.close", NULL);
            cJSON_Delete(id > 0 ? cdp_wait(&fx.c, id, 5) : NULL);
        }
        proc_stop(fx.chromium, 10);
        fx.chromium = 0;
    }
    if (fx.c.wfd > 0)
        close(fx.c.wfd);
    if (fx.c.rfd > 0)
        close(fx.c.rfd);
    free(fx.c.buf);
    memset(&fx.c, 0, sizeof fx.c);
    if (fx.profile[0])
        scratch_remove(fx.profile);
    fx.profile[0] = 0;
}

/* The service, then the threads that feed it (the trainer's result stays in fx.tr.rc). */
static void fx_stop_workload(void)
{
    as_service_stop(fx.svc);
    fx.svc = NULL;
    if (fx.tr_running) {
        atomic_store(&fx.tr.stop, true);
        pthread_join(fx.tr.thread, NULL);
        fx.tr_running = false;
    }
    work_stop(&fx.arms[0]);
    work_stop(&fx.arms[1]);
}

static int fx_teardown(void **state)
{
    (void)state;
    fx_stop_browser();
    fx_stop_workload();
    as_nn_run_destroy(fx.tr.run);
    as_store_destroy(fx.store);
    memset(&fx, 0, sizeof fx);
    return 0;
}

/* Start a fresh headless Chromium with the DevTools protocol on fds 3 (in)
 * and 4 (out), open a page and attach to it: the session id in session. */
static void browser_open(const char *log, char *session, size_t sessionlen)
{
    char bin[512], flag_profile[400];
    PROC_REQUIRE("AS_CHROMIUM", "chromium", "chromium", bin);
    assert_non_null(scratch_make(fx.profile, sizeof fx.profile, "chromium"));
    snprintf(flag_profile, sizeof flag_profile, "--user-data-dir=%s", fx.profile);
    int to_b[2], from_b[2];
    assert_int_equal(pipe(to_b), 0);
    assert_int_equal(pipe(from_b), 0);
    char *argv[] = {bin, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--disable-extensions",
                    "--disable-default-apps", "--no-default-browser-check",
                    "--disable-dev-shm-usage", "--mute-audio", "--hide-scrollbars",
                    "--remote-debugging-pipe", flag_profile, "about:blank", NULL};
    const int fds[2][2] = {{to_b[0], 3}, {from_b[1], 4}};
    fx.chromium = proc_spawn(argv, log, fds, 2);
    close(to_b[0]);
    close(from_b[1]);
    fx.c = (cdp){.wfd = to_b[1], .rfd = from_b[0]};
    assert_true(fx.chromium > 0);

    /* a loaded machine starts a browser slowly: generous, finite bounds */
    cJSON *p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "url", "about:blank");
    cJSON *r = cdp_call(&fx.c, NULL, "Target.createTarget", p, 60);
    char target[128];
    snprintf(target, sizeof target, "%s", cJSON_GetStringValue(result(r, "targetId")));
    cJSON_Delete(r);
    p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "targetId", target);
    cJSON_AddBoolToObject(p, "flatten", 1);
    r = cdp_call(&fx.c, NULL, "Target.attachToTarget", p, 30);
    snprintf(session, sessionlen, "%s", cJSON_GetStringValue(result(r, "sessionId")));
    cJSON_Delete(r);
}

/* Probe the DOM every 300 ms until ready(dom) or timeout_s: the last state
 * (caller deletes; NULL if no probe answered); *waited gets the seconds. */
static cJSON *poll_dom(const char *session, bool (*ready)(const cJSON *), double timeout_s,
                       double *waited)
{
    cJSON *dom = NULL;
    double t0 = as_clock_wall_s(), next_note = t0 + 15;
    for (;;) {
        cJSON_Delete(dom);
        dom = probe(&fx.c, session);
        if ((dom && ready(dom)) || as_clock_wall_s() - t0 >= timeout_s)
            break;
        if (as_clock_wall_s() >= next_note) {   /* what a slow page is still missing */
            char *ds = dom ? cJSON_PrintUnformatted(dom) : NULL;
            fprintf(stderr, "chromium: not ready after %.0f s: %s\n", as_clock_wall_s() - t0,
                    ds ? ds : "(no DOM state)");
            free(ds);
            next_note += 15;
        }
        usleep(300000);
    }
    *waited = as_clock_wall_s() - t0;
    return dom;
}

/* Load url in a fresh headless Chromium, poll the DOM (dom_probe) until
 * ready(dom) or timeout_s; then_js (may be NULL) is run once the page is
 * ready (e.g. a click), and the DOM polled again until then_ready(dom).
 * Saves a full-page screenshot to <build>/test-artifacts/<name>.png and
 * the DOM state to <name>-dom.json. Returns the last DOM state (caller
 * deletes) or NULL; *png_len = bytes of the screenshot. */
static cJSON *browse(const char *url, const char *name, bool (*ready)(const cJSON *),
                     double timeout_s, const char *then_js, bool (*then_ready)(const cJSON *),
                     size_t *png_len)
{
    char dir[300], log[400], png[400], domf[400], session[128];
    snprintf(dir, sizeof dir, "%s/test-artifacts", AS_BINARY_DIR);
    mkdir(dir, 0755);
    snprintf(log, sizeof log, "%s/chromium-%s.log", dir, name);
    snprintf(png, sizeof png, "%s/%s.png", dir, name);
    snprintf(domf, sizeof domf, "%s/%s-dom.json", dir, name);
    unlink(log);
    unlink(png);
    browser_open(log, session, sizeof session);
    cJSON *p = cJSON_CreateObject();
    cJSON_AddNumberToObject(p, "width", 1440);
    cJSON_AddNumberToObject(p, "height", 1600);
    cJSON_AddNumberToObject(p, "deviceScaleFactor", 1);
    cJSON_AddBoolToObject(p, "mobile", 0);
    cJSON_Delete(cdp_call(&fx.c, session, "Emulation.setDeviceMetricsOverride", p, 30));
    p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "url", url);
    cJSON_Delete(cdp_call(&fx.c, session, "Page.navigate", p, 60));

    double waited, waited_then = 0;
    cJSON *dom = poll_dom(session, ready, timeout_s, &waited);
    bool ok = dom && ready(dom);
    if (then_js && ok) {
        p = cJSON_CreateObject();
        cJSON_AddStringToObject(p, "expression", then_js);
        cJSON_Delete(cdp_call(&fx.c, session, "Runtime.evaluate", p, 30));
        cJSON_Delete(dom);
        dom = poll_dom(session, then_ready, timeout_s, &waited_then);
        ok = dom && then_ready(dom);
    }

    /* the artifact: a full-page screenshot */
    p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "format", "png");
    cJSON_AddBoolToObject(p, "captureBeyondViewport", 1);
    cJSON *r = cdp_call(&fx.c, session, "Page.captureScreenshot", p, 60);
    const char *b64 = cJSON_GetStringValue(result(r, "data"));
    *png_len = 0;
    if (b64) {
        unsigned char *img = malloc(strlen(b64));
        *png_len = b64_decode(b64, img);
        FILE *f = fopen(png, "wb");
        if (f) {
            fwrite(img, 1, *png_len, f);
            fclose(f);
        }
        free(img);
    }
    cJSON_Delete(r);
    fx_stop_browser();

    char *ds = dom ? cJSON_Print(dom) : NULL;
    FILE *f = fopen(domf, "w");
    if (f) {
        fputs(ds ? ds : "null", f);
        fclose(f);
    }
    fprintf(stderr, "chromium: DOM %s after %.1f s (+%.1f s after the action); "
                    "screenshot %s (%zu bytes)\n%s\n", ok ? "ready" : "NOT ready", waited,
            waited_then, png, *png_len, ds ? ds : "(no DOM state)");
    free(ds);
    if (!ok)
        proc_dump_log(log, 3000);
    return dom;
}

/* How long a page may take to show what a test checks: a few seconds on a
 * quiet machine; the bound is for a loaded 2-core CI host. */
#define DOM_TIMEOUT_S 120

/* ---- 1: two stores (A/B) of the synthetic training loop ---------------------- */

static void test_dashboard_ab(void **state)
{
    (void)state;
    assert_int_equal(work_start(&fx.arms[0], "A", "default=keep"), 0);
    assert_int_equal(work_start(&fx.arms[1], "B", "linear_input=fp16; default=q8"), 0);
    as_service_source src[2] = {{.store = fx.arms[0].store}, {.store = fx.arms[1].store}};
    char err[256];
    assert_int_equal(as_service_start(NULL, src, 2, &fx.svc, err, sizeof err), 0);
    size_t png_len;
    cJSON *dom = browse(as_service_url(fx.svc), "dashboard-ab", dom_ready, DOM_TIMEOUT_S, NULL,
                        NULL, &png_len);
    fx_stop_workload();
    assert_int_equal(fx.arms[0].rc, 0);
    assert_int_equal(fx.arms[1].rc, 0);

    assert_non_null(dom);
    assert_true(png_len > 10000);
    assert_string_equal(dstr(dom, "uplot"), "function");
    assert_string_equal(dstr(dom, "state"), "live");
    assert_true(dnum(dom, "frames", NULL) >= 15);        /* the event stream flowed */
    /* every chart drew data from both stores */
    assert_true(dnum(dom, "live", "points") >= 30);
    assert_true(dnum(dom, "live", "nonzero") >= 4);      /* live + resident, A and B */
    assert_true(dnum(dom, "live", "canvas") >= 1);
    assert_true(dnum(dom, "saved", "nonzero") >= 4);     /* stored + raw, A and B */
    assert_true(dnum(dom, "kindsA", "nonzero") >= 3);    /* linear, norm, activation inputs */
    assert_true(dnum(dom, "kindsB", "nonzero") >= 3);
    assert_true(dnum(dom, "tagsA", "nonzero") >= 3);     /* weights, activations, saved, ... */
    assert_true(dnum(dom, "tagsB", "points") >= 30);
    /* tables: every layer of the workload, the policies of B, the A/B row */
    assert_int_equal((int)dnum(dom, "layersA", NULL), WORK_LAYERS);
    assert_int_equal((int)dnum(dom, "layersB", NULL), WORK_LAYERS);
    assert_true(dnum(dom, "polB", NULL) >= 2);           /* fp16 and q8 */
    /* the page's own history charts: top layers, policy ratios */
    assert_true(dnum(dom, "layersHistA", "nonzero") >= 3);
    assert_true(dnum(dom, "polHistB", "nonzero") >= 2);
    assert_int_equal((int)dnum(dom, "compare", NULL), 2);
    assert_non_null(strstr(dstr(dom, "firstLayerB"), "blocks."));
    /* humanized units, sensible ratios, no NaN / undefined anywhere */
    assert_true(humanized(dstr(dom, "liveA")));
    assert_true(humanized(dstr(dom, "storedB")));   /* may be "0 B" at a step boundary */
    assert_non_null(strstr(dstr(dom, "liveA"), "iB")); /* the weights alone are MiB */
    assert_string_equal(dstr(dom, "ratioA"), "1.00×");
    double rb = atof(dstr(dom, "ratioB"));
    assert_true(rb > 1.8 && rb <= 4.0);
    assert_false(cJSON_IsTrue(cJSON_GetObjectItem(dom, "bad")));
    cJSON_Delete(dom);
}

/* ---- 2: the reference trainer (vit small) on Fashion-MNIST ---------------------- */

static void *trainer_main(void *arg)
{
    trainer *t = arg;
    while (!atomic_load(&t->stop) && !t->rc) {
        t->rc = as_nn_run_step(t->run, NULL);
        atomic_fetch_add(&t->steps, 1);
    }
    return NULL;
}

/* Every chart and table test_dashboard_of_trainer checks has its data. */
static bool dom_ready_vit(const cJSON *d)
{
    return dnum(d, "frames", NULL) >= 15 && dnum(d, "live", "points") >= 30 &&
           dnum(d, "live", "nonzero") >= 2 && dnum(d, "saved", "nonzero") >= 2 &&
           dnum(d, "kindsA", "nonzero") >= 3 && dnum(d, "tagsA", "nonzero") >= 3 &&
           dnum(d, "layersA", NULL) >= 5 && dnum(d, "polA", NULL) >= 2 &&
           dnum(d, "layersHistA", "nonzero") >= 3 && dnum(d, "polHistA", "nonzero") >= 2;
}

/* ... and after the click, the kinds chart plots step peaks, with data. */
static bool dom_clicked_vit(const cJSON *d)
{
    return dom_ready_vit(d) && !strcmp(dstr(d, "kindsMode"), "show now");
}

static void test_dashboard_of_trainer(void **state)
{
    (void)state;
    as_nn_preset p;
    assert_int_equal(as_nn_preset_get("vit", "small", &p), 0);
    p.steps = 100000;                       /* stopped by the test */
    char err[512] = "";
    as_store_config scfg = {.label = "vit", .sampler_hz = 10};
    assert_int_equal(as_store_create(&scfg, &fx.store, err, sizeof err), 0);
    as_nn_train_opts o = {.policy = "linear_input=bf16; default=keep", .seed = 1, .threads = 1,
                          .store = fx.store};
    int rc = as_nn_run_create(&p, &o, &fx.tr.run, err, sizeof err);
    if (rc)
        fail_msg("vit small run: %s (Fashion-MNIST comes from the Debian package "
                 "dataset-fashion-mnist, installed by scripts/setup.sh)", err);
    as_service_source src = {.store = fx.store};
    assert_int_equal(as_service_start(NULL, &src, 1, &fx.svc, err, sizeof err), 0);
    assert_int_equal(pthread_create(&fx.tr.thread, NULL, trainer_main, &fx.tr), 0);
    fx.tr_running = true;
    size_t png_len;
    /* and switch "Saved by kind" to step peaks (the view for fast steps) */
    cJSON *dom = browse(as_service_url(fx.svc), "dashboard-vit", dom_ready_vit, DOM_TIMEOUT_S,
                        "document.querySelector('.kinds-mode').click()", dom_clicked_vit,
                        &png_len);
    fx_stop_workload();
    if (fx.tr.rc)
        fprintf(stderr, "trainer: %s\n", as_nn_run_error(fx.tr.run));
    fprintf(stderr, "trainer: %ld steps while the page was open\n", atomic_load(&fx.tr.steps));
    assert_int_equal(fx.tr.rc, 0);
    assert_non_null(dom);
    assert_true(png_len > 10000);
    assert_string_equal(dstr(dom, "state"), "live");
    assert_true(dom_ready_vit(dom));
    assert_true(dnum(dom, "live", "nonzero") >= 2);
    assert_true(dnum(dom, "saved", "nonzero") >= 2);
    assert_true(dnum(dom, "tagsA", "nonzero") >= 3);     /* weights, gradients, saved, ... */
    assert_true(dnum(dom, "polA", NULL) >= 2);           /* bf16 and keep */
    assert_true(dnum(dom, "layersHistA", "nonzero") >= 3);
    assert_true(dnum(dom, "polHistA", "nonzero") >= 2);
    /* after the click the kinds chart plots step peaks, with data */
    assert_string_equal(dstr(dom, "kindsMode"), "show now");
    assert_true(dnum(dom, "kindsA", "nonzero") >= 3);
    assert_int_equal((int)dnum(dom, "compare", NULL), -1);   /* one store: no A/B card */
    assert_true(humanized(dstr(dom, "liveA")));
    double ra = atof(dstr(dom, "ratioA"));
    assert_true(ra > 1.0 && ra < 2.0);                   /* bf16 on linear inputs only */
    assert_false(cJSON_IsTrue(cJSON_GetObjectItem(dom, "bad")));
    cJSON_Delete(dom);
}

/* A browser that died makes a write to its pipe fail (EPIPE, reported as
 * a failed test) instead of killing this process with SIGPIPE. */
static int ignore_sigpipe(void **state)
{
    (void)state;
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

AS_TEST_MAIN(ignore_sigpipe, NULL,
             cmocka_unit_test_teardown(test_dashboard_ab, fx_teardown),
             cmocka_unit_test_teardown(test_dashboard_of_trainer, fx_teardown))

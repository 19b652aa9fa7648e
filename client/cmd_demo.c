/*
 * actstore demo — the first thing to run: two paired A/B comparisons with
 * the live dashboard on 127.0.0.1, about 5 minutes on 2 cores.
 *
 *   1. vit: keep everything vs `auto` within a tenth of keep's saved bytes;
 *   2. cnn with LeakyReLU: the same.
 *
 * `auto` (docs/policies.md) picks a policy per (layer, kind), softmax
 * approximation and conv inversion among them, so that every saved tensor
 * together fits the budget. Then prints the two verdict lines (whole model
 * first: all saved, arena peak, accuracy) and the report folder. Everything
 * is `actstore ab --ratio 10` underneath (client/ab.c); docs/ab-testing.md
 * explains the reports; its time budget is measured there ("The demo's
 * budget").
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "actstore/service.h"
#include "cli.h"
#include "client/ab.h"
#include "client/report.h"
#include "layers/data.h"
#include "util/clock.h"

/* Arm B: auto within a tenth of keep's saved bytes. */
#define AS_DEMO_AUTO_POLICY    "default=auto"
#define AS_DEMO_RATIO          10.0
#define AS_DEMO_KEEP           "default=keep"
#define AS_DEMO_ADDR           "127.0.0.1:8080"

static const as_cli_cmd demo_cmd = {
    "demo", AS_CLI_DEMO,
    "usage: actstore demo [options]\n"
    "\n"
    "Two paired A/B comparisons, live on the dashboard (printed URL):\n"
    "  vit:          keep  vs  " AS_DEMO_AUTO_POLICY " within keep's saved bytes / 10\n"
    "  cnn (leaky):  keep  vs  " AS_DEMO_AUTO_POLICY " within keep's saved bytes / 10\n"
    "about 5 minutes on 2 cores; then the two verdict lines and the reports\n"
    "(vit/ and cnn/ in the --out folder). The dashboard is on " AS_DEMO_ADDR "\n"
    "unless --serve says otherwise, or any free port on 127.0.0.1 when that one\n"
    "is taken.\n",
    "Ctrl-C finishes the current step, writes a partial report and exits 1.\n"
    "Exit status: 0 ok, 1 failure or interrupted, 2 usage.\n"};

/* The demo's two comparisons, their stores and the dashboard. */
typedef struct demo {
    const as_cli_opts *o;
    as_ab_config cfg[2];
    char         dirs[2][4096];
    as_store    *stores[4];         /* vit A, vit B, cnn A, cnn B */
    as_service  *svc;
    char         verdict[2][1400];
    bool         done[2], interrupted;
    char         err[1024];
} demo;

static const char *const titles[2] = {"vit", "cnn (leaky)"};
static const char *const labels[4] = {"vit A: keep", "vit B: auto, keep / 10",
                                      "cnn A: keep", "cnn B: auto, keep / 10"};

/* The two comparisons, checked in full before anything runs. Returns an
 * exit code, or AS_CLI_RUN. */
static int demo_plan(demo *d)
{
    static const char *const subdirs[2] = {"vit", "cnn"};
    const as_cli_opts *o = d->o;
    for (int k = 0; k < 2; k++) {
        d->cfg[k] = (as_ab_config){
            .cmd = "demo", .title = titles[k], .model = k == 0 ? "vit" : "cnn",
            .preset = o->preset,
            .spec = {AS_DEMO_KEEP, AS_DEMO_AUTO_POLICY}, .ratio = AS_DEMO_RATIO,
            .nseeds = (size_t)o->seeds, .seed0 = 1, .steps = (long)o->steps,
            .check_every = 50, .act = k == 0 ? -1 : AS_FN_LEAKY_RELU,
            .threads = (int)o->threads, .data_dir = o->data_dir, .quiet = o->quiet,
            .stop = as_ab_stop_flag()};
        as_nn_preset p;
        if (as_ab_validate(&d->cfg[k], &p, d->err, sizeof d->err))
            return as_cli_usage("demo", "%s", d->err);
        if ((size_t)snprintf(d->dirs[k], sizeof d->dirs[k], "%s/%s", o->out, subdirs[k]) >=
            sizeof d->dirs[k])
            return as_cli_usage("demo", "--out: path too long");
        if (as_report_prepare_dir(d->dirs[k], d->err, sizeof d->err))
            return as_cli_fail("demo", "%s", d->err);
    }
    return AS_CLI_RUN;
}

/* Four stores (two per comparison), all on the dashboard: the default
 * address, or any free port when it is taken. Returns 0 or an exit code. */
static int demo_open(demo *d)
{
    for (int i = 0; i < 4; i++) {
        as_store_config sc = {.policy = d->cfg[i / 2].spec[i % 2], .label = labels[i],
                              .sampler_hz = 10};
        if (as_store_create(&sc, &d->stores[i], d->err, sizeof d->err))
            return as_cli_fail("demo", "creating the store '%s': %s", labels[i], d->err);
        d->cfg[i / 2].store[i % 2] = d->stores[i];
    }
    as_service_source src[4];
    for (int i = 0; i < 4; i++)
        src[i] = (as_service_source){.label = labels[i], .store = d->stores[i]};
    as_service_config svcfg = {.addr = d->o->serve ? d->o->serve : AS_DEMO_ADDR,
                               .job = d->o->job, .rank = d->o->rank, .host = d->o->host};
    int rc = as_service_start(&svcfg, src, 4, &d->svc, d->err, sizeof d->err);
    if (rc && !d->o->serve) {
        svcfg.addr = "127.0.0.1:0";
        rc = as_service_start(&svcfg, src, 4, &d->svc, d->err, sizeof d->err);
    }
    if (rc)
        return as_cli_fail("demo", "dashboard on %s: %s", svcfg.addr, d->err);
    fprintf(stderr, "actstore demo: dashboard at %s  (open it in a browser; both arms of "
                    "each comparison side by side)\n", as_service_url(d->svc));
    fprintf(stderr, "actstore demo: %s preset, %llu seeds x %llu steps per arm; reports in "
                    "%s/\n", d->o->preset, d->o->seeds, d->o->steps, d->o->out);
    return 0;
}

/* Run comparison k and write its report; returns an exit code, and false
 * in *go_on after an error or an interruption. */
static int demo_compare(demo *d, int k, bool *go_on)
{
    int code = AS_EXIT_OK;
    as_report rep;
    int rc = as_ab_run(&d->cfg[k], &rep, d->err, sizeof d->err);
    d->interrupted = *d->cfg[k].stop != 0 || rc == AS_ESTATE;
    if (rc && rc != AS_ESTATE)
        code = as_cli_fail("demo", "%s: %s", titles[k], d->err);
    if (rep.nseeds) {
        char e2[1024], v[1024];
        if (as_report_write(&rep, d->dirs[k], e2, sizeof e2))
            code = as_cli_fail("demo", "writing the report: %s", e2);
        as_report_verdict(&rep, v, sizeof v);
        snprintf(d->verdict[k], sizeof d->verdict[k], "%s (keep vs auto at keep / %g): %s",
                 titles[k], AS_DEMO_RATIO, v);
        d->done[k] = true;
        if (!d->o->quiet)
            fprintf(stderr, "actstore demo: %s\n", d->verdict[k]);
    }
    as_report_free(&rep);
    *go_on = !d->interrupted && !(rc && rc != AS_ESTATE);
    return code;
}

static void demo_summary(const demo *d, int code, double dt)
{
    printf("\nactstore demo: %s in %.0f min %02.0f s\n",
           d->interrupted ? "interrupted" : code ? "stopped by an error" : "done",
           (double)(long)(dt / 60), dt - 60.0 * (double)(long)(dt / 60));
    for (int k = 0; k < 2; k++)
        if (d->done[k])
            printf("  %s\n", d->verdict[k]);
    printf("reports: %s/ (vit/report.md, cnn/report.md; plots beside them)\n", d->o->out);
    fflush(stdout);
}

int as_cmd_demo(int argc, char **argv)
{
    as_cli_opts o = {.out = "actstore-demo", .preset = "bench", .steps = 400, .seeds = 3};
    int code = as_cli_parse_opts(&demo_cmd, argc, argv, &o);
    if (code != AS_CLI_RUN)
        return code;
    demo d = {.o = &o};
    code = demo_plan(&d);
    if (code != AS_CLI_RUN)
        return code;
    code = demo_open(&d);
    if (!code) {
        double t0 = as_clock_wall_s();
        bool go_on = true;
        as_ab_signals_catch();
        for (int k = 0; k < 2 && go_on; k++)
            code |= demo_compare(&d, k, &go_on);
        as_ab_signals_restore();
        demo_summary(&d, code, as_clock_wall_s() - t0);
        /* At a terminal, keep the dashboard up until Enter so the final
         * state can be looked at; scripts and pipes never wait. */
        if (!d.interrupted && !code && !o.quiet && !o.no_wait && isatty(0) && isatty(2)) {
            fprintf(stderr, "actstore demo: the dashboard stays at %s until you "
                            "press Enter\n", as_service_url(d.svc));
            int ch;
            while ((ch = getchar()) != EOF && ch != '\n')
                ;
        }
        if (d.interrupted)
            code = AS_EXIT_FAIL;
    }
    as_service_stop(d.svc);
    for (int i = 0; i < 4; i++)
        as_store_destroy(d.stores[i]);
    return code;
}

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
 * explains the reports and has the measured total time.
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

int as_cmd_demo(int argc, char **argv)
{
    as_cli_opts o = {.out = "actstore-demo", .preset = "bench", .steps = 400, .seeds = 3};
    int r = as_cli_parse_opts(&demo_cmd, argc, argv, &o);
    if (r != AS_CLI_RUN)
        return r;
    const char *out = o.out, *serve = o.serve, *preset = o.preset;
    unsigned long long steps = o.steps, seeds = o.seeds;
    bool quiet = o.quiet;

    /* The two comparisons, checked in full before anything runs. */
    static const char *const titles[2] = {"vit", "cnn (leaky)"};
    static const char *const subdirs[2] = {"vit", "cnn"};
    as_ab_config cfg[2];
    char dirs[2][4096];
    char err[1024] = "";
    for (int d = 0; d < 2; d++) {
        cfg[d] = (as_ab_config){.cmd = "demo", .title = titles[d],
                                .model = d == 0 ? "vit" : "cnn", .preset = preset,
                                .spec = {AS_DEMO_KEEP, AS_DEMO_AUTO_POLICY},
                                .ratio = AS_DEMO_RATIO,
                                .nseeds = (size_t)seeds, .seed0 = 1, .steps = (long)steps,
                                .check_every = 50, .act = d == 0 ? -1 : AS_FN_LEAKY_RELU,
                                .threads = (int)o.threads, .data_dir = o.data_dir, .quiet = quiet,
                                .stop = as_ab_stop_flag()};
        as_nn_preset p;
        if (as_ab_validate(&cfg[d], &p, err, sizeof err))
            return as_cli_usage("demo", "%s", err);
        if ((size_t)snprintf(dirs[d], sizeof dirs[d], "%s/%s", out, subdirs[d]) >=
            sizeof dirs[d])
            return as_cli_usage("demo", "--out: path too long");
        if (as_report_prepare_dir(dirs[d], err, sizeof err))
            return as_cli_fail("demo", "%s", err);
    }

    /* Four stores (two per comparison), all on the dashboard. */
    as_store *stores[4] = {NULL, NULL, NULL, NULL};
    static const char *const labels[4] = {"vit A: keep", "vit B: auto, keep / 10",
                                          "cnn A: keep", "cnn B: auto, keep / 10"};
    int code = AS_EXIT_OK;
    for (int i = 0; i < 4; i++) {
        as_store_config sc = {.policy = cfg[i / 2].spec[i % 2], .label = labels[i],
                              .sampler_hz = 10};
        if (as_store_create(&sc, &stores[i], err, sizeof err)) {
            as_cli_fail("demo", "creating the store '%s': %s", labels[i], err);
            code = AS_EXIT_FAIL;
            goto out;
        }
        cfg[i / 2].store[i % 2] = stores[i];
    }
    as_service_source src[4];
    for (int i = 0; i < 4; i++)
        src[i] = (as_service_source){.label = labels[i], .store = stores[i]};
    as_service *svc = NULL;
    as_service_config svcfg = {.addr = serve ? serve : AS_DEMO_ADDR};
    int rc = as_service_start(&svcfg, src, 4, &svc, err, sizeof err);
    if (rc && !serve) { /* the default port is taken: any free one */
        svcfg.addr = "127.0.0.1:0";
        rc = as_service_start(&svcfg, src, 4, &svc, err, sizeof err);
    }
    if (rc) {
        as_cli_fail("demo", "dashboard on %s: %s", svcfg.addr, err);
        code = AS_EXIT_FAIL;
        goto out;
    }
    fprintf(stderr, "actstore demo: dashboard at %s  (open it in a browser; both arms of "
                    "each comparison side by side)\n", as_service_url(svc));
    fprintf(stderr, "actstore demo: %s preset, %llu seeds x %llu steps per arm; reports in "
                    "%s/\n", preset, seeds, steps, out);

    double t0 = as_clock_wall_s();
    char verdict[2][1400];
    bool done[2] = {false, false};
    bool interrupted = false;
    as_ab_signals_catch();
    for (int d = 0; d < 2 && !interrupted; d++) {
        as_report rep;
        rc = as_ab_run(&cfg[d], &rep, err, sizeof err);
        interrupted = *cfg[d].stop != 0 || rc == AS_ESTATE;
        if (rc && rc != AS_ESTATE) {
            as_cli_fail("demo", "%s: %s", titles[d], err);
            code = AS_EXIT_FAIL;
        }
        if (rep.nseeds) {
            char e2[1024];
            if (as_report_write(&rep, dirs[d], e2, sizeof e2)) {
                as_cli_fail("demo", "writing the report: %s", e2);
                code = AS_EXIT_FAIL;
            }
            char v[1024];
            as_report_verdict(&rep, v, sizeof v);
            snprintf(verdict[d], sizeof verdict[d], "%s (keep vs auto at keep / %g): %s",
                     titles[d], AS_DEMO_RATIO, v);
            done[d] = true;
            if (!quiet)
                fprintf(stderr, "actstore demo: %s\n", verdict[d]);
        }
        as_report_free(&rep);
        if (rc && rc != AS_ESTATE)
            break;
    }
    as_ab_signals_restore();
    double dt = as_clock_wall_s() - t0;
    printf("\nactstore demo: %s in %.0f min %02.0f s\n",
           interrupted ? "interrupted" : code ? "stopped by an error" : "done",
           (double)(long)(dt / 60), dt - 60.0 * (double)(long)(dt / 60));
    for (int d = 0; d < 2; d++)
        if (done[d])
            printf("  %s\n", verdict[d]);
    printf("reports: %s/ (vit/report.md, cnn/report.md; plots beside them)\n", out);
    fflush(stdout);
    /* At a terminal, keep the dashboard up until Enter so the final state
     * can be looked at; scripts and pipes never wait. */
    if (!interrupted && !code && !quiet && !o.no_wait && isatty(0) && isatty(2)) {
        fprintf(stderr, "actstore demo: the dashboard stays at %s until you "
                        "press Enter\n", as_service_url(svc));
        int ch;
        while ((ch = getchar()) != EOF && ch != '\n')
            ;
    }
    as_service_stop(svc);
    if (interrupted)
        code = AS_EXIT_FAIL;
out:
    for (int i = 0; i < 4; i++)
        as_store_destroy(stores[i]);
    return code;
}

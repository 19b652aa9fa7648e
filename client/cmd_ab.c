/*
 * actstore ab — paired A/B comparison of two policy specs on one model.
 *
 *   actstore ab --model M --a SPEC --b SPEC [--seeds K] [--steps N |
 *               --epochs E] [--preset P] [--out DIR] [--serve ADDR] ...
 *
 * Everything that can be wrong with the command line (model, preset, both
 * specs, ranges, the output folder) is checked before any training starts.
 * The engine is client/ab.c, the report client/report.c; see
 * docs/ab-testing.md for how to read the result.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "actstore/service.h"
#include "cli.h"
#include "client/ab.h"
#include "client/client.h"
#include "client/report.h"
#include "layers/data.h"

static const char *const usage_text =
    "usage: actstore ab --model M --a SPEC --b SPEC [options]\n"
    "\n"
    "Paired A/B comparison of two store policy specs: for each seed, arm A and\n"
    "arm B start from the same weights and see the same batches in the same\n"
    "order; only the policy differs. Each arm has its own store, so its memory\n"
    "is measured alone. Writes report.json, report.md and SVG plots to DIR.\n"
    "\n"
    "options:\n"
    "  --model M          cnn or vit (Fashion-MNIST), lm (fortunes text)\n"
    "  --a SPEC           policy of arm A, e.g. \"default=keep\"\n"
    "  --b SPEC           policy of arm B, e.g. \"softmax=soa:5; default=keep\"\n"
    "  --seeds K          seeds (pairs of runs), default 3\n"
    "  --seed S           first seed, default 1 (seeds S .. S+K-1)\n"
    "  --preset P         small (seconds, default) or bench (reported figures)\n"
    "  --steps N          steps per run (overrides the preset's length)\n"
    "  --epochs E         epochs per run instead (may be fractional)\n"
    "  --budget BYTES     saved-bytes budget (K/M/G suffixes) of the arms whose\n"
    "                     spec uses auto (docs/policies.md)\n"
    "  --ratio X          or: budget = keep's saved bytes of a step / X\n"
    "  --check-every N    compare gradients with the exact ones every N steps\n"
    "                     (default 50; 0 = off)\n"
    "  --act relu|leaky   cnn activation (leaky lets conv inversion chain)\n"
    "  --out DIR          report folder (default ab-report; created)\n"
    "  --json FILE        also write report.json to FILE (\"-\" = stdout)\n"
    "  --threads T        OpenBLAS threads (default: OpenBLAS's choice)\n"
    "  --data-dir DIR     Fashion-MNIST directory (default " AS_NN_FMNIST_DIR ")\n"
    "  --text-dir DIR     fortunes directory (default " AS_NN_FORTUNES_DIR ")\n"
    "  --serve ADDR       serve the dashboard (both arms side by side) on ADDR\n"
    "  --serve-remote     allow --serve on a non-loopback address\n"
    "  --quiet            no progress output\n"
    "\n"
    "Ctrl-C finishes the current step, writes a partial report (marked as such)\n"
    "and exits 1. Exit status: 0 ok, 1 failure or interrupted, 2 usage.\n";

/* Write the report and print where it is; returns 0 or -1. */
static int write_report(const char *cmd, const as_report *rep, const char *out,
                        const char *json)
{
    char err[1024];
    if (as_report_write(rep, out, err, sizeof err)) {
        as_cli_fail(cmd, "writing the report: %s", err);
        return -1;
    }
    if (json) {
        cJSON *j = as_report_json(rep);
        int rc = j ? as_cli_write_json(cmd, json, j) : -1;
        cJSON_Delete(j);
        if (rc)
            return -1;
    }
    return 0;
}

int as_cmd_ab(int argc, char **argv)
{
    const char *model = NULL, *spec_a = NULL, *spec_b = NULL, *preset = "small";
    const char *out = "ab-report", *json = NULL, *serve = NULL, *act = NULL;
    const char *data_dir = NULL, *text_dir = NULL;
    bool serve_remote = false, quiet = false;
    unsigned long long seeds = 3, seed = 1, steps = 0, check = 50, threads = 0;
    double epochs = 0, ratio = 0;
    unsigned long long budget = 0;
    const as_cli_flag flags[] = {{"--serve-remote", &serve_remote}, {"--quiet", &quiet},
                                 {NULL, NULL}};
    for (int i = 1; i < argc; i++) {
        const char *a, *v;
        int r = as_cli_next_opt("ab", usage_text, argc, argv, &i, flags, &a, &v);
        if (r == AS_CLI_FLAG)
            continue;
        if (r != AS_CLI_VALUE)
            return r;
        int bad = 0;
        if (!strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "--a")) spec_a = v;
        else if (!strcmp(a, "--b")) spec_b = v;
        else if (!strcmp(a, "--preset")) preset = v;
        else if (!strcmp(a, "--out")) out = v;
        else if (!strcmp(a, "--json")) json = v;
        else if (!strcmp(a, "--serve")) serve = v;
        else if (!strcmp(a, "--act")) act = v;
        else if (!strcmp(a, "--data-dir")) data_dir = v;
        else if (!strcmp(a, "--text-dir")) text_dir = v;
        else if (!strcmp(a, "--seeds")) bad = as_cli_parse_u64("ab", a, v, &seeds);
        else if (!strcmp(a, "--seed")) bad = as_cli_parse_u64("ab", a, v, &seed);
        else if (!strcmp(a, "--steps")) {
            bad = as_cli_parse_u64("ab", a, v, &steps);
            if (!bad && steps == 0)
                return as_cli_usage("ab", "--steps must be >= 1");
        }
        else if (!strcmp(a, "--epochs")) {
            bad = as_cli_parse_double("ab", a, v, &epochs);
            if (!bad && !(epochs > 0 && epochs <= 1000))
                return as_cli_usage("ab", "--epochs %g out of range (0, 1000]", epochs);
        }
        else if (!strcmp(a, "--check-every")) bad = as_cli_parse_u64("ab", a, v, &check);
        else if (!strcmp(a, "--threads")) bad = as_cli_parse_u64("ab", a, v, &threads);
        else if (!strcmp(a, "--budget")) bad = as_cli_parse_bytes("ab", a, v, &budget);
        else if (!strcmp(a, "--ratio")) bad = as_cli_parse_double("ab", a, v, &ratio);
        else return as_cli_usage("ab", "unknown option '%s'", a);
        if (bad)
            return AS_EXIT_USAGE;
    }
    if (!model)
        return as_cli_usage("ab", "--model is required (cnn, vit or lm)");
    if (!spec_a || !spec_b)
        return as_cli_usage("ab", "--a SPEC and --b SPEC are both required "
                                  "(e.g. --a default=keep --b \"softmax=soa:5\")");
    if (seeds < 1 || seeds > 64)
        return as_cli_usage("ab", "--seeds %llu out of range 1..64", seeds);
    if (steps > 100000000ull)
        return as_cli_usage("ab", "--steps %llu out of range 1..100000000", steps);
    if (check > 100000000ull)
        return as_cli_usage("ab", "--check-every %llu out of range", check);
    if (threads > 256)
        return as_cli_usage("ab", "--threads %llu out of range 0..256", threads);
    int act_fn = -1;
    if (act) {
        if (!strcmp(act, "relu"))
            act_fn = AS_FN_RELU;
        else if (!strcmp(act, "leaky"))
            act_fn = AS_FN_LEAKY_RELU;
        else
            return as_cli_usage("ab", "--act '%s': relu or leaky", act);
    }
    as_ab_config c = {.cmd = "ab", .model = model, .preset = preset,
                      .spec = {spec_a, spec_b}, .nseeds = (size_t)seeds,
                      .seed0 = seed, .steps = (long)steps, .epochs = epochs,
                      .check_every = (long)check, .act = act_fn, .threads = (int)threads,
                      .data_dir = data_dir, .text_dir = text_dir, .quiet = quiet,
                      .budget = budget, .ratio = ratio, .stop = as_ab_stop_flag()};
    char err[1024] = "";
    as_nn_preset p;
    if (as_ab_validate(&c, &p, err, sizeof err))
        return as_cli_usage("ab", "%s", err);
    if (as_report_prepare_dir(out, err, sizeof err))
        return as_cli_fail("ab", "%s", err);

    /* The command owns the stores so that a service can watch both arms. */
    as_store *stores[2] = {NULL, NULL};
    for (int a = 0; a < 2; a++) {
        char label[2] = {(char)('A' + a), 0};
        as_store_config cfg = {.policy = c.spec[a], .label = label,
                               .sampler_hz = serve ? 10 : 0};
        if (as_store_create(&cfg, &stores[a], err, sizeof err)) {
            as_store_destroy(stores[0]);
            return as_cli_fail("ab", "creating the store of arm %c: %s", 'A' + a, err);
        }
        c.store[a] = stores[a];
    }
    as_service *svc = NULL;
    char la[96], lb[96];
    snprintf(la, sizeof la, "A: %.80s", spec_a);
    snprintf(lb, sizeof lb, "B: %.80s", spec_b);
    const char *labels[2] = {la, lb};
    if (serve && as_client_serve("ab", serve, serve_remote, stores, labels, 2, &svc)) {
        as_store_destroy(stores[0]);
        as_store_destroy(stores[1]);
        return AS_EXIT_FAIL;
    }

    as_report rep;
    as_ab_signals_catch();
    int rc = as_ab_run(&c, &rep, err, sizeof err);
    bool interrupted = *c.stop != 0;
    as_ab_signals_restore();
    as_service_stop(svc);
    as_store_destroy(stores[0]);
    as_store_destroy(stores[1]);

    int code = AS_EXIT_OK;
    if (rc && rc != AS_ESTATE) {
        as_cli_fail("ab", "%s", err);
        code = AS_EXIT_FAIL;
    }
    if (rep.nseeds) {
        if (write_report("ab", &rep, out, json))
            code = AS_EXIT_FAIL;
        char v[1024];
        as_report_verdict(&rep, v, sizeof v);
        if (!quiet || rep.partial)
            fprintf(stderr, "actstore ab: %sreport in %s/\n", rep.partial ? "partial " : "",
                    out);
        /* stdout carries the JSON with --json -: the verdict goes to stderr */
        fprintf(json && !strcmp(json, "-") ? stderr : stdout, "%s: %s\n", model, v);
    }
    if (interrupted || rc == AS_ESTATE) {
        fprintf(stderr, "actstore ab: interrupted (%s)\n",
                rep.partial_reason[0] ? rep.partial_reason : "after the last step");
        code = AS_EXIT_FAIL;
    }
    as_report_free(&rep);
    return code;
}

/*
 * actstore ab — paired A/B comparison of two policy specs on one model.
 *
 *   actstore ab --model M --a SPEC --b SPEC [--seeds K] [--steps N |
 *               --epochs E] [--preset P] [--out DIR] [--serve ADDR]
 *               [--shard I/N] ...
 *   actstore ab merge DIR... [--out DIR] [--json FILE]
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

static const as_cli_cmd ab_cmd = {
    "ab", AS_CLI_AB,
    "usage: actstore ab --model M --a SPEC --b SPEC [options]\n"
    "\n"
    "Paired A/B comparison of two store policy specs: for each seed, arm A and\n"
    "arm B start from the same weights and see the same batches in the same\n"
    "order; only the policy differs. Each arm has its own store, so its memory\n"
    "is measured alone. Writes report.json, report.md and SVG plots to DIR.\n"
    "Across machines: run each shard with --shard I/N, then combine the report\n"
    "folders with 'actstore ab merge DIR... [--out DIR]' (see its --help).\n",
    "Ctrl-C finishes the current step, writes a partial report (marked as such)\n"
    "and exits 1. Exit status: 0 ok, 1 failure or interrupted, 2 usage.\n"};

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

/* "I/N" with 1 <= I <= N <= 64. */
static int parse_shard(const char *s, unsigned *i, unsigned *n)
{
    char *end;
    unsigned long a = strtoul(s, &end, 10), b;
    if (end == s || *end != '/')
        return -1;
    const char *t = end + 1;
    b = strtoul(t, &end, 10);
    if (end == t || *end || a < 1 || b < 1 || a > b || b > 64)
        return -1;
    *i = (unsigned)a;
    *n = (unsigned)b;
    return 0;
}

/* actstore ab merge DIR... [--out DIR] [--json FILE] */
static int cmd_merge(int argc, char **argv)
{
    const char *out = "ab-report", *json = NULL, *dirs[64];
    size_t nd = 0;
    for (int i = 2; i < argc; i++) {
        const char *v;
        if (as_cli_is_help(argv[i])) {
            printf("usage: actstore ab merge DIR... [--out DIR] [--json FILE]\n\n"
                   "Combine the reports of the shards of one comparison (each DIR holds\n"
                   "the report.json of one 'actstore ab --shard I/N' run, same options)\n"
                   "into one report with the statistics of a single run of every seed.\n"
                   "Writes report.json, report.md and SVG plots to --out (default\n"
                   "ab-report). Exit status: 0 ok, 1 failure, 2 usage.\n");
            return AS_EXIT_OK;
        } else if ((v = as_cli_flag_value(argc, argv, &i, "--out"))) {
            out = v;
        } else if ((v = as_cli_flag_value(argc, argv, &i, "--json"))) {
            json = v;
        } else if (argv[i][0] == '-' || nd == 64) {
            return as_cli_usage("ab", "merge: unexpected argument '%s'", argv[i]);
        } else {
            dirs[nd++] = argv[i];
        }
    }
    if (!nd)
        return as_cli_usage("ab", "merge: give the report folders of the shards");
    as_report parts[64], merged;
    char err[1024];
    size_t np = 0;
    int code = AS_EXIT_OK;
    for (; np < nd; np++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/report.json", dirs[np]);
        if (as_report_read(path, &parts[np], err, sizeof err)) {
            code = as_cli_fail("ab", "merge: %s", err);
            break;
        }
    }
    if (code == AS_EXIT_OK && as_report_merge(parts, np, &merged, err, sizeof err))
        code = as_cli_fail("ab", "merge: %s", err);
    for (size_t i = 0; i < np; i++)
        as_report_free(&parts[i]);
    if (code != AS_EXIT_OK)
        return code;
    if (as_report_prepare_dir(out, err, sizeof err))
        code = as_cli_fail("ab", "merge: %s", err);
    else if (write_report("ab", &merged, out, json))
        code = AS_EXIT_FAIL;
    if (code == AS_EXIT_OK) {
        char v[512];
        as_report_verdict(&merged, v, sizeof v);
        fprintf(stderr, "actstore ab: merged %zu shards (%zu seeds) into %s/\n", np,
                merged.nseeds, out);
        fprintf(json && !strcmp(json, "-") ? stderr : stdout, "%s: %s\n", merged.model, v);
    }
    as_report_free(&merged);
    return code;
}

int as_cmd_ab(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "merge"))
        return cmd_merge(argc, argv);
    as_cli_opts o = {.preset = "small", .out = "ab-report", .seeds = 3, .seed = 1,
                     .check_every = 50};
    int r = as_cli_parse_opts(&ab_cmd, argc, argv, &o);
    if (r != AS_CLI_RUN)
        return r;
    const char *model = o.model, *spec_a = o.spec_a, *spec_b = o.spec_b, *act = o.act;
    const char *out = o.out, *json = o.json;
    if (!model)
        return as_cli_usage("ab", "--model is required (cnn, vit or lm)");
    if (!spec_a || !spec_b)
        return as_cli_usage("ab", "--a SPEC and --b SPEC are both required "
                                  "(e.g. --a default=keep --b \"softmax=soa:5\")");
    int act_fn = -1;
    if (act) {
        if (!strcmp(act, "relu"))
            act_fn = AS_FN_RELU;
        else if (!strcmp(act, "leaky"))
            act_fn = AS_FN_LEAKY_RELU;
        else
            return as_cli_usage("ab", "--act '%s': relu or leaky", act);
    }
    unsigned shard = 0, nshards = 0;
    if (o.shard && parse_shard(o.shard, &shard, &nshards))
        return as_cli_usage("ab", "--shard '%s': I/N with 1 <= I <= N <= 64 (e.g. 2/3)",
                            o.shard);
    as_ab_config c = {.cmd = "ab", .model = model, .preset = o.preset,
                      .spec = {spec_a, spec_b}, .nseeds = (size_t)o.seeds,
                      .seed0 = o.seed, .steps = (long)o.steps, .epochs = o.epochs,
                      .check_every = (long)o.check_every, .act = act_fn,
                      .threads = (int)o.threads, .data_dir = o.data_dir,
                      .text_dir = o.text_dir, .quiet = o.quiet,
                      .budget = o.budget, .ratio = o.ratio,
                      .stop = as_ab_stop_flag(), .shard = shard, .nshards = nshards};
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
                               .sampler_hz = o.serve ? 10 : 0};
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
    if (o.serve && as_client_serve("ab", o.serve, o.serve_remote, stores, labels, 2,
                                  (const char *const[3]){o.job, o.rank, o.host}, &svc)) {
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
        if (!o.quiet || rep.partial)
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

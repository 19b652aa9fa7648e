/*
 * actstore train — train a reference model (layers/) with every saved
 * tensor going through the activation store under a policy, and report
 * loss, evaluation, memory and time.
 *
 *   actstore train --model cnn|vit|lm --policy SPEC [--preset small|bench]
 *                  [--steps N | --epochs E] [--batch B] [--lr X] [--seed S]
 *                  [--threads T] [--act relu|leaky] [--convs N] [--json FILE]
 *                  [--budget BYTES | --ratio X] [--serve ADDR]
 *
 * The command creates the store itself (so a service can watch it: --serve)
 * and hands it to the run (as_nn_train_opts.store).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "actstore/service.h"
#include "ab.h"
#include "cli.h"
#include "client/client.h"
#include "layers/data.h"
#include "layers/train.h"
#include "util/clock.h"

static const as_cli_cmd train_cmd = {
    "train", AS_CLI_TRAIN,
    "usage: actstore train --model cnn|vit|lm --policy SPEC [options]\n"
    "\n"
    "Train a reference model; every tensor saved for backward goes through\n"
    "the activation store under the policy SPEC (e.g. \"default=keep\",\n"
    "\"softmax=soa:5; default=keep\", \"conv_input=invert|keep; default=keep\").\n",
    "Same model, preset, policy, seed and threads give the same loss sequence\n"
    "bit for bit. SIGINT / SIGTERM end the run after the current step, without\n"
    "the final evaluation, and write the partial results (\"partial\" in the\n"
    "JSON; a second signal kills). Exit status: 0 ok, 1 failure or\n"
    "interrupted, 2 usage.\n"};

typedef struct prog {
    bool   tty, quiet;
    double last_t;
    long   last_step;
    long   every;
    as_store *store;   /* the run's: per-step figures for --serve */
} prog;

/* Progress goes to stderr (stdout may carry --json -): a bar when stderr
 * is a terminal, plain lines otherwise. */
static bool isatty_stderr(void)
{
    const char *t = getenv("TERM");
    return isatty(2) && !(t && !strcmp(t, "dumb"));
}

static void on_progress(void *ud, const as_nn_progress *p)
{
    prog *g = ud;
    if (!p->eval && g->store) {   /* actstore_training_metric{name=...} */
        as_store_report_metric(g->store, "train_loss", p->loss);
        as_store_report_metric(g->store, "samples_per_s", p->samples_per_s);
    }
    if (g->quiet)
        return;
    char live[32], st[32];
    if (p->eval) {
        if (g->tty)
            fprintf(stderr, "\r\033[Kevaluating...");
        else
            fprintf(stderr, "evaluating\n");
        fflush(stderr);
        return;
    }
    as_cli_human_bytes((double)p->arena_peak, live, sizeof live);
    as_cli_human_bytes((double)p->saved_stored, st, sizeof st);
    if (g->tty) {
        double t = as_clock_wall_s();
        if (p->step != p->steps && t - g->last_t < 0.1)
            return;
        g->last_t = t;
        const int W = 24;
        int fill = p->steps ? (int)((double)W * p->step / p->steps) : 0;
        char bar[32];
        for (int i = 0; i < W; i++)
            bar[i] = i < fill ? '#' : '.';
        bar[W] = 0;
        fprintf(stderr, "\r\033[K[%s] step %ld/%ld  loss %.4f  %.0f samples/s  "
                "memory %s  saved %s", bar, p->step, p->steps, p->loss,
                p->samples_per_s, live, st);
        if (p->step == p->steps)
            fputc('\n', stderr);
        fflush(stderr);
        return;
    }
    if (p->step % g->every == 0 || p->step == p->steps || p->step == 1)
        fprintf(stderr, "step %ld/%ld loss %.4f samples/s %.0f memory %s saved %s\n",
                p->step, p->steps, p->loss, p->samples_per_s, live, st);
}

static cJSON *result_json(const as_nn_preset *p, const char *policy,
                          unsigned long long seed, int threads,
                          const as_nn_train_result *r)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "model", p->model);
    cJSON_AddStringToObject(j, "preset", p->name);
    cJSON_AddStringToObject(j, "policy", policy);
    cJSON_AddNumberToObject(j, "seed", (double)seed);
    cJSON_AddNumberToObject(j, "threads", threads);
    cJSON_AddNumberToObject(j, "batch", p->batch);
    cJSON_AddNumberToObject(j, "lr", p->lr);
    const as_nn_model_info *mi = as_nn_model_find(p->model);
    cJSON *cfg = cJSON_AddObjectToObject(j, "config");   /* the model as run */
    if (mi->cfg == AS_NN_CFG_cnn) {
        cJSON_AddStringToObject(cfg, "act", p->cnn.act_fn == AS_FN_LEAKY_RELU ? "leaky" : "relu");
        cJSON_AddNumberToObject(cfg, "convs_per_stage", p->cnn.convs);
        cJSON *w = cJSON_AddArrayToObject(cfg, "widths");
        for (int s = 0; s < p->cnn.nstages; s++)
            cJSON_AddItemToArray(w, cJSON_CreateNumber(p->cnn.widths[s]));
        cJSON_AddBoolToObject(cfg, "batchnorm", p->cnn.batchnorm);
        as_op_layout lay;   /* configured; a step whose rules need NCHW runs NCHW */
        as_nn_cnn_layout(&p->cnn, &lay);
        cJSON_AddStringToObject(cfg, "layout", lay == AS_OP_BLK16 ? "blocked" : "nchw");
    } else {
        cJSON_AddNumberToObject(cfg, "width", p->tf.C);
        cJSON_AddNumberToObject(cfg, "heads", p->tf.NH);
        cJSON_AddNumberToObject(cfg, "depth", p->tf.depth);
        cJSON_AddNumberToObject(cfg, "mlp", p->tf.mlp);
        if (mi->data == AS_NN_DATA_TEXT)
            cJSON_AddNumberToObject(cfg, "context", p->tf.T);
    }
    cJSON_AddNumberToObject(j, "steps", (double)r->steps);
    if (r->interrupted) {
        cJSON *pa = cJSON_AddObjectToObject(j, "partial");
        cJSON_AddStringToObject(pa, "reason", "interrupted (SIGINT or SIGTERM)");
        cJSON_AddNumberToObject(pa, "planned_steps", (double)r->planned_steps);
    }
    cJSON_AddNumberToObject(j, "params", (double)r->params);
    cJSON_AddStringToObject(j, "blas_core", r->blas_core);
    cJSON *lc = cJSON_AddArrayToObject(j, "loss_curve");
    for (long s = 0; s < r->steps; s++) {
        cJSON *pt = cJSON_CreateArray();
        cJSON_AddItemToArray(pt, cJSON_CreateNumber((double)(s + 1)));
        cJSON_AddItemToArray(pt, cJSON_CreateNumber(r->loss[s]));
        cJSON_AddItemToArray(lc, pt);
    }
    cJSON_AddNumberToObject(j, "final_train_loss", r->final_train_loss);
    /* no "eval" when interrupted (cJSON_Add* on NULL adds nothing) */
    cJSON *ev = r->interrupted ? NULL : cJSON_AddObjectToObject(j, "eval");
    if (r->eval_accuracy >= 0)
        cJSON_AddNumberToObject(ev, "accuracy", r->eval_accuracy);
    cJSON_AddNumberToObject(ev, "loss", r->eval_loss);
    cJSON_AddNumberToObject(ev, "samples", (double)r->eval_samples);
    cJSON_AddStringToObject(ev, "on", mi->data == AS_NN_DATA_TEXT ? "held-out text"
                                                                 : "test set");
    if (r->neval) {
        cJSON *ec = cJSON_AddArrayToObject(j, "eval_curve");
        for (long i = 0; i < r->neval; i++) {
            const double *e = r->eval_curve + 3 * i;
            cJSON *pt = cJSON_CreateArray();
            cJSON_AddItemToArray(pt, cJSON_CreateNumber(e[0]));
            cJSON_AddItemToArray(pt, cJSON_CreateNumber(e[e[1] >= 0 ? 1 : 2]));
            cJSON_AddItemToArray(ec, pt);
        }
    }
    cJSON *m = cJSON_AddObjectToObject(j, "memory");
    cJSON_AddNumberToObject(m, "saved_stored_peak_bytes", (double)r->saved_stored_peak);
    cJSON_AddNumberToObject(m, "saved_raw_peak_bytes", (double)r->saved_raw_peak);
    cJSON *bk = cJSON_AddObjectToObject(m, "by_kind");
    for (int k = 0; k < AS_KIND_COUNT; k++) {
        if (!r->by_kind[k].raw_peak && !r->by_kind[k].stored_peak)
            continue;
        cJSON *o = cJSON_AddObjectToObject(bk, as_kind_name(k));
        cJSON_AddNumberToObject(o, "stored_peak_bytes", (double)r->by_kind[k].stored_peak);
        cJSON_AddNumberToObject(o, "raw_peak_bytes", (double)r->by_kind[k].raw_peak);
    }
    cJSON_AddNumberToObject(m, "arena_peak_bytes", (double)r->arena_peak);
    cJSON_AddNumberToObject(m, "rss_peak_bytes", (double)r->rss_peak);
    static const char *const tags[AS_TAG_FIXED_COUNT] = {
        "weights", "gradients", "optimizer", "activations", "saved",
        "workspace", "service", "other"};
    cJSON *tp = cJSON_AddObjectToObject(m, "tag_peak_bytes");
    for (int t = 0; t < AS_TAG_FIXED_COUNT; t++)
        cJSON_AddNumberToObject(tp, tags[t], (double)r->tag_peak[t]);
    cJSON_AddNumberToObject(m, "fallbacks", (double)r->fallbacks);
    cJSON_AddNumberToObject(m, "saved_budget_bytes", (double)r->saved_budget);
    if (r->plan.active)
        cJSON_AddItemToObject(j, "plan", as_cli_plan_json(&r->plan));
    cJSON *tm = cJSON_AddObjectToObject(j, "time");
    cJSON_AddNumberToObject(tm, "step_ms_median", r->step_ms_median);
    cJSON_AddNumberToObject(tm, "total_s", r->total_s);
    cJSON_AddNumberToObject(tm, "eval_s", r->eval_s);
    cJSON_AddNumberToObject(tm, "step_cpu_ms_median", r->step_cpu_ms_median);
    cJSON_AddNumberToObject(tm, "cpu_s", r->cpu_s);
    return j;
}

int as_cmd_train(int argc, char **argv)
{
    as_cli_opts o = {.preset = "small", .seed = 1, .threads = 1};
    int r = as_cli_parse_opts(&train_cmd, argc, argv, &o);
    if (r != AS_CLI_RUN)
        return r;
    const char *model = o.model, *policy = o.policy, *act = o.act;
    if (!model)
        return as_cli_usage("train", "--model is required (cnn, vit or lm)");
    if (!policy)
        return as_cli_usage("train", "--policy is required (e.g. --policy default=keep)");
    if (o.budget && o.ratio > 0)
        return as_cli_usage("train", "give --budget or --ratio, not both");
    if (o.seen[AS_OPT_steps] && o.seen[AS_OPT_epochs])
        return as_cli_usage("train", "give --steps or --epochs, not both");
    as_nn_preset p;
    const as_nn_model_info *mi = as_nn_model_find(model);
    if (!mi)
        return as_cli_usage("train", "unknown model '%s' (%s)", model, as_nn_model_names());
    if (as_nn_preset_get(model, o.preset, &p))
        return as_cli_usage("train", "unknown preset '%s' for %s (small, bench; lm long; "
                            "vit, cnn wide)", o.preset, model);
    char err[768] = "";
    if (as_policy_check(policy, err, sizeof err))
        return as_cli_usage("train", "--policy: %s", err);
    if (o.steps) {
        p.steps = (long)o.steps;
        p.epochs = 0;
    }
    if (o.epochs > 0) {
        p.steps = 0;
        p.epochs = o.epochs;
    }
    if (o.batch)
        p.batch = (int)o.batch;
    if (o.lr > 0)
        p.lr = (float)o.lr;
    if ((act || o.convs) && mi->cfg != AS_NN_CFG_cnn)
        return as_cli_usage("train", "--act and --convs apply to --model cnn");
    if (act && strcmp(act, "relu") && strcmp(act, "leaky"))
        return as_cli_usage("train", "--act '%s': expected relu or leaky", act);
    if (act)
        p.cnn.act_fn = strcmp(act, "leaky") ? AS_FN_RELU : AS_FN_LEAKY_RELU;
    if (o.convs && (long)o.convs * p.cnn.nstages > 16)
        return as_cli_usage("train", "--convs %llu: more than 16 convs in all", o.convs);
    if (o.convs)
        p.cnn.convs = (int)o.convs;

    /* The command owns the store so that a service can watch it. */
    as_store *store = NULL;
    as_store_config cfg = {.policy = policy, .label = "train",
                           .sampler_hz = o.serve ? 10 : 0};
    int rc = as_store_create(&cfg, &store, err, sizeof err);
    if (rc)
        return as_cli_fail("train", "creating the store: %s", err);
    as_service *svc = NULL;
    if (o.serve && as_client_serve("train", o.serve, o.serve_remote, &store, NULL, 1,
                                  (const char *const[3]){o.job, o.rank, o.host}, &svc)) {
        as_store_destroy(store);
        return AS_EXIT_FAIL;
    }
    prog g = {.tty = isatty_stderr(), .quiet = o.quiet, .every = 50,
              .store = o.serve ? store : NULL};
    as_nn_train_opts to = {.policy = NULL, .seed = o.seed, .threads = (int)o.threads,
                           .data_dir = o.data_dir, .text_dir = o.text_dir,
                           .progress = on_progress, .progress_ud = &g,
                           .store = store, .eval_every = (int)o.eval_every,
                           .stop = as_ab_stop_flag(),
                           .saved_budget = o.budget, .budget_ratio = o.ratio};
    as_nn_train_result res;
    as_ab_signals_catch();
    rc = as_nn_train(&p, &to, &res, err, sizeof err);
    as_ab_signals_restore();
    as_service_stop(svc);
    as_store_destroy(store);
    if (rc)
        return as_cli_fail("train", "%s", err);
    if (!o.quiet && g.tty)
        fputs("\r\033[K", stderr);   /* clear the "evaluating" bar */
    if (!o.quiet) {
        char a[32], b[32], c[32];
        as_cli_human_bytes((double)res.saved_stored_peak, a, sizeof a);
        as_cli_human_bytes((double)res.saved_raw_peak, b, sizeof b);
        as_cli_human_bytes((double)res.arena_peak, c, sizeof c);
        fprintf(stderr, "%s/%s policy \"%s\" seed %llu: %ld steps, final train "
                "loss %.4f, ", p.model, p.name, policy, o.seed, res.steps,
                res.final_train_loss);
        if (res.interrupted)
            fprintf(stderr, "interrupted (%ld of %ld steps, no evaluation), ",
                    res.steps, res.planned_steps);
        else if (res.eval_accuracy >= 0)
            fprintf(stderr, "test accuracy %.2f%% (%ld images), ",
                    100 * res.eval_accuracy, res.eval_samples);
        else
            fprintf(stderr, "held-out loss %.4f nats/char (%ld chars), ",
                    res.eval_loss, res.eval_samples);
        fprintf(stderr, "saved peak %s of %s raw, arena peak %s, %.1f ms/step, "
                "%.1f s\n", a, b, c, res.step_ms_median, res.total_s);
        as_cli_plan_print(stderr, &res.plan);
    }
    rc = res.interrupted ? AS_EXIT_FAIL : AS_EXIT_OK;
    if (o.json) {
        cJSON *j = result_json(&p, policy, o.seed, (int)o.threads, &res);
        if (as_cli_write_json("train", o.json, j))
            rc = AS_EXIT_FAIL;
        cJSON_Delete(j);
    }
    as_nn_train_result_free(&res);
    return rc;
}

/*
 * report.json of an A/B report (see report.h). Format "actstore.ab-report"
 * version 1: run parameters, per arm and seed every curve and figure, the
 * paired statistics and the verdict. Non-finite numbers are null.
 */
#include "cli.h"
#include "report.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "actstore/common.h"

/* A number that parses back to the same bits (the shortest of %.15g,
 * %.16g, %.17g that does: cJSON's own printing stops at 15 digits when
 * those are within an epsilon), so that ab merge reproduces a report
 * exactly; null when not finite (JSON has no NaN). */
static cJSON *num_item(double v)
{
    if (!isfinite(v))
        return cJSON_CreateNull();
    char buf[40];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            break;
    }
    return cJSON_CreateRaw(buf);
}

static cJSON *num_array(const double *v, size_t n)
{
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; a && i < n; i++) {
        cJSON *x = num_item(v[i]);
        if (!x || !cJSON_AddItemToArray(a, x)) {
            cJSON_Delete(x);
            cJSON_Delete(a);
            return NULL;
        }
    }
    return a;
}

/* A number, or null when not finite (JSON has no NaN). */
static void add_num(cJSON *o, const char *k, double v)
{
    cJSON *x = num_item(v);
    if (x && !cJSON_AddItemToObject(o, k, x))
        cJSON_Delete(x);
}

static cJSON *run_json(const as_report *r, const as_rep_run *run)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    add_num(o, "seed", (double)run->seed);
    add_num(o, "steps", (double)run->steps_done);
    cJSON_AddBoolToObject(o, "finished", run->finished);
    cJSON *ev = cJSON_AddObjectToObject(o, "eval");
    if (ev) {
        cJSON_AddBoolToObject(ev, "done", run->evaluated);
        add_num(ev, "accuracy", run->evaluated ? run->eval_accuracy : NAN);
        add_num(ev, "loss", run->evaluated ? run->eval_loss : NAN);
    }
    add_num(o, "final_train_loss", as_report_final_loss(run));
    add_num(o, "step_ms_median", as_report_step_ms_median(run));
    add_num(o, "arena_peak_bytes", (double)run->arena_peak);
    add_num(o, "saved_budget_bytes", (double)run->budget);
    if (run->plan.active)
        cJSON_AddItemToObject(o, "plan", as_cli_plan_json(&run->plan));
    cJSON *sv = cJSON_AddObjectToObject(o, "saved");
    if (sv) {
        add_num(sv, "stored_peak_bytes", (double)run->saved_stored_peak);
        add_num(sv, "raw_peak_bytes", (double)run->saved_raw_peak);
        add_num(sv, "fallbacks", (double)run->fallbacks);
        cJSON *bk = cJSON_AddObjectToObject(sv, "by_kind");
        for (int k = 0; bk && k < AS_KIND_COUNT; k++) {
            if (!run->kind_raw_peak[k] && !run->kind_stored_peak[k])
                continue;
            cJSON *x = cJSON_AddObjectToObject(bk, as_kind_name(k));
            if (x) {
                add_num(x, "stored_peak_bytes", (double)run->kind_stored_peak[k]);
                add_num(x, "raw_peak_bytes", (double)run->kind_raw_peak[k]);
            }
        }
    }
    size_t n = (size_t)run->steps_done;
    cJSON_AddItemToObject(o, "loss", num_array(run->loss, n));
    cJSON *mem = cJSON_AddObjectToObject(o, "memory_per_step");
    if (mem) {
        cJSON_AddItemToObject(mem, "saved_stored_peak_bytes", num_array(run->mem_saved, n));
        cJSON_AddItemToObject(mem, "arena_peak_bytes", num_array(run->mem_arena, n));
    }
    cJSON_AddItemToObject(o, "step_ms", num_array(run->step_ms, n));
    cJSON *gc = cJSON_AddArrayToObject(o, "grad_cosine");
    for (size_t i = 0; gc && i < run->ncos; i++) {
        const as_rep_cos *c = &run->cos[i];
        cJSON *x = cJSON_CreateObject();
        if (!x)
            break;
        add_num(x, "step", (double)c->step);
        add_num(x, "overall", c->overall);
        add_num(x, "min", c->min);
        cJSON *pt = cJSON_AddObjectToObject(x, "per_tensor");
        for (size_t t = 0; pt && t < r->ntensors; t++)
            add_num(pt, r->tensor_names[t], c->per_tensor[t]);
        cJSON_AddItemToArray(gc, x);
    }
    return o;
}

cJSON *as_report_json(const as_report *r)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    cJSON_AddStringToObject(o, "format", AS_REPORT_FORMAT);
    cJSON_AddNumberToObject(o, "version", AS_REPORT_VERSION);
    cJSON_AddBoolToObject(o, "partial", r->partial);
    if (r->partial)
        cJSON_AddStringToObject(o, "partial_reason", r->partial_reason);
    cJSON_AddStringToObject(o, "actstore_version", as_version_string());
    cJSON_AddStringToObject(o, "started", r->started);
    add_num(o, "wall_s", r->wall_s);
    cJSON_AddStringToObject(o, "model", r->model);
    cJSON_AddStringToObject(o, "preset", r->preset);
    cJSON_AddStringToObject(o, "options", r->options);
    add_num(o, "steps", (double)r->steps);
    add_num(o, "check_every", (double)r->check_every);
    if (r->nshards) {
        cJSON *sh = cJSON_AddObjectToObject(o, "shard");
        if (sh) {
            cJSON_AddNumberToObject(sh, "index", r->shard);
            cJSON_AddNumberToObject(sh, "count", r->nshards);
            cJSON_AddNumberToObject(sh, "seed0", (double)r->seed0);
            cJSON_AddNumberToObject(sh, "seeds_total", (double)r->seeds_total);
        }
    }
    cJSON *seeds = cJSON_AddArrayToObject(o, "seeds");
    for (size_t i = 0; seeds && i < r->nseeds; i++)
        cJSON_AddItemToArray(seeds, cJSON_CreateNumber((double)r->arm[0].runs[i].seed));
    cJSON *tn = cJSON_AddArrayToObject(o, "param_tensors");
    for (size_t i = 0; tn && i < r->ntensors; i++)
        cJSON_AddItemToArray(tn, cJSON_CreateString(r->tensor_names[i]));
    cJSON *arms = cJSON_AddArrayToObject(o, "arms");
    for (int a = 0; arms && a < 2; a++) {
        cJSON *x = cJSON_CreateObject();
        if (!x)
            break;
        cJSON_AddStringToObject(x, "label", r->arm[a].label);
        cJSON_AddStringToObject(x, "spec", r->arm[a].spec);
        cJSON *runs = cJSON_AddArrayToObject(x, "runs");
        for (size_t i = 0; runs && i < r->nseeds; i++)
            cJSON_AddItemToArray(runs, run_json(r, &r->arm[a].runs[i]));
        cJSON_AddItemToArray(arms, x);
    }
    as_rep_metric *m;
    size_t nm = as_report_metrics(r, &m);
    cJSON *cmp = cJSON_AddObjectToObject(o, "paired");
    for (size_t i = 0; cmp && i < nm; i++) {
        cJSON *x = cJSON_AddObjectToObject(cmp, m[i].key);
        if (!x)
            continue;
        add_num(x, "pairs", (double)m[i].n);
        add_num(x, "a_mean", m[i].a_mean);
        add_num(x, "a_sd", m[i].a_sd);
        add_num(x, "b_mean", m[i].b_mean);
        add_num(x, "b_sd", m[i].b_sd);
        add_num(x, "diff", m[i].diff);
        add_num(x, "ci95_half", m[i].ci_half);
        add_num(x, "ci95_low", m[i].diff - m[i].ci_half);
        add_num(x, "ci95_high", m[i].diff + m[i].ci_half);
        cJSON_AddBoolToObject(x, "significant", m[i].significant);
        cJSON_AddStringToObject(x, "unit", m[i].unit == AS_REP_BYTES ? "bytes" :
                                           m[i].unit == AS_REP_PERCENT ? "percent" :
                                           m[i].unit == AS_REP_MS ? "ms" :
                                           m[i].unit == AS_REP_COSINE ? "cosine" : "");
    }
    free(m);
    char v[1024];
    as_report_verdict(r, v, sizeof v);
    cJSON_AddStringToObject(o, "verdict", v);
    return o;
}


/*
 * auto's plan as a terminal table and as JSON (train, ab, demo).
 */
#include <stdio.h>

#include "actstore/store.h"
#include "cli.h"

void as_cli_plan_print(FILE *f, const as_store_plan *p)
{
    if (!p->active)
        return;
    char b[32], k[32], pl[32], mn[32];
    as_cli_human_bytes((double)p->budget, b, sizeof b);
    as_cli_human_bytes((double)p->keep_bytes, k, sizeof k);
    as_cli_human_bytes((double)p->planned_bytes, pl, sizeof pl);
    as_cli_human_bytes((double)p->min_bytes, mn, sizeof mn);
    fprintf(f, "auto plan (step %llu, %llu probe steps, %llu plans): budget "
            "%s, keep %s, planned %s (%.1fx less), smallest reachable %s%s\n",
            (unsigned long long)p->step, (unsigned long long)p->probes,
            (unsigned long long)p->replans, p->budget ? b : "none", k, pl,
            p->planned_bytes ? (double)p->keep_bytes / (double)p->planned_bytes
                             : 0.0,
            mn, p->feasible ? "" : " (does NOT fit)");
    fprintf(f, "  %-24s %-16s %-10s %10s %10s %9s %8s %8s\n", "layer", "kind",
            "policy", "raw", "stored", "rel.err", "cosine", "us");
    for (size_t i = 0; i < p->n; i++) {
        const as_store_plan_entry *e = &p->entries[i];
        char r[32], s[32];
        as_cli_human_bytes((double)e->raw_bytes, r, sizeof r);
        as_cli_human_bytes((double)e->stored_bytes, s, sizeof s);
        fprintf(f, "  %-24s %-16s %-10s %10s %10s %9.2e %8.5f %8.0f\n",
                e->layer, as_kind_name(e->kind), e->policy, r, s,
                e->rel_error, e->cosine, e->time_ns / 1e3);
    }
}

cJSON *as_cli_plan_json(const as_store_plan *p)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddBoolToObject(j, "active", p->active);
    cJSON_AddNumberToObject(j, "budget_bytes", (double)p->budget);
    cJSON_AddNumberToObject(j, "keep_bytes", (double)p->keep_bytes);
    cJSON_AddNumberToObject(j, "planned_bytes", (double)p->planned_bytes);
    cJSON_AddNumberToObject(j, "fixed_bytes", (double)p->fixed_bytes);
    cJSON_AddNumberToObject(j, "min_bytes", (double)p->min_bytes);
    cJSON_AddBoolToObject(j, "feasible", p->feasible);
    cJSON_AddNumberToObject(j, "step", (double)p->step);
    cJSON_AddNumberToObject(j, "probes", (double)p->probes);
    cJSON_AddNumberToObject(j, "replans", (double)p->replans);
    cJSON_AddNumberToObject(j, "period", p->period);
    cJSON *a = cJSON_AddArrayToObject(j, "layers");
    for (size_t i = 0; i < p->n; i++) {
        const as_store_plan_entry *e = &p->entries[i];
        const as_cli_num nums[] = {
            {"raw_bytes", (double)e->raw_bytes}, {"stored_bytes", (double)e->stored_bytes},
            {"rel_error", e->rel_error}, {"cosine", e->cosine}, {"time_ns", e->time_ns},
            {"weight", e->weight}, {"items", e->items}, {"candidates", e->candidates},
        };
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "layer", e->layer);
        cJSON_AddStringToObject(o, "kind", as_kind_name(e->kind));
        cJSON_AddStringToObject(o, "policy", e->policy);
        as_cli_add_nums(o, nums, sizeof nums / sizeof nums[0]);
        cJSON_AddItemToArray(a, o);
    }
    return j;
}

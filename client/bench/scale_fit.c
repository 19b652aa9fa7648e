/*
 * actstore bench scale --fit BYTES: per policy, the longest lm context (at
 * the grid's batch) and the largest batch (at the grid's context) whose
 * training steps stay within BYTES of arena. A probe is one configuration
 * in its own process with the arena limited to BYTES from the first
 * training step (as_arena_set_budget; auto's measuring step runs before):
 * it fits when every step, warm-up included, succeeds (fixed rules: 1
 * warm-up step, auto: --warmup's, 2 by default); it does not when a
 * step fails with AS_EBUDGET. Sizes double until one does not fit, then
 * bisect until the gap is at most 1/16 of the size that fits (multiples of
 * 16 for contexts).
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "scale.h"

#define CMD "bench scale"

typedef struct fit_axis {
    const char *name;      /* "context" or "batch" */
    int start, max, quantum;
} fit_axis;

typedef struct fit_out {
    int fits, next;        /* 0 = none */
    sc_res at, over;       /* the probes at fits and at next */
} fit_out;

/* Probe size v on axis ax: 1 fits, 0 does not, -1 failed otherwise. */
static int probe(const sc_cfg *base, const fit_axis *ax, int v, sc_res *r, bool verbose,
                 cJSON *log)
{
    sc_cfg c = *base;
    if (!strcmp(ax->name, "context"))
        c.T = v;
    else
        c.B = v;
    sc_measure_isolated(&c, r);
    int fits = r->rc == 0 && r->fit_peak <= c.arena_budget;
    if (r->rc && !sc_over_budget(r)) {
        fprintf(stderr, "actstore " CMD ": error: %s %d under %s: %s\n", ax->name, v,
                c.pol.label, r->err);
        return -1;
    }
    if (r->rc == 0 && !fits)
        snprintf(r->err, sizeof r->err, "arena peak %llu over the budget",
                 (unsigned long long)r->fit_peak);
    if (verbose)
        fprintf(stderr, "  fit %-8s %-7s %5d: %s%s\n", c.pol.label, ax->name, v,
                fits ? "fits" : "over: ", fits ? "" : r->err);
    cJSON *e = cJSON_CreateObject();
    cJSON_AddNumberToObject(e, ax->name, v);
    cJSON_AddBoolToObject(e, "fits", fits);
    if (fits)
        cJSON_AddNumberToObject(e, "arena_peak_bytes", (double)r->fit_peak);
    else
        cJSON_AddStringToObject(e, "error", r->err);
    cJSON_AddItemToArray(log, e);
    return fits;
}

static int round_q(int v, int q) { return v / q * q; }

/* Record probe r of size v: the new largest fitting or smallest failing. */
static void take(fit_out *out, int f, int v, const sc_res *r, int *lo, int *hi)
{
    if (f) {
        *lo = v;
        out->at = *r;
    } else {
        *hi = v;
        out->over = *r;
    }
}

/* Doubling, then bisection. */
static int search(const sc_cfg *base, const fit_axis *ax, bool verbose, cJSON *log,
                  fit_out *out)
{
    sc_res r;
    memset(out, 0, sizeof *out);
    int lo = ax->start, hi = 0, f = probe(base, ax, lo, &r, verbose, log);
    if (f < 0)
        return -1;
    if (!f) {
        out->next = lo;
        out->over = r;
        return 0;
    }
    out->at = r;
    while (!hi) {
        int v = lo * 2 > ax->max ? ax->max : lo * 2;
        if (v == lo)
            break;   /* the limit fits */
        if ((f = probe(base, ax, v, &r, verbose, log)) < 0)
            return -1;
        take(out, f, v, &r, &lo, &hi);
    }
    while (hi && hi - lo > ax->quantum && (hi - lo) * 16 > lo) {
        int mid = round_q(lo + (hi - lo) / 2, ax->quantum);
        if (mid <= lo)
            break;
        if ((f = probe(base, ax, mid, &r, verbose, log)) < 0)
            return -1;
        take(out, f, mid, &r, &lo, &hi);
    }
    out->fits = lo;
    out->next = hi;
    return 0;
}

static cJSON *out_json(const fit_axis *ax, const fit_out *fo, cJSON *log)
{
    cJSON *j = cJSON_CreateObject(), *t = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "fits", fo->fits);
    cJSON_AddNumberToObject(j, "next", fo->next);
    cJSON_AddBoolToObject(j, "at_limit", fo->fits && !fo->next);
    if (fo->fits) {
        cJSON_AddNumberToObject(j, "arena_peak_bytes", (double)fo->at.fit_peak);
        cJSON_AddNumberToObject(j, "saved_stored_peak_bytes", (double)fo->at.saved_stored);
        static const char *tags[] = {"weights", "gradients", "optimizer", "activations",
                                     "saved", "workspace"};
        for (int i = 0; i < 6; i++)
            cJSON_AddNumberToObject(t, tags[i], (double)fo->at.tag_peak[i]);
        cJSON_AddItemToObject(j, "tag_peak_bytes", t);
    } else {
        cJSON_Delete(t);
    }
    if (fo->next)
        cJSON_AddStringToObject(j, "next_error", fo->over.err);
    cJSON_AddStringToObject(j, "axis", ax->name);
    cJSON_AddItemToObject(j, "probes", log);
    return j;
}

static void print_row(const char *label, const fit_axis *ax, const fit_out *fo, int keep)
{
    char a[24], w[24], s[24], act[24];
    if (!fo->fits) {
        printf("  %-8s %-7s none fits (%s %d: %s)\n", label, ax->name, ax->name, fo->next,
               fo->over.err);
        return;
    }
    printf("  %-8s %-7s %5d%s  (%4.2fx keep)  arena %s: saved %s, activations %s, "
           "workspace %s\n", label, ax->name, fo->fits, fo->next ? " " : "+",
           keep ? (double)fo->fits / keep : 0.0,
           as_cli_human_bytes((double)fo->at.fit_peak, a, sizeof a),
           as_cli_human_bytes((double)fo->at.tag_peak[AS_TAG_SAVED], s, sizeof s),
           as_cli_human_bytes((double)fo->at.tag_peak[AS_TAG_ACTIVATIONS], act, sizeof act),
           as_cli_human_bytes((double)fo->at.tag_peak[AS_TAG_WORKSPACE], w, sizeof w));
}

int sc_fit(const sc_cfg *base, const sc_policy *pols, int npol, uint64_t budget,
           int max_T, int max_B, unsigned axes_on, bool verbose, cJSON *root)
{
    const fit_axis axes[2] = {{"context", 64 < max_T ? 64 : max_T, max_T, 16},
                              {"batch", 1, max_B, 1}};
    char b[24];
    printf("largest lm size whose training steps fit %s of arena (width %d, %d heads; "
           "context at batch %d, batch at context %d; '+' = the search's limit):\n",
           as_cli_human_bytes((double)budget, b, sizeof b), base->C, base->C / 16, base->B,
           base->T);
    cJSON *arr = cJSON_AddArrayToObject(root, "fit");
    cJSON_AddNumberToObject(root, "fit_budget_bytes", (double)budget);
    int keep[2] = {0, 0};
    for (int k = 0; k < npol; k++) {
        cJSON *pj = cJSON_CreateObject();
        cJSON_AddStringToObject(pj, "policy", pols[k].label);
        cJSON_AddItemToArray(arr, pj);
        for (int a = 0; a < 2; a++) {
            if (!(axes_on & (1u << a)))
                continue;
            sc_cfg c = *base;
            c.pol = pols[k];
            c.arena_budget = budget;
            /* fixed rules: the second step (optimizer state live) is the
             * largest; auto's first two are probe steps */
            if (!strstr(c.pol.spec, "auto") && c.warmup > 1)
                c.warmup = 1;
            fit_out fo;
            cJSON *log = cJSON_CreateArray();
            if (search(&c, &axes[a], verbose, log, &fo)) {
                cJSON_Delete(log);
                return -1;
            }
            if (k == 0)
                keep[a] = fo.fits;
            cJSON *oj = out_json(&axes[a], &fo, log);
            cJSON_AddNumberToObject(oj, "ratio_to_keep",
                                    keep[a] ? (double)fo.fits / keep[a] : 0.0);
            cJSON_AddItemToObject(pj, axes[a].name, oj);
            print_row(pols[k].label, &axes[a], &fo, keep[a]);
            fflush(stdout);
        }
    }
    return 0;
}

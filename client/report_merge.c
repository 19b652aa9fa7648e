/*
 * Reading report.json back (the exact inverse of report_json.c: cJSON
 * prints doubles so that they parse to the same bits) and merging the
 * reports of the shards of one comparison (`actstore ab --shard I/N`) into
 * the report a single run of every seed would have given.
 */
#include "report.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "actstore/common.h"
#include "cli.h"
#include "util/err.h"

static uint64_t ju64(const cJSON *o, const char *k)
{
    double v = as_cli_jnum(o, k, NAN);
    return isfinite(v) && v > 0 ? (uint64_t)v : 0;
}

/* Element i of a number array (null: NAN). */
static double jat(const cJSON *a, int i)
{
    const cJSON *v = cJSON_GetArrayItem(a, i);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

/* auto's plan of a run, as as_cli_plan_json wrote it (absent: inactive). */
static int plan_from_json(as_store_plan *p, const cJSON *o, char *err, size_t errlen)
{
    memset(p, 0, sizeof *p);
    if (!cJSON_IsObject(o))
        return 0;
    p->active = cJSON_IsTrue(cJSON_GetObjectItem(o, "active"));
    p->feasible = cJSON_IsTrue(cJSON_GetObjectItem(o, "feasible"));
    p->measured = p->active;
    p->budget = ju64(o, "budget_bytes");
    p->keep_bytes = ju64(o, "keep_bytes");
    p->planned_bytes = ju64(o, "planned_bytes");
    p->fixed_bytes = ju64(o, "fixed_bytes");
    p->min_bytes = ju64(o, "min_bytes");
    p->step = ju64(o, "step");
    p->probes = ju64(o, "probes");
    p->replans = ju64(o, "replans");
    p->period = (uint32_t)ju64(o, "period");
    const cJSON *ls = cJSON_GetObjectItem(o, "layers");
    int n = cJSON_GetArraySize(ls);
    if (n <= 0)
        return 0;
    if (!(p->entries = calloc((size_t)n, sizeof *p->entries)))
        return as_set_err(err, errlen, AS_ENOMEM, "out of memory");
    const cJSON *e;
    cJSON_ArrayForEach(e, ls) {
        as_store_plan_entry *x = &p->entries[p->n++];
        const char *layer = as_cli_jstr(e, "layer", NULL), *kind = as_cli_jstr(e, "kind", NULL), *pol = as_cli_jstr(e, "policy", NULL);
        snprintf(x->layer, sizeof x->layer, "%s", layer ? layer : "");
        snprintf(x->policy, sizeof x->policy, "%s", pol ? pol : "");
        x->kind = kind ? as_kind_from_name(kind, strlen(kind)) : -1;
        if (x->kind < 0)
            return as_set_err(err, errlen, AS_EFORMAT, "plan: unknown kind '%s'",
                              kind ? kind : "");
        x->raw_bytes = ju64(e, "raw_bytes");
        x->stored_bytes = ju64(e, "stored_bytes");
        x->rel_error = as_cli_jnum(e, "rel_error", NAN);
        x->cosine = as_cli_jnum(e, "cosine", NAN);
        x->time_ns = as_cli_jnum(e, "time_ns", NAN);
        x->weight = as_cli_jnum(e, "weight", NAN);
        x->items = (uint32_t)ju64(e, "items");
        x->candidates = (uint32_t)ju64(e, "candidates");
    }
    return 0;
}

static int run_from_json(as_report *r, as_rep_run *run, const cJSON *o, char *err,
                         size_t errlen)
{
    run->finished = cJSON_IsTrue(cJSON_GetObjectItem(o, "finished"));
    const cJSON *ev = cJSON_GetObjectItem(o, "eval");
    run->evaluated = cJSON_IsTrue(cJSON_GetObjectItem(ev, "done"));
    run->eval_accuracy = as_cli_jnum(ev, "accuracy", NAN);
    run->eval_loss = as_cli_jnum(ev, "loss", NAN);
    run->arena_peak = ju64(o, "arena_peak_bytes");
    run->budget = ju64(o, "saved_budget_bytes");
    int prc = plan_from_json(&run->plan, cJSON_GetObjectItem(o, "plan"), err, errlen);
    if (prc)
        return prc;
    const cJSON *sv = cJSON_GetObjectItem(o, "saved");
    run->saved_stored_peak = ju64(sv, "stored_peak_bytes");
    run->saved_raw_peak = ju64(sv, "raw_peak_bytes");
    run->fallbacks = ju64(sv, "fallbacks");
    const cJSON *k;
    cJSON_ArrayForEach(k, cJSON_GetObjectItem(sv, "by_kind")) {
        int kind = as_kind_from_name(k->string, strlen(k->string));
        if (kind < 0)
            return as_set_err(err, errlen, AS_EFORMAT, "unknown kind '%s'", k->string);
        run->kind_stored_peak[kind] = ju64(k, "stored_peak_bytes");
        run->kind_raw_peak[kind] = ju64(k, "raw_peak_bytes");
    }
    const cJSON *loss = cJSON_GetObjectItem(o, "loss");
    const cJSON *mem = cJSON_GetObjectItem(o, "memory_per_step");
    const cJSON *ms = cJSON_GetObjectItem(mem, "saved_stored_peak_bytes");
    const cJSON *ma = cJSON_GetObjectItem(mem, "arena_peak_bytes");
    const cJSON *st = cJSON_GetObjectItem(o, "step_ms");
    int n = cJSON_GetArraySize(loss);
    if (n != as_cli_jnum(o, "steps", NAN) || cJSON_GetArraySize(ms) != n || cJSON_GetArraySize(ma) != n ||
        cJSON_GetArraySize(st) != n)
        return as_set_err(err, errlen, AS_EFORMAT, "seed %llu: per-step arrays of "
                          "different lengths", (unsigned long long)run->seed);
    for (int i = 0; i < n; i++)
        if (as_report_push_step(run, jat(loss, i), jat(ms, i), jat(ma, i), jat(st, i)))
            return as_set_err(err, errlen, AS_ENOMEM, "out of memory");
    const cJSON *c;
    double *pt = malloc((r->ntensors ? r->ntensors : 1) * sizeof *pt);
    if (!pt)
        return as_set_err(err, errlen, AS_ENOMEM, "out of memory");
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(o, "grad_cosine")) {
        const cJSON *per = cJSON_GetObjectItem(c, "per_tensor");
        for (size_t t = 0; t < r->ntensors; t++)
            pt[t] = as_cli_jnum(per, r->tensor_names[t], NAN);
        if (as_report_push_cos(r, run, (long)as_cli_jnum(c, "step", NAN), as_cli_jnum(c, "overall", NAN), pt)) {
            free(pt);
            return as_set_err(err, errlen, AS_ENOMEM, "out of memory");
        }
    }
    free(pt);
    return 0;
}

int as_report_from_json(const cJSON *j, as_report *r, char *err, size_t errlen)
{
    memset(r, 0, sizeof *r);
    const char *fmt = as_cli_jstr(j, "format", NULL);
    if (!fmt || strcmp(fmt, AS_REPORT_FORMAT) || as_cli_jnum(j, "version", NAN) != AS_REPORT_VERSION)
        return as_set_err(err, errlen, AS_EFORMAT, "not an %s version %d file",
                          AS_REPORT_FORMAT, AS_REPORT_VERSION);
    const cJSON *seeds = cJSON_GetObjectItem(j, "seeds"), *arms = cJSON_GetObjectItem(j, "arms");
    int ns = cJSON_GetArraySize(seeds);
    if (ns < 1 || ns > 4096 || cJSON_GetArraySize(arms) != 2)
        return as_set_err(err, errlen, AS_EFORMAT, "no seeds, or not two arms");
    uint64_t *sv = malloc((size_t)ns * sizeof *sv);
    if (!sv)
        return as_set_err(err, errlen, AS_ENOMEM, "out of memory");
    for (int i = 0; i < ns; i++)
        sv[i] = (uint64_t)jat(seeds, i);
    const cJSON *a0 = cJSON_GetArrayItem(arms, 0), *a1 = cJSON_GetArrayItem(arms, 1);
    int rc = as_report_init(r, as_cli_jstr(j, "model", NULL), as_cli_jstr(j, "preset", NULL), as_cli_jstr(a0, "spec", NULL),
                            as_cli_jstr(a1, "spec", NULL), sv, (size_t)ns, (long)as_cli_jnum(j, "steps", NAN),
                            (long)as_cli_jnum(j, "check_every", NAN));
    free(sv);
    if (rc)
        return as_set_err(err, errlen, rc, "out of memory");
    snprintf(r->options, sizeof r->options, "%s", as_cli_jstr(j, "options", NULL) ? as_cli_jstr(j, "options", NULL) : "");
    snprintf(r->started, sizeof r->started, "%s", as_cli_jstr(j, "started", NULL) ? as_cli_jstr(j, "started", NULL) : "");
    r->wall_s = as_cli_jnum(j, "wall_s", NAN);
    r->partial = cJSON_IsTrue(cJSON_GetObjectItem(j, "partial"));
    if (as_cli_jstr(j, "partial_reason", NULL))
        snprintf(r->partial_reason, sizeof r->partial_reason, "%s", as_cli_jstr(j, "partial_reason", NULL));
    const cJSON *sh = cJSON_GetObjectItem(j, "shard");
    if (sh) {
        r->shard = (unsigned)as_cli_jnum(sh, "index", NAN);
        r->nshards = (unsigned)as_cli_jnum(sh, "count", NAN);
        r->seed0 = (uint64_t)as_cli_jnum(sh, "seed0", NAN);
        r->seeds_total = (size_t)as_cli_jnum(sh, "seeds_total", NAN);
    }
    const cJSON *tn = cJSON_GetObjectItem(j, "param_tensors");
    int nt = cJSON_GetArraySize(tn);
    const char **names = calloc(nt ? (size_t)nt : 1, sizeof *names);
    if (!names)
        return as_set_err(err, errlen, AS_ENOMEM, "out of memory");
    for (int i = 0; i < nt; i++)
        names[i] = cJSON_GetStringValue(cJSON_GetArrayItem(tn, i));
    rc = as_report_set_tensors(r, names, (size_t)nt);
    free(names);
    if (rc)
        return as_set_err(err, errlen, rc, "out of memory");
    for (int a = 0; a < 2; a++) {
        const cJSON *runs = cJSON_GetObjectItem(a ? a1 : a0, "runs");
        if (cJSON_GetArraySize(runs) != ns)
            return as_set_err(err, errlen, AS_EFORMAT, "arm %c has %d runs for %d seeds",
                              'A' + a, cJSON_GetArraySize(runs), ns);
        for (int i = 0; i < ns; i++) {
            const cJSON *o = cJSON_GetArrayItem(runs, i);
            if ((uint64_t)as_cli_jnum(o, "seed", NAN) != r->arm[a].runs[i].seed)
                return as_set_err(err, errlen, AS_EFORMAT, "arm %c run %d is not seed %llu",
                                  'A' + a, i, (unsigned long long)r->arm[a].runs[i].seed);
            if ((rc = run_from_json(r, &r->arm[a].runs[i], o, err, errlen)))
                return rc;
        }
    }
    return 0;
}

int as_report_read(const char *path, as_report *r, char *err, size_t errlen)
{
    memset(r, 0, sizeof *r);
    FILE *f = fopen(path, "rb");
    if (!f)
        return as_set_err(err, errlen, AS_EIO, "%s: cannot open", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = n >= 0 && n < (1L << 30) ? malloc((size_t)n + 1) : NULL;
    size_t got = buf ? fread(buf, 1, (size_t)n, f) : 0;
    fclose(f);
    if (!buf || got != (size_t)n) {
        free(buf);
        return as_set_err(err, errlen, buf ? AS_EIO : AS_ENOMEM, "%s: cannot read", path);
    }
    buf[n] = 0;
    cJSON *j = cJSON_Parse(buf);
    free(buf);
    if (!j)
        return as_set_err(err, errlen, AS_EFORMAT, "%s: not JSON", path);
    char why[256];
    int rc = as_report_from_json(j, r, why, sizeof why);
    cJSON_Delete(j);
    if (rc) {
        as_report_free(r);
        return as_set_err(err, errlen, rc, "%s: %s", path, why);
    }
    return 0;
}

/* Move run *src into *dst (src is left empty). */
static void run_move(as_rep_run *dst, as_rep_run *src)
{
    *dst = *src;
    memset(src, 0, sizeof *src);
}

static int same(const char *what, const char *a, const char *b, size_t i, char *err,
                size_t errlen)
{
    if (!strcmp(a, b))
        return 0;
    return as_set_err(err, errlen, AS_EINVAL, "part %zu has %s '%s', part 1 '%s'", i + 1,
                      what, b, a);
}

int as_report_merge(as_report *parts, size_t n, as_report *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (n < 1)
        return as_set_err(err, errlen, AS_EINVAL, "nothing to merge");
    const as_report *p0 = &parts[0];
    for (size_t i = 0; i < n; i++) {
        const as_report *p = &parts[i];
        char a[32], b[32];
        int rc;
        snprintf(a, sizeof a, "%ld/%ld", p0->steps, p0->check_every);
        snprintf(b, sizeof b, "%ld/%ld", p->steps, p->check_every);
        if ((rc = same("model", p0->model, p->model, i, err, errlen)) ||
            (rc = same("preset", p0->preset, p->preset, i, err, errlen)) ||
            (rc = same("options", p0->options, p->options, i, err, errlen)) ||
            (rc = same("spec A", p0->arm[0].spec, p->arm[0].spec, i, err, errlen)) ||
            (rc = same("spec B", p0->arm[1].spec, p->arm[1].spec, i, err, errlen)) ||
            (rc = same("steps/check-every", a, b, i, err, errlen)))
            return rc;
        if (p->ntensors != p0->ntensors)
            return as_set_err(err, errlen, AS_EINVAL, "part %zu has other parameter tensors",
                              i + 1);
        for (size_t t = 0; t < p->ntensors; t++)
            if ((rc = same("parameter tensor", p0->tensor_names[t], p->tensor_names[t], i,
                           err, errlen)))
                return rc;
        if (!p->nshards || p->nshards != p0->nshards || p->seed0 != p0->seed0 ||
            p->seeds_total != p0->seeds_total)
            return as_set_err(err, errlen, AS_EINVAL, "part %zu is not a shard of the same "
                              "comparison (made with ab --shard I/N, same --seeds and "
                              "--seed)", i + 1);
    }
    /* every seed of the comparison exactly once */
    const size_t k = p0->seeds_total;
    size_t *from = malloc((k ? k : 1) * 2 * sizeof *from);
    if (!from)
        return as_set_err(err, errlen, AS_ENOMEM, "out of memory");
    size_t *slot = from + k;
    for (size_t s = 0; s < k; s++)
        from[s] = SIZE_MAX;
    for (size_t i = 0; i < n; i++)
        for (size_t s = 0; s < parts[i].nseeds; s++) {
            uint64_t seed = parts[i].arm[0].runs[s].seed;
            size_t at = (size_t)(seed - p0->seed0);
            if (seed < p0->seed0 || at >= k || from[at] != SIZE_MAX) {
                free(from);
                return as_set_err(err, errlen, AS_EINVAL, "seed %llu %s (part %zu)",
                                  (unsigned long long)seed,
                                  at < k ? "appears twice" : "is outside the comparison",
                                  i + 1);
            }
            from[at] = i;
            slot[at] = s;
        }
    for (size_t s = 0; s < k; s++)
        if (from[s] == SIZE_MAX) {
            free(from);
            return as_set_err(err, errlen, AS_EINVAL, "seed %llu missing: its shard %zu/%u "
                              "was not given", (unsigned long long)(p0->seed0 + s),
                              s % p0->nshards + 1, p0->nshards);
        }
    uint64_t *seeds = malloc((k ? k : 1) * sizeof *seeds);
    int rc = seeds ? 0 : AS_ENOMEM;
    for (size_t s = 0; seeds && s < k; s++)
        seeds[s] = p0->seed0 + s;
    if (!rc)
        rc = as_report_init(out, p0->model, p0->preset, p0->arm[0].spec, p0->arm[1].spec,
                            seeds, k, p0->steps, p0->check_every);
    free(seeds);
    if (!rc)
        rc = as_report_set_tensors(out, (const char *const *)p0->tensor_names, p0->ntensors);
    if (rc) {
        free(from);
        as_report_free(out);
        return as_set_err(err, errlen, rc, "out of memory");
    }
    snprintf(out->options, sizeof out->options, "%s", p0->options);
    snprintf(out->started, sizeof out->started, "%s", p0->started);
    out->wall_s = 0;
    for (size_t i = 0; i < n; i++) {
        out->wall_s += parts[i].wall_s;   /* compute time of all shards */
        if (strcmp(parts[i].started, out->started) < 0)
            snprintf(out->started, sizeof out->started, "%s", parts[i].started);
        if (parts[i].partial && !out->partial) {
            out->partial = true;
            snprintf(out->partial_reason, sizeof out->partial_reason, "shard %u/%u: %.70s",
                     parts[i].shard, parts[i].nshards, parts[i].partial_reason);
        }
    }
    for (size_t s = 0; s < k; s++)
        for (int a = 0; a < 2; a++)
            run_move(&out->arm[a].runs[s], &parts[from[s]].arm[a].runs[slot[s]]);
    free(from);
    return 0;
}

/*
 * A/B reports (see report.h): the figures, the paired statistics over
 * seeds, the verdict line, and the files.
 *
 * Pairing: seed i of arm A and seed i of arm B started from the same
 * weights and saw the same batches, so the comparison is on the per-seed
 * differences b_i - a_i (stats.c: mean, sd, Student t interval), which
 * cancels the seed-to-seed spread that both arms share.
 */
#include "report.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "actstore/common.h"
#include "cli.h"
#include "stats.h"
#include "svg.h"

/* ---- building ----------------------------------------------------------- */

static char *dup_str(const char *s)
{
    size_t n = strlen(s ? s : "") + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s ? s : "", n);
    return d;
}

static void run_free(as_rep_run *run)
{
    free(run->loss);
    free(run->mem_saved);
    free(run->mem_arena);
    free(run->step_ms);
    for (size_t i = 0; i < run->ncos; i++)
        free(run->cos[i].per_tensor);
    free(run->cos);
    memset(run, 0, sizeof *run);
}

void as_report_free(as_report *r)
{
    if (!r)
        return;
    for (int a = 0; a < 2; a++) {
        for (size_t i = 0; r->arm[a].runs && i < r->nseeds; i++)
            run_free(&r->arm[a].runs[i]);
        free(r->arm[a].runs);
        free(r->arm[a].spec);
    }
    for (size_t i = 0; i < r->ntensors; i++)
        free(r->tensor_names[i]);
    free(r->tensor_names);
    memset(r, 0, sizeof *r);
}

int as_report_init(as_report *r, const char *model, const char *preset,
                   const char *spec_a, const char *spec_b,
                   const uint64_t *seeds, size_t nseeds, long steps,
                   long check_every)
{
    memset(r, 0, sizeof *r);
    snprintf(r->model, sizeof r->model, "%s", model ? model : "");
    snprintf(r->preset, sizeof r->preset, "%s", preset ? preset : "");
    r->steps = steps;
    r->check_every = check_every;
    r->nseeds = nseeds;
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(r->started, sizeof r->started, "%Y-%m-%dT%H:%M:%SZ", &tm);
    const char *specs[2] = {spec_a, spec_b};
    for (int a = 0; a < 2; a++) {
        r->arm[a].label[0] = (char)('A' + a);
        r->arm[a].spec = dup_str(specs[a]);
        r->arm[a].runs = calloc(nseeds ? nseeds : 1, sizeof(as_rep_run));
        if (!r->arm[a].spec || !r->arm[a].runs) {
            as_report_free(r);
            return AS_ENOMEM;
        }
        for (size_t i = 0; i < nseeds; i++) {
            as_rep_run *run = &r->arm[a].runs[i];
            run->seed = seeds[i];
            run->eval_accuracy = NAN;
            run->eval_loss = NAN;
        }
    }
    return 0;
}

int as_report_set_tensors(as_report *r, const char *const *names, size_t n)
{
    for (size_t i = 0; i < r->ntensors; i++)
        free(r->tensor_names[i]);
    free(r->tensor_names);
    r->ntensors = 0;
    r->tensor_names = calloc(n ? n : 1, sizeof(char *));
    if (!r->tensor_names)
        return AS_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        r->tensor_names[i] = dup_str(names[i]);
        if (!r->tensor_names[i])
            return AS_ENOMEM;
        r->ntensors = i + 1;
    }
    return 0;
}

static int grow(double **p, size_t cap)
{
    double *q = realloc(*p, cap * sizeof *q);
    if (!q)
        return AS_ENOMEM;
    *p = q;
    return 0;
}

int as_report_push_step(as_rep_run *run, double loss, double mem_saved,
                        double mem_arena, double step_ms)
{
    if ((size_t)run->steps_done == run->cap) {
        size_t cap = run->cap ? run->cap * 2 : 256;
        if (grow(&run->loss, cap) || grow(&run->mem_saved, cap) ||
            grow(&run->mem_arena, cap) || grow(&run->step_ms, cap))
            return AS_ENOMEM;
        run->cap = cap;
    }
    size_t i = (size_t)run->steps_done++;
    run->loss[i] = loss;
    run->mem_saved[i] = mem_saved;
    run->mem_arena[i] = mem_arena;
    run->step_ms[i] = step_ms;
    return 0;
}

int as_report_push_cos(as_report *r, as_rep_run *run, long step,
                       double overall, const double *per_tensor)
{
    if (run->ncos == run->cos_cap) {
        size_t cap = run->cos_cap ? run->cos_cap * 2 : 16;
        as_rep_cos *c = realloc(run->cos, cap * sizeof *c);
        if (!c)
            return AS_ENOMEM;
        run->cos = c;
        run->cos_cap = cap;
    }
    as_rep_cos *c = &run->cos[run->ncos];
    c->step = step;
    c->overall = overall;
    c->min = INFINITY;
    c->per_tensor = malloc((r->ntensors ? r->ntensors : 1) * sizeof(double));
    if (!c->per_tensor)
        return AS_ENOMEM;
    for (size_t i = 0; i < r->ntensors; i++) {
        c->per_tensor[i] = per_tensor[i];
        if (isfinite(per_tensor[i]) && per_tensor[i] < c->min)
            c->min = per_tensor[i];
    }
    if (!isfinite(c->min))
        c->min = overall;
    run->ncos++;
    return 0;
}

/* ---- derived figures ---------------------------------------------------- */

double as_report_final_loss(const as_rep_run *run)
{
    if (run->steps_done <= 0)
        return NAN;
    long k = run->steps_done < 50 ? run->steps_done : 50;
    double s = 0;
    for (long i = run->steps_done - k; i < run->steps_done; i++)
        s += run->loss[i];
    return s / (double)k;
}

double as_report_step_ms_median(const as_rep_run *run)
{
    if (run->steps_done <= 0)
        return NAN;
    size_t n = (size_t)run->steps_done;
    double *t = malloc(n * sizeof *t);
    if (!t)
        return NAN;
    memcpy(t, run->step_ms, n * sizeof *t);
    /* The first step pays one-time costs (lazy optimizer state, caches). */
    double m = n > 2 ? as_stats_median(t + 1, n - 1) : as_stats_median(t, n);
    free(t);
    return m;
}

static double cos_mean(const as_rep_run *run)
{
    if (!run->ncos)
        return NAN;
    double s = 0;
    for (size_t i = 0; i < run->ncos; i++)
        s += run->cos[i].overall;
    return s / (double)run->ncos;
}

static double cos_min(const as_rep_run *run)
{
    if (!run->ncos)
        return NAN;
    double m = INFINITY;
    for (size_t i = 0; i < run->ncos; i++)
        m = fmin(m, run->cos[i].min);
    return m;
}

size_t as_report_pairs(const as_report *r, size_t *idx)
{
    size_t n = 0;
    for (size_t i = 0; i < r->nseeds; i++)
        if (r->arm[0].runs[i].finished && r->arm[1].runs[i].finished)
            idx[n++] = i;
    if (n)
        return n;
    for (size_t i = 0; i < r->nseeds; i++)
        if (r->arm[0].runs[i].steps_done > 0 && r->arm[1].runs[i].steps_done > 0) {
            idx[0] = i;
            return 1;
        }
    return 0;
}

/* Value of one metric for a run; NAN when not available. */
typedef double (*metric_fn)(const as_rep_run *run, int kind);

static double m_acc(const as_rep_run *r, int k)
{
    (void)k;
    return r->evaluated ? r->eval_accuracy * 100.0 : NAN;
}
static double m_eval_loss(const as_rep_run *r, int k)
{
    (void)k;
    return r->evaluated ? r->eval_loss : NAN;
}
static double m_train_loss(const as_rep_run *r, int k)
{
    (void)k;
    return as_report_final_loss(r);
}
static double m_saved(const as_rep_run *r, int k)
{
    (void)k;
    return r->steps_done ? (double)r->saved_stored_peak : NAN;
}
static double m_kind(const as_rep_run *r, int k)
{
    return r->steps_done ? (double)r->kind_stored_peak[k] : NAN;
}
static double m_arena(const as_rep_run *r, int k)
{
    (void)k;
    return r->steps_done ? (double)r->arena_peak : NAN;
}
static double m_step(const as_rep_run *r, int k)
{
    (void)k;
    return as_report_step_ms_median(r);
}
static double m_cos(const as_rep_run *r, int k)
{
    (void)k;
    return cos_mean(r);
}
static double m_cos_min(const as_rep_run *r, int k)
{
    (void)k;
    return cos_min(r);
}

/* Fill m from the pairs idx[0..n): pairs where either value is missing are
 * left out. Returns false when no pair has the metric. */
static bool metric_fill(const as_report *r, const size_t *idx, size_t n,
                        metric_fn fn, int kind, as_rep_metric *m)
{
    double *a = malloc((n ? n : 1) * sizeof *a), *b = malloc((n ? n : 1) * sizeof *b);
    size_t k = 0;
    if (a && b)
        for (size_t i = 0; i < n; i++) {
            double va = fn(&r->arm[0].runs[idx[i]], kind);
            double vb = fn(&r->arm[1].runs[idx[i]], kind);
            if (isfinite(va) && isfinite(vb)) {
                a[k] = va;
                b[k] = vb;
                k++;
            }
        }
    if (k) {
        as_summary sa = as_stats_summary(a, k), sb = as_stats_summary(b, k);
        as_paired p = as_stats_paired(a, b, k);
        m->n = k;
        m->a_mean = sa.mean;
        m->a_sd = sa.sd;
        m->b_mean = sb.mean;
        m->b_sd = sb.sd;
        m->diff = p.mean_diff;
        m->ci_half = p.ci_half;
        m->significant = p.significant;
    }
    free(a);
    free(b);
    return k > 0;
}

size_t as_report_metrics(const as_report *r, as_rep_metric **out)
{
    *out = NULL;
    size_t *idx = malloc((r->nseeds ? r->nseeds : 1) * sizeof *idx);
    as_rep_metric *m = calloc(8 + AS_KIND_COUNT, sizeof *m);
    if (!idx || !m) {
        free(idx);
        free(m);
        return 0;
    }
    size_t np = as_report_pairs(r, idx), n = 0;
    static const struct {
        const char *key, *name;
        int unit;
        metric_fn fn;
    } fixed[] = {
        {"eval_accuracy", "eval accuracy (%)", AS_REP_PERCENT, m_acc},
        {"eval_loss", "eval loss", AS_REP_PLAIN, m_eval_loss},
        {"final_train_loss", "train loss (last 50 steps)", AS_REP_PLAIN, m_train_loss},
        {"saved_peak", "saved peak, all kinds", AS_REP_BYTES, m_saved},
        {"arena_peak", "arena peak", AS_REP_BYTES, m_arena},
        {"step_ms", "step time, median (ms)", AS_REP_MS, m_step},
        {"grad_cosine", "gradient cosine, mean", AS_REP_PLAIN, m_cos},
        {"grad_cosine_min", "gradient cosine, worst tensor", AS_REP_PLAIN, m_cos_min},
    };
    for (size_t f = 0; f < sizeof fixed / sizeof fixed[0]; f++) {
        if (!strcmp(fixed[f].key, "arena_peak")) {
            /* per-kind rows go between the saved total and the arena */
            for (int k = 0; k < AS_KIND_COUNT; k++) {
                bool held = false;
                for (size_t i = 0; i < np; i++)
                    held |= r->arm[0].runs[idx[i]].kind_raw_peak[k] > 0 ||
                            r->arm[1].runs[idx[i]].kind_raw_peak[k] > 0;
                if (!held)
                    continue;
                as_rep_metric *x = &m[n];
                x->key = as_kind_name(k);
                snprintf(x->name, sizeof x->name, "  saved peak, %s", as_kind_name(k));
                x->unit = AS_REP_BYTES;
                if (metric_fill(r, idx, np, m_kind, k, x))
                    n++;
            }
        }
        as_rep_metric *x = &m[n];
        x->key = fixed[f].key;
        snprintf(x->name, sizeof x->name, "%s", fixed[f].name);
        x->unit = fixed[f].unit;
        if (metric_fill(r, idx, np, fixed[f].fn, 0, x))
            n++;
    }
    free(idx);
    if (!n) {
        free(m);
        return 0;
    }
    *out = m;
    return n;
}

static const as_rep_metric *find_metric(const as_rep_metric *m, size_t n,
                                        const char *key)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(m[i].key, key))
            return &m[i];
    return NULL;
}

static const char *sig_word(const as_rep_metric *m)
{
    if (m->n < 2 || !isfinite(m->ci_half))
        return m->n < 2 ? "1 seed, no interval" : "no interval";
    return m->significant ? "significant" : "not significant";
}

/* Append printf text to buf at *len (truncating safely). */
static void cat(char *buf, size_t n, size_t *len, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void cat(char *buf, size_t n, size_t *len, const char *fmt, ...)
{
    if (*len >= n)
        return;
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(buf + *len, n - *len, fmt, ap);
    va_end(ap);
    if (w > 0)
        *len = *len + (size_t)w < n ? *len + (size_t)w : n - 1;
}

void as_report_verdict(const as_report *r, char *buf, size_t n)
{
    size_t len = 0;
    buf[0] = '\0';
    as_rep_metric *m;
    size_t nm = as_report_metrics(r, &m);
    if (r->partial)
        cat(buf, n, &len, "PARTIAL: ");
    if (!nm) {
        cat(buf, n, &len, "no complete pair of runs to compare");
        return;
    }
    /* Memory: the kind where the arms differ most. */
    const as_rep_metric *best = NULL;
    for (size_t i = 0; i < nm; i++) {
        if (m[i].unit != AS_REP_BYTES || !strcmp(m[i].key, "saved_peak") ||
            !strcmp(m[i].key, "arena_peak"))
            continue;
        if (!best || fabs(m[i].a_mean - m[i].b_mean) > fabs(best->a_mean - best->b_mean))
            best = &m[i];
    }
    const as_rep_metric *tot = find_metric(m, nm, "saved_peak");
    char hb[32];
    if (!best || best->a_mean == best->b_mean) {
        cat(buf, n, &len, "B keeps as much saved memory as A");
        if (tot)
            cat(buf, n, &len, " (%s)", as_cli_human_bytes(tot->a_mean, hb, sizeof hb));
    } else if (best->b_mean < best->a_mean) {
        if (best->b_mean > 0)
            cat(buf, n, &len, "B keeps %.1fx less %s memory", best->a_mean / best->b_mean,
                best->key);
        else
            cat(buf, n, &len, "B keeps no %s memory (A: %s)", best->key,
                as_cli_human_bytes(best->a_mean, hb, sizeof hb));
        if (tot && tot->b_mean > 0 && tot->b_mean < tot->a_mean)
            cat(buf, n, &len, " (all saved: %.2fx less)", tot->a_mean / tot->b_mean);
    } else {
        cat(buf, n, &len, "B keeps %.2fx more %s memory",
            best->a_mean > 0 ? best->b_mean / best->a_mean : INFINITY, best->key);
    }
    /* Quality: accuracy when the model has it, else the eval loss. */
    const as_rep_metric *q = find_metric(m, nm, "eval_accuracy");
    const char *qname = "accuracy", *qunit = " points";
    int prec = 2;
    if (!q) {
        q = find_metric(m, nm, "eval_loss");
        qname = "eval loss";
        qunit = "";
        prec = 4;
    }
    if (!q) {
        q = find_metric(m, nm, "final_train_loss");
        qname = "train loss";
        qunit = "";
        prec = 4;
    }
    if (q) {
        if (q->n >= 2 && isfinite(q->ci_half))
            cat(buf, n, &len, "; %s %+.*f +/- %.*f%s (%s)", qname, prec, q->diff, prec,
                q->ci_half, qunit, sig_word(q));
        else
            cat(buf, n, &len, "; %s %+.*f%s (%s)", qname, prec, q->diff, qunit, sig_word(q));
    }
    const as_rep_metric *t = find_metric(m, nm, "step_ms");
    if (t && t->a_mean > 0) {
        double pct = 100.0 * t->diff / t->a_mean;
        if (t->n >= 2 && isfinite(t->ci_half))
            cat(buf, n, &len, "; step time %+.0f%% +/- %.0f%% (%s)", pct,
                100.0 * t->ci_half / t->a_mean, sig_word(t));
        else
            cat(buf, n, &len, "; step time %+.0f%%", pct);
    }
    free(m);
}

/* ---- JSON --------------------------------------------------------------- */

static cJSON *num_array(const double *v, size_t n)
{
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; a && i < n; i++) {
        cJSON *x = isfinite(v[i]) ? cJSON_CreateNumber(v[i]) : cJSON_CreateNull();
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
    if (isfinite(v))
        cJSON_AddNumberToObject(o, k, v);
    else
        cJSON_AddNullToObject(o, k);
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
                                           m[i].unit == AS_REP_MS ? "ms" : "");
    }
    free(m);
    char v[512];
    as_report_verdict(r, v, sizeof v);
    cJSON_AddStringToObject(o, "verdict", v);
    return o;
}

/* ---- markdown ----------------------------------------------------------- */

/* A value in the metric's unit. Signed: with an explicit sign. */
static void fmt_val(char *buf, size_t n, double v, int unit, bool sign)
{
    if (!isfinite(v)) {
        snprintf(buf, n, "n/a");
        return;
    }
    if (unit == AS_REP_BYTES) {
        char hb[32];
        as_cli_human_bytes(fabs(v), hb, sizeof hb);
        snprintf(buf, n, "%s%s", v < 0 ? "-" : sign ? "+" : "", hb);
    } else if (unit == AS_REP_PERCENT || unit == AS_REP_MS) {
        snprintf(buf, n, sign ? "%+.2f" : "%.2f", v);
    } else {
        snprintf(buf, n, sign ? "%+.4f" : "%.4f", v);
    }
}

static void md_metric_row(FILE *f, const as_rep_metric *m)
{
    char a[48], asd[48], b[48], bsd[48], d[48], lo[48], hi[48];
    fmt_val(a, sizeof a, m->a_mean, m->unit, false);
    fmt_val(asd, sizeof asd, m->a_sd, m->unit, false);
    fmt_val(b, sizeof b, m->b_mean, m->unit, false);
    fmt_val(bsd, sizeof bsd, m->b_sd, m->unit, false);
    fmt_val(d, sizeof d, m->diff, m->unit, true);
    fmt_val(lo, sizeof lo, m->diff - m->ci_half, m->unit, true);
    fmt_val(hi, sizeof hi, m->diff + m->ci_half, m->unit, true);
    char ratio[32] = "";
    if (m->unit == AS_REP_BYTES && m->b_mean > 0 && m->a_mean > 0)
        snprintf(ratio, sizeof ratio, " (A/B %.2fx)", m->a_mean / m->b_mean);
    else if (m->unit == AS_REP_MS && m->a_mean > 0)
        snprintf(ratio, sizeof ratio, " (%+.1f%%)", 100.0 * m->diff / m->a_mean);
    fprintf(f, "| %s | %s ± %s | %s ± %s | %s%s | ", m->name, a, asd, b, bsd, d, ratio);
    if (m->n >= 2 && isfinite(m->ci_half))
        fprintf(f, "[%s, %s] | %s |\n", lo, hi, m->significant ? "yes" : "no");
    else
        fprintf(f, "n/a (1 seed) | n/a |\n");
}

static int write_md(const as_report *r, const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    size_t *idx = malloc((r->nseeds ? r->nseeds : 1) * sizeof *idx);
    size_t np = idx ? as_report_pairs(r, idx) : 0;
    free(idx);
    fprintf(f, "# A/B report: %s, %s preset%s%s\n\n", r->model, r->preset,
            r->options[0] ? ", " : "", r->options);
    if (r->partial)
        fprintf(f, "**PARTIAL REPORT** (%s): the statistics use only the seeds whose "
                   "both arms finished.\n\n", r->partial_reason);
    char v[512];
    as_report_verdict(r, v, sizeof v);
    fprintf(f, "**Verdict:** %s\n\n", v);
    fprintf(f, "- A: `%s`\n- B: `%s`\n", r->arm[0].spec, r->arm[1].spec);
    fprintf(f, "- seeds:");
    for (size_t i = 0; i < r->nseeds; i++)
        fprintf(f, " %llu", (unsigned long long)r->arm[0].runs[i].seed);
    fprintf(f, " (%zu pair%s in the statistics); %ld steps per run", np,
            np == 1 ? "" : "s", r->steps);
    if (r->check_every > 0)
        fprintf(f, "; gradient check every %ld steps", r->check_every);
    fprintf(f, "\n- started %s, wall time %.0f s, actstore %s\n\n", r->started, r->wall_s,
            as_version_string());

    fprintf(f, "## Paired comparison (B − A, 95%% confidence interval over seeds)\n\n"
               "| metric | A mean ± sd | B mean ± sd | B − A | 95%% CI | significant |\n"
               "|---|---|---|---|---|---|\n");
    as_rep_metric *m;
    size_t nm = as_report_metrics(r, &m);
    for (size_t i = 0; i < nm; i++)
        md_metric_row(f, &m[i]);
    free(m);
    fprintf(f, "\nA difference is significant when its interval excludes 0. Memory peaks are "
               "deterministic for a given model and policy, so their interval is usually "
               "zero-width; accuracy and time vary by seed and by machine load. "
               "See docs/ab-testing.md.\n\n");

    fprintf(f, "## Per run\n\n"
               "| arm | seed | steps | eval acc (%%) | eval loss | train loss | saved peak "
               "(raw) | arena peak | step ms | grad cos mean / worst |\n"
               "|---|---|---|---|---|---|---|---|---|---|\n");
    for (int a = 0; a < 2; a++)
        for (size_t i = 0; i < r->nseeds; i++) {
            const as_rep_run *run = &r->arm[a].runs[i];
            char s1[32], s2[32], s3[32];
            fprintf(f, "| %s | %llu | %ld%s | ", r->arm[a].label,
                    (unsigned long long)run->seed, run->steps_done,
                    run->finished ? "" : " (unfinished)");
            if (run->evaluated && isfinite(run->eval_accuracy))
                fprintf(f, "%.2f | ", 100.0 * run->eval_accuracy);
            else
                fprintf(f, "n/a | ");
            if (run->evaluated)
                fprintf(f, "%.4f | ", run->eval_loss);
            else
                fprintf(f, "n/a | ");
            fprintf(f, "%.4f | %s (%s) | %s | %.2f | ", as_report_final_loss(run),
                    as_cli_human_bytes((double)run->saved_stored_peak, s1, sizeof s1),
                    as_cli_human_bytes((double)run->saved_raw_peak, s2, sizeof s2),
                    as_cli_human_bytes((double)run->arena_peak, s3, sizeof s3),
                    as_report_step_ms_median(run));
            if (run->ncos)
                fprintf(f, "%.5f / %.5f |\n", cos_mean(run), cos_min(run));
            else
                fprintf(f, "n/a |\n");
        }
    fprintf(f, "\n## Plots\n\n"
               "![training loss](loss.svg)\n\n![memory per step](memory.svg)\n\n"
               "![saved memory per kind](kinds.svg)\n\n![gradient cosine](cosine.svg)\n");
    return fclose(f) == 0 ? 0 : -1;
}

/* ---- plots -------------------------------------------------------------- */

/* Legend name of an arm: "A: default=keep" (long specs shortened). */
static void arm_name(const as_report *r, int a, const char *what, char *buf, size_t n)
{
    const char *s = r->arm[a].spec;
    if (strlen(s) > 36)
        snprintf(buf, n, "%s%s: %.33s...", r->arm[a].label, what, s);
    else
        snprintf(buf, n, "%s%s: %s", r->arm[a].label, what, s);
}

static int plot_loss(const as_report *r, const size_t *idx, size_t np, const char *path)
{
    long n = 0;
    for (size_t i = 0; i < np; i++)
        for (int a = 0; a < 2; a++)
            if (r->arm[a].runs[idx[i]].steps_done > n)
                n = r->arm[a].runs[idx[i]].steps_done;
    long w = n / 40 < 1 ? 1 : n / 40 > 25 ? 25 : n / 40;
    double *x = calloc((size_t)(n ? n : 1), sizeof *x);
    double *y[2] = {calloc((size_t)(n ? n : 1), sizeof(double)),
                    calloc((size_t)(n ? n : 1), sizeof(double))};
    int rc = -1;
    char names[2][64];
    if (x && y[0] && y[1]) {
        for (long s = 0; s < n; s++) {
            x[s] = (double)(s + 1);
            for (int a = 0; a < 2; a++) {
                /* mean over seeds of the trailing moving average */
                double sum = 0;
                size_t cnt = 0;
                for (size_t i = 0; i < np; i++) {
                    const as_rep_run *run = &r->arm[a].runs[idx[i]];
                    if (s >= run->steps_done)
                        continue;
                    long lo = s - w + 1 < 0 ? 0 : s - w + 1;
                    double ms = 0;
                    for (long j = lo; j <= s; j++)
                        ms += run->loss[j];
                    sum += ms / (double)(s - lo + 1);
                    cnt++;
                }
                y[a][s] = cnt ? sum / (double)cnt : NAN;
            }
        }
        as_svg_series ser[2];
        for (int a = 0; a < 2; a++) {
            arm_name(r, a, "", names[a], sizeof names[a]);
            ser[a] = (as_svg_series){names[a], x, y[a], (size_t)n, a == 1};
        }
        char title[128];
        snprintf(title, sizeof title, "Training loss, %s (mean of %zu seed%s, moving average of %ld step%s)",
                 r->model, np, np == 1 ? "" : "s", w, w == 1 ? "" : "s");
        as_svg_axes ax = {title, "step", "cross-entropy loss (nats)", AS_SVG_PLAIN, false};
        rc = as_svg_line_chart(path, &ax, ser, 2);
    }
    free(x);
    free(y[0]);
    free(y[1]);
    return rc;
}

static int plot_memory(const as_report *r, const size_t *idx, size_t np, const char *path)
{
    as_svg_series ser[4];
    char names[4][64];
    double *x = NULL;
    long n = 0;
    size_t ns = 0;
    if (np) {
        for (int a = 0; a < 2; a++)
            if (r->arm[a].runs[idx[0]].steps_done > n)
                n = r->arm[a].runs[idx[0]].steps_done;
        x = calloc((size_t)(n ? n : 1), sizeof *x);
        if (!x)
            return -1;
        for (long s = 0; s < n; s++)
            x[s] = (double)(s + 1);
        for (int a = 0; a < 2; a++) {
            const as_rep_run *run = &r->arm[a].runs[idx[0]];
            arm_name(r, a, " saved", names[ns], sizeof names[ns]);
            ser[ns] = (as_svg_series){names[ns], x, run->mem_saved, (size_t)run->steps_done, false};
            ns++;
        }
        for (int a = 0; a < 2; a++) {
            const as_rep_run *run = &r->arm[a].runs[idx[0]];
            snprintf(names[ns], sizeof names[ns], "%s arena (all tags)", r->arm[a].label);
            ser[ns] = (as_svg_series){names[ns], x, run->mem_arena, (size_t)run->steps_done, true};
            ns++;
        }
    }
    char title[128];
    snprintf(title, sizeof title, "Memory per step, %s, seed %llu (peak within each step)",
             r->model, np ? (unsigned long long)r->arm[0].runs[idx[0]].seed : 0ULL);
    as_svg_axes ax = {title, "step", "peak bytes", AS_SVG_BYTES, true};
    int rc = as_svg_line_chart(path, &ax, ser, ns);
    free(x);
    return rc;
}

static int plot_kinds(const as_report *r, const size_t *idx, size_t np, const char *path)
{
    const char *cats[AS_KIND_COUNT];
    double vals[3 * AS_KIND_COUNT];
    int kinds[AS_KIND_COUNT];
    size_t nc = 0;
    for (int k = 0; k < AS_KIND_COUNT; k++) {
        bool held = false;
        for (size_t i = 0; i < np; i++)
            held |= r->arm[0].runs[idx[i]].kind_raw_peak[k] > 0 ||
                    r->arm[1].runs[idx[i]].kind_raw_peak[k] > 0;
        if (held) {
            kinds[nc] = k;
            cats[nc++] = as_kind_name(k);
        }
    }
    for (size_t c = 0; c < nc; c++) {
        double s[3] = {0, 0, 0};
        for (size_t i = 0; i < np; i++) {
            s[0] += (double)r->arm[0].runs[idx[i]].kind_stored_peak[kinds[c]];
            s[1] += (double)r->arm[1].runs[idx[i]].kind_stored_peak[kinds[c]];
            s[2] += (double)r->arm[0].runs[idx[i]].kind_raw_peak[kinds[c]];
        }
        for (int g = 0; g < 3; g++)
            vals[(size_t)g * nc + c] = np ? s[g] / (double)np : NAN;
    }
    char n0[64], n1[64];
    arm_name(r, 0, " stored", n0, sizeof n0);
    arm_name(r, 1, " stored", n1, sizeof n1);
    const char *groups[3] = {n0, n1, "raw (what keep holds)"};
    char title[128];
    snprintf(title, sizeof title, "Saved memory per kind, %s (peak, mean of %zu seed%s)",
             r->model, np, np == 1 ? "" : "s");
    as_svg_axes ax = {title, "kind of saved tensor", "peak bytes", AS_SVG_BYTES, true};
    return as_svg_bar_chart(path, &ax, cats, nc, groups, 3, vals);
}

static int plot_cosine(const as_report *r, const size_t *idx, size_t np, const char *path)
{
    size_t nc = 0;
    for (size_t i = 0; i < np; i++)
        for (int a = 0; a < 2; a++)
            if (r->arm[a].runs[idx[i]].ncos > nc)
                nc = r->arm[a].runs[idx[i]].ncos;
    double *x = calloc(nc ? nc : 1, sizeof *x);
    double *y[4] = {calloc(nc ? nc : 1, sizeof(double)), calloc(nc ? nc : 1, sizeof(double)),
                    calloc(nc ? nc : 1, sizeof(double)), calloc(nc ? nc : 1, sizeof(double))};
    int rc = -1;
    if (x && y[0] && y[1] && y[2] && y[3]) {
        for (size_t c = 0; c < nc; c++) {
            x[c] = NAN;
            for (int a = 0; a < 2; a++) {
                double so = 0, sm = 0;
                size_t cnt = 0;
                for (size_t i = 0; i < np; i++) {
                    const as_rep_run *run = &r->arm[a].runs[idx[i]];
                    if (c >= run->ncos)
                        continue;
                    x[c] = (double)run->cos[c].step + 1;
                    so += run->cos[c].overall;
                    sm += run->cos[c].min;
                    cnt++;
                }
                y[2 * a][c] = cnt ? so / (double)cnt : NAN;
                y[2 * a + 1][c] = cnt ? sm / (double)cnt : NAN;
            }
        }
        char names[4][64];
        as_svg_series ser[4];
        for (int a = 0; a < 2; a++) {
            arm_name(r, a, " overall", names[2 * a], sizeof names[2 * a]);
            snprintf(names[2 * a + 1], sizeof names[2 * a + 1], "%s worst tensor",
                     r->arm[a].label);
            ser[2 * a] = (as_svg_series){names[2 * a], x, y[2 * a], nc, false};
            ser[2 * a + 1] = (as_svg_series){names[2 * a + 1], x, y[2 * a + 1], nc, true};
        }
        char title[128];
        snprintf(title, sizeof title,
                 "Gradient cosine vs exact (keep) gradients, %s (mean of %zu seed%s)", r->model,
                 np, np == 1 ? "" : "s");
        as_svg_axes ax = {title, "step", "cosine similarity (1 = exact)", AS_SVG_PLAIN, false};
        rc = as_svg_line_chart(path, &ax, ser, 4);
    }
    free(x);
    for (int i = 0; i < 4; i++)
        free(y[i]);
    return rc;
}

/* ---- files -------------------------------------------------------------- */

int as_report_prepare_dir(const char *dir, char *err, size_t errlen)
{
    if (!dir || !*dir) {
        snprintf(err, errlen, "output folder: empty path");
        return -1;
    }
    char path[4096];
    if (strlen(dir) >= sizeof path - 32) {
        snprintf(err, errlen, "output folder %.64s...: path too long", dir);
        return -1;
    }
    /* mkdir -p */
    snprintf(path, sizeof path, "%s", dir);
    for (char *p = path + 1; ; p++) {
        if (*p == '/' || *p == '\0') {
            char c = *p;
            *p = '\0';
            if (mkdir(path, 0777) != 0 && errno != EEXIST) {
                snprintf(err, errlen, "output folder %s: cannot create %s: %s", dir, path,
                         strerror(errno));
                return -1;
            }
            *p = c;
            if (!c)
                break;
        }
    }
    struct stat st;
    if (stat(dir, &st) != 0) {
        snprintf(err, errlen, "output folder %s: %s", dir, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "output folder %s: exists and is not a directory", dir);
        return -1;
    }
    snprintf(path, sizeof path, "%s/.actstore-write-probe-%ld", dir, (long)getpid());
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        snprintf(err, errlen, "output folder %s is not writable: %s", dir, strerror(errno));
        return -1;
    }
    close(fd);
    unlink(path);
    return 0;
}

int as_report_write(const as_report *r, const char *dir, char *err, size_t errlen)
{
    char path[4200];
    int rc = 0;
    size_t *idx = malloc((r->nseeds ? r->nseeds : 1) * sizeof *idx);
    if (!idx) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    size_t np = as_report_pairs(r, idx);

    snprintf(path, sizeof path, "%s/report.json", dir);
    cJSON *j = as_report_json(r);
    char *txt = j ? cJSON_Print(j) : NULL;
    cJSON_Delete(j);
    FILE *f = txt ? fopen(path, "w") : NULL;
    if (!txt) {
        snprintf(err, errlen, "%s: out of memory", path);
        rc = -1;
    } else if (!f || fputs(txt, f) < 0 || fputc('\n', f) < 0 || fclose(f) != 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        if (f)
            fclose(f);
        rc = -1;
    }
    free(txt);

    static const char *files[] = {"report.md", "loss.svg", "memory.svg", "kinds.svg",
                                  "cosine.svg"};
    for (size_t i = 0; rc == 0 && i < sizeof files / sizeof files[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        int w = i == 0 ? write_md(r, path)
              : i == 1 ? plot_loss(r, idx, np, path)
              : i == 2 ? plot_memory(r, idx, np, path)
              : i == 3 ? plot_kinds(r, idx, np, path)
                       : plot_cosine(r, idx, np, path);
        if (w != 0) {
            snprintf(err, errlen, "%s: %s", path, errno ? strerror(errno) : "write failed");
            rc = -1;
        }
    }
    free(idx);
    return rc;
}

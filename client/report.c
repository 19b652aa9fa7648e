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
    as_store_plan_free(&run->plan);
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

double as_report_cos_mean(const as_rep_run *run)
{
    if (!run->ncos)
        return NAN;
    double s = 0;
    for (size_t i = 0; i < run->ncos; i++)
        s += run->cos[i].overall;
    return s / (double)run->ncos;
}

double as_report_cos_min(const as_rep_run *run)
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
    return as_report_cos_mean(r);
}
static double m_cos_min(const as_rep_run *r, int k)
{
    (void)k;
    return as_report_cos_min(r);
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
        {"grad_cosine", "gradient cosine, mean", AS_REP_COSINE, m_cos},
        {"grad_cosine_min", "gradient cosine, worst tensor", AS_REP_COSINE, m_cos_min},
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
    /* Memory, whole model first: every saved kind, then the arena. */
    const as_rep_metric *tot = find_metric(m, nm, "saved_peak");
    const as_rep_metric *arena = find_metric(m, nm, "arena_peak");
    char ha[32], hb[32];
    const char *sep = "";
    if (tot) {
        as_cli_human_bytes(tot->a_mean, ha, sizeof ha);
        as_cli_human_bytes(tot->b_mean, hb, sizeof hb);
        if (tot->a_mean == tot->b_mean)
            cat(buf, n, &len, "all saved: the same (%s)", ha);
        else if (tot->b_mean < tot->a_mean && tot->b_mean > 0)
            cat(buf, n, &len, "all saved: %.1fx less (%s -> %s)",
                tot->a_mean / tot->b_mean, ha, hb);
        else if (tot->b_mean < tot->a_mean)
            cat(buf, n, &len, "all saved: none kept (A: %s)", ha);
        else
            cat(buf, n, &len, "all saved: %.2fx more (%s -> %s)",
                tot->a_mean > 0 ? tot->b_mean / tot->a_mean : INFINITY, ha, hb);
        sep = "; ";
    }
    if (arena && arena->a_mean > 0 && arena->b_mean > 0) {
        as_cli_human_bytes(arena->b_mean, hb, sizeof hb);
        if (arena->b_mean == arena->a_mean)
            cat(buf, n, &len, "%sarena peak the same (%s)", sep, hb);
        else if (arena->b_mean < arena->a_mean)
            cat(buf, n, &len, "%sarena peak %.1fx less (%s)", sep,
                arena->a_mean / arena->b_mean, hb);
        else
            cat(buf, n, &len, "%sarena peak %.2fx more (%s)", sep,
                arena->b_mean / arena->a_mean, hb);
        sep = "; ";
    }
    /* The kind where the arms differ most, after the quality and time. */
    const as_rep_metric *best = NULL;
    for (size_t i = 0; i < nm; i++) {
        if (m[i].unit != AS_REP_BYTES || !strcmp(m[i].key, "saved_peak") ||
            !strcmp(m[i].key, "arena_peak"))
            continue;
        if (!best || fabs(m[i].a_mean - m[i].b_mean) > fabs(best->a_mean - best->b_mean))
            best = &m[i];
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
            cat(buf, n, &len, "%s%s %+.*f +/- %.*f%s (%s)", sep, qname, prec, q->diff,
                prec, q->ci_half, qunit, sig_word(q));
        else
            cat(buf, n, &len, "%s%s %+.*f%s (%s)", sep, qname, prec, q->diff, qunit,
                sig_word(q));
        sep = "; ";
    }
    const as_rep_metric *t = find_metric(m, nm, "step_ms");
    if (t && t->a_mean > 0) {
        double pct = 100.0 * t->diff / t->a_mean;
        if (t->n >= 2 && isfinite(t->ci_half))
            cat(buf, n, &len, "%sstep time %+.0f%% +/- %.0f%% (%s)", sep, pct,
                100.0 * t->ci_half / t->a_mean, sig_word(t));
        else
            cat(buf, n, &len, "%sstep time %+.0f%%", sep, pct);
        sep = "; ";
    }
    if (best && best->b_mean < best->a_mean) {
        if (best->b_mean > 0)
            cat(buf, n, &len, "%smost: %.1fx less %s", sep, best->a_mean / best->b_mean,
                best->key);
        else
            cat(buf, n, &len, "%smost: no %s kept", sep, best->key);
    } else if (best && best->b_mean > best->a_mean) {
        cat(buf, n, &len, "%smost: %.2fx more %s", sep,
            best->a_mean > 0 ? best->b_mean / best->a_mean : INFINITY, best->key);
    }
    free(m);
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
        int w = i == 0 ? as__report_write_md(r, path)
              : i == 1 ? as__report_plot_loss(r, idx, np, path)
              : i == 2 ? as__report_plot_memory(r, idx, np, path)
              : i == 3 ? as__report_plot_kinds(r, idx, np, path)
                       : as__report_plot_cosine(r, idx, np, path);
        if (w != 0) {
            snprintf(err, errlen, "%s: %s", path, errno ? strerror(errno) : "write failed");
            rc = -1;
        }
    }
    free(idx);
    return rc;
}

/*
 * The SVG plots of an A/B report (see report.h), drawn with svg.c: loss
 * curves (mean over seeds, trailing moving average), memory per step of
 * the first seed, saved memory per kind (bars), gradient cosine over steps.
 */
#include "report.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "svg.h"

/* Legend name of an arm: "A: default=keep" (long specs shortened). */
static void arm_name(const as_report *r, int a, const char *what, char *buf, size_t n)
{
    const char *s = r->arm[a].spec;
    if (strlen(s) > 36)
        snprintf(buf, n, "%s%s: %.33s...", r->arm[a].label, what, s);
    else
        snprintf(buf, n, "%s%s: %s", r->arm[a].label, what, s);
}

static size_t run_steps(const as_rep_run *run)
{
    return run->steps_done > 0 ? (size_t)run->steps_done : 0;
}

static size_t run_ncos(const as_rep_run *run)
{
    return run->ncos;
}

/* The largest count get() gives over the np chosen runs of both arms. */
static size_t runs_max(const as_report *r, const size_t *idx, size_t np,
                       size_t (*get)(const as_rep_run *))
{
    size_t m = 0;
    for (size_t i = 0; i < np; i++)
        for (int a = 0; a < 2; a++)
            if (get(&r->arm[a].runs[idx[i]]) > m)
                m = get(&r->arm[a].runs[idx[i]]);
    return m;
}

int as__report_plot_loss(const as_report *r, const size_t *idx, size_t np, const char *path)
{
    long n = (long)runs_max(r, idx, np, run_steps);
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
            ser[a] = (as_svg_series){names[a], x, y[a], (size_t)n, a == 1, a + 1};
        }
        char title[128];
        snprintf(title, sizeof title, "Training loss, %s (mean of %zu seed%s, moving average of %ld step%s)",
                 r->model, np, np == 1 ? "" : "s", w, w == 1 ? "" : "s");
        as_svg_axes ax = {title, "step", "cross-entropy loss (nats)", AS_SVG_PLAIN, false, false, false};
        rc = as_svg_line_chart(path, &ax, ser, 2);
    }
    free(x);
    free(y[0]);
    free(y[1]);
    return rc;
}

int as__report_plot_memory(const as_report *r, const size_t *idx, size_t np, const char *path)
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
            ser[ns] = (as_svg_series){names[ns], x, run->mem_saved, (size_t)run->steps_done,
                                      false, a + 1};
            ns++;
        }
        for (int a = 0; a < 2; a++) {
            const as_rep_run *run = &r->arm[a].runs[idx[0]];
            snprintf(names[ns], sizeof names[ns], "%s arena (all tags)", r->arm[a].label);
            ser[ns] = (as_svg_series){names[ns], x, run->mem_arena, (size_t)run->steps_done,
                                      true, a + 1};
            ns++;
        }
    }
    char title[128];
    snprintf(title, sizeof title, "Memory per step, %s, seed %llu (peak within each step)",
             r->model, np ? (unsigned long long)r->arm[0].runs[idx[0]].seed : 0ULL);
    as_svg_axes ax = {title, "step", "peak bytes", AS_SVG_BYTES, true, false, false};
    int rc = as_svg_line_chart(path, &ax, ser, ns);
    free(x);
    return rc;
}

int as__report_plot_kinds(const as_report *r, const size_t *idx, size_t np, const char *path)
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
    as_svg_axes ax = {title, "kind of saved tensor", "peak bytes", AS_SVG_BYTES, true, false, false};
    return as_svg_bar_chart(path, &ax, cats, nc, groups, 3, vals);
}

int as__report_plot_cosine(const as_report *r, const size_t *idx, size_t np, const char *path)
{
    size_t nc = runs_max(r, idx, np, run_ncos);
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
            ser[2 * a] = (as_svg_series){names[2 * a], x, y[2 * a], nc, false, a + 1};
            ser[2 * a + 1] = (as_svg_series){names[2 * a + 1], x, y[2 * a + 1], nc, true, a + 1};
        }
        char title[128];
        snprintf(title, sizeof title,
                 "Gradient cosine vs exact (keep) gradients, %s (mean of %zu seed%s)", r->model,
                 np, np == 1 ? "" : "s");
        as_svg_axes ax = {title, "step", "cosine similarity (1 = exact)", AS_SVG_PLAIN, false, false, false};
        rc = as_svg_line_chart(path, &ax, ser, 4);
    }
    free(x);
    for (int i = 0; i < 4; i++)
        free(y[i]);
    return rc;
}


/*
 * report.md of an A/B report (see report.h): the verdict, the paired table
 * (mean +/- sd per arm, B - A with its 95% interval), one row per run.
 */
#include "report.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "actstore/common.h"
#include "cli.h"

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
    } else if (unit == AS_REP_COSINE) {
        /* cosines sit next to 1: six places, tiny differences in e-notation */
        if (sign && v != 0 && fabs(v) < 1e-5)
            snprintf(buf, n, "%+.2e", v);
        else
            snprintf(buf, n, sign ? "%+.6f" : "%.6f", v);
    } else if (sign && v != 0 && fabs(v) < 1e-4) {
        snprintf(buf, n, "%+.2e", v);
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
    if (m->n >= 2)
        fprintf(f, "| %s | %s ± %s | %s ± %s | %s%s | ", m->name, a, asd, b, bsd, d, ratio);
    else /* one seed: no spread to show */
        fprintf(f, "| %s | %s | %s | %s%s | ", m->name, a, b, d, ratio);
    if (m->n >= 2 && isfinite(m->ci_half))
        fprintf(f, "[%s, %s] | %s |\n", lo, hi, m->significant ? "yes" : "no");
    else
        fprintf(f, "n/a (1 seed) | n/a |\n");
}

int as__report_write_md(const as_report *r, const char *path)
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
    char v[1024];
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
                fprintf(f, "%.5f / %.5f |\n", as_report_cos_mean(run), as_report_cos_min(run));
            else
                fprintf(f, "n/a |\n");
        }
    /* auto's plan, for the first run of each arm that has one */
    for (int a = 0; a < 2; a++) {
        const as_rep_run *run = NULL;
        for (size_t i = 0; i < r->nseeds && !run; i++)
            if (r->arm[a].runs[i].plan.active)
                run = &r->arm[a].runs[i];
        if (!run)
            continue;
        const as_store_plan *p = &run->plan;
        char b1[32], b2[32], b3[32], b4[32];
        fprintf(f, "\n## Arm %s: auto's plan (seed %llu, step %llu)\n\n"
                   "Budget %s; keep %s per step, planned %s, smallest reachable %s "
                   "(docs/policies.md, \"auto\").\n\n"
                   "| layer | kind | policy | raw | stored | rel. error | cosine |\n"
                   "|---|---|---|---|---|---|---|\n", r->arm[a].label,
                (unsigned long long)run->seed, (unsigned long long)p->step,
                run->budget ? as_cli_human_bytes((double)run->budget, b1, sizeof b1) : "none",
                as_cli_human_bytes((double)p->keep_bytes, b2, sizeof b2),
                as_cli_human_bytes((double)p->planned_bytes, b3, sizeof b3),
                as_cli_human_bytes((double)p->min_bytes, b4, sizeof b4));
        for (size_t i = 0; i < p->n; i++) {
            const as_store_plan_entry *e = &p->entries[i];
            fprintf(f, "| %s | %s | %s | %s | %s | %.2e | %.5f |\n", e->layer,
                    as_kind_name(e->kind), e->policy,
                    as_cli_human_bytes((double)e->raw_bytes, b2, sizeof b2),
                    as_cli_human_bytes((double)e->stored_bytes, b3, sizeof b3),
                    e->rel_error, e->cosine);
        }
    }
    fprintf(f, "\n## Plots\n\n"
               "![training loss](loss.svg)\n\n![memory per step](memory.svg)\n\n"
               "![saved memory per kind](kinds.svg)\n\n![gradient cosine](cosine.svg)\n");
    return fclose(f) == 0 ? 0 : -1;
}


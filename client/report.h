/*
 * A/B reports: what `actstore ab` measured, per arm and per seed, and the
 * files written from it (report.json, report.md, SVG plots). Internal to
 * client/.
 *
 * The report is filled while the runs go (one as_rep_run per arm and seed,
 * steps pushed one at a time) and can be written at any moment: a report
 * written before every run finished is marked partial, and its paired
 * statistics use only the seeds whose both arms finished (when none did,
 * the pair in progress, without evaluation figures).
 *
 * Ownership: as_report owns every array it points to (plain malloc); free
 * with as_report_free(). Not thread-safe: one thread fills and writes it.
 */
#ifndef AS_CLIENT_REPORT_H
#define AS_CLIENT_REPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "actstore/store.h"

#define AS_REPORT_FORMAT  "actstore.ab-report"
#define AS_REPORT_VERSION 1

/* One gradient check: cosine between the arm's gradients and the exact
 * (keep) gradients of the same weights and batch. */
typedef struct as_rep_cos {
    long    step;           /* 0-based step whose gradients were compared */
    double  overall;        /* all parameters as one vector */
    double  min;            /* smallest per-tensor cosine */
    double *per_tensor;     /* ntensors entries (as_report.tensor_names) */
} as_rep_cos;

/* One arm, one seed. */
typedef struct as_rep_run {
    uint64_t seed;
    long     steps_done;
    double  *loss;          /* per step: training loss (steps_done) */
    double  *mem_saved;     /* per step: peak bytes held by the store */
    double  *mem_arena;     /* per step: peak bytes live in the arena */
    double  *step_ms;       /* per step: wall time (ms) */
    size_t   cap;
    bool     finished;      /* every planned step ran */
    bool     evaluated;
    double   eval_accuracy; /* fraction 0..1; NAN when the model has none */
    double   eval_loss;     /* NAN when not evaluated */
    uint64_t saved_stored_peak, saved_raw_peak, arena_peak;
    uint64_t kind_stored_peak[AS_KIND_COUNT], kind_raw_peak[AS_KIND_COUNT];
    uint64_t fallbacks;
    uint64_t budget;        /* saved-bytes budget of the run, 0 = none */
    as_store_plan plan;     /* auto's plan at the end (plan.active) */
    size_t   ncos, cos_cap;
    as_rep_cos *cos;
} as_rep_run;

typedef struct as_rep_arm {
    char        label[4];   /* "A", "B" */
    char       *spec;       /* policy spec as given */
    as_rep_run *runs;       /* nseeds entries */
} as_rep_arm;

typedef struct as_report {
    char      model[16], preset[16];
    char      options[128]; /* e.g. "act=leaky" (free text, may be empty) */
    long      steps;        /* planned per run */
    long      check_every;  /* 0 = no gradient checks */
    size_t    nseeds;
    as_rep_arm arm[2];
    size_t    ntensors;
    char    **tensor_names;
    bool      partial;
    char      partial_reason[96];
    double    wall_s;       /* whole comparison */
    char      started[32];  /* UTC, ISO 8601 */
    /* ab --shard I/N: this report holds the seeds seed0 + i, i < seeds_total,
     * with i % nshards == shard - 1 (nshards 0: not a shard) */
    unsigned  shard, nshards;
    uint64_t  seed0;
    size_t    seeds_total;
} as_report;

/* Set up an empty report for nseeds seeds (seeds[i] for both arms).
 * Returns 0 or AS_ENOMEM (the report is then freed). */
int as_report_init(as_report *r, const char *model, const char *preset,
                   const char *spec_a, const char *spec_b,
                   const uint64_t *seeds, size_t nseeds, long steps,
                   long check_every);
void as_report_free(as_report *r);

/* Name the parameter tensors of the gradient checks (copied). */
int as_report_set_tensors(as_report *r, const char *const *names, size_t n);

/* Append one step's figures to a run. Returns 0 or AS_ENOMEM. */
int as_report_push_step(as_rep_run *run, double loss, double mem_saved,
                        double mem_arena, double step_ms);
/* Append one gradient check (per_tensor: ntensors cosines, copied). */
int as_report_push_cos(as_report *r, as_rep_run *run, long step,
                       double overall, const double *per_tensor);

/* ---- derived figures ---------------------------------------------------- */

/* Mean of the last min(50, steps_done) training losses; NAN when none. */
double as_report_final_loss(const as_rep_run *run);
/* Median per-step time (ms); NAN when no steps. */
double as_report_step_ms_median(const as_rep_run *run);

/* Paired comparison of one metric across seeds. */
typedef struct as_rep_metric {
    const char *key;        /* "eval_accuracy", "saved_peak.softmax_output" */
    char        name[48];   /* for the table */
    int         unit;       /* as_rep_unit */
    size_t      n;          /* pairs used */
    double      a_mean, a_sd, b_mean, b_sd;
    double      diff, ci_half;  /* B - A; ci_half NAN when n < 2 */
    bool        significant;
} as_rep_metric;

enum as_rep_unit { AS_REP_PLAIN = 0, AS_REP_PERCENT, AS_REP_BYTES, AS_REP_MS,
                   AS_REP_COSINE };

/* The seeds the statistics use: indices i where both arms finished (or,
 * when none did, the first pair with steps). Returns how many, into idx
 * (nseeds entries). */
size_t as_report_pairs(const as_report *r, size_t *idx);

/* Compute every metric of the table (eval accuracy / loss, final train
 * loss, saved peak total and per kind held by either arm, arena peak, step
 * time, gradient cosine). *out is malloc'ed; returns the count, or 0 with
 * *out NULL on allocation failure. */
size_t as_report_metrics(const as_report *r, as_rep_metric **out);

/* The verdict line ("B keeps 6.1x less softmax_output memory; accuracy
 * -0.10 +/- 0.30 points (not significant); step time +4%"). */
void as_report_verdict(const as_report *r, char *buf, size_t n);

/* Mean over checks of the overall cosine / smallest per-tensor cosine of
 * a run; NAN without checks. */
double as_report_cos_mean(const as_rep_run *run);
double as_report_cos_min(const as_rep_run *run);

/* ---- reading and merging (report_merge.c) -------------------------------- */

/* Rebuild a report from its report.json (as written by as_report_json:
 * the same numbers to the bit). Returns 0, or AS_EFORMAT / AS_ENOMEM with
 * err set (r is then empty). */
int as_report_from_json(const cJSON *j, as_report *r, char *err, size_t errlen);
/* The same from a file; AS_EIO when it cannot be read (err names it). */
int as_report_read(const char *path, as_report *r, char *err, size_t errlen);

/* Merge the reports of the shards of one comparison into *out, the report
 * one run of every seed gives: every part must come from ab --shard I/N
 * of the same model, preset, options, specs, steps, checks, seeds and
 * shard count, and together hold each seed exactly once (else AS_EINVAL
 * naming the part, or the missing seed and its shard). The runs move from
 * parts into *out (parts stay to be freed). wall_s is the shards' sum,
 * started the earliest; a partial part makes the merge partial. */
int as_report_merge(as_report *parts, size_t n, as_report *out, char *err, size_t errlen);

/* ---- files -------------------------------------------------------------- */

/* The report as JSON (caller frees with cJSON_Delete); NULL on ENOMEM. */
cJSON *as_report_json(const as_report *r);

/* Make sure dir exists (created, with parents) and is writable (a probe
 * file is created and removed). Returns 0, or -1 with a message naming the
 * directory and the system error in err. */
int as_report_prepare_dir(const char *dir, char *err, size_t errlen);

/* Write report.json, report.md, loss.svg, memory.svg, kinds.svg and
 * cosine.svg into dir. Returns 0, or -1 with a message naming the file in
 * err. */
int as_report_write(const as_report *r, const char *dir, char *err,
                    size_t errlen);

/* Internal to report*.c: the markdown file and the plots of the pairs
 * idx[0..np) (as_report_pairs). Return 0 or -1 with errno. */
int as__report_write_md(const as_report *r, const char *path);
int as__report_plot_loss(const as_report *r, const size_t *idx, size_t np, const char *path);
int as__report_plot_memory(const as_report *r, const size_t *idx, size_t np, const char *path);
int as__report_plot_kinds(const as_report *r, const size_t *idx, size_t np, const char *path);
int as__report_plot_cosine(const as_report *r, const size_t *idx, size_t np, const char *path);

#endif

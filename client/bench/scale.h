/*
 * actstore bench scale: shared pieces of scale.c (options, sweep, report),
 * scale_run.c (one measured configuration, in a child process) and
 * scale_fit.c (the largest context / batch under an arena budget).
 * Internal to client/bench/.
 */
#ifndef AS_CLIENT_BENCH_SCALE_H
#define AS_CLIENT_BENCH_SCALE_H

#include <stdbool.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "actstore/alloc.h"
#include "actstore/store.h"

#define SC_MAXSTEPS 8
#define SC_MAXPOL   8

/* One policy of the comparison: a label for tables and plots, the spec,
 * and auto's budget as keep's saved bytes / ratio (0 = no budget). */
typedef struct sc_policy {
    const char *label;
    const char *spec;
    double      ratio;
} sc_policy;

/* One configuration to measure: the lm built from preset `preset` with
 * context T, width C (heads C / 16, head size 16) and batch B. */
typedef struct sc_cfg {
    const char *preset;        /* base preset of the lm ("small", "long") */
    int         T, C, B;
    sc_policy   pol;
    uint64_t    arena_budget;  /* arena limit from the first training step
                                  (0 = none) */
    int         warmup;        /* steps before the measured ones */
    int         steps;         /* measured steps, 1..SC_MAXSTEPS */
} sc_cfg;

/* What one configuration did: peaks are the maxima over the measured
 * steps (the store and the arena reset theirs at each step begin), except
 * fit_peak: the arena peak over every training step, warm-up included. */
typedef struct sc_res {
    int      rc;               /* 0, or the AS_E* code of the failure */
    char     err[240];         /* the failure's message */
    uint64_t saved_stored, saved_raw;
    uint64_t kind_stored[AS_KIND_COUNT], kind_raw[AS_KIND_COUNT];
    uint64_t arena_peak, fit_peak;
    uint64_t tag_peak[AS_TAG_FIXED_COUNT];
    uint64_t rss_peak;         /* the child process's peak RSS */
    uint64_t saved_budget;     /* auto's budget (0 = none) */
    double   cpu_ms[SC_MAXSTEPS];   /* thread CPU time per measured step */
    int      nsteps;
    double   loss;             /* of the last step */
} sc_res;

/* Measure c in this process. Returns 0 with r filled, or r->rc with the
 * message in r->err (a step over the arena budget gives AS_EBUDGET). */
int sc_measure(const sc_cfg *c, sc_res *r);

/* The same in a fresh child process (fork), so that its peak RSS and its
 * allocations are its own and a crash is reported, not shared. */
int sc_measure_isolated(const sc_cfg *c, sc_res *r);

/* Did r fail because the configuration does not fit its arena budget? */
bool sc_over_budget(const sc_res *r);

/* Least-squares slope of log(y) against log(x) over the n points with
 * finite, positive x and y; NAN with fewer than 2 such points. */
double sc_exponent(const double *x, const double *y, int n);

/* Fit search (scale_fit.c): for each policy, the longest context at batch
 * base->B (axes & 1) and the largest batch at context base->T (axes & 2)
 * whose training steps stay within `budget` arena bytes. Prints a table;
 * adds "fit" to root. Returns 0 or -1 (a probe failed for another reason
 * than the budget: message on stderr). */
int sc_fit(const sc_cfg *base, const sc_policy *pols, int npol, uint64_t budget,
           int max_T, int max_B, unsigned axes, bool verbose, cJSON *root);

#endif

/*
 * `auto`: the budget planner (internal). A rule `KIND=auto` or
 * `default=auto` hands the matching tensors to a per-store planner that
 * picks, per (layer, kind), one of the candidates of candidates.def so that
 * the store's saved bytes stay within its budget (as_store_set_budget) at
 * the least total weighted error (docs/policies.md, "auto").
 *
 * The store calls in at five points: the save of a tensor under auto
 * (as__auto_save: measure on probe steps, then encode under the plan), every
 * other save while a planner exists (as__auto_note: the bytes auto cannot
 * choose), step begin / end (probe schedule, measurements, re-planning) and
 * store destruction. Thread-safety: one planner mutex, never held while a
 * policy encodes or decodes.
 */
#ifndef AS_STORE_POLICIES_AUTO_H
#define AS_STORE_POLICIES_AUTO_H

#include "store/store_internal.h"

extern const as_policy_ops as_policy_auto;

/* Default input_weight (measured: docs/benchmarks.md, "Whole model"). */
#define AUTO_INPUT_WEIGHT 1.0

/* Parsed `auto[:period[:time_weight[:input_weight[:derive]]]]`. */
typedef struct as_auto_params {
    uint32_t period;        /* steps between probe steps, 0 = first only */
    double   time_weight;   /* error units per step time of codec work */
    double   input_weight;  /* extra weight of an error that reaches the
                               input gradient (docs/policies.md, auto) */
    bool     derive;        /* offer recompute for row-wise derivations */
} as_auto_params;

/* Save t (a new item) under the plan for its (layer, kind); on a probe
 * step measure every candidate on it first. Same contract as the store's
 * own encode (out: a new rep, refs 1). AS_EBUDGET when not even the most
 * compact candidate fits: the last error names the smallest budget auto
 * can reach. */
int as__auto_save(as_store *s, as_item *it, as_handle h, as_groups g,
                  const as_polref *ref, as_rules *rules,
                  const as_save_info *info, const as_tensor *t,
                  as_block *adopted, bool *taken, as_rep **spare,
                  as_rep **out);

/* Row saves under auto (save_rows.c). begin, at the first block: measure
 * the candidates on it on a probe step, and name the candidates to try in
 * order (the plan's choice, then the most compact); block: measure a later
 * block (probe steps); end: add the save's figures to its group (ok
 * false: abandoned, nothing added) and free ar; budget_error: the message
 * when the most compact candidate does not fit either. */
typedef struct as_auto_rows as_auto_rows;
int as__auto_rows_begin(as_store *s, as_item *it, as_handle h, as_groups g,
                        const as_polref *ref, const as_save_info *info,
                        const as_tensor *blk, as_auto_rows **out,
                        const as_polref *tries[2], int *ntries);
void as__auto_rows_block(as_store *s, as_auto_rows *ar, as_handle h,
                         as_groups g, const as_save_info *info,
                         const as_tensor *blk);
void as__auto_rows_end(as_store *s, as_auto_rows *ar, uint64_t raw, bool ok);
void as__auto_rows_budget_error(as_store *s, as_auto_rows *ar,
                                const as_save_info *info);

/* A save that auto did not plan (planned false) or did (true, no-op);
 * creates the planner when the rules name auto, so the first step counts
 * every fixed tensor too. */
void as__auto_note(as_store *s, const as_rep *r, size_t raw, bool planned);

void as__auto_step_begin(as_store *s);
void as__auto_step_end(as_store *s);
void as__auto_destroy(as_store *s);

/* A backward consumer read a rep (as_store_report_grad): its groups g and
 * auto's group id + 1 that planned it (0: look up g's layer and kind). */
void as__auto_grad(as_store *s, const as_groups *g, uint32_t group);

/* Budget change: AS_EBUDGET (message set) when a measured step shows it
 * cannot be met; otherwise re-plans at once. */
int as__auto_budget(as_store *s, uint64_t bytes);

#endif

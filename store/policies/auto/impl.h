/*
 * Internals of the auto planner shared by its files (planner.c: candidates,
 * groups and the store's entry points; measure.c: the trials; decide.c:
 * the knapsack). See planner.c for the method. Not installed.
 */
#ifndef AS_STORE_POLICIES_AUTO_IMPL_H
#define AS_STORE_POLICIES_AUTO_IMPL_H

#include "store/policies/auto/auto.h"

#define AUTO_NCAND_MAX 24
#define AUTO_UNITS 4096
/* On the largest bytes seen of a values-dependent candidate: a save that
 * grows past the plan falls back to its group's most compact form anyway. */
#define AUTO_MARGIN 1.01

typedef struct cand {
    const char          *spec;
    uint32_t             kinds;
    bool                 variable;
    as_polref            ref;   /* params owned by the planner */
} cand;

/* Sums over the tensors of one group and one candidate. */
typedef struct meas {
    double   bytes, ns, err2, norm2, dot, hat2;
    uint32_t n;
    bool     bad;        /* failed, or non-finite where the input is finite */
} meas;

typedef struct agroup {
    uint16_t layer;
    int      kind;
    uint32_t items_step, items;   /* tensors this step / last step */
    uint64_t raw_step, raw;
    bool     probed_step, measured;
    meas     acc[AUTO_NCAND_MAX], m[AUTO_NCAND_MAX];
    double   bmax[AUTO_NCAND_MAX];  /* largest bytes of a probe step */
    double   weight;              /* sensitivity (decide.c) */
    uint32_t greports_step;       /* as_store_report_grad calls this step */
    double   consumers;           /* reports per tensor: backward readers */
    uint32_t id;                  /* index in as_auto.g */
    int      choice;              /* candidate index, -1 = none yet */
} agroup;

typedef struct as_auto {
    pthread_mutex_t mu;
    size_t   nc;
    cand     c[AUTO_NCAND_MAX];   /* c[0] is keep */
    agroup **g;
    size_t   ng, gcap;
    int32_t *idx;                 /* (layer, kind) -> group + 1 */
    uint32_t period;
    double   time_weight, input_weight;
    bool     probe_step, any_save;
    uint64_t steps, last_probe;
    uint64_t fixed_step, fixed, fixed_raw_step, fixed_raw;
    uint64_t t0, step_ns, trial_ns_step;   /* trials leave step_ns */
    uint64_t planned_for;         /* budget of the current plan */
    bool     need_plan, measured, feasible;
    uint64_t planned_bytes, min_bytes, keep_bytes, plan_step;
    uint64_t probes, replans;
} as_auto;

/* measure.c: add the error of hat against t (or of their derivatives, for
 * activations) to *m; encode and decode t under c as a workspace-only
 * trial and add its bytes, time and error to *m. */
void as__auto_compare(const as_save_info *info, const as_tensor *t,
                      const void *hat, meas *m);
void as__auto_trial(as_store *s, as_item *it, as_handle h, as_groups g,
                    const cand *c, const as_save_info *info,
                    const as_tensor *t, const char *layer, meas *m);

/* decide.c: figures of a measurement, and the plan (under pl->mu). */
double as__auto_rel_err(const meas *m);
double as__auto_cosine(const meas *m);
bool as__auto_usable(const agroup *g, size_t c);
void as__auto_plan(as_auto *pl, uint64_t budget, uint64_t step);

#endif

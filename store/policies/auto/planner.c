/*
 * The `auto` planner: measure candidates on the model's own tensors, solve
 * a multiple-choice knapsack, store every tensor under its (layer, kind)'s
 * choice within the saved-bytes budget.
 *
 * Measuring. On a probe step (the first two steps, then every `period` steps,
 * and the first save of a (layer, kind) never seen) each tensor under auto
 * is encoded and decoded by every applicable candidate while the store
 * still holds the original: stored bytes (exact, what the format
 * allocates), encode + decode time, and the reconstruction error
 * (||x^ - x||^2, ||x||^2, <x, x^>, summed over the step's tensors of the
 * group). The trials allocate workspace, never stored bytes, so probing
 * cannot push the saved peak. The tensor is then stored as on any step.
 *
 * Deciding. Cost of candidate c for group g:
 *     (w_g * rel_err(g, c))^2 + time_weight * time(g, c) / step_time
 * with w_g = sqrt(1 + input_weight) where the group's error reaches the
 * input gradient (decide.c), else 1. Squared: the
 * codecs' errors are independent across tensors (stochastic rounding), so
 * their contributions to the gradient error add as variances. Minimize the
 * summed cost subject to sum of stored bytes (plus bytes of tensors under
 * fixed rules) <= budget: a multiple-choice knapsack solved by dynamic
 * programming on the budget cut into AUTO_UNITS units (each candidate's
 * bytes rounded up, so the plan never overshoots; values-dependent codecs
 * are charged the largest bytes seen plus a margin; what the rounding
 * leaves is spent greedily in exact bytes). time_weight is 0 by default,
 * so the plan depends on the data and seed only. Exact candidates (keep,
 * invert) cost nothing then and win wherever they fit. Re-planned after
 * every probe step, when the budget changes and when a new group appears.
 *
 * Storing. Before any plan (first step) a tensor goes to its most compact
 * measured candidate when there is a budget or one is pending (keep
 * otherwise). A save that the budget refuses tries the most compact
 * candidate; if that does not fit either the save fails with the smallest
 * budget auto can reach.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "allocator/fault.h"
#include "store/policies/auto/impl.h"
#include "util/clock.h"

/* ---- candidates and groups ------------------------------------------------ */

static void add_cand(as_auto *pl, const char *spec, uint32_t kinds,
                     bool variable)
{
    size_t nlen = strcspn(spec, ":");
    const as_policy_ops *ops = as_policy_find(spec, nlen);
    if (!ops || pl->nc == AUTO_NCAND_MAX)
        return;   /* not compiled in */
    const char *args = spec[nlen] ? spec + nlen + 1 : "";
    void *params = NULL;
    char err[96];
    size_t off = 0;
    if (ops->parse(args, strlen(args), &params, err, sizeof err, &off) < 0)
        return;
    cand *c = &pl->c[pl->nc++];
    c->spec = spec;
    c->kinds = kinds;
    c->variable = variable;
    c->ref.ops = ops;
    c->ref.params = params;
    c->ref.text = spec;   /* the candidate table's static string */
}

static as_auto *planner_new(as_store *s)
{
    as_auto *pl = as__scalloc(s, 1, sizeof *pl);
    int32_t *idx = as__scalloc(s, (size_t)AS_LAYER_MAX * AS_KIND_COUNT, sizeof *idx);
    if (!pl || !idx) {
        free(pl);
        free(idx);
        return NULL;
    }
    pthread_mutex_init(&pl->mu, NULL);
    pl->idx = idx;
    add_cand(pl, "keep", 0, false);
#define AS_AUTO_CANDIDATE(spec, kinds, variable) add_cand(pl, spec, kinds, variable);
#include "store/policies/auto/candidates.def"
#undef AS_AUTO_CANDIDATE
    pl->probe_step = true;
    pl->t0 = as_clock_wall_ns();
    pl->feasible = true;
    return pl;
}

static void planner_free(as_auto *pl)
{
    for (size_t i = 0; i < pl->nc; i++)
        if (pl->c[i].ref.ops->free_params)
            pl->c[i].ref.ops->free_params(pl->c[i].ref.params);
    for (size_t i = 0; i < pl->ng; i++)
        free(pl->g[i]);
    free(pl->g);
    free(pl->idx);
    pthread_mutex_destroy(&pl->mu);
    free(pl);
}

static as_auto *planner_get(as_store *s)
{
    as_auto *pl = atomic_load_explicit(&s->planner, memory_order_acquire);
    if (pl)
        return pl;
    as_auto *fresh = planner_new(s);
    if (!fresh)
        return NULL;
    if (atomic_compare_exchange_strong(&s->planner, &pl, fresh))
        return fresh;
    planner_free(fresh);   /* another save made one first */
    return pl;
}

void as__auto_destroy(as_store *s)
{
    as_auto *pl = atomic_exchange(&s->planner, NULL);
    if (pl)
        planner_free(pl);
}

/* Under mu. NULL when out of memory. */
static agroup *group_of(as_auto *pl, uint16_t layer, int kind)
{
    size_t k = (size_t)layer * AS_KIND_COUNT + (size_t)kind;
    if (pl->idx[k])
        return pl->g[pl->idx[k] - 1];
    if (pl->ng == pl->gcap) {
        size_t cap = pl->gcap ? 2 * pl->gcap : 64;
        agroup **ng = as__frealloc(pl->g, cap * sizeof *ng);
        if (!ng)
            return NULL;
        pl->g = ng;
        pl->gcap = cap;
    }
    agroup *g = as__fcalloc(1, sizeof *g);
    if (!g)
        return NULL;
    g->layer = layer;
    g->kind = kind;
    g->choice = -1;
    g->weight = 1;
    g->id = (uint32_t)pl->ng;
    pl->g[pl->ng++] = g;
    pl->idx[k] = (int32_t)pl->ng;
    pl->need_plan = true;
    return g;
}

static bool offered(const cand *c, const as_save_info *info,
                    const as_tensor *t)
{
    if (c->kinds && !(c->kinds & (1u << info->kind)))
        return false;
    if (c->ref.ops->kinds && !(c->ref.ops->kinds & (1u << info->kind)))
        return false;
    char why[96];
    return !c->ref.ops->applies ||
           c->ref.ops->applies(c->ref.params, info, t, why, sizeof why) == 0;
}

/* The description a candidate sees: the recompute candidate the save's
 * own, when it declares a row-wise derivation (else NULL: not offered);
 * every other candidate the save without its derivation. */
static const as_save_info *cand_info(const cand *c, const as_save_info *derived,
                                     const as_save_info *plain)
{
    if (c->ref.ops != &as_policy_recompute)
        return plain;
    return derived->recompute && derived->recompute_rows ? derived : NULL;
}

/* Under mu: add one tensor's trials to its group's sums for the step. */
static void fold(as_auto *pl, agroup *grp, const bool *ok, const meas *mt)
{
    for (size_t c = 0; c < pl->nc; c++) {
        meas *a = &grp->acc[c];
        a->bytes += mt[c].bytes;
        a->ns += mt[c].ns;
        a->err2 += mt[c].err2;
        a->norm2 += mt[c].norm2;
        a->dot += mt[c].dot;
        a->hat2 += mt[c].hat2;
        a->n += mt[c].n;
        a->bad |= mt[c].bad || (ok[c] && !mt[c].n);
    }
    grp->probed_step = true;
}

/* Under mu: what to store a tensor under: the plan's choice (first); before
 * a plan, the most compact measured candidate (from this tensor's trials
 * mt on a probe step, else the group's) under a budget, keep without one.
 * compact: the most compact, tried when the budget refuses first. */
static void pick(const as_auto *pl, const agroup *grp, const bool *ok,
                 const meas *mt, uint64_t budget, int *first, int *compact)
{
    int f = grp->choice >= 0 && ok[grp->choice] ? grp->choice : -1;
    int k = -1;
    const meas *src = mt ? mt : grp->measured ? grp->m : NULL;
    for (size_t c = 0; src && c < pl->nc; c++) {
        if (!ok[c] || !src[c].n || src[c].bad)
            continue;
        if (k < 0 || src[c].bytes < src[k].bytes)
            k = (int)c;
    }
    if (f < 0)
        f = budget && k >= 0 ? k : 0;
    *first = f;
    *compact = k < 0 ? 0 : k;
}

/* What pick() takes for the budget: nonzero (compact before a plan) while
 * a budget is pending too. */
static uint64_t compact_first(as_store *s)
{
    uint64_t b = atomic_load(&s->saved_budget);
    return b ? b : atomic_load(&s->budget_pending) ? UINT64_MAX : 0;
}

/* Bytes of one tensor in its most compact candidate, for the budget's
 * message: from this tensor's trials, else the group's last measure. */
static uint64_t compact_need(as_auto *pl, const agroup *grp, const meas *mt,
                             int compact)
{
    if (mt)
        return (uint64_t)mt[compact].bytes;
    double need = 0;
    pthread_mutex_lock(&pl->mu);
    if (grp->measured && grp->items && grp->m[compact].n)
        need = grp->m[compact].bytes / grp->m[compact].n;
    pthread_mutex_unlock(&pl->mu);
    return (uint64_t)need;
}

/* ---- the store's entry points ---------------------------------------------- */

static void budget_error(as_store *s, as_auto *pl, const as_save_info *info,
                         uint64_t need, const char *spec)
{
    uint64_t budget = atomic_load(&s->saved_budget);
    uint64_t live = atomic_load(&s->total.stored_live);
    pthread_mutex_lock(&pl->mu);
    bool exact = pl->measured;
    uint64_t minb = pl->min_bytes;
    pthread_mutex_unlock(&pl->mu);
    const char *layer = info->layer && info->layer[0] ? info->layer : "(none)";
    if (exact)
        as__seterr(s, "auto: saved-bytes budget %llu bytes cannot be met "
                   "(layer %s, %s needs %llu bytes in its most compact form "
                   "%s, %llu live); the smallest budget auto can reach is "
                   "%llu bytes", (unsigned long long)budget, layer,
                   as_kind_name(info->kind), (unsigned long long)need, spec,
                   (unsigned long long)live, (unsigned long long)minb);
    else
        as__seterr(s, "auto: saved-bytes budget %llu bytes cannot be met "
                   "(layer %s, %s needs %llu bytes in its most compact form "
                   "%s, %llu live, everything so far in its most compact "
                   "form); the smallest budget auto can reach is at least "
                   "%llu bytes (more tensors follow in this step)",
                   (unsigned long long)budget, layer, as_kind_name(info->kind),
                   (unsigned long long)need, spec, (unsigned long long)live,
                   (unsigned long long)(live + need));
}

int as__auto_save(as_store *s, as_item *it, as_handle h, as_groups g,
                  const as_polref *ref, as_rules *rules,
                  const as_save_info *info, const as_tensor *t,
                  as_block *adopted, bool *taken, as_rep **spare,
                  as_rep **out)
{
    /* Declared derivations go only to the recompute candidate, and only
     * row-wise ones (cand_info): others (a conv input gathered from a
     * pool's sources) would pin sources whose bytes the plan does not
     * count in the form the derivation needs. */
    const as_save_info *derived = info;
    as_save_info plain = *info;
    plain.recompute = NULL;
    plain.recompute_ud = NULL;
    plain.recompute_inputs = NULL;
    plain.recompute_ninputs = 0;
    plain.recompute_rows = false;
    info = &plain;
    as_auto *pl = planner_get(s);
    if (!pl)
        return AS_ENOMEM;
    const as_auto_params *ap = ref->params;
    if (!ap->derive)
        derived = &plain;
    const char *layer = info->layer && info->layer[0] ? info->layer : "(none)";
    bool ok[AUTO_NCAND_MAX] = {false};
    for (size_t c = 0; c < pl->nc; c++) {
        const as_save_info *ci = cand_info(&pl->c[c], derived, &plain);
        ok[c] = ci && offered(&pl->c[c], ci, t);
    }

    pthread_mutex_lock(&pl->mu);
    pl->period = ap->period;
    pl->time_weight = ap->time_weight;
    pl->input_weight = ap->input_weight;
    pl->any_save = true;
    agroup *grp = group_of(pl, g.layer, info->kind);
    bool probe = grp && (pl->probe_step || !grp->measured);
    pthread_mutex_unlock(&pl->mu);
    if (!grp)
        return AS_ENOMEM;

    meas mt[AUTO_NCAND_MAX];
    memset(mt, 0, sizeof mt);
    uint64_t tp = as_clock_wall_ns();
    if (probe) {
        for (size_t c = 0; c < pl->nc; c++) {
            if (!ok[c])
                continue;
            if (pl->c[c].ref.ops == &as_policy_keep) {   /* known: exact */
                mt[c].bytes = (double)it->bytes;
                mt[c].n = 1;
                if (t->dtype == AS_F32)
                    as__auto_compare(info, t, t->data, &mt[c]);
                continue;
            }
            as__auto_trial(s, it, h, g, &pl->c[c],
                           cand_info(&pl->c[c], derived, &plain), t, layer,
                           &mt[c]);
        }
    }

    /* What to store it under: the plan's choice; before a plan, the most
     * compact candidate of this tensor under a budget (or a pending one),
     * keep without one. */
    uint64_t budget = compact_first(s);
    pthread_mutex_lock(&pl->mu);
    pl->trial_ns_step += as_clock_wall_ns() - tp;
    if (probe)
        fold(pl, grp, ok, mt);
    grp->items_step++;
    grp->raw_step += it->bytes;
    int first, compact;
    pick(pl, grp, ok, probe ? mt : NULL, budget, &first, &compact);
    pthread_mutex_unlock(&pl->mu);

    int order[2] = {first, compact};
    int n = first == compact ? 1 : 2;
    int rc = AS_ENOTSUP;
    for (int k = 0; k < n; k++) {
        char why[160];
        const cand *c = &pl->c[order[k]];
        rc = as__try_policy(s, it, h, g, &c->ref, rules,
                            cand_info(c, derived, &plain), t, adopted,
                            taken, why, sizeof why, spare, out);
        if (rc == 0) {
            snprintf((*out)->desc, sizeof (*out)->desc, "%s (auto)",
                     c->ref.text);
            (*out)->auto_group = grp->id + 1;
            return 0;
        }
        if (rc != AS_EBUDGET && rc != AS_ENOTSUP && rc != AS_EIO &&
            rc != AS_ESTATE)
            return rc;
    }
    if (rc == AS_EBUDGET) {
        budget_error(s, pl, info, compact_need(pl, grp, probe ? mt : NULL,
                                               compact),
                     pl->c[compact].ref.text);
        return AS_EBUDGET;
    }
    /* Nothing offered applied in the end: keep. */
    rc = as__try_policy(s, it, h, g, NULL, rules, info, t, adopted, taken,
                        (char[160]){0}, 160, spare, out);
    if (rc == 0) {
        snprintf((*out)->desc, sizeof (*out)->desc, "keep (auto)");
        (*out)->auto_group = grp->id + 1;
    } else if (rc == AS_EBUDGET)
        budget_error(s, pl, info, it->bytes, "keep");
    return rc;
}

/* ---- row saves ------------------------------------------------------------ */

struct as_auto_rows {
    agroup  *grp;
    bool     probe;
    int      compact;
    bool     ok[AUTO_NCAND_MAX];
    meas     mt[AUTO_NCAND_MAX];   /* the blocks' trials, summed */
    as_item  sub;                  /* a block's shape, for the trials */
};

/* Every offered candidate on one block, added to the save's sums: bytes,
 * time and error sums add up over blocks as over tensors. */
static void rows_measure(as_store *s, as_auto *pl, as_auto_rows *ar,
                         as_handle h, as_groups g, const as_save_info *info,
                         const as_tensor *blk)
{
    const char *layer = info->layer && info->layer[0] ? info->layer : "(none)";
    uint64_t tp = as_clock_wall_ns();
    memset(&ar->sub, 0, sizeof ar->sub);
    ar->sub.shape = *blk;
    ar->sub.shape.data = NULL;
    ar->sub.bytes = as_tensor_bytes(blk);
    ar->sub.h0 = h;
    for (size_t c = 0; c < pl->nc; c++) {
        if (!ar->ok[c])
            continue;
        meas m = {0};
        if (pl->c[c].ref.ops == &as_policy_keep) {
            m.bytes = (double)ar->sub.bytes;
            m.n = 1;
            if (blk->dtype == AS_F32)
                as__auto_compare(info, blk, blk->data, &m);
        } else {
            as__auto_trial(s, &ar->sub, h, g, &pl->c[c], info, blk, layer, &m);
        }
        meas *a = &ar->mt[c];
        a->bytes += m.bytes;
        a->ns += m.ns;
        a->err2 += m.err2;
        a->norm2 += m.norm2;
        a->dot += m.dot;
        a->hat2 += m.hat2;
        a->n = 1;   /* one tensor */
        a->bad |= m.bad || !m.n;
    }
    pthread_mutex_lock(&pl->mu);
    pl->trial_ns_step += as_clock_wall_ns() - tp;
    pthread_mutex_unlock(&pl->mu);
}

int as__auto_rows_begin(as_store *s, as_item *it, as_handle h, as_groups g,
                        const as_polref *ref, const as_save_info *info,
                        const as_tensor *blk, as_auto_rows **out,
                        const as_polref *tries[2], int *ntries)
{
    (void)it;
    *out = NULL;
    as_auto *pl = planner_get(s);
    as_auto_rows *ar = pl ? as__scalloc(s, 1, sizeof *ar) : NULL;
    if (!ar)
        return AS_ENOMEM;
    const as_auto_params *ap = ref->params;
    /* a block's codes must be values: a derivative-only form or a
     * regenerator cannot be split into blocks */
    for (size_t c = 0; c < pl->nc; c++) {
        const as_policy_ops *o = pl->c[c].ref.ops;
        ar->ok[c] = !o->grad_only && !o->regenerator &&
                    offered(&pl->c[c], info, blk);
    }
    pthread_mutex_lock(&pl->mu);
    pl->period = ap->period;
    pl->time_weight = ap->time_weight;
    pl->any_save = true;
    ar->grp = group_of(pl, g.layer, info->kind);
    ar->probe = ar->grp && (pl->probe_step || !ar->grp->measured);
    pthread_mutex_unlock(&pl->mu);
    if (!ar->grp) {
        free(ar);
        return AS_ENOMEM;
    }
    if (ar->probe)
        rows_measure(s, pl, ar, h, g, info, blk);
    uint64_t budget = compact_first(s);
    int first;
    pthread_mutex_lock(&pl->mu);
    pick(pl, ar->grp, ar->ok, ar->probe ? ar->mt : NULL, budget, &first,
         &ar->compact);
    pthread_mutex_unlock(&pl->mu);
    tries[0] = &pl->c[first].ref;
    *ntries = 1;
    if (ar->compact != first)
        tries[(*ntries)++] = &pl->c[ar->compact].ref;
    *out = ar;
    return 0;
}

void as__auto_rows_block(as_store *s, as_auto_rows *ar, as_handle h,
                         as_groups g, const as_save_info *info,
                         const as_tensor *blk)
{
    as_auto *pl = atomic_load_explicit(&s->planner, memory_order_acquire);
    if (ar->probe && pl)
        rows_measure(s, pl, ar, h, g, info, blk);
}

void as__auto_rows_end(as_store *s, as_auto_rows *ar, uint64_t raw, bool ok)
{
    as_auto *pl = atomic_load_explicit(&s->planner, memory_order_acquire);
    if (ok && pl) {
        pthread_mutex_lock(&pl->mu);
        if (ar->probe)
            fold(pl, ar->grp, ar->ok, ar->mt);
        ar->grp->items_step++;
        ar->grp->raw_step += raw;
        pthread_mutex_unlock(&pl->mu);
    }
    free(ar);
}

void as__auto_rows_budget_error(as_store *s, as_auto_rows *ar,
                                const as_save_info *info)
{
    as_auto *pl = atomic_load_explicit(&s->planner, memory_order_acquire);
    budget_error(s, pl, info, compact_need(pl, ar->grp, ar->probe ? ar->mt
                                                                  : NULL,
                                           ar->compact),
                 pl->c[ar->compact].ref.text);
}

void as__auto_note(as_store *s, const as_rep *r, size_t raw, bool planned)
{
    if (planned)
        return;
    as_auto *pl = planner_get(s);   /* from the step's first save on */
    if (!pl)
        return;
    pthread_mutex_lock(&pl->mu);
    pl->fixed_step += r->stored;
    /* keep's bytes: a borrowed tensor costs keep nothing either */
    if (r->ops != &as_policy_borrow)
        pl->fixed_raw_step += raw;
    pl->any_save = true;
    pthread_mutex_unlock(&pl->mu);
}

/* The store's planner with its lock held (NULL: none yet). With a planner,
 * the saved-bytes budget is written under that lock. */
static as_auto *planner_lock(as_store *s)
{
    as_auto *pl = atomic_load_explicit(&s->planner, memory_order_acquire);
    if (pl)
        pthread_mutex_lock(&pl->mu);
    return pl;
}

void as__auto_grad(as_store *s, const as_groups *g, uint32_t group)
{
    as_auto *pl = planner_lock(s);
    if (!pl)
        return;
    size_t k = (size_t)g->layer * AS_KIND_COUNT + (size_t)g->kind;
    int32_t i = group && group <= pl->ng ? (int32_t)group : pl->idx[k];
    if (i) {
        agroup *grp = pl->g[i - 1];
        grp->greports_step++;
    }
    pthread_mutex_unlock(&pl->mu);
}

void as__auto_step_begin(as_store *s)
{
    as_auto *pl = planner_lock(s);
    if (!pl)
        return;
    uint64_t budget = atomic_load(&s->saved_budget);
    pl->t0 = as_clock_wall_ns();
    pl->trial_ns_step = 0;
    /* The first two steps probe (the second times warm code). */
    pl->probe_step = pl->steps < 2 ||
        (pl->period && pl->steps - pl->last_probe >= pl->period);
    if (budget != pl->planned_for && pl->measured)
        as__auto_plan(pl, budget, atomic_load(&s->step));
    pthread_mutex_unlock(&pl->mu);
}

void as__auto_step_end(as_store *s)
{
    as_auto *pl = planner_lock(s);
    if (!pl)
        return;
    if (!pl->any_save) {   /* an evaluation or empty step */
        pl->fixed_step = pl->fixed_raw_step = 0;
        pthread_mutex_unlock(&pl->mu);
        return;
    }
    bool probed = false;
    for (size_t i = 0; i < pl->ng; i++) {
        agroup *g = pl->g[i];
        if (g->greports_step && g->items_step)
            g->consumers = (double)g->greports_step / g->items_step;
        g->greports_step = 0;
        g->items = g->items_step;
        g->raw = g->raw_step;
        g->items_step = 0;
        g->raw_step = 0;
        if (g->probed_step) {
            /* Time: the least seen (the first trials pay one-time set-up;
             * the work per tensor does not change with the weights). */
            for (size_t c = 0; g->measured && c < pl->nc; c++)
                if (g->m[c].n && g->acc[c].n && g->m[c].ns < g->acc[c].ns)
                    g->acc[c].ns = g->m[c].ns;
            for (size_t c = 0; c < pl->nc; c++)
                if (g->acc[c].n && g->acc[c].bytes > g->bmax[c])
                    g->bmax[c] = g->acc[c].bytes;
            memcpy(g->m, g->acc, sizeof g->m);
            memset(g->acc, 0, sizeof g->acc);
            g->measured = true;
            g->probed_step = false;
            probed = true;
        }
    }
    pl->fixed = pl->fixed_step;
    pl->fixed_raw = pl->fixed_raw_step;
    pl->fixed_step = pl->fixed_raw_step = 0;
    pl->step_ns = as_clock_wall_ns() - pl->t0 - pl->trial_ns_step;
    pl->trial_ns_step = 0;
    if (pl->probe_step) {
        pl->probes++;
        pl->last_probe = pl->steps;
        pl->measured = true;
    }
    uint64_t budget = atomic_load(&s->saved_budget);
    if (probed || pl->need_plan || budget != pl->planned_for)
        as__auto_plan(pl, budget, atomic_load(&s->step));
    pl->steps++;
    pl->probe_step = false;
    pl->any_save = false;
    pthread_mutex_unlock(&pl->mu);
}

int as__auto_budget(as_store *s, uint64_t bytes)
{
    as_auto *pl = planner_lock(s);
    if (!pl) {
        atomic_store(&s->saved_budget, bytes);
        return 0;
    }
    if (bytes && pl->measured && bytes < pl->min_bytes) {
        uint64_t minb = pl->min_bytes, keep = pl->keep_bytes;
        pthread_mutex_unlock(&pl->mu);
        as__seterr(s, "auto: saved-bytes budget %llu bytes cannot be met: the "
                   "smallest budget auto can reach is %llu bytes (keep holds "
                   "%llu)", (unsigned long long)bytes,
                   (unsigned long long)minb, (unsigned long long)keep);
        return AS_EBUDGET;
    }
    atomic_store(&s->saved_budget, bytes);
    if (pl->measured)
        as__auto_plan(pl, bytes, atomic_load(&s->step));
    pthread_mutex_unlock(&pl->mu);
    return 0;
}

/* ---- public: budget, sensitivity, plan copy ----------------------------------- */

int as_store_set_budget(as_store *s, uint64_t bytes)
{
    if (!s)
        return AS_EINVAL;
    int rc = as__auto_budget(s, bytes);
    if (rc == 0)
        atomic_store(&s->budget_pending, false);
    return rc;
}

int as_store_budget_pending(as_store *s)
{
    if (!s)
        return AS_EINVAL;
    atomic_store(&s->budget_pending, true);
    return 0;
}

uint64_t as_store_budget(const as_store *s)
{
    return s ? atomic_load(&((as_store *)s)->saved_budget) : 0;
}

int as_store_report_grad(as_store *s, as_handle h, double norm)
{
    if (!s)
        return AS_EINVAL;
    if (!(norm >= 0) || !isfinite(norm)) {
        as__seterr(s, "report_grad: norm %g is not a finite non-negative "
                   "number", norm);
        return AS_EINVAL;
    }
    as_peek p;
    int rc = as__peek(s, h, "report_grad", &p);
    if (rc < 0)
        return rc;
    as__auto_grad(s, &p.g, p.auto_group);
    return 0;
}

int as_store_plan_take(as_store *s, as_store_plan *out)
{
    if (!out)
        return AS_EINVAL;
    memset(out, 0, sizeof *out);
    if (!s)
        return AS_EINVAL;
    out->budget = atomic_load(&s->saved_budget);
    as_auto *pl = planner_lock(s);
    if (!pl)
        return 0;
    out->active = true;
    out->measured = pl->measured;
    out->feasible = pl->feasible;
    out->keep_bytes = pl->keep_bytes;
    out->planned_bytes = pl->planned_bytes;
    out->fixed_bytes = pl->fixed;
    out->min_bytes = pl->min_bytes;
    out->step = pl->plan_step;
    out->probes = pl->probes;
    out->replans = pl->replans;
    out->period = pl->period;
    size_t n = 0;
    for (size_t i = 0; i < pl->ng; i++)
        n += pl->g[i]->measured;
    out->entries = n ? as__scalloc(s, n, sizeof *out->entries) : NULL;
    if (n && !out->entries) {
        pthread_mutex_unlock(&pl->mu);
        return AS_ENOMEM;
    }
    for (size_t i = 0; i < pl->ng; i++) {
        const agroup *g = pl->g[i];
        if (!g->measured)
            continue;
        as_store_plan_entry *e = &out->entries[out->n++];
        e->kind = g->kind;
        e->raw_bytes = g->raw;
        e->items = g->items;
        e->weight = g->weight;
        for (size_t c = 0; c < pl->nc; c++)
            e->candidates += as__auto_usable(g, c);
        int c = g->choice >= 0 ? g->choice : 0;
        as__strlcpy(e->policy, g->choice >= 0 ? pl->c[c].ref.text : "(none)",
                    sizeof e->policy);
        e->stored_bytes = (uint64_t)g->m[c].bytes;
        e->rel_error = as__auto_rel_err(&g->m[c]);
        e->cosine = as__auto_cosine(&g->m[c]);
        e->time_ns = g->m[c].ns;
        /* the layer name lives in the store's layer table */
        pthread_mutex_lock(&s->layer_mu);
        as__strlcpy(e->layer, g->layer ? s->layers[g->layer].name : "(none)",
                    sizeof e->layer);
        pthread_mutex_unlock(&s->layer_mu);
    }
    pthread_mutex_unlock(&pl->mu);
    return 0;
}

void as_store_plan_free(as_store_plan *p)
{
    if (!p)
        return;
    free(p->entries);
    p->entries = NULL;
    p->n = 0;
}

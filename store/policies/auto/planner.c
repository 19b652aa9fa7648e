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
 * with w_g = 1, or ||x_g|| * ||dy_g|| normalized to mean 1 when the
 * framework reports gradient norms (as_store_report_grad). Squared: the
 * codecs' errors are independent across tensors (stochastic rounding), so
 * their contributions to the gradient error add as variances. Minimize the
 * summed cost subject to sum of stored bytes (plus bytes of tensors under
 * fixed rules) <= budget: a multiple-choice knapsack solved by dynamic
 * programming on the budget cut into AUTO_UNITS units (each candidate's
 * bytes rounded up, so the plan never overshoots; values-dependent codecs
 * get a margin). Exact candidates (keep, zstd, invert) cost only time, so
 * they win wherever they fit. Re-planned after every probe step, when the
 * budget changes and when a new group appears.
 *
 * Storing. Before any plan (first step) a tensor goes to its most compact
 * measured candidate when there is a budget (keep without one). A save
 * that the budget refuses tries the most compact candidate; if that does
 * not fit either the save fails with the smallest budget auto can reach.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/policies/act_grad.h"
#include "store/policies/auto/auto.h"
#include "util/clock.h"

#define AUTO_NCAND_MAX 24
#define AUTO_UNITS 4096
#define AUTO_MARGIN 1.05   /* values-dependent stored bytes */

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
    double   g2_step, g2, weight;
    uint32_t greports_step;
    bool     has_grad;
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
    double   time_weight;
    bool     probe_step, any_save;
    uint64_t steps, last_probe;
    uint64_t fixed_step, fixed, fixed_raw_step, fixed_raw;
    uint64_t t0, step_ns, trial_ns_step;   /* trials leave step_ns */
    uint64_t planned_for;         /* budget of the current plan */
    bool     need_plan, measured, feasible;
    uint64_t planned_bytes, min_bytes, keep_bytes, plan_step;
    uint64_t probes, replans;
} as_auto;

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
    as__strlcpy(c->ref.text, spec, sizeof c->ref.text);
}

static as_auto *planner_new(void)
{
    as_auto *pl = calloc(1, sizeof *pl);
    int32_t *idx = calloc((size_t)AS_LAYER_MAX * AS_KIND_COUNT, sizeof *idx);
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
    as_auto *fresh = planner_new();
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
        agroup **ng = realloc(pl->g, cap * sizeof *ng);
        if (!ng)
            return NULL;
        pl->g = ng;
        pl->gcap = cap;
    }
    agroup *g = calloc(1, sizeof *g);
    if (!g)
        return NULL;
    g->layer = layer;
    g->kind = kind;
    g->choice = -1;
    g->weight = 1;
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

/* ---- measuring ------------------------------------------------------------- */

/* Add the error of y against x (n f32 values) to *m. */
static void compare_f32(const float *x, const float *y, size_t n, meas *m)
{
    double e2 = 0, x2 = 0, d = 0, y2 = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(x[i])) {
            if (memcmp(&x[i], &y[i], sizeof(float)) && !(isnan(x[i]) && isnan(y[i])))
                m->bad = true;
            continue;
        }
        if (!isfinite(y[i])) {
            m->bad = true;
            continue;
        }
        double dx = (double)y[i] - x[i];
        e2 += dx * dx;
        x2 += (double)x[i] * x[i];
        d += (double)x[i] * y[i];
        y2 += (double)y[i] * y[i];
    }
    m->err2 += e2;
    m->norm2 += x2;
    m->dot += d;
    m->hat2 += y2;
}

/* An activation's backward multiplies dy by f'(saved): for those the
 * error that matters is that of f' (and a derivative-only form restores a
 * stand-in with the right f', not the values). */
static bool by_derivative(const as_save_info *info)
{
    if (info->kind != AS_KIND_ACTIVATION_INPUT &&
        info->kind != AS_KIND_ACTIVATION_OUTPUT)
        return false;
    int fn = info->meta.act.fn;
    return fn == AS_FN_RELU || fn == AS_FN_LEAKY_RELU || fn == AS_FN_GELU;
}

static void compare_span(const as_save_info *info, const float *x,
                         const float *y, size_t n, meas *m)
{
    if (!by_derivative(info)) {
        compare_f32(x, y, n, m);
        return;
    }
    enum { CH = 1024 };
    float one[CH], fx[CH], fy[CH];
    for (size_t i = 0; i < CH; i++)
        one[i] = 1.0f;
    const int fn = info->meta.act.fn;
    const float alpha = fn == AS_FN_LEAKY_RELU ? info->meta.act.alpha : 0.0f;
    for (size_t i = 0; i < n; i += CH) {
        size_t k = n - i < CH ? n - i : CH;
        as__act_grad(fn, alpha, k, x + i, one, fx);
        as__act_grad(fn, alpha, k, y + i, one, fy);
        compare_f32(fx, fy, k, m);
    }
}

static void compare(const as_save_info *info, const as_tensor *t,
                    const void *hat, meas *m)
{
    size_t bytes = as_tensor_bytes(t);
    if (t->dtype != AS_F32) {   /* exact or useless */
        if (bytes && memcmp(t->data, hat, bytes))
            m->bad = true;
        return;
    }
    compare_span(info, t->data, hat, bytes / sizeof(float), m);
}

/* Decode the trial rep into dst (the whole tensor), or, when the policy
 * decodes row blocks of an f32 tensor, block by block through a small
 * buffer straight into the error sums: the trial then needs no second copy
 * of the tensor. */
#define AUTO_BLOCK_FLOATS 16384
static int trial_decode(as_store *s, as_item *it, as_rep *r, as_handle h,
                        const char *layer, const as_save_info *info,
                        const as_tensor *t, meas *m, uint64_t *ns)
{
    size_t bytes = as_tensor_bytes(t);
    int64_t cols = t->ndim ? t->shape[t->ndim - 1] : 1;
    as_block dst = {0};
    as_pctx ctx;
    int rc;
    if (r->ops->view) {
        compare(info, t, r->ops->view(r->params, r->state), m);
        return 0;
    }
    if (r->ops->decode_rows && t->dtype == AS_F32 && cols > 0) {
        int64_t rows = as_tensor_numel(t) / cols;
        int64_t per = AUTO_BLOCK_FLOATS / cols > 0 ? AUTO_BLOCK_FLOATS / cols : 1;
        if ((rc = as_alloc(s->arena, (size_t)(per * cols) * sizeof(float),
                           AS_TAG_WORKSPACE, r->g.layer, &dst)) < 0)
            return rc;
        as__pctx_init(&ctx, s, it, r, h, layer);
        rc = 0;
        for (int64_t r0 = 0; r0 < rows && !rc; r0 += per) {
            int64_t nr = rows - r0 < per ? rows - r0 : per;
            uint64_t t0 = as_clock_wall_ns();
            rc = r->ops->decode_rows(&ctx, r->params, r->state, r0, nr, dst.ptr);
            *ns += as_clock_wall_ns() - t0;
            if (!rc)
                compare_span(info, (const float *)t->data + r0 * cols,
                             dst.ptr, (size_t)(nr * cols), m);
        }
        as__pctx_done(&ctx);
        as_free(s->arena, &dst);
        return rc;
    }
    if (!r->ops->decode)
        return AS_ENOTSUP;
    if ((rc = as_alloc(s->arena, bytes, AS_TAG_WORKSPACE, r->g.layer, &dst)) < 0)
        return rc;
    as_tensor out = it->shape;
    out.data = dst.ptr;
    as__pctx_init(&ctx, s, it, r, h, layer);
    uint64_t t0 = as_clock_wall_ns();
    rc = r->ops->decode(&ctx, r->params, r->state, &out);
    *ns += as_clock_wall_ns() - t0;
    as__pctx_done(&ctx);
    if (!rc)
        compare(info, t, dst.ptr, m);
    as_free(s->arena, &dst);
    return rc;
}

/* Encode and decode t under c as a trial (workspace only) and add what it
 * would store, its time and its error to *m. */
static void trial(as_store *s, as_item *it, as_handle h, as_groups g,
                  const cand *c, const as_save_info *info, const as_tensor *t,
                  const char *layer, meas *m)
{
    as_rep *r = calloc(1, sizeof *r);
    if (!r) {
        m->bad = true;
        return;
    }
    atomic_init(&r->refs, 1);
    r->ops = c->ref.ops;
    r->owner = it;
    r->params = c->ref.params;
    r->probe = true;
    g.policy = (uint16_t)as__policy_index(r->ops);
    r->g = g;
    as_pctx ctx;
    as__pctx_init(&ctx, s, it, r, h, layer);
    uint64_t t0 = as_clock_wall_ns();
    int rc = r->ops->encode(&ctx, r->params, info, t, &r->state);
    uint64_t t1 = as_clock_wall_ns();
    as__pctx_done(&ctx);
    meas e = {0};
    uint64_t dec_ns = 0;
    if (rc == 0 && as_tensor_bytes(t))
        rc = trial_decode(s, it, r, h, layer, info, t, &e, &dec_ns);
    if (rc == 0) {
        m->bytes += (double)r->probe_bytes;
        m->ns += (double)(t1 - t0) + (double)dec_ns;
        m->n++;
        m->err2 += e.err2;
        m->norm2 += e.norm2;
        m->dot += e.dot;
        m->hat2 += e.hat2;
        m->bad |= e.bad;
    } else {
        m->bad = true;
    }
    as__rep_discard(s, r);
}

/* ---- deciding -------------------------------------------------------------- */

static double rel_err(const meas *m)
{
    if (m->norm2 > 0)
        return sqrt(m->err2 / m->norm2);
    return m->err2 > 0 ? 1.0 : 0.0;
}

static double cosine(const meas *m)
{
    if (m->norm2 <= 0 || m->hat2 <= 0)
        return m->norm2 <= 0 && m->hat2 <= 0 ? 1.0 : 0.0;
    return m->dot / sqrt(m->norm2 * m->hat2);
}

static bool usable(const agroup *g, size_t c)
{
    return g->measured && g->m[c].n && !g->m[c].bad;
}

static uint64_t cand_bytes(const as_auto *pl, const agroup *g, size_t c)
{
    double b = g->m[c].bytes;
    if (pl->c[c].variable)
        b *= AUTO_MARGIN;
    return (uint64_t)ceil(b);
}

static double cand_cost(const as_auto *pl, const agroup *g, size_t c)
{
    double t = pl->step_ns ? g->m[c].ns / (double)pl->step_ns : 0;
    double e = g->weight * rel_err(&g->m[c]);
    return e * e + pl->time_weight * t;
}

/* The most compact usable candidate (ties: least cost, then table order). */
static int most_compact(const as_auto *pl, const agroup *g)
{
    int best = -1;
    for (size_t c = 0; c < pl->nc; c++) {
        if (!usable(g, c))
            continue;
        if (best < 0 || cand_bytes(pl, g, c) < cand_bytes(pl, g, (size_t)best) ||
            (cand_bytes(pl, g, c) == cand_bytes(pl, g, (size_t)best) &&
             cand_cost(pl, g, c) < cand_cost(pl, g, (size_t)best)))
            best = (int)c;
    }
    return best;
}

static int least_cost(const as_auto *pl, const agroup *g)
{
    int best = -1;
    for (size_t c = 0; c < pl->nc; c++)
        if (usable(g, c) &&
            (best < 0 || cand_cost(pl, g, c) < cand_cost(pl, g, (size_t)best)))
            best = (int)c;
    return best;
}

/* Sensitivity weights: ||x|| * ||dy||, mean 1 over reporting groups. */
static void weigh(as_auto *pl)
{
    double sum = 0;
    size_t n = 0;
    for (size_t i = 0; i < pl->ng; i++) {
        agroup *g = pl->g[i];
        g->weight = 1;
        if (g->has_grad && g->measured && g->m[0].n) {
            g->weight = sqrt(g->m[0].norm2 * g->g2);
            sum += g->weight;
            n++;
        }
    }
    for (size_t i = 0; i < pl->ng && sum > 0; i++)
        if (pl->g[i]->has_grad && pl->g[i]->measured && pl->g[i]->m[0].n)
            pl->g[i]->weight *= (double)n / sum;
}

/* Multiple-choice knapsack over the measured groups. Under mu. */
static void plan(as_auto *pl, uint64_t budget, uint64_t step)
{
    weigh(pl);
    uint64_t minb = pl->fixed, keep = pl->fixed_raw, nmeas = 0;
    for (size_t i = 0; i < pl->ng; i++) {
        agroup *g = pl->g[i];
        keep += g->raw;
        int mc = most_compact(pl, g);
        if (mc >= 0) {
            minb += cand_bytes(pl, g, (size_t)mc);
            nmeas++;
        }
    }
    pl->min_bytes = minb;
    pl->keep_bytes = keep;
    pl->planned_for = budget;
    pl->plan_step = step;
    pl->replans++;
    pl->need_plan = false;
    pl->feasible = !budget || minb <= budget;
    size_t G = pl->ng;
    /* The unconstrained best, when it fits, needs no knapsack (and is
     * exact where the units' rounding would not be). */
    uint64_t best = pl->fixed;
    for (size_t i = 0; i < G; i++) {
        int c = least_cost(pl, pl->g[i]);
        best += c >= 0 ? cand_bytes(pl, pl->g[i], (size_t)c) : 0;
    }
    if (budget && pl->feasible && best <= budget) {
        for (size_t i = 0; i < G; i++)
            if (pl->g[i]->measured)
                pl->g[i]->choice = least_cost(pl, pl->g[i]);
    } else if (!budget || !pl->feasible || !nmeas) {
        for (size_t i = 0; i < G; i++) {
            agroup *g = pl->g[i];
            if (g->measured)
                g->choice = budget ? most_compact(pl, g) : least_cost(pl, g);
        }
    } else {
        uint64_t avail = budget - pl->fixed;
        /* The choice table is groups x units bytes: fewer units for a
         * model with very many groups (at most 32 MiB). */
        uint64_t units = AUTO_UNITS;
        if (G * (units + 1) > (32u << 20))
            units = (32u << 20) / G - 1;
        uint64_t unit = avail / units + 1;
        size_t U = (size_t)(avail / unit);
        double *dp = malloc((U + 1) * sizeof *dp);
        double *nx = malloc((U + 1) * sizeof *nx);
        uint8_t *pick = malloc(G * (U + 1));
        if (!dp || !nx || !pick) {   /* no memory: the safe plan */
            for (size_t i = 0; i < G; i++)
                if (pl->g[i]->measured)
                    pl->g[i]->choice = most_compact(pl, pl->g[i]);
        } else {
            for (size_t u = 0; u <= U; u++)
                dp[u] = 0;
            for (size_t i = 0; i < G; i++) {
                agroup *g = pl->g[i];
                for (size_t u = 0; u <= U; u++) {
                    nx[u] = INFINITY;
                    pick[i * (U + 1) + u] = 0xff;
                    if (!g->measured) {   /* nothing to choose */
                        nx[u] = dp[u];
                        continue;
                    }
                    for (size_t c = 0; c < pl->nc; c++) {
                        if (!usable(g, c))
                            continue;
                        uint64_t k = (cand_bytes(pl, g, c) + unit - 1) / unit;
                        if (k > u)
                            continue;
                        double v = dp[u - k] + cand_cost(pl, g, c);
                        if (v < nx[u]) {
                            nx[u] = v;
                            pick[i * (U + 1) + u] = (uint8_t)c;
                        }
                    }
                }
                double *tmp = dp;
                dp = nx;
                nx = tmp;
            }
            if (isfinite(dp[U])) {
                size_t u = U;
                for (size_t i = G; i-- > 0;) {
                    agroup *g = pl->g[i];
                    if (!g->measured)
                        continue;
                    int c = pick[i * (U + 1) + u];
                    g->choice = c;
                    u -= (cand_bytes(pl, g, (size_t)c) + unit - 1) / unit;
                }
            } else {   /* fits in bytes but not after rounding to units */
                for (size_t i = 0; i < G; i++)
                    if (pl->g[i]->measured)
                        pl->g[i]->choice = most_compact(pl, pl->g[i]);
            }
        }
        free(dp);
        free(nx);
        free(pick);
    }
    uint64_t planned = pl->fixed;
    for (size_t i = 0; i < G; i++) {
        agroup *g = pl->g[i];
        if (g->choice >= 0)
            planned += (uint64_t)g->m[g->choice].bytes;
    }
    pl->planned_bytes = planned;
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
    as_auto *pl = planner_get(s);
    if (!pl)
        return AS_ENOMEM;
    const as_auto_params *ap = ref->params;
    const char *layer = info->layer && info->layer[0] ? info->layer : "(none)";
    bool ok[AUTO_NCAND_MAX] = {false};
    for (size_t c = 0; c < pl->nc; c++)
        ok[c] = offered(&pl->c[c], info, t);

    pthread_mutex_lock(&pl->mu);
    pl->period = ap->period;
    pl->time_weight = ap->time_weight;
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
                    compare(info, t, t->data, &mt[c]);
                continue;
            }
            trial(s, it, h, g, &pl->c[c], info, t, layer, &mt[c]);
        }
    }

    /* What to store it under: the plan's choice; before a plan, the most
     * compact candidate of this tensor under a budget, keep without one. */
    uint64_t budget = atomic_load(&s->saved_budget);
    pthread_mutex_lock(&pl->mu);
    pl->trial_ns_step += as_clock_wall_ns() - tp;
    if (probe) {
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
    grp->items_step++;
    grp->raw_step += it->bytes;
    int first = grp->choice >= 0 && ok[grp->choice] ? grp->choice : -1;
    int compact = -1;
    const agroup *src = grp->measured ? grp : NULL;
    for (size_t c = 0; c < pl->nc; c++) {
        if (!ok[c])
            continue;
        const meas *m = probe ? &mt[c] : src ? &src->m[c] : NULL;
        if (!m || !m->n || m->bad)
            continue;
        if (compact < 0 || m->bytes < (probe ? mt[compact].bytes
                                             : src->m[compact].bytes))
            compact = (int)c;
    }
    pthread_mutex_unlock(&pl->mu);
    if (first < 0)
        first = budget && compact >= 0 ? compact : 0;
    if (compact < 0)
        compact = 0;

    int order[2] = {first, compact};
    int n = first == compact ? 1 : 2;
    int rc = AS_ENOTSUP;
    for (int k = 0; k < n; k++) {
        char why[160];
        const cand *c = &pl->c[order[k]];
        rc = as__try_policy(s, it, h, g, &c->ref, rules, info, t, adopted,
                            taken, why, sizeof why, spare, out);
        if (rc == 0) {
            snprintf((*out)->desc, sizeof (*out)->desc, "%s (auto)",
                     c->ref.text);
            return 0;
        }
        if (rc != AS_EBUDGET && rc != AS_ENOTSUP && rc != AS_EIO &&
            rc != AS_ESTATE)
            return rc;
    }
    if (rc == AS_EBUDGET) {
        double need = probe ? mt[compact].bytes : 0;
        if (!probe) {
            pthread_mutex_lock(&pl->mu);
            if (grp->measured && grp->items)
                need = grp->m[compact].bytes / grp->m[compact].n;
            pthread_mutex_unlock(&pl->mu);
        }
        budget_error(s, pl, info, (uint64_t)need, pl->c[compact].ref.text);
        return AS_EBUDGET;
    }
    /* Nothing offered applied in the end: keep. */
    rc = as__try_policy(s, it, h, g, NULL, rules, info, t, adopted, taken,
                        (char[160]){0}, 160, spare, out);
    if (rc == 0)
        snprintf((*out)->desc, sizeof (*out)->desc, "keep (auto)");
    else if (rc == AS_EBUDGET)
        budget_error(s, pl, info, it->bytes, "keep");
    return rc;
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

void as__auto_grad(as_store *s, const as_groups *g, double norm)
{
    as_auto *pl = atomic_load_explicit(&s->planner, memory_order_acquire);
    if (!pl)
        return;
    pthread_mutex_lock(&pl->mu);
    size_t k = (size_t)g->layer * AS_KIND_COUNT + (size_t)g->kind;
    if (pl->idx[k]) {
        agroup *grp = pl->g[pl->idx[k] - 1];
        grp->g2_step += norm * norm;
        grp->greports_step++;
    }
    pthread_mutex_unlock(&pl->mu);
}

void as__auto_step_begin(as_store *s)
{
    as_auto *pl = atomic_load_explicit(&s->planner, memory_order_acquire);
    if (!pl)
        return;
    uint64_t budget = atomic_load(&s->saved_budget);
    pthread_mutex_lock(&pl->mu);
    pl->t0 = as_clock_wall_ns();
    pl->trial_ns_step = 0;
    /* The first two steps probe (the second times warm code). */
    pl->probe_step = pl->steps < 2 ||
        (pl->period && pl->steps - pl->last_probe >= pl->period);
    if (budget != pl->planned_for && pl->measured)
        plan(pl, budget, atomic_load(&s->step));
    pthread_mutex_unlock(&pl->mu);
}

void as__auto_step_end(as_store *s)
{
    as_auto *pl = atomic_load_explicit(&s->planner, memory_order_acquire);
    if (!pl)
        return;
    uint64_t budget = atomic_load(&s->saved_budget);
    pthread_mutex_lock(&pl->mu);
    if (!pl->any_save) {   /* an evaluation or empty step */
        pl->fixed_step = pl->fixed_raw_step = 0;
        pthread_mutex_unlock(&pl->mu);
        return;
    }
    bool probed = false;
    for (size_t i = 0; i < pl->ng; i++) {
        agroup *g = pl->g[i];
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
            memcpy(g->m, g->acc, sizeof g->m);
            memset(g->acc, 0, sizeof g->acc);
            g->measured = true;
            g->probed_step = false;
            probed = true;
        }
        if (g->greports_step) {
            g->g2 = g->has_grad ? 0.5 * g->g2 + 0.5 * g->g2_step : g->g2_step;
            g->has_grad = true;
            g->g2_step = 0;
            g->greports_step = 0;
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
    if (probed || pl->need_plan || budget != pl->planned_for)
        plan(pl, budget, atomic_load(&s->step));
    pl->steps++;
    pl->probe_step = false;
    pl->any_save = false;
    pthread_mutex_unlock(&pl->mu);
}

int as__auto_budget(as_store *s, uint64_t bytes)
{
    as_auto *pl = atomic_load_explicit(&s->planner, memory_order_acquire);
    if (!pl) {
        atomic_store(&s->saved_budget, bytes);
        return 0;
    }
    pthread_mutex_lock(&pl->mu);
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
        plan(pl, bytes, atomic_load(&s->step));
    pthread_mutex_unlock(&pl->mu);
    return 0;
}

/* ---- public: budget, sensitivity, plan copy ----------------------------------- */

int as_store_set_budget(as_store *s, uint64_t bytes)
{
    return s ? as__auto_budget(s, bytes) : AS_EINVAL;
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
    as_item *it;
    as_rep *r;
    int rc = as__lookup_rep(s, h, &it, &r, "report_grad");
    if (rc < 0)
        return rc;
    as_groups g = r->g;
    as__rep_unref(s, r);
    as__item_unref(s, it);
    as__auto_grad(s, &g, norm);
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
    as_auto *pl = atomic_load_explicit(&s->planner, memory_order_acquire);
    if (!pl)
        return 0;
    pthread_mutex_lock(&pl->mu);
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
    out->entries = n ? calloc(n, sizeof *out->entries) : NULL;
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
            e->candidates += usable(g, c);
        int c = g->choice >= 0 ? g->choice : 0;
        as__strlcpy(e->policy, g->choice >= 0 ? pl->c[c].ref.text : "(none)",
                    sizeof e->policy);
        e->stored_bytes = (uint64_t)g->m[c].bytes;
        e->rel_error = rel_err(&g->m[c]);
        e->cosine = cosine(&g->m[c]);
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

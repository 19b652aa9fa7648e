/*
 * auto's decision: the cost of each measured candidate and the multiple-
 * choice knapsack over the (layer, kind) groups (planner.c has the method).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "store/policies/auto/impl.h"
#include "allocator/fault.h"

double as__auto_rel_err(const meas *m)
{
    if (m->norm2 > 0)
        return sqrt(m->err2 / m->norm2);
    return m->err2 > 0 ? 1.0 : 0.0;
}

double as__auto_cosine(const meas *m)
{
    if (m->norm2 <= 0 || m->hat2 <= 0)
        return m->norm2 <= 0 && m->hat2 <= 0 ? 1.0 : 0.0;
    return m->dot / sqrt(m->norm2 * m->hat2);
}

bool as__auto_usable(const agroup *g, size_t c)
{
    return g->measured && g->m[c].n && !g->m[c].bad;
}

static uint64_t cand_bytes(const as_auto *pl, const agroup *g, size_t c)
{
    double b = g->m[c].bytes;
    if (pl->c[c].variable)
        b = (g->bmax[c] > b ? g->bmax[c] : b) * AUTO_MARGIN;
    return (uint64_t)ceil(b);
}

static double cand_cost(const as_auto *pl, const agroup *g, size_t c)
{
    double t = pl->step_ns ? g->m[c].ns / (double)pl->step_ns : 0;
    double e = g->weight * as__auto_rel_err(&g->m[c]);
    return e * e + pl->time_weight * t;
}

/* The most compact usable candidate (ties: least cost, then table order). */
static int most_compact(const as_auto *pl, const agroup *g)
{
    int best = -1;
    for (size_t c = 0; c < pl->nc; c++) {
        if (!as__auto_usable(g, c))
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
        if (as__auto_usable(g, c) &&
            (best < 0 || cand_cost(pl, g, c) < cand_cost(pl, g, (size_t)best)))
            best = (int)c;
    return best;
}

/* Whether an error in a tensor of this group reaches the input gradient
 * (and so every earlier layer's gradients), not only the weight gradient
 * of the layer that reads it: a linear or conv layer's dx = dy W^T does
 * not depend on its saved input, every other backward that reads a saved
 * tensor does (softmax, attention, activations, norms, the loss); a linear
 * input that a second layer reads too (a LayerNorm's output) does. */
static bool reaches_input(const agroup *g)
{
    if (g->kind != AS_KIND_LINEAR_INPUT && g->kind != AS_KIND_CONV_INPUT)
        return true;
    return g->consumers > 1.5;
}

/* Sensitivity weights (on the relative error, so squared in the cost): an
 * error that reaches the input gradient weighs 1 + input_weight. */
static void weigh(as_auto *pl)
{
    for (size_t i = 0; i < pl->ng; i++) {
        agroup *g = pl->g[i];
        g->weight = sqrt(1 + (reaches_input(g) ? pl->input_weight : 0));
    }
}

/* Spend what the knapsack's rounding to units left of the budget: move
 * the group whose cheaper candidate gains the most and still fits, in
 * exact bytes, until none does. Each move lowers the total cost. */
static void fill(as_auto *pl, uint64_t budget)
{
    uint64_t used = pl->fixed;
    for (size_t i = 0; i < pl->ng; i++)
        if (pl->g[i]->choice >= 0)
            used += cand_bytes(pl, pl->g[i], (size_t)pl->g[i]->choice);
    for (;;) {
        agroup *bg = NULL;
        size_t bc = 0;
        double gain = 0;
        for (size_t i = 0; i < pl->ng; i++) {
            agroup *g = pl->g[i];
            if (g->choice < 0)
                continue;
            size_t cur = (size_t)g->choice;
            uint64_t have = cand_bytes(pl, g, cur);
            double now = cand_cost(pl, g, cur);
            for (size_t c = 0; c < pl->nc; c++) {
                double d = now - cand_cost(pl, g, c);
                if (!as__auto_usable(g, c) || d <= gain ||
                    used - have + cand_bytes(pl, g, c) > budget)
                    continue;
                bg = g;
                bc = c;
                gain = d;
            }
        }
        if (!bg)
            return;
        used += cand_bytes(pl, bg, bc) -
                cand_bytes(pl, bg, (size_t)bg->choice);
        bg->choice = (int)bc;
    }
}

/* Multiple-choice knapsack over the measured groups. Under mu. */
void as__auto_plan(as_auto *pl, uint64_t budget, uint64_t step)
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
        double *dp = as__fmalloc((U + 1) * sizeof *dp);
        double *nx = as__fmalloc((U + 1) * sizeof *nx);
        uint8_t *pick = as__fmalloc(G * (U + 1));
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
                        if (!as__auto_usable(g, c))
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
            fill(pl, budget);
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

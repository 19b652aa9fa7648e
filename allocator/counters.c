/*
 * The counters behind the allocation path (the scheme: internal.h).
 *
 * Tags and layers: each thread keeps live and folded values per counter;
 * G (the charged value) moves only when a counter folds. The total has no
 * per-thread counter: a thread's live total is the sum of its tags, and it
 * charges the total exactly the sum of its tags' folded values. When a tag
 * grows past its folded value, every tag of the thread folds (frees pending
 * in one tag offset growth in another), so with one thread the charged
 * total equals the live total whenever it rises, and its peak is exact.
 */
#include "allocator/internal.h"

#define RLX memory_order_relaxed

static inline int64_t ld(_Atomic int64_t *p) { return atomic_load_explicit(p, RLX); }
static inline void st(_Atomic int64_t *p, int64_t v) { atomic_store_explicit(p, v, RLX); }
static inline void inc(_Atomic uint64_t *p)
{
    atomic_store_explicit(p, atomic_load_explicit(p, RLX) + 1, RLX);
}

static unsigned ntags(as_arena *a)
{
    return atomic_load_explicit(&a->ntags, memory_order_acquire);
}

/* Sum over b's tags of live - folded (<= 0 between operations). */
static void pending_tags(as_arena *a, as__tblock *b, int64_t *pr, int64_t *pu)
{
    int64_t r = 0, u = 0;
    for (unsigned i = 0, n = ntags(a); i < n; i++) {
        r += ld(&b->c[i].live_req) - ld(&b->c[i].fold_req);
        u += ld(&b->c[i].live_use) - ld(&b->c[i].fold_use);
    }
    *pr = r;
    *pu = u;
}

/* Move a pending delta (pr, pu) of counter t, whose live values are
 * (lr, lu), into G, raising the peak if G grew. */
__attribute__((noinline))
static void fold_apply(as__tcounter *t, as__gcounter *g, int64_t lr, int64_t lu,
                       int64_t pr, int64_t pu)
{
    int64_t nr = atomic_fetch_add_explicit(&g->g_req, pr, RLX) + pr;
    int64_t nu = atomic_fetch_add_explicit(&g->g_use, pu, RLX) + pu;
    if (pr > 0 && nr > 0)
        as__atomic_max(&g->peak_req, (uint64_t)nr);
    if (pu > 0 && nu > 0)
        as__atomic_max(&g->peak_use, (uint64_t)nu);
    st(&t->fold_req, lr);
    st(&t->fold_use, lu);
}

/* Fold counter t into G and add the delta to *sr, *su. */
static inline void fold_one(as__tcounter *t, as__gcounter *g, int64_t *sr, int64_t *su)
{
    int64_t lr = ld(&t->live_req), lu = ld(&t->live_use);
    int64_t pr = lr - ld(&t->fold_req), pu = lu - ld(&t->fold_use);
    if (pr | pu) {
        fold_apply(t, g, lr, lu, pr, pu);
        *sr += pr;
        *su += pu;
    }
}

/* Fold every tag of b; returns the sum of their deltas in *sr, *su (what
 * the total must be charged). */
static void fold_tags(as_arena *a, as__tblock *b, int64_t *sr, int64_t *su)
{
    *sr = *su = 0;
    for (unsigned i = 0, n = ntags(a); i < n; i++)
        fold_one(&b->c[i], &a->g[i], sr, su);
}

/* Add (pr, pu) to the charged total; the peak follows when it grows. */
static void total_add(as_arena *a, int64_t pr, int64_t pu)
{
    as__gcounter *g = &a->gtotal;
    int64_t nr = atomic_fetch_add_explicit(&g->g_req, pr, RLX) + pr;
    int64_t nu = atomic_fetch_add_explicit(&g->g_use, pu, RLX) + pu;
    if (pr > 0 && nr > 0)
        as__atomic_max(&g->peak_req, (uint64_t)nr);
    if (pu > 0 && nu > 0)
        as__atomic_max(&g->peak_use, (uint64_t)nu);
}

/* A tag grew past its folded value: fold every tag and the total. */
__attribute__((noinline))
static void grow_tags(as_arena *a, as__tblock *b)
{
    int64_t sr, su;
    fold_tags(a, b, &sr, &su);
    total_add(a, sr, su);
}

void as__tblock_fold(as__tblock *b)
{
    as_arena *a = b->arena;
    int64_t sr, su;
    grow_tags(a, b);
    for (unsigned i = 0, n = atomic_load(&a->nlayers); i < n; i++)
        fold_one(&b->c[AS_TAG_MAX + i], &a->g[AS_TAG_MAX + i], &sr, &su);
}

/* Layers fold one at a time (each block has one layer, and no layer
 * figure is derived from the others). */
static void charge_layer(as_arena *a, as__tblock *b, unsigned layer, int64_t r, int64_t u)
{
    as__tcounter *t = &b->c[AS_TAG_MAX + layer];
    int64_t lr = ld(&t->live_req) + r, lu = ld(&t->live_use) + u;
    st(&t->live_req, lr);
    st(&t->live_use, lu);
    inc(&t->allocs);
    int64_t sr, su;
    if (lr > ld(&t->fold_req) || lu > ld(&t->fold_use))
        fold_one(t, &a->g[AS_TAG_MAX + layer], &sr, &su);
}

void as__charge(as_arena *a, as__tblock *b, unsigned tag, unsigned layer,
                int64_t r, int64_t u)
{
    as__tcounter *t = &b->c[tag];
    int64_t lr = ld(&t->live_req) + r, lu = ld(&t->live_use) + u;
    st(&t->live_req, lr);
    st(&t->live_use, lu);
    inc(&t->allocs);
    if (lr > ld(&t->fold_req) || lu > ld(&t->fold_use))
        grow_tags(a, b);
    charge_layer(a, b, layer, r, u);
}

/* Record a free in counter t. When its pending frees pass AS__FOLD_BYTES
 * it folds, and the delta moved into G is added to *sr, *su. */
static void discharge_one(as__tcounter *t, as__gcounter *g, int64_t r, int64_t u,
                          int64_t *sr, int64_t *su)
{
    int64_t lr = ld(&t->live_req) - r, lu = ld(&t->live_use) - u;
    st(&t->live_req, lr);
    st(&t->live_use, lu);
    inc(&t->frees);
    if (lr < ld(&t->fold_req) - AS__FOLD_BYTES || lu < ld(&t->fold_use) - AS__FOLD_BYTES)
        fold_one(t, g, sr, su);
}

void as__discharge(as_arena *a, as__tblock *b, unsigned tag, unsigned layer,
                   int64_t r, int64_t u)
{
    int64_t sr = 0, su = 0;
    discharge_one(&b->c[tag], &a->g[tag], r, u, &sr, &su);
    if (sr || su)
        total_add(a, sr, su);              /* the total charges the tags' sum */
    discharge_one(&b->c[AS_TAG_MAX + layer], &a->g[AS_TAG_MAX + layer], r, u, &sr, &su);
}

/* live and folded move together: the thread's pending delta is unchanged,
 * and G (the tag's, the layer's, the total) drops at once. */
static void remote_one(as__tcounter *t, as__gcounter *g, int64_t r, int64_t u)
{
    st(&t->live_req, ld(&t->live_req) - r);
    st(&t->live_use, ld(&t->live_use) - u);
    st(&t->fold_req, ld(&t->fold_req) - r);
    st(&t->fold_use, ld(&t->fold_use) - u);
    inc(&t->frees);
    atomic_fetch_sub_explicit(&g->g_req, r, RLX);
    atomic_fetch_sub_explicit(&g->g_use, u, RLX);
}

void as__discharge_remote(as_arena *a, as__tblock *b, unsigned tag, unsigned layer,
                          int64_t r, int64_t u)
{
    remote_one(&b->c[tag], &a->g[tag], r, u);
    remote_one(&b->c[AS_TAG_MAX + layer], &a->g[AS_TAG_MAX + layer], r, u);
    atomic_fetch_sub_explicit(&a->gtotal.g_req, r, RLX);
    atomic_fetch_sub_explicit(&a->gtotal.g_use, u, RLX);
}

/* ---- budget --------------------------------------------------------------- */

uint64_t as__true_live_locked(as_arena *a, uint64_t *requested)
{
    int64_t v = 0, q = 0;
    for (unsigned i = 0; i < AS_TAG_MAX; i++) {
        v += a->retired[i].live_use;
        q += a->retired[i].live_req;
    }
    for (as__tblock *b = a->blocks; b; b = b->next)
        for (unsigned i = 0; i < AS_TAG_MAX; i++) {
            v += ld(&b->c[i].live_use);
            q += ld(&b->c[i].live_req);
        }
    if (requested)
        *requested = q > 0 ? (uint64_t)q : 0;
    return v > 0 ? (uint64_t)v : 0;
}

bool as__budget_room(as_arena *a, as__tblock *b, uint64_t usable, uint64_t budget,
                     uint64_t *live)
{
    int64_t pr, pu;
    pending_tags(a, b, &pr, &pu);
    if (atomic_load_explicit(&a->gtotal.g_use, RLX) + pu + (int64_t)usable <= (int64_t)budget)
        return true;
    as__reg_lock();
    *live = as__true_live_locked(a, NULL);
    as__reg_unlock();
    return *live + usable <= budget;
}

/* Charge tag and total under the budget, against the charged total. */
static bool charge_tag_budget(as_arena *a, as__tblock *b, unsigned tag, int64_t r,
                              int64_t u, uint64_t budget)
{
    as__tcounter *t = &b->c[tag];
    as__gcounter *g = &a->gtotal;
    int64_t lr = ld(&t->live_req) + r, lu = ld(&t->live_use) + u;
    int64_t pr, pu;
    pending_tags(a, b, &pr, &pu);
    pr += r;
    pu += u;
    int64_t cur = atomic_load_explicit(&g->g_use, RLX);
    bool grows = lr > ld(&t->fold_req) || lu > ld(&t->fold_use);
    if (!grows) {                          /* covered by the tag's own frees */
        if (cur + pu > (int64_t)budget)
            return false;
    } else {
        do {
            if (cur + pu > (int64_t)budget)
                return false;
        } while (!atomic_compare_exchange_weak_explicit(&g->g_use, &cur, cur + pu,
                                                        RLX, RLX));
        int64_t nr = atomic_fetch_add_explicit(&g->g_req, pr, RLX) + pr;
        if (nr > 0)
            as__atomic_max(&g->peak_req, (uint64_t)nr);
        if (cur + pu > 0)
            as__atomic_max(&g->peak_use, (uint64_t)(cur + pu));
    }
    st(&t->live_req, lr);
    st(&t->live_use, lu);
    inc(&t->allocs);
    if (grows)
        fold_tags(a, b, &pr, &pu);         /* the total was charged above */
    return true;
}

/* The charged total says no. It may stand above the true live value by
 * frees other threads have not folded yet, so recount: charged (under the
 * registry lock, so that two recounts do not both spend the same room)
 * when the allocation fits the true value; else *live gets that value. */
__attribute__((noinline, cold))
static bool budget_recount(as_arena *a, as__tblock *b, unsigned tag, int64_t r,
                           int64_t u, uint64_t budget, uint64_t *live)
{
    as__reg_lock();
    uint64_t live_req;
    *live = as__true_live_locked(a, &live_req);
    bool fits = *live + (uint64_t)u <= budget;
    if (fits) {
        /* the peak gets the true value: G stands above it by exactly the
         * frees we just stepped around */
        as__tcounter *t = &b->c[tag];
        st(&t->live_req, ld(&t->live_req) + r);
        st(&t->live_use, ld(&t->live_use) + u);
        inc(&t->allocs);
        int64_t sr, su;
        fold_tags(a, b, &sr, &su);
        atomic_fetch_add_explicit(&a->gtotal.g_req, sr, RLX);
        atomic_fetch_add_explicit(&a->gtotal.g_use, su, RLX);
        as__atomic_max(&a->gtotal.peak_use, *live + (uint64_t)u);
        as__atomic_max(&a->gtotal.peak_req, live_req + (uint64_t)r);
    }
    as__reg_unlock();
    return fits;
}

bool as__charge_budget(as_arena *a, as__tblock *b, unsigned tag, unsigned layer,
                       int64_t r, int64_t u, uint64_t budget, uint64_t *live)
{
    if (!charge_tag_budget(a, b, tag, r, u, budget) &&
        !budget_recount(a, b, tag, r, u, budget, live))
        return false;
    charge_layer(a, b, layer, r, u);
    return true;
}

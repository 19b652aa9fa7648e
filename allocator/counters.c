/*
 * The counters behind the allocation path (the scheme: internal.h).
 *
 * Tags and layers: each thread keeps live and folded values per counter;
 * G (the charged value) moves only when a counter folds. The total has no
 * per-thread counter: a thread's live total is the sum of its tags, and it
 * charges the total exactly the sum of its tags' folded values. When a tag
 * grows past its folded value, every tag the thread has charged folds
 * (frees pending in one tag offset growth in another), so with one thread
 * the charged total equals the live total whenever it rises, and its peak
 * is exact.
 */
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#if defined(__linux__)
#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "allocator/internal.h"

#define RLX memory_order_relaxed

static inline int64_t ld(_Atomic int64_t *p) { return atomic_load_explicit(p, RLX); }
static inline void st(_Atomic int64_t *p, int64_t v) { atomic_store_explicit(p, v, RLX); }
static inline void inc(_Atomic uint64_t *p)
{
    atomic_store_explicit(p, atomic_load_explicit(p, RLX) + 1, RLX);
}

/* ---- the G lock (internal.h) ---------------------------------------------- */

__attribute__((noinline, cold))
void as__glock_wait(as_arena *a)
{
    for (unsigned spins = 0;; spins++) {
        if (!atomic_load_explicit(&a->glock, RLX) &&
            !atomic_exchange_explicit(&a->glock, 1, memory_order_acquire))
            return;
        if (spins >= 64)
            sched_yield();                 /* the holder may be preempted */
#if defined(__x86_64__) || defined(__i386__)
        else
            __builtin_ia32_pause();
#endif
    }
}

/* membarrier(PRIVATE_EXPEDITED): a full barrier on every running thread of
 * the process; registered once. Without it (old kernel, seccomp) no arena
 * is biased. */
static pthread_once_t g_mb_once = PTHREAD_ONCE_INIT;
static bool g_mb_ok;

static void mb_register(void)
{
#if defined(__linux__) && defined(SYS_membarrier)
    long q = syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
    g_mb_ok = q > 0 && (q & MEMBARRIER_CMD_PRIVATE_EXPEDITED) &&
              syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0;
#endif
}

static void mb_all_threads(void)
{
#if defined(__linux__) && defined(SYS_membarrier)
    if (syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0)
        return;
#endif
    abort();                               /* registered, so never */
}

void as__glock_bias(as_arena *a, const as__tblock *b)
{
    pthread_once(&g_mb_once, mb_register);
    if (!g_mb_ok)
        return;
    /* under glock: a holder without a block may be writing G */
    if (atomic_exchange_explicit(&a->glock, 1, memory_order_acquire))
        as__glock_wait(a);
    atomic_store_explicit(&a->bias, b->id, RLX);
    atomic_store_explicit(&a->glock, 0, memory_order_release);
}

void as__glock_unbias(as_arena *a, const as__tblock *b)
{
    if (atomic_load_explicit(&a->bias, RLX) != b->id)
        return;
    if (atomic_exchange_explicit(&a->glock, 1, memory_order_acquire))
        as__glock_wait(a);                 /* a revoker may be at work */
    if (atomic_load_explicit(&a->bias, RLX) == b->id)
        atomic_store_explicit(&a->bias, 0, RLX);   /* b is not inside: no barrier */
    atomic_store_explicit(&a->glock, 0, memory_order_release);
}

/* glock held, bias set: clear it for good and wait for its owner to leave. */
__attribute__((noinline, cold))
void as__glock_revoke(as_arena *a)
{
    atomic_store_explicit(&a->bias, 0, RLX);
    mb_all_threads();
    for (unsigned spins = 0; atomic_load_explicit(&a->bias_busy, memory_order_acquire); spins++) {
        if (spins >= 64)
            sched_yield();
#if defined(__x86_64__) || defined(__i386__)
        else
            __builtin_ia32_pause();
#endif
    }
}

/* Under the G lock, every update of G is a plain load and store. */
static inline void g_move(_Atomic int64_t *p, int64_t d) { st(p, ld(p) + d); }
static inline void peak_raise(_Atomic uint64_t *p, int64_t v)
{
    if (v > 0 && (uint64_t)v > atomic_load_explicit(p, RLX))
        atomic_store_explicit(p, (uint64_t)v, RLX);
}

/* Sum over b's tags of live - folded (<= 0 between operations). */
static void pending_tags(as__tblock *b, int64_t *pr, int64_t *pu)
{
    int64_t r = 0, u = 0;
    for (uint32_t m = b->used; m; m &= m - 1) {
        unsigned i = (unsigned)__builtin_ctz(m);
        r += ld(&b->c[i].live_req) - ld(&b->c[i].fold_req);
        u += ld(&b->c[i].live_use) - ld(&b->c[i].fold_use);
    }
    *pr = r;
    *pu = u;
}

/* The G side of a fold (G lock held): add (pr, pu), raising the peak to
 * the charged value when G grew. */
static inline void g_add(as__gcounter *g, int64_t pr, int64_t pu)
{
    int64_t nr = ld(&g->g_req) + pr, nu = ld(&g->g_use) + pu;
    st(&g->g_req, nr);
    st(&g->g_use, nu);
    if (pr > 0)
        peak_raise(&g->peak_req, nr + ld(&g->d_req));
    if (pu > 0)
        peak_raise(&g->peak_use, nu + ld(&g->d_use));
}

/* Live values of tag i, with tag `tag` taken as (lr, lu) (not stored yet). */
static inline void tag_live(as__tblock *b, unsigned i, unsigned tag, int64_t lr, int64_t lu,
                            int64_t *vr, int64_t *vu)
{
    *vr = i == tag ? lr : ld(&b->c[i].live_req);
    *vu = i == tag ? lu : ld(&b->c[i].live_use);
}

/* Fold b's tags into G (G lock held): those the thread has charged
 * (b->used; tag `tag`, UINT_MAX: none, joins them) with tag `tag` taken at
 * live values (lr, lu) not stored yet; and their deltas' sum into the total
 * when charge_total. Returns that sum in *sr, *su. */
static void fold_tags(as_arena *a, as__tblock *b, unsigned tag, int64_t lr, int64_t lu,
                      bool charge_total, int64_t *sr, int64_t *su)
{
    int64_t vr, vu;
    if (tag < AS_TAG_MAX)
        b->used |= 1u << tag;
    *sr = *su = 0;
    for (uint32_t m = b->used; m; m &= m - 1) {
        unsigned i = (unsigned)__builtin_ctz(m);
        tag_live(b, i, tag, lr, lu, &vr, &vu);
        int64_t pr = vr - ld(&b->c[i].fold_req), pu = vu - ld(&b->c[i].fold_use);
        if (pr | pu) {
            g_add(&a->g[i], pr, pu);
            *sr += pr;
            *su += pu;
            st(&b->c[i].fold_req, vr);
            st(&b->c[i].fold_use, vu);
        }
    }
    if (charge_total)
        g_add(&a->gtotal, *sr, *su);
}

/* Fold one counter (live values (lr, lu), not stored yet; G lock held): G
 * only; the caller stores the folded values. */
static inline void fold_g(as__tcounter *t, as__gcounter *g, int64_t lr, int64_t lu)
{
    g_add(g, lr - ld(&t->fold_req), lu - ld(&t->fold_use));
}

static inline void set_counter(as__tcounter *t, int64_t lr, int64_t lu, bool folded,
                               _Atomic uint64_t *count)
{
    st(&t->live_req, lr);
    st(&t->live_use, lu);
    inc(count);
    if (folded) {
        st(&t->fold_req, lr);
        st(&t->fold_use, lu);
    }
}

void as__tblock_fold(as__tblock *b)
{
    as_arena *a = b->arena;
    int64_t sr, su;
    bool gb = as__glock(a, b);
    fold_tags(a, b, UINT_MAX, 0, 0, true, &sr, &su);
    for (unsigned i = 0, n = atomic_load(&a->nlayers); i < n; i++) {
        as__tcounter *t = &b->c[AS_TAG_MAX + i];
        int64_t lr = ld(&t->live_req), lu = ld(&t->live_use);
        if (lr != ld(&t->fold_req) || lu != ld(&t->fold_use)) {
            fold_g(t, &a->g[AS_TAG_MAX + i], lr, lu);
            st(&t->fold_req, lr);
            st(&t->fold_use, lu);
        }
    }
    as__gunlock(a, gb);
}

/* A layer folds alone (no layer figure is derived from the others); G lock
 * held when it grows. */
static inline bool layer_grows(as__tblock *b, unsigned layer, int64_t r, int64_t u,
                               int64_t *lr, int64_t *lu)
{
    as__tcounter *t = &b->c[AS_TAG_MAX + layer];
    *lr = ld(&t->live_req) + r;
    *lu = ld(&t->live_use) + u;
    return *lr > ld(&t->fold_req) || *lu > ld(&t->fold_use);
}

/* A tag that grows past its folded value folds all the thread's tags and
 * the total; a growing layer folds itself. One G lock for both. */
void as__charge(as_arena *a, as__tblock *b, unsigned tag, unsigned layer,
                int64_t r, int64_t u)
{
    as__tcounter *t = &b->c[tag], *tl = &b->c[AS_TAG_MAX + layer];
    int64_t lr = ld(&t->live_req) + r, lu = ld(&t->live_use) + u, mr, mu, sr, su;
    bool tag_grows = lr > ld(&t->fold_req) || lu > ld(&t->fold_use);
    bool lay_grows = layer_grows(b, layer, r, u, &mr, &mu);
    if (tag_grows || lay_grows) {
        bool gb = as__glock(a, b);
        if (tag_grows)
            fold_tags(a, b, tag, lr, lu, true, &sr, &su);
        if (lay_grows)
            fold_g(tl, &a->g[AS_TAG_MAX + layer], mr, mu);
        as__gunlock(a, gb);
    }
    set_counter(tl, mr, mu, lay_grows, &tl->allocs);
    set_counter(t, lr, lu, false, &t->allocs);
}

/* A counter whose pending frees pass AS__FOLD_BYTES folds; the total
 * follows the tag's fold. */
void as__discharge(as_arena *a, as__tblock *b, unsigned tag, unsigned layer,
                   int64_t r, int64_t u)
{
    as__tcounter *tt = &b->c[tag], *tl = &b->c[AS_TAG_MAX + layer];
    int64_t lr = ld(&tt->live_req) - r, lu = ld(&tt->live_use) - u;
    int64_t mr = ld(&tl->live_req) - r, mu = ld(&tl->live_use) - u;
    int64_t dr = lr - ld(&tt->fold_req), du = lu - ld(&tt->fold_use);
    int64_t er = mr - ld(&tl->fold_req), eu = mu - ld(&tl->fold_use);
    bool tag_folds = dr < -AS__FOLD_BYTES || du < -AS__FOLD_BYTES;
    bool layer_folds = er < -AS__FOLD_BYTES || eu < -AS__FOLD_BYTES;
    if (tag_folds || layer_folds) {
        bool gb = as__glock(a, b);
        if (tag_folds) {
            g_move(&a->g[tag].g_req, dr);
            g_move(&a->g[tag].g_use, du);
            g_move(&a->gtotal.g_req, dr);
            g_move(&a->gtotal.g_use, du);
        }
        if (layer_folds) {
            g_move(&a->g[AS_TAG_MAX + layer].g_req, er);
            g_move(&a->g[AS_TAG_MAX + layer].g_use, eu);
        }
        as__gunlock(a, gb);
    }
    set_counter(tt, lr, lu, tag_folds, &tt->frees);
    set_counter(tl, mr, mu, layer_folds, &tl->frees);
}

/* live and folded move together: the thread's pending delta is unchanged,
 * and G (the tag's, the layer's; G lock held) drops at once. */
static void remote_one(as__tcounter *t, as__gcounter *g, int64_t r, int64_t u)
{
    st(&t->live_req, ld(&t->live_req) - r);
    st(&t->live_use, ld(&t->live_use) - u);
    st(&t->fold_req, ld(&t->fold_req) - r);
    st(&t->fold_use, ld(&t->fold_use) - u);
    inc(&t->frees);
    g_move(&g->g_req, -r);
    g_move(&g->g_use, -u);
}

void as__discharge_remote(as_arena *a, as__tblock *b, unsigned tag, unsigned layer,
                          int64_t r, int64_t u)
{
    bool gb = as__glock(a, b);
    remote_one(&b->c[tag], &a->g[tag], r, u);
    remote_one(&b->c[AS_TAG_MAX + layer], &a->g[AS_TAG_MAX + layer], r, u);
    g_move(&a->gtotal.g_req, -r);
    g_move(&a->gtotal.g_use, -u);
    as__gunlock(a, gb);
}

/* ---- direct blocks (the common path: internal.h) ---------------------------- */

/* The peaks of g rise to its charged values. */
static inline void peaks_to_charged(as__gcounter *g)
{
    peak_raise(&g->peak_req, ld(&g->g_req) + ld(&g->d_req));
    peak_raise(&g->peak_use, ld(&g->g_use) + ld(&g->d_use));
}

__attribute__((noinline, cold))
void as__direct_peaks(as_arena *a, as__tblock *b, unsigned tag, unsigned layer,
                      bool raise_total)
{
    as__tcounter *tl = &b->c[AS_TAG_MAX + layer];
    int64_t pr, pu;
    pending_tags(b, &pr, &pu);
    if (pr | pu) {                         /* <= 0: G only shrinks */
        fold_tags(a, b, UINT_MAX, 0, 0, false, &pr, &pu);
        g_move(&a->gtotal.g_req, pr);
        g_move(&a->gtotal.g_use, pu);
    }
    int64_t lr = ld(&tl->live_req), lu = ld(&tl->live_use);
    if (lr != ld(&tl->fold_req) || lu != ld(&tl->fold_use)) {
        fold_g(tl, &a->g[AS_TAG_MAX + layer], lr, lu);
        st(&tl->fold_req, lr);
        st(&tl->fold_use, lu);
    }
    if (raise_total)
        peaks_to_charged(&a->gtotal);
    peaks_to_charged(&a->g[tag]);
    peaks_to_charged(&a->g[AS_TAG_MAX + layer]);
}

/* ---- budget --------------------------------------------------------------- */

/* The charged total's usable bytes (no lock: a first look). */
static inline int64_t charged_total(as_arena *a)
{
    return ld(&a->gtotal.g_use) + ld(&a->gtotal.d_use);
}

uint64_t as__true_live_locked(as_arena *a, uint64_t *requested)
{
    int64_t v = ld(&a->gtotal.d_use), q = ld(&a->gtotal.d_req);
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
    pending_tags(b, &pr, &pu);
    if (charged_total(a) + pu + (int64_t)usable <= (int64_t)budget)
        return true;
    as__reg_lock();
    *live = as__true_live_locked(a, NULL);
    as__reg_unlock();
    return *live + usable <= budget;
}

/* Charge tag and total under the budget, against the charged total (G
 * lock held, so two threads never both spend the same room). */
static bool charge_tag_budget(as_arena *a, as__tblock *b, unsigned tag, int64_t r,
                              int64_t u, uint64_t budget)
{
    as__tcounter *t = &b->c[tag];
    int64_t lr = ld(&t->live_req) + r, lu = ld(&t->live_use) + u;
    int64_t pr, pu;
    pending_tags(b, &pr, &pu);
    if (charged_total(a) + pu + u > (int64_t)budget)
        return false;
    if (lr > ld(&t->fold_req) || lu > ld(&t->fold_use))
        fold_tags(a, b, tag, lr, lu, true, &pr, &pu);
    /* else covered by the tag's own frees */
    set_counter(t, lr, lu, false, &t->allocs);
    return true;
}

/* Charge the layer (G lock held). */
static void charge_layer_locked(as_arena *a, as__tblock *b, unsigned layer, int64_t r,
                                int64_t u)
{
    as__tcounter *t = &b->c[AS_TAG_MAX + layer];
    int64_t lr, lu;
    bool grows = layer_grows(b, layer, r, u, &lr, &lu);
    if (grows)
        fold_g(t, &a->g[AS_TAG_MAX + layer], lr, lu);
    set_counter(t, lr, lu, grows, &t->allocs);
}

/* The charged total says no. It may stand above the true live value by
 * frees other threads have not folded yet, so recount: charged (under the
 * registry lock, so that two recounts do not both spend the same room)
 * when the allocation fits the true value; else *live gets that value. */
__attribute__((noinline, cold))
static bool budget_recount(as_arena *a, as__tblock *b, unsigned tag, unsigned layer,
                           int64_t r, int64_t u, uint64_t budget, uint64_t *live)
{
    as__reg_lock();
    uint64_t live_req;
    *live = as__true_live_locked(a, &live_req);
    bool fits = *live + (uint64_t)u <= budget;
    if (fits) {
        /* the peak gets the true value: G stands above it by exactly the
         * frees we just stepped around */
        as__tcounter *t = &b->c[tag];
        int64_t lr = ld(&t->live_req) + r, lu = ld(&t->live_use) + u, sr, su;
        bool gb = as__glock(a, b);
        fold_tags(a, b, tag, lr, lu, false, &sr, &su);
        set_counter(t, lr, lu, false, &t->allocs);
        g_move(&a->gtotal.g_req, sr);
        g_move(&a->gtotal.g_use, su);
        peak_raise(&a->gtotal.peak_use, (int64_t)(*live + (uint64_t)u));
        peak_raise(&a->gtotal.peak_req, (int64_t)(live_req + (uint64_t)r));
        charge_layer_locked(a, b, layer, r, u);
        as__gunlock(a, gb);
    }
    as__reg_unlock();
    return fits;
}

bool as__charge_budget(as_arena *a, as__tblock *b, unsigned tag, unsigned layer,
                       int64_t r, int64_t u, uint64_t budget, uint64_t *live)
{
    bool gb = as__glock(a, b);
    bool ok = charge_tag_budget(a, b, tag, r, u, budget);
    if (ok)
        charge_layer_locked(a, b, layer, r, u);
    as__gunlock(a, gb);
    return ok || budget_recount(a, b, tag, layer, r, u, budget, live);
}

bool as__direct_charge_budget(as_arena *a, as__tblock *b, unsigned tag, unsigned layer,
                              int64_t r, int64_t u, uint64_t budget, uint64_t *live)
{
    int64_t pr, pu;
    bool gb = as__glock(a, b);
    pending_tags(b, &pr, &pu);
    bool ok = charged_total(a) + pu + u <= (int64_t)budget;
    if (ok)
        as__direct_charge_locked(a, b, tag, layer, r, u, true);
    as__gunlock(a, gb);
    if (ok)
        return true;
    /* as budget_recount: the true live value decides, and is the peak */
    as__reg_lock();
    uint64_t live_req;
    *live = as__true_live_locked(a, &live_req);
    bool fits = *live + (uint64_t)u <= budget;
    if (fits) {
        gb = as__glock(a, b);
        as__direct_charge_locked(a, b, tag, layer, r, u, false);
        peak_raise(&a->gtotal.peak_use, (int64_t)(*live + (uint64_t)u));
        peak_raise(&a->gtotal.peak_req, (int64_t)(live_req + (uint64_t)r));
        as__gunlock(a, gb);
    }
    as__reg_unlock();
    return fits;
}

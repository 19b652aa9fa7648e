/*
 * Store accounting: per kind, per layer (arena layer id), per policy and in
 * total. Every counter is an atomic updated on the save / restore / release
 * paths; peaks are atomic maxima taken at update time (a sampler would miss
 * them). as_store_stats_take copies the atomics without stopping anyone;
 * only the layer name / last-policy strings are copied under layer_mu.
 *
 * Stored bytes are the requested sizes of the blocks a policy allocated
 * through as_pctx_alloc (tag saved, the item's layer), plus adopted blocks
 * and bytes declared with as_pctx_account; they match the arena's
 * live_requested of the saved tag when no adopted block is held (adopted
 * blocks stay under the tag they were allocated with).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/store_internal.h"
#include "util/err.h"

static void add_live(_Atomic uint64_t *live, _Atomic uint64_t *peak, int64_t d)
{
    if (d == 0)
        return;
    uint64_t now = atomic_fetch_add(live, (uint64_t)d) + (uint64_t)d;
    if (d > 0) {
        uint64_t p = atomic_load_explicit(peak, memory_order_relaxed);
        while (now > p &&
               !atomic_compare_exchange_weak(peak, &p, now))
            ;
    }
}

static void charge1(as_acct *a, int64_t draw, int64_t dstored)
{
    add_live(&a->raw_live, &a->raw_peak, draw);
    add_live(&a->stored_live, &a->stored_peak, dstored);
}

#define FOR_GROUPS(s, g, a)                                                 \
    as_acct *grp_[4] = {&(s)->total, &(s)->kinds[(g)->kind],                \
                        &(s)->layers[(g)->layer].acct,                      \
                        &(s)->policies[(g)->policy]};                       \
    for (int gi_ = 0; gi_ < 4; gi_++)                                       \
        for (as_acct *a = grp_[gi_]; a; a = NULL)

void as__acct_charge(as_store *s, const as_groups *g, int64_t draw,
                     int64_t dstored)
{
    FOR_GROUPS(s, g, a) charge1(a, draw, dstored);
}

int as__acct_reserve(as_store *s, const as_groups *g, uint64_t n,
                     const char *layer)
{
    uint64_t budget = atomic_load_explicit(&s->saved_budget,
                                           memory_order_relaxed);
    if (!budget || !n) {
        as__acct_charge(s, g, 0, (int64_t)n);
        return 0;
    }
    /* Compare-and-add on the total: concurrent saves cannot pass the
     * budget together; the other groups follow. */
    uint64_t cur = atomic_load(&s->total.stored_live);
    do {
        if (cur + n > budget) {
            as__seterr(s, "save (layer %s, %s): saved-bytes budget %llu "
                       "exceeded (%llu bytes live, %llu more asked)", layer,
                       as_kind_name(g->kind), (unsigned long long)budget,
                       (unsigned long long)cur, (unsigned long long)n);
            return AS_EBUDGET;
        }
    } while (!atomic_compare_exchange_weak(&s->total.stored_live, &cur,
                                           cur + n));
    uint64_t now = cur + n, p = atomic_load(&s->total.stored_peak);
    while (now > p && !atomic_compare_exchange_weak(&s->total.stored_peak,
                                                    &p, now))
        ;
    as_acct *grp[3] = {&s->kinds[g->kind], &s->layers[g->layer].acct,
                       &s->policies[g->policy]};
    for (int i = 0; i < 3; i++)
        add_live(&grp[i]->stored_live, &grp[i]->stored_peak, (int64_t)n);
    return 0;
}

void as__acct_count(as_store *s, const as_groups *g, int stat, uint64_t n)
{
    FOR_GROUPS(s, g, a) {
        _Atomic uint64_t *c = stat == AS_STAT_SAVE ? &a->saves
                            : stat == AS_STAT_RESTORE ? &a->restores
                            : stat == AS_STAT_RELEASE ? &a->releases
                            : &a->fallbacks;
        atomic_fetch_add_explicit(c, n, memory_order_relaxed);
    }
}

void as__acct_time(as_store *s, const as_groups *g, bool encode, uint64_t ns)
{
    FOR_GROUPS(s, g, a)
        atomic_fetch_add_explicit(encode ? &a->encode_ns : &a->decode_ns, ns,
                                  memory_order_relaxed);
}

void as__acct_fallback(as_store *s, const as_groups *g, const char *reason)
{
    as__acct_count(s, g, AS_STAT_FALLBACK, 1);
    pthread_mutex_lock(&s->layer_mu);
    snprintf(s->layers[g->layer].last_fallback,
             sizeof s->layers[g->layer].last_fallback, "%s", reason);
    pthread_mutex_unlock(&s->layer_mu);
}

void as__acct_meta(as_store *s, const as_groups *g, const char *kind,
                   const char *layer, const char *what)
{
    uint64_t n = 0;
    FOR_GROUPS(s, g, a) {
        uint64_t v = atomic_fetch_add_explicit(&a->meta_mismatches, 1,
                                               memory_order_relaxed) + 1;
        if (a == &s->layers[g->layer].acct)
            n = v;
    }
    pthread_mutex_lock(&s->layer_mu);
    snprintf(s->layers[g->layer].last_meta,
             sizeof s->layers[g->layer].last_meta, "%s", what);
    pthread_mutex_unlock(&s->layer_mu);
    if (n & (n - 1))
        return;   /* logged at 1, 2, 4, 8, ...: bounded, never silent */
    fprintf(stderr, "actstore: warning: store %s, layer %s (%s): %s "
            "(metadata mismatch %llu of this layer; %s)\n",
            s->label[0] ? s->label : "-", layer, kind, what,
            (unsigned long long)n, s->strict ? "save failed: strict mode"
                                             : "kept by the fallback");
}

static uint64_t name_hash(const char *name)
{
    uint64_t h = 1469598103934665603ull;
    for (const char *c = name; *c; c++)
        h = (h ^ (unsigned char)*c) * 1099511628211ull;
    return h | 1;   /* never 0 (0 = no policy yet) */
}

/* Every save names its policy; the lock is only taken when it changed. */
void as__acct_policy_name(as_store *s, uint16_t layer, const char *desc)
{
    as_layer_acct *l = &s->layers[layer];
    uint64_t h = name_hash(desc);
    if (atomic_load_explicit(&l->policy_hash, memory_order_relaxed) == h)
        return;
    pthread_mutex_lock(&s->layer_mu);
    as__strlcpy(l->policy, desc, sizeof l->policy);
    atomic_store_explicit(&l->policy_hash, h, memory_order_relaxed);
    pthread_mutex_unlock(&s->layer_mu);
}

/* Layer name -> arena layer id, cached in a small open-addressing table so
 * the arena's registry is asked once per name. */
int as__layer_id(as_store *s, const char *name, uint16_t *id)
{
    *id = AS_LAYER_NONE;
    if (!name || !name[0])
        return 0;
    uint64_t h = name_hash(name);
    size_t mask = sizeof s->ltab / sizeof s->ltab[0] - 1;
    /* Fast path, lock-free: the name is already known. */
    size_t i = h & mask;
    for (size_t probes = 0; probes <= mask; probes++, i = (i + 1) & mask) {
        uint16_t e = atomic_load_explicit(&s->ltab[i], memory_order_acquire);
        if (e == 0)
            break;
        if (!strncmp(s->layers[e].name, name, sizeof s->layers[e].name - 1)) {
            *id = e;
            return 0;
        }
    }
    pthread_mutex_lock(&s->layer_mu);
    i = h & mask;
    for (size_t probes = 0; probes <= mask; probes++, i = (i + 1) & mask) {
        uint16_t e = atomic_load_explicit(&s->ltab[i], memory_order_relaxed);
        if (e == 0)
            break;
        if (!strncmp(s->layers[e].name, name, sizeof s->layers[e].name - 1)) {
            *id = e;
            pthread_mutex_unlock(&s->layer_mu);
            return 0;
        }
    }
    uint16_t nid = 0;
    int rc = as_arena_layer_register(s->arena, name, &nid);
    if (rc == 0 && nid != AS_LAYER_NONE && nid < AS_LAYER_MAX) {
        snprintf(s->layers[nid].name, sizeof s->layers[nid].name, "%s", name);
        if (atomic_load_explicit(&s->ltab[i], memory_order_relaxed) == 0)
            atomic_store_explicit(&s->ltab[i], nid, memory_order_release);
        uint32_t n = atomic_load(&s->nlayers);
        if (nid + 1u > n)
            atomic_store(&s->nlayers, nid + 1u);
        *id = nid;
    }
    pthread_mutex_unlock(&s->layer_mu);
    return 0;   /* a full layer table is not an error: attributed to none */
}

/* Sampler hook: per-kind stored bytes in the arena timeline (docs/store.md
 * "Timeline extra[]"): extra[k] = stored_live of kind k (k < AS_KIND_COUNT),
 * extra[12] = total raw_live, [13] = total stored_live, [14] = live handles,
 * [15] = fallbacks (cumulative). */
void as__acct_sample(void *ud, uint64_t extra[AS_SAMPLE_EXTRA])
{
    _Static_assert(AS_KIND_COUNT <= 12, "extra[] mapping assumes 12 kinds");
    as_store *s = ud;
    for (int k = 0; k < AS_KIND_COUNT; k++)
        extra[k] = atomic_load_explicit(&s->kinds[k].stored_live,
                                        memory_order_relaxed);
    extra[12] = atomic_load(&s->total.raw_live);
    extra[13] = atomic_load(&s->total.stored_live);
    extra[14] = atomic_load(&s->live_handles);
    extra[15] = atomic_load(&s->total.fallbacks);
}

int as_store_report_metric(as_store *s, const char *name, double value)
{
    size_t n = name ? strlen(name) : 0;
    if (!s || n < 1 || n >= sizeof s->metrics[0].name ||
        strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789_") != n)
        return AS_EINVAL;
    int rc = 0;
    pthread_mutex_lock(&s->layer_mu);
    size_t i = 0;
    while (i < s->nmetrics && strcmp(s->metrics[i].name, name))
        i++;
    if (i == s->nmetrics) {
        if (i == AS_STORE_METRICS_MAX) {
            rc = AS_ERANGE;
            goto out;
        }
        memcpy(s->metrics[i].name, name, n + 1);
        s->nmetrics++;
    }
    s->metrics[i].value = value;
    s->metrics[i].step = atomic_load(&s->step);
    s->metrics[i].count++;
out:
    pthread_mutex_unlock(&s->layer_mu);
    if (rc)
        as__seterr(s, "report_metric '%s': already %d names (AS_STORE_METRICS_MAX)", name,
                   AS_STORE_METRICS_MAX);
    return rc;
}

static void copy_counter(as_store_counter *o, as_acct *a)
{
    o->raw_live = atomic_load(&a->raw_live);
    o->raw_peak = atomic_load(&a->raw_peak);
    o->stored_live = atomic_load(&a->stored_live);
    o->stored_peak = atomic_load(&a->stored_peak);
    /* A save between the two loads raises live before it raises the peak;
     * the live value read was reached, so the peak is at least that. */
    if (o->raw_peak < o->raw_live)
        o->raw_peak = o->raw_live;
    if (o->stored_peak < o->stored_live)
        o->stored_peak = o->stored_live;
    o->saves = atomic_load(&a->saves);
    o->restores = atomic_load(&a->restores);
    o->releases = atomic_load(&a->releases);
    o->fallbacks = atomic_load(&a->fallbacks);
    o->meta_mismatches = atomic_load(&a->meta_mismatches);
    o->encode_ns = atomic_load(&a->encode_ns);
    o->decode_ns = atomic_load(&a->decode_ns);
}

int as_store_stats_take(as_store *s, as_store_stats *out)
{
    if (!s || !out)
        return AS_EINVAL;
    memset(out, 0, sizeof *out);
    out->label = s->label;
    out->step = atomic_load(&s->step);
    out->phase = atomic_load(&s->phase);
    copy_counter(&out->total, &s->total);
    for (int k = 0; k < AS_KIND_COUNT; k++)
        copy_counter(&out->kinds[k], &s->kinds[k]);
    out->live_handles = atomic_load(&s->live_handles);
    out->auto_released = atomic_load(&s->auto_released);
    out->offload_fallbacks = atomic_load(&s->offload_fallbacks);

    uint32_t nl = atomic_load(&s->nlayers);
    size_t npol = as__policy_count();
    /* One block: layer entries, their names, policy entries. */
    size_t lsz = (size_t)nl * (sizeof(as_store_layer_stats) + 64);
    char *mem = as__smalloc(s, lsz + npol * sizeof(as_store_policy_stats) + 1);
    if (!mem)
        return AS_ENOMEM;
    out->layers = (as_store_layer_stats *)(void *)mem;
    char *names = mem + (size_t)nl * sizeof(as_store_layer_stats);
    out->policies = (as_store_policy_stats *)(void *)(mem + lsz);
    pthread_mutex_lock(&s->layer_mu);
    out->nmetrics = s->nmetrics;
    memcpy(out->metrics, s->metrics, s->nmetrics * sizeof s->metrics[0]);
    for (uint32_t i = 0; i < nl; i++) {
        as_layer_acct *l = &s->layers[i];
        if (i != AS_LAYER_NONE && !l->name[0])
            continue;
        if (!atomic_load(&l->acct.saves) && !atomic_load(&l->acct.meta_mismatches))
            continue;
        as_store_layer_stats *o = &out->layers[out->nlayers];
        char *nm = names + out->nlayers * 64;
        out->nlayers++;
        snprintf(nm, 64, "%s", i == AS_LAYER_NONE ? "(none)" : l->name);
        o->name = nm;
        memcpy(o->policy, l->policy, sizeof o->policy);
        memcpy(o->last_fallback, l->last_fallback, sizeof o->last_fallback);
        memcpy(o->last_meta_mismatch, l->last_meta,
               sizeof o->last_meta_mismatch);
        copy_counter(&o->c, &l->acct);
        o->fallbacks_by_reason = o->c.fallbacks;
    }
    pthread_mutex_unlock(&s->layer_mu);
    for (size_t i = 0; i < npol; i++) {
        /* A policy shows once used: saved under, fallen back from, or
         * holding items re-planned to it (inverse has no saves of its own). */
        as_acct *p = &s->policies[i];
        if (!atomic_load(&p->saves) && !atomic_load(&p->fallbacks) &&
            !atomic_load(&p->raw_peak) && !atomic_load(&p->restores))
            continue;
        as_store_policy_stats *o = &out->policies[out->npolicies++];
        snprintf(o->name, sizeof o->name, "%s", as__policy_at(i)->name);
        copy_counter(&o->c, &s->policies[i]);
    }
    pthread_mutex_lock(&s->mu);
    snprintf(out->spec, sizeof out->spec, "%s", s->rules->spec);
    pthread_mutex_unlock(&s->mu);
    return 0;
}

void as_store_stats_free(as_store_stats *st)
{
    if (!st)
        return;
    free(st->layers);   /* one block with names and policies */
    st->layers = NULL;
    st->policies = NULL;
    st->nlayers = st->npolicies = 0;
}

static void reset1(as_acct *a)
{
    atomic_store(&a->raw_peak, atomic_load(&a->raw_live));
    atomic_store(&a->stored_peak, atomic_load(&a->stored_live));
}

void as_store_reset_peaks(as_store *s)
{
    if (!s)
        return;
    reset1(&s->total);
    for (int k = 0; k < AS_KIND_COUNT; k++)
        reset1(&s->kinds[k]);
    for (size_t i = 0; i < AS_POLICY_MAX; i++)
        reset1(&s->policies[i]);
    uint32_t nl = atomic_load(&s->nlayers);
    for (uint32_t i = 0; i < nl; i++)
        reset1(&s->layers[i].acct);
}

/* ---- last error: per thread, per store ---------------------------------- */

static _Thread_local as_last_err tls_err;

void as__seterr(const as_store *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    as_last_err_vset(&tls_err, s->id, fmt, ap);
    va_end(ap);
}

const char *as_store_last_error(const as_store *s)
{
    return s ? as_last_err_get(&tls_err, s->id, "") : "store is NULL";
}

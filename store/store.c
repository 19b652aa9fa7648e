/*
 * The activation store: lifetime, handles, release, steps and phases.
 * (save.c: save and re-planning; restore.c: restores and materialization;
 * pctx.c: the services policies call.)
 *
 * Handles are 64-bit values:
 *     bits 63..48  store id (1..65535, unique among live stores)
 *     bits 47..40  check byte = hash(store, generation, slot)
 *     bits 39..20  generation of the slot (1..2^20-1, bumped at release)
 *     bits 19..0   slot index
 * A handle of another store is "foreign", a handle whose check byte or slot
 * does not hold is "forged", one whose generation is behind is "released"
 * (slot free) or "stale" (slot reused). Nothing is dereferenced before the
 * slot index is checked against the slots issued, under the store mutex.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/policies/auto/auto.h"
#include "store/store_internal.h"

/* Live store ids (for "foreign" versus "forged" messages). */
static _Atomic uint64_t live_ids[65536 / 64];
static _Atomic uint32_t next_id;

static uint8_t handle_check(uint32_t id, uint32_t gen, uint32_t slot)
{
    uint64_t x = ((uint64_t)id << 40) ^ ((uint64_t)gen << 20) ^ slot;
    x *= 0x9e3779b97f4a7c15ull;
    return (uint8_t)(x >> 56);
}

static as_handle make_handle(const as_store *s, uint32_t slot, uint32_t gen)
{
    uint64_t v = ((uint64_t)s->id << 48) |
                 ((uint64_t)handle_check(s->id, gen, slot) << 40) |
                 ((uint64_t)gen << 20) | slot;
    return (as_handle){v};
}

static as_slot *slot_at(as_store *s, uint32_t i)
{
    return &s->chunks[i / AS_SLOTS_PER_CHUNK][i % AS_SLOTS_PER_CHUNK];
}

/* Under mu: decode and validate; on error the message says why. */
static int check_locked(as_store *s, as_handle h, as_slot **out,
                        const char *what)
{
    uint64_t v = h.v;
    uint32_t id = (uint32_t)(v >> 48), chk = (uint32_t)(v >> 40) & 0xff;
    uint32_t gen = (uint32_t)(v >> 20) & ((1u << AS_GEN_BITS) - 1);
    uint32_t slot = (uint32_t)v & ((1u << AS_SLOT_BITS) - 1);
    if (v == 0) {
        as__seterr(s, "%s: null handle", what);
        return AS_EHANDLE;
    }
    if (id != s->id) {
        bool live = atomic_load(&live_ids[id / 64]) & (1ull << (id % 64));
        if (live)
            as__seterr(s, "%s: foreign handle 0x%016llx (it belongs to store "
                       "#%u, this is store #%u '%s')", what,
                       (unsigned long long)v, id, s->id, s->label);
        else
            as__seterr(s, "%s: forged handle 0x%016llx (no store #%u)", what,
                       (unsigned long long)v, id);
        return AS_EHANDLE;
    }
    if (chk != handle_check(id, gen, slot) || gen == 0 || slot >= s->nslots) {
        as__seterr(s, "%s: forged handle 0x%016llx (never issued by store "
                   "'%s')", what, (unsigned long long)v, s->label);
        return AS_EHANDLE;
    }
    as_slot *sl = slot_at(s, slot);
    if (sl->gen == gen && !sl->live && sl->rows) {
        int64_t done, rows;
        as__rows_progress(sl->rows, &done, &rows);
        as__seterr(s, "%s: handle 0x%016llx is a row save in progress (%lld "
                   "of %lld rows appended; as_store_save_rows_end finishes "
                   "it)", what, (unsigned long long)v, (long long)done,
                   (long long)rows);
        *out = sl;
        return AS_ESTATE;
    }
    if (sl->gen != gen || !sl->live) {
        if (!sl->live && sl->gen == ((gen + 1) & ((1u << AS_GEN_BITS) - 1)))
            as__seterr(s, "%s: released handle 0x%016llx", what,
                       (unsigned long long)v);
        else
            as__seterr(s, "%s: stale handle 0x%016llx (slot %u was released "
                       "and reused)", what, (unsigned long long)v, slot);
        return AS_EHANDLE;
    }
    *out = sl;
    return 0;
}

int as__lookup(as_store *s, as_handle h, as_item **it, const char *what)
{
    as_slot *sl;
    pthread_mutex_lock(&s->mu);
    int rc = check_locked(s, h, &sl, what);
    if (rc == 0) {
        *it = sl->item;
        atomic_fetch_add(&sl->item->refs, 1);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int as__lookup_rep(as_store *s, as_handle h, as_item **it, as_rep **r,
                   const char *what)
{
    as_slot *sl;
    pthread_mutex_lock(&s->mu);
    int rc = check_locked(s, h, &sl, what);
    if (rc == 0) {
        *it = sl->item;
        atomic_fetch_add(&sl->item->refs, 1);
        *r = sl->item->rep;
        atomic_fetch_add(&(*r)->refs, 1);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int as__peek(as_store *s, as_handle h, const char *what, as_peek *p)
{
    if (!s)
        return AS_EINVAL;
    as_item *it;
    as_rep *r;
    int rc = as__lookup_rep(s, h, &it, &r, what);
    if (rc < 0)
        return rc;
    p->shape = it->shape;
    p->g = r->g;
    p->auto_group = r->auto_group;
    p->desc = r->desc;   /* rep structs live as long as the item */
    p->in_place = r->ops->view != NULL;
    as__rep_unref(s, r);
    as__item_unref(s, it);
    return 0;
}

as_rep *as__item_rep(as_store *s, as_item *it)
{
    pthread_mutex_lock(&s->mu);
    as_rep *r = it->rep;
    atomic_fetch_add(&r->refs, 1);
    pthread_mutex_unlock(&s->mu);
    return r;
}

/* ---- slots ------------------------------------------------------------- */

int as__slot_reserve(as_store *s, as_handle *h)
{
    pthread_mutex_lock(&s->mu);
    uint32_t i;
    if (s->free_head) {
        i = s->free_head - 1;
        s->free_head = slot_at(s, i)->next_free;
    } else {
        i = s->nslots;
        if (i >= (1u << AS_SLOT_BITS)) {
            pthread_mutex_unlock(&s->mu);
            as__seterr(s, "save: too many live handles (%u)", i);
            return AS_ERANGE;
        }
        as_slot **c = &s->chunks[i / AS_SLOTS_PER_CHUNK];
        if (!*c && !(*c = as__scalloc(s, AS_SLOTS_PER_CHUNK, sizeof **c))) {
            pthread_mutex_unlock(&s->mu);
            return AS_ENOMEM;
        }
        s->nslots++;
        slot_at(s, i)->gen = 1;
    }
    as_slot *sl = slot_at(s, i);
    sl->live = false;
    sl->item = NULL;
    sl->rows = NULL;
    *h = make_handle(s, i, sl->gen);
    pthread_mutex_unlock(&s->mu);
    return 0;
}

static void slot_free_locked(as_store *s, uint32_t i)
{
    as_slot *sl = slot_at(s, i);
    sl->live = false;
    sl->item = NULL;
    sl->rows = NULL;
    sl->gen = (sl->gen + 1) & ((1u << AS_GEN_BITS) - 1);
    if (sl->gen == 0)
        sl->gen = 1;
    sl->next_free = s->free_head;
    s->free_head = i + 1;
}

void as__slot_unreserve(as_store *s, as_handle h)
{
    pthread_mutex_lock(&s->mu);
    slot_free_locked(s, (uint32_t)h.v & ((1u << AS_SLOT_BITS) - 1));
    pthread_mutex_unlock(&s->mu);
}

/* Publish a reserved slot for item (the handle's reference is already
 * counted in item->refs by the caller). */
void as__slot_publish(as_store *s, as_handle h, as_item *it)
{
    pthread_mutex_lock(&s->mu);
    as_slot *sl = slot_at(s, (uint32_t)h.v & ((1u << AS_SLOT_BITS) - 1));
    sl->item = it;
    sl->live = true;
    if (!sl->rows)   /* a finished row save keeps the step of its begin */
        sl->in_step = s->in_step;
    sl->rows = NULL;
    it->nhandles++;
    atomic_fetch_add(&s->live_handles, 1);
    pthread_mutex_unlock(&s->mu);
}

/* A reserved slot becomes an open row save: lookups report it as such,
 * release and step end abandon it. */
void as__slot_open_rows(as_store *s, as_handle h, struct as_rows *w)
{
    pthread_mutex_lock(&s->mu);
    as_slot *sl = slot_at(s, (uint32_t)h.v & ((1u << AS_SLOT_BITS) - 1));
    sl->rows = w;
    sl->in_step = s->in_step;
    pthread_mutex_unlock(&s->mu);
}

void as__slot_move(as_store *s, as_handle from, as_handle to)
{
    const uint32_t mask = (1u << AS_SLOT_BITS) - 1;
    pthread_mutex_lock(&s->mu);
    as_slot *f = slot_at(s, (uint32_t)from.v & mask);
    as_slot *t = slot_at(s, (uint32_t)to.v & mask);
    t->item = f->item;
    t->item->h0 = to;
    t->live = true;
    t->rows = NULL;
    slot_free_locked(s, (uint32_t)from.v & mask);
    pthread_mutex_unlock(&s->mu);
}

int as__slot_rows(as_store *s, as_handle h, struct as_rows **out,
                  const char *what)
{
    as_slot *sl = NULL;
    *out = NULL;
    pthread_mutex_lock(&s->mu);
    int rc = check_locked(s, h, &sl, what);
    if (rc == 0) {
        as__seterr(s, "%s: handle 0x%016llx is not a row save in progress "
                   "(finished already)", what, (unsigned long long)h.v);
        rc = AS_ESTATE;
    } else if (rc == AS_ESTATE && sl && sl->rows) {
        *out = sl->rows;
        rc = as__rows_enter(sl->rows) ? 0 : AS_ESTATE;
        if (rc)
            as__seterr(s, "%s: handle 0x%016llx: another call on this row "
                       "save is running", what, (unsigned long long)h.v);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* ---- items --------------------------------------------------------------- */

static void item_free(as_store *s, as_item *first);

static void rep_contents_free(as_store *s, as_rep *r, as_item **zeroed,
                              size_t *nzeroed, size_t cap)
{
    as_item *owner = r->owner;
    if (r->state && r->ops->drop)
        r->ops->drop(r->params, r->state);
    r->state = NULL;
    for (size_t i = 0; i < r->nblocks; i++)
        as_free(s->arena, &r->blocks[i]);
    if (r->adopted.ptr)
        as_free(s->arena, &r->adopted);
    as__acct_charge(s, &r->g, 0, -(int64_t)r->stored);
    r->stored = 0;
    free(r->blocks);
    r->blocks = NULL;
    r->nblocks = r->cap = 0;
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < r->ndeps; i++) {
        as_item *d = r->deps[i].item;
        for (size_t j = 0; owner && j < d->ndependents; j++)
            if (d->dependents[j] == owner) {
                d->dependents[j] = d->dependents[--d->ndependents];
                break;
            }
        as__mat_maybe_evict_locked(s, d);
    }
    pthread_mutex_unlock(&s->mu);
    for (size_t i = 0; i < r->ndeps; i++) {
        as_item *d = r->deps[i].item;
        if (atomic_fetch_sub(&d->refs, 1) == 1) {
            if (*nzeroed < cap)
                zeroed[(*nzeroed)++] = d;
            else
                item_free(s, d);
        }
    }
    free(r->deps);
    r->deps = NULL;
    r->ndeps = r->depcap = 0;
    if (r->rules)
        as__rules_unref(r->rules);
    r->rules = NULL;
}

/* Free an item whose last reference is gone. Dependencies whose count drops
 * to zero are freed iteratively (chains can be thousands long). */
static void item_free(as_store *s, as_item *first)
{
    as_item *stack[64];
    size_t n = 0;
    stack[n++] = first;
    while (n) {
        as_item *it = stack[--n];
        as_rep *r = it->rep;
        if (it->pending_inverse == 1) {   /* charged to inverse, which did not apply */
            as_groups fg = r->g;
            fg.policy = (uint16_t)as__policy_index(&as_policy_inverse);
            as__acct_fallback(s, &fg, "inverse: no consumer declared this "
                              "tensor its source through an invertible fn");
        }
        pthread_mutex_lock(&s->mu);
        if (it->mat_state == AS_MAT_READY) {
            it->mat_prev->mat_next = it->mat_next;
            it->mat_next->mat_prev = it->mat_prev;
            as_free(s->arena, &it->mat);
        }
        it->mat_state = AS_MAT_NONE;
        pthread_mutex_unlock(&s->mu);
        as__acct_charge(s, &r->g, -(int64_t)it->bytes, 0);
        rep_contents_free(s, r, stack, &n, 64);
        for (as_rep *o = r->older; o; o = o->older)
            if (o->view_held)   /* retired while restore_view's data was out */
                rep_contents_free(s, o, stack, &n, 64);
        while (r) {
            as_rep *older = r->older;
            free(r);
            r = older;
        }
        free(it->dependents);
        as_item *link = it->link_src;
        free(it);
        if (link && atomic_fetch_sub(&link->refs, 1) == 1) {
            if (n < 64)
                stack[n++] = link;
            else
                item_free(s, link);
        }
    }
}

void as__item_unref(as_store *s, as_item *it)
{
    if (atomic_fetch_sub(&it->refs, 1) == 1)
        item_free(s, it);
}

void as__rep_unref(as_store *s, as_rep *r)
{
    if (atomic_fetch_sub(&r->refs, 1) == 1) {
        /* Only retired reps reach zero here (the current one is freed with
         * its item); the struct stays in the item's `older` list. */
        as_item *zeroed[16];
        size_t n = 0;
        rep_contents_free(s, r, zeroed, &n, 16);
        for (size_t i = 0; i < n; i++)
            item_free(s, zeroed[i]);
    }
}

/* ---- release, steps, phases ------------------------------------------------ */

static as_item *release_locked(as_store *s, uint32_t i)
{
    as_slot *sl = slot_at(s, i);
    as_item *it = sl->item;
    slot_free_locked(s, i);
    atomic_fetch_sub(&s->live_handles, 1);
    if (--it->nhandles == 0) {
        it->mat_pinned = false;
        as__mat_maybe_evict_locked(s, it);
    }
    return it;
}

int as_store_release(as_store *s, as_handle h)
{
    if (!s)
        return AS_EINVAL;
    if (as_handle_is_null(h))
        return 0;   /* like free(NULL): no-grad saves give null handles */
    as_slot *sl = NULL;
    pthread_mutex_lock(&s->mu);
    int rc = check_locked(s, h, &sl, "release");
    as_item *it = NULL;
    struct as_rows *w = NULL;
    if (rc == 0) {
        it = release_locked(s, (uint32_t)h.v & ((1u << AS_SLOT_BITS) - 1));
    } else if (rc == AS_ESTATE && sl && sl->rows) {   /* abandon a row save */
        w = sl->rows;
        rc = as__rows_enter(w) ? 0 : AS_ESTATE;
        if (rc == 0)
            slot_free_locked(s, (uint32_t)h.v & ((1u << AS_SLOT_BITS) - 1));
        else
            as__seterr(s, "release: handle 0x%016llx: a call on this row save "
                       "is running", (unsigned long long)h.v);
    }
    pthread_mutex_unlock(&s->mu);
    if (w && rc == 0)
        as__rows_free(s, w);
    if (rc < 0 || w)
        return rc;
    as__acct_count(s, &it->rep->g, AS_STAT_RELEASE, 1);
    as__item_unref(s, it);
    return 0;
}

/* Release every live handle (all = true) or those saved inside the step. */
static uint64_t release_all(as_store *s, bool all)
{
    uint64_t count = 0;
    for (uint32_t base = 0;; base += 256) {
        as_item *batch[256];
        as_groups gs[256];
        struct as_rows *open[256];
        size_t n = 0, nopen = 0;
        pthread_mutex_lock(&s->mu);
        uint32_t end = s->nslots;
        for (uint32_t i = base; i < end && i < base + 256; i++) {
            as_slot *sl = slot_at(s, i);
            if (sl->rows && (all || sl->in_step)) {   /* abandoned row save */
                open[nopen++] = sl->rows;
                slot_free_locked(s, i);
            } else if (sl->live && (all || sl->in_step)) {
                batch[n] = release_locked(s, i);
                gs[n] = batch[n]->rep->g;
                n++;
            }
        }
        pthread_mutex_unlock(&s->mu);
        for (size_t k = 0; k < nopen; k++)
            as__rows_free(s, open[k]);
        for (size_t k = 0; k < n; k++) {
            as__acct_count(s, &gs[k], AS_STAT_RELEASE, 1);
            as__item_unref(s, batch[k]);
        }
        count += n + nopen;
        if (base + 256 >= end)
            break;
    }
    return count;
}

void as_store_step_begin(as_store *s, uint64_t step)
{
    if (!s)
        return;
    atomic_store(&s->step, step);
    pthread_mutex_lock(&s->mu);
    s->in_step = true;
    pthread_mutex_unlock(&s->mu);
    as_store_reset_peaks(s);
    as_arena_reset_peaks(s->arena);
    as_arena_mark_step(s->arena, step);
    as__auto_step_begin(s);
}

void as_store_step_end(as_store *s)
{
    if (!s)
        return;
    uint64_t n = release_all(s, false);
    atomic_fetch_add(&s->auto_released, n);
    pthread_mutex_lock(&s->mu);
    s->in_step = false;
    pthread_mutex_unlock(&s->mu);
    as__mat_drop_all(s, true);
    as__auto_step_end(s);
}

void as_store_phase(as_store *s, enum as_phase phase)
{
    if (!s)
        return;
    atomic_store(&s->phase, phase);
    bool on = phase == AS_PHASE_BACKWARD || phase == AS_PHASE_NONE;
    bool was = atomic_exchange(&s->cache_on, on);
    if (was && !on)
        as__mat_drop_all(s, false);
    as_arena_mark_phase(s->arena, phase);
}

bool as_store_set_grad(as_store *s, bool enabled)
{
    return s ? atomic_exchange(&s->grad, enabled) : true;
}

/* ---- lifetime ------------------------------------------------------------- */

int as_store_create(const as_store_config *cfg, as_store **out, char *err,
                    size_t errlen)
{
    static const as_store_config defaults = {0};
    if (!out)
        return AS_EINVAL;
    *out = NULL;
    if (!cfg)
        cfg = &defaults;
    if (cfg->sampler_hz > 10) {
        if (err && errlen)
            snprintf(err, errlen, "sampler_hz %u out of range 0..10",
                     cfg->sampler_hz);
        return AS_EINVAL;
    }
    as_rules *rules;
    int rc = as__rules_parse(cfg->policy, &rules, err, errlen);
    if (rc < 0)
        return rc;
    as_store *s = calloc(1, sizeof *s);
    as_layer_acct *layers = calloc(AS_LAYER_MAX, sizeof *layers);
    const char *dir = cfg->offload_dir ? cfg->offload_dir : getenv("TMPDIR");
    char *odir = strdup(dir && dir[0] ? dir : "/tmp");
    if (!s || !layers || !odir) {
        free(s);
        free(layers);
        free(odir);
        as__rules_unref(rules);
        return AS_ENOMEM;
    }
    as_arena_config ac = {.budget_bytes = cfg->budget_bytes,
                          .sampler_hz = cfg->sampler_hz};
    if ((rc = as_arena_create(&ac, &s->arena)) < 0) {
        if (err && errlen)
            snprintf(err, errlen, "cannot create the store's arena: %s",
                     as_strerror(rc));
        free(s);
        free(layers);
        free(odir);
        as__rules_unref(rules);
        return rc;
    }
    /* A unique id among live stores. */
    for (;;) {
        uint32_t id = atomic_fetch_add(&next_id, 1) % 65535u + 1u;
        uint64_t bit = 1ull << (id % 64);
        if (!(atomic_fetch_or(&live_ids[id / 64], bit) & bit)) {
            s->id = (uint16_t)id;
            break;
        }
    }
    s->layers = layers;
    s->rules = rules;
    s->offload_dir = odir;
    s->strict = cfg->strict;
    s->checksum = cfg->checksum_saved;
    if (cfg->label)
        snprintf(s->label, sizeof s->label, "%s", cfg->label);
    else
        snprintf(s->label, sizeof s->label, "store%u", s->id);
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->layer_mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->mat_list.mat_next = s->mat_list.mat_prev = &s->mat_list;
    atomic_init(&s->grad, true);
    atomic_init(&s->cache_on, true);
    as_arena_set_sample_hook(s->arena, as__acct_sample, s);
    *out = s;
    return 0;
}

void as_store_destroy(as_store *s)
{
    if (!s)
        return;
    as_arena_set_sample_hook(s->arena, NULL, NULL);
    release_all(s, true);
    as__mat_drop_all(s, true);
    as__auto_destroy(s);
    as__rules_unref(s->rules);
    as_arena_destroy(s->arena);
    for (size_t i = 0; i < AS_SLOT_CHUNKS; i++)
        free(s->chunks[i]);
    atomic_fetch_and(&live_ids[s->id / 64], ~(1ull << (s->id % 64)));
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->layer_mu);
    pthread_cond_destroy(&s->cv);
    free(s->layers);
    free(s->offload_dir);
    free(s);
}

as_arena *as_store_arena(as_store *s) { return s ? s->arena : NULL; }

const char *as_store_label(const as_store *s) { return s ? s->label : ""; }

int as_store_set_policy(as_store *s, const char *spec, char *err,
                        size_t errlen)
{
    if (!s)
        return AS_EINVAL;
    if (!spec) {   /* NULL is no spec, not "default=keep" (the config's default) */
        if (err && errlen)
            snprintf(err, errlen, "no spec (NULL); give e.g. \"default=keep\"");
        as__seterr(s, "set_policy: no spec (NULL)");
        return AS_EINVAL;
    }
    as_rules *r;
    int rc = as__rules_parse(spec, &r, err, errlen);
    if (rc < 0) {
        as__seterr(s, "set_policy: %s", err && errlen ? err : "bad spec");
        return rc;
    }
    pthread_mutex_lock(&s->mu);
    as_rules *old = s->rules;
    s->rules = r;
    pthread_mutex_unlock(&s->mu);
    as__rules_unref(old);
    return 0;
}

as_rules *as__rules_get(as_store *s)
{
    pthread_mutex_lock(&s->mu);
    as_rules *r = s->rules;
    as__rules_ref(r);
    pthread_mutex_unlock(&s->mu);
    return r;
}

/* ---- representations ------------------------------------------------------ */

void as__rep_discard(as_store *s, as_rep *r)
{
    as_item *zeroed[16];
    size_t n = 0;
    rep_contents_free(s, r, zeroed, &n, 16);
    for (size_t i = 0; i < n; i++)
        item_free(s, zeroed[i]);
    free(r);
}

/* Install r as it's representation; the old one (if any) is retired. Raw
 * bytes move to r's groups. */
void as__item_swap_rep(as_store *s, as_item *it, as_rep *r)
{
    pthread_mutex_lock(&s->mu);
    as_rep *old = it->rep;
    it->rep = r;
    if (old) {
        old->older = r->older;
        r->older = old;
    }
    pthread_mutex_unlock(&s->mu);
    if (old) {
        as__acct_charge(s, &old->g, -(int64_t)it->bytes, 0);
        as__acct_charge(s, &r->g, (int64_t)it->bytes, 0);
        as__rep_unref(s, old);
    }
}

/* Does `from` (through current representations) depend on `target`? */
static bool reaches_locked(as_item *from, as_item *target)
{
    as_item *stack[256];
    size_t n = 0, visits = 0;
    stack[n++] = from;
    while (n) {
        as_item *x = stack[--n];
        if (x == target)
            return true;
        if (++visits > 100000)
            return true;   /* absurd graph: refuse rather than loop */
        as_rep *r = x->rep;
        for (size_t i = 0; r && i < r->ndeps; i++) {
            if (n == 256)
                return true;
            stack[n++] = r->deps[i].item;
        }
    }
    return false;
}

bool as__handle_holds_values(as_store *s, as_handle h)
{
    as_slot *sl;
    pthread_mutex_lock(&s->mu);
    bool ok = check_locked(s, h, &sl, "dependency") == 0 &&
              !(sl->item->rep && sl->item->rep->ops->grad_only);
    pthread_mutex_unlock(&s->mu);
    return ok;
}

int as__rep_add_dep(as_store *s, as_item *owner, as_rep *r, as_handle h)
{
    as_slot *sl;
    pthread_mutex_lock(&s->mu);
    int rc = check_locked(s, h, &sl, "dependency");
    if (rc == 0 && sl->item->rep && sl->item->rep->ops->grad_only) {
        as__seterr(s, "dependency: handle 0x%016llx holds a derivative-only "
                   "form (%s), not values", (unsigned long long)h.v,
                   sl->item->rep->ops->name);
        rc = AS_ENOTSUP;
    }
    if (rc == 0 && (sl->item == owner || reaches_locked(sl->item, owner))) {
        as__seterr(s, "dependency cycle: handle 0x%016llx already depends on "
                   "this tensor", (unsigned long long)h.v);
        rc = AS_ESTATE;
    }
    if (rc == 0 && r->ndeps == r->depcap) {
        size_t cap = r->depcap ? r->depcap * 2 : 4;
        as_dep *nd = as__srealloc(s, r->deps, cap * sizeof *nd);
        rc = nd ? 0 : AS_ENOMEM;
        if (nd) {
            r->deps = nd;
            r->depcap = cap;
        }
    }
    as_item *d = rc == 0 ? sl->item : NULL;
    if (d && d->ndependents == d->dcap) {
        size_t cap = d->dcap ? d->dcap * 2 : 4;
        as_item **nd = as__srealloc(s, d->dependents, cap * sizeof *nd);
        rc = nd ? 0 : AS_ENOMEM;
        if (nd) {
            d->dependents = nd;
            d->dcap = cap;
        }
    }
    if (rc == 0) {
        atomic_fetch_add(&d->refs, 1);
        r->deps[r->ndeps++] = (as_dep){h.v, d};
        d->dependents[d->ndependents++] = owner;
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/*
 * Save: choose the policy, encode (with fallbacks), publish the handle;
 * re-planning of aliased items (alias_of) and of sources that a consumer
 * can rebuild through an invertible function (policy "inverse", explicit or
 * by the implicit chain rule, docs/store.md).
 *
 * Fallback order: the rule's policy, then the rule's fallback, then keep.
 * A policy "does not apply" when its applies() says so or its encode
 * returns AS_ENOTSUP or AS_ESTATE (dependency cycle); strict mode turns
 * that into AS_EFALLBACK. An encode that fails with AS_EIO (offload
 * directory missing, unwritable or full) falls back in strict mode too: the
 * tensor is never lost to the environment, and the fallback is counted
 * (offload_fallbacks as well for offload). Any other error (AS_EBUDGET,
 * AS_ENOMEM, ...) fails the save; the store stays usable.
 *
 * AS_EMETA (the save's metadata contradicts the tensor, found by the
 * policy's applies or encode) is counted and logged once per save
 * (as__acct_meta), then handled as a fallback; strict mode fails the save
 * with AS_EMETA.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/policies/auto/auto.h"
#include "store/store_internal.h"
#include "util/clock.h"

static const char *layer_text(const as_save_info *info)
{
    return info->layer && info->layer[0] ? info->layer : "(none)";
}

static int validate(as_store *s, const as_save_info *info, const as_tensor *t)
{
    if (info->kind < 0 || info->kind >= AS_KIND_COUNT) {
        as__seterr(s, "save (layer %s): unknown kind %d", layer_text(info),
                   info->kind);
        return AS_EINVAL;
    }
    if (!as_dtype_size(t->dtype) || t->ndim < 0 || t->ndim > AS_MAX_DIMS) {
        as__seterr(s, "save (layer %s): bad tensor (dtype %d, ndim %d)",
                   layer_text(info), t->dtype, t->ndim);
        return AS_EINVAL;
    }
    for (int i = 0; i < t->ndim; i++)
        if (t->shape[i] < 0) {
            as__seterr(s, "save (layer %s): negative dimension %d",
                       layer_text(info), i);
            return AS_EINVAL;
        }
    if (as_tensor_numel(t) < 0 || as_tensor_bytes(t) > ((size_t)1 << 48)) {
        as__seterr(s, "save (layer %s): tensor too large (more than 2^48 "
                   "bytes or the shape overflows)", layer_text(info));
        return AS_EINVAL;
    }
    if (!t->data && as_tensor_bytes(t)) {
        as__seterr(s, "save (layer %s): tensor without data", layer_text(info));
        return AS_EINVAL;
    }
    if (info->borrow && !as_handle_is_null(info->alias_of)) {
        as__seterr(s, "save (layer %s): borrow with alias_of (an alias is "
                   "held by the item it aliases)", layer_text(info));
        return AS_EINVAL;
    }
    return 0;
}

/* The rule for a borrowed tensor, whatever the spec says. */
static const as_polref borrow_ref = {&as_policy_borrow, NULL, "borrow"};

/* The activation the tensor is the input or output of, for act_backward. */
void as__note_act(as_item *it, const as_save_info *info)
{
    it->act_fn = -1;
    if ((info->kind == AS_KIND_ACTIVATION_INPUT ||
         info->kind == AS_KIND_ACTIVATION_OUTPUT) &&
        info->meta.act.fn >= 0 && info->meta.act.fn < AS_FN_COUNT) {
        it->act_fn = (int8_t)info->meta.act.fn;
        it->act_alpha = info->meta.act.alpha;
        it->act_output = info->kind == AS_KIND_ACTIVATION_OUTPUT;
    }
}

static bool is_fallback_code(int rc)
{
    return rc == AS_ENOTSUP || rc == AS_EIO || rc == AS_ESTATE ||
           rc == AS_EMETA;
}

int as__try_policy(as_store *s, as_item *it, as_handle h, as_groups g,
                   const as_polref *p, as_rules *rules,
                   const as_save_info *info, const as_tensor *t,
                   as_block *adopted, bool *taken, char *why, size_t whylen,
                   as_rep **spare, as_rep **out)
{
    const as_policy_ops *ops = p ? p->ops : &as_policy_keep;
    void *params = p ? p->params : NULL;
    *out = NULL;
    why[0] = 0;
    if (ops->applies) {
        int rc = ops->applies(params, info, t, why, whylen);
        if (rc < 0)
            return rc == AS_EMETA ? AS_EMETA : AS_ENOTSUP;
    }
    as_rep *r;
    if (spare && *spare) {   /* allocated (and prefetched) by the caller */
        r = *spare;
        *spare = NULL;
        memset(r, 0, sizeof *r);
    } else if (!(r = as__scalloc(s, 1, sizeof *r))) {
        return AS_ENOMEM;
    }
    atomic_init(&r->refs, 1);
    r->ops = ops;
    r->owner = it;
    r->params = params;
    r->rules = rules;
    as__rules_ref(rules);
    g.policy = (uint16_t)as__policy_index(ops);
    r->g = g;
    as_pctx c;
    as__pctx_init(&c, s, it, r, h, layer_text(info));
    c.adopted = adopted;
    /* An adopted block under keep is taken as it is: nothing to time (and
     * the clock would be a tenth of the call). */
    bool timed = !(adopted && ops == &as_policy_keep);
    uint64_t t0 = timed ? as_clock_wall_ns() : 0;
    int rc = ops->encode(&c, params, info, t, &r->state);
    uint64_t dt = timed ? as_clock_wall_ns() - t0 : 0;
    if (rc < 0) {
        if (c.adopted_taken) {   /* the block stays with its owner */
            r->stored -= r->adopted.size;
            as__acct_charge(s, &r->g, 0, -(int64_t)r->adopted.size);
            memset(&r->adopted, 0, sizeof r->adopted);
        }
        snprintf(why, whylen, "%s", c.msg[0] ? c.msg : as_strerror(rc));
        as__pctx_done(&c);
        as__rep_discard(s, r);
        return rc;
    }
    as__pctx_done(&c);
    if (dt)
        as__acct_time(s, &r->g, true, dt);
    if (ops->view) {
        r->view = it->shape;
        r->view.data = (void *)ops->view(params, r->state);
    }
    *taken = c.adopted_taken;
    *out = r;
    return 0;
}

/* Choose and encode: the plan's policy, its fallback, keep. */
static int encode_plan(as_store *s, as_item *it, as_handle h, as_groups g,
                       const as_plan *plan, as_rules *rules,
                       const as_save_info *info, const as_tensor *t,
                       as_block *adopted, bool *taken, as_rep **spare,
                       as_rep **out)
{
    const as_polref *tries[3] = {plan->pol, plan->fallback, NULL};
    size_t ntries = plan->fallback ? 3 : 2;
    if (!plan->pol)
        ntries = 1;
    char why[256], first_why[256] = "";
    const char *first_name = NULL;
    bool meta_seen = false;
    for (size_t k = 0; k < ntries; k++) {
        int rc = as__try_policy(s, it, h, g, tries[k], rules, info, t, adopted,
                                taken, why, sizeof why, spare, out);
        if (rc == 0) {
            as_rep *r = *out;
            if (first_name) {
                char reason[320];
                snprintf(reason, sizeof reason, "%s: %s", first_name,
                         first_why);
                as_groups fg = g;
                fg.policy = (uint16_t)as__policy_index(tries[0]->ops);
                as__acct_fallback(s, &fg, reason);
                char d[400];
                snprintf(d, sizeof d, "%s (fallback from %s)",
                         tries[k] ? tries[k]->text : "keep", reason);
                as__strlcpy(r->desc, d, sizeof r->desc);
            } else if (plan->pending_inverse) {
                snprintf(r->desc, sizeof r->desc, "%s (inverse pending)",
                         tries[k] ? tries[k]->text : "keep");
            } else {
                as__strlcpy(r->desc, tries[k] ? tries[k]->text : "keep",
                            sizeof r->desc);
            }
            return 0;
        }
        if (!is_fallback_code(rc))
            return rc;
        if (rc == AS_EIO && tries[k] && tries[k]->ops == &as_policy_offload)
            atomic_fetch_add(&s->offload_fallbacks, 1);
        if (rc == AS_EMETA && !meta_seen && tries[k]) {
            meta_seen = true;
            as_groups mg = g;
            mg.policy = (uint16_t)as__policy_index(tries[k]->ops);
            as__acct_meta(s, &mg, as_kind_name(info->kind), layer_text(info),
                          why);
            if (s->strict) {
                as__seterr(s, "save (layer %s, %s): policy %s: %s (strict "
                           "mode)", layer_text(info),
                           as_kind_name(info->kind), tries[k]->text, why);
                return AS_EMETA;
            }
        }
        if (!first_name) {
            first_name = tries[k] ? tries[k]->text : "keep";
            snprintf(first_why, sizeof first_why, "%s", why);
            if (s->strict && rc != AS_EIO) {
                as__seterr(s, "save (layer %s, %s): policy %s does not apply:"
                           " %s (strict mode)", layer_text(info),
                           as_kind_name(info->kind), first_name, why);
                return AS_EFALLBACK;
            }
        }
    }
    as__seterr(s, "save (layer %s): no policy applies (%s: %s)",
               layer_text(info), first_name ? first_name : "keep", first_why);
    return AS_ENOTSUP;
}

/* A consumer declared `src` its source through fn: if src is waiting for
 * that ("inverse" pending), rebuild it from the consumer from now on. */
static void source_consumed(as_store *s, as_item *src, as_item *z,
                            as_handle zh, const as_elementwise *fn)
{
    pthread_mutex_lock(&s->mu);
    int pend = src->pending_inverse;
    as_rep *cur = src->rep;
    atomic_fetch_add(&cur->refs, 1);
    pthread_mutex_unlock(&s->mu);
    char why[96];
    as_rep *r = NULL;
    if (!pend || src->shape.dtype != AS_F32 || z->shape.dtype != AS_F32 ||
        src->bytes != z->bytes ||
        !as__fn_invertible(fn, as_tensor_numel(&src->shape), why, sizeof why))
        goto out;
    r = as__scalloc(s, 1, sizeof *r);
    if (!r)
        goto out;
    atomic_init(&r->refs, 1);
    r->ops = &as_policy_inverse;
    r->owner = src;
    r->g = cur->g;
    r->g.policy = (uint16_t)as__policy_index(&as_policy_inverse);
    as_pctx c;
    const char *ln = cur->g.layer ? s->layers[cur->g.layer].name : "(none)";
    as__pctx_init(&c, s, src, r, src->h0, ln);
    uint64_t t0 = as_clock_wall_ns();
    int rc = as__inverse_encode(&c, zh, fn, &r->state);
    as__pctx_done(&c);
    if (rc < 0) {
        as__rep_discard(s, r);
        goto out;
    }
    as__acct_time(s, &r->g, true, as_clock_wall_ns() - t0);
    snprintf(r->desc, sizeof r->desc, "inverse (%s of a later tensor)",
             fn->fn == AS_FN_LEAKY_RELU ? "leaky_relu" :
             fn->fn == AS_FN_AFFINE ? "affine" : "identity");
    pthread_mutex_lock(&s->mu);
    src->pending_inverse = 0;
    pthread_mutex_unlock(&s->mu);
    as__item_swap_rep(s, src, r);
    as__acct_policy_name(s, r->g.layer, r->desc);
out:
    as__rep_unref(s, cur);
}

/* z now holds values: a source that waited for that (its link was made
 * while z's item was grad_only) is rebuilt from z's handle zh. */
static void run_link(as_store *s, as_item *from, as_item *z, as_handle zh)
{
    pthread_mutex_lock(&s->mu);
    as_item *src = from->link_src;
    as_elementwise fn = from->link_fn;
    from->link_src = NULL;
    pthread_mutex_unlock(&s->mu);
    if (!src)
        return;
    source_consumed(s, src, z, zh, &fn);
    as__item_unref(s, src);
}

static void finish_save(as_store *s, as_item *it, as_rep *r)
{
    as__acct_count(s, &r->g, AS_STAT_SAVE, 1);
    as__acct_policy_name(s, r->g.layer, r->desc);
}

static int save_impl(as_store *s, const as_save_info *info,
                     const as_tensor *t, as_block *adopt, as_handle *out);

static int save_alias(as_store *s, const as_save_info *info,
                      const as_tensor *t, as_handle *out)
{
    as_item *it;
    int rc = as__lookup(s, info->alias_of, &it, "save (alias_of)");
    if (rc < 0)
        return rc;
    bool same = t->dtype == it->shape.dtype && t->ndim == it->shape.ndim;
    for (int i = 0; same && i < t->ndim; i++)
        same = t->shape[i] == it->shape.shape[i];
    if (!same) {
        as__seterr(s, "save (layer %s): alias_of a tensor of another dtype or "
                   "shape", layer_text(info));
        as__item_unref(s, it);
        return AS_ESHAPE;
    }
    as_groups g = {info->kind, 0, 0};
    as__layer_id(s, info->layer, &g.layer);
    as_rules *rules = as__rules_get(s);
    as_plan plan;
    as__rules_select(rules, info->kind, info->layer, &plan);
    as_handle h;
    if ((rc = as__slot_reserve(s, &h)) < 0)
        goto fail;
    as_rep *cur = as__item_rep(s, it);
    const as_policy_ops *want = plan.pol ? plan.pol->ops : &as_policy_keep;
    void *wparams = plan.pol ? plan.pol->params : NULL;
    /* auto planned the item already; a derivative-only form (sign, fewbit)
     * cannot serve a save that needs values: that one gets an item of its
     * own below, planned by auto under its own (layer, kind). */
    if (want == &as_policy_auto && !cur->ops->grad_only) {
        want = cur->ops;
        wparams = cur->params;
    }
    /* The same policy with the same arguments (another rule's copy of them
     * included: the rep's desc is then the rule's text) would only encode
     * the values again into the same form: keep the one made. */
    bool same_pol = want == cur->ops &&
                    (wparams == cur->params ||
                     (plan.pol && plan.pol->ops == want && plan.pol->text &&
                      !strcmp(plan.pol->text, cur->desc)));
    if (!same_pol && cur->ops->grad_only && !want->exact) {
        /* The first save needs only its derivative form, this one the
         * values under a lossy policy: each gets an item of its own (a
         * lossy copy would make the derivative inexact). */
        as__rep_unref(s, cur);
        as__slot_unreserve(s, h);
        as__rules_unref(rules);
        as_save_info own = *info;
        own.alias_of = AS_HANDLE_NULL;
        rc = save_impl(s, &own, t, NULL, out);
        as_item *z;
        if (rc == 0 && as__lookup(s, *out, &z, "save") == 0) {
            run_link(s, it, z, *out);
            as__item_unref(s, z);
        }
        as__item_unref(s, it);
        return rc;
    }
    /* A borrowed tensor costs nothing, and a derivative-only form never
     * replaces values: the item stays as it is, under the new description. */
    if (same_pol || cur->ops == &as_policy_borrow ||
        (want->grad_only && !cur->ops->grad_only)) {
        /* Same policy: only the description (groups) changes. */
        as_groups ng = g;
        ng.policy = cur->g.policy;
        as__acct_charge(s, &cur->g, -(int64_t)it->bytes, -(int64_t)cur->stored);
        pthread_mutex_lock(&s->mu);
        cur->g = ng;
        pthread_mutex_unlock(&s->mu);
        as__acct_charge(s, &ng, (int64_t)it->bytes, (int64_t)cur->stored);
        as__rep_unref(s, cur);
        cur = NULL;
    } else {
        bool taken = false;
        as_block *adopted = cur->adopted.ptr == t->data ? &cur->adopted : NULL;
        as_rep *r;
        rc = encode_plan(s, it, h, g, &plan, rules, info, t, adopted, &taken,
                         NULL, &r);
        if (rc < 0) {
            as__rep_unref(s, cur);
            as__slot_unreserve(s, h);
            goto fail;
        }
        if (taken) {   /* the block moved to the new representation */
            cur->stored -= cur->adopted.size;
            as__acct_charge(s, &cur->g, 0, -(int64_t)cur->adopted.size);
            memset(&cur->adopted, 0, sizeof cur->adopted);
        }
        as__rep_unref(s, cur);
        as__item_swap_rep(s, it, r);
    }
    pthread_mutex_lock(&s->mu);
    as_rep *r = it->rep;
    it->pending_inverse = r->ops == &as_policy_borrow ? 0 : plan.pending_inverse;
    pthread_mutex_unlock(&s->mu);
    as__slot_publish(s, h, it);   /* the lookup reference becomes the handle's */
    finish_save(s, it, r);
    if (!r->ops->grad_only)
        run_link(s, it, it, h);
    as__rules_unref(rules);
    *out = h;
    return 0;
fail:
    as__rules_unref(rules);
    as__item_unref(s, it);
    return rc;
}

/* An adopted block must hold the tensor and be a live block of this
 * store's arena; a borrowed tensor cannot be adopted too. */
static int check_adopt(as_store *s, const as_save_info *info,
                       const as_tensor *t, const as_block *adopt, size_t bytes)
{
    if (adopt->ptr != t->data || adopt->size < bytes) {
        as__seterr(s, "save_adopt (layer %s): the block does not hold the "
                   "tensor", layer_text(info));
        return AS_EINVAL;
    }
    if (info->borrow) {
        as__seterr(s, "save_adopt (layer %s): borrow of an adopted block",
                   layer_text(info));
        return AS_EINVAL;
    }
    int rc = as_arena_check_block(s->arena, adopt);
    if (rc < 0)
        as__seterr(s, "save_adopt (layer %s): not a live block of this store's "
                   "arena: %s", layer_text(info), as_arena_last_error(s->arena));
    return rc;
}

static int save_impl(as_store *s, const as_save_info *info,
                     const as_tensor *t, as_block *adopt, as_handle *out)
{
    if (!out)
        return AS_EINVAL;
    *out = AS_HANDLE_NULL;
    if (!s || !info || !t)
        return AS_EINVAL;
    int rc = validate(s, info, t);
    if (rc < 0)
        return rc;
    size_t bytes = as_tensor_bytes(t);
    if (adopt && (rc = check_adopt(s, info, t, adopt, bytes)) < 0)
        return rc;
    if (!atomic_load(&s->grad)) {
        if (adopt)   /* ownership moved to the store: nothing to keep */
            as_free(s->arena, adopt);
        return 0;
    }
    if (!as_handle_is_null(info->alias_of)) {
        if (adopt) {
            as__seterr(s, "save (layer %s): alias_of with an adopted block",
                       layer_text(info));
            return AS_EINVAL;
        }
        return save_alias(s, info, t, out);
    }
    as_item *src = NULL;
    if (!as_handle_is_null(info->source) &&
        (rc = as__lookup(s, info->source, &src, "save (source)")) < 0)
        return rc;

    /* The item and its first representation are fresh memory, usually not
     * in any cache: allocate them first and ask for their lines now, so the
     * misses overlap the layer and rule lookups instead of following them. */
    as_item *it = as__smalloc(s, sizeof *it);
    as_rep *spare = as__smalloc(s, sizeof *spare);
    for (size_t o = 0; it && o < sizeof *it; o += 64)
        __builtin_prefetch((char *)it + o, 1);
    for (size_t o = 0; spare && o < sizeof *spare; o += 64)
        __builtin_prefetch((char *)spare + o, 1);
    as_groups g = {info->kind, 0, 0};
    as__layer_id(s, info->layer, &g.layer);
    as_rules *rules = as__rules_get(s);
    as_plan plan;
    as__rules_select(rules, info->kind, info->layer, &plan);
    if (info->borrow)
        plan = (as_plan){&borrow_ref, NULL, 0};
    as_handle h = AS_HANDLE_NULL;
    if (!it) {
        rc = AS_ENOMEM;
        goto fail;
    }
    memset(it, 0, sizeof *it);
    atomic_init(&it->refs, 1);
    it->shape = *t;
    it->shape.data = NULL;
    it->bytes = bytes;
    it->pending_inverse = plan.pending_inverse;
    as__note_act(it, info);
    if ((rc = as__slot_reserve(s, &h)) < 0)
        goto fail;
    it->h0 = h;
    as_block blk = adopt ? *adopt : (as_block){0};
    bool taken = false;
    as_rep *r;
    bool planned = plan.pol && plan.pol->ops == &as_policy_auto;
    if (planned)
        rc = as__auto_save(s, it, h, g, plan.pol, rules, info, t,
                           adopt ? &blk : NULL, &taken, &spare, &r);
    else
        rc = encode_plan(s, it, h, g, &plan, rules, info, t,
                         adopt ? &blk : NULL, &taken, &spare, &r);
    free(spare);   /* NULL when used */
    spare = NULL;
    if (rc < 0) {
        as__slot_unreserve(s, h);
        goto fail;
    }
    it->rep = r;
    as__acct_charge(s, &r->g, (int64_t)bytes, 0);
    if (s->checksum && r->ops->view) {
        it->checksum = as__checksum(r->view.data, bytes);
        it->has_checksum = true;
    }
    as__slot_publish(s, h, it);
    if (adopt) {
        if (!taken)   /* encoded: the framework's block is not needed */
            as_free(s->arena, &blk);
    }
    finish_save(s, it, r);
    if (rules->has_auto || atomic_load_explicit(&s->planner, memory_order_acquire))
        as__auto_note(s, r, bytes, planned);
    if (src && r->ops->grad_only) {
        /* No values to rebuild the source from yet: wait for an alias that
         * brings them (save_alias), or keep the source as it is. */
        pthread_mutex_lock(&s->mu);
        it->link_src = src;
        it->link_fn = info->source_fn;
        pthread_mutex_unlock(&s->mu);
        src = NULL;
    } else if (src) {
        source_consumed(s, src, it, h, &info->source_fn);
        as__item_unref(s, src);
    }
    as__rules_unref(rules);
    *out = h;
    return 0;
fail:
    free(it);
    free(spare);
    if (src)
        as__item_unref(s, src);
    as__rules_unref(rules);
    return rc;
}

int as_store_save(as_store *s, const as_save_info *info, const as_tensor *t,
                  as_handle *out)
{
    return save_impl(s, info, t, NULL, out);
}

int as_store_save_adopt(as_store *s, const as_save_info *info,
                        const as_tensor *t, as_block *block, as_handle *out)
{
    if (!block) {
        if (out)
            *out = AS_HANDLE_NULL;
        return AS_EINVAL;
    }
    return save_impl(s, info, t, block, out);
}

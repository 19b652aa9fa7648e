/*
 * Saving in row blocks (as_store_save_rows_begin / _append / _end).
 *
 * An open row save holds a reserved slot (not live: every lookup reports a
 * save in progress; release and step end abandon it) and a new item that
 * end publishes. The form is decided at the first block:
 *   blocks  the rule's policy (or its fallback) is a codec that applies to
 *           the block: every block is encoded as it comes, by the policy's
 *           own encode on the block (rows_rep.c). Under auto the planner
 *           measures its candidates (codecs that keep values) block by
 *           block on a probe step and picks the candidate at the first
 *           block;
 *   whole   keep, regenerators, derivative-only forms, offload, or a codec
 *           that does not apply: the rows are assembled in one block and
 *           saved at end as as_store_save does. keep's block is of the
 *           saved tag and adopted without a copy, so keep holds exactly
 *           what a whole save holds.
 * A softmax block covers whole (batch, head) blocks of rows (the codecs'
 * metadata is per block), so each block encodes as the whole would.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/policies/auto/auto.h"
#include "store/store_internal.h"
#include "util/clock.h"

enum { ROWS_UNDECIDED, ROWS_BLOCKS, ROWS_WHOLE };

struct as_rows {
    as_store       *s;
    as_handle       h;
    as_item        *it;            /* published at end */
    as_save_info    info;          /* layer, valid_len: the copies below */
    char           *layer;
    int32_t        *valid_len;
    as_groups       g;
    as_rules       *rules;         /* referenced */
    as_plan         plan;
    int64_t         rows, cols;
    _Atomic int64_t done;
    size_t          row_bytes;
    int             mode;
    as_block        whole;         /* ROWS_WHOLE */
    as_rep         *rep;           /* ROWS_BLOCKS */
    const as_polref *pol;          /* the blocks' policy */
    as_auto_rows   *ar;            /* under auto */
    _Atomic bool    busy;
};

bool as__rows_enter(struct as_rows *w)
{
    return !atomic_exchange(&w->busy, true);
}

static void rows_leave(struct as_rows *w)
{
    atomic_store(&w->busy, false);
}

void as__rows_progress(const struct as_rows *w, int64_t *done, int64_t *rows)
{
    *done = atomic_load(&w->done);
    *rows = w->rows;
}

void as__rows_free(as_store *s, struct as_rows *w)
{
    if (w->ar)
        as__auto_rows_end(s, w->ar, 0, false);
    if (w->rep)
        as__rep_discard(s, w->rep);
    as_free(s->arena, &w->whole);
    as__rules_unref(w->rules);
    free(w->it);
    free(w->layer);
    free(w->valid_len);
    free(w);
}

static const char *wlayer(const struct as_rows *w)
{
    return w->layer ? w->layer : "(none)";
}

static int check_begin(as_store *s, const as_save_info *info,
                       const as_tensor *t)
{
    const char *l = info->layer && info->layer[0] ? info->layer : "(none)";
    const char *bad = !as_handle_is_null(info->alias_of) ? "alias_of" :
                      !as_handle_is_null(info->source) ? "source" :
                      info->borrow ? "borrow" :
                      info->recompute ? "recompute" : NULL;
    if (bad) {
        as__seterr(s, "save_rows_begin (layer %s): info->%s is not supported "
                   "for a row save", l, bad);
        return AS_EINVAL;
    }
    if (info->kind < 0 || info->kind >= AS_KIND_COUNT ||
        !as_dtype_size(t->dtype) || t->ndim < 1 || t->ndim > AS_MAX_DIMS ||
        t->shape[t->ndim - 1] <= 0) {
        as__seterr(s, "save_rows_begin (layer %s): bad tensor or kind (kind "
                   "%d, dtype %d, ndim %d; a row save needs ndim >= 1 and a "
                   "last dim > 0)", l, info->kind, t->dtype, t->ndim);
        return AS_EINVAL;
    }
    for (int i = 0; i < t->ndim; i++)
        if (t->shape[i] < 0) {
            as__seterr(s, "save_rows_begin (layer %s): negative dimension %d",
                       l, i);
            return AS_EINVAL;
        }
    if (as_tensor_numel(t) < 0 || as_tensor_bytes(t) > ((size_t)1 << 48)) {
        as__seterr(s, "save_rows_begin (layer %s): tensor too large", l);
        return AS_EINVAL;
    }
    const as_softmax_meta *m = &info->meta.softmax;
    if (info->kind == AS_KIND_SOFTMAX_OUTPUT && m->valid_len &&
        m->rows_per_item <= 0) {
        as__seterr(s, "save_rows_begin (layer %s): valid_len needs "
                   "rows_per_item > 0", l);
        return AS_EINVAL;
    }
    return 0;
}

/* The copies of the caller's strings and metadata the save outlives. */
static int copy_info(struct as_rows *w, const as_save_info *info)
{
    w->info = *info;
    if (info->layer) {
        size_t len = strlen(info->layer) + 1;
        if (!(w->layer = as__smalloc(w->s, len)))
            return AS_ENOMEM;
        memcpy(w->layer, info->layer, len);
    }
    w->info.layer = w->layer;
    const as_softmax_meta *m = &info->meta.softmax;
    if (info->kind == AS_KIND_SOFTMAX_OUTPUT && m->valid_len) {
        size_t n = (size_t)((w->rows + m->rows_per_item - 1) / m->rows_per_item);
        if (!(w->valid_len = as__smalloc(w->s, (n ? n : 1) * sizeof *w->valid_len)))
            return AS_ENOMEM;
        memcpy(w->valid_len, m->valid_len, n * sizeof *w->valid_len);
        w->info.meta.softmax.valid_len = w->valid_len;
    }
    return 0;
}

int as_store_save_rows_begin(as_store *s, const as_save_info *info,
                             const as_tensor *t, as_handle *out)
{
    if (!out)
        return AS_EINVAL;
    *out = AS_HANDLE_NULL;
    if (!s || !info || !t)
        return AS_EINVAL;
    int rc = check_begin(s, info, t);
    if (rc < 0 || !atomic_load(&s->grad))
        return rc;
    struct as_rows *w = as__scalloc(s, 1, sizeof *w);
    as_item *it = as__scalloc(s, 1, sizeof *it);
    if (!w || !it) {
        free(w);
        free(it);
        return AS_ENOMEM;
    }
    w->s = s;
    w->it = it;
    w->cols = t->shape[t->ndim - 1];
    w->rows = as_tensor_numel(t) / w->cols;
    w->row_bytes = (size_t)w->cols * as_dtype_size(t->dtype);
    atomic_init(&it->refs, 1);
    it->shape = *t;
    it->shape.data = NULL;
    it->bytes = as_tensor_bytes(t);
    as__note_act(it, info);
    w->g = (as_groups){info->kind, 0, 0};
    w->rules = as__rules_get(s);
    if ((rc = copy_info(w, info)) < 0 ||
        (rc = as__layer_id(s, info->layer, &w->g.layer)) < 0 ||
        (rc = as__slot_reserve(s, &w->h)) < 0) {
        as__rows_free(s, w);
        return rc;
    }
    as__rules_select(w->rules, info->kind, info->layer, &w->plan);
    it->h0 = w->h;
    as__slot_open_rows(s, w->h, w);
    *out = w->h;
    return 0;
}

/* A codec that encodes a block as it would the whole tensor's rows. */
static bool blockwise(const as_polref *p)
{
    const as_policy_ops *o = p ? p->ops : NULL;
    return o && !o->regenerator && !o->grad_only && !o->view && o->decode &&
           o != &as_policy_offload && o != &as_policy_borrow;
}

/* The block's metadata: valid lengths from its first (batch, head) item. */
static as_save_info block_info(const struct as_rows *w, int64_t row0)
{
    as_save_info bi = w->info;
    as_softmax_meta *m = &bi.meta.softmax;
    if (bi.kind == AS_KIND_SOFTMAX_OUTPUT && m->valid_len)
        m->valid_len += row0 / m->rows_per_item;
    return bi;
}

/* Encode one block under p into the representation; fallback codes come
 * back with the reason in why. */
static int encode_block(struct as_rows *w, const as_polref *p,
                        const as_tensor *blk, int64_t row0, char *why,
                        size_t whylen)
{
    as_save_info bi = block_info(w, row0);
    const as_policy_ops *ops = p ? p->ops : &as_policy_keep;
    void *params = p ? p->params : NULL;
    why[0] = 0;
    if (ops->applies) {
        int rc = ops->applies(params, &bi, blk, why, whylen);
        if (rc < 0)
            return rc == AS_EMETA ? AS_EMETA : AS_ENOTSUP;
    }
    as_rep *r = w->rep;
    size_t nblocks = r->nblocks;
    int64_t extra = r->extra;
    as_pctx c;
    as__pctx_init(&c, w->s, w->it, r, w->h, wlayer(w));
    uint64_t t0 = as_clock_wall_ns();
    int rc = as__rows_rep_add(&c, r->state, ops, params, &bi, blk, row0);
    uint64_t dt = as_clock_wall_ns() - t0;
    if (rc < 0) {   /* what the failed encode allocated goes */
        snprintf(why, whylen, "%s", c.msg[0] ? c.msg : as_strerror(rc));
        while (r->nblocks > nblocks)
            as_pctx_free(&c, r->blocks[r->nblocks - 1].ptr);
        if (r->extra != extra)
            as_pctx_account(&c, extra - r->extra);
    }
    as__pctx_done(&c);
    if (rc == 0)
        as__acct_time(w->s, &w->rep->g, true, dt);
    return rc;
}

static bool is_fallback(int rc)
{
    return rc == AS_ENOTSUP || rc == AS_EIO || rc == AS_ESTATE ||
           rc == AS_EMETA;
}

/* A fallback of one block (or of the first block's policy): counted as a
 * save's fallback is; strict mode refuses it. */
static int block_fallback(struct as_rows *w, const as_polref *p, int rc,
                          const char *why)
{
    as_store *s = w->s;
    as_groups fg = w->g;
    fg.policy = (uint16_t)as__policy_index(p ? p->ops : &as_policy_keep);
    const char *name = p ? p->text : "keep";
    if (rc == AS_EMETA) {
        as__acct_meta(s, &fg, as_kind_name(w->info.kind), wlayer(w), why);
        if (s->strict) {
            as__seterr(s, "save_rows (layer %s): policy %s: %s (strict mode)",
                       wlayer(w), name, why);
            return AS_EMETA;
        }
    }
    if (s->strict && rc != AS_EIO) {
        as__seterr(s, "save_rows (layer %s): policy %s does not apply: %s "
                   "(strict mode)", wlayer(w), name, why);
        return AS_EFALLBACK;
    }
    char reason[320];
    snprintf(reason, sizeof reason, "%s: %s", name, why);
    as__acct_fallback(s, &fg, reason);
    return 0;
}

/* A new representation of row blocks charged to policy p. */
static int new_rep(struct as_rows *w, const as_polref *p)
{
    const as_policy_ops *ops = p ? p->ops : &as_policy_keep;
    as_rep *r = as__scalloc(w->s, 1, sizeof *r);
    if (!r)
        return AS_ENOMEM;
    atomic_init(&r->refs, 1);
    r->ops = &as__rows_rep_ops;
    r->owner = w->it;
    r->params = p ? p->params : NULL;
    r->rules = w->rules;
    as__rules_ref(w->rules);
    r->g = w->g;
    r->g.policy = (uint16_t)as__policy_index(ops);
    if (!(r->state = as__rows_rep_new(w->s, w->cols, w->it->shape.dtype))) {
        as__rep_discard(w->s, r);
        return AS_ENOMEM;
    }
    w->rep = r;
    w->pol = p;
    return 0;
}

/* The first block under auto: the planner's candidates in its order, keep
 * when none of them applies after all. */
static int first_auto(struct as_rows *w, const as_tensor *blk)
{
    static const as_polref keep_ref = {&as_policy_keep, NULL, "keep"};
    const as_polref *tries[3];
    int n = 0;
    as_save_info bi = block_info(w, 0);
    int rc = as__auto_rows_begin(w->s, w->it, w->h, w->g, w->plan.pol, &bi,
                                 blk, &w->ar, tries, &n);
    if (rc < 0)
        return rc;
    tries[n++] = &keep_ref;
    char why[256];
    for (int k = 0; k < n; k++) {
        if (w->rep)
            as__rep_discard(w->s, w->rep);
        w->rep = NULL;
        if ((rc = new_rep(w, tries[k])) < 0)
            return rc;
        rc = encode_block(w, tries[k], blk, 0, why, sizeof why);
        if (rc == 0) {
            snprintf(w->rep->desc, sizeof w->rep->desc, "%s (auto)",
                     tries[k]->text);
            return 0;
        }
        if (rc == AS_EBUDGET && k + 2 >= n) {   /* the most compact failed */
            as__auto_rows_budget_error(w->s, w->ar, &bi);
            return rc;
        }
        if (rc != AS_EBUDGET && !is_fallback(rc))
            return rc;
    }
    return rc;
}

/* The first block under a fixed rule: its policy, then its fallback, as
 * row blocks when they are codecs that apply; else the whole tensor. */
static int first_fixed(struct as_rows *w, const as_tensor *blk)
{
    const as_polref *tries[2] = {w->plan.pol, w->plan.fallback};
    char why[256], first_why[256] = "";
    for (int k = 0; k < 2 && !w->plan.pending_inverse; k++) {
        if (!blockwise(tries[k]))
            break;
        int rc = new_rep(w, tries[k]);
        if (rc == 0)
            rc = encode_block(w, tries[k], blk, 0, why, sizeof why);
        if (rc == 0) {
            if (k == 0) {
                as__strlcpy(w->rep->desc, tries[0]->text, sizeof w->rep->desc);
                return 0;
            }
            char d[400];
            snprintf(d, sizeof d, "%s (fallback from %s: %s)", tries[1]->text,
                     tries[0]->text, first_why);
            as__strlcpy(w->rep->desc, d, sizeof w->rep->desc);
            return block_fallback(w, tries[0], AS_ENOTSUP, first_why);
        }
        if (w->rep)
            as__rep_discard(w->s, w->rep);
        w->rep = NULL;
        if (!is_fallback(rc))
            return rc;
        if (k == 0) {
            snprintf(first_why, sizeof first_why, "%s", why);
            if (rc == AS_EMETA || w->s->strict)   /* counted by the whole save */
                break;
        }
    }
    /* The whole tensor, saved at end like as_store_save: keep's block is
     * the stored block itself. */
    bool keep = !w->plan.pol || w->plan.pol->ops == &as_policy_keep;
    uint16_t tag = keep ? AS_TAG_SAVED : AS_TAG_WORKSPACE;
    int rc = as_alloc(w->s->arena, w->it->bytes, tag, w->g.layer, &w->whole);
    if (rc < 0) {
        as__seterr(w->s, "save_rows (layer %s): %s", wlayer(w),
                   as_arena_last_error(w->s->arena));
        return rc;
    }
    w->mode = ROWS_WHOLE;
    memcpy(w->whole.ptr, blk->data, (size_t)blk->shape[0] * w->row_bytes);
    return 0;
}

/* A later block: the chosen policy, keep where it does not apply. */
static int next_block(struct as_rows *w, const as_tensor *blk, int64_t row0)
{
    char why[256];
    int rc = encode_block(w, w->pol, blk, row0, why, sizeof why);
    if (!is_fallback(rc))
        return rc;
    if ((rc = block_fallback(w, w->pol, rc, why)) < 0)
        return rc;
    return encode_block(w, NULL, blk, row0, why, sizeof why);
}

/* Blocks of a softmax output hold whole (batch, head) blocks of rows. */
static int check_block(struct as_rows *w, int64_t row0, int64_t nrows)
{
    const as_softmax_meta *m = &w->info.meta.softmax;
    if (w->info.kind != AS_KIND_SOFTMAX_OUTPUT)
        return 0;
    int64_t q = m->queries > 0 ? m->queries : w->rows;
    int64_t per = m->valid_len ? m->rows_per_item : 1;
    if (q > 0 && per > 0 && row0 % q == 0 && nrows % q == 0 &&
        row0 % per == 0 && nrows % per == 0)
        return 0;
    as__seterr(w->s, "save_rows_append (layer %s): a softmax block must hold "
               "whole blocks of %lld queries%s (rows [%lld, %lld))", wlayer(w),
               (long long)q, m->valid_len ? " and of rows_per_item" : "",
               (long long)row0, (long long)(row0 + nrows));
    return AS_EINVAL;
}

static int append(struct as_rows *w, const void *rows, int64_t nrows)
{
    int64_t row0 = atomic_load(&w->done);
    if (nrows < 0 || (!rows && nrows > 0)) {
        as__seterr(w->s, "save_rows_append (layer %s): %s", wlayer(w),
                   nrows < 0 ? "negative row count" : "rows NULL");
        return AS_EINVAL;
    }
    if (nrows > w->rows - row0) {
        as__seterr(w->s, "save_rows_append (layer %s): %lld rows appended to "
                   "%lld of %lld: more rows than the tensor has", wlayer(w),
                   (long long)nrows, (long long)row0, (long long)w->rows);
        return AS_ERANGE;
    }
    if (nrows == 0)
        return 0;
    int rc = check_block(w, row0, nrows);
    if (rc < 0)
        return rc;
    as_tensor blk = {.data = (void *)rows, .dtype = w->it->shape.dtype,
                     .ndim = 2, .shape = {nrows, w->cols}};
    if (w->mode == ROWS_UNDECIDED) {
        bool planned = w->plan.pol && w->plan.pol->ops == &as_policy_auto;
        rc = planned ? first_auto(w, &blk) : first_fixed(w, &blk);
        if (rc == 0 && w->mode == ROWS_UNDECIDED)
            w->mode = ROWS_BLOCKS;
    } else if (w->mode == ROWS_WHOLE) {
        memcpy((char *)w->whole.ptr + (size_t)row0 * w->row_bytes, rows,
               (size_t)nrows * w->row_bytes);
    } else {
        if (w->ar) {
            as_save_info bi = block_info(w, row0);
            as__auto_rows_block(w->s, w->ar, w->h, w->g, &bi, &blk);
        }
        rc = next_block(w, &blk, row0);
    }
    if (rc == 0)
        atomic_store(&w->done, row0 + nrows);
    return rc;
}

/* The open row save of h, entered (leave with rows_leave): 0; 1 for the
 * null handle of no-grad mode (nothing to do); or an AS_E* code. */
static int rows_enter(as_store *s, as_handle h, struct as_rows **w,
                      const char *what)
{
    if (!s)
        return AS_EINVAL;
    if (as_handle_is_null(h))
        return 1;
    int rc = as__slot_rows(s, h, w, what);
    return rc < 0 ? rc : 0;
}

int as_store_save_rows_append(as_store *s, as_handle h, const void *rows,
                              int64_t nrows)
{
    struct as_rows *w;
    int rc = rows_enter(s, h, &w, "save_rows_append");
    if (rc)
        return rc < 0 ? rc : 0;
    rc = append(w, rows, nrows);
    rows_leave(w);
    return rc;
}

/* Whole form: save the assembled tensor, then move its item to h. */
static int end_whole(struct as_rows *w)
{
    as_tensor t = w->it->shape;
    t.data = w->whole.ptr;
    as_handle h2;
    int rc = w->whole.ptr ? as_store_save_adopt(w->s, &w->info, &t, &w->whole,
                                                &h2)
                          : as_store_save(w->s, &w->info, &t, &h2);
    if (rc < 0)
        return rc;
    memset(&w->whole, 0, sizeof w->whole);   /* the store's now */
    if (as_handle_is_null(h2)) {
        as__seterr(w->s, "save_rows_end (layer %s): no-grad mode was turned "
                   "on during the row save: nothing kept", wlayer(w));
        return AS_ESTATE;
    }
    as__slot_move(w->s, h2, w->h);
    return 0;
}

static int end_blocks(struct as_rows *w)
{
    as_store *s = w->s;
    as_item *it = w->it;
    as_rep *r = w->rep;
    it->rep = r;
    as__acct_charge(s, &r->g, (int64_t)it->bytes, 0);
    as__slot_publish(s, w->h, it);
    as__acct_count(s, &r->g, AS_STAT_SAVE, 1);
    as__acct_policy_name(s, r->g.layer, r->desc);
    if (w->ar)
        as__auto_rows_end(s, w->ar, it->bytes, true);
    else if (w->rules->has_auto ||
             atomic_load_explicit(&s->planner, memory_order_acquire))
        as__auto_note(s, r, it->bytes, false);
    w->ar = NULL;
    w->rep = NULL;
    w->it = NULL;
    return 0;
}

int as_store_save_rows_end(as_store *s, as_handle h)
{
    struct as_rows *w;
    int rc = rows_enter(s, h, &w, "save_rows_end");
    if (rc)
        return rc < 0 ? rc : 0;
    int64_t done = atomic_load(&w->done);
    if (done != w->rows) {
        as__seterr(s, "save_rows_end (layer %s): %lld of %lld rows appended",
                   wlayer(w), (long long)done, (long long)w->rows);
        rows_leave(w);
        return AS_ESTATE;
    }
    if (w->mode == ROWS_UNDECIDED)   /* an empty tensor: saved whole */
        w->mode = ROWS_WHOLE;
    rc = w->mode == ROWS_WHOLE ? end_whole(w) : end_blocks(w);
    if (rc < 0) {
        rows_leave(w);
        return rc;
    }
    as__rows_free(s, w);   /* the slot is the item's now */
    return 0;
}

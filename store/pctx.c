/*
 * The services a policy calls during encode / decode (store/policy.h). A
 * context lives on the stack of one store call; everything it hands out is
 * attributed to the item's representation (blocks, dependencies) or freed
 * when the call ends (scratch, borrowed materializations).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/policies/quant.h"
#include "store/store_internal.h"

void as__pctx_init(as_pctx *c, as_store *s, as_item *it, as_rep *r,
                   as_handle h, const char *layer)
{
    /* Field by field: the arrays need no clearing (their counts are 0), and
     * this runs on every save and restore. */
    c->s = s;
    c->it = it;
    c->rep = r;
    c->h = h;
    c->layer = layer;
    c->adopted = NULL;
    c->adopted_taken = false;
    c->nscratch = 0;
    c->nborrowed = 0;
    c->msg[0] = 0;
}

void as__pctx_done(as_pctx *c)
{
    for (size_t i = 0; i < c->nscratch; i++)
        as_free(c->s->arena, &c->scratch[i]);
    c->nscratch = 0;
    for (size_t i = 0; i < c->nborrowed; i++)
        as__unborrow(c->s, c->borrowed[i]);
    c->nborrowed = 0;
}

int as_pctx_alloc(as_pctx *c, size_t n, void **out)
{
    *out = NULL;
    as_rep *r = c->rep;
    if (r->nblocks == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 4;
        as_block *nb = as__srealloc(c->s, r->blocks, cap * sizeof *nb);
        if (!nb)
            return AS_ENOMEM;
        r->blocks = nb;
        r->cap = cap;
    }
    as_block b;
    if (r->probe) {   /* a trial encode: workspace, never stored bytes */
        int rc = as_alloc(c->s->arena, n, AS_TAG_WORKSPACE, r->g.layer, &b);
        if (rc < 0)
            return rc;
        r->blocks[r->nblocks++] = b;
        r->probe_bytes += b.size;
        *out = b.ptr;
        return 0;
    }
    int rc = as__acct_reserve(c->s, &r->g, n, c->layer);
    if (rc < 0)
        return rc;
    rc = as_alloc(c->s->arena, n, AS_TAG_SAVED, r->g.layer, &b);
    if (rc < 0) {
        as__acct_charge(c->s, &r->g, 0, -(int64_t)n);
        as__seterr(c->s, "save (layer %s): %s", c->layer,
                   as_arena_last_error(c->s->arena));
        return rc;
    }
    r->blocks[r->nblocks++] = b;
    r->stored += b.size;
    *out = b.ptr;
    return 0;
}

void as_pctx_free(as_pctx *c, void *p)
{
    as_rep *r = c->rep;
    for (size_t i = 0; p && i < r->nblocks; i++)
        if (r->blocks[i].ptr == p) {
            if (r->probe) {
                r->probe_bytes -= r->blocks[i].size;
            } else {
                r->stored -= r->blocks[i].size;
                as__acct_charge(c->s, &r->g, 0, -(int64_t)r->blocks[i].size);
            }
            as_free(c->s->arena, &r->blocks[i]);
            r->blocks[i] = r->blocks[--r->nblocks];
            return;
        }
}

void as_pctx_account(as_pctx *c, int64_t delta)
{
    if (c->rep->probe) {
        c->rep->probe_bytes += (uint64_t)delta;
        return;
    }
    c->rep->extra += delta;
    c->rep->stored += (uint64_t)delta;
    as__acct_charge(c->s, &c->rep->g, 0, delta);
}

as_block *as_pctx_take_adopted(as_pctx *c)
{
    if (!c->adopted || c->adopted_taken || c->rep->probe)
        return NULL;
    /* Over the saved budget: the policy copies instead, and that copy is
     * refused with the budget's message. */
    if (as__acct_reserve(c->s, &c->rep->g, c->adopted->size, c->layer) < 0)
        return NULL;
    c->adopted_taken = true;
    c->rep->adopted = *c->adopted;
    c->rep->stored += c->adopted->size;
    return &c->rep->adopted;
}

int as_pctx_depend(as_pctx *c, as_handle dep)
{
    int rc = as__rep_add_dep(c->s, c->it, c->rep, dep);
    if (rc == AS_ESTATE)
        as_pctx_errorf(c, "dependency cycle");
    return rc;
}

bool as_pctx_can_depend(as_pctx *c, as_handle dep)
{
    return as__handle_holds_values(c->s, dep);
}

/* The item of a declared dependency, or NULL (error set). */
static as_item *dep_item(as_pctx *c, as_handle dep)
{
    as_rep *r = c->rep;
    for (size_t i = 0; i < r->ndeps; i++)
        if (r->deps[i].handle == dep.v)
            return r->deps[i].item;
    as__seterr(c->s, "restore (layer %s): handle 0x%016llx is not a "
               "declared dependency", c->layer, (unsigned long long)dep.v);
    return NULL;
}

int as_pctx_restore_dep(as_pctx *c, as_handle dep, const as_tensor **view)
{
    *view = NULL;
    as_item *d = dep_item(c, dep);
    if (!d)
        return AS_EHANDLE;
    if (c->nborrowed == sizeof c->borrowed / sizeof c->borrowed[0])
        return AS_ERANGE;
    int rc = as__borrow(c->s, d, view);
    if (rc == 0)
        c->borrowed[c->nborrowed++] = d;
    return rc;
}

int as_pctx_restore_dep_rows(as_pctx *c, as_handle dep, int64_t row0,
                             int64_t nrows, float *dst)
{
    as_item *d = dep_item(c, dep);
    if (!d)
        return AS_EHANDLE;
    const as_tensor *sh = &d->shape;
    int64_t n = sh->ndim ? sh->shape[sh->ndim - 1] : 0;
    int64_t rows = n > 0 ? as_tensor_numel(sh) / n : 0;
    if (sh->dtype != AS_F32 || sh->ndim < 1) {
        as__seterr(c->s, "restore (layer %s): dependency 0x%016llx is not an "
                   "f32 tensor of rank >= 1", c->layer,
                   (unsigned long long)dep.v);
        return AS_ESHAPE;
    }
    if (row0 < 0 || nrows < 0 || row0 > rows || nrows > rows - row0) {
        as__seterr(c->s, "restore (layer %s): rows [%lld, %lld) of dependency "
                   "0x%016llx outside [0, %lld)", c->layer, (long long)row0,
                   (long long)(row0 + nrows), (unsigned long long)dep.v,
                   (long long)rows);
        return AS_ERANGE;
    }
    as_rep *r = as__item_rep(c->s, d);
    int rc = as__item_rows(c->s, d, r, dep, row0, nrows, dst);
    as__rep_unref(c->s, r);
    return rc;
}

int as_pctx_scratch(as_pctx *c, size_t n, void **out)
{
    *out = NULL;
    if (c->nscratch == sizeof c->scratch / sizeof c->scratch[0])
        return AS_ERANGE;
    as_block *b = &c->scratch[c->nscratch];
    int rc = as_alloc(c->s->arena, n, AS_TAG_WORKSPACE,
                      c->rep ? c->rep->g.layer : 0, b);
    if (rc < 0) {
        as__seterr(c->s, "scratch (layer %s): %s", c->layer,
                   as_arena_last_error(c->s->arena));
        return rc;
    }
    c->nscratch++;
    *out = b->ptr;
    return 0;
}

void as_pctx_scratch_free(as_pctx *c, void *p)
{
    for (size_t i = 0; p && i < c->nscratch; i++)
        if (c->scratch[i].ptr == p) {
            as_free(c->s->arena, &c->scratch[i]);
            c->scratch[i] = c->scratch[--c->nscratch];
            return;
        }
}

int as_pctx_check_rows(as_pctx *ctx, int64_t row0, int64_t nrows, uint64_t rows)
{
    if (row0 < 0 || nrows < 0 || (uint64_t)row0 + (uint64_t)nrows > rows) {
        as_pctx_errorf(ctx, "rows [%lld, %lld) outside 0..%llu", (long long)row0,
                       (long long)(row0 + nrows), (unsigned long long)rows);
        return AS_ERANGE;
    }
    return 0;
}

uint64_t as_pctx_seal(const void *hdr, size_t n)
{
    return as__hash64(hdr, n) ^ 0x5ea1ed4ead0001ull;
}

int as_pctx_check_seal(as_pctx *ctx, const void *hdr, size_t n, uint64_t seal)
{
    if (as_pctx_seal(hdr, n) == seal)
        return 0;
    as_pctx_errorf(ctx, "stored header corrupted (checksum mismatch)");
    return AS_ECORRUPT;
}

int as_pctx_check_sealed_rows(as_pctx *ctx, const void *hdr, size_t n_sealed,
                              uint64_t seal, uint64_t n, uint64_t cols,
                              int64_t row0, int64_t nrows)
{
    int rc = as_pctx_check_seal(ctx, hdr, n_sealed, seal);
    return rc ? rc : as_pctx_check_rows(ctx, row0, nrows, n / cols);
}

int as_pctx_check_sealed_f32(as_pctx *ctx, const void *hdr, size_t n_sealed,
                             uint64_t seal, uint64_t n, const as_tensor *dst)
{
    int rc = as_pctx_check_seal(ctx, hdr, n_sealed, seal);
    if (rc)
        return rc;
    if ((uint64_t)as_tensor_numel(dst) != n || dst->dtype != AS_F32)
        return AS_ESHAPE;
    return 0;
}

uint64_t as_policy_row_len(const as_tensor *t)
{
    return t->ndim > 0 && t->shape[t->ndim - 1] > 0 ? (uint64_t)t->shape[t->ndim - 1] : 1;
}

void as_pctx_errorf(as_pctx *c, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    as__strlcpy(c->msg, msg, sizeof c->msg);
    as__seterr(c->s, "handle 0x%016llx (layer %s, %s): %s",
               (unsigned long long)c->h.v, c->layer,
               c->rep ? c->rep->ops->name : "?", msg);
}

const char *as_pctx_offload_dir(const as_pctx *c) { return c->s->offload_dir; }
as_handle as_pctx_handle(const as_pctx *c) { return c->h; }
const char *as_pctx_layer(const as_pctx *c) { return c->layer; }
/* Handle layout (store.c): id << 48 | check << 40 | gen << 20 | slot. */
uint64_t as_pctx_item_key(const as_pctx *c) { return c->h.v & ((1ull << 40) - 1); }
as_store *as_pctx_store(const as_pctx *c) { return c->s; }

/*
 * Restores and materialization.
 *
 * A representation whose policy has a `view` (keep) is read in place: no
 * copy for restore_view and for dependents, one memcpy for restore. Any
 * other representation is decoded; when a decoded copy must outlive the
 * call (restore_view, or a value a regenerator depends on) it is
 * "materialized" into item->mat (workspace tag, the item's layer).
 *
 * Materializations are reference-counted borrows. While the cache is on
 * (backward phase, or no phase ever marked) a materialization stays after
 * its last borrow as long as it may be needed again: it is evicted once the
 * item has no handle left and every item that depends on it is itself
 * materialized (or gone). Restoring a chain top-down (conv input <- conv
 * output <- next conv input ...) thus decodes each link once and holds only
 * a few links at a time. restore_view pins a materialization until the
 * item's last handle is released or the step ends. Leaving the backward
 * phase drops every unpinned materialization.
 */
#include <stdio.h>
#include <string.h>

#include "store/policies/act_grad.h"
#include "store/store_internal.h"
#include "util/clock.h"

static const char *lname(const as_store *s, const as_rep *r)
{
    return r->g.layer ? s->layers[r->g.layer].name : "(none)";
}

static void shape_text(const as_tensor *t, char *buf, size_t len)
{
    size_t k = (size_t)snprintf(buf, len, "%s[", as_dtype_name(t->dtype));
    for (int i = 0; i < t->ndim && k < len; i++)
        k += (size_t)snprintf(buf + k, len - k, "%s%lld", i ? "," : "",
                              (long long)t->shape[i]);
    if (k < len)
        snprintf(buf + k, len - k, "]");
}

/* Decode (or copy, for a view) the item's values into dst; the time is
 * charged to the representation's groups as decode time. h is the handle
 * the caller used (messages name it). */
static int decode_into(as_store *s, as_item *it, as_rep *r, as_tensor *dst,
                       as_handle h)
{
    uint64_t t0 = as_clock_wall_ns();
    int rc = 0;
    if (r->ops->view) {
        if (it->bytes)   /* an empty tensor may have no data at all */
            memcpy(dst->data, r->view.data, it->bytes);
    } else if (!r->ops->decode) {
        as__seterr(s, "restore (layer %s): policy %s cannot decode",
                   lname(s, r), r->ops->name);
        return AS_ENOTSUP;
    } else {
        as_pctx c;
        as__pctx_init(&c, s, it, r, h, lname(s, r));
        rc = r->ops->decode(&c, r->params, r->state, dst);
        as__pctx_done(&c);
    }
    as__acct_time(s, &r->g, false, as_clock_wall_ns() - t0);
    return rc;
}

void as__mat_maybe_evict_locked(as_store *s, as_item *it)
{
    if (it->mat_state != AS_MAT_READY || it->mat_borrows || it->mat_pinned)
        return;
    if (atomic_load(&s->cache_on)) {
        if (it->nhandles > 0)
            return;
        for (size_t i = 0; i < it->ndependents; i++)
            if (it->dependents[i]->mat_state != AS_MAT_READY)
                return;
    }
    it->mat_prev->mat_next = it->mat_next;
    it->mat_next->mat_prev = it->mat_prev;
    it->mat_state = AS_MAT_NONE;
    as_free(s->arena, &it->mat);
}

void as__mat_drop_all(as_store *s, bool pinned_too)
{
    pthread_mutex_lock(&s->mu);
    as_item *it = s->mat_list.mat_next;
    while (it != &s->mat_list) {
        as_item *next = it->mat_next;
        if (pinned_too)
            it->mat_pinned = false;
        if (!it->mat_borrows && !it->mat_pinned) {
            it->mat_prev->mat_next = it->mat_next;
            it->mat_next->mat_prev = it->mat_prev;
            it->mat_state = AS_MAT_NONE;
            as_free(s->arena, &it->mat);
        }
        it = next;
    }
    pthread_mutex_unlock(&s->mu);
}

int as__borrow(as_store *s, as_item *it, const as_tensor **view)
{
    as_rep *r = as__item_rep(s, it);
    if (r->ops->view) {
        *view = &r->view;   /* the rep struct lives as long as the item */
        as__rep_unref(s, r);
        return 0;
    }
    pthread_mutex_lock(&s->mu);
    for (;;) {
        if (it->mat_state == AS_MAT_READY) {
            it->mat_borrows++;
            pthread_mutex_unlock(&s->mu);
            as__rep_unref(s, r);
            *view = &it->mat_view;
            return 0;
        }
        if (it->mat_state != AS_MAT_BUSY)
            break;
        pthread_cond_wait(&s->cv, &s->mu);
    }
    it->mat_state = AS_MAT_BUSY;
    pthread_mutex_unlock(&s->mu);

    as_block b;
    int rc = as_alloc(s->arena, it->bytes, AS_TAG_WORKSPACE, r->g.layer, &b);
    if (rc < 0)
        as__seterr(s, "restore (layer %s): %s", lname(s, r),
                   as_arena_last_error(s->arena));
    if (rc == 0) {
        it->mat_view = it->shape;
        it->mat_view.data = b.ptr;
        rc = decode_into(s, it, r, &it->mat_view, it->h0);
    }
    pthread_mutex_lock(&s->mu);
    if (rc == 0) {
        it->mat = b;
        it->mat_state = AS_MAT_READY;
        it->mat_borrows = 1;
        it->mat_next = s->mat_list.mat_next;
        it->mat_prev = &s->mat_list;
        it->mat_next->mat_prev = it;
        s->mat_list.mat_next = it;
        /* This item no longer needs its dependencies' values. */
        for (size_t i = 0; i < r->ndeps; i++)
            as__mat_maybe_evict_locked(s, r->deps[i].item);
        *view = &it->mat_view;
    } else {
        it->mat_state = AS_MAT_NONE;
        if (b.ptr)
            as_free(s->arena, &b);
    }
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    as__rep_unref(s, r);
    return rc;
}

void as__unborrow(as_store *s, as_item *it)
{
    pthread_mutex_lock(&s->mu);
    if (it->mat_state == AS_MAT_READY && it->mat_borrows > 0) {
        it->mat_borrows--;
        as__mat_maybe_evict_locked(s, it);
    }
    pthread_mutex_unlock(&s->mu);
}

static bool mat_ready(as_store *s, as_item *it)
{
    pthread_mutex_lock(&s->mu);
    bool ready = it->mat_state == AS_MAT_READY;
    pthread_mutex_unlock(&s->mu);
    return ready;
}

/* Should a decode go through a materialization? Regenerated values and
 * values other items depend on are cached within the backward phase. */
static bool via_mat(as_store *s, as_item *it, const as_rep *r)
{
    if (r->ops->view)
        return false;
    pthread_mutex_lock(&s->mu);
    bool m = it->mat_state == AS_MAT_READY ||
             (atomic_load(&s->cache_on) &&
              (r->ops->regenerator || it->ndependents > 0));
    pthread_mutex_unlock(&s->mu);
    return m;
}

static int verify_checksum(as_store *s, as_item *it, as_rep *r, as_handle h)
{
    if (!it->has_checksum || !r->ops->view)
        return 0;
    if (as__checksum(r->view.data, it->bytes) != it->checksum) {
        as__seterr(s, "restore of handle 0x%016llx (layer %s): the saved "
                   "tensor was modified after save (debug checksum)",
                   (unsigned long long)h.v, lname(s, r));
        return AS_ECORRUPT;
    }
    return 0;
}

/* End of a restore call: count it (decode time was charged where the
 * values were produced) and drop the references taken by the lookup. */
static void done(as_store *s, as_item *it, as_rep *r, int rc)
{
    if (rc == 0)
        as__acct_count(s, &r->g, AS_STAT_RESTORE, 1);
    as__rep_unref(s, r);
    as__item_unref(s, it);
}

/* A policy's own restore path (softmax_backward, act_backward,
 * decode_rows): call, an expression of the item's context &c, into rc,
 * timed as decode time. */
#define POLICY_CALL(s, it, r, h, call)                                      \
    do {                                                                    \
        as_pctx c;                                                          \
        as__pctx_init(&c, (s), (it), (r), (h), lname((s), (r)));            \
        uint64_t t0_ = as_clock_wall_ns();                                  \
        rc = (call);                                                        \
        as__acct_time((s), &(r)->g, false, as_clock_wall_ns() - t0_);       \
        as__pctx_done(&c);                                                  \
    } while (0)

int as_store_restore(as_store *s, as_handle h, as_tensor *dst)
{
    if (!s || !dst)
        return AS_EINVAL;
    as_item *it;
    as_rep *r;
    int rc = as__lookup_rep(s, h, &it, &r, "restore");
    if (rc < 0)
        return rc;
    bool same = dst->dtype == it->shape.dtype && dst->ndim == it->shape.ndim;
    for (int i = 0; same && i < dst->ndim; i++)
        same = dst->shape[i] == it->shape.shape[i];
    if (same && !dst->data && it->bytes) {   /* a caller error, not a shape */
        as__seterr(s, "restore of handle 0x%016llx (layer %s): the buffer's data "
                   "is NULL", (unsigned long long)h.v, lname(s, r));
        rc = AS_EINVAL;
    } else if (!same) {
        char a[128], b[128];
        shape_text(dst, a, sizeof a);
        shape_text(&it->shape, b, sizeof b);
        as__seterr(s, "restore of handle 0x%016llx (layer %s): buffer is %s,"
                   " saved tensor is %s", (unsigned long long)h.v, lname(s, r), a, b);
        rc = AS_ESHAPE;
    } else if ((rc = verify_checksum(s, it, r, h)) < 0) {
        /* nothing written */
    } else if (via_mat(s, it, r)) {
        const as_tensor *v;
        if ((rc = as__borrow(s, it, &v)) == 0) {
            if (it->bytes)
                memcpy(dst->data, v->data, it->bytes);
            as__unborrow(s, it);
        }
    } else {
        rc = decode_into(s, it, r, dst, h);
    }
    done(s, it, r, rc);
    return rc;
}

int as_store_restore_view(as_store *s, as_handle h, const as_tensor **view)
{
    if (!s || !view)
        return AS_EINVAL;
    *view = NULL;
    as_item *it;
    as_rep *r;
    int rc = as__lookup_rep(s, h, &it, &r, "restore_view");
    if (rc < 0)
        return rc;
    if (r->ops->view) {
        if ((rc = verify_checksum(s, it, r, h)) == 0) {
            /* keep the data past a re-plan: one ref, taken once */
            if (!atomic_load_explicit(&r->view_held, memory_order_relaxed) &&
                !atomic_exchange(&r->view_held, true))
                atomic_fetch_add(&r->refs, 1);
            *view = &r->view;
        }
    } else if ((rc = as__borrow(s, it, view)) == 0) {
        pthread_mutex_lock(&s->mu);
        it->mat_pinned = true;
        it->mat_borrows--;
        pthread_mutex_unlock(&s->mu);
    }
    done(s, it, r, rc);
    return rc;
}

static int check_f32(as_store *s, as_item *it, as_rep *r, as_handle h,
                     const char *what)
{
    if (it->shape.dtype != AS_F32 || it->shape.ndim < 1) {
        char b[128];
        shape_text(&it->shape, b, sizeof b);
        as__seterr(s, "%s of handle 0x%016llx (layer %s): needs an f32 tensor "
                   "of rank >= 1, saved tensor is %s", what,
                   (unsigned long long)h.v, lname(s, r), b);
        return AS_ESHAPE;
    }
    return 0;
}

/* Lookup of h for `what` (references as for as__lookup_rep) on an f32
 * tensor of rank >= 1, seen as rows x n (n its last dimension); on a wrong
 * dtype or rank the references are dropped again. */
static int lookup_rows(as_store *s, as_handle h, const char *what,
                       as_item **it, as_rep **r, int64_t *rows, int64_t *n)
{
    int rc = as__lookup_rep(s, h, it, r, what);
    if (rc < 0)
        return rc;
    if ((rc = check_f32(s, *it, *r, h, what)) < 0) {
        done(s, *it, *r, rc);
        return rc;
    }
    *n = (*it)->shape.shape[(*it)->shape.ndim - 1];
    *rows = *n ? as_tensor_numel(&(*it)->shape) / *n : 0;
    return 0;
}

void as__softmax_bwd_rows(const float *y, const float *dy, float *dx,
                          int64_t rows, int64_t n)
{
    for (int64_t r = 0; r < rows; r++, y += n, dy += n, dx += n) {
        double dot = 0;
        for (int64_t i = 0; i < n; i++)
            dot += (double)dy[i] * y[i];
        for (int64_t i = 0; i < n; i++)
            dx[i] = y[i] * (dy[i] - (float)dot);
    }
}

int as_store_softmax_backward(as_store *s, as_handle h, const float *dy,
                              float *dx)
{
    if (!s || !dy || !dx)
        return AS_EINVAL;
    as_item *it;
    as_rep *r;
    int64_t rows, n;
    int rc = lookup_rows(s, h, "softmax_backward", &it, &r, &rows, &n);
    if (rc < 0)
        return rc;
    if (r->ops->softmax_backward && !r->ops->view && !mat_ready(s, it)) {
        POLICY_CALL(s, it, r, h, r->ops->softmax_backward(&c, r->params,
                                                          r->state, dy, dx));
    } else {
        const as_tensor *v;
        if ((rc = as__borrow(s, it, &v)) == 0) {
            as__softmax_bwd_rows(v->data, dy, dx, rows, n);
            as__unborrow(s, it);
        }
    }
    done(s, it, r, rc);
    return rc;
}

/* f' * dy from the item's values (kept in place, or materialized). */
static int act_bwd_values(as_store *s, as_item *it, const as_elementwise *fn,
                          const float *dy, float *dx)
{
    const as_tensor *v;
    int rc = as__borrow(s, it, &v);
    if (rc < 0)
        return rc;
    as__act_grad(fn->fn, fn->alpha, (size_t)as_tensor_numel(&it->shape),
                 v->data, dy, dx);
    as__unborrow(s, it);
    return 0;
}

int as_store_act_backward(as_store *s, as_handle h, const float *dy,
                          float *dx)
{
    if (!s || !dy || !dx)
        return AS_EINVAL;
    as_item *it;
    as_rep *r;
    int rc = as__lookup_rep(s, h, &it, &r, "act_backward");
    if (rc < 0)
        return rc;
    as_elementwise fn = {.fn = it->act_fn, .alpha = it->act_alpha};
    bool ok = fn.fn == AS_FN_RELU || fn.fn == AS_FN_LEAKY_RELU ||
              (fn.fn == AS_FN_GELU && !it->act_output);
    if (fn.fn == AS_FN_RELU)
        fn.alpha = 0.0f;
    if (it->shape.dtype != AS_F32) {
        rc = check_f32(s, it, r, h, "act_backward");
    } else if (!ok) {
        as__seterr(s, "act_backward of handle 0x%016llx (layer %s): %s",
                   (unsigned long long)h.v, lname(s, r),
                   it->act_fn < 0 ? "not saved as an activation input or output"
                   : "no derivative of this function from the saved tensor");
        rc = AS_EINVAL;
    } else if (r->ops->act_backward && !r->ops->view) {
        POLICY_CALL(s, it, r, h, r->ops->act_backward(&c, r->params, r->state,
                                                      &fn, dy, dx));
    } else {
        rc = act_bwd_values(s, it, &fn, dy, dx);
    }
    done(s, it, r, rc);
    return rc;
}

int as_store_restore_rows(as_store *s, as_handle h, int64_t row0,
                          int64_t nrows, float *dst)
{
    if (!s || (!dst && nrows > 0))
        return AS_EINVAL;
    as_item *it;
    as_rep *r;
    int64_t rows, n;
    int rc = lookup_rows(s, h, "restore_rows", &it, &r, &rows, &n);
    if (rc < 0)
        return rc;
    if (row0 < 0 || nrows < 0 || row0 > rows || nrows > rows - row0) {
        as__seterr(s, "restore_rows of handle 0x%016llx (layer %s): rows "
                   "[%lld, %lld) outside [0, %lld)", (unsigned long long)h.v,
                   lname(s, r), (long long)row0, (long long)(row0 + nrows),
                   (long long)rows);
        rc = AS_ERANGE;
    } else {
        rc = as__item_rows(s, it, r, h, row0, nrows, dst);
    }
    done(s, it, r, rc);
    return rc;
}

int as__item_rows(as_store *s, as_item *it, as_rep *r, as_handle h,
                  int64_t row0, int64_t nrows, float *dst)
{
    int rc;
    int64_t n = it->shape.shape[it->shape.ndim - 1];
    if (r->ops->decode_rows && !r->ops->view && !mat_ready(s, it)) {
        POLICY_CALL(s, it, r, h, r->ops->decode_rows(&c, r->params, r->state,
                                                     row0, nrows, dst));
        return rc;
    }
    const as_tensor *v;
    if ((rc = as__borrow(s, it, &v)) == 0) {
        if (nrows > 0 && n > 0)
            memcpy(dst, (const float *)v->data + row0 * n,
                   (size_t)(nrows * n) * sizeof(float));
        as__unborrow(s, it);
    }
    return rc;
}

int as_store_prefetch(as_store *s, as_handle h)
{
    if (!s)
        return AS_EINVAL;
    as_item *it;
    as_rep *r;
    int rc = as__lookup_rep(s, h, &it, &r, "prefetch");
    if (rc < 0)
        return rc;
    if (r->ops->prefetch) {
        as_pctx c;
        as__pctx_init(&c, s, it, r, h, lname(s, r));
        r->ops->prefetch(&c, r->params, r->state);
        as__pctx_done(&c);
    }
    as__rep_unref(s, r);
    as__item_unref(s, it);
    return 0;
}

int as_store_is_in_place(as_store *s, as_handle h)
{
    as_peek p;
    int rc = as__peek(s, h, "is_in_place", &p);
    return rc < 0 ? rc : p.in_place;
}

int as_store_describe(as_store *s, as_handle h, as_tensor *shape, int *kind)
{
    as_peek p;
    int rc = as__peek(s, h, "describe", &p);
    if (rc < 0)
        return rc;
    if (shape)
        *shape = p.shape;
    if (kind)
        *kind = p.g.kind;
    return 0;
}

const char *as_store_policy_of(as_store *s, as_handle h)
{
    if (!s)
        return "invalid store";
    as_peek p;
    return as__peek(s, h, "policy_of", &p) < 0 ? "invalid handle" : p.desc;
}

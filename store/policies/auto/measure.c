/*
 * auto's trials: each candidate encodes and decodes the tensor the store
 * still holds, as workspace (never stored bytes), and its stored bytes,
 * time and reconstruction error are summed per (layer, kind).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "store/policies/act_grad.h"
#include "store/policies/auto/impl.h"
#include "util/clock.h"

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

void as__auto_compare(const as_save_info *info, const as_tensor *t,
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
        as__auto_compare(info, t, r->ops->view(r->params, r->state), m);
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
        as__auto_compare(info, t, dst.ptr, m);
    as_free(s->arena, &dst);
    return rc;
}

/* Encode and decode t under c as a trial (workspace only) and add what it
 * would store, its time and its error to *m. */
void as__auto_trial(as_store *s, as_item *it, as_handle h, as_groups g,
                    const cand *c, const as_save_info *info,
                    const as_tensor *t, const char *layer, meas *m)
{
    as_rep *r = as__scalloc(s, 1, sizeof *r);
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

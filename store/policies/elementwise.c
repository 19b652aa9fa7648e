/*
 * Elementwise regenerators.
 *
 * derive:  this = fn(source). Stores nothing; restores the source and
 *          applies fn (any as_fn). Typical: an activation output whose input
 *          is kept anyway.
 * inverse: source = fn^-1(this), chosen for the SOURCE tensor. At its save
 *          nothing can be decided yet, so it is held by the rule's fallback
 *          (keep by default); when a later save declares it its `source`
 *          through an invertible fn (LeakyReLU with alpha > 0, affine with
 *          no zero scale, identity), the store drops that copy and rebuilds
 *          it from the later tensor from then on. See docs/store.md for the
 *          implicit chain rule that makes conv outputs "inverse".
 *
 * Inverses are exact up to rounding: LeakyReLU negatives come back as
 * (alpha * x) / alpha (<= 1 ulp off), affine as (y - shift) / scale (error
 * relative to |shift| / |scale| in ulps).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/store_internal.h"
#include "util/simd.h"

typedef struct estate {
    as_elementwise fn;
    as_handle      dep;
    bool           inverse;   /* this = fn^-1(dep), else this = fn(dep) */
} estate;

/* Affine over NCHW-style layout: blocks of `inner` values share a channel
 * (one scale and shift per block, no per-value index arithmetic); forward
 * y = a x + c, or its inverse x = (y - c) / a. */
AS_CLONES_V4_V3
static void affine(const as_elementwise *f, const float *in, float *out, int64_t n,
                   bool inverse)
{
    for (int64_t b = 0, i0 = 0; i0 < n; b++, i0 += f->inner) {
        const float a = f->scale[b % f->channels], c = f->shift[b % f->channels];
        const int64_t i1 = n - i0 < f->inner ? n : i0 + f->inner;
        if (inverse)
            for (int64_t i = i0; i < i1; i++)
                out[i] = (in[i] - c) / a;
        else
            for (int64_t i = i0; i < i1; i++)
                out[i] = a * in[i] + c;
    }
}

AS_CLONES_V4_V3
static void leaky_fwd(float alpha, const float *x, float *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] = x[i] >= 0 ? x[i] : alpha * x[i];
}

AS_CLONES_V4_V3
static void leaky_inv(float alpha, const float *y, float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = y[i] >= 0 ? y[i] : y[i] / alpha;
}

static void apply_fn(const as_elementwise *f, const float *x, float *y,
                     int64_t n)
{
    switch (f->fn) {
    case AS_FN_RELU:
        for (int64_t i = 0; i < n; i++)
            y[i] = x[i] > 0 ? x[i] : 0.0f;
        break;
    case AS_FN_LEAKY_RELU:
        leaky_fwd(f->alpha, x, y, n);
        break;
    case AS_FN_AFFINE:
        affine(f, x, y, n, false);
        break;
    case AS_FN_GELU:
        for (int64_t i = 0; i < n; i++)
            y[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.70710678f));
        break;
    default:
        memmove(y, x, (size_t)n * sizeof *y);
    }
}

static void apply_inverse(const as_elementwise *f, const float *y, float *x,
                          int64_t n)
{
    switch (f->fn) {
    case AS_FN_LEAKY_RELU:
        leaky_inv(f->alpha, y, x, n);
        break;
    case AS_FN_AFFINE:
        affine(f, y, x, n, true);
        break;
    default:
        memmove(x, y, (size_t)n * sizeof *x);
    }
}

static bool affine_ok(const as_elementwise *f, int64_t numel)
{
    return f->scale && f->shift && f->channels > 0 && f->inner > 0 &&
           numel % (f->channels * f->inner) == 0;
}

bool as__fn_invertible(const as_elementwise *f, int64_t numel, char *why,
                       size_t whylen)
{
    switch (f->fn) {
    case AS_FN_IDENTITY:
        return true;
    case AS_FN_LEAKY_RELU:
        if (f->alpha > 0 && isfinite(f->alpha))
            return true;
        snprintf(why, whylen, "leaky_relu alpha %g not > 0", f->alpha);
        return false;
    case AS_FN_AFFINE:
        if (!affine_ok(f, numel)) {
            snprintf(why, whylen, "affine without scale/shift or geometry");
            return false;
        }
        for (int64_t c = 0; c < f->channels; c++)
            if (f->scale[c] == 0 || !isfinite(f->scale[c])) {
                snprintf(why, whylen, "affine scale[%lld] = %g",
                         (long long)c, f->scale[c]);
                return false;
            }
        return true;
    default:
        snprintf(why, whylen, "fn %d not invertible", f->fn);
        return false;
    }
}

/* The state of both: depend on dep, rebuild through fn or its inverse. */
static int dep_encode(as_pctx *ctx, const as_elementwise *fn, as_handle dep,
                      bool inverse, void **state)
{
    estate *st = calloc(1, sizeof *st);
    if (!st)
        return AS_ENOMEM;
    *st = (estate){.fn = *fn, .dep = dep, .inverse = inverse};
    int rc = as_pctx_depend(ctx, dep);
    if (rc < 0) {
        free(st);
        return rc;
    }
    *state = st;
    return 0;
}

static int dep_decode(as_pctx *ctx, const void *params, void *state,
                      as_tensor *dst)
{
    estate *st = state;
    const as_tensor *v;
    int rc = as_pctx_restore_dep(ctx, st->dep, &v);
    if (rc == 0 && st->inverse)
        apply_inverse(&st->fn, v->data, dst->data, as_tensor_numel(dst));
    else if (rc == 0)
        apply_fn(&st->fn, v->data, dst->data, as_tensor_numel(dst));
    return rc;
}

/* ---- derive ------------------------------------------------------------ */

/* derive and inverse: a regenerator over one dependency, rebuilt by
 * dep_decode. */
#define DEPENDENT                                                           \
    .regenerator = true, AS_POLICY_NO_ARGS, .decode = dep_decode,           \
    .drop = as_policy_drop_free

static int derive_applies(const void *params, const as_save_info *info,
                          const as_tensor *t, char *why, size_t whylen)
{
    if (as_handle_is_null(info->source))
        return as_policy_reject(why, whylen, "no source");
    if (t->dtype != AS_F32)
        return as_policy_reject(why, whylen, "dtype %s", as_dtype_name(t->dtype));
    if (info->source_fn.fn < 0 || info->source_fn.fn >= AS_FN_COUNT ||
        (info->source_fn.fn == AS_FN_AFFINE &&
         !affine_ok(&info->source_fn, as_tensor_numel(t))))
        return as_policy_reject(why, whylen, "bad source_fn");
    return 0;
}

static int derive_encode(as_pctx *ctx, const void *params,
                         const as_save_info *info, const as_tensor *t,
                         void **state)
{
    as_tensor src;
    int rc = as_store_describe(as_pctx_store(ctx), info->source, &src, NULL);
    if (rc < 0)
        return rc;
    if (src.dtype != AS_F32 || as_tensor_numel(&src) != as_tensor_numel(t)) {
        as_pctx_errorf(ctx, "source is not an f32 tensor of the same size");
        return AS_ENOTSUP;
    }
    return dep_encode(ctx, &info->source_fn, info->source, false, state);
}

AS_POLICY_OPS(derive,
              "store nothing; this = fn(source) (relu, leaky_relu, affine, "
              "gelu)",
              (DEPENDENT),
              applies, encode);

/* ---- inverse ------------------------------------------------------------ */

int as__inverse_encode(as_pctx *ctx, as_handle consumer,
                       const as_elementwise *fn, void **state)
{
    return dep_encode(ctx, fn, consumer, true, state);
}

static int inverse_encode(as_pctx *ctx, const void *params,
                          const as_save_info *info, const as_tensor *t,
                          void **state)
{
    /* Never the tensor's first representation: see the top of the file. */
    as_pctx_errorf(ctx, "decided when a consumer declares this its source");
    return AS_ENOTSUP;
}

AS_POLICY_OPS(inverse,
              "store nothing; rebuilt from a later tensor y = fn(this) "
              "through fn^-1 (leaky_relu, affine)",
              (DEPENDENT),
              encode);

/*
 * sign: the input or output of a ReLU / LeakyReLU in 1 bit per element.
 *
 * Backward needs only whether the value is > 0: dx = y > 0 ? dy : alpha dy
 * (alpha 0 for ReLU), and for alpha >= 0 the output is > 0 exactly where
 * the input is. So bit i = (v[i] > 0) (NaN gives 0, as the comparison in
 * the exact backward) and as_store_act_backward computes the same
 * expression from the bit: bit-identical gradients to keeping the tensor.
 *
 * Stored: 16 + 8 * ceil(n / 64) bytes (32x smaller than f32). Restore gives
 * a stand-in with the same derivative, not the values: 1.0 where the bit is
 * set, 0.0 elsewhere (grad_only: an alias under a lossy policy gets an item
 * of its own, see store/save.c).
 *
 * Applies to activation_input / activation_output f32 tensors saved with
 * meta.act ReLU, or LeakyReLU with alpha >= 0 (an output of a negative
 * slope is > 0 where the input is not).
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "store/policy.h"

typedef struct sign_blk {
    int64_t  n;
    uint64_t seal;     /* as_pctx_seal of n */
    uint64_t w[];      /* ceil(n / 64) words, element i at bit i % 64 */
} sign_blk;

static int sign_applies(const void *params, const as_save_info *info,
                        const as_tensor *t, char *why, size_t whylen)
{
    const as_elementwise *f = &info->meta.act;
    if (t->dtype != AS_F32)
        return as_policy_reject(why, whylen, "dtype %s", as_dtype_name(t->dtype));
    if (f->fn != AS_FN_RELU && f->fn != AS_FN_LEAKY_RELU)
        return as_policy_reject(why, whylen, "not a relu / leaky_relu (fn %d)", f->fn);
    if (f->fn == AS_FN_LEAKY_RELU && !(f->alpha >= 0 && isfinite(f->alpha)))
        return as_policy_reject(why, whylen, "leaky_relu alpha %g < 0", f->alpha);
    return 0;
}

/* Bit j of a 32-bit half as a per-lane constant: the select loops below
 * vectorize with plain SSE2 (and, compare, blend; no variable shifts). */
static const uint32_t bitv[32] = {
    1u << 0, 1u << 1, 1u << 2, 1u << 3, 1u << 4, 1u << 5, 1u << 6, 1u << 7,
    1u << 8, 1u << 9, 1u << 10, 1u << 11, 1u << 12, 1u << 13, 1u << 14, 1u << 15,
    1u << 16, 1u << 17, 1u << 18, 1u << 19, 1u << 20, 1u << 21, 1u << 22, 1u << 23,
    1u << 24, 1u << 25, 1u << 26, 1u << 27, 1u << 28, 1u << 29, 1u << 30, 1u << 31};

static inline uint32_t pack32(const float *x)
{
    uint32_t v = 0;
    for (int j = 0; j < 32; j++)
        v |= x[j] > 0.0f ? bitv[j] : 0u;
    return v;
}

static int sign_encode(as_pctx *ctx, const void *params,
                       const as_save_info *info, const as_tensor *t,
                       void **state)
{
    const int64_t n = as_tensor_numel(t);
    const size_t words = (size_t)(n + 63) / 64;
    sign_blk *b;
    int rc = as_pctx_alloc(ctx, sizeof *b + words * sizeof(uint64_t),
                           (void **)&b);
    if (rc < 0)
        return rc;
    b->n = n;
    b->seal = as_pctx_seal(b, offsetof(sign_blk, seal));
    const float *x = t->data;
    const int64_t full = n & ~(int64_t)63;
    for (int64_t i0 = 0; i0 < full; i0 += 64)
        b->w[i0 >> 6] = pack32(x + i0) | (uint64_t)pack32(x + i0 + 32) << 32;
    if (full < n) {
        uint64_t v = 0;
        for (int64_t j = 0; j < n - full; j++)
            v |= (uint64_t)(x[full + j] > 0.0f) << j;
        b->w[full >> 6] = v;
    }
    *state = b;
    return 0;
}

static int sign_decode(as_pctx *ctx, const void *params, void *state,
                       as_tensor *dst)
{
    const sign_blk *b = state;
    int rc = as_pctx_check_seal(ctx, b, offsetof(sign_blk, seal), b->seal);
    if (rc)
        return rc;
    float *y = dst->data;
    const int64_t full = b->n & ~(int64_t)63;
    for (int64_t i0 = 0; i0 < full; i0 += 64) {
        const uint64_t v = b->w[i0 >> 6];
        const uint32_t lo = (uint32_t)v, hi = (uint32_t)(v >> 32);
        for (int j = 0; j < 32; j++)
            y[i0 + j] = lo & bitv[j] ? 1.0f : 0.0f;
        for (int j = 0; j < 32; j++)
            y[i0 + 32 + j] = hi & bitv[j] ? 1.0f : 0.0f;
    }
    for (int64_t i = full; i < b->n; i++)
        y[i] = (float)((b->w[i >> 6] >> (i & 63)) & 1);
    return 0;
}

static inline void select32(uint32_t bits, float a, const float *dy, float *dx)
{
    for (int j = 0; j < 32; j++)
        dx[j] = bits & bitv[j] ? dy[j] : a * dy[j];
}

static int sign_act_backward(as_pctx *ctx, const void *params, void *state,
                             const as_elementwise *fn, const float *dy,
                             float *dx)
{
    const sign_blk *b = state;
    int rc = as_pctx_check_seal(ctx, b, offsetof(sign_blk, seal), b->seal);
    if (rc)
        return rc;
    const float a = fn->alpha;
    const int64_t full = b->n & ~(int64_t)63;
    for (int64_t i0 = 0; i0 < full; i0 += 64) {
        const uint64_t v = b->w[i0 >> 6];
        select32((uint32_t)v, a, dy + i0, dx + i0);
        select32((uint32_t)(v >> 32), a, dy + i0 + 32, dx + i0 + 32);
    }
    for (int64_t i = full; i < b->n; i++)
        dx[i] = (b->w[i >> 6] >> (i & 63)) & 1 ? dy[i] : a * dy[i];
    return 0;
}

AS_POLICY_OPS(sign,
              "relu / leaky_relu input or output as 1 bit per element; "
              "exact gradients",
              (.kinds = (1u << AS_KIND_ACTIVATION_INPUT) |
                        (1u << AS_KIND_ACTIVATION_OUTPUT),
               .grad_only = true, AS_POLICY_NO_ARGS),
              applies, encode, decode, act_backward);

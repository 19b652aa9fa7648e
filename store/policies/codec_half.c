/*
 * fp16 and bf16 — keep an f32 tensor as 16-bit floats (2x smaller), round
 * to nearest even. Error bounds (quant.h): fp16 relative <= 2^-11 in
 * [2^-14, 65504], values past 65504 overflow to inf (use bf16 there);
 * bf16 relative <= 2^-8 over the whole f32 range.
 *
 * Stored form: one block, a small header (count and last dimension, for
 * decode_rows) followed by the 16-bit values. No arguments.
 */
#include <stdio.h>
#include <string.h>

#include "store/policies/quant.h"
#include "store/policy.h"

typedef struct half_hdr {
    uint64_t n;        /* values */
    uint64_t cols;     /* last dimension (rows view for decode_rows) */
    uint64_t seal;     /* as_pctx_seal of n and cols */
    uint16_t v[];      /* n values */
} half_hdr;

static int half_encode(as_pctx *ctx, const as_tensor *t, void **state,
                       bool brain)
{
    if (t->dtype != AS_F32)
        return AS_ENOTSUP;
    size_t n = (size_t)as_tensor_numel(t);
    half_hdr *h;
    int rc = as_pctx_alloc(ctx, sizeof *h + n * sizeof(uint16_t), (void **)&h);
    if (rc)
        return rc;
    h->n = n;
    h->cols = as_policy_row_len(t);
    h->seal = as_pctx_seal(h, offsetof(half_hdr, seal));
    if (brain)
        as__f32_to_bf16(t->data, h->v, n);
    else
        as__f32_to_f16(t->data, h->v, n);
    *state = h;
    return 0;
}

static void half_range(const half_hdr *h, size_t i0, size_t n, float *dst,
                       bool brain)
{
    if (brain)
        as__bf16_to_f32(h->v + i0, dst, n);
    else
        as__f16_to_f32(h->v + i0, dst, n);
}

static int half_decode(as_pctx *ctx, const half_hdr *h, as_tensor *dst, bool brain)
{
    int rc = as_pctx_check_sealed_f32(ctx, h, offsetof(half_hdr, seal), h->seal,
                                      h->n, dst);
    if (rc)
        return rc;
    half_range(h, 0, h->n, dst->data, brain);
    return 0;
}

static int half_rows(as_pctx *ctx, const half_hdr *h, int64_t row0,
                     int64_t nrows, float *dst, bool brain)
{
    int rc = as_pctx_check_sealed_rows(ctx, h, offsetof(half_hdr, seal), h->seal,
                                       h->n, h->cols, row0, nrows);
    if (rc)
        return rc;
    half_range(h, (size_t)row0 * h->cols, (size_t)nrows * h->cols, dst, brain);
    return 0;
}

/* One policy per 16-bit format: the callbacks bind `brain` and forward to
 * the shared encode, decode and decode_rows above. */
#define HALF_OPS(NAME, BRAIN, SUMMARY)                                       \
    static int NAME##_encode(as_pctx *ctx, const void *params,              \
                             const as_save_info *info, const as_tensor *t,  \
                             void **state)                                  \
    {                                                                       \
        (void)params, (void)info;                                           \
        return half_encode(ctx, t, state, BRAIN);                           \
    }                                                                       \
    static int NAME##_decode(as_pctx *ctx, const void *params, void *state, \
                             as_tensor *dst)                                \
    {                                                                       \
        (void)params;                                                       \
        return half_decode(ctx, state, dst, BRAIN);                         \
    }                                                                       \
    static int NAME##_decode_rows(as_pctx *ctx, const void *params,        \
                                  void *state, int64_t row0,                \
                                  int64_t nrows, float *dst)                \
    {                                                                       \
        (void)params;                                                       \
        return half_rows(ctx, state, row0, nrows, dst, BRAIN);              \
    }                                                                       \
    AS_POLICY_OPS(NAME, SUMMARY,                                            \
                  (AS_POLICY_NO_ARGS, .applies = as_policy_applies_f32),    \
                  encode, decode, decode_rows);

HALF_OPS(fp16, false,
         "f32 as IEEE half, round to nearest even (2x; rel. err <= 2^-11, |x| <= 65504)")
HALF_OPS(bf16, true,
         "f32 as bfloat16, round to nearest even (2x; rel. err <= 2^-8)")

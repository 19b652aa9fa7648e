/*
 * bitpack: integer tensors of a small range (max-pool argmax positions,
 * token ids, targets, masks) in as few bits as the range needs, exact.
 *
 * At save the tensor's min m and max M are found; every value is stored as
 * v - m in b = ceil(log2(M - m + 1)) bits (0 bits when all values are
 * equal), packed back to back (store/policies/bits.h). A 2x2 max-pool's
 * argmax (0..3) takes 2 bits instead of the u8's 8; token ids of a
 * 96-symbol vocabulary 7 bits instead of 32.
 *
 * Stored: 32 + 8 * ceil(n * b / 64) bytes. Applies to u8 and i32 tensors of
 * kinds index, dropout_mask and generic.
 */
#include <stdio.h>
#include <string.h>

#include "store/policies/bits.h"
#include "store/policy.h"

typedef struct bp_blk {
    int64_t  n;
    int64_t  min;
    uint32_t bits, pad;
    uint64_t seal;     /* as_pctx_seal of the fields above */
    uint64_t w[];
} bp_blk;

static int bp_applies(const void *params, const as_save_info *info,
                      const as_tensor *t, char *why, size_t whylen)
{
    if (t->dtype != AS_U8 && t->dtype != AS_I32) {
        snprintf(why, whylen, "dtype %s (u8 or i32 only)",
                 as_dtype_name(t->dtype));
        return AS_ENOTSUP;
    }
    return 0;
}

static int64_t value_at(const as_tensor *t, int64_t i)
{
    return t->dtype == AS_U8 ? (int64_t)((const uint8_t *)t->data)[i]
                             : (int64_t)((const int32_t *)t->data)[i];
}

static int bp_encode(as_pctx *ctx, const void *params,
                     const as_save_info *info, const as_tensor *t,
                     void **state)
{
    const int64_t n = as_tensor_numel(t);
    int64_t lo = 0, hi = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t v = value_at(t, i);
        if (i == 0 || v < lo)
            lo = v;
        if (i == 0 || v > hi)
            hi = v;
    }
    const unsigned bits = as__bits_for((uint64_t)(hi - lo));
    const size_t words = as__bits_words((uint64_t)n, bits);
    bp_blk *b;
    int rc = as_pctx_alloc(ctx, sizeof *b + words * sizeof(uint64_t),
                           (void **)&b);
    if (rc < 0)
        return rc;
    b->n = n;
    b->min = lo;
    b->bits = bits;
    b->pad = 0;
    b->seal = as_pctx_seal(b, offsetof(bp_blk, seal));
    memset(b->w, 0, words * sizeof(uint64_t));
    for (int64_t i = 0; bits && i < n; i++)
        as__bits_put(b->w, (uint64_t)i, bits, (uint64_t)(value_at(t, i) - lo));
    *state = b;
    return 0;
}

static int bp_decode(as_pctx *ctx, const void *params, void *state,
                     as_tensor *dst)
{
    const bp_blk *b = state;
    int rc = as_pctx_check_seal(ctx, b, offsetof(bp_blk, seal), b->seal);
    if (rc)
        return rc;
    if (dst->dtype == AS_U8) {
        uint8_t *y = dst->data;
        for (int64_t i = 0; i < b->n; i++)
            y[i] = (uint8_t)(b->min + (int64_t)as__bits_get(b->w, (uint64_t)i,
                                                            b->bits));
    } else {
        int32_t *y = dst->data;
        for (int64_t i = 0; i < b->n; i++)
            y[i] = (int32_t)(b->min + (int64_t)as__bits_get(b->w, (uint64_t)i,
                                                            b->bits));
    }
    return 0;
}

const as_policy_ops as_policy_bitpack = {
    .name = "bitpack",
    .summary = "u8 / i32 indices in ceil(log2(range)) bits each (2 for a "
               "2x2 argmax); exact",
    .kinds = (1u << AS_KIND_INDEX) | (1u << AS_KIND_DROPOUT_MASK) |
             (1u << AS_KIND_GENERIC),
    .exact = true,
    .parse = as_policy_parse_none,
    .applies = bp_applies,
    .encode = bp_encode,
    .decode = bp_decode,
};

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
#include "util/simd.h"

typedef struct bp_blk {
    int64_t  n;
    int64_t  min;
    uint32_t bits, pad;
    uint64_t seal;     /* as_pctx_seal of the fields above */
    uint64_t w[];
} bp_blk;

static int bitpack_applies(const void *params, const as_save_info *info,
                           const as_tensor *t, char *why, size_t whylen)
{
    if (t->dtype != AS_U8 && t->dtype != AS_I32)
        return as_policy_reject(why, whylen, "dtype %s (u8 or i32 only)",
                                as_dtype_name(t->dtype));
    return 0;
}

static int64_t value_at(const as_tensor *t, int64_t i)
{
    return t->dtype == AS_U8 ? (int64_t)((const uint8_t *)t->data)[i]
                             : (int64_t)((const int32_t *)t->data)[i];
}

/* Min and max of n > 0 bytes (vectorizes). */
AS_CLONES_V4_V3
static void minmax_u8(const uint8_t *restrict x, int64_t n, int64_t *lo, int64_t *hi)
{
    uint8_t l = 255, h = 0;
    for (int64_t i = 0; i < n; i++) {
        l = x[i] < l ? x[i] : l;
        h = x[i] > h ? x[i] : h;
    }
    *lo = l;
    *hi = h;
}

/* u8 codes with BMI2, eight values per step: subtract lo from every byte
 * (no borrow: each is >= lo), pext the low `bits` of each byte into
 * `bits` bytes (the bit stream of bits.h); pdep and add back to decode.
 * Past n the bytes are taken as lo (code 0). out / in hold `cap` bytes. */
static inline uint64_t bp_lanes(unsigned bits)
{
    return 0x0101010101010101ull * ((1u << bits) - 1);
}

#if AS_X86_DISPATCH
static inline bool bp_use_bmi2(void)
{
    return __builtin_cpu_supports("bmi2") && !as__simd_portable();
}

__attribute__((target("bmi2")))
static void pack_u8_bmi2(const uint8_t *x, int64_t n, unsigned bits, uint8_t lo,
                         uint8_t *out, size_t cap)
{
    const uint64_t sub = 0x0101010101010101ull * lo, mask = bp_lanes(bits);
    for (int64_t i = 0; i < n; i += 8) {
        uint64_t v = sub;
        memcpy(&v, x + i, n - i < 8 ? (size_t)(n - i) : 8);
        const uint64_t p = _pext_u64(v - sub, mask);
        const size_t o = (size_t)i / 8 * bits;
        memcpy(out + o, &p, cap - o < 8 ? cap - o : 8);
    }
}

__attribute__((target("bmi2")))
static void unpack_u8_bmi2(const uint8_t *in, size_t cap, int64_t n, unsigned bits,
                           uint8_t lo, uint8_t *y)
{
    const uint64_t add = 0x0101010101010101ull * lo, mask = bp_lanes(bits);
    for (int64_t i = 0; i < n; i += 8) {
        const size_t o = (size_t)i / 8 * bits;
        uint64_t p = 0;
        memcpy(&p, in + o, cap - o < 8 ? cap - o : 8);
        const uint64_t v = _pdep_u64(p, mask) + add;
        memcpy(y + i, &v, n - i < 8 ? (size_t)(n - i) : 8);
    }
}
#endif

static int bitpack_encode(as_pctx *ctx, const void *params,
                          const as_save_info *info, const as_tensor *t,
                          void **state)
{
    const int64_t n = as_tensor_numel(t);
    int64_t lo = 0, hi = 0;
    if (t->dtype == AS_U8 && n > 0)
        minmax_u8(t->data, n, &lo, &hi);
    for (int64_t i = 0; t->dtype != AS_U8 && i < n; i++) {
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
#if AS_X86_DISPATCH
    if (t->dtype == AS_U8 && bits && bp_use_bmi2()) {
        pack_u8_bmi2(t->data, n, bits, (uint8_t)lo, (uint8_t *)b->w,
                     words * sizeof(uint64_t));
        *state = b;
        return 0;
    }
#endif
    for (int64_t i = 0; bits && i < n; i++)
        as__bits_put(b->w, (uint64_t)i, bits, (uint64_t)(value_at(t, i) - lo));
    *state = b;
    return 0;
}

static int bitpack_decode(as_pctx *ctx, const void *params, void *state,
                          as_tensor *dst)
{
    const bp_blk *b = state;
    int rc = as_pctx_check_seal(ctx, b, offsetof(bp_blk, seal), b->seal);
    if (rc)
        return rc;
#if AS_X86_DISPATCH
    if (dst->dtype == AS_U8 && b->bits && b->min >= 0 &&
        b->min + (1 << b->bits) - 1 <= 255 && bp_use_bmi2()) {   /* no carry */
        unpack_u8_bmi2((const uint8_t *)b->w, as__bits_words((uint64_t)b->n, b->bits) * 8,
                       b->n, b->bits, (uint8_t)b->min, dst->data);
        return 0;
    }
#endif
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

AS_POLICY_OPS(bitpack,
              "u8 / i32 indices in ceil(log2(range)) bits each (2 for a "
              "2x2 argmax); exact",
              (.kinds = (1u << AS_KIND_INDEX) | (1u << AS_KIND_DROPOUT_MASK) |
                        (1u << AS_KIND_GENERIC),
               .exact = true, AS_POLICY_NO_ARGS),
              applies, encode, decode);

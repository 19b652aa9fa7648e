/*
 * q8, q4, q2 — per-group affine quantization with stochastic rounding (as
 * in ActNN): each group of G consecutive values keeps its min m and step
 * s = (max - m) / (2^B - 1) in f32 and one B-bit code per value,
 *     code = floor((x - m) / s + u),  u ~ U[0, 1),
 * decoded as m + code * s. E[decode] = x (unbiased), |error| < s.
 *
 * Arguments (colon-separated, any order):
 *     q4            group 256, seed 0
 *     q4:64         group 64 (shorthand)
 *     q4:g=64       the same; "group=64" also accepted
 *     q4:g=64:seed=7
 * G is a multiple of 8 in [8, 4096]. Smaller groups track the local range
 * more closely at 8 bytes of (m, s) per group.
 *
 * Randomness is counter-based: u for value j of group g is a hash of
 * (seed, item key, g, j), so a run is reproducible, the result does not
 * depend on threads, and successive steps (new handles) draw fresh noise.
 * The item key is the handle without its store id, so two stores fed the
 * same saves (the arms of an A/B run) draw the same noise.
 *
 * Stored form: one block: header, G-group parameters, packed codes (codes
 * of a group start on a byte boundary, low bits first).
 * Size: n*B/8 + 8*ceil(n/G) bytes (q8 at G = 256: 3.88x smaller than f32;
 * q4 7.5x; q2 14.2x).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/policies/quant.h"
#include "store/policy.h"

typedef struct quant_params {
    uint32_t group;
    uint64_t seed;
} quant_params;

typedef struct quant_hdr {
    uint64_t n, cols;
    uint32_t bits, group;
    as_qgroup *groups;   /* into this block */
    uint8_t   *codes;    /* into this block */
    uint64_t   seal;     /* as_pctx_seal of the fields above */
} quant_hdr;

/* Parse one unsigned decimal number of args[*i..len). */
static int parse_u64(const char *s, size_t len, size_t *i, uint64_t *out)
{
    uint64_t v = 0;
    size_t j = *i;
    if (j >= len || s[j] < '0' || s[j] > '9')
        return -1;
    for (; j < len && s[j] >= '0' && s[j] <= '9'; j++) {
        if (v > (UINT64_MAX - 9) / 10)
            return -1;
        v = v * 10 + (uint64_t)(s[j] - '0');
    }
    *i = j;
    *out = v;
    return 0;
}

static int quant_parse(const char *args, size_t len, void **params, char *err,
                       size_t errlen, size_t *err_off)
{
    uint64_t group = AS_QUANT_GROUP_DEFAULT, seed = 0;
    bool seen_group = false, seen_seed = false;
    size_t i = 0;
    *params = NULL;
    while (i < len) {
        size_t start = i;
        uint64_t *dst = &group;
        if (len - i >= 2 && !memcmp(args + i, "g=", 2))
            i += 2;
        else if (len - i >= 6 && !memcmp(args + i, "group=", 6))
            i += 6;
        else if (len - i >= 5 && !memcmp(args + i, "seed=", 5)) {
            i += 5;
            dst = &seed;
        }
        size_t numpos = i;
        if (parse_u64(args, len, &i, dst)) {
            snprintf(err, errlen, i == start
                     ? "expected group size (N or g=N) or seed=N"
                     : "expected a number");
            *err_off = numpos;
            return AS_ESPEC;
        }
        bool *seen = dst == &group ? &seen_group : &seen_seed;
        if (*seen) {   /* g=8:g=16 would silently keep the last */
            snprintf(err, errlen, "%s given twice", dst == &group ? "group size" : "seed");
            *err_off = start;
            return AS_ESPEC;
        }
        *seen = true;
        if (dst == &group &&
            (group < AS_QUANT_GROUP_MIN || group > AS_QUANT_GROUP_MAX ||
             group % 8)) {
            snprintf(err, errlen, "expected a group size that is a multiple "
                     "of 8 in [%d, %d]", AS_QUANT_GROUP_MIN, AS_QUANT_GROUP_MAX);
            *err_off = numpos;
            return AS_ESPEC;
        }
        if (i < len && args[i] != ':') {
            snprintf(err, errlen, "expected ':' or the end of the policy");
            *err_off = i;
            return AS_ESPEC;
        }
        if (i < len)
            i++;
    }
    quant_params *p = malloc(sizeof *p);
    if (!p) {
        snprintf(err, errlen, "out of memory");
        *err_off = 0;
        return AS_ENOMEM;
    }
    p->group = (uint32_t)group;
    p->seed = seed;
    *params = p;
    return 0;
}

static int quant_encode(as_pctx *ctx, const quant_params *p,
                        const as_tensor *t, void **state, int bits)
{
    if (t->dtype != AS_F32)
        return AS_ENOTSUP;
    size_t n = (size_t)as_tensor_numel(t);
    size_t ng = as__quant_groups(n, p->group);
    size_t off_g = (sizeof(quant_hdr) + 7) & ~(size_t)7;
    size_t off_c = off_g + ng * sizeof(as_qgroup);
    size_t total = off_c + as__quant_code_bytes(n, bits);
    uint8_t *blk;
    int rc = as_pctx_alloc(ctx, total, (void **)&blk);
    if (rc)
        return rc;
    quant_hdr *h = (quant_hdr *)(void *)blk;
    h->n = n;
    h->cols = as_policy_row_len(t);
    h->bits = (uint32_t)bits;
    h->group = p->group;
    h->groups = (as_qgroup *)(void *)(blk + off_g);
    h->codes = blk + off_c;
    h->seal = as_pctx_seal(h, offsetof(quant_hdr, seal));
    uint64_t seed = as__mix64(p->seed ^ as__mix64(as_pctx_item_key(ctx)));
    if (n)
        as__quant_encode(t->data, n, bits, p->group, seed, 0, ng, h->groups,
                         h->codes);
    *state = h;
    return 0;
}

#define QUANT_ENCODE(B)                                                     \
    static int q##B##_encode(as_pctx *ctx, const void *params,              \
                             const as_save_info *info, const as_tensor *t,  \
                             void **state)                                  \
    {                                                                       \
        (void)info;                                                         \
        return quant_encode(ctx, params, t, state, B);                      \
    }
QUANT_ENCODE(8)
QUANT_ENCODE(4)
QUANT_ENCODE(2)

static int quant_decode(as_pctx *ctx, const void *params, void *state,
                        as_tensor *dst)
{
    (void)params;
    const quant_hdr *h = state;
    int rc = as_pctx_check_sealed_f32(ctx, h, offsetof(quant_hdr, seal), h->seal,
                                      h->n, dst);
    if (rc)
        return rc;
    as__quant_decode(h->groups, h->codes, (int)h->bits, h->group, 0, h->n,
                     dst->data);
    return 0;
}

static int quant_rows(as_pctx *ctx, const void *params, void *state,
                      int64_t row0, int64_t nrows, float *dst)
{
    (void)params;
    const quant_hdr *h = state;
    int rc = as_pctx_check_sealed_rows(ctx, h, offsetof(quant_hdr, seal), h->seal,
                                       h->n, h->cols, row0, nrows);
    if (rc)
        return rc;
    as__quant_decode(h->groups, h->codes, (int)h->bits, h->group,
                     (size_t)row0 * h->cols, (size_t)nrows * h->cols, dst);
    return 0;
}

#define QUANT_OPS(B, SUMMARY)                                               \
    AS_POLICY_OPS(q##B, SUMMARY,                                            \
                  (.parse = quant_parse, .free_params = as_policy_free_params, \
                   .applies = as_policy_applies_f32, .decode = quant_decode, \
                   .decode_rows = quant_rows),                              \
                  encode)
QUANT_OPS(8, "8-bit per-group affine, stochastic rounding ([:g=N][:seed=N]; ~3.9x)");
QUANT_OPS(4, "4-bit per-group affine, stochastic rounding ([:g=N][:seed=N]; ~7.5x)");
QUANT_OPS(2, "2-bit per-group affine, stochastic rounding ([:g=N][:seed=N]; ~14x)");

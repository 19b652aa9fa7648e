/*
 * aq — per-group affine quantization of activations (ActNN-style) at 2, 3,
 * 4 or 8 bits, stochastic or nearest rounding, optional per-group Hadamard
 * rotation against outliers. Kernels, layout and error bounds: aq.h.
 *
 * Arguments (colon-separated, any order):
 *     aq               4 bits, group 64, stochastic rounding, no rotation
 *     aq:2             2 bits (bare number: bits, one of 2, 3, 4, 8)
 *     aq:3:g=128:rot   3 bits, groups of 128, rotated
 *     aq:4:rn          round to nearest (biased, half the error bound)
 *     aq:2:seed=7      another noise sequence
 * G is a multiple of 8 in [8, 4096]; with rot a power of two.
 *
 * Randomness as in q8/q4/q2: u for value j of group g is a hash of (seed,
 * item key, g, j): reproducible, independent of threads, the same in both
 * arms of an A/B run, fresh every step.
 *
 * Stored form: one block: header, per-group (min, step) as f16 pairs (f32
 * pairs when some group's do not fit f16: |values| beyond ~65504), codes.
 * Size: ceil(n/8)*B bytes of codes (the last group padded to G values with
 * rotation) + ceil(n/G)*4 (f16) or *8 (f32) bytes of parameters; e.g. 2
 * bits at G = 64 with f16 parameters: 2.5 bits per value, 12.8x smaller
 * than f32.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/policies/aq.h"
#include "store/policies/quant.h"
#include "store/policy.h"

typedef struct aq_params {
    as_aq_fmt fmt;     /* p16 is decided per tensor */
    uint64_t  seed;
} aq_params;

typedef struct aq_hdr {
    uint64_t  n, cols;
    as_aq_fmt fmt;
    void     *params;   /* into this block */
    uint8_t  *codes;    /* into this block */
    uint64_t  seal;     /* as_pctx_seal of the fields above */
} aq_hdr;

static bool word_is(const char *s, size_t len, const char *w)
{
    return strlen(w) == len && !memcmp(s, w, len);
}

/* Parse one unsigned decimal number of s[0..len) (the whole field). */
static int parse_num(const char *s, size_t len, uint64_t *out)
{
    uint64_t v = 0;
    if (!len)
        return -1;
    for (size_t j = 0; j < len; j++) {
        if (s[j] < '0' || s[j] > '9' || v > (UINT64_MAX - 9) / 10)
            return -1;
        v = v * 10 + (uint64_t)(s[j] - '0');
    }
    *out = v;
    return 0;
}

static int aq_fail(char *err, size_t errlen, size_t *err_off, size_t off,
                   const char *msg)
{
    snprintf(err, errlen, "%s", msg);
    *err_off = off;
    return AS_ESPEC;
}

static int aq_parse(const char *args, size_t len, void **params, char *err,
                    size_t errlen, size_t *err_off)
{
    aq_params p = {.fmt = {.bits = 4, .group = 64}};
    uint64_t v;
    size_t i = 0;
    unsigned seen = 0;   /* bit per field: bits, g, rot, rn/sr, seed */
    *params = NULL;
    while (i < len) {
        size_t e = i;
        while (e < len && args[e] != ':')
            e++;
        const char *f = args + i;
        size_t fl = e - i;
        unsigned bit = word_is(f, fl, "rot") ? 4u
                     : word_is(f, fl, "rn") || word_is(f, fl, "sr") ? 8u
                     : fl > 2 && !memcmp(f, "g=", 2) ? 2u
                     : fl > 5 && !memcmp(f, "seed=", 5) ? 16u : 1u;
        if (seen & bit)   /* 4:8 or g=8:g=16 would silently keep the last */
            return aq_fail(err, errlen, err_off, i, "an argument given twice");
        seen |= bit;
        if (word_is(f, fl, "rot")) {
            p.fmt.rot = true;
        } else if (word_is(f, fl, "rn")) {
            p.fmt.nearest = true;
        } else if (word_is(f, fl, "sr")) {
            p.fmt.nearest = false;
        } else if (fl > 2 && !memcmp(f, "g=", 2)) {
            if (parse_num(f + 2, fl - 2, &v) || v < AS_AQ_GROUP_MIN ||
                v > AS_AQ_GROUP_MAX || v % 8)
                return aq_fail(err, errlen, err_off, i + 2,
                               "expected a group size that is a multiple of "
                               "8 in [8, 4096]");
            p.fmt.group = (uint32_t)v;
        } else if (fl > 5 && !memcmp(f, "seed=", 5)) {
            if (parse_num(f + 5, fl - 5, &p.seed))
                return aq_fail(err, errlen, err_off, i + 5, "expected a number");
        } else if (!parse_num(f, fl, &v)) {
            if (v != 2 && v != 3 && v != 4 && v != 8)
                return aq_fail(err, errlen, err_off, i,
                               "expected bits 2, 3, 4 or 8");
            p.fmt.bits = (int)v;
        } else {
            return aq_fail(err, errlen, err_off, i,
                           "expected bits (2, 3, 4, 8), g=N, rot, rn, sr or "
                           "seed=N");
        }
        i = e < len ? e + 1 : e;
    }
    if (!as__aq_fmt_ok(&p.fmt))
        return aq_fail(err, errlen, err_off, 0,
                       "rot needs a group size that is a power of two");
    aq_params *out = malloc(sizeof *out);
    if (!out)
        return aq_fail(err, errlen, err_off, 0, "out of memory");
    *out = p;
    *params = out;
    return 0;
}

static int aq_encode(as_pctx *ctx, const void *params_,
                     const as_save_info *info, const as_tensor *t,
                     void **state)
{
    (void)info;
    const aq_params *p = params_;
    if (t->dtype != AS_F32)
        return AS_ENOTSUP;
    size_t n = (size_t)as_tensor_numel(t);
    uint64_t seed = as__mix64(p->seed ^ as__mix64(as_pctx_item_key(ctx)));
    /* f16 parameters, unless some group's do not fit: then f32 */
    for (int pass = 0; pass < 2; pass++) {
        as_aq_fmt fmt = p->fmt;
        fmt.p16 = pass == 0;
        size_t off_p = (sizeof(aq_hdr) + 7) & ~(size_t)7;
        size_t off_c = off_p + ((as__aq_param_bytes(&fmt, n) + 7) & ~(size_t)7);
        size_t total = off_c + as__aq_code_bytes(&fmt, n);
        uint8_t *blk;
        int rc = as_pctx_alloc(ctx, total, (void **)&blk);
        if (rc)
            return rc;
        aq_hdr *h = (aq_hdr *)(void *)blk;
        h->n = n;
        h->cols = as_policy_row_len(t);
        h->fmt = fmt;
        h->params = blk + off_p;
        h->codes = blk + off_c;
        h->seal = as_pctx_seal(h, offsetof(aq_hdr, seal));
        if (n && !as__aq_encode(&fmt, t->data, n, seed, 0,
                                as__aq_groups(&fmt, n), h->params, h->codes)) {
            as_pctx_free(ctx, blk);
            continue;
        }
        *state = h;
        return 0;
    }
    as_pctx_errorf(ctx, "f32 parameters refused");   /* not reached */
    return AS_ESTATE;
}

static int aq_decode(as_pctx *ctx, const void *params, void *state,
                     as_tensor *dst)
{
    (void)params;
    const aq_hdr *h = state;
    int rc = as_pctx_check_sealed_f32(ctx, h, offsetof(aq_hdr, seal), h->seal,
                                      h->n, dst);
    if (rc)
        return rc;
    as__aq_decode(&h->fmt, h->params, h->codes, h->n, 0, h->n, dst->data);
    return 0;
}

static int aq_decode_rows(as_pctx *ctx, const void *params, void *state,
                          int64_t row0, int64_t nrows, float *dst)
{
    (void)params;
    const aq_hdr *h = state;
    int rc = as_pctx_check_sealed_rows(ctx, h, offsetof(aq_hdr, seal), h->seal,
                                       h->n, h->cols, row0, nrows);
    if (rc)
        return rc;
    as__aq_decode(&h->fmt, h->params, h->codes, h->n, (size_t)row0 * h->cols,
                  (size_t)nrows * h->cols, dst);
    return 0;
}

static void aq_drop(void *params, void *state)
{
    (void)params, (void)state;   /* a context block: the store frees it */
}

AS_POLICY_OPS(aq,
              "per-group affine 2/3/4/8-bit, stochastic rounding, optional "
              "Hadamard rotation ([:B][:g=N][:rot][:rn][:seed=N]; 2 bits "
              "~12.8x)",
              (.free_params = as_policy_free_params,
               .applies = as_policy_applies_f32),
              parse, encode, decode, drop, decode_rows);

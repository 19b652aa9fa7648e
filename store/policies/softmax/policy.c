/*
 * The softmax codecs as store policies: soa:S[:fullden], solog:B and
 * sotk:F:B[:P] (formats and measurements: softmax.h, docs/policies.md).
 *
 * They apply to softmax_output tensors only (f32, rank >= 1, last dim =
 * meta.row_len). The stored form is one blob (softmax/tensor.c) in one
 * context block; restore decodes it, restore_rows decodes one (batch, head)
 * block at a time, and the softmax backward runs straight from the blob, so
 * in attention the approximated P serves both dV = P^T dO (block by block)
 * and the softmax backward, and no full copy of P exists after the save.
 *
 * Layout from the save's metadata: rows = numel / L, queries = meta.queries
 * (0: every row of the tensor is one block), causal flag, optional key
 * padding (valid_len per rows_per_item rows, copied into the blob).
 *
 * Metadata that contradicts the tensor (row_len against the last dim,
 * queries not dividing the rows, and the per-row value checks of
 * as__sm_encode_checked) is AS_EMETA: the store counts it, logs it, and
 * falls back (strict mode: fails the save). A wrong dtype or rank is
 * AS_ENOTSUP (the codec does not apply; nothing is wrong with the meta).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/policies/softmax/softmax.h"
#include "store/policy.h"
#include "allocator/fault.h"

typedef struct sm_pol {
    as__sm_params p;
} sm_pol;

static int sm_pol_parse(const char *name, const char *args, size_t len,
                        void **params, char *err, size_t errlen,
                        size_t *err_off)
{
    char spec[96];
    size_t nl = strlen(name);
    *params = NULL;
    if (len + nl + 2 > sizeof spec) {
        snprintf(err, errlen, "arguments of at most %zu characters",
                 sizeof spec - nl - 2);
        *err_off = 0;
        return AS_ESPEC;
    }
    memcpy(spec, name, nl);
    size_t sl = nl;
    if (len) {
        spec[sl++] = ':';
        memcpy(spec + sl, args, len);
        sl += len;
    }
    sm_pol *pp = as__fcalloc(1, sizeof *pp);
    if (!pp)
        return AS_ENOMEM;
    size_t off = 0;
    char msg[128];
    int rc = as__sm_parse(spec, sl, &pp->p, msg, sizeof msg, &off);
    if (rc) {
        free(pp);
        /* as__sm_parse counts from the codec name; the rule parser wants
         * the offset within args */
        size_t ao = off > nl ? off - nl - 1 : 0;
        const char *what = strstr(msg, "expected ");
        snprintf(err, errlen, "%s", what ? what + 9 : msg);
        *err_off = ao;
        return AS_ESPEC;
    }
    *params = pp;
    return 0;
}

static int soa_parse(const char *a, size_t l, void **p, char *e, size_t el,
                     size_t *eo)
{
    return sm_pol_parse("soa", a, l, p, e, el, eo);
}
static int solog_parse(const char *a, size_t l, void **p, char *e, size_t el,
                       size_t *eo)
{
    return sm_pol_parse("solog", a, l, p, e, el, eo);
}
static int sotk_parse(const char *a, size_t l, void **p, char *e, size_t el,
                      size_t *eo)
{
    return sm_pol_parse("sotk", a, l, p, e, el, eo);
}

static void sm_pol_free(void *params) { free(params); }

/* Layout of t under info, or a reason why the codec cannot take it. */
static int sm_pol_layout(const as_save_info *info, const as_tensor *t,
                         as__sm_layout *lay, char *why, size_t whylen)
{
    memset(lay, 0, sizeof *lay);
    if (t->dtype != AS_F32 || t->ndim < 1) {
        snprintf(why, whylen, "dtype %s rank %d (needs f32, rank >= 1)",
                 as_dtype_name(t->dtype), t->ndim);
        return AS_ENOTSUP;
    }
    const as_softmax_meta *m = &info->meta.softmax;
    int64_t L = t->shape[t->ndim - 1];
    if (m->row_len && m->row_len != L) {
        snprintf(why, whylen, "metadata: row_len %lld but last dim %lld",
                 (long long)m->row_len, (long long)L);
        return AS_EMETA;
    }
    int64_t numel = as_tensor_numel(t);
    if (L < 1 || numel < 1 || L > 65536) {
        snprintf(why, whylen, "row length %lld (needs 1..65536)",
                 (long long)L);
        return AS_ENOTSUP;
    }
    lay->rows = numel / L;
    lay->len = L;
    lay->queries = m->queries > 0 ? m->queries : lay->rows;
    if (lay->rows % lay->queries) {
        snprintf(why, whylen, "metadata: %lld rows not a multiple of "
                 "queries %lld", (long long)lay->rows,
                 (long long)lay->queries);
        return AS_EMETA;
    }
    lay->causal = m->causal;
    if (m->valid_len) {
        if (m->rows_per_item < 1) {
            snprintf(why, whylen, "metadata: valid_len without "
                     "rows_per_item");
            return AS_EMETA;
        }
        lay->valid_len = m->valid_len;
        lay->rows_per_item = m->rows_per_item;
    }
    return 0;
}

static int sm_pol_applies(const void *params, const as_save_info *info,
                          const as_tensor *t, char *why, size_t whylen)
{
    (void)params;
    as__sm_layout lay;
    return sm_pol_layout(info, t, &lay, why, whylen);
}

static int sm_pol_encode(as_pctx *ctx, const void *params,
                         const as_save_info *info, const as_tensor *t,
                         void **state)
{
    const sm_pol *pp = params;
    as__sm_layout lay;
    char why[96];
    int rc = sm_pol_layout(info, t, &lay, why, sizeof why);
    if (rc) {
        as_pctx_errorf(ctx, "%s", why);
        return rc;
    }
    size_t bound = as__sm_encode_bound(&pp->p, &lay), used = 0;
    if (!bound) {
        as_pctx_errorf(ctx, "layout not encodable");
        return AS_ENOTSUP;
    }
    /* soa, solog and fixed-k sotk know their size exactly; adaptive sotk
     * encodes into a temporary first so that the stored bytes are what
     * the rows took, not the bound */
    bool exact = !(pp->p.kind == AS_SM_TOPK && pp->p.mass > 0.0f);
    void *tmp = NULL, *blob = NULL;
    if (!exact && !(tmp = as__fmalloc(bound)))
        return AS_ENOMEM;
    if (exact && (rc = as_pctx_alloc(ctx, bound, &blob)) < 0)
        return rc;
    as__sm_check chk;
    rc = as__sm_encode_checked(&pp->p, &lay, t->data, exact ? blob : tmp,
                              bound, &used, &chk);
    if (rc == 0 && chk.bad_rows) {
        char what[200];
        as_pctx_errorf(ctx, "metadata: %lld of %lld rows do not match: %s",
                       (long long)chk.bad_rows, (long long)lay.rows,
                       as__sm_check_text(&chk, &lay, what, sizeof what));
        free(tmp);
        return AS_EMETA;
    }
    if (rc == 0 && !exact) {
        if ((rc = as_pctx_alloc(ctx, used, &blob)) == 0)
            memcpy(blob, tmp, used);
    }
    free(tmp);
    if (rc < 0) {
        as_pctx_errorf(ctx, "encode failed: %s", as_strerror(rc));
        return rc;
    }
    *state = blob;
    return 0;
}

static int sm_pol_decode(as_pctx *ctx, const void *params, void *state,
                         as_tensor *dst)
{
    (void)params;
    as__sm_info info;
    int rc = as__sm_blob_info(state, (size_t)-1, &info);
    if (rc == 0 && info.rows * info.len != as_tensor_numel(dst))
        rc = AS_ESHAPE;
    if (rc == 0)
        rc = as__sm_decode_rows(state, 0, info.rows, dst->data);
    if (rc)
        as_pctx_errorf(ctx, "softmax blob: %s", as_strerror(rc));
    return rc;
}

static int sm_pol_rows(as_pctx *ctx, const void *params, void *state,
                       int64_t row0, int64_t nrows, float *dst)
{
    (void)params;
    int rc = as__sm_decode_rows(state, row0, nrows, dst);
    if (rc)
        as_pctx_errorf(ctx, "softmax rows [%lld, %lld): %s", (long long)row0,
                       (long long)(row0 + nrows), as_strerror(rc));
    return rc;
}

static int sm_pol_backward(as_pctx *ctx, const void *params, void *state,
                           const float *dy, float *dx)
{
    (void)params;
    as__sm_info info;
    int rc = as__sm_blob_info(state, (size_t)-1, &info);
    if (rc == 0)
        rc = as__sm_backward_rows(state, 0, info.rows, dy, dx);
    if (rc)
        as_pctx_errorf(ctx, "softmax backward: %s", as_strerror(rc));
    return rc;
}

/* The blob is a context block: the store frees it. */
static void sm_pol_drop(void *params, void *state)
{
    (void)params, (void)state;
}

#define SM_POLICY(nm, summ)                                             \
    AS_POLICY_OPS(nm, summ,                                             \
                  (.kinds = 1u << AS_KIND_SOFTMAX_OUTPUT,               \
                   .free_params = sm_pol_free, .applies = sm_pol_applies, \
                   .encode = sm_pol_encode, .decode = sm_pol_decode,    \
                   .drop = sm_pol_drop, .softmax_backward = sm_pol_backward, \
                   .decode_rows = sm_pol_rows),                         \
                  parse)

SM_POLICY(soa, "softmax output approximation (Lee & Lee 2023): S largest and "
               "smallest exact, ranks, one decay per row (soa:S[:fullden])");
SM_POLICY(solog, "softmax rows as B-bit log-domain codes, renormalized to "
                 "mass 1 (solog:B, B 2..4)");
SM_POLICY(sotk, "softmax rows: top n/F entries 8-bit log, the rest B-bit log, "
                "mass 1 (sotk:F:B[:P])");

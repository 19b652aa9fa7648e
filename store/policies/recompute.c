/*
 * recompute: store nothing; at restore, call the framework's callback on
 * the restored inputs (as_save_info.recompute, .recompute_inputs). The
 * inputs are dependencies: they stay alive with this item even if their
 * handles are released, and are restored first (in place for keep, cached
 * within the backward phase otherwise), so a chain of recomputes costs one
 * call per link. The callback and its user data must stay valid until the
 * handle is released; it must be deterministic (restore may run it again
 * outside the backward phase). A row-wise recompute
 * (as_save_info.recompute_rows) also decodes row blocks: it restores the
 * same rows of every input (through their own row decode) and calls the
 * callback on those slices, so a consumer that streams rows never holds
 * the whole tensor or its inputs.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/store_internal.h"

#define RECOMPUTE_MAX_INPUTS 16
/* Row slices of the inputs live in decode scratch (8 blocks at most). */
#define RECOMPUTE_MAX_ROW_INPUTS 8

typedef struct rstate {
    as_recompute_fn fn;
    void           *ud;
    size_t          n;
    as_handle       inputs[RECOMPUTE_MAX_INPUTS];
    bool            rows;                      /* row-wise (recompute_rows) */
    int64_t         cols, in_cols[RECOMPUTE_MAX_INPUTS];   /* last dims */
} rstate;

/* Rows and last dim of a tensor viewed as (rows, last dim). */
static void rows_cols(const as_tensor *t, int64_t *rows, int64_t *cols)
{
    *cols = t->ndim ? t->shape[t->ndim - 1] : 1;
    *rows = *cols > 0 ? as_tensor_numel(t) / *cols : 0;
}

/* A row-wise recompute: every input an f32 tensor with t's rows. */
static int rows_check(as_pctx *ctx, const as_save_info *info,
                      const as_tensor *t, rstate *st)
{
    int64_t rows, r;
    rows_cols(t, &rows, &st->cols);
    if (t->dtype != AS_F32 || t->ndim < 1) {
        as_pctx_errorf(ctx, "row-wise recompute of a non-f32 tensor");
        return AS_ENOTSUP;
    }
    if (st->n > RECOMPUTE_MAX_ROW_INPUTS) {
        as_pctx_errorf(ctx, "row-wise recompute: more than %d inputs",
                       RECOMPUTE_MAX_ROW_INPUTS);
        return AS_ENOTSUP;
    }
    for (size_t i = 0; i < st->n; i++) {
        as_tensor sh;
        int kind;
        int rc = as_store_describe(as_pctx_store(ctx), info->recompute_inputs[i],
                                   &sh, &kind);
        if (rc < 0)
            return rc;
        rows_cols(&sh, &r, &st->in_cols[i]);
        if (sh.dtype != AS_F32 || sh.ndim < 1 || r != rows) {
            as_pctx_errorf(ctx, "row-wise recompute: input %zu has %lld rows "
                           "of %s, the tensor %lld", i, (long long)r,
                           as_dtype_name(sh.dtype), (long long)rows);
            return AS_ENOTSUP;
        }
    }
    st->rows = true;
    return 0;
}

static int recompute_applies(const void *params, const as_save_info *info,
                      const as_tensor *t, char *why, size_t whylen)
{
    if (!info->recompute)
        return as_policy_reject(why, whylen, "no recompute callback");
    if (info->recompute_ninputs > RECOMPUTE_MAX_INPUTS ||
        (info->recompute_ninputs && !info->recompute_inputs))
        return as_policy_reject(why, whylen, "more than %d inputs", RECOMPUTE_MAX_INPUTS);
    return 0;
}

static int recompute_encode(as_pctx *ctx, const void *params,
                     const as_save_info *info, const as_tensor *t,
                     void **state)
{
    rstate *st = as__scalloc(as_pctx_store(ctx), 1, sizeof *st);
    if (!st)
        return AS_ENOMEM;
    st->fn = info->recompute;
    st->ud = info->recompute_ud;
    st->n = info->recompute_ninputs;
    int rc;
    if (info->recompute_rows && (rc = rows_check(ctx, info, t, st)) < 0) {
        free(st);
        return rc;
    }
    for (size_t i = 0; i < st->n; i++) {
        st->inputs[i] = info->recompute_inputs[i];
        rc = as_pctx_depend(ctx, st->inputs[i]);
        if (rc < 0) {
            if (rc != AS_ESTATE)   /* a cycle is named by as_pctx_depend */
                as_pctx_errorf(ctx, "recompute input %zu: %s", i,
                               as_store_last_error(as_pctx_store(ctx)));
            free(st);
            return rc;
        }
    }
    *state = st;
    return 0;
}

static int recompute_decode(as_pctx *ctx, const void *params, void *state,
                     as_tensor *dst)
{
    rstate *st = state;
    const as_tensor *in[RECOMPUTE_MAX_INPUTS];
    for (size_t i = 0; i < st->n; i++) {
        int rc = as_pctx_restore_dep(ctx, st->inputs[i], &in[i]);
        if (rc < 0)
            return rc;
    }
    int rc = st->fn(st->ud, in, st->n, dst);
    if (rc < 0) {
        as_pctx_errorf(ctx, "recompute callback failed: %s", as_strerror(rc));
        return rc;
    }
    return 0;
}

/* Rows of a row-wise recompute: the same rows of every input, then the
 * callback on the slices. Otherwise the whole tensor (its restore
 * materializes and caches it within backward; a trial has no cache, so
 * it rebuilds the whole into scratch) and the rows copied out. */
static int recompute_decode_rows(as_pctx *ctx, const void *params, void *state,
                          int64_t row0, int64_t nrows, float *dst)
{
    rstate *st = state;
    as_store *s = as_pctx_store(ctx);
    int rc;
    if (!st->rows) {
        as_item *it = ctx->it;
        if (!it)
            return AS_ESTATE;
        pthread_mutex_lock(&s->mu);
        bool mine = it->rep == ctx->rep;   /* not a trial or a re-plan */
        pthread_mutex_unlock(&s->mu);
        int64_t rows, cols;
        const as_tensor *v;
        if (mine) {
            if ((rc = as__borrow(s, it, &v)) < 0)
                return rc;
            rows_cols(v, &rows, &cols);
            if ((rc = as_pctx_check_rows(ctx, row0, nrows, (uint64_t)rows)) == 0)
                memcpy(dst, (const float *)v->data + row0 * cols,
                       (size_t)(nrows * cols) * sizeof(float));
            as__unborrow(s, it);
            return rc;
        }
        as_tensor whole = it->shape;
        rows_cols(&whole, &rows, &cols);
        if ((rc = as_pctx_check_rows(ctx, row0, nrows, (uint64_t)rows)) < 0 ||
            (rc = as_pctx_scratch(ctx, as_tensor_bytes(&whole), &whole.data)) < 0 ||
            (rc = recompute_decode(ctx, params, state, &whole)) < 0)
            return rc;
        memcpy(dst, (const float *)whole.data + row0 * cols,
               (size_t)(nrows * cols) * sizeof(float));
        as_pctx_scratch_free(ctx, whole.data);
        return 0;
    }
    as_tensor slice[RECOMPUTE_MAX_ROW_INPUTS];
    const as_tensor *in[RECOMPUTE_MAX_ROW_INPUTS];
    for (size_t i = 0; i < st->n; i++) {
        slice[i] = (as_tensor){.dtype = AS_F32, .ndim = 2,
                               .shape = {nrows, st->in_cols[i]}};
        if ((rc = as_pctx_scratch(ctx, (size_t)(nrows * st->in_cols[i]) *
                                  sizeof(float), &slice[i].data)) < 0 ||
            (rc = as_pctx_restore_dep_rows(ctx, st->inputs[i], row0, nrows,
                                           slice[i].data)) < 0)
            return rc;
        in[i] = &slice[i];
    }
    as_tensor out = {.data = dst, .dtype = AS_F32, .ndim = 2,
                     .shape = {nrows, st->cols}};
    if ((rc = st->fn(st->ud, in, st->n, &out)) < 0) {
        as_pctx_errorf(ctx, "recompute callback failed on rows [%lld, %lld): "
                       "%s", (long long)row0, (long long)(row0 + nrows),
                       as_strerror(rc));
        return rc;
    }
    for (size_t i = 0; i < st->n; i++)
        as_pctx_scratch_free(ctx, slice[i].data);
    return 0;
}

AS_POLICY_OPS(recompute,
              "store nothing; rerun the framework's callback on its inputs",
              (.regenerator = true, AS_POLICY_NO_ARGS,
               .drop = as_policy_drop_free,
               .decode_rows = recompute_decode_rows),
              applies, encode, decode);

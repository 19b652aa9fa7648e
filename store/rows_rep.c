/*
 * The representation of a tensor saved in row blocks under a codec
 * (save_rows.c): one encoding per appended block, each made by the
 * policy's own encode on the block as a tensor of its rows, and decoded,
 * differentiated or streamed by dispatching each request to the blocks it
 * covers. A block whose encode did not apply holds keep's copy instead.
 * The codes live in the rep's context blocks; the state is the block list.
 */
#include <stdlib.h>
#include <string.h>

#include "store/policies/act_grad.h"
#include "store/store_internal.h"

typedef struct rows_block {
    int64_t              row0, nrows;
    const as_policy_ops *ops;      /* the rep's policy, or keep */
    void                *params;
    void                *state;
} rows_block;

typedef struct rows_rep {
    int64_t     cols;
    size_t      esize;             /* bytes per value */
    size_t      n, cap;
    rows_block *b;
} rows_rep;

void *as__rows_rep_new(as_store *s, int64_t cols, int dtype)
{
    rows_rep *rr = as__scalloc(s, 1, sizeof *rr);
    if (rr) {
        rr->cols = cols;
        rr->esize = as_dtype_size(dtype);
    }
    return rr;
}

int as__rows_rep_add(as_pctx *ctx, void *state, const as_policy_ops *ops,
                     void *params, const as_save_info *info,
                     const as_tensor *block, int64_t row0)
{
    rows_rep *rr = state;
    if (rr->n == rr->cap) {
        size_t cap = rr->cap ? 2 * rr->cap : 16;
        rows_block *nb = as__srealloc(ctx->s, rr->b, cap * sizeof *nb);
        if (!nb)
            return AS_ENOMEM;
        rr->b = nb;
        rr->cap = cap;
    }
    rows_block *b = &rr->b[rr->n];
    *b = (rows_block){.row0 = row0, .nrows = block->shape[0], .ops = ops,
                      .params = params};
    int rc = ops->encode(ctx, params, info, block, &b->state);
    if (rc == 0)
        rr->n++;
    return rc;
}

/* The block as a (nrows, cols) tensor over data. */
static as_tensor block_tensor(const rows_rep *rr, const rows_block *b,
                              int dtype, void *data)
{
    as_tensor t = {.data = data, .dtype = dtype, .ndim = 2};
    t.shape[0] = b->nrows;
    t.shape[1] = rr->cols;
    return t;
}

/* Values of block b, rows [r0, r0 + n) of it, into dst (f32 or, for a
 * whole block, any dtype). */
static int block_rows(as_pctx *ctx, const rows_rep *rr, const rows_block *b,
                      int dtype, int64_t r0, int64_t n, void *dst)
{
    size_t rb = (size_t)rr->cols * rr->esize;
    if (b->ops->view) {
        memcpy(dst, (const char *)b->ops->view(b->params, b->state) + r0 * rb,
               (size_t)n * rb);
        return 0;
    }
    if (r0 == 0 && n == b->nrows) {
        as_tensor t = block_tensor(rr, b, dtype, dst);
        return b->ops->decode(ctx, b->params, b->state, &t);
    }
    if (b->ops->decode_rows)
        return b->ops->decode_rows(ctx, b->params, b->state, r0, n, dst);
    void *tmp;
    int rc = as_pctx_scratch(ctx, (size_t)b->nrows * rb, &tmp);
    if (rc < 0)
        return rc;
    as_tensor t = block_tensor(rr, b, dtype, tmp);
    if ((rc = b->ops->decode(ctx, b->params, b->state, &t)) == 0)
        memcpy(dst, (const char *)tmp + r0 * rb, (size_t)n * rb);
    return rc;
}

/* First block holding row `row` (blocks are in row order, back to back). */
static size_t find_block(const rows_rep *rr, int64_t row)
{
    size_t lo = 0, hi = rr->n;
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (rr->b[mid].row0 <= row)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

static int rows_decode_rows(as_pctx *ctx, const void *params, void *state,
                            int64_t row0, int64_t nrows, float *dst)
{
    (void)params;
    const rows_rep *rr = state;
    int64_t total = rr->n ? rr->b[rr->n - 1].row0 + rr->b[rr->n - 1].nrows : 0;
    int rc = as_pctx_check_rows(ctx, row0, nrows, (uint64_t)total);
    for (size_t i = rr->n ? find_block(rr, row0) : 0;
         rc == 0 && nrows > 0 && i < rr->n; i++) {
        const rows_block *b = &rr->b[i];
        int64_t r0 = row0 - b->row0;
        int64_t n = b->nrows - r0 < nrows ? b->nrows - r0 : nrows;
        rc = block_rows(ctx, rr, b, AS_F32, r0, n, dst);
        dst += n * rr->cols;
        row0 += n;
        nrows -= n;
    }
    return rc;
}

static int rows_decode(as_pctx *ctx, const void *params, void *state,
                       as_tensor *dst)
{
    (void)params;
    const rows_rep *rr = state;
    char *out = dst->data;
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < rr->n; i++) {
        const rows_block *b = &rr->b[i];
        rc = block_rows(ctx, rr, b, dst->dtype, 0, b->nrows,
                        out + (size_t)b->row0 * rr->cols * rr->esize);
    }
    return rc;
}

/* The block's values in scratch, for the derivatives of a block whose
 * policy has no direct path. */
static int block_values(as_pctx *ctx, const rows_rep *rr, const rows_block *b,
                        float **out)
{
    int rc = as_pctx_scratch(ctx, (size_t)b->nrows * rr->cols * sizeof(float),
                             (void **)out);
    return rc < 0 ? rc : block_rows(ctx, rr, b, AS_F32, 0, b->nrows, *out);
}

/* Per block: the softmax backward (fn NULL) or f' * dy, from the block's
 * policy's direct path where it has one, else from its values. */
static int blocks_backward(as_pctx *ctx, const rows_rep *rr,
                           const as_elementwise *fn, const float *dy,
                           float *dx)
{
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < rr->n; i++) {
        const rows_block *b = &rr->b[i];
        const as_policy_ops *o = b->ops;
        size_t off = (size_t)b->row0 * rr->cols;
        if (!o->view && !fn && o->softmax_backward) {
            rc = o->softmax_backward(ctx, b->params, b->state, dy + off,
                                     dx + off);
            continue;
        }
        if (!o->view && fn && o->act_backward) {
            rc = o->act_backward(ctx, b->params, b->state, fn, dy + off,
                                 dx + off);
            continue;
        }
        float *y;
        if ((rc = block_values(ctx, rr, b, &y)) == 0) {
            if (fn)
                as__act_grad(fn->fn, fn->alpha, (size_t)b->nrows * rr->cols,
                             y, dy + off, dx + off);
            else
                as__softmax_bwd_rows(y, dy + off, dx + off, b->nrows,
                                     rr->cols);
        }
        as_pctx_scratch_free(ctx, y);
    }
    return rc;
}

static int rows_softmax_backward(as_pctx *ctx, const void *params,
                                 void *state, const float *dy, float *dx)
{
    (void)params;
    return blocks_backward(ctx, state, NULL, dy, dx);
}

static int rows_act_backward(as_pctx *ctx, const void *params, void *state,
                             const as_elementwise *fn, const float *dy,
                             float *dx)
{
    (void)params;
    return blocks_backward(ctx, state, fn, dy, dx);
}

static void rows_drop(void *params, void *state)
{
    (void)params;
    rows_rep *rr = state;
    for (size_t i = 0; i < rr->n; i++)
        if (rr->b[i].ops->drop)
            rr->b[i].ops->drop(rr->b[i].params, rr->b[i].state);
    free(rr->b);
    free(rr);
}

/* Not in the registry: the store builds it for row saves only, and charges
 * the item to the blocks' policy. */
const as_policy_ops as__rows_rep_ops = {
    .name = "rows",
    .summary = "a tensor saved in row blocks, one encoding per block",
    .decode = rows_decode,
    .drop = rows_drop,
    .softmax_backward = rows_softmax_backward,
    .act_backward = rows_act_backward,
    .decode_rows = rows_decode_rows,
};

/*
 * Multi-head self-attention layer (see nn.h).
 *
 * Forward: qkv = x Wqkv^T + b (saved as attention_input), P = softmax of
 * scaled scores (saved as softmax_output with row length T, T queries per
 * (batch, head) and the causal flag), o = P v, y = o Wo^T + b. P is made
 * and saved one batch at a time (as_store_save_rows_*: a codec encodes
 * each block as it comes), so the forward holds one (NH, T, T) block of it;
 * qkv and o are transient: the store holds what backward needs. qkv's
 * save declares it row-wise derived from the qkv linear's saved input (the
 * store may keep nothing for it and rebuild rows in backward: `recompute`,
 * an `auto` candidate).
 *
 * Backward streams P one (batch, head) block at a time through
 * as_store_restore_rows into one (T, T) workspace (so a compressed P is
 * decoded once per step and never whole), and per block computes
 * dP = dO V^T, dV = P^T dO, dS = P * (dP - <dP, P>) from that same decoded
 * block (as_op_attn_softmax_bwd, bit-identical to the softmax codecs' own
 * backward), then dQ, dK. Workspace beyond dO and dqkv: two (T, T) blocks,
 * plus one batch's (T, 3C) rows of qkv when qkv is not held in place.
 */
#include "layers/nn.h"

#include <stdio.h>
#include <string.h>

#include "util/try.h"

int as_nn_attn_init(as_nn_ctx *c, as_nn_params *ps, as_nn_attn *l,
                    const char *name, int C, int NH, bool causal,
                    uint64_t *rng)
{
    char b[64];
    memset(l, 0, sizeof *l);
    snprintf(l->name, sizeof l->name, "%s", name);
    l->id = as_nn_layer_id(c, name);
    if (C % NH)
        return as_nn_fail(c, AS_EINVAL, "%s: %d channels not divisible by %d heads",
                          name, C, NH);
    l->C = C;
    l->NH = NH;
    l->causal = causal;
    snprintf(b, sizeof b, "%s.qkv", name);
    int rc = as_nn_linear_init(c, ps, &l->qkv, b, C, 3 * C, true, rng);
    if (rc)
        return rc;
    snprintf(b, sizeof b, "%s.proj", name);
    return as_nn_linear_init(c, ps, &l->proj, b, C, C, true, rng);
}

/* q, k, v rebuilt from the qkv linear's saved input: qkv = x Wqkv^T + b,
 * row by row (the weights are unchanged until the optimizer runs, after
 * backward). */
static int qkv_regen(void *ud, const as_tensor *const *in, size_t n,
                     as_tensor *out)
{
    const as_nn_linear *q = ud;
    if (n != 1 || in[0]->dtype != AS_F32 || out->dtype != AS_F32 ||
        in[0]->ndim < 1 || out->ndim < 1)
        return AS_EINVAL;
    int64_t rows = as_tensor_numel(in[0]) / q->in;
    if (in[0]->shape[in[0]->ndim - 1] != q->in ||
        out->shape[out->ndim - 1] != q->out ||
        as_tensor_numel(out) != rows * q->out)
        return AS_ESHAPE;
    as_op_linear_fwd((int)rows, q->in, q->out, in[0]->data, AS_NN_F(q->W->w),
                     q->b ? AS_NN_F(q->b->w) : NULL, out->data);
    return 0;
}

int as_nn_attn_fwd(as_nn_ctx *c, as_nn_attn *l, int B, int T,
                   const float *x, float *y)
{
    return as_nn_attn_fwd_alias(c, l, B, T, x, AS_HANDLE_NULL, y);
}

int as_nn_attn_fwd_alias(as_nn_ctx *c, as_nn_attn *l, int B, int T,
                         const float *x, as_handle x_saved, float *y)
{
    const int C = l->C, NH = l->NH, N = B * T;
    const size_t C3 = 3 * (size_t)C;
    l->B = B;
    l->T = T;
    as_block qkv = {0}, P = {0}, o = {0};
    int rc = 0;
    AS_TRY(as_nn_alloc(c, sizeof(float) * C3 * N, AS_TAG_ACTIVATIONS, l->id,
                       false, &qkv));                             /* (B,T,3C) */
    AS_TRY(as_nn_alloc(c, sizeof(float) * (size_t)N * C,
                         AS_TAG_ACTIVATIONS, l->id, false, &o));   /* (B,T,C) */
    AS_TRY(as_nn_linear_fwd_alias(c, &l->qkv, N, x, x_saved, AS_NN_F(qkv)));
    as_save_info qi = {.kind = AS_KIND_ATTENTION_INPUT, .layer = l->name,
                       .recompute = qkv_regen, .recompute_ud = &l->qkv,
                       .recompute_inputs = &l->qkv.hx,
                       .recompute_ninputs = 1, .recompute_rows = true};
    as_tensor qt = AS_NN_T(qkv.ptr, AS_F32, B, T, 3 * C);
    AS_TRY(as_nn_save(c, &qi, &qt, &l->hqkv));
    /* P one batch at a time, saved as it is made: the whole (B, NH, T, T)
     * never exists (the kernels see batch b at batch index 0, the same
     * arithmetic as one call over all batches) */
    AS_TRY(as_nn_alloc(c, sizeof(float) * (size_t)NH * T * T,
                         AS_TAG_ACTIVATIONS, l->id, false, &P));   /* (NH,T,T) */
    as_save_info pi = {.kind = AS_KIND_SOFTMAX_OUTPUT, .layer = l->name};
    pi.meta.softmax = (as_softmax_meta){.row_len = T, .queries = T,
                                        .causal = l->causal,
                                        .rows_per_item = (int64_t)NH * T};
    as_tensor pt = AS_NN_T(NULL, AS_F32, B, NH, T, T);
    AS_TRY(as_nn_save_rows_begin(c, &pi, &pt, &l->hP));
    const int64_t rows_b = (int64_t)NH * T;
    for (int b = 0; b < B; b++) {
        as_op_attn_fwd(1, T, C, NH, l->causal, AS_NN_F(qkv) + (size_t)b * T * C3,
                       AS_NN_F(P), AS_NN_F(o) + (size_t)b * T * C);
        AS_TRY(as_nn_save_rows_append(c, l->hP, l->name, b * rows_b, rows_b,
                                      P.ptr));
    }
    AS_TRY(as_nn_save_rows_end(c, l->hP, l->name));
    as_nn_free(c, &qkv);   /* the store holds both now: off the proj's peak */
    as_nn_free(c, &P);
    AS_TRY(as_nn_linear_fwd(c, &l->proj, N, AS_NN_F(o), y));
out:
    AS_NN_FREE(c, &qkv, &P, &o);
    return rc;
}

int as_nn_attn_bwd(as_nn_ctx *c, as_nn_attn *l, const float *dy, float *dx)
{
    const int B = l->B, T = l->T, C = l->C, NH = l->NH, N = B * T;
    const size_t C3 = 3 * (size_t)C;
    as_block dO = {0}, dqkv = {0}, dP = {0}, Pb = {0}, qb = {0};
    const void *qkv = NULL;
    int rc = 0;
    AS_TRY(as_nn_alloc(c, sizeof(float) * (size_t)N * C, AS_TAG_WORKSPACE,
                         l->id, false, &dO));                     /* (B,T,C) */
    AS_TRY(as_nn_linear_bwd(c, &l->proj, dy, AS_NN_F(dO)));
    /* qkv held in place: view it; decoded: restore one batch's (T, 3C) rows
     * at a time instead of materializing all of it */
    int in_place = as_nn_in_place(c, l->hqkv, l->name);
    if (in_place < 0) {
        rc = in_place;
        goto out;
    }
    if (in_place)
        AS_TRY(as_nn_view(c, l->hqkv, l->name, &qkv));
    else
        AS_TRY(as_nn_alloc(c, sizeof(float) * T * C3, AS_TAG_WORKSPACE,
                             l->id, false, &qb));                 /* (T,3C) */
    as_nn_report_grad(c, l->hqkv, AS_NN_F(dO), (size_t)N * C);
    as_nn_report_grad(c, l->hP, AS_NN_F(dO), (size_t)N * C);
    AS_TRY(as_nn_alloc(c, sizeof(float) * 3 * (size_t)N * C,
                         AS_TAG_WORKSPACE, l->id, false, &dqkv)); /* (B,T,3C) */
    AS_TRY(as_nn_alloc(c, sizeof(float) * (size_t)T * T, AS_TAG_WORKSPACE,
                         l->id, false, &dP));                     /* (T,T) */
    AS_TRY(as_nn_alloc(c, sizeof(float) * (size_t)T * T, AS_TAG_WORKSPACE,
                         l->id, false, &Pb));                     /* (T,T) */
    /* one decode of P per (b, h), used by dV and by the softmax backward;
     * dP becomes dS in place, then dQ, dK. The kernels see batch b through
     * pointers offset to it (batch index 0), the same arithmetic either way. */
    for (int b = 0; b < B; b++) {
        const float *qkv_b;
        if (in_place) {
            qkv_b = (const float *)qkv + (size_t)b * T * C3;
        } else {
            AS_TRY(as_nn_rows(c, l->hqkv, (int64_t)b * T, T, AS_NN_F(qb)));
            qkv_b = AS_NN_F(qb);
        }
        const float *dO_b = AS_NN_F(dO) + (size_t)b * T * C;
        float *dqkv_b = AS_NN_F(dqkv) + (size_t)b * T * C3;
        for (int h = 0; h < NH; h++) {
            size_t bh = (size_t)b * NH + h;
            AS_TRY(as_nn_rows(c, l->hP, (int64_t)bh * T, T, AS_NN_F(Pb)));
            as_op_attn_bwd_pv(T, C, NH, 0, h, qkv_b, AS_NN_F(Pb), dO_b,
                              dqkv_b, AS_NN_F(dP));
            as_op_attn_softmax_bwd(T, l->causal, AS_NN_F(Pb), AS_NN_F(dP),
                                   AS_NN_F(dP));
            as_op_attn_bwd_qk(T, C, NH, 0, h, qkv_b, AS_NN_F(dP), dqkv_b);
        }
    }
    as_nn_release(c, &l->hP);
    as_nn_release(c, &l->hqkv);
    AS_TRY(as_nn_linear_bwd(c, &l->qkv, AS_NN_F(dqkv), dx));
out:
    AS_NN_FREE(c, &dO, &dqkv, &dP, &Pb, &qb);
    return rc;
}

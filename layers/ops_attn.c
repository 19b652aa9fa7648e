/*
 * Multi-head self-attention core and embeddings (see ops.h).
 *
 * The fused qkv (B, T, 3C) is used in place: head h of q for batch b is
 * the (T, hd) matrix at qkv + b*T*3C + h*hd with row stride 3C, so every
 * product is one strided sgemm per (b, h) and nothing is copied.
 *
 * Backward per (b, h), with P the saved probabilities:
 *   dP = dO V^T            (T, T)
 *   dV = P^T dO            (T, hd)
 *   dS = P * (dP - rowsum(dP * P))      (or a policy's softmax backward)
 *   dQ = scale dS K,  dK = scale dS^T Q
 * P enters only through dV and the softmax backward, so a caller that keeps
 * P compressed decodes each block once and feeds the same decoded block to
 * both (as_op_attn_bwd_pv, as_op_attn_softmax_bwd).
 */
#include "layers/ops.h"

#include <assert.h>
#include <math.h>
#include <string.h>

void as_op_attn_fwd(int B, int T, int C, int NH, bool causal,
                    const float *qkv, float *P, float *out)
{
    assert(C % NH == 0);
    const int hd = C / NH, C3 = 3 * C;
    const float scale = 1.0f / sqrtf((float)hd);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            const float *q = qkv + (size_t)b * T * C3 + h * hd;
            const float *k = q + C, *v = q + 2 * C;
            float *p = P + ((size_t)b * NH + h) * T * T;
            as_op_gemm(false, true, T, T, hd, scale, q, C3, k, C3, 0.0f, p, T);
            as_op_softmax_fwd((size_t)T, T, causal, NULL, p, p);
            as_op_gemm(false, false, T, hd, T, 1.0f, p, T, v, C3, 0.0f,
                       out + (size_t)b * T * C + h * hd, C);
        }
}

void as_op_attn_bwd_pv(int T, int C, int NH, int b, int h, const float *qkv,
                       const float *P_bh, const float *dout, float *dqkv,
                       float *dP_bh)
{
    const int hd = C / NH, C3 = 3 * C;
    const size_t qo = (size_t)b * T * C3 + h * hd;
    const float *v = qkv + qo + 2 * C;
    const float *dO = dout + (size_t)b * T * C + h * hd;
    as_op_gemm(false, true, T, T, hd, 1.0f, dO, C, v, C3, 0.0f, dP_bh, T);
    as_op_gemm(true, false, T, hd, T, 1.0f, P_bh, T, dO, C, 0.0f,
               dqkv + qo + 2 * C, C3);
}

void as_op_attn_softmax_bwd(int T, bool causal, const float *P_bh,
                            const float *dP_bh, float *dS_bh)
{
    for (int q = 0; q < T; q++) {
        const float *y = P_bh + (size_t)q * T, *g = dP_bh + (size_t)q * T;
        float *o = dS_bh + (size_t)q * T;
        int n = causal && q + 1 < T ? q + 1 : T;
        double dot = 0.0;
        for (int k = 0; k < n; k++)
            dot += (double)g[k] * y[k];
        float d = (float)dot;
        for (int k = 0; k < n; k++)
            o[k] = y[k] * (g[k] - d);
        for (int k = n; k < T; k++)
            o[k] = 0.0f;
    }
}

void as_op_attn_bwd_qk(int T, int C, int NH, int b, int h, const float *qkv,
                       const float *dS_bh, float *dqkv)
{
    const int hd = C / NH, C3 = 3 * C;
    const float scale = 1.0f / sqrtf((float)hd);
    const size_t qo = (size_t)b * T * C3 + h * hd;
    const float *q = qkv + qo, *k = q + C;
    as_op_gemm(false, false, T, hd, T, scale, dS_bh, T, k, C3, 0.0f,
               dqkv + qo, C3);
    as_op_gemm(true, false, T, hd, T, scale, dS_bh, T, q, C3, 0.0f,
               dqkv + qo + C, C3);
}

void as_op_attn_bwd(int B, int T, int C, int NH, const float *qkv,
                    const float *P, const float *dout, float *dqkv,
                    float *dP, as_op_softmax_bwd_fn softmax_bwd, void *ud)
{
    assert(C % NH == 0);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            const float *p = P + ((size_t)b * NH + h) * T * T;
            as_op_attn_bwd_pv(T, C, NH, b, h, qkv, p, dout, dqkv, dP);
            if (softmax_bwd)
                softmax_bwd(ud, b, h, T, p, dP);
            else
                as_op_softmax_bwd((size_t)T, T, p, dP, dP);
            as_op_attn_bwd_qk(T, C, NH, b, h, qkv, dP, dqkv);
        }
}

void as_op_embed_fwd(int B, int T, int C, const int32_t *tok,
                     const float *wte, const float *wpe, float *out)
{
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            float *o = out + ((size_t)b * T + t) * C;
            const float *e = wte + (size_t)tok[b * T + t] * C;
            if (wpe) {
                const float *pe = wpe + (size_t)t * C;
                for (int c = 0; c < C; c++)
                    o[c] = e[c] + pe[c];
            } else {
                memcpy(o, e, sizeof(float) * (size_t)C);
            }
        }
}

void as_op_embed_bwd(int B, int T, int C, const int32_t *tok,
                     const float *dout, float *dwte, float *dwpe)
{
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            const float *d = dout + ((size_t)b * T + t) * C;
            if (dwte) {
                float *e = dwte + (size_t)tok[b * T + t] * C;
                for (int c = 0; c < C; c++)
                    e[c] += d[c];
            }
            if (dwpe) {
                float *pe = dwpe + (size_t)t * C;
                for (int c = 0; c < C; c++)
                    pe[c] += d[c];
            }
        }
}

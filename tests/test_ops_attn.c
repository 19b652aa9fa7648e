/*
 * Tensor kernels, part 2: LayerNorm, BatchNorm (train and eval), multi-head
 * attention (with and without the causal mask, and with a softmax backward
 * callback), embeddings. Same method as test_ops.c: double-precision
 * reference forward, central finite differences for the backward.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "layers/ops.h"
#include "support/fd.h"
#include "support/ref.h"
#include "support/test_main.h"

/* ---- LayerNorm -------------------------------------------------------- */

static void test_layernorm(void **state)
{
    (void)state;
    ln_cfg c = {4, 9};
    size_t nx = 36, np = 36 + 18;
    double p[54], r[36], yr[36];
    fill(p, np, 2.0);
    fill(r, nx, 1.0);
    float *pf = to_f(p, np), *rf = to_f(r, nx), y[36], mean[4], rstd[4];
    float g[54] = {0};
    as_op_layernorm_fwd(4, 9, 1e-5f, pf, pf + 36, pf + 45, y, mean, rstd);
    ln_ref(&c, p, yr);
    check_close("layernorm fwd", y, yr, nx, 1e-5);
    as_op_layernorm_bwd(4, 9, pf, pf + 36, mean, rstd, rf, g, g + 36, g + 45);
    check_grad("layernorm dx", ln_ref, &c, p, nx, r, g, 0, 36);
    check_grad("layernorm dg", ln_ref, &c, p, nx, r, g + 36, 36, 9);
    check_grad("layernorm db", ln_ref, &c, p, nx, r, g + 45, 45, 9);
    free(pf);
    free(rf);
}

/* ---- BatchNorm -------------------------------------------------------- */

static void test_batchnorm(void **state)
{
    (void)state;
    bn_cfg c = {3, 4, 5};
    size_t nx = 60, np = 68;
    double p[68], r[60], yr[60];
    fill(p, np, 2.0);
    for (int i = 0; i < 60; i++)
        p[i] += 3.0;  /* non-zero mean */
    fill(r, nx, 1.0);
    float *pf = to_f(p, np), *rf = to_f(r, nx), y[60], mean[4], inv[4];
    float rm[4] = {0}, rv[4] = {1, 1, 1, 1}, g[68] = {0};
    as_op_batchnorm_fwd(3, 4, 5, 1e-5f, true, 0.1f, pf, pf + 60, pf + 64, rm,
                        rv, mean, inv, y);
    bn_ref(&c, p, yr);
    check_close("batchnorm fwd (train)", y, yr, nx, 1e-5);
    for (int k = 0; k < 4; k++)  /* running mean moved 10% toward batch mean */
        assert_float_equal(rm[k], 0.1f * mean[k], 1e-6);
    as_op_batchnorm_bwd(3, 4, 5, pf, pf + 60, mean, inv, rf, g, g + 60, g + 64);
    check_grad("batchnorm dx", bn_ref, &c, p, nx, r, g, 0, 60);
    check_grad("batchnorm dg", bn_ref, &c, p, nx, r, g + 60, 60, 4);
    check_grad("batchnorm db", bn_ref, &c, p, nx, r, g + 64, 64, 4);
    /* eval mode uses the running statistics */
    float rm2[4] = {1, -1, 0.5f, 0}, rv2[4] = {4, 1, 0.25f, 1}, ye[60];
    as_op_batchnorm_fwd(3, 4, 5, 0.0f, false, 0.1f, pf, pf + 60, pf + 64, rm2,
                        rv2, NULL, NULL, ye);
    for (int n = 0; n < 3; n++)
        for (int k = 0; k < 4; k++)
            for (int i = 0; i < 5; i++) {
                int o = (n * 4 + k) * 5 + i;
                float want = (pf[o] - rm2[k]) / sqrtf(rv2[k]) * pf[60 + k] + pf[64 + k];
                assert_float_equal(ye[o], want, 1e-5);
            }
    free(pf);
    free(rf);
}

/* ---- attention -------------------------------------------------------- */

static int cb_calls;
static void plain_softmax_bwd(void *ud, int b, int h, int T, const float *P,
                              float *dP)
{
    (void)b; (void)h;
    cb_calls += *(int *)ud;
    as_op_softmax_bwd((size_t)T, T, P, dP, dP);
}

static void attn_case(bool causal, bool callback)
{
    at_cfg c = {2, 5, 8, 2, causal};
    size_t nq = 2 * 5 * 24, no = 2 * 5 * 8, np = 2 * 2 * 25;
    double q[240], r[80], yr[80];
    fill(q, nq, 1.5);
    fill(r, no, 1.0);
    float *qf = to_f(q, nq), *rf = to_f(r, no), P[100], out[80], dq[240], dP[25];
    as_op_attn_fwd(2, 5, 8, 2, causal, qf, P, out);
    attn_core_ref(&c, q, yr);
    check_close(causal ? "attn fwd causal" : "attn fwd", out, yr, no, 1e-5);
    if (causal)
        for (size_t i = 0; i < np; i++)
            if ((int)(i % 5) > (int)((i / 5) % 5))
                assert_true(P[i] == 0.0f);
    int one = 1;
    cb_calls = 0;
    as_op_attn_bwd(2, 5, 8, 2, qf, P, rf, dq, dP,
                   callback ? plain_softmax_bwd : NULL, &one);
    assert_int_equal(cb_calls, callback ? 4 : 0);
    check_grad(causal ? "attn dqkv causal" : "attn dqkv", attn_core_ref, &c, q, no, r,
               dq, 0, nq);
    free(qf);
    free(rf);
}

static void test_attention(void **state)
{
    (void)state;
    attn_case(false, false);
    attn_case(true, false);
    attn_case(true, true);
}

/* ---- embeddings ------------------------------------------------------- */

static void test_embedding(void **state)
{
    (void)state;
    double p[28], r[24], yr[24];
    fill(p, 28, 1.0);
    fill(r, 24, 1.0);
    float *pf = to_f(p, 28), *rf = to_f(r, 24), y[24], g[28] = {0};
    as_op_embed_fwd(2, 3, 4, emb_tok, pf, pf + 16, y);
    emb_ref(NULL, p, yr);
    check_close("embed fwd", y, yr, 24, 1e-6);
    as_op_embed_bwd(2, 3, 4, emb_tok, rf, g, g + 16);
    check_grad("embed dwte", emb_ref, NULL, p, 24, r, g, 0, 16);
    check_grad("embed dwpe", emb_ref, NULL, p, 24, r, g + 16, 16, 12);
    free(pf);
    free(rf);
}

AS_TEST_MAIN(NULL, NULL,
             cmocka_unit_test(test_layernorm),
             cmocka_unit_test(test_batchnorm),
             cmocka_unit_test(test_attention),
             cmocka_unit_test(test_embedding))

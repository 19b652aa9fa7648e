/*
 * The nChw16c kernels (layers/ops.h, "blocked activation layout") against
 * the double-precision references and the NCHW kernels: reorders, conv
 * forward / backward with a blocked or NCHW input on every backend,
 * BatchNorm and pooling, on random shapes with channel counts on both
 * sides of a 16-lane block (the padded lanes must stay zero), strides and
 * paddings; gradients by finite differences of the references.
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

#include <actstore/common.h>

#include "layers/ops.h"
#include "support/fd.h"
#include "support/ref.h"
#include "support/test_main.h"

static int irand(int lo, int hi)   /* [lo, hi] */
{
    return lo + (int)((urand() + 1.0) * 0.5 * (hi - lo + 1)) % (hi - lo + 1);
}

/* Blocked copy of a double NCHW tensor (malloc). */
static float *blk_of(const double *x, int N, int C, int H, int W)
{
    float *f = to_f(x, (size_t)N * C * H * W);
    float *b = malloc(sizeof(float) * as_op_image_numel(AS_OP_BLK16, N, C, H, W));
    as_op_nchw_to_blk(N, C, H, W, f, b);
    free(f);
    return b;
}

/* NCHW copy of a blocked tensor (malloc), after checking its padded lanes
 * are zero. */
static float *nchw_of(const char *what, const float *b, int N, int C, int H, int W)
{
    const int CB = (C + AS_OP_BLK - 1) / AS_OP_BLK;
    for (size_t i = 0; i < (size_t)N * CB * H * W; i++) {
        const int cb = (int)(i / ((size_t)H * W) % (size_t)CB);
        for (int l = C - cb * AS_OP_BLK; l < AS_OP_BLK; l++)
            if (b[i * AS_OP_BLK + l] != 0.0f)
                fail_msg("%s: padded lane %d of block %d is %g", what, l, cb,
                         (double)b[i * AS_OP_BLK + l]);
    }
    float *x = malloc(sizeof(float) * (size_t)N * C * H * W);
    as_op_blk_to_nchw(N, C, H, W, b, x);
    return x;
}

static void test_reorder(void **state)
{
    (void)state;
    const int cs[] = {1, 5, 16, 17, 33};
    for (int t = 0; t < 5; t++) {
        const int N = irand(1, 3), C = cs[t], H = irand(1, 9), W = irand(1, 9);
        const size_t n = (size_t)N * C * H * W;
        double *x = malloc(sizeof(double) * n);
        fill(x, n, 1.0);
        float *xf = to_f(x, n), *b = blk_of(x, N, C, H, W);
        assert_int_equal(as_op_image_numel(AS_OP_BLK16, N, C, H, W),
                         (size_t)N * ((C + 15) / 16) * 16 * H * W);
        assert_int_equal(as_op_image_numel(AS_OP_NCHW, N, C, H, W), n);
        for (size_t i = 0; i < n; i++) {   /* element (n, c, h, w) by the formula */
            const size_t hw = (size_t)H * W, p = i % hw, c = i / hw % (size_t)C, m = i / hw / C;
            const size_t o = ((m * ((C + 15) / 16) + c / 16) * hw + p) * 16 + c % 16;
            assert_true(b[o] == xf[i]);
        }
        float *back = nchw_of("reorder", b, N, C, H, W);
        assert_memory_equal(back, xf, sizeof(float) * n);
        free(x); free(xf); free(b); free(back);
    }
}

/* One geometry, input layout xl, on the current backend: forward against
 * the double reference, backward against the NCHW kernel (itself checked
 * against exact gradients in test_ops), dW / db accumulating. */
static void conv_blk_case(const as_op_conv_geom *g, as_op_layout xl, const char *tag)
{
    const size_t nx = (size_t)g->N * g->Cin * g->H * g->W;
    const size_t nw = (size_t)g->Cout * g->Cin * g->kh * g->kw, nb = (size_t)g->Cout;
    const size_t ny = (size_t)g->N * g->Cout * g->Ho * g->Wo, np = nx + nw + nb;
    double *p = malloc(sizeof(double) * np), *dy = malloc(sizeof(double) * ny);
    double *yr = malloc(sizeof(double) * ny);
    fill(p, np, 1.0);
    fill(dy, ny, 1.0);
    conv_ref(g, p, yr);
    float *pf = to_f(p, np), *dyf = to_f(dy, ny);
    float *xin = xl == AS_OP_BLK16 ? blk_of(p, g->N, g->Cin, g->H, g->W) : to_f(p, nx);
    float *dyb = blk_of(dy, g->N, g->Cout, g->Ho, g->Wo);
    float *y = malloc(sizeof(float) * as_op_image_numel(AS_OP_BLK16, g->N, g->Cout, g->Ho, g->Wo));
    const size_t nws = as_op_conv_workspace_blk(g, xl);
    float *ws = malloc(sizeof(float) * (nws + 16));
    for (int c = 0; c < 16; c++)
        ws[nws + c] = 1234.5f;
    char what[160];
    snprintf(what, sizeof what, "conv blk %s x%s N%d Cin%d %dx%d Cout%d k%d s%d p%d", tag,
             xl == AS_OP_BLK16 ? "blk" : "nchw", g->N, g->Cin, g->H, g->W, g->Cout, g->kh,
             g->stride, g->pad);
    as_op_conv_fwd_blk(g, xl, xin, pf + nx, pf + nx + nw, y, ws);
    float *yn = nchw_of(what, y, g->N, g->Cout, g->Ho, g->Wo);
    check_close(what, yn, yr, ny, 1e-5);
    /* reference backward: the NCHW kernel, in double for check_close */
    float *gref = calloc(np, sizeof(float)), *gb = calloc(np, sizeof(float));
    for (size_t i = nx; i < np; i++)
        gref[i] = gb[i] = (float)(0.25 * (double)(i % 7));   /* dW, db accumulate */
    float *wsn = malloc(sizeof(float) * as_op_conv_workspace(g));
    as_op_conv_bwd(g, pf, pf + nx, dyf, gref, gref + nx, gref + nx + nw, wsn);
    double *gd = malloc(sizeof(double) * np);
    for (size_t i = 0; i < np; i++)
        gd[i] = gref[i];
    const size_t nxb = as_op_image_numel(xl, g->N, g->Cin, g->H, g->W);
    float *dx = malloc(sizeof(float) * nxb);
    as_op_conv_bwd_blk(g, xl, xin, pf + nx, dyb, dx, gb + nx, gb + nx + nw, ws);
    float *dxn = xl == AS_OP_BLK16 ? nchw_of(what, dx, g->N, g->Cin, g->H, g->W) : dx;
    check_close(what, dxn, gd, nx, 1e-5);
    check_close(what, gb + nx, gd + nx, nw + nb, 1e-5);
    for (int c = 0; c < 16; c++)
        assert_true(ws[nws + c] == 1234.5f);
    if (dxn != dx)
        free(dxn);
    free(p); free(dy); free(yr); free(pf); free(dyf); free(xin); free(dyb); free(y);
    free(ws); free(yn); free(gref); free(gb); free(wsn); free(gd); free(dx);
}

static void test_conv_blk(void **state)
{
    (void)state;
    as_op_backend bk[2];
    const int nbk = nbackends(bk);
    for (int t = 0; t < 16; t++) {
        const int k = irand(1, 4);
        as_op_conv_geom g = {.N = irand(1, 4), .Cin = irand(1, 40), .H = irand(k, 13),
                             .W = irand(k, 13), .Cout = irand(1, 40), .kh = k, .kw = k,
                             .stride = irand(1, 3), .pad = irand(0, k - 1)};
        if (t == 0)   /* a bench stage: the library's blocked kernels */
            g = (as_op_conv_geom){.N = 4, .Cin = 16, .H = 14, .W = 14, .Cout = 32,
                                  .kh = 3, .kw = 3, .stride = 1, .pad = 1};
        if (t == 1)   /* the first conv: NCHW batch in, blocked out */
            g = (as_op_conv_geom){.N = 3, .Cin = 1, .H = 28, .W = 28, .Cout = 16,
                                  .kh = 3, .kw = 3, .stride = 1, .pad = 1};
        if (t == 2)   /* odd channel counts on both sides */
            g = (as_op_conv_geom){.N = 2, .Cin = 24, .H = 9, .W = 7, .Cout = 20,
                                  .kh = 3, .kw = 3, .stride = 2, .pad = 1};
        assert_int_equal(as_op_conv_geom_init(&g), 0);
        for (int bi = 0; bi < nbk; bi++) {
            assert_int_equal(as_op_set_backend(bk[bi]), 0);
            const char *tag = bk[bi] == AS_OP_ONEDNN ? "onednn" : "builtin";
            if (bk[bi] == AS_OP_ONEDNN && t <= 1)   /* no reorder of activations */
                assert_true(as_op_conv_blk_native(&g, t == 1 ? AS_OP_NCHW : AS_OP_BLK16));
            if (bk[bi] == AS_OP_BUILTIN)
                assert_false(as_op_conv_blk_native(&g, AS_OP_BLK16));
            conv_blk_case(&g, AS_OP_BLK16, tag);
            conv_blk_case(&g, AS_OP_NCHW, tag);
        }
        as_op_set_backend(AS_OP_BUILTIN);
    }
}

/* ---- BatchNorm -------------------------------------------------------- */

static void bn_blk_case(int N, int C, int H, int W)
{
    const int HW = H * W;
    const size_t nx = (size_t)N * C * HW, np = nx + 2 * (size_t)C;
    bn_cfg cfg = {N, C, HW};
    double *p = malloc(sizeof(double) * np), *r = malloc(sizeof(double) * nx);
    double *yr = malloc(sizeof(double) * nx);
    fill(p, np, 1.0);
    for (int c = 0; c < C; c++)
        p[nx + c] += 1.5;   /* gamma away from 0 */
    fill(r, nx, 1.0);
    bn_ref(&cfg, p, yr);
    float *pf = to_f(p, np), *xb = blk_of(p, N, C, H, W), *rb = blk_of(r, N, C, H, W);
    const float *g = pf + nx, *b = g + C;
    const size_t nbk = as_op_image_numel(AS_OP_BLK16, N, C, H, W);
    float *y = malloc(sizeof(float) * nbk), *y2 = malloc(sizeof(float) * nbk);
    float *st = malloc(sizeof(float) * 4 * C), *rs = calloc(4 * (size_t)C, sizeof(float));
    for (int c = 0; c < C; c++)
        rs[C + c] = rs[3 * C + c] = 1.0f;
    char what[64];
    snprintf(what, sizeof what, "batchnorm blk N%d C%d %dx%d", N, C, H, W);
    as_op_batchnorm_fwd_blk(N, C, HW, 1e-5f, true, 0.1f, xb, g, b, rs, rs + C, st,
                            st + C, y);
    float *yn = nchw_of(what, y, N, C, H, W);
    check_close(what, yn, yr, nx, 1e-5);
    /* statistics and running stats as the NCHW kernel's */
    float *ref = malloc(sizeof(float) * nx), *st2 = malloc(sizeof(float) * 2 * C);
    as_op_batchnorm_fwd(N, C, HW, 1e-5f, true, 0.1f, pf, g, b, rs + 2 * C, rs + 3 * C,
                        st2, st2 + C, ref);
    for (int c = 0; c < 2 * C; c++) {
        assert_true(fabsf(st[c] - st2[c]) <= 1e-5f * (1.0f + fabsf(st2[c])));
        assert_true(fabsf(rs[c] - rs[2 * C + c]) <= 1e-6f * (1.0f + fabsf(rs[c])));
    }
    /* apply replays the forward bit for bit; eval mode uses running stats */
    as_op_batchnorm_apply_blk(N, C, HW, st, st + C, g, b, xb, y2);
    assert_memory_equal(y, y2, sizeof(float) * nbk);
    as_op_batchnorm_fwd_blk(N, C, HW, 1e-5f, false, 0.1f, xb, g, b, rs, rs + C, NULL,
                            NULL, y2);
    as_op_batchnorm_fwd(N, C, HW, 1e-5f, false, 0.1f, pf, g, b, rs, rs + C, NULL, NULL,
                        ref);
    float *y2n = nchw_of(what, y2, N, C, H, W);
    double *refd = malloc(sizeof(double) * nx);
    for (size_t i = 0; i < nx; i++)
        refd[i] = ref[i];
    check_close(what, y2n, refd, nx, 1e-6);
    /* backward: dx by finite differences, dgamma / dbeta too */
    float *dx = malloc(sizeof(float) * nbk), *dgb = calloc(2 * (size_t)C, sizeof(float));
    as_op_batchnorm_bwd_blk(N, C, HW, xb, g, st, st + C, rb, dx, dgb, dgb + C);
    float *dxn = nchw_of(what, dx, N, C, H, W);
    float *an = malloc(sizeof(float) * np);
    memcpy(an, dxn, sizeof(float) * nx);
    memcpy(an + nx, dgb, sizeof(float) * 2 * C);
    check_grad(what, bn_ref, &cfg, p, nx, r, an, 0, np);
    free(p); free(r); free(yr); free(pf); free(xb); free(rb); free(y); free(y2);
    free(st); free(rs); free(yn); free(ref); free(st2); free(y2n); free(refd);
    free(dx); free(dgb); free(dxn); free(an);
}

static void test_batchnorm_blk(void **state)
{
    (void)state;
    bn_blk_case(2, 3, 3, 2);
    bn_blk_case(3, 16, 2, 2);
    bn_blk_case(2, 17, 3, 1);
    for (int t = 0; t < 3; t++)
        bn_blk_case(irand(1, 3), irand(1, 35), irand(1, 4), irand(1, 4));
}

/* ---- pooling ------------------------------------------------------------ */

static void pool_blk_case(pool_cfg c)
{
    const size_t nx = (size_t)c.N * c.C * c.H * c.W;
    const int Ho = c.H / c.k, Wo = c.W / c.k;
    const size_t ny = (size_t)c.N * c.C * Ho * Wo;
    double *x = malloc(sizeof(double) * nx), *r = malloc(sizeof(double) * ny);
    double *yr = malloc(sizeof(double) * ny);
    fill(x, nx, 1.0);
    fill(r, ny, 1.0);
    pool_ref(&c, x, yr);
    float *xb = blk_of(x, c.N, c.C, c.H, c.W), *rb = blk_of(r, c.N, c.C, Ho, Wo);
    const size_t nyb = as_op_image_numel(AS_OP_BLK16, c.N, c.C, Ho, Wo);
    const size_t nxb = as_op_image_numel(AS_OP_BLK16, c.N, c.C, c.H, c.W);
    float *y = malloc(sizeof(float) * nyb), *y2 = malloc(sizeof(float) * nyb);
    float *dx = malloc(sizeof(float) * nxb);
    uint8_t *idx = malloc(nyb);
    char what[80];
    snprintf(what, sizeof what, "%s blk N%d C%d %dx%d k%d", c.max ? "maxpool" : "avgpool",
             c.N, c.C, c.H, c.W, c.k);
    if (c.max)
        as_op_maxpool_fwd_blk(c.N, c.C, c.H, c.W, c.k, xb, y, idx);
    else
        as_op_avgpool_fwd_blk(c.N, c.C, c.H, c.W, c.k, xb, y);
    float *yn = nchw_of(what, y, c.N, c.C, Ho, Wo);
    check_close(what, yn, yr, ny, 1e-6);
    for (size_t i = 0; i < nxb; i++)
        dx[i] = 99.0f;   /* overwritten everywhere */
    if (c.max) {
        as_op_maxpool_gather_blk(c.N, c.C, c.H, c.W, c.k, xb, idx, y2);
        assert_memory_equal(y, y2, sizeof(float) * nyb);
        const uint8_t keep0 = idx[0];
        idx[0] = 255;   /* outside the window: reads its position 0 */
        as_op_maxpool_gather_blk(c.N, c.C, c.H, c.W, c.k, xb, idx, y2);
        assert_true(y2[0] == xb[0]);
        idx[0] = keep0;
        as_op_maxpool_bwd_blk(c.N, c.C, c.H, c.W, c.k, idx, rb, dx);
    } else {
        as_op_avgpool_bwd_blk(c.N, c.C, c.H, c.W, c.k, rb, dx);
    }
    float *dxn = nchw_of(what, dx, c.N, c.C, c.H, c.W);
    check_grad(what, pool_ref, &c, x, ny, r, dxn, 0, nx);
    free(x); free(r); free(yr); free(xb); free(rb); free(y); free(y2); free(dx);
    free(idx); free(yn); free(dxn);
}

static void test_pool_blk(void **state)
{
    (void)state;
    for (int m = 0; m < 8; m++) {
        pool_cfg c = {irand(1, 3), m < 4 ? irand(1, 20) : irand(15, 40), irand(2, 9),
                      irand(2, 9), m % 4 < 2 ? 2 : 3, m % 2 == 1};
        if (c.H < c.k)
            c.H = c.k;
        if (c.W < c.k)
            c.W = c.k;
        pool_blk_case(c);
    }
}

AS_TEST_MAIN(NULL, NULL,
             cmocka_unit_test(test_reorder),
             cmocka_unit_test(test_conv_blk),
             cmocka_unit_test(test_batchnorm_blk),
             cmocka_unit_test(test_pool_blk))

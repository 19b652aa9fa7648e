/*
 * conv2d by im2col + GEMM, and pooling (see ops.h).
 *
 * Images are processed in chunks of nb images: cols (K, nb*HoWo) with
 * K = Cin*kh*kw, Y chunk (Cout, nb*HoWo) = W (Cout, K) cols, scattered back
 * to NCHW. The chunk aims at ~512 GEMM columns so that cols (K x 512
 * floats, 590 KB at K = 288) stays in L2 between im2col writing it and the
 * GEMM packing it: measured with `actstore bench layers`, 512 columns run
 * the bench-preset convs at the speed of one sgemm of the whole layer's
 * shape, while 2048 columns lose 15-30% to cache misses.
 * When nb = 1 the GEMM writes straight into y.
 * With the oneDNN backend the library's primitives run instead
 * (ops_dnnl.c); this path remains for builds without it and for the
 * geometries it does not support.
 */
#include "layers/ops.h"

#include <actstore/common.h>
#include <assert.h>
#include <float.h>
#include <string.h>

#include "layers/ops_direct.h"
#ifdef AS_OPS_HAVE_ONEDNN
#include "layers/ops_dnnl.h"
#endif

#define AS_CONV_COLS_TARGET 512  /* GEMM columns per chunk we aim for */

int as_op_conv_geom_init(as_op_conv_geom *g)
{
    if (g->N <= 0 || g->Cin <= 0 || g->H <= 0 || g->W <= 0 || g->Cout <= 0 ||
        g->kh <= 0 || g->kw <= 0 || g->stride <= 0 || g->pad < 0)
        return -1;
    int hn = g->H + 2 * g->pad - g->kh, wn = g->W + 2 * g->pad - g->kw;
    if (hn < 0 || wn < 0)
        return -1;
    g->Ho = hn / g->stride + 1;
    g->Wo = wn / g->stride + 1;
    return 0;
}

static int chunk_images(const as_op_conv_geom *g)
{
    int hw = g->Ho * g->Wo;
    int nb = (AS_CONV_COLS_TARGET + hw - 1) / hw;
    if (nb < 1)
        nb = 1;
    if (nb > g->N)
        nb = g->N;
    return nb;
}

/* (Cin, H + 2 pad, W + 2 pad) for stride 1, else nothing */
static size_t pad_floats(const as_op_conv_geom *g)
{
    if (g->stride != 1)
        return 0;
    return (size_t)g->Cin * (g->H + 2 * g->pad) * (g->W + 2 * g->pad);
}

/* Workspace of the im2col path. */
static size_t im2col_workspace(const as_op_conv_geom *g)
{
    size_t K = (size_t)g->Cin * g->kh * g->kw;
    size_t cols = (size_t)chunk_images(g) * g->Ho * g->Wo;
    /* forward: cols + y chunk; backward: cols + dy chunk + dcols; then one
     * zero-padded input image for the stride-1 im2col */
    return 2 * K * cols + (size_t)g->Cout * cols + pad_floats(g);
}

/* Enough for both paths, so the backend may change between calls. */
size_t as_op_conv_workspace(const as_op_conv_geom *g)
{
    size_t n = im2col_workspace(g), direct = as_direct_conv_workspace(g);
    if (direct > n)
        n = direct;
#ifdef AS_OPS_HAVE_ONEDNN
    if (as_op_get_backend() == AS_OP_ONEDNN) {
        size_t d = as_dnnl_conv_workspace(g, AS_DNNL_NCHW);
        n = d > n ? d : n;
    }
#endif
    return n;
}

size_t as_op_conv_native_workspace(const as_op_conv_geom *g)
{
#ifdef AS_OPS_HAVE_ONEDNN
    if (as_op_get_backend() == AS_OP_ONEDNN)
        return as_dnnl_conv_native_workspace(g);
#endif
    (void)g;
    return 0;
}

int as_op_conv_native(const as_op_conv_geom *g, int pass, float *ws)
{
#ifdef AS_OPS_HAVE_ONEDNN
    if (as_op_get_backend() == AS_OP_ONEDNN &&
        as_dnnl_conv_native(g, pass, ws) == 0)
        return 0;
#endif
    (void)g, (void)pass, (void)ws;
    return AS_ENOTSUP;
}

static float *pad_buffer(const as_op_conv_geom *g, float *ws)
{
    size_t K = (size_t)g->Cin * g->kh * g->kw;
    size_t cols = (size_t)chunk_images(g) * g->Ho * g->Wo;
    return ws + 2 * K * cols + (size_t)g->Cout * cols;
}

/* cols (K, nb*HoWo): row (c, i, j), column (n, oh, ow).
 * Stride 1: each image is first copied into a zero-padded buffer xp
 * (Cin, H+2p, W+2p), so every row of cols is a plain strided window of xp
 * with no bounds tests (rows are 7..28 floats: branches and memcpy calls
 * would cost more than the copy). Other strides test bounds per element. */
static void im2col(const as_op_conv_geom *g, const float *x, int nb,
                   float *cols, float *xp)
{
    const int HoWo = g->Ho * g->Wo, ncol = nb * HoWo;
    if (g->stride == 1) {
        const int Hp = g->H + 2 * g->pad, Wp = g->W + 2 * g->pad;
        const int Ho = g->Ho, Wo = g->Wo;
        memset(xp, 0, sizeof(float) * pad_floats(g));   /* borders stay 0 */
        for (int n = 0; n < nb; n++) {
            for (int c = 0; c < g->Cin; c++)
                for (int h = 0; h < g->H; h++)
                    memcpy(xp + ((size_t)c * Hp + h + g->pad) * Wp + g->pad,
                           x + (((size_t)n * g->Cin + c) * g->H + h) * g->W,
                           sizeof(float) * (size_t)g->W);
            for (int c = 0; c < g->Cin; c++)
                for (int i = 0; i < g->kh; i++)
                    for (int j = 0; j < g->kw; j++) {
                        float *row = cols + ((size_t)(c * g->kh + i) * g->kw + j) * ncol +
                                     (size_t)n * HoWo;
                        const float *src = xp + ((size_t)c * Hp + i) * Wp + j;
                        for (int oh = 0; oh < Ho; oh++)
                            for (int ow = 0; ow < Wo; ow++)
                                row[oh * Wo + ow] = src[(size_t)oh * Wp + ow];
                    }
        }
        return;
    }
    for (int c = 0; c < g->Cin; c++)
        for (int i = 0; i < g->kh; i++)
            for (int j = 0; j < g->kw; j++) {
                float *row = cols + ((size_t)(c * g->kh + i) * g->kw + j) * ncol;
                for (int n = 0; n < nb; n++) {
                    const float *xc = x + ((size_t)n * g->Cin + c) * g->H * g->W;
                    float *r = row + (size_t)n * HoWo;
                    for (int oh = 0; oh < g->Ho; oh++) {
                        int ih = oh * g->stride - g->pad + i;
                        float *ro = r + (size_t)oh * g->Wo;
                        if (ih < 0 || ih >= g->H) {
                            memset(ro, 0, sizeof(float) * (size_t)g->Wo);
                            continue;
                        }
                        const float *xr = xc + (size_t)ih * g->W;
                        for (int ow = 0; ow < g->Wo; ow++) {
                            int iw = ow * g->stride - g->pad + j;
                            ro[ow] = (iw >= 0 && iw < g->W) ? xr[iw] : 0.0f;
                        }
                    }
                }
            }
}

/* Adjoint of im2col: dx (nb images, overwritten beforehand) += cols. */
static void col2im(const as_op_conv_geom *g, const float *cols, int nb,
                   float *dx)
{
    const int HoWo = g->Ho * g->Wo, ncol = nb * HoWo;
    for (int c = 0; c < g->Cin; c++)
        for (int i = 0; i < g->kh; i++)
            for (int j = 0; j < g->kw; j++) {
                const float *row = cols + ((size_t)(c * g->kh + i) * g->kw + j) * ncol;
                for (int n = 0; n < nb; n++) {
                    float *xc = dx + ((size_t)n * g->Cin + c) * g->H * g->W;
                    const float *r = row + (size_t)n * HoWo;
                    for (int oh = 0; oh < g->Ho; oh++) {
                        int ih = oh * g->stride - g->pad + i;
                        if (ih < 0 || ih >= g->H)
                            continue;
                        float *xr = xc + (size_t)ih * g->W;
                        const float *ro = r + (size_t)oh * g->Wo;
                        for (int ow = 0; ow < g->Wo; ow++) {
                            int iw = ow * g->stride - g->pad + j;
                            if (iw >= 0 && iw < g->W)
                                xr[iw] += ro[ow];
                        }
                    }
                }
            }
}

void as_op_conv_fwd(const as_op_conv_geom *g, const float *x, const float *W,
                    const float *b, float *y, float *ws)
{
    if (as_direct_conv_ok(g)) {
        as_direct_conv_fwd(g, x, W, b, y, ws);
        return;
    }
#ifdef AS_OPS_HAVE_ONEDNN
    if (as_op_get_backend() == AS_OP_ONEDNN &&
        as_dnnl_conv_fwd(g, AS_DNNL_NCHW, x, W, b, y, ws) == 0)
        return;
#endif
    const int K = g->Cin * g->kh * g->kw, HoWo = g->Ho * g->Wo;
    const int nbmax = chunk_images(g);
    const size_t xs = (size_t)g->Cin * g->H * g->W, ys = (size_t)g->Cout * HoWo;
    const bool direct = g->kh == 1 && g->kw == 1 && g->stride == 1 && g->pad == 0;
    for (int n0 = 0; n0 < g->N; n0 += nbmax) {
        int nb = g->N - n0 < nbmax ? g->N - n0 : nbmax;
        int ncol = nb * HoWo;
        float *cols = ws, *yc = ws + (size_t)K * ncol;
        if (nb == 1 && direct) {
            as_op_gemm(false, false, g->Cout, HoWo, K, 1.0f, W, K,
                       x + n0 * xs, HoWo, 0.0f, y + n0 * ys, HoWo);
        } else {
            im2col(g, x + n0 * xs, nb, cols, pad_buffer(g, ws));
            float *dst = nb == 1 ? y + n0 * ys : yc;
            as_op_gemm(false, false, g->Cout, ncol, K, 1.0f, W, K, cols, ncol,
                       0.0f, dst, ncol);
            if (nb > 1)  /* (Cout, nb, HoWo) -> (nb, Cout, HoWo) */
                for (int o = 0; o < g->Cout; o++)
                    for (int n = 0; n < nb; n++)
                        memcpy(y + (n0 + n) * ys + (size_t)o * HoWo,
                               yc + (size_t)o * ncol + (size_t)n * HoWo,
                               sizeof(float) * (size_t)HoWo);
        }
        if (b)
            for (int n = 0; n < nb; n++)
                for (int o = 0; o < g->Cout; o++) {
                    float *yo = y + (n0 + n) * ys + (size_t)o * HoWo;
                    for (int p = 0; p < HoWo; p++)
                        yo[p] += b[o];
                }
    }
}

void as_op_conv_bwd(const as_op_conv_geom *g, const float *x, const float *W,
                    const float *dy, float *dx, float *dW, float *db,
                    float *ws)
{
    if ((dW || db) && as_direct_conv_ok(g)) {   /* then dx alone below */
        as_direct_conv_bwd_w(g, x, dy, dW, db, ws);
        if (!dx)
            return;
        dW = NULL;
        db = NULL;
    }
#ifdef AS_OPS_HAVE_ONEDNN
    if (as_op_get_backend() == AS_OP_ONEDNN &&
        as_dnnl_conv_bwd(g, AS_DNNL_NCHW, x, W, dy, dx, dW, db, ws) == 0)
        return;
#endif
    const int K = g->Cin * g->kh * g->kw, HoWo = g->Ho * g->Wo;
    const int nbmax = chunk_images(g);
    const size_t xs = (size_t)g->Cin * g->H * g->W, ys = (size_t)g->Cout * HoWo;
    if (db)
        for (int n = 0; n < g->N; n++)
            for (int o = 0; o < g->Cout; o++) {
                const float *d = dy + n * ys + (size_t)o * HoWo;
                float s = 0.0f;
                for (int p = 0; p < HoWo; p++)
                    s += d[p];
                db[o] += s;
            }
    if (dx)
        memset(dx, 0, sizeof(float) * xs * (size_t)g->N);
    for (int n0 = 0; n0 < g->N; n0 += nbmax) {
        int nb = g->N - n0 < nbmax ? g->N - n0 : nbmax;
        int ncol = nb * HoWo;
        float *cols = ws, *dyc = ws + (size_t)K * ncol;
        float *dcols = dyc + (size_t)g->Cout * ncol;
        const float *dyp = dy + n0 * ys;
        if (nb > 1) {  /* (nb, Cout, HoWo) -> (Cout, nb, HoWo) */
            for (int o = 0; o < g->Cout; o++)
                for (int n = 0; n < nb; n++)
                    memcpy(dyc + (size_t)o * ncol + (size_t)n * HoWo,
                           dy + (n0 + n) * ys + (size_t)o * HoWo,
                           sizeof(float) * (size_t)HoWo);
            dyp = dyc;
        }
        if (dW) {
            im2col(g, x + n0 * xs, nb, cols, pad_buffer(g, ws));
            as_op_gemm(false, true, g->Cout, K, ncol, 1.0f, dyp, ncol, cols,
                       ncol, 1.0f, dW, K);
        }
        if (dx) {
            as_op_gemm(true, false, K, ncol, g->Cout, 1.0f, W, K, dyp, ncol,
                       0.0f, dcols, ncol);
            col2im(g, dcols, nb, dx + n0 * xs);
        }
    }
}

void as_op_maxpool_fwd(int N, int C, int H, int W, int k, const float *x,
                       float *y, uint8_t *idx)
{
    const int Ho = H / k, Wo = W / k;
    assert(k * k <= 256);
    for (size_t nc = 0; nc < (size_t)N * C; nc++) {
        const float *xc = x + nc * H * W;
        float *yc = y + nc * Ho * Wo;
        uint8_t *ic = idx ? idx + nc * Ho * Wo : NULL;
        for (int oh = 0; oh < Ho; oh++)
            for (int ow = 0; ow < Wo; ow++) {
                float m = -FLT_MAX;
                int a = 0;
                for (int i = 0; i < k; i++)
                    for (int j = 0; j < k; j++) {
                        float v = xc[(oh * k + i) * W + ow * k + j];
                        if (v > m) {
                            m = v;
                            a = i * k + j;
                        }
                    }
                yc[oh * Wo + ow] = m;
                if (ic)
                    ic[oh * Wo + ow] = (uint8_t)a;
            }
    }
}

void as_op_maxpool_gather(int N, int C, int H, int W, int k, const float *x,
                          const uint8_t *idx, float *y)
{
    const int Ho = H / k, Wo = W / k;
    for (size_t nc = 0; nc < (size_t)N * C; nc++) {
        const float *xc = x + nc * H * W;
        float *yc = y + nc * Ho * Wo;
        const uint8_t *ic = idx + nc * Ho * Wo;
        for (int oh = 0; oh < Ho; oh++)
            for (int ow = 0; ow < Wo; ow++) {
                const int a = ic[oh * Wo + ow];
                yc[oh * Wo + ow] = xc[(oh * k + a / k) * W + ow * k + a % k];
            }
    }
}

void as_op_maxpool_bwd(int N, int C, int H, int W, int k, const uint8_t *idx,
                       const float *dy, float *dx)
{
    const int Ho = H / k, Wo = W / k;
    memset(dx, 0, sizeof(float) * (size_t)N * C * H * W);
    for (size_t nc = 0; nc < (size_t)N * C; nc++) {
        float *xc = dx + nc * H * W;
        const float *yc = dy + nc * Ho * Wo;
        const uint8_t *ic = idx + nc * Ho * Wo;
        for (int oh = 0; oh < Ho; oh++)
            for (int ow = 0; ow < Wo; ow++) {
                int a = ic[oh * Wo + ow];
                xc[(oh * k + a / k) * W + ow * k + a % k] = yc[oh * Wo + ow];
            }
    }
}

void as_op_avgpool_fwd(int N, int C, int H, int W, int k, const float *x,
                       float *y)
{
    const int Ho = H / k, Wo = W / k;
    const float s = 1.0f / (float)(k * k);
    for (size_t nc = 0; nc < (size_t)N * C; nc++) {
        const float *xc = x + nc * H * W;
        float *yc = y + nc * Ho * Wo;
        for (int oh = 0; oh < Ho; oh++)
            for (int ow = 0; ow < Wo; ow++) {
                float acc = 0.0f;
                for (int i = 0; i < k; i++)
                    for (int j = 0; j < k; j++)
                        acc += xc[(oh * k + i) * W + ow * k + j];
                yc[oh * Wo + ow] = acc * s;
            }
    }
}

void as_op_avgpool_bwd(int N, int C, int H, int W, int k, const float *dy,
                       float *dx)
{
    const int Ho = H / k, Wo = W / k;
    const float s = 1.0f / (float)(k * k);
    memset(dx, 0, sizeof(float) * (size_t)N * C * H * W);
    for (size_t nc = 0; nc < (size_t)N * C; nc++) {
        float *xc = dx + nc * H * W;
        const float *yc = dy + nc * Ho * Wo;
        for (int oh = 0; oh < Ho; oh++)
            for (int ow = 0; ow < Wo; ow++)
                for (int i = 0; i < k; i++)
                    for (int j = 0; j < k; j++)
                        xc[(oh * k + i) * W + ow * k + j] = yc[oh * Wo + ow] * s;
    }
}

/*
 * Kernels on the blocked activation layout nChw16c (see ops.h): reorders,
 * conv dispatch, BatchNorm and pooling. The loops run over the 16 lanes of
 * a channel block innermost, contiguous, so the compiler vectorizes them
 * (one AVX-512 register per block); BatchNorm's statistics are summed in
 * double per lane, as the NCHW kernels do per plane.
 */
#include "layers/ops.h"

#include <float.h>
#include <string.h>

#ifdef AS_OPS_HAVE_ONEDNN
#include "layers/ops_dnnl.h"
#endif
#include "util/simd.h"

#define B AS_OP_BLK

static inline int nblk(int C)
{
    return (C + B - 1) / B;
}

size_t as_op_image_numel(as_op_layout l, int N, int C, int H, int W)
{
    const int c = l == AS_OP_BLK16 ? nblk(C) * B : C;
    return (size_t)N * c * H * W;
}

AS_CLONES_V4_V3
void as_op_nchw_to_blk(int N, int C, int H, int W, const float *x, float *xb)
{
    const size_t hw = (size_t)H * W;
    for (int n = 0; n < N; n++)
        for (int cb = 0; cb < nblk(C); cb++) {
            float *o = xb + ((size_t)n * nblk(C) + cb) * hw * B;
            const int nl = C - cb * B < B ? C - cb * B : B;
            const float *in = x + ((size_t)n * C + (size_t)cb * B) * hw;
            for (size_t p = 0; p < hw; p++) {
                int l = 0;
                for (; l < nl; l++)
                    o[p * B + l] = in[(size_t)l * hw + p];
                for (; l < B; l++)
                    o[p * B + l] = 0.0f;
            }
        }
}

AS_CLONES_V4_V3
void as_op_blk_to_nchw(int N, int C, int H, int W, const float *xb, float *x)
{
    const size_t hw = (size_t)H * W;
    for (int n = 0; n < N; n++)
        for (int cb = 0; cb < nblk(C); cb++) {
            const float *in = xb + ((size_t)n * nblk(C) + cb) * hw * B;
            const int nl = C - cb * B < B ? C - cb * B : B;
            float *o = x + ((size_t)n * C + (size_t)cb * B) * hw;
            for (int l = 0; l < nl; l++)
                for (size_t p = 0; p < hw; p++)
                    o[(size_t)l * hw + p] = in[p * B + l];
        }
}

/* ---- conv --------------------------------------------------------------- */

#ifdef AS_OPS_HAVE_ONEDNN
static int dnnl_lay(as_op_layout xl)
{
    return xl == AS_OP_BLK16 ? AS_DNNL_BLK : AS_DNNL_XNCHW_YBLK;
}
#endif

/* The fallback runs image by image on NCHW copies in ws (x, dx when
 * blocked; y / dy), then the NCHW kernel's workspace: a small share of
 * the workspace next to the library's own. */
static as_op_conv_geom one_image(const as_op_conv_geom *g)
{
    as_op_conv_geom g1 = *g;
    g1.N = 1;
    return g1;
}

static size_t fb_x(const as_op_conv_geom *g1, as_op_layout xl)
{
    return xl == AS_OP_BLK16 ? (size_t)g1->Cin * g1->H * g1->W : 0;
}

static size_t fb_y(const as_op_conv_geom *g1)
{
    return (size_t)g1->Cout * g1->Ho * g1->Wo;
}

size_t as_op_conv_workspace_blk(const as_op_conv_geom *g, as_op_layout xl)
{
    const as_op_conv_geom g1 = one_image(g);
    size_t n = 2 * fb_x(&g1, xl) + fb_y(&g1) + as_op_conv_workspace(&g1);
#ifdef AS_OPS_HAVE_ONEDNN
    if (as_op_get_backend() == AS_OP_ONEDNN) {
        size_t d = as_dnnl_conv_workspace(g, dnnl_lay(xl));
        n = d > n ? d : n;
    }
#endif
    return n;
}

bool as_op_conv_blk_native(const as_op_conv_geom *g, as_op_layout xl)
{
#ifdef AS_OPS_HAVE_ONEDNN
    if (as_op_get_backend() == AS_OP_ONEDNN)
        return as_dnnl_conv_workspace(g, dnnl_lay(xl)) > 0;
#endif
    (void)g, (void)xl;
    return false;
}

/* Offsets of image n in layout l. */
static size_t img_off(as_op_layout l, int n, int C, int H, int W)
{
    return (size_t)n * as_op_image_numel(l, 1, C, H, W);
}

void as_op_conv_fwd_blk(const as_op_conv_geom *g, as_op_layout xl,
                        const float *x, const float *W, const float *b,
                        float *y, float *ws)
{
#ifdef AS_OPS_HAVE_ONEDNN
    if (as_op_get_backend() == AS_OP_ONEDNN &&
        as_dnnl_conv_fwd(g, dnnl_lay(xl), x, W, b, y, ws) == 0)
        return;
#endif
    const as_op_conv_geom g1 = one_image(g);
    float *xn = ws, *yn = ws + 2 * fb_x(&g1, xl), *rest = yn + fb_y(&g1);
    for (int n = 0; n < g->N; n++) {
        const float *xi = x + img_off(xl, n, g->Cin, g->H, g->W);
        if (xl == AS_OP_BLK16)
            as_op_blk_to_nchw(1, g->Cin, g->H, g->W, xi, xn);
        as_op_conv_fwd(&g1, xl == AS_OP_BLK16 ? xn : xi, W, b, yn, rest);
        as_op_nchw_to_blk(1, g->Cout, g->Ho, g->Wo, yn,
                          y + img_off(AS_OP_BLK16, n, g->Cout, g->Ho, g->Wo));
    }
}

void as_op_conv_bwd_blk(const as_op_conv_geom *g, as_op_layout xl,
                        const float *x, const float *W, const float *dy,
                        float *dx, float *dW, float *db, float *ws)
{
#ifdef AS_OPS_HAVE_ONEDNN
    if (as_op_get_backend() == AS_OP_ONEDNN &&
        as_dnnl_conv_bwd(g, dnnl_lay(xl), x, W, dy, dx, dW, db, ws) == 0)
        return;
#endif
    const as_op_conv_geom g1 = one_image(g);
    const bool blk = xl == AS_OP_BLK16;
    float *xn = ws, *dxn = ws + fb_x(&g1, xl), *dyn = ws + 2 * fb_x(&g1, xl);
    float *rest = dyn + fb_y(&g1);
    for (int n = 0; n < g->N; n++) {
        const size_t xo = img_off(xl, n, g->Cin, g->H, g->W);
        if (blk && dW)
            as_op_blk_to_nchw(1, g->Cin, g->H, g->W, x + xo, xn);
        as_op_blk_to_nchw(1, g->Cout, g->Ho, g->Wo,
                          dy + img_off(AS_OP_BLK16, n, g->Cout, g->Ho, g->Wo), dyn);
        float *dxo = dx && blk ? dxn : dx ? dx + xo : NULL;
        as_op_conv_bwd(&g1, blk ? xn : x + xo, W, dyn, dxo, dW, db, rest);
        if (dx && blk)
            as_op_nchw_to_blk(1, g->Cin, g->H, g->W, dxn, dx + xo);
    }
}

/* ---- BatchNorm ---------------------------------------------------------- */

/* Per-lane sums over every image and position of block cb: s[l] = sum x,
 * or with m, sum (x - m[l])^2. */
AS_CLONES_V4_V3
static void blk_sums(int N, int CB, int cb, size_t hw, const float *x,
                     const double *m, double *s)
{
    double acc[B] = {0};
    for (int n = 0; n < N; n++) {
        const float *p = x + ((size_t)n * CB + cb) * hw * B;
        if (m) {
            for (size_t k = 0; k < hw; k++)
                for (int l = 0; l < B; l++) {
                    double d = p[k * B + l] - m[l];
                    acc[l] += d * d;
                }
        } else {
            for (size_t k = 0; k < hw; k++)
                for (int l = 0; l < B; l++)
                    acc[l] += p[k * B + l];
        }
    }
    memcpy(s, acc, sizeof acc);
}

/* y = a*x + bb over block cb of every image (a, bb: B lanes). */
AS_CLONES_V4_V3
static void blk_affine(int N, int CB, int cb, size_t hw, const float *a,
                       const float *bb, const float *x, float *y)
{
    for (int n = 0; n < N; n++) {
        const size_t o = ((size_t)n * CB + cb) * hw * B;
        for (size_t k = 0; k < hw; k++)
            for (int l = 0; l < B; l++)
                y[o + k * B + l] = x[o + k * B + l] * a[l] + bb[l];
    }
}

void as_op_batchnorm_fwd_blk(int N, int C, int HW, float eps, bool training,
                             float momentum, const float *x, const float *g,
                             const float *b, float *run_mean, float *run_var,
                             float *mean, float *invstd, float *y)
{
    const int CB = nblk(C);
    const size_t hw = (size_t)HW;
    const double cnt = (double)N * HW;
    for (int cb = 0; cb < CB; cb++) {
        double sm[B], sv[B];
        float a[B] = {0}, bb[B] = {0};
        if (training) {
            blk_sums(N, CB, cb, hw, x, NULL, sm);
            for (int l = 0; l < B; l++)
                sm[l] /= cnt;
            blk_sums(N, CB, cb, hw, x, sm, sv);
        }
        for (int l = 0; l < B && cb * B + l < C; l++) {
            const int c = cb * B + l;
            float m, s;
            as__bn_stats(training, training ? sm[l] : 0.0, training ? sv[l] / cnt : 0.0,
                         cnt, eps, momentum, run_mean, run_var, c, &m, &s);
            if (mean)
                mean[c] = m;
            if (invstd)
                invstd[c] = s;
            as_op_batchnorm_affine(1, &m, &s, g + c, b + c, &a[l], &bb[l]);
        }
        blk_affine(N, CB, cb, hw, a, bb, x, y);
    }
}

void as_op_batchnorm_apply_blk(int N, int C, int HW, const float *mean,
                               const float *invstd, const float *g,
                               const float *b, const float *x, float *y)
{
    const int CB = nblk(C);
    for (int cb = 0; cb < CB; cb++) {
        float a[B] = {0}, bb[B] = {0};
        const int nl = C - cb * B < B ? C - cb * B : B;
        as_op_batchnorm_affine(nl, mean + cb * B, invstd + cb * B, g + cb * B,
                               b + cb * B, a, bb);
        blk_affine(N, CB, cb, (size_t)HW, a, bb, x, y);
    }
}

AS_CLONES_V4_V3
void as_op_batchnorm_bwd_blk(int N, int C, int HW, const float *x,
                             const float *g, const float *mean,
                             const float *invstd, const float *dy, float *dx,
                             float *dg, float *db)
{
    const int CB = nblk(C);
    const size_t hw = (size_t)HW;
    const float cnt = (float)N * HW;
    for (int cb = 0; cb < CB; cb++) {
        const int nl = C - cb * B < B ? C - cb * B : B;
        float m[B] = {0}, s[B] = {0}, k0[B] = {0}, a[B], bs[B];
        for (int l = 0; l < nl; l++) {
            m[l] = mean[cb * B + l];
            s[l] = invstd[cb * B + l];
            k0[l] = g[cb * B + l] * s[l];
        }
        double ad[B] = {0}, adx[B] = {0};
        for (int n = 0; n < N; n++) {
            const size_t o = ((size_t)n * CB + cb) * hw * B;
            for (size_t k = 0; k < hw; k++)
                for (int l = 0; l < B; l++) {
                    const float d = dy[o + k * B + l];
                    ad[l] += d;
                    adx[l] += d * (x[o + k * B + l] - m[l]) * s[l];
                }
        }
        for (int l = 0; l < B; l++) {
            if (l < nl && dg)
                dg[cb * B + l] += (float)adx[l];
            if (l < nl && db)
                db[cb * B + l] += (float)ad[l];
            a[l] = (float)(ad[l] / cnt);
            bs[l] = (float)(adx[l] / cnt);
        }
        if (!dx)
            continue;
        for (int n = 0; n < N; n++) {
            const size_t o = ((size_t)n * CB + cb) * hw * B;
            for (size_t k = 0; k < hw; k++)
                for (int l = 0; l < B; l++) {
                    const float xh = (x[o + k * B + l] - m[l]) * s[l];
                    dx[o + k * B + l] = k0[l] * (dy[o + k * B + l] - a[l] - xh * bs[l]);
                }
        }
    }
}

/* ---- pooling (k x k, stride k, floor) -----------------------------------
 * One channel block is one 16-lane vector (GCC vector extensions: the
 * loops over lanes inside window loops do not auto-vectorize). */

typedef float vf16 __attribute__((vector_size(64), aligned(4)));
typedef int32_t vi16 __attribute__((vector_size(64), aligned(4)));

/* mask ? a : b per lane (a macro: no vector-typed function ABI) */
#define VSEL(mask, a, b) ((vf16)(((vi16)(a) & (mask)) | ((vi16)(b) & ~(mask))))

/* Output position o (of planes * Ho * Wo, plane = image and channel
 * block) -> offset of its window's first element in the input. */
static inline size_t win(size_t o, int H, int W, int k)
{
    const size_t Ho = (size_t)(H / k), Wo = (size_t)(W / k);
    const size_t pl = o / (Ho * Wo), oh = o / Wo % Ho, ow = o % Wo;
    return ((pl * H + oh * k) * W + ow * k) * B;
}

static inline size_t nout(int N, int C, int H, int W, int k)
{
    return (size_t)N * nblk(C) * (size_t)(H / k) * (size_t)(W / k);
}

AS_CLONES_V4_V3
void as_op_maxpool_fwd_blk(int N, int C, int H, int W, int k, const float *x,
                           float *y, uint8_t *idx)
{
    for (size_t o = 0, n = nout(N, C, H, W, k); o < n; o++) {
        const float *xw = x + win(o, H, W, k);
        vf16 m = (vf16){0} - FLT_MAX;
        vi16 a = {0};
        for (int i = 0; i < k; i++)
            for (int j = 0; j < k; j++) {
                vf16 v = *(const vf16 *)(xw + ((size_t)i * W + j) * B);
                vi16 gt = v > m;
                m = VSEL(gt, v, m);
                a = (gt & ((vi16){0} + (i * k + j))) | (a & ~gt);
            }
        *(vf16 *)(y + o * B) = m;
        if (idx)
            for (int l = 0; l < B; l++)
                idx[o * B + l] = (uint8_t)a[l];
    }
}

AS_CLONES_V4_V3
void as_op_maxpool_gather_blk(int N, int C, int H, int W, int k,
                              const float *x, const uint8_t *idx, float *y)
{
    /* a select per window position, as the forward compares (an index
     * outside the window reads position 0) */
    for (size_t o = 0, n = nout(N, C, H, W, k); o < n; o++) {
        const float *xw = x + win(o, H, W, k);
        vi16 a;
        for (int l = 0; l < B; l++)
            a[l] = idx[o * B + l];
        vf16 r = *(const vf16 *)xw;
        for (int i = 0; i < k; i++)
            for (int j = i ? 0 : 1; j < k; j++)
                r = VSEL(a == ((vi16){0} + (i * k + j)),
                         *(const vf16 *)(xw + ((size_t)i * W + j) * B), r);
        *(vf16 *)(y + o * B) = r;
    }
}

AS_CLONES_V4_V3
void as_op_maxpool_bwd_blk(int N, int C, int H, int W, int k,
                           const uint8_t *idx, const float *dy, float *dx)
{
    if (H % k || W % k)   /* rows / columns outside every window */
        memset(dx, 0, sizeof(float) * as_op_image_numel(AS_OP_BLK16, N, C, H, W));
    for (size_t o = 0, n = nout(N, C, H, W, k); o < n; o++) {
        float *xw = dx + win(o, H, W, k);
        vi16 a;
        for (int l = 0; l < B; l++)
            a[l] = idx[o * B + l];
        const vi16 d = *(const vi16 *)(dy + o * B);
        for (int i = 0; i < k; i++)
            for (int j = 0; j < k; j++)
                *(vi16 *)(xw + ((size_t)i * W + j) * B) = d & (a == ((vi16){0} + (i * k + j)));
    }
}

AS_CLONES_V4_V3
void as_op_avgpool_fwd_blk(int N, int C, int H, int W, int k, const float *x,
                           float *y)
{
    const float s = 1.0f / (float)(k * k);
    for (size_t o = 0, n = nout(N, C, H, W, k); o < n; o++) {
        const float *xw = x + win(o, H, W, k);
        vf16 acc = {0};
        for (int i = 0; i < k; i++)
            for (int j = 0; j < k; j++)
                acc += *(const vf16 *)(xw + ((size_t)i * W + j) * B);
        *(vf16 *)(y + o * B) = acc * s;
    }
}

AS_CLONES_V4_V3
void as_op_avgpool_bwd_blk(int N, int C, int H, int W, int k, const float *dy,
                           float *dx)
{
    const float s = 1.0f / (float)(k * k);
    if (H % k || W % k)
        memset(dx, 0, sizeof(float) * as_op_image_numel(AS_OP_BLK16, N, C, H, W));
    for (size_t o = 0, n = nout(N, C, H, W, k); o < n; o++) {
        float *xw = dx + win(o, H, W, k);
        const vf16 d = *(const vf16 *)(dy + o * B) * s;
        for (int i = 0; i < k; i++)
            for (int j = 0; j < k; j++)
                *(vf16 *)(xw + ((size_t)i * W + j) * B) = d;
    }
}

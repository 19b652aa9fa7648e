/*
 * Conv input regeneration by inversion: geometry, frame, factor cache and
 * the batched restore (the math is summarized in invert/conv_invert.h).
 *
 * Restore of a batch of n images, all fp32:
 *  1. Pair the images: image j and image j + ceil(n/2) become the real and
 *     imaginary parts of one complex image. The system is linear with a real
 *     operator, so solving the complex image solves both at once and half as
 *     many transforms are needed (the usual two-real-FFTs-for-one trick,
 *     without ever separating the spectra).
 *  2. Build the full output F on a P x Q grid (P >= H+kh-1, Q >= W+kw-1,
 *     2,3,5-smooth): its central window is Y - bias, its border rows and
 *     columns are the correlation of W with the frame of X, the rest is 0.
 *     Layout [p][q][re|im][Cout][pairs]: every grid point is one planar
 *     vector, so the FFT butterflies and the solve run over contiguous lanes.
 *  3. 2-D FFT (batched over Cout * pairs lanes).
 *  4. At every frequency X^(f) = M(f) F^(f) with the cached fp32 M(f)
 *     (Cin x Cout; M(-f) = conj(M(f)) for the half not stored).
 *  5. Inverse 2-D FFT (Cin * pairs lanes), only rows < H of the last pass.
 *  6. Crop, scale by 1/(PQ), split real/imaginary parts back into images and
 *     put the exact frame pixels back.
 */
#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store/policies/invert/impl.h"


static int max0(int v) { return v > 0 ? v : 0; }

int as__civ_out_h(const as__civ_geom *g)
{
    return (g->h + 2 * g->pad_h - g->dil_h * (g->kh - 1) - 1) / (g->stride_h > 0 ? g->stride_h : 1) + 1;
}

int as__civ_out_w(const as__civ_geom *g)
{
    return (g->w + 2 * g->pad_w - g->dil_w * (g->kw - 1) - 1) / (g->stride_w > 0 ? g->stride_w : 1) + 1;
}

int as__civ_frame_rows(const as__civ_geom *g) { return max0(g->kh - 1 - g->pad_h); }
int as__civ_frame_cols(const as__civ_geom *g) { return max0(g->kw - 1 - g->pad_w); }

void as__civ_frame_widths(const as__civ_geom *g, int *top, int *bot, int *left, int *right)
{
    int mh = as__civ_frame_rows(g), mw = as__civ_frame_cols(g);
    *top = mh < g->h ? mh : g->h;
    *bot = mh < g->h - *top ? mh : g->h - *top;
    *left = mw < g->w ? mw : g->w;
    *right = mw < g->w - *left ? mw : g->w - *left;
}

size_t as__civ_frame_len(const as__civ_geom *g)
{
    int t, b, l, r;
    as__civ_frame_widths(g, &t, &b, &l, &r);
    return (size_t)(t + b) * g->w + (size_t)(g->h - t - b) * (l + r);
}

#define WHY(...) do { if (why && whylen) snprintf(why, whylen, __VA_ARGS__); } while (0)

int as__civ_check(const as__civ_geom *g, char *why, size_t whylen)
{
    if (!g || g->cin < 1 || g->cout < 1 || g->h < 1 || g->w < 1 || g->kh < 1 ||
        g->kw < 1 || g->kh > 16 || g->kw > 16 || g->pad_h < 0 || g->pad_w < 0) {
        WHY("conv geometry: sizes must be positive, kernel <= 16, padding >= 0");
        return AS_EINVAL;
    }
    if (g->stride_h != 1 || g->stride_w != 1) {
        WHY("stride %dx%d (inversion needs stride 1)", g->stride_h, g->stride_w);
        return AS_ENOTSUP;
    }
    if (g->dil_h != 1 || g->dil_w != 1) {
        WHY("dilation %dx%d (inversion needs dilation 1)", g->dil_h, g->dil_w);
        return AS_ENOTSUP;
    }
    if (g->groups != 1) {
        WHY("groups %d (inversion needs groups 1)", g->groups);
        return AS_ENOTSUP;
    }
    if (g->cout < g->cin) {
        WHY("Cout %d < Cin %d (the system is underdetermined)", g->cout, g->cin);
        return AS_ENOTSUP;
    }
    if (as__civ_out_h(g) < 1 || as__civ_out_w(g) < 1) {
        WHY("empty conv output");
        return AS_EINVAL;
    }
    if (as__civ_frame_len(g) >= (size_t)g->h * g->w) {
        WHY("frame covers the whole %dx%d input (kernel %dx%d, padding %dx%d)",
            g->h, g->w, g->kh, g->kw, g->pad_h, g->pad_w);
        return AS_ENOTSUP;
    }
    return 0;
}

void as__civ_frame_extract(const as__civ_geom *g, int n, const float *x, float *frame)
{
    int t, b, l, r;
    as__civ_frame_widths(g, &t, &b, &l, &r);
    const int H = g->h, W = g->w;
    for (size_t ch = 0; ch < (size_t)n * g->cin; ch++) {
        const float *src = x + ch * H * W;
        memcpy(frame, src, sizeof(float) * t * W);
        frame += (size_t)t * W;
        memcpy(frame, src + (size_t)(H - b) * W, sizeof(float) * b * W);
        frame += (size_t)b * W;
        for (int row = t; row < H - b; row++) {
            memcpy(frame, src + (size_t)row * W, sizeof(float) * l);
            frame += l;
            memcpy(frame, src + (size_t)row * W + W - r, sizeof(float) * r);
            frame += r;
        }
    }
}

/* x^(f) = M(f) z^(f) for all lanes at one frequency. z: [re|im][Cout][NB],
 * xo: [re|im][Cin][NB]; s = -1 applies conj(M), as conj(M conj(z)) (the
 * imaginary parts negated on load and store, M never scaled). Blocks of 4
 * input channels x 8 lanes keep their 8 accumulators in registers over the
 * Cout loop, two fused multiply-adds per part and entry. */
AS__CIV_CLONES
void as__civ_solve_freq(const float *mr, const float *mi, float s, const float *z,
                       float *xo, int ci, int co, int NB)
{
    const float *zr = z, *zi = z + (size_t)co * NB;
    float *xr = xo, *xi = xo + (size_t)ci * NB;
    const v8 sg = (v8){0} + s;
    for (int l0 = 0; l0 < NB; l0 += 8) {
        int c = 0;
        for (; c + 4 <= ci; c += 4) {
            v8 r0 = {0}, r1 = {0}, r2 = {0}, r3 = {0}, i0 = {0}, i1 = {0}, i2 = {0}, i3 = {0};
            const float *m0 = mr + (size_t)c * co, *n0 = mi + (size_t)c * co;
            for (int o = 0; o < co; o++) {
                const v8 pr = ld8(zr + (size_t)o * NB + l0), pi = sg * ld8(zi + (size_t)o * NB + l0);
                float a, b;
#define STEP(q, R, I)                                                          \
                a = m0[(size_t)(q) * co + o];                                  \
                b = n0[(size_t)(q) * co + o];                                  \
                R = R + a * pr - b * pi;                                       \
                I = I + a * pi + b * pr;
                STEP(0, r0, i0) STEP(1, r1, i1) STEP(2, r2, i2) STEP(3, r3, i3)
#undef STEP
            }
            st8(xr + (size_t)(c + 0) * NB + l0, r0); st8(xi + (size_t)(c + 0) * NB + l0, sg * i0);
            st8(xr + (size_t)(c + 1) * NB + l0, r1); st8(xi + (size_t)(c + 1) * NB + l0, sg * i1);
            st8(xr + (size_t)(c + 2) * NB + l0, r2); st8(xi + (size_t)(c + 2) * NB + l0, sg * i2);
            st8(xr + (size_t)(c + 3) * NB + l0, r3); st8(xi + (size_t)(c + 3) * NB + l0, sg * i3);
        }
        for (; c < ci; c++) {
            v8 r = {0}, i = {0};
            for (int o = 0; o < co; o++) {
                const v8 pr = ld8(zr + (size_t)o * NB + l0), pi = sg * ld8(zi + (size_t)o * NB + l0);
                const float a = mr[(size_t)c * co + o], b = mi[(size_t)c * co + o];
                r = r + a * pr - b * pi;
                i = i + a * pi + b * pr;
            }
            st8(xr + (size_t)c * NB + l0, r);
            st8(xi + (size_t)c * NB + l0, sg * i);
        }
    }
}

/* x[c][s..s+15] = sum_o m[c][o] y[o][s..s+15] - mb[c] for 8 channels c (m
 * rows cout apart, y rows ys apart, x rows xs apart). */
static inline __attribute__((always_inline)) void
pointwise_16x8(const float *m, int cout, const float *y, size_t ys, const float *mb, float *x,
               size_t xs)
{
    v8 a[8], b[8];
    for (int k = 0; k < 8; k++)
        a[k] = b[k] = (v8){0};
    for (int o = 0; o < cout; o++) {
        const v8 yv = ld8(y + o * ys), yw = ld8(y + o * ys + 8);
        for (int k = 0; k < 8; k++) {
            const float q = m[(size_t)k * cout + o];
            a[k] += q * yv;
            b[k] += q * yw;
        }
    }
    for (int k = 0; k < 8; k++) {
        st8(x + k * xs, a[k] - mb[k]);
        st8(x + k * xs + 8, b[k] - mb[k]);
    }
}

/* 1x1 kernel: x[c] = sum_o M[c][o] (y[o] - bias[o]) per pixel, M real
 * (A(f) = W at every frequency, so the imaginary part is 0). */
AS__CIV_CLONES
static void restore_pointwise(const as__civ *ci, int n, const float *y,
                              const float *bias, float *x)
{
    const as__civ_geom *g = &ci->g;
    const int cin = g->cin, cout = g->cout, H = g->h, W = g->w;
    const int ho = ci->ho, wo = ci->wo;
    const float *m = ci->m;   /* (Cin, Cout), real part */
    float mb[64];             /* M bias, per input channel (blocks of 64) */
    /* Padding 0 (Y and X have the same layout): each channel plane as one
     * row of H*W pixels, so the vector loops have no short row tails. */
    const int flat = ci->dh == 0 && ci->dw == 0 && ho == H && wo == W;
    const int nrow = flat ? 1 : H, rw = flat ? H * W : W;
    for (int img = 0; img < n; img++)
        for (int c0 = 0; c0 < cin; c0 += 64) {
            const int cn = cin - c0 < 64 ? cin - c0 : 64;
            for (int c = 0; c < cn; c++) {
                double s = 0;
                if (bias)
                    for (int o = 0; o < cout; o++)
                        s += (double)m[(size_t)(c0 + c) * cout + o] * bias[o];
                mb[c] = (float)s;
            }
            for (int r = 0; r < nrow; r++) {
                const float *yr = y + (size_t)img * cout * ho * wo +
                                  (ptrdiff_t)(r - ci->dh) * wo - ci->dw;

                const size_t ys = (size_t)ho * wo;
                float *xr = x + ((size_t)img * cin + c0) * H * W + (size_t)r * rw;
                int s0 = 0;
                /* 16 pixels x 8 channels: 16 accumulators, 2 loads and 8
                 * weights per output channel; then 16 x 4 */
                for (; s0 + 16 <= rw; s0 += 16) {
                    int c = 0;
                    for (; c + 8 <= cn; c += 8)
                        pointwise_16x8(m + (size_t)(c0 + c) * cout, cout, yr + s0, ys,
                                       mb + c, xr + (size_t)c * H * W + s0, (size_t)H * W);
                    for (; c + 4 <= cn; c += 4) {
                        const float *m0 = m + (size_t)(c0 + c) * cout;
                        v8 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
                        v8 b0 = {0}, b1 = {0}, b2 = {0}, b3 = {0};
                        for (int o = 0; o < cout; o++) {
                            const v8 yv = ld8(yr + o * ys + s0), yw = ld8(yr + o * ys + s0 + 8);
                            const float q0 = m0[o], q1 = m0[cout + o];
                            const float q2 = m0[2 * cout + o], q3 = m0[3 * cout + o];
                            a0 += q0 * yv; b0 += q0 * yw;
                            a1 += q1 * yv; b1 += q1 * yw;
                            a2 += q2 * yv; b2 += q2 * yw;
                            a3 += q3 * yv; b3 += q3 * yw;
                        }
                        float *xd = xr + (size_t)c * H * W + s0;
                        st8(xd, a0 - mb[c]); st8(xd + 8, b0 - mb[c]);
                        xd += (size_t)H * W;
                        st8(xd, a1 - mb[c + 1]); st8(xd + 8, b1 - mb[c + 1]);
                        xd += (size_t)H * W;
                        st8(xd, a2 - mb[c + 2]); st8(xd + 8, b2 - mb[c + 2]);
                        xd += (size_t)H * W;
                        st8(xd, a3 - mb[c + 3]); st8(xd + 8, b3 - mb[c + 3]);
                    }
                    for (; c < cn; c++) {
                        const float *mc = m + (size_t)(c0 + c) * cout;
                        v8 acc = {0}, acd = {0};
                        for (int o = 0; o < cout; o++) {
                            acc += mc[o] * ld8(yr + o * ys + s0);
                            acd += mc[o] * ld8(yr + o * ys + s0 + 8);
                        }
                        st8(xr + (size_t)c * H * W + s0, acc - mb[c]);
                        st8(xr + (size_t)c * H * W + s0 + 8, acd - mb[c]);
                    }
                }
                for (; s0 + 8 <= rw; s0 += 8) {
                    int c = 0;
                    for (; c + 4 <= cn; c += 4) {
                        const float *m0 = m + (size_t)(c0 + c) * cout;
                        v8 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
                        for (int o = 0; o < cout; o++) {
                            const v8 yv = ld8(yr + o * ys + s0);
                            a0 += m0[o] * yv;
                            a1 += m0[cout + o] * yv;
                            a2 += m0[2 * cout + o] * yv;
                            a3 += m0[3 * cout + o] * yv;
                        }
                        float *xd = xr + (size_t)c * H * W + s0;
                        st8(xd, a0 - mb[c]);
                        st8(xd + (size_t)H * W, a1 - mb[c + 1]);
                        st8(xd + (size_t)2 * H * W, a2 - mb[c + 2]);
                        st8(xd + (size_t)3 * H * W, a3 - mb[c + 3]);
                    }
                    for (; c < cn; c++) {
                        const float *mc = m + (size_t)(c0 + c) * cout;
                        v8 acc = {0};
                        for (int o = 0; o < cout; o++)
                            acc += mc[o] * ld8(yr + o * ys + s0);
                        st8(xr + (size_t)c * H * W + s0, acc - mb[c]);
                    }
                }
                for (; s0 < rw; s0++)   /* tail columns */
                    for (int c = 0; c < cn; c++) {
                        const float *mc = m + (size_t)(c0 + c) * cout;
                        float acc = 0;
                        for (int o = 0; o < cout; o++)
                            acc += mc[o] * yr[o * ys + s0];
                        xr[(size_t)c * H * W + s0] = acc - mb[c];
                    }
            }
        }
}

/* The border points of grid row a of F (outside the Y window): the
 * correlation of W with the frame. xf holds the frame pixels, one planar
 * element each ([re|im][Cin][NB]); fidx maps pixel r*W+q to its element or
 * -1. One accumulator per (point, re|im, 4 output channels, 8 lanes) runs
 * over all taps and input channels. R: the row, element b at R + b*Eo. */
AS__CIV_CLONES
void as__civ_border_row(const as__civ *ci, const float *xf, const int *fidx,
                       int a, float *R, int NB)
{
    const as__civ_geom *g = &ci->g;
    const int H = g->h, W = g->w, kh = g->kh, kw = g->kw;
    const int cin = g->cin, cout = g->cout;
    const size_t Bi = (size_t)cin * NB, Bo = (size_t)cout * NB;
    const int Ql = W + kw - 1;
    const int in_rows = a - ci->dh >= 0 && a - ci->dh < ci->ho;
    const float *taps[256];
    const float *wtap[256];
    for (int b = 0; b < Ql; b++) {
        if (in_rows && b - ci->dw >= 0 && b - ci->dw < ci->wo) {
            b = ci->dw + ci->wo - 1;   /* jump over the window */
            continue;
        }
        int nt = 0;
        for (int u = 0; u < kh; u++) {
            const int r = a - (kh - 1) + u;
            if (r < 0 || r >= H)
                continue;
            for (int v = 0; v < kw; v++) {
                const int q = b - (kw - 1) + v;
                if (q < 0 || q >= W || fidx[r * W + q] < 0)
                    continue;   /* off the image, or not a frame pixel (0) */
                taps[nt] = xf + (size_t)fidx[r * W + q] * 2 * Bi;
                wtap[nt] = ci->wt + ((size_t)u * kw + v) * cout * cin;
                nt++;
            }
        }
        float *fe = R + (size_t)b * 2 * Bo;
        if (!nt)
            continue;   /* stays 0 */
        for (int ri = 0; ri < 2; ri++)
            for (int l0 = 0; l0 < NB; l0 += 8) {
                int o = 0;
                for (; o + 4 <= cout; o += 4)
                    as__civ_taps_dot4(nt, wtap, (size_t)o * cin, taps, ri * Bi + l0, cin, NB,
                              fe + ri * Bo + (size_t)o * NB + l0);
                for (; o < cout; o++) {
                    v8 acc = {0};
                    for (int t = 0; t < nt; t++) {
                        const float *w0 = wtap[t] + (size_t)o * cin;
                        const float *src = taps[t] + ri * Bi + l0;
                        for (int c = 0; c < cin; c++)
                            acc += w0[c] * ld8(src + (size_t)c * NB);
                    }
                    st8(fe + ri * Bo + (size_t)o * NB + l0, acc);
                }
            }
    }
}

/* Pixels j..j+7 of 8 rows (NULL: an image the pass lacks, zeros) as 8
 * vectors, transposed: r[k] holds pixel j+k of the 8 rows. */
static inline void load_t8(const float *const ys[8], int j, v8 r[8])
{
    for (int k = 0; k < 8; k++)
        if (ys[k])
            r[k] = ld8(ys[k] + j);
        else
            r[k] = (v8){0};
    AS__CIV_T8(r);
}

/* Y row i (minus bias) into a grid row R (element b at R + b*Eo,
 * [re|im][Cout][NB]): 8 lanes (images) at a time, one vector store per
 * pixel. Image j + ri*N2 is lane j of half ri. */
AS__CIV_CLONES
void as__civ_scatter_yrow(const as__civ *ci, int n, const float *y, const float *bias,
                         int i, float *R, int NB)
{
    const int cout = ci->g.cout, ho = ci->ho, wo = ci->wo, N2 = (n + 1) / 2;
    const int Ql = ci->g.w + ci->g.kw - 1;
    const size_t Bo = (size_t)cout * NB, Eo = 2 * Bo;
    int j0 = -ci->dw > 0 ? -ci->dw : 0, j1 = Ql - ci->dw < wo ? Ql - ci->dw : wo;
    const float *yend = y + (size_t)n * cout * ho * wo;
    for (int ri = 0; ri < 2; ri++)
        for (int l0 = 0; l0 < N2; l0 += 8)
            for (int o = 0; o < cout; o++) {
                const float bo = bias ? bias[o] : 0.0f;
                const float *ys[8];
                for (int k = 0; k < 8; k++) {
                    const int img = l0 + k + ri * N2;
                    ys[k] = l0 + k < N2 && img < n
                                ? y + (((size_t)img * cout + o) * ho + i) * wo : NULL;
                }
                float *dst = R + ri * Bo + (size_t)o * NB + l0;
                int j = j0;
                /* 8 pixels of 8 images at a time: 8 row loads, a transpose,
                 * 8 lane stores (missing images read zeros) */
                for (; j + 8 <= j1; j += 8) {
                    v8 r[8];
                    load_t8(ys, j, r);
                    for (int k = 0; k < 8; k++)
                        st8(dst + (size_t)(j + k + ci->dw) * Eo, r[k] - bo);
                }
                /* the last < 8 pixels the same way when the 8-float loads
                 * stay inside y (they read into the next row; those
                 * columns are not stored) */
                int tail_ok = j < j1;
                for (int k = 0; k < 8; k++)
                    tail_ok &= !ys[k] || ys[k] + j + 8 <= yend;
                if (tail_ok) {
                    v8 r[8];
                    load_t8(ys, j, r);
                    for (int k = 0; k < j1 - j; k++)
                        st8(dst + (size_t)(j + k + ci->dw) * Eo, r[k] - bo);
                    j = j1;
                }
                for (; j < j1; j++) {
                    v8 v;
                    for (int k = 0; k < 8; k++)
                        v[k] = ys[k] ? ys[k][j] - bo : 0.0f;
                    st8(dst + (size_t)(j + ci->dw) * Eo, v);
                }
            }
}

/* Row r of x from an inverse-transformed row (element q at Rx + q*Ei),
 * scaled: one vector load per pixel, 8 images at a time. */
AS__CIV_CLONES
static void crop_row(const as__civ *ci, int n, const float *Rx, int r, float scale,
                     float *x, int NB)
{
    const int cin = ci->g.cin, H = ci->g.h, W = ci->g.w, N2 = (n + 1) / 2;
    const size_t Bi = (size_t)cin * NB, Ei = 2 * Bi;
    for (int ri = 0; ri < 2; ri++)
        for (int l0 = 0; l0 < N2; l0 += 8)
            for (int c = 0; c < cin; c++) {
                float *xd[8];
                for (int k = 0; k < 8; k++) {
                    const int img = l0 + k + ri * N2;
                    xd[k] = l0 + k < N2 && img < n
                                ? x + (((size_t)img * cin + c) * H + r) * W : NULL;
                }
                const float *src = Rx + ri * Bi + (size_t)c * NB + l0;
                int q = 0;
                for (; q + 8 <= W; q += 8) {
                    v8 t[8];
                    for (int k = 0; k < 8; k++)
                        t[k] = ld8(src + (size_t)(q + k) * Ei) * scale;
                    AS__CIV_T8(t);
                    for (int k = 0; k < 8; k++)
                        if (xd[k])
                            st8(xd[k] + q, t[k]);
                }
                for (; q < W; q++) {
                    const v8 v = ld8(src + (size_t)q * Ei) * scale;
                    for (int k = 0; k < 8; k++)
                        if (xd[k])
                            xd[k][q] = v[k];
                }
            }
}

/* Frame pixel index of every image pixel (-1 off the frame), in the order
 * of as__civ_frame_extract. */
static void frame_index(const as__civ *ci, int *fidx)
{
    const int H = ci->g.h, W = ci->g.w;
    int k = 0;
    for (int i = 0; i < H * W; i++)
        fidx[i] = -1;
    for (int r = 0; r < ci->top; r++)
        for (int q = 0; q < W; q++) fidx[r * W + q] = k++;
    for (int r = H - ci->bot; r < H; r++)
        for (int q = 0; q < W; q++) fidx[r * W + q] = k++;
    for (int r = ci->top; r < H - ci->bot; r++) {
        for (int q = 0; q < ci->left; q++) fidx[r * W + q] = k++;
        for (int q = W - ci->right; q < W; q++) fidx[r * W + q] = k++;
    }
}

/* The frame of n images into xf, one planar element per frame pixel
 * ([re|im][Cin][NB], image j + ri*N2 in lane j of half ri; lanes without
 * an image 0), and the frame index of every image pixel into fidx; nothing
 * when there is no frame. 8 pixels of 8 images at a time: 8 row loads, a
 * transpose, 8 lane stores (not one strided scalar store per pixel). */
AS__CIV_CLONES
void as__civ_frame_pack(const as__civ *ci, int n, const float *frame, float *xf,
                       int *fidx, int NB)
{
    const int cin = ci->g.cin, N2 = (n + 1) / 2;
    const size_t Bi = (size_t)cin * NB, Ei = 2 * Bi;
    const size_t flen = as__civ_frame_len(&ci->g);
    if (!flen)
        return;
    for (int ri = 0; ri < 2; ri++)
        for (int l0 = 0; l0 < NB; l0 += 8)
            for (int c = 0; c < cin; c++) {
                const float *fs[8];
                for (int k = 0; k < 8; k++) {
                    const int np = l0 + k, img = np + ri * N2;
                    fs[k] = np < N2 && img < n ? frame + ((size_t)img * cin + c) * flen : NULL;
                }
                float *base = xf + ri * Bi + (size_t)c * NB + l0;
                size_t k = 0;
                for (; k + 8 <= flen; k += 8) {
                    v8 r[8];
                    load_t8(fs, (int)k, r);
                    for (int q = 0; q < 8; q++)
                        st8(base + (k + q) * Ei, r[q]);
                }
                for (; k < flen; k++) {
                    v8 v;
                    for (int q = 0; q < 8; q++)
                        v[q] = fs[q] ? fs[q][k] : 0.0f;
                    st8(base + k * Ei, v);
                }
            }
    frame_index(ci, fidx);
}


/* Bytes of work space of a restore of n images (one pass). Both paths
 * share the layout; the solved spectrum X goes in place of G (element
 * stride Eo), and the adjoint path needs one more element (A^H F^) and a
 * larger factor per frequency (A^H and the Cholesky factor). */
size_t as__civ_work_need(const as__civ *ci, int n, int path)
{
    const as__civ_geom *g = &ci->g;
    const size_t P = (size_t)ci->P, Q = (size_t)ci->Q;
    const size_t N2 = ((size_t)n + 1) / 2, NB = (N2 + 7) / 8 * 8;
    const size_t Eo = 2 * (size_t)g->cout * NB, Ei = 2 * (size_t)g->cin * NB;
    const size_t flen = as__civ_frame_len(g), f4 = sizeof(float);
    if (g->cin == 1)
        return as__civ_c1_work_need(ci, n);
    return as__civ_wround(f4 * (flen ? flen : 1) * Ei) +
           as__civ_wround(sizeof(int) * (size_t)g->h * g->w) +
           as__civ_wround(f4 * P * as__civ_grid_rs(Q, Eo)) + as__civ_wround(f4 * Q * Eo) +
           as__civ_wround(f4 * 2 * P * (Eo + Ei)) +
           as__civ_wround(f4 * (path == AS__CIV_PATH_ADJ ? Ei : 1)) +
           as__civ_wround(f4 * as__civ_msz(g, path) * P);
}


/* The frame of one image and channel (flen floats) into its place in an
 * image of rows `stride` floats apart. */
void as__civ_frame_put_one(const as__civ *ci, const float *fr, float *xd, size_t stride)
{
    const int H = ci->g.h, W = ci->g.w;
    for (int r = 0; r < ci->top; r++, fr += W)
        memcpy(xd + (size_t)r * stride, fr, sizeof(float) * W);
    for (int r = H - ci->bot; r < H; r++, fr += W)
        memcpy(xd + (size_t)r * stride, fr, sizeof(float) * W);
    for (int r = ci->top; r < H - ci->bot; r++) {
        memcpy(xd + (size_t)r * stride, fr, sizeof(float) * ci->left);
        fr += ci->left;
        memcpy(xd + (size_t)r * stride + W - ci->right, fr, sizeof(float) * ci->right);
        fr += ci->right;
    }
}

/* The exact frame pixels back into x. */
void as__civ_frame_put_back(const as__civ *ci, int n, const float *frame, float *x)
{
    const int H = ci->g.h, W = ci->g.w, cin = ci->g.cin;
    const size_t flen = as__civ_frame_len(&ci->g);
    if (!flen)
        return;
    for (int img = 0; img < n; img++)
        for (int c = 0; c < cin; c++)
            as__civ_frame_put_one(ci, frame + ((size_t)img * cin + c) * flen,
                                  x + ((size_t)img * cin + c) * H * W, (size_t)W);
}

/* The restore; fc != NULL: factor each column of frequencies inside the
 * solve (nothing cached), else use the cached factor ci->m.
 *
 * Passes over memory (grid G: P x Q elements of Eo floats, X: P x Q of Ei):
 *   rows:    per grid row a < Pl, build F's row in a cache-sized buffer (Y
 *            window and frame border), FFT along Q into G's row;
 *   columns: per pair of columns (kq, Q-kq): FFT along P into a column
 *            buffer, solve every frequency of both columns (the mirror with
 *            conj(M), real weights), inverse FFT along P into X's columns;
 *   rows:    per row a < H of X, inverse FFT along Q into a row buffer,
 *            crop, scale and unpair into x. */
/* The common end of both restore paths. X holds the solved spectrum with
 * the P-direction transform undone (row r at X + r * rs), R a row of
 * scratch (Q * Ei floats):
 * per row of X, the inverse FFT along Q, crop, scale and unpair into x;
 * then the kept frame goes back in place. t_ifft: inverse-FFT time so far. */
void as__civ_finish_rows(as__civ *ci, int n, const float *X, size_t ex, size_t rs, float *R,
                         const float *frame, float *x, int NB, double t_ifft)
{
    const int H = ci->g.h, P = ci->P, Q = ci->Q;
    const size_t Bi = (size_t)ci->g.cin * NB, Ei = 2 * Bi;
    const float scale = 1.0f / ((float)P * (float)Q);
    double t_crop = 0;
    for (int r = 0; r < H; r++) {
        double ta = as__civ_now_ms();
        as__civ_fft_run(&ci->iq, R, Ei, X + (size_t)r * rs, ex, Bi);
        double tb = as__civ_now_ms();
        crop_row(ci, n, R, r, scale, x, NB);
        t_ifft += tb - ta;
        t_crop += as__civ_now_ms() - tb;
    }
    ci->st.phase_ms[3] = t_ifft;
    double te = as__civ_now_ms();
    as__civ_frame_put_back(ci, n, frame, x);
    ci->st.phase_ms[4] = t_crop + as__civ_now_ms() - te;
    ci->st.restores++;
}

/* One frequency's solve by the path's factor (sign -1: the conjugate
 * frequency with the same factor). */
static inline void solve_freq(int path, const float *mf, size_t msz, float sign,
                              const float *f, float *tz, float *xout, int cin, int cout,
                              int NB)
{
    if (path == AS__CIV_PATH_ADJ)
        as__civ_adjoint_freq(mf, sign, f, tz, xout, cin, cout, NB);
    else if (path == AS__CIV_PATH_LU)
        as__civ_lu_solve_freq(mf, sign, f, xout, cin, NB);
    else
        as__civ_solve_freq(mf, mf + msz / 2, sign, f, xout, cin, cout, NB);
}

static int restore_impl(as__civ *ci, as__civ_fctx *fc, int path, uint64_t version, int n,
                        const float *y,
                        const float *bias, const float *frame, float *x)
{
    if (ci->pointwise) {
        double t0 = as__civ_now_ms();
        restore_pointwise(ci, n, y, bias, x);
        memset(ci->st.phase_ms, 0, sizeof ci->st.phase_ms);
        ci->st.phase_ms[2] = as__civ_now_ms() - t0;
        ci->st.restores++;
        return 0;
    }
    const as__civ_geom *g = &ci->g;
    const int H = g->h, W = g->w, P = ci->P, Q = ci->Q, Qh = ci->Qh;
    const int cin = g->cin, cout = g->cout, ho = ci->ho;
    const int N2 = (n + 1) / 2, NB = (N2 + 7) / 8 * 8;
    const size_t Bo = (size_t)cout * NB, Bi = (size_t)cin * NB;
    const size_t Eo = 2 * Bo, Ei = 2 * Bi;
    const int Pl = H + g->kh - 1;
    const size_t flen = as__civ_frame_len(g);
    const size_t msz = as__civ_msz(g, path);
    const int adj = path == AS__CIV_PATH_ADJ;
    if (cin == 1)
        return as__civ_restore_c1(ci, version, n, y, bias, frame, x);
    as__civ_work wk;
    if (as__civ_work_begin(ci, &wk, as__civ_work_need(ci, n, path)))
        return AS_ENOMEM;
    float *xf = as__civ_wtake(&wk, sizeof(float) * (flen ? flen : 1) * Ei);
    int *fidx = as__civ_wtake(&wk, sizeof(int) * (size_t)H * W);
    const size_t rs = as__civ_grid_rs(Q, Eo);   /* G's row stride */
    float *G = as__civ_wtake(&wk, sizeof(float) * (size_t)P * rs);
    float *R = as__civ_wtake(&wk, sizeof(float) * (size_t)Q * Eo);          /* a row */
    float *C = as__civ_wtake(&wk, sizeof(float) * (size_t)2 * P * (Eo + Ei)); /* 2 columns */
    float *tz = as__civ_wtake(&wk, sizeof(float) * (adj ? Ei : 1));       /* A^H F^ */
    float *mblk = as__civ_wtake(&wk, sizeof(float) * msz * P);
    /* The column pass reads both columns of G before it writes them: the
     * solved spectrum X in place of G (element stride Eo, first Ei floats). */
    float *X = G;
    double t_fft = 0, t_build = 0;

    /* The frame, one planar element per frame pixel. */
    as__civ_frame_pack(ci, n, frame, xf, fidx, NB);

    /* Rows: build F row by row, FFT along Q into G. */
    for (int a = 0; a < Pl; a++) {
        double t0 = as__civ_now_ms();
        memset(R, 0, sizeof(float) * (size_t)Q * Eo);
        const int i = a - ci->dh;   /* Y row */
        if (i >= 0 && i < ho)
            as__civ_scatter_yrow(ci, n, y, bias, i, R, NB);
        if (flen)
            as__civ_border_row(ci, xf, fidx, a, R, NB);
        double t1 = as__civ_now_ms();
        as__civ_fft_run(&ci->fq, G + (size_t)a * rs, Eo, R, Eo, Bo);
        t_build += t1 - t0;
        t_fft += as__civ_now_ms() - t1;
    }
    if (Pl < P)
        memset(G + (size_t)Pl * rs, 0, sizeof(float) * (size_t)(P - Pl) * rs);
    ci->st.phase_ms[0] = t_build;
    double t_solve = 0, t_ifft = 0;

    /* Columns: forward FFT, solve, inverse FFT, a pair at a time. */
    float *Cf[2] = {C, C + (size_t)P * Eo};                 /* spectra of F */
    float *Cx[2] = {C + (size_t)2 * P * Eo, C + (size_t)2 * P * Eo + (size_t)P * Ei};
    for (int kq = 0; kq < Qh; kq++) {
        const int mq = (Q - kq) % Q, pair = mq != kq;
        const int cols[2] = {kq, mq};
        double t0 = as__civ_now_ms();
        for (int k = 0; k <= pair; k++)
            as__civ_fft_run(&ci->fp, Cf[k], Eo, G + (size_t)cols[k] * Eo, rs, Bo);
        double t1 = as__civ_now_ms();
        const float *mcol;
        if (fc && ci->mstream) {
            mcol = ci->mstream + (size_t)kq * P * msz;
        } else if (fc) {
            as__civ_factor_range(fc, (size_t)kq * P, (size_t)(kq + 1) * P,
                                 ci->cfg.eps_rel, mblk, NULL);
            mcol = mblk;
        } else {
            mcol = ci->m + (size_t)kq * P * msz;
        }
        for (int kp = 0; kp < P; kp++) {
            const float *mf = mcol + (size_t)kp * msz;
            /* (-kp, -kq) = ((P-kp)%P, mq) with the conjugate factor */
            const int mp = (P - kp) % P;
            solve_freq(path, mf, msz, 1.0f, Cf[0] + (size_t)kp * Eo, tz,
                       Cx[0] + (size_t)kp * Ei, cin, cout, NB);
            if (pair)
                solve_freq(path, mf, msz, -1.0f, Cf[1] + (size_t)mp * Eo, tz,
                           Cx[1] + (size_t)mp * Ei, cin, cout, NB);
        }
        double t2 = as__civ_now_ms();
        for (int k = 0; k <= pair; k++)
            as__civ_fft_run(&ci->ip, X + (size_t)cols[k] * Eo, rs, Cx[k], Ei, Bi);
        t_fft += t1 - t0;
        t_solve += t2 - t1;
        t_ifft += as__civ_now_ms() - t2;
    }
    ci->st.phase_ms[1] = t_fft;
    ci->st.phase_ms[2] = t_solve;

    as__civ_finish_rows(ci, n, X, Eo, rs, R, frame, x, NB, t_ifft);
    free(wk.own);
    return 0;
}

int as__civ_restore_passes(as__civ *ci, as__civ_fctx *fc, int path, int chunk,
                           uint64_t version, int n, const float *y, const float *bias,
                           const float *frame, float *x)
{
    if (ci->pointwise || n <= chunk)
        return restore_impl(ci, fc, path, version, n, y, bias, frame, x);
    const as__civ_geom *g = &ci->g;
    const size_t ys = (size_t)g->cout * ci->ho * ci->wo, xs = (size_t)g->cin * g->h * g->w;
    const size_t fs = (size_t)g->cin * as__civ_frame_len(g);
    double ph[5] = {0};
    for (int i0 = 0; i0 < n; i0 += chunk) {
        const int m = n - i0 < chunk ? n - i0 : chunk;
        const float *fr = frame && fs ? frame + (size_t)i0 * fs : frame;
        int rc = restore_impl(ci, fc, path, version, m, y + (size_t)i0 * ys, bias, fr,
                              x + (size_t)i0 * xs);
        if (rc)
            return rc;
        ci->st.restores--;
        for (int k = 0; k < 5; k++)
            ph[k] += ci->st.phase_ms[k];
    }
    memcpy(ci->st.phase_ms, ph, sizeof ph);
    ci->st.restores++;
    return 0;
}

/*
 * Batched mixed-radix (2, 3, 4, 5) complex FFT for the conv inversion.
 *
 * Why not kissfft's own transforms: the inversion transforms thousands of
 * small images (N/2 * Cout of them) of the same size. kissfft transforms one
 * signal at a time with scalar arithmetic. Here an "element" of the signal is
 * a whole planar vector of B lanes (B real parts, then B imaginary parts), so
 * every butterfly is a loop over contiguous lanes with one scalar twiddle,
 * which the compiler vectorizes (the same twiddle multiplies every lane). The
 * structure (recursive decimation in time, out of place into the output,
 * butterflies in place there) is the textbook mixed-radix Cooley-Tukey.
 */
#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "store/policies/conv_invert.h"

int as__civ_fft_good_size(int n)
{
    if (n < 1)
        return 1;
    for (int m = n;; m++) {
        int r = m;
        while (r % 2 == 0) r /= 2;
        while (r % 3 == 0) r /= 3;
        while (r % 5 == 0) r /= 5;
        if (r == 1)
            return m;
    }
}

int as__civ_fft_init(as__civ_fft *f, int n, int sign)
{
    assert(n >= 1 && (sign == 1 || sign == -1));
    memset(f, 0, sizeof *f);
    f->n = n;
    /* Factor: 4s first, then 2, 3, 5 (the order the recursion applies). */
    int r = n, p = 4, k = 0;
    while (r > 1) {
        while (r % p) {
            if (p == 4) p = 2;
            else if (p == 2) p = 3;
            else if (p == 3) p = 5;
            else return AS_EINVAL;   /* not 2,3,5-smooth */
        }
        r /= p;
        if (k + 2 > (int)(sizeof f->fact / sizeof f->fact[0]))
            return AS_EINVAL;
        f->fact[k++] = p;
        f->fact[k++] = r;
    }
    if (n == 1) {   /* a length-1 transform is a copy */
        f->fact[k++] = 1;
        f->fact[k++] = 1;
    }
    f->nfact = k / 2;
    f->tw = malloc(sizeof(float) * 2 * (size_t)n);
    if (!f->tw)
        return AS_ENOMEM;
    for (int j = 0; j < n; j++) {
        double a = sign * 2.0 * M_PI * j / n;
        f->tw[2 * j] = (float)cos(a);
        f->tw[2 * j + 1] = (float)sin(a);
    }
    f->sign = sign;
    return 0;
}

void as__civ_fft_free(as__civ_fft *f)
{
    if (f) {
        free(f->tw);
        f->tw = NULL;
    }
}

/* x * (wr + i wi), in place on one planar element. */
static inline void twiddle(float *restrict e, size_t B, float wr, float wi)
{
    float *restrict re = e, *restrict im = e + B;
    for (size_t b = 0; b < B; b++) {
        float xr = re[b], xi = im[b];
        re[b] = xr * wr - xi * wi;
        im[b] = xr * wi + xi * wr;
    }
}

AS__CIV_CLONES
static void bfly2(float *out, size_t os, int m, int fstride, const float *tw, size_t B)
{
    for (int k = 0; k < m; k++) {
        float *restrict a = out + (size_t)k * os;
        float *restrict c = out + (size_t)(k + m) * os;
        const float wr = tw[2 * k * fstride], wi = tw[2 * k * fstride + 1];
        for (size_t b = 0; b < B; b++) {
            float xr = c[b] * wr - c[B + b] * wi;
            float xi = c[b] * wi + c[B + b] * wr;
            c[b] = a[b] - xr;
            c[B + b] = a[B + b] - xi;
            a[b] += xr;
            a[B + b] += xi;
        }
    }
}

AS__CIV_CLONES
static void bfly4(float *out, size_t os, int m, int fstride, const float *tw,
                  size_t B, float sign)
{
    for (int k = 0; k < m; k++) {
        float *restrict e0 = out + (size_t)k * os;
        float *restrict e1 = out + (size_t)(k + m) * os;
        float *restrict e2 = out + (size_t)(k + 2 * m) * os;
        float *restrict e3 = out + (size_t)(k + 3 * m) * os;
        /* twiddles applied in the same pass (k = 0: all 1) */
        const float w1r = tw[2 * k * fstride], w1i = tw[2 * k * fstride + 1];
        const float w2r = tw[4 * k * fstride], w2i = tw[4 * k * fstride + 1];
        const float w3r = tw[6 * k * fstride], w3i = tw[6 * k * fstride + 1];
        for (size_t b = 0; b < B; b++) {
            const float x1r = e1[b] * w1r - e1[B + b] * w1i, x1i = e1[b] * w1i + e1[B + b] * w1r;
            const float x2r = e2[b] * w2r - e2[B + b] * w2i, x2i = e2[b] * w2i + e2[B + b] * w2r;
            const float x3r = e3[b] * w3r - e3[B + b] * w3i, x3i = e3[b] * w3i + e3[B + b] * w3r;
            float s0r = e0[b] + x2r, s0i = e0[B + b] + x2i;
            float s1r = e0[b] - x2r, s1i = e0[B + b] - x2i;
            float s2r = x1r + x3r, s2i = x1i + x3i;
            float s3r = x1r - x3r, s3i = x1i - x3i;
            /* w * s3 with w = sign * i */
            float ur = -sign * s3i, ui = sign * s3r;
            e0[b] = s0r + s2r; e0[B + b] = s0i + s2i;
            e2[b] = s0r - s2r; e2[B + b] = s0i - s2i;
            e1[b] = s1r + ur;  e1[B + b] = s1i + ui;
            e3[b] = s1r - ur;  e3[B + b] = s1i - ui;
        }
    }
}

AS__CIV_CLONES
static void bfly3(float *out, size_t os, int m, int fstride, const float *tw,
                  size_t B, float sign)
{
    const float h = sign * 0.86602540378443864676f;   /* sign * sqrt(3)/2 */
    for (int k = 0; k < m; k++) {
        float *restrict e0 = out + (size_t)k * os;
        float *restrict e1 = out + (size_t)(k + m) * os;
        float *restrict e2 = out + (size_t)(k + 2 * m) * os;
        const float w1r = tw[2 * k * fstride], w1i = tw[2 * k * fstride + 1];
        const float w2r = tw[4 * k * fstride], w2i = tw[4 * k * fstride + 1];
        for (size_t b = 0; b < B; b++) {
            const float x1r = e1[b] * w1r - e1[B + b] * w1i, x1i = e1[b] * w1i + e1[B + b] * w1r;
            const float x2r = e2[b] * w2r - e2[B + b] * w2i, x2i = e2[b] * w2i + e2[B + b] * w2r;
            float tr = x1r + x2r, ti = x1i + x2i;
            float dr = x1r - x2r, di = x1i - x2i;
            float cr = e0[b] - 0.5f * tr, cI = e0[B + b] - 0.5f * ti;
            e0[b] += tr;
            e0[B + b] += ti;
            /* +- i h d */
            e1[b] = cr - h * di; e1[B + b] = cI + h * dr;
            e2[b] = cr + h * di; e2[B + b] = cI - h * dr;
        }
    }
}

AS__CIV_CLONES
static void bfly5(float *out, size_t os, int m, int fstride, const float *tw,
                  size_t B, float sign)
{
    const float c1 = 0.30901699437494742410f, c2 = -0.80901699437494742410f;
    const float s1 = sign * 0.95105651629515357212f;
    const float s2 = sign * 0.58778525229247312917f;
    for (int k = 0; k < m; k++) {
        float *restrict e0 = out + (size_t)k * os;
        float *restrict e1 = out + (size_t)(k + m) * os;
        float *restrict e2 = out + (size_t)(k + 2 * m) * os;
        float *restrict e3 = out + (size_t)(k + 3 * m) * os;
        float *restrict e4 = out + (size_t)(k + 4 * m) * os;
        if (k) {
            for (int q = 1; q < 5; q++)
                twiddle(out + (size_t)(k + q * m) * os, B,
                        tw[2 * q * k * fstride], tw[2 * q * k * fstride + 1]);
        }
        for (size_t b = 0; b < B; b++) {
            float t1r = e1[b] + e4[b], t1i = e1[B + b] + e4[B + b];
            float t2r = e2[b] + e3[b], t2i = e2[B + b] + e3[B + b];
            float d1r = e1[b] - e4[b], d1i = e1[B + b] - e4[B + b];
            float d2r = e2[b] - e3[b], d2i = e2[B + b] - e3[B + b];
            float ar = e0[b], ai = e0[B + b];
            float p1r = ar + c1 * t1r + c2 * t2r, p1i = ai + c1 * t1i + c2 * t2i;
            float p2r = ar + c2 * t1r + c1 * t2r, p2i = ai + c2 * t1i + c1 * t2i;
            float q1r = s1 * d1r + s2 * d2r, q1i = s1 * d1i + s2 * d2i;
            float q2r = s2 * d1r - s1 * d2r, q2i = s2 * d1i - s1 * d2i;
            e0[b] = ar + t1r + t2r; e0[B + b] = ai + t1i + t2i;
            /* y1,4 = p1 +- i q1 ; y2,3 = p2 +- i q2 */
            e1[b] = p1r - q1i; e1[B + b] = p1i + q1r;
            e4[b] = p1r + q1i; e4[B + b] = p1i - q1r;
            e2[b] = p2r - q2i; e2[B + b] = p2i + q2r;
            e3[b] = p2r + q2i; e3[B + b] = p2i - q2r;
        }
    }
}

/* The last stage (m == 1: no twiddles) reading its p inputs where they
 * are, instead of copying them to the output first. x[j] = in + j * s. */
AS__CIV_CLONES
static int leaf(int p, float *out, size_t os, const float *in, size_t s, size_t B,
                float sign)
{
    float *restrict o0 = out, *restrict o1 = out + os, *restrict o2 = out + 2 * os;
    const float *restrict x0 = in, *restrict x1 = in + s, *restrict x2 = in + 2 * s;
    switch (p) {
    case 2:
        for (size_t b = 0; b < B; b++) {
            const float ar = x0[b], ai = x0[B + b], cr = x1[b], ci = x1[B + b];
            o0[b] = ar + cr; o0[B + b] = ai + ci;
            o1[b] = ar - cr; o1[B + b] = ai - ci;
        }
        return 1;
    case 3: {
        const float h = sign * 0.86602540378443864676f;
        for (size_t b = 0; b < B; b++) {
            const float tr = x1[b] + x2[b], ti = x1[B + b] + x2[B + b];
            const float dr = x1[b] - x2[b], di = x1[B + b] - x2[B + b];
            const float cr = x0[b] - 0.5f * tr, cI = x0[B + b] - 0.5f * ti;
            o0[b] = x0[b] + tr; o0[B + b] = x0[B + b] + ti;
            o1[b] = cr - h * di; o1[B + b] = cI + h * dr;
            o2[b] = cr + h * di; o2[B + b] = cI - h * dr;
        }
        return 1;
    }
    case 4: {
        float *restrict o3 = out + 3 * os;
        const float *restrict x3 = in + 3 * s;
        for (size_t b = 0; b < B; b++) {
            const float s0r = x0[b] + x2[b], s0i = x0[B + b] + x2[B + b];
            const float s1r = x0[b] - x2[b], s1i = x0[B + b] - x2[B + b];
            const float s2r = x1[b] + x3[b], s2i = x1[B + b] + x3[B + b];
            const float s3r = x1[b] - x3[b], s3i = x1[B + b] - x3[B + b];
            const float ur = -sign * s3i, ui = sign * s3r;
            o0[b] = s0r + s2r; o0[B + b] = s0i + s2i;
            o2[b] = s0r - s2r; o2[B + b] = s0i - s2i;
            o1[b] = s1r + ur;  o1[B + b] = s1i + ui;
            o3[b] = s1r - ur;  o3[B + b] = s1i - ui;
        }
        return 1;
    }
    default:
        return 0;
    }
}

static void work(const as__civ_fft *f, float *out, size_t os, const float *in,
                 size_t is, int fstride, const int *fact, size_t B)
{
    const int p = fact[0], m = fact[1];
    const size_t esz = 2 * B * sizeof(float);
    if (m == 1) {
        if (leaf(p, out, os, in, (size_t)fstride * is, B, (float)f->sign))
            return;
        for (int j = 0; j < p; j++)
            memcpy(out + (size_t)j * os, in + (size_t)j * fstride * is, esz);
    } else {
        for (int j = 0; j < p; j++)
            work(f, out + (size_t)j * m * os, os, in + (size_t)j * fstride * is,
                 is, fstride * p, fact + 2, B);
    }
    const float sign = (float)f->sign;
    switch (p) {
    case 1: break;
    case 2: bfly2(out, os, m, fstride, f->tw, B); break;
    case 3: bfly3(out, os, m, fstride, f->tw, B, sign); break;
    case 4: bfly4(out, os, m, fstride, f->tw, B, sign); break;
    case 5: bfly5(out, os, m, fstride, f->tw, B, sign); break;
    default: assert(!"radix"); break;
    }
}

void as__civ_fft_run(const as__civ_fft *f, float *out, size_t os,
                     const float *in, size_t is, size_t B)
{
    assert(B % 8 == 0 && out != in);
    work(f, out, os, in, is, 1, f->fact, B);
}

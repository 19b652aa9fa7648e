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
        if (k) {
            twiddle(e1, B, tw[2 * k * fstride], tw[2 * k * fstride + 1]);
            twiddle(e2, B, tw[4 * k * fstride], tw[4 * k * fstride + 1]);
            twiddle(e3, B, tw[6 * k * fstride], tw[6 * k * fstride + 1]);
        }
        for (size_t b = 0; b < B; b++) {
            float s0r = e0[b] + e2[b], s0i = e0[B + b] + e2[B + b];
            float s1r = e0[b] - e2[b], s1i = e0[B + b] - e2[B + b];
            float s2r = e1[b] + e3[b], s2i = e1[B + b] + e3[B + b];
            float s3r = e1[b] - e3[b], s3i = e1[B + b] - e3[B + b];
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
        if (k) {
            twiddle(e1, B, tw[2 * k * fstride], tw[2 * k * fstride + 1]);
            twiddle(e2, B, tw[4 * k * fstride], tw[4 * k * fstride + 1]);
        }
        for (size_t b = 0; b < B; b++) {
            float tr = e1[b] + e2[b], ti = e1[B + b] + e2[B + b];
            float dr = e1[b] - e2[b], di = e1[B + b] - e2[B + b];
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

static void work(const as__civ_fft *f, float *out, size_t os, const float *in,
                 size_t is, int fstride, const int *fact, size_t B)
{
    const int p = fact[0], m = fact[1];
    const size_t esz = 2 * B * sizeof(float);
    if (m == 1) {
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

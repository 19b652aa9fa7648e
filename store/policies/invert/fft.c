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

#include "store/policies/invert/conv_invert.h"
#include "allocator/fault.h"

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
    f->tw = as__fmalloc(sizeof(float) * 2 * (size_t)n);
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

/* 8-float vectors (as in conv_invert_impl.h): the butterflies run over
 * the lanes 8 at a time (B is a multiple of 8), explicitly, because the
 * compiler left the plain loops scalar. Macros, not functions: a vector
 * typed function would change the ABI per target clone. */
typedef float v8 __attribute__((vector_size(32)));
typedef float v8u __attribute__((vector_size(32), aligned(4), may_alias));
#define LD(p) (*(const v8u *)(p))
#define ST(p, v) (*(v8u *)(p) = (v))

/* The radix-4 butterfly of four (twiddled) inputs, stored at element b of
 * o0..o3 (B lanes per part); the rotation by sign * i of the odd
 * difference. A macro: the radix-4 stage and the 4-point leaf share it. */
#define R4_OUT(o0, o1, o2, o3, b, p0r, p0i, p1r, p1i, p2r, p2i, p3r, p3i)       \
    do {                                                                       \
        const v8 s0r_ = (p0r) + (p2r), s0i_ = (p0i) + (p2i);                   \
        const v8 s1r_ = (p0r) - (p2r), s1i_ = (p0i) - (p2i);                   \
        const v8 s2r_ = (p1r) + (p3r), s2i_ = (p1i) + (p3i);                   \
        const v8 s3r_ = (p1r) - (p3r), s3i_ = (p1i) - (p3i);                   \
        const v8 ur_ = -sign * s3i_, ui_ = sign * s3r_;                        \
        ST((o0) + (b), s0r_ + s2r_); ST((o0) + B + (b), s0i_ + s2i_);          \
        ST((o2) + (b), s0r_ - s2r_); ST((o2) + B + (b), s0i_ - s2i_);          \
        ST((o1) + (b), s1r_ + ur_);  ST((o1) + B + (b), s1i_ + ui_);           \
        ST((o3) + (b), s1r_ - ur_);  ST((o3) + B + (b), s1i_ - ui_);           \
    } while (0)

AS__CIV_CLONES
static void bfly2(float *out, size_t os, int m, int fstride, const float *tw, size_t B)
{
    for (int k = 0; k < m; k++) {
        float *a = out + (size_t)k * os;
        float *c = out + (size_t)(k + m) * os;
        const float wr = tw[2 * k * fstride], wi = tw[2 * k * fstride + 1];
        for (size_t b = 0; b < B; b += 8) {
            const v8 cr = LD(c + b), ci = LD(c + B + b), ar = LD(a + b), ai = LD(a + B + b);
            const v8 xr = cr * wr - ci * wi, xi = cr * wi + ci * wr;
            ST(c + b, ar - xr);
            ST(c + B + b, ai - xi);
            ST(a + b, ar + xr);
            ST(a + B + b, ai + xi);
        }
    }
}

AS__CIV_CLONES
static void bfly4(float *out, size_t os, int m, int fstride, const float *tw,
                  size_t B, float sign)
{
    for (int k = 0; k < m; k++) {
        float *e0 = out + (size_t)k * os;
        float *e1 = out + (size_t)(k + m) * os;
        float *e2 = out + (size_t)(k + 2 * m) * os;
        float *e3 = out + (size_t)(k + 3 * m) * os;
        /* twiddles applied in the same pass (k = 0: all 1) */
        const float w1r = tw[2 * k * fstride], w1i = tw[2 * k * fstride + 1];
        const float w2r = tw[4 * k * fstride], w2i = tw[4 * k * fstride + 1];
        const float w3r = tw[6 * k * fstride], w3i = tw[6 * k * fstride + 1];
        for (size_t b = 0; b < B; b += 8) {
            const v8 a1r = LD(e1 + b), a1i = LD(e1 + B + b);
            const v8 a2r = LD(e2 + b), a2i = LD(e2 + B + b);
            const v8 a3r = LD(e3 + b), a3i = LD(e3 + B + b);
            const v8 a0r = LD(e0 + b), a0i = LD(e0 + B + b);
            const v8 x1r = a1r * w1r - a1i * w1i, x1i = a1r * w1i + a1i * w1r;
            const v8 x2r = a2r * w2r - a2i * w2i, x2i = a2r * w2i + a2i * w2r;
            const v8 x3r = a3r * w3r - a3i * w3i, x3i = a3r * w3i + a3i * w3r;
            R4_OUT(e0, e1, e2, e3, b, a0r, a0i, x1r, x1i, x2r, x2i, x3r, x3i);
        }
    }
}

AS__CIV_CLONES
static void bfly3(float *out, size_t os, int m, int fstride, const float *tw,
                  size_t B, float sign)
{
    const float h = sign * 0.86602540378443864676f;   /* sign * sqrt(3)/2 */
    for (int k = 0; k < m; k++) {
        float *e0 = out + (size_t)k * os;
        float *e1 = out + (size_t)(k + m) * os;
        float *e2 = out + (size_t)(k + 2 * m) * os;
        const float w1r = tw[2 * k * fstride], w1i = tw[2 * k * fstride + 1];
        const float w2r = tw[4 * k * fstride], w2i = tw[4 * k * fstride + 1];
        for (size_t b = 0; b < B; b += 8) {
            const v8 a1r = LD(e1 + b), a1i = LD(e1 + B + b);
            const v8 a2r = LD(e2 + b), a2i = LD(e2 + B + b);
            const v8 a0r = LD(e0 + b), a0i = LD(e0 + B + b);
            const v8 x1r = a1r * w1r - a1i * w1i, x1i = a1r * w1i + a1i * w1r;
            const v8 x2r = a2r * w2r - a2i * w2i, x2i = a2r * w2i + a2i * w2r;
            const v8 tr = x1r + x2r, ti = x1i + x2i;
            const v8 dr = x1r - x2r, di = x1i - x2i;
            const v8 cr = a0r - 0.5f * tr, cI = a0i - 0.5f * ti;
            ST(e0 + b, a0r + tr);
            ST(e0 + B + b, a0i + ti);
            /* +- i h d */
            ST(e1 + b, cr - h * di); ST(e1 + B + b, cI + h * dr);
            ST(e2 + b, cr + h * di); ST(e2 + B + b, cI - h * dr);
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
        float *e[5];
        float wr[5], wi[5];
        for (int q = 0; q < 5; q++) {
            e[q] = out + (size_t)(k + q * m) * os;
            wr[q] = tw[2 * q * k * fstride];
            wi[q] = tw[2 * q * k * fstride + 1];
        }
        for (size_t b = 0; b < B; b += 8) {
            v8 xr[5], xi[5];
            xr[0] = LD(e[0] + b);
            xi[0] = LD(e[0] + B + b);
            for (int q = 1; q < 5; q++) {
                const v8 ar = LD(e[q] + b), ai = LD(e[q] + B + b);
                if (k) {
                    xr[q] = ar * wr[q] - ai * wi[q];
                    xi[q] = ar * wi[q] + ai * wr[q];
                } else {
                    xr[q] = ar;
                    xi[q] = ai;
                }
            }
            const v8 t1r = xr[1] + xr[4], t1i = xi[1] + xi[4];
            const v8 t2r = xr[2] + xr[3], t2i = xi[2] + xi[3];
            const v8 d1r = xr[1] - xr[4], d1i = xi[1] - xi[4];
            const v8 d2r = xr[2] - xr[3], d2i = xi[2] - xi[3];
            const v8 ar = xr[0], ai = xi[0];
            const v8 p1r = ar + c1 * t1r + c2 * t2r, p1i = ai + c1 * t1i + c2 * t2i;
            const v8 p2r = ar + c2 * t1r + c1 * t2r, p2i = ai + c2 * t1i + c1 * t2i;
            const v8 q1r = s1 * d1r + s2 * d2r, q1i = s1 * d1i + s2 * d2i;
            const v8 q2r = s2 * d1r - s1 * d2r, q2i = s2 * d1i - s1 * d2i;
            ST(e[0] + b, ar + t1r + t2r); ST(e[0] + B + b, ai + t1i + t2i);
            /* y1,4 = p1 +- i q1 ; y2,3 = p2 +- i q2 */
            ST(e[1] + b, p1r - q1i); ST(e[1] + B + b, p1i + q1r);
            ST(e[4] + b, p1r + q1i); ST(e[4] + B + b, p1i - q1r);
            ST(e[2] + b, p2r - q2i); ST(e[2] + B + b, p2i + q2r);
            ST(e[3] + b, p2r + q2i); ST(e[3] + B + b, p2i - q2r);
        }
    }
}

/* The last stage (m == 1: no twiddles) reading its p inputs where they
 * are, instead of copying them to the output first (the butterflies of
 * bfly2..5 at k = 0). x[j] = in + j * s. */
AS__CIV_CLONES
static int leaf(int p, float *out, size_t os, const float *in, size_t s, size_t B,
                float sign)
{
    float *o0 = out, *o1 = out + os, *o2 = out + 2 * os;
    const float *x0 = in, *x1 = in + s, *x2 = in + 2 * s;
    switch (p) {
    case 2:
        for (size_t b = 0; b < B; b += 8) {
            const v8 ar = LD(x0 + b), ai = LD(x0 + B + b), cr = LD(x1 + b), ci = LD(x1 + B + b);
            ST(o0 + b, ar + cr); ST(o0 + B + b, ai + ci);
            ST(o1 + b, ar - cr); ST(o1 + B + b, ai - ci);
        }
        return 1;
    case 3: {
        const float h = sign * 0.86602540378443864676f;
        for (size_t b = 0; b < B; b += 8) {
            const v8 a0r = LD(x0 + b), a0i = LD(x0 + B + b);
            const v8 a1r = LD(x1 + b), a1i = LD(x1 + B + b);
            const v8 a2r = LD(x2 + b), a2i = LD(x2 + B + b);
            const v8 tr = a1r + a2r, ti = a1i + a2i;
            const v8 dr = a1r - a2r, di = a1i - a2i;
            const v8 cr = a0r - 0.5f * tr, cI = a0i - 0.5f * ti;
            ST(o0 + b, a0r + tr); ST(o0 + B + b, a0i + ti);
            ST(o1 + b, cr - h * di); ST(o1 + B + b, cI + h * dr);
            ST(o2 + b, cr + h * di); ST(o2 + B + b, cI - h * dr);
        }
        return 1;
    }
    case 4: {
        float *o3 = out + 3 * os;
        const float *x3 = in + 3 * s;
        for (size_t b = 0; b < B; b += 8) {
            const v8 a0r = LD(x0 + b), a0i = LD(x0 + B + b);
            const v8 a1r = LD(x1 + b), a1i = LD(x1 + B + b);
            const v8 a2r = LD(x2 + b), a2i = LD(x2 + B + b);
            const v8 a3r = LD(x3 + b), a3i = LD(x3 + B + b);
            R4_OUT(o0, o1, o2, o3, b, a0r, a0i, a1r, a1i, a2r, a2i, a3r, a3i);
        }
        return 1;
    }
    case 5: {
        const float c1 = 0.30901699437494742410f, c2 = -0.80901699437494742410f;
        const float s1 = sign * 0.95105651629515357212f;
        const float s2 = sign * 0.58778525229247312917f;
        float *o3 = out + 3 * os, *o4 = out + 4 * os;
        const float *x3 = in + 3 * s, *x4 = in + 4 * s;
        for (size_t b = 0; b < B; b += 8) {
            const v8 ar = LD(x0 + b), ai = LD(x0 + B + b);
            const v8 a1r = LD(x1 + b), a1i = LD(x1 + B + b), a4r = LD(x4 + b), a4i = LD(x4 + B + b);
            const v8 a2r = LD(x2 + b), a2i = LD(x2 + B + b), a3r = LD(x3 + b), a3i = LD(x3 + B + b);
            const v8 t1r = a1r + a4r, t1i = a1i + a4i, t2r = a2r + a3r, t2i = a2i + a3i;
            const v8 d1r = a1r - a4r, d1i = a1i - a4i, d2r = a2r - a3r, d2i = a2i - a3i;
            const v8 p1r = ar + c1 * t1r + c2 * t2r, p1i = ai + c1 * t1i + c2 * t2i;
            const v8 p2r = ar + c2 * t1r + c1 * t2r, p2i = ai + c2 * t1i + c1 * t2i;
            const v8 q1r = s1 * d1r + s2 * d2r, q1i = s1 * d1i + s2 * d2i;
            const v8 q2r = s2 * d1r - s1 * d2r, q2i = s2 * d1i - s1 * d2i;
            ST(o0 + b, ar + t1r + t2r); ST(o0 + B + b, ai + t1i + t2i);
            ST(o1 + b, p1r - q1i); ST(o1 + B + b, p1i + q1r);
            ST(o4 + b, p1r + q1i); ST(o4 + B + b, p1i - q1r);
            ST(o2 + b, p2r - q2i); ST(o2 + B + b, p2i + q2r);
            ST(o3 + b, p2r + q2i); ST(o3 + B + b, p2i - q2r);
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

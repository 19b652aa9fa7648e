/*
 * The stored frame's packing (policy "invert", invert/policy.c): a bitmap
 * of the nonzero values when that is smaller, q16 scales, the values as
 * floats or 16-bit codes.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "store/policies/invert/conv_invert.h"

/* Frame packing: [bitmap of nonzeros, when that is smaller] [q16: one
 * float scale per (image, channel)] values (all, or the nonzeros in
 * order) as floats or int16 codes. */
size_t as__civ_fpack_bytes(size_t nfl, size_t nnz, size_t nblk, int sparse, int q16)
{
    const size_t nv = sparse ? nnz : nfl;
    return (sparse ? as__civ_bitmap_bytes(nfl) : 0) + (q16 ? nblk * sizeof(float) : 0) +
           nv * (q16 ? sizeof(int16_t) : sizeof(float));
}

/* 16-bit codes round(v * inv) of one block, clamped to +-32767. The
 * rounding adds and subtracts 1.5 * 2^23: round half to even, as lrintf in
 * the default rounding mode, for |v * inv| < 2^22 (here <= 32767 and a
 * rounding step), without a libm call per value. */
static void q16_codes(const float *v, size_t len, float inv, int16_t *out)
{
    const float magic = 12582912.0f;
    for (size_t i = 0; i < len; i++) {
        float t = (v[i] * inv + magic) - magic;
        t = t > 32767.0f ? 32767.0f : t < -32767.0f ? -32767.0f : t;
        out[i] = (int16_t)t;
    }
}

void as__civ_fpack(const float *raw, size_t nblk, size_t flen, int sparse, int q16,
                   void *dst)
{
    const size_t nfl = nblk * flen;
    char *p = dst;
    uint64_t *bm = NULL;
    if (sparse) {
        bm = (uint64_t *)p;
        memset(bm, 0, as__civ_bitmap_bytes(nfl));
        p += as__civ_bitmap_bytes(nfl);
    }
    float *scale = NULL;
    if (q16) {
        scale = (float *)p;
        p += nblk * sizeof(float);
    }
    float *vf = (float *)p;
    int16_t *vq = (int16_t *)p;
    size_t k = 0;
    for (size_t b = 0; b < nblk; b++) {
        const float *v = raw + b * flen;
        float inv = 0;
        if (q16) {
            float mx = 0;   /* q16 frames are finite: a plain max (no libm call) */
            for (size_t i = 0; i < flen; i++) {
                const float a = fabsf(v[i]);
                mx = a > mx ? a : mx;
            }
            scale[b] = mx / 32767.0f;
            inv = mx > 0 ? 32767.0f / mx : 0;
        }
        if (!sparse && q16) {   /* the common case, a loop that vectorizes */
            q16_codes(v, flen, inv, vq + k);
            k += flen;
            continue;
        }
        for (size_t i = 0; i < flen; i++) {
            const size_t j = b * flen + i;
            if (sparse) {
                if (!(v[i] != 0.0f || signbit(v[i])))
                    continue;
                bm[j / 64] |= 1ull << (j % 64);
            }
            if (q16) {
                long c = lrintf(v[i] * inv);
                vq[k++] = (int16_t)(c > 32767 ? 32767 : c < -32767 ? -32767 : c);
            } else {
                vf[k++] = v[i];
            }
        }
    }
}

void as__civ_funpack(const void *src, size_t nblk, size_t flen, int sparse, int q16,
                     float *raw)
{
    const size_t nfl = nblk * flen;
    const char *p = src;
    const uint64_t *bm = NULL;
    if (sparse) {
        bm = (const uint64_t *)p;
        p += as__civ_bitmap_bytes(nfl);
    }
    const float *scale = NULL;
    if (q16) {
        scale = (const float *)p;
        p += nblk * sizeof(float);
    }
    const float *vf = (const float *)p;
    const int16_t *vq = (const int16_t *)p;
    if (!sparse && q16) {   /* the common case, a loop per block that vectorizes */
        for (size_t b = 0; b < nblk; b++) {
            const float sc = scale[b];
            for (size_t i = 0; i < flen; i++)
                raw[b * flen + i] = (float)vq[b * flen + i] * sc;
        }
        return;
    }
    size_t k = 0;
    for (size_t j = 0; j < nfl; j++) {
        if (sparse && !((bm[j / 64] >> (j % 64)) & 1)) {
            raw[j] = 0.0f;
            continue;
        }
        raw[j] = q16 ? (float)vq[k] * scale[j / flen] : vf[k];
        k++;
    }
}


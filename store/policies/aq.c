/*
 * Kernels of the aq codec (contracts, layout and error bounds in aq.h).
 *
 * Speed: one pass per group over an L1-resident copy: copy (and rotate),
 * min / max with a non-finite check, codes, pack. Every loop runs over
 * contiguous lanes (the planar packing exists for that) so the vectorizer
 * maps it onto AVX-512 / AVX2, cloned per ISA and picked at load time
 * (target_clones); FP contraction is off (ISO C mode), so every clone
 * gives the same bits.
 */
#include "store/policies/aq.h"

#include <assert.h>
#include <math.h>
#include <string.h>

#include "store/policies/pack512.h"
#include "store/policies/quant.h"
#include "util/simd.h"


bool as__aq_fmt_ok(const as_aq_fmt *f)
{
    if (f->bits != 2 && f->bits != 3 && f->bits != 4 && f->bits != 8)
        return false;
    if (f->group < AS_AQ_GROUP_MIN || f->group > AS_AQ_GROUP_MAX ||
        f->group % 8)
        return false;
    return !f->rot || (f->group & (f->group - 1)) == 0;
}

size_t as__aq_groups(const as_aq_fmt *f, size_t n)
{
    return (n + f->group - 1) / f->group;
}

size_t as__aq_param_bytes(const as_aq_fmt *f, size_t n)
{
    return as__aq_groups(f, n) * (f->p16 ? 4 : 8);
}

/* Values stored for group g (padded count P). */
static size_t padded_count(const as_aq_fmt *f, size_t n, size_t g)
{
    if (f->rot)
        return f->group;
    size_t start = g * f->group;
    size_t count = n - start < f->group ? n - start : f->group;
    return (count + 7) & ~(size_t)7;
}

size_t as__aq_code_bytes(const as_aq_fmt *f, size_t n)
{
    size_t ng = as__aq_groups(f, n);
    if (!ng)
        return 0;
    return ((ng - 1) * f->group + padded_count(f, n, ng - 1)) / 8 *
           (size_t)f->bits;
}

/* ---- reductions ------------------------------------------------------- */

/* Eight-lane vectors (GCC vector extensions: AVX-512VL / AVX2 registers in
 * the v4 / v3 clones, SSE pairs in the baseline one). */
typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

/* Macros, not functions: a vector passed by value would change the ABI
 * between clones. v8_select(m, a, b) is m ? a : b per lane. */
#define v8_load(dst, p) memcpy(&(dst), (p), sizeof(v8f))
#define v8_select(m, a, b) ((v8f)(((v8i)(a) & (m)) | ((v8i)(b) & ~(m))))

/* Min, max and a finiteness flag over n values (n a multiple of 8). */
AS_CLONES_V4_V3
static bool minmax8(const float *restrict v, size_t n, float *mn, float *mx)
{
    v8f lo, hi, z = {0};
    v8_load(lo, v);
    hi = lo;
    for (size_t i = 0; i < n; i += 8) {
        v8f a;
        v8_load(a, v + i);
        lo = v8_select(a < lo, a, lo);
        hi = v8_select(a > hi, a, hi);
        z += a * 0.0f;   /* NaN in a lane once it saw NaN or inf */
    }
    float l = lo[0], h = hi[0], zz = z[0];
    for (int k = 1; k < 8; k++) {
        l = lo[k] < l ? lo[k] : l;
        h = hi[k] > h ? hi[k] : h;
        zz += z[k];
    }
    *mn = l;
    *mx = h;
    return zz == 0.0f;
}

/* ---- rotation --------------------------------------------------------- */

AS_CLONES_V4_V3
void as__aq_fwht(float *restrict v, size_t G)
{
    /* Stages of half-width 1, 2, 4 within blocks of 8 (v[j] becomes
     * +-v[j] + v[j ^ h]: a lane swap and a sign), then contiguous
     * butterflies of width >= 8. */
    const v8i s1 = {1, 0, 3, 2, 5, 4, 7, 6}, s2 = {2, 3, 0, 1, 6, 7, 4, 5},
              s4 = {4, 5, 6, 7, 0, 1, 2, 3};
    const v8f g1 = {1, -1, 1, -1, 1, -1, 1, -1}, g2 = {1, 1, -1, -1, 1, 1, -1, -1},
              g4 = {1, 1, 1, 1, -1, -1, -1, -1};
    for (size_t i = 0; i < G; i += 8) {
        v8f b;
        v8_load(b, v + i);
        b = b * g1 + __builtin_shuffle(b, s1);
        b = b * g2 + __builtin_shuffle(b, s2);
        b = b * g4 + __builtin_shuffle(b, s4);
        memcpy(v + i, &b, sizeof b);
    }
    for (size_t h = 8; h < G; h *= 2)
        for (size_t i = 0; i < G; i += 2 * h)
            for (size_t j = i; j < i + h; j += 8) {
                v8f a, b;
                v8_load(a, v + j);
                v8_load(b, v + j + h);
                v8f s = a + b, d = a - b;
                memcpy(v + j, &s, sizeof s);
                memcpy(v + j + h, &d, sizeof d);
            }
}

/* ---- codes ------------------------------------------------------------ */

/* as__codes_sr, cloned for this file's targets. */
AS_CLONES_V4_V3
static void codes_sr(const float *restrict v, size_t n, float mn, float inv,
                     float qmax, uint32_t gseed, uint8_t *restrict q)
{
    as__codes_sr(v, n, mn, inv, qmax, gseed, q);
}

AS_CLONES_V4_V3
static void codes_rn(const float *restrict v, size_t n, float mn, float inv,
                     float qmax, uint8_t *restrict q)
{
    for (size_t j = 0; j < n; j++) {
        float t = (v[j] - mn) * inv + 0.5f;
        t = t > 0.0f ? t : 0.0f;
        t = t < qmax ? t : qmax;
        q[j] = (uint8_t)(int32_t)t;
    }
}

AS_CLONES_V4_V3
static void pack4(const uint8_t *restrict q, size_t P, uint8_t *restrict o)
{
    size_t h = P / 2;
    for (size_t k = 0; k < h; k++)
        o[k] = (uint8_t)(q[k] | q[k + h] << 4);
}

/* The low two bits of every code (B = 2, and the low plane of B = 3). */
AS_CLONES_V4_V3
static void pack2(const uint8_t *restrict q, size_t P, uint8_t *restrict o)
{
    size_t h = P / 4;
    for (size_t k = 0; k < h; k++)
        o[k] = (uint8_t)((q[k] & 3) | (q[k + h] & 3) << 2 |
                         (q[k + 2 * h] & 3) << 4 | (q[k + 3 * h] & 3) << 6);
}

/* Bit 2 of every code (the high plane of B = 3). */
AS_CLONES_V4_V3
static void pack1(const uint8_t *restrict q, size_t P, uint8_t *restrict o)
{
    size_t h = P / 8;
    for (size_t k = 0; k < h; k++) {
        unsigned b = 0;
        for (unsigned i = 0; i < 8; i++)
            b |= (unsigned)(q[k + i * h] >> 2 & 1) << i;
        o[k] = (uint8_t)b;
    }
}

#if AS_X86_DISPATCH
/* pack1 on AVX-512: per 16 output bytes, bit i from the byte test of the
 * 16 codes at i P/8 (a transpose of eight 16-bit masks into bytes). */
AS_TARGET_512 static void pack1_512(const uint8_t *q, size_t P, uint8_t *o)
{
    const size_t h = P / 8;
    const __m128i b2 = _mm_set1_epi8(4);
    for (size_t k = 0; k < h; k += 16) {
        const __mmask16 m = as__mask16(h - k);
        __m128i acc = _mm_setzero_si128();
        for (unsigned i = 0; i < 8; i++) {
            const __mmask16 t = _mm_test_epi8_mask(_mm_maskz_loadu_epi8(m, q + k + i * h), b2);
            acc = _mm_or_si128(acc, _mm_maskz_mov_epi8(t, _mm_set1_epi8((char)(1 << i))));
        }
        _mm_mask_storeu_epi8(o + k, m, acc);
    }
}
#endif

static void pack(int bits, const uint8_t *q, size_t P, uint8_t *o)
{
#if AS_X86_DISPATCH
    if (bits == 3 && as__use_512()) {
        pack2(q, P, o);
        pack1_512(q, P, o + P / 4);
        return;
    }
#endif
    switch (bits) {
    case 8:
        memcpy(o, q, P);
        break;
    case 4:
        pack4(q, P, o);
        break;
    case 3:
        pack2(q, P, o);
        pack1(q, P, o + P / 4);
        break;
    default:
        pack2(q, P, o);
    }
}

/* ---- parameters ------------------------------------------------------- */

static float f16_value(uint16_t h)
{
    return as__f16_to_f32_one(h);
}

/* f16 of x rounded toward -inf (dir < 0) or +inf (dir > 0). */
static uint16_t f16_directed(float x, int dir)
{
    uint16_t h = as__f32_to_f16_one(x);
    float b = f16_value(h);
    if (dir < 0 && b > x)
        h = (h & 0x7fffu) == 0 ? 0x8001u
            : (h & 0x8000u) ? (uint16_t)(h + 1) : (uint16_t)(h - 1);
    else if (dir > 0 && b < x)
        h = (h & 0x7fffu) == 0 ? 0x0001u
            : (h & 0x8000u) ? (uint16_t)(h - 1) : (uint16_t)(h + 1);
    return h;
}

/* f16: m rounded down, then s rounded up from that m, so that
 * [m, m + qmax s] still covers [min, max]. False when they do not fit f16
 * (then nothing is usable: the caller re-encodes with f32). */
static bool param_put(const as_aq_fmt *f, void *params, size_t g, float mn,
                      float mx, float step, float qmax)
{
    if (f->p16) {
        uint16_t *p = (uint16_t *)params + 2 * g;
        if (isnan(step)) {
            p[0] = p[1] = 0x7e00u;
            return true;
        }
        if (!(fabsf(mn) <= 65504.0f && fabsf(mx) <= 65504.0f))
            return false;   /* m would be off by more than the range */
        p[0] = f16_directed(mn, -1);
        p[1] = f16_directed((mx - f16_value(p[0])) / qmax, +1);
        return (p[0] & 0x7c00u) != 0x7c00u && (p[1] & 0x7c00u) != 0x7c00u;
    }
    as_aq_param *p = (as_aq_param *)params + g;
    p->min = mn;
    p->step = step;
    return true;
}

static void param_get(const as_aq_fmt *f, const void *params, size_t g,
                      float *mn, float *step)
{
    if (f->p16) {
        const uint16_t *p = (const uint16_t *)params + 2 * g;
        *mn = f16_value(p[0]);
        *step = f16_value(p[1]);
    } else {
        const as_aq_param *p = (const as_aq_param *)params + g;
        *mn = p->min;
        *step = p->step;
    }
}

/* ---- encode ----------------------------------------------------------- */

bool as__aq_encode(const as_aq_fmt *f, const float *x, size_t n,
                   uint64_t seed, size_t g0, size_t g1, void *params,
                   uint8_t *codes)
{
    assert(as__aq_fmt_ok(f));
    const size_t G = f->group;
    const float qmax = (float)((1 << f->bits) - 1);
    _Alignas(64) float v[AS_AQ_GROUP_MAX];
    _Alignas(64) uint8_t q[AS_AQ_GROUP_MAX];
    for (size_t g = g0; g < g1; g++) {
        size_t start = g * G;
        assert(start < n);
        size_t count = n - start < G ? n - start : G;
        size_t P = padded_count(f, n, g);
        /* A full group without rotation is read in place; otherwise a
         * copy, padded with zeros (rotation) or with its first value (so
         * the padding does not widen the range). */
        const float *src = x + start;
        size_t live = f->rot ? P : count;
        if (f->rot || count != P) {
            memcpy(v, x + start, count * sizeof(float));
            float pad = f->rot ? 0.0f : v[0];
            for (size_t j = count; j < P; j++)
                v[j] = pad;
            if (f->rot)
                as__aq_fwht(v, G);
            src = v;
        }
        float mn, mx;
        bool finite = minmax8(src, P, &mn, &mx);
        float step = (mx - mn) / qmax;
        if (!finite || !(step < 3.0e38f)) {
            param_put(f, params, g, NAN, NAN, NAN, qmax);
            memset(codes + start / 8 * (size_t)f->bits, 0,
                   P / 8 * (size_t)f->bits);
            continue;
        }
        if (!param_put(f, params, g, mn, mx, step, qmax))
            return false;
        param_get(f, params, g, &mn, &step);   /* f16: the rounded values */
        float inv = step > 0.0f ? 1.0f / step : 0.0f;
        if (f->nearest)
            codes_rn(src, live, mn, inv, qmax, q);
        else
            codes_sr(src, live, mn, inv, qmax, as__group_seed(seed, g), q);
        memset(q + live, 0, P - live);
        pack(f->bits, q, P, codes + start / 8 * (size_t)f->bits);
    }
    return true;
}

/* ---- decode ----------------------------------------------------------- */

AS_CLONES_V4_V3
static void unpack8(const uint8_t *restrict c, size_t P, float mn, float s,
                    float *restrict d)
{
    for (size_t j = 0; j < P; j++)
        d[j] = mn + (float)c[j] * s;
}

AS_CLONES_V4_V3
static void unpack4(const uint8_t *restrict c, size_t P, float mn, float s,
                    float *restrict d)
{
    size_t h = P / 2;
    for (size_t k = 0; k < h; k++) {
        d[k] = mn + (float)(c[k] & 15) * s;
        d[k + h] = mn + (float)(c[k] >> 4) * s;
    }
}

AS_CLONES_V4_V3
static void unpack2(const uint8_t *restrict c, size_t P, float mn, float s,
                    float *restrict d)
{
    size_t h = P / 4;
    for (unsigned i = 0; i < 4; i++)
        for (size_t k = 0; k < h; k++)
            d[i * h + k] = mn + (float)(c[k] >> (2 * i) & 3) * s;
}

typedef uint8_t v8u8 __attribute__((vector_size(8)));

AS_CLONES_V4_V3
static void unpack3(const uint8_t *restrict c, size_t P, float mn, float s,
                    float *restrict d)
{
    const uint8_t *restrict hi = c + P / 4;
    size_t h = P / 8, h8 = h & ~(size_t)7;
    /* Code j = i P/4 + k: low bits at (byte k, shift 2i), high bit at
     * (byte k mod P/8 of the high plane, bit 2i + k / (P/8)); eight codes
     * at a time, the rest one by one. */
    for (unsigned i = 0; i < 4; i++)
        for (unsigned half = 0; half < 2; half++) {
            const uint8_t *restrict lo = c + half * h;
            float *restrict o = d + i * 2 * h + half * h;
            int sl = (int)(2 * i), sh = (int)(2 * i + half);
            size_t k = 0;
            for (; k < h8; k += 8) {
                v8u8 lb, hb;
                memcpy(&lb, lo + k, 8);
                memcpy(&hb, hi + k, 8);
                v8i code = (__builtin_convertvector(lb, v8i) >> sl & 3) |
                           (__builtin_convertvector(hb, v8i) >> sh & 1) << 2;
                v8f v = __builtin_convertvector(code, v8f) * s + mn;
                memcpy(o + k, &v, sizeof v);
            }
            for (; k < h; k++) {
                unsigned code = (lo[k] >> sl & 3) | (hi[k] >> sh & 1) << 2;
                o[k] = mn + (float)code * s;
            }
        }
}

#if AS_X86_DISPATCH
/* unpack3 on AVX-512: per (i, half) block of P/8 codes, 16 at a time: the
 * low bits from the low plane's bytes, the high bit from the high plane's
 * (the same products and sums as unpack3). */
AS_TARGET_512 static void unpack3_512(const uint8_t *c, size_t P, float mn, float s,
                                      float *d)
{
    const uint8_t *hi = c + P / 4;
    const size_t h = P / 8;
    const __m512 vs = _mm512_set1_ps(s), vm = _mm512_set1_ps(mn);
    const __m512i three = _mm512_set1_epi32(3), one = _mm512_set1_epi32(1);
    for (unsigned i = 0; i < 4; i++)
        for (unsigned half = 0; half < 2; half++) {
            const uint8_t *lo = c + half * h;
            float *o = d + i * 2 * h + half * h;
            const unsigned sl = 2 * i, sh = 2 * i + half;
            for (size_t k = 0; k < h; k += 16) {
                const __mmask16 m = as__mask16(h - k);
                const __m512i lb = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, lo + k));
                const __m512i hb = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, hi + k));
                const __m512i code = _mm512_or_si512(
                    _mm512_and_si512(_mm512_srli_epi32(lb, sl), three),
                    _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(hb, sh), one), 2));
                _mm512_mask_storeu_ps(o + k, m, _mm512_add_ps(
                    _mm512_mul_ps(_mm512_cvtepi32_ps(code), vs), vm));
            }
        }
}
#endif

/* Decode a whole group (P codes) into d. */
static void decode_group(const as_aq_fmt *f, const void *params,
                         const uint8_t *codes, size_t n, size_t g, float *d)
{
    size_t P = padded_count(f, n, g);
    const uint8_t *c = codes + g * f->group / 8 * (size_t)f->bits;
    float mn, s;
    param_get(f, params, g, &mn, &s);
    if (f->rot) {   /* x = H v / G: fold 1/G into m and s (exact) */
        mn /= (float)f->group;
        s /= (float)f->group;
    }
    switch (f->bits) {
    case 8:
        unpack8(c, P, mn, s, d);
        break;
    case 4:
        unpack4(c, P, mn, s, d);
        break;
    case 3:
#if AS_X86_DISPATCH
        if (as__use_512()) {
            unpack3_512(c, P, mn, s, d);
            break;
        }
#endif
        unpack3(c, P, mn, s, d);
        break;
    default:
        unpack2(c, P, mn, s, d);
    }
    if (f->rot)
        as__aq_fwht(d, f->group);
}

void as__aq_decode(const as_aq_fmt *f, const void *params,
                   const uint8_t *codes, size_t n, size_t i0, size_t count,
                   float *dst)
{
    assert(as__aq_fmt_ok(f));
    const size_t G = f->group;
    _Alignas(64) float tmp[AS_AQ_GROUP_MAX];
    size_t i = i0, end = i0 + count;
    while (i < end) {
        size_t g = i / G, gstart = g * G;
        size_t gend = gstart + G < n ? gstart + G : n;
        size_t stop = gend < end ? gend : end;
        if (i == gstart && stop == gend && padded_count(f, n, g) == gend - gstart) {
            decode_group(f, params, codes, n, g, dst + (i - i0));
        } else {
            decode_group(f, params, codes, n, g, tmp);
            memcpy(dst + (i - i0), tmp + (i - gstart),
                   (stop - i) * sizeof(float));
        }
        i = stop;
    }
}

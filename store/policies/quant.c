/*
 * Kernels of the numeric codecs: half floats, byte shuffle, per-group
 * affine quantization with stochastic rounding (see quant.h for contracts
 * and error bounds).
 *
 * Speed: every loop is written branch-free over plain arrays so the
 * compiler vectorizes it; this file is built with -O3 and the hot loops are
 * cloned for AVX2 with a baseline fallback picked at
 * load time (target_clones). FP contraction is off (ISO C mode), so both
 * clones give bit-identical results.
 */
#include "store/policies/quant.h"

#include <assert.h>
#include <string.h>

#include "util/simd.h"

#define AS_HAVE_F16C_PATH AS_X86_DISPATCH

/* ---- fp16 --------------------------------------------------------------- */

void as__f32_to_f16_sw(const float *restrict src, uint16_t *restrict dst,
                       size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = as__f32_to_f16_one(src[i]);
}

void as__f16_to_f32_sw(const uint16_t *restrict src, float *restrict dst,
                       size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = as__f16_to_f32_one(src[i]);
}

#if AS_HAVE_F16C_PATH
__attribute__((target("avx,f16c")))
static void f32_to_f16_f16c(const float *src, uint16_t *dst, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(src + i);
        __m128i h = _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT);
        _mm_storeu_si128((__m128i *)(void *)(dst + i), h);
    }
    as__f32_to_f16_sw(src + i, dst + i, n - i);
}

__attribute__((target("avx,f16c")))
static void f16_to_f32_f16c(const uint16_t *src, float *dst, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm_loadu_si128((const __m128i *)(const void *)(src + i));
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
    }
    as__f16_to_f32_sw(src + i, dst + i, n - i);
}

static int have_f16c(void)
{
    static int cached = -1;
    int v = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    if (v < 0) {
        __builtin_cpu_init();
        v = as_cpu_f16c();
        __atomic_store_n(&cached, v, __ATOMIC_RELAXED);
    }
    return v;
}
#endif

/* The converters of this machine: F16C where the CPU has it, else the
 * portable loops (both round to nearest even: the same results). */
typedef struct f16_conv {
    void (*to_f16)(const float *, uint16_t *, size_t);
    void (*to_f32)(const uint16_t *, float *, size_t);
} f16_conv;

static const f16_conv *f16_conv_here(void)
{
    static const f16_conv sw = {as__f32_to_f16_sw, as__f16_to_f32_sw};
#if AS_HAVE_F16C_PATH
    static const f16_conv hw = {f32_to_f16_f16c, f16_to_f32_f16c};
    if (have_f16c())
        return &hw;
#endif
    return &sw;
}

void as__f32_to_f16(const float *src, uint16_t *dst, size_t n)
{
    f16_conv_here()->to_f16(src, dst, n);
}

void as__f16_to_f32(const uint16_t *src, float *dst, size_t n)
{
    f16_conv_here()->to_f32(src, dst, n);
}

/* ---- bf16 --------------------------------------------------------------- */

/* Round to nearest even on the f32 bits: add 0x7fff plus the lowest kept
 * bit; NaNs are kept quiet (a NaN whose payload sits in the low half would
 * otherwise truncate to inf). */
AS_CLONES_AVX2
void as__f32_to_bf16(const float *restrict src, uint16_t *restrict dst,
                     size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t x = as__f2u(src[i]);
        uint32_t r = (x + 0x7fffu + ((x >> 16) & 1u)) >> 16;
        uint32_t q = (x >> 16) | 0x40u;
        dst[i] = (uint16_t)((x & 0x7fffffffu) > 0x7f800000u ? q : r);
    }
}

AS_CLONES_AVX2
void as__bf16_to_f32(const uint16_t *restrict src, float *restrict dst,
                     size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = as__u2f((uint32_t)src[i] << 16);
}

/* ---- byte shuffle ------------------------------------------------------- */

AS_CLONES_AVX2
static void shuffle4(const uint8_t *restrict s, uint8_t *restrict d, size_t n)
{
    uint8_t *restrict d0 = d, *restrict d1 = d + n, *restrict d2 = d + 2 * n,
            *restrict d3 = d + 3 * n;
    for (size_t i = 0; i < n; i++) {
        d0[i] = s[4 * i];
        d1[i] = s[4 * i + 1];
        d2[i] = s[4 * i + 2];
        d3[i] = s[4 * i + 3];
    }
}

AS_CLONES_AVX2
static void unshuffle4(const uint8_t *restrict s, uint8_t *restrict d, size_t n)
{
    const uint8_t *restrict s0 = s, *restrict s1 = s + n,
                  *restrict s2 = s + 2 * n, *restrict s3 = s + 3 * n;
    for (size_t i = 0; i < n; i++) {
        d[4 * i] = s0[i];
        d[4 * i + 1] = s1[i];
        d[4 * i + 2] = s2[i];
        d[4 * i + 3] = s3[i];
    }
}

AS_CLONES_AVX2
static void shuffle2(const uint8_t *restrict s, uint8_t *restrict d, size_t n)
{
    uint8_t *restrict d0 = d, *restrict d1 = d + n;
    for (size_t i = 0; i < n; i++) {
        d0[i] = s[2 * i];
        d1[i] = s[2 * i + 1];
    }
}

AS_CLONES_AVX2
static void unshuffle2(const uint8_t *restrict s, uint8_t *restrict d, size_t n)
{
    const uint8_t *restrict s0 = s, *restrict s1 = s + n;
    for (size_t i = 0; i < n; i++) {
        d[2 * i] = s0[i];
        d[2 * i + 1] = s1[i];
    }
}

void as__shuffle(const void *src, void *dst, size_t n, size_t esize)
{
    const uint8_t *s = src;
    uint8_t *d = dst;
    assert(esize >= 1 && esize <= 16);
    if (esize == 4) {
        shuffle4(s, d, n);
    } else if (esize == 2) {
        shuffle2(s, d, n);
    } else if (esize == 1) {
        memcpy(d, s, n);
    } else {
        for (size_t b = 0; b < esize; b++)
            for (size_t i = 0; i < n; i++)
                d[b * n + i] = s[i * esize + b];
    }
}

void as__unshuffle(const void *src, void *dst, size_t n, size_t esize)
{
    const uint8_t *s = src;
    uint8_t *d = dst;
    assert(esize >= 1 && esize <= 16);
    if (esize == 4) {
        unshuffle4(s, d, n);
    } else if (esize == 2) {
        unshuffle2(s, d, n);
    } else if (esize == 1) {
        memcpy(d, s, n);
    } else {
        for (size_t b = 0; b < esize; b++)
            for (size_t i = 0; i < n; i++)
                d[i * esize + b] = s[b * n + i];
    }
}

/* ---- checksum ---------------------------------------------------------- */

AS_CLONES_AVX2
static void hash_blocks(const uint8_t *restrict p, size_t nblocks,
                        uint64_t *restrict a, uint64_t *restrict b)
{
    uint64_t la[8], lb[8];
    for (int k = 0; k < 8; k++) {
        la[k] = a[k];
        lb[k] = b[k];
    }
    for (size_t i = 0; i < nblocks; i++) {
        const uint8_t *q = p + 32 * i;
        for (int k = 0; k < 8; k++) {
            uint32_t w;
            memcpy(&w, q + 4 * k, 4);
            la[k] += w;
            lb[k] += la[k];
        }
    }
    for (int k = 0; k < 8; k++) {
        a[k] = la[k];
        b[k] = lb[k];
    }
}

uint64_t as__hash64(const void *p, size_t n)
{
    uint64_t a[8] = {0}, b[8] = {0};
    size_t nb = n / 32;
    hash_blocks(p, nb, a, b);
    if (n % 32) {
        uint8_t last[32] = {0};
        memcpy(last, (const uint8_t *)p + nb * 32, n % 32);
        hash_blocks(last, 1, a, b);
    }
    uint64_t h = as__mix64(n ^ 0x6a09e667f3bcc909ull);
    for (int k = 0; k < 8; k++) {
        h = as__mix64(h ^ a[k]) + (uint64_t)k;
        h = as__mix64(h ^ b[k]);
    }
    return h;
}

/* ---- quantization ------------------------------------------------------- */

/* Min and max of a group, NaN-tolerant (a NaN leaves them as they were;
 * the group then decodes its NaN elements to clamped codes). Written with
 * plain comparisons so it maps onto vector min/max. */
AS_CLONES_AVX2
static void group_minmax(const float *restrict x, size_t n, float *mn,
                         float *mx)
{
    /* Eight independent lanes (vector min/max); float reductions are not
     * reassociated by the compiler on its own. */
    float lo[8], hi[8];
    for (int k = 0; k < 8; k++)
        lo[k] = hi[k] = x[0];
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        for (int k = 0; k < 8; k++) {
            lo[k] = x[i + k] < lo[k] ? x[i + k] : lo[k];
            hi[k] = x[i + k] > hi[k] ? x[i + k] : hi[k];
        }
    }
    for (; i < n; i++) {
        lo[0] = x[i] < lo[0] ? x[i] : lo[0];
        hi[0] = x[i] > hi[0] ? x[i] : hi[0];
    }
    for (int k = 1; k < 8; k++) {
        lo[0] = lo[k] < lo[0] ? lo[k] : lo[0];
        hi[0] = hi[k] > hi[0] ? hi[k] : hi[0];
    }
    *mn = lo[0];
    *mx = hi[0];
}

/* Codes of one group (count values, padded with zeros to a multiple of 8)
 * into q[]. */
AS_CLONES_AVX2
static void group_codes(const float *restrict x, size_t count, float mn,
                        float inv, float qmax, uint32_t gseed,
                        uint8_t *restrict q)
{
    assert(count <= AS_QUANT_GROUP_MAX);
    as__codes_sr(x, count, mn, inv, qmax, gseed, q);
}

AS_CLONES_AVX2
static void pack4(const uint8_t *restrict q, size_t count, uint8_t *restrict out)
{
    for (size_t k = 0; k < count / 2; k++)
        out[k] = (uint8_t)(q[2 * k] | (q[2 * k + 1] << 4));
}

AS_CLONES_AVX2
static void pack2(const uint8_t *restrict q, size_t count, uint8_t *restrict out)
{
    for (size_t k = 0; k < count / 4; k++)
        out[k] = (uint8_t)(q[4 * k] | (q[4 * k + 1] << 2) |
                           (q[4 * k + 2] << 4) | (q[4 * k + 3] << 6));
}

void as__quant_encode(const float *x, size_t n, int bits, size_t group,
                      uint64_t seed, size_t g0, size_t g1,
                      as_qgroup *groups, uint8_t *codes)
{
    assert(bits == 2 || bits == 4 || bits == 8);
    assert(group % 8 == 0 && group >= AS_QUANT_GROUP_MIN &&
           group <= AS_QUANT_GROUP_MAX);
    const float qmax = (float)((1 << bits) - 1);
    uint8_t q[AS_QUANT_GROUP_MAX];
    for (size_t g = g0; g < g1; g++) {
        size_t start = g * group;
        assert(start < n);
        size_t count = n - start < group ? n - start : group;
        size_t padded = (count + 7) & ~(size_t)7;
        float mn, mx;
        group_minmax(x + start, count, &mn, &mx);
        float scale = (mx - mn) / qmax;
        float inv = scale > 0.0f ? 1.0f / scale : 0.0f;
        if (!(scale < 3.0e38f)) /* inf range or NaN: decode gives inf/NaN */
            inv = 0.0f;
        groups[g].min = mn;
        groups[g].scale = scale;
        uint8_t *out = codes + start / 8 * (size_t)bits;
        uint8_t *dst = bits == 8 ? out : q;
        group_codes(x + start, count, mn, inv, qmax, as__group_seed(seed, g),
                    dst);
        memset(dst + count, 0, padded - count);
        if (bits == 4)
            pack4(q, padded, out);
        else if (bits == 2)
            pack2(q, padded, out);
    }
}

AS_CLONES_AVX2
static void dequant8(const uint8_t *restrict c, size_t count, float mn,
                     float s, float *restrict d)
{
    for (size_t j = 0; j < count; j++)
        d[j] = mn + (float)c[j] * s;
}

AS_CLONES_AVX2
static void dequant4(const uint8_t *restrict c, size_t count, float mn,
                     float s, float *restrict d)
{
    for (size_t k = 0; k < count / 2; k++) {
        d[2 * k] = mn + (float)(c[k] & 15u) * s;
        d[2 * k + 1] = mn + (float)(c[k] >> 4) * s;
    }
}

AS_CLONES_AVX2
static void dequant2(const uint8_t *restrict c, size_t count, float mn,
                     float s, float *restrict d)
{
    for (size_t k = 0; k < count / 4; k++) {
        d[4 * k] = mn + (float)(c[k] & 3u) * s;
        d[4 * k + 1] = mn + (float)((c[k] >> 2) & 3u) * s;
        d[4 * k + 2] = mn + (float)((c[k] >> 4) & 3u) * s;
        d[4 * k + 3] = mn + (float)(c[k] >> 6) * s;
    }
}

/* Decode the first `count` values (count a multiple of 8, or the padded
 * tail) of a group whose codes start at c. */
static void dequant(const uint8_t *c, int bits, size_t count, float mn,
                    float s, float *d)
{
    if (bits == 8)
        dequant8(c, count, mn, s, d);
    else if (bits == 4)
        dequant4(c, count, mn, s, d);
    else
        dequant2(c, count, mn, s, d);
}

void as__quant_decode(const as_qgroup *groups, const uint8_t *codes,
                      int bits, size_t group, size_t i0, size_t count,
                      float *dst)
{
    assert(bits == 2 || bits == 4 || bits == 8);
    float tmp[AS_QUANT_GROUP_MAX];
    size_t i = i0, end = i0 + count;
    while (i < end) {
        size_t g = i / group, gstart = g * group;
        size_t gend = gstart + group < end ? gstart + group : end;
        const uint8_t *c = codes + gstart / 8 * (size_t)bits;
        if (i == gstart && (gend - gstart) % 8 == 0) {
            dequant(c, bits, gend - gstart, groups[g].min, groups[g].scale,
                    dst + (i - i0));
        } else {
            /* Partial group: decode the covering 8-aligned span. */
            size_t span = ((gend - gstart) + 7) & ~(size_t)7;
            dequant(c, bits, span, groups[g].min, groups[g].scale, tmp);
            memcpy(dst + (i - i0), tmp + (i - gstart),
                   (gend - i) * sizeof(float));
        }
        i = gend;
    }
}

/*
 * Kernels of the numeric codecs (internal): half-float conversions, byte
 * shuffles, the counter-based RNG and per-group affine quantization with
 * stochastic rounding. Pure functions over caller buffers: no allocation, no
 * global state, thread-safe. The policies (codec_half.c, codec_quant.c,
 * codec_zstd.c) wrap them; tests call them directly.
 *
 * Error bounds (round to nearest even; finite inputs):
 *   fp16: |x| in [2^-14, 65504]: relative error <= 2^-11;
 *         |x| < 2^-14 (subnormal range): absolute error <= 2^-25;
 *         |x| >= 65520 becomes +-inf (IEEE overflow).
 *   bf16: relative error <= 2^-8 for normal values (same range as f32);
 *         absolute error <= 2^-134 below 2^-126.
 *   qB (B = 8, 4, 2 bits, group of G values with min m and max M):
 *         step s = (M - m) / (2^B - 1); every decoded value lies in [m, M]
 *         and within one step of x: |x_hat - x| < s (plus f32 rounding of
 *         m + q*s, a few ulp of max(|m|, |M|)). Stochastic rounding makes
 *         the code unbiased: E[x_hat] = x over the RNG.
 *   NaN and inf inputs: fp16/bf16 keep them; quantization of a group that
 *   holds one gives NaN/inf for that group (no undefined behavior).
 */
#ifndef AS_STORE_POLICIES_QUANT_H
#define AS_STORE_POLICIES_QUANT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* ---- half floats (round to nearest even) --------------------------------- */

static inline uint32_t as__f2u(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static inline float as__u2f(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* One f32 -> f16 conversion, round to nearest even, written as selects.
 * Normal range: add the rounding bias to the f32 bits (0xfff plus the lowest
 * kept bit, so ties go to even) and rebias the exponent; a carry out of the
 * mantissa correctly bumps the exponent, up to inf at 65520. Subnormal
 * range: |x| + 0.5 rounds |x| to a multiple of 2^-24 (the f16 subnormal
 * quantum; 0.5 has ulp 2^-24) in the FPU, and the low bits of the sum are
 * the half's bits. */
static inline uint16_t as__f32_to_f16_one(float f)
{
    uint32_t x = as__f2u(f);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t a = x & 0x7fffffffu;
    uint32_t normal = (a + 0xc8000fffu + ((a >> 13) & 1u)) >> 13; /* -112<<23 */
    uint32_t sub = as__f2u(as__u2f(a) + 0.5f) - 0x3f000000u;
    uint32_t big = a > 0x7f800000u ? 0x7e00u : 0x7c00u;
    uint32_t h = a >= 0x47800000u ? big : (a < 0x38800000u ? sub : normal);
    return (uint16_t)(sign | h);
}

static inline float as__f16_to_f32_one(uint16_t hv)
{
    uint32_t h = hv;
    uint32_t sign = (h & 0x8000u) << 16;
    uint32_t em = h & 0x7fffu;
    uint32_t normal = (em << 13) + 0x38000000u;
    uint32_t infnan = 0x7f800000u | ((em & 0x3ffu) << 13);
    uint32_t sub = as__f2u((float)em * (1.0f / 16777216.0f));
    uint32_t r = em >= 0x7c00u ? infnan : (em >= 0x400u ? normal : sub);
    return as__u2f(sign | r);
}

void as__f32_to_f16(const float *src, uint16_t *dst, size_t n);
void as__f16_to_f32(const uint16_t *src, float *dst, size_t n);
void as__f32_to_bf16(const float *src, uint16_t *dst, size_t n);
void as__bf16_to_f32(const uint16_t *src, float *dst, size_t n);
/* The portable versions (the above use F16C where the CPU has it; both
 * give identical bits). */
void as__f32_to_f16_sw(const float *src, uint16_t *dst, size_t n);
void as__f16_to_f32_sw(const uint16_t *src, float *dst, size_t n);

/* ---- byte shuffle -------------------------------------------------------- */

/* Transpose n elements of esize bytes (1..16) so that byte b of every
 * element comes before byte b+1 of any: dst[b*n + i] = src[i*esize + b].
 * src and dst must not overlap. esize 1 is a copy. */
void as__shuffle(const void *src, void *dst, size_t n, size_t esize);
/* The inverse: dst[i*esize + b] = src[b*n + i]. */
void as__unshuffle(const void *src, void *dst, size_t n, size_t esize);

/* ---- counter-based RNG --------------------------------------------------- */

/* A 32-bit mixing function (xor-shift-multiply finalizer): a bijection
 * whose outputs for consecutive inputs look independent. */
static inline uint32_t as__mix32(uint32_t h)
{
    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    h *= 0xc2b2ae35u;
    h ^= h >> 16;
    return h;
}

/* 64 -> 64-bit mixer for seeds (splitmix-style finalizer). */
static inline uint64_t as__mix64(uint64_t z)
{
    z ^= z >> 30;
    z *= 0xbf58476d1ce4e5b9ull;
    z ^= z >> 27;
    z *= 0x94d049bb133111ebull;
    z ^= z >> 31;
    return z;
}

/* The uniform draw for element j of group g under seed: a pure function
 * of (seed, g, j), so encodes are reproducible and independent of how work
 * is split. Returns a value in [0, 1) with 24 random bits. */
static inline uint32_t as__group_seed(uint64_t seed, uint64_t g)
{
    return (uint32_t)(as__mix64(seed ^ as__mix64(g + 0x9e3779b97f4a7c15ull)) >> 32);
}
static inline float as__uniform(uint32_t gseed, uint32_t j)
{
    return (float)(int32_t)(as__mix32(gseed + j * 0x9e3779b9u) >> 8) *
           (1.0f / 16777216.0f);
}

/* Stochastically rounded codes: q[j] = clamp(floor((x[j] - mn) * inv +
 * as__uniform(gseed, j)), 0, qmax) for j < n. The clamp is done in float,
 * so NaN and out-of-range values never reach the conversion. Inline, for
 * the callers' target clones to vectorize. */
static inline void as__codes_sr(const float *restrict x, size_t n, float mn,
                                float inv, float qmax, uint32_t gseed,
                                uint8_t *restrict q)
{
    for (uint32_t j = 0; j < (uint32_t)n; j++) {
        float v = (x[j] - mn) * inv + as__uniform(gseed, j);
        v = v > 0.0f ? v : 0.0f;
        v = v < qmax ? v : qmax;
        q[j] = (uint8_t)(int32_t)v;
    }
}

/* ---- checksum ------------------------------------------------------------ */

/* A fast 64-bit checksum of n bytes (not cryptographic): eight lanes of
 * Fletcher-style sums over 32-bit words (a += w; b += a, in 64 bits),
 * mixed with the length at the end. Any change of one word, and any swap of
 * two different words, changes the result; it runs at memory speed (vector
 * adds only), which zlib's crc32 (~1.7 GB/s here) does not. */
uint64_t as__hash64(const void *p, size_t n);

/* ---- per-group affine quantization --------------------------------------- */

#define AS_QUANT_GROUP_MIN 8
#define AS_QUANT_GROUP_MAX 4096
#define AS_QUANT_GROUP_DEFAULT 256

/* Per-group parameters: x_hat = min + code * scale. */
typedef struct as_qgroup {
    float min, scale;
} as_qgroup;

/* Number of groups and of code bytes for n values. group must be a multiple
 * of 8 in [AS_QUANT_GROUP_MIN, AS_QUANT_GROUP_MAX]; bits 2, 4 or 8. Every
 * group's codes start on a byte boundary (the last group is padded to a
 * multiple of 8 codes). */
static inline size_t as__quant_groups(size_t n, size_t group)
{
    return (n + group - 1) / group;
}
static inline size_t as__quant_code_bytes(size_t n, int bits)
{
    return (n + 7) / 8 * (size_t)bits;
}

/* Quantize groups [g0, g1) of x (n values in all) into groups[] and codes
 * (indexed from the tensor start, so ranges may be encoded by different
 * threads into the same arrays). Stochastic rounding: code = floor((x -
 * min) / scale + u), u = as__uniform(as__group_seed(seed, g), j). */
void as__quant_encode(const float *x, size_t n, int bits, size_t group,
                      uint64_t seed, size_t g0, size_t g1,
                      as_qgroup *groups, uint8_t *codes);

/* Decode values [i0, i0 + count) into dst (dst[0] is value i0). */
void as__quant_decode(const as_qgroup *groups, const uint8_t *codes,
                      int bits, size_t group, size_t i0, size_t count,
                      float *dst);

/* ---- zero mask (zmask.c), for the zstd codec ------------------------------ */

/* Elements (esize 2 or 4 bytes) whose bits are all zero. */
size_t as__zmask_count_zero(const uint8_t *src, size_t ne, size_t esize);
/* Bitmap of the nonzero elements into bm ((ne + 7) / 8 bytes; bit i of
 * byte i/8) and those elements packed into tmp; returns their count. tmp
 * needs 64 bytes of slack past ne elements (the AVX2 path stores 8 at a
 * time). */
size_t as__zmask_split(const uint8_t *src, size_t ne, size_t esize,
                       uint8_t *bm, uint8_t *tmp);
/* The inverse: dst[i] = next packed element if bit i is set, else 0.
 * packed is read up to 8 elements past the packed ones (slack). */
void as__zmask_join(const uint8_t *bm, const uint8_t *packed, size_t ne,
                    size_t esize, uint8_t *dst);

/* ---- testing hooks --------------------------------------------------------- */

/* codec_zstd.c: the compressed bytes of frame i of an encoded zstd state
 * (NULL past the end), so tests can corrupt a blob. */
uint8_t *as__zstd_frame_bytes(void *state, size_t i, size_t *len);
/* Re-stamp frame i's outer checksum after its bytes were changed (fuzzing:
 * lets a corruption reach the decoder). */
void as__zstd_frame_rehash(void *state, size_t i);

/* offload.c: make the next offload fail with errno err at stage 1 (creating
 * the file: synchronous fallback) or 2 (the background write); and wait
 * until the offload I/O thread has nothing queued or running. */
void as__offload_inject(int stage, int err);
void as__offload_wait_idle(void);
/* The file descriptor of an offloaded item's file (its state), -1 while
 * the write has not finished or after it failed (tests, fuzz/). */
int as__offload_fd(const void *state);

#endif

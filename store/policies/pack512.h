/*
 * B-bit codes (B = 1..4) of 16 lanes into and out of a little-endian bit
 * stream (code i at bit i B: the layout of bits.h and of the softmax
 * codecs' sm_pack) on AVX-512 with BMI2: 16 codes are 2B whole bytes, so
 * a chunk starting at a multiple of 16 codes starts on a byte. pext
 * gathers the low B bits of eight code bytes into B bytes; pdep spreads
 * them back. Internal; for kernels compiled with AS_TARGET_512 and called
 * after as_cpu_avx512_bmi2() (util/simd.h).
 */
#ifndef AS_STORE_POLICIES_PACK512_H
#define AS_STORE_POLICIES_PACK512_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/simd.h"

#if AS_X86_DISPATCH

/* Take the 512-bit kernels: the CPU has them and the tests have not forced
 * the portable paths. */
static inline bool as__use_512(void)
{
    return as_cpu_avx512_bmi2() && !as__simd_portable();
}

#define AS_TARGET_512 __attribute__((target("avx512f,avx512bw,avx512vl,bmi2")))
#define AS_INLINE_512 AS_TARGET_512 __attribute__((always_inline)) static inline

/* Lanes [0, left) of a 16-lane chunk. */
static inline __mmask16 as__mask16(size_t left)
{
    return left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
}

/* pext / pdep mask of B-bit codes, one per byte. */
static inline uint64_t as__byte_mask(int B)
{
    return 0x0101010101010101ull * ((1u << B) - 1);
}

/* The 2B bytes of 16 codes (32-bit lanes, each < 2^B), little endian. */
AS_INLINE_512 uint64_t as__pack16(__m512i c, const int B)
{
    const __m128i cb = _mm512_cvtepi32_epi8(c);
    const uint64_t bm = as__byte_mask(B);
    const uint64_t lo = _pext_u64((uint64_t)_mm_cvtsi128_si64(cb), bm);
    const uint64_t hi = _pext_u64((uint64_t)_mm_extract_epi64(cb, 1), bm);
    return lo | hi << (8 * B);
}

/* The 16 codes (as bytes) of the 2B bytes in w. */
AS_INLINE_512 __m128i as__unpack16(uint64_t w, const int B)
{
    const uint64_t bm = as__byte_mask(B);
    return _mm_set_epi64x((long long)_pdep_u64(w >> (8 * B), bm),
                          (long long)_pdep_u64(w, bm));
}

/* Store the low len (<= 8) bytes of w at p; nothing else is touched. */
AS_INLINE_512 void as__put_bytes(uint8_t *p, uint64_t w, size_t len)
{
    _mm_mask_storeu_epi8(p, (__mmask16)((1u << len) - 1),
                         _mm_cvtsi64_si128((long long)w));
}

/* Load len (<= 8) bytes at p, zeros above; nothing else is read. */
AS_INLINE_512 uint64_t as__get_bytes(const uint8_t *p, size_t len)
{
    return (uint64_t)_mm_cvtsi128_si64(
        _mm_maskz_loadu_epi8((__mmask16)((1u << len) - 1), p));
}

#else
static inline bool as__use_512(void)
{
    return false;
}
#endif
#endif

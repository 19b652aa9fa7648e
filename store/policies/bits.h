/*
 * Fixed-width bit packing for the small-code policies (sign, fewbit,
 * bitpack). Internal.
 *
 * Codes of `bits` bits (0..32) are laid out back to back in little-endian
 * 64-bit words, code i at bit offset i * bits (a code may straddle two
 * words). as__bits_words(n, bits) words hold n codes.
 */
#ifndef AS_STORE_BITS_H
#define AS_STORE_BITS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline size_t as__bits_words(uint64_t n, unsigned bits)
{
    return (size_t)((n * bits + 63) / 64);
}

/* Bits needed for values 0..range (0 for range 0). */
static inline unsigned as__bits_for(uint64_t range)
{
    return range ? 64u - (unsigned)__builtin_clzll(range) : 0u;
}

/* Set code i to v (v < 2^bits; w zeroed before the first put). */
static inline void as__bits_put(uint64_t *w, uint64_t i, unsigned bits,
                                uint64_t v)
{
    uint64_t pos = i * bits;
    size_t k = (size_t)(pos >> 6);
    unsigned sh = (unsigned)(pos & 63);
    w[k] |= v << sh;
    if (sh + bits > 64)
        w[k + 1] |= v >> (64 - sh);
}

static inline uint64_t as__bits_get(const uint64_t *w, uint64_t i,
                                    unsigned bits)
{
    if (!bits)
        return 0;
    uint64_t pos = i * bits;
    size_t k = (size_t)(pos >> 6);
    unsigned sh = (unsigned)(pos & 63);
    uint64_t v = w[k] >> sh;
    if (sh + bits > 64)
        v |= w[k + 1] << (64 - sh);
    return bits == 64 ? v : v & ((1ull << bits) - 1);
}

#endif

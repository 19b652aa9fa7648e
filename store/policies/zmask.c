/*
 * Zero-mask kernels of the zstd codec (quant.h): count the all-zero
 * elements of a frame, split it into a bitmap of the nonzero elements plus
 * those elements packed, and join them back. Pure functions over caller
 * buffers, thread-safe.
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "store/policies/quant.h"
#include "util/simd.h"

/* ---- zero mask: split a frame into a bitmap and its nonzero elements ----
 *
 * Portable versions below; on x86-64 with AVX2 (checked at run time) the
 * 4-byte paths handle 8 elements per step with a permutation table: split
 * ("left-pack") permutes the nonzero lanes of 8 elements to the front and
 * stores all 8 (the slack past the packed elements is overwritten by the
 * next step), join loads 8 packed elements and permutes lane j from packed
 * position popcount(bits below j), zeroing the lanes whose bit is clear.
 * Both read or write at most 8 elements past the packed ones: the work
 * buffers have 64 bytes of slack. */


#if AS_X86_DISPATCH
static int32_t pack_idx[256][8] __attribute__((aligned(32)));
static int32_t unpack_idx[256][8] __attribute__((aligned(32)));
static bool have_avx2;
static pthread_once_t tab_once = PTHREAD_ONCE_INIT;

static void tab_init(void)
{
    for (int b = 0; b < 256; b++) {
        int k = 0;
        for (int j = 0; j < 8; j++)
            if (b >> j & 1)
                pack_idx[b][k++] = j;
        for (int j = k; j < 8; j++)
            pack_idx[b][j] = 0;
        int below = 0;
        for (int j = 0; j < 8; j++) {
            unpack_idx[b][j] = (b >> j & 1) ? below : 0;
            below += b >> j & 1;
        }
    }
    __builtin_cpu_init();
    have_avx2 = as_cpu_avx2();
}

static bool use_avx2(void)
{
    pthread_once(&tab_once, tab_init);
    return have_avx2 && !as__simd_portable();
}

/* The AVX2 kernels do whole groups of 8 elements and return how many
 * elements they did; the portable loops below finish from there. */
__attribute__((target("avx2,popcnt")))
static size_t count_zero4_avx2(const uint8_t *src, size_t ne, size_t *zeros)
{
    size_t z = 0, i = 0;
    const __m256i zero = _mm256_setzero_si256();
    for (; i + 8 <= ne; i += 8) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(const void *)(src + 4 * i));
        z += (size_t)__builtin_popcount((unsigned)_mm256_movemask_ps(
            _mm256_castsi256_ps(_mm256_cmpeq_epi32(v, zero))));
    }
    *zeros = z;
    return i;
}

__attribute__((target("avx2,popcnt")))
static size_t mask_split4_avx2(const uint8_t *src, size_t ne, uint8_t *bm,
                               uint8_t *tmp, size_t *packed)
{
    size_t k = 0, i = 0;
    const __m256i zero = _mm256_setzero_si256();
    for (; i + 8 <= ne; i += 8) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(const void *)(src + 4 * i));
        unsigned z = (unsigned)_mm256_movemask_ps(
            _mm256_castsi256_ps(_mm256_cmpeq_epi32(v, zero)));
        unsigned b = ~z & 0xffu;
        bm[i / 8] = (uint8_t)b;
        __m256i idx = _mm256_load_si256((const __m256i *)(const void *)pack_idx[b]);
        _mm256_storeu_si256((__m256i *)(void *)(tmp + 4 * k),
                            _mm256_permutevar8x32_epi32(v, idx));
        k += (size_t)__builtin_popcount(b);
    }
    *packed = k;
    return i;
}

__attribute__((target("avx2,popcnt")))
static size_t mask_join4_avx2(const uint8_t *bm, const uint8_t *packed, size_t ne,
                              uint8_t *dst, size_t *used)
{
    size_t k = 0, i = 0;
    const __m256i bits = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    for (; i + 8 <= ne; i += 8) {
        unsigned b = bm[i / 8];
        __m256i p = _mm256_loadu_si256((const __m256i *)(const void *)(packed + 4 * k));
        __m256i idx = _mm256_load_si256((const __m256i *)(const void *)unpack_idx[b]);
        __m256i e = _mm256_permutevar8x32_epi32(p, idx);
        __m256i m = _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32((int)b), bits), bits);
        _mm256_storeu_si256((__m256i *)(void *)(dst + 4 * i), _mm256_and_si256(e, m));
        k += (size_t)__builtin_popcount(b);
    }
    *used = k;
    return i;
}
#endif

/* ---- portable loops, from element i on (esize 2 or 4; called with a
 * constant esize so each size gets its own loop) ---- */

static inline bool is_zero(const uint8_t *p, size_t esize)
{
    uint32_t v = 0;
    memcpy(&v, p, esize);
    return v == 0;
}

static inline size_t count_zero_from(const uint8_t *src, size_t i, size_t ne,
                                     size_t esize)
{
    size_t z = 0;
    for (; i < ne; i++)
        z += is_zero(src + esize * i, esize);
    return z;
}

/* bm's bytes from i / 8 on are cleared here; i is a multiple of 8. */
static inline size_t split_from(const uint8_t *src, size_t i, size_t ne, size_t esize,
                                uint8_t *bm, uint8_t *tmp, size_t k)
{
    memset(bm + i / 8, 0, (ne + 7) / 8 - i / 8);
    for (; i < ne; i++) {
        memcpy(tmp + esize * k, src + esize * i, esize);
        unsigned nz = !is_zero(src + esize * i, esize);
        bm[i / 8] |= (uint8_t)(nz << (i % 8));
        k += nz;
    }
    return k;
}

static inline void join_from(const uint8_t *bm, const uint8_t *packed, size_t i,
                             size_t ne, size_t esize, uint8_t *dst, size_t k)
{
    for (; i < ne; i++) {
        unsigned nz = (bm[i / 8] >> (i % 8)) & 1u;
        uint32_t v = 0;
        memcpy(&v, packed + esize * k, esize);
        v = nz ? v : 0;
        memcpy(dst + esize * i, &v, esize);
        k += nz;
    }
}

/* Elements whose bits are all zero. */
size_t as__zmask_count_zero(const uint8_t *src, size_t ne, size_t esize)
{
    if (esize != 4)
        return count_zero_from(src, 0, ne, 2);
    size_t i = 0, z = 0;
#if AS_X86_DISPATCH
    if (use_avx2())
        i = count_zero4_avx2(src, ne, &z);
#endif
    return z + count_zero_from(src, i, ne, 4);
}

/* Mask mode: bitmap (bit i of byte i/8 = element i is nonzero) into bm and
 * the nonzero elements packed into tmp; returns their count. Branch-free. */
size_t as__zmask_split(const uint8_t *src, size_t ne, size_t esize,
                       uint8_t *bm, uint8_t *tmp)
{
    if (esize != 4)
        return split_from(src, 0, ne, 2, bm, tmp, 0);
    size_t i = 0, k = 0;
#if AS_X86_DISPATCH
    if (use_avx2())
        i = mask_split4_avx2(src, ne, bm, tmp, &k);
#endif
    return split_from(src, i, ne, 4, bm, tmp, k);
}

/* The inverse: element i = next packed element if its bit is set, else 0.
 * packed has slack past nnz (read, never used). */
void as__zmask_join(const uint8_t *bm, const uint8_t *packed, size_t ne,
                    size_t esize, uint8_t *dst)
{
    if (esize != 4) {
        join_from(bm, packed, 0, ne, 2, dst, 0);
        return;
    }
    size_t i = 0, k = 0;
#if AS_X86_DISPATCH
    if (use_avx2())
        i = mask_join4_avx2(bm, packed, ne, dst, &k);
#endif
    join_from(bm, packed, i, ne, 4, dst, k);
}

/*
 * NCHW <-> nChw16c (see ops_blk.h). Per image and channel block the
 * change is a transpose of a (16, HW) panel into (HW, 16) or back; the
 * AVX-512 path moves it 16x16 at a time through registers (unpack,
 * then 128-bit lane shuffles), so both sides are read and written in
 * whole 64-byte lines; the spatial tail and a partial last block use
 * masked loads and stores.
 */
#include "layers/ops_blk.h"

#include <stdatomic.h>
#include <stddef.h>
#include <string.h>

#include "util/simd.h"

static atomic_bool simd_on = true;

void as_blk16_use_simd(bool on)
{
    atomic_store(&simd_on, on);
}

/* ---- portable path ------------------------------------------------------ */

static void panel_to_blk_ref(const float *src, size_t ld, int nc, float *dst, int HW)
{
    for (int h = 0; h < HW; h++)
        for (int c = 0; c < 16; c++)
            dst[(size_t)h * 16 + c] = c < nc ? src[(size_t)c * ld + h] : 0.0f;
}

static void panel_to_nchw_ref(const float *src, int HW, float *dst, size_t ld, int nc)
{
    for (int c = 0; c < nc; c++)
        for (int h = 0; h < HW; h++)
            dst[(size_t)c * ld + h] = src[(size_t)h * 16 + c];
}

/* ---- AVX-512 path --------------------------------------------------------- */

#if AS_X86_DISPATCH
#define AVX512 __attribute__((target("avx512f")))

/* r (16 rows of 16) becomes its transpose. */
AVX512 __attribute__((always_inline)) static inline void tr16(__m512 r[16])
{
    __m512 t[16];
#pragma GCC unroll 16
    for (int i = 0; i < 8; i++) {   /* interleave 32-bit pairs of row pairs */
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
#pragma GCC unroll 16
    for (int i = 0; i < 4; i++) {   /* ... then 64-bit pairs */
        __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 1]);
        __m512d c = _mm512_castps_pd(t[4 * i + 2]), d = _mm512_castps_pd(t[4 * i + 3]);
        r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
        r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
#pragma GCC unroll 16
    for (int i = 0; i < 8; i++) {   /* 128-bit lanes across 4 rows apart */
        const int a = (i / 4) * 8 + i % 4;
        t[a] = _mm512_shuffle_f32x4(r[a], r[a + 4], 0x88);
        t[a + 4] = _mm512_shuffle_f32x4(r[a], r[a + 4], 0xdd);
    }
#pragma GCC unroll 16
    for (int i = 0; i < 8; i++) {   /* ... and 8 rows apart */
        r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
        r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
    }
}

/* One (16, HW) panel of stride ld (nc valid rows) into (HW, 16). */
AVX512 static void panel_to_blk(const float *src, size_t ld, int nc, float *dst, int HW)
{
    int h = 0;
    __m512 r[16];
    if (nc == 16)
        for (; h + 16 <= HW; h += 16) {
#pragma GCC unroll 16
            for (int c = 0; c < 16; c++)
                r[c] = _mm512_loadu_ps(src + (size_t)c * ld + h);
            tr16(r);
#pragma GCC unroll 16
            for (int j = 0; j < 16; j++)
                _mm512_storeu_ps(dst + (size_t)(h + j) * 16, r[j]);
        }
    for (; h < HW; h += 16) {
        const int m = HW - h < 16 ? HW - h : 16;
        const __mmask16 k = (__mmask16)((1u << m) - 1);
#pragma GCC unroll 16
        for (int c = 0; c < 16; c++)
            r[c] = _mm512_maskz_loadu_ps(c < nc ? k : 0, src + (size_t)(c < nc ? c : 0) * ld + h);
        tr16(r);
        for (int j = 0; j < m; j++)
            _mm512_storeu_ps(dst + (size_t)(h + j) * 16, r[j]);
    }
}

/* One (HW, 16) panel into nc rows of stride ld. */
AVX512 static void panel_to_nchw(const float *src, int HW, float *dst, size_t ld, int nc)
{
    int h = 0;
    __m512 r[16];
    if (nc == 16)
        for (; h + 16 <= HW; h += 16) {
#pragma GCC unroll 16
            for (int j = 0; j < 16; j++)
                r[j] = _mm512_loadu_ps(src + (size_t)(h + j) * 16);
            tr16(r);
#pragma GCC unroll 16
            for (int c = 0; c < 16; c++)
                _mm512_storeu_ps(dst + (size_t)c * ld + h, r[c]);
        }
    for (; h < HW; h += 16) {
        const int m = HW - h < 16 ? HW - h : 16;
        const __mmask16 k = (__mmask16)((1u << m) - 1);
#pragma GCC unroll 16
        for (int j = 0; j < 16; j++)
            r[j] = _mm512_maskz_loadu_ps(j < m ? 0xffff : 0, src + (size_t)(h + (j < m ? j : 0)) * 16);
        tr16(r);
        for (int c = 0; c < nc; c++)
            _mm512_mask_storeu_ps(dst + (size_t)c * ld + h, k, r[c]);
    }
}
#endif

static bool simd(void)
{
#if AS_X86_DISPATCH
    return atomic_load(&simd_on) && __builtin_cpu_supports("avx512f");
#else
    return false;
#endif
}

/* Every (image, channel block) panel: plain (NCHW) and blocked sides. */
static void panels(int N, int C, int HW, const float *src, float *dst, bool to_blk)
{
    const int CB = (C + 15) / 16;
    const bool v = simd();
    for (int n = 0; n < N; n++)
        for (int cb = 0; cb < CB; cb++) {
            const int nc = C - cb * 16 < 16 ? C - cb * 16 : 16;
            const size_t plain = ((size_t)n * C + (size_t)cb * 16) * HW;
            const size_t blk = ((size_t)n * CB + cb) * HW * 16;
#if AS_X86_DISPATCH
            if (v && to_blk) {
                panel_to_blk(src + plain, (size_t)HW, nc, dst + blk, HW);
                continue;
            }
            if (v) {
                panel_to_nchw(src + blk, HW, dst + plain, (size_t)HW, nc);
                continue;
            }
#endif
            if (to_blk)
                panel_to_blk_ref(src + plain, (size_t)HW, nc, dst + blk, HW);
            else
                panel_to_nchw_ref(src + blk, HW, dst + plain, (size_t)HW, nc);
        }
    (void)v;
}

void as_blk16_from_nchw(int N, int C, int HW, const float *src, float *dst)
{
    panels(N, C, HW, src, dst, true);
}

void as_blk16_to_nchw(int N, int C, int HW, const float *src, float *dst)
{
    panels(N, C, HW, src, dst, false);
}

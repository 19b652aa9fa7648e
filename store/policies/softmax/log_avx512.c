/*
 * The AVX-512 paths of the solog codec (any row length; four short rows
 * side by side): encode, and decode renormalized to mass 1. The same float
 * operations as the scalar paths in log.c, lane by lane (no FMA): the same
 * codes, bytes and weights. Codes are packed and unpacked with BMI2 pext /
 * pdep (the bit stream of sm_pack: code i at bit i B, little endian).
 * Callers check as__use_512() (pack512.h) first.
 */
#include <assert.h>
#include <string.h>

#include "store/policies/pack512.h"
#include "store/policies/softmax/log_impl.h"
#include "util/simd.h"

#if AS_X86_DISPATCH


/* Codes of 16 entries, #{j : max(y, 1e-38) <= thr[j]} (NaN, <= 0: the
 * tail), 0 past the row; packed 2B bytes to out + o of the row's nb bytes
 * (a byte-masked store: nothing past the row is touched). */
AS_INLINE_512 void sm_codes_put(const int B, const __m512 *thr, __m512 y, __mmask16 in,
                               uint8_t *out, size_t o, size_t nb)
{
    const __m512 tiny = _mm512_set1_ps(1e-38f);
    const __m512 x = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(y, tiny, _CMP_GT_OQ), tiny, y);
    const __m512i one = _mm512_set1_epi32(1);
    __m512i c = _mm512_setzero_si512();
    for (int j = 0; j < (1 << B) - 1; j++)
        c = _mm512_mask_add_epi32(c, _mm512_mask_cmp_ps_mask(in, x, thr[j], _CMP_LE_OQ),
                                  c, one);
    as__put_bytes(out + o, as__pack16(c, B), nb - o < 2 * (size_t)B ? nb - o : 2 * (size_t)B);
}

/* The row maximum: max(y, m) keeps m for NaN and y <= m, as sm_row_max;
 * the lanes start at +0. Thresholds as as__sm_solog_thresholds. */
AS_INLINE_512 bool sm_thresholds(const int B, __m512 mx, __m512 *thr)
{
    const float m = _mm512_reduce_max_ps(mx);
    if (!(m > 0.0f))
        return false;
    float t[SM_MAXC];
    as__sm_solog_thresholds(B, m, t);
    for (int j = 0; j < (1 << B) - 1; j++)
        thr[j] = _mm512_set1_ps(t[j]);
    return true;
}

/* R short rows (n <= SM_SHORT) side by side, phase by phase (loads and
 * maxima, thresholds, codes): one row is a chain, R chains overlap. Rows
 * go back to back from out; false, with nothing usable written, when a
 * row has no positive entry. */
#define SM_SHORT 64
AS_INLINE_512 bool sm_encode_short(const int B, const int R, const float *const *v,
                                  const size_t *n, uint8_t *out, size_t *used)
{
    __m512 y[4][SM_SHORT / 16], mx[4], thr[4][SM_MAXC];
    for (int r = 0; r < R; r++) {
        mx[r] = _mm512_setzero_ps();
        for (size_t i = 0; i < n[r]; i += 16) {
            y[r][i / 16] = _mm512_maskz_loadu_ps(as__mask16(n[r] - i), v[r] + i);
            mx[r] = _mm512_max_ps(y[r][i / 16], mx[r]);
        }
    }
    for (int r = 0; r < R; r++)
        if (!sm_thresholds(B, mx[r], thr[r]))
            return false;
    for (int r = 0; r < R; r++) {
        const size_t nb = (n[r] * (size_t)B + 7) / 8;
        for (size_t i = 0; i < n[r]; i += 16)
            sm_codes_put(B, thr[r], y[r][i / 16], as__mask16(n[r] - i), out,
                         i / 8 * (size_t)B, nb);
        used[r] = nb;
        out += nb;
    }
    return true;
}

/* One row of any length: the max, then the codes chunk by chunk. */
AS_INLINE_512 size_t sm_encode_long(const int B, const float *v, size_t n, uint8_t *out)
{
    __m512 mx = _mm512_setzero_ps(), thr[SM_MAXC];
    for (size_t i = 0; i < n; i += 16)
        mx = _mm512_max_ps(_mm512_maskz_loadu_ps(as__mask16(n - i), v + i), mx);
    if (!sm_thresholds(B, mx, thr))
        return 0;
    const size_t nb = (n * (size_t)B + 7) / 8;
    for (size_t i = 0; i < n; i += 16) {
        const __mmask16 in = as__mask16(n - i);
        sm_codes_put(B, thr, _mm512_maskz_loadu_ps(in, v + i), in, out,
                     i / 8 * (size_t)B, nb);
    }
    return nb;
}

AS_INLINE_512 size_t sm_encode_one(const int B, const float *v, size_t n, uint8_t *out)
{
    size_t used = 0;
    if (n > SM_SHORT)
        return sm_encode_long(B, v, n, out);
    return sm_encode_short(B, 1, &v, &n, out, &used) ? used : 0;
}

AS_TARGET_512 size_t as__sm_solog_encode_avx512(int B, const float *v, size_t n, uint8_t *out)
{
    switch (B) {
    case 2:
        return sm_encode_one(2, v, n, out);
    case 3:
        return sm_encode_one(3, v, n, out);
    default:
        return sm_encode_one(4, v, n, out);
    }
}

AS_TARGET_512 bool as__sm_solog_encode4_avx512(int B, const float *const *v, const size_t *n,
                                       uint8_t *out, size_t *used)
{
    for (int r = 0; r < 4; r++)
        if (n[r] < 1 || n[r] > SM_SHORT)
            return false;
    switch (B) {
    case 2:
        return sm_encode_short(2, 4, v, n, out, used);
    case 3:
        return sm_encode_short(3, 4, v, n, out, used);
    default:
        return sm_encode_short(4, 4, v, n, out, used);
    }
}

/* Weights of codes [i, i + 16) (0 past the row). */
AS_INLINE_512 __m512 sm_weights16(const int B, __m512 tab, const uint8_t *in, size_t i,
                                 size_t nb, __mmask16 inm)
{
    const size_t o = i / 8 * (size_t)B;
    const __m128i cb = as__unpack16(as__get_bytes(in + o, nb - o < 8 ? nb - o : 8), B);
    return _mm512_maskz_permutexvar_ps(inm, _mm512_cvtepu8_epi32(cb), tab);
}

/* acc (eight double lanes) += entries i .. i + 7, then i + 8 .. i + 15:
 * entry i into lane i mod 8 in ascending i, the partial sums of
 * sm_normalize (adding +0 past the row changes nothing). */
AS_INLINE_512 __m512d sm_sum16(__m512d acc, __m512 w)
{
    acc = _mm512_add_pd(acc, _mm512_cvtps_pd(_mm512_castps512_ps256(w)));
    return _mm512_add_pd(acc, _mm512_cvtps_pd(_mm256_castpd_ps(
                                  _mm512_extractf64x4_pd(_mm512_castps_pd(w), 1))));
}

/* The scale of a row from its partial sums, combined as sm_normalize
 * does; 0 when the row has no mass (it decodes uniform). */
AS_INLINE_512 float sm_scale(__m512d acc)
{
    double a[8];
    _mm512_storeu_pd(a, acc);
    const double zl = ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]));
    return zl > 0.0 ? (float)(1.0 / zl) : 0.0f;
}

/* Multiply wt[i .. i + 16) (already weights, w) by inv, or write the
 * uniform 1 / n when inv is 0. */
AS_INLINE_512 void sm_put_scaled(float *wt, size_t i, size_t n, __m512 w, float inv)
{
    const __m512 x = inv > 0.0f ? _mm512_mul_ps(w, _mm512_set1_ps(inv))
                                : _mm512_set1_ps(1.0f / (float)n);
    _mm512_mask_storeu_ps(wt + i, as__mask16(n - i), x);
}

/* R short rows stored back to back, phase by phase as the encode. */
AS_INLINE_512 size_t sm_decode_short(const int B, const int R, const sm_table *t,
                                    const uint8_t *in, const size_t *n, float *const *wt)
{
    const __m512 tab = _mm512_loadu_ps(t->wt);
    __m512 w[4][SM_SHORT / 16];
    __m512d acc[4];
    const uint8_t *p = in;
    for (int r = 0; r < R; r++) {
        const size_t nb = (n[r] * (size_t)B + 7) / 8;
        acc[r] = _mm512_setzero_pd();
        for (size_t i = 0; i < n[r]; i += 16) {
            w[r][i / 16] = sm_weights16(B, tab, p, i, nb, as__mask16(n[r] - i));
            acc[r] = sm_sum16(acc[r], w[r][i / 16]);
        }
        p += nb;
    }
    for (int r = 0; r < R; r++) {
        const float inv = sm_scale(acc[r]);
        for (size_t i = 0; i < n[r]; i += 16)
            sm_put_scaled(wt[r], i, n[r], w[r][i / 16], inv);
    }
    return (size_t)(p - in);
}

/* One row of any length: weights stored, summed, then scaled in place. */
AS_INLINE_512 size_t sm_decode_long(const int B, const sm_table *t, const uint8_t *in,
                                   size_t n, float *wt)
{
    const __m512 tab = _mm512_loadu_ps(t->wt);
    const size_t nb = (n * (size_t)B + 7) / 8;
    __m512d acc = _mm512_setzero_pd();
    for (size_t i = 0; i < n; i += 16) {
        const __mmask16 inm = as__mask16(n - i);
        const __m512 w = sm_weights16(B, tab, in, i, nb, inm);
        _mm512_mask_storeu_ps(wt + i, inm, w);
        acc = sm_sum16(acc, w);
    }
    const float inv = sm_scale(acc);
    for (size_t i = 0; i < n; i += 16)
        sm_put_scaled(wt, i, n, _mm512_maskz_loadu_ps(as__mask16(n - i), wt + i), inv);
    return nb;
}

AS_INLINE_512 size_t sm_decode_rows(const int B, const sm_table *t, const uint8_t *in,
                                   const size_t *n, float *const *wt, int cnt)
{
    if (cnt == 4 && n[0] <= SM_SHORT && n[1] <= SM_SHORT && n[2] <= SM_SHORT &&
        n[3] <= SM_SHORT)
        return sm_decode_short(B, 4, t, in, n, wt);
    const uint8_t *p = in;
    for (int r = 0; r < cnt; r++)
        p += n[r] <= SM_SHORT ? sm_decode_short(B, 1, t, p, n + r, wt + r)
                              : sm_decode_long(B, t, p, n[r], wt[r]);
    return (size_t)(p - in);
}

AS_TARGET_512 size_t as__sm_solog_decode_avx512(const sm_table *t, int B, const uint8_t *in,
                                        const size_t *n, float *const *wt, int cnt)
{
    switch (B) {
    case 2:
        return sm_decode_rows(2, t, in, n, wt, cnt);
    case 3:
        return sm_decode_rows(3, t, in, n, wt, cnt);
    default:
        return sm_decode_rows(4, t, in, n, wt, cnt);
    }
}

#else
size_t as__sm_solog_encode_avx512(int B, const float *v, size_t n, uint8_t *out)
{
    (void)B, (void)v, (void)n, (void)out;
    return 0;
}

bool as__sm_solog_encode4_avx512(int B, const float *const *v, const size_t *n,
                                 uint8_t *out, size_t *used)
{
    (void)B, (void)v, (void)n, (void)out, (void)used;
    return false;
}

size_t as__sm_solog_decode_avx512(const sm_table *t, int B, const uint8_t *in,
                                  const size_t *n, float *const *wt, int cnt)
{
    (void)t, (void)B, (void)in, (void)n, (void)wt, (void)cnt;
    assert(0);
    return 0;
}
#endif

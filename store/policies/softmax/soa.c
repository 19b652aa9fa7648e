/*
 * soa:S — the softmax output approximation of Lee & Lee (NeurIPS 2023), as
 * their published code does it, per row of n valid entries:
 *
 *   1. order the row descending; keep the S largest (hi) and S smallest
 *      (lo) values in fp32 and, for every valid entry, its rank in that
 *      order (u8 when n <= 256, u16 above: the published code used u8 and
 *      wrapped silently). Rows with n <= 2S are kept exactly.
 *   2. h = hi[S-1], l = lo[0] (sorted position n-S), g = the first evicted
 *      value (sorted position S);
 *        lambda = (ln(h/l) + 2 (h - g)) / ((1 - h) (n - 2S + 1))
 *      (fullden: the denominator uses the row length L instead, as the
 *      published code does when no mask is given).
 *   3. decode: the evicted entry at sorted position S-1+j (j = 1..n-2S)
 *      gets h exp(-lambda j), rescaled so the evicted entries hold the
 *      mass 1 - sum(hi) - sum(lo) (clamped at 0).
 *
 * The published code adds 1e-8 to the kept values before the logarithm; we
 * keep hi and lo bit-exact and add the 1e-8 inside the logarithm only (the
 * only place it matters: l may be 0). Masks are applied before ordering, in
 * key order, so any mask is right (the published code masked the sorted row
 * with the unsorted mask, right only for prefix masks).
 *
 * Row layout (n > 2S): hi[S] f32, lo[S] f32, lambda f32, rank[n] (u8|u16,
 * little endian, in key order of the valid entries). Bytes: (2S+1)*4 + n*r.
 *
 * Ordering: only the rank code needs a full order (hi and lo alone would be
 * two linear-time selections). The order is an LSD radix sort on the float
 * bits (non-negative floats order like their bit patterns), 8-bit digits,
 * digit passes whose bucket holds every key skipped (softmax values share
 * their top bits). Short rows (n <= 64): each entry's rank counted by
 * vector comparisons (the radix's 4 x 256-bin prefix sums dominate there);
 * soa's encode of such rows runs in AVX2 when the CPU has it, four rows per
 * call (as__sm_soa_encode4). Measured in `actstore bench softmax` (encode
 * rows/s, "order") against qsort.
 */
#include <assert.h>
#include <math.h>
#include <string.h>

#include "store/policies/softmax/softmax.h"
#include "util/simd.h"

/* Sort key: descending value = ascending ~bits; non-positive and NaN
 * values sort as 0 (last). */
static inline uint32_t sm_key(float f)
{
    uint32_t b;
    if (!(f > 0.0f))
        f = 0.0f;
    memcpy(&b, &f, sizeof b);
    return ~b;
}

#define SM_RANK_MAX 64   /* rank counting up to here, then radix */


typedef int32_t sm_v8i __attribute__((vector_size(32)));

/* Strict counts c[i] = #{j < n : k[j] < k[i]} for n <= 64, eight entries
 * at a time in the lanes of one vector (the counts of a lane never leave
 * its register: one broadcast, one compare, one subtract per 8 pairs),
 * two vectors per pass over j. k holds 64 entries (those past n are
 * read, never counted), c gets 64 (those past n are junk). Plain GNU C
 * vectors: SSE2 on any x86-64, AVX2 when the caller is compiled for it. */
static inline __attribute__((always_inline)) void
sm_count_body(const int32_t *k, size_t n, uint32_t *c)
{
    const size_t nv = (n + 7) / 8;
    size_t b = 0;
    for (; b + 4 <= nv; b += 4) {
        sm_v8i k0, k1, k2, k3, a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
        memcpy(&k0, k + 8 * b, sizeof k0);
        memcpy(&k1, k + 8 * b + 8, sizeof k1);
        memcpy(&k2, k + 8 * b + 16, sizeof k2);
        memcpy(&k3, k + 8 * b + 24, sizeof k3);
        for (size_t j = 0; j < n; j++) {
            const sm_v8i s = (sm_v8i){0} + k[j];
            a0 -= k0 > s;      /* a true compare is -1 in its lane */
            a1 -= k1 > s;
            a2 -= k2 > s;
            a3 -= k3 > s;
        }
        memcpy(c + 8 * b, &a0, sizeof a0);
        memcpy(c + 8 * b + 8, &a1, sizeof a1);
        memcpy(c + 8 * b + 16, &a2, sizeof a2);
        memcpy(c + 8 * b + 24, &a3, sizeof a3);
    }
    /* the last 1..3 vectors in one pass of their own (not a padded 4) */
    if (nv - b == 3) {
        sm_v8i k0, k1, k2, a0 = {0}, a1 = {0}, a2 = {0};
        memcpy(&k0, k + 8 * b, sizeof k0);
        memcpy(&k1, k + 8 * b + 8, sizeof k1);
        memcpy(&k2, k + 8 * b + 16, sizeof k2);
        for (size_t j = 0; j < n; j++) {
            const sm_v8i s = (sm_v8i){0} + k[j];
            a0 -= k0 > s;
            a1 -= k1 > s;
            a2 -= k2 > s;
        }
        memcpy(c + 8 * b, &a0, sizeof a0);
        memcpy(c + 8 * b + 8, &a1, sizeof a1);
        memcpy(c + 8 * b + 16, &a2, sizeof a2);
    } else if (nv - b == 2) {
        sm_v8i k0, k1, a0 = {0}, a1 = {0};
        memcpy(&k0, k + 8 * b, sizeof k0);
        memcpy(&k1, k + 8 * b + 8, sizeof k1);
        for (size_t j = 0; j < n; j++) {
            const sm_v8i s = (sm_v8i){0} + k[j];
            a0 -= k0 > s;
            a1 -= k1 > s;
        }
        memcpy(c + 8 * b, &a0, sizeof a0);
        memcpy(c + 8 * b + 8, &a1, sizeof a1);
    } else if (nv - b == 1) {
        sm_v8i k0, a0 = {0};
        memcpy(&k0, k + 8 * b, sizeof k0);
        for (size_t j = 0; j < n; j++)
            a0 -= k0 > ((sm_v8i){0} + k[j]);
        memcpy(c + 8 * b, &a0, sizeof a0);
    }
}

#if AS_X86_DISPATCH

__attribute__((target("avx2"))) static void
sm_count_avx2(const int32_t *k, size_t n, uint32_t *c)
{
    sm_count_body(k, n, c);   /* two passes of 4 vectors keep the compare ports busy */
}
#endif

static void sm_count_base(const int32_t *k, size_t n, uint32_t *c)
{
    sm_count_body(k, n, c);
}

/* Rank of each of v[0..n-1] (n <= 64) in descending order, ties by
 * ascending position: rk[i] = #{j : (key_j, j) < (key_i, i)}. Strict
 * counts first; equal keys share a count, which the permutation check
 * finds (then ties are broken by position, O(n^2), only for such rows). */
static void sm_rank_small(const float *v, size_t n, uint32_t *rk)
{
    int32_t sk[SM_RANK_MAX];
    size_t i = 0;
    for (; i < n; i++)
        sk[i] = (int32_t)(sm_key(v[i]) ^ 0x80000000u);
    for (; i < SM_RANK_MAX; i++)
        sk[i] = INT32_MAX;
#if AS_X86_DISPATCH
    if (as_cpu_avx2())
        sm_count_avx2(sk, n, rk);
    else
#endif
        sm_count_base(sk, n, rk);
    uint64_t seen = 0;
    for (i = 0; i < n; i++)
        seen |= (uint64_t)1 << rk[i];
    if (seen == (n == 64 ? ~(uint64_t)0 : ((uint64_t)1 << n) - 1))
        return;   /* a permutation: no two keys equal */
    for (i = 0; i < n; i++) {
        uint32_t t = 0;
        for (size_t j = 0; j < i; j++)
            t += sk[j] == sk[i];
        rk[i] += t;
    }
}

#if AS_X86_DISPATCH
/* soa's whole use of the order for a short row (2S < n <= 64) in AVX2
 * vectors: the keys, the rank counts (sm_count_body), the rank code
 * narrowed to bytes (at kept + 8S + 4), and the 2S + 1 kept values
 * (ranks 0..S-1 and n-S..n-1 as the stored hi / lo, kept[0..2S-1]; rank
 * S, g, at kept[2S], lambda's place, for the caller's lambda) picked by a
 * mask of their lanes instead of a scatter of the whole order. The stored values
 * depend only on the keys (v clamped at 0). Returns false, writing
 * nothing, when two keys are equal: the counts sum to n (n - 1) / 2 only
 * when they are a permutation; the caller breaks ties then. */
__attribute__((target("avx2"))) static bool
sm_soa_small_avx2(const float *v, size_t n, size_t S, uint8_t *kept)
{
    uint8_t *code = kept + 8 * S + 4;
    const int nv = (int)((n + 7) / 8);
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    int32_t sk[SM_RANK_MAX];
    uint32_t rk[SM_RANK_MAX];
    float xa[SM_RANK_MAX];
    __m256i in[SM_RANK_MAX / 8];
    for (int b = 0; b < SM_RANK_MAX / 8; b++) {
        in[b] = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n - 8 * b), lane);
        const __m256 y = _mm256_maskload_ps(v + 8 * b, in[b]);  /* 0 past n */
        const __m256 x = _mm256_and_ps(y, _mm256_cmp_ps(y, _mm256_setzero_ps(),
                                                          _CMP_GT_OQ));
        _mm256_storeu_ps(xa + 8 * b, x);
        _mm256_storeu_si256((__m256i *)(void *)(sk + 8 * b),
                            _mm256_xor_si256(_mm256_castps_si256(x),
                                             _mm256_set1_epi32(0x7fffffff)));
    }
    sm_count_avx2(sk, n, rk);
    __m256i sum = _mm256_setzero_si256();
    uint64_t need = 0;
    uint8_t cb[SM_RANK_MAX];
    const __m256i lo_ = _mm256_set1_epi32((int)S + 1);
    const __m256i hi_ = _mm256_set1_epi32((int)(n - S) - 1);
    for (int b = 0; b < nv; b++) {
        const __m256i c = _mm256_and_si256(
            _mm256_loadu_si256((const __m256i *)(const void *)(rk + 8 * b)),
            in[b]);
        sum = _mm256_add_epi32(sum, c);
        const __m256i sel = _mm256_and_si256(
            _mm256_or_si256(_mm256_cmpgt_epi32(lo_, c),
                            _mm256_cmpgt_epi32(c, hi_)), in[b]);
        need |= (uint64_t)(uint32_t)_mm256_movemask_ps(
                    _mm256_castsi256_ps(sel)) << (8 * b);
        const __m256i p16 = _mm256_packus_epi32(c, c);
        const __m256i p8 = _mm256_packus_epi16(p16, p16);
        const uint32_t w0 = (uint32_t)_mm256_extract_epi32(p8, 0);
        const uint32_t w1 = (uint32_t)_mm256_extract_epi32(p8, 4);
        memcpy(cb + 8 * b, &w0, 4);
        memcpy(cb + 8 * b + 4, &w1, 4);
    }
    __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(sum),
                               _mm256_extracti128_si256(sum, 1));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
    if ((size_t)(uint32_t)_mm_cvtsi128_si32(s4) != n * (n - 1) / 2)
        return false;
    /* n > 2S >= 2 bytes of code, in fixed-size copies (no call) */
    size_t q = 0;
    for (; q + 8 <= n; q += 8)
        memcpy(code + q, cb + q, 8);
    if (q < n && n >= 8)
        memcpy(code + n - 8, cb + n - 8, 8);
    else
        for (; q < n; q++)
            code[q] = cb[q];
    /* hi (ranks 0..S-1) and lo (ranks n-S..n-1) straight into kept, rank
     * S (g, for lambda) into lambda's own slot until lambda replaces it:
     * 4-byte stores, read back 4 bytes at a time (a staging array copied
     * with memcpy stalled store forwarding) */
    for (; need; need &= need - 1) {
        const unsigned i = (unsigned)__builtin_ctzll(need);
        const size_t r = rk[i];
        /* r < S: hi at r; r > S: lo at r + 2S - n; r == S: 2S. By masks,
         * not branches: which class the next set lane is in is data (the
         * branches mispredicted several times per row) */
        const size_t mh = (size_t)0 - (size_t)(r < S),
                     ml = (size_t)0 - (size_t)(r > S);
        const size_t d = (r & mh) | ((r + 2 * S - n) & ml) |
                         (2 * S & ~(mh | ml));
        memcpy(kept + 4 * d, xa + i, 4);
    }
    return true;
}
#endif

void as__sm_order_desc(const float *v, size_t n, uint32_t *ord, as__sm_work *w)
{
    assert(n <= w->cap);
    if (n <= SM_RANK_MAX) {
        /* rank counting by vector compares: n^2 / 8 steps, no branch on
         * the data, no table to clear; faster than the radix below on
         * short rows */
        uint32_t rk[SM_RANK_MAX];
        sm_rank_small(v, n, rk);
        for (size_t i = 0; i < n; i++)
            ord[rk[i]] = (uint32_t)i;
        return;
    }
    uint32_t *key = w->key;
    for (size_t i = 0; i < n; i++)
        key[i] = sm_key(v[i]);
    /* LSD radix, 4 x 8 bits, all histograms in one pass */
    uint32_t hist[4][256];
    memset(hist, 0, sizeof hist);
    for (size_t i = 0; i < n; i++) {
        uint32_t k = key[i];
        hist[0][k & 255]++;
        hist[1][(k >> 8) & 255]++;
        hist[2][(k >> 16) & 255]++;
        hist[3][k >> 24]++;
    }
    uint32_t *src = ord, *dst = w->tmp;
    for (size_t i = 0; i < n; i++)
        src[i] = (uint32_t)i;
    for (int d = 0; d < 4; d++) {
        uint32_t *h = hist[d];
        int shift = 8 * d;
        if (h[(key[0] >> shift) & 255] == n)
            continue;   /* every key has this digit: pass is a no-op */
        uint32_t sum = 0;
        for (int b = 0; b < 256; b++) {
            uint32_t c = h[b];
            h[b] = sum;
            sum += c;
        }
        for (size_t i = 0; i < n; i++) {
            uint32_t p = src[i];
            dst[h[(key[p] >> shift) & 255]++] = p;
        }
        uint32_t *t = src;
        src = dst;
        dst = t;
    }
    if (src != ord)
        memcpy(ord, src, n * sizeof *ord);
}

static inline void put_f32(uint8_t *p, float f) { memcpy(p, &f, 4); }
static inline float get_f32(const uint8_t *p)
{
    float f;
    memcpy(&f, p, 4);
    return f;
}

/* lambda from h = hi[S-1], l = lo[0], g = the first evicted value, to
 * out + 8S */
static void sm_soa_lambda(const as__sm_params *p, float h, float l, float g,
                          size_t n, size_t len, uint8_t *out)
{
    /* in float (stored as float anyway): logf and float divisions instead
     * of the double log and divisions (format v1 blobs differ from the
     * double ones in lambda's last bits only; the test's double reference
     * agrees to 1e-6 on the decoded rows) */
    const size_t S = (size_t)p->s;
    float den = p->fullden ? (float)len : (float)(n - 2 * S + 1);
    float lam = (logf((h + 1e-8f) / (l + 1e-8f)) + 2.0f * (h - g)) /
                ((1.0f - h) * den);
    if (isnan(lam) || lam < 0.0f)
        lam = 0.0f;            /* h == 1 with g == h: nothing to decay */
    put_f32(out + 8 * S, lam);  /* +inf stays +inf: all mass to j=1 */
}

bool as__sm_soa_encode4(const as__sm_params *p, const float *const *v,
                       const size_t *n, size_t len, uint8_t *out,
                       size_t *used)
{
#if AS_X86_DISPATCH
    const size_t S = (size_t)p->s;
    if (p->kind != AS_SM_SOA || !as_cpu_avx2())
        return false;
    uint8_t *o[4];
    for (int r = 0; r < 4; r++) {
        if (n[r] <= 2 * S || n[r] > SM_RANK_MAX)
            return false;
        used[r] = 8 * S + 4 + n[r];
        o[r] = r ? o[r - 1] + used[r - 1] : out;
    }
    /* the order work row by row, then the four lambdas together: each is
     * a chain of a log and two divisions that one row alone waits for */
    for (int r = 0; r < 4; r++)
        if (!sm_soa_small_avx2(v[r], n[r], S, o[r]))
            return false;   /* ties: the caller encodes row by row */
    for (int r = 0; r < 4; r++) {
        sm_soa_lambda(p, get_f32(o[r] + 4 * (S - 1)), get_f32(o[r] + 4 * S),
                      get_f32(o[r] + 8 * S), n[r],
                      len, o[r]);
    }
    return true;
#else
    (void)p, (void)v, (void)n, (void)len, (void)out, (void)used;
    return false;
#endif
}

size_t as__sm_soa_encode(const as__sm_params *p, const float *v, size_t n,
                        size_t len, uint8_t *out, as__sm_work *w)
{
    const size_t S = (size_t)p->s;
    if (n <= 2 * S) {
        memcpy(out, v, n * sizeof(float));
        return n * sizeof(float);
    }
    uint8_t *o = out;
#if AS_X86_DISPATCH
    if (n <= SM_RANK_MAX && as_cpu_avx2() &&
        sm_soa_small_avx2(v, n, S, o)) {
        sm_soa_lambda(p, get_f32(o + 4 * (S - 1)), get_f32(o + 4 * S),
                      get_f32(o + 8 * S), n, len, o);
        return 8 * S + 4 + n;
    }
#endif
    uint32_t *ord = w->ord;
    uint32_t rk[SM_RANK_MAX];
    if (n <= SM_RANK_MAX) {
        /* the ranks are the code; the order is only read at 2S + 1 places */
        sm_rank_small(v, n, rk);
        for (size_t i = 0; i < n; i++)
            ord[rk[i]] = (uint32_t)i;
    } else {
        as__sm_order_desc(v, n, ord, w);
    }

    for (size_t i = 0; i < S; i++) {
        float x = v[ord[i]];
        put_f32(o + 4 * i, x > 0.0f ? x : 0.0f);
    }
    for (size_t i = 0; i < S; i++) {
        float x = v[ord[n - S + i]];
        put_f32(o + 4 * (S + i), x > 0.0f ? x : 0.0f);
    }
    float g = v[ord[S]] > 0.0f ? v[ord[S]] : 0.0f;
    sm_soa_lambda(p, get_f32(o + 4 * (S - 1)), get_f32(o + 4 * S), g, n, len,
                  o);
    o += 8 * S + 4;

    /* rank of every valid entry, in key order */
    if (n <= SM_RANK_MAX) {
        for (size_t i = 0; i < n; i++)
            o[i] = (uint8_t)rk[i];
        o += n;
    } else if (n <= 256) {
        for (size_t r = 0; r < n; r++)
            o[ord[r]] = (uint8_t)r;
        o += n;
    } else {
        for (size_t r = 0; r < n; r++) {
            uint16_t rr = (uint16_t)r;
            memcpy(o + 2 * ord[r], &rr, 2);
        }
        o += 2 * n;
    }
    return (size_t)(o - out);
}

#if AS_X86_DISPATCH
/* vl[i] = val[min(rk[i], nl - 1)] for i < nl <= 64 (the decode's lookup):
 * the table in four registers, 16 entries per two two-register permutes
 * and a blend on bit 5 of the rank; loads and stores masked to the row
 * (the same values as the scalar loop, without its per-entry loads). */
__attribute__((target("avx512f,avx512bw,avx512vl"))) static void
sm_lookup64_avx512(const float *val, size_t nl, const uint8_t *rk, float *vl)
{
    __m512 t[4];
    for (int k = 0; k < 4; k++) {
        const size_t b = 16 * (size_t)k;
        const __mmask16 m = b >= nl ? 0 : nl - b >= 16 ? 0xffff
                                                          : (__mmask16)((1u << (nl - b)) - 1);
        t[k] = _mm512_maskz_loadu_ps(m, val + b);
    }
    const __m512i top = _mm512_set1_epi32((int)nl - 1), bit5 = _mm512_set1_epi32(32);
    for (size_t i = 0; i < nl; i += 16) {
        const __mmask16 m = nl - i >= 16 ? 0xffff : (__mmask16)((1u << (nl - i)) - 1);
        __m512i idx = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, rk + i));
        idx = _mm512_min_epu32(idx, top);   /* corrupt: in bounds */
        const __m512 lo = _mm512_permutex2var_ps(t[0], idx, t[1]);
        const __m512 hi = _mm512_permutex2var_ps(t[2], idx, t[3]);
        _mm512_mask_storeu_ps(vl + i, m,
                              _mm512_mask_blend_ps(_mm512_test_epi32_mask(idx, bit5), lo, hi));
    }
}

static int sm_have_avx512(void)
{
    return as_cpu_avx512bw();
}
#endif

/* Decode cnt <= AS_SM_SOA_LANES rows at once. Per row the values by rank
 * go into a table (hi, the rebuilt evicted values, lo), then every entry
 * is one lookup by its rank: no branch on the data. The evicted weights
 * q^j come four powers per step (four short chains of products and sums
 * instead of one long one). Each row sees exactly the operations it sees
 * alone, in the same order (bit-identical to decoding the rows one by
 * one). */
/* the table loops in the widest vectors the CPU has (picked at load time) */
AS_CLONES_V4_V3
void as__sm_soa_decode_rows(const as__sm_params *p, const uint8_t *const *in,
                           const size_t *n, float *const *v, int cnt,
                           as__sm_work *w)
{
    const size_t S = (size_t)p->s, cap = w->cap;
    assert(cnt >= 1 && cnt <= AS_SM_SOA_LANES && S <= 256);
    double q[AS_SM_SOA_LANES], target[AS_SM_SOA_LANES];
    size_t m[AS_SM_SOA_LANES];
    bool dec[AS_SM_SOA_LANES];
    for (int l = 0; l < cnt; l++) {
        const size_t nl = n[l];
        dec[l] = nl > 2 * S;
        m[l] = 0;
        if (!dec[l]) {
            memcpy(v[l], in[l], nl * sizeof(float));
            continue;
        }
        float *val = w->val + (size_t)l * cap;
        double kept = 0.0;
        for (size_t i = 0; i < S; i++) {
            float h = get_f32(in[l] + 4 * i), lw = get_f32(in[l] + 4 * (S + i));
            val[i] = h;
            val[nl - S + i] = lw;
            kept += (double)h + (double)lw;
        }
        double lam = get_f32(in[l] + 8 * S);
        /* evicted weights exp(-lambda (j-1)), j = 1..m, normalized to
         * the target mass: the same as h exp(-lambda j) rescaled, but
         * never underflows to an empty sum. */
        target[l] = 1.0 - kept;
        if (!(target[l] > 0.0))
            target[l] = 0.0;
        q[l] = (double)expf(-(float)lam);   /* lam is a float */
        m[l] = nl - 2 * S;
    }
    double *tab = w->tab;
    for (int l = 0; l < cnt; l++) {
        if (!dec[l])
            continue;
        /* t_j = q^j, j = 0..m-1, four powers per step (q^j .. q^(j+3),
         * each times q^4) and four partial sums: a quarter of the chain
         * a single product per entry was (values equal to rounding; the
         * sum in a fixed order, so the same row decodes the same bits) */
        double *tl = tab + (size_t)l * cap;
        const double ql = q[l], q2 = ql * ql, q4 = q2 * q2;
        double p0 = 1.0, p1 = ql, p2 = q2, p3 = q2 * ql;
        double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
        size_t j = 0;
        for (; j + 4 <= m[l]; j += 4) {
            tl[j] = p0, tl[j + 1] = p1, tl[j + 2] = p2, tl[j + 3] = p3;
            s0 += p0, s1 += p1, s2 += p2, s3 += p3;
            p0 *= q4, p1 *= q4, p2 *= q4, p3 *= q4;
        }
        const double rest[3] = {p0, p1, p2};
        for (size_t e = 0; j < m[l]; j++, e++) {
            tl[j] = rest[e];
            s0 += rest[e];
        }
        const double zl = (s0 + s1) + (s2 + s3);
        const double c = target[l] / zl;
        float *val = w->val + (size_t)l * cap + S;
        for (size_t i = 0; i < m[l]; i++)
            val[i] = (float)(tl[i] * c);
        val -= S;
        const size_t nl = n[l];
        const uint8_t *rk = in[l] + 8 * S + 4;
        float *vl = v[l];
#if AS_X86_DISPATCH
        if (nl <= 64 && sm_have_avx512()) {
            sm_lookup64_avx512(val, nl, rk, vl);
            continue;
        }
#endif
        if (nl <= 256) {
            for (size_t i = 0; i < nl; i++) {
                size_t r = rk[i];
                vl[i] = val[r < nl ? r : nl - 1];  /* corrupt: in bounds */
            }
        } else {
            for (size_t i = 0; i < nl; i++) {
                uint16_t rr;
                memcpy(&rr, rk + 2 * i, 2);
                vl[i] = val[rr < nl ? rr : nl - 1];
            }
        }
    }
}

size_t as__sm_soa_decode(const as__sm_params *p, const uint8_t *in, size_t n,
                        float *v, as__sm_work *w)
{
    as__sm_soa_decode_rows(p, &in, &n, &v, 1, w);
    return as__sm_row_bytes(p, n, n);
}

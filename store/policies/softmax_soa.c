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
 * their top bits). Short rows: insertion sort (n <= 48), then counting
 * each entry's rank by vectorized comparisons up to n = 64 (the radix's
 * 4 x 256-bin prefix sums dominate there). Measured in `actstore bench
 * softmax` (encode rows/s, "order") against qsort.
 */
#include <assert.h>
#include <math.h>
#include <string.h>

#include "store/policies/softmax.h"

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

#define SM_RANK_MAX 64   /* comparison counting up to here, then radix */

void as_sm_order_desc(const float *v, size_t n, uint32_t *ord, as_sm_work *w)
{
    assert(n <= w->cap);
    uint32_t *key = w->key;
    for (size_t i = 0; i < n; i++)
        key[i] = sm_key(v[i]);
    if (n <= 48) {
        /* insertion sort, stable: equal keys keep position order */
        for (size_t i = 0; i < n; i++) {
            uint32_t k = key[i];
            size_t j = i;
            while (j > 0 && key[ord[j - 1]] > k) {
                ord[j] = ord[j - 1];
                j--;
            }
            ord[j] = (uint32_t)i;
        }
        return;
    }
    if (n <= SM_RANK_MAX) {
        /* rank of each entry = how many precede it in (key, position)
         * order: n^2 compares, but branch-free and vectorized (unsigned
         * order via signed compares of key ^ 2^31), no table to clear.
         * On the captured vit rows (n = 50) 320 ns against 700 for the
         * radix below and for a merge sort. */
        int32_t *sk = (int32_t *)(void *)w->key2;
        for (size_t i = 0; i < n; i++)
            sk[i] = (int32_t)(key[i] ^ 0x80000000u);
        for (size_t i = 0; i < n; i++) {
            const int32_t s = sk[i];
            uint32_t c = 0;
            for (size_t j = 0; j < i; j++)
                c += sk[j] <= s;
            for (size_t j = i + 1; j < n; j++)
                c += sk[j] < s;
            ord[c] = (uint32_t)i;
        }
        return;
    }
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

size_t as_sm_soa_encode(const as_sm_params *p, const float *v, size_t n,
                        size_t len, uint8_t *out, as_sm_work *w)
{
    const size_t S = (size_t)p->s;
    if (n <= 2 * S) {
        memcpy(out, v, n * sizeof(float));
        return n * sizeof(float);
    }
    uint32_t *ord = w->ord;
    as_sm_order_desc(v, n, ord, w);

    uint8_t *o = out;
    double kept = 0.0;
    for (size_t i = 0; i < S; i++) {
        float x = v[ord[i]];
        x = x > 0.0f ? x : 0.0f;
        put_f32(o + 4 * i, x);
        kept += x;
    }
    for (size_t i = 0; i < S; i++) {
        float x = v[ord[n - S + i]];
        x = x > 0.0f ? x : 0.0f;
        put_f32(o + 4 * (S + i), x);
    }
    double h = get_f32(o + 4 * (S - 1));
    double l = get_f32(o + 4 * S);
    double g = v[ord[S]] > 0.0f ? v[ord[S]] : 0.0;
    double den = p->fullden ? (double)len : (double)(n - 2 * S + 1);
    double lam = (log((h + 1e-8) / (l + 1e-8)) + 2.0 * (h - g)) /
                 ((1.0 - h) * den);
    if (isnan(lam) || lam < 0.0)
        lam = 0.0;             /* h == 1 with g == h: nothing to decay */
    put_f32(o + 8 * S, (float)lam);   /* +inf stays +inf: all mass to j=1 */
    o += 8 * S + 4;

    /* rank of every valid entry, in key order */
    if (n <= 256) {
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
    (void)kept;
    return (size_t)(o - out);
}

size_t as_sm_soa_decode(const as_sm_params *p, const uint8_t *in, size_t n,
                        float *v, as_sm_work *w)
{
    const size_t S = (size_t)p->s;
    if (n <= 2 * S) {
        memcpy(v, in, n * sizeof(float));
        return n * sizeof(float);
    }
    float hi[256], lo[256];
    assert(S <= 256);
    double kept = 0.0;
    for (size_t i = 0; i < S; i++) {
        hi[i] = get_f32(in + 4 * i);
        lo[i] = get_f32(in + 4 * (S + i));
        kept += (double)hi[i] + (double)lo[i];
    }
    double lam = get_f32(in + 8 * S);
    const uint8_t *rk = in + 8 * S + 4;
    const size_t m = n - 2 * S;   /* evicted entries */

    /* evicted weights exp(-lambda (j-1)), j = 1..m, normalized to the
     * target mass: the same as h exp(-lambda j) rescaled, but never
     * underflows to an empty sum. */
    double target = 1.0 - kept;
    if (!(target > 0.0))
        target = 0.0;
    double q = exp(-lam);
    double *tab = w->tab;
    double t = 1.0, z = 0.0;
    for (size_t j = 0; j < m; j++) {
        tab[j] = t;
        z += t;
        t *= q;
    }
    double c = target / z;
    for (size_t j = 0; j < m; j++)
        tab[j] *= c;

    if (n <= 256) {
        for (size_t i = 0; i < n; i++) {
            size_t r = rk[i];
            if (r >= n)
                r = n - 1;     /* corrupt rank: stay in bounds */
            v[i] = r < S ? hi[r] : r >= n - S ? lo[r - (n - S)]
                                             : (float)tab[r - S];
        }
        return 8 * S + 4 + n;
    }
    for (size_t i = 0; i < n; i++) {
        uint16_t rr;
        memcpy(&rr, rk + 2 * i, 2);
        size_t r = rr < n ? rr : n - 1;
        v[i] = r < S ? hi[r] : r >= n - S ? lo[r - (n - S)]
                                         : (float)tab[r - S];
    }
    return 8 * S + 4 + 2 * n;
}

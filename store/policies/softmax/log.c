/*
 * Compact softmax codecs beyond the paper: log-domain codes renormalized to
 * mass 1 (solog:B, sotk:F:B[:P]).
 *
 * Why log domain: for dy with roughly independent entries, the error of
 * dx = y (dy - <dy, y>) is dominated by sum_i (y_hat_i - y_i)^2, so the
 * gradient cosine is about 1 - 0.5 * sum e_i^2 / sum y_i^2: what counts is
 * the relative error of the large entries, weighted by y_i^2. A code of
 * l_i = ln(max / y_i) with a step s has relative error ~ s / sqrt(12) per
 * entry, independent of the entry's size; tiny entries (far below the max)
 * barely matter and go to a zero "tail" code. Steps grow with the level
 * (b_c = s c (1 + g (c - 1))) because lower levels weigh less.
 *
 * Renormalization: decoded weights w_i = exp(-level_i) are divided by their
 * sum, so the row has mass exactly 1 and no per-row scale needs storing:
 * zero header bytes.
 *
 *   solog:B      every valid entry gets a B-bit code (0 = the max's bucket,
 *                2^B - 1 = tail, decoded as 0). Row: ceil(n B / 8) bytes.
 *   sotk:F:B[:P] the k = max(min(n, 3), floor(n / F)) largest entries (fewer
 *                with P: the fewest that hold mass P) get an 8-bit fine code
 *                (l quantized at 1/16 nat, relative to the max); code 0 in
 *                the B-bit stream marks them, in key order, so they need no
 *                index. The others get coarse codes 1..2^B - 1 relative to
 *                the smallest fine level (last code = tail, 0).
 *                Row: ceil(n B / 8) + k bytes. The floor of 3 fine entries
 *                keeps short rows (causal rows of early queries) accurate
 *                (docs/benchmarks.md, "Design measurements").
 *
 * Encoding is linear time and needs no sort: every entry's level (1/16
 * nat units below the max) comes from its float bits with a short series
 * (no libm: same codes on every machine); the cut for the k largest comes
 * from a small sorted buffer of the k lowest levels (fixed k <= 32) or a
 * 257-bin histogram of the levels (larger k; with P, the mass per level
 * too); coarse codes are one table lookup by level. solog needs no
 * level at all: level >= b exactly when y <= max exp(-(b - 1/2) / 16), so
 * its codes are 2^B - 1 compares with per-row thresholds
 * (as__sm_solog_thresholds; log_avx512.c does the same in vectors).
 * Compiled with -O3 and without trapping math so that the level loop
 * vectorizes (same codes).
 */
#include <assert.h>
#include <math.h>
#include <pthread.h>
#include <string.h>

#include "store/policies/pack512.h"
#include "store/policies/softmax/log_impl.h"
#include "util/simd.h"


/* ---- tables ------------------------------------------------------------- */


sm_table as__sm_tabs[2][5];
float as__sm_fine_w[256];
static pthread_once_t sm_once = PTHREAD_ONCE_INIT;

static void sm_make_ctab(int topk, int bits, double s, double g);

static void sm_make(sm_table *t, int nc, double s, double g)
{
    double b[SM_MAXC] = {0};
    assert(nc >= 3 && nc <= SM_MAXC);
    t->nc = nc;
    for (int c = 1; c < nc; c++)
        b[c - 1] = s * c * (1.0 + g * (c - 1));
    t->wt[0] = (float)exp(-0.5 * b[0]);
    for (int c = 1; c < nc - 1; c++)
        t->wt[c] = (float)exp(-0.5 * (b[c - 1] + b[c]));
    t->wt[nc - 1] = 0.0f;   /* tail */
    t->wsh[0] = 0.0f;
    for (int c = 0; c + 1 < SM_MAXC; c++)
        t->wsh[c + 1] = c < nc ? t->wt[c] : 0.0f;
}

static void sm_init_tables(void)
{
    for (int c = 0; c < 256; c++)
        as__sm_fine_w[c] = (float)exp(-c / SM_FINE_STEP);
    static const struct { int topk, bits; double s, g; } cfg[] = {
        {0, 2, 0.7, 0.3}, {0, 3, 0.2, 0.5}, {0, 4, 0.2, 0.15},
        {1, 2, 0.7, 0.3}, {1, 3, 0.3, 0.1}, {1, 4, 0.2, 0.05},
    };
    for (size_t i = 0; i < sizeof cfg / sizeof cfg[0]; i++) {
        int nc = (1 << cfg[i].bits) - cfg[i].topk;
        sm_make(&as__sm_tabs[cfg[i].topk][cfg[i].bits], nc, cfg[i].s, cfg[i].g);
        sm_make_ctab(cfg[i].topk, cfg[i].bits, cfg[i].s, cfg[i].g);
    }
}

const sm_table *as__sm_table_of(const as__sm_params *p)
{
    pthread_once(&sm_once, sm_init_tables);
    assert(p->bits >= 2 && p->bits <= 4);
    return &as__sm_tabs[p->kind == AS_SM_TOPK][p->bits];
}

uint8_t as__sm_ctab[2][5][SM_CTAB];
int32_t as__sm_cbnd[2][5][SM_MAXC];
float   as__sm_cthr[5][SM_MAXC];

static void sm_make_ctab(int topk, int bits, double s, double g)
{
    const sm_table *t = &as__sm_tabs[topk][bits];
    for (int d = 0; d < SM_CTAB; d++) {
        int c = 0;
        for (int j = 1; j < t->nc; j++)
            c += d >= (int)lround(16.0 * s * j * (1.0 + g * (j - 1)));
        as__sm_ctab[topk][bits][d] = (uint8_t)c;
    }
    for (int j = 1; j < t->nc; j++) {
        const int32_t b = (int32_t)lround(16.0 * s * j * (1.0 + g * (j - 1)));
        as__sm_cbnd[topk][bits][j - 1] = b;
        if (!topk)
            as__sm_cthr[bits][j - 1] = (float)exp(-(b - 0.5) / SM_FINE_STEP);
    }
}

/* ---- bit packing (little endian, B bits per code) ------------------------ */

static void sm_pack(const uint8_t *c, size_t n, int B, uint8_t *out)
{
    uint64_t acc = 0;
    int nb = 0;
    size_t o = 0, i = 0;
    /* whole groups of 8 codes fill B bytes exactly: the same bytes as
     * the running accumulator below, without its per-code branch */
    for (; i + 8 <= n; i += 8, c += 8) {
        uint32_t g = 0;
        for (int j = 0; j < 8; j++)
            g |= (uint32_t)c[j] << (B * j);
        for (int j = 0; j < B; j++)
            out[o++] = (uint8_t)(g >> (8 * j));
    }
    n -= i;
    for (i = 0; i < n; i++) {
        acc |= (uint64_t)c[i] << nb;
        nb += B;
        if (nb >= 32) {
            for (int k = 0; k < 4; k++)
                out[o++] = (uint8_t)(acc >> (8 * k));
            acc >>= 32;
            nb -= 32;
        }
    }
    while (nb > 0) {
        out[o++] = (uint8_t)acc;
        acc >>= 8;
        nb -= 8;
    }
}

static void sm_unpack(const uint8_t *in, size_t n, int B, uint8_t *c)
{
    const unsigned mask = (1u << B) - 1;
    if (B == 4) {
        for (size_t i = 0; i + 1 < n; i += 2) {
            c[i] = in[i / 2] & 15;
            c[i + 1] = in[i / 2] >> 4;
        }
        if (n & 1)
            c[n - 1] = in[n / 2] & 15;
        return;
    }
    /* whole groups of 8 codes are B bytes (see sm_pack) */
    for (; n >= 8; n -= 8, in += B, c += 8) {
        uint32_t g = 0;
        for (int j = 0; j < B; j++)
            g |= (uint32_t)in[j] << (8 * j);
        for (int j = 0; j < 8; j++)
            c[j] = (uint8_t)((g >> (B * j)) & mask);
    }
    uint64_t acc = 0;
    int nb = 0;
    size_t ip = 0, nbytes = (n * (size_t)B + 7) / 8;
    for (size_t i = 0; i < n; i++) {
        while (nb < B) {
            acc |= (uint64_t)(ip < nbytes ? in[ip] : 0) << nb;
            ip++;
            nb += 8;
        }
        c[i] = (uint8_t)(acc & mask);
        acc >>= B;
        nb -= B;
    }
}

/* ---- encode / decode ----------------------------------------------------- */

/* The row maximum from 8 independent partial maxima (the same max in any
 * order; NaN and values <= 0 never win): no chain of dependent compares. */
static inline float sm_row_max(const float *v, size_t n)
{
    float m8[8] = {0};
    size_t n8 = n & ~(size_t)7;
    for (size_t i = 0; i < n8; i += 8)
        for (int j = 0; j < 8; j++)
            m8[j] = v[i + j] > m8[j] ? v[i + j] : m8[j];
    for (size_t i = n8; i < n; i++)
        m8[0] = v[i] > m8[0] ? v[i] : m8[0];
    float m = 0.0f;
    for (int j = 0; j < 8; j++)
        m = m8[j] > m ? m8[j] : m;
    return m;
}

/* A row with no positive entry (not a softmax row): solog decodes uniform,
 * sotk puts the mass on the first entry; sizes stay in bounds. */
static size_t sm_encode_flat(bool topk, int B, size_t n, uint8_t *codes, uint8_t *out)
{
    const size_t nb = (n * (size_t)B + 7) / 8;
    memset(codes, 0, n);
    if (!topk) {
        sm_pack(codes, n, B, out);
        return nb;
    }
    for (size_t i = 1; i < n; i++)
        codes[i] = (uint8_t)((1 << B) - 1);
    sm_pack(codes, n, B, out);
    out[nb] = 0;
    return nb + 1;
}

/* The level of every entry below the max m, in 1/16 nat units, clamped to
 * 0..SM_DMAX; branch-free, so the compiler vectorizes it. */
static inline void sm_levels(const float *v, size_t n, float m, uint32_t *lev)
{
    const float lm = sm_ln16(m) + 0.5f;
    for (size_t i = 0; i < n; i++) {
        float x = v[i] > 1e-38f ? v[i] : 1e-38f;   /* also maps NaN, <= 0 */
        float l = lm - sm_ln16(x);
        l = l > 0.0f ? l : 0.0f;
        l = l < (float)SM_DMAX ? l : (float)SM_DMAX;
        lev[i] = (uint32_t)(int32_t)l;
    }
}

/* Insert x into the ascending 4 smallest bb[0..3] (branch-free). */
static inline void sm_net_ins(uint32_t bb[4], uint32_t x)
{
    uint32_t t;
    t = bb[0] < x ? bb[0] : x; x = bb[0] < x ? x : bb[0];
    bb[0] = t;
    t = bb[1] < x ? bb[1] : x; x = bb[1] < x ? x : bb[1];
    bb[1] = t;
    t = bb[2] < x ? bb[2] : x; x = bb[2] < x ? x : bb[2];
    bb[2] = t;
    bb[3] = bb[3] < x ? bb[3] : x;
}

/* The k-th lowest level (k <= 4) by two insertion networks (even / odd
 * entries, for instruction parallelism), the odd one's four then merged
 * into the even one's: the 4 lowest of a multiset do not depend on the
 * order. */
static inline uint32_t sm_cut_net4(const uint32_t *lev, size_t n, size_t k)
{
    uint32_t b[2][4];
    for (int j = 0; j < 2; j++)
        b[j][0] = b[j][1] = b[j][2] = b[j][3] = UINT32_MAX;
    size_t e = 0;
    for (; e + 2 <= n; e += 2) {
        sm_net_ins(b[0], lev[e]);
        sm_net_ins(b[1], lev[e + 1]);
    }
    if (e < n)
        sm_net_ins(b[0], lev[e]);
    for (int j = 0; j < 4; j++)
        sm_net_ins(b[0], b[1][j]);
    return b[0][k - 1];
}

/* The k-th lowest level (k <= 32) from a sorted buffer of the k lowest
 * (expected O(n + k^2 log n) steps, no table to clear). */
static inline uint32_t sm_cut_sorted(const uint32_t *lev, size_t n, size_t k)
{
    uint32_t buf[32] = {0};   /* (k >= 1 fills buf[k - 1]) */
    size_t nb = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t d = lev[i];
        if (nb == k && d >= buf[k - 1])
            continue;
        size_t j = nb < k ? nb++ : k - 1;
        while (j > 0 && buf[j - 1] > d) {
            buf[j] = buf[j - 1];
            j--;
        }
        buf[j] = d;
    }
    return buf[k - 1];
}

/* A histogram of the levels (bin 256 lumps the rest), and with P the mass
 * per level. Long rows count into four interleaved histograms: equal
 * neighbours would otherwise chain every increment through one slot. */
static void sm_histogram(const as__sm_params *p, const float *v, const uint32_t *lev,
                         size_t n, uint32_t hist[257], float hmass[257])
{
    if (n < 1024) {
        memset(hist, 0, 257 * sizeof *hist);
        for (size_t i = 0; i < n; i++)
            hist[lev[i] < 256 ? lev[i] : 256]++;
    } else {
        uint32_t h4[4][257];
        memset(h4, 0, sizeof h4);
        size_t i = 0;
        for (; i + 4 <= n; i += 4)
            for (int j = 0; j < 4; j++) {
                uint32_t d = lev[i + j];
                h4[j][d < 256 ? d : 256]++;
            }
        for (; i < n; i++)
            h4[0][lev[i] < 256 ? lev[i] : 256]++;
        for (int c = 0; c < 257; c++)
            hist[c] = h4[0][c] + h4[1][c] + h4[2][c] + h4[3][c];
    }
    if (p->mass > 0.0f) {
        memset(hmass, 0, 257 * sizeof *hmass);
        for (size_t i = 0; i < n; i++)
            hmass[lev[i] < 256 ? lev[i] : 256] += v[i] > 0.0f ? v[i] : 0.0f;
    }
}

/* The cut for sotk: the level of the k-th lowest entry and how many lie
 * below it. A fixed small k reads the levels directly (*have_cut: exact
 * levels); otherwise the histogram is walked, and with P (adaptive k)
 * whole levels are taken until they hold mass P (*k shrinks to that). */
static uint32_t sm_cut(const as__sm_params *p, const float *v, const uint32_t *lev,
                       size_t n, size_t *k, size_t *below, bool *have_cut)
{
    uint32_t cut = 0;
    *below = 0;
    *have_cut = p->mass == 0.0f && *k <= 32;
    if (*have_cut) {
        cut = *k <= 4 ? sm_cut_net4(lev, n, *k) : sm_cut_sorted(lev, n, *k);
        for (size_t i = 0; i < n; i++)
            *below += lev[i] < cut;
        return cut;
    }
    uint32_t hist[257];
    float hmass[257];
    sm_histogram(p, v, lev, n, hist, hmass);
    double mass = 0.0;
    while (*below + hist[cut] < *k) {
        *below += hist[cut];
        if (p->mass > 0.0f)
            mass += hmass[cut];
        cut++;
        if (p->mass > 0.0f && mass >= p->mass) {
            *k = *below;             /* adaptive: whole levels to mass P */
            break;
        }
    }
    return cut;
}

/* sotk with a fixed k: the fine set always holds an entry at the cut (at
 * most k - 1 lie below it), so the reference level is the cut and one pass
 * writes every code. Returns the fine bytes. */
static size_t sm_codes_fixed(const uint32_t *lev, size_t n, uint32_t cut, size_t ties,
                             uint32_t dmax, const uint8_t *ctab, uint8_t *codes, uint8_t *fine)
{
    size_t nfine = 0;
    const uint32_t lr = cut < 255 ? cut : 255;
    for (size_t i = 0; i < n; i++) {
        uint32_t d = lev[i] < dmax ? lev[i] : dmax;
        if (d < cut || (d == cut && ties > 0)) {
            ties -= d == cut;
            fine[nfine++] = (uint8_t)(d < 255 ? d : 255);
            codes[i] = 0;
        } else {
            uint32_t r = lev[i] - lr;
            codes[i] = (uint8_t)(1 + ctab[r < SM_CTAB ? r : SM_CTAB - 1]);
        }
    }
    return nfine;
}

/* sotk with mass P: fine entries first, then coarse codes relative to the
 * highest fine level. The histogram lumps levels >= 256 into bin 256:
 * compare clamped levels then (the fine code clamps to 255 anyway).
 * Returns the fine bytes. */
static size_t sm_codes_mass(const uint32_t *lev, size_t n, uint32_t cut, size_t ties,
                            uint32_t dmax, const uint8_t *ctab, uint8_t *codes, uint8_t *fine)
{
    size_t nfine = 0;
    uint32_t lref = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t d = lev[i] < dmax ? lev[i] : dmax;
        if (d < cut || (d == cut && ties > 0 && (ties--, true))) {
            fine[nfine++] = (uint8_t)(d < 255 ? d : 255);
            lref = d > lref ? d : lref;
            codes[i] = 0;
        } else {
            codes[i] = 255;
        }
    }
    lref = lref < 255 ? lref : 255;
    for (size_t i = 0; i < n; i++)
        if (codes[i]) {
            uint32_t r = lev[i] - lref;     /* >= 0: below the cut */
            codes[i] = (uint8_t)(1 + ctab[r < SM_CTAB ? r : SM_CTAB - 1]);
        }
    return nfine;
}

size_t as__sm_log_encode(const as__sm_params *p, const float *v, size_t n,
                        uint8_t *out, as__sm_work *w)
{
    (void)as__sm_table_of(p);
    const int B = p->bits;
    const bool topk = p->kind == AS_SM_TOPK;
    const uint8_t *ctab = as__sm_ctab[topk][B];
    const size_t nb = (n * (size_t)B + 7) / 8;
    uint8_t *codes = w->codes;
#if AS_X86_DISPATCH
    if (topk && p->mass == 0.0f && n <= SM_SMALL && n / (size_t)p->k <= 4) {
        size_t used = as__sm_topk_small(p, v, n, out);
        if (used)
            return used;
    }
#endif
    if (!topk && as__use_512()) {
        size_t used = as__sm_solog_encode_avx512(B, v, n, out);
        if (used)
            return used;
    }
    const float m = sm_row_max(v, n);
    if (!(m > 0.0f))
        return sm_encode_flat(topk, B, n, codes, out);
    if (!topk) {
        float thr[SM_MAXC];
        const int nbd = as__sm_solog_thresholds(B, m, thr);
        for (size_t i = 0; i < n; i++) {
            const float x = v[i] > 1e-38f ? v[i] : 1e-38f;   /* NaN, <= 0 */
            unsigned c = 0;
            for (int j = 0; j < nbd; j++)
                c += x <= thr[j];
            codes[i] = (uint8_t)c;
        }
        sm_pack(codes, n, B, out);
        return nb;
    }
    uint32_t *lev = w->key;
    sm_levels(v, n, m, lev);
    size_t k = n / (size_t)p->k;
    size_t k0 = n < AS_SM_MIN_FINE ? n : AS_SM_MIN_FINE;
    k = k < k0 ? k0 : k;
    size_t below;
    bool have_cut;
    const uint32_t cut = sm_cut(p, v, lev, n, &k, &below, &have_cut);
    const size_t ties = k - below;   /* taken at level == cut, in order */
    const uint32_t dmax = have_cut ? SM_DMAX : 256;
    const size_t nfine = p->mass == 0.0f
                             ? sm_codes_fixed(lev, n, cut, ties, dmax, ctab, codes, out + nb)
                             : sm_codes_mass(lev, n, cut, ties, dmax, ctab, codes, out + nb);
    assert(nfine == k);
    sm_pack(codes, n, B, out);
    return nb + nfine;
}

bool as__sm_log_encode4(const as__sm_params *p, const float *const *v,
                        const size_t *n, uint8_t *out, size_t *used)
{
    if (p->kind == AS_SM_TOPK)
        return as__sm_topk_encode4(p, v, n, out, used);
    (void)as__sm_table_of(p);
    return as__use_512() && as__sm_solog_encode4_avx512(p->bits, v, n, out, used);
}

size_t as__sm_log_row_size(const as__sm_params *p, const uint8_t *in, size_t n)
{
    size_t nb = (n * (size_t)p->bits + 7) / 8;
    if (p->kind != AS_SM_TOPK)
        return nb;
    /* count code 0 in the packed stream */
    size_t k = 0, done = 0;
    uint8_t buf[256];
    while (done < n) {
        size_t m = n - done < 256 ? n - done : 256;
        /* chunks of 256 codes start on byte boundaries for B in 2..4
         * (256 B bits is a whole number of bytes) */
        sm_unpack(in + done * (size_t)p->bits / 8, m, p->bits, buf);
        for (size_t i = 0; i < m; i++)
            k += buf[i] == 0;
        done += m;
    }
    return nb + k;
}


/* Weights of the row's codes (unnormalized) into wt[0..n-1]; returns the
 * bytes of the row. */
static size_t sm_row_weights(const as__sm_params *p, const uint8_t *in,
                             size_t n, float *wt, as__sm_work *w)
{
    const sm_table *t = as__sm_table_of(p);
#if AS_X86_DISPATCH
    if (p->kind == AS_SM_TOPK && n <= SM_SMALL &&
        as_cpu_avx2())
        return as__sm_topk_weights_avx2(t, p->bits, in, n, wt);
#endif
    uint8_t *codes = w->codes;
    size_t nb = (n * (size_t)p->bits + 7) / 8;
    sm_unpack(in, n, p->bits, codes);
    if (p->kind == AS_SM_TOPK) {
        /* branch-free: which entries are fine is data (a mispredicted
         * branch per fine entry was most of the decode) */
        const uint8_t *fine = in + nb;
        size_t k = 0;
        for (size_t i = 0; i < n; i++)
            k += codes[i] == 0;
        uint32_t maxc = 0;
        for (size_t f = 0; f < k; f++)
            maxc = fine[f] > maxc ? fine[f] : maxc;
        float cw[SM_MAXC + 1];
        cw[0] = 0.0f;
        for (int c = 0; c < t->nc; c++)
            cw[c + 1] = as__sm_fine_w[maxc] * t->wt[c];
        static const uint8_t zero = 0;
        const uint8_t *fsrc = k ? fine : &zero;  /* read in bounds always */
        const size_t flast = k ? k - 1 : 0;
        size_t f = 0;
        for (size_t i = 0; i < n; i++) {
            size_t isf = codes[i] == 0;
            uint8_t fc = fsrc[f < flast ? f : flast];
            wt[i] = isf ? as__sm_fine_w[fc] : cw[codes[i]];
            f += isf;
        }
        nb += k;
    } else {
        for (size_t i = 0; i < n; i++)
            wt[i] = t->wt[codes[i]];
    }
    return nb;
}

/* Rows normalized to mass 1: each row's weight sum in double, in eight
 * partial sums (entry i into sum i mod 8, combined pairwise in a fixed
 * order: eight short chains of adds instead of one long one; the same
 * row gives the same bits), then one scale; an all-zero row decodes
 * uniform. */
static void sm_normalize(float *const *v, const size_t *n, int cnt)
{
    for (int l = 0; l < cnt; l++) {
        float *x = v[l];
        const size_t nl = n[l];
        double a[8] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
        size_t i = 0;
        for (; i + 8 <= nl; i += 8)
            for (int j = 0; j < 8; j++)
                a[j] += (double)x[i + j];
        for (int j = 0; i < nl; i++, j++)
            a[j] += (double)x[i];
        const double zl = ((a[0] + a[4]) + (a[2] + a[6])) +
                          ((a[1] + a[5]) + (a[3] + a[7]));
        if (!(zl > 0.0)) {           /* all-zero input row */
            for (i = 0; i < nl; i++)
                x[i] = 1.0f / (float)nl;
            continue;
        }
        float inv = (float)(1.0 / zl);
        for (i = 0; i < nl; i++)
            x[i] *= inv;
    }
}

size_t as__sm_log_decode_rows(const as__sm_params *p, const uint8_t *in,
                             const size_t *n, float *const *v, int cnt,
                             as__sm_work *w)
{
    assert(cnt >= 1 && cnt <= AS_SM_SOA_LANES);
    const uint8_t *pp = in;
#if AS_X86_DISPATCH
    if (cnt == 4 && p->kind == AS_SM_TOPK && n[0] <= SM_SMALL &&
        n[1] <= SM_SMALL && n[2] <= SM_SMALL && n[3] <= SM_SMALL &&
        as_cpu_avx2()) {
        pp += as__sm_topk_weights4_avx2(as__sm_table_of(p), p->bits, in, n, v);
        sm_normalize(v, n, cnt);
        return (size_t)(pp - in);
    }
#endif
    if (p->kind == AS_SM_LOG && as__use_512())
        return as__sm_solog_decode_avx512(as__sm_table_of(p), p->bits, in, n, v, cnt);
    for (int l = 0; l < cnt; l++)
        pp += sm_row_weights(p, pp, n[l], v[l], w);
    sm_normalize(v, n, cnt);
    return (size_t)(pp - in);
}

size_t as__sm_log_decode(const as__sm_params *p, const uint8_t *in, size_t n,
                        float *v, as__sm_work *w)
{
    return as__sm_log_decode_rows(p, in, &n, &v, 1, w);
}

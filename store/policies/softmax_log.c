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
 *   sotk:F:B[:P] the k = max(1, floor(n / F)) largest entries (fewer with P:
 *                the fewest that hold mass P) get an 8-bit fine code
 *                (l quantized at 1/16 nat, relative to the max); code 0 in
 *                the B-bit stream marks them, in key order, so they need no
 *                index. The others get coarse codes 1..2^B - 1 relative to
 *                the smallest fine level (last code = tail, 0).
 *                Row: ceil(n B / 8) + k bytes.
 *
 * Selection for sotk is linear time: a quickselect for the k-th largest
 * value, then only the k fine entries are sorted (for P). Coarse codes are
 * branch-free threshold counts (no logarithm per entry); only the k fine
 * entries take a logf.
 */
#include <assert.h>
#include <math.h>
#include <pthread.h>
#include <string.h>

#include "store/policies/softmax.h"

#define SM_FINE_STEP 16.0   /* fine codes per nat */
#define SM_MAXC 16

/* Coarse tables per (topk?, bits): boundaries b[0..nc-2] (nats, relative
 * to the reference level) and weights exp(-rep) of the nc codes (the last,
 * the tail, weighs 0). Steps chosen by measurement on synthetic rows
 * (n 50..1024, logit std 1..4; docs/policies.md). */
typedef struct sm_table {
    int   nc;                 /* coarse codes */
    float bnd[SM_MAXC];       /* exp(-b): thresholds on y / y_ref */
    float wt[SM_MAXC];        /* exp(-rep) */
} sm_table;

static sm_table sm_tabs[2][5];     /* [topk][bits] */
static float sm_fine_w[256];       /* exp(-c / 16) */
static pthread_once_t sm_once = PTHREAD_ONCE_INIT;

static void sm_make(sm_table *t, int nc, double s, double g)
{
    double b[SM_MAXC];
    t->nc = nc;
    for (int c = 1; c < nc; c++)
        b[c - 1] = s * c * (1.0 + g * (c - 1));
    t->wt[0] = (float)exp(-0.5 * b[0]);
    for (int c = 1; c < nc - 1; c++)
        t->wt[c] = (float)exp(-0.5 * (b[c - 1] + b[c]));
    t->wt[nc - 1] = 0.0f;   /* tail */
    for (int c = 0; c < nc - 1; c++)
        t->bnd[c] = (float)exp(-b[c]);
}

static void sm_init_tables(void)
{
    for (int c = 0; c < 256; c++)
        sm_fine_w[c] = (float)exp(-c / SM_FINE_STEP);
    sm_make(&sm_tabs[0][2], 4, 0.7, 0.3);
    sm_make(&sm_tabs[0][3], 8, 0.4, 0.15);
    sm_make(&sm_tabs[0][4], 16, 0.2, 0.05);
    sm_make(&sm_tabs[1][2], 3, 0.5, 0.3);
    sm_make(&sm_tabs[1][3], 7, 0.3, 0.1);
    sm_make(&sm_tabs[1][4], 15, 0.2, 0.05);
}

static const sm_table *sm_table_of(const as_sm_params *p)
{
    pthread_once(&sm_once, sm_init_tables);
    assert(p->bits >= 2 && p->bits <= 4);
    return &sm_tabs[p->kind == AS_SM_TOPK][p->bits];
}

/* ---- bit packing (little endian, B bits per code) ------------------------ */

static void sm_pack(const uint8_t *c, size_t n, int B, uint8_t *out)
{
    uint64_t acc = 0;
    int nb = 0;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
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

/* ---- selection --------------------------------------------------------- */

/* Key of a value for selection: larger value, larger key. */
static inline uint32_t sm_vkey(float f)
{
    uint32_t b;
    if (!(f > 0.0f))
        return 0;
    memcpy(&b, &f, sizeof b);
    return b;
}

/* k-th largest key (k >= 1) of a[0..n-1]; a is permuted so that
 * a[0..k-1] holds the k largest. Quickselect with median-of-three pivots
 * and a three-way partition (softmax rows repeat values, e.g. zeros):
 * expected linear time. */
static uint32_t sm_kth_largest(uint32_t *a, size_t n, size_t k)
{
    size_t lo = 0, hi = n, want = k - 1;
    assert(k >= 1 && k <= n);
    for (;;) {
        if (hi - lo <= 16) {
            for (size_t i = lo + 1; i < hi; i++) {
                uint32_t x = a[i];
                size_t j = i;
                while (j > lo && a[j - 1] < x) {
                    a[j] = a[j - 1];
                    j--;
                }
                a[j] = x;
            }
            return a[want];
        }
        uint32_t x = a[lo], y = a[lo + (hi - lo) / 2], z = a[hi - 1];
        uint32_t piv = (x > y) ? ((y > z) ? y : (x > z ? z : x))
                               : ((x > z) ? x : (y > z ? z : y));
        size_t lt = lo, i = lo, gt = hi;
        while (i < gt) {
            uint32_t e = a[i];
            if (e > piv) {
                a[i++] = a[lt];
                a[lt++] = e;
            } else if (e < piv) {
                a[i] = a[--gt];
                a[gt] = e;
            } else {
                i++;
            }
        }
        if (want < lt)
            hi = lt;
        else if (want >= gt)
            lo = gt;
        else
            return piv;
    }
}

/* ---- encode / decode ----------------------------------------------------- */

size_t as_sm_log_encode(const as_sm_params *p, const float *v, size_t n,
                        uint8_t *out, as_sm_work *w)
{
    const sm_table *t = sm_table_of(p);
    const int B = p->bits;
    uint8_t *codes = w->codes;
    float m = 0.0f;
    for (size_t i = 0; i < n; i++)
        if (v[i] > m)
            m = v[i];
    if (!(m > 0.0f)) {
        /* no positive entry (not a softmax row): solog decodes uniform,
         * sotk puts the mass on the first entry; sizes stay in bounds */
        size_t nb = (n * (size_t)B + 7) / 8;
        memset(codes, 0, n);
        if (p->kind == AS_SM_TOPK) {
            memset(codes + 1, (1 << B) - 1, n - 1);
            sm_pack(codes, n, B, out);
            out[nb] = 0;
            return nb + 1;
        }
        sm_pack(codes, n, B, out);
        return nb;
    }

    float ref = m;              /* coarse reference value */
    size_t nfine = 0;
    uint8_t *fine = NULL;
    if (p->kind == AS_SM_TOPK) {
        /* the fine set: the k largest (ties by position), fewer with P */
        size_t k = n / (size_t)p->k;
        if (k < 1)
            k = 1;
        uint32_t *key = w->key;
        for (size_t i = 0; i < n; i++)
            key[i] = sm_vkey(v[i]);
        uint32_t thr = sm_kth_largest(key, n, k);
        if (p->mass > 0.0f && k > 1) {
            /* key[0..k-1] now holds the k largest (unordered): sort them
             * descending and keep the shortest prefix with mass P */
            uint32_t *top = w->key2;
            memcpy(top, key, k * sizeof *top);
            for (size_t i = 1; i < k; i++) {
                uint32_t x = top[i];
                size_t j = i;
                while (j > 0 && top[j - 1] < x) {
                    top[j] = top[j - 1];
                    j--;
                }
                top[j] = x;
            }
            double acc = 0.0;
            size_t kk = 0;
            while (kk < k) {
                float f;
                memcpy(&f, &top[kk], 4);
                acc += f;
                kk++;
                if (acc >= p->mass)
                    break;
            }
            k = kk;
            thr = top[k - 1];
        }
        /* mark: strictly above thr first, then ties in position order */
        size_t above = 0;
        for (size_t i = 0; i < n; i++)
            above += sm_vkey(v[i]) > thr;
        size_t ties = k - above;
        fine = out + (n * (size_t)B + 7) / 8;
        uint32_t maxc = 0;
        for (size_t i = 0; i < n; i++) {
            uint32_t kv = sm_vkey(v[i]);
            bool isf = kv > thr || (kv == thr && ties > 0 && (ties--, true));
            if (isf) {
                double l = log((double)m / (double)v[i]) * SM_FINE_STEP;
                uint32_t c = l < 255.0 ? (uint32_t)(l + 0.5) : 255u;
                fine[nfine++] = (uint8_t)c;
                if (c > maxc)
                    maxc = c;
                codes[i] = 0;
            } else {
                codes[i] = 255;   /* coarse, filled below */
            }
        }
        assert(nfine == k);
        ref = m * sm_fine_w[maxc];
    } else {
        for (size_t i = 0; i < n; i++)
            codes[i] = 255;
    }

    /* coarse: code = number of thresholds y / ref is below (branch-free) */
    const int nc = t->nc;
    const int base = p->kind == AS_SM_TOPK ? 1 : 0;
    float thr[SM_MAXC];
    for (int c = 0; c < nc - 1; c++)
        thr[c] = ref * t->bnd[c];
    for (size_t i = 0; i < n; i++) {
        if (codes[i] != 255)
            continue;
        float x = v[i] > 0.0f ? v[i] : 0.0f;
        int c = 0;
        for (int j = 0; j < nc - 1; j++)
            c += x < thr[j];
        codes[i] = (uint8_t)(c + base);
    }
    sm_pack(codes, n, B, out);
    return (n * (size_t)B + 7) / 8 + nfine;
}

size_t as_sm_log_row_size(const as_sm_params *p, const uint8_t *in, size_t n)
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
 * bytes of the row and the weight sum in *zsum. */
static size_t sm_weights(const as_sm_params *p, const uint8_t *in, size_t n,
                         float *wt, double *zsum, as_sm_work *w)
{
    const sm_table *t = sm_table_of(p);
    uint8_t *codes = w->codes;
    size_t nb = (n * (size_t)p->bits + 7) / 8;
    sm_unpack(in, n, p->bits, codes);
    double z = 0.0;
    if (p->kind == AS_SM_TOPK) {
        const uint8_t *fine = in + nb;
        size_t k = 0;
        uint32_t maxc = 0;
        for (size_t i = 0; i < n; i++)
            if (codes[i] == 0) {
                if (fine[k] > maxc)
                    maxc = fine[k];
                k++;
            }
        float cw[SM_MAXC + 1];
        cw[0] = 0.0f;
        for (int c = 0; c < t->nc; c++)
            cw[c + 1] = sm_fine_w[maxc] * t->wt[c];
        size_t f = 0;
        for (size_t i = 0; i < n; i++) {
            float x = codes[i] == 0 ? sm_fine_w[fine[f++]] : cw[codes[i]];
            wt[i] = x;
            z += x;
        }
        nb += k;
    } else {
        for (size_t i = 0; i < n; i++) {
            float x = t->wt[codes[i]];
            wt[i] = x;
            z += x;
        }
    }
    *zsum = z;
    return nb;
}

size_t as_sm_log_decode(const as_sm_params *p, const uint8_t *in, size_t n,
                        float *v, as_sm_work *w)
{
    double z;
    size_t nb = sm_weights(p, in, n, v, &z, w);
    if (!(z > 0.0)) {           /* all-zero input row */
        for (size_t i = 0; i < n; i++)
            v[i] = 1.0f / (float)n;
        return nb;
    }
    float inv = (float)(1.0 / z);
    for (size_t i = 0; i < n; i++)
        v[i] *= inv;
    return nb;
}

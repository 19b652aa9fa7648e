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
 *                is for short rows (causal rows of early queries): with
 *                k = 1 the lm rows lost 1.3% cosine (0.986 vs 0.9986 with
 *                3), at 7% of the bytes; a row of 50 already has 3.
 *
 * Encoding is linear time and needs no sort: every entry's level (1/16
 * nat units below the max) comes from its float bits with a short series
 * (no libm: same codes on every machine); the cut for the k largest comes
 * from a small sorted buffer of the k lowest levels (fixed k <= 32) or a
 * 257-bin histogram of the levels (larger k; with P, the mass per level
 * too); coarse codes are one table lookup by level. Compiled with -O3 and
 * without trapping math so that the level loop vectorizes (same codes).
 */
#include <assert.h>
#include <math.h>
#include <pthread.h>
#include <string.h>

#include "store/policies/softmax/softmax.h"

#define SM_FINE_STEP 16.0   /* fine codes per nat */
#define SM_MAXC 16

/* Coarse tables per (topk?, bits): weights exp(-rep) of the nc codes
 * (rep: the middle of the code's level range; boundaries b_c in nats above
 * the reference level, in sm_ctab) (the last, the tail, weighs 0). Steps
 * chosen by measurement on synthetic rows (n 50..1024, logit std 1..4,
 * 200 rows per setting, worst setting maximized; docs/policies.md).
 * The ladder must reach deep enough: what the tail drops is taken from
 * 1 - y_max after renormalization, and in a peaked row that is what the
 * gradient is made of. solog:4 once stopped at 5.1 nats (g = 0.05) and
 * dropped up to 9% of the mass of long sharp rows (n = 1024, std 4),
 * cosine 0.93 on single peaked rows; g = 0.15 reaches 9.3 nats. */
typedef struct sm_table {
    int   nc;                 /* coarse codes */
    float wt[SM_MAXC];        /* exp(-rep) */
    float wsh[SM_MAXC];       /* 0, then wt: sotk's weights by code */
} sm_table;

static sm_table sm_tabs[2][5];     /* [topk][bits] */
static float sm_fine_w[256];       /* exp(-c / 16) */
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
        sm_fine_w[c] = (float)exp(-c / SM_FINE_STEP);
    static const struct { int topk, bits; double s, g; } cfg[] = {
        {0, 2, 0.7, 0.3}, {0, 3, 0.2, 0.5}, {0, 4, 0.2, 0.15},
        {1, 2, 0.7, 0.3}, {1, 3, 0.3, 0.1}, {1, 4, 0.2, 0.05},
    };
    for (size_t i = 0; i < sizeof cfg / sizeof cfg[0]; i++) {
        int nc = (1 << cfg[i].bits) - cfg[i].topk;
        sm_make(&sm_tabs[cfg[i].topk][cfg[i].bits], nc, cfg[i].s, cfg[i].g);
        sm_make_ctab(cfg[i].topk, cfg[i].bits, cfg[i].s, cfg[i].g);
    }
}

static const sm_table *sm_table_of(const as__sm_params *p)
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

/* ---- levels ------------------------------------------------------------ */

/* 16 ln(y), from the float bits: y = 2^e x, x in [sqrt(1/2), sqrt(2)),
 * ln x = 2 atanh(s) with s = (x - 1) / (x + 1), |s| < 0.172, three terms
 * (error < 2e-6 nat, far below the 1/16 nat step). No libm: the same codes
 * on every machine. y must be > 0. */
static inline float sm_ln16(float y)
{
    uint32_t b;
    memcpy(&b, &y, 4);
    uint32_t man = b & 0x7fffffu;
    uint32_t big = man > 0x3504f3u;            /* x > sqrt(2): halve it */
    int e = (int)((b >> 23) & 255u) - 127 + (int)big;
    uint32_t xb = man | (0x3f800000u - (big << 23));   /* no branch */
    float x;
    memcpy(&x, &xb, 4);
    float s = (x - 1.0f) / (x + 1.0f), s2 = s * s;
    float l = 2.0f * s * (1.0f + s2 * (1.0f / 3.0f + s2 * 0.2f));
    return 16.0f * ((float)e * 0.69314718f + l);
}

#define SM_DMAX 4095    /* level cap (256 nats: beyond any f32 ratio) */
#define SM_CTAB 1024    /* coarse code lookup, by level above the reference */

/* coarse code by level (1/16 nat units) above the reference, per table */
static uint8_t sm_ctab[2][5][SM_CTAB];
/* the same as boundaries: sm_ctab[d] = #{j : d >= sm_cbnd[j]} (j < nc - 1) */
static int32_t sm_cbnd[2][5][SM_MAXC];

static void sm_make_ctab(int topk, int bits, double s, double g)
{
    const sm_table *t = &sm_tabs[topk][bits];
    for (int d = 0; d < SM_CTAB; d++) {
        int c = 0;
        for (int j = 1; j < t->nc; j++)
            c += d >= (int)lround(16.0 * s * j * (1.0 + g * (j - 1)));
        sm_ctab[topk][bits][d] = (uint8_t)c;
    }
    for (int j = 1; j < t->nc; j++)
        sm_cbnd[topk][bits][j - 1] =
            (int32_t)lround(16.0 * s * j * (1.0 + g * (j - 1)));
}

/* ---- encode / decode ----------------------------------------------------- */

#if (defined(__x86_64__) || defined(__i386__)) && \
    (defined(__GNUC__) || defined(__clang__)) && !defined(AS_SM_NO_DISPATCH)
#define SM_X86_DISPATCH 1
#endif

#ifdef SM_X86_DISPATCH
#include <immintrin.h>

/* Short sotk rows (n <= 64, fixed k <= 4: sotk:16:B up to 64 keys, the
 * vit and lm rows), eight entries per AVX2 vector: the same float
 * operations as the scalar path below, lane by lane (no FMA: the same
 * levels, cut, codes and bytes), without its per-entry branches; codes are
 * packed straight from the vectors. CPUs without AVX2 take the scalar
 * path. Returns the bytes written, or 0 when the row has no positive
 * entry (the scalar path handles it). */
#define SM_SMALL 64

__attribute__((target("avx2"))) static inline __m256
sm_ln16_avx2(__m256 y)   /* sm_ln16, lane by lane, same operations */
{
    const __m256i b = _mm256_castps_si256(y);
    const __m256i man = _mm256_and_si256(b, _mm256_set1_epi32(0x7fffff));
    const __m256i big = _mm256_cmpgt_epi32(man, _mm256_set1_epi32(0x3504f3));
    const __m256i e = _mm256_sub_epi32(
        _mm256_sub_epi32(_mm256_and_si256(_mm256_srli_epi32(b, 23),
                                          _mm256_set1_epi32(255)),
                         _mm256_set1_epi32(127)),
        big);                                      /* big is -1 / 0 */
    const __m256i xb = _mm256_or_si256(
        man, _mm256_add_epi32(_mm256_set1_epi32(0x3f800000),
                              _mm256_slli_epi32(big, 23)));
    const __m256 x = _mm256_castsi256_ps(xb), one = _mm256_set1_ps(1.0f);
    const __m256 s = _mm256_div_ps(_mm256_sub_ps(x, one), _mm256_add_ps(x, one));
    const __m256 s2 = _mm256_mul_ps(s, s);
    const __m256 t = _mm256_add_ps(_mm256_set1_ps(1.0f / 3.0f),
                                   _mm256_mul_ps(s2, _mm256_set1_ps(0.2f)));
    const __m256 l = _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(2.0f), s),
                                   _mm256_add_ps(one, _mm256_mul_ps(s2, t)));
    const __m256 u = _mm256_add_ps(
        _mm256_mul_ps(_mm256_cvtepi32_ps(e), _mm256_set1_ps(0.69314718f)), l);
    return _mm256_mul_ps(_mm256_set1_ps(16.0f), u);
}

__attribute__((target("avx2"))) static inline int32_t
sm_hmin_avx2(__m256i m)
{
    __m128i x = _mm_min_epi32(_mm256_castsi256_si128(m),
                              _mm256_extracti128_si256(m, 1));
    x = _mm_min_epi32(x, _mm_shuffle_epi32(x, 0x4e));
    x = _mm_min_epi32(x, _mm_shuffle_epi32(x, 0xb1));
    return _mm_cvtsi128_si32(x);
}

__attribute__((target("avx2"))) static inline uint32_t
sm_hor_avx2(__m256i m)
{
    __m128i x = _mm_or_si128(_mm256_castsi256_si128(m),
                             _mm256_extracti128_si256(m, 1));
    x = _mm_or_si128(x, _mm_shuffle_epi32(x, 0x4e));
    x = _mm_or_si128(x, _mm_shuffle_epi32(x, 0xb1));
    return (uint32_t)_mm_cvtsi128_si32(x);
}

/* R rows (1..4) at once, phase by phase: one row's work is a long chain
 * of dependent steps (max, its log, levels, the selection network, the
 * extractions, codes): R rows' chains side by side raise the throughput
 * (encode of the captured vit rows: 112 ns per row one at a time, 94 two,
 * 88 four at a time). Row r: n[r] entries at v[r], written to out[r]; returns
 * false, writing nothing, when a row has no positive entry. */
__attribute__((target("avx2,popcnt"), always_inline)) static inline bool
sm_topk_small_body(const as__sm_params *p, const float *const *v,
                   const size_t *n, uint8_t *const *out, size_t *used,
                   const int R)
{
    const int B = p->bits;
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i imax = _mm256_set1_epi32(INT32_MAX);
    const __m256 tiny = _mm256_set1_ps(1e-38f);
    int nv[4];
    __m256i in[4][SM_SMALL / 8];
    __m256 lx[4][SM_SMALL / 8], yv[4][SM_SMALL / 8];
    __m256 mv[4];
    for (int r = 0; r < R; r++) {
        nv[r] = (int)((n[r] + 7) / 8);
        mv[r] = _mm256_setzero_ps();
        for (int b = 0; b < nv[r]; b++) {
            in[r][b] = _mm256_cmpgt_epi32(
                _mm256_set1_epi32((int)n[r] - 8 * b), lane);
            const __m256 y = _mm256_maskload_ps(v[r] + 8 * b, in[r][b]);
            yv[r][b] = y;
            mv[r] = _mm256_max_ps(y, mv[r]);  /* y > mv ? y : mv, as scalar */
            /* each entry's own log does not need the max: computed here,
             * it overlaps the max's reduction and log */
            lx[r][b] = sm_ln16_avx2(_mm256_blendv_ps(
                tiny, y, _mm256_cmp_ps(y, tiny, _CMP_GT_OQ)));
        }
    }
    float m[4];
    size_t k[4];
    __m256 lm[4];
    for (int r = 0; r < R; r++) {
        /* the max in every lane (lanes are >= +0, never NaN: the same
         * value as the scalar path's loop over them) */
        __m256 t = _mm256_max_ps(mv[r], _mm256_permute2f128_ps(mv[r], mv[r],
                                                                1));
        t = _mm256_max_ps(t, _mm256_shuffle_ps(t, t, 0x4e));
        t = _mm256_max_ps(t, _mm256_shuffle_ps(t, t, 0xb1));
        m[r] = _mm256_cvtss_f32(t);
        if (!(m[r] > 0.0f))
            return false;   /* (0 past n: a row of n >= 1 decides alone) */
        k[r] = n[r] / (size_t)p->k;
        size_t k0 = n[r] < AS_SM_MIN_FINE ? n[r] : AS_SM_MIN_FINE;
        k[r] = k[r] < k0 ? k0 : k[r];
        if (!(m[r] > 1e-38f)) {
            lm[r] = _mm256_set1_ps(sm_ln16(m[r]) + 0.5f);
            continue;
        }
        /* ln16(m) is already in the lanes holding m (the same operations
         * on the same bits), so no scalar log waits on the max */
        const __m256 ninf = _mm256_set1_ps(-__builtin_inff());
        __m256 a = ninf;
        for (int b = 0; b < nv[r]; b++)
            a = _mm256_max_ps(a, _mm256_blendv_ps(
                    ninf, lx[r][b], _mm256_cmp_ps(yv[r][b], t, _CMP_EQ_OQ)));
        a = _mm256_max_ps(a, _mm256_permute2f128_ps(a, a, 1));
        a = _mm256_max_ps(a, _mm256_shuffle_ps(a, a, 0x4e));
        a = _mm256_max_ps(a, _mm256_shuffle_ps(a, a, 0xb1));
        lm[r] = _mm256_add_ps(a, _mm256_set1_ps(0.5f));
    }
    /* levels, and keys (level, position) = level * 64 + position: the
     * fine set is the k smallest keys (lowest levels, ties in key order,
     * as the scalar path takes them). Per lane the 4 smallest keys of its
     * column by an insertion network, then k extractions of the overall
     * minimum: the k-th is the last fine key. */
    __m256i lev[4][SM_SMALL / 8], ck[4][SM_SMALL / 8];
    __m256i m0[4], m1[4], m2[4], m3[4];
    for (int r = 0; r < R; r++) {
        m0[r] = m1[r] = m2[r] = m3[r] = imax;
        for (int b = 0; b < nv[r]; b++) {
            __m256 l = _mm256_sub_ps(lm[r], lx[r][b]);
            l = _mm256_max_ps(l, _mm256_setzero_ps());   /* l > 0 ? l : 0 */
            l = _mm256_min_ps(l, _mm256_set1_ps((float)SM_DMAX)); /* < D */
            lev[r][b] = _mm256_cvttps_epi32(l);
            const __m256i x0 = _mm256_blendv_epi8(
                imax, _mm256_or_si256(_mm256_slli_epi32(lev[r][b], 6),
                                      _mm256_add_epi32(lane,
                                          _mm256_set1_epi32(8 * b))),
                in[r][b]);
            ck[r][b] = x0;
            __m256i x = x0, t;
            t = _mm256_min_epi32(m0[r], x); x = _mm256_max_epi32(m0[r], x);
            m0[r] = t;
            t = _mm256_min_epi32(m1[r], x); x = _mm256_max_epi32(m1[r], x);
            m1[r] = t;
            t = _mm256_min_epi32(m2[r], x); x = _mm256_max_epi32(m2[r], x);
            m2[r] = t;
            m3[r] = _mm256_min_epi32(m3[r], x);
        }
    }
    int32_t kth[4];
    for (int r = 0; r < R; r++)
        kth[r] = sm_hmin_avx2(m0[r]);
    size_t kmax = 0;
    for (int r = 0; r < R; r++)
        kmax = k[r] > kmax ? k[r] : kmax;
    for (size_t e = 1; e < kmax; e++)
        for (int r = 0; r < R; r++) {
            if (e >= k[r])
                continue;
            const __m256i hit = _mm256_cmpeq_epi32(m0[r],
                                                   _mm256_set1_epi32(kth[r]));
            m0[r] = _mm256_blendv_epi8(m0[r], m1[r], hit);
            m1[r] = _mm256_blendv_epi8(m1[r], m2[r], hit);
            m2[r] = _mm256_blendv_epi8(m2[r], m3[r], hit);
            m3[r] = _mm256_blendv_epi8(m3[r], imax, hit);
            kth[r] = sm_hmin_avx2(m0[r]);
        }
    const int32_t *bnd = sm_cbnd[1][B];
    const int nbd = sm_tabs[1][B].nc - 1;
    __m256i bv[SM_MAXC];
    for (int j = 0; j < nbd; j++)
        bv[j] = _mm256_set1_epi32(bnd[j] - 1);
    const __m256i shl = _mm256_mullo_epi32(lane, _mm256_set1_epi32(B));
    const __m256i bits = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    for (int r = 0; r < R; r++) {
        const int32_t cut = kth[r] >> 6;
        const __m256i kv = _mm256_set1_epi32(kth[r] + 1);
        uint64_t fm = 0;
        for (int b = 0; b < nv[r]; b++)
            fm |= (uint64_t)(uint32_t)_mm256_movemask_ps(_mm256_castsi256_ps(
                      _mm256_cmpgt_epi32(kv, ck[r][b]))) << (8 * b);
        /* coarse codes 1 + #{boundaries <= level - reference} (= sm_ctab,
         * reference min(cut, 255)), 0 for fine entries and past n, packed
         * B bits each, little endian: a group of 8 codes is B bytes,
         * written 4 bytes at a time (the spill past the codes lands on
         * the fine bytes, written after; short rows go through a buffer) */
        const size_t nbytes = (n[r] * (size_t)B + 7) / 8;
        const bool direct = (size_t)(B * (nv[r] - 1) + 4) <= nbytes + k[r];
        uint8_t pk[SM_SMALL / 8 * 4 + 4];
        uint8_t *dst = direct ? out[r] : pk;
        const __m256i lr = _mm256_set1_epi32(cut < 255 ? cut : 255);
        for (int b = 0; b < nv[r]; b++) {
            __m256i q = _mm256_min_epi32(_mm256_sub_epi32(lev[r][b], lr),
                                         _mm256_set1_epi32(SM_CTAB - 1));
            __m256i c = _mm256_set1_epi32(1);
            if (nbd == 6) {          /* B = 3: unrolled, bounds in registers */
                for (int j = 0; j < 6; j++)
                    c = _mm256_sub_epi32(c, _mm256_cmpgt_epi32(q, bv[j]));
            } else {
                for (int j = 0; j < nbd; j++)
                    c = _mm256_sub_epi32(c, _mm256_cmpgt_epi32(q, bv[j]));
            }
            const __m256i fb = _mm256_set1_epi32((int)((fm >> (8 * b)) & 255));
            const __m256i isf = _mm256_cmpeq_epi32(_mm256_and_si256(fb, bits),
                                                   bits);
            c = _mm256_andnot_si256(_mm256_or_si256(isf, _mm256_xor_si256(
                    in[r][b], _mm256_set1_epi32(-1))), c);
            const uint32_t g = sm_hor_avx2(_mm256_sllv_epi32(c, shl));
            memcpy(dst + B * b, &g, 4);
        }
        if (!direct)
            memcpy(out[r], pk, nbytes);
        /* fine codes: levels of the fine entries (at most 255), key order */
        uint8_t *fine = out[r] + nbytes;
        size_t nfine = 0;
        for (uint64_t f = fm; f; f &= f - 1) {
            const unsigned i = (unsigned)__builtin_ctzll(f);
            int32_t d;
            memcpy(&d, (const char *)(const void *)lev[r] + 4 * i, 4);
            fine[nfine++] = (uint8_t)(d < 255 ? d : 255);
        }
        assert(nfine == k[r]);
        used[r] = nbytes + nfine;
    }
    return true;
}

__attribute__((target("avx2,popcnt"))) static bool
sm_topk_small1_avx2(const as__sm_params *p, const float *const *v,
                    const size_t *n, uint8_t *const *out, size_t *used)
{
    return sm_topk_small_body(p, v, n, out, used, 1);
}

static bool sm_have_avx2(void)
{
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt");
}

static size_t sm_topk_small(const as__sm_params *p, const float *v, size_t n,
                            uint8_t *out)
{
    size_t used = 0;
    if (sm_have_avx2() && sm_topk_small1_avx2(p, &v, &n, &out, &used))
        return used;
    return 0;
}

__attribute__((target("avx2,popcnt"))) static bool
sm_topk_small4_avx2(const as__sm_params *p, const float *const *v,
                    const size_t *n, uint8_t *const *out, size_t *used)
{
    return sm_topk_small_body(p, v, n, out, used, 4);
}

/* Four rows' sotk encodings side by side when all are short fixed-k rows
 * with a positive entry (each row right after the one before); false
 * otherwise, writing nothing. */
bool as__sm_topk_encode4(const as__sm_params *p, const float *const *v,
                        const size_t *n, uint8_t *out, size_t *used)
{
    (void)sm_table_of(p);
    if (!(p->kind == AS_SM_TOPK && p->mass == 0.0f && sm_have_avx2()))
        return false;
    uint8_t *o[4];
    for (int r = 0; r < 4; r++) {
        if (n[r] < 1 || n[r] > SM_SMALL || n[r] / (size_t)p->k > 4)
            return false;
        o[r] = r ? o[r - 1] + as__sm_row_bytes(p, n[r - 1], n[r - 1]) : out;
    }
    return sm_topk_small4_avx2(p, v, n, o, used);
}
#else
bool as__sm_topk_encode4(const as__sm_params *p, const float *const *v,
                        const size_t *n, uint8_t *out, size_t *used)
{
    (void)p, (void)v, (void)n, (void)out, (void)used;
    return false;
}
#endif

size_t as__sm_log_encode(const as__sm_params *p, const float *v, size_t n,
                        uint8_t *out, as__sm_work *w)
{
    (void)sm_table_of(p);
    const int B = p->bits;
    const bool topk = p->kind == AS_SM_TOPK;
    const uint8_t *ctab = sm_ctab[topk][B];
    const size_t nb = (n * (size_t)B + 7) / 8;
    uint8_t *codes = w->codes;
#ifdef SM_X86_DISPATCH
    if (topk && p->mass == 0.0f && n <= SM_SMALL && n / (size_t)p->k <= 4) {
        size_t used = sm_topk_small(p, v, n, out);
        if (used)
            return used;
    }
#endif
    /* 8 independent partial maxima (the same max in any order; NaN and
     * values <= 0 never win): no chain of dependent compares */
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
    if (!(m > 0.0f)) {
        /* no positive entry (not a softmax row): solog decodes uniform,
         * sotk puts the mass on the first entry; sizes stay in bounds */
        memset(codes, 0, n);
        if (topk) {
            for (size_t i = 1; i < n; i++)
                codes[i] = (uint8_t)((1 << B) - 1);
            sm_pack(codes, n, B, out);
            out[nb] = 0;
            return nb + 1;
        }
        sm_pack(codes, n, B, out);
        return nb;
    }

    /* level of every entry below the max, 1/16 nat units, and (sotk) a
     * histogram of the levels: the linear-time selection of the fine set */
    const float lm = sm_ln16(m) + 0.5f;
    uint32_t *lev = w->key;
    /* branch-free, so the compiler vectorizes it */
    for (size_t i = 0; i < n; i++) {
        float x = v[i] > 1e-38f ? v[i] : 1e-38f;   /* also maps NaN, <= 0 */
        float l = lm - sm_ln16(x);
        l = l > 0.0f ? l : 0.0f;
        l = l < (float)SM_DMAX ? l : (float)SM_DMAX;
        lev[i] = (uint32_t)(int32_t)l;
    }
    uint32_t hist[257];
    float hmass[257];
    size_t k = 0;
    if (topk) {
        k = n / (size_t)p->k;
        size_t k0 = n < AS_SM_MIN_FINE ? n : AS_SM_MIN_FINE;
        k = k < k0 ? k0 : k;
    }
    /* the cut level (level of the k-th smallest) and how many lie below
     * it: for a fixed small k a sorted buffer of the k smallest levels
     * (expected O(n + k^2 log n) steps, no table to clear), else a
     * histogram of the levels */
    uint32_t cut = 0;
    size_t below = 0;
    bool have_cut = false;
    if (topk && p->mass == 0.0f && k <= 4) {
        /* the 4 lowest levels by a branch-free insertion network (k is 3
         * for rows of 48..63, the common case): the k-th lowest is the cut */
        /* two independent networks (even / odd entries) for instruction
         * parallelism, then the odd one's four merged into the even one's:
         * the 4 lowest of a multiset do not depend on the order */
        uint32_t b[2][4];
        for (int j = 0; j < 2; j++)
            b[j][0] = b[j][1] = b[j][2] = b[j][3] = UINT32_MAX;
#define SM_NET_INS(bb, xin)                                                 \
        do {                                                                \
            uint32_t x_ = (xin), t_;                                        \
            t_ = bb[0] < x_ ? bb[0] : x_; x_ = bb[0] < x_ ? x_ : bb[0];     \
            bb[0] = t_;                                                     \
            t_ = bb[1] < x_ ? bb[1] : x_; x_ = bb[1] < x_ ? x_ : bb[1];     \
            bb[1] = t_;                                                     \
            t_ = bb[2] < x_ ? bb[2] : x_; x_ = bb[2] < x_ ? x_ : bb[2];     \
            bb[2] = t_;                                                     \
            bb[3] = bb[3] < x_ ? bb[3] : x_;                                \
        } while (0)
        size_t e = 0;
        for (; e + 2 <= n; e += 2) {
            SM_NET_INS(b[0], lev[e]);
            SM_NET_INS(b[1], lev[e + 1]);
        }
        if (e < n)
            SM_NET_INS(b[0], lev[e]);
        for (int j = 0; j < 4; j++)
            SM_NET_INS(b[0], b[1][j]);
#undef SM_NET_INS
        cut = b[0][k - 1];
        for (size_t i = 0; i < n; i++)
            below += lev[i] < cut;
        have_cut = true;
    } else if (topk && p->mass == 0.0f && k <= 32) {
        uint32_t buf[32] = {0};   /* (k >= 1 fills buf[k - 1]) */
        size_t nb_ = 0;
        for (size_t i = 0; i < n; i++) {
            uint32_t d = lev[i];
            if (nb_ == k && d >= buf[k - 1])
                continue;
            size_t j = nb_ < k ? nb_++ : k - 1;
            while (j > 0 && buf[j - 1] > d) {
                buf[j] = buf[j - 1];
                j--;
            }
            buf[j] = d;
        }
        cut = buf[k - 1];
        for (size_t i = 0; i < n; i++)
            below += lev[i] < cut;
        have_cut = true;
    } else if (topk && n < 1024) {
        memset(hist, 0, sizeof hist);
        for (size_t i = 0; i < n; i++)
            hist[lev[i] < 256 ? lev[i] : 256]++;
        if (p->mass > 0.0f) {
            memset(hmass, 0, sizeof hmass);
            for (size_t i = 0; i < n; i++)
                hmass[lev[i] < 256 ? lev[i] : 256] += v[i] > 0.0f ? v[i] : 0.0f;
        }
    } else if (topk) {
        /* four interleaved histograms: equal neighbours would otherwise
         * chain every increment through one memory slot */
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
        if (p->mass > 0.0f) {
            memset(hmass, 0, sizeof hmass);
            for (i = 0; i < n; i++)
                hmass[lev[i] < 256 ? lev[i] : 256] += v[i] > 0.0f ? v[i] : 0.0f;
        }
    }

    size_t nfine = 0;
    uint32_t lref = 0;
    if (topk) {
        /* cut level: the k entries of lowest level (highest value) */
        double mass = 0.0;
        while (!have_cut && below + hist[cut] < k) {
            below += hist[cut];
            if (p->mass > 0.0f)
                mass += hmass[cut];
            cut++;
            if (p->mass > 0.0f && mass >= p->mass) {
                k = below;           /* adaptive: whole levels to mass P */
                break;
            }
        }
        size_t ties = k - below;     /* taken at level == cut, in order */
        uint8_t *fine = out + nb;
        if (p->mass == 0.0f) {
            /* fixed k: the fine set always holds an entry at the cut (at
             * most k - 1 lie below it), so the reference level is the cut
             * and one pass writes every code */
            const uint32_t dmax = have_cut ? SM_DMAX : 256;
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
            assert(nfine == k);
            sm_pack(codes, n, B, out);
            return nb + nfine;
        }
        /* the histogram lumps levels >= 256 into bin 256: compare
         * clamped levels then (the fine code clamps to 255 anyway) */
        const uint32_t dmax = have_cut ? SM_DMAX : 256;
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
        assert(nfine == k);
        lref = lref < 255 ? lref : 255;
        for (size_t i = 0; i < n; i++)
            if (codes[i]) {
                uint32_t r = lev[i] - lref;     /* >= 0: below the cut */
                codes[i] = (uint8_t)(1 + ctab[r < SM_CTAB ? r : SM_CTAB - 1]);
            }
    } else {
        for (size_t i = 0; i < n; i++) {
            uint32_t r = lev[i];
            codes[i] = ctab[r < SM_CTAB ? r : SM_CTAB - 1];
        }
    }
    sm_pack(codes, n, B, out);
    return nb + nfine;
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

#ifdef SM_X86_DISPATCH
/* Weights of a short sotk row (n <= 64) in AVX2 vectors: codes unpacked
 * by variable shifts, coarse weights by a table permute, fine entries
 * patched in key order; the same values as the scalar loop of sm_row_weights
 * (which also sums them: the caller does that, in the same order). */
/* The 4 code bytes at offset o of a row's nb code bytes (zeros past nb),
 * read straight from the blob: the last group as the 4 bytes ending at nb,
 * shifted down (nothing past the codes is read). Rows of nb < 4 go
 * through the zero-padded copy sm[0..7]. (The codes used to be copied
 * into a padded buffer first: its overlapping copies, reloaded 4 bytes at
 * a time, stalled store forwarding.) */
static inline uint32_t sm_code_group(const uint8_t *in, const uint8_t *sm,
                                     size_t nb, size_t o)
{
    uint32_t g;
    if (nb < 4) {
        memcpy(&g, sm + o, 4);
    } else if (o + 4 <= nb) {
        memcpy(&g, in + o, 4);
    } else {
        memcpy(&g, in + nb - 4, 4);
        g >>= 8 * (o + 4 - nb);
    }
    return g;
}

__attribute__((target("avx2,popcnt"))) static size_t
sm_topk_weights_avx2(const sm_table *t, int B, const uint8_t *in,
                     size_t n, float *wt)
{
    const int nv = (int)((n + 7) / 8);
    const size_t nb = (n * (size_t)B + 7) / 8;   /* <= 32 */
    uint8_t buf[8] = {0};
    for (size_t i = 0; i < nb && nb < 4; i++)
        buf[i] = in[i];
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i shr = _mm256_mullo_epi32(lane, _mm256_set1_epi32(B));
    const __m256i cmask = _mm256_set1_epi32((1 << B) - 1);
    __m256i c[SM_SMALL / 8];
    uint64_t fm = 0;
    for (int b = 0; b < nv; b++) {
        const uint32_t g = sm_code_group(in, buf, nb, (size_t)B * b);
        c[b] = _mm256_and_si256(
            _mm256_srlv_epi32(_mm256_set1_epi32((int)g), shr), cmask);
        const __m256i in_ = _mm256_cmpgt_epi32(
            _mm256_set1_epi32((int)n - 8 * b), lane);
        fm |= (uint64_t)(uint32_t)_mm256_movemask_ps(_mm256_castsi256_ps(
                  _mm256_and_si256(_mm256_cmpeq_epi32(c[b],
                                   _mm256_setzero_si256()), in_))) << (8 * b);
    }
    const uint8_t *fine = in + nb;
    const size_t k = (size_t)__builtin_popcountll(fm);
    uint32_t maxc = 0;
    for (size_t f = 0; f < k; f++)
        maxc = fine[f] > maxc ? fine[f] : maxc;
    /* weights by code: fine weight times the shifted table, as vectors
     * (the same float products; no scalar stores reloaded as a vector) */
    const __m256 fw = _mm256_set1_ps(sm_fine_w[maxc]);
    const __m256 cw0 = _mm256_mul_ps(fw, _mm256_loadu_ps(t->wsh)),
                 cw1 = _mm256_mul_ps(fw, _mm256_loadu_ps(t->wsh + 8));
    for (int b = 0; b < nv; b++) {
        __m256 x = _mm256_permutevar8x32_ps(cw0, c[b]);
        if (B == 4)
            x = _mm256_blendv_ps(x, _mm256_permutevar8x32_ps(cw1, c[b]),
                                 _mm256_castsi256_ps(_mm256_cmpgt_epi32(
                                     c[b], _mm256_set1_epi32(7))));
        if (8 * (size_t)b + 8 <= n)
            _mm256_storeu_ps(wt + 8 * b, x);
        else
            _mm256_maskstore_ps(wt + 8 * b, _mm256_cmpgt_epi32(
                _mm256_set1_epi32((int)n - 8 * b), lane), x);
    }
    size_t f = 0;
    for (uint64_t r = fm; r; r &= r - 1)
        wt[__builtin_ctzll(r)] = sm_fine_w[fine[f++]];
    return nb + k;
}
/* The same for four rows stored back to back, phase by phase (codes and
 * fine counts of all four, then their scales, then the weights): one
 * row's steps are a chain; four side by side overlap. Returns the bytes
 * of the four rows. */
__attribute__((target("avx2,popcnt"))) static size_t
sm_topk_weights4_avx2(const sm_table *t, int B, const uint8_t *in,
                      const size_t *n, float *const *wt)
{
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i shr = _mm256_mullo_epi32(lane, _mm256_set1_epi32(B));
    const __m256i cmask = _mm256_set1_epi32((1 << B) - 1);
    __m256i c[4][SM_SMALL / 8];
    uint64_t fm[4];
    const uint8_t *fine[4];
    int nv[4];
    const uint8_t *pp = in;
    for (int r = 0; r < 4; r++) {
        nv[r] = (int)((n[r] + 7) / 8);
        const size_t nb = (n[r] * (size_t)B + 7) / 8;   /* <= 32 */
        uint8_t buf[8] = {0};
        for (size_t i = 0; i < nb && nb < 4; i++)
            buf[i] = pp[i];
        fm[r] = 0;
        for (int b = 0; b < nv[r]; b++) {
            const uint32_t g = sm_code_group(pp, buf, nb, (size_t)B * b);
            c[r][b] = _mm256_and_si256(
                _mm256_srlv_epi32(_mm256_set1_epi32((int)g), shr), cmask);
            const __m256i in_ = _mm256_cmpgt_epi32(
                _mm256_set1_epi32((int)n[r] - 8 * b), lane);
            fm[r] |= (uint64_t)(uint32_t)_mm256_movemask_ps(
                         _mm256_castsi256_ps(_mm256_and_si256(
                             _mm256_cmpeq_epi32(c[r][b],
                                                _mm256_setzero_si256()),
                             in_))) << (8 * b);
        }
        fine[r] = pp + nb;
        pp += nb + (size_t)__builtin_popcountll(fm[r]);
    }
    __m256 cw0[4], cw1[4];
    for (int r = 0; r < 4; r++) {
        const size_t k = (size_t)__builtin_popcountll(fm[r]);
        uint32_t maxc = 0;
        for (size_t f = 0; f < k; f++)
            maxc = fine[r][f] > maxc ? fine[r][f] : maxc;
        const __m256 fw = _mm256_set1_ps(sm_fine_w[maxc]);
        cw0[r] = _mm256_mul_ps(fw, _mm256_loadu_ps(t->wsh));
        cw1[r] = _mm256_mul_ps(fw, _mm256_loadu_ps(t->wsh + 8));
    }
    for (int r = 0; r < 4; r++) {
        float *w = wt[r];
        for (int b = 0; b < nv[r]; b++) {
            __m256 x = _mm256_permutevar8x32_ps(cw0[r], c[r][b]);
            if (B == 4)
                x = _mm256_blendv_ps(x, _mm256_permutevar8x32_ps(cw1[r],
                                                                 c[r][b]),
                                     _mm256_castsi256_ps(_mm256_cmpgt_epi32(
                                         c[r][b], _mm256_set1_epi32(7))));
            if (8 * (size_t)b + 8 <= n[r])
                _mm256_storeu_ps(w + 8 * b, x);
            else
                _mm256_maskstore_ps(w + 8 * b, _mm256_cmpgt_epi32(
                    _mm256_set1_epi32((int)n[r] - 8 * b), lane), x);
        }
        size_t f = 0;
        for (uint64_t q = fm[r]; q; q &= q - 1)
            w[__builtin_ctzll(q)] = sm_fine_w[fine[r][f++]];
    }
    return (size_t)(pp - in);
}
#endif

/* Weights of the row's codes (unnormalized) into wt[0..n-1]; returns the
 * bytes of the row. */
static size_t sm_row_weights(const as__sm_params *p, const uint8_t *in,
                             size_t n, float *wt, as__sm_work *w)
{
    const sm_table *t = sm_table_of(p);
#ifdef SM_X86_DISPATCH
    if (p->kind == AS_SM_TOPK && n <= SM_SMALL &&
        __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt"))
        return sm_topk_weights_avx2(t, p->bits, in, n, wt);
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
            cw[c + 1] = sm_fine_w[maxc] * t->wt[c];
        static const uint8_t zero = 0;
        const uint8_t *fsrc = k ? fine : &zero;  /* read in bounds always */
        const size_t flast = k ? k - 1 : 0;
        size_t f = 0;
        for (size_t i = 0; i < n; i++) {
            size_t isf = codes[i] == 0;
            uint8_t fc = fsrc[f < flast ? f : flast];
            wt[i] = isf ? sm_fine_w[fc] : cw[codes[i]];
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
#ifdef SM_X86_DISPATCH
    if (cnt == 4 && p->kind == AS_SM_TOPK && n[0] <= SM_SMALL &&
        n[1] <= SM_SMALL && n[2] <= SM_SMALL && n[3] <= SM_SMALL &&
        sm_have_avx2()) {
        pp += sm_topk_weights4_avx2(sm_table_of(p), p->bits, in, n, v);
        sm_normalize(v, n, cnt);
        return (size_t)(pp - in);
    }
#endif
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

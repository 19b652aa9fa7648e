/*
 * The AVX2 paths of the sotk codec for short rows (n <= 64): encode one or
 * four rows, decode the weights of one or four rows. The same float
 * operations as the scalar paths in log.c, lane by lane (no FMA): the same
 * levels, codes, bytes and weights. CPUs without AVX2 take the scalar
 * paths; callers check as_cpu_avx2() first.
 */
#include <assert.h>
#include <string.h>

#include "store/policies/softmax/log_impl.h"
#include "util/simd.h"


#if AS_X86_DISPATCH

/* Short sotk rows (n <= 64, fixed k <= 4: sotk:16:B up to 64 keys, the
 * vit and lm rows), eight entries per AVX2 vector: the same float
 * operations as the scalar path below, lane by lane (no FMA: the same
 * levels, cut, codes and bytes), without its per-entry branches; codes are
 * packed straight from the vectors. CPUs without AVX2 take the scalar
 * path. Returns the bytes written, or 0 when the row has no positive
 * entry (the scalar path handles it). */

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
 * extractions, codes): R rows' chains side by side raise the throughput.
 * The phases share this state; each is always inlined into the R = 1 and
 * R = 4 kernels. */
typedef struct sm_small {
    int     nv[4];                          /* vectors per row */
    __m256i in[4][SM_SMALL / 8];            /* lane < n */
    __m256  lx[4][SM_SMALL / 8];            /* 16 ln(y) per entry */
    __m256  yv[4][SM_SMALL / 8];
    __m256  mv[4], lm[4];                   /* partial maxima; 16 ln(max) + 1/2 */
    size_t  k[4];                           /* fine entries */
    __m256i lev[4][SM_SMALL / 8], ck[4][SM_SMALL / 8];   /* levels, keys */
    __m256i m0[4], m1[4], m2[4], m3[4];     /* per lane: the 4 smallest keys */
    int32_t kth[4];                         /* the k-th smallest key */
} sm_small;

#define SM_SMALL_FN __attribute__((target("avx2,popcnt"), always_inline)) static inline

/* Load the rows (masked past n), their partial maxima and each entry's own
 * log (which does not need the max: computed here, it overlaps the max's
 * reduction and log). */
SM_SMALL_FN void sm_small_load(sm_small *st, const float *const *v, const size_t *n, const int R)
{
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256 tiny = _mm256_set1_ps(1e-38f);
    for (int r = 0; r < R; r++) {
        st->nv[r] = (int)((n[r] + 7) / 8);
        st->mv[r] = _mm256_setzero_ps();
        for (int b = 0; b < st->nv[r]; b++) {
            st->in[r][b] = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n[r] - 8 * b), lane);
            const __m256 y = _mm256_maskload_ps(v[r] + 8 * b, st->in[r][b]);
            st->yv[r][b] = y;
            st->mv[r] = _mm256_max_ps(y, st->mv[r]);  /* y > mv ? y : mv, as scalar */
            st->lx[r][b] = sm_ln16_avx2(_mm256_blendv_ps(
                tiny, y, _mm256_cmp_ps(y, tiny, _CMP_GT_OQ)));
        }
    }
}

/* Each row's max, k and reference log; false when a row has no positive
 * entry. */
SM_SMALL_FN bool sm_small_max(sm_small *st, const as__sm_params *p, const size_t *n,
                              const int R)
{
    for (int r = 0; r < R; r++) {
        /* the max in every lane (lanes are >= +0, never NaN: the same
         * value as the scalar path's loop over them) */
        const __m256 mv = st->mv[r];
        __m256 t = _mm256_max_ps(mv, _mm256_permute2f128_ps(mv, mv, 1));
        t = _mm256_max_ps(t, _mm256_shuffle_ps(t, t, 0x4e));
        t = _mm256_max_ps(t, _mm256_shuffle_ps(t, t, 0xb1));
        const float m = _mm256_cvtss_f32(t);
        if (!(m > 0.0f))
            return false;   /* (0 past n: a row of n >= 1 decides alone) */
        st->k[r] = n[r] / (size_t)p->k;
        size_t k0 = n[r] < AS_SM_MIN_FINE ? n[r] : AS_SM_MIN_FINE;
        st->k[r] = st->k[r] < k0 ? k0 : st->k[r];
        if (!(m > 1e-38f)) {
            st->lm[r] = _mm256_set1_ps(sm_ln16(m) + 0.5f);
            continue;
        }
        /* ln16(m) is already in the lanes holding m (the same operations
         * on the same bits), so no scalar log waits on the max */
        const __m256 ninf = _mm256_set1_ps(-__builtin_inff());
        __m256 a = ninf;
        for (int b = 0; b < st->nv[r]; b++)
            a = _mm256_max_ps(a, _mm256_blendv_ps(
                    ninf, st->lx[r][b], _mm256_cmp_ps(st->yv[r][b], t, _CMP_EQ_OQ)));
        a = _mm256_max_ps(a, _mm256_permute2f128_ps(a, a, 1));
        a = _mm256_max_ps(a, _mm256_shuffle_ps(a, a, 0x4e));
        a = _mm256_max_ps(a, _mm256_shuffle_ps(a, a, 0xb1));
        st->lm[r] = _mm256_add_ps(a, _mm256_set1_ps(0.5f));
    }
    return true;
}

/* Levels, and keys (level, position) = level * 64 + position: the fine set
 * is the k smallest keys (lowest levels, ties in key order, as the scalar
 * path takes them). Per lane the 4 smallest keys of its column by an
 * insertion network. */
SM_SMALL_FN void sm_small_keys(sm_small *st, const int R)
{
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i imax = _mm256_set1_epi32(INT32_MAX);
    for (int r = 0; r < R; r++) {
        __m256i m0 = imax, m1 = imax, m2 = imax, m3 = imax;
        for (int b = 0; b < st->nv[r]; b++) {
            __m256 l = _mm256_sub_ps(st->lm[r], st->lx[r][b]);
            l = _mm256_max_ps(l, _mm256_setzero_ps());   /* l > 0 ? l : 0 */
            l = _mm256_min_ps(l, _mm256_set1_ps((float)SM_DMAX)); /* < D */
            st->lev[r][b] = _mm256_cvttps_epi32(l);
            const __m256i x0 = _mm256_blendv_epi8(
                imax, _mm256_or_si256(_mm256_slli_epi32(st->lev[r][b], 6),
                                      _mm256_add_epi32(lane, _mm256_set1_epi32(8 * b))),
                st->in[r][b]);
            st->ck[r][b] = x0;
            __m256i x = x0, t;
            t = _mm256_min_epi32(m0, x); x = _mm256_max_epi32(m0, x);
            m0 = t;
            t = _mm256_min_epi32(m1, x); x = _mm256_max_epi32(m1, x);
            m1 = t;
            t = _mm256_min_epi32(m2, x); x = _mm256_max_epi32(m2, x);
            m2 = t;
            m3 = _mm256_min_epi32(m3, x);
        }
        st->m0[r] = m0, st->m1[r] = m1, st->m2[r] = m2, st->m3[r] = m3;
    }
}

/* k extractions of the overall minimum key, rows interleaved: the k-th is
 * the last fine key. */
SM_SMALL_FN void sm_small_extract(sm_small *st, const int R)
{
    const __m256i imax = _mm256_set1_epi32(INT32_MAX);
    for (int r = 0; r < R; r++)
        st->kth[r] = sm_hmin_avx2(st->m0[r]);
    size_t kmax = 0;
    for (int r = 0; r < R; r++)
        kmax = st->k[r] > kmax ? st->k[r] : kmax;
    for (size_t e = 1; e < kmax; e++)
        for (int r = 0; r < R; r++) {
            if (e >= st->k[r])
                continue;
            const __m256i hit = _mm256_cmpeq_epi32(st->m0[r], _mm256_set1_epi32(st->kth[r]));
            st->m0[r] = _mm256_blendv_epi8(st->m0[r], st->m1[r], hit);
            st->m1[r] = _mm256_blendv_epi8(st->m1[r], st->m2[r], hit);
            st->m2[r] = _mm256_blendv_epi8(st->m2[r], st->m3[r], hit);
            st->m3[r] = _mm256_blendv_epi8(st->m3[r], imax, hit);
            st->kth[r] = sm_hmin_avx2(st->m0[r]);
        }
}

/* Row r's codes and fine bytes into out: coarse codes 1 + #{boundaries <=
 * level - reference} (= the ctab, reference min(cut, 255)), 0 for fine
 * entries and past n, packed B bits each, little endian: a group of 8
 * codes is B bytes, written 4 bytes at a time (the spill past the codes
 * lands on the fine bytes, written after; short rows go through a
 * buffer). Then the fine codes: levels of the fine entries (at most 255),
 * in key order. Returns the row's bytes. */
typedef struct sm_coarse {
    int     nbd;              /* boundaries */
    __m256i bv[SM_MAXC];      /* boundary - 1, broadcast */
    __m256i shl;              /* B * lane */
} sm_coarse;

SM_SMALL_FN void sm_coarse_init(sm_coarse *cb, int B)
{
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const int32_t *bnd = as__sm_cbnd[1][B];
    cb->nbd = as__sm_tabs[1][B].nc - 1;
    for (int j = 0; j < cb->nbd; j++)
        cb->bv[j] = _mm256_set1_epi32(bnd[j] - 1);
    cb->shl = _mm256_mullo_epi32(lane, _mm256_set1_epi32(B));
}

SM_SMALL_FN size_t sm_small_write(const sm_small *st, const sm_coarse *cb, int r, int B,
                                  size_t n, uint8_t *out)
{
    const int nbd = cb->nbd;
    const __m256i *bv = cb->bv;
    const __m256i shl = cb->shl;
    const __m256i bits = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    const int32_t cut = st->kth[r] >> 6;
    const __m256i kv = _mm256_set1_epi32(st->kth[r] + 1);
    uint64_t fm = 0;
    for (int b = 0; b < st->nv[r]; b++)
        fm |= (uint64_t)(uint32_t)_mm256_movemask_ps(_mm256_castsi256_ps(
                  _mm256_cmpgt_epi32(kv, st->ck[r][b]))) << (8 * b);
    const size_t nbytes = (n * (size_t)B + 7) / 8;
    const bool direct = (size_t)(B * (st->nv[r] - 1) + 4) <= nbytes + st->k[r];
    uint8_t pk[SM_SMALL / 8 * 4 + 4];
    uint8_t *dst = direct ? out : pk;
    const __m256i lr = _mm256_set1_epi32(cut < 255 ? cut : 255);
    for (int b = 0; b < st->nv[r]; b++) {
        __m256i q = _mm256_min_epi32(_mm256_sub_epi32(st->lev[r][b], lr),
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
        const __m256i isf = _mm256_cmpeq_epi32(_mm256_and_si256(fb, bits), bits);
        c = _mm256_andnot_si256(_mm256_or_si256(isf, _mm256_xor_si256(
                st->in[r][b], _mm256_set1_epi32(-1))), c);
        const uint32_t g = sm_hor_avx2(_mm256_sllv_epi32(c, shl));
        memcpy(dst + B * b, &g, 4);
    }
    if (!direct)
        memcpy(out, pk, nbytes);
    uint8_t *fine = out + nbytes;
    size_t nfine = 0;
    for (uint64_t f = fm; f; f &= f - 1) {
        const unsigned i = (unsigned)__builtin_ctzll(f);
        int32_t d;
        memcpy(&d, (const char *)(const void *)st->lev[r] + 4 * i, 4);
        fine[nfine++] = (uint8_t)(d < 255 ? d : 255);
    }
    assert(nfine == st->k[r]);
    return nbytes + nfine;
}

/* Row r: n[r] entries at v[r], written to out[r]; returns false, writing
 * nothing, when a row has no positive entry. */
SM_SMALL_FN bool sm_topk_small_body(const as__sm_params *p, const float *const *v,
                                    const size_t *n, uint8_t *const *out, size_t *used,
                                    const int R)
{
    sm_small st;
    sm_small_load(&st, v, n, R);
    if (!sm_small_max(&st, p, n, R))
        return false;
    sm_small_keys(&st, R);
    sm_small_extract(&st, R);
    sm_coarse cb;
    sm_coarse_init(&cb, p->bits);
    for (int r = 0; r < R; r++)
        used[r] = sm_small_write(&st, &cb, r, p->bits, n[r], out[r]);
    return true;
}

__attribute__((target("avx2,popcnt"))) static bool
sm_topk_small1_avx2(const as__sm_params *p, const float *const *v,
                    const size_t *n, uint8_t *const *out, size_t *used)
{
    return sm_topk_small_body(p, v, n, out, used, 1);
}

size_t as__sm_topk_small(const as__sm_params *p, const float *v, size_t n, uint8_t *out)
{
    size_t used = 0;
    if (as_cpu_avx2() && sm_topk_small1_avx2(p, &v, &n, &out, &used))
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
    (void)as__sm_table_of(p);
    if (!(p->kind == AS_SM_TOPK && p->mass == 0.0f && as_cpu_avx2()))
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


#if AS_X86_DISPATCH
/* Weights of a short sotk row (n <= 64) in AVX2 vectors: codes unpacked
 * by variable shifts, coarse weights by a table permute, fine entries
 * patched in key order; the same values as the scalar loop of sm_row_weights
 * (which also sums them: the caller does that, in the same order). */
/* The 4 code bytes at offset o of a row's nb code bytes (zeros past nb),
 * read straight from the blob: the last group as the 4 bytes ending at nb,
 * shifted down (nothing past the codes is read). Rows of nb < 4 go
 * through the zero-padded copy sm[0..7]. Reading the blob in place avoids
 * the store-forwarding stalls of a padded copy. */
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

__attribute__((target("avx2,popcnt"))) size_t
as__sm_topk_weights_avx2(const sm_table *t, int B, const uint8_t *in,
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
    const __m256 fw = _mm256_set1_ps(as__sm_fine_w[maxc]);
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
        wt[__builtin_ctzll(r)] = as__sm_fine_w[fine[f++]];
    return nb + k;
}
/* The same for four rows stored back to back, phase by phase (codes and
 * fine counts of all four, then their scales, then the weights): one
 * row's steps are a chain; four side by side overlap. Returns the bytes
 * of the four rows. */
__attribute__((target("avx2,popcnt"))) size_t
as__sm_topk_weights4_avx2(const sm_table *t, int B, const uint8_t *in,
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
        const __m256 fw = _mm256_set1_ps(as__sm_fine_w[maxc]);
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
            w[__builtin_ctzll(q)] = as__sm_fine_w[fine[r][f++]];
    }
    return (size_t)(pp - in);
}
#endif

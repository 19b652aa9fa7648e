/*
 * fewbit[:B] — the input of a GELU kept as B-bit codes of its derivative
 * (after Novikov et al., "Few-Bit Backward", ICML 2023).
 *
 * Backward of y = GELU(x) needs only f'(x). The codec stores, per element,
 * which of 2^B contiguous x-intervals x falls in, and per interval one
 * level: f' is replaced by a step function q, and as_store_act_backward
 * computes dx = q(x) * dy straight from the codes.
 *
 * The step function is fitted to each tensor at save: its values are
 * binned (255 bins on [-6, 6], x = 0 a bin center; values beyond are
 * clamped, where f' is 0 or 1 to 1e-7), each bin counting its elements and
 * standing for f' at its center; a dynamic program over the non-empty
 * bins chooses the 2^B contiguous segments that minimize
 * sum_i (f'(x_i) - q(x_i))^2 (the squared gradient error for independent
 * dy), each level being the mean f' of its segment (so q is unbiased per
 * segment). Interval bounds fall on bin edges (every 0.047).
 *
 * NaN inputs keep their positions (8 bytes each) and give NaN gradients, as
 * the exact backward does; +-Inf (and |x| > 6) use the limit 1 / 0.
 * Restore gives a stand-in x_rep[code] per element, chosen in the code's
 * interval with f'(x_rep) closest to the level (grad_only: a consumer that
 * differentiates the restored values gets nearly the same gradient; the
 * values themselves are not the input's).
 *
 * Stored: 160 + 8 * ceil(n * B / 64) + 8 * (NaN count) bytes: B = 2 is 16x
 * smaller than f32, B = 3 10.7x. Measured error: docs/policies.md.
 * Applies to activation_input f32 tensors saved with meta.act GELU.
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/policies/act_grad.h"
#include "store/policies/bits.h"
#include "store/policies/pack512.h"
#include "store/policy.h"
#include "util/simd.h"

#define FB_BINS 255          /* odd: x = 0 is a bin center */
#define FB_XR 6.0f
#define FB_W (2.0 * FB_XR / FB_BINS)
#define FB_MAXBITS 4
#define FB_DEFAULT_BITS 3
#define FB_LEVELS (1 << FB_MAXBITS)

typedef struct fb_params {
    unsigned bits;
} fb_params;

typedef struct fb_blk {
    int64_t  n;
    int64_t  nnan;              /* NaN positions, after the codes */
    uint32_t bits, nlev;
    float    level[FB_LEVELS];  /* f' of code k */
    float    xrep[FB_LEVELS];   /* restore's value of code k */
    uint64_t seal;              /* as_pctx_seal of the fields above */
    uint64_t w[];               /* codes, then nnan int64 positions */
} fb_blk;

static int fewbit_parse(const char *args, size_t len, void **params, char *err,
                        size_t errlen, size_t *err_off)
{
    unsigned bits = FB_DEFAULT_BITS;
    if (len) {
        if (len != 1 || args[0] < '1' || args[0] > '0' + FB_MAXBITS) {
            snprintf(err, errlen, "bits 1..%d", FB_MAXBITS);
            *err_off = 0;
            return AS_ESPEC;
        }
        bits = (unsigned)(args[0] - '0');
    }
    fb_params *p = malloc(sizeof *p);
    if (!p)
        return AS_ENOMEM;
    p->bits = bits;
    *params = p;
    return 0;
}

static int fewbit_applies(const void *params, const as_save_info *info,
                          const as_tensor *t, char *why, size_t whylen)
{
    if (t->dtype != AS_F32) {
        snprintf(why, whylen, "dtype %s", as_dtype_name(t->dtype));
        return AS_ENOTSUP;
    }
    if (info->meta.act.fn != AS_FN_GELU ||
        info->kind != AS_KIND_ACTIVATION_INPUT) {
        snprintf(why, whylen, "not a gelu input");
        return AS_ENOTSUP;
    }
    return 0;
}

/* Clamped to [-6, 6]; NaN gives -6 (NaN positions are kept apart). */
static inline float clampx(float v)
{
    v = v > -FB_XR ? v : -FB_XR;
    return v < FB_XR ? v : FB_XR;
}

static inline int bin_of(float vc)
{
    int j = (int)((vc + FB_XR) * (float)(1.0 / FB_W));
    return j < FB_BINS ? j : FB_BINS - 1;
}

static float bin_lo(int j)
{
    return (float)(-FB_XR + j * FB_W);
}

/* f' of the tanh-form GELU at the bin centers (double). */
static double fp_c[FB_BINS];
static pthread_once_t tables_once = PTHREAD_ONCE_INIT;

static double gelu_grad_d(double x)
{
    const double s = 0.7978845608028654;
    double t = tanh(s * (x + 0.044715 * x * x * x));
    return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * s * (1 + 3 * 0.044715 * x * x);
}

static void tables_init(void)
{
    for (int j = 0; j < FB_BINS; j++)
        fp_c[j] = gelu_grad_d(-FB_XR + (j + 0.5) * FB_W);
}

/* Bins of a chunk of values (vectorizes: clamp, scale, convert, narrow)
 * and its NaN count. */
#define FB_CHUNK 4096
AS_CLONES_V4_V3
static int64_t bins_of(const float *restrict x, int64_t m, uint8_t *restrict bin)
{
    int64_t nnan = 0;
    for (int64_t i = 0; i < m; i++) {
        bin[i] = (uint8_t)bin_of(clampx(x[i]));
        nnan += x[i] != x[i];
    }
    return nnan;
}

/* Per bin: count and sum of f' over its elements, f' taken at the bin
 * center (the bins are 0.047 wide; x = 0 is a center, so an all-zero
 * tensor gets f'(0) = 0.5 exactly). */
typedef struct fb_hist {
    double w[FB_BINS], s1[FB_BINS];
    int64_t nnan;
} fb_hist;

static void histogram(const float *x, int64_t n, fb_hist *h)
{
    /* four interleaved partial counts: no store-to-load chain on runs of
     * one bin */
    uint64_t cnt[4][FB_BINS];
    uint8_t bin[FB_CHUNK];
    memset(cnt, 0, sizeof cnt);
    int64_t nnan = 0;
    for (int64_t i0 = 0; i0 < n; i0 += FB_CHUNK) {
        const int64_t m = n - i0 < FB_CHUNK ? n - i0 : FB_CHUNK;
        nnan += bins_of(x + i0, m, bin);
        for (int64_t i = 0; i < m; i++)
            cnt[i & 3][bin[i]]++;
    }
    /* NaN went to bin 0 (clamped to -6): take them out again */
    if (nnan)
        for (int64_t i = 0; i < n; i++)
            if (x[i] != x[i])
                cnt[i & 3][0]--;
    pthread_once(&tables_once, tables_init);
    h->nnan = nnan;
    for (int j = 0; j < FB_BINS; j++) {
        h->w[j] = (double)(cnt[0][j] + cnt[1][j] + cnt[2][j] + cnt[3][j]);
        h->s1[j] = h->w[j] * fp_c[j];
    }
}

/* Optimal segmentation of the non-empty bins into at most K contiguous
 * segments (least squared error); fills code_of[bin] and the levels. */
static unsigned fit(const fb_hist *h, unsigned K, uint8_t code_of[FB_BINS],
                    float level[FB_LEVELS], int seg_lo[FB_LEVELS],
                    int seg_hi[FB_LEVELS])
{
    int idx[FB_BINS], M = 0;
    double PW[FB_BINS + 1], P1[FB_BINS + 1], P2[FB_BINS + 1];
    PW[0] = P1[0] = P2[0] = 0;
    for (int j = 0; j < FB_BINS; j++)
        if (h->w[j] > 0) {
            idx[M] = j;
            PW[M + 1] = PW[M] + h->w[j];
            P1[M + 1] = P1[M] + h->s1[j];
            /* within-bin spread does not depend on the segmentation */
            P2[M + 1] = P2[M] + h->s1[j] * h->s1[j] / h->w[j];
            M++;
        }
    memset(code_of, 0, FB_BINS);
    if (M == 0)
        return 0;
    if ((int)K > M)
        K = (unsigned)M;
#define COST(a, b) ((P2[b] - P2[a]) - (P1[b] - P1[a]) * (P1[b] - P1[a]) / \
                    (PW[b] - PW[a]))
    static _Thread_local double dp[FB_LEVELS + 1][FB_BINS + 1];
    static _Thread_local short arg[FB_LEVELS + 1][FB_BINS + 1];
    for (int m = 1; m <= M; m++) {
        dp[1][m] = COST(0, m);
        arg[1][m] = 0;
    }
    for (unsigned k = 2; k <= K; k++)
        for (int m = (int)k; m <= M; m++) {
            double best = INFINITY;
            int ba = (int)k - 1;
            for (int a = (int)k - 1; a < m; a++) {
                double c = dp[k - 1][a] + COST(a, m);
                if (c < best) {
                    best = c;
                    ba = a;
                }
            }
            dp[k][m] = best;
            arg[k][m] = (short)ba;
        }
    int end[FB_LEVELS + 1];
    end[K] = M;
    for (unsigned k = K; k >= 1; k--)
        end[k - 1] = arg[k][end[k]];
    for (unsigned s = 0; s < K; s++) {
        int a = end[s], b = end[s + 1];
        level[s] = (float)((P1[b] - P1[a]) / (PW[b] - PW[a]));
        seg_lo[s] = idx[a];
        seg_hi[s] = idx[b - 1];
    }
#undef COST
    unsigned s = 0;
    for (int j = 0; j < FB_BINS; j++) {
        while (s + 1 < K && j > seg_hi[s])
            s++;
        code_of[j] = (uint8_t)s;
    }
    return K;
}

/* An x in bins [lo, hi] whose f' is closest to the level. */
static float representative(int lo, int hi, float level)
{
    float best = bin_lo(lo), err = INFINITY;
    const float step = 2.0f * FB_XR / FB_BINS / 8.0f;
    for (int j = lo; j <= hi; j++)
        for (int k = 0; k < 8; k++) {
            float x = bin_lo(j) + ((float)k + 0.5f) * step;
            float e = fabsf(as_gelu_grad(x) - level);
            if (e < err) {
                err = e;
                best = x;
            }
        }
    return best;
}

/* The codes of x, code_of[bin] each (NaN: bin 0), packed into w (zeroed). */
static void codes_portable(const float *x, int64_t n, const uint8_t *code_of,
                           unsigned bits, uint64_t *w)
{
    uint64_t acc = 0, *wp = w;
    unsigned fill = 0;
    uint8_t bin[FB_CHUNK];
    for (int64_t i0 = 0; i0 < n; i0 += FB_CHUNK) {
        const int64_t m = n - i0 < FB_CHUNK ? n - i0 : FB_CHUNK;
        bins_of(x + i0, m, bin);
        for (int64_t i = 0; i < m; i++) {
            const uint64_t c = code_of[bin[i]];
            acc |= c << fill;
            fill += bits;
            if (fill >= 64) {
                *wp++ = acc;
                fill -= 64;
                acc = fill ? c >> (bits - fill) : 0;
            }
        }
    }
    if (fill)
        *wp = acc;
}

#if AS_X86_DISPATCH
/* The same codes, 16 values at a time: the bin by the same float
 * operations, its code by compares with the segments' last bins (code_of
 * is #{s < nlev - 1 : bin > hi[s]}), packed with pext. */
AS_TARGET_512 static void codes_512(const float *x, int64_t n, const int *hi,
                                    unsigned nlev, unsigned bits, uint64_t *w)
{
    __m512i h[FB_LEVELS];
    const int nh = nlev ? (int)nlev - 1 : 0;
    for (int s = 0; s < nh; s++)
        h[s] = _mm512_set1_epi32(hi[s]);
    const __m512 lo6 = _mm512_set1_ps(-FB_XR), hi6 = _mm512_set1_ps(FB_XR);
    const __m512 scale = _mm512_set1_ps((float)(1.0 / FB_W));
    const __m512i top = _mm512_set1_epi32(FB_BINS - 1), one = _mm512_set1_epi32(1);
    uint8_t *out = (uint8_t *)w;
    const size_t nb = ((size_t)n * bits + 7) / 8, chunk = 2 * (size_t)bits;
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 in = as__mask16((size_t)(n - i));
        /* clampx (max keeps -6 for NaN), then bin_of */
        __m512 v = _mm512_max_ps(_mm512_maskz_loadu_ps(in, x + i), lo6);
        v = _mm512_min_ps(v, hi6);
        __m512i j = _mm512_cvttps_epi32(_mm512_mul_ps(_mm512_add_ps(v, hi6), scale));
        j = _mm512_min_epi32(j, top);
        __m512i c = _mm512_setzero_si512();
        for (int s = 0; s < nh; s++)
            c = _mm512_mask_add_epi32(c, _mm512_mask_cmpgt_epi32_mask(in, j, h[s]), c, one);
        const size_t o = (size_t)i / 8 * bits;
        as__put_bytes(out + o, as__pack16(c, (int)bits), nb - o < chunk ? nb - o : chunk);
    }
}
#endif

static int fewbit_encode(as_pctx *ctx, const void *params,
                         const as_save_info *info, const as_tensor *t,
                         void **state)
{
    const fb_params *p = params;
    const unsigned bits = p ? p->bits : FB_DEFAULT_BITS;
    const int64_t n = as_tensor_numel(t);
    const float *x = t->data;
    fb_hist *h = malloc(sizeof *h);
    if (!h)
        return AS_ENOMEM;
    histogram(x, n, h);
    const size_t words = as__bits_words((uint64_t)n, bits);
    fb_blk *b;
    int rc = as_pctx_alloc(ctx, sizeof *b + (words + (size_t)h->nnan) *
                           sizeof(uint64_t), (void **)&b);
    if (rc < 0) {
        free(h);
        return rc;
    }
    memset(b, 0, sizeof *b);
    b->n = n;
    b->nnan = h->nnan;
    b->bits = bits;
    uint8_t code_of[FB_BINS];
    int lo[FB_LEVELS], hi[FB_LEVELS];
    b->nlev = fit(h, 1u << bits, code_of, b->level, lo, hi);
    free(h);
    for (unsigned s = 0; s < b->nlev; s++)
        b->xrep[s] = representative(lo[s], hi[s], b->level[s]);
    memset(b->w, 0, (words + (size_t)b->nnan) * sizeof(uint64_t));
#if AS_X86_DISPATCH
    if (as__use_512())
        codes_512(x, n, hi, b->nlev, bits, b->w);
    else
#endif
        codes_portable(x, n, code_of, bits, b->w);
    int64_t *nanpos = (int64_t *)(b->w + words), k = 0;
    for (int64_t i = 0; b->nnan && i < n; i++)
        if (x[i] != x[i])
            nanpos[k++] = i;
    b->seal = as_pctx_seal(b, offsetof(fb_blk, seal));
    *state = b;
    return 0;
}

static const int64_t *nan_positions(const fb_blk *b)
{
    return (const int64_t *)(b->w + as__bits_words((uint64_t)b->n, b->bits));
}

/* The header's seal, and every NaN position inside the tensor. */
static int fb_check(as_pctx *ctx, const fb_blk *b)
{
    int rc = as_pctx_check_seal(ctx, b, offsetof(fb_blk, seal), b->seal);
    if (rc)
        return rc;
    const int64_t *np = nan_positions(b);
    for (int64_t k = 0; k < b->nnan; k++)
        if (np[k] < 0 || np[k] >= b->n) {
            as_pctx_errorf(ctx, "stored NaN position %lld outside 0..%lld (corrupted)",
                           (long long)np[k], (long long)b->n);
            return AS_ECORRUPT;
        }
    return 0;
}

static int fewbit_decode(as_pctx *ctx, const void *params, void *state,
                         as_tensor *dst)
{
    const fb_blk *b = state;
    int rc = fb_check(ctx, b);
    if (rc)
        return rc;
    float *y = dst->data;
    for (int64_t i = 0; i < b->n; i++)
        y[i] = b->xrep[as__bits_get(b->w, (uint64_t)i, b->bits)];
    const int64_t *np = nan_positions(b);
    for (int64_t k = 0; k < b->nnan; k++)
        y[np[k]] = NAN;
    return 0;
}

#if AS_X86_DISPATCH
/* dx = level[code] * dy, 16 values at a time (codes by pdep, levels by a
 * permute of the 16-entry table). */
AS_TARGET_512 static void backward_512(const fb_blk *b, const float *dy, float *dx)
{
    const __m512 lev = _mm512_loadu_ps(b->level);
    const int B = (int)b->bits;
    const uint8_t *in = (const uint8_t *)b->w;
    const size_t nb = ((size_t)b->n * (size_t)B + 7) / 8;
    for (int64_t i = 0; i < b->n; i += 16) {
        const __mmask16 m = as__mask16((size_t)(b->n - i));
        const size_t o = (size_t)i / 8 * (size_t)B;
        const __m128i c = as__unpack16(as__get_bytes(in + o, nb - o < 8 ? nb - o : 8), B);
        const __m512 q = _mm512_permutexvar_ps(_mm512_cvtepu8_epi32(c), lev);
        _mm512_mask_storeu_ps(dx + i, m, _mm512_mul_ps(q, _mm512_maskz_loadu_ps(m, dy + i)));
    }
}
#endif

static int fewbit_act_backward(as_pctx *ctx, const void *params, void *state,
                               const as_elementwise *fn, const float *dy,
                               float *dx)
{
    const fb_blk *b = state;
    int rc = fb_check(ctx, b);
    if (rc)
        return rc;
    const unsigned bits = b->bits;
#if AS_X86_DISPATCH
    if (as__use_512()) {
        backward_512(b, dy, dx);
    } else
#endif
    if (64 % bits == 0) {   /* whole codes per word */
        const unsigned per = 64 / bits;
        const uint64_t mask = (1ull << bits) - 1;
        for (int64_t i0 = 0; i0 < b->n; i0 += per) {
            uint64_t v = b->w[(uint64_t)i0 / per];
            const int64_t m = b->n - i0 < per ? b->n - i0 : per;
            for (int64_t j = 0; j < m; j++, v >>= bits)
                dx[i0 + j] = b->level[v & mask] * dy[i0 + j];
        }
    } else {
        for (int64_t i = 0; i < b->n; i++)
            dx[i] = b->level[as__bits_get(b->w, (uint64_t)i, bits)] * dy[i];
    }
    const int64_t *np = nan_positions(b);
    for (int64_t k = 0; k < b->nnan; k++)
        dx[np[k]] = NAN;
    return 0;
}

AS_POLICY_OPS(fewbit,
              "gelu input as fewbit[:B] codes of its derivative (B 1..4, "
              "default 3; fitted per tensor)",
              (.kinds = 1u << AS_KIND_ACTIVATION_INPUT, .grad_only = true,
               .free_params = as_policy_free_params),
              parse, applies, encode, decode, act_backward);

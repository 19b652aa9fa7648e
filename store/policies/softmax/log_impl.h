/*
 * Internals shared by the log-domain codecs' files (log.c: tables, scalar
 * encode and decode; log_avx2.c: the AVX2 paths for short sotk rows;
 * log_avx512.c: the AVX-512 paths of solog).
 * Internal to store/policies/softmax/.
 */
#ifndef AS_STORE_POLICIES_SOFTMAX_LOG_IMPL_H
#define AS_STORE_POLICIES_SOFTMAX_LOG_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "store/policies/softmax/softmax.h"

#define SM_FINE_STEP 16.0   /* fine codes per nat */
#define SM_MAXC 16

/* Coarse tables per (topk?, bits): weights exp(-rep) of the nc codes
 * (rep: the middle of the code's level range; boundaries b_c in nats above
 * the reference level, in as__sm_ctab) (the last, the tail, weighs 0). Steps
 * chosen by measurement on synthetic rows (n 50..1024, logit std 1..4,
 * 200 rows per setting, worst setting maximized; docs/policies.md).
 * The ladder must reach deep enough: what the tail drops is taken from
 * 1 - y_max after renormalization, and in a peaked row that is what the
 * gradient is made of (solog:4's g = 0.15 reaches 9.3 nats). */
typedef struct sm_table {
    int   nc;                 /* coarse codes */
    float wt[SM_MAXC];        /* exp(-rep) */
    float wsh[SM_MAXC];       /* 0, then wt: sotk's weights by code */
} sm_table;

#define SM_DMAX 4095    /* level cap (256 nats: beyond any f32 ratio) */
#define SM_CTAB 1024    /* coarse code lookup, by level above the reference */
#define SM_SMALL 64     /* short sotk rows: the AVX2 paths (log_avx2.c) */

extern sm_table as__sm_tabs[2][5];      /* [topk][bits] */
extern float    as__sm_fine_w[256];     /* exp(-c / 16) */
/* coarse code by level (1/16 nat units) above the reference, per table */
extern uint8_t  as__sm_ctab[2][5][SM_CTAB];
/* the same as boundaries: ctab[d] = #{j : d >= cbnd[j]} (j < nc - 1) */
extern int32_t  as__sm_cbnd[2][5][SM_MAXC];

/* solog: entry x (> 0) has level >= cbnd[0][B][j] (ln(max / x) >= (b_j
 * - 1/2) / 16 nats) exactly when x <= max * cthr[B][j], cthr = exp(-(b_j -
 * 1/2) / 16): the codes without a log per entry. */
extern float    as__sm_cthr[5][SM_MAXC];

/* solog's thresholds max * cthr for a row maximum m > 0 (+inf counts as
 * FLT_MAX: the inf entries get code 0, the rest the tail) into thr;
 * returns their count, 2^B - 1. Code of x: #{j : x <= thr[j]}. */
static inline int as__sm_solog_thresholds(int B, float m, float *thr)
{
    const float mm = m < 3.4028235e38f ? m : 3.4028235e38f;
    const int nbd = (1 << B) - 1;
    for (int j = 0; j < nbd; j++)
        thr[j] = mm * as__sm_cthr[B][j];
    return nbd;
}

/* The coarse table of p (builds every table once, thread-safe). */
const sm_table *as__sm_table_of(const as__sm_params *p);

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

/* AVX2 paths (log_avx2.c), called after as_cpu_avx2(): one short sotk row
 * (fixed k <= 4; 0 when it has no positive entry: the scalar path handles
 * it), the weights of one or four short rows (bytes read). */
size_t as__sm_topk_small(const as__sm_params *p, const float *v, size_t n, uint8_t *out);
size_t as__sm_topk_weights_avx2(const sm_table *t, int B, const uint8_t *in, size_t n,
                                float *wt);
size_t as__sm_topk_weights4_avx2(const sm_table *t, int B, const uint8_t *in,
                                 const size_t *n, float *const *wt);

/* AVX-512 paths of solog (log_avx512.c), called when as__use_512()
 * (store/policies/pack512.h); the same bytes and values as the scalar paths.
 * encode: one row of any length; the bytes written, or 0 when the row has
 * no positive entry (the scalar path handles it). encode4: four rows of
 * 1..64 entries side by side, back to back from out (used[] gets their
 * bytes); false when a row does not fit or has no positive entry.
 * decode: cnt rows stored back to back, renormalized to mass 1 into
 * wt[l] (as sm_row_weights and sm_normalize); returns the bytes read. */
size_t as__sm_solog_encode_avx512(int B, const float *v, size_t n, uint8_t *out);
bool   as__sm_solog_encode4_avx512(int B, const float *const *v, const size_t *n,
                                   uint8_t *out, size_t *used);
size_t as__sm_solog_decode_avx512(const sm_table *t, int B, const uint8_t *in,
                                  const size_t *n, float *const *wt, int cnt);

#endif

/*
 * Direct NCHW conv for few input channels, AVX-512 (see ops_direct.h).
 *
 * Each input image is first copied into a zero-padded, 64-byte aligned
 * buffer (Cin, H + 2p, rows of whole cache lines with slack), so the taps
 * of a 16-column output vector come from aligned loads with no bounds
 * tests; lanes past the row's end compute on slack and are not stored
 * (forward) or meet a zero gradient (backward). Forward: per vector of
 * 16 output columns, 8 output channels accumulate at once (8 independent
 * FMA chains), the weight broadcast from memory. Backward weights: per input channel and
 * pair of output channels, 2 x 9 vector accumulators over a whole image,
 * added to vector sums in the workspace, reduced to dW once at the end.
 */
#include "layers/ops_direct.h"

#include <stdint.h>
#include <string.h>

#include "util/simd.h"

#define VL 16        /* floats per vector */
#define MAX_CIN 3
#define OB_F 8       /* output channels per forward block */
#define OB_B 2       /* output channels per backward block */
#define TAPS 9       /* 3x3 */

static int pad_h(const as_op_conv_geom *g)
{
    return g->H + 2 * g->pad;
}

/* Rows of whole 64-byte lines, with room for the aligned vector after the
 * last one a row's output needs (the backward shifts taps out of pairs of
 * aligned vectors). */
static int pad_w(const as_op_conv_geom *g)
{
    return (g->W + 2 * g->pad + 2 * VL - 3 + VL - 1) / VL * VL;
}

static size_t pad_floats(const as_op_conv_geom *g)
{
    return (size_t)g->Cin * pad_h(g) * pad_w(g);
}

/* Vector sums of the backward: (Cout, Cin * 9 + 1) vectors (the + 1: db). */
static size_t acc_floats(const as_op_conv_geom *g)
{
    return (size_t)g->Cout * (g->Cin * TAPS + 1) * VL;
}

static bool shape_ok(const as_op_conv_geom *g)
{
    return g->Cin <= MAX_CIN && g->kh == 3 && g->kw == 3 && g->stride == 1;
}

size_t as_direct_conv_workspace(const as_op_conv_geom *g)
{
    return shape_ok(g) ? pad_floats(g) + acc_floats(g) + VL : 0;   /* + alignment */
}

#if AS_X86_DISPATCH

/* The padded image's place in ws: 64-byte aligned. */
static float *pad_at(float *ws)
{
    return (float *)(((uintptr_t)ws + 63) / 64 * 64);
}

static void pad_image(const as_op_conv_geom *g, const float *x, float *xp)
{
    const int Hp = pad_h(g), Wp = pad_w(g);
    memset(xp, 0, sizeof(float) * pad_floats(g));
    for (int c = 0; c < g->Cin; c++)
        for (int h = 0; h < g->H; h++)
            memcpy(xp + ((size_t)c * Hp + h + g->pad) * Wp + g->pad,
                   x + ((size_t)c * g->H + h) * g->W, sizeof(float) * (size_t)g->W);
}

bool as_direct_conv_ok(const as_op_conv_geom *g)
{
    return shape_ok(g) && !as__simd_portable() && as_cpu_avx512bw();
}

#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma")))
#define INLINE __attribute__((always_inline)) inline

static __mmask16 tail_mask(int rem)
{
    return rem >= VL ? (__mmask16)0xFFFF : (__mmask16)((1u << rem) - 1u);
}

/* The 9 taps of a 16-column vector at xr (64-byte aligned, rows Wp
 * apart), each shifted out of two aligned vectors: a shifted load would
 * split cache lines, which halves the loads' throughput. */
AVX512 static INLINE void taps(const float *xr, int Wp, __m512 *xv)
{
    #pragma GCC unroll 3
    for (int i = 0; i < 3; i++) {
        const float *r = xr + (size_t)i * Wp;
        __m512i lo = _mm512_castps_si512(_mm512_load_ps(r));
        __m512i hi = _mm512_castps_si512(_mm512_load_ps(r + VL));
        xv[3 * i] = _mm512_castsi512_ps(lo);
        xv[3 * i + 1] = _mm512_castsi512_ps(_mm512_alignr_epi32(hi, lo, 1));
        xv[3 * i + 2] = _mm512_castsi512_ps(_mm512_alignr_epi32(hi, lo, 2));
    }
}

/* ob output channels from o, one output vector at (oh, ow0). */
AVX512 static INLINE void fwd_vec(const as_op_conv_geom *g, int ob, int o,
                                  const float *xp, const float *W,
                                  const float *b, float *yv, __mmask16 m)
{
    const int Hp = pad_h(g), Wp = pad_w(g), K = g->Cin * TAPS;
    const size_t HoWo = (size_t)g->Ho * g->Wo;
    __m512 acc[OB_F];
    #pragma GCC unroll 9
    for (int q = 0; q < ob; q++)
        acc[q] = b ? _mm512_set1_ps(b[o + q]) : _mm512_setzero_ps();
    for (int c = 0; c < g->Cin; c++) {
        __m512 xv[TAPS];
        taps(xp + (size_t)c * Hp * Wp, Wp, xv);
        #pragma GCC unroll 9
        for (int t = 0; t < TAPS; t++) {
            const int k = c * TAPS + t;
            #pragma GCC unroll 9
            for (int q = 0; q < ob; q++)
                acc[q] = _mm512_fmadd_ps(_mm512_set1_ps(W[(size_t)(o + q) * K + k]),
                                         xv[t], acc[q]);
        }
    }
    #pragma GCC unroll 9
    for (int q = 0; q < ob; q++) {
        if (m == 0xFFFF)
            _mm512_storeu_ps(yv + (size_t)(o + q) * HoWo, acc[q]);
        else
            _mm512_mask_storeu_ps(yv + (size_t)(o + q) * HoWo, m, acc[q]);
    }
}

AVX512 static void fwd_image(const as_op_conv_geom *g, const float *xp,
                             const float *W, const float *b, float *y)
{
    const int Wp = pad_w(g);
    for (int oh = 0; oh < g->Ho; oh++)
        for (int ow0 = 0; ow0 < g->Wo; ow0 += VL) {
            const __mmask16 m = tail_mask(g->Wo - ow0);
            const float *xr = xp + (size_t)oh * Wp + ow0;
            float *yv = y + (size_t)oh * g->Wo + ow0;
            int o = 0;
            for (; o + OB_F <= g->Cout; o += OB_F)
                fwd_vec(g, OB_F, o, xr, W, b, yv, m);
            for (; o < g->Cout; o++)
                fwd_vec(g, 1, o, xr, W, b, yv, m);
        }
}

/* One image's contribution to the vector sums of output channels o..o+ob
 * for input channel c (and db's when c == 0 and with_db). */
AVX512 static INLINE void bwd_block(const as_op_conv_geom *g, int ob, int o,
                                    int c, bool with_db, const float *xp,
                                    const float *dy, float *acc_mem)
{
    const int Hp = pad_h(g), Wp = pad_w(g), K1 = g->Cin * TAPS + 1;
    const size_t HoWo = (size_t)g->Ho * g->Wo;
    __m512 acc[OB_B][TAPS], dacc[OB_B];
    #pragma GCC unroll 9
    for (int q = 0; q < ob; q++) {
        dacc[q] = _mm512_setzero_ps();
        #pragma GCC unroll 9
        for (int t = 0; t < TAPS; t++)
            acc[q][t] = _mm512_setzero_ps();
    }
    for (int oh = 0; oh < g->Ho; oh++)
        for (int ow0 = 0; ow0 < g->Wo; ow0 += VL) {
            const __mmask16 m = tail_mask(g->Wo - ow0);
            const float *xr = xp + ((size_t)c * Hp + oh) * Wp + ow0;
            __m512 d[OB_B];
            #pragma GCC unroll 9
            for (int q = 0; q < ob; q++) {
                const float *dq = dy + (size_t)(o + q) * HoWo + (size_t)oh * g->Wo + ow0;
                d[q] = m == 0xFFFF ? _mm512_loadu_ps(dq) : _mm512_maskz_loadu_ps(m, dq);
                dacc[q] = _mm512_add_ps(dacc[q], d[q]);
            }
            __m512 xv[TAPS];
            taps(xr, Wp, xv);
            #pragma GCC unroll 9
            for (int t = 0; t < TAPS; t++) {
                #pragma GCC unroll 9
                for (int q = 0; q < ob; q++)
                    acc[q][t] = _mm512_fmadd_ps(d[q], xv[t], acc[q][t]);
            }
        }
    #pragma GCC unroll 9
    for (int q = 0; q < ob; q++) {
        float *a = acc_mem + (size_t)(o + q) * K1 * VL;
        #pragma GCC unroll 9
        for (int t = 0; t < TAPS; t++) {
            float *s = a + (size_t)(c * TAPS + t) * VL;
            _mm512_storeu_ps(s, _mm512_add_ps(_mm512_loadu_ps(s), acc[q][t]));
        }
        if (with_db) {
            float *s = a + (size_t)(K1 - 1) * VL;
            _mm512_storeu_ps(s, _mm512_add_ps(_mm512_loadu_ps(s), dacc[q]));
        }
    }
}

AVX512 static void bwd_image(const as_op_conv_geom *g, const float *xp,
                             const float *dy, bool with_db, float *acc_mem)
{
    for (int c = 0; c < g->Cin; c++) {
        int o = 0;
        for (; o + OB_B <= g->Cout; o += OB_B)
            bwd_block(g, OB_B, o, c, with_db && c == 0, xp, dy, acc_mem);
        for (; o < g->Cout; o++)
            bwd_block(g, 1, o, c, with_db && c == 0, xp, dy, acc_mem);
    }
}

AVX512 static float vsum(const float *v)
{
    return _mm512_reduce_add_ps(_mm512_loadu_ps(v));
}

void as_direct_conv_fwd(const as_op_conv_geom *g, const float *x,
                        const float *W, const float *b, float *y, float *ws)
{
    const size_t xs = (size_t)g->Cin * g->H * g->W;
    const size_t ys = (size_t)g->Cout * g->Ho * g->Wo;
    float *xp = pad_at(ws);
    for (int n = 0; n < g->N; n++) {
        pad_image(g, x + n * xs, xp);
        fwd_image(g, xp, W, b, y + n * ys);
    }
}

void as_direct_conv_bwd_w(const as_op_conv_geom *g, const float *x,
                          const float *dy, float *dW, float *db, float *ws)
{
    const size_t xs = (size_t)g->Cin * g->H * g->W;
    const size_t ys = (size_t)g->Cout * g->Ho * g->Wo;
    const int K = g->Cin * TAPS;
    float *xp = pad_at(ws), *acc = xp + pad_floats(g);
    memset(acc, 0, sizeof(float) * acc_floats(g));
    for (int n = 0; n < g->N; n++) {
        pad_image(g, x + n * xs, xp);
        bwd_image(g, xp, dy + n * ys, db != NULL, acc);
    }
    for (int o = 0; o < g->Cout; o++) {
        const float *a = acc + (size_t)o * (K + 1) * VL;
        if (dW)
            for (int k = 0; k < K; k++)
                dW[(size_t)o * K + k] += vsum(a + (size_t)k * VL);
        if (db)
            db[o] += vsum(a + (size_t)K * VL);
    }
}

#else   /* no x86 dispatch: as_direct_conv_ok is false, nothing else runs */

bool as_direct_conv_ok(const as_op_conv_geom *g)
{
    (void)g;
    return false;
}

void as_direct_conv_fwd(const as_op_conv_geom *g, const float *x,
                        const float *W, const float *b, float *y, float *ws)
{
    (void)g, (void)x, (void)W, (void)b, (void)y, (void)ws;
}

void as_direct_conv_bwd_w(const as_op_conv_geom *g, const float *x,
                          const float *dy, float *dW, float *db, float *ws)
{
    (void)g, (void)x, (void)dy, (void)dW, (void)db, (void)ws;
}

#endif

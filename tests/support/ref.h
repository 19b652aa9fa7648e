/*
 * Double-precision references of the kernel and layer tests (test_ops.c,
 * test_ops_attn.c, test_layers.c), in the ref_fn form of fd.h:
 * out = f(in), in = the input then the parameters in one array (x, W, b
 * for linear and conv; x, gamma, beta for the norms), and the fixed
 * embedding case. Header-only (static inline).
 */
#ifndef AS_TESTS_SUPPORT_REF_H
#define AS_TESTS_SUPPORT_REF_H

#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "layers/ops.h"

/* The kernel backends to test (builtin; oneDNN when built and started)
 * into b; their count. Leaves the backend on builtin. */
static inline int nbackends(as_op_backend *b)
{
    int n = 0;
    b[n++] = AS_OP_BUILTIN;
    if (as_op_set_backend(AS_OP_ONEDNN) == 0)
        b[n++] = AS_OP_ONEDNN;
    as_op_set_backend(AS_OP_BUILTIN);
    return n;
}

/* y (N, out) = x (N, in) W^T + b, W (out, in). */
static inline void affine_ref(int N, int in, int out, const double *x,
                              const double *W, const double *b, double *y)
{
    for (int n = 0; n < N; n++)
        for (int o = 0; o < out; o++) {
            double s = b[o];
            for (int i = 0; i < in; i++)
                s += x[n * in + i] * W[o * in + i];
            y[n * out + o] = s;
        }
}

typedef struct { int N, in, out; } lin_cfg;
static inline void lin_ref(const void *c_, const double *p, double *y)
{
    const lin_cfg *c = c_;
    const double *x = p, *W = x + c->N * c->in, *b = W + c->out * c->in;
    affine_ref(c->N, c->in, c->out, x, W, b, y);
}

/* Every (output, input, weight) index triple of a conv with geometry g
 * (NCHW, weights (Cout, Cin, kh, kw)), taps in the padding skipped: output
 * by output, each one's taps in (c, i, j) order. */
static inline void conv_taps(const as_op_conv_geom *g,
                             void (*tap)(void *ctx, size_t yi, size_t xi, size_t wi),
                             void *ctx)
{
    for (int n = 0; n < g->N; n++)
        for (int o = 0; o < g->Cout; o++)
            for (int oh = 0; oh < g->Ho; oh++)
                for (int ow = 0; ow < g->Wo; ow++) {
                    size_t yi = (((size_t)n * g->Cout + o) * g->Ho + oh) * g->Wo + ow;
                    for (int c = 0; c < g->Cin; c++)
                        for (int i = 0; i < g->kh; i++)
                            for (int j = 0; j < g->kw; j++) {
                                int ih = oh * g->stride - g->pad + i;
                                int iw = ow * g->stride - g->pad + j;
                                if (ih < 0 || ih >= g->H || iw < 0 || iw >= g->W)
                                    continue;
                                tap(ctx, yi, (((size_t)n * g->Cin + c) * g->H + ih) * g->W + iw,
                                    (((size_t)o * g->Cin + c) * g->kh + i) * g->kw + j);
                            }
                }
}

typedef struct { const double *x, *W; double *y; } conv_fwd_ctx;
static inline void conv_fwd_tap(void *ctx, size_t yi, size_t xi, size_t wi)
{
    conv_fwd_ctx *f = ctx;
    f->y[yi] += f->x[xi] * f->W[wi];
}

static inline void conv_ref(const void *c_, const double *p, double *y)
{
    const as_op_conv_geom *g = c_;
    const double *x = p, *W = x + (size_t)g->N * g->Cin * g->H * g->W;
    const double *b = W + (size_t)g->Cout * g->Cin * g->kh * g->kw;
    const size_t plane = (size_t)g->Ho * g->Wo;
    for (size_t k = 0; k < (size_t)g->N * g->Cout * plane; k++)
        y[k] = b[k / plane % (size_t)g->Cout];
    conv_fwd_ctx f = {x, W, y};
    conv_taps(g, conv_fwd_tap, &f);
}

typedef struct { int N, C, H, W, k; bool max; } pool_cfg;
static inline void pool_ref(const void *c_, const double *x, double *y)
{
    const pool_cfg *c = c_;
    int Ho = c->H / c->k, Wo = c->W / c->k;
    for (int nc = 0; nc < c->N * c->C; nc++)
        for (int oh = 0; oh < Ho; oh++)
            for (int ow = 0; ow < Wo; ow++) {
                double acc = c->max ? -1e300 : 0.0;
                for (int i = 0; i < c->k; i++)
                    for (int j = 0; j < c->k; j++) {
                        double v = x[(nc * c->H + oh * c->k + i) * c->W + ow * c->k + j];
                        acc = c->max ? fmax(acc, v) : acc + v;
                    }
                y[(nc * Ho + oh) * Wo + ow] = c->max ? acc : acc / (c->k * c->k);
            }
}

typedef struct { int rows, L; bool causal; const int32_t *valid; } sm_cfg;
static inline void sm_ref(const void *c_, const double *x, double *y)
{
    const sm_cfg *c = c_;
    for (int r = 0; r < c->rows; r++) {
        int n = c->causal ? r % c->L + 1 : (c->valid ? c->valid[r] : c->L);
        double m = -1e300, s = 0;
        for (int k = 0; k < n; k++)
            m = fmax(m, x[r * c->L + k]);
        for (int k = 0; k < n; k++)
            s += exp(x[r * c->L + k] - m);
        for (int k = 0; k < c->L; k++)
            y[r * c->L + k] = k < n ? exp(x[r * c->L + k] - m) / s : 0.0;
    }
}

typedef struct { int N, V; const int32_t *t; } xe_cfg;
static inline void xe_ref(const void *c_, const double *x, double *y)
{
    const xe_cfg *c = c_;
    double loss = 0;
    int cnt = 0;
    for (int i = 0; i < c->N; i++) {
        if (c->t[i] < 0)
            continue;
        double m = -1e300, s = 0;
        for (int v = 0; v < c->V; v++)
            m = fmax(m, x[i * c->V + v]);
        for (int v = 0; v < c->V; v++)
            s += exp(x[i * c->V + v] - m);
        loss += -(x[i * c->V + c->t[i]] - m - log(s));
        cnt++;
    }
    y[0] = loss / cnt;
}

typedef struct { int N, C; } ln_cfg;
static inline void ln_ref(const void *c_, const double *p, double *y)
{
    const ln_cfg *c = c_;
    const double *x = p, *g = x + c->N * c->C, *b = g + c->C;
    for (int n = 0; n < c->N; n++) {
        double m = 0, v = 0;
        for (int k = 0; k < c->C; k++)
            m += x[n * c->C + k];
        m /= c->C;
        for (int k = 0; k < c->C; k++)
            v += (x[n * c->C + k] - m) * (x[n * c->C + k] - m);
        v /= c->C;
        for (int k = 0; k < c->C; k++)
            y[n * c->C + k] = (x[n * c->C + k] - m) / sqrt(v + 1e-5) * g[k] + b[k];
    }
}

typedef struct { int N, C, HW; } bn_cfg;
static inline void bn_ref(const void *c_, const double *p, double *y)
{
    const bn_cfg *c = c_;
    const double *x = p, *g = x + c->N * c->C * c->HW, *b = g + c->C;
    for (int k = 0; k < c->C; k++) {
        double m = 0, v = 0, cnt = c->N * c->HW;
        for (int n = 0; n < c->N; n++)
            for (int i = 0; i < c->HW; i++)
                m += x[(n * c->C + k) * c->HW + i];
        m /= cnt;
        for (int n = 0; n < c->N; n++)
            for (int i = 0; i < c->HW; i++) {
                double d = x[(n * c->C + k) * c->HW + i] - m;
                v += d * d;
            }
        v /= cnt;
        for (int n = 0; n < c->N; n++)
            for (int i = 0; i < c->HW; i++) {
                size_t o = (size_t)(n * c->C + k) * c->HW + i;
                y[o] = (x[o] - m) / sqrt(v + 1e-5) * g[k] + b[k];
            }
    }
}

/* The embedding case of the tests (cfg unused): tokens emb_tok of B 2 x T 3,
 * C 4, V 4; in = wte (4, 4) then wpe (3, 4). */
static const int32_t emb_tok[6] = {3, 0, 3, 1, 2, 3};
static inline void emb_ref(const void *c_, const double *p, double *y)
{
    (void)c_;  /* B 2, T 3, C 4, V 4: wte (4, 4) then wpe (3, 4) */
    for (int b = 0; b < 2; b++)
        for (int t = 0; t < 3; t++)
            for (int k = 0; k < 4; k++)
                y[(b * 3 + t) * 4 + k] = p[emb_tok[b * 3 + t] * 4 + k] + p[16 + t * 4 + k];
}

/* Attention core: qkv (B*T, 3C) as q | k | v, NH heads of C / NH, causal or
 * not; out (B*T, C). T <= 64. */
typedef struct { int B, T, C, NH; bool causal; } at_cfg;
static inline void attn_core_ref(const void *c_, const double *qkv, double *out)
{
    const at_cfg *c = c_;
    int hd = c->C / c->NH, C3 = 3 * c->C;
    double sc = 1.0 / sqrt(hd), p[64];
    for (int b = 0; b < c->B; b++)
        for (int h = 0; h < c->NH; h++)
            for (int t = 0; t < c->T; t++) {
                const double *q = qkv + (b * c->T + t) * C3 + h * hd;
                int n = c->causal ? t + 1 : c->T;
                double m = -1e300, s = 0;
                for (int u = 0; u < n; u++) {
                    const double *k = qkv + (b * c->T + u) * C3 + c->C + h * hd;
                    double d = 0;
                    for (int i = 0; i < hd; i++)
                        d += q[i] * k[i];
                    p[u] = d * sc;
                    m = fmax(m, p[u]);
                }
                for (int u = 0; u < n; u++)
                    s += (p[u] = exp(p[u] - m));
                for (int i = 0; i < hd; i++) {
                    double acc = 0;
                    for (int u = 0; u < n; u++)
                        acc += p[u] / s * qkv[(b * c->T + u) * C3 + 2 * c->C + h * hd + i];
                    out[(b * c->T + t) * c->C + h * hd + i] = acc;
                }
            }
}

#endif

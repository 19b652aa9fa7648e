/* LayerNorm and BatchNorm (see ops.h). Statistics are accumulated in
 * double: cheap at these sizes and it keeps large-mean inputs exact.
 * BatchNorm's sums over (N, HW) run in LANES independent double
 * accumulators (element k of a plane goes to lane k % LANES), so the loops
 * vectorize: one serial double chain cost ~4 cycles per element. */
#include "layers/ops.h"

#include <math.h>
#include <string.h>

void as_op_layernorm_fwd(int N, int C, float eps, const float *x,
                         const float *g, const float *b, float *y,
                         float *mean, float *rstd)
{
    for (int i = 0; i < N; i++) {
        const float *xr = x + (size_t)i * C;
        float *yr = y + (size_t)i * C;
        double m = 0.0, v = 0.0;
        for (int c = 0; c < C; c++)
            m += xr[c];
        m /= C;
        for (int c = 0; c < C; c++) {
            double d = xr[c] - m;
            v += d * d;
        }
        v /= C;
        float s = (float)(1.0 / sqrt(v + eps)), mf = (float)m;
        for (int c = 0; c < C; c++)
            yr[c] = (xr[c] - mf) * s * g[c] + b[c];
        mean[i] = mf;
        rstd[i] = s;
    }
}

/* xh of one element: from the input, (x - mean) * rstd; from the output
 * (b != NULL), (y - b) / g, a division (not a product with 1 / g) that
 * keeps xh within an ulp or two of the forward's. */
static inline float ln_xhat(const float *r, int c, float m, float s,
                            const float *g, const float *b)
{
    return b ? (r[c] - b[c]) / g[c] : (r[c] - m) * s;
}

/* One row of dx = rstd * (dxh - mean(dxh) - xh * mean(dxh * xh)),
 * dxh = dy * g; inlined so that each caller's xh form is fixed. */
static inline __attribute__((always_inline)) void
ln_bwd_row(int C, const float *r, float m, float s, const float *g,
           const float *b, const float *dr, float *xo, float *dg, float *db)
{
    float a = 0.0f, bsum = 0.0f;
    for (int c = 0; c < C; c++) {
        float xh = ln_xhat(r, c, m, s, g, b), dxh = dr[c] * g[c];
        a += dxh;
        bsum += dxh * xh;
        if (dg)
            dg[c] += dr[c] * xh;
        if (db)
            db[c] += dr[c];
    }
    a /= (float)C;
    bsum /= (float)C;
    if (xo)
        for (int c = 0; c < C; c++)
            xo[c] = s * (dr[c] * g[c] - a - ln_xhat(r, c, m, s, g, b) * bsum);
}

void as_op_layernorm_bwd(int N, int C, const float *x, const float *g,
                         const float *mean, const float *rstd,
                         const float *dy, float *dx, float *dg, float *db)
{
    for (int i = 0; i < N; i++)
        ln_bwd_row(C, x + (size_t)i * C, mean[i], rstd[i], g, NULL,
                   dy + (size_t)i * C, dx ? dx + (size_t)i * C : NULL, dg, db);
}

/* As as_op_layernorm_bwd with xh rebuilt from the output y. */
void as_op_layernorm_bwd_y(int N, int C, const float *y, const float *g,
                           const float *b, const float *rstd, const float *dy,
                           float *dx, float *dg, float *db)
{
    for (int i = 0; i < N; i++)
        ln_bwd_row(C, y + (size_t)i * C, 0.0f, rstd[i], g, b,
                   dy + (size_t)i * C, dx ? dx + (size_t)i * C : NULL, dg, db);
}

#define LANES 8

/* sum over n, k of f(x[n][c][k]) into LANES double lanes, reduced. */
static double plane_sum(int N, size_t ns, size_t cs, int HW, const float *x,
                        int c)
{
    double acc[LANES] = {0};
    for (int n = 0; n < N; n++) {
        const float *p = x + n * ns + c * cs;
        int k = 0;
        for (; k + LANES <= HW; k += LANES)
            for (int j = 0; j < LANES; j++)
                acc[j] += p[k + j];
        for (; k < HW; k++)
            acc[k % LANES] += p[k];
    }
    double t = 0.0;
    for (int j = 0; j < LANES; j++)
        t += acc[j];
    return t;
}

static double plane_sqdev(int N, size_t ns, size_t cs, int HW, const float *x,
                          int c, double m)
{
    double acc[LANES] = {0};
    for (int n = 0; n < N; n++) {
        const float *p = x + n * ns + c * cs;
        int k = 0;
        for (; k + LANES <= HW; k += LANES)
            for (int j = 0; j < LANES; j++) {
                double d = p[k + j] - m;
                acc[j] += d * d;
            }
        for (; k < HW; k++) {
            double d = p[k] - m;
            acc[k % LANES] += d * d;
        }
    }
    double t = 0.0;
    for (int j = 0; j < LANES; j++)
        t += acc[j];
    return t;
}

/* One channel's affine from its statistics; the forward and its replay
 * share it so that both round alike. */
static inline void bn_coef(float m, float s, float g, float b, float *a, float *bb)
{
    *a = s * g;
    *bb = b - m * *a;
}

/* y = a*x + bb over one channel of every image (x, y at that channel). */
static inline void bn_channel(int N, size_t ns, int HW, float a, float bb,
                              const float *x, float *y)
{
    for (int n = 0; n < N; n++) {
        const float *p = x + n * ns;
        float *q = y + n * ns;
        for (int k = 0; k < HW; k++)
            q[k] = p[k] * a + bb;
    }
}

void as_op_batchnorm_fwd(int N, int C, int HW, float eps, bool training,
                         float momentum, const float *x, const float *g,
                         const float *b, float *run_mean, float *run_var,
                         float *mean, float *invstd, float *y)
{
    const size_t cs = (size_t)HW, ns = (size_t)C * HW;
    const double cnt = (double)N * HW;
    for (int c = 0; c < C; c++) {
        float m, s;
        double sm = 0.0, sv = 0.0;
        if (training) {
            sm = plane_sum(N, ns, cs, HW, x, c) / cnt;
            sv = plane_sqdev(N, ns, cs, HW, x, c, sm) / cnt;
        }
        as__bn_stats(training, sm, sv, cnt, eps, momentum, run_mean, run_var, c, &m, &s);
        if (mean)
            mean[c] = m;
        if (invstd)
            invstd[c] = s;
        float a, bb;
        bn_coef(m, s, g[c], b[c], &a, &bb);
        bn_channel(N, ns, HW, a, bb, x + c * cs, y + c * cs);
    }
}

void as__bn_stats(bool training, double mean, double var, double cnt, float eps,
                  float momentum, float *run_mean, float *run_var, int c,
                  float *m, float *s)
{
    if (!training) {
        *m = run_mean[c];
        *s = 1.0f / sqrtf(run_var[c] + eps);
        return;
    }
    *m = (float)mean;
    *s = (float)(1.0 / sqrt(var + eps));
    if (run_mean && run_var) {
        double unbiased = cnt > 1 ? var * cnt / (cnt - 1) : var;
        run_mean[c] = (1.0f - momentum) * run_mean[c] + momentum * *m;
        run_var[c] = (1.0f - momentum) * run_var[c] + momentum * (float)unbiased;
    }
}

void as_op_batchnorm_affine(int C, const float *mean, const float *invstd,
                            const float *g, const float *b, float *a, float *bb)
{
    for (int c = 0; c < C; c++)
        bn_coef(mean[c], invstd[c], g[c], b[c], &a[c], &bb[c]);
}

void as_op_batchnorm_apply(int N, int C, int HW, const float *mean,
                           const float *invstd, const float *g, const float *b,
                           const float *x, float *y)
{
    const size_t cs = (size_t)HW, ns = (size_t)C * HW;
    for (int c = 0; c < C; c++) {
        float a, bb;
        bn_coef(mean[c], invstd[c], g[c], b[c], &a, &bb);
        bn_channel(N, ns, HW, a, bb, x + c * cs, y + c * cs);
    }
}

void as_op_batchnorm_bwd(int N, int C, int HW, const float *x, const float *g,
                         const float *mean, const float *invstd,
                         const float *dy, float *dx, float *dg, float *db)
{
    const size_t cs = (size_t)HW, ns = (size_t)C * HW;
    const float cnt = (float)N * HW;
    for (int c = 0; c < C; c++) {
        const float m = mean[c], s = invstd[c];
        double ad[LANES] = {0}, adx[LANES] = {0};
        for (int n = 0; n < N; n++) {
            const float *p = x + n * ns + c * cs, *d = dy + n * ns + c * cs;
            int k = 0;
            for (; k + LANES <= HW; k += LANES)
                for (int j = 0; j < LANES; j++) {
                    ad[j] += d[k + j];
                    adx[j] += d[k + j] * (p[k + j] - m) * s;
                }
            for (; k < HW; k++) {
                ad[k % LANES] += d[k];
                adx[k % LANES] += d[k] * (p[k] - m) * s;
            }
        }
        double sd = 0.0, sdx = 0.0;
        for (int j = 0; j < LANES; j++) {
            sd += ad[j];
            sdx += adx[j];
        }
        if (dg)
            dg[c] += (float)sdx;
        if (db)
            db[c] += (float)sd;
        if (!dx)
            continue;
        const float a = (float)(sd / cnt), bsum = (float)(sdx / cnt);
        const float k0 = g[c] * s;
        for (int n = 0; n < N; n++) {
            const float *p = x + n * ns + c * cs, *d = dy + n * ns + c * cs;
            float *o = dx + n * ns + c * cs;
            for (int k = 0; k < HW; k++) {
                float xh = (p[k] - m) * s;
                o[k] = k0 * (d[k] - a - xh * bsum);
            }
        }
    }
}

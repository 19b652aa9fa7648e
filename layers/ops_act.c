/* Elementwise activations, dropout, softmax and cross-entropy (see ops.h). */
#include "layers/ops.h"

#include <assert.h>
#include <math.h>
#include <string.h>

#include "util/fastmath.h"

void as_op_leaky_fwd(size_t n, float a, const float *x, float *y)
{
    for (size_t i = 0; i < n; i++)
        y[i] = x[i] > 0.0f ? x[i] : a * x[i];
}

void as_op_leaky_bwd(size_t n, float a, const float *y, const float *dy,
                     float *dx)
{
    for (size_t i = 0; i < n; i++)
        dx[i] = y[i] > 0.0f ? dy[i] : a * dy[i];
}

void as_op_leaky_inv(size_t n, float a, const float *y, float *x)
{
    assert(a > 0.0f);
    const float inv = 1.0f / a;
    for (size_t i = 0; i < n; i++)
        x[i] = y[i] > 0.0f ? y[i] : y[i] * inv;
}

void as_op_gelu_fwd(size_t n, const float *x, float *y)
{
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        float u = AS_GELU_S * (v + 0.044715f * v * v * v);
        y[i] = 0.5f * v * (1.0f + as_tanh_poly(u));
    }
}

void as_op_gelu_bwd(size_t n, const float *x, const float *dy, float *dx)
{
    for (size_t i = 0; i < n; i++)
        dx[i] = as_gelu_grad(x[i]) * dy[i];
}

/* Counter-based uniform in [0, 1): splitmix64 of (seed, index). */
static inline float hash_uniform(uint64_t seed, uint64_t i)
{
    uint64_t z = seed + (i + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (float)(z >> 40) * (1.0f / 16777216.0f);
}

void as_op_dropout_fwd(size_t n, float p, uint64_t seed, const float *x,
                       float *y)
{
    if (p <= 0.0f) {
        if (y != x)
            memmove(y, x, sizeof(float) * n);
        return;
    }
    const float s = 1.0f / (1.0f - p);
    for (size_t i = 0; i < n; i++)
        y[i] = hash_uniform(seed, i) >= p ? x[i] * s : 0.0f;
}

void as_op_dropout_bwd(size_t n, float p, uint64_t seed, const float *dy,
                       float *dx)
{
    as_op_dropout_fwd(n, p, seed, dy, dx);  /* the same mask and scale */
}

void as_op_softmax_fwd(size_t rows, int L, bool causal, const int32_t *valid,
                       const float *x, float *y)
{
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * L;
        float *yr = y + r * L;
        int n = L;
        if (causal)
            n = (int)(r % (size_t)L) + 1;
        else if (valid)
            n = valid[r] < 0 ? 0 : (valid[r] > L ? L : valid[r]);
        /* 8 independent partial max / sums (fixed order: deterministic)
         * instead of one dependency chain per row */
        float m8[8], s8[8];
        for (int j = 0; j < 8; j++)
            m8[j] = -INFINITY, s8[j] = 0.0f;
        int c8 = n & ~7;
        for (int c = 0; c < c8; c += 8)
            for (int j = 0; j < 8; j++)
                m8[j] = xr[c + j] > m8[j] ? xr[c + j] : m8[j];
        for (int c = c8; c < n; c++)
            m8[0] = xr[c] > m8[0] ? xr[c] : m8[0];
        float m = m8[0];
        for (int j = 1; j < 8; j++)
            m = m8[j] > m ? m8[j] : m;
        for (int c = 0; c < n; c++)
            yr[c] = as_exp_poly(xr[c] - m);
        for (int c = 0; c < c8; c += 8)
            for (int j = 0; j < 8; j++)
                s8[j] += yr[c + j];
        for (int c = c8; c < n; c++)
            s8[0] += yr[c];
        float s = ((s8[0] + s8[1]) + (s8[2] + s8[3])) +
                  ((s8[4] + s8[5]) + (s8[6] + s8[7]));
        float inv = n > 0 ? 1.0f / s : 0.0f;
        for (int c = 0; c < n; c++)
            yr[c] *= inv;
        for (int c = n; c < L; c++)
            yr[c] = 0.0f;
    }
}

void as_op_softmax_bwd(size_t rows, int L, const float *y, const float *dy,
                       float *dx)
{
    for (size_t r = 0; r < rows; r++) {
        const float *yr = y + r * L, *dr = dy + r * L;
        float *xr = dx + r * L;
        float dot = 0.0f;
        for (int c = 0; c < L; c++)
            dot += yr[c] * dr[c];
        for (int c = 0; c < L; c++)
            xr[c] = yr[c] * (dr[c] - dot);
    }
}

double as_op_xent_fwd(int N, int V, const float *logits,
                      const int32_t *targets, float *probs, int *ncorrect)
{
    double loss = 0.0;
    int count = 0, hits = 0;
    for (int i = 0; i < N; i++) {
        const float *l = logits + (size_t)i * V;
        float *p = probs + (size_t)i * V;
        float m = l[0];
        int arg = 0;
        for (int v = 1; v < V; v++)
            if (l[v] > m) {
                m = l[v];
                arg = v;
            }
        for (int v = 0; v < V; v++)
            p[v] = as_exp_poly(l[v] - m);
        float s = 0.0f;
        for (int v = 0; v < V; v++)
            s += p[v];
        float inv = 1.0f / s;
        for (int v = 0; v < V; v++)
            p[v] *= inv;
        int t = targets[i];
        if (t < 0)
            continue;
        assert(t < V);
        loss += -((double)(l[t] - m) - log((double)s));
        count++;
        hits += arg == t;
    }
    if (ncorrect)
        *ncorrect = hits;
    return count ? loss / count : 0.0;
}

void as_op_xent_bwd(int N, int V, const float *probs, const int32_t *targets,
                    float *dlogits)
{
    int count = 0;
    for (int i = 0; i < N; i++)
        count += targets[i] >= 0;
    const float inv = count ? 1.0f / (float)count : 0.0f;
    for (int i = 0; i < N; i++) {
        const float *p = probs + (size_t)i * V;
        float *d = dlogits + (size_t)i * V;
        int t = targets[i];
        if (t < 0) {
            memset(d, 0, sizeof(float) * (size_t)V);
            continue;
        }
        for (int v = 0; v < V; v++)
            d[v] = p[v] * inv;
        d[t] -= inv;
    }
}

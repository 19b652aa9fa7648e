/*
 * exp, tanh and the GELU derivative without libm calls, so loops over them
 * vectorize. Shared by the framework's kernels (layers/ops_act.c) and the
 * store's activation codecs, so a kept GELU input gives the same gradient
 * bits through the store as through the framework. Internal to the tree.
 */
#ifndef AS_UTIL_FASTMATH_H
#define AS_UTIL_FASTMATH_H

#include <stdint.h>

/* exp(x): x = k ln2 + r (Cody-Waite split of ln2, k rounded to nearest with
 * the 1.5 * 2^23 trick), exp(r) by its degree-6 Taylor polynomial on
 * |r| <= ln2/2 (relative error < 3e-7), times 2^k built in the exponent
 * bits. Inputs clamped to [-87, 88] (results 1.6e-38 .. 1.7e38). */
static inline float as_exp_poly(float x)
{
    x = x > -87.0f ? x : -87.0f;
    x = x < 88.0f ? x : 88.0f;
    const float kf = (x * 1.44269504f + 12582912.0f) - 12582912.0f;
    float r = x - kf * 0.693145752f;
    r = r - kf * 1.42860677e-6f;
    float p = 1.0f + r * (1.0f + r * (0.5f + r * (1.0f / 6.0f + r * (1.0f / 24.0f +
              r * (1.0f / 120.0f + r * (1.0f / 720.0f))))));
    union { uint32_t u; float f; } sc = {.u = (uint32_t)((int32_t)kf + 127) << 23};
    return p * sc.f;
}

/* tanh(u) = 1 - 2 / (exp(2u) + 1): absolute error < 1e-6. */
static inline float as_tanh_poly(float u)
{
    return 1.0f - 2.0f / (as_exp_poly(2.0f * u) + 1.0f);
}

/* GELU(x) = 0.5 x (1 + tanh(s (x + 0.044715 x^3))), s = sqrt(2/pi). */
#define AS_GELU_S 0.7978845608028654f

/* d/dx of GELU(x). */
static inline float as_gelu_grad(float v)
{
    float u = AS_GELU_S * (v + 0.044715f * v * v * v);
    float t = as_tanh_poly(u);
    float du = AS_GELU_S * (1.0f + 3.0f * 0.044715f * v * v);
    return 0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * du;
}

#endif

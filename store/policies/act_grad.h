/*
 * Derivatives of the activations the store knows (as_fn), for
 * as_store_act_backward's restore path and the activation codecs (sign,
 * fewbit). Internal.
 *
 * GELU is the tanh form of AS_FN_GELU; tanh is built from a polynomial exp
 * (no libm call, so the loops vectorize; absolute error < 1e-6), the same
 * arithmetic as the reference framework's kernel, so a kept GELU input
 * gives the same gradient bits through the store as through the framework.
 */
#ifndef AS_STORE_ACT_GRAD_H
#define AS_STORE_ACT_GRAD_H

#include <stddef.h>
#include <stdint.h>

/* exp(x) for x clamped to [-87, 88]: x = k ln2 + r (Cody-Waite), exp(r) by
 * its degree-6 Taylor polynomial (relative error < 3e-7), times 2^k. */
static inline float as__exp_poly(float x)
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

#define AS__GELU_S 0.7978845608028654f

/* d/dx of 0.5 x (1 + tanh(s (x + 0.044715 x^3))). */
static inline float as__gelu_grad(float v)
{
    float u = AS__GELU_S * (v + 0.044715f * v * v * v);
    float t = 1.0f - 2.0f / (as__exp_poly(2.0f * u) + 1.0f);
    float du = AS__GELU_S * (1.0f + 3.0f * 0.044715f * v * v);
    return 0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * du;
}

/* dx = f'(v) * dy for n elements: ReLU / LeakyReLU (v their input or
 * output: v > 0 ? dy : alpha dy, alpha 0 for ReLU) or GELU (v its input).
 * Compiled for the vectorizer (act_grad.c). */
void as__act_grad(int fn, float alpha, size_t n, const float *v,
                  const float *dy, float *dx);

#endif

/*
 * Derivatives of the activations the store knows (as_fn), for
 * as_store_act_backward's restore path and the activation codecs (sign,
 * fewbit). Internal.
 *
 * GELU is the tanh form of AS_FN_GELU (as_gelu_grad in util/fastmath.h,
 * the reference framework's arithmetic: the same gradient bits).
 */
#ifndef AS_STORE_ACT_GRAD_H
#define AS_STORE_ACT_GRAD_H

#include <stddef.h>
#include <stdint.h>

#include "util/fastmath.h"

/* dx = f'(v) * dy for n elements: ReLU / LeakyReLU (v their input or
 * output: v > 0 ? dy : alpha dy, alpha 0 for ReLU) or GELU (v its input).
 * Compiled for the vectorizer (act_grad.c). */
void as__act_grad(int fn, float alpha, size_t n, const float *v,
                  const float *dy, float *dx);

#endif

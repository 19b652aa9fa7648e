/* Activation derivatives over arrays (see act_grad.h), in their own file so
 * the loops get the vectorizer (-O3, as the framework's kernels). */
#include "store/policies/act_grad.h"

#include "actstore/store.h"

void as__act_grad(int fn, float alpha, size_t n, const float *v,
                  const float *dy, float *dx)
{
    if (fn == AS_FN_GELU) {
        for (size_t i = 0; i < n; i++)
            dx[i] = as_gelu_grad(v[i]) * dy[i];
    } else {
        const float a = fn == AS_FN_RELU ? 0.0f : alpha;
        for (size_t i = 0; i < n; i++)
            dx[i] = v[i] > 0.0f ? dy[i] : a * dy[i];
    }
}

/* BLAS glue, linear layer and small vector helpers (see ops.h). */
#include "layers/ops.h"

#include <assert.h>
#include <cblas.h>
#include <string.h>

void as_op_set_threads(int threads)
{
    if (threads > 0)
        openblas_set_num_threads(threads);
}

const char *as_op_blas_core(void)
{
    return openblas_get_corename();
}

void as_op_gemm(bool ta, bool tb, int M, int N, int K, float alpha,
                const float *A, int lda, const float *B, int ldb, float beta,
                float *C, int ldc)
{
    assert(M >= 0 && N >= 0 && K >= 0);
    if (M == 0 || N == 0)
        return;
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans,
                tb ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda, B,
                ldb, beta, C, ldc);
}

void as_op_linear_fwd(int N, int in, int out, const float *x, const float *W,
                      const float *b, float *y)
{
    if (b) {
        for (int i = 0; i < N; i++)
            memcpy(y + (size_t)i * out, b, sizeof(float) * (size_t)out);
    }
    as_op_gemm(false, true, N, out, in, 1.0f, x, in, W, in, b ? 1.0f : 0.0f,
               y, out);
}

void as_op_linear_bwd(int N, int in, int out, const float *x, const float *W,
                      const float *dy, float *dx, float *dW, float *db)
{
    if (dx)  /* (N, in) = (N, out) (out, in) */
        as_op_gemm(false, false, N, in, out, 1.0f, dy, out, W, in, 0.0f, dx, in);
    if (dW)  /* (out, in) += (out, N) (N, in) */
        as_op_gemm(true, false, out, in, N, 1.0f, dy, out, x, in, 1.0f, dW, in);
    if (db) {
        for (int i = 0; i < N; i++) {
            const float *r = dy + (size_t)i * out;
            for (int o = 0; o < out; o++)
                db[o] += r[o];
        }
    }
}

void as_op_add(size_t n, const float *x, float *y)
{
    for (size_t i = 0; i < n; i++)
        y[i] += x[i];
}

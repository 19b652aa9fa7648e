/*
 * oneDNN kernels behind ops.h (internal; compiled when AS_OPS_HAVE_ONEDNN).
 * Functions returning int give 0 when they did the work and -1 when the
 * caller must take the builtin path (the library did not start, or it
 * does not support the geometry); ops_gemm.c and ops_conv.c dispatch.
 */
#ifndef AS_LAYERS_OPS_DNNL_H
#define AS_LAYERS_OPS_DNNL_H

#include <stdbool.h>
#include <stddef.h>

#include "layers/ops.h"

/* True once the CPU engine is up (started on first call). */
bool as_dnnl_available(void);
/* OpenMP threads the kernels run with (0 = the runtime's default). */
void as_dnnl_set_threads(int threads);
/* "oneDNN 2.6.3, avx512_core" into buf (empty when unavailable). */
void as_dnnl_describe(char *buf, size_t len);

int as_dnnl_sgemm(bool ta, bool tb, int M, int N, int K, float alpha,
                  const float *A, int lda, const float *B, int ldb,
                  float beta, float *C, int ldc);

/* Activation layouts of a conv (lay): x, y NCHW (reordered to the
 * primitives' layouts inside the call); x NCHW and y nChw16c (dx: not
 * run, the first conv has none); both nChw16c. */
enum { AS_DNNL_NCHW = 0, AS_DNNL_XNCHW_YBLK = 1, AS_DNNL_BLK = 2 };
/* Floats of workspace the oneDNN conv needs (0 when not supported). */
size_t as_dnnl_conv_workspace(const as_op_conv_geom *g, int lay);
int as_dnnl_conv_fwd(const as_op_conv_geom *g, int lay, const float *x,
                     const float *W, const float *b, float *y, float *ws);
int as_dnnl_conv_bwd(const as_op_conv_geom *g, int lay, const float *x,
                     const float *W, const float *dy, float *dx, float *dW,
                     float *db, float *ws);
size_t as_dnnl_conv_native_workspace(const as_op_conv_geom *g);
int as_dnnl_conv_native(const as_op_conv_geom *g, int pass, float *ws);
size_t as_dnnl_linear_native_workspace(int N, int in, int out);
int as_dnnl_linear_native(int N, int in, int out, int pass, float *ws);

#endif

/*
 * Direct NCHW conv kernels for few input channels (internal; ops_conv.c
 * dispatches). The first conv of an image model (1-3 input channels, 3x3,
 * stride 1) has so little work per output that oneDNN's blocked kernels
 * spend as long reordering their output to NCHW as computing it; these
 * compute NCHW directly with AVX-512, at the library's own speed.
 */
#ifndef AS_LAYERS_OPS_DIRECT_H
#define AS_LAYERS_OPS_DIRECT_H

#include <stdbool.h>
#include <stddef.h>

#include "layers/ops.h"

/* Whether the kernels below run g: Cin <= 3, 3x3, stride 1, any padding,
 * an AVX-512 CPU, and the portable-kernels test hook off. */
bool as_direct_conv_ok(const as_op_conv_geom *g);
/* Floats of workspace (one zero-padded input image and the backward's
 * sums) when g has the kernels' shape, whether or not they run; else 0. */
size_t as_direct_conv_workspace(const as_op_conv_geom *g);
/* As as_op_conv_fwd. */
void as_direct_conv_fwd(const as_op_conv_geom *g, const float *x,
                        const float *W, const float *b, float *y, float *ws);
/* dW += , db += (either may be NULL); dx is not computed here. */
void as_direct_conv_bwd_w(const as_op_conv_geom *g, const float *x,
                          const float *dy, float *dW, float *db, float *ws);

#endif

/*
 * Layout changes between the framework's NCHW activations and the
 * channel-blocked nChw16c layout oneDNN's AVX-512 conv kernels run on
 * (internal; ops_dnnl.c). nChw16c: (N, ceil(C/16), H*W, 16), channel c of
 * image n at block c/16, lane c%16; the lanes past C in the last block are
 * zero (the library reads them).
 * Both are plain functions on caller buffers, reentrant, no allocation;
 * they run 16x16 register transposes on AVX-512 CPUs and a scalar loop
 * elsewhere (as_blk16_use_simd(false) forces the latter, for tests).
 */
#ifndef AS_LAYERS_OPS_BLK_H
#define AS_LAYERS_OPS_BLK_H

#include <stdbool.h>

/* dst (nChw16c) from src (NCHW), padding lanes zeroed. */
void as_blk16_from_nchw(int N, int C, int HW, const float *src, float *dst);
/* dst (NCHW) from src (nChw16c); padding lanes ignored. */
void as_blk16_to_nchw(int N, int C, int HW, const float *src, float *dst);
/* Whether the AVX-512 path runs (when the CPU has it); process-wide,
 * for tests and benchmarks. */
void as_blk16_use_simd(bool on);

#endif

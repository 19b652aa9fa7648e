/*
 * actstore reference framework — tensor kernels.
 *
 * Plain functions on f32 arrays, no allocation, no store: the layers in
 * nn.h call these and decide what to save for backward. Layouts are fixed:
 * images NCHW (or nChw16c for the functions named *_blk, "blocked
 * activation layout" below), sequences (B, T, C) row-major, weights of a
 * linear (out, in) row-major (y = x W^T + b), conv weights (Cout, Cin, kh,
 * kw).
 *
 * Backward functions ACCUMULATE into parameter gradients (dW, db, ...) so a
 * parameter shared by several uses sums its gradients, and OVERWRITE the
 * input gradient (dx) unless stated otherwise. Any gradient pointer may be
 * NULL when that gradient is not needed (e.g. dx of the first layer).
 *
 * Thread-safety: every kernel is reentrant. GEMM and conv run on oneDNN
 * (OpenMP) or OpenBLAS, whose thread counts are process-wide
 * (as_op_set_threads). Results are bit-for-bit reproducible for a fixed
 * backend, CPU and thread count.
 *
 * Backends: AS_OP_ONEDNN (default when built with oneDNN, -DAS_ONEDNN=ON)
 * runs GEMM through oneDNN's sgemm and conv forward / backward through its
 * primitives (blocked layouts: reordered from and to NCHW inside the call,
 * or none for the *_blk functions);
 * AS_OP_BUILTIN is the library-free path: im2col + OpenBLAS sgemm. The
 * environment variable AS_KERNELS=onednn|builtin picks the initial one.
 * On either backend, convs with 1-3 input channels, 3x3, stride 1 run a
 * direct AVX-512 kernel on NCHW where the CPU has it (ops_direct.h).
 * OpenBLAS's kernel set is forced to the CPU's ISA before the library loads
 * (docs/architecture.md, "Kernels"); OPENBLAS_CORETYPE in the environment
 * wins, AS_BLAS_CORE=openblas keeps OpenBLAS's own detection.
 */
#ifndef AS_LAYERS_OPS_H
#define AS_LAYERS_OPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- BLAS --------------------------------------------------------------- */

/* Threads of OpenBLAS and of oneDNN's OpenMP runtime (0 = leave as is).
 * Process-wide; call it before running kernels on other threads. */
void as_op_set_threads(int threads);
/* Name of the OpenBLAS kernel set in use ("SkylakeX", "Prescott", ...). */
const char *as_op_blas_core(void);

typedef enum as_op_backend {
    AS_OP_BUILTIN = 0,   /* im2col + OpenBLAS, plain loops */
    AS_OP_ONEDNN = 1,    /* oneDNN sgemm and conv primitives */
} as_op_backend;

/* Select the GEMM / conv backend, process-wide (not while kernels run on
 * other threads: a conv's workspace is sized for both backends, so a
 * switch between calls is safe). Returns 0, or AS_ENOTSUP (-10) when
 * oneDNN is not built in or failed to start (the backend stays). */
int as_op_set_backend(as_op_backend b);
as_op_backend as_op_get_backend(void);
/* Text describing the kernels in use: backend, oneDNN version and ISA,
 * OpenBLAS core and how it was chosen, OpenMP's wait policy and where it
 * came from (layers/ops_gemm.c). Never NULL; a per-thread buffer,
 * valid until the thread's next call. */
const char *as_op_kernels_info(void);

/* C (M x N) = alpha * op(A) op(B) + beta * C, row-major; op = transpose when
 * ta / tb. lda, ldb, ldc are row strides as stored. */
void as_op_gemm(bool ta, bool tb, int M, int N, int K, float alpha,
                const float *A, int lda, const float *B, int ldb, float beta,
                float *C, int ldc);

/* ---- linear: y (N, out) = x (N, in) W^T (in, out) + b ------------------- */

void as_op_linear_fwd(int N, int in, int out, const float *x, const float *W,
                      const float *b, float *y);
/* dx = dy W (overwrite); dW += dy^T x; db += sum_rows dy. */
void as_op_linear_bwd(int N, int in, int out, const float *x, const float *W,
                      const float *dy, float *dx, float *dW, float *db);
/* The library's own inner-product primitives alone on this shape, on the
 * layouts they prefer, inside ws (for benchmarks). pass 0: forward with
 * bias; 1: backward data, weights and bias. ws:
 * as_op_linear_native_workspace floats, any contents. Returns 0, or
 * AS_ENOTSUP without oneDNN or when the backend is AS_OP_BUILTIN (the
 * workspace size is then 0). */
size_t as_op_linear_native_workspace(int N, int in, int out);
int as_op_linear_native(int N, int in, int out, int pass, float *ws);

/* ---- conv2d ------------------------------------------------------------- */

typedef struct as_op_conv_geom {
    int N, Cin, H, W;        /* input */
    int Cout, kh, kw;        /* weights (Cout, Cin, kh, kw) */
    int stride, pad;         /* same in both directions */
    int Ho, Wo;              /* output; filled by as_op_conv_geom_init */
} as_op_conv_geom;

/* Compute Ho, Wo; returns -1 when the geometry is invalid. */
int as_op_conv_geom_init(as_op_conv_geom *g);
/* Floats of workspace the conv kernels need (im2col of one image chunk). */
size_t as_op_conv_workspace(const as_op_conv_geom *g);
/* y (N, Cout, Ho, Wo) = conv(x, W) + b. ws: as_op_conv_workspace floats. */
void as_op_conv_fwd(const as_op_conv_geom *g, const float *x, const float *W,
                    const float *b, float *y, float *ws);
/* dx (overwrite, may be NULL), dW += , db += (may be NULL). */
void as_op_conv_bwd(const as_op_conv_geom *g, const float *x, const float *W,
                    const float *dy, float *dx, float *dW, float *db,
                    float *ws);
/* The library's own primitives alone on this geometry, on their native
 * (blocked) layouts inside ws, with no reorder from or to NCHW: what the
 * library itself reaches (for benchmarks). pass 0: forward; 1: backward
 * weights (and bias); 2: backward data. ws: as_op_conv_native_workspace
 * floats, any contents. Returns 0, or AS_ENOTSUP without oneDNN, when the
 * backend is AS_OP_BUILTIN or the library does not run this geometry
 * (as_op_conv_native_workspace then returns 0). */
size_t as_op_conv_native_workspace(const as_op_conv_geom *g);
int as_op_conv_native(const as_op_conv_geom *g, int pass, float *ws);

/* ---- pooling (k x k window, stride k, no padding; H, W multiples of k
 * are not required: the trailing rows/cols that do not fill a window are
 * dropped, as floor mode does) ------------------------------------------ */

/* y (N, C, H/k, W/k); idx (same size, may be NULL) gets the argmax
 * position inside each window (0..k*k-1). */
void as_op_maxpool_fwd(int N, int C, int H, int W, int k, const float *x,
                       float *y, uint8_t *idx);
/* y (N, C, H/k, W/k) = x at the saved argmax: the forward's output again,
 * bit for bit, when x is (windows of -inf or NaN only aside: the forward
 * gives -FLT_MAX there, this the window's first value). */
void as_op_maxpool_gather(int N, int C, int H, int W, int k, const float *x,
                          const uint8_t *idx, float *y);
/* dx (overwrite, N C H W) from dy and the saved argmax. */
void as_op_maxpool_bwd(int N, int C, int H, int W, int k, const uint8_t *idx,
                       const float *dy, float *dx);
void as_op_avgpool_fwd(int N, int C, int H, int W, int k, const float *x,
                       float *y);
void as_op_avgpool_bwd(int N, int C, int H, int W, int k, const float *dy,
                       float *dx);

/* ---- elementwise activations ------------------------------------------ */

/* ReLU and LeakyReLU (slope a; ReLU is a = 0). Backward from the OUTPUT y
 * (y > 0 exactly where x > 0 when a >= 0). dx may alias dy. */
void as_op_leaky_fwd(size_t n, float a, const float *x, float *y);
void as_op_leaky_bwd(size_t n, float a, const float *y, const float *dy,
                     float *dx);
/* Inverse of LeakyReLU with a > 0 (used by regenerators): x from y. */
void as_op_leaky_inv(size_t n, float a, const float *y, float *x);
/* GELU, tanh approximation. Backward needs the INPUT x. dx may alias dy. */
void as_op_gelu_fwd(size_t n, const float *x, float *y);
void as_op_gelu_bwd(size_t n, const float *x, const float *dy, float *dx);

/* Dropout with probability p (inverted scaling 1/(1-p)). The mask is a
 * pure function of (seed, index), so backward regenerates it from the seed
 * and nothing needs saving. dx may alias dy. */
void as_op_dropout_fwd(size_t n, float p, uint64_t seed, const float *x,
                       float *y);
void as_op_dropout_bwd(size_t n, float p, uint64_t seed, const float *dy,
                       float *dx);

/* ---- softmax over rows ------------------------------------------------- */

/* y = softmax(x) over rows of length L. When causal, row r (of each block of
 * L rows) only sees columns 0..r%L... precisely: column c is valid iff
 * c <= (r % L); masked entries get y = 0. valid (may be NULL) gives a valid
 * prefix length per row instead (entries past it are 0). */
void as_op_softmax_fwd(size_t rows, int L, bool causal, const int32_t *valid,
                       const float *x, float *y);
/* dx = y * (dy - sum(dy * y)) per row, O(L) per row. dx may alias dy. */
void as_op_softmax_bwd(size_t rows, int L, const float *y, const float *dy,
                       float *dx);

/* ---- normalization ----------------------------------------------------- */

/* LayerNorm over the last dim C of N rows: y = (x - mean) * rstd * g + b.
 * mean, rstd (N) are written for backward. */
void as_op_layernorm_fwd(int N, int C, float eps, const float *x,
                         const float *g, const float *b, float *y,
                         float *mean, float *rstd);
void as_op_layernorm_bwd(int N, int C, const float *x, const float *g,
                         const float *mean, const float *rstd,
                         const float *dy, float *dx, float *dg, float *db);
/* The same from the output y = xhat * g + b instead of x: xhat is rebuilt
 * as (y - b) / g (every g nonzero), rstd per row. */
void as_op_layernorm_bwd_y(int N, int C, const float *y, const float *g,
                           const float *b, const float *rstd, const float *dy,
                           float *dx, float *dg, float *db);

/* BatchNorm over (N, C, HW): per channel statistics. Training: batch
 * statistics, written to mean / invstd (C), and running stats updated with
 * momentum (may be NULL). Eval: running stats used. */
void as_op_batchnorm_fwd(int N, int C, int HW, float eps, bool training,
                         float momentum, const float *x, const float *g,
                         const float *b, float *run_mean, float *run_var,
                         float *mean, float *invstd, float *y);
/* The affine y = a*x + bb that the forward applied with the statistics
 * (mean, invstd) it wrote: a = invstd*g, bb = b - mean*a per channel
 * (a, bb: C floats each). */
void as_op_batchnorm_affine(int C, const float *mean, const float *invstd,
                            const float *g, const float *b, float *a, float *bb);
/* Apply it again: y = a*x + bb over (N, C, HW) with the statistics the
 * forward wrote, bit for bit the forward's output (y may alias x). */
void as_op_batchnorm_apply(int N, int C, int HW, const float *mean,
                           const float *invstd, const float *g, const float *b,
                           const float *x, float *y);
/* Training-mode backward (batch statistics). */
void as_op_batchnorm_bwd(int N, int C, int HW, const float *x, const float *g,
                         const float *mean, const float *invstd,
                         const float *dy, float *dx, float *dg, float *db);

/* ---- blocked activation layout (nChw16c) ---------------------------------
 * oneDNN's fast conv kernels run with src and dst both in nChw16c: the
 * image (N, C, H, W) stored as (N, ceil(C/16), H, W, 16), channel c at
 * block c/16, lane c%16. Lanes past C in the last block are zero: every
 * function here writes them zero given inputs whose padded lanes are
 * zero (the conv ignores its input's). A model that keeps its activations
 * blocked between convs calls these instead of the NCHW kernels above;
 * every one works on either backend (the conv runs oneDNN's primitives on
 * the blocked tensors directly, else the NCHW path between reorders). */

typedef enum as_op_layout {
    AS_OP_NCHW = 0,
    AS_OP_BLK16 = 1,     /* nChw16c */
} as_op_layout;

#define AS_OP_BLK 16
/* Floats of an (N, C, H, W) image in layout l. */
size_t as_op_image_numel(as_op_layout l, int N, int C, int H, int W);
/* NCHW <-> nChw16c (padded lanes written zero). Not in place. */
void as_op_nchw_to_blk(int N, int C, int H, int W, const float *x, float *xb);
void as_op_blk_to_nchw(int N, int C, int H, int W, const float *xb, float *x);

/* Conv with y (and dy) in nChw16c and x (and dx) in layout xl; the same
 * contract as as_op_conv_fwd / _bwd otherwise. ws: as_op_conv_workspace_blk
 * floats. */
size_t as_op_conv_workspace_blk(const as_op_conv_geom *g, as_op_layout xl);
void as_op_conv_fwd_blk(const as_op_conv_geom *g, as_op_layout xl,
                        const float *x, const float *W, const float *b,
                        float *y, float *ws);
void as_op_conv_bwd_blk(const as_op_conv_geom *g, as_op_layout xl,
                        const float *x, const float *W, const float *dy,
                        float *dx, float *dW, float *db, float *ws);
/* Whether the conv above runs on the library's primitives without
 * reorders of the activations (else on the NCHW path between reorders). */
bool as_op_conv_blk_native(const as_op_conv_geom *g, as_op_layout xl);

/* One channel c's forward statistics, shared by the NCHW and blocked
 * BatchNorm: in training (m, s) = (mean, 1/sqrt(var + eps)) from the
 * batch's mean and (biased) variance over cnt values, and the running
 * stats updated (when not NULL); in eval from the running stats. */
void as__bn_stats(bool training, double mean, double var, double cnt, float eps,
                  float momentum, float *run_mean, float *run_var, int c,
                  float *m, float *s);

/* BatchNorm and pooling on nChw16c; the same contracts and arithmetic as
 * the NCHW functions (statistics in double, summed in another order). The
 * pooling argmax idx has y's blocked shape. */
void as_op_batchnorm_fwd_blk(int N, int C, int HW, float eps, bool training,
                             float momentum, const float *x, const float *g,
                             const float *b, float *run_mean, float *run_var,
                             float *mean, float *invstd, float *y);
void as_op_batchnorm_apply_blk(int N, int C, int HW, const float *mean,
                               const float *invstd, const float *g,
                               const float *b, const float *x, float *y);
void as_op_batchnorm_bwd_blk(int N, int C, int HW, const float *x,
                             const float *g, const float *mean,
                             const float *invstd, const float *dy, float *dx,
                             float *dg, float *db);
void as_op_maxpool_fwd_blk(int N, int C, int H, int W, int k, const float *x,
                           float *y, uint8_t *idx);
void as_op_maxpool_gather_blk(int N, int C, int H, int W, int k,
                              const float *x, const uint8_t *idx, float *y);
void as_op_maxpool_bwd_blk(int N, int C, int H, int W, int k,
                           const uint8_t *idx, const float *dy, float *dx);
void as_op_avgpool_fwd_blk(int N, int C, int H, int W, int k, const float *x,
                           float *y);
void as_op_avgpool_bwd_blk(int N, int C, int H, int W, int k, const float *dy,
                           float *dx);

/* ---- attention core ---------------------------------------------------- */

/* Multi-head self-attention core on a fused qkv (B, T, 3C) (q | k | v, each
 * split in NH heads of C/NH): P (B, NH, T, T) = softmax(q k^T / sqrt(hd))
 * (causal optional; masked entries are 0), out (B, T, C) = P v. */
void as_op_attn_fwd(int B, int T, int C, int NH, bool causal,
                    const float *qkv, float *P, float *out);

/* Backward given P (already restored / decoded): dqkv (B, T, 3C)
 * overwritten. dP is scratch (T*T floats). softmax_bwd, when not NULL,
 * replaces the plain softmax backward for head (b, h): it must turn dP (in
 * place) into the score gradient; ud is passed through. */
typedef void (*as_op_softmax_bwd_fn)(void *ud, int b, int h, int T,
                                     const float *P_bh, float *dP_bh);
void as_op_attn_bwd(int B, int T, int C, int NH, const float *qkv,
                    const float *P, const float *dout, float *dqkv,
                    float *dP, as_op_softmax_bwd_fn softmax_bwd, void *ud);

/* The two halves of the backward for one head (b, h), for callers that
 * obtain P block by block and run the softmax backward in between (e.g.
 * through the store, from a compressed P):
 *   pv: dP_bh (T, T) = dO V^T and dV = P^T dO (written into dqkv);
 *   qk: from dS_bh (the score gradient), dQ and dK (written into dqkv). */
void as_op_attn_bwd_pv(int T, int C, int NH, int b, int h, const float *qkv,
                       const float *P_bh, const float *dout, float *dqkv,
                       float *dP_bh);
void as_op_attn_bwd_qk(int T, int C, int NH, int b, int h, const float *qkv,
                       const float *dS_bh, float *dqkv);
/* Softmax backward of one head's decoded P (T, T): per query q, over its
 * valid keys (k <= q when causal, else all), dS = P * (dP - <dP, P>) with
 * the dot in double (the arithmetic of the softmax codecs' backward, so
 * the result equals theirs bit for bit); masked entries 0. dS_bh may
 * alias dP_bh. */
void as_op_attn_softmax_bwd(int T, bool causal, const float *P_bh,
                            const float *dP_bh, float *dS_bh);

/* ---- embeddings -------------------------------------------------------- */

/* out (B, T, C) = wte[tok] + wpe[t]. wpe may be NULL. */
void as_op_embed_fwd(int B, int T, int C, const int32_t *tok,
                     const float *wte, const float *wpe, float *out);
/* dwte += scatter, dwpe += sum over batch. */
void as_op_embed_bwd(int B, int T, int C, const int32_t *tok,
                     const float *dout, float *dwte, float *dwpe);

/* ---- loss -------------------------------------------------------------- */

/* Mean cross-entropy over N rows of V logits; targets < 0 are ignored
 * (not counted). probs (N, V) receives softmax(logits) for backward.
 * Returns the mean loss; *ncorrect (may be NULL) counts argmax hits. */
double as_op_xent_fwd(int N, int V, const float *logits,
                      const int32_t *targets, float *probs, int *ncorrect);
/* dlogits = (probs - onehot) / count (overwrite). */
void as_op_xent_bwd(int N, int V, const float *probs, const int32_t *targets,
                    float *dlogits);

/* ---- misc -------------------------------------------------------------- */

/* y += x */
void as_op_add(size_t n, const float *x, float *y);

#endif

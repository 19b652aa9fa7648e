/*
 * actstore reference framework — context, parameters, layers.
 *
 * This is the part a C framework author copies: every layer's forward
 * computes its output with the kernels of ops.h and hands what its backward
 * needs to the activation store (as_store_save, with the right kind and
 * metadata); the layer struct keeps only HANDLES, never pointers to saved
 * data. Backward restores (as_store_restore_view / _rows /
 * as_store_softmax_backward), computes, and releases.
 *
 * Memory: parameters, gradients, optimizer state, activations and
 * workspaces are allocated through the store's arena with their tag and the
 * layer's id, so the allocator's per-tag numbers are real. Without an arena
 * (ctx.arena NULL) plain aligned malloc is used (kernel tests).
 *
 * Without a store (ctx.store NULL) a minimal built-in keep table stands in,
 * with the same semantics (copy at save, views, rows, release); it exists
 * for bring-up and for tests that check the math apart from the store.
 *
 * Conventions: functions return 0 or a negative AS_E* code and write a
 * message naming the layer into ctx->err. Layers are not thread-safe; one
 * context per training thread.
 */
#ifndef AS_LAYERS_NN_H
#define AS_LAYERS_NN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "actstore/alloc.h"
#include "actstore/store.h"
#include "layers/ops.h"

/* ---- context ------------------------------------------------------------ */

typedef struct as_nn_slot as_nn_slot;  /* built-in keep table entry */

typedef struct as_nn_ctx {
    as_store *store;        /* NULL: built-in keep table */
    as_arena *arena;        /* NULL: plain malloc */
    bool      training;     /* false: no saves, BatchNorm uses running stats */
    uint64_t  step;         /* seeds dropout masks */
    uint64_t  seed;
    char      err[256];
    /* built-in keep table (store == NULL) */
    as_nn_slot *slots;
    size_t      nslots;
} as_nn_ctx;

/* Initialise with an optional store (its arena is used). */
void as_nn_ctx_init(as_nn_ctx *c, as_store *store, uint64_t seed);
/* Free the built-in keep table. */
void as_nn_ctx_fini(as_nn_ctx *c);
/* Set training / eval mode (eval turns saving off in the store). */
void as_nn_ctx_train(as_nn_ctx *c, bool training);
/* Record an error message (printf-style) and return code. */
int as_nn_fail(as_nn_ctx *c, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Register a layer name with the arena (attribution); 0 without arena. */
uint16_t as_nn_layer_id(as_nn_ctx *c, const char *name);

/* Allocate / free through the arena (64-byte aligned). */
int as_nn_alloc(as_nn_ctx *c, size_t bytes, uint16_t tag, uint16_t layer,
                bool zero, as_block *out);
void as_nn_free(as_nn_ctx *c, as_block *b);
/* as_nn_free on each of the n blocks, in order; AS_NN_FREE(c, &a, &b, ...)
 * lists them: the scratch of a pass, freed at its end. */
void as_nn_free_all(as_nn_ctx *c, as_block *const *b, size_t n);
#define AS_NN_FREE(c, ...)                                                     \
    as_nn_free_all((c), (as_block *const[]){__VA_ARGS__},                      \
                   sizeof((as_block *const[]){__VA_ARGS__}) / sizeof(as_block *))
#define AS_NN_F(blk) ((float *)(blk).ptr)

/* A tensor descriptor (data not owned): AS_NN_T(ptr, AS_F32, N, C, H, W). */
as_tensor as_nn_tensor(const void *data, int dtype, int ndim,
                       const int64_t *shape);
#define AS_NN_T(data, dtype, ...)                                            \
    as_nn_tensor((data), (dtype),                                            \
                 (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)),  \
                 (int64_t[]){__VA_ARGS__})

/* An image (N, C, H, W) as laid out in l: NCHW as 4-D, nChw16c as the 5-D
 * (N, ceil(C/16), H, W, 16) it is in memory, so that the store sees the
 * bytes it holds and no policy takes the blocked order for NCHW. */
as_tensor as_nn_image(const void *data, int dtype, as_op_layout l, int N,
                      int C, int H, int W);

/* ---- store access (store or built-in table) ----------------------------- */

/* Save t under info. In eval mode returns 0 and a null handle. */
int as_nn_save(as_nn_ctx *c, const as_save_info *info, const as_tensor *t,
               as_handle *h);
/* Save a tensor a block of rows at a time (as_store_save_rows_*): begin
 * with t's dtype and shape (data not read), append rows [row0, row0 +
 * nrows) in order, end. In eval mode the handle is null and append / end
 * do nothing. */
int as_nn_save_rows_begin(as_nn_ctx *c, const as_save_info *info,
                          const as_tensor *t, as_handle *h);
int as_nn_save_rows_append(as_nn_ctx *c, as_handle h, const char *layer,
                           int64_t row0, int64_t nrows, const void *rows);
int as_nn_save_rows_end(as_nn_ctx *c, as_handle h, const char *layer);
/* Read-only view of a saved tensor (valid until release / step end). */
int as_nn_view(as_nn_ctx *c, as_handle h, const char *layer,
               const void **data);
/* Rows [row0, row0+nrows) of a saved f32 tensor (rows x last dim). */
int as_nn_rows(as_nn_ctx *c, as_handle h, int64_t row0, int64_t nrows,
               float *dst);
/* 1 when a view of h is the stored data itself (keep, borrow, the built-in
 * table), 0 when a view would decode the whole tensor into workspace (then
 * a consumer that can, streams row blocks with as_nn_rows instead). */
int as_nn_in_place(as_nn_ctx *c, as_handle h, const char *layer);
/* Softmax backward from a saved softmax output (dx may alias dy). */
int as_nn_softmax_bwd_saved(as_nn_ctx *c, as_handle h, const float *dy,
                            float *dx);
/* Activation backward from a saved activation input (GELU) or output
 * (ReLU, LeakyReLU): dx = f'(.) * dy (dx may alias dy); with a store, from
 * the policy's stored form (as_store_act_backward). */
int as_nn_act_bwd_saved(as_nn_ctx *c, as_handle h, int fn, float alpha,
                        const float *dy, float *dx);
/* Release and null the handle (null handles are ignored). */
void as_nn_release(as_nn_ctx *c, as_handle *h);
/* Report ||dy|| (n floats: the gradient backward multiplies the saved
 * tensor h with) to the store's auto planner as h's sensitivity
 * (as_store_report_grad). No-op without a store or for a null handle. */
void as_nn_report_grad(as_nn_ctx *c, as_handle h, const float *dy, size_t n);
/* Release everything the built-in table holds (step end). */
void as_nn_step_end(as_nn_ctx *c);

/* ---- parameters --------------------------------------------------------- */

typedef struct as_nn_param {
    char     name[64];
    size_t   n;                /* floats */
    as_block w, g;             /* weights, gradients (tags weights, gradients) */
    as_block m, v;             /* optimizer state (tag optimizer), lazily */
    uint64_t version;          /* bumped whenever w changes */
    bool     decay;            /* weight decay applies (matrices, not biases) */
    uint16_t layer;
} as_nn_param;

typedef struct as_nn_params {
    as_nn_param **p;
    size_t        n, cap;
} as_nn_params;

/* Create a parameter of n floats in list ps, initialised uniform in
 * [-scale, scale] (scale 0: constant `fill`). */
int as_nn_param_new(as_nn_ctx *c, as_nn_params *ps, const char *name,
                    uint16_t layer, size_t n, float scale, float fill,
                    bool decay, uint64_t *rng, as_nn_param **out);
void as_nn_params_free(as_nn_ctx *c, as_nn_params *ps);
void as_nn_params_zero_grad(as_nn_params *ps);
size_t as_nn_params_count(const as_nn_params *ps);

/* Deterministic RNG (splitmix64) for initialisation and shuffling. */
uint64_t as_nn_rand(uint64_t *state);
float as_nn_randu(uint64_t *state);     /* [0, 1) */
float as_nn_randn(uint64_t *state);     /* standard normal */

/* ---- layers ------------------------------------------------------------- */

/* Every layer: a name (copied), the arena layer id, its parameters, and the
 * handles of what forward saved. fwd writes the output into a caller
 * buffer; bwd takes dy and writes dx (dx may be NULL when not needed). */

typedef struct as_nn_linear {
    char name[64]; uint16_t id;
    int in, out;
    as_nn_param *W, *b;
    int N;                 /* rows of the last forward */
    as_handle hx;          /* linear_input (N, in) */
} as_nn_linear;
int as_nn_linear_init(as_nn_ctx *c, as_nn_params *ps, as_nn_linear *l,
                      const char *name, int in, int out, bool bias,
                      uint64_t *rng);
int as_nn_linear_fwd(as_nn_ctx *c, as_nn_linear *l, int N, const float *x,
                     float *y);
/* The same with x already saved by its producer under x_saved (e.g. a
 * LayerNorm output): the saved input aliases that item. Null: as above. */
int as_nn_linear_fwd_alias(as_nn_ctx *c, as_nn_linear *l, int N,
                           const float *x, as_handle x_saved, float *y);
int as_nn_linear_bwd(as_nn_ctx *c, as_nn_linear *l, const float *dy,
                     float *dx);

typedef struct as_nn_conv {
    char name[64]; uint16_t id;
    as_op_conv_geom g;     /* N filled per forward */
    as_nn_param *W, *b;
    /* Layouts of x (and dx) and y (and dy), set by the model before the
     * forward: NCHW / NCHW, or either / nChw16c (ops.h); default NCHW. */
    as_op_layout in_layout, out_layout;
    bool save_output;      /* save y (conv_output) for inversion; default on */
    bool input_held;       /* the caller keeps x valid and unchanged until
                              the step ends (the input batch): x is saved
                              borrowed (as_save_info.borrow, 0 bytes) */
    as_handle hx, hy;      /* conv_input (meta: geometry, W, version, hy);
                              conv_output */
    struct as_nn_pool *in_pool;   /* x is this max pool's output (or NULL): x is
                              saved declared derived from the pool's input */
    /* Or x is declared a function of other saved tensors (fn NULL: not):
     * as_save_info.recompute, .recompute_ud, .recompute_inputs (n of them),
     * set by the model before the forward; the inputs must be live then. */
    as_recompute_fn in_fn;
    void *in_ud;
    const as_handle *in_inputs;
    size_t in_ninputs;
} as_nn_conv;
int as_nn_conv_init(as_nn_ctx *c, as_nn_params *ps, as_nn_conv *l,
                    const char *name, int Cin, int Cout, int k, int stride,
                    int pad, bool bias, uint64_t *rng);
/* x_saved: handle under which x is already saved by its producer (e.g. an
 * activation's output), or null; the conv input then aliases it. */
int as_nn_conv_fwd(as_nn_ctx *c, as_nn_conv *l, int N, int H, int W,
                   const float *x, as_handle x_saved, float *y);
int as_nn_conv_bwd(as_nn_ctx *c, as_nn_conv *l, const float *dy, float *dx);

typedef struct as_nn_bnorm {
    char name[64]; uint16_t id;
    int C, N, HW;
    float eps, momentum;
    as_op_layout layout;          /* of x, y, dx, dy; default NCHW */
    as_nn_param *g, *b;
    as_block run_mean, run_var;   /* weights tag, not trained */
    as_handle hx, hstat;          /* norm_input; (2, C) mean, invstd */
} as_nn_bnorm;
int as_nn_bnorm_init(as_nn_ctx *c, as_nn_params *ps, as_nn_bnorm *l,
                     const char *name, int C);
void as_nn_bnorm_fini(as_nn_ctx *c, as_nn_bnorm *l);
/* x (N, C, H, W); x_saved: handle of x saved by its producer (the conv
 * output) or null; the saved norm input then aliases it (same shape). */
int as_nn_bnorm_fwd(as_nn_ctx *c, as_nn_bnorm *l, int N, int H, int W,
                    const float *x, as_handle x_saved, float *y);
int as_nn_bnorm_bwd(as_nn_ctx *c, as_nn_bnorm *l, const float *dy, float *dx);

/* LayerNorm. Backward needs xhat = (x - mean) * rstd and rstd per row;
 * with save_output (the default) forward saves its output y instead of x
 * (kind linear_input: it is the next linear's input, which aliases it, so
 * y is held once under that linear's rule) and only rstd, and backward rebuilds xhat = (y - beta) / gamma.
 * Per forward it falls back to saving x and (mean, rstd) when some gamma
 * is 0, not finite, below max |gamma| * min_gamma_ratio, or when
 * |beta| > 64 |gamma| (xhat would lose precision); from_y says which. */
typedef struct as_nn_layernorm {
    char name[64]; uint16_t id;
    int C, N;
    as_nn_param *g, *b;
    bool save_output;        /* rebuild xhat from y when gamma allows */
    float min_gamma_ratio;   /* default 1/32 */
    bool from_y;             /* the last forward saved y */
    uint64_t fallbacks;      /* forwards that saved x although save_output */
    as_handle hx, hstat;     /* from_y: y (N, C), rstd (N); else x (N, C),
                                (2, N) mean, rstd */
} as_nn_layernorm;
int as_nn_layernorm_init(as_nn_ctx *c, as_nn_params *ps, as_nn_layernorm *l,
                         const char *name, int C);
int as_nn_layernorm_fwd(as_nn_ctx *c, as_nn_layernorm *l, int N,
                        const float *x, float *y);
/* The handle under which the last forward saved y, for the consumer of y
 * to alias (as_nn_linear_fwd_alias), or null (x was saved, or eval). */
as_handle as_nn_layernorm_out(const as_nn_layernorm *l);
int as_nn_layernorm_bwd(as_nn_ctx *c, as_nn_layernorm *l, const float *dy,
                        float *dx);

/* ReLU (alpha 0), LeakyReLU (alpha > 0) or GELU. ReLU / LeakyReLU save their
 * output (activation_output, meta: the function), GELU its input
 * (activation_input). hy is the saved output, for a consumer to alias. */
typedef struct as_nn_act {
    char name[64]; uint16_t id;
    int fn;                /* AS_FN_RELU, AS_FN_LEAKY_RELU, AS_FN_GELU */
    float alpha;
    size_t n;
    int ndim; int64_t shape[5];
    as_handle h;
} as_nn_act;
void as_nn_act_init(as_nn_ctx *c, as_nn_act *l, const char *name, int fn,
                    float alpha);
/* shape: up to 5 dims describing x (for the saved tensor; the elementwise
 * functions see every float of it, so any layout works). */
int as_nn_act_fwd(as_nn_ctx *c, as_nn_act *l, int ndim, const int64_t *shape,
                  const float *x, float *y);
int as_nn_act_bwd(as_nn_ctx *c, as_nn_act *l, const float *dy, float *dx);

/* k x k pooling, stride k. Max saves the argmax (index, u8); avg nothing. */
typedef struct as_nn_pool {
    char name[64]; uint16_t id;
    bool max; int k;
    as_op_layout layout;  /* of x, y, dx, dy and the argmax; default NCHW */
    int N, C, H, W;
    as_handle hidx;
    as_handle src[2];     /* the last forward's (x as saved, argmax) */
} as_nn_pool;
void as_nn_pool_init(as_nn_ctx *c, as_nn_pool *l, const char *name, bool max,
                     int k);
/* x_saved: handle under which x is already saved (e.g. an activation's
 * output), or null; with it, a max pool's output can be declared derived
 * (as_nn_pool_derivation). */
int as_nn_pool_fwd(as_nn_ctx *c, as_nn_pool *l, int N, int C, int H, int W,
                   const float *x, as_handle x_saved, float *y);
/* Declare in *info that the tensor being saved is the last forward's
 * output of max pool l: gathered from its input at the saved argmax
 * (as_save_info.recompute, inputs (x, argmax)). Leaves info unchanged and
 * returns false when that forward saved no input handle or argmax. The
 * pool must outlive every handle saved with the declaration. */
bool as_nn_pool_derivation(as_nn_pool *l, as_save_info *info);
int as_nn_pool_bwd(as_nn_ctx *c, as_nn_pool *l, const float *dy, float *dx);

/* Dropout: saves nothing; the mask is regenerated from (seed, step, layer). */
typedef struct as_nn_dropout {
    char name[64]; uint16_t id;
    float p; size_t n; uint64_t seed;
} as_nn_dropout;
void as_nn_dropout_init(as_nn_ctx *c, as_nn_dropout *l, const char *name,
                        float p);
int as_nn_dropout_fwd(as_nn_ctx *c, as_nn_dropout *l, size_t n,
                      const float *x, float *y);
int as_nn_dropout_bwd(as_nn_ctx *c, as_nn_dropout *l, const float *dy,
                      float *dx);

/* Softmax over rows (standalone layer; attention has its own). Saves y
 * (softmax_output, meta: row length, causal / valid lengths). */
typedef struct as_nn_softmax {
    char name[64]; uint16_t id;
    size_t rows; int L; bool causal;
    as_handle hy;
} as_nn_softmax;
void as_nn_softmax_init(as_nn_ctx *c, as_nn_softmax *l, const char *name);
int as_nn_softmax_fwd(as_nn_ctx *c, as_nn_softmax *l, size_t rows, int L,
                      bool causal, const int32_t *valid, const float *x,
                      float *y);
int as_nn_softmax_bwd(as_nn_ctx *c, as_nn_softmax *l, const float *dy,
                      float *dx);

/* Token (+ positional) embedding; saves the token ids (index, i32). */
typedef struct as_nn_embed {
    char name[64]; uint16_t id;
    int V, T, C, B;
    as_nn_param *wte, *wpe;   /* wpe NULL when no positions */
    bool input_held;          /* the caller keeps tok valid and unchanged
                                 until the step ends (the batch): saved
                                 borrowed (0 bytes) */
    as_handle htok;
} as_nn_embed;
int as_nn_embed_init(as_nn_ctx *c, as_nn_params *ps, as_nn_embed *l,
                     const char *name, int V, int T, int C, bool positions,
                     uint64_t *rng);
int as_nn_embed_fwd(as_nn_ctx *c, as_nn_embed *l, int B, const int32_t *tok,
                    float *y);
int as_nn_embed_bwd(as_nn_ctx *c, as_nn_embed *l, const float *dy);

/* Softmax cross-entropy; saves probabilities (generic) and targets
 * (index). Targets < 0 are ignored. */
typedef struct as_nn_xent {
    char name[64]; uint16_t id;
    int N, V;
    as_handle hp, ht;
} as_nn_xent;
void as_nn_xent_init(as_nn_ctx *c, as_nn_xent *l, const char *name);
int as_nn_xent_fwd(as_nn_ctx *c, as_nn_xent *l, int N, int V,
                   const float *logits, const int32_t *targets, double *loss,
                   int *ncorrect);
int as_nn_xent_bwd(as_nn_ctx *c, as_nn_xent *l, float *dlogits);
/* Backward of the loss and of the linear head that feeds it, the start of
 * every model's backward: the head input's gradient (loss->N x head->in,
 * workspace of the head's layer) into *dx, owned by the caller. The logits'
 * gradient is workspace of layer dl_layer, freed before return. */
int as_nn_head_bwd(as_nn_ctx *c, as_nn_xent *loss, as_nn_linear *head,
                   uint16_t dl_layer, as_block *dx);

/* Multi-head self-attention: qkv = x Wqkv^T + b, core, out = o Wo^T + b.
 * Saves: x (linear_input, by the qkv linear), qkv (attention_input),
 * P (softmax_output: row length T, T queries per (b, h), causal flag),
 * o (linear_input, by the output linear). Backward decodes P once per
 * (b, h) with restore_rows into a (T, T) workspace and uses that block for
 * both dV and the softmax backward. */
typedef struct as_nn_attn {
    char name[64]; uint16_t id;
    int C, NH; bool causal;
    int B, T;
    as_nn_linear qkv, proj;
    as_handle hqkv, hP;
} as_nn_attn;
int as_nn_attn_init(as_nn_ctx *c, as_nn_params *ps, as_nn_attn *l,
                    const char *name, int C, int NH, bool causal,
                    uint64_t *rng);
int as_nn_attn_fwd(as_nn_ctx *c, as_nn_attn *l, int B, int T,
                   const float *x, float *y);
/* The same with x already saved under x_saved (the qkv linear's saved
 * input aliases it). */
int as_nn_attn_fwd_alias(as_nn_ctx *c, as_nn_attn *l, int B, int T,
                         const float *x, as_handle x_saved, float *y);
int as_nn_attn_bwd(as_nn_ctx *c, as_nn_attn *l, const float *dy, float *dx);

#endif

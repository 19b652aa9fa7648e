/*
 * Models of the reference framework: cnn and vit for Fashion-MNIST, lm (a
 * character-level causal transformer) for text. A model is a forward that
 * returns the mean loss, a backward that fills the parameter gradients, and
 * its parameter list. Activation buffers are transient arena blocks (tag
 * activations, or workspace for gradients) freed as soon as the forward or
 * backward no longer needs them: between forward and backward only what the
 * store holds stays, so the store's policy decides the activation memory.
 */
#ifndef AS_LAYERS_MODEL_H
#define AS_LAYERS_MODEL_H

#include "layers/nn.h"

/* A batch stays valid and unchanged from forward until backward returns:
 * models save the images as borrowed tensors (0 stored bytes). */
typedef struct as_nn_batch {
    int B;
    const float   *x;      /* images (B, 1, 28, 28) */
    const int32_t *y;      /* labels (B) */
    int T;
    const int32_t *tok;    /* text (B, T) inputs */
    const int32_t *tgt;    /* text (B, T) next tokens */
} as_nn_batch;

/* Non-trained model state that a copy of the model must carry (BatchNorm
 * running statistics). Pointers into the model's own blocks. */
typedef struct as_nn_buf {
    float *p;
    size_t n;
} as_nn_buf;

typedef struct as_nn_model as_nn_model;
struct as_nn_model {
    const char  *kind;     /* "cnn", "vit", "lm" */
    as_nn_params params;
    as_nn_buf   *bufs;     /* nbufs entries (malloc), may be NULL */
    size_t       nbufs;
    int (*forward)(as_nn_model *m, as_nn_ctx *c, const as_nn_batch *b,
                   double *loss, int *ncorrect);
    int (*backward)(as_nn_model *m, as_nn_ctx *c);
    void (*destroy)(as_nn_model *m, as_nn_ctx *c);
};

typedef struct as_nn_cnn_cfg {
    int   act_fn;          /* AS_FN_RELU or AS_FN_LEAKY_RELU */
    float alpha;           /* LeakyReLU slope */
    int   nstages;         /* each: convs 3x3 stride 1 pad 1, then max-pool 2 */
    int   convs;           /* convs per stage */
    int   widths[4];       /* channels per stage, non-decreasing */
    bool  batchnorm;       /* conv -> BN -> act (else conv(+bias) -> act) */
    /* Activations between the first conv and the head: AS_OP_NCHW, or
     * AS_OP_BLK16 (nChw16c, ops.h), used in a step when the conv runs on
     * oneDNN and every policy the store's rules name is layout-free (see
     * docs/training.md, "Kernels"); else that step runs NCHW. The
     * environment variable AS_LAYOUT=blocked|nchw overrides it. */
    as_op_layout layout;
} as_nn_cnn_cfg;

typedef struct as_nn_tf_cfg {
    int   C, NH, depth, mlp;   /* width, heads, blocks, MLP hidden = mlp * C */
    float dropout;             /* after attention and MLP; 0 = off */
    int   T;                   /* lm: context length */
    int   patch;               /* vit: patch side, divides 28 (0 = 4):
                                  (28 / patch)^2 + 1 tokens */
    int   V;                   /* lm: vocabulary */
} as_nn_tf_cfg;

int as_nn_cnn_create(as_nn_ctx *c, const as_nn_cnn_cfg *cfg, uint64_t seed,
                     as_nn_model **out);
/* Whether every policy the rules `spec` name (normalized, as
 * as_store_stats.spec) is elementwise or stores the bytes as they are
 * (keep, borrow, sign, fewbit, bitpack, zstd, fp16, bf16, offload), or is
 * invert deriving its inputs (not invert::::solve), so that a tensor saved
 * in the blocked layout means to it what its NCHW form would: a cnn
 * configured blocked then runs its step blocked.
 * Thread-safe. */
bool as_nn_cnn_layout_free(const char *spec);
/* The layout a cnn built from cfg is configured with: cfg->layout, or
 * the environment's AS_LAYOUT=blocked|nchw. Returns 0, or AS_EINVAL when
 * AS_LAYOUT holds anything else (*out is then cfg->layout). Reads the
 * environment: not to be called while another thread changes it. */
int as_nn_cnn_layout(const as_nn_cnn_cfg *cfg, as_op_layout *out);
int as_nn_vit_create(as_nn_ctx *c, const as_nn_tf_cfg *cfg, uint64_t seed,
                     as_nn_model **out);
int as_nn_lm_create(as_nn_ctx *c, const as_nn_tf_cfg *cfg, uint64_t seed,
                    as_nn_model **out);
/* The models by name (layers/models.def). */
typedef enum { AS_NN_CFG_cnn, AS_NN_CFG_tf } as_nn_cfg_kind;
typedef enum { AS_NN_DATA_IMAGES, AS_NN_DATA_TEXT } as_nn_data_kind;

typedef struct as_nn_preset as_nn_preset;
typedef struct as_nn_model_info {
    const char     *name;
    as_nn_cfg_kind  cfg;        /* which preset member builds it */
    as_nn_data_kind data;
    int (*create)(as_nn_ctx *c, const as_nn_preset *p, uint64_t seed, as_nn_model **out);
} as_nn_model_info;

/* The row of model `name`, or NULL (also for NULL). Thread-safe. */
const as_nn_model_info *as_nn_model_find(const char *name);
/* "cnn, vit, lm": the names for messages. */
const char *as_nn_model_names(void);

static inline void as_nn_model_destroy(as_nn_model *m, as_nn_ctx *c)
{
    if (m)
        m->destroy(m, c);
}

#endif

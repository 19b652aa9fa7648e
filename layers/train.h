/*
 * Training runs of the reference framework: presets, the loop, evaluation
 * and the measurements `actstore train` reports.
 *
 * Presets (documented in docs/training.md):
 *   small — a few seconds, for tests;
 *   bench — the configuration behind every reported figure.
 * A run is bit-for-bit deterministic for a fixed (model, preset, policy,
 * seed, threads): data order, initialisation and dropout come from the
 * seed, and no kernel depends on timing.
 */
#ifndef AS_LAYERS_TRAIN_H
#define AS_LAYERS_TRAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "actstore/store.h"
#include "layers/model.h"
#include "layers/optim.h"

typedef struct as_nn_preset {
    char          model[8];     /* "cnn", "vit", "lm" */
    char          name[8];      /* "small", "bench" */
    as_nn_cnn_cfg cnn;
    as_nn_tf_cfg  tf;
    int    batch;
    double epochs;              /* used when steps == 0 */
    long   steps;
    int    optim;               /* AS_NN_SGD / AS_NN_ADAMW */
    float  lr, weight_decay, clip;
    int    warmup;              /* linear warmup steps, then cosine to lr/10 */
    int    train_limit;         /* use the first n training images (0 = all) */
    int    eval_limit;          /* test images / held-out windows (0 = all) */
} as_nn_preset;

/* Fill *out for (model, preset). Returns 0 or AS_ENOTFOUND. */
int as_nn_preset_get(const char *model, const char *preset, as_nn_preset *out);

typedef struct as_nn_progress {
    long   step, steps;
    double loss, samples_per_s;
    uint64_t arena_live, saved_stored, saved_raw;
    bool   eval;                /* evaluating (step = batches done) */
} as_nn_progress;

typedef struct as_nn_train_opts {
    const char *policy;         /* store policy spec (NULL = default=keep) */
    uint64_t    seed;
    int         threads;        /* OpenBLAS threads, 0 = leave */
    const char *data_dir;       /* Fashion-MNIST directory (NULL = default) */
    const char *text_dir;       /* fortunes directory (NULL = default) */
    void (*progress)(void *ud, const as_nn_progress *p);
    void *progress_ud;
    as_store *store;            /* use this store (NULL: create one) */
} as_nn_train_opts;

typedef struct as_nn_kind_mem {
    uint64_t stored_peak, raw_peak;
} as_nn_kind_mem;

typedef struct as_nn_train_result {
    long     steps;
    double  *loss;              /* per step (steps entries) */
    double   final_train_loss;  /* mean over the last min(50, steps) steps */
    double   eval_accuracy;     /* cnn / vit; -1 otherwise */
    double   eval_loss;         /* test / held-out mean loss */
    long     eval_samples;
    uint64_t saved_stored_peak, saved_raw_peak;
    as_nn_kind_mem by_kind[AS_KIND_COUNT];
    uint64_t arena_peak, rss_peak;
    uint64_t tag_peak[AS_TAG_FIXED_COUNT];
    double   step_ms_median, total_s;
    size_t   params;
    char     blas_core[32];
} as_nn_train_result;

/* Run a training job. err gets a message on failure. */
int as_nn_train(const as_nn_preset *p, const as_nn_train_opts *o,
                as_nn_train_result *r, char *err, size_t errlen);
void as_nn_train_result_free(as_nn_train_result *r);

#endif

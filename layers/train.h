/*
 * Training runs of the reference framework: presets, a step-wise run
 * object, the whole-run loop, evaluation and the measurements
 * `actstore train` reports.
 *
 * Presets (documented in docs/training.md):
 *   small — a few seconds, for tests;
 *   bench — the configuration behind every reported figure.
 *
 * Two levels of API:
 *   as_nn_run_*  — one run = one store + model + optimizer + data order.
 *                  Step by step; gradients can be computed on any batch of
 *                  the run's data order without updating; weights can be
 *                  copied between runs (A/B arms, exact-gradient references).
 *   as_nn_train  — a whole run (steps, progress, final evaluation, memory
 *                  and time figures), built on as_nn_run_*.
 *
 * Determinism: a run is bit-for-bit deterministic for a fixed (model,
 * preset, policy, seed, threads). Initialisation, data order and dropout
 * are pure functions of the seed and the batch index: batch k of two runs
 * with the same seed holds the same samples, and its dropout masks are the
 * same, whatever else the runs did before. No kernel depends on timing.
 *
 * Thread-safety: a run is used by one thread at a time. OpenBLAS's thread
 * count is process-wide (as_op_set_threads), so runs created with different
 * `threads` in one process see the last setting.
 *
 * Errors: functions return 0 or a negative AS_E* code; the message (naming
 * the layer, file or option) is in as_nn_run_error() or the caller's err.
 */
#ifndef AS_LAYERS_TRAIN_H
#define AS_LAYERS_TRAIN_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "actstore/store.h"

#include "layers/model.h"
#include "layers/optim.h"

/* ---- presets ------------------------------------------------------------- */

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

/* Fill *out for (model, preset). Returns 0 or AS_ENOTFOUND. Thread-safe. */
int as_nn_preset_get(const char *model, const char *preset, as_nn_preset *out);

/* Options shared by a run and a whole training job. Strings are copied at
 * as_nn_run_create; the store, when given, is borrowed (not destroyed). */
typedef struct as_nn_progress {
    long   step, steps;
    double loss, samples_per_s;
    uint64_t arena_live;        /* arena bytes live after the step */
    uint64_t arena_peak;        /* arena peak during the step */
    uint64_t saved_stored, saved_raw;   /* store peaks during the step */
    bool   eval;                /* evaluating (step = batches done) */
} as_nn_progress;

typedef struct as_nn_train_opts {
    const char *policy;         /* store policy spec (NULL = default=keep);
                                   applied to a given store too */
    uint64_t    seed;
    int         threads;        /* OpenBLAS threads, 0 = leave */
    const char *data_dir;       /* Fashion-MNIST directory (NULL = default) */
    const char *text_dir;       /* fortunes directory (NULL = default) */
    void (*progress)(void *ud, const as_nn_progress *p);  /* as_nn_train */
    void *progress_ud;
    as_store *store;            /* use this store (NULL: the run creates one,
                                   labelled `label`, and owns it) */
    const char *label;          /* label of a created store ("A", "B") */
    int   eval_every;           /* as_nn_train: evaluate every n steps into
                                   eval_curve (0 = only at the end) */
    volatile sig_atomic_t *stop; /* as_nn_train: when *stop turns nonzero
                                   (a signal handler), end after the current
                                   step without the final evaluation: the
                                   result is partial (NULL = never) */
    uint64_t saved_budget;      /* as_nn_train: saved-bytes budget (0 = none),
                                   see as_nn_run_fit_budget */
    double   budget_ratio;      /* as_nn_train: budget = keep's saved bytes /
                                   ratio (0 = none; not with saved_budget) */
} as_nn_train_opts;

/* ---- step-wise runs ------------------------------------------------------ */

typedef struct as_nn_run as_nn_run;

/* What one step did (as_nn_run_last). */
typedef struct as_nn_step_info {
    long   batch;               /* batch index in the run's data order */
    double loss;                /* mean loss of the batch */
    int    ncorrect, samples;   /* argmax hits (cnn/vit; lm: tokens) */
    double gnorm;               /* gradient norm before clipping (step only) */
    float  lr;                  /* learning rate used (step only) */
    double ms;                  /* wall time of the step */
    double cpu_ms;              /* CPU time of the calling thread (with one
                                   BLAS thread: the step's whole cost,
                                   robust to a loaded host) */
} as_nn_step_info;

/* Evaluation on the test set (cnn, vit) or held-out text (lm). */
typedef struct as_nn_eval {
    double accuracy;            /* cnn / vit; -1 for lm */
    double loss;                /* mean cross-entropy (lm: nats per char) */
    long   samples;             /* images, or predicted characters */
} as_nn_eval;

/* Memory figures of a run: maxima over every step so far (the store and
 * the arena reset their peaks at each step begin; the run keeps the max). */
typedef struct as_nn_kind_mem {
    uint64_t stored_peak, raw_peak;
} as_nn_kind_mem;

typedef struct as_nn_mem {
    uint64_t saved_stored_peak, saved_raw_peak;  /* store totals */
    as_nn_kind_mem by_kind[AS_KIND_COUNT];
    uint64_t arena_peak;                         /* arena usable bytes */
    uint64_t tag_peak[AS_TAG_FIXED_COUNT];
    uint64_t rss_peak;                           /* process (getrusage) */
    uint64_t fallbacks;                          /* policy fallbacks */
} as_nn_mem;

/* Create a run: loads the data set, creates (or borrows) the store, sets
 * the policy, builds the model from p and the seed, and the optimizer.
 * p is copied. The run's planned length is p->steps, or p->epochs over the
 * training set when p->steps == 0 (as_nn_run_planned_steps).
 * Errors: AS_EINVAL (bad preset), AS_ESPEC (bad policy), AS_ENOTFOUND (data
 * files missing: the message names the path tried and the package),
 * AS_EFORMAT (bad data files), AS_ENOMEM, AS_EBUDGET; err gets the message
 * and *out stays NULL. */
int as_nn_run_create(const as_nn_preset *p, const as_nn_train_opts *o,
                     as_nn_run **out, char *err, size_t errlen);
/* Destroy (NULL-safe). Destroys the store only if the run created it. */
void as_nn_run_destroy(as_nn_run *r);

/* One training step on the next batch of the data order: forward,
 * backward, optimizer update (with the preset's schedule), batch index + 1.
 * *loss (may be NULL) gets the batch's mean loss. */
int as_nn_run_step(as_nn_run *r, double *loss);

/* Forward + backward on batch `batch` of the run's data order (any index,
 * e.g. as_nn_run_next_batch(r)) WITHOUT the optimizer update: afterwards
 * every parameter's g holds the gradient of this batch's mean loss at the
 * current weights (fresh, not accumulated). Weights, optimizer state,
 * BatchNorm running statistics and the batch index are unchanged, so two
 * runs with copied weights and the same seed give comparable gradients.
 * The next as_nn_run_step starts from zeroed gradients. */
int as_nn_run_grads(as_nn_run *r, long batch, double *loss);

/* Set the store's saved-bytes budget (as_store_set_budget) to `budget`
 * bytes, or, when ratio > 0, to keep's saved bytes of a step / ratio. A
 * measuring step comes first: forward + backward of batch 0 without an
 * update (as as_nn_run_grads), with the budget pending
 * (as_store_budget_pending: auto stores in its most compact measured form,
 * keep's bytes are counted, not held), so that keep's bytes and what
 * `auto` can reach are known; the run's memory figures are then reset
 * (they report the training steps only). *set (may be NULL) gets the
 * budget. Errors: AS_EBUDGET when the budget cannot be met (err names the
 * smallest reachable budget), AS_EINVAL, and those of as_nn_run_grads. */
int as_nn_run_fit_budget(as_nn_run *r, uint64_t budget, double ratio,
                         uint64_t *set);

/* Evaluate (no-grad: nothing saved, BatchNorm running statistics, dropout
 * off) on the first eval_limit test images / held-out windows. */
int as_nn_run_eval(as_nn_run *r, as_nn_eval *out);

/* Set the batch index of the next as_nn_run_step (and of the learning-rate
 * schedule): e.g. a run forked from another with copied weights and
 * optimizer state continues where the source is. Errors: AS_EINVAL (< 0). */
int as_nn_run_seek(as_nn_run *r, long next_batch);

/* Copy src's weights (and BatchNorm running statistics; with
 * with_optimizer also the optimizer moments and step count) into dst. Both
 * runs must have the same model and configuration (AS_ESHAPE otherwise:
 * the message names the first differing parameter). Bumps dst's weight
 * versions so caches keyed by version are not reused. */
int as_nn_run_copy_weights(as_nn_run *dst, const as_nn_run *src,
                           bool with_optimizer);

/* Fashion-MNIST images are loaded once per directory and shared read-only
 * by every run of the process (55 MB); they stay cached after the last run
 * ends, for the next one. Free the sets no run uses. Thread-safe. */
void as_nn_image_cache_clear(void);

/* Accessors. Pointers stay valid for the run's lifetime. */
as_store *as_nn_run_store(as_nn_run *r);
as_nn_model *as_nn_run_model(as_nn_run *r);
const as_nn_params *as_nn_run_params(const as_nn_run *r);
const as_nn_preset *as_nn_run_preset(const as_nn_run *r);
long as_nn_run_next_batch(const as_nn_run *r);   /* = steps done */
long as_nn_run_planned_steps(const as_nn_run *r);
long as_nn_run_batches_per_epoch(const as_nn_run *r);
int  as_nn_run_samples_per_batch(const as_nn_run *r); /* images, or B*T */
const as_nn_step_info *as_nn_run_last(const as_nn_run *r);
/* Memory figures so far (rss_peak read now). */
void as_nn_run_memory(const as_nn_run *r, as_nn_mem *out);
/* Last error message of the run. Never NULL. */
const char *as_nn_run_error(const as_nn_run *r);

/* ---- whole training job -------------------------------------------------- */

typedef struct as_nn_train_result {
    long     steps;             /* done */
    long     planned_steps;
    bool     interrupted;       /* opts.stop ended it: no final evaluation
                                   (eval_samples 0), figures over `steps` */
    double  *loss;              /* per step (steps entries) */
    double   final_train_loss;  /* mean over the last min(50, steps) steps */
    double   eval_accuracy;     /* cnn / vit; -1 otherwise */
    double   eval_loss;         /* test / held-out mean loss */
    long     eval_samples;
    long     neval;             /* eval_curve entries (opts.eval_every) */
    double  *eval_curve;        /* neval x (step, accuracy, loss) */
    uint64_t saved_stored_peak, saved_raw_peak;
    as_nn_kind_mem by_kind[AS_KIND_COUNT];
    uint64_t arena_peak, rss_peak;
    uint64_t tag_peak[AS_TAG_FIXED_COUNT];
    uint64_t fallbacks;
    double   step_ms_median, total_s, eval_s;
    double   step_cpu_ms_median; /* calling thread's CPU time per step */
    double   cpu_s;              /* process CPU time (user + system) */
    size_t   params;
    char     blas_core[32];
    uint64_t saved_budget;      /* 0 = none */
    as_store_plan plan;         /* auto's plan at the end (plan.active) */
} as_nn_train_result;

/* Run a training job (p->steps or p->epochs) and a final evaluation.
 * err gets a message on failure; r is then empty. Free with
 * as_nn_train_result_free (also safe on a zeroed or failed result). */
int as_nn_train(const as_nn_preset *p, const as_nn_train_opts *o,
                as_nn_train_result *r, char *err, size_t errlen);
void as_nn_train_result_free(as_nn_train_result *r);

#endif

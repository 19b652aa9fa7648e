/*
 * Optimizers of the reference framework: SGD with momentum and AdamW.
 * State (momentum, first/second moments) is allocated lazily through the
 * arena under the "optimizer" tag. Each step bumps every parameter's
 * version (conv inversion caches per weight version).
 */
#ifndef AS_LAYERS_OPTIM_H
#define AS_LAYERS_OPTIM_H

#include "layers/nn.h"

enum as_nn_optim_kind { AS_NN_SGD = 0, AS_NN_ADAMW };

typedef struct as_nn_optim {
    int   kind;
    float lr;
    float momentum;            /* SGD (Nesterov off) */
    float beta1, beta2, eps;   /* AdamW */
    float weight_decay;        /* decoupled; only params with decay set */
    float clip;                /* global gradient-norm clip; 0 = off */
    uint64_t t;                /* steps taken */
} as_nn_optim;

/* Defaults: SGD momentum 0.9; AdamW betas 0.9/0.999, eps 1e-8. */
void as_nn_optim_init(as_nn_optim *o, int kind, float lr, float weight_decay);
/* One update with learning rate lr_now (schedules are the caller's), then
 * zero the gradients. Returns the gradient norm before clipping in *gnorm
 * (may be NULL). Errors: AS_ENOMEM / AS_EBUDGET for the lazy state. */
int as_nn_optim_step(as_nn_ctx *c, as_nn_optim *o, as_nn_params *ps,
                     float lr_now, double *gnorm);

#endif

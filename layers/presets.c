/*
 * The catalogue of the reference framework: the models (models.def) and
 * their presets (see train.h and docs/training.md).
 */
#include "layers/train.h"

#include <string.h>

/* ---- models ---------------------------------------------------------- */

#define AS_NN_MODEL(name, create, cfg, data)                                    \
    static int create_##name(as_nn_ctx *c, const as_nn_preset *p, uint64_t seed, \
                             as_nn_model **out)                                 \
    {                                                                           \
        return create(c, &p->cfg, seed, out);                                   \
    }
#include "layers/models.def"
#undef AS_NN_MODEL

static const as_nn_model_info models[] = {
#define AS_NN_MODEL(name, create, cfg, data) \
    {#name, AS_NN_CFG_##cfg, AS_NN_DATA_##data, create_##name},
#include "layers/models.def"
#undef AS_NN_MODEL
};

const as_nn_model_info *as_nn_model_find(const char *name)
{
    for (size_t i = 0; name && i < sizeof models / sizeof models[0]; i++)
        if (!strcmp(models[i].name, name))
            return &models[i];
    return NULL;
}

const char *as_nn_model_names(void)
{
    static const char names[] =
#define AS_NN_MODEL(name, create, cfg, data) ", " #name
#include "layers/models.def"
#undef AS_NN_MODEL
        ;
    return names + 2;
}

/* ---- presets ---------------------------------------------------------- */

/* Fixed configurations; every reported figure names its preset. Changing a
 * bench preset invalidates docs/benchmarks.md ("## Training"). */
static const as_nn_preset presets[] = {
    /* cnn small: 2 stages (8, 16), 2k images, 60 steps: seconds. */
    {.model = "cnn", .name = "small",
     .cnn = {.act_fn = AS_FN_RELU, .alpha = 0.1f, .nstages = 2, .convs = 1,
             .widths = {8, 16}, .batchnorm = true},
     .batch = 32, .steps = 60, .optim = AS_NN_SGD, .lr = 0.05f,
     .weight_decay = 5e-4f, .warmup = 5, .train_limit = 2048,
     .eval_limit = 512},
    /* cnn bench: 3 stages (16, 32, 64) x 1 conv + BN + ReLU, 2x2 max-pool,
     * linear head; SGD momentum 0.9, 5 epochs of 60k. Activations blocked
     * (nChw16c) where the rules allow: the widths fill whole 16-lane
     * blocks, so no padding (the small preset's 8 would double). */
    {.model = "cnn", .name = "bench",
     .cnn = {.act_fn = AS_FN_RELU, .alpha = 0.1f, .nstages = 3, .convs = 1,
             .widths = {16, 32, 64}, .batchnorm = true,
             .layout = AS_OP_BLK16},
     .batch = 64, .epochs = 5, .optim = AS_NN_SGD, .lr = 0.05f,
     .weight_decay = 5e-4f, .warmup = 100},
    /* cnn wide: the bench cnn 2x wider (32, 64, 128), batch 256; 300
     * steps (1.3 epochs), eval on 2000 test images. */
    {.model = "cnn", .name = "wide",
     .cnn = {.act_fn = AS_FN_RELU, .alpha = 0.1f, .nstages = 3, .convs = 1,
             .widths = {32, 64, 128}, .batchnorm = true,
             .layout = AS_OP_BLK16},
     .batch = 256, .steps = 300, .optim = AS_NN_SGD, .lr = 0.1f,
     .weight_decay = 5e-4f, .warmup = 30, .eval_limit = 2000},
    /* vit small: width 32, 2 heads, 1 block. */
    {.model = "vit", .name = "small",
     .tf = {.C = 32, .NH = 2, .depth = 1, .mlp = 2},
     .batch = 32, .steps = 40, .optim = AS_NN_ADAMW, .lr = 2e-3f,
     .weight_decay = 0.01f, .clip = 1.0f, .warmup = 5, .train_limit = 2048,
     .eval_limit = 512},
    /* vit bench: width 48, 4 heads, 3 pre-norm blocks, MLP 2x. */
    {.model = "vit", .name = "bench",
     .tf = {.C = 48, .NH = 4, .depth = 3, .mlp = 2},
     .batch = 64, .epochs = 5, .optim = AS_NN_ADAMW, .lr = 2e-3f,
     .weight_decay = 0.01f, .clip = 1.0f, .warmup = 200},
    /* vit wide: 2x2 patches (197 tokens), width 128, 4 heads, 3 blocks,
     * MLP 2x; 200 steps, eval on 2000 test images. */
    {.model = "vit", .name = "wide",
     .tf = {.C = 128, .NH = 4, .depth = 3, .mlp = 2, .patch = 2},
     .batch = 32, .steps = 200, .optim = AS_NN_ADAMW, .lr = 2e-3f,
     .weight_decay = 0.01f, .clip = 1.0f, .warmup = 30, .eval_limit = 2000},
    /* lm small: context 32, width 32, 1 block. */
    {.model = "lm", .name = "small",
     .tf = {.C = 32, .NH = 2, .depth = 1, .mlp = 2, .T = 32},
     .batch = 16, .steps = 40, .optim = AS_NN_ADAMW, .lr = 3e-3f,
     .weight_decay = 0.01f, .clip = 1.0f, .warmup = 5, .eval_limit = 64},
    /* lm bench: context 64, width 64, 4 heads, 3 blocks, MLP 2x. */
    {.model = "lm", .name = "bench",
     .tf = {.C = 64, .NH = 4, .depth = 3, .mlp = 2, .T = 64},
     .batch = 32, .steps = 2000, .optim = AS_NN_ADAMW, .lr = 4e-3f,
     .weight_decay = 0.01f, .clip = 1.0f, .warmup = 100, .eval_limit = 1024},
    /* lm long: the bench lm at context 1024, batch 8 (8192 characters a
     * step, as bench's 2048 x 4); the base of `actstore bench scale`. */
    {.model = "lm", .name = "long",
     .tf = {.C = 64, .NH = 4, .depth = 3, .mlp = 2, .T = 1024},
     .batch = 8, .steps = 300, .optim = AS_NN_ADAMW, .lr = 4e-3f,
     .weight_decay = 0.01f, .clip = 1.0f, .warmup = 30, .eval_limit = 64},
};

int as_nn_preset_get(const char *model, const char *preset, as_nn_preset *out)
{
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++)
        if (model && preset && !strcmp(presets[i].model, model) &&
            !strcmp(presets[i].name, preset)) {
            *out = presets[i];
            return 0;
        }
    return AS_ENOTFOUND;
}


/*
 * Transformer models: vit (Fashion-MNIST, PxP patches + class token) and
 * lm (character-level, causal). Pre-norm blocks:
 *     x = x + drop(attn(ln1(x)));  x = x + drop(fc2(gelu(fc1(ln2(x)))))
 * The residual stream is one (N, C) buffer updated in place; everything a
 * backward needs is saved by the layers through the store. Every LayerNorm
 * output feeds a linear (qkv, fc1, head): the norm saves that output and
 * the linear's saved input aliases it, so it is held once, under the
 * linear's policy (the norm rebuilds xhat from it, see nn.h).
 */
#include "layers/model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/try.h"

#define MAXD 12

typedef struct block {
    as_nn_layernorm ln1, ln2;
    as_nn_attn attn;
    as_nn_linear fc1, fc2;
    as_nn_act gelu;
    as_nn_dropout d1, d2;
} block;

typedef struct tf {
    as_nn_model base;
    as_nn_tf_cfg cfg;
    bool vit;
    block blk[MAXD];
    as_nn_linear patch;        /* vit: P*P -> C */
    int P, np;                 /* vit: patch side, patches per image */
    as_handle himg;            /* vit: the batch images (B, 784), borrowed */
    as_nn_param *cls, *pos;    /* vit: class token (C), positions (np+1, C) */
    as_nn_embed emb;           /* lm */
    as_nn_layernorm lnf;
    as_nn_linear head;
    as_nn_xent loss;
    int B, T, nout;
} tf;

static int falloc(as_nn_ctx *c, size_t n, int tag, uint16_t id, as_block *b)
{
    return as_nn_alloc(c, n * sizeof(float), (uint16_t)tag, id, false, b);
}

/* patches (B*np, P*P): PxP pixel blocks of (B, 28, 28), np = (28/P)^2,
 * row-major within a patch */
static void patchify(int B, int P, const float *img, float *pp)
{
    const int G = 28 / P, np = G * G;
    for (int b = 0; b < B; b++)
        for (int py = 0; py < G; py++)
            for (int px = 0; px < G; px++)
                for (int i = 0; i < P; i++)
                    for (int j = 0; j < P; j++)
                        pp[((size_t)(b * np + py * G + px)) * P * P + i * P + j] =
                            img[(size_t)b * 784 + (py * P + i) * 28 + px * P + j];
}

static int block_init(as_nn_ctx *c, as_nn_params *ps, block *b, int i,
                      const as_nn_tf_cfg *cfg, bool causal, uint64_t *rng)
{
    char n[64];
    int rc;
#define NAME(s) (snprintf(n, sizeof n, "blocks.%d.%s", i, s), n)
    if ((rc = as_nn_layernorm_init(c, ps, &b->ln1, NAME("ln1"), cfg->C)) ||
        (rc = as_nn_attn_init(c, ps, &b->attn, NAME("attn"), cfg->C, cfg->NH,
                              causal, rng)) ||
        (rc = as_nn_layernorm_init(c, ps, &b->ln2, NAME("ln2"), cfg->C)) ||
        (rc = as_nn_linear_init(c, ps, &b->fc1, NAME("mlp.fc1"), cfg->C,
                                cfg->mlp * cfg->C, true, rng)) ||
        (rc = as_nn_linear_init(c, ps, &b->fc2, NAME("mlp.fc2"),
                                cfg->mlp * cfg->C, cfg->C, true, rng)))
        return rc;
    /* residual branches start small (GPT-2 style scaled init) */
    float *w = AS_NN_F(b->fc2.W->w);
    for (size_t k = 0; k < b->fc2.W->n; k++)
        w[k] *= 0.5f;
    w = AS_NN_F(b->attn.proj.W->w);
    for (size_t k = 0; k < b->attn.proj.W->n; k++)
        w[k] *= 0.5f;
    as_nn_act_init(c, &b->gelu, NAME("mlp.gelu"), AS_FN_GELU, 0.0f);
    as_nn_dropout_init(c, &b->d1, NAME("drop1"), cfg->dropout);
    as_nn_dropout_init(c, &b->d2, NAME("drop2"), cfg->dropout);
#undef NAME
    return 0;
}

/* x (B*T, C) in place. */
static int block_fwd(as_nn_ctx *c, block *b, const as_nn_tf_cfg *cfg, int B,
                     int T, float *x)
{
    const int N = B * T, C = cfg->C, H = cfg->mlp * C;
    as_block a = {0}, h = {0};
    int rc = 0;
    AS_TRY(falloc(c, (size_t)N * C, AS_TAG_ACTIVATIONS, b->attn.id, &a));
    AS_TRY(as_nn_layernorm_fwd(c, &b->ln1, N, x, AS_NN_F(a)));
    AS_TRY(falloc(c, (size_t)N * C, AS_TAG_ACTIVATIONS, b->attn.id, &h));
    AS_TRY(as_nn_attn_fwd_alias(c, &b->attn, B, T, AS_NN_F(a),
                             as_nn_layernorm_out(&b->ln1), AS_NN_F(h)));
    AS_TRY(as_nn_dropout_fwd(c, &b->d1, (size_t)N * C, AS_NN_F(h), AS_NN_F(h)));
    as_op_add((size_t)N * C, AS_NN_F(h), x);
    as_nn_free(c, &h);
    AS_TRY(as_nn_layernorm_fwd(c, &b->ln2, N, x, AS_NN_F(a)));
    AS_TRY(falloc(c, (size_t)N * H, AS_TAG_ACTIVATIONS, b->fc1.id, &h));
    AS_TRY(as_nn_linear_fwd_alias(c, &b->fc1, N, AS_NN_F(a),
                               as_nn_layernorm_out(&b->ln2), AS_NN_F(h)));
    const int64_t shape[2] = {N, H};
    AS_TRY(as_nn_act_fwd(c, &b->gelu, 2, shape, AS_NN_F(h), AS_NN_F(h)));
    AS_TRY(as_nn_linear_fwd(c, &b->fc2, N, AS_NN_F(h), AS_NN_F(a)));
    AS_TRY(as_nn_dropout_fwd(c, &b->d2, (size_t)N * C, AS_NN_F(a), AS_NN_F(a)));
    as_op_add((size_t)N * C, AS_NN_F(a), x);
out:
    AS_NN_FREE(c, &a, &h);
    return rc;
}

/* dx (B*T, C): gradient of the block output in, of its input out. */
static int block_bwd(as_nn_ctx *c, block *b, const as_nn_tf_cfg *cfg, int B,
                     int T, float *dx)
{
    const int N = B * T, C = cfg->C, H = cfg->mlp * C;
    as_block t = {0}, h = {0}, u = {0};
    int rc = 0;
    AS_TRY(falloc(c, (size_t)N * C, AS_TAG_WORKSPACE, b->fc2.id, &t));
    AS_TRY(falloc(c, (size_t)N * C, AS_TAG_WORKSPACE, b->fc2.id, &u));
    AS_TRY(falloc(c, (size_t)N * H, AS_TAG_WORKSPACE, b->fc2.id, &h));
    AS_TRY(as_nn_dropout_bwd(c, &b->d2, dx, AS_NN_F(t)));
    AS_TRY(as_nn_linear_bwd(c, &b->fc2, AS_NN_F(t), AS_NN_F(h)));
    AS_TRY(as_nn_act_bwd(c, &b->gelu, AS_NN_F(h), AS_NN_F(h)));
    AS_TRY(as_nn_linear_bwd(c, &b->fc1, AS_NN_F(h), AS_NN_F(t)));
    as_nn_free(c, &h);
    AS_TRY(as_nn_layernorm_bwd(c, &b->ln2, AS_NN_F(t), AS_NN_F(u)));
    as_op_add((size_t)N * C, AS_NN_F(u), dx);
    AS_TRY(as_nn_dropout_bwd(c, &b->d1, dx, AS_NN_F(t)));
    AS_TRY(as_nn_attn_bwd(c, &b->attn, AS_NN_F(t), AS_NN_F(u)));
    AS_TRY(as_nn_layernorm_bwd(c, &b->ln1, AS_NN_F(u), AS_NN_F(t)));
    as_op_add((size_t)N * C, AS_NN_F(t), dx);
out:
    AS_NN_FREE(c, &t, &h, &u);
    return rc;
}

static int tf_forward(as_nn_model *m_, as_nn_ctx *c, const as_nn_batch *bt,
                      double *loss, int *ncorrect)
{
    tf *m = (tf *)m_;
    const int C = m->cfg.C, B = bt->B;
    const int T = m->vit ? m->np + 1 : bt->T, N = B * T;
    const int np = m->np, PP = m->P * m->P;
    m->B = B;
    m->T = T;
    as_block x = {0}, p = {0}, e = {0}, lg = {0};
    int rc = 0;
    AS_TRY(falloc(c, (size_t)N * C, AS_TAG_ACTIVATIONS, 0, &x));  /* (B,T,C) */
    float *xs = AS_NN_F(x);
    if (m->vit) {
        /* The patch linear's input is a rearrangement of the batch, which
         * the caller holds through the step: save the images borrowed (0
         * bytes) and rebuild the patches in backward. */
        AS_TRY(falloc(c, (size_t)B * np * PP, AS_TAG_ACTIVATIONS, m->patch.id, &p));
        patchify(B, m->P, bt->x, AS_NN_F(p));
        AS_TRY(falloc(c, (size_t)B * np * C, AS_TAG_ACTIVATIONS, m->patch.id, &e));
        m->patch.N = B * np;
        as_op_linear_fwd(B * np, PP, C, AS_NN_F(p), AS_NN_F(m->patch.W->w),
                         AS_NN_F(m->patch.b->w), AS_NN_F(e));
        as_nn_free(c, &p);
        as_save_info ii = {.kind = AS_KIND_LINEAR_INPUT, .layer = m->patch.name,
                           .borrow = true};
        as_tensor it = AS_NN_T(bt->x, AS_F32, B, 784);
        AS_TRY(as_nn_save(c, &ii, &it, &m->himg));
        const float *cls = AS_NN_F(m->cls->w), *pos = AS_NN_F(m->pos->w);
        for (int b = 0; b < B; b++)
            for (int t = 0; t < T; t++) {
                float *xr = xs + ((size_t)b * T + t) * C;
                const float *src = t == 0 ? cls : AS_NN_F(e) + ((size_t)b * np + t - 1) * C;
                for (int k = 0; k < C; k++)
                    xr[k] = src[k] + pos[t * C + k];
            }
        as_nn_free(c, &e);
    } else {
        AS_TRY(as_nn_embed_fwd(c, &m->emb, B, bt->tok, xs));
    }
    for (int i = 0; i < m->cfg.depth; i++)
        AS_TRY(block_fwd(c, &m->blk[i], &m->cfg, B, T, xs));
    /* vit: only the class token goes to the head */
    const int R = m->vit ? B : N;
    const float *hin = xs;
    if (m->vit) {
        AS_TRY(falloc(c, (size_t)B * C, AS_TAG_ACTIVATIONS, m->lnf.id, &p));
        for (int b = 0; b < B; b++)
            memcpy(AS_NN_F(p) + (size_t)b * C, xs + (size_t)b * T * C,
                   sizeof(float) * C);
        hin = AS_NN_F(p);
    }
    AS_TRY(falloc(c, (size_t)R * C, AS_TAG_ACTIVATIONS, m->lnf.id, &e));
    AS_TRY(as_nn_layernorm_fwd(c, &m->lnf, R, hin, AS_NN_F(e)));
    as_nn_free(c, &x);
    as_nn_free(c, &p);
    AS_TRY(falloc(c, (size_t)R * m->nout, AS_TAG_ACTIVATIONS, m->head.id, &lg));
    AS_TRY(as_nn_linear_fwd_alias(c, &m->head, R, AS_NN_F(e),
                               as_nn_layernorm_out(&m->lnf), AS_NN_F(lg)));
    as_nn_free(c, &e);
    AS_TRY(as_nn_xent_fwd(c, &m->loss, R, m->nout, AS_NN_F(lg),
                       m->vit ? bt->y : bt->tgt, loss, ncorrect));
out:
    AS_NN_FREE(c, &x, &p, &e, &lg);
    return rc;
}

static int tf_backward(as_nn_model *m_, as_nn_ctx *c)
{
    tf *m = (tf *)m_;
    const int C = m->cfg.C, B = m->B, T = m->T, N = B * T;
    const int R = m->vit ? B : N, np = m->np, PP = m->P * m->P;
    as_block dh = {0}, dr = {0}, dx = {0};
    int rc = 0;
    AS_TRY(as_nn_head_bwd(c, &m->loss, &m->head, m->head.id, &dh));
    AS_TRY(falloc(c, (size_t)R * C, AS_TAG_WORKSPACE, m->lnf.id, &dr));
    AS_TRY(as_nn_layernorm_bwd(c, &m->lnf, AS_NN_F(dh), AS_NN_F(dr)));
    as_nn_free(c, &dh);
    AS_TRY(as_nn_alloc(c, sizeof(float) * (size_t)N * C, AS_TAG_WORKSPACE, 0,
                    m->vit, &dx));
    float *d = AS_NN_F(dx);
    if (m->vit)
        for (int b = 0; b < B; b++)
            memcpy(d + (size_t)b * T * C, AS_NN_F(dr) + (size_t)b * C,
                   sizeof(float) * C);
    else
        memcpy(d, AS_NN_F(dr), sizeof(float) * (size_t)N * C);
    as_nn_free(c, &dr);
    for (int i = m->cfg.depth - 1; i >= 0; i--)
        AS_TRY(block_bwd(c, &m->blk[i], &m->cfg, B, T, d));
    if (m->vit) {
        float *gc = AS_NN_F(m->cls->g), *gp = AS_NN_F(m->pos->g);
        AS_TRY(falloc(c, (size_t)B * np * C, AS_TAG_WORKSPACE, m->patch.id, &dh));
        for (int b = 0; b < B; b++)
            for (int t = 0; t < T; t++) {
                const float *r = d + ((size_t)b * T + t) * C;
                for (int k = 0; k < C; k++)
                    gp[t * C + k] += r[k];
                if (t == 0)
                    for (int k = 0; k < C; k++)
                        gc[k] += r[k];
                else
                    memcpy(AS_NN_F(dh) + ((size_t)b * np + t - 1) * C, r,
                           sizeof(float) * C);
            }
        const void *img;
        AS_TRY(as_nn_view(c, m->himg, m->patch.name, &img));
        AS_TRY(falloc(c, (size_t)B * np * PP, AS_TAG_WORKSPACE, m->patch.id, &dr));
        patchify(B, m->P, img, AS_NN_F(dr));
        as_op_linear_bwd(B * np, PP, C, AS_NN_F(dr), AS_NN_F(m->patch.W->w),
                         AS_NN_F(dh), NULL, AS_NN_F(m->patch.W->g),
                         AS_NN_F(m->patch.b->g));
        as_nn_release(c, &m->himg);
    } else {
        AS_TRY(as_nn_embed_bwd(c, &m->emb, d));
    }
out:
    AS_NN_FREE(c, &dh, &dr, &dx);
    return rc;
}

static void tf_destroy(as_nn_model *m_, as_nn_ctx *c)
{
    tf *m = (tf *)m_;
    as_nn_params_free(c, &m->base.params);
    free(m);
}

static int tf_create(as_nn_ctx *c, const as_nn_tf_cfg *cfg, uint64_t seed,
                     bool vit, as_nn_model **out)
{
    *out = NULL;
    if (cfg->depth < 1 || cfg->depth > MAXD || cfg->C < 1 || cfg->NH < 1 ||
        cfg->C % cfg->NH || cfg->mlp < 1 || (!vit && (cfg->T < 1 || cfg->V < 2)) ||
        (vit && (cfg->patch < 0 || cfg->patch > 28 || (cfg->patch && 28 % cfg->patch))))
        return as_nn_fail(c, AS_EINVAL, "%s: bad configuration", vit ? "vit" : "lm");
    tf *m = calloc(1, sizeof *m);
    if (!m)
        return as_nn_fail(c, AS_ENOMEM, "transformer");
    m->base.kind = vit ? "vit" : "lm";
    m->base.forward = tf_forward;
    m->base.backward = tf_backward;
    m->base.destroy = tf_destroy;
    m->cfg = *cfg;
    m->vit = vit;
    m->P = cfg->patch ? cfg->patch : 4;
    m->np = (28 / m->P) * (28 / m->P);
    m->nout = vit ? 10 : cfg->V;
    uint64_t rng = seed;
    int rc = 0;
    as_nn_params *ps = &m->base.params;
    if (vit) {
        AS_TRY(as_nn_linear_init(c, ps, &m->patch, "patch", m->P * m->P, cfg->C, true,
                                 &rng));
        AS_TRY(as_nn_param_new(c, ps, "cls", m->patch.id, (size_t)cfg->C, 0.02f, 0,
                            false, &rng, &m->cls));
        AS_TRY(as_nn_param_new(c, ps, "pos", m->patch.id, (size_t)(m->np + 1) * cfg->C, 0.02f,
                            0, false, &rng, &m->pos));
    } else {
        AS_TRY(as_nn_embed_init(c, ps, &m->emb, "embed", cfg->V, cfg->T, cfg->C,
                             true, &rng));
        m->emb.input_held = true;   /* the batch, held by the caller */
    }
    for (int i = 0; i < cfg->depth; i++)
        AS_TRY(block_init(c, ps, &m->blk[i], i, cfg, !vit, &rng));
    AS_TRY(as_nn_layernorm_init(c, ps, &m->lnf, "ln_f", cfg->C));
    AS_TRY(as_nn_linear_init(c, ps, &m->head, "head", cfg->C, m->nout, true, &rng));
    as_nn_xent_init(c, &m->loss, "loss");
out:
    if (rc) {
        tf_destroy(&m->base, c);
        return rc;
    }
    *out = &m->base;
    return 0;
}

int as_nn_vit_create(as_nn_ctx *c, const as_nn_tf_cfg *cfg, uint64_t seed,
                     as_nn_model **out)
{
    return tf_create(c, cfg, seed, true, out);
}

int as_nn_lm_create(as_nn_ctx *c, const as_nn_tf_cfg *cfg, uint64_t seed,
                    as_nn_model **out)
{
    return tf_create(c, cfg, seed, false, out);
}

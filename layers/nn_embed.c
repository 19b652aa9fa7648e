/* Token / positional embeddings and the cross-entropy loss (see nn.h). */
#include "layers/nn.h"

#include <stdio.h>
#include <string.h>

int as_nn_embed_init(as_nn_ctx *c, as_nn_params *ps, as_nn_embed *l,
                     const char *name, int V, int T, int C, bool positions,
                     uint64_t *rng)
{
    char b[64];
    memset(l, 0, sizeof *l);
    snprintf(l->name, sizeof l->name, "%s", name);
    l->id = as_nn_layer_id(c, name);
    l->V = V;
    l->T = T;
    l->C = C;
    snprintf(b, sizeof b, "%s.tokens", name);
    int rc = as_nn_param_new(c, ps, b, l->id, (size_t)V * C, 0.035f, 0, false,
                             rng, &l->wte);
    if (rc || !positions)
        return rc;
    snprintf(b, sizeof b, "%s.positions", name);
    return as_nn_param_new(c, ps, b, l->id, (size_t)T * C, 0.035f, 0, false,
                           rng, &l->wpe);
}

int as_nn_embed_fwd(as_nn_ctx *c, as_nn_embed *l, int B, const int32_t *tok,
                    float *y)
{
    l->B = B;
    for (int i = 0; i < B * l->T; i++)
        if (tok[i] < 0 || tok[i] >= l->V)
            return as_nn_fail(c, AS_ERANGE, "%s: token %d at %d outside [0, %d)",
                              l->name, tok[i], i, l->V);
    as_op_embed_fwd(B, l->T, l->C, tok, AS_NN_F(l->wte->w),
                    l->wpe ? AS_NN_F(l->wpe->w) : NULL, y);
    as_save_info info = {.kind = AS_KIND_INDEX, .layer = l->name,
                         .borrow = l->input_held};
    as_tensor t = AS_NN_T(tok, AS_I32, B, l->T);
    return as_nn_save(c, &info, &t, &l->htok);
}

int as_nn_embed_bwd(as_nn_ctx *c, as_nn_embed *l, const float *dy)
{
    const void *tok;
    int rc = as_nn_view(c, l->htok, l->name, &tok);
    if (rc)
        return rc;
    as_op_embed_bwd(l->B, l->T, l->C, tok, dy, AS_NN_F(l->wte->g),
                    l->wpe ? AS_NN_F(l->wpe->g) : NULL);
    as_nn_release(c, &l->htok);
    return 0;
}

void as_nn_xent_init(as_nn_ctx *c, as_nn_xent *l, const char *name)
{
    memset(l, 0, sizeof *l);
    snprintf(l->name, sizeof l->name, "%s", name);
    l->id = as_nn_layer_id(c, name);
}

int as_nn_xent_fwd(as_nn_ctx *c, as_nn_xent *l, int N, int V,
                   const float *logits, const int32_t *targets, double *loss,
                   int *ncorrect)
{
    l->N = N;
    l->V = V;
    for (int i = 0; i < N; i++)
        if (targets[i] >= V)
            return as_nn_fail(c, AS_ERANGE, "%s: target %d at %d outside [0, %d)",
                              l->name, targets[i], i, V);
    as_block pb;
    int rc = as_nn_alloc(c, sizeof(float) * (size_t)N * V, AS_TAG_ACTIVATIONS,
                         l->id, false, &pb);  /* (N, V) probabilities */
    if (rc)
        return rc;
    *loss = as_op_xent_fwd(N, V, logits, targets, AS_NN_F(pb), ncorrect);
    /* Backward needs the probabilities and the targets; saved as generic
     * (not softmax_output: a softmax codec must not approximate the loss). */
    as_save_info pi = {.kind = AS_KIND_GENERIC, .layer = l->name};
    as_tensor pt = AS_NN_T(pb.ptr, AS_F32, N, V);
    rc = as_nn_save(c, &pi, &pt, &l->hp);
    as_save_info ti = {.kind = AS_KIND_INDEX, .layer = l->name};
    as_tensor tt = AS_NN_T(targets, AS_I32, N);
    if (!rc)
        rc = as_nn_save(c, &ti, &tt, &l->ht);
    as_nn_free(c, &pb);
    return rc;
}

int as_nn_xent_bwd(as_nn_ctx *c, as_nn_xent *l, float *dlogits)
{
    const void *p, *t;
    int rc = as_nn_view(c, l->hp, l->name, &p);
    if (!rc)
        rc = as_nn_view(c, l->ht, l->name, &t);
    if (rc)
        return rc;
    as_op_xent_bwd(l->N, l->V, p, t, dlogits);
    as_nn_release(c, &l->hp);
    as_nn_release(c, &l->ht);
    return 0;
}

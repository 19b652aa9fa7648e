/* SGD with momentum and AdamW (see optim.h). */
#include "layers/optim.h"

#include <math.h>
#include <string.h>

void as_nn_optim_init(as_nn_optim *o, int kind, float lr, float weight_decay)
{
    memset(o, 0, sizeof *o);
    o->kind = kind;
    o->lr = lr;
    o->momentum = 0.9f;
    o->beta1 = 0.9f;
    o->beta2 = 0.999f;
    o->eps = 1e-8f;
    o->weight_decay = weight_decay;
}

int as_nn_optim_step(as_nn_ctx *c, as_nn_optim *o, as_nn_params *ps,
                     float lr, double *gnorm)
{
    double ss = 0.0;
    for (size_t i = 0; i < ps->n; i++) {
        const float *g = AS_NN_F(ps->p[i]->g);
        for (size_t k = 0; k < ps->p[i]->n; k++)
            ss += (double)g[k] * g[k];
    }
    double norm = sqrt(ss);
    if (gnorm)
        *gnorm = norm;
    float gs = (o->clip > 0.0f && norm > o->clip) ? (float)(o->clip / norm) : 1.0f;
    o->t++;
    const float bc1 = 1.0f - powf(o->beta1, (float)o->t);
    const float bc2 = 1.0f - powf(o->beta2, (float)o->t);
    for (size_t i = 0; i < ps->n; i++) {
        as_nn_param *p = ps->p[i];
        float *w = AS_NN_F(p->w), *g = AS_NN_F(p->g);
        const float wd = p->decay ? o->weight_decay : 0.0f;
        if (!p->m.ptr) {
            int rc = as_nn_alloc(c, p->n * sizeof(float), AS_TAG_OPTIMIZER,
                                 p->layer, true, &p->m);
            if (!rc && o->kind == AS_NN_ADAMW)
                rc = as_nn_alloc(c, p->n * sizeof(float), AS_TAG_OPTIMIZER,
                                 p->layer, true, &p->v);
            if (rc)
                return rc;
        }
        float *m = AS_NN_F(p->m);
        if (o->kind == AS_NN_SGD) {
            for (size_t k = 0; k < p->n; k++) {
                float gk = g[k] * gs + wd * w[k];
                m[k] = o->momentum * m[k] + gk;
                w[k] -= lr * m[k];
            }
        } else {
            float *v = AS_NN_F(p->v);
            for (size_t k = 0; k < p->n; k++) {
                float gk = g[k] * gs;
                m[k] = o->beta1 * m[k] + (1.0f - o->beta1) * gk;
                v[k] = o->beta2 * v[k] + (1.0f - o->beta2) * gk * gk;
                float mh = m[k] / bc1, vh = v[k] / bc2;
                w[k] -= lr * (mh / (sqrtf(vh) + o->eps) + wd * w[k]);
            }
        }
        memset(g, 0, p->n * sizeof(float));
        p->version++;
    }
    return 0;
}

/*
 * cnn for Fashion-MNIST: stages of 3x3 stride-1 convolutions (Cout >= Cin,
 * so conv inversion can apply), each followed by BatchNorm and ReLU or
 * LeakyReLU, a 2x2 max-pool between stages, and a linear head.
 *
 * Saved-tensor wiring: a conv saves its output (conv_output) and its input
 * (conv_input, which aliases the previous activation's saved output when
 * the input is that output); BatchNorm's input aliases the conv output; so
 * with keep every tensor is held once.
 *
 * LeakyReLU chain (act_fn = AS_FN_LEAKY_RELU, owned by the conv inversion
 * component): the activation output names its source through the
 * invertible function, so the store can rebuild the conv output from it
 * (policy "inverse", implicit for conv outputs under conv_input=invert):
 *   without BatchNorm  z = leaky(y):  source y (conv_output), fn leaky;
 *   with BatchNorm     b = a*y + bb (the batch's affine, gamma != 0) is
 *                      saved as activation_input with source y (fn affine)
 *                      and z = leaky(b) names b its source; b's handle is
 *                      released at once (its item lives while y needs it).
 *                      Rules "norm_input=inverse; activation_input=inverse"
 *                      then rebuild y and b instead of keeping them (the
 *                      link is made only when the rules name
 *                      activation_input=inverse: otherwise it would be a
 *                      transient copy for nothing).
 * The first conv's input is the batch itself, which the caller holds
 * through the step: it is saved borrowed (0 bytes). A stage's first conv
 * reads the pooled map, saved declared derived from the pool (its input,
 * the activation's saved output, at the saved argmax): "invert" then
 * stores nothing for it and gathers it back at restore.
 * With convs in a row, conv input l+1 is z_l = act(bn(conv_l(x_l))): it is
 * saved declared derived from x_l and the BatchNorm statistics (the
 * forward's own ops replayed, bit for bit), which x_l's own relation or
 * borrow makes free to hold; so "invert" stores nothing for it either and
 * a stage keeps only its top activation. With invert's DERIVED field set
 * to solve, z_l is rebuilt by inversion from y_{l+1} instead (frames).
 */
#include "layers/model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/try.h"

#define MAXL 16

struct cnn;
/* The relation of a stage's inner conv input: the output of conv li (with
 * its BatchNorm and activation), from that conv's input and statistics. */
typedef struct cnn_regen {
    struct cnn *m;
    int li;
    as_handle in[2];   /* conv li's input, BatchNorm li's statistics */
} cnn_regen;

typedef struct cnn {
    as_nn_model base;
    as_nn_cnn_cfg cfg;
    int nconv;
    as_nn_conv conv[MAXL];
    as_nn_bnorm bn[MAXL];
    as_nn_act act[MAXL];
    int stage_of[MAXL];
    as_nn_pool pool[4];
    as_nn_linear head;
    as_nn_xent loss;
    int B, Hs[MAXL], feat;
    int32_t *labels;
    float *aff[MAXL];     /* leaky + BN chain: (scale, shift) per channel */
    cnn_regen regen[MAXL];
    as_nn_ctx *ctx;       /* of the step: work space of the relations */
    as_op_layout lay;     /* of the step's activations past the first conv */
} cnn;

static int act_alloc(as_nn_ctx *c, size_t n, uint16_t id, as_block *b)
{
    return as_nn_alloc(c, n * sizeof(float), AS_TAG_ACTIVATIONS, id, false, b);
}

static int grad_alloc(as_nn_ctx *c, size_t n, uint16_t id, as_block *b)
{
    return as_nn_alloc(c, n * sizeof(float), AS_TAG_WORKSPACE, id, false, b);
}

/* LeakyReLU in place on y (described by t), saving its output with `src`
 * as its source through `src_fn` (as as_nn_act_fwd does, plus the
 * relation). */
static int leaky_fwd_chained(as_nn_ctx *c, as_nn_act *l, const as_tensor *t,
                             as_handle src)
{
    l->ndim = t->ndim;
    l->n = 1;
    for (int i = 0; i < t->ndim; i++) {
        l->shape[i] = t->shape[i];
        l->n *= (size_t)t->shape[i];
    }
    as_op_leaky_fwd(l->n, l->alpha, t->data, t->data);
    as_save_info info = {.kind = AS_KIND_ACTIVATION_OUTPUT, .layer = l->name,
                         .source = src};
    info.meta.act = (as_elementwise){.fn = AS_FN_LEAKY_RELU, .alpha = l->alpha};
    info.source_fn = info.meta.act;
    return as_nn_save(c, &info, t, &l->h);
}

/* Whether the one policy term [q, end) (name and arguments, no fallback)
 * reads tensors in any layout: the byte-keeping and elementwise policies,
 * and invert deriving its inputs from the model's relations (which run in
 * either layout; an input it would solve falls back on a blocked tensor,
 * so invert::::solve runs NCHW). */
static bool term_layout_free(const char *q, const char *end)
{
    static const char *const ok[] = {"keep", "borrow", "sign", "fewbit", "bitpack",
                                     "zstd", "fp16", "bf16", "offload"};
    const size_t n = strcspn(q, ":|; \t");
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        if (n == strlen(ok[i]) && !strncmp(q, ok[i], n))
            return true;
    if (n != 6 || strncmp(q, "invert", 6))
        return false;
    for (const char *a = q; a + 5 <= end; a++)
        if (!strncmp(a, "solve", 5))
            return false;
    return true;
}

bool as_nn_cnn_layout_free(const char *spec)
{
    const char *p = spec;
    while (*p) {
        const char *end = p + strcspn(p, ";");
        const char *eq = memchr(p, '=', (size_t)(end - p));
        for (const char *q = eq ? eq + 1 : end; q < end;) {
            q += strspn(q, " \t");
            const char *bar = memchr(q, '|', (size_t)(end - q));
            if (!term_layout_free(q, bar ? bar : end))
                return false;
            q = bar ? bar + 1 : end;
        }
        p = *end ? end + 1 : end;
    }
    return true;
}

/* BatchNorm's output b = a*y + bb as an item whose source is y (affine),
 * for the chain; the model keeps (a, bb) valid until the step ends. */
static int bn_link(as_nn_ctx *c, cnn *m, int li, int N, int H, const float *b,
                   as_handle *hb)
{
    as_nn_bnorm *bn = &m->bn[li];
    *hb = AS_HANDLE_NULL;
    if (as_handle_is_null(bn->hstat) || as_handle_is_null(bn->hx))
        return 0;   /* no-grad */
    const void *stv;
    int rc = as_nn_view(c, bn->hstat, bn->name, &stv);
    if (rc)
        return rc;
    const float *mean = stv, *invstd = (const float *)stv + bn->C;
    float *a = m->aff[li], *bb = a + bn->C;
    as_op_batchnorm_affine(bn->C, mean, invstd, AS_NN_F(bn->g->w),
                           AS_NN_F(bn->b->w), a, bb);
    as_save_info info = {.kind = AS_KIND_ACTIVATION_INPUT, .layer = m->act[li].name,
                         .source = bn->hx};
    info.meta.act = (as_elementwise){.fn = AS_FN_AFFINE, .scale = a, .shift = bb,
                                     .channels = bn->C, .inner = (int64_t)H * H};
    info.source_fn = info.meta.act;
    as_tensor t = AS_NN_T(b, AS_F32, N, bn->C, H, H);
    return as_nn_save(c, &info, &t, hb);
}

/* Recompute callback of an inner conv input: inputs x (f32 (N, Cin, H, W),
 * conv li's input) and, with BatchNorm, its statistics (f32 (2, C)); out
 * f32 (N, C, H, W) = act(bn(conv(x))) by the forward's ops, in its order. */
static int inner_regen(void *ud, const as_tensor *const *in, size_t n, as_tensor *out)
{
    const cnn_regen *r = ud;
    cnn *m = r->m;
    const as_nn_conv *cv = &m->conv[r->li];
    const as_op_conv_geom g = cv->g;
    const size_t nin = m->cfg.batchnorm ? 2 : 1;
    if (n != nin || in[0]->dtype != AS_F32 || out->dtype != AS_F32)
        return AS_ESHAPE;
    const as_tensor wx = as_nn_image(NULL, AS_F32, cv->in_layout, g.N, g.Cin, g.H, g.W);
    const as_tensor wy = as_nn_image(NULL, AS_F32, cv->out_layout, g.N, g.Cout, g.Ho, g.Wo);
    if (in[0]->ndim != wx.ndim || out->ndim != wy.ndim ||
        memcmp(in[0]->shape, wx.shape, sizeof(int64_t) * (size_t)wx.ndim) ||
        memcmp(out->shape, wy.shape, sizeof(int64_t) * (size_t)wy.ndim))
        return AS_ESHAPE;
    if (nin == 2 && (in[1]->dtype != AS_F32 || as_tensor_numel(in[1]) != 2 * (int64_t)g.Cout))
        return AS_ESHAPE;
    const bool blk = cv->out_layout == AS_OP_BLK16;
    as_block ws;
    size_t wsn = blk ? as_op_conv_workspace_blk(&g, cv->in_layout) : as_op_conv_workspace(&g);
    int rc = as_nn_alloc(m->ctx, wsn * sizeof(float), AS_TAG_WORKSPACE, cv->id, false, &ws);
    if (rc)
        return rc;
    float *y = out->data;
    const float *W = AS_NN_F(cv->W->w), *b = cv->b ? AS_NN_F(cv->b->w) : NULL;
    if (blk)
        as_op_conv_fwd_blk(&g, cv->in_layout, in[0]->data, W, b, y, AS_NN_F(ws));
    else
        as_op_conv_fwd(&g, in[0]->data, W, b, y, AS_NN_F(ws));
    as_nn_free(m->ctx, &ws);
    const int hw = g.Ho * g.Wo;
    if (nin == 2) {
        const as_nn_bnorm *bn = &m->bn[r->li];
        const float *st = in[1]->data;
        (blk ? as_op_batchnorm_apply_blk : as_op_batchnorm_apply)(
            g.N, g.Cout, hw, st, st + g.Cout, AS_NN_F(bn->g->w), AS_NN_F(bn->b->w), y, y);
    }
    as_op_leaky_fwd((size_t)as_tensor_numel(out), m->act[r->li].alpha, y, y);
    return 0;
}

/* Declare conv li's input (the output of conv li-1's stage) derived, when
 * the tensors it is rebuilt from are saved. */
static void inner_declare(cnn *m, int li)
{
    as_nn_conv *cv = &m->conv[li];
    cnn_regen *r = &m->regen[li];
    r->m = m;
    r->li = li - 1;
    r->in[0] = m->conv[li - 1].hx;
    r->in[1] = m->cfg.batchnorm ? m->bn[li - 1].hstat : AS_HANDLE_NULL;
    const size_t n = m->cfg.batchnorm ? 2 : 1;
    bool ok = m->act[li - 1].fn != AS_FN_GELU;
    for (size_t i = 0; i < n; i++)
        ok &= !as_handle_is_null(r->in[i]);
    cv->in_fn = ok ? inner_regen : NULL;
    cv->in_ud = r;
    cv->in_inputs = r->in;
    cv->in_ninputs = n;
}

/* The step's layout, and whether to make the BatchNorm link (it costs a
 * transient copy of b per layer: only when the rules can use it,
 * activation_input=inverse), both from the store's rules. */
static void step_plan(cnn *m, as_nn_ctx *c, bool *bn_chain)
{
    *bn_chain = false;
    bool blk = m->cfg.layout == AS_OP_BLK16 && as_op_get_backend() == AS_OP_ONEDNN;
    const bool link = m->cfg.act_fn == AS_FN_LEAKY_RELU && m->cfg.batchnorm && c->training;
    as_store_stats st;
    if (c->store && (blk || link) && as_store_stats_take(c->store, &st) == 0) {
        *bn_chain = link && strstr(st.spec, "activation_input=inverse");
        blk &= as_nn_cnn_layout_free(st.spec);
        as_store_stats_free(&st);
    }
    m->lay = blk ? AS_OP_BLK16 : AS_OP_NCHW;
    for (int li = 0; li < m->nconv; li++) {
        m->conv[li].in_layout = li ? m->lay : AS_OP_NCHW;
        m->conv[li].out_layout = m->bn[li].layout = m->lay;
    }
    for (int s = 0; s < m->cfg.nstages; s++)
        m->pool[s].layout = m->lay;
}

/* The head's input: the last pooled map, as NCHW (the linear's feature
 * order) when the step runs blocked. */
static int head_in(cnn *m, as_nn_ctx *c, int N, int C, int H, as_block *cur)
{
    if (m->lay == AS_OP_NCHW)
        return 0;
    as_block t;
    AS_TRY_RETURN(act_alloc(c, (size_t)N * C * H * H, m->head.id, &t));
    as_op_blk_to_nchw(N, C, H, H, AS_NN_F(*cur), AS_NN_F(t));
    as_nn_free(c, cur);
    *cur = t;
    return 0;
}

static int cnn_forward(as_nn_model *m_, as_nn_ctx *c, const as_nn_batch *bt,
                       double *loss, int *ncorrect)
{
    cnn *m = (cnn *)m_;
    const int N = bt->B;
    int rc = 0, H = 28, Cc = 1, li = 0;
    m->B = N;
    m->ctx = c;
    bool bn_chain;
    step_plan(m, c, &bn_chain);
    const as_op_layout lay = m->lay;
    as_block cur = {0}, y = {0}, z = {0};
    const float *in = bt->x;
    as_handle in_h = AS_HANDLE_NULL;
    for (int s = 0; s < m->cfg.nstages; s++) {
        for (int k = 0; k < m->cfg.convs; k++, li++) {
            const int Co = m->cfg.widths[s];
            const size_t n = as_op_image_numel(lay, N, Co, H, H);
            m->Hs[li] = H;
            AS_TRY(act_alloc(c, n, m->conv[li].id, &y));
            if (k > 0)
                inner_declare(m, li);
            AS_TRY(as_nn_conv_fwd(c, &m->conv[li], N, H, H, in, in_h, AS_NN_F(y)));
            as_nn_free(c, &cur);
            if (m->cfg.batchnorm) {
                AS_TRY(act_alloc(c, n, m->bn[li].id, &z));
                AS_TRY(as_nn_bnorm_fwd(c, &m->bn[li], N, H, H, AS_NN_F(y),
                                    m->conv[li].hy, AS_NN_F(z)));
                as_nn_free(c, &y);
                y = z;
                z = (as_block){0};
            }
            /* activation in place: its saved output is the next input */
            const as_tensor at = as_nn_image(AS_NN_F(y), AS_F32, lay, N, Co, H, H);
            if (m->cfg.act_fn == AS_FN_LEAKY_RELU && c->training) {
                as_handle src = m->conv[li].hy, hb = AS_HANDLE_NULL;
                if (m->cfg.batchnorm) {
                    if (bn_chain)
                        AS_TRY(bn_link(c, m, li, N, H, AS_NN_F(y), &hb));
                    src = hb;
                }
                rc = leaky_fwd_chained(c, &m->act[li], &at, src);
                as_nn_release(c, &hb);
                if (rc)
                    goto out;
            } else {
                AS_TRY(as_nn_act_fwd(c, &m->act[li], at.ndim, at.shape, AS_NN_F(y),
                                     AS_NN_F(y)));
            }
            cur = y;
            y = (as_block){0};
            in = AS_NN_F(cur);
            in_h = m->act[li].h;
            Cc = Co;
        }
        const int Ho = H / 2;
        AS_TRY(act_alloc(c, as_op_image_numel(lay, N, Cc, Ho, Ho), m->pool[s].id, &y));
        AS_TRY(as_nn_pool_fwd(c, &m->pool[s], N, Cc, H, H, in, in_h, AS_NN_F(y)));
        as_nn_free(c, &cur);
        cur = y;
        y = (as_block){0};
        in = AS_NN_F(cur);
        in_h = AS_HANDLE_NULL;
        H = Ho;
    }
    AS_TRY(head_in(m, c, N, Cc, H, &cur));
    AS_TRY(act_alloc(c, (size_t)N * 10, m->head.id, &y));
    AS_TRY(as_nn_linear_fwd(c, &m->head, N, AS_NN_F(cur), AS_NN_F(y)));
    as_nn_free(c, &cur);
    AS_TRY(as_nn_xent_fwd(c, &m->loss, N, 10, AS_NN_F(y), bt->y, loss, ncorrect));
out:
    AS_NN_FREE(c, &cur, &y, &z);
    return rc;
}

static int cnn_backward(as_nn_model *m_, as_nn_ctx *c)
{
    cnn *m = (cnn *)m_;
    const int N = m->B;
    int rc = 0;
    as_block d = {0}, dn = {0};
    const as_op_layout lay = m->lay;
    AS_TRY(as_nn_head_bwd(c, &m->loss, &m->head, m->loss.id, &d));
    if (lay == AS_OP_BLK16) {   /* the head's input gradient, to the pool's layout */
        const as_nn_pool *p = &m->pool[m->cfg.nstages - 1];
        const int Ho = p->H / p->k;
        AS_TRY(grad_alloc(c, as_op_image_numel(lay, N, p->C, Ho, Ho), m->head.id, &dn));
        as_op_nchw_to_blk(N, p->C, Ho, Ho, AS_NN_F(d), AS_NN_F(dn));
        as_nn_free(c, &d);
        d = dn;
        dn = (as_block){0};
    }
    int li = m->nconv - 1;
    for (int s = m->cfg.nstages - 1; s >= 0; s--) {
        as_nn_pool *p = &m->pool[s];
        AS_TRY(grad_alloc(c, as_op_image_numel(lay, N, p->C, p->H, p->W), p->id, &dn));
        AS_TRY(as_nn_pool_bwd(c, p, AS_NN_F(d), AS_NN_F(dn)));
        as_nn_free(c, &d);
        d = dn;
        dn = (as_block){0};
        for (int k = m->cfg.convs - 1; k >= 0; k--, li--) {
            as_nn_conv *cv = &m->conv[li];
            AS_TRY(as_nn_act_bwd(c, &m->act[li], AS_NN_F(d), AS_NN_F(d)));
            if (m->cfg.batchnorm)  /* in place: dx may not alias dy, so swap */
            {
                AS_TRY(grad_alloc(c, as_op_image_numel(lay, N, cv->g.Cout, m->Hs[li],
                                                       m->Hs[li]), m->bn[li].id, &dn));
                AS_TRY(as_nn_bnorm_bwd(c, &m->bn[li], AS_NN_F(d), AS_NN_F(dn)));
                as_nn_free(c, &d);
                d = dn;
                dn = (as_block){0};
            }
            if (li > 0)
                AS_TRY(grad_alloc(c, as_op_image_numel(lay, N, cv->g.Cin, m->Hs[li],
                                                       m->Hs[li]), cv->id, &dn));
            AS_TRY(as_nn_conv_bwd(c, cv, AS_NN_F(d), li > 0 ? AS_NN_F(dn) : NULL));
            as_nn_free(c, &d);
            d = dn;
            dn = (as_block){0};
        }
    }
out:
    AS_NN_FREE(c, &d, &dn);
    return rc;
}

static void cnn_destroy(as_nn_model *m_, as_nn_ctx *c)
{
    cnn *m = (cnn *)m_;
    for (int i = 0; i < m->nconv; i++) {
        as_nn_bnorm_fini(c, &m->bn[i]);
        free(m->aff[i]);
    }
    as_nn_params_free(c, &m->base.params);
    free(m->base.bufs);
    free(m);
}

int as_nn_cnn_layout(const as_nn_cnn_cfg *cfg, as_op_layout *out)
{
    const char *env = getenv("AS_LAYOUT");
    *out = cfg->layout;
    if (!env || !*env)
        return 0;
    if (strcmp(env, "blocked") && strcmp(env, "nchw"))
        return AS_EINVAL;
    *out = strcmp(env, "blocked") ? AS_OP_NCHW : AS_OP_BLK16;
    return 0;
}

int as_nn_cnn_create(as_nn_ctx *c, const as_nn_cnn_cfg *cfg, uint64_t seed,
                     as_nn_model **out)
{
    *out = NULL;
    if (cfg->nstages < 1 || cfg->nstages > 4 || cfg->convs < 1 ||
        cfg->nstages * cfg->convs > MAXL)
        return as_nn_fail(c, AS_EINVAL, "cnn: 1..4 stages of 1..%d convs",
                          MAXL / 4);
    as_op_layout lay;
    if (as_nn_cnn_layout(cfg, &lay))
        return as_nn_fail(c, AS_EINVAL, "AS_LAYOUT=%s: expected blocked or nchw",
                          getenv("AS_LAYOUT"));
    cnn *m = calloc(1, sizeof *m);
    if (!m)
        return as_nn_fail(c, AS_ENOMEM, "cnn");
    m->base.kind = "cnn";
    m->base.forward = cnn_forward;
    m->base.backward = cnn_backward;
    m->base.destroy = cnn_destroy;
    m->cfg = *cfg;
    m->cfg.layout = lay;
    uint64_t rng = seed;
    int rc = 0, cin = 1, H = 28, li = 0;
    char name[64];
    for (int s = 0; s < cfg->nstages; s++) {
        int w = cfg->widths[s];
        if (w < cin) {
            rc = as_nn_fail(c, AS_EINVAL, "cnn: stage %d width %d < %d (need "
                            "Cout >= Cin)", s, w, cin);
            goto out;
        }
        for (int k = 0; k < cfg->convs; k++, li++) {
            snprintf(name, sizeof name, "stages.%d.conv%d", s, k);
            AS_TRY(as_nn_conv_init(c, &m->base.params, &m->conv[li], name, cin, w,
                                3, 1, 1, !cfg->batchnorm, &rng));
            m->conv[li].input_held = li == 0;   /* the batch, held by the caller */
            if (s > 0 && k == 0)   /* a pooled map, derivable from the pool */
                m->conv[li].in_pool = &m->pool[s - 1];
            if (cfg->batchnorm) {
                snprintf(name, sizeof name, "stages.%d.bn%d", s, k);
                AS_TRY(as_nn_bnorm_init(c, &m->base.params, &m->bn[li], name, w));
                if (cfg->act_fn == AS_FN_LEAKY_RELU &&
                    !(m->aff[li] = malloc(sizeof(float) * 2 * (size_t)w))) {
                    rc = as_nn_fail(c, AS_ENOMEM, "cnn: BN affine");
                    goto out;
                }
            }
            snprintf(name, sizeof name, "stages.%d.act%d", s, k);
            as_nn_act_init(c, &m->act[li], name, cfg->act_fn, cfg->alpha);
            m->stage_of[li] = s;
            cin = w;
        }
        m->nconv = li;
        snprintf(name, sizeof name, "stages.%d.pool", s);
        as_nn_pool_init(c, &m->pool[s], name, true, 2);
        H /= 2;
    }
    m->feat = cin * H * H;
    AS_TRY(as_nn_linear_init(c, &m->base.params, &m->head, "head", m->feat, 10,
                          true, &rng));
    as_nn_xent_init(c, &m->loss, "loss");
    if (cfg->batchnorm) {
        m->base.bufs = calloc((size_t)2 * m->nconv, sizeof *m->base.bufs);
        if (!m->base.bufs) {
            rc = as_nn_fail(c, AS_ENOMEM, "cnn: buffer list");
            goto out;
        }
        for (int i = 0; i < m->nconv; i++) {
            m->base.bufs[m->base.nbufs++] =
                (as_nn_buf){AS_NN_F(m->bn[i].run_mean), (size_t)m->bn[i].C};
            m->base.bufs[m->base.nbufs++] =
                (as_nn_buf){AS_NN_F(m->bn[i].run_var), (size_t)m->bn[i].C};
        }
    }
out:
    if (rc) {
        cnn_destroy(&m->base, c);
        return rc;
    }
    *out = &m->base;
    return 0;
}

/*
 * Layers of the reference framework (see nn.h): forward computes with the
 * kernels of ops.h and saves exactly what backward needs through the store;
 * backward restores, computes and releases.
 */
#include "layers/nn.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "util/try.h"

static void set_name(as_nn_ctx *c, char *dst, uint16_t *id, const char *name)
{
    snprintf(dst, 64, "%s", name);
    *id = as_nn_layer_id(c, name);
}

static char *pname(char *buf, const char *layer, const char *what)
{
    snprintf(buf, 64, "%s.%s", layer, what);
    return buf;
}

/* ---- linear ------------------------------------------------------------ */

int as_nn_linear_init(as_nn_ctx *c, as_nn_params *ps, as_nn_linear *l,
                      const char *name, int in, int out, bool bias,
                      uint64_t *rng)
{
    char b[64];
    memset(l, 0, sizeof *l);
    set_name(c, l->name, &l->id, name);
    l->in = in;
    l->out = out;
    /* uniform with the variance of Kaiming-normal for fan_in */
    float s = sqrtf(3.0f / (float)in);
    AS_TRY_RETURN(as_nn_param_new(c, ps, pname(b, name, "weight"), l->id,
                        (size_t)in * out, s, 0, true, rng, &l->W));
    if (bias)
        AS_TRY_RETURN(as_nn_param_new(c, ps, pname(b, name, "bias"), l->id, (size_t)out,
                            0, 0.0f, false, rng, &l->b));
    return 0;
}

int as_nn_linear_fwd(as_nn_ctx *c, as_nn_linear *l, int N, const float *x,
                     float *y)
{
    return as_nn_linear_fwd_alias(c, l, N, x, AS_HANDLE_NULL, y);
}

int as_nn_linear_fwd_alias(as_nn_ctx *c, as_nn_linear *l, int N,
                           const float *x, as_handle x_saved, float *y)
{
    l->N = N;
    as_op_linear_fwd(N, l->in, l->out, x, AS_NN_F(l->W->w),
                     l->b ? AS_NN_F(l->b->w) : NULL, y);
    as_save_info info = {.kind = AS_KIND_LINEAR_INPUT, .layer = l->name,
                         .alias_of = x_saved};
    as_tensor t = AS_NN_T(x, AS_F32, N, l->in);
    return as_nn_save(c, &info, &t, &l->hx);
}

/* Rows of x restored per block when the saved input is not held in place:
 * a block of about 128 KiB keeps the dW GEMM efficient. */
static int linear_block_rows(int N, int in)
{
    int rb = (int)((128u << 10) / (sizeof(float) * (unsigned)(in > 0 ? in : 1)));
    rb = rb < 16 ? 16 : rb;
    return rb < N ? rb : (N > 0 ? N : 1);
}

int as_nn_linear_bwd(as_nn_ctx *c, as_nn_linear *l, const float *dy,
                     float *dx)
{
    int in_place = as_nn_in_place(c, l->hx, l->name);
    if (in_place < 0)
        return in_place;
    float *dW = AS_NN_F(l->W->g), *db = l->b ? AS_NN_F(l->b->g) : NULL;
    const float *W = AS_NN_F(l->W->w);
    if (in_place) {
        const void *x;
        AS_TRY_RETURN(as_nn_view(c, l->hx, l->name, &x));
        as_nn_report_grad(c, l->hx, dy, (size_t)l->N * l->out);
        as_op_linear_bwd(l->N, l->in, l->out, x, W, dy, dx, dW, db);
        as_nn_release(c, &l->hx);
        return 0;
    }
    /* Decoded input: stream x in row blocks into a small workspace and
     * accumulate dW block by block (dx and db do not need x), so the whole
     * decoded tensor is never materialized. */
    as_nn_report_grad(c, l->hx, dy, (size_t)l->N * l->out);
    as_op_linear_bwd(l->N, l->in, l->out, NULL, W, dy, dx, NULL, db);
    int rb = linear_block_rows(l->N, l->in);
    as_block ws;
    AS_TRY_RETURN(as_nn_alloc(c, (size_t)rb * l->in * sizeof(float),
                              AS_TAG_WORKSPACE, l->id, false, &ws));
    int rc = 0;
    for (int r0 = 0; r0 < l->N && rc == 0; r0 += rb) {
        int n = l->N - r0 < rb ? l->N - r0 : rb;
        rc = as_nn_rows(c, l->hx, r0, n, AS_NN_F(ws));
        if (rc == 0)
            as_op_linear_bwd(n, l->in, l->out, AS_NN_F(ws), W,
                             dy + (size_t)r0 * l->out, NULL, dW, NULL);
    }
    as_nn_free(c, &ws);
    if (rc)
        return rc;
    as_nn_release(c, &l->hx);
    return 0;
}

/* ---- conv2d ------------------------------------------------------------ */

int as_nn_conv_init(as_nn_ctx *c, as_nn_params *ps, as_nn_conv *l,
                    const char *name, int Cin, int Cout, int k, int stride,
                    int pad, bool bias, uint64_t *rng)
{
    char b[64];
    memset(l, 0, sizeof *l);
    set_name(c, l->name, &l->id, name);
    l->g = (as_op_conv_geom){.Cin = Cin, .Cout = Cout, .kh = k, .kw = k,
                             .stride = stride, .pad = pad};
    l->save_output = true;
    float s = sqrtf(6.0f / (float)(Cin * k * k));  /* He uniform */
    AS_TRY_RETURN(as_nn_param_new(c, ps, pname(b, name, "weight"), l->id,
                        (size_t)Cout * Cin * k * k, s, 0, true, rng, &l->W));
    if (bias)
        AS_TRY_RETURN(as_nn_param_new(c, ps, pname(b, name, "bias"), l->id,
                            (size_t)Cout, 0, 0.0f, false, rng, &l->b));
    return 0;
}

/* Workspace floats of the conv's kernels in its layouts. */
static size_t conv_ws(const as_nn_conv *l)
{
    return l->out_layout == AS_OP_BLK16 ? as_op_conv_workspace_blk(&l->g, l->in_layout)
                                        : as_op_conv_workspace(&l->g);
}

int as_nn_conv_fwd(as_nn_ctx *c, as_nn_conv *l, int N, int H, int W,
                   const float *x, as_handle x_saved, float *y)
{
    as_op_conv_geom *g = &l->g;
    g->N = N;
    g->H = H;
    g->W = W;
    if (as_op_conv_geom_init(g) != 0)
        return as_nn_fail(c, AS_ESHAPE, "%s: bad geometry %dx%d", l->name, H, W);
    const bool blk = l->out_layout == AS_OP_BLK16;
    if (!blk && l->in_layout != AS_OP_NCHW)
        return as_nn_fail(c, AS_EINVAL, "%s: blocked input needs a blocked output",
                          l->name);
    as_block ws;
    AS_TRY_RETURN(as_nn_alloc(c, conv_ws(l) * sizeof(float), AS_TAG_WORKSPACE,
                              l->id, false, &ws));
    const float *Wt = AS_NN_F(l->W->w), *bt = l->b ? AS_NN_F(l->b->w) : NULL;
    if (blk)
        as_op_conv_fwd_blk(g, l->in_layout, x, Wt, bt, y, AS_NN_F(ws));
    else
        as_op_conv_fwd(g, x, Wt, bt, y, AS_NN_F(ws));
    as_nn_free(c, &ws);
    /* The output first (inversion rebuilds x from it), then the input with
     * everything a regenerator needs: geometry, weights and version. */
    if (l->save_output) {
        as_save_info oi = {.kind = AS_KIND_CONV_OUTPUT, .layer = l->name};
        as_tensor ot = as_nn_image(y, AS_F32, l->out_layout, N, g->Cout, g->Ho, g->Wo);
        AS_TRY_RETURN(as_nn_save(c, &oi, &ot, &l->hy));
    }
    as_save_info info = {.kind = AS_KIND_CONV_INPUT, .layer = l->name,
                         .alias_of = x_saved,
                         .borrow = l->input_held && as_handle_is_null(x_saved)};
    if (l->in_pool && as_handle_is_null(x_saved) && !info.borrow) {
        as_nn_pool_derivation(l->in_pool, &info);
    } else if (l->in_fn && !info.borrow) {
        info.recompute = l->in_fn;
        info.recompute_ud = l->in_ud;
        info.recompute_inputs = l->in_inputs;
        info.recompute_ninputs = l->in_ninputs;
    }
    info.meta.conv = (as_conv_meta){
        .n = N, .cin = g->Cin, .h = H, .w = W, .cout = g->Cout, .kh = g->kh,
        .kw = g->kw, .stride_h = g->stride, .stride_w = g->stride,
        .pad_h = g->pad, .pad_w = g->pad, .dil_h = 1, .dil_w = 1, .groups = 1,
        .weight = AS_NN_F(l->W->w), .bias = l->b ? AS_NN_F(l->b->w) : NULL,
        .weight_version = l->W->version, .output = l->hy};
    as_tensor t = as_nn_image(x, AS_F32, l->in_layout, N, g->Cin, H, W);
    return as_nn_save(c, &info, &t, &l->hx);
}

int as_nn_conv_bwd(as_nn_ctx *c, as_nn_conv *l, const float *dy, float *dx)
{
    const void *x;
    AS_TRY_RETURN(as_nn_view(c, l->hx, l->name, &x));
    as_nn_report_grad(c, l->hx, dy,
                      as_op_image_numel(l->out_layout, l->g.N, l->g.Cout, l->g.Ho,
                                        l->g.Wo));
    as_block ws;
    AS_TRY_RETURN(as_nn_alloc(c, conv_ws(l) * sizeof(float), AS_TAG_WORKSPACE,
                              l->id, false, &ws));
    float *dW = AS_NN_F(l->W->g), *db = l->b ? AS_NN_F(l->b->g) : NULL;
    if (l->out_layout == AS_OP_BLK16)
        as_op_conv_bwd_blk(&l->g, l->in_layout, x, AS_NN_F(l->W->w), dy, dx, dW,
                           db, AS_NN_F(ws));
    else
        as_op_conv_bwd(&l->g, x, AS_NN_F(l->W->w), dy, dx, dW, db, AS_NN_F(ws));
    as_nn_free(c, &ws);
    as_nn_release(c, &l->hx);
    as_nn_release(c, &l->hy);
    return 0;
}

/* A normalization's affine: weight (gamma, ones) and bias (beta, zeros). */
static int norm_affine_new(as_nn_ctx *c, as_nn_params *ps, const char *name,
                           uint16_t id, int C, as_nn_param **g, as_nn_param **b)
{
    char buf[64];
    AS_TRY_RETURN(as_nn_param_new(c, ps, pname(buf, name, "weight"), id, (size_t)C, 0,
                                  1.0f, false, NULL, g));
    return as_nn_param_new(c, ps, pname(buf, name, "bias"), id, (size_t)C, 0,
                           0.0f, false, NULL, b);
}

/* ---- BatchNorm --------------------------------------------------------- */

int as_nn_bnorm_init(as_nn_ctx *c, as_nn_params *ps, as_nn_bnorm *l,
                     const char *name, int C)
{
    memset(l, 0, sizeof *l);
    set_name(c, l->name, &l->id, name);
    l->C = C;
    l->eps = 1e-5f;
    l->momentum = 0.1f;
    AS_TRY_RETURN(norm_affine_new(c, ps, name, l->id, C, &l->g, &l->b));
    AS_TRY_RETURN(as_nn_alloc(c, sizeof(float) * C, AS_TAG_WEIGHTS, l->id, true,
                    &l->run_mean));
    AS_TRY_RETURN(as_nn_alloc(c, sizeof(float) * C, AS_TAG_WEIGHTS, l->id, false,
                    &l->run_var));
    for (int i = 0; i < C; i++)
        AS_NN_F(l->run_var)[i] = 1.0f;
    return 0;
}

void as_nn_bnorm_fini(as_nn_ctx *c, as_nn_bnorm *l)
{
    as_nn_free(c, &l->run_mean);
    as_nn_free(c, &l->run_var);
}

int as_nn_bnorm_fwd(as_nn_ctx *c, as_nn_bnorm *l, int N, int H, int W,
                    const float *x, as_handle x_saved, float *y)
{
    const int HW = H * W;
    l->N = N;
    l->HW = HW;
    float stat[2 * 1024];
    if (l->C > 1024)
        return as_nn_fail(c, AS_ERANGE, "%s: more than 1024 channels", l->name);
    (l->layout == AS_OP_BLK16 ? as_op_batchnorm_fwd_blk : as_op_batchnorm_fwd)(
        N, l->C, HW, l->eps, c->training, l->momentum, x, AS_NN_F(l->g->w),
        AS_NN_F(l->b->w), AS_NN_F(l->run_mean), AS_NN_F(l->run_var), stat,
        stat + l->C, y);
    as_save_info info = {.kind = AS_KIND_NORM_INPUT, .layer = l->name,
                         .alias_of = x_saved};
    as_tensor t = as_nn_image(x, AS_F32, l->layout, N, l->C, H, W);
    AS_TRY_RETURN(as_nn_save(c, &info, &t, &l->hx));
    as_save_info si = {.kind = AS_KIND_GENERIC, .layer = l->name};
    as_tensor st = AS_NN_T(stat, AS_F32, 2, l->C);
    return as_nn_save(c, &si, &st, &l->hstat);
}

int as_nn_bnorm_bwd(as_nn_ctx *c, as_nn_bnorm *l, const float *dy, float *dx)
{
    const void *x, *st;
    AS_TRY_RETURN(as_nn_view(c, l->hx, l->name, &x));
    AS_TRY_RETURN(as_nn_view(c, l->hstat, l->name, &st));
    const float *s = st;
    as_nn_report_grad(c, l->hx, dy, as_op_image_numel(l->layout, l->N, l->C, l->HW, 1));
    (l->layout == AS_OP_BLK16 ? as_op_batchnorm_bwd_blk : as_op_batchnorm_bwd)(
        l->N, l->C, l->HW, x, AS_NN_F(l->g->w), s, s + l->C, dy, dx,
        AS_NN_F(l->g->g), AS_NN_F(l->b->g));
    as_nn_release(c, &l->hx);
    as_nn_release(c, &l->hstat);
    return 0;
}

/* ---- LayerNorm --------------------------------------------------------- */

int as_nn_layernorm_init(as_nn_ctx *c, as_nn_params *ps, as_nn_layernorm *l,
                         const char *name, int C)
{
    memset(l, 0, sizeof *l);
    set_name(c, l->name, &l->id, name);
    l->C = C;
    l->save_output = true;
    l->min_gamma_ratio = 1.0f / 32.0f;
    return norm_affine_new(c, ps, name, l->id, C, &l->g, &l->b);
}

/* Can xhat be rebuilt from y = xhat * gamma + beta? Every gamma nonzero,
 * finite and within min_ratio of the largest (a lossy code of y has one
 * step per row: a small gamma would magnify it), and |beta| <= 64 |gamma|
 * (y's rounding is relative to |beta|, the rebuilt xhat's to |gamma|). */
static bool ln_affine_invertible(const as_nn_layernorm *l)
{
    const float *g = AS_NN_F(l->g->w), *b = AS_NN_F(l->b->w);
    float gmax = 0.0f;
    for (int k = 0; k < l->C; k++) {
        if (!isfinite(g[k]) || !isfinite(b[k]))
            return false;
        gmax = fmaxf(gmax, fabsf(g[k]));
    }
    float gmin = gmax * l->min_gamma_ratio;
    for (int k = 0; k < l->C; k++) {
        float a = fabsf(g[k]);
        if (a == 0.0f || a < gmin || a < 1e-30f || fabsf(b[k]) > 64.0f * a)
            return false;
    }
    return true;
}

int as_nn_layernorm_fwd(as_nn_ctx *c, as_nn_layernorm *l, int N,
                        const float *x, float *y)
{
    l->N = N;
    as_block sb;
    AS_TRY_RETURN(as_nn_alloc(c, sizeof(float) * 2 * (size_t)N, AS_TAG_WORKSPACE, l->id,
                    false, &sb));
    float *s = AS_NN_F(sb);
    as_op_layernorm_fwd(N, l->C, 1e-5f, x, AS_NN_F(l->g->w), AS_NN_F(l->b->w),
                        y, s, s + N);
    l->from_y = l->save_output && ln_affine_invertible(l);
    if (l->save_output && !l->from_y && c->training)
        l->fallbacks++;
    /* From y: the output (the next linear's input, saved as such so that
     * the linear's alias finds it under its own rule, no second encode)
     * and rstd; else the input and (mean, rstd). */
    as_save_info info = {.kind = l->from_y ? AS_KIND_LINEAR_INPUT
                                           : AS_KIND_NORM_INPUT,
                         .layer = l->name};
    as_tensor t = AS_NN_T(l->from_y ? y : x, AS_F32, N, l->C);
    int rc = as_nn_save(c, &info, &t, &l->hx);
    as_save_info si = {.kind = AS_KIND_GENERIC, .layer = l->name};
    as_tensor st = l->from_y ? AS_NN_T(s + N, AS_F32, N)
                             : AS_NN_T(s, AS_F32, 2, N);
    if (!rc)
        rc = as_nn_save(c, &si, &st, &l->hstat);
    as_nn_free(c, &sb);
    return rc;
}

as_handle as_nn_layernorm_out(const as_nn_layernorm *l)
{
    return l->from_y ? l->hx : AS_HANDLE_NULL;
}

int as_nn_layernorm_bwd(as_nn_ctx *c, as_nn_layernorm *l, const float *dy,
                        float *dx)
{
    const void *x, *st;
    AS_TRY_RETURN(as_nn_view(c, l->hx, l->name, &x));
    AS_TRY_RETURN(as_nn_view(c, l->hstat, l->name, &st));
    const float *s = st;
    as_nn_report_grad(c, l->hx, dy, (size_t)l->N * l->C);
    as_nn_report_grad(c, l->hstat, dy, (size_t)l->N * l->C);
    if (l->from_y)
        as_op_layernorm_bwd_y(l->N, l->C, x, AS_NN_F(l->g->w),
                              AS_NN_F(l->b->w), s, dy, dx, AS_NN_F(l->g->g),
                              AS_NN_F(l->b->g));
    else
        as_op_layernorm_bwd(l->N, l->C, x, AS_NN_F(l->g->w), s, s + l->N, dy,
                            dx, AS_NN_F(l->g->g), AS_NN_F(l->b->g));
    as_nn_release(c, &l->hx);
    as_nn_release(c, &l->hstat);
    return 0;
}

/* ---- activations -------------------------------------------------------- */

void as_nn_act_init(as_nn_ctx *c, as_nn_act *l, const char *name, int fn,
                    float alpha)
{
    memset(l, 0, sizeof *l);
    set_name(c, l->name, &l->id, name);
    l->fn = fn;
    l->alpha = fn == AS_FN_RELU ? 0.0f : alpha;
}

int as_nn_act_fwd(as_nn_ctx *c, as_nn_act *l, int ndim, const int64_t *shape,
                  const float *x, float *y)
{
    if (ndim < 1 || ndim > 5)
        return as_nn_fail(c, AS_ESHAPE, "%s: %d dims (1..5)", l->name, ndim);
    l->ndim = ndim;
    l->n = 1;
    for (int i = 0; i < ndim; i++) {
        l->shape[i] = shape[i];
        l->n *= (size_t)shape[i];
    }
    as_save_info info = {.layer = l->name};
    info.meta.act = (as_elementwise){.fn = l->fn, .alpha = l->alpha};
    as_tensor t = as_nn_tensor(NULL, AS_F32, ndim, shape);
    if (l->fn == AS_FN_GELU) {
        info.kind = AS_KIND_ACTIVATION_INPUT;   /* GELU' needs x */
        t.data = (void *)x;
        int rc = as_nn_save(c, &info, &t, &l->h);  /* before y may overwrite x */
        if (!rc)
            as_op_gelu_fwd(l->n, x, y);
        return rc;
    } else {
        as_op_leaky_fwd(l->n, l->alpha, x, y);
        info.kind = AS_KIND_ACTIVATION_OUTPUT;  /* sign of y is enough */
        t.data = y;
    }
    return as_nn_save(c, &info, &t, &l->h);
}

int as_nn_act_bwd(as_nn_ctx *c, as_nn_act *l, const float *dy, float *dx)
{
    as_nn_report_grad(c, l->h, dy, (size_t)l->n);
    AS_TRY_RETURN(as_nn_act_bwd_saved(c, l->h, l->fn, l->alpha, dy, dx));
    as_nn_release(c, &l->h);
    return 0;
}

/* ---- pooling ------------------------------------------------------------ */

void as_nn_pool_init(as_nn_ctx *c, as_nn_pool *l, const char *name, bool max,
                     int k)
{
    memset(l, 0, sizeof *l);
    set_name(c, l->name, &l->id, name);
    l->max = max;
    l->k = k;
}

int as_nn_pool_fwd(as_nn_ctx *c, as_nn_pool *l, int N, int C, int H, int W,
                   const float *x, as_handle x_saved, float *y)
{
    l->N = N; l->C = C; l->H = H; l->W = W;
    l->src[0] = x_saved;
    l->src[1] = AS_HANDLE_NULL;
    const bool blk = l->layout == AS_OP_BLK16;
    if (!l->max) {
        (blk ? as_op_avgpool_fwd_blk : as_op_avgpool_fwd)(N, C, H, W, l->k, x, y);
        return 0;   /* backward needs only the shape */
    }
    const int Ho = H / l->k, Wo = W / l->k;
    as_block ib;
    AS_TRY_RETURN(as_nn_alloc(c, as_op_image_numel(l->layout, N, C, Ho, Wo),
                              AS_TAG_WORKSPACE, l->id, false, &ib));
    (blk ? as_op_maxpool_fwd_blk : as_op_maxpool_fwd)(N, C, H, W, l->k, x, y, ib.ptr);
    as_save_info info = {.kind = AS_KIND_INDEX, .layer = l->name};
    as_tensor t = as_nn_image(ib.ptr, AS_U8, l->layout, N, C, Ho, Wo);
    int rc = as_nn_save(c, &info, &t, &l->hidx);
    as_nn_free(c, &ib);
    l->src[1] = l->hidx;
    return rc;
}

/* Recompute callback of a pooled map: inputs (x f32 (N, C, H, W), argmax
 * u8 (N, C, H/k, W/k)), out f32 (N, C, H/k, W/k); in the pool's layout
 * (blocked: 5-D, C counted in blocks). */
static int pool_regen(void *ud, const as_tensor *const *in, size_t n, as_tensor *out)
{
    const as_nn_pool *l = ud;
    const bool blk = l->layout == AS_OP_BLK16;
    const int nd = blk ? 5 : 4;
    if (n != 2 || in[0]->ndim != nd || in[0]->dtype != AS_F32 ||
        in[1]->dtype != AS_U8 || out->dtype != AS_F32 || out->ndim != nd ||
        as_tensor_numel(in[1]) != as_tensor_numel(out))
        return AS_ESHAPE;
    const int64_t *xs = in[0]->shape, *ys = out->shape;
    if (ys[0] != xs[0] || ys[1] != xs[1] || ys[2] != xs[2] / l->k ||
        ys[3] != xs[3] / l->k || (blk && (xs[4] != AS_OP_BLK || ys[4] != AS_OP_BLK)))
        return AS_ESHAPE;
    const int C = (int)xs[1] * (blk ? AS_OP_BLK : 1);
    (blk ? as_op_maxpool_gather_blk : as_op_maxpool_gather)(
        (int)xs[0], C, (int)xs[2], (int)xs[3], l->k, in[0]->data, in[1]->data,
        out->data);
    return 0;
}

bool as_nn_pool_derivation(as_nn_pool *l, as_save_info *info)
{
    if (!l->max || as_handle_is_null(l->src[0]) || as_handle_is_null(l->src[1]))
        return false;
    info->recompute = pool_regen;
    info->recompute_ud = l;
    info->recompute_inputs = l->src;
    info->recompute_ninputs = 2;
    return true;
}

int as_nn_pool_bwd(as_nn_ctx *c, as_nn_pool *l, const float *dy, float *dx)
{
    const bool blk = l->layout == AS_OP_BLK16;
    if (!l->max) {
        (blk ? as_op_avgpool_bwd_blk : as_op_avgpool_bwd)(l->N, l->C, l->H, l->W,
                                                         l->k, dy, dx);
        return 0;
    }
    const void *idx;
    AS_TRY_RETURN(as_nn_view(c, l->hidx, l->name, &idx));
    (blk ? as_op_maxpool_bwd_blk : as_op_maxpool_bwd)(l->N, l->C, l->H, l->W, l->k,
                                                     idx, dy, dx);
    as_nn_release(c, &l->hidx);
    return 0;
}

/* ---- dropout ------------------------------------------------------------ */

void as_nn_dropout_init(as_nn_ctx *c, as_nn_dropout *l, const char *name,
                        float p)
{
    memset(l, 0, sizeof *l);
    set_name(c, l->name, &l->id, name);
    l->p = p;
}

int as_nn_dropout_fwd(as_nn_ctx *c, as_nn_dropout *l, size_t n,
                      const float *x, float *y)
{
    l->n = n;
    if (!c->training || l->p <= 0.0f) {
        if (y != x)
            memmove(y, x, n * sizeof(float));
        l->seed = 0;
        return 0;
    }
    /* (run seed, step, layer name) -> mask seed: nothing to save */
    uint64_t h = c->seed ^ (c->step * 0x9E3779B97F4A7C15ull);
    for (const char *p = l->name; *p; p++)
        h = (h ^ (uint8_t)*p) * 0x100000001B3ull;
    l->seed = h | 1;
    as_op_dropout_fwd(n, l->p, l->seed, x, y);
    return 0;
}

int as_nn_dropout_bwd(as_nn_ctx *c, as_nn_dropout *l, const float *dy,
                      float *dx)
{
    (void)c;
    if (l->seed == 0) {
        if (dx != dy)
            memmove(dx, dy, l->n * sizeof(float));
        return 0;
    }
    as_op_dropout_bwd(l->n, l->p, l->seed, dy, dx);
    return 0;
}

/* ---- softmax ------------------------------------------------------------ */

void as_nn_softmax_init(as_nn_ctx *c, as_nn_softmax *l, const char *name)
{
    memset(l, 0, sizeof *l);
    set_name(c, l->name, &l->id, name);
}

int as_nn_softmax_fwd(as_nn_ctx *c, as_nn_softmax *l, size_t rows, int L,
                      bool causal, const int32_t *valid, const float *x,
                      float *y)
{
    l->rows = rows;
    l->L = L;
    l->causal = causal;
    as_op_softmax_fwd(rows, L, causal, valid, x, y);
    as_save_info info = {.kind = AS_KIND_SOFTMAX_OUTPUT, .layer = l->name};
    info.meta.softmax = (as_softmax_meta){
        .row_len = L, .queries = L, .causal = causal, .valid_len = valid,
        .rows_per_item = 1};
    as_tensor t = AS_NN_T(y, AS_F32, (int64_t)rows, L);
    return as_nn_save(c, &info, &t, &l->hy);
}

int as_nn_softmax_bwd(as_nn_ctx *c, as_nn_softmax *l, const float *dy,
                      float *dx)
{
    AS_TRY_RETURN(as_nn_softmax_bwd_saved(c, l->hy, dy, dx));
    as_nn_release(c, &l->hy);
    return 0;
}

/*
 * Layers of the reference framework (layers/nn.h) running through the real
 * activation store: every layer's forward against a double-precision
 * reference, its backward (input and parameter gradients) against central
 * finite differences of that reference, the kind of what it saved, and
 * that backward released everything (no live handles left).
 * Covers linear, conv (stride 1 and 2, with and without padding),
 * BatchNorm, LayerNorm, ReLU / LeakyReLU / GELU, max and average pooling,
 * dropout, softmax (causal and valid lengths), embeddings, cross-entropy,
 * and multi-head attention with and without the causal mask (P streamed
 * back with restore_rows and the softmax backward done by the store).
 * Under a policy that does not hold tensors in place (lossless zstd),
 * linear backward streams x in row blocks and attention backward streams
 * qkv per batch: gradients match the keep run (attention bit for bit).
 * Loss = sum(r * y) with random r, so the analytic gradient is the
 * backward with dy = r.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "layers/nn.h"
#define AS_FD_SEED 7
#include "support/fd.h"
#include "support/ref.h"
#include "support/test_main.h"

/* A store (default=keep), a context, a parameter list and the float
 * buffers the case made with bench_f. */
typedef struct bench {
    as_store    *s;
    as_nn_ctx    c;
    as_nn_params ps;
    uint64_t     rng;
    float       *own[4];
    int          nown;
} bench;

static void bench_init(bench *b)
{
    char err[256];
    memset(b, 0, sizeof *b);
    assert_int_equal(as_store_create(NULL, &b->s, err, sizeof err), 0);
    as_nn_ctx_init(&b->c, b->s, 99);
    b->rng = 5;
    as_store_step_begin(b->s, 1);
    as_store_phase(b->s, AS_PHASE_FORWARD);
}

/* Parameters take the values p[off ..] in list order; returns the end. */
static size_t bench_set_params(bench *b, const double *p, size_t off)
{
    for (size_t i = 0; i < b->ps.n; i++) {
        float *w = AS_NN_F(b->ps.p[i]->w);
        for (size_t k = 0; k < b->ps.p[i]->n; k++)
            w[k] = (float)p[off + k];
        off += b->ps.p[i]->n;
    }
    return off;
}

/* A float copy of d[0 .. n), freed by bench_finish. */
static float *bench_f(bench *b, const double *d, size_t n)
{
    assert_true(b->nown < (int)(sizeof b->own / sizeof b->own[0]));
    return b->own[b->nown++] = to_f(d, n);
}

static void bench_backward(bench *b)
{
    as_store_phase(b->s, AS_PHASE_BACKWARD);
}

/* The forward's y (ny values) against the reference on p within tol; then
 * the backward phase begins. */
static void bench_forward_check(bench *b, const char *what, ref_fn ref,
                                const void *cfg, const double *p, const float *y,
                                size_t ny, double tol)
{
    double *yr = malloc(ny * sizeof *yr);
    assert_non_null(yr);
    ref(cfg, p, yr);
    check_close(what, y, yr, ny, tol);
    free(yr);
    bench_backward(b);
}

/* The input gradient dx (p[0 .. off); NULL: not checked) and every
 * parameter's gradient against finite differences (nout = 0: none computed,
 * e.g. after a failed forward); then nothing may be left in the store. */
static void bench_finish(bench *b, const char *what, ref_fn ref, const void *cfg,
                         double *p, size_t off, size_t nout, const double *r,
                         const float *dx)
{
    char buf[128];
    if (dx && nout > 0) {
        snprintf(buf, sizeof buf, "%s dx", what);
        check_grad(buf, ref, cfg, p, nout, r, dx, 0, off);
    }
    for (size_t i = 0; i < b->ps.n && nout > 0; i++) {
        snprintf(buf, sizeof buf, "%s d(%s)", what, b->ps.p[i]->name);
        check_grad(buf, ref, cfg, p, nout, r, AS_NN_F(b->ps.p[i]->g), off,
                   b->ps.p[i]->n);
        off += b->ps.p[i]->n;
    }
    as_store_stats st;
    assert_int_equal(as_store_stats_take(b->s, &st), 0);
    if (st.live_handles != 0)
        fail_msg("%s: %llu saved tensors still live after backward", what,
                 (unsigned long long)st.live_handles);
    assert_true(st.total.saves > 0 || nout == 0 || !strncmp(what, "dropout", 7) ||
                !strncmp(what, "avgpool", 7));
    as_store_stats_free(&st);
    as_store_step_end(b->s);
    as_nn_params_free(&b->c, &b->ps);
    as_nn_ctx_fini(&b->c);
    as_store_destroy(b->s);
    for (int i = 0; i < b->nown; i++)
        free(b->own[i]);
    b->nown = 0;
}

static void expect_kind(bench *b, as_handle h, int kind, const char *what)
{
    as_tensor t;
    int k = -1;
    assert_int_equal(as_store_describe(b->s, h, &t, &k), 0);
    if (k != kind)
        fail_msg("%s saved a %s, expected %s", what, as_kind_name(k),
                 as_kind_name(kind));
}

/* ---- linear ------------------------------------------------------------------ */

static void test_linear(void **state)
{
    (void)state;
    bench b;
    bench_init(&b);
    as_nn_linear l;
    assert_int_equal(as_nn_linear_init(&b.c, &b.ps, &l, "fc", 5, 4, true, &b.rng), 0);
    lin_cfg c = {3, 5, 4};
    double p[15 + 20 + 4], r[12];
    fill(p, 39, 1.0);
    fill(r, 12, 1.0);
    bench_set_params(&b, p, 15);
    float *x = bench_f(&b, p, 15), *rf = bench_f(&b, r, 12), y[12], dx[15];
    assert_int_equal(as_nn_linear_fwd(&b.c, &l, 3, x, y), 0);
    expect_kind(&b, l.hx, AS_KIND_LINEAR_INPUT, "linear");
    memset(x, 0, 15 * sizeof *x);   /* the store holds its own copy */
    bench_forward_check(&b, "linear fwd", lin_ref, &c, p, y, 12, 1e-5);
    assert_int_equal(as_nn_linear_bwd(&b.c, &l, rf, dx), 0);
    bench_finish(&b, "linear", lin_ref, &c, p, 15, 12, r, dx);
}

/* ---- conv ---------------------------------------------------------------------- */

static void conv_case(int N, int Cin, int H, int Cout, int k, int stride, int pad)
{
    bench b;
    bench_init(&b);
    as_nn_conv l;
    assert_int_equal(as_nn_conv_init(&b.c, &b.ps, &l, "conv", Cin, Cout, k,
                                     stride, pad, true, &b.rng), 0);
    as_op_conv_geom g = {.N = N, .Cin = Cin, .H = H, .W = H, .Cout = Cout,
                         .kh = k, .kw = k, .stride = stride, .pad = pad};
    assert_int_equal(as_op_conv_geom_init(&g), 0);
    size_t nx = (size_t)N * Cin * H * H, ny = (size_t)N * Cout * g.Ho * g.Wo;
    size_t np = nx + (size_t)Cout * Cin * k * k + Cout;
    double *p = malloc(np * sizeof *p), *r = malloc(ny * sizeof *r);
    fill(p, np, 1.0);
    fill(r, ny, 1.0);
    bench_set_params(&b, p, nx);
    float *x = bench_f(&b, p, nx), *rf = bench_f(&b, r, ny), *y = malloc(ny * sizeof *y);
    float *dx = malloc(nx * sizeof *dx);
    char what[64];
    snprintf(what, sizeof what, "conv %d>%d %dx%d k%d s%d p%d", Cin, Cout, H, H,
             k, stride, pad);
    assert_int_equal(as_nn_conv_fwd(&b.c, &l, N, H, H, x, AS_HANDLE_NULL, y), 0);
    expect_kind(&b, l.hx, AS_KIND_CONV_INPUT, what);
    expect_kind(&b, l.hy, AS_KIND_CONV_OUTPUT, what);
    memset(x, 0, nx * sizeof *x);
    bench_forward_check(&b, what, conv_ref, &g, p, y, ny, 1e-5);
    assert_int_equal(as_nn_conv_bwd(&b.c, &l, rf, dx), 0);
    bench_finish(&b, what, conv_ref, &g, p, nx, ny, r, dx);
    free(p); free(r); free(y); free(dx);
}

static void test_conv(void **state)
{
    (void)state;
    conv_case(2, 2, 6, 3, 3, 1, 1);   /* same padding, Cout > Cin */
    conv_case(2, 2, 7, 3, 3, 2, 1);   /* stride 2 with padding */
    conv_case(1, 3, 6, 2, 3, 2, 0);   /* stride 2 without padding */
    conv_case(2, 2, 5, 2, 1, 1, 0);   /* 1x1 */
}

/* ---- normalization ---------------------------------------------------------- */

static void test_batchnorm(void **state)
{
    (void)state;
    bench b;
    bench_init(&b);
    as_nn_bnorm l;
    assert_int_equal(as_nn_bnorm_init(&b.c, &b.ps, &l, "bn", 3), 0);
    bn_cfg c = {2, 3, 6};   /* (2, 3, 2, 3) */
    double p[36 + 6], r[36];
    fill(p, 42, 1.5);
    for (int i = 0; i < 36; i++)
        p[i] += 2.0;
    fill(r, 36, 1.0);
    bench_set_params(&b, p, 36);
    float *x = bench_f(&b, p, 36), *rf = bench_f(&b, r, 36), y[36], dx[36];
    assert_int_equal(as_nn_bnorm_fwd(&b.c, &l, 2, 2, 3, x, AS_HANDLE_NULL, y), 0);
    expect_kind(&b, l.hx, AS_KIND_NORM_INPUT, "batchnorm");
    memset(x, 0, sizeof(float) * 36);
    bench_forward_check(&b, "batchnorm fwd", bn_ref, &c, p, y, 36, 1e-5);
    assert_int_equal(as_nn_bnorm_bwd(&b.c, &l, rf, dx), 0);
    check_grad("batchnorm dx", bn_ref, &c, p, 36, r, dx, 0, 36);
    /* eval mode: running statistics moved toward the batch's, nothing saved */
    const float *rm = AS_NN_F(l.run_mean);
    assert_true(fabsf(rm[0]) > 0.05f);
    as_nn_ctx_train(&b.c, false);
    assert_int_equal(as_nn_bnorm_fwd(&b.c, &l, 2, 2, 3, y, AS_HANDLE_NULL, dx), 0);
    assert_true(as_handle_is_null(l.hx));
    as_nn_ctx_train(&b.c, true);
    as_nn_bnorm_fini(&b.c, &l);
    bench_finish(&b, "batchnorm", bn_ref, &c, p, 36, 36, r, NULL);
}

static void test_layernorm(void **state)
{
    (void)state;
    bench b;
    bench_init(&b);
    as_nn_layernorm l;
    assert_int_equal(as_nn_layernorm_init(&b.c, &b.ps, &l, "ln", 7), 0);
    ln_cfg c = {4, 7};
    double p[28 + 14], r[28];
    fill(p, 42, 2.0);
    fill(r, 28, 1.0);
    bench_set_params(&b, p, 28);
    float *x = bench_f(&b, p, 28), *rf = bench_f(&b, r, 28), y[28], dx[28];
    assert_int_equal(as_nn_layernorm_fwd(&b.c, &l, 4, x, y), 0);
    expect_kind(&b, l.hx, l.from_y ? AS_KIND_LINEAR_INPUT : AS_KIND_NORM_INPUT,
                "layernorm");
    memset(x, 0, sizeof(float) * 28);
    bench_forward_check(&b, "layernorm fwd", ln_ref, &c, p, y, 28, 1e-5);
    assert_int_equal(as_nn_layernorm_bwd(&b.c, &l, rf, dx), 0);
    bench_finish(&b, "layernorm", ln_ref, &c, p, 28, 28, r, dx);
}

/* LayerNorm + linear with the norm saving its output (the linear aliasing
 * it) against the same pair saving the norm's input: input and parameter
 * gradients within 1e-5; one item for y; a zero gamma falls back to the
 * input (counted) with bit-identical gradients. */
typedef struct ln_run {
    float dx[64 * 24], dg[24], db[24], dW[24 * 8];
    uint64_t stored, raw;
    bool from_y;
} ln_run;

static void ln_pair(bool save_output, const float *gamma, const float *beta,
                    ln_run *out, uint64_t *fallbacks)
{
    enum { N = 64, C = 24, O = 8 };
    bench b;
    bench_init(&b);
    as_nn_layernorm l;
    as_nn_linear fc;
    assert_int_equal(as_nn_layernorm_init(&b.c, &b.ps, &l, "ln", C), 0);
    assert_int_equal(as_nn_linear_init(&b.c, &b.ps, &fc, "fc", C, O, true, &b.rng), 0);
    l.save_output = save_output;
    memcpy(AS_NN_F(l.g->w), gamma, sizeof(float) * C);
    memcpy(AS_NN_F(l.b->w), beta, sizeof(float) * C);
    uint64_t rng = 11;
    float x[N * C], y[N * C], z[N * O], dz[N * O], dy[N * C];
    for (int i = 0; i < N * C; i++)
        x[i] = as_nn_randn(&rng) * 3.0f + (float)(i % C) * 0.25f;
    for (int i = 0; i < N * O; i++)
        dz[i] = as_nn_randn(&rng);
    assert_int_equal(as_nn_layernorm_fwd(&b.c, &l, N, x, y), 0);
    assert_int_equal(as_nn_linear_fwd_alias(&b.c, &fc, N, y,
                                            as_nn_layernorm_out(&l), z), 0);
    memset(y, 0, sizeof y);   /* the store holds what backward needs */
    out->from_y = l.from_y;
    as_store_stats st;
    assert_int_equal(as_store_stats_take(b.s, &st), 0);
    out->stored = st.total.stored_live;
    out->raw = st.total.raw_live;
    as_store_stats_free(&st);
    bench_backward(&b);
    assert_int_equal(as_nn_linear_bwd(&b.c, &fc, dz, dy), 0);
    assert_int_equal(as_nn_layernorm_bwd(&b.c, &l, dy, out->dx), 0);
    memcpy(out->dg, AS_NN_F(l.g->g), sizeof out->dg);
    memcpy(out->db, AS_NN_F(l.b->g), sizeof out->db);
    memcpy(out->dW, AS_NN_F(fc.W->g), sizeof out->dW);
    *fallbacks = l.fallbacks;
    bench_finish(&b, "layernorm from output", NULL, NULL, NULL, 0, 0, NULL, NULL);
}

static void close_rel(const char *what, const float *a, const float *b,
                      size_t n, double tol)
{
    double scale = 0;
    for (size_t i = 0; i < n; i++)
        scale = fmax(scale, fabs(b[i]));
    for (size_t i = 0; i < n; i++)
        if (!(fabs((double)a[i] - b[i]) <= tol * fmax(scale, 1.0)))
            fail_msg("%s[%zu]: %.9g vs exact %.9g (scale %g)", what, i, a[i],
                     b[i], scale);
}

static void test_layernorm_from_output(void **state)
{
    (void)state;
    enum { C = 24 };
    float gamma[C], beta[C];
    uint64_t rng = 3, fb;
    for (int k = 0; k < C; k++) {
        gamma[k] = (k % 2 ? -1.0f : 1.0f) * (0.2f + 1.5f * as_nn_randu(&rng));
        beta[k] = as_nn_randn(&rng) * 2.0f;
    }
    static ln_run ex, fy;
    ln_pair(false, gamma, beta, &ex, &fb);
    assert_false(ex.from_y);
    assert_int_equal(fb, 0);
    ln_pair(true, gamma, beta, &fy, &fb);
    assert_true(fy.from_y);
    assert_int_equal(fb, 0);
    close_rel("dx", fy.dx, ex.dx, 64 * C, 1e-5);
    close_rel("dgamma", fy.dg, ex.dg, C, 1e-5);
    close_rel("dbeta", fy.db, ex.db, C, 1e-5);
    assert_memory_equal(fy.dW, ex.dW, sizeof ex.dW);   /* same y */
    /* keep: x, y and (mean, rstd) against y once and rstd */
    assert_int_equal(ex.stored, 2 * 64 * C * 4 + 2 * 64 * 4);
    assert_int_equal(fy.stored, 64 * C * 4 + 64 * 4);
    /* a zero gamma, a tiny one, a beta too large for its gamma: fall back */
    const struct { int k; float g, b; } bad[] = {{5, 0.0f, 0.0f},
                                                {7, 1e-3f, 0.0f},
                                                {9, 0.5f, 40.0f}};
    for (int i = 0; i < 3; i++) {
        float g2[C], b2[C];
        memcpy(g2, gamma, sizeof g2);
        memcpy(b2, beta, sizeof b2);
        g2[bad[i].k] = bad[i].g;
        b2[bad[i].k] = bad[i].b;
        ln_pair(false, g2, b2, &ex, &fb);
        ln_pair(true, g2, b2, &fy, &fb);
        assert_false(fy.from_y);
        assert_int_equal(fb, 1);
        assert_memory_equal(fy.dx, ex.dx, sizeof ex.dx);
        assert_memory_equal(fy.dg, ex.dg, sizeof ex.dg);
    }
}

/* ---- activations, pooling, dropout ------------------------------------------ */

typedef struct { int fn; float a; size_t n; const float *mask; } act_cfg;
static void act_ref(const void *c_, const double *x, double *y)
{
    const act_cfg *c = c_;
    for (size_t i = 0; i < c->n; i++) {
        double v = x[i];
        if (c->mask)
            y[i] = v * c->mask[i];
        else if (c->fn == AS_FN_GELU)
            y[i] = 0.5 * v * (1 + tanh(sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)));
        else
            y[i] = v > 0 ? v : c->a * v;
    }
}

static void test_activations(void **state)
{
    (void)state;
    const int fns[3] = {AS_FN_RELU, AS_FN_LEAKY_RELU, AS_FN_GELU};
    const char *names[3] = {"relu", "leaky_relu", "gelu"};
    enum { N = 48 };
    for (int k = 0; k < 3; k++) {
        bench b;
        bench_init(&b);
        as_nn_act l;
        as_nn_act_init(&b.c, &l, names[k], fns[k], 0.1f);
        act_cfg c = {fns[k], fns[k] == AS_FN_RELU ? 0.0f : 0.1f, N, NULL};
        double x[N], r[N];
        fill(x, N, 2.0);
        for (int i = 0; i < N; i++)
            if (fabs(x[i]) < 1e-2)
                x[i] = 0.5;
        fill(r, N, 1.0);
        float *xf = bench_f(&b, x, N), *rf = bench_f(&b, r, N), y[N], dx[N];
        const int64_t shape[4] = {2, 3, 2, 4};
        assert_int_equal(as_nn_act_fwd(&b.c, &l, 4, shape, xf, y), 0);
        expect_kind(&b, l.h, fns[k] == AS_FN_GELU ? AS_KIND_ACTIVATION_INPUT
                                                  : AS_KIND_ACTIVATION_OUTPUT,
                    names[k]);
        memset(xf, 0, sizeof(float) * N);
        bench_forward_check(&b, names[k], act_ref, &c, x, y, N, 1e-5);
        assert_int_equal(as_nn_act_bwd(&b.c, &l, rf, dx), 0);
        bench_finish(&b, names[k], act_ref, &c, x, N, N, r, dx);
    }
    /* in place, as the cnn uses it: y overwrites x */
    bench b;
    bench_init(&b);
    as_nn_act l;
    as_nn_act_init(&b.c, &l, "inplace", AS_FN_LEAKY_RELU, 0.2f);
    float v[4] = {-1, 2, -3, 4}, d[4] = {1, 1, 1, 1};
    const int64_t sh[1] = {4};
    assert_int_equal(as_nn_act_fwd(&b.c, &l, 1, sh, v, v), 0);
    assert_float_equal(v[0], -0.2f, 1e-7);
    bench_backward(&b);
    assert_int_equal(as_nn_act_bwd(&b.c, &l, d, d), 0);
    assert_float_equal(d[0], 0.2f, 1e-7);
    assert_float_equal(d[1], 1.0f, 1e-7);
    bench_finish(&b, "inplace", act_ref, NULL, NULL, 0, 0, NULL, NULL);
}

static void test_pool(void **state)
{
    (void)state;
    for (int m = 0; m < 2; m++) {
        const char *what = m ? "maxpool" : "avgpool";
        bench b;
        bench_init(&b);
        as_nn_pool l;
        as_nn_pool_init(&b.c, &l, what, m == 1, 2);
        pool_cfg c = {2, 2, 5, 6, 2, m == 1};   /* odd H: last row dropped */
        enum { NX = 120, NY = 24 };
        double x[NX], r[NY];
        fill(x, NX, 1.0);
        fill(r, NY, 1.0);
        float *xf = bench_f(&b, x, NX), *rf = bench_f(&b, r, NY), y[NY], dx[NX];
        assert_int_equal(as_nn_pool_fwd(&b.c, &l, 2, 2, 5, 6, xf, AS_HANDLE_NULL, y), 0);
        if (m)
            expect_kind(&b, l.hidx, AS_KIND_INDEX, what);
        else
            assert_true(as_handle_is_null(l.hidx));   /* needs nothing */
        bench_forward_check(&b, what, pool_ref, &c, x, y, NY, 1e-6);
        assert_int_equal(as_nn_pool_bwd(&b.c, &l, rf, dx), 0);
        bench_finish(&b, what, pool_ref, &c, x, NX, NY, r, dx);
    }
}

static void test_dropout(void **state)
{
    (void)state;
    bench b;
    bench_init(&b);
    b.c.step = 3;
    as_nn_dropout l;
    as_nn_dropout_init(&b.c, &l, "dropout", 0.25f);
    enum { N = 64 };
    double x[N], r[N];
    fill(x, N, 1.0);
    fill(r, N, 1.0);
    float *xf = bench_f(&b, x, N), *rf = bench_f(&b, r, N), y[N], dx[N], ones[N], mask[N];
    assert_int_equal(as_nn_dropout_fwd(&b.c, &l, N, xf, y), 0);
    for (int i = 0; i < N; i++)
        ones[i] = 1.0f;
    as_op_dropout_fwd(N, 0.25f, l.seed, ones, mask);   /* the layer's mask */
    int dropped = 0;
    for (int i = 0; i < N; i++)
        dropped += mask[i] == 0.0f;
    assert_in_range(dropped, 4, 32);
    act_cfg c = {0, 0, N, mask};
    bench_forward_check(&b, "dropout fwd", act_ref, &c, x, y, N, 1e-6);
    assert_int_equal(as_nn_dropout_bwd(&b.c, &l, rf, dx), 0);
    check_grad("dropout dx", act_ref, &c, x, N, r, dx, 0, N);
    /* another step: another mask; eval: identity */
    uint64_t s3 = l.seed;
    b.c.step = 4;
    assert_int_equal(as_nn_dropout_fwd(&b.c, &l, N, xf, y), 0);
    assert_true(l.seed != s3);
    as_nn_ctx_train(&b.c, false);
    assert_int_equal(as_nn_dropout_fwd(&b.c, &l, N, xf, y), 0);
    assert_memory_equal(xf, y, sizeof y);
    as_nn_ctx_train(&b.c, true);
    bench_finish(&b, "dropout", act_ref, &c, x, N, N, r, NULL);
}

/* ---- softmax -------------------------------------------------------------------- */

static void test_softmax(void **state)
{
    (void)state;
    const int32_t valid[12] = {6, 3, 1, 6, 5, 2, 6, 4, 2, 2, 5, 1};
    const sm_cfg cases[3] = {{12, 6, false, NULL}, {12, 6, true, NULL},
                             {12, 6, false, valid}};
    const char *names[3] = {"softmax", "softmax causal", "softmax valid"};
    for (int k = 0; k < 3; k++) {
        bench b;
        bench_init(&b);
        as_nn_softmax l;
        as_nn_softmax_init(&b.c, &l, names[k]);
        enum { N = 72 };
        double x[N], r[N];
        fill(x, N, 3.0);
        fill(r, N, 1.0);
        float *xf = bench_f(&b, x, N), *rf = bench_f(&b, r, N), y[N], dx[N];
        assert_int_equal(as_nn_softmax_fwd(&b.c, &l, 12, 6, cases[k].causal,
                                           cases[k].valid, xf, y), 0);
        expect_kind(&b, l.hy, AS_KIND_SOFTMAX_OUTPUT, names[k]);
        bench_forward_check(&b, names[k], sm_ref, &cases[k], x, y, N, 1e-5);
        assert_int_equal(as_nn_softmax_bwd(&b.c, &l, rf, dx), 0);
        bench_finish(&b, names[k], sm_ref, &cases[k], x, N, N, r, dx);
    }
}

/* ---- embeddings, cross-entropy ---------------------------------------------------- */

static void test_embedding(void **state)
{
    (void)state;
    bench b;
    bench_init(&b);
    as_nn_embed l;
    assert_int_equal(as_nn_embed_init(&b.c, &b.ps, &l, "embed", 4, 3, 4, true,
                                      &b.rng), 0);
    double p[28], r[24];
    fill(p, 28, 1.0);
    fill(r, 24, 1.0);
    bench_set_params(&b, p, 0);
    float *rf = bench_f(&b, r, 24), y[24];
    int32_t tok[6];
    memcpy(tok, emb_tok, sizeof tok);
    assert_int_equal(as_nn_embed_fwd(&b.c, &l, 2, tok, y), 0);
    expect_kind(&b, l.htok, AS_KIND_INDEX, "embed");
    memset(tok, 0, sizeof tok);   /* saved: the caller may reuse its buffer */
    bench_forward_check(&b, "embed fwd", emb_ref, NULL, p, y, 24, 1e-6);
    assert_int_equal(as_nn_embed_bwd(&b.c, &l, rf), 0);
    bench_finish(&b, "embed", emb_ref, NULL, p, 0, 24, r, NULL);
    /* a token outside the vocabulary is an error naming the layer */
    bench_init(&b);
    assert_int_equal(as_nn_embed_init(&b.c, &b.ps, &l, "embed", 4, 3, 4, true,
                                      &b.rng), 0);
    int32_t badtok[6] = {0, 1, 9, 0, 0, 0};
    assert_int_equal(as_nn_embed_fwd(&b.c, &l, 2, badtok, y), AS_ERANGE);
    assert_non_null(strstr(b.c.err, "embed"));
    bench_finish(&b, "embed (error)", emb_ref, NULL, p, 0, 0, NULL, NULL);
}

static void test_xent(void **state)
{
    (void)state;
    bench b;
    bench_init(&b);
    as_nn_xent l;
    as_nn_xent_init(&b.c, &l, "loss");
    const int32_t t[5] = {2, 0, -1, 5, 3};
    xe_cfg c = {5, 6, t};
    double x[30], one[1] = {1.0}, yr;
    fill(x, 30, 3.0);
    float *xf = bench_f(&b, x, 30), dx[30];
    double loss;
    int hits;
    assert_int_equal(as_nn_xent_fwd(&b.c, &l, 5, 6, xf, t, &loss, &hits), 0);
    expect_kind(&b, l.hp, AS_KIND_GENERIC, "xent probabilities");
    expect_kind(&b, l.ht, AS_KIND_INDEX, "xent targets");
    xe_ref(&c, x, &yr);
    assert_true(fabs(loss - yr) < 1e-5);
    bench_backward(&b);
    assert_int_equal(as_nn_xent_bwd(&b.c, &l, dx), 0);
    check_grad("xent dlogits", xe_ref, &c, x, 1, one, dx, 0, 30);
    bench_finish(&b, "xent", xe_ref, &c, x, 30, 1, one, NULL);
}

/* ---- attention (layer: qkv linear, core, output linear) ------------------------- */

/* p: x (B*T, C), Wqkv (3C, C), bqkv (3C), Wo (C, C), bo (C). */
static void at_ref(const void *c_, const double *p, double *y)
{
    const at_cfg *c = c_;
    const int N = c->B * c->T, C = c->C, C3 = 3 * C;
    const double *x = p, *Wq = x + N * C, *bq = Wq + C3 * C, *Wo = bq + C3,
                 *bo = Wo + C * C;
    double qkv[2 * 6 * 24], o[2 * 6 * 8];
    assert_true(N * C3 <= (int)(sizeof qkv / sizeof qkv[0]) && c->T <= 6);
    affine_ref(N, C, C3, x, Wq, bq, qkv);
    attn_core_ref(c, qkv, o);
    affine_ref(N, C, C, o, Wo, bo, y);
}

static void attn_case(bool causal)
{
    const char *what = causal ? "attention causal" : "attention";
    bench b;
    bench_init(&b);
    as_nn_attn l;
    assert_int_equal(as_nn_attn_init(&b.c, &b.ps, &l, "attn", 8, 2, causal,
                                     &b.rng), 0);
    at_cfg c = {2, 5, 8, 2, causal};
    enum { NX = 80, NP = 80 + 192 + 24 + 64 + 8 };
    double p[NP], r[NX];
    fill(p, NP, 0.8);
    fill(r, NX, 1.0);
    assert_int_equal(bench_set_params(&b, p, NX), NP);
    float *x = bench_f(&b, p, NX), *rf = bench_f(&b, r, NX), y[NX], dx[NX];
    assert_int_equal(as_nn_attn_fwd(&b.c, &l, 2, 5, x, y), 0);
    expect_kind(&b, l.hP, AS_KIND_SOFTMAX_OUTPUT, what);
    expect_kind(&b, l.hqkv, AS_KIND_ATTENTION_INPUT, what);
    expect_kind(&b, l.qkv.hx, AS_KIND_LINEAR_INPUT, what);
    expect_kind(&b, l.proj.hx, AS_KIND_LINEAR_INPUT, what);
    as_tensor ps;
    int kind;
    assert_int_equal(as_store_describe(b.s, l.hP, &ps, &kind), 0);
    assert_int_equal(ps.ndim, 4);     /* (B, NH, T, T) */
    assert_int_equal(ps.shape[1], 2);
    assert_int_equal(ps.shape[3], 5);
    memset(x, 0, sizeof(float) * NX);
    bench_forward_check(&b, what, at_ref, &c, p, y, NX, 1e-5);
    assert_int_equal(as_nn_attn_bwd(&b.c, &l, rf, dx), 0);
    bench_finish(&b, what, at_ref, &c, p, NX, NX, r, dx);
}

static void test_attention(void **state)
{
    (void)state;
    attn_case(false);
    attn_case(true);
}

/* ---- streamed backward (saved input not held in place) ------------------ */

/* One linear forward + backward on fixed data under `spec`; dx, dW, db out. */
static void linear_run(const char *spec, int N, int in, int out, float *dx,
                       float *dW, float *db, int *in_place)
{
    char err[256];
    bench b;
    bench_init(&b);
    assert_int_equal(as_store_set_policy(b.s, spec, err, sizeof err), 0);
    as_nn_linear l;
    assert_int_equal(as_nn_linear_init(&b.c, &b.ps, &l, "fc", in, out, true, &b.rng), 0);
    size_t nx = (size_t)N * in, ny = (size_t)N * out;
    double *xd = malloc(nx * sizeof *xd), *rd = malloc(ny * sizeof *rd);
    fill(xd, nx, 1.0);
    fill(rd, ny, 1.0);
    float *x = bench_f(&b, xd, nx), *dy = bench_f(&b, rd, ny), *y = malloc(ny * sizeof *y);
    assert_int_equal(as_nn_linear_fwd(&b.c, &l, N, x, y), 0);
    *in_place = as_store_is_in_place(b.s, l.hx);
    bench_backward(&b);
    assert_int_equal(as_nn_linear_bwd(&b.c, &l, dy, dx), 0);
    memcpy(dW, AS_NN_F(l.W->g), sizeof(float) * (size_t)in * out);
    memcpy(db, AS_NN_F(l.b->g), sizeof(float) * (size_t)out);
    /* the handle is gone after backward */
    assert_int_equal(as_store_is_in_place(b.s, l.hx), AS_EHANDLE);
    bench_finish(&b, "linear streamed", NULL, NULL, NULL, 0, 0, NULL, NULL);
    free(xd); free(rd); free(y);
}

static void test_linear_streamed(void **state)
{
    (void)state;
    /* 64 inputs: 512 rows per block, so 1100 rows are three blocks */
    enum { N = 1100, IN = 64, OUT = 24 };
    float *dx0 = malloc(sizeof(float) * N * IN), *dx1 = malloc(sizeof(float) * N * IN);
    float dW0[IN * OUT], dW1[IN * OUT], db0[OUT], db1[OUT];
    int ip0, ip1;
    uint64_t seed = rng_state;   /* both runs on the same data */
    linear_run("default=keep", N, IN, OUT, dx0, dW0, db0, &ip0);
    rng_state = seed;
    linear_run("default=zstd", N, IN, OUT, dx1, dW1, db1, &ip1);
    assert_int_equal(ip0, 1);
    assert_int_equal(ip1, 0);
    /* dx and db do not touch x: the same computation */
    assert_memory_equal(dx0, dx1, sizeof(float) * N * IN);
    assert_memory_equal(db0, db1, sizeof db0);
    /* dW summed block by block: equal up to float reassociation */
    close_rel("streamed dW", dW1, dW0, IN * OUT, 1e-5);
    assert_int_equal(as_store_is_in_place(NULL, AS_HANDLE_NULL), AS_EINVAL);
    free(dx0);
    free(dx1);
}

static void attn_run(const char *spec, float *dx, float *g, size_t ng,
                     int *in_place)
{
    char err[256];
    bench b;
    bench_init(&b);
    assert_int_equal(as_store_set_policy(b.s, spec, err, sizeof err), 0);
    as_nn_attn l;
    assert_int_equal(as_nn_attn_init(&b.c, &b.ps, &l, "attn", 8, 2, true,
                                     &b.rng), 0);
    enum { NX = 3 * 5 * 8, NP = NX + 192 + 24 + 64 + 8 };
    double p[NP], r[NX];
    fill(p, NP, 0.8);
    fill(r, NX, 1.0);
    assert_int_equal(bench_set_params(&b, p, NX), NP);
    float *x = bench_f(&b, p, NX), *rf = bench_f(&b, r, NX), y[NX];
    assert_int_equal(as_nn_attn_fwd(&b.c, &l, 3, 5, x, y), 0);
    *in_place = as_store_is_in_place(b.s, l.hqkv);
    bench_backward(&b);
    assert_int_equal(as_nn_attn_bwd(&b.c, &l, rf, dx), 0);
    size_t off = 0;
    for (size_t i = 0; i < b.ps.n; i++) {
        assert_true(off + b.ps.p[i]->n <= ng);
        memcpy(g + off, AS_NN_F(b.ps.p[i]->g), sizeof(float) * b.ps.p[i]->n);
        off += b.ps.p[i]->n;
    }
    assert_int_equal(off, ng);
    bench_finish(&b, "attention streamed", NULL, NULL, NULL, 0, 0, NULL, NULL);
}

static void test_attention_streamed(void **state)
{
    (void)state;
    enum { NX = 3 * 5 * 8, NG = 192 + 24 + 64 + 8 };
    float dx0[NX], dx1[NX], g0[NG], g1[NG];
    int ip0, ip1;
    uint64_t seed = rng_state;   /* both runs on the same data */
    attn_run("default=keep", dx0, g0, NG, &ip0);
    rng_state = seed;
    attn_run("default=zstd", dx1, g1, NG, &ip1);
    assert_int_equal(ip0, 1);
    assert_int_equal(ip1, 0);
    /* lossless decode, same kernels per batch: bit for bit */
    assert_memory_equal(dx0, dx1, sizeof dx0);
    assert_memory_equal(g0, g1, sizeof g0);
    /* q, k, v rebuilt from the qkv linear's kept input, one batch's rows
     * at a time: the same values up to the GEMM's blocking */
    rng_state = seed;
    attn_run("attention_input=recompute; default=keep", dx1, g1, NG, &ip1);
    assert_int_equal(ip1, 0);
    close_rel("recomputed qkv: dx", dx1, dx0, NX, 1e-6);
    close_rel("recomputed qkv: grads", g1, g0, NG, 1e-6);
}

AS_TEST_MAIN(NULL, NULL,
             cmocka_unit_test(test_linear),
             cmocka_unit_test(test_conv),
             cmocka_unit_test(test_batchnorm),
             cmocka_unit_test(test_layernorm),
             cmocka_unit_test(test_layernorm_from_output),
             cmocka_unit_test(test_activations),
             cmocka_unit_test(test_pool),
             cmocka_unit_test(test_dropout),
             cmocka_unit_test(test_softmax),
             cmocka_unit_test(test_embedding),
             cmocka_unit_test(test_xent),
             cmocka_unit_test(test_attention),
             cmocka_unit_test(test_linear_streamed),
             cmocka_unit_test(test_attention_streamed))

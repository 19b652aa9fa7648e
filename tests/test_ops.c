/*
 * Tensor kernels (layers/ops.h): forward against a naive double-precision
 * reference, backward against central finite differences of that
 * reference. Loss = sum(r * y) with random r, so the analytic gradient is
 * the backward with dy = r.
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

#include <actstore/common.h>

#include "layers/ops.h"
#include "layers/ops_direct.h"
#include "util/simd.h"
#include "support/fd.h"
#include "support/ref.h"
#include "support/test_main.h"

/* ---- linear ----------------------------------------------------------- */

static void test_linear(void **state)
{
    (void)state;
    lin_cfg c = {3, 5, 4};
    size_t nx = 15, nw = 20, nb = 4, ny = 12, np = nx + nw + nb;
    double p[39], r[12], yr[12];
    fill(p, np, 1.0);
    fill(r, ny, 1.0);
    float *pf = to_f(p, np), *rf = to_f(r, ny), y[12];
    as_op_linear_fwd(c.N, c.in, c.out, pf, pf + nx, pf + nx + nw, y);
    lin_ref(&c, p, yr);
    check_close("linear fwd", y, yr, ny, 1e-5);
    float g[39] = {0};
    as_op_linear_bwd(c.N, c.in, c.out, pf, pf + nx, rf, g, g + nx, g + nx + nw);
    check_grad("linear dx", lin_ref, &c, p, ny, r, g, 0, nx);
    check_grad("linear dW", lin_ref, &c, p, ny, r, g + nx, nx, nw);
    check_grad("linear db", lin_ref, &c, p, ny, r, g + nx + nw, nx + nw, nb);
    free(pf);
    free(rf);
}

/* ---- conv2d ----------------------------------------------------------- */

/* Backends to run: the builtin path always, oneDNN when built in. */
static const char *bname(as_op_backend b)
{
    return b == AS_OP_ONEDNN ? "onednn" : "builtin";
}

static void conv_case(int N, int Cin, int H, int W, int Cout, int k, int stride,
                      int pad)
{
    as_op_conv_geom g = {.N = N, .Cin = Cin, .H = H, .W = W, .Cout = Cout,
                         .kh = k, .kw = k, .stride = stride, .pad = pad};
    assert_int_equal(as_op_conv_geom_init(&g), 0);
    size_t nx = (size_t)N * Cin * H * W, nw = (size_t)Cout * Cin * k * k;
    size_t nb = Cout, np = nx + nw + nb, ny = (size_t)N * Cout * g.Ho * g.Wo;
    double *p = malloc(sizeof(double) * np), *r = malloc(sizeof(double) * ny);
    double *yr = malloc(sizeof(double) * ny);
    fill(p, np, 1.0);
    fill(r, ny, 1.0);
    float *pf = to_f(p, np), *rf = to_f(r, ny), *y = malloc(sizeof(float) * ny);
    conv_ref(&g, p, yr);
    as_op_backend bk[2];
    for (int bi = 0, nbk = nbackends(bk); bi < nbk; bi++) {
        assert_int_equal(as_op_set_backend(bk[bi]), 0);
        float *ws = malloc(sizeof(float) * as_op_conv_workspace(&g));
        float *gr = calloc(np, sizeof(float));
        as_op_conv_fwd(&g, pf, pf + nx, pf + nx + nw, y, ws);
        char what[96];
        snprintf(what, sizeof what, "conv %s N%d Cin%d %dx%d Cout%d k%d s%d p%d",
                 bname(bk[bi]), N, Cin, H, W, Cout, k, stride, pad);
        check_close(what, y, yr, ny, 1e-5);
        as_op_conv_bwd(&g, pf, pf + nx, rf, gr, gr + nx, gr + nx + nw, ws);
        check_grad(what, conv_ref, &g, p, ny, r, gr, 0, nx);
        check_grad(what, conv_ref, &g, p, ny, r, gr + nx, nx, nw);
        check_grad(what, conv_ref, &g, p, ny, r, gr + nx + nw, nx + nw, nb);
        free(ws);
        free(gr);
    }
    as_op_set_backend(AS_OP_BUILTIN);
    free(p); free(r); free(yr); free(pf); free(rf); free(y);
}

static void test_conv(void **state)
{
    (void)state;
    conv_case(2, 3, 6, 5, 4, 3, 1, 1);   /* same padding */
    conv_case(2, 2, 7, 7, 3, 3, 2, 1);   /* stride 2 with padding */
    conv_case(1, 2, 5, 6, 2, 3, 1, 0);   /* valid */
    conv_case(3, 2, 4, 4, 3, 1, 1, 0);   /* 1x1 direct path */
    conv_case(2, 1, 8, 8, 2, 5, 3, 2);   /* large kernel, stride 3 */
    conv_case(70, 2, 3, 3, 2, 3, 1, 1);  /* several image chunks */
}

typedef struct { const double *x, *W, *dy; double *dx, *dW; } conv_bwd_ctx;
static void conv_bwd_tap(void *ctx, size_t yi, size_t xi, size_t wi)
{
    conv_bwd_ctx *b = ctx;
    b->dx[xi] += b->dy[yi] * b->W[wi];
    b->dW[wi] += b->dy[yi] * b->x[xi];
}

/* Exact backward of conv_ref in double: dx = , dW += , db += . */
static void conv_bwd_ref(const as_op_conv_geom *g, const double *x,
                         const double *W, const double *dy, double *dx,
                         double *dW, double *db)
{
    memset(dx, 0, sizeof(double) * (size_t)g->N * g->Cin * g->H * g->W);
    const size_t plane = (size_t)g->Ho * g->Wo;
    for (size_t k = 0; k < (size_t)g->N * g->Cout * plane; k++)
        db[k / plane % (size_t)g->Cout] += dy[k];
    conv_bwd_ctx b = {x, W, dy, dx, dW};
    conv_taps(g, conv_bwd_tap, &b);
}

static int irand(int lo, int hi)   /* [lo, hi] */
{
    return lo + (int)((urand() + 1.0) * 0.5 * (hi - lo + 1)) % (hi - lo + 1);
}

#define CANARY 16   /* floats after the workspace that must stay intact */

/* Kernel paths: builtin; oneDNN on one thread and on two (its
 * primitives and reorders split the work across OpenMP threads); each
 * once more with the portable-kernels hook on, which turns the direct
 * few-channel kernels off (ops_direct.c), so the geometries they take
 * also run through im2col and the library. */
typedef struct conv_path {
    as_op_backend b;
    int threads;
    bool portable;
} conv_path;

static int conv_paths(conv_path *p)
{
    as_op_backend bk[2];
    int nbk = nbackends(bk), n = 0;
    for (int port = 0; port < 2; port++)
        for (int bi = 0; bi < nbk; bi++) {
            p[n++] = (conv_path){bk[bi], 1, port};
            if (bk[bi] == AS_OP_ONEDNN)
                p[n++] = (conv_path){bk[bi], 2, port};
        }
    return n;
}

static void conv_path_use(const conv_path *p)
{
    assert_int_equal(as_op_set_backend(p->b), 0);
    as_op_set_threads(p->threads);
    as__simd_force_portable(p->portable);
}

/* Random geometries (odd sizes, strides, paddings, channel counts on
 * both sides of a 16-channel block, missing bias or gradients), every
 * kernel path against the double reference forward and exact backward,
 * with dW / db accumulating onto non-zero contents; the workspace is
 * guarded by a canary. */
static void test_conv_random(void **state)
{
    (void)state;
    conv_path paths[6];
    int npath = conv_paths(paths);
    for (int t = 0; t < 36; t++) {
        int k = irand(1, 5), stride = irand(1, 3);
        bool wide = t % 2;   /* more than one channel block */
        as_op_conv_geom g = {.N = irand(1, 5), .Cin = wide ? irand(15, 40) : irand(1, 20),
                             .H = irand(k, 17), .W = irand(k, 17),
                             .Cout = wide ? irand(15, 40) : irand(1, 24), .kh = k, .kw = k,
                             .stride = stride, .pad = irand(0, k - 1)};
        if (t % 4 == 2)   /* few input channels, 3x3, stride 1: the direct kernels */
            g = (as_op_conv_geom){.N = irand(1, 4), .Cin = irand(1, 3), .H = irand(3, 20),
                                  .W = irand(3, 40), .Cout = irand(1, 20), .kh = 3, .kw = 3,
                                  .stride = 1, .pad = irand(0, 2)};
        if (t == 6 || t == 10)   /* the direct kernels on the cnn's 28x28 plane and an
                                  * odd 27x29 one, a batch of 36, 16 + 4 channels */
            g = (as_op_conv_geom){.N = 36, .Cin = t == 6 ? 1 : 2, .H = t == 6 ? 28 : 27,
                                  .W = t == 6 ? 28 : 29, .Cout = 20, .kh = 3, .kw = 3,
                                  .stride = 1, .pad = 1};
        if (t == 0)   /* a bench-like shape: oneDNN's blocked kernels */
            g = (as_op_conv_geom){.N = 4, .Cin = 16, .H = 14, .W = 14,
                                  .Cout = 32, .kh = 3, .kw = 3, .stride = 1,
                                  .pad = 1};
        assert_int_equal(as_op_conv_geom_init(&g), 0);
#if AS_X86_DISPATCH
        if (t % 4 == 2 && as_cpu_avx512bw())   /* the kernels under test do run */
            assert_true(as_direct_conv_ok(&g));
#endif
        size_t nx = (size_t)g.N * g.Cin * g.H * g.W;
        size_t nw = (size_t)g.Cout * g.Cin * g.kh * g.kw;
        size_t ny = (size_t)g.N * g.Cout * g.Ho * g.Wo, nb = (size_t)g.Cout;
        size_t np = nx + nw + nb;
        bool bias = t % 4 != 1, want_dx = t % 5 != 2, want_dw = t % 7 != 3;
        double *p = malloc(sizeof(double) * np), *dy = malloc(sizeof(double) * ny);
        double *yr = malloc(sizeof(double) * ny), *g0 = malloc(sizeof(double) * np);
        double *gr = malloc(sizeof(double) * np);
        fill(p, np, 1.0);
        fill(dy, ny, 1.0);
        fill(g0, np, 1.0);
        if (!bias)
            memset(p + nx + nw, 0, sizeof(double) * nb);
        conv_ref(&g, p, yr);
        memcpy(gr, g0, sizeof(double) * np);
        conv_bwd_ref(&g, p, p + nx, dy, gr, gr + nx, gr + nx + nw);
        float *pf = to_f(p, np), *dyf = to_f(dy, ny), *y = malloc(sizeof(float) * ny);
        for (int pi = 0; pi < npath; pi++) {
            conv_path_use(&paths[pi]);
            size_t nws = as_op_conv_workspace(&g);
            float *ws = malloc(sizeof(float) * (nws + CANARY));
            for (int c = 0; c < CANARY; c++)
                ws[nws + c] = 1234.5f;
            float *gf = to_f(g0, np);
            char what[128];
            snprintf(what, sizeof what,
                     "conv %s/%dt%s N%d Cin%d %dx%d Cout%d k%d s%d p%d bias%d dx%d dW%d",
                     bname(paths[pi].b), paths[pi].threads,
                     paths[pi].portable ? "/portable" : "", g.N, g.Cin, g.H, g.W, g.Cout,
                     g.kh, g.stride, g.pad, bias, want_dx, want_dw);
            as_op_conv_fwd(&g, pf, pf + nx, bias ? pf + nx + nw : NULL, y, ws);
            check_close(what, y, yr, ny, 1e-5);
            as_op_conv_bwd(&g, pf, pf + nx, dyf, want_dx ? gf : NULL,
                           want_dw ? gf + nx : NULL, gf + nx + nw, ws);
            if (want_dx)
                check_close(what, gf, gr, nx, 1e-5);
            if (want_dw)
                check_close(what, gf + nx, gr + nx, nw, 1e-5);
            else   /* untouched */
                for (size_t i = 0; i < nw; i++)
                    assert_true(gf[nx + i] == (float)g0[nx + i]);
            check_close(what, gf + nx + nw, gr + nx + nw, nb, 1e-5);
            for (int c = 0; c < CANARY; c++)
                assert_true(ws[nws + c] == 1234.5f);
            free(ws);
            free(gf);
        }
        conv_path_use(&paths[0]);
        free(p); free(dy); free(yr); free(g0); free(gr); free(pf); free(dyf);
        free(y);
    }
}

/* as_op_gemm on every backend, transposes, strides, alpha / beta, sizes
 * on both sides of the oneDNN / OpenBLAS split, against double loops. */
static void test_gemm(void **state)
{
    (void)state;
    as_op_backend bk[2];
    int nbk = nbackends(bk);
    const int shapes[][3] = {{3, 5, 4}, {50, 50, 12}, {64, 130, 33},
                             {129, 67, 150}, {300, 40, 96}, {1, 1000, 2}};
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
        for (int tr = 0; tr < 4; tr++) {
            bool ta = tr & 1, tb = tr & 2;
            int M = shapes[si][0], N = shapes[si][1], K = shapes[si][2];
            int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 1, ldc = N + 2;
            size_t na = (size_t)(ta ? K : M) * lda, nbb = (size_t)(tb ? N : K) * ldb;
            size_t nc = (size_t)M * ldc;
            double *a = malloc(sizeof(double) * na), *b = malloc(sizeof(double) * nbb);
            double *c = malloc(sizeof(double) * nc), *cr = malloc(sizeof(double) * nc);
            fill(a, na, 1.0);
            fill(b, nbb, 1.0);
            fill(c, nc, 1.0);
            const double alpha = 0.75, beta = si % 2 ? 0.0 : -0.5;
            for (int i = 0; i < M; i++)
                for (int j = 0; j < ldc; j++) {
                    if (j >= N) {
                        cr[i * ldc + j] = c[i * ldc + j];
                        continue;
                    }
                    double s = 0;
                    for (int k = 0; k < K; k++)
                        s += a[ta ? (size_t)k * lda + i : (size_t)i * lda + k] *
                             b[tb ? (size_t)j * ldb + k : (size_t)k * ldb + j];
                    cr[i * ldc + j] = alpha * s + beta * c[i * ldc + j];
                }
            float *af = to_f(a, na), *bf = to_f(b, nbb);
            for (int bi = 0; bi < nbk; bi++) {
                assert_int_equal(as_op_set_backend(bk[bi]), 0);
                float *cf = to_f(c, nc);
                as_op_gemm(ta, tb, M, N, K, (float)alpha, af, lda, bf, ldb,
                           (float)beta, cf, ldc);
                char what[96];
                snprintf(what, sizeof what, "gemm %s %dx%dx%d ta%d tb%d",
                         bname(bk[bi]), M, N, K, ta, tb);
                check_close(what, cf, cr, nc, 1e-5);
                free(cf);
            }
            as_op_set_backend(AS_OP_BUILTIN);
            free(a); free(b); free(c); free(cr); free(af); free(bf);
        }
}

/* Backend selection: builtin always; oneDNN selectable iff built in; the
 * description names what runs. */
static void test_backend(void **state)
{
    (void)state;
    as_op_backend was = as_op_get_backend();
    assert_int_equal(as_op_set_backend(AS_OP_BUILTIN), 0);
    assert_int_equal(as_op_get_backend(), AS_OP_BUILTIN);
    assert_non_null(strstr(as_op_kernels_info(), "kernels builtin"));
    assert_non_null(strstr(as_op_kernels_info(), as_op_blas_core()));
    int rc = as_op_set_backend(AS_OP_ONEDNN);
#ifdef AS_TEST_HAVE_ONEDNN
    assert_int_equal(rc, 0);
    assert_int_equal(as_op_get_backend(), AS_OP_ONEDNN);
    assert_non_null(strstr(as_op_kernels_info(), "kernels onednn (oneDNN "));
    as_op_conv_geom g = {.N = 2, .Cin = 16, .H = 8, .W = 8, .Cout = 16,
                         .kh = 3, .kw = 3, .stride = 1, .pad = 1};
    assert_int_equal(as_op_conv_geom_init(&g), 0);
    size_t n = as_op_conv_native_workspace(&g);
    assert_true(n > 0);
    float *ws = calloc(n, sizeof(float));
    for (int pass = 0; pass < 3; pass++)
        assert_int_equal(as_op_conv_native(&g, pass, ws), 0);
    free(ws);
    n = as_op_linear_native_workspace(37, 20, 9);
    assert_true(n > 0);
    ws = calloc(n, sizeof(float));
    for (int pass = 0; pass < 2; pass++)
        assert_int_equal(as_op_linear_native(37, 20, 9, pass, ws), 0);
    assert_int_equal(as_op_linear_native(37, 20, 9, 2, ws), AS_ENOTSUP);
    assert_int_equal(as_op_linear_native_workspace(0, 20, 9), 0);
    free(ws);
#else
    assert_int_equal(rc, AS_ENOTSUP);
    assert_int_equal(as_op_get_backend(), AS_OP_BUILTIN);
#endif
    as_op_set_backend(AS_OP_BUILTIN);
    assert_int_equal(as_op_conv_native(&(as_op_conv_geom){0}, 0, NULL), AS_ENOTSUP);
    assert_int_equal(as_op_linear_native_workspace(37, 20, 9), 0);
    assert_int_equal(as_op_linear_native(37, 20, 9, 0, NULL), AS_ENOTSUP);
    as_op_set_backend(was);
}

/* ---- pooling ---------------------------------------------------------- */

static void test_pool(void **state)
{
    (void)state;
    for (int m = 0; m < 4; m++) {   /* k = 2 and 3, avg / max */
        pool_cfg c = {2, 3, 5, 6, m < 2 ? 2 : 3, m % 2 == 1};
        size_t nx = 180, ny = 2 * 3 * (size_t)(5 / c.k) * (size_t)(6 / c.k);
        double x[180], r[36], yr[36];
        fill(x, nx, 1.0);
        fill(r, ny, 1.0);
        float *xf = to_f(x, nx), *rf = to_f(r, ny), y[36], dx[180];
        uint8_t idx[36];
        if (c.max)
            as_op_maxpool_fwd(c.N, c.C, c.H, c.W, c.k, xf, y, idx);
        else
            as_op_avgpool_fwd(c.N, c.C, c.H, c.W, c.k, xf, y);
        pool_ref(&c, x, yr);
        check_close(c.max ? "maxpool fwd" : "avgpool fwd", y, yr, ny, 1e-6);
        if (c.max)
            as_op_maxpool_bwd(c.N, c.C, c.H, c.W, c.k, idx, rf, dx);
        else
            as_op_avgpool_bwd(c.N, c.C, c.H, c.W, c.k, rf, dx);
        check_grad(c.max ? "maxpool dx" : "avgpool dx", pool_ref, &c, x, ny,
                   r, dx, 0, nx);
        free(xf);
        free(rf);
    }
}

/* ---- activations, dropout -------------------------------------------- */

typedef struct { int fn; float a; float p; uint64_t seed; } act_cfg;
enum { F_LEAKY, F_GELU, F_DROP };
#define NACT 64
static void act_ref(const void *c_, const double *x, double *y)
{
    const act_cfg *c = c_;
    float ones[NACT], mask[NACT];
    if (c->fn == F_DROP) {
        for (int i = 0; i < NACT; i++)
            ones[i] = 1.0f;
        as_op_dropout_fwd(NACT, c->p, c->seed, ones, mask);
    }
    for (int i = 0; i < NACT; i++) {
        double v = x[i];
        if (c->fn == F_LEAKY)
            y[i] = v > 0 ? v : c->a * v;
        else if (c->fn == F_GELU)
            y[i] = 0.5 * v * (1 + tanh(sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)));
        else
            y[i] = v * mask[i];
    }
}

static void test_activations(void **state)
{
    (void)state;
    const act_cfg cases[] = {{F_LEAKY, 0.0f, 0, 0}, {F_LEAKY, 0.1f, 0, 0},
                             {F_GELU, 0, 0, 0}, {F_DROP, 0, 0.3f, 42}};
    const char *names[] = {"relu", "leaky", "gelu", "dropout"};
    for (size_t k = 0; k < 4; k++) {
        const act_cfg *c = &cases[k];
        double x[NACT], r[NACT], yr[NACT];
        fill(x, NACT, 2.0);
        for (int i = 0; i < NACT; i++)  /* keep away from the kink at 0 */
            if (fabs(x[i]) < 1e-3)
                x[i] = 0.5;
        fill(r, NACT, 1.0);
        float *xf = to_f(x, NACT), *rf = to_f(r, NACT), y[NACT], dx[NACT];
        if (c->fn == F_LEAKY) {
            as_op_leaky_fwd(NACT, c->a, xf, y);
            as_op_leaky_bwd(NACT, c->a, y, rf, dx);
        } else if (c->fn == F_GELU) {
            as_op_gelu_fwd(NACT, xf, y);
            as_op_gelu_bwd(NACT, xf, rf, dx);
        } else {
            as_op_dropout_fwd(NACT, c->p, c->seed, xf, y);
            as_op_dropout_bwd(NACT, c->p, c->seed, rf, dx);
        }
        act_ref(c, x, yr);
        check_close(names[k], y, yr, NACT, 1e-5);
        check_grad(names[k], act_ref, c, x, NACT, r, dx, 0, NACT);
        free(xf);
        free(rf);
    }
    /* leaky inverse */
    float x[4] = {-2.0f, -0.5f, 0.0f, 3.0f}, y[4], z[4];
    as_op_leaky_fwd(4, 0.1f, x, y);
    as_op_leaky_inv(4, 0.1f, y, z);
    for (int i = 0; i < 4; i++)
        assert_float_equal(z[i], x[i], 1e-6);
    /* dropout keeps about 1 - p and is deterministic per seed */
    enum { ND = 10000 };
    float *o = malloc(sizeof(float) * ND), *o2 = malloc(sizeof(float) * ND);
    float *one = malloc(sizeof(float) * ND);
    for (int i = 0; i < ND; i++)
        one[i] = 1.0f;
    as_op_dropout_fwd(ND, 0.25f, 7, one, o);
    as_op_dropout_fwd(ND, 0.25f, 7, one, o2);
    int kept = 0;
    for (int i = 0; i < ND; i++)
        kept += o[i] != 0.0f;
    assert_memory_equal(o, o2, sizeof(float) * ND);
    assert_in_range(kept, 7200, 7800);
    free(o); free(o2); free(one);
}

/* ---- softmax, cross-entropy ------------------------------------------- */

static void test_softmax(void **state)
{
    (void)state;
    const int32_t valid[8] = {7, 3, 1, 7, 5, 2, 6, 4};
    const sm_cfg cases[] = {{8, 7, false, NULL}, {14, 7, true, NULL},
                            {8, 7, false, valid}};
    for (size_t k = 0; k < 3; k++) {
        const sm_cfg *c = &cases[k];
        size_t n = (size_t)c->rows * c->L;
        double x[98], r[98], yr[98];
        fill(x, n, 3.0);
        fill(r, n, 1.0);
        float *xf = to_f(x, n), *rf = to_f(r, n), y[98], dx[98];
        as_op_softmax_fwd(c->rows, c->L, c->causal, c->valid, xf, y);
        sm_ref(c, x, yr);
        check_close("softmax fwd", y, yr, n, 1e-5);
        as_op_softmax_bwd(c->rows, c->L, y, rf, dx);
        check_grad("softmax dx", sm_ref, c, x, n, r, dx, 0, n);
        free(xf);
        free(rf);
    }
}

static void test_xent(void **state)
{
    (void)state;
    const int32_t t[5] = {2, 0, -1, 5, 3};
    xe_cfg c = {5, 6, t};
    double x[30], r[1] = {1.0}, yr;
    fill(x, 30, 3.0);
    float *xf = to_f(x, 30), probs[30], dx[30];
    int hits = -1;
    double loss = as_op_xent_fwd(5, 6, xf, t, probs, &hits);
    xe_ref(&c, x, &yr);
    assert_true(fabs(loss - yr) < 1e-5);
    assert_in_range(hits, 0, 4);
    as_op_xent_bwd(5, 6, probs, t, dx);
    check_grad("xent dlogits", xe_ref, &c, x, 1, r, dx, 0, 30);
    free(xf);
}

AS_TEST_MAIN(NULL, NULL,
             cmocka_unit_test(test_linear),
             cmocka_unit_test(test_conv),
             cmocka_unit_test(test_conv_random),
             cmocka_unit_test(test_gemm),
             cmocka_unit_test(test_backend),
             cmocka_unit_test(test_pool),
             cmocka_unit_test(test_activations),
             cmocka_unit_test(test_softmax),
             cmocka_unit_test(test_xent))

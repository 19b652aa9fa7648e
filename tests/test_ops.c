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

#include "layers/ops.h"
#include "support/fd.h"
#include "support/ref.h"

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
    float *ws = malloc(sizeof(float) * as_op_conv_workspace(&g));
    float *gr = calloc(np, sizeof(float));
    as_op_conv_fwd(&g, pf, pf + nx, pf + nx + nw, y, ws);
    conv_ref(&g, p, yr);
    char what[96];
    snprintf(what, sizeof what, "conv N%d Cin%d %dx%d Cout%d k%d s%d p%d", N,
             Cin, H, W, Cout, k, stride, pad);
    check_close(what, y, yr, ny, 1e-5);
    as_op_conv_bwd(&g, pf, pf + nx, rf, gr, gr + nx, gr + nx + nw, ws);
    check_grad(what, conv_ref, &g, p, ny, r, gr, 0, nx);
    check_grad(what, conv_ref, &g, p, ny, r, gr + nx, nx, nw);
    check_grad(what, conv_ref, &g, p, ny, r, gr + nx + nw, nx + nw, nb);
    free(p); free(r); free(yr); free(pf); free(rf); free(y); free(ws); free(gr);
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

/* ---- pooling ---------------------------------------------------------- */

static void test_pool(void **state)
{
    (void)state;
    for (int m = 0; m < 2; m++) {
        pool_cfg c = {2, 3, 5, 6, 2, m == 1};
        size_t nx = 180, ny = 2 * 3 * 2 * 3;
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_linear),
        cmocka_unit_test(test_conv),
        cmocka_unit_test(test_pool),
        cmocka_unit_test(test_activations),
        cmocka_unit_test(test_softmax),
        cmocka_unit_test(test_xent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

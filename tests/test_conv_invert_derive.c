/* Policy "invert" on a conv input the framework declares derived (a pooled
 * map = the pool's input at the saved argmax): nothing stored, restored
 * bit for bit, any geometry; a source kept as signs only (no values) makes
 * it solve instead. The gather against the max-pool forward. Versions
 * above the condition threshold: admitted by a rebuild at save within the
 * error bound (with an 8-bit residual code when needed), or falling back
 * with the error named. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "actstore/store.h"
#include "layers/ops.h"
#include "store/policies/invert/conv_invert.h"
#include "util/rng.h"
#include "support/store_util.h"
#include "support/test_main.h"

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static float *randv(size_t n, double sd)
{
    float *v = malloc(sizeof(float) * (n ? n : 1));
    assert_non_null(v);
    for (size_t i = 0; i < n; i++)
        v[i] = (float)(sd * as_rng_normal_open(&rng_state));
    return v;
}

/* The pooled map's geometry: z (N, C, H, W) pooled k x k. */
typedef struct pooled {
    int N, C, H, W, k;
    float *z, *x;         /* pool input, pool output (= the conv input) */
    uint8_t *idx;
    as_handle hz, hidx;
} pooled;

static int gather_cb(void *ud, const as_tensor *const *in, size_t n, as_tensor *out)
{
    const pooled *p = ud;
    if (n != 2 || in[0]->dtype != AS_F32 || in[1]->dtype != AS_U8)
        return AS_ESHAPE;
    as_op_maxpool_gather(p->N, p->C, p->H, p->W, p->k, in[0]->data, in[1]->data,
                         out->data);
    return 0;
}

/* z saved as a LeakyReLU output under the store's rules, the argmax as an
 * index, and the pooled map as the input of a Cin -> cout conv (k x k,
 * stride, pad 1) declared derived from (z, argmax). */
static as_handle save_pooled(as_store *s, pooled *p, int cout, int stride,
                             float **w_out, as_handle *hy)
{
    const int Ho = p->H / p->k, Wo = p->W / p->k;
    const size_t nz = (size_t)p->N * p->C * p->H * p->W, nx = (size_t)p->N * p->C * Ho * Wo;
    p->z = randv(nz, 1.0);
    for (size_t i = 0; i < nz; i++)
        p->z[i] = p->z[i] >= 0 ? p->z[i] : 0.1f * p->z[i];
    p->x = malloc(sizeof(float) * nx);
    p->idx = malloc(nx);
    as_op_maxpool_fwd(p->N, p->C, p->H, p->W, p->k, p->z, p->x, p->idx);
    as_save_info zi = {.kind = AS_KIND_ACTIVATION_OUTPUT, .layer = "act"};
    zi.meta.act = (as_elementwise){.fn = AS_FN_LEAKY_RELU, .alpha = 0.1f};
    as_tensor zt = {.data = p->z, .dtype = AS_F32, .ndim = 4,
                    .shape = {p->N, p->C, p->H, p->W}};
    assert_int_equal(as_store_save(s, &zi, &zt, &p->hz), 0);
    as_save_info ii = {.kind = AS_KIND_INDEX, .layer = "pool"};
    as_tensor it = {.data = p->idx, .dtype = AS_U8, .ndim = 4, .shape = {p->N, p->C, Ho, Wo}};
    assert_int_equal(as_store_save(s, &ii, &it, &p->hidx), 0);

    /* the conv's output, for the solve when the derivation cannot serve */
    as_op_conv_geom g = {.N = p->N, .Cin = p->C, .H = Ho, .W = Wo, .Cout = cout,
                         .kh = 3, .kw = 3, .stride = stride, .pad = 1};
    assert_int_equal(as_op_conv_geom_init(&g), 0);
    float *w = randv((size_t)cout * p->C * 9, sqrt(2.0 / (p->C * 9)));
    float *y = malloc(sizeof(float) * (size_t)p->N * cout * g.Ho * g.Wo);
    float *ws = malloc(sizeof(float) * as_op_conv_workspace(&g));
    as_op_conv_fwd(&g, p->x, w, NULL, y, ws);
    free(ws);
    as_save_info oi = {.kind = AS_KIND_CONV_OUTPUT, .layer = "conv"};
    as_tensor ot = {.data = y, .dtype = AS_F32, .ndim = 4, .shape = {p->N, cout, g.Ho, g.Wo}};
    assert_int_equal(as_store_save(s, &oi, &ot, hy), 0);
    free(y);

    const as_handle deps[2] = {p->hz, p->hidx};
    as_save_info xi = {.kind = AS_KIND_CONV_INPUT, .layer = "conv",
                       .recompute = gather_cb, .recompute_ud = p,
                       .recompute_inputs = deps, .recompute_ninputs = 2};
    xi.meta.conv = (as_conv_meta){
        .n = p->N, .cin = p->C, .h = Ho, .w = Wo, .cout = cout, .kh = 3, .kw = 3,
        .stride_h = stride, .stride_w = stride, .pad_h = 1, .pad_w = 1,
        .weight = w, .weight_version = 1, .output = *hy};
    as_tensor xt = {.data = p->x, .dtype = AS_F32, .ndim = 4, .shape = {p->N, p->C, Ho, Wo}};
    as_handle hx;
    if (as_store_save(s, &xi, &xt, &hx))
        fail_msg("save: %s", as_store_last_error(s));
    *w_out = w;
    return hx;
}

static float *restore_all(as_store *s, as_handle h, size_t n)
{
    float *got = malloc(sizeof(float) * n);
    as_tensor d;
    int kind;
    assert_int_equal(as_store_describe(s, h, &d, &kind), 0);
    d.data = got;
    if (as_store_restore(s, h, &d))
        fail_msg("restore: %s", as_store_last_error(s));
    return got;
}

static void free_pooled(pooled *p)
{
    free(p->z);
    free(p->x);
    free(p->idx);
}

static void check_derived(int stride)
{
    as_store *s = store_new("conv_input=invert; default=keep", NULL, false, 0, NULL);
    pooled p = {.N = 3, .C = 4, .H = 14, .W = 10, .k = 2};
    float *w;
    as_handle hy;
    as_handle hx = save_pooled(s, &p, 8, stride, &w, &hy);
    assert_string_equal(as_store_policy_of(s, hx), "invert");
    as_store_stats st;
    assert_int_equal(as_store_stats_take(s, &st), 0);
    assert_int_equal(st.kinds[AS_KIND_CONV_INPUT].stored_live, 0);
    assert_true(st.kinds[AS_KIND_CONV_INPUT].raw_live > 0);
    assert_int_equal(st.kinds[AS_KIND_CONV_INPUT].fallbacks, 0);
    as_store_stats_free(&st);
    /* the handles of the sources may go first: the item keeps them */
    assert_int_equal(as_store_release(s, p.hz), 0);
    assert_int_equal(as_store_release(s, p.hidx), 0);
    const size_t n = (size_t)p.N * p.C * (p.H / 2) * (p.W / 2);
    for (int r = 0; r < 2; r++) {   /* same values every time */
        float *got = restore_all(s, hx, n);
        assert_memory_equal(got, p.x, sizeof(float) * n);
        free(got);
    }
    as__civ_lstats ls;
    assert_int_equal(as__civ_layer_stats(s, NULL, &ls), 0);
    assert_int_equal(ls.derived, 1);
    assert_int_equal(ls.saves, 0);
    free(w);
    free_pooled(&p);
    as_store_destroy(s);
}

static void test_derived_stores_nothing(void **state)
{
    (void)state;
    check_derived(1);
}

/* A stride-2 conv cannot be inverted, but its pooled input is derived. */
static void test_derived_any_geometry(void **state)
{
    (void)state;
    check_derived(2);
}

/* The pool's input kept as signs only (a derivative-only form) cannot serve
 * as a source: the input is inverted from the conv output instead. */
static void test_sign_source_solves(void **state)
{
    (void)state;
    as_store *s = store_new("activation_output=sign; conv_input=invert; default=keep", NULL, false, 0, NULL);
    pooled p = {.N = 2, .C = 4, .H = 16, .W = 16, .k = 2};
    float *w;
    as_handle hy;
    as_handle hx = save_pooled(s, &p, 8, 1, &w, &hy);
    assert_string_equal(as_store_policy_of(s, hx), "invert");
    as__civ_lstats ls;
    assert_int_equal(as__civ_layer_stats(s, NULL, &ls), 0);
    assert_int_equal(ls.derived, 0);
    assert_int_equal(ls.saves, 1);
    as_store_stats st;
    assert_int_equal(as_store_stats_take(s, &st), 0);
    assert_true(st.kinds[AS_KIND_CONV_INPUT].stored_live > 0);   /* the frame */
    as_store_stats_free(&st);
    const size_t n = (size_t)p.N * p.C * 8 * 8;
    float *got = restore_all(s, hx, n);
    double e = 0, m = 0;
    for (size_t i = 0; i < n; i++) {
        e = fmax(e, fabs((double)got[i] - p.x[i]));
        m = fmax(m, fabs((double)p.x[i]));
    }
    assert_true(e <= 1e-4 * m);
    free(got);
    free(w);
    free_pooled(&p);
    as_store_destroy(s);
}

/* as_op_maxpool_gather gives the forward's output bit for bit: ties (the
 * first maximum), signed zeros, windows that do not fill (floor mode). */
static void test_gather_matches_forward(void **state)
{
    (void)state;
    const int shapes[][4] = {{2, 3, 7, 9}, {1, 2, 6, 6}, {3, 1, 10, 5}};
    for (size_t si = 0; si < 3; si++)
        for (int k = 2; k <= 3; k++) {
            const int N = shapes[si][0], C = shapes[si][1], H = shapes[si][2],
                      W = shapes[si][3], Ho = H / k, Wo = W / k;
            const size_t nx = (size_t)N * C * H * W, ny = (size_t)N * C * Ho * Wo;
            float *x = randv(nx, 1.0), *y = malloc(sizeof(float) * ny),
                  *g = malloc(sizeof(float) * ny);
            for (size_t i = 0; i < nx; i += 3)   /* ties and signed zeros */
                x[i] = (i % 2) ? 0.0f : -0.0f;
            uint8_t *idx = malloc(ny);
            as_op_maxpool_fwd(N, C, H, W, k, x, y, idx);
            as_op_maxpool_gather(N, C, H, W, k, x, idx, g);
            assert_memory_equal(g, y, sizeof(float) * ny);
            free(x);
            free(y);
            free(g);
            free(idx);
        }
}

/* One conv (N 2, cin -> cout, 10x10, 3x3 pad 1) saved under spec; returns
 * the policy text of its input and, in *err, the restore's max rel error
 * (-1 when it fell back). */
static const char *save_one(as_store *s, const float *w, int cin, int cout,
                            const float *x, double *err)
{
    static char pol[256];
    as_op_conv_geom g = {.N = 2, .Cin = cin, .H = 10, .W = 10, .Cout = cout,
                         .kh = 3, .kw = 3, .stride = 1, .pad = 1};
    assert_int_equal(as_op_conv_geom_init(&g), 0);
    const size_t nx = (size_t)2 * cin * 100, ny = (size_t)2 * cout * 100;
    float *y = malloc(sizeof(float) * ny), *ws = malloc(sizeof(float) * as_op_conv_workspace(&g));
    as_op_conv_fwd(&g, x, w, NULL, y, ws);
    free(ws);
    as_save_info oi = {.kind = AS_KIND_CONV_OUTPUT, .layer = "c"};
    as_tensor ot = {.data = y, .dtype = AS_F32, .ndim = 4, .shape = {2, cout, 10, 10}};
    as_handle hy, hx;
    assert_int_equal(as_store_save(s, &oi, &ot, &hy), 0);
    as_save_info xi = {.kind = AS_KIND_CONV_INPUT, .layer = "c"};
    xi.meta.conv = (as_conv_meta){.n = 2, .cin = cin, .h = 10, .w = 10, .cout = cout,
                                  .kh = 3, .kw = 3, .pad_h = 1, .pad_w = 1,
                                  .weight = w, .weight_version = 1, .output = hy};
    as_tensor xt = {.data = (void *)x, .dtype = AS_F32, .ndim = 4, .shape = {2, cin, 10, 10}};
    assert_int_equal(as_store_save(s, &xi, &xt, &hx), 0);
    snprintf(pol, sizeof pol, "%s", as_store_policy_of(s, hx));
    *err = -1;
    if (!strstr(pol, "fallback")) {
        float *got = restore_all(s, hx, nx);
        double e = 0, m = 0;
        for (size_t i = 0; i < nx; i++) {
            e = fmax(e, fabs((double)got[i] - x[i]));
            m = fmax(m, fabs((double)x[i]));
        }
        *err = e / m;
        free(got);
    }
    free(y);
    return pol;
}

static as_store *store_at(double cond_max)
{
    char spec[96];
    snprintf(spec, sizeof spec, "conv_input=invert:%.17g; default=keep", cond_max);
    return store_new(spec, NULL, false, 0, NULL);
}

static double cond_of(const float *w, int cin, int cout, const float *x)
{
    as_store *s = store_at(1e30);
    double e;
    save_one(s, w, cin, cout, x, &e);
    as__civ_lstats ls;
    assert_int_equal(as__civ_layer_stats(s, "c", &ls), 0);
    as_store_destroy(s);
    return ls.cond;
}

/* Above the threshold, within 10x of it: the rebuild at save decides. */
static void test_verified_above_threshold(void **state)
{
    (void)state;
    const int cin = 6, cout = 6;
    float *w = randv((size_t)cout * cin * 9, sqrt(2.0 / (cin * 9)));
    float *x = randv((size_t)2 * cin * 100, 1.0);
    const double cond = cond_of(w, cin, cout, x);
    assert_true(cond > 1 && isfinite(cond));
    /* within the span: admitted, error within the bound */
    as_store *s = store_at(cond / 3);
    double e;
    const char *pol = save_one(s, w, cin, cout, x, &e);
    if (strncmp(pol, "invert", 6) || strstr(pol, "fallback"))
        fail_msg("cond %.3g, threshold %.3g: %s", cond, cond / 3, pol);
    assert_true(e >= 0 && e <= 1e-4);
    as__civ_lstats ls;
    assert_int_equal(as__civ_layer_stats(s, "c", &ls), 0);
    assert_int_equal(ls.verified, 1);
    assert_int_equal(ls.saves, 1);
    as_store_destroy(s);
    /* beyond it: the fallback, naming the condition number */
    s = store_at(cond / 20);
    pol = save_one(s, w, cin, cout, x, &e);
    assert_non_null(strstr(pol, "fallback"));
    assert_non_null(strstr(pol, "condition number"));
    as_store_destroy(s);

    free(w);
    free(x);
}

/* Input channel 1's kernels = channel 0's up to `delta` (relative): A(f)
 * nearly singular, cond ~ 1 / delta. */
static float *near_singular(int cin, int cout, float delta)
{
    float *w = randv((size_t)cout * cin * 9, sqrt(2.0 / (cin * 9)));
    for (int o = 0; o < cout; o++)
        for (int t = 0; t < 9; t++)
            w[(o * cin + 1) * 9 + t] = w[(o * cin + 0) * 9 + t] *
                                       (1.0f + delta * (float)((o + t) % 3 - 1));
    return w;
}

/* A rebuild off by more than the bound but less than 1e-2 keeps an 8-bit
 * residual code (1 byte per value) and is admitted within the bound; far
 * worse ones fall back naming the error. */
static void test_residual_or_fallback(void **state)
{
    (void)state;
    const int cin = 6, cout = 6;
    const size_t nx = (size_t)2 * cin * 100;
    float *x = randv(nx, 1.0), *w = near_singular(cin, cout, 1e-3f);
    const double c1 = cond_of(w, cin, cout, x);
    as_store *s = store_at(c1 / 2);
    double e;
    const char *pol = save_one(s, w, cin, cout, x, &e);
    if (strncmp(pol, "invert", 6) || strstr(pol, "fallback") || !(e <= 1e-4))
        fail_msg("cond %.3g: %s (err %.3g)", c1, pol, e);
    as__civ_lstats ls;
    assert_int_equal(as__civ_layer_stats(s, "c", &ls), 0);
    assert_int_equal(ls.verified, 1);
    assert_int_equal(ls.residuals, 1);
    as_store_stats st;
    assert_int_equal(as_store_stats_take(s, &st), 0);
    assert_true(st.kinds[AS_KIND_CONV_INPUT].stored_live >= nx);   /* the codes */
    assert_true(st.kinds[AS_KIND_CONV_INPUT].stored_live < nx * sizeof(float));
    as_store_stats_free(&st);
    as_store_destroy(s);
    free(w);

    w = near_singular(cin, cout, 1e-5f);
    const double c2 = cond_of(w, cin, cout, x);
    s = store_at(c2 / 2);
    pol = save_one(s, w, cin, cout, x, &e);
    if (!strstr(pol, "rebuild error"))
        fail_msg("cond %.3g: %s (err %.3g)", c2, pol, e);
    assert_int_equal(as__civ_layer_stats(s, "c", &ls), 0);
    assert_int_equal(ls.verified, 0);
    as_store_destroy(s);
    free(w);
    free(x);
}


AS_TEST_MAIN(NULL, NULL,
             cmocka_unit_test(test_derived_stores_nothing),
             cmocka_unit_test(test_derived_any_geometry),
             cmocka_unit_test(test_sign_source_solves),
             cmocka_unit_test(test_gather_matches_forward),
             cmocka_unit_test(test_verified_above_threshold),
             cmocka_unit_test(test_residual_or_fallback))

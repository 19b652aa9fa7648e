/* Conv input regeneration by inversion through the store: policy "invert",
 * fallbacks counted per layer, the per-version factor cache, chains of convs
 * with LeakyReLU rebuilt from the top output, weight gradients. */
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

static uint64_t rng_state = 0x2545F4914F6CDD1Dull;
static double nrand(void) { return as_rng_normal_open(&rng_state); }

static float *randv(size_t n, double sd)
{
    float *v = malloc(sizeof(float) * (n ? n : 1));
    assert_non_null(v);
    for (size_t i = 0; i < n; i++)
        v[i] = (float)(sd * nrand());
    return v;
}

static double rel_err(const float *a, const float *ref, size_t n)
{
    double e = 0, m = 0;
    for (size_t i = 0; i < n; i++) {
        e = fmax(e, fabs((double)a[i] - ref[i]));
        m = fmax(m, fabs((double)ref[i]));
    }
    return m > 0 ? e / m : e;
}

/* One conv layer with everything the tests need. */
typedef struct layer {
    as_op_conv_geom g;
    float *w, *b;           /* b may be NULL */
    uint64_t version;
    char name[32];
} layer;

static layer mk_layer(const char *name, int n, int cin, int cout, int h, int w,
                      int k, int stride, int pad, bool bias)
{
    layer l = {.g = {.N = n, .Cin = cin, .H = h, .W = w, .Cout = cout, .kh = k,
                     .kw = k, .stride = stride, .pad = pad}, .version = 1};
    assert_int_equal(as_op_conv_geom_init(&l.g), 0);
    l.w = randv((size_t)cout * cin * k * k, sqrt(2.0 / (cin * k * k)));
    l.b = bias ? randv((size_t)cout, 0.1) : NULL;
    snprintf(l.name, sizeof l.name, "%s", name);
    return l;
}

static void free_layer(layer *l)
{
    free(l->w);
    free(l->b);
}

static size_t xlen(const layer *l) { return (size_t)l->g.N * l->g.Cin * l->g.H * l->g.W; }
static size_t ylen(const layer *l) { return (size_t)l->g.N * l->g.Cout * l->g.Ho * l->g.Wo; }

static void conv_fwd(const layer *l, const float *x, float *y)
{
    float *ws = malloc(sizeof(float) * as_op_conv_workspace(&l->g));
    as_op_conv_fwd(&l->g, x, l->w, l->b, y, ws);
    free(ws);
}

static void conv_wgrad(const layer *l, const float *x, const float *dy, float *dw)
{
    float *ws = malloc(sizeof(float) * as_op_conv_workspace(&l->g));
    memset(dw, 0, sizeof(float) * (size_t)l->g.Cout * l->g.Cin * l->g.kh * l->g.kw);
    as_op_conv_bwd(&l->g, x, l->w, dy, NULL, dw, NULL, ws);
    free(ws);
}

/* Save y (conv_output) then x (conv_input with the metadata), as a layer
 * does. alias: handle x aliases (or null). */
static void save_conv(as_store *s, const layer *l, const float *x, as_handle alias,
                      const float *y, as_handle *hx, as_handle *hy)
{
    as_save_info oi = {.kind = AS_KIND_CONV_OUTPUT, .layer = l->name};
    as_tensor ot = {.data = (void *)y, .dtype = AS_F32, .ndim = 4,
                    .shape = {l->g.N, l->g.Cout, l->g.Ho, l->g.Wo}};
    assert_int_equal(as_store_save(s, &oi, &ot, hy), 0);
    as_save_info xi = {.kind = AS_KIND_CONV_INPUT, .layer = l->name, .alias_of = alias};
    xi.meta.conv = (as_conv_meta){
        .n = l->g.N, .cin = l->g.Cin, .h = l->g.H, .w = l->g.W, .cout = l->g.Cout,
        .kh = l->g.kh, .kw = l->g.kw, .stride_h = l->g.stride, .stride_w = l->g.stride,
        .pad_h = l->g.pad, .pad_w = l->g.pad, .dil_h = 1, .dil_w = 1, .groups = 1,
        .weight = l->w, .bias = l->b, .weight_version = l->version, .output = *hy};
    as_tensor xt = {.data = (void *)x, .dtype = AS_F32, .ndim = 4,
                    .shape = {l->g.N, l->g.Cin, l->g.H, l->g.W}};
    int rc = as_store_save(s, &xi, &xt, hx);
    if (rc)
        fail_msg("save %s: %s", l->name, as_store_last_error(s));
}

static void restore_check(as_store *s, as_handle h, const float *ref, size_t n,
                          double tol, double *err_out)
{
    float *got = malloc(sizeof(float) * n);
    as_tensor d;
    int kind;
    assert_int_equal(as_store_describe(s, h, &d, &kind), 0);
    d.data = got;
    int rc = as_store_restore(s, h, &d);
    if (rc)
        fail_msg("restore: %s", as_store_last_error(s));
    double e = rel_err(got, ref, n);
    if (err_out)
        *err_out = e;
    if (!(e <= tol))
        fail_msg("restore: max rel err %.3g > %.3g (%s)", e, tol, as_store_policy_of(s, h));
    free(got);
}

static as_store_counter kind_counter(as_store *s, int kind)
{
    as_store_stats st;
    assert_int_equal(as_store_stats_take(s, &st), 0);
    as_store_counter c = st.kinds[kind];
    as_store_stats_free(&st);
    return c;
}

static const as_store_layer_stats *find_layer(const as_store_stats *st, const char *name)
{
    for (size_t i = 0; i < st->nlayers; i++)
        if (st->layers[i].name && !strcmp(st->layers[i].name, name))
            return &st->layers[i];
    return NULL;
}

/* ---- one layer ------------------------------------------------------------ */

static void test_invert_roundtrip(void **state)
{
    (void)state;
    as_store *s = store_new("conv_input=invert:1e4:cache:f32; default=keep", NULL, false, 0, NULL);
    /* Odd, non-square map, bias, k 3 pad 1. */
    layer l = mk_layer("conv", 5, 4, 8, 11, 13, 3, 1, 1, true);
    float *x = randv(xlen(&l), 1.0), *y = malloc(sizeof(float) * ylen(&l));
    conv_fwd(&l, x, y);
    as_handle hx, hy;
    save_conv(s, &l, x, AS_HANDLE_NULL, y, &hx, &hy);
    assert_non_null(strstr(as_store_policy_of(s, hx), "invert"));
    assert_null(strstr(as_store_policy_of(s, hx), "fallback"));
    /* Stored: the frame (random data: raw floats) and the bias copy. */
    as__civ_geom g = {.cin = 4, .h = 11, .w = 13, .cout = 8, .kh = 3, .kw = 3,
                       .pad_h = 1, .pad_w = 1, .stride_h = 1, .stride_w = 1,
                       .dil_h = 1, .dil_w = 1, .groups = 1};
    as_store_counter c = kind_counter(s, AS_KIND_CONV_INPUT);
    assert_int_equal(c.raw_live, xlen(&l) * sizeof(float));
    const uint64_t frame_bytes = 5 * 4 * as__civ_frame_len(&g) * sizeof(float);
    assert_true(c.stored_live >= frame_bytes && c.stored_live <= frame_bytes + 8 * sizeof(float) + 64);
    as_store_phase(s, AS_PHASE_BACKWARD);
    double e1, e2;
    restore_check(s, hx, x, xlen(&l), 1e-4, &e1);
    restore_check(s, hx, x, xlen(&l), 1e-4, &e2);   /* again: same values */
    assert_true(e1 == e2);
    {   /* the weight gradient from the rebuilt input */
        float *xr = malloc(sizeof(float) * xlen(&l)), *dy = randv(ylen(&l), 1.0);
        float *dw = malloc(sizeof(float) * 8 * 4 * 9), *dwr = malloc(sizeof(float) * 8 * 4 * 9);
        as_tensor d = {.data = xr, .dtype = AS_F32, .ndim = 4, .shape = {5, 4, 11, 13}};
        assert_int_equal(as_store_restore(s, hx, &d), 0);
        conv_wgrad(&l, x, dy, dw);
        conv_wgrad(&l, xr, dy, dwr);
        assert_true(rel_err(dwr, dw, 8 * 4 * 9) <= 1e-4);
        free(xr); free(dy); free(dw); free(dwr);
    }
    as__civ_lstats ls;
    assert_int_equal(as__civ_layer_stats(s, "conv", &ls), 0);
    assert_int_equal(ls.saves, 1);
    assert_int_equal(ls.cond_checks, 1);
    assert_true(ls.factor_builds == 1 && ls.restores >= 1);
    assert_true(ls.cache_bytes > 0);
    /* The factor is counted while held, and freed with the last item. */
    c = kind_counter(s, AS_KIND_CONV_INPUT);
    assert_true(c.stored_live >= frame_bytes + ls.cache_bytes);
    assert_int_equal(as_store_release(s, hx), 0);
    assert_int_equal(as_store_release(s, hy), 0);
    assert_int_equal(as__civ_layer_stats(s, "conv", &ls), 0);
    assert_int_equal(ls.cache_bytes, 0);
    assert_int_equal(ls.users, 0);
    c = kind_counter(s, AS_KIND_CONV_INPUT);
    assert_int_equal(c.stored_live, 0);
    assert_int_equal(c.raw_live, 0);
    free(x); free(y); free_layer(&l);
    as_store_destroy(s);
}

/* Frame precision: auto gives a well-conditioned, unaliased input a 16-bit
 * frame (int16 codes + one scale per image and channel) within 1e-4; f32
 * keeps it exact; an ill-conditioned version (cond > 100) stays f32 under
 * auto; bad FRAME fields are spec errors. */
static size_t frame_stored(const char *spec, int cin, int cout, double tol,
                           double *cond, double *err)
{
    as_store *s = store_new(spec, NULL, false, 0, NULL);
    rng_state = 0x9E3779B97F4A7C15ull;
    layer l = mk_layer("cq", 5, cin, cout, 11, 13, 3, 1, 1, true);
    float *x = randv(xlen(&l), 1.0), *y = malloc(sizeof(float) * ylen(&l));
    conv_fwd(&l, x, y);
    as_handle hx, hy;
    save_conv(s, &l, x, AS_HANDLE_NULL, y, &hx, &hy);
    assert_null(strstr(as_store_policy_of(s, hx), "fallback"));
    const size_t stored = kind_counter(s, AS_KIND_CONV_INPUT).stored_live;
    as_store_phase(s, AS_PHASE_BACKWARD);
    restore_check(s, hx, x, xlen(&l), tol, err);
    {   /* the weight gradient from the rebuilt input */
        const size_t nw = (size_t)cout * cin * 9;
        float *xr = malloc(sizeof(float) * xlen(&l)), *dy = randv(ylen(&l), 1.0);
        float *dw = malloc(sizeof(float) * nw), *dwr = malloc(sizeof(float) * nw);
        as_tensor d = {.data = xr, .dtype = AS_F32, .ndim = 4, .shape = {5, cin, 11, 13}};
        assert_int_equal(as_store_restore(s, hx, &d), 0);
        conv_wgrad(&l, x, dy, dw);
        conv_wgrad(&l, xr, dy, dwr);
        assert_true(rel_err(dwr, dw, nw) <= 1e-4);
        free(xr); free(dy); free(dw); free(dwr);
    }
    as__civ_lstats ls;
    assert_int_equal(as__civ_layer_stats(s, "cq", &ls), 0);
    *cond = ls.cond;
    as_store_destroy(s);
    free(x); free(y); free_layer(&l);
    return stored;
}

static void test_frame_precision(void **state)
{
    (void)state;
    const size_t flen = 2 * 13 + 2 * (11 - 2), bias = 8 * sizeof(float);
    double cond, e32, e16, eq;
    /* 4 -> 8 (Cout = 2 Cin): cond ~ 5 */
    size_t f32 = frame_stored("conv_input=invert:1e4:auto:f32", 4, 8, 1e-5, &cond, &e32);
    size_t q16 = frame_stored("conv_input=invert", 4, 8, 1e-4, &cond, &e16);
    assert_true(cond <= 100);
    assert_int_equal(f32, 5 * 4 * flen * sizeof(float) + bias);
    assert_int_equal(q16, 5 * 4 * (flen * sizeof(int16_t) + sizeof(float)) + bias);
    assert_true(e16 > e32);   /* the codes are lossy, and within the bound */
    if (getenv("AS_VERBOSE"))
        print_message("4->8 cond %.3g: f32 err %.2e, q16 err %.2e\n", cond, e32, e16);
    /* 8 -> 8: cond above 100 -> auto keeps f32; q16 forced still restores */
    size_t a88 = frame_stored("conv_input=invert", 8, 8, 1e-4, &cond, &eq);
    assert_true(cond > 100);
    assert_int_equal(a88, 5 * 8 * flen * sizeof(float) + bias);
    size_t q88 = frame_stored("conv_input=invert:1e4:stream:q16", 8, 8, 1e-3, &cond, &eq);
    assert_int_equal(q88, 5 * 8 * (flen * sizeof(int16_t) + sizeof(float)) + bias);
    if (getenv("AS_VERBOSE"))
        print_message("8->8 cond %.3g: q16 err %.2e\n", cond, eq);
    spec_err("conv_input=invert:1e4:auto:q8", "frame precision");
    spec_err("conv_input=invert:1e4:auto:f32:x", "derive or solve");
    spec_err("conv_input=invert:1e4:auto:f32:solve:x", "at most four fields");
    spec_ok("conv_input=invert::::solve");
    spec_ok("conv_input=invert::::derive");
    spec_ok("conv_input=invert:::q16");
}

/* Zero image borders (as in Fashion-MNIST) pack into a bitmap. */
static void test_zero_frame_packs_small(void **state)
{
    (void)state;
    as_store *s = store_new("conv_input=invert", NULL, false, 0, NULL);
    layer l = mk_layer("c1", 8, 1, 16, 28, 28, 3, 1, 1, false);
    float *x = calloc(xlen(&l), sizeof(float)), *y = malloc(sizeof(float) * ylen(&l));
    for (int n = 0; n < 8; n++)   /* content only inside rows/cols 4..23 */
        for (int r = 4; r < 24; r++)
            for (int q = 4; q < 24; q++)
                x[(size_t)n * 784 + r * 28 + q] = (float)fabs(nrand());
    conv_fwd(&l, x, y);
    as_handle hx, hy;
    save_conv(s, &l, x, AS_HANDLE_NULL, y, &hx, &hy);
    as_store_counter c = kind_counter(s, AS_KIND_CONV_INPUT);
    const uint64_t raw_frame = 8 * 4 * 27 * sizeof(float);
    assert_true(c.stored_live < raw_frame / 16);   /* bitmap: 1 bit per pixel */
    restore_check(s, hx, x, xlen(&l), 1e-4, NULL);
    as_store_destroy(s);
    free(x); free(y); free_layer(&l);
}

/* Every shape class through the store: Cin = 1, odd / non-square maps,
 * kernels 1/3/5, padding 0/1/2. */
static void test_shapes_through_store(void **state)
{
    (void)state;
    static const int sh[][7] = {   /* n cin cout h w k pad */
        {3, 1, 8, 9, 11, 3, 1}, {2, 3, 6, 7, 12, 5, 2}, {4, 4, 4, 10, 9, 1, 0},
        {2, 2, 5, 13, 11, 5, 0}, {3, 6, 12, 8, 8, 3, 0}, {2, 4, 8, 9, 9, 3, 2},
    };
    as_store *s = store_new("conv_input=invert", NULL, false, 0, NULL);
    for (size_t t = 0; t < sizeof sh / sizeof sh[0]; t++) {
        char name[16];
        snprintf(name, sizeof name, "s%zu", t);
        layer l = mk_layer(name, sh[t][0], sh[t][1], sh[t][2], sh[t][3], sh[t][4],
                           sh[t][5], 1, sh[t][6], t % 2 == 0);
        float *x = randv(xlen(&l), 1.0), *y = malloc(sizeof(float) * ylen(&l));
        conv_fwd(&l, x, y);
        as_handle hx, hy;
        save_conv(s, &l, x, AS_HANDLE_NULL, y, &hx, &hy);
        if (strstr(as_store_policy_of(s, hx), "fallback"))
            fail_msg("shape %zu fell back: %s", t, as_store_policy_of(s, hx));
        restore_check(s, hx, x, xlen(&l), 1e-4, NULL);
        as_store_release(s, hx);
        as_store_release(s, hy);
        free(x); free(y); free_layer(&l);
    }
    as_store_destroy(s);
}

/* ---- fallbacks ------------------------------------------------------------ */

static void expect_fallback(as_store *s, layer *l, const char *reason, const char *used)
{
    float *x = randv(xlen(l), 1.0), *y = malloc(sizeof(float) * ylen(l));
    conv_fwd(l, x, y);
    as_handle hx, hy;
    save_conv(s, l, x, AS_HANDLE_NULL, y, &hx, &hy);
    const char *pol = as_store_policy_of(s, hx);
    if (!strstr(pol, "fallback from invert") || !strstr(pol, reason) ||
        strncmp(pol, used, strlen(used)))
        fail_msg("%s: policy '%s', expected '%s' fallback for '%s'", l->name, pol, used, reason);
    as_store_stats st;
    assert_int_equal(as_store_stats_take(s, &st), 0);
    const as_store_layer_stats *ls = find_layer(&st, l->name);
    assert_non_null(ls);
    assert_int_equal(ls->c.fallbacks, 1);
    assert_non_null(strstr(ls->last_fallback, reason));
    as_store_stats_free(&st);
    /* The fallback keeps the exact values. */
    restore_check(s, hx, x, xlen(l), strcmp(used, "keep") ? 1e-2 : 0.0, NULL);
    free(x); free(y);
}

static void test_fallbacks(void **state)
{
    (void)state;
    as_store *s = store_new("conv_input=invert; default=keep", NULL, false, 0, NULL);
    layer a = mk_layer("stride2", 2, 4, 8, 10, 10, 3, 2, 1, false);
    expect_fallback(s, &a, "stride", "keep");
    layer b = mk_layer("narrow", 2, 8, 4, 10, 10, 3, 1, 1, false);
    expect_fallback(s, &b, "Cout 4 < Cin 8", "keep");
    /* Singular: input channels 0 and 1 see the same weights, so A(f) has
     * two equal columns at every frequency. */
    layer c = mk_layer("singular", 2, 4, 8, 10, 10, 3, 1, 1, false);
    for (int o = 0; o < 8; o++)
        memcpy(c.w + (o * 4 + 1) * 9, c.w + (o * 4 + 0) * 9, 9 * sizeof(float));
    expect_fallback(s, &c, "condition number", "keep");
    as_store_destroy(s);

    /* The rule's named fallback is used, and a threshold argument. */
    s = store_new("conv_input=invert:1e3|fp16", NULL, false, 0, NULL);
    expect_fallback(s, &c, "condition number", "fp16");
    as__civ_lstats ls;
    assert_int_equal(as__civ_layer_stats(s, "singular", &ls), 0);
    assert_true(ls.cond > 1e3);
    assert_int_equal(ls.saves, 0);
    as_store_destroy(s);

    /* Strict mode makes it an error that names the reason. */
    s = store_new("conv_input=invert", NULL, true, 0, NULL);
    float *x = randv(xlen(&a), 1.0), *y = malloc(sizeof(float) * ylen(&a));
    as_handle hy, hx;
    as_save_info oi = {.kind = AS_KIND_CONV_OUTPUT, .layer = a.name};
    as_tensor ot = {.data = y, .dtype = AS_F32, .ndim = 4,
                    .shape = {a.g.N, a.g.Cout, a.g.Ho, a.g.Wo}};
    assert_int_equal(as_store_save(s, &oi, &ot, &hy), 0);
    as_save_info xi = {.kind = AS_KIND_CONV_INPUT, .layer = a.name};
    xi.meta.conv = (as_conv_meta){.n = 2, .cin = 4, .h = 10, .w = 10, .cout = 8,
                                  .kh = 3, .kw = 3, .stride_h = 2, .stride_w = 2,
                                  .pad_h = 1, .pad_w = 1, .dil_h = 1, .dil_w = 1,
                                  .groups = 1, .weight = a.w, .weight_version = 1,
                                  .output = hy};
    as_tensor xt = {.data = x, .dtype = AS_F32, .ndim = 4, .shape = {2, 4, 10, 10}};
    assert_int_equal(as_store_save(s, &xi, &xt, &hx), AS_EFALLBACK);
    assert_non_null(strstr(as_store_last_error(s), "stride"));
    /* Metadata that contradicts the tensor is AS_EMETA in strict mode: a
     * shape other than (n, cin, h, w), weights missing, an impossible
     * geometry. Stride, dilation and groups 0 mean 1 (not a mismatch). */
    float *y1 = randv((size_t)2 * 8 * 10 * 10, 1.0);  /* stride-1 output */
    as_tensor ot1 = {.data = y1, .dtype = AS_F32, .ndim = 4,
                     .shape = {2, 8, 10, 10}};
    assert_int_equal(as_store_save(s, &oi, &ot1, &hy), 0);
    xi.meta.conv.output = hy;
    xi.meta.conv.stride_h = xi.meta.conv.stride_w = 0;
    xi.meta.conv.dil_h = xi.meta.conv.dil_w = xi.meta.conv.groups = 0;
    int rc0 = as_store_save(s, &xi, &xt, &hx);
    if (rc0 != 0)
        assert_non_null(strstr(as_store_last_error(s), "condition"));
    else
        assert_string_equal(as_store_policy_of(s, hx), "invert");
    as_conv_meta good = xi.meta.conv;
    xi.meta.conv.h = 9;
    assert_int_equal(as_store_save(s, &xi, &xt, &hx), AS_EMETA);
    assert_non_null(strstr(as_store_last_error(s), "(N, Cin, H, W)"));
    xi.meta.conv = good;
    xi.meta.conv.weight = NULL;
    assert_int_equal(as_store_save(s, &xi, &xt, &hx), AS_EMETA);
    assert_non_null(strstr(as_store_last_error(s), "no weights"));
    xi.meta.conv = good;
    xi.meta.conv.kh = 0;
    assert_int_equal(as_store_save(s, &xi, &xt, &hx), AS_EMETA);
    assert_non_null(strstr(as_store_last_error(s), "geometry"));
    xi.meta.conv = good;
    xi.meta.conv.cout = 16;   /* the saved output has 8 channels */
    assert_int_equal(as_store_save(s, &xi, &xt, &hx), AS_EMETA);
    assert_non_null(strstr(as_store_last_error(s), "conv output"));
    xi.meta.conv = good;
    as_store_stats mst;
    assert_int_equal(as_store_stats_take(s, &mst), 0);
    assert_int_equal(mst.kinds[AS_KIND_CONV_INPUT].meta_mismatches, 4);
    as_store_stats_free(&mst);
    /* not strict: the same mismatch falls back, counted */
    as_store_destroy(s);
    s = store_new("conv_input=invert", NULL, false, 0, NULL);
    assert_int_equal(as_store_save(s, &oi, &ot1, &hy), 0);
    xi.meta.conv.output = hy;
    free(y1);
    xi.meta.conv.weight = NULL;
    assert_int_equal(as_store_save(s, &xi, &xt, &hx), 0);
    assert_non_null(strstr(as_store_policy_of(s, hx), "fallback"));
    assert_int_equal(as_store_stats_take(s, &mst), 0);
    assert_int_equal(mst.total.meta_mismatches, 1);
    assert_non_null(strstr(find_layer(&mst, a.name)->last_meta_mismatch,
                           "no weights"));
    as_store_stats_free(&mst);
    xi.meta.conv = good;
    /* No output handle: falls back too (non-strict). */
    as_store_destroy(s);
    s = store_new("conv_input=invert", NULL, false, 0, NULL);
    xi.meta.conv.stride_h = xi.meta.conv.stride_w = 1;
    xi.meta.conv.output = AS_HANDLE_NULL;
    assert_int_equal(as_store_save(s, &xi, &xt, &hx), 0);
    assert_non_null(strstr(as_store_policy_of(s, hx), "no saved conv output"));
    as_store_destroy(s);
    /* A channel-blocked input, (N, ceil(Cin / L), H, W, L), is the same
     * values in another order: not solved, it falls back naming the
     * layout, and is no metadata mismatch. */
    s = store_new("conv_input=invert", NULL, false, 0, NULL);
    float *y2 = randv((size_t)2 * 8 * 10 * 10, 1.0);
    as_tensor ot2 = {.data = y2, .dtype = AS_F32, .ndim = 4, .shape = {2, 8, 10, 10}};
    assert_int_equal(as_store_save(s, &oi, &ot2, &hy), 0);
    xi.meta.conv.output = hy;
    as_tensor xb = {.data = x, .dtype = AS_F32, .ndim = 5, .shape = {2, 1, 10, 10, 4}};
    assert_int_equal(as_store_save(s, &xi, &xb, &hx), 0);
    assert_non_null(strstr(as_store_policy_of(s, hx), "layout: channel-blocked"));
    float *xr = malloc(sizeof(float) * xlen(&a));
    as_tensor rt = xb;
    rt.data = xr;
    assert_int_equal(as_store_restore(s, hx, &rt), 0);
    assert_memory_equal(xr, x, sizeof(float) * xlen(&a));
    assert_int_equal(as_store_stats_take(s, &mst), 0);
    assert_int_equal(mst.total.meta_mismatches, 0);
    assert_int_equal(mst.total.fallbacks, 1);
    as_store_stats_free(&mst);
    as_store_destroy(s);
    free(y2);
    free(xr);
    /* Bad threshold argument: a spec error naming invert. */
    spec_err("conv_input=invert:abc", "invert");
    spec_ok("conv_input=invert:1e5");
    free(x); free(y);
    free_layer(&a); free_layer(&b); free_layer(&c);
}

/* ---- per-version factor ---------------------------------------------------- */

static void test_factor_per_version(void **state)
{
    (void)state;
    as_store *s = store_new("conv_input=invert:1e4:cache", NULL, false, 0, NULL);
    layer l = mk_layer("conv", 3, 4, 6, 9, 9, 3, 1, 1, true);
    for (int step = 0; step < 2; step++) {
        /* Two micro-batches of the same weights in one step. */
        float *x[2], *y[2];
        as_handle hx[2], hy[2];
        for (int k = 0; k < 2; k++) {
            x[k] = randv(xlen(&l), 1.0);
            y[k] = malloc(sizeof(float) * ylen(&l));
            conv_fwd(&l, x[k], y[k]);
            save_conv(s, &l, x[k], AS_HANDLE_NULL, y[k], &hx[k], &hy[k]);
        }
        as__civ_lstats ls;
        assert_int_equal(as__civ_layer_stats(s, "conv", &ls), 0);
        assert_int_equal(ls.cond_checks, (uint64_t)step + 1);   /* once per version */
        assert_int_equal(ls.factor_builds, (uint64_t)step);     /* built at restore */
        as_store_phase(s, AS_PHASE_BACKWARD);
        for (int k = 1; k >= 0; k--)
            restore_check(s, hx[k], x[k], xlen(&l), 1e-4, NULL);
        assert_int_equal(as__civ_layer_stats(s, "conv", &ls), 0);
        assert_int_equal(ls.factor_builds, (uint64_t)step + 1); /* one per version */
        assert_int_equal(ls.factor_hits, (uint64_t)step + 1);   /* the second restore */
        for (int k = 0; k < 2; k++) {
            as_store_release(s, hx[k]);
            as_store_release(s, hy[k]);
            free(x[k]);
            free(y[k]);
        }
        assert_int_equal(as__civ_layer_stats(s, "conv", &ls), 0);
        assert_int_equal(ls.cache_bytes, 0);
        as_store_phase(s, AS_PHASE_OPTIMIZER);
        /* A weight update: new version, new factor (checked by the values
         * of the next step's restores). */
        for (size_t i = 0; i < (size_t)6 * 4 * 9; i++)
            l.w[i] += (float)(0.1 * nrand());
        l.version++;
    }
    free_layer(&l);
    as_store_destroy(s);
}

/* Streaming (the factor never held whole) gives the same values as the
 * cached factor, and auto streams when the factor is big next to x. */
static void test_stream_matches_cache(void **state)
{
    (void)state;
    static const char *const specs[3] = {"conv_input=invert:1e4:cache",
                                         "conv_input=invert:1e4:stream",
                                         "conv_input=invert"};
    layer l = mk_layer("conv", 3, 6, 9, 15, 14, 3, 1, 1, true);   /* direct path */
    float *x = randv(xlen(&l), 1.0), *y = malloc(sizeof(float) * ylen(&l));
    float *out[3];
    conv_fwd(&l, x, y);
    for (int k = 0; k < 3; k++) {
        as_store *s = store_new(specs[k], NULL, false, 0, NULL);
        as_handle hx, hy;
        save_conv(s, &l, x, AS_HANDLE_NULL, y, &hx, &hy);
        out[k] = malloc(sizeof(float) * xlen(&l));
        as_tensor d = {.data = out[k], .dtype = AS_F32, .ndim = 4, .shape = {3, 6, 15, 14}};
        assert_int_equal(as_store_restore(s, hx, &d), 0);
        assert_true(rel_err(out[k], x, xlen(&l)) <= 1e-4);
        as__civ_lstats ls;
        assert_int_equal(as__civ_layer_stats(s, "conv", &ls), 0);
        assert_int_equal(ls.factor_builds, 1);
        assert_int_equal(ls.streamed, k == 0 ? 0 : 1);   /* auto: factor > x/8 here */
        assert_int_equal(ls.cache_bytes, k == 0 ? ls.cache_bytes : 0);
        as_store_destroy(s);
    }
    assert_memory_equal(out[0], out[1], sizeof(float) * xlen(&l));
    assert_memory_equal(out[0], out[2], sizeof(float) * xlen(&l));
    for (int k = 0; k < 3; k++)
        free(out[k]);
    free(x); free(y); free_layer(&l);
    spec_err("conv_input=invert:1e4:sometimes", "factor mode");
}

/* Two unnamed layers of one geometry and one weight version, and weights
 * changed under an unchanged version: never a stale factor. */
static void test_cache_key(void **state)
{
    (void)state;
    as_store *s = store_new("conv_input=invert:1e4:cache", NULL, false, 0, NULL);
    layer a = mk_layer("", 3, 4, 6, 9, 9, 3, 1, 1, false);
    layer b = mk_layer("", 3, 4, 6, 9, 9, 3, 1, 1, false);
    float *x = randv(xlen(&a), 1.0), *ya = malloc(sizeof(float) * ylen(&a)),
          *yb = malloc(sizeof(float) * ylen(&b));
    conv_fwd(&a, x, ya);
    conv_fwd(&b, x, yb);
    as_handle hxa, hya, hxb, hyb;
    save_conv(s, &a, x, AS_HANDLE_NULL, ya, &hxa, &hya);
    save_conv(s, &b, x, AS_HANDLE_NULL, yb, &hxb, &hyb);
    restore_check(s, hxb, x, xlen(&b), 1e-4, NULL);
    restore_check(s, hxa, x, xlen(&a), 1e-4, NULL);
    as_store_release(s, hxa);
    as_store_release(s, hya);
    /* b's weights change, its version does not */
    for (size_t i = 0; i < (size_t)6 * 4 * 9; i++)
        b.w[i] *= 1.5f;
    conv_fwd(&b, x, yb);
    as_handle hxc, hyc;
    save_conv(s, &b, x, AS_HANDLE_NULL, yb, &hxc, &hyc);
    restore_check(s, hxc, x, xlen(&b), 1e-4, NULL);
    as_store_destroy(s);
    free(x); free(ya); free(yb); free_layer(&a); free_layer(&b);
}

/* ---- chains ---------------------------------------------------------------- */

static void leaky(const float *y, float *z, size_t n, float a)
{
    for (size_t i = 0; i < n; i++)
        z[i] = y[i] >= 0 ? y[i] : a * y[i];
}

/* Four stride-1 convs with LeakyReLU between them, saved the way the
 * reference framework's layers do: the conv input aliases the previous
 * activation's saved output, and the activation output names the conv
 * output its source through leaky_relu. Only the top activation and the
 * frames stay; everything else is rebuilt, and the weight gradients from
 * the rebuilt inputs match the exact ones. */
static void run_chain(int act_fn, bool *all_dropped)
{
    enum { L = 4 };
    static const int ch[L + 1] = {3, 8, 8, 16, 16};
    const int n = 4, H = 12, W = 10;
    const float alpha = 0.1f;
    rng_state = 0x2545F4914F6CDD1Dull;   /* the same draws whatever ran before */
    /* f32 frames: the byte count below is exact (auto would give the
     * first, unaliased input a 16-bit frame). */
    as_store *s = store_new("conv_input=invert:::f32; default=keep", NULL, false, 0, NULL);
    layer l[L];
    float *x[L + 1], *y[L];
    as_handle hx[L], hy[L], hz[L];
    x[0] = randv((size_t)n * ch[0] * H * W, 1.0);
    as_store_phase(s, AS_PHASE_FORWARD);
    for (int i = 0; i < L; i++) {
        char name[16];
        snprintf(name, sizeof name, "conv%d", i);
        l[i] = mk_layer(name, n, ch[i], ch[i + 1], H, W, 3, 1, 1, true);
        y[i] = malloc(sizeof(float) * ylen(&l[i]));
        conv_fwd(&l[i], x[i], y[i]);
        save_conv(s, &l[i], x[i], i ? hz[i - 1] : AS_HANDLE_NULL, y[i], &hx[i], &hy[i]);
        x[i + 1] = malloc(sizeof(float) * ylen(&l[i]));
        leaky(y[i], x[i + 1], ylen(&l[i]), act_fn == AS_FN_RELU ? 0.0f : alpha);
        char an[16];
        snprintf(an, sizeof an, "act%d", i);
        as_save_info ai = {.kind = AS_KIND_ACTIVATION_OUTPUT, .layer = an,
                           .source = hy[i]};
        ai.meta.act = (as_elementwise){.fn = act_fn, .alpha = act_fn == AS_FN_RELU ? 0 : alpha};
        ai.source_fn = ai.meta.act;
        as_tensor zt = {.data = x[i + 1], .dtype = AS_F32, .ndim = 4,
                        .shape = {n, ch[i + 1], H, W}};
        assert_int_equal(as_store_save(s, &ai, &zt, &hz[i]), 0);
    }
    /* Memory: conv inputs hold frames (+ bias copies), conv outputs are
     * rebuilt (leaky) or kept (relu), one activation is kept (the top). */
    as_store_counter ci = kind_counter(s, AS_KIND_CONV_INPUT);
    as_store_counter co = kind_counter(s, AS_KIND_CONV_OUTPUT);
    as_store_counter ao = kind_counter(s, AS_KIND_ACTIVATION_OUTPUT);
    uint64_t frames = 0, ys = 0;
    for (int i = 0; i < L; i++) {
        frames += (uint64_t)n * ch[i] * (2 * W + 2 * (H - 2)) * sizeof(float) +
                  (uint64_t)ch[i + 1] * sizeof(float);
        if (i)   /* aliased inputs: sign bitmap, 1 bit per value */
            frames += ((uint64_t)n * ch[i] * H * W + 63) / 64 * 8;
        ys += ylen(&l[i]) * sizeof(float);
    }
    if (ci.stored_live != frames)
        fail_msg("conv_input stored %llu, frames %llu", (unsigned long long)ci.stored_live,
                 (unsigned long long)frames);
    assert_int_equal(ao.stored_live, ylen(&l[L - 1]) * sizeof(float));
    if (act_fn == AS_FN_LEAKY_RELU)
        assert_int_equal(co.stored_live, 0);
    else
        assert_int_equal(co.stored_live, ys);
    for (int i = 1; i < L; i++)
        assert_non_null(strstr(as_store_policy_of(s, hx[i]), "invert"));
    *all_dropped = co.stored_live == 0;

    /* Backward, top down: activation, then conv (dW from the rebuilt x). */
    as_store_phase(s, AS_PHASE_BACKWARD);
    for (int i = L - 1; i >= 0; i--) {
        const size_t yl = ylen(&l[i]), xl = xlen(&l[i]);
        const size_t wl = (size_t)l[i].g.Cout * l[i].g.Cin * 9;
        /* Error grows along the chain: each leaky inverse multiplies the
         * error of negative entries by 1/alpha (docs/policies.md). */
        const int links = L - 1 - i;   /* leaky inverses above this input */
        const double tol = 1e-4 * pow(act_fn == AS_FN_RELU ? 1.0 : 1.0 / alpha, links);
        restore_check(s, hz[i], x[i + 1], yl, tol, NULL);
        {   /* the activation's derivative mask (y > 0) is exact */
            float *zr = malloc(sizeof(float) * yl);
            as_tensor d = {.data = zr, .dtype = AS_F32, .ndim = 4,
                           .shape = {n, ch[i + 1], H, W}};
            assert_int_equal(as_store_restore(s, hz[i], &d), 0);
            size_t bad = 0, zeros = 0;
            for (size_t k = 0; k < yl; k++) {
                bad += (zr[k] > 0) != (x[i + 1][k] > 0);
                zeros += x[i + 1][k] == 0 && zr[k] == 0;
            }
            assert_int_equal(bad, 0);
            if (act_fn == AS_FN_RELU)   /* ReLU zeros come back exactly */
                assert_true(zeros * 3 > yl);
            free(zr);
        }
        restore_check(s, hy[i], y[i], yl, 10 * tol, NULL);
        float *xr = malloc(sizeof(float) * xl);
        as_tensor d = {.data = xr, .dtype = AS_F32, .ndim = 4,
                       .shape = {n, ch[i], H, W}};
        if (as_store_restore(s, hx[i], &d))
            fail_msg("conv%d: %s", i, as_store_last_error(s));
        double ex = rel_err(xr, x[i], xl);
        as__civ_lstats ls = {0};
        as__civ_layer_stats(s, l[i].name, &ls);
        if (getenv("AS_VERBOSE"))
            printf("conv%d: input rel err %.3g cond %.3g\n", i, ex, ls.cond);
        if (!(ex <= tol))
            fail_msg("conv%d input: rel err %.3g", i, ex);
        float *dy = randv(yl, 1.0), *dw = malloc(sizeof(float) * wl),
              *dwr = malloc(sizeof(float) * wl);
        conv_wgrad(&l[i], x[i], dy, dw);
        conv_wgrad(&l[i], xr, dy, dwr);
        double eg = rel_err(dwr, dw, wl);
        if (getenv("AS_VERBOSE"))
            printf("conv%d: dW rel err %.3g\n", i, eg);
        if (!(eg <= tol))
            fail_msg("conv%d dW: rel err %.3g > %.3g", i, eg, tol);
        as_store_release(s, hz[i]);
        as_store_release(s, hx[i]);
        as_store_release(s, hy[i]);
        free(xr); free(dy); free(dw); free(dwr);
    }
    as_store_counter tot = kind_counter(s, AS_KIND_CONV_INPUT);
    assert_int_equal(tot.stored_live, 0);
    as_store_phase(s, AS_PHASE_OPTIMIZER);
    as_store_destroy(s);
    for (int i = 0; i < L; i++) {
        free(y[i]);
        free_layer(&l[i]);
    }
    for (int i = 0; i <= L; i++)
        free(x[i]);
}

static void test_chain_four_convs_leaky(void **state)
{
    (void)state;
    bool dropped = false;
    run_chain(AS_FN_LEAKY_RELU, &dropped);
    assert_true(dropped);
}

/* Plain ReLU: the chain stops (conv outputs stay), inputs still dropped. */
static void test_chain_relu_keeps_outputs(void **state)
{
    (void)state;
    bool dropped = true;
    run_chain(AS_FN_RELU, &dropped);
    assert_false(dropped);
}

AS_TEST_MAIN(NULL, NULL,
             cmocka_unit_test(test_invert_roundtrip),
             cmocka_unit_test(test_frame_precision),
             cmocka_unit_test(test_zero_frame_packs_small),
             cmocka_unit_test(test_shapes_through_store),
             cmocka_unit_test(test_fallbacks),
             cmocka_unit_test(test_factor_per_version),
             cmocka_unit_test(test_stream_matches_cache),
             cmocka_unit_test(test_cache_key),
             cmocka_unit_test(test_chain_four_convs_leaky),
             cmocka_unit_test(test_chain_relu_keeps_outputs))

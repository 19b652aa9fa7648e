/* Conv input regeneration by inversion: the solver (store/policies/invert/conv_invert.h). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "store/policies/invert/conv_invert.h"
#include "util/rng.h"
#include "support/test_main.h"

static uint64_t rng_state = 88172645463325252ull;
static double nrand(void) { return as_rng_normal(&rng_state); }

static as__civ_geom geom(int cin, int h, int w, int cout, int k, int pad)
{
    as__civ_geom g = {.cin = cin, .h = h, .w = w, .cout = cout, .kh = k, .kw = k,
                       .pad_h = pad, .pad_w = pad, .stride_h = 1, .stride_w = 1,
                       .dil_h = 1, .dil_w = 1, .groups = 1};
    return g;
}

/* Direct cross-correlation in double, stored as float (like a framework). */
static void conv_ref(const as__civ_geom *g, int n, const float *x, const float *w,
                     const float *bias, float *y)
{
    int ho = as__civ_out_h(g), wo = as__civ_out_w(g);
    for (int b = 0; b < n; b++)
        for (int o = 0; o < g->cout; o++)
            for (int i = 0; i < ho; i++)
                for (int j = 0; j < wo; j++) {
                    double s = bias ? bias[o] : 0;
                    for (int c = 0; c < g->cin; c++)
                        for (int u = 0; u < g->kh; u++)
                            for (int v = 0; v < g->kw; v++) {
                                int r = i + u - g->pad_h, q = j + v - g->pad_w;
                                if (r < 0 || r >= g->h || q < 0 || q >= g->w)
                                    continue;
                                s += (double)w[((o * g->cin + c) * g->kh + u) * g->kw + v] *
                                     x[((b * g->cin + c) * g->h + r) * g->w + q];
                            }
                    y[((b * g->cout + o) * ho + i) * wo + j] = (float)s;
                }
}

/* dW = sum over batch and output pixels of dY * X (double accumulation). */
static void wgrad_ref(const as__civ_geom *g, int n, const float *x, const float *dy, double *dw)
{
    int ho = as__civ_out_h(g), wo = as__civ_out_w(g);
    for (int o = 0; o < g->cout; o++)
        for (int c = 0; c < g->cin; c++)
            for (int u = 0; u < g->kh; u++)
                for (int v = 0; v < g->kw; v++) {
                    double s = 0;
                    for (int b = 0; b < n; b++)
                        for (int i = 0; i < ho; i++)
                            for (int j = 0; j < wo; j++) {
                                int r = i + u - g->pad_h, q = j + v - g->pad_w;
                                if (r < 0 || r >= g->h || q < 0 || q >= g->w)
                                    continue;
                                s += (double)dy[((b * g->cout + o) * ho + i) * wo + j] *
                                     x[((b * g->cin + c) * g->h + r) * g->w + q];
                            }
                    dw[((o * g->cin + c) * g->kh + u) * g->kw + v] = s;
                }
}

static double max_rel_err(const float *a, const float *ref, size_t len)
{
    double e = 0, m = 0;
    for (size_t i = 0; i < len; i++) {
        double d = fabs((double)a[i] - ref[i]);
        if (d > e) e = d;
        if (fabs(ref[i]) > m) m = fabs(ref[i]);
    }
    return m > 0 ? e / m : e;
}

static float *rand_weights(const as__civ_geom *g)
{
    size_t len = (size_t)g->cout * g->cin * g->kh * g->kw;
    float *w = malloc(sizeof(float) * len);
    double sd = sqrt(2.0 / (g->cin * g->kh * g->kw));   /* He */
    for (size_t i = 0; i < len; i++)
        w[i] = (float)(sd * nrand());
    return w;
}

static float *rand_input(const as__civ_geom *g, int n)
{
    size_t len = (size_t)n * g->cin * g->h * g->w;
    float *x = malloc(sizeof(float) * len);
    for (size_t i = 0; i < len; i++)
        x[i] = (float)nrand();
    return x;
}

/* Forward, extract frame, invert; returns the max relative error or -1 when
 * the policy fell back (cond above the threshold). */
static double roundtrip(const as__civ_geom *g, int n, const float *w, const float *x,
                        float *xr, double *cond, as__civ *ci, uint64_t version)
{
    int ho = as__civ_out_h(g), wo = as__civ_out_w(g);
    float *bias = malloc(sizeof(float) * g->cout);
    for (int o = 0; o < g->cout; o++)
        bias[o] = (float)(0.1 * nrand());
    float *y = malloc(sizeof(float) * (size_t)n * g->cout * ho * wo);
    size_t flen = as__civ_frame_len(g);
    float *frame = malloc(sizeof(float) * ((size_t)n * g->cin * flen + 1));
    conv_ref(g, n, x, w, bias, y);
    as__civ_frame_extract(g, n, x, frame);
    char why[200];
    double err = -1;
    int rc = as__civ_prepare(ci, w, version, cond, why, sizeof why);
    if (rc == 0) {
        assert_int_equal(as__civ_restore(ci, n, y, bias, frame, xr), 0);
        err = max_rel_err(xr, x, (size_t)n * g->cin * g->h * g->w);
    } else {
        assert_int_equal(rc, AS_EFALLBACK);
        assert_true(strstr(why, "condition number") != NULL);
    }
    free(bias); free(y); free(frame);
    return err;
}

static void test_fft_matches_dft(void **state)
{
    (void)state;
    const int lens[] = {1, 2, 3, 4, 5, 6, 8, 9, 10, 12, 15, 16, 30, 32, 36, 45, 72};
    const size_t B = 8;
    for (size_t t = 0; t < sizeof lens / sizeof lens[0]; t++) {
        int n = lens[t];
        for (int sign = -1; sign <= 1; sign += 2) {
            as__civ_fft f;
            assert_int_equal(as__civ_fft_init(&f, n, sign), 0);
            float *in = malloc(sizeof(float) * 2 * B * n), *out = malloc(sizeof(float) * 2 * B * n);
            for (size_t i = 0; i < 2 * B * n; i++)
                in[i] = (float)nrand();
            as__civ_fft_run(&f, out, 2 * B, in, 2 * B, B);
            double err = 0, mag = 0;
            for (int j = 0; j < n; j++)
                for (size_t l = 0; l < B; l++) {
                    double sr = 0, si = 0;
                    for (int k = 0; k < n; k++) {
                        double a = sign * 2 * M_PI * (double)j * k / n;
                        double xr = in[k * 2 * B + l], xi = in[k * 2 * B + B + l];
                        sr += xr * cos(a) - xi * sin(a);
                        si += xr * sin(a) + xi * cos(a);
                    }
                    err = fmax(err, fabs(sr - out[j * 2 * B + l]));
                    err = fmax(err, fabs(si - out[j * 2 * B + B + l]));
                    mag = fmax(mag, fmax(fabs(sr), fabs(si)));
                }
            assert_true(err <= 1e-5 * mag + 1e-6);
            free(in); free(out);
            as__civ_fft_free(&f);
        }
    }
    assert_int_equal(as__civ_fft_good_size(31), 32);
    assert_int_equal(as__civ_fft_good_size(66), 72);
    assert_int_equal(as__civ_fft_good_size(7), 8);
}

static void test_frame_geometry(void **state)
{
    (void)state;
    as__civ_geom g = geom(2, 28, 28, 2, 3, 1);
    assert_int_equal(as__civ_frame_rows(&g), 1);
    assert_int_equal(as__civ_frame_len(&g), 4 * 27);   /* 4(H-1) for p = 1 */
    g = geom(2, 10, 12, 2, 5, 0);                       /* pad 0: k-1 wide */
    assert_int_equal(as__civ_frame_rows(&g), 4);
    assert_int_equal(as__civ_frame_len(&g), 2 * 4 * 12 + 2 * 4 * 2);
    g = geom(2, 10, 12, 2, 3, 2);                       /* pad > k-1: none */
    assert_int_equal(as__civ_frame_len(&g), 0);
    /* extract: the frame holds exactly the outer pixels, in order */
    g = geom(1, 4, 5, 1, 3, 1);
    float x[20], fr[14];
    for (int i = 0; i < 20; i++) x[i] = (float)i;
    as__civ_frame_extract(&g, 1, x, fr);
    const float want[14] = {0, 1, 2, 3, 4, 15, 16, 17, 18, 19, 5, 9, 10, 14};
    assert_memory_equal(fr, want, sizeof want);
}

/* Every shape class: Cin = 1, odd and non-square sizes, k 1/3/5, padding
 * 0/1/2, Cout = Cin and Cout > Cin, odd batch. */
static void test_reconstruction_shapes(void **state)
{
    (void)state;
    static const int shapes[][7] = {
        /* n, cin, h, w, cout, k, pad */
        {4, 1, 9, 11, 4, 3, 1},  {3, 1, 28, 28, 16, 3, 1}, {5, 3, 8, 13, 5, 3, 0},
        {4, 4, 12, 10, 4, 5, 2}, {2, 4, 11, 13, 6, 5, 0},   {5, 6, 10, 10, 8, 1, 0},
        {2, 4, 9, 9, 4, 3, 2},   {4, 8, 16, 16, 8, 3, 1},   {3, 5, 7, 7, 10, 5, 1},
        {1, 2, 6, 5, 2, 3, 0},   {6, 16, 14, 14, 32, 3, 1}, {3, 8, 11, 6, 8, 1, 0},
    };
    int applied = 0;
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++) {
        const int *s = shapes[t];
        as__civ_geom g = geom(s[1], s[2], s[3], s[4], s[5], s[6]);
        as__civ *ci = NULL;
        char why[200] = "";
        if (as__civ_create(&g, NULL, &ci, why, sizeof why))
            fail_msg("shape %zu: %s", t, why);
        float *w = rand_weights(&g), *x = rand_input(&g, s[0]);
        float *xr = malloc(sizeof(float) * s[0] * g.cin * g.h * g.w);
        double cond = 0;
        double err = roundtrip(&g, s[0], w, x, xr, &cond, ci, 1);
        if (getenv("AS_VERBOSE"))
            printf("shape %zu: n %d cin %d %dx%d cout %d k %d pad %d: err %.3g cond %.3g\n",
                   t, s[0], s[1], s[2], s[3], s[4], s[5], s[6], err, cond);
        if (err >= 0) {
            applied++;
            assert_true(cond <= 1e4);
            if (!(err <= 1e-4))
                fail_msg("shape %zu: max rel err %.3g (cond %.3g)", t, err, cond);
        } else {
            assert_true(cond > 1e4);
        }
        free(w); free(x); free(xr);
        as__civ_destroy(ci);
    }
    assert_true(applied >= 10);   /* the tolerance test is not vacuous */
}

static void test_weight_gradient_from_rebuilt_input(void **state)
{
    (void)state;
    as__civ_geom g = geom(6, 12, 10, 8, 3, 1);
    const int n = 5, ho = as__civ_out_h(&g), wo = as__civ_out_w(&g);
    as__civ *ci = NULL;
    assert_int_equal(as__civ_create(&g, NULL, &ci, NULL, 0), 0);
    float *w = rand_weights(&g), *x = rand_input(&g, n);
    float *xr = malloc(sizeof(float) * n * g.cin * g.h * g.w);
    double cond;
    double err = roundtrip(&g, n, w, x, xr, &cond, ci, 7);
    assert_true(err >= 0 && err <= 1e-4);
    float *dy = malloc(sizeof(float) * n * g.cout * ho * wo);
    for (int i = 0; i < n * g.cout * ho * wo; i++)
        dy[i] = (float)nrand();
    size_t wl = (size_t)g.cout * g.cin * g.kh * g.kw;
    double *dw = malloc(sizeof(double) * wl), *dwr = malloc(sizeof(double) * wl);
    wgrad_ref(&g, n, x, dy, dw);
    wgrad_ref(&g, n, xr, dy, dwr);
    double e = 0, m = 0;
    for (size_t i = 0; i < wl; i++) {
        e = fmax(e, fabs(dw[i] - dwr[i]));
        m = fmax(m, fabs(dw[i]));
    }
    assert_true(e / m <= 1e-4);
    free(w); free(x); free(xr); free(dy); free(dw); free(dwr);
    as__civ_destroy(ci);
}

static void test_not_applicable(void **state)
{
    (void)state;
    char why[200];
    as__civ_geom g = geom(4, 10, 10, 8, 3, 1);
    g.stride_h = g.stride_w = 2;
    assert_int_equal(as__civ_check(&g, why, sizeof why), AS_ENOTSUP);
    assert_non_null(strstr(why, "stride"));
    g = geom(8, 10, 10, 4, 3, 1);
    assert_int_equal(as__civ_check(&g, why, sizeof why), AS_ENOTSUP);
    assert_non_null(strstr(why, "Cout"));
    as__civ *ci = (as__civ *)1;
    assert_int_equal(as__civ_create(&g, NULL, &ci, why, sizeof why), AS_ENOTSUP);
    assert_null(ci);
    g = geom(4, 10, 10, 8, 3, 1);
    g.dil_h = 2;
    assert_int_equal(as__civ_check(&g, why, sizeof why), AS_ENOTSUP);
    g = geom(4, 10, 10, 8, 3, 1);
    g.groups = 4;
    assert_int_equal(as__civ_check(&g, why, sizeof why), AS_ENOTSUP);
    g = geom(4, 5, 5, 8, 5, 0);   /* a 5x5 input with k 5, pad 0: all frame */
    assert_int_equal(as__civ_check(&g, why, sizeof why), AS_ENOTSUP);
    assert_non_null(strstr(why, "frame"));

    /* A deliberately singular kernel: input channels 0 and 1 share weights,
     * so A(f) has two equal columns at every frequency. */
    g = geom(4, 10, 10, 8, 3, 1);
    assert_int_equal(as__civ_create(&g, NULL, &ci, why, sizeof why), 0);
    float *w = rand_weights(&g);
    for (int o = 0; o < g.cout; o++)
        memcpy(w + (o * g.cin + 1) * 9, w + (o * g.cin + 0) * 9, 9 * sizeof(float));
    double cond = 0;
    assert_int_equal(as__civ_prepare(ci, w, 1, &cond, why, sizeof why), AS_EFALLBACK);
    assert_true(cond > 1e4);
    assert_non_null(strstr(why, "condition number"));
    /* same version again: same answer, no recomputation */
    assert_int_equal(as__civ_prepare(ci, w, 1, &cond, why, sizeof why), AS_EFALLBACK);
    as__civ_stats st;
    as__civ_get_stats(ci, &st);
    assert_int_equal(st.factor_builds, 1);
    float dummy = 0;
    assert_int_equal(as__civ_restore(ci, 1, &dummy, NULL, &dummy, &dummy), AS_ESTATE);
    free(w);
    as__civ_destroy(ci);
}

static void test_factor_cached_per_version(void **state)
{
    (void)state;
    as__civ_geom g = geom(3, 9, 9, 5, 3, 1);
    const int n = 4;
    as__civ *ci = NULL;
    assert_int_equal(as__civ_create(&g, NULL, &ci, NULL, 0), 0);
    float *w = rand_weights(&g), *x = rand_input(&g, n);
    float *xr = malloc(sizeof(float) * n * g.cin * g.h * g.w);
    double cond;
    as__civ_stats st;
    assert_true(roundtrip(&g, n, w, x, xr, &cond, ci, 1) <= 1e-4);
    assert_true(roundtrip(&g, n, w, x, xr, &cond, ci, 1) <= 1e-4);
    assert_true(roundtrip(&g, n, w, x, xr, &cond, ci, 1) <= 1e-4);
    as__civ_get_stats(ci, &st);
    assert_int_equal(st.factor_builds, 1);
    assert_int_equal(st.factor_hits, 2);
    assert_int_equal(st.restores, 3);
    assert_true(st.cache_bytes > 0);
    /* A weight update (new version): rebuilt, and correct for new weights. */
    for (int i = 0; i < g.cout * g.cin * 9; i++)
        w[i] += (float)(0.05 * nrand());
    assert_true(roundtrip(&g, n, w, x, xr, &cond, ci, 2) <= 1e-4);
    as__civ_get_stats(ci, &st);
    assert_int_equal(st.factor_builds, 2);
    assert_int_equal(st.factor_hits, 2);
    /* Trimmed: the next prepare rebuilds even for the same version. */
    as__civ_trim(ci);
    assert_true(roundtrip(&g, n, w, x, xr, &cond, ci, 2) <= 1e-4);
    as__civ_get_stats(ci, &st);
    assert_int_equal(st.factor_builds, 3);
    /* A jump of the weights (a learning-rate spike: every weight moved by
     * its own size): the factor is rebuilt over the cached one, the same
     * bytes held, and the restore is right for the new weights. */
    const size_t cache = st.cache_bytes;
    for (int i = 0; i < g.cout * g.cin * 9; i++)
        w[i] = -2.0f * w[i] + (float)(0.3 * nrand());
    assert_true(roundtrip(&g, n, w, x, xr, &cond, ci, 3) <= 1e-4);
    as__civ_get_stats(ci, &st);
    assert_int_equal(st.factor_builds, 4);
    assert_int_equal(st.cache_bytes, cache);
    /* A singular version after a cached one: rejected, nothing held; the
     * next good version is built again. */
    float *wz = malloc(sizeof(float) * g.cout * g.cin * 9);
    memcpy(wz, w, sizeof(float) * g.cout * g.cin * 9);
    for (int o = 0; o < g.cout; o++)   /* input channel 1 unused: singular */
        memset(wz + ((size_t)o * g.cin + 1) * 9, 0, sizeof(float) * 9);
    assert_true(roundtrip(&g, n, wz, x, xr, &cond, ci, 4) < 0);
    as__civ_get_stats(ci, &st);
    assert_int_equal(st.cache_bytes, 0);
    assert_int_equal(as__civ_restore(ci, n, xr, NULL, xr, xr), AS_ESTATE);
    assert_true(roundtrip(&g, n, w, x, xr, &cond, ci, 5) <= 1e-4);
    as__civ_get_stats(ci, &st);
    assert_int_equal(st.cache_bytes, cache);
    free(wz); free(w); free(x); free(xr);
    as__civ_destroy(ci);
}

/* The factorization with the caller's scratch (reused, dirty from a
 * different layer's use) gives the same bits as with its own buffers. */
static void test_factor_scratch(void **state)
{
    (void)state;
    const as__civ_geom g = geom(6, 7, 9, 8, 3, 1);
    const int P = as__civ_fft_good_size(g.h + 2), Q = as__civ_fft_good_size(g.w + 2);
    const size_t mlen = (size_t)P * (Q / 2 + 1) * 2 * g.cin * g.cout;
    float *w = rand_weights(&g), *m0 = malloc(sizeof(float) * mlen),
          *m1 = malloc(sizeof(float) * mlen);
    const size_t sb = as__civ_factor_scratch_bytes(&g, P, Q);
    void *scr = aligned_alloc(64, (sb + 63) / 64 * 64);
    double *R0 = malloc(sizeof(double) * as__civ_gram_len(&g)),
           *R1 = malloc(sizeof(double) * as__civ_gram_len(&g));
    assert_non_null(scr);
    memset(scr, 0x7f, sb);   /* garbage: nothing may be read before written */
    assert_int_equal(as__civ_gram(&g, w, R0, NULL), 0);
    assert_int_equal(as__civ_gram(&g, w, R1, scr), 0);
    assert_memory_equal(R0, R1, sizeof(double) * as__civ_gram_len(&g));
    memset(scr, 0x7f, sb);
    double c0 = 0, c1 = 0;
    assert_int_equal(as__civ_factor(&g, P, Q, w, R0, 1e-14, m0, &c0, NULL, NULL), 0);
    assert_int_equal(as__civ_factor(&g, P, Q, w, R0, 1e-14, m1, &c1, NULL, scr), 0);
    assert_true(c0 > 1 && c0 == c1);
    assert_memory_equal(m0, m1, sizeof(float) * mlen);
    free(w); free(m0); free(m1); free(scr); free(R0); free(R1);
}

/* One case of the cached-vs-streamed tests: shape {n, cin, h, w, cout, k,
 * pad}, two solvers (ci for the cached factor, cs for streaming), random
 * weights, input, bias, the conv output y and the frame, and buffers xa,
 * xb for the two rebuilt inputs. */
typedef struct pair_case {
    as__civ_geom g;
    int n;
    size_t xl;
    as__civ *ci, *cs;
    float *w, *x, *xa, *xb, *y, *frame;
    float bias[32];
} pair_case;

static pair_case pair_case_new(const int s[7])
{
    pair_case k = {.g = geom(s[1], s[2], s[3], s[4], s[5], s[6]), .n = s[0]};
    const as__civ_geom *g = &k.g;
    const int ho = as__civ_out_h(g), wo = as__civ_out_w(g);
    assert_true(g->cout <= 32);
    assert_int_equal(as__civ_create(g, NULL, &k.ci, NULL, 0), 0);
    assert_int_equal(as__civ_create(g, NULL, &k.cs, NULL, 0), 0);
    k.w = rand_weights(g);
    k.x = rand_input(g, k.n);
    k.xl = (size_t)k.n * g->cin * g->h * g->w;
    k.xa = malloc(sizeof(float) * k.xl);
    k.xb = malloc(sizeof(float) * k.xl);
    k.y = malloc(sizeof(float) * (size_t)k.n * g->cout * ho * wo);
    k.frame = malloc(sizeof(float) * ((size_t)k.n * g->cin * as__civ_frame_len(g) + 1));
    for (int o = 0; o < g->cout; o++)
        k.bias[o] = (float)(0.1 * nrand());
    conv_ref(g, k.n, k.x, k.w, k.bias, k.y);
    as__civ_frame_extract(g, k.n, k.x, k.frame);
    return k;
}

/* The input rebuilt both ways: cached (prepare, restore into xa; *cond the
 * factor's condition number) and streamed (restore_stream into xb). */
static void pair_case_restore(pair_case *k, double *cond, char *why, size_t wl)
{
    assert_int_equal(as__civ_prepare(k->ci, k->w, 1, cond, NULL, 0), 0);
    assert_int_equal(as__civ_restore(k->ci, k->n, k->y, k->bias, k->frame, k->xa), 0);
    assert_int_equal(as__civ_restore_stream(k->cs, k->w, 1, k->n, k->y, k->bias,
                                            k->frame, k->xb, why, wl), 0);
}

static void pair_case_free(pair_case *k)
{
    free(k->w); free(k->x); free(k->xa); free(k->xb); free(k->y); free(k->frame);
    as__civ_destroy(k->ci);
    as__civ_destroy(k->cs);
}

/* The streaming restore: the direct path (Cout < 2 Cin) gives the same
 * bits as the cached factor; the adjoint path (Cout >= 2 Cin, small cond)
 * is within tolerance; shapes with Cin = 1, odd sizes, k 3/5, pad 0/1/2. */
static void test_stream_paths(void **state)
{
    (void)state;
    static const int shapes[][7] = {   /* n cin h w cout k pad */
        {5, 1, 28, 28, 16, 3, 1}, {4, 3, 11, 9, 6, 3, 0}, {3, 4, 13, 10, 8, 5, 2},
        {2, 8, 7, 7, 16, 3, 1},   {4, 4, 10, 12, 6, 3, 1}, {3, 2, 9, 11, 12, 5, 0},
        {34, 6, 7, 9, 12, 3, 1},  {33, 1, 8, 8, 4, 3, 1},   {40, 8, 6, 6, 16, 3, 1},
    };
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++) {
        pair_case k = pair_case_new(shapes[t]);
        const as__civ_geom g = k.g;
        const size_t xl = k.xl;
        const float *x = k.x, *xa = k.xa, *xb = k.xb;
        char why[160];
        pair_case_restore(&k, NULL, why, sizeof why);
        as__civ_stats st;
        as__civ_get_stats(k.cs, &st);
        /* Cin = 1 takes the closed form (no factor, the same state as the
         * cached restore: the same bits) */
        const int adj = g.cin > 1 && g.cout >= 2 * g.cin && st.cond <= AS__CIV_ADJ_COND;
        if (getenv("AS_VERBOSE"))
            printf("stream %zu: cond %.3g adjoint %d err %.3g (cached %.3g)\n", t, st.cond,
                   adj, max_rel_err(xb, x, xl), max_rel_err(xa, x, xl));
        assert_int_equal(st.streamed, 1);
        assert_int_equal(st.adjoint, (uint64_t)adj);
        assert_int_equal(st.cache_bytes, 0);
        assert_true(max_rel_err(xb, x, xl) <= 1e-4);
        if (!adj)
            assert_memory_equal(xa, xb, sizeof(float) * xl);
        pair_case_free(&k);
    }
}

/* The LU path (streamed, Cout = Cin): against the input and against the
 * Gram route (cfg.no_lu, M applied) on random He kernels and on kernels
 * made ill-conditioned (output channel 0 pulled towards channel 1, cond up
 * to the 1e4 threshold); odd channel counts (the solve's rows in blocks of
 * 4 and one by one), non-square maps, several passes. */
static void test_stream_lu(void **state)
{
    (void)state;
    static const int shapes[][7] = {   /* n cin h w cout k pad */
        {5, 5, 11, 9, 5, 3, 1},  {34, 7, 8, 10, 7, 3, 0}, {3, 4, 13, 10, 4, 5, 2},
        {20, 16, 12, 12, 16, 3, 1}, {2, 9, 6, 7, 9, 3, 1}, {17, 13, 9, 9, 13, 3, 1},
    };
    static const double pull[] = {0, 0.1, 0.03, 0.01, 0.003};
    const as__civ_cfg gram = {.no_lu = 1, .eps_rel = -1};
    int ill = 0;
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++)
        for (size_t d = 0; d < sizeof pull / sizeof pull[0]; d++) {
            pair_case k = pair_case_new(shapes[t]);
            const as__civ_geom *g = &k.g;
            const size_t kk = (size_t)g->kh * g->kw, row = (size_t)g->cin * kk;
            if (pull[d] > 0) {   /* w[0] <- w[1] + pull * w[0], then y again */
                for (size_t i = 0; i < row; i++)
                    k.w[i] = k.w[row + i] + (float)pull[d] * k.w[i];
                conv_ref(g, k.n, k.x, k.w, k.bias, k.y);
            }
            as__civ *cg;
            assert_int_equal(as__civ_create(g, &gram, &cg, NULL, 0), 0);
            char why[160];
            double cond = 0;
            const int rc = as__civ_condition(k.cs, k.w, 1, &cond, why, sizeof why);
            if (rc == AS_EFALLBACK) {   /* above the threshold: no restore */
                assert_true(cond > 1e4);
                as__civ_destroy(cg);
                pair_case_free(&k);
                continue;
            }
            assert_int_equal(rc, 0);
            ill += cond > 300;
            assert_int_equal(as__civ_restore_stream(k.cs, k.w, 1, k.n, k.y, k.bias, k.frame,
                                                    k.xb, why, sizeof why), 0);
            assert_int_equal(as__civ_restore_stream(cg, k.w, 1, k.n, k.y, k.bias, k.frame,
                                                    k.xa, why, sizeof why), 0);
            as__civ_stats sl, sg;
            as__civ_get_stats(k.cs, &sl);
            as__civ_get_stats(cg, &sg);
            assert_int_equal(sl.lu, 1);
            assert_int_equal(sg.lu, 0);
            assert_int_equal(sl.cache_bytes, 0);
            const double el = max_rel_err(k.xb, k.x, k.xl), eg = max_rel_err(k.xa, k.x, k.xl);
            if (getenv("AS_VERBOSE"))
                printf("lu %zu pull %g: cond %.3g err lu %.3g gram %.3g\n", t, pull[d], cond,
                       el, eg);
            assert_true(el <= 1e-4);
            /* the float factors' rounding against the Gram route's float M */
            assert_true(el <= 4 * eg + 2e-6);
            as__civ_destroy(cg);
            pair_case_free(&k);
        }
    assert_true(ill >= 3);   /* the pulled kernels did reach high cond */
}

/* Wide layers: the factor of every frequency is more than twice a pass of
 * 16 images, so a streamed restore takes larger passes (more than 8 lanes
 * per half) within three passes' work space: 64 channels on the LU path
 * and the Gram route, 96 (beyond AS__CIV_LU_MAX_CIN: the Gram route) in
 * two passes. */
static void test_stream_large_passes(void **state)
{
    (void)state;
    static const int cases[][4] = {   /* channels, map, n, no_lu */
        {64, 16, 40, 0}, {64, 16, 40, 1}, {96, 5, 70, 0},
    };
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
        const as__civ_geom g = geom(cases[t][0], cases[t][1], cases[t][1], cases[t][0], 3, 1);
        const int n = cases[t][2], no_lu = cases[t][3];
        const size_t xl = (size_t)n * g.cin * g.h * g.w;
        float *w = rand_weights(&g), *x = rand_input(&g, n), *xr = malloc(sizeof(float) * xl);
        float *y = malloc(sizeof(float) * (size_t)n * g.cout * g.h * g.w);
        float *frame = malloc(sizeof(float) * (size_t)n * g.cin * as__civ_frame_len(&g));
        conv_ref(&g, n, x, w, NULL, y);
        as__civ_frame_extract(&g, n, x, frame);
        const as__civ_cfg cfg = {.no_lu = no_lu, .eps_rel = -1};
        as__civ *ci;
        assert_int_equal(as__civ_create(&g, &cfg, &ci, NULL, 0), 0);
        const size_t one = as__civ_work_bytes(ci, 16), all = as__civ_work_bytes(ci, n);
        assert_true(all > one && all <= 3 * one);
        char why[160];
        assert_int_equal(as__civ_restore_stream(ci, w, 1, n, y, NULL, frame, xr, why,
                                                sizeof why), 0);
        as__civ_stats st;
        as__civ_get_stats(ci, &st);
        assert_int_equal(st.lu, (uint64_t)(!no_lu && g.cin <= AS__CIV_LU_MAX_CIN));
        const double e = max_rel_err(xr, x, xl);
        if (getenv("AS_VERBOSE"))
            printf("large passes %d ch %dx%d n %d lu %d: cond %.3g err %.3g work %zu / %zu\n",
                   g.cin, g.h, g.w, n, (int)st.lu, st.cond, e, all, one);
        assert_true(e <= 1e-4);
        as__civ_destroy(ci);
        free(w); free(x); free(xr); free(y); free(frame);
    }
}

/* The special paths: Cin = 1 (the closed form a^H F^ / |a|^2, its own F
 * build in the images' layout: frames of width 0..2, padding beyond the
 * kernel, odd and non-square maps, one or several passes) and 1x1 kernels
 * (per pixel; padding 0 as one flat row, padding 1 row by row), cached and
 * streamed, against the input and against each other. */
static void test_closed_form_and_pointwise(void **state)
{
    (void)state;
    static const int shapes[][7] = {   /* n cin h w cout k pad */
        {20, 1, 13, 9, 6, 5, 0}, {5, 1, 10, 12, 3, 5, 2}, {7, 1, 9, 9, 4, 3, 0},
        {3, 1, 8, 11, 5, 3, 3},  {18, 1, 12, 7, 2, 3, 1}, {2, 1, 5, 6, 1, 3, 1},
        {5, 4, 9, 7, 6, 1, 0},   {4, 3, 7, 9, 5, 1, 1},   {21, 8, 5, 6, 8, 1, 0},
        {3, 16, 4, 4, 16, 1, 0},
    };
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++) {
        pair_case k = pair_case_new(shapes[t]);
        const size_t xl = k.xl;
        const float *x = k.x, *xa = k.xa, *xb = k.xb;
        double cond = 0;
        pair_case_restore(&k, &cond, NULL, 0);
        assert_true(cond <= 1e4);
        const double ea = max_rel_err(xa, x, xl), eb = max_rel_err(xb, x, xl);
        if (getenv("AS_VERBOSE"))
            printf("special %zu: cond %.3g err cached %.3g streamed %.3g\n", t, cond, ea, eb);
        if (!(ea <= 1e-4) || !(eb <= 1e-4))
            fail_msg("shape %zu: max rel err %.3g / %.3g (cond %.3g)", t, ea, eb, cond);
        assert_true(max_rel_err(xa, xb, xl) <= 1e-5);
        pair_case_free(&k);
    }
}

/* Cin = 1 reads only the output channels it needs (the pick, once per
 * weight version): never a channel whose kernel is zero (their outputs
 * are NaN here, so reading one would show), both of two channels whose
 * spectra vanish at different frequencies, fewer than Cout for random
 * kernels; the pick follows a new version and is reused for the same one. */
static void test_c1_channel_pick(void **state)
{
    (void)state;
    const as__civ_geom g = geom(1, 12, 10, 8, 3, 1);
    const int n = 3, ho = as__civ_out_h(&g), wo = as__civ_out_w(&g);
    const size_t xl = (size_t)n * g.h * g.w, plane = (size_t)ho * wo;
    const size_t flen = as__civ_frame_len(&g);
    float *x = rand_input(&g, n), *xr = malloc(sizeof(float) * xl);
    float *y = malloc(sizeof(float) * n * g.cout * plane);
    float *frame = malloc(sizeof(float) * (n * flen + 1));
    float w[2][8 * 9];
    as__civ_frame_extract(&g, n, x, frame);
    /* version 1: channel 2 = [1 1] and channel 5 = [1 -1] along a row
     * (zeros at the Nyquist and at the zero frequency), the rest zero;
     * version 2: the same pair on channels 6 and 1 */
    const int pairs[2][2] = {{2, 5}, {6, 1}};
    for (int v = 0; v < 2; v++) {
        memset(w[v], 0, sizeof w[v]);
        w[v][pairs[v][0] * 9 + 3] = 1.0f, w[v][pairs[v][0] * 9 + 4] = 1.0f;
        w[v][pairs[v][1] * 9 + 3] = 1.0f, w[v][pairs[v][1] * 9 + 4] = -1.0f;
    }
    as__civ *cs = NULL;
    assert_int_equal(as__civ_create(&g, NULL, &cs, NULL, 0), 0);
    for (int round = 0; round < 3; round++) {
        const int v = round == 1;   /* versions 1, 2, then 1 again */
        conv_ref(&g, n, x, w[v], NULL, y);
        for (int img = 0; img < n; img++)
            for (int o = 0; o < g.cout; o++)
                if (o != pairs[v][0] && o != pairs[v][1])
                    for (size_t i = 0; i < plane; i++)
                        y[((size_t)img * g.cout + o) * plane + i] = NAN;
        assert_int_equal(as__civ_restore_stream(cs, w[v], (uint64_t)v + 1, n, y, NULL,
                                                frame, xr, NULL, 0), 0);
        as__civ_stats st;
        as__civ_get_stats(cs, &st);
        assert_int_equal(st.c1_channels, 2);
        const double e = max_rel_err(xr, x, xl);
        if (!(e <= 1e-5))
            fail_msg("round %d: max rel err %.3g", round, e);
    }
    as__civ_destroy(cs);
    /* random kernels: fewer channels than Cout, same accuracy, cached and
     * streamed alike */
    as__civ_geom g16 = geom(1, 28, 28, 16, 3, 1);
    float *w16 = rand_weights(&g16);
    float *x16 = rand_input(&g16, 2), *xa = malloc(sizeof(float) * 2 * 28 * 28);
    as__civ *ci = NULL;
    assert_int_equal(as__civ_create(&g16, NULL, &ci, NULL, 0), 0);
    double err = roundtrip(&g16, 2, w16, x16, xa, NULL, ci, 1);
    as__civ_stats st;
    as__civ_get_stats(ci, &st);
    if (getenv("AS_VERBOSE"))
        printf("c1 pick: %d of 16 channels, err %.3g\n", st.c1_channels, err);
    assert_true(st.c1_channels >= 1 && st.c1_channels < 16);
    assert_true(err >= 0 && err <= 1e-5);
    as__civ_destroy(ci);
    free(w16); free(x16); free(xa);
    free(x); free(xr); free(y); free(frame);
}

/* One step of an SGD-like walk: w += step * sd * N(0, 1), sd the He scale. */
static void perturb(const as__civ_geom *g, float *w, double step)
{
    const size_t len = (size_t)g->cout * g->cin * g->kh * g->kw;
    const double sd = sqrt(2.0 / (g->cin * g->kh * g->kw));
    for (size_t i = 0; i < len; i++)
        w[i] += (float)(step * sd * nrand());
}

/* Verdicts across weight versions: a version near the last checked one
 * takes the perturbation bound (no check); the bound is never below the
 * computed condition number and stays at or below the threshold above the
 * reference's (so the path is the reference's); the restores with it stay
 * within 1e-4; a jump of the weights (a learning-rate spike) fails the
 * bound and the version is checked again, giving the exact verdict. */
static void test_condition_bound(void **state)
{
    (void)state;
    static const int shapes[][3] = {{8, 16, 1}, {6, 6, 1}, {4, 8, 0}};   /* cin cout pad */
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        as__civ_geom g = geom(shapes[s][0], 9, 10, shapes[s][1], 3, shapes[s][2]);
        const int n = 6, ho = as__civ_out_h(&g), wo = as__civ_out_w(&g);
        const size_t xl = (size_t)n * g.cin * g.h * g.w;
        as__civ *cb = NULL, *cx = NULL;
        const as__civ_cfg exact = {.cond_max = 1e4, .eps_rel = -1, .no_bound = 1};
        assert_int_equal(as__civ_create(&g, NULL, &cb, NULL, 0), 0);
        assert_int_equal(as__civ_create(&g, &exact, &cx, NULL, 0), 0);
        float *w = rand_weights(&g), *x = rand_input(&g, n), *xr = malloc(sizeof(float) * xl);
        float *y = malloc(sizeof(float) * (size_t)n * g.cout * ho * wo);
        float *frame = malloc(sizeof(float) * ((size_t)n * g.cin * as__civ_frame_len(&g) + 1));
        as__civ_frame_extract(&g, n, x, frame);
        double cb_cond = 0, cx_cond = 0, ref = 0;
        char why[160];
        const int versions = 24;
        for (int v = 1; v <= versions + 1; v++) {
            perturb(&g, w, v <= versions ? 2e-4 : 0.5);   /* the last: a jump */
            as__civ_stats before;
            as__civ_get_stats(cb, &before);
            assert_int_equal(as__civ_condition(cx, w, (uint64_t)v, &cx_cond, why, sizeof why), 0);
            assert_int_equal(as__civ_condition(cb, w, (uint64_t)v, &cb_cond, why, sizeof why), 0);
            as__civ_stats st;
            as__civ_get_stats(cb, &st);
            if (v == 1 || st.cond_checks > before.cond_checks)
                ref = cb_cond;
            if (getenv("AS_VERBOSE"))
                printf("bound %d->%d v%d: exact %.4g verdict %.4g (%s)\n", g.cin, g.cout, v,
                       cx_cond, cb_cond, st.cond_checks > before.cond_checks ? "checked" : "bound");
            assert_true(cb_cond >= cx_cond * (1 - 1e-9));
            if (ref <= AS__CIV_ADJ_COND)
                assert_true(cb_cond <= AS__CIV_ADJ_COND);
            if (v > versions) {   /* the jump: checked again, exact */
                assert_int_equal(st.cond_checks, before.cond_checks + 1);
                assert_true(cb_cond == cx_cond);
            }
            conv_ref(&g, n, x, w, NULL, y);
            assert_int_equal(as__civ_restore_stream(cb, w, (uint64_t)v, n, y, NULL, frame, xr,
                                                    why, sizeof why), 0);
            assert_true(max_rel_err(xr, x, xl) <= 1e-4);
        }
        as__civ_stats sb, sx;
        as__civ_get_stats(cb, &sb);
        as__civ_get_stats(cx, &sx);
        assert_int_equal(sx.cond_bounded, 0);
        assert_int_equal(sx.cond_checks, versions + 1);
        assert_int_equal(sb.cond_checks + sb.cond_bounded, versions + 1);
        assert_true(sb.cond_bounded >= (uint64_t)versions / 2);   /* small steps: mostly bounded */
        free(w); free(x); free(xr); free(y); free(frame);
        as__civ_destroy(cb);
        as__civ_destroy(cx);
    }
}

/* A rejected reference never bounds the next version: every version of a
 * layer above the threshold is checked (and rejected) again. */
static void test_condition_bound_rejected(void **state)
{
    (void)state;
    as__civ_geom g = geom(6, 9, 9, 6, 3, 1);
    as__civ *ci = NULL;
    const as__civ_cfg cfg = {.cond_max = 1.5, .eps_rel = -1};
    assert_int_equal(as__civ_create(&g, &cfg, &ci, NULL, 0), 0);
    float *w = rand_weights(&g);
    char why[160];
    for (int v = 1; v <= 5; v++) {
        perturb(&g, w, 1e-6);
        assert_int_equal(as__civ_condition(ci, w, (uint64_t)v, NULL, why, sizeof why),
                         AS_EFALLBACK);
    }
    as__civ_stats st;
    as__civ_get_stats(ci, &st);
    assert_int_equal(st.cond_checks, 5);
    assert_int_equal(st.cond_bounded, 0);
    free(w);
    as__civ_destroy(ci);
}

AS_TEST_MAIN(NULL, NULL,
             cmocka_unit_test(test_fft_matches_dft),
             cmocka_unit_test(test_frame_geometry),
             cmocka_unit_test(test_reconstruction_shapes),
             cmocka_unit_test(test_weight_gradient_from_rebuilt_input),
             cmocka_unit_test(test_not_applicable),
             cmocka_unit_test(test_factor_cached_per_version),
             cmocka_unit_test(test_factor_scratch),
             cmocka_unit_test(test_stream_paths),
             cmocka_unit_test(test_stream_lu),
             cmocka_unit_test(test_stream_large_passes),
             cmocka_unit_test(test_closed_form_and_pointwise),
             cmocka_unit_test(test_c1_channel_pick),
             cmocka_unit_test(test_condition_bound),
             cmocka_unit_test(test_condition_bound_rejected))

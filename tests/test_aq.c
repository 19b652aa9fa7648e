/*
 * The aq codec (store/policies/aq.h, codec_aq.c): kernels against their
 * stated bounds for every bit width, rounding and rotation on odd-sized and
 * empty tensors; NaN / inf / all-zero / constant groups; the Hadamard
 * transform; decoded sub-ranges; unbiased stochastic rounding; the policy
 * through the store (stored bytes, rows, seeds and item keys, spec
 * errors); a linear layer's weight gradient from the decoded input against
 * the exact one on fixed rows.
 */
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
#include "store/policies/aq.h"
#include "store/policies/quant.h"
#include "support/store_stats.h"
#include "support/store_util.h"
#include "support/test_main.h"
#include "util/rng.h"
#include "util/simd.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void) { return as_rng_u32(&rng); }
static float gauss(void) { return (float)as_rng_normal_open(&rng); }

/* n standard normal values into x. */
static void fill_gauss(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] = gauss();
}

typedef struct enc {
    as_aq_fmt f;
    size_t n;
    void *params;
    uint8_t *codes;
} enc;

static enc encode(as_aq_fmt f, const float *x, size_t n, uint64_t seed)
{
    enc e = {.f = f, .n = n};
    e.params = calloc(1, as__aq_param_bytes(&f, n) + 8);
    e.codes = calloc(1, as__aq_code_bytes(&f, n) + 8);
    assert_non_null(e.params);
    assert_non_null(e.codes);
    if (n)
        assert_true(as__aq_encode(&f, x, n, seed, 0, as__aq_groups(&f, n),
                                  e.params, e.codes));
    return e;
}

static void enc_free(enc *e)
{
    free(e->params);
    free(e->codes);
}

/* The step of group g as the decoder sees it. */
static double group_step(const enc *e, size_t g)
{
    if (e->f.p16)
        return as__f16_to_f32_one(((const uint16_t *)e->params)[2 * g + 1]);
    return ((const as_aq_param *)e->params)[g].step;
}

/* ---- kernels ------------------------------------------------------------- */

static void test_fwht(void **st)
{
    (void)st;
    float v[64], w[64];
    for (int i = 0; i < 64; i++)
        v[i] = w[i] = gauss();
    as__aq_fwht(v, 64);
    /* against the definition: (H x)_i = sum_j (-1)^popcount(i & j) x_j */
    for (int i = 0; i < 64; i++) {
        double s = 0;
        for (int j = 0; j < 64; j++)
            s += (__builtin_popcount((unsigned)(i & j)) & 1 ? -1.0 : 1.0) * w[j];
        assert_true(fabs(s - v[i]) < 1e-4);
    }
    as__aq_fwht(v, 64);   /* H H = G I */
    for (int i = 0; i < 64; i++)
        assert_true(fabsf(v[i] / 64.0f - w[i]) < 1e-5f);
}

/* Every bit width, rounding, rotation, parameter precision and group size
 * on sizes 1 .. odd: each value within its bound. */
static void test_bounds(void **st)
{
    (void)st;
    const int bits[] = {2, 3, 4, 8};
    const uint32_t groups[] = {8, 64, 256};
    const size_t sizes[] = {1, 7, 8, 13, 64, 65, 1001};
    float *x = malloc(1001 * sizeof *x), *y = malloc(1001 * sizeof *y);
    for (size_t i = 0; i < 1001; i++)
        x[i] = gauss() * 3.0f + (i % 17 == 0 ? 20.0f : 0.0f);
    for (int b = 0; b < 4; b++)
        for (int gi = 0; gi < 3; gi++)
            for (int mode = 0; mode < 8; mode++)
                for (int si = 0; si < 7; si++) {
                    as_aq_fmt f = {.bits = bits[b], .group = groups[gi],
                                   .nearest = mode & 1, .rot = mode & 2,
                                   .p16 = mode & 4};
                    assert_true(as__aq_fmt_ok(&f));
                    size_t n = sizes[si];
                    enc e = encode(f, x, n, 42);
                    memset(y, 0xff, n * sizeof *y);
                    as__aq_decode(&f, e.params, e.codes, n, 0, n, y);
                    for (size_t i = 0; i < n; i++) {
                        size_t g = i / f.group;
                        double s = group_step(&e, g);
                        double bound = f.nearest ? 0.5 * s : s;
                        if (f.rot)   /* worst case: sqrt(G) * bound */
                            bound *= sqrt((double)f.group);
                        double err = fabs((double)y[i] - x[i]);
                        if (!(err <= bound * 1.0001 + 1e-5))
                            fail_msg("bits %d g %u mode %d n %zu: x[%zu] %g "
                                     "-> %g (bound %g)", f.bits, f.group, mode,
                                     n, i, x[i], y[i], bound);
                    }
                    enc_free(&e);
                }
    free(x);
    free(y);
}

/* Mean-square error with rotation: the per-element error is the rotated
 * code error over sqrt(G), so its RMS stays below the step's. */
static void test_rotation_helps_outliers(void **st)
{
    (void)st;
    enum { N = 64 * 256 };
    float *x = malloc(N * sizeof *x), *y = malloc(N * sizeof *y);
    for (size_t i = 0; i < N; i++)
        x[i] = gauss() + (i % 64 == 5 ? 40.0f : 0.0f);   /* an outlier channel */
    double mse[2];
    for (int r = 0; r < 2; r++) {
        as_aq_fmt f = {.bits = 2, .group = 64, .rot = r};
        enc e = encode(f, x, N, 1);
        as__aq_decode(&f, e.params, e.codes, N, 0, N, y);
        double s = 0;
        for (size_t i = 0; i < N; i++)
            if (i % 64 != 5)
                s += ((double)y[i] - x[i]) * ((double)y[i] - x[i]);
        mse[r] = s / N;
        enc_free(&e);
    }
    assert_true(mse[1] * 4 < mse[0]);
    free(x);
    free(y);
}

static void test_special_groups(void **st)
{
    (void)st;
    enum { G = 16, N = 6 * G + 5 };
    float x[N], y[N];
    fill_gauss(x, N);
    for (int i = 0; i < G; i++) {
        x[i] = 0.0f;               /* group 0: all zero */
        x[G + i] = 2.5f;           /* group 1: constant */
    }
    x[2 * G + 3] = NAN;            /* group 2: NaN */
    x[3 * G + 7] = INFINITY;       /* group 3: inf */
    x[4 * G] = 3e38f;              /* group 4: range overflows f32 */
    x[4 * G + 1] = -3e38f;
    for (int mode = 0; mode < 8; mode++) {
        as_aq_fmt f = {.bits = 2 + (mode & 1), .group = G, .rot = mode & 2,
                       .p16 = mode & 4};
        enc e = encode(f, x, N, 3);
        memset(y, 0, sizeof y);
        as__aq_decode(&f, e.params, e.codes, N, 0, N, y);
        for (int i = 0; i < G; i++) {
            assert_true(y[i] == 0.0f);
            if (!f.p16 || !f.rot)
                assert_true(fabsf(y[G + i] - 2.5f) <= (f.rot ? 1e-6f : 0.0f));
        }
        for (int i = 2 * G; i < 5 * G; i++)
            assert_true(isnan(y[i]));
        for (int i = 5 * G; i < N; i++)   /* the rest is untouched */
            assert_true(isfinite(y[i]) && fabsf(y[i] - x[i]) < 2.0f);
        enc_free(&e);
    }
    /* constant groups are exact, also with f16 parameters */
    as_aq_fmt f = {.bits = 2, .group = G, .p16 = true};
    enc e = encode(f, x + G, G, 3);
    as__aq_decode(&f, e.params, e.codes, G, 0, G, y);
    for (int i = 0; i < G; i++)
        assert_true(y[i] == 2.5f);
    enc_free(&e);
    /* a finite group beyond f16: the f16 encode says so */
    float big[G];
    for (int i = 0; i < G; i++)
        big[i] = 1e5f + (float)i;
    void *p16 = malloc(4), *codes = malloc(G);
    assert_false(as__aq_encode(&f, big, G, 1, 0, 1, p16, codes));
    f.p16 = false;
    free(p16);
    free(codes);
}

/* The vector kernels (AVX-512 where the CPU has it) store the bytes of the
 * portable ones and decode the same values, each decoding the other's:
 * every width, rounding and rotation, group sizes whose plane blocks are
 * not multiples of 16, odd tails, NaN / inf / all-zero groups. */
static void test_vector_matches_portable(void **st)
{
    (void)st;
    static const uint32_t groups[] = {8, 24, 64, 128, 136, 256};
    static const size_t lens[] = {1, 7, 9, 130, 1000, 4099};
    for (size_t gi = 0; gi < sizeof groups / sizeof *groups; gi++)
        for (size_t li = 0; li < sizeof lens / sizeof *lens; li++)
            for (int mode = 0; mode < 16; mode++) {
                const int bits[] = {2, 3, 4, 8};
                as_aq_fmt f = {.bits = bits[mode & 3], .group = groups[gi],
                               .nearest = mode & 4, .p16 = mode & 8};
                f.rot = (mode & 4) && (f.group & (f.group - 1)) == 0;
                const size_t n = lens[li];
                float *x = malloc(n * sizeof *x), *y[2];
                fill_gauss(x, n);
                for (size_t i = 0; i < n && i < f.group; i++)
                    x[i] = 0.0f;                    /* an all-zero group */
                if (n > 2 * f.group) {
                    x[f.group + 1] = NAN;
                    x[2 * f.group - 1] = INFINITY;
                }
                enc e[2];
                for (int port = 0; port < 2; port++) {
                    as__simd_force_portable(port == 1);
                    e[port] = encode(f, x, n, 7);
                }
                assert_memory_equal(e[0].params, e[1].params, as__aq_param_bytes(&f, n));
                assert_memory_equal(e[0].codes, e[1].codes, as__aq_code_bytes(&f, n));
                for (int port = 0; port < 2; port++) {
                    as__simd_force_portable(port == 1);
                    y[port] = malloc(n * sizeof *y[port]);
                    as__aq_decode(&f, e[1 - port].params, e[1 - port].codes, n, 0, n,
                                  y[port]);
                }
                assert_memory_equal(y[0], y[1], n * sizeof *y[0]);
                as__simd_force_portable(false);
                for (int port = 0; port < 2; port++) {
                    enc_free(&e[port]);
                    free(y[port]);
                }
                free(x);
            }
}

/* Any sub-range decodes to the same values as the whole. */
static void test_ranges(void **st)
{
    (void)st;
    enum { N = 777 };
    float x[N], all[N], part[N];
    fill_gauss(x, N);
    for (int mode = 0; mode < 4; mode++) {
        as_aq_fmt f = {.bits = mode & 1 ? 3 : 4, .group = 64, .rot = mode & 2};
        enc e = encode(f, x, N, 9);
        as__aq_decode(&f, e.params, e.codes, N, 0, N, all);
        for (int k = 0; k < 50; k++) {
            size_t i0 = rnd() % N, cnt = rnd() % (N - i0 + 1);
            as__aq_decode(&f, e.params, e.codes, N, i0, cnt, part);
            assert_memory_equal(part, all + i0, cnt * sizeof(float));
        }
        enc_free(&e);
    }
}

/* Same seed: same codes; another seed: other codes; stochastic rounding is
 * unbiased over seeds, nearest is not random. */
static void test_seeds_and_bias(void **st)
{
    (void)st;
    enum { N = 256, K = 2000 };
    float x[N], y[N];
    double mean[N] = {0};
    fill_gauss(x, N);
    as_aq_fmt f = {.bits = 2, .group = 64};
    enc a = encode(f, x, N, 5), b = encode(f, x, N, 5), c = encode(f, x, N, 6);
    size_t cb = as__aq_code_bytes(&f, N);
    assert_memory_equal(a.codes, b.codes, cb);
    assert_true(memcmp(a.codes, c.codes, cb) != 0);
    enc_free(&a);
    enc_free(&b);
    enc_free(&c);
    for (int k = 0; k < K; k++) {
        enc e = encode(f, x, N, (uint64_t)k * 7919);
        as__aq_decode(&f, e.params, e.codes, N, 0, N, y);
        for (int i = 0; i < N; i++)
            mean[i] += y[i] / K;
        enc_free(&e);
    }
    double worst = 0;
    for (int i = 0; i < N; i++)
        worst = fmax(worst, fabs(mean[i] - x[i]));
    assert_true(worst < 0.08);   /* step ~1.7: 6 sigma of the mean  of 2000 */
    f.nearest = true;
    a = encode(f, x, N, 5);
    b = encode(f, x, N, 6);
    assert_memory_equal(a.codes, b.codes, cb);
    enc_free(&a);
    enc_free(&b);
}

/* ---- through the store --------------------------------------------------- */

static as_store *mk(const char *spec)
{
    as_store_config cfg = {.policy = spec};
    as_store *s = NULL;
    char err[256] = "";
    int rc = as_store_create(&cfg, &s, err, sizeof err);
    if (rc != 0)
        fail_msg("as_store_create(%s): %s (%s)", spec, as_strerror(rc), err);
    return s;
}

static void test_policy_store(void **st)
{
    (void)st;
    enum { R = 37, C = 48, N = R * C };
    float x[N], y[N], rows[5 * C];
    fill_gauss(x, N);
    as_store *s = mk("linear_input=aq:2:g=64; default=keep");
    as_save_info info = {.kind = AS_KIND_LINEAR_INPUT, .layer = "fc"};
    as_tensor t = {.data = x, .dtype = AS_F32, .ndim = 2, .shape = {R, C}};
    as_handle h;
    assert_int_equal(as_store_save(s, &info, &t, &h), 0);
    assert_string_equal(as_store_policy_of(s, h), "aq:2:g=64");
    as_store_stats a;
    assert_int_equal(as_store_stats_take(s, &a), 0);
    /* header + f16 params (29 groups * 4) padded to 8 + codes 1776 * 2 / 8 */
    size_t groups = (N + 63) / 64, codes = (N + 7) / 8 * 2;
    uint64_t lo = ((groups * 4 + 7) & ~7ull) + codes;
    assert_true(a.total.stored_live >= lo && a.total.stored_live <= lo + 64);
    as_store_stats_free(&a);
    as_tensor d = t;
    d.data = y;
    assert_int_equal(as_store_restore(s, h, &d), 0);
    for (int i = 0; i < N; i++)   /* one step: at most the group's range / 3 */
        assert_true(fabsf(y[i] - x[i]) < 4.0f);
    assert_int_equal(as_store_restore_rows(s, h, 11, 5, rows), 0);
    assert_memory_equal(rows, y + 11 * C, sizeof rows);
    assert_int_equal(as_store_restore_rows(s, h, 35, 5, rows), AS_ERANGE);
    /* empty tensor */
    as_tensor e = {.data = x, .dtype = AS_F32, .ndim = 2, .shape = {0, C}};
    as_handle he;
    assert_int_equal(as_store_save(s, &info, &e, &he), 0);
    assert_int_equal(as_store_restore(s, he, &e), 0);
    /* values beyond f16: f32 parameters (8 bytes a group), same bounds */
    float big[N], bigd[N];
    for (int i = 0; i < N; i++)
        big[i] = 1e6f + gauss() * 1e4f;
    as_tensor tb = t;
    tb.data = big;
    as_handle hb;
    assert_int_equal(as_store_stats_take(s, &a), 0);
    uint64_t before = a.total.stored_live;
    as_store_stats_free(&a);
    assert_int_equal(as_store_save(s, &info, &tb, &hb), 0);
    assert_int_equal(as_store_stats_take(s, &a), 0);
    lo = groups * 8 + codes;
    assert_true(a.total.stored_live - before >= lo &&
                a.total.stored_live - before <= lo + 64);
    as_store_stats_free(&a);
    tb.data = bigd;
    assert_int_equal(as_store_restore(s, hb, &tb), 0);
    for (int i = 0; i < N; i++)
        assert_true(fabsf(bigd[i] - big[i]) < 4e4f);
    /* i32 falls back to keep */
    as_tensor it = {.data = x, .dtype = AS_I32, .ndim = 1, .shape = {4}};
    save_expect_fallback(s, &info, &it, "aq");
    as_store_destroy(s);
}

/* Two stores fed the same saves draw the same noise (item keys); the seed
 * argument changes it; successive saves get fresh noise. */
static void test_policy_item_keys(void **st)
{
    (void)st;
    enum { N = 512 };
    float x[N], y[3][2][N];
    fill_gauss(x, N);
    const char *specs[3] = {"default=aq:2", "default=aq:2", "default=aq:2:seed=1"};
    for (int k = 0; k < 3; k++) {
        as_store *s = mk(specs[k]);
        as_save_info info = {.kind = AS_KIND_GENERIC};
        as_tensor t = {.data = x, .dtype = AS_F32, .ndim = 1, .shape = {N}};
        as_handle h[2];
        for (int j = 0; j < 2; j++) {
            assert_int_equal(as_store_save(s, &info, &t, &h[j]), 0);
            as_tensor d = t;
            d.data = y[k][j];
            assert_int_equal(as_store_restore(s, h[j], &d), 0);
        }
        as_store_destroy(s);
    }
    assert_memory_equal(y[0][0], y[1][0], sizeof y[0][0]);
    assert_memory_equal(y[0][1], y[1][1], sizeof y[0][1]);
    assert_true(memcmp(y[0][0], y[0][1], sizeof y[0][0]) != 0);
    assert_true(memcmp(y[0][0], y[2][0], sizeof y[0][0]) != 0);
}

/* An alias under another rule with the same text keeps the encoding made
 * at the first save (no second encode: the values come back bit for bit). */
static void test_alias_same_text(void **st)
{
    (void)st;
    enum { N = 1000 };
    float x[N], y1[N], y2[N];
    fill_gauss(x, N);
    as_store *s = mk("conv_output=aq:3:g=128; norm_input=aq:3:g=128; "
                     "linear_input=aq:3:g=64; default=keep");
    as_tensor t = {.data = x, .dtype = AS_F32, .ndim = 1, .shape = {N}};
    as_save_info a = {.kind = AS_KIND_CONV_OUTPUT, .layer = "conv"};
    as_handle h1, h2, h3;
    assert_int_equal(as_store_save(s, &a, &t, &h1), 0);
    as_tensor d = t;
    d.data = y1;
    assert_int_equal(as_store_restore(s, h1, &d), 0);
    as_save_info b = {.kind = AS_KIND_NORM_INPUT, .layer = "bn", .alias_of = h1};
    assert_int_equal(as_store_save(s, &b, &t, &h2), 0);
    d.data = y2;
    assert_int_equal(as_store_restore(s, h2, &d), 0);
    assert_memory_equal(y1, y2, sizeof y1);
    /* other arguments: encoded again (another group size) */
    as_save_info c = {.kind = AS_KIND_LINEAR_INPUT, .layer = "fc", .alias_of = h1};
    assert_int_equal(as_store_save(s, &c, &t, &h3), 0);
    assert_string_equal(as_store_policy_of(s, h3), "aq:3:g=64");
    as_store_destroy(s);
}

static void test_spec_errors(void **st)
{
    (void)st;
    char err[256];
    spec_ok("default=aq:3:g=128:rot:rn:seed=4");
    spec_ok("default=aq");
    struct { const char *spec, *msg; } bad[] = {
        {"default=aq:5", "expected bits 2, 3, 4 or 8"},
        {"default=aq:g=12", "multiple of 8"},
        {"default=aq:g=96:rot", "power of two"},
        {"default=aq:rotate", "expected bits (2, 3, 4, 8), g=N, rot"},
        {"default=aq:seed=x", "expected a number"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(as_policy_check(bad[i].spec, err, sizeof err), AS_ESPEC);
        if (!strstr(err, bad[i].msg))
            fail_msg("%s: '%s' lacks '%s'", bad[i].spec, err, bad[i].msg);
    }
}

/* The weight gradient of a linear layer, dW = dy^T x, from the decoded x
 * against the exact one on fixed rows (a LayerNorm-like input with one
 * outlier channel): cosine per format, and rotation at 2 bits closing most
 * of the gap to 3 bits on the outlier rows. */
static double grad_cos(as_aq_fmt f, const float *x, const float *dy, int R,
                       int C, int O)
{
    float *xh = malloc(sizeof(float) * R * C);
    enc e = encode(f, x, (size_t)R * C, 77);
    as__aq_decode(&f, e.params, e.codes, (size_t)R * C, 0, (size_t)R * C, xh);
    enc_free(&e);
    double dot = 0, na = 0, nb = 0;
    for (int o = 0; o < O; o++)
        for (int c = 0; c < C; c++) {
            double a = 0, b = 0;
            for (int r = 0; r < R; r++) {
                a += (double)dy[r * O + o] * x[r * C + c];
                b += (double)dy[r * O + o] * xh[r * C + c];
            }
            dot += a * b;
            na += a * a;
            nb += b * b;
        }
    free(xh);
    return dot / sqrt(na * nb);
}

static void test_linear_gradient(void **st)
{
    (void)st;
    enum { R = 256, C = 64, O = 32 };
    rng = 0x5eed;   /* fixed rows whatever ran before */
    float *x = malloc(sizeof(float) * R * C), *dy = malloc(sizeof(float) * R * O);
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++)
            x[r * C + c] = gauss() * (c == 3 ? 12.0f : 1.0f);
    fill_gauss(dy, (size_t)(R * O));
    struct { as_aq_fmt f; double min_cos; } cases[] = {
        {{.bits = 8, .group = 64}, 0.9999},   /* measured 0.99992 */
        {{.bits = 4, .group = 64}, 0.975},    /* 0.979 */
        {{.bits = 3, .group = 64}, 0.90},     /* 0.909 */
        {{.bits = 2, .group = 64}, 0.65},     /* 0.661 */
        {{.bits = 2, .group = 64, .rot = true}, 0.88},   /* 0.890 */
        {{.bits = 4, .group = 64, .nearest = true}, 0.985},   /* 0.9893 */
    };
    double got[6];
    for (int i = 0; i < 6; i++) {
        got[i] = grad_cos(cases[i].f, x, dy, R, C, O);
        print_message("case %d: cosine %.5f\n", i, got[i]);
        if (!(got[i] >= cases[i].min_cos))
            fail_msg("case %d: cosine %.5f < %.5f", i, got[i], cases[i].min_cos);
    }
    assert_true(got[4] > got[3] + 0.2);   /* rotation helps with the outlier */
    free(x);
    free(dy);
}

AS_TEST_MAIN(NULL, NULL,
             cmocka_unit_test(test_fwht),
             cmocka_unit_test(test_bounds),
             cmocka_unit_test(test_rotation_helps_outliers),
             cmocka_unit_test(test_special_groups),
             cmocka_unit_test(test_ranges),
             cmocka_unit_test(test_vector_matches_portable),
             cmocka_unit_test(test_seeds_and_bias),
             cmocka_unit_test(test_policy_store),
             cmocka_unit_test(test_policy_item_keys),
             cmocka_unit_test(test_alias_same_text),
             cmocka_unit_test(test_spec_errors),
             cmocka_unit_test(test_linear_gradient))

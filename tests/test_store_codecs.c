/*
 * Codecs through the store: bit-exact round trips of keep, zstd and offload
 * over every dtype, special values and frame boundaries; fp16 / bf16 /
 * q8 / q4 / q2 against their stated error bounds; stochastic rounding
 * unbiased over many saves; a corrupted zstd blob giving an error that
 * names the handle and the layer with nothing written. (Offload files,
 * fallbacks and threads: test_store_offload.c; the kernels alone:
 * test_codecs.c.)
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <pthread.h>
#include <unistd.h>

#include <cmocka.h>

#include "actstore/store.h"
#include "store/policies/quant.h"
#include "store/store_internal.h"
#include "support/store_stats.h"
#include "support/store_util.h"
#include "support/store_rep.h"
#include "support/test_main.h"
#include "util/simd.h"
#include "util/rng.h"

/* ---- helpers -------------------------------------------------------------- */

static uint64_t rng = 0x2545f4914f6cdd1dull;
static uint32_t rnd(void) { return as_rng_u32(&rng); }
static double urand(void) { return ((double)rnd() + 0.5) / 4294967296.0; }
static float gauss(void) { return gauss_from(&rng); }

static as_store *mk(const char *spec, const char *dir, bool strict)
{
    return store_new(spec, dir, strict, 0, NULL);
}

static void *make_data(int dtype, size_t n, int flavor)
{
    return make_data_from(&rng, dtype, n, flavor);
}

/* ---- lossless codecs --------------------------------------------------- */

static void round_trip_exact(as_store *s, const char *layer, int dtype, size_t n, int flavor)
{
    size_t cols = 1000;
    void *x = make_data(dtype, n, flavor);
    size_t bytes = n * as_dtype_size(dtype);
    uint8_t *y = malloc(bytes + 1), *z = malloc(bytes + 1);
    as_tensor t = {.data = x, .dtype = dtype, .ndim = 3,
                   .shape = {(int64_t)(n / cols / 2), 2, (int64_t)cols}};
    assert_int_equal(n % (2 * cols), 0);
    as_save_info i = {.kind = AS_KIND_ACTIVATION_OUTPUT, .layer = layer};
    as_handle h;
    assert_int_equal(as_store_save(s, &i, &t, &h), 0);
    as_tensor d = t;
    d.data = y;
    memset(y, 0xa5, bytes);
    assert_int_equal(as_store_restore(s, h, &d), 0);
    if (memcmp(x, y, bytes))
        fail_msg("%s (%s, %s): not bit-exact", layer, as_store_policy_of(s, h),
                 as_dtype_name(dtype));
    d.data = z;   /* again, into another buffer */
    assert_int_equal(as_store_restore(s, h, &d), 0);
    assert_memory_equal(x, z, bytes);
    const as_tensor *v;
    assert_int_equal(as_store_restore_view(s, h, &v), 0);
    assert_memory_equal(x, v->data, bytes);
    if (dtype == AS_F32) {   /* rows across frame boundaries */
        int64_t rows = (int64_t)(n / cols);
        int64_t r0 = rows / 3, nr = rows / 2;
        float *r = malloc((size_t)nr * cols * sizeof *r);
        assert_int_equal(as_store_restore_rows(s, h, r0, nr, r), 0);
        assert_memory_equal(r, (float *)x + r0 * (int64_t)cols, (size_t)nr * cols * 4);
        assert_int_equal(as_store_restore_rows(s, h, rows - 1, 2, r), AS_ERANGE);
        free(r);
    }
    assert_int_equal(as_store_release(s, h), 0);
    free(x);
    free(y);
    free(z);
}

static void test_lossless_round_trips(void **st)
{
    (void)st;
    const char *dir = mktmp();
    as_store *s = mk("default=keep; layer:z1.*=zstd; layer:z9.*=zstd:9; "
                     "layer:zf.*=zstd:-5; layer:off.*=offload", dir, false);
    static const char *const layers[] = {"k.a", "z1.a", "z9.a", "zf.a", "off.a"};
    static const int dtypes[] = {AS_F32, AS_F16, AS_BF16, AS_I32, AS_U8};
    for (size_t l = 0; l < 5; l++)
        for (size_t d = 0; d < 5; d++)
            for (int flavor = 0; flavor < 3; flavor++) {
                /* 600k f32 = 2.3 MiB: three zstd frames, the last partial */
                size_t n = dtypes[d] == AS_F32 && flavor == 0 ? 600000 : 20000;
                round_trip_exact(s, layers[l], dtypes[d], n, flavor);
            }
    as_store_stats a = stats(s);
    assert_int_equal(a.total.fallbacks, 0);
    assert_int_equal(a.offload_fallbacks, 0);
    assert_int_equal(a.total.stored_live, 0);
    as_store_stats_free(&a);
    as__offload_wait_idle();
    char p[512];
    assert_int_equal(offload_fds(dir, p, sizeof p), 0);   /* files closed: gone */
    as_store_destroy(s);
    rm_tmp(dir);
}

/* The AVX2 and the portable zero-mask paths write the same frames. */
static void test_zstd_portable_same_bytes(void **st)
{
    (void)st;
    as_store *s = mk("default=zstd", NULL, false);
    size_t n = 300001;   /* a tail that is not a multiple of 8 */
    float *x = make_data(AS_F32, n, 0), *y = malloc(n * sizeof *y);
    as_tensor t = {.data = x, .dtype = AS_F32, .ndim = 1, .shape = {(int64_t)n}}, d = t;
    d.data = y;
    as_save_info i = {.kind = AS_KIND_ACTIVATION_OUTPUT, .layer = "p"};
    as_handle h[2];
    for (int k = 0; k < 2; k++) {
        as__simd_force_portable(k == 1);
        assert_int_equal(as_store_save(s, &i, &t, &h[k]), 0);
    }
    as_rep *r[2];
    for (int k = 0; k < 2; k++)
        r[k] = rep_of(s, h[k]);
    size_t la, lb;
    uint8_t *a = as__zstd_frame_bytes(r[0]->state, 0, &la);
    uint8_t *b = as__zstd_frame_bytes(r[1]->state, 0, &lb);
    assert_non_null(a);
    assert_int_equal(la, lb);
    assert_memory_equal(a, b, la);
    for (int k = 0; k < 2; k++) {   /* and each decodes with either path */
        as__simd_force_portable(k == 0);
        memset(y, 0, n * sizeof *y);
        assert_int_equal(as_store_restore(s, h[k], &d), 0);
        assert_memory_equal(x, y, n * sizeof *y);
        assert_int_equal(as_store_release(s, h[k]), 0);
    }
    as__simd_force_portable(false);
    free(x);
    free(y);
    as_store_destroy(s);
}

/* Edge frames: all zeros (mask mode, nothing packed), one repeated value,
 * lengths around the 8-element steps and the 1 MiB frame size. */
static void test_zstd_edge_frames(void **st)
{
    (void)st;
    as_store *s = mk("default=zstd", NULL, false);
    static const size_t lens[] = {1, 7, 8, 63, 64, 65, 1000, (1u << 18) + 3, 600001};
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++)
        for (int kind = 0; kind < 3; kind++) {
            size_t n = lens[li];
            float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
            for (size_t j = 0; j < n; j++)
                x[j] = kind == 0 ? 0.0f : kind == 1 ? 3.25f : (j % 97 == 0 ? 1.5f : 0.0f);
            as_tensor t = {.data = x, .dtype = AS_F32, .ndim = 1, .shape = {(int64_t)n}}, d = t;
            d.data = y;
            as_save_info i = {.kind = AS_KIND_GENERIC, .layer = "edge"};
            as_handle h;
            assert_int_equal(as_store_save(s, &i, &t, &h), 0);
            memset(y, 0x77, n * sizeof *y);
            assert_int_equal(as_store_restore(s, h, &d), 0);
            if (memcmp(x, y, n * sizeof *y))
                fail_msg("zstd edge frame: n %zu kind %d not exact", n, kind);
            if (n > 100000) {
                as_store_stats a = stats(s);
                assert_true(a.total.stored_live * 50 < a.total.raw_live);   /* compresses */
                as_store_stats_free(&a);
            }
            assert_int_equal(as_store_release(s, h), 0);
            free(x);
            free(y);
        }
    as_store_destroy(s);
}

static void test_zstd_ratio_on_relu(void **st)
{
    (void)st;
    as_store *s = mk("default=zstd", NULL, false);
    size_t n = 1u << 20;
    float *x = malloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++) {
        float g = gauss();
        x[i] = g > 0 ? g : 0;
    }
    as_tensor t = {.data = x, .dtype = AS_F32, .ndim = 1, .shape = {(int64_t)n}};
    as_save_info i = {.kind = AS_KIND_ACTIVATION_OUTPUT, .layer = "relu"};
    as_handle h;
    assert_int_equal(as_store_save(s, &i, &t, &h), 0);
    as_store_stats a = stats(s);
    double ratio = (double)a.total.raw_live / (double)a.total.stored_live;
    as_store_stats_free(&a);
    if (ratio < 2.0)
        fail_msg("zstd on a ReLU output: %.2fx, expected >= 2x", ratio);
    assert_int_equal(as_store_release(s, h), 0);
    free(x);
    as_store_destroy(s);
}

/* ---- lossy codecs ---------------------------------------------------------- */

static void test_half_bounds(void **st)
{
    (void)st;
    as_store *s = mk("layer:h=fp16; layer:b=bf16", NULL, false);
    enum { N = 65536 };
    float *x = malloc(N * sizeof *x), *y = malloc(N * sizeof *y);
    for (int i = 0; i < N; i++) {
        float m = powf(2.0f, (float)(urand() * 40.0 - 24.0));   /* 2^-24 .. 2^16 */
        x[i] = rnd() & 1 ? -m : m;
        if (fabsf(x[i]) > 65504.0f)
            x[i] = copysignf(65504.0f, x[i]);
    }
    as_tensor t = {.data = x, .dtype = AS_F32, .ndim = 2, .shape = {256, 256}};
    as_tensor d = t;
    d.data = y;
    static const char *const layers[] = {"h", "b"};
    for (int l = 0; l < 2; l++) {
        as_save_info i = {.kind = AS_KIND_GENERIC, .layer = layers[l]};
        as_handle h;
        assert_int_equal(as_store_save(s, &i, &t, &h), 0);
        assert_int_equal(as_store_restore(s, h, &d), 0);
        for (int k = 0; k < N; k++) {
            float a = fabsf(x[k]), e = fabsf(y[k] - x[k]);
            if (l == 0 && !(a >= 0x1p-14f ? e <= a * 0x1p-11f : e <= 0x1p-25f))
                fail_msg("fp16 %g -> %g", x[k], y[k]);
            if (l == 1 && !(e <= a * 0x1p-8f))
                fail_msg("bf16 %g -> %g", x[k], y[k]);
        }
        as_store_stats a = stats(s);
        assert_int_equal(a.total.stored_live, 24 + N * 2);   /* header (n, cols, seal) + halves */
        as_store_stats_free(&a);
        float rows[3 * 256];
        assert_int_equal(as_store_restore_rows(s, h, 100, 3, rows), 0);
        assert_memory_equal(rows, y + 100 * 256, sizeof rows);
        assert_int_equal(as_store_release(s, h), 0);
    }
    free(x);
    free(y);
    as_store_destroy(s);
}

static void check_quant(as_store *s, const char *layer, int bits, size_t group, size_t n)
{
    float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
    for (size_t i = 0; i < n; i++)   /* groups of very different ranges */
        x[i] = gauss() * (float)(1 + (i / group) % 7) * ((i / group) % 3 ? 1.0f : 1e-3f);
    as_tensor t = {.data = x, .dtype = AS_F32, .ndim = 2,
                   .shape = {(int64_t)(n / 100), 100}};
    as_tensor d = t;
    d.data = y;
    as_save_info i = {.kind = AS_KIND_GENERIC, .layer = layer};
    as_handle h;
    assert_int_equal(as_store_save(s, &i, &t, &h), 0);
    assert_int_equal(as_store_restore(s, h, &d), 0);
    double qmax = (double)((1 << bits) - 1);
    for (size_t g0 = 0; g0 < n; g0 += group) {
        size_t g1 = g0 + group < n ? g0 + group : n;
        float mn = x[g0], mx = x[g0];
        for (size_t k = g0; k < g1; k++) {
            mn = x[k] < mn ? x[k] : mn;
            mx = x[k] > mx ? x[k] : mx;
        }
        double step = ((double)mx - mn) / qmax;
        double slack = 4.0 * 0x1p-23 * fmax(fabs(mn), fabs(mx));
        for (size_t k = g0; k < g1; k++) {
            double e = fabs((double)y[k] - x[k]);
            if (!(e < step + slack) || y[k] < mn - slack || y[k] > mx + slack)
                fail_msg("%s: value %zu: %g -> %g (group [%g, %g], step %g)", layer, k, x[k],
                         y[k], mn, mx, step);
        }
    }
    as_store_stats a = stats(s);
    size_t expect = as__quant_code_bytes(n, bits) + 8 * as__quant_groups(n, group);
    assert_true(a.total.stored_live >= expect && a.total.stored_live <= expect + 64);
    as_store_stats_free(&a);
    float *rows = malloc(7 * 100 * sizeof *rows);   /* rows agree with the full decode */
    assert_int_equal(as_store_restore_rows(s, h, 13, 7, rows), 0);
    assert_memory_equal(rows, y + 1300, 700 * sizeof *rows);
    assert_int_equal(as_store_restore(s, h, &d), 0);   /* again: same values */
    assert_memory_equal(rows, y + 1300, 700 * sizeof *rows);
    assert_int_equal(as_store_release(s, h), 0);
    free(rows);
    free(x);
    free(y);
}

static void test_quant_bounds(void **st)
{
    (void)st;
    as_store *s = mk("layer:q8=q8; layer:q4=q4; layer:q2=q2; layer:q8g=q8:g=64; "
                     "layer:q4g=q4:g=32:seed=3; layer:q2g=q2:8", NULL, false);
    check_quant(s, "q8", 8, 256, 30000);
    check_quant(s, "q4", 4, 256, 30000);
    check_quant(s, "q2", 2, 256, 30000);
    check_quant(s, "q8g", 8, 64, 30000);
    check_quant(s, "q4g", 4, 32, 30000);
    check_quant(s, "q2g", 2, 8, 30000);
    as_store_destroy(s);
}

static void test_stochastic_rounding_unbiased(void **st)
{
    (void)st;
    /* The same tensor saved K times: every save draws fresh noise (the
     * handle seeds it), and the mean of the K restores converges to x. */
    as_store *s = mk("default=q2:g=64", NULL, false);
    enum { N = 4096, K = 400, G = 64 };
    float *x = malloc(N * sizeof *x), *y = malloc(N * sizeof *y), *y0 = malloc(N * sizeof *y0);
    double *sum = calloc(N, sizeof *sum);
    for (int i = 0; i < N; i++)
        x[i] = gauss();
    as_tensor t = {.data = x, .dtype = AS_F32, .ndim = 1, .shape = {N}}, d = t;
    d.data = y;
    as_save_info in = {.kind = AS_KIND_GENERIC, .layer = "sr"};
    int differ = 0;
    for (int k = 0; k < K; k++) {
        as_handle h;
        assert_int_equal(as_store_save(s, &in, &t, &h), 0);
        assert_int_equal(as_store_restore(s, h, &d), 0);
        assert_int_equal(as_store_release(s, h), 0);
        if (k == 0)
            memcpy(y0, y, N * sizeof *y);
        else if (k == 1)
            differ = memcmp(y0, y, N * sizeof *y) != 0;
        for (int i = 0; i < N; i++)
            sum[i] += y[i];
    }
    assert_true(differ);   /* fresh noise per save */
    double bias = 0, abs_mean = 0, abs_single = 0, worst = 0;
    for (int g = 0; g < N / G; g++) {
        float mn = x[g * G], mx = x[g * G];
        for (int i = g * G; i < (g + 1) * G; i++) {
            mn = x[i] < mn ? x[i] : mn;
            mx = x[i] > mx ? x[i] : mx;
        }
        double step = ((double)mx - mn) / 3.0;
        for (int i = g * G; i < (g + 1) * G; i++) {
            double e = (sum[i] / K - x[i]) / step;   /* in steps */
            bias += e;
            abs_mean += fabs(e);
            abs_single += fabs((double)y0[i] - x[i]) / step;
            worst = fabs(e) > worst ? fabs(e) : worst;
        }
    }
    bias /= N, abs_mean /= N, abs_single /= N;
    /* one draw errs by ~1/3 step on average; the mean of 400 by ~1/60 */
    if (!(fabs(bias) < 0.005 && abs_mean < 0.04 && abs_mean < abs_single / 8 && worst < 0.15))
        fail_msg("stochastic rounding biased: mean error %.4f steps, mean |error| %.4f "
                 "(single draw %.4f), worst %.4f", bias, abs_mean, abs_single, worst);
    /* and deterministic rounding would not pass: round-to-nearest errs by
     * ~1/4 step on every draw alike (its mean |error| equals a single one) */
    as_store_destroy(s);
    free(x);
    free(y);
    free(y0);
    free(sum);
}

/* Two stores fed the same saves draw the same noise (the item key leaves
 * the store id out), so an A/B arm with q4 matches the same run alone; a
 * different seed= in the spec still changes it. */
static void test_stochastic_rounding_same_in_two_stores(void **st)
{
    (void)st;
    enum { N = 2048, SAVES = 3 };
    as_store *a = mk("default=q4:g=64", NULL, false);
    as_store *b = mk("default=q4:g=64", NULL, false);
    as_store *c = mk("default=q4:g=64:seed=9", NULL, false);
    float *x = malloc(N * sizeof *x), *ya = malloc(N * sizeof *ya),
          *yb = malloc(N * sizeof *yb), *yc = malloc(N * sizeof *yc);
    for (int i = 0; i < N; i++)
        x[i] = gauss();
    as_tensor t = {.data = x, .dtype = AS_F32, .ndim = 1, .shape = {N}};
    as_save_info in = {.kind = AS_KIND_GENERIC, .layer = "arm"};
    for (int k = 0; k < SAVES; k++) {
        as_handle ha, hb, hc;
        assert_int_equal(as_store_save(a, &in, &t, &ha), 0);
        assert_int_equal(as_store_save(b, &in, &t, &hb), 0);
        assert_int_equal(as_store_save(c, &in, &t, &hc), 0);
        assert_true(ha.v != hb.v);              /* different stores, different handles */
        as_tensor da = t, db = t, dc = t;
        da.data = ya, db.data = yb, dc.data = yc;
        assert_int_equal(as_store_restore(a, ha, &da), 0);
        assert_int_equal(as_store_restore(b, hb, &db), 0);
        assert_int_equal(as_store_restore(c, hc, &dc), 0);
        assert_memory_equal(ya, yb, N * sizeof *ya);
        assert_true(memcmp(ya, yc, N * sizeof *ya) != 0);
    }
    as_store_destroy(a);
    as_store_destroy(b);
    as_store_destroy(c);
    free(x);
    free(ya);
    free(yb);
    free(yc);
}

/* ---- corruption ------------------------------------------------------------ */

static void test_zstd_corrupted_blob(void **st)
{
    (void)st;
    as_store *s = mk("default=zstd", NULL, false);
    size_t n = 400000;   /* two frames */
    float *x = make_data(AS_F32, n, 1), *y = malloc(n * sizeof *y);
    as_tensor t = {.data = x, .dtype = AS_F32, .ndim = 2, .shape = {(int64_t)n / 100, 100}};
    as_tensor d = t;
    d.data = y;
    as_save_info i = {.kind = AS_KIND_LINEAR_INPUT, .layer = "enc.fc2"};
    as_handle h;
    assert_int_equal(as_store_save(s, &i, &t, &h), 0);
    as_rep *r = rep_of(s, h);
    size_t len = 0;
    uint8_t *blob = as__zstd_frame_bytes(r->state, 1, &len);
    assert_non_null(blob);
    assert_true(len > 100);
    blob[len / 2] ^= 0x10;
    char hs[32];
    snprintf(hs, sizeof hs, "0x%016llx", (unsigned long long)h.v);
    memset(y, 0x5a, n * sizeof *y);
    assert_int_equal(as_store_restore(s, h, &d), AS_ECORRUPT);
    assert_contains(as_store_last_error(s), hs);
    assert_contains(as_store_last_error(s), "enc.fc2");
    assert_contains(as_store_last_error(s), "frame 1");
    for (size_t k = 0; k < n; k++)   /* nothing written, not even frame 0 */
        assert_int_equal(((uint32_t *)y)[k], 0x5a5a5a5au);
    const as_tensor *v;
    assert_int_equal(as_store_restore_view(s, h, &v), AS_ECORRUPT);
    assert_null(v);
    assert_int_equal(as_store_restore_rows(s, h, (int64_t)n / 100 - 10, 10, y), AS_ECORRUPT);
    assert_int_equal(as_store_restore_rows(s, h, 0, 10, y), 0);   /* frame 0 is fine */
    assert_memory_equal(y, x, 1000 * sizeof *y);
    blob[len / 2] ^= 0x10;   /* repaired: restores work again */
    assert_int_equal(as_store_restore(s, h, &d), 0);
    assert_memory_equal(x, y, n * sizeof *y);
    assert_int_equal(as_store_release(s, h), 0);
    free(x);
    free(y);
    as_store_destroy(s);
}

AS_TEST_MAIN(NULL, NULL,
             cmocka_unit_test(test_lossless_round_trips),
             cmocka_unit_test(test_zstd_portable_same_bytes),
             cmocka_unit_test(test_zstd_edge_frames),
             cmocka_unit_test(test_zstd_ratio_on_relu),
             cmocka_unit_test(test_half_bounds),
             cmocka_unit_test(test_quant_bounds),
             cmocka_unit_test(test_stochastic_rounding_unbiased),
             cmocka_unit_test(test_stochastic_rounding_same_in_two_stores),
             cmocka_unit_test(test_zstd_corrupted_blob))

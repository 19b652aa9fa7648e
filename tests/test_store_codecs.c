/*
 * Codecs through the store: bit-exact round trips of keep, zstd and offload
 * over every dtype, special values and frame boundaries; fp16 / bf16 /
 * q8 / q4 / q2 against their stated error bounds; stochastic rounding
 * unbiased over many saves; a corrupted zstd blob and a modified, truncated
 * or deleted offload file giving errors that name the handle and the layer
 * with nothing written; offload falling back to memory when the directory
 * is missing or full (counted, named), background write failures, prefetch.
 * (The kernels alone: test_codecs.c.)
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
#include "util/rng.h"

/* ---- helpers -------------------------------------------------------------- */

static uint64_t rng = 0x2545f4914f6cdd1dull;
static uint32_t rnd(void) { return as_rng_u32(&rng); }
static double urand(void) { return ((double)rnd() + 0.5) / 4294967296.0; }
static float gauss(void)
{
    return (float)(sqrt(-2.0 * log(urand())) * cos(6.283185307179586 * urand()));
}

static as_store *mk(const char *spec, const char *dir, bool strict)
{
    as_store_config cfg = {.policy = spec, .offload_dir = dir, .strict = strict};
    as_store *s = NULL;
    char err[256] = "";
    int rc = as_store_create(&cfg, &s, err, sizeof err);
    if (rc != 0)
        fail_msg("as_store_create(%s): %s (%s)", spec, as_strerror(rc), err);
    return s;
}

__attribute__((noinline)) static void assert_contains(const char *hay, const char *needle)
{
    if (!strstr(hay, needle))
        fail_msg("'%s' does not contain '%s'", hay, needle);
}

static char tmpdir_buf[8][64];
static int ntmp;
static const char *mktmp(void)
{
    char *d = tmpdir_buf[ntmp++ % 8];
    snprintf(d, 64, "/tmp/as_test_store_XXXXXX");
    assert_non_null(mkdtemp(d));
    return d;
}

/* The one offload file in dir (path into buf), or "" when none. */
static int offload_files(const char *dir, char *buf, size_t len)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    buf[0] = 0;
    while ((e = readdir(d)))
        if (!strncmp(e->d_name, "actstore-", 9)) {
            snprintf(buf, len, "%s/%s", dir, e->d_name);
            n++;
        }
    closedir(d);
    return n;
}

static void rm_tmp(const char *dir)
{
    char p[512];
    while (offload_files(dir, p, sizeof p) > 0)
        unlink(p);
    rmdir(dir);
}

/* A test tensor of a dtype: mixed data (runs of zeros, specials for the
 * float types) so every codec path is taken. */
static void *make_data(int dtype, size_t n, int flavor)
{
    size_t es = as_dtype_size(dtype);
    uint8_t *p = malloc(n * es + 1);
    assert_non_null(p);
    for (size_t i = 0; i < n; i++) {
        float f = flavor == 0 ? (gauss() > 0 ? fabsf(gauss()) : 0.0f)   /* relu */
                : flavor == 1 ? gauss() : (float)(rnd() % 1000) * 1e-3f;
        switch (dtype) {
        case AS_F32: memcpy(p + 4 * i, &f, 4); break;
        case AS_I32: { int32_t v = flavor == 0 && f == 0 ? 0 : (int32_t)rnd(); memcpy(p + 4 * i, &v, 4); break; }
        case AS_F16: case AS_BF16: { uint16_t v = f == 0 ? 0 : (uint16_t)rnd(); memcpy(p + 2 * i, &v, 2); break; }
        default: p[i] = f == 0 ? 0 : (uint8_t)rnd();
        }
    }
    if (dtype == AS_F32 && n > 8) {
        float sp[] = {NAN, -0.0f, INFINITY, -INFINITY, 1e-45f, -3.4e38f, 0x1p-140f};
        memcpy(p, sp, sizeof sp);
        uint32_t payload = 0x7fc12345u;   /* a NaN payload survives */
        memcpy(p + 4 * 7, &payload, 4);
    }
    return p;
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
    assert_int_equal(offload_files(dir, p, sizeof p), 0);   /* files removed */
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
        as__zstd_portable(k == 1);
        assert_int_equal(as_store_save(s, &i, &t, &h[k]), 0);
    }
    as_item *it[2];
    as_rep *r[2];
    for (int k = 0; k < 2; k++)
        assert_int_equal(as__lookup_rep(s, h[k], &it[k], &r[k], "test"), 0);
    size_t la, lb;
    uint8_t *a = as__zstd_frame_bytes(r[0]->state, 0, &la);
    uint8_t *b = as__zstd_frame_bytes(r[1]->state, 0, &lb);
    assert_non_null(a);
    assert_int_equal(la, lb);
    assert_memory_equal(a, b, la);
    for (int k = 0; k < 2; k++) {   /* and each decodes with either path */
        as__zstd_portable(k == 0);
        memset(y, 0, n * sizeof *y);
        assert_int_equal(as_store_restore(s, h[k], &d), 0);
        assert_memory_equal(x, y, n * sizeof *y);
        as__rep_unref(s, r[k]);
        as__item_unref(s, it[k]);
        assert_int_equal(as_store_release(s, h[k]), 0);
    }
    as__zstd_portable(false);
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
        assert_int_equal(a.total.stored_live, 16 + N * 2);   /* header + halves */
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
    as_item *it;
    as_rep *r;
    assert_int_equal(as__lookup_rep(s, h, &it, &r, "test"), 0);
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
    as__rep_unref(s, r);
    as__item_unref(s, it);
    assert_int_equal(as_store_release(s, h), 0);
    free(x);
    free(y);
    as_store_destroy(s);
}

/* ---- offload ------------------------------------------------------------------ */

typedef struct off_case {
    as_store *s;
    const char *dir;
    float *x, *y;
    size_t n;
    as_tensor t, d;
    as_handle h;
    char path[512], hs[32];
} off_case;

static void off_setup(off_case *c, const char *spec, const char *layer)
{
    memset(c, 0, sizeof *c);
    c->dir = mktmp();
    c->s = mk(spec, c->dir, false);
    c->n = 300000;
    c->x = make_data(AS_F32, c->n, 1);
    c->y = malloc(c->n * sizeof *c->y);
    c->t = (as_tensor){.data = c->x, .dtype = AS_F32, .ndim = 2,
                       .shape = {(int64_t)c->n / 300, 300}};
    c->d = c->t;
    c->d.data = c->y;
    as_save_info i = {.kind = AS_KIND_CONV_INPUT, .layer = layer};
    assert_int_equal(as_store_save(c->s, &i, &c->t, &c->h), 0);
    as__offload_wait_idle();
    snprintf(c->hs, sizeof c->hs, "0x%016llx", (unsigned long long)c->h.v);
}

static void off_teardown(off_case *c)
{
    if (!as_handle_is_null(c->h))
        assert_int_equal(as_store_release(c->s, c->h), 0);
    as_store_destroy(c->s);
    free(c->x);
    free(c->y);
    rm_tmp(c->dir);
}

static void patch(const char *path, long off, const void *bytes, size_t n)
{
    int fd = open(path, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, bytes, n, off), (ssize_t)n);
    close(fd);
}

static void test_offload_round_trip_prefetch(void **st)
{
    (void)st;
    off_case c;
    off_setup(&c, "default=offload", "conv3");
    assert_string_equal(as_store_policy_of(c.s, c.h), "offload");
    assert_int_equal(offload_files(c.dir, c.path, sizeof c.path), 1);
    struct stat sb;
    assert_int_equal(stat(c.path, &sb), 0);
    assert_int_equal(sb.st_size, 64 + c.n * 4);
    assert_int_equal(sb.st_mode & 0777, 0600);
    as_store_stats a = stats(c.s);
    assert_int_equal(a.total.stored_live, 0);   /* all on disk now */
    assert_int_equal(a.total.stored_peak, c.n * 4);   /* the staging copy was */
    assert_int_equal(a.total.raw_live, c.n * 4);
    as_store_stats_free(&a);
    assert_int_equal(as_store_restore(c.s, c.h, &c.d), 0);
    assert_memory_equal(c.x, c.y, c.n * 4);
    for (int k = 0; k < 3; k++) {   /* prefetched reads, then a direct one */
        memset(c.y, 0, c.n * 4);
        assert_int_equal(as_store_prefetch(c.s, c.h), 0);
        if (k == 1)
            as__offload_wait_idle();   /* the read finished before restore */
        assert_int_equal(as_store_restore(c.s, c.h, &c.d), 0);
        assert_memory_equal(c.x, c.y, c.n * 4);
    }
    /* many offloaded items restored right away (staging or file) */
    as_handle hs[6];
    as_save_info i = {.kind = AS_KIND_CONV_INPUT, .layer = "conv4"};
    for (int k = 0; k < 6; k++)
        assert_int_equal(as_store_save(c.s, &i, &c.t, &hs[k]), 0);
    for (int k = 5; k >= 0; k--) {
        memset(c.y, 0, c.n * 4);
        assert_int_equal(as_store_restore(c.s, hs[k], &c.d), 0);
        assert_memory_equal(c.x, c.y, c.n * 4);
        assert_int_equal(as_store_release(c.s, hs[k]), 0);
    }
    /* an empty tensor: no file, restores give nothing, release is fine */
    as_tensor e = {.data = NULL, .dtype = AS_F32, .ndim = 2, .shape = {0, 300}};
    as_handle he;
    assert_int_equal(as_store_save(c.s, &i, &e, &he), 0);
    assert_string_equal(as_store_policy_of(c.s, he), "offload");
    assert_int_equal(as_store_restore(c.s, he, &e), 0);
    assert_int_equal(as_store_prefetch(c.s, he), 0);
    assert_int_equal(as_store_restore(c.s, he, &e), 0);
    assert_int_equal(as_store_release(c.s, he), 0);
    assert_int_equal(as_store_release(c.s, c.h), 0);
    c.h = AS_HANDLE_NULL;
    as__offload_wait_idle();
    assert_int_equal(offload_files(c.dir, c.path, sizeof c.path), 0);
    off_teardown(&c);
}

static void expect_corrupt(off_case *c, int code, const char *what)
{
    memset(c->y, 0x33, c->n * 4);
    assert_int_equal(as_store_restore(c->s, c->h, &c->d), code);
    assert_contains(as_store_last_error(c->s), c->hs);
    assert_contains(as_store_last_error(c->s), "conv7");
    assert_contains(as_store_last_error(c->s), what);
    for (size_t k = 0; k < c->n; k++)
        assert_int_equal(((uint32_t *)c->y)[k], 0x33333333u);
    /* prefetched: the same error when the restore comes */
    assert_int_equal(as_store_prefetch(c->s, c->h), 0);
    assert_int_equal(as_store_restore(c->s, c->h, &c->d), code);
    assert_contains(as_store_last_error(c->s), what);
    assert_int_equal(((uint32_t *)c->y)[0], 0x33333333u);
}

static void test_offload_corrupted_file(void **st)
{
    (void)st;
    off_case c;
    off_setup(&c, "default=offload", "conv7");
    assert_int_equal(offload_files(c.dir, c.path, sizeof c.path), 1);
    /* one payload byte modified */
    uint8_t b, nb;
    int fd = open(c.path, O_RDONLY);
    assert_int_equal(pread(fd, &b, 1, 64 + 12345), 1);
    close(fd);
    nb = b ^ 1;
    patch(c.path, 64 + 12345, &nb, 1);
    expect_corrupt(&c, AS_ECORRUPT, "checksum mismatch");
    patch(c.path, 64 + 12345, &b, 1);   /* put back: fine again */
    assert_int_equal(as_store_restore(c.s, c.h, &c.d), 0);
    assert_memory_equal(c.x, c.y, c.n * 4);
    /* the header */
    patch(c.path, 0, "X", 1);
    expect_corrupt(&c, AS_ECORRUPT, "bad header");
    patch(c.path, 0, "A", 1);
    assert_int_equal(as_store_restore(c.s, c.h, &c.d), 0);
    /* truncated */
    assert_int_equal(truncate(c.path, 64 + 1000), 0);
    expect_corrupt(&c, AS_ECORRUPT, "truncated");
    /* deleted */
    assert_int_equal(unlink(c.path), 0);
    expect_corrupt(&c, AS_EIO, "No such file");
    as_store_stats a = stats(c.s);
    assert_int_equal(a.total.restores, 2);   /* only the good ones count */
    as_store_stats_free(&a);
    off_teardown(&c);
}

static void test_offload_missing_or_full_dir(void **st)
{
    (void)st;
    float x[1000], y[1000];
    for (int k = 0; k < 1000; k++)
        x[k] = gauss();
    as_tensor t = {.data = x, .dtype = AS_F32, .ndim = 1, .shape = {1000}}, d = t;
    d.data = y;
    as_save_info i = {.kind = AS_KIND_ACTIVATION_OUTPUT, .layer = "act9"};
    for (int strict = 0; strict < 2; strict++) {
        /* missing directory (store default and spec argument) */
        as_store *s = mk("default=offload; layer:z=offload:/nonexistent/as|zstd",
                         "/nonexistent/actstore-dir", strict);
        as_handle h, hz;
        assert_int_equal(as_store_save(s, &i, &t, &h), 0);
        assert_contains(as_store_policy_of(s, h), "keep (fallback from offload: directory "
                                                  "/nonexistent/actstore-dir");
        i.layer = "z";
        assert_int_equal(as_store_save(s, &i, &t, &hz), 0);
        assert_contains(as_store_policy_of(s, hz), "zstd (fallback from offload:/nonexistent/as");
        i.layer = "act9";
        memset(y, 0, sizeof y);
        assert_int_equal(as_store_restore(s, h, &d), 0);
        assert_memory_equal(x, y, sizeof x);
        assert_int_equal(as_store_restore(s, hz, &d), 0);
        assert_memory_equal(x, y, sizeof x);
        as_store_stats a = stats(s);
        assert_int_equal(a.offload_fallbacks, 2);
        assert_int_equal(a.total.fallbacks, 2);
        assert_int_equal(layer_of(&a, "act9")->c.fallbacks, 1);
        assert_contains(layer_of(&a, "act9")->last_fallback, "No such file or directory");
        assert_int_equal(layer_of(&a, "act9")->c.stored_live, sizeof x);   /* in memory */
        as_store_stats_free(&a);
        as_store_release(s, h);
        as_store_release(s, hz);
        as_store_destroy(s);
    }
    /* a full directory (ENOSPC when reserving the file's space) */
    const char *dir = mktmp();
    as_store *s = mk("default=offload", dir, false);
    as_handle h;
    as__offload_inject(1, ENOSPC);
    assert_int_equal(as_store_save(s, &i, &t, &h), 0);
    assert_contains(as_store_policy_of(s, h), "No space left on device");
    assert_int_equal(as_store_restore(s, h, &d), 0);
    assert_memory_equal(x, y, sizeof x);
    as_store_release(s, h);
    /* the disk fills up during the background write: kept in memory */
    as__offload_inject(2, ENOSPC);
    assert_int_equal(as_store_save(s, &i, &t, &h), 0);
    as__offload_wait_idle();
    char p[512];
    assert_int_equal(offload_files(dir, p, sizeof p), 0);   /* the partial file is gone */
    memset(y, 0, sizeof y);
    assert_int_equal(as_store_restore(s, h, &d), 0);
    assert_memory_equal(x, y, sizeof x);
    as_store_stats a = stats(s);
    assert_int_equal(a.offload_fallbacks, 2);
    assert_contains(layer_of(&a, "act9")->last_fallback, "write failed");
    assert_int_equal(a.total.stored_live, sizeof x);   /* the staging copy stays */
    as_store_stats_free(&a);
    as_store_release(s, h);
    a = stats(s);
    assert_int_equal(a.total.stored_live, 0);
    as_store_stats_free(&a);
    /* afterwards offload works again */
    assert_int_equal(as_store_save(s, &i, &t, &h), 0);
    assert_string_equal(as_store_policy_of(s, h), "offload");
    as__offload_wait_idle();
    assert_int_equal(offload_files(dir, p, sizeof p), 1);
    assert_int_equal(as_store_restore(s, h, &d), 0);
    assert_memory_equal(x, y, sizeof x);
    as_store_release(s, h);
    as_store_destroy(s);
    rm_tmp(dir);
}

/* Fault injection through the budget: for each codec, every budget from
 * 0 up in small steps until the save succeeds. Each failed save returns
 * AS_EBUDGET and leaves nothing behind (no handle, no stored or raw bytes,
 * nothing in the arena's saved tag); then the store works normally. */
static void test_budget_sweep(void **st)
{
    (void)st;
    static const char *const specs[] = {"default=keep", "default=zstd", "default=q4:g=64",
                                        "default=fp16", "default=offload"};
    size_t n = 640000;   /* 2.4 MiB: three zstd frames */
    float *x = make_data(AS_F32, n, 0), *y = malloc(n * sizeof *y);
    as_tensor t = {.data = x, .dtype = AS_F32, .ndim = 2, .shape = {(int64_t)n / 1000, 1000}};
    as_tensor d = t;
    d.data = y;
    as_save_info i = {.kind = AS_KIND_GENERIC, .layer = "sweep"};
    for (size_t k = 0; k < sizeof specs / sizeof specs[0]; k++) {
        const char *dir = mktmp();
        as_store *s = mk(specs[k], dir, false);
        as_arena *a = as_store_arena(s);
        int fails = 0;
        for (uint64_t budget = 1;; budget += 32 << 10) {
            as_arena_set_budget(a, budget);
            as_handle h;
            int rc = as_store_save(s, &i, &t, &h);
            if (rc == 0) {
                as_arena_set_budget(a, 0);
                assert_int_equal(as_store_restore(s, h, &d), 0);
                if (!strstr(specs[k], "q4") && !strstr(specs[k], "fp16"))
                    assert_memory_equal(x, y, n * sizeof *y);   /* lossless ones */
                else
                    for (size_t j = 64; j < n; j++)   /* past the specials' group */
                        assert_true(fabsf(x[j] - y[j]) <= 0.5f + fabsf(x[j]) * 1e-3f);
                assert_int_equal(as_store_release(s, h), 0);
                break;
            }
            if (rc != AS_EBUDGET)
                fail_msg("%s, budget %llu: %s (%s)", specs[k], (unsigned long long)budget,
                         as_strerror(rc), as_store_last_error(s));
            fails++;
            assert_true(as_handle_is_null(h));
            assert_contains(as_store_last_error(s), "budget");
            as_store_stats a2 = stats(s);
            assert_int_equal(a2.live_handles, 0);
            assert_int_equal(a2.total.raw_live, 0);
            assert_int_equal(a2.total.stored_live, 0);
            as_store_stats_free(&a2);
            as_arena_flush_thread_cache(a);
            as_arena_snapshot sn;
            assert_int_equal(as_arena_snapshot_take(a, 0, &sn), 0);
            assert_int_equal(sn.tags[AS_TAG_SAVED].live_requested, 0);
            as_arena_snapshot_free(&sn);
            assert_true(budget < (64u << 20));
        }
        assert_true(fails >= 3);   /* the sweep went through the error paths */
        as__offload_wait_idle();
        as_store_destroy(s);
        rm_tmp(dir);
    }
    free(x);
    free(y);
}

/* Offload from 4 threads at once: saves, prefetches, restores (from the
 * staging copy, a prefetched buffer or the file) and releases interleave
 * with the I/O thread's writes and reads. */
typedef struct off_thr {
    as_store *s;
    int id, errors;
    char msg[300];
} off_thr;

static void *off_worker(void *arg)
{
    off_thr *c = arg;
    enum { N = 16384, KEEP = 6 };
    float *x = malloc(KEEP * N * sizeof *x), *y = malloc(N * sizeof *y);
    as_handle h[KEEP] = {{0}};
    uint64_t r = 0x9e3779b97f4a7c15ull * (uint64_t)(c->id + 1);
    for (int it = 0; it < 120 && !c->errors; it++) {
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        int slot = (int)((r >> 33) % KEEP);
        float *xs = x + slot * N;
        int rc = 0;
        if (!as_handle_is_null(h[slot])) {   /* restore the old one, then release */
            as_tensor d = {.data = y, .dtype = AS_F32, .ndim = 1, .shape = {N}};
            if ((r >> 20) & 1)
                rc = as_store_prefetch(c->s, h[slot]);
            if (rc == 0)
                rc = as_store_restore(c->s, h[slot], &d);
            if (rc == 0 && memcmp(xs, y, N * sizeof *y)) {
                snprintf(c->msg, sizeof c->msg, "thread %d: wrong values", c->id);
                c->errors++;
            }
            if (rc == 0)
                rc = as_store_release(c->s, h[slot]);
            h[slot] = AS_HANDLE_NULL;
        }
        for (int j = 0; j < N; j++)
            xs[j] = (float)(it * 31 + j + c->id * 1000);
        as_tensor t = {.data = xs, .dtype = AS_F32, .ndim = 1, .shape = {N}};
        as_save_info i = {.kind = AS_KIND_GENERIC, .layer = "othr"};
        if (rc == 0)
            rc = as_store_save(c->s, &i, &t, &h[slot]);
        if (rc != 0 && !c->errors) {
            snprintf(c->msg, sizeof c->msg, "thread %d: %s: %s", c->id, as_strerror(rc),
                     as_store_last_error(c->s));
            c->errors++;
        }
    }
    for (int k = 0; k < KEEP; k++)
        as_store_release(c->s, h[k]);
    free(x);
    free(y);
    return NULL;
}

static void test_offload_threads(void **st)
{
    (void)st;
    const char *dir = mktmp();
    as_store *s = mk("default=offload", dir, false);
    off_thr c[4];
    pthread_t th[4];
    for (int k = 0; k < 4; k++) {
        c[k] = (off_thr){.s = s, .id = k};
        assert_int_equal(pthread_create(&th[k], NULL, off_worker, &c[k]), 0);
    }
    for (int k = 0; k < 4; k++)
        pthread_join(th[k], NULL);
    for (int k = 0; k < 4; k++)
        if (c[k].errors)
            fail_msg("%s", c[k].msg);
    as__offload_wait_idle();
    as_store_stats a = stats(s);
    assert_int_equal(a.live_handles, 0);
    assert_int_equal(a.total.stored_live, 0);
    assert_int_equal(a.offload_fallbacks, 0);
    assert_int_equal(a.total.saves, 4 * 120);
    as_store_stats_free(&a);
    char p[512];
    assert_int_equal(offload_files(dir, p, sizeof p), 0);
    as_store_destroy(s);
    rm_tmp(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lossless_round_trips),
        cmocka_unit_test(test_zstd_portable_same_bytes),
        cmocka_unit_test(test_zstd_edge_frames),
        cmocka_unit_test(test_zstd_ratio_on_relu),
        cmocka_unit_test(test_half_bounds),
        cmocka_unit_test(test_quant_bounds),
        cmocka_unit_test(test_stochastic_rounding_unbiased),
        cmocka_unit_test(test_stochastic_rounding_same_in_two_stores),
        cmocka_unit_test(test_zstd_corrupted_blob),
        cmocka_unit_test(test_offload_round_trip_prefetch),
        cmocka_unit_test(test_offload_corrupted_file),
        cmocka_unit_test(test_offload_missing_or_full_dir),
        cmocka_unit_test(test_budget_sweep),
        cmocka_unit_test(test_offload_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

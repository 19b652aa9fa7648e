/*
 * Codec kernels (store/policies/quant.h): half floats against their stated
 * bounds and against each other (F16C vs portable), byte shuffles, the
 * checksum, per-group quantization (bounds, ranges, determinism, and that
 * stochastic rounding is unbiased over many draws).
 * Policy-level round trips through the store: test_store_codecs.c.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "store/policies/quant.h"
#include "support/test_main.h"

static uint64_t rng_state = 0x1234567;
static uint32_t rnd32(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rng_state >> 32);
}
static float rnd_uniform(float lo, float hi)
{
    return lo + (hi - lo) * (float)(rnd32() >> 8) / 16777216.0f;
}
static float u2f(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static uint32_t f2u(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* ---- fp16 ----------------------------------------------------------------- */

static void test_fp16_bounds_and_specials(void **st)
{
    (void)st;
    enum { N = 200000 };
    float *x = malloc(N * sizeof *x), *y = malloc(N * sizeof *y);
    uint16_t *h = malloc(N * sizeof *h);
    for (int i = 0; i < N; i++) {
        /* log-uniform magnitudes over the whole half range, both signs */
        float m = powf(2.0f, rnd_uniform(-26.0f, 15.9f));
        x[i] = (rnd32() & 1) ? -m : m;
    }
    as__f32_to_f16(x, h, N);
    as__f16_to_f32(h, y, N);
    for (int i = 0; i < N; i++) {
        float a = fabsf(x[i]), err = fabsf(y[i] - x[i]);
        if (a >= 0x1p-14f)
            assert_true(err <= a * 0x1p-11f);
        else
            assert_true(err <= 0x1p-25f);
    }
    /* ties to even, overflow, NaN, signed zero, subnormals */
    float s[] = {1.0f + 0x1p-11f, 1.0f + 3 * 0x1p-11f, 65504.0f, 65519.0f,
                 65520.0f, -1e9f, INFINITY, NAN, -0.0f, 0x1p-24f, 0x1p-25f,
                 0x1.8p-25f, 0x1p-14f};
    float e[] = {1.0f, 1.0f + 0x1p-9f, 65504.0f, 65504.0f, INFINITY,
                 -INFINITY, INFINITY, NAN, -0.0f, 0x1p-24f, 0.0f, 0x1p-24f,
                 0x1p-14f};
    uint16_t hs[13], hw[13];
    float r[13];
    as__f32_to_f16(s, hs, 13);
    as__f32_to_f16_sw(s, hw, 13);
    as__f16_to_f32(hs, r, 13);
    for (int i = 0; i < 13; i++) {
        if (isnan(e[i]))
            assert_true(isnan(r[i]));
        else
            assert_int_equal(f2u(r[i]), f2u(e[i]));
        if (!isnan(e[i]))
            assert_int_equal(hs[i], hw[i]);
    }
    free(x), free(y), free(h);
}

/* The dispatching (F16C here) and portable versions agree bit for bit:
 * decode over all 65536 halves, encode over random bit patterns. */
static void test_fp16_paths_agree(void **st)
{
    (void)st;
    enum { N = 65536, M = 1 << 20 };
    uint16_t *h = malloc(N * 2), *h1 = malloc(M * 2), *h2 = malloc(M * 2);
    float *a = malloc(M * 4), *b = malloc(M * 4);
    for (int i = 0; i < N; i++)
        h[i] = (uint16_t)i;
    as__f16_to_f32(h, a, N);
    as__f16_to_f32_sw(h, b, N);
    for (int i = 0; i < N; i++) {
        if (isnan(a[i]))
            assert_true(isnan(b[i]));
        else
            assert_int_equal(f2u(a[i]), f2u(b[i]));
    }
    for (int i = 0; i < M; i++) {
        uint32_t u = rnd32();
        /* concentrate on the half range and its edges */
        if (i & 1)
            u = (u & 0x80ffffffu) | ((uint32_t)(96 + rnd32() % 52) << 23);
        a[i] = u2f(u);
    }
    as__f32_to_f16(a, h1, M);
    as__f32_to_f16_sw(a, h2, M);
    for (int i = 0; i < M; i++) {
        if (isnan(a[i]))
            assert_true((h1[i] & 0x7c00) == 0x7c00 && (h2[i] & 0x3ff));
        else if (h1[i] != h2[i])
            fail_msg("f32 %a (%08x): f16c %04x portable %04x", (double)a[i],
                     f2u(a[i]), h1[i], h2[i]);
    }
    free(h), free(h1), free(h2), free(a), free(b);
}

/* ---- bf16 ----------------------------------------------------------------- */

static void test_bf16_bounds_and_specials(void **st)
{
    (void)st;
    enum { N = 200000 };
    float *x = malloc(N * 4), *y = malloc(N * 4);
    uint16_t *h = malloc(N * 2);
    for (int i = 0; i < N; i++) {
        float m = powf(2.0f, rnd_uniform(-120.0f, 120.0f));
        x[i] = (rnd32() & 1) ? -m : m;
    }
    as__f32_to_bf16(x, h, N);
    as__bf16_to_f32(h, y, N);
    for (int i = 0; i < N; i++)
        assert_true(fabsf(y[i] - x[i]) <= fabsf(x[i]) * 0x1p-8f);
    float s[] = {1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-8f, INFINITY, NAN, -0.0f,
                 u2f(0x7f800001u), 3.0e38f};
    uint16_t hs[7];
    float r[7];
    as__f32_to_bf16(s, hs, 7);
    as__bf16_to_f32(hs, r, 7);
    assert_true(r[0] == 1.0f);                /* tie to even (down) */
    assert_true(r[1] == 1.0f + 0x1p-6f);      /* tie to even (up) */
    assert_true(isinf(r[2]) && r[2] > 0);
    assert_true(isnan(r[3]));
    assert_int_equal(f2u(r[4]), 0x80000000u);
    assert_true(isnan(r[5]));                 /* low-payload NaN stays NaN */
    assert_true(isfinite(r[6]));
    free(x), free(y), free(h);
}

/* ---- shuffle, checksum ------------------------------------------------------ */

static void test_shuffle_round_trip(void **st)
{
    (void)st;
    size_t sizes[] = {1, 2, 3, 4, 8};
    size_t counts[] = {0, 1, 7, 33, 1000, 4099};
    for (size_t a = 0; a < 5; a++)
        for (size_t c = 0; c < 6; c++) {
            size_t es = sizes[a], n = counts[c], nb = es * n;
            uint8_t *x = malloc(nb + 1), *y = malloc(nb + 1), *z = malloc(nb + 1);
            for (size_t i = 0; i < nb; i++)
                x[i] = (uint8_t)rnd32();
            as__shuffle(x, y, n, es);
            for (size_t i = 0; i < n; i++)
                for (size_t b = 0; b < es; b++)
                    assert_int_equal(y[b * n + i], x[i * es + b]);
            as__unshuffle(y, z, n, es);
            assert_memory_equal(x, z, nb);
            free(x), free(y), free(z);
        }
}

static void test_hash_detects_changes(void **st)
{
    (void)st;
    enum { N = 10007 };
    uint8_t *p = malloc(N);
    for (int i = 0; i < N; i++)
        p[i] = (uint8_t)rnd32();
    uint64_t h = as__hash64(p, N);
    assert_true(h == as__hash64(p, N));
    assert_true(h != as__hash64(p, N - 1));        /* truncated */
    for (int k = 0; k < 200; k++) {
        size_t i = rnd32() % N;
        uint8_t bit = (uint8_t)(1u << (rnd32() % 8));
        p[i] ^= bit;
        assert_true(h != as__hash64(p, N));
        p[i] ^= bit;
    }
    /* swapping two different 32-bit words in the same lane */
    uint32_t w0, w1;
    memcpy(&w0, p, 4);
    memcpy(&w1, p + 32, 4);
    if (w0 != w1) {
        memcpy(p, &w1, 4);
        memcpy(p + 32, &w0, 4);
        assert_true(h != as__hash64(p, N));
    }
    free(p);
}

/* ---- quantization ----------------------------------------------------------- */

static void quant_round_trip(int bits, size_t group, size_t n)
{
    float *x = malloc(n * 4 + 4), *y = malloc(n * 4 + 4), *z = malloc(n * 4 + 4);
    size_t ng = as__quant_groups(n, group);
    as_qgroup *g = malloc((ng + 1) * sizeof *g);
    uint8_t *c = malloc(as__quant_code_bytes(n, bits) + 1);
    for (size_t i = 0; i < n; i++)
        x[i] = rnd_uniform(-3.0f, 3.0f) * (1.0f + (float)(i / group % 5));
    as__quant_encode(x, n, bits, group, 99, 0, ng, g, c);
    as__quant_decode(g, c, bits, group, 0, n, y);
    for (size_t i = 0; i < n; i++) {
        const as_qgroup *q = &g[i / group];
        float tol = q->scale * 1.0001f + 1e-6f * fabsf(q->min);
        if (!(fabsf(y[i] - x[i]) <= tol))
            fail_msg("q%d g=%zu n=%zu: x[%zu]=%g decoded %g, step %g", bits,
                     group, n, i, (double)x[i], (double)y[i], (double)q->scale);
        assert_true(y[i] >= q->min - 1e-6f);
    }
    /* ranges decode to the same values as the whole tensor */
    for (int k = 0; k < 20 && n; k++) {
        size_t i0 = rnd32() % n, cnt = rnd32() % (n - i0 + 1);
        as__quant_decode(g, c, bits, group, i0, cnt, z);
        assert_memory_equal(z, y + i0, cnt * 4);
    }
    /* encoding the groups in two halves gives the same codes */
    if (ng > 1) {
        uint8_t *c2 = malloc(as__quant_code_bytes(n, bits) + 1);
        as_qgroup *g2 = malloc((ng + 1) * sizeof *g2);
        as__quant_encode(x, n, bits, group, 99, ng / 2, ng, g2, c2);
        as__quant_encode(x, n, bits, group, 99, 0, ng / 2, g2, c2);
        assert_memory_equal(c, c2, as__quant_code_bytes(n, bits));
        assert_memory_equal(g, g2, ng * sizeof *g);
        free(c2), free(g2);
    }
    free(x), free(y), free(z), free(g), free(c);
}

static void test_quant_bounds(void **st)
{
    (void)st;
    int bits[] = {8, 4, 2};
    size_t groups[] = {8, 64, 256, 4096};
    size_t ns[] = {1, 7, 8, 300, 4096 + 13, 100000};
    for (int b = 0; b < 3; b++)
        for (int g = 0; g < 4; g++)
            for (int k = 0; k < 6; k++)
                quant_round_trip(bits[b], groups[g], ns[k]);
}

static void test_quant_constant_and_nonfinite(void **st)
{
    (void)st;
    float x[64], y[64];
    as_qgroup g[8];
    uint8_t c[64];
    for (int i = 0; i < 64; i++)
        x[i] = 2.5f;
    as__quant_encode(x, 64, 4, 8, 1, 0, 8, g, c);
    as__quant_decode(g, c, 4, 8, 0, 64, y);
    for (int i = 0; i < 64; i++)
        assert_true(y[i] == 2.5f);                /* constant: exact */
    x[3] = NAN;
    x[20] = INFINITY;
    as__quant_encode(x, 64, 8, 8, 1, 0, 8, g, c); /* no UB, no crash */
    as__quant_decode(g, c, 8, 8, 0, 64, y);
    assert_true(y[40] == 2.5f);                   /* other groups intact */
}

static void test_quant_seeded(void **st)
{
    (void)st;
    enum { N = 4096 };
    float x[N];
    as_qgroup g1[N / 64], g2[N / 64];
    uint8_t c1[N], c2[N];
    for (int i = 0; i < N; i++)
        x[i] = rnd_uniform(-1.0f, 1.0f);
    as__quant_encode(x, N, 4, 64, 7, 0, N / 64, g1, c1);
    as__quant_encode(x, N, 4, 64, 7, 0, N / 64, g2, c2);
    assert_memory_equal(c1, c2, as__quant_code_bytes(N, 4));
    as__quant_encode(x, N, 4, 64, 8, 0, N / 64, g2, c2);
    assert_memory_not_equal(c1, c2, as__quant_code_bytes(N, 4));
}

/* E[decode] = x: average K independent draws (different seeds). The error
 * of one draw has standard deviation <= step/2, so the mean of K draws is
 * within 5 * step / (2 sqrt K) of x except with negligible probability.
 * Round-to-nearest would be off by 0.3 step on the chosen values; the test
 * would catch that. */
static void test_quant_unbiased(void **st)
{
    (void)st;
    enum { N = 256, K = 4000 };
    int bits[] = {8, 4, 2};
    for (int b = 0; b < 3; b++) {
        int qmax = (1 << bits[b]) - 1;
        float x[N], y[N];
        double sum[N] = {0};
        as_qgroup g[N / 64];
        uint8_t c[N];
        for (int i = 0; i < N; i++) {
            /* in each group of 64: ends 0 and qmax fix the step to 1.0;
             * the rest sit 0.3 step above a code */
            int j = i % 64;
            x[i] = j == 0 ? 0.0f : j == 1 ? (float)qmax
                 : (float)(rnd32() % (unsigned)qmax) + 0.3f;
        }
        for (int k = 0; k < K; k++) {
            as__quant_encode(x, N, bits[b], 64, 1000 + (uint64_t)k, 0, N / 64,
                             g, c);
            as__quant_decode(g, c, bits[b], 64, 0, N, y);
            for (int i = 0; i < N; i++)
                sum[i] += y[i];
        }
        double tol = 5.0 * 1.0 / (2.0 * sqrt((double)K)), worst = 0, total = 0;
        for (int i = 0; i < N; i++) {
            double bias = sum[i] / K - x[i];
            worst = fabs(bias) > worst ? fabs(bias) : worst;
            total += bias;
        }
        if (worst > tol || fabs(total / N) > tol / 4)
            fail_msg("q%d: max |bias| %.4f, mean bias %.5f (tolerance %.4f "
                     "step)", bits[b], worst, total / N, tol);
    }
}

AS_TEST_MAIN(NULL, NULL,
             cmocka_unit_test(test_fp16_bounds_and_specials),
             cmocka_unit_test(test_fp16_paths_agree),
             cmocka_unit_test(test_bf16_bounds_and_specials),
             cmocka_unit_test(test_shuffle_round_trip),
             cmocka_unit_test(test_hash_detects_changes),
             cmocka_unit_test(test_quant_bounds),
             cmocka_unit_test(test_quant_constant_and_nonfinite),
             cmocka_unit_test(test_quant_seeded),
             cmocka_unit_test(test_quant_unbiased))

/*
 * NCHW <-> nChw16c layout changes (layers/ops_blk.h): both directions,
 * the AVX-512 and the portable path, against the layout's index formula
 * on random shapes (channel counts inside one block, on a block edge and
 * across several; spatial sizes below, at and past a 16-wide tile);
 * padding lanes zeroed; neighbours of the destination untouched.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "layers/ops_blk.h"
#include "util/rng.h"

#define GUARD 32   /* floats before and after every destination */

static float *guarded(size_t n)
{
    float *p = malloc(sizeof(float) * (n + 2 * GUARD));
    assert_non_null(p);
    for (size_t i = 0; i < n + 2 * GUARD; i++)
        p[i] = -7.25f;
    return p + GUARD;
}

static void check_guards(const float *p, size_t n, const char *what)
{
    for (int i = 0; i < GUARD; i++)
        if (p[-1 - i] != -7.25f || p[n + (size_t)i] != -7.25f)
            fail_msg("%s: wrote outside the destination", what);
}

static void one_shape(uint64_t *rng, int N, int C, int HW, bool simd)
{
    const int CB = (C + 15) / 16;
    const size_t np = (size_t)N * C * HW, nb = (size_t)N * CB * 16 * HW;
    float *x = malloc(sizeof(float) * np), *back = guarded(np), *blk = guarded(nb);
    assert_non_null(x);
    for (size_t i = 0; i < np; i++)
        x[i] = (float)(as_rng_u01(rng) * 2.0 - 1.0);
    char what[96];
    snprintf(what, sizeof what, "N%d C%d HW%d %s", N, C, HW, simd ? "avx512" : "portable");
    as_blk16_use_simd(simd);
    as_blk16_from_nchw(N, C, HW, x, blk);
    for (int n = 0; n < N; n++)
        for (int c = 0; c < CB * 16; c++)
            for (int h = 0; h < HW; h++) {
                float got = blk[(((size_t)n * CB + c / 16) * HW + h) * 16 + c % 16];
                float want = c < C ? x[((size_t)n * C + c) * HW + h] : 0.0f;
                if (got != want)
                    fail_msg("%s: blocked n%d c%d h%d = %g, want %g", what, n, c, h,
                             (double)got, (double)want);
            }
    check_guards(blk, nb, what);
    for (int n = 0; n < N; n++)   /* padding lanes must be ignored */
        for (int c = C; c < CB * 16; c++)
            for (int h = 0; h < HW; h++)
                blk[(((size_t)n * CB + c / 16) * HW + h) * 16 + c % 16] = 99.0f;
    as_blk16_to_nchw(N, C, HW, blk, back);
    if (memcmp(back, x, sizeof(float) * np))
        fail_msg("%s: round trip differs", what);
    check_guards(back, np, what);
    free(x);
    free(back - GUARD);
    free(blk - GUARD);
}

static void test_blk16_random(void **state)
{
    (void)state;
    uint64_t rng = 0xB10C16;
    const int fixed[][3] = {{1, 1, 1}, {2, 16, 16}, {1, 17, 15}, {3, 32, 196},
                            {2, 33, 49}, {1, 64, 17}, {2, 15, 784}};
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
            one_shape(&rng, fixed[i][0], fixed[i][1], fixed[i][2], pass == 0);
        for (int t = 0; t < 40; t++)
            one_shape(&rng, 1 + (int)(as_rng_u32(&rng) % 3), 1 + (int)(as_rng_u32(&rng) % 50),
                      1 + (int)(as_rng_u32(&rng) % 70), pass == 0);
    }
    as_blk16_use_simd(true);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_blk16_random),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

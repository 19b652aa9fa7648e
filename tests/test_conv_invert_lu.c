/* Conv inversion, the LU path's kernels (store/policies/invert/lu.c): the
 * factorization of 16 lanes in lockstep (in float) and the per-frequency solve, against
 * Gaussian elimination in double, for lanes that share their pivot rows and
 * lanes that do not, and for the mirrored frequency (s = -1: conj(A)). */
#include <complex.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "store/policies/invert/impl.h"
#include "util/rng.h"
#include "support/test_main.h"

#define NB 16   /* right-hand sides per frequency: two vectors of lanes */

static uint64_t rng_state = 0x243f6a8885a308d3ull;
static double nrand(void) { return as_rng_normal(&rng_state); }

/* x = a^-1 b by Gaussian elimination with partial pivoting in double
 * (a: n x n row-major, destroyed; b: n, overwritten by x). */
static void solve_ref(double complex *a, double complex *b, int n)
{
    for (int j = 0; j < n; j++) {
        int p = j;
        for (int i = j + 1; i < n; i++)
            if (cabs(a[i * n + j]) > cabs(a[p * n + j]))
                p = i;
        for (int c = 0; c < n; c++) {
            const double complex t = a[j * n + c];
            a[j * n + c] = a[p * n + c];
            a[p * n + c] = t;
        }
        const double complex t = b[j];
        b[j] = b[p];
        b[p] = t;
        for (int i = j + 1; i < n; i++) {
            const double complex l = a[i * n + j] / a[j * n + j];
            for (int c = j; c < n; c++)
                a[i * n + c] -= l * a[j * n + c];
            b[i] -= l * b[j];
        }
    }
    for (int i = n - 1; i >= 0; i--) {
        double complex s = b[i];
        for (int c = i + 1; c < n; c++)
            s -= a[i * n + c] * b[c];
        b[i] = s / a[i * n + i];
    }
}

#define NL (2 * AS__CIV_LANES)   /* lanes of one factorization */

/* One size: lanes 0-3 one matrix (the same pivot rows; 8 and 9 too, across
 * the two double groups), the others their own random matrices, lane 15 a
 * matrix whose diagonal is scaled by scale7 (tiny: a row exchange at every
 * column). Returns the largest relative error of the solves (both signs)
 * against solve_ref. */
static double lu_case(int n, double scale7)
{
    const size_t nn = (size_t)n * n, msz = 2 * nn + (size_t)n;
    struct as__civ_lanes *A = malloc(sizeof *A * 2 * nn), *perm = malloc(sizeof *perm * n);
    double complex *ref = malloc(sizeof *ref * nn * NL);
    float *m = malloc(sizeof(float) * msz * NL);
    float *z = malloc(sizeof(float) * 2 * n * NB), *x = malloc(sizeof(float) * 2 * n * NB);
    double complex *a = malloc(sizeof *a * nn), *b = malloc(sizeof *b * n);
    assert_non_null(A); assert_non_null(perm); assert_non_null(ref); assert_non_null(m);
    assert_non_null(z); assert_non_null(x); assert_non_null(a); assert_non_null(b);
    for (int l = 0; l < NL; l++)
        for (size_t e = 0; e < nn; e++) {
            const int same = (l > 0 && l < 4) || l == 8 || l == 9;
            double complex v = same ? ref[e] : nrand() + I * nrand();
            if (l == NL - 1 && e % (n + 1) == 0)
                v *= scale7;
            ref[(size_t)l * nn + e] = v;
            struct as__civ_lanes *ae = &A[(size_t)(l / AS__CIV_LANES) * nn + e];
            ae->re[l % AS__CIV_LANES] = creal(v);
            ae->im[l % AS__CIV_LANES] = cimag(v);
        }
    as__civ_lu_group(A, A + nn, n, perm, 0, NL, 0, m);
    double worst = 0;
    for (int l = 0; l < NL; l++)
        for (int sg = 1; sg >= -1; sg -= 2) {
            for (size_t e = 0; e < 2 * (size_t)n * NB; e++)
                z[e] = (float)nrand();
            as__civ_lu_solve_freq(m + (size_t)l * msz, (float)sg, z, x, n, NB);
            for (int k = 0; k < NB; k++) {
                for (size_t e = 0; e < nn; e++) {
                    const double complex v = ref[(size_t)l * nn + e];
                    a[e] = sg > 0 ? v : conj(v);
                }
                for (int i = 0; i < n; i++)
                    b[i] = z[(size_t)i * NB + k] + I * z[((size_t)n + i) * NB + k];
                solve_ref(a, b, n);
                double num = 0, den = 0;
                for (int i = 0; i < n; i++) {
                    const double complex got =
                        x[(size_t)i * NB + k] + I * x[((size_t)n + i) * NB + k];
                    num = fmax(num, cabs(got - b[i]));
                    den = fmax(den, cabs(b[i]));
                }
                worst = fmax(worst, num / den);
            }
        }
    free(A); free(perm); free(ref); free(m); free(z); free(x); free(a); free(b);
    return worst;
}

static void test_lu_lanes_against_double(void **state)
{
    (void)state;
    /* 8 and 16: whole panels of the blocked update; 5, 13, 21: a partial
     * last panel; 64: the widest layer the path takes */
    static const int sizes[] = {1, 2, 5, 8, 13, 16, 21, 64};
    for (size_t t = 0; t < sizeof sizes / sizeof sizes[0]; t++) {
        const double e = lu_case(sizes[t], 1e-3);
        if (getenv("AS_VERBOSE"))
            printf("lu lanes n %d: max rel err %.3g\n", sizes[t], e);
        /* random complex matrices: cond ~ n; float factors and solve */
        assert_true(e < 2e-4);
    }
}

/* An exactly zero pivot stores 0 for 1 / U_jj (a singular lane), without
 * disturbing the other lanes' factors. */
static void test_lu_singular_lane(void **state)
{
    (void)state;
    enum { n = 6, nn = n * n };
    struct as__civ_lanes A[2 * nn], perm[n];
    const size_t msz = 2 * nn + n;
    float m[NL * (2 * nn + n)];
    for (int l = 0; l < NL; l++)
        for (int i = 0; i < nn; i++) {
            const int zero = l == 10 && i % n == 0;   /* lane 10: column 0 zero */
            A[(l / AS__CIV_LANES) * nn + i].re[l % AS__CIV_LANES] = zero ? 0.0 : nrand();
            A[(l / AS__CIV_LANES) * nn + i].im[l % AS__CIV_LANES] = zero ? 0.0 : nrand();
        }
    as__civ_lu_group(A, A + nn, n, perm, 0, NL, 0, m);
    assert_true(m[10 * msz] == 0.0f && m[10 * msz + nn] == 0.0f);   /* 1 / U_00 */
    for (int l = 0; l < NL; l++)
        if (l != 10)
            assert_true(m[l * msz] != 0.0f && isfinite(m[l * msz]));
}

/* A2 NULL: the 8 lanes of A alone, the others neither factored into m
 * nor read. */
static void test_lu_one_group(void **state)
{
    (void)state;
    enum { n = 5, nn = n * n };
    struct as__civ_lanes A[nn], perm[n];
    const size_t msz = 2 * nn + n;
    float m[NL * (2 * nn + n)];
    for (size_t i = 0; i < sizeof m / sizeof m[0]; i++)
        m[i] = -7.0f;
    for (int l = 0; l < AS__CIV_LANES; l++)
        for (int i = 0; i < nn; i++) {
            A[i].re[l] = nrand();
            A[i].im[l] = nrand();
        }
    as__civ_lu_group(A, NULL, n, perm, 0, AS__CIV_LANES, 0, m);
    for (size_t i = 0; i < AS__CIV_LANES * msz; i += msz)
        assert_true(m[i] != -7.0f);
    for (size_t i = AS__CIV_LANES * msz; i < NL * msz; i++)
        assert_true(m[i] == -7.0f);
}

AS_TEST_MAIN(NULL, NULL,
             cmocka_unit_test(test_lu_lanes_against_double),
             cmocka_unit_test(test_lu_singular_lane),
             cmocka_unit_test(test_lu_one_group))

/*
 * Shared harness of the kernel and layer tests (test_ops.c, test_ops_attn.c,
 * test_layers.c): a deterministic uniform generator, double -> float
 * conversion, a relative-error check of a float result against a
 * double-precision reference, and a central finite-difference check of an
 * analytic gradient.
 *
 * Header-only (static inline): each test executable gets its own copy and
 * its own generator state. The generator starts at AS_FD_SEED; define it
 * before including this header to pick another seed (default 1).
 */
#ifndef AS_TESTS_SUPPORT_FD_H
#define AS_TESTS_SUPPORT_FD_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdlib.h>

#include <cmocka.h>

#include "util/rng.h"

#ifndef AS_FD_SEED
#define AS_FD_SEED 1
#endif

/* A reference: out = f(in) in double precision; cfg is the layer's shape. */
typedef void (*ref_fn)(const void *cfg, const double *in, double *out);

static uint64_t rng_state = AS_FD_SEED * 0x9E3779B97F4A7C15ull + 1;
static inline double urand(void) { return as_rng_u01(&rng_state) * 2.0 - 1.0; } /* [-1, 1) */
static inline void fill(double *d, size_t n, double s)
{
    for (size_t i = 0; i < n; i++)
        d[i] = urand() * s;
}
/* A malloc'ed float copy of d[0..n) (the caller frees it). */
static inline float *to_f(const double *d, size_t n)
{
    float *f = malloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++)
        f[i] = (float)d[i];
    return f;
}

/* Forward check: float result against the double reference. */
static inline void check_close(const char *what, const float *got,
                               const double *ref, size_t n, double tol)
{
    double scale = 1e-3, err = 0.0;
    for (size_t i = 0; i < n; i++) {
        scale = fmax(scale, fabs(ref[i]));
        err = fmax(err, fabs(got[i] - ref[i]));
    }
    if (err / scale > tol)
        fail_msg("%s: max error %.3g relative to %.3g (tol %.1g)", what, err,
                 scale, tol);
}

/* Gradient check of in[off .. off+n) against finite differences of
 * sum(r * ref(in)). */
static inline void check_grad(const char *what, ref_fn ref, const void *cfg,
                              double *in, size_t nout, const double *r,
                              const float *analytic, size_t off, size_t n)
{
    double *out = malloc(sizeof(double) * nout);
    double *num = malloc(sizeof(double) * n);
    const double h = 1e-5;
    for (size_t i = 0; i < n; i++) {
        double keep = in[off + i], lp = 0.0, lm = 0.0;
        in[off + i] = keep + h;
        ref(cfg, in, out);
        for (size_t k = 0; k < nout; k++)
            lp += r[k] * out[k];
        in[off + i] = keep - h;
        ref(cfg, in, out);
        for (size_t k = 0; k < nout; k++)
            lm += r[k] * out[k];
        in[off + i] = keep;
        num[i] = (lp - lm) / (2 * h);
    }
    check_close(what, analytic, num, n, 2e-3);
    free(out);
    free(num);
}

#endif

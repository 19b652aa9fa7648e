/*
 * The data generator of the tests and benchmarks: xorshift64 (13, 7, 17)
 * over a caller-held state (never 0), so a run is the same on every machine.
 * The models draw from their own generator (as_nn_rand, layers/nn.h).
 */
#ifndef AS_UTIL_RNG_H
#define AS_UTIL_RNG_H

#include <math.h>
#include <stdint.h>

static inline uint64_t as_rng_next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

/* The high 32 bits of the next draw. */
static inline uint32_t as_rng_u32(uint64_t *s) { return (uint32_t)(as_rng_next(s) >> 32); }

/* Uniform on [0, 1), 53 bits. */
static inline double as_rng_u01(uint64_t *s)
{
    return (double)(as_rng_next(s) >> 11) * (1.0 / 9007199254740992.0);
}

/* Uniform on (0, 1): the midpoints of the 2^53 cells. */
static inline double as_rng_u01_open(uint64_t *s)
{
    return ((double)(as_rng_next(s) >> 11) + 0.5) / 9007199254740992.0;
}

/* Standard normal (Box-Muller) from two [0, 1) draws. */
static inline double as_rng_normal(uint64_t *s)
{
    double u = as_rng_u01(s) + 1e-300, v = as_rng_u01(s);
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

/* Standard normal (Box-Muller) from two (0, 1) draws. */
static inline double as_rng_normal_open(uint64_t *s)
{
    double u = as_rng_u01_open(s), v = as_rng_u01_open(s);
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

/* A row of attention probabilities: softmax(sd * N(0, 1)) over the first n
 * of len entries, zeros after them (tmp: n doubles of scratch). */
static inline void as_rng_softmax_row(uint64_t *s, double sd, int64_t n,
                                      int64_t len, double *tmp, float *row)
{
    double mx = -1e300, z = 0;
    for (int64_t k = 0; k < n; k++) {
        tmp[k] = as_rng_normal(s) * sd;
        mx = tmp[k] > mx ? tmp[k] : mx;
    }
    for (int64_t k = 0; k < n; k++)
        z += (tmp[k] = exp(tmp[k] - mx));
    for (int64_t k = 0; k < len; k++)
        row[k] = k < n ? (float)(tmp[k] / z) : 0.0f;
}

#endif

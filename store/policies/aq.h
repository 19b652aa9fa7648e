/*
 * Kernels of the aq codec (internal): per-group affine quantization at 2,
 * 3, 4 or 8 bits with stochastic or nearest rounding and an optional
 * per-group rotation (a normalized fast Walsh-Hadamard transform). Pure
 * functions over caller buffers: no allocation, no global state,
 * thread-safe. codec_aq.c wraps them as the policy; tests call them
 * directly.
 *
 * Stored form of n values in groups of G (G a multiple of 8; a power of
 * two with rotation):
 *   params  per group (min m, step s), f32 pairs or f16 pairs (see below);
 *   codes   per group, starting at byte g * G * B / 8; the last group is
 *           padded with zero codes to a multiple of 8 values (to G with
 *           rotation, whose transform needs the whole group).
 * Codes are packed in planes inside a group of P (padded) codes, so every
 * pack and unpack loop runs over contiguous bytes:
 *   B = 8: byte j = code j;
 *   B = 4: byte k = code k | code (k + P/2) << 4;
 *   B = 2: byte k = code (k + i P/4) << 2i, i = 0..3;
 *   B = 3: the low two bits as B = 2 (P/4 bytes), then the high bit of
 *          code (k + i P/8) at bit i of byte k (P/8 bytes).
 *
 * Values: v = x (or v = H x, H the unnormalized Hadamard matrix of order G,
 * with rotation); m = min v, s = (max v - m) / (2^B - 1);
 * code = floor((v - m) / s + u), u ~ U[0, 1) drawn from (seed, group,
 * index) (stochastic), or u = 1/2 (nearest); decode m + code * s (and
 * x = H v / G with rotation).
 * Error: |v_hat - v| < s (stochastic; unbiased, E[v_hat] = v), <= s / 2
 * (nearest), plus f32 rounding. With rotation the error of x is the
 * rotated error of v divided by sqrt(G) per element in the mean-square
 * sense (H / sqrt(G) is orthogonal).
 * f16 parameters: m rounded down and s rounded up to f16, then the codes
 * are computed against those exact values, so the bounds above still hold
 * with the (slightly larger) f16 step. The encode reports when some
 * group's m or s does not fit f16 (|v| beyond ~65504); the caller then
 * encodes again with f32 parameters.
 * A group that holds NaN or +-inf, or whose range overflows f32, decodes
 * to NaN (every value of it): a non-finite input is never hidden.
 */
#ifndef AS_STORE_POLICIES_AQ_H
#define AS_STORE_POLICIES_AQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AS_AQ_GROUP_MIN 8
#define AS_AQ_GROUP_MAX 4096

typedef struct as_aq_fmt {
    int      bits;       /* 2, 3, 4 or 8 */
    uint32_t group;      /* G */
    bool     rot;        /* Hadamard rotation per group */
    bool     nearest;    /* round to nearest instead of stochastic */
    bool     p16;        /* parameters as f16 pairs */
} as_aq_fmt;

/* Parameters of one group in the f32 layout. */
typedef struct as_aq_param {
    float min, step;
} as_aq_param;

/* Groups, parameter bytes and code bytes of n values. */
size_t as__aq_groups(const as_aq_fmt *f, size_t n);
size_t as__aq_param_bytes(const as_aq_fmt *f, size_t n);
size_t as__aq_code_bytes(const as_aq_fmt *f, size_t n);
/* Is the format valid (bits, group range, power of two with rotation)? */
bool as__aq_fmt_ok(const as_aq_fmt *f);

/* Encode groups [g0, g1) of x (n values in all) into params (f32 pairs or
 * f16 pairs per f->p16) and codes, both indexed from the tensor start.
 * False (f16 only): a group's parameters do not fit f16; the output is
 * then incomplete. */
bool as__aq_encode(const as_aq_fmt *f, const float *x, size_t n,
                   uint64_t seed, size_t g0, size_t g1, void *params,
                   uint8_t *codes);

/* Decode values [i0, i0 + count) into dst (dst[0] is value i0). */
void as__aq_decode(const as_aq_fmt *f, const void *params,
                   const uint8_t *codes, size_t n, size_t i0, size_t count,
                   float *dst);

/* In-place unnormalized fast Walsh-Hadamard transform of v[0..G), G a
 * power of two >= 8 (H H = G I). */
void as__aq_fwht(float *v, size_t G);

#endif

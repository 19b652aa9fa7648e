/*
 * Causal attention probabilities of shape (B, H, T, T) with key padding
 * (vlen[b] valid keys per batch item), their save info and tensor: the
 * softmax_output fixture of the store tests (test_softmax_store.c,
 * test_store_rows.c). Header-only (static inline).
 */
#ifndef AS_TESTS_SUPPORT_PROBS_H
#define AS_TESTS_SUPPORT_PROBS_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "actstore/store.h"
#include "util/rng.h"

typedef struct { int B, H, T; } probs_shape;

/* Row r (query r % T) holds softmax(sd * N(0, 1)) over its first
 * min(r % T + 1, vlen) keys and zeros after them. */
static inline void probs_fill(probs_shape s, const int32_t *vlen, double sd,
                              uint64_t *rng, float *y)
{
    const int T = s.T, rows = s.B * s.H * s.T;
    double *t = malloc(sizeof *t * (size_t)T);
    assert_non_null(t);
    for (int r = 0; r < rows; r++) {
        int q = r % T, v = vlen[r / (s.H * T)], n = q + 1 < v ? q + 1 : v;
        as_rng_softmax_row(rng, sd, n, T, t, y + (size_t)r * T);
    }
    free(t);
}

static inline as_save_info probs_info(probs_shape s, const int32_t *vlen)
{
    as_save_info si = {.kind = AS_KIND_SOFTMAX_OUTPUT, .layer = "blk.attn"};
    si.meta.softmax = (as_softmax_meta){.row_len = s.T, .queries = s.T,
                                        .causal = true, .valid_len = vlen,
                                        .rows_per_item = s.H * s.T};
    return si;
}

static inline as_tensor probs_tensor(probs_shape s, float *d)
{
    return (as_tensor){.data = d, .dtype = AS_F32, .ndim = 4,
                       .shape = {s.B, s.H, s.T, s.T}};
}

#endif

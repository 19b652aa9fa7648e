/*
 * Does soa:5's encode get cheaper when its rows are still in L1?
 *
 * The question behind "encode inside the attention kernel" (an API that
 * saves P tile by tile, right after each (batch, head) slice is computed):
 * the store encodes P after the whole forward, so the rows come from L2/L3.
 * This times as__sm_soa_encode4 on 64 x 4 x 50 rows of length 50 (the vit
 * bench preset's softmax tensor, 2.56 MB) read once in order, against the
 * same number of rows taken again and again from one 48-row block (hot in
 * L1). Rows: softmax of uniform logits in [-3, 3], fixed seed. Prints CPU
 * ns per row for both, five rounds.
 *
 * Not part of the build. From the repository root, after the build:
 *   gcc -O2 -std=gnu11 -I. -Iinclude -Ibuild/include \
 *       scripts/experiments/softmax_hot_encode.c build/libactstore_static.a \
 *       -lm -lzstd -ljemalloc -luv -lpthread -o /tmp/softmax_hot_encode
 *   /tmp/softmax_hot_encode
 * (build/include: the directory of the generated actstore/version.h.)
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "store/policies/softmax/softmax.h"

static double cpu_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

int main(void)
{
    enum { T = 50, ROWS = 64 * 4 * 50, HOT = 48 };
    float *p = malloc(sizeof(float) * ROWS * T);
    uint8_t *out = malloc(64 * 100 + 4 * 200);
    if (!p || !out)
        return 1;
    srand(1);
    for (size_t r = 0; r < ROWS; r++) {
        float z[T], m = -1e30f;
        double s = 0;
        for (size_t i = 0; i < T; i++) {
            z[i] = (float)(6.0 * (rand() / (double)RAND_MAX - 0.5));
            m = z[i] > m ? z[i] : m;
        }
        for (size_t i = 0; i < T; i++)
            s += p[r * T + i] = expf(z[i] - m);
        for (size_t i = 0; i < T; i++)
            p[r * T + i] = (float)(p[r * T + i] / s);
    }
    as__sm_params prm;
    char err[128];
    if (as__sm_parse("soa:5", 5, &prm, err, sizeof err, NULL)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    const size_t n[4] = {T, T, T, T};
    size_t used[4];
    for (int round = 0; round < 5; round++) {
        double t0 = cpu_s();
        for (size_t r = 0; r + 4 <= ROWS; r += 4) {
            const float *v[4] = {p + r * T, p + (r + 1) * T, p + (r + 2) * T, p + (r + 3) * T};
            as__sm_soa_encode4(&prm, v, n, T, out + (r % 64) * 100, used);
        }
        double t1 = cpu_s();
        for (size_t r = 0; r + 4 <= ROWS; r += 4) {
            const size_t h = r % HOT;
            const float *v[4] = {p + h * T, p + (h + 1) * T, p + (h + 2) * T, p + (h + 3) * T};
            as__sm_soa_encode4(&prm, v, n, T, out + (r % 64) * 100, used);
        }
        double t2 = cpu_s();
        printf("streamed %.1f ns/row  hot %.1f ns/row\n", (t1 - t0) / ROWS * 1e9,
               (t2 - t1) / ROWS * 1e9);
    }
    free(p);
    free(out);
    return 0;
}

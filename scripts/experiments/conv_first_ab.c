/*
 * The cnn's first conv (64 images, Cin -> 16, 28x28, 3x3, pad 1) through
 * as_op_conv_fwd / as_op_conv_bwd (dW, db; no dx, as in the model) with
 * the direct kernel (layers/ops_direct.c) and, with the portable-kernels
 * hook on, through the backend (oneDNN and its reorders by default).
 * Thread CPU time, best of 15 repeats of 5 calls, operands warm.
 *
 * Not part of the build. From the repository root, after the build:
 *   gcc -O2 -I. -Iinclude -Ibuild/include scripts/experiments/conv_first_ab.c \
 *       build/layers/libactstore_layers.a build/libactstore_static.a -ldnnl -lopenblas \
 *       -ljemalloc -lzstd -luv -lcjson -lz -lm -lpthread -fopenmp -o /tmp/conv_first_ab
 *   OMP_NUM_THREADS=1 /tmp/conv_first_ab [Cin]
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "util/clock.h"

#include "layers/ops.h"
#include "util/simd.h"

enum { REPS = 15, CALLS = 5 };

int main(int argc, char **argv)
{
    int cin = argc > 1 ? atoi(argv[1]) : 1;
    as_op_conv_geom g = {.N = 64, .Cin = cin, .H = 28, .W = 28, .Cout = 16, .kh = 3,
                         .kw = 3, .stride = 1, .pad = 1};
    if (cin < 1 || cin > 64 || as_op_conv_geom_init(&g)) {
        fprintf(stderr, "Cin %d out of range 1..64\n", cin);
        return 2;
    }
    size_t nx = (size_t)g.N * cin * g.H * g.W, ny = (size_t)g.N * g.Cout * g.Ho * g.Wo;
    size_t nw = (size_t)g.Cout * cin * 9;
    float *x = malloc(4 * nx), *y = malloc(4 * ny), *dy = malloc(4 * ny);
    float *W = malloc(4 * nw), *dW = calloc(nw, 4), *db = calloc((size_t)g.Cout, 4);
    float *ws = malloc(4 * as_op_conv_workspace(&g));
    if (!x || !y || !dy || !W || !dW || !db || !ws)
        return 1;
    for (size_t i = 0; i < nx; i++)
        x[i] = (float)(i % 13) * 0.1f;
    for (size_t i = 0; i < ny; i++)
        dy[i] = (float)(i % 7) * 0.1f;
    for (size_t i = 0; i < nw; i++)
        W[i] = 0.01f * (float)i;
    double flop = 2.0 * (double)ny * cin * 9;
    for (int port = 0; port < 2; port++) {
        as__simd_force_portable(port);
        for (int k = 0; k < 2; k++) {
            double best = 1e9;
            for (int r = 0; r < REPS; r++) {
                double t0 = as_clock_thread_cpu_s();
                for (int i = 0; i < CALLS; i++) {
                    if (k == 0)
                        as_op_conv_fwd(&g, x, W, NULL, y, ws);
                    else
                        as_op_conv_bwd(&g, x, W, dy, NULL, dW, db, ws);
                }
                double t = (as_clock_thread_cpu_s() - t0) / CALLS;
                best = t < best ? t : best;
            }
            printf("%-8s %s %6.1f GFLOP/s (%.0f us)\n", port ? "backend" : "direct",
                   k ? "bwd" : "fwd", flop / best * 1e-9, best * 1e6);
        }
    }
    return 0;
}

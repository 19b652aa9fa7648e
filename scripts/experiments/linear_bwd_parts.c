/*
 * The linear layer's backward against its forward, GEMMs alone (oneDNN's
 * sgemm, as the framework calls it): forward y = x W^T; backward dx =
 * dy W, dW += dy^T x, db += column sums of dy, either over the whole batch
 * (R = N) or in blocks of R rows of dy (so a block feeds the three while
 * it is in L2). Thread CPU time, median of 31 repeats of 3 calls, all
 * variants alternating; with COLD = 1 an 8 MiB walk precedes every call.
 * docs/benchmarks.md, "Kernel speed" (linear backward at parity).
 *
 * Not part of the build. From the repository root:
 *   gcc -O3 -I. scripts/experiments/linear_bwd_parts.c -ldnnl -o /tmp/linear_bwd_parts
 *   OMP_NUM_THREADS=1 /tmp/linear_bwd_parts N IN OUT [COLD]
 */
#include <oneapi/dnnl/dnnl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "util/clock.h"
#include "util/median.h"
enum { REPS = 31 };
static float *rb(size_t n) { float *p = aligned_alloc(64, (n * 4 + 63) / 64 * 64); for (size_t i = 0; i < n; i++) p[i] = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f; return p; }
static float *ev;
static void evict(void) { for (size_t i = 0; i < (8u << 20) / 4; i += 16) ev[i] += 1.0f; }
static void db_sum(const float *dy, int N, int out, float *db) { for (int i = 0; i < N; i++) { const float *r = dy + (size_t)i * out; for (int o = 0; o < out; o++) db[o] += r[o]; } }
static void bwd(int N, int in, int out, const float *x, const float *W, const float *dy, float *dx, float *dW, float *db, int R)
{
    for (int r0 = 0; r0 < N; r0 += R) {
        int nr = N - r0 < R ? N - r0 : R;
        const float *dyr = dy + (size_t)r0 * out;
        dnnl_sgemm('N', 'N', nr, in, out, 1, dyr, out, W, in, 0, dx + (size_t)r0 * in, in);
        dnnl_sgemm('T', 'N', out, in, nr, 1, dyr, out, x + (size_t)r0 * in, in, 1, dW, in);
        db_sum(dyr, nr, out, db);
    }
}
int main(int argc, char **argv)
{
    if (argc < 4 || atoi(argv[1]) < 1 || atoi(argv[2]) < 1 || atoi(argv[3]) < 1) {
        fprintf(stderr, "usage: linear_bwd_parts N IN OUT [COLD]\n");
        return 2;
    }
    int N = atoi(argv[1]), in = atoi(argv[2]), out = atoi(argv[3]), cold = argc > 4 && atoi(argv[4]);
    ev = rb((8u << 20) / 4);
    float *x = rb((size_t)N * in), *W = rb((size_t)in * out), *y = rb((size_t)N * out), *dy = rb((size_t)N * out), *dx = rb((size_t)N * in), *dW = rb((size_t)in * out), *db = rb(out);
    int Rs[6] = {N, 128, 256, 512, 1024, 0};
    static double t[7][REPS];
    for (int k = 0; k < REPS; k++)
        for (int j = 0; j < 6; j++) {
            double s = 0;
            for (int c = 0; c < 3; c++) {
                if (cold) evict();
                double t0 = as_clock_thread_cpu_s();
                if (j < 5) bwd(N, in, out, x, W, dy, dx, dW, db, Rs[j]);
                else dnnl_sgemm('N', 'T', N, out, in, 1, x, in, W, in, 0, y, out);
                s += as_clock_thread_cpu_s() - t0;
            }
            t[j][k] = s / 3;
        }
    double f = 2.0 * N * in * out;
    for (int j = 0; j < 6; j++) { double m = as_stats_median(t[j], REPS); printf("%s R=%-5d %8.1f us %7.1f GF/s\n", j < 5 ? "bwd" : "fwd", Rs[j], m * 1e6, (j < 5 ? 2 : 1) * f / m * 1e-9); }
    return 0;
}

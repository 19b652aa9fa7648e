/*
 * oneDNN's reorders of one activation tensor (64 x C x H x H) between NCHW
 * and nChw16c, both directions alternating, operands warm: thread CPU
 * time, median of 41 repeats of 5 calls. What the conv's per-call layout
 * changes cost when nothing else evicts them (docs/benchmarks.md,
 * "Kernel speed").
 *
 * Not part of the build. From the repository root:
 *   gcc -O2 -I. scripts/experiments/reorder_dirs.c -ldnnl -o /tmp/reorder_dirs
 *   OMP_NUM_THREADS=1 /tmp/reorder_dirs C H
 */
#include <oneapi/dnnl/dnnl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "util/clock.h"
#include "util/median.h"

enum { N = 64, REPS = 41, CALLS = 5 };

int main(int argc, char **argv)
{
    int C = argc > 2 ? atoi(argv[1]) : 32, H = argc > 2 ? atoi(argv[2]) : 14;
    if (C < 1 || C > 1024 || H < 1 || H > 512) {
        fprintf(stderr, "usage: reorder_dirs C H (1..1024, 1..512)\n");
        return 2;
    }
    dnnl_engine_t e;
    dnnl_stream_t st;
    dnnl_dims_t d = {N, C, H, H};
    dnnl_memory_desc_t u, b;
    size_t n = (size_t)N * C * H * H;
    float *pu = aligned_alloc(64, (n * 4 + 63) / 64 * 64);
    float *pb = aligned_alloc(64, (n * 4 + 63) / 64 * 64 + 64 * 64);
    dnnl_primitive_desc_t pd;
    dnnl_primitive_t r[2];
    dnnl_memory_t mu, mb;
    if (!pu || !pb || dnnl_engine_create(&e, dnnl_cpu, 0) ||
        dnnl_stream_create(&st, e, dnnl_stream_default_flags) ||
        dnnl_memory_desc_init_by_tag(&u, 4, d, dnnl_f32, dnnl_nchw) ||
        dnnl_memory_desc_init_by_tag(&b, 4, d, dnnl_f32, dnnl_nChw16c) ||
        dnnl_reorder_primitive_desc_create(&pd, &u, e, &b, e, NULL) ||
        dnnl_primitive_create(&r[0], pd) ||
        dnnl_reorder_primitive_desc_create(&pd, &b, e, &u, e, NULL) ||
        dnnl_primitive_create(&r[1], pd) || dnnl_memory_create(&mu, &u, e, pu) ||
        dnnl_memory_create(&mb, &b, e, pb)) {
        fprintf(stderr, "oneDNN did not start\n");
        return 1;
    }
    for (size_t i = 0; i < n; i++)
        pu[i] = (float)(i % 17) * 0.1f;
    dnnl_exec_arg_t a[2][2] = {{{DNNL_ARG_FROM, mu}, {DNNL_ARG_TO, mb}},
                               {{DNNL_ARG_FROM, mb}, {DNNL_ARG_TO, mu}}};
    static double t[2][REPS];
    for (int k = 0; k < REPS; k++)
        for (int j = 0; j < 2; j++) {
            double t0 = as_clock_thread_cpu_s();
            for (int i = 0; i < CALLS; i++)
                dnnl_primitive_execute(r[j], st, 2, a[j]);
            t[j][k] = (as_clock_thread_cpu_s() - t0) / CALLS;
        }
    for (int j = 0; j < 2; j++) {
        double m = as_stats_median(t[j], REPS);
        printf("%s 64x%dx%dx%d: %.1f us (%.1f GB/s read + write)\n",
               j ? "nChw16c -> nchw" : "nchw -> nChw16c", C, H, H, m * 1e6,
               2.0 * (double)n * 4 / m * 1e-9);
    }
    return 0;
}

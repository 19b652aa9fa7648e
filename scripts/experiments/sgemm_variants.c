/*
 * Which single-threaded sgemm for 1024^3 on this CPU, and does buffer
 * alignment matter? Times, alternating call by call (thread CPU time,
 * median of 21 pairs of calls): OpenBLAS cblas_sgemm (kernel set from
 * OPENBLAS_CORETYPE), oneDNN's dnnl_sgemm, and oneDNN's matmul primitive
 * (created once, brgemm kernels), row-major A (M, K) B (K, N), with the
 * three buffers 4096-byte aligned plus an offset of OFF floats.
 *
 * Not part of the build. From the repository root:
 *   gcc -O2 scripts/experiments/sgemm_variants.c -ldnnl -lopenblas -o /tmp/sgemm_variants
 *   OMP_NUM_THREADS=1 OPENBLAS_CORETYPE=SkylakeX /tmp/sgemm_variants [OFF]
 */
#include <cblas.h>
#include <oneapi/dnnl/dnnl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

enum { M = 1024, N = 1024, K = 1024, REPS = 21 };

static float *A, *B, *C;
static dnnl_engine_t eng;
static dnnl_stream_t st;
static dnnl_primitive_t mm;
static dnnl_memory_t ma, mb, mc;

static double cpu_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void run_openblas(void)
{
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, A, K, B, N,
                0.0f, C, N);
}

static void run_dnnl_sgemm(void)
{
    dnnl_sgemm('N', 'N', M, N, K, 1.0f, A, K, B, N, 0.0f, C, N);
}

static void run_matmul(void)
{
    dnnl_exec_arg_t a[3] = {{DNNL_ARG_SRC, ma}, {DNNL_ARG_WEIGHTS, mb}, {DNNL_ARG_DST, mc}};
    dnnl_primitive_execute(mm, st, 3, a);
}

static int matmul_init(void)
{
    dnnl_dims_t da = {M, K}, db = {K, N}, dc = {M, N};
    dnnl_memory_desc_t a, b, c;
    dnnl_matmul_desc_t md;
    dnnl_primitive_desc_t pd;
    const char *impl = "?";
    if (dnnl_engine_create(&eng, dnnl_cpu, 0) ||
        dnnl_stream_create(&st, eng, dnnl_stream_default_flags) ||
        dnnl_memory_desc_init_by_tag(&a, 2, da, dnnl_f32, dnnl_ab) ||
        dnnl_memory_desc_init_by_tag(&b, 2, db, dnnl_f32, dnnl_ab) ||
        dnnl_memory_desc_init_by_tag(&c, 2, dc, dnnl_f32, dnnl_ab) ||
        dnnl_matmul_desc_init(&md, &a, &b, NULL, &c) ||
        dnnl_primitive_desc_create(&pd, &md, NULL, eng, NULL))
        return -1;
    dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl);
    printf("matmul implementation: %s\n", impl);
    int rc = dnnl_primitive_create(&mm, pd) || dnnl_memory_create(&ma, &a, eng, A) ||
             dnnl_memory_create(&mb, &b, eng, B) || dnnl_memory_create(&mc, &c, eng, C);
    dnnl_primitive_desc_destroy(pd);
    return rc ? -1 : 0;
}

int main(int argc, char **argv)
{
    int off = argc > 1 ? atoi(argv[1]) : 0;
    if (off < 0 || off > 64) {
        fprintf(stderr, "offset %d out of range 0..64\n", off);
        return 2;
    }
    openblas_set_num_threads(1);
    A = (float *)aligned_alloc(4096, sizeof(float) * (M * K + 64)) + off;
    B = (float *)aligned_alloc(4096, sizeof(float) * (K * N + 64)) + off;
    C = (float *)aligned_alloc(4096, sizeof(float) * (M * N + 64)) + off;
    for (int i = 0; i < M * K; i++) {
        A[i] = (float)(i % 13) * 0.1f;
        B[i] = (float)(i % 7) * 0.1f;
        C[i] = 0.0f;
    }
    if (matmul_init()) {
        fprintf(stderr, "oneDNN matmul did not start\n");
        return 1;
    }
    printf("OpenBLAS core %s, buffers offset by %d floats from 4096\n", openblas_get_corename(),
           off);
    void (*fn[3])(void) = {run_openblas, run_dnnl_sgemm, run_matmul};
    const char *name[3] = {"OpenBLAS sgemm", "dnnl_sgemm", "oneDNN matmul"};
    static double t[3][REPS];
    for (int k = 0; k < 3; k++)
        fn[k]();
    for (int r = 0; r < REPS; r++)
        for (int k = 0; k < 3; k++) {
            double t0 = cpu_s();
            fn[k]();
            fn[k]();
            t[k][r] = (cpu_s() - t0) / 2;
        }
    for (int k = 0; k < 3; k++) {
        qsort(t[k], REPS, sizeof(double), cmp);
        printf("%-16s %6.1f GFLOP/s (median), %6.1f (best)\n", name[k],
               2e-9 * M * N * K / t[k][REPS / 2], 2e-9 * M * N * K / t[k][0]);
    }
    return 0;
}

/* BLAS glue, kernel backend selection, linear layer and small vector
 * helpers (see ops.h). */
#include "layers/ops.h"

#include <actstore/common.h>
#include <assert.h>
#include <cblas.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef AS_OPS_HAVE_ONEDNN
#include "layers/ops_dnnl.h"
#endif

/* ---- environment read by library constructors ----------------------------
 * Two settings must be in the environment before the libraries initialize:
 *
 * OpenBLAS kernel set. Debian's OpenBLAS (DYNAMIC_ARCH) picks its kernels
 * from the CPU model when it loads; on CPUs newer than its build (e.g. AMD
 * Zen 4) it falls back to old ones (Haswell, even Prescott) and runs sgemm
 * at a fraction of the core's speed. The kernel set follows the ISA:
 * AVX-512 F/BW/DQ/VL -> SkylakeX, AVX2 + FMA -> Haswell. OPENBLAS_CORETYPE
 * already set wins; AS_BLAS_CORE=openblas keeps OpenBLAS's own detection.
 *
 * OpenMP waiting. libgomp's idle threads spin (300000 turns) before they
 * sleep; when the cores are shared with other processes a spinning thread
 * burns the time slice the thread it waits for needs, and sleeping at once
 * (passive) makes every short parallel region pay a wake-up on a quiet
 * machine (docs/training.md, "Threads"). GOMP_SPINCOUNT=5000, a short
 * spin, is added unless OMP_WAIT_POLICY or GOMP_SPINCOUNT is set.
 *
 * Both are read in library constructors, and glibc restores the startup
 * environment after .preinit_array runs: so an entry of the executable's
 * .preinit_array (this object is linked into every program that runs the
 * layers) re-executes the program once with the variables added, before
 * any library constructor ran; if the re-exec fails the program runs on.
 * Child processes inherit the variables. */

static const char *blas_core_how = "OpenBLAS detection";
static const char *omp_wait_how = "OpenMP default";

/* getenv from the startup environment: in .preinit_array glibc's
 * environ is not set up yet. */
static const char *env_of(char **envp, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; envp && envp[i]; i++)
        if (!strncmp(envp[i], name, n) && envp[i][n] == '=')
            return envp[i] + n + 1;
    return NULL;
}

/* The OPENBLAS_CORETYPE entry to add (and its tag) or NULL; sets blas_core_how. */
static const char *blas_core_choice(char **envp, const char **tag)
{
    const char *set = env_of(envp, "OPENBLAS_CORETYPE");
    if (set) {   /* ours (the tag names the same core) or the user's */
        const char *f = env_of(envp, "AS_BLAS_CORE_FORCED");
        blas_core_how = f && !strcmp(f, set) ? "forced by actstore from the CPU's ISA"
                                             : "OPENBLAS_CORETYPE";
        return NULL;
    }
    const char *keep = env_of(envp, "AS_BLAS_CORE");
    if (keep && !strcmp(keep, "openblas")) {
        blas_core_how = "OpenBLAS detection (AS_BLAS_CORE=openblas)";
        return NULL;
    }
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl")) {
        *tag = "AS_BLAS_CORE_FORCED=SkylakeX";
        return "OPENBLAS_CORETYPE=SkylakeX";
    }
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        *tag = "AS_BLAS_CORE_FORCED=Haswell";
        return "OPENBLAS_CORETYPE=Haswell";
    }
    return NULL;
}

/* The GOMP_SPINCOUNT entry to add (and its tag) or NULL; sets omp_wait_how. */
#define OMP_SPIN "5000"
static const char *omp_wait_choice(char **envp, const char **tag)
{
    if (env_of(envp, "OMP_WAIT_POLICY")) {
        omp_wait_how = "OMP_WAIT_POLICY";
        return NULL;
    }
    const char *set = env_of(envp, "GOMP_SPINCOUNT");
    if (set) {   /* ours (the tag holds the same count) or the user's */
        const char *f = env_of(envp, "AS_OMP_WAIT_FORCED");
        omp_wait_how = f && !strcmp(f, set) ? "spin " OMP_SPIN " (set by actstore)"
                                            : "GOMP_SPINCOUNT";
        return NULL;
    }
    *tag = "AS_OMP_WAIT_FORCED=" OMP_SPIN;
    return "GOMP_SPINCOUNT=" OMP_SPIN;
}

static void env_preinit(int argc, char **argv, char **envp)
{
    (void)argc;
    const char *add[4];
    int nadd = 0;
    const char *tag = NULL, *e = blas_core_choice(envp, &tag);
    if (e)
        add[nadd++] = e, add[nadd++] = tag;
    e = omp_wait_choice(envp, &tag);
    if (e)
        add[nadd++] = e, add[nadd++] = tag;
    if (!nadd || !argv || !envp)
        return;
    size_t n = 0, m = 0;
    while (envp[n])
        n++;
    char *env[n + 5];   /* no allocation this early */
    for (size_t i = 0; i < n; i++)   /* stale tags from a parent go */
        if (strncmp(envp[i], "AS_BLAS_CORE_FORCED=", 20) != 0 &&
            strncmp(envp[i], "AS_OMP_WAIT_FORCED=", 19) != 0)
            env[m++] = envp[i];
    for (int i = 0; i < nadd; i++)
        env[m++] = (char *)add[i];
    env[m] = NULL;
    execve("/proc/self/exe", argv, env);
    blas_core_how = "OpenBLAS detection (re-exec failed)";
    omp_wait_how = "OpenMP default (re-exec failed)";
}

__attribute__((section(".preinit_array"), used))
static void (*const as_env_preinit)(int, char **, char **) = env_preinit;

/* ---- backend ------------------------------------------------------------ */

static atomic_int backend = AS_OP_BUILTIN;
static pthread_once_t backend_once = PTHREAD_ONCE_INIT;

static void backend_init(void)
{
#ifdef AS_OPS_HAVE_ONEDNN
    const char *e = getenv("AS_KERNELS");
    if ((!e || strcmp(e, "builtin") != 0) && as_dnnl_available())
        atomic_store(&backend, AS_OP_ONEDNN);
#endif
}

as_op_backend as_op_get_backend(void)
{
    pthread_once(&backend_once, backend_init);
    return (as_op_backend)atomic_load(&backend);
}

int as_op_set_backend(as_op_backend b)
{
    pthread_once(&backend_once, backend_init);
    if (b == AS_OP_BUILTIN) {
        atomic_store(&backend, AS_OP_BUILTIN);
        return 0;
    }
#ifdef AS_OPS_HAVE_ONEDNN
    if (b == AS_OP_ONEDNN && as_dnnl_available()) {
        atomic_store(&backend, AS_OP_ONEDNN);
        return 0;
    }
#endif
    return AS_ENOTSUP;
}

const char *as_op_kernels_info(void)
{
    static _Thread_local char info[256];
    char lib[96];
#ifdef AS_OPS_HAVE_ONEDNN
    as_dnnl_describe(lib, sizeof lib);
    if (!lib[0])
        snprintf(lib, sizeof lib, "oneDNN did not start");
#else
    snprintf(lib, sizeof lib, "oneDNN not built in");
#endif
    const bool dn = as_op_get_backend() == AS_OP_ONEDNN;
    snprintf(info, sizeof info, "kernels %s (%s%s); OpenBLAS %s (%s); OpenMP wait %s",
             dn ? "onednn" : "builtin", lib,
             !dn && strncmp(lib, "oneDNN ", 7) == 0 ? ", not selected" : "",
             openblas_get_corename(), blas_core_how, omp_wait_how);
    return info;
}

void as_op_set_threads(int threads)
{
    if (threads > 0)
        openblas_set_num_threads(threads);
#ifdef AS_OPS_HAVE_ONEDNN
    as_dnnl_set_threads(threads);
#endif
}

const char *as_op_blas_core(void)
{
    return openblas_get_corename();
}

/* oneDNN's sgemm beats OpenBLAS's SkylakeX kernels on this framework's
 * shapes except small untransposed products (per-head attention), where
 * OpenBLAS's lower call overhead wins: `actstore bench layers`. */
#define ONEDNN_MIN_NN (1 << 20)   /* M N K, no operand transposed */
#define ONEDNN_MIN_T  (1 << 15)   /* M N K, an operand transposed */

void as_op_gemm(bool ta, bool tb, int M, int N, int K, float alpha,
                const float *A, int lda, const float *B, int ldb, float beta,
                float *C, int ldc)
{
    assert(M >= 0 && N >= 0 && K >= 0);
    if (M == 0 || N == 0)
        return;
#ifdef AS_OPS_HAVE_ONEDNN
    double mnk = (double)M * N * K;
    if (K > 0 && mnk >= (ta || tb ? ONEDNN_MIN_T : ONEDNN_MIN_NN) &&
        as_op_get_backend() == AS_OP_ONEDNN &&
        as_dnnl_sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc) == 0)
        return;
#endif
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans,
                tb ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda, B,
                ldb, beta, C, ldc);
}

void as_op_linear_fwd(int N, int in, int out, const float *x, const float *W,
                      const float *b, float *y)
{
    if (b) {
        for (int i = 0; i < N; i++)
            memcpy(y + (size_t)i * out, b, sizeof(float) * (size_t)out);
    }
    as_op_gemm(false, true, N, out, in, 1.0f, x, in, W, in, b ? 1.0f : 0.0f,
               y, out);
}

void as_op_linear_bwd(int N, int in, int out, const float *x, const float *W,
                      const float *dy, float *dx, float *dW, float *db)
{
    if (dx)  /* (N, in) = (N, out) (out, in) */
        as_op_gemm(false, false, N, in, out, 1.0f, dy, out, W, in, 0.0f, dx, in);
    if (dW)  /* (out, in) += (out, N) (N, in) */
        as_op_gemm(true, false, out, in, N, 1.0f, dy, out, x, in, 1.0f, dW, in);
    if (db) {
        for (int i = 0; i < N; i++) {
            const float *r = dy + (size_t)i * out;
            for (int o = 0; o < out; o++)
                db[o] += r[o];
        }
    }
}

size_t as_op_linear_native_workspace(int N, int in, int out)
{
#ifdef AS_OPS_HAVE_ONEDNN
    if (as_op_get_backend() == AS_OP_ONEDNN)
        return as_dnnl_linear_native_workspace(N, in, out);
#endif
    (void)N, (void)in, (void)out;
    return 0;
}

int as_op_linear_native(int N, int in, int out, int pass, float *ws)
{
#ifdef AS_OPS_HAVE_ONEDNN
    if (as_op_get_backend() == AS_OP_ONEDNN &&
        as_dnnl_linear_native(N, in, out, pass, ws) == 0)
        return 0;
#endif
    (void)N, (void)in, (void)out, (void)pass, (void)ws;
    return AS_ENOTSUP;
}

void as_op_add(size_t n, const float *x, float *y)
{
    for (size_t i = 0; i < n; i++)
        y[i] += x[i];
}

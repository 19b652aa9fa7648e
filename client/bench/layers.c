/*
 * actstore bench layers [--json FILE] [--reps R] [--threads T] [--quick]
 *                       [--layout blocked|nchw]
 *
 * Achieved GFLOP/s of the reference framework's conv and matmul kernels in
 * the shapes of the bench presets (read from layers/presets.c, so they stay
 * in sync), side by side in one run with OpenBLAS sgemm:
 *   - sgemm of the same GEMM shape the kernel performs (conv forward:
 *     M = Cout, N = images * Ho * Wo, K = Cin * k * k, one call): what the
 *     kernel would reach with zero overhead (im2col, scatter, bias);
 *   - sgemm 1024 x 1024 x 1024: the machine's practical peak;
 *   - the library's own primitives (oneDNN) alone on their native
 *     layouts: for conv the blocked ones, without the reorders from and to
 *     NCHW the kernel pays (convs the direct few-channel kernel of
 *     layers/ops_direct.c runs are marked "*": measured against the same
 *     library primitives); for linear its inner-product primitives: what
 *     the library itself reaches on the shape.
 * The kernels in use (backend, oneDNN ISA, OpenBLAS core and how it was
 * chosen) head the output; AS_KERNELS=builtin measures the im2col path.
 * The convs run on the activation layout the cnn uses (--layout, default
 * the bench preset's): blocked, nChw16c in and out as the model passes
 * them between layers (the first conv reads the NCHW batch), or NCHW with
 * the reorders to and from the library's layouts inside each call.
 * Time is the calling thread's CPU time with one BLAS thread (the
 * default), wall time otherwise. Each figure is the median over R repeats
 * (default 31); a repeat times
 * enough calls to last ~2 ms, short enough that on a shared host most
 * repeats run without being preempted, and kernel and reference alternate
 * repeat by repeat, so machine noise hits both alike. Ratios are what to
 * read on a shared host.
 * FLOPs: 2 M N K per GEMM-equivalent; conv backward counts dW and dx
 * (dx skipped for the first conv, as in the model). For a conv with dx a
 * second line gives backward-data and backward-weights each alone
 * against the library's primitive alone (each half then pays its own
 * reorder of dy, which the whole backward does once).
 * Linear backward is reported against its forward (same FLOPs per
 * product): parity means the ratio bwd / fwd GF/s is near 1.
 */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench.h"
#include "util/clock.h"
#include "cli.h"
#include "layers/ops.h"
#include "layers/ops_direct.h"
#include "layers/train.h"
#include "stats.h"

/* With one BLAS thread every kernel runs on the calling thread, so its CPU
 * time is the honest cost: time the host's other processes take from this
 * thread is not counted. With more threads, wall time. */
static clockid_t bench_clock = CLOCK_THREAD_CPUTIME_ID;


static float *randbuf(size_t n, uint64_t *s)
{
    float *p = malloc((n ? n : 1) * sizeof *p);
    if (p)
        for (size_t i = 0; i < n; i++)
            p[i] = 2.0f * as_nn_randu(s) - 1.0f;
    return p;
}

/* One timed kernel: fn(ud) called `iters` times per repeat. */
typedef void (*kern_fn)(void *ud);

static double time_once(kern_fn fn, void *ud, int iters)
{
    double t0 = as_clock_s(bench_clock);
    for (int i = 0; i < iters; i++)
        fn(ud);
    return (as_clock_s(bench_clock) - t0) / iters;
}

/* Calls per repeat so that one repeat lasts ~2 ms (from the fastest of 3
 * warm calls). */
static int calibrate(kern_fn fn, void *ud)
{
    fn(ud);
    double t = 1e9;
    for (int i = 0; i < 3; i++) {
        double ti = time_once(fn, ud, 1);
        t = ti < t ? ti : t;
    }
    int it = t > 0 ? (int)(0.002 / t) : 1000;
    return it < 1 ? 1 : (it > 10000 ? 10000 : it);
}

/* ---- kernels --------------------------------------------------------------- */

typedef struct gemm_case {
    int M, N, K;
    float *A, *B, *C;
} gemm_case;

static void run_gemm(void *ud)
{
    gemm_case *g = ud;
    as_op_gemm(false, false, g->M, g->N, g->K, 1.0f, g->A, g->K, g->B, g->N,
               0.0f, g->C, g->N);
}

/* OpenBLAS directly, whatever the backend. */
static void run_openblas(void *ud)
{
    gemm_case *g = ud;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, g->M, g->N, g->K, 1.0f,
                g->A, g->K, g->B, g->N, 0.0f, g->C, g->N);
}

typedef struct conv_case {
    as_op_conv_geom g;
    bool dx;
    as_op_layout lay;   /* of y, dy (blocked: x too but the first conv's) */
    as_op_layout xl;
    int half;   /* conv_split: 1 backward-weights, 2 backward-data */
    float *x, *W, *b, *y, *dy, *dxb, *dW, *db, *ws, *nws;
} conv_case;

static void run_conv_fwd(void *ud)
{
    conv_case *c = ud;
    if (c->lay == AS_OP_BLK16)
        as_op_conv_fwd_blk(&c->g, c->xl, c->x, c->W, c->b, c->y, c->ws);
    else
        as_op_conv_fwd(&c->g, c->x, c->W, c->b, c->y, c->ws);
}

/* The backward as the model runs it; data / weights: which halves. */
static void conv_bwd(conv_case *c, bool data, bool weights)
{
    float *dx = data ? c->dxb : NULL, *dW = weights ? c->dW : NULL;
    float *db = weights ? c->db : NULL;
    if (c->lay == AS_OP_BLK16)
        as_op_conv_bwd_blk(&c->g, c->xl, c->x, c->W, c->dy, dx, dW, db, c->ws);
    else
        as_op_conv_bwd(&c->g, c->x, c->W, c->dy, dx, dW, db, c->ws);
}

static void run_conv_bwd(void *ud)
{
    conv_case *c = ud;
    conv_bwd(c, c->dx, true);
}

/* The library's primitives alone: forward; backward weights (+ data). */
static void run_native_fwd(void *ud)
{
    conv_case *c = ud;
    as_op_conv_native(&c->g, 0, c->nws);
}

static void run_native_bwd(void *ud)
{
    conv_case *c = ud;
    as_op_conv_native(&c->g, 1, c->nws);
    if (c->dx)
        as_op_conv_native(&c->g, 2, c->nws);
}

/* One half of the backward alone (c->half: 1 weights, 2 data), the
 * kernel and the library's primitive. */
static void run_conv_half(void *ud)
{
    conv_case *c = ud;
    conv_bwd(c, c->half == 2, c->half != 2);
}

static void run_native_half(void *ud)
{
    conv_case *c = ud;
    as_op_conv_native(&c->g, c->half, c->nws);
}

typedef struct lin_case {
    int N, in, out;
    float *x, *W, *b, *y, *dy, *dx, *dW, *db, *nws;
} lin_case;

static void run_lin_fwd(void *ud)
{
    lin_case *l = ud;
    as_op_linear_fwd(l->N, l->in, l->out, l->x, l->W, l->b, l->y);
}

static void run_lin_bwd(void *ud)
{
    lin_case *l = ud;
    as_op_linear_bwd(l->N, l->in, l->out, l->x, l->W, l->dy, l->dx, l->dW, l->db);
}

/* The library's inner-product primitives alone. */
static void run_lin_native_fwd(void *ud)
{
    lin_case *l = ud;
    as_op_linear_native(l->N, l->in, l->out, 0, l->nws);
}

static void run_lin_native_bwd(void *ud)
{
    lin_case *l = ud;
    as_op_linear_native(l->N, l->in, l->out, 1, l->nws);
}

static int gemm_alloc(gemm_case *g, int M, int N, int K, uint64_t *s)
{
    g->M = M, g->N = N, g->K = K;
    g->A = randbuf((size_t)M * K, s);
    g->B = randbuf((size_t)K * N, s);
    g->C = randbuf((size_t)M * N, s);
    return g->A && g->B && g->C ? 0 : -1;
}

static void gemm_free(gemm_case *g)
{
    free(g->A); free(g->B); free(g->C);
}

/* Median seconds of n kernels, alternating repeat by repeat. */
static void alternate(int n, kern_fn *fn, void **ud, int reps, double *t)
{
    int it[4];
    double v[4][256];
    for (int k = 0; k < n; k++)
        it[k] = calibrate(fn[k], ud[k]);
    for (int r = 0; r < reps; r++)
        for (int k = 0; k < n; k++)
            v[k][r] = time_once(fn[k], ud[k], it[k]);
    for (int k = 0; k < n; k++)
        t[k] = as_stats_median(v[k], (size_t)reps);
}

/* ---- command --------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f,
        "usage: actstore bench layers [--json FILE] [--reps R] [--threads T] [--quick]\n"
        "                             [--layout blocked|nchw]\n"
        "\n"
        "GFLOP/s of conv (forward, backward) and linear (forward, backward)\n"
        "in the shapes of the bench presets (cnn, vit, lm), next to sgemm of\n"
        "the same GEMM shape, sgemm 1024^3 and the library's own primitives\n"
        "(conv, inner product) on their native layouts, in the same run. The first line\n"
        "names the kernels: AS_KERNELS=builtin|onednn picks the backend,\n"
        "OPENBLAS_CORETYPE or AS_BLAS_CORE=openblas OpenBLAS's kernel set.\n"
        "  --reps R     repeats per figure, median reported (default 31, max 256)\n"
        "  --threads T  BLAS / oneDNN threads for everything (default 1)\n"
        "  --quick      9 repeats\n"
        "  --layout L   the convs' activations: blocked (nChw16c in and out, as the\n"
        "               cnn runs them blocked) or nchw (reordered inside each call);\n"
        "               default the cnn's (AS_LAYOUT overrides it)\n"
        "  --json FILE  write the results as JSON (\"-\" = stdout)\n");
}

/* One run of the bench: options, data seed, the peak reference, the conv
 * totals (FLOP-weighted). */
typedef struct layers_bench {
    const char *json;
    unsigned long long reps, threads;
    int      R;
    uint64_t seed;
    double   peak_gf;
    double   fwd_flops, fwd_t, fwd_ref_t, bwd_flops, bwd_t, bwd_ref_t;
    double   fwd_lib_t, bwd_lib_t;   /* the library primitives alone */
    bool     lib_all;                /* ... ran on every conv shape */
    bool     any_direct;             /* a conv ran the direct kernel */
    as_op_layout lay;                /* the convs' activation layout */
} layers_bench;

/* Returns AS_CLI_RUN, or an exit code after --help or a usage error. */
static int parse_args(layers_bench *b, int argc, char **argv)
{
    bool quick = false;
    const char *layout = NULL;
    const as_cli_flag flags[] = {
        {"--layout", AS_CLI_STR, &layout, 0, 0},
        {"--json", AS_CLI_STR, &b->json, 0, 0},
        {"--reps", AS_CLI_U64, &b->reps, 1, 256},
        {"--threads", AS_CLI_U64, &b->threads, 1, 256},
        {"--quick", AS_CLI_FLAG, &quick, 0, 0},
    };
    int rc = as_cli_parse_flags("bench layers", flags, sizeof flags / sizeof flags[0], usage,
                                argc, argv);
    if (quick)
        b->reps = 9;
    as_nn_preset cp;   /* default: the cnn's (with AS_LAYOUT) */
    as_nn_preset_get("cnn", "bench", &cp);
    if (rc == AS_CLI_RUN && !layout && as_nn_cnn_layout(&cp.cnn, &b->lay))
        return as_cli_usage("bench layers", "AS_LAYOUT=%s: expected blocked or nchw",
                            getenv("AS_LAYOUT"));
    if (rc == AS_CLI_RUN && layout) {
        if (strcmp(layout, "blocked") && strcmp(layout, "nchw"))
            return as_cli_usage("bench layers", "--layout: expected blocked or nchw, got '%s'",
                                layout);
        b->lay = strcmp(layout, "blocked") ? AS_OP_NCHW : AS_OP_BLK16;
    }
    return rc;
}

/* sgemm 1024^3: the reference every layer is compared with. */
static int sgemm_peak(layers_bench *b, cJSON *root)
{
    gemm_case peak;
    if (gemm_alloc(&peak, 1024, 1024, 1024, &b->seed)) {
        gemm_free(&peak);
        return as_cli_fail("bench layers", "out of memory");
    }
    double tpk[2];
    kern_fn fn[2] = {run_gemm, run_openblas};
    void *ud[2] = {&peak, &peak};
    alternate(2, fn, ud, b->R, tpk);
    gemm_free(&peak);
    b->peak_gf = 2e-9 * 1024.0 * 1024 * 1024 / tpk[0];
    const double peak_ob = 2e-9 * 1024.0 * 1024 * 1024 / tpk[1];
    cJSON *pk = cJSON_AddObjectToObject(root, "sgemm_peak");
    cJSON_AddNumberToObject(pk, "m", 1024);
    cJSON_AddNumberToObject(pk, "n", 1024);
    cJSON_AddNumberToObject(pk, "k", 1024);
    cJSON_AddNumberToObject(pk, "gflops", b->peak_gf);
    cJSON_AddNumberToObject(pk, "openblas_gflops", peak_ob);
    printf("%s\n%llu thread(s), median of %d, %s time; sgemm 1024^3: %.1f GFLOP/s "
           "(OpenBLAS %s alone: %.1f)\n\n",
           as_op_kernels_info(), b->threads, b->R, b->threads == 1 ? "thread CPU" : "wall",
           b->peak_gf, as_op_blas_core(), peak_ob);
    return AS_EXIT_OK;
}

/* Backward-data and backward-weights each alone against the library's
 * primitive alone (a conv with dx): a line under the conv's row and
 * fields of its JSON object. */
static void conv_split(const layers_bench *b, conv_case *c, double f, cJSON *o)
{
    kern_fn fn[2] = {run_conv_half, run_native_half};
    void *ud[2] = {c, c};
    double td[2], tw[2];
    c->half = 2;
    alternate(2, fn, ud, b->R, td);
    c->half = 1;
    alternate(2, fn, ud, b->R, tw);
    printf("%-16s %-16s bwd-data %6.1f lib %6.1f /lib %4.2f; bwd-weights %6.1f lib %6.1f "
           "/lib %4.2f\n", "", "", 1e-9 * f / td[0], 1e-9 * f / td[1], td[1] / td[0],
           1e-9 * f / tw[0], 1e-9 * f / tw[1], tw[1] / tw[0]);
    cJSON_AddNumberToObject(o, "bwd_data_gflops", 1e-9 * f / td[0]);
    cJSON_AddNumberToObject(o, "bwd_data_lib_gflops", 1e-9 * f / td[1]);
    cJSON_AddNumberToObject(o, "bwd_data_over_lib", td[1] / td[0]);
    cJSON_AddNumberToObject(o, "bwd_weights_gflops", 1e-9 * f / tw[0]);
    cJSON_AddNumberToObject(o, "bwd_weights_lib_gflops", 1e-9 * f / tw[1]);
    cJSON_AddNumberToObject(o, "bwd_weights_over_lib", tw[1] / tw[0]);
}

/* One conv layer (stage s, conv k) against the GEMMs of the same shape. */
static int conv_one(layers_bench *b, conv_case *c, int s, int k, cJSON *ca)
{
    uint64_t *seed = &b->seed;
    const int H = c->g.H;
    const size_t nx = as_op_image_numel(c->xl, c->g.N, c->g.Cin, H, H);
    const size_t ny = as_op_image_numel(c->lay, c->g.N, c->g.Cout, c->g.Ho, c->g.Wo);
    const size_t nw = (size_t)c->g.Cout * c->g.Cin * 9;
    c->x = randbuf(nx, seed); c->W = randbuf(nw, seed);
    c->b = randbuf((size_t)c->g.Cout, seed); c->y = randbuf(ny, seed);
    c->dy = randbuf(ny, seed); c->dxb = randbuf(nx, seed);
    c->dW = randbuf(nw, seed); c->db = randbuf((size_t)c->g.Cout, seed);
    c->ws = randbuf(c->lay == AS_OP_BLK16 ? as_op_conv_workspace_blk(&c->g, c->xl)
                                          : as_op_conv_workspace(&c->g), seed);
    const size_t nnws = as_op_conv_native_workspace(&c->g);
    c->nws = nnws ? randbuf(nnws, seed) : NULL;
    const int M = c->g.Cout, Nc = c->g.N * c->g.Ho * c->g.Wo, K = c->g.Cin * 9;
    gemm_case gf, gb;   /* forward GEMM; backward dW GEMM (Cout, K, cols) */
    int bad = gemm_alloc(&gf, M, Nc, K, seed) | gemm_alloc(&gb, M, K, Nc, seed);
    int rc = AS_EXIT_OK;
    if (bad || !c->x || !c->W || !c->b || !c->y || !c->dy || !c->dxb || !c->dW || !c->db ||
        !c->ws) {
        rc = as_cli_fail("bench layers", "out of memory");
    } else {
        double tf, tfr, tb, tbr, tfl = 0, tbl = 0, t[3];
        const bool nat = c->nws != NULL;
        kern_fn ff[3] = {run_conv_fwd, run_gemm, run_native_fwd};
        kern_fn fbk[3] = {run_conv_bwd, run_gemm, run_native_bwd};
        void *uf[3] = {c, &gf, c}, *ub[3] = {c, &gb, c};
        alternate(nat ? 3 : 2, ff, uf, b->R, t);
        tf = t[0], tfr = t[1], tfl = nat ? t[2] : 0;
        alternate(nat ? 3 : 2, fbk, ub, b->R, t);
        tb = t[0], tbr = t[1], tbl = nat ? t[2] : 0;
        b->lib_all = b->lib_all && nat;
        b->fwd_lib_t += tfl; b->bwd_lib_t += tbl;
        const double f = 2.0 * M * Nc * K, fb = f * (c->dx ? 2 : 1);
        /* the backward reference: one GEMM per product it computes */
        const double tbr_all = tbr * (c->dx ? 2 : 1);
        b->fwd_flops += f; b->fwd_t += tf; b->fwd_ref_t += tfr;
        b->bwd_flops += fb; b->bwd_t += tb; b->bwd_ref_t += tbr_all;
        char name[64], shp[64];
        const bool direct = c->lay == AS_OP_NCHW && as_direct_conv_ok(&c->g);
        b->any_direct = b->any_direct || direct;
        snprintf(name, sizeof name, "stages.%d.conv%d", s, k);
        snprintf(shp, sizeof shp, "%d %d>%d %dx%d 3", c->g.N, c->g.Cin, c->g.Cout, H, H);
        char row[72];   /* the printed name, marked when the direct kernel ran */
        snprintf(row, sizeof row, "%s%s", name, direct ? "*" : "");
        if (nat)
            printf("%-16s %-16s %8.1f %6.1f %6.1f %6.2f %8.1f %6.1f %6.1f %6.2f\n", row,
                   shp, 1e-9 * f / tf, 1e-9 * f / tfr, 1e-9 * f / tfl, tfl / tf,
                   1e-9 * fb / tb, 1e-9 * fb / tbr_all, 1e-9 * fb / tbl, tbl / tb);
        else
            printf("%-16s %-16s %8.1f %6.1f %6s %6s %8.1f %6.1f %6s %6s\n", row, shp,
                   1e-9 * f / tf, 1e-9 * f / tfr, "-", "-", 1e-9 * fb / tb,
                   1e-9 * fb / tbr_all, "-", "-");
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "layer", name);
        cJSON_AddNumberToObject(o, "n", c->g.N);
        cJSON_AddNumberToObject(o, "cin", c->g.Cin);
        cJSON_AddNumberToObject(o, "cout", c->g.Cout);
        cJSON_AddNumberToObject(o, "h", H);
        cJSON_AddNumberToObject(o, "w", H);
        cJSON_AddNumberToObject(o, "k", 3);
        cJSON_AddNumberToObject(o, "stride", 1);
        cJSON_AddNumberToObject(o, "pad", 1);
        cJSON_AddBoolToObject(o, "direct", direct);
        cJSON_AddStringToObject(o, "layout", c->lay == AS_OP_BLK16 ? "blocked" : "nchw");
        cJSON_AddStringToObject(o, "x_layout", c->xl == AS_OP_BLK16 ? "blocked" : "nchw");
        cJSON_AddNumberToObject(o, "gemm_m", M);
        cJSON_AddNumberToObject(o, "gemm_n", Nc);
        cJSON_AddNumberToObject(o, "gemm_k", K);
        cJSON_AddNumberToObject(o, "fwd_gflops", 1e-9 * f / tf);
        cJSON_AddNumberToObject(o, "fwd_sgemm_gflops", 1e-9 * f / tfr);
        cJSON_AddNumberToObject(o, "fwd_over_sgemm", tfr / tf);
        cJSON_AddNumberToObject(o, "fwd_over_peak", 1e-9 * f / tf / b->peak_gf);
        cJSON_AddNumberToObject(o, "bwd_gflops", 1e-9 * fb / tb);
        cJSON_AddNumberToObject(o, "bwd_sgemm_gflops", 1e-9 * fb / tbr_all);
        cJSON_AddNumberToObject(o, "bwd_over_sgemm", tbr_all / tb);
        cJSON_AddBoolToObject(o, "bwd_includes_dx", c->dx);
        if (nat) {   /* the library's primitives alone, native layouts */
            cJSON_AddNumberToObject(o, "fwd_lib_gflops", 1e-9 * f / tfl);
            cJSON_AddNumberToObject(o, "fwd_over_lib", tfl / tf);
            cJSON_AddNumberToObject(o, "bwd_lib_gflops", 1e-9 * fb / tbl);
            cJSON_AddNumberToObject(o, "bwd_over_lib", tbl / tb);
            if (c->dx)
                conv_split(b, c, f, o);
        }
        cJSON_AddItemToArray(ca, o);
    }
    gemm_free(&gf); gemm_free(&gb);
    free(c->x); free(c->W); free(c->b); free(c->y); free(c->dy); free(c->dxb);
    free(c->dW); free(c->db); free(c->ws); free(c->nws);
    return rc;
}

/* The convolutions of the cnn bench preset, then their FLOP-weighted total. */
static int bench_convs(layers_bench *b, cJSON *root)
{
    as_nn_preset cp;
    as_nn_preset_get("cnn", "bench", &cp);
    cJSON *ca = cJSON_AddArrayToObject(root, "conv");
    printf("conv activations: %s\n", b->lay == AS_OP_BLK16
           ? "nChw16c in and out (the first conv: NCHW batch in), as the cnn runs them blocked"
           : "NCHW in and out (reordered to the library's layouts inside each call)");
    cJSON_AddStringToObject(root, "conv_layout", b->lay == AS_OP_BLK16 ? "blocked" : "nchw");
    printf("%-16s %-16s %8s %6s %6s %6s %8s %6s %6s %6s\n", "conv (cnn bench)",
           "N Cin>Cout HxW k", "fwd GF/s", "sgemm", "lib", "/lib", "bwd GF/s", "sgemm",
           "lib", "/lib");
    b->lib_all = true;
    int H = 28, cin = 1, li = 0;
    for (int s = 0; s < cp.cnn.nstages; s++) {
        for (int k = 0; k < cp.cnn.convs; k++, li++) {
            conv_case c = {.g = {.N = cp.batch, .Cin = cin, .H = H, .W = H,
                                 .Cout = cp.cnn.widths[s], .kh = 3, .kw = 3,
                                 .stride = 1, .pad = 1},
                           .dx = li > 0, .lay = b->lay,
                           .xl = li > 0 ? b->lay : AS_OP_NCHW};
            as_op_conv_geom_init(&c.g);
            int rc = conv_one(b, &c, s, k, ca);
            cin = cp.cnn.widths[s];
            if (rc)
                return rc;
        }
        H /= 2;
    }
    cJSON *cs = cJSON_AddObjectToObject(root, "conv_total");
    cJSON_AddNumberToObject(cs, "fwd_gflops", 1e-9 * b->fwd_flops / b->fwd_t);
    cJSON_AddNumberToObject(cs, "fwd_sgemm_gflops", 1e-9 * b->fwd_flops / b->fwd_ref_t);
    cJSON_AddNumberToObject(cs, "fwd_over_sgemm", b->fwd_ref_t / b->fwd_t);
    cJSON_AddNumberToObject(cs, "fwd_over_peak", 1e-9 * b->fwd_flops / b->fwd_t / b->peak_gf);
    cJSON_AddNumberToObject(cs, "bwd_gflops", 1e-9 * b->bwd_flops / b->bwd_t);
    cJSON_AddNumberToObject(cs, "bwd_over_sgemm", b->bwd_ref_t / b->bwd_t);
    const double ff = 1e-9 * b->fwd_flops, fb = 1e-9 * b->bwd_flops;
    if (b->lib_all) {
        cJSON_AddNumberToObject(cs, "fwd_lib_gflops", ff / b->fwd_lib_t);
        cJSON_AddNumberToObject(cs, "fwd_over_lib", b->fwd_lib_t / b->fwd_t);
        cJSON_AddNumberToObject(cs, "bwd_lib_gflops", fb / b->bwd_lib_t);
        cJSON_AddNumberToObject(cs, "bwd_over_lib", b->bwd_lib_t / b->bwd_t);
        printf("%-16s %-16s %8.1f %6.1f %6.1f %6.2f %8.1f %6.1f %6.1f %6.2f\n", "all convs",
               "(FLOP-weighted)", ff / b->fwd_t, ff / b->fwd_ref_t, ff / b->fwd_lib_t,
               b->fwd_lib_t / b->fwd_t, fb / b->bwd_t, fb / b->bwd_ref_t,
               fb / b->bwd_lib_t, b->bwd_lib_t / b->bwd_t);
    } else {
        printf("%-16s %-16s %8.1f %6.1f %6s %6s %8.1f %6.1f %6s %6s\n", "all convs",
               "(FLOP-weighted)", ff / b->fwd_t, ff / b->fwd_ref_t, "-", "-",
               fb / b->bwd_t, fb / b->bwd_ref_t, "-", "-");
    }
    if (b->any_direct)
        printf("* the direct NCHW kernel for few input channels (layers/ops_direct.c)\n");
    printf("conv forward / sgemm 1024^3: %.2f\n\n", 1e-9 * b->fwd_flops / b->fwd_t / b->peak_gf);
    return AS_EXIT_OK;
}

/* Print and record one linear layer's figures: times of the kernel, the
 * same-shape sgemm and (tfl > 0) the library's primitives. */
static void lin_report(const lin_case *l, const char *name, const double *t, bool nat,
                       cJSON *ma)
{
    const double tf = t[0], tfr = t[1], tfl = t[2], tb = t[3], tbr = 2 * t[4], tbl = t[5];
    const double f = 2.0 * l->N * l->in * l->out, fb = 2 * f;
    char shp[64], lf[16] = "-", lfr[16] = "-", lb[16] = "-", lbr[16] = "-";
    snprintf(shp, sizeof shp, "%d %d>%d", l->N, l->in, l->out);
    if (nat) {
        snprintf(lf, sizeof lf, "%.1f", 1e-9 * f / tfl);
        snprintf(lfr, sizeof lfr, "%.2f", tfl / tf);
        snprintf(lb, sizeof lb, "%.1f", 1e-9 * fb / tbl);
        snprintf(lbr, sizeof lbr, "%.2f", tbl / tb);
    }
    printf("%-16s %-16s %8.1f %6.1f %6s %6s %8.1f %6.1f %6s %6s %8.2f\n", name, shp,
           1e-9 * f / tf, 1e-9 * f / tfr, lf, lfr, 1e-9 * fb / tb, 1e-9 * fb / tbr, lb, lbr,
           2 * tf / tb);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "layer", name);
    cJSON_AddNumberToObject(o, "n", l->N);
    cJSON_AddNumberToObject(o, "in", l->in);
    cJSON_AddNumberToObject(o, "out", l->out);
    cJSON_AddNumberToObject(o, "fwd_gflops", 1e-9 * f / tf);
    cJSON_AddNumberToObject(o, "fwd_sgemm_gflops", 1e-9 * f / tfr);
    cJSON_AddNumberToObject(o, "fwd_over_sgemm", tfr / tf);
    cJSON_AddNumberToObject(o, "bwd_gflops", 1e-9 * fb / tb);
    cJSON_AddNumberToObject(o, "bwd_over_sgemm", tbr / tb);
    cJSON_AddNumberToObject(o, "bwd_over_fwd", 2 * tf / tb);
    if (nat) {   /* oneDNN's inner-product primitives alone */
        cJSON_AddNumberToObject(o, "fwd_lib_gflops", 1e-9 * f / tfl);
        cJSON_AddNumberToObject(o, "fwd_over_lib", tfl / tf);
        cJSON_AddNumberToObject(o, "bwd_lib_gflops", 1e-9 * fb / tbl);
        cJSON_AddNumberToObject(o, "bwd_over_lib", tbl / tb);
    }
    cJSON_AddItemToArray(ma, o);
}

/* One linear layer against the GEMM of the same shape and the library's
 * inner-product primitives. */
static int lin_one(layers_bench *b, lin_case *l, const char *name, cJSON *ma)
{
    uint64_t *seed = &b->seed;
    const int N = l->N;
    l->x = randbuf((size_t)N * l->in, seed); l->W = randbuf((size_t)l->in * l->out, seed);
    l->b = randbuf((size_t)l->out, seed); l->y = randbuf((size_t)N * l->out, seed);
    l->dy = randbuf((size_t)N * l->out, seed); l->dx = randbuf((size_t)N * l->in, seed);
    l->dW = randbuf((size_t)l->in * l->out, seed); l->db = randbuf((size_t)l->out, seed);
    const size_t nnws = as_op_linear_native_workspace(N, l->in, l->out);
    l->nws = nnws ? randbuf(nnws, seed) : NULL;
    gemm_case g;   /* y (N, out) = x (N, in) W^T: same M, N, K untransposed */
    int bad = gemm_alloc(&g, N, l->out, l->in, seed);
    int rc = AS_EXIT_OK;
    if (bad || !l->x || !l->W || !l->b || !l->y || !l->dy || !l->dx || !l->dW || !l->db ||
        (nnws && !l->nws)) {
        rc = as_cli_fail("bench layers", "out of memory");
    } else {
        const bool nat = l->nws != NULL;
        const int n = nat ? 3 : 2;
        double t[6] = {0};
        kern_fn ff[3] = {run_lin_fwd, run_gemm, run_lin_native_fwd};
        kern_fn fbk[3] = {run_lin_bwd, run_gemm, run_lin_native_bwd};
        void *ud[3] = {l, &g, l};
        alternate(n, ff, ud, b->R, t);
        alternate(n, fbk, ud, b->R, t + 3);
        lin_report(l, name, t, nat, ma);
    }
    gemm_free(&g);
    free(l->x); free(l->W); free(l->b); free(l->y); free(l->dy); free(l->dx);
    free(l->dW); free(l->db); free(l->nws);
    return rc;
}

/* The linear layers of the vit and lm bench presets. */
static int bench_linears(layers_bench *b, cJSON *root)
{
    cJSON *ma = cJSON_AddArrayToObject(root, "matmul");
    printf("%-16s %-16s %8s %6s %6s %6s %8s %6s %6s %6s %8s\n", "linear", "N in>out",
           "fwd GF/s", "sgemm", "lib", "/lib", "bwd GF/s", "sgemm", "lib", "/lib", "bwd/fwd");
    const char *models[2] = {"vit", "lm"};
    for (int mi = 0; mi < 2; mi++) {
        as_nn_preset tp;
        as_nn_preset_get(models[mi], "bench", &tp);
        const int C = tp.tf.C, Hd = tp.tf.mlp * tp.tf.C;
        const int N = tp.batch * (mi == 0 ? 50 : tp.tf.T);
        const struct { const char *n; int in, out; } ls[] = {
            {"attn.qkv", C, 3 * C}, {"attn.proj", C, C}, {"mlp.fc1", C, Hd},
            {"mlp.fc2", Hd, C}};
        for (size_t k = 0; k < 4; k++) {
            lin_case l = {.N = N, .in = ls[k].in, .out = ls[k].out};
            char name[64];
            snprintf(name, sizeof name, "%s.%s", models[mi], ls[k].n);
            int rc = lin_one(b, &l, name, ma);
            if (rc)
                return rc;
        }
    }
    return AS_EXIT_OK;
}

int as_bench_layers(int argc, char **argv)
{
    layers_bench b = {.reps = 31, .threads = 1, .seed = 0x5EED};
    int rc = parse_args(&b, argc, argv);
    if (rc != AS_CLI_RUN)
        return rc;
    as_op_set_threads((int)b.threads);
    bench_clock = b.threads == 1 ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC;
    b.R = (int)b.reps;
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "benchmark", "layers");
    cJSON_AddStringToObject(root, "blas_core", as_op_blas_core());
    cJSON_AddStringToObject(root, "backend",
                            as_op_get_backend() == AS_OP_ONEDNN ? "onednn" : "builtin");
    cJSON_AddStringToObject(root, "kernels", as_op_kernels_info());
    cJSON_AddNumberToObject(root, "threads", (double)b.threads);
    cJSON_AddNumberToObject(root, "reps", b.R);
    cJSON_AddStringToObject(root, "clock", b.threads == 1 ? "thread_cpu" : "monotonic");
    rc = sgemm_peak(&b, root);
    if (!rc)
        rc = bench_convs(&b, root);
    if (!rc)
        rc = bench_linears(&b, root);
    if (!rc && b.json && as_cli_write_json("bench layers", b.json, root))
        rc = AS_EXIT_FAIL;
    cJSON_Delete(root);
    return rc;
}

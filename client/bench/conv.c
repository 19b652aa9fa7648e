/*
 * actstore bench conv [--json FILE] [--quick] [--wall] [--reps R] [--threads T]
 *                     [--cond-max C] [--no-adjoint] [--shape N:CIN:COUT:H:K:PAD]...
 *
 * Conv input regeneration by inversion against the conv forward it saves
 * memory for, side by side per shape: forward = the layers library's
 * im2col + OpenBLAS sgemm (as_op_conv_fwd); invert = rebuild X from Y, the
 * weights and the frame with the cached per-frequency factor (the factor
 * itself is built once per weight version and reported apart, factor_ms).
 * Both run on the same number of threads (default 1, --threads). Medians
 * over --reps repeats. Weights He-normal, inputs standard normal, fixed seed.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench.h"
#include "util/clock.h"
#include "cli.h"
#include "layers/ops.h"
#include "stats.h"
#include "store/policies/invert/conv_invert.h"
#include "util/rng.h"

typedef struct shape {
    int n, cin, cout, h, k, pad;
} shape;

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static double nrand(void) { return as_rng_normal_open(&rng); }

/* CPU time of the process by default (--wall: wall-clock time): on a
 * shared machine it leaves out the time other processes hold the cores,
 * and with one thread it is the time of the kernel measured. */
static clockid_t bench_clock = CLOCK_PROCESS_CPUTIME_ID;

static double now_ms(void) { return as_clock_s(bench_clock) * 1e3; }

/* Default set: every channel pair at 28x28 with k3 'same'; kernels 1/3/5 and
 * padding 0/same on 16/16 and 32/32 at 28x28, 14x14 and 7x7 and on 1/16 at
 * 28x28; 64x64 maps for the smaller channel counts (the largest ones take
 * seconds per forward). */
static size_t default_shapes(shape *out, size_t cap)
{
    static const int ch[][2] = {{1, 16}, {16, 16}, {16, 32}, {32, 32}, {32, 64}, {64, 64}};
    static const int kp[][2] = {{1, 0}, {3, 1}, {3, 0}, {5, 2}, {5, 0}};
    size_t n = 0;
#define ADD(ci, co, hh, kk, pp) do { if (n < cap) out[n++] = (shape){32, ci, co, hh, kk, pp}; } while (0)
    for (size_t c = 0; c < 6; c++)
        ADD(ch[c][0], ch[c][1], 28, 3, 1);
    static const int hs[] = {28, 14, 7};
    for (size_t hi = 0; hi < 3; hi++)
        for (size_t c = 1; c <= 3; c += 2)   /* 16/16, 32/32 */
            for (size_t k = 0; k < 5; k++) {
                if (hs[hi] == 28 && kp[k][0] == 3 && kp[k][1] == 1)
                    continue;   /* already in */
                ADD(ch[c][0], ch[c][1], hs[hi], kp[k][0], kp[k][1]);
            }
    for (size_t k = 0; k < 5; k++)   /* 1/16: the closed form */
        if (!(kp[k][0] == 3 && kp[k][1] == 1))
            ADD(1, 16, 28, kp[k][0], kp[k][1]);
    for (size_t c = 0; c < 4; c++)
        ADD(ch[c][0], ch[c][1], 64, 3, 1);
    ADD(1, 16, 64, 3, 0);
    ADD(1, 16, 64, 5, 2);
    ADD(16, 16, 64, 3, 0);
    ADD(16, 16, 64, 5, 2);
    ADD(64, 64, 14, 3, 1);
#undef ADD
    return n;
}

static size_t quick_shapes(shape *out)
{
    static const shape q[] = {
        {8, 1, 16, 28, 3, 1}, {8, 16, 16, 28, 3, 1}, {8, 16, 32, 14, 3, 0},
        {8, 16, 16, 7, 5, 2}, {8, 16, 16, 28, 1, 0},
    };
    memcpy(out, q, sizeof q);
    return sizeof q / sizeof q[0];
}

static void usage(FILE *f)
{
    fprintf(f,
        "usage: actstore bench conv [--json FILE] [--quick] [--wall] [--reps R] [--threads T]\n"
        "                           [--cond-max C] [--no-adjoint]\n"
        "                           [--shape N:CIN:COUT:H:K:PAD]...\n"
        "Conv input inversion vs conv forward (im2col + OpenBLAS sgemm), per shape:\n"
        "forward_ms, invert_ms (cached factor), factor_ms (once per weight version),\n"
        "ratio (median of invert/forward timed back to back), stream_ms and\n"
        "stream_ratio (restore that factors inside, as in training: adjoint path when\n"
        "Cout >= 2 Cin and cond <= 50; Cin = 1: the closed form, no factor),\n"
        "channels_read (Cin = 1), cond_ms (the check at save), max_rel_err\n"
        "(max|X'-X| / max|X|), cond, fallback, stored/raw bytes.\n"
        "  --quick        a few small shapes (N=8), seconds\n"
        "  --wall         wall-clock times (default: process CPU time, which leaves\n"
        "                 out time lost to other processes on a shared machine)\n"
        "  --reps R       repeats per measurement, median reported (default 3)\n"
        "  --threads T    OpenBLAS threads for the forward (default 1; the\n"
        "                 inversion is single-threaded)\n"
        "  --cond-max C   inversion threshold on cond(A(f)) (default 1e4)\n"
        "  --no-adjoint   streamed restores never take the adjoint path\n"
        "  --shape S      run only shape S = N:CIN:COUT:H:K:PAD (square map H x H,\n"
        "                 k x k kernel, padding PAD); repeatable, up to 64\n");
}

/* Runs one shape; fills the JSON object. Returns 0 or -1 (out of memory). */
static int no_adjoint;   /* --no-adjoint */

static int run_shape(const shape *s, int reps, double cond_max, cJSON *res)
{
    as_op_conv_geom og = {.N = s->n, .Cin = s->cin, .H = s->h, .W = s->h,
                          .Cout = s->cout, .kh = s->k, .kw = s->k, .stride = 1,
                          .pad = s->pad};
    if (as_op_conv_geom_init(&og))
        return -1;
    as__conv_geom g = {.n = s->n, .cin = s->cin, .h = s->h, .w = s->h,
                       .cout = s->cout, .kh = s->k, .kw = s->k, .pad_h = s->pad,
                       .pad_w = s->pad, .stride_h = 1, .stride_w = 1,
                       .dil_h = 1, .dil_w = 1, .groups = 1};
    const size_t xl = (size_t)s->n * s->cin * s->h * s->h;
    const size_t yl = (size_t)s->n * s->cout * og.Ho * og.Wo;
    const size_t wl = (size_t)s->cout * s->cin * s->k * s->k;
    const size_t fl = (size_t)s->n * s->cin * as__conv_frame_len(&g);
    float *x = malloc(sizeof(float) * xl), *xr = malloc(sizeof(float) * xl);
    float *y = malloc(sizeof(float) * yl), *w = malloc(sizeof(float) * wl);
    float *b = malloc(sizeof(float) * s->cout), *fr = malloc(sizeof(float) * (fl + 1));
    float *ws = malloc(sizeof(float) * as_op_conv_workspace(&og));
    double *tf = malloc(sizeof(double) * reps), *ti = malloc(sizeof(double) * reps);
    double *ts = malloc(sizeof(double) * reps);
    /* Forward times taken right before each inversion: the ratios are
     * medians of paired ratios, so load changes between shapes or phases
     * of the run cancel. */
    double *tfi = malloc(sizeof(double) * reps), *tfs = malloc(sizeof(double) * reps);
    double *qi = malloc(sizeof(double) * reps), *qs = malloc(sizeof(double) * reps);
    double ratio = NAN, sratio = NAN;
    as__conv_inv *cs = NULL;   /* a second solver for the streaming restore */
    double stream = NAN, cond_ms = NAN, serr = NAN;
    int adjoint = 0;
    as__conv_inv *ci = NULL;
    int rc = -1;
    if (!x || !xr || !y || !w || !b || !fr || !ws || !tf || !ti || !ts || !tfi || !tfs ||
        !qi || !qs)
        goto out;
    const double sd = sqrt(2.0 / (s->cin * s->k * s->k));
    for (size_t i = 0; i < wl; i++) w[i] = (float)(sd * nrand());
    for (int o = 0; o < s->cout; o++) b[o] = (float)(0.1 * nrand());
    for (size_t i = 0; i < xl; i++) x[i] = (float)nrand();

    for (int r = 0; r < reps; r++) {
        double t0 = now_ms();
        as_op_conv_fwd(&og, x, w, b, y, ws);
        tf[r] = now_ms() - t0;
    }
    double fwd = as_stats_median(tf, (size_t)reps);
    as__conv_frame_extract(&g, s->n, x, fr);

    char why[200] = "";
    as__conv_inv_cfg cfg = {.cond_max = cond_max, .eps_rel = -1, .no_adjoint = no_adjoint};
    double cond = NAN, inv = NAN, err = NAN, factor_ms = NAN;
    size_t cache = 0;
    int fallback = 0;
    int crc = as__conv_inv_create(&g, &cfg, &ci, why, sizeof why);
    if (crc == AS_ENOMEM)
        goto out;
    if (crc == 0) {
        crc = as__conv_inv_prepare(ci, w, 1, &cond, why, sizeof why);
        if (crc == AS_ENOMEM)
            goto out;
        as__conv_inv_stats st;
        as__conv_inv_get_stats(ci, &st);
        factor_ms = st.factor_ms;
        cache = st.cache_bytes;
    }
    if (crc == 0) {
        for (int r = 0; r < reps; r++) {
            double t0 = now_ms();
            as_op_conv_fwd(&og, x, w, b, y, ws);
            tfi[r] = now_ms() - t0;
            t0 = now_ms();
            if (as__conv_inv_prepare(ci, w, 1, NULL, NULL, 0) ||
                as__conv_inv_restore(ci, s->n, y, b, fr, xr))
                goto out;
            ti[r] = now_ms() - t0;
            qi[r] = ti[r] / tfi[r];
        }
        inv = as_stats_median(ti, (size_t)reps);
        ratio = as_stats_median(qi, (size_t)reps);
        as__conv_inv_stats st;
        as__conv_inv_get_stats(ci, &st);
        /* What the policy does per training step: the condition check at
         * save (once per version), then a restore that factors inside. */
        if (as__conv_inv_create(&g, &cfg, &cs, why, sizeof why))
            goto out;
        for (int r = 0; r < reps; r++) {
            if (as__conv_inv_condition(cs, w, (uint64_t)r + 1, NULL, NULL, 0))
                goto out;
            double t0 = now_ms();
            as_op_conv_fwd(&og, x, w, b, y, ws);
            tfs[r] = now_ms() - t0;
            t0 = now_ms();
            if (as__conv_inv_restore_stream(cs, w, (uint64_t)r + 1, s->n, y, b, fr, xr, NULL, 0))
                goto out;
            ts[r] = now_ms() - t0;
            qs[r] = ts[r] / tfs[r];
        }
        stream = as_stats_median(ts, (size_t)reps);
        sratio = as_stats_median(qs, (size_t)reps);
        as__conv_inv_stats ss;
        as__conv_inv_get_stats(cs, &ss);
        cond_ms = ss.cond_ms;
        adjoint = ss.adjoint > 0;
        {
            double e = 0, m = 0;
            for (size_t i = 0; i < xl; i++) {
                e = fmax(e, fabs((double)xr[i] - x[i]));
                m = fmax(m, fabs((double)x[i]));
            }
            serr = e / m;
        }
        /* xr back to the cached restore's output for the error below */
        if (as__conv_inv_restore(ci, s->n, y, b, fr, xr))
            goto out;
        if (s->cin == 1 && s->k > 1)   /* the closed form's channel pick */
            cJSON_AddNumberToObject(res, "channels_read", st.c1_channels);
        cJSON *ph = cJSON_AddObjectToObject(res, "invert_phases_ms");
        static const char *const names[] = {"build", "fft", "solve", "ifft", "crop"};
        for (int i = 0; i < 5; i++)
            cJSON_AddNumberToObject(ph, names[i], st.phase_ms[i]);
        if (getenv("AS_BENCH_PHASES"))
            printf("    phases ms: build %.2f fft %.2f solve %.2f ifft %.2f crop %.2f"
                   "  channels read %d\n", st.phase_ms[0], st.phase_ms[1], st.phase_ms[2],
                   st.phase_ms[3], st.phase_ms[4], s->cin == 1 ? st.c1_channels : s->cout);
        double e = 0, m = 0;
        for (size_t i = 0; i < xl; i++) {
            e = fmax(e, fabs((double)xr[i] - x[i]));
            m = fmax(m, fabs((double)x[i]));
        }
        err = e / m;
    } else {
        fallback = 1;
    }
    const double raw = 4.0 * xl, stored = fallback ? raw : 4.0 * fl;
    cJSON_AddNumberToObject(res, "n", s->n);
    cJSON_AddNumberToObject(res, "cin", s->cin);
    cJSON_AddNumberToObject(res, "cout", s->cout);
    cJSON_AddNumberToObject(res, "h", s->h);
    cJSON_AddNumberToObject(res, "w", s->h);
    cJSON_AddNumberToObject(res, "k", s->k);
    cJSON_AddNumberToObject(res, "pad", s->pad);
    cJSON_AddNumberToObject(res, "forward_ms", fwd);
#define NUM_OR_NULL(key, v) \
    do { if (isfinite(v)) cJSON_AddNumberToObject(res, key, v); else cJSON_AddNullToObject(res, key); } while (0)
    NUM_OR_NULL("invert_ms", inv);
    NUM_OR_NULL("ratio", ratio);
    NUM_OR_NULL("factor_ms", factor_ms);
    NUM_OR_NULL("stream_ms", stream);
    NUM_OR_NULL("stream_ratio", sratio);
    NUM_OR_NULL("cond_ms", cond_ms);
    NUM_OR_NULL("stream_max_rel_err", serr);
    NUM_OR_NULL("max_rel_err", err);
    NUM_OR_NULL("cond", cond);
#undef NUM_OR_NULL
    cJSON_AddBoolToObject(res, "fallback", fallback);
    if (!fallback)
        cJSON_AddStringToObject(res, "stream_path", s->cin == 1 && s->k > 1 ? "closed-form"
                                                    : adjoint ? "adjoint" : "direct");
    if (fallback)
        cJSON_AddStringToObject(res, "reason", why);
    cJSON_AddNumberToObject(res, "stored_bytes", stored);
    cJSON_AddNumberToObject(res, "raw_bytes", raw);
    cJSON_AddNumberToObject(res, "stored_over_raw", stored / raw);
    cJSON_AddNumberToObject(res, "factor_cache_bytes", (double)cache);
    printf("n %2d  %2d->%-2d  %2dx%-2d  k%d p%d  fwd %7.2f  inv %7.2f (x%5.2f)  "
           "stream %7.2f (x%5.2f, %s)  factor %6.1f  cond-check %6.1f ms  err %.1e/%.1e  "
           "cond %.3g  stored/raw %.3f%s%s\n",
           s->n, s->cin, s->cout, s->h, s->h, s->k, s->pad, fwd, inv, ratio,
           stream, sratio, s->cin == 1 && s->k > 1 ? "c1" : adjoint ? "adj" : "dir",
           factor_ms, cond_ms, err, serr,
           cond, stored / raw, fallback ? "  FALLBACK: " : "", fallback ? why : "");
    fflush(stdout);
    rc = 0;
out:
    as__conv_inv_destroy(ci);
    as__conv_inv_destroy(cs);
    free(ts); free(tfi); free(tfs); free(qi); free(qs);
    free(x); free(xr); free(y); free(w); free(b); free(fr); free(ws); free(tf); free(ti);
    return rc;
}

int as_bench_conv(int argc, char **argv)
{
    const char *json = NULL;
    int quick = 0;
    unsigned long long reps = 3, threads = 1;
    double cond_max = 1e4;
    shape shapes[64];
    size_t ns = 0;
    for (int i = 1; i < argc; i++) {
        if (as_cli_is_help(argv[i])) {
            usage(stdout);
            return AS_EXIT_OK;
        } else if (!strcmp(argv[i], "--quick")) {
            quick = 1;
        } else if (!strcmp(argv[i], "--no-adjoint")) {
            no_adjoint = 1;
        } else if (!strcmp(argv[i], "--wall")) {
            bench_clock = CLOCK_MONOTONIC;
        } else if (i + 1 < argc && !strcmp(argv[i], "--json")) {
            json = argv[++i];
        } else if (i + 1 < argc && !strcmp(argv[i], "--reps")) {
            if (as_cli_parse_u64("bench conv", "--reps", argv[++i], &reps) || reps < 1 || reps > 100)
                return as_cli_usage("bench conv", "--reps: expected 1..100");
        } else if (i + 1 < argc && !strcmp(argv[i], "--threads")) {
            if (as_cli_parse_u64("bench conv", "--threads", argv[++i], &threads) || threads > 64)
                return as_cli_usage("bench conv", "--threads: expected 0..64");
        } else if (i + 1 < argc && !strcmp(argv[i], "--cond-max")) {
            if (as_cli_parse_double("bench conv", "--cond-max", argv[++i], &cond_max) || !(cond_max > 1))
                return as_cli_usage("bench conv", "--cond-max: expected a number > 1");
        } else if (i + 1 < argc && !strcmp(argv[i], "--shape")) {
            shape sh;
            char tail;
            const char *a = argv[++i];
            if (sscanf(a, "%d:%d:%d:%d:%d:%d%c", &sh.n, &sh.cin, &sh.cout, &sh.h, &sh.k,
                       &sh.pad, &tail) != 6 || sh.n < 1 || sh.n > 4096 || sh.cin < 1 ||
                sh.cin > 1024 || sh.cout < 1 || sh.cout > 1024 || sh.h < 1 || sh.h > 1024 ||
                sh.k < 1 || sh.k > 16 || sh.pad < 0 || sh.pad > 16 ||
                sh.h + 2 * sh.pad < sh.k)
                return as_cli_usage("bench conv", "--shape '%s': expected N:CIN:COUT:H:K:PAD "
                                    "(N <= 4096, channels <= 1024, H <= 1024, K <= 16, "
                                    "PAD <= 16, H + 2 PAD >= K)", a);
            if (ns == 64)
                return as_cli_usage("bench conv", "--shape: at most 64 shapes");
            shapes[ns++] = sh;
        } else {
            return as_cli_usage("bench conv", "unexpected argument '%s'", argv[i]);
        }
    }
    if (threads)
        as_op_set_threads((int)threads);
    /* Warm-up: OpenBLAS's worker threads spin (sched_yield) for ~0.1 s of
     * CPU after their start before they sleep; that CPU time would land in
     * whichever shape runs first (process CPU clock). One small forward,
     * then a quarter second of sleep, before anything is measured. */
    {
        as_op_conv_geom wg = {.N = 1, .Cin = 1, .H = 8, .W = 8, .Cout = 1, .kh = 3, .kw = 3,
                              .stride = 1, .pad = 1};
        float wx[64] = {0}, ww[9] = {0}, wb[1] = {0}, wy[64];
        float *wsp = NULL;
        if (!as_op_conv_geom_init(&wg) &&
            (wsp = malloc(sizeof(float) * (as_op_conv_workspace(&wg) + 1))))
            as_op_conv_fwd(&wg, wx, ww, wb, wy, wsp);
        free(wsp);
        struct timespec ts = {0, 250000000};
        nanosleep(&ts, NULL);
    }
    if (!ns)
        ns = quick ? quick_shapes(shapes) : default_shapes(shapes, 64);
    cJSON *root = cJSON_CreateObject(), *arr = NULL;
    if (!root)
        return as_cli_fail("bench conv", "out of memory");
    cJSON_AddStringToObject(root, "bench", "conv");
    cJSON_AddNumberToObject(root, "threads", (double)threads);
    cJSON_AddNumberToObject(root, "reps", (double)reps);
    cJSON_AddNumberToObject(root, "cond_max", cond_max);
    cJSON_AddStringToObject(root, "clock", bench_clock == CLOCK_MONOTONIC ? "wall" : "process_cpu");
    cJSON_AddStringToObject(root, "blas_core", as_op_blas_core());
    arr = cJSON_AddArrayToObject(root, "results");
    double t0 = now_ms();
    for (size_t i = 0; i < ns; i++) {
        cJSON *r = cJSON_CreateObject();
        if (!r || run_shape(&shapes[i], (int)reps, cond_max, r)) {
            cJSON_Delete(r);
            cJSON_Delete(root);
            return as_cli_fail("bench conv", "out of memory at shape %zu", i);
        }
        cJSON_AddItemToArray(arr, r);
    }
    cJSON_AddNumberToObject(root, "total_s", (now_ms() - t0) / 1e3);
    int rc = json ? as_cli_write_json("bench conv", json, root) : 0;
    cJSON_Delete(root);
    return rc ? AS_EXIT_FAIL : AS_EXIT_OK;
}

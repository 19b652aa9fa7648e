/*
 * actstore bench conv [--json FILE] [--quick] [--wall] [--reps R] [--threads T]
 *                     [--cond-max C] [--no-adjoint] [--no-lu] [--shape N:CIN:COUT:H:K:PAD]...
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
        "                           [--cond-max C] [--no-adjoint] [--no-lu]\n"
        "                           [--shape N:CIN:COUT:H:K:PAD]...\n"
        "Conv input inversion vs conv forward (im2col + OpenBLAS sgemm), per shape:\n"
        "forward_ms, invert_ms (cached factor), factor_ms (once per weight version),\n"
        "ratio (median of invert/forward timed back to back), stream_ms and\n"
        "stream_ratio (restore that factors inside, as in training: adjoint path when\n"
        "Cout >= 2 Cin and cond <= 50; LU factors of A when Cout = Cin; Cin = 1: the\n"
        "closed form, no factor),\n"
        "channels_read (Cin = 1), cond_ms (the check at save), bound_ms and bounded (the\n"
        "next version's verdict after a small weight step: by the perturbation bound\n"
        "when bounded), max_rel_err\n"
        "(max|X'-X| / max|X|), cond, fallback, stored/raw bytes.\n"
        "  --quick        a few small shapes (N=8), seconds\n"
        "  --wall         wall-clock times (default: process CPU time, which leaves\n"
        "                 out time lost to other processes on a shared machine)\n"
        "  --reps R       repeats per measurement, median reported (default 3)\n"
        "  --threads T    OpenBLAS threads for the forward (default 1; the\n"
        "                 inversion is single-threaded)\n"
        "  --cond-max C   inversion threshold on cond(A(f)) (default 1e4)\n"
        "  --no-adjoint   streamed restores never take the adjoint path\n"
        "  --no-lu        streamed restores with Cout = Cin solve with M (the Gram\n"
        "                 route) instead of the LU factors of A\n"
        "  --shape S      run only shape S = N:CIN:COUT:H:K:PAD (square map H x H,\n"
        "                 k x k kernel, padding PAD); repeatable, up to 64\n");
}

/* Runs one shape; fills the JSON object. Returns 0 or -1 (out of memory). */
static int no_adjoint;   /* --no-adjoint */
static int no_lu;        /* --no-lu */

/* One shape's run: geometry, buffers, samples and results. */
typedef struct conv_run {
    const shape   *s;
    int            reps;
    as_op_conv_geom og;
    as__civ_geom  g;
    size_t         xl, yl, wl, fl;          /* input, output, weight, frame lengths */
    float         *x, *xr, *y, *w, *b, *fr, *ws;
    /* per repeat: forward, cached inversion, streamed restore; the forward
     * right before each inversion (paired ratios: load changes between
     * shapes or phases cancel); the ratios */
    double        *tf, *ti, *ts, *tfi, *tfs, *qi, *qs;
    as__civ  *ci, *cs;                 /* cached / streaming solver */
    void          *work;               /* restore work space, lent to both
                                          solvers (as the policy lends the
                                          store's arena: pages reused) */
    as__civ_stats st;                  /* of ci after its restores */
    double         fwd, inv, ratio, factor_ms, cond, stream, sratio, cond_ms, serr, err;
    double         bound_ms;            /* the next version's verdict (time_bound) */
    size_t         cache;
    int            fallback, adjoint, lu, bounded;
    char           why[200];
} conv_run;

static double max_rel_err(const float *x, const float *xr, size_t n)
{
    double e = 0, m = 0;
    for (size_t i = 0; i < n; i++) {
        e = fmax(e, fabs((double)xr[i] - x[i]));
        m = fmax(m, fabs((double)x[i]));
    }
    return e / m;
}

/* Buffers, He-initialised weights, Gaussian inputs. Returns 0 or -1. */
static int shape_alloc(conv_run *r)
{
    const shape *s = r->s;
    r->og = (as_op_conv_geom){.N = s->n, .Cin = s->cin, .H = s->h, .W = s->h,
                              .Cout = s->cout, .kh = s->k, .kw = s->k, .stride = 1,
                              .pad = s->pad};
    if (as_op_conv_geom_init(&r->og))
        return -1;
    r->g = (as__civ_geom){.n = s->n, .cin = s->cin, .h = s->h, .w = s->h,
                           .cout = s->cout, .kh = s->k, .kw = s->k, .pad_h = s->pad,
                           .pad_w = s->pad, .stride_h = 1, .stride_w = 1,
                           .dil_h = 1, .dil_w = 1, .groups = 1};
    r->xl = (size_t)s->n * s->cin * s->h * s->h;
    r->yl = (size_t)s->n * s->cout * r->og.Ho * r->og.Wo;
    r->wl = (size_t)s->cout * s->cin * s->k * s->k;
    r->fl = (size_t)s->n * s->cin * as__civ_frame_len(&r->g);
    r->x = malloc(sizeof(float) * r->xl);
    r->xr = malloc(sizeof(float) * r->xl);
    r->y = malloc(sizeof(float) * r->yl);
    r->w = malloc(sizeof(float) * r->wl);
    r->b = malloc(sizeof(float) * s->cout);
    r->fr = malloc(sizeof(float) * (r->fl + 1));
    r->ws = malloc(sizeof(float) * as_op_conv_workspace(&r->og));
    double **t[] = {&r->tf, &r->ti, &r->ts, &r->tfi, &r->tfs, &r->qi, &r->qs};
    bool ok = r->x && r->xr && r->y && r->w && r->b && r->fr && r->ws;
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        ok = (*t[i] = malloc(sizeof(double) * r->reps)) && ok;
    if (!ok)
        return -1;
    const double sd = sqrt(2.0 / (s->cin * s->k * s->k));
    for (size_t i = 0; i < r->wl; i++) r->w[i] = (float)(sd * nrand());
    for (int o = 0; o < s->cout; o++) r->b[o] = (float)(0.1 * nrand());
    for (size_t i = 0; i < r->xl; i++) r->x[i] = (float)nrand();
    return 0;
}

static void shape_free(conv_run *r)
{
    as__civ_destroy(r->ci);
    as__civ_destroy(r->cs);
    free(r->work);
    free(r->ts); free(r->tfi); free(r->tfs); free(r->qi); free(r->qs);
    free(r->x); free(r->xr); free(r->y); free(r->w); free(r->b); free(r->fr); free(r->ws);
    free(r->tf); free(r->ti);
}

static void time_forward(conv_run *r)
{
    for (int k = 0; k < r->reps; k++) {
        double t0 = now_ms();
        as_op_conv_fwd(&r->og, r->x, r->w, r->b, r->y, r->ws);
        r->tf[k] = now_ms() - t0;
    }
    r->fwd = as_stats_median(r->tf, (size_t)r->reps);
    as__civ_frame_extract(&r->g, r->s->n, r->x, r->fr);
}

/* Lend the solver a work block of as__civ_work_bytes (allocated and
 * touched once per shape), as the policy lends the store's arena in
 * training: a restore then pays no page faults for its work space (a fresh
 * malloc of a large block does: on 64x64 maps that was most of a streamed
 * restore's time). Without memory the solver mallocs its own. */
static void lend_work(conv_run *r, as__civ *ci)
{
    const size_t wb = as__civ_work_bytes(ci, r->s->n);
    if (!r->work && wb && !(r->work = aligned_alloc(64, (wb + 63) / 64 * 64)))
        return;
    if (r->work) {
        memset(r->work, 0, wb);
        as__civ_set_work(ci, r->work, wb);
    }
}

/* The cached solver: factor once, then time restores against the forward
 * right before each. Returns 0, 1 (the shape falls back: r->why), or -1. */
static int time_cached(conv_run *r, const as__civ_cfg *cfg)
{
    int crc = as__civ_create(&r->g, cfg, &r->ci, r->why, sizeof r->why);
    if (crc == 0)
        crc = as__civ_prepare(r->ci, r->w, 1, &r->cond, r->why, sizeof r->why);
    if (crc == AS_ENOMEM)
        return -1;
    if (crc)
        return 1;
    lend_work(r, r->ci);
    as__civ_get_stats(r->ci, &r->st);
    r->factor_ms = r->st.factor_ms;
    r->cache = r->st.cache_bytes;
    for (int k = 0; k < r->reps; k++) {
        double t0 = now_ms();
        as_op_conv_fwd(&r->og, r->x, r->w, r->b, r->y, r->ws);
        r->tfi[k] = now_ms() - t0;
        t0 = now_ms();
        if (as__civ_prepare(r->ci, r->w, 1, NULL, NULL, 0) ||
            as__civ_restore(r->ci, r->s->n, r->y, r->b, r->fr, r->xr))
            return -1;
        r->ti[k] = now_ms() - t0;
        r->qi[k] = r->ti[k] / r->tfi[k];
    }
    r->inv = as_stats_median(r->ti, (size_t)r->reps);
    r->ratio = as_stats_median(r->qi, (size_t)r->reps);
    as__civ_get_stats(r->ci, &r->st);
    return 0;
}

/* What the policy does per training step: the condition check at save
 * (once per version), then a restore that factors inside. Returns 0 or -1. */
static int time_streamed(conv_run *r, const as__civ_cfg *cfg)
{
    as__civ_cfg scfg = *cfg;
    scfg.no_bound = 1;   /* every version checked, as after a weight jump */
    if (as__civ_create(&r->g, &scfg, &r->cs, r->why, sizeof r->why))
        return -1;
    lend_work(r, r->cs);
    for (int k = 0; k < r->reps; k++) {
        if (as__civ_condition(r->cs, r->w, (uint64_t)k + 1, NULL, NULL, 0))
            return -1;
        double t0 = now_ms();
        as_op_conv_fwd(&r->og, r->x, r->w, r->b, r->y, r->ws);
        r->tfs[k] = now_ms() - t0;
        t0 = now_ms();
        if (as__civ_restore_stream(r->cs, r->w, (uint64_t)k + 1, r->s->n, r->y, r->b,
                                        r->fr, r->xr, NULL, 0))
            return -1;
        r->ts[k] = now_ms() - t0;
        r->qs[k] = r->ts[k] / r->tfs[k];
    }
    r->stream = as_stats_median(r->ts, (size_t)r->reps);
    r->sratio = as_stats_median(r->qs, (size_t)r->reps);
    as__civ_stats ss;
    as__civ_get_stats(r->cs, &ss);
    r->cond_ms = ss.cond_ms;
    r->adjoint = ss.adjoint > 0;
    r->lu = ss.lu > 0;
    r->serr = max_rel_err(r->x, r->xr, r->xl);
    /* xr back to the cached restore's output for its error */
    if (as__civ_restore(r->ci, r->s->n, r->y, r->b, r->fr, r->xr))
        return -1;
    r->err = max_rel_err(r->x, r->xr, r->xl);
    return 0;
}

/* The verdict of the next weight version when it is one small step away
 * (every weight moved by 1e-4 of the He scale, deterministically, about an
 * SGD step): its time and whether the perturbation bound gave it
 * (r->bounded) instead of a condition check. */
static void time_bound(conv_run *r, const as__civ_cfg *cfg)
{
    as__civ *cb = NULL;
    float *w2 = malloc(sizeof(float) * r->wl);
    const as__civ_geom *g = &r->g;
    if (w2 && !as__civ_create(g, cfg, &cb, NULL, 0) &&
        as__civ_condition(cb, r->w, 1, NULL, NULL, 0) != AS_ENOMEM) {
        const double sd = sqrt(2.0 / (g->cin * g->kh * g->kw));
        for (size_t i = 0; i < r->wl; i++)
            w2[i] = r->w[i] + (float)(1e-4 * sd * ((double)(i * 2654435761u % 2001) / 1000.0 - 1.0));
        const double t0 = now_ms();
        const int rc = as__civ_condition(cb, w2, 2, NULL, NULL, 0);
        r->bound_ms = now_ms() - t0;
        as__civ_stats st;
        as__civ_get_stats(cb, &st);
        r->bounded = rc != AS_ENOMEM && st.cond_bounded == 1;
    }
    as__civ_destroy(cb);
    free(w2);
}

/* The cached solver's phases (and, for Cin = 1, its channel pick). */
static void phases_json(const conv_run *r, cJSON *res)
{
    const shape *s = r->s;
    if (s->cin == 1 && s->k > 1)
        cJSON_AddNumberToObject(res, "channels_read", r->st.c1_channels);
    cJSON *ph = cJSON_AddObjectToObject(res, "invert_phases_ms");
    static const char *const names[] = {"build", "fft", "solve", "ifft", "crop"};
    for (int i = 0; i < 5; i++)
        cJSON_AddNumberToObject(ph, names[i], r->st.phase_ms[i]);
    if (getenv("AS_BENCH_PHASES"))
        printf("    phases ms: build %.2f fft %.2f solve %.2f ifft %.2f crop %.2f"
               "  channels read %d\n", r->st.phase_ms[0], r->st.phase_ms[1],
               r->st.phase_ms[2], r->st.phase_ms[3], r->st.phase_ms[4],
               s->cin == 1 ? r->st.c1_channels : s->cout);
}

static void num_or_null(cJSON *res, const char *key, double v)
{
    if (isfinite(v))
        cJSON_AddNumberToObject(res, key, v);
    else
        cJSON_AddNullToObject(res, key);
}

static const char *stream_path(const conv_run *r, bool brief)
{
    if (r->s->cin == 1 && r->s->k > 1)
        return brief ? "c1" : "closed-form";
    if (r->lu)
        return "lu";
    return r->adjoint ? (brief ? "adj" : "adjoint") : (brief ? "dir" : "direct");
}

static void shape_report(const conv_run *r, cJSON *res)
{
    const shape *s = r->s;
    const double raw = 4.0 * r->xl, stored = r->fallback ? raw : 4.0 * r->fl;
    cJSON_AddNumberToObject(res, "n", s->n);
    cJSON_AddNumberToObject(res, "cin", s->cin);
    cJSON_AddNumberToObject(res, "cout", s->cout);
    cJSON_AddNumberToObject(res, "h", s->h);
    cJSON_AddNumberToObject(res, "w", s->h);
    cJSON_AddNumberToObject(res, "k", s->k);
    cJSON_AddNumberToObject(res, "pad", s->pad);
    cJSON_AddNumberToObject(res, "forward_ms", r->fwd);
    num_or_null(res, "invert_ms", r->inv);
    num_or_null(res, "ratio", r->ratio);
    num_or_null(res, "factor_ms", r->factor_ms);
    num_or_null(res, "stream_ms", r->stream);
    num_or_null(res, "stream_ratio", r->sratio);
    num_or_null(res, "cond_ms", r->cond_ms);
    num_or_null(res, "bound_ms", r->bound_ms);
    num_or_null(res, "stream_max_rel_err", r->serr);
    num_or_null(res, "max_rel_err", r->err);
    num_or_null(res, "cond", r->cond);
    cJSON_AddBoolToObject(res, "fallback", r->fallback);
    if (!r->fallback) {
        cJSON_AddStringToObject(res, "stream_path", stream_path(r, false));
        cJSON_AddBoolToObject(res, "bounded", r->bounded);
    }
    if (r->fallback)
        cJSON_AddStringToObject(res, "reason", r->why);
    cJSON_AddNumberToObject(res, "stored_bytes", stored);
    cJSON_AddNumberToObject(res, "raw_bytes", raw);
    cJSON_AddNumberToObject(res, "stored_over_raw", stored / raw);
    cJSON_AddNumberToObject(res, "factor_cache_bytes", (double)r->cache);
    printf("n %2d  %2d->%-2d  %2dx%-2d  k%d p%d  fwd %7.2f  inv %7.2f (x%5.2f)  "
           "stream %7.2f (x%5.2f, %s)  factor %6.1f  cond-check %6.1f ms (next %s %.2f)  "
           "err %.1e/%.1e  "
           "cond %.3g  stored/raw %.3f%s%s\n",
           s->n, s->cin, s->cout, s->h, s->h, s->k, s->pad, r->fwd, r->inv, r->ratio,
           r->stream, r->sratio, stream_path(r, true), r->factor_ms, r->cond_ms,
           r->bounded ? "bound" : "check", r->bound_ms, r->err,
           r->serr, r->cond, stored / raw, r->fallback ? "  FALLBACK: " : "",
           r->fallback ? r->why : "");
    fflush(stdout);
}

static int run_shape(const shape *s, int reps, double cond_max, cJSON *res)
{
    conv_run r = {.s = s, .reps = reps, .inv = NAN, .ratio = NAN, .factor_ms = NAN,
                  .cond = NAN, .stream = NAN, .sratio = NAN, .cond_ms = NAN, .serr = NAN,
                  .err = NAN, .bound_ms = NAN};
    as__civ_cfg cfg = {.cond_max = cond_max, .eps_rel = -1, .no_adjoint = no_adjoint,
                       .no_lu = no_lu};
    int rc = shape_alloc(&r);
    if (!rc) {
        time_forward(&r);
        rc = time_cached(&r, &cfg);
        r.fallback = rc == 1;
        if (rc == 0)
            rc = time_streamed(&r, &cfg);
        if (rc == 0)
            time_bound(&r, &cfg);
        else if (rc == 1)
            rc = 0;
    }
    if (!rc) {
        if (!r.fallback)
            phases_json(&r, res);
        shape_report(&r, res);
    }
    shape_free(&r);
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
        const char *v;
        if (as_cli_is_help(argv[i])) {
            usage(stdout);
            return AS_EXIT_OK;
        } else if (!strcmp(argv[i], "--quick")) {
            quick = 1;
        } else if (!strcmp(argv[i], "--no-adjoint")) {
            no_adjoint = 1;
        } else if (!strcmp(argv[i], "--no-lu")) {
            no_lu = 1;
        } else if (!strcmp(argv[i], "--wall")) {
            bench_clock = CLOCK_MONOTONIC;
        } else if ((v = as_cli_flag_value(argc, argv, &i, "--json"))) {
            json = v;
        } else if ((v = as_cli_flag_value(argc, argv, &i, "--reps"))) {
            if (as_cli_parse_u64_in("bench conv", "--reps", v, 1, 100, &reps))
                return AS_EXIT_USAGE;
        } else if ((v = as_cli_flag_value(argc, argv, &i, "--threads"))) {
            if (as_cli_parse_u64_in("bench conv", "--threads", v, 0, 64, &threads))
                return AS_EXIT_USAGE;
        } else if ((v = as_cli_flag_value(argc, argv, &i, "--cond-max"))) {
            if (as_cli_parse_double_in("bench conv", "--cond-max", v, 1, HUGE_VAL, &cond_max))
                return AS_EXIT_USAGE;
        } else if ((v = as_cli_flag_value(argc, argv, &i, "--shape"))) {
            shape sh;
            char tail;
            const char *a = v;
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

/*
 * actstore bench store: save + restore throughput and stored/raw ratio of
 * every codec on three kinds of f32 tensors (64 MiB by default), with a
 * memcpy row measured in the same run as the reference.
 *
 * Tensors: "relu" (half exact zeros, the rest positive: max(N(0,1), 0)),
 * "softmax" (rows of 256 probabilities, softmax of N(0, 2) logits),
 * "gaussian" (N(0,1)).
 * Rows: keep_adopt (a block of the store's arena handed over with
 * as_store_save_adopt, restored with as_store_restore_view: both
 * zero-copy), keep (one copy at save, restore into a caller buffer), zstd
 * (level 1), fp16, bf16, q8, q4, q2 (group 256), offload (save = staging
 * copy + queueing the background write; restore after the write finished
 * = read the file, verify, copy), memcpy (src -> a pre-faulted buffer).
 * Every restore goes into the same pre-faulted caller buffer; every repeat
 * measures every cell once, cells interleaved, and the figures are medians
 * over the repeats. bytes_stored is the store's stored_live for the item
 * after the save (offload: after the write, i.e. bytes left in memory).
 * Every time is taken on two clocks: the wall clock (save_gbps,
 * restore_gbps) and the calling thread's CPU time (save_gbps_cpu,
 * restore_gbps_cpu), which on a loaded shared machine leaves out the time
 * spent waiting for a core; the targets are checked on both.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "actstore/store.h"
#include "bench.h"
#include "util/clock.h"
#include "util/rng.h"
#include "cli.h"
#include "stats.h"
#include "store/policies/quant.h"   /* as__offload_wait_idle */

#define CMD "bench store"

enum { T_RELU, T_SOFTMAX, T_GAUSS, NTENSORS };
static const char *const tensor_name[NTENSORS] = {"relu", "softmax", "gaussian"};

enum { P_MEMCPY, P_KEEP_ADOPT, P_KEEP, P_ZSTD, P_FP16, P_BF16, P_Q8, P_Q4, P_Q2,
       P_OFFLOAD, P_AQ8, P_AQ4, P_AQ3, P_AQ2, P_AQ3ROT, P_AQ2ROT, NPOL };
static const char *const pol_name[NPOL] = {"memcpy", "keep_adopt", "keep", "zstd", "fp16",
                                           "bf16", "q8", "q4", "q2", "offload",
                                           "aq:8", "aq:4", "aq:3", "aq:2", "aq:3:rot",
                                           "aq:2:rot"};
static const char *const pol_spec[NPOL] = {NULL, "default=keep", "default=keep",
                                           "default=zstd:1", "default=fp16", "default=bf16",
                                           "default=q8", "default=q4", "default=q2",
                                           "default=offload", "default=aq:8",
                                           "default=aq:4", "default=aq:3", "default=aq:2",
                                           "default=aq:3:rot", "default=aq:2:rot"};

#define ADOPT_BATCH 17   /* keep_adopt: 1 filled + 16 timed blocks */

typedef struct cell {
    double *save_s, *restore_s;   /* per repeat, wall clock */
    double *save_c, *restore_c;   /* per repeat, thread CPU time */
    double *cold_s;               /* keep_adopt: first call after the write */
    uint64_t stored;
    double   max_err;
} cell;

/* A time stamp: wall clock and the calling thread's CPU time. On a
 * shared, loaded machine the wall clock of a call includes the time the
 * thread waited for a core; the CPU time is what one core spent on it
 * (page faults included). Both are reported. */
typedef struct stamp_t {
    uint64_t wall, cpu;
} stamp_t;

static stamp_t stamp(void)
{
    stamp_t t = {as_clock_ns(CLOCK_MONOTONIC), as_clock_ns(CLOCK_THREAD_CPUTIME_ID)};
    return t;
}

static double wall_s(stamp_t a, stamp_t b) { return (double)(b.wall - a.wall) * 1e-9; }
static double cpu_s(stamp_t a, stamp_t b) { return (double)(b.cpu - a.cpu) * 1e-9; }

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static double uniform01(void) { return as_rng_u01_open(&rng); }

/* Two N(0,1) draws (Box-Muller). */
static void gauss2(float *a, float *b)
{
    double r = sqrt(-2.0 * log(uniform01())), t = 2.0 * M_PI * uniform01();
    *a = (float)(r * cos(t));
    *b = (float)(r * sin(t));
}

static void fill(int kind, float *x, size_t n)
{
    for (size_t i = 0; i + 1 < n; i += 2)
        gauss2(&x[i], &x[i + 1]);
    if (n % 2)
        x[n - 1] = 0.5f;
    if (kind == T_RELU) {
        for (size_t i = 0; i < n; i++)
            x[i] = x[i] > 0 ? x[i] : 0.0f;
    } else if (kind == T_SOFTMAX) {
        const size_t L = 256;
        for (size_t r = 0; r + L <= n; r += L) {
            float *row = x + r, mx = -INFINITY;
            for (size_t j = 0; j < L; j++) {
                row[j] *= 2.0f;
                mx = row[j] > mx ? row[j] : mx;
            }
            double sum = 0;
            for (size_t j = 0; j < L; j++)
                sum += row[j] = expf(row[j] - mx);
            for (size_t j = 0; j < L; j++)
                row[j] = (float)(row[j] / sum);
        }
    }
}

static double max_abs_err(const float *a, const float *b, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > m || d != d)
            m = d;
    }
    return m;
}

static uint64_t stored_live(as_store *s)
{
    as_store_stats st;
    if (as_store_stats_take(s, &st) != 0)
        return 0;
    uint64_t v = st.total.stored_live;
    as_store_stats_free(&st);
    return v;
}

/* One measurement of one cell. Returns 0 or an exit code. */
static int run_cell(as_store *s, int pol, int kind, const float *src, float *dst,
                    size_t n, cell *c, unsigned long rep)
{
    size_t bytes = n * sizeof(float);
    as_tensor t = {.data = (void *)src, .dtype = AS_F32, .ndim = 2,
                   .shape = {(int64_t)(n / 256), 256}};
    as_save_info info = {.kind = AS_KIND_ACTIVATION_OUTPUT, .layer = tensor_name[kind]};
    if (pol == P_MEMCPY) {
        stamp_t t0 = stamp();
        memcpy(dst, src, bytes);
        stamp_t t1 = stamp();
        memcpy(dst, src, bytes);
        stamp_t t2 = stamp();
        c->save_s[rep] = wall_s(t0, t1);
        c->restore_s[rep] = wall_s(t1, t2);
        c->save_c[rep] = cpu_s(t0, t1);
        c->restore_c[rep] = cpu_s(t1, t2);
        c->max_err = max_abs_err(src, dst, n);
        return 0;
    }
    char err[256];
    if (as_store_set_policy(s, pol_spec[pol], err, sizeof err) != 0)
        return as_cli_fail(CMD, "policy %s: %s", pol_spec[pol], err);
    uint64_t before = stored_live(s);
    as_handle h;
    int rc;
    stamp_t t0, t1, t2, t3;
    if (pol == P_KEEP_ADOPT) {
        /* First one block holding the tensor (the framework just wrote it):
         * the values come back exactly, and the time of that single call
         * right after a 64 MiB write is kept as the "cold" figure. Then the
         * store's own cost: ADOPT_BATCH blocks of the same size handed over
         * back to back (the store never touches the data, so they are not
         * filled), timed per call. */
        as_block b[ADOPT_BATCH];
        as_handle hb[ADOPT_BATCH];
        const as_tensor *v;
        for (int i = 0; i < ADOPT_BATCH; i++) {
            rc = as_alloc(as_store_arena(s), bytes, AS_TAG_ACTIVATIONS, AS_LAYER_NONE, &b[i]);
            if (rc != 0) {
                while (i-- > 0)
                    as_free(as_store_arena(s), &b[i]);
                return as_cli_fail(CMD, "as_alloc: %s", as_strerror(rc));
            }
        }
        memcpy(b[0].ptr, src, bytes);
        t.data = b[0].ptr;
        t0 = stamp();
        rc = as_store_save_adopt(s, &info, &t, &b[0], &hb[0]);
        if (rc == 0)
            rc = as_store_restore_view(s, hb[0], &v);
        t1 = stamp();
        if (rc == 0) {
            c->max_err = max_abs_err(src, v->data, n);
            c->stored = stored_live(s) - before;
            c->cold_s[rep] = wall_s(t0, t1);
        }
        int ok = rc == 0 ? 1 : 0;
        t0 = stamp();
        for (int i = 1; i < ADOPT_BATCH && rc == 0; i++, ok++) {
            t.data = b[i].ptr;
            rc = as_store_save_adopt(s, &info, &t, &b[i], &hb[i]);
        }
        t1 = t2 = stamp();
        for (int i = 1; i < ok && rc == 0; i++)
            rc = as_store_restore_view(s, hb[i], &v);
        t3 = stamp();
        for (int i = 0; i < ADOPT_BATCH; i++) {
            if (i < ok)
                as_store_release(s, hb[i]);
            else
                as_free(as_store_arena(s), &b[i]);
        }
        if (rc != 0)
            return as_cli_fail(CMD, "keep_adopt: %s", as_store_last_error(s));
        c->save_s[rep] = wall_s(t0, t1) / (ADOPT_BATCH - 1);
        c->restore_s[rep] = wall_s(t2, t3) / (ADOPT_BATCH - 1);
        c->save_c[rep] = cpu_s(t0, t1) / (ADOPT_BATCH - 1);
        c->restore_c[rep] = cpu_s(t2, t3) / (ADOPT_BATCH - 1);
        return 0;
    } else {
        t0 = stamp();
        rc = as_store_save(s, &info, &t, &h);
        t1 = stamp();
        if (rc != 0)
            return as_cli_fail(CMD, "save (%s): %s", pol_name[pol], as_store_last_error(s));
        if (pol == P_OFFLOAD)
            as__offload_wait_idle();   /* restore reads the file back */
        c->stored = stored_live(s) - before;
        as_tensor d = t;
        d.data = dst;
        t2 = stamp();
        rc = as_store_restore(s, h, &d);
        t3 = stamp();
        if (rc == 0)
            c->max_err = max_abs_err(src, dst, n);
    }
    if (rc != 0) {
        as_store_release(s, h);
        return as_cli_fail(CMD, "restore (%s): %s", pol_name[pol], as_store_last_error(s));
    }
    if (pol == P_OFFLOAD && strncmp(as_store_policy_of(s, h), "offload", 7) != 0) {
        as_store_release(s, h);
        return as_cli_fail(CMD, "offload did not apply: %s", as_store_policy_of(s, h));
    }
    as_store_release(s, h);
    c->save_s[rep] = wall_s(t0, t1);
    c->restore_s[rep] = wall_s(t2, t3);
    c->save_c[rep] = cpu_s(t0, t1);
    c->restore_c[rep] = cpu_s(t2, t3);
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: actstore bench store [--json FILE] [--repeats N] [--mib N]\n"
            "                            [--offload-dir DIR]\n\n"
            "Save and restore throughput (GB/s, medians over repeats) and stored/raw\n"
            "ratio of keep (adopted and copied), zstd, fp16, bf16, q8, q4, q2 and\n"
            "offload on ReLU-like, softmax-like and Gaussian f32 tensors, with a\n"
            "memcpy row measured in the same run; checks the store's targets.\n\n"
            "  --json FILE        write {\"bench\":\"store\",\"results\":[...]} (\"-\" = stdout)\n"
            "  --repeats N        repeats per cell, interleaved (default 5)\n"
            "  --mib N            tensor size in MiB (default 64)\n"
            "  --offload-dir DIR  directory of the offload files (default $TMPDIR or /tmp)\n");
}

/* One run of the bench: options, tensors, cells and their medians. */
typedef struct store_bench {
    const char *json_path, *odir;
    unsigned long long repeats, mib;
    size_t   n, bytes;                      /* f32 values and bytes per tensor */
    float   *src[NTENSORS], *dst;
    double  *times;                         /* the cells' sample arrays */
    cell     cells[NPOL][NTENSORS];
    double   sg[2][NPOL][NTENSORS], rg[2][NPOL][NTENSORS];   /* GB/s: [0] wall, [1] CPU */
} store_bench;

/* Returns AS_CLI_RUN, or an exit code after --help or a usage error. */
static int parse_args(store_bench *b, int argc, char **argv)
{
    const as_cli_flag flags[] = {
        {"--json", AS_CLI_STR, &b->json_path, 0, 0},
        {"--offload-dir", AS_CLI_STR, &b->odir, 0, 0},
        {"--repeats", AS_CLI_U64, &b->repeats, 1, 100},
        {"--mib", AS_CLI_U64, &b->mib, 1, 1024},
    };
    return as_cli_parse_flags(CMD, flags, sizeof flags / sizeof flags[0], usage, argc, argv);
}

/* The tensors (filled), the caller buffer (pre-faulted) and the cells'
 * sample arrays. Returns 0 or -1 (out of memory). */
static int bench_alloc(store_bench *b)
{
    b->n = (size_t)b->mib << 18;   /* mib MiB of f32 */
    b->bytes = b->n * sizeof(float);
    b->dst = malloc(b->bytes);
    for (int k = 0; k < NTENSORS; k++)
        b->src[k] = malloc(b->bytes);
    size_t r = b->repeats;
    b->times = calloc(5 * NPOL * NTENSORS * r, sizeof *b->times);
    if (!b->dst || !b->src[0] || !b->src[1] || !b->src[2] || !b->times)
        return -1;
    for (int k = 0; k < NTENSORS; k++)
        fill(k, b->src[k], b->n);
    memset(b->dst, 0, b->bytes);
    for (int p = 0; p < NPOL; p++)
        for (int k = 0; k < NTENSORS; k++) {
            cell *c = &b->cells[p][k];
            memset(c, 0, sizeof *c);
            c->save_s = b->times + ((size_t)(p * NTENSORS + k) * 5) * r;
            c->restore_s = c->save_s + r;
            c->cold_s = c->restore_s + r;
            c->save_c = c->cold_s + r;
            c->restore_c = c->save_c + r;
        }
    return 0;
}

/* A warm-up pass, then every cell `repeats` times in a rotating order;
 * then the medians in GB/s. Returns an exit code. */
static int bench_measure(store_bench *b, as_store *s)
{
    int status = AS_EXIT_OK;
    /* warm-up: one pass of every cell (page faults, pools, the I/O thread) */
    for (int p = 0; p < NPOL && status == AS_EXIT_OK; p++)
        status = run_cell(s, p, T_GAUSS, b->src[T_GAUSS], b->dst, b->n,
                          &b->cells[p][T_GAUSS], 0);
    for (unsigned long r = 0; r < b->repeats && status == AS_EXIT_OK; r++)
        for (int q = 0; q < NPOL * NTENSORS && status == AS_EXIT_OK; q++) {
            int idx = (int)((q + r * 7) % (NPOL * NTENSORS));   /* rotate the order */
            int p = idx / NTENSORS, k = idx % NTENSORS;
            status = run_cell(s, p, k, b->src[k], b->dst, b->n, &b->cells[p][k], r);
        }
    double bytes = (double)b->bytes;
    for (int p = 0; p < NPOL; p++)
        for (int k = 0; k < NTENSORS; k++) {
            cell *c = &b->cells[p][k];
            b->sg[0][p][k] = bytes / as_stats_median(c->save_s, b->repeats) * 1e-9;
            b->rg[0][p][k] = bytes / as_stats_median(c->restore_s, b->repeats) * 1e-9;
            b->sg[1][p][k] = bytes / as_stats_median(c->save_c, b->repeats) * 1e-9;
            b->rg[1][p][k] = bytes / as_stats_median(c->restore_c, b->repeats) * 1e-9;
        }
    return status;
}

/* The table of cells, printed and added to root's "results". */
static void report_cells(const store_bench *b, cJSON *root)
{
    cJSON *results = cJSON_AddArrayToObject(root, "results");
    double bytes = (double)b->bytes;
    printf("%-10s %-8s %8s | %8s %8s %7s | %8s %8s %7s | %9s\n", "", "", "",
           "wall", "", "", "cpu", "", "", "");
    printf("%-10s %-8s %8s | %8s %8s %7s | %8s %8s %7s | %9s\n", "policy", "tensor",
           "raw/stor", "save", "restore", "rest/mc", "save", "restore", "rest/mc", "max err");
    for (int p = 1; p <= NPOL; p++) {
        int pp = p % NPOL;   /* memcpy last */
        for (int k = 0; k < NTENSORS; k++) {
            const cell *c = &b->cells[pp][k];
            uint64_t stored = pp == P_MEMCPY ? b->bytes : c->stored;
            cJSON *e = cJSON_CreateObject();
            cJSON_AddStringToObject(e, "policy", pol_name[pp]);
            cJSON_AddStringToObject(e, "tensor", tensor_name[k]);
            cJSON_AddNumberToObject(e, "bytes_raw", bytes);
            cJSON_AddNumberToObject(e, "bytes_stored", (double)stored);
            cJSON_AddNumberToObject(e, "save_gbps", b->sg[0][pp][k]);
            cJSON_AddNumberToObject(e, "restore_gbps", b->rg[0][pp][k]);
            cJSON_AddNumberToObject(e, "max_abs_err", c->max_err);
            cJSON_AddNumberToObject(e, "save_gbps_cpu", b->sg[1][pp][k]);
            cJSON_AddNumberToObject(e, "restore_gbps_cpu", b->rg[1][pp][k]);
            cJSON_AddItemToArray(results, e);
            char ratio[32];
            if (stored)
                snprintf(ratio, sizeof ratio, "%.2fx", bytes / (double)stored);
            else
                snprintf(ratio, sizeof ratio, "inf");
            printf("%-10s %-8s %8s | %8.4g %8.4g %6.2fx | %8.4g %8.4g %6.2fx | %9.3g\n",
                   pol_name[pp], tensor_name[k], ratio, b->sg[0][pp][k], b->rg[0][pp][k],
                   b->rg[0][pp][k] / b->rg[0][P_MEMCPY][k], b->sg[1][pp][k], b->rg[1][pp][k],
                   b->rg[1][pp][k] / b->rg[1][P_MEMCPY][k], c->max_err);
        }
    }
    printf("(GB/s; rest/mc = restore / memcpy of the same tensor in the same run)\n");
}

/* The targets of the store (docs/benchmarks.md "## Store"), on both
 * clocks, worst tensor; printed and added to root. */
static void report_targets(const store_bench *b, cJSON *root)
{
    double bytes = (double)b->bytes;
    double zr = bytes / (double)b->cells[P_ZSTD][T_RELU].stored;
    struct { const char *what; bool ok[2]; char fig[2][64]; } tg[4];
    tg[0].what = "keep adopted save+restore < 1 us";
    tg[1].what = "keep restore into a buffer >= 0.7x memcpy";
    tg[2].what = "zstd relu >= 2x smaller at >= 0.5 GB/s save";
    tg[3].what = "q8 save >= 2 GB/s";
    for (int m = 0; m < 2; m++) {
        double us = 0, rr = 1e9, q8 = 1e9;
        for (int k = 0; k < NTENSORS; k++) {
            double u = (bytes / b->sg[m][P_KEEP_ADOPT][k] + bytes / b->rg[m][P_KEEP_ADOPT][k]) *
                       1e-3;
            us = u > us ? u : us;
            double r = b->rg[m][P_KEEP][k] / b->rg[m][P_MEMCPY][k];
            rr = r < rr ? r : rr;
            q8 = b->sg[m][P_Q8][k] < q8 ? b->sg[m][P_Q8][k] : q8;
        }
        tg[0].ok[m] = us < 1.0;
        snprintf(tg[0].fig[m], sizeof tg[0].fig[m], "%.3f us", us);
        tg[1].ok[m] = rr >= 0.7;
        snprintf(tg[1].fig[m], sizeof tg[1].fig[m], "%.2fx", rr);
        tg[2].ok[m] = zr >= 2.0 && b->sg[m][P_ZSTD][T_RELU] >= 0.5;
        snprintf(tg[2].fig[m], sizeof tg[2].fig[m], "%.2fx at %.2f GB/s", zr,
                 b->sg[m][P_ZSTD][T_RELU]);
        tg[3].ok[m] = q8 >= 2.0;
        snprintf(tg[3].fig[m], sizeof tg[3].fig[m], "%.2f GB/s", q8);
    }
    double cold_us = 0;
    for (int k = 0; k < NTENSORS; k++) {
        double cu = as_stats_median(b->cells[P_KEEP_ADOPT][k].cold_s, b->repeats) * 1e6;
        cold_us = cu > cold_us ? cu : cold_us;
    }
    cJSON *targets = cJSON_AddArrayToObject(root, "targets");
    printf("\ntargets (worst tensor)                          %-24s %s\n", "wall clock",
           "thread CPU time");
    for (int i = 0; i < 4; i++) {
        printf("  %-46s %-4s %-19s %-4s %s\n", tg[i].what, tg[i].ok[0] ? "ok" : "MISS",
               tg[i].fig[0], tg[i].ok[1] ? "ok" : "MISS", tg[i].fig[1]);
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "target", tg[i].what);
        cJSON_AddBoolToObject(e, "met_wall", tg[i].ok[0]);
        cJSON_AddStringToObject(e, "measured_wall", tg[i].fig[0]);
        cJSON_AddBoolToObject(e, "met_cpu", tg[i].ok[1]);
        cJSON_AddStringToObject(e, "measured_cpu", tg[i].fig[1]);
        cJSON_AddItemToArray(targets, e);
    }
    printf("  (keep adopted, first call right after writing the block: %.1f us wall)\n",
           cold_us);
    cJSON_AddNumberToObject(root, "keep_adopt_cold_us", cold_us);
}

int as_bench_store(int argc, char **argv)
{
    store_bench b = {.repeats = 5, .mib = 64};
    int status = parse_args(&b, argc, argv);
    if (status != AS_CLI_RUN)
        return status;
    status = AS_EXIT_OK;
    as_store *s = NULL;
    if (bench_alloc(&b)) {
        status = as_cli_fail(CMD, "out of memory for %llu MiB tensors", b.mib);
        goto out;
    }
    as_store_config cfg = {.offload_dir = b.odir, .label = "bench"};
    char err[256] = "";
    int rc = as_store_create(&cfg, &s, err, sizeof err);
    if (rc != 0) {
        status = as_cli_fail(CMD, "as_store_create: %s %s", as_strerror(rc), err);
        goto out;
    }
    status = bench_measure(&b, s);
    if (status != AS_EXIT_OK)
        goto out;
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "bench", "store");
    cJSON_AddNumberToObject(root, "repeats", (double)b.repeats);
    cJSON_AddNumberToObject(root, "tensor_bytes", (double)b.bytes);
    report_cells(&b, root);
    report_targets(&b, root);
    if (b.json_path && as_cli_write_json(CMD, b.json_path, root) != 0)
        status = AS_EXIT_FAIL;
    cJSON_Delete(root);
out:
    as_store_destroy(s);
    for (int k = 0; k < NTENSORS; k++)
        free(b.src[k]);
    free(b.dst);
    free(b.times);
    return status;
}

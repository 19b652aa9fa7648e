/*
 * actstore bench act: the activation policies against keep, side by side
 * in one run. Per case, one f32 (or u8) tensor of n elements:
 *   relu     max(N(0,1), 0), a ReLU output: keep vs sign
 *   leaky    LeakyReLU(N(0,1), 0.1) output: keep vs sign
 *   gelu     N(0,1), a GELU input: keep vs fewbit:1..4
 *   argmax   uniform 0..3 (u8), a 2x2 max-pool's argmax: keep vs bitpack
 * For each (case, policy): stored bytes, save time and backward time per
 * element (act_backward for activations, restore for argmax), thread CPU
 * clock, medians over repeats with the cells interleaved; for gelu the
 * relative L2 error of dx against keep's exact dx.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "actstore/store.h"
#include "bench.h"
#include "cli.h"
#include "stats.h"
#include "util/clock.h"
#include "util/rng.h"

#define CMD "bench act"

typedef struct acase {
    const char *name;
    int         kind, fn, dtype;
    float       alpha;
    const char *pol[5];
} acase;

static const acase cases[] = {
    {"relu", AS_KIND_ACTIVATION_OUTPUT, AS_FN_RELU, AS_F32, 0.0f, {"keep", "sign"}},
    {"leaky", AS_KIND_ACTIVATION_OUTPUT, AS_FN_LEAKY_RELU, AS_F32, 0.1f, {"keep", "sign"}},
    {"gelu", AS_KIND_ACTIVATION_INPUT, AS_FN_GELU, AS_F32, 0.0f,
     {"keep", "fewbit:1", "fewbit:2", "fewbit:3", "fewbit:4"}},
    {"argmax", AS_KIND_INDEX, AS_FN_IDENTITY, AS_U8, 0.0f, {"keep", "bitpack"}},
};
#define NCASES (sizeof cases / sizeof cases[0])
#define MAXPOL 5

static void fill(const acase *c, size_t n, void *x)
{
    uint64_t st = 42;
    for (size_t i = 0; i < n; i++) {
        if (c->dtype == AS_U8) {
            ((uint8_t *)x)[i] = (uint8_t)(as_rng_next(&st) & 3);
            continue;
        }
        float v = (float)as_rng_normal(&st);
        if (c->fn == AS_FN_RELU || c->fn == AS_FN_LEAKY_RELU)
            v = v > 0 ? v : c->alpha * v;
        ((float *)x)[i] = v;
    }
}

/* One save + backward of case c under policy spec; times in ns. */
static int one(as_store *s, const acase *c, size_t n, const void *x,
               const float *dy, float *dx, void *rbuf, double *save_ns,
               double *bwd_ns, uint64_t *stored)
{
    as_save_info info = {.kind = c->kind, .layer = c->name};
    info.meta.act = (as_elementwise){.fn = c->fn, .alpha = c->alpha};
    as_tensor t = {.data = (void *)x, .dtype = c->dtype, .ndim = 1,
                   .shape = {(int64_t)n}};
    as_handle h;
    uint64_t t0 = as_clock_ns(CLOCK_THREAD_CPUTIME_ID);
    int rc = as_store_save(s, &info, &t, &h);
    uint64_t t1 = as_clock_ns(CLOCK_THREAD_CPUTIME_ID);
    if (rc)
        return rc;
    as_store_stats st;
    if (as_store_stats_take(s, &st) == 0) {
        *stored = st.total.stored_live;
        as_store_stats_free(&st);
    }
    if (c->dtype == AS_U8) {
        as_tensor r = t;
        r.data = rbuf;
        rc = as_store_restore(s, h, &r);
    } else {
        rc = as_store_act_backward(s, h, dy, dx);
    }
    uint64_t t2 = as_clock_ns(CLOCK_THREAD_CPUTIME_ID);
    as_store_release(s, h);
    *save_ns = (double)(t1 - t0);
    *bwd_ns = (double)(t2 - t1);
    return rc;
}

static double rel_l2(const float *a, const float *b, size_t n)
{
    double d = 0, m = 0;
    for (size_t i = 0; i < n; i++) {
        d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        m += (double)b[i] * b[i];
    }
    return m > 0 ? sqrt(d / m) : sqrt(d);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: actstore bench act [--json FILE] [--repeats N] [--n N]\n\n"
               "sign, fewbit:1..4 and bitpack against keep on ReLU / LeakyReLU\n"
               "outputs, GELU inputs and 2x2 argmax indices: stored bytes, save\n"
               "and backward ns per element (thread CPU, medians), gelu dx error.\n\n"
               "  --json FILE   write {\"bench\":\"act\",\"results\":[...]} (\"-\" = stdout)\n"
               "  --repeats N   repeats per cell, interleaved (default 7)\n"
               "  --n N         elements per tensor (default 1048576)\n");
}

int as_bench_act(int argc, char **argv)
{
    const char *json_path = NULL;
    unsigned long long repeats = 7, n = 1u << 20;
    const as_cli_flag flags[] = {
        {"--json", AS_CLI_STR, &json_path, 0, 0},
        {"--repeats", AS_CLI_U64, &repeats, 1, 1000},
        {"--n", AS_CLI_U64, &n, 1, 1ull << 28},
    };
    int prc = as_cli_parse_flags(CMD, flags, sizeof flags / sizeof flags[0], usage, argc, argv);
    if (prc != AS_CLI_RUN)
        return prc;
    as_store *s = NULL;
    if (as_store_create(NULL, &s, NULL, 0) != 0)
        return as_cli_fail(CMD, "as_store_create failed");
    float *x = malloc(n * sizeof *x), *dy = malloc(n * sizeof *dy);
    float *dx = malloc(n * sizeof *dx), *ref = malloc(n * sizeof *ref);
    double *sv = calloc(NCASES * MAXPOL * repeats, sizeof *sv);
    double *bw = calloc(NCASES * MAXPOL * repeats, sizeof *bw);
    uint64_t stored[NCASES][MAXPOL] = {{0}};
    double err[NCASES][MAXPOL] = {{0}};
    int status = AS_EXIT_OK;
    if (!x || !dy || !dx || !ref || !sv || !bw) {
        status = as_cli_fail(CMD, "out of memory");
        goto out;
    }
    uint64_t st = 7;
    for (size_t i = 0; i < n; i++)
        dy[i] = (float)as_rng_normal(&st);
    for (unsigned long r = 0; r < repeats; r++)
        for (size_t c = 0; c < NCASES; c++) {
            fill(&cases[c], n, x);
            for (int p = 0; p < MAXPOL && cases[c].pol[p]; p++) {
                char spec[64];
                snprintf(spec, sizeof spec, "default=%s", cases[c].pol[p]);
                if (as_store_set_policy(s, spec, NULL, 0) != 0) {
                    status = as_cli_fail(CMD, "policy %s", spec);
                    goto out;
                }
                size_t k = (c * MAXPOL + (size_t)p) * repeats + r;
                int rc = one(s, &cases[c], n, x, dy, p ? dx : ref, dx, &sv[k],
                             &bw[k], &stored[c][p]);
                if (rc) {
                    status = as_cli_fail(CMD, "%s under %s: %s", cases[c].name,
                                         spec, as_store_last_error(s));
                    goto out;
                }
                if (p && cases[c].dtype == AS_F32)
                    err[c][p] = rel_l2(dx, ref, n);
            }
        }
    cJSON *root = cJSON_CreateObject(), *res = cJSON_AddArrayToObject(root, "results");
    cJSON_AddStringToObject(root, "bench", "act");
    cJSON_AddNumberToObject(root, "n", (double)n);
    cJSON_AddNumberToObject(root, "repeats", (double)repeats);
    printf("%-7s %-9s %10s %8s %10s %10s %9s\n", "case", "policy", "bytes",
           "ratio", "save ns/e", "bwd ns/e", "dx err");
    for (size_t c = 0; c < NCASES; c++)
        for (int p = 0; p < MAXPOL && cases[c].pol[p]; p++) {
            size_t k = (c * MAXPOL + (size_t)p) * repeats;
            double ms = as_stats_median(&sv[k], repeats) / (double)n;
            double mb = as_stats_median(&bw[k], repeats) / (double)n;
            double raw = (double)n * as_dtype_size(cases[c].dtype);
            double ratio = stored[c][p] ? raw / (double)stored[c][p] : 0;
            printf("%-7s %-9s %10llu %7.1fx %10.3f %10.3f %9.4f\n", cases[c].name,
                   cases[c].pol[p], (unsigned long long)stored[c][p], ratio, ms,
                   mb, err[c][p]);
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "case", cases[c].name);
            cJSON_AddStringToObject(o, "policy", cases[c].pol[p]);
            cJSON_AddNumberToObject(o, "bytes_stored", (double)stored[c][p]);
            cJSON_AddNumberToObject(o, "ratio", ratio);
            cJSON_AddNumberToObject(o, "save_ns_per_elem", ms);
            cJSON_AddNumberToObject(o, "backward_ns_per_elem", mb);
            cJSON_AddNumberToObject(o, "dx_rel_l2", err[c][p]);
            cJSON_AddItemToArray(res, o);
        }
    if (json_path && as_cli_write_json(CMD, json_path, root) != 0)
        status = AS_EXIT_FAIL;
    cJSON_Delete(root);
out:
    free(x); free(dy); free(dx); free(ref); free(sv); free(bw);
    as_store_destroy(s);
    return status;
}

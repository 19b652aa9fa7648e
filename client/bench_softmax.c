/*
 * actstore bench softmax [--json FILE] [--rows FILE]... [--policies LIST]
 *                        [--repeats N] [--quick]
 *
 * Softmax codecs side by side on the same rows: bytes ratio (fp32 raw /
 * stored blob), gradient cosine and relative error of dx = y (dy - <dy,y>)
 * from the codec against the exact backward (dy ~ N(0,1)), encode, decode
 * and backward throughput (medians over repeats), and the encode time as a
 * fraction of an attention forward (sgemm QK^T, softmax, PV; head dim 64)
 * of the same shape, everything on one thread.
 *
 * Rows: synthetic (lengths 50, 128, 256, 1024; logit std 1, 2, 4; causal
 * and full; ~1M entries per set) and any number of --rows files written by
 * a trainer (format: store/policies/softmax_dump.c, docs/policies.md).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cblas.h>

#include "actstore/common.h"
#include "bench.h"
#include "cli.h"
#include "layers/ops.h"
#include "store/policies/softmax.h"

#define MAX_POL 16
#define MAX_FILES 8

static const char *default_policies =
    "keep,fp16,soa:5,soa:5:fullden,solog:4,solog:3,sotk:16:3,sotk:8:2,"
    "sotk:16:3:0.9";

typedef struct rowset {
    char     name[64];
    int64_t  rows, len, queries;
    bool     causal;
    float   *y;
} rowset;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}
static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static uint64_t rng = 0x2545f4914f6cdd1dull;
static double urand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) * (1.0 / 9007199254740992.0);
}
static double nrand(void)
{
    double u = urand() + 1e-300, v = urand();
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

static int synth(rowset *s, int64_t L, double sd, bool causal, int64_t target)
{
    int64_t blocks = target / (L * L);
    if (blocks < 1)
        blocks = 1;
    s->rows = blocks * L;
    s->len = L;
    s->queries = L;
    s->causal = causal;
    snprintf(s->name, sizeof s->name, "synthetic-n%lld-std%g-%s",
             (long long)L, sd, causal ? "causal" : "full");
    s->y = malloc((size_t)(s->rows * L) * sizeof *s->y);
    if (!s->y)
        return -1;
    double *t = malloc((size_t)L * sizeof *t);
    for (int64_t r = 0; r < s->rows; r++) {
        int64_t n = causal ? r % L + 1 : L;
        double mx = -1e300, z = 0;
        for (int64_t k = 0; k < n; k++) {
            t[k] = nrand() * sd;
            mx = t[k] > mx ? t[k] : mx;
        }
        for (int64_t k = 0; k < n; k++)
            z += (t[k] = exp(t[k] - mx));
        float *row = s->y + r * L;
        for (int64_t k = 0; k < L; k++)
            row[k] = k < n ? (float)(t[k] / z) : 0.0f;
    }
    free(t);
    return 0;
}

/* attention forward of the same shape (blocks of L x L, head dim 64) */
static double attn_fwd_s(const rowset *s, int reps)
{
    int B = (int)(s->rows / s->queries), T = (int)s->queries, C = 64;
    float *qkv = malloc((size_t)B * T * 3 * C * sizeof *qkv);
    float *P = malloc((size_t)B * T * T * sizeof *P);
    float *o = malloc((size_t)B * T * C * sizeof *o);
    double t[16];
    for (size_t i = 0; i < (size_t)B * T * 3 * C; i++)
        qkv[i] = (float)nrand();
    for (int r = 0; r < reps; r++) {
        double t0 = now_s();
        as_op_attn_fwd(B, T, C, 1, s->causal, qkv, P, o);
        t[r] = now_s() - t0;
    }
    free(qkv);
    free(P);
    free(o);
    return median(t, reps);
}

static int bench_one(const rowset *s, const char *spec, int reps,
                     double attn_s, cJSON *results)
{
    as_sm_params p;
    char err[160];
    if (as_sm_parse(spec, strlen(spec), &p, err, sizeof err, NULL))
        return as_cli_usage("bench", "--policies: %s: %s", spec, err);
    as_sm_layout lay = {.rows = s->rows, .len = s->len, .queries = s->queries,
                        .causal = s->causal};
    size_t cap = as_sm_encode_bound(&p, &lay), used = 0;
    size_t ne = (size_t)(s->rows * s->len);
    void *blob = malloc(cap);
    float *dy = malloc(ne * sizeof *dy), *dx = malloc(ne * sizeof *dx);
    float *dh = malloc(ne * sizeof *dh);
    if (!blob || !dy || !dx || !dh)
        return as_cli_fail("bench", "softmax: out of memory");
    double te[16], td[16], tb[16];
    for (int r = 0; r < reps; r++) {
        double t0 = now_s();
        as_sm_encode(&p, &lay, s->y, blob, cap, &used);
        te[r] = now_s() - t0;
        t0 = now_s();
        as_sm_decode_rows(blob, 0, s->rows, dh);
        td[r] = now_s() - t0;
    }
    for (size_t i = 0; i < ne; i++)
        dy[i] = (float)nrand();
    for (int r = 0; r < reps; r++) {
        double t0 = now_s();
        as_sm_backward_rows(blob, 0, s->rows, dy, dh);
        tb[r] = now_s() - t0;
    }
    /* exact backward, cosine over the tensor and mean over rows */
    double ab = 0, aa = 0, bb = 0, ee = 0, rowcos = 0;
    int64_t nrc = 0;
    for (int64_t r = 0; r < s->rows; r++) {
        const float *y = s->y + r * s->len, *g = dy + r * s->len;
        double dot = 0;
        for (int64_t k = 0; k < s->len; k++)
            dot += (double)g[k] * y[k];
        double rab = 0, raa = 0, rbb = 0;
        for (int64_t k = 0; k < s->len; k++) {
            double e = y[k] * (g[k] - dot), h = dh[r * s->len + k];
            rab += e * h;
            raa += e * e;
            rbb += h * h;
            ee += (e - h) * (e - h);
        }
        ab += rab;
        aa += raa;
        bb += rbb;
        if (raa > 1e-30 && rbb > 1e-30) {
            rowcos += rab / sqrt(raa * rbb);
            nrc++;
        }
    }
    double enc = median(te, reps), dec = median(td, reps);
    double bwd = median(tb, reps);
    double ratio = (double)ne * 4.0 / (double)used;
    double cosv = ab / sqrt(aa * bb), rel = sqrt(ee / aa);
    char canon[48];
    as_sm_format(&p, canon, sizeof canon);
    printf("%-30s %-16s %6.2fx  cos %.5f  rowcos %.5f  rel %.4f  "
           "enc %8.0f  dec %8.0f  bwd %8.0f rows/s  enc/attn %.2f\n",
           s->name, canon, ratio, cosv, nrc ? rowcos / (double)nrc : 1.0, rel,
           (double)s->rows / enc, (double)s->rows / dec,
           (double)s->rows / bwd, attn_s > 0 ? enc / attn_s : 0.0);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "policy", canon);
    cJSON_AddStringToObject(o, "rows", s->name);
    cJSON_AddNumberToObject(o, "row_len", (double)s->len);
    cJSON_AddBoolToObject(o, "causal", s->causal);
    cJSON_AddNumberToObject(o, "nrows", (double)s->rows);
    cJSON_AddNumberToObject(o, "bytes_raw", (double)ne * 4.0);
    cJSON_AddNumberToObject(o, "bytes_stored", (double)used);
    cJSON_AddNumberToObject(o, "ratio", ratio);
    cJSON_AddNumberToObject(o, "grad_cosine", cosv);
    cJSON_AddNumberToObject(o, "grad_cosine_row_mean",
                            nrc ? rowcos / (double)nrc : 1.0);
    cJSON_AddNumberToObject(o, "grad_rel_err", rel);
    cJSON_AddNumberToObject(o, "encode_rows_per_s", (double)s->rows / enc);
    cJSON_AddNumberToObject(o, "decode_rows_per_s", (double)s->rows / dec);
    cJSON_AddNumberToObject(o, "backward_rows_per_s", (double)s->rows / bwd);
    if (attn_s > 0)
        cJSON_AddNumberToObject(o, "encode_frac_of_attn_fwd", enc / attn_s);
    cJSON_AddItemToArray(results, o);
    free(blob);
    free(dy);
    free(dx);
    free(dh);
    return 0;
}

/* radix order (what soa uses) against qsort, ns per row */
typedef struct { float v; uint32_t i; } ent;
static int cmp_ent(const void *a, const void *b)
{
    const ent *x = a, *y = b;
    if (x->v != y->v)
        return x->v > y->v ? -1 : 1;
    return (x->i > y->i) - (x->i < y->i);
}

static void bench_order(cJSON *arr, int reps, int quick)
{
    static const int64_t lens[] = {50, 128, 256, 1024};
    for (size_t li = 0; li < 4; li++) {
        rowset s;
        int64_t L = lens[li];
        if (synth(&s, L, 2.0, false, quick ? 1 << 17 : 1 << 20))
            return;
        as_sm_work w;
        as_sm_work_init(&w, (size_t)L);
        uint32_t *ord = malloc((size_t)L * sizeof *ord);
        ent *e = malloc((size_t)L * sizeof *e);
        double tr[16], tq[16];
        for (int r = 0; r < reps; r++) {
            double t0 = now_s();
            for (int64_t q = 0; q < s.rows; q++)
                as_sm_order_desc(s.y + q * L, (size_t)L, ord, &w);
            tr[r] = now_s() - t0;
            t0 = now_s();
            for (int64_t q = 0; q < s.rows; q++) {
                for (int64_t k = 0; k < L; k++)
                    e[k] = (ent){s.y[q * L + k], (uint32_t)k};
                qsort(e, (size_t)L, sizeof *e, cmp_ent);
            }
            tq[r] = now_s() - t0;
        }
        double a = median(tr, reps) * 1e9 / (double)s.rows;
        double b = median(tq, reps) * 1e9 / (double)s.rows;
        printf("order n=%-5lld radix %8.0f ns/row   qsort %8.0f ns/row\n",
               (long long)L, a, b);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "row_len", (double)L);
        cJSON_AddNumberToObject(o, "radix_ns_per_row", a);
        cJSON_AddNumberToObject(o, "qsort_ns_per_row", b);
        cJSON_AddItemToArray(arr, o);
        free(ord);
        free(e);
        as_sm_work_free(&w);
        free(s.y);
    }
}

static void usage(FILE *f)
{
    fprintf(f,
        "usage: actstore bench softmax [--json FILE] [--rows FILE]...\n"
        "                              [--policies LIST] [--repeats N] [--quick]\n"
        "  --rows FILE      real rows dumped by a trainer (records \"ASSMROWS\",\n"
        "                   see docs/policies.md); may repeat; synthetic rows\n"
        "                   are measured too unless --no-synthetic\n"
        "  --policies LIST  comma-separated codecs (default %s)\n"
        "  --repeats N      timing repeats, median reported (default 3, max 15)\n"
        "  --quick          1/8 of the rows, 1 repeat (for tests)\n",
        default_policies);
}

int as_bench_softmax(int argc, char **argv)
{
    const char *json = NULL, *pols = default_policies;
    const char *files[MAX_FILES];
    int nfiles = 0, quick = 0, synthetic = 1;
    unsigned long long reps = 3;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (as_cli_is_help(a)) {
            usage(stdout);
            return AS_EXIT_OK;
        } else if (!strcmp(a, "--quick")) {
            quick = 1;
        } else if (!strcmp(a, "--no-synthetic")) {
            synthetic = 0;
        } else if (i + 1 >= argc) {
            return as_cli_usage("bench", "softmax: unknown option or missing value '%s'", a);
        } else if (!strcmp(a, "--json")) {
            json = argv[++i];
        } else if (!strcmp(a, "--policies")) {
            pols = argv[++i];
        } else if (!strcmp(a, "--rows")) {
            if (nfiles == MAX_FILES)
                return as_cli_usage("bench", "softmax: at most %d --rows", MAX_FILES);
            files[nfiles++] = argv[++i];
        } else if (!strcmp(a, "--repeats")) {
            if (as_cli_parse_u64("bench", "--repeats", argv[++i], &reps))
                return AS_EXIT_USAGE;
            if (reps < 1 || reps > 15)
                return as_cli_usage("bench", "--repeats: 1..15");
        } else {
            return as_cli_usage("bench", "softmax: unknown option '%s'", a);
        }
    }
    if (quick)
        reps = 1;
    /* one thread: codecs run on the training thread; an idle OpenBLAS pool
     * spinning in sched_yield would also steal the core from them */
    openblas_set_num_threads(1);
    char *specs[MAX_POL], *pbuf = strdup(pols);
    int npol = 0;
    for (char *t = strtok(pbuf, ","); t && npol < MAX_POL; t = strtok(NULL, ","))
        specs[npol++] = t;
    for (int i = 0; i < npol; i++) {
        as_sm_params p;
        char err[160];
        if (as_sm_parse(specs[i], strlen(specs[i]), &p, err, sizeof err, NULL)) {
            free(pbuf);
            return as_cli_usage("bench", "--policies: '%s': %s", specs[i], err);
        }
    }

    cJSON *root = cJSON_CreateObject(), *results = cJSON_CreateArray();
    cJSON_AddStringToObject(root, "bench", "softmax");
    cJSON_AddItemToObject(root, "results", results);
    int rc = AS_EXIT_OK;
    for (int f = 0; f < nfiles && rc == AS_EXIT_OK; f++) {
        FILE *fp = fopen(files[f], "rb");
        if (!fp) {
            rc = as_cli_fail("bench", "softmax: cannot open %s", files[f]);
            break;
        }
        for (int recno = 0;; recno++) {
            as_sm_dump_rec rec;
            int e = as_sm_dump_read(fp, &rec);
            if (e == 1)
                break;
            if (e) {
                rc = as_cli_fail("bench", "softmax: %s: record %d: %s",
                                 files[f], recno, as_strerror(e));
                break;
            }
            rowset s = {.rows = rec.rows, .len = rec.len,
                        .queries = rec.queries, .causal = rec.causal,
                        .y = rec.y};
            snprintf(s.name, sizeof s.name, "%s", rec.name[0] ? rec.name : "file");
            double at = attn_fwd_s(&s, (int)reps);
            for (int i = 0; i < npol && rc == AS_EXIT_OK; i++)
                rc = bench_one(&s, specs[i], (int)reps, at, results);
            free(rec.y);
        }
        fclose(fp);
    }
    static const int64_t lens[] = {50, 128, 256, 1024};
    static const double sds[] = {1, 2, 4};
    for (int li = 0; synthetic && li < 4 && rc == AS_EXIT_OK; li++)
        for (int si = 0; si < 3 && rc == AS_EXIT_OK; si++)
            for (int c = 0; c < 2 && rc == AS_EXIT_OK; c++) {
                rowset s;
                if (synth(&s, lens[li], sds[si], c == 1,
                          quick ? 1 << 17 : 1 << 20)) {
                    rc = as_cli_fail("bench", "softmax: out of memory");
                    break;
                }
                double at = attn_fwd_s(&s, (int)reps);
                for (int i = 0; i < npol && rc == AS_EXIT_OK; i++)
                    rc = bench_one(&s, specs[i], (int)reps, at, results);
                free(s.y);
            }
    if (rc == AS_EXIT_OK) {
        cJSON *order = cJSON_CreateArray();
        cJSON_AddItemToObject(root, "order", order);
        bench_order(order, (int)reps, quick);
        if (json && as_cli_write_json("bench", json, root))
            rc = AS_EXIT_FAIL;
    }
    cJSON_Delete(root);
    free(pbuf);
    return rc;
}

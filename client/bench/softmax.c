/*
 * actstore bench softmax [--json FILE] [--rows FILE]... [--policies LIST]
 *                        [--repeats N] [--quick]
 *
 * Softmax codecs side by side on the same rows: bytes ratio (fp32 raw /
 * stored blob), gradient cosine and relative error of dx = y (dy - <dy,y>)
 * from the codec against the exact backward (dy ~ N(0,1)), encode, decode
 * and backward throughput (medians over repeats), the cost of the store's
 * metadata check as a fraction of encode, and the encode time as a
 * fraction of an attention forward (sgemm QK^T, softmax, PV; head dim 64,
 * or --head-dim) of the same shape, everything on one thread.
 *
 * Rows: synthetic (lengths 50, 128, 256, 1024; logit std 1, 2, 4; causal
 * and full; ~1M entries per set) and any number of --rows files written by
 * a trainer (format: store/policies/softmax/dump.c, docs/policies.md).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cblas.h>

#include "actstore/common.h"
#include "bench.h"
#include "util/clock.h"
#include "util/median.h"
#include "cli.h"
#include "layers/ops.h"
#include "layers/train.h"
#include "store/policies/softmax/softmax.h"
#include "store/policy.h"
#include "util/rng.h"

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

/* Thread CPU time: the machines we measure on are shared, and time spent
 * preempted is not the codec's. (Wall time for the capture's training.) */


static uint64_t rng = 0x2545f4914f6cdd1dull;
static double nrand(void) { return as_rng_normal(&rng); }

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
        as_rng_softmax_row(&rng, sd, causal ? r % L + 1 : L, L, t, s->y + r * L);
    }
    free(t);
    return 0;
}

/* attention forward of the same shape (blocks of L x L, head dim 64) */
static int head_dim = 64;   /* --head-dim */

static double attn_fwd_s(const rowset *s, int reps)
{
    int B = (int)(s->rows / s->queries), T = (int)s->queries, C = head_dim;
    float *qkv = malloc((size_t)B * T * 3 * C * sizeof *qkv);
    float *P = malloc((size_t)B * T * T * sizeof *P);
    float *o = malloc((size_t)B * T * C * sizeof *o);
    double t[16];
    for (size_t i = 0; i < (size_t)B * T * 3 * C; i++)
        qkv[i] = (float)nrand();
    for (int r = 0; r < reps; r++) {
        double t0 = as_clock_thread_cpu_s();
        as_op_attn_fwd(B, T, C, 1, s->causal, qkv, P, o);
        t[r] = as_clock_thread_cpu_s() - t0;
    }
    free(qkv);
    free(P);
    free(o);
    return as_stats_median(t, (size_t)reps);
}

static int bench_one(const rowset *s, const char *spec, int reps,
                     double attn_s, cJSON *results)
{
    as__sm_params p;
    char err[160];
    if (as__sm_parse(spec, strlen(spec), &p, err, sizeof err, NULL))
        return as_cli_usage("bench", "--policies: %s: %s", spec, err);
    as__sm_layout lay = {.rows = s->rows, .len = s->len, .queries = s->queries,
                        .causal = s->causal};
    size_t cap = as__sm_encode_bound(&p, &lay), used = 0;
    size_t ne = (size_t)(s->rows * s->len);
    void *blob = malloc(cap);
    float *dy = malloc(ne * sizeof *dy), *dx = malloc(ne * sizeof *dx);
    float *dh = malloc(ne * sizeof *dh);
    if (!blob || !dy || !dx || !dh)
        return as_cli_fail("bench", "softmax: out of memory");
    double te[16], td[16], tb[16], tc[16];
    as__sm_check chk;
    int64_t flagged = 0;
    for (int r = 0; r < reps; r++) {
        double t0 = as_clock_thread_cpu_s();
        as__sm_encode(&p, &lay, s->y, blob, cap, &used);
        te[r] = as_clock_thread_cpu_s() - t0;
        /* the store's encode: the same with the metadata check fused in */
        t0 = as_clock_thread_cpu_s();
        as__sm_encode_checked(&p, &lay, s->y, blob, cap, &used, &chk);
        tc[r] = as_clock_thread_cpu_s() - t0;
        flagged += chk.bad_rows;
        t0 = as_clock_thread_cpu_s();
        as__sm_decode_rows(blob, 0, s->rows, dh);
        td[r] = as_clock_thread_cpu_s() - t0;
    }
    for (size_t i = 0; i < ne; i++)
        dy[i] = (float)nrand();
    for (int r = 0; r < reps; r++) {
        double t0 = as_clock_thread_cpu_s();
        as__sm_backward_rows(blob, 0, s->rows, dy, dh);
        tb[r] = as_clock_thread_cpu_s() - t0;
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
    double enc = as_stats_median(te, (size_t)reps), dec = as_stats_median(td, (size_t)reps);
    /* per-repeat difference, then its median: both encodes of a repeat
     * ran back to back, so they share the machine's state */
    for (int r = 0; r < reps; r++)
        tc[r] -= te[r];
    double chk_frac = as_stats_median(tc, (size_t)reps) / enc;
    double bwd = as_stats_median(tb, (size_t)reps);
    double ratio = (double)ne * 4.0 / (double)used;
    double cosv = ab / sqrt(aa * bb), rel = sqrt(ee / aa);
    char canon[48];
    as__sm_format(&p, canon, sizeof canon);
    printf("%-30s %-16s %6.2fx  cos %.5f  rowcos %.5f  rel %.4f  "
           "enc %8.0f  dec %8.0f  bwd %8.0f rows/s  enc/attn %.2f  "
           "check %+.1f%%\n",
           s->name, canon, ratio, cosv, nrc ? rowcos / (double)nrc : 1.0, rel,
           (double)s->rows / enc, (double)s->rows / dec,
           (double)s->rows / bwd, attn_s > 0 ? enc / attn_s : 0.0,
           100.0 * chk_frac);
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
    cJSON_AddNumberToObject(o, "check_frac_of_encode", chk_frac);
    cJSON_AddItemToArray(results, o);
    free(blob);
    free(dy);
    free(dx);
    free(dh);
    if (flagged)   /* rows of a softmax fail the store's check: a bug */
        return as_cli_fail("bench", "softmax: %s: the metadata check "
                           "flagged %lld rows", s->name, (long long)flagged);
    return 0;
}

/* as__sm_order_desc (what soa uses: rank counting or radix by
 * length) against qsort, ns per row */
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
        as__sm_work w;
        as__sm_work_init(&w, (size_t)L);
        uint32_t *ord = malloc((size_t)L * sizeof *ord);
        ent *e = malloc((size_t)L * sizeof *e);
        double tr[16], tq[16];
        for (int r = 0; r < reps; r++) {
            double t0 = as_clock_thread_cpu_s();
            for (int64_t q = 0; q < s.rows; q++)
                as__sm_order_desc(s.y + q * L, (size_t)L, ord, &w);
            tr[r] = as_clock_thread_cpu_s() - t0;
            t0 = as_clock_thread_cpu_s();
            for (int64_t q = 0; q < s.rows; q++) {
                for (int64_t k = 0; k < L; k++)
                    e[k] = (ent){s.y[q * L + k], (uint32_t)k};
                qsort(e, (size_t)L, sizeof *e, cmp_ent);
            }
            tq[r] = as_clock_thread_cpu_s() - t0;
        }
        double a = as_stats_median(tr, (size_t)reps) * 1e9 / (double)s.rows;
        double b = as_stats_median(tq, (size_t)reps) * 1e9 / (double)s.rows;
        printf("order n=%-5lld actstore %8.0f ns/row   qsort %8.0f ns/row\n",
               (long long)L, a, b);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "row_len", (double)L);
        cJSON_AddNumberToObject(o, "order_ns_per_row", a);
        cJSON_AddNumberToObject(o, "qsort_ns_per_row", b);
        cJSON_AddItemToArray(arr, o);
        free(ord);
        free(e);
        as__sm_work_free(&w);
        free(s.y);
    }
}

/* ---- capture of real rows ------------------------------------------------- */

/* A keep-like policy, registered at run time, that also appends every
 * softmax output it sees to a dump file while capturing is on. */
static struct {
    FILE *fp;
    bool  on;
    char  name[24];
    int   err;
    long  records;
    const as_policy_ops *keep;   /* what the capture policy stores with */
} cap;

static int cap_encode(as_pctx *ctx, const void *params,
                      const as_save_info *info, const as_tensor *t,
                      void **state)
{
    size_t n = as_tensor_bytes(t);
    if (cap.on && cap.fp && t->dtype == AS_F32 && t->ndim >= 1 && n) {
        int64_t L = t->shape[t->ndim - 1], rows = as_tensor_numel(t) / L;
        int64_t q = info->meta.softmax.queries > 0 ? info->meta.softmax.queries
                                                   : rows;
        int e = as__sm_dump_write(cap.fp, cap.name, rows, L, q,
                                 info->meta.softmax.causal, t->data);
        if (e && !cap.err)
            cap.err = e;
        cap.records += e == 0;
    }
    return cap.keep->encode(ctx, params, info, t, state);
}

/* Decoding and viewing are keep's (the state is keep's). */
static int cap_decode(as_pctx *ctx, const void *params, void *state,
                      as_tensor *dst)
{
    return cap.keep->decode(ctx, params, state, dst);
}

static const void *cap_view(const void *params, void *state)
{
    return cap.keep->view(params, state);
}

static const as_policy_ops cap_ops = {
    .name = "smcapture",
    .summary = "keep, and append softmax outputs to a row dump (bench)",
    .kinds = 1u << AS_KIND_SOFTMAX_OUTPUT,
    .parse = as_policy_parse_none,
    .encode = cap_encode,
    .decode = cap_decode,
    .view = cap_view,
};

/* Whole-model gradient of run r's current batch under `policy` against
 * the exact gradient g0 (all parameters, concatenated): cosine and
 * relative error, after copying the weights of `src`. */
static int model_grad(const as_nn_preset *p, const as_nn_run *src,
                      uint64_t seed, long batch, const char *spec,
                      const float *g0, size_t ng, double loss0,
                      cJSON *arr)
{
    char pol[96], err[256];
    snprintf(pol, sizeof pol, "softmax=%s; default=keep", spec);
    as_nn_train_opts o = {.policy = pol, .seed = seed, .threads = 1};
    as_nn_run *run = NULL;
    int rc = as_nn_run_create(p, &o, &run, err, sizeof err);
    if (rc)
        return as_cli_fail("bench", "softmax: %s: %s", pol, err);
    double loss = 0;
    if ((rc = as_nn_run_copy_weights(run, src, false)) == 0)
        rc = as_nn_run_grads(run, batch, &loss);
    if (rc) {
        fprintf(stderr, "actstore bench: softmax: %s: %s\n", pol,
                as_nn_run_error(run));
        as_nn_run_destroy(run);
        return AS_EXIT_FAIL;
    }
    as_nn_mem mem;
    as_nn_run_memory(run, &mem);
    const as_nn_params *ps = as_nn_run_params(run);
    double ab = 0, aa = 0, bb = 0, ee = 0;
    size_t off = 0;
    for (size_t i = 0; i < ps->n && off <= ng; i++) {
        const float *g = ps->p[i]->g.ptr;
        for (size_t k = 0; k < ps->p[i]->n && off + k < ng; k++) {
            double x = g0[off + k], y = g[k];
            ab += x * y;
            aa += x * x;
            bb += y * y;
            ee += (x - y) * (x - y);
        }
        off += ps->p[i]->n;
    }
    double cosv = aa > 0 && bb > 0 ? ab / sqrt(aa * bb) : 0.0;
    double rel = aa > 0 ? sqrt(ee / aa) : 0.0;
    const as_nn_kind_mem *km = &mem.by_kind[AS_KIND_SOFTMAX_OUTPUT];
    printf("%-4s %-16s model grad cos %.6f  rel %.5f  loss %.6f (exact "
           "%.6f)  softmax stored/raw %.2fx\n", p->model, spec, cosv, rel,
           loss, loss0,
           km->stored_peak ? (double)km->raw_peak / (double)km->stored_peak
                           : 0.0);
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "model", p->model);
    cJSON_AddStringToObject(j, "policy", spec);
    cJSON_AddNumberToObject(j, "model_grad_cosine", cosv);
    cJSON_AddNumberToObject(j, "model_grad_rel_err", rel);
    cJSON_AddNumberToObject(j, "loss", loss);
    cJSON_AddNumberToObject(j, "loss_exact", loss0);
    cJSON_AddNumberToObject(j, "softmax_stored_peak_bytes",
                            (double)km->stored_peak);
    cJSON_AddNumberToObject(j, "softmax_raw_peak_bytes", (double)km->raw_peak);
    cJSON_AddItemToArray(arr, j);
    as_nn_run_destroy(run);
    return off == ng ? AS_EXIT_OK
                     : as_cli_fail("bench", "softmax: %s: parameter count "
                                   "differs", pol);
}

/* Train `model` (preset) for `steps` steps with keep, then capture the
 * softmax outputs of one more forward + backward (no update) into out;
 * then the whole-model gradient of that batch under each codec of
 * `specs` against the exact one (into arr). */
static int capture(const char *model, const char *preset, long steps,
                   uint64_t seed, const char *out, char **specs, int npol,
                   cJSON *arr)
{
    as_nn_preset p;
    if (as_nn_preset_get(model, preset, &p))
        return as_cli_usage("bench", "softmax: --capture: no preset %s/%s",
                            model, preset);
    cap.keep = as_policy_find("keep", 4);
    int rc = cap.keep ? as_policy_register(&cap_ops) : AS_ENOTFOUND;
    if (rc && rc != AS_EBUSY)
        return as_cli_fail("bench", "softmax: register capture policy: %s",
                           as_strerror(rc));
    cap.fp = fopen(out, "wb");
    if (!cap.fp)
        return as_cli_fail("bench", "softmax: cannot create %s", out);
    snprintf(cap.name, sizeof cap.name, "%s", model);
    as_nn_train_opts o = {.policy = "softmax=smcapture; default=keep",
                          .seed = seed, .threads = 1};
    as_nn_run *run = NULL;
    char err[256];
    if ((rc = as_nn_run_create(&p, &o, &run, err, sizeof err))) {
        fclose(cap.fp);
        return as_cli_fail("bench", "softmax: --capture %s: %s", model, err);
    }
    double t0 = as_clock_wall_s(), loss = 0;
    for (long i = 0; i < steps && rc == 0; i++)
        rc = as_nn_run_step(run, &loss);
    as_nn_eval ev = {0};
    if (rc == 0)
        rc = as_nn_run_eval(run, &ev);
    cap.on = true;
    double closs = 0;
    if (rc == 0)
        rc = as_nn_run_grads(run, as_nn_run_next_batch(run), &closs);
    cap.on = false;
    if (rc)
        fprintf(stderr, "actstore bench: softmax: --capture %s: %s\n", model,
                as_nn_run_error(run));
    /* the exact gradient of the captured batch */
    float *g0 = NULL;
    size_t ng = 0;
    long batch = as_nn_run_next_batch(run);
    if (rc == 0) {
        const as_nn_params *ps = as_nn_run_params(run);
        for (size_t i = 0; i < ps->n; i++)
            ng += ps->p[i]->n;
        if (!(g0 = malloc(ng * sizeof *g0)))
            rc = AS_ENOMEM;
        for (size_t i = 0, off = 0; g0 && i < ps->n; off += ps->p[i]->n, i++)
            memcpy(g0 + off, ps->p[i]->g.ptr, ps->p[i]->n * sizeof *g0);
    }
    if (fclose(cap.fp) && !cap.err)
        cap.err = AS_EIO;
    cap.fp = NULL;
    if (rc || cap.err) {
        free(g0);
        as_nn_run_destroy(run);
        return as_cli_fail("bench", "softmax: --capture %s: %s", model,
                           as_strerror(rc ? rc : cap.err));
    }
    printf("captured %ld softmax tensors of %s (%s preset) after %ld steps "
           "(%.0f s): train loss %.4f, eval %s %.4f, loss %.4f -> %s\n",
           cap.records, model, preset, steps, as_clock_wall_s() - t0, closs,
           ev.accuracy >= 0 ? "accuracy" : "(lm)",
           ev.accuracy >= 0 ? ev.accuracy : 0.0, ev.loss, out);
    int ec = AS_EXIT_OK;
    for (int i = 0; i < npol && ec == AS_EXIT_OK; i++)
        ec = model_grad(&p, run, seed, batch, specs[i], g0, ng, closs, arr);
    free(g0);
    as_nn_run_destroy(run);
    return ec;
}

/* Step time: one run per policy (same seed, same data order), stepped in
 * turn, each step timed in thread CPU time; medians after 3 warm-up steps,
 * and the store's softmax encode + decode time per step (wall clock: only
 * meaningful on an idle machine). */
static int step_time(const char *model, const char *preset, long steps,
                     uint64_t seed, char **specs, int npol, cJSON *arr)
{
    as_nn_preset p;
    if (as_nn_preset_get(model, preset, &p))
        return as_cli_usage("bench", "softmax: --step-time: no preset %s/%s",
                            model, preset);
    if (npol > MAX_POL)
        npol = MAX_POL;
    as_nn_run *runs[MAX_POL] = {0};
    double *t = calloc((size_t)(npol * steps), sizeof *t);
    int rc = t ? 0 : AS_ENOMEM;
    char err[256];
    for (int i = 0; i < npol && rc == 0; i++) {
        char pol[96];
        snprintf(pol, sizeof pol, strcmp(specs[i], "keep")
                 ? "softmax=%s; default=keep" : "default=keep", specs[i]);
        as_nn_train_opts o = {.policy = pol, .seed = seed, .threads = 1};
        if ((rc = as_nn_run_create(&p, &o, &runs[i], err, sizeof err)))
            fprintf(stderr, "actstore bench: softmax: %s: %s\n", pol, err);
    }
    uint64_t codec0[MAX_POL] = {0}, codec1[MAX_POL] = {0};
    const long warm = 3;
    for (long s = 0; s < steps + warm && rc == 0; s++)
        for (int i = 0; i < npol && rc == 0; i++) {
            if (s == warm) {
                as_store_stats st;
                if (as_store_stats_take(as_nn_run_store(runs[i]), &st) == 0) {
                    codec0[i] = st.kinds[AS_KIND_SOFTMAX_OUTPUT].encode_ns +
                                st.kinds[AS_KIND_SOFTMAX_OUTPUT].decode_ns;
                    as_store_stats_free(&st);
                }
            }
            double t0 = as_clock_thread_cpu_s();
            rc = as_nn_run_step(runs[i], NULL);
            if (s >= warm)
                t[i * steps + (s - warm)] = as_clock_thread_cpu_s() - t0;
            if (rc)
                fprintf(stderr, "actstore bench: softmax: %s: %s\n",
                        specs[i], as_nn_run_error(runs[i]));
        }
    double base = 0;
    for (int i = 0; i < npol && rc == 0; i++) {
        as_store_stats st;
        if (as_store_stats_take(as_nn_run_store(runs[i]), &st) == 0) {
            codec1[i] = st.kinds[AS_KIND_SOFTMAX_OUTPUT].encode_ns +
                        st.kinds[AS_KIND_SOFTMAX_OUTPUT].decode_ns;
            as_store_stats_free(&st);
        }
        double med = as_stats_median(t + i * steps, (size_t)steps) * 1e3;
        double codec = (double)(codec1[i] - codec0[i]) * 1e-6 / (double)steps;
        if (i == 0)
            base = med;
        printf("%-4s %-16s step %7.2f ms (CPU, median of %ld)  x%.3f of %s"
               "  store codec time %6.2f ms/step (wall)\n", model, specs[i],
               med, steps, med / base, specs[0], codec);
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "model", model);
        cJSON_AddStringToObject(j, "preset", preset);
        cJSON_AddStringToObject(j, "policy", specs[i]);
        cJSON_AddNumberToObject(j, "step_cpu_ms_median", med);
        cJSON_AddNumberToObject(j, "step_ratio_to_first", med / base);
        /* the store's encode + decode accounting: wall time, so on a
         * loaded machine it includes time spent preempted */
        cJSON_AddNumberToObject(j, "store_codec_wall_ms_per_step", codec);
        cJSON_AddItemToArray(arr, j);
    }
    for (int i = 0; i < npol; i++)
        as_nn_run_destroy(runs[i]);
    free(t);
    return rc ? AS_EXIT_FAIL : AS_EXIT_OK;
}

/* Next rowset from a dump: consecutive records with the same name and
 * shape (one per attention layer) are merged. 1 at end of file. */
static int read_rowset(FILE *fp, as__sm_dump_rec *pend, bool *have, rowset *s)
{
    as__sm_dump_rec rec;
    int e;
    if (!*have) {
        if ((e = as__sm_dump_read(fp, pend)))
            return e;
        *have = true;
    }
    *s = (rowset){.rows = pend->rows, .len = pend->len,
                  .queries = pend->queries, .causal = pend->causal,
                  .y = pend->y};
    snprintf(s->name, sizeof s->name, "%s", pend->name[0] ? pend->name : "file");
    *have = false;
    while ((e = as__sm_dump_read(fp, &rec)) == 0) {
        if (strcmp(rec.name, pend->name) || rec.len != s->len ||
            rec.queries != s->queries || rec.causal != s->causal) {
            *pend = rec;
            *have = true;
            return 0;
        }
        float *y = realloc(s->y, (size_t)((s->rows + rec.rows) * s->len) *
                                     sizeof *y);
        if (!y) {
            free(rec.y);
            free(s->y);
            return AS_ENOMEM;
        }
        memcpy(y + s->rows * s->len, rec.y,
               (size_t)(rec.rows * rec.len) * sizeof *y);
        s->y = y;
        s->rows += rec.rows;
        free(rec.y);
    }
    if (e < 0) {
        free(s->y);
        return e;
    }
    return 0;
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
        "  --quick          1/8 of the rows, 1 repeat (for tests)\n"
        "  --no-synthetic   only the --rows files\n"
        "  --head-dim D     head dim of the attention forward that encode time\n"
        "                   is compared with (default 64)\n"
        "capture real rows (then pass the file to --rows):\n"
        "  actstore bench softmax --capture vit|lm --out FILE [--steps N]\n"
        "                 [--preset P] [--seed S]\n"
        "                   train N steps (default 1000, bench preset) with\n"
        "                   keep, then dump the softmax outputs of one more\n"
        "                   forward + backward of the next batch; then the\n"
        "                   whole-model gradient of that batch under each\n"
        "                   --policies codec against the exact one\n"
        "training step time per policy (runs stepped in turn, CPU time):\n"
        "  actstore bench softmax --step-time vit|lm [--steps N] [--preset P]\n"
        "                 [--policies keep,soa:5,...]   (default 40 steps)\n",
        default_policies);
}

/* The bench's options. */
typedef struct sm_opts {
    const char *json, *pols, *cap_model, *cap_out, *cap_preset, *st_model;
    unsigned long long cap_steps, cap_seed, reps;   /* cap_steps 0: default */
    const char *files[MAX_FILES];
    int nfiles, quick, synthetic;
} sm_opts;

/* One option with its value at argv[*i]; returns AS_CLI_RUN or an exit code. */
static int parse_value(sm_opts *o, const char *a, const char *v)
{
    if (!strcmp(a, "--json")) {
        o->json = v;
    } else if (!strcmp(a, "--capture")) {
        o->cap_model = v;
    } else if (!strcmp(a, "--step-time")) {
        o->st_model = v;
    } else if (!strcmp(a, "--out")) {
        o->cap_out = v;
    } else if (!strcmp(a, "--preset")) {
        o->cap_preset = v;
    } else if (!strcmp(a, "--steps")) {
        if (as_cli_parse_u64("bench", "--steps", v, &o->cap_steps))
            return AS_EXIT_USAGE;
    } else if (!strcmp(a, "--head-dim")) {
        unsigned long long hd;
        if (as_cli_parse_u64("bench", "--head-dim", v, &hd))
            return AS_EXIT_USAGE;
        if (hd < 1 || hd > 1024)
            return as_cli_usage("bench", "--head-dim: 1..1024");
        head_dim = (int)hd;
    } else if (!strcmp(a, "--seed")) {
        if (as_cli_parse_u64("bench", "--seed", v, &o->cap_seed))
            return AS_EXIT_USAGE;
    } else if (!strcmp(a, "--policies")) {
        o->pols = v;
    } else if (!strcmp(a, "--rows")) {
        if (o->nfiles == MAX_FILES)
            return as_cli_usage("bench", "softmax: at most %d --rows", MAX_FILES);
        o->files[o->nfiles++] = v;
    } else if (!strcmp(a, "--repeats")) {
        if (as_cli_parse_u64("bench", "--repeats", v, &o->reps))
            return AS_EXIT_USAGE;
        if (o->reps < 1 || o->reps > 15)
            return as_cli_usage("bench", "--repeats: 1..15");
    } else {
        return as_cli_usage("bench", "softmax: unknown option '%s'", a);
    }
    return AS_CLI_RUN;
}

static int parse_args(sm_opts *o, int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int r = AS_CLI_RUN;
        if (as_cli_is_help(a)) {
            usage(stdout);
            return AS_EXIT_OK;
        } else if (!strcmp(a, "--quick")) {
            o->quick = 1;
        } else if (!strcmp(a, "--no-synthetic")) {
            o->synthetic = 0;
        } else if (i + 1 >= argc) {
            return as_cli_usage("bench", "softmax: unknown option or missing value '%s'", a);
        } else {
            r = parse_value(o, a, argv[++i]);
        }
        if (r != AS_CLI_RUN)
            return r;
    }
    if ((o->cap_model || o->cap_out) && (!o->cap_model || !o->cap_out))
        return as_cli_usage("bench", "softmax: --capture needs --out FILE "
                            "and --out needs --capture MODEL");
    if (o->quick)
        o->reps = 1;
    return AS_CLI_RUN;
}

/* Split --policies at commas into specs (pointing into *buf, which the
 * caller frees) and check each. Returns the count, or -exit code. */
static int parse_policies(const char *pols, char **buf, char *specs[MAX_POL])
{
    int npol = 0;
    *buf = strdup(pols);
    if (!*buf)
        return -as_cli_fail("bench", "softmax: out of memory");
    for (char *t = strtok(*buf, ","); t && npol < MAX_POL; t = strtok(NULL, ","))
        specs[npol++] = t;
    for (int i = 0; i < npol; i++) {
        as__sm_params p;
        char err[160];
        if (as__sm_parse(specs[i], strlen(specs[i]), &p, err, sizeof err, NULL))
            return -as_cli_usage("bench", "--policies: '%s': %s", specs[i], err);
    }
    return npol;
}

/* Every row set of every --rows file, under every policy. */
static int bench_files(const sm_opts *o, char **specs, int npol, cJSON *results)
{
    int rc = AS_EXIT_OK;
    for (int f = 0; f < o->nfiles && rc == AS_EXIT_OK; f++) {
        FILE *fp = fopen(o->files[f], "rb");
        if (!fp)
            return as_cli_fail("bench", "softmax: cannot open %s", o->files[f]);
        as__sm_dump_rec pend;
        bool have = false;
        for (int setno = 0;; setno++) {
            rowset s;
            int e = read_rowset(fp, &pend, &have, &s);
            if (e == 1)
                break;
            if (e) {
                rc = as_cli_fail("bench", "softmax: %s: row set %d: %s",
                                 o->files[f], setno, as_strerror(e));
                break;
            }
            double at = attn_fwd_s(&s, (int)o->reps);
            for (int i = 0; i < npol && rc == AS_EXIT_OK; i++)
                rc = bench_one(&s, specs[i], (int)o->reps, at, results);
            free(s.y);
        }
        if (have)
            free(pend.y);
        fclose(fp);
    }
    return rc;
}

/* The synthetic row sets: lengths x logit spreads x (padded, causal). */
static int bench_synthetic(const sm_opts *o, char **specs, int npol, cJSON *results)
{
    static const int64_t lens[] = {50, 128, 256, 1024};
    static const double sds[] = {1, 2, 4};
    int rc = AS_EXIT_OK;
    for (int li = 0; li < 4 && rc == AS_EXIT_OK; li++)
        for (int si = 0; si < 3 && rc == AS_EXIT_OK; si++)
            for (int c = 0; c < 2 && rc == AS_EXIT_OK; c++) {
                rowset s;
                if (synth(&s, lens[li], sds[si], c == 1, o->quick ? 1 << 17 : 1 << 20))
                    return as_cli_fail("bench", "softmax: out of memory");
                double at = attn_fwd_s(&s, (int)o->reps);
                for (int i = 0; i < npol && rc == AS_EXIT_OK; i++)
                    rc = bench_one(&s, specs[i], (int)o->reps, at, results);
                free(s.y);
            }
    return rc;
}

/* The codec benches (files, synthetic rows, the rank code's order). */
static int bench_codecs(const sm_opts *o, char **specs, int npol, cJSON *root)
{
    cJSON *results = cJSON_GetObjectItem(root, "results");
    int rc = bench_files(o, specs, npol, results);
    if (rc == AS_EXIT_OK && o->synthetic)
        rc = bench_synthetic(o, specs, npol, results);
    if (rc == AS_EXIT_OK) {
        cJSON *order = cJSON_CreateArray();
        cJSON_AddItemToObject(root, "order", order);
        bench_order(order, (int)o->reps, o->quick);
    }
    return rc;
}

int as_bench_softmax(int argc, char **argv)
{
    sm_opts o = {.pols = default_policies, .cap_preset = "bench", .cap_seed = 1, .reps = 3,
                 .synthetic = 1};
    int rc = parse_args(&o, argc, argv);
    if (rc != AS_CLI_RUN)
        return rc;
    /* one thread: codecs run on the training thread; an idle OpenBLAS pool
     * spinning in sched_yield would also steal the core from them */
    openblas_set_num_threads(1);
    char *specs[MAX_POL], *pbuf = NULL;
    int npol = parse_policies(o.pols, &pbuf, specs);
    if (npol < 0) {
        free(pbuf);   /* after the message: specs point into it */
        return -npol;
    }
    cJSON *root = cJSON_CreateObject(), *results = cJSON_CreateArray();
    cJSON_AddStringToObject(root, "bench", "softmax");
    cJSON_AddItemToObject(root, "results", results);
    if (o.st_model) {
        cJSON *sa = cJSON_CreateArray();
        cJSON_AddItemToObject(root, "step_time", sa);
        rc = step_time(o.st_model, o.cap_preset, o.cap_steps ? (long)o.cap_steps : 40,
                       o.cap_seed, specs, npol, sa);
    } else if (o.cap_model) {
        cJSON *mg = cJSON_CreateArray();
        cJSON_AddItemToObject(root, "model_grad", mg);
        cJSON_AddStringToObject(root, "capture", o.cap_model);
        cJSON_AddNumberToObject(root, "capture_steps", (double)o.cap_steps);
        rc = capture(o.cap_model, o.cap_preset, o.cap_steps ? (long)o.cap_steps : 1000,
                     o.cap_seed, o.cap_out, specs, npol, mg);
    } else {
        rc = bench_codecs(&o, specs, npol, root);
    }
    if (rc == AS_EXIT_OK && o.json && as_cli_write_json("bench", o.json, root))
        rc = AS_EXIT_FAIL;
    cJSON_Delete(root);
    free(pbuf);
    return rc;
}

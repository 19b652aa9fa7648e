/*
 * The `auto` planner and the saved-bytes budget: the saved peak stays
 * within every budget (probe steps included, and the first step before any
 * plan), an impossible budget fails at the first step naming the smallest
 * reachable one, the plan is deterministic for the same data, it changes
 * when the budget changes between steps, the budget binds fixed rules too,
 * sensitivity reports are validated, weigh the plan and move its bytes,
 * spec arguments, row-wise derivations offered as recompute.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "actstore/store.h"
#include "util/rng.h"
#include "support/store_util.h"
#include "support/test_main.h"

/* ---- a small synthetic model: the same tensors every step ------------------ */

typedef struct tdesc {
    const char *layer;
    int         kind;
    int64_t     rows, cols;
} tdesc;

static const tdesc model[] = {
    {"embed", AS_KIND_LINEAR_INPUT, 64, 96},
    {"block.ln", AS_KIND_NORM_INPUT, 64, 96},
    {"block.ln", AS_KIND_GENERIC, 2, 64},
    {"block.attn", AS_KIND_SOFTMAX_OUTPUT, 128, 64},
    {"block.fc1", AS_KIND_LINEAR_INPUT, 64, 96},
    {"block.gelu", AS_KIND_ACTIVATION_INPUT, 64, 384},
    {"block.fc2", AS_KIND_LINEAR_INPUT, 64, 384},
    {"head", AS_KIND_LINEAR_INPUT, 64, 96},
};
#define NT (sizeof model / sizeof model[0])

/* Values: a pure function of (step, tensor): the same data for two
 * stores, a little different every step (weights change). */
static void fill(uint64_t step, size_t t, float *x)
{
    const tdesc *d = &model[t];
    uint64_t rng = 0x9e3779b97f4a7c15ull * (step * 16 + t + 1);
    for (int64_t r = 0; r < d->rows; r++) {
        float *row = x + r * d->cols;
        for (int64_t c = 0; c < d->cols; c++)
            row[c] = (float)((as_rng_u01(&rng) - 0.5) * (1.0 + (double)t)) +
                     0.01f * (float)(c % 17);
        if (d->kind == AS_KIND_SOFTMAX_OUTPUT) {   /* a softmax row */
            double s = 0;
            for (int64_t c = 0; c < d->cols; c++)
                s += row[c] = expf(4.0f * row[c]);
            for (int64_t c = 0; c < d->cols; c++)
                row[c] = (float)(row[c] / s);
        }
    }
}

/* One training step: save every tensor, restore and report each, release.
 * Returns 0 or the first error; *peak gets the step's saved peak. */
static int step(as_store *s, uint64_t k, uint64_t *peak)
{
    as_handle h[NT] = {{0}};
    float *x = malloc(384 * 128 * sizeof *x), *y = malloc(384 * 128 * sizeof *y);
    assert_non_null(x);
    assert_non_null(y);
    int rc = 0;
    as_store_step_begin(s, k);
    as_store_phase(s, AS_PHASE_FORWARD);
    for (size_t t = 0; t < NT && !rc; t++) {
        const tdesc *d = &model[t];
        fill(k, t, x);
        as_save_info info = {.kind = d->kind, .layer = d->layer};
        if (d->kind == AS_KIND_SOFTMAX_OUTPUT)
            info.meta.softmax = (as_softmax_meta){.row_len = d->cols,
                                                  .queries = d->rows};
        as_tensor ten = {.data = x, .dtype = AS_F32, .ndim = 2,
                         .shape = {d->rows, d->cols}};
        rc = as_store_save(s, &info, &ten, &h[t]);
    }
    as_store_phase(s, AS_PHASE_BACKWARD);
    for (size_t t = NT; t-- > 0 && !rc;) {
        const tdesc *d = &model[t];
        as_tensor dst = {.data = y, .dtype = AS_F32, .ndim = 2,
                         .shape = {d->rows, d->cols}};
        assert_int_equal(as_store_restore(s, h[t], &dst), 0);
        for (int64_t i = 0; i < d->rows * d->cols; i++)
            assert_true(isfinite(y[i]));
        assert_int_equal(as_store_report_grad(s, h[t], 1.0 + (double)t), 0);
        assert_int_equal(as_store_release(s, h[t]), 0);
    }
    as_store_stats st;
    assert_int_equal(as_store_stats_take(s, &st), 0);
    if (peak)
        *peak = st.total.stored_peak;
    as_store_stats_free(&st);
    as_store_step_end(s);
    free(x);
    free(y);
    return rc;
}

static as_store *mk(const char *spec)
{
    as_store_config cfg = {.policy = spec, .label = "auto"};
    as_store *s = NULL;
    char err[256];
    assert_int_equal(as_store_create(&cfg, &s, err, sizeof err), 0);
    return s;
}

static as_store_plan plan_of(as_store *s)
{
    as_store_plan p;
    assert_int_equal(as_store_plan_take(s, &p), 0);
    return p;
}

static uint64_t keep_bytes(void)
{
    uint64_t n = 0;
    for (size_t t = 0; t < NT; t++)
        n += (uint64_t)(model[t].rows * model[t].cols) * sizeof(float);
    return n;
}

/* ---- the budget holds -------------------------------------------------------- */

static void test_budget_holds_at_several_budgets(void **st)
{
    (void)st;
    as_store *s = mk("default=auto");
    uint64_t peak;
    for (uint64_t k = 0; k < 2; k++)   /* measure, no budget: keep */
        assert_int_equal(step(s, k, &peak), 0);
    assert_int_equal(peak, keep_bytes());
    as_store_plan p = plan_of(s);
    assert_true(p.active && p.measured && p.feasible);
    assert_int_equal(p.keep_bytes, keep_bytes());
    assert_int_equal(p.n, NT);   /* one group per (layer, kind) */
    const uint64_t minb = p.min_bytes;
    assert_true(minb > 0 && minb < keep_bytes() / 8);
    as_store_plan_free(&p);

    const double fracs[] = {1.0, 0.5, 0.3, 0.2, 0.12, 0.0};
    uint64_t k = 2;
    for (size_t f = 0; f < sizeof fracs / sizeof fracs[0]; f++) {
        uint64_t b = fracs[f] > 0 ? (uint64_t)((double)keep_bytes() * fracs[f]) : minb;
        if (b < minb)
            b = minb;
        assert_int_equal(as_store_set_budget(s, b), 0);
        assert_int_equal(as_store_budget(s), b);
        p = plan_of(s);
        assert_true(p.feasible);
        assert_true(p.planned_bytes <= b);
        as_store_plan_free(&p);
        for (int r = 0; r < 3; r++, k++) {
            assert_int_equal(step(s, k, &peak), 0);
            assert_true(peak <= b);
        }
    }
    /* a probe step (every period) stays within the budget too */
    as_store_set_policy(s, "default=auto:1", NULL, 0);
    uint64_t b = keep_bytes() / 5;
    assert_int_equal(as_store_set_budget(s, b), 0);
    for (int r = 0; r < 3; r++, k++) {
        assert_int_equal(step(s, k, &peak), 0);
        assert_true(peak <= b);
    }
    p = plan_of(s);
    assert_true(p.probes >= 4);
    as_store_plan_free(&p);
    as_store_destroy(s);
}

/* A budget given before anything is known: the first step stores every
 * tensor in its most compact form and stays within it. */
static void test_budget_from_the_first_step(void **st)
{
    (void)st;
    as_store *s = mk("default=auto");
    const uint64_t b = keep_bytes() / 6;
    assert_int_equal(as_store_set_budget(s, b), 0);
    for (uint64_t k = 0; k < 4; k++) {
        uint64_t peak;
        assert_int_equal(step(s, k, &peak), 0);
        assert_true(peak <= b);
    }
    as_store_plan p = plan_of(s);
    assert_true(p.feasible && p.planned_bytes <= b);
    as_store_plan_free(&p);
    as_store_destroy(s);
}

/* A pending budget (the measuring step of `--ratio`): the first step
 * holds the most compact forms, not keep's bytes, while keep's bytes are
 * still counted for the ratio; the budget set after it ends the pending
 * state and binds from the next step. */
static void test_pending_budget_measures_compactly(void **st)
{
    (void)st;
    assert_int_equal(as_store_budget_pending(NULL), AS_EINVAL);
    as_store *s = mk("default=auto");
    assert_int_equal(as_store_budget_pending(s), 0);
    assert_int_equal(as_store_budget(s), 0);
    uint64_t peak;
    assert_int_equal(step(s, 0, &peak), 0);
    as_store_plan p = plan_of(s);
    assert_true(p.measured);
    assert_int_equal(p.keep_bytes, keep_bytes());
    assert_true(peak < keep_bytes() / 6);
    assert_true(peak <= p.min_bytes + p.min_bytes / 20);
    const uint64_t b = p.keep_bytes / 6;
    as_store_plan_free(&p);
    assert_int_equal(as_store_set_budget(s, b), 0);
    for (uint64_t k = 1; k < 4; k++) {
        assert_int_equal(step(s, k, &peak), 0);
        assert_true(peak <= b);
    }
    /* the budget removed: no longer pending, so the plan is keep's */
    assert_int_equal(as_store_set_budget(s, 0), 0);
    assert_int_equal(step(s, 4, &peak), 0);
    assert_int_equal(peak, keep_bytes());
    as_store_destroy(s);

    /* pending, then a budget below what auto can reach: refused with the
     * exact figure after the measuring step */
    s = mk("default=auto");
    assert_int_equal(as_store_budget_pending(s), 0);
    assert_int_equal(step(s, 0, NULL), 0);
    p = plan_of(s);
    assert_int_equal(as_store_set_budget(s, p.min_bytes - 1), AS_EBUDGET);
    char want[64];
    snprintf(want, sizeof want, "smallest budget auto can reach is %llu bytes",
             (unsigned long long)p.min_bytes);
    assert_non_null(strstr(as_store_last_error(s), want));
    as_store_plan_free(&p);
    as_store_destroy(s);
}

static void test_impossible_budget_fails_at_the_first_step(void **st)
{
    (void)st;
    as_store *s = mk("default=auto");
    assert_int_equal(as_store_set_budget(s, 2000), 0);
    uint64_t peak;
    assert_int_equal(step(s, 0, &peak), AS_EBUDGET);
    assert_true(peak <= 2000);
    const char *e = as_store_last_error(s);
    assert_non_null(strstr(e, "budget 2000 bytes cannot be met"));
    assert_non_null(strstr(e, "smallest budget auto can reach is at least"));
    as_store_destroy(s);

    /* Measured: the exact smallest budget, and the old budget stays. */
    s = mk("default=auto");
    assert_int_equal(step(s, 0, NULL), 0);
    assert_int_equal(step(s, 1, NULL), 0);
    as_store_plan p = plan_of(s);
    char want[64];
    snprintf(want, sizeof want, "smallest budget auto can reach is %llu bytes",
             (unsigned long long)p.min_bytes);
    assert_int_equal(as_store_set_budget(s, p.min_bytes - 1), AS_EBUDGET);
    assert_non_null(strstr(as_store_last_error(s), want));
    assert_int_equal(as_store_budget(s), 0);
    assert_int_equal(as_store_set_budget(s, p.min_bytes), 0);
    assert_int_equal(step(s, 2, &peak), 0);
    assert_true(peak <= p.min_bytes);
    as_store_plan_free(&p);
    as_store_destroy(s);
}

/* ---- deciding ------------------------------------------------------------------ */

static void test_plan_is_deterministic(void **st)
{
    (void)st;
    /* the default spec: time does not enter the plan */
    as_store *s[2] = {mk("default=auto"), mk("default=auto")};
    for (int a = 0; a < 2; a++) {
        assert_int_equal(as_store_set_budget(s[a], keep_bytes() / 5), 0);
        for (uint64_t k = 0; k < 3; k++)
            assert_int_equal(step(s[a], k, NULL), 0);
    }
    as_store_plan p0 = plan_of(s[0]), p1 = plan_of(s[1]);
    assert_int_equal(p0.n, p1.n);
    assert_int_equal(p0.planned_bytes, p1.planned_bytes);
    for (size_t i = 0; i < p0.n; i++) {
        assert_string_equal(p0.entries[i].layer, p1.entries[i].layer);
        assert_int_equal(p0.entries[i].kind, p1.entries[i].kind);
        assert_string_equal(p0.entries[i].policy, p1.entries[i].policy);
        assert_true(p0.entries[i].rel_error == p1.entries[i].rel_error);
    }
    as_store_plan_free(&p0);
    as_store_plan_free(&p1);
    for (int a = 0; a < 2; a++)
        as_store_destroy(s[a]);
}

static size_t count_policy(const as_store_plan *p, const char *name)
{
    size_t n = 0;
    for (size_t i = 0; i < p->n; i++)
        n += !strcmp(p->entries[i].policy, name);
    return n;
}

static void test_plan_follows_the_budget(void **st)
{
    (void)st;
    as_store *s = mk("default=auto");
    assert_int_equal(step(s, 0, NULL), 0);
    assert_int_equal(step(s, 1, NULL), 0);
    /* room for everything: nothing is lossy */
    assert_int_equal(as_store_set_budget(s, keep_bytes()), 0);
    as_store_plan p = plan_of(s);
    assert_int_equal(count_policy(&p, "keep"), p.n);
    as_store_plan_free(&p);
    uint64_t peak;
    assert_int_equal(step(s, 2, &peak), 0);
    assert_int_equal(peak, keep_bytes());
    /* a sixth: the next step stores less, under another plan */
    const uint64_t b = keep_bytes() / 6;
    assert_int_equal(as_store_set_budget(s, b), 0);
    p = plan_of(s);
    assert_true(count_policy(&p, "keep") < p.n);
    size_t lossless = 0;
    for (size_t i = 0; i < p.n; i++) {
        assert_true(p.entries[i].stored_bytes <= p.entries[i].raw_bytes);
        assert_true(p.entries[i].cosine > 0.5 && p.entries[i].cosine <= 1.0 + 1e-9);
        lossless += p.entries[i].rel_error == 0;
    }
    assert_true(lossless < p.n);
    as_store_plan_free(&p);
    assert_int_equal(step(s, 3, &peak), 0);
    assert_true(peak <= b);
    /* the budget removed: least error again */
    assert_int_equal(as_store_set_budget(s, 0), 0);
    p = plan_of(s);
    assert_int_equal(count_policy(&p, "keep"), p.n);
    as_store_plan_free(&p);
    as_store_destroy(s);
}

static const as_store_plan_entry *entry(const as_store_plan *p,
                                        const char *layer, int kind)
{
    for (size_t i = 0; i < p->n; i++)
        if (!strcmp(p->entries[i].layer, layer) && p->entries[i].kind == kind)
            return &p->entries[i];
    fail_msg("no plan entry for %s", layer);
    return NULL;
}

/* Sensitivity: a tensor whose error reaches the input gradient weighs
 * sqrt(1 + input_weight) -- every kind but a linear / conv input, and a
 * linear input that a second backward reads too (here "ln"'s output, which
 * "qkv" saves as an alias; the reports of both reach ln's group although
 * the alias renames the item). A linear input read once weighs 1. */
static void alias_step(as_store *s, uint64_t k, bool report)
{
    static const char *const names[] = {"ln", "qkv", "fc"};
    float *x = malloc(64 * 96 * sizeof *x);
    assert_non_null(x);
    as_handle h[4];
    as_store_step_begin(s, k);
    for (int t = 0; t < 3; t++) {
        fill(k, (size_t)t, x);
        as_save_info info = {.kind = AS_KIND_LINEAR_INPUT, .layer = names[t]};
        if (t == 1)
            info.alias_of = h[0];
        as_tensor ten = {.data = x, .dtype = AS_F32, .ndim = 2, .shape = {64, 96}};
        assert_int_equal(as_store_save(s, &info, &ten, &h[t]), 0);
    }
    as_save_info gi = {.kind = AS_KIND_GENERIC, .layer = "ln"};
    as_tensor st = {.data = x, .dtype = AS_F32, .ndim = 1, .shape = {64}};
    assert_int_equal(as_store_save(s, &gi, &st, &h[3]), 0);
    for (int t = 3; t >= 0; t--) {
        if (report)
            assert_int_equal(as_store_report_grad(s, h[t], 1.0), 0);
        assert_int_equal(as_store_release(s, h[t]), 0);
    }
    as_store_step_end(s);
    free(x);
}

static void test_sensitivity_weights(void **st)
{
    (void)st;
    static const struct { const char *spec; bool report; double w2[3]; } cases[] = {
        /* weights^2 of ln (linear input), fc (linear input), ln (generic) */
        {"default=auto", true, {2, 1, 2}},
        {"default=auto", false, {1, 1, 2}},   /* no reports: by kind only */
        {"default=auto:100:0.1:3", true, {4, 1, 4}},
        {"default=auto:100:0.1:0", true, {1, 1, 1}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        as_store *s = mk(cases[c].spec);
        alias_step(s, 0, cases[c].report);
        alias_step(s, 1, cases[c].report);
        as_store_plan p = plan_of(s);
        assert_int_equal(p.n, 3);   /* the alias is no group of its own */
        double w[3] = {entry(&p, "ln", AS_KIND_LINEAR_INPUT)->weight,
                       entry(&p, "fc", AS_KIND_LINEAR_INPUT)->weight,
                       entry(&p, "ln", AS_KIND_GENERIC)->weight};
        for (int i = 0; i < 3; i++)
            assert_float_equal(w[i] * w[i], cases[c].w2[i], 1e-12);
        as_store_plan_free(&p);
        as_store_destroy(s);
    }

    as_store *s = mk("default=auto");
    as_handle h;
    float v[4] = {1, 2, 3, 4};
    as_tensor t = {.data = v, .dtype = AS_F32, .ndim = 1, .shape = {4}};
    as_save_info info = {.kind = AS_KIND_GENERIC, .layer = "x"};
    assert_int_equal(as_store_save(s, &info, &t, &h), 0);
    assert_int_equal(as_store_report_grad(s, h, -1), AS_EINVAL);
    assert_int_equal(as_store_report_grad(s, h, NAN), AS_EINVAL);
    assert_int_equal(as_store_report_grad(s, h, INFINITY), AS_EINVAL);
    assert_int_equal(as_store_report_grad(s, h, 0.5), 0);
    assert_int_equal(as_store_release(s, h), 0);
    assert_int_equal(as_store_report_grad(s, h, 0.5), AS_EHANDLE);
    assert_int_equal(as_store_report_grad(NULL, h, 0.5), AS_EINVAL);
    as_store_destroy(s);
}

/* The weights move bytes: at the same budget, a large input_weight buys
 * the tensors that reach the input gradient (norm, generic, softmax,
 * activation) less error than input_weight 0 does, and the linear inputs
 * pay for it. */
static double weighted_err(const as_store_plan *p, bool reaching)
{
    double e = 0;
    for (size_t i = 0; i < p->n; i++)
        if ((p->entries[i].kind != AS_KIND_LINEAR_INPUT) == reaching)
            e += p->entries[i].rel_error * p->entries[i].rel_error;
    return e;
}

static void test_input_weight_moves_bytes(void **st)
{
    (void)st;
    double reach[2], local[2];
    const char *spec[2] = {"default=auto:100:0:0", "default=auto:100:0:100"};
    for (int i = 0; i < 2; i++) {
        as_store *s = mk(spec[i]);
        assert_int_equal(step(s, 0, NULL), 0);
        assert_int_equal(step(s, 1, NULL), 0);
        assert_int_equal(as_store_set_budget(s, keep_bytes() / 8), 0);
        uint64_t peak;
        assert_int_equal(step(s, 2, &peak), 0);
        assert_true(peak <= keep_bytes() / 8);
        as_store_plan p = plan_of(s);
        reach[i] = weighted_err(&p, true);
        local[i] = weighted_err(&p, false);
        as_store_plan_free(&p);
        as_store_destroy(s);
    }
    assert_true(reach[1] < reach[0]);
    assert_true(local[1] > local[0]);
}

/* ---- declared derivations ------------------------------------------------------- */

/* y = x W^T + row index, the rows on their own (a qkv linear's output). */
enum { DX_ROWS = 64, DX_IN = 96, DX_OUT = 288 };
static float dW[DX_OUT * DX_IN];

static int derive_rows(void *ud, const as_tensor *const *in, size_t n,
                       as_tensor *out)
{
    (void)ud, (void)n;
    int64_t rows = as_tensor_numel(in[0]) / DX_IN;
    const float *x = in[0]->data;
    float *y = out->data;
    for (int64_t r = 0; r < rows; r++)
        for (int o = 0; o < DX_OUT; o++) {
            float a = 0;
            for (int i = 0; i < DX_IN; i++)
                a += x[r * DX_IN + i] * dW[o * DX_IN + i];
            y[r * DX_OUT + o] = a;
        }
    return 0;
}

/* One step: x (linear input), y derived from it (attention input, saved
 * with its derivation, row-wise or not); backward restores y's rows, which
 * must be the callback on x's restored rows whatever policy y got. */
static bool derive_step(as_store *s, uint64_t k, bool rows, uint64_t *peak)
{
    float *x = malloc(DX_ROWS * DX_IN * sizeof *x);
    float *y = malloc(DX_ROWS * DX_OUT * sizeof *y);
    float *xr = malloc(DX_ROWS * DX_IN * sizeof *xr);
    float *yr = malloc(DX_ROWS * DX_OUT * sizeof *yr);
    float *want = malloc(DX_ROWS * DX_OUT * sizeof *want);
    assert_true(x && y && xr && yr && want);
    fill(k, 0, x);
    as_tensor xt = {.data = x, .dtype = AS_F32, .ndim = 2, .shape = {DX_ROWS, DX_IN}};
    as_tensor yt = {.data = y, .dtype = AS_F32, .ndim = 2, .shape = {DX_ROWS, DX_OUT}};
    assert_int_equal(derive_rows(NULL, (const as_tensor *const[]){&xt}, 1, &yt), 0);
    as_handle hx, hy;
    as_store_step_begin(s, k);
    as_store_phase(s, AS_PHASE_FORWARD);
    as_save_info xi = {.kind = AS_KIND_LINEAR_INPUT, .layer = "ln"};
    assert_int_equal(as_store_save(s, &xi, &xt, &hx), 0);
    as_save_info yi = {.kind = AS_KIND_ATTENTION_INPUT, .layer = "attn",
                       .recompute = derive_rows, .recompute_inputs = &hx,
                       .recompute_ninputs = 1, .recompute_rows = rows};
    assert_int_equal(as_store_save(s, &yi, &yt, &hy), 0);
    as_store_phase(s, AS_PHASE_BACKWARD);
    for (int r0 = 0; r0 < DX_ROWS; r0 += 16) {
        assert_int_equal(as_store_restore_rows(s, hy, r0, 16, yr + r0 * DX_OUT), 0);
        assert_int_equal(as_store_restore_rows(s, hx, r0, 16, xr + r0 * DX_IN), 0);
    }
    bool regen = !strcmp(as_store_policy_of(s, hy), "recompute (auto)");
    if (regen) {
        as_tensor xd = xt, wt = yt;
        xd.data = xr;
        wt.data = want;
        assert_int_equal(derive_rows(NULL, (const as_tensor *const[]){&xd}, 1, &wt), 0);
        assert_memory_equal(yr, want, DX_ROWS * DX_OUT * sizeof *yr);
    }
    assert_int_equal(as_store_report_grad(s, hy, 1.0), 0);
    assert_int_equal(as_store_report_grad(s, hx, 1.0), 0);
    assert_int_equal(as_store_release(s, hy), 0);
    assert_int_equal(as_store_release(s, hx), 0);
    as_store_stats st;
    assert_int_equal(as_store_stats_take(s, &st), 0);
    *peak = st.total.stored_peak;
    as_store_stats_free(&st);
    as_store_step_end(s);
    free(x), free(y), free(xr), free(yr), free(want);
    return regen;
}

/* auto offers recompute for a row-wise derivation (nothing stored, the
 * error measured through the restored input), and only then: not for a
 * derivation that is not row-wise, nor with derive 0; the budget holds
 * either way. */
static void test_recompute_candidate(void **st)
{
    (void)st;
    uint64_t r = 7;
    for (size_t i = 0; i < sizeof dW / sizeof dW[0]; i++)
        dW[i] = (float)(as_rng_u01(&r) - 0.5) * 0.2f;
    const uint64_t keep = (uint64_t)DX_ROWS * (DX_IN + DX_OUT) * sizeof(float);
    static const struct { const char *spec; bool rows, recompute; } cases[] = {
        {"default=auto", true, true},
        {"default=auto", false, false},
        {"default=auto:100:0:1:0", true, false},
        {"default=auto:100:0:1:1", true, true},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        as_store *s = mk(cases[c].spec);
        uint64_t budget = keep / 6, peak;
        assert_int_equal(as_store_set_budget(s, budget), 0);
        for (uint64_t k = 0; k < 3; k++) {
            bool regen = derive_step(s, k, cases[c].rows, &peak);
            assert_true(peak <= budget);
            if (k == 2)
                assert_int_equal(regen, cases[c].recompute);
        }
        as_store_plan p = plan_of(s);
        const as_store_plan_entry *e = entry(&p, "attn", AS_KIND_ATTENTION_INPUT);
        assert_int_equal(!strcmp(e->policy, "recompute"), cases[c].recompute);
        if (cases[c].recompute) {
            assert_int_equal(e->stored_bytes, 0);
            /* its error is the input's carried through W, measured on a
             * probe step: below what y's own 4-bit codes give (~0.1) */
            assert_true(e->rel_error > 0 && e->rel_error < 0.05);
        }
        as_store_plan_free(&p);
        as_store_destroy(s);
    }
}

/* ---- the budget binds every rule ------------------------------------------------ */

static void test_budget_binds_fixed_rules(void **st)
{
    (void)st;
    as_store *s = mk("default=keep");
    as_store_plan p = plan_of(s);
    assert_false(p.active);
    assert_int_equal(p.n, 0);
    as_store_plan_free(&p);
    assert_int_equal(as_store_set_budget(s, 1000), 0);
    float v[512] = {0};
    as_tensor t = {.data = v, .dtype = AS_F32, .ndim = 1, .shape = {512}};
    as_save_info info = {.kind = AS_KIND_LINEAR_INPUT, .layer = "fc"};
    as_handle h;
    assert_int_equal(as_store_save(s, &info, &t, &h), AS_EBUDGET);
    assert_true(as_handle_is_null(h));
    assert_non_null(strstr(as_store_last_error(s), "saved-bytes budget 1000"));
    t.shape[0] = 200;   /* 800 bytes fit */
    assert_int_equal(as_store_save(s, &info, &t, &h), 0);
    as_handle h2;
    assert_int_equal(as_store_save(s, &info, &t, &h2), AS_EBUDGET);
    assert_int_equal(as_store_release(s, h), 0);
    assert_int_equal(as_store_save(s, &info, &t, &h2), 0);
    as_store_stats sst;
    assert_int_equal(as_store_stats_take(s, &sst), 0);
    assert_true(sst.total.stored_peak <= 1000);
    as_store_stats_free(&sst);
    assert_int_equal(as_store_set_budget(s, 0), 0);
    t.shape[0] = 512;
    assert_int_equal(as_store_save(s, &info, &t, &h), 0);
    assert_int_equal(as_store_set_budget(NULL, 1), AS_EINVAL);
    assert_int_equal(as_store_budget(NULL), 0);
    as_store_destroy(s);
}

/* Adopted blocks (keep's zero-copy) count against the budget as well. */
static void test_budget_binds_adopted_blocks(void **st)
{
    (void)st;
    as_store *s = mk("default=keep");
    assert_int_equal(as_store_set_budget(s, 1000), 0);
    as_block b;
    assert_int_equal(as_alloc(as_store_arena(s), 2048, AS_TAG_ACTIVATIONS, 0, &b), 0);
    memset(b.ptr, 0, 2048);
    as_tensor t = {.data = b.ptr, .dtype = AS_F32, .ndim = 1, .shape = {512}};
    as_save_info info = {.kind = AS_KIND_LINEAR_INPUT, .layer = "fc"};
    as_handle h;
    assert_int_equal(as_store_save_adopt(s, &info, &t, &b, &h), AS_EBUDGET);
    as_free(as_store_arena(s), &b);   /* still the caller's */
    as_store_destroy(s);
}

static void test_spec_arguments(void **st)
{
    (void)st;
    spec_ok("default=auto");
    spec_ok("default=auto:50:0.25");
    spec_ok("linear_input=auto:0; default=keep");
    spec_err("default=auto:x", "period");
    spec_err("default=auto:5:-1", "time_weight");
    spec_ok("default=auto:50:0.25:2");
    spec_err("default=auto:5:0:-1", "input_weight");
    spec_ok("default=auto:5:0:1:0");
    spec_err("default=auto:5:0:1:2", "derive");
    spec_err("default=auto:5:0:1:1:1", "derive");
    spec_err("default=auto:5:0:", NULL);
}

/* Only some kinds under auto: the others are fixed bytes in the plan. */
static void test_mixed_rules(void **st)
{
    (void)st;
    as_store *s = mk("softmax=sotk:16:3; linear_input=auto; default=keep");
    assert_int_equal(step(s, 0, NULL), 0);
    assert_int_equal(step(s, 1, NULL), 0);
    as_store_plan p = plan_of(s);
    assert_int_equal(p.n, 4);   /* embed, fc1, fc2, head */
    assert_true(p.fixed_bytes > 0);
    uint64_t b = p.fixed_bytes + (p.keep_bytes - p.fixed_bytes) / 20;
    if (b < p.min_bytes)
        b = p.min_bytes;
    as_store_plan_free(&p);
    assert_int_equal(as_store_set_budget(s, b), 0);
    uint64_t peak;
    assert_int_equal(step(s, 2, &peak), 0);
    assert_true(peak <= b);
    as_store_destroy(s);
}

AS_TEST_MAIN(NULL, NULL,
             cmocka_unit_test(test_budget_holds_at_several_budgets),
             cmocka_unit_test(test_budget_from_the_first_step),
             cmocka_unit_test(test_pending_budget_measures_compactly),
             cmocka_unit_test(test_impossible_budget_fails_at_the_first_step),
             cmocka_unit_test(test_plan_is_deterministic),
             cmocka_unit_test(test_plan_follows_the_budget),
             cmocka_unit_test(test_sensitivity_weights),
             cmocka_unit_test(test_input_weight_moves_bytes),
             cmocka_unit_test(test_budget_binds_fixed_rules),
             cmocka_unit_test(test_budget_binds_adopted_blocks),
             cmocka_unit_test(test_spec_arguments),
             cmocka_unit_test(test_mixed_rules),
             cmocka_unit_test(test_recompute_candidate))

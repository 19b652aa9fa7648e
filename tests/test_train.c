/*
 * Training runs (layers/train.h): presets, bit-for-bit determinism, the
 * step-wise API (gradients without update are pure, weights copy between
 * runs, batch k depends only on (seed, k)), evaluation, memory figures and
 * clear errors. Uses the small presets on the real data sets (Debian
 * packages dataset-fashion-mnist and fortunes); a few seconds in all.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "layers/train.h"
#include "support/runs.h"

static as_nn_preset preset(const char *model, long steps)
{
    as_nn_preset p;
    assert_int_equal(as_nn_preset_get(model, "small", &p), 0);
    p.steps = steps;
    p.epochs = 0;
    return p;
}

/* All parameters (w or g) of a run, concatenated (malloc). */
static float *flat(const as_nn_run *r, bool grads, size_t *n)
{
    const as_nn_params *ps = as_nn_run_params(r);
    size_t tot = as_nn_params_count(ps), o = 0;
    float *v = malloc(tot * sizeof *v);
    for (size_t i = 0; i < ps->n; i++) {
        memcpy(v + o, grads ? ps->p[i]->g.ptr : ps->p[i]->w.ptr,
               ps->p[i]->n * sizeof(float));
        o += ps->p[i]->n;
    }
    *n = tot;
    return v;
}

static float *flat_bufs(as_nn_run *r, size_t *n)
{
    as_nn_model *m = as_nn_run_model(r);
    size_t tot = 0, o = 0;
    for (size_t i = 0; i < m->nbufs; i++)
        tot += m->bufs[i].n;
    float *v = malloc((tot + 1) * sizeof *v);
    for (size_t i = 0; i < m->nbufs; i++) {
        memcpy(v + o, m->bufs[i].p, m->bufs[i].n * sizeof(float));
        o += m->bufs[i].n;
    }
    *n = tot;
    return v;
}

static double norm2(const float *v, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += (double)v[i] * v[i];
    return sqrt(s);
}

/* ---- presets --------------------------------------------------------------- */

static void test_presets(void **state)
{
    (void)state;
    const char *models[] = {"cnn", "vit", "lm"}, *names[] = {"small", "bench"};
    for (int m = 0; m < 3; m++)
        for (int k = 0; k < 2; k++) {
            as_nn_preset p;
            assert_int_equal(as_nn_preset_get(models[m], names[k], &p), 0);
            assert_string_equal(p.model, models[m]);
            assert_string_equal(p.name, names[k]);
            assert_true(p.batch > 0 && p.lr > 0);
            assert_true(p.steps > 0 || p.epochs > 0);
            if (m == 0)   /* Cout >= Cin everywhere, so inversion can apply */
                for (int s = 1; s < p.cnn.nstages; s++)
                    assert_true(p.cnn.widths[s] >= p.cnn.widths[s - 1]);
        }
    /* the larger presets (docs/training.md): lm long, vit and cnn wide */
    const char *big[][2] = {{"lm", "long"}, {"vit", "wide"}, {"cnn", "wide"}};
    for (int i = 0; i < 3; i++) {
        as_nn_preset p, b;
        assert_int_equal(as_nn_preset_get(big[i][0], big[i][1], &p), 0);
        assert_int_equal(as_nn_preset_get(big[i][0], "bench", &b), 0);
        assert_true(p.steps > 0 && p.eval_limit > 0);
        if (i == 0)
            assert_true(p.tf.T >= 1024 && p.tf.C == b.tf.C);
        else if (i == 1)
            assert_true(p.tf.patch == 2 && p.tf.C >= 128);
        else
            assert_true(p.cnn.widths[2] > b.cnn.widths[2] && p.batch > b.batch);
    }
    /* a vit patch that does not divide 28 is refused, naming the model */
    as_nn_preset p = preset("vit", 1);
    p.tf.patch = 5;
    as_nn_train_opts o = {.seed = 1, .threads = 1};
    char err[256] = "";
    as_nn_run *r = NULL;
    assert_int_equal(as_nn_run_create(&p, &o, &r, err, sizeof err), AS_EINVAL);
    assert_null(r);
    assert_non_null(strstr(err, "vit"));
    assert_int_equal(as_nn_preset_get("cnn", "huge", &p), AS_ENOTFOUND);
    assert_int_equal(as_nn_preset_get("rnn", "small", &p), AS_ENOTFOUND);
}

/* ---- determinism ----------------------------------------------------------- */

static void train_losses_policy(const as_nn_preset *p, uint64_t seed,
                                const char *policy, double *loss, long n)
{
    as_nn_run *r = run_new(p, seed, policy);
    for (long s = 0; s < n; s++)
        assert_int_equal(as_nn_run_step(r, &loss[s]), 0);
    as_nn_run_destroy(r);
}

static void train_losses(const as_nn_preset *p, uint64_t seed, double *loss,
                         long n)
{
    train_losses_policy(p, seed, "default=keep", loss, n);
}

static void test_determinism(void **state)
{
    (void)state;
    const char *models[] = {"cnn", "vit", "lm"};
    enum { N = 6 };
    for (int m = 0; m < 3; m++) {
        as_nn_preset p = preset(models[m], N);
        if (m == 1)
            p.tf.dropout = 0.1f;   /* masks come from (seed, batch, layer) */
        double a[N], b[N], c[N];
        train_losses(&p, 11, a, N);
        train_losses(&p, 11, b, N);
        train_losses(&p, 12, c, N);
        if (memcmp(a, b, sizeof a))
            fail_msg("%s: same seed, different loss sequence (step 0: %.17g vs "
                     "%.17g)", models[m], a[0], b[0]);
        assert_memory_not_equal(a, c, sizeof a);
        for (int s = 0; s < N; s++)
            assert_true(isfinite(a[s]) && a[s] > 0);
    }
    /* lossy policies (softmax approximation, bf16) are deterministic too,
     * and differ from keep. Stochastic-rounding policies (q8/q4/q2) draw
     * their noise from the handle, which carries the store's process-wide
     * id, so two runs in ONE process differ; across processes they repeat
     * (tests/cli_train.sh checks q4 that way). */
    const char *lossy[2] = {"default=bf16", "softmax=soa:5; default=keep"};
    const char *lm[2] = {"cnn", "vit"};
    for (int k = 0; k < 2; k++) {
        as_nn_preset p = preset(lm[k], N);
        double a[N], b[N], c[N];
        train_losses_policy(&p, 11, lossy[k], a, N);
        train_losses_policy(&p, 11, lossy[k], b, N);
        train_losses(&p, 11, c, N);
        if (memcmp(a, b, sizeof a))
            fail_msg("%s under %s: same seed, different losses", lm[k], lossy[k]);
        assert_memory_not_equal(a, c, sizeof a);
    }
}

/* ---- gradients without update ----------------------------------------------- */

static void test_grads_pure(void **state)
{
    (void)state;
    as_nn_preset p = preset("cnn", 20);
    as_nn_run *r = run_new(&p, 5, "default=keep");
    for (int s = 0; s < 3; s++)
        assert_int_equal(as_nn_run_step(r, NULL), 0);
    size_t nw, ng, nb;
    float *w0 = flat(r, false, &nw), *b0 = flat_bufs(r, &nb);
    assert_true(nb > 0);                     /* BatchNorm running stats */
    double l1, l2, l3;
    assert_int_equal(as_nn_run_grads(r, 3, &l1), 0);
    float *g1 = flat(r, true, &ng);
    assert_true(norm2(g1, ng) > 0);
    assert_int_equal(as_nn_run_grads(r, 3, &l2), 0);
    float *g2 = flat(r, true, &ng);
    assert_memory_equal(g1, g2, ng * sizeof *g1);   /* fresh, not summed */
    assert_true(l1 == l2);
    float *w1 = flat(r, false, &nw), *b1 = flat_bufs(r, &nb);
    assert_memory_equal(w0, w1, nw * sizeof *w0);   /* no update */
    assert_memory_equal(b0, b1, nb * sizeof *b0);   /* running stats kept */
    assert_int_equal(as_nn_run_next_batch(r), 3);
    /* another batch: other gradients */
    assert_int_equal(as_nn_run_grads(r, 7, NULL), 0);
    float *g3 = flat(r, true, &ng);
    assert_memory_not_equal(g1, g3, ng * sizeof *g1);
    /* the step on batch 3 sees the same loss and moves the weights */
    assert_int_equal(as_nn_run_step(r, &l3), 0);
    assert_true(l3 == l1);
    assert_int_equal(as_nn_run_last(r)->batch, 3);
    assert_true(as_nn_run_last(r)->gnorm > 0);
    free(w1);
    w1 = flat(r, false, &nw);
    assert_memory_not_equal(w0, w1, nw * sizeof *w0);
    assert_int_equal(as_nn_run_grads(r, -1, NULL), AS_EINVAL);
    assert_int_equal(as_nn_run_seek(r, -2), AS_EINVAL);
    free(w0); free(w1); free(b0); free(b1); free(g1); free(g2); free(g3);
    as_nn_run_destroy(r);
}

/* ---- whole-model gradients ----------------------------------------------------
 * The model's wiring (aliases between conv, BatchNorm and in-place
 * activations; residual streams; the vit's patches, class token and
 * positions; the lm's embeddings) checked end to end: the directional
 * derivative of the batch loss along a random direction v, from the
 * gradients, against central differences of the loss itself. */

static void w_axpy(as_nn_run *r, const float *v, double h)
{
    const as_nn_params *ps = as_nn_run_params(r);
    size_t o = 0;
    for (size_t i = 0; i < ps->n; i++) {
        float *w = AS_NN_F(ps->p[i]->w);
        for (size_t k = 0; k < ps->p[i]->n; k++)
            w[k] = (float)((double)w[k] + h * v[o + k]);
        o += ps->p[i]->n;
        ps->p[i]->version++;
    }
}

static void model_grad_case(const char *model, bool leaky, int patch, as_op_layout lay)
{
    as_nn_preset p = preset(model, 10);
    if (leaky)
        p.cnn.act_fn = AS_FN_LEAKY_RELU;
    p.cnn.layout = lay;
    p.tf.patch = patch;   /* vit: patch side (0 = 4) */
    as_nn_run *r = run_new(&p, 17, "default=keep");
    for (int s = 0; s < 3; s++)   /* away from the initialisation */
        assert_int_equal(as_nn_run_step(r, NULL), 0);
    size_t n;
    assert_int_equal(as_nn_run_grads(r, 5, NULL), 0);
    float *g = flat(r, true, &n), *v = calloc(n, sizeof *v);
    const as_nn_params *ps = as_nn_run_params(r);
    uint64_t st = 99;
    size_t o = 0;
    double worst = 0;
    /* one direction per parameter tensor, so a missing or wrong gradient
     * of even a small tensor (a bias, the class token) shows */
    for (size_t i = 0; i < ps->n; o += ps->p[i]->n, i++) {
        const size_t m = ps->p[i]->n;
        double vn = 0, dot = 0;
        memset(v, 0, n * sizeof *v);
        for (size_t k = 0; k < m; k++) {
            v[o + k] = as_nn_randn(&st);
            vn += (double)v[o + k] * v[o + k];
        }
        for (size_t k = 0; k < m; k++) {
            v[o + k] = (float)(v[o + k] / sqrt(vn));
            dot += (double)g[o + k] * v[o + k];
        }
        /* h: 1e-2 is already in the curvature of BatchNorm'd first convs
         * and of max-pool switches (8% off for stages.0.conv0); 1e-3 leaves
         * ~1% there and float noise of ~2e-5 on the smallest tensors */
        const double h = 1e-3;
        double lp, lm;
        w_axpy(r, v, h);
        assert_int_equal(as_nn_run_grads(r, 5, &lp), 0);
        w_axpy(r, v, -2 * h);
        assert_int_equal(as_nn_run_grads(r, 5, &lm), 0);
        w_axpy(r, v, h);
        double num = (lp - lm) / (2 * h), err = fabs(num - dot);
        if (!(err <= 0.05 * fabs(dot) + 5e-5))
            fail_msg("%s%s%s: %s: directional derivative %.6g from the gradients, "
                     "%.6g from the loss", model, leaky ? " (leaky)" : "",
                     lay ? " (blocked)" : "", ps->p[i]->name, dot, num);
        if (fabs(dot) > 1e-3 && err / fabs(dot) > worst)
            worst = err / fabs(dot);
    }
    print_message("%s%s%s: %zu parameter tensors, worst relative error %.2g\n",
                  model, leaky ? " leaky" : "", lay ? " blocked" : "", ps->n, worst);
    free(g); free(v);
    as_nn_run_destroy(r);
}

static void test_model_grads(void **state)
{
    (void)state;
    model_grad_case("cnn", true, 0, AS_OP_NCHW);
    model_grad_case("cnn", false, 0, AS_OP_NCHW);
    model_grad_case("cnn", true, 0, AS_OP_BLK16);   /* widths 8, 16: padded lanes */
    model_grad_case("cnn", false, 0, AS_OP_BLK16);
    model_grad_case("vit", false, 0, AS_OP_NCHW);
    model_grad_case("vit", false, 7, AS_OP_NCHW);   /* 16 patches of 7x7 + class token */
    model_grad_case("lm", false, 0, AS_OP_NCHW);
}

/* ---- the cnn's blocked layout ---------------------------------------------
 * The same training in both layouts: the loss curves agree within float
 * rounding of other summation orders; with a rule whose policy reads the
 * NCHW order (conv inversion that solves) the blocked configuration runs
 * NCHW, bit for bit; an elementwise policy (sign) runs blocked and still
 * agrees; conv inversion that derives its inputs runs blocked, stores no
 * conv-input byte and trains as keep does, bit for bit. */

static void layout_losses(as_op_layout lay, bool leaky, const char *policy, double *loss,
                          long n)
{
    as_nn_preset p = preset("cnn", n);
    p.cnn.layout = lay;
    if (leaky)
        p.cnn.act_fn = AS_FN_LEAKY_RELU;
    train_losses_policy(&p, 21, policy, loss, n);
}

static void test_cnn_layouts(void **state)
{
    (void)state;
    enum { N = 12 };
    const char *agnostic[] = {"default=keep", "activation_output=sign; index=bitpack; "
                              "default=keep"};
    for (int k = 0; k < 2; k++) {
        double a[N], b[N];
        layout_losses(AS_OP_NCHW, false, agnostic[k], a, N);
        layout_losses(AS_OP_BLK16, false, agnostic[k], b, N);
        for (int s = 0; s < N; s++)
            if (!(fabs(a[s] - b[s]) <= 1e-4 * fabs(a[s])))
                fail_msg("%s: step %d loss %.9g NCHW, %.9g blocked", agnostic[k], s,
                         a[s], b[s]);
        if (as_op_get_backend() == AS_OP_ONEDNN)   /* the blocked kernels did run */
            assert_memory_not_equal(a, b, sizeof a);
    }
    double a[N], b[N];
    const char *solve = "conv_input=invert::::solve; default=keep";
    layout_losses(AS_OP_NCHW, true, solve, a, N);
    layout_losses(AS_OP_BLK16, true, solve, b, N);
    assert_memory_equal(a, b, sizeof a);
    for (int convs = 1; convs <= 2; convs++) {
        as_nn_preset p = preset("cnn", N);
        p.cnn.layout = AS_OP_BLK16;
        p.cnn.act_fn = AS_FN_LEAKY_RELU;
        p.cnn.convs = convs;
        train_losses_policy(&p, 21, "default=keep", a, N);
        as_nn_run *r = run_new(&p, 21, "conv_input=invert; default=keep");
        for (int s = 0; s < N; s++)
            assert_int_equal(as_nn_run_step(r, &b[s]), 0);
        as_store_stats st;
        assert_int_equal(as_store_stats_take(as_nn_run_store(r), &st), 0);
        assert_int_equal(st.kinds[AS_KIND_CONV_INPUT].stored_peak, 0);
        assert_int_equal(st.total.fallbacks, 0);
        as_store_stats_free(&st);
        as_nn_run_destroy(r);
        if (memcmp(a, b, sizeof a))
            fail_msg("convs %d: invert blocked, step 0 loss %.17g, keep %.17g", convs,
                     b[0], a[0]);
    }
    assert_true(as_nn_cnn_layout_free("default=keep; activation_output=sign|keep"));
    assert_true(as_nn_cnn_layout_free("layer:stages.*=fewbit:2; index=bitpack; default=keep"));
    assert_true(as_nn_cnn_layout_free("conv_input=invert; default=keep"));
    assert_true(as_nn_cnn_layout_free("conv_input=invert:1e5|keep; default=keep"));
    assert_false(as_nn_cnn_layout_free(solve));
    assert_false(as_nn_cnn_layout_free("conv_input=invert|q8"));
    assert_false(as_nn_cnn_layout_free("conv_input=invert; norm_input=inverse"));
    assert_false(as_nn_cnn_layout_free("default=q4:64"));
    assert_false(as_nn_cnn_layout_free("activation_output=sign|aq"));
}

/* ---- copying weights: paired runs ------------------------------------------ */

static void test_copy_weights(void **state)
{
    (void)state;
    const char *models[] = {"cnn", "vit"};
    for (int m = 0; m < 2; m++) {
        as_nn_preset p = preset(models[m], 20);
        as_nn_run *a = run_new(&p, 21, "default=keep");
        as_nn_run *b = run_new(&p, 22, NULL);   /* another initialisation */
        for (int s = 0; s < 4; s++)
            assert_int_equal(as_nn_run_step(a, NULL), 0);
        size_t n;
        float *wa = flat(a, false, &n), *wb = flat(b, false, &n);
        assert_memory_not_equal(wa, wb, n * sizeof *wa);
        assert_int_equal(as_nn_run_copy_weights(b, a, true), 0);
        free(wb);
        wb = flat(b, false, &n);
        assert_memory_equal(wa, wb, n * sizeof *wa);
        /* same weights, same batch index: the batch comes from the seed, so
         * a run with another seed sees another batch; same seed: same */
        as_nn_run *c = run_new(&p, 21, NULL);
        assert_int_equal(as_nn_run_copy_weights(c, a, true), 0);
        double la, lc;
        assert_int_equal(as_nn_run_grads(a, 2, &la), 0);
        assert_int_equal(as_nn_run_grads(c, 2, &lc), 0);
        float *ga = flat(a, true, &n), *gc = flat(c, true, &n);
        assert_true(la == lc);
        assert_memory_equal(ga, gc, n * sizeof *ga);
        free(ga); free(gc);
        /* with the optimizer state copied and c moved to a's position in
         * the data order, the next updates are identical */
        assert_int_equal(as_nn_run_seek(c, as_nn_run_next_batch(a)), 0);
        for (int s = 0; s < 2; s++) {
            assert_int_equal(as_nn_run_step(a, &la), 0);
            assert_int_equal(as_nn_run_step(c, &lc), 0);
            assert_true(la == lc);
        }
        free(wa);
        wa = flat(a, false, &n);
        float *wc = flat(c, false, &n);
        assert_memory_equal(wa, wc, n * sizeof *wa);
        free(wc);
        /* without the optimizer state the update differs (momentum) */
        assert_int_equal(as_nn_run_copy_weights(b, a, false), 0);
        assert_int_equal(as_nn_run_seek(b, as_nn_run_next_batch(a)), 0);
        assert_int_equal(as_nn_run_step(a, NULL), 0);
        assert_int_equal(as_nn_run_step(b, NULL), 0);
        free(wa); free(wb);
        wa = flat(a, false, &n);
        wb = flat(b, false, &n);
        assert_memory_not_equal(wa, wb, n * sizeof *wa);
        free(wa); free(wb);
        as_nn_run_destroy(a);
        as_nn_run_destroy(b);
        as_nn_run_destroy(c);
    }
    /* different models: a clear error */
    as_nn_preset pc = preset("cnn", 5), pv = preset("vit", 5);
    as_nn_run *a = run_new(&pc, 1, NULL), *b = run_new(&pv, 1, NULL);
    assert_int_equal(as_nn_run_copy_weights(b, a, false), AS_ESHAPE);
    assert_non_null(strstr(as_nn_run_error(b), "different models"));
    as_nn_run_destroy(a);
    as_nn_run_destroy(b);
}

/* Paired arms: same seed, copied weights, stepped in lockstep stay equal
 * under the same policy (the A/B harness's baseline). */
static void test_lockstep(void **state)
{
    (void)state;
    as_nn_preset p = preset("lm", 8);
    as_nn_run *a = run_new(&p, 3, "default=keep"), *b = run_new(&p, 3, "default=keep");
    assert_int_equal(as_nn_run_copy_weights(b, a, false), 0);
    for (int s = 0; s < 5; s++) {
        double la, lb;
        assert_int_equal(as_nn_run_step(a, &la), 0);
        assert_int_equal(as_nn_run_step(b, &lb), 0);
        assert_true(la == lb);
    }
    size_t n;
    float *wa = flat(a, false, &n), *wb = flat(b, false, &n);
    assert_memory_equal(wa, wb, n * sizeof *wa);
    free(wa); free(wb);
    as_nn_run_destroy(a);
    as_nn_run_destroy(b);
}

/* ---- evaluation and whole runs ---------------------------------------------- */

static void test_eval(void **state)
{
    (void)state;
    as_nn_preset p = preset("cnn", 60);
    as_nn_run *r = run_new(&p, 1, NULL);
    as_nn_eval e0, e1, e2;
    assert_int_equal(as_nn_run_eval(r, &e0), 0);
    assert_int_equal(e0.samples, p.eval_limit);
    assert_true(e0.accuracy >= 0 && e0.accuracy <= 1);
    assert_int_equal(as_nn_run_eval(r, &e1), 0);   /* no side effects */
    assert_true(e0.accuracy == e1.accuracy && e0.loss == e1.loss);
    for (int s = 0; s < 60; s++)
        assert_int_equal(as_nn_run_step(r, NULL), 0);
    assert_int_equal(as_nn_run_eval(r, &e2), 0);
    if (!(e2.accuracy > 0.6 && e2.loss < e0.loss))
        fail_msg("cnn small: accuracy %.3f (loss %.3f) after 60 steps, %.3f "
                 "(%.3f) before", e2.accuracy, e2.loss, e0.accuracy, e0.loss);
    as_nn_mem m;
    as_nn_run_memory(r, &m);
    /* keep holds everything but the batch, which is borrowed */
    const uint64_t batch_bytes = (uint64_t)p.batch * 784 * sizeof(float);
    assert_true(m.saved_raw_peak > 0 && m.saved_stored_peak < m.saved_raw_peak &&
                m.saved_stored_peak + batch_bytes >= m.saved_raw_peak);
    assert_true(m.by_kind[AS_KIND_CONV_INPUT].raw_peak > 0);
    assert_true(m.by_kind[AS_KIND_SOFTMAX_OUTPUT].raw_peak == 0);
    assert_true(m.arena_peak >= m.saved_stored_peak);
    assert_true(m.rss_peak > m.arena_peak);
    /* the evaluation's memory counts in the peaks */
    as_arena_snapshot sn;
    assert_int_equal(as_arena_snapshot_take(as_store_arena(as_nn_run_store(r)), UINT64_MAX, &sn), 0);
    assert_true(m.arena_peak >= sn.total.peak_usable);
    assert_true(m.tag_peak[AS_TAG_ACTIVATIONS] >= sn.tags[AS_TAG_ACTIVATIONS].peak_usable);
    as_arena_snapshot_free(&sn);
    as_nn_run_destroy(r);
}

/* A budget set to a run's reported arena peak lets the same run finish,
 * final evaluation included. */
static void test_budget_from_reported_peak(void **state)
{
    (void)state;
    as_nn_preset p = preset("cnn", 3);
    as_nn_train_opts o = {.seed = 1, .threads = 1, .policy = "default=keep"};
    as_nn_train_result r;
    char err[512] = "";
    assert_int_equal(as_nn_train(&p, &o, &r, err, sizeof err), 0);
    uint64_t peak = r.arena_peak;
    as_nn_train_result_free(&r);
    as_store *s = NULL;
    as_store_config cfg = {.budget_bytes = peak};
    assert_int_equal(as_store_create(&cfg, &s, err, sizeof err), 0);
    o.store = s;
    int rc = as_nn_train(&p, &o, &r, err, sizeof err);
    if (rc)
        fail_msg("budget %llu (the reported peak): %s", (unsigned long long)peak, err);
    assert_true(r.arena_peak <= peak);
    as_nn_train_result_free(&r);
    as_store_destroy(s);
}

static void test_train_job(void **state)
{
    (void)state;
    as_nn_preset p = preset("lm", 30);
    as_nn_train_opts o = {.seed = 2, .threads = 1, .eval_every = 10};
    as_nn_train_result r;
    char err[512];
    int rc = as_nn_train(&p, &o, &r, err, sizeof err);
    if (rc)
        fail_msg("as_nn_train: %s", err);
    assert_int_equal(r.steps, 30);
    assert_true(r.loss[29] < r.loss[0]);
    assert_true(r.eval_accuracy < 0);                 /* lm: loss only */
    assert_true(r.eval_loss > 0 && r.eval_loss < log(256.0));
    assert_int_equal(r.neval, 3);
    assert_true(r.eval_curve[3 * 2] == 30 && r.eval_curve[3 * 2 + 2] == r.eval_loss);
    assert_true(r.by_kind[AS_KIND_SOFTMAX_OUTPUT].raw_peak > 0);
    assert_true(r.step_ms_median > 0 && r.total_s > 0);
    assert_true(r.params > 0);
    as_nn_train_result_free(&r);
    as_nn_train_result_free(&r);   /* idempotent */
    /* a compressing policy stores fewer bytes than keep would */
    as_nn_preset pv = preset("vit", 3);
    as_nn_train_opts ov = {.seed = 2, .threads = 1, .policy = "default=bf16"};
    rc = as_nn_train(&pv, &ov, &r, err, sizeof err);
    if (rc)
        fail_msg("as_nn_train bf16: %s", err);
    if (!(r.saved_stored_peak < 0.75 * (double)r.saved_raw_peak))
        fail_msg("bf16: stored %llu of raw %llu", (unsigned long long)r.saved_stored_peak,
                 (unsigned long long)r.saved_raw_peak);
    as_nn_train_result_free(&r);
}

static void test_borrowed_store(void **state)
{
    (void)state;
    as_store *s = NULL;
    char err[256];
    assert_int_equal(as_store_create(NULL, &s, err, sizeof err), 0);
    as_nn_preset p = preset("cnn", 3);
    as_nn_train_opts o = {.seed = 1, .threads = 1, .store = s,
                          .policy = "default=keep"};
    as_nn_run *r = NULL;
    assert_int_equal(as_nn_run_create(&p, &o, &r, err, sizeof err), 0);
    assert_ptr_equal(as_nn_run_store(r), s);
    assert_int_equal(as_nn_run_step(r, NULL), 0);
    as_nn_run_destroy(r);
    as_store_stats st;                       /* the store outlives the run */
    assert_int_equal(as_store_stats_take(s, &st), 0);
    assert_true(st.total.saves > 0);
    assert_int_equal(st.live_handles, 0);    /* nothing leaked by the step */
    as_store_stats_free(&st);
    as_store_destroy(s);
}

/* ---- optimizers ------------------------------------------------------------ */

static void test_optim(void **state)
{
    (void)state;
    as_nn_ctx c;
    as_nn_ctx_init(&c, NULL, 1);   /* no store: plain allocation */
    as_nn_params ps = {0};
    as_nn_param *a, *d;
    assert_int_equal(as_nn_param_new(&c, &ps, "a", 0, 2, 0, 1.0f, false, NULL, &a), 0);
    assert_int_equal(as_nn_param_new(&c, &ps, "d", 0, 1, 0, 1.0f, true, NULL, &d), 0);
    float *wa = AS_NN_F(a->w), *ga = AS_NN_F(a->g), *wd = AS_NN_F(d->w), *gd = AS_NN_F(d->g);
    /* SGD, momentum 0.9, weight decay 0.1 on d only */
    as_nn_optim o;
    as_nn_optim_init(&o, AS_NN_SGD, 0.1f, 0.1f);
    uint64_t v0 = a->version;
    for (int s = 0; s < 2; s++) {
        ga[0] = ga[1] = 0.5f;
        gd[0] = 0.5f;
        assert_int_equal(as_nn_optim_step(&c, &o, &ps, 0.1f, NULL), 0);
    }
    /* m1 = 0.5, w1 = 0.95; m2 = 0.95, w2 = 0.855 */
    assert_float_equal(wa[0], 0.855f, 1e-6);
    /* d: g1 = 0.6, m1 = 0.6, w1 = 0.94; g2 = 0.594, m2 = 1.134, w2 = 0.8266 */
    assert_float_equal(wd[0], 0.8266f, 1e-5);
    assert_true(ga[0] == 0.0f && gd[0] == 0.0f);        /* zeroed */
    assert_int_equal(a->version, v0 + 2);               /* bumped */
    /* AdamW, first step: the update is lr * (sign + wd * w) */
    as_nn_params_free(&c, &ps);
    assert_int_equal(as_nn_param_new(&c, &ps, "a", 0, 2, 0, 1.0f, false, NULL, &a), 0);
    assert_int_equal(as_nn_param_new(&c, &ps, "d", 0, 1, 0, 1.0f, true, NULL, &d), 0);
    wa = AS_NN_F(a->w), ga = AS_NN_F(a->g), wd = AS_NN_F(d->w), gd = AS_NN_F(d->g);
    as_nn_optim_init(&o, AS_NN_ADAMW, 0.1f, 0.01f);
    ga[0] = 0.5f, ga[1] = -2.0f, gd[0] = 0.25f;
    double gn = 0;
    assert_int_equal(as_nn_optim_step(&c, &o, &ps, 0.1f, &gn), 0);
    assert_float_equal(wa[0], 0.9f, 1e-5);
    assert_float_equal(wa[1], 1.1f, 1e-5);
    assert_float_equal(wd[0], 1.0f - 0.1f * (1.0f + 0.01f), 1e-5);
    assert_true(fabs(gn - sqrt(0.25 + 4 + 0.0625)) < 1e-6);
    /* clipping: norm 5 scaled to 1 (SGD without momentum history) */
    as_nn_params_free(&c, &ps);
    assert_int_equal(as_nn_param_new(&c, &ps, "a", 0, 2, 0, 0.0f, false, NULL, &a), 0);
    as_nn_optim_init(&o, AS_NN_SGD, 1.0f, 0.0f);
    o.clip = 1.0f;
    AS_NN_F(a->g)[0] = 3.0f, AS_NN_F(a->g)[1] = 4.0f;
    assert_int_equal(as_nn_optim_step(&c, &o, &ps, 1.0f, &gn), 0);
    assert_true(fabs(gn - 5.0) < 1e-9);
    assert_float_equal(AS_NN_F(a->w)[0], -0.6f, 1e-6);
    assert_float_equal(AS_NN_F(a->w)[1], -0.8f, 1e-6);
    as_nn_params_free(&c, &ps);
    as_nn_ctx_fini(&c);
}

/* ---- errors ----------------------------------------------------------------- */

static void test_errors(void **state)
{
    (void)state;
    char err[512] = "";
    as_nn_run *r = NULL;
    as_nn_preset p = preset("cnn", 3);
    as_nn_train_opts o = {.data_dir = "/nonexistent/fm"};
    assert_int_equal(as_nn_run_create(&p, &o, &r, err, sizeof err), AS_ENOTFOUND);
    assert_null(r);
    assert_non_null(strstr(err, "/nonexistent/fm/train-images-idx3-ubyte.gz"));
    assert_non_null(strstr(err, "dataset-fashion-mnist"));
    as_nn_preset pl = preset("lm", 3);
    as_nn_train_opts ol = {.text_dir = "/nonexistent/fortunes"};
    assert_int_equal(as_nn_run_create(&pl, &ol, &r, err, sizeof err), AS_ENOTFOUND);
    assert_non_null(strstr(err, "/nonexistent/fortunes"));
    assert_non_null(strstr(err, "fortunes"));
    as_nn_train_opts op = {.policy = "default=nosuchpolicy"};
    assert_int_equal(as_nn_run_create(&p, &op, &r, err, sizeof err), AS_ESPEC);
    assert_non_null(strstr(err, "nosuchpolicy"));
    as_nn_preset bad = p;
    bad.batch = 0;
    assert_int_equal(as_nn_run_create(&bad, NULL, &r, err, sizeof err), AS_EINVAL);
    assert_non_null(strstr(err, "batch"));
    bad = p;
    snprintf(bad.model, sizeof bad.model, "rnn");
    assert_int_equal(as_nn_run_create(&bad, NULL, &r, err, sizeof err), AS_EINVAL);
    assert_non_null(strstr(err, "rnn"));
    /* a learning rate that diverges is reported, not trained on */
    as_nn_preset hot = preset("vit", 30);
    hot.lr = 1e6f;
    hot.clip = 0;
    hot.warmup = 0;
    r = NULL;
    assert_int_equal(as_nn_run_create(&hot, NULL, &r, err, sizeof err), 0);
    int rc = 0;
    for (int s = 0; s < 30 && !rc; s++)
        rc = as_nn_run_step(r, NULL);
    assert_int_equal(rc, AS_ERANGE);
    assert_non_null(strstr(as_nn_run_error(r), "diverged"));
    as_nn_run_destroy(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_presets),
        cmocka_unit_test(test_determinism),
        cmocka_unit_test(test_grads_pure),
        cmocka_unit_test(test_model_grads),
        cmocka_unit_test(test_cnn_layouts),
        cmocka_unit_test(test_copy_weights),
        cmocka_unit_test(test_lockstep),
        cmocka_unit_test(test_eval),
        cmocka_unit_test(test_train_job),
        cmocka_unit_test(test_budget_from_reported_peak),
        cmocka_unit_test(test_borrowed_store),
        cmocka_unit_test(test_optim),
        cmocka_unit_test(test_errors),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    as_nn_image_cache_clear();   /* no run left: frees the shared images */
    return failed;
}

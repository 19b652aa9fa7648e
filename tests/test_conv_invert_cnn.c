/* Conv inversion end to end in the reference cnn with LeakyReLU: the
 * gradients of every parameter under conv_input=invert (and the inverse
 * chain) match those under keep, and the conv activations are not held.
 * Needs the Debian package dataset-fashion-mnist (scripts/setup.sh). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "layers/train.h"
#include "store/policies/invert/conv_invert.h"
#include "support/test_main.h"

#define CHAIN "conv_input=invert; norm_input=inverse; activation_input=inverse; default=keep"

static as_nn_run *run_new(const as_nn_preset *p, const char *policy)
{
    as_nn_train_opts o = {.policy = policy, .seed = 7, .threads = 1};
    as_nn_run *r = NULL;
    char err[512] = "";
    int rc = as_nn_run_create(p, &o, &r, err, sizeof err);
    if (rc)
        fail_msg("as_nn_run_create: %d %s", rc, err);
    return r;
}

/* Max over parameters of the relative L2 error ||g_b - g_a|| / ||g_a||
 * (*l2) and of the max-abs error max|g_b - g_a| / max|g_a| (return). */
static double grad_err(const as_nn_run *a, const as_nn_run *b, double *l2,
                       char *worst, size_t wl)
{
    const as_nn_params *pa = as_nn_run_params(a), *pb = as_nn_run_params(b);
    assert_int_equal(pa->n, pb->n);
    double e = 0;
    *l2 = 0;
    for (size_t i = 0; i < pa->n; i++) {
        const float *ga = AS_NN_F(pa->p[i]->g), *gb = AS_NN_F(pb->p[i]->g);
        double d = 0, m = 0, d2 = 0, m2 = 0;
        for (size_t k = 0; k < pa->p[i]->n; k++) {
            const double dk = (double)ga[k] - gb[k];
            d = fmax(d, fabs(dk));
            m = fmax(m, fabs((double)ga[k]));
            d2 += dk * dk;
            m2 += (double)ga[k] * ga[k];
        }
        double r = m > 0 ? d / m : d, r2 = m2 > 0 ? sqrt(d2 / m2) : sqrt(d2);
        if (getenv("AS_VERBOSE") && r > 1e-5)
            printf("  %s: max-abs %.3g, L2 %.3g\n", pa->p[i]->name, r, r2);
        if (r2 > *l2)
            *l2 = r2;
        if (r > e) {
            e = r;
            snprintf(worst, wl, "%s", pa->p[i]->name);
        }
    }
    return e;
}

static void check_variant(bool batchnorm, const char *policy, bool chain)
{
    as_nn_preset p;
    assert_int_equal(as_nn_preset_get("cnn", "small", &p), 0);
    p.cnn.act_fn = AS_FN_LEAKY_RELU;
    p.cnn.alpha = 0.1f;
    p.cnn.nstages = 2;
    p.cnn.convs = 2;            /* two stride-1 convs in a row per stage */
    p.cnn.widths[0] = 8;
    p.cnn.widths[1] = 16;
    p.cnn.batchnorm = batchnorm;
    p.batch = 16;
    as_nn_run *keep = run_new(&p, "default=keep");
    as_nn_run *inv = run_new(&p, policy);
    for (long b = 0; b < 2; b++) {
        double la, lb;
        assert_int_equal(as_nn_run_grads(keep, b, &la), 0);
        if (as_nn_run_grads(inv, b, &lb))
            fail_msg("grads: %s", as_nn_run_error(inv));
        char worst[64] = "";
        double l2;
        double e = grad_err(keep, inv, &l2, worst, sizeof worst);
        if (getenv("AS_VERBOSE"))
            printf("bn %d batch %ld: loss %.6f vs %.6f, grad rel err max-abs %.3g "
                   "(%s), L2 %.3g\n", batchnorm, b, la, lb, e, worst, l2);
        assert_true(fabs(la - lb) <= 1e-5 * fabs(la));
        /* Every gradient, including the bottom of each chain: the sign
         * bitmaps keep the LeakyReLU slopes of rebuilt outputs exact. */
        if (!(e <= 1e-4 && l2 <= 1e-4))
            fail_msg("bn %d batch %ld: gradient rel err max-abs %.3g in %s (L2 %.3g)",
                     batchnorm, b, e, worst, l2);
    }
    as_nn_mem mk, mi;
    as_nn_run_memory(keep, &mk);
    as_nn_run_memory(inv, &mi);
    if (getenv("AS_VERBOSE")) {
        const int kinds[] = {AS_KIND_CONV_INPUT, AS_KIND_CONV_OUTPUT, AS_KIND_NORM_INPUT,
                             AS_KIND_ACTIVATION_INPUT, AS_KIND_ACTIVATION_OUTPUT};
        for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++)
            printf("  %s: keep %llu/%llu invert %llu/%llu (stored/raw peak)\n",
                   as_kind_name(kinds[k]),
                   (unsigned long long)mk.by_kind[kinds[k]].stored_peak,
                   (unsigned long long)mk.by_kind[kinds[k]].raw_peak,
                   (unsigned long long)mi.by_kind[kinds[k]].stored_peak,
                   (unsigned long long)mi.by_kind[kinds[k]].raw_peak);
        printf("bn %d: total saved peak keep %llu invert %llu\n", batchnorm,
               (unsigned long long)mk.saved_stored_peak,
               (unsigned long long)mi.saved_stored_peak);
    }
    assert_int_equal(mi.fallbacks, 0);
    /* frames (28x28: 14%, 14x14: 27%) plus sign bitmaps (3%) */
    assert_true(mi.by_kind[AS_KIND_CONV_INPUT].stored_peak * 4 <
                mk.by_kind[AS_KIND_CONV_INPUT].raw_peak);
    if (chain)   /* only the top activations stay (plus one transient) */
        assert_true(mi.saved_stored_peak * 2 < mk.saved_stored_peak);
    as__civ_lstats ls;
    assert_int_equal(as__civ_layer_stats(as_nn_run_store(inv), NULL, &ls), 0);
    /* 4 convs, 2 batches; the first conv's input is the batch, borrowed;
     * the second stage's first reads the pooled map: derived, not solved */
    assert_true(ls.restores >= 2 * 2);
    assert_int_equal(ls.derived, 2);
    assert_int_equal(ls.cond_checks, 2);  /* weights unchanged: one per layer */
    as_nn_run_destroy(keep);
    as_nn_run_destroy(inv);
}

static void test_cnn_leaky_no_bn(void **state)
{
    (void)state;
    check_variant(false, CHAIN, true);
}

static void test_cnn_leaky_bn(void **state)
{
    (void)state;
    check_variant(true, CHAIN, true);
}

/* BatchNorm, conv inputs only (conv outputs kept by BatchNorm). */
static void test_cnn_leaky_bn_inputs_only(void **state)
{
    (void)state;
    check_variant(true, "conv_input=invert; default=keep", false);
}

/* One conv per stage (the bench preset's shape): every conv input is the
 * batch (borrowed) or a pooled map (derived from the pool's input at the
 * saved argmax), so invert stores no conv-input byte and the gradients
 * are keep's bit for bit. */
static void test_cnn_pooled_inputs_derived(void **state)
{
    (void)state;
    as_nn_preset p;
    assert_int_equal(as_nn_preset_get("cnn", "small", &p), 0);
    p.cnn.act_fn = AS_FN_LEAKY_RELU;
    p.cnn.alpha = 0.1f;
    p.cnn.nstages = 3;
    p.cnn.convs = 1;
    p.cnn.widths[0] = 4;
    p.cnn.widths[1] = 8;
    p.cnn.widths[2] = 8;
    p.cnn.batchnorm = true;
    p.batch = 8;
    as_nn_run *keep = run_new(&p, "default=keep");
    as_nn_run *inv = run_new(&p, "conv_input=invert; default=keep");
    for (long b = 0; b < 2; b++) {
        double la, lb;
        assert_int_equal(as_nn_run_grads(keep, b, &la), 0);
        assert_int_equal(as_nn_run_grads(inv, b, &lb), 0);
        assert_true(la == lb);
        const as_nn_params *pa = as_nn_run_params(keep), *pb = as_nn_run_params(inv);
        for (size_t i = 0; i < pa->n; i++)
            assert_memory_equal(AS_NN_F(pa->p[i]->g), AS_NN_F(pb->p[i]->g),
                                sizeof(float) * pa->p[i]->n);
    }
    as_nn_mem mk, mi;
    as_nn_run_memory(keep, &mk);
    as_nn_run_memory(inv, &mi);
    assert_true(mk.by_kind[AS_KIND_CONV_INPUT].stored_peak > 0);
    assert_int_equal(mi.by_kind[AS_KIND_CONV_INPUT].stored_peak, 0);
    assert_int_equal(mi.fallbacks, 0);
    as__civ_lstats ls;
    assert_int_equal(as__civ_layer_stats(as_nn_run_store(inv), NULL, &ls), 0);
    assert_int_equal(ls.derived, 2 * 2);   /* 2 pooled inputs, 2 batches */
    assert_int_equal(ls.restores, 0);
    as_nn_run_destroy(keep);
    as_nn_run_destroy(inv);
}

AS_TEST_MAIN(NULL, NULL,
             cmocka_unit_test(test_cnn_leaky_no_bn),
             cmocka_unit_test(test_cnn_leaky_bn),
             cmocka_unit_test(test_cnn_leaky_bn_inputs_only),
             cmocka_unit_test(test_cnn_pooled_inputs_derived))

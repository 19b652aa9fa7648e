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
#include "support/runs.h"
#include "support/test_main.h"

#define CHAIN "conv_input=invert; norm_input=inverse; activation_input=inverse; default=keep"
/* The same with every conv input solved (declared derivations ignored) */
#define CHAIN_SOLVE "conv_input=invert::::solve; norm_input=inverse; " \
                    "activation_input=inverse; default=keep"

/* solve: the policy inverts every conv input (DERIVED solve); else the
 * inner and pooled inputs are derived and nothing is solved. */
static void check_variant(bool batchnorm, const char *policy, bool chain, bool solve)
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
    run_pair rp = run_pair_new(&p, 7, policy);
    for (long b = 0; b < 2; b++) {
        double la, lb;
        grad_diff g = run_pair_grads(&rp, b, &la, &lb);
        double e = g.maxabs, l2 = g.l2;
        const char *worst = g.worst;
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
    run_pair_memory(&rp, &mk, &mi);
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
    as__civ_lstats ls;
    assert_int_equal(as__civ_layer_stats(as_nn_run_store(rp.pol), NULL, &ls), 0);
    /* 4 convs, 2 batches; the first conv's input is the batch, borrowed */
    if (solve) {
        /* frames (28x28: 14%, 14x14: 27%) plus sign bitmaps (3%) */
        assert_true(mi.by_kind[AS_KIND_CONV_INPUT].stored_peak * 4 <
                    mk.by_kind[AS_KIND_CONV_INPUT].raw_peak);
        assert_true(ls.restores >= 3 * 2);
        assert_int_equal(ls.derived, 0);
        assert_int_equal(ls.cond_checks, 3);  /* weights unchanged: one per layer */
    } else {
        /* the inner inputs from the conv below, the pooled one from the pool */
        assert_int_equal(mi.by_kind[AS_KIND_CONV_INPUT].stored_peak, 0);
        assert_int_equal(ls.restores, 0);
        assert_int_equal(ls.derived, 3 * 2);
        assert_int_equal(ls.cond_checks, 0);
    }
    if (chain)   /* only the top activations stay (plus one transient) */
        assert_true(mi.saved_stored_peak * (solve ? 2 : 3) < mk.saved_stored_peak);
    run_pair_destroy(&rp);
}

static void test_cnn_leaky_no_bn(void **state)
{
    (void)state;
    check_variant(false, CHAIN_SOLVE, true, true);
    check_variant(false, CHAIN, true, false);
}

static void test_cnn_leaky_bn(void **state)
{
    (void)state;
    check_variant(true, CHAIN_SOLVE, true, true);
    check_variant(true, CHAIN, true, false);
}

/* BatchNorm, conv inputs only (conv outputs kept by BatchNorm). */
static void test_cnn_leaky_bn_inputs_only(void **state)
{
    (void)state;
    check_variant(true, "conv_input=invert::::solve; default=keep", false, true);
}

/* Every conv input is the batch (borrowed), a pooled map (derived from
 * the pool's input at the saved argmax) or, with convs in a row, the
 * output of the conv below (derived from that conv's input and BatchNorm
 * statistics), so invert stores no conv-input byte and the gradients are
 * keep's bit for bit. */
static void check_all_derived(int convs, int act_fn)
{
    as_nn_preset p;
    assert_int_equal(as_nn_preset_get("cnn", "small", &p), 0);
    p.cnn.act_fn = act_fn;
    p.cnn.alpha = 0.1f;
    p.cnn.nstages = 3;
    p.cnn.convs = convs;
    p.cnn.widths[0] = 4;
    p.cnn.widths[1] = 8;
    p.cnn.widths[2] = 8;
    p.cnn.batchnorm = true;
    p.batch = 8;
    run_pair rp = run_pair_new(&p, 7, "conv_input=invert; default=keep");
    for (long b = 0; b < 2; b++) {
        double la, lb;
        grad_diff g = run_pair_grads(&rp, b, &la, &lb);
        assert_true(la == lb);
        assert_true(g.identical);
    }
    as_nn_mem mk, mi;
    run_pair_memory(&rp, &mk, &mi);
    assert_true(mk.by_kind[AS_KIND_CONV_INPUT].stored_peak > 0);
    assert_int_equal(mi.by_kind[AS_KIND_CONV_INPUT].stored_peak, 0);
    assert_int_equal(mi.fallbacks, 0);
    as__civ_lstats ls;
    assert_int_equal(as__civ_layer_stats(as_nn_run_store(rp.pol), NULL, &ls), 0);
    assert_int_equal(ls.derived, (3 * convs - 1) * 2);   /* all but the batch, 2 batches */
    assert_int_equal(ls.restores, 0);
    run_pair_destroy(&rp);
}

/* The bench preset's shape: one conv per stage. */
static void test_cnn_pooled_inputs_derived(void **state)
{
    (void)state;
    check_all_derived(1, AS_FN_LEAKY_RELU);
}

/* Two convs per stage, LeakyReLU and ReLU. */
static void test_cnn_inner_inputs_derived(void **state)
{
    (void)state;
    check_all_derived(2, AS_FN_LEAKY_RELU);
    check_all_derived(2, AS_FN_RELU);
}

AS_TEST_MAIN(NULL, NULL,
             cmocka_unit_test(test_cnn_leaky_no_bn),
             cmocka_unit_test(test_cnn_leaky_bn),
             cmocka_unit_test(test_cnn_leaky_bn_inputs_only),
             cmocka_unit_test(test_cnn_pooled_inputs_derived),
             cmocka_unit_test(test_cnn_inner_inputs_derived))

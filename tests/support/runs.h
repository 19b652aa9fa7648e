/*
 * Runs of the reference models in the tests (test_train.c,
 * test_act_policies.c, test_conv_invert_cnn.c): create one; run a policy
 * beside keep and compare their gradients and memory.
 * Header-only (static inline).
 */
#ifndef AS_TESTS_SUPPORT_RUNS_H
#define AS_TESTS_SUPPORT_RUNS_H

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "layers/train.h"

/* A run of preset p under policy (NULL: the preset's), one BLAS thread;
 * fails the test when it cannot be created. */
static inline as_nn_run *run_new(const as_nn_preset *p, uint64_t seed,
                                 const char *policy)
{
    as_nn_train_opts o = {.seed = seed, .threads = 1, .policy = policy};
    char err[512] = "";
    as_nn_run *r = NULL;
    int rc = as_nn_run_create(p, &o, &r, err, sizeof err);
    if (rc)
        fail_msg("as_nn_run_create(%s, %s): %d %s", p->model,
                 policy ? policy : "preset", rc, err);
    return r;
}

/* The gradients of run b against run a, the worst over the parameters. */
typedef struct grad_diff {
    double l2;          /* ||g_b - g_a|| / ||g_a|| */
    double maxabs;      /* max|g_b - g_a| / max|g_a| */
    bool   identical;   /* every gradient bit for bit */
    char   worst[64];   /* the parameter of the worst maxabs */
} grad_diff;

static inline grad_diff grad_diff_of(const as_nn_run *a, const as_nn_run *b)
{
    const as_nn_params *pa = as_nn_run_params(a), *pb = as_nn_run_params(b);
    assert_int_equal(pa->n, pb->n);
    grad_diff g = {.identical = true};
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
        g.identical = g.identical && !memcmp(ga, gb, pa->p[i]->n * sizeof *ga);
        double r = m > 0 ? d / m : d, r2 = m2 > 0 ? sqrt(d2 / m2) : sqrt(d2);
        if (getenv("AS_VERBOSE") && (r > 1e-5 || r2 > 1e-5))
            printf("  %s: max-abs %.3g, L2 %.3g\n", pa->p[i]->name, r, r2);
        if (r2 > g.l2)
            g.l2 = r2;
        if (r > g.maxabs) {
            g.maxabs = r;
            snprintf(g.worst, sizeof g.worst, "%s", pa->p[i]->name);
        }
    }
    return g;
}

/* A policy against keep: two runs of one preset and seed. */
typedef struct run_pair {
    as_nn_run *keep, *pol;
} run_pair;

static inline run_pair run_pair_new(const as_nn_preset *p, uint64_t seed,
                                    const char *policy)
{
    return (run_pair){run_new(p, seed, "default=keep"), run_new(p, seed, policy)};
}

/* The gradients of batch b under both (losses in *lk, *lp) and their
 * difference; a failure of the policy's run names its error. */
static inline grad_diff run_pair_grads(run_pair *rp, long batch, double *lk,
                                       double *lp)
{
    assert_int_equal(as_nn_run_grads(rp->keep, batch, lk), 0);
    if (as_nn_run_grads(rp->pol, batch, lp))
        fail_msg("grads of batch %ld: %s", batch, as_nn_run_error(rp->pol));
    return grad_diff_of(rp->keep, rp->pol);
}

/* The memory figures of both runs. */
static inline void run_pair_memory(const run_pair *rp, as_nn_mem *mk,
                                   as_nn_mem *mp)
{
    as_nn_run_memory(rp->keep, mk);
    as_nn_run_memory(rp->pol, mp);
}

static inline void run_pair_destroy(run_pair *rp)
{
    as_nn_run_destroy(rp->keep);
    as_nn_run_destroy(rp->pol);
}

#endif

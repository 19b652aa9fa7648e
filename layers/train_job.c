/*
 * A whole training job (as_nn_train, see train.h): steps, progress, periodic
 * and final evaluation, memory and time figures. Built only on the public
 * step-wise run API, as any harness would be.
 */
#include "layers/train.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "util/clock.h"
#include "util/median.h"

/* Evaluate r into *ev, adding the time to *eval_s; with curve, append
 * (step, accuracy, loss) to the result's eval curve. */
static int eval_point(as_nn_run *r, as_nn_train_result *res, long step, bool curve,
                      as_nn_eval *ev, double *eval_s, char *err, size_t errlen)
{
    double t0 = as_clock_wall_s();
    int rc = as_nn_run_eval(r, ev);
    if (rc) {
        snprintf(err, errlen, "%s", as_nn_run_error(r));
        return rc;
    }
    *eval_s += as_clock_wall_s() - t0;
    if (curve) {
        double *e = res->eval_curve + 3 * res->neval++;
        e[0] = (double)step;
        e[1] = ev->accuracy;
        e[2] = ev->loss;
    }
    return 0;
}

static void progress(const as_nn_train_opts *o, as_nn_run *r, long step,
                     long steps, double loss, double sps, bool eval)
{
    if (!o->progress)
        return;
    as_nn_progress p = {.step = step, .steps = steps, .loss = loss,
                        .samples_per_s = sps, .eval = eval};
    as_store_stats st;
    if (as_store_stats_take(as_nn_run_store(r), &st) == 0) {
        p.saved_stored = st.total.stored_peak;
        p.saved_raw = st.total.raw_peak;
        as_store_stats_free(&st);
    }
    as_arena_snapshot sn;
    if (as_arena_snapshot_take(as_store_arena(as_nn_run_store(r)), UINT64_MAX, &sn) == 0) {
        p.arena_live = sn.total.live_usable;
        p.arena_peak = sn.total.peak_usable;
        as_arena_snapshot_free(&sn);
    }
    o->progress(o->progress_ud, &p);
}

int as_nn_train(const as_nn_preset *p, const as_nn_train_opts *o,
                as_nn_train_result *res, char *err, size_t errlen)
{
    static const as_nn_train_opts dflt = {0};
    if (!o)
        o = &dflt;
    memset(res, 0, sizeof *res);
    const double t0 = as_clock_wall_s(), cpu0 = as_clock_process_cpu_s();
    as_nn_run *r = NULL;
    int rc = as_nn_run_create(p, o, &r, err, errlen);
    if (rc)
        return rc;
    if ((o->saved_budget || o->budget_ratio > 0) &&
        (rc = as_nn_run_fit_budget(r, o->saved_budget, o->budget_ratio,
                                   &res->saved_budget))) {
        snprintf(err, errlen, "%s", as_nn_run_error(r));
        as_nn_run_destroy(r);
        return rc;
    }
    const long steps = as_nn_run_planned_steps(r);
    res->planned_steps = steps;
    double *ms = malloc((size_t)steps * sizeof *ms);
    double *cms = malloc((size_t)steps * sizeof *cms);
    res->loss = malloc((size_t)steps * sizeof *res->loss);
    long maxeval = o->eval_every > 0 ? steps / o->eval_every + 1 : 0;
    res->eval_curve = calloc((size_t)maxeval * 3 + 1, sizeof *res->eval_curve);
    if (!ms || !cms || !res->loss || !res->eval_curve) {
        snprintf(err, errlen, "out of memory (%ld steps)", steps);
        rc = AS_ENOMEM;
        goto out;
    }
    double train_s = 0, eval_s = 0;
    const int spb = as_nn_run_samples_per_batch(r);
    for (long s = 0; s < steps; s++) {
        double loss;
        rc = as_nn_run_step(r, &loss);
        if (rc) {
            snprintf(err, errlen, "step %ld: %s", s, as_nn_run_error(r));
            goto out;
        }
        ms[s] = as_nn_run_last(r)->ms;
        cms[s] = as_nn_run_last(r)->cpu_ms;
        train_s += as_nn_run_last(r)->ms * 1e-3;
        res->loss[s] = loss;
        res->steps = s + 1;
        progress(o, r, s + 1, steps, loss,
                 train_s > 0 ? (double)spb * (double)(s + 1) / train_s : 0, false);
        if (o->stop && *o->stop && s + 1 < steps) {
            res->interrupted = true;
            break;
        }
        if (o->eval_every > 0 && (s + 1) % o->eval_every == 0 && s + 1 < steps) {
            as_nn_eval ev;
            if ((rc = eval_point(r, res, s + 1, true, &ev, &eval_s, err, errlen)))
                goto out;
        }
    }
    const long done = res->steps;
    res->eval_accuracy = -1;
    if (!res->interrupted) {
        progress(o, r, 0, 0, 0, 0, true);
        as_nn_eval ev;
        if ((rc = eval_point(r, res, steps, o->eval_every > 0, &ev, &eval_s, err, errlen)))
            goto out;
        res->eval_accuracy = ev.accuracy;
        res->eval_loss = ev.loss;
        res->eval_samples = ev.samples;
    }
    long tail = done < 50 ? done : 50;
    double sum = 0;
    for (long s = done - tail; s < done; s++)
        sum += res->loss[s];
    res->final_train_loss = tail ? sum / (double)tail : 0;
    res->step_ms_median = as_stats_median(ms, (size_t)done);
    res->step_cpu_ms_median = as_stats_median(cms, (size_t)done);
    as_nn_mem m;
    as_nn_run_memory(r, &m);
    res->saved_stored_peak = m.saved_stored_peak;
    res->saved_raw_peak = m.saved_raw_peak;
    memcpy(res->by_kind, m.by_kind, sizeof res->by_kind);
    res->arena_peak = m.arena_peak;
    res->rss_peak = m.rss_peak;
    memcpy(res->tag_peak, m.tag_peak, sizeof res->tag_peak);
    res->fallbacks = m.fallbacks;
    res->params = as_nn_params_count(as_nn_run_params(r));
    if ((rc = as_store_plan_take(as_nn_run_store(r), &res->plan))) {
        snprintf(err, errlen, "copying the plan: %s", as_strerror(rc));
        goto out;
    }
    snprintf(res->blas_core, sizeof res->blas_core, "%s", as_op_blas_core());
    res->eval_s = eval_s;
    res->total_s = as_clock_wall_s() - t0;
    res->cpu_s = as_clock_process_cpu_s() - cpu0;
out:
    free(ms);
    free(cms);
    as_nn_run_destroy(r);
    if (rc)
        as_nn_train_result_free(res);
    return rc;
}

void as_nn_train_result_free(as_nn_train_result *r)
{
    if (!r)
        return;
    free(r->loss);
    free(r->eval_curve);
    as_store_plan_free(&r->plan);
    memset(r, 0, sizeof *r);
}

/*
 * One configuration of `actstore bench scale`: build the lm run, set auto's
 * budget, the arena limit, run the warm-up and measured training steps and
 * read the peaks of each measured step. The isolated variant forks so that
 * every configuration has its own process (peak RSS, a clean arena, a
 * crash reported as a failure of that configuration).
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "layers/train.h"
#include "scale.h"

static int fail(sc_res *r, int rc, const char *what, const char *msg)
{
    r->rc = rc ? rc : AS_EINVAL;
    snprintf(r->err, sizeof r->err, "%s: %s", what, msg);
    return r->rc;
}

/* Peaks of the step that just ended (reset at its begin), maxed into r. */
static void note_peaks(as_store *s, sc_res *r, bool measured)
{
    as_arena_snapshot sn;
    if (as_arena_snapshot_take(as_store_arena(s), UINT64_MAX, &sn) == 0) {
        if (sn.total.peak_usable > r->fit_peak)
            r->fit_peak = sn.total.peak_usable;
        if (measured && sn.total.peak_usable > r->arena_peak)
            r->arena_peak = sn.total.peak_usable;
        for (int t = 0; measured && t < AS_TAG_FIXED_COUNT; t++)
            if (sn.tags[t].peak_usable > r->tag_peak[t])
                r->tag_peak[t] = sn.tags[t].peak_usable;
        as_arena_snapshot_free(&sn);
    }
    as_store_stats st;
    if (!measured || as_store_stats_take(s, &st) != 0)
        return;
    if (st.total.stored_peak > r->saved_stored)
        r->saved_stored = st.total.stored_peak;
    if (st.total.raw_peak > r->saved_raw)
        r->saved_raw = st.total.raw_peak;
    for (int k = 0; k < AS_KIND_COUNT; k++) {
        if (st.kinds[k].stored_peak > r->kind_stored[k])
            r->kind_stored[k] = st.kinds[k].stored_peak;
        if (st.kinds[k].raw_peak > r->kind_raw[k])
            r->kind_raw[k] = st.kinds[k].raw_peak;
    }
    as_store_stats_free(&st);
}

static int make_preset(const sc_cfg *c, as_nn_preset *p, sc_res *r)
{
    if (as_nn_preset_get("lm", c->preset, p))
        return fail(r, AS_ENOTFOUND, "preset", "no such lm preset");
    if (c->C < 16 || c->C % 16 || c->T < 2 || c->B < 1)
        return fail(r, AS_EINVAL, "configuration",
                    "width must be a multiple of 16, context >= 2, batch >= 1");
    p->tf.T = c->T;
    p->tf.C = c->C;
    p->tf.NH = c->C / 16;
    p->batch = c->B;
    p->steps = 1000;   /* the schedule's length: warm-up then cosine */
    return 0;
}

/* Warm-up and measured steps of a created run. */
static int run_steps(const sc_cfg *c, as_nn_run *run, as_store *s, sc_res *r)
{
    char what[48];
    for (int i = 0; i < c->warmup + c->steps; i++) {
        const bool measured = i >= c->warmup;
        int rc = as_nn_run_step(run, &r->loss);
        if (rc) {
            snprintf(what, sizeof what, "training step %d", i + 1);
            return fail(r, rc, what, as_nn_run_error(run));
        }
        note_peaks(s, r, measured);
        if (measured)
            r->cpu_ms[r->nsteps++] = as_nn_run_last(run)->cpu_ms;
    }
    return 0;
}

int sc_measure(const sc_cfg *c, sc_res *r)
{
    memset(r, 0, sizeof *r);
    if (c->steps < 1 || c->steps > SC_MAXSTEPS || c->warmup < 0)
        return fail(r, AS_EINVAL, "configuration", "steps must be 1..8");
    as_nn_preset p;
    if (make_preset(c, &p, r))
        return r->rc;
    as_store *s = NULL;
    as_store_config sc = {.policy = c->pol.spec, .label = c->pol.label};
    char err[256] = "";
    int rc = as_store_create(&sc, &s, err, sizeof err);
    if (rc)
        return fail(r, rc, "store", err);
    as_nn_train_opts o = {.policy = c->pol.spec, .seed = 1, .threads = 1, .store = s};
    as_nn_run *run = NULL;
    rc = as_nn_run_create(&p, &o, &run, err, sizeof err);
    if (rc) {
        fail(r, rc, "run", err);
        goto out;
    }
    /* auto's measuring step runs under the arena limit too: it stores in
     * the most compact measured form, holding what auto can reach */
    if (c->arena_budget) {
        as_arena *a = as_store_arena(s);
        as_arena_reset_peaks(a);
        as_arena_set_budget(a, c->arena_budget);
    }
    if (c->pol.ratio > 0 &&
        (rc = as_nn_run_fit_budget(run, 0, c->pol.ratio, &r->saved_budget))) {
        fail(r, rc, "auto budget", as_nn_run_error(run));
        goto out;
    }
    rc = run_steps(c, run, s, r);
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        r->rss_peak = (uint64_t)ru.ru_maxrss * 1024u;
out:
    as_nn_run_destroy(run);
    as_store_destroy(s);
    return r->rc;
}

bool sc_over_budget(const sc_res *r)
{
    return r->rc == AS_EBUDGET || r->rc == AS_ENOMEM;
}

static bool read_all(int fd, void *buf, size_t n)
{
    char *p = buf;
    while (n) {
        ssize_t k = read(fd, p, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return false;
        p += k;
        n -= (size_t)k;
    }
    return true;
}

int sc_measure_isolated(const sc_cfg *c, sc_res *r)
{
    memset(r, 0, sizeof *r);
    int fd[2];
    if (pipe(fd) != 0)
        return fail(r, AS_EIO, "pipe", strerror(errno));
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        close(fd[0]);
        close(fd[1]);
        return fail(r, AS_EIO, "fork", strerror(errno));
    }
    if (pid == 0) {
        close(fd[0]);
        sc_res cr;
        sc_measure(c, &cr);
        const char *p = (const char *)&cr;
        size_t n = sizeof cr;
        while (n) {
            ssize_t k = write(fd[1], p, n);
            if (k < 0 && errno == EINTR)
                continue;
            if (k <= 0)
                _exit(1);
            p += k;
            n -= (size_t)k;
        }
        _exit(0);
    }
    close(fd[1]);
    bool got = read_all(fd[0], r, sizeof *r);
    close(fd[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (!got || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        char msg[96];
        if (WIFSIGNALED(status))
            snprintf(msg, sizeof msg, "killed by signal %d", WTERMSIG(status));
        else
            snprintf(msg, sizeof msg, "exited without a result (status %d)",
                     WIFEXITED(status) ? WEXITSTATUS(status) : -1);
        return fail(r, AS_EIO, "measuring child", msg);
    }
    return r->rc;
}

double sc_exponent(const double *x, const double *y, int n)
{
    double sx = 0, sy = 0, sxx = 0, sxy = 0;
    int m = 0;
    for (int i = 0; i < n; i++) {
        if (!(x[i] > 0) || !(y[i] > 0) || !isfinite(x[i]) || !isfinite(y[i]))
            continue;
        double lx = log(x[i]), ly = log(y[i]);
        sx += lx;
        sy += ly;
        sxx += lx * lx;
        sxy += lx * ly;
        m++;
    }
    double d = m * sxx - sx * sx;
    if (m < 2 || !(fabs(d) > 1e-12))
        return NAN;
    return (m * sxy - sx * sy) / d;
}

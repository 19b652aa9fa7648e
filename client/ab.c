/*
 * The A/B engine (see ab.h).
 *
 * One seed, as the loop below runs it:
 *
 *     A = run(seed, spec A, store A)     B = run(seed, spec B, store B)
 *     copy A's weights into B            (same start, whatever the policy)
 *     R = run(seed, default=keep)        exact reference (gradient checks)
 *     for k in 0 .. steps-1:
 *         for X in A, B:
 *             every check_every steps: grads(X, k) vs grads(R <- X's weights, k)
 *             step(X)                     batch k, its policy
 *             read the step's peaks (store and arena)
 *         stop requested? -> partial
 *     evaluate A and B; read their memory figures
 */
#include "ab.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "actstore/common.h"
#include "client/cli.h"
#include "util/clock.h"

#define AB_MAX_SEEDS 64

double as_ab_cosine(const float *a, const float *b, size_t n, double acc[3])
{
    double d = 0, na = 0, nb = 0;
    for (size_t i = 0; i < n; i++) {
        d += (double)a[i] * (double)b[i];
        na += (double)a[i] * (double)a[i];
        nb += (double)b[i] * (double)b[i];
    }
    if (acc) {
        acc[0] += d;
        acc[1] += na;
        acc[2] += nb;
    }
    double t[3] = {d, na, nb};
    return as_ab_cosine_of(t);
}

double as_ab_cosine_of(const double acc[3])
{
    if (acc[1] == 0 && acc[2] == 0)
        return 1.0;
    if (acc[1] == 0 || acc[2] == 0)
        return 0.0;
    double c = acc[0] / (sqrt(acc[1]) * sqrt(acc[2]));
    return c > 1.0 ? 1.0 : c < -1.0 ? -1.0 : c;
}

/* ---- signals ------------------------------------------------------------------ */

static volatile sig_atomic_t stop_flag;
static struct sigaction old_int, old_term;

volatile sig_atomic_t *as_ab_stop_flag(void)
{
    return &stop_flag;
}

static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
    static const char msg[] = "\nactstore: interrupted: finishing the current step, then "
                              "writing a partial report (again to abort)\n";
    ssize_t w = write(2, msg, sizeof msg - 1);
    (void)w;
}

void as_ab_signals_catch(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESETHAND; /* the second signal kills */
    stop_flag = 0;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
}

void as_ab_signals_restore(void)
{
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
}

int as_ab_validate(const as_ab_config *c, as_nn_preset *p, char *err, size_t errlen)
{
    const as_nn_model_info *mi = as_nn_model_find(c->model);
    if (!mi) {
        snprintf(err, errlen, "unknown model '%s' (%s)", c->model ? c->model : "",
                 as_nn_model_names());
        return AS_EINVAL;
    }
    if (as_nn_preset_get(c->model, c->preset, p)) {
        snprintf(err, errlen, "unknown preset '%s' (small, bench)", c->preset ? c->preset : "");
        return AS_ENOTFOUND;
    }
    for (int a = 0; a < 2; a++) {
        char e[512] = "";
        if (!c->spec[a] || !*c->spec[a]) {
            snprintf(err, errlen, "arm %c (--%c): empty policy spec", 'A' + a, 'a' + a);
            return AS_ESPEC;
        }
        if (as_policy_check(c->spec[a], e, sizeof e)) {
            snprintf(err, errlen, "arm %c (--%c) spec \"%.200s\": %.250s", 'A' + a, 'a' + a,
                     c->spec[a], e);
            return AS_ESPEC;
        }
    }
    if (c->budget && c->ratio > 0) {
        snprintf(err, errlen, "give --budget or --ratio, not both");
        return AS_EINVAL;
    }
    if (c->ratio != 0 && !(c->ratio > 0 && c->ratio <= 1e6)) {
        snprintf(err, errlen, "--ratio %g out of range (0, 1e6]", c->ratio);
        return AS_EINVAL;
    }
    if ((c->budget || c->ratio > 0) && !strstr(c->spec[0], "auto") &&
        !strstr(c->spec[1], "auto")) {
        snprintf(err, errlen, "--budget / --ratio bind the arms that use auto, "
                 "and neither spec does (e.g. --b default=auto)");
        return AS_EINVAL;
    }
    if (c->nshards && (c->shard < 1 || c->shard > c->nshards ||
                       c->nshards > c->nseeds)) {
        snprintf(err, errlen, "--shard %u/%u: needs 1 <= I <= N <= --seeds (%zu)", c->shard,
                 c->nshards, c->nseeds);
        return AS_EINVAL;
    }
    if (c->nseeds < 1 || c->nseeds > AB_MAX_SEEDS) {
        snprintf(err, errlen, "--seeds %zu out of range 1..%d", c->nseeds, AB_MAX_SEEDS);
        return AS_EINVAL;
    }
    if (c->steps > 0 && c->epochs > 0) {
        snprintf(err, errlen, "give --steps or --epochs, not both");
        return AS_EINVAL;
    }
    if (c->steps < 0 || c->steps > 100000000L) {
        snprintf(err, errlen, "--steps %ld out of range 1..100000000", c->steps);
        return AS_EINVAL;
    }
    if (c->epochs < 0 || c->epochs > 1000) {
        snprintf(err, errlen, "--epochs %g out of range (0, 1000]", c->epochs);
        return AS_EINVAL;
    }
    if (c->check_every < 0) {
        snprintf(err, errlen, "--check-every %ld must be >= 0", c->check_every);
        return AS_EINVAL;
    }
    if (c->act >= 0 && mi->cfg != AS_NN_CFG_cnn) {
        snprintf(err, errlen, "--act applies to the cnn model only");
        return AS_EINVAL;
    }
    if (c->act >= 0 && c->act != AS_FN_RELU && c->act != AS_FN_LEAKY_RELU) {
        snprintf(err, errlen, "--act: relu or leaky");
        return AS_EINVAL;
    }
    if (c->convs && mi->cfg != AS_NN_CFG_cnn) {
        snprintf(err, errlen, "--convs applies to the cnn model only");
        return AS_EINVAL;
    }
    if (c->convs < 0 || (long)c->convs * p->cnn.nstages > 16) {
        snprintf(err, errlen, "--convs %d: more than 16 convs in all", c->convs);
        return AS_EINVAL;
    }
    if (c->steps > 0) {
        p->steps = c->steps;
        p->epochs = 0;
    } else if (c->epochs > 0) {
        p->steps = 0;
        p->epochs = c->epochs;
    }
    if (c->act >= 0)
        p->cnn.act_fn = c->act;
    if (c->convs)
        p->cnn.convs = c->convs;
    return 0;
}

/* ---- progress --------------------------------------------------------------- */

typedef struct prog {
    const as_ab_config *c;
    bool   tty;
    double t0, last;
    long   every;
} prog;

static void prog_step(prog *g, size_t si, size_t ns, uint64_t seed, long k, long n,
                      const as_rep_run *ra, const as_rep_run *rb)
{
    if (g->c->quiet)
        return;
    double t = as_clock_wall_s();
    /* plain lines: every fifth of the run, and at least every 10 s */
    bool line = !g->tty && (k % g->every == 0 || k == n || t - g->last >= 10.0);
    if (g->tty && t - g->last < 0.2 && k != n)
        return;
    if (!g->tty && !line)
        return;
    g->last = t;
    char sa[32], sb[32];
    as_cli_human_bytes(ra->mem_saved[ra->steps_done - 1], sa, sizeof sa);
    as_cli_human_bytes(rb->mem_saved[rb->steps_done - 1], sb, sizeof sb);
    fprintf(stderr, "%sactstore %s: %s seed %llu (%zu/%zu) step %ld/%ld  loss A %.4f B %.4f  "
                    "saved A %s B %s  [%.0f s]%s",
            g->tty ? "\r" : "", g->c->cmd, g->c->title ? g->c->title : g->c->model,
            (unsigned long long)seed, si + 1, ns, k, n, ra->loss[ra->steps_done - 1],
            rb->loss[rb->steps_done - 1], sa, sb, t - g->t0, g->tty ? "\033[K" : "\n");
    fflush(stderr);
}

static void prog_seed_done(prog *g, const as_rep_run *ra, const as_rep_run *rb)
{
    if (g->c->quiet)
        return;
    char sa[32], sb[32];
    fprintf(stderr, "%sactstore %s: %s seed %llu done: ", g->tty ? "\r\033[K" : "", g->c->cmd,
            g->c->title ? g->c->title : g->c->model, (unsigned long long)ra->seed);
    if (ra->evaluated && isfinite(ra->eval_accuracy))
        fprintf(stderr, "accuracy A %.2f%% B %.2f%%, ", 100 * ra->eval_accuracy,
                100 * rb->eval_accuracy);
    else if (ra->evaluated)
        fprintf(stderr, "eval loss A %.4f B %.4f, ", ra->eval_loss, rb->eval_loss);
    fprintf(stderr, "saved peak A %s B %s, step A %.2f ms B %.2f ms\n",
            as_cli_human_bytes((double)ra->saved_stored_peak, sa, sizeof sa),
            as_cli_human_bytes((double)rb->saved_stored_peak, sb, sizeof sb),
            as_report_step_ms_median(ra), as_report_step_ms_median(rb));
}

/* ---- one seed ---------------------------------------------------------------- */

/* The step's peaks, read right after the step (peaks reset at step begin). */
static void step_peaks(as_store *s, double *saved, double *arena)
{
    *saved = NAN;
    *arena = NAN;
    as_store_stats st;
    if (as_store_stats_take(s, &st) == 0) {
        *saved = (double)st.total.stored_peak;
        as_store_stats_free(&st);
    }
    as_arena_snapshot sn;
    if (as_arena_snapshot_take(as_store_arena(s), UINT64_MAX, &sn) == 0) {
        *arena = (double)sn.total.peak_usable;
        as_arena_snapshot_free(&sn);
    }
}

/* Gradients of X on batch k versus the exact ones of the same weights. */
static int grad_check(as_report *rep, as_rep_run *out, as_nn_run *x, as_nn_run *ref,
                      long k, float *buf, double *per, char *err, size_t errlen)
{
    int rc = as_nn_run_grads(x, k, NULL);
    if (rc) {
        snprintf(err, errlen, "gradient check at step %ld: %s", k, as_nn_run_error(x));
        return rc;
    }
    const as_nn_params *px = as_nn_run_params(x);
    size_t o = 0;
    for (size_t i = 0; i < px->n; i++) {
        memcpy(buf + o, px->p[i]->g.ptr, px->p[i]->n * sizeof(float));
        o += px->p[i]->n;
    }
    rc = as_nn_run_copy_weights(ref, x, false);
    if (!rc)
        rc = as_nn_run_grads(ref, k, NULL);
    if (rc) {
        snprintf(err, errlen, "gradient check at step %ld (exact run): %s", k,
                 as_nn_run_error(ref));
        return rc;
    }
    const as_nn_params *pr = as_nn_run_params(ref);
    double acc[3] = {0, 0, 0};
    o = 0;
    for (size_t i = 0; i < pr->n; i++) {
        per[i] = as_ab_cosine(buf + o, (const float *)pr->p[i]->g.ptr, pr->p[i]->n, acc);
        o += pr->p[i]->n;
    }
    rc = as_report_push_cos(rep, out, k, as_ab_cosine_of(acc), per);
    /* for a service watching the arm (--serve): the fleet can alert on it */
    if (!rc && out->ncos) {
        as_store_report_metric(as_nn_run_store(x), "grad_cosine", out->cos[out->ncos - 1].overall);
        as_store_report_metric(as_nn_run_store(x), "grad_cosine_min", out->cos[out->ncos - 1].min);
    }
    return rc;
}

static void fill_memory(as_rep_run *out, as_nn_run *r)
{
    as_nn_mem m;
    as_nn_run_memory(r, &m);
    out->saved_stored_peak = m.saved_stored_peak;
    out->saved_raw_peak = m.saved_raw_peak;
    out->arena_peak = m.arena_peak;
    out->fallbacks = m.fallbacks;
    as_store_plan_free(&out->plan);
    if (as_store_plan_take(as_nn_run_store(r), &out->plan))
        memset(&out->plan, 0, sizeof out->plan);
    for (int k = 0; k < AS_KIND_COUNT; k++) {
        out->kind_stored_peak[k] = m.by_kind[k].stored_peak;
        out->kind_raw_peak[k] = m.by_kind[k].raw_peak;
    }
}

/* One seed of a comparison: both arms, the exact reference, the buffers of
 * the gradient check. */
typedef struct seed_run {
    const as_ab_config *c;
    as_report *rep;
    size_t     si;
    uint64_t   seed;
    as_nn_run *run[2], *ref;
    float     *buf;       /* all gradients, flat */
    double    *per;       /* per tensor */
    char      *err;
    size_t     errlen;
} seed_run;

/* Both arms from the same weights, and the exact reference when checking. */
static int seed_create(seed_run *s, const as_nn_preset *p)
{
    const as_ab_config *c = s->c;
    char e[512] = "";
    int rc = 0;
    for (int a = 0; a < 2 && !rc; a++) {
        char label[2] = {(char)('A' + a), 0};
        as_nn_train_opts o = {.policy = c->spec[a], .seed = s->seed, .threads = c->threads,
                              .data_dir = c->data_dir, .text_dir = c->text_dir,
                              .store = c->store[a], .label = label};
        rc = as_nn_run_create(p, &o, &s->run[a], e, sizeof e);
        if (rc)
            snprintf(s->err, s->errlen, "arm %c, seed %llu: %s", 'A' + a,
                     (unsigned long long)s->seed, e);
    }
    if (!rc)
        rc = as_nn_run_copy_weights(s->run[1], s->run[0], false);
    /* A budget (or ratio) binds the arms that plan with auto. */
    for (int a = 0; a < 2 && !rc && (c->budget || c->ratio > 0); a++) {
        if (!strstr(c->spec[a], "auto"))
            continue;
        as_rep_run *out = &s->rep->arm[a].runs[s->si];
        rc = as_nn_run_fit_budget(s->run[a], c->budget, c->ratio, &out->budget);
        if (rc)
            snprintf(s->err, s->errlen, "arm %c, seed %llu: %s", 'A' + a,
                     (unsigned long long)s->seed, as_nn_run_error(s->run[a]));
    }
    if (!rc && c->check_every > 0) {
        as_nn_train_opts o = {.policy = "default=keep", .seed = s->seed, .threads = c->threads,
                              .data_dir = c->data_dir, .text_dir = c->text_dir,
                              .label = "exact"};
        rc = as_nn_run_create(p, &o, &s->ref, e, sizeof e);
        if (rc)
            snprintf(s->err, s->errlen, "exact reference run, seed %llu: %s",
                     (unsigned long long)s->seed, e);
    }
    return rc;
}

/* The report's tensor names (first seed) and the gradient check buffers. */
static int seed_prepare(seed_run *s)
{
    const as_nn_params *ps = as_nn_run_params(s->run[0]);
    if (s->rep->ntensors == 0) {
        const char **names = calloc(ps->n ? ps->n : 1, sizeof *names);
        if (!names)
            return AS_ENOMEM;
        for (size_t i = 0; i < ps->n; i++)
            names[i] = ps->p[i]->name;
        int rc = as_report_set_tensors(s->rep, names, ps->n);
        free(names);
        if (rc)
            return rc;
    }
    size_t total = as_nn_params_count(ps);
    if (s->ref) {
        s->buf = malloc((total ? total : 1) * sizeof *s->buf);
        s->per = malloc((ps->n ? ps->n : 1) * sizeof *s->per);
        if (!s->buf || !s->per) {
            snprintf(s->err, s->errlen, "out of memory (gradient check buffers)");
            return AS_ENOMEM;
        }
    }
    return 0;
}

/* Step k of both arms (after the gradient check when one is due). */
static int seed_step(seed_run *s, long k)
{
    const as_ab_config *c = s->c;
    char e[512] = "";
    for (int a = 0; a < 2; a++) {
        as_rep_run *out = &s->rep->arm[a].runs[s->si];
        int rc;
        if (s->ref && k % c->check_every == 0) {
            rc = grad_check(s->rep, out, s->run[a], s->ref, k, s->buf, s->per, e, sizeof e);
            if (rc) {
                snprintf(s->err, s->errlen, "arm %c, seed %llu: %s", 'A' + a,
                         (unsigned long long)s->seed, e);
                return rc;
            }
        }
        double loss;
        rc = as_nn_run_step(s->run[a], &loss);
        if (rc) {
            snprintf(s->err, s->errlen, "arm %c, seed %llu, step %ld: %s", 'A' + a,
                     (unsigned long long)s->seed, k, as_nn_run_error(s->run[a]));
            return rc;
        }
        double ms_saved, ms_arena;
        step_peaks(as_nn_run_store(s->run[a]), &ms_saved, &ms_arena);
        rc = as_report_push_step(out, loss, ms_saved, ms_arena, as_nn_run_last(s->run[a])->ms);
        if (rc) {
            snprintf(s->err, s->errlen, "out of memory (report)");
            return rc;
        }
    }
    return 0;
}

/* The final evaluation of both arms. */
static int seed_eval(seed_run *s)
{
    for (int a = 0; a < 2; a++) {
        as_rep_run *out = &s->rep->arm[a].runs[s->si];
        out->finished = true;
        as_nn_eval ev;
        int rc = as_nn_run_eval(s->run[a], &ev);
        if (rc) {
            snprintf(s->err, s->errlen, "arm %c, seed %llu, evaluation: %s", 'A' + a,
                     (unsigned long long)s->seed, as_nn_run_error(s->run[a]));
            return rc;
        }
        out->evaluated = true;
        out->eval_accuracy = ev.accuracy >= 0 ? ev.accuracy : NAN;
        out->eval_loss = ev.loss;
    }
    return 0;
}

static int run_seed(const as_ab_config *c, const as_nn_preset *p, as_report *rep, size_t si,
                    prog *g, bool *stopped, char *err, size_t errlen)
{
    seed_run s = {.c = c, .rep = rep, .si = si, .seed = rep->arm[0].runs[si].seed,
                  .err = err, .errlen = errlen};
    as_rep_run *ra = &rep->arm[0].runs[si], *rb = &rep->arm[1].runs[si];
    int rc = seed_create(&s, p);
    if (!rc)
        rc = seed_prepare(&s);
    const long n = rc ? 0 : as_nn_run_planned_steps(s.run[0]);
    if (!rc) {
        rep->steps = n;
        g->every = n / 5 > 0 ? n / 5 : 1;
        g->last = as_clock_wall_s();
        if (!c->quiet)
            fprintf(stderr, "actstore %s: %s seed %llu (%zu/%zu): training %ld steps, "
                            "A: %s, B: %s\n", c->cmd, c->title ? c->title : c->model,
                    (unsigned long long)s.seed, si + 1, rep->nseeds, n, c->spec[0],
                    c->spec[1]);
    }
    for (long k = 0; k < n && !rc; k++) {
        rc = seed_step(&s, k);
        if (!rc)
            prog_step(g, si, rep->nseeds, s.seed, k + 1, n, ra, rb);
        if (!rc && c->stop && *c->stop && k + 1 < n) {
            *stopped = true;
            snprintf(rep->partial_reason, sizeof rep->partial_reason,
                     "interrupted at step %ld of %ld, seed %llu", k + 1, n,
                     (unsigned long long)s.seed);
            break;
        }
    }
    if (!rc && !*stopped)
        rc = seed_eval(&s);
    for (int a = 0; a < 2; a++)
        if (s.run[a]) {
            fill_memory(&rep->arm[a].runs[si], s.run[a]);
            as_nn_run_destroy(s.run[a]);
        }
    as_nn_run_destroy(s.ref);
    free(s.buf);
    free(s.per);
    if (!rc && !*stopped)
        prog_seed_done(g, ra, rb);
    else if (g->tty && !c->quiet)
        fputc('\n', stderr);
    return rc;
}

int as_ab_run(const as_ab_config *c, as_report *rep, char *err, size_t errlen)
{
    as_nn_preset p;
    memset(rep, 0, sizeof *rep);
    int rc = as_ab_validate(c, &p, err, errlen);
    if (rc)
        return rc;
    uint64_t seeds[AB_MAX_SEEDS];
    size_t nseeds = 0;
    for (size_t i = 0; i < c->nseeds; i++)
        if (!c->nshards || i % c->nshards == c->shard - 1)
            seeds[nseeds++] = c->seed0 + i;
    rc = as_report_init(rep, c->model, p.name, c->spec[0], c->spec[1], seeds, nseeds,
                        p.steps, c->check_every);
    if (rc) {
        snprintf(err, errlen, "out of memory");
        return rc;
    }
    if (c->nshards) {
        rep->shard = c->shard;
        rep->nshards = c->nshards;
        rep->seed0 = c->seed0;
        rep->seeds_total = c->nseeds;
    }
    if (as_nn_model_find(c->model)->cfg == AS_NN_CFG_cnn)
        snprintf(rep->options, sizeof rep->options, "act=%s%s%.0d",
                 p.cnn.act_fn == AS_FN_LEAKY_RELU ? "leaky" : "relu",
                 p.cnn.convs != 1 ? " convs=" : "", p.cnn.convs != 1 ? p.cnn.convs : 0);
    prog g = {.c = c, .tty = isatty(2) && getenv("TERM") && strcmp(getenv("TERM"), "dumb"),
              .t0 = as_clock_wall_s(), .every = 1};
    bool stopped = false;
    for (size_t i = 0; i < nseeds && !rc && !stopped; i++) {
        if (c->stop && *c->stop) {
            stopped = true;
            snprintf(rep->partial_reason, sizeof rep->partial_reason,
                     "interrupted before seed %llu", (unsigned long long)seeds[i]);
            break;
        }
        rc = run_seed(c, &p, rep, i, &g, &stopped, err, errlen);
    }
    rep->wall_s = as_clock_wall_s() - g.t0;
    if (rc) {
        rep->partial = true;
        snprintf(rep->partial_reason, sizeof rep->partial_reason, "stopped by an error");
        return rc;
    }
    if (stopped) {
        rep->partial = true;
        return AS_ESTATE;
    }
    return 0;
}

/*
 * Training runs (see train.h): the step-wise run object. Presets are in
 * presets.c, the whole-run loop (as_nn_train) in train_job.c.
 *
 * One step of a run, as any C framework using the store would do it:
 *
 *     as_store_step_begin(store, k)         per-step peaks reset
 *     as_store_phase(store, FORWARD)        model->forward: layers save
 *     as_store_phase(store, BACKWARD)       model->backward: layers restore,
 *                                           release; gradients accumulate
 *     as_store_phase(store, OPTIMIZER)      as_nn_optim_step
 *     as_store_step_end(store)              anything left is released
 *
 * Data order. Batch k is a pure function of (seed, k): images come from a
 * per-epoch permutation seeded by (seed, epoch); text windows start at
 * positions hashed from (seed, k, row). Dropout masks are seeded by
 * (seed, k, layer). So any batch can be recomputed on its own (exact
 * gradients of a batch in a reference run), and two runs with one seed see
 * the same batches in the same order.
 */
#include "layers/train.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "layers/data.h"
#include "util/clock.h"

/* ---- the run object ------------------------------------------------------ */

struct as_nn_run {
    as_nn_preset p;
    uint64_t     seed;
    const as_nn_model_info *info;   /* the model's row (models.def) */
    bool         lm;              /* a text model */
    as_store    *store;
    bool         own_store;
    as_nn_ctx    ctx;
    as_nn_model *model;
    as_nn_optim  opt;
    /* data */
    const as_nn_images *train, *test;   /* shared, read-only (image cache) */
    struct image_set *images;
    as_nn_text   text;
    int          ntrain;          /* images used (train_limit) */
    int32_t     *perm;            /* permutation of epoch perm_epoch */
    long         perm_epoch;
    /* batch buffers (B = batch rows; evaluation runs in chunks of B, so it
     * never needs more memory than a training step) */
    int          bcap;
    float       *x;               /* (B, 1, 28, 28) */
    int32_t     *y, *tok, *tgt;   /* (B), (B, T), (B, T) */
    int32_t     *evidx;           /* (B) test-image indices of one chunk */
    float       *bufsave;         /* copy of the model's buffers */
    size_t       bufsave_n;
    long         next;            /* next batch index = steps done */
    long         planned;
    long         bpe;             /* batches per epoch */
    as_nn_step_info last;
    as_nn_mem    mem;
    char         err[512];
};

static uint64_t mix(uint64_t a, uint64_t b)
{
    uint64_t s = a ^ (b * 0x9E3779B97F4A7C15ull) ^ 0xD1B54A32D192ED03ull;
    return as_nn_rand(&s);
}

static int run_fail(as_nn_run *r, int code, const char *what)
{
    snprintf(r->err, sizeof r->err, "%s%s%s", what, r->ctx.err[0] ? ": " : "",
             r->ctx.err);
    return code;
}

/* ---- shared images ----------------------------------------------------------
 * Fashion-MNIST is 55 MB decoded and takes a quarter of a second to
 * inflate; paired runs (A/B arms, exact-gradient references) and tests
 * create several runs on it. So the images are loaded once per directory
 * and shared read-only between runs: a small list of refcounted sets,
 * kept after the last run ends (a later run reuses them) until
 * as_nn_image_cache_clear(). */

typedef struct image_set {
    struct image_set *next;
    char          dir[1024];
    as_nn_images  train, test;
    int           refs;
} image_set;

static pthread_mutex_t image_mu = PTHREAD_MUTEX_INITIALIZER;
static image_set *image_sets;

static int images_acquire(const char *dir, image_set **out, char *err,
                          size_t errlen)
{
    if (!dir)
        dir = AS_NN_FMNIST_DIR;
    pthread_mutex_lock(&image_mu);
    image_set *e = image_sets;
    while (e && strcmp(e->dir, dir))
        e = e->next;
    int rc = 0;
    if (!e) {
        e = calloc(1, sizeof *e);
        if (!e) {
            snprintf(err, errlen, "out of memory");
            rc = AS_ENOMEM;
        } else {
            snprintf(e->dir, sizeof e->dir, "%s", dir);
            rc = as_nn_fmnist_load(dir, true, &e->train, err, errlen);
            if (!rc)
                rc = as_nn_fmnist_load(dir, false, &e->test, err, errlen);
            if (rc) {
                as_nn_images_free(&e->train);
                free(e);
                e = NULL;
            } else {
                e->next = image_sets;
                image_sets = e;
            }
        }
    }
    if (e)
        e->refs++;
    pthread_mutex_unlock(&image_mu);
    *out = e;
    return rc;
}

static void images_release(image_set *e)
{
    if (!e)
        return;
    pthread_mutex_lock(&image_mu);
    e->refs--;
    pthread_mutex_unlock(&image_mu);
}

void as_nn_image_cache_clear(void)
{
    pthread_mutex_lock(&image_mu);
    for (image_set **pp = &image_sets; *pp;) {
        image_set *e = *pp;
        if (e->refs > 0) {
            pp = &e->next;
            continue;
        }
        *pp = e->next;
        as_nn_images_free(&e->train);
        as_nn_images_free(&e->test);
        free(e);
    }
    pthread_mutex_unlock(&image_mu);
}

static int load_data(as_nn_run *r, const as_nn_train_opts *o)
{
    int rc;
    if (r->lm) {
        rc = as_nn_text_load(o->text_dir, &r->text, r->err, sizeof r->err);
        if (rc)
            return rc;
        const size_t T = (size_t)r->p.tf.T;
        if (r->text.ntrain < 4 * (T + 1) || r->text.nheldout < T + 1) {
            snprintf(r->err, sizeof r->err, "%s: too little text for context %zu "
                     "(%zu training, %zu held-out bytes)",
                     o->text_dir ? o->text_dir : AS_NN_FORTUNES_DIR, T,
                     r->text.ntrain, r->text.nheldout);
            return AS_EFORMAT;
        }
        r->p.tf.V = r->text.vocab;
        return 0;
    }
    rc = images_acquire(o->data_dir, &r->images, r->err, sizeof r->err);
    if (rc)
        return rc;
    r->train = &r->images->train;
    r->test = &r->images->test;
    r->ntrain = r->train->n;
    if (r->p.train_limit > 0 && r->p.train_limit < r->ntrain)
        r->ntrain = r->p.train_limit;
    if (r->ntrain < r->p.batch) {
        snprintf(r->err, sizeof r->err, "training set of %d images is smaller "
                 "than one batch (%d)", r->ntrain, r->p.batch);
        return AS_EINVAL;
    }
    return 0;
}

static int check_preset(as_nn_run *r)
{
    const as_nn_preset *p = &r->p;
    if (!r->info) {
        snprintf(r->err, sizeof r->err, "unknown model '%s' (%s)", p->model,
                 as_nn_model_names());
        return AS_EINVAL;
    }
    if (p->batch < 1 || p->batch > 65536) {
        snprintf(r->err, sizeof r->err, "batch %d out of range 1..65536", p->batch);
        return AS_EINVAL;
    }
    if (p->steps < 0 || (p->steps == 0 && !(p->epochs > 0))) {
        snprintf(r->err, sizeof r->err, "need steps > 0 or epochs > 0");
        return AS_EINVAL;
    }
    if (!(p->lr > 0) || !isfinite(p->lr)) {
        snprintf(r->err, sizeof r->err, "learning rate must be > 0");
        return AS_EINVAL;
    }
    if (r->lm && (p->tf.T < 2 || p->tf.T > 16384)) {
        snprintf(r->err, sizeof r->err, "lm context %d out of range 2..16384", p->tf.T);
        return AS_EINVAL;
    }
    return 0;
}

int as_nn_run_create(const as_nn_preset *p, const as_nn_train_opts *o,
                     as_nn_run **out, char *err, size_t errlen)
{
    static const as_nn_train_opts dflt = {0};
    *out = NULL;
    if (!o)
        o = &dflt;
    as_nn_run *r = calloc(1, sizeof *r);
    if (!r) {
        snprintf(err, errlen, "out of memory");
        return AS_ENOMEM;
    }
    r->p = *p;
    r->seed = o->seed;
    r->info = as_nn_model_find(p->model);
    r->lm = r->info && r->info->data == AS_NN_DATA_TEXT;
    r->perm_epoch = -1;
    int rc = check_preset(r);
    if (!rc) {
        as_op_set_threads(o->threads);
        rc = load_data(r, o);
    }
    if (!rc && o->store) {
        r->store = o->store;
        if (o->policy)
            rc = as_store_set_policy(r->store, o->policy, r->err, sizeof r->err);
    } else if (!rc) {
        as_store_config cfg = {.policy = o->policy, .label = o->label};
        rc = as_store_create(&cfg, &r->store, r->err, sizeof r->err);
        r->own_store = rc == 0;
    }
    if (rc) {
        if (rc == AS_ESPEC) {
            char tmp[sizeof r->err];
            snprintf(tmp, sizeof tmp, "%s", r->err);
            snprintf(r->err, sizeof r->err, "policy '%.200s': %.280s",
                     o->policy ? o->policy : "", tmp);
        }
        goto fail;
    }
    as_nn_ctx_init(&r->ctx, r->store, r->seed);
    rc = r->info->create(&r->ctx, &r->p, r->seed, &r->model);
    if (rc) {
        run_fail(r, rc, "building the model");
        goto fail;
    }
    as_nn_optim_init(&r->opt, r->p.optim, r->p.lr, r->p.weight_decay);
    r->opt.clip = r->p.clip;
    r->bcap = r->p.batch;
    const size_t B = (size_t)r->bcap, T = r->lm ? (size_t)r->p.tf.T : 0;
    if (r->lm) {
        r->tok = malloc(B * T * sizeof *r->tok);
        r->tgt = malloc(B * T * sizeof *r->tgt);
    } else {
        r->x = malloc(B * 784 * sizeof *r->x);
        r->y = malloc(B * sizeof *r->y);
        r->evidx = malloc(B * sizeof *r->evidx);
        r->perm = malloc((size_t)r->ntrain * sizeof *r->perm);
    }
    for (size_t i = 0; i < r->model->nbufs; i++)
        r->bufsave_n += r->model->bufs[i].n;
    r->bufsave = malloc((r->bufsave_n + 1) * sizeof *r->bufsave);
    if ((r->lm && (!r->tok || !r->tgt)) ||
        (!r->lm && (!r->x || !r->y || !r->evidx || !r->perm)) || !r->bufsave) {
        snprintf(r->err, sizeof r->err, "out of memory (batch buffers)");
        rc = AS_ENOMEM;
        goto fail;
    }
    /* planned length */
    if (r->lm)
        r->bpe = (long)(r->text.ntrain / ((size_t)r->p.batch * (T + 1)));
    else
        r->bpe = r->ntrain / r->p.batch;
    if (r->bpe < 1)
        r->bpe = 1;
    r->planned = r->p.steps > 0 ? r->p.steps
                                : (long)ceil(r->p.epochs * (double)r->bpe);
    *out = r;
    return 0;
fail:
    snprintf(err, errlen, "%s", r->err);
    as_nn_run_destroy(r);
    return rc;
}

void as_nn_run_destroy(as_nn_run *r)
{
    if (!r)
        return;
    if (r->model)
        as_nn_model_destroy(r->model, &r->ctx);
    as_nn_ctx_fini(&r->ctx);
    if (r->own_store)
        as_store_destroy(r->store);
    images_release(r->images);
    as_nn_text_free(&r->text);
    free(r->perm);
    free(r->x);
    free(r->evidx);
    free(r->y);
    free(r->tok);
    free(r->tgt);
    free(r->bufsave);
    free(r);
}

/* ---- batches --------------------------------------------------------------- */

static void make_perm(as_nn_run *r, long epoch)
{
    if (r->perm_epoch == epoch)
        return;
    uint64_t s = mix(r->seed, 0x5045524Dull + (uint64_t)epoch);
    for (int i = 0; i < r->ntrain; i++)
        r->perm[i] = i;
    for (int i = r->ntrain - 1; i > 0; i--) {
        int j = (int)(as_nn_rand(&s) % (uint64_t)(i + 1));
        int32_t t = r->perm[i];
        r->perm[i] = r->perm[j];
        r->perm[j] = t;
    }
    r->perm_epoch = epoch;
}

/* Fill the batch buffers with training batch k. */
static void train_batch(as_nn_run *r, long k, as_nn_batch *bt)
{
    const int B = r->p.batch;
    memset(bt, 0, sizeof *bt);
    bt->B = B;
    if (r->lm) {
        const int T = r->p.tf.T;
        const uint64_t span = (uint64_t)(r->text.ntrain - (size_t)T - 1);
        for (int b = 0; b < B; b++) {
            uint64_t s = mix(mix(r->seed, (uint64_t)k), (uint64_t)b + 1);
            size_t st = (size_t)(as_nn_rand(&s) % span);
            for (int t = 0; t < T; t++) {
                r->tok[(size_t)b * T + t] = r->text.train[st + t];
                r->tgt[(size_t)b * T + t] = r->text.train[st + t + 1];
            }
        }
        bt->T = T;
        bt->tok = r->tok;
        bt->tgt = r->tgt;
        return;
    }
    make_perm(r, k / r->bpe);
    const int32_t *idx = r->perm + (size_t)(k % r->bpe) * B;
    as_nn_images_batch(r->train, idx, B, r->x, r->y);
    bt->x = r->x;
    bt->y = r->y;
}

/* ---- steps ----------------------------------------------------------------- */

static void note_memory(as_nn_run *r)
{
    as_nn_mem *m = &r->mem;
    as_store_stats st;
    if (as_store_stats_take(r->store, &st) == 0) {
        if (st.total.stored_peak > m->saved_stored_peak)
            m->saved_stored_peak = st.total.stored_peak;
        if (st.total.raw_peak > m->saved_raw_peak)
            m->saved_raw_peak = st.total.raw_peak;
        for (int k = 0; k < AS_KIND_COUNT; k++) {
            if (st.kinds[k].stored_peak > m->by_kind[k].stored_peak)
                m->by_kind[k].stored_peak = st.kinds[k].stored_peak;
            if (st.kinds[k].raw_peak > m->by_kind[k].raw_peak)
                m->by_kind[k].raw_peak = st.kinds[k].raw_peak;
        }
        m->fallbacks = st.total.fallbacks;
        as_store_stats_free(&st);
    }
    as_arena_snapshot sn;
    if (as_arena_snapshot_take(as_store_arena(r->store), UINT64_MAX, &sn) == 0) {
        if (sn.total.peak_usable > m->arena_peak)
            m->arena_peak = sn.total.peak_usable;
        for (int t = 0; t < AS_TAG_FIXED_COUNT; t++)
            if (sn.tags[t].peak_usable > m->tag_peak[t])
                m->tag_peak[t] = sn.tags[t].peak_usable;
        as_arena_snapshot_free(&sn);
    }
}

/* Forward and backward of training batch k into fresh gradients. */
static int forward_backward(as_nn_run *r, long k, as_nn_step_info *info)
{
    as_nn_batch bt;
    train_batch(r, k, &bt);
    as_nn_params_zero_grad(&r->model->params);
    r->ctx.step = (uint64_t)k;
    r->ctx.err[0] = 0;
    as_nn_ctx_train(&r->ctx, true);
    as_store_step_begin(r->store, (uint64_t)k);
    as_store_phase(r->store, AS_PHASE_FORWARD);
    double loss = 0;
    int ncorrect = 0;
    int rc = r->model->forward(r->model, &r->ctx, &bt, &loss, &ncorrect);
    if (!rc) {
        as_store_phase(r->store, AS_PHASE_BACKWARD);
        rc = r->model->backward(r->model, &r->ctx);
    }
    if (rc) {
        as_store_step_end(r->store);
        char what[64];
        snprintf(what, sizeof what, "batch %ld", k);
        return run_fail(r, rc, what);
    }
    if (!isfinite(loss)) {
        as_store_step_end(r->store);
        snprintf(r->err, sizeof r->err, "batch %ld: loss is %g (diverged; lower "
                 "the learning rate)", k, loss);
        return AS_ERANGE;
    }
    memset(info, 0, sizeof *info);
    info->batch = k;
    info->loss = loss;
    info->ncorrect = ncorrect;
    info->samples = r->lm ? bt.B * bt.T : bt.B;
    return 0;
}

static float lr_at(const as_nn_run *r, long t)
{
    const float lr = r->p.lr, lo = lr * 0.1f;
    const long w = r->p.warmup, T = r->planned;
    if (t < w)
        return lr * (float)(t + 1) / (float)w;
    if (T <= w || t >= T)
        return lo;
    double f = (double)(t - w) / (double)(T - w);
    return lo + 0.5f * (lr - lo) * (float)(1.0 + cos(M_PI * f));
}

int as_nn_run_step(as_nn_run *r, double *loss)
{
    double t0 = as_clock_wall_s(), c0 = as_clock_thread_cpu_s();
    as_nn_step_info info;
    int rc = forward_backward(r, r->next, &info);
    if (rc)
        return rc;
    as_store_phase(r->store, AS_PHASE_OPTIMIZER);
    info.lr = lr_at(r, r->next);
    rc = as_nn_optim_step(&r->ctx, &r->opt, &r->model->params, info.lr,
                          &info.gnorm);
    note_memory(r);
    as_store_step_end(r->store);
    as_store_phase(r->store, AS_PHASE_NONE);
    if (rc)
        return run_fail(r, rc, "optimizer");
    r->next++;
    info.ms = 1e3 * (as_clock_wall_s() - t0);
    info.cpu_ms = 1e3 * (as_clock_thread_cpu_s() - c0);
    r->last = info;
    if (loss)
        *loss = info.loss;
    return 0;
}

int as_nn_run_grads(as_nn_run *r, long batch, double *loss)
{
    if (batch < 0) {
        snprintf(r->err, sizeof r->err, "batch index %ld < 0", batch);
        return AS_EINVAL;
    }
    double t0 = as_clock_wall_s(), c0 = as_clock_thread_cpu_s();
    /* BatchNorm's running statistics move in a training forward: keep them */
    size_t o = 0;
    for (size_t i = 0; i < r->model->nbufs; i++) {
        memcpy(r->bufsave + o, r->model->bufs[i].p,
               r->model->bufs[i].n * sizeof(float));
        o += r->model->bufs[i].n;
    }
    as_nn_step_info info;
    int rc = forward_backward(r, batch, &info);
    if (!rc) {
        note_memory(r);
        as_store_step_end(r->store);
        as_store_phase(r->store, AS_PHASE_NONE);
    }
    o = 0;
    for (size_t i = 0; i < r->model->nbufs; i++) {
        memcpy(r->model->bufs[i].p, r->bufsave + o,
               r->model->bufs[i].n * sizeof(float));
        o += r->model->bufs[i].n;
    }
    if (rc)
        return rc;
    info.ms = 1e3 * (as_clock_wall_s() - t0);
    info.cpu_ms = 1e3 * (as_clock_thread_cpu_s() - c0);
    r->last = info;
    if (loss)
        *loss = info.loss;
    return 0;
}

int as_nn_run_seek(as_nn_run *r, long next_batch)
{
    if (next_batch < 0) {
        snprintf(r->err, sizeof r->err, "batch index %ld < 0", next_batch);
        return AS_EINVAL;
    }
    r->next = next_batch;
    return 0;
}

/* ---- evaluation ------------------------------------------------------------ */

int as_nn_run_eval(as_nn_run *r, as_nn_eval *out)
{
    memset(out, 0, sizeof *out);
    as_nn_ctx_train(&r->ctx, false);
    as_store_phase(r->store, AS_PHASE_EVAL);
    double sum = 0;
    long n = 0, correct = 0;
    int rc = 0;
    if (r->lm) {
        const int T = r->p.tf.T;
        long nw = (long)((r->text.nheldout - 1) / (size_t)T);
        if (r->p.eval_limit > 0 && nw > r->p.eval_limit)
            nw = r->p.eval_limit;
        for (long w0 = 0; w0 < nw && !rc; w0 += r->bcap) {
            int B = (int)(nw - w0 < r->bcap ? nw - w0 : r->bcap);
            for (int b = 0; b < B; b++) {
                const uint8_t *src = r->text.heldout + (size_t)(w0 + b) * T;
                for (int t = 0; t < T; t++) {
                    r->tok[(size_t)b * T + t] = src[t];
                    r->tgt[(size_t)b * T + t] = src[t + 1];
                }
            }
            as_nn_batch bt = {.B = B, .T = T, .tok = r->tok, .tgt = r->tgt};
            double loss = 0;
            int nc = 0;
            rc = r->model->forward(r->model, &r->ctx, &bt, &loss, &nc);
            sum += loss * B * T;
            n += (long)B * T;
            correct += nc;
        }
    } else {
        long ni = r->test->n;
        if (r->p.eval_limit > 0 && ni > r->p.eval_limit)
            ni = r->p.eval_limit;
        for (long i0 = 0; i0 < ni && !rc; i0 += r->bcap) {
            int B = (int)(ni - i0 < r->bcap ? ni - i0 : r->bcap);
            for (int b = 0; b < B; b++)
                r->evidx[b] = (int32_t)(i0 + b);
            as_nn_images_batch(r->test, r->evidx, B, r->x, r->y);
            as_nn_batch bt = {.B = B, .x = r->x, .y = r->y};
            double loss = 0;
            int nc = 0;
            rc = r->model->forward(r->model, &r->ctx, &bt, &loss, &nc);
            sum += loss * B;
            n += B;
            correct += nc;
        }
    }
    as_nn_ctx_train(&r->ctx, true);
    as_store_phase(r->store, AS_PHASE_NONE);
    note_memory(r);   /* evaluation counts in the peaks (a budget set from them) */
    if (rc)
        return run_fail(r, rc, "evaluation");
    out->samples = n;
    out->loss = n ? sum / (double)n : 0;
    out->accuracy = r->lm ? -1.0 : (n ? (double)correct / (double)n : 0);
    return 0;
}

/* ---- weights --------------------------------------------------------------- */

int as_nn_run_copy_weights(as_nn_run *dst, const as_nn_run *src,
                           bool with_optimizer)
{
    const as_nn_params *a = &dst->model->params, *b = &src->model->params;
    if (a->n != b->n || dst->model->nbufs != src->model->nbufs ||
        strcmp(dst->p.model, src->p.model)) {
        snprintf(dst->err, sizeof dst->err, "copy weights: different models "
                 "(%s with %zu parameters, %s with %zu)", dst->p.model, a->n,
                 src->p.model, b->n);
        return AS_ESHAPE;
    }
    for (size_t i = 0; i < a->n; i++)
        if (a->p[i]->n != b->p[i]->n || strcmp(a->p[i]->name, b->p[i]->name)) {
            snprintf(dst->err, sizeof dst->err, "copy weights: parameter %zu is "
                     "%s (%zu) here and %s (%zu) in the source", i,
                     a->p[i]->name, a->p[i]->n, b->p[i]->name, b->p[i]->n);
            return AS_ESHAPE;
        }
    for (size_t i = 0; i < dst->model->nbufs; i++)
        if (dst->model->bufs[i].n != src->model->bufs[i].n) {
            snprintf(dst->err, sizeof dst->err, "copy weights: buffer %zu differs", i);
            return AS_ESHAPE;
        }
    if (with_optimizer && dst->opt.kind != src->opt.kind) {
        snprintf(dst->err, sizeof dst->err, "copy weights: different optimizers");
        return AS_ESHAPE;
    }
    for (size_t i = 0; i < a->n; i++) {
        as_nn_param *d = a->p[i];
        const as_nn_param *s = b->p[i];
        memcpy(d->w.ptr, s->w.ptr, d->n * sizeof(float));
        d->version++;
        if (!with_optimizer)
            continue;
        const as_block *sm[2] = {&s->m, &s->v};
        as_block *dm[2] = {&d->m, &d->v};
        for (int j = 0; j < 2; j++) {
            if (!sm[j]->ptr) {
                if (dm[j]->ptr)
                    memset(dm[j]->ptr, 0, d->n * sizeof(float));
                continue;
            }
            if (!dm[j]->ptr) {
                int rc = as_nn_alloc(&dst->ctx, d->n * sizeof(float),
                                     AS_TAG_OPTIMIZER, d->layer, false, dm[j]);
                if (rc)
                    return run_fail(dst, rc, "copy weights");
            }
            memcpy(dm[j]->ptr, sm[j]->ptr, d->n * sizeof(float));
        }
    }
    for (size_t i = 0; i < dst->model->nbufs; i++)
        memcpy(dst->model->bufs[i].p, src->model->bufs[i].p,
               dst->model->bufs[i].n * sizeof(float));
    if (with_optimizer)
        dst->opt.t = src->opt.t;
    return 0;
}

/* ---- accessors --------------------------------------------------------------- */

as_store *as_nn_run_store(as_nn_run *r) { return r->store; }
as_nn_model *as_nn_run_model(as_nn_run *r) { return r->model; }
const as_nn_params *as_nn_run_params(const as_nn_run *r) { return &r->model->params; }
const as_nn_preset *as_nn_run_preset(const as_nn_run *r) { return &r->p; }
long as_nn_run_next_batch(const as_nn_run *r) { return r->next; }
long as_nn_run_planned_steps(const as_nn_run *r) { return r->planned; }
long as_nn_run_batches_per_epoch(const as_nn_run *r) { return r->bpe; }
const as_nn_step_info *as_nn_run_last(const as_nn_run *r) { return &r->last; }
int as_nn_run_fit_budget(as_nn_run *r, uint64_t budget, double ratio,
                         uint64_t *set)
{
    if ((budget && ratio > 0) || !(ratio >= 0) || (!budget && !(ratio > 0))) {
        snprintf(r->err, sizeof r->err, "give a budget in bytes or a ratio "
                 "> 0, not both");
        return AS_EINVAL;
    }
    as_store_set_budget(r->store, 0);
    as_store_budget_pending(r->store);
    int rc = as_nn_run_grads(r, 0, NULL);
    if (rc) {
        as_store_set_budget(r->store, 0);   /* ends the pending state */
        return rc;
    }
    as_store_plan pl;
    as_store_stats st;
    uint64_t keep = 0;
    if (as_store_plan_take(r->store, &pl) == 0) {
        keep = pl.keep_bytes;
        as_store_plan_free(&pl);
    }
    if (!keep && as_store_stats_take(r->store, &st) == 0) {
        keep = st.total.raw_peak;   /* no auto rule: keep's peak */
        as_store_stats_free(&st);
    }
    if (ratio > 0)
        budget = (uint64_t)((double)keep / ratio);
    if (!budget) {
        snprintf(r->err, sizeof r->err, "the model saves nothing: no budget "
                 "to derive from ratio %g", ratio);
        return AS_EINVAL;
    }
    rc = as_store_set_budget(r->store, budget);
    if (rc) {
        snprintf(r->err, sizeof r->err, "%s", as_store_last_error(r->store));
        as_store_set_budget(r->store, 0);
        return rc;
    }
    memset(&r->mem, 0, sizeof r->mem);
    as_store_reset_peaks(r->store);
    if (set)
        *set = budget;
    return 0;
}

const char *as_nn_run_error(const as_nn_run *r) { return r->err; }

int as_nn_run_samples_per_batch(const as_nn_run *r)
{
    return r->lm ? r->p.batch * r->p.tf.T : r->p.batch;
}

void as_nn_run_memory(const as_nn_run *r, as_nn_mem *out)
{
    *out = r->mem;
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        out->rss_peak = (uint64_t)ru.ru_maxrss * 1024u;
}


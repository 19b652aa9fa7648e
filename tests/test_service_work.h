/*
 * A real workload for the service's integration tests (Prometheus,
 * Chromium): two stores (A keeps everything, B compresses), each driven by
 * its own thread through the store API the way a framework's training loop
 * does: step_begin, forward saves of several kinds for a dozen layers with
 * parameters and activations allocated in the arena, backward restores and
 * releases in reverse, an optimizer phase, step_end. A step takes ~120 ms so
 * the dashboard shows the saw-tooth of each step.
 */
#ifndef AS_TEST_SERVICE_WORK_H
#define AS_TEST_SERVICE_WORK_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "actstore/service.h"
#include "actstore/store.h"

#define WORK_LAYERS 12
#define WORK_ROWS   64
#define WORK_COLS   512      /* one saved tensor: 64 x 512 f32 = 128 KiB */

typedef struct work_arm {
    as_store   *store;
    pthread_t   thread;
    atomic_bool stop;
    atomic_long steps;
    int         rc;          /* first error (0 = none) */
    char        err[256];
    unsigned    seed;
} work_arm;

static void work_sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int work_fail(work_arm *w, int rc, const char *what)
{
    if (!w->rc) {
        w->rc = rc;
        snprintf(w->err, sizeof w->err, "%s: %s (%s)", what, as_strerror(rc),
                 as_store_last_error(w->store));
    }
    return rc;
}

static void *work_main(void *arg)
{
    work_arm *w = arg;
    as_arena *arena = as_store_arena(w->store);
    uint16_t lid[WORK_LAYERS];
    as_block weights[WORK_LAYERS], grads[WORK_LAYERS];
    memset(weights, 0, sizeof weights);
    memset(grads, 0, sizeof grads);
    char names[WORK_LAYERS][32];
    for (int l = 0; l < WORK_LAYERS; l++) {
        snprintf(names[l], sizeof names[l], "blocks.%d.%s", l / 2, l % 2 ? "mlp" : "attn");
        if (as_arena_layer_register(arena, names[l], &lid[l]) ||
            as_alloc(arena, (size_t)(64 + 16 * l) * 1024, AS_TAG_WEIGHTS, lid[l], &weights[l])) {
            work_fail(w, AS_ENOMEM, "weights");
            return NULL;
        }
    }
    size_t n = (size_t)WORK_ROWS * WORK_COLS;
    float *buf = malloc(n * sizeof *buf);
    if (!buf) {
        work_fail(w, AS_ENOMEM, "buffer");
        return NULL;
    }
    as_handle h[WORK_LAYERS][2];
    as_block act[WORK_LAYERS];
    for (uint64_t step = 1; !atomic_load(&w->stop) && !w->rc; step++) {
        as_store_step_begin(w->store, step);
        as_store_phase(w->store, AS_PHASE_FORWARD);
        for (int l = 0; l < WORK_LAYERS && !w->rc; l++) {
            for (size_t i = 0; i < n; i++)
                buf[i] = (float)((rand_r(&w->seed) % 2001) - 1000) * 1e-3f * (float)(l + 1);
            as_tensor t = {.data = buf, .dtype = AS_F32, .ndim = 2,
                           .shape = {WORK_ROWS, WORK_COLS}};
            as_save_info lin = {.kind = AS_KIND_LINEAR_INPUT, .layer = names[l]};
            as_save_info actv = {.kind = l % 2 ? AS_KIND_ACTIVATION_INPUT : AS_KIND_NORM_INPUT,
                                 .layer = names[l]};
            int rc = as_store_save(w->store, &lin, &t, &h[l][0]);
            if (!rc)
                rc = as_store_save(w->store, &actv, &t, &h[l][1]);
            if (!rc)
                rc = as_alloc(arena, n * sizeof(float), AS_TAG_ACTIVATIONS, lid[l], &act[l]);
            if (rc)
                work_fail(w, rc, "forward");
            work_sleep_ms(4);
        }
        as_store_phase(w->store, AS_PHASE_BACKWARD);
        for (int l = WORK_LAYERS - 1; l >= 0 && !w->rc; l--) {
            as_tensor t = {.data = buf, .dtype = AS_F32, .ndim = 2,
                           .shape = {WORK_ROWS, WORK_COLS}};
            int rc = 0;
            for (int k = 0; k < 2 && !rc; k++) {
                rc = as_store_restore(w->store, h[l][k], &t);
                if (!rc)
                    rc = as_store_release(w->store, h[l][k]);
            }
            if (!rc && !grads[l].ptr)
                rc = as_alloc(arena, weights[l].size, AS_TAG_GRADIENTS, lid[l], &grads[l]);
            if (!rc)
                rc = as_free(arena, &act[l]);
            if (rc)
                work_fail(w, rc, "backward");
            work_sleep_ms(5);
        }
        as_store_phase(w->store, AS_PHASE_OPTIMIZER);
        work_sleep_ms(8);
        as_store_step_end(w->store);
        atomic_fetch_add(&w->steps, 1);
    }
    for (int l = 0; l < WORK_LAYERS; l++) {
        as_free(arena, &weights[l]);
        as_free(arena, &grads[l]);
    }
    free(buf);
    return NULL;
}

/* Create the store and start its thread. Returns 0 or an AS_E* code. */
static __attribute__((unused)) int work_start(work_arm *w, const char *label, const char *spec)
{
    memset(w, 0, sizeof *w);
    w->seed = 12345;
    as_store_config cfg = {.label = label, .policy = spec, .sampler_hz = 10};
    int rc = as_store_create(&cfg, &w->store, w->err, sizeof w->err);
    if (rc)
        return rc;
    if (pthread_create(&w->thread, NULL, work_main, w)) {
        as_store_destroy(w->store);
        w->store = NULL;
        return AS_ENOMEM;
    }
    return 0;
}

static __attribute__((unused)) void work_stop(work_arm *w)
{
    if (!w->store)
        return;
    atomic_store(&w->stop, true);
    pthread_join(w->thread, NULL);
    as_store_destroy(w->store);
    w->store = NULL;
}

#endif

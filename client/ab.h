/*
 * The A/B engine behind `actstore ab` and `actstore demo`: paired runs of
 * two policy specs on one model, with gradient-fidelity checks, filling an
 * as_report. Internal to client/.
 *
 * Pairing: for each seed, arm A and arm B are built from the same seed
 * (same initial weights: B's are also copied from A to be sure) and take
 * their steps in lockstep on the same batch indices (batch k is a pure
 * function of seed and k in layers/train.h), so only the policy differs.
 * Each arm runs on its own store (its own arena), so its memory figures
 * are its own.
 *
 * Gradient checks: every check_every steps, before arm X takes step k, the
 * gradients of X (its policy, batch k, its current weights) are compared
 * with those of an exact reference run (policy default=keep, same seed)
 * into which X's weights were copied: cosine per parameter tensor and over
 * all parameters.
 *
 * Not thread-safe; one comparison at a time per process (OpenBLAS threads
 * are process-wide).
 */
#ifndef AS_CLIENT_AB_H
#define AS_CLIENT_AB_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "actstore/store.h"
#include "client/report.h"
#include "layers/train.h"

typedef struct as_ab_config {
    const char *cmd;          /* for messages: "ab", "demo" */
    const char *title;        /* progress prefix, e.g. "vit" (NULL = model) */
    const char *model;        /* cnn, vit, lm */
    const char *preset;       /* small, bench */
    const char *spec[2];      /* arm A, arm B */
    size_t      nseeds;       /* 1..64 */
    uint64_t    seed0;        /* seeds seed0 .. seed0 + nseeds - 1 */
    long        steps;        /* > 0: override the preset */
    double      epochs;       /* > 0: override the preset (not with steps) */
    long        check_every;  /* gradient checks; 0 = off */
    int         act;          /* cnn activation: -1 preset, AS_FN_RELU,
                                 AS_FN_LEAKY_RELU */
    int         convs;        /* cnn: stride-1 convs per stage (0 = preset) */
    int         threads;      /* OpenBLAS threads; 0 = leave */
    uint64_t    budget;       /* saved-bytes budget of the arms whose spec
                                 uses auto (0 = none) */
    double      ratio;        /* or: budget = keep's saved bytes / ratio */
    const char *data_dir, *text_dir;
    as_store   *store[2];     /* borrowed stores for A and B (a service may
                                 watch them); NULL: each run creates its own */
    unsigned    shard, nshards; /* --shard I/N: run only the seeds i (of
                                   0..nseeds-1) with i % N == I - 1; N 0 = all */
    bool        quiet;        /* no progress output */
    volatile sig_atomic_t *stop; /* set (e.g. by SIGINT): finish the current
                                    step, mark the report partial, return */
} as_ab_config;

/* Check everything that can be checked before training: model and preset
 * names, the two specs (the message names the arm and the offset), step
 * and seed ranges. Fills *p with the preset as the runs will use it.
 * Returns 0, or AS_EINVAL / AS_ESPEC / AS_ENOTFOUND with err set. */
int as_ab_validate(const as_ab_config *c, as_nn_preset *p, char *err,
                   size_t errlen);

/* Run the comparison into rep (initialized here; the caller frees it with
 * as_report_free, also on error). Returns 0; AS_ESTATE when *c->stop was
 * set (rep is then marked partial and holds everything done); or an error
 * (err set; rep holds what was done and is marked partial). */
int as_ab_run(const as_ab_config *c, as_report *rep, char *err,
              size_t errlen);

/* Catch SIGINT and SIGTERM: the first sets *as_ab_stop_flag() (and says
 * so on stderr), the second one kills as usual. Call from the main thread
 * before the runs; as_ab_signals_restore() puts the old handlers back. */
volatile sig_atomic_t *as_ab_stop_flag(void);
void as_ab_signals_catch(void);
void as_ab_signals_restore(void);

/* Cosine of two float vectors accumulated in double: dot, |a|^2, |b|^2
 * are added to acc[0..2] (for an overall cosine over many tensors) and the
 * cosine of this pair is returned (1 when both are zero, 0 when one is). */
double as_ab_cosine(const float *a, const float *b, size_t n, double acc[3]);
double as_ab_cosine_of(const double acc[3]);

#endif

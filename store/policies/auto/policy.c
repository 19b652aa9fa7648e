/*
 * The `auto` rule: auto[:period[:time_weight[:input_weight[:derive]]]]
 *     period       steps between probe steps (default 100; 0 = probe only
 *                  the first step and (layer, kind)s seen for the first time)
 *     time_weight  error units charged for codec work equal to one step's
 *                  measured time (default 0: the plan is a function of the
 *                  data and seed alone; > 0 makes it depend on the machine)
 *     input_weight extra weight of an error that reaches the input gradient
 *     derive       1 (default): offer recompute where a save declares a
 *                  row-wise derivation; 0: never
 * The store hands a tensor under this rule to the planner (planner.c)
 * instead of encoding it here: encode and decode are never reached.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/policies/auto/auto.h"

/* A number in [0, 1e6] at s (the whole string); false otherwise. */
static bool parse_weight(const char *s, double *out)
{
    char *end;
    double w = strtod(s, &end);
    if (end == s || *end || !(w >= 0 && w <= 1e6))
        return false;
    *out = w;
    return true;
}

static int auto_parse(const char *args, size_t len, void **params, char *err,
                      size_t errlen, size_t *err_off)
{
    as_auto_params *p = malloc(sizeof *p);
    if (!p)
        return AS_ENOMEM;
    p->period = 100;
    p->time_weight = 0;
    p->input_weight = AUTO_INPUT_WEIGHT;
    p->derive = true;
    char buf[64];
    if (len >= sizeof buf) {
        snprintf(err, errlen, "auto arguments too long");
        *err_off = 0;
        free(p);
        return AS_ESPEC;
    }
    memcpy(buf, args, len);
    buf[len] = 0;
    /* period, time_weight, input_weight, derive */
    char *f[4] = {buf, NULL, NULL, NULL};
    for (int i = 1; i < 4; i++)
        if (f[i - 1] && (f[i] = strchr(f[i - 1], ':')) != NULL)
            *f[i]++ = 0;
    const char *what = NULL;
    size_t at = 0;
    char *end;
    if (buf[0]) {
        unsigned long v = strtoul(buf, &end, 10);
        if (*end || buf[0] == '-' || v > 1000000)
            what = "auto: period (steps, 0..1000000)";
        p->period = (uint32_t)v;
    }
    if (!what && f[1] && !parse_weight(f[1], &p->time_weight)) {
        what = "auto: time_weight (a number >= 0)";
        at = (size_t)(f[1] - buf);
    }
    if (!what && f[2] && !parse_weight(f[2], &p->input_weight)) {
        what = "auto: input_weight (a number >= 0)";
        at = (size_t)(f[2] - buf);
    }
    if (!what && f[3]) {
        if (strcmp(f[3], "0") && strcmp(f[3], "1")) {
            what = "auto: derive (0 or 1)";
            at = (size_t)(f[3] - buf);
        }
        p->derive = !strcmp(f[3], "1");
    }
    if (what) {
        snprintf(err, errlen, "%s", what);
        *err_off = at;
        free(p);
        return AS_ESPEC;
    }
    *params = p;
    return 0;
}

static void auto_free(void *params) { free(params); }

/* Only reachable if a caller bypasses the store's save path. */
static int auto_encode(as_pctx *ctx, const void *params,
                       const as_save_info *info, const as_tensor *t,
                       void **state)
{
    (void)params, (void)info, (void)t, (void)state;
    as_pctx_errorf(ctx, "auto is planned by the store, not encoded");
    return AS_ESTATE;
}

static int auto_decode(as_pctx *ctx, const void *params, void *state,
                       as_tensor *dst)
{
    (void)params, (void)state, (void)dst;
    as_pctx_errorf(ctx, "auto is planned by the store, not decoded");
    return AS_ESTATE;
}

const as_policy_ops as_policy_auto = {
    .name = "auto",
    .summary = "per (layer, kind), the candidate that fits the saved-bytes "
               "budget at the least measured error",
    .kinds = 0,
    .regenerator = false,
    .parse = auto_parse,
    .free_params = auto_free,
    .encode = auto_encode,
    .decode = auto_decode,
};

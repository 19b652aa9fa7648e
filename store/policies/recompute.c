/*
 * recompute: store nothing; at restore, call the framework's callback on
 * the restored inputs (as_save_info.recompute, .recompute_inputs). The
 * inputs are dependencies: they stay alive with this item even if their
 * handles are released, and are restored first (in place for keep, cached
 * within the backward phase otherwise), so a chain of recomputes costs one
 * call per link. The callback and its user data must stay valid until the
 * handle is released; it must be deterministic (restore may run it again
 * outside the backward phase).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/store_internal.h"

#define RECOMPUTE_MAX_INPUTS 16

typedef struct rstate {
    as_recompute_fn fn;
    void           *ud;
    size_t          n;
    as_handle       inputs[RECOMPUTE_MAX_INPUTS];
} rstate;

static int recompute_applies(const void *params, const as_save_info *info,
                             const as_tensor *t, char *why, size_t whylen)
{
    if (!info->recompute)
        return as_policy_reject(why, whylen, "no recompute callback");
    if (info->recompute_ninputs > RECOMPUTE_MAX_INPUTS ||
        (info->recompute_ninputs && !info->recompute_inputs))
        return as_policy_reject(why, whylen, "more than %d inputs", RECOMPUTE_MAX_INPUTS);
    return 0;
}

static int recompute_encode(as_pctx *ctx, const void *params,
                            const as_save_info *info, const as_tensor *t,
                            void **state)
{
    rstate *st = calloc(1, sizeof *st);
    if (!st)
        return AS_ENOMEM;
    st->fn = info->recompute;
    st->ud = info->recompute_ud;
    st->n = info->recompute_ninputs;
    for (size_t i = 0; i < st->n; i++) {
        st->inputs[i] = info->recompute_inputs[i];
        int rc = as_pctx_depend(ctx, st->inputs[i]);
        if (rc < 0) {
            if (rc != AS_ESTATE)   /* a cycle is named by as_pctx_depend */
                as_pctx_errorf(ctx, "recompute input %zu: %s", i,
                               as_store_last_error(as_pctx_store(ctx)));
            free(st);
            return rc;
        }
    }
    *state = st;
    return 0;
}

static int recompute_decode(as_pctx *ctx, const void *params, void *state,
                            as_tensor *dst)
{
    rstate *st = state;
    const as_tensor *in[RECOMPUTE_MAX_INPUTS];
    for (size_t i = 0; i < st->n; i++) {
        int rc = as_pctx_restore_dep(ctx, st->inputs[i], &in[i]);
        if (rc < 0)
            return rc;
    }
    int rc = st->fn(st->ud, in, st->n, dst);
    if (rc < 0) {
        as_pctx_errorf(ctx, "recompute callback failed: %s", as_strerror(rc));
        return rc;
    }
    return 0;
}

AS_POLICY_OPS(recompute,
              "store nothing; rerun the framework's callback on its inputs",
              (.regenerator = true, AS_POLICY_NO_ARGS,
               .drop = as_policy_drop_free),
              applies, encode, decode);

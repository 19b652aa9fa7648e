/*
 * borrow: a tensor the caller holds anyway (as_save_info.borrow, e.g. the
 * input batch a data loader keeps until the step ends). The store keeps the
 * pointer only: 0 stored bytes, restore copies from the caller's buffer,
 * restore_view returns it. The caller's contract (store.h) keeps it valid
 * and unchanged while the item may be restored; the debug checksum
 * (checksum_saved) catches a caller that writes into it.
 *
 * Chosen by the store for every borrowed save, whatever the rules say (no
 * policy stores less, and none is more exact); named in a rule it applies
 * only to borrowed saves.
 */
#include <stdio.h>
#include <string.h>

#include "store/store_internal.h"

static int borrow_applies(const void *params, const as_save_info *info,
                          const as_tensor *t, char *why, size_t whylen)
{
    if (!info->borrow)
        return as_policy_reject(why, whylen, "not a borrowed (caller-held) tensor");
    return 0;
}

static int borrow_encode(as_pctx *ctx, const void *params,
                         const as_save_info *info, const as_tensor *t,
                         void **state)
{
    *state = t->data;
    return 0;
}

AS_POLICY_OPS(borrow,
              "store nothing: the caller holds the tensor (as_save_info."
              "borrow), restore reads it",
              (.exact = true, AS_POLICY_NO_ARGS, AS_POLICY_STATE_IS_DATA),
              applies, encode);

/*
 * keep: hold the tensor exactly. Zero-copy when the tensor was saved with
 * as_store_save_adopt (the framework's arena block moves to the item);
 * otherwise one copy into a block of the saved tag. Restores read the bytes
 * in place (view), so restore_view costs nothing and restore one memcpy.
 */
#include <stdio.h>
#include <string.h>

#include "store/store_internal.h"

static int keep_encode(as_pctx *ctx, const void *params,
                       const as_save_info *info, const as_tensor *t,
                       void **state)
{
    as_block *b = as_pctx_take_adopted(ctx);
    if (b) {
        *state = b->ptr;
        return 0;
    }
    size_t n = as_tensor_bytes(t);
    void *p = NULL;
    int rc = as_pctx_alloc(ctx, n, &p);
    if (rc < 0)
        return rc;
    if (n)
        memcpy(p, t->data, n);
    *state = p;
    return 0;
}

AS_POLICY_OPS(keep, "exact; zero-copy for tensors adopted from the store's arena",
              (.exact = true, AS_POLICY_NO_ARGS, AS_POLICY_STATE_IS_DATA),
              encode);

/*
 * Error propagation of functions that return 0 or a negative AS_E* code.
 * Internal to the tree.
 */
#ifndef AS_UTIL_TRY_H
#define AS_UTIL_TRY_H

/* rc = expr; on failure jump to the function's `out:` cleanup. */
#define AS_TRY(expr)      \
    do {                  \
        rc = (expr);      \
        if (rc)           \
            goto out;     \
    } while (0)

/* On failure return the code (functions with nothing to clean up). */
#define AS_TRY_RETURN(expr)  \
    do {                     \
        int rc_ = (expr);    \
        if (rc_)             \
            return rc_;      \
    } while (0)

#endif

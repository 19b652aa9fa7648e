/*
 * The error text of calls that take (char *err, size_t errlen): format into
 * err when given and return rc, so `return as_set_err(err, errlen, AS_EINVAL,
 * "...")` reports and fails in one line. Internal to the tree.
 */
#ifndef AS_UTIL_ERR_H
#define AS_UTIL_ERR_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

__attribute__((format(printf, 4, 5))) static inline int
as_set_err(char *err, size_t errlen, int rc, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return rc;
}

/* The last error text of each object (a store, an arena) for one thread:
 * declare one table per kind of object as `static _Thread_local
 * as_last_err`, keyed by a nonzero id of the object. A thread keeps the
 * texts of its last AS_LAST_ERR_SLOTS objects; an older one is reused. */
#define AS_LAST_ERR_SLOTS 4
typedef struct as_last_err {
    struct {
        uint64_t key;
        char     text[256];
    } slot[AS_LAST_ERR_SLOTS];
    unsigned next;
} as_last_err;

/* The slot of key, taken over from the oldest if it has none. */
static inline char *as_last_err_slot(as_last_err *e, uint64_t key)
{
    for (unsigned i = 0; i < AS_LAST_ERR_SLOTS; i++)
        if (e->slot[i].key == key)
            return e->slot[i].text;
    unsigned i = e->next++ % AS_LAST_ERR_SLOTS;
    e->slot[i].key = key;
    return e->slot[i].text;
}

/* Format the text of key into its slot. */
static inline void as_last_err_vset(as_last_err *e, uint64_t key, const char *fmt,
                                    va_list ap)
{
    vsnprintf(as_last_err_slot(e, key), sizeof e->slot[0].text, fmt, ap);
}

/* The text of key, or none when this thread has none. */
static inline const char *as_last_err_get(const as_last_err *e, uint64_t key,
                                          const char *none)
{
    for (unsigned i = 0; i < AS_LAST_ERR_SLOTS; i++)
        if (e->slot[i].key == key)
            return e->slot[i].text;
    return none;
}

#endif

/*
 * The error text of calls that take (char *err, size_t errlen): format into
 * err when given and return rc, so `return as_set_err(err, errlen, AS_EINVAL,
 * "...")` reports and fails in one line. Internal to the tree.
 */
#ifndef AS_UTIL_ERR_H
#define AS_UTIL_ERR_H

#include <stdarg.h>
#include <stddef.h>
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

#endif

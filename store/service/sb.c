/* The service's own memory (counted apart) and its text buffer. */
#include <malloc.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "svc.h"

static atomic_uint_fast64_t svc_memory;
static _Atomic long fault_n;     /* fault injection: the nth call fails */
static atomic_bool fault_sticky;

void as__svc_fault_set(long nth, bool sticky)
{
    atomic_store(&fault_sticky, sticky);
    atomic_store(&fault_n, nth > 0 ? nth : 0);
}

long as__svc_fault_left(void) { return atomic_load(&fault_n); }

static bool fault(void)
{
    long n = atomic_load_explicit(&fault_n, memory_order_relaxed);
    if (__builtin_expect(n == 0, 1))
        return false;
    if (n > 1) {
        atomic_store(&fault_n, n - 1);
        return false;
    }
    if (!atomic_load(&fault_sticky))
        atomic_store(&fault_n, 0);
    return true;
}

void *as__svc_malloc(size_t n)
{
    void *p = fault() ? NULL : malloc(n);
    if (p)
        atomic_fetch_add(&svc_memory, malloc_usable_size(p));
    return p;
}

void *as__svc_realloc(void *p, size_t n)
{
    size_t old = p ? malloc_usable_size(p) : 0;
    void *q = fault() ? NULL : realloc(p, n);
    if (!q)
        return NULL;
    atomic_fetch_sub(&svc_memory, old);
    atomic_fetch_add(&svc_memory, malloc_usable_size(q));
    return q;
}

void as__svc_free(void *p)
{
    if (!p)
        return;
    atomic_fetch_sub(&svc_memory, malloc_usable_size(p));
    free(p);
}

uint64_t as__svc_memory(void) { return atomic_load(&svc_memory); }

void as__sb_init(as__sb *b) { memset(b, 0, sizeof *b); }

void as__sb_free(as__sb *b)
{
    as__svc_free(b->p);
    memset(b, 0, sizeof *b);
}

void as__sb_reserve(as__sb *b, size_t extra)
{
    if (b->oom || b->len + extra + 1 <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra + 1)
        cap *= 2;
    char *p = as__svc_realloc(b->p, cap);
    if (!p) {
        b->oom = true;
        return;
    }
    b->p = p;
    b->cap = cap;
}

void as__sb_put(as__sb *b, const char *s, size_t n)
{
    as__sb_reserve(b, n);
    if (b->oom)
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

void as__sb_puts(as__sb *b, const char *s) { as__sb_put(b, s, strlen(s)); }

void as__sb_printf(as__sb *b, const char *fmt, ...)
{
    va_list ap;
    as__sb_reserve(b, 128);
    if (b->oom)
        return;
    va_start(ap, fmt);
    int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n >= b->cap - b->len) {
        as__sb_reserve(b, (size_t)n);
        if (b->oom)
            return;
        va_start(ap, fmt);
        vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
    }
    b->len += (size_t)n;
}

void as__sb_u64(as__sb *b, uint64_t v)
{
    char tmp[24];
    size_t i = sizeof tmp;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    as__sb_put(b, tmp + i, sizeof tmp - i);
}

void as__sb_dbl(as__sb *b, double v)
{
    if (!isfinite(v))
        v = 0;
    if (v == (double)(int64_t)v && fabs(v) < 1e15) {
        as__sb_printf(b, "%lld", (long long)v);
        return;
    }
    as__sb_printf(b, "%.9g", v);
}

/* Length of the valid UTF-8 sequence at p (1..4), or 0 if it is not one.
 * Names come from the framework and may hold any bytes; JSON and the
 * Prometheus format both require UTF-8, so invalid bytes become U+FFFD. */
static size_t utf8_len(const unsigned char *p)
{
    unsigned c = p[0];
    if (c < 0x80)
        return 1;
    size_t n;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF)
        n = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else
        return 0;
    if (p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if (p[i] < 0x80 || p[i] > 0xBF)
            return 0;
    return n;
}

static const char replacement[] = "\xEF\xBF\xBD";   /* U+FFFD */

/* Length of the run at p that needs no escaping: printable ASCII other than
 * the quote and the backslash (the common case, copied in one put). */
static size_t plain_run(const unsigned char *p)
{
    size_t n = 0;
    while (p[n] >= 0x20 && p[n] < 0x80 && p[n] != '"' && p[n] != '\\')
        n++;
    return n;
}

void as__sb_jstr(as__sb *b, const char *s)
{
    as__sb_put(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        size_t run = plain_run(p);
        if (run) {
            as__sb_put(b, (const char *)p, run);
            p += run - 1;
            continue;
        }
        unsigned c = *p;
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            as__sb_put(b, e, 2);
        } else if (c < 0x20) {
            as__sb_printf(b, "\\u%04x", c);
        } else {
            size_t n = utf8_len(p);
            if (n)
                as__sb_put(b, (const char *)p, n);
            else
                as__sb_put(b, replacement, 3);
            p += n ? n - 1 : 0;
        }
    }
    as__sb_put(b, "\"", 1);
}

void as__sb_plabel(as__sb *b, const char *s)
{
    as__sb_put(b, "\"", 1);
    for (const char *p = s ? s : ""; *p; p++) {
        if (*p == '"' || *p == '\\')
            as__sb_put(b, "\\", 1);
        if (*p == '\n') {
            as__sb_put(b, "\\n", 2);
            continue;
        }
        size_t n = utf8_len((const unsigned char *)p);
        if (n)
            as__sb_put(b, p, n);
        else
            as__sb_put(b, replacement, 3);
        p += n ? n - 1 : 0;
    }
    as__sb_put(b, "\"", 1);
}

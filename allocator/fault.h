/*
 * Allocation-failure injection for plain mallocs (internal; tests arm it).
 *
 * as__arena_fault_set(a, n, sticky) (store_internal.h) makes the nth
 * allocation from now fail: arena blocks, the store's records
 * (as__smalloc) and, on the thread that armed it, the work buffers that
 * modules without a store at hand take with as__fmalloc / as__fcalloc
 * (the conv-inversion solver, the softmax codecs). Unarmed, they are
 * malloc / calloc after one thread-local load.
 */
#ifndef AS_ALLOCATOR_FAULT_H
#define AS_ALLOCATOR_FAULT_H

#include <stdbool.h>
#include <stdlib.h>

struct as_arena;
/* The arena whose fault counter this thread's plain mallocs count against
 * (set by as__arena_fault_set on the calling thread; NULL: none). */
extern _Thread_local struct as_arena *as__fault_tls;
bool as__arena_fault(struct as_arena *a);

static inline void *as__fmalloc(size_t n)
{
    struct as_arena *a = as__fault_tls;
    return __builtin_expect(a != NULL, 0) && as__arena_fault(a) ? NULL : malloc(n);
}

static inline void *as__fcalloc(size_t k, size_t n)
{
    struct as_arena *a = as__fault_tls;
    return __builtin_expect(a != NULL, 0) && as__arena_fault(a) ? NULL : calloc(k, n);
}

static inline void *as__frealloc(void *p, size_t n)
{
    struct as_arena *a = as__fault_tls;
    return __builtin_expect(a != NULL, 0) && as__arena_fault(a) ? NULL : realloc(p, n);
}

#endif

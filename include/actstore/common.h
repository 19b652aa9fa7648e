/*
 * actstore — common definitions: export macro, error codes, version.
 *
 * Error convention (every public function): return 0 on success or a
 * negative AS_E* code. as_strerror() names the code; objects that can fail
 * in more detail (store, allocator) keep a per-object last-error text that
 * names what was wrong and where (which rule, which byte offset, which
 * handle). No public function aborts on bad caller input.
 */
#ifndef ACTSTORE_COMMON_H
#define ACTSTORE_COMMON_H

#include <stddef.h>
#include <stdint.h>

#include "actstore/version.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(AS_BUILDING_LIBRARY)
#define AS_API __attribute__((visibility("default")))
#else
#define AS_API
#endif

/* Error codes. Values are stable; new ones are appended. */
#define AS_ERRNO_MAP(X)                                                     \
    X(AS_EINVAL,     -1,  "invalid argument")                              \
    X(AS_ENOMEM,     -2,  "out of memory")                                 \
    X(AS_EBUDGET,    -3,  "allocation over budget")                        \
    X(AS_EHANDLE,    -4,  "invalid, stale or foreign handle")              \
    X(AS_ESHAPE,     -5,  "dtype or shape mismatch")                       \
    X(AS_ECORRUPT,   -6,  "corrupted data")                                \
    X(AS_EIO,        -7,  "input/output error")                            \
    X(AS_ESPEC,      -8,  "malformed policy spec")                         \
    X(AS_ENOTFOUND,  -9,  "not found")                                     \
    X(AS_ENOTSUP,    -10, "not supported")                                 \
    X(AS_EFALLBACK,  -11, "policy does not apply (strict mode)")           \
    X(AS_EBUSY,      -12, "resource busy")                                 \
    X(AS_ESTATE,     -13, "call not valid in the current state")           \
    X(AS_ERANGE,     -14, "value out of range")                            \
    X(AS_EFOREIGN,   -15, "pointer not owned by this allocator")           \
    X(AS_EFORMAT,    -16, "malformed input data")                        \
    X(AS_EMETA,      -17, "save metadata does not match the tensor")

enum as_errno {
#define AS_ERRNO_ENUM(name, val, text) name = (val),
    AS_ERRNO_MAP(AS_ERRNO_ENUM)
#undef AS_ERRNO_ENUM
};

/* Phases of a training step, marked with as_store_phase (store.h) or
 * as_arena_mark_phase (alloc.h). Values are stable. */
enum as_phase {
    AS_PHASE_NONE = 0,       /* unmarked: the store behaves as in backward */
    AS_PHASE_FORWARD,
    AS_PHASE_BACKWARD,
    AS_PHASE_OPTIMIZER,
    AS_PHASE_EVAL
};

/* Name of an error code ("allocation over budget"); never NULL, static
 * storage. Unknown codes give "unknown error". Thread-safe. */
AS_API const char *as_strerror(int code);

/* Symbolic name of an error code ("AS_EBUDGET"); never NULL. Thread-safe. */
AS_API const char *as_err_name(int code);

/* Library version ("0.1.0") of the library actually linked; static storage.
 * Compare with AS_VERSION_STRING to detect header/library skew. */
AS_API const char *as_version_string(void);

/* AS_VERSION_NUMBER of the linked library. */
AS_API unsigned as_version_number(void);

#ifdef __cplusplus
}
#endif
#endif

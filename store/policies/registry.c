/*
 * The policy registry: built-ins from registry.def, plus policies registered
 * at run time (as_policy_register). Indices are stable for the process
 * lifetime: they are the ids of the per-policy accounting groups.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdatomic.h>
#include <string.h>

#include "store/store_internal.h"

#define AS_POLICY(name) extern const as_policy_ops as_policy_##name;
#include "store/policies/registry.def"
#undef AS_POLICY

static const as_policy_ops *const builtin[] = {
#define AS_POLICY(name) &as_policy_##name,
#include "store/policies/registry.def"
#undef AS_POLICY
};
#define NBUILTIN (sizeof builtin / sizeof builtin[0])

static const as_policy_ops *_Atomic table[AS_POLICY_MAX];
static _Atomic size_t ntable;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;

static void init_builtin(void)
{
    _Static_assert(NBUILTIN <= AS_POLICY_MAX, "too many built-in policies");
    for (size_t i = 0; i < NBUILTIN; i++)
        atomic_store(&table[i], builtin[i]);
    atomic_store(&ntable, NBUILTIN);
}

size_t as__policy_count(void)
{
    pthread_once(&once, init_builtin);
    return atomic_load(&ntable);
}

const as_policy_ops *as__policy_at(size_t i)
{
    return i < as__policy_count() ? atomic_load(&table[i]) : NULL;
}

int as__policy_index(const as_policy_ops *ops)
{
    size_t n = as__policy_count();
    for (size_t i = 0; i < n; i++)
        if (atomic_load(&table[i]) == ops)
            return (int)i;
    return 0;   /* unknown ops: charged to keep's group */
}

int as_policy_parse_none(const char *args, size_t len, void **params, char *err,
                         size_t errlen, size_t *err_off)
{
    (void)args;
    *params = NULL;
    if (len) {
        snprintf(err, errlen, "no arguments");
        *err_off = 0;
        return AS_ESPEC;
    }
    return 0;
}

void as_policy_free_params(void *params)
{
    free(params);
}

void as_policy_drop_free(void *params, void *state)
{
    (void)params;
    free(state);
}

int as_policy_decode_state(as_pctx *ctx, const void *params, void *state,
                           as_tensor *dst)
{
    (void)ctx, (void)params;
    size_t n = as_tensor_bytes(dst);
    if (n)
        memcpy(dst->data, state, n);
    return 0;
}

const void *as_policy_view_state(const void *params, void *state)
{
    (void)params;
    return state;
}

int as_policy_reject(char *why, size_t whylen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, whylen, fmt, ap);
    va_end(ap);
    return AS_ENOTSUP;
}

int as_policy_applies_f32(const void *params, const as_save_info *info, const as_tensor *t,
                          char *why, size_t whylen)
{
    (void)params, (void)info;
    if (t->dtype != AS_F32)
        return as_policy_reject(why, whylen, "dtype %s (needs f32)", as_dtype_name(t->dtype));
    return 0;
}

const as_policy_ops *as_policy_find(const char *name, size_t len)
{
    if (!name)
        return NULL;
    size_t n = as__policy_count();
    for (size_t i = 0; i < n; i++) {
        const as_policy_ops *o = atomic_load(&table[i]);
        if (strlen(o->name) == len && !memcmp(o->name, name, len))
            return o;
    }
    return NULL;
}

int as_policy_register(const as_policy_ops *ops)
{
    if (!ops || !ops->name || !ops->name[0] || !ops->parse ||
        (!ops->decode && !ops->softmax_backward) || !ops->encode)
        return AS_EINVAL;
    for (const char *c = ops->name; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
              (*c >= '0' && *c <= '9') || *c == '_'))
            return AS_EINVAL;
    as__policy_count();
    pthread_mutex_lock(&reg_mu);
    int rc = 0;
    if (as_policy_find(ops->name, strlen(ops->name)))
        rc = AS_EBUSY;
    else if (atomic_load(&ntable) >= AS_POLICY_MAX)
        rc = AS_ERANGE;
    else {
        size_t i = atomic_load(&ntable);
        atomic_store(&table[i], ops);
        atomic_store(&ntable, i + 1);
    }
    pthread_mutex_unlock(&reg_mu);
    return rc;
}

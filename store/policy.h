/*
 * The policy plug-in interface (internal to the library; experimental).
 *
 * A policy is one file (or one folder, e.g. invert/, softmax/) in
 * store/policies/ that defines a `const
 * as_policy_ops as_policy_<name>` and is listed once in
 * store/policies/registry.def. Two shapes:
 *   - a codec encodes the tensor into payload blocks at save and decodes
 *     them at restore;
 *   - a regenerator stores little or nothing and rebuilds the tensor at
 *     restore from other saved items (dependencies), which the store
 *     restores first (as_pctx_restore_dep) and caches within a backward
 *     step.
 *
 * The store owns the item; the policy owns what it allocates through the
 * context (as_pctx_alloc: counted as stored bytes under the allocator's
 * "saved" tag, attributed to the layer) and its state pointer.
 *
 * Threading: encode/decode may run concurrently on different items;
 * per-policy shared caches (e.g. conv factorizations) need their own lock.
 */
#ifndef AS_STORE_POLICY_H
#define AS_STORE_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "actstore/store.h"

typedef struct as_pctx as_pctx;   /* per-call context, owned by the store */

/* Parsed arguments of one rule ("zstd:3" -> level 3). */
typedef struct as_policy_args {
    void *params;                 /* policy-owned, from parse() */
} as_policy_args;

typedef struct as_policy_ops {
    const char *name;             /* spec name: "zstd", "soa", "invert" */
    const char *summary;          /* one line for --help and docs */
    uint32_t    kinds;            /* bit (1u << kind) per applicable kind;
                                     0 = any kind */
    bool        regenerator;
    /* decode gives back the saved bits (keep, zstd, offload, borrow,
     * bitpack). An alias re-plan may then drop a grad_only form. */
    bool        exact;
    /* decode gives a stand-in with the same derivative, not the values
     * (sign, fewbit): only the backward of the item's activation function
     * (act_backward) is exact or bounded. Such a form is only ever an
     * item's first representation, no regenerator may depend on it, and an
     * alias under a policy that is not exact gets an item of its own. */
    bool        grad_only;

    /* Parse "a:b:c" (the text after "name:", may be empty; length given,
     * not NUL-terminated). On error return AS_ESPEC and write to err what
     * was expected, with *err_off the offset within args. Required. */
    int (*parse)(const char *args, size_t len, void **params, char *err,
                 size_t errlen, size_t *err_off);
    void (*free_params)(void *params);

    /* Does the policy apply to this tensor? 0, or AS_ENOTSUP with a short
     * reason in why ("stride 2", "dtype u8"). Optional (NULL = applies to
     * every tensor of its kinds). */
    int (*applies)(const void *params, const as_save_info *info,
                   const as_tensor *t, char *why, size_t whylen);

    /* Encode t into the item: allocate with as_pctx_alloc, keep what you
     * need in *state (policy-owned). Regenerators record dependencies with
     * as_pctx_depend. Errors are returned as AS_E* codes; on error
     * everything allocated through the context is freed by the store. */
    int (*encode)(as_pctx *ctx, const void *params, const as_save_info *info,
                  const as_tensor *t, void **state);

    /* Write the values into dst (shape and dtype already checked). Must give
     * the same values every call. AS_ECORRUPT on failed checksums. */
    int (*decode)(as_pctx *ctx, const void *params, void *state,
                  as_tensor *dst);

    /* Optional: free state (not the context blocks: the store frees
     * those). NULL when state is a context block, or points to nothing
     * the policy owns. */
    void (*drop)(void *params, void *state);

    /* Optional: restore prefetch hint. */
    void (*prefetch)(as_pctx *ctx, const void *params, void *state);

    /* Optional, softmax codecs: dx = y_hat * (dy - <dy, y_hat>) per row,
     * straight from the stored form (dy, dx: the saved shape, f32). */
    int (*softmax_backward)(as_pctx *ctx, const void *params, void *state,
                            const float *dy, float *dx);
    /* Optional, activation codecs: dx = f'(.) * dy straight from the stored
     * form, f the activation the item was saved with (fn: its function and
     * slope; dy, dx: the saved shape, f32; dx may alias dy). */
    int (*act_backward)(as_pctx *ctx, const void *params, void *state,
                        const as_elementwise *fn, const float *dy, float *dx);
    /* Optional: decode rows [row0, row0 + nrows) of a 2-D view (rows x last
     * dim) into dst, to stream a large tensor block by block. */
    int (*decode_rows)(as_pctx *ctx, const void *params, void *state,
                       int64_t row0, int64_t nrows, float *dst);
    /* Optional: when the stored bytes ARE the tensor (keep), return them.
     * restore_view, restore_rows and dependents then read them in place
     * (no materialization); as_store_restore copies them. Must return the
     * same pointer for the representation's lifetime. */
    const void *(*view)(const void *params, void *state);
} as_policy_ops;

/* The ops table of a policy, named after it:
 *
 *   AS_POLICY_OPS(zstd, "summary", (.exact = true), parse, free_params,
 *                 encode, decode, decode_rows);
 *
 * defines `const as_policy_ops as_policy_zstd` with .name "zstd"; each
 * field after the parenthesized group is bound to the file's own callback
 * zstd_<field>. The group holds the other fields (kinds, the flags, shared
 * callbacks such as AS_POLICY_NO_ARGS); it may be empty. Up to 10 fields. */
#define AS_POLICY_OPS(id, summary_, others, ...)                            \
    const as_policy_ops as_policy_##id = {                                 \
        .name = #id, .summary = summary_,                                   \
        AS__POLICY_FNS(id, __VA_ARGS__) AS__POLICY_UNPAREN others}
/* parse() of a policy that takes no arguments. */
#define AS_POLICY_NO_ARGS .parse = as_policy_parse_none
/* decode() and view() of a policy whose state is the tensor's bytes. */
#define AS_POLICY_STATE_IS_DATA                                             \
    .decode = as_policy_decode_state, .view = as_policy_view_state

#define AS__POLICY_UNPAREN(...) __VA_ARGS__
#define AS__POLICY_FN(id, f) .f = id##_##f,
#define AS__POLICY_F1(id, f) AS__POLICY_FN(id, f)
#define AS__POLICY_F2(id, f, ...) AS__POLICY_FN(id, f) AS__POLICY_F1(id, __VA_ARGS__)
#define AS__POLICY_F3(id, f, ...) AS__POLICY_FN(id, f) AS__POLICY_F2(id, __VA_ARGS__)
#define AS__POLICY_F4(id, f, ...) AS__POLICY_FN(id, f) AS__POLICY_F3(id, __VA_ARGS__)
#define AS__POLICY_F5(id, f, ...) AS__POLICY_FN(id, f) AS__POLICY_F4(id, __VA_ARGS__)
#define AS__POLICY_F6(id, f, ...) AS__POLICY_FN(id, f) AS__POLICY_F5(id, __VA_ARGS__)
#define AS__POLICY_F7(id, f, ...) AS__POLICY_FN(id, f) AS__POLICY_F6(id, __VA_ARGS__)
#define AS__POLICY_F8(id, f, ...) AS__POLICY_FN(id, f) AS__POLICY_F7(id, __VA_ARGS__)
#define AS__POLICY_F9(id, f, ...) AS__POLICY_FN(id, f) AS__POLICY_F8(id, __VA_ARGS__)
#define AS__POLICY_F10(id, f, ...) AS__POLICY_FN(id, f) AS__POLICY_F9(id, __VA_ARGS__)
#define AS__POLICY_NTH(_1, _2, _3, _4, _5, _6, _7, _8, _9, _10, n, ...) n
#define AS__POLICY_CAT(a, b) a##b
#define AS__POLICY_XCAT(a, b) AS__POLICY_CAT(a, b)
#define AS__POLICY_FNS(id, ...)                                             \
    AS__POLICY_XCAT(AS__POLICY_F, AS__POLICY_NTH(__VA_ARGS__, 10, 9, 8, 7, \
                                                 6, 5, 4, 3, 2, 1, 0))     \
    (id, __VA_ARGS__)

/* ---- context services for policies --------------------------------- */

/* Allocate n bytes for the item (stored bytes, tag saved, the item's
 * layer). Freed with the item, or earlier with as_pctx_free. */
int as_pctx_alloc(as_pctx *ctx, size_t n, void **out);
void as_pctx_free(as_pctx *ctx, void *p);

/* Bytes that are held for the item outside as_pctx_alloc and outside the
 * adopted block (e.g. a policy-owned cache); bytes in an offload file do
 * not count. Negative deltas give them back. */
void as_pctx_account(as_pctx *ctx, int64_t delta_bytes);

/* Adopted block of the save (keep zero-copy), or NULL. Taking it moves it
 * to the item and counts its size as stored bytes (no as_pctx_account
 * needed); the store frees it with the item. An adopted block nobody takes
 * is freed by the store after a successful encode. */
as_block *as_pctx_take_adopted(as_pctx *ctx);

/* Regenerators: declare a dependency at encode (the dependency's item then
 * lives at least as long as this item, even if its handle is released; a
 * dependency that would close a cycle gives AS_ESTATE, which the store
 * turns into a fallback with the reason "dependency cycle"); at decode, get its values as a read-only view,
 * valid until the decode returns (restored through its own policy, in
 * place for keep, cached within the backward phase otherwise). */
int as_pctx_depend(as_pctx *ctx, as_handle dep);
/* Could dep be a dependency (a live handle whose item holds values, not a
 * derivative-only form)? Changes no item; the answer may change if dep is
 * released or re-planned before as_pctx_depend. */
bool as_pctx_can_depend(as_pctx *ctx, as_handle dep);
int as_pctx_restore_dep(as_pctx *ctx, as_handle dep, const as_tensor **view);
/* Rows [row0, row0 + nrows) of an f32 dependency viewed as (rows, last
 * dim) into dst, through its own row decode where it has one (no whole
 * copy). AS_ESHAPE (not f32), AS_ERANGE (rows outside), AS_EHANDLE (not a
 * declared dependency); else as its decode. */
int as_pctx_restore_dep_rows(as_pctx *ctx, as_handle dep, int64_t row0,
                             int64_t nrows, float *dst);

/* Scratch memory for decode (workspace tag), freed at the end of the call
 * (at most 8 at once; AS_ERANGE beyond), or earlier with
 * as_pctx_scratch_free (NULL and unknown pointers are ignored). */
int as_pctx_scratch(as_pctx *ctx, size_t n, void **out);
void as_pctx_scratch_free(as_pctx *ctx, void *p);

/* Error detail for the current call (becomes the store's last error,
 * prefixed with handle, layer and policy). When encode then returns
 * AS_ENOTSUP (or AS_EIO, AS_ESTATE), the store falls back to the rule's
 * fallback and this text is the counted reason: keep it short ("stride 2"). */
void as_pctx_errorf(as_pctx *ctx, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Check a decode_rows request [row0, row0 + nrows) against a tensor of
 * `rows` rows: 0, or AS_ERANGE with the range in the call's error. */
int as_pctx_check_rows(as_pctx *ctx, int64_t row0, int64_t nrows, uint64_t rows);

/* Stored headers: a codec whose block starts with a header (counts,
 * widths, pointers into the block) seals it at encode, seal =
 * as_pctx_seal(h, offsetof(hdr, seal)), and checks it first at every
 * decode: a corrupted header is then AS_ECORRUPT (naming the item) rather
 * than a read out of bounds. as_pctx_check_seal returns 0 or AS_ECORRUPT. */
uint64_t as_pctx_seal(const void *hdr, size_t n);
int as_pctx_check_seal(as_pctx *ctx, const void *hdr, size_t n, uint64_t seal);
/* decode_rows of a codec whose sealed header counts n values, cols a row:
 * as_pctx_check_seal(ctx, hdr, n_sealed, seal), then as_pctx_check_rows
 * against n / cols rows (divided only once the seal holds). */
int as_pctx_check_sealed_rows(as_pctx *ctx, const void *hdr, size_t n_sealed,
                              uint64_t seal, uint64_t n, uint64_t cols,
                              int64_t row0, int64_t nrows);
/* decode of a codec whose sealed header counts n f32 values:
 * as_pctx_check_seal, then dst must be an f32 tensor of n values
 * (AS_ESHAPE). */
int as_pctx_check_sealed_f32(as_pctx *ctx, const void *hdr, size_t n_sealed,
                             uint64_t seal, uint64_t n, const as_tensor *dst);
/* The row length a header records for decode_rows: t's last dimension, 1
 * for a scalar or an empty last dimension. */
uint64_t as_policy_row_len(const as_tensor *t);

/* The store's offload directory, and the item's handle / layer name (for
 * messages). */
const char *as_pctx_offload_dir(const as_pctx *ctx);
as_handle as_pctx_handle(const as_pctx *ctx);
const char *as_pctx_layer(const as_pctx *ctx);
/* A key of the item that does not depend on which store holds it: the
 * handle's slot and generation without the store id. Two stores fed the
 * same sequence of saves give their items the same keys, so per-item
 * randomness (stochastic rounding) is the same in both arms of an A/B run
 * as in a run alone. */
uint64_t as_pctx_item_key(const as_pctx *ctx);
as_store *as_pctx_store(const as_pctx *ctx);

/* Lookup by name (built-in registry plus runtime-registered). */
const as_policy_ops *as_policy_find(const char *name, size_t len);

/* parse() of a policy that takes no arguments: *params = NULL; any text
 * after "name:" is AS_ESPEC ("no arguments", offset 0). */
int as_policy_parse_none(const char *args, size_t len, void **params, char *err,
                         size_t errlen, size_t *err_off);
/* free_params() of a policy whose params are one malloc'ed block. */
void as_policy_free_params(void *params);
/* drop() of a policy whose state is one malloc'ed block. */
void as_policy_drop_free(void *params, void *state);
/* decode() and view() of a policy whose state points to the tensor's own
 * bytes (keep, borrow): decode copies them, view returns them. */
int as_policy_decode_state(as_pctx *ctx, const void *params, void *state,
                           as_tensor *dst);
const void *as_policy_view_state(const void *params, void *state);
/* applies() of a policy for f32 tensors only: AS_ENOTSUP otherwise, with
 * "dtype <name> (needs f32)" in why. */
int as_policy_applies_f32(const void *params, const as_save_info *info, const as_tensor *t,
                          char *why, size_t whylen);

/* An applies() refusal: the reason (printf format) into why, and
 * AS_ENOTSUP. */
int as_policy_reject(char *why, size_t whylen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Register a policy at run time (experimental API for frameworks). */
int as_policy_register(const as_policy_ops *ops);

#endif

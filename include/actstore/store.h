/*
 * actstore — the activation store.
 *
 * A training framework calls the store at every "save for backward" point:
 *
 *     as_store_save(store, &info, &tensor, &h);   forward: hand over a tensor
 *     as_store_restore(store, h, &dst);           backward: get it back
 *     as_store_release(store, h);                 done with it
 *
 * Per-tensor policies (chosen by rules, see as_store_set_policy) decide how a
 * tensor is kept: a codec stores a representation (keep, zstd, fp16, bf16,
 * q8/q4/q2, offload, softmax codecs) and decodes it; a regenerator stores
 * little or nothing and rebuilds the tensor from other saved items (conv
 * inversion, elementwise inverse, recompute).
 *
 * Handles carry a generation: a released, stale, foreign (other store) or
 * forged handle gives AS_EHANDLE, never a dereference.
 *
 * Thread-safety: all functions may be called concurrently from many threads
 * on the same store (save and restore are the hot paths), except
 * as_store_destroy(), which must not race with anything on that store.
 * as_store_set_policy() may be called between steps from any thread.
 */
#ifndef ACTSTORE_STORE_H
#define ACTSTORE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "actstore/alloc.h"
#include "actstore/common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct as_store as_store;

/* ---- tensors ---------------------------------------------------------- */

enum as_dtype { AS_F32 = 0, AS_F16, AS_BF16, AS_I32, AS_U8, AS_DTYPE_COUNT };
#define AS_MAX_DIMS 8

/* A contiguous row-major tensor. Value type; does not own data. */
typedef struct as_tensor {
    void   *data;
    int     dtype;               /* as_dtype */
    int     ndim;                /* 0..AS_MAX_DIMS */
    int64_t shape[AS_MAX_DIMS];
} as_tensor;

AS_API size_t as_dtype_size(int dtype);      /* 0 when unknown */
AS_API const char *as_dtype_name(int dtype); /* "f32"; "?" when unknown */
/* Elements (product of the dims; negative dims count as 0; -1 when the
 * product overflows) and bytes (SIZE_MAX when that overflows). */
AS_API int64_t as_tensor_numel(const as_tensor *t);
AS_API size_t as_tensor_bytes(const as_tensor *t);

/* ---- handles ---------------------------------------------------------- */

/* Opaque: store id, slot and generation. {0} is the null handle. */
typedef struct as_handle { uint64_t v; } as_handle;
#define AS_HANDLE_NULL ((as_handle){0})
static inline bool as_handle_is_null(as_handle h) { return h.v == 0; }

/* ---- what a saved tensor is ------------------------------------------ */

enum as_kind {
    AS_KIND_GENERIC = 0,
    AS_KIND_SOFTMAX_OUTPUT,    /* meta.softmax */
    AS_KIND_CONV_INPUT,        /* meta.conv */
    AS_KIND_CONV_OUTPUT,       /* pre-activation conv output */
    AS_KIND_LINEAR_INPUT,
    AS_KIND_ACTIVATION_OUTPUT, /* meta.act: which function produced it */
    AS_KIND_ACTIVATION_INPUT,
    AS_KIND_NORM_INPUT,
    AS_KIND_POOL_INPUT,
    AS_KIND_ATTENTION_INPUT,   /* q, k, v */
    AS_KIND_DROPOUT_MASK,
    AS_KIND_INDEX,             /* token ids, argmax indices */
    AS_KIND_COUNT
};
/* "softmax_output", ...; NULL when unknown. Spec names: as here, plus the
 * short alias "softmax" for softmax_output. */
AS_API const char *as_kind_name(int kind);
AS_API int as_kind_from_name(const char *name, size_t len); /* <0 unknown */

/* Elementwise functions, for activation metadata and derived tensors. */
enum as_fn {
    AS_FN_IDENTITY = 0,
    AS_FN_RELU,          /* not invertible (negatives lost) */
    AS_FN_LEAKY_RELU,    /* alpha = negative slope (> 0 to invert) */
    AS_FN_AFFINE,        /* y = scale[c] * x + shift[c] (BatchNorm in eval
                            form, or folded): invertible when scale != 0 */
    AS_FN_GELU,          /* 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)));
                            not invertible in practice */
    AS_FN_COUNT
};
typedef struct as_elementwise {
    int          fn;       /* as_fn */
    float        alpha;    /* LeakyReLU slope */
    /* AS_FN_AFFINE: per-channel scale/shift over NCHW-style layout: channel
     * of flat index i is (i / inner) % channels. Pointers must stay valid and
     * unchanged until every handle depending on them is released. */
    const float *scale, *shift;
    int64_t      channels, inner;
} as_elementwise;

/* Softmax output metadata. The tensor is viewed as rows = numel / last dim
 * rows of row_len keys. Zero fields: row_len 0 = the last dim; queries 0 =
 * all rows form one block (so a causal query index is the row index);
 * causal false = no causal mask; valid_len NULL = no padding. A zeroed
 * meta therefore says "every key of every row is valid".
 *
 * The softmax codecs (soa, solog, sotk) check the metadata against the
 * tensor at every save, on every row: row_len equals the last dim, queries
 * divides the rows, keys the metadata masks hold exactly 0, the valid keys
 * sum to 1 within 1e-2, and the valid keys do not end in a run of exact
 * zeros with no other zero before it (a mask the metadata does not
 * declare, e.g. causal rows saved with a zeroed meta; zeros from underflow
 * elsewhere in the row are not flagged). A mismatch is AS_EMETA in strict mode; otherwise the tensor falls
 * back (the rule's fallback, else keep), and the mismatch is counted
 * (as_store_counter.meta_mismatches), kept per layer
 * (last_meta_mismatch) and logged to stderr (the 1st, 2nd, 4th, ... of
 * each layer). Other policies take the tensor as plain data and ignore
 * the metadata. */
typedef struct as_softmax_meta {
    int64_t row_len;         /* L: entries per row (keys); 0 = last dim */
    int64_t queries;         /* rows per (batch, head) block; causal uses
                                query index q = row % queries; 0 = rows */
    bool    causal;          /* key k valid only when k <= q */
    /* Optional key padding: keys k < valid_len[row / rows_per_item] are
     * valid. NULL = all valid. Copied by the store at save. */
    const int32_t *valid_len;
    int64_t rows_per_item;   /* e.g. heads * queries; > 0 with valid_len */
} as_softmax_meta;

/* Conv input metadata. Zero fields: stride, dilation and groups 0 mean 1;
 * padding 0 is no padding; n, cin, h, w, cout, kh, kw must be set (the
 * input's shape must be (n, cin, h, w)); output null: "invert" falls back
 * (no saved output to rebuild from; counted, not a mismatch). Only the
 * policy "invert" reads this metadata, and it checks it at save: a shape
 * that contradicts (n, cin, h, w), an impossible geometry (non-positive
 * sizes, negative padding, empty output), weight NULL, or
 * a saved output whose shape is not the conv's output is AS_EMETA in
 * strict mode and a counted, logged fallback otherwise (as for softmax
 * metadata). */
typedef struct as_conv_meta {
    int32_t n, cin, h, w;          /* input geometry (NCHW) */
    int32_t cout, kh, kw;
    int32_t stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups;
    /* Weights (cout, cin/groups, kh, kw) and optional bias (cout). Must stay
     * valid and unchanged until this handle is restored or released (true in
     * training: the optimizer runs after backward). weight_version changes
     * whenever the weights change; the store caches per (layer, version). */
    const float *weight, *bias;
    uint64_t     weight_version;
    /* Handle of the saved conv output Y (pre-activation), which inversion
     * rebuilds the input from. May be null (then invert falls back). */
    as_handle    output;
} as_conv_meta;

/* Recompute: out = fn(inputs) — rebuild this tensor from saved inputs. */
typedef int (*as_recompute_fn)(void *ud, const as_tensor *const *inputs,
                               size_t ninputs, as_tensor *out);

typedef struct as_save_info {
    int         kind;         /* as_kind */
    const char *layer;        /* layer name ("blocks.0.attn"); may be NULL */
    union {
        as_softmax_meta softmax;
        as_conv_meta    conv;
        as_elementwise  act;  /* activation_output/input: the function */
    } meta;
    /* Optional relation "this tensor = fn(source)". Lets the store rebuild
     * either side from the other: this tensor by applying fn to source
     * (policy "derive"), or source by applying the inverse of fn to this
     * tensor (policy "inverse" on source, when fn is invertible). */
    as_handle      source;
    as_elementwise source_fn;
    /* Optional: this tensor is the same data as an item saved earlier
     * (e.g. a conv input that is also the previous activation's output).
     * The new handle aliases that item and the item is re-planned under the
     * newest description (the caller's buffer still holds the values). */
    as_handle      alias_of;
    /* Optional: the caller holds t->data itself (the input batch, say) and
     * keeps it valid and unchanged until this handle and every handle that
     * aliases it or depends on it is released; in a training step, until
     * as_store_step_end. The store then keeps only the pointer (policy
     * "borrow": 0 stored bytes, whatever the rules say; later aliases do
     * not re-plan it); restore copies from it, restore_view returns it.
     * Not with alias_of or as_store_save_adopt (AS_EINVAL). */
    bool           borrow;
    /* Recompute inputs (policy "recompute"); handles must stay live. */
    as_recompute_fn recompute;
    void           *recompute_ud;
    const as_handle *recompute_inputs;
    size_t          recompute_ninputs;
    /* The recompute is row-wise: viewing this tensor and every input as
     * (rows, last dim), all with the same rows (f32), row i of the result
     * depends only on row i of each input (a linear layer's output from its
     * input, say). as_store_restore_rows then calls recompute on row slices
     * (inputs and out of shape (nrows, last dim)) instead of rebuilding the
     * whole tensor, and `auto` offers recompute as a candidate
     * (docs/policies.md). Ignored without recompute. */
    bool            recompute_rows;
} as_save_info;

/* ---- store lifetime --------------------------------------------------- */

typedef struct as_store_config {
    uint64_t    budget_bytes;   /* allocator budget, 0 = none */
    bool        strict;         /* a policy that does not apply is an error
                                   (AS_EFALLBACK) instead of a fallback */
    const char *offload_dir;    /* default directory of offload; NULL = $TMPDIR or /tmp */
    unsigned    sampler_hz;     /* allocator timeline sampler, 0 = off */
    const char *policy;         /* initial spec; NULL = "default=keep" */
    const char *label;          /* for the service / logs ("A", "B") */
    bool        checksum_saved; /* debug: checksum kept tensors at save and
                                   verify at restore (catches writes) */
} as_store_config;

/* Create a store with its own allocator arena. cfg may be NULL (defaults).
 * Errors: AS_EINVAL, AS_ENOMEM, AS_ESPEC (bad initial policy: the message
 * is written to err when err != NULL), AS_EIO. */
AS_API int as_store_create(const as_store_config *cfg, as_store **out,
                           char *err, size_t errlen);

/* Destroy a store, releasing every item. NULL-safe. */
AS_API void as_store_destroy(as_store *s);

/* The store's arena: frameworks allocate parameters and activations there
 * (tagged), and tensors allocated there can be adopted without a copy. The
 * arena lives as long as the store. */
AS_API as_arena *as_store_arena(as_store *s);

AS_API const char *as_store_label(const as_store *s);

/* Last error detail for the calling thread on this store (names handle,
 * layer, shapes, rule offsets). Never NULL. */
AS_API const char *as_store_last_error(const as_store *s);

/* ---- policy rules ----------------------------------------------------- */

/* Replace the rules. Spec grammar (';'-separated, whitespace ignored):
 *     rule     := selector '=' policy ('|' fallback)?
 *     selector := 'default' | KIND | 'layer:' GLOB
 *     policy   := NAME (':' ARG)*
 * e.g. "softmax=soa:5; conv_input=invert|zstd; layer:blocks.0.*=keep;
 * default=keep". Most specific wins: layer glob > kind > default; among
 * layer globs, the longest pattern wins. Takes effect for saves made after
 * the call. On error nothing changes and err gets "offset N: expected ...".
 * Errors: AS_ESPEC, AS_EINVAL (s or spec NULL). Thread-safe. */
AS_API int as_store_set_policy(as_store *s, const char *spec, char *err,
                               size_t errlen);

/* Parse and validate a spec without a store (for CLIs). Same errors. */
AS_API int as_policy_check(const char *spec, char *err, size_t errlen);

/* ---- save / restore / release ----------------------------------------- */

/* Save a tensor for backward. The data is read during the call; the
 * caller's buffer may be reused afterwards (not with info->borrow, whose
 * contract is at as_save_info). *out receives the handle (the
 * caller owns it until as_store_release or the end of the step).
 * In no-grad mode, returns 0 and a null handle without storing anything.
 * A policy that does not apply falls back (counted; see as_store_policy_of);
 * an offload directory that is missing or full falls back too, in strict
 * mode as well. On error *out is null and nothing is kept.
 * Errors: AS_EINVAL (bad dtype/shape/info), AS_EHANDLE (bad source,
 * alias or input handle), AS_ESHAPE (alias_of another shape), AS_EBUDGET
 * (store stays usable), AS_EFALLBACK (strict mode), AS_EMETA (strict
 * mode: the metadata contradicts the tensor, see as_softmax_meta), AS_ERANGE
 * (2^20 live handles), AS_ENOMEM. Thread-safe. */
AS_API int as_store_save(as_store *s, const as_save_info *info,
                         const as_tensor *t, as_handle *out);

/* Save a tensor whose data is `block`, allocated from this store's arena:
 * with the keep policy no copy is made; the store owns the block from now
 * on (freed when the item is released, or during the call if the policy
 * encodes it, or in no-grad mode): the caller must not use or free it after
 * a successful call (restore_view gives the data back, in place for keep).
 * On error the block still belongs to the caller. Errors: as
 * as_store_save, plus AS_EINVAL when the block does not hold the tensor or
 * its sizes disagree with the allocator's, AS_EFOREIGN when it is not
 * memory of this store's arena (a static array, another arena's block). */
AS_API int as_store_save_adopt(as_store *s, const as_save_info *info,
                               const as_tensor *t, as_block *block,
                               as_handle *out);

/* ---- saving in row blocks ------------------------------------------------
 * A tensor the framework produces a block of rows at a time (attention
 * probabilities one batch at a time) can be saved without ever existing
 * whole: begin reserves the item, append hands over the next rows in order,
 * end makes the handle restorable. The tensor is viewed as (rows, last
 * dim), rows = numel / last dim. What is stored, and what restore gives
 * back, is what as_store_save of the assembled tensor would store and give
 * (same rule, same policy); a codec that works per row or per block (keep,
 * the softmax codecs, aq, q8, fp16, ...) encodes each block as it comes,
 * so only that block's codes are added; a regenerator, offload or another
 * policy that needs the whole tensor has the rows assembled in workspace
 * and encodes them at end (memory as with as_store_save). */

/* Begin a row save of a tensor of t's dtype and shape (t->data is not
 * read). *out receives the handle, owned by the caller: until
 * as_store_save_rows_end succeeds it only takes appends, end or release
 * (any other use is AS_ESTATE naming the rows appended so far). Releasing
 * it, or as_store_step_end, abandons the save and frees everything it
 * held (neither may race with an append or end on it). In no-grad mode returns 0 and a null handle; append and end on a
 * null handle return 0 and store nothing.
 * info: as for as_store_save, except that alias_of, source, borrow and
 * recompute must be unset; the softmax metadata (valid_len included) is
 * copied here. t needs ndim >= 1 and a last dim > 0.
 * Errors: AS_EINVAL (bad dtype, shape or info, naming the field),
 * AS_ERANGE (2^20 live handles), AS_ENOMEM. Thread-safe. */
AS_API int as_store_save_rows_begin(as_store *s, const as_save_info *info,
                                    const as_tensor *t, as_handle *out);

/* Append the next nrows rows (rows: nrows * last dim values of the saved
 * dtype, read during the call; the caller's buffer may be reused
 * afterwards). For softmax_output a block must start at a multiple of
 * meta.queries (and of meta.rows_per_item with valid_len), so each block
 * holds whole (batch, head) blocks. On error nothing is appended and the
 * save stays open (the caller may retry, or release the handle).
 * Errors: AS_EHANDLE (not a handle of this store, or released), AS_ESTATE
 * (the save is finished, or another append / end on this handle is
 * running: calls on one handle must not overlap; different handles may run
 * concurrently), AS_ERANGE (more rows than remain), AS_EINVAL (rows NULL
 * with nrows > 0, nrows < 0, a misaligned softmax block), AS_EBUDGET,
 * AS_ENOMEM, AS_EFALLBACK / AS_EMETA (strict mode, as as_store_save). */
AS_API int as_store_save_rows_append(as_store *s, as_handle h,
                                     const void *rows, int64_t nrows);

/* Finish a row save: every row must have been appended. The handle then
 * behaves exactly like one from as_store_save. Errors: AS_EHANDLE,
 * AS_ESTATE (rows missing, naming how many; already finished; or a call
 * on this handle running), and for a tensor assembled in workspace the
 * errors of as_store_save. On error the save stays open. Thread-safe as
 * append. */
AS_API int as_store_save_rows_end(as_store *s, as_handle h);

/* Restore into the caller's buffer dst (dtype and shape must match the
 * saved tensor: AS_ESHAPE names both). May be called many times, in any
 * order, from many threads; the same values every time. Errors:
 * AS_EINVAL (s or dst NULL, dst->data NULL for a non-empty tensor),
 * AS_EHANDLE, AS_ESHAPE, AS_ECORRUPT (a zstd frame, an offload file or the
 * debug checksum failed: nothing written; the message names handle and
 * layer), AS_EIO (offload file unreadable), AS_EBUDGET / AS_ENOMEM
 * (no memory to rebuild a regenerated tensor). */
AS_API int as_store_restore(as_store *s, as_handle h, as_tensor *dst);

/* Restore as a store-owned read-only view, valid until the handle is
 * released or the step ends (the last handle of the item, when several
 * alias it). For keep this is the stored data itself; other policies decode
 * once into a materialization the view pins (tag workspace). A later save
 * that re-plans the item (alias_of, or a consumer turning it into
 * "inverse") does not invalidate the view: the viewed data then stays
 * allocated, and charged as stored, until the item is freed. Thread-safe.
 * Errors: as as_store_restore; *view is NULL on error. */
AS_API int as_store_restore_view(as_store *s, as_handle h,
                                 const as_tensor **view);

/* Softmax backward straight from a saved softmax output:
 * dx = y * (dy - <dy, y>) per row (rows = numel / last dim), with y the
 * restored (possibly approximated) values; uses the policy's own O(row)
 * path when it has one, so y need not be materialized. dy and dx are f32
 * with the saved shape (dx may alias dy). Errors: as as_store_restore. */
AS_API int as_store_softmax_backward(as_store *s, as_handle h,
                                     const float *dy, float *dx);

/* Activation backward straight from a saved activation input or output:
 * dx = f'(.) * dy elementwise, f the function named in meta.act when the
 * handle's item was first saved (kind activation_input or
 * activation_output): ReLU and LeakyReLU from the sign of the saved input
 * or output (y > 0 ? dy : alpha * dy), GELU (tanh form, see AS_FN_GELU)
 * from its saved input. Uses the policy's own path when it has one (sign:
 * from the bits; fewbit: from its derivative codes), otherwise restores
 * the values (materialized or in place) and applies f'. dy and dx are f32
 * with the saved shape; dx may alias dy. Thread-safe.
 * Errors: AS_EHANDLE; AS_ESHAPE (not f32); AS_EINVAL (NULL pointers, an
 * item not saved as an activation, or a function without a derivative
 * here: identity, affine, GELU from its output); as as_store_restore. */
AS_API int as_store_act_backward(as_store *s, as_handle h, const float *dy,
                                 float *dx);

/* Restore rows [row0, row0 + nrows) of a saved f32 tensor viewed as
 * (rows, last dim) into dst (nrows * last dim floats), e.g. one (batch,
 * head) block of attention probabilities at a time. */
AS_API int as_store_restore_rows(as_store *s, as_handle h, int64_t row0,
                                 int64_t nrows, float *dst);

/* Whether h's item is held as the tensor itself (keep, borrow): then
 * as_store_restore_view returns the stored data without a copy. Otherwise
 * (codecs, regenerators) restore_view decodes the whole tensor into a
 * workspace materialization, and a consumer that can work on row blocks
 * saves that memory with as_store_restore_rows. The answer is for the
 * item's current policy (a later re-plan may change it). Thread-safe.
 * Returns 1 (in place) or 0 (not). Errors: AS_EINVAL (s NULL),
 * AS_EHANDLE. */
AS_API int as_store_is_in_place(as_store *s, as_handle h);

/* Hint: restore of h will be asked for soon (offload starts reading its
 * file in the background; other policies ignore it). Errors: AS_EHANDLE. */
AS_API int as_store_prefetch(as_store *s, as_handle h);

/* Describe a handle's item: saved dtype/shape (data NULL) and kind; either
 * pointer may be NULL. Errors: AS_EHANDLE. */
AS_API int as_store_describe(as_store *s, as_handle h, as_tensor *shape,
                             int *kind);

/* End a handle. Items are freed when their last handle and every item that
 * depends on them are gone. A row save still open (as_store_save_rows_begin)
 * is abandoned: what it held is freed (AS_ESTATE, nothing done, while an
 * append or end on it is running). Errors: AS_EHANDLE, AS_ESTATE. */
AS_API int as_store_release(as_store *s, as_handle h);

/* The policy decision for a handle ("soa:5", "keep (fallback from invert:
 * stride 2)"); valid for the handle's lifetime. "invalid handle" for a bad
 * handle. */
AS_API const char *as_store_policy_of(as_store *s, as_handle h);

/* ---- steps, phases, no-grad ------------------------------------------- */

/* Begin a training step: resets per-step peaks, marks the timeline. */
AS_API void as_store_step_begin(as_store *s, uint64_t step);
/* End a step: every handle saved since step_begin and not yet released is
 * released (counted as auto-released). */
AS_API void as_store_step_end(as_store *s);
/* Phase mark, one of enum as_phase (common.h, included here):
 *   AS_PHASE_FORWARD    saves happen; regenerated tensors are not cached
 *   AS_PHASE_BACKWARD   restores happen; the per-step cache of regenerated
 *                       tensors is on (chains cost one materialization
 *                       each); leaving backward frees it
 *   AS_PHASE_OPTIMIZER, AS_PHASE_EVAL   timeline marks only
 *   AS_PHASE_NONE       no phase marked (the default): the cache is on
 * Marks are recorded in the arena timeline (dashboard). An unknown value
 * is recorded as is and treated like a phase other than backward.
 * Thread-safe. */
AS_API void as_store_phase(as_store *s, enum as_phase phase);
/* No-grad mode (evaluation): saves store nothing. Returns the old mode. */
AS_API bool as_store_set_grad(as_store *s, bool enabled);

/* ---- accounting -------------------------------------------------------- */

typedef struct as_store_counter {
    uint64_t raw_live, raw_peak;        /* bytes keep would hold */
    uint64_t stored_live, stored_peak;  /* bytes actually held */
    uint64_t saves, restores, releases, fallbacks;
    uint64_t meta_mismatches;           /* saves whose metadata contradicted
                                           the tensor (as_softmax_meta,
                                           as_conv_meta) */
    uint64_t encode_ns, decode_ns;      /* cumulative */
} as_store_counter;

typedef struct as_store_layer_stats {
    const char       *name;
    char              policy[48];       /* last policy used */
    as_store_counter  c;
    uint64_t          fallbacks_by_reason; /* fallbacks (same as c.fallbacks) */
    char              last_fallback[96];   /* "invert: stride 2" or "" */
    char              last_meta_mismatch[160]; /* "metadata: ..." or "" */
} as_store_layer_stats;

typedef struct as_store_policy_stats {
    char             name[32];          /* policy name without args */
    as_store_counter c;
} as_store_policy_stats;

/* A figure the training loop reports (as_store_report_metric). */
#define AS_STORE_METRICS_MAX 16
typedef struct as_store_metric {
    char     name[32];          /* [a-z0-9_], e.g. "grad_cosine" */
    double   value;             /* the latest */
    uint64_t step;              /* the store's step when it was reported */
    uint64_t count;             /* reports so far */
} as_store_metric;

typedef struct as_store_stats {
    const char           *label;
    uint64_t              step;
    int                   phase;
    as_store_counter      total;
    as_store_counter      kinds[AS_KIND_COUNT];
    size_t                nlayers;
    as_store_layer_stats *layers;
    size_t                npolicies;
    as_store_policy_stats *policies;
    uint64_t              live_handles, auto_released, offload_fallbacks;
    char                  spec[512];    /* current rules, normalized */
    size_t                nmetrics;     /* reported training figures */
    as_store_metric       metrics[AS_STORE_METRICS_MAX];
} as_store_stats;

/* A consistent copy of the accounting (arrays owned by *out, plain malloc;
 * free with as_store_stats_free). Cheap enough for 10 Hz from another
 * thread. Errors: AS_ENOMEM. */
AS_API int as_store_stats_take(as_store *s, as_store_stats *out);
AS_API void as_store_stats_free(as_store_stats *st);

/* Report a training figure (the loss, the cosine of the gradients against
 * exact ones, a learning rate) under a name: the store keeps the latest
 * value of each name with the step, and a service watching the store
 * serves it as actstore_training_metric{name=...} (so a fleet can alert on
 * it, docs/service.md). name: 1..31 of [a-z0-9_]; at most
 * AS_STORE_METRICS_MAX names per store. Thread-safe, cheap (a lock held for
 * a copy). Errors: AS_EINVAL (bad name, NULL store), AS_ERANGE (a new name
 * beyond the maximum). */
AS_API int as_store_report_metric(as_store *s, const char *name, double value);

/* Reset every peak (raw and stored, all groups) to current live values. */
AS_API void as_store_reset_peaks(as_store *s);

/* ---- saved-bytes budget and the `auto` planner --------------------------- */

/* Set a hard limit on the bytes the store holds for saved tensors (the
 * total stored_live of as_store_stats, whose high-water mark is
 * total.stored_peak): a save whose stored form would pass it fails with
 * AS_EBUDGET and keeps nothing (the store stays usable). Tensors under the
 * `auto` policy are planned to fit (docs/policies.md, "auto"): each is
 * stored under the plan's candidate, or a more compact one when that would
 * not fit. 0 removes the limit. Independent of as_store_config.budget_bytes
 * (a limit on the whole arena). Applies to saves after the call; bytes
 * already live stay. When auto has measured a whole step and `bytes` is
 * below the smallest saved peak it can reach, nothing changes and the last
 * error names that smallest budget. Errors: AS_EINVAL (s NULL), AS_EBUDGET.
 * Thread-safe (between steps; a change during a step takes effect for the
 * following saves and re-plans at once). */
AS_API int as_store_set_budget(as_store *s, uint64_t bytes);
/* Announce that a budget follows (as_store_set_budget, which ends this
 * state) once a measuring step has shown what keep holds: meanwhile nothing
 * is refused, and a tensor under `auto` that has no plan yet is stored in
 * its most compact measured candidate instead of keep, so the measuring
 * step holds about what auto can reach rather than keep's bytes (a model
 * whose keep bytes do not fit the arena can still be measured). The plan
 * made at that step's end is keep's until the budget arrives. Errors:
 * AS_EINVAL (s NULL). Thread-safe. */
AS_API int as_store_budget_pending(as_store *s);
/* The current saved-bytes budget, 0 = none (or s NULL). Thread-safe. */
AS_API uint64_t as_store_budget(const as_store *s);

/* Optional sensitivity hook for `auto`: the framework calls it in each
 * backward that reads h (once per reading layer, aliases included), with
 * the L2 norm of the gradient that the restored values are multiplied with
 * (the consuming layer's output gradient). auto counts the readers: a
 * linear or conv input read by more than one backward (a LayerNorm's
 * output) carries its error into the input gradient, so its reconstruction
 * error weighs more (docs/policies.md, "auto", Sensitivity); the norm is
 * validated but does not change the weight. Without reports the kind alone
 * decides. Call before releasing h. Reports for tensors auto does not plan
 * are ignored. Errors: AS_EINVAL (s NULL, or
 * norm negative or not finite), AS_EHANDLE. Thread-safe. */
AS_API int as_store_report_grad(as_store *s, as_handle h, double norm);

/* One (layer, kind) of auto's plan. Figures are per training step (all
 * tensors of that layer and kind saved in one step). */
typedef struct as_store_plan_entry {
    char     layer[64];
    int      kind;             /* as_kind */
    char     policy[48];       /* chosen candidate ("q4", "keep") */
    uint64_t raw_bytes;        /* what keep holds */
    uint64_t stored_bytes;     /* under the chosen candidate, as measured */
    double   rel_error;        /* ||x^ - x|| / ||x|| at the last probe */
    double   cosine;           /* <x, x^> / (||x|| ||x^||) */
    double   time_ns;          /* encode + decode of the chosen candidate */
    double   weight;           /* sensitivity: sqrt(1 + input_weight) where
                                  the error reaches the input gradient, 1
                                  elsewhere (docs/policies.md, auto) */
    uint32_t items;            /* tensors per step */
    uint32_t candidates;       /* candidates measured */
} as_store_plan_entry;

typedef struct as_store_plan {
    bool     active;           /* a planner exists (an auto save happened) */
    bool     measured;         /* a whole step was measured */
    bool     feasible;         /* the plan fits the budget */
    uint64_t budget;           /* 0 = none */
    uint64_t keep_bytes;       /* saved bytes per step under keep */
    uint64_t planned_bytes;    /* per step under the plan, every tensor */
    uint64_t fixed_bytes;      /* per step, tensors auto does not plan */
    uint64_t min_bytes;        /* smallest reachable: the least budget */
    uint64_t step;             /* step of the last plan */
    uint64_t probes, replans;  /* probe steps and plans made so far */
    uint32_t period;           /* steps between probe steps */
    size_t   n;
    as_store_plan_entry *entries;   /* n, ordered by layer id then kind */
} as_store_plan;

/* A copy of auto's current plan (entries owned by *out, plain malloc; free
 * with as_store_plan_free). Without a planner, out->active is false and n
 * is 0. Errors: AS_EINVAL, AS_ENOMEM. Thread-safe. */
AS_API int as_store_plan_take(as_store *s, as_store_plan *out);
AS_API void as_store_plan_free(as_store_plan *p);

#ifdef __cplusplus
}
#endif
#endif

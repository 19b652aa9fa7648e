/*
 * Internal structures of the activation store (not installed).
 *
 * Objects and who owns what:
 *   as_store   slot table (handles -> items), rules, accounting groups, the
 *              arena. One mutex `mu` guards the slot table, the dependency
 *              graph (deps / dependents), item handle counts and the
 *              materialization states; it is never held while a policy
 *              encodes or decodes, nor during a copy.
 *   as_item    one saved tensor (several handles may alias it). Refcounted:
 *              one reference per handle, per dependent representation and
 *              per in-flight operation. Holds the current representation and
 *              an optional materialization (regenerated values, cached
 *              inside the backward phase or pinned by restore_view).
 *   as_rep     how an item is held right now: policy, params (owned by a
 *              refcounted rule set), policy state, blocks allocated through
 *              the context, dependencies. Re-planning an item (alias_of, the
 *              implicit inverse rule) builds a new rep and swaps it in; the
 *              old one is dropped when in-flight operations are done.
 */
#ifndef AS_STORE_INTERNAL_H
#define AS_STORE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "actstore/store.h"
#include "store/policy.h"

#define AS_POLICY_MAX 64u       /* built-in + runtime-registered policies */
#define AS_SLOT_BITS  20u       /* handle: slot index bits */
#define AS_GEN_BITS   20u       /* handle: generation bits */
#define AS_CHK_BITS   8u        /* handle: check bits (forgery detection) */
#define AS_SLOTS_PER_CHUNK 1024u
#define AS_SLOT_CHUNKS ((1u << AS_SLOT_BITS) / AS_SLOTS_PER_CHUNK)

/* ---- accounting ------------------------------------------------------ */

typedef struct as_acct {
    _Atomic uint64_t raw_live, raw_peak, stored_live, stored_peak;
    _Atomic uint64_t saves, restores, releases, fallbacks, meta_mismatches;
    _Atomic uint64_t encode_ns, decode_ns;
} as_acct;

/* The groups an item is charged to. */
typedef struct as_groups {
    int      kind;
    uint16_t layer;      /* arena layer id = index into store->layers */
    uint16_t policy;     /* registry index */
} as_groups;

typedef struct as_layer_acct {
    as_acct acct;
    char    name[64];
    char    policy[48];         /* last policy used (guarded by layer_mu) */
    _Atomic uint64_t policy_hash; /* hash of `policy`: skips the lock */
    char    last_fallback[96];  /* guarded by layer_mu */
    char    last_meta[160];     /* last metadata mismatch (layer_mu) */
} as_layer_acct;

enum { AS_STAT_SAVE, AS_STAT_RESTORE, AS_STAT_RELEASE, AS_STAT_FALLBACK };

/* ---- rules ------------------------------------------------------------ */

enum { AS_SEL_DEFAULT, AS_SEL_KIND, AS_SEL_LAYER };

typedef struct as_polref {
    const as_policy_ops *ops;
    void                *params;
    const char          *text;       /* "zstd:3" as written (normalized);
                                        malloc'd, whole (an offload path
                                        may be long) */
} as_polref;

typedef struct as_rule {
    int        sel;        /* AS_SEL_* */
    int        kind;       /* AS_SEL_KIND */
    char      *glob;       /* AS_SEL_LAYER (malloc) */
    size_t     glob_len;
    size_t     offset;     /* in the spec, for messages */
    as_polref  pol;
    bool       has_fallback;
    as_polref  fallback;
} as_rule;

typedef struct as_rules {
    _Atomic int refs;
    bool        has_auto;    /* a rule names auto (its planner sees every save) */
    size_t      n;
    as_rule    *rules;
    char        spec[512];   /* normalized */
} as_rules;

/* Parse a spec. On error *out is NULL, AS_ESPEC returned and err holds
 * "offset N: expected ...". */
int as__rules_parse(const char *spec, as_rules **out, char *err, size_t errlen);
void as__rules_unref(as_rules *r);
static inline void as__rules_ref(as_rules *r) { atomic_fetch_add(&r->refs, 1); }

/* Fault injection (tests, allocator/alloc.c): with as__arena_fault_set(a,
 * n, sticky) the nth allocation from now fails, arena blocks and the
 * store's own records alike (sticky: every one after it too). */
void as__arena_fault_set(as_arena *a, long nth, bool sticky);
bool as__arena_fault(as_arena *a);
long as__arena_fault_left(as_arena *a);   /* allocations to go; 0 = done */
static inline void *as__smalloc(as_store *s, size_t n)
{
    return as__arena_fault(as_store_arena(s)) ? NULL : malloc(n);
}
static inline void *as__scalloc(as_store *s, size_t k, size_t n)
{
    return as__arena_fault(as_store_arena(s)) ? NULL : calloc(k, n);
}
static inline void *as__srealloc(as_store *s, void *p, size_t n)
{
    return as__arena_fault(as_store_arena(s)) ? NULL : realloc(p, n);
}

/* The plan for one tensor: primary policy and fallback; `pending_inverse`
 * when the primary is "inverse" (decided later, see as__replan_inverse):
 * 1 = named by a rule, 2 = implied by the chain rule. */
typedef struct as_plan {
    const as_polref *pol;         /* NULL = keep, no params */
    const as_polref *fallback;    /* NULL = keep */
    int              pending_inverse;
} as_plan;
void as__rules_select(const as_rules *r, int kind, const char *layer,
                      as_plan *plan);
bool as__glob_match(const char *pat, size_t plen, const char *s);

/* ---- items ------------------------------------------------------------ */

typedef struct as_item as_item;

typedef struct as_dep {
    uint64_t handle;      /* as the policy named it */
    as_item *item;        /* referenced */
} as_dep;

typedef struct as_rep {
    _Atomic int          refs;       /* item's + in-flight */
    const as_policy_ops *ops;
    as_item             *owner;
    void                *params;     /* owned by rules */
    as_rules            *rules;      /* referenced (NULL: params NULL) */
    void                *state;
    as_groups            g;
    as_block            *blocks;     /* allocated through the context */
    size_t               nblocks, cap;
    as_block             adopted;    /* keep zero-copy */
    int64_t              extra;      /* as_pctx_account bytes */
    uint64_t             stored;     /* bytes charged as stored */
    as_dep              *deps;
    size_t               ndeps, depcap;
    char                 desc[96];   /* "keep (fallback from invert: ...)" */
    as_tensor            view;       /* ops->view: shape + stored data */
    _Atomic bool         view_held;  /* restore_view handed out view.data:
                                        one extra ref, so a re-plan retires
                                        the rep without freeing that data;
                                        item_free does */
    struct as_rep       *older;      /* superseded reps, freed with the item
                                        (keeps policy_of strings valid) */
    bool                 probe;      /* auto's trial encode: blocks are
                                        workspace, never charged as stored */
    uint64_t             probe_bytes;/* what the trial would have stored */
    uint32_t             auto_group; /* auto's group that planned it + 1
                                        (0: not auto's); kept by aliases */
} as_rep;

enum { AS_MAT_NONE, AS_MAT_BUSY, AS_MAT_READY };

struct as_item {
    _Atomic int refs;
    int         nhandles;        /* under mu */
    as_rep     *rep;             /* under mu (swap); read with a rep ref */
    as_tensor   shape;           /* data NULL */
    as_handle   h0;              /* first handle (messages) */
    as_tensor   mat_view;        /* shape + mat.ptr when READY */
    size_t      bytes;
    int         pending_inverse; /* under mu */
    /* The activation of the first save (kind activation_input/output):
     * what as_store_act_backward differentiates. fn -1: none. */
    int8_t      act_fn;
    bool        act_output;      /* the values are f's output */
    float       act_alpha;
    /* A source whose "inverse" waits for this item to hold values (it was
     * declared while this item is grad_only): referenced, under mu. */
    as_item    *link_src;
    as_elementwise link_fn;
    uint64_t    checksum;        /* debug checksum_saved */
    bool        has_checksum;
    /* materialization (under mu) */
    int         mat_state;
    as_block    mat;
    int         mat_borrows;
    bool        mat_pinned;
    struct as_item *mat_next, *mat_prev;   /* list of materialized items */
    /* reverse edges: items whose current rep depends on this one (under mu) */
    as_item   **dependents;
    size_t      ndependents, dcap;
};

typedef struct as_slot {
    uint32_t gen;       /* 1.. ; under mu */
    bool     live;
    bool     in_step;   /* saved since step_begin: auto-released at end */
    uint32_t next_free;
    as_item *item;
    struct as_rows *rows;   /* an open row save (slot not live yet) */
} as_slot;

struct as_store {
    uint16_t        id;
    char            label[32];
    as_arena       *arena;
    bool            strict, checksum;
    char           *offload_dir;

    pthread_mutex_t mu;
    pthread_cond_t  cv;          /* materialization finished */
    as_slot        *chunks[AS_SLOT_CHUNKS];
    uint32_t        nslots;      /* slots ever used (high-water) */
    uint32_t        free_head;   /* 1-based, 0 = empty */
    _Atomic uint64_t live_handles;
    as_item         mat_list;    /* sentinel of materialized items */
    as_rules       *rules;       /* under mu */

    _Atomic bool    grad;
    _Atomic bool    cache_on;    /* backward phase (or no phase marked) */
    _Atomic int     phase;
    _Atomic uint64_t step;
    bool            in_step;

    /* accounting */
    as_acct         total;
    as_acct         kinds[AS_KIND_COUNT];
    as_acct         policies[AS_POLICY_MAX];
    as_layer_acct  *layers;      /* AS_LAYER_MAX entries */
    _Atomic uint32_t nlayers;    /* high-water of layer ids + 1 */
    pthread_mutex_t layer_mu;    /* layer names, ltab, policy strings */
    /* name hash -> layer id (0 = empty). Entries go from 0 to an id once,
     * under layer_mu, after the name is written: lookups read lock-free. */
    _Atomic uint16_t ltab[2048];
    _Atomic uint64_t auto_released, offload_fallbacks;
    /* Hard limit on total stored_live (as_store_set_budget), 0 = none. */
    _Atomic uint64_t saved_budget;
    /* as_store_budget_pending: auto stores unplanned tensors compactly */
    _Atomic bool budget_pending;
    /* The `auto` planner, created at the first save under auto. */
    struct as_auto *_Atomic planner;
    as_store_metric  metrics[AS_STORE_METRICS_MAX];   /* under layer_mu */
    size_t           nmetrics;
};

/* ---- store internals shared between files ------------------------------ */

void as__seterr(const as_store *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Accounting (accounting.c). */
void as__acct_charge(as_store *s, const as_groups *g, int64_t draw,
                     int64_t dstored);
/* Charge n new stored bytes within the saved budget: AS_EBUDGET (nothing
 * charged, message set) when live stored bytes would pass it. */
int as__acct_reserve(as_store *s, const as_groups *g, uint64_t n,
                     const char *layer);
void as__acct_count(as_store *s, const as_groups *g, int stat, uint64_t n);
void as__acct_time(as_store *s, const as_groups *g, bool encode, uint64_t ns);
void as__acct_fallback(as_store *s, const as_groups *g, const char *reason);
/* A save whose metadata contradicts its tensor: counted in every group,
 * the text kept per layer, logged to stderr at the layer's 1st, 2nd, 4th,
 * 8th, ... mismatch. */
void as__acct_meta(as_store *s, const as_groups *g, const char *kind,
                   const char *layer, const char *what);
void as__acct_policy_name(as_store *s, uint16_t layer, const char *desc);
void as__acct_sample(void *ud, uint64_t extra[AS_SAMPLE_EXTRA]);
int as__layer_id(as_store *s, const char *name, uint16_t *id);

/* Handles and items (store.c). Lookup validates and takes an item
 * reference; the caller drops it with as__item_unref. */
int as__lookup(as_store *s, as_handle h, as_item **it, const char *what);
int as__lookup_rep(as_store *s, as_handle h, as_item **it, as_rep **r,
                   const char *what);
/* What the read-only queries of a handle read, copied out under the
 * references as__lookup_rep takes (dropped again before returning): the
 * saved shape, the rep's groups and auto group, its description (valid for
 * the item's lifetime) and whether it keeps the values in place.
 * Errors: AS_EINVAL (s NULL), those of as__lookup_rep. */
typedef struct as_peek {
    as_tensor   shape;
    as_groups   g;
    uint32_t    auto_group;
    const char *desc;
    bool        in_place;
} as_peek;
int as__peek(as_store *s, as_handle h, const char *what, as_peek *p);
int as__slot_reserve(as_store *s, as_handle *h);
void as__slot_unreserve(as_store *s, as_handle h);
void as__slot_publish(as_store *s, as_handle h, as_item *it);
void as__item_swap_rep(as_store *s, as_item *it, as_rep *r);
void as__rep_discard(as_store *s, as_rep *r);
as_rules *as__rules_get(as_store *s);
void as__item_unref(as_store *s, as_item *it);
as_rep *as__item_rep(as_store *s, as_item *it);   /* referenced */
void as__rep_unref(as_store *s, as_rep *r);
int as__rep_add_dep(as_store *s, as_item *owner, as_rep *r, as_handle h);
bool as__handle_holds_values(as_store *s, as_handle h);
/* Rows [row0, row0 + nrows) of an f32 item (rank >= 1, range checked by
 * the caller) under its rep r: the rep's row decode, else its values in
 * place or materialized (restore.c). Not counted as a restore. */
int as__item_rows(as_store *s, as_item *it, as_rep *r, as_handle h,
                  int64_t row0, int64_t nrows, float *dst);

/* Row saves (save_rows.c; store.c keeps the open ones in their slots).
 * open: a reserved slot holds w until end publishes the item; rows: the
 * open save of h, entered (AS_ESTATE for a live handle or a save another
 * call is in); enter: claim w for one call (false: taken); free: abandon
 * (w claimed or unreachable). */
struct as_rows;
void as__slot_open_rows(as_store *s, as_handle h, struct as_rows *w);
int as__slot_rows(as_store *s, as_handle h, struct as_rows **out,
                  const char *what);
bool as__rows_enter(struct as_rows *w);
/* The item of live handle from (just saved) moves to the open slot to,
 * which becomes live; from is freed. */
void as__slot_move(as_store *s, as_handle from, as_handle to);
/* The activation of an activation_input / output save (act_backward). */
void as__note_act(as_item *it, const as_save_info *info);
void as__rows_progress(const struct as_rows *w, int64_t *done, int64_t *rows);
void as__rows_free(as_store *s, struct as_rows *w);
/* The representation of a row save encoded block by block (rows_rep.c):
 * state as__rows_rep_new(); as__rows_rep_add encodes one block under ops
 * (the rep's blocks hold the codes). */
extern const as_policy_ops as__rows_rep_ops;
void *as__rows_rep_new(as_store *s, int64_t cols, int dtype);
int as__rows_rep_add(as_pctx *ctx, void *state, const as_policy_ops *ops,
                     void *params, const as_save_info *info,
                     const as_tensor *block, int64_t row0);
void as__softmax_bwd_rows(const float *y, const float *dy, float *dx,
                          int64_t rows, int64_t n);

/* Save (save.c): encode t under one policy (NULL = keep) into a new rep
 * (refs 1). A fallback code (AS_ENOTSUP / AS_EIO / AS_ESTATE) comes with the
 * reason in why. */
int as__try_policy(as_store *s, as_item *it, as_handle h, as_groups g,
                   const as_polref *p, as_rules *rules,
                   const as_save_info *info, const as_tensor *t,
                   as_block *adopted, bool *taken, char *why, size_t whylen,
                   as_rep **spare, as_rep **out);

/* Materialization (restore.c): a read-only view of the item's values,
 * borrowed until as__unborrow. */
int as__borrow(as_store *s, as_item *it, const as_tensor **view);
void as__unborrow(as_store *s, as_item *it);
void as__mat_drop_all(as_store *s, bool pinned_too);
void as__mat_maybe_evict_locked(as_store *s, as_item *it);

/* The per-call policy context (restore.c). */
struct as_pctx {
    as_store       *s;
    as_item        *it;        /* NULL while encoding a new item */
    as_rep         *rep;
    as_handle       h;
    const char     *layer;
    as_block       *adopted;   /* save_adopt's block, until taken */
    bool            adopted_taken;
    as_block        scratch[8];
    size_t          nscratch;
    as_item        *borrowed[32];
    size_t          nborrowed;
    char            msg[256];  /* last as_pctx_errorf text, unprefixed */
};
void as__pctx_init(as_pctx *c, as_store *s, as_item *it, as_rep *r,
                   as_handle h, const char *layer);
void as__pctx_done(as_pctx *c);

/* Policies (registry.c). */
int as__policy_index(const as_policy_ops *ops);
const as_policy_ops *as__policy_at(size_t i);
size_t as__policy_count(void);
extern const as_policy_ops as_policy_keep, as_policy_inverse,
    as_policy_offload, as_policy_borrow, as_policy_recompute;

/* Elementwise helpers (policies/elementwise.c). */
bool as__fn_invertible(const as_elementwise *fn, int64_t numel, char *why,
                       size_t whylen);
int as__inverse_encode(as_pctx *ctx, as_handle consumer,
                       const as_elementwise *fn, void **state);

uint64_t as__checksum(const void *p, size_t n);
void as__strlcpy(char *dst, const char *src, size_t n);   /* truncates */

#endif

/*
 * actstore — the instrumented allocator.
 *
 * An as_arena is one dedicated jemalloc arena (created with "arenas.create",
 * with extent hooks that count reserved and purged bytes) plus counters of
 * our own: requested and usable bytes, live and peak, per tag, per layer and
 * in total. Allocations go through mallocx() with the arena and a private
 * per-thread cache ("tcache.create"); frees go through the same path with the
 * same flags. Memory from an arena must never be passed to free().
 *
 * Every allocation carries a tag (what it is for) and optionally a layer
 * (who it belongs to). Fixed tags are listed below; more can be registered
 * by name at run time. Layers are registered by name (e.g. "blocks.0.attn").
 *
 * An allocation is described by an as_block, a small value the caller keeps
 * and hands back to as_free(); it carries the size and attribution so the
 * hot path needs no lookup (like sdallocx, but nothing to get wrong by hand).
 *
 * Thread-safety: every function here may be called from any thread
 * concurrently, except as_arena_destroy(), which must not race with any
 * other call on the same arena. Counters are exact under concurrency.
 */
#ifndef ACTSTORE_ALLOC_H
#define ACTSTORE_ALLOC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "actstore/common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct as_arena as_arena;

/* Fixed tags. Registered tags get ids from AS_TAG_FIXED_COUNT upward. */
enum as_tag {
    AS_TAG_WEIGHTS = 0,
    AS_TAG_GRADIENTS,
    AS_TAG_OPTIMIZER,
    AS_TAG_ACTIVATIONS,
    AS_TAG_SAVED,       /* what the activation store holds for backward */
    AS_TAG_WORKSPACE,
    AS_TAG_SERVICE,     /* the service's own buffers (shown apart) */
    AS_TAG_OTHER,
    AS_TAG_FIXED_COUNT
};
#define AS_TAG_MAX   32u    /* fixed + registered tags */
#define AS_LAYER_MAX 1024u  /* registered layers per arena (id 0 = none) */
#define AS_LAYER_NONE 0u

/* A live allocation. Value type: copy it, keep it, give it back to
 * as_free(). Fields are read-only for the caller. */
typedef struct as_block {
    void    *ptr;       /* NULL for an empty block */
    size_t   size;      /* bytes requested */
    size_t   usable;    /* sallocx(ptr): bytes actually reserved */
    uint16_t tag;
    uint16_t layer;     /* AS_LAYER_NONE when not attributed */
    uint32_t shard;     /* the per-thread counters that charged it (internal) */
} as_block;

typedef struct as_arena_config {
    uint64_t budget_bytes;   /* live usable bytes limit; 0 = none */
    bool     checked;        /* verify frees with "arenas.lookup" (slower) */
    unsigned sampler_hz;     /* 0 = no sampler thread; else 1..10 */
    size_t   timeline_capacity; /* samples kept; 0 = default (4096) */
} as_arena_config;

/* Create an arena. cfg may be NULL (defaults: no budget, unchecked, no
 * sampler). On success *out owns the arena; destroy with as_arena_destroy().
 * Errors: AS_EINVAL (sampler_hz > 10), AS_ENOMEM, AS_EIO (jemalloc refused
 * to create an arena). */
AS_API int as_arena_create(const as_arena_config *cfg, as_arena **out);

/* Destroy an arena and every block still live in it (jemalloc
 * "arena.<i>.destroy"). NULL-safe. Blocks of the arena become invalid. */
AS_API void as_arena_destroy(as_arena *a);

/* Register a tag or a layer by name; registering a name twice returns the
 * same id. name is copied (at most 63 bytes kept). Errors: AS_EINVAL (empty
 * name), AS_ERANGE (table full). */
AS_API int as_arena_tag_register(as_arena *a, const char *name, uint16_t *id);
AS_API int as_arena_layer_register(as_arena *a, const char *name, uint16_t *id);

/* Name of a tag / layer id, or NULL when unknown. Static for the arena's
 * lifetime. */
AS_API const char *as_arena_tag_name(const as_arena *a, uint16_t tag);
AS_API const char *as_arena_layer_name(const as_arena *a, uint16_t layer);

/* Allocate size bytes (aligned to 64 bytes for size >= 64, else to 16)
 * attributed to tag and layer. On success *out describes the block.
 * size 0 gives an empty block and succeeds.
 * Errors (nothing changes, *out is zeroed): AS_EINVAL (unknown tag or
 * layer), AS_EBUDGET (live bytes would pass the budget; the detail text
 * names tag, layer, size and budget), AS_ENOMEM. */
AS_API int as_alloc(as_arena *a, size_t size, uint16_t tag, uint16_t layer,
                    as_block *out);

/* Same, zero-filled. */
AS_API int as_calloc(as_arena *a, size_t size, uint16_t tag, uint16_t layer,
                     as_block *out);

/* Free a block and zero *b. An empty block (ptr NULL) is a no-op returning
 * 0. In checked mode a pointer the arena did not allocate returns
 * AS_EFOREIGN and frees nothing. Errors: AS_EINVAL (b NULL), AS_EFOREIGN. */
AS_API int as_free(as_arena *a, as_block *b);

/* Is p inside a block of this arena? Uses "arenas.lookup". */
AS_API bool as_arena_owns(const as_arena *a, const void *p);

/* Is b a live allocation of this arena (what checked mode verifies on
 * free)? Its pointer lies in the arena's memory, jemalloc's size for it is
 * b->usable, and tag and layer are registered. Reads only; about a
 * microsecond. Thread-safe. Errors: AS_EINVAL (NULL, empty, unknown ids,
 * sizes that disagree), AS_EFOREIGN (memory of another arena or none);
 * detail in as_arena_last_error(). */
AS_API int as_arena_check_block(as_arena *a, const as_block *b);

/* Set / read the budget (0 = none). Lowering it below the live bytes makes
 * the next allocations fail; nothing is freed. */
AS_API void as_arena_set_budget(as_arena *a, uint64_t budget_bytes);
AS_API uint64_t as_arena_budget(const as_arena *a);

/* Reset every peak (total, per tag, per layer) to the current live value.
 * Call at the start of a training step to measure per-step peaks. */
AS_API void as_arena_reset_peaks(as_arena *a);

/* Phase marks for the timeline: enum as_phase (common.h; what each phase
 * means to the store: store.h, as_store_phase). "forward", ...; "?" when
 * unknown. */
AS_API const char *as_phase_name(int phase);

/* Mark the start of training step `step` / of a phase. Recorded in the
 * timeline in order (also when the sampler is off). */
AS_API void as_arena_mark_step(as_arena *a, uint64_t step);
AS_API void as_arena_mark_phase(as_arena *a, int phase);

/* Last error detail on this arena ("budget 1.0 MiB exceeded: tag saved,
 * layer conv1, request 2.0 MiB, live 512 KiB"). Per-thread copy, valid
 * until the next failing call from the same thread. Never NULL. */
AS_API const char *as_arena_last_error(const as_arena *a);

/* ---- snapshots -------------------------------------------------------- */

typedef struct as_counter {
    uint64_t live_requested, live_usable;   /* bytes */
    uint64_t peak_requested, peak_usable;   /* since last reset */
    uint64_t allocs, frees;                 /* counts, monotonic */
} as_counter;

/* Hook filled by the sampler into each sample's extra[] (e.g. the store's
 * per-kind stored bytes). Called on the sampler thread. */
#define AS_SAMPLE_EXTRA 16
typedef void (*as_sample_fn)(void *ud, uint64_t extra[AS_SAMPLE_EXTRA]);
AS_API void as_arena_set_sample_hook(as_arena *a, as_sample_fn fn, void *ud);

enum as_sample_type { AS_SAMPLE_TICK = 0, AS_SAMPLE_STEP, AS_SAMPLE_PHASE };

typedef struct as_sample {
    uint64_t seq;            /* monotonic, never reused */
    uint64_t t_ns;           /* CLOCK_MONOTONIC */
    uint8_t  type;           /* as_sample_type */
    uint8_t  phase;          /* current phase */
    uint64_t step;           /* current step */
    uint64_t live_usable, peak_usable;
    uint64_t tag_live[AS_TAG_FIXED_COUNT];
    uint64_t resident, mapped, retained;   /* jemalloc arena stats; 0 on marks */
    uint64_t extra[AS_SAMPLE_EXTRA];
} as_sample;

typedef struct as_arena_snapshot {
    uint64_t   t_ns;
    unsigned   arena_index;           /* jemalloc arena id */
    uint64_t   budget_bytes;
    as_counter total;
    size_t     ntags;                  /* fixed + registered */
    as_counter tags[AS_TAG_MAX];
    const char *tag_names[AS_TAG_MAX];
    size_t     nlayers;                /* including id 0 = none */
    as_counter *layers;                /* nlayers entries */
    const char **layer_names;
    uint64_t   reserved_bytes, purged_bytes;   /* extent hooks, cumulative */
    uint64_t   released_bytes;         /* extent hooks: unmapped, cumulative */
    unsigned   nthreads;               /* threads holding a private tcache */
    uint64_t   last_seq;               /* newest seq so far: the next since_seq */
    uint64_t   resident, mapped, retained;    /* last jemalloc reading */
    uint64_t   step; int phase;
    size_t     nsamples;               /* timeline, oldest first */
    as_sample  *samples;
} as_arena_snapshot;

/* A consistent copy of all counters and of the timeline samples with
 * seq > since_seq (0 = all, UINT64_MAX = none: counters only). The snapshot owns its arrays (plain malloc,
 * not the arena, so it does not disturb what it measures); free with
 * as_arena_snapshot_free(). Errors: AS_ENOMEM. */
AS_API int as_arena_snapshot_take(as_arena *a, uint64_t since_seq,
                                  as_arena_snapshot *out);
AS_API void as_arena_snapshot_free(as_arena_snapshot *s);

/* Refresh jemalloc's epoch and read resident/mapped/retained now (the
 * sampler does this on its own thread; ~15 us). */
AS_API int as_arena_refresh_stats(as_arena *a);

/* Take one timeline sample now on the calling thread, exactly as a sampler
 * tick does (refresh, counters, sample hook). For tests and for callers that
 * want a sample at a precise point. Errors: AS_EINVAL, AS_EIO (statistics
 * unreadable; the sample is still appended with zero jemalloc figures). */
AS_API int as_arena_sample_now(as_arena *a);

/* Return the calling thread's cached free blocks for this arena (its bins
 * of small blocks and its private tcache) to the arena, so that jemalloc's
 * statistics are exact. Other threads' caches are returned when they exit
 * or when the arena is destroyed. */
AS_API void as_arena_flush_thread_cache(as_arena *a);

#ifdef __cplusplus
}
#endif
#endif

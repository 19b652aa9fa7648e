/*
 * The store core: save / restore / release semantics, handle misuse
 * (released, stale, foreign, forged, null), adoption without a copy, step
 * reset and no-grad, policy changes between steps, fallback counting and
 * strict mode, budget errors that leave the store usable, the debug checksum,
 * concurrent save/restore from 4 threads, and accounting that matches the
 * allocator. Spec tables: test_rules.c; recompute and inverse chains:
 * test_store_regen.c; codec round trips and offload corruption:
 * test_store_codecs.c.
 */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "actstore/store.h"
#include "store/policies/quant.h"
#include "support/store_stats.h"
#include "support/store_util.h"
#include "support/test_main.h"
#include "util/rng.h"

/* ---- helpers (and tests/support/store_util.h) ------------------------- */

static uint64_t rng = 88172645463325252ull;
static uint32_t rnd(void) { return as_rng_u32(&rng); }
static float *randv(size_t n) { return randv_from(&rng, n); }
static as_store *mk(const char *spec, bool strict, uint64_t budget)
{
    return store_new(spec, NULL, strict, budget, "t");
}

/* ---- basic semantics ---------------------------------------------------- */

static void test_keep_round_trip(void **st)
{
    (void)st;
    as_store *s = mk(NULL, false, 0);
    float *x = randv(15), y[15], z[15];
    as_tensor t = t2(x, AS_F32, 3, 5);
    as_save_info i = info(AS_KIND_LINEAR_INPUT, "fc1");
    as_handle h;
    assert_int_equal(as_store_save(s, &i, &t, &h), 0);
    assert_false(as_handle_is_null(h));
    float orig[15];
    memcpy(orig, x, sizeof orig);
    memset(x, 0, 15 * sizeof *x);   /* the caller may reuse its buffer */
    as_tensor d = t2(y, AS_F32, 3, 5), e = t2(z, AS_F32, 3, 5);
    assert_int_equal(as_store_restore(s, h, &d), 0);
    assert_int_equal(as_store_restore(s, h, &e), 0);   /* again: same values */
    assert_memory_equal(y, orig, sizeof orig);
    assert_memory_equal(z, orig, sizeof orig);
    const as_tensor *v;
    assert_int_equal(as_store_restore_view(s, h, &v), 0);
    assert_memory_equal(v->data, orig, sizeof orig);
    assert_int_equal(v->ndim, 2);
    as_tensor sh;
    int kind = -1;
    assert_int_equal(as_store_describe(s, h, &sh, &kind), 0);
    assert_int_equal(kind, AS_KIND_LINEAR_INPUT);
    assert_int_equal(sh.shape[0], 3);
    assert_int_equal(sh.shape[1], 5);
    assert_null(sh.data);
    assert_string_equal(as_store_policy_of(s, h), "keep");
    as_store_stats a = stats(s);
    assert_int_equal(a.total.saves, 1);
    assert_int_equal(a.total.restores, 3);
    assert_int_equal(a.total.raw_live, 60);
    assert_int_equal(a.total.stored_live, 60);
    assert_int_equal(a.kinds[AS_KIND_LINEAR_INPUT].raw_live, 60);
    assert_int_equal(a.live_handles, 1);
    as_store_stats_free(&a);
    assert_int_equal(as_store_release(s, h), 0);
    a = stats(s);
    assert_int_equal(a.total.raw_live, 0);
    assert_int_equal(a.total.stored_live, 0);
    assert_int_equal(a.total.raw_peak, 60);
    assert_int_equal(a.total.releases, 1);
    assert_int_equal(a.live_handles, 0);
    as_store_stats_free(&a);
    free(x);
    as_store_destroy(s);
}

/* A keep view stays valid when a later alias_of save re-plans its item
 * (here to fp16): the retired data is held, and counted, until release.
 * Returns stored_live after the re-plan. */
static uint64_t replan_with_view(bool take_view)
{
    as_store *s = mk("linear_input=fp16; default=keep", false, 0);
    float *x = randv(64), orig[64];
    memcpy(orig, x, sizeof orig);
    as_tensor t = t2(x, AS_F32, 8, 8);
    as_save_info ai = info(AS_KIND_ACTIVATION_OUTPUT, "act");
    as_handle ha, hb;
    assert_int_equal(as_store_save(s, &ai, &t, &ha), 0);
    const as_tensor *v = NULL;
    if (take_view) {
        assert_int_equal(as_store_restore_view(s, ha, &v), 0);
        assert_int_equal(as_store_restore_view(s, ha, &v), 0);   /* one hold */
    }
    as_save_info bi = info(AS_KIND_LINEAR_INPUT, "fc");
    bi.alias_of = ha;
    assert_int_equal(as_store_save(s, &bi, &t, &hb), 0);
    assert_string_equal(as_store_policy_of(s, hb), "fp16");
    memset(x, 0, sizeof orig);   /* the caller's buffer is not what v shows */
    if (v)
        assert_memory_equal(v->data, orig, sizeof orig);
    as_store_stats a = stats(s);
    assert_int_equal(a.total.raw_live, sizeof orig);
    uint64_t stored = a.total.stored_live;
    as_store_stats_free(&a);
    assert_int_equal(as_store_release(s, ha), 0);
    assert_int_equal(as_store_release(s, hb), 0);
    a = stats(s);
    assert_int_equal(a.total.stored_live, 0);
    assert_int_equal(a.total.raw_live, 0);
    as_store_stats_free(&a);
    free(x);
    as_store_destroy(s);
    return stored;
}

static void test_view_survives_replan(void **st)
{
    (void)st;
    uint64_t plain = replan_with_view(false), viewed = replan_with_view(true);
    assert_true(plain < 64 * sizeof(float));          /* fp16 only */
    assert_int_equal(viewed, plain + 64 * sizeof(float));   /* + held keep */
}

static void test_restore_shape_errors(void **st)
{
    (void)st;
    as_store *s = mk(NULL, false, 0);
    float x[12] = {1, 2, 3}, y[12];
    as_tensor t = t2(x, AS_F32, 3, 4);
    as_save_info i = info(AS_KIND_GENERIC, "blk");
    as_handle h;
    assert_int_equal(as_store_save(s, &i, &t, &h), 0);
    memset(y, 0x7f, sizeof y);
    as_tensor d = t2(y, AS_F32, 4, 3);
    assert_int_equal(as_store_restore(s, h, &d), AS_ESHAPE);
    assert_contains(as_store_last_error(s), "f32[4,3]");
    assert_contains(as_store_last_error(s), "f32[3,4]");
    assert_contains(as_store_last_error(s), "blk");
    d = t2(y, AS_I32, 3, 4);
    assert_int_equal(as_store_restore(s, h, &d), AS_ESHAPE);
    assert_contains(as_store_last_error(s), "i32[3,4]");
    d = (as_tensor){.data = y, .dtype = AS_F32, .ndim = 1, .shape = {12}};
    assert_int_equal(as_store_restore(s, h, &d), AS_ESHAPE);
    for (int k = 0; k < 12; k++)   /* nothing written */
        assert_int_equal(((uint32_t *)y)[k], 0x7f7f7f7fu);
    d = t2(NULL, AS_F32, 3, 4);   /* no buffer: a caller error, not a shape */
    assert_int_equal(as_store_restore(s, h, &d), AS_EINVAL);
    assert_contains(as_store_last_error(s), "data is NULL");
    d = t2(NULL, AS_F32, 4, 4);
    assert_int_equal(as_store_restore(s, h, &d), AS_ESHAPE);
    /* bad saves */
    as_tensor bad = t2(x, 99, 3, 4);
    as_handle hb;
    assert_int_equal(as_store_save(s, &i, &bad, &hb), AS_EINVAL);
    assert_true(as_handle_is_null(hb));
    bad = t2(x, AS_F32, -1, 4);
    assert_int_equal(as_store_save(s, &i, &bad, &hb), AS_EINVAL);
    assert_contains(as_store_last_error(s), "negative dimension");
    bad = (as_tensor){.data = x, .dtype = AS_F32, .ndim = 9};
    assert_int_equal(as_store_save(s, &i, &bad, &hb), AS_EINVAL);
    bad = t2(NULL, AS_F32, 3, 4);
    assert_int_equal(as_store_save(s, &i, &bad, &hb), AS_EINVAL);
    bad = (as_tensor){.data = x, .dtype = AS_F32, .ndim = 3,
                      .shape = {1ll << 40, 1ll << 40, 1ll << 40}};   /* overflows */
    assert_int_equal(as_store_save(s, &i, &bad, &hb), AS_EINVAL);
    assert_contains(as_store_last_error(s), "too large");
    assert_int_equal(as_tensor_numel(&bad), -1);
    bad.ndim = 2;   /* 2^80 elements: overflows too */
    assert_int_equal(as_store_save(s, &i, &bad, &hb), AS_EINVAL);
    bad = (as_tensor){.data = x, .dtype = AS_F32, .ndim = 2, .shape = {1ll << 30, 1ll << 30}};
    assert_int_equal(as_store_save(s, &i, &bad, &hb), AS_EINVAL);   /* 2^62 bytes */
    as_save_info bk = info(AS_KIND_COUNT, "blk");
    assert_int_equal(as_store_save(s, &bk, &t, &hb), AS_EINVAL);
    assert_contains(as_store_last_error(s), "unknown kind");
    /* the store is still fine */
    d = t2(y, AS_F32, 3, 4);
    assert_int_equal(as_store_restore(s, h, &d), 0);
    assert_memory_equal(x, y, sizeof x);
    /* zero-size tensors work */
    as_tensor z = t2(NULL, AS_F32, 0, 4);
    assert_int_equal(as_store_save(s, &i, &z, &hb), 0);
    assert_int_equal(as_store_restore(s, hb, &z), 0);
    assert_int_equal(as_store_release(s, hb), 0);
    assert_int_equal(as_store_release(s, h), 0);
    as_store_destroy(s);
}

static void test_handle_misuse(void **st)
{
    (void)st;
    as_store *a = mk(NULL, false, 0), *b = mk(NULL, false, 0);
    float x[4] = {1, 2, 3, 4}, y[4];
    as_tensor t = t2(x, AS_F32, 2, 2), d = t2(y, AS_F32, 2, 2);
    as_save_info i = info(AS_KIND_GENERIC, "l");
    as_handle h1, h2, hb;
    assert_int_equal(as_store_save(a, &i, &t, &h1), 0);
    assert_int_equal(as_store_save(b, &i, &t, &hb), 0);
    /* released */
    assert_int_equal(as_store_release(a, h1), 0);
    assert_int_equal(as_store_restore(a, h1, &d), AS_EHANDLE);
    assert_contains(as_store_last_error(a), "released");
    assert_int_equal(as_store_release(a, h1), AS_EHANDLE);   /* double release */
    assert_int_equal(as_store_prefetch(a, h1), AS_EHANDLE);
    assert_int_equal(as_store_describe(a, h1, NULL, NULL), AS_EHANDLE);
    assert_string_equal(as_store_policy_of(a, h1), "invalid handle");
    /* stale: the slot was reused by a new save */
    assert_int_equal(as_store_save(a, &i, &t, &h2), 0);
    assert_int_not_equal(h1.v, h2.v);
    assert_int_equal(as_store_restore(a, h1, &d), AS_EHANDLE);
    assert_contains(as_store_last_error(a), "stale");
    assert_int_equal(as_store_restore(a, h2, &d), 0);
    /* foreign: a handle of store b given to a, and back */
    assert_int_equal(as_store_restore(a, hb, &d), AS_EHANDLE);
    assert_contains(as_store_last_error(a), "foreign");
    assert_int_equal(as_store_release(b, h2), AS_EHANDLE);
    assert_contains(as_store_last_error(b), "foreign");
    /* forged: flipped bits, random values, null */
    as_handle f = {h2.v ^ (1ull << 41)};
    assert_int_equal(as_store_restore(a, f, &d), AS_EHANDLE);
    assert_contains(as_store_last_error(a), "forged");
    f.v = h2.v + 5;   /* a slot never issued */
    assert_int_equal(as_store_restore(a, f, &d), AS_EHANDLE);
    for (int k = 0; k < 2000; k++) {
        as_handle r = {((uint64_t)rnd() << 32) | rnd()};
        if (r.v == h2.v)
            continue;
        assert_int_equal(as_store_restore(a, r, &d), AS_EHANDLE);
    }
    assert_int_equal(as_store_restore(a, AS_HANDLE_NULL, &d), AS_EHANDLE);
    assert_contains(as_store_last_error(a), "null handle");
    assert_int_equal(as_store_release(a, AS_HANDLE_NULL), 0);   /* like free(NULL) */
    /* a handle of a destroyed store */
    as_store_destroy(b);
    assert_int_equal(as_store_restore(a, hb, &d), AS_EHANDLE);
    assert_contains(as_store_last_error(a), "forged");
    /* the good handle still works */
    assert_int_equal(as_store_restore(a, h2, &d), 0);
    assert_memory_equal(x, y, sizeof x);
    /* NULL arguments */
    assert_int_equal(as_store_restore(NULL, h2, &d), AS_EINVAL);
    assert_int_equal(as_store_restore(a, h2, NULL), AS_EINVAL);
    assert_int_equal(as_store_save(a, &i, &t, NULL), AS_EINVAL);
    as_store_destroy(a);
    as_store_destroy(NULL);
}

static void test_adopt_zero_copy(void **st)
{
    (void)st;
    as_store *s = mk("default=keep; layer:enc.*=zstd", false, 0);
    as_arena *ar = as_store_arena(s);
    enum { N = 1 << 16 };
    as_block b;
    assert_int_equal(as_alloc(ar, N * sizeof(float), AS_TAG_ACTIVATIONS, AS_LAYER_NONE, &b), 0);
    float *x = b.ptr, *ref = randv(N);
    memcpy(x, ref, N * sizeof *x);
    as_tensor t = t2(x, AS_F32, 256, 256);
    as_save_info i = info(AS_KIND_ACTIVATION_OUTPUT, "dec.0");
    as_handle h;
    assert_int_equal(as_store_save_adopt(s, &i, &t, &b, &h), 0);
    const as_tensor *v;
    assert_int_equal(as_store_restore_view(s, h, &v), 0);
    assert_ptr_equal(v->data, x);   /* zero-copy */
    as_store_stats a = stats(s);
    assert_int_equal(a.total.stored_live, N * sizeof(float));
    as_store_stats_free(&a);
    assert_int_equal(arena_tag(s, AS_TAG_SAVED).live_requested, 0);
    assert_int_equal(arena_tag(s, AS_TAG_ACTIVATIONS).live_requested, N * sizeof(float));
    assert_int_equal(as_store_release(s, h), 0);   /* frees the block */
    assert_int_equal(arena_tag(s, AS_TAG_ACTIVATIONS).live_requested, 0);

    /* adopted, then encoded by another policy: the block is freed at once */
    assert_int_equal(as_alloc(ar, N * sizeof(float), AS_TAG_ACTIVATIONS, AS_LAYER_NONE, &b), 0);
    memcpy(b.ptr, ref, N * sizeof *x);
    t.data = b.ptr;
    i.layer = "enc.3";
    assert_int_equal(as_store_save_adopt(s, &i, &t, &b, &h), 0);
    assert_string_equal(as_store_policy_of(s, h), "zstd");
    assert_int_equal(arena_tag(s, AS_TAG_ACTIVATIONS).live_requested, 0);
    float *y = malloc(N * sizeof *y);
    as_tensor d = t2(y, AS_F32, 256, 256);
    assert_int_equal(as_store_restore(s, h, &d), 0);
    assert_memory_equal(y, ref, N * sizeof *y);
    assert_int_equal(as_store_release(s, h), 0);

    /* a block that does not hold the tensor: error, the block stays ours */
    assert_int_equal(as_alloc(ar, 64, AS_TAG_ACTIVATIONS, AS_LAYER_NONE, &b), 0);
    t = t2(b.ptr, AS_F32, 4, 8);   /* 128 bytes > 64 */
    assert_int_equal(as_store_save_adopt(s, &i, &t, &b, &h), AS_EINVAL);
    assert_true(as_handle_is_null(h));
    assert_non_null(b.ptr);
    assert_int_equal(as_free(ar, &b), 0);
    assert_int_equal(as_store_save_adopt(s, &i, &t, NULL, &h), AS_EINVAL);

    /* not this arena's memory: a static array, another store's block, a
     * block whose sizes were edited; each refused, nothing taken */
    static float stat[1024];
    as_block fake = {.ptr = stat, .size = sizeof stat, .usable = sizeof stat,
                     .tag = AS_TAG_ACTIVATIONS};
    t = t2(stat, AS_F32, 32, 32);
    i.layer = "dec.1";
    assert_int_equal(as_store_save_adopt(s, &i, &t, &fake, &h), AS_EFOREIGN);
    assert_true(as_handle_is_null(h));
    assert_contains(as_store_last_error(s), "not a live block");
    as_store *o = mk("default=keep", false, 0);
    as_arena *oar = as_store_arena(o);
    assert_int_equal(as_alloc(oar, 4096, AS_TAG_ACTIVATIONS, AS_LAYER_NONE, &b), 0);
    t = t2(b.ptr, AS_F32, 32, 32);
    assert_int_equal(as_store_save_adopt(s, &i, &t, &b, &h), AS_EFOREIGN);
    assert_int_equal(arena_tag(s, AS_TAG_ACTIVATIONS).live_requested, 0);
    assert_int_equal(as_free(oar, &b), 0);
    assert_int_equal(as_alloc(ar, 4096, AS_TAG_ACTIVATIONS, AS_LAYER_NONE, &b), 0);
    as_block forged = b;
    forged.usable = 1 << 20;
    forged.size = 1 << 20;
    t = t2(b.ptr, AS_F32, 32, 32);
    assert_int_equal(as_store_save_adopt(s, &i, &t, &forged, &h), AS_EINVAL);
    assert_int_equal(as_free(ar, &b), 0);
    assert_int_equal(as_arena_check_block(ar, &b), AS_EINVAL);   /* empty */
    as_store_destroy(o);
    free(y);
    free(ref);
    as_store_destroy(s);
}

static void test_debug_checksum(void **st)
{
    (void)st;
    as_store_config cfg = {.checksum_saved = true};
    as_store *s = NULL;
    assert_int_equal(as_store_create(&cfg, &s, NULL, 0), 0);
    as_block b;
    assert_int_equal(as_alloc(as_store_arena(s), 4096, AS_TAG_ACTIVATIONS, 0, &b), 0);
    memset(b.ptr, 1, 4096);
    as_tensor t = t2(b.ptr, AS_U8, 64, 64);
    as_save_info i = info(AS_KIND_GENERIC, "writer");
    as_handle h;
    assert_int_equal(as_store_save_adopt(s, &i, &t, &b, &h), 0);
    uint8_t y[4096];
    as_tensor d = t2(y, AS_U8, 64, 64);
    assert_int_equal(as_store_restore(s, h, &d), 0);
    ((uint8_t *)t.data)[100] = 2;   /* the framework writes into it: a bug */
    memset(y, 0, sizeof y);
    assert_int_equal(as_store_restore(s, h, &d), AS_ECORRUPT);
    assert_contains(as_store_last_error(s), "modified after save");
    assert_contains(as_store_last_error(s), "writer");
    assert_int_equal(y[0], 0);   /* nothing written */
    assert_int_equal(as_store_release(s, h), 0);
    as_store_destroy(s);
}

/* ---- steps, no-grad, policy changes ---------------------------------- */

static void test_step_reset(void **st)
{
    (void)st;
    as_store *s = mk("default=keep; generic=zstd", false, 0);
    as_tensor t = randt_from(&rng, 10, 100);
    as_save_info i = info(AS_KIND_GENERIC, "l0"), k = info(AS_KIND_LINEAR_INPUT, "l1");
    as_handle outside, h[3];
    assert_int_equal(as_store_save(s, &k, &t, &outside), 0);   /* before any step */
    for (uint64_t step = 1; step <= 3; step++) {
        as_store_step_begin(s, step);
        as_store_phase(s, AS_PHASE_FORWARD);
        assert_int_equal(as_store_save(s, &i, &t, &h[0]), 0);
        assert_int_equal(as_store_save(s, &k, &t, &h[1]), 0);
        assert_int_equal(as_store_save(s, &i, &t, &h[2]), 0);
        as_store_phase(s, AS_PHASE_BACKWARD);
        const as_tensor *v;
        assert_int_equal(as_store_restore_view(s, h[0], &v), 0);   /* pinned mat */
        assert_int_equal(as_store_release(s, h[1]), 0);
        as_store_step_end(s);
        for (int j = 0; j < 3; j++)
            assert_int_equal(as_store_release(s, h[j]), AS_EHANDLE);
        as_store_stats a = stats(s);
        assert_int_equal(a.live_handles, 1);   /* only the one saved outside */
        assert_int_equal(a.auto_released, 2 * step);
        assert_int_equal(a.step, step);
        assert_int_equal(a.total.raw_live, 4000);
        as_store_stats_free(&a);
        /* nothing materialized or stored is left but the outside item */
        assert_int_equal(arena_tag(s, AS_TAG_SAVED).live_requested, 4000);
    }
    assert_int_equal(as_store_release(s, outside), 0);
    assert_int_equal(arena_tag(s, AS_TAG_SAVED).live_requested, 0);
    free(t.data);
    as_store_destroy(s);
}

static void test_no_grad(void **st)
{
    (void)st;
    as_store *s = mk("default=zstd", false, 0);
    float *x = randv(4096);
    as_tensor t = t2(x, AS_F32, 64, 64);
    as_save_info i = info(AS_KIND_ACTIVATION_OUTPUT, "eval.l");
    assert_true(as_store_set_grad(s, false));
    assert_false(as_store_set_grad(s, false));
    as_handle h = {123};
    for (int k = 0; k < 100; k++) {   /* an evaluation pass */
        assert_int_equal(as_store_save(s, &i, &t, &h), 0);
        assert_true(as_handle_is_null(h));
        assert_int_equal(as_store_release(s, h), 0);
    }
    /* adopted blocks are taken (and freed): nothing leaks */
    as_block b;
    assert_int_equal(as_alloc(as_store_arena(s), 4096 * 4, AS_TAG_ACTIVATIONS, 0, &b), 0);
    memcpy(b.ptr, x, 4096 * 4);
    t.data = b.ptr;
    assert_int_equal(as_store_save_adopt(s, &i, &t, &b, &h), 0);
    assert_true(as_handle_is_null(h));
    as_store_stats a = stats(s);
    assert_int_equal(a.total.saves, 0);
    as_store_stats_free(&a);
    expect_nothing_live(s);
    assert_int_equal(arena_tag(s, AS_TAG_SAVED).live_requested, 0);
    assert_int_equal(arena_tag(s, AS_TAG_ACTIVATIONS).live_requested, 0);
    assert_false(as_store_set_grad(s, true));
    t.data = x;
    assert_int_equal(as_store_save(s, &i, &t, &h), 0);
    assert_false(as_handle_is_null(h));
    assert_int_equal(as_store_release(s, h), 0);
    free(x);
    as_store_destroy(s);
}

static void test_policy_change_between_steps(void **st)
{
    (void)st;
    as_store *s = mk("default=keep", false, 0);
    float *x = randv(2048), *y = malloc(2048 * sizeof *y);
    as_tensor t = t2(x, AS_F32, 32, 64), d = t2(y, AS_F32, 32, 64);
    as_save_info i = info(AS_KIND_ACTIVATION_OUTPUT, "blk.0");
    as_handle a, b, c;
    assert_int_equal(as_store_save(s, &i, &t, &a), 0);
    char err[128];
    assert_int_equal(as_store_set_policy(s, "default=zstd:3", err, sizeof err), 0);
    assert_int_equal(as_store_save(s, &i, &t, &b), 0);
    assert_int_equal(as_store_set_policy(s, "default=q8:g=64", err, sizeof err), 0);
    assert_int_equal(as_store_save(s, &i, &t, &c), 0);
    /* a bad spec changes nothing */
    assert_int_equal(as_store_set_policy(s, "default=zstd:99", err, sizeof err), AS_ESPEC);
    assert_contains(err, "offset 13");
    assert_contains(as_store_last_error(s), "set_policy");
    assert_string_equal(as_store_policy_of(s, a), "keep");
    assert_string_equal(as_store_policy_of(s, b), "zstd:3");
    assert_string_equal(as_store_policy_of(s, c), "q8:g=64");
    as_store_stats st2 = stats(s);
    assert_string_equal(st2.spec, "default=q8:g=64");
    assert_string_equal(layer_of(&st2, "blk.0")->policy, "q8:g=64");
    as_store_stats_free(&st2);
    /* old items keep their policy (and its parameters) after the change */
    assert_int_equal(as_store_restore(s, a, &d), 0);
    assert_memory_equal(x, y, 2048 * sizeof *x);
    assert_int_equal(as_store_restore(s, b, &d), 0);
    assert_memory_equal(x, y, 2048 * sizeof *x);
    assert_int_equal(as_store_restore(s, c, &d), 0);
    for (int k = 0; k < 2048; k++)
        assert_true(fabsf(x[k] - y[k]) <= 2.0f / 255.0f * 1.001f);
    as_store_release(s, a);
    as_store_release(s, b);
    as_store_release(s, c);
    free(x);
    free(y);
    as_store_destroy(s);
}

/* ---- fallbacks and strict mode ----------------------------------------- */

static void test_fallback_counted(void **st)
{
    (void)st;
    as_store *s = mk("default=fp16; layer:emb.*=q4|zstd", false, 0);
    int32_t ids[64];
    for (int k = 0; k < 64; k++)
        ids[k] = (int32_t)rnd();
    as_tensor t = t2(ids, AS_I32, 8, 8);
    as_save_info i = info(AS_KIND_INDEX, "tok");
    as_handle h1, h2, h3;
    assert_int_equal(as_store_save(s, &i, &t, &h1), 0);
    assert_contains(as_store_policy_of(s, h1), "keep (fallback from fp16: dtype i32");
    i.layer = "emb.tok";
    assert_int_equal(as_store_save(s, &i, &t, &h2), 0);
    assert_contains(as_store_policy_of(s, h2), "zstd (fallback from q4:");
    assert_int_equal(as_store_save(s, &i, &t, &h3), 0);
    int32_t back[64];
    as_tensor d = t2(back, AS_I32, 8, 8);
    assert_int_equal(as_store_restore(s, h2, &d), 0);
    assert_memory_equal(back, ids, sizeof ids);
    assert_int_equal(as_store_restore(s, h1, &d), 0);
    assert_memory_equal(back, ids, sizeof ids);
    as_store_stats a = stats(s);
    assert_int_equal(a.total.fallbacks, 3);
    assert_int_equal(a.kinds[AS_KIND_INDEX].fallbacks, 3);
    const as_store_layer_stats *lt = layer_of(&a, "tok"), *le = layer_of(&a, "emb.tok");
    assert_int_equal(lt->c.fallbacks, 1);
    assert_int_equal(le->c.fallbacks, 2);
    assert_contains(lt->last_fallback, "fp16: dtype i32");
    assert_contains(le->last_fallback, "q4: dtype i32");
    /* the fallback is charged to the policy that did not apply */
    bool seen = false;
    for (size_t k = 0; k < a.npolicies; k++)
        if (!strcmp(a.policies[k].name, "q4")) {
            assert_int_equal(a.policies[k].c.fallbacks, 2);
            seen = true;
        }
    assert_true(seen);
    as_store_stats_free(&a);
    as_store_destroy(s);
}

/* Training figures: the latest value per name, with the step and a count;
 * names checked; at most AS_STORE_METRICS_MAX of them. */
static void test_report_metric(void **st)
{
    (void)st;
    as_store *s = mk("default=keep", false, 0);
    assert_int_equal(as_store_report_metric(NULL, "x", 1), AS_EINVAL);
    assert_int_equal(as_store_report_metric(s, NULL, 1), AS_EINVAL);
    assert_int_equal(as_store_report_metric(s, "", 1), AS_EINVAL);
    assert_int_equal(as_store_report_metric(s, "Loss", 1), AS_EINVAL);
    assert_int_equal(as_store_report_metric(s, "a b", 1), AS_EINVAL);
    assert_int_equal(as_store_report_metric(s, "a23456789012345678901234567890123", 1),
                     AS_EINVAL);
    as_store_step_begin(s, 7);
    assert_int_equal(as_store_report_metric(s, "grad_cosine", 0.99), 0);
    as_store_step_begin(s, 8);
    assert_int_equal(as_store_report_metric(s, "grad_cosine", 0.97), 0);
    assert_int_equal(as_store_report_metric(s, "train_loss", 2.5), 0);
    char name[16];
    for (int i = 2; i < AS_STORE_METRICS_MAX; i++) {
        snprintf(name, sizeof name, "m%d", i);
        assert_int_equal(as_store_report_metric(s, name, i), 0);
    }
    assert_int_equal(as_store_report_metric(s, "one_too_many", 1), AS_ERANGE);
    assert_contains(as_store_last_error(s), "one_too_many");
    assert_int_equal(as_store_report_metric(s, "m2", 20), 0);   /* known: fine */
    as_store_stats sst;
    assert_int_equal(as_store_stats_take(s, &sst), 0);
    assert_int_equal(sst.nmetrics, AS_STORE_METRICS_MAX);
    assert_string_equal(sst.metrics[0].name, "grad_cosine");
    assert_true(sst.metrics[0].value == 0.97);
    assert_int_equal(sst.metrics[0].step, 8);
    assert_int_equal(sst.metrics[0].count, 2);
    assert_string_equal(sst.metrics[2].name, "m2");
    assert_true(sst.metrics[2].value == 20);
    as_store_stats_free(&sst);
    as_store_destroy(s);
}

static void test_strict_mode(void **st)
{
    (void)st;
    as_store *s = mk("default=fp16", true, 0);
    uint8_t u[100] = {1};
    as_tensor t = t2(u, AS_U8, 10, 10);
    as_save_info i = info(AS_KIND_DROPOUT_MASK, "drop1");
    as_handle h;
    assert_int_equal(as_store_save(s, &i, &t, &h), AS_EFALLBACK);
    assert_true(as_handle_is_null(h));
    assert_contains(as_store_last_error(s), "drop1");
    assert_contains(as_store_last_error(s), "fp16");
    assert_contains(as_store_last_error(s), "strict");
    /* usable afterwards: f32 works, and nothing leaked */
    float f[100] = {0.5f};
    as_tensor tf = t2(f, AS_F32, 10, 10);
    assert_int_equal(as_store_save(s, &i, &tf, &h), 0);
    assert_string_equal(as_store_policy_of(s, h), "fp16");
    as_store_stats a = stats(s);
    assert_int_equal(a.total.saves, 1);
    assert_int_equal(a.total.raw_live, 400);
    assert_int_equal(a.live_handles, 1);
    as_store_stats_free(&a);
    assert_int_equal(as_store_release(s, h), 0);
    assert_int_equal(arena_tag(s, AS_TAG_SAVED).live_requested, 0);
    as_store_destroy(s);
}

static void test_budget_keeps_store_usable(void **st)
{
    (void)st;
    as_store *s = mk("default=keep; layer:z.*=zstd", false, 1u << 20);
    size_t n = (2u << 20) / sizeof(float);
    float *x = randv(n);
    as_tensor big = t2(x, AS_F32, (int64_t)n / 256, 256);
    as_save_info i = info(AS_KIND_GENERIC, "big");
    as_handle h;
    for (int k = 0; k < 3; k++) {
        assert_int_equal(as_store_save(s, &i, &big, &h), AS_EBUDGET);
        assert_true(as_handle_is_null(h));
        assert_contains(as_store_last_error(s), "budget");
        assert_contains(as_store_last_error(s), "big");
    }
    i.layer = "z.big";   /* random floats do not shrink: over budget too */
    assert_int_equal(as_store_save(s, &i, &big, &h), AS_EBUDGET);
    expect_nothing_live(s);
    assert_int_equal(arena_tag(s, AS_TAG_SAVED).live_requested, 0);
    /* smaller saves still work, up to the budget */
    as_tensor small = t2(x, AS_F32, 256, 256);   /* 256 KiB */
    as_handle hs[3];
    i.layer = "small";
    for (int k = 0; k < 3; k++)
        assert_int_equal(as_store_save(s, &i, &small, &hs[k]), 0);
    float *y = malloc(256 * 256 * sizeof *y);
    as_tensor d = t2(y, AS_F32, 256, 256);
    assert_int_equal(as_store_restore(s, hs[2], &d), 0);
    assert_memory_equal(y, x, 256 * 256 * sizeof *y);
    for (int k = 0; k < 3; k++)
        assert_int_equal(as_store_release(s, hs[k]), 0);
    free(x);
    free(y);
    as_store_destroy(s);
}

typedef struct tctx {
    as_store *s;
    int       id;
    const float *shared;
    as_handle    shared_h[8];
    int          errors;
    char         msg[256];
} tctx;

static void *worker(void *arg)
{
    tctx *c = arg;
    static const char *const layers[] = {"a.keep", "b.zstd", "c.q8", "d.fp16"};
    uint64_t seed = 0x1234567ull * (uint64_t)(c->id + 1);
    enum { MAXN = 4096 };
    float *x = malloc(MAXN * sizeof *x), *y = malloc(MAXN * sizeof *y);
    for (int it = 0; it < 400 && !c->errors; it++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        int64_t rows = 1 + (int64_t)((seed >> 33) % 16), cols = 256;
        for (int64_t k = 0; k < rows * cols; k++)
            x[k] = (float)((int64_t)(k * 7 + it * 13 + c->id) % 101) / 101.0f;
        as_save_info i = {.kind = AS_KIND_ACTIVATION_OUTPUT,
                          .layer = layers[(it + c->id) % 4]};
        as_tensor t = t2(x, AS_F32, rows, cols), d = t2(y, AS_F32, rows, cols);
        as_handle h;
        int rc = as_store_save(c->s, &i, &t, &h);
        if (rc == 0)
            rc = as_store_restore(c->s, h, &d);
        if (rc == 0) {
            float tol = i.layer[0] == 'c' ? 1.0f / 255 * 1.01f : i.layer[0] == 'd' ? 1e-3f : 0;
            for (int64_t k = 0; k < rows * cols; k++)
                if (fabsf(x[k] - y[k]) > tol) {
                    snprintf(c->msg, sizeof c->msg, "thread %d: %s value %lld: %g vs %g",
                             c->id, i.layer, (long long)k, x[k], y[k]);
                    c->errors++;
                    break;
                }
        }
        /* read the shared items too, concurrently with everyone */
        const as_tensor *v;
        if (rc == 0)
            rc = as_store_restore_view(c->s, c->shared_h[it % 8], &v);
        if (rc == 0 && memcmp(v->data, c->shared + (it % 8) * 1024, 1024 * sizeof(float)))
            rc = AS_ECORRUPT;
        if (rc == 0)
            rc = as_store_release(c->s, h);
        if (rc != 0 && !c->errors) {
            snprintf(c->msg, sizeof c->msg, "thread %d: %s: %s", c->id, as_strerror(rc),
                     as_store_last_error(c->s));
            c->errors++;
        }
    }
    free(x);
    free(y);
    return NULL;
}

/* A reader taking snapshots while the workers run (the service does this
 * at 10 Hz): counters only grow, live handles stay in range. */
typedef struct snap_ctx {
    as_store    *s;
    _Atomic bool stop;
    int          snaps, errors;
} snap_ctx;

static void *snapper(void *arg)
{
    snap_ctx *c = arg;
    uint64_t last_saves = 0;
    while (!atomic_load(&c->stop)) {
        as_store_stats a;
        if (as_store_stats_take(c->s, &a) != 0) {
            c->errors++;
            break;
        }
        if (a.total.saves < last_saves || a.live_handles > 8 + 4 ||
            a.total.stored_peak < a.total.stored_live)
            c->errors++;
        last_saves = a.total.saves;
        for (size_t k = 0; k < a.nlayers; k++)
            if (!a.layers[k].name || !a.layers[k].name[0])
                c->errors++;
        as_store_stats_free(&a);
        c->snaps++;
    }
    return NULL;
}

static void test_threads(void **st)
{
    (void)st;
    as_store *s = mk("default=keep; layer:b.*=zstd; layer:c.*=q8; layer:d.*=fp16; "
                     "layer:shared.*=zstd", false, 0);
    float *shared = randv(8 * 1024);
    as_handle sh[8];
    for (int k = 0; k < 8; k++) {
        as_tensor t = t2(shared + k * 1024, AS_F32, 4, 256);
        as_save_info i = info(AS_KIND_GENERIC, k % 2 ? "shared.z" : "shared_keep");
        assert_int_equal(as_store_save(s, &i, &t, &sh[k]), 0);
    }
    tctx c[4];
    pthread_t th[4], sn;
    snap_ctx sc = {.s = s};
    assert_int_equal(pthread_create(&sn, NULL, snapper, &sc), 0);
    for (int k = 0; k < 4; k++) {
        c[k] = (tctx){.s = s, .id = k, .shared = shared};
        memcpy(c[k].shared_h, sh, sizeof sh);
        assert_int_equal(pthread_create(&th[k], NULL, worker, &c[k]), 0);
    }
    for (int k = 0; k < 4; k++)
        pthread_join(th[k], NULL);
    atomic_store(&sc.stop, true);
    pthread_join(sn, NULL);
    for (int k = 0; k < 4; k++)
        if (c[k].errors)
            fail_msg("%s", c[k].msg);
    assert_int_equal(sc.errors, 0);
    assert_true(sc.snaps > 0);
    as_store_stats a = stats(s);
    assert_int_equal(a.total.saves, 8 + 4 * 400);
    assert_int_equal(a.total.releases, 4 * 400);
    assert_int_equal(a.live_handles, 8);
    assert_int_equal(a.total.raw_live, 8 * 1024 * sizeof(float));
    as_store_stats_free(&a);
    for (int k = 0; k < 8; k++)
        assert_int_equal(as_store_release(s, sh[k]), 0);
    a = stats(s);
    assert_int_equal(a.total.stored_live, 0);
    as_store_stats_free(&a);
    as_store_phase(s, AS_PHASE_FORWARD);
    assert_int_equal(arena_tag(s, AS_TAG_SAVED).live_requested, 0);
    free(shared);
    as_store_destroy(s);
}

/* ---- accounting ----------------------------------------------------------- */

static void test_accounting_matches_allocator(void **st)
{
    (void)st;
    as_store *s = mk("default=keep; layer:z=zstd; layer:q=q4:g=32; layer:h=bf16; "
                     "layer:off=offload", false, 0);
    static const char *const names[] = {"k", "z", "q", "h", "off"};
    enum { NL = 5, PER = 6 };
    as_handle h[NL * PER];
    uint64_t raw = 0;
    for (int l = 0; l < NL; l++)
        for (int k = 0; k < PER; k++) {
            int64_t rows = 3 + k * 5;
            size_t n = (size_t)rows * 128;
            float *x = randv(n);
            for (size_t j = 0; j < n; j += 2)
                x[j] = 0;   /* some zeros for zstd */
            as_tensor t = t2(x, AS_F32, rows, 128);
            as_save_info i = info(k % 2 ? AS_KIND_CONV_INPUT : AS_KIND_NORM_INPUT, names[l]);
            assert_int_equal(as_store_save(s, &i, &t, &h[l * PER + k]), 0);
            raw += n * sizeof(float);
            free(x);
        }
    as__offload_wait_idle();   /* staging freed: offload holds nothing */
    {
        as_store_stats a = stats(s);
        as_arena_flush_thread_cache(as_store_arena(s));
        as_arena_snapshot sn;
        assert_int_equal(as_arena_snapshot_take(as_store_arena(s), 0, &sn), 0);
        assert_int_equal(a.total.raw_live, raw);
        assert_int_equal(a.total.stored_live, sn.tags[AS_TAG_SAVED].live_requested);
        assert_true(a.total.stored_live < raw);
        uint64_t kinds = 0, pols = 0, lays = 0;
        for (int k = 0; k < AS_KIND_COUNT; k++)
            kinds += a.kinds[k].stored_live;
        for (size_t k = 0; k < a.npolicies; k++)
            pols += a.policies[k].c.stored_live;
        for (size_t k = 0; k < a.nlayers; k++) {
            lays += a.layers[k].c.stored_live;
            /* the arena's per-layer bytes (all tags) are the store's: no
             * workspace is attributed to a layer outside a restore */
            for (size_t j = 0; j < sn.nlayers; j++)
                if (sn.layer_names[j] && !strcmp(sn.layer_names[j], a.layers[k].name))
                    assert_int_equal(sn.layers[j].live_requested, a.layers[k].c.stored_live);
            assert_int_equal(a.layers[k].c.saves, PER);
            assert_true(a.layers[k].c.stored_peak >= a.layers[k].c.stored_live);
            assert_int_equal(a.layers[k].c.raw_live, raw / NL);
        }
        assert_int_equal(kinds, a.total.stored_live);
        assert_int_equal(pols, a.total.stored_live);
        assert_int_equal(lays, a.total.stored_live);
        assert_int_equal(layer_of(&a, "off")->c.stored_live, 0);
        assert_true(layer_of(&a, "off")->c.stored_peak > 0);   /* staging was held */
        assert_true(a.total.encode_ns > 0);
        as_arena_snapshot_free(&sn);
        as_store_stats_free(&a);
    }
    /* restores add decode time and counts, not bytes */
    float *y = malloc(33 * 128 * sizeof *y);
    for (int k = 0; k < NL * PER; k++) {
        as_tensor sh;
        assert_int_equal(as_store_describe(s, h[k], &sh, NULL), 0);
        sh.data = y;
        assert_int_equal(as_store_restore(s, h[k], &sh), 0);
    }
    as_store_stats a = stats(s);
    assert_int_equal(a.total.restores, NL * PER);
    assert_true(a.total.decode_ns > 0);
    uint64_t peak = a.total.stored_peak;
    as_store_stats_free(&a);
    for (int k = 0; k < NL * PER; k++)
        assert_int_equal(as_store_release(s, h[k]), 0);
    a = stats(s);
    assert_int_equal(a.total.stored_live, 0);
    assert_int_equal(a.total.raw_live, 0);
    assert_int_equal(a.total.stored_peak, peak);
    as_store_stats_free(&a);
    as_store_reset_peaks(s);
    a = stats(s);
    assert_int_equal(a.total.stored_peak, 0);
    assert_int_equal(a.total.raw_peak, 0);
    as_store_stats_free(&a);
    assert_int_equal(arena_tag(s, AS_TAG_SAVED).live_requested, 0);
    free(y);
    as_store_destroy(s);
}

AS_TEST_MAIN(NULL, NULL,
             cmocka_unit_test(test_keep_round_trip),
             cmocka_unit_test(test_restore_shape_errors),
             cmocka_unit_test(test_view_survives_replan),
             cmocka_unit_test(test_handle_misuse),
             cmocka_unit_test(test_adopt_zero_copy),
             cmocka_unit_test(test_debug_checksum),
             cmocka_unit_test(test_step_reset),
             cmocka_unit_test(test_no_grad),
             cmocka_unit_test(test_policy_change_between_steps),
             cmocka_unit_test(test_fallback_counted),
             cmocka_unit_test(test_strict_mode),
             cmocka_unit_test(test_report_metric),
             cmocka_unit_test(test_budget_keeps_store_usable),
             cmocka_unit_test(test_threads),
             cmocka_unit_test(test_accounting_matches_allocator))

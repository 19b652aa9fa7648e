/*
 * Allocation-failure injection (SQLite's loop, as tests/test_fault.c) on a
 * fresh store per run, so first-use state is reached too: the regenerators
 * (conv inversion: the factor built at the first restore, the frame, the
 * solve's work space, the dependency; recompute and derive: their state
 * and the dependency's decode), the softmax codecs' restore, restore_rows,
 * restore_view and backward, the activation codecs (sign, fewbit's
 * histogram, act_backward), bitpack, aq, and zstd's work set at a rule's
 * first use. For N = 1, 2, ... the Nth allocation (arena blocks, the
 * store's records and plain work buffers) fails, then every one from the
 * Nth on: AS_ENOMEM or a success, never a crash; the arena's live bytes as
 * before the call (plus what a successful call keeps by design: the factor
 * cache, zstd's pooled work set); and the item still restores to the same
 * values.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jemalloc/jemalloc.h>

#include "actstore/store.h"
#include "layers/ops.h"
#include "store/store_internal.h"
#include "tests/support/store_util.h"

static uint64_t live(as_store *s) { return store_live(s); }

/* Bytes this thread holds from jemalloc (allocated - freed): plain mallocs
 * too, which the arena's live bytes do not see. jemalloc is the process's
 * malloc except under a sanitizer (its leak check covers that build). */
static int64_t thread_held(void)
{
    static uint64_t *got, *gave;
    size_t sz = sizeof got;
    if (!got && (mallctl("thread.allocatedp", &got, &sz, NULL, 0) ||
                 mallctl("thread.deallocatedp", &gave, &sz, NULL, 0)))
        got = NULL;
    return got && gave ? (int64_t)(*got - *gave) : 0;
}

/* A fresh store and what it decoded are gone at its destroy: nothing the
 * faulted call took stays behind, in the arena or out of it. */
static void assert_nothing_held(int64_t before, const char *spec, const char *what, long n)
{
    int64_t now = thread_held();
    if (now != before)
        fail_msg("%s %s, allocation %ld failing: %lld bytes still held after the "
                 "store's destroy", spec, what, n, (long long)(now - before));
}

/* ---- one saved item and the calls that decode it ------------------------ */

enum { CALL_RESTORE, CALL_ROWS, CALL_VIEW, CALL_BACKWARD, NCALL };
static const char *const call_name[NCALL] = {"restore", "restore_rows", "restore_view",
                                              "backward"};

typedef struct item {
    as_store *s;
    as_handle h;
    as_tensor shape;
    float    *got, *dy;
    size_t    n;
    bool      softmax;
    bool      act;          /* an activation: act_backward applies */
    bool      no_rows;      /* not f32: restore_rows does not apply */
    bool      pools;        /* the rule pools work memory (zstd): a failed
                               save may leave it, and it goes with the rule */
    const char *want;       /* the policy the save must get */
    const char *kept_want;  /* and the kept item then (NULL: not checked) */
    float    *w, *b, *y;    /* conv: weights, bias, output */
    /* the save the item was made by (setup only: not done yet) */
    as_save_info info;
    as_tensor    src;       /* data: x, owned */
    /* stored before that save: must survive its failure */
    as_handle    kept_h;
    float       *kept;
    size_t       kept_n;
} item;

static int call(item *it, int c)
{
    switch (c) {
    case CALL_ROWS:
        return as_store_restore_rows(it->s, it->h, 2, 5, it->got);
    case CALL_VIEW: {
        const as_tensor *v;
        int rc = as_store_restore_view(it->s, it->h, &v);
        if (rc == 0)
            memcpy(it->got, v->data, it->n * sizeof(float));
        as__mat_drop_all(it->s, true);
        return rc;
    }
    case CALL_BACKWARD:
        return it->softmax ? as_store_softmax_backward(it->s, it->h, it->dy, it->got)
               : it->act   ? as_store_act_backward(it->s, it->h, it->dy, it->got)
                           : AS_ENOTSUP;
    default: {
        as_tensor d = it->shape;
        d.data = it->got;
        return as_store_restore(it->s, it->h, &d);
    }
    }
}

/* Whether call c applies to the item. */
static bool applies(const item *it, int c)
{
    return c == CALL_BACKWARD ? it->softmax || it->act : c != CALL_ROWS || !it->no_rows;
}

static void item_free(item *it)
{
    as_store_destroy(it->s);
    free(it->dy), free(it->w), free(it->b), free(it->y);   /* got: the caller's */
    free(it->src.data), free(it->kept);
    memset(it, 0, sizeof *it);
}

static as_store *mk(const char *spec)
{
    as_store_config cfg = {.policy = spec, .strict = true};
    as_store *s = NULL;
    char err[256] = "";
    if (as_store_create(&cfg, &s, err, sizeof err))
        fail_msg("%s: %s", spec, err);
    return s;
}

static float urand(uint32_t *h)
{
    *h ^= *h << 13, *h ^= *h >> 17, *h ^= *h << 5;
    return (float)(*h % 20001) * 1e-4f - 1.0f;
}

/* x (2, 3, 8, 8) under invert, its conv output (2, 6, 8, 8) kept (and
 * the item stored before): everything but the save of x. */
static void setup_conv(item *it, const char *spec)
{
    enum { CN = 2, CI = 3, CO = 6, H = 8, K = 3 };
    memset(it, 0, sizeof *it);
    it->s = mk(spec);
    as_op_conv_geom g = {.N = CN, .Cin = CI, .H = H, .W = H, .Cout = CO, .kh = K, .kw = K,
                         .stride = 1, .pad = 1};
    assert_int_equal(as_op_conv_geom_init(&g), 0);
    uint32_t h = 77;
    it->n = (size_t)CN * CI * H * H;
    size_t ny = (size_t)CN * CO * g.Ho * g.Wo;
    float *x = malloc(sizeof(float) * it->n);
    float *ws = malloc(sizeof(float) * (as_op_conv_workspace(&g) + 1));
    it->w = malloc(sizeof(float) * CO * CI * K * K);
    it->b = malloc(sizeof(float) * CO);
    it->y = malloc(sizeof(float) * ny);
    for (size_t i = 0; i < (size_t)CO * CI * K * K; i++)
        it->w[i] = urand(&h) * 0.4f + (i % (CI * K * K + 1) == 0 ? 1.0f : 0.0f);
    for (size_t i = 0; i < CO; i++)
        it->b[i] = urand(&h) * 0.1f;
    for (size_t i = 0; i < it->n; i++)
        x[i] = urand(&h);
    as_op_conv_fwd(&g, x, it->w, it->b, it->y, ws);
    free(ws);
    as_save_info oi = {.kind = AS_KIND_CONV_OUTPUT, .layer = "conv"};
    as_tensor yt = {.data = it->y, .dtype = AS_F32, .ndim = 4, .shape = {CN, CO, g.Ho, g.Wo}};
    assert_int_equal(as_store_save(it->s, &oi, &yt, &it->kept_h), 0);
    it->kept_n = ny;
    it->kept = malloc(sizeof(float) * ny);
    memcpy(it->kept, it->y, sizeof(float) * ny);
    it->info = (as_save_info){.kind = AS_KIND_CONV_INPUT, .layer = "conv"};
    it->info.meta.conv = (as_conv_meta){.n = CN, .cin = CI, .h = H, .w = H, .cout = CO,
                                        .kh = K, .kw = K, .pad_h = 1, .pad_w = 1,
                                        .weight = it->w, .bias = it->b,
                                        .weight_version = 1, .output = it->kept_h};
    it->shape = (as_tensor){.dtype = AS_F32, .ndim = 4, .shape = {CN, CI, H, H}};
    it->src = it->shape;
    it->src.data = x;
    it->want = "invert";
}

/* n values saved under layer "kept" (keep) before the item: the item's
 * save must not lose them, and regenerators depend on them. */
static void keep_generic(item *it, size_t n, uint32_t *h)
{
    it->kept_n = n;
    it->kept = malloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++)
        it->kept[i] = urand(h);
    as_save_info ki = {.kind = AS_KIND_GENERIC, .layer = "kept"};
    as_tensor kt = {.data = it->kept, .dtype = AS_F32, .ndim = 1, .shape = {(int64_t)n}};
    assert_int_equal(as_store_save(it->s, &ki, &kt, &it->kept_h), 0);
}

/* (4, 16, 32) softmax rows, 16 queries per block, after a kept tensor. */
static void setup_softmax(item *it, const char *spec)
{
    enum { B = 4, Q = 16, L = 32 };
    memset(it, 0, sizeof *it);
    it->s = mk(spec);
    it->softmax = true;
    it->n = (size_t)B * Q * L;
    float *x = malloc(sizeof(float) * it->n);
    uint32_t h = 99;
    for (size_t r = 0; r < (size_t)B * Q; r++) {
        double sum = 0;
        for (size_t c = 0; c < L; c++)
            sum += x[r * L + c] = expf(3.0f * urand(&h));
        for (size_t c = 0; c < L; c++)
            x[r * L + c] = (float)(x[r * L + c] / sum);
    }
    keep_generic(it, 1000, &h);
    it->info = (as_save_info){.kind = AS_KIND_SOFTMAX_OUTPUT, .layer = "attn"};
    it->info.meta.softmax = (as_softmax_meta){.row_len = L, .queries = Q};
    it->shape = (as_tensor){.dtype = AS_F32, .ndim = 3, .shape = {B, Q, L}};
    it->src = it->shape;
    it->src.data = x;
    it->want = "so";                              /* soa, solog, sotk */
}

/* (64, 40) values of kind kind in layer "x" (spec: "layer:x=POLICY;
 * layer:kept=keep; ..."), after a kept tensor; act: fn is its activation. */
static void setup_plain(item *it, const char *spec, int kind, int fn, const char *want)
{
    memset(it, 0, sizeof *it);
    it->s = mk(spec);
    uint32_t h = 31;
    it->n = 64 * 40;
    keep_generic(it, it->n, &h);
    float *x = malloc(sizeof(float) * it->n);
    for (size_t i = 0; i < it->n; i++)
        x[i] = 3.0f * urand(&h);
    it->info = (as_save_info){.kind = kind, .layer = "x"};
    it->act = kind == AS_KIND_ACTIVATION_INPUT || kind == AS_KIND_ACTIVATION_OUTPUT;
    if (it->act) {
        it->info.meta.act = (as_elementwise){.fn = fn};
        for (size_t i = 0; fn == AS_FN_RELU && i < it->n; i++)
            x[i] = x[i] > 0 ? x[i] : 0.0f;          /* a ReLU output */
    }
    it->shape = (as_tensor){.dtype = AS_F32, .ndim = 2, .shape = {64, 40}};
    it->src = it->shape;
    it->src.data = x;
    it->want = want;
}

static void setup_fewbit(item *it, const char *spec)
{
    setup_plain(it, spec, AS_KIND_ACTIVATION_INPUT, AS_FN_GELU, "fewbit");
}

static void setup_sign(item *it, const char *spec)
{
    setup_plain(it, spec, AS_KIND_ACTIVATION_OUTPUT, AS_FN_RELU, "sign");
}

static void setup_aq(item *it, const char *spec)
{
    setup_plain(it, spec, AS_KIND_GENERIC, 0, "aq");
}

static void setup_zstd(item *it, const char *spec)
{
    setup_plain(it, spec, AS_KIND_GENERIC, 0, "zstd");
    it->pools = true;
}

/* i32 indices in [100, 1100): bitpack (10 bits each). */
static void setup_bitpack(item *it, const char *spec)
{
    setup_plain(it, spec, AS_KIND_INDEX, 0, "bitpack");
    uint32_t h = 5;
    int32_t *v = it->src.data;                   /* 4 bytes a value, as floats */
    for (size_t i = 0; i < it->n; i++)
        v[i] = 100 + (int32_t)(urand(&h) * 500.0f + 500.0f);
    it->shape.dtype = it->src.dtype = AS_I32;
    it->no_rows = true;
}

/* out = 2 * in[0] */
static int cb_double(void *ud, const as_tensor *const *in, size_t nin, as_tensor *out)
{
    (void)ud, (void)nin;
    const float *a = in[0]->data;
    float *o = out->data;
    for (int64_t k = 0, n = as_tensor_numel(out); k < n; k++)
        o[k] = 2.0f * a[k];
    return 0;
}

/* The item is 2 * kept, rebuilt by a callback on the restored kept tensor. */
static void setup_recompute(item *it, const char *spec)
{
    setup_plain(it, spec, AS_KIND_GENERIC, 0, "recompute");
    float *x = it->src.data;
    for (size_t i = 0; i < it->n; i++)
        x[i] = 2.0f * it->kept[i];
    it->info.recompute = cb_double;
    it->info.recompute_inputs = &it->kept_h;
    it->info.recompute_ninputs = 1;
}

/* The item is leaky_relu(kept), derived from it. */
static void setup_derive(item *it, const char *spec)
{
    setup_plain(it, spec, AS_KIND_GENERIC, 0, "derive");
    float *x = it->src.data;
    for (size_t i = 0; i < it->n; i++)
        x[i] = it->kept[i] >= 0 ? it->kept[i] : 0.125f * it->kept[i];
    it->info.source = it->kept_h;
    it->info.source_fn = (as_elementwise){.fn = AS_FN_LEAKY_RELU, .alpha = 0.125f};
}

/* The item is leaky_relu(kept) with the kept tensor under inverse (held
 * by its fallback until then): the item's save makes it rebuilt from the
 * item (alpha a power of two: exact). */
static void setup_inverse(item *it, const char *spec)
{
    setup_derive(it, spec);
    it->want = "keep";
    it->kept_want = "inverse";
}

typedef void (*setup_fn)(item *, const char *);

/* setup, then the item's save, which must get the policy asked for. */
static void save_item(item *it, setup_fn setup, const char *spec)
{
    setup(it, spec);
    if (as_store_save(it->s, &it->info, &it->src, &it->h))
        fail_msg("%s save: %s", spec, as_store_last_error(it->s));
    const char *pol = as_store_policy_of(it->s, it->h);
    if (!strstr(pol, it->want))
        fail_msg("%s: saved as %s, not %s", spec, pol, it->want);
    pol = it->kept_want ? as_store_policy_of(it->s, it->kept_h) : "";
    if (it->kept_want && strncmp(pol, it->kept_want, strlen(it->kept_want)))
        fail_msg("%s: the kept item is %s after the save, not %s", spec, pol, it->kept_want);
}

/* ---- the loop ------------------------------------------------------------- */

/* A fresh item from setup and its save, FORWARD phase (no cache of regenerated
 * tensors), decoding into got. */
static void fresh(item *it, setup_fn setup, const char *spec, float *got)
{
    save_item(it, setup, spec);
    as_store_phase(it->s, AS_PHASE_FORWARD);
    it->got = got;
    it->dy = malloc(sizeof(float) * it->n);
    assert_non_null(it->dy);
    for (size_t i = 0; i < it->n; i++)
        it->dy[i] = (float)(i % 9) - 4.0f;
}

/* Run call c with the nth allocation failing (sticky: and all after it) on
 * a fresh item; returns whether the failure was reached. */
static bool once(setup_fn setup, const char *spec, int c, long n, bool sticky, int *nfail)
{
    item it;
    fresh(&it, setup, spec, NULL);
    float *ref = malloc(sizeof(float) * it.n), *got = malloc(sizeof(float) * it.n);
    it.got = ref;
    uint64_t base = live(it.s);
    if (call(&it, c))                           /* reference, on a twin item */
        fail_msg("%s %s: %s", spec, call_name[c], as_store_last_error(it.s));
    uint64_t after_ok = live(it.s);             /* what a success keeps (cache) */
    item_free(&it);

    int64_t held = thread_held();
    fresh(&it, setup, spec, got);
    size_t cmp = c == CALL_ROWS ? 5 * (size_t)it.shape.shape[it.shape.ndim - 1] : it.n;
    as_arena *a = as_store_arena(it.s);
    as__arena_fault_set(a, n, sticky);
    int rc = call(&it, c);
    bool reached = sticky ? as__arena_fault_left(a) == 1 : as__arena_fault_left(a) == 0;
    as__arena_fault_set(a, 0, false);
    if (rc && rc != AS_ENOMEM)
        fail_msg("%s %s, allocation %ld failing: %s (%s)", spec, call_name[c], n,
                 as_strerror(rc), as_store_last_error(it.s));
    *nfail += rc != 0;
    if (rc == 0)
        assert_memory_equal(got, ref, cmp * sizeof(float));
    uint64_t now = live(it.s);
    if (now != base && !(rc == 0 && now == after_ok))
        fail_msg("%s %s, allocation %ld failing (rc %d): live %llu, was %llu", spec,
                 call_name[c], n, rc, (unsigned long long)now, (unsigned long long)base);
    if (call(&it, c))                           /* nothing lost */
        fail_msg("%s %s after a failure: %s", spec, call_name[c], as_store_last_error(it.s));
    assert_memory_equal(got, ref, cmp * sizeof(float));
    item_free(&it);
    assert_nothing_held(held, spec, call_name[c], n);
    free(ref);
    free(got);
    return reached;
}

static void loop(setup_fn setup, const char *spec, int c)
{
    int nfail = 0;
    long n = 1;
    while (once(setup, spec, c, n, false, &nfail))
        n++;
    long allocs = n - 1;
    for (long k = 1; k <= allocs; k++)
        once(setup, spec, c, k, true, &nfail);
    fprintf(stderr, "%-36s %-12s %ld allocations, %d failures returned\n", spec,
            call_name[c], allocs, nfail);
}

/* ---- save, release and step_end ---------------------------------------- */

/* Restore the item stored before into a buffer of its shape: bit for bit. */
static void assert_kept(item *it, const as_tensor *kshape)
{
    float *k = malloc(sizeof(float) * it->kept_n);
    as_tensor d = *kshape;
    d.data = k;
    if (as_store_restore(it->s, it->kept_h, &d))
        fail_msg("kept item: %s", as_store_last_error(it->s));
    assert_memory_equal(k, it->kept, sizeof(float) * it->kept_n);
    free(k);
}

static as_tensor kept_shape(const item *it)
{
    if (!it->w)                                 /* not conv: keep_generic's */
        return (as_tensor){.dtype = AS_F32, .ndim = 1, .shape = {(int64_t)it->kept_n}};
    const as_conv_meta *m = &it->info.meta.conv;
    return (as_tensor){.dtype = AS_F32, .ndim = 4, .shape = {m->n, m->cout, m->h, m->w}};
}

/* The save of the item with the nth allocation failing (sticky: and all
 * after it), on a fresh store: AS_ENOMEM and nothing held, or a success
 * that restores like a twin's; the item stored before intact, and the
 * store still saving. Returns whether the failure was reached. */
static bool save_once(setup_fn setup, const char *spec, long n,
                      bool sticky, int *nfail)
{
    item it;
    setup(&it, spec);                           /* reference, on a twin store */
    uint64_t twin_base = live(it.s);
    assert_int_equal(as_store_save(it.s, &it.info, &it.src, &it.h), 0);
    float *ref = malloc(sizeof(float) * it.n), *got = malloc(sizeof(float) * it.n);
    it.got = ref;
    assert_int_equal(call(&it, CALL_RESTORE), 0);
    assert_int_equal(as_store_release(it.s, it.h), 0);
    uint64_t pooled = live(it.s) - twin_base;   /* what the rule keeps after a save */
    item_free(&it);

    int64_t held = thread_held();
    setup(&it, spec);
    as_tensor ks = kept_shape(&it);
    as_arena *a = as_store_arena(it.s);
    uint64_t base = live(it.s);
    as__arena_fault_set(a, n, sticky);
    int rc = as_store_save(it.s, &it.info, &it.src, &it.h);
    bool reached = sticky ? as__arena_fault_left(a) == 1 : as__arena_fault_left(a) == 0;
    as__arena_fault_set(a, 0, false);
    if (rc) {
        if (rc != AS_ENOMEM)
            fail_msg("%s save, allocation %ld failing: %s (%s)", spec, n, as_strerror(rc),
                     as_store_last_error(it.s));
        assert_true(as_handle_is_null(it.h));
        if (live(it.s) != base && !it.pools)   /* a pool's part set: checked below */
            fail_msg("%s save, allocation %ld failing: live %llu, was %llu", spec, n,
                     (unsigned long long)live(it.s), (unsigned long long)base);
        ++*nfail;
        assert_int_equal(as_store_save(it.s, &it.info, &it.src, &it.h), 0);
    }
    assert_kept(&it, &ks);
    it.got = got;
    if (call(&it, CALL_RESTORE))
        fail_msg("%s save, allocation %ld failing (rc %d), restore: %s", spec, n, rc,
                 as_store_last_error(it.s));
    assert_memory_equal(got, ref, it.n * sizeof(float));
    assert_int_equal(as_store_release(it.s, it.h), 0);
    /* whatever the failure left in the rule's pool is what a clean save
     * leaves there, once one has run: nothing else stayed */
    if (it.pools && live(it.s) != base + pooled)
        fail_msg("%s save, allocation %ld failing (rc %d): live %llu after a clean save "
                 "and release, a twin's %llu", spec, n, rc, (unsigned long long)live(it.s),
                 (unsigned long long)(base + pooled));
    item_free(&it);
    assert_nothing_held(held, spec, "save", n);
    free(ref);
    free(got);
    return reached;
}

static void save_loop(setup_fn setup, const char *spec)
{
    int nfail = 0;
    long n = 1;
    while (save_once(setup, spec, n, false, &nfail))
        n++;
    long allocs = n - 1;
    for (long k = 1; k <= allocs; k++)
        save_once(setup, spec, k, true, &nfail);
    fprintf(stderr, "%-36s %-12s %ld allocations, %d failures returned\n", spec, "save",
            allocs, nfail);
    assert_true(allocs >= 1);
}

/* release and step_end never fail and give back everything the item and
 * its decodes held, whatever allocation fails meanwhile. */
static void release_and_step_end(setup_fn setup, const char *spec)
{
    item it;
    setup(&it, spec);
    as_tensor ks = kept_shape(&it);
    as_arena *a = as_store_arena(it.s);
    if (it.pools) {                             /* the rule's work set, kept by design */
        assert_int_equal(as_store_save(it.s, &it.info, &it.src, &it.h), 0);
        assert_int_equal(as_store_release(it.s, it.h), 0);
    }
    uint64_t base = live(it.s);
    float *got = malloc(sizeof(float) * it.n);
    it.got = got;
    it.dy = calloc(it.n, sizeof(float));
    for (int round = 0; round < 2; round++) {
        if (round)
            as_store_step_begin(it.s, 1);
        assert_int_equal(as_store_save(it.s, &it.info, &it.src, &it.h), 0);
        for (int c = 0; c < NCALL; c++)
            if (applies(&it, c) && call(&it, c))
                fail_msg("%s %s: %s", spec, call_name[c], as_store_last_error(it.s));
        as__arena_fault_set(a, 1, true);
        if (round)
            as_store_step_end(it.s);
        else
            assert_int_equal(as_store_release(it.s, it.h), 0);
        as__arena_fault_set(a, 0, false);
        as__mat_drop_all(it.s, true);
        if (live(it.s) != base)
            fail_msg("%s %s with every allocation failing: live %llu, was %llu", spec,
                     round ? "step_end" : "release", (unsigned long long)live(it.s),
                     (unsigned long long)base);
        assert_kept(&it, &ks);
    }
    item_free(&it);
    free(got);
}

static void test_fault_invert(void **st)
{
    (void)st;
    static const char *const specs[] = {"conv_input=invert::cache; default=keep",
                                        "conv_input=invert::stream:q16; default=keep"};
    for (size_t k = 0; k < 2; k++) {
        save_loop(setup_conv, specs[k]);
        loop(setup_conv, specs[k], CALL_RESTORE);
        loop(setup_conv, specs[k], CALL_VIEW);
        release_and_step_end(setup_conv, specs[k]);
    }
}

static void test_fault_softmax(void **st)
{
    (void)st;
    static const char *const specs[] = {"softmax=soa:3; default=keep",
                                        "softmax=solog:3; default=keep",
                                        "softmax=sotk:8:3; default=keep",
                                        "softmax=sotk:8:3:0.9; default=keep"};
    for (size_t k = 0; k < 4; k++) {
        save_loop(setup_softmax, specs[k]);
        for (int c = 0; c < NCALL; c++)
            loop(setup_softmax, specs[k], c);
        release_and_step_end(setup_softmax, specs[k]);
    }
}

/* Every loop that applies to the item. */
static void all_loops(setup_fn setup, const char *spec)
{
    save_loop(setup, spec);
    item probe;
    setup(&probe, spec);
    bool use[NCALL];
    for (int c = 0; c < NCALL; c++)
        use[c] = applies(&probe, c);
    item_free(&probe);
    for (int c = 0; c < NCALL; c++)
        if (use[c])
            loop(setup, spec, c);
    release_and_step_end(setup, spec);
}

static void test_fault_act(void **st)
{
    (void)st;
    all_loops(setup_fewbit, "layer:x=fewbit:3; layer:kept=keep; default=keep");
    all_loops(setup_sign, "layer:x=sign; layer:kept=keep; default=keep");
}

static void test_fault_regenerators(void **st)
{
    (void)st;
    all_loops(setup_recompute, "layer:x=recompute; layer:kept=keep; default=keep");
    all_loops(setup_derive, "layer:x=derive; layer:kept=keep; default=keep");
    all_loops(setup_inverse, "layer:x=keep; layer:kept=inverse; default=keep");
}

static void test_fault_codecs(void **st)
{
    (void)st;
    all_loops(setup_bitpack, "layer:x=bitpack; layer:kept=keep; default=keep");
    all_loops(setup_aq, "layer:x=aq:4:rn; layer:kept=keep; default=keep");
    /* the rule's first save builds its work set (contexts and frames) */
    all_loops(setup_zstd, "layer:x=zstd; layer:kept=keep; default=keep");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fault_invert),
        cmocka_unit_test(test_fault_softmax),
        cmocka_unit_test(test_fault_act),
        cmocka_unit_test(test_fault_regenerators),
        cmocka_unit_test(test_fault_codecs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * Saving in row blocks (as_store_save_rows_*): blocks assembled equal the
 * whole save bit for bit (values, row streams, softmax backward) for the
 * softmax codecs, aq with nearest rounding and the other deterministic
 * codecs; stochastic aq stays within the whole save's error; keep holds
 * the same bytes in place; misuse gives clear errors (rows too many or
 * missing, end twice, use while open, release and step end mid-way,
 * misaligned softmax blocks); auto measures and plans row saves; every
 * allocation failing in turn leaves nothing behind; threads save rows of
 * their own handles at once.
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
#include <pthread.h>

#include "actstore/store.h"
#include "store/store_internal.h"
#include "support/probs.h"
#include "support/store_stats.h"
#include "support/store_util.h"
#include "support/test_main.h"
#include "util/rng.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;

enum { B = 3, H = 2, T = 24, ROWS = B * H * T, N = ROWS * T };

static const probs_shape PS = {B, H, T};

/* Probabilities with key padding vlen (filled), their info and tensor. */
static float *probs_case(const int32_t *vlen, as_save_info *si, as_tensor *t)
{
    float *y = malloc(N * sizeof *y);
    assert_non_null(y);
    probs_fill(PS, vlen, 2.0, &rng, y);
    *si = probs_info(PS, vlen);
    *t = probs_tensor(PS, y);
    return y;
}

/* Save x (rows x cols view of t) in blocks of `per` rows. */
static as_handle save_rows(as_store *s, const as_save_info *si,
                           const as_tensor *t, int64_t per)
{
    int64_t cols = t->shape[t->ndim - 1];
    int64_t rows = as_tensor_numel(t) / cols;
    as_handle h;
    assert_int_equal(as_store_save_rows_begin(s, si, t, &h), 0);
    for (int64_t r0 = 0; r0 < rows; r0 += per) {
        int64_t n = rows - r0 < per ? rows - r0 : per;
        int rc = as_store_save_rows_append(s, h, (const float *)t->data + r0 * cols, n);
        if (rc)
            fail_msg("append [%lld, +%lld): %s", (long long)r0, (long long)n,
                     as_store_last_error(s));
    }
    assert_int_equal(as_store_save_rows_end(s, h), 0);
    return h;
}

/* Restore, row streams and (softmax) backward of hw and hr agree bit for
 * bit. */
static void assert_same(as_store *s, as_handle hw, as_handle hr, size_t n,
                        int64_t cols, bool softmax)
{
    float *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b);
    as_tensor ta;
    assert_int_equal(as_store_describe(s, hw, &ta, NULL), 0);
    ta.data = a;
    as_tensor tb = ta;
    tb.data = b;
    assert_int_equal(as_store_restore(s, hw, &ta), 0);
    assert_int_equal(as_store_restore(s, hr, &tb), 0);
    assert_memory_equal(a, b, n * sizeof *a);
    int64_t rows = (int64_t)n / cols;
    for (int k = 0; k < 8; k++) {
        int64_t r0 = (int64_t)(as_rng_u32(&rng) % (uint32_t)rows);
        int64_t nr = 1 + (int64_t)(as_rng_u32(&rng) % (uint32_t)(rows - r0));
        memset(a, 0, n * sizeof *a);
        memset(b, 0xff, n * sizeof *b);
        assert_int_equal(as_store_restore_rows(s, hw, r0, nr, a), 0);
        assert_int_equal(as_store_restore_rows(s, hr, r0, nr, b), 0);
        assert_memory_equal(a, b, (size_t)(nr * cols) * sizeof *a);
    }
    if (softmax) {
        float *dy = randv_from(&rng, n);
        assert_int_equal(as_store_softmax_backward(s, hw, dy, a), 0);
        assert_int_equal(as_store_softmax_backward(s, hr, dy, b), 0);
        assert_memory_equal(a, b, n * sizeof *a);
        free(dy);
    }
    free(a);
    free(b);
}

static void test_softmax_codecs_equal_whole(void **st)
{
    (void)st;
    static const char *specs[] = {"keep", "soa:5", "soa:3:fullden", "solog:2",
                                  "solog:4", "sotk:16:3", "fp16", "bf16",
                                  "aq:4:rn", "aq:8:g=128:rn"};
    int32_t vlen[B] = {T, T - 5, 7};
    as_save_info si;
    as_tensor t;
    float *y = probs_case(vlen, &si, &t);
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) {
        char spec[64];
        snprintf(spec, sizeof spec, "default=%s", specs[i]);
        as_store *s = store_new(spec, NULL, true, 0, NULL);
        as_handle hw, h1, h2;
        assert_int_equal(as_store_save(s, &si, &t, &hw), 0);
        h1 = save_rows(s, &si, &t, H * T);       /* one batch per block */
        h2 = save_rows(s, &si, &t, 2 * H * T);   /* two, then one */
        assert_string_equal(as_store_policy_of(s, h1), as_store_policy_of(s, hw));
        assert_same(s, hw, h1, N, T, true);
        assert_same(s, hw, h2, N, T, true);
        /* keep: the same bytes, held in place */
        if (!strcmp(specs[i], "keep"))
            assert_int_equal(as_store_is_in_place(s, h1), 1);
        as_store_destroy(s);
    }
    free(y);
}

/* aq on rows of whole groups: nearest rounding is bit-identical; stochastic
 * rounding stays within the whole save's error. */
static void test_aq_rows(void **st)
{
    (void)st;
    enum { R = 96, C = 64 };
    float *x = randv_from(&rng, R * C);
    as_tensor t = t2(x, AS_F32, R, C);
    as_save_info si = info(AS_KIND_LINEAR_INPUT, "fc");
    static const char *exact[] = {"aq:2:rn", "aq:3:g=128:rn", "aq:4:rn:rot",
                                  "q8", "fp16"};
    for (size_t i = 0; i < sizeof exact / sizeof exact[0]; i++) {
        char spec[64];
        snprintf(spec, sizeof spec, "default=%s", exact[i]);
        as_store *s = store_new(spec, NULL, true, 0, NULL);
        as_handle hw, hr;
        assert_int_equal(as_store_save(s, &si, &t, &hw), 0);
        hr = save_rows(s, &si, &t, 16);
        if (strncmp(exact[i], "q8", 2))   /* q8 rounds stochastically */
            assert_same(s, hw, hr, R * C, C, false);
        as_store_destroy(s);
    }
    as_store *s = store_new("default=aq:2", NULL, true, 0, NULL);
    as_handle hw, hr;
    assert_int_equal(as_store_save(s, &si, &t, &hw), 0);
    hr = save_rows(s, &si, &t, 32);
    float *a = malloc(sizeof(float) * R * C), *b = malloc(sizeof(float) * R * C);
    as_tensor ta = t2(a, AS_F32, R, C), tb = t2(b, AS_F32, R, C);
    assert_int_equal(as_store_restore(s, hw, &ta), 0);
    assert_int_equal(as_store_restore(s, hr, &tb), 0);
    double ew = 0, er = 0, nx = 0;
    for (int k = 0; k < R * C; k++) {
        ew += (a[k] - x[k]) * (a[k] - x[k]);
        er += (b[k] - x[k]) * (b[k] - x[k]);
        nx += x[k] * x[k];
    }
    assert_true(er > 0 && sqrt(er / nx) < 1.5 * sqrt(ew / nx));
    free(a);
    free(b);
    free(x);
    as_store_destroy(s);
}

/* keep holds exactly the bytes (and arena tag) of a whole save. */
static void test_keep_bytes(void **st)
{
    (void)st;
    int32_t vlen[B] = {T, T, T};
    as_save_info si;
    as_tensor t;
    float *y = probs_case(vlen, &si, &t);
    as_store *s = store_new("default=keep", NULL, true, 0, NULL);
    as_handle hw;
    assert_int_equal(as_store_save(s, &si, &t, &hw), 0);
    uint64_t whole = arena_tag(s, AS_TAG_SAVED).live_usable;
    assert_int_equal(as_store_release(s, hw), 0);
    as_handle hr = save_rows(s, &si, &t, H * T);
    assert_int_equal(arena_tag(s, AS_TAG_SAVED).live_usable, whole);
    assert_int_equal(arena_tag(s, AS_TAG_WORKSPACE).live_usable, 0);
    const as_tensor *v;
    assert_int_equal(as_store_restore_view(s, hr, &v), 0);
    assert_memory_equal(v->data, y, N * sizeof *y);
    as_store_destroy(s);
    free(y);
}

static void test_misuse(void **st)
{
    (void)st;
    enum { R = 32, C = 16 };
    float *x = randv_from(&rng, R * C);
    as_tensor t = t2(x, AS_F32, R, C);
    as_save_info si = info(AS_KIND_LINEAR_INPUT, "fc");
    as_store *s = store_new("default=aq:4", NULL, true, 0, NULL);
    as_handle h, other;
    assert_int_equal(as_store_save(s, &si, &t, &other), 0);
    /* info fields a row save cannot take */
    as_save_info bad = si;
    bad.alias_of = other;
    assert_int_equal(as_store_save_rows_begin(s, &bad, &t, &h), AS_EINVAL);
    assert_true(as_handle_is_null(h));
    assert_contains(as_store_last_error(s), "alias_of");
    as_tensor scalar = {.dtype = AS_F32, .ndim = 0};
    assert_int_equal(as_store_save_rows_begin(s, &si, &scalar, &h), AS_EINVAL);

    assert_int_equal(as_store_save_rows_begin(s, &si, &t, &h), 0);
    assert_int_equal(as_store_save_rows_append(s, h, x, 12), 0);
    /* in progress: no other use */
    as_tensor d = t2(malloc(sizeof(float) * R * C), AS_F32, R, C);
    assert_int_equal(as_store_restore(s, h, &d), AS_ESTATE);
    assert_contains(as_store_last_error(s), "12 of 32 rows");
    /* too many rows: nothing appended */
    assert_int_equal(as_store_save_rows_append(s, h, x + 12 * C, 21), AS_ERANGE);
    assert_contains(as_store_last_error(s), "more rows than the tensor has");
    assert_int_equal(as_store_save_rows_append(s, h, NULL, 3), AS_EINVAL);
    assert_int_equal(as_store_save_rows_append(s, h, x, -1), AS_EINVAL);
    /* rows missing */
    assert_int_equal(as_store_save_rows_end(s, h), AS_ESTATE);
    assert_contains(as_store_last_error(s), "12 of 32 rows appended");
    assert_int_equal(as_store_save_rows_append(s, h, x + 12 * C, 20), 0);
    assert_int_equal(as_store_save_rows_end(s, h), 0);
    /* finished: usable, and not twice */
    assert_int_equal(as_store_restore(s, h, &d), 0);
    assert_int_equal(as_store_save_rows_end(s, h), AS_ESTATE);
    assert_contains(as_store_last_error(s), "finished already");
    assert_int_equal(as_store_save_rows_append(s, h, x, 1), AS_ESTATE);
    assert_int_equal(as_store_release(s, h), 0);
    assert_int_equal(as_store_save_rows_append(s, h, x, 1), AS_EHANDLE);
    assert_contains(as_store_last_error(s), "released");

    /* release mid-way: everything it held is freed */
    assert_int_equal(as_store_release(s, other), 0);
    as_store_stats sa;
    assert_int_equal(as_store_save_rows_begin(s, &si, &t, &h), 0);
    assert_int_equal(as_store_save_rows_append(s, h, x, 16), 0);
    assert_int_equal(as_store_stats_take(s, &sa), 0);
    assert_true(sa.total.stored_live > 0);
    as_store_stats_free(&sa);
    assert_int_equal(as_store_release(s, h), 0);
    expect_nothing_live(s);
    assert_int_equal(arena_tag(s, AS_TAG_SAVED).live_usable, 0);
    assert_int_equal(as_store_save_rows_end(s, h), AS_EHANDLE);

    /* step end mid-way abandons it too */
    as_store_step_begin(s, 1);
    assert_int_equal(as_store_save_rows_begin(s, &si, &t, &h), 0);
    assert_int_equal(as_store_save_rows_append(s, h, x, 8), 0);
    as_store_step_end(s);
    assert_int_equal(arena_tag(s, AS_TAG_SAVED).live_usable, 0);
    assert_int_equal(as_store_save_rows_append(s, h, x, 8), AS_EHANDLE);

    /* no-grad: null handle, appends and end do nothing */
    as_store_set_grad(s, false);
    assert_int_equal(as_store_save_rows_begin(s, &si, &t, &h), 0);
    assert_true(as_handle_is_null(h));
    assert_int_equal(as_store_save_rows_append(s, h, x, R), 0);
    assert_int_equal(as_store_save_rows_end(s, h), 0);
    as_store_set_grad(s, true);
    as_store_destroy(s);
    free(d.data);
    free(x);
}

/* A softmax block must hold whole (batch, head) blocks of queries. */
static void test_softmax_alignment(void **st)
{
    (void)st;
    int32_t vlen[B] = {T, T, T};
    as_save_info si;
    as_tensor t;
    float *y = probs_case(vlen, &si, &t);
    as_store *s = store_new("default=solog:2", NULL, true, 0, NULL);
    as_handle h;
    assert_int_equal(as_store_save_rows_begin(s, &si, &t, &h), 0);
    assert_int_equal(as_store_save_rows_append(s, h, y, T + 1), AS_EINVAL);
    assert_contains(as_store_last_error(s), "whole blocks of 24 queries");
    assert_int_equal(as_store_save_rows_append(s, h, y, T), AS_EINVAL);
    assert_int_equal(as_store_save_rows_append(s, h, y, H * T), 0);
    as_store_destroy(s);   /* destroys the open save too */
    free(y);
}

/* Offload (a policy that needs the whole tensor): assembled, then saved. */
static void test_whole_policies(void **st)
{
    (void)st;
    enum { R = 40, C = 32 };
    as_tensor t = randt_from(&rng, R, C);
    as_save_info si = info(AS_KIND_LINEAR_INPUT, "fc");
    as_store *s = store_new("default=offload", NULL, true, 0, NULL);
    as_handle hw, hr;
    assert_int_equal(as_store_save(s, &si, &t, &hw), 0);
    hr = save_rows(s, &si, &t, 7);
    assert_string_equal(as_store_policy_of(s, hr), as_store_policy_of(s, hw));
    assert_same(s, hw, hr, R * C, C, false);
    as_store_destroy(s);
    free(t.data);
}

/* auto: row saves are measured block by block and planned like whole
 * saves; the budget holds. */
static void test_auto_rows(void **st)
{
    (void)st;
    int32_t vlen[B] = {T, T, T};
    as_save_info si;
    as_tensor t;
    float *y = probs_case(vlen, &si, &t);
    as_store *s = store_new("default=auto", NULL, false, 0, NULL);
    uint64_t budget = (uint64_t)N * sizeof(float) / 4;
    assert_int_equal(as_store_set_budget(s, budget), 0);
    for (int step = 1; step <= 4; step++) {
        if (step > 1)
            probs_fill(PS, vlen, 2.0, &rng, y);
        as_store_step_begin(s, (uint64_t)step);
        as_handle h = save_rows(s, &si, &t, H * T);
        float *d = malloc(N * sizeof *d);
        as_tensor td = probs_tensor(PS, d);
        assert_int_equal(as_store_restore(s, h, &td), 0);
        double dot = 0, a2 = 0, b2 = 0;
        for (int k = 0; k < N; k++) {
            dot += (double)d[k] * y[k];
            a2 += (double)d[k] * d[k];
            b2 += (double)y[k] * y[k];
        }
        assert_true(dot / sqrt(a2 * b2) > 0.9);
        assert_contains(as_store_policy_of(s, h), "(auto)");
        free(d);
        as_store_step_end(s);
    }
    as_store_plan p;
    assert_int_equal(as_store_plan_take(s, &p), 0);
    assert_true(p.measured);
    assert_int_equal(p.n, 1);
    assert_string_equal(p.entries[0].layer, "blk.attn");
    assert_int_equal(p.entries[0].items, 1);
    assert_true(p.entries[0].stored_bytes <= budget);
    as_store_plan_free(&p);
    as_store_stats sa;
    assert_int_equal(as_store_stats_take(s, &sa), 0);
    assert_true(sa.total.stored_peak <= budget);
    as_store_stats_free(&sa);
    as_store_destroy(s);
    free(y);
}

/* auto never splits a derivative-only form into blocks: the item keeps
 * values, so a later alias could read them; act_backward still works. */
static void test_auto_act_rows(void **st)
{
    (void)st;
    enum { R = 32, C = 64 };
    float *x = randv_from(&rng, R * C), *dy = randv_from(&rng, R * C);
    float *dx = malloc(sizeof(float) * R * C);
    as_tensor t = t2(x, AS_F32, R, C);
    as_save_info si = info(AS_KIND_ACTIVATION_INPUT, "mlp.gelu");
    si.meta.act.fn = AS_FN_GELU;
    as_store *s = store_new("default=auto", NULL, false, 0, NULL);
    assert_int_equal(as_store_set_budget(s, R * C * sizeof(float) / 8), 0);
    for (int step = 1; step <= 3; step++) {
        as_store_step_begin(s, (uint64_t)step);
        as_handle h = save_rows(s, &si, &t, 8);
        const char *pol = as_store_policy_of(s, h);
        if (strstr(pol, "fewbit") || strstr(pol, "sign"))
            fail_msg("row save under %s", pol);
        assert_int_equal(as_store_act_backward(s, h, dy, dx), 0);
        as_store_step_end(s);
    }
    as_store_destroy(s);
    free(x);
    free(dy);
    free(dx);
}

/* Every allocation of a row save failing in turn (items, the block list,
 * codes, the assembled block): a clear ENOMEM, the save still open or
 * released, and nothing left behind once it is released. */
static void fault_loop(const char *spec)
{
    enum { R = 48, C = 32 };
    float *x = randv_from(&rng, R * C);
    as_tensor t = t2(x, AS_F32, R, C);
    as_save_info si = info(AS_KIND_LINEAR_INPUT, "fc");
    as_store *s = store_new(spec, NULL, false, 0, NULL);
    as_arena *a = as_store_arena(s);
    uint64_t base = arena_tag(s, AS_TAG_SAVED).live_usable +
                    arena_tag(s, AS_TAG_WORKSPACE).live_usable;
    bool reached = true;
    for (long n = 1; reached && n < 10000; n++) {
        as_handle h = AS_HANDLE_NULL;
        as__arena_fault_set(a, n, false);
        int rc = as_store_save_rows_begin(s, &si, &t, &h);
        for (int64_t r0 = 0; rc == 0 && r0 < R; r0 += 16)
            rc = as_store_save_rows_append(s, h, x + r0 * C, 16);
        if (rc == 0)
            rc = as_store_save_rows_end(s, h);
        reached = as__arena_fault_left(a) == 0;
        as__arena_fault_set(a, 0, false);
        if (rc && rc != AS_ENOMEM)
            fail_msg("%s, allocation %ld failing: %s (%s)", spec, n,
                     as_strerror(rc), as_store_last_error(s));
        if (rc == 0) {
            float *d = malloc(sizeof(float) * R * C);
            as_tensor td = t2(d, AS_F32, R, C);
            assert_int_equal(as_store_restore(s, h, &td), 0);
            free(d);
        }
        if (!as_handle_is_null(h))
            assert_int_equal(as_store_release(s, h), 0);
        uint64_t now = arena_tag(s, AS_TAG_SAVED).live_usable +
                       arena_tag(s, AS_TAG_WORKSPACE).live_usable;
        if (now != base)
            fail_msg("%s, allocation %ld failing (rc %d): %llu bytes live, "
                     "was %llu", spec, n, rc, (unsigned long long)now,
                     (unsigned long long)base);
    }
    as_store_destroy(s);
    free(x);
}

static void test_faults(void **st)
{
    (void)st;
    fault_loop("default=aq:4");
    fault_loop("default=keep");
    fault_loop("default=offload");
    fault_loop("default=auto");
}

/* Row saves of different handles from several threads at once. */
typedef struct thr_arg {
    as_store *s;
    float    *x;
    int       ok;
} thr_arg;

static void *thr_main(void *p)
{
    thr_arg *a = p;
    enum { R = 64, C = 64 };
    as_tensor t = t2(a->x, AS_F32, R, C);
    as_save_info si = info(AS_KIND_LINEAR_INPUT, "fc");
    float *d = malloc(sizeof(float) * R * C), *w = malloc(sizeof(float) * R * C);
    as_tensor td = t2(d, AS_F32, R, C), tw = t2(w, AS_F32, R, C);
    a->ok = 1;
    for (int k = 0; k < 50 && a->ok; k++) {
        as_handle h, hw;
        int rc = as_store_save_rows_begin(a->s, &si, &t, &h);
        for (int64_t r0 = 0; rc == 0 && r0 < R; r0 += 8)
            rc = as_store_save_rows_append(a->s, h, a->x + r0 * C, 8);
        rc = rc ? rc : as_store_save_rows_end(a->s, h);
        rc = rc ? rc : as_store_save(a->s, &si, &t, &hw);
        rc = rc ? rc : as_store_restore(a->s, h, &td);
        rc = rc ? rc : as_store_restore(a->s, hw, &tw);
        a->ok = rc == 0 && !memcmp(d, w, sizeof(float) * R * C);
        as_store_release(a->s, h);
        as_store_release(a->s, hw);
    }
    free(d);
    free(w);
    return NULL;
}

static void test_threads(void **st)
{
    (void)st;
    as_store *s = store_new("default=aq:4:rn", NULL, true, 0, NULL);
    pthread_t th[4];
    thr_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (thr_arg){.s = s, .x = randv_from(&rng, 64 * 64)};
        assert_int_equal(pthread_create(&th[i], NULL, thr_main, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(args[i].ok, 1);
        free(args[i].x);
    }
    expect_nothing_live(s);
    as_store_destroy(s);
}

AS_TEST_MAIN(NULL, NULL,
             cmocka_unit_test(test_softmax_codecs_equal_whole),
             cmocka_unit_test(test_aq_rows),
             cmocka_unit_test(test_keep_bytes),
             cmocka_unit_test(test_misuse),
             cmocka_unit_test(test_softmax_alignment),
             cmocka_unit_test(test_whole_policies),
             cmocka_unit_test(test_auto_rows),
             cmocka_unit_test(test_auto_act_rows),
             cmocka_unit_test(test_faults),
             cmocka_unit_test(test_threads))

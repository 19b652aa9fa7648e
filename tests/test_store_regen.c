/*
 * Regenerators through the store: recompute chains (one materialization
 * per link, cached within a backward step), a long chain, and inverse
 * chains. The store core: test_store.c.
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
static float *randv(size_t n) { return randv_from(&rng, n); }
static as_store *mk(const char *spec, bool strict, uint64_t budget)
{
    return store_new(spec, NULL, strict, budget, "t");
}

/* ---- regenerators: recompute and inverse chains ------------------------ */

typedef struct cb_ud {
    int   calls;
    float mul;
} cb_ud;

/* out = mul * in[0] (+ in[1] when given) */
static int cb_scale(void *ud, const as_tensor *const *in, size_t nin, as_tensor *out)
{
    cb_ud *u = ud;
    u->calls++;
    int64_t n = as_tensor_numel(out);
    const float *a = in[0]->data, *b = nin > 1 ? in[1]->data : NULL;
    float *o = out->data;
    for (int64_t k = 0; k < n; k++)
        o[k] = u->mul * a[k] + (b ? b[k] : 0.0f);
    return 0;
}

static void test_recompute_chain(void **st)
{
    (void)st;
    as_store *s = mk("default=keep; layer:rc.*=recompute", false, 0);
    enum { N = 1000 };
    float *x = randv(N), y1[N], y2[N], y3[N], out[N];
    for (int k = 0; k < N; k++) {
        y1[k] = 2.0f * x[k];
        y2[k] = 3.0f * y1[k] + x[k];
        y3[k] = 0.5f * y2[k];
    }
    as_tensor t = t2(x, AS_F32, 10, 100);
    as_save_info i = info(AS_KIND_LINEAR_INPUT, "in");
    as_handle hx, h1, h2, h3;
    assert_int_equal(as_store_save(s, &i, &t, &hx), 0);
    cb_ud u1 = {0, 2.0f}, u2 = {0, 3.0f}, u3 = {0, 0.5f};
    as_handle in1[] = {hx}, in2[] = {AS_HANDLE_NULL, hx}, in3[1];
    as_save_info r = info(AS_KIND_ACTIVATION_OUTPUT, "rc.1");
    r.recompute = cb_scale, r.recompute_ud = &u1, r.recompute_inputs = in1;
    r.recompute_ninputs = 1;
    t.data = y1;
    assert_int_equal(as_store_save(s, &r, &t, &h1), 0);
    in2[0] = h1;
    r.layer = "rc.2", r.recompute_ud = &u2, r.recompute_inputs = in2, r.recompute_ninputs = 2;
    t.data = y2;
    assert_int_equal(as_store_save(s, &r, &t, &h2), 0);
    in3[0] = h2;
    r.layer = "rc.3", r.recompute_ud = &u3, r.recompute_inputs = in3, r.recompute_ninputs = 1;
    t.data = y3;
    assert_int_equal(as_store_save(s, &r, &t, &h3), 0);
    assert_string_equal(as_store_policy_of(s, h3), "recompute");
    as_store_stats a = stats(s);
    assert_int_equal(a.total.stored_live, N * sizeof(float));   /* only x */
    assert_int_equal(a.total.raw_live, 4 * N * sizeof(float));
    as_store_stats_free(&a);
    /* the inputs' handles may go: the dependencies stay alive */
    assert_int_equal(as_store_release(s, hx), 0);
    as_store_phase(s, AS_PHASE_BACKWARD);
    as_tensor d = t2(out, AS_F32, 10, 100);
    assert_int_equal(as_store_restore(s, h3, &d), 0);
    assert_memory_equal(out, y3, sizeof out);
    assert_int_equal(u1.calls, 1);
    assert_int_equal(u2.calls, 1);
    assert_int_equal(u3.calls, 1);
    /* backward goes on down the chain: cached, no new calls */
    assert_int_equal(as_store_restore(s, h2, &d), 0);
    assert_memory_equal(out, y2, sizeof out);
    assert_int_equal(as_store_restore(s, h1, &d), 0);
    assert_memory_equal(out, y1, sizeof out);
    assert_int_equal(u1.calls + u2.calls + u3.calls, 3);
    assert_int_equal(as_store_release(s, h3), 0);
    assert_int_equal(as_store_release(s, h2), 0);
    assert_int_equal(as_store_release(s, h1), 0);
    as_store_phase(s, AS_PHASE_FORWARD);
    assert_int_equal(arena_tag(s, AS_TAG_SAVED).live_requested, 0);
    assert_int_equal(arena_tag(s, AS_TAG_WORKSPACE).live_requested, 0);
    /* a recompute without a callback falls back (counted) */
    as_save_info nocb = info(AS_KIND_ACTIVATION_OUTPUT, "rc.none");
    t.data = y1;
    assert_int_equal(as_store_save(s, &nocb, &t, &h1), 0);
    assert_contains(as_store_policy_of(s, h1), "fallback from recompute: no recompute callback");
    /* a released input handle is an error naming it */
    r.recompute_inputs = in1, r.recompute_ninputs = 1, r.layer = "rc.bad";
    assert_int_equal(as_store_save(s, &r, &t, &h2), AS_EHANDLE);
    assert_int_equal(as_store_release(s, h1), 0);
    free(x);
    as_store_destroy(s);
}

/* A long recompute chain: x0 kept, x[k] = x[k-1] + 1. Restoring the top
 * rebuilds every link once; walking back down (as backward does) calls
 * nothing more, and releasing as we go keeps the cache small. */
static int cb_inc(void *ud, const as_tensor *const *in, size_t nin, as_tensor *out)
{
    (void)nin;
    (*(int *)ud)++;
    const float *a = in[0]->data;
    float *o = out->data;
    for (int64_t k = 0; k < as_tensor_numel(out); k++)
        o[k] = a[k] + 1.0f;
    return 0;
}

static void test_long_chain(void **st)
{
    (void)st;
    enum { L = 1000, N = 64 };
    as_store *s = mk("default=keep; layer:link=recompute", false, 0);
    static as_handle h[L + 1];
    float x[N], y[N];
    for (int k = 0; k < N; k++)
        x[k] = (float)k;
    as_tensor t = t2(x, AS_F32, 1, N), d = t2(y, AS_F32, 1, N);
    as_save_info i0 = info(AS_KIND_GENERIC, "base");
    assert_int_equal(as_store_save(s, &i0, &t, &h[0]), 0);
    int calls = 0;
    for (int l = 1; l <= L; l++) {
        as_save_info i = info(AS_KIND_GENERIC, "link");
        i.recompute = cb_inc, i.recompute_ud = &calls;
        i.recompute_inputs = &h[l - 1], i.recompute_ninputs = 1;
        assert_int_equal(as_store_save(s, &i, &t, &h[l]), 0);
    }
    as_store_phase(s, AS_PHASE_BACKWARD);
    for (int l = L; l >= 0; l--) {
        assert_int_equal(as_store_restore(s, h[l], &d), 0);
        for (int k = 0; k < N; k++)
            assert_true(y[k] == (float)(k + l));
        assert_int_equal(as_store_release(s, h[l]), 0);
    }
    assert_int_equal(calls, L);   /* one materialization per link */
    as_store_phase(s, AS_PHASE_FORWARD);
    assert_int_equal(arena_tag(s, AS_TAG_WORKSPACE).live_requested, 0);
    assert_int_equal(arena_tag(s, AS_TAG_SAVED).live_requested, 0);
    as_store_destroy(s);
}

static void test_inverse_chain(void **st)
{
    (void)st;
    /* conv_output items are rebuilt from later tensors: x0 -> affine (BN,
     * eval form) -> x1 -> leaky_relu -> x2 (kept). Only x2 is stored. */
    as_store *s = mk("conv_output=inverse; default=keep", false, 0);
    enum { C = 4, INNER = 250, N = C * INNER };
    static float scale[C] = {1.5f, -0.5f, 2.0f, 0.25f}, shift[C] = {0.1f, -1.0f, 0, 3};
    float *x0 = randv(N), x1[N], x2[N], out[N];
    for (int k = 0; k < N; k++) {
        int c = (k / INNER) % C;
        x1[k] = scale[c] * x0[k] + shift[c];
        x2[k] = x1[k] >= 0 ? x1[k] : 0.1f * x1[k];
    }
    as_tensor t = t2(x0, AS_F32, C, INNER);
    as_save_info i0 = info(AS_KIND_CONV_OUTPUT, "conv1");
    as_handle h0, h1, h2;
    assert_int_equal(as_store_save(s, &i0, &t, &h0), 0);
    assert_contains(as_store_policy_of(s, h0), "inverse pending");
    as_save_info i1 = info(AS_KIND_CONV_OUTPUT, "bn1");
    i1.source = h0;
    i1.source_fn = (as_elementwise){.fn = AS_FN_AFFINE, .scale = scale, .shift = shift,
                                    .channels = C, .inner = INNER};
    t.data = x1;
    assert_int_equal(as_store_save(s, &i1, &t, &h1), 0);
    as_save_info i2 = info(AS_KIND_ACTIVATION_OUTPUT, "act1");
    i2.source = h1;
    i2.source_fn = (as_elementwise){.fn = AS_FN_LEAKY_RELU, .alpha = 0.1f};
    t.data = x2;
    assert_int_equal(as_store_save(s, &i2, &t, &h2), 0);
    assert_contains(as_store_policy_of(s, h0), "inverse");
    assert_contains(as_store_policy_of(s, h1), "inverse");
    assert_string_equal(as_store_policy_of(s, h2), "keep");
    as_store_stats a = stats(s);
    assert_int_equal(a.total.stored_live, N * sizeof(float));   /* x2 only */
    assert_int_equal(a.total.raw_live, 3 * N * sizeof(float));
    as_store_stats_free(&a);
    as_store_phase(s, AS_PHASE_BACKWARD);
    as_tensor d = t2(out, AS_F32, C, INNER);
    assert_int_equal(as_store_restore(s, h0, &d), 0);   /* x2 -> x1 -> x0 */
    for (int k = 0; k < N; k++)
        assert_true(fabsf(out[k] - x0[k]) <= 1e-5f * (1.0f + fabsf(x0[k])) * 16);
    assert_int_equal(as_store_restore(s, h1, &d), 0);
    for (int k = 0; k < N; k++)
        assert_true(fabsf(out[k] - x1[k]) <= 1e-6f * (1.0f + fabsf(x1[k])));
    /* one materialization per link: decoded once for the two restores */
    a = stats(s);
    bool seen = false;
    for (size_t k = 0; k < a.npolicies; k++)
        if (!strcmp(a.policies[k].name, "inverse")) {
            assert_int_equal(a.policies[k].c.restores, 2);
            assert_int_equal(a.policies[k].c.saves, 0);   /* saved as keep, re-planned */
            seen = true;
        }
    assert_true(seen);
    as_store_stats_free(&a);
    assert_int_equal(arena_tag(s, AS_TAG_WORKSPACE).live_requested, 2 * N * sizeof(float));
    as_store_release(s, h2);   /* x2 stays: x1 and x0 depend on it */
    assert_int_equal(as_store_restore(s, h0, &d), 0);
    as_store_release(s, h1);
    as_store_release(s, h0);
    as_store_phase(s, AS_PHASE_FORWARD);
    assert_int_equal(arena_tag(s, AS_TAG_SAVED).live_requested, 0);
    assert_int_equal(arena_tag(s, AS_TAG_WORKSPACE).live_requested, 0);
    /* relu is not invertible: the source stays kept (fallback counted at release) */
    assert_int_equal(as_store_save(s, &i0, &t, &h0), 0);
    i2.source = h0;
    i2.source_fn.fn = AS_FN_RELU;
    assert_int_equal(as_store_save(s, &i2, &t, &h2), 0);
    assert_contains(as_store_policy_of(s, h0), "keep");
    as_store_release(s, h2);
    as_store_release(s, h0);
    a = stats(s);
    assert_int_equal(layer_of(&a, "conv1")->c.fallbacks, 1);
    assert_contains(layer_of(&a, "conv1")->last_fallback, "inverse: no consumer");
    for (size_t k = 0; k < a.npolicies; k++)
        if (!strcmp(a.policies[k].name, "inverse"))
            assert_int_equal(a.policies[k].c.fallbacks, 1);
    as_store_stats_free(&a);
    free(x0);
    as_store_destroy(s);
}

/* Row-wise recompute: y = x W^T (x: R x I, W: O x I), rows on their own. */
typedef struct rw_ud {
    const float *W;
    int64_t      in, out;
    int          calls;
    int64_t      max_rows;   /* the most rows one call was given */
} rw_ud;

static int cb_rows(void *ud, const as_tensor *const *in, size_t nin, as_tensor *out)
{
    rw_ud *u = ud;
    (void)nin;
    int64_t rows = as_tensor_numel(in[0]) / u->in;
    if (in[0]->shape[in[0]->ndim - 1] != u->in ||
        out->shape[out->ndim - 1] != u->out ||
        as_tensor_numel(out) != rows * u->out)
        return AS_ESHAPE;
    u->calls++;
    u->max_rows = rows > u->max_rows ? rows : u->max_rows;
    const float *x = in[0]->data;
    float *y = out->data;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t o = 0; o < u->out; o++) {
            float acc = 0;
            for (int64_t i = 0; i < u->in; i++)
                acc += x[r * u->in + i] * u->W[o * u->in + i];
            y[r * u->out + o] = acc;
        }
    return 0;
}

/* Restoring rows of a row-wise recompute rebuilds only those rows, from
 * the same rows of its input (kept: bit for bit; under a codec: the
 * callback on the decoded rows), without materializing either tensor; a
 * whole restore still works; an input whose rows differ falls back with
 * the reason; a recompute that is not row-wise still serves rows. */
static void test_recompute_rows(void **st)
{
    (void)st;
    enum { R = 48, I = 32, O = 24, B = 8 };
    float *x = randv(R * I), *W = randv(O * I), y[R * O], out[R * O];
    rw_ud u = {.W = W, .in = I, .out = O};
    as_tensor xt = t2(x, AS_F32, R, I);
    assert_int_equal(cb_rows(&u, (const as_tensor *const[]){&xt}, 1,
                             &(as_tensor){.data = y, .dtype = AS_F32, .ndim = 2,
                                          .shape = {R, O}}), 0);
    for (int codec = 0; codec < 2; codec++) {
        as_store *s = mk(codec ? "layer:x=aq:8:g=128; layer:y=recompute; default=keep"
                               : "layer:y=recompute; default=keep", false, 0);
        as_store_phase(s, AS_PHASE_FORWARD);
        as_save_info xi = info(AS_KIND_LINEAR_INPUT, "x");
        as_handle hx, hy;
        assert_int_equal(as_store_save(s, &xi, &xt, &hx), 0);
        as_save_info yi = info(AS_KIND_ATTENTION_INPUT, "y");
        yi.recompute = cb_rows, yi.recompute_ud = &u, yi.recompute_inputs = &hx;
        yi.recompute_ninputs = 1, yi.recompute_rows = true;
        as_tensor yt = {.data = y, .dtype = AS_F32, .ndim = 3, .shape = {R / B, B, O}};
        assert_int_equal(as_store_save(s, &yi, &yt, &hy), 0);
        assert_string_equal(as_store_policy_of(s, hy), "recompute");
        /* what the callback gives on the restored input */
        float xr[R * I], want[R * O];
        as_tensor xd = t2(xr, AS_F32, R, I);
        assert_int_equal(as_store_restore(s, hx, &xd), 0);
        u.calls = 0;
        assert_int_equal(cb_rows(&u, (const as_tensor *const[]){&xd}, 1,
                                 &(as_tensor){.data = want, .dtype = AS_F32,
                                              .ndim = 2, .shape = {R, O}}), 0);
        if (!codec)
            assert_memory_equal(want, y, sizeof y);
        as_store_phase(s, AS_PHASE_BACKWARD);
        u.calls = 0;
        u.max_rows = 0;
        for (int64_t r0 = 0; r0 < R; r0 += B)
            assert_int_equal(as_store_restore_rows(s, hy, r0, B, out + r0 * O), 0);
        assert_memory_equal(out, want, sizeof out);
        assert_int_equal(u.calls, R / B);
        assert_int_equal(u.max_rows, B);
        assert_int_equal(arena_tag(s, AS_TAG_WORKSPACE).live_requested, 0);
        assert_int_equal(as_store_restore_rows(s, hy, R - 1, 2, out), AS_ERANGE);
        as_tensor yd = {.data = out, .dtype = AS_F32, .ndim = 3, .shape = {R / B, B, O}};
        assert_int_equal(as_store_restore(s, hy, &yd), 0);
        assert_memory_equal(out, want, sizeof out);
        assert_int_equal(as_store_release(s, hy), 0);
        assert_int_equal(as_store_release(s, hx), 0);
        as_store_phase(s, AS_PHASE_FORWARD);
        assert_int_equal(arena_tag(s, AS_TAG_SAVED).live_requested, 0);
        assert_int_equal(arena_tag(s, AS_TAG_WORKSPACE).live_requested, 0);

        /* rows that do not match: a fallback naming them */
        assert_int_equal(as_store_save(s, &xi, &xt, &hx), 0);
        as_tensor half = t2(y, AS_F32, R / 2, 2 * O);
        as_handle hb = save_expect_fallback(s, &yi, &half, "recompute");
        assert_contains(as_store_policy_of(s, hb), "input 0 has 48 rows");
        assert_int_equal(as_store_release(s, hb), 0);
        /* not row-wise: rows served from the whole, rebuilt once */
        yi.recompute_rows = false;
        assert_int_equal(as_store_save(s, &yi, &yt, &hy), 0);
        assert_int_equal(as_store_restore(s, hx, &xd), 0);   /* re-encoded */
        assert_int_equal(cb_rows(&u, (const as_tensor *const[]){&xd}, 1,
                                 &(as_tensor){.data = want, .dtype = AS_F32,
                                              .ndim = 2, .shape = {R, O}}), 0);
        as_store_phase(s, AS_PHASE_BACKWARD);
        u.calls = 0;
        for (int64_t r0 = 0; r0 < R; r0 += B)
            assert_int_equal(as_store_restore_rows(s, hy, r0, B, out + r0 * O), 0);
        assert_memory_equal(out, want, sizeof out);
        assert_int_equal(u.calls, 1);
        assert_int_equal(as_store_release(s, hy), 0);
        assert_int_equal(as_store_release(s, hx), 0);
        as_store_phase(s, AS_PHASE_FORWARD);
        as_store_destroy(s);
    }
    free(x);
    free(W);
}

/* ---- threads ------------------------------------------------------------- */

AS_TEST_MAIN(NULL, NULL,
             cmocka_unit_test(test_recompute_chain),
             cmocka_unit_test(test_long_chain),
             cmocka_unit_test(test_inverse_chain),
             cmocka_unit_test(test_recompute_rows))

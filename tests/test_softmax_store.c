/* Softmax codecs through the store: save / restore / restore_rows /
 * softmax_backward / release, step reset, accounting, specs, fallbacks. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "actstore/store.h"
#include "layers/ops.h"
#include "store/policies/softmax/softmax.h"
#include "support/probs.h"
#include "support/store_util.h"
#include "support/test_main.h"
#include "util/rng.h"

static uint64_t rng = 1;
static double nrand(void) { return as_rng_normal(&rng); }
static double urand(void) { return as_rng_u01(&rng); }

enum { B = 2, H = 3, T = 37, ROWS = B * H * T, N = ROWS * T };

static const probs_shape PS = {B, H, T};

/* The store's decode, rows, backward agree with the codec on its own. */
static void test_round_trip(void **st)
{
    (void)st;
    static const char *specs[] = {"soa:5", "soa:3:fullden", "solog:4",
                                  "sotk:16:3", "sotk:8:2:0.95"};
    static float y[N], ref[N], got[N], rows[N], dy[N], dx[N], dxr[N];
    int32_t vlen[B] = {T, 21};
    int32_t vlen_copy[B];
    rng = 12345;
    probs_fill(PS, vlen, 2.5, &rng, y);
    for (int i = 0; i < N; i++)
        dy[i] = (float)nrand();
    for (size_t s = 0; s < sizeof specs / sizeof *specs; s++) {
        char spec[64], err[256];
        snprintf(spec, sizeof spec, "softmax=%s; default=keep", specs[s]);
        as_store *S = store_new(spec, NULL, true, 0, NULL);

        /* the codec on its own: the reference for the store's answers */
        as__sm_params p;
        assert_int_equal(as__sm_parse(specs[s], strlen(specs[s]), &p, err,
                                     sizeof err, NULL), 0);
        as__sm_layout lay = {.rows = ROWS, .len = T, .queries = T,
                            .causal = true, .valid_len = vlen,
                            .rows_per_item = H * T};
        size_t cap = as__sm_encode_bound(&p, &lay), used;
        void *blob = malloc(cap);
        assert_int_equal(as__sm_encode(&p, &lay, y, blob, cap, &used), 0);
        assert_int_equal(as__sm_decode_rows(blob, 0, ROWS, ref), 0);

        for (int step = 0; step < 2; step++) {
            as_store_step_begin(S, (uint64_t)step);
            memcpy(vlen_copy, vlen, sizeof vlen);
            as_save_info si = probs_info(PS, vlen_copy);
            as_tensor t = probs_tensor(PS, y);
            as_handle h, h2;
            assert_int_equal(as_store_save(S, &si, &t, &h), 0);
            assert_int_equal(as_store_save(S, &si, &t, &h2), 0);
            /* the store copied what it needs: the caller's buffers may
             * change after the save */
            vlen_copy[1] = 1;
            assert_non_null(strstr(as_store_policy_of(S, h), specs[s]));

            as_store_phase(S, AS_PHASE_BACKWARD);
            as_tensor d = probs_tensor(PS, got);
            for (int rep = 0; rep < 2; rep++) {   /* same values twice */
                memset(got, 0x7f, sizeof got);
                assert_int_equal(as_store_restore(S, h, &d), 0);
                assert_memory_equal(got, ref, sizeof got);
            }
            for (int blk = B * H - 1; blk >= 0; blk--)   /* any order */
                assert_int_equal(as_store_restore_rows(S, h, blk * T, T,
                                                       rows + blk * T * T),
                                 0);
            assert_memory_equal(rows, ref, sizeof rows);
            assert_int_equal(as_store_softmax_backward(S, h, dy, dx), 0);
            assert_int_equal(as__sm_backward_rows(blob, 0, ROWS, dy, dxr), 0);
            assert_memory_equal(dx, dxr, sizeof dx);

            /* stored bytes are the blob, raw bytes the f32 tensor */
            as_store_stats stt;
            assert_int_equal(as_store_stats_take(S, &stt), 0);
            const as_store_counter *c = &stt.kinds[AS_KIND_SOFTMAX_OUTPUT];
            assert_int_equal(c->raw_live, 2 * sizeof y);
            assert_true(c->stored_live >= 2 * used);
            assert_true(c->stored_live <= 2 * used + 2 * 64);
            assert_true(c->stored_live < c->raw_live);
            assert_int_equal(c->fallbacks, 0);
            as_store_stats_free(&stt);

            assert_int_equal(as_store_release(S, h), 0);
            assert_int_equal(as_store_restore(S, h, &d), AS_EHANDLE);
            /* h2 is left for the step reset */
            as_store_phase(S, AS_PHASE_FORWARD);
            as_store_step_end(S);
            assert_int_equal(as_store_restore(S, h2, &d), AS_EHANDLE);
            assert_int_equal(as_store_stats_take(S, &stt), 0);
            assert_int_equal(stt.kinds[AS_KIND_SOFTMAX_OUTPUT].stored_live, 0);
            assert_int_equal(stt.kinds[AS_KIND_SOFTMAX_OUTPUT].raw_live, 0);
            assert_int_equal(stt.live_handles, 0);
            as_store_stats_free(&stt);
        }
        free(blob);
        as_store_destroy(S);
    }
}

static void test_specs_and_fallbacks(void **st)
{
    (void)st;
    char err[256];
    spec_ok("softmax=soa:5; default=keep");
    spec_ok("softmax=sotk:16:3:0.9");
    spec_err("softmax=soa:0", "S, an integer 1..128");
    spec_err("softmax=solog:9", "bits, 2..4");

    /* a softmax codec on another kind, or on a tensor whose rows do not
     * match the metadata, falls back to keep (and strict mode says so) */
    as_store *S;
    as_store_config cfg = {.policy = "default=soa:5"};
    assert_int_equal(as_store_create(&cfg, &S, err, sizeof err), 0);
    static float y[N], got[N];
    int32_t vlen[B] = {T, T};
    rng = 99;
    probs_fill(PS, vlen, 1.0, &rng, y);
    as_save_info si = {.kind = AS_KIND_GENERIC, .layer = "other"};
    as_tensor t = probs_tensor(PS, y), d = probs_tensor(PS, got);
    as_handle h;
    assert_int_equal(as_store_save(S, &si, &t, &h), 0);
    assert_int_equal(as_store_restore(S, h, &d), 0);
    assert_memory_equal(got, y, sizeof y);        /* kept exactly */
    si = probs_info(PS, vlen);
    si.meta.softmax.row_len = T + 1;              /* wrong metadata */
    assert_int_equal(as_store_save(S, &si, &t, &h), 0);
    assert_non_null(strstr(as_store_policy_of(S, h), "fallback"));
    as_store_destroy(S);

    cfg.strict = true;
    assert_int_equal(as_store_create(&cfg, &S, err, sizeof err), 0);
    assert_int_equal(as_store_save(S, &si, &t, &h), AS_EMETA);
    assert_non_null(strstr(as_store_last_error(S), "row_len"));
    as_store_destroy(S);
}

/* ---- metadata checks: a fuzzed set of wrong metadata ---------------------- */

/* (nb, nh, T, T) probabilities: causal or not, key padding vlen per batch
 * item (NULL: none), logits N(0, sd). */
static void fill_any(float *y, int nb, int nh, int t, bool causal,
                     const int32_t *vlen, double sd)
{
    double *tmp = malloc(sizeof *tmp * (size_t)t);
    for (int r = 0; r < nb * nh * t; r++) {
        int q = r % t, n = causal ? q + 1 : t;
        if (vlen && vlen[r / (nh * t)] < n)
            n = vlen[r / (nh * t)];
        as_rng_softmax_row(&rng, sd, n, t, tmp, y + (size_t)r * t);
    }
    free(tmp);
}

enum { MM_HALF_QUERIES, MM_ROW_LEN, MM_ROW_LEN_RESHAPED, MM_ZEROED,
       MM_NOT_CAUSAL, MM_CAUSAL, MM_VLEN_LONGER, MM_VLEN_SHORTER,
       MM_QUERIES_DOUBLE, MM_COUNT };

/* Make one wrong description of a correctly described tensor; false when
 * this mismatch does not exist for that tensor (e.g. no padding to lie
 * about). The data stays as it is; t may be reshaped. */
static bool mismatch(int what, as_softmax_meta *m, as_tensor *t,
                     int32_t *vlen_bad, int nb, int nh, int tt)
{
    bool causal = m->causal;
    switch (what) {
    case MM_HALF_QUERIES:
        if (!causal || tt < 2)
            return false;
        m->queries = tt / 2;
        return true;
    case MM_ROW_LEN:
        m->row_len = tt + 1 + (int64_t)(urand() * 5);
        return true;
    case MM_ROW_LEN_RESHAPED: {
        /* rows of another length that the shape agrees with */
        int64_t total = (int64_t)nb * nh * tt * tt, L = 0;
        for (int64_t c = 2; c <= 4 * tt; c++)
            if (c != tt && total % c == 0 && urand() < 0.5) {
                L = c;
                break;
            }
        if (!L)
            return false;
        *t = (as_tensor){.data = t->data, .dtype = AS_F32, .ndim = 2,
                         .shape = {total / L, L}};
        *m = (as_softmax_meta){.row_len = L};
        return true;
    }
    case MM_ZEROED:
        if (!causal || tt < 2)
            return false;
        *m = (as_softmax_meta){0};
        return true;
    case MM_NOT_CAUSAL:
        if (!causal || tt < 2)
            return false;
        m->causal = false;
        return true;
    case MM_CAUSAL:
        if (causal || tt < 2)
            return false;
        m->causal = true;
        return true;
    case MM_VLEN_LONGER:
    case MM_VLEN_SHORTER: {
        if (!m->valid_len)
            return false;
        memcpy(vlen_bad, m->valid_len, sizeof *vlen_bad * (size_t)nb);
        for (int b = 0; b < nb; b++) {
            /* a key the metadata would move across the mask must exist */
            if (what == MM_VLEN_LONGER && vlen_bad[b] < tt) {
                vlen_bad[b] = tt;
                m->valid_len = vlen_bad;
                return true;
            }
            if (what == MM_VLEN_SHORTER && vlen_bad[b] > 1) {
                vlen_bad[b] -= 1;
                m->valid_len = vlen_bad;
                return true;
            }
        }
        return false;
    }
    default: /* MM_QUERIES_DOUBLE */
        if (!causal || tt < 2 || (nb * nh) % 2)
            return false;
        m->queries = 2 * tt;
        return true;
    }
}

static void test_meta_fuzz(void **state)
{
    (void)state;
    static const char *specs[] = {"soa:5", "solog:4", "sotk:16:3",
                                  "sotk:8:2:0.9"};
    char err[256];
    as_store *strict, *lax;
    as_store_config cfg = {.policy = "softmax=soa:5", .strict = true};
    assert_int_equal(as_store_create(&cfg, &strict, err, sizeof err), 0);
    cfg.strict = false;
    assert_int_equal(as_store_create(&cfg, &lax, err, sizeof err), 0);
    int tried[MM_COUNT] = {0}, caught[MM_COUNT] = {0}, good = 0;
    uint64_t lax_mm = 0;
    rng = 4242;
    for (int it = 0; it < 240; it++) {
        int nb = 1 + (int)(urand() * 3), nh = 1 + (int)(urand() * 3);
        int tt = 2 + (int)(urand() * 47);
        bool causal = urand() < 0.6, padded = urand() < 0.4;
        int32_t vlen[3], vlen_bad[3];
        for (int b = 0; b < nb; b++)
            vlen[b] = padded ? 1 + (int32_t)(urand() * tt) : tt;
        size_t ne = (size_t)nb * nh * tt * tt;
        float *y = malloc(sizeof *y * ne), *got = malloc(sizeof *got * ne);
        fill_any(y, nb, nh, tt, causal, padded ? vlen : NULL,
                 urand() < 0.5 ? 1.0 : 4.0);
        const char *spec = specs[it % 4];
        char rule[64];
        snprintf(rule, sizeof rule, "softmax=%s", spec);
        assert_int_equal(as_store_set_policy(strict, rule, err, sizeof err), 0);
        assert_int_equal(as_store_set_policy(lax, rule, err, sizeof err), 0);
        as_save_info si = {.kind = AS_KIND_SOFTMAX_OUTPUT, .layer = "fz"};
        si.meta.softmax = (as_softmax_meta){
            .row_len = tt, .queries = tt, .causal = causal,
            .valid_len = padded ? vlen : NULL, .rows_per_item = nh * tt};
        as_tensor t = {.data = y, .dtype = AS_F32, .ndim = 4,
                       .shape = {nb, nh, tt, tt}};
        as_handle h;
        /* the right metadata is never flagged */
        int rc = as_store_save(strict, &si, &t, &h);
        if (rc)
            fail_msg("iteration %d (%s, %dx%dx%d, causal %d, padded %d): "
                     "%s", it, spec, nb, nh, tt, causal, padded,
                     as_store_last_error(strict));
        assert_null(strstr(as_store_policy_of(strict, h), "fallback"));
        as_store_release(strict, h);
        good++;
        int what = it % MM_COUNT;
        as_save_info bad = si;
        as_tensor tb = t;
        if (mismatch(what, &bad.meta.softmax, &tb, vlen_bad, nb, nh, tt)) {
            tried[what]++;
            rc = as_store_save(strict, &bad, &tb, &h);
            if (rc == AS_EMETA)
                caught[what]++;
            else
                print_message("missed mismatch %d at iteration %d (%s, "
                              "%dx%dx%d, causal %d, padded %d): rc %d\n",
                              what, it, spec, nb, nh, tt, causal, padded, rc);
            if (rc == 0)
                as_store_release(strict, h);
            /* not strict: kept exactly, counted */
            assert_int_equal(as_store_save(lax, &bad, &tb, &h), 0);
            lax_mm++;
            assert_non_null(strstr(as_store_policy_of(lax, h), "fallback"));
            as_tensor d = tb;
            d.data = got;
            assert_int_equal(as_store_restore(lax, h, &d), 0);
            assert_memory_equal(got, y, sizeof *y * ne);
            as_store_release(lax, h);
        }
        free(y);
        free(got);
    }
    for (int w = 0; w < MM_COUNT; w++) {
        print_message("mismatch %d: caught %d of %d\n", w, caught[w],
                      tried[w]);
        assert_true(tried[w] >= 5);
        assert_int_equal(caught[w], tried[w]);   /* 100% */
    }
    assert_true(good == 240);
    as_store_stats st;
    assert_int_equal(as_store_stats_take(lax, &st), 0);
    assert_int_equal(st.total.meta_mismatches, lax_mm);
    assert_int_equal(st.kinds[AS_KIND_SOFTMAX_OUTPUT].meta_mismatches,
                     lax_mm);
    assert_true(st.total.fallbacks >= lax_mm);
    bool seen = false;
    for (size_t i = 0; i < st.nlayers; i++)
        if (!strcmp(st.layers[i].name, "fz")) {
            seen = true;
            assert_int_equal(st.layers[i].c.meta_mismatches, lax_mm);
            assert_non_null(strstr(st.layers[i].last_meta_mismatch,
                                   "metadata"));
        }
    assert_true(seen);
    as_store_stats_free(&st);
    as_store_destroy(strict);
    as_store_destroy(lax);
}

/* The codec's own check: what each failure names, and no check without
 * the check argument (as__sm_encode). */
static void test_meta_check_codec(void **st)
{
    (void)st;
    static float y[N];
    int32_t vlen[B] = {T, 21};
    rng = 7;
    probs_fill(PS, vlen, 2.0, &rng, y);
    as__sm_params p;
    assert_int_equal(as__sm_parse("soa:5", 5, &p, NULL, 0, NULL), 0);
    as__sm_layout lay = {.rows = ROWS, .len = T, .queries = T, .causal = true,
                        .valid_len = vlen, .rows_per_item = H * T};
    size_t cap = as__sm_encode_bound(&p, &lay), used;
    void *blob = malloc(cap);
    as__sm_check c;
    assert_int_equal(as__sm_encode_checked(&p, &lay, y, blob, cap, &used, &c), 0);
    assert_int_equal(c.bad_rows, 0);
    assert_int_equal(c.row, -1);
    /* a masked entry holding mass */
    float keep = y[3 * T + 10];
    y[3 * T + 10] = 0.25f;
    assert_int_equal(as__sm_encode_checked(&p, &lay, y, blob, cap, &used, &c), 0);
    assert_int_equal(c.bad_rows, 1);
    assert_int_equal(c.row, 3);
    assert_int_equal(c.what, AS_SM_CHECK_MASKED);
    assert_int_equal(c.key, 10);
    char txt[200];
    assert_non_null(strstr(as__sm_check_text(&c, &lay, txt, sizeof txt),
                           "key 10 is masked"));
    y[3 * T + 10] = keep;
    /* a row that does not sum to 1 */
    y[5 * T + 2] += 0.5f;
    assert_int_equal(as__sm_encode_checked(&p, &lay, y, blob, cap, &used, &c), 0);
    assert_int_equal(c.what, AS_SM_CHECK_SUM);
    assert_int_equal(c.row, 5);
    y[5 * T + 2] -= 0.5f;
    /* a valid last key of exactly 0: row 6 moves its last entry's mass */
    y[6 * T + 0] += y[6 * T + 6];
    y[6 * T + 6] = 0.0f;
    assert_int_equal(as__sm_encode_checked(&p, &lay, y, blob, cap, &used, &c), 0);
    assert_int_equal(c.what, AS_SM_CHECK_TAIL);
    assert_int_equal(c.row, 6);
    assert_int_equal(c.key, 6);
    /* NaN fails the sum */
    y[7 * T] = NAN;
    assert_int_equal(as__sm_encode_checked(&p, &lay, y, blob, cap, &used, &c), 0);
    assert_int_equal(c.bad_rows, 2);
    assert_int_equal(c.row, 6);
    /* underflow, not a mask: zeros at key 3 and at the last valid key 8 of
     * row 8 (a peaked softmax leaves them where the logits were) */
    y[8 * T + 0] += y[8 * T + 3] + y[8 * T + 8];
    y[8 * T + 3] = y[8 * T + 8] = 0.0f;
    assert_int_equal(as__sm_encode_checked(&p, &lay, y, blob, cap, &used, &c), 0);
    assert_int_equal(c.bad_rows, 2);
    free(blob);
}

/* The attention backward decodes each (batch, head) block once
 * (restore_rows) and runs as_op_attn_softmax_bwd on it: the same bits as
 * the codec's backward from the blob, causal or not; keep (the store's own
 * backward over whole rows) the same values. */
static void test_attn_block_backward(void **st)
{
    (void)st;
    static const char *specs[] = {"keep", "soa:5", "solog:4", "solog:2",
                                  "sotk:16:3", "sotk:4:2", "sotk:8:2:0.95"};
    static float y[N], dy[N], dx[N], dxb[N], Pb[T * T];
    int32_t vlen[B] = {T, T};
    for (int causal = 0; causal < 2; causal++) {
        rng = 777 + (uint64_t)causal;
        probs_fill(PS, vlen, 3.0, &rng, y);
        if (!causal)   /* full rows: softmax of every key */
            for (int r = 0; r < ROWS; r++) {
                double z = 0, t[T];
                for (int k = 0; k < T; k++)
                    z += (t[k] = exp(nrand() * 3.0));
                for (int k = 0; k < T; k++)
                    y[r * T + k] = (float)(t[k] / z);
            }
        for (int i = 0; i < N; i++)
            dy[i] = (float)nrand();
        for (size_t s = 0; s < sizeof specs / sizeof *specs; s++) {
            char spec[64];
            snprintf(spec, sizeof spec, "softmax=%s; default=keep", specs[s]);
            as_store *S = store_new(spec, NULL, true, 0, NULL);
            as_store_step_begin(S, 0);
            as_save_info si = {.kind = AS_KIND_SOFTMAX_OUTPUT,
                               .layer = "blk.attn"};
            si.meta.softmax = (as_softmax_meta){.row_len = T, .queries = T,
                                                .causal = causal,
                                                .rows_per_item = H * T};
            as_tensor t = probs_tensor(PS, y);
            as_handle h;
            assert_int_equal(as_store_save(S, &si, &t, &h), 0);
            as_store_phase(S, AS_PHASE_BACKWARD);
            for (int blk = 0; blk < B * H; blk++) {
                memset(Pb, 0x7f, sizeof Pb);
                assert_int_equal(as_store_restore_rows(S, h, blk * T, T, Pb),
                                 0);
                as_op_attn_softmax_bwd(T, causal, Pb, dy + blk * T * T,
                                       dxb + blk * T * T);
            }
            assert_int_equal(as_store_softmax_backward(S, h, dy, dx), 0);
            if (strcmp(specs[s], "keep")) {
                assert_memory_equal(dxb, dx, sizeof dx);
            } else {
                for (int i = 0; i < N; i++)   /* +0 / -0 where masked */
                    assert_true(dxb[i] == dx[i]);
            }
            /* and not trivially: the codec's P is not y, the gradient is
             * not zero */
            double nz = 0;
            for (int i = 0; i < N; i++)
                nz += fabs((double)dxb[i]);
            assert_true(nz > 1e-3);
            as_store_phase(S, AS_PHASE_FORWARD);
            as_store_step_end(S);
            as_store_destroy(S);
        }
    }
}

AS_TEST_MAIN(NULL, NULL,
             cmocka_unit_test(test_round_trip),
             cmocka_unit_test(test_attn_block_backward),
             cmocka_unit_test(test_specs_and_fallbacks),
             cmocka_unit_test(test_meta_fuzz),
             cmocka_unit_test(test_meta_check_codec))

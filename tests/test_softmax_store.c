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
#include "util/rng.h"

static uint64_t rng = 1;
static double nrand(void) { return as_rng_normal(&rng); }

enum { B = 2, H = 3, T = 37, ROWS = B * H * T, N = ROWS * T };

/* causal (B, H, T, T) probabilities with key padding vlen per batch item */
static void fill(float *y, const int32_t *vlen, double sd)
{
    for (int r = 0; r < ROWS; r++) {
        int q = r % T, n = q + 1 < vlen[r / (H * T)] ? q + 1
                                                    : vlen[r / (H * T)];
        double t[T], mx = -1e300, z = 0;
        for (int k = 0; k < n; k++) {
            t[k] = nrand() * sd;
            mx = t[k] > mx ? t[k] : mx;
        }
        for (int k = 0; k < n; k++)
            z += (t[k] = exp(t[k] - mx));
        for (int k = 0; k < T; k++)
            y[r * T + k] = k < n ? (float)(t[k] / z) : 0.0f;
    }
}

static as_save_info info_of(const int32_t *vlen)
{
    as_save_info si = {.kind = AS_KIND_SOFTMAX_OUTPUT, .layer = "blk.attn"};
    si.meta.softmax = (as_softmax_meta){.row_len = T, .queries = T,
                                        .causal = true, .valid_len = vlen,
                                        .rows_per_item = H * T};
    return si;
}

static as_tensor tens(float *d)
{
    return (as_tensor){.data = d, .dtype = AS_F32, .ndim = 4,
                       .shape = {B, H, T, T}};
}

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
    fill(y, vlen, 2.5);
    for (int i = 0; i < N; i++)
        dy[i] = (float)nrand();
    for (size_t s = 0; s < sizeof specs / sizeof *specs; s++) {
        char spec[64], err[256];
        snprintf(spec, sizeof spec, "softmax=%s; default=keep", specs[s]);
        as_store_config cfg = {.policy = spec, .strict = true};
        as_store *S;
        assert_int_equal(as_store_create(&cfg, &S, err, sizeof err), 0);

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
            as_save_info si = info_of(vlen_copy);
            as_tensor t = tens(y);
            as_handle h, h2;
            assert_int_equal(as_store_save(S, &si, &t, &h), 0);
            assert_int_equal(as_store_save(S, &si, &t, &h2), 0);
            /* the store copied what it needs: the caller's buffers may
             * change after the save */
            vlen_copy[1] = 1;
            assert_non_null(strstr(as_store_policy_of(S, h), specs[s]));

            as_store_phase(S, AS_PHASE_BACKWARD);
            as_tensor d = tens(got);
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
    assert_int_equal(as_policy_check("softmax=soa:5; default=keep", err,
                                     sizeof err), 0);
    assert_int_equal(as_policy_check("softmax=sotk:16:3:0.9", err,
                                     sizeof err), 0);
    assert_int_equal(as_policy_check("softmax=soa:0", err, sizeof err),
                     AS_ESPEC);
    assert_non_null(strstr(err, "S, an integer 1..128"));
    assert_int_equal(as_policy_check("softmax=solog:9", err, sizeof err),
                     AS_ESPEC);
    assert_non_null(strstr(err, "bits, 2..4"));

    /* a softmax codec on another kind, or on a tensor whose rows do not
     * match the metadata, falls back to keep (and strict mode says so) */
    as_store *S;
    as_store_config cfg = {.policy = "default=soa:5"};
    assert_int_equal(as_store_create(&cfg, &S, err, sizeof err), 0);
    static float y[N], got[N];
    int32_t vlen[B] = {T, T};
    rng = 99;
    fill(y, vlen, 1.0);
    as_save_info si = {.kind = AS_KIND_GENERIC, .layer = "other"};
    as_tensor t = tens(y), d = tens(got);
    as_handle h;
    assert_int_equal(as_store_save(S, &si, &t, &h), 0);
    assert_int_equal(as_store_restore(S, h, &d), 0);
    assert_memory_equal(got, y, sizeof y);        /* kept exactly */
    si = info_of(vlen);
    si.meta.softmax.row_len = T + 1;              /* wrong metadata */
    assert_int_equal(as_store_save(S, &si, &t, &h), 0);
    assert_non_null(strstr(as_store_policy_of(S, h), "fallback"));
    as_store_destroy(S);

    cfg.strict = true;
    assert_int_equal(as_store_create(&cfg, &S, err, sizeof err), 0);
    assert_int_equal(as_store_save(S, &si, &t, &h), AS_EFALLBACK);
    assert_non_null(strstr(as_store_last_error(S), "row_len"));
    as_store_destroy(S);
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
        fill(y, vlen, 3.0);
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
            char spec[64], err[256];
            snprintf(spec, sizeof spec, "softmax=%s; default=keep", specs[s]);
            as_store_config cfg = {.policy = spec, .strict = true};
            as_store *S;
            assert_int_equal(as_store_create(&cfg, &S, err, sizeof err), 0);
            as_store_step_begin(S, 0);
            as_save_info si = {.kind = AS_KIND_SOFTMAX_OUTPUT,
                               .layer = "blk.attn"};
            si.meta.softmax = (as_softmax_meta){.row_len = T, .queries = T,
                                                .causal = causal,
                                                .rows_per_item = H * T};
            as_tensor t = tens(y);
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_attn_block_backward),
        cmocka_unit_test(test_specs_and_fallbacks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * Corrupted stored bytes (what fuzz/fuzz_codec found, kept as regressions):
 * a codec's header (counts, widths, pointers into its block) is sealed and
 * a flipped byte in it is AS_ECORRUPT naming the item, never a read or
 * write out of bounds; fewbit's NaN positions are checked; a softmax blob
 * checks its header, metadata and each (batch, head) block before parsing
 * rows. Putting the byte back restores the values bit for bit.
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

#include "actstore/store.h"
#include "store/policies/softmax/softmax.h"
#include "store/store_internal.h"
#include "support/store_rep.h"
#include "support/test_main.h"

enum { ROWS = 32, COLS = 64, N = ROWS * COLS };

typedef struct fx {
    as_store *s;
    as_handle h;
    as_rep   *r;
    float     x[N], ref[N], got[N];
} fx;

static void fx_save(fx *f, const char *spec, int kind, int fn)
{
    as_store_config cfg = {.policy = spec, .strict = true};
    char err[256] = "";
    if (as_store_create(&cfg, &f->s, err, sizeof err))
        fail_msg("%s: %s", spec, err);
    uint32_t h = 12345;
    for (size_t r = 0; r < ROWS; r++) {
        double sum = 0;
        for (size_t c = 0; c < COLS; c++) {
            h ^= h << 13, h ^= h >> 17, h ^= h << 5;
            float v = (float)(h % 2001) * 1e-3f - 1.0f;
            f->x[r * COLS + c] = kind == AS_KIND_SOFTMAX_OUTPUT ? expf(3 * v) : 4 * v;
            sum += f->x[r * COLS + c];
        }
        for (size_t c = 0; kind == AS_KIND_SOFTMAX_OUTPUT && c < COLS; c++)
            f->x[r * COLS + c] = (float)(f->x[r * COLS + c] / sum);
    }
    if (fn == AS_FN_GELU)
        f->x[9] = NAN;
    as_save_info info = {.kind = kind, .layer = "blk"};
    if (kind == AS_KIND_SOFTMAX_OUTPUT)
        info.meta.softmax = (as_softmax_meta){.row_len = COLS, .queries = 8};
    else
        info.meta.act.fn = fn;
    as_tensor t = {.data = f->x, .dtype = AS_F32, .ndim = 2, .shape = {ROWS, COLS}};
    assert_int_equal(as_store_save(f->s, &info, &t, &f->h), 0);
    f->r = rep_of(f->s, f->h);
    assert_true(f->r->nblocks >= 1);
    t.data = f->ref;
    assert_int_equal(as_store_restore(f->s, f->h, &t), 0);
}

static int restore(fx *f)
{
    as_tensor t = {.data = f->got, .dtype = AS_F32, .ndim = 2, .shape = {ROWS, COLS}};
    return as_store_restore(f->s, f->h, &t);
}

/* Flip byte off of block 0: the restore is AS_ECORRUPT with a message;
 * flipped back, the values come back. */
static void flip_check(fx *f, size_t off, const char *what)
{
    uint8_t *p = f->r->blocks[0].ptr;
    p[off] ^= 0x40;
    int rc = restore(f);
    if (rc != AS_ECORRUPT)
        fail_msg("%s, byte %zu flipped: %s, not AS_ECORRUPT", what, off, as_strerror(rc));
    assert_non_null(strstr(as_store_last_error(f->s), "corrupt"));
    p[off] ^= 0x40;
    assert_int_equal(restore(f), 0);
    assert_memory_equal(f->got, f->ref, sizeof f->ref);
}

static void header_case(const char *spec, int kind, int fn)
{
    fx *f = calloc(1, sizeof *f);
    assert_non_null(f);
    fx_save(f, spec, kind, fn);
    for (size_t off = 0; off < 16; off++)    /* the counts at the header's start */
        flip_check(f, off, spec);
    as_store_destroy(f->s);
    free(f);
}

static void test_header_fp16(void **st) { (void)st; header_case("default=fp16", AS_KIND_GENERIC, 0); }
static void test_header_q8(void **st) { (void)st; header_case("default=q8", AS_KIND_GENERIC, 0); }
static void test_header_q2(void **st) { (void)st; header_case("default=q2", AS_KIND_GENERIC, 0); }
static void test_header_aq(void **st) { (void)st; header_case("default=aq:3", AS_KIND_GENERIC, 0); }
static void test_header_sign(void **st)
{
    (void)st;
    header_case("default=sign", AS_KIND_ACTIVATION_INPUT, AS_FN_RELU);
}
static void test_header_fewbit(void **st)
{
    (void)st;
    header_case("default=fewbit:2", AS_KIND_ACTIVATION_INPUT, AS_FN_GELU);
}

static void test_header_bitpack(void **st)
{
    (void)st;
    as_store_config cfg = {.policy = "default=bitpack", .strict = true};
    as_store *s;
    assert_int_equal(as_store_create(&cfg, &s, NULL, 0), 0);
    static int32_t x[N], y[N];
    for (size_t i = 0; i < N; i++)
        x[i] = (int32_t)(i * 7 % 300) - 100;
    as_tensor t = {.data = x, .dtype = AS_I32, .ndim = 2, .shape = {ROWS, COLS}};
    as_save_info info = {.kind = AS_KIND_INDEX, .layer = "idx"};
    as_handle h;
    assert_int_equal(as_store_save(s, &info, &t, &h), 0);
    as_rep *r = rep_of(s, h);
    t.data = y;
    for (size_t off = 0; off < 24; off++) {   /* count, minimum, width */
        uint8_t *p = r->blocks[0].ptr;
        p[off] ^= 0x08;
        assert_int_equal(as_store_restore(s, h, &t), AS_ECORRUPT);
        p[off] ^= 0x08;
        assert_int_equal(as_store_restore(s, h, &t), 0);
        assert_memory_equal(x, y, sizeof x);
    }
    as_store_destroy(s);
}

static void test_fewbit_nan_position(void **st)
{
    (void)st;
    fx *f = calloc(1, sizeof *f);
    assert_non_null(f);
    fx_save(f, "default=fewbit:2", AS_KIND_ACTIVATION_INPUT, AS_FN_GELU);
    /* the one NaN position follows the 160-byte header and the codes */
    int64_t *pos = (int64_t *)(void *)((uint8_t *)f->r->blocks[0].ptr + 160 +
                                       8 * ((N * 2 + 63) / 64));
    assert_int_equal(*pos, 9);
    *pos = N + 1000;
    assert_int_equal(restore(f), AS_ECORRUPT);
    float dy[N];
    for (size_t i = 0; i < N; i++)
        dy[i] = 1.0f;
    assert_int_equal(as_store_act_backward(f->s, f->h, dy, f->got), AS_ECORRUPT);
    *pos = 9;
    assert_int_equal(restore(f), 0);
    assert_memory_equal(f->got, f->ref, sizeof f->ref);
    as_store_destroy(f->s);
    free(f);
}

static void test_softmax_blocks(void **st)
{
    (void)st;
    static const char *const specs[] = {"default=soa:3", "default=solog:3",
                                        "default=sotk:8:3"};
    for (size_t k = 0; k < 3; k++) {
        fx *f = calloc(1, sizeof *f);
        assert_non_null(f);
        fx_save(f, specs[k], AS_KIND_SOFTMAX_OUTPUT, 0);
        for (size_t off = 0; off < 64; off += 5)   /* header, metadata */
            flip_check(f, off, specs[k]);
        /* a byte of the last block's payload: the other blocks still
         * decode, the last one and the whole tensor do not */
        as__sm_info info;
        uint8_t *p = f->r->blocks[0].ptr;
        assert_int_equal(as__sm_blob_info(p, f->r->blocks[0].size, &info), 0);
        size_t end = info.bytes;
        p[end - 3] ^= 0x10;
        assert_int_equal(as_store_restore_rows(f->s, f->h, 0, 24, f->got), 0);
        assert_memory_equal(f->got, f->ref, 24 * COLS * sizeof(float));
        assert_int_equal(as_store_restore_rows(f->s, f->h, 24, 8, f->got), AS_ECORRUPT);
        assert_int_equal(restore(f), AS_ECORRUPT);
        float dy[N];
        for (size_t i = 0; i < N; i++)
            dy[i] = (float)(i % 5);
        assert_int_equal(as_store_softmax_backward(f->s, f->h, dy, f->got), AS_ECORRUPT);
        p[end - 3] ^= 0x10;
        assert_int_equal(restore(f), 0);
        assert_memory_equal(f->got, f->ref, sizeof f->ref);
        as_store_destroy(f->s);
        free(f);
    }
}

AS_TEST_MAIN(NULL, NULL,
             cmocka_unit_test(test_header_fp16),
             cmocka_unit_test(test_header_q8),
             cmocka_unit_test(test_header_q2),
             cmocka_unit_test(test_header_aq),
             cmocka_unit_test(test_header_sign),
             cmocka_unit_test(test_header_fewbit),
             cmocka_unit_test(test_header_bitpack),
             cmocka_unit_test(test_fewbit_nan_position),
             cmocka_unit_test(test_softmax_blocks))

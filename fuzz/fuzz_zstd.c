/*
 * libFuzzer target: the zstd codec's decoder fed corrupted blobs. A tensor
 * (dtype and content chosen by the input) is saved under zstd; the input
 * then patches bytes of a stored frame, optionally re-stamping the frame's
 * outer checksum so the corruption reaches libzstd and the un-shuffle /
 * zero-mask stages. A restore must give 0 (the bytes decoded to a tensor of
 * the saved size) or AS_ECORRUPT with the destination untouched; never a
 * crash or an access outside the buffers (ASan).
 *
 * Input: byte 0 = case (dtype x content), byte 1 = flags (bit 0:
 * re-stamp the checksum), then (u16 offset, u8 xor) triples.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "actstore/store.h"
#include "store/policies/quant.h"
#include "store/store_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { NBYTES = 12000, NCASE = 16 };   /* one frame per tensor, small: fast */

/* One saved tensor per (dtype, content), saved once; its pristine frame
 * bytes are put back after every input. */
typedef struct fcase {
    as_handle h;
    as_item  *it;
    as_rep   *r;
    uint8_t  *blob, *pristine;
    size_t    len;
    as_tensor d;
} fcase;

static as_store *store;
static fcase cases[NCASE];
static uint8_t *dst;

static void fill(uint8_t *p, unsigned flavor)
{
    uint32_t h = 0x9e3779b9u * (flavor + 1u);
    for (size_t i = 0; i < NBYTES / 4; i++) {
        h ^= h << 13, h ^= h >> 17, h ^= h << 5;
        float v;
        switch (flavor % 4) {
        case 0: v = (h & 3) ? 0.0f : (float)(h % 1000) * 1e-3f; memcpy(p + 4 * i, &v, 4); break;
        case 1: v = (float)(int32_t)h * 1e-9f; memcpy(p + 4 * i, &v, 4); break;
        case 2: { uint32_t u = h % 7; memcpy(p + 4 * i, &u, 4); } break;
        default: { uint32_t u = (uint32_t)(i / 64) * 3; memcpy(p + 4 * i, &u, 4); } break;
        }
    }
}

static fcase *get_case(unsigned c)
{
    fcase *f = &cases[c];
    if (f->blob)
        return f;
    static const int dtypes[] = {AS_F32, AS_F16, AS_U8, AS_I32};
    int dtype = dtypes[c / 4];
    size_t es = as_dtype_size(dtype);
    uint8_t *src = malloc(NBYTES);
    if (!src)
        abort();
    fill(src, c % 4);
    as_tensor t = {.data = src, .dtype = dtype, .ndim = 2,
                   .shape = {(int64_t)(NBYTES / es / 100), 100}};
    as_save_info info = {.kind = AS_KIND_GENERIC, .layer = "fuzz"};
    if (as_store_save(store, &info, &t, &f->h) ||
        as__lookup_rep(store, f->h, &f->it, &f->r, "fuzz"))
        abort();
    f->blob = as__zstd_frame_bytes(f->r->state, 0, &f->len);
    f->pristine = malloc(f->len ? f->len : 1);
    if (!f->blob || !f->pristine)
        abort();
    memcpy(f->pristine, f->blob, f->len);
    f->d = t;
    free(src);
    return f;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!store) {
        as_store_config cfg = {.policy = "default=zstd"};
        if (as_store_create(&cfg, &store, NULL, 0) || !(dst = malloc(NBYTES)))
            abort();
    }
    if (size < 2)
        return 0;
    fcase *f = get_case(data[0] % NCASE);
    for (size_t k = 2; f->len && k + 3 <= size; k += 3) {
        size_t off = ((size_t)data[k] | (size_t)data[k + 1] << 8) % f->len;
        f->blob[off] ^= data[k + 2] ? data[k + 2] : 1;
    }
    if (data[1] & 1)
        as__zstd_frame_rehash(f->r->state, 0);
    as_tensor d = f->d;
    d.data = dst;
    size_t bytes = as_tensor_bytes(&d);
    memset(dst, 0x5a, bytes);
    int rc = as_store_restore(store, f->h, &d);
    if (rc != 0 && rc != AS_ECORRUPT) {
        fprintf(stderr, "restore of a corrupted blob: %s\n", as_strerror(rc));
        abort();
    }
    /* The outer checksum is checked before any write: a corruption it
     * catches leaves the destination untouched. Past it (re-stamped), a
     * corruption libzstd finds mid-frame may leave decoded bytes behind;
     * bounded, within the destination. */
    if (rc == AS_ECORRUPT && !(data[1] & 1))
        for (size_t i = 0; i < bytes; i++)
            if (dst[i] != 0x5a) {
                fprintf(stderr, "AS_ECORRUPT but byte %zu written\n", i);
                abort();
            }
    memcpy(f->blob, f->pristine, f->len);
    as__zstd_frame_rehash(f->r->state, 0);
    return 0;
}

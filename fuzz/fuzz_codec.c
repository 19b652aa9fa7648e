/*
 * libFuzzer target: every codec's decoder fed corrupted stored bytes (zstd
 * has its own target, fuzz_zstd). One tensor per case is saved once under
 * the case's policy; each input then flips bytes of what the item stores
 * (every block the policy allocated through its context: headers, codes,
 * scales, bitmaps, blobs; for offload, the file), decodes through one entry
 * point (restore, restore_rows, restore_view, or the policy's own
 * act / softmax backward), and puts the pristine bytes back.
 *
 * Contract checked: the decode returns 0 or AS_ECORRUPT (an error naming
 * the item), never crashes and never reads or writes outside the stored
 * bytes and the destination (ASan: destinations are allocated to their
 * exact size); the next decode of the pristine bytes gives the reference
 * values again (nothing cached from a corrupted decode).
 *
 * Input: byte 0 = case, byte 1 = entry point (bits 0-1) and, for offload,
 * truncate the file (bit 2) to the length in bytes 2-3; then (u16 offset,
 * u8 xor) triples over the stored bytes.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "actstore/store.h"
#include "layers/ops.h"
#include "store/policies/quant.h"
#include "store/store_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { ROWS = 16, COLS = 64, N = ROWS * COLS };   /* small: fast inputs */
enum { T_PLAIN, T_SMALLINT, T_U8, T_RELU, T_GELU, T_SOFTMAX, T_CONV, T_CONV_SPARSE };

typedef struct spec {
    const char *policy;
    int         tensor;    /* T_* */
} spec;

static const spec specs[] = {
    {"default=fp16", T_PLAIN},           {"default=bf16", T_PLAIN},
    {"default=q8", T_PLAIN},             {"default=q4", T_PLAIN},
    {"default=q2", T_PLAIN},             {"default=aq", T_PLAIN},
    {"default=aq:2:g=128:rot", T_PLAIN}, {"default=aq:3:rn", T_PLAIN},
    {"default=aq:8:g=8", T_PLAIN},       {"default=sign", T_RELU},
    {"default=fewbit:2", T_GELU},        {"default=fewbit:3", T_GELU},
    {"default=bitpack", T_SMALLINT},     {"default=bitpack", T_U8},
    {"default=soa:5", T_SOFTMAX},        {"default=soa:3:fullden", T_SOFTMAX},
    {"default=solog:4", T_SOFTMAX},      {"default=sotk:16:3", T_SOFTMAX},
    {"default=offload", T_PLAIN},        {"default=keep", T_PLAIN},
    {"conv_input=invert::stream:f32; default=keep", T_CONV},
    {"conv_input=invert::cache:q16; default=keep", T_CONV},
    {"conv_input=invert; default=keep", T_CONV_SPARSE},
};
enum { NCASE = sizeof specs / sizeof specs[0] };

/* conv geometry of the invert cases: x (1, 2, 6, 6), y (1, 4, 6, 6) */
enum { CN = 1, CIN = 2, COUT = 4, CH = 6, CK = 3 };

typedef struct fcase {
    as_store *s;
    as_handle h;
    as_rep   *r;
    as_tensor d;             /* shape and dtype of the saved tensor */
    uint8_t  *pristine;      /* concatenated stored bytes */
    size_t    len;
    int       fd;            /* offload: the file, else -1 */
    float    *ref;           /* pristine restore */
    float    *w, *b, *y;     /* conv: weights, bias, output (kept alive) */
    bool      ready;
} fcase;

static fcase cases[NCASE];

static uint32_t hash(uint32_t *h)
{
    *h ^= *h << 13, *h ^= *h >> 17, *h ^= *h << 5;
    return *h;
}

static float urand(uint32_t *h) { return (float)(hash(h) % 20001) * 1e-4f - 1.0f; }

/* The tensor of a case, its save info and (conv) its dependency. */
static void make_tensor(fcase *f, int kind, void *x, as_save_info *info)
{
    uint32_t h = 0x9e3779b9u * (unsigned)(kind + 1);
    float *v = x;
    f->d = (as_tensor){.data = x, .dtype = AS_F32, .ndim = 2, .shape = {ROWS, COLS}};
    *info = (as_save_info){.kind = AS_KIND_GENERIC, .layer = "fuzz"};
    switch (kind) {
    case T_PLAIN:
        for (size_t i = 0; i < N; i++)
            v[i] = i % 97 == 0 ? 0.0f : urand(&h) * (i % 13 == 0 ? 50.0f : 2.0f);
        break;
    case T_SMALLINT:
        f->d.dtype = AS_I32;
        for (size_t i = 0; i < N; i++)
            ((int32_t *)x)[i] = (int32_t)(hash(&h) % 300) - 100;
        break;
    case T_U8:
        f->d.dtype = AS_U8;
        info->kind = AS_KIND_INDEX;
        for (size_t i = 0; i < N; i++)
            ((uint8_t *)x)[i] = (uint8_t)(hash(&h) % 4);
        break;
    case T_RELU:
    case T_GELU:
        info->kind = AS_KIND_ACTIVATION_INPUT;
        info->meta.act.fn = kind == T_RELU ? AS_FN_RELU : AS_FN_GELU;
        for (size_t i = 0; i < N; i++)
            v[i] = i == 7 ? NAN : urand(&h) * 4.0f;
        break;
    case T_SOFTMAX:
        info->kind = AS_KIND_SOFTMAX_OUTPUT;
        info->meta.softmax = (as_softmax_meta){.row_len = COLS};
        for (size_t r = 0; r < ROWS; r++) {
            double sum = 0;
            for (size_t c = 0; c < COLS; c++)
                sum += v[r * COLS + c] = expf(urand(&h) * 6.0f);
            for (size_t c = 0; c < COLS; c++)
                v[r * COLS + c] = (float)(v[r * COLS + c] / sum);
        }
        break;
    }
}

/* Save the conv output y = conv(x) + b (keep) and x under invert. */
static as_handle save_conv(fcase *f, bool sparse, float *x)
{
    as_op_conv_geom g = {.N = CN, .Cin = CIN, .H = CH, .W = CH, .Cout = COUT,
                         .kh = CK, .kw = CK, .stride = 1, .pad = 1};
    uint32_t h = sparse ? 7u : 11u;
    if (as_op_conv_geom_init(&g))
        abort();
    size_t nx = (size_t)CN * CIN * CH * CH, ny = (size_t)CN * COUT * g.Ho * g.Wo;
    f->w = malloc(sizeof(float) * COUT * CIN * CK * CK);
    f->b = malloc(sizeof(float) * COUT);
    f->y = malloc(sizeof(float) * ny);
    float *ws = malloc(sizeof(float) * (as_op_conv_workspace(&g) + 1));
    if (!f->w || !f->b || !f->y || !ws)
        abort();
    for (size_t i = 0; i < (size_t)COUT * CIN * CK * CK; i++)
        f->w[i] = urand(&h) * 0.5f + (i % (CIN * CK * CK + 1) == 0 ? 1.0f : 0.0f);
    for (size_t i = 0; i < COUT; i++)
        f->b[i] = urand(&h) * 0.1f;
    for (size_t i = 0; i < nx; i++) {
        size_t px = i % CH, py = i / CH % CH;
        bool border = px == 0 || py == 0 || px == CH - 1 || py == CH - 1;
        x[i] = sparse && border && i % 5 ? 0.0f : urand(&h);
    }
    as_op_conv_fwd(&g, x, f->w, f->b, f->y, ws);
    free(ws);
    as_handle hy;
    as_save_info oi = {.kind = AS_KIND_CONV_OUTPUT, .layer = "conv"};
    as_tensor yt = {.data = f->y, .dtype = AS_F32, .ndim = 4,
                    .shape = {CN, COUT, g.Ho, g.Wo}};
    if (as_store_save(f->s, &oi, &yt, &hy))
        abort();
    as_save_info xi = {.kind = AS_KIND_CONV_INPUT, .layer = "conv"};
    xi.meta.conv = (as_conv_meta){.n = CN, .cin = CIN, .h = CH, .w = CH, .cout = COUT,
                                  .kh = CK, .kw = CK, .pad_h = 1, .pad_w = 1,
                                  .weight = f->w, .bias = f->b, .weight_version = 1,
                                  .output = hy};
    f->d = (as_tensor){.data = x, .dtype = AS_F32, .ndim = 4, .shape = {CN, CIN, CH, CH}};
    as_handle hx;
    if (as_store_save(f->s, &xi, &f->d, &hx)) {
        fprintf(stderr, "invert save: %s\n", as_store_last_error(f->s));
        abort();
    }
    return hx;
}

static void gather(fcase *f, bool put_back)
{
    size_t off = 0;
    for (size_t i = 0; i < f->r->nblocks; i++) {
        const as_block *b = &f->r->blocks[i];
        if (put_back)
            memcpy(b->ptr, f->pristine + off, b->size);
        else if (f->pristine)
            memcpy(f->pristine + off, b->ptr, b->size);
        off += b->size;
    }
    f->len = off;
}

static void offload_put_back(fcase *f)
{
    if (ftruncate(f->fd, (off_t)f->len) || pwrite(f->fd, f->pristine, f->len, 0) != (ssize_t)f->len)
        abort();
}

static fcase *get_case(unsigned c)
{
    fcase *f = &cases[c];
    if (f->ready)
        return f;
    as_store_config cfg = {.policy = specs[c].policy, .strict = true};
    char err[256];
    if (as_store_create(&cfg, &f->s, err, sizeof err)) {
        fprintf(stderr, "case %u (%s): %s\n", c, specs[c].policy, err);
        abort();
    }
    static float x[N];
    as_save_info info;
    int kind = specs[c].tensor;
    if (kind == T_CONV || kind == T_CONV_SPARSE) {
        f->h = save_conv(f, kind == T_CONV_SPARSE, x);
    } else {
        make_tensor(f, kind, x, &info);
        if (as_store_save(f->s, &info, &f->d, &f->h)) {
            fprintf(stderr, "case %u save: %s\n", c, as_store_last_error(f->s));
            abort();
        }
    }
    as_store_phase(f->s, AS_PHASE_FORWARD);   /* no cache of regenerated tensors */
    as_item *it;
    if (as__lookup_rep(f->s, f->h, &it, &f->r, "fuzz"))
        abort();
    as__rep_unref(f->s, f->r);   /* the item keeps it */
    as__item_unref(f->s, it);
    char want[32];
    snprintf(want, sizeof want, "=%s", f->r->ops->name);
    if (!strstr(specs[c].policy, want)) {
        fprintf(stderr, "case %u (%s) stored as %s\n", c, specs[c].policy, f->r->ops->name);
        abort();
    }
    f->fd = -1;
    if (!strcmp(f->r->ops->name, "offload")) {
        as__offload_wait_idle();
        struct stat stt;
        if ((f->fd = as__offload_fd(f->r->state)) < 0 || fstat(f->fd, &stt))
            abort();
        f->len = (size_t)stt.st_size;
        f->pristine = malloc(f->len);
        if (!f->pristine || pread(f->fd, f->pristine, f->len, 0) != (ssize_t)f->len)
            abort();
    } else {
        gather(f, false);
        f->pristine = malloc(f->len ? f->len : 1);
        if (!f->pristine)
            abort();
        gather(f, false);
    }
    size_t bytes = as_tensor_bytes(&f->d);
    f->ref = malloc(bytes);
    as_tensor d = f->d;
    d.data = f->ref;
    if (!f->ref || as_store_restore(f->s, f->h, &d)) {
        fprintf(stderr, "case %u pristine restore: %s\n", c, as_store_last_error(f->s));
        abort();
    }
    f->ready = true;
    return f;
}

static void corrupt(fcase *f, const uint8_t *p, size_t n)
{
    if (!f->len)
        return;
    for (size_t k = 0; k + 3 <= n; k += 3) {
        size_t off = ((size_t)p[k] | (size_t)p[k + 1] << 8) % f->len;
        uint8_t x = p[k + 2] ? p[k + 2] : 1;
        if (f->fd >= 0) {
            uint8_t v = f->pristine[off] ^ x;
            if (pwrite(f->fd, &v, 1, (off_t)off) != 1)
                abort();
        } else {
            size_t base = 0, i = 0;
            while (off >= base + f->r->blocks[i].size)
                base += f->r->blocks[i++].size;
            ((uint8_t *)f->r->blocks[i].ptr)[off - base] ^= x;
        }
    }
}

/* Decode through entry point e into exact-size buffers; returns the code. */
static int decode(fcase *f, unsigned e)
{
    size_t bytes = as_tensor_bytes(&f->d), n = bytes / as_dtype_size(f->d.dtype);
    int rc;
    if (e == 1 && f->d.dtype == AS_F32) {          /* rows 5 .. 12 of (rows, last dim) */
        int64_t cols = f->d.shape[f->d.ndim - 1], nrows = 7;
        float *dst = malloc(sizeof(float) * (size_t)(nrows * cols));
        rc = as_store_restore_rows(f->s, f->h, 5, nrows, dst);
        free(dst);
    } else if (e == 2 && f->d.dtype == AS_F32 &&
               (f->r->ops->softmax_backward || f->r->ops->act_backward)) {
        float *dy = malloc(bytes), *dx = malloc(bytes);
        for (size_t i = 0; i < n; i++)
            dy[i] = (float)(i % 7) - 3.0f;
        rc = f->r->ops->softmax_backward ? as_store_softmax_backward(f->s, f->h, dy, dx)
                                         : as_store_act_backward(f->s, f->h, dy, dx);
        free(dy);
        free(dx);
    } else if (e == 3) {
        const as_tensor *v;
        rc = as_store_restore_view(f->s, f->h, &v);
        as__mat_drop_all(f->s, true);   /* materialized once: decode again next time */
    } else {
        uint8_t *dst = malloc(bytes);
        as_tensor d = f->d;
        d.data = dst;
        rc = as_store_restore(f->s, f->h, &d);
        free(dst);
    }
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4)
        return 0;
    fcase *f = get_case(data[0] % NCASE);
    unsigned e = data[1] & 3;
    corrupt(f, data + 4, size - 4);
    if (f->fd >= 0 && (data[1] & 4)) {
        size_t keep = ((size_t)data[2] | (size_t)data[3] << 8) % (f->len + 1);
        if (ftruncate(f->fd, (off_t)keep))
            abort();
    }
    int rc = decode(f, e);
    if (rc != 0 && rc != AS_ECORRUPT) {
        fprintf(stderr, "%s, entry %u: %s (%s)\n", specs[data[0] % NCASE].policy, e,
                as_strerror(rc), as_store_last_error(f->s));
        abort();
    }
    if (f->fd >= 0)
        offload_put_back(f);
    else
        gather(f, true);
    /* the pristine bytes decode to the reference again */
    size_t bytes = as_tensor_bytes(&f->d);
    uint8_t *dst = malloc(bytes);
    as_tensor d = f->d;
    d.data = dst;
    if (as_store_restore(f->s, f->h, &d) || memcmp(dst, f->ref, bytes)) {
        fprintf(stderr, "%s: pristine bytes no longer decode to the reference\n",
                specs[data[0] % NCASE].policy);
        abort();
    }
    free(dst);
    return 0;
}

/*
 * zstd[:level] — lossless compression of any tensor (bit-exact restore).
 *
 * The tensor is cut into frames of 1 MiB raw (independent zstd frames, so
 * memory stays small and rows can be decoded alone). Each frame is
 * transformed before compression:
 *   - f32/i32/f16/bf16: byte shuffle (all byte 0 of the elements, then all
 *     byte 1, ...): exponent bytes, which vary little, end up together;
 *   - if at least 1/8 of the frame's elements are all-zero bits (ReLU
 *     outputs), "zero mask" mode: a bitmap of the nonzero elements, then
 *     only the nonzero elements, shuffled. Plain shuffling would record
 *     every zero once per byte plane (four times for f32);
 *   - u8: no transform.
 * The transformed frame is cut into segments (the zero bitmap, then each
 * byte plane; u8 frames are one segment). Each segment is tried two ways:
 * zstd at the rule's level on its first 4 KiB, and zstd in a literals-only
 * setting (fastest level, minimum match 7, Huffman-coded literals) on its
 * first 16 KiB. The smaller output per input byte wins (literals-only on a
 * tie within 1%), and a
 * segment that neither shrinks by 3% is stored raw. Low mantissa planes of
 * real-valued data are noise (stored raw at memcpy speed); exponent planes
 * are a few symbols with short repeats, which LZ matching at level 1
 * compresses slower and worse than Huffman coding alone; data with real
 * repeats keeps LZ.
 * Compressed segments carry zstd's own content checksum (XXH64); in
 * addition every frame's stored bytes have a 64-bit checksum (as__hash64)
 * kept beside them, and all are verified before anything is written to the
 * destination, so a corrupted blob gives AS_ECORRUPT and leaves the
 * destination untouched.
 *
 * Level: zstd:N, N in [-7, 19] (negative = zstd's fast levels); default 1.
 *
 * Contexts and work buffers are pooled per parsed rule (reused by every
 * thread that saves under it) and their memory comes from the store's arena
 * under the workspace tag (ZSTD_customMem).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ZSTD_STATIC_LINKING_ONLY /* ZSTD_customMem, ZSTD_createCCtx_advanced */
#include <zstd.h>
#include <zstd_errors.h>

#include "store/policies/quant.h"
#include "store/policy.h"

#define ZFRAME   ((size_t)1 << 20)  /* raw bytes per frame */
#define ZPOOL    4                  /* idle work sets kept per rule */
#define ZLEVEL_MIN (-7)
#define ZLEVEL_MAX 19

enum { ZMODE_PLAIN = 0, ZMODE_SHUF = 1, ZMODE_MASK = 2 };

/* ---- workspace memory: the store's arena, workspace tag ------------------ */

#define WS_HDR 64   /* keeps the returned pointer 64-byte aligned */

/* Why the calling thread's last workspace allocation failed (AS_EBUDGET or
 * AS_ENOMEM), so a save over budget reports the budget. */
static _Thread_local int ws_last_rc;

/* opaque: the store's arena (a store always has one). */
static void *ws_alloc(void *opaque, size_t size)
{
    as_arena *a = opaque;
    as_block b;
    int rc = as_alloc(a, size + WS_HDR, AS_TAG_WORKSPACE, AS_LAYER_NONE, &b);
    if (rc) {
        ws_last_rc = rc;
        return NULL;
    }
    memcpy(b.ptr, &b, sizeof b);
    return (char *)b.ptr + WS_HDR;
}

static void ws_free(void *opaque, void *p)
{
    as_arena *a = opaque;
    if (!p)
        return;
    char *base = (char *)p - WS_HDR;
    as_block b;
    memcpy(&b, base, sizeof b);
    as_free(a, &b);
}

/* ---- pooled work sets -------------------------------------------------- */

typedef struct zwork {
    as_arena     *arena;   /* where its memory lives */
    ZSTD_CCtx    *c;       /* the rule's level */
    ZSTD_CCtx    *cl;      /* literals only: fastest level, Huffman on */
    ZSTD_DCtx    *d;
    int           level;   /* level set on c */
    uint8_t      *buf;     /* transformed frame: bitmap + elements */
    uint8_t      *tmp;     /* compaction / unshuffle scratch */
    uint8_t      *out;     /* compressed frame, or a decoded raw frame */
    size_t        outcap;
    struct zwork *next;
} zwork;

typedef struct zparams {
    int             level;
    pthread_mutex_t mu;
    as_arena       *arena;   /* bound at first use */
    zwork          *idle;
    int             nidle;
} zparams;

static void zwork_free(zwork *w)
{
    if (!w)
        return;
    ZSTD_freeCCtx(w->c);
    ZSTD_freeCCtx(w->cl);
    ZSTD_freeDCtx(w->d);
    ws_free(w->arena, w->buf);
    ws_free(w->arena, w->tmp);
    ws_free(w->arena, w->out);
    ws_free(w->arena, w);
}

static zwork *zwork_new(as_arena *a, int level)
{
    zwork *w = ws_alloc(a, sizeof *w);
    if (!w)
        return NULL;
    memset(w, 0, sizeof *w);
    w->arena = a;
    ZSTD_customMem cm = {ws_alloc, ws_free, a};
    w->c = ZSTD_createCCtx_advanced(cm);
    w->cl = ZSTD_createCCtx_advanced(cm);
    w->d = ZSTD_createDCtx_advanced(cm);
    w->outcap = ZSTD_compressBound(ZFRAME + ZFRAME / 8) + 4096;   /* + segments */
    w->buf = ws_alloc(a, ZFRAME + ZFRAME / 8 + 64);
    w->tmp = ws_alloc(a, ZFRAME + 64);
    w->out = ws_alloc(a, w->outcap);
    w->level = level;
    if (!w->c || !w->cl || !w->d || !w->buf || !w->tmp || !w->out ||
        ZSTD_isError(ZSTD_CCtx_setParameter(w->cl, ZSTD_c_compressionLevel, -100)) ||
        ZSTD_isError(ZSTD_CCtx_setParameter(w->cl, ZSTD_c_minMatch, 7)) ||
        ZSTD_isError(ZSTD_CCtx_setParameter(w->cl, ZSTD_c_literalCompressionMode,
                                            ZSTD_ps_enable)) ||
        ZSTD_isError(ZSTD_CCtx_setParameter(w->cl, ZSTD_c_checksumFlag, 1)) ||
        ZSTD_isError(ZSTD_CCtx_setParameter(w->c, ZSTD_c_compressionLevel,
                                            level)) ||
        ZSTD_isError(ZSTD_CCtx_setParameter(w->c, ZSTD_c_checksumFlag, 1))) {
        zwork_free(w);
        return NULL;
    }
    return w;
}

static zwork *zwork_get(zparams *p, as_pctx *ctx)
{
    as_arena *a = as_store_arena(as_pctx_store(ctx));
    zwork *w = NULL;
    pthread_mutex_lock(&p->mu);
    if (!p->arena)
        p->arena = a;
    if (p->arena == a && p->idle) {
        w = p->idle;
        p->idle = w->next;
        p->nidle--;
    }
    pthread_mutex_unlock(&p->mu);
    return w ? w : zwork_new(a, p->level);
}

static void zwork_put(zparams *p, zwork *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&p->mu);
    if (w->arena == p->arena && p->nidle < ZPOOL) {
        w->next = p->idle;
        p->idle = w;
        p->nidle++;
        w = NULL;
    }
    pthread_mutex_unlock(&p->mu);
    zwork_free(w);
}

/* ---- arguments ----------------------------------------------------------- */

static int zstd_parse(const char *args, size_t len, void **params, char *err,
                      size_t errlen, size_t *err_off)
{
    int level = 1;
    *params = NULL;
    if (len) {
        size_t i = 0;
        int neg = args[0] == '-';
        i += (size_t)neg;
        long v = 0;
        if (i >= len) {
            snprintf(err, errlen, "expected a level");
            *err_off = i;
            return AS_ESPEC;
        }
        for (; i < len; i++) {
            if (args[i] < '0' || args[i] > '9' || v > 1000) {
                snprintf(err, errlen, "expected a level in [%d, %d]",
                         ZLEVEL_MIN, ZLEVEL_MAX);
                *err_off = i;
                return AS_ESPEC;
            }
            v = v * 10 + (args[i] - '0');
        }
        v = neg ? -v : v;
        if (v < ZLEVEL_MIN || v > ZLEVEL_MAX || v == 0) {
            snprintf(err, errlen, "expected a level in [%d, %d] other than 0",
                     ZLEVEL_MIN, ZLEVEL_MAX);
            *err_off = 0;
            return AS_ESPEC;
        }
        level = (int)v;
    }
    zparams *p = calloc(1, sizeof *p);
    if (!p) {
        snprintf(err, errlen, "out of memory");
        *err_off = 0;
        return AS_ENOMEM;
    }
    p->level = level;
    pthread_mutex_init(&p->mu, NULL);
    *params = p;
    return 0;
}

static void zstd_free_params(void *params)
{
    zparams *p = params;
    if (!p)
        return;
    while (p->idle) {
        zwork *w = p->idle;
        p->idle = w->next;
        zwork_free(w);
    }
    pthread_mutex_destroy(&p->mu);
    free(p);
}

/* ---- frame transforms ---------------------------------------------------- */

#define ZSEG_MAX 5          /* bitmap + 4 byte planes */
#define ZTRIAL   (16u << 10)/* bytes of a segment tried literals-only */
#define ZTRIAL_LZ (4u << 10)/* bytes of a segment tried at the rule's level */

typedef struct zframe {
    const uint8_t *data;   /* stored segments, in a context block */
    uint64_t       hash;   /* as__hash64 of data */
    uint32_t       csize;  /* stored bytes (all segments) */
    uint32_t       raw;    /* raw bytes */
    uint32_t       tsize;  /* transformed bytes */
    uint32_t       seg[ZSEG_MAX];   /* stored bytes of each segment */
    uint8_t        mode;
    uint8_t        nseg;
    uint8_t        rawmask;         /* bit i: segment i stored raw */
} zframe;

typedef struct zhdr {
    uint64_t bytes;        /* raw tensor bytes */
    uint64_t row_bytes;    /* bytes of one row (last dim), for decode_rows */
    uint32_t esize;
    uint32_t nframes;
    zframe   f[];
} zhdr;

/* Transform one raw frame into w->buf; returns the transformed size. */
static size_t frame_transform(zwork *w, const uint8_t *src, size_t raw,
                              size_t esize, uint8_t *mode)
{
    size_t ne = raw / esize;
    if (esize != 2 && esize != 4) {
        *mode = ZMODE_PLAIN;
        return raw;   /* compressed straight from src */
    }
    if (as__zmask_count_zero(src, ne, esize) >= ne / 8 && ne >= 64) {
        *mode = ZMODE_MASK;
        size_t bmb = (ne + 7) / 8;
        size_t nnz = as__zmask_split(src, ne, esize, w->buf, w->tmp);
        as__shuffle(w->tmp, w->buf + bmb, nnz, esize);
        return bmb + nnz * esize;
    }
    *mode = ZMODE_SHUF;
    as__shuffle(src, w->buf, ne, esize);
    return raw;
}

/* The segments of a transformed frame: where each starts in the
 * transformed buffer and how long it is. Returns their count. */
static size_t frame_segments(const uint8_t *base, uint8_t mode, size_t raw,
                             size_t tsize, size_t esize, const uint8_t **at,
                             size_t *len)
{
    if (mode == ZMODE_PLAIN) {
        at[0] = base;
        len[0] = raw;
        return 1;
    }
    size_t ne = raw / esize, k = 0, off = 0, n = ne;
    if (mode == ZMODE_MASK) {
        size_t bmb = (ne + 7) / 8;
        at[k] = base;
        len[k++] = bmb;
        off = bmb;
        n = (tsize - bmb) / esize;
    }
    for (size_t b = 0; b < esize; b++) {
        at[k] = base + off + b * n;
        len[k++] = n;
    }
    return k;
}

/* Compress (or copy) the segments of frame f from `base` into w->out;
 * returns the stored size or a zstd error code through *err. */
static size_t frame_store(zwork *w, zframe *f, const uint8_t *base, size_t esize,
                          size_t *zerr)
{
    const uint8_t *at[ZSEG_MAX];
    size_t len[ZSEG_MAX], pos = 0;
    f->nseg = (uint8_t)frame_segments(base, f->mode, f->raw, f->tsize, esize,
                                      at, len);
    f->rawmask = 0;
    *zerr = 0;
    for (size_t i = 0; i < f->nseg; i++) {
        size_t cs = 0;
        bool compress = len[i] >= 64;
        ZSTD_CCtx *cc = w->c;
        if (compress) {
            /* trials on the first 16 KiB, into the (free by now) tmp buffer */
            size_t n = len[i] < ZTRIAL ? len[i] : ZTRIAL;
            size_t na = n < ZTRIAL_LZ ? n : ZTRIAL_LZ;
            size_t tb = ZSTD_compress2(w->cl, w->tmp + 2 * ZTRIAL, 2 * ZTRIAL,
                                       at[i], n);
            size_t ta = ZSTD_compress2(w->c, w->tmp, 2 * ZTRIAL, at[i], na);
            /* compare as bytes per input byte (the LZ trial is shorter) */
            double ra = ZSTD_isError(ta) ? 2.0 : (double)ta / (double)na;
            double rb = ZSTD_isError(tb) ? 2.0 : (double)tb / (double)n;
            bool lit = rb <= ra * 1.01;
            double best = lit ? rb : ra;
            cc = lit ? w->cl : w->c;
            compress = best < 1.0 - 1.0 / 32;
            if (compress && lit && n == len[i]) {   /* the trial was the segment */
                size_t b = tb;
                memcpy(w->out + pos, w->tmp + 2 * ZTRIAL, b);
                f->seg[i] = (uint32_t)b;
                pos += b;
                continue;
            }
        }
        if (compress) {
            cs = ZSTD_compress2(cc, w->out + pos, w->outcap - pos, at[i], len[i]);
            if (ZSTD_isError(cs)) {
                *zerr = cs;
                return 0;
            }
            compress = cs < len[i];
        }
        if (!compress) {
            memcpy(w->out + pos, at[i], len[i]);
            cs = len[i];
            f->rawmask |= (uint8_t)(1u << i);
        }
        f->seg[i] = (uint32_t)cs;
        pos += cs;
    }
    return pos;
}

/* Decode one frame into dst (raw bytes of the frame). Checksums of the
 * stored bytes were verified by the caller. */
static int frame_decode(as_pctx *ctx, zwork *w, const zhdr *h, size_t fi,
                        uint8_t *dst)
{
    const zframe *f = &h->f[fi];
    uint8_t *into = f->mode == ZMODE_PLAIN ? dst : w->buf;
    const uint8_t *at[ZSEG_MAX];
    size_t len[ZSEG_MAX], pos = 0;
    size_t nseg = frame_segments(into, f->mode, f->raw, f->tsize, h->esize,
                                 at, len);
    for (size_t i = 0; i < nseg; i++) {
        uint8_t *seg = (uint8_t *)(uintptr_t)at[i];
        size_t r = len[i];
        if (i >= f->nseg || pos + f->seg[i] > f->csize)
            r = (size_t)-1;   /* inconsistent header: corrupted */
        else if (f->rawmask >> i & 1)
            memcpy(seg, f->data + pos, len[i]);
        else
            r = ZSTD_decompressDCtx(w->d, seg, len[i], f->data + pos, f->seg[i]);
        if (ZSTD_isError(r) || r != len[i]) {
            as_pctx_errorf(ctx, "zstd: handle %#llx (layer %s): frame %zu of %u "
                           "corrupted: %s", (unsigned long long)as_pctx_handle(ctx).v,
                           as_pctx_layer(ctx) ? as_pctx_layer(ctx) : "-", fi,
                           h->nframes, ZSTD_isError(r) ? ZSTD_getErrorName(r)
                           : "wrong segment size");
            if (ZSTD_isError(r) && ZSTD_getErrorCode(r) == ZSTD_error_memory_allocation)
                return ws_last_rc ? ws_last_rc : AS_ENOMEM;
            return AS_ECORRUPT;
        }
        pos += f->seg[i];
    }
    size_t esize = h->esize, ne = f->raw / esize;
    if (f->mode == ZMODE_SHUF) {
        as__unshuffle(w->buf, dst, ne, esize);
    } else if (f->mode == ZMODE_MASK) {
        size_t bmb = (ne + 7) / 8, nnz = (f->tsize - bmb) / esize;
        as__unshuffle(w->buf + bmb, w->tmp, nnz, esize);
        as__zmask_join(w->buf, w->tmp, ne, esize, dst);
    }
    return 0;
}

/* ---- policy -------------------------------------------------------------- */

static int zstd_encode(as_pctx *ctx, const void *params,
                       const as_save_info *info, const as_tensor *t,
                       void **state)
{
    (void)info;
    zparams *p = (zparams *)params;
    size_t esize = as_dtype_size(t->dtype), bytes = as_tensor_bytes(t);
    if (!esize)
        return AS_EINVAL;
    size_t nframes = (bytes + ZFRAME - 1) / ZFRAME;
    zhdr *h;
    int rc = as_pctx_alloc(ctx, sizeof *h + nframes * sizeof(zframe),
                           (void **)&h);
    if (rc)
        return rc;
    h->bytes = bytes;
    h->esize = (uint32_t)esize;
    h->nframes = (uint32_t)nframes;
    h->row_bytes = esize * as_policy_row_len(t);
    if (!nframes) {
        *state = h;
        return 0;
    }
    ws_last_rc = 0;
    zwork *w = zwork_get(p, ctx);
    if (!w) {
        as_pctx_errorf(ctx, "zstd: no work memory (%s)",
                       as_strerror(ws_last_rc ? ws_last_rc : AS_ENOMEM));
        return ws_last_rc ? ws_last_rc : AS_ENOMEM;
    }
    const uint8_t *src = t->data;
    for (size_t fi = 0; fi < nframes && !rc; fi++) {
        size_t off = fi * ZFRAME, raw = bytes - off < ZFRAME ? bytes - off
                                                             : ZFRAME;
        zframe *f = &h->f[fi];
        size_t ts = frame_transform(w, src + off, raw, esize, &f->mode);
        const uint8_t *in = f->mode == ZMODE_PLAIN ? src + off : w->buf;
        f->raw = (uint32_t)raw;
        f->tsize = (uint32_t)ts;
        size_t zerr;
        size_t cs = frame_store(w, f, in, esize, &zerr);
        if (zerr) {
            bool mem = ZSTD_getErrorCode(zerr) == ZSTD_error_memory_allocation;
            rc = mem ? (ws_last_rc ? ws_last_rc : AS_ENOMEM) : AS_EIO;
            as_pctx_errorf(ctx, "zstd: compressing frame %zu: %s", fi,
                           mem ? as_strerror(rc) : ZSTD_getErrorName(zerr));
            break;
        }
        void *data;
        rc = as_pctx_alloc(ctx, cs, &data);
        if (rc)
            break;
        memcpy(data, w->out, cs);
        f->data = data;
        f->csize = (uint32_t)cs;
        f->raw = (uint32_t)raw;
        f->tsize = (uint32_t)ts;
        f->hash = as__hash64(data, cs);
    }
    zwork_put(p, w);
    if (!rc)
        *state = h;
    return rc;
}

static int verify_frames(as_pctx *ctx, const zhdr *h, size_t f0, size_t f1)
{
    for (size_t fi = f0; fi < f1; fi++) {
        const zframe *f = &h->f[fi];
        if (as__hash64(f->data, f->csize) != f->hash) {
            as_pctx_errorf(ctx, "zstd: handle %#llx (layer %s): frame %zu of "
                           "%u corrupted (checksum mismatch); nothing restored",
                           (unsigned long long)as_pctx_handle(ctx).v,
                           as_pctx_layer(ctx) ? as_pctx_layer(ctx) : "-", fi,
                           h->nframes);
            return AS_ECORRUPT;
        }
    }
    return 0;
}

static int zstd_decode(as_pctx *ctx, const void *params, void *state,
                       as_tensor *dst)
{
    const zhdr *h = state;
    if (as_tensor_bytes(dst) != h->bytes || as_dtype_size(dst->dtype) != h->esize)
        return AS_ESHAPE;
    int rc = verify_frames(ctx, h, 0, h->nframes);
    if (rc || !h->nframes)
        return rc;
    ws_last_rc = 0;
    zwork *w = zwork_get((zparams *)params, ctx);
    if (!w)
        return ws_last_rc ? ws_last_rc : AS_ENOMEM;
    for (size_t fi = 0; fi < h->nframes && !rc; fi++)
        rc = frame_decode(ctx, w, h, fi, (uint8_t *)dst->data + fi * ZFRAME);
    zwork_put((zparams *)params, w);
    return rc;
}

static int zstd_decode_rows(as_pctx *ctx, const void *params, void *state,
                            int64_t row0, int64_t nrows, float *dst)
{
    const zhdr *h = state;
    int rc_rows = as_pctx_check_rows(ctx, row0, nrows, h->bytes / h->row_bytes);
    if (rc_rows)
        return rc_rows;
    size_t b0 = (size_t)row0 * h->row_bytes, b1 = b0 + (size_t)nrows * h->row_bytes;
    if (b0 == b1)
        return 0;
    size_t f0 = b0 / ZFRAME, f1 = (b1 + ZFRAME - 1) / ZFRAME;
    int rc = verify_frames(ctx, h, f0, f1);
    if (rc)
        return rc;
    ws_last_rc = 0;
    zwork *w = zwork_get((zparams *)params, ctx);
    if (!w)
        return ws_last_rc ? ws_last_rc : AS_ENOMEM;
    for (size_t fi = f0; fi < f1 && !rc; fi++) {
        size_t fs = fi * ZFRAME, fe = fs + h->f[fi].raw;
        size_t lo = b0 > fs ? b0 : fs, hi = b1 < fe ? b1 : fe;
        rc = frame_decode(ctx, w, h, fi, w->out);
        if (!rc)
            memcpy((uint8_t *)dst + (lo - b0), w->out + (lo - fs), hi - lo);
    }
    zwork_put((zparams *)params, w);
    return rc;
}

AS_POLICY_OPS(zstd,
              "lossless zstd[:level] of byte-shuffled frames (zero mask for "
              "sparse data)",
              (.exact = true),
              parse, free_params, encode, decode, decode_rows);

/* Testing hook (quant.h). */
uint8_t *as__zstd_frame_bytes(void *state, size_t i, size_t *len)
{
    zhdr *h = state;
    if (!h || i >= h->nframes)
        return NULL;
    *len = h->f[i].csize;
    return (uint8_t *)h->f[i].data;
}

void as__zstd_frame_rehash(void *state, size_t i)
{
    zhdr *h = state;
    if (h && i < h->nframes)
        h->f[i].hash = as__hash64(h->f[i].data, h->f[i].csize);
}

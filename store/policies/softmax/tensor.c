/*
 * Softmax codecs on whole tensors: the blob format, encode, decode of row
 * ranges, backward straight from the blob, and dV += P^T dO per attention
 * block.
 *
 * Blob (one contiguous block, native endianness, 8-byte aligned parts):
 *   header (sm_hdr: magic "ASSM", version, codec, layout)
 *   valid_len[nitems] i32          when padding lengths were given
 *   mask bitmap (rows x len bits)  when an explicit mask was given
 *   offsets[nblocks + 1] u64       payload offset of each (batch, head)
 *                                  block of `queries` rows
 *   sums[nblocks] u64              as__hash64 of each block's payload
 *   payload                        the rows, back to back
 * The header carries two checksums: of itself (hdr_sum) and of everything
 * between it and the payload (meta_sum). Every read checks both and the
 * sums of the blocks it decodes: corrupted bytes are AS_ECORRUPT, never a
 * read out of bounds (rows are parsed from their own bytes).
 * Rows are variable-size (causal rows differ in n; sotk adapts k), so a
 * row is found by scanning from its block's offset (row_size reads only
 * the row's codes).
 *
 * keep and fp16 store whole rows (len entries, masked ones included, as
 * the store's keep would); the other codecs store only valid entries.
 */
#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "actstore/common.h"
#include "store/policies/quant.h"
#include "store/policies/softmax/softmax.h"
#include "store/store_internal.h"
#include "allocator/fault.h"

#define SM_MAGIC   0x4d535341u   /* "ASSM" little endian */
#define SM_VERSION 2u
#define SM_MAXLEN  65536

enum { SM_F_CAUSAL = 1, SM_F_FULLDEN = 2, SM_F_VALIDLEN = 4, SM_F_MASK = 8 };

typedef struct sm_hdr {
    uint32_t magic;
    uint16_t version;
    uint8_t  kind, flags;
    int16_t  s, k;
    uint8_t  bits, pad[3];
    float    mass;
    int64_t  rows, len, queries, rows_per_item, nitems;
    uint64_t payload_off, payload_bytes, bytes;
    uint64_t meta_sum;   /* as__hash64 of [al8(sizeof sm_hdr), payload_off) */
    uint64_t hdr_sum;    /* as__hash64 of the fields above */
} sm_hdr;

static size_t al8(size_t n) { return (n + 7) & ~(size_t)7; }

/* A parsed blob or a layout to encode. */
typedef struct sm_view {
    as__sm_params   p;
    int64_t        rows, len, queries, rpi, nitems, nblocks;
    bool           causal;
    const int32_t *vlen;
    const uint8_t *maskbits;     /* blob bitmap */
    const uint8_t *maskbytes;    /* layout mask (encode) */
    const uint64_t *offs;
    const uint64_t *sums;        /* blob: per-block payload checksums */
    const uint8_t *payload;
} sm_view;

static bool sm_store_whole(const as__sm_params *p)
{
    return p->kind == AS_SM_KEEP || p->kind == AS_SM_FP16;
}

/* Valid prefix of a row: causal and padding limits. */
static size_t sm_prefix(const sm_view *v, int64_t row)
{
    int64_t n = v->len;
    if (v->causal) {
        int64_t q = row % v->queries;
        if (q + 1 < n)
            n = q + 1;
    }
    if (v->vlen) {
        int64_t vl = v->vlen[row / v->rpi];
        if (vl < 0)
            vl = 0;
        if (vl < n)
            n = vl;
    }
    return (size_t)n;
}

static bool sm_valid(const sm_view *v, int64_t row, size_t key)
{
    size_t i = (size_t)row * (size_t)v->len + key;
    if (v->maskbits)
        return (v->maskbits[i >> 3] >> (i & 7)) & 1;
    if (v->maskbytes)
        return v->maskbytes[i] != 0;
    return true;
}

/* Entries a row encodes: whole row, valid prefix, or masked count. */
static size_t sm_count(const sm_view *v, int64_t row)
{
    if (sm_store_whole(&v->p))
        return (size_t)v->len;
    size_t n = sm_prefix(v, row);
    if (!v->maskbits && !v->maskbytes)
        return n;
    size_t c = 0;
    for (size_t k = 0; k < n; k++)
        c += sm_valid(v, row, k);
    return c;
}

static bool sm_masked(const sm_view *v)
{
    return (v->maskbits || v->maskbytes) && !sm_store_whole(&v->p);
}

static int sm_view_layout(const as__sm_params *p, const as__sm_layout *lay,
                          sm_view *v)
{
    memset(v, 0, sizeof *v);
    if (!p || !lay || p->kind < 0 || p->kind >= AS_SM_KIND_COUNT ||
        lay->rows < 1 || lay->len < 1 || lay->len > SM_MAXLEN)
        return AS_EINVAL;
    if ((p->kind == AS_SM_SOA && (p->s < 1 || p->s > 128)) ||
        ((p->kind == AS_SM_LOG || p->kind == AS_SM_TOPK) &&
         (p->bits < 2 || p->bits > 4)) ||
        (p->kind == AS_SM_TOPK && (p->k < 1 || p->k > 255 ||
                                   !(p->mass >= 0.0f && p->mass < 1.0f))))
        return AS_EINVAL;
    v->p = *p;
    v->rows = lay->rows;
    v->len = lay->len;
    v->queries = lay->queries > 0 ? lay->queries : lay->rows;
    if (v->rows % v->queries)
        return AS_EINVAL;
    v->nblocks = v->rows / v->queries;
    v->causal = lay->causal;
    if (lay->valid_len) {
        if (lay->rows_per_item < 1)
            return AS_EINVAL;
        v->vlen = lay->valid_len;
        v->rpi = lay->rows_per_item;
        v->nitems = (v->rows + v->rpi - 1) / v->rpi;
    }
    v->maskbytes = lay->mask;
    return 0;
}

static size_t sm_prefix_bytes(const sm_view *v)
{
    return al8(sizeof(sm_hdr)) + al8((size_t)v->nitems * 4) +
           (v->maskbytes ? al8(((size_t)v->rows * (size_t)v->len + 7) / 8)
                         : 0) +
           ((size_t)v->nblocks + 1) * 8 + (size_t)v->nblocks * 8;
}

size_t as__sm_encode_bound(const as__sm_params *p, const as__sm_layout *lay)
{
    sm_view v;
    if (sm_view_layout(p, lay, &v))
        return 0;
    size_t total = sm_prefix_bytes(&v);
    if (sm_store_whole(p) || (!v.causal && !v.vlen))
        /* every row has all len entries */
        return total + (size_t)v.rows * as__sm_row_bytes(p, (size_t)v.len,
                                                         (size_t)v.len);
    if (!v.vlen) {
        /* causal only: every (batch, head) block has the same rows */
        size_t blk = 0;
        for (int64_t r = 0; r < v.queries; r++)
            blk += as__sm_row_bytes(p, sm_prefix(&v, r), (size_t)v.len);
        return total + (size_t)v.nblocks * blk;
    }
    for (int64_t r = 0; r < v.rows; r++)
        total += as__sm_row_bytes(p, sm_prefix(&v, r), (size_t)v.len);
    return total;
}

/* ---- metadata check ------------------------------------------------------ */

static void sm_check_flag(as__sm_check *c, int64_t row, int what, int64_t key,
                          double value)
{
    if (c->bad_rows++ == 0) {
        c->row = row;
        c->what = what;
        c->key = key;
        c->value = value;
    }
}

/* Rows with an explicit per-entry mask: entry by entry. */
static void sm_check_row_mask(const sm_view *v, int64_t r, const float *row,
                              as__sm_check *c)
{
    size_t n = sm_prefix(v, r);
    double sum = 0;
    int64_t last = -1;
    for (size_t k = 0; k < (size_t)v->len; k++) {
        bool ok = k < n && sm_valid(v, r, k);
        if (ok) {
            sum += row[k];
            last = (int64_t)k;
        } else if (row[k] != 0.0f) {
            sm_check_flag(c, r, AS_SM_CHECK_MASKED, (int64_t)k, row[k]);
            return;
        }
    }
    if (last >= 0 && !(fabs(sum - 1.0) <= AS_SM_SUM_TOL))
        sm_check_flag(c, r, AS_SM_CHECK_SUM, -1, sum);
    else if (last >= 0 && row[last] == 0.0f)
        sm_check_flag(c, r, AS_SM_CHECK_TAIL, last, 0.0);
}

/* The row's exact zeros form one run that ends at key n - 1: the shape of
 * a mask, not of underflow (a softmax that underflows some keys to 0, at
 * logit gaps over ~87, leaves them where their logits were). */
static bool sm_zero_suffix_only(const float *row, size_t n)
{
    size_t k = n;
    while (k > 0 && row[k - 1] == 0.0f)
        k--;
    if (k == 0)
        return false;   /* no mass at all: the sum check's case */
    for (size_t i = 0; i < k; i++)
        if (row[i] == 0.0f)
            return false;
    return true;
}

/* One row: a vectorizable sum of the valid prefix and an OR of the masked
 * tail's bits (sign ignored: -0 counts as 0). */
static void sm_check_row(const sm_view *v, int64_t r, const float *row,
                         as__sm_check *c)
{
    if (v->maskbytes) {
        sm_check_row_mask(v, r, row, c);
        return;
    }
    const size_t n = sm_prefix(v, r), len = (size_t)v->len;
    float acc[8] = {0};
    size_t k = 0;
    for (; k + 8 <= n; k += 8)
        for (int j = 0; j < 8; j++)
            acc[j] += row[k + j];
    float sum = ((acc[0] + acc[4]) + (acc[1] + acc[5])) +
                ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; k < n; k++)
        sum += row[k];
    uint32_t bits = 0;
    for (k = n; k < len; k++) {
        uint32_t b;
        memcpy(&b, row + k, 4);
        bits |= b;
    }
    if (bits & 0x7fffffffu) {
        for (k = n; k < len && row[k] == 0.0f; k++)
            ;
        sm_check_flag(c, r, AS_SM_CHECK_MASKED, (int64_t)k, row[k]);
    } else if (n && !(fabsf(sum - 1.0f) <= AS_SM_SUM_TOL)) {
        sm_check_flag(c, r, AS_SM_CHECK_SUM, -1, sum);
    } else if (n > 1 && row[n - 1] == 0.0f && sm_zero_suffix_only(row, n)) {
        sm_check_flag(c, r, AS_SM_CHECK_TAIL, (int64_t)n - 1, 0.0);
    }
}

char *as__sm_check_text(const as__sm_check *c, const as__sm_layout *lay,
                       char *buf, size_t n)
{
    int64_t q = lay->queries > 0 ? c->row % lay->queries : c->row;
    char where[64];
    snprintf(where, sizeof where, "row %lld (query %lld of its block)",
             (long long)c->row, (long long)q);
    switch (c->what) {
    case AS_SM_CHECK_MASKED:
        snprintf(buf, n, "%s: key %lld is masked by the metadata but holds "
                 "%g", where, (long long)c->key, c->value);
        break;
    case AS_SM_CHECK_SUM:
        snprintf(buf, n, "%s: valid keys sum to %g (a softmax row sums to "
                 "1)", where, c->value);
        break;
    case AS_SM_CHECK_TAIL:
        snprintf(buf, n, "%s: last valid key %lld holds exactly 0 (a mask "
                 "the metadata does not declare: causal, queries or "
                 "valid_len)", where, (long long)c->key);
        break;
    default:
        snprintf(buf, n, "no mismatch");
    }
    return buf;
}

int as__sm_encode(const as__sm_params *p, const as__sm_layout *lay,
                 const float *y, void *out, size_t cap, size_t *used)
{
    return as__sm_encode_checked(p, lay, y, out, cap, used, NULL);
}

int as__sm_encode_checked(const as__sm_params *p, const as__sm_layout *lay,
                         const float *y, void *out, size_t cap, size_t *used,
                         as__sm_check *chk)
{
    sm_view v;
    int rc = sm_view_layout(p, lay, &v);
    if (rc)
        return rc;
    size_t bound = as__sm_encode_bound(p, lay);
    if (!y || !out || cap < bound)
        return AS_EINVAL;
    as__sm_work w;
    if (as__sm_work_init(&w, (size_t)v.len))
        return AS_ENOMEM;
    if (chk)
        *chk = (as__sm_check){.row = -1, .key = -1};

    uint8_t *base = out;
    memset(base, 0, sm_prefix_bytes(&v));
    sm_hdr h = {.magic = SM_MAGIC, .version = SM_VERSION,
                .kind = (uint8_t)p->kind, .s = (int16_t)p->s,
                .k = (int16_t)p->k, .bits = (uint8_t)p->bits,
                .mass = p->mass, .rows = v.rows, .len = v.len,
                .queries = v.queries, .rows_per_item = v.rpi,
                .nitems = v.nitems};
    h.flags = (uint8_t)((v.causal ? SM_F_CAUSAL : 0) |
                        (p->fullden ? SM_F_FULLDEN : 0) |
                        (v.vlen ? SM_F_VALIDLEN : 0) |
                        (v.maskbytes ? SM_F_MASK : 0));
    size_t pos = al8(sizeof h);
    if (v.vlen) {
        memcpy(base + pos, v.vlen, (size_t)v.nitems * 4);
        pos += al8((size_t)v.nitems * 4);
    }
    if (v.maskbytes) {
        size_t nbits = (size_t)v.rows * (size_t)v.len;
        for (size_t i = 0; i < nbits; i++)
            if (v.maskbytes[i])
                base[pos + (i >> 3)] |= (uint8_t)(1u << (i & 7));
        pos += al8((nbits + 7) / 8);
    }
    uint64_t *offs = (uint64_t *)(void *)(base + pos);
    pos += ((size_t)v.nblocks + 1) * 8;
    uint64_t *sums = (uint64_t *)(void *)(base + pos);
    pos += (size_t)v.nblocks * 8;
    h.payload_off = pos;
    uint8_t *pay = base + pos;
    size_t off = 0;
    const bool groups = (p->kind == AS_SM_TOPK || p->kind == AS_SM_SOA ||
                         p->kind == AS_SM_LOG) && !v.maskbytes;
    for (int64_t r = 0; r < v.rows; r++) {
        if (r % v.queries == 0)
            offs[r / v.queries] = off;
        const float *row = y + (size_t)r * (size_t)v.len;
        if (groups && r % v.queries + 4 <= v.queries) {
            /* four rows of one block side by side where the codec can;
             * the rows two groups ahead are fetched meanwhile (P was
             * written whole by the forward: early blocks left the L2) */
            if (r + 12 <= v.rows) {
                const char *pf = (const char *)(row + 8 * v.len);
                for (size_t o = 0; o < 4 * (size_t)v.len * sizeof(float);
                     o += 64)
                    __builtin_prefetch(pf + o);
            }
            const float *rv[4];
            size_t rn[4], ru[4];
            for (int l = 0; l < 4; l++) {
                rv[l] = row + l * v.len;
                rn[l] = sm_prefix(&v, r + l);
            }
            if (p->kind == AS_SM_SOA
                    ? as__sm_soa_encode4(p, rv, rn, (size_t)v.len, pay + off, ru)
                    : as__sm_log_encode4(p, rv, rn, pay + off, ru)) {
                off += ru[0] + ru[1] + ru[2] + ru[3];
                for (int l = 0; chk && l < 4; l++)
                    sm_check_row(&v, r + l, rv[l], chk);
                r += 3;
                continue;
            }
        }
        size_t n;
        const float *vals = row;
        if (sm_store_whole(p)) {
            n = (size_t)v.len;
        } else if (v.maskbytes) {
            size_t pre = sm_prefix(&v, r);
            n = 0;
            for (size_t k = 0; k < pre; k++)
                if (sm_valid(&v, r, k))
                    w.vals[n++] = row[k];
            vals = w.vals;
        } else {
            n = sm_prefix(&v, r);
        }
        off += as__sm_row_encode(p, vals, n, (size_t)v.len, pay + off, &w);
        if (chk)
            sm_check_row(&v, r, row, chk);
    }
    offs[v.nblocks] = off;
    for (int64_t b = 0; b < v.nblocks; b++)
        sums[b] = as__hash64(pay + offs[b], offs[b + 1] - offs[b]);
    h.payload_bytes = off;
    h.bytes = pos + off;
    h.meta_sum = as__hash64(base + al8(sizeof h), pos - al8(sizeof h));
    h.hdr_sum = as__hash64(&h, offsetof(sm_hdr, hdr_sum));
    memcpy(base, &h, sizeof h);
    *used = (size_t)h.bytes;
    assert(*used <= bound);
    as__sm_work_free(&w);
    return 0;
}

/* ---- reading blobs ------------------------------------------------------- */

static int sm_view_blob(const void *blob, sm_view *v, size_t *bytes_out)
{
    sm_hdr h;
    if (!blob)
        return AS_EINVAL;
    memcpy(&h, blob, sizeof h);
    if (h.hdr_sum != as__hash64(&h, offsetof(sm_hdr, hdr_sum)))
        return AS_ECORRUPT;
    if (h.magic != SM_MAGIC || h.version != SM_VERSION ||
        h.kind >= AS_SM_KIND_COUNT || h.rows < 1 || h.len < 1 ||
        h.len > SM_MAXLEN || h.queries < 1 || h.rows % h.queries ||
        h.payload_off + h.payload_bytes != h.bytes)
        return AS_ECORRUPT;
    memset(v, 0, sizeof *v);
    v->p = (as__sm_params){.kind = h.kind, .s = h.s, .k = h.k,
                          .bits = h.bits, .mass = h.mass,
                          .fullden = (h.flags & SM_F_FULLDEN) != 0};
    v->rows = h.rows;
    v->len = h.len;
    v->queries = h.queries;
    v->nblocks = h.rows / h.queries;
    v->causal = (h.flags & SM_F_CAUSAL) != 0;
    const uint8_t *b = blob;
    size_t pos = al8(sizeof h);
    if (h.flags & SM_F_VALIDLEN) {
        v->vlen = (const int32_t *)(const void *)(b + pos);
        v->rpi = h.rows_per_item;
        v->nitems = h.nitems;
        pos += al8((size_t)h.nitems * 4);
    }
    if (h.flags & SM_F_MASK) {
        v->maskbits = b + pos;
        pos += al8(((size_t)h.rows * (size_t)h.len + 7) / 8);
    }
    v->offs = (const uint64_t *)(const void *)(b + pos);
    v->sums = v->offs + v->nblocks + 1;
    if (pos + ((size_t)v->nblocks * 2 + 1) * 8 != h.payload_off ||
        h.meta_sum != as__hash64(b + al8(sizeof h), h.payload_off - al8(sizeof h)) ||
        v->offs[v->nblocks] != h.payload_bytes)
        return AS_ECORRUPT;
    for (int64_t k = 0; k < v->nblocks; k++)
        if (v->offs[k] > v->offs[k + 1])
            return AS_ECORRUPT;
    v->payload = b + h.payload_off;
    if (bytes_out)
        *bytes_out = (size_t)h.bytes;
    return 0;
}

int as__sm_blob_info(const void *blob, size_t bytes, as__sm_info *out)
{
    sm_view v;
    size_t b;
    if (bytes < sizeof(sm_hdr))
        return AS_ECORRUPT;
    int rc = sm_view_blob(blob, &v, &b);
    if (rc)
        return rc;
    if (b > bytes)
        return AS_ECORRUPT;
    out->params = v.p;
    out->rows = v.rows;
    out->len = v.len;
    out->queries = v.queries;
    out->bytes = b;
    out->payload_bytes = (size_t)v.offs[v.nblocks];
    return 0;
}

/* Payload position of row0 (scan from its block's start). */
static const uint8_t *sm_seek(const sm_view *v, int64_t row0)
{
    int64_t blk = row0 / v->queries;
    const uint8_t *pp = v->payload + v->offs[blk];
    for (int64_t r = blk * v->queries; r < row0; r++)
        pp += as__sm_row_size(&v->p, pp, sm_count(v, r), (size_t)v->len);
    return pp;
}

/* Decode one row into dst (len floats, masked = 0); advances *pp. */
static void sm_decode_row(const sm_view *v, const uint8_t **pp, int64_t row,
                          float *dst, as__sm_work *w)
{
    size_t len = (size_t)v->len, n = sm_count(v, row);
    if (!sm_masked(v)) {
        *pp += as__sm_row_decode(&v->p, *pp, n, len, dst, w);
        memset(dst + n, 0, (len - n) * sizeof *dst);
        return;
    }
    *pp += as__sm_row_decode(&v->p, *pp, n, len, w->vals, w);
    size_t pre = sm_prefix(v, row), j = 0;
    for (size_t k = 0; k < len; k++)
        dst[k] = (k < pre && sm_valid(v, row, k)) ? w->vals[j++] : 0.0f;
    assert(j == n);
}

/* Checks rows [row0, row0 + nrows) of blob and the sums of their blocks,
 * and readies the work buffers: 0, 1 when there are no rows (nothing to
 * free), or a negative AS_E* code. */
static int sm_open(const void *blob, int64_t row0, int64_t nrows, sm_view *v,
                   as__sm_work *w)
{
    int rc = sm_view_blob(blob, v, NULL);
    if (rc)
        return rc;
    if (row0 < 0 || nrows < 0 || row0 > v->rows || nrows > v->rows - row0)
        return AS_EINVAL;
    /* the blocks the rows fall in */
    for (int64_t b = row0 / v->queries; nrows && b <= (row0 + nrows - 1) / v->queries; b++)
        if (v->sums[b] != as__hash64(v->payload + v->offs[b], v->offs[b + 1] - v->offs[b]))
            return AS_ECORRUPT;
    if (nrows == 0)
        return 1;
    return as__sm_work_init(w, (size_t)v->len) ? AS_ENOMEM : 0;
}

int as__sm_decode_rows(const void *blob, int64_t row0, int64_t nrows,
                      float *dst)
{
    sm_view v;
    as__sm_work w;
    int rc = sm_open(blob, row0, nrows, &v, &w);
    if (rc)
        return rc < 0 ? rc : 0;
    const uint8_t *pp = sm_seek(&v, row0);
    const size_t len = (size_t)v.len;
    int64_t r = 0;
    if (v.p.kind == AS_SM_SOA && !sm_masked(&v)) {
        /* soa rows have a known size: decode them in groups whose decay
         * chains run side by side (as__sm_soa_decode_rows) */
        for (; r + AS_SM_SOA_LANES <= nrows; r += AS_SM_SOA_LANES) {
            const uint8_t *in[AS_SM_SOA_LANES];
            size_t n[AS_SM_SOA_LANES];
            float *o[AS_SM_SOA_LANES];
            for (int l = 0; l < AS_SM_SOA_LANES; l++) {
                n[l] = sm_count(&v, row0 + r + l);
                in[l] = pp;
                pp += as__sm_row_bytes(&v.p, n[l], len);
                o[l] = dst + (size_t)(r + l) * len;
            }
            as__sm_soa_decode_rows(&v.p, in, n, o, AS_SM_SOA_LANES, &w);
            for (int l = 0; l < AS_SM_SOA_LANES; l++)
                if (n[l] < len)
                    memset(o[l] + n[l], 0, (len - n[l]) * sizeof(float));
        }
    }
    if ((v.p.kind == AS_SM_LOG || v.p.kind == AS_SM_TOPK) && !sm_masked(&v)) {
        /* log / topk rows in groups whose weight sums run side by side */
        for (; r + AS_SM_SOA_LANES <= nrows; r += AS_SM_SOA_LANES) {
            size_t n[AS_SM_SOA_LANES];
            float *o[AS_SM_SOA_LANES];
            for (int l = 0; l < AS_SM_SOA_LANES; l++) {
                n[l] = sm_count(&v, row0 + r + l);
                o[l] = dst + (size_t)(r + l) * len;
            }
            pp += as__sm_log_decode_rows(&v.p, pp, n, o, AS_SM_SOA_LANES, &w);
            for (int l = 0; l < AS_SM_SOA_LANES; l++)
                if (n[l] < len)
                    memset(o[l] + n[l], 0, (len - n[l]) * sizeof(float));
        }
    }
    for (; r < nrows; r++)
        sm_decode_row(&v, &pp, row0 + r, dst + (size_t)r * len, &w);
    as__sm_work_free(&w);
    return 0;
}

int as__sm_backward_rows(const void *blob, int64_t row0, int64_t nrows,
                        const float *dy, float *dx)
{
    sm_view v;
    as__sm_work w;
    int rc = sm_open(blob, row0, nrows, &v, &w);
    if (rc)
        return rc < 0 ? rc : 0;
    const size_t len = (size_t)v.len;
    const uint8_t *pp = sm_seek(&v, row0);
    float *y = w.vals;
    for (int64_t r = 0; r < nrows; r++) {
        const float *g = dy + (size_t)r * len;
        float *o = dx + (size_t)r * len;
        size_t n = sm_count(&v, row0 + r);
        /* y_hat of this row only (n values, valid keys in order) */
        pp += as__sm_row_decode(&v.p, pp, n, len, y, &w);
        if (!sm_masked(&v)) {
            as__softmax_bwd_rows(y, g, o, 1, (int64_t)n);
            memset(o + n, 0, (len - n) * sizeof *o);
            continue;
        }
        size_t pre = sm_prefix(&v, row0 + r), j = 0;
        double dot = 0.0;
        for (size_t k = 0; k < pre; k++)
            if (sm_valid(&v, row0 + r, k))
                dot += (double)g[k] * y[j++];
        float d = (float)dot;
        j = 0;
        for (size_t k = 0; k < len; k++)
            o[k] = (k < pre && sm_valid(&v, row0 + r, k))
                       ? y[j++] * (g[k] - d) : 0.0f;
    }
    as__sm_work_free(&w);
    return 0;
}

int as__sm_pt_matmul(const void *blob, int64_t blk, const float *dout,
                    int64_t d, float *dv)
{
    sm_view v;
    as__sm_work w;
    int rc = sm_view_blob(blob, &v, NULL);
    if (rc)
        return rc;
    if (blk < 0 || blk >= v.nblocks || d < 1 || !dout || !dv)
        return AS_EINVAL;
    rc = sm_open(blob, blk * v.queries, v.queries, &v, &w);
    if (rc)
        return rc < 0 ? rc : 0;
    float *row = as__fmalloc((size_t)v.len * sizeof *row);
    if (!row) {
        as__sm_work_free(&w);
        return AS_ENOMEM;
    }
    const uint8_t *pp = v.payload + v.offs[blk];
    for (int64_t q = 0; q < v.queries; q++) {
        sm_decode_row(&v, &pp, blk * v.queries + q, row, &w);
        const float *go = dout + (size_t)q * (size_t)d;
        for (int64_t k = 0; k < v.len; k++) {
            float pk = row[k];
            if (pk == 0.0f)
                continue;
            float *dvk = dv + (size_t)k * (size_t)d;
            for (int64_t c = 0; c < d; c++)
                dvk[c] += pk * go[c];
        }
    }
    free(row);
    as__sm_work_free(&w);
    return 0;
}

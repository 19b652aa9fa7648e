/*
 * Softmax-output codecs (internal to the library; experimental).
 *
 * A softmax output y (rows x L, every row sums to 1 over its valid keys) is
 * encoded into one self-contained blob; backward gets either the decoded
 * rows or dx = y_hat * (dy - <dy, y_hat>) straight from the blob, row by
 * row, never the L x L Jacobian and never a full copy of y_hat.
 *
 * Codecs (docs/policies.md, section "Softmax", has formats and numbers):
 *   keep          fp32 rows as they are (reference; 4L bytes per row)
 *   fp16          IEEE half rows (2L bytes per row)
 *   soa:S[:fullden]   the published method (Lee & Lee, NeurIPS 2023): S
 *                 largest and S smallest values (fp32), one decay lambda,
 *                 a rank per valid entry (u8 when n <= 256, else u16);
 *                 rows with n <= 2S exact. n*r + (2S+1)*4 bytes, r = 1|2.
 *   solog:B       B-bit (2..4) log-domain code per valid entry relative to
 *                 the row maximum, renormalized to mass 1. ceil(nB/8) bytes.
 *   sotk:F:B[:P]  the k = max(min(n, 3), floor(n / F)) largest entries as
 *                 8-bit fine log codes, the rest as B-bit coarse log codes
 *                 below them, renormalized to mass 1; with P (0 < P < 1) a
 *                 row keeps only as many fine entries as hold mass P
 *                 (adaptive k, at most that). ceil(nB/8) + k bytes.
 *
 * Masks: a row's valid keys are given by the layout (causal: keys 0..q for
 * query q = row % queries; padding: keys < valid_len[row / rows_per_item];
 * or an explicit per-entry mask). Only valid entries are encoded; masked
 * entries decode to exactly 0. Rows with no valid key decode to all zeros.
 *
 * Thread-safety: all functions are reentrant; a blob may be decoded by many
 * threads at once. Memory: the caller owns every buffer passed in.
 */
#ifndef AS_STORE_POLICIES_SOFTMAX_H
#define AS_STORE_POLICIES_SOFTMAX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum as__sm_kind {
    AS_SM_KEEP = 0,
    AS_SM_FP16,
    AS_SM_SOA,
    AS_SM_LOG,
    AS_SM_TOPK,
    AS_SM_KIND_COUNT
} as__sm_kind;

/* sotk keeps at least this many fine entries (all of a shorter row). */
#define AS_SM_MIN_FINE 3

typedef struct as__sm_params {
    int   kind;      /* as__sm_kind */
    int   s;         /* soa: entries kept exactly at each end (S >= 1) */
    bool  fullden;   /* soa: lambda divides by the full row length L (the
                        published unmasked path) instead of n - 2S + 1 */
    int   bits;      /* solog / sotk: coarse code bits, 2..4 */
    int   k;         /* sotk: F, fine entries per row = max(min(n, 3),
                        n / F), 1..255 */
    float mass;      /* sotk: adaptive k keeps the fewest fine entries that
                        hold this share of the row's mass; 0 = always k */
} as__sm_params;

/* Parse "soa:5", "soa:5:fullden", "solog:4", "sotk:8:3", "sotk:16:2:0.9",
 * "keep", "fp16" (spec is len bytes, not NUL-terminated). On error returns
 * AS_ESPEC, writes what was expected to err and the offset within spec to
 * *err_off (may be NULL). */
int as__sm_parse(const char *spec, size_t len, as__sm_params *out, char *err,
                size_t errlen, size_t *err_off);

/* Canonical spec text of p ("soa:5"), into buf; returns buf. */
char *as__sm_format(const as__sm_params *p, char *buf, size_t n);

/* ---- rows: layout and masks -------------------------------------------- */

/* Which entries of a (rows x len) softmax output are valid. */
typedef struct as__sm_layout {
    int64_t rows;            /* rows in the tensor (e.g. B*H*Tq) */
    int64_t len;             /* L: entries per row (keys) */
    int64_t queries;         /* rows per (batch, head) block; the causal
                                query index is row % queries; 0 = rows */
    bool    causal;          /* key k valid only when k <= q */
    const int32_t *valid_len;/* keys k < valid_len[row / rows_per_item]
                                are valid; NULL = no padding */
    int64_t rows_per_item;   /* rows per valid_len entry (e.g. H*Tq) */
    const uint8_t *mask;     /* optional explicit (rows x len) mask, nonzero
                                = valid, combined with the above; copied
                                into the blob as a bitmap */
} as__sm_layout;

/* Bytes of one encoded row with n valid entries (exact for keep, fp16, soa,
 * solog; an upper bound for sotk, whose k adapts). */
size_t as__sm_row_bytes(const as__sm_params *p, size_t n, size_t len);

/* ---- whole tensors -------------------------------------------------------- */

/* Upper bound of the blob size for y with this layout. Returns 0 on a bad
 * layout (rows or len < 1, len > 65536, queries not dividing rows, ...). */
size_t as__sm_encode_bound(const as__sm_params *p, const as__sm_layout *lay);

/* Encode y (rows x len, f32) into out (cap bytes, at least the bound).
 * *used gets the blob size. The blob is self-contained (layout, padding
 * lengths and explicit mask are copied in). Values at masked positions
 * are ignored. Errors: AS_EINVAL (bad params or layout, cap too small),
 * AS_ENOMEM (scratch). */
int as__sm_encode(const as__sm_params *p, const as__sm_layout *lay,
                 const float *y, void *out, size_t cap, size_t *used);

/* Metadata check, fused into the encode (the row is hot in cache): on
 * every row, keys the layout masks hold exactly 0, the valid keys sum to 1
 * within AS_SM_SUM_TOL (NaN fails), and the valid keys do not end in a run
 * of exact zeros with no other zero before it (the shape of a causal or
 * padding mask the layout does not declare; a softmax that underflows at
 * logit gaps over ~87 leaves its zeros where the small logits were). */
#define AS_SM_SUM_TOL 1e-2f
enum { AS_SM_CHECK_OK = 0, AS_SM_CHECK_MASKED, AS_SM_CHECK_SUM,
       AS_SM_CHECK_TAIL };
typedef struct as__sm_check {
    int64_t bad_rows;        /* rows that failed */
    int64_t row;             /* the first of them (-1: none) */
    int     what;            /* AS_SM_CHECK_* of that row */
    int64_t key;             /* its offending key (masked / tail), or -1 */
    double  value;           /* that key's value, or the row's valid sum */
} as__sm_check;

/* As as__sm_encode, and checks every row into *chk (NULL: no check). The
 * blob is written either way; the caller decides what a mismatch means. */
int as__sm_encode_checked(const as__sm_params *p, const as__sm_layout *lay,
                         const float *y, void *out, size_t cap, size_t *used,
                         as__sm_check *chk);

/* "row 37 (query 5): key 9 is masked by the metadata but holds 0.012" and
 * the like, into buf; returns buf. */
char *as__sm_check_text(const as__sm_check *chk, const as__sm_layout *lay,
                       char *buf, size_t n);

/* Facts of a blob. */
typedef struct as__sm_info {
    as__sm_params params;
    int64_t rows, len, queries;
    size_t  bytes;           /* whole blob */
    size_t  payload_bytes;   /* rows only (what the bytes-per-row formula
                                counts) */
} as__sm_info;

/* Validate a blob header (magic, version, sizes); AS_ECORRUPT if wrong. */
int as__sm_blob_info(const void *blob, size_t bytes, as__sm_info *out);

/* Decode rows [row0, row0 + nrows) into dst (nrows x len f32). Masked
 * entries are 0. Cost: the rows asked for, plus the rows before row0 in
 * its (batch, head) block for variable-size codecs. Errors: AS_EINVAL
 * (range), AS_ECORRUPT, AS_ENOMEM. */
int as__sm_decode_rows(const void *blob, int64_t row0, int64_t nrows,
                      float *dst);

/* Softmax backward for rows [row0, row0 + nrows): dx = y_hat * (dy -
 * <dy, y_hat>) per row with y_hat the decoded row, in O(row) time and
 * O(len) scratch. dy and dx are (nrows x len); dx may equal dy. Masked
 * entries of dx are 0. Errors as as__sm_decode_rows. */
int as__sm_backward_rows(const void *blob, int64_t row0, int64_t nrows,
                        const float *dy, float *dx);

/* Attention: dV += P_hat^T dO for one (batch, head) block `blk` (rows
 * blk*queries .. +queries), dO (queries x d), dV (len x d), accumulated
 * row by row from the blob: no copy of P beyond one row. */
int as__sm_pt_matmul(const void *blob, int64_t blk, const float *dout,
                    int64_t d, float *dv);

/* ---- rows, for tests and the benchmark ---------------------------------- */

/* Rows decoded side by side by as__sm_soa_decode_rows. */
#define AS_SM_SOA_LANES 4

/* Scratch for the row codecs, sized for rows up to len entries (one
 * allocation). */
typedef struct as__sm_work {
    size_t    cap;
    uint32_t *ord, *tmp;   /* order / radix buffers (cap) */
    uint32_t *key, *key2;  /* radix keys (cap) */
    float    *vals;        /* gathered valid values (cap) */
    double   *tab;         /* decay tables (AS_SM_SOA_LANES x cap) */
    float    *val;         /* soa values by rank (AS_SM_SOA_LANES x cap) */
    uint8_t  *codes;       /* unpacked codes (cap) */
} as__sm_work;

int  as__sm_work_init(as__sm_work *w, size_t len);
void as__sm_work_free(as__sm_work *w);

/* Encode the n valid values v (in key order) of a row of length len into
 * out (at least as__sm_row_bytes(p, n, len)); returns the bytes written. */
size_t as__sm_row_encode(const as__sm_params *p, const float *v, size_t n,
                        size_t len, uint8_t *out, as__sm_work *w);

/* Decode a row with n valid entries into v (n values, key order); returns
 * the bytes read. */
size_t as__sm_row_decode(const as__sm_params *p, const uint8_t *in, size_t n,
                        size_t len, float *v, as__sm_work *w);

/* Order of v[0..n-1] by value, descending, ties by ascending position
 * (non-positive and NaN values count as 0). Rank counting by vector
 * comparisons up to n = 64 (AVX2 when the CPU has it), LSD radix on the
 * float bits above. ord gets n positions. */
void as__sm_order_desc(const float *v, size_t n, uint32_t *ord,
                      as__sm_work *w);

/* Row codec internals, by family (softmax/soa.c, softmax/log.c). */
size_t as__sm_soa_encode(const as__sm_params *p, const float *v, size_t n,
                        size_t len, uint8_t *out, as__sm_work *w);
size_t as__sm_soa_decode(const as__sm_params *p, const uint8_t *in, size_t n,
                        float *v, as__sm_work *w);
/* Four soa rows encoded side by side (each right after the one before in
 * out; used[] gets their bytes) when the CPU and the rows allow (2S < n <=
 * 64, no equal values); false otherwise (out may then hold partial rows:
 * the caller encodes them one by one). The same bytes as row by row. */
bool   as__sm_soa_encode4(const as__sm_params *p, const float *const *v,
                         const size_t *n, size_t len, uint8_t *out,
                         size_t *used);
/* Decode cnt (1..AS_SM_SOA_LANES) soa rows at once: row l has n[l] valid
 * entries at in[l] and goes to v[l]; the same values as one by one. */
void   as__sm_soa_decode_rows(const as__sm_params *p, const uint8_t *const *in,
                             const size_t *n, float *const *v, int cnt,
                             as__sm_work *w);
size_t as__sm_log_encode(const as__sm_params *p, const float *v, size_t n,
                        uint8_t *out, as__sm_work *w);
size_t as__sm_log_decode(const as__sm_params *p, const uint8_t *in, size_t n,
                        float *v, as__sm_work *w);
/* Decode cnt (1..AS_SM_SOA_LANES) log/topk rows stored back to back
 * from in (row l: n[l] entries, to v[l]); returns the bytes read. The
 * same values as one by one. */
size_t as__sm_log_decode_rows(const as__sm_params *p, const uint8_t *in,
                             const size_t *n, float *const *v, int cnt,
                             as__sm_work *w);
/* Four sotk rows encoded side by side (each right after the one before in
 * out; used[] gets their bytes) when the CPU and the rows allow (fixed k,
 * short rows with a positive entry); false, writing nothing, otherwise.
 * The same bytes as as__sm_row_encode row by row. */
bool   as__sm_topk_encode4(const as__sm_params *p, const float *const *v,
                          const size_t *n, uint8_t *out, size_t *used);
/* The same for four solog or sotk rows (solog: on CPUs with AVX-512). */
bool   as__sm_log_encode4(const as__sm_params *p, const float *const *v,
                          const size_t *n, uint8_t *out, size_t *used);
/* Bytes of an encoded row (any codec) without decoding it. */
size_t as__sm_row_size(const as__sm_params *p, const uint8_t *in, size_t n,
                      size_t len);
/* Bytes of an encoded log/topk row without decoding it. */
size_t as__sm_log_row_size(const as__sm_params *p, const uint8_t *in,
                          size_t n);

/* ---- row dumps (softmax/dump.c; format in that file and docs) ----------- */

typedef struct as__sm_dump_rec {
    char    name[25];        /* "vit", "lm", ... */
    int64_t rows, len, queries;
    bool    causal;
    float  *y;               /* rows x len, malloc'd: caller frees */
} as__sm_dump_rec;

/* Append one record of rows x len probabilities (masked entries 0) to f.
 * Errors: AS_EINVAL, AS_EIO. Not thread-safe on the same FILE. */
int as__sm_dump_write(FILE *f, const char *name, int64_t rows, int64_t len,
                     int64_t queries, bool causal, const float *y);
/* Read the next record: 0, 1 at a clean end of file, AS_EFORMAT (bad
 * magic, version, sizes or a truncated record), AS_ENOMEM. */
int as__sm_dump_read(FILE *f, as__sm_dump_rec *rec);

/* IEEE half conversions (round to nearest even). */
uint16_t as__sm_f32_to_f16(float f);
float    as__sm_f16_to_f32(uint16_t h);

#endif

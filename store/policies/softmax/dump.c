/*
 * Softmax row dumps: real attention probabilities written by a trainer and
 * read by `actstore bench softmax --rows FILE`.
 *
 * File: a sequence of records until end of file, each
 *   char     magic[8]   "ASSMROWS"
 *   uint32   version    1
 *   uint32   flags      bit 0: causal (row r has keys 0..r % queries)
 *   int64    rows, len, queries
 *   char     name[24]   NUL-padded label ("vit", "lm", "lm.blocks.1")
 *   float32  y[rows * len]   row-major, masked entries 0
 * All little endian (the machines we run on); 64-byte header.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "actstore/common.h"
#include "store/policies/softmax/softmax.h"

typedef struct sm_dump_hdr {
    char     magic[8];
    uint32_t version, flags;
    int64_t  rows, len, queries;
    char     name[24];
} sm_dump_hdr;
_Static_assert(sizeof(sm_dump_hdr) == 64, "dump header is 64 bytes");

int as__sm_dump_write(FILE *f, const char *name, int64_t rows, int64_t len,
                     int64_t queries, bool causal, const float *y)
{
    if (!f || rows < 1 || len < 1 || queries < 1 || rows % queries || !y)
        return AS_EINVAL;
    sm_dump_hdr h = {.version = 1, .flags = causal ? 1u : 0u, .rows = rows,
                     .len = len, .queries = queries};
    memcpy(h.magic, "ASSMROWS", 8);
    snprintf(h.name, sizeof h.name, "%s", name ? name : "");
    if (fwrite(&h, sizeof h, 1, f) != 1 ||
        fwrite(y, sizeof *y, (size_t)(rows * len), f) != (size_t)(rows * len))
        return AS_EIO;
    return 0;
}

int as__sm_dump_read(FILE *f, as__sm_dump_rec *rec)
{
    sm_dump_hdr h;
    memset(rec, 0, sizeof *rec);
    size_t got = fread(&h, 1, sizeof h, f);
    if (got == 0 && feof(f))
        return 1;                     /* clean end */
    if (got != sizeof h || memcmp(h.magic, "ASSMROWS", 8) || h.version != 1 ||
        h.rows < 1 || h.len < 1 || h.len > 65536 || h.queries < 1 ||
        h.rows % h.queries || h.rows > ((int64_t)1 << 31) / h.len)
        return AS_EFORMAT;
    float *y = malloc((size_t)(h.rows * h.len) * sizeof *y);
    if (!y)
        return AS_ENOMEM;
    if (fread(y, sizeof *y, (size_t)(h.rows * h.len), f) !=
        (size_t)(h.rows * h.len)) {
        free(y);
        return AS_EFORMAT;
    }
    memcpy(rec->name, h.name, sizeof h.name);
    rec->name[sizeof rec->name - 1] = 0;
    rec->rows = h.rows;
    rec->len = h.len;
    rec->queries = h.queries;
    rec->causal = h.flags & 1u;
    rec->y = y;
    return 0;
}

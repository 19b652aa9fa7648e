/* Fashion-MNIST from gzipped IDX files (see data.h). */
#include "layers/data.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "actstore/common.h"

#define PKG "dataset-fashion-mnist"

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

int as_nn_idx_read(const char *path, uint32_t magic, int expect_dims,
                   uint32_t dims[3], uint8_t **data, char *err, size_t errlen)
{
    *data = NULL;
    FILE *probe = fopen(path, "rb");
    if (!probe) {
        snprintf(err, errlen, "cannot open %s: %s (install the Debian package "
                 PKG ", or pass the directory that holds the files)", path,
                 strerror(errno));
        return errno == ENOENT ? AS_ENOTFOUND : AS_EIO;
    }
    fclose(probe);
    gzFile f = gzopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "cannot open %s with zlib", path);
        return AS_EIO;
    }
    uint8_t hdr[16];
    int hlen = 4 + 4 * expect_dims;
    int rc = 0;
    if (gzread(f, hdr, (unsigned)hlen) != hlen) {
        snprintf(err, errlen, "%s: truncated header (not a gzipped IDX file?)", path);
        rc = AS_EFORMAT;
        goto out;
    }
    if (be32(hdr) != magic) {
        snprintf(err, errlen, "%s: magic 0x%08x, expected 0x%08x", path,
                 be32(hdr), magic);
        rc = AS_EFORMAT;
        goto out;
    }
    size_t total = 1;
    for (int i = 0; i < expect_dims; i++) {
        dims[i] = be32(hdr + 4 + 4 * i);
        if (dims[i] == 0 || dims[i] > 1000000) {
            snprintf(err, errlen, "%s: dimension %d is %u", path, i, dims[i]);
            rc = AS_EFORMAT;
            goto out;
        }
        total *= dims[i];
    }
    *data = malloc(total);
    if (!*data) {
        snprintf(err, errlen, "%s: out of memory (%zu bytes)", path, total);
        rc = AS_ENOMEM;
        goto out;
    }
    size_t got = 0;
    while (got < total) {
        unsigned want = total - got > (1u << 30) ? (1u << 30) : (unsigned)(total - got);
        int n = gzread(f, *data + got, want);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    if (got != total) {
        snprintf(err, errlen, "%s: truncated data: %zu of %zu bytes", path, got, total);
        rc = AS_EFORMAT;
        goto out;
    }
    uint8_t extra;
    if (gzread(f, &extra, 1) != 0) {
        snprintf(err, errlen, "%s: trailing bytes after %zu bytes of data", path, total);
        rc = AS_EFORMAT;
    }
out:
    gzclose(f);
    if (rc) {
        free(*data);
        *data = NULL;
    }
    return rc;
}

int as_nn_fmnist_load(const char *dir, bool train, as_nn_images *out,
                      char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (!dir)
        dir = AS_NN_FMNIST_DIR;
    const char *pre = train ? "train" : "t10k";
    const uint32_t want = train ? 60000 : 10000;
    char ip[1024], lp[1024];
    snprintf(ip, sizeof ip, "%s/%s-images-idx3-ubyte.gz", dir, pre);
    snprintf(lp, sizeof lp, "%s/%s-labels-idx1-ubyte.gz", dir, pre);
    uint32_t id[3], ld[3];
    uint8_t *pix = NULL, *lab = NULL;
    int rc = as_nn_idx_read(ip, 0x00000803, 3, id, &pix, err, errlen);
    if (!rc)
        rc = as_nn_idx_read(lp, 0x00000801, 1, ld, &lab, err, errlen);
    if (rc)
        goto fail;
    rc = AS_EFORMAT;
    if (id[0] != want || ld[0] != want) {
        snprintf(err, errlen, "%s: %u images and %u labels, expected %u each",
                 dir, id[0], ld[0], want);
        goto fail;
    }
    if (id[1] != 28 || id[2] != 28) {
        snprintf(err, errlen, "%s: images are %ux%u, expected 28x28", ip, id[1], id[2]);
        goto fail;
    }
    for (uint32_t i = 0; i < ld[0]; i++)
        if (lab[i] > 9) {
            snprintf(err, errlen, "%s: label %u at index %u (expected 0..9)", lp,
                     lab[i], i);
            goto fail;
        }
    out->n = (int)id[0];
    out->rows = (int)id[1];
    out->cols = (int)id[2];
    out->pixels = pix;
    out->labels = lab;
    return 0;
fail:
    free(pix);
    free(lab);
    return rc;
}

void as_nn_images_free(as_nn_images *im)
{
    free(im->pixels);
    free(im->labels);
    memset(im, 0, sizeof *im);
}

void as_nn_images_batch(const as_nn_images *im, const int32_t *idx, int B,
                        float *x, int32_t *y)
{
    /* Fashion-MNIST training-set mean and standard deviation. */
    const float mean = 0.2860f, inv_std = 1.0f / 0.3530f;
    const size_t hw = (size_t)im->rows * im->cols;
    for (int b = 0; b < B; b++) {
        const uint8_t *p = im->pixels + (size_t)idx[b] * hw;
        for (size_t k = 0; k < hw; k++)
            x[b * hw + k] = ((float)p[k] * (1.0f / 255.0f) - mean) * inv_std;
        y[b] = im->labels[idx[b]];
    }
}

/*
 * Datasets (layers/data.h): the gzipped IDX reader and the Fashion-MNIST
 * loader on synthetic files (bad magic, dimensions, counts, truncation,
 * trailing bytes, labels out of range, missing files: each a clear error
 * naming the file), the real test split, and the fortunes text loader
 * (split by fortune, vocabulary, missing / empty directories).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <cmocka.h>

#include "actstore/common.h"
#include "layers/data.h"
#include "support/scratch.h"
#include "support/test_main.h"


static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* Write a gzipped IDX file: magic, ndims dims, then `ndata` bytes of
 * `fill` (or label pattern i % 10 when fill < 0), then `extra` bytes. */
static void write_idx(const char *name, uint32_t magic, int ndims,
                      const uint32_t *dims, size_t ndata, int fill,
                      size_t extra)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", scratch_dir, name);
    gzFile f = gzopen(path, "wb1");
    assert_non_null(f);
    uint8_t hdr[16];
    put_be32(hdr, magic);
    for (int i = 0; i < ndims; i++)
        put_be32(hdr + 4 + 4 * i, dims[i]);
    assert_int_equal(gzwrite(f, hdr, (unsigned)(4 + 4 * ndims)), 4 + 4 * ndims);
    uint8_t buf[4096];
    size_t done = 0;
    while (done < ndata + extra) {
        size_t n = ndata + extra - done < sizeof buf ? ndata + extra - done : sizeof buf;
        for (size_t i = 0; i < n; i++)
            buf[i] = fill >= 0 ? (uint8_t)fill : (uint8_t)((done + i) % 10);
        assert_int_equal(gzwrite(f, buf, (unsigned)n), (int)n);
        done += n;
    }
    gzclose(f);
}

static void write_split(const char *pre, uint32_t n, uint32_t rows, uint32_t cols,
                        size_t img_bytes, uint32_t nlab, int label_fill)
{
    char name[128];
    const uint32_t d3[3] = {n, rows, cols}, d1[1] = {nlab};
    snprintf(name, sizeof name, "%s-images-idx3-ubyte.gz", pre);
    write_idx(name, 0x803, 3, d3, img_bytes, 7, 0);
    snprintf(name, sizeof name, "%s-labels-idx1-ubyte.gz", pre);
    write_idx(name, 0x801, 1, d1, nlab, label_fill, 0);
}

static void expect_load_error(bool train, int code, const char *needle1,
                              const char *needle2)
{
    as_nn_images im;
    char err[1024] = "";
    int rc = as_nn_fmnist_load(scratch_dir, train, &im, err, sizeof err);
    if (rc != code)
        fail_msg("expected %d, got %d: %s", code, rc, err);
    assert_null(im.pixels);
    if (needle1 && !strstr(err, needle1))
        fail_msg("message '%s' does not contain '%s'", err, needle1);
    if (needle2 && !strstr(err, needle2))
        fail_msg("message '%s' does not contain '%s'", err, needle2);
}

static void test_fmnist_errors(void **state)
{
    (void)state;
    char path[512];
    /* nothing there: the exact path tried and the package */
    snprintf(path, sizeof path, "%s/train-images-idx3-ubyte.gz", scratch_dir);
    expect_load_error(true, AS_ENOTFOUND, path, "dataset-fashion-mnist");
    /* images there, labels missing */
    write_split("t10k", 10000, 28, 28, 10000u * 784, 10000, -1);
    snprintf(path, sizeof path, "%s/t10k-labels-idx1-ubyte.gz", scratch_dir);
    unlink(path);
    expect_load_error(false, AS_ENOTFOUND, path, "dataset-fashion-mnist");
    /* bad magic (labels magic on the images file) */
    const uint32_t d3[3] = {10000, 28, 28}, d1[1] = {10000};
    write_idx("t10k-images-idx3-ubyte.gz", 0x801, 3, d3, 10000u * 784, 0, 0);
    write_idx("t10k-labels-idx1-ubyte.gz", 0x801, 1, d1, 10000, -1, 0);
    expect_load_error(false, AS_EFORMAT, "t10k-images-idx3-ubyte.gz",
                      "magic 0x00000801, expected 0x00000803");
    /* wrong image size */
    write_split("t10k", 10000, 28, 27, 10000u * 28 * 27, 10000, -1);
    expect_load_error(false, AS_EFORMAT, "28x27", "expected 28x28");
    /* wrong count */
    write_split("t10k", 100, 28, 28, 100u * 784, 100, -1);
    expect_load_error(false, AS_EFORMAT, "100 images and 100 labels",
                      "expected 10000");
    /* truncated data */
    write_split("t10k", 10000, 28, 28, 100u * 784, 10000, -1);
    expect_load_error(false, AS_EFORMAT, "t10k-images-idx3-ubyte.gz",
                      "truncated data");
    /* trailing bytes */
    write_idx("t10k-images-idx3-ubyte.gz", 0x803, 3, d3, 10000u * 784, 0, 5);
    expect_load_error(false, AS_EFORMAT, "t10k-images-idx3-ubyte.gz",
                      "trailing bytes");
    /* a label out of range */
    write_split("t10k", 10000, 28, 28, 10000u * 784, 10000, 12);
    expect_load_error(false, AS_EFORMAT, "label 12 at index 0", "0..9");
    /* a zero dimension */
    const uint32_t dz[3] = {10000, 0, 28};
    write_idx("t10k-images-idx3-ubyte.gz", 0x803, 3, dz, 0, 0, 0);
    expect_load_error(false, AS_EFORMAT, "dimension 1 is 0", NULL);
    /* not gzip nor IDX: a text file */
    snprintf(path, sizeof path, "%s/t10k-images-idx3-ubyte.gz", scratch_dir);
    FILE *f = fopen(path, "w");
    fputs("hello", f);
    fclose(f);
    expect_load_error(false, AS_EFORMAT, "t10k-images-idx3-ubyte.gz", "truncated header");
    /* finally a valid split loads, and batches are normalised */
    write_split("t10k", 10000, 28, 28, 10000u * 784, 10000, -1);
    as_nn_images im;
    char err[512];
    assert_int_equal(as_nn_fmnist_load(scratch_dir, false, &im, err, sizeof err), 0);
    assert_int_equal(im.n, 10000);
    assert_int_equal(im.labels[13], 3);
    int32_t idx[2] = {5, 13}, y[2];
    float x[2 * 784];
    as_nn_images_batch(&im, idx, 2, x, y);
    assert_int_equal(y[0], 5);
    assert_int_equal(y[1], 3);
    assert_float_equal(x[100], (7.0f / 255.0f - 0.2860f) / 0.3530f, 1e-5);
    as_nn_images_free(&im);
}

static void test_fmnist_real(void **state)
{
    (void)state;
    as_nn_images im;
    char err[512];
    int rc = as_nn_fmnist_load(NULL, false, &im, err, sizeof err);
    if (rc)
        fail_msg("the Debian package dataset-fashion-mnist is needed: %s", err);
    assert_int_equal(im.n, 10000);
    assert_int_equal(im.rows, 28);
    int per[10] = {0};
    long sum = 0;
    for (int i = 0; i < im.n; i++)
        per[im.labels[i]]++;
    for (size_t i = 0; i < (size_t)im.n * 784; i++)
        sum += im.pixels[i];
    for (int k = 0; k < 10; k++)
        assert_int_equal(per[k], 1000);   /* the test split is balanced */
    double mean = (double)sum / ((double)im.n * 784 * 255);
    assert_true(mean > 0.26 && mean < 0.31);   /* the normalisation's mean */
    as_nn_images_free(&im);
}

static void test_text(void **state)
{
    (void)state;
    as_nn_text t;
    char err[512], dir[300], path[400];
    snprintf(dir, sizeof dir, "%s/nofortunes", scratch_dir);
    assert_int_equal(as_nn_text_load(dir, &t, err, sizeof err), AS_ENOTFOUND);
    assert_non_null(strstr(err, dir));
    assert_non_null(strstr(err, "fortunes"));
    snprintf(dir, sizeof dir, "%s/fortunes", scratch_dir);
    assert_int_equal(mkdir(dir, 0700), 0);
    assert_int_equal(as_nn_text_load(dir, &t, err, sizeof err), AS_ENOTFOUND);
    assert_non_null(strstr(err, "no fortune files"));
    /* index files (with a dot) are skipped */
    snprintf(path, sizeof path, "%s/a.dat", dir);
    FILE *f = fopen(path, "w");
    fputs("binary index", f);
    fclose(f);
    snprintf(path, sizeof path, "%s/short", dir);
    f = fopen(path, "w");
    fputs("too short\n%\n", f);
    fclose(f);
    assert_int_equal(as_nn_text_load(dir, &t, err, sizeof err), AS_EFORMAT);
    assert_non_null(strstr(err, "bytes of text"));
    /* 400 fortunes over two files */
    size_t total = 0;
    for (int file = 0; file < 2; file++) {
        snprintf(path, sizeof path, "%s/%s", dir, file ? "zeta" : "alpha");
        f = fopen(path, "w");
        for (int i = 0; i < 200; i++)
            total += (size_t)fprintf(f, "Fortune number %d of file %d.\n%%\n", i, file);
        fclose(f);
    }
    snprintf(path, sizeof path, "%s/short", dir);
    unlink(path);
    assert_int_equal(as_nn_text_load(dir, &t, err, sizeof err), 0);
    assert_int_equal(t.ntrain + t.nheldout, total);
    assert_true(t.nheldout > total / 40 && t.nheldout < total / 10);  /* ~1 in 20 */
    assert_true(t.vocab > 10 && t.vocab < 40);
    for (int k = 0; k < t.vocab; k++)
        assert_int_equal(t.tok_of[t.byte_of[k]], k);
    /* every fortune ends with its separator, in both parts */
    assert_int_equal(t.byte_of[t.train[t.ntrain - 1]], '\n');
    assert_int_equal(t.byte_of[t.train[t.ntrain - 2]], '%');
    assert_int_equal(t.byte_of[t.heldout[0]], 'F');
    as_nn_text_free(&t);
    /* the real package */
    int rc = as_nn_text_load(NULL, &t, err, sizeof err);
    if (rc)
        fail_msg("the Debian package fortunes is needed: %s", err);
    assert_true(t.ntrain > 1000000 && t.nheldout > 50000);
    assert_true(t.vocab > 60 && t.vocab <= 256);
    as_nn_text_free(&t);
}

AS_TEST_MAIN(scratch_group_setup, scratch_group_teardown,
             cmocka_unit_test(test_fmnist_errors),
             cmocka_unit_test(test_fmnist_real),
             cmocka_unit_test(test_text))

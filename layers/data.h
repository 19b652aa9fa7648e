/*
 * Datasets of the reference framework.
 *
 * Fashion-MNIST: the four gzipped IDX files of the Debian package
 * dataset-fashion-mnist (default directory AS_NN_FMNIST_DIR), read with
 * zlib; magic numbers, dimensions and counts are validated and every error
 * names the file. Text: the fortune files of the Debian package fortunes
 * (AS_NN_FORTUNES_DIR), as bytes, split into training and held-out text by
 * fortune.
 */
#ifndef AS_LAYERS_DATA_H
#define AS_LAYERS_DATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AS_NN_FMNIST_DIR   "/usr/share/datasets/fashion-mnist"
#define AS_NN_FORTUNES_DIR "/usr/share/games/fortunes"

typedef struct as_nn_images {
    int      n, rows, cols;
    uint8_t *pixels;    /* n * rows * cols, row-major */
    uint8_t *labels;    /* n, 0..9 */
} as_nn_images;

/* Load the training (train = true: 60000) or test (10000) split from dir
 * (NULL = default). Errors: AS_ENOTFOUND (names the path and the package),
 * AS_EFORMAT (bad magic / dims / count / truncated), AS_EIO, AS_ENOMEM;
 * err gets the message. */
int as_nn_fmnist_load(const char *dir, bool train, as_nn_images *out,
                      char *err, size_t errlen);
void as_nn_images_free(as_nn_images *im);
/* Read one gzipped IDX file (exposed for tests). expect_dims 1 or 3. */
int as_nn_idx_read(const char *path, uint32_t magic, int expect_dims,
                   uint32_t dims[3], uint8_t **data, char *err, size_t errlen);

/* Normalised float images of a batch: x (B, 1, rows, cols), y (B). */
void as_nn_images_batch(const as_nn_images *im, const int32_t *idx, int B,
                        float *x, int32_t *y);

typedef struct as_nn_text {
    uint8_t *train, *heldout;      /* token ids */
    size_t   ntrain, nheldout;
    int      vocab;                /* distinct bytes */
    uint8_t  byte_of[256];         /* token -> byte */
    uint8_t  tok_of[256];          /* byte -> token */
} as_nn_text;

/* Read every fortune file in dir (NULL = default; files without a dot in
 * their name, sorted), split fortunes ("%" lines) into held-out (every
 * 20th by a hash of its index) and training text. Errors as above. */
int as_nn_text_load(const char *dir, as_nn_text *out, char *err,
                    size_t errlen);
void as_nn_text_free(as_nn_text *t);

#endif

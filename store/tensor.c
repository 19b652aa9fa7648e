/* Tensor, dtype and kind helpers of the public store API. */
#include <string.h>
#include <time.h>

#include "store/store_internal.h"

size_t as_dtype_size(int dtype)
{
    switch (dtype) {
    case AS_F32: case AS_I32: return 4;
    case AS_F16: case AS_BF16: return 2;
    case AS_U8: return 1;
    default: return 0;
    }
}

const char *as_dtype_name(int dtype)
{
    static const char *const names[AS_DTYPE_COUNT] = {"f32", "f16", "bf16",
                                                      "i32", "u8"};
    return dtype >= 0 && dtype < AS_DTYPE_COUNT ? names[dtype] : "?";
}

int64_t as_tensor_numel(const as_tensor *t)
{
    if (!t || t->ndim < 0 || t->ndim > AS_MAX_DIMS)
        return 0;
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) {
        int64_t d = t->shape[i] < 0 ? 0 : t->shape[i];
        if (__builtin_mul_overflow(n, d, &n))
            return -1;
    }
    return n;
}

size_t as_tensor_bytes(const as_tensor *t)
{
    int64_t n = as_tensor_numel(t);
    size_t b;
    if (n < 0 || __builtin_mul_overflow((size_t)n, as_dtype_size(t->dtype), &b))
        return SIZE_MAX;
    return b;
}

static const char *const kind_names[AS_KIND_COUNT] = {
    "generic", "softmax_output", "conv_input", "conv_output", "linear_input",
    "activation_output", "activation_input", "norm_input", "pool_input",
    "attention_input", "dropout_mask", "index",
};

const char *as_kind_name(int kind)
{
    return kind >= 0 && kind < AS_KIND_COUNT ? kind_names[kind] : NULL;
}

int as_kind_from_name(const char *name, size_t len)
{
    if (!name)
        return AS_EINVAL;
    if (len == 7 && !memcmp(name, "softmax", 7))
        return AS_KIND_SOFTMAX_OUTPUT;
    for (int k = 0; k < AS_KIND_COUNT; k++)
        if (strlen(kind_names[k]) == len && !memcmp(kind_names[k], name, len))
            return k;
    return AS_ENOTFOUND;
}

/* Debug checksum of kept tensors: 64-bit multiply-xorshift over 8-byte
 * words, four lanes so the loop is not latency-bound. Not cryptographic:
 * it catches a framework that writes into a saved tensor. */
uint64_t as__checksum(const void *p, size_t n)
{
    const unsigned char *b = p;
    const uint64_t k = 0x9e3779b97f4a7c15ull;
    uint64_t h[4] = {n, k, ~n, k ^ n};
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        for (int l = 0; l < 4; l++) {
            uint64_t w;
            memcpy(&w, b + i + 8 * l, 8);
            h[l] = (h[l] ^ w) * k;
            h[l] ^= h[l] >> 29;
        }
    }
    uint64_t r = h[0] ^ (h[1] << 1) ^ (h[2] << 2) ^ (h[3] << 3);
    for (; i < n; i++)
        r = (r ^ b[i]) * k;
    return r ^ (r >> 31);
}

void as__strlcpy(char *dst, const char *src, size_t n)
{
    if (!n)
        return;
    size_t k = strlen(src);
    if (k >= n)
        k = n - 1;
    memcpy(dst, src, k);
    dst[k] = 0;
}

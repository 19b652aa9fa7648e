/*
 * Force-included in the clang build of the fuzz targets only (AS_FUZZ):
 * GCC's __builtin_shuffle on 8-float vectors, which some kernels use and
 * clang lacks, as plain loops (speed does not matter there).
 */
#ifndef AS_FUZZ_CLANG_COMPAT_H
#define AS_FUZZ_CLANG_COMPAT_H
#if defined(__clang__)
typedef float as__cf8 __attribute__((vector_size(32)));
typedef int as__ci8 __attribute__((vector_size(32)));
static inline as__cf8 as__cshuffle1(as__cf8 a, as__ci8 m)
{
    as__cf8 r;
    for (int i = 0; i < 8; i++)
        r[i] = a[m[i] & 7];
    return r;
}
static inline as__cf8 as__cshuffle2(as__cf8 a, as__cf8 b, as__ci8 m)
{
    as__cf8 r;
    for (int i = 0; i < 8; i++) {
        int k = m[i] & 15;
        r[i] = k < 8 ? a[k] : b[k - 8];
    }
    return r;
}
#define AS__CSHUF_PICK(_1, _2, _3, name, ...) name
#define __builtin_shuffle(...) \
    AS__CSHUF_PICK(__VA_ARGS__, as__cshuffle2, as__cshuffle1, _)(__VA_ARGS__)
#endif
#endif

/*
 * The one way this tree dispatches to vector code (internal):
 *   - AS_X86_DISPATCH: x86 with GCC or Clang; kernels marked
 *     __attribute__((target("avx2,..."))) are called after an as_cpu_*()
 *     check, with a portable path beside them.
 *   - AS_CLONES_V4_V3 / AS_CLONES_AVX2: GCC function multi-versioning, the
 *     best clone picked at load time. FP contraction is off (-std=c11), so
 *     every clone computes the same bits.
 * Define AS_NO_X86_DISPATCH to build the portable paths only.
 */
#ifndef AS_UTIL_SIMD_H
#define AS_UTIL_SIMD_H

#include <stdbool.h>

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__)) && \
    !defined(AS_NO_X86_DISPATCH)
#define AS_X86_DISPATCH 1
#include <immintrin.h>
#if defined(__clang__)
#include <cpuid.h>
#endif
#else
#define AS_X86_DISPATCH 0
#endif

#if AS_X86_DISPATCH && defined(__x86_64__) && !defined(__clang__) && defined(__linux__) && \
    !defined(AS_NO_TARGET_CLONES)
#define AS_CLONES_V4_V3 __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#define AS_CLONES_AVX2  __attribute__((target_clones("avx2", "default")))
#else
#define AS_CLONES_V4_V3
#define AS_CLONES_AVX2
#endif

#if AS_X86_DISPATCH
/* CPU features (thread-safe; the compiler's runtime caches them). */
static inline bool as_cpu_avx2(void)
{
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt");
}

static inline bool as_cpu_avx512bw(void)
{
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl");
}

static inline bool as_cpu_f16c(void)
{
#if defined(__clang__)   /* clang 14 does not know the "f16c" feature name */
    unsigned a, b, c, d;
    return __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29)) && (c & (1u << 28));
#else
    return __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx");
#endif
}

/* AVX-512 F/BW/VL and BMI2 (pext / pdep): the store's 512-bit kernels. */
static inline bool as_cpu_avx512_bmi2(void)
{
    return as_cpu_avx512bw() && __builtin_cpu_supports("bmi2");
}
#endif

/* Testing hook of the store's dispatched kernels (store/simd.c): while on,
 * every kernel that checks as__simd_portable() takes its portable path,
 * so tests can compare both on one machine. Process-wide, thread-safe;
 * returns the previous setting. */
bool as__simd_force_portable(bool on);
bool as__simd_portable(void);

#endif

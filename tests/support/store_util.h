/*
 * Helpers of the store tests (test_store*.c, test_store_codecs.c): stores,
 * tensors, save infos, random data, message checks, arena tags.
 * Header-only (static inline); each test file holds its own data state.
 */
#ifndef AS_TESTS_SUPPORT_STORE_UTIL_H
#define AS_TESTS_SUPPORT_STORE_UTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "actstore/store.h"
#include "util/rng.h"

/* spec is a valid policy spec. */
static inline void spec_ok(const char *spec)
{
    char err[256] = "";
    if (as_policy_check(spec, err, sizeof err) != 0)
        fail_msg("\"%s\": %s", spec, err);
}

/* spec is refused (AS_ESPEC) with a message holding want (NULL: any). */
static inline void spec_err(const char *spec, const char *want)
{
    char err[256] = "";
    assert_int_equal(as_policy_check(spec, err, sizeof err), AS_ESPEC);
    if (want && !strstr(err, want))
        fail_msg("\"%s\": \"%s\" lacks \"%s\"", spec, err, want);
}

/* A store with these settings (dir: offload directory or NULL); fails the
 * test when it cannot be created. */
static inline as_store *store_new(const char *spec, const char *dir, bool strict,
                                  uint64_t budget, const char *label)
{
    as_store_config cfg = {.policy = spec, .offload_dir = dir, .strict = strict,
                           .budget_bytes = budget, .label = label};
    as_store *s = NULL;
    char err[256] = "";
    int rc = as_store_create(&cfg, &s, err, sizeof err);
    if (rc != 0)
        fail_msg("as_store_create(%s): %s (%s)", spec ? spec : "(null)", as_strerror(rc), err);
    return s;
}

static inline as_tensor t2(void *data, int dtype, int64_t a, int64_t b)
{
    as_tensor t = {.data = data, .dtype = dtype, .ndim = 2, .shape = {a, b}};
    return t;
}

static inline as_save_info info(int kind, const char *layer)
{
    as_save_info i = {.kind = kind, .layer = layer};
    return i;
}

/* n floats uniform on [-1, 1) from state *rng (the caller frees them). */
static inline float *randv_from(uint64_t *rng, size_t n)
{
    float *x = malloc(n * sizeof *x);
    assert_non_null(x);
    for (size_t i = 0; i < n; i++)
        x[i] = (float)(as_rng_u32(rng) >> 8) / 16777216.0f * 2.0f - 1.0f;
    return x;
}

/* An a x b f32 tensor of such values (the caller frees its data). */
static inline as_tensor randt_from(uint64_t *rng, int64_t a, int64_t b)
{
    return t2(randv_from(rng, (size_t)(a * b)), AS_F32, a, b);
}

__attribute__((noinline, unused)) static void assert_contains(const char *hay,
                                                              const char *needle)
{
    if (!strstr(hay, needle))
        fail_msg("'%s' does not contain '%s'", hay, needle);
}

/* Save t as info into s, which must fall back from the policy named
 * `from` (the item's policy text says "fallback from <from>"); returns the
 * handle. */
static inline as_handle save_expect_fallback(as_store *s, const as_save_info *info,
                                             const as_tensor *t, const char *from)
{
    as_handle h;
    char want[64];
    snprintf(want, sizeof want, "fallback from %s", from);
    assert_int_equal(as_store_save(s, info, t, &h), 0);
    assert_contains(as_store_policy_of(s, h), want);
    return h;
}

/* Live bytes of the store's arena (every tag). */
static inline uint64_t store_live(as_store *s)
{
    as_arena_snapshot sn;
    assert_int_equal(as_arena_snapshot_take(as_store_arena(s), UINT64_MAX, &sn), 0);
    uint64_t v = sn.total.live_usable;
    as_arena_snapshot_free(&sn);
    return v;
}

static inline as_counter arena_tag(as_store *s, int tag)
{
    as_arena_flush_thread_cache(as_store_arena(s));
    as_arena_snapshot sn;
    assert_int_equal(as_arena_snapshot_take(as_store_arena(s), 0, &sn), 0);
    as_counter c = sn.tags[tag];
    as_arena_snapshot_free(&sn);
    return c;
}

/* ---- offload directories and mixed test data (test_store_codecs.c,
 * test_store_offload.c) ---- */

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <unistd.h>

/* A fresh directory under /tmp (the path stays valid for 8 calls). */
static inline const char *mktmp(void)
{
    static char buf[8][64];
    static int n;
    char *d = buf[n++ % 8];
    snprintf(d, 64, "/tmp/as_test_store_XXXXXX");
    assert_non_null(mkdtemp(d));
    return d;
}

/* The one offload file in dir (path into buf), or "" when none; returns
 * how many there are. */
static inline int offload_files(const char *dir, char *buf, size_t len)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    buf[0] = 0;
    while ((e = readdir(d)))
        if (!strncmp(e->d_name, "actstore-", 9)) {
            snprintf(buf, len, "%s/%s", dir, e->d_name);
            n++;
        }
    closedir(d);
    return n;
}

/* Open descriptors of this process on unnamed files in dir (offload files
 * have no name); buf gets a /proc/self/fd path of the last one, through
 * which the file can be opened, stat'ed or truncated. */
static inline int offload_fds(const char *dir, char *buf, size_t len)
{
    DIR *d = opendir("/proc/self/fd");
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    size_t dl = strlen(dir);
    buf[0] = 0;
    while ((e = readdir(d))) {
        char fp[300], target[600];
        snprintf(fp, sizeof fp, "/proc/self/fd/%s", e->d_name);
        ssize_t k = readlink(fp, target, sizeof target - 1);
        if (k <= 0)
            continue;
        target[k] = 0;
        if (!strncmp(target, dir, dl) && target[dl] == '/' && strstr(target, "(deleted)")) {
            snprintf(buf, len, "%s", fp);
            n++;
        }
    }
    closedir(d);
    return n;
}

static inline void rm_tmp(const char *dir)
{
    char p[512];
    while (offload_files(dir, p, sizeof p) > 0)
        unlink(p);
    rmdir(dir);
}

/* A standard normal draw from the high 32 bits of two draws. */
static inline float gauss_from(uint64_t *rng)
{
    double u = ((double)as_rng_u32(rng) + 0.5) / 4294967296.0;
    double v = ((double)as_rng_u32(rng) + 0.5) / 4294967296.0;
    return (float)(sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v));
}

/* A test tensor of a dtype: mixed data (runs of zeros, specials for the
 * float types) so every codec path is taken. The caller frees it. */
static inline void *make_data_from(uint64_t *rng, int dtype, size_t n, int flavor)
{
    size_t es = as_dtype_size(dtype);
    uint8_t *p = malloc(n * es + 1);
    assert_non_null(p);
    for (size_t i = 0; i < n; i++) {
        float f = flavor == 0 ? (gauss_from(rng) > 0 ? fabsf(gauss_from(rng)) : 0.0f) /* relu */
                : flavor == 1 ? gauss_from(rng) : (float)(as_rng_u32(rng) % 1000) * 1e-3f;
        switch (dtype) {
        case AS_F32: memcpy(p + 4 * i, &f, 4); break;
        case AS_I32: {
            int32_t v = flavor == 0 && f == 0 ? 0 : (int32_t)as_rng_u32(rng);
            memcpy(p + 4 * i, &v, 4);
            break;
        }
        case AS_F16: case AS_BF16: {
            uint16_t v = f == 0 ? 0 : (uint16_t)as_rng_u32(rng);
            memcpy(p + 2 * i, &v, 2);
            break;
        }
        default: p[i] = f == 0 ? 0 : (uint8_t)as_rng_u32(rng);
        }
    }
    if (dtype == AS_F32 && n > 8) {
        float sp[] = {NAN, -0.0f, INFINITY, -INFINITY, 1e-45f, -3.4e38f, 0x1p-140f};
        memcpy(p, sp, sizeof sp);
        uint32_t payload = 0x7fc12345u;   /* a NaN payload survives */
        memcpy(p + 4 * 7, &payload, 4);
    }
    return p;
}

#endif

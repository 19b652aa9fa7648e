/*
 * Offload through the store: round trips with prefetch, a modified or
 * truncated file giving errors that name the handle and the layer with
 * nothing written, files that have no name (none outlives a killed
 * process), falling back to memory when the directory is missing or full
 * (counted, named), a budget sweep, and concurrent offload from several
 * threads. The other codecs: test_store_codecs.c.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <pthread.h>
#include <unistd.h>

#include <cmocka.h>

#include "actstore/store.h"
#include "store/policies/quant.h"
#include "store/store_internal.h"
#include "support/store_stats.h"
#include "support/store_util.h"
#include "util/rng.h"

/* ---- helpers (and tests/support/store_util.h) --------------------------- */

static uint64_t rng = 0x2545f4914f6cdd1dull;
static float gauss(void) { return gauss_from(&rng); }
static void *make_data(int dtype, size_t n, int flavor)
{
    return make_data_from(&rng, dtype, n, flavor);
}
static as_store *mk(const char *spec, const char *dir, bool strict)
{
    return store_new(spec, dir, strict, 0, NULL);
}

/* ---- offload ------------------------------------------------------------------ */

typedef struct off_case {
    as_store *s;
    const char *dir;
    float *x, *y;
    size_t n;
    as_tensor t, d;
    as_handle h;
    char path[512], hs[32];
} off_case;

static void off_setup(off_case *c, const char *spec, const char *layer)
{
    memset(c, 0, sizeof *c);
    c->dir = mktmp();
    c->s = mk(spec, c->dir, false);
    c->n = 300000;
    c->x = make_data(AS_F32, c->n, 1);
    c->y = malloc(c->n * sizeof *c->y);
    c->t = (as_tensor){.data = c->x, .dtype = AS_F32, .ndim = 2,
                       .shape = {(int64_t)c->n / 300, 300}};
    c->d = c->t;
    c->d.data = c->y;
    as_save_info i = {.kind = AS_KIND_CONV_INPUT, .layer = layer};
    assert_int_equal(as_store_save(c->s, &i, &c->t, &c->h), 0);
    as__offload_wait_idle();
    snprintf(c->hs, sizeof c->hs, "0x%016llx", (unsigned long long)c->h.v);
}

static void off_teardown(off_case *c)
{
    if (!as_handle_is_null(c->h))
        assert_int_equal(as_store_release(c->s, c->h), 0);
    as_store_destroy(c->s);
    free(c->x);
    free(c->y);
    rm_tmp(c->dir);
}

static void patch(const char *path, long off, const void *bytes, size_t n)
{
    int fd = open(path, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, bytes, n, off), (ssize_t)n);
    close(fd);
}

static void test_offload_round_trip_prefetch(void **st)
{
    (void)st;
    off_case c;
    off_setup(&c, "default=offload", "conv3");
    assert_string_equal(as_store_policy_of(c.s, c.h), "offload");
    assert_int_equal(offload_files(c.dir, c.path, sizeof c.path), 0);   /* no name */
    assert_int_equal(offload_fds(c.dir, c.path, sizeof c.path), 1);
    struct stat sb;
    assert_int_equal(stat(c.path, &sb), 0);
    assert_int_equal(sb.st_size, 64 + c.n * 4);
    assert_int_equal(sb.st_mode & 0777, 0600);
    as_store_stats a = stats(c.s);
    assert_int_equal(a.total.stored_live, 0);   /* all on disk now */
    assert_int_equal(a.total.stored_peak, c.n * 4);   /* the staging copy was */
    assert_int_equal(a.total.raw_live, c.n * 4);
    as_store_stats_free(&a);
    assert_int_equal(as_store_restore(c.s, c.h, &c.d), 0);
    assert_memory_equal(c.x, c.y, c.n * 4);
    for (int k = 0; k < 3; k++) {   /* prefetched reads, then a direct one */
        memset(c.y, 0, c.n * 4);
        assert_int_equal(as_store_prefetch(c.s, c.h), 0);
        if (k == 1)
            as__offload_wait_idle();   /* the read finished before restore */
        assert_int_equal(as_store_restore(c.s, c.h, &c.d), 0);
        assert_memory_equal(c.x, c.y, c.n * 4);
    }
    /* many offloaded items restored right away (staging or file) */
    as_handle hs[6];
    as_save_info i = {.kind = AS_KIND_CONV_INPUT, .layer = "conv4"};
    for (int k = 0; k < 6; k++)
        assert_int_equal(as_store_save(c.s, &i, &c.t, &hs[k]), 0);
    for (int k = 5; k >= 0; k--) {
        memset(c.y, 0, c.n * 4);
        assert_int_equal(as_store_restore(c.s, hs[k], &c.d), 0);
        assert_memory_equal(c.x, c.y, c.n * 4);
        assert_int_equal(as_store_release(c.s, hs[k]), 0);
    }
    /* an empty tensor: no file, restores give nothing, release is fine */
    as_tensor e = {.data = NULL, .dtype = AS_F32, .ndim = 2, .shape = {0, 300}};
    as_handle he;
    assert_int_equal(as_store_save(c.s, &i, &e, &he), 0);
    assert_string_equal(as_store_policy_of(c.s, he), "offload");
    assert_int_equal(as_store_restore(c.s, he, &e), 0);
    assert_int_equal(as_store_prefetch(c.s, he), 0);
    assert_int_equal(as_store_restore(c.s, he, &e), 0);
    assert_int_equal(as_store_release(c.s, he), 0);
    assert_int_equal(as_store_release(c.s, c.h), 0);
    c.h = AS_HANDLE_NULL;
    as__offload_wait_idle();
    assert_int_equal(offload_fds(c.dir, c.path, sizeof c.path), 0);
    off_teardown(&c);
}

static void expect_corrupt(off_case *c, int code, const char *what)
{
    memset(c->y, 0x33, c->n * 4);
    assert_int_equal(as_store_restore(c->s, c->h, &c->d), code);
    assert_contains(as_store_last_error(c->s), c->hs);
    assert_contains(as_store_last_error(c->s), "conv7");
    assert_contains(as_store_last_error(c->s), what);
    for (size_t k = 0; k < c->n; k++)
        assert_int_equal(((uint32_t *)c->y)[k], 0x33333333u);
    /* prefetched: the same error when the restore comes */
    assert_int_equal(as_store_prefetch(c->s, c->h), 0);
    assert_int_equal(as_store_restore(c->s, c->h, &c->d), code);
    assert_contains(as_store_last_error(c->s), what);
    assert_int_equal(((uint32_t *)c->y)[0], 0x33333333u);
}

static void test_offload_corrupted_file(void **st)
{
    (void)st;
    off_case c;
    off_setup(&c, "default=offload", "conv7");
    assert_int_equal(offload_fds(c.dir, c.path, sizeof c.path), 1);
    /* one payload byte modified */
    uint8_t b, nb;
    int fd = open(c.path, O_RDONLY);
    assert_int_equal(pread(fd, &b, 1, 64 + 12345), 1);
    close(fd);
    nb = b ^ 1;
    patch(c.path, 64 + 12345, &nb, 1);
    expect_corrupt(&c, AS_ECORRUPT, "checksum mismatch");
    patch(c.path, 64 + 12345, &b, 1);   /* put back: fine again */
    assert_int_equal(as_store_restore(c.s, c.h, &c.d), 0);
    assert_memory_equal(c.x, c.y, c.n * 4);
    /* the header */
    patch(c.path, 0, "X", 1);
    expect_corrupt(&c, AS_ECORRUPT, "bad header");
    patch(c.path, 0, "A", 1);
    assert_int_equal(as_store_restore(c.s, c.h, &c.d), 0);
    /* truncated */
    assert_int_equal(truncate(c.path, 64 + 1000), 0);
    expect_corrupt(&c, AS_ECORRUPT, "truncated");
    as_store_stats a = stats(c.s);
    assert_int_equal(a.total.restores, 2);   /* only the good ones count */
    as_store_stats_free(&a);
    off_teardown(&c);
}

/* The child of test_offload_files_die_with_process (this program run
 * again with --offload-child DIR: a fresh process, not a fork of a
 * threaded one): offloads 8 tensors, waits for the writes, kills itself. */
static int offload_child(const char *dir)
{
    as_store_config cfg = {.policy = "default=offload", .offload_dir = dir};
    as_store *s = NULL;
    if (as_store_create(&cfg, &s, NULL, 0))
        return 3;
    static float x[50000];
    as_tensor t = {.data = x, .dtype = AS_F32, .ndim = 1, .shape = {50000}};
    as_save_info i = {.kind = AS_KIND_ACTIVATION_OUTPUT, .layer = "k"};
    as_handle h;
    for (int k = 0; k < 8; k++)
        if (as_store_save(s, &i, &t, &h) || strcmp(as_store_policy_of(s, h), "offload"))
            return 3;
    as__offload_wait_idle();
    raise(SIGKILL);
    return 4;
}

/* A process killed with offloaded items live leaves no file behind. */
static void test_offload_files_die_with_process(void **st)
{
    (void)st;
    const char *dir = mktmp();
    fflush(NULL);
    pid_t pid;
    char *const args[] = {"test_store_offload", "--offload-child", (char *)dir, NULL};
    extern char **environ;
    assert_int_equal(posix_spawn(&pid, "/proc/self/exe", NULL, NULL, args, environ), 0);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    DIR *d = opendir(dir);
    assert_non_null(d);
    int entries = 0;
    for (struct dirent *e; (e = readdir(d));)
        entries += e->d_name[0] != '.';
    closedir(d);
    assert_int_equal(entries, 0);
    rm_tmp(dir);
}

static void test_offload_missing_or_full_dir(void **st)
{
    (void)st;
    float x[1000], y[1000];
    for (int k = 0; k < 1000; k++)
        x[k] = gauss();
    as_tensor t = {.data = x, .dtype = AS_F32, .ndim = 1, .shape = {1000}}, d = t;
    d.data = y;
    as_save_info i = {.kind = AS_KIND_ACTIVATION_OUTPUT, .layer = "act9"};
    for (int strict = 0; strict < 2; strict++) {
        /* missing directory (store default and spec argument) */
        as_store *s = mk("default=offload; layer:z=offload:/nonexistent/as|zstd",
                         "/nonexistent/actstore-dir", strict);
        as_handle h, hz;
        assert_int_equal(as_store_save(s, &i, &t, &h), 0);
        assert_contains(as_store_policy_of(s, h), "keep (fallback from offload: directory "
                                                  "/nonexistent/actstore-dir");
        i.layer = "z";
        assert_int_equal(as_store_save(s, &i, &t, &hz), 0);
        assert_contains(as_store_policy_of(s, hz), "zstd (fallback from offload:/nonexistent/as");
        i.layer = "act9";
        memset(y, 0, sizeof y);
        assert_int_equal(as_store_restore(s, h, &d), 0);
        assert_memory_equal(x, y, sizeof x);
        assert_int_equal(as_store_restore(s, hz, &d), 0);
        assert_memory_equal(x, y, sizeof x);
        as_store_stats a = stats(s);
        assert_int_equal(a.offload_fallbacks, 2);
        assert_int_equal(a.total.fallbacks, 2);
        assert_int_equal(layer_of(&a, "act9")->c.fallbacks, 1);
        assert_contains(layer_of(&a, "act9")->last_fallback, "No such file or directory");
        assert_int_equal(layer_of(&a, "act9")->c.stored_live, sizeof x);   /* in memory */
        as_store_stats_free(&a);
        as_store_release(s, h);
        as_store_release(s, hz);
        as_store_destroy(s);
    }
    /* a full directory (ENOSPC when reserving the file's space) */
    const char *dir = mktmp();
    as_store *s = mk("default=offload", dir, false);
    as_handle h;
    as__offload_inject(1, ENOSPC);
    assert_int_equal(as_store_save(s, &i, &t, &h), 0);
    assert_contains(as_store_policy_of(s, h), "No space left on device");
    assert_int_equal(as_store_restore(s, h, &d), 0);
    assert_memory_equal(x, y, sizeof x);
    as_store_release(s, h);
    /* the disk fills up during the background write: kept in memory */
    as__offload_inject(2, ENOSPC);
    assert_int_equal(as_store_save(s, &i, &t, &h), 0);
    as__offload_wait_idle();
    char p[512];
    assert_int_equal(offload_fds(dir, p, sizeof p), 0);   /* the partial file is gone */
    memset(y, 0, sizeof y);
    assert_int_equal(as_store_restore(s, h, &d), 0);
    assert_memory_equal(x, y, sizeof x);
    as_store_stats a = stats(s);
    assert_int_equal(a.offload_fallbacks, 2);
    assert_contains(layer_of(&a, "act9")->last_fallback, "write failed");
    assert_int_equal(a.total.stored_live, sizeof x);   /* the staging copy stays */
    as_store_stats_free(&a);
    as_store_release(s, h);
    a = stats(s);
    assert_int_equal(a.total.stored_live, 0);
    as_store_stats_free(&a);
    /* afterwards offload works again */
    assert_int_equal(as_store_save(s, &i, &t, &h), 0);
    assert_string_equal(as_store_policy_of(s, h), "offload");
    as__offload_wait_idle();
    assert_int_equal(offload_fds(dir, p, sizeof p), 1);
    assert_int_equal(as_store_restore(s, h, &d), 0);
    assert_memory_equal(x, y, sizeof x);
    as_store_release(s, h);
    as_store_destroy(s);
    rm_tmp(dir);
}

/* Fault injection through the budget: for each codec, every budget from
 * 0 up in small steps until the save succeeds. Each failed save returns
 * AS_EBUDGET and leaves nothing behind (no handle, no stored or raw bytes,
 * nothing in the arena's saved tag); then the store works normally. */
static void test_budget_sweep(void **st)
{
    (void)st;
    static const char *const specs[] = {"default=keep", "default=zstd", "default=q4:g=64",
                                        "default=fp16", "default=offload"};
    size_t n = 640000;   /* 2.4 MiB: three zstd frames */
    float *x = make_data(AS_F32, n, 0), *y = malloc(n * sizeof *y);
    as_tensor t = {.data = x, .dtype = AS_F32, .ndim = 2, .shape = {(int64_t)n / 1000, 1000}};
    as_tensor d = t;
    d.data = y;
    as_save_info i = {.kind = AS_KIND_GENERIC, .layer = "sweep"};
    for (size_t k = 0; k < sizeof specs / sizeof specs[0]; k++) {
        const char *dir = mktmp();
        as_store *s = mk(specs[k], dir, false);
        as_arena *a = as_store_arena(s);
        int fails = 0;
        for (uint64_t budget = 1;; budget += 32 << 10) {
            as_arena_set_budget(a, budget);
            as_handle h;
            int rc = as_store_save(s, &i, &t, &h);
            if (rc == 0) {
                as_arena_set_budget(a, 0);
                assert_int_equal(as_store_restore(s, h, &d), 0);
                if (!strstr(specs[k], "q4") && !strstr(specs[k], "fp16"))
                    assert_memory_equal(x, y, n * sizeof *y);   /* lossless ones */
                else
                    for (size_t j = 64; j < n; j++)   /* past the specials' group */
                        assert_true(fabsf(x[j] - y[j]) <= 0.5f + fabsf(x[j]) * 1e-3f);
                assert_int_equal(as_store_release(s, h), 0);
                break;
            }
            if (rc != AS_EBUDGET)
                fail_msg("%s, budget %llu: %s (%s)", specs[k], (unsigned long long)budget,
                         as_strerror(rc), as_store_last_error(s));
            fails++;
            assert_true(as_handle_is_null(h));
            assert_contains(as_store_last_error(s), "budget");
            as_store_stats a2 = stats(s);
            assert_int_equal(a2.live_handles, 0);
            assert_int_equal(a2.total.raw_live, 0);
            assert_int_equal(a2.total.stored_live, 0);
            as_store_stats_free(&a2);
            as_arena_flush_thread_cache(a);
            as_arena_snapshot sn;
            assert_int_equal(as_arena_snapshot_take(a, 0, &sn), 0);
            assert_int_equal(sn.tags[AS_TAG_SAVED].live_requested, 0);
            as_arena_snapshot_free(&sn);
            assert_true(budget < (64u << 20));
        }
        assert_true(fails >= 3);   /* the sweep went through the error paths */
        as__offload_wait_idle();
        as_store_destroy(s);
        rm_tmp(dir);
    }
    free(x);
    free(y);
}

/* Offload from 4 threads at once: saves, prefetches, restores (from the
 * staging copy, a prefetched buffer or the file) and releases interleave
 * with the I/O thread's writes and reads. */
typedef struct off_thr {
    as_store *s;
    int id, errors;
    char msg[300];
} off_thr;

static void *off_worker(void *arg)
{
    off_thr *c = arg;
    enum { N = 16384, KEEP = 6 };
    float *x = malloc(KEEP * N * sizeof *x), *y = malloc(N * sizeof *y);
    as_handle h[KEEP] = {{0}};
    uint64_t r = 0x9e3779b97f4a7c15ull * (uint64_t)(c->id + 1);
    for (int it = 0; it < 120 && !c->errors; it++) {
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        int slot = (int)((r >> 33) % KEEP);
        float *xs = x + slot * N;
        int rc = 0;
        if (!as_handle_is_null(h[slot])) {   /* restore the old one, then release */
            as_tensor d = {.data = y, .dtype = AS_F32, .ndim = 1, .shape = {N}};
            if ((r >> 20) & 1)
                rc = as_store_prefetch(c->s, h[slot]);
            if (rc == 0)
                rc = as_store_restore(c->s, h[slot], &d);
            if (rc == 0 && memcmp(xs, y, N * sizeof *y)) {
                snprintf(c->msg, sizeof c->msg, "thread %d: wrong values", c->id);
                c->errors++;
            }
            if (rc == 0)
                rc = as_store_release(c->s, h[slot]);
            h[slot] = AS_HANDLE_NULL;
        }
        for (int j = 0; j < N; j++)
            xs[j] = (float)(it * 31 + j + c->id * 1000);
        as_tensor t = {.data = xs, .dtype = AS_F32, .ndim = 1, .shape = {N}};
        as_save_info i = {.kind = AS_KIND_GENERIC, .layer = "othr"};
        if (rc == 0)
            rc = as_store_save(c->s, &i, &t, &h[slot]);
        if (rc != 0 && !c->errors) {
            snprintf(c->msg, sizeof c->msg, "thread %d: %s: %s", c->id, as_strerror(rc),
                     as_store_last_error(c->s));
            c->errors++;
        }
    }
    for (int k = 0; k < KEEP; k++)
        as_store_release(c->s, h[k]);
    free(x);
    free(y);
    return NULL;
}

static void test_offload_threads(void **st)
{
    (void)st;
    const char *dir = mktmp();
    as_store *s = mk("default=offload", dir, false);
    off_thr c[4];
    pthread_t th[4];
    for (int k = 0; k < 4; k++) {
        c[k] = (off_thr){.s = s, .id = k};
        assert_int_equal(pthread_create(&th[k], NULL, off_worker, &c[k]), 0);
    }
    for (int k = 0; k < 4; k++)
        pthread_join(th[k], NULL);
    for (int k = 0; k < 4; k++)
        if (c[k].errors)
            fail_msg("%s", c[k].msg);
    as__offload_wait_idle();
    as_store_stats a = stats(s);
    assert_int_equal(a.live_handles, 0);
    assert_int_equal(a.total.stored_live, 0);
    assert_int_equal(a.offload_fallbacks, 0);
    assert_int_equal(a.total.saves, 4 * 120);
    as_store_stats_free(&a);
    char p[512];
    assert_int_equal(offload_fds(dir, p, sizeof p), 0);
    as_store_destroy(s);
    rm_tmp(dir);
}

int main(int argc, char **argv)
{
    if (argc == 3 && !strcmp(argv[1], "--offload-child"))
        return offload_child(argv[2]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_offload_round_trip_prefetch),
        cmocka_unit_test(test_offload_corrupted_file),
        cmocka_unit_test(test_offload_files_die_with_process),
        cmocka_unit_test(test_offload_missing_or_full_dir),
        cmocka_unit_test(test_budget_sweep),
        cmocka_unit_test(test_offload_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

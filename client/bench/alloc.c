/*
 * actstore bench alloc: CPU time per alloc+free pair at 64 B, 4 KiB, 1 MiB
 * and 64 MiB for the tracked allocator against plain jemalloc (mallocx /
 * sdallocx with a private tcache on an arena of its own, configured like the
 * tracked one), with glibc and jemalloc's malloc/free fast path for context.
 *
 * Every repeat times each (size, impl) cell once on the calling thread's CPU
 * clock (other processes' load does not count); the tracked and the plain
 * jemalloc cells run back to back in an order that alternates between
 * repeats, and the reported ratio is the median over repeats of the
 * per-repeat ratio. Memory is not touched beyond one byte: this measures the
 * allocators, not page faults.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jemalloc/jemalloc.h>

#include "actstore/alloc.h"
#include "bench.h"
#include "util/clock.h"
#include "cli.h"
#include "stats.h"

/* glibc's own allocator: jemalloc replaces malloc in this process. */
extern void *__libc_malloc(size_t);
extern void __libc_free(void *);

enum { IMPL_JEMALLOC, IMPL_ACTSTORE, IMPL_GLIBC, IMPL_JE_MALLOC, NIMPL };
static const char *const impl_name[NIMPL] = {"jemalloc", "actstore", "glibc",
                                             "jemalloc_malloc"};

static const size_t sizes[] = {64, 4096, (size_t)1 << 20, (size_t)64 << 20};
#define NSIZES (sizeof sizes / sizeof sizes[0])

typedef struct ctx {
    as_arena *arena;       /* tracked */
    int       je_flags;    /* plain arena + private tcache */
    unsigned  je_arena, je_tcache;
} ctx;

#define KEEP(p) __asm__ volatile("" : : "r"(p) : "memory")

/* n pairs of one implementation, inlined (no call through a pointer in the
 * timed loop): ALLOC declares p (NULL on failure), FREE frees it. */
#define PAIRS(ALLOC, p, FREE)                                               \
    for (unsigned long i = 0; i < n; i++) {                                 \
        ALLOC;                                                              \
        if (!(p))                                                           \
            return -1;                                                      \
        (p)[0] = 1;                                                         \
        KEEP(p);                                                            \
        FREE;                                                               \
    }

/* Time n pairs of one implementation at one size; returns thread-CPU ns per
 * pair, or a negative value on allocation failure. */
static double run_cell(ctx *c, int impl, size_t size, unsigned long n)
{
    uint64_t t0 = as_clock_ns(CLOCK_THREAD_CPUTIME_ID);
    switch (impl) {
    case IMPL_GLIBC:
        PAIRS(char *p = __libc_malloc(size), p, __libc_free(p));
        break;
    case IMPL_JE_MALLOC:
        PAIRS(char *p = malloc(size), p, free(p));
        break;
    case IMPL_JEMALLOC:
        PAIRS(char *p = mallocx(size, c->je_flags), p,
              sdallocx(p, size, c->je_flags));
        break;
    default:
        PAIRS(as_block b; char *p = as_alloc(c->arena, size, AS_TAG_WORKSPACE,
                                             AS_LAYER_NONE, &b) ? NULL : b.ptr,
              p, as_free(c->arena, &b));
        break;
    }
    return (double)(as_clock_ns(CLOCK_THREAD_CPUTIME_ID) - t0) / (double)n;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: actstore bench alloc [--json FILE] [--repeats N] [--scale X]\n\n"
            "Thread-CPU ns per alloc+free pair at 64 B, 4 KiB, 1 MiB and 64 MiB:\n"
            "the tracked allocator (as_alloc/as_free) against plain jemalloc\n"
            "(mallocx/sdallocx, private tcache, an arena configured like the\n"
            "tracked one), with glibc (__libc_malloc/__libc_free) and jemalloc's\n"
            "malloc/free fast path for context. as/je is the median over repeats\n"
            "of the per-repeat ratio (the two cells run back to back).\n\n"
            "  --json FILE   write {\"bench\":\"alloc\",\"results\":[...]} (\"-\" = stdout)\n"
            "  --repeats N   repeats per cell, interleaved (default 11)\n"
            "  --scale X     multiply the pairs per repeat (default 1.0)\n");
}

/* The plain arena gets the tracked arena's decay setting (freed pages kept,
 * docs/allocator.md), so the ratio measures the tracking alone. */
static int plain_jemalloc(ctx *c)
{
    size_t sz = sizeof c->je_arena;
    if (mallctl("arenas.create", &c->je_arena, &sz, NULL, 0) != 0)
        return -1;
    char name[64];
    snprintf(name, sizeof name, "arena.%u.muzzy_decay_ms", c->je_arena);
    ssize_t never = -1;
    (void)mallctl(name, NULL, NULL, &never, sizeof never);
    sz = sizeof c->je_tcache;
    if (mallctl("tcache.create", &c->je_tcache, &sz, NULL, 0) != 0)
        return -1;
    c->je_flags = MALLOCX_ARENA(c->je_arena) | MALLOCX_TCACHE(c->je_tcache);
    return 0;
}

/* Every cell of size si, repeats times: ns[(impl * repeats) + r]. */
static int run_size(ctx *c, size_t size, unsigned long n, unsigned long repeats, double *ns)
{
    for (int impl = 0; impl < NIMPL; impl++)      /* warm-up */
        if (run_cell(c, impl, size, n / 10 + 1) < 0)
            return impl;
    for (unsigned long r = 0; r < repeats; r++)
        for (int k = 0; k < NIMPL; k++) {
            /* the measured pair first, its order alternating */
            int impl = k < 2 ? (int)((unsigned long)k ^ (r & 1)) : k;
            double v = run_cell(c, impl, size, n);
            if (v < 0)
                return impl;
            ns[(unsigned)impl * repeats + r] = v;
        }
    return -1;
}

static cJSON *report(const double *ns, unsigned long repeats, const double load[2])
{
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "bench", "alloc");
    cJSON_AddStringToObject(root, "clock", "thread_cpu");
    cJSON_AddNumberToObject(root, "repeats", (double)repeats);
    cJSON_AddNumberToObject(root, "loadavg_start", load[0]);
    cJSON_AddNumberToObject(root, "loadavg_end", load[1]);
    cJSON *results = cJSON_AddArrayToObject(root, "results");
    double *tmp = malloc(repeats * sizeof *tmp);
    if (!tmp)
        return root;
    printf("%-10s %11s %11s %11s %11s %8s\n", "size", "jemalloc", "actstore", "glibc",
           "je malloc", "as/je");
    for (unsigned si = 0; si < NSIZES; si++) {
        const double *v = &ns[si * NIMPL * repeats];
        double med[NIMPL];
        for (int impl = 0; impl < NIMPL; impl++) {
            memcpy(tmp, &v[(unsigned)impl * repeats], repeats * sizeof *tmp);
            med[impl] = as_stats_median(tmp, repeats);
            cJSON *e = cJSON_CreateObject();
            cJSON_AddStringToObject(e, "impl", impl_name[impl]);
            cJSON_AddNumberToObject(e, "size_bytes", (double)sizes[si]);
            cJSON_AddNumberToObject(e, "ns_per_pair", med[impl]);
            cJSON_AddItemToArray(results, e);
        }
        for (unsigned long r = 0; r < repeats; r++)
            tmp[r] = v[IMPL_ACTSTORE * repeats + r] / v[IMPL_JEMALLOC * repeats + r];
        double ratio = as_stats_median(tmp, repeats);
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "impl", "actstore/jemalloc");
        cJSON_AddNumberToObject(e, "size_bytes", (double)sizes[si]);
        cJSON_AddNumberToObject(e, "median_ratio", ratio);
        cJSON_AddItemToArray(results, e);
        char h[32];
        printf("%-10s %11.1f %11.1f %11.1f %11.1f %7.2fx\n",
               as_cli_human_bytes((double)sizes[si], h, sizeof h), med[IMPL_JEMALLOC],
               med[IMPL_ACTSTORE], med[IMPL_GLIBC], med[IMPL_JE_MALLOC], ratio);
    }
    printf("ns per pair, thread CPU time, medians of %lu repeats; load average %.2f -> %.2f\n",
           repeats, load[0], load[1]);
    free(tmp);
    return root;
}

int as_bench_alloc(int argc, char **argv)
{
    const char *json_path = NULL;
    unsigned long long repeats = 11;
    double scale = 1.0;
    const as_cli_flag flags[] = {
        {"--json", AS_CLI_STR, &json_path, 0, 0},
        {"--repeats", AS_CLI_U64, &repeats, 1, 1000},
        {"--scale", AS_CLI_DBL, &scale, 0, 100},
    };
    int pa = as_cli_parse_flags("bench alloc", flags, sizeof flags / sizeof flags[0], usage,
                                argc, argv);
    if (pa != AS_CLI_RUN)
        return pa;

    double load[2] = {0, 0};
    if (getloadavg(load, 1) != 1)
        load[0] = -1;
    ctx c = {0};
    int rc = as_arena_create(NULL, &c.arena);
    if (rc != 0)
        return as_cli_fail("bench alloc", "as_arena_create: %s", as_strerror(rc));
    if (plain_jemalloc(&c) != 0) {
        as_arena_destroy(c.arena);
        return as_cli_fail("bench alloc", "jemalloc refused arenas.create/tcache.create");
    }

    /* pairs per repeat: a few ms per cell */
    static const unsigned long base_pairs[NSIZES] = {200000, 100000, 4000, 400};
    double *ns = calloc(NSIZES * NIMPL * repeats, sizeof *ns);
    int status = AS_EXIT_OK;
    if (!ns) {
        status = as_cli_fail("bench alloc", "out of memory");
        goto out;
    }
    for (unsigned si = 0; si < NSIZES; si++) {
        unsigned long n = (unsigned long)((double)base_pairs[si] * scale);
        int bad = run_size(&c, sizes[si], n < 10 ? 10 : n, (unsigned long)repeats,
                           &ns[si * NIMPL * repeats]);
        if (bad >= 0) {
            status = as_cli_fail("bench alloc", "%s: allocation of %zu bytes failed",
                                 impl_name[bad], sizes[si]);
            goto out;
        }
    }
    if (getloadavg(&load[1], 1) != 1)
        load[1] = -1;
    cJSON *root = report(ns, (unsigned long)repeats, load);
    if (json_path && as_cli_write_json("bench alloc", json_path, root) != 0)
        status = AS_EXIT_FAIL;
    cJSON_Delete(root);
out:
    free(ns);
    mallctl("tcache.destroy", NULL, NULL, &c.je_tcache, sizeof c.je_tcache);
    as_arena_destroy(c.arena);
    return status;
}

/*
 * actstore bench alloc: ns per alloc+free pair at 64 B, 4 KiB, 1 MiB and
 * 64 MiB for glibc's allocator, plain jemalloc (mallocx/sdallocx with a
 * private tcache on an arena of its own) and the tracked allocator, side by
 * side in one run. Every repeat measures every (size, impl) cell once, in an
 * order that rotates between repeats, so drift in the machine hits all
 * implementations alike; the reported figure is the median over repeats.
 * Memory is not touched beyond one byte: this measures the allocators, not
 * page faults.
 */
#include <stdint.h>
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

enum { IMPL_GLIBC, IMPL_JEMALLOC, IMPL_ACTSTORE, NIMPL };
static const char *const impl_name[NIMPL] = {"glibc", "jemalloc", "actstore"};

static const size_t sizes[] = {64, 4096, (size_t)1 << 20, (size_t)64 << 20};
#define NSIZES (sizeof sizes / sizeof sizes[0])

typedef struct ctx {
    as_arena *arena;       /* tracked */
    int       je_flags;    /* plain arena + private tcache */
    unsigned  je_arena, je_tcache;
} ctx;

#define KEEP(p) __asm__ volatile("" : : "r"(p) : "memory")

/* Time n pairs of one implementation at one size; returns ns per pair, or a
 * negative value on allocation failure. */
static double run_cell(ctx *c, int impl, size_t size, unsigned long n)
{
    uint64_t t0 = as_clock_ns(CLOCK_MONOTONIC);
    switch (impl) {
    case IMPL_GLIBC:
        for (unsigned long i = 0; i < n; i++) {
            char *p = __libc_malloc(size);
            if (!p)
                return -1;
            p[0] = 1;
            KEEP(p);
            __libc_free(p);
        }
        break;
    case IMPL_JEMALLOC:
        for (unsigned long i = 0; i < n; i++) {
            char *p = mallocx(size, c->je_flags);
            if (!p)
                return -1;
            p[0] = 1;
            KEEP(p);
            sdallocx(p, size, c->je_flags);
        }
        break;
    default:
        for (unsigned long i = 0; i < n; i++) {
            as_block b;
            if (as_alloc(c->arena, size, AS_TAG_WORKSPACE, AS_LAYER_NONE, &b) != 0)
                return -1;
            ((char *)b.ptr)[0] = 1;
            KEEP(b.ptr);
            as_free(c->arena, &b);
        }
        break;
    }
    return (double)(as_clock_ns(CLOCK_MONOTONIC) - t0) / (double)n;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: actstore bench alloc [--json FILE] [--repeats N] [--scale X]\n\n"
            "Median ns per alloc+free pair at 64 B, 4 KiB, 1 MiB and 64 MiB for\n"
            "glibc (__libc_malloc/__libc_free), plain jemalloc (mallocx/sdallocx,\n"
            "private tcache) and the tracked allocator (as_alloc/as_free).\n\n"
            "  --json FILE   write {\"bench\":\"alloc\",\"results\":[...]} (\"-\" = stdout)\n"
            "  --repeats N   repeats per cell, interleaved (default 11)\n"
            "  --scale X     multiply the pairs per repeat (default 1.0)\n");
}

int as_bench_alloc(int argc, char **argv)
{
    const char *json_path = NULL;
    unsigned long long repeats = 11;
    double scale = 1.0;
    for (int i = 1; i < argc; i++) {
        if (as_cli_is_help(argv[i])) {
            usage(stdout);
            return AS_EXIT_OK;
        } else if (!strcmp(argv[i], "--json") && i + 1 < argc) {
            json_path = argv[++i];
        } else if (!strcmp(argv[i], "--repeats") && i + 1 < argc) {
            if (as_cli_parse_u64("bench alloc", "--repeats", argv[++i], &repeats) != 0)
                return AS_EXIT_USAGE;
            if (repeats < 1 || repeats > 1000)
                return as_cli_usage("bench alloc", "--repeats must be 1..1000");
        } else if (!strcmp(argv[i], "--scale") && i + 1 < argc) {
            if (as_cli_parse_double("bench alloc", "--scale", argv[++i], &scale) != 0)
                return AS_EXIT_USAGE;
            if (!(scale > 0 && scale <= 100))
                return as_cli_usage("bench alloc", "--scale must be in (0, 100]");
        } else {
            return as_cli_usage("bench alloc", "unknown or incomplete option '%s'", argv[i]);
        }
    }

    ctx c = {0};
    int rc = as_arena_create(NULL, &c.arena);
    if (rc != 0)
        return as_cli_fail("bench alloc", "as_arena_create: %s", as_strerror(rc));
    size_t sz = sizeof c.je_arena;
    if (mallctl("arenas.create", &c.je_arena, &sz, NULL, 0) != 0 ||
        (sz = sizeof c.je_tcache, mallctl("tcache.create", &c.je_tcache, &sz, NULL, 0)) != 0) {
        as_arena_destroy(c.arena);
        return as_cli_fail("bench alloc", "jemalloc refused arenas.create/tcache.create");
    }
    c.je_flags = MALLOCX_ARENA(c.je_arena) | MALLOCX_TCACHE(c.je_tcache);

    /* pairs per repeat: a few ms per cell */
    static const unsigned long base_pairs[NSIZES] = {200000, 100000, 4000, 400};
    double *ns = calloc(NSIZES * NIMPL * repeats, sizeof *ns);
    if (!ns) {
        as_arena_destroy(c.arena);
        return as_cli_fail("bench alloc", "out of memory");
    }
    int status = AS_EXIT_OK;
    for (unsigned si = 0; si < NSIZES; si++) {
        unsigned long n = (unsigned long)((double)base_pairs[si] * scale);
        if (n < 10)
            n = 10;
        for (int impl = 0; impl < NIMPL; impl++)      /* warm-up */
            run_cell(&c, impl, sizes[si], n / 10 + 1);
        for (unsigned long r = 0; r < repeats; r++)
            for (int k = 0; k < NIMPL; k++) {
                int impl = (int)((k + r) % NIMPL);     /* rotate the order */
                double v = run_cell(&c, impl, sizes[si], n);
                if (v < 0) {
                    status = as_cli_fail("bench alloc", "%s: allocation of %zu bytes failed",
                                         impl_name[impl], sizes[si]);
                    goto out;
                }
                ns[(si * NIMPL + (unsigned)impl) * repeats + r] = v;
            }
    }

    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "bench", "alloc");
    cJSON_AddNumberToObject(root, "repeats", (double)repeats);
    cJSON *results = cJSON_AddArrayToObject(root, "results");
    printf("%-10s %12s %12s %12s %10s\n", "size", "glibc ns", "jemalloc ns", "actstore ns",
           "as/je");
    for (unsigned si = 0; si < NSIZES; si++) {
        double med[NIMPL];
        for (int impl = 0; impl < NIMPL; impl++) {
            double *v = &ns[(si * NIMPL + (unsigned)impl) * repeats];
            med[impl] = as_stats_median(v, repeats);
            cJSON *e = cJSON_CreateObject();
            cJSON_AddStringToObject(e, "impl", impl_name[impl]);
            cJSON_AddNumberToObject(e, "size_bytes", (double)sizes[si]);
            cJSON_AddNumberToObject(e, "ns_per_pair", med[impl]);
            cJSON_AddItemToArray(results, e);
        }
        char h[32];
        printf("%-10s %12.1f %12.1f %12.1f %9.2fx\n",
               as_cli_human_bytes((double)sizes[si], h, sizeof h), med[IMPL_GLIBC],
               med[IMPL_JEMALLOC], med[IMPL_ACTSTORE], med[IMPL_ACTSTORE] / med[IMPL_JEMALLOC]);
    }
    if (json_path && as_cli_write_json("bench alloc", json_path, root) != 0)
        status = AS_EXIT_FAIL;
    cJSON_Delete(root);
out:
    free(ns);
    mallctl("tcache.destroy", NULL, NULL, &c.je_tcache, sizeof c.je_tcache);
    as_arena_destroy(c.arena);
    return status;
}

/* One size's alloc+free pair, tracked (as_alloc / as_free) against plain
 * jemalloc (mallocx / sdallocx on an arena and tcache of its own, set up
 * as actstore bench alloc does), in one tight loop without the bench's
 * other cells: 11 repeats of N pairs each, the two alternating, thread
 * CPU time; prints the medians and the median per-repeat ratio. Build
 * against a build of the tree (or of another commit, to compare) from the
 * repository root:
 *   gcc -O2 -I. -Iinclude -Ibuild/include scripts/experiments/alloc_pairs.c \
 *     build/libactstore_static.a -ljemalloc -lpthread -lm -o /tmp/alloc_pairs
 *   /tmp/alloc_pairs [PAIRS (20000)] [SIZE (64 MiB)] [GLIBC (0)]
 * GLIBC 1: after each repeat, PAIRS pairs of glibc's malloc / free of the
 * size (an mmap and munmap each at 64 MiB), as the bench's glibc cells.
 * callgrind: valgrind --tool=callgrind /tmp/alloc_pairs 100 (and 200: the
 * difference over 1100 pairs of each is instructions per pair). */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <jemalloc/jemalloc.h>

#include "actstore/alloc.h"
#include "util/clock.h"
#include "util/median.h"

/* glibc's own allocator: jemalloc replaces malloc in this process. */
extern void *__libc_malloc(size_t);
extern void __libc_free(void *);

#define KEEP(p) __asm__ volatile("" : : "r"(p) : "memory")
enum { REPEATS = 11 };

int main(int argc, char **argv)
{
    unsigned long n = argc > 1 ? strtoul(argv[1], NULL, 10) : 20000;
    size_t size = argc > 2 ? strtoul(argv[2], NULL, 10) : (size_t)64 << 20;
    int glibc = argc > 3 && atoi(argv[3]);
    as_arena *a;
    unsigned ja, jt;
    size_t sz = sizeof ja;
    if (as_arena_create(NULL, &a) || mallctl("arenas.create", &ja, &sz, NULL, 0))
        return 1;
    char name[64];
    snprintf(name, sizeof name, "arena.%u.muzzy_decay_ms", ja);
    ssize_t never = -1;
    mallctl(name, NULL, NULL, &never, sizeof never);
    sz = sizeof jt;
    if (mallctl("tcache.create", &jt, &sz, NULL, 0))
        return 1;
    int fl = MALLOCX_ARENA(ja) | MALLOCX_TCACHE(jt);
    for (int i = 0; i < 1000; i++) {          /* the thread's block, as the bench's 64 B cells */
        as_block b;
        if (as_alloc(a, 64, AS_TAG_WORKSPACE, AS_LAYER_NONE, &b) || as_free(a, &b))
            return 1;
    }
    double ns[2][REPEATS], ratio[REPEATS];
    for (int r = 0; r < REPEATS; r++)
        for (int k = 0; k < 2; k++) {
            int tracked = k ^ (r & 1);
            uint64_t t0 = as_clock_ns(CLOCK_THREAD_CPUTIME_ID);
            for (unsigned long i = 0; i < n; i++) {
                if (tracked) {
                    as_block b;
                    if (as_alloc(a, size, AS_TAG_WORKSPACE, AS_LAYER_NONE, &b))
                        return 1;
                    char *p = b.ptr;
                    p[0] = 1;
                    KEEP(p);
                    as_free(a, &b);
                } else {
                    char *p = mallocx(size, fl);
                    if (!p)
                        return 1;
                    p[0] = 1;
                    KEEP(p);
                    sdallocx(p, size, fl);
                }
            }
            ns[tracked][r] = (double)(as_clock_ns(CLOCK_THREAD_CPUTIME_ID) - t0) / (double)n;
            for (unsigned long i = 0; glibc && k == 1 && i < n; i++) {
                char *p = __libc_malloc(size);
                if (!p)
                    return 1;
                p[0] = 1;
                KEEP(p);
                __libc_free(p);
            }
        }
    for (int r = 0; r < REPEATS; r++)
        ratio[r] = ns[1][r] / ns[0][r];
    double mt = as_stats_median(ns[1], REPEATS), mj = as_stats_median(ns[0], REPEATS);
    printf("as %.1f je %.1f ratio %.3f\n", mt, mj, as_stats_median(ratio, REPEATS));
    mallctl("tcache.destroy", NULL, NULL, &jt, sizeof jt);
    as_arena_destroy(a);
    return 0;
}

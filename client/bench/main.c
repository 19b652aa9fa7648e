/*
 * actstore-bench <name> [--json FILE] [options]: the benchmarks, a program
 * of their own (`actstore bench ...` forwards here). One benchmark per file
 * in this folder; every one measures its comparisons side by side in one run
 * and reports medians over repeats.
 */
#include <stdio.h>

#include "bench.h"
#include "cli.h"
#include "actstore/common.h"

static const as_cli_sub benches[] = {
#define AS_BENCH(NAME, SUMMARY) {#NAME, as_bench_##NAME, SUMMARY},
#include "benches.def"
#undef AS_BENCH
};

static void usage(FILE *f)
{
    fprintf(f, "usage: actstore bench <name> [--json FILE] [options]\n\nbenchmarks:\n");
    as_cli_list_subs(f, benches, sizeof benches / sizeof benches[0]);
}

int main(int argc, char **argv)
{
    /* argv[0] is the program; argv[1] the benchmark, as `actstore bench` */
    if (argc < 2) {
        usage(stderr);
        return AS_EXIT_USAGE;
    }
    if (as_cli_is_help(argv[1])) {
        usage(stdout);
        return AS_EXIT_OK;
    }
    const as_cli_sub *b = as_cli_find_sub(benches, sizeof benches / sizeof benches[0], argv[1]);
    if (b)
        return b->fn(argc - 1, argv + 1);
    return as_cli_usage("bench", "unknown benchmark '%s'", argv[1]);
}

/*
 * actstore-bench <name> [--json FILE] [options]: the benchmarks, a program
 * of their own (`actstore bench ...` forwards here). One benchmark per file
 * in this folder; every one measures its comparisons side by side in one run
 * and reports medians over repeats.
 */
#include <stdio.h>
#include <string.h>

#include "bench.h"
#include "cli.h"
#include "actstore/common.h"

static const struct {
    const char *name;
    as_cmd_fn   fn;
    const char *summary;
} benches[] = {
    {"alloc",   as_bench_alloc,   "tracked allocator vs jemalloc vs glibc (ns per pair)"},
    {"softmax", as_bench_softmax, "softmax codecs: ratio, gradient cosine, rows/s"},
    {"conv",    as_bench_conv,    "conv input inversion vs conv forward (time, error, bytes)"},
    {"layers",  as_bench_layers,  "conv and matmul GFLOP/s in the bench presets vs OpenBLAS sgemm"},
    {"store",   as_bench_store,   "codecs: save/restore GB/s and stored/raw vs memcpy"},
    {"act",     as_bench_act,     "sign, fewbit, bitpack vs keep: bytes, ns per element, error"},
    {"service", as_bench_service, "live service: step-time overhead (vit small), /metrics latency"},
    {"scale",   as_bench_scale,   "lm memory and step time against context, width, batch; --fit BYTES"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: actstore bench <name> [--json FILE] [options]\n\nbenchmarks:\n");
    for (size_t i = 0; i < sizeof benches / sizeof benches[0]; i++)
        fprintf(f, "  %-8s %s\n", benches[i].name, benches[i].summary);
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
    for (size_t i = 0; i < sizeof benches / sizeof benches[0]; i++)
        if (!strcmp(argv[1], benches[i].name))
            return benches[i].fn(argc - 1, argv + 1);
    return as_cli_usage("bench", "unknown benchmark '%s'", argv[1]);
}

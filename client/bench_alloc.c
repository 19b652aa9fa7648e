/* placeholder: replaced by the allocator work */
#include "bench.h"
#include "cli.h"
int as_bench_alloc(int argc, char **argv) { (void)argc; (void)argv; return as_cli_fail("bench", "alloc: not available yet"); }

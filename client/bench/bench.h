/* The benchmarks of actstore-bench (one file each in client/bench/,
 * listed in benches.def). */
#ifndef AS_CLIENT_BENCH_H
#define AS_CLIENT_BENCH_H

#define AS_BENCH(NAME, SUMMARY) int as_bench_##NAME(int argc, char **argv);
#include "benches.def"
#undef AS_BENCH

#endif

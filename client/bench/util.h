/*
 * Clocks of the benchmarks (client/bench/). Internal to the bench program.
 * Medians and sorting: stats.h.
 */
#ifndef AS_CLIENT_BENCH_UTIL_H
#define AS_CLIENT_BENCH_UTIL_H

#include <stdint.h>
#include <time.h>

/* The time on clock id in nanoseconds / in seconds: CLOCK_MONOTONIC (wall),
 * CLOCK_THREAD_CPUTIME_ID (the calling thread's CPU time) or
 * CLOCK_PROCESS_CPUTIME_ID (the process's). Thread-safe. */
uint64_t as_bench_clock_ns(clockid_t id);
double as_bench_clock_s(clockid_t id);

#endif

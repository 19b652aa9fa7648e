/*
 * The clocks: wall time (CLOCK_MONOTONIC) and CPU time of the calling thread
 * or of the process, in seconds or nanoseconds. Thread-safe; internal to
 * the tree (library, layers, command, benchmarks, tests).
 */
#ifndef AS_UTIL_CLOCK_H
#define AS_UTIL_CLOCK_H

#include <stdint.h>
#include <time.h>

/* The time on clock id (CLOCK_MONOTONIC, CLOCK_THREAD_CPUTIME_ID, ...). */
static inline uint64_t as_clock_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline double as_clock_s(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static inline double as_clock_wall_s(void) { return as_clock_s(CLOCK_MONOTONIC); }
static inline uint64_t as_clock_wall_ns(void) { return as_clock_ns(CLOCK_MONOTONIC); }
static inline double as_clock_thread_cpu_s(void) { return as_clock_s(CLOCK_THREAD_CPUTIME_ID); }
static inline double as_clock_process_cpu_s(void) { return as_clock_s(CLOCK_PROCESS_CPUTIME_ID); }

#endif

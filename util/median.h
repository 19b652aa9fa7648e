/*
 * Sorting and the median of doubles (benchmarks, step times, reports).
 * Internal to the tree.
 */
#ifndef AS_UTIL_MEDIAN_H
#define AS_UTIL_MEDIAN_H

#include <math.h>
#include <stddef.h>
#include <stdlib.h>

static inline int as__cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Sort x[0..n) ascending, in place. */
static inline void as_stats_sort(double *x, size_t n)
{
    if (n > 1)
        qsort(x, n, sizeof *x, as__cmp_double);
}

/* Median of x[0..n) (the mean of the middle two for even n; NAN for n = 0);
 * x is reordered. */
static inline double as_stats_median(double *x, size_t n)
{
    if (n == 0)
        return NAN;
    as_stats_sort(x, n);
    return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

#endif

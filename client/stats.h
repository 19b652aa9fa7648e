/*
 * Small statistics for A/B reports: mean, sample standard deviation, and the
 * paired-difference 95% confidence interval (Student t). Internal to client/.
 */
#ifndef AS_CLIENT_STATS_H
#define AS_CLIENT_STATS_H

#include <stdbool.h>
#include <stddef.h>

#include "util/median.h"

typedef struct as_summary {
    size_t n;
    double mean, sd;        /* sd: sample (n-1); 0 when n < 2 */
} as_summary;

typedef struct as_paired {
    size_t n;
    double mean_diff;       /* mean of (b[i] - a[i]) */
    double sd_diff;
    double ci_half;         /* half-width of the 95% CI; NAN when n < 2 */
    bool   significant;     /* the CI excludes 0 (false when n < 2) */
} as_paired;

as_summary as_stats_summary(const double *x, size_t n);
as_paired as_stats_paired(const double *a, const double *b, size_t n);
/* Two-sided 97.5% quantile of Student's t with df degrees of freedom. */
double as_stats_t975(size_t df);
/* as_stats_sort, as_stats_median: util/median.h. */

#endif

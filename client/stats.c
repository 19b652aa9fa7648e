/* Statistics for A/B reports (see stats.h). */
#include "stats.h"

#include <math.h>
#include <stdlib.h>

as_summary as_stats_summary(const double *x, size_t n)
{
    as_summary s = {n, 0.0, 0.0};
    if (n == 0)
        return s;
    double sum = 0.0;
    for (size_t i = 0; i < n; i++)
        sum += x[i];
    s.mean = sum / (double)n;
    if (n > 1) {
        double ss = 0.0;
        for (size_t i = 0; i < n; i++)
            ss += (x[i] - s.mean) * (x[i] - s.mean);
        s.sd = sqrt(ss / (double)(n - 1));
    }
    return s;
}

double as_stats_t975(size_t df)
{
    /* Student t quantiles, two-sided 95% (one-sided 0.975), df = 1..30. */
    static const double t[] = {
        0, 12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262,
        2.228, 2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093,
        2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045,
        2.042};
    if (df == 0)
        return NAN;
    if (df <= 30)
        return t[df];
    /* Above 30: the Cornish-Fisher expansion of t around the normal
     * quantile, within 1e-4 of the exact value from df = 30 on. */
    const double z = 1.959964, n = (double)df;
    return z + (z * z * z + z) / (4 * n) +
           (5 * pow(z, 5) + 16 * z * z * z + 3 * z) / (96 * n * n);
}

as_paired as_stats_paired(const double *a, const double *b, size_t n)
{
    as_paired p = {n, 0.0, 0.0, NAN, false};
    if (n == 0)
        return p;
    double *d = malloc(n * sizeof *d);
    if (!d)
        return p;
    for (size_t i = 0; i < n; i++)
        d[i] = b[i] - a[i];
    as_summary s = as_stats_summary(d, n);
    free(d);
    p.mean_diff = s.mean;
    p.sd_diff = s.sd;
    if (n >= 2) {
        p.ci_half = as_stats_t975(n - 1) * s.sd / sqrt((double)n);
        p.significant = fabs(p.mean_diff) > p.ci_half;
    }
    return p;
}

/*
 * A small SVG plot writer for A/B reports: line charts (loss curves, memory
 * over time) and grouped bar charts (memory per kind), with axes, ticks,
 * units and a legend. Internal to client/.
 */
#ifndef AS_CLIENT_SVG_H
#define AS_CLIENT_SVG_H

#include <stdbool.h>
#include <stddef.h>

enum as_svg_unit { AS_SVG_PLAIN = 0, AS_SVG_BYTES, AS_SVG_PERCENT };

typedef struct as_svg_series {
    const char   *name;
    const double *x, *y;   /* n points; non-finite y values are skipped */
    size_t        n;
    bool          dashed;
    int           color;   /* palette index + 1; 0 = by position */
} as_svg_series;

typedef struct as_svg_axes {
    const char *title;
    const char *xlabel, *ylabel;
    int         yunit;     /* as_svg_unit: BYTES humanizes (KiB, MiB, ...) */
    bool        y_from_zero;
    bool        logx, logy;   /* log scale (ticks at powers of 2); values
                                 <= 0 are skipped */
} as_svg_axes;

/* Write a line chart to path. Returns 0, or -1 with errno set (the caller
 * names the path in its message). */
int as_svg_line_chart(const char *path, const as_svg_axes *ax,
                      const as_svg_series *series, size_t nseries);

/* Grouped bars: values[g * ncat + c] is group g (legend) in category c. */
int as_svg_bar_chart(const char *path, const as_svg_axes *ax,
                     const char *const *categories, size_t ncat,
                     const char *const *groups, size_t ngroups,
                     const double *values);

/* Format a tick value in the axis unit into buf. */
void as_svg_format(double v, int unit, double scale, const char *suffix,
                   char *buf, size_t n);

#endif

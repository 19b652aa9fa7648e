/*
 * SVG plots for reports. The layout is fixed (720x400 px, margins for the
 * axes and a legend above the plot area); scales pick "nice" ticks (1, 2,
 * 2.5, 5 x 10^k) in the display unit, so byte axes read 0, 64 MiB, 128 MiB
 * rather than raw numbers.
 */
#include "svg.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#define W 720.0
#define H 400.0
#define ML 84.0   /* left margin: y tick labels */
#define MR 20.0
#define MT 66.0   /* title + two legend rows */
#define MB 52.0   /* x ticks + label */

static const char *palette[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e",
                                "#9467bd", "#8c564b", "#e377c2", "#17becf"};
#define NPAL (sizeof palette / sizeof palette[0])

/* Escape text for SVG. */
static void put_text(FILE *f, const char *s)
{
    for (; s && *s; s++) {
        switch (*s) {
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '&': fputs("&amp;", f); break;
        case '"': fputs("&quot;", f); break;
        default: fputc(*s, f);
        }
    }
}

static double nice_step(double range, int nticks)
{
    if (!(range > 0))
        return 1.0;
    double raw = range / nticks;
    double mag = pow(10.0, floor(log10(raw)));
    double r = raw / mag;
    double m = r <= 1.0 ? 1.0 : r <= 2.0 ? 2.0 : r <= 2.5 ? 2.5 : r <= 5.0 ? 5.0 : 10.0;
    return m * mag;
}

/* Choose the display unit of a byte axis from its largest value. */
static void byte_unit(double vmax, double *scale, const char **suffix)
{
    static const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int i = 0;
    double s = 1.0;
    while (vmax / s >= 1024.0 && i < 4) {
        s *= 1024.0;
        i++;
    }
    *scale = s;
    *suffix = u[i];
}

void as_svg_format(double v, int unit, double scale, const char *suffix,
                   char *buf, size_t n)
{
    double x = v / scale;
    if (unit == AS_SVG_PERCENT) {
        snprintf(buf, n, "%g%%", x);
        return;
    }
    char num[32];
    if (fabs(x) >= 1e5 || (fabs(x) < 1e-3 && x != 0))
        snprintf(num, sizeof num, "%.2g", x);
    else
        snprintf(num, sizeof num, "%g", round(x * 1000.0) / 1000.0);
    if (unit == AS_SVG_BYTES)
        snprintf(buf, n, "%s %s", num, suffix);
    else
        snprintf(buf, n, "%s", num);
}

typedef struct frame {
    double x0, x1, y0, y1;   /* data range */
    double scale;            /* y display unit */
    const char *suffix;
    double ystep;
} frame;

static double px(const frame *fr, double x)
{
    return ML + (x - fr->x0) / (fr->x1 - fr->x0) * (W - ML - MR);
}

static double py(const frame *fr, double y)
{
    return H - MB - (y - fr->y0) / (fr->y1 - fr->y0) * (H - MT - MB);
}

static void header(FILE *f, const as_svg_axes *ax)
{
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
               "viewBox=\"0 0 %.0f %.0f\" font-family=\"sans-serif\" font-size=\"12\">\n",
            W, H, W, H);
    fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
    fprintf(f, "<text x=\"%.0f\" y=\"20\" font-size=\"15\" font-weight=\"bold\">", ML);
    put_text(f, ax->title);
    fputs("</text>\n", f);
}

/* Y grid, ticks and labels, the axis box and the axis labels. */
static void axes(FILE *f, const as_svg_axes *ax, const frame *fr, bool xticks)
{
    char buf[48];
    /* Ticks by index, not by accumulation: a step below the ulp of the
     * values would never advance (y_range keeps the range wide enough). */
    for (int i = 0; i <= 100; i++) {
        double v = fr->y0 + fr->ystep * i;
        if (v > fr->y1 + fr->ystep * 1e-6)
            break;
        double y = py(fr, v);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e5e5e5\"/>\n",
                ML, y, W - MR, y);
        double scale = fr->scale;
        const char *suffix = fr->suffix;
        if (ax->logy && ax->yunit == AS_SVG_BYTES)   /* each tick in its own unit */
            byte_unit(exp2(v), &scale, &suffix);
        as_svg_format(ax->logy ? exp2(v) : v, ax->yunit, scale, suffix, buf, sizeof buf);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n", ML - 6, y + 4, buf);
    }
    if (xticks) {
        double step = ax->logx ? fmax(1.0, ceil((fr->x1 - fr->x0) / 8)) /* doublings */
                               : nice_step(fr->x1 - fr->x0, 8);
        for (int i = 0; i <= 100; i++) {
            double v = ceil(fr->x0 / step) * step + step * i;
            if (v > fr->x1 + step * 1e-6)
                break;
            double x = px(fr, v);
            fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#999\"/>\n",
                    x, H - MB, x, H - MB + 4);
            fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%g</text>\n", x,
                    H - MB + 17, ax->logx ? exp2(v) : v);
        }
    }
    fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"#666\"/>\n",
            ML, MT, W - ML - MR, H - MT - MB);
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">", ML + (W - ML - MR) / 2, H - 12);
    put_text(f, ax->xlabel);
    fputs("</text>\n", f);
    fprintf(f, "<text transform=\"translate(16,%.1f) rotate(-90)\" text-anchor=\"middle\">",
            MT + (H - MT - MB) / 2);
    put_text(f, ax->ylabel);
    fputs("</text>\n", f);
}

/* Legend above the plot: items left to right, wrapping to a second row
 * (y 38, then 53) when the first is full. colors[i]: palette index. */
static void legend(FILE *f, const char *const *names, size_t n, const bool *dashed,
                   const int *colors)
{
    double x = ML, y = 38;
    for (size_t i = 0; i < n; i++) {
        double w = 40 + 6.6 * (double)strlen(names[i] ? names[i] : "");
        if (x > ML && x + w - 12 > W - MR && y < 52) {
            x = ML;
            y += 15;
        }
        const char *c = palette[(size_t)(colors ? colors[i] : (int)i) % NPAL];
        if (dashed)
            fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
                       "stroke-width=\"2.5\"%s/>\n",
                    x, y - 4, x + 22, y - 4, c, dashed[i] ? " stroke-dasharray=\"6,3\"" : "");
        else
            fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"14\" height=\"12\" fill=\"%s\"/>\n",
                    x, y - 10, c);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\">", x + 28, y);
        put_text(f, names[i]);
        fputs("</text>\n", f);
        x += w;
    }
}

/* Y range of a log axis: lo, hi in log2 units; ticks every whole number
 * of doublings, about six of them. */
static void y_range_log(frame *fr, const as_svg_axes *ax, double lo, double hi)
{
    fr->scale = 1.0;
    fr->suffix = "";
    if (ax->yunit == AS_SVG_BYTES)
        byte_unit(exp2(hi), &fr->scale, &fr->suffix);
    fr->ystep = fmax(1.0, ceil((hi - lo) / 6));
    fr->y0 = floor(lo / fr->ystep) * fr->ystep;
    fr->y1 = ceil(hi / fr->ystep) * fr->ystep;
    if (fr->y1 <= fr->y0)
        fr->y1 = fr->y0 + fr->ystep;
}

/* Y range: nice ticks covering [lo, hi]. */
static void y_range(frame *fr, const as_svg_axes *ax, double lo, double hi)
{
    if (ax->logy) {
        y_range_log(fr, ax, lo, hi);
        return;
    }
    if (ax->y_from_zero && lo > 0)
        lo = 0;
    /* A range below ~1e-9 of the values is flat (cosines of 1 and
     * 1 - 1e-16, say): widen it so the ticks are distinct numbers. */
    if (!(hi - lo > 1e-9 * fmax(fabs(lo), fabs(hi)))) {
        hi = lo + (lo != 0 ? fabs(lo) * 0.1 : 1.0);
    }
    fr->scale = 1.0;
    fr->suffix = "";
    if (ax->yunit == AS_SVG_BYTES)
        byte_unit(fmax(fabs(lo), fabs(hi)), &fr->scale, &fr->suffix);
    double step = nice_step((hi - lo) / fr->scale, 5) * fr->scale;
    fr->ystep = step;
    fr->y0 = floor(lo / step) * step;
    fr->y1 = ceil(hi / step) * step;
    if (fr->y1 <= fr->y0)
        fr->y1 = fr->y0 + step;
}

/* A value in axis units: log2 on a log axis (NAN for v <= 0). */
static double to_axis(bool log_scale, double v)
{
    return !log_scale ? v : v > 0 ? log2(v) : NAN;
}

int as_svg_line_chart(const char *path, const as_svg_axes *ax,
                      const as_svg_series *series, size_t nseries)
{
    frame fr = {INFINITY, -INFINITY, INFINITY, -INFINITY, 1.0, "", 1.0};
    double lo = INFINITY, hi = -INFINITY;
    for (size_t s = 0; s < nseries; s++)
        for (size_t i = 0; i < series[s].n; i++) {
            double x = to_axis(ax->logx, series[s].x[i]), y = to_axis(ax->logy, series[s].y[i]);
            if (!isfinite(x) || !isfinite(y))
                continue;
            fr.x0 = fmin(fr.x0, x);
            fr.x1 = fmax(fr.x1, x);
            lo = fmin(lo, y);
            hi = fmax(hi, y);
        }
    if (!isfinite(lo)) { /* no data: draw empty axes */
        lo = 0;
        hi = 1;
        fr.x0 = 0;
        fr.x1 = 1;
    }
    if (!(fr.x1 > fr.x0))
        fr.x1 = fr.x0 + 1;
    y_range(&fr, ax, lo, hi);

    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    header(f, ax);
    axes(f, ax, &fr, true);
    const char *names[16];
    bool dashed[16];
    int colors[16];
    size_t nl = nseries < 16 ? nseries : 16;
    for (size_t s = 0; s < nseries; s++) {
        int c = series[s].color > 0 ? series[s].color - 1 : (int)s;
        if (s < 16) {
            names[s] = series[s].name;
            dashed[s] = series[s].dashed;
            colors[s] = c;
        }
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.8\"%s points=\"",
                palette[(size_t)c % NPAL], series[s].dashed ? " stroke-dasharray=\"6,3\"" : "");
        for (size_t i = 0; i < series[s].n; i++) {
            double x = to_axis(ax->logx, series[s].x[i]), y = to_axis(ax->logy, series[s].y[i]);
            if (isfinite(x) && isfinite(y))
                fprintf(f, "%.1f,%.1f ", px(&fr, x), py(&fr, y));
        }
        fputs("\"/>\n", f);
    }
    legend(f, names, nl, dashed, colors);
    fputs("</svg>\n", f);
    return fclose(f) == 0 ? 0 : -1;
}

int as_svg_bar_chart(const char *path, const as_svg_axes *ax,
                     const char *const *categories, size_t ncat,
                     const char *const *groups, size_t ngroups,
                     const double *values)
{
    frame fr = {0, 1, 0, 1, 1.0, "", 1.0};
    double hi = 0;
    for (size_t i = 0; i < ncat * ngroups; i++)
        if (isfinite(values[i]))
            hi = fmax(hi, values[i]);
    as_svg_axes a = *ax;
    a.y_from_zero = true;
    a.logx = a.logy = false;
    y_range(&fr, &a, 0, hi > 0 ? hi : 1);

    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    header(f, ax);
    axes(f, &a, &fr, false);
    double slot = (W - ML - MR) / (double)(ncat ? ncat : 1);
    double bw = slot * 0.8 / (double)(ngroups ? ngroups : 1);
    char buf[48];
    for (size_t c = 0; c < ncat; c++) {
        double x0 = ML + slot * (double)c + slot * 0.1;
        for (size_t g = 0; g < ngroups; g++) {
            double v = values[g * ncat + c];
            if (!isfinite(v))
                continue;
            double y = py(&fr, v);
            fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\">"
                       "<title>",
                    x0 + bw * (double)g, y, bw - 2, H - MB - y, palette[g % NPAL]);
            as_svg_format(v, a.yunit, fr.scale, fr.suffix, buf, sizeof buf);
            put_text(f, groups[g]);
            fprintf(f, ": %s</title></rect>\n", buf);
        }
        /* Long category names: split at the first '_' onto two lines when
         * one line would need a font under 10 px, then shrink to the slot
         * (about 0.6 em a character). */
        const char *name = categories[c] ? categories[c] : "";
        const char *us = strchr(name, '_');
        double len = (double)strlen(name);
        double fs = len > 0 ? fmin(12.0, (slot - 4) / (0.6 * len)) : 12.0;
        double cx = ML + slot * ((double)c + 0.5);
        if (fs < 10 && us) {
            double l1 = (double)(us - name), l2 = (double)strlen(us + 1);
            fs = fmin(12.0, (slot - 4) / (0.6 * fmax(l1, l2)));
            fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"%.1f\">"
                       "<tspan x=\"%.1f\">", cx, H - MB + 14, fs < 7 ? 7 : fs, cx);
            for (const char *q = name; q < us; q++)
                put_text(f, (char[2]){*q, 0});
            fprintf(f, "</tspan><tspan x=\"%.1f\" dy=\"1.1em\">", cx);
            put_text(f, us + 1);
            fputs("</tspan></text>\n", f);
            continue;
        }
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"%.1f\">",
                cx, H - MB + 17, fs < 7 ? 7 : fs);
        put_text(f, name);
        fputs("</text>\n", f);
    }
    legend(f, groups, ngroups < 16 ? ngroups : 16, NULL, NULL);
    fputs("</svg>\n", f);
    return fclose(f) == 0 ? 0 : -1;
}

/*
 * actstore bench scale: memory and step time of the lm against context
 * length, width and batch, for keep and the recommended policies, and
 * (--fit BYTES) the longest context and largest batch whose training
 * steps fit an arena budget. Every configuration runs in a process of its
 * own: warm-up steps, then measured steps; the policies of a point take
 * turns (keep, p1, p2, ..., keep, p1, ...) for --repeats rounds, and the
 * step-time ratio is the median over rounds of each round's ratio to keep
 * (thread CPU time, one BLAS thread). Memory figures are deterministic.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "cli.h"
#include "layers/train.h"
#include "scale.h"
#include "svg.h"
#include "util/median.h"

#define CMD "bench scale"
#define MAXPTS 24
#define MAXROUNDS 16

/* Softmax at 16:3 alone; the lm's whole-model spec V5 (docs/benchmarks.md,
 * "Whole-model specs"); auto at a tenth of keep's saved bytes. */
static const sc_policy default_pols[] = {
    {"keep", "default=keep", 0},
    {"sotk", "softmax=sotk:16:3; default=keep", 0},
    {"v5", "softmax=sotk:16:3; attention_input=aq:4:g=128; linear_input=aq:3:g=256; "
           "layer:*.fc2=aq:2:g=256; activation_input=fewbit:3; index=bitpack; "
           "layer:loss=fp16|bitpack; default=keep", 0},
    {"auto/10", "default=auto", 10},
};

typedef struct sc_point {
    const char *axis;   /* "context", "width", "batch" */
    int T, C, B;
} sc_point;

typedef struct sc_grid {
    const char *name, *preset;
    int T, C, B;        /* the base point (and the fit search's) */
    int nctx, ctx[8];
    int nwidth, width[4];
    int nbatch, batch[4];
    int max_B;          /* the fit search's batch limit */
} sc_grid;

/* small: seconds, for the tests; default: the documented sweep. */
static const sc_grid grids[] = {
    {"small", "small", 32, 32, 2, 4, {16, 32, 64, 128}, 2, {32, 64}, 2, {2, 4}, 4096},
    {"default", "long", 256, 64, 8, 5, {64, 128, 256, 512, 1024}, 3, {64, 128, 256},
     3, {8, 32, 128}, 1024},
};

typedef struct sc_opts {
    const sc_grid *grid;
    const char *json;
    sc_policy pols[SC_MAXPOL];
    char labels[SC_MAXPOL][32];   /* of --policy LABEL=SPEC */
    int npol;
    unsigned long long repeats, warmup, steps, fit, max_T, max_B;
    unsigned fit_axes;          /* 1 context, 2 batch */
    bool quiet;
} sc_opts;

typedef struct sc_cell {
    sc_res res;                 /* memory of the last round, cpu of all */
    double cpu[MAXROUNDS * SC_MAXSTEPS];
    double round_ms[MAXROUNDS]; /* median step of each round */
    int ncpu;
    double cpu_ms, ratio;       /* median step, median ratio to keep */
} sc_cell;

static int usage_help(void)
{
    printf("usage: actstore bench scale [--json FILE] [--grid small|default]\n"
           "                            [--policy LABEL=SPEC]... [--repeats N]\n"
           "                            [--warmup N] [--steps N] [--fit BYTES]\n"
           "                            [--fit-axis context|batch|both] [--max-context T]\n"
           "                            [--max-batch B] [--quiet]\n\n"
           "The lm (fortunes) against context length, width (heads of 16) and batch\n"
           "under keep, softmax=sotk:16:3, the lm spec v5 and auto at keep/10: saved\n"
           "peak per kind, arena peak, peak RSS and step thread-CPU time, each\n"
           "configuration in its own process; growth exponents (bytes ~ T^a) and\n"
           "log-log SVG plots next to the JSON (FILE minus .json, -AXIS-memory.svg,\n"
           "-AXIS-time.svg).\n\n"
           "  --json FILE        write the results (\"-\" = stdout, no plots)\n"
           "  --grid G           small (seconds) or default (lm long: C 64, 3 blocks,\n"
           "                     contexts 64..1024 at batch 8; widths 64..256 and\n"
           "                     batches 8..128 at context 256)\n"
           "  --policy L=SPEC    compare these policies instead (repeatable; keep is\n"
           "                     always first; SPEC with auto takes --ratio's budget)\n"
           "  --ratio X          auto's budget: keep's saved bytes / X (default 10)\n"
           "  --repeats N        alternating rounds per point (default 2)\n"
           "  --warmup N         steps before measuring (default 2: auto probes in them)\n"
           "  --steps N          measured steps per round, 1..8 (default 1)\n"
           "  --fit BYTES        instead of the sweep: the longest context (at the\n"
           "                     grid's batch) and the largest batch (at its context)\n"
           "                     whose training steps fit BYTES of arena, per policy\n"
           "  --fit-axis A       search only the context, only the batch, or both\n"
           "  --max-context T    the fit search's longest context (default 4096)\n"
           "  --max-batch B      the fit search's largest batch (default: the grid's,\n"
           "                     small 4096, default 1024)\n"
           "  --quiet            no progress on stderr\n");
    return AS_EXIT_OK;
}

static int add_policy(sc_opts *o, const char *arg, double ratio)
{
    const char *eq = strchr(arg, '=');
    if (!eq || eq == arg || !eq[1])
        return as_cli_usage(CMD, "--policy expects LABEL=SPEC, got '%s'", arg);
    if ((size_t)(eq - arg) >= sizeof o->labels[0])
        return as_cli_usage(CMD, "--policy: label '%.*s' longer than 31 characters",
                            (int)(eq - arg), arg);
    char *label = o->labels[o->npol];
    snprintf(label, sizeof o->labels[0], "%.*s", (int)(eq - arg), arg);
    o->pols[o->npol++] = (sc_policy){label, eq + 1, strstr(eq + 1, "auto") ? ratio : 0};
    return 0;
}

static int parse_num(const char *opt, const char *v, unsigned long long lo,
                     unsigned long long hi, unsigned long long *out)
{
    return as_cli_parse_u64_in(CMD, opt, v, lo, hi, out) ? AS_EXIT_USAGE : 0;
}

static int parse(int argc, char **argv, sc_opts *o)
{
    double ratio = 10;
    const char *user_pol[SC_MAXPOL];
    int nuser = 0;
    *o = (sc_opts){.grid = &grids[1], .repeats = 2, .warmup = 2, .steps = 1, .max_T = 4096,
                   .fit_axes = 3};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int rc = 0;
        if (as_cli_is_help(a))
            return usage_help() - 1;   /* -1: done, exit 0 */
        if (!strcmp(a, "--quiet")) {
            o->quiet = true;
            continue;
        }
        if (!v)
            return as_cli_usage(CMD, "unknown or incomplete option '%s'", a);
        i++;
        if (!strcmp(a, "--json"))
            o->json = v;
        else if (!strcmp(a, "--grid")) {
            o->grid = !strcmp(v, "small") ? &grids[0] : !strcmp(v, "default") ? &grids[1] : NULL;
            if (!o->grid)
                return as_cli_usage(CMD, "--grid: small or default, got '%s'", v);
        } else if (!strcmp(a, "--policy")) {
            if (nuser >= SC_MAXPOL - 1)
                return as_cli_usage(CMD, "at most %d policies besides keep", SC_MAXPOL - 1);
            user_pol[nuser++] = v;
        } else if (!strcmp(a, "--ratio")) {
            if (as_cli_parse_double_in(CMD, a, v, 0, HUGE_VAL, &ratio))
                return AS_EXIT_USAGE;
        } else if (!strcmp(a, "--repeats"))
            rc = parse_num(a, v, 1, MAXROUNDS, &o->repeats);
        else if (!strcmp(a, "--warmup"))
            rc = parse_num(a, v, 0, 100, &o->warmup);
        else if (!strcmp(a, "--steps"))
            rc = parse_num(a, v, 1, SC_MAXSTEPS, &o->steps);
        else if (!strcmp(a, "--max-context"))
            rc = parse_num(a, v, 16, 16384, &o->max_T);
        else if (!strcmp(a, "--fit-axis")) {
            o->fit_axes = !strcmp(v, "context") ? 1 : !strcmp(v, "batch") ? 2
                        : !strcmp(v, "both") ? 3 : 0;
            if (!o->fit_axes)
                return as_cli_usage(CMD, "--fit-axis: context, batch or both, got '%s'", v);
        } else if (!strcmp(a, "--max-batch"))
            rc = parse_num(a, v, 1, 65536, &o->max_B);
        else if (!strcmp(a, "--fit")) {
            if (as_cli_parse_bytes(CMD, a, v, &o->fit))
                return AS_EXIT_USAGE;
        } else
            return as_cli_usage(CMD, "unknown option '%s'", a);
        if (rc)
            return rc;
    }
    if (!nuser) {
        o->npol = (int)(sizeof default_pols / sizeof default_pols[0]);
        memcpy(o->pols, default_pols, sizeof default_pols);
        o->pols[3].ratio = ratio;
        return 0;
    }
    o->pols[o->npol++] = default_pols[0];
    for (int k = 0; k < nuser; k++)
        if (add_policy(o, user_pol[k], ratio))
            return AS_EXIT_USAGE;
    return 0;
}

/* The points of the grid: the context axis, then width and batch. */
static int grid_points(const sc_grid *g, sc_point *pts)
{
    int n = 0;
    for (int i = 0; i < g->nctx; i++)
        pts[n++] = (sc_point){"context", g->ctx[i], g->C, g->B};
    for (int i = 0; i < g->nwidth; i++)
        pts[n++] = (sc_point){"width", g->T, g->width[i], g->B};
    for (int i = 0; i < g->nbatch; i++)
        pts[n++] = (sc_point){"batch", g->T, g->C, g->batch[i]};
    return n;
}

static double axis_value(const sc_point *p)
{
    return !strcmp(p->axis, "context") ? p->T : !strcmp(p->axis, "width") ? p->C : p->B;
}

static sc_cfg point_cfg(const sc_opts *o, const sc_point *p, int pol)
{
    return (sc_cfg){.preset = o->grid->preset, .T = p->T, .C = p->C, .B = p->B,
                    .pol = o->pols[pol], .warmup = (int)o->warmup, .steps = (int)o->steps};
}

/* Measure one point: rounds of every policy in turn. */
static int measure_point(const sc_opts *o, const sc_point *p, sc_cell *cells)
{
    for (int r = 0; r < (int)o->repeats; r++)
        for (int k = 0; k < o->npol; k++) {
            sc_cfg c = point_cfg(o, p, k);
            sc_res res;
            if (sc_measure_isolated(&c, &res)) {
                fprintf(stderr, "actstore " CMD ": error: %s T %d C %d B %d under %s: %s\n",
                        p->axis, p->T, p->C, p->B, c.pol.label, res.err);
                return -1;
            }
            sc_cell *ce = &cells[k];
            double tmp[SC_MAXSTEPS];
            for (int s = 0; s < res.nsteps; s++)
                ce->cpu[ce->ncpu++] = tmp[s] = res.cpu_ms[s];
            ce->round_ms[r] = as_stats_median(tmp, (size_t)res.nsteps);
            ce->res = res;
            if (!o->quiet)
                fprintf(stderr, "  %-7s T %4d C %3d B %3d  %-8s round %d: %.1f ms\n",
                        p->axis, p->T, p->C, p->B, c.pol.label, r + 1, ce->round_ms[r]);
        }
    for (int k = 0; k < o->npol; k++) {
        double ratios[MAXROUNDS];
        for (int r = 0; r < (int)o->repeats; r++)
            ratios[r] = cells[k].round_ms[r] / cells[0].round_ms[r];
        cells[k].ratio = as_stats_median(ratios, o->repeats);
        cells[k].cpu_ms = as_stats_median(cells[k].cpu, (size_t)cells[k].ncpu);
    }
    return 0;
}

static void print_header(void)
{
    printf("%-7s %5s %4s %4s  %-8s %11s %11s %11s %10s %9s %6s\n", "axis", "T", "C", "B",
           "policy", "saved", "softmax", "arena peak", "RSS", "step ms", "x keep");
}

static void print_cell(const sc_point *p, const sc_policy *pol, const sc_cell *c)
{
    char s[4][24];
    const sc_res *r = &c->res;
    printf("%-7s %5d %4d %4d  %-8s %11s %11s %11s %10s %9.1f %6.2f\n", p->axis, p->T, p->C,
           p->B, pol->label, as_cli_human_bytes((double)r->saved_stored, s[0], 24),
           as_cli_human_bytes((double)r->kind_stored[AS_KIND_SOFTMAX_OUTPUT], s[1], 24),
           as_cli_human_bytes((double)r->arena_peak, s[2], 24),
           as_cli_human_bytes((double)r->rss_peak, s[3], 24), c->cpu_ms, c->ratio);
}

static cJSON *cell_json(const sc_policy *pol, const sc_cell *c)
{
    const sc_res *r = &c->res;
    cJSON *j = cJSON_CreateObject(), *k = cJSON_CreateObject(), *t = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "policy", pol->label);
    cJSON_AddNumberToObject(j, "saved_stored_peak_bytes", (double)r->saved_stored);
    cJSON_AddNumberToObject(j, "saved_raw_peak_bytes", (double)r->saved_raw);
    for (int i = 0; i < AS_KIND_COUNT; i++) {
        if (!r->kind_raw[i])
            continue;
        cJSON *e = cJSON_AddObjectToObject(k, as_kind_name(i));
        cJSON_AddNumberToObject(e, "stored_peak_bytes", (double)r->kind_stored[i]);
        cJSON_AddNumberToObject(e, "raw_peak_bytes", (double)r->kind_raw[i]);
    }
    cJSON_AddItemToObject(j, "by_kind", k);
    cJSON_AddNumberToObject(j, "arena_peak_bytes", (double)r->arena_peak);
    static const char *tags[] = {"weights", "gradients", "optimizer", "activations",
                                 "saved", "workspace"};
    for (int i = 0; i < 6; i++)
        cJSON_AddNumberToObject(t, tags[i], (double)r->tag_peak[i]);
    cJSON_AddItemToObject(j, "tag_peak_bytes", t);
    cJSON_AddNumberToObject(j, "rss_peak_bytes", (double)r->rss_peak);
    cJSON_AddNumberToObject(j, "saved_budget_bytes", (double)r->saved_budget);
    cJSON_AddNumberToObject(j, "step_cpu_ms", c->cpu_ms);
    cJSON_AddNumberToObject(j, "step_cpu_ratio", c->ratio);
    cJSON_AddItemToObject(j, "step_cpu_ms_samples", cJSON_CreateDoubleArray(c->cpu, c->ncpu));
    cJSON_AddNumberToObject(j, "loss", r->loss);
    return j;
}

/* The figures plotted and fitted, by index. */
static double figure(const sc_cell *c, int f)
{
    switch (f) {
    case 0: return (double)c->res.saved_stored;
    case 1: return (double)c->res.kind_stored[AS_KIND_SOFTMAX_OUTPUT];
    case 2: return (double)c->res.arena_peak;
    default: return c->cpu_ms;
    }
}
static const char *const fig_names[] = {"saved", "softmax", "arena", "step_cpu"};
#define NFIG 4

/* Exponents per axis and policy, over all points and over the last two. */
static cJSON *exponents(const sc_opts *o, const sc_point *pts, int npts,
                        sc_cell (*cells)[SC_MAXPOL])
{
    cJSON *arr = cJSON_CreateArray();
    static const char *axes[] = {"context", "width", "batch"};
    printf("\ngrowth exponents a (figure ~ size^a; least squares over the axis, "
           "[last two points]):\n");
    for (int a = 0; a < 3; a++)
        for (int k = 0; k < o->npol; k++) {
            double x[MAXPTS], y[NFIG][MAXPTS];
            int n = 0;
            for (int i = 0; i < npts; i++)
                if (!strcmp(pts[i].axis, axes[a])) {
                    x[n] = axis_value(&pts[i]);
                    for (int f = 0; f < NFIG; f++)
                        y[f][n] = figure(&cells[i][k], f);
                    n++;
                }
            if (n < 2)
                continue;
            cJSON *e = cJSON_CreateObject();
            cJSON_AddStringToObject(e, "axis", axes[a]);
            cJSON_AddStringToObject(e, "policy", o->pols[k].label);
            printf("  %-7s %-8s", axes[a], o->pols[k].label);
            for (int f = 0; f < NFIG; f++) {
                double all = sc_exponent(x, y[f], n);
                double last = sc_exponent(x + n - 2, y[f] + n - 2, 2);
                cJSON *fe = cJSON_AddObjectToObject(e, fig_names[f]);
                cJSON_AddNumberToObject(fe, "all", isfinite(all) ? all : -1);
                cJSON_AddNumberToObject(fe, "last_two", isfinite(last) ? last : -1);
                printf("  %s %.2f [%.2f]", fig_names[f], all, last);
            }
            printf("\n");
            cJSON_AddItemToArray(arr, e);
        }
    return arr;
}

/* Log-log plots of one axis: memory (arena solid, saved dashed) and step
 * CPU time per policy. */
static int plot_axis(const sc_opts *o, const char *base, const char *axis,
                     const sc_point *pts, int npts, sc_cell (*cells)[SC_MAXPOL], cJSON *files)
{
    double x[MAXPTS], y[2 * SC_MAXPOL][MAXPTS], t[SC_MAXPOL][MAXPTS];
    char names[2 * SC_MAXPOL][48], path[1024], title[96];
    as_svg_series mem[2 * SC_MAXPOL], tim[SC_MAXPOL];
    int n = 0;
    for (int i = 0; i < npts; i++) {
        if (strcmp(pts[i].axis, axis))
            continue;
        x[n] = axis_value(&pts[i]);
        for (int k = 0; k < o->npol; k++) {
            y[2 * k][n] = figure(&cells[i][k], 2);
            y[2 * k + 1][n] = figure(&cells[i][k], 0);
            t[k][n] = figure(&cells[i][k], 3);
        }
        n++;
    }
    if (n < 2)
        return 0;
    for (int k = 0; k < o->npol; k++) {
        snprintf(names[2 * k], 48, "%s arena", o->pols[k].label);
        snprintf(names[2 * k + 1], 48, "%s saved", o->pols[k].label);
        mem[2 * k] = (as_svg_series){names[2 * k], x, y[2 * k], (size_t)n, false, k + 1};
        mem[2 * k + 1] = (as_svg_series){names[2 * k + 1], x, y[2 * k + 1], (size_t)n, true, k + 1};
        tim[k] = (as_svg_series){o->pols[k].label, x, t[k], (size_t)n, false, k + 1};
    }
    snprintf(title, sizeof title, "lm memory against %s (log-log)", axis);
    as_svg_axes am = {title, axis, "peak bytes", AS_SVG_BYTES, false, true, true};
    snprintf(path, sizeof path, "%s-%s-memory.svg", base, axis);
    if (as_svg_line_chart(path, &am, mem, (size_t)(2 * o->npol)))
        return as_cli_fail(CMD, "cannot write %s", path), -1;
    cJSON_AddItemToArray(files, cJSON_CreateString(path));
    snprintf(title, sizeof title, "lm step CPU time against %s (log-log)", axis);
    as_svg_axes at = {title, axis, "step thread-CPU ms", AS_SVG_PLAIN, false, true, true};
    snprintf(path, sizeof path, "%s-%s-time.svg", base, axis);
    if (as_svg_line_chart(path, &at, tim, (size_t)o->npol))
        return as_cli_fail(CMD, "cannot write %s", path), -1;
    cJSON_AddItemToArray(files, cJSON_CreateString(path));
    return 0;
}

static int plots(const sc_opts *o, const sc_point *pts, int npts,
                 sc_cell (*cells)[SC_MAXPOL], cJSON *root)
{
    if (!o->json || !strcmp(o->json, "-"))
        return 0;
    char base[900];
    snprintf(base, sizeof base, "%s", o->json);
    size_t L = strlen(base);
    if (L > 5 && !strcmp(base + L - 5, ".json"))
        base[L - 5] = 0;
    cJSON *files = cJSON_AddArrayToObject(root, "plots");
    static const char *axes[] = {"context", "width", "batch"};
    for (int a = 0; a < 3; a++)
        if (plot_axis(o, base, axes[a], pts, npts, cells, files))
            return -1;
    return 0;
}

static cJSON *header_json(const sc_opts *o, const char *mode)
{
    cJSON *root = cJSON_CreateObject(), *pols = cJSON_CreateArray();
    double load[3] = {0, 0, 0};
    cJSON_AddStringToObject(root, "bench", "scale");
    cJSON_AddStringToObject(root, "mode", mode);
    cJSON_AddStringToObject(root, "grid", o->grid->name);
    cJSON_AddStringToObject(root, "model", "lm");
    cJSON_AddStringToObject(root, "preset", o->grid->preset);
    cJSON_AddNumberToObject(root, "repeats", (double)o->repeats);
    cJSON_AddNumberToObject(root, "warmup", (double)o->warmup);
    cJSON_AddNumberToObject(root, "steps", (double)o->steps);
    if (getloadavg(load, 3) > 0)
        cJSON_AddItemToObject(root, "loadavg", cJSON_CreateDoubleArray(load, 3));
    for (int k = 0; k < o->npol; k++) {
        cJSON *p = cJSON_CreateObject();
        cJSON_AddStringToObject(p, "label", o->pols[k].label);
        cJSON_AddStringToObject(p, "spec", o->pols[k].spec);
        cJSON_AddNumberToObject(p, "ratio", o->pols[k].ratio);
        cJSON_AddItemToArray(pols, p);
    }
    cJSON_AddItemToObject(root, "policies", pols);
    return root;
}

static int sweep(const sc_opts *o, cJSON *root)
{
    sc_point pts[MAXPTS];
    const int npts = grid_points(o->grid, pts);
    sc_cell (*cells)[SC_MAXPOL] = calloc((size_t)npts, sizeof *cells);
    if (!cells)
        return as_cli_fail(CMD, "out of memory"), -1;
    cJSON *jp = cJSON_AddArrayToObject(root, "points");
    int rc = 0;
    print_header();
    for (int i = 0; i < npts && !rc; i++) {
        int same = -1;   /* the base point recurs on the width and batch axes */
        for (int j = 0; j < i && same < 0; j++)
            if (pts[j].T == pts[i].T && pts[j].C == pts[i].C && pts[j].B == pts[i].B)
                same = j;
        if (same >= 0)
            memcpy(cells[i], cells[same], sizeof cells[i]);
        else if ((rc = measure_point(o, &pts[i], cells[i])))
            break;
        cJSON *e = cJSON_CreateObject(), *res = cJSON_AddArrayToObject(e, "results");
        cJSON_AddStringToObject(e, "axis", pts[i].axis);
        cJSON_AddNumberToObject(e, "context", pts[i].T);
        cJSON_AddNumberToObject(e, "width", pts[i].C);
        cJSON_AddNumberToObject(e, "heads", pts[i].C / 16);
        cJSON_AddNumberToObject(e, "batch", pts[i].B);
        for (int k = 0; k < o->npol; k++) {
            print_cell(&pts[i], &o->pols[k], &cells[i][k]);
            cJSON_AddItemToArray(res, cell_json(&o->pols[k], &cells[i][k]));
        }
        cJSON_AddItemToArray(jp, e);
        fflush(stdout);
    }
    if (!rc) {
        cJSON_AddItemToObject(root, "exponents", exponents(o, pts, npts, cells));
        rc = plots(o, pts, npts, cells, root);
    }
    free(cells);
    return rc;
}

int as_bench_scale(int argc, char **argv)
{
    sc_opts o;
    int rc = parse(argc, argv, &o);
    if (rc)
        return rc < 0 ? AS_EXIT_OK : rc;
    cJSON *root = header_json(&o, o.fit ? "fit" : "sweep");
    if (!root)
        return as_cli_fail(CMD, "out of memory");
    if (o.fit) {
        sc_cfg base = {.preset = o.grid->preset, .T = o.grid->T, .C = o.grid->C,
                       .B = o.grid->B, .warmup = (int)o.warmup, .steps = (int)o.steps};
        rc = sc_fit(&base, o.pols, o.npol, o.fit, (int)o.max_T,
                    o.max_B ? (int)o.max_B : o.grid->max_B, o.fit_axes, !o.quiet, root);
    } else {
        as_nn_preset p;
        as_nn_preset_get("lm", o.grid->preset, &p);
        printf("lm preset %s: %d blocks, MLP %dx, heads = width / 16; %llu rounds, "
               "%llu warm-up + %llu measured steps\n", o.grid->preset, p.tf.depth,
               p.tf.mlp, o.repeats, o.warmup, o.steps);
        rc = sweep(&o, root);
    }
    if (!rc && o.json && as_cli_write_json(CMD, o.json, root))
        rc = -1;
    cJSON_Delete(root);
    return rc ? AS_EXIT_FAIL : AS_EXIT_OK;
}

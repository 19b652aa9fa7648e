/* Shared plumbing of the actstore command (see cli.h). */
#include "cli.h"
#include "layers/data.h"

#include <errno.h>
#include <stddef.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* "actstore CMD: <what>MESSAGE" on stderr, without the newline. */
static void say(const char *cmd, const char *what, const char *fmt, va_list ap)
{
    fprintf(stderr, "actstore %s: %s", cmd, what);
    vfprintf(stderr, fmt, ap);
}

int as_cli_usage(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    say(cmd, "", fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n(see: actstore %s --help)\n", cmd);
    return AS_EXIT_USAGE;
}

int as_cli_fail(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    say(cmd, "error: ", fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return AS_EXIT_FAIL;
}

bool as_cli_is_help(const char *arg)
{
    return arg && (!strcmp(arg, "-h") || !strcmp(arg, "--help"));
}

void as_cli_list_subs(FILE *f, const as_cli_sub *cmds, size_t n)
{
    for (size_t i = 0; i < n; i++)
        fprintf(f, "  %-8s %s\n", cmds[i].name, cmds[i].summary);
}

const as_cli_sub *as_cli_find_sub(const as_cli_sub *cmds, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(name, cmds[i].name))
            return &cmds[i];
    return NULL;
}

double as_cli_jnum(const cJSON *o, const char *k, double dflt)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : dflt;
}

const char *as_cli_jstr(const cJSON *o, const char *k, const char *dflt)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : dflt;
}

int as_cli_write_json(const char *cmd, const char *path, const cJSON *json)
{
    char *text = cJSON_Print(json);
    if (!text) {
        as_cli_fail(cmd, "out of memory while formatting JSON");
        return -1;
    }
    int rc = 0;
    if (!strcmp(path, "-")) {
        fputs(text, stdout);
        fputc('\n', stdout);
        fflush(stdout);
    } else {
        FILE *f = fopen(path, "w");
        if (!f) {
            as_cli_fail(cmd, "cannot write JSON to '%s': %s", path, strerror(errno));
            rc = -1;
        } else {
            fputs(text, f);
            fputc('\n', f);
            if (fclose(f) != 0) {
                as_cli_fail(cmd, "cannot write JSON to '%s': %s", path, strerror(errno));
                rc = -1;
            }
        }
    }
    cJSON_free(text);
    return rc;
}

int as_cli_parse_u64(const char *cmd, const char *opt, const char *val,
                     unsigned long long *out)
{
    char *end = NULL;
    if (!val || !*val || *val == '-') {
        as_cli_usage(cmd, "%s expects a non-negative integer, got '%s'", opt, val ? val : "");
        return -1;
    }
    errno = 0;
    unsigned long long v = strtoull(val, &end, 10);
    if (errno || *end) {
        as_cli_usage(cmd, "%s expects a non-negative integer, got '%s'", opt, val);
        return -1;
    }
    *out = v;
    return 0;
}

int as_cli_parse_bytes(const char *cmd, const char *opt, const char *val,
                       unsigned long long *out)
{
    char *end = NULL;
    if (!val || !*val || *val == '-' || *val == '+') {
        as_cli_usage(cmd, "%s expects bytes (e.g. 3000000, 512K, 2.5M, 1G), "
                     "got '%s'", opt, val ? val : "");
        return -1;
    }
    errno = 0;
    double v = strtod(val, &end);
    double mul = 1;
    if (*end == 'K' || *end == 'k')
        mul = 1024.0, end++;
    else if (*end == 'M' || *end == 'm')
        mul = 1024.0 * 1024, end++;
    else if (*end == 'G' || *end == 'g')
        mul = 1024.0 * 1024 * 1024, end++;
    if (errno || end == val || *end || !(v * mul >= 1) || v * mul > 1e18) {
        as_cli_usage(cmd, "%s expects bytes >= 1 (e.g. 3000000, 512K, 2.5M, "
                     "1G), got '%s'", opt, val);
        return -1;
    }
    *out = (unsigned long long)(v * mul);
    return 0;
}

int as_cli_parse_double(const char *cmd, const char *opt, const char *val,
                        double *out)
{
    char *end = NULL;
    if (!val || !*val) {
        as_cli_usage(cmd, "%s expects a number, got ''", opt);
        return -1;
    }
    errno = 0;
    double v = strtod(val, &end);
    if (errno || *end || !isfinite(v)) {
        as_cli_usage(cmd, "%s expects a finite number, got '%s'", opt, val);
        return -1;
    }
    *out = v;
    return 0;
}

bool as_cli_stdout_is_tty(void)
{
    const char *term = getenv("TERM");
    return isatty(STDOUT_FILENO) && !(term && !strcmp(term, "dumb"));
}

char *as_cli_human_bytes(double bytes, char *buf, size_t n)
{
    static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while (fabs(bytes) >= 1024.0 && u < 4) {
        bytes /= 1024.0;
        u++;
    }
    if (u == 0)
        snprintf(buf, n, "%.0f %s", bytes, units[u]);
    else
        snprintf(buf, n, "%.1f %s", bytes, units[u]);
    return buf;
}

/* ---- the run commands' option table (cli_opts.def) ---- */

enum { TRAIN = AS_CLI_TRAIN, AB = AS_CLI_AB, DEMO = AS_CLI_DEMO };
enum opt_type { STR, U64, BYTES, DBL, FLAG };

typedef struct opt_row {
    const char   *flag, *arg, *help;
    enum opt_type type;
    unsigned      cmds;
    double        lo, hi;
    size_t        off;
} opt_row;

static const opt_row opt_rows[AS_OPT_COUNT] = {
#define AS_CLI_OPT(name, flag, type, cmds, lo, hi, arg, help) \
    {flag, arg, help, type, cmds, lo, hi, offsetof(as_cli_opts, name)},
#include "cli_opts.def"
#undef AS_CLI_OPT
};

/* The default a row's help shows: strings and nonzero numbers, and zero
 * where zero is a legal value. */
static void opt_default(const opt_row *r, const as_cli_opts *d, char *buf, size_t n)
{
    const char *p = (const char *)d + r->off;
    buf[0] = 0;
    if (r->type == STR && *(const char *const *)(const void *)p)
        snprintf(buf, n, " (default %s)", *(const char *const *)(const void *)p);
    else if (r->type == U64) {
        unsigned long long v = *(const unsigned long long *)(const void *)p;
        if (v || r->lo == 0)
            snprintf(buf, n, " (default %llu)", v);
    } else if (r->type == DBL && *(const double *)(const void *)p != 0)
        snprintf(buf, n, " (default %g)", *(const double *)(const void *)p);
}

static void print_usage(const as_cli_cmd *cmd, const as_cli_opts *d)
{
    fputs(cmd->intro, stdout);
    fputs("\noptions:\n", stdout);
    for (const opt_row *r = opt_rows; r < opt_rows + AS_OPT_COUNT; r++) {
        if (!(r->cmds & cmd->bit))
            continue;
        char head[40], def[96];
        snprintf(head, sizeof head, "%s%s%s", r->flag, *r->arg ? " " : "", r->arg);
        opt_default(r, d, def, sizeof def);
        printf("  %-16s ", head);
        for (const char *h = r->help; *h; h++) {
            putchar(*h);
            if (*h == '\n')
                printf("%19s", "");
        }
        printf("%s\n", def);
    }
    fputs("\n", stdout);
    fputs(cmd->outro, stdout);
}

/* Parse one value into its field; prints a usage message on error. */
static int opt_set(const as_cli_cmd *cmd, const opt_row *r, const char *v, as_cli_opts *o)
{
    void *p = (char *)o + r->off;
    if (r->type == STR) {
        *(const char **)p = v;
        return 0;
    }
    if (r->type == BYTES)
        return as_cli_parse_bytes(cmd->name, r->flag, v, (unsigned long long *)p);
    if (r->type == U64) {
        unsigned long long x;
        if (as_cli_parse_u64(cmd->name, r->flag, v, &x))
            return -1;
        if (x < (unsigned long long)r->lo || (r->hi > 0 && x > (unsigned long long)r->hi)) {
            if (r->hi > 0)
                as_cli_usage(cmd->name, "%s %llu out of range %.0f..%.0f", r->flag, x, r->lo,
                             r->hi);
            else
                as_cli_usage(cmd->name, "%s %llu out of range: at least %.0f", r->flag, x,
                             r->lo);
            return -1;
        }
        *(unsigned long long *)p = x;
        return 0;
    }
    double x;
    if (as_cli_parse_double(cmd->name, r->flag, v, &x))
        return -1;
    if (!(x > r->lo && x <= r->hi)) {
        as_cli_usage(cmd->name, "%s %g out of range (%g, %g]", r->flag, x, r->lo, r->hi);
        return -1;
    }
    *(double *)p = x;
    return 0;
}

int as_cli_parse_opts(const as_cli_cmd *cmd, int argc, char **argv, as_cli_opts *o)
{
    const as_cli_opts defaults = *o;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (as_cli_is_help(a)) {
            print_usage(cmd, &defaults);
            return AS_EXIT_OK;
        }
        const opt_row *r = opt_rows;
        while (r < opt_rows + AS_OPT_COUNT && (!(r->cmds & cmd->bit) || strcmp(a, r->flag)))
            r++;
        if (r == opt_rows + AS_OPT_COUNT) {
            if (strncmp(a, "--", 2))
                return as_cli_usage(cmd->name, "unexpected argument '%s'", a);
            return as_cli_usage(cmd->name, "unknown option '%s'", a);
        }
        o->seen[r - opt_rows] = true;
        if (r->type == FLAG) {
            *(bool *)(void *)((char *)o + r->off) = true;
            continue;
        }
        if (i + 1 >= argc)
            return as_cli_usage(cmd->name, "%s needs a value", a);
        if (opt_set(cmd, r, argv[++i], o))
            return AS_EXIT_USAGE;
    }
    return AS_CLI_RUN;
}

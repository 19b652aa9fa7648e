/* Shared plumbing of the actstore command (see cli.h). */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int as_cli_usage(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "actstore %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n(see: actstore %s --help)\n", cmd);
    return AS_EXIT_USAGE;
}

int as_cli_fail(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "actstore %s: error: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return AS_EXIT_FAIL;
}

bool as_cli_is_help(const char *arg)
{
    return arg && (!strcmp(arg, "-h") || !strcmp(arg, "--help"));
}

int as_cli_next_opt(const char *cmd, const char *usage, int argc, char **argv, int *i,
                    const as_cli_flag *flags, const char **opt, const char **val)
{
    const char *a = argv[*i];
    if (as_cli_is_help(a)) {
        fputs(usage, stdout);
        return AS_EXIT_OK;
    }
    for (const as_cli_flag *f = flags; f && f->name; f++)
        if (!strcmp(a, f->name)) {
            *f->set = true;
            return AS_CLI_FLAG;
        }
    if (strncmp(a, "--", 2))
        return as_cli_usage(cmd, "unexpected argument '%s'", a);
    if (*i + 1 >= argc)
        return as_cli_usage(cmd, "%s needs a value", a);
    *opt = a;
    *val = argv[++*i];
    return AS_CLI_VALUE;
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

/* Shared plumbing of the actstore command (see cli.h). */
#include "cli.h"
#include "layers/data.h"

#include <errno.h>
#include <limits.h>
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

void as_cli_add_nums(cJSON *o, const as_cli_num *rows, size_t n)
{
    for (size_t i = 0; i < n; i++)
        cJSON_AddNumberToObject(o, rows[i].key, rows[i].v);
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

int as_cli_parse_u64_in(const char *cmd, const char *opt, const char *val,
                        unsigned long long lo, unsigned long long hi, unsigned long long *out)
{
    unsigned long long x;
    if (as_cli_parse_u64(cmd, opt, val, &x))
        return -1;
    if (x < lo || x > hi) {
        if (hi < ULLONG_MAX)
            as_cli_usage(cmd, "%s %llu out of range %llu..%llu", opt, x, lo, hi);
        else
            as_cli_usage(cmd, "%s %llu out of range: at least %llu", opt, x, lo);
        return -1;
    }
    *out = x;
    return 0;
}

const char *as_cli_flag_value(int argc, char **argv, int *i, const char *flag)
{
    if (*i + 1 >= argc || strcmp(argv[*i], flag))
        return NULL;
    return argv[++*i];
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

int as_cli_parse_double_in(const char *cmd, const char *opt, const char *val,
                           double lo, double hi, double *out)
{
    double x;
    if (as_cli_parse_double(cmd, opt, val, &x))
        return -1;
    if (!(x > lo && x <= hi)) {
        as_cli_usage(cmd, "%s %g out of range (%g, %g]", opt, x, lo, hi);
        return -1;
    }
    *out = x;
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
enum opt_type {
    STR = AS_CLI_STR, U64 = AS_CLI_U64, BYTES = AS_CLI_BYTES, DBL = AS_CLI_DBL, FLAG = AS_CLI_FLAG
};

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

/* Parse v as a value of type into p (not FLAG); prints a usage message
 * naming flag on error. */
static int set_value(const char *cmd, const char *flag, int type, double lo, double hi,
                     const char *v, void *p)
{
    if (type == STR) {
        *(const char **)p = v;
        return 0;
    }
    if (type == BYTES)
        return as_cli_parse_bytes(cmd, flag, v, (unsigned long long *)p);
    if (type == U64)
        return as_cli_parse_u64_in(cmd, flag, v, (unsigned long long)lo,
                                   hi > 0 ? (unsigned long long)hi : ULLONG_MAX,
                                   (unsigned long long *)p);
    return as_cli_parse_double_in(cmd, flag, v, lo, hi, (double *)p);
}

/* The loop of both parsers: AS_CLI_RUN, AS_EXIT_USAGE after a message, or
 * AS_EXIT_OK on -h / --help (the caller prints its usage). seen: NULL, or
 * one flag per row, set when the row is given. */
static int parse_rows(const char *cmd, const as_cli_flag *rows, size_t n, bool *seen,
                      int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (as_cli_is_help(a))
            return AS_EXIT_OK;
        const as_cli_flag *r = rows;
        while (r < rows + n && strcmp(a, r->flag))
            r++;
        if (r == rows + n) {
            if (strncmp(a, "--", 2))
                return as_cli_usage(cmd, "unexpected argument '%s'", a);
            return as_cli_usage(cmd, "unknown option '%s'", a);
        }
        if (seen)
            seen[r - rows] = true;
        if (r->type == AS_CLI_FLAG) {
            *(bool *)r->out = true;
            continue;
        }
        if (i + 1 >= argc)
            return as_cli_usage(cmd, "%s needs a value", a);
        if (set_value(cmd, r->flag, r->type, r->lo, r->hi, argv[++i], r->out))
            return AS_EXIT_USAGE;
    }
    return AS_CLI_RUN;
}

int as_cli_parse_flags(const char *cmd, const as_cli_flag *rows, size_t n,
                       void (*usage)(FILE *f), int argc, char **argv)
{
    int rc = parse_rows(cmd, rows, n, NULL, argc, argv);
    if (rc == AS_EXIT_OK)
        usage(stdout);
    return rc;
}

int as_cli_parse_opts(const as_cli_cmd *cmd, int argc, char **argv, as_cli_opts *o)
{
    const as_cli_opts defaults = *o;
    as_cli_flag rows[AS_OPT_COUNT];
    size_t id[AS_OPT_COUNT], n = 0;
    bool seen[AS_OPT_COUNT] = {false};
    for (size_t k = 0; k < AS_OPT_COUNT; k++)
        if (opt_rows[k].cmds & cmd->bit) {
            const opt_row *r = &opt_rows[k];
            rows[n] = (as_cli_flag){r->flag, (as_cli_type)r->type, (char *)o + r->off,
                                    r->lo, r->hi};
            id[n++] = k;
        }
    int rc = parse_rows(cmd->name, rows, n, seen, argc, argv);
    for (size_t k = 0; k < n; k++)
        o->seen[id[k]] |= seen[k];
    if (rc == AS_EXIT_OK)
        print_usage(cmd, &defaults);
    return rc;
}

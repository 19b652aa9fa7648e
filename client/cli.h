/*
 * Shared plumbing of the actstore command: exit codes, usage errors, JSON
 * output files, terminal detection. Internal to client/.
 */
#ifndef AS_CLIENT_CLI_H
#define AS_CLIENT_CLI_H

#include <stdbool.h>
#include <stdio.h>

#include <cjson/cJSON.h>

enum { AS_EXIT_OK = 0, AS_EXIT_FAIL = 1, AS_EXIT_USAGE = 2 };

/* A subcommand: argv[0] is the subcommand's own name. Returns an exit code. */
typedef int (*as_cmd_fn)(int argc, char **argv);

/* One row of a subcommand table (the command's, actstore-bench's). */
typedef struct as_cli_sub {
    const char *name;
    as_cmd_fn   fn;
    const char *summary;   /* one line for the usage text */
} as_cli_sub;

/* Print "  NAME     SUMMARY" for each of the n rows to f. */
void as_cli_list_subs(FILE *f, const as_cli_sub *cmds, size_t n);

/* The row named name, or NULL. */
const as_cli_sub *as_cli_find_sub(const as_cli_sub *cmds, size_t n, const char *name);

/* Print "actstore <cmd>: <message>" and a hint to run --help to stderr;
 * returns AS_EXIT_USAGE. */
int as_cli_usage(const char *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Print "actstore <cmd>: error: <message>" to stderr; returns AS_EXIT_FAIL. */
int as_cli_fail(const char *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Is argv[i] one of "-h", "--help"? */
bool as_cli_is_help(const char *arg);

/* A named number of a JSON object. */
typedef struct as_cli_num {
    const char *key;
    double      v;
} as_cli_num;

/* Add the n rows to o as number members, in order. */
void as_cli_add_nums(cJSON *o, const as_cli_num *rows, size_t n);

/* Write json (pretty-printed) to path ("-" = stdout). Returns 0 or -1 with
 * a message on stderr naming the path. Does not free json. */
int as_cli_write_json(const char *cmd, const char *path, const cJSON *json);

/* Member k of object o as a number / string; dflt when o is not an object,
 * k is absent or of another type. The string is owned by o. */
double as_cli_jnum(const cJSON *o, const char *k, double dflt);
const char *as_cli_jstr(const cJSON *o, const char *k, const char *dflt);

/* Parse a non-negative integer / double option value; on error prints a
 * usage message naming the option and returns -1. */
int as_cli_parse_u64(const char *cmd, const char *opt, const char *val,
                     unsigned long long *out);
int as_cli_parse_double(const char *cmd, const char *opt, const char *val,
                        double *out);

/* The same with a range check, lo <= v <= hi (u64) or lo < v <= hi
 * (double); out of range is a usage message with the range and -1. */
int as_cli_parse_u64_in(const char *cmd, const char *opt, const char *val,
                        unsigned long long lo, unsigned long long hi, unsigned long long *out);
int as_cli_parse_double_in(const char *cmd, const char *opt, const char *val,
                           double lo, double hi, double *out);

/* An option with a value: when argv[*i] is flag and a value follows, step
 * *i to the value and return it; NULL otherwise. */
const char *as_cli_flag_value(int argc, char **argv, int *i, const char *flag);

/* The options of a benchmark, one row each: the flag, the type of its value
 * and where it goes (STR: const char *, U64 and BYTES: unsigned long long,
 * DBL: double, FLAG: bool, set without a value), and the range of numbers
 * (U64: lo <= v <= hi, hi 0 = no bound; DBL: lo < v <= hi). */
typedef enum { AS_CLI_STR, AS_CLI_U64, AS_CLI_BYTES, AS_CLI_DBL, AS_CLI_FLAG } as_cli_type;
typedef struct as_cli_flag {
    const char *flag;
    as_cli_type type;
    void       *out;
    double      lo, hi;
} as_cli_flag;

/* Parse argv[1..] against the n rows. AS_CLI_RUN when the command should
 * run; AS_EXIT_OK after -h / --help (usage(stdout) printed); AS_EXIT_USAGE
 * after a message naming the bad argument (unknown option, missing or bad
 * value). A row's value is written only when it parses. */
int as_cli_parse_flags(const char *cmd, const as_cli_flag *rows, size_t n,
                       void (*usage)(FILE *f), int argc, char **argv);

/* Parse a byte count: an integer with an optional K, M or G suffix (powers
 * of 1024; "1.5G" allowed); on error prints a usage message naming the
 * option and returns -1. 0 is refused. */
int as_cli_parse_bytes(const char *cmd, const char *opt, const char *val,
                       unsigned long long *out);

/* auto's plan (as_store_plan_take) as a table on f, and as JSON (owned by
 * the caller): budget, keep / planned / smallest bytes, and per (layer,
 * kind): policy, raw and stored bytes, error, cosine, time. */
struct as_store_plan;
void as_cli_plan_print(FILE *f, const struct as_store_plan *p);
cJSON *as_cli_plan_json(const struct as_store_plan *p);

/* The options shared by the run commands (train, ab, demo): one table,
 * cli_opts.def; o.NAME holds the value of row NAME, o.seen[AS_OPT_NAME] says
 * whether the command line gave it. */
enum { AS_CLI_TRAIN = 1, AS_CLI_AB = 2, AS_CLI_DEMO = 4 };

#define AS_CLI_T_STR  const char *
#define AS_CLI_T_U64  unsigned long long
#define AS_CLI_T_BYTES unsigned long long
#define AS_CLI_T_DBL  double
#define AS_CLI_T_FLAG bool

typedef enum as_cli_opt_id {
#define AS_CLI_OPT(name, ...) AS_OPT_##name,
#include "cli_opts.def"
#undef AS_CLI_OPT
    AS_OPT_COUNT
} as_cli_opt_id;

typedef struct as_cli_opts {
#define AS_CLI_OPT(name, flag, type, ...) AS_CLI_T_##type name;
#include "cli_opts.def"
#undef AS_CLI_OPT
    bool seen[AS_OPT_COUNT];
} as_cli_opts;

/* A run command: its name, its AS_CLI_* bit (which rows it takes), the
 * usage text before and after the generated option list. */
typedef struct as_cli_cmd {
    const char *name;
    unsigned    bit;
    const char *intro, *outro;
} as_cli_cmd;

enum { AS_CLI_RUN = -3 };

/* Parse argv[1..] into *o, which holds the command's defaults on entry
 * (they are shown in --help). Gives AS_CLI_RUN when the command should run;
 * otherwise the exit code: AS_EXIT_OK after --help (usage on stdout),
 * AS_EXIT_USAGE after a message naming the bad argument (unknown option,
 * missing or malformed value, number out of the row's range). */
int as_cli_parse_opts(const as_cli_cmd *cmd, int argc, char **argv, as_cli_opts *o);

/* stdout is a terminal (and TERM is not "dumb"). */
bool as_cli_stdout_is_tty(void);

/* Human-readable bytes ("12.3 MiB") into buf; returns buf. */
char *as_cli_human_bytes(double bytes, char *buf, size_t n);

/* Subcommands (one file each: cmd_<name>.c). */
int as_cmd_train(int argc, char **argv);
int as_cmd_ab(int argc, char **argv);
int as_cmd_demo(int argc, char **argv);
int as_cmd_top(int argc, char **argv);
int as_cmd_bench(int argc, char **argv);

#endif

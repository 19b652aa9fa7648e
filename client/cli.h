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

/* Print "actstore <cmd>: <message>" and a hint to run --help to stderr;
 * returns AS_EXIT_USAGE. */
int as_cli_usage(const char *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Print "actstore <cmd>: error: <message>" to stderr; returns AS_EXIT_FAIL. */
int as_cli_fail(const char *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Is argv[i] one of "-h", "--help"? */
bool as_cli_is_help(const char *arg);

/* Write json (pretty-printed) to path ("-" = stdout). Returns 0 or -1 with
 * a message on stderr naming the path. Does not free json. */
int as_cli_write_json(const char *cmd, const char *path, const cJSON *json);

/* Parse a non-negative integer / double option value; on error prints a
 * usage message naming the option and returns -1. */
int as_cli_parse_u64(const char *cmd, const char *opt, const char *val,
                     unsigned long long *out);
int as_cli_parse_double(const char *cmd, const char *opt, const char *val,
                        double *out);

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

/* A flag of a subcommand (an option without a value): seen sets *set. */
typedef struct as_cli_flag {
    const char *name;   /* "--quiet" */
    bool       *set;
} as_cli_flag;

enum { AS_CLI_FLAG = -1, AS_CLI_VALUE = -2 };

/* One turn of a subcommand's option loop, at argv[*i]: "-h"/"--help"
 * prints usage to stdout and gives AS_EXIT_OK; one of flags[] (ended by a
 * NULL name) sets its bool and gives AS_CLI_FLAG; "--name value" sets
 * *opt = argv[*i], *val = the value, moves *i to the value and gives
 * AS_CLI_VALUE. Anything else (not "--...", or no value after it) prints a
 * usage message naming the argument and gives AS_EXIT_USAGE. The caller
 * continues on AS_CLI_FLAG, parses *opt on AS_CLI_VALUE, else returns the
 * code. */
int as_cli_next_opt(const char *cmd, const char *usage, int argc, char **argv, int *i,
                    const as_cli_flag *flags, const char **opt, const char **val);

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

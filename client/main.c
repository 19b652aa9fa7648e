/*
 * actstore — the command. Dispatches to one subcommand per file
 * (cmd_<name>.c). Exit status: 0 success, 1 failure, 2 usage error.
 */
#include <stdio.h>
#include <string.h>

#include "actstore/common.h"
#include "cli.h"
#include "layers/ops.h"

static const as_cli_sub commands[] = {
    {"demo",  as_cmd_demo,  "A/B demo with the live dashboard (the main job)"},
    {"train", as_cmd_train, "train a model with a policy spec"},
    {"ab",    as_cmd_ab,    "paired A/B comparison of two policy specs"},
    {"top",   as_cmd_top,   "live terminal view of a running service"},
    {"bench", as_cmd_bench, "benchmarks (alloc, store, softmax, conv, layers, service)"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: actstore <command> [options]   (actstore <command> --help)\n\n"
               "commands:\n");
    as_cli_list_subs(f, commands, sizeof commands / sizeof commands[0]);
    fprintf(f, "  %-8s %s\n", "version", "print the library version and the kernels in use");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return AS_EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (as_cli_is_help(cmd) || !strcmp(cmd, "help")) {
        usage(stdout);
        return AS_EXIT_OK;
    }
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        printf("actstore %s\n%s\n", as_version_string(), as_op_kernels_info());
        return AS_EXIT_OK;
    }
    const as_cli_sub *c = as_cli_find_sub(commands, sizeof commands / sizeof commands[0], cmd);
    if (c)
        return c->fn(argc - 1, argv + 1);
    fprintf(stderr, "actstore: unknown command '%s'\n", cmd);
    usage(stderr);
    return AS_EXIT_USAGE;
}

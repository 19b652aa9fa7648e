/*
 * actstore bench ...: the benchmarks are a program of their own,
 * actstore-bench, so the shipped command stays small. This forwards to it:
 * first the one installed or built next to this binary, then $PATH.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

int as_cmd_bench(int argc, char **argv)
{
    char self[PATH_MAX], path[PATH_MAX + 32];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    argv[0] = "actstore-bench";
    if (n > 0) {
        self[n] = '\0';
        char *slash = strrchr(self, '/');
        if (slash) {
            *slash = '\0';
            snprintf(path, sizeof path, "%s/actstore-bench", self);
            if (access(path, X_OK) == 0)
                execv(path, argv);
        }
    }
    execvp("actstore-bench", argv);
    fprintf(stderr,
            "actstore bench: cannot run actstore-bench (%s); it is built "
            "with -DAS_BUILD_BENCH=ON and installed next to actstore\n",
            strerror(errno));
    (void)argc;
    return AS_EXIT_FAIL;
}

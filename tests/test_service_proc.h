/*
 * Child processes for the service's integration tests (Prometheus,
 * Chromium): find a tool on PATH, spawn it with its output in a log file,
 * stop it within a bound, pick a free loopback port, make and remove a
 * scratch directory. Header-only, static.
 */
#ifndef AS_TEST_SERVICE_PROC_H
#define AS_TEST_SERVICE_PROC_H

#include <errno.h>
#include <fcntl.h>
#include <dirent.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "util/clock.h"

/* Absolute path of an executable on PATH (or the env override), or NULL. */
static __attribute__((unused)) const char *proc_find(const char *env, const char *name,
                                                     char *out, size_t outlen)
{
    const char *o = env ? getenv(env) : NULL;
    if (o && *o) {
        snprintf(out, outlen, "%s", o);
        return access(out, X_OK) == 0 ? out : NULL;
    }
    const char *path = getenv("PATH");
    if (!path || !*path)
        path = "/usr/local/bin:/usr/bin:/bin";
    while (*path) {
        const char *end = strchr(path, ':');
        size_t n = end ? (size_t)(end - path) : strlen(path);
        snprintf(out, outlen, "%.*s/%s", (int)n, path, name);
        if (n && access(out, X_OK) == 0)
            return out;
        path += n + (end ? 1 : 0);
    }
    return NULL;
}

/* proc_find into the char array buf, or fail the test naming the tool and
 * the Debian package that has it (needs cmocka.h). */
#define PROC_REQUIRE(env, name, pkg, buf)                                      \
    do {                                                                       \
        if (!proc_find(env, name, buf, sizeof buf))                            \
            fail_msg("%s not found on PATH: install the Debian package '%s' "  \
                     "(scripts/setup.sh with AS_SETUP_TEST_TOOLS=1) or set %s",\
                     name, pkg, env);                                          \
    } while (0)

/* Spawn argv[0] with stdout and stderr appended to log (NULL: /dev/null).
 * fds: pairs (parent fd, child fd) to install in the child (e.g. the
 * DevTools pipe on 3 and 4), nfds pairs; every other parent fd is closed
 * in the child. The child gets its own process group. Returns the pid or
 * -1. */
static __attribute__((unused)) pid_t proc_spawn(char *const argv[], const char *log,
                                                const int (*fds)[2], int nfds)
{
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    setpgid(0, 0);
    int lf = open(log ? log : "/dev/null", O_WRONLY | O_CREAT | O_APPEND, 0644);
    int nul = open("/dev/null", O_RDONLY);
    /* move the requested fds out of the way first, then install them */
    int tmp[8];
    for (int i = 0; i < nfds && i < 8; i++)
        tmp[i] = fcntl(fds[i][0], F_DUPFD, 100);
    if (nul >= 0)
        dup2(nul, 0);
    if (lf >= 0) {
        dup2(lf, 1);
        dup2(lf, 2);
    }
    for (int i = 0; i < nfds && i < 8; i++)
        dup2(tmp[i], fds[i][1]);
    int keep_max = 2;
    for (int i = 0; i < nfds && i < 8; i++)
        keep_max = fds[i][1] > keep_max ? fds[i][1] : keep_max;
    for (int fd = keep_max + 1; fd < 1024; fd++)
        close(fd);
    execv(argv[0], argv);
    fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
    _exit(127);
}

/* SIGTERM the child's process group, wait up to grace_s, then SIGKILL.
 * Returns the wait status (or -1). */
static __attribute__((unused)) int proc_stop(pid_t pid, double grace_s)
{
    if (pid <= 0)
        return -1;
    kill(-pid, SIGTERM);
    kill(pid, SIGTERM);
    double t0 = as_clock_wall_s();
    int st = 0;
    while (as_clock_wall_s() - t0 < grace_s) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) {
            kill(-pid, SIGKILL);   /* helpers left in the group */
            return st;
        }
        if (r < 0)
            return -1;
        usleep(20000);
    }
    kill(-pid, SIGKILL);
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    return st;
}

/* A loopback TCP port that was free a moment ago (the OS picks it). */
static __attribute__((unused)) int proc_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sa;
    int port = -1;
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

/* Remove a directory tree (no symlinks followed). */
static __attribute__((unused)) void proc_rmtree(const char *dir)
{
    if (!dir || !*dir)
        return;
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                continue;
            char p[1024];
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            struct stat sb;
            if (lstat(p, &sb) == 0 && S_ISDIR(sb.st_mode))
                proc_rmtree(p);
            else
                unlink(p);
        }
        closedir(d);
    }
    rmdir(dir);
}

/* The last n bytes of a log file on stderr (for failure messages). */
static __attribute__((unused)) void proc_dump_log(const char *log, long n)
{
    FILE *f = fopen(log, "r");
    if (!f)
        return;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, sz > n ? sz - n : 0, SEEK_SET);
    char buf[4096];
    size_t r;
    fprintf(stderr, "---- %s (last %ld bytes) ----\n", log, n);
    while ((r = fread(buf, 1, sizeof buf, f)) > 0)
        fwrite(buf, 1, r, stderr);
    fprintf(stderr, "---- end of %s ----\n", log);
    fclose(f);
}

#ifdef AS_CLIENT_CLIENT_H
/* GET addr/path through the client library with a 3 s bound: the body
 * (caller frees) and *status, or NULL with *status = -1. */
static __attribute__((unused)) char *proc_http_get(const char *addr, const char *path,
                                                   int *status)
{
    as_client_response r;
    char err[256];
    if (as_client_get(addr, path, 3000, &r, err, sizeof err)) {
        *status = -1;
        return NULL;
    }
    *status = r.status;
    return r.body;
}
#endif

#endif

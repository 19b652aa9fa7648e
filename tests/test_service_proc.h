/*
 * Child processes for the service's integration tests (Prometheus,
 * Chromium): find a tool on PATH, spawn it with its output in a log file,
 * stop it within a bound, pick a free loopback port (scratch directories:
 * support/scratch.h). Header-only, static.
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

#include "support/scratch.h"
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

/* Write text to the file path (created or truncated): 0 or -1. */
static __attribute__((unused)) int proc_write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    bool ok = fputs(text, f) >= 0;
    return fclose(f) == 0 && ok ? 0 : -1;
}

/* promtool (at path tool) check metrics on text, written to dir/metrics.txt:
 * its exit status (0: valid exposition); its output goes to stderr when it
 * fails. */
static __attribute__((unused)) int proc_promtool_check(const char *tool, const char *text,
                                                       const char *dir)
{
    char path[300], log[300], cmd[1200];
    snprintf(path, sizeof path, "%s/metrics.txt", dir);
    snprintf(log, sizeof log, "%s/promtool.log", dir);
    if (proc_write_text(path, text) < 0)
        return -1;
    snprintf(cmd, sizeof cmd, "'%s' check metrics < '%s' > '%s' 2>&1", tool, path, log);
    int rc = system(cmd);
    if (rc != 0)
        proc_dump_log(log, 4000);
    return rc;
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

/* Start Prometheus (binary bin) on a free loopback port with the
 * configuration text config (written to dir/prometheus.yml; data in
 * dir/data, log in dir/prometheus.log) and wait up to 30 s until it is
 * ready; a start that loses the race for the port is retried (3 attempts).
 * Its pid with its address in addr, or -1 with its log on stderr. */
static __attribute__((unused)) pid_t proc_prometheus_start(const char *bin, const char *dir,
                                                           const char *config, char *addr,
                                                           size_t addrlen)
{
    char cfg[300], data[300], log[300], fcfg[400], fdata[400], fweb[100];
    snprintf(cfg, sizeof cfg, "%s/prometheus.yml", dir);
    snprintf(data, sizeof data, "%s/data", dir);
    snprintf(log, sizeof log, "%s/prometheus.log", dir);
    if (proc_write_text(cfg, config) < 0)
        return -1;
    snprintf(fcfg, sizeof fcfg, "--config.file=%s", cfg);
    snprintf(fdata, sizeof fdata, "--storage.tsdb.path=%s", data);
    for (int attempt = 0; attempt < 3; attempt++) {
        snprintf(addr, addrlen, "127.0.0.1:%d", proc_free_port());
        snprintf(fweb, sizeof fweb, "--web.listen-address=%s", addr);
        char *argv[] = {(char *)bin, fcfg, fdata, fweb, "--log.level=warn",
                        "--storage.tsdb.retention.time=1h", NULL};
        pid_t pid = proc_spawn(argv, log, NULL, 0);
        if (pid <= 0)
            break;
        for (double t0 = as_clock_wall_s(); as_clock_wall_s() - t0 < 30;) {
            int st, status;
            if (waitpid(pid, &st, WNOHANG) == pid) {
                pid = -1;   /* lost the port race: another one */
                break;
            }
            free(proc_http_get(addr, "/-/ready", &status));
            if (status == 200)
                return pid;
            usleep(200000);
        }
        if (pid > 0) {
            proc_stop(pid, 5);
            fprintf(stderr, "Prometheus at %s not ready within 30 s\n", addr);
            break;
        }
    }
    proc_dump_log(log, 4000);
    return -1;
}
#endif

#endif

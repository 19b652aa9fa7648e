/*
 * Scratch directories of the tests: a fresh one under $TMPDIR (default
 * /tmp), and removal of a whole tree. Header-only (static inline).
 */
#ifndef AS_TESTS_SUPPORT_SCRATCH_H
#define AS_TESTS_SUPPORT_SCRATCH_H

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* A fresh directory $TMPDIR/as_<name>_XXXXXX, its path in buf: buf, or
 * NULL (errno set) when it cannot be made. */
static inline char *scratch_make(char *buf, size_t len, const char *name)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(buf, len, "%s/as_%s_XXXXXX", tmp && *tmp ? tmp : "/tmp", name);
    return mkdtemp(buf);
}

/* Remove a directory tree (no symlinks followed); 0, or -1 when dir is
 * still there. */
static inline int scratch_remove(const char *dir)
{
    if (!dir || !*dir)
        return 0;
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                continue;
            char p[1024];
            if (snprintf(p, sizeof p, "%s/%s", dir, e->d_name) >= (int)sizeof p)
                continue;   /* too long to name: rmdir then reports it */
            struct stat sb;
            if (lstat(p, &sb) == 0 && S_ISDIR(sb.st_mode))
                scratch_remove(p);
            else
                unlink(p);
        }
        closedir(d);
    }
    return rmdir(dir) == 0 || access(dir, F_OK) != 0 ? 0 : -1;
}

/* One scratch directory for a whole test program, as a cmocka group
 * fixture: scratch_group_setup makes scratch_dir, scratch_group_teardown
 * removes it with everything in it. */
static char scratch_dir[256] __attribute__((unused));

static inline int scratch_group_setup(void **state)
{
    (void)state;
    return scratch_make(scratch_dir, sizeof scratch_dir, "test") ? 0 : -1;
}

static inline int scratch_group_teardown(void **state)
{
    (void)state;
    return scratch_remove(scratch_dir);
}

#endif

/* Character-level text from the fortunes package (see data.h). */
#include "layers/data.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "actstore/common.h"

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Append file contents to *buf. */
static int slurp(const char *path, char **buf, size_t *len, size_t *cap)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    char tmp[65536];
    size_t n;
    while ((n = fread(tmp, 1, sizeof tmp, f)) > 0) {
        if (*len + n > *cap) {
            size_t nc = (*cap ? *cap * 2 : 1 << 20);
            while (nc < *len + n)
                nc *= 2;
            char *p = realloc(*buf, nc);
            if (!p) {
                fclose(f);
                return -2;
            }
            *buf = p;
            *cap = nc;
        }
        memcpy(*buf + *len, tmp, n);
        *len += n;
    }
    fclose(f);
    return 0;
}

int as_nn_text_load(const char *dir, as_nn_text *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (!dir)
        dir = AS_NN_FORTUNES_DIR;
    DIR *d = opendir(dir);
    if (!d) {
        snprintf(err, errlen, "cannot open %s: %s (install the Debian package "
                 "fortunes, or pass the directory that holds the fortune files)",
                 dir, strerror(errno));
        return errno == ENOENT ? AS_ENOTFOUND : AS_EIO;
    }
    char **names = NULL;
    size_t nn = 0, capn = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || strchr(e->d_name, '.'))
            continue;   /* skip .dat indexes and .u8 links */
        if (nn == capn) {
            capn = capn ? 2 * capn : 64;
            char **p = realloc(names, capn * sizeof *p);
            if (!p)
                break;
            names = p;
        }
        names[nn++] = strdup(e->d_name);
    }
    closedir(d);
    if (nn == 0) {
        snprintf(err, errlen, "%s: no fortune files (install the Debian package "
                 "fortunes)", dir);
        free(names);
        return AS_ENOTFOUND;
    }
    qsort(names, nn, sizeof *names, cmp_str);
    char *buf = NULL;
    size_t len = 0, cap = 0;
    int rc = 0;
    for (size_t i = 0; i < nn && !rc; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        if (slurp(path, &buf, &len, &cap) == -2)
            rc = AS_ENOMEM;
    }
    for (size_t i = 0; i < nn; i++)
        free(names[i]);
    free(names);
    if (!rc && len < 1000) {
        snprintf(err, errlen, "%s: only %zu bytes of text", dir, len);
        rc = AS_EFORMAT;
    }
    if (!rc) {
        out->train = malloc(len);
        out->heldout = malloc(len);
        if (!out->train || !out->heldout)
            rc = AS_ENOMEM;
    }
    if (rc) {
        if (rc == AS_ENOMEM)
            snprintf(err, errlen, "out of memory reading %s", dir);
        free(buf);
        as_nn_text_free(out);
        return rc;
    }
    /* vocabulary: the distinct bytes, in byte order */
    bool seen[256] = {false};
    for (size_t i = 0; i < len; i++)
        seen[(uint8_t)buf[i]] = true;
    for (int b = 0; b < 256; b++)
        if (seen[b]) {
            out->byte_of[out->vocab] = (uint8_t)b;
            out->tok_of[b] = (uint8_t)out->vocab++;
        }
    /* split by fortune: a fortune ends with a line "%\n" */
    size_t start = 0, k = 0;
    for (size_t i = 0; i <= len; i++) {
        bool end = i == len || (buf[i] == '%' && (i == 0 || buf[i - 1] == '\n') &&
                                (i + 1 == len || buf[i + 1] == '\n'));
        if (!end)
            continue;
        size_t stop = i == len ? len : i + 2 > len ? len : i + 2;
        uint64_t h = (k + 1) * 0x9E3779B97F4A7C15ull;
        h ^= h >> 29;
        bool held = (h % 20) == 7;
        uint8_t *dst = held ? out->heldout + out->nheldout : out->train + out->ntrain;
        for (size_t j = start; j < stop; j++)
            dst[j - start] = out->tok_of[(uint8_t)buf[j]];
        if (held)
            out->nheldout += stop - start;
        else
            out->ntrain += stop - start;
        start = stop;
        k++;
        if (i == len)
            break;
        i = stop - 1;
    }
    free(buf);
    return 0;
}

void as_nn_text_free(as_nn_text *t)
{
    free(t->train);
    free(t->heldout);
    memset(t, 0, sizeof *t);
}

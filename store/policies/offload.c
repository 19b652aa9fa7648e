/*
 * offload[:dir] — keep the tensor in a file instead of memory.
 *
 * Save creates an unnamed file (O_TMPFILE, mode 0600; where the file
 * system has no O_TMPFILE, a named one unlinked right after its creation)
 * and keeps it open until the item is released, so no file outlives the
 * process, however it ends (SIGKILL included). It reserves the size
 * (posix_fallocate), copies the tensor into a staging buffer (allocator tag
 * saved, the item's layer, counted as stored bytes while it lives), then
 * queues the write on the offload I/O thread and returns. The thread writes
 * header + data and frees the staging buffer.
 * Restore:
 *   - write not finished: copies from the staging buffer (no disk I/O);
 *   - prefetched read finished: copies the verified buffer;
 *   - read in progress: waits for it; queued but not started: does it now;
 *   - otherwise reads the file now.
 * A read is verified before anything reaches the destination: the header
 * (magic, version, size, header checksum), the file size, and the payload
 * checksum against the one the item remembers. A modified or truncated file
 * gives AS_ECORRUPT naming handle and layer; a read error gives AS_EIO.
 * Files are closed (and so removed) when the item is released. One open
 * descriptor per offloaded item: past the process's limit a save falls
 * back like an unwritable directory.
 *
 * Fallback, never losing the tensor: when the file cannot be created or its
 * space reserved (missing, unwritable or full directory), encode fails with
 * AS_EIO and the reason; the store then saves the tensor under the rule's
 * fallback (keep by default), counts the fallback (store stats
 * offload_fallbacks, the layer's fallback count and reason) and says so in
 * as_store_policy_of ("keep (fallback from offload: ...)"), in strict mode
 * too (an I/O failure is not a policy that does not apply). If a background
 * write fails anyway, the staging buffer stays as the in-memory copy (still
 * counted as stored) and the fallback is counted the same way.
 *
 * File format (little endian), 64-byte header then the raw tensor bytes:
 *   0  magic "ASOFFLD1"       8  u32 version (1)   12 u32 header size (64)
 *   16 u64 payload bytes      24 u64 payload checksum (as__hash64)
 *   32 u64 handle             40 u64 header checksum (as__hash64 of 0..39)
 *   48 reserved (zero)
 *
 * One I/O thread serves every store in the process; it starts on the first
 * job and exits after a second without work. Reads (prefetch) go before
 * queued writes.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "store/policies/quant.h"
#include "store/store_internal.h"

#define OFF_MAGIC "ASOFFLD1"
#define OFF_VERSION 1u
#define OFF_HDR 64u

enum { JOB_NONE, JOB_QUEUED, JOB_RUNNING, JOB_DONE };

typedef struct off_item {
    /* fixed at save */
    as_store  *s;
    as_groups  g;
    uint64_t   bytes, handle;
    char       path[PATH_MAX];  /* the directory, for messages */
    /* under io.mu */
    as_block   staging;     /* tensor copy until written (tag saved,
                               charged as stored bytes to g) */
    int        fd;          /* the unnamed file; -1 after a failed write */
    int        wjob, rjob;  /* JOB_* */
    bool       on_disk;     /* written and verified-size file exists */
    bool       write_failed;
    uint64_t   hash;        /* payload checksum (set by the writer) */
    int        readers;     /* copying from staging right now */
    as_block   rbuf;        /* prefetched, verified data */
    int        rrc;         /* result of the prefetch read */
    char       rmsg[320];
    struct off_item *next;  /* queue link */
} off_item;

static struct {
    pthread_mutex_t mu;
    pthread_cond_t  work, done;
    off_item       *reads, *writes;   /* FIFO heads */
    int             active;           /* jobs taken, not finished */
    bool            running;
} io = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
        PTHREAD_COND_INITIALIZER, NULL, NULL, 0, false};

static _Atomic uint64_t file_seq;
static _Atomic int inject_stage, inject_err;

/* ---- small helpers --------------------------------------------------------- */

static void queue_push(off_item **head, off_item *it)
{
    it->next = NULL;
    while (*head)
        head = &(*head)->next;
    *head = it;
}

static bool queue_remove(off_item **head, off_item *it)
{
    for (; *head; head = &(*head)->next)
        if (*head == it) {
            *head = it->next;
            it->next = NULL;
            return true;
        }
    return false;
}

static int write_all(int fd, const void *p, size_t n, off_t off)
{
    const char *c = p;
    while (n) {
        ssize_t w = pwrite(fd, c, n > (1u << 30) ? (1u << 30) : n, off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return w < 0 ? errno : EIO;
        c += w, n -= (size_t)w, off += w;
    }
    return 0;
}

/* Read n bytes at off; returns 0, an errno, or -1 on a short file. */
static int read_all(int fd, void *p, size_t n, off_t off)
{
    char *c = p;
    while (n) {
        ssize_t r = pread(fd, c, n > (1u << 30) ? (1u << 30) : n, off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return errno;
        if (r == 0)
            return -1;
        c += r, n -= (size_t)r, off += r;
    }
    return 0;
}

static void put_u32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void put_u64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static uint32_t get_u32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t get_u64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

static void count_fallback(as_store *s, const as_groups *g, const char *why)
{
    atomic_fetch_add(&s->offload_fallbacks, 1);
    as__acct_fallback(s, g, why);
}

/* Free the staging buffer (io.mu held or the item private) and give its
 * bytes back. */
static void staging_free(off_item *it)
{
    if (!it->staging.ptr)
        return;
    as__acct_charge(it->s, &it->g, 0, -(int64_t)it->staging.size);
    as_free(as_store_arena(it->s), &it->staging);
}

/* ---- the file: write and verified read ----------------------------------- */

static int file_write(off_item *it, const void *data, uint64_t hash)
{
    uint8_t h[OFF_HDR] = {0};
    memcpy(h, OFF_MAGIC, 8);
    put_u32(h + 8, OFF_VERSION);
    put_u32(h + 12, OFF_HDR);
    put_u64(h + 16, it->bytes);
    put_u64(h + 24, hash);
    put_u64(h + 32, it->handle);
    put_u64(h + 40, as__hash64(h, 40));
    int two = 2;
    int e = atomic_compare_exchange_strong(&inject_stage, &two, 0)
                ? atomic_load(&inject_err) : 0;
    if (!e)
        e = write_all(it->fd, h, OFF_HDR, 0);
    if (!e)
        e = write_all(it->fd, data, it->bytes, OFF_HDR);
    return e;
}

/* Read and verify the file into buf (bytes). 0, AS_ECORRUPT or AS_EIO with
 * the reason in msg. Needs only fixed fields of it plus `expect`. */
static int file_read(const off_item *it, uint64_t expect, void *buf, char *msg,
                     size_t msglen)
{
    int fd = it->fd, rc = 0;
    struct stat st;
    uint8_t h[OFF_HDR];
    int e = fstat(fd, &st) ? errno : read_all(fd, h, OFF_HDR, 0);
    if (e > 0) {
        snprintf(msg, msglen, "offload file in %.200s: %s", it->path, strerror(e));
        rc = AS_EIO;
    } else if (e < 0 || (uint64_t)st.st_size != OFF_HDR + it->bytes) {
        snprintf(msg, msglen, "offload file in %.200s truncated or resized: %lld "
                 "bytes, expected %llu", it->path, (long long)st.st_size,
                 (unsigned long long)(OFF_HDR + it->bytes));
        rc = AS_ECORRUPT;
    } else if (memcmp(h, OFF_MAGIC, 8) || get_u32(h + 8) != OFF_VERSION ||
               get_u32(h + 12) != OFF_HDR || get_u64(h + 16) != it->bytes ||
               get_u64(h + 32) != it->handle ||
               get_u64(h + 40) != as__hash64(h, 40)) {
        snprintf(msg, msglen, "offload file in %.200s: bad header", it->path);
        rc = AS_ECORRUPT;
    } else if ((e = read_all(fd, buf, it->bytes, OFF_HDR)) != 0) {
        snprintf(msg, msglen, "offload file in %.200s: %s", it->path,
                 e > 0 ? strerror(e) : "truncated");
        rc = e > 0 ? AS_EIO : AS_ECORRUPT;
    } else if (get_u64(h + 24) != expect || as__hash64(buf, it->bytes) != expect) {
        snprintf(msg, msglen, "offload file in %.200s: checksum mismatch (modified)",
                 it->path);
        rc = AS_ECORRUPT;
    }
    return rc;
}

/* ---- the I/O thread ------------------------------------------------------ */

static void do_write(off_item *it)
{
    /* staging is stable while the job runs: only this thread frees it */
    uint64_t hash = as__hash64(it->staging.ptr, it->bytes);
    int e = file_write(it, it->staging.ptr, hash);
    pthread_mutex_lock(&io.mu);
    if (e) {
        close(it->fd);
        it->fd = -1;
    }
    it->wjob = JOB_DONE;
    if (e) {
        it->write_failed = true;   /* staging stays: the in-memory copy */
    } else {
        it->hash = hash;
        it->on_disk = true;
        if (!it->readers)
            staging_free(it);
    }
    pthread_cond_broadcast(&io.done);
    pthread_mutex_unlock(&io.mu);
    if (e) {
        char why[96];
        snprintf(why, sizeof why, "offload: write failed (%s), kept in memory",
                 strerror(e));
        count_fallback(it->s, &it->g, why);
    }
}

static void do_read(off_item *it)
{
    pthread_mutex_lock(&io.mu);
    uint64_t expect = it->hash;
    pthread_mutex_unlock(&io.mu);
    char msg[320] = "";
    int rc = file_read(it, expect, it->rbuf.ptr, msg, sizeof msg);
    pthread_mutex_lock(&io.mu);
    it->rrc = rc;
    snprintf(it->rmsg, sizeof it->rmsg, "%s", msg);
    it->rjob = JOB_DONE;
    pthread_cond_broadcast(&io.done);
    pthread_mutex_unlock(&io.mu);
}

static void *io_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&io.mu);
    for (;;) {
        off_item *it = io.reads;
        bool reading = it != NULL;
        if (!it)
            it = io.writes;
        if (!it) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += 1;
            if (pthread_cond_timedwait(&io.work, &io.mu, &ts) == ETIMEDOUT &&
                !io.reads && !io.writes)
                break;
            continue;
        }
        queue_remove(reading ? &io.reads : &io.writes, it);
        io.active++;
        if (reading)
            it->rjob = JOB_RUNNING;
        else
            it->wjob = JOB_RUNNING;
        pthread_mutex_unlock(&io.mu);
        if (reading)
            do_read(it);
        else
            do_write(it);
        pthread_mutex_lock(&io.mu);
        io.active--;
        pthread_cond_broadcast(&io.done);
    }
    io.running = false;
    pthread_mutex_unlock(&io.mu);
    return NULL;
}

/* Queue a job (io.mu held). Starts the thread when none runs; if that
 * fails the caller runs the job itself (returns false). */
static bool enqueue_locked(off_item *it, bool read)
{
    if (!io.running) {
        pthread_attr_t a;
        pthread_t t;
        pthread_attr_init(&a);
        pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
        int e = pthread_create(&t, &a, io_main, NULL);
        pthread_attr_destroy(&a);
        if (e)
            return false;
        io.running = true;
    }
    queue_push(read ? &io.reads : &io.writes, it);
    if (read)
        it->rjob = JOB_QUEUED;
    else
        it->wjob = JOB_QUEUED;
    pthread_cond_signal(&io.work);
    return true;
}

/* A file in dir that no name reaches, open for reading and writing: it
 * goes when its descriptor closes, also when the process is killed.
 * Returns the descriptor or -errno. */
static int open_unnamed(const char *dir)
{
#ifdef O_TMPFILE
    int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0 || (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL))
        return fd >= 0 ? fd : -errno;
#endif
    char path[PATH_MAX];
    for (int tries = 0; tries < 100; tries++) {
        snprintf(path, sizeof path, "%s/actstore-%ld-%llu.off", dir, (long)getpid(),
                 (unsigned long long)atomic_fetch_add(&file_seq, 1));
        int f = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (f >= 0) {
            unlink(path);
            return f;
        }
        if (errno != EEXIST)
            return -errno;
    }
    return -EEXIST;
}

/* ---- policy -------------------------------------------------------------- */

static int offload_parse(const char *args, size_t len, void **params, char *err,
                         size_t errlen, size_t *err_off)
{
    *params = NULL;
    if (!len)
        return 0;
    if (len >= PATH_MAX - 64) {
        snprintf(err, errlen, "expected a directory shorter than %d bytes",
                 PATH_MAX - 64);
        *err_off = 0;
        return AS_ESPEC;
    }
    char *dir = malloc(len + 1);
    if (!dir) {
        snprintf(err, errlen, "out of memory");
        *err_off = 0;
        return AS_ENOMEM;
    }
    memcpy(dir, args, len);
    dir[len] = 0;
    *params = dir;
    return 0;
}

static int offload_encode(as_pctx *ctx, const void *params,
                          const as_save_info *info, const as_tensor *t,
                          void **state)
{
    (void)info;
    const char *dir = params ? params : as_pctx_offload_dir(ctx);
    off_item *it = calloc(1, sizeof *it);
    if (!it)
        return AS_ENOMEM;
    it->s = as_pctx_store(ctx);
    it->g = ctx->rep->g;
    it->bytes = as_tensor_bytes(t);
    it->handle = as_pctx_handle(ctx).v;
    it->fd = -1;
    if (!it->bytes) {   /* nothing to write: no file, restores are no-ops */
        *state = it;
        return 0;
    }
    snprintf(it->path, sizeof it->path, "%s", dir);
    int one = 1;
    int rc = 0, e = atomic_compare_exchange_strong(&inject_stage, &one, 0)
                        ? atomic_load(&inject_err) : 0;
    if (!e && (it->fd = open_unnamed(dir)) < 0)
        e = -it->fd;
    if (!e) {
        int fe = posix_fallocate(it->fd, 0, (off_t)(OFF_HDR + it->bytes));
        if (fe && fe != EOPNOTSUPP && fe != EINVAL) {
            e = fe;
            close(it->fd);
            it->fd = -1;
        }
    }
    if (e) {
        /* The store falls back (counted, named in policy_of). */
        as_pctx_errorf(ctx, "directory %.200s: %s", dir, strerror(e));
        free(it);
        return AS_EIO;
    }
    rc = as_alloc(as_store_arena(it->s), it->bytes, AS_TAG_SAVED,
                  it->g.layer, &it->staging);
    if (rc) {
        as__seterr(it->s, "save (layer %s): %s", as_pctx_layer(ctx),
                   as_arena_last_error(as_store_arena(it->s)));
        close(it->fd);
        free(it);
        return rc;
    }
    as__acct_charge(it->s, &it->g, 0, (int64_t)it->staging.size);
    if (it->bytes)
        memcpy(it->staging.ptr, t->data, it->bytes);
    pthread_mutex_lock(&io.mu);
    bool queued = enqueue_locked(it, false);
    if (!queued)
        it->wjob = JOB_RUNNING;
    pthread_mutex_unlock(&io.mu);
    if (!queued)
        do_write(it);   /* no thread: write now */
    *state = it;
    return 0;
}

static int offload_decode(as_pctx *ctx, const void *params, void *state,
                          as_tensor *dst)
{
    (void)params;
    off_item *it = state;
    if (as_tensor_bytes(dst) != it->bytes)
        return AS_ESHAPE;
    if (!it->bytes)
        return 0;
    pthread_mutex_lock(&io.mu);
    if (it->staging.ptr) {
        /* not written yet (or the write failed): copy from memory */
        it->readers++;
        pthread_mutex_unlock(&io.mu);
        memcpy(dst->data, it->staging.ptr, it->bytes);
        pthread_mutex_lock(&io.mu);
        if (--it->readers == 0 && it->on_disk)
            staging_free(it);
        pthread_mutex_unlock(&io.mu);
        return 0;
    }
    if (it->rjob == JOB_QUEUED) {   /* not started: do it here */
        queue_remove(&io.reads, it);
        it->rjob = JOB_RUNNING;
        pthread_mutex_unlock(&io.mu);
        do_read(it);
        pthread_mutex_lock(&io.mu);
    }
    while (it->rjob == JOB_RUNNING)
        pthread_cond_wait(&io.done, &io.mu);
    int rc;
    if (it->rjob == JOB_DONE) {   /* prefetched */
        as_block b = it->rbuf;
        rc = it->rrc;
        char msg[320];
        snprintf(msg, sizeof msg, "%s", it->rmsg);
        memset(&it->rbuf, 0, sizeof it->rbuf);
        it->rjob = JOB_NONE;
        pthread_mutex_unlock(&io.mu);
        if (rc == 0)
            memcpy(dst->data, b.ptr, it->bytes);
        else
            as_pctx_errorf(ctx, "%s; nothing restored", msg);
        as_free(as_store_arena(it->s), &b);
        return rc;
    }
    uint64_t expect = it->hash;
    pthread_mutex_unlock(&io.mu);
    void *buf;
    rc = as_pctx_scratch(ctx, it->bytes ? it->bytes : 1, &buf);
    if (rc)
        return rc;
    char msg[320];
    rc = file_read(it, expect, buf, msg, sizeof msg);
    if (rc)
        as_pctx_errorf(ctx, "%s; nothing restored", msg);
    else
        memcpy(dst->data, buf, it->bytes);
    return rc;
}

static void offload_prefetch(as_pctx *ctx, const void *params, void *state)
{
    (void)ctx, (void)params;
    off_item *it = state;
    pthread_mutex_lock(&io.mu);
    if (it->on_disk && !it->staging.ptr && it->rjob == JOB_NONE &&
        as_alloc(as_store_arena(it->s), it->bytes ? it->bytes : 1,
                 AS_TAG_WORKSPACE, it->g.layer, &it->rbuf) == 0 &&
        !enqueue_locked(it, true))
        as_free(as_store_arena(it->s), &it->rbuf);
    pthread_mutex_unlock(&io.mu);
}

static void offload_drop(void *params, void *state)
{
    (void)params;
    off_item *it = state;
    pthread_mutex_lock(&io.mu);
    if (it->wjob == JOB_QUEUED && queue_remove(&io.writes, it))
        it->wjob = JOB_NONE;
    if (it->rjob == JOB_QUEUED && queue_remove(&io.reads, it))
        it->rjob = JOB_NONE;
    while (it->wjob == JOB_RUNNING || it->rjob == JOB_RUNNING ||
           it->readers)
        pthread_cond_wait(&io.done, &io.mu);
    pthread_mutex_unlock(&io.mu);
    staging_free(it);
    as_free(as_store_arena(it->s), &it->rbuf);
    if (it->fd >= 0)
        close(it->fd);   /* the file has no name: this removes it */
    free(it);
}

AS_POLICY_OPS(offload,
              "to a file, written in the background (offload[:dir]; falls "
              "back to memory)",
              (.exact = true, .free_params = as_policy_free_params),
              parse, encode, decode, drop, prefetch);

/* ---- testing hooks (quant.h) ---------------------------------------------- */

void as__offload_inject(int stage, int err)
{
    atomic_store(&inject_err, err);
    atomic_store(&inject_stage, stage);
}

void as__offload_wait_idle(void)
{
    pthread_mutex_lock(&io.mu);
    while (io.reads || io.writes || io.active)
        pthread_cond_wait(&io.done, &io.mu);
    pthread_mutex_unlock(&io.mu);
}

int as__offload_fd(const void *state)
{
    const off_item *it = state;
    pthread_mutex_lock(&io.mu);
    int fd = it->on_disk ? it->fd : -1;
    pthread_mutex_unlock(&io.mu);
    return fd;
}

/*
 * Client library for a running actstore service (libuv): fetch a document
 * (snapshot, metrics, ...) and subscribe to the event stream. Used by
 * `actstore top`, `actstore bench service` and the tests; small enough to
 * copy into a framework's own tooling.
 *
 * Addresses are "HOST:PORT", ":PORT", "PORT" or a URL "http://HOST:PORT/"
 * (numeric IPv4 or "localhost").
 *
 * Writing to a connection the service closed raises SIGPIPE in the calling
 * thread: programs using this library should ignore SIGPIPE (actstore top
 * does) or block it in the threads that call it. (The service itself
 * blocks SIGPIPE on its own thread, so it never needs the host to.)
 */
#ifndef AS_CLIENT_CLIENT_H
#define AS_CLIENT_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "actstore/service.h"

/* ---- one-shot requests (blocking, own loop) ------------------------------- */

typedef struct as_client_response {
    int    status;     /* HTTP status */
    char  *body;       /* NUL-terminated, malloc'd; free with as_client_response_free */
    size_t len;
} as_client_response;

/* GET path from addr within timeout_ms (0 = 5000). Blocking; thread-safe
 * (each call runs its own loop). Errors: AS_EINVAL (bad address), AS_EIO
 * (connect/read failed or timed out; err says which), AS_EFORMAT (not an
 * HTTP response), AS_ENOMEM. */
int as_client_get(const char *addr, const char *path, int timeout_ms,
                  as_client_response *out, char *err, size_t errlen);
/* Free the body and zero *r. NULL-safe; safe on a zeroed response. */
void as_client_response_free(as_client_response *r);

/* ---- the event stream (on a caller's loop) ---------------------------------- */

typedef struct as_client_sse as_client_sse;

/* Called for each event with its data (the JSON frame) and for stream
 * comments (heartbeats) with comment = true. Return nonzero to close. */
typedef int (*as_client_event_fn)(void *ud, const char *data, size_t len, bool comment);
/* Called once when the stream ends: rc 0 (closed by us), AS_EIO (connect
 * failure, reset, EOF), AS_EFORMAT (not a 200 event stream). */
typedef void (*as_client_end_fn)(void *ud, int rc);

/* Open /api/v1/events on loop. The stream lives until it ends (end_fn is
 * called, then it frees itself) or as_client_sse_close() is called.
 * Errors: AS_EINVAL (bad address), AS_ENOMEM; connection errors arrive
 * through end_fn. Not thread-safe: use from the loop's thread. */
int as_client_sse_open(uv_loop_t *loop, const char *addr, as_client_event_fn on_event,
                       as_client_end_fn on_end, void *ud, as_client_sse **out);
/* Close now (end_fn is called with 0 from the close callback). */
void as_client_sse_close(as_client_sse *s);

/* Subscribe from the calling thread for at most duration_ms (0 = until the
 * callback returns nonzero or the stream ends). Returns 0 or the end code. */
int as_client_subscribe(const char *addr, int duration_ms, as_client_event_fn fn,
                        void *ud, char *err, size_t errlen);

/* ---- for commands that serve (--serve ADDR on train / ab / demo) --------------- */

/* Start the service on addr for n stores (labels may be NULL: the stores'
 * labels), print "actstore <cmd>: dashboard at http://..." on stderr and
 * return 0; on error print the reason naming cmd and return the AS_E* code.
 * allow_remote: the --serve-remote flag (binding a non-loopback address).
 * fleet: job, rank, host labels (--job, --rank, --host; NULL entries or a
 * NULL array: the environment's, as_service_config). Stop with
 * as_service_stop(*out). */
int as_client_serve(const char *cmd, const char *addr, bool allow_remote,
                    as_store *const *stores, const char *const *labels, size_t n,
                    const char *const fleet[3], as_service **out);

#endif

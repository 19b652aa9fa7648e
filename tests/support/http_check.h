/*
 * Well-formedness of the service's responses, for the socketless checks
 * (fuzz/fuzz_http.c, tests/test_fault_service.c): one HTTP/1.1 response as
 * the service writes it, and the JSON and Prometheus text of its bodies.
 * Each check returns NULL, or what is wrong (a static string).
 */
#ifndef AS_TEST_HTTP_CHECK_H
#define AS_TEST_HTTP_CHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef struct hc_resp {
    int         status;
    size_t      head_len;      /* status line and headers, final CRLF CRLF included */
    long long   clen;          /* Content-Length, -1 when absent */
    bool        close;         /* Connection: close */
    bool        event_stream;  /* Content-Type: text/event-stream */
    const char *ctype;         /* into the response; up to CR */
    size_t      ctype_len;
} hc_resp;

/* ---- JSON (RFC 8259, depth-limited) ------------------------------------- */

static const char *hc__ws(const char *p, const char *e)
{
    while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

static const char *hc__jstring(const char *p, const char *e)
{
    for (p++; p < e; p++) {
        unsigned char ch = (unsigned char)*p;
        if (ch == '"')
            return p + 1;
        if (ch < 0x20)
            return NULL;
        if (ch == '\\') {
            if (++p >= e)
                return NULL;
            if (*p == 'u') {
                for (int k = 0; k < 4; k++)
                    if (++p >= e || !strchr("0123456789abcdefABCDEF", *p))
                        return NULL;
            } else if (!strchr("\"\\/bfnrt", *p)) {
                return NULL;
            }
        }
    }
    return NULL;
}

static const char *hc__jnumber(const char *p, const char *e)
{
    const char *s = p;
    if (p < e && *p == '-')
        p++;
    if (p < e && *p == '0')
        p++;
    else if (p < e && *p >= '1' && *p <= '9')
        while (p < e && *p >= '0' && *p <= '9')
            p++;
    else
        return NULL;
    if (p < e && *p == '.') {
        if (++p >= e || *p < '0' || *p > '9')
            return NULL;
        while (p < e && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < e && (*p == 'e' || *p == 'E')) {
        if (++p < e && (*p == '+' || *p == '-'))
            p++;
        if (p >= e || *p < '0' || *p > '9')
            return NULL;
        while (p < e && *p >= '0' && *p <= '9')
            p++;
    }
    return p > s ? p : NULL;
}

static const char *hc__jvalue(const char *p, const char *e, int depth)
{
    p = hc__ws(p, e);
    if (p >= e || depth > 64)
        return NULL;
    if (*p == '"')
        return hc__jstring(p, e);
    if (*p == '{' || *p == '[') {
        char close = *p == '{' ? '}' : ']';
        p = hc__ws(p + 1, e);
        if (p < e && *p == close)
            return p + 1;
        for (;;) {
            if (close == '}') {
                if (p >= e || *p != '"' || !(p = hc__jstring(p, e)))
                    return NULL;
                p = hc__ws(p, e);
                if (p >= e || *p != ':')
                    return NULL;
                p++;
            }
            if (!(p = hc__jvalue(p, e, depth + 1)))
                return NULL;
            p = hc__ws(p, e);
            if (p < e && *p == ',')
                p = hc__ws(p + 1, e);
            else if (p < e && *p == close)
                return p + 1;
            else
                return NULL;
        }
    }
    static const char *const lit[] = {"true", "false", "null"};
    for (int k = 0; k < 3; k++) {
        size_t n = strlen(lit[k]);
        if ((size_t)(e - p) >= n && !memcmp(p, lit[k], n))
            return p + n;
    }
    return hc__jnumber(p, e);
}

/* One JSON document filling [p, p + n). */
static inline const char *hc_json(const char *p, size_t n)
{
    const char *e = p + n, *q = hc__jvalue(p, e, 0);
    if (!q)
        return "not JSON";
    return hc__ws(q, e) == e ? NULL : "bytes after the JSON document";
}

/* Prometheus text: lines of "# ..." comments or "name[{labels}] value". */
static inline const char *hc_prom(const char *p, size_t n)
{
    const char *e = p + n;
    if (n == 0 || p[n - 1] != '\n')
        return "metrics do not end with a newline";
    while (p < e) {
        const char *nl = memchr(p, '\n', (size_t)(e - p));
        if (*p != '#') {
            const char *q = p;
            while (q < nl && (*q == '_' || *q == ':' || (*q >= 'a' && *q <= 'z') ||
                              (*q >= 'A' && *q <= 'Z') || (q > p && *q >= '0' && *q <= '9')))
                q++;
            if (q == p)
                return "metric line without a name";
            if (q < nl && *q == '{') {
                while (q < nl && *q != '}')
                    q += *q == '\\' ? 2 : 1;
                if (q >= nl)
                    return "unterminated label set";
                q++;
            }
            if (q >= nl || *q != ' ')
                return "metric line without a value";
            char *end;
            strtod(q + 1, &end);
            if (end == q + 1 || (end != nl && *end != ' '))
                return "metric value is not a number";
        }
        p = nl + 1;
    }
    return NULL;
}

/* ---- one response ------------------------------------------------------- */

static bool hc__hdr_is(const char *line, size_t n, const char *name)
{
    size_t k = strlen(name);
    return n > k + 1 && !strncasecmp(line, name, k) && line[k] == ':';
}

/* Parse the status line and headers of [p, p + n). */
static inline const char *hc_head(const char *p, size_t n, hc_resp *r)
{
    memset(r, 0, sizeof *r);
    r->clen = -1;
    const char *e = p + n, *q = p;
    if (n < 17 || memcmp(p, "HTTP/1.1 ", 9) || p[9] < '1' || p[9] > '5' ||
        p[10] < '0' || p[10] > '9' || p[11] < '0' || p[11] > '9' || p[12] != ' ')
        return "bad status line";
    r->status = atoi(p + 9);
    bool first = true;
    for (;;) {
        const char *cr = q;
        while (cr + 1 < e && !(cr[0] == '\r' && cr[1] == '\n')) {
            if (*cr == '\n' || *cr == '\r' || *cr == 0)
                return "bare CR, LF or NUL in the head";
            cr++;
        }
        if (cr + 1 >= e)
            return "head not terminated by CRLF CRLF";
        size_t len = (size_t)(cr - q);
        if (len == 0) {
            if (first)
                return "empty status line";
            r->head_len = (size_t)(cr + 2 - p);
            return NULL;
        }
        if (first) {
            if (len < 15 || !strncmp(q + 13, "Unknown", 7))
                return "status without its reason phrase";
        } else {
            const char *colon = memchr(q, ':', len);
            if (!colon || colon == q || colon[1] != ' ')
                return "header line is not 'Name: value'";
            const char *v = colon + 2;
            size_t vn = (size_t)(cr - v);
            if (hc__hdr_is(q, len, "content-length")) {
                if (r->clen >= 0)
                    return "Content-Length twice";
                char *end;
                r->clen = strtoll(v, &end, 10);
                if (end != cr || r->clen < 0)
                    return "bad Content-Length";
            } else if (hc__hdr_is(q, len, "connection")) {
                r->close = vn == 5 && !strncmp(v, "close", 5);
            } else if (hc__hdr_is(q, len, "content-type")) {
                r->ctype = v;
                r->ctype_len = vn;
                r->event_stream = vn >= 17 && !strncmp(v, "text/event-stream", 17);
            }
        }
        first = false;
        q = cr + 2;
    }
}

/* One event-stream write after the head: comment lines (": ...") and
 * fields, ending with a blank line; data: fields carry JSON. */
static inline const char *hc_sse(const char *p, size_t n)
{
    const char *e = p + n;
    if (n < 2 || p[n - 1] != '\n' || p[n - 2] != '\n')
        return "event not ended by a blank line";
    while (p < e - 1) {
        const char *nl = memchr(p, '\n', (size_t)(e - p));
        if (!strncmp(p, "data: ", 6)) {
            const char *why = hc_json(p + 6, (size_t)(nl - p - 6));
            if (why)
                return why;
        } else if (*p != ':' && strncmp(p, "retry: ", 7) && strncmp(p, "event: ", 7) &&
                   strncmp(p, "id: ", 4)) {
            return "unknown event-stream line";
        }
        p = nl + 1;
    }
    return NULL;
}

/* The whole of one write of a response: head, then the body (none when
 * head_only), checked against its Content-Type. */
static inline const char *hc_response(const char *p, size_t n, bool head_only, hc_resp *r)
{
    const char *why = hc_head(p, n, r);
    if (why)
        return why;
    if (!r->ctype)
        return "no Content-Type";
    if (r->event_stream && r->status == 200 && !head_only)   /* + the preamble */
        return n > r->head_len ? hc_sse(p + r->head_len, n - r->head_len) : NULL;
    if (r->clen < 0)
        return "no Content-Length";
    size_t body = n - r->head_len;
    if (head_only)
        return body ? "a body after a HEAD response" : NULL;
    if ((long long)body != r->clen)
        return "body length differs from Content-Length";
    const char *b = p + r->head_len;
    if (r->status == 200 && r->ctype_len >= 16 && !strncmp(r->ctype, "application/json", 16))
        return hc_json(b, body);
    if (r->status == 200 && r->ctype_len >= 10 && !strncmp(r->ctype, "text/plain", 10) &&
        strstr(r->ctype, "version=0.0.4"))
        return hc_prom(b, body);
    return NULL;
}

#endif
